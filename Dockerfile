# hcloud-flow: one image for every service of docker-compose.yml (worker, beat, Flower, fakecloud).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package is built from (pyproject names README.md as its readme); tests and benches stay out.
WORKDIR /src
COPY pyproject.toml README.md celeryconfig.py ./
COPY workers/ workers/
COPY workflows/ workflows/
COPY fakecloud/ fakecloud/
# Flower runs from this image too; it is not a dependency of the package itself. The sources go once
# installed, so every process imports the installed package whatever its working directory.
RUN pip install --no-cache-dir . "flower>=2.0,<3" \
    && cd / && rm -rf /src

RUN useradd --create-home --uid 10001 --user-group hcloud
USER 10001:10001
WORKDIR /home/hcloud

# Flower, fakecloud.
EXPOSE 5555 8080

# docker-compose.yml gives each service its full command (hcloud-flow ... or celery ...).
CMD ["hcloud-flow", "worker"]

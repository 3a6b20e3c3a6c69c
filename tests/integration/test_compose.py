"""docker-compose.yml without Docker: every service's command and environment built exactly as compose builds
them, then started as local processes, and a fleet job and a Flower submission run through the stack.

Compose is emulated, not mocked: the file is read with PyYAML, ``${VAR:-default}`` / ``${VAR:?message}``
interpolation is resolved from a test-provided host environment (never this machine's), each service's
process environment is the image's ``ENV`` plus the service's ``environment``, and its command is the
service's ``command``. The only rewrites are what the container network would otherwise provide:

- service names to local addresses (``redis://redis:6379`` to a private redis-server on a free port,
  ``http://fakecloud:8080`` to fakecloud on a free port); the Redis on 6379 is never touched;
- listen addresses ``0.0.0.0`` to ``127.0.0.1`` and fixed ports to free ones;
- the executables to this Python (``hcloud-flow`` = ``python -m workflows.cli``, ``celery`` =
  ``python -m celery``, ``python``);
- each worker replica's container hostname, which compose gives every replica and which Celery's default
  node name (``celery@%h``) is made of: here ``--hostname celery@compose-worker-N``.

Readiness follows each service's healthcheck, which is run as written (localized the same way).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests
import yaml

from ..support.cloud import Api
from ..support.processes import ROOT, free_port, wait_until

pytestmark = pytest.mark.integration

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"
SECTION = "## Deployment with docker-compose"
AUTH = ("ops", "compose-flower-pw")

# The host environment `docker compose up` is run with. HCLOUD_ENDPOINT points the workers at fakecloud
# exactly as the compose file's comment says; the tuning is what a simulator 10x faster than real time needs.
HOST_ENV = {
    "HCLOUD_TOKEN": "compose-test-token",
    "HCLOUD_ENDPOINT": "http://fakecloud:8080/v1",
    "FLOWER_BASIC_AUTH": ":".join(AUTH),
    "HCLOUD_FLOW_WORKER_CONCURRENCY": "4",
    "FAKECLOUD_SERVERS": "12",
    "FAKECLOUD_SPEED": "10",
    "HCLOUD_FLOW_RATE_REFILL": "10",
    "HCLOUD_FLOW_POLL_FIRST": "0.2",
    "HCLOUD_FLOW_POLL_CAP": "0.5",
    "HCLOUD_FLOW_SHUTDOWN_GRACE": "1.5",
    "HCLOUD_FLOW_VISIBILITY_TIMEOUT": "30",
    "HCLOUD_FLOW_RETRY_BASE": "0.1",
    "HCLOUD_FLOW_REQUEST_TIMEOUT": "5",
}
WORKERS = 2  # docker compose up --scale worker=2


# -- compose, read as compose reads it -------------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}$]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class MissingVariable(Exception):
    """A ``${VAR:?message}`` whose variable is unset: compose refuses to start anything."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Resolve compose interpolation in one string: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?m}, ..."""

    def one(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("invalid") is not None:
            raise ValueError(f"invalid interpolation format in {text!r}")
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        missing = not value if op and op.startswith(":") else value is None
        if op in (":-", "-"):
            return arg if missing else str(value)
        if op in (":?", "?"):
            if missing:
                raise MissingVariable(f"required variable {name} is missing a value: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if missing else arg
        return value or ""

    return _INTERPOLATION.sub(one, text)


def resolve(node: Any, env: dict[str, str]) -> Any:
    """Interpolate every string value of the parsed file (keys are not interpolated, as in compose)."""
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def raw_compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def compose(env: dict[str, str] = HOST_ENV) -> dict[str, Any]:
    return dict(resolve(raw_compose(), env))


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def variables_used(text: str) -> list[tuple[str, str | None, str]]:
    """Return (name, operator, argument) of every interpolation in the raw file, comments excluded."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    out = []
    for m in _INTERPOLATION.finditer(body):
        if m.group("escaped"):
            continue
        assert m.group("invalid") is None, f"bad interpolation near {body[m.start() : m.start() + 30]!r}"
        out.append((m.group("braced") or m.group("bare"), m.group("op"), m.group("arg") or ""))
    return out


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        joined.append(current.strip())
        current = ""
    return [(ins.split(None, 1)[0].upper(), ins.split(None, 1)[1]) for ins in joined]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for ins, args in dockerfile_instructions():
        if ins == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def readme_table() -> dict[str, str]:
    """Variable name -> its whole table row, from the README's docker-compose section."""
    text = README.read_text()
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`([A-Z][A-Z0-9_]*)`\s*\|", line)
        if m:
            rows[m.group(1)] = line
    return rows


def seconds(duration: str) -> float:
    """Compose durations: 90s, 2m, 1m30s, 1h."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    return sum(float(n) * scale[u] for n, u in parts)


# -- static properties -----------------------------------------------------------------------------------


def test_redis_keeps_its_data_never_evicts_and_has_a_healthcheck() -> None:
    svc = compose()["services"]["redis"]
    cmd = command_of(svc)
    assert svc["image"].split(":")[0] == "redis"
    assert cmd[0] == "redis-server"
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(v.split(":")[1] == "/data" for v in svc["volumes"])
    assert "redis-data" in raw_compose()["volumes"]
    assert "redis-cli ping" in " ".join(svc["healthcheck"]["test"])


def test_worker_scales_shuts_down_warm_and_waits_for_redis() -> None:
    raw = raw_compose()["services"]["worker"]
    svc = compose()["services"]["worker"]
    assert "container_name" not in raw and "hostname" not in raw, "a fixed name breaks --scale worker=N"
    assert "build" in raw and "image" not in raw
    assert raw["command"] == [
        "hcloud-flow",
        "worker",
        "--concurrency",
        "${HCLOUD_FLOW_WORKER_CONCURRENCY:-8}",
    ]
    assert (
        command_of(compose({**HOST_ENV, "HCLOUD_FLOW_WORKER_CONCURRENCY": ""})["services"]["worker"])[-1]
        == "8"
    )
    assert environment_of(raw)["HCLOUD_TOKEN"].startswith("${HCLOUD_TOKEN:?")
    assert environment_of(svc)["HCLOUD_FLOW_REDIS_URL"] == "redis://redis:6379/0"
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert svc["restart"] == "unless-stopped"
    assert seconds(svc["stop_grace_period"]) >= 60
    assert "inspect ping" in " ".join(svc["healthcheck"]["test"])
    # $$ is compose's escape: the container's shell, not compose, expands $HOSTNAME.
    assert "celery@$HOSTNAME" in " ".join(svc["healthcheck"]["test"])


def test_beat_uses_redbeat_and_gets_no_token() -> None:
    services = compose()["services"]
    cmd = command_of(services["beat"])
    assert cmd[:3] == ["celery", "-A", "workers.app"] and "beat" in cmd
    assert cmd[cmd.index("-S") + 1] == "workflows.beat:Scheduler"
    assert services["beat"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("beat", "flower", "redis"):
        assert "HCLOUD_TOKEN" not in environment_of(services[name]), f"{name} must not see the API token"
        assert "HCLOUD_FLOW_SECRET_KEY" not in environment_of(services[name])


def test_flower_requires_auth_and_gets_its_broker_before_the_subcommand() -> None:
    raw = raw_compose()["services"]["flower"]
    svc = compose()["services"]["flower"]
    assert environment_of(raw)["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    cmd = command_of(svc)
    assert cmd.index("--broker") < cmd.index("flower"), "--broker after `flower` is ignored"
    assert cmd[cmd.index("--broker") + 1] == "redis://redis:6379/0"
    assert "--port=5555" in cmd and "--address=0.0.0.0" in cmd
    assert any(str(p).endswith(":5555") for p in svc["ports"])
    assert "/healthcheck" in " ".join(svc["healthcheck"]["test"])


def test_required_variables_stop_compose_with_a_message() -> None:
    for name in ("HCLOUD_TOKEN", "FLOWER_BASIC_AUTH"):
        env = {k: v for k, v in HOST_ENV.items() if k != name}
        with pytest.raises(MissingVariable, match=name):
            compose(env)
    # Everything else has a default: the two required ones alone give a complete file.
    minimal = compose({"HCLOUD_TOKEN": "t", "FLOWER_BASIC_AUTH": "a:b"})
    assert environment_of(minimal["services"]["worker"])["HCLOUD_ENDPOINT"] == "https://api.hetzner.cloud/v1"


def test_web_needs_no_token_binds_loopback_and_has_a_healthcheck() -> None:
    services = compose()["services"]
    web = services["web"]
    env = environment_of(web)
    assert "HCLOUD_TOKEN" not in env and "HCLOUD_FLOW_SECRET_KEY" not in env, "the web never sees the token"
    assert env["HCLOUD_FLOW_API_KEYS_FILE"].startswith("/run/hcloud-flow/")
    assert (
        web["volumes"][0]["read_only"]
        if isinstance(web["volumes"][0], dict)
        else web["volumes"][0].endswith(":ro")
    )
    published = web["ports"][0]
    host = published["host_ip"] if isinstance(published, dict) else published.split(":")[0]
    assert host == "127.0.0.1", "published on the host's loopback unless WEB_BIND says otherwise"
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/api/v1/health" in " ".join(web["healthcheck"]["test"])


def test_fakecloud_is_only_in_its_profile() -> None:
    services = raw_compose()["services"]
    assert services["fakecloud"]["profiles"] == ["fakecloud"]
    for name, svc in services.items():
        if name != "fakecloud":
            assert "profiles" not in svc, f"{name} must start without a profile"
            assert "fakecloud" not in (svc.get("depends_on") or {}), f"{name} must not need fakecloud"
    cmd = command_of(compose()["services"]["fakecloud"])
    assert cmd[:2] == ["hcloud-flow", "fakecloud"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - inside the compose network only
    assert cmd[cmd.index("--port") + 1] == "8080"
    assert "HCLOUD_ENDPOINT=http://fakecloud:8080/v1" in COMPOSE_FILE.read_text()
    # fakecloud accepts the workers' token; with none on the host, its own default one.
    assert command_of(compose()["services"]["fakecloud"])[-1] == HOST_ENV["HCLOUD_TOKEN"]
    assert command_of(resolve(raw_compose()["services"]["fakecloud"], {}))[-1] == "fakecloud-token"


def test_every_variable_is_documented_with_its_default() -> None:
    rows = readme_table()
    used = variables_used(COMPOSE_FILE.read_text())
    assert used
    for name, op, arg in used:
        assert name in rows, f"${{{name}}} is used in docker-compose.yml but not in the README table"
        row = rows[name]
        if op in (":-", "-"):
            expected = f"`{arg}`" if arg else "(none"
            assert expected in row, f"README gives {name} another default than compose ({arg!r}): {row}"
        elif op in (":?", "?"):
            assert "required" in row.lower(), f"README must say {name} is required: {row}"


def test_compose_defaults_are_the_code_defaults() -> None:
    """The worker's environment with nothing set on the host configures exactly what no environment does."""
    probe = (
        "import json, celeryconfig as c; print(json.dumps([c.broker_url, c.result_expires, c.task_time_limit,"
        " c.broker_transport_options, c.hcloud_flow, c.projects(), c.secret_key()]))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HCLOUD", "CELERY", "PYTHON"))}
    base["PYTHONPATH"] = str(ROOT)
    worker = compose({"HCLOUD_TOKEN": "t", "FLOWER_BASIC_AUTH": "a:b"})["services"]["worker"]
    env = environment_of(worker)
    assert env.pop("HCLOUD_TOKEN") == "t"
    env["HCLOUD_FLOW_REDIS_URL"] = "redis://127.0.0.1:6379/0"  # the code's default; compose names its service

    def read(extra: dict[str, str]) -> Any:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            env=base | extra,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert read(env) == read({})


# -- the image -------------------------------------------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1].replace("[!", "[^"), end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out (a parent's match counts; the last rule wins)."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, _dockerignore_regex(line.lstrip("!").strip("/"))))
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, rx in rules:
        if any(rx.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerfile_builds_a_slim_non_root_image_of_the_package() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert image_env().get("PYTHONUNBUFFERED") == "1"
    runs = " && ".join(args for ins, args in instructions if ins == "RUN")
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", runs), runs
    users = [args for ins, args in instructions if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    cmd = [args for ins, args in instructions if ins in ("CMD", "ENTRYPOINT")]
    assert cmd and json.loads(cmd[-1])[0] == "hcloud-flow"
    # Every source the image copies exists and is in the build context; so is everything under it.
    sources = []
    for ins, args in instructions:
        if ins == "COPY":
            sources += [s for s in shlex.split(args)[:-1] if not s.startswith("--")]
    assert {"pyproject.toml", "README.md", "celeryconfig.py"} <= set(sources)
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: no such file"
        assert not dockerignored(src), f"COPY {src}: left out of the build context by .dockerignore"
        for f in path.rglob("*.py") if path.is_dir() else []:
            assert not dockerignored(str(f.relative_to(ROOT))), f"{f} is left out of the build context"
    # Every package the project ships is copied.
    for pkg in ("workers", "workflows", "fakecloud"):
        assert any(s.strip("/") == pkg for s in sources), f"the image lacks {pkg}/"


def test_dockerignore_keeps_caches_secrets_and_history_out() -> None:
    for path in (
        ".git/HEAD",
        ".env",
        "workers/__pycache__/app.cpython-311.pyc",
        ".pytest_cache/v/cache",
        ".ruff_cache/x",
        ".mypy_cache/x",
        "hcloud_flow.egg-info/PKG-INFO",
        "build/lib/x.py",
        ".venv/bin/python",
        "tests/support/processes.py",
        ".coverage",
    ):
        assert dockerignored(path), f"{path} would be sent to the image build"
    assert not dockerignored("workers/app.py")


# -- the stack, as local processes -----------------------------------------------------------------------


@dataclass
class Service:
    """One local process standing in for one container."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    stdout: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        """Start with stderr (and stdout, unless it has a file of its own) in the log file."""
        with open(self.log, "wb") as log:
            if self.stdout is None:
                self.proc = subprocess.Popen(
                    self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
                )
            else:
                with open(self.stdout, "wb") as out:
                    self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=out, stderr=log)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def wait_for(self, predicate: Any, timeout: float, what: str) -> Any:
        value = wait_until(lambda: predicate() or self.died(), timeout, f"{self.name}: {what}", interval=0.1)
        if self.died():
            raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.text()[-3000:]}")  # type: ignore[union-attr]
        return value

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@dataclass
class Stack:
    services: dict[str, Any]  # the resolved compose services
    hosts: dict[str, str]  # service:port -> 127.0.0.1:free port
    redis_url: str
    api_url: str
    flower_url: str
    web_url: str = ""
    keys_file: Path | None = None
    running: dict[str, Service] = field(default_factory=dict)
    workers: list[Service] = field(default_factory=list)
    _client: redis.Redis | None = None

    def redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(self.redis_url)
        return self._client

    def localize(self, text: str) -> str:
        for name, local in self.hosts.items():
            text = text.replace(f"//{name}", f"//{local}")
        return text

    def container_env(self, service: str, **extra: str) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("HCLOUD", "CELERY", "FLOWER", "PYTHON"))
        }
        env.update(image_env())
        env.update({k: self.localize(v) for k, v in environment_of(self.services[service]).items()})
        env["PYTHONPATH"] = str(ROOT)
        env.update(extra)
        return env

    def healthcheck(self, service: str, *, replace: dict[str, str], **env: str) -> subprocess.Popen[bytes]:
        """Start the service's healthcheck as written (localized with ``replace``); exit 0 is healthy."""
        test = self.services[service]["healthcheck"]["test"]
        if test[0] == "CMD-SHELL":
            script = test[1]
            for old, new in replace.items():
                script = script.replace(old, new)
            argv = ["/bin/sh", "-c", script]
        else:
            assert test[0] == "CMD", test
            args = list(test[1:])
            for old, new in replace.items():
                args = [a.replace(old, new) for a in args]
            argv = local_argv(args)
        return subprocess.Popen(
            argv,
            env=self.container_env(service, **env),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def healthy(self, service: str, *, replace: dict[str, str], timeout: float = 30, **env: str) -> bool:
        check = self.healthcheck(service, replace=replace, **env)
        try:
            return check.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            check.kill()
            check.wait()
            return False


def local_argv(argv: list[str]) -> list[str]:
    """The container's executables, from this Python (the image installs the same package)."""
    head, rest = argv[0], argv[1:]
    if head == "hcloud-flow":
        return [sys.executable, "-m", "workflows.cli", *rest]
    if head == "celery":
        return [sys.executable, "-m", "celery", *rest]
    if head == "python":
        return [sys.executable, *rest]
    found = shutil.which(head)
    assert found, f"{head} is not installed"
    return [found, *rest]


def set_option(argv: list[str], option: str, value: str) -> list[str]:
    """Replace the value of ``--option VALUE`` or ``--option=VALUE``."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == option:
            out[i + 1] = value
            return out
        if arg.startswith(option + "="):
            out[i] = f"{option}={value}"
            return out
    raise AssertionError(f"{option} not in {argv}")


CELERY_SHELL = f"{shlex.quote(sys.executable)} -m celery -A"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    tmp = tmp_path_factory.mktemp("compose")
    logs = tmp / "logs"
    logs.mkdir()
    services = compose()["services"]
    started: list[Service] = []
    st: Stack | None = None

    def start(svc: Service) -> Service:
        started.append(svc)
        return svc.start()

    try:
        # redis: the compose flags, then a free port on loopback and a private data directory.
        redis_port = free_port()
        st = Stack(services, {"redis:6379": f"127.0.0.1:{redis_port}"}, "", "", "")
        data = tmp / "redis-data"
        data.mkdir()
        argv = local_argv(command_of(services["redis"]))
        argv += ["--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(data)]
        rds = start(Service("redis", argv, st.container_env("redis"), logs / "redis.log"))
        rds.wait_for(
            lambda: st.healthy("redis", replace={"redis-cli": f"redis-cli -p {redis_port}"}, timeout=5),
            15,
            "healthcheck",
        )
        st.redis_url = f"redis://127.0.0.1:{redis_port}/0"

        # fakecloud: port 0, loopback; its base URL is the first line on stdout.
        argv = command_of(services["fakecloud"])
        argv = local_argv(set_option(set_option(argv, "--port", "0"), "--host", "127.0.0.1"))
        out = logs / "fakecloud.out"
        fake = start(Service("fakecloud", argv, st.container_env("fakecloud"), logs / "fakecloud.log", out))
        fake.wait_for(lambda: out.exists() and out.read_text().endswith("\n"), 20, "its base URL on stdout")
        st.api_url = out.read_text().splitlines()[0].strip()
        st.hosts["fakecloud:8080"] = urlsplit(st.api_url).netloc

        # workers (two replicas), beat and Flower start together; every one then must become ready.
        for n in range(1, WORKERS + 1):
            argv = local_argv([st.localize(a) for a in command_of(services["worker"])])
            argv += ["--hostname", f"celery@compose-worker-{n}"]  # the replica's container hostname
            st.workers.append(
                start(Service(f"worker-{n}", argv, st.container_env("worker"), logs / f"worker-{n}.log"))
            )
        argv = local_argv([st.localize(a) for a in command_of(services["beat"])])
        beat = start(Service("beat", argv, st.container_env("beat"), logs / "beat.log"))
        flower_port = free_port()
        argv = [st.localize(a) for a in command_of(services["flower"])]
        argv = local_argv(set_option(set_option(argv, "--port", str(flower_port)), "--address", "127.0.0.1"))
        flower = start(Service("flower", argv, st.container_env("flower"), logs / "flower.log"))
        st.flower_url = f"http://127.0.0.1:{flower_port}"
        # web: the key file is the mounted volume's, here a directory of the test's own.
        keys_dir = tmp / "api-keys"
        keys_dir.mkdir()
        mount = services["web"]["volumes"][0]
        container_keys = environment_of(services["web"])["HCLOUD_FLOW_API_KEYS_FILE"]
        st.keys_file = keys_dir / Path(container_keys).relative_to(
            mount["target"] if isinstance(mount, dict) else mount.split(":")[1]
        )
        web_port = free_port()
        argv = local_argv(
            set_option(
                set_option(command_of(services["web"]), "--port", str(web_port)), "--host", "127.0.0.1"
            )
        )
        web_env = st.container_env("web", HCLOUD_FLOW_API_KEYS_FILE=str(st.keys_file))
        web = start(Service("web", argv, web_env, logs / "web.log"))
        st.web_url = f"http://127.0.0.1:{web_port}"
        st.running = {"redis": rds, "fakecloud": fake, "beat": beat, "flower": flower, "web": web}

        for w in st.workers:
            w.wait_for(lambda w=w: "ready." in w.text(), 40, "ready.")
        beat.wait_for(lambda: any(st.redis().scan_iter("hf:redbeat*lock")), 30, "the redbeat lock")
        flower.wait_for(
            lambda: st.healthy("flower", replace={"127.0.0.1:5555": f"127.0.0.1:{flower_port}"}, timeout=10),
            40,
            "healthcheck",
        )
        web.wait_for(
            lambda: st.healthy("web", replace={"127.0.0.1:8000": f"127.0.0.1:{web_port}"}, timeout=10),
            40,
            "healthcheck",
        )
        yield st
    finally:
        if st is not None and st._client is not None:
            st._client.close()
        for svc in reversed(started):
            svc.stop()


def cli(st: Stack, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``hcloud-flow ...`` as a user runs it next to the stack: Redis only, no API token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HCLOUD", "CELERY", "PYTHON"))}
    env.update(HCLOUD_FLOW_REDIS_URL=st.redis_url, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "workflows.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_redis_runs_with_the_compose_flags(stack: Stack) -> None:
    conf = stack.redis().config_get("*")
    assert conf["appendonly"] == "yes"
    assert conf["maxmemory-policy"] == "noeviction"


def test_workers_point_at_fakecloud_as_the_compose_comment_says(stack: Stack) -> None:
    env = stack.container_env("worker")
    assert env["HCLOUD_ENDPOINT"] == stack.api_url
    assert env["HCLOUD_TOKEN"] == command_of(stack.services["fakecloud"])[-1]  # the token fakecloud accepts
    assert env["HCLOUD_FLOW_REDIS_URL"] == stack.redis_url
    assert len(Api(stack.api_url, env["HCLOUD_TOKEN"]).server_ids()) == int(HOST_ENV["FAKECLOUD_SERVERS"])


def test_each_worker_replica_passes_its_own_healthcheck(stack: Stack) -> None:
    replace = {"celery -A": CELERY_SHELL}
    checks = [
        stack.healthcheck("worker", replace=replace, HOSTNAME=f"compose-worker-{n}")
        for n in range(1, WORKERS + 1)
    ]
    # Addressed to a node that does not exist, the same check fails: it is not "any worker answered".
    nobody = stack.healthcheck(
        "worker", replace={**replace, "--timeout 10": "--timeout 1"}, HOSTNAME="compose-worker-99"
    )
    assert [c.wait(timeout=30) for c in checks] == [0] * WORKERS
    assert nobody.wait(timeout=30) != 0


def test_flower_submits_a_run_with_basic_auth_only(stack: Stack) -> None:
    url = f"{stack.flower_url}/api/task/send-task/hcloud_flow.submit"
    api = Api(stack.api_url, HOST_ENV["HCLOUD_TOKEN"])
    servers = api.get("/servers", per_page=50, sort="id")["servers"]
    server = next((s for s in reversed(servers) if s["status"] == "off"), servers[-1])
    body = {"kwargs": {"workflow": "power-on", "server": server["id"]}}

    assert requests.post(url, json=body, timeout=10).status_code == 401
    assert requests.post(url, json=body, auth=("ops", "wrong"), timeout=10).status_code == 401
    sent = requests.post(url, json=body, auth=AUTH, timeout=10)
    assert sent.status_code == 200, sent.text
    task_id = sent.json()["task-id"]

    def ended() -> dict[str, Any] | None:
        got = requests.get(f"{stack.flower_url}/api/task/result/{task_id}", auth=AUTH, timeout=10).json()
        return got if got["state"] in ("SUCCESS", "FAILURE") else None

    answer = wait_until(ended, 30, f"flower task {task_id}", interval=0.2)
    assert answer["state"] == "SUCCESS", answer
    run_id = answer["result"]["run_id"]
    done = cli(stack, "status", run_id, "--wait", "--timeout", "30", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["state"] == "succeeded"
    assert api.server(server["id"])["status"] == "running"


def _max_overlap(actions: list[dict[str, Any]]) -> int:
    events = sorted(
        [(a["started"], 1) for a in actions] + [(a["finished"], -1) for a in actions],
        key=lambda e: (e[0], e[1]),  # at one timestamp, ends before starts
    )
    now = peak = 0
    for _, delta in events:
        now += delta
        peak = max(peak, now)
    return peak


def test_fleet_power_off_through_the_stack(stack: Stack) -> None:
    """The end-to-end check: a fleet job over 6 servers, at most 2 at once, submitted by the CLI."""
    api = Api(stack.api_url, HOST_ENV["HCLOUD_TOKEN"])
    running = [s["id"] for s in api.get("/servers", per_page=50, sort="id", status="running")["servers"]]
    assert len(running) >= 6, "fakecloud's seeded fleet has too few running servers"
    ids = running[:6]
    if cli(stack, "fleet", "--help", timeout=30).returncode != 0:
        pytest.fail("`hcloud-flow fleet` does not exist yet: the stack is up, the fleet CLI is missing")
    started = time.monotonic()
    done = cli(
        stack,
        "fleet",
        "power-off",
        "--servers",
        ",".join(map(str, ids)),
        "--max-concurrency",
        "2",
        "--max-errors",
        "0",
        "--wait",
        "--json",
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    job = json.loads(done.stdout)
    assert job["state"] == "succeeded", job
    assert time.monotonic() - started < 40
    assert [api.server(i)["status"] for i in ids] == ["off"] * 6
    actions = [
        a
        for i in ids
        for a in api.get(f"/servers/{i}/actions", per_page=50)["actions"]
        if a["command"] == "stop_server"
    ]
    assert len(actions) == 6 and all(a["status"] == "success" for a in actions), actions
    assert _max_overlap(actions) <= 2, actions


def test_the_token_stays_in_the_workers_environment(stack: Stack) -> None:
    """After the runs above: the token is in no service's log (fakecloud prints its own) and not in Redis."""
    token = HOST_ENV["HCLOUD_TOKEN"].encode()
    for name, svc in [*stack.running.items(), *((w.name, w) for w in stack.workers)]:
        if name != "fakecloud":
            assert token not in svc.log.read_bytes(), f"the API token is in the {name} log"
    client = stack.redis()
    blobs: list[bytes] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        blobs.append(key)
        if kind == "string":
            blobs.append(client.get(key) or b"")
        elif kind == "hash":
            blobs += [b for kv in client.hgetall(key).items() for b in kv]
        elif kind == "list":
            blobs += client.lrange(key, 0, -1)
        elif kind in ("set", "zset"):
            blobs += [m for m, _ in client.zscan_iter(key)] if kind == "zset" else list(client.smembers(key))
    assert len(blobs) > 10, "the runs above left records in Redis"
    assert not [b for b in blobs if token in b], "the API token is stored in Redis"


def test_the_web_service_of_the_stack_answers_with_a_key(stack: Stack) -> None:
    """The compose web service, started as compose would: keys made on the host, a run over HTTP."""
    assert stack.keys_file is not None
    made = subprocess.run(
        [sys.executable, "-m", "workflows.cli", "apikey", "add", "ci", "--role", "operator"],
        env={**os.environ, "HCLOUD_FLOW_API_KEYS_FILE": str(stack.keys_file)}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    key = made.stdout.strip()
    assert made.returncode == 0 and key
    headers = {"Authorization": f"Bearer {key}"}
    sid = Api(stack.api_url, HOST_ENV["HCLOUD_TOKEN"]).server_ids()[-1]
    answer = requests.post(
        stack.web_url + "/api/v1/runs",
        json={"workflow": "power-on", "server": sid},
        headers=headers,
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run_id"]
    done = wait_until(
        lambda: (
            (r := requests.get(f"{stack.web_url}/api/v1/runs/{run_id}", headers=headers, timeout=10).json())[
                "state"
            ]
            in ("succeeded", "failed")
            and r
        ),
        60,
        "the run to end",
    )
    assert done["state"] == "succeeded" and done["submitted_by"] == "apikey:ci"

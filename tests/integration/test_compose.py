"""docker-compose.yml without Docker: every service's command and environment built exactly as compose builds
them, then started as local processes, and a fleet job and a Flower submission run through the stack.

Compose is emulated, not mocked: the file is read with PyYAML, ``${VAR:-default}`` / ``${VAR:?message}``
interpolation is resolved from a test-provided host environment (never this machine's), each service's
process environment is the image's ``ENV`` plus the service's ``environment``, and its command is the
service's ``command``. The only rewrites are what the container network, the engine and the images would
otherwise provide:

- service names to local addresses (``redis://redis:6379`` to a private redis-server on a free port,
  ``http://fakecloud:8080`` to fakecloud on a free port); the Redis on 6379 is never touched;
- listen addresses ``0.0.0.0`` to ``127.0.0.1`` and fixed ports to free ones;
- the executables to this Python (``hcloud-flow`` = ``python -m workflows.cli``, ``celery`` =
  ``python -m celery``, ``python``);
- each worker replica's container hostname, which compose gives every replica and which Celery's default
  node name (``celery@%h``) is made of: here ``--hostname celery@compose-worker-N``;
- compose secrets: the host's secret files are the test's own (``HCLOUD_FLOW_SECRETS_DIR``, never the
  tree's ``./secrets``), and each service's ``/run/secrets`` is a directory of its own holding links to
  just the files compose would mount into that service;
- the redis image's entrypoint (``docker-entrypoint.sh``, which as root hands its arguments to the redis
  user) is left out: redis-server runs as the test's user.

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
from urllib.parse import quote, urlsplit

import pytest
import redis
import requests
import yaml
from cryptography.fernet import Fernet

from workers.token_health import TokenHealth

from ..support.cloud import Api
from ..support.processes import ROOT, free_port, wait_until

pytestmark = pytest.mark.integration

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"
SECTION = "## Deployment with docker-compose"
AUTH = ("ops", "compose-flower-pw")

# The files of the host's ./secrets, as the README's steps make them (test values).
SECRETS = {
    "hcloud_token": "compose-test-token",
    "secret_key": Fernet.generate_key().decode(),
    "webhook_secret": "compose-webhook-secret-5f0c2a",
    "redis_password": "compose-redis-pw-9d41b7e6",
    "flower_auth": ":".join(AUTH),
}
# Which secrets each service is given; no other service may read one.
GRANTS = {
    "redis": {"redis_password"},
    "worker": {"hcloud_token", "secret_key", "webhook_secret", "redis_password"},
    "beat": {"redis_password"},
    "flower": {"flower_auth", "redis_password"},
    "web": {"redis_password"},
    "fakecloud": set(),
}

# The host environment `docker compose up` is run with. HCLOUD_ENDPOINT points the workers at fakecloud
# exactly as the compose file's comment says, and fakecloud accepts the token of secrets/hcloud_token; the
# tuning is what a simulator 10x faster than real time needs.
HOST_ENV = {
    "HCLOUD_ENDPOINT": "http://fakecloud:8080/v1",
    "FAKECLOUD_TOKEN": SECRETS["hcloud_token"],
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


def secrets_of(service: dict[str, Any]) -> dict[str, str]:
    """Path in the container -> secret name, for each secret a service is given (short or long syntax)."""
    out = {}
    for item in service.get("secrets") or []:
        source, target = (item, item) if isinstance(item, str) else (item["source"], item.get("target"))
        target = target or source
        out[target if target.startswith("/") else f"/run/secrets/{target}"] = source
    return out


def redis_script() -> str:
    """The redis service's shell script (its command is ``sh -c SCRIPT``)."""
    cmd = command_of(compose()["services"]["redis"])
    assert cmd[:2] == ["sh", "-c"] and len(cmd) == 3, cmd
    return cmd[2]


def redis_server_words() -> list[str]:
    """The script's redis-server invocation as words, from ``redis-server`` to its here-document."""
    line = next(ln for ln in redis_script().splitlines() if "redis-server" in ln)
    words = shlex.split(line.split("<<", 1)[0])
    return words[words.index("redis-server") :]


# -- static properties -----------------------------------------------------------------------------------


def test_redis_requires_a_password_from_its_secret_keeps_its_data_and_never_evicts() -> None:
    svc = compose()["services"]["redis"]
    script = redis_script()
    server = redis_server_words()
    assert svc["image"].split(":")[0] == "redis"
    assert server[:2] == ["redis-server", "-"], "its config, requirepass included, comes on stdin"
    assert server[server.index("--appendonly") + 1] == "yes"
    assert server[server.index("--maxmemory-policy") + 1] == "noeviction"
    assert not [w for w in server if "requirepass" in w or "$" in w], "the password is on no command line"
    assert re.search(r"^pw=\$\(cat /run/secrets/redis_password\)", script, re.M), script
    assert re.search(r"^requirepass \$pw$", script, re.M), "the here-document gives the config its password"
    # Through the image's entrypoint, which drops root for the redis user as it does for plain redis-server.
    assert "exec docker-entrypoint.sh redis-server -" in script
    assert secrets_of(svc) == {"/run/secrets/redis_password": "redis_password"}
    assert any(v.split(":")[1] == "/data" for v in svc["volumes"])
    assert "redis-data" in raw_compose()["volumes"]
    check = " ".join(svc["healthcheck"]["test"])
    assert "redis-cli ping" in check and "grep -q PONG" in check
    assert 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)"' in check, "the check authenticates"


@pytest.mark.parametrize(
    ("password", "accepted"),
    [
        ("0f3a9c2e7b1d4f6a8c0e2b4d6f8a0c2e", True),  # openssl rand -hex 32
        ("Zm9vYmFy+/=._~-", True),  # base64 and URL-safe punctuation
        ("", False),
        ("two words", False),
        ('quo"te', False),
        ("back\\slash", False),
        ("two\nlines", False),
    ],
)
def test_redis_refuses_a_password_its_config_line_cannot_hold(
    tmp_path: Path, password: str, accepted: bool
) -> None:
    (tmp_path / "redis_password").write_text(password + "\n")
    script = redis_script().replace("/run/secrets/", f"{tmp_path}/")
    # Stop where redis-server would start: exit 7 means the password passed.
    script = script.replace("exec docker-entrypoint.sh redis-server", "exit 7; :", 1)
    done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=10)
    if accepted:
        assert done.returncode == 7, done.stderr
    else:
        assert done.returncode == 1 and "redis_password must hold one password" in done.stderr


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
    env = environment_of(svc)
    assert env["HCLOUD_TOKEN_FILE"] == "/run/secrets/hcloud_token" and "HCLOUD_TOKEN" not in env
    assert env["HCLOUD_FLOW_SECRET_KEY_FILE"] == "/run/secrets/secret_key"
    assert env["HCLOUD_FLOW_WEBHOOK_SECRET_FILE"] == "/run/secrets/webhook_secret"
    assert env["HCLOUD_FLOW_REDIS_URL"] == "redis://redis:6379/0"
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert svc["restart"] == "unless-stopped"
    assert seconds(svc["stop_grace_period"]) >= 60


def test_the_worker_healthcheck_asks_about_its_token_and_its_own_node() -> None:
    check = " ".join(compose()["services"]["worker"]["healthcheck"]["test"])
    assert "hcloud-flow health worker" in check, "no token or a token the API refused: unhealthy"
    # $$ is compose's escape: the container's shell, not compose, expands $HOSTNAME.
    assert "--node celery@$HOSTNAME" in check
    assert "$$" in COMPOSE_FILE.read_text().split("hcloud-flow health worker", 1)[1].split("\n", 1)[0]


def test_beat_uses_redbeat_and_has_a_healthcheck() -> None:
    beat = compose()["services"]["beat"]
    cmd = command_of(beat)
    assert cmd[:3] == ["celery", "-A", "workers.app"] and "beat" in cmd
    assert cmd[cmd.index("-S") + 1] == "workflows.beat:Scheduler"
    assert beat["depends_on"]["redis"]["condition"] == "service_healthy"
    assert beat["healthcheck"]["test"] == ["CMD", "hcloud-flow", "health", "beat"]


def test_flower_requires_auth_from_its_secret_and_uses_the_apps_broker() -> None:
    svc = compose()["services"]["flower"]
    env = environment_of(svc)
    assert env["FLOWER_BASIC_AUTH_FILE"] == "/run/secrets/flower_auth" and "FLOWER_BASIC_AUTH" not in env
    cmd = command_of(svc)
    # hcloud-flow reads the file into Flower's own environment and refuses to start Flower without it.
    assert cmd[:2] == ["hcloud-flow", "flower"]
    assert not [a for a in cmd if "redis://" in a], "a broker URL here would need the password in it"
    assert cmd[cmd.index("--port") + 1] == "5555" and cmd[cmd.index("--address") + 1] == "0.0.0.0"  # noqa: S104
    assert any(str(p).endswith(":5555") for p in svc["ports"])
    assert "/healthcheck" in " ".join(svc["healthcheck"]["test"])


def test_secrets_are_files_and_each_service_gets_only_its_own() -> None:
    declared = compose()["secrets"]
    assert set(declared) == set().union(*GRANTS.values())
    for name, spec in declared.items():
        assert spec == {"file": f"./secrets/{name}"}, f"secret {name} must be a file of ./secrets"
    moved = compose({**HOST_ENV, "HCLOUD_FLOW_SECRETS_DIR": "/srv/hf"})["secrets"]
    assert {s["file"] for s in moved.values()} == {f"/srv/hf/{name}" for name in declared}
    services = compose()["services"]
    assert set(services) == set(GRANTS)
    for name, svc in services.items():
        mounts = secrets_of(svc)
        assert set(mounts.values()) == GRANTS[name], f"{name} gets {sorted(mounts.values())}"
        readers = " ".join([*environment_of(svc).values(), *command_of(svc)])
        for path in mounts:
            assert path.startswith("/run/secrets/") and path in readers, f"{name}: nothing reads {path}"
        for var, value in environment_of(svc).items():
            if value.startswith("/run/secrets/"):
                assert var.endswith("_FILE") and value in mounts, f"{name}: {var} names a secret not given"


_SECRET_VARIABLE = re.compile(r"TOKEN|SECRET|PASSWORD|PASS$|AUTH|KEY")


def test_no_secret_sits_in_an_environment_or_on_a_command_line() -> None:
    for name, svc in raw_compose()["services"].items():
        for var in environment_of(svc):
            if _SECRET_VARIABLE.search(var):
                assert var.endswith("_FILE"), f"{name}: {var} would put a secret in the environment"
    for name, svc in compose()["services"].items():
        shown = [*environment_of(svc).values(), *command_of(svc), *svc.get("healthcheck", {}).get("test", [])]
        for secret, value in SECRETS.items():
            if name == "fakecloud" and secret == "hcloud_token":
                continue  # the simulator's own token (FAKECLOUD_TOKEN), on its command line by design
            assert not [s for s in shown if value in s], f"{name} shows {secret}"


def test_every_service_rotates_its_logs() -> None:
    raw = raw_compose()
    rotation = raw["x-logging"]
    assert rotation["driver"] == "json-file"
    assert (
        re.fullmatch(r"\d+[kmg]", rotation["options"]["max-size"])
        and int(rotation["options"]["max-file"]) > 1
    )
    for name, svc in raw["services"].items():
        assert svc.get("logging") == rotation, f"{name} keeps its whole output: give it `logging: *logging`"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, svc in compose()["services"].items():
        if name == "fakecloud":  # the simulator, behind its profile
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
        assert seconds(check["timeout"]) < seconds(check["interval"]) and check["retries"] >= 3, name


def test_compose_needs_no_variable_from_the_host() -> None:
    """The secrets are files now: with nothing set on the host the file resolves, every default filled in."""
    assert not [n for n, op, _ in variables_used(COMPOSE_FILE.read_text()) if op in (":?", "?")]
    bare = compose({})
    assert environment_of(bare["services"]["worker"])["HCLOUD_ENDPOINT"] == "https://api.hetzner.cloud/v1"
    assert command_of(bare["services"]["fakecloud"])[-1] == "fakecloud-token"


def test_web_needs_no_token_binds_loopback_and_has_a_healthcheck() -> None:
    services = compose()["services"]
    web = services["web"]
    env = environment_of(web)
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
    text = COMPOSE_FILE.read_text()
    assert "HCLOUD_ENDPOINT=http://fakecloud:8080/v1" in text
    # The workers' token (secrets/hcloud_token) is the one fakecloud accepts, as the comment says.
    assert "printf 'fakecloud-token\\n' > secrets/hcloud_token" in text
    assert cmd[-1] == HOST_ENV["FAKECLOUD_TOKEN"]


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


def test_every_variable_the_readme_table_lists_reaches_compose() -> None:
    """A new user: two settings of the table were never passed to the containers, so a value set for them
    was silently ignored."""
    used = {name for name, _, _ in variables_used(COMPOSE_FILE.read_text())}
    missing = sorted(set(readme_table()) - used)
    assert not missing, f"the README's compose table lists {missing}, which docker-compose.yml never reads"


def test_every_secret_file_is_documented() -> None:
    section = README.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    for name in compose()["secrets"]:
        assert f"`secrets/{name}`" in section, f"the README does not say what secrets/{name} holds"
    assert "umask 077" in section and "hcloud-flow keygen > secrets/secret_key" in section


def test_compose_defaults_are_the_code_defaults() -> None:
    """The worker's environment with nothing set on the host configures exactly what no environment does."""
    probe = (
        "import json, celeryconfig as c; print(json.dumps([c.broker_url, c.result_expires, c.task_time_limit,"
        " c.broker_transport_options, c.hcloud_flow, repr(c.projects()), c.secret_key()]))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HCLOUD", "CELERY", "PYTHON"))}
    base["PYTHONPATH"] = str(ROOT)
    env = environment_of(compose({})["services"]["worker"])
    # The secrets are files only a container has; the stack below runs the services with them.
    for var in [v for v, value in env.items() if value.startswith("/run/secrets/")]:
        del env[var]
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


@pytest.mark.parametrize(
    ("url", "password", "connect", "bare", "secret"),
    [
        ("redis://redis:6379/0", None, "redis://redis:6379/0", "redis://redis:6379/0", None),
        (
            "redis://redis:6379/0",
            "p@ss/w:rd%",
            "redis://:p%40ss%2Fw%3Ard%25@redis:6379/0",
            "redis://redis:6379/0",
            "p@ss/w:rd%",
        ),
        ("redis://ops@h:6379/1", "pw", "redis://ops:pw@h:6379/1", "redis://ops@h:6379/1", "pw"),
        ("redis://:own%40@h/0", None, "redis://:own%40@h/0", "redis://h/0", "own@"),
        (
            "rediss://h:6380/0?ssl_cert_reqs=required",
            "pw",
            "rediss://:pw@h:6380/0?ssl_cert_reqs=required",
            "rediss://h:6380/0?ssl_cert_reqs=required",
            "pw",
        ),
        ("unix:///run/r.sock?db=2", "pw", "unix://:pw@/run/r.sock?db=2", "unix:///run/r.sock?db=2", "pw"),
    ],
)
def test_the_redis_password_goes_into_the_url_clients_connect_with(
    url: str, password: str | None, connect: str, bare: str, secret: str | None
) -> None:
    import celeryconfig

    assert celeryconfig.redis_urls(url, password) == (connect, bare, secret)


def test_a_redis_password_in_the_url_and_in_the_setting_is_refused() -> None:
    import celeryconfig

    with pytest.raises(SystemExit, match="keep one"):
        celeryconfig.redis_urls("redis://:a@h/0", "b")
    with pytest.raises(SystemExit, match="redis://, rediss:// or unix://") as refused:
        celeryconfig.redis_urls("http://user:hunter2@h/0", None)
    assert "hunter2" not in str(refused.value)


def test_the_redis_password_stays_out_of_the_settings_celery_shows(tmp_path: Path) -> None:
    """`celery inspect conf`, `celery report` and Flower show app.conf censored: the password nowhere."""
    (tmp_path / "pw").write_text("conf-probe-pw-41f2\n")
    probe = (
        "import json; from workers.app import app; t = app.conf.table(with_defaults=True, censored=True); "
        "print(json.dumps(t, default=repr)); print(app.conf.redbeat_redis_url)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HCLOUD", "CELERY", "PYTHON"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "HCLOUD_FLOW_REDIS_URL": "redis://127.0.0.1:1/0",
        "HCLOUD_FLOW_REDIS_PASSWORD_FILE": str(tmp_path / "pw"),
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "conf-probe-pw-41f2" not in done.stdout, done.stdout
    assert done.stdout.strip().splitlines()[-1] == "redis://127.0.0.1:1/0", "redbeat's URL has no password"


# -- Redis over TLS, as the README shows it --------------------------------------------------------------


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA of the test's own and a certificate for 127.0.0.1 it signed: ca.pem, server.pem, server.key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def signed(builder: x509.CertificateBuilder, key: Any, issuer_key: Any) -> x509.Certificate:
        return (
            builder.public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
            )
            .sign(issuer_key, hashes.SHA256())
        )

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    usage = dict.fromkeys(
        ("content_commitment", "data_encipherment", "key_agreement", "encipher_only", "decipher_only"), False
    )
    ca = signed(
        x509.CertificateBuilder()
        .subject_name(name("hcloud-flow test CA"))
        .issuer_name(name("hcloud-flow test CA"))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, key_encipherment=False, key_cert_sign=True, crl_sign=True, **usage
            ),
            critical=True,
        ),
        ca_key,
        ca_key,
    )
    server = signed(
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        ),
        key,
        ca_key,
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


_TLS_PROBE = """
import redis
from redbeat.schedulers import get_redis
from workers.app import app

def broker():
    with app.connection() as conn:
        conn.ensure_connection(max_retries=0)

for name, reach in [("broker", broker), ("results", lambda: app.backend.client.ping()),
                    ("schedules", lambda: get_redis(app).ping()),
                    ("run records", lambda: redis.Redis.from_url(app.conf.broker_url).ping())]:
    try:
        reach()
        print(name, "ok")
    except Exception as exc:
        print(name, "refused", type(exc).__name__, "CERTIFICATE_VERIFY_FAILED" in str(exc))
"""


def test_the_readme_rediss_url_reaches_a_redis_over_tls(tmp_path: Path) -> None:
    """The README's rediss:// form against a redis-server with TLS and a password: broker, results, schedules
    and run records connect with the CA named, and every one refuses the server without it."""
    section = README.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    shown = re.search(r"HCLOUD_FLOW_REDIS_URL: (rediss://\S+)", section)
    assert shown, "the README shows no rediss:// URL"
    readme_url = shown.group(1)
    assert "ssl_cert_reqs=required" in readme_url and "ssl_ca_certs=/run/secrets/redis_ca" in readme_url
    ca, cert, key = _tls_files(tmp_path)
    (tmp_path / "redis_password").write_text("tls-redis-pw-77c1\n")
    port = free_port()
    argv = [
        str(shutil.which("redis-server")),
        *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
        *("--save", "", "--dir", str(tmp_path), "--requirepass", "tls-redis-pw-77c1"),
        *("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)),
        "--tls-auth-clients",
        "no",
    ]
    log = tmp_path / "redis.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: server.poll() is not None or _listening(port), 10, "redis-server with TLS")
        if server.poll() is not None:
            pytest.skip(f"this redis-server has no TLS: {log.read_text()[-300:]}")
        local = urlsplit(readme_url)._replace(netloc=f"127.0.0.1:{port}").geturl()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HCLOUD", "CELERY", "PYTHON"))}
        env |= {"PYTHONPATH": str(ROOT), "HCLOUD_FLOW_REDIS_PASSWORD_FILE": str(tmp_path / "redis_password")}

        def probe(url: str) -> list[str]:
            done = subprocess.run(
                [sys.executable, "-c", _TLS_PROBE],
                env=env | {"HCLOUD_FLOW_REDIS_URL": url},
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            return done.stdout.splitlines()

        with_ca = probe(local.replace("/run/secrets/redis_ca", str(ca)))
        assert with_ca == ["broker ok", "results ok", "schedules ok", "run records ok"], with_ca
        without_ca = probe(local.replace("&ssl_ca_certs=/run/secrets/redis_ca", ""))
        assert [line.split()[-1] for line in without_ca] == ["True"] * 4, without_ca
    finally:
        server.terminate()
        server.wait(timeout=10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


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
        "secrets/hcloud_token",
        "secrets/redis_password",
        "api-keys/keys.json",
    ):
        assert dockerignored(path), f"{path} would be sent to the image build"
    assert not dockerignored("workers/app.py")


def test_git_ignores_the_secrets_folder() -> None:
    paths = ["secrets/hcloud_token", "secrets/redis_password", ".env", "api-keys/keys.json"]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.stdout.split() == paths, f"git must ignore each of {paths}: {done.stdout}{done.stderr}"


def test_keygen_and_health_run_from_the_installed_package_outside_the_tree(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """What the image has: the package built from exactly what the Dockerfile copies, installed, and run from
    another directory with no source tree on the path (as README's `hcloud-flow keygen > secrets/...`)."""
    tmp = tmp_path_factory.mktemp("installed")
    src, site, elsewhere = tmp / "src", tmp / "site", tmp / "elsewhere"
    src.mkdir()
    for ins, args in dockerfile_instructions():
        if ins == "COPY":  # each source to the same place, as the image's COPYs do
            for name in [a for a in shlex.split(args) if not a.startswith("--")][:-1]:
                source, target = ROOT / name, src / name.rstrip("/")
                if source.is_dir():
                    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(source, target)
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(tmp / "wheel"), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if built.returncode != 0:
        pytest.fail(f"the package does not build from what the image copies:\n{built.stderr[-2000:]}")
    wheel = next((tmp / "wheel").glob("*.whl"))
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HCLOUD", "CELERY", "PYTHON", "FLOWER"))}
    env["PYTHONPATH"] = str(site)  # before site-packages, where the tree's editable install points

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=60
        )

    where = run("-c", "import workers, workflows, celeryconfig as c; print(workers.__file__, c.__file__)")
    assert where.returncode == 0 and str(ROOT) not in where.stdout and str(site) in where.stdout, where
    script = site / "bin" / "hcloud-flow"
    keygen = subprocess.run(
        [str(script), "keygen"], env=env, cwd=elsewhere, capture_output=True, text=True, timeout=60
    )
    assert keygen.returncode == 0, keygen.stderr
    Fernet(keygen.stdout.strip().encode())  # a valid sealing key, and nothing else on stdout
    assert run("-m", "workflows.cli", "health", "worker", "--help").returncode == 0
    assert run("-m", "workflows.cli", "health", "beat", "--help").returncode == 0


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
    redis_url: str  # the local Redis as HCLOUD_FLOW_REDIS_URL names it: no password in it
    api_url: str
    flower_url: str
    web_url: str = ""
    keys_file: Path | None = None
    secrets_dir: Path | None = None  # the host's ./secrets (HCLOUD_FLOW_SECRETS_DIR)
    mounts: dict[str, Path] = field(default_factory=dict)  # service -> the directory that is its /run/secrets
    running: dict[str, Service] = field(default_factory=dict)
    workers: list[Service] = field(default_factory=list)
    _client: redis.Redis | None = None

    def redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(self.redis_url, password=SECRETS["redis_password"])
        return self._client

    def localize(self, text: str, service: str | None = None) -> str:
        for name, local in self.hosts.items():
            text = text.replace(f"//{name}", f"//{local}")
        if service is not None and service in self.mounts:
            text = text.replace("/run/secrets/", f"{self.mounts[service]}/")
        return text

    def container_env(self, service: str, **extra: str) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("HCLOUD", "CELERY", "FLOWER", "PYTHON"))
        }
        env.update(image_env())
        env.update({k: self.localize(v, service) for k, v in environment_of(self.services[service]).items()})
        env["PYTHONPATH"] = str(ROOT)
        env.update(extra)
        return env

    def healthcheck(
        self, service: str, *, replace: dict[str, str], output: bool = False, **env: str
    ) -> subprocess.Popen[bytes]:
        """Start the service's healthcheck as written (localized with ``replace``); exit 0 is healthy."""
        test = self.services[service]["healthcheck"]["test"]
        if test[0] == "CMD-SHELL":
            script = test[1]
            for old, new in replace.items():
                script = script.replace(old, new)
            argv = ["/bin/sh", "-c", self.localize(script, service)]
        else:
            assert test[0] == "CMD", test
            args = list(test[1:])
            for old, new in replace.items():
                args = [a.replace(old, new) for a in args]
            argv = local_argv([self.localize(a, service) for a in args])
        return subprocess.Popen(
            argv,
            env=self.container_env(service, **env),
            cwd=ROOT,
            stdout=subprocess.PIPE if output else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
        )

    def healthy(self, service: str, *, replace: dict[str, str], timeout: float = 30, **env: str) -> bool:
        check = self.healthcheck(service, replace=replace, **env)
        try:
            return check.wait(timeout=timeout) == 0
        except subprocess.TimeoutExpired:
            check.kill()
            check.wait()
            return False

    def health(
        self, service: str, *, replace: dict[str, str], timeout: float = 30, **env: str
    ) -> tuple[int, str]:
        """Run the service's healthcheck to its end: its exit status and what it printed."""
        check = self.healthcheck(service, replace=replace, output=True, **env)
        out, _ = check.communicate(timeout=timeout)
        return check.returncode, out.decode(errors="replace")


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


HCLOUD_FLOW_SHELL = f"{shlex.quote(sys.executable)} -m workflows.cli"


def make_secrets(tmp: Path) -> Path:
    """The host's ./secrets as the README's steps leave it: a 0700 folder of 0600 files."""
    folder = tmp / "secrets"
    folder.mkdir(mode=0o700)
    for name, value in SECRETS.items():
        path = folder / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    return folder


def mount_secrets(tmp: Path, resolved: dict[str, Any]) -> dict[str, Path]:
    """Each service's /run/secrets: links to the host files of just the secrets compose gives it."""
    mounts = {}
    for name, svc in resolved["services"].items():
        run = tmp / "run" / name / "secrets"
        run.mkdir(parents=True)
        for path, source in secrets_of(svc).items():
            (run / path.removeprefix("/run/secrets/")).symlink_to(resolved["secrets"][source]["file"])
        mounts[name] = run
    return mounts


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    tmp = tmp_path_factory.mktemp("compose")
    logs = tmp / "logs"
    logs.mkdir()
    secrets_dir = make_secrets(tmp)
    resolved = compose({**HOST_ENV, "HCLOUD_FLOW_SECRETS_DIR": str(secrets_dir)})
    services = resolved["services"]
    started: list[Service] = []
    st: Stack | None = None

    def start(svc: Service) -> Service:
        started.append(svc)
        return svc.start()

    try:
        # redis: its script as written, then a free port on loopback and a private data directory.
        redis_port = free_port()
        st = Stack(services, {"redis:6379": f"127.0.0.1:{redis_port}"}, "", "", "")
        st.secrets_dir, st.mounts = secrets_dir, mount_secrets(tmp, resolved)
        data = tmp / "redis-data"
        data.mkdir()
        script = st.localize(command_of(services["redis"])[2], "redis")
        local = (
            f"exec {shlex.quote(str(shutil.which('redis-server')))} - --port {redis_port} --bind 127.0.0.1 "
            f"--dir {shlex.quote(str(data))}"
        )
        assert "exec docker-entrypoint.sh redis-server -" in script
        script = script.replace("exec docker-entrypoint.sh redis-server -", local)
        rds = start(
            Service("redis", ["/bin/sh", "-c", script], st.container_env("redis"), logs / "redis.log")
        )
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
            argv = local_argv([st.localize(a, "worker") for a in command_of(services["worker"])])
            argv += ["--hostname", f"celery@compose-worker-{n}"]  # the replica's container hostname
            st.workers.append(
                start(Service(f"worker-{n}", argv, st.container_env("worker"), logs / f"worker-{n}.log"))
            )
        argv = local_argv([st.localize(a, "beat") for a in command_of(services["beat"])])
        beat = start(Service("beat", argv, st.container_env("beat"), logs / "beat.log"))
        flower_port = free_port()
        argv = [st.localize(a, "flower") for a in command_of(services["flower"])]
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
    """``hcloud-flow ...`` as a user runs it next to the stack: Redis and its password only, no API token."""
    assert st.secrets_dir is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HCLOUD", "CELERY", "PYTHON"))}
    env.update(
        HCLOUD_FLOW_REDIS_URL=st.redis_url,
        HCLOUD_FLOW_REDIS_PASSWORD_FILE=str(st.secrets_dir / "redis_password"),
        PYTHONPATH=str(ROOT),
    )
    return subprocess.run(
        [sys.executable, "-m", "workflows.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_redis_runs_with_the_compose_flags_and_requires_its_password(stack: Stack) -> None:
    conf = stack.redis().config_get("*")
    assert conf["appendonly"] == "yes"
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["requirepass"] == SECRETS["redis_password"]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(stack.redis_url).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(stack.redis_url, password="wrong").ping()
    # Without the password, the same healthcheck fails: it is not "any answer".
    assert not stack.healthy(
        "redis",
        replace={
            "redis-cli": f"redis-cli -p {urlsplit(stack.redis_url).port}",
            "/run/secrets/": "/nonexistent/",
        },
        timeout=5,
    )


def test_workers_point_at_fakecloud_as_the_compose_comment_says(stack: Stack) -> None:
    env = stack.container_env("worker")
    assert env["HCLOUD_ENDPOINT"] == stack.api_url
    token = Path(env["HCLOUD_TOKEN_FILE"]).read_text().strip()
    assert token == command_of(stack.services["fakecloud"])[-1]  # the token fakecloud accepts
    assert env["HCLOUD_FLOW_REDIS_URL"] == stack.redis_url
    assert len(Api(stack.api_url, token).server_ids()) == int(HOST_ENV["FAKECLOUD_SERVERS"])


def test_each_service_reads_only_the_secrets_it_is_given(stack: Stack) -> None:
    for name, folder in stack.mounts.items():
        assert {p.name for p in folder.iterdir()} == GRANTS[name], name
    # The web service, given no token, starts and answers: it never needed one.
    assert "HCLOUD_TOKEN_FILE" not in stack.container_env("web")


def test_each_worker_replica_passes_its_own_healthcheck(stack: Stack) -> None:
    replace = {"hcloud-flow": HCLOUD_FLOW_SHELL}
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


def test_the_worker_healthcheck_fails_without_a_usable_token(stack: Stack, tmp_path: Path) -> None:
    replace = {"hcloud-flow": HCLOUD_FLOW_SHELL}
    token = SECRETS["hcloud_token"]
    # The API answers the token 401 (noted as the workers' client notes every answer), an hour from now so
    # that no answer the running workers note meanwhile comes later.
    later = time.time() + 3600
    TokenHealth(stack.redis(), "default", token, clock=lambda: later).note("GET", "/servers", 401)
    code, out = stack.health("worker", replace=replace, HOSTNAME="compose-worker-1")
    assert code != 0 and "token of project default: refused by the API (HTTP 401 to GET /servers" in out, out
    # A later success clears it.
    TokenHealth(stack.redis(), "default", token, clock=lambda: later + 1).note("GET", "/servers", 200)
    code, out = stack.health("worker", replace=replace, HOSTNAME="compose-worker-1")
    assert code == 0, out
    # A worker whose token file is empty has no token at all.
    empty = tmp_path / "hcloud_token"
    empty.write_text("\n")
    code, out = stack.health(
        "worker", replace=replace, HOSTNAME="compose-worker-1", HCLOUD_TOKEN_FILE=str(empty)
    )
    assert code != 0 and "token of project default: none configured" in out, out


def test_beat_passes_its_healthcheck_and_fails_it_where_no_beat_ticks(stack: Stack) -> None:
    assert stack.healthy("beat", replace={}, timeout=30)
    code, out = stack.health("beat", replace={}, HCLOUD_FLOW_REDIS_URL=stack.redis_url.replace("/0", "/9"))
    assert code != 0 and "no beat has ticked" in out, out


def test_flower_submits_a_run_with_basic_auth_only(stack: Stack) -> None:
    url = f"{stack.flower_url}/api/task/send-task/hcloud_flow.submit"
    api = Api(stack.api_url, SECRETS["hcloud_token"])
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
    api = Api(stack.api_url, SECRETS["hcloud_token"])
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


def _as_shown(value: str) -> set[bytes]:
    """A secret as it could show: itself, and URL-quoted (the Redis password inside a URL)."""
    return {value.encode(), quote(value, safe="").encode()}


def _redis_blobs(client: redis.Redis) -> list[bytes]:
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
    return blobs


def test_no_secret_in_any_log_on_any_command_line_or_in_redis(stack: Stack) -> None:
    """After the runs above: no secret file's content in a service's log or command line (fakecloud's own
    token excepted: the simulator prints it and takes it as an argument), nor anywhere in Redis."""
    processes = [*stack.running.items(), *((w.name, w) for w in stack.workers)]
    blobs = _redis_blobs(stack.redis())
    assert len(blobs) > 10, "the runs above left records in Redis"
    for secret, value in SECRETS.items():
        shown = _as_shown(value)
        for name, svc in processes:
            if name == "fakecloud" and secret == "hcloud_token":
                continue
            assert svc.proc is not None
            log = svc.log.read_bytes() + (svc.stdout.read_bytes() if svc.stdout else b"")
            assert not [s for s in shown if s in log], f"{secret} is in the {name} log"
            cmdline = Path(f"/proc/{svc.proc.pid}/cmdline").read_bytes()
            assert not [s for s in shown if s in cmdline], f"{secret} is on the command line of {name}"
        assert not [b for b in blobs for s in shown if s in b], f"{secret} is stored in Redis"


def test_the_redis_password_stays_out_of_celery_inspect_conf_and_flower(stack: Stack) -> None:
    shown = _as_shown(SECRETS["redis_password"])
    conf = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "inspect",
            "conf",
            "-d",
            "celery@compose-worker-1",
        ],
        env=stack.container_env("worker"),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert conf.returncode == 0 and b"broker_url" in conf.stdout, conf.stdout + conf.stderr
    assert not [s for s in shown if s in conf.stdout + conf.stderr], "celery inspect conf shows the password"
    for path in ("/broker", "/workers", "/api/workers?refresh=1"):
        page = requests.get(stack.flower_url + path, auth=AUTH, timeout=30)
        assert page.status_code == 200, (path, page.status_code)
        assert not [s for s in shown if s in page.content], f"Flower's {path} shows the Redis password"


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
    sid = Api(stack.api_url, SECRETS["hcloud_token"]).server_ids()[-1]
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

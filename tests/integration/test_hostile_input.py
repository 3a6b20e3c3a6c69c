"""Hostile and bad input across every way in: the CLI, the Python API, send_task payloads and Flower.

Each case must get a clear error (and a non-zero exit where there is one), and change nothing: no action
started at the API, no run or fleet job recorded. The last cases cover the workers' own configuration:
a missing token, a wrong token, an unreachable API, and an unreachable Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from workers.errors import HcloudFlowError
from workers.run_store import RunStore
from workflows.api import Jobs, Runs
from workflows.fleet import JobStore

from ..conftest import start_cloud
from ..support.cloud import Api, Control
from ..support.processes import Flower, RedisServer, Worker, client_app, run_cli, worker_env

pytestmark = pytest.mark.integration
AUTH = ("ops", "hostile-test-pw")


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=8, speed=20.0, seed=71)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, cloud: Any, logdir: Path) -> Iterator[Worker]:
    w = Worker("hostile", worker_env(redis_server.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="20"), logdir)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def flower(redis_server: RedisServer, logdir: Path) -> Iterator[Flower]:
    f = Flower(redis_server.url, logdir, AUTH)
    yield f
    f.stop()


@pytest.fixture(scope="module")
def sid(cloud: Any) -> int:
    server = Api(cloud.base_url).get("/servers")["servers"][0]
    Control(cloud.control_url).send("PATCH", f"/servers/{server['id']}", {"status": "running"})
    return int(server["id"])


class Surfaces:
    """Every way in, each returning (message, exit code or None) for a refused request."""

    def __init__(self, redis_url: str, app: Celery, store: Any, flower: Flower, tmp: Path) -> None:
        self.redis_url, self.app, self.flower, self.tmp = redis_url, app, flower, tmp
        self.runs = Runs(app, store)
        self.jobs = Jobs(app, JobStore(store.redis))

    def cli(self, *args: str, redis_url: str | None = None) -> tuple[str, int]:
        done = run_cli(*args, redis_url=redis_url or self.redis_url, timeout=90)
        return done.stderr + done.stdout, done.returncode

    def api(self, call: Callable[[Runs, Jobs], Any]) -> tuple[str, None]:
        with pytest.raises(HcloudFlowError) as info:
            call(self.runs, self.jobs)
        return str(info.value), None

    def task(
        self, name: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None
    ) -> tuple[str, None]:
        pending = self.app.send_task(name, args=args or [], kwargs=kwargs or {})
        with pytest.raises(Exception) as info:
            pending.get(timeout=30)
        return f"{type(info.value).__name__}: {info.value}", None

    def http(
        self, body: Any, *, auth: bool = True, task: str = "hcloud_flow.submit"
    ) -> tuple[str, int | None]:
        if not auth:
            import requests

            r = requests.post(f"{self.flower.url}/api/task/send-task/{task}", json=body, timeout=10)
            return r.text, r.status_code
        sent = self.flower.send(task, body)
        if sent.status_code != 200:
            return sent.text, sent.status_code
        answer = self.flower.result(sent.json()["task-id"])
        assert answer["state"] == "FAILURE", answer
        return str(answer["result"]), None


BIG = "x" * (33 * 1024)
FLEET = {"max_concurrency": "2", "max_errors": "0"}

CASES: list[tuple[str, Callable[[Surfaces, int], tuple[str, int | None]], str, int | None]] = [
    # -- the CLI (exit 2: bad input, 3: unreachable) --
    (
        "cli unknown workflow",
        lambda s, i: s.cli("run", "defragment", "--server", str(i)),
        "unknown workflow",
        2,
    ),
    (
        "cli grace not a number",
        lambda s, i: s.cli("run", "snapshot", "--server", str(i), "--grace", "soon"),
        "not a valid float",
        2,
    ),
    (
        "cli negative grace",
        lambda s, i: s.cli("run", "shutdown", "--server", str(i), "--grace", "-1"),
        "grace",
        2,
    ),
    (
        "cli malformed selector",
        lambda s, i: s.cli(
            "fleet", "reboot", "--selector", "env in (", "--max-concurrency", "2", "--max-errors", "0"
        ),
        "label selector",
        2,
    ),
    (
        "cli negative concurrency",
        lambda s, i: s.cli(
            "fleet", "reboot", "--servers", str(i), "--max-concurrency", "-5", "--max-errors", "0"
        ),
        "max_concurrency",
        2,
    ),
    (
        "cli huge concurrency",
        lambda s, i: s.cli(
            "fleet", "reboot", "--servers", str(i), "--max-concurrency", "99999999", "--max-errors", "0"
        ),
        "max_concurrency",
        2,
    ),
    (
        "cli shell injection in a label",
        lambda s, i: s.cli("run", "snapshot", "--server", str(i), "--label", "x=$(rm -rf /)"),
        "label",
        2,
    ),
    (
        "cli oversized user_data",
        lambda s, i: s.cli(
            "run", "rebuild", "--server", str(i), "--image", "ubuntu-24.04", "--user-data", BIG
        ),
        "32 KiB",
        2,
    ),
    (
        "cli unknown image",
        lambda s, i: s.cli("run", "rebuild", "--server", str(i), "--image", "windows-95"),
        "no system image named",
        2,
    ),
    (
        "cli empty image",  # once rebuilt the server from the first image listed (debian-11)
        lambda s, i: s.cli("run", "rebuild", "--server", str(i), "--image", ""),
        "image is empty",
        2,
    ),
    (
        "cli blank ssh key name",
        lambda s, i: s.cli("run", "rescue", "--server", str(i), "--ssh-key", " "),
        "ssh_keys holds an empty name",
        2,
    ),
    (
        "cli blank server",
        lambda s, i: s.cli("run", "reboot", "--server", "  "),
        "server as an id or a name",
        2,
    ),
    (
        "cli unknown ssh key",
        lambda s, i: s.cli("run", "rescue", "--server", str(i), "--ssh-key", "nobody@nowhere"),
        "no ssh key named",
        2,
    ),
    (
        "cli SQL in a server name",
        lambda s, i: s.cli("run", "reboot", "--server", "srv-1'; DROP TABLE servers;--"),
        "no server named",
        2,
    ),
    (
        "cli bad cron",
        lambda s, i: s.cli(
            "schedule",
            "add",
            "w1",
            "reboot",
            "--cron",
            "every sunday",
            "--duration",
            "1h",
            "--selector",
            "env=x",
        ),
        "cron needs 5 fields",
        2,
    ),
    (
        "cli bad time zone",
        lambda s, i: s.cli(
            "schedule",
            "add",
            "w2",
            "reboot",
            "--cron",
            "0 3 * * *",
            "--tz",
            "Atlantis/Capital",
            "--duration",
            "1h",
            "--selector",
            "env=x",
        ),
        "unknown time zone",
        2,
    ),
    (
        "cli unreachable Redis",
        lambda s, i: s.cli("run", "reboot", "--server", str(i), redis_url="redis://127.0.0.1:1/0"),
        "cannot reach Redis",
        3,
    ),
    # -- the Python API --
    (
        "api no server",
        lambda s, i: s.api(lambda r, j: r.submit("snapshot", server=None)),  # type: ignore[arg-type]
        "server as an id or a name",
        None,
    ),
    (
        "api boolean server",
        lambda s, i: s.api(lambda r, j: r.submit("snapshot", server=True)),
        "server as an id or a name",
        None,
    ),
    (
        "api negative server id",
        lambda s, i: s.api(lambda r, j: r.submit("snapshot", server=-5)),
        "must be positive",
        None,
    ),
    (
        "api labels of the wrong type",
        lambda s, i: s.api(lambda r, j: r.submit("snapshot", server=i, labels={"a": 1})),
        "labels",
        None,
    ),
    (
        "api header injection in a label",
        lambda s, i: s.api(lambda r, j: r.submit("snapshot", server=i, labels={"k": "v\r\nX-Evil: 1"})),
        "label",
        None,
    ),
    (
        "api description too long",
        lambda s, i: s.api(lambda r, j: r.submit("snapshot", server=i, description="d" * 5000)),
        "description",
        None,
    ),
    (
        "api image of the wrong type",
        lambda s, i: s.api(lambda r, j: r.submit("rebuild", server=i, image=["x"])),
        "image must be",
        None,
    ),
    (
        "api blank image",
        lambda s, i: s.api(lambda r, j: r.submit("rebuild", server=i, image=" \t")),
        "image is empty",
        None,
    ),
    (
        "api image id zero",
        lambda s, i: s.api(lambda r, j: r.submit("rebuild", server=i, image=0)),
        "image id must be positive",
        None,
    ),
    (
        "api empty ssh key name",
        lambda s, i: s.api(lambda r, j: r.submit("rescue", server=i, ssh_keys=["ops", ""])),
        "ssh_keys holds an empty name",
        None,
    ),
    (
        "api oversized user_data",
        lambda s, i: s.api(lambda r, j: r.submit("rebuild", server=i, image="ubuntu-24.04", user_data=BIG)),
        "32 KiB",
        None,
    ),
    (
        # An outside test: "no" read as true, and a negative limit read every run kept.
        "api list active not a bool",
        lambda s, i: s.api(lambda r, j: r.list(active="no")),
        "active must be true or false",
        None,
    ),
    ("api list negative limit", lambda s, i: s.api(lambda r, j: r.list(limit=-1)), "limit must be", None),
    ("api list server id text", lambda s, i: s.api(lambda r, j: r.list(server_id="7")), "server_id", None),
    ("api job list limit zero", lambda s, i: s.api(lambda r, j: j.list(0)), "limit must be", None),
    (
        "api empty fleet",
        lambda s, i: s.api(lambda r, j: j.start("reboot", servers=[], **FLEET)),
        "non-empty",
        None,
    ),
    (
        "api scientific concurrency",
        lambda s, i: s.api(
            lambda r, j: j.start("reboot", servers=[i], max_concurrency="1e9", max_errors="0")
        ),
        "max_concurrency",
        None,
    ),
    # -- send_task payloads, as another service in any language would send them --
    (
        "task workflow not a string",
        lambda s, i: s.task("hcloud_flow.submit", kwargs={"workflow": 42, "server": i}),
        "unknown workflow",
        None,
    ),
    (
        "task params not an object",
        lambda s, i: s.task(
            "hcloud_flow.submit", kwargs={"workflow": "snapshot", "server": i, "params": "description=x"}
        ),
        "params must be an object",
        None,
    ),
    (
        # An outside test: an empty list (or 0, "", false) was taken as no parameters and the run started.
        "task params an empty list",
        lambda s, i: s.task("hcloud_flow.submit", kwargs={"workflow": "reboot", "server": i, "params": []}),
        "params must be an object",
        None,
    ),
    (
        "task target without server_id",
        lambda s, i: s.task("hcloud_flow.power_on", args=[{"no": "server"}]),
        "no server_id",
        None,
    ),
    (
        "task server id 0",
        lambda s, i: s.task("hcloud_flow.reboot", args=[0]),
        "positive",
        None,
    ),
    (
        "task server id -5",
        lambda s, i: s.task("hcloud_flow.reboot", args=[-5]),
        "server",
        None,
    ),
    (
        "task a 10 MB description",
        lambda s, i: s.task("hcloud_flow.create_image", args=[i], kwargs={"description": "x" * 10_000_000}),
        "longer than 1000",
        None,
    ),
    (
        "task an extra positional argument",
        lambda s, i: s.task("hcloud_flow.reboot", args=[i, "surprise"]),
        "takes one argument",
        None,
    ),
    (
        "cli control characters in a description",
        lambda s, i: s.cli("run", "snapshot", "--server", str(i), "--description", "a\x1b[2Jb"),
        "control characters",
        2,
    ),
    (
        "task our reserved label",
        lambda s, i: s.task(
            "hcloud_flow.create_image", args=[i], kwargs={"labels": {"hcloud-flow/step": "x"}}
        ),
        "reserved",
        None,
    ),
    (
        "api ten thousand labels",
        lambda s, i: s.api(
            lambda r, j: r.submit("snapshot", server=i, labels={f"k{n}": "v" for n in range(10_000)})
        ),
        "at most 64",
        None,
    ),
    (
        "task labels as a list",
        lambda s, i: s.task("hcloud_flow.create_image", args=[i], kwargs={"labels": [1, 2]}),
        "labels must be",
        None,
    ),
    (
        "task ssh keys as a string",
        lambda s, i: s.task("hcloud_flow.enable_rescue", args=[i], kwargs={"ssh_keys": "abc"}),
        "ssh_keys must be",
        None,
    ),
    ("task rebuild without image", lambda s, i: s.task("hcloud_flow.rebuild", args=[i]), "needs image", None),
    (
        "task submit with an empty image",
        lambda s, i: s.task(
            "hcloud_flow.submit", kwargs={"workflow": "rebuild", "server": i, "params": {"image": ""}}
        ),
        "image is empty",
        None,
    ),
    (
        "task rebuild with an empty image",
        lambda s, i: s.task("hcloud_flow.rebuild", args=[i], kwargs={"image": ""}),
        "an image id or a system image name",
        None,
    ),
    (
        "task unknown parameter",
        lambda s, i: s.task("hcloud_flow.power_off", args=[i], kwargs={"colour": "red"}),
        "does not take colour",
        None,
    ),
    (
        "task fleet with zero concurrency",
        lambda s, i: s.task(
            "hcloud_flow.fleet_start",
            kwargs={"workflow": "reboot", "servers": [i], "max_concurrency": "0", "max_errors": "0"},
        ),
        "max_concurrency",
        None,
    ),
    (
        "task cancel with a number",
        lambda s, i: s.task("hcloud_flow.cancel", kwargs={"run_id": 5}),
        "run_id must be a string",
        None,
    ),
    (
        "task grace not a number",
        lambda s, i: s.task("hcloud_flow.shutdown", args=[i], kwargs={"grace": "x"}),
        "grace must be a number",
        None,
    ),
    (
        "task endless deadline",
        lambda s, i: s.task("hcloud_flow.power_off", args=[i], kwargs={"deadline": 1e12}),
        "deadline must be a number",
        None,
    ),
    # -- Flower's HTTP API --
    (
        "http unknown server",
        lambda s, i: s.http({"kwargs": {"workflow": "snapshot", "server": "ghost"}}),
        "no server named",
        None,
    ),
    (
        "http empty image",
        lambda s, i: s.http({"kwargs": {"workflow": "rebuild", "server": i, "params": {"image": ""}}}),
        "image is empty",
        None,
    ),
    (
        "http without credentials",
        lambda s, i: s.http({"kwargs": {"workflow": "reboot", "server": i}}, auth=False),
        "",
        401,
    ),
    ("http args not a list", lambda s, i: s.http({"args": "reboot", "kwargs": {}}), "", 400),
    (
        "http injection in a description",
        lambda s, i: s.http(
            {
                "kwargs": {
                    "workflow": "snapshot",
                    "server": i,
                    "params": {"description": "<script>alert(1)</script>" * 100},
                }
            }
        ),
        "description",
        None,
    ),
]


@pytest.mark.parametrize(("case", "call", "message", "exit_code"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(
    case: str,
    call: Callable[[Surfaces, int], tuple[str, int | None]],
    message: str,
    exit_code: int | None,
    worker: Worker,
    flower: Flower,
    cloud: Any,
    redis_server: RedisServer,
    celery_client: Celery,
    sid: int,
    tmp_path: Path,
) -> None:
    store = RunStore(redis_server.client())
    control = Control(cloud.control_url)
    before = (len(control.posts()), store.redis.zcard("hf:runs"), store.redis.zcard("hf:jobs"))
    text, code = call(Surfaces(redis_server.url, celery_client, store, flower, tmp_path), sid)
    assert message in text, text[-2000:]
    assert code == exit_code
    assert (len(control.posts()), store.redis.zcard("hf:runs"), store.redis.zcard("hf:jobs")) == before
    assert not store.redis.exists("hf:window:w1") and not store.redis.exists("hf:window:w2")


def test_the_table_is_wide_enough() -> None:
    kinds = {c[0].split()[0] for c in CASES}
    assert len(CASES) >= 30 and kinds == {"cli", "api", "task", "http"}


@pytest.mark.parametrize(
    ("case", "env", "message"),
    [
        ("wrong token", {"HCLOUD_TOKEN": "not-the-token"}, "unauthorized"),
        ("unreachable API", {"HCLOUD_ENDPOINT": "http://127.0.0.1:1/v1"}, "ConnectionError"),
    ],
)
def test_worker_configuration_faults_fail_clearly(
    case: str,
    env: dict[str, str],
    message: str,
    redis_server: RedisServer,
    cloud: Any,
    logdir: Path,
    sid: int,
) -> None:
    # A worker of its own on a Redis database of its own, so the module's good worker cannot answer.
    db = {"wrong token": 2, "unreachable API": 3}[case]
    url = redis_server.url.rsplit("/", 1)[0] + f"/{db}"
    w = Worker(f"bad-config-{db}", worker_env(url, cloud.base_url, **env), logdir)
    app = client_app(url)
    posts = len(Control(cloud.control_url).posts())
    try:
        with pytest.raises(HcloudFlowError) as info:
            Runs(app, RunStore(redis.Redis.from_url(url))).submit("reboot", server=sid, timeout=60)
    finally:
        app.close()
        w.stop()
    assert message in f"{type(info.value).__name__}: {info.value}"
    assert len(Control(cloud.control_url).posts()) == posts


@pytest.mark.parametrize(
    ("case", "env", "message"),
    [
        ("missing token", {"HCLOUD_TOKEN": ""}, "set HCLOUD_TOKEN"),
        ("malformed sealing key", {"HCLOUD_FLOW_SECRET_KEY": "not-a-fernet-key"}, "HCLOUD_FLOW_SECRET_KEY"),
        # Each of these started, and then failed every request or lost every webhook without a word.
        ("endpoint not a URL", {"HCLOUD_ENDPOINT": "notaurl"}, "HCLOUD_ENDPOINT must be an http(s) URL"),
        (
            "webhook key file missing",
            {"HCLOUD_FLOW_WEBHOOK_SECRET_FILE": "/nonexistent/webhook.key"},
            "HCLOUD_FLOW_WEBHOOK_SECRET_FILE: cannot read",
        ),
        ("global webhook not http", {"HCLOUD_FLOW_NOTIFY_URLS": "ftp://x"}, "HCLOUD_FLOW_NOTIFY_URLS"),
        ("token of two lines", {"HCLOUD_TOKEN": "abc\ndef"}, "HCLOUD_TOKEN: the API token holds spaces"),
    ],
)
def test_a_worker_that_could_do_nothing_refuses_to_start(
    case: str, env: dict[str, str], message: str, redis_server: RedisServer, cloud: Any, logdir: Path
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/4"
    name = "no-start-" + case.replace(" ", "-")
    with pytest.raises(AssertionError, match="died at start"):
        Worker(name, worker_env(url, cloud.base_url, **env), logdir)
    log = (logdir / f"worker-{name}.log").read_text()
    assert message in log and "ready." not in log and "Traceback" not in log, log[-2000:]

"""The hcloud-flow CLI as a user runs it: a subprocess with no API token, against real workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import start_cloud
from ..support.cloud import Api, Control
from ..support.processes import ROOT, RedisServer, Worker, run_cli, worker_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=12, speed=20.0, seed=21)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, cloud: Any, logdir: Path) -> Iterator[Worker]:
    w = Worker("cli", worker_env(redis_server.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="20"), logdir)
    yield w
    w.stop()


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, redis_url=redis_url)  # no HCLOUD_TOKEN: the CLI needs none


@pytest.fixture(scope="module")
def names(cloud: Any) -> list[str]:
    api = Api(cloud.base_url)
    control = Control(cloud.control_url)
    servers = api.get("/servers", per_page=50)["servers"]
    for s in servers:
        control.send("PATCH", f"/servers/{s['id']}", {"status": "running", "acpi": True})
    return [s["name"] for s in servers]


def test_run_wait_json_then_status_list_and_cancel(
    worker: Worker, redis_server: RedisServer, names: list[str]
) -> None:
    done = cli(
        redis_server.url,
        "run",
        "snapshot",
        "--server",
        names[0],
        "--wait",
        "--json",
        "--description",
        "cli",
        "--label",
        "via=cli",
    )
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "succeeded" and [s["name"] for s in run["steps"]] == [
        "shutdown",
        "create_image",
        "power_on",
    ]
    status = cli(redis_server.url, "status", run["id"], "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == run["id"]
    text = cli(redis_server.url, "status", run["id"])
    assert "create_image" in text.stdout and "100%" in text.stdout
    listed = cli(redis_server.url, "list", "--json")
    assert run["id"] in {r["id"] for r in json.loads(listed.stdout)}
    mine = next(r for r in json.loads(listed.stdout) if r["id"] == run["id"])
    assert mine["submitted_by"] and "@" in mine["submitted_by"], "who submitted it is recorded"
    table = cli(redis_server.url, "list").stdout
    assert "CREATED (UTC)" in table and mine["submitted_by"] in table
    # A server by name, as `run` takes it (the CLI has no token: matched against the runs' recorded names).
    by_name = cli(redis_server.url, "list", "--server", names[0], "--json")
    assert by_name.returncode == 0, by_name.stderr
    assert run["id"] in {r["id"] for r in json.loads(by_name.stdout)}
    assert all(r["server_name"] == names[0] for r in json.loads(by_name.stdout))
    by_id = cli(redis_server.url, "list", "--server", str(run["server_id"]), "--json")
    assert run["id"] in {r["id"] for r in json.loads(by_id.stdout)}
    # A reader that goes away early (here: before anything is written) is no error, and leaves no traceback.
    piped = subprocess.run(  # noqa: S602 - a fixed pipeline, as a user types it
        f"{sys.executable} -m workflows.cli list | true; {sys.executable} -m workflows.cli workflows | true",
        shell=True,
        env={**os.environ, "HCLOUD_FLOW_REDIS_URL": redis_server.url, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr
    again = cli(redis_server.url, "cancel", run["id"])
    assert again.returncode == 2 and "already ended" in again.stderr


def test_run_without_wait_prints_the_run_id(
    worker: Worker, redis_server: RedisServer, names: list[str]
) -> None:
    started = cli(redis_server.url, "run", "reboot", "--server", names[1])
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    followed = cli(redis_server.url, "status", run_id, "--wait", "--quiet")
    assert followed.returncode == 0 and "succeeded" in followed.stdout


def test_failed_run_exits_1(worker: Worker, redis_server: RedisServer, cloud: Any, names: list[str]) -> None:
    api, control = Api(cloud.base_url), Control(cloud.control_url)
    sid = api.get("/servers", name=names[2])["servers"][0]["id"]
    control.send("PATCH", f"/servers/{sid}", {"fail_next": {"command": "reset", "code": "unknown_error"}})
    failed = cli(redis_server.url, "run", "reset", "--server", str(sid), "--wait")
    assert failed.returncode == 1
    assert "unknown_error" in failed.stderr + failed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "power-on", "--server", "no-such-server"], "no server named"),
        (["run", "rebuild", "--server", "srv-1"], "needs image"),
        (["run", "bake-bread", "--server", "srv-1"], "unknown workflow"),
        (["run", "snapshot", "--server", "srv-1", "--grace", "-5"], "grace must be"),
        (["run", "reset-password", "--server", "srv-1", "--image", "x"], "does not take image"),
        (["status", "0000"], "no run"),
        (["secret", "0000"], "no run"),
    ],
)
def test_bad_input_exits_2_and_says_why(
    worker: Worker, redis_server: RedisServer, names: list[str], args: list[str], message: str
) -> None:
    done = cli(redis_server.url, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr


def test_refusals_under_json_are_json_too(redis_server: RedisServer) -> None:
    done = cli(redis_server.url, "status", "no-such-run", "--json")
    assert done.returncode == 2, done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["exit_code"] == 2 and error["type"] == "NotFound" and error["message"]


def test_a_wait_that_times_out_exits_4_and_says_how_to_follow(
    worker: Worker, redis_server: RedisServer, cloud: Any, names: list[str]
) -> None:
    api, control = Api(cloud.base_url), Control(cloud.control_url)
    sid = api.get("/servers", name=names[3])["servers"][0]["id"]
    control.send("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
    # create_image takes 20 s at fakecloud's speed 20: a 0.5 s patience ends first, the run goes on.
    done = cli(
        redis_server.url, "run", "snapshot", "--server", str(sid), "--wait", "--timeout", "0.5", "--json"
    )
    assert done.returncode == 4, done.stderr
    assert "it goes on" in done.stderr and "hcloud-flow status" in done.stderr and "--wait" in done.stderr
    assert json.loads(done.stdout)["error"]["type"] == "StillRunning"
    run_id = done.stderr.split("hcloud-flow status ", 1)[1].split()[0]
    followed = cli(redis_server.url, "status", run_id, "--wait", "--quiet")
    assert followed.returncode == 0 and "succeeded" in followed.stdout


def test_secret_without_a_key_says_the_password_was_dropped(
    worker: Worker, redis_server: RedisServer, names: list[str]
) -> None:
    done = cli(redis_server.url, "run", "reset-password", "--server", names[3], "--wait", "--json")
    run_id = json.loads(done.stdout)["id"]
    secret = cli(redis_server.url, "secret", run_id)
    assert secret.returncode == 2 and "dropped" in secret.stderr


def test_unreachable_redis_exits_3() -> None:
    done = cli("redis://127.0.0.1:1/0", "list")
    assert done.returncode == 3 and "cannot reach Redis" in done.stderr


def test_workflows_lists_every_workflow_with_json() -> None:
    from workflows.definitions import WORKFLOWS

    done = cli("redis://127.0.0.1:1/0", "workflows", "--json")
    assert done.returncode == 0
    assert {w["name"] for w in json.loads(done.stdout)} == set(WORKFLOWS)
    # Every flag the listing names is one `run` accepts (they used to say --labels and --ssh-keys).
    accepted = cli("redis://127.0.0.1:1/0", "run", "--help").stdout.split()
    listed = {p["flag"] for w in json.loads(done.stdout) for p in w["params"]}
    assert listed and all(flag in accepted for flag in listed), sorted(f for f in listed if f not in accepted)


def test_servers_and_images_show_our_runs_on_them(
    worker: Worker, redis_server: RedisServer, names: list[str], cloud: Any
) -> None:
    """The read commands an operator needs beside the hcloud CLI: which run holds a server, which made an
    image. The snapshot comes from a run of this test, so its image names that run."""
    made = cli(redis_server.url, "run", "snapshot", "--server", names[3], "--wait", "--json", "--quiet")
    assert made.returncode == 0, made.stderr
    run = json.loads(made.stdout)
    image_id = run["steps"][1]["outputs"]["image"]["id"]

    listed = cli(redis_server.url, "servers", "--json")
    assert listed.returncode == 0, listed.stderr
    servers = json.loads(listed.stdout)
    assert {s["name"] for s in servers} >= set(names)
    assert all(s["held_by"] is None for s in servers), "nothing runs now"
    label = Api(cloud.base_url).get("/servers", per_page=50)["servers"][0]["labels"]
    if label:
        key, value = next(iter(label.items()))
        picked = json.loads(cli(redis_server.url, "servers", "--selector", f"{key}={value}", "--json").stdout)
        assert picked and all(s["labels"].get(key) == value for s in picked)
    text = cli(redis_server.url, "servers")
    assert text.returncode == 0 and names[3] in text.stdout and "HELD BY RUN" in text.stdout

    images = json.loads(cli(redis_server.url, "images", "--json").stdout)
    mine = next(i for i in images if i["id"] == image_id)
    assert mine["run_id"] == run["id"] and mine["from_server"] == names[3]
    assert run["id"] in cli(redis_server.url, "images").stdout

    bad = cli(redis_server.url, "servers", "--selector", "env in (")
    assert bad.returncode == 2 and "selector" in bad.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["servers", "--submit-timeout", "0"], "above 0"),
        (["images", "--submit-timeout", "nan"], "above 0"),
        (["run", "reboot", "--server", "srv-1", "--submit-timeout", "-1"], "above 0"),
        (["servers", "--selector", "ünï=✓"], "label selector"),
    ],
)
def test_odd_waits_and_selectors_are_refused_before_anything_is_sent(
    redis_server: RedisServer, args: list[str], message: str
) -> None:
    """Found by an outside tester: these gave tracebacks, or exit 3 ("unreachable") for bad input."""
    done = cli(redis_server.url, *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("auth", [":", "nocolon", "user:", ":secret"])
def test_flower_refuses_credentials_that_are_not_user_and_password(auth: str) -> None:
    """``:`` let anybody into Flower's HTTP API, which can send and cancel tasks."""
    env = {**os.environ, "FLOWER_BASIC_AUTH": auth}
    done = subprocess.run(
        [sys.executable, "-m", "workflows.cli", "flower"], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "FLOWER_BASIC_AUTH" in done.stderr


def test_servers_show_their_location(worker: Worker, redis_server: RedisServer, names: list[str]) -> None:
    servers = json.loads(cli(redis_server.url, "servers", "--json").stdout)
    assert all(s["location"] for s in servers), "the API's location field (or the datacenter's) is shown"


@pytest.mark.parametrize(
    "args", [["--help"], ["list", "--json"], ["status", "nosuch"], ["job", "list", "--json"]]
)
def test_reads_and_help_load_neither_the_workers_app_nor_the_api_client(
    redis_server: RedisServer, args: list[str]
) -> None:
    """Every command had imported the workers' Celery app, the API client (requests, tenacity) and the action
    table first: about a second of a 2-core machine's CPU before `--help` printed, and before each read."""
    probe = (
        "import sys\n"
        "from workflows.cli import main\n"
        f"code = main({args!r})\n"
        "heavy = ('workers.app', 'workers.client', 'requests', 'celery.app.base', 'workflows.submission')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "print('LOADED', heavy, code, file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HCLOUD")}
    env.update(PYTHONPATH=str(ROOT), HCLOUD_FLOW_REDIS_URL=redis_server.url)
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("LOADED [] "), done.stderr[-2000:]


def test_the_package_api_stays_functions_after_any_call(redis_server: RedisServer) -> None:
    """A reviewer: once the package imported its API lazily, a call that loaded the module named like a
    function (workflows.submit) replaced the function: after workflows.cancel(...), workflows.submit(...)
    was "'module' object is not callable", the README's own example."""
    probe = (
        "import workflows\n"
        "from workers.errors import NotFound\n"
        "try:\n"
        "    workflows.cancel('nosuch')\n"
        "except NotFound:\n"
        "    pass\n"
        "import workflows.tasks\n"
        "names = ('submit', 'status', 'cancel', 'wait', 'list_runs', 'prune_images', 'jobs')\n"
        "print('KINDS', sorted({type(getattr(workflows, n)).__name__ for n in names}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HCLOUD")}
    env.update(PYTHONPATH=str(ROOT), HCLOUD_FLOW_REDIS_URL=redis_server.url, HCLOUD_TOKEN="t")
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "KINDS ['function']" in done.stdout, done.stderr[-2000:]

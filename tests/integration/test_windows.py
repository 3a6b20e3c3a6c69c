"""Maintenance windows with real beat processes: fires at its start, once with two beats, honours the cutoff,
and is skipped (and recorded) while its previous job still runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from workflows.fleet import JobStore

from ..conftest import start_cloud
from ..support.cloud import Api, Control
from ..support.processes import ROOT, RedisServer, Worker, run_cli, wait_until, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.long]


@pytest.fixture(scope="module")
def cloud() -> Iterator[Any]:
    c = start_cloud(servers=24, speed=20.0, seed=51, durations={"reset": 100.0})  # a reset takes 5 s
    yield c
    c.stop()


@pytest.fixture(scope="module")
def env(redis_server: RedisServer, cloud: Any) -> dict[str, str]:
    return worker_env(
        redis_server.url, cloud.base_url, HCLOUD_FLOW_RATE_REFILL="20", HCLOUD_FLOW_BEAT_INTERVAL="1"
    )


@pytest.fixture(scope="module")
def worker(env: dict[str, str], logdir: Path) -> Iterator[Worker]:
    w = Worker("windows", env, logdir)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def ids(cloud: Any) -> list[int]:
    control = Control(cloud.control_url)
    servers = Api(cloud.base_url).server_ids()
    for sid in servers:
        control.send("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
    return servers


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, timeout=60)


def test_window_fires_once_with_two_beats_and_honours_the_cutoff(
    env: dict[str, str], worker: Worker, ids: list[int], redis_server: RedisServer, logdir: Path
) -> None:
    servers = ",".join(map(str, ids[:12]))
    added = cli(
        env,
        "schedule",
        "add",
        "every-minute",
        "reset",
        "--cron",
        "* * * * *",
        "--tz",
        "Asia/Kolkata",
        "--duration",
        "20s",
        "--cutoff",
        "14s",
        "--servers",
        servers,
        "--max-concurrency",
        "2",
        "--max-errors",
        "0",
    )
    assert added.returncode == 0, added.stderr
    beats = []
    try:
        for n in range(2):
            log = open(logdir / f"beat-{n}.log", "wb")  # noqa: SIM115 - closed with the process below
            beats.append(
                (
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "celery",
                            "-A",
                            "workers.app",
                            "beat",
                            "-S",
                            "workflows.beat:Scheduler",
                            "--loglevel",
                            "INFO",
                            "--pidfile",
                            "",
                        ],
                        env=env,
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    ),
                    log,
                )
            )

        def history() -> list[dict[str, Any]]:
            done = cli(env, "schedule", "history", "every-minute", "--json")
            return list(json.loads(done.stdout)) if done.returncode == 0 else []

        first = wait_until(history, 75, "the window to fire at the next minute", interval=0.5)
        assert first[0]["outcome"] == "started", first
        job_id = first[0]["job_id"]
        store = JobStore(redis_server.client())
        job = wait_until(
            lambda: (j := store.get(job_id)) and j["state"] != "running" and j, 60, "the job to end"
        )
        started = [sid for sid, e in job["outcomes"].items() if e["outcome"] == "succeeded"]
        cut = [e for e in job["outcomes"].values() if e["outcome"] == "not_started"]
        # Servers the cutoff kept from starting mean the job did not do all it was asked: it says so.
        assert job["state"] == ("completed_with_failures" if cut else "succeeded"), job["state"]
        assert 2 <= len(started) <= 4, (
            "the window's 6 s before the cutoff fit two waves of 5 s resets at most"
        )
        assert cut and all("cutoff" in e["reason"] for e in cut)
        assert all(
            e["started"] <= job["window"]["cutoff_at"] for e in job["outcomes"].values() if "started" in e
        )
        # Both beats ran through that minute; the window fired once.
        minute = first[0]["local"]
        assert [h for h in history() if h["local"] == minute and h["outcome"] == "started"] == first[-1:]
    finally:
        for proc, log in beats:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
        cli(env, "schedule", "remove", "every-minute")


def test_window_is_skipped_while_its_previous_job_runs(
    env: dict[str, str], worker: Worker, celery_client: Celery, ids: list[int], redis_server: RedisServer
) -> None:
    # A window definition with no beat entry: the test fires it by hand, as redbeat would.
    spec = {
        "name": "by-hand",
        "cron": "* * * * *",
        "tz": "UTC",
        "duration": 600,
        "cutoff": 60,
        "workflow": "reset",
        "params": {},
        "selector": None,
        "servers": ids[12:14],
        "max_concurrency": "1",
        "max_errors": "0",
        "canary": 0,
        "paused": False,
    }
    client = redis_server.client()
    client.set("hf:window:by-hand", json.dumps(spec))
    first = celery_client.send_task("hcloud_flow.window_fire", kwargs={"name": "by-hand"}).get(timeout=30)
    assert first["outcome"] == "started"
    for key in client.scan_iter("hf:window:by-hand:fired:*"):
        client.delete(key)  # as if the next minute had come
    second = celery_client.send_task("hcloud_flow.window_fire", kwargs={"name": "by-hand"}).get(timeout=30)
    assert second["outcome"] == "skipped" and first["job_id"] in second["reason"]
    again = celery_client.send_task("hcloud_flow.window_fire", kwargs={"name": "by-hand"}).get(timeout=30)
    assert again == {"window": "by-hand", "fired": False, "why": "this minute already fired"}
    outcomes = [json.loads(h)["outcome"] for h in client.lrange("hf:window:by-hand:history", 0, -1)]
    assert outcomes == ["skipped", "started"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "0 3 * *", "--duration", "2h"], "cron needs 5 fields"),
        (["--cron", "0 3 * * *", "--tz", "Moon/Base", "--duration", "2h"], "unknown time zone"),
        (["--cron", "0 3 * * *", "--duration", "30m", "--cutoff", "1h"], "shorter than the duration"),
        (["--cron", "0 3 * * *", "--duration", "2h", "--selector", ""], "selector is empty"),
        (["--cron", "0 3 * * *"], "duration is missing"),
    ],
)
def test_bad_schedules_are_refused(
    env: dict[str, str], redis_server: RedisServer, args: list[str], message: str
) -> None:
    target = [] if "--selector" in args else ["--selector", "env=staging"]
    done = cli(env, "schedule", "add", "refused", "reboot", *args, *target)
    assert done.returncode == 2 and message in done.stderr
    assert not redis_server.client().exists("hf:window:refused")


def test_history_of_an_unknown_window_is_refused(env: dict[str, str]) -> None:
    done = cli(env, "schedule", "history", "nosuch")
    assert done.returncode == 2 and "no window named 'nosuch'" in done.stderr


def test_a_window_is_edited_in_place_and_listed_with_its_next_firing(
    env: dict[str, str], redis_server: RedisServer, worker: Worker
) -> None:
    added = cli(
        env, "schedule", "add", "edited", "reboot", "--cron", "0 3 * * SUN", "--duration", "2h",
        "--selector", "env=staging", "--max-concurrency", "3",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    try:
        redis_server.client().delete("hf:beat:last_tick")  # no beat runs in this test
        listed = cli(env, "schedule", "list")
        assert listed.returncode == 0, listed.stderr
        assert "no beat has run lately, so no window will fire" in listed.stderr
        row = next(line for line in listed.stdout.splitlines() if line.startswith("edited"))
        assert "2026-" in row or "2027-" in row, f"the next firing is shown: {row}"

        edited = cli(env, "schedule", "edit", "edited", "--cron", "30 4 * * *", "--tz", "Europe/Berlin")
        assert edited.returncode == 0, edited.stderr
        window = json.loads(cli(env, "schedule", "list", "--json").stdout)
        mine = next(w for w in window if w["name"] == "edited")
        assert (mine["cron"], mine["tz"]) == ("30 4 * * *", "Europe/Berlin")
        assert (mine["selector"], mine["max_concurrency"], mine["duration"]) == ("env=staging", "3", 7200)
        assert mine["next_firing"].endswith(("+01:00", "+02:00")) and "T04:30" in mine["next_firing"]

        refused = cli(env, "schedule", "edit", "edited", "--duration", "9d")
        assert refused.returncode == 2 and "at most 7d" in refused.stderr
        kept = json.loads(cli(env, "schedule", "show", "edited", "--json").stdout)
        assert kept["duration"] == 7200, "a refused edit changes nothing"
        text = cli(env, "schedule", "show", "edited").stdout
        assert not text.startswith("{") and "cron:" in text and "30 4 * * *" in text, text
        missing = cli(env, "schedule", "edit", "nosuch", "--cron", "0 3 * * *")
        assert missing.returncode == 2 and "no window named 'nosuch'" in missing.stderr

        # An outside test: the README names a window's own --notify, and add and edit had none.
        hook = "https://hooks.example/windows"
        assert cli(env, "schedule", "edit", "edited", "--notify", hook).returncode == 0
        assert json.loads(cli(env, "schedule", "show", "edited", "--json").stdout)["notify"] == [hook]
        assert cli(env, "schedule", "edit", "edited", "--notify", "").returncode == 0
        assert json.loads(cli(env, "schedule", "show", "edited", "--json").stdout)["notify"] == []
        leaky = cli(env, "schedule", "edit", "edited", "--notify", "https://hooks.example/w?token=abc")
        assert leaky.returncode == 2 and "credential" in leaky.stderr
    finally:
        cli(env, "schedule", "remove", "edited")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (["--servers", ""], "give each server as an id or a name"),
        (["--servers", ",,"], "give each server as an id or a name"),
        (["--selector", "ünï=✓"], "label selector"),
    ],
    ids=["empty-server", "commas", "unicode-selector"],
)
def test_empty_servers_and_selectors_the_api_would_refuse_are_refused_when_added(
    env: dict[str, str], redis_server: RedisServer, target: list[str], message: str
) -> None:
    """Found by an outside tester: these were stored and failed only when the window fired."""
    done = cli(
        env, "schedule", "add", "refused2", "reboot", "--cron", "0 3 * * *", "--duration", "1h", *target
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not redis_server.client().exists("hf:window:refused2")


def test_editing_the_workflow_drops_the_old_ones_parameters_and_a_paused_window_never_fires(
    env: dict[str, str], worker: Worker, ids: list[int]
) -> None:
    added = cli(
        env, "schedule", "add", "switch", "snapshot", "--cron", "0 3 * * *", "--duration", "1h",
        "--servers", str(ids[0]), "--description", "nightly",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    try:
        switched = cli(env, "schedule", "edit", "switch", "reboot")
        assert switched.returncode == 0, switched.stderr
        window = json.loads(cli(env, "schedule", "show", "switch", "--json").stdout)
        assert window["workflow"] == "reboot" and window["params"] == {}
        assert cli(env, "schedule", "pause", "switch").returncode == 0
        listed = json.loads(cli(env, "schedule", "list", "--json").stdout)
        assert next(w for w in listed if w["name"] == "switch")["next_firing"] is None
        missing = cli(env, "schedule", "add", "nocron", "reboot", "--duration", "1h", "--servers", "1")
        assert missing.returncode == 2 and "cron is missing" in missing.stderr
    finally:
        cli(env, "schedule", "remove", "switch")


def test_an_edit_keeps_the_workflow_parameters_it_does_not_name(
    env: dict[str, str], worker: Worker, ids: list[int]
) -> None:
    """An outside test: `schedule edit --description` dropped the window's retention, labels and grace (and
    a rebuild window's --no-snapshot); snapshots would have piled up."""
    added = cli(
        env, "schedule", "add", "keeps", "snapshot", "--cron", "0 3 * * *", "--duration", "1h",
        "--servers", str(ids[0]), "--keep", "3", "--label", "purpose=backup", "--grace", "120",
        "--description", "nightly", "--no-check",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    try:
        assert cli(env, "schedule", "edit", "keeps", "--description", "renamed").returncode == 0
        params = json.loads(cli(env, "schedule", "show", "keeps", "--json").stdout)["params"]
        assert (params["keep"], params["labels"], params["grace"], params["description"]) == (
            3, {"purpose": "backup"}, 120, "renamed"
        )  # fmt: skip
        revision = json.loads(cli(env, "schedule", "show", "keeps", "--json").stdout)["revision"]
        same = cli(env, "schedule", "edit", "keeps", "--description", "renamed", "--json")
        assert same.returncode == 0 and json.loads(same.stdout)["revision"] == revision, (
            "no change, no revision"
        )
        assert json.loads(same.stdout)["next_firing"], "--json of an edit says the next firing too"
        both = cli(env, "schedule", "edit", "keeps", "--unset", "keep", "--keep", "4")
        assert both.returncode == 2 and "--unset keep and a value for keep" in both.stderr
        unset = cli(env, "schedule", "edit", "keeps", "--unset", "keep")
        assert unset.returncode == 0, unset.stderr
        params = json.loads(cli(env, "schedule", "show", "keeps", "--json").stdout)["params"]
        assert params.get("keep") is None and params["labels"] == {"purpose": "backup"}
    finally:
        cli(env, "schedule", "remove", "keeps")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (["--servers", "999999"], "no server"),
        (["--servers", "no-such-server"], "no server named"),
        (["--selector", "env=nowhere"], "matches no server"),
        (["--servers", "{first}", "--image", "windows-95"], "no system image named"),
    ],
)
def test_add_asks_the_api_that_servers_and_images_exist(
    env: dict[str, str],
    worker: Worker,
    ids: list[int],
    redis_server: RedisServer,
    target: list[str],
    message: str,
) -> None:
    """A window naming servers or an image that do not exist used to be stored, and failed when it fired."""
    target = [t.replace("{first}", str(ids[0])) for t in target]
    workflow = "rebuild" if "--image" in target else "reboot"
    args = ["schedule", "add", "ghost", workflow, "--cron", "0 3 * * *", "--duration", "1h", *target]
    done = cli(env, *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not redis_server.client().exists("hf:window:ghost"), "nothing was stored"
    # --no-check stores it without asking (e.g. while no worker runs), as the operator chose.
    unchecked = cli(env, *args, "--no-check")
    assert unchecked.returncode == 0, unchecked.stderr
    assert cli(env, "schedule", "remove", "ghost").returncode == 0

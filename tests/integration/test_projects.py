"""Several projects served by one worker: each run acts with its own project's token, and the rate budget of
one project never throttles another.

Two fakeclouds stand for two projects of one API (each its own token and rate limit; ids drawn from one id
space, as the real API's are). The worker serves both; its staging token comes from a file.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ..conftest import start_cloud
from ..support.cloud import TOKEN, Control
from ..support.processes import RedisServer, Worker, run_cli, worker_env

STAGING_TOKEN = "staging-" + "s3cr3t" * 6


@pytest.fixture(scope="module")
def prod() -> Iterator[Any]:
    # A project whose whole hourly limit is 40 requests, at speed 1: spent, it refills one request in 90 s.
    c = start_cloud(servers=4, speed=1.0, seed=3, rate_limit=40)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def staging() -> Iterator[Any]:
    c = start_cloud(servers=4, speed=20.0, seed=4, token=STAGING_TOKEN, id_space=1)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def worker(
    redis_server: RedisServer, prod: Any, staging: Any, tmp_path_factory: pytest.TempPathFactory, logdir: Path
) -> Iterator[Worker]:
    secrets = tmp_path_factory.mktemp("secrets")
    token_file = secrets / "staging"
    token_file.write_text(STAGING_TOKEN + "\n")
    token_file.chmod(0o600)
    env = worker_env(
        redis_server.url,
        prod.base_url,
        HCLOUD_FLOW_PROJECTS="prod,staging,revoked",
        HCLOUD_TOKEN_PROD=TOKEN,
        HCLOUD_TOKEN_STAGING_FILE=str(token_file),
        HCLOUD_ENDPOINT_STAGING=staging.base_url,
        # A project whose token the API no longer accepts (revoked in the console, say).
        HCLOUD_TOKEN_REVOKED="revoked-" + "x" * 40,
        HCLOUD_ENDPOINT_REVOKED=staging.base_url,
    )
    del env["HCLOUD_TOKEN"]  # named projects take their own tokens only
    w = Worker("projects", env, logdir)
    w.env = env
    yield w
    w.stop()


def cli(redis_server: RedisServer, *args: str, **env: str) -> Any:
    return run_cli(*args, redis_url=redis_server.url, env=env)


def posts(cloud: Any) -> list[dict[str, Any]]:
    return Control(cloud.control_url).posts()


def test_a_run_acts_in_the_project_it_names_with_that_project_s_token(
    worker: Worker, redis_server: RedisServer, prod: Any, staging: Any
) -> None:
    before = len(posts(prod))
    done = cli(redis_server, "run", "reboot", "--server", "srv-2", "--project", "staging", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)  # the run record
    assert run["project"] == "staging" and run["state"] == "succeeded"
    staging_ids = set(staging.backend.servers)
    assert run["server_id"] in staging_ids
    assert Control(staging.control_url).posts(run["server_id"], "reboot")
    assert len(posts(prod)) == before  # nothing was sent to the other project
    shown = cli(redis_server, "status", run["id"])
    assert "(staging)" in shown.stdout


def test_the_project_can_come_from_the_environment(
    worker: Worker, redis_server: RedisServer, staging: Any
) -> None:
    done = cli(redis_server, "run", "power-on", "--server", "srv-3", "--json", HCLOUD_FLOW_PROJECT="staging")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    shown = cli(redis_server, "status", run_id, "--wait", "--json")
    assert json.loads(shown.stdout)["project"] == "staging"


def test_a_project_the_workers_do_not_serve_is_refused_and_nothing_runs(
    worker: Worker, redis_server: RedisServer
) -> None:
    before = redis_server.client().keys("hf:run:*")
    refused = cli(redis_server, "run", "reboot", "--server", "srv-1", "--project", "qa")
    assert refused.returncode == 2
    assert (
        "no project 'qa' is configured on the workers (they serve: prod, revoked, staging)" in refused.stderr
    )
    bad = cli(redis_server, "run", "reboot", "--server", "srv-1", "--project", "QA;rm")
    assert bad.returncode == 2 and "a project name is" in bad.stderr
    assert redis_server.client().keys("hf:run:*") == before


def test_a_fleet_job_runs_in_one_project_only(
    worker: Worker, redis_server: RedisServer, prod: Any, staging: Any
) -> None:
    before = len(posts(prod))
    done = cli(
        redis_server, "fleet", "reboot", "--servers", "srv-1,srv-4", "--max-concurrency", "2",
        "--max-errors", "0", "--project", "staging", "--wait", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["project"] == "staging" and job["state"] == "succeeded", job
    runs = [
        json.loads(cli(redis_server, "status", e["run_id"], "--json").stdout)
        for e in job["outcomes"].values()
    ]
    assert len(runs) == 2 and {r["project"] for r in runs} == {"staging"}
    assert len(posts(prod)) == before


def test_one_project_s_spent_budget_does_not_hold_another_back(
    worker: Worker, redis_server: RedisServer, prod: Any, staging: Any
) -> None:
    # Spend prod's whole hourly limit as another tool on that project would.
    while requests.get(f"{prod.base_url}/servers", headers=_auth(TOKEN), timeout=10).status_code != 429:
        pass
    # A prod submission needs prod's API (the server's state): it waits for budget through its retries and
    # is refused as unreachable, or is taken; either way the worker's prod bucket learns it is empty.
    starved = cli(redis_server, "run", "reboot", "--server", "srv-1", "--project", "prod", "--json")
    assert starved.returncode in (0, 3), starved.stderr
    done = cli(redis_server, "run", "reboot", "--server", "srv-1", "--project", "staging", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "succeeded"
    prod_srv1 = _id_of(prod, "srv-1")
    assert not Control(prod.control_url).posts(prod_srv1, "reboot")
    # One bucket per project: prod's is spent, staging's is not.
    r = redis_server.client()
    buckets = [r.hgetall(k) for k in r.scan_iter("hf:rate:*") if r.type(k) == b"hash"]
    tokens = sorted(float(b[b"tokens"]) for b in buckets if b"tokens" in b)
    assert len(tokens) == 2 and tokens[0] < 5 and tokens[1] > 100, buckets


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _id_of(cloud: Any, name: str) -> int:
    return next(s.id for s in cloud.backend.servers.values() if s.name == name)


def test_workers_refuse_to_start_without_a_token_for_a_named_project(
    redis_server: RedisServer, prod: Any, logdir: Path
) -> None:
    env = worker_env(
        redis_server.url, prod.base_url, HCLOUD_FLOW_PROJECTS="prod,staging", HCLOUD_TOKEN_PROD=TOKEN
    )
    del env["HCLOUD_TOKEN"]
    with pytest.raises(AssertionError, match="died at start") as refused:
        Worker("projects-no-token", env, logdir)
    assert "no API token for project 'staging': set HCLOUD_TOKEN_STAGING" in str(refused.value)


def test_projects_lists_what_the_workers_serve_with_each_budget_and_no_token(
    worker: Worker, redis_server: RedisServer, staging: Any
) -> None:
    shown = cli(redis_server, "projects", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {r["name"]: r for r in json.loads(shown.stdout)}
    assert list(rows) == ["prod", "revoked", "staging"] and rows["prod"]["default"]
    assert not rows["staging"]["default"]
    assert rows["staging"]["endpoint"] == staging.base_url
    assert rows["staging"]["budget"]["limit"] == 3600
    assert STAGING_TOKEN not in shown.stdout and TOKEN not in shown.stdout
    table = cli(redis_server, "projects")
    assert "staging" in table.stdout and "yes" in table.stdout


def test_a_revoked_token_is_named_by_its_project_and_fails_the_worker_s_healthcheck(
    worker: Worker, redis_server: RedisServer
) -> None:
    env = {k: v for k, v in worker.env.items() if k.startswith(("HCLOUD", "PYTHONPATH"))}
    node = ["--node", f"projects@{socket.gethostname()}"]
    healthy = run_cli("health", "worker", *node, "--json", redis_url=redis_server.url, env=env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    refused = cli(redis_server, "run", "reboot", "--server", "srv-1", "--project", "revoked")
    assert refused.returncode == 3, refused.stderr
    assert "the API refused the token of project 'revoked'" in refused.stderr
    sick = run_cli("health", "worker", *node, redis_url=redis_server.url, env=env)
    assert sick.returncode == 1 and "token of project revoked" in sick.stdout + sick.stderr
    assert "revoked-" + "x" * 40 not in sick.stdout + sick.stderr


def test_a_window_is_tied_to_a_project_when_added_and_an_edit_keeps_it(
    worker: Worker, redis_server: RedisServer
) -> None:
    common = (
        "reboot",
        "--cron",
        "0 3 * * *",
        "--duration",
        "1h",
        "--servers",
        "srv-1",
        "--no-check",
        "--json",
    )
    plain = cli(redis_server, "schedule", "add", "w-plain", *common)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout)["project"] == "prod"  # the workers' default, named now
    shell = cli(redis_server, "schedule", "add", "w-shell", *common, HCLOUD_FLOW_PROJECT="staging")
    assert json.loads(shell.stdout)["project"] == "staging"
    edited = cli(redis_server, "schedule", "edit", "w-shell", "--cron", "0 4 * * *", "--no-check", "--json",
                 HCLOUD_FLOW_PROJECT="prod")  # fmt: skip
    assert edited.returncode == 0, edited.stderr
    assert json.loads(edited.stdout)["project"] == "staging"  # an edit never takes the shell's project
    moved = cli(redis_server, "schedule", "edit", "w-shell", "--project", "prod", "--no-check", "--json")
    assert json.loads(moved.stdout)["project"] == "prod"
    # An outside test: --no-check let a window name a project no worker serves; it failed at every firing.
    for args in (("add", "w-nope", *common, "--project", "nope"), ("edit", "w-shell", "--project", "nope")):
        refused = cli(redis_server, "schedule", *args, "--no-check")
        assert refused.returncode == 2 and "no project 'nope' is served" in refused.stderr, refused.stderr
    assert json.loads(cli(redis_server, "schedule", "show", "w-shell", "--json").stdout)["project"] == "prod"


def test_list_and_job_list_tell_projects_apart(worker: Worker, redis_server: RedisServer) -> None:
    shown = cli(redis_server, "list", "--server", "srv-1", "--project", "staging", "--json")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert found and {r["project"] for r in found} == {"staging"}
    table = cli(redis_server, "list", "--server", "srv-1")
    assert "srv-1 (staging)" in table.stdout
    jobs = json.loads(cli(redis_server, "job", "list", "--project", "prod", "--json").stdout)
    assert jobs == []  # the fleet job of this module ran in staging
    assert "(staging)" in cli(redis_server, "job", "list").stdout
    assert cli(redis_server, "list", "--project", "Bad Name").returncode == 2

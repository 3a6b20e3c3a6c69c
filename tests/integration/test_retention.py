"""Snapshot retention end to end: `run snapshot --keep`, `fleet snapshot --keep` and `images prune`, with a
real worker over HTTP against fakecloud. Older snapshots "hcloud-flow made" are set up through the public API
with the label our create_image step sets, beside ones it must never touch: a manual snapshot, a protected
one, and one of another server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from workers.labels import STEP_LABEL

from ..support.cloud import Api
from ..support.processes import RedisServer, Worker, run_cli, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(cloud: Any) -> Api:
    return Api(cloud.base_url)


def snapshot_by_hand(api: Api, server_id: int, labels: dict[str, str], description: str) -> int:
    answer = api.post(
        f"/servers/{server_id}/actions/create_image",
        {"type": "snapshot", "description": description, "labels": labels},
    )
    assert answer.status_code == 201, answer.text
    image_id = int(answer.json()["image"]["id"])
    wait_until(lambda: api.get(f"/images/{image_id}")["image"]["status"] == "available", 60, "the image")
    return image_id


def image_ids(api: Api) -> set[int]:
    return {int(i["id"]) for i in api.get("/images", type="snapshot", per_page=50)["images"]}


def cli(redis_server: RedisServer, *args: str) -> Any:
    return run_cli(*args, redis_url=redis_server.url)


def test_a_snapshot_run_keeps_the_newest_n_it_made_and_never_touches_the_rest(
    worker: Worker, redis_server: RedisServer, api: Api
) -> None:
    server, other = (
        api.get("/servers", name="srv-11")["servers"][0],
        api.get("/servers", name="srv-12")["servers"][0],
    )
    ours = {"old-1": 0, "old-2": 0, "old-3": 0}
    for key in ours:  # oldest first
        ours[key] = snapshot_by_hand(api, server["id"], {STEP_LABEL: key}, key)
    protected = ours["old-1"]
    assert api.post(f"/images/{protected}/actions/change_protection", {"delete": True}).status_code == 201
    manual = snapshot_by_hand(api, server["id"], {"purpose": "manual"}, "made by hand")
    elsewhere = snapshot_by_hand(api, other["id"], {STEP_LABEL: "other"}, "another server's")

    done = cli(redis_server, "run", "snapshot", "--server", "srv-11", "--keep", "2", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["state"] == "succeeded" and [s["name"] for s in run["steps"]][-1] == "prune"
    pruned = run["steps"][-1]["outputs"]["pruned"]
    left = image_ids(api)
    # Kept: the new one and old-3 (the newest two), old-1 (protected); deleted: old-2 only.
    assert ours["old-2"] not in left
    assert {ours["old-3"], protected, manual, elsewhere} <= left
    assert [i["id"] for i in pruned["deleted"]] == [ours["old-2"]] and pruned["failed"] == []
    # The prune step told the step before it that it started: no hand-off watch is left to send it again
    # (it once came back three times, 30 s apart, and pruned other runs' snapshots).
    parked = redis_server.client().zrange("hf:waits", 0, -1)
    assert not {s["task_id"].encode() for s in run["steps"]} & set(parked)
    assert "prune: deleted 1 older snapshot" in cli(redis_server, "status", run["id"]).stdout

    shown = cli(redis_server, "images", "prune", "--servers", "srv-11", "--keep", "1", "--dry-run", "--json")
    assert shown.returncode == 0, shown.stderr
    plan = json.loads(shown.stdout)["servers"][0]
    assert [i["id"] for i in plan["would_delete"]] == [ours["old-3"]]
    assert ours["old-3"] in image_ids(api)  # a dry run deletes nothing

    applied = cli(redis_server, "images", "prune", "--servers", "srv-11", "--keep", "1")
    assert applied.returncode == 0, applied.stderr
    assert "deleted 1 snapshot(s) of 1 server(s)" in applied.stdout
    left = image_ids(api)
    assert ours["old-3"] not in left and {protected, manual, elsewhere} <= left


def test_prune_without_a_policy_or_with_a_bad_one_is_refused_and_deletes_nothing(
    worker: Worker, redis_server: RedisServer, api: Api
) -> None:
    before = image_ids(api)
    for args in (
        ("images", "prune", "--servers", "srv-11"),
        ("images", "prune", "--servers", "srv-11", "--keep", "0"),
        ("images", "prune", "--servers", "srv-11", "--keep-within", "soon"),
        ("images", "prune", "--keep", "1"),
        ("run", "snapshot", "--server", "srv-11", "--keep", "-1"),
        (
            "fleet",
            "snapshot",
            "--servers",
            "srv-11",
            "--max-concurrency",
            "1",
            "--max-errors",
            "0",
            "--keep",
            "0",
        ),
    ):
        refused = cli(redis_server, *args)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
    assert image_ids(api) == before


def test_a_fleet_snapshot_applies_the_policy_to_each_server(
    worker: Worker, redis_server: RedisServer, api: Api
) -> None:
    server = api.get("/servers", name="srv-13")["servers"][0]
    older = snapshot_by_hand(api, server["id"], {STEP_LABEL: "fleet-old"}, "older")
    done = cli(
        redis_server, "fleet", "snapshot", "--servers", "srv-13", "--max-concurrency", "1",
        "--max-errors", "0", "--keep", "1", "--wait", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "succeeded"
    assert older not in image_ids(api)


def test_a_fleet_dry_run_lists_what_retention_would_delete_and_deletes_nothing(
    worker: Worker, redis_server: RedisServer, api: Api
) -> None:
    server = api.get("/servers", name="srv-14")["servers"][0]
    first = snapshot_by_hand(api, server["id"], {STEP_LABEL: "dry-1"}, "older")
    second = snapshot_by_hand(api, server["id"], {STEP_LABEL: "dry-2"}, "newer")
    shown = cli(
        redis_server, "fleet", "snapshot", "--servers", "srv-14", "--max-concurrency", "1",
        "--max-errors", "0", "--keep", "2", "--dry-run", "--json",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)["servers"][0]
    assert row["would_prune"] == [first]  # the new one and `second` are the newest two
    assert {first, second} <= image_ids(api)
    table = cli(
        redis_server, "fleet", "snapshot", "--servers", "srv-14", "--max-concurrency", "1",
        "--max-errors", "0", "--keep", "2", "--dry-run",
    )  # fmt: skip
    assert f"then deletes older snapshots: {first}" in table.stdout


def test_images_prune_skips_a_server_a_run_holds_and_deletes_nothing_of_it(
    worker: Worker, redis_server: RedisServer, api: Api
) -> None:
    from workers.run_store import RunStore

    server = api.get("/servers", name="srv-15")["servers"][0]
    older = snapshot_by_hand(api, server["id"], {STEP_LABEL: "held-1"}, "older")
    snapshot_by_hand(api, server["id"], {STEP_LABEL: "held-2"}, "newer")
    store = RunStore(redis_server.client())
    assert store.acquire(server["id"], "run-restoring", 60) is None  # a run in flight (a restore, say)
    try:
        # An outside test: the dry run listed deletions that the prune then skipped.
        dry = cli(
            redis_server, "images", "prune", "--servers", "srv-15", "--keep", "1", "--dry-run", "--json"
        )
        dry_row = json.loads(dry.stdout)["servers"][0]
        assert "run run-restoring holds the server" in dry_row["skipped"], dry_row
        assert store.holder(server["id"]) == "run-restoring", "a dry run takes no hold"
        text = cli(redis_server, "images", "prune", "--servers", "srv-15", "--keep", "1", "--dry-run")
        assert text.returncode == 0 and "skipped: run run-restoring holds the server" in text.stdout, (
            text.stderr
        )
        held = cli(redis_server, "images", "prune", "--servers", "srv-15", "--keep", "1", "--json")
        assert held.returncode == 0, held.stderr
        row = json.loads(held.stdout)["servers"][0]
        assert "run run-restoring holds the server" in row["skipped"] and row["deleted"] == []
        assert older in image_ids(api)
    finally:
        store.release(server["id"], "run-restoring")
    freed = cli(redis_server, "images", "prune", "--servers", "srv-15", "--keep", "1")
    assert freed.returncode == 0 and older not in image_ids(api)
    assert store.holder(server["id"]) is None  # the prune let go of the server

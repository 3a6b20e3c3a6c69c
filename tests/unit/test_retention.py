"""Snapshot retention's decision: only what hcloud-flow made of this server, never what must stay."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from workers.errors import APIError, BadInput, RateBudgetExhausted
from workers.labels import STEP_LABEL
from workflows.definitions import WORKFLOWS
from workflows.retention import Policy, check_policy, decide, prune
from workflows.validate import check_params

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
DAY = 86400


def image(
    image_id: int,
    days_old: float,
    *,
    server: int = 7,
    ours: bool = True,
    kind: str = "snapshot",
    protected: bool = False,
    status: str = "available",
) -> dict[str, Any]:
    created = datetime.fromtimestamp(NOW - days_old * DAY, UTC).isoformat()
    return {
        "id": image_id,
        "type": kind,
        "status": status,
        "created": created,
        "description": f"img {image_id}",
        "created_from": {"id": server, "name": f"srv-{server}"},
        "labels": {STEP_LABEL: f"run-{image_id}"} if ours else {"purpose": "manual"},
        "protection": {"delete": protected},
    }


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [int(r["id"]) for r in rows]


def test_keep_n_keeps_the_newest_n_and_deletes_the_rest_oldest_included() -> None:
    images = [image(i, days_old=10 - i) for i in range(1, 6)]  # 5 is the newest
    decision = decide(images, 7, Policy(keep=2), NOW, just_made=5)
    assert ids(decision.delete) == [3, 2, 1]
    assert ids(decision.keep) == [5, 4]


def test_keep_within_keeps_what_is_recent_enough() -> None:
    images = [image(1, 40), image(2, 20), image(3, 1)]
    decision = decide(images, 7, Policy(keep_within=30 * DAY), NOW)
    assert ids(decision.delete) == [1] and ids(decision.keep) == [3, 2]


def test_with_both_rules_an_image_stays_when_either_keeps_it() -> None:
    images = [image(1, 40), image(2, 20), image(3, 10), image(4, 1)]
    decision = decide(images, 7, Policy(keep=1, keep_within=15 * DAY), NOW)
    assert ids(decision.delete) == [2, 1] and ids(decision.keep) == [4, 3]


def test_never_what_hcloud_flow_did_not_make_nor_another_server_s_nor_a_backup() -> None:
    images = [
        image(1, 50, ours=False),
        image(2, 50, server=8),
        image(3, 50, kind="backup"),
        image(4, 50),
        image(5, 0),
    ]
    decision = decide(images, 7, Policy(keep=1), NOW, just_made=5)
    assert ids(decision.delete) == [4]
    assert ids(decision.keep) == [5]  # the others are not even candidates


def test_never_the_one_just_made_a_protected_one_or_one_still_being_made() -> None:
    images = [image(1, 9, protected=True), image(2, 8, status="creating"), image(3, 7), image(9, 50)]
    # keep=1 would keep only the newest; the just-made image is kept even though it is not the newest.
    decision = decide(images, 7, Policy(keep=1), NOW, just_made=9)
    assert ids(decision.delete) == []
    why = {int(r["id"]): r["why"] for r in decision.keep}
    assert why[9] == "just made" and why[1] == "delete protection is on" and "creating" in why[2]
    assert why[3] == "one of the newest 1"


def test_an_unreadable_date_never_makes_an_image_old_enough_to_go() -> None:
    odd = {**image(1, 100), "created": "yesterday-ish"}
    assert ids(decide([odd, image(2, 0)], 7, Policy(keep_within=DAY), NOW).delete) == []


@pytest.mark.parametrize(
    ("keep", "within", "message"),
    [
        (0, None, "keep must be a whole number from 1 to 1000"),
        (1001, None, "keep must be"),
        (True, None, "keep must be"),
        ("2", None, "keep must be"),
        (None, "forever", "keep_within must look like 7d"),
        (None, "\u0663\u0660d", "keep_within must look like"),  # Arabic-Indic digits: not 30 days
        (None, "0", "longer than 0"),
        (None, "99999999999d", "at most 3650d"),  # a typo, not a policy (an outside test)
        (None, 10**32, "at most 3650d"),
        (None, 1.5, "keep_within must be a duration"),
        (None, None, "give --keep N and/or --keep-within"),
    ],
)
def test_a_bad_policy_is_refused(keep: Any, within: Any, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        check_policy(keep, within, required=True)


def test_a_snapshot_run_s_policy_is_checked_with_its_parameters_and_kept_in_seconds() -> None:
    clean = check_params(WORKFLOWS["snapshot"], {"keep": 3, "keep_within": "30d"})
    assert clean["keep"] == 3 and clean["keep_within"] == 30 * DAY
    for bad in ({"keep": 0}, {"keep": "3"}, {"keep_within": "soon"}, {"keep_within": ""}):
        with pytest.raises(BadInput):
            check_params(WORKFLOWS["snapshot"], bad)
    with pytest.raises(BadInput, match="a backup is not one of them"):
        check_params(WORKFLOWS["snapshot"], {"keep": 2, "image_type": "backup"})
    with pytest.raises(BadInput, match="does not take keep"):
        check_params(WORKFLOWS["reboot"], {"keep": 3})


class _Api:
    """One unit's stand-in for the client: answers a listing, records deletes, fails where told."""

    def __init__(
        self, images: list[dict[str, Any]], *, refuse: dict[int, str] | None = None, list_error: bool = False
    ):
        self.images, self.refuse, self.list_error, self.deleted = images, refuse or {}, list_error, []

    def api_now(self) -> float:
        return NOW  # the API's clock; ours may be anywhere

    def list_images(self, **_: Any) -> list[dict[str, Any]]:
        if self.list_error:
            raise RateBudgetExhausted(30.0)
        return list(self.images)

    def delete_image(self, image_id: int) -> None:
        if image_id in self.refuse:
            raise APIError(self.refuse[image_id], f"refused {image_id}", 423)
        self.deleted.append(image_id)


def test_prune_reports_what_it_deleted_what_was_gone_and_what_was_refused() -> None:
    api = _Api([image(1, 30), image(2, 20), image(3, 10), image(4, 0)], refuse={2: "locked", 3: "not_found"})
    outcome = prune(api, 7, Policy(keep=1), NOW, just_made=4)  # type: ignore[arg-type]
    assert ids(outcome["deleted"]) == [3, 1]  # 3 was already gone: deleted all the same
    assert [f["id"] for f in outcome["failed"]] == [2] and "locked" in outcome["failed"][0]["error"]
    assert api.deleted == [1]


def test_a_dry_run_deletes_nothing_and_a_failed_listing_deletes_nothing_and_says_so() -> None:
    api = _Api([image(1, 30), image(4, 0)])
    plan = prune(api, 7, Policy(keep=1), NOW, just_made=4, dry_run=True)  # type: ignore[arg-type]
    assert ids(plan["would_delete"]) == [1] and api.deleted == []
    starved = _Api([image(1, 30)], list_error=True)
    outcome = prune(starved, 7, Policy(keep=1), NOW)  # type: ignore[arg-type]
    assert outcome["deleted"] == [] and "could not list snapshots" in outcome["error"]


def test_within_is_judged_on_the_api_s_clock_not_ours() -> None:
    api = _Api([image(1, 0.5), image(2, 3)])  # half a day and three days old, by the API's clock
    # Our clock two days ahead of the API's must not make yesterday's snapshot look old enough to go.
    outcome = prune(api, 7, Policy(keep_within=DAY), NOW + 2 * DAY)  # type: ignore[arg-type]
    assert ids(outcome["deleted"]) == [2] and ids(outcome["kept"]) == [1]


def test_a_snapshot_still_being_made_does_not_count_among_the_newest() -> None:
    images = [image(1, 3), image(2, 2), image(3, 0, status="creating")]
    decision = decide(images, 7, Policy(keep=1), NOW)
    assert ids(decision.delete) == [1] and ids(decision.keep) == [3, 2]  # 2 is the newest that exists


def test_a_rebuild_s_safety_snapshot_is_an_undo_point_never_counted_or_deleted() -> None:
    safety = {**image(2, 40), "description": "hcloud-flow safety snapshot before rebuild of srv-7"}
    decision = decide([safety, image(3, 20), image(4, 0)], 7, Policy(keep=1), NOW, just_made=4)
    assert ids(decision.delete) == [3]


def test_a_snapshot_may_not_take_the_safety_snapshots_description() -> None:
    """An outside test: a snapshot described as a rebuild's safety snapshot was never counted or pruned."""
    from workers.errors import BadInput
    from workflows.definitions import SAFETY_DESCRIPTION

    with pytest.raises(BadInput, match="marks a rebuild's undo point"):
        check_params(WORKFLOWS["snapshot"], {"description": f"{SAFETY_DESCRIPTION}srv-5"})
    kept = check_params(WORKFLOWS["snapshot"], {"description": "safety first"})
    assert kept["description"] == "safety first"


def test_a_queued_plan_fits_only_if_the_server_s_status_would_plan_the_same_steps() -> None:
    """The steps a workflow plans depend on whether the server runs: a queued run is checked as it starts."""
    from workflows.build import plan_fits

    off_snapshot = {"steps": [{"name": "create_image"}], "params": {}, "server_status_before": "off"}
    assert plan_fits(WORKFLOWS["snapshot"], off_snapshot, "off") is None
    said = plan_fits(WORKFLOWS["snapshot"], off_snapshot, "running")
    assert said is not None and "shutdown → create_image → power_on, not create_image" in said
    power_off = {"steps": [{"name": s.name} for s in WORKFLOWS["power-off"].steps], "params": {}}
    assert plan_fits(WORKFLOWS["power-off"], power_off, "running") is None
    assert plan_fits(WORKFLOWS["power-off"], power_off, "off") is None
    # Booting now, by another hand: no plan can be told for it, and the run starts nothing.
    booting = plan_fits(WORKFLOWS["snapshot"], off_snapshot, "starting")
    assert booting is not None and "is starting" in booting
    assert "planned for the server off, as it was when this run was queued" in booting
    assert plan_fits(WORKFLOWS["power-off"], power_off, "starting") is None, "its plan reads no status"
    # Planned for where the run ahead leaves the server (running), which was off as this one was queued.
    ahead = {
        "steps": [{"name": s} for s in ("shutdown", "create_image", "power_on")],
        "params": {},
        "server_status_before": "running",
        "status_when_queued": "off",
    }
    assert plan_fits(WORKFLOWS["snapshot"], ahead, "running") is None
    left_off = plan_fits(WORKFLOWS["snapshot"], ahead, "off")
    assert left_off is not None and left_off.startswith("the server is off now and this run was planned for ")
    assert "the server running, as the run ahead of it leaves it (it was off when queued)" in left_off


def test_a_snapshot_a_queued_run_will_use_is_kept() -> None:
    """An outside test: a snapshot run's --keep deleted the snapshot a restore queued behind it needed."""
    images = [image(i, days_old=10 - i) for i in range(1, 5)]
    decision = decide(images, 7, Policy(keep=1), NOW, just_made=4, needed=frozenset({2}))
    assert ids(decision.delete) == [3, 1]
    assert {r["id"]: r["why"] for r in decision.keep}[2] == "a run queued on the server will use it"


def test_a_run_needing_a_running_server_queued_for_one_that_ended_off_does_nothing() -> None:
    """A reviewer: reset-password's one step reads no status, so its plan always "fitted", and a run queued
    for the running server a snapshot leaves was posted to an off server when the snapshot failed."""
    from workflows.build import plan_fits

    queued = {
        "steps": [{"name": "reset_password"}],
        "params": {},
        "server_status_before": "running",
        "status_when_queued": "off",
    }
    assert plan_fits(WORKFLOWS["reset-password"], queued, "running") is None
    said = plan_fits(WORKFLOWS["reset-password"], queued, "off")
    assert said is not None and said.startswith("reset-password needs a running server; it is off now")


def test_a_queued_run_is_planned_for_the_run_directly_ahead_of_it(redis_server: Any) -> None:
    """A reviewer: behind a snapshot (leaves the server running) and a power-off queued after it (leaves it
    off), a third run was planned for the snapshot's "running"."""
    import uuid

    from workers.run_store import RunStore
    from workflows.submission import _run_ahead, _where_it_leaves

    store = RunStore(redis_server.client(), prefix=f"ra{uuid.uuid4().hex[:6]}")

    def record(run_id: str, actions: list[str], state: str) -> None:
        steps = [
            {"index": i, "name": a, "action": a, "task_id": f"{run_id}-{i}"} for i, a in enumerate(actions)
        ]
        meta = {"id": run_id, "workflow": "x", "server_id": 7, "server_name": "s7", "steps": steps}
        store.create({**meta, "server_status_before": "running", "lock_ttl": 60}, state)

    record("snap", ["shutdown", "create_image", "power_on"], "running")
    assert store.acquire(7, "snap", 60) is None
    assert _where_it_leaves(_run_ahead(store, 7, "snap")) == "running"
    record("off1", ["power_off"], "queued")
    store.enqueue(7, "off1")
    assert _where_it_leaves(_run_ahead(store, 7, "snap")) == "off"
    record("gone", ["power_on"], "cancelled")  # no longer queued: not the run ahead
    store.enqueue(7, "gone")
    assert _run_ahead(store, 7, "snap")["id"] == "off1"  # type: ignore[index]

"""Maintenance window rules: cron in a time zone, durations, and every refusal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from workers.errors import BadInput
from workflows.cron import cron_matches, parse_cron, parse_duration, utc_minutes
from workflows.windows import validate_window

BERLIN = ZoneInfo("Europe/Berlin")


def spec(**changes: object) -> dict[str, object]:
    base = {
        "name": "sunday-patch",
        "cron": "0 3 * * SUN",
        "tz": "Europe/Berlin",
        "duration": "2h",
        "cutoff": "30m",
        "workflow": "reboot",
        "selector": "env=staging",
        "max_concurrency": "20%",
        "max_errors": "1",
    }
    base.update(changes)
    return base


class StubRunner:
    """Stands in for a fleet runner in fire(): its start, its event listener, and a job store that knows no
    previous job."""

    class store:
        @staticmethod
        def get(job_id: str) -> None:
            return None

    def __init__(self, start: Any, on_event: Any) -> None:
        self.start, self.on_event = start, on_event


def test_sunday_three_in_berlin_across_daylight_saving() -> None:
    cron = parse_cron("0 3 * * SUN")
    assert cron_matches(cron, datetime(2026, 1, 4, 3, 0, tzinfo=BERLIN))  # winter, UTC+1
    assert cron_matches(cron, datetime(2026, 7, 5, 3, 0, tzinfo=BERLIN))  # summer, UTC+2
    assert not cron_matches(cron, datetime(2026, 7, 5, 3, 1, tzinfo=BERLIN))
    assert not cron_matches(cron, datetime(2026, 7, 6, 3, 0, tzinfo=BERLIN))  # a Monday
    # The same instant seen in UTC is not 03:00 there: the zone is what decides.
    assert not cron_matches(cron, datetime(2026, 7, 5, 1, 0, tzinfo=UTC))


def test_day_fields_follow_cron_or_rule() -> None:
    cron = parse_cron("0 0 1 * MON")  # the 1st of the month, or any Monday
    assert cron_matches(cron, datetime(2026, 6, 1, 0, 0))
    assert cron_matches(cron, datetime(2026, 6, 8, 0, 0))
    assert not cron_matches(cron, datetime(2026, 6, 9, 0, 0))


def test_utc_minutes_cover_half_hour_zones() -> None:
    assert utc_minutes({0}, BERLIN) == [0]
    assert utc_minutes({0}, ZoneInfo("Asia/Kolkata")) == [30]
    assert utc_minutes({15}, ZoneInfo("UTC")) == [15]


@pytest.mark.parametrize(
    ("text", "seconds"), [("2h", 7200), ("30m", 1800), ("1h30m", 5400), ("90s", 90), ("45", 45)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, "duration") == seconds


def test_a_good_window_is_accepted() -> None:
    window = validate_window(spec())
    assert (window["duration"], window["cutoff"], window["tz"]) == (7200, 1800, "Europe/Berlin")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cron": "0 3 * *"}, "cron needs 5 fields"),
        ({"cron": "61 3 * * SUN"}, "minute field"),
        ({"cron": "0 3 * * FUNDAY"}, "day of week"),
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        # This host's files, not IANA names: another host would read them as another zone (an outside test).
        ({"tz": "localtime"}, "unknown time zone"),
        ({"tz": "posix/Europe/Berlin"}, "unknown time zone"),
        ({"duration": "30m", "cutoff": "45m"}, "must be shorter than the duration"),
        ({"duration": "2 hours"}, "duration must look like"),
        ({"selector": ""}, "selector is empty"),
        ({"selector": None}, "exactly one"),
        ({"workflow": "defrag"}, "unknown workflow"),
        ({"name": "Bad Name!"}, "window names"),
        ({"max_concurrency": "0"}, "max_concurrency"),
        # An outside test: a 100 KB cron was kept and listed; a list was read as text; both echoed whole.
        ({"cron": "0," * 50_000 + "0 3 * * *"}, "cron is at most 256 characters, not 100009"),
        ({"cron": ["0", "3", "*", "*", "*"]}, "cron is text like '0 3 \\* \\* SUN', not list"),
        ({"tz": "X" * 200_000}, "unknown time zone 'XXXX"),
    ],
)
def test_bad_windows_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=message) as refused:
        validate_window(spec(**changes))
    assert len(str(refused.value)) < 400, "the refusal does not echo a huge input whole"


def test_a_window_given_a_null_time_zone_is_in_utc_as_an_edit_to_null_is() -> None:
    """An outside test: POST said "unknown time zone None" where PATCH took null as the default."""
    assert validate_window(spec(tz=None))["tz"] == "UTC"


def test_a_long_cron_kept_by_an_earlier_version_is_still_read() -> None:
    long = ",".join(str(m) for m in range(60)) + " 3 * * *"  # 178 characters: accepted
    assert len(parse_cron(long)["minute"]) == 60
    kept = ",".join(["0"] * 200) + " 3 * * *"
    with pytest.raises(BadInput, match="at most 256"):
        parse_cron(kept)
    assert parse_cron(kept, stored=True)["minute"] == {0}


def test_a_late_firing_still_finds_its_minute_but_not_an_older_one() -> None:
    from workflows.windows import LATE_TOLERANCE_MINUTES, _scheduled_minute

    cron = parse_cron("0 3 * * SUN")
    on_time = datetime(2026, 7, 5, 3, 0, 20, tzinfo=BERLIN)
    assert _scheduled_minute(cron, on_time) == datetime(2026, 7, 5, 3, 0, tzinfo=BERLIN)
    late = datetime(2026, 7, 5, 3, 4, 50, tzinfo=BERLIN)  # e.g. after a beat failover
    assert _scheduled_minute(cron, late) == datetime(2026, 7, 5, 3, 0, tzinfo=BERLIN)
    too_late = datetime(2026, 7, 5, 3, LATE_TOLERANCE_MINUTES + 1, tzinfo=BERLIN)
    assert _scheduled_minute(cron, too_late) is None


def test_a_cron_that_never_fires_and_a_week_long_duration_are_refused() -> None:
    import pytest as _pytest

    from workers.errors import BadInput
    from workflows.cron import cron_can_fire, parse_cron
    from workflows.windows import validate_window

    assert not cron_can_fire(parse_cron("0 0 31 2 *")) and not cron_can_fire(parse_cron("0 0 31 4,6,9,11 *"))
    assert cron_can_fire(parse_cron("0 0 29 2 *")) and cron_can_fire(parse_cron("0 0 31 2 MON"))
    base = {"name": "w", "cron": "0 3 * * *", "duration": "2h", "workflow": "reboot", "selector": "env=x"}
    with _pytest.raises(BadInput, match="never fires"):
        validate_window({**base, "cron": "0 0 31 2 *"})
    with _pytest.raises(BadInput, match="at most 7d"):
        validate_window({**base, "duration": "100d"})
    with _pytest.raises(BadInput, match="not a term"):
        validate_window({**base, "selector": "env in ("})


def test_next_firing_is_the_first_matching_local_minute_after_now() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from workflows.cron import next_firing, parse_cron

    berlin = ZoneInfo("Europe/Berlin")
    wednesday = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert next_firing(parse_cron("0 3 * * SUN"), berlin, wednesday) == datetime(
        2026, 12, 6, 3, 0, tzinfo=berlin
    )
    assert next_firing(parse_cron("*/15 * * * *"), ZoneInfo("UTC"), wednesday) == datetime(
        2026, 12, 2, 12, 15, tzinfo=ZoneInfo("UTC")
    ), "strictly after now"
    leap = next_firing(parse_cron("0 0 29 2 *"), ZoneInfo("UTC"), wednesday)
    assert leap is not None and (leap.year, leap.month, leap.day) == (2028, 2, 29)


def test_a_firing_past_the_cutoff_starts_nothing_and_says_why(tmp_path: Any) -> None:
    """A beat failover can deliver a firing minutes late: past the cutoff no server could start, so the
    history says 'skipped' and why, instead of a 'started' job that starts nothing."""
    import json

    from tests.support.processes import RedisServer
    from workflows.windows import WindowStore, fire

    server = RedisServer(tmp_path / "redis")
    try:
        store = WindowStore(server.client(), app=None)
        window = validate_window(spec(duration="10m", cutoff="8m"))
        store.redis.set(store._key(window["name"]), json.dumps(window))
        started: list[dict[str, Any]] = []
        told: list[tuple[str, dict[str, Any]]] = []

        def start(**kw: Any) -> dict[str, Any]:
            started.append(kw)
            return {"id": "j1", "servers": [1]}

        Runner = StubRunner(start, lambda event, subject: told.append((event, subject)))

        minute = datetime(2026, 7, 5, 3, 0, tzinfo=BERLIN).timestamp()
        # 2.5 min late: after the 2 min to cutoff
        late = fire(store, lambda project: Runner, window["name"], minute + 150)
        assert late["outcome"] == "skipped" and "past the window's cutoff" in late["reason"]
        assert not started
        next_week = minute + 7 * 86400
        on_time = fire(store, lambda project: Runner, window["name"], next_week + 20)
        assert on_time["outcome"] == "started" and started[0]["submitted_by"] == f"window {window['name']}"
        assert [e for e, _ in told] == ["window.skipped", "window.fired"]
        assert told[1][1]["job_id"] == "j1" and told[0][1]["name"] == window["name"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    "expr",
    [
        "0 3 * * SUN#2",
        "0 3 * * SUNxyz",
        "0 3 * * SUN?",
        "0 3 1-5/2#3 * *",
        "0 0 L * *",
        "0 3 * MON *",
        "0 3 * * 1W",
    ],
)
def test_cron_syntax_beyond_five_plain_fields_is_refused_not_truncated(expr: str) -> None:
    # Celery's parser read "SUN#2" (the second Sunday) as "SUN" and dropped the rest: the window would have
    # fired every Sunday. Every field is matched whole; what is left over is refused.
    with pytest.raises(BadInput, match="is invalid: use numbers"):
        parse_cron(expr)


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("1-0 * * * *", "the range 1-0 runs backwards; write it as two ranges, 1-59,0-0"),
        ("0 12-1 * * *", "the range 12-1 runs backwards; write it as two ranges, 12-23,0-1"),
        ("0 0 * DEC-JAN *", "the range DEC-JAN runs backwards"),
        ("0 0 * * MON-SUN", "the range MON-SUN runs backwards"),
        ("0 0 * * 1,5-3", "the range 5-3 runs backwards"),
        ("0 12-1/2 * * *", "the range 12-1 runs backwards; write it as ranges that run forwards"),
        ("5/15 * * * *", "a step needs \\* or a range before it"),
    ],
)
def test_cron_that_other_crons_refuse_or_read_otherwise_is_refused(expr: str, says: str) -> None:
    """An outside test: '1-0 * * * *' was read as every minute, '0 12-1 * * *' as 12-23 and 0-1 (Celery's
    parser wraps a range round), and '5/15' was refused as an "invalid weekday literal"."""
    with pytest.raises(BadInput, match=says):
        parse_cron(expr)


def test_a_window_kept_with_a_backward_range_from_before_goes_on_as_it_was_read() -> None:
    """Earlier versions took '0 22-2 * * *' (22:00 to 02:00): refused now when written, it must not stop
    the window, nor the list of windows, that holds it."""
    from workflows.windows import with_next_firing

    kept = {**validate_window(spec()), "cron": "0 22-2 * * *", "tz": "UTC"}
    shown = with_next_firing(kept, datetime(2026, 12, 1, 2, 30, tzinfo=UTC).timestamp())
    assert shown["next_firing"] == "2026-12-01T22:00:00+00:00"
    assert sorted(parse_cron(kept["cron"], stored=True)["hour"]) == [0, 1, 2, 22, 23]
    # An edit of anything else keeps its meaning in the form that is accepted now (it was refused: a
    # reviewer).
    from workflows.windows import edited

    renewed = validate_window(edited(kept, {"max_errors": "2"}))
    assert renewed["cron"] == "0 22-23,0-2 * * *" and renewed["max_errors"] == "2"


def test_a_day_field_written_from_a_star_is_anded_with_the_other_as_vixie_cron_does() -> None:
    """'0 0 */2 * MON' fires on Mondays that are odd days of the month (cron and cronie), not on every odd
    day and every Monday (it said Thursday 3 December 2026 was next)."""
    from zoneinfo import ZoneInfo

    from workflows.cron import next_firing

    utc = ZoneInfo("UTC")
    monday_the_first = next_firing(parse_cron("0 0 */2 * MON"), utc, datetime(2026, 12, 1, tzinfo=utc))
    assert monday_the_first == datetime(2026, 12, 7, 0, 0, tzinfo=utc)
    either = next_firing(parse_cron("0 0 1-31/2 * MON"), utc, datetime(2026, 12, 1, tzinfo=utc))
    assert either == datetime(2026, 12, 3, 0, 0, tzinfo=utc), "both restricted: either day field"


@pytest.mark.parametrize("expr", ["*/15 0-23/2 1,15 jan-mar mon-fri", "0 3 * JAN sun,SAT", "5 4 * * 0-6/2"])
def test_plain_cron_syntax_is_accepted(expr: str) -> None:
    assert parse_cron(expr)["minute"]


def test_a_minute_the_dst_change_skips_never_fires_and_is_never_shown_as_next() -> None:
    """Berlin skips 02:00-03:00 on 28 March 2027. Counted back on the wall clock, the firing at 03:00 took
    02:55 for its own, while a 02:30 window did not fire: both now skip that day, and say so ahead."""
    from workflows.cron import exists, next_firing
    from workflows.windows import _scheduled_minute

    assert not exists(datetime(2027, 3, 28, 2, 30, tzinfo=BERLIN))
    assert exists(datetime(2027, 3, 28, 3, 0, tzinfo=BERLIN))
    after_gap = datetime(2027, 3, 28, 1, 0, 30, tzinfo=UTC).astimezone(BERLIN)  # 03:00:30 CEST
    for cron in ("55 2 * * *", "30 2 * * *"):
        assert _scheduled_minute(parse_cron(cron), after_gap) is None, cron
        saturday = datetime(2027, 3, 27, 12, 0, tzinfo=UTC)
        fires = next_firing(parse_cron(cron), BERLIN, saturday)
        assert fires is not None and fires.day == 29, f"{cron}: the 28th has no such minute"
    # The hour that happens twice (31 October 2027) has its minutes, counted back in real time.
    second_0230 = datetime(2027, 10, 31, 1, 30, 10, tzinfo=UTC).astimezone(BERLIN)
    assert second_0230.fold == 1 and _scheduled_minute(parse_cron("30 2 * * *"), second_0230) is not None


def test_a_window_whose_project_is_no_longer_served_still_tells_that_it_failed_to_start(
    tmp_path: Any,
) -> None:
    """An outside test: it failed to start at every firing, in its history only; no webhook said so."""
    import json

    from tests.support.processes import RedisServer
    from workflows.windows import WindowStore, fire

    server = RedisServer(tmp_path / "redis")
    try:
        store = WindowStore(server.client(), app=None)
        window = {**validate_window(spec()), "project": "gone"}
        store.redis.set(store._key(window["name"]), json.dumps(window))
        told: list[tuple[str, dict[str, Any]]] = []

        class Default:
            @staticmethod
            def on_event(event: str, subject: dict[str, Any]) -> None:
                told.append((event, subject))

        def runner_for(project: str | None) -> Any:
            if project == "gone":
                raise BadInput("no project 'gone' is configured")
            return Default

        sunday = datetime(2026, 7, 5, 3, 0, tzinfo=BERLIN).timestamp()
        fired = fire(store, runner_for, window["name"], sunday + 5)
        assert fired["outcome"] == "failed to start" and "gone" in fired["reason"]
        assert [(e, s["outcome"], s["project"]) for e, s in told] == [
            ("window.skipped", "failed to start", "gone")
        ]
    finally:
        server.stop()


def test_an_edit_merges_workflow_parameters_one_by_one() -> None:
    from workflows.windows import edited

    params = {"keep": 3, "labels": {"purpose": "backup"}, "grace": 120, "description": "nightly"}
    old = {"workflow": "snapshot", "servers": [1], "selector": None, "params": params}
    # An outside test: editing the description alone dropped retention, labels and grace.
    new = edited(old, {"params": {"description": "renamed"}})
    assert new["params"] == {**params, "description": "renamed"}
    assert edited(old, {"params": {"keep": None}})["params"] == {
        k: v for k, v in params.items() if k != "keep"
    }
    assert edited(old, {"workflow": "reboot"})["params"] == {}, "another workflow: the old ones go"
    assert edited(old, {"workflow": "snapshot", "params": {"grace": 5}})["params"]["keep"] == 3
    assert edited(old, {"selector": "env=prod"})["servers"] is None
    assert edited({**old, "selector": "a=b", "servers": None}, {"servers": [2]})["selector"] is None
    assert old["params"]["description"] == "nightly", "the old fields are not changed in place"
    with pytest.raises(BadInput, match="snapshot has no parameter 'colour'"):
        edited(old, {"params": {"colour": None}})
    for nothing in ({}, {"name": "w"}):
        with pytest.raises(BadInput, match="nothing to change"):
            edited(old, nothing)


def test_a_field_edited_to_null_goes_back_to_its_default_or_is_refused_where_it_has_none() -> None:
    """Null over HTTP met each field's own check: 'unknown time zone None', 'not None' (an outside test)."""
    from workflows.windows import edited, validate_window

    old = validate_window(
        {
            "name": "w",
            "workflow": "snapshot",
            "cron": "0 3 * * SUN",
            "tz": "Europe/Berlin",
            "duration": "2h",
            "cutoff": "10m",
            "selector": "env=prod",
            "max_errors": "1",
            "notify": ["http://hooks.test/w"],
        }
    )
    new = validate_window(edited(old, {"tz": None, "cutoff": None, "max_errors": None, "notify": None}))
    assert (new["tz"], new["cutoff"], new["max_errors"], new["notify"]) == ("UTC", 0, "0", [])
    assert (new["cron"], new["duration"], new["selector"]) == (old["cron"], old["duration"], old["selector"])
    checked = validate_window({**old, "health_check": "http://{ipv4}/up", "health_timeout": "10m"})
    unchecked = validate_window(edited(checked, {"health_check": None}))
    assert (unchecked["health_check"], unchecked["health_timeout"]) == (None, 300), "its settings go with it"
    for required in ("workflow", "cron", "duration"):
        with pytest.raises(BadInput, match=f"{required} cannot be removed, it has no default") as refused:
            edited(old, {required: None})
        assert refused.value.field == required


def _store(server: Any) -> Any:
    from celery import Celery

    from workflows.windows import WindowStore

    app = Celery("windows", broker=server.url, set_as_current=False)
    app.conf.update(redbeat_redis_url=server.url, redbeat_key_prefix="hf:redbeat:")
    return WindowStore(server.client(), app)


def _entry_minutes(store: Any, name: str) -> list[int]:
    from redbeat import RedBeatSchedulerEntry

    return sorted(RedBeatSchedulerEntry.from_key(store._entry_key(name), app=store.app).schedule.minute)


def test_an_edit_made_from_a_window_that_changed_meanwhile_is_refused_not_written_over(tmp_path: Any) -> None:
    from tests.support.processes import RedisServer
    from workers.errors import Conflict
    from workflows.windows import edited, window_fields

    server = RedisServer(tmp_path / "redis")
    try:
        store = _store(server)
        first = store.save(validate_window(spec()), by="a")
        name = first["name"]
        assert first["revision"] == 1
        later = edited(window_fields(first), {"cron": "20 3 * * SUN"})
        store.save(validate_window(later), replace=True, by="b", based_on=1)
        # Made from revision 1 too: written, it would put the cron back (an outside test lost edits so).
        other = edited(window_fields(first), {"max_errors": "2"})
        with pytest.raises(Conflict, match="changed meanwhile by b"):
            store.save(validate_window(other), replace=True, by="c", based_on=1)
        now = store.get(name)
        assert (now["cron"], now["max_errors"], now["revision"]) == ("20 3 * * SUN", "1", 2)
        # A pause counts as a change: an edit made before it does not undo it.
        store.set_paused(name, True, by="d")
        with pytest.raises(Conflict):
            store.save(validate_window(window_fields(now)), replace=True, by="e", based_on=2)
        assert store.get(name)["paused"] is True
        # A firing notes its job beside the record, never writing the record over a pause or an edit.
        store.note_job(name, "job-9")
        again = store.get(name)
        assert again["last_job"] == "job-9" and again["paused"] is True and again["revision"] == 3
        assert _entry_minutes(store, name) == [20]
    finally:
        server.stop()


def test_edits_racing_each_other_leave_the_record_and_the_beats_entry_on_the_same_cron(tmp_path: Any) -> None:
    import threading

    from tests.support.processes import RedisServer
    from workers.errors import Conflict
    from workflows.windows import edited, window_fields

    server = RedisServer(tmp_path / "redis")
    try:
        store = _store(server)
        name = store.save(validate_window(spec()), by="a")["name"]
        outcomes: list[str] = []
        gate = threading.Barrier(8)

        def edit(minute: int) -> None:
            record = _store(server).get(name)
            window = validate_window(edited(window_fields(record), {"cron": f"{minute} 3 * * SUN"}))
            gate.wait()
            try:
                _store(server).save(window, replace=True, by=f"t{minute}", based_on=record["revision"])
                outcomes.append("saved")
            except Conflict:
                outcomes.append("refused")

        threads = [threading.Thread(target=edit, args=(m,)) for m in range(1, 9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = store.get(name)
        assert outcomes.count("saved") == 1 and outcomes.count("refused") == 7, outcomes
        assert final["revision"] == 2
        assert _entry_minutes(store, name) == [int(final["cron"].split()[0])]
    finally:
        server.stop()


def test_a_paused_window_whose_project_is_no_longer_served_is_skipped_as_paused(tmp_path: Any) -> None:
    """An outside test: it recorded (and counted, for the alerts) "failed to start" while paused."""
    import json

    from tests.support.processes import RedisServer
    from workflows.windows import WindowStore, fire

    server = RedisServer(tmp_path / "redis")
    try:
        store = WindowStore(server.client(), app=None)
        window = {**validate_window(spec()), "project": "gone", "paused": True}
        store.redis.set(store._key(window["name"]), json.dumps(window))

        def runner_for(project: str | None) -> Any:
            raise BadInput(f"no project {project!r} is configured")

        sunday = datetime(2026, 7, 5, 3, 0, tzinfo=BERLIN).timestamp()
        fired = fire(store, runner_for, window["name"], sunday + 5)
        assert (fired["outcome"], fired["reason"]) == ("skipped", "the window is paused")
    finally:
        server.stop()


def test_an_edit_of_a_window_removed_meanwhile_does_not_bring_it_back_and_old_records_keep_their_job(
    tmp_path: Any,
) -> None:
    import json

    from tests.support.processes import RedisServer
    from workers.errors import NotFound
    from workflows.windows import edited, window_fields

    server = RedisServer(tmp_path / "redis")
    try:
        store = _store(server)
        first = store.save(validate_window(spec()), by="a")
        name = first["name"]
        change = validate_window(edited(window_fields(first), {"cron": "20 3 * * SUN"}))
        store.remove(name)  # while the edit was being made (a reviewer)
        with pytest.raises(NotFound, match="removed meanwhile"):
            store.save(change, replace=True, by="b", based_on=first["revision"])
        assert store.get(name) is None and name not in store.names()
        store.note_job(name, "job-late")  # a firing that ran while it was removed
        assert not store.redis.exists(f"{store._key(name)}:last_job")

        # A window stored by the previous version kept its last job inside the record: a pause (or an
        # edit) must not lose it, or the next firing stacks a job on the one still running.
        old = {**validate_window(spec(name="legacy")), "last_job": "job-7"}
        store.redis.set(store._key("legacy"), json.dumps(old))
        store.set_paused("legacy", True, by="c")
        store.set_paused("legacy", False, by="c")
        assert store.get("legacy")["last_job"] == "job-7"
        store.save(validate_window(spec(name="legacy")), replace=True, by="d")
        assert store.get("legacy")["last_job"] == "job-7"
        with pytest.raises(BadInput, match="more than once"):
            validate_window(spec(name="dup", selector=None, servers=["a", "b", "a"]))
    finally:
        server.stop()


def _overdue(store: Any, key: str) -> str:
    """Make the beat's entry as if the beat last fired it two hours ago and has been down since."""
    import json
    import time as clock

    past = datetime.fromtimestamp(clock.time() - 7200, UTC)
    store.redis.hset(key, "meta", json.dumps({"last_run_at": {"__type__": "datetime", "year": past.year,
        "month": past.month, "day": past.day, "hour": past.hour, "minute": past.minute, "second": 0,
        "microsecond": 0, "timezone": "UTC"}}))  # fmt: skip
    schedule_key: str = store.app.redbeat_conf.schedule_key
    store.redis.zadd(schedule_key, {key: past.timestamp() + 3600})
    return schedule_key


def _due_after_edit(tmp_path: Any, change: dict[str, Any]) -> float:
    """Save a window firing at minute 13, make its beat entry overdue (``_overdue``), edit it with
    ``change``; return when the beat's entry is due then."""
    from tests.support.processes import RedisServer
    from workflows.windows import edited, window_fields

    server = RedisServer(tmp_path / "redis")
    try:
        store = _store(server)
        first = store.save(validate_window(spec(cron="13 * * * *", tz="UTC")), by="a")
        key = store._entry_key(first["name"])
        schedule_key = _overdue(store, key)
        store.save(validate_window(edited(window_fields(first), change)), replace=True, by="b",
                   based_on=first["revision"])  # fmt: skip
        due: float = store.redis.zscore(schedule_key, key)
        return due
    finally:
        server.stop()


def test_an_edit_while_a_firing_is_due_keeps_it_due(tmp_path: Any) -> None:
    """An outside test: an edit made while the beat was down rewrote the beat's entry as if it had just
    fired, and the late firing the README promises never came, nor was it recorded."""
    import time as clock

    assert _due_after_edit(tmp_path, {"max_errors": "2"}) <= clock.time(), "still due: the beat fires it late"


def test_an_edit_that_moves_the_windows_minute_does_not_fire_it_at_once(tmp_path: Any) -> None:
    """A reviewer: keeping the last firing across a change of minute made a minute of the new cron that
    had just passed due at once."""
    import time as clock

    due = _due_after_edit(tmp_path, {"cron": "47 * * * *"})
    assert due > clock.time(), "due at its next new minute, not now"


def test_a_firing_that_meets_an_api_outage_is_recorded_and_told(tmp_path: Any) -> None:
    """An outside test: a firing during a 502 outage raised out of the task; no job, no history entry, no
    webhook, and `schedule list` went on showing the window active."""
    import json

    from tests.support.processes import RedisServer
    from workers.errors import APIError
    from workflows.windows import WindowStore, fire

    server = RedisServer(tmp_path / "redis")
    try:
        store = WindowStore(server.client(), app=None)
        window = validate_window(spec())
        store.redis.set(store._key(window["name"]), json.dumps(window))
        told: list[str] = []

        def start(**kw: Any) -> dict[str, Any]:
            raise APIError("http_502", "GET /servers: Bad Gateway", 502)

        Runner = StubRunner(start, lambda event, subject: told.append(event))

        sunday = datetime(2026, 7, 5, 3, 0, tzinfo=BERLIN).timestamp()
        fired = fire(store, lambda project: Runner, window["name"], sunday + 5)
        assert fired["outcome"] == "failed to start" and "Bad Gateway" in fired["reason"]
        assert store.history(window["name"])[0]["outcome"] == "failed to start"
        assert told == ["window.skipped"]
    finally:
        server.stop()

"""The fleet runner's advance step with its collaborators replaced: budget holds, busy servers, refusals."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from workers.errors import BadInput, RateBudgetExhausted, ServerBusy
from workflows.fleet import FleetRunner, JobStore

from ..support.clock import Clock
from ..support.processes import RedisServer


def job(store: JobStore, job_id: str, ids: list[int], window: int = 2) -> None:
    store.create(
        {
            "id": job_id,
            "workflow": "reboot",
            "selector": None,
            "params": {},
            "created": 0.0,
            "servers": [{"id": i, "name": f"s{i}"} for i in ids],
            "max_concurrency": window,
            "max_errors": 0,
            "canary": 0,
            "limits": {},
            "window": None,
        }
    )


def test_an_empty_budget_defers_the_start_instead_of_failing_the_server(redis_server: RedisServer) -> None:
    store = JobStore(redis_server.client(), prefix="fr1")
    kicks: list[tuple[str, float]] = []
    answers: list[Any] = [RateBudgetExhausted(12.0)]

    def submit(**kw: Any) -> dict[str, Any]:
        if answers:
            raise answers.pop()
        return {"run_id": f"run-{kw['server']}"}

    runner = FleetRunner(store, None, submit, lambda run_id, by: None, kick=lambda j, c: kicks.append((j, c)))  # type: ignore[arg-type]
    job(store, "j1", [1, 2, 3])
    runner.advance("j1")
    assert kicks == [("j1", 12.0)]
    assert store.get("j1")["outcomes"] == {}, "nothing recorded: the servers are still pending"  # type: ignore[index]
    runner.advance("j1")  # the kick arrives
    outcomes = store.get("j1")["outcomes"]  # type: ignore[index]
    assert {s: e["outcome"] for s, e in outcomes.items()} == {1: "running", 2: "running"}


def test_a_start_the_api_could_not_answer_is_tried_again_later_a_few_times(redis_server: RedisServer) -> None:
    """An outside test: 16 s of 502s while a server was being started refused it, and failed a
    --max-errors 0 job. A gateway error or no answer (through all of a request's retries) is tried again
    START_RETRY_PAUSE later while the rest of the job goes on; after START_TRIES such starts, refused."""
    from workers.errors import APIError, TransportError
    from workflows.fleet import START_RETRY_PAUSE, START_TRIES

    clock = Clock()
    store = JobStore(redis_server.client(), prefix="fr-retry", clock=clock)
    kicks: list[tuple[str, float]] = []
    tried: list[int] = []
    gateway = APIError("http_502", "GET /servers/1: Bad Gateway", 502)
    answers: list[Any] = [gateway, TransportError("GET /servers/1: connection reset")]

    def submit(**kw: Any) -> dict[str, Any]:
        tried.append(kw["server"])
        if kw["server"] == 1 and answers:
            raise answers.pop()
        return {"run_id": f"run-{kw['server']}"}

    kick = lambda j, c: kicks.append((j, c))  # noqa: E731
    runner = FleetRunner(store, None, submit, lambda run_id, by: None, kick=kick, fresh_for=0)  # type: ignore[arg-type]
    job(store, "jr1", [1, 2], window=2)
    runner.advance("jr1")
    outcomes = store.get("jr1")["outcomes"]  # type: ignore[index]
    assert kicks == [("jr1", START_RETRY_PAUSE)] and 1 not in outcomes, "server 1 waits, still pending"
    assert outcomes[2]["outcome"] == "running", "the rest of the job goes on meanwhile"
    clock.now += 10.0
    runner.advance("jr1")  # another advance before the retry time (a run ending, say): not tried again
    assert tried.count(1) == 1
    # ...and it asks again for the retry's advance: the job's one deferred entry keeps only the earliest
    # kick, so a sooner one had replaced it, and the job waited for good once its runs had ended.
    assert kicks[-1] == ("jr1", START_RETRY_PAUSE - 10.0)
    clock.now -= 10.0
    clock.now += START_RETRY_PAUSE
    runner.advance("jr1")
    assert tried.count(1) == 2 and 1 not in store.get("jr1")["outcomes"]  # type: ignore[index]
    clock.now += START_RETRY_PAUSE
    runner.advance("jr1")
    assert store.get("jr1")["outcomes"][1]["outcome"] == "running"  # type: ignore[index]

    # An API that stays away: refused after START_TRIES starts, saying why.
    answers[:] = [gateway] * (START_TRIES + 5)
    job(store, "jr2", [1], window=1)
    for _ in range(START_TRIES + 2):
        runner.advance("jr2")
        clock.now += START_RETRY_PAUSE
    outcome = store.get("jr2")["outcomes"][1]  # type: ignore[index]
    assert outcome["outcome"] == "refused" and "Bad Gateway" in outcome["reason"]
    assert len(answers) == 5, f"{START_TRIES} starts in all, not more"

    # One at a time (--max-concurrency 1): the servers after a waiting one start meanwhile.
    answers[:] = [gateway]
    tried.clear()
    job(store, "jr4", [1, 2, 3], window=1)
    runner.advance("jr4")
    outcomes = store.get("jr4")["outcomes"]  # type: ignore[index]
    assert tried == [1, 2] and outcomes[2]["outcome"] == "running" and 1 not in outcomes

    # A refusal the API meant (404, invalid input) is not tried again.
    answers[:] = [APIError("not_found", "server not found", 404)]
    job(store, "jr3", [1], window=1)
    runner.advance("jr3")
    assert store.get("jr3")["outcomes"][1]["outcome"] == "refused" and not answers  # type: ignore[index]


def test_busy_servers_are_skipped_and_refusals_count_as_errors(redis_server: RedisServer) -> None:
    store = JobStore(redis_server.client(), prefix="fr2")

    def submit(**kw: Any) -> dict[str, Any]:
        if kw["server"] == 1:
            raise ServerBusy(1, "other-run")
        if kw["server"] == 2:
            raise BadInput("server 2 is protected against rebuild")
        return {"run_id": "r3"}

    # fresh_for=0: small waves read their servers alone (there is no API client here to list them).
    runner = FleetRunner(store, None, submit, lambda run_id, by: None, fresh_for=0)  # type: ignore[arg-type]
    job(store, "j2", [1, 2, 3, 4, 5], window=4)
    runner.advance("j2")
    done = store.get("j2")
    assert done is not None
    assert done["outcomes"][1]["outcome"] == "skipped" and done["outcomes"][1]["busy_with"] == "other-run"
    assert done["outcomes"][2]["outcome"] == "refused"
    assert done["outcomes"][3]["outcome"] == done["outcomes"][4]["outcome"] == "running"  # the same wave
    assert 5 not in done["outcomes"], "one error exceeds --max-errors 0: server 5 never starts"
    assert done["state"] == "running", "until the runs in flight have ended and been recorded"


def test_a_wave_starts_together_and_the_shared_lookups_are_read_by_the_first_start_alone(
    redis_server: RedisServer,
) -> None:
    """Starts of one wave overlap (each waits on Redis and the broker); the first runs alone, so that what
    every run shares (the image, ssh keys) is read into the wave's lookups once, not by eight at a time."""
    import threading
    import time

    from workflows.validate import Lookups

    store = JobStore(redis_server.client(), prefix="fr5")
    lock = threading.Lock()
    active = peak = 0
    reads: list[int] = []

    def submit(**kw: Any) -> dict[str, Any]:
        nonlocal active, peak
        lookups = kw["lookups"]
        if "img" not in lookups.images:
            reads.append(kw["server"])
            lookups.images["img"] = {"id": 1}
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)  # the Redis and broker round trips of a real start
        with lock:
            active -= 1
        return {"run_id": f"run-{kw['server']}"}

    runner = FleetRunner(store, None, submit, lambda run_id, by: None, starters=4)  # type: ignore[arg-type]
    job(store, "j5", list(range(1, 21)), window=20)
    runner.advance("j5", Lookups())
    outcomes = store.get("j5")["outcomes"]  # type: ignore[index]
    assert {e["outcome"] for e in outcomes.values()} == {"running"} and len(outcomes) == 20
    assert reads == [1], "the first start alone read the shared answers; the others found them"
    assert 1 < peak <= 4, "the rest of the wave started several at a time, never more than the starters"


def test_a_run_ending_while_others_run_leaves_the_job_lock_alone_and_the_last_one_ends_the_job(
    redis_server: RedisServer,
) -> None:
    """With nothing left to start, an ending only records its outcome: a hundred endings used to queue on
    the job lock (and sweep every run record) one after another. The last ending still ends the job."""
    store = JobStore(redis_server.client(), prefix="fr6")
    runner = FleetRunner(store, None, lambda **kw: {"run_id": f"run-{kw['server']}"}, lambda run_id, by: None)  # type: ignore[arg-type]
    job(store, "j6", [1, 2, 3], window=3)
    runner.advance("j6")
    taken: list[str] = []
    real_lock = store.lock

    def counting_lock(job_id: str) -> Any:
        taken.append(job_id)
        return real_lock(job_id)

    store.lock = counting_lock  # type: ignore[method-assign]
    for sid in (1, 2):
        runner.on_run_ended({"id": f"run-{sid}", "server_id": sid, "state": "succeeded", "job_id": "j6"})
    assert taken == [], "nothing to decide while server 3 still runs"
    assert store.get("j6")["state"] == "running"  # type: ignore[index]
    runner.on_run_ended({"id": "run-3", "server_id": 3, "state": "failed", "job_id": "j6"})
    assert taken == ["j6"]
    done = store.get("j6")
    assert done is not None and done["state"] == "failed", "one failure exceeds --max-errors 0"
    outcomes = {s: e["outcome"] for s, e in done["outcomes"].items()}
    assert outcomes == {1: "succeeded", 2: "succeeded", 3: "failed"}


class Listing:
    """A project's server list, 50 a page, counting the pages asked for."""

    def __init__(self, ids: list[int]) -> None:
        self.servers = [{"id": i, "name": f"s{i}", "status": "running"} for i in ids]
        self.pages: list[int] = []

    def priority_scope(self, priority: str) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def server_page(self, params: Any = None, page: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        self.pages.append(page)
        last = max(1, -(-len(self.servers) // 50))
        chunk = self.servers[(page - 1) * 50 : page * 50]
        return chunk, {"next_page": page + 1 if page < last else None, "last_page": last}


def test_small_waves_take_their_servers_from_the_jobs_last_listing_while_it_is_fresh(
    redis_server: RedisServer,
) -> None:
    """A throttled job starts one server as each run ends: read alone, those reads were a quarter of its
    requests. One listing of what is left serves the next starts for ``fresh_for`` seconds."""

    clock = Clock()
    store = JobStore(redis_server.client(), prefix="fr7", clock=clock)
    project = Listing(list(range(1, 121)))
    given: dict[int, Any] = {}

    def submit(**kw: Any) -> dict[str, Any]:
        given[kw["server"]] = kw["lookups"].servers.get(kw["server"]) if kw["lookups"] else None
        return {"run_id": f"run-{kw['server']}"}

    runner = FleetRunner(store, project, submit, lambda run_id, by: None, fresh_for=10.0)  # type: ignore[arg-type]
    job(store, "j7", list(range(1, 101)), window=1)
    runner.advance("j7")
    assert project.pages == [1, 2], "the 100 servers left to start, two pages: not the third"
    for sid in range(1, 6):
        clock.now += 1.0
        runner.on_run_ended({"id": f"run-{sid}", "server_id": sid, "state": "succeeded", "job_id": "j7"})
    assert project.pages == [1, 2], "five more starts within 10 s: no request"
    assert all(given[s] is not None and given[s]["id"] == s for s in range(1, 7))
    clock.now += 10.0
    runner.on_run_ended({"id": "run-6", "server_id": 6, "state": "succeeded", "job_id": "j7"})
    assert project.pages == [1, 2, 1, 2], "stale: what is left is listed again"

    project.pages.clear()
    stale = FleetRunner(store, project, submit, lambda run_id, by: None, fresh_for=0)  # type: ignore[arg-type]
    clock.now += 1.0
    stale.on_run_ended({"id": "run-7", "server_id": 7, "state": "succeeded", "job_id": "j7"})
    assert project.pages == [] and given[8] is None, "fresh_for=0: the one server is read by its run"


def test_an_image_larger_than_a_servers_disk_refuses_the_whole_job_before_it_starts() -> None:
    import pytest

    from workflows.validate import check_fits

    image = {"id": 9, "name": None, "description": "db snapshot", "disk_size": 80.0}
    check_fits(image, {"name": "big", "primary_disk_size": 80})
    with pytest.raises(BadInput, match=r"needs a disk of 80 GB; server small has 40 GB"):
        check_fits(image, {"name": "small", "primary_disk_size": 40})
    servers = [{"name": f"s{i}", "primary_disk_size": 40 if i % 2 else 160} for i in range(4)]
    with pytest.raises(BadInput, match=r"too small: s1 \(40 GB\), s3 \(40 GB\)"):
        FleetRunner._preflight({"image": image}, servers)
    FleetRunner._preflight({"image": None}, servers)  # no image: nothing to fit


def test_the_threshold_and_a_windows_end_are_told_once(redis_server: RedisServer) -> None:
    now = [1000.0]
    store = JobStore(redis_server.client(), prefix="fr9", clock=lambda: now[0])
    events: list[tuple[str, Any]] = []
    subjects: list[dict[str, Any]] = []

    def told(event: str, subject: dict[str, Any]) -> None:
        events.append((event, subject.get("reason") or subject.get("state")))
        subjects.append(subject)

    runner = FleetRunner(
        store, None, lambda **kw: {"run_id": f"run-{kw['server']}"}, lambda run_id, by: None,  # type: ignore[arg-type]
        kick=lambda j, c: None, fresh_for=0, on_event=told,
    )  # fmt: skip
    job(store, "j9", [1, 2, 3, 4], window=2)
    store.redis.hset(
        store.key("j9"), "meta",
        json.dumps({**json.loads(store.redis.hget(store.key("j9"), "meta")), "window": {
            "name": "nightly", "started_at": 900.0, "cutoff_at": 1100.0, "ends_at": 1200.0}}),
    )  # fmt: skip
    runner.advance("j9")
    runner.on_run_ended({"id": "run-1", "job_id": "j9", "server_id": 1, "state": "failed"})
    runner.advance("j9")
    told = [e for e, _ in events]
    assert (
        told.count("job.threshold_reached") == 1
        and ("job.threshold_reached", "1 error exceeds --max-errors 0") in events
    )
    now[0] = 1201.0
    runner.advance("j9")
    runner.advance("j9")
    overran = [reason for e, reason in events if e == "window.overran"]
    assert overran == ["job j9 still had 1 server(s) in flight at the window's end"]
    # An outside test: window.fired and .skipped said "local" as an ISO time, and this one as a float.
    assert [s["local"] for s in subjects if s.get("outcome") == "overran"] == ["1970-01-01T00:15+00:00"]


def test_a_run_ending_while_every_server_has_started_reads_no_whole_job(redis_server: RedisServer) -> None:
    """400 runs ending together each read the 400 outcomes: the job's last runs waited seconds on that."""
    store = JobStore(redis_server.client(), prefix="fr10")
    runner = FleetRunner(store, None, lambda **kw: {"run_id": f"run-{kw['server']}"}, lambda r, b: None)  # type: ignore[arg-type]
    job(store, "j10", [1, 2, 3], window=3)
    runner.advance("j10")
    reads: list[str] = []
    whole = store.get
    store.get = lambda job_id: reads.append(job_id) or whole(job_id)  # type: ignore[method-assign]

    runner.on_run_ended({"id": "run-1", "server_id": 1, "state": "succeeded", "job_id": "j10"})
    runner.on_run_ended({"id": "run-2", "server_id": 2, "state": "failed", "job_id": "j10"})
    assert reads == [] and store.state("j10") == "running"

    runner.on_run_ended({"id": "run-3", "server_id": 3, "state": "succeeded", "job_id": "j10"})
    assert reads, "the last end reads the job and ends it"
    assert store.state("j10") == "failed", "max_errors 0: one failure fails the job"


class Project:
    """A project of 60 servers: srv-1 … srv-60 with ids 101 … 160."""

    servers = [{"id": 100 + i, "name": f"srv-{i}"} for i in range(1, 61)]

    def get_server(self, sid: int) -> dict[str, Any]:
        return next(s for s in self.servers if s["id"] == sid)

    def list_servers(self, name: str | None = None, **_: Any) -> list[dict[str, Any]]:
        return [s for s in self.servers if name is None or s["name"] == name]


def test_a_server_list_that_names_a_server_twice_is_refused_not_shortened() -> None:
    """An outside test: `--servers srv-1,101,srv-1` planned one server and said nothing of the others."""
    import pytest

    from workflows.fleet import resolve_targets

    for servers in (["srv-1", 101], ["srv-1", "srv-2", "srv-1"], [f"srv-{i}" for i in range(1, 41)] + [101]):
        with pytest.raises(BadInput, match="names one server more than once"):
            resolve_targets(Project(), None, servers)  # type: ignore[arg-type]
    many = [f"srv-{i}" for i in range(1, 41)]
    assert [s["id"] for s in resolve_targets(Project(), None, many)] == list(range(101, 141))  # type: ignore[arg-type]
    assert [s["id"] for s in resolve_targets(Project(), None, "srv-2, 101")] == [102, 101]  # type: ignore[arg-type]


def test_an_advance_whose_job_lock_lapsed_asks_for_another_look(
    redis_server: RedisServer, monkeypatch: Any
) -> None:
    """An outside test: a look at a slow block-on URL outlasted the job lock; the lapse was logged and
    nothing looked at the job again, which stayed running for good."""
    from redis.exceptions import LockNotOwnedError

    from workflows.fleet import LOCK_LAPSED_RETRY

    store = JobStore(redis_server.client(), prefix="fr-lapse")
    kicks: list[tuple[str, float]] = []
    kick = lambda j, c: kicks.append((j, c))  # noqa: E731
    runner = FleetRunner(store, None, lambda **kw: {"run_id": "r"}, lambda run_id, by: None, kick=kick)  # type: ignore[arg-type]
    job(store, "jl1", [1])

    def stalled(*_: Any) -> None:
        raise LockNotOwnedError("lapsed")

    monkeypatch.setattr(runner, "_advance", stalled)
    runner.advance("jl1")
    assert kicks == [("jl1", LOCK_LAPSED_RETRY)]


def test_an_advance_that_cannot_take_the_job_lock_asks_for_a_later_look(
    redis_server: RedisServer, monkeypatch: Any
) -> None:
    """A reviewer: a look (perhaps the minute's watch) that waited out the lock another advance held failed
    its task, and if that holder then died nothing asked about the job again. It asks for the next look."""
    from workflows.fleet import LOCK_LAPSED_RETRY, WATCH_AFTER

    store = JobStore(redis_server.client(), prefix="fr-held")
    job(store, "jh1", [1])

    def lock(job_id: str) -> Any:  # the job's lock, waited for 50 ms instead of a minute
        return store.redis.lock(f"{store.key(job_id)}:lock", timeout=30, blocking_timeout=0.05)

    monkeypatch.setattr(store, "lock", lock)
    holder = lock("jh1")
    assert holder.acquire()
    started: list[Any] = []

    def asked(with_watch: bool) -> tuple[list[Any], list[Any]]:
        kicks: list[Any] = []
        watches: list[Any] = []
        runner = FleetRunner(
            store,
            None,  # type: ignore[arg-type]
            lambda **kw: started.append(kw) or {"run_id": "r"},  # type: ignore[func-returns-value]
            lambda run_id, by: None,
            kick=lambda j, c: kicks.append((j, c)),
            watch=(lambda j, c: watches.append((j, c))) if with_watch else None,
        )
        runner.advance("jh1")  # raises nothing: a failed task would have ended the job's looks
        return watches, kicks

    assert asked(with_watch=True) == ([("jh1", WATCH_AFTER)], [])
    assert asked(with_watch=False) == ([], [("jh1", LOCK_LAPSED_RETRY)])
    assert started == [] and (store.get("jh1") or {}).get("outcomes") == {}, "nothing started unlocked"
    holder.release()


def test_an_advance_asks_for_a_later_look_before_a_crash_could_cut_it_short(
    redis_server: RedisServer,
) -> None:
    """An outside test: a worker killed mid-wave (fleet_start and fleet_advance are acknowledged as they are
    received) left its job running with nothing to wake it, and a drained server out of its load balancer.
    Each advance of a running job first asks for another; an ended job asks for none."""
    from workflows.fleet import WATCH_AFTER

    store = JobStore(redis_server.client(), prefix="fr-watch")
    kicks: list[tuple[str, float]] = []

    def dies(**kw: Any) -> dict[str, Any]:
        raise SystemExit("the worker is killed mid-wave")

    kick = lambda j, c: kicks.append((j, c))  # noqa: E731
    runner = FleetRunner(store, None, dies, lambda run_id, by: None, kick=kick, watch=kick)  # type: ignore[arg-type]
    job(store, "jw", [1, 2])
    with pytest.raises(SystemExit):
        runner.advance("jw")
    assert kicks == [("jw", WATCH_AFTER)], "asked before the wave, which never finished"
    kicks.clear()
    store.set_state("jw", "cancelled", "by hand")
    runner.advance("jw")
    assert kicks == [], "nothing to look at again"


def test_the_look_at_a_running_job_never_displaces_the_jobs_own_kick(redis_server: RedisServer) -> None:
    """One deferred entry keeps only its earliest ask: in the job's kick entry, the minute's look displaced
    a window-end kick and, in a race, a due health look (a reviewer). It has an entry of its own."""
    from workers.deferred import Deferred
    from workflows.fleet import WATCH_AFTER

    clock = Clock()
    store = JobStore(redis_server.client(), prefix="fr-watch-own", clock=clock)
    deferred = Deferred(redis_server.client(), prefix="fr-watch-own")

    def later(job_id: str, countdown: float, **marks: Any) -> None:  # as workflows.tasks wires them
        deferred.later("adv", {"job_id": job_id, **marks}, clock.now + countdown, clock.now)

    submit = lambda **kw: {"run_id": f"run-{kw['server']}"}  # noqa: E731
    runner = FleetRunner(
        store, None, submit, lambda run_id, by: None,  # type: ignore[arg-type]
        kick=later, watch=lambda j, c: later(j, c, watch=True),
    )  # fmt: skip
    job(store, "jk", [1])
    later("jk", 0.0)  # a health look due now, asked outside the lock as a run ended
    runner.advance("jk")
    due = {json.dumps(e["kwargs"], sort_keys=True): at for (_, at), e in deferred.due(clock.now + 3600)}
    assert due['{"job_id": "jk"}'] == clock.now, "the due look stands"
    assert due['{"job_id": "jk", "watch": true}'] == clock.now + WATCH_AFTER


SECRET_USER_DATA = "#cloud-config\npassword: hunter2-fleet\n"


def _rebuild_job(store: JobStore, job_id: str, ids: list[int], window: int) -> None:
    params = {"image": "ubuntu-24.04", "user_data": SECRET_USER_DATA}
    store.create(
        {
            "id": job_id,
            "workflow": "rebuild",
            "selector": None,
            "params": params,
            "spec": {"workflow": "rebuild", "servers": ids, "params": params, "max_concurrency": window},
            "created": 0.0,
            "servers": [{"id": i, "name": f"s{i}"} for i in ids],
            "max_concurrency": window,
            "max_errors": 5,
            "canary": 0,
            "limits": {},
            "window": None,
        }
    )


def test_a_job_keeps_its_user_data_only_until_its_last_server_has_started(redis_server: RedisServer) -> None:
    """An outside test: a job's cloud-init text, password and all, stayed in Redis for the seven days of the
    job record's retention, though the README said it was kept until the last server had started."""
    from workers.user_data import fingerprint

    store = JobStore(redis_server.client(), prefix=f"fr-ud{uuid.uuid4().hex[:6]}")
    started: list[Any] = []

    def submit(**kw: Any) -> dict[str, Any]:
        started.append(kw)
        return {"run_id": f"run-{kw['server']}"}

    runner = FleetRunner(store, None, submit, lambda run_id, by: None)  # type: ignore[arg-type]
    _rebuild_job(store, "ud1", [1, 2], window=1)
    runner.advance("ud1")
    assert [kw["params"]["user_data"] for kw in started] == [SECRET_USER_DATA]
    assert (store.get("ud1") or {})["params"]["user_data"] == SECRET_USER_DATA, "server 2 is still to start"
    store.set_outcome("ud1", 1, outcome="succeeded")
    runner.advance("ud1")
    assert [kw["params"]["user_data"] for kw in started] == [SECRET_USER_DATA] * 2
    kept = store.get("ud1") or {}
    assert kept["params"]["user_data"] == kept["spec"]["params"]["user_data"] == fingerprint(SECRET_USER_DATA)
    assert kept["user_data_forgotten"] is True
    assert b"hunter2" not in b"".join(store.redis.hvals(store.key("ud1")))

    _rebuild_job(store, "ud2", [1, 2], window=1)  # a job cancelled before its last server started
    runner.advance("ud2")
    runner.cancel("ud2")
    assert b"hunter2" not in b"".join(store.redis.hvals(store.key("ud2")))


def test_a_retry_takes_the_jobs_user_data_again_and_nothing_else(
    redis_server: RedisServer, monkeypatch: Any
) -> None:
    """Once the job keeps only the fingerprint, a retry would have rebuilt with the fingerprint as cloud-init:
    it asks for the text and checks it is the job's."""
    store = JobStore(redis_server.client(), prefix=f"fr-udr{uuid.uuid4().hex[:6]}")
    runner = FleetRunner(store, None, lambda **kw: {"run_id": "r"}, lambda run_id, by: None)  # type: ignore[arg-type]
    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(runner, "start", lambda **kw: asked.append(kw) or {"id": "new1"})
    _rebuild_job(store, "ur1", [1, 2], window=2)
    for sid, outcome in ((1, "succeeded"), (2, "failed")):
        store.set_outcome("ur1", sid, outcome=outcome, run_id=f"run-{sid}")
    store.set_state("ur1", "completed_with_failures")
    store.forget_user_data("ur1")
    store.forget_user_data("ur1")  # each advance of an ended job may ask again: the fingerprint stays
    with pytest.raises(BadInput, match=r"kept only the fingerprint of its user data \(sha256:") as no_text:
        runner.retry("ur1")
    assert no_text.value.field == "user_data"
    with pytest.raises(BadInput, match="is not job ur1's"):
        runner.retry("ur1", user_data=SECRET_USER_DATA + "x")
    with pytest.raises(BadInput, match="as text"):
        runner.retry("ur1", user_data=["#cloud-config"])
    assert asked == [], "nothing started on a refusal"
    runner.retry("ur1", user_data=SECRET_USER_DATA)
    assert asked[0]["servers"] == [2] and asked[0]["params"]["user_data"] == SECRET_USER_DATA

    job(store, "ur2", [1])  # no user data: none may be given
    store.set_outcome("ur2", 1, outcome="failed")
    store.set_state("ur2", "failed")
    meta = json.loads(store.redis.hget(store.key("ur2"), "meta") or "{}")
    store.redis.hset(store.key("ur2"), "meta", json.dumps({**meta, "spec": {"workflow": "reboot"}}))
    with pytest.raises(BadInput, match="had no user data"):
        runner.retry("ur2", user_data="#cloud-config")


def test_a_retry_leaves_servers_an_earlier_retry_took_and_two_never_run_at_once(
    redis_server: RedisServer, monkeypatch: Any
) -> None:
    """An outside test: two `job retry` at once both started a job (the second's servers all skipped as busy),
    and a later retry ran again the servers the first retry had put right (a job keeps its own outcomes). A
    reviewer: refusing every second retry left a job's not-started servers impossible to retry after a
    --failed one."""
    store = JobStore(redis_server.client(), prefix=f"fr-rr{uuid.uuid4().hex[:6]}")
    runner = FleetRunner(store, None, lambda **kw: {"run_id": "r"}, lambda run_id, by: None)  # type: ignore[arg-type]
    started: list[dict[str, Any]] = []

    def start(**kw: Any) -> dict[str, Any]:
        started.append(kw)
        new = f"new{len(started)}"
        job(store, new, kw["servers"])  # the retry job's record, as start makes it
        return {"id": new}

    monkeypatch.setattr(runner, "start", start)
    job(store, "rr1", [1, 2, 3])
    meta = json.loads(store.redis.hget(store.key("rr1"), "meta") or "{}")
    store.redis.hset(store.key("rr1"), "meta", json.dumps({**meta, "spec": {"workflow": "reboot"}}))
    for sid, outcome in ((1, "failed"), (2, "not_started"), (3, "succeeded")):
        store.set_outcome("rr1", sid, outcome=outcome)
    store.set_state("rr1", "completed_with_failures")
    with store.retrying("rr1") as took:
        assert took
        with pytest.raises(BadInput, match="is being retried right now"):
            runner.retry("rr1")
    assert started == []
    assert runner.retry("rr1")["id"] == "new1" and started[0]["servers"] == [1]
    with pytest.raises(BadInput, match="ended failed or refused were retried already, by job new1"):
        runner.retry("rr1")
    assert runner.retry("rr1", failed=False, not_started=True)["id"] == "new2" and started[1]["servers"] == [
        2
    ]
    with pytest.raises(BadInput, match="by job new1, new2"):
        runner.retry("rr1", failed=True, not_started=True)
    assert len(started) == 2

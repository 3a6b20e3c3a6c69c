"""What waiting costs: hcloud-flow's monitor against the official client's own wait, on the same fleet.

Each of N servers runs shutdown → create_image → power_on. hcloud-flow runs it three times: as raw Celery
chains of action tasks, and as a ``snapshot`` fleet job (every server at once, validation and state checks
included) on a fresh install and on one whose monitor has learned the actions' durations from an earlier
job, through real workers and one Redis; the baseline is the official ``hcloud`` package, one thread
per server, waiting with its defaults (``wait_until_finished``: ``GET /actions/{id}`` every second) and
polling the server every second until it is off, as the hcloud CLI's ``shutdown --wait`` does. All run
against the same fakecloud (its own process, speed 1, rate limit raised so none is throttled) with the
action durations below.

    python bench/polling.py [--sizes 25,100,400] [--json] [--routes] [--env HCLOUD_FLOW_NAME=VALUE]
                            [--durations shutdown=5.3,create_image=20.4,poweron=4.6]

``--durations`` replaces fakecloud's defaults for the run: the real API's actions do not end on whole
seconds, as fakecloud's defaults do, where the baseline's one-second polls land just after each end.
``--routes`` also prints, per system, how many requests went to each API route, and where the wall time went
(to the first POST, the spread of the first POSTs, the last action's end, and after it).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness import FakeCloudProcess, emit, median, percentile

from tests.support.processes import RedisServer, Worker, client_app, worker_env

TOKEN = "bench-token-polling"
# fakecloud's own default durations (fakecloud/transitions.py).
DURATIONS = {"shutdown": 5.0, "create_image": 20.0, "poweron": 4.0}
STEPS = ("shutdown", "create_image", "power_on")
# Requests per API route of the last measured run (printed with --routes).
LAST_ROUTES: dict[str, int] = {}
LAST_TIMELINE: dict[str, float] = {}
# Servers of the small job that teaches a fresh install the durations before the "learned" fleet job.
LEARNING_JOB = 5


def _fleet(cloud: FakeCloudProcess, n: int) -> list[int]:
    cloud.control("POST", "/reset", {"servers": n, "seed": 1})
    cloud.control("PUT", "/config", {"durations": DURATIONS, "faults": "none"})
    ids: list[int] = []
    page: int | None = 1
    while page:
        r = cloud.http.get(
            cloud.base_url + "/servers",
            params={"page": page, "per_page": 50},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        ).json()
        ids += [s["id"] for s in r["servers"]]
        page = r["meta"]["pagination"]["next_page"]
    for sid in ids:
        cloud.control("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
    return ids


def _window(cloud: FakeCloudProcess) -> int:
    return int(cloud.control("GET", "/stats")["total"])


def _delays(cloud: FakeCloudProcess, since_seq: int) -> list[float]:
    """Return, per step boundary, seconds from an action's end to the next step's POST on that server."""
    log = cloud.control("GET", "/requests", since=since_seq)["requests"]
    actions = {a["id"]: a for a in cloud.control("GET", "/actions")["actions"]}
    posts: dict[int, list[dict[str, Any]]] = {}
    for r in log:
        if r["method"] == "POST" and r["status"] == 201:
            posts.setdefault(r["server_id"], []).append(r)
    delays = []
    for seq in posts.values():
        seq.sort(key=lambda r: r["time"])
        for prev, nxt in itertools.pairwise(seq):
            finished = actions[prev["action_id"]]["finished_at"]
            if finished is not None:
                delays.append(nxt["time"] - finished)
    return delays


# Worker settings given with --env (KEY=VALUE), over the bench's own: to measure a setting's effect.
WORKER_SETTINGS: dict[str, str] = {}


@contextlib.contextmanager
def _hcloud_flow(cloud: FakeCloudProcess, name: str, workdir: Path, worker_count: int) -> Iterator[Any]:
    """Run a private redis-server and hcloud-flow workers against ``cloud``; yield a client app."""
    redis_server = RedisServer(workdir / f"redis-{name}")
    env = worker_env(
        redis_server.url,
        cloud.base_url,
        HCLOUD_TOKEN=TOKEN,
        HCLOUD_FLOW_POLL_FIRST="1.0",
        HCLOUD_FLOW_POLL_CAP="10",
        HCLOUD_FLOW_VISIBILITY_TIMEOUT="600",
        **WORKER_SETTINGS,
    )
    workers = [Worker(f"{name}-{k}", env, workdir, concurrency=8) for k in range(worker_count)]
    app = client_app(redis_server.url)
    try:
        yield app, redis_server.client()
    finally:
        app.close()
        for worker in workers:
            worker.stop()
        redis_server.stop()


def _timeline(cloud: FakeCloudProcess, since_seq: int, start: float, end: float) -> dict[str, float]:
    """Return where a run's wall time went, in fakecloud's clock: before, between and after the actions."""
    log = cloud.control("GET", "/requests", since=since_seq)["requests"]
    posts = [r for r in log if r["method"] == "POST" and r["status"] == 201]
    if not posts:
        return {}
    actions = {a["id"]: a for a in cloud.control("GET", "/actions")["actions"]}
    firsts: dict[int, float] = {}
    for r in posts:
        firsts.setdefault(r["server_id"], r["time"])
    ends = [actions[r["action_id"]]["finished_at"] or end for r in posts]
    return {
        "to_first_post": round(min(firsts.values()) - start, 2),
        "first_posts_spread": round(max(firsts.values()) - min(firsts.values()), 2),
        "last_action_end": round(max(ends) - start, 2),
        "after_last_end": round(end - max(ends), 2),
    }


def _measure(
    cloud: FakeCloudProcess, rc: Any, run: Callable[[], None]
) -> tuple[float, int, int, list[float]]:
    """Run ``run`` and return its wall time, API requests, broker pushes and end-to-next-POST delays."""
    pushes_before = _pushes(rc) if rc is not None else 0
    seq0 = cloud.control("GET", "/requests", since=0)["next"]
    api0 = _window(cloud)
    counts = _route_counts(cloud)
    start = cloud.control("GET", "/config")["now"]
    t0 = time.monotonic()
    run()
    wall = time.monotonic() - t0
    end = cloud.control("GET", "/config")["now"]
    LAST_ROUTES.clear()
    LAST_ROUTES.update(_routes(counts, _route_counts(cloud)))
    LAST_TIMELINE.clear()
    LAST_TIMELINE.update(_timeline(cloud, seq0, start, end))
    pushes = _pushes(rc) - pushes_before if rc is not None else 0
    return wall, _window(cloud) - api0, pushes, _delays(cloud, seq0)


def run_ours(cloud: FakeCloudProcess, n: int, workdir: Path, worker_count: int) -> dict[str, Any]:
    from celery import chain, signature

    ids = _fleet(cloud, n)
    with _hcloud_flow(cloud, f"bench{n}", workdir, worker_count) as (app, rc):

        def chains() -> None:
            results = [
                chain(
                    *(
                        signature(f"hcloud_flow.{s}", args=(sid,) if i == 0 else (), app=app)
                        for i, s in enumerate(STEPS)
                    )
                ).apply_async()
                for sid in ids
            ]
            for r in results:
                assert r.get(timeout=600)["status"] == "success"

        wall, api, pushes, delays = _measure(cloud, rc, chains)
    return _row("hcloud-flow", n, wall, api, pushes / (n * len(STEPS)), delays)


def run_fleet(
    cloud: FakeCloudProcess, n: int, workdir: Path, worker_count: int, *, learned: bool = False
) -> dict[str, Any]:
    """Run one ``snapshot`` fleet job over ``n`` servers; with ``learned``, after a first small job taught
    the monitor the actions' durations, as any earlier job on the same Redis has (they are kept there)."""
    from workflows.api import Jobs
    from workflows.fleet import JobStore

    name = f"fleet{n}{'-learned' if learned else ''}"
    with _hcloud_flow(cloud, name, workdir, worker_count) as (app, rc):

        def job(ids: list[int]) -> None:
            jobs = Jobs(app, JobStore(rc))
            started = jobs.start(
                "snapshot", servers=ids, max_concurrency="100%", max_errors="100%", timeout=600
            )
            # Read often (Redis only): the wall should end when the job does, not at the next look.
            done = jobs.wait(started["id"], timeout=1800, poll=0.05)
            assert done["state"] == "succeeded", done["state"]

        # One fleet for both jobs: fakecloud numbers actions afresh after a reset, and this Redis remembers
        # the first job's. The learning job takes servers past the measured ones (listed last).
        ids = _fleet(cloud, n + (LEARNING_JOB if learned else 0))
        if learned:
            job(ids[n:])
        wall, api, pushes, delays = _measure(cloud, rc, lambda: job(ids[:n]))
    # The snapshot workflow powers on only the servers that were running: all of them here.
    system = "hcloud-flow fleet job, durations learned" if learned else "hcloud-flow fleet job"
    return _row(system, n, wall, api, pushes / (n * len(STEPS)), delays)


def _route_counts(cloud: FakeCloudProcess) -> dict[str, int]:
    stats = cloud.control("GET", "/stats")
    out: dict[str, int] = {}
    for r in stats["requests"]:
        key = f"{r['method']} {r['route']}"
        out[key] = out.get(key, 0) + int(r["count"])
    return out


def _routes(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Return the requests per API route between two counts (from fakecloud's stats, which keep every one)."""
    spent = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))


def _pushes(rc: Any) -> int:
    stats = rc.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("lpush", "rpush"))


def run_baseline(cloud: FakeCloudProcess, n: int) -> dict[str, Any]:
    from hcloud import Client
    from hcloud.servers.domain import Server

    ids = _fleet(cloud, n)
    client = Client(token=TOKEN, api_endpoint=cloud.base_url)  # poll_interval=1.0, poll_max_retries=120

    def one(sid: int) -> None:
        server = Server(id=sid)
        client.servers.shutdown(server).wait_until_finished()
        while client.servers.get_by_id(sid).status != "off":
            time.sleep(1.0)
        client.servers.create_image(server, description="bench").action.wait_until_finished()
        client.servers.power_on(server).wait_until_finished()

    def threads() -> None:
        with cf.ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(one, ids))

    wall, api, _, delays = _measure(cloud, None, threads)
    return _row("hcloud-python (baseline)", n, wall, api, float("nan"), delays)


def _row(system: str, n: int, wall: float, api: int, msgs: float, delays: list[float]) -> dict[str, Any]:
    actions = n * len(STEPS)
    return {
        "servers": n,
        "system": system,
        "wall_s": round(wall, 2),
        "api_requests": api,
        "requests_per_action": round(api / actions, 3),
        "broker_msgs_per_step": round(msgs, 3) if msgs == msgs else "n/a (no broker)",
        "end_to_next_post_median_s": round(median(delays), 3),
        "end_to_next_post_p95_s": round(percentile(delays, 95), 3),
        # Where the wall goes beyond the actions' own time (from the run just measured): the first POSTs
        # spread over this many seconds, and the run was over this long after its last action ended.
        "first_posts_spread_s": LAST_TIMELINE.get("first_posts_spread", float("nan")),
        "after_last_end_s": LAST_TIMELINE.get("after_last_end", float("nan")),
    }


COLUMNS = [
    ("servers", "N"),
    ("system", "system"),
    ("wall_s", "wall s"),
    ("api_requests", "API requests"),
    ("requests_per_action", "requests / action"),
    ("broker_msgs_per_step", "broker msgs / step"),
    ("end_to_next_post_median_s", "end→next POST median s"),
    ("end_to_next_post_p95_s", "p95 s"),
    ("first_posts_spread_s", "first POSTs spread s"),
    ("after_last_end_s", "after last end s"),
    ("baseline_requests_per_action_over_ours", "baseline ÷ ours (requests)"),
    ("wall_over_baseline", "wall ÷ baseline"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="25,100,400", help="fleet sizes, comma-separated (default 25,100,400)"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes for hcloud-flow (default 2)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--routes", action="store_true", help="print the requests per API route of each run")
    parser.add_argument(
        "--only",
        default="chains,fleet,learned,baseline",
        help="which systems to run (default chains,fleet,learned,baseline)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a worker setting for hcloud-flow's runs, e.g. HCLOUD_FLOW_MONITOR_GAP=0.1 (repeatable)",
    )
    parser.add_argument(
        "--durations",
        default=None,
        metavar="NAME=SECONDS,...",
        help="fakecloud action durations instead of its own, e.g. shutdown=5.3,create_image=20.4,poweron=4.6",
    )
    args = parser.parse_args()
    for item in (args.durations or "").split(",") if args.durations else []:
        key, sep, value = item.partition("=")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or key not in DURATIONS or not 0 <= seconds < 3600:
            parser.error(f"--durations takes {'|'.join(DURATIONS)}=SECONDS items, not {item!r}")
        DURATIONS[key] = seconds
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("HCLOUD_FLOW_"):
            parser.error(f"--env takes HCLOUD_FLOW_NAME=VALUE, not {item!r}")
        WORKER_SETTINGS[key] = value
    only = set(args.only.split(","))
    sizes = [int(s) for s in args.sizes.split(",")]
    cloud = FakeCloudProcess("--servers", "0", "--speed", "1", "--rate-limit", "100000000", token=TOKEN)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in sizes:
                systems = {
                    "chains": lambda n=n: run_ours(cloud, n, Path(tmp), args.workers),
                    "fleet": lambda n=n: run_fleet(cloud, n, Path(tmp), args.workers),
                    "learned": lambda n=n: run_fleet(cloud, n, Path(tmp), args.workers, learned=True),
                    "baseline": lambda n=n: run_baseline(cloud, n),
                }
                measured = []
                for name, run in systems.items():
                    if name not in only:
                        continue
                    row = run()
                    if args.routes:
                        print(f"{row['system']} N={n}: {dict(LAST_ROUTES)}", flush=True)
                        print(f"{row['system']} N={n} timeline: {dict(LAST_TIMELINE)}", flush=True)
                    measured.append(row)
                base = measured[-1] if "baseline" in only else None
                for row in measured:
                    if base is not None and row is not base:
                        row["baseline_requests_per_action_over_ours"] = round(
                            base["requests_per_action"] / row["requests_per_action"], 2
                        )
                        row["wall_over_baseline"] = round(row["wall_s"] / base["wall_s"], 2)
                rows += measured
    finally:
        cloud.stop()
    title = (
        f"Waiting cost, shutdown → create_image → power_on per server; fakecloud speed 1, durations "
        f"{', '.join(f'{k} {v:g} s' for k, v in DURATIONS.items())}"
    )
    emit(rows, COLUMNS, args.json, title)


if __name__ == "__main__":
    main()

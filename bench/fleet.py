"""A 200-server fleet job on a spent budget: wall time against the bound the rate budget sets, zero 429s.

fakecloud runs the API's default limit (3600 requests an hour) at ``--speed`` S, so it refills S requests a
second. The bench first spends the project's budget down to nothing with plain GETs (as other tools on the
project would), then runs a ``snapshot`` fleet job over every server. Every request of the job must wait for
refill, so no schedule can finish faster than requests ÷ refill rate: that is the lower bound printed beside
the wall time. The job must meet no 429.

    python bench/fleet.py [--servers 200] [--speed 20] [--concurrency 50] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import FakeCloudProcess, emit

from tests.support.cloud import drain
from tests.support.processes import RedisServer, Worker, client_app, worker_env

TOKEN = "bench-token-fleet"


def run(servers: int, speed: float, concurrency: int, workdir: Path, verbose: bool = False) -> dict[str, Any]:

    from workflows.api import Jobs
    from workflows.fleet import JobStore

    cloud = FakeCloudProcess(
        "--servers", str(servers), "--speed", str(speed), "--rate-limit", "3600", token=TOKEN
    )
    redis_server = RedisServer(workdir / "redis")
    env = worker_env(
        redis_server.url,
        cloud.base_url,
        HCLOUD_TOKEN=TOKEN,
        HCLOUD_FLOW_RATE_REFILL=str(speed),
        HCLOUD_FLOW_VISIBILITY_TIMEOUT="600",
    )
    worker = Worker("fleetbench", env, workdir, concurrency=8)
    app = client_app(redis_server.url)
    try:
        cloud.control("PUT", "/config", {"faults": "none"})
        ids = [s for s in cloud.control("POST", "/reset", {"servers": servers, "seed": 3})["servers"]]
        for sid in ids:
            cloud.control("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
        left = drain(cloud.base_url, leave=5, token=TOKEN)
        before = cloud.control("GET", "/stats")
        jobs = Jobs(app, JobStore(redis_server.client()))
        t0 = time.monotonic()
        job = jobs.start(
            "snapshot", servers=ids, max_concurrency=str(concurrency), max_errors="0", timeout=600
        )
        done = jobs.wait(job["id"], timeout=3600, poll=1.0)
        wall = time.monotonic() - t0
        after = cloud.control("GET", "/stats")
    finally:
        app.close()
        worker.stop()
        redis_server.stop()
        cloud.stop()
    spent = after["total"] - before["total"]
    reserve = 0.1 * 3600  # the bulk reserve fleet jobs leave for interactive runs (RateBudget.bulk_reserve)
    if verbose:
        old = {(r["method"], r["route"], r["status"]): r["count"] for r in before["requests"]}
        for r in after["requests"]:
            n = r["count"] - old.get((r["method"], r["route"], r["status"]), 0)
            if n:
                print(f"  {n:6d}  {r['method']} {r['route']} {r['status']}")
    # Fleet runs spend as "bulk" and never dip into the reserve, so they wait for refill past it too.
    bound = max(0.0, spent - left + reserve) / speed
    return {
        "servers": servers,
        "state": done["state"],
        "succeeded": done["counts"].get("succeeded", 0),
        "api_requests": spent,
        "requests_per_server": round(spent / servers, 2),
        "http_429": after["rate_limited"] - before["rate_limited"],
        "budget_left_at_start": left,
        "refill_per_s": speed,
        "lower_bound_s": round(bound, 1),
        "wall_s": round(wall, 1),
        "wall_over_bound": round(wall / bound, 2) if bound else float("nan"),
    }


COLUMNS = [
    ("servers", "servers"),
    ("state", "job"),
    ("succeeded", "succeeded"),
    ("api_requests", "API requests"),
    ("requests_per_server", "requests / server"),
    ("http_429", "429s"),
    ("refill_per_s", "refill / s"),
    ("lower_bound_s", "rate-budget bound s (incl. 360 reserved)"),
    ("wall_s", "wall s"),
    ("wall_over_bound", "wall ÷ bound"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--speed", type=float, default=20.0, help="fakecloud speed = refill per second")
    parser.add_argument("--concurrency", type=int, default=50, help="the job's --max-concurrency")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--routes", action="store_true", help="also print the job's requests by route")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        row = run(args.servers, args.speed, args.concurrency, Path(tmp), args.routes)
    emit(
        [row],
        COLUMNS,
        args.json,
        f"Fleet job: snapshot on {args.servers} servers, --max-concurrency {args.concurrency},"
        f" fakecloud limit 3600/h at speed {args.speed:g}, budget spent beforehand",
    )


if __name__ == "__main__":
    main()

"""The engine's ceiling: steps per second through hcloud-flow with zero-duration actions, against a bare
Celery chain of no-op tasks on the same worker settings (threads pool, 8 threads, acks_late, prefetch 1,
Redis broker and results), measured in the same run.

Each hcloud-flow step is a real action task: it posts to fakecloud (all durations 0), parks with the
monitor, and is continued by it. The difference to the bare chain is the price of waiting without holding a
worker slot: the POST, the ledger, the park, and one monitor poll round.

    python bench/throughput.py [--chains 50] [--steps 4] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import ROOT, FakeCloudProcess, emit

from tests.support.processes import RedisServer, Worker, client_app, worker_env

TOKEN = "bench-token-throughput"
ZERO = "poweron=0,poweroff=0,reboot=0,reset=0,shutdown=0,reset_password=0,enable_rescue=0,disable_rescue=0"


def run_chains(app: Any, name: str, ids: list[int], steps: int) -> float:
    from celery import chain, signature

    t0 = time.monotonic()
    results = [
        chain(*(signature(name, args=(sid,) if i == 0 else (), app=app) for i in range(steps))).apply_async()
        for sid in ids
    ]
    for r in results:
        r.get(timeout=600)
    return time.monotonic() - t0


def measure(chains: int, steps: int, workdir: Path) -> list[dict[str, Any]]:
    cloud = FakeCloudProcess(
        "--servers", str(chains), "--rate-limit", "100000000", "--durations", ZERO, token=TOKEN
    )
    rows = []
    try:
        ids = cloud.control("POST", "/reset", {"servers": chains})["servers"]
        for sid in ids:
            cloud.control("PATCH", f"/servers/{sid}", {"status": "running"})
        for system, module, task in (
            ("bare Celery chain of no-op tasks", "bench.noop_app", "bench.noop"),
            ("hcloud-flow action steps (reset, 0 s)", "workers.app", "hcloud_flow.reset"),
        ):
            redis_server = RedisServer(workdir / f"redis-{module}")
            env = worker_env(
                redis_server.url,
                cloud.base_url,
                HCLOUD_TOKEN=TOKEN,
                HCLOUD_FLOW_POLL_FIRST="1.0",
                HCLOUD_FLOW_POLL_CAP="10",
                HCLOUD_FLOW_VISIBILITY_TIMEOUT="600",
            )
            env["PYTHONPATH"] = str(ROOT)
            worker = Worker(f"tp-{module}", env, workdir, concurrency=8, app=module)
            app = client_app(redis_server.url)
            try:
                run_chains(app, task, ids[:2], 2)  # warm up connections and learned durations
                wall = run_chains(app, task, ids, steps)
            finally:
                app.close()
                worker.stop()
                redis_server.stop()
            rows.append(
                {
                    "system": system,
                    "chains": chains,
                    "steps": chains * steps,
                    "wall_s": round(wall, 2),
                    "steps_per_s": round(chains * steps / wall, 1),
                }
            )
    finally:
        cloud.stop()
    base = rows[0]["steps_per_s"]
    for row in rows:
        row["vs_bare"] = round(row["steps_per_s"] / base, 3)
    return rows


COLUMNS = [
    ("system", "system"),
    ("chains", "chains"),
    ("steps", "steps"),
    ("wall_s", "wall s"),
    ("steps_per_s", "steps / s"),
    ("vs_bare", "÷ bare chain"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chains", type=int, default=50)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args.chains, args.steps, Path(tmp))
    emit(
        rows,
        COLUMNS,
        args.json,
        f"Engine throughput: {args.chains} chains of {args.steps} steps, one worker "
        "(threads pool, 8 threads), same settings for both",
    )


if __name__ == "__main__":
    main()

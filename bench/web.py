"""The web service's cost: submit latency over HTTP, and reads per second with 1,000 runs in Redis, each
against the path the CLI takes in the same run (the Python API the CLI calls, in process).

- submit: `POST /api/v1/runs` (a `power-on` of an idle server) through `hcloud-flow web`, one after another,
  against `Runs.submit_full`, which `hcloud-flow run` calls: both wait for a worker's `hcloud_flow.submit`
  answer, so the difference is HTTP, auth, idempotency bookkeeping and validation in the web process.
- reads: `GET /api/v1/runs?limit=50` and `GET /api/v1/runs/{id}` from 8 keep-alive clients for a few
  seconds, against `Runs.list(limit=50)` and `Runs.status` in 8 threads of this process.

    python bench/web.py [--runs 1000] [--submits 60] [--seconds 4] [--json]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from harness import FakeCloudProcess, emit, median, percentile

from tests.support.processes import RedisServer, WebServer, Worker, client_app, run_cli, worker_env

TOKEN = "bench-token-web"


def seed_runs(store: Any, n: int) -> list[str]:
    """Write ``n`` ended runs of a realistic shape (three steps with outputs) straight into the run store."""
    ids = []
    now = time.time()
    for i in range(n):
        rid = uuid.uuid4().hex[:16]
        steps = [
            {"index": k, "name": name, "action": name, "task_id": f"{rid}-{k}", "restore": []}
            for k, name in enumerate(("shutdown", "create_image", "power_on"))
        ]
        meta = {"id": rid, "workflow": "snapshot", "server_id": 1000 + i % 200,
                "server_name": f"srv-{i % 200}", "server_status_before": "running",
                "params": {"description": "bench"}, "steps": steps, "lock_ttl": 600.0, "job_id": None,
                "submitted_by": "bench", "warnings": []}  # fmt: skip
        store.create(meta)
        for k in range(3):
            store.update_step(
                rid, k, status="succeeded", started=now, finished=now, action_id=10_000 + 3 * i + k
            )
        store.set_state(rid, "succeeded", started=now, finished=now)
        ids.append(rid)
    return ids


def timed(call: Any, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - t0)
    return out


def rate(call: Any, seconds: float, threads: int = 8) -> float:
    stop = time.monotonic() + seconds
    done = [0] * threads

    def loop(slot: int) -> None:
        local = threading.local()
        while time.monotonic() < stop:
            call(local)
            done[slot] += 1

    with cf.ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, range(threads)))
    return sum(done) / seconds


def measure(runs: int, submits: int, seconds: float, workdir: Path) -> list[dict[str, Any]]:
    from workers.run_store import RunStore
    from workflows.api import Runs

    servers = 2 * submits + 2
    cloud = FakeCloudProcess(
        "--servers", str(servers), "--rate-limit", "100000000", "--speed", "50", token=TOKEN
    )
    redis_server = RedisServer(workdir / "redis")
    env = worker_env(redis_server.url, cloud.base_url, HCLOUD_TOKEN=TOKEN, HCLOUD_FLOW_RATE_REFILL="100000")
    worker = Worker("bench-web", env, workdir, concurrency=8)
    keys_file = workdir / "keys.json"
    key = run_cli(
        "apikey", "add", "bench", "--role", "operator", env={"HCLOUD_FLOW_API_KEYS_FILE": str(keys_file)}
    )
    web = WebServer(redis_server.url, keys_file, workdir)
    app = client_app(redis_server.url)
    store = RunStore(redis_server.client())
    api = Runs(app, store)
    rows: list[dict[str, Any]] = []
    try:
        ids = cloud.control("POST", "/reset", {"servers": servers})["servers"]
        for sid in ids:
            cloud.control("PATCH", f"/servers/{sid}", {"status": "off"})
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {key.stdout.strip()}"
        api.submit_full("power-on", server=ids[-1], timeout=60)  # warm up the worker's connections
        http.post(web.url + "/api/v1/runs", json={"workflow": "power-on", "server": ids[-2]}, timeout=60)

        cli = timed(lambda i: api.submit_full("power-on", server=ids[i], timeout=60), submits)
        over_http = timed(
            lambda i: http.post(
                web.url + "/api/v1/runs",
                json={"workflow": "power-on", "server": ids[submits + i]},
                timeout=60,
            ).raise_for_status(),
            submits,
        )
        for name, values in (("Python API submit (the CLI's path)", cli), ("POST /api/v1/runs", over_http)):
            rows.append({"measure": name, "n": submits, "p50_ms": round(median(values) * 1000, 1),
                         "p95_ms": round(percentile(values, 95) * 1000, 1), "per_s": "-",
                         "ratio": round(median(values) / median(cli), 2)})  # fmt: skip

        seeded = seed_runs(store, runs)

        def session(local: Any) -> requests.Session:
            if not hasattr(local, "http"):
                local.http = requests.Session()
                local.http.headers.update(http.headers)
            return local.http  # type: ignore[no-any-return]

        pick = iter(range(10**9))
        base_list = rate(lambda local: api.list(limit=50), seconds)
        web_list = rate(
            lambda local: (
                session(local).get(web.url + "/api/v1/runs?limit=50", timeout=30).raise_for_status()
            ),
            seconds,
        )
        base_one = rate(lambda local: api.status(seeded[next(pick) % runs]), seconds)
        web_one = rate(
            lambda local: (
                session(local)
                .get(f"{web.url}/api/v1/runs/{seeded[next(pick) % runs]}", timeout=30)
                .raise_for_status()
            ),
            seconds,
        )
        for name, value, base in (
            ("Runs.list(limit=50), in process", base_list, base_list),
            ("GET /api/v1/runs?limit=50", web_list, base_list),
            ("Runs.status(id), in process", base_one, base_one),
            ("GET /api/v1/runs/{id}", web_one, base_one),
        ):
            rows.append({"measure": name, "n": runs, "p50_ms": "-", "p95_ms": "-", "per_s": round(value, 1),
                         "ratio": round(value / base, 2)})  # fmt: skip
    finally:
        app.close()
        web.stop()
        worker.stop()
        redis_server.stop()
        cloud.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000, help="runs in Redis for the reads")
    parser.add_argument("--submits", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each read measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args.runs, args.submits, args.seconds, Path(tmp))
    columns = [("measure", "measure"), ("n", "runs or submits"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"),
               ("per_s", "per second"), ("ratio", "ratio to the CLI's path")]  # fmt: skip
    emit(rows, columns, args.json, "The web service against the CLI's path")


if __name__ == "__main__":
    main()

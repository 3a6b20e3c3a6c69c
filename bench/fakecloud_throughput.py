"""How many requests a second fakecloud serves to keep-alive clients.

Starts ``python -m fakecloud --port 0`` as a subprocess (so the clients do not share its GIL), raises the rate
limit so nothing throttles, then runs two loads for ``--seconds`` each from ``--threads`` client threads, one
``requests.Session`` per thread:

* ``GET /actions/{id}``: the monitor's poll, on actions created beforehand;
* ``POST /servers/{id}/actions/reset``: on many servers, zero duration so no server is ever locked;

beside a baseline measured in the same run: the standard library's HTTP server answering a fixed JSON body
(``bench/bare_http.py``), the ceiling of the stack fakecloud is built on with this client.

Only 2xx answers count. Prints a table (or JSON with ``--json``).

    python bench/fakecloud_throughput.py [--threads 4] [--seconds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

TOKEN = "bench-token"


def start_fakecloud(servers: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fakecloud",
            "--port",
            "0",
            "--servers",
            str(servers),
            "--token",
            TOKEN,
            "--rate-limit",
            "1000000000",
            "--durations",
            "reset=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    base_url = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if not base_url.startswith("http"):
        proc.kill()
        raise SystemExit(f"fakecloud did not print its URL (got {base_url!r})")
    return proc, base_url


def run_load(
    threads: int, seconds: float, make_request: Callable[[requests.Session, int, int], requests.Response]
) -> dict[str, float]:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start_gate = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        # Skip the per-request scan of proxy variables: it costs more client CPU than the server's work.
        session.trust_env = False
        make_request(session, index, 0)  # open the keep-alive connection before the clock starts
        start_gate.wait()
        n = 0
        while time.perf_counter() < deadline[0]:
            t0 = time.perf_counter()
            response = make_request(session, index, n)
            elapsed = time.perf_counter() - t0
            n += 1
            if 200 <= response.status_code < 300:
                latencies[index].append(elapsed)
            else:
                errors[index] += 1
        session.close()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    started = time.perf_counter()
    start_gate.wait()
    for t in pool:
        t.join()
    wall = time.perf_counter() - started
    flat = sorted(x for lst in latencies for x in lst)
    quantiles = statistics.quantiles(flat, n=100) if len(flat) > 1 else [0.0] * 99
    return {
        "requests": len(flat),
        "non_2xx": sum(errors),
        "seconds": round(wall, 2),
        "req_per_s": round(len(flat) / wall, 1),
        "p50_ms": round(quantiles[49] * 1000, 2),
        "p95_ms": round(quantiles[94] * 1000, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per load (default 5)")
    parser.add_argument("--servers", type=int, default=200, help="servers to seed (default 200)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    bare = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("bare_http.py"))],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    bare_url = bare.stdout.readline().strip()  # type: ignore[union-attr]
    proc, base_url = start_fakecloud(args.servers)
    try:
        setup = requests.Session()
        setup.headers["Authorization"] = f"Bearer {TOKEN}"
        server_ids: list[int] = []
        page: int | None = 1
        while page:
            body = setup.get(f"{base_url}/servers", params={"page": page, "per_page": 50}, timeout=10).json()
            server_ids += [s["id"] for s in body["servers"]]
            page = body["meta"]["pagination"]["next_page"]
        action_ids = [
            setup.post(f"{base_url}/servers/{sid}/actions/reset", timeout=10).json()["action"]["id"]
            for sid in server_ids
        ]

        def get_action(session: requests.Session, worker: int, n: int) -> requests.Response:
            action_id = action_ids[(worker * 7919 + n) % len(action_ids)]
            return session.get(f"{base_url}/actions/{action_id}", timeout=10)

        def post_reset(session: requests.Session, worker: int, n: int) -> requests.Response:
            server_id = server_ids[(worker * 7919 + n) % len(server_ids)]
            return session.post(f"{base_url}/servers/{server_id}/actions/reset", timeout=10)

        def get_bare(session: requests.Session, worker: int, n: int) -> requests.Response:
            return session.get(f"{bare_url}/actions/1", timeout=10)

        baseline = {
            "endpoint": "baseline: bare http.server, fixed JSON",
            "threads": args.threads,
            **run_load(args.threads, args.seconds, get_bare),
        }
        rows = [
            baseline,
            {
                "endpoint": "GET /actions/{id}",
                "threads": args.threads,
                **run_load(args.threads, args.seconds, get_action),
            },
            {
                "endpoint": "POST /servers/{id}/actions/reset",
                "threads": args.threads,
                **run_load(args.threads, args.seconds, post_reset),
            },
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        bare.terminate()
        bare.wait(timeout=10)
    for row in rows:
        row["vs_baseline"] = round(row["req_per_s"] / baseline["req_per_s"], 3)

    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = [
        "endpoint",
        "threads",
        "requests",
        "non_2xx",
        "seconds",
        "req_per_s",
        "p50_ms",
        "p95_ms",
        "vs_baseline",
    ]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

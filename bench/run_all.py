"""Run every benchmark and write bench/RESULTS.md: each figure beside its baseline from the same run.

    python bench/run_all.py [--quick]

``--quick`` runs smaller sizes (a smoke test of the scripts, not figures to quote).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from harness import ROOT, table

from tests.support.processes import server_binary

HERE = Path(__file__).resolve().parent

BENCHES = [
    (
        "Waiting cost: hcloud-flow's monitor against the official client's per-action wait",
        "polling.py",
        ["--sizes", "25,100,400"],
        ["--sizes", "25"],
        "Each server runs shutdown → create_image → power_on; fakecloud at speed 1 with its default "
        "durations (shutdown 5 s, create_image 20 s, poweron 4 s), its rate limit raised so no side is "
        "throttled. hcloud-flow runs it as raw chains of action tasks and as a `snapshot` fleet job "
        "(every server at once, validation and state checks counted), on a fresh install and after a "
        "5-server job has taught the monitor the actions' durations (kept in Redis, as after any earlier "
        "job). The baseline is the official "
        "`hcloud` package waiting per action with its defaults (GET /actions/{id} every second), one "
        "thread per server, polling the server every second until it is off. Targets (issue 10): the "
        "fleet job at ≤ 1.3 API requests per action and ≥ 10x fewer than the baseline at 100 and 400 "
        "servers, end→next POST median ≤ 1.0 s and p95 ≤ 1.5 s at 100, wall ≤ the baseline's. "
        "`first_posts_spread_s` and `after_last_end_s` show where the rest of the wall goes: every step "
        "is a broker message, a few Redis round trips and a POST, on the same two cores as Redis, "
        "fakecloud and the baseline's process; the baseline's threads post at once and, with fakecloud's "
        "whole-second durations, its one-second polls land just after each end.",
    ),
    (
        "Fleet job on a spent rate budget",
        "fleet.py",
        ["--servers", "200"],
        ["--servers", "30"],
        "A 200-server `snapshot` fleet job (--max-concurrency 50) under fakecloud's default limit of "
        "3600 an hour "
        "at speed 20 (refill 20 requests a second), after the project's budget was spent down with "
        "plain GETs. "
        "The baseline is the lower bound the rate budget sets: requests ÷ refill, plus the 10% bulk reserve "
        "fleet jobs leave to interactive runs.",
    ),
    (
        "Engine throughput: zero-duration steps against a bare Celery chain",
        "throughput.py",
        ["--chains", "50", "--steps", "4"],
        ["--chains", "10", "--steps", "2"],
        "The same worker settings for both (one worker, threads pool, 8 threads, acks_late, prefetch "
        "1, Redis). "
        "The gap is the price of waiting without holding a worker slot: the POST, the ledger write, parking, "
        "and one monitor poll round (whose first poll comes at the action's learned duration,"
        " at least 0.2 s).",
    ),
    (
        "The web service against the CLI's path",
        "web.py",
        ["--runs", "1000", "--submits", "60", "--seconds", "4"],
        ["--runs", "100", "--submits", "10", "--seconds", "1"],
        "Submit latency of `POST /api/v1/runs` (uvicorn, one process) against the Python API call "
        "`hcloud-flow run` makes, one submission after another, both answered by the same worker; then "
        "reads per second from 8 keep-alive clients with 1,000 ended runs in Redis, against the same reads "
        "in 8 threads of the bench's own process (no HTTP). Target (issue 12): the figure itself; the ratio "
        "shows what HTTP, auth and JSON cost on top of the store.",
    ),
    (
        "fakecloud throughput",
        "fakecloud_throughput.py",
        ["--threads", "4", "--seconds", "5"],
        ["--threads", "4", "--seconds", "1"],
        "Keep-alive `requests` clients in 4 threads against fakecloud in its own process; the "
        "baseline is the "
        "standard library's HTTP server answering a fixed JSON body, measured in the same run.",
    ),
]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    mem = ""
    try:
        kb = int(
            next(
                line.split()[1]
                for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")
            )
        )
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    redis_v = subprocess.run([server_binary(), "--version"], capture_output=True, text=True).stdout.split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "celery": version("celery"),
        "kombu": version("kombu"),
        "redis-server": next((w.split("=", 1)[1] for w in redis_v if w.startswith("v=")), "?"),
        "hcloud (baseline)": version("hcloud"),
    }


def rows_of(output: str) -> list[dict[str, Any]]:
    data = json.loads(output[output.index("[") if output.lstrip().startswith("[") else output.index("{") :])
    return list(data["rows"] if isinstance(data, dict) else data)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes; do not quote the figures")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument(
        "--only",
        action="append",
        metavar="SCRIPT",
        help="run only this bench (repeatable) and replace its section",
    )
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sections = []
    for title, script, full, quick, about in BENCHES:
        if args.only and script not in args.only:
            continue
        argv = quick if args.quick else full
        command = f"python bench/{script} {' '.join(argv)}"
        print(f"running: {command}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(HERE / script), *argv, "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode != 0:
            raise SystemExit(f"{script} failed:\n{done.stderr[-3000:]}")
        rows = rows_of(done.stdout)
        columns = [(k, k) for k in rows[0]]
        sections.append(
            f"## {title}\n\n{about}\n\n{table(rows, columns)}\n\nReproduce: `{command}` "
            f"({time.monotonic() - t0:.0f} s here)\n"
        )
    info = machine()
    head = [
        "# Benchmark results",
        "",
        f"Written by `python bench/run_all.py{' --quick' if args.quick else ''}` on {started}."
        " Every figure stands "
        "beside a baseline measured in the same run on the same machine; compare ratios, not seconds, across "
        "machines.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
    ]
    if args.only:
        # Keep the other benches' sections as they were; replace (or add) the ones run now.
        old = Path(args.out).read_text().split("\n## ")
        kept = {part.split("\n", 1)[0]: "## " + part for part in old[1:]}
        for section in sections:
            kept[section.split("\n", 1)[0][3:]] = section
        body = "\n".join(s if s.endswith("\n") else s + "\n" for s in kept.values())
        Path(args.out).write_text(old[0].rstrip("\n") + "\n\n" + body)
    else:
        Path(args.out).write_text("\n".join(head) + "\n" + "\n".join(sections))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

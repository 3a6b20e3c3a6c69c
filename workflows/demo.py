"""``hcloud-flow demo``: snapshots and rebuilds across a simulated fleet, in one process, in under a minute.

Everything runs here: fakecloud (the API simulator), Redis (an in-process server speaking the real protocol;
never the one HCLOUD_FLOW_REDIS_URL names, whose workers would take the demo's tasks to their own API), a
worker with its monitor, and the submitting client. The
scenario shows the parts that matter in production: a guest that ignores the ACPI shutdown (the step
forces a power off after its grace period), an action that fails (the run says where and why), a refused
request (nothing enqueued), live progress, and what every run cost in API requests.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

__all__ = ["run_demo"]

TOKEN = "demo-token"  # noqa: S105 - fakecloud's; the demo never sees a real token
SPEED = 10.0
SCENARIO: list[tuple[int, str, dict[str, Any], str]] = [  # (server index, workflow, params, what it shows)
    (0, "snapshot", {"description": "before upgrade", "labels": {"purpose": "demo"}}, "graceful snapshot"),
    (1, "snapshot", {"description": "acpi-deaf guest"}, "guest ignores ACPI: forced power off"),
    (2, "snapshot", {}, "server already off: no shutdown, no power on"),
    (3, "rebuild", {"image": "ubuntu-24.04"}, "safety snapshot, then rebuild"),
    (4, "rebuild", {"image": "debian-12"}, "the rebuild action fails at the API"),
    (5, "rebuild", {"image": "ubuntu-24.04"}, "rebuild-protected: refused before anything starts"),
]


def _start_redis() -> tuple[str, Any]:
    import fakeredis

    server = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    threading.Thread(target=server.serve_forever, daemon=True, name="demo-redis").start()
    return f"redis://127.0.0.1:{server.server_address[1]}/0", server


def _prepare(cloud: Any, n: int) -> list[dict[str, Any]]:
    import requests

    control = cloud.control_url
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {TOKEN}"
    servers = api.get(cloud.base_url + "/servers", params={"per_page": 50}, timeout=10).json()["servers"][:n]
    for i, s in enumerate(servers):
        patch: dict[str, Any] = {
            "status": "off" if i == 2 else "running",
            "acpi": i != 1,
            "protection": {"rebuild": i == 5, "delete": False},
        }
        if i == 4:
            patch["fail_next"] = {"command": "rebuild", "code": "action_failed", "message": "Action failed"}
        requests.patch(f"{control}/servers/{s['id']}", json=patch, timeout=10).raise_for_status()
    return servers


def _table(rows: list[dict[str, Any]]) -> str:
    head = f"{'server':<8} {'workflow':<10} {'outcome':<10} {'secs':>5} {'actions':>7} {'API req':>7}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['server']:<8} {r['workflow']:<10} {r['outcome']:<10} {r['seconds']:>5} "
            f"{r['actions']:>7} {r['api_requests']:>7}  {r['note']}"
        )
    return "\n".join(lines)


def run_demo(*, json_out: bool = False, servers: int = 6) -> int:
    """Run the scenario; return 0 when every run ended as the scenario expects."""
    started = time.monotonic()
    if not len(SCENARIO) <= servers <= 50:  # the CLI's bounds, for a caller of this function
        raise ValueError(f"the demo needs {len(SCENARIO)} to 50 servers, not {servers}")
    redis_url, redis_server = _start_redis()

    import fakecloud

    cloud = fakecloud.start(servers=servers, token=TOKEN, speed=SPEED, seed=7, rate_limit=3600)
    # The demo process is the edge here: it configures the worker it embeds before importing it.
    os.environ.update(
        HCLOUD_TOKEN=TOKEN,
        HCLOUD_ENDPOINT=cloud.base_url,
        HCLOUD_FLOW_REDIS_URL=redis_url,
        HCLOUD_FLOW_POLL_FIRST="0.3",
        HCLOUD_FLOW_POLL_CAP="1.0",
        HCLOUD_FLOW_SHUTDOWN_GRACE="3",
        HCLOUD_FLOW_RATE_REFILL=str(SPEED),
    )
    for name in ("workers", "celery", "kombu"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from celery.contrib.testing.worker import start_worker

    from workers.app import app, start_monitor, stop_monitor
    from workers.errors import BadInput

    from .api import default
    from .progress import LiveView

    fleet = _prepare(cloud, servers)
    runs = default()
    out = sys.stderr
    rows: list[dict[str, Any]] = []
    try:
        with start_worker(
            app,
            pool="threads",
            concurrency=8,
            perform_ping_check=False,
            loglevel="ERROR",
            shutdown_timeout=30,
        ):
            start_monitor()
            print(
                f"hcloud-flow demo: {servers} simulated servers at {cloud.base_url} (speed x{SPEED:g}), "
                f"Redis at {redis_url}\n",
                file=out,
            )
            submitted: list[tuple[int, str, str, dict[str, Any]]] = []
            for index, workflow, params, note in SCENARIO:
                server = fleet[index]
                try:
                    run_id = runs.submit(workflow, server=server["name"], **params)
                    submitted.append((index, workflow, note, {"run_id": run_id}))
                    print(f"submitted {workflow:<9} on {server['name']}: run {run_id}  ({note})", file=out)
                except BadInput as exc:
                    print(f"refused   {workflow:<9} on {server['name']}: {exc}", file=out)
                    rows.append(
                        {
                            "server": server["name"],
                            "workflow": workflow,
                            "outcome": "refused",
                            "seconds": 0,
                            "actions": 0,
                            "api_requests": 0,
                            "note": note,
                            "run_id": None,
                        }
                    )
            print(file=out)
            view = LiveView(out)
            ids = [s[3]["run_id"] for s in submitted]
            while True:
                current = [runs.status(r) for r in ids]
                view.update(current)
                if all(r["state"] in ("succeeded", "failed", "cancelled") for r in current):
                    break
                if time.monotonic() - started > 55:
                    print("demo: runs still going after 55 s", file=out)
                    break
                time.sleep(0.4)
            stop_monitor()
    finally:
        log = _request_log(cloud)
        cloud.stop()
        if redis_server is not None:
            redis_server.shutdown()
            redis_server.server_close()

    by_server = Counter(r["server_id"] for r in log if r["server_id"] is not None)
    posts = Counter(r["server_id"] for r in log if r["method"] == "POST" and r["status"] == 201)
    for (index, workflow, note, sub), run in zip(submitted, current, strict=True):
        sid = fleet[index]["id"]
        secs = (run.get("finished") or time.time()) - (run.get("started") or run["created"])
        detail = note
        if run.get("error"):
            detail += f" -> {run['error']['message']}"
        rows.insert(
            index,
            {
                "server": fleet[index]["name"],
                "workflow": workflow,
                "outcome": run["state"],
                "seconds": round(secs, 1),
                "actions": posts[sid],
                "api_requests": by_server[sid],
                "note": detail,
                "run_id": sub["run_id"],
            },
        )
    shared = len(log) - sum(by_server.values())
    total_actions = sum(posts.values())
    summary = {
        "runs": rows,
        "api_requests_total": len(log),
        "batched_polls_and_lists": shared,
        "actions": total_actions,
        "seconds": round(time.monotonic() - started, 1),
    }
    expected = {0: "succeeded", 1: "succeeded", 2: "succeeded", 3: "succeeded", 4: "failed", 5: "refused"}
    ok = all(rows[i]["outcome"] == want for i, want in expected.items())
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        print("\n" + _table(rows))
        print(
            f"\n{len(log)} API requests in all for {total_actions} actions "
            f"({len(log) / max(1, total_actions):.2f} per action; the demo polls fast to stay short);"
            f" {shared} of them were batched action polls and server lists shared by every run."
            " 'API req' counts the requests that name the server."
        )
        print(
            f"demo finished in {summary['seconds']} s: "
            + ("every run ended as the scenario expects" if ok else "SOME RUN DID NOT END AS EXPECTED")
        )
    return 0 if ok else 1


def _request_log(cloud: Any) -> list[dict[str, Any]]:
    import requests

    return list(
        requests.get(cloud.control_url + "/requests", params={"since": 0}, timeout=10).json()["requests"]
    )

"""Many keep-alive clients at once: no 5xx, one token per request, counters and locks that add up."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import requests

import fakecloud
from fakecloud import ManualClock

THREADS = 8
REQUESTS = 500
ACTIONS = ("poweron", "poweroff", "reboot", "reset", "shutdown", "reset_password", "enable_rescue")


def _client(base_url: str, token: str, seed: int, out: dict[str, Any]) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    statuses: Counter[int] = Counter()
    remaining, correlation, started = [], [], []
    try:
        for _ in range(REQUESTS):
            server_id = 50_000_001 + rng.randrange(20)
            roll = rng.random()
            if roll < 0.25:
                response = session.get(f"{base_url}/servers", params={"per_page": 5, "label_selector": "env"})
            elif roll < 0.4:
                response = session.get(f"{base_url}/servers/{server_id}")
            elif roll < 0.75:
                name = rng.choice((*ACTIONS, "create_image", "rebuild"))
                body = {"image": "debian-12"} if name == "rebuild" else None
                response = session.post(f"{base_url}/servers/{server_id}/actions/{name}", json=body)
                if response.status_code == 201:
                    started.append(response.json()["action"]["id"])
            elif roll < 0.9 and started:
                response = session.get(f"{base_url}/actions", params=[("id", a) for a in started[-25:]])
            else:
                response = session.get(f"{base_url}/servers/{server_id}/actions", params={"sort": "id:desc"})
            statuses[response.status_code] += 1
            remaining.append(int(response.headers["RateLimit-Remaining"]))
            correlation.append(response.headers["X-Correlation-Id"])
    finally:
        session.close()
    out.update(statuses=statuses, remaining=remaining, correlation=correlation, started=started)


def test_concurrent_keep_alive_clients_see_a_consistent_api() -> None:
    total = THREADS * REQUESTS
    # Power actions end at once, create_image and rebuild never (the clock stands still): both the settle
    # path and long-held server locks (423) run under contention. The bucket holds exactly one token per
    # request, so every Remaining value must be handed out exactly once.
    short = {name: 0 for name in ACTIONS}
    with fakecloud.start(servers=20, token="t", clock=ManualClock(), rate_limit=total, durations=short) as fc:
        results: list[dict[str, Any]] = [{} for _ in range(THREADS)]
        threads = [
            threading.Thread(target=_client, args=(fc.base_url, fc.token, n, results[n]))
            for n in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert all(r for r in results), "a client thread failed"

        statuses: Counter[int] = sum((r["statuses"] for r in results), Counter())
        assert sum(statuses.values()) == total
        assert set(statuses) <= {200, 201, 422, 423}, statuses
        assert statuses[201] and statuses[423]
        assert sorted(v for r in results for v in r["remaining"]) == list(range(total))
        assert len({c for r in results for c in r["correlation"]}) == total
        started = [a for r in results for a in r["started"]]
        assert len(started) == len(set(started)) == statuses[201]

        stats = requests.get(fc.control_url + "/stats", timeout=10).json()
        assert stats["total"] == total and stats["rate_limited"] == 0
        by_status: Counter[int] = Counter()
        for row in stats["requests"]:
            by_status[row["status"]] += row["count"]
        assert by_status == statuses

        backend = fc.backend
        with backend.lock:
            assert len(backend.actions) == len(started)
            running = Counter(a.server_id for a in backend.actions.values() if a.status == "running")
            assert all(count == 1 for count in running.values()), running
            for server in backend.servers.values():
                holder = server.running_action_id
                assert (holder is None) == (server.id not in running)
                if holder is not None:
                    assert backend.actions[holder].status == "running"
        assert requests.get(fc.base_url + "/servers", timeout=10).status_code == 429

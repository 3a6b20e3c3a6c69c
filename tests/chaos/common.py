"""What the chaos scenarios share: their settings, fleet helpers and the report each prints."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from ..support.cloud import Api, Control
from ..support.processes import Worker

# Short timeouts so a killed process's claims and monitor lock lapse within seconds (production: 40 s).
CHAOS_ENV = {
    "HCLOUD_FLOW_RATE_REFILL": "20",
    "HCLOUD_FLOW_VISIBILITY_TIMEOUT": "10",
    "HCLOUD_FLOW_REQUEST_TIMEOUT": "3",
}
KILLS = 5


def fleet_ids(cloud: Any, n: int) -> list[int]:
    control = Control(cloud.control_url)
    ids = Api(cloud.base_url).server_ids()[:n]
    for sid in ids:
        control.send("PATCH", f"/servers/{sid}", {"status": "running", "acpi": True})
    return ids


def posts_by(control: Control, ids: list[int]) -> Counter[tuple[int, str]]:
    return Counter(
        (p["server_id"], p["route"].rsplit("/", 1)[-1]) for p in control.posts() if p["server_id"] in ids
    )


def received_twice(workers: list[Worker]) -> int:
    """Count task ids a worker received more than once (redeliveries and retries), from the worker logs."""
    seen: Counter[str] = Counter()
    for w in workers:
        seen.update(re.findall(rb"Task hcloud_flow\.\w+\[([\w-]+)\] received", w.log.read_bytes()))
    return sum(1 for n in seen.values() if n > 1)


def report(capsys: pytest.CaptureFixture[str], title: str, lines: dict[str, Any]) -> None:
    with capsys.disabled():
        print(f"\n[chaos] {title}")
        for key, value in lines.items():
            print(f"[chaos]   {key}: {value}")

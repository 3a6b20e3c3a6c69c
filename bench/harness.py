"""Processes and measurements shared by the benchmarks: fakecloud as a subprocess, tables, percentiles."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class FakeCloudProcess:
    """fakecloud in its own process, so client load never shares its interpreter lock."""

    def __init__(self, *args: str, token: str) -> None:
        cmd = [sys.executable, "-m", "fakecloud", "--port", "0", "--token", token, *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.proc.stdout is not None
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http"):
            self.proc.kill()
            raise RuntimeError("fakecloud did not print its base URL")
        self.control_url = self.base_url.rsplit("/v1", 1)[0] + "/_fakecloud"
        self.http = requests.Session()

    def control(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        r = self.http.request(method, self.control_url + path, json=body, params=params or None, timeout=30)
        r.raise_for_status()
        return r.json() if r.content else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Render rows as a Markdown table; columns are (key, heading)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(k, "")) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def emit(rows: list[dict[str, Any]], columns: list[tuple[str, str]], as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps({"title": title, "rows": rows}, indent=2))
    else:
        print(f"\n{title}\n")
        print(table(rows, columns))

"""The main job: `hcloud-flow demo` runs with no Redis server and no token, and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ..support.processes import ROOT


def test_demo_runs_alone_and_every_run_ends_as_the_scenario_says() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HCLOUD")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "workflows.cli", "demo", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    outcomes = [r["outcome"] for r in summary["runs"]]
    assert outcomes == ["succeeded", "succeeded", "succeeded", "succeeded", "failed", "refused"]
    assert "ACPI" in summary["runs"][1]["note"] and summary["runs"][1]["actions"] == 4  # forced power off
    assert "action_failed" in summary["runs"][4]["note"]
    assert summary["api_requests_total"] > summary["actions"] > 0

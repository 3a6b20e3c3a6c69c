"""Progress in a log (no terminal): one line per run and change, never a block per tick."""

from __future__ import annotations

import io
from typing import Any

from workflows.progress import LiveView


def run(state: str, statuses: list[str], progress: int = 0) -> dict[str, Any]:
    steps = [{"name": f"s{i}", "status": st, "progress": progress} for i, st in enumerate(statuses)]
    return {
        "id": "r1",
        "workflow": "snapshot",
        "server_id": 5,
        "server_name": "srv-5",
        "state": state,
        "steps": steps,
        "created": 0.0,
    }


def test_a_log_gets_one_line_per_change() -> None:
    out = io.StringIO()
    view = LiveView(out)
    view.update([run("running", ["running", "pending"], 10)])
    for p in range(20, 100, 10):  # progress ticks alone print nothing
        view.update([run("running", ["running", "pending"], p)])
    view.update([run("running", ["succeeded", "running"])])
    view.update([run("succeeded", ["succeeded", "succeeded"])])
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "srv-5: running (0/2 steps, step s0 running)" in lines[0]
    assert "(1/2 steps, step s1 running)" in lines[1]
    assert "succeeded (2/2 steps)" in lines[2]


def test_status_shows_new_images_and_where_a_password_is() -> None:
    from workflows.progress import render_run

    r = run("succeeded", ["succeeded", "succeeded"])
    r["steps"][0]["outputs"] = {"image": {"id": 4242}}
    r["steps"][1]["outputs"] = {"root_password": {"sealed": "gAAAA..."}}
    text = "\n".join(render_run(r, now=1.0))
    assert "image 4242" in text
    assert "hcloud-flow secret r1" in text and "gAAAA" not in text
    r["steps"][1]["outputs"] = {"root_password": {"sealed": None, "notice": "root password lost: ..."}}
    assert "root password lost" in "\n".join(render_run(r, now=1.0))


def test_status_shows_the_restore_power_on_and_its_action() -> None:
    from workflows.progress import render_run

    r = run("failed", ["succeeded", "failed", "pending"])
    r["restore"] = {"state": "done", "task_id": "r1-restore-1", "action_id": 700000000436}
    r["left"] = {"status": "running", "why": "powered on again after the failure"}
    text = "\n".join(render_run(r, now=1.0))
    assert "restore power on: done, action 700000000436" in text
    assert "srv-5 left running: powered on again after the failure" in text

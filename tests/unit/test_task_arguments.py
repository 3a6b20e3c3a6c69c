"""The broker tasks other languages send (send_task) refuse arguments they do not take as BadInput, naming
those they take, before anything is read or changed: a misspelt keyword had failed with Python's TypeError,
and a positional workflow given to fleet_start had been taken as its submitter (an outside test)."""

from __future__ import annotations

from typing import Any

import pytest

from workers.errors import BadInput


@pytest.mark.parametrize(
    ("task", "args", "kwargs", "says"),
    [
        ("fleet_control", (), {"job_id": "j1", "verbb": "pause"}, "fleet_control does not take verbb"),
        ("fleet_retry", (), {"job_id": "j1", "failled": True}, "fleet_retry does not take failled"),
        ("cancel", (), {"run": "r1"}, "it takes keyword arguments: run_id, by"),
        ("status", (), {"id": "r1"}, "status does not take id"),
        ("images_prune", (), {"kep": 3}, "images_prune does not take kep"),
        ("fleet_start", ("reboot",), {}, "fleet_start does not take 1 positional argument"),
        ("fleet_plan", ("reboot",), {}, "fleet_plan does not take 1 positional argument"),
        ("status", (), {}, "run_id is missing"),
    ],
)
def test_a_task_refuses_what_it_does_not_take(
    task: str, args: tuple[Any, ...], kwargs: dict[str, Any], says: str
) -> None:
    from workflows import tasks

    with pytest.raises(BadInput, match=says):
        getattr(tasks, task).run(*args, **kwargs)


def test_a_step_given_the_server_as_a_keyword_is_told_where_it_goes() -> None:
    from workers.server_actions import ACTIONS, validate_params

    with pytest.raises(BadInput, match="the server is the first argument"):
        validate_params(ACTIONS["reboot"], {"server": 5})


def test_who_steers_a_job_is_refused_under_the_name_it_was_given() -> None:
    """An outside test: a bad `by` of fleet_control was reported as field submitted_by."""
    from workflows.validate import check_submitter

    with pytest.raises(BadInput, match="by must not hold control characters") as bad:
        check_submitter("ops\x1b[2J", "by")
    assert bad.value.field == "by"
    with pytest.raises(BadInput, match=r"^submitted_by must be a name") as bad:
        check_submitter("")
    assert bad.value.field == "submitted_by"

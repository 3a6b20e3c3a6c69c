"""Every server action exists everywhere: the table, a task, a client method and a fakecloud route."""

from __future__ import annotations

import inspect

import pytest

from fakecloud.transitions import TRANSITIONS
from workers import client as client_module
from workers.app import app
from workers.server_actions import ACTIONS
from workers.tasks import TASK_NAMES

TEN = {
    "power_on",
    "power_off",
    "reboot",
    "reset",
    "shutdown",
    "reset_password",
    "enable_rescue",
    "disable_rescue",
    "create_image",
    "rebuild",
}


def test_the_table_holds_exactly_the_ten_actions() -> None:
    assert set(ACTIONS) == TEN


@pytest.mark.parametrize("name", sorted(TEN))
def test_action_has_task_client_method_and_simulator_route(name: str) -> None:
    action = ACTIONS[name]
    assert TASK_NAMES[name] == f"hcloud_flow.{name}"
    assert TASK_NAMES[name] in app.tasks
    method = getattr(client_module.HcloudClient, name)
    params = set(inspect.signature(method).parameters) - {"self", "server_id"}
    assert params == set(action.params), "client keywords match the table's parameters"
    assert action.path in TRANSITIONS, "fakecloud simulates the same path"


def test_task_names_are_stable() -> None:
    # Other services send_task these names: renaming one breaks them. Change this list only with a notice.
    assert sorted(TASK_NAMES.values()) == sorted(f"hcloud_flow.{n}" for n in TEN)


def test_submit_refuses_what_it_does_not_take_by_name() -> None:
    # Sent by another service as send_task("hcloud_flow.submit", kwargs=...): an unknown keyword was a raw
    # TypeError with a traceback in the worker's log (an outside test), where every other field is BadInput.
    from workers.errors import BadInput
    from workflows.tasks import submit

    with pytest.raises(BadInput, match="submit does not take extra") as info:
        submit(workflow="reboot", server=1, extra=1)
    assert info.value.field == "extra"
    with pytest.raises(BadInput, match="positional"):
        submit("reboot", 1, {}, False, None, None, None, "surplus")

"""Injected faults: each kind, no side effects for refused requests, seeded determinism, the spec parser."""

from __future__ import annotations

import pytest
import requests

from fakecloud import FaultSpec, parse_faults


def _actions_of(api, server_id: int) -> list:
    return api.get(f"/servers/{server_id}/actions").json()["actions"]


def test_no_faults_by_default(api) -> None:
    assert api.ctl("GET", "/config").json()["faults"]["502"] == 0.0
    assert all(api.get("/servers").status_code == 200 for _ in range(30))


def test_502_is_html_and_has_no_side_effect(make_cloud) -> None:
    api = make_cloud(servers=3)
    server_id = api.running_server()
    api.ctl("PUT", "/config", json={"faults": "502=1"})
    response = api.action(server_id, "poweroff")
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert b"502 Bad Gateway" in response.content
    with pytest.raises(ValueError):
        response.json()
    assert response.headers["RateLimit-Remaining"]
    api.ctl("PUT", "/config", json={"faults": "none"})
    assert _actions_of(api, server_id) == []
    assert api.server(server_id)["status"] == "running"


@pytest.mark.parametrize(
    ("spec", "status", "code"),
    [
        ("503=1", 503, "unavailable"),
        ("504=1", 504, "timeout"),
        ("429=1", 429, "rate_limit_exceeded"),
        ("conflict=1", 409, "conflict"),
        ("409=1", 409, "conflict"),
    ],
)
def test_json_faults_refuse_action_posts_without_side_effect(
    make_cloud, spec: str, status: int, code: str
) -> None:
    api = make_cloud(servers=3, faults=spec)
    server_id = 50_000_001
    response = api.action(server_id, "poweroff")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    api.ctl("PUT", "/config", json={"faults": {k: 0 for k in ("503", "504", "429", "conflict")}})
    assert _actions_of(api, server_id) == []
    stats = api.ctl("GET", "/stats").json()
    assert stats["injected_faults"] == {"conflict" if status == 409 else str(status): 1}
    assert stats["rate_limited"] == 0  # injected 429s are not the bucket's


def test_conflict_only_hits_action_posts(make_cloud) -> None:
    api = make_cloud(servers=3, faults="conflict=1")
    assert api.get("/servers").status_code == 200
    assert api.action(api.running_server(), "reset").status_code == 409


def test_slow_answer_is_processed_before_the_client_gives_up(make_cloud) -> None:
    api = make_cloud(servers=3, faults="slow=1@0.5")
    server_id = 50_000_001
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.action(server_id, "reset", timeout=(5, 0.1))
    api.ctl("PUT", "/config", json={"faults": "none"})
    actions = _actions_of(api, server_id)
    assert [a["command"] for a in actions] == ["reset_server"]
    log = api.ctl("GET", "/requests").json()["requests"]
    assert log[0]["command"] == "reset" and log[0]["action_id"] == actions[0]["id"]


def test_action_error_fault_fails_actions_with_known_codes(make_cloud) -> None:
    api = make_cloud(servers=6, faults="action_error=1")
    ids = [api.action(s, "reset").json()["action"]["id"] for s in api.ids()]
    api.advance(4)
    errors = [api.action_status(a)["error"] for a in ids]
    assert {e["code"] for e in errors} <= {"action_failed", "unknown_error"}
    assert {(e["code"], e["message"]) for e in errors} <= {
        ("action_failed", "Action failed"),
        ("unknown_error", "Unknown Error"),
    }
    assert all(api.action_status(a)["status"] == "error" for a in ids)


def test_acpi_ignore_all_and_seeded_fraction(make_cloud) -> None:
    api = make_cloud(servers=4, faults="acpi_ignore=1")
    server_id = api.running_server()
    action = api.action(server_id, "shutdown").json()["action"]
    api.advance(5)
    assert api.action_status(action["id"])["status"] == "success"
    assert api.server(server_id)["status"] == "running"

    def ignoring(seed: int) -> list[bool]:
        cloud = make_cloud(servers=40, seed=seed, faults="acpi_ignore=0.5")
        backend = cloud.fc.backend
        return [not s.honours_acpi(backend.faults.acpi_ignore) for s in backend.servers.values()]

    first, again, other = ignoring(7), ignoring(7), ignoring(8)
    assert first == again
    assert 5 < sum(first) < 35
    assert first != other


def test_same_seed_same_fault_sequence(make_cloud) -> None:
    def sequence(seed: int) -> list[int]:
        api = make_cloud(servers=1, seed=seed, faults="502=0.2,503=0.2,504=0.1,429=0.1")
        return [api.get("/servers").status_code for _ in range(40)]

    one, two = sequence(3), sequence(3)
    assert one == two
    assert {200, 502, 503} <= set(one)


def test_faults_do_not_touch_controls(make_cloud) -> None:
    api = make_cloud(servers=1, faults="502=1,slow=1@5")
    assert api.ctl("GET", "/stats").status_code == 200


def test_parse_faults_spec() -> None:
    spec = parse_faults(
        "502=0.02,503=0.02,504=0.01,conflict=0.05,429=0.05,slow=0.01@3,action_error=0.03,acpi_ignore=0.2"
    )
    assert (spec.bad_gateway, spec.conflict, spec.slow, spec.slow_seconds, spec.acpi_ignore) == (
        0.02,
        0.05,
        0.01,
        3.0,
        0.2,
    )
    assert parse_faults(str(spec)) == spec
    assert parse_faults(None) == parse_faults("none") == parse_faults("") == FaultSpec()
    assert parse_faults({"503": 0.5, "slow_seconds": 1}).unavailable == 0.5
    assert parse_faults("slow=0.5").slow_seconds == 2.0
    lost = parse_faults("drop_answer=0.25,503=0.1")
    assert lost.drop_answer == 0.25 and not parse_faults("503=0.1").drop_answer
    assert str(lost) == "503=0.1,drop_answer=0.25" and parse_faults(str(lost)) == lost
    assert lost.to_dict()["drop_answer"] == 0.25
    assert parse_faults({"drop_answer": 1}).drop_answer == 1.0


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("bogus=0.1", "unknown fault 'bogus'"),
        ("502=1.5", "within [0, 1]"),
        ("502", "name=probability"),
        ("503=x", "expected a number"),
        ("503=0.1@2", "only 'slow' takes @seconds"),
        ("drop_answer=2", "within [0, 1]"),
        ("drop_answer=0.5@1", "only 'slow' takes @seconds"),
    ],
)
def test_parse_faults_rejects_bad_specs(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_faults(spec)


def test_put_config_faults_merge_and_errors(api) -> None:
    assert api.ctl("PUT", "/config", json={"faults": {"503": 0.25}}).json()["faults"]["503"] == 0.25
    merged = api.ctl("PUT", "/config", json={"faults": {"504": 0.5}}).json()["faults"]
    assert (merged["503"], merged["504"]) == (0.25, 0.5)
    bad = api.ctl("PUT", "/config", json={"faults": "nope=1"})
    assert bad.status_code == 422 and bad.json()["error"]["details"]["fields"][0]["name"] == "faults"

"""The web service's parts alone: the key file, idempotency claims, the shared counters (own Redis)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.counters import Counters
from workers.errors import BadInput, NotFound
from workflows.web.idempotency import IdempotencyStore, InProgress, KeyReused, check_key
from workflows.web.keys import KeyFile

from ..support.processes import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("web-parts"))
    yield server
    server.stop()


def test_keys_are_stored_as_hashes_with_their_role(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "sub" / "keys.json")
    op = keys.add("deploy-bot", "operator")
    view = keys.add("grafana", "viewer")
    raw = (tmp_path / "sub" / "keys.json").read_text()
    assert op not in raw and view not in raw and op.startswith("hfk_") and len(op) > 40
    assert stat.S_IMODE((tmp_path / "sub" / "keys.json").stat().st_mode) == 0o600
    assert keys.check(op).name == "deploy-bot" and keys.check(op).may("operator")  # type: ignore[union-attr]
    assert keys.check(view).may("viewer") and not keys.check(view).may("operator")  # type: ignore[union-attr]
    for wrong in (None, "", op[:-1], op + "x", json.loads(raw)["keys"][0]["sha256"]):
        assert keys.check(wrong) is None
    with pytest.raises(BadInput, match="exists"):
        keys.add("grafana", "viewer")
    with pytest.raises(BadInput, match="role"):
        keys.add("x", "admin")
    with pytest.raises(BadInput, match="key names"):
        keys.add("bad name", "viewer")
    keys.remove("grafana")
    assert keys.check(view) is None and [k["name"] for k in keys.list()] == ["deploy-bot"]
    with pytest.raises(NotFound):
        keys.remove("grafana")


def test_a_key_whose_role_was_written_by_hand_as_unknown_opens_nothing(tmp_path: Path) -> None:
    """Read by an outside tester: such a key was taken as a viewer's by bearer, and refused in a session."""
    path = tmp_path / "keys.json"
    keys = KeyFile(path)
    key = keys.add("hand-edited", "viewer")
    data = json.loads(path.read_text())
    data["keys"][0]["role"] = "admin"
    path.write_text(json.dumps(data))
    assert KeyFile(path).check(key) is None


def test_another_process_removing_a_key_takes_effect_at_once(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    web, cli = KeyFile(path), KeyFile(path)
    key = cli.add("short", "viewer")
    assert web.check(key) is not None
    cli.remove("short")
    assert web.check(key) is None


def test_an_idempotency_key_answers_once_and_refuses_reuse_and_races(redis_server: RedisServer) -> None:
    store = IdempotencyStore(redis_server.client())
    first = store.claim("ops", "k1", "POST", "/api/v1/runs", b'{"a": 1}')
    assert first.answer is None
    with pytest.raises(InProgress):
        store.claim("ops", "k1", "POST", "/api/v1/runs", b'{"a": 1}')
    with pytest.raises(KeyReused):
        store.claim("ops", "k1", "POST", "/api/v1/runs", b'{"a": 2}')
    first.finish(202, {"run_id": "r1"})
    again = store.claim("ops", "k1", "POST", "/api/v1/runs", b'{"a": 1}')
    assert again.answer == {"status": 202, "content": {"run_id": "r1"}}
    assert store.claim("other-key", "k1", "POST", "/api/v1/runs", b'{"a": 1}').answer is None, "per API key"
    released = store.claim("ops", "k2", "POST", "/api/v1/runs", b"{}")
    released.release()
    assert store.claim("ops", "k2", "POST", "/api/v1/runs", b"{}").answer is None, "free again"
    assert store.claim("ops", None, "POST", "/x", b"").answer is None
    for bad in ("", "x" * 256, "a\nb"):
        with pytest.raises(BadInput):
            check_key(bad)


def test_counters_are_shared_and_histograms_cumulative(redis_server: RedisServer) -> None:
    one, other = Counters(redis_server.client(), "t"), Counters(redis_server.client(), "t")
    one.add("api_requests", ("GET", "200"))
    other.add("api_requests", ("GET", "200"), 2)
    assert one.read("api_requests") == {("GET", "200"): 3}
    for seconds in (0.5, 3.0, 3.0, 7200.0):
        (one if seconds < 3 else other).observe("action_seconds", ("create_image",), seconds)
    h = one.histogram("action_seconds")[("create_image",)]
    buckets = dict(h["buckets"])
    assert buckets["1"] == 1 and buckets["5"] == 3 and buckets["3600"] == 3 and buckets["+Inf"] == 4
    assert h["count"] == 4 and h["sum"] == pytest.approx(7206.5)


def test_a_run_shown_over_http_never_carries_its_password() -> None:
    from workflows.web.api_routes import redact

    sealed = {"steps": [{"outputs": {"root_password": {"sealed": "gAAAAB-token"}}}]}
    dropped = {
        "steps": [{"outputs": {"root_password": {"sealed": None, "notice": "root password dropped: no key"}}}]
    }
    assert "gAAAA" not in str(redact(sealed)) and "hcloud-flow secret" in str(redact(sealed))
    assert redact(dropped)["steps"][0]["outputs"]["root_password"] == "root password dropped: no key"


def test_a_run_request_takes_null_params_as_none_as_every_other_entry_point() -> None:
    from pydantic import ValidationError

    from workflows.web.models import RunRequest

    # The Python API and the submit task (send_task, Flower) take params=None as no parameters; HTTP alone
    # answered 422 (an outside test).
    assert RunRequest.model_validate({"workflow": "reboot", "server": 1, "params": None}).params == {}
    assert RunRequest.model_validate({"workflow": "reboot", "server": 1}).params == {}
    for bad in ([], "grace=5", 0):
        with pytest.raises(ValidationError):
            RunRequest.model_validate({"workflow": "reboot", "server": 1, "params": bad})


@pytest.mark.parametrize("content", ["[]", '{"keys": null}', "[1]", '{"keys": {"a": 1}}', '"keys"'])
def test_a_key_file_of_another_shape_is_refused_clearly(tmp_path: Path, content: str) -> None:
    from workers.errors import ConfigError

    path = tmp_path / "keys.json"
    path.write_text(content)
    keys = KeyFile(path)
    # Valid JSON of another shape was an AttributeError: a traceback at start, a 500 on every request.
    for call in (keys.list, lambda: keys.check("hf_x"), lambda: keys.add("ops", "viewer")):
        with pytest.raises(ConfigError, match=r'is not \{"keys": \[\.\.\.\]\}'):
            call()
    assert path.read_text() == content, "nothing written over it"

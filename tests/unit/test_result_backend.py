"""What the result backend keeps of user data: its fingerprint, wherever a task carried it."""

from __future__ import annotations

from workers.user_data import fingerprint, without_user_data


def test_user_data_is_replaced_at_the_top_in_params_and_in_lists() -> None:
    text = "#cloud-config\npassword: hunter2\n"
    kept = without_user_data(
        {
            "user_data": text,  # a rebuild step's kwargs
            "params": {"image": "debian-12", "user_data": text},  # a submission's, a job's or a window's
            "windows": [{"params": {"user_data": text}}],
            "other": "hunter2 stays where it is not user data",
        }
    )
    assert "hunter2" not in repr({k: v for k, v in kept.items() if k != "other"})
    assert kept["user_data"] == kept["params"]["user_data"] == fingerprint(text)
    assert kept["params"]["image"] == "debian-12"
    assert fingerprint(text).startswith("sha256:") and fingerprint(text).endswith(f"({len(text)} bytes)")
    assert without_user_data({"user_data": None}) == {"user_data": None}  # none given: nothing to hide


def test_the_backend_keeps_no_user_data_in_positional_arguments_either() -> None:
    """A reviewer: submit(workflow, server, params) sent by position kept the text in the result's args."""
    from types import SimpleNamespace

    from celery import Celery

    from workers.result_backend import RedisBackend

    app = Celery("t", backend="workers.result_backend:RedisBackend+redis://127.0.0.1:1/0")
    app.conf.result_extended = True
    backend = app.backend
    assert isinstance(backend, RedisBackend)
    request = SimpleNamespace(
        task="hcloud_flow.submit", args=["rebuild", 5, {"image": "x", "user_data": "pw: hunter2"}], kwargs={},
        hostname="w", retries=0, delivery_info={}, stamps=None, group=None, parent_id=None, children=[],
    )  # fmt: skip
    meta = backend._get_result_meta({"run_id": "r"}, "SUCCESS", None, request)
    assert "hunter2" not in repr(meta) and meta["args"][2]["user_data"].startswith("sha256:")


def test_a_fingerprint_a_record_keeps_is_shown_as_it_is() -> None:
    """An outside test: `status --json` showed the fingerprint of the run's stored fingerprint, which matched
    no `sha256sum` of the user's file. Text checked against a fingerprint is still fingerprinted whatever it
    looks like, so the fingerprint itself is not taken for the text it stands for."""
    from workers.user_data import shown

    text = "#cloud-config\npassword: hunter2\n"
    stored = fingerprint(text)
    assert without_user_data({"params": {"user_data": stored}}) == {"params": {"user_data": stored}}
    assert shown(stored) == stored and shown(text) == stored
    assert fingerprint(stored) != stored
    assert shown(stored + " ") == fingerprint(stored + " ")  # only the exact form is taken as one

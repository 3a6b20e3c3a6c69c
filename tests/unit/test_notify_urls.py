"""Webhook URLs are stored with runs and jobs, where viewers can read them: none may carry a credential."""

from __future__ import annotations

import pytest

from workers.errors import BadInput
from workflows.notify import check_urls


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:9/#access_token=SECRETFRAG", "#fragment"),  # found by an outside test
        ("https://hooks.example/x#", None),  # an empty fragment holds nothing
        ("https://hooks.example/x?token=abc", "credential in a parameter"),
        ("https://u:p@hooks.example/x", "credentials"),
        ("https://hooks.example/x?run=1", None),
        # Found by an outside test: a parameter after ";", in the path, or named key, pass or a session.
        ("https://hooks.example/x?a=1;token=abc", "credential in a parameter \\(token\\)"),
        ("https://hooks.example/x;token=abc/y", "credential in a parameter \\(token\\)"),
        ("https://hooks.example/x?key=abc", "credential in a parameter \\(key\\)"),
        ("https://hooks.example/x?pass=abc", "credential in a parameter \\(pass\\)"),
        ("https://hooks.example/x;jsessionid=abc", "credential in a parameter \\(jsessionid\\)"),
        ("https://hooks.example/x?to%6Ben=abc", "credential in a parameter \\(token\\)"),
        ("https://hooks.example/x?bearer=abc", "credential in a parameter \\(bearer\\)"),
        ("https://hooks.example/x?credentials=abc", "credential in a parameter \\(credentials\\)"),
        ("https://hooks.example/x?monkey=1&keyboard=2", None),
        # Found by an outside test: names the pattern missed, an encoded ";" in the path, control
        # characters inside a name, port 0, and a raw space.
        ("https://hooks.example/x?client_key=abc", "credential in a parameter \\(client_key\\)"),
        ("https://hooks.example/x?private-key=abc", "credential in a parameter \\(private-key\\)"),
        ("https://hooks.example/x?privatekey=abc", "credential in a parameter \\(privatekey\\)"),
        ("https://hooks.example/x?pw=abc", "credential in a parameter \\(pw\\)"),
        ("https://hooks.example/x?jwt=abc", "credential in a parameter \\(jwt\\)"),
        ("https://hooks.example/x?tok%00en=abc", "control characters"),
        ("https://hooks.example/path%3Btoken=abc", "credential in a parameter \\(token\\)"),
        ("https://hooks.example:0/x", "port out of 1-65535"),
        ("https://hooks.example/ a", "spaces or control characters"),
        (
            "https://hooks.example/x?keys=1&pwd_hint=no&sigma=1&jwtx=2",
            "credential in a parameter \\(jwtx, pwd_hint\\)",
        ),
        ("https://hooks.example/x?keys=1&sigma=1&upwards=2", None),
        # A reviewer: camelCase names, and a space before the URL (urlsplit drops it).
        ("https://hooks.example/x?clientKey=abc", "credential in a parameter \\(clientKey\\)"),
        ("https://hooks.example/x?signingKeyId=abc", "credential in a parameter \\(signingKeyId\\)"),
        ("https://hooks.example/x?monkeyKeys=1&hmacSig=2", "credential in a parameter \\(hmacSig\\)"),
        (" https://hooks.example/x", "without spaces around it"),
    ],
)
def test_a_url_that_would_keep_a_secret_is_refused_quietly(url: str, message: str | None) -> None:
    if message is None:
        assert check_urls([url]) == [url]
        return
    with pytest.raises(BadInput, match=message) as info:
        check_urls([url])
    assert "SECRETFRAG" not in str(info.value) and "abc" not in str(info.value)


def test_every_event_names_its_project() -> None:
    """An outside test with two projects: a receiver could not tell staging's srv-2 from prod's."""
    from workflows.notify import event_body

    run = {"id": "r1", "workflow": "reboot", "project": "staging", "server_id": 2, "state": "succeeded"}
    job = {"id": "j1", "workflow": "reboot", "project": "staging", "state": "succeeded", "servers": []}
    window = {"name": "w", "project": "staging", "local": "2027-01-03T03:00+01:00", "outcome": "started"}
    assert event_body("run.ended", run)["run"]["project"] == "staging"
    assert event_body("job.ended", job)["job"]["project"] == "staging"
    assert event_body("window.fired", window)["window"]["project"] == "staging"


def test_a_delivery_whose_signing_key_cannot_be_read_fails_as_a_task_not_as_a_process_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.errors import ConfigError
    from workflows.tasks import notify

    # celeryconfig stops a process that starts misconfigured with SystemExit; raised in a pool thread, the
    # task stayed "active" for good and the webhook was never sent nor said lost (an outside test).
    monkeypatch.delenv("HCLOUD_FLOW_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("HCLOUD_FLOW_WEBHOOK_SECRET_FILE", "/nonexistent/webhook.key")
    with pytest.raises(ConfigError, match="webhook not sent: HCLOUD_FLOW_WEBHOOK_SECRET_FILE: cannot read"):
        notify.run("http://127.0.0.1:9/hook", {"event": "run.ended"})

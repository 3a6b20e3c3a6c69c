"""The client's seam with a scripted transport: headers, error parsing, retry bounds, batching."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from workers.client import HcloudClient
from workers.errors import APIError, BadInput, TransportError
from workers.retry_policy import RetryPolicy


class ScriptedSession(requests.Session):
    """Answers requests from a list of (status, body) pairs and records what was asked."""

    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.calls.append({"method": method, "url": url, "headers": dict(self.headers), **kwargs})
        status, body = self.answers.pop(0)
        if isinstance(body, Exception):
            raise body
        resp = requests.Response()
        resp.status_code = status
        resp.reason = "Bad Gateway" if status == 502 else "x"
        resp.headers["X-Correlation-Id"] = "corr-1"
        resp._content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        return resp


def client(answers: list[tuple[int, Any]]) -> tuple[HcloudClient, ScriptedSession, list[float]]:
    session = ScriptedSession(answers)
    sleeps: list[float] = []
    c = HcloudClient(
        "secret-token",
        base_url="http://api.test/v1",
        session=session,
        sleep=sleeps.append,
        policy=RetryPolicy(attempts=4, base=0.5, cap=2.0, max_total=60.0),
    )
    return c, session, sleeps


def err(code: str, message: str = "m") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": None}}


ACTION = {"action": {"id": 1, "command": "start_server", "status": "running", "progress": 0}}


def test_auth_user_agent_and_no_token_in_repr() -> None:
    c, session, _ = client([(201, ACTION)])
    c.power_on(42)
    call = session.calls[0]
    assert call["method"] == "POST" and call["url"] == "http://api.test/v1/servers/42/actions/poweron"
    assert call["headers"]["Authorization"] == "Bearer secret-token"
    assert call["headers"]["User-Agent"].startswith("hcloud-flow/")
    assert "json" not in call, "actions without parameters send no body, as the official clients do"
    assert call["timeout"] == (5.0, 30.0)
    assert "secret-token" not in repr(c)


def test_error_body_becomes_api_error_with_correlation_id() -> None:
    c, _, _ = client(
        [(422, {"error": {"code": "invalid_input", "message": "bad", "details": {"fields": []}}})]
    )
    with pytest.raises(APIError) as info:
        c.rebuild(1, image="nope")
    e = info.value
    assert (e.code, e.status, e.correlation_id, e.details) == ("invalid_input", 422, "corr-1", {"fields": []})
    assert "invalid_input" in str(e) and "corr-1" in str(e)


def test_html_gateway_answer_falls_back_to_status_and_get_is_retried() -> None:
    c, session, sleeps = client([(502, "<html>bad gateway</html>"), (200, {"server": {"id": 1}})])
    assert c.get_server(1) == {"id": 1}
    assert len(session.calls) == 2 and len(sleeps) == 1


def test_conflict_post_is_retried_but_gateway_timeout_post_is_not() -> None:
    c, session, _ = client([(409, err("conflict")), (201, ACTION)])
    assert c.power_on(1)["action"]["id"] == 1
    assert len(session.calls) == 2
    c, session, _ = client([(504, err("timeout")), (201, ACTION)])
    with pytest.raises(APIError) as info:
        c.power_on(1)
    assert info.value.code == "timeout" and len(session.calls) == 1


def test_retries_are_bounded() -> None:
    c, session, sleeps = client([(409, err("conflict"))] * 10)
    with pytest.raises(APIError):
        c.power_off(1)
    assert len(session.calls) == 4 and len(sleeps) == 3
    assert all(0.5 <= s <= 2.0 for s in sleeps)


def test_fail_fast_codes_are_not_retried() -> None:
    for code, status in (("locked", 423), ("protected", 423), ("not_found", 404), ("unauthorized", 401)):
        c, session, _ = client([(status, err(code)), (201, ACTION)])
        with pytest.raises(APIError):
            c.reset(1)
        assert len(session.calls) == 1


def test_read_timeout_on_post_is_reported_not_resent() -> None:
    c, session, _ = client([(0, requests.ReadTimeout("slow")), (201, ACTION)])
    with pytest.raises(TransportError):
        c.shutdown(1)
    assert len(session.calls) == 1


def test_get_actions_splits_ids_into_batches_of_25() -> None:
    answers = [
        (200, {"actions": [{"id": i} for i in range(1, 26)]}),
        (200, {"actions": [{"id": i} for i in range(26, 31)]}),
    ]
    c, session, _ = client(answers)
    got = c.get_actions(list(range(30, 0, -1)))
    assert len(got) == 30
    assert [len(call["params"]) for call in session.calls] == [25, 5]
    assert session.calls[0]["params"][0] == ("id", 1)


def test_server_actions_are_read_fifty_ids_a_request_and_a_short_page_is_followed() -> None:
    def page(ids: range, next_page: int | None) -> dict[str, Any]:
        return {"actions": [{"id": i} for i in ids], "meta": {"pagination": {"next_page": next_page}}}

    # The first chunk's answer is cut after 40 (as a list endpoint may): its next page is asked for.
    answers = [
        (200, page(range(1, 41), 2)),
        (200, page(range(41, 51), None)),
        (200, page(range(51, 61), None)),
    ]
    c, session, _ = client(answers)
    got = c.get_server_actions(list(range(60, 0, -1)))
    assert sorted(a["id"] for a in got) == list(range(1, 61))
    assert [call["url"].rsplit("/v1", 1)[-1] for call in session.calls] == ["/servers/actions"] * 3
    ids = [[v for k, v in call["params"] if k == "id"] for call in session.calls]
    assert [len(i) for i in ids] == [50, 50, 10]
    assert [dict(call["params"])["page"] for call in session.calls] == [1, 2, 1]
    assert all(dict(call["params"])["per_page"] == 50 for call in session.calls)


def test_pagination_is_followed() -> None:
    page = {"servers": [{"id": 1}], "meta": {"pagination": {"next_page": 2}}}
    last = {"servers": [{"id": 2}], "meta": {"pagination": {"next_page": None}}}
    c, session, _ = client([(200, page), (200, last)])
    assert [s["id"] for s in c.list_servers(label_selector="env=prod")] == [1, 2]
    assert ("label_selector", "env=prod") in session.calls[0]["params"]


ONE_PAGE_OF_IMAGES = {"images": [{"id": 1, "name": "debian-12"}], "meta": {"pagination": {"next_page": None}}}


@pytest.mark.parametrize(
    ("lookup", "field"),
    [
        (lambda c: c.list_images(name=""), "name"),
        (lambda c: c.list_images(name="  \t"), "name"),
        (lambda c: c.list_images(label_selector=""), "label_selector"),
        (lambda c: c.list_images(type=""), "type"),
        (lambda c: c.list_images(name="debian-12", sort=" "), "sort"),
        (lambda c: c.list_ssh_keys(name=""), "name"),
        (lambda c: c.list_ssh_keys(name=" "), "name"),
    ],
    ids=["image-name", "image-name-blank", "image-selector", "image-type", "image-sort", "key", "key-blank"],
)
def test_a_lookup_by_an_empty_filter_is_refused_before_any_request(lookup: Any, field: str) -> None:
    # Dropping the empty filter would list everything, and a caller taking the first match would use
    # an image or key nobody named (a rebuild from debian-11 with --image '').
    c, session, _ = client([(200, ONE_PAGE_OF_IMAGES)])
    with pytest.raises(BadInput) as info:
        lookup(c)
    assert info.value.field == field and "empty" in str(info.value)
    assert session.calls == []


def test_lookup_filters_given_are_sent_and_none_means_no_filter() -> None:
    c, session, _ = client([(200, ONE_PAGE_OF_IMAGES)] * 3)
    c.list_images(name="debian-12")
    c.list_images()
    c.list_ssh_keys(name="ops")
    names = [[k for k, _ in call["params"] if k not in ("page", "per_page")] for call in session.calls]
    assert names == [["name"], [], ["name"]]
    assert ("name", "debian-12") in session.calls[0]["params"]
    assert ("name", "ops") in session.calls[2]["params"]


def test_listing_pages_of_images_still_takes_no_filter() -> None:
    c, session, _ = client([(200, ONE_PAGE_OF_IMAGES)])
    assert [len(page) for page in c.iter_image_pages(sort="id:desc")] == [1]
    assert [k for k, _ in session.calls[0]["params"]] == ["sort", "page", "per_page"]


@pytest.mark.parametrize("kwargs", [{"name": ""}, {"label_selector": ""}], ids=["name", "selector"])
def test_a_server_lookup_by_an_empty_filter_is_refused(kwargs: dict[str, str]) -> None:
    c, session, _ = client([(200, {"servers": [{"id": 1}], "meta": {"pagination": {"next_page": None}}})])
    with pytest.raises(BadInput):
        c.list_servers(**kwargs)
    assert session.calls == []


# -- images: update, delete, change_protection ------------------------------------------------------------

IMAGE = {"image": {"id": 7, "type": "snapshot", "labels": {"run": "r2"}, "description": "d"}}
PROTECT = {"action": {"id": 9, "command": "change_protection", "status": "success", "progress": 100}}
LOST = requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer"))


def test_delete_image_sends_a_bodiless_delete_and_takes_the_204() -> None:
    c, session, sleeps = client([(204, "")])
    assert c.delete_image(7) is None
    call = session.calls[0]
    assert call["method"] == "DELETE" and call["url"] == "http://api.test/v1/images/7"
    assert "json" not in call and sleeps == []


@pytest.mark.parametrize(
    "lost",
    [LOST, requests.ReadTimeout("slow"), (502, "<html>bad gateway</html>"), (504, err("timeout"))],
    ids=["reset", "read-timeout", "502", "504"],
)
def test_delete_image_after_a_lost_answer_is_retried_and_a_404_then_means_done(lost: Any) -> None:
    c, session, sleeps = client([lost if isinstance(lost, tuple) else (0, lost), (404, err("not_found"))])
    assert c.delete_image(7) is None  # the first DELETE did it; only its answer was lost
    assert [call["method"] for call in session.calls] == ["DELETE", "DELETE"] and len(sleeps) == 1


def test_delete_image_lost_answer_then_the_retry_deletes_it() -> None:
    c, session, _ = client([(0, requests.ReadTimeout("slow")), (204, "")])
    c.delete_image(7)
    assert len(session.calls) == 2


@pytest.mark.parametrize(
    "answers",
    [
        [(404, err("not_found"))],  # no such image: the caller's mistake, not a success
        [(409, err("conflict")), (404, err("not_found"))],  # the API did nothing the first time
        [(0, requests.ConnectTimeout("connect")), (404, err("not_found"))],  # never sent
    ],
    ids=["first-attempt", "after-not-processed", "after-not-sent"],
)
def test_delete_image_404_is_an_error_unless_an_earlier_attempt_may_have_deleted(answers: Any) -> None:
    c, session, _ = client(answers)
    with pytest.raises(APIError) as info:
        c.delete_image(7)
    assert info.value.code == "not_found" and len(session.calls) == len(answers)


@pytest.mark.parametrize(("status", "code"), [(423, "protected"), (422, "unsupported_error")])
def test_delete_image_refusals_are_raised_at_once(status: int, code: str) -> None:
    c, session, _ = client([(status, err(code)), (204, "")])
    with pytest.raises(APIError) as info:
        c.delete_image(7)
    assert info.value.code == code and len(session.calls) == 1


def test_delete_image_gives_up_after_the_retry_bound_with_a_transport_error() -> None:
    c, session, _ = client([(0, LOST)] * 4)
    with pytest.raises(TransportError) as info:
        c.delete_image(7)
    assert info.value.maybe_sent and len(session.calls) == 4


def test_update_image_sends_only_what_is_given_and_empty_labels_clear_them() -> None:
    c, session, _ = client([(200, IMAGE)] * 3)
    assert c.update_image(7, labels={"run": "r2"}) == IMAGE["image"]
    c.update_image(7, description="d")
    c.update_image(7, labels={}, description="")
    assert [call["method"] for call in session.calls] == ["PUT"] * 3
    assert session.calls[0]["url"] == "http://api.test/v1/images/7"
    assert [call["json"] for call in session.calls] == [
        {"labels": {"run": "r2"}},
        {"description": "d"},
        {"labels": {}, "description": ""},
    ]


def test_update_image_is_retried_after_a_lost_answer_and_refusals_are_raised() -> None:
    c, session, _ = client([(0, requests.ReadTimeout("slow")), (200, IMAGE)])
    assert c.update_image(7, labels={"run": "r2"})["labels"] == {"run": "r2"}
    assert len(session.calls) == 2
    c, session, _ = client([(422, err("invalid_input")), (200, IMAGE)])
    with pytest.raises(APIError):
        c.update_image(7, labels={"bad key": "x"})
    assert len(session.calls) == 1


def test_change_image_protection_returns_the_action_and_survives_a_lost_answer() -> None:
    c, session, _ = client([(201, PROTECT)])
    assert c.change_image_protection(7, delete=True) == PROTECT["action"]
    call = session.calls[0]
    assert call["method"] == "POST" and call["url"] == "http://api.test/v1/images/7/actions/change_protection"
    assert call["json"] == {"delete": True}
    # Setting a flag twice leaves it as once: unlike a server action, it is sent again after a lost answer.
    c, session, _ = client([(0, LOST), (201, PROTECT)])
    assert c.change_image_protection(7, delete=False)["id"] == 9
    assert [call["json"] for call in session.calls] == [{"delete": False}] * 2

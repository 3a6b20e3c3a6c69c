"""The token bucket: headers, 429 when empty, refill with the clock, speed factor, every request counts."""

from __future__ import annotations

import requests

from fakecloud import ManualClock
from fakecloud.ratelimit import TokenBucket


def _headers(response: requests.Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["RateLimit-Limit"]), int(h["RateLimit-Remaining"]), int(h["RateLimit-Reset"])


def test_exhaust_get_429_then_refill_by_advancing_the_clock(make_cloud) -> None:
    api = make_cloud(servers=2, rate_limit=36)  # 36 an hour = one token every 100 s
    now = int(api.fc.backend.clock.now())
    assert _headers(api.get("/servers")) == (36, 35, now + 100)
    for _ in range(34):
        api.get("/servers")
    last = api.get("/servers")
    assert _headers(last) == (36, 0, now + 3600)
    assert last.status_code == 200
    refused = api.get("/servers")
    assert refused.status_code == 429
    assert refused.json()["error"] == {
        "code": "rate_limit_exceeded",
        "message": "limit of 36 requests per hour reached",
        "details": None,
    }
    assert _headers(refused)[1] == 0
    # Unauthenticated requests are refused (and counted) the same way.
    assert requests.get(api.fc.base_url + "/servers", timeout=10).status_code == 429
    api.advance(99)
    assert api.get("/servers").status_code == 429
    api.advance(1)
    again = api.get("/servers")
    assert again.status_code == 200
    assert _headers(again)[1] == 0
    api.advance(3600)
    assert _headers(api.get("/servers"))[1] == 35
    stats = api.ctl("GET", "/stats").json()
    assert stats["rate_limited"] == 3


def test_default_limit_and_controls_do_not_count(api) -> None:
    assert _headers(api.get("/servers"))[:2] == (3600, 3599)
    for _ in range(3):
        api.ctl("GET", "/stats")
    assert _headers(api.get("/servers"))[1] == 3598


def test_changing_rate_limit_refills_the_bucket(make_cloud) -> None:
    api = make_cloud(servers=1, rate_limit=5)
    for _ in range(5):
        api.get("/servers")
    assert api.get("/servers").status_code == 429
    assert api.ctl("PUT", "/config", json={"rate_limit": 7200}).json()["rate_limit"] == 7200
    assert _headers(api.get("/servers"))[:2] == (7200, 7199)


def test_bucket_refill_rate_scales_with_speed() -> None:
    clock = ManualClock(1000.0, speed=10.0)
    bucket = TokenBucket(clock, limit=3600)
    for _ in range(100):
        bucket.take()
    assert bucket.peek().remaining == 3500
    assert bucket.peek().reset == 1010  # 100 tokens at 10 a second
    clock.advance(5)
    assert bucket.peek().remaining == 3550

"""A look at a block-on or health-check URL is bounded as a whole, not per socket read (workflows.gates).

An answer trickling a byte at a time never let one socket read wait 5 s, so a look lasted as long as the
answer did: a block-on look held the job's lock until it lapsed (the job then stalled for good), and one
health URL held every other server's look past its deadline (an outside test). A real local HTTP server
trickles here; the clock is a counter, so nothing depends on this machine's speed.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from workflows.gates import PROBE_TIMEOUT, http_probe, probe_health

BODY = 400  # bytes the server trickles, one at a time


class Trickle(http.server.BaseHTTPRequestHandler):
    sent = 0
    done = threading.Event()

    def do_GET(self) -> None:
        type(self).sent = 0
        self.send_response(200)
        self.send_header("Content-Length", str(BODY))
        self.end_headers()
        try:
            for _ in range(BODY):
                self.wfile.write(b"[")
                self.wfile.flush()
                type(self).sent += 1
                time.sleep(0.01)
        except OSError:  # the client hung up: the look ended without the rest
            pass
        finally:
            type(self).done.set()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Trickle.done.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()
    server.server_close()


def test_a_trickling_block_on_answer_is_cut_off_at_the_looks_deadline(url: str) -> None:
    ticks = iter(range(10_000))

    def clock() -> float:  # one second a call: the deadline passes after PROBE_TIMEOUT reads
        return float(next(ticks))

    status, why = http_probe(url, clock=clock)
    assert status is None and f"no whole answer within {PROBE_TIMEOUT:g} s" in why
    assert Trickle.done.wait(10)
    assert Trickle.sent < BODY, "the look stopped reading; the server did not get to send it all"


def test_a_health_look_takes_the_status_and_reads_no_body(url: str) -> None:
    assert probe_health(url) == (True, "HTTP 200")
    assert Trickle.done.wait(10)
    assert Trickle.sent < BODY, "the body was not waited for"


def test_looks_not_done_within_their_limit_are_answered_as_none_without_waiting_for_them() -> None:
    """A reviewer: a peer sending its headers a byte at a time held a look past any per-read timeout."""
    from workflows.gates import look_all

    release = threading.Event()

    def look(url: str) -> str:
        if "slow" in url:
            release.wait(30)  # a look that would go on long after its limit
        return url

    try:
        answers = look_all(look, ["http://fast/", "http://slow/", "http://fast2/"], limit=0.5)
        assert answers == ["http://fast/", None, "http://fast2/"]
    finally:
        release.set()
    assert look_all(look, []) == []

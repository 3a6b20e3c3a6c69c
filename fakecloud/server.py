"""The HTTP transport: a threading HTTP/1.1 keep-alive server around ``dispatch.App``, and ``start()``."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .backend import Backend
from .clock import Clock, RealClock
from .dispatch import App
from .faults import FaultSpec

__all__ = ["FakeCloud", "start"]

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_date_cache: tuple[int, str] = (0, "")


def _http_date(now: float) -> str:
    # formatdate costs more than the rest of a small answer; one string per second is enough.
    global _date_cache
    second = int(now)
    cached = _date_cache  # one read: another thread may replace the tuple meanwhile
    if cached[0] != second:
        cached = _date_cache = (second, formatdate(second, usegmt=True))
    return cached[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection per session
    disable_nagle_algorithm = True  # small answers must not wait for a delayed ACK
    server_version = "fakecloud"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay silent: a benchmark makes thousands of requests a second."""

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            if not (length.strip().isascii() and length.strip().isdigit()):
                raise ValueError(f"bad Content-Length {length!r}")
            return self.rfile.read(int(length))
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def _dispatch(self) -> None:
        body: bytes | None
        try:
            body = self._read_body()
        except ValueError:
            body = None  # the app answers 400 json_error with the usual headers
            self.close_connection = True  # where this body ends is unknown, so the connection is lost
        head_only = self.command == "HEAD"
        app = self.server.app
        reply = app.handle(
            # HEAD is GET without the content (RFC 9110 §9.3.2): same status and headers, same rate token.
            "GET" if head_only else self.command,
            self.path,
            body,
            self.headers.get("Authorization"),
            self.headers.get("Host") or "localhost",
        )
        if reply.drop:
            # The lost answer: the action has started, but not one byte goes back. Closing (not resetting)
            # the socket is what a proxy dying mid-request looks like: the client reads EOF where the status
            # line should be (http.client's RemoteDisconnected, "Connection aborted" in requests).
            self.close_connection = True
            return
        if reply.delay:
            time.sleep(reply.delay)  # the slow fault: processed already, answered late
        # Date comes from the backend's clock, like RateLimit-Reset, so "Reset - Date" is the wait for a full
        # bucket (reference §6) on a manual clock too; both carry the clock skew.
        status_line = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, '')}"
        head = [status_line, f"Date: {_http_date(app.backend.reported_now())}"]
        head.extend(f"{k}: {v}" for k, v in reply.headers)
        if reply.status != 204:  # RFC 9110 §8.6: a 204 carries no Content-Length
            head.append(f"Content-Length: {len(reply.body)}")
        if self.close_connection:
            head.append("Connection: close")
        payload = b"" if head_only else reply.body
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out (the slow fault) or vanish mid-answer are normal here, not worth a traceback.
        pass

    def close_connections(self) -> None:
        with self.connections_lock:
            connections, self.connections = list(self.connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class FakeCloud:
    """A running fakecloud: ``base_url`` (``http://HOST:PORT/v1``), ``control_url``, ``backend``, ``stop``."""

    def __init__(self, backend: Backend, host: str = "127.0.0.1", port: int = 0) -> None:
        self.backend = backend
        self.app = App(backend)
        self._server = _Server((host, port), self.app)
        self.host = host
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.base_url = f"{self.url}/v1"
        self.control_url = f"{self.url}/_fakecloud"
        self.token = backend.token
        self._thread: threading.Thread | None = None

    def serve_in_thread(self) -> FakeCloud:
        """Serve from a daemon thread and return self."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fakecloud:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from the calling thread until ``stop()`` is called from another."""
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving, close the port and every open keep-alive connection."""
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeCloud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FakeCloud {self.base_url} servers={len(self.backend.servers)}>"


def start(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    servers: int = 10,
    token: str = "fakecloud-token",  # noqa: S107 - a fake token for a fake API
    seed: int = 1,
    speed: float = 1.0,
    rate_limit: int = 3600,
    faults: str | Mapping[str, Any] | FaultSpec | None = None,
    durations: Mapping[str, float] | None = None,
    clock: Clock | None = None,
    skew: float = 0.0,
    id_space: int = 0,
) -> FakeCloud:
    """Start fakecloud on a daemon thread; ``port=0`` picks a free port. ``speed`` applies to the clock.

    ``skew`` (seconds, negative = behind) shifts every time ``/v1`` reports, as an API with a wrong clock.
    ``id_space`` (0-99) sets this project apart in the API's one id space (a second project: 1).
    """
    if clock is None:
        clock = RealClock(speed)
    elif speed != 1.0:
        clock.speed = float(speed)
    backend = Backend(
        clock=clock,
        token=token,
        seed=seed,
        servers=servers,
        rate_limit=rate_limit,
        faults=dict(faults) if isinstance(faults, Mapping) else faults,
        durations=durations,
        skew=skew,
        id_space=id_space,
    )
    return FakeCloud(backend, host, port).serve_in_thread()

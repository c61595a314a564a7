"""A Segment-compatible HTTP server on 127.0.0.1 that records every batch and injects faults.

It answers ``POST /v1/batch`` the way Segment does: basic auth with the write
key as the user name, 400 for invalid JSON, a message over 32 KB or a body over
500 KB, error bodies as ``{"code", "message"}``, 200 otherwise. Faults are
queued and consumed one per request, in order:

* ``fail(status, retry_after=...)``: answer ``status`` without recording;
* ``slow(seconds)``: record the batch (Segment has it), then wait before the 200 —
  past the client's timeout this is a batch received but never acknowledged;
* ``refuse(message_id)``: answer 400 to every request holding that message;
* ``redirect(status)``: answer ``status`` with ``Location: /moved``, a page that
  answers 200 to any request (counted in ``moved``) and records nothing.

``stop()`` closes the listening socket and every open connection, so a later
request is refused until ``start()`` binds the same port again.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_MESSAGE = 32 << 10
MAX_BODY = 500 << 10
#: Where ``redirect()`` sends a request: a page that answers 200 to anything.
MOVED = "/moved"


@dataclass(frozen=True)
class Fault:
    """What to do with one request instead of answering 200 at once."""

    status: int | None = None
    retry_after: str | None = None
    delay: float = 0.0
    location: str | None = None
    #: The body of the answer, instead of the usual JSON error.
    body: bytes | None = None


@dataclass(frozen=True)
class Request:
    """One request that reached the batch endpoint with a valid key and body."""

    number: int
    status: int
    messages: list[dict[str, Any]]
    body_bytes: int
    #: The client library's ``X-Retry-Count`` header: how many attempts failed before this one.
    retry_count: int = 0


@dataclass
class Arrival:
    """A message recorded as received, with its global arrival number."""

    seq: int
    request: int
    message: dict[str, Any]


@dataclass
class FakeSegment:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`."""

    write_key: str = "test-write-key"
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    unauthorized: int = 0
    moved: int = 0
    moved_status: int = 200
    refused_ids: set[str] = field(default_factory=set)
    delay: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self.received = threading.Event()
        if self.port == 0:
            self.port = free_port()

    # -- control ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeSegment:
        handler = type("Handler", (_Handler,), {"segment": self})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler, bind_and_activate=False)
        server.allow_reuse_address = True
        server.daemon_threads = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._sockets.clear()
        self._server = None

    def __enter__(self) -> FakeSegment:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail(
        self,
        status: int,
        times: int = 1,
        retry_after: str | None = None,
        *,
        delay: float = 0.0,
        body: bytes | None = None,
    ) -> None:
        """The next ``times`` requests get ``status`` (and ``Retry-After``), unrecorded,
        after ``delay`` seconds, with ``body`` if given."""
        fault = Fault(status=status, retry_after=retry_after, delay=delay, body=body)
        with self._lock:
            self._faults.extend([fault] * times)

    def alternate(self, status: int, times: int) -> None:
        """Of the next ``2 * times`` requests, every second one gets ``status``."""
        with self._lock:
            self._faults.extend([Fault(), Fault(status=status)] * times)

    def redirect(self, status: int, times: int = 1, page: int = 200) -> None:
        """The next ``times`` requests are redirected to ``/moved``, unrecorded; the page
        there answers ``page`` to any request."""
        with self._lock:
            self._faults.extend([Fault(status=status, location=MOVED)] * times)
            self.moved_status = page

    def slow(self, seconds: float, times: int = 1) -> None:
        """The next ``times`` requests are recorded, then answered 200 after ``seconds``."""
        with self._lock:
            self._faults.extend([Fault(delay=seconds)] * times)

    def refuse(self, message_id: str) -> None:
        """Answer 400 to any request holding ``message_id`` (a message Segment will not take)."""
        with self._lock:
            self.refused_ids.add(message_id)

    # -- what arrived -------------------------------------------------------------------

    def message_ids(self) -> list[str]:
        """The messageId of every recorded message, duplicates included, in arrival order."""
        with self._lock:
            return [a.message["messageId"] for a in self.arrivals]

    def first_arrivals(self) -> list[dict[str, Any]]:
        """Each distinct messageId's first recorded copy, in arrival order."""
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        with self._lock:
            for arrival in self.arrivals:
                mid = arrival.message["messageId"]
                if mid not in seen:
                    seen.add(mid)
                    out.append(arrival.message)
        return out

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Block until ``count`` distinct messageIds arrived (or fail)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                distinct = len({a.message["messageId"] for a in self.arrivals})
            if distinct >= count:
                return
            time.sleep(0.02)
        raise AssertionError(f"only {distinct} of {count} messages arrived")

    # -- handling -----------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        with self._lock:
            self._sockets.add(handler.connection)
        if handler.path == MOVED:
            handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
            with self._lock:
                self.moved += 1
            handler.answer(self.moved_status, {"code": "moved", "message": "a page elsewhere"})
            return
        if handler.path != "/v1/batch":
            handler.answer(404, {"code": "not_found", "message": "no such endpoint"})
            return
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        expected = "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()
        if handler.headers.get("Authorization") != expected:
            with self._lock:
                self.unauthorized += 1
            handler.answer(401, {"code": "unauthorized", "message": "invalid write key"})
            return
        if handler.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if len(body) > MAX_BODY:
            handler.answer(400, {"code": "too_large", "message": "batch over 500 KB"})
            return
        try:
            batch = json.loads(body)["batch"]
        except (ValueError, KeyError, TypeError):
            handler.answer(400, {"code": "invalid_json", "message": "invalid JSON"})
            return
        if any(len(json.dumps(m).encode()) > MAX_MESSAGE for m in batch):
            handler.answer(400, {"code": "too_large", "message": "message over 32 KB"})
            return
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            number = len(self.requests) + 1
            refused = any(m.get("messageId") in self.refused_ids for m in batch)
        retries = int(handler.headers.get("X-Retry-Count") or 0)
        if fault is not None and fault.status is not None:
            self._log(number, fault.status, batch, len(body), retries, record=False)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            if fault.location:
                headers["Location"] = fault.location
            time.sleep(fault.delay)
            answer = (
                fault.body if fault.body is not None else {"code": "fault", "message": "injected"}
            )
            with contextlib.suppress(OSError):
                handler.answer(fault.status, answer, headers)
            return
        if refused:
            self._log(number, 400, batch, len(body), retries, record=False)
            handler.answer(400, {"code": "invalid_request", "message": "refused message"})
            return
        self._log(number, 200, batch, len(body), retries, record=True)
        delay = self.delay + (fault.delay if fault is not None else 0.0)
        if delay:
            time.sleep(delay)
        # The client may have given up or been killed: the batch was received all the same.
        with contextlib.suppress(OSError):
            handler.answer(200, {"success": True})

    def _log(
        self,
        number: int,
        status: int,
        batch: list[dict[str, Any]],
        size: int,
        retries: int,
        *,
        record: bool,
    ) -> None:
        with self._lock:
            self.requests.append(Request(number, status, batch, size, retries))
            if record:
                for message in batch:
                    self.arrivals.append(Arrival(len(self.arrivals) + 1, number, message))
        if record:
            self.received.set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    segment: FakeSegment

    def do_POST(self) -> None:
        self.segment._handle(self)

    def do_GET(self) -> None:
        self.segment._handle(self)

    def answer(
        self, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None
    ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port

"""Forward accepted events to Segment: the outbox relay, on ``segment-analytics-python``.

Every accepted event has a pending row in the ``outbox`` table, written in the
transaction that stored it (see :mod:`lifecycle.store.outbox`). A
:class:`Relay` repeats one cycle: take a batch of pending rows, send their
stored messages with the client library's batch request function, and record
the answer. What it guarantees:

* **At least once.** A row is marked delivered only after Segment answered 200
  for a request holding it. A relay that dies between the answer and the
  record sends the row again; every copy carries the event's ``messageId``
  (one is derived from the event when the message had none), on which Segment
  de-duplicates.
* **Per-account order.** Version n+1 of an account is sent only after version n
  was delivered or parked, or earlier in the same request.
* **No skipped events.** There is no "delivered up to" mark: a row is pending
  until it is sent, however late its transaction committed.
* **Several relays.** On PostgreSQL and MariaDB a batch locks the first pending
  row of each of its accounts (``FOR UPDATE SKIP LOCKED``) until its outcome is
  recorded, so concurrent relays take disjoint accounts. On SQLite run one
  relay (a second one only sends duplicates, with the same ``messageId``), or
  one per shard: ``shard=(i, n)`` takes the accounts that hash to ``i`` of ``n``.

Transient failures (timeouts, refused connections, 408, 429, 5xx) leave the
rows pending and the relay waits — exponential backoff with jitter, or
``Retry-After`` when the answer carries one. A request Segment refuses for
good (another 4xx) is split in halves until the refused message stands alone;
that one is *parked* with the answer, and the rest go on. A message larger
than Segment's 32 KB limit, with a ``messageId`` over its 100 characters, or
nested too deeply for the client library to write as JSON, is parked without
being sent. 401, 403, 404 (and 405, 407, 410, 421, 451, a redirect, a 2xx other than 200, a
certificate that does not verify) mean the write key or the host is wrong: the relay
stops with :class:`RelayError` and parks nothing.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from lifecycle.errors import RelayError, StoreError, database_error, first_line, in_brackets
from lifecycle.spec import EARLIEST_TIMESTAMP
from lifecycle.store import outbox
from lifecycle.store.codec import iso_utc, now, utc_naive
from lifecycle.store.engine import (
    for_writing,
    is_transient,
    one_snapshot,
    open_engine,
    shown_url,
    unreachable,
)
from lifecycle.store.migrate import ensure_schema
from lifecycle.store.outbox import OutboxStatus, ParkedEvent, Pending
from lifecycle.wire import MAX_MESSAGE_BYTES, MAX_MESSAGE_ID_CHARS, as_sent, sent_size

log = logging.getLogger("lifecycle.relay")

#: Segment's HTTP API in the US; EU workspaces use ``https://events.eu1.segmentapis.com``.
DEFAULT_HOST = "https://api.segment.io"
#: How many times a transaction that a deadlock ended is run before the error stands.
TRANSIENT_ATTEMPTS = 6
#: Where the command line reads the write key from when ``--write-key`` is not given.
WRITE_KEY_ENV = "LIFECYCLE_SEGMENT_WRITE_KEY"
#: Where the relay takes Segment's API from when given none (an EU workspace's, say).
HOST_ENV = "LIFECYCLE_SEGMENT_HOST"
#: How long :meth:`Relay.prune` keeps delivered rows by default: a week to look into them.
KEEP_DELIVERED = timedelta(days=7)
#: No row was delivered before the first instant the store holds.
_EARLIEST = utc_naive(EARLIEST_TIMESTAMP)
#: A request body stays under Segment's 500 KB, with the client library's margin for the envelope.
MAX_REQUEST_BYTES = 475_000
#: Segment answers 200 to a larger batch and drops the excess.
MAX_REQUEST_EVENTS = 2_500

_RETRY_STATUS = frozenset({408, 429})
#: Answers that say the write key or the host is wrong: parking the batch would be wrong.
#: 410 (gone), 421 (misdirected) and 451 (unavailable for legal reasons) are about the
#: address, not a message: taken as refusals, each parked every event, one by one.
_CONFIG_STATUS = frozenset({401, 403, 404, 405, 407, 410, 421, 451})
_DETAIL_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait after a failed request: exponential with jitter, or ``Retry-After``.

    The n-th failure in a row waits a random time between half and all of
    ``base * 2 ** (n - 1)`` (at most ``cap``). An answer with ``Retry-After``
    waits what it asks (at most ``max_retry_after``) plus up to ``base`` of jitter,
    so that several relays do not come back at the same instant.
    """

    base: float = 0.5
    cap: float = 60.0
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        for name in ("base", "cap", "max_retry_after"):
            _check_seconds(f"Backoff.{name}", getattr(self, name))

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` failed requests in a row."""
        jitter = random.random()
        if retry_after is not None:
            return min(retry_after, self.max_retry_after) + jitter * self.base
        # The exponent stops growing long before a float would overflow (2.0 ** 1024
        # raised after a day of failures): by then the cap decides.
        doubling = 2.0 ** min(max(0, failures - 1), 64)
        ceiling = min(self.cap, self.base * doubling)
        return ceiling * (0.5 + jitter / 2)


@dataclass
class RelayReport:
    """What a relay did: events delivered and parked, requests sent, failed attempts."""

    delivered: int = 0
    parked: int = 0
    requests: int = 0
    failures: int = 0

    def to_dict(self) -> dict[str, int]:
        """JSON-ready counts."""
        return {
            "delivered": self.delivered,
            "parked": self.parked,
            "requests": self.requests,
            "failures": self.failures,
        }


# -- one request -----------------------------------------------------------------------------

_OK, _RETRY, _REFUSED, _FATAL = "ok", "retry", "refused", "fatal"
#: The client library could not write the request as JSON, so nothing was sent; the
#: relay bisects it like a refusal to park the message that cannot be written.
_UNSENDABLE = "unsendable"
_REFUSALS = (_REFUSED, _UNSENDABLE)

#: Why a message is parked that the client library cannot write as JSON. Since the
#: gate's depth limit none is accepted; one stored before it must not stop the relay.
TOO_DEEP_TO_SEND = "the message is nested too deeply for the client library to write as JSON"


@dataclass(frozen=True, slots=True)
class _Answer:
    kind: str
    detail: str = ""
    retry_after: float | None = None


class _Segment:
    """The client library's batch request function, and what its answers mean for a relay."""

    def __init__(self, write_key: str, host: str, timeout: float, gzip: bool) -> None:
        try:
            import requests
            import urllib3
            from segment.analytics import request
        except ImportError as exc:
            raise RelayError(
                "forwarding to Segment needs segment-analytics-python: "
                "pip install 'lifecycle[segment]'"
            ) from exc
        self._post = request.post
        self._api_error: type[Exception] = request.APIError
        self._transient: tuple[type[Exception], ...] = (
            requests.exceptions.Timeout,
            requests.exceptions.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
        )
        self._invalid: tuple[type[Exception], ...] = (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.TooManyRedirects,
            # A host with an empty or overlong label ("api..segment.io"): urllib3 raises
            # it when it connects, unwrapped by requests.
            urllib3.exceptions.LocationValueError,
        )
        self._tls: type[Exception] = requests.exceptions.SSLError
        self._request_error: type[Exception] = requests.exceptions.RequestException
        self.write_key = write_key
        self.host = host
        self.timeout = timeout
        self.gzip = gzip
        #: Requests sent, whether or not what they delivered was then recorded.
        self.sent = 0

    def send(self, batch: list[dict[str, Any]], retry_count: int) -> _Answer:
        """POST ``batch`` to ``/v1/batch``; classify the outcome."""
        try:
            response = self._post(
                self.write_key,
                self.host,
                gzip=self.gzip,
                timeout=self.timeout,
                retry_count=retry_count,
                batch=batch,
            )
        except self._api_error as exc:
            return _classify(exc)
        except self._invalid as exc:
            return _Answer(_FATAL, f"{type(exc).__name__}: {exc}")
        except self._tls as exc:
            return _Answer(_FATAL if _wrong_tls(exc) else _RETRY, f"{type(exc).__name__}: {exc}")
        except self._transient as exc:
            return _Answer(_RETRY, f"{type(exc).__name__}: {exc}")
        except self._request_error as exc:
            return _Answer(_RETRY, f"{type(exc).__name__}: {exc}")
        except RecursionError as exc:
            answered = _answer_being_read(exc)
            if answered is None:
                return _Answer(_UNSENDABLE, TOO_DEEP_TO_SEND)
            # An error body nested too deep to decode: still an answer, by its status.
            shown = "(a body nested too deeply to read)"
            return _classify(self._api_error(answered.status_code, "unknown", shown, answered))
        return _success(response)


def _answer_being_read(error: RecursionError) -> Any:
    """The response the client library was decoding when ``error`` rose, or None when
    the error rose writing the request (nothing was sent).

    The library decodes an error answer's body to quote it; one nested deeper than
    Python recurses (a broken proxy's, say) raised the same error as a message too deep
    to write, and healthy events behind a 503 or a 401 were parked as "too deep".
    """
    frames = error.__traceback__
    while frames is not None:
        frame = frames.tb_frame
        response = frame.f_locals.get("res") if frame.f_code.co_name == "post" else None
        if response is not None and hasattr(response, "status_code"):
            return response
        frames = frames.tb_next
    return None


def _wrong_tls(error: BaseException) -> bool:
    """Whether a TLS failure means the host is wrong, not that the network hiccuped.

    A certificate that does not verify, or ``https`` to a port that speaks plain
    http, fails the same way every time (and a ConnectionError would be retried for
    ever); a handshake a busy load balancer cuts short is worth another try.
    """
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError) or "WRONG_VERSION_NUMBER" in str(
            getattr(cause, "reason", "") or ""
        ):
            return True
        cause = cause.__cause__ or cause.__context__ or _first_arg_error(cause)
    return False


def _first_arg_error(error: BaseException) -> BaseException | None:
    """urllib3 wraps the ssl error in its arguments rather than as a cause."""
    return next((a for a in error.args if isinstance(a, BaseException)), None)


def _redirected(response: Any) -> _Answer | None:
    """A fatal answer when the HTTP client followed a redirect to get ``response``."""
    hops = getattr(response, "history", None)
    if not hops:
        return None
    codes = ", ".join(str(hop.status_code) for hop in hops)
    return _Answer(
        _FATAL,
        f"the host redirected the request (HTTP {codes}) to {response.url}, which answered"
        f" {response.status_code}: nothing is taken as delivered; use Segment's API host",
    )


def _success(response: Any) -> _Answer:
    """What a 2xx answer means: delivered only when Segment's API itself answered 200.

    The HTTP client follows redirects, so a 2xx may come from elsewhere: after a 301,
    302 or 303 it fetched the new address with a bodiless GET, so nothing was uploaded.
    Either way the host is wrong, as it is for a 2xx other than Segment's 200.
    """
    redirected = _redirected(response)
    if redirected is not None:
        return redirected
    status = getattr(response, "status_code", 200)
    if status != 200:
        return _Answer(_FATAL, f"HTTP {status}: Segment's API answers 200; not taken as delivered")
    return _Answer(_OK)


def _classify(exc: Any) -> _Answer:
    """What a non-2xx answer (the library's ``APIError``) means."""
    status = exc.status if isinstance(exc.status, int) else 0
    response = getattr(exc, "response", None)
    redirected = _redirected(response)
    if redirected is not None:  # the page it led to refused: no verdict on the events
        return redirected
    body = getattr(response, "text", None) or str(exc.message)
    detail = f"HTTP {status}: {body}"[:_DETAIL_CHARS]
    if status in _RETRY_STATUS or status >= 500:
        return _Answer(_RETRY, detail, _retry_after(response))
    if status in _CONFIG_STATUS or not 400 <= status < 500:
        return _Answer(_FATAL, detail)
    return _Answer(_REFUSED, detail)


def _retry_after(response: Any) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), if the answer has one."""
    headers = getattr(response, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return _advice(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _advice((when - datetime.now(UTC)).total_seconds())


def _advice(seconds: float) -> float | None:
    """A wait ``Retry-After`` asks for, or None where it asks for none ("0", "nan", "-5", a
    date gone by): no advice, and the backoff stands. Taken as "retry now", a server that
    kept answering 429 with ``Retry-After: 0`` was asked several times a second."""
    return seconds if math.isfinite(seconds) and seconds > 0 else None


# -- preparing messages ------------------------------------------------------------------------


_T = TypeVar("_T")

#: A message ready to send: (outbox row id, message, size in bytes).
_Item = tuple[int, dict[str, Any], int]


def _prepare(row: Pending) -> _Item | str:
    """The message to send for ``row`` (see :func:`lifecycle.wire.as_sent`) and its
    size, or why it is parked unsent.

    The gate refuses what Segment would refuse, so only a store written before it
    did can hold a message parked here.
    """
    row_id, message_id, created_at, payload = row
    if len(message_id) > MAX_MESSAGE_ID_CHARS:
        # Segment would answer 200 and still not take it as this id: de-duplication
        # could no longer hold, so the event waits for a person instead.
        return (
            f"the messageId is {len(message_id)} characters, over Segment's"
            f" {MAX_MESSAGE_ID_CHARS}-character limit"
        )
    if payload is None:
        return "its event is no longer stored (deleted outside lifecycle)"
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "the stored payload is not JSON"
    if type(message) is not dict:
        return "the stored payload is not a JSON object"
    as_sent(message, message_id, _instant(created_at))
    try:
        size = _size(payload, message)
    except RecursionError:
        return TOO_DEEP_TO_SEND
    if size > MAX_MESSAGE_BYTES:
        return f"the message is {size} bytes, over Segment's {MAX_MESSAGE_BYTES}-byte limit"
    return row_id, message, size


_ESTIMATED = MAX_MESSAGE_BYTES // 8


def _size(payload: str, message: dict[str, Any]) -> int:
    """The size of ``message`` (``payload`` as sent) as the client library measures it,
    for cutting requests within Segment's 500 KB.

    Measuring costs as much as sending, so a message stored in under 4 KB of ASCII
    is estimated: decoded and written again, it grows by one space per ``,`` and
    ``:``, by five bytes per DEL (written ``\u007f``), by what
    :func:`~lifecycle.wire.as_sent` adds (at most 128 bytes), and by
    the longer spelling of some floats (``1e15`` becomes ``1000000000000000.0``). The
    estimate counts all but the floats, so only a request dense in such numbers can
    come out over 500 KB; Segment's 400 is then bisected like any refusal. (It had
    been the stored size plus an eighth, and requests of small numbers or short keys
    came out at 600 KB.) The others are measured exactly.
    """
    n = len(payload)
    if n < _ESTIMATED and payload.isascii():
        return n + payload.count(",") + payload.count(":") + 5 * payload.count("\x7f") + 128
    return sent_size(message)


def _again(error: Exception, attempt: int, what: str) -> bool:
    """Whether to run a transaction again that ``error`` ended (after a short, random wait).

    Relays, writers, prunes and backfills lock the same outbox rows in different
    orders, so PostgreSQL and MariaDB now and then end one of them to break a
    deadlock. The transaction was rolled back whole, so running it again is safe;
    after :data:`TRANSIENT_ATTEMPTS` tries the error stands.
    """
    cause = error.__cause__ if isinstance(error, StoreError) else error
    if attempt + 1 >= TRANSIENT_ATTEMPTS or not (
        isinstance(cause, DBAPIError) and is_transient(cause)
    ):
        return False
    log.warning("%s: %s; running it again", what, first_line(cause))
    time.sleep(random.uniform(0, 0.05 * 2**attempt))
    return True


def _retrying(what: str, work: Callable[[], _T]) -> _T:
    """``work()``, run again while :func:`_again` says so."""
    attempt = 0
    while True:
        try:
            return work()
        except (StoreError, DBAPIError) as exc:
            if not _again(exc, attempt, what):
                raise
            attempt += 1


def _gave_up(failures: int, why: str) -> RelayError:
    """The error of a relay that reached ``max_failures`` failed attempts in a row."""
    return RelayError(
        f"gave up after {failures} failed attempt{'s' * (failures != 1)} in a row{why}"
    )


#: The longest wait the relay takes: the HTTP client fails on a timeout past what the
#: platform's clock can hold (``1e300``), and only when the first request is sent.
MAX_SECONDS = 7 * 86_400


def _check_seconds(name: str, value: float) -> None:
    """Refuse a wait that is not a finite number of seconds above zero.

    A negative backoff would retry without pause, an infinite one never, and the
    HTTP client refuses a timeout of zero, but only when the first request is made.
    """
    if not 0 < value <= MAX_SECONDS:
        raise ValueError(
            f"{name} must be a number of seconds above 0 and at most {MAX_SECONDS} (a week),"
            f" got {value}"
        )


def _check_host(host: str | None) -> None:
    """Refuse a host the client library could not send to, before anything is read."""
    if host is None:
        return
    try:
        parts = urlsplit(host)
        parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
    except ValueError:  # "http://[::1": an unclosed IPv6 address
        parts = None
    unprintable = any(c.isspace() or not c.isprintable() for c in host)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or unprintable:
        raise RelayError(
            f"host {host!r}: expected an http(s) URL such as {DEFAULT_HOST} (the client "
            "library adds /v1/batch)"
        )
    if parts.username is not None or parts.password is not None:
        # The HTTP client would send them as the Basic auth that carries the write key.
        raise RelayError(
            f"host {host!r}: a user or password in the host would replace the write key;"
            " give the scheme, host and path only"
        )
    if parts.port == 0:
        raise RelayError(f"host {host!r}: port 0 is no port to send to")
    if "?" in host or "#" in host:
        # The library appends /v1/batch to the text: it would land in the query or be cut off.
        raise RelayError(
            f"host {host!r}: a query or fragment cannot take the /v1/batch the client library"
            " appends; give the scheme, host and path only"
        )


def _instant(value: Any) -> str:
    """A stored naive-UTC instant (a datetime, or SQLite's text) as ISO 8601 with ``Z``."""
    if isinstance(value, datetime):
        return iso_utc(value)
    return str(value).replace(" ", "T") + "Z"


def _requests(items: list[_Item]) -> list[list[_Item]]:
    """``items`` in order, cut into requests within Segment's size and count limits."""
    out: list[list[_Item]] = []
    current: list[_Item] = []
    total = 0
    for item in items:
        size = item[2]
        if current and (total + size > MAX_REQUEST_BYTES or len(current) >= MAX_REQUEST_EVENTS):
            out.append(current)
            current, total = [], 0
        current.append(item)
        total += size
    if current:
        out.append(current)
    return out


@dataclass
class _Outcome:
    """One cycle's result, as it is recorded in the outbox."""

    rows: int = 0
    requests: int = 0
    delivered: list[int] = field(default_factory=list)
    parked: list[tuple[int, str]] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    error: str | None = None
    retry_after: float | None = None
    fatal: bool = False


# -- the relay ---------------------------------------------------------------------------------


class Relay:
    """Deliver the outbox to Segment: every accepted event, at least once, in per-account order.

    Create it from a database URL or an SQLAlchemy :class:`~sqlalchemy.engine.Engine`
    (the same store a :class:`~lifecycle.Lifecycle` writes)::

        relay = Relay("postgresql://...", write_key=KEY)
        relay.run()                 # deliver what is pending, then return
        relay.run(follow=True)      # keep delivering until stop()
        relay.start()               # run(follow=True) in a background thread

    ``host`` is Segment's API (``https://events.eu1.segmentapis.com`` for EU
    workspaces); ``batch_size`` events are taken per cycle (cut further at
    Segment's 500 KB per request); ``timeout`` bounds each connect and read;
    ``poll_interval`` is how long a following relay sleeps when nothing is
    pending (:meth:`wake` cuts it short). The write key defaults to
    ``$LIFECYCLE_SEGMENT_WRITE_KEY`` and the host to ``$LIFECYCLE_SEGMENT_HOST``,
    as on the command line.

    ``shard=(i, n)`` makes this relay deliver only the accounts that hash to
    ``i`` of ``n``: run ``n`` relays, one per shard, to spread the work over
    processes (on SQLite, the only safe way to run several). An account belongs
    to one shard, so its order is kept.
    """

    def __init__(
        self,
        bind: str | Engine | None = None,
        *,
        write_key: str | None = None,
        host: str | None = None,
        batch_size: int = 500,
        timeout: float = 15.0,
        gzip: bool = False,
        backoff: Backoff | None = None,
        poll_interval: float = 1.0,
        shard: tuple[int, int] = outbox.ALL,
        create_schema: bool | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_REQUEST_EVENTS:
            raise ValueError(f"batch_size must be between 1 and {MAX_REQUEST_EVENTS}")
        if not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard {shard[0]} of {shard[1]}: expected 0 <= index < count")
        if shard[1] > outbox.SHARDS:
            # Accounts hash to 0..65535: a higher index matches none (and a count past 64
            # bits overflowed SQLite's integers at the first read).
            raise ValueError(f"shard {shard[0]} of {shard[1]}: at most {outbox.SHARDS} shards")
        _check_seconds("timeout", timeout)
        _check_seconds("poll_interval", poll_interval)
        _check_host(host)
        # As the write key: an EU application configured both, and its events went to the
        # US endpoint, which answers 200 and keeps nothing of another region's key. A bad
        # one stops what sends (run), not `status` and the other outbox commands.
        host = host or os.environ.get(HOST_ENV) or None
        self._owns_engine = not isinstance(bind, Engine)
        self.engine: Engine = open_engine(bind)
        self.write_key = write_key or os.environ.get(WRITE_KEY_ENV)
        self.host = host or DEFAULT_HOST
        self.batch_size = batch_size
        self.timeout = timeout
        self.gzip = gzip
        self.backoff = backoff or Backoff()
        self.poll_interval = poll_interval
        self.shard = shard
        self.error: BaseException | None = None
        self._write_engine = for_writing(self.engine)
        self._locking = self.engine.dialect.name in ("postgresql", "mysql", "mariadb")
        self._stop = False
        self._wake = False
        self._thread: threading.Thread | None = None
        if create_schema is None:
            create_schema = self.engine.dialect.name == "sqlite"
        try:
            ensure_schema(self.engine, create=create_schema)
        except DBAPIError as exc:
            self.close()
            shown = shown_url(self.engine)
            raise StoreError(f"cannot open the event store: {shown!r}: {first_line(exc)}") from exc
        except BaseException:
            self.close()
            raise

    # -- running ----------------------------------------------------------------------------

    def check(self) -> None:
        """Raise the :class:`RelayError` :meth:`run` would raise before it sends anything: no
        write key, a host that is not a Segment API URL, or no client library installed.

        For a process that starts relays elsewhere (``relay --workers`` forks them) and
        should say what is wrong once, before they start."""
        self._segment()

    def _segment(self) -> _Segment:
        if not self.write_key:
            raise RelayError(f"no Segment write key: pass one, or set ${WRITE_KEY_ENV}")
        _check_host(self.host)
        return _Segment(self.write_key, self.host, self.timeout, self.gzip)

    def run(self, *, follow: bool = False, max_failures: int | None = None) -> RelayReport:
        """Deliver pending events until none is left (or, with ``follow``, until :meth:`stop`).

        Transient failures are retried after a backoff, for as long as it takes, or
        until ``max_failures`` attempts in a row have failed: then :class:`RelayError`
        (the events stay pending for the next run). Returns after the batch in flight
        when :meth:`stop` is called. Raises :class:`RelayError` when Segment refuses
        the write key or the host is wrong.
        """
        if max_failures is not None and max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        segment = self._segment()
        report = RelayReport()
        log.info("relaying to %s (%s)", self.host, "following" if follow else "until drained")
        try:
            self._loop(segment, report, follow, max_failures)
        except DBAPIError as exc:
            raise database_error(exc) from exc
        finally:
            self._stop = False
        return report

    def _loop(
        self, segment: _Segment, report: RelayReport, follow: bool, max_failures: int | None
    ) -> None:
        with ExitStack() as stack:
            if self._locking:
                cycle = self._locked_cycle
            else:
                # SQLite: one reading and one writing connection for the whole run.
                reader = stack.enter_context(self.engine.connect())
                writer = stack.enter_context(self._write_engine.connect())

                def cycle(segment: _Segment, failures: int) -> _Outcome:
                    return self._sqlite_cycle(reader, writer, segment, failures)

            self._cycles(cycle, segment, report, follow, max_failures)

    def _cycles(
        self,
        cycle: Callable[[_Segment, int], _Outcome],
        segment: _Segment,
        report: RelayReport,
        follow: bool,
        max_failures: int | None,
    ) -> None:
        failures = 0
        already_sent = segment.sent
        while not self._stop:
            try:
                # A cycle that a deadlock ended sent nothing, or was not recorded: run it
                # again (what was sent goes again, with the same messageIds: at least once).
                outcome = _retrying("relay", functools.partial(cycle, segment, failures))
                drained = outcome.rows == 0 and not follow and self.pending() == 0
            except (StoreError, DBAPIError) as exc:
                # Counted as sent, not as recorded: a cycle whose record failed had sent
                # its requests all the same, and sends them again.
                report.requests = segment.sent - already_sent
                failures += 1
                report.failures += 1
                self._sleep(self._outage(exc, failures, max_failures), wakeable=False)
                continue
            report.requests = segment.sent - already_sent
            report.delivered += len(outcome.delivered)
            report.parked += len(outcome.parked)
            for row_id, reason in outcome.parked:
                log.warning("parked outbox row %d: %s", row_id, reason)
            if outcome.delivered:
                log.info(
                    "delivered %d events in %d requests", len(outcome.delivered), outcome.requests
                )
            if outcome.fatal:
                raise RelayError(f"Segment refused the request: {outcome.error}")
            if outcome.failed:
                # In a row: a cycle that delivered or parked some events before one request
                # failed made progress, and starts the count (and the backoff) again.
                failures = 1 if outcome.delivered or outcome.parked else failures + 1
                report.failures += 1
                if max_failures is not None and failures >= max_failures:
                    raise _gave_up(
                        failures, f" ({len(outcome.failed)} events left pending): {outcome.error}"
                    )
                wait = self.backoff.delay(failures, outcome.retry_after)
                log.warning(
                    "delivery of %d events failed (%s); retrying in %.2fs",
                    len(outcome.failed),
                    outcome.error,
                    wait,
                )
                self._sleep(wait, wakeable=False)
                continue
            failures = 0
            if drained:
                break
            if outcome.rows == 0:
                self._sleep(self.poll_interval if follow else min(self.poll_interval, 0.2))

    def _outage(self, error: Exception, failures: int, max_failures: int | None) -> float:
        """How long to wait after the database failed a cycle; raise ``error`` if it is not
        an outage, or :class:`RelayError` once ``max_failures`` cycles in a row failed.

        A relay runs for days: a database that restarts or fails over (connections cut,
        refused for a while) is waited out with the same backoff as Segment's failures,
        nothing having been marked. Other database errors still end the run.
        """
        cause = error.__cause__ if isinstance(error, StoreError) else error
        # Not every OperationalError: a permission denied or a missing table was waited
        # out for ever, the batch in flight sent again after every wait.
        if not isinstance(cause, DBAPIError) or not unreachable(cause):
            raise error
        said = in_brackets(cause)
        if max_failures is not None and failures >= max_failures:
            raise _gave_up(failures, f": the database is unavailable{said}") from error
        wait = self.backoff.delay(failures)
        log.warning("the database is unavailable%s; retrying in %.2fs", said, wait)
        return wait

    def stop(self) -> None:
        """Ask the relay to return after the batch in flight (safe from a signal handler)."""
        self._stop = True

    def wake(self) -> None:
        """Cut a following relay's idle wait short (call it after submitting events).

        A wait after a failure (the backoff, or what ``Retry-After`` asks) runs its
        course.
        """
        self._wake = True

    def start(self) -> threading.Thread:
        """Run ``run(follow=True)`` in a daemon thread; :meth:`close` stops and joins it.

        An exception that ends the thread is kept in :attr:`error` and logged.
        """
        if self._thread is not None and self._thread.is_alive():
            raise RelayError("this relay is already running")

        def target() -> None:
            try:
                self.run(follow=True)
            except BaseException as exc:
                self.error = exc
                log.exception("the relay stopped")

        self._thread = threading.Thread(target=target, name="lifecycle-relay", daemon=True)
        self._thread.start()
        return self._thread

    # -- reading the outbox -----------------------------------------------------------------

    def status(self) -> OutboxStatus:
        """Pending, delivered and parked counts, and when the oldest pending event was stored.

        Read in one snapshot (REPEATABLE READ on PostgreSQL and MariaDB): a prune that
        committed between the counts had its rows counted as delivered and as pruned.
        """
        with self._reading() as conn, one_snapshot(conn):
            return outbox.status(conn)

    def pending(self) -> int:
        """How many events of this relay's shard wait to be delivered."""
        with self._reading() as conn:
            return outbox.pending_count(conn, self.shard)

    def parked(self) -> list[ParkedEvent]:
        """The events Segment refused for good, with the answer that parked each."""
        with self._reading() as conn:
            return list(outbox.parked(conn))

    def requeue(self, *, account: str | None = None, message_ids: Sequence[str] = ()) -> int:
        """Send parked events again: those of ``account``, or with one of ``message_ids``,
        or every one when neither is given; returns how many were parked.

        For when what parked them is fixed: a proxy that answered 400 to everything
        parks every event, one by one. A requeued event goes out after the events of
        its account that were delivered meanwhile, with its own ``messageId``.
        """

        def work() -> int:
            with self._writing() as conn:
                return outbox.requeue(conn, account=account, message_ids=message_ids)

        return _retrying("requeue", work)

    def backfill(self, *, batch_size: int = 5000) -> int:
        """Enqueue stored events that have no outbox row; returns how many.

        For events stored before the outbox existed (schema revisions before 0003)
        or by a :class:`~lifecycle.Lifecycle` created with ``outbox=False``. Run it
        before the relay first delivers: an account's backfilled events are
        queued after its events already in the outbox. Several backfills may run
        at once: a batch that another one queued first is looked up again.
        """
        if batch_size < 1:  # 0 looped for ever
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        total = deadlocks = 0
        stuck: tuple[Any, ...] | None = None
        while True:
            rows: list[tuple[Any, ...]] = []
            try:
                with self._writing() as conn:
                    rows = outbox.unqueued(conn, batch_size)
                    outbox.enqueue(conn, rows)
            except StoreError as exc:
                if _again(exc, deadlocks, "backfill"):
                    deadlocks += 1
                    continue
                # Another backfill queued some of these rows first: look again, unless
                # the batch starts where the last refused one did (then it is no race).
                if not isinstance(exc.__cause__, IntegrityError) or not rows or rows[0] == stuck:
                    raise
                stuck = rows[0]
                continue
            deadlocks = 0
            total += len(rows)
            if len(rows) < batch_size:
                return total

    def prune(
        self,
        *,
        older_than: timedelta = KEEP_DELIVERED,
        batch_size: int = 500,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Delete outbox rows delivered more than ``older_than`` ago; returns how many.

        The outbox would otherwise grow by a row per event for good. For each
        account the rows go from its first one up to the first that is pending,
        parked or delivered more recently, and the store records that version:
        :meth:`backfill` leaves the account's events up to it alone, including
        any that were never queued. :meth:`status` counts them as ``pruned``.
        Relays, writers and other prunes may run meanwhile. Each
        transaction covers ``batch_size`` accounts; ``progress(done, total)`` is
        called after each with the number of accounts done and to do.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if older_than < timedelta(0):  # would prune what was delivered a moment ago
            raise ValueError(f"older_than cannot be negative, got {older_than}")
        # An age reaching back past the years the store holds keeps everything (and
        # ``now() - older_than`` would overflow before year 1).
        current = now()
        before = current - min(older_than, current - _EARLIEST)
        with self._reading() as conn:
            runs = outbox.prunable(conn, before)
        total = 0
        for start in range(0, len(runs), batch_size):
            batch = runs[start : start + batch_size]
            total += _retrying("prune", functools.partial(self._prune, batch, before))
            if progress is not None:
                progress(start + len(batch), len(runs))
        return total

    def _prune(self, runs: Sequence[tuple[str, int]], before: datetime) -> int:
        with self._writing() as conn:
            return outbox.prune(conn, runs, before, now())

    def close(self) -> None:
        """Stop a relay started with :meth:`start`, wait for it, release the pool."""
        self.stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one cycle --------------------------------------------------------------------------

    def _sqlite_cycle(
        self, reader: Connection, writer: Connection, segment: _Segment, failures: int
    ) -> _Outcome:
        """Take a batch, send it, record the outcome (one writer: no locks needed)."""
        with reader.begin():
            rows = outbox.first_pending(reader, self.batch_size, self.shard)
        outcome = self._deliver(segment, rows, failures)
        if outcome.rows:
            with writer.begin():
                self._record(writer, outcome)
        return outcome

    def _locked_cycle(self, segment: _Segment, failures: int) -> _Outcome:
        """The cycle on a server database: the batch's accounts stay locked until recorded."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                slots = outbox.window(conn, self.batch_size * 4, self.shard)
                chosen = outbox.lock_heads(conn, slots, self.batch_size)
                rows = outbox.load(conn, [slot.id for slot in chosen])
                outcome = self._deliver(segment, rows, failures)
                if outcome.rows:
                    self._record(conn, outcome)
            return outcome

    def _record(self, conn: Connection, outcome: _Outcome) -> None:
        outbox.settle(
            conn,
            delivered=outcome.delivered,
            parked=outcome.parked,
            failed=outcome.failed,
            error=outcome.error,
            at=now(),
        )

    def _deliver(self, segment: _Segment, rows: Sequence[Pending], failures: int) -> _Outcome:
        """Send ``rows`` in order; bisect refused requests; stop at the first transient failure."""
        outcome = _Outcome(rows=len(rows))
        items: list[_Item] = []
        for row in rows:
            prepared = _prepare(row)
            if isinstance(prepared, str):
                outcome.parked.append((row[0], prepared))
            else:
                items.append(prepared)
        queue = deque(_requests(items))
        while queue and not (self._stop and outcome.requests):
            # Asked to stop: after the request in flight (a refused batch is bisected in
            # up to twice as many requests as events); the rest stays pending, in order.
            chunk = queue.popleft()
            answer = segment.send([item[1] for item in chunk], failures)
            sent = answer.kind != _UNSENDABLE
            outcome.requests += sent
            segment.sent += sent
            if answer.kind == _OK:
                outcome.delivered.extend([item[0] for item in chunk])
            elif answer.kind in _REFUSALS and len(chunk) == 1:
                outcome.parked.append((chunk[0][0], answer.detail))
            elif answer.kind in _REFUSALS:
                half = len(chunk) // 2
                queue.extendleft([chunk[half:], chunk[:half]])
            else:
                outcome.failed = [item[0] for part in (chunk, *queue) for item in part]
                outcome.error = answer.detail
                outcome.retry_after = answer.retry_after
                outcome.fatal = answer.kind == _FATAL
                break
        return outcome

    # -- helpers ----------------------------------------------------------------------------

    def _sleep(self, seconds: float, *, wakeable: bool = True) -> None:
        """Wait ``seconds``, returning early on :meth:`stop`, and on :meth:`wake` if
        ``wakeable``: an idle wait, not a backoff or ``Retry-After`` (an application
        that wakes the relay after every submit would otherwise retry a failing
        Segment without pause)."""
        deadline = time.monotonic() + seconds
        while not self._stop and not (wakeable and self._wake):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(0.05, remaining))
        if wakeable:
            self._wake = False

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A read connection whose database errors become :class:`StoreError`."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except DBAPIError as exc:
            raise database_error(exc) from exc

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction, committed on exit, whose database errors become StoreError."""
        try:
            with self._write_engine.begin() as conn:
                yield conn
        except DBAPIError as exc:
            raise database_error(exc) from exc

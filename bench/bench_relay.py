"""Benchmark: the outbox relay against the client library sending from memory, same run.

Everything sends the same accepted events (100,000 by default) to the same local
HTTP server with ``segment-analytics-python``, in batches of the same size:

* **from memory**: the messages, already decoded and prepared exactly as the relay
  sends them, posted one batch after another with the library's batch request
  function — the floor: no database, no decoding;
* **relay**: ``Relay.run()`` (what ``lifecycle relay --once`` runs) in a process of
  its own, on a SQLite store whose outbox holds the events: read, decode, send,
  record; then ``--shards`` relays side by side, one per shard;
* **Client.track**: the library's public API from memory (``track`` per message,
  then ``flush``), for scale.

The server runs in its own process, reads each body and answers 200 at once (it
counts messages, to check that every side sent everything); ``--latency-ms`` makes
it wait that long before answering, as a server across a network does. The timed sides
alternate for ``--rounds`` rounds; the best round of each is compared. Results
are printed and written to ``bench/out/relay-EVENTS-SEED.json``.

    python bench/bench_relay.py
    python bench/bench_relay.py --events 20000 --rounds 3 --shards 4
    python bench/bench_relay.py --latency-ms 20
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import multiprocessing
import os
import platform
import random
import socket
import sys
import tempfile
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package

from common import OUT, lifecycle_command, measure, positive

WRITE_KEY = "bench-write-key"

USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
)


# -- the server --------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    counter: Any = None
    latency = 0.0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        # Counted before answering: once the client has its answer, the count is final.
        with self.counter.get_lock():
            self.counter.value += body.count(b'"messageId"')
        if self.latency:
            time.sleep(self.latency)
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Content-Length: 16\r\n\r\n{"success":true}'
        )

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(port: int, counter: Any, latency: float) -> None:
    _Handler.counter = counter
    _Handler.latency = latency
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the events --------------------------------------------------------------------------------


def histories(events: int, seed: int) -> list[dict[str, Any]]:
    """Legal account histories, interleaved, with the envelope a web source sends."""
    rng = random.Random(seed)
    accounts: list[list[dict[str, Any]]] = []
    total = 0
    n = 0
    while total < events:
        history = _account(f"acct_{n:06d}", rng)
        accounts.append(history)
        total += len(history)
        n += 1
    merged: list[dict[str, Any]] = []
    queues = [list(reversed(h)) for h in accounts]
    while queues:
        i = rng.randrange(len(queues))
        merged.append(queues[i].pop())
        if not queues[i]:
            queues[i] = queues[-1]
            queues.pop()
    return merged[:events]


def _account(account: str, rng: random.Random) -> list[dict[str, Any]]:
    owner = f"{account}-u0"
    users = [owner] + [f"{account}-u{k}" for k in range(1, rng.randint(2, 5))]
    out = [
        _message("Account Created", owner, account, rng, account_name=account.title()),
        _message("Signed Up", owner, account, rng, email=f"{owner}@example.com"),
        _message(
            "Trial Started", owner, account, rng,
            trial_plan_name="Pro", trial_start_date="2024-01-01",
        ),
    ]  # fmt: skip
    for user in users[1:]:
        out.append(_message("Invite Sent", owner, account, rng, invitee_email=f"{user}@x.io"))
        out.append(_message("Signed Up", user, account, rng, type="invited"))
    for _ in range(rng.randint(5, 12)):
        user = rng.choice(users)
        out.append(_message("Signed In", user, account, rng))
        out.append(_message("Signed Out", user, account, rng))
    return out


def _message(
    event: str, user: str, account: str, rng: random.Random, **properties: Any
) -> dict[str, Any]:
    return {
        "type": "track",
        "event": event,
        "userId": user,
        "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
        "timestamp": f"2024-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00.000Z",
        "context": {
            "groupId": account,
            "ip": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            "library": {"name": "analytics.js", "version": "5.2.0"},
            "locale": "en-US",
            "timezone": "Europe/Berlin",
            "userAgent": USER_AGENT,
        },
        "properties": properties,
        "integrations": {},
    }


# -- the two sides -----------------------------------------------------------------------------


def prepared_messages(url: str) -> list[dict[str, Any]]:
    """The outbox's messages exactly as the relay sends them, in the relay's order."""
    from lifecycle.relay import _prepare
    from lifecycle.store import outbox
    from lifecycle.store.engine import create_engine

    engine = create_engine(url)
    with engine.connect() as conn:
        rows = outbox.first_pending(conn, 10**9)
    engine.dispose()
    messages = []
    for row in rows:
        item = _prepare(row)
        assert not isinstance(item, str), item
        messages.append(item[1])
    return messages


def from_memory(messages: list[dict[str, Any]], host: str, batch: int) -> float:
    """Post every batch with the client library's batch request function."""
    from segment.analytics.request import post

    start = time.perf_counter()
    for i in range(0, len(messages), batch):
        post(WRITE_KEY, host, timeout=15, batch=messages[i : i + batch])
    return time.perf_counter() - start


def _shard_worker(
    url: str, host: str, batch: int, shard: tuple[int, int], ready: Any, go: Any
) -> None:
    from lifecycle.relay import Relay

    with Relay(url, write_key=WRITE_KEY, host=host, batch_size=batch, shard=shard) as r:
        gc.freeze()  # as `lifecycle relay` does once it has started
        ready.wait()
        go.wait()
        report = r.run()
        assert report.failures == 0 and report.parked == 0, report


def relay(url: str, host: str, batch: int, shards: int = 1) -> float:
    """``Relay.run()`` in ``shards`` processes (one per shard), timed from a common start.

    Each process opens its store and connects before the clock starts, as a
    long-running relay has; what is timed is reading, sending and recording.
    """
    context = multiprocessing.get_context("spawn")
    ready, go = context.Barrier(shards + 1), context.Barrier(shards + 1)
    workers = [
        context.Process(target=_shard_worker, args=(url, host, batch, (i, shards), ready, go))
        for i in range(shards)
    ]
    for worker in workers:
        worker.start()
    ready.wait()
    start = time.perf_counter()
    go.wait()
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    return time.perf_counter() - start


def reset_outbox(url: str) -> None:
    """Every row pending again (untimed)."""
    from sqlalchemy import update

    from lifecycle.store.engine import create_engine
    from lifecycle.store.schema import outbox

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(update(outbox).values(status="pending", delivered_at=None, attempts=0))
    engine.dispose()


def client_api(messages: list[dict[str, Any]], host: str, batch: int) -> float:
    """The client library's public API: ``Client.track`` for each message, then ``flush``.

    Arguments are prepared before the clock starts (timestamps parsed, contexts
    copied, since the client writes ``context.library`` into the one it gets).
    """
    from segment.analytics.client import Client

    calls = [
        dict(
            user_id=m["userId"],
            event=m["event"],
            properties=m["properties"],
            context=copy.deepcopy(m["context"]),
            timestamp=datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00")),
            message_id=m["messageId"],
            integrations=m["integrations"],
        )
        for m in messages
    ]
    client = Client(
        WRITE_KEY, host=host, upload_size=batch, upload_interval=0.05, max_queue_size=len(calls)
    )
    start = time.perf_counter()
    for call in calls:
        client.track(**call)
    client.flush()
    elapsed = time.perf_counter() - start
    client.shutdown()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=positive, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rounds", type=positive, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--shards", type=positive, default=2, help="also run this many relays (1: no)"
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="the server waits this long per request"
    )
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)

    from lifecycle.service import Lifecycle

    counter = multiprocessing.Value("q", 0)
    port = free_port()
    server = multiprocessing.Process(
        target=_serve, args=(port, counter, args.latency_ms / 1000), daemon=True
    )
    server.start()
    host = f"http://127.0.0.1:{port}"

    def rate(seconds: list[float]) -> float:
        return len(prepared) / min(seconds)

    def check(before: int, side: str) -> None:
        assert counter.value - before == len(prepared), f"{side} did not send everything"

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'relay.db'}"
        messages = histories(args.events, args.seed)
        started = time.perf_counter()
        with Lifecycle(url) as store:
            for i in range(0, len(messages), 1000):
                verdicts = store.submit_many(messages[i : i + 1000])
                assert all(v.verdict == "accepted" for v in verdicts)
        print(f"stored {len(messages)} events in {time.perf_counter() - started:.1f}s")
        prepared = prepared_messages(url)
        size = sum(len(json.dumps(m)) for m in prepared) / len(prepared)
        gc.freeze()  # the messages in memory are never garbage: spare the collector
        print(f"{len(prepared)} messages, {size:.0f} bytes each on average")

        times: dict[str, list[float]] = {"memory": [], "relay": [], "shards": []}
        for n in range(args.rounds):
            before = counter.value
            times["memory"].append(from_memory(prepared, host, args.batch_size))
            check(before, "from memory")
            reset_outbox(url)
            before = counter.value
            times["relay"].append(relay(url, host, args.batch_size))
            check(before, "the relay")
            line = (
                f"round {n + 1}: from memory {len(prepared) / times['memory'][-1]:,.0f}/s, "
                f"relay {len(prepared) / times['relay'][-1]:,.0f}/s"
            )
            if args.shards > 1:
                reset_outbox(url)
                before = counter.value
                times["shards"].append(relay(url, host, args.batch_size, args.shards))
                check(before, "the sharded relays")
                line += f", {args.shards} relays {len(prepared) / times['shards'][-1]:,.0f}/s"
            print(line, flush=True)
        before = counter.value
        client_seconds = client_api(prepared, host, args.batch_size)
        check(before, "Client.track")
        cli_seconds = {}
        cli_peak_mb = {}
        for workers in sorted({1, args.shards}):
            reset_outbox(url)
            before = counter.value
            cli = measure(
                [*lifecycle_command(), "relay", "--once", "--db", url, "--host", host,
                 "--write-key", WRITE_KEY, "--batch-size", str(args.batch_size),
                 "--workers", str(workers)],
            )  # fmt: skip
            assert cli.exit_code == 0, f"relay --once exited {cli.exit_code}"
            check(before, "relay --once")
            cli_seconds[workers] = cli.wall_s
            cli_peak_mb[workers] = cli.peak_mb
    server.terminate()

    memory = rate(times["memory"])
    single = rate(times["relay"])
    sharded = rate(times["shards"]) if times["shards"] else None
    client = len(prepared) / client_seconds
    result = {
        "events": len(prepared),
        "batch_size": args.batch_size,
        "latency_ms": args.latency_ms,
        "message_bytes": round(size),
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "from_memory_events_per_s": round(memory),
        "relay_events_per_s": round(single),
        "ratio": round(single / memory, 3),
        "shards": args.shards if sharded else 1,
        "sharded_relay_events_per_s": round(sharded) if sharded else None,
        "sharded_ratio": round(sharded / memory, 3) if sharded else None,
        "client_track_events_per_s": round(client),
        "relay_vs_client_track": round(single / client, 3),
        "cli_once_seconds": round(cli_seconds[1], 2),
        "cli_once_workers_seconds": {n: round(t, 2) for n, t in cli_seconds.items()},
        "cli_once_peak_mb": round(cli_peak_mb[1], 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    rows = [("from memory (batch request function)", memory, "")]
    rows.append(("relay, one process", single, f"ratio {single / memory:.2f}"))
    if sharded:
        label = f"relay, {args.shards} shard processes"
        rows.append((label, sharded, f"ratio {sharded / memory:.2f}"))
    rows.append(("Client.track + flush", client, f"(the relay is {single / client:.1f}x)"))
    for label, value, note in rows:
        print(f"{label:<38}{value:>10,.0f} events/s  {note}")
    for workers, seconds in cli_seconds.items():
        flag = f" --workers {workers}" if workers > 1 else ""
        print(
            f"`lifecycle relay --once{flag}` as a process took {seconds:.1f}s, "
            f"peak {cli_peak_mb[workers]:.0f} MB (its largest process)"
        )
    name = f"relay-{len(prepared)}-{args.seed}"
    name += f"-{args.latency_ms:g}ms.json" if args.latency_ms else ".json"
    (OUT / name).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A TCP proxy in front of a database server, to cut its connections on demand.

``cut()`` is what a server restart or a failover looks like to its clients: every
open connection drops, and new ones are refused until ``restore()``. The database
itself keeps running, so the test can go on writing to it directly meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.relay.fake_segment import free_port


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target``; use as a context manager."""

    def __init__(self, host: str, port: int, *, cut_after: int | None = None) -> None:
        self.target = (host, port)
        self.port = free_port()
        #: Cut once clients have sent this many bytes in all (mid-transaction, at a size).
        self.cut_after = cut_after
        self._sent = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    def __enter__(self) -> TcpProxy:
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def restore(self) -> None:
        """Accept connections again (on the same port)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        if self._listener is not None:
            # Closing alone would not wake the thread blocked in accept(), which would go
            # on taking connections; shutting the socket down first does.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink, counted in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, counted), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if counted and self.cut_after is not None:
                    with self._lock:
                        self._sent += len(data)
                        over = self._sent > self.cut_after
                    if over:
                        self.cut()
                        return
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

"""The Prometheus endpoint, served from the broker's own loop (``METRICS.listen``).

No thread and no HTTP library: the listening socket and each scrape's
connection are non-blocking file descriptors in the broker's poller, so an
idle endpoint costs no wake-up at all, and a scrape is answered between two
bus messages. A page is rendered (``common.promtext``) from the snapshot the
broker stores once a second (at most ``bus.REGISTRY_INTERVAL`` old), so
nothing is added to the path of a frame.

HTTP, as much as a scraper needs: ``GET`` (or ``HEAD``) of ``/metrics`` (or
``/``) answers 200 with the page, another path 404, another method 405, a
request that does not end its headers within ``REQUEST_MAX_BYTES`` 431; every
answer closes the connection. At most ``CONNECTIONS_MAX`` scrapes are served
at once (more wait in the listen backlog), and a connection that has not got
its answer within ``CONNECTION_TIMEOUT_S`` is closed: a slow or stuck client
can hold neither the broker nor the endpoint. A port that cannot be bound is
logged and counted and the broker goes on without metrics.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from common import promtext
from common.checks import split_listen
from common.metrics import families

log = logging.getLogger("meterlink.metrics")

POLLIN = 1  # zmq.POLLIN, zmq.POLLOUT: the broker's poller takes raw fds with these
POLLOUT = 2
REQUEST_MAX_BYTES = 8192
CONNECTIONS_MAX = 8
CONNECTION_TIMEOUT_S = 10.0
BACKLOG = 16
ACCEPT_PAUSE_S = 1.0  # the listener rests this long after accept() failed


def version() -> str:
    """This package's version from its installed metadata, read directly:
    ``importlib.metadata`` would cost the broker ~1 MB of imports for one line."""
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.startswith("meterlink-") and name.endswith(".dist-info"):
                try:
                    with open(os.path.join(entry, name, "METADATA"), encoding="utf-8") as fh:
                        for line in fh:
                            if line.startswith("Version:"):
                                return line.split(":", 1)[1].strip()
                            if not line.strip():
                                break
                except OSError:
                    continue
    return "0+unknown"


class _Conn:
    __slots__ = ("deadline", "inbuf", "out", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbuf = b""
        self.out: memoryview | None = None


class MetricsServer:
    """``start()`` binds ``host:port``; the broker polls ``wanted()`` and calls
    ``handle(fd)`` when one is ready and ``expire(now)`` now and then."""

    def __init__(self, listen: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.listen = listen
        self.snapshot = snapshot
        self.version = version()
        self.scrapes = 0
        self.errors = 0
        self._sock: socket.socket | None = None
        self._conns: dict[int, _Conn] = {}
        # After accept() failed (out of file descriptors...): the listener is
        # not polled until then, or the pending connection would spin the loop.
        self._paused_until = 0.0

    def start(self) -> bool:
        where = split_listen(self.listen)
        if where is None:
            log.error("metrics off reason=bad_listen listen=%r", self.listen)
            return False
        host, port = where
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            log.warning("metrics off reason=bind listen=%s error=%s", self.listen, exc)
            return False
        sock.setblocking(False)
        self._sock = sock
        log.info("metrics serving listen=%s path=/metrics", self.listen)
        return True

    def render(self) -> bytes:
        return promtext.render(families(self.snapshot(), self.version))

    # -- in the broker's loop -------------------------------------------------------------

    def wanted(self) -> dict[int, int]:
        """The fds to poll and for what: the listener while there is room for
        another scrape, each connection for its request or for room to answer."""
        out: dict[int, int] = {}
        if (
            self._sock is not None
            and len(self._conns) < CONNECTIONS_MAX
            and time.monotonic() >= self._paused_until
        ):
            out[self._sock.fileno()] = POLLIN
        for fd, conn in self._conns.items():
            out[fd] = POLLIN if conn.out is None else POLLOUT
        return out

    def handle(self, fd: int) -> None:
        if self._sock is not None and fd == self._sock.fileno():
            self._accept()
            return
        conn = self._conns.get(fd)
        if conn is None:
            return
        try:
            if conn.out is None:
                self._read(fd, conn)
            else:
                self._write(fd, conn)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self.errors += 1
                log.debug("metrics connection error=%s", exc)
                self._close(fd)

    def expire(self, now: float) -> None:
        for fd, conn in list(self._conns.items()):
            if now >= conn.deadline:
                self.errors += 1
                log.debug("metrics connection timed out")
                self._close(fd)

    def _accept(self) -> None:
        assert self._sock is not None
        while len(self._conns) < CONNECTIONS_MAX:
            try:
                sock, _addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: tried again in a second
                self.errors += 1
                self._paused_until = time.monotonic() + ACCEPT_PAUSE_S
                log.warning("metrics accept failed error=%s action=pause_s:%g", exc, ACCEPT_PAUSE_S)
                return
            sock.setblocking(False)
            self._conns[sock.fileno()] = _Conn(sock, time.monotonic() + CONNECTION_TIMEOUT_S)

    def _read(self, fd: int, conn: _Conn) -> None:
        data = conn.sock.recv(REQUEST_MAX_BYTES)
        if not data:  # the client went away before asking
            self._close(fd)
            return
        conn.inbuf += data
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbuf.find(b"\n\n")
        if end < 0:
            if len(conn.inbuf) >= REQUEST_MAX_BYTES:
                self._answer(conn, 431, "Request Header Fields Too Large", b"", head=False)
                self._write(fd, conn)
            return
        line = conn.inbuf.split(b"\n", 1)[0].decode("latin-1").strip().split()
        method = line[0] if line else ""
        path = line[1].split("?", 1)[0] if len(line) > 1 else ""
        if method not in ("GET", "HEAD"):
            self._answer(conn, 405, "Method Not Allowed", b"", head=False)
        elif path not in ("/metrics", "/"):
            self._answer(conn, 404, "Not Found", b"", head=method == "HEAD")
        else:
            self.scrapes += 1
            try:
                body = self.render()
            except Exception:  # a bug in the page must not end the broker
                self.errors += 1
                log.exception("metrics page failed")
                self._answer(conn, 500, "Internal Server Error", b"", head=False)
            else:
                self._answer(conn, 200, "OK", body, head=method == "HEAD")
        self._write(fd, conn)

    def _answer(self, conn: _Conn, code: int, reason: str, body: bytes, head: bool) -> None:
        ctype = promtext.CONTENT_TYPE if code == 200 else "text/plain; charset=utf-8"
        if code != 200:
            body = f"{code} {reason}\n".encode()
        header = (
            f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        conn.out = memoryview(header if head else header + body)

    def _write(self, fd: int, conn: _Conn) -> None:
        if conn.out is None:
            return
        while conn.out:
            try:
                n = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                return  # the poller says when there is room
            conn.out = conn.out[n:]
        self._close(fd)

    def _close(self, fd: int) -> None:
        conn = self._conns.pop(fd, None)
        if conn is not None:
            try:
                conn.sock.close()
            except OSError:
                pass

    def stop(self) -> None:
        for fd in list(self._conns):
            self._close(fd)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

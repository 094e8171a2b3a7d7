"""A head-end system played by a test: a real TCP (optionally TLS) server on 127.0.0.1.

``FakeHES(port=0).start()`` listens on a free port (``.port``); every accepted
connection gets a thread that records what it receives (``.received(i)``, or
``.data()`` for everything in connection order; ``.listening_at`` and
``.accepted_at(i)`` say when, on the monotonic clock). ``.send(data)`` writes to the
newest connection, ``.flood(limit, duration)`` sends to it as fast as TCP lets
it, ``.drop()`` closes the connections but keeps listening,
``.stop()`` closes everything (the HES is gone) and ``.start()`` listens again
on the same port. ``.pause()`` stops reading (a slow HES whose window fills;
``rcvbuf`` keeps that window small) until ``.resume()``. ``.reset()`` resets
every open connection (SO_LINGER 0, so an RST) after recording as received what
its TCP stack had already accepted (and so acknowledged) but the HES had not
read. TLS handshakes that fail are counted in ``.tls_failures``.

``Relay(port)`` is a plain TCP relay in front of a ``FakeHES`` (TLS passes
through it untouched) with the same ``pause``/``resume``/``reset``: its reset
forwards what its TCP stack had accepted from the client to the HES before it
resets the client side, which is how a TLS test sees exactly what the client's
TCP peer acknowledged.

Waits have deadlines; nothing here blocks a test for ever.
"""

from __future__ import annotations

import collections
import fcntl
import select
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

POLL_S = 0.05  # how often the server threads look at their stop flag
HANDSHAKE_TIMEOUT_S = 5.0
PEEK_MAX = 1 << 24  # more than any receive queue a test sets up
JOIN_S = 5.0
STALL_SETTLE_S = 0.2  # a receive queue this long unchanged: the window is shut


def inq(sock: socket.socket) -> int:
    """Bytes in ``sock``'s receive queue (accepted by TCP, not read yet); 0 if closed."""
    try:
        buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4)
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", buf)[0])


def peek_all(sock: socket.socket) -> bytes:
    """Everything in ``sock``'s receive queue, left there: reading it would
    open the TCP window and let more in."""
    sock.setblocking(False)
    try:
        return sock.recv(PEEK_MAX, socket.MSG_PEEK)
    except BlockingIOError:
        return b""


def abort(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): whatever is queued either way is discarded."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class Stalled:
    """A predicate for ``wait_for``: true once ``value()`` is above zero and has
    not changed for ``settle`` seconds (a peer whose window is shut)."""

    def __init__(self, value: Any, settle: float = STALL_SETTLE_S) -> None:
        self._value = value
        self._settle = settle
        self._last: int | None = None
        self._since = 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        v = self._value()
        if v != self._last:
            self._last, self._since = v, now
            return False
        return v > 0 and now - self._since >= self._settle


def free_port() -> int:
    """A port nobody listens on right now (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: ``on_data(index, data, t)``: connection ``index`` read ``data`` at ``t``
#: (``time.perf_counter()``), called from that connection's reader thread.
OnData = Callable[[int, bytes, float], None]


#: ``on_connect(index, peer)`` / ``on_close(index, reason)``, from its threads.
OnConnect = Callable[[int, str], None]
OnClose = Callable[[int, str], None]


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.index = -1  # its place in FakeHES's connections
        self.peer = ""
        self.txq: collections.deque[bytes] = collections.deque()  # send_to, in order
        self.tx_pending = 0
        self.tx_cv = threading.Condition()
        self.writer: threading.Thread | None = None
        self.sock = sock
        self.data = bytearray()
        self.closed = threading.Event()
        self.halt = threading.Event()  # the reader ends and leaves the socket to reset()
        self.thread: threading.Thread | None = None
        self.accepted_at = time.monotonic()  # when accept() returned it


class FakeHES:
    """An HES on a real TCP port of 127.0.0.1: the HES double of the tests and the bench.

    It records what each connection reads (``received``, ``data``) unless
    ``record`` is False, and hands each read to ``on_data`` if given (the
    bench stamps payloads there); it can hang up, reset, stop reading, stop
    listening and listen again on the same port, and flood.
    """

    def __init__(
        self,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        rcvbuf: int = 0,
        *,
        on_data: OnData | None = None,
        record: bool = True,
        host: str = "127.0.0.1",
        on_connect: OnConnect | None = None,
        on_close: OnClose | None = None,
    ) -> None:
        self.on_data = on_data
        self.on_connect = on_connect
        self.on_close = on_close
        self.record = record
        self.host = host
        self.port = port
        self.tls = tls
        self.rcvbuf = rcvbuf
        self._reading = threading.Event()
        self._reading.set()
        self.tls_failures = 0
        self.tls_errors: list[str] = []
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self.listening_at: float | None = None  # monotonic time of the last listen()

    # -- control --------------------------------------------------------------------

    def start(self) -> FakeHES:
        assert self._listener is None, "already listening"
        family, kind, proto, _, addr = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        lst = socket.socket(family, kind, proto)
        try:
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.rcvbuf:  # inherited by accepted sockets; must be set before listen
                lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            lst.bind(addr)
            lst.listen(16)
        except OSError:
            lst.close()
            raise
        self.listening_at = time.monotonic()
        self.port = lst.getsockname()[1]
        self._listener = lst
        self._stop = threading.Event()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(lst, self._stop), daemon=True
        )
        self._accept_thread.start()
        return self

    def pause(self) -> None:
        """Stop reading: what the client sends piles up in its socket, then its spool."""
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def drop(self) -> None:
        """Close every open connection (the HES hangs up) but keep listening."""
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            self._close_conn(c)

    def reset(self) -> None:
        """Reset every open connection (RST). What TCP had accepted but the HES
        had not read is recorded as received first: call ``pause()`` and let the
        window shut before, so that nothing more arrives between peek and reset.
        (Over TLS the peeked bytes cannot be decrypted; they are not recorded.)"""
        with self._lock:
            conns = [c for c in self._conns if not c.closed.is_set()]
        for c in conns:
            c.halt.set()
            if c.thread is not None:
                c.thread.join(JOIN_S)
            if self.tls is None:
                held = peek_all(c.sock)
                with self._lock:
                    c.data += held
            c.closed.set()
            abort(c.sock)

    def stop(self) -> None:
        """Stop listening and close every connection."""
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.drop()
        with self._lock:
            threads = [c.thread for c in self._conns if c.thread is not None]
        for t in threads:
            t.join(5)

    # -- observing ---------------------------------------------------------------------

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def inq(self, index: int) -> int:
        """Bytes connection ``index`` has accepted but not read (its TCP receive
        queue; 0 while that connection is not set up yet)."""
        with self._lock:
            if index >= len(self._conns):
                return 0
            c = self._conns[index]
        return 0 if c.closed.is_set() else inq(c.sock)

    def is_open(self, index: int) -> bool:
        with self._lock:
            return not self._conns[index].closed.is_set()

    def received(self, index: int) -> bytes:
        """What connection ``index`` received (nothing while it is not accepted yet:
        the client sees its connect complete before the accept thread gets to it)."""
        with self._lock:
            if index >= len(self._conns):
                return b""
            return bytes(self._conns[index].data)

    def data(self) -> bytes:
        with self._lock:
            return b"".join(bytes(c.data) for c in self._conns)

    def send(self, data: bytes) -> None:
        """Write to the newest open connection."""
        with self._lock:
            open_conns = [c for c in self._conns if not c.closed.is_set()]
        assert open_conns, "no open connection to send on"
        open_conns[-1].sock.sendall(data)

    def send_to(self, index: int, data: bytes) -> None:
        """Queue ``data`` for connection ``index``; a writer thread sends it in
        order as fast as the peer reads, so the caller never waits."""
        with self._lock:
            conn = self._conns[index]
        if conn.closed.is_set():
            return
        with conn.tx_cv:
            conn.txq.append(data)
            conn.tx_pending += len(data)
            if conn.writer is None:
                conn.writer = threading.Thread(target=self._write_loop, args=(conn,), daemon=True)
                conn.writer.start()
            conn.tx_cv.notify()

    def tx_pending(self, index: int) -> int:
        """Bytes queued by ``send_to`` for connection ``index`` and not yet sent."""
        with self._lock:
            conn = self._conns[index]
        return conn.tx_pending

    def close_conn(self, index: int) -> None:
        """Hang up connection ``index``."""
        with self._lock:
            conn = self._conns[index]
        self._close_conn(conn, "closed by the HES")

    def accepted_at(self, index: int) -> float:
        """Monotonic time at which connection ``index`` was accepted."""
        with self._lock:
            return self._conns[index].accepted_at

    def flood(self, limit: int, duration: float, chunk: bytes = b"F" * 65536) -> int:
        """Send ``chunk`` again and again on the newest open connection, as fast
        as its TCP window lets it, until ``limit`` bytes went or ``duration``
        seconds passed (a window that stays shut only makes it wait); returns
        the bytes sent. Plain TCP only."""
        with self._lock:
            open_conns = [c for c in self._conns if not c.closed.is_set()]
        assert open_conns, "no open connection to flood"
        conn = open_conns[-1]
        view = memoryview(chunk)
        sent = 0
        deadline = time.monotonic() + duration
        while sent < limit and time.monotonic() < deadline and not conn.closed.is_set():
            _, ready, _ = select.select([], [conn.sock], [], POLL_S)
            if not ready:
                continue
            try:
                sent += conn.sock.send(view[: min(len(view), limit - sent)])
            except (BlockingIOError, TimeoutError):
                continue
            except OSError:
                break
        return sent

    def wait_connections(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.connections < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"HES: {self.connections} connections, wanted {n}")
            time.sleep(0.01)

    # -- threads --------------------------------------------------------------------------

    def _accept_loop(self, lst: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            r, _, _ = select.select([lst], [], [], POLL_S)
            if not r:
                continue
            try:
                sock, _ = lst.accept()
            except OSError:
                return
            conn = self._handshake(sock)
            if conn is None:
                continue
            try:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            try:
                host, port = sock.getpeername()[:2]
                conn.peer = f"{host}:{port}"
            except OSError:
                conn.peer = "?"
            with self._lock:
                conn.index = len(self._conns)
                self._conns.append(conn)
            if self.on_connect is not None:
                self.on_connect(conn.index, conn.peer)
            conn.thread = threading.Thread(target=self._read_loop, args=(conn,), daemon=True)
            conn.thread.start()

    def _handshake(self, sock: socket.socket) -> _Conn | None:
        if self.tls is None:
            return _Conn(sock)
        sock.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls_sock = self.tls.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            with self._lock:
                self.tls_failures += 1
                self.tls_errors.append(str(exc))
            return None
        return _Conn(tls_sock)

    def _read_loop(self, conn: _Conn) -> None:
        conn.sock.settimeout(POLL_S)
        reason = "closed by the HES"
        while not conn.closed.is_set() and not conn.halt.is_set():
            if not self._reading.wait(POLL_S):
                continue
            try:
                chunk = conn.sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError as exc:
                reason = f"error:{exc.strerror or exc}"
                break
            if not chunk:
                reason = "peer_closed"
                break
            if self.record:
                with self._lock:
                    conn.data += chunk
            if self.on_data is not None:
                self.on_data(conn.index, chunk, time.perf_counter())
        if not conn.halt.is_set():
            self._close_conn(conn, reason)

    def _write_loop(self, conn: _Conn) -> None:
        """``send_to``'s writer: in order, partial sends resumed, never a torn send."""
        while not conn.closed.is_set():
            with conn.tx_cv:
                while not conn.txq and not conn.closed.is_set():
                    conn.tx_cv.wait(POLL_S)
                if conn.closed.is_set():
                    return
                data = conn.txq.popleft()
            view = memoryview(data)
            while view and not conn.closed.is_set():
                try:
                    n = conn.sock.send(view)  # the socket's timeout bounds each wait
                except (TimeoutError, BlockingIOError, ssl.SSLWantWriteError):
                    continue
                except OSError as exc:
                    self._close_conn(conn, f"error:{exc.strerror or exc}")
                    return
                view = view[n:]
                with conn.tx_cv:
                    conn.tx_pending -= n

    def _close_conn(self, conn: _Conn, reason: str = "closed by the HES") -> None:
        with self._lock:
            if conn.closed.is_set():
                return
            conn.closed.set()
        with conn.tx_cv:
            conn.tx_cv.notify_all()
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.sock.close()
        if self.on_close is not None:
            self.on_close(conn.index, reason)

    def __enter__(self) -> FakeHES:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _Pair:
    def __init__(self, down: socket.socket, up: socket.socket) -> None:
        self.down = down  # from the client
        self.up = up  # to the HES
        self.halt = threading.Event()
        self.thread: threading.Thread | None = None


class Relay:
    """A plain TCP relay on 127.0.0.1 to ``FakeHES`` on ``upstream_port``.

    Each accepted connection gets its own connection to the HES and a thread
    that copies bytes both ways. ``pause()`` stops reading from the client
    (``rcvbuf`` keeps that window small); ``reset()`` then forwards what the
    relay's TCP stack had accepted from the client, closes the HES side
    gracefully and resets the client side.
    """

    def __init__(self, upstream_port: int, rcvbuf: int = 0) -> None:
        self.upstream_port = upstream_port
        self.rcvbuf = rcvbuf
        self.port = 0
        self._reading = threading.Event()
        self._reading.set()
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None

    def start(self) -> Relay:
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf:
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        lst.bind(("127.0.0.1", 0))
        lst.listen(16)
        self.port = lst.getsockname()[1]
        self._listener = lst
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(lst,), daemon=True)
        self._accept_thread.start()
        return self

    def pause(self) -> None:
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def inq(self, index: int) -> int:
        """Bytes from the client that connection ``index`` has accepted, not
        forwarded (0 while that connection is not set up yet)."""
        with self._lock:
            if index >= len(self._pairs):
                return 0
            p = self._pairs[index]
        return 0 if p.halt.is_set() else inq(p.down)

    def reset(self) -> None:
        with self._lock:
            pairs = [p for p in self._pairs if not p.halt.is_set()]
        for p in pairs:
            p.halt.set()
            if p.thread is not None:
                p.thread.join(JOIN_S)
            held = peek_all(p.down)
            abort(p.down)
            p.up.settimeout(JOIN_S)
            try:
                p.up.sendall(held)
                p.up.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            p.up.close()

    def stop(self) -> None:
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(JOIN_S)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            pairs = list(self._pairs)
        for p in pairs:
            p.halt.set()
            if p.thread is not None:
                p.thread.join(JOIN_S)
            p.down.close()  # closing twice is harmless
            p.up.close()

    def _accept_loop(self, lst: socket.socket) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([lst], [], [], POLL_S)
            if not r:
                continue
            try:
                down, _ = lst.accept()
                up = socket.create_connection(("127.0.0.1", self.upstream_port), JOIN_S)
            except OSError:
                continue
            pair = _Pair(down, up)
            with self._lock:
                self._pairs.append(pair)
            pair.thread = threading.Thread(target=self._copy_loop, args=(pair,), daemon=True)
            pair.thread.start()

    def _copy_loop(self, p: _Pair) -> None:
        for s in (p.down, p.up):
            s.settimeout(JOIN_S)  # sendall: the other side reads, so this never expires
        try:
            while not p.halt.is_set():
                watch = [p.up] + ([p.down] if self._reading.is_set() else [])
                r, _, _ = select.select(watch, [], [], POLL_S)
                for src, dst in ((p.down, p.up), (p.up, p.down)):
                    if src in r and not p.halt.is_set():
                        chunk = src.recv(65536)
                        if not chunk:
                            raise OSError("closed")
                        dst.sendall(chunk)
        except OSError:
            if not p.halt.is_set():
                p.halt.set()
                p.down.close()
                p.up.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

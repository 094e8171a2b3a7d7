"""A head-end system played by a test: a real TCP (optionally TLS) server on 127.0.0.1.

``FakeHES(port=0).start()`` listens on a free port (``.port``); every accepted
connection gets a thread that records what it receives (``.received(i)``, or
``.data()`` for everything in connection order). ``.send(data)`` writes to the
newest connection, ``.drop()`` closes the connections but keeps listening,
``.stop()`` closes everything (the HES is gone) and ``.start()`` listens again
on the same port. ``.pause()`` stops reading (a slow HES whose window fills;
``rcvbuf`` keeps that window small) until ``.resume()``. TLS handshakes that
fail are counted in ``.tls_failures``.
Waits have deadlines; nothing here blocks a test for ever.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from typing import Any

POLL_S = 0.05  # how often the server threads look at their stop flag
HANDSHAKE_TIMEOUT_S = 5.0


def free_port() -> int:
    """A port nobody listens on right now (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = bytearray()
        self.closed = threading.Event()
        self.thread: threading.Thread | None = None


class FakeHES:
    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None, rcvbuf: int = 0) -> None:
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

    # -- control --------------------------------------------------------------------

    def start(self) -> FakeHES:
        assert self._listener is None, "already listening"
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf:  # inherited by accepted sockets; must be set before listen
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(16)
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

    def received(self, index: int) -> bytes:
        with self._lock:
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
            with self._lock:
                self._conns.append(conn)
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
        while not conn.closed.is_set():
            if not self._reading.wait(POLL_S):
                continue
            try:
                chunk = conn.sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                break
            if not chunk:
                break
            with self._lock:
                conn.data += chunk
        self._close_conn(conn)

    def _close_conn(self, conn: _Conn) -> None:
        if conn.closed.is_set():
            return
        conn.closed.set()
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.sock.close()

    def __enter__(self) -> FakeHES:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

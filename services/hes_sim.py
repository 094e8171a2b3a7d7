"""HES simulator: a head-end system as a TCP server, so meterlink runs without one.

Run it as ``python -m services.hes_sim``. It does not connect to the bus. It listens on
``TCP_SERVER.host``/``port`` from the config (``--host``/``--port`` override; with
``--port 0`` the system picks a port) and prints ``hes listening host=H port=P`` each time
it starts listening. One selector loop serves the listener and every connection.

* It accepts the gateway (one or more connections, named ``gw#1``, ``gw#2`` ...) and
  prints every payload that arrives on one line: a running count, the length, a reading
  of the DLMS APDUs the meter simulator sends, the hex and the printable text, e.g.
  ``hes <- gw#1 n=12 len=21 data-notification id=12 data=0f... text='....'``.
* Every ``--request-interval`` seconds (0: never) it sends each connected gateway a DLMS
  GET-Request-Normal for the energy register, ``C0 01 <invoke-id> 00 03 01 00 01 08 00 FF
  02 00``; the invoke id is the low four bits of the request counter ``req=N`` printed
  with it. The meter simulator answers it with a GET-Response-Normal.
* ``--echo`` sends back whatever arrives, on the same connection.

Dropping the link, to show the gateway reconnecting and spooling:

* ``--drop-every S``: after each S seconds up, drop every connection and close the
  listener, so new connections are refused, for ``--down-for`` seconds; then listen again
  on the same port.
* SIGUSR1: the same, now (if already down, down for ``--down-for`` from now).

SIGTERM or SIGINT ends it within a second. TLS is not served: point a gateway with
``TCP_SERVER.tls.enabled`` at a TLS-terminating proxy in front of it.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from services.meter_sim import (
    APDU_DATA_NOTIFICATION,
    DATA_NOTIFICATION_LEN,
    Printer,
    describe_apdu,
    get_request,
    hexs,
    read_config,
)

DEFAULT_REQUEST_INTERVAL_S = 5.0
DEFAULT_DOWN_FOR_S = 3.0
#: Longest the loop sleeps: bounds how late timers run.
MAX_POLL_S = 0.5
#: Retry a listen that failed (port still taken) after this long.
RELISTEN_RETRY_S = 0.5
#: Bytes waiting for one gateway to read; beyond it new data for it is dropped (counted).
TX_BUFFER_MAX = 1024 * 1024
RECV_SIZE = 65536
BACKLOG = 8


def printable(data: bytes, limit: int = 96) -> str:
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data[:limit])
    return text + (f"..(+{len(data) - limit})" if len(data) > limit else "")


def describe(data: bytes) -> str:
    """Read what arrived: TCP may bring several of the meter's notifications at once."""
    n = DATA_NOTIFICATION_LEN
    if len(data) > n and len(data) % n == 0:
        chunks = [data[i : i + n] for i in range(0, len(data), n)]
        if all(c[0] == APDU_DATA_NOTIFICATION for c in chunks):
            ids = ",".join(str(int.from_bytes(c[1:5], "big")) for c in chunks)
            return f"data-notification id={ids}"
    return describe_apdu(data)


@dataclass
class Conn:
    sock: socket.socket
    name: str
    peer: str
    tx: bytearray = field(default_factory=bytearray)
    rx_bytes: int = 0
    rx_payloads: int = 0
    tx_bytes: int = 0


class HesSim:
    """Listener, connections, request timer and link drops in one selector loop."""

    def __init__(self, args: argparse.Namespace, host: str, port: int) -> None:
        self.args = args
        self.say = Printer(args.timestamps)
        self.host = host
        self.port = port  # after the first bind: the port actually used
        self.sel = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.conns: dict[int, Conn] = {}
        self.counters: Counter[str] = Counter()
        self.n_conn = 0
        self.n_req = 0
        self.payloads = 0
        self.down_until = 0.0
        self.up_since = 0.0
        self.next_listen = 0.0
        self.listen_error = ""
        self.drop_now = False
        self.stop_reason = ""
        self.wake_r = -1

    # --- setup and teardown ---------------------------------------------------------------

    def setup(self) -> None:
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGUSR1, self._on_drop)
        self.listen()
        if self.listener is None:
            raise OSError(self.listen_error)

    def _on_stop(self, signum: int, _frame: object) -> None:
        self.stop_reason = signal.Signals(signum).name

    def _on_drop(self, _signum: int, _frame: object) -> None:
        self.drop_now = True

    def listen(self) -> None:
        try:
            infos = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, kind, proto, _, addr = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            self._listen_failed(exc)
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            self._listen_failed(exc)
            return
        sock.setblocking(False)
        self.listener = sock
        self.port = sock.getsockname()[1]
        self.listen_error = ""
        self.up_since = time.monotonic()
        self.sel.register(sock, selectors.EVENT_READ, "listen")
        self.say(f"hes listening host={self.host} port={self.port}")

    def _listen_failed(self, exc: OSError) -> None:
        err = exc.strerror or str(exc)
        if err != self.listen_error:
            self.say(f"hes listen failed host={self.host} port={self.port} err={err}")
        self.listen_error = err
        self.counters["listen_errors"] += 1
        self.next_listen = time.monotonic() + RELISTEN_RETRY_S

    def close_listener(self) -> None:
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self.drop(conn, "shutdown")
        self.close_listener()
        if self.wake_r >= 0:
            os.close(self.wake_r)
        self.sel.close()
        stats = " ".join(f"{k}={v}" for k, v in sorted(self.counters.items()))
        self.say(f"hes stopped reason={self.stop_reason or 'done'} {stats}".rstrip())

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        a = self.args
        next_request = time.monotonic() + a.request_interval
        while not self.stop_reason:
            now = time.monotonic()
            if self.drop_now:
                self.drop_now = False
                self.go_down("sigusr1")
            elif a.drop_every > 0 and self.listener is not None:
                if now - self.up_since >= a.drop_every:
                    self.go_down("drop_every")
            if self.listener is None and now >= self.down_until and now >= self.next_listen:
                if self.down_until:
                    self.down_until = 0.0
                    self.say("hes back up")
                self.listen()
            if a.request_interval > 0 and now >= next_request:
                self.send_requests()
                next_request = max(next_request + a.request_interval, now)
            deadlines = [now + MAX_POLL_S]
            if a.request_interval > 0:
                deadlines.append(next_request)
            if self.listener is None:
                deadlines.append(max(self.down_until, self.next_listen))
            elif a.drop_every > 0:
                deadlines.append(self.up_since + a.drop_every)
            for key, mask in self.sel.select(max(0.0, min(deadlines) - now)):
                what = key.data
                if what == "wake":
                    self._drain_wakeup()
                elif what == "listen":
                    self.accept()
                elif isinstance(what, Conn) and what.sock.fileno() in self.conns:
                    if mask & selectors.EVENT_READ:
                        self.receive(what)
                    if mask & selectors.EVENT_WRITE and what.sock.fileno() in self.conns:
                        self.flush(what)
        return 0

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def go_down(self, reason: str) -> None:
        # The listener goes first: a gateway that sees its connection close and reconnects
        # at once must be refused, not accepted by a listener about to close.
        self.close_listener()
        dropped = len(self.conns)
        for conn in list(self.conns.values()):
            self.drop(conn, reason)
        self.down_until = time.monotonic() + self.args.down_for
        self.counters["drops"] += 1
        self.say(
            f"hes down reason={reason} for={self.args.down_for}s dropped={dropped} "
            f"port={self.port} (refusing connections)"
        )

    # --- connections ------------------------------------------------------------------------

    def accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.counters["accept_errors"] += 1
                self.say(f"hes accept failed err={exc.strerror or exc}")
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.n_conn += 1
            conn = Conn(sock, f"gw#{self.n_conn}", f"{addr[0]}:{addr[1]}")
            self.conns[sock.fileno()] = conn
            self.sel.register(sock, selectors.EVENT_READ, conn)
            self.counters["connections"] += 1
            self.say(f"hes {conn.name} connected peer={conn.peer} connections={len(self.conns)}")

    def drop(self, conn: Conn, reason: str) -> None:
        fd = conn.sock.fileno()
        if self.conns.pop(fd, None) is None:
            return
        self.sel.unregister(conn.sock)
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.sock.close()
        unsent = f" unsent={len(conn.tx)}" if conn.tx else ""
        self.say(
            f"hes {conn.name} closed reason={reason} rx_payloads={conn.rx_payloads} "
            f"rx_bytes={conn.rx_bytes} tx_bytes={conn.tx_bytes}{unsent} "
            f"connections={len(self.conns)}"
        )

    def receive(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.counters["recv_errors"] += 1
            self.drop(conn, f"error:{exc.strerror or exc}")
            return
        if not data:
            self.drop(conn, "peer_closed")
            return
        self.payloads += 1
        conn.rx_payloads += 1
        conn.rx_bytes += len(data)
        self.counters["rx_payloads"] += 1
        self.counters["rx_bytes"] += len(data)
        what = describe(data)
        self.say(
            f"hes <- {conn.name} n={self.payloads} len={len(data)} "
            f"{what + ' ' if what else ''}data={hexs(data)} text='{printable(data)}'"
        )
        if self.args.echo:
            self.queue(conn, data, f"hes -> {conn.name} echo len={len(data)}")

    def send_requests(self) -> None:
        if not self.conns:
            return
        self.n_req += 1
        data = get_request(self.n_req)
        for conn in list(self.conns.values()):
            self.counters["requests"] += 1
            self.queue(
                conn,
                data,
                f"hes -> {conn.name} req={self.n_req} len={len(data)} {describe_apdu(data)} "
                f"data={data.hex()}",
            )

    def queue(self, conn: Conn, data: bytes, line: str) -> None:
        if len(conn.tx) + len(data) > TX_BUFFER_MAX:
            self.counters["tx_dropped"] += 1
            self.say(
                f"hes -> {conn.name} dropped reason=tx_full len={len(data)} "
                f"pending={len(conn.tx)} total={self.counters['tx_dropped']}"
            )
            return
        conn.tx += data
        self.say(line)
        self.flush(conn)

    def flush(self, conn: Conn) -> None:
        try:
            n = conn.sock.send(conn.tx)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self.counters["send_errors"] += 1
            self.drop(conn, f"error:{exc.strerror or exc}")
            return
        del conn.tx[:n]
        conn.tx_bytes += n
        self.counters["tx_bytes"] += n
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.tx else 0)
        self.sel.modify(conn.sock, events, conn)


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m services.hes_sim",
        description=(
            "A simulated head-end system: a TCP server on TCP_SERVER.host:port that prints "
            "what the gateway sends and sends it periodic DLMS GET requests. "
            "To show reconnection and the spool it can drop the link: --drop-every S drops "
            "every connection and refuses new ones for --down-for seconds, every S seconds; "
            "SIGUSR1 (kill -USR1 PID) does the same once, now."
        ),
    )
    p.add_argument("--config", help="config file (default: $METERLINK_CONFIG or dev.json)")
    p.add_argument("--host", help="address to listen on (default: config TCP_SERVER.host)")
    p.add_argument(
        "--port",
        type=int,
        help="port to listen on (default: config TCP_SERVER.port; 0 picks a free one)",
    )
    p.add_argument(
        "--request-interval",
        type=float,
        default=DEFAULT_REQUEST_INTERVAL_S,
        help="seconds between requests to each gateway (0: none)",
    )
    p.add_argument(
        "--drop-every",
        type=float,
        default=0.0,
        help="drop the link after every S seconds up (0: never)",
    )
    p.add_argument(
        "--down-for",
        type=float,
        default=DEFAULT_DOWN_FOR_S,
        help="seconds to refuse connections after a drop (--drop-every or SIGUSR1)",
    )
    p.add_argument("--echo", action="store_true", help="send back whatever arrives")
    p.add_argument("--timestamps", action="store_true", help="prefix each line with the time")
    args = p.parse_args(argv)
    if args.port is not None and not 0 <= args.port <= 65535:
        p.error("--port must be in 0..65535")
    for name in ("request_interval", "drop_every", "down_for"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config: dict[str, Any] | None = None
    if args.host is None or args.port is None or args.config:
        config = read_config(args.config)
    server = config["TCP_SERVER"] if config else {}
    host = args.host if args.host is not None else server.get("host")
    port = args.port if args.port is not None else server.get("port")
    if host is None or port is None:
        print("hes_sim: give --host and --port, or a config with TCP_SERVER", file=sys.stderr)
        return 2
    sim = HesSim(args, host, port)
    try:
        sim.setup()
    except OSError as exc:
        print(f"hes_sim: cannot listen host={host} port={port}: {exc}", file=sys.stderr)
        sim.close()
        return 2
    try:
        return sim.run()
    finally:
        sim.close()


if __name__ == "__main__":
    sys.exit(main())

"""HES simulator: a head-end system as a TCP server that speaks DLMS/COSEM, so meterlink
runs without one.

Run it as ``python -m services.sim.hes``. It does not connect to the bus. It listens on
``TCP_SERVER.host``/``port`` from the config (``--host``/``--port`` override; with
``--port 0`` the system picks a port) and prints ``hes listening host=H port=P`` each time
it starts listening. One selector loop serves the listener and every connection.

* It accepts the gateway (one or more connections, named ``gw#1``, ``gw#2`` ...) and
  reads APDUs from it: with ``--framing wrapper`` (default: the config's
  ``TCP_SERVER.framing``) each in an IEC 62056-47 wrapper PDU, else back to back in the
  raw stream. Each is printed with ``common.dlms.describe``, e.g.
  ``hes <- gw#1 n=12 len=21 data-notification id=0x0000000C structure(2) [...]``;
  bytes that are not an APDU are printed as hex and text.
* A second after a gateway connects, then every ``--request-interval`` seconds (0:
  never), it runs a DLMS session with it, as a client: AARQ (no security, logical-name
  referencing, proposing ``--max-pdu``), reads of the clock (0.0.1.0.0.255 attribute 2),
  the active energy register (1.0.1.8.0.255 attributes 2 and 3) and the load profile
  (1.0.99.1.0.255 attribute 2, larger than ``--max-pdu``, so it comes in blocks:
  get-response with-datablock, each asked for with get-request next), then RLRQ. Every
  request and answer is printed; the end is ``hes gw#1 dlms session complete reads=4
  blocks=B profile_entries=96``, or ``hes gw#1 dlms session failed step=S reason=R``
  (no answer within ``--step-timeout``, a refusal, an error).
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
import queue
import selectors
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from common.dlms import Apdu, Blob, Data, DlmsError, decode, decode_data, describe
from common.dlms import wrapper as wrapping
from services.sim.dlms import (
    CLASS_CLOCK,
    CLASS_PROFILE,
    CLASS_REGISTER,
    OBIS_CLOCK,
    OBIS_ENERGY,
    OBIS_PROFILE,
    ApduStream,
    Piece,
    aarq,
    get_next,
    get_request,
    rlrq,
)
from services.sim.fake_hes import FakeHES
from services.sim.meter import Printer, hexs, read_config

DEFAULT_REQUEST_INTERVAL_S = 5.0
DEFAULT_DOWN_FOR_S = 3.0
DEFAULT_STEP_TIMEOUT_S = 5.0
#: What the HES proposes it can receive: small, so the load profile needs blocks.
DEFAULT_MAX_PDU = 512
#: The first session starts this long after a gateway connects.
FIRST_SESSION_S = 1.0
#: A raw stream holding part of an APDU this long gives it up (printed as such).
PARTIAL_IDLE_S = 1.0
#: Longest the loop sleeps: bounds how late timers run.
MAX_POLL_S = 0.5
#: Retry a listen that failed (port still taken) after this long.
RELISTEN_RETRY_S = 0.5
#: Bytes waiting for one gateway to read; beyond it new data for it is dropped (counted).
TX_BUFFER_MAX = 1024 * 1024

#: What a session reads, in order: (name, class, OBIS, attribute).
READS = (
    ("clock", CLASS_CLOCK, OBIS_CLOCK, 2),
    ("energy", CLASS_REGISTER, OBIS_ENERGY, 2),
    ("energy-scaler-unit", CLASS_REGISTER, OBIS_ENERGY, 3),
    ("load-profile", CLASS_PROFILE, OBIS_PROFILE, 2),
)


def printable(data: bytes, limit: int = 96) -> str:
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data[:limit])
    return text + (f"..(+{len(data) - limit})" if len(data) > limit else "")


@dataclass
class Session:
    """One DLMS association in progress: the step it waits in and what it gathered."""

    started: float
    deadline: float
    step: str = "aare"  # aare, read, rlre
    read: int = 0  # index in READS
    iid: int = 0
    reads: int = 0
    blocks: int = 0
    raw: bytearray = field(default_factory=bytearray)
    entries: int = 0


@dataclass
class Conn:
    index: int  # its connection in the HES double
    name: str
    peer: str
    rx_bytes: int = 0
    rx_payloads: int = 0
    tx_bytes: int = 0
    stream: ApduStream = field(default_factory=ApduStream)
    unwrapper: wrapping.Unwrapper = field(default_factory=wrapping.Unwrapper)
    last_rx: float = 0.0
    session: Session | None = None
    next_session: float = 0.0


class HesSim:
    """The HES simulator: DLMS sessions, the request timer and link drops in one loop.

    Its sockets are the shared HES double's (``services.sim.fake_hes.FakeHES``,
    the one the tests and the bench use): the double's threads accept, read
    and write; what they see comes to this loop as events through the wake-up
    pipe, so the loop alone keeps the sessions and the state.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        host: str,
        port: int,
        wports: tuple[int, int] = (16, 1),
    ) -> None:
        self.args = args
        self.wports = wports  # (source, destination) of what the HES sends: client, server
        self.say = Printer(args.timestamps)
        self.host = host
        self.port = port  # after the first bind: the port actually used
        self.sel = selectors.DefaultSelector()
        self.hes: FakeHES | None = None  # listening while set
        self.conns: dict[int, Conn] = {}
        # What the double's threads saw, for the loop: (kind, index, value).
        self.events: queue.SimpleQueue[tuple[str, int, Any]] = queue.SimpleQueue()
        self.wake_w = -1
        self.counters: Counter[str] = Counter()
        self.n_conn = 0
        self.n_iid = 0
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
        self.wake_w = wake_w
        signal.set_wakeup_fd(wake_w)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGUSR1, self._on_drop)
        self.listen()
        if self.hes is None:
            raise OSError(self.listen_error)

    def _on_stop(self, signum: int, _frame: object) -> None:
        self.stop_reason = signal.Signals(signum).name

    def _on_drop(self, _signum: int, _frame: object) -> None:
        self.drop_now = True

    def listen(self) -> None:
        hes = FakeHES(
            self.port,
            host=self.host,
            record=False,
            on_connect=lambda i, peer: self._event("connect", i, peer),
            on_data=lambda i, data, _t: self._event("data", i, data),
            on_close=lambda i, reason: self._event("close", i, reason),
        )
        try:
            hes.start()
        except OSError as exc:
            self._listen_failed(exc)
            return
        self.hes = hes
        self.port = hes.port
        self.listen_error = ""
        self.up_since = time.monotonic()
        self.say(f"hes listening host={self.host} port={self.port} framing={self.args.framing}")

    def _event(self, kind: str, index: int, value: Any) -> None:
        """From the double's threads: queue it and wake the loop."""
        self.events.put((kind, index, value))
        try:
            os.write(self.wake_w, b"\0")
        except OSError:
            pass  # the pipe is full: the loop is awake anyway

    def _listen_failed(self, exc: OSError) -> None:
        err = exc.strerror or str(exc)
        if err != self.listen_error:
            self.say(f"hes listen failed host={self.host} port={self.port} err={err}")
        self.listen_error = err
        self.counters["listen_errors"] += 1
        self.next_listen = time.monotonic() + RELISTEN_RETRY_S

    def close_listener(self) -> None:
        """Stop listening (and so hang up every connection the double has)."""
        if self.hes is not None:
            hes, self.hes = self.hes, None
            hes.stop()
            self._handle_events()  # the closes it reported: already dropped here

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self.drop(conn, "shutdown")
        self.close_listener()
        if self.wake_r >= 0:
            signal.set_wakeup_fd(-1)
            os.close(self.wake_r)
            os.close(self.wake_w)
        self.sel.close()
        stats = " ".join(f"{k}={v}" for k, v in sorted(self.counters.items()))
        self.say(f"hes stopped reason={self.stop_reason or 'done'} {stats}".rstrip())

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        a = self.args
        while not self.stop_reason:
            now = time.monotonic()
            if self.drop_now:
                self.drop_now = False
                self.go_down("sigusr1")
            elif a.drop_every > 0 and self.hes is not None:
                if now - self.up_since >= a.drop_every:
                    self.go_down("drop_every")
            if self.hes is None and now >= self.down_until and now >= self.next_listen:
                if self.down_until:
                    self.down_until = 0.0
                    self.say("hes back up")
                self.listen()
            deadlines = [now + MAX_POLL_S]
            for conn in list(self.conns.values()):
                deadlines.append(self.sessions(conn, now))
            if self.hes is None:
                deadlines.append(max(self.down_until, self.next_listen))
            elif a.drop_every > 0:
                deadlines.append(self.up_since + a.drop_every)
            for key, _mask in self.sel.select(max(0.0, min(deadlines) - now)):
                if key.data == "wake":
                    self._drain_wakeup()
            self._handle_events()
        return 0

    def _handle_events(self) -> None:
        while True:
            try:
                kind, index, value = self.events.get_nowait()
            except queue.Empty:
                return
            if kind == "connect":
                self.accept(index, value)
                continue
            conn = self.conns.get(index)
            if conn is None:
                continue  # dropped here already
            if kind == "data":
                self.receive(conn, value)
            else:
                self.conns.pop(index, None)
                self.closed(conn, value)

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def go_down(self, reason: str) -> None:
        # The listener goes first (the double stops accepting before it hangs up):
        # a gateway that sees its connection close and reconnects at once must be
        # refused, not accepted by a listener about to close.
        conns = list(self.conns.values())
        self.conns.clear()  # so the double's close events are not reported again
        for conn in conns:
            self.closed(conn, reason)
        self.close_listener()
        dropped = len(conns)
        self.down_until = time.monotonic() + self.args.down_for
        self.counters["drops"] += 1
        self.say(
            f"hes down reason={reason} for={self.args.down_for}s dropped={dropped} "
            f"port={self.port} (refusing connections)"
        )

    # --- connections ------------------------------------------------------------------------

    def accept(self, index: int, peer: str) -> None:
        self.n_conn += 1
        conn = Conn(index, f"gw#{self.n_conn}", peer)
        conn.next_session = time.monotonic() + FIRST_SESSION_S
        self.conns[index] = conn
        self.counters["connections"] += 1
        self.say(f"hes {conn.name} connected peer={conn.peer} connections={len(self.conns)}")

    def drop(self, conn: Conn, reason: str) -> None:
        if self.conns.pop(conn.index, None) is None:
            return
        if self.hes is not None:
            self.hes.close_conn(conn.index)
        self.closed(conn, reason)

    def closed(self, conn: Conn, reason: str) -> None:
        if reason.startswith("error:"):
            self.counters["recv_errors"] += 1
        pending = self.hes.tx_pending(conn.index) if self.hes is not None else 0
        unsent = f" unsent={pending}" if pending else ""
        self.say(
            f"hes {conn.name} closed reason={reason} rx_payloads={conn.rx_payloads} "
            f"rx_bytes={conn.rx_bytes} tx_bytes={conn.tx_bytes}{unsent} "
            f"connections={len(self.conns)}"
        )

    def receive(self, conn: Conn, data: bytes) -> None:
        conn.rx_bytes += len(data)
        conn.last_rx = time.monotonic()
        self.counters["rx_bytes"] += len(data)
        if self.args.echo:
            self.queue(conn, data, f"hes -> {conn.name} echo len={len(data)}")
        if self.args.framing == "wrapper":
            try:
                pieces = [Piece(p.apdu) for p in conn.unwrapper.feed(data)]
            except wrapping.WrapperError as exc:
                self.counters["framing_errors"] += 1
                self.say(f"hes {conn.name} protocol error err={exc}")
                self.drop(conn, "bad_wrapper_header")
                return
        else:
            pieces = conn.stream.feed(data)
        for piece in pieces:
            self.take(conn, piece)

    def take(self, conn: Conn, piece: Piece) -> None:
        """One APDU (or bytes that are not one) from the gateway."""
        self.payloads += 1
        conn.rx_payloads += 1
        self.counters["rx_payloads"] += 1
        head = f"hes <- {conn.name} n={self.payloads} len={len(piece.data)}"
        apdu = piece.apdu
        if apdu is None and not piece.error:  # a wrapper PDU's APDU
            try:
                apdu = decode(piece.data)
            except DlmsError as exc:
                piece = Piece(piece.data, None, type(exc).__name__)
        if apdu is None:
            self.counters["rx_not_dlms"] += 1
            self.say(
                f"{head} not DLMS ({piece.error}) data={hexs(piece.data)} "
                f"text='{printable(piece.data)}'"
            )
            return
        self.say(f"{head} {describe(apdu)}")
        if apdu.name in ("data-notification", "event-notification-request"):
            self.counters["notifications"] += 1
            return
        self.answer(conn, apdu)

    # --- the DLMS session ---------------------------------------------------------------

    def sessions(self, conn: Conn, now: float) -> float:
        """Start, or time out, the session with ``conn``; when to look again."""
        a = self.args
        if conn.stream.pending and now - conn.last_rx >= PARTIAL_IDLE_S:
            for piece in conn.stream.flush():
                self.take(conn, piece)
        s = conn.session
        if s is not None:
            if now >= s.deadline:
                self.end(conn, f"failed step={s.step} reason=timeout after={a.step_timeout}s")
                return now + MAX_POLL_S
            return s.deadline
        if a.request_interval <= 0:
            return now + MAX_POLL_S
        if now >= conn.next_session:
            conn.session = Session(started=now, deadline=now + a.step_timeout)
            self.counters["sessions"] += 1
            self.request(conn, aarq(a.max_pdu))
            return conn.session.deadline
        return conn.next_session

    def request(self, conn: Conn, data: bytes) -> None:
        if conn.session is not None:
            conn.session.deadline = time.monotonic() + self.args.step_timeout
        self.counters["requests"] += 1
        line = f"hes -> {conn.name} len={len(data)} {describe(decode(data))}"
        if self.args.framing == "wrapper":
            data = wrapping.wrap(data, *self.wports)
        self.queue(conn, data, line)

    def next_read(self, conn: Conn, s: Session) -> None:
        if s.read >= len(READS):
            s.step = "rlre"
            self.request(conn, rlrq())
            return
        _, class_id, obis, attr = READS[s.read]
        self.n_iid = self.n_iid % 15 + 1
        s.iid = self.n_iid
        s.step = "read"
        s.raw = bytearray()
        self.request(conn, get_request(s.iid, class_id, obis, attr))

    def answer(self, conn: Conn, apdu: Apdu) -> None:
        """What the gateway answered, in the session's current step."""
        s = conn.session
        if s is None:
            self.counters["unexpected"] += 1
            self.say(f"hes {conn.name} unexpected {apdu.name} (no session)")
            return
        if s.step == "aare":
            if apdu.name == "aare" and apdu.result == 0:
                self.next_read(conn, s)
            else:
                self.end(conn, f"failed step=aare reason={apdu.name}")
            return
        if s.step == "rlre":
            if apdu.name == "rlre":
                ms = int((time.monotonic() - s.started) * 1000)
                self.end(
                    conn,
                    f"complete reads={s.reads} blocks={s.blocks} "
                    f"profile_entries={s.entries} ms={ms}",
                )
            else:
                self.end(conn, f"failed step=rlre reason={apdu.name}")
            return
        name = READS[s.read][0]
        if apdu.name != "get-response" or apdu.invoke_id != s.iid:
            self.end(conn, f"failed step={name} reason={apdu.name} iid={apdu.invoke_id}")
            return
        if apdu.variant == "normal":
            result = apdu.get("result")
            if not isinstance(result, Data):
                self.end(conn, f"failed step={name} reason=data-access-result-{result}")
                return
            self.got(conn, s, result)
        elif apdu.variant == "with-datablock":
            raw = apdu.get("raw-data")
            if not isinstance(raw, Blob):
                self.end(conn, f"failed step={name} reason=data-access-result-{raw}")
                return
            s.blocks += 1
            s.raw += raw.data
            block = int(apdu.get("block-number"))
            if not apdu.get("last-block"):
                self.request(conn, get_next(s.iid, block))
                return
            try:
                value, used = decode_data(bytes(s.raw))
            except DlmsError as exc:
                self.end(conn, f"failed step={name} reason=blocks-not-data err={exc}")
                return
            if used != len(s.raw):
                self.end(conn, f"failed step={name} reason=blocks-trailing-bytes")
                return
            self.got(conn, s, value)
        else:
            self.end(conn, f"failed step={name} reason={apdu.variant}")

    def got(self, conn: Conn, s: Session, value: Data) -> None:
        name = READS[s.read][0]
        if name == "load-profile" and isinstance(value.value, tuple):
            s.entries = len(value.value)
            self.say(
                f"hes {conn.name} {name} entries={s.entries} octets={len(s.raw)} blocks={s.blocks}"
            )
        s.reads += 1
        s.read += 1
        self.next_read(conn, s)

    def end(self, conn: Conn, outcome: str) -> None:
        conn.session = None
        conn.next_session = time.monotonic() + self.args.request_interval
        self.counters["sessions_" + outcome.split()[0]] += 1
        self.say(f"hes {conn.name} dlms session {outcome}")

    def queue(self, conn: Conn, data: bytes, line: str) -> None:
        assert self.hes is not None  # conns exist only while listening
        pending = self.hes.tx_pending(conn.index)
        if pending + len(data) > TX_BUFFER_MAX:
            self.counters["tx_dropped"] += 1
            self.say(
                f"hes -> {conn.name} dropped reason=tx_full len={len(data)} "
                f"pending={pending} total={self.counters['tx_dropped']}"
            )
            return
        self.hes.send_to(conn.index, data)
        conn.tx_bytes += len(data)
        self.counters["tx_bytes"] += len(data)
        self.say(line)


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m services.sim.hes",
        description=(
            "A simulated head-end system: a TCP server on TCP_SERVER.host:port that prints "
            "the DLMS APDUs the gateway sends and runs periodic DLMS sessions with it "
            "(association, reads with block transfer, release). "
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
        help="seconds between DLMS sessions with each gateway (0: none)",
    )
    p.add_argument(
        "--framing",
        choices=("raw", "wrapper"),
        help="APDUs back to back, or in IEC 62056-47 wrapper PDUs "
        "(default: config TCP_SERVER.framing, else raw)",
    )
    p.add_argument(
        "--max-pdu",
        type=int,
        default=DEFAULT_MAX_PDU,
        help="the max-PDU-size the HES proposes in its AARQ (small: the load profile "
        "needs block transfer)",
    )
    p.add_argument(
        "--step-timeout",
        type=float,
        default=DEFAULT_STEP_TIMEOUT_S,
        help="seconds to wait for each answer in a session",
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
    if not 64 <= args.max_pdu <= 0xFFFF:
        p.error("--max-pdu must be in 64..65535")
    if args.step_timeout <= 0:
        p.error("--step-timeout must be > 0")
    for name in ("request_interval", "drop_every", "down_for"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config: dict[str, Any] | None = None
    if args.host is None or args.port is None or args.framing is None or args.config:
        config = read_config(args.config)
    server = config["TCP_SERVER"] if config else {}
    host = args.host if args.host is not None else server.get("host")
    port = args.port if args.port is not None else server.get("port")
    if host is None or port is None:
        print("hes_sim: give --host and --port, or a config with TCP_SERVER", file=sys.stderr)
        return 2
    if args.framing is None:
        args.framing = server.get("framing", "raw")
    w = server.get("wrapper") or {}
    # The HES is the DLMS client: it sends from the gateway's destination wPort to
    # its source wPort.
    wports = (int(w.get("destination_wport", 16)), int(w.get("source_wport", 1)))
    sim = HesSim(args, host, port, wports)
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

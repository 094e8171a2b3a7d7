"""The HES client: one TCP (optionally TLS) connection to the head-end system.

Uplink: ``send`` messages carry a list of payloads (from the resolver workers,
already in meter order); they go to the HES as a byte stream, in order. While
the link is up, nothing waits in the spool and less than ``DIRECT_MAX_BYTES``
(1 MiB) is unacknowledged by the HES's TCP, they are held in memory and handed
straight to the connection (no spool write, no fsync on the way): their units
are acknowledged to the uart only once the HES's TCP has acknowledged them, so
until then the uart's journal is their durable copy. Only while the link is
down, or beyond that bound (an HES slower than the meter), are they appended
to a durable spool (``common.spool``, SQLite in the run directory), which
drains in order once the link is back, so order holds across outages and
restarts; once anything is in the spool, later payloads go behind it. Appends
are fsynced, so while more messages wait in the inbox up to
``SPOOL_BATCH_MAX_BYTES`` are gathered into one transaction: a burst costs one
fsync, not one per message. What the spool's bounds drop is counted and logged.

Downlink: every chunk read from the HES is wrapped in 0x2100/0xBF frames of at
most ``UART.max_info`` info bytes and written to the meter (``uart.write``).

Framing (``TCP_SERVER.framing``, ``services.hesframing``): ``raw`` writes payloads
as they are and makes each read a downlink chunk; ``wrapper`` (IEC 62056-47)
puts the wrapper header before each payload as it is written to the socket
(the spool keeps payloads bare) and makes each APDU of the HES's stream a
downlink chunk, whatever TCP splits or merges; a bad header drops the
connection (``hes.framing_errors``). Spool policy (``TCP_SERVER.spool.policy``)
``pushes``: when the link comes up, the responses held in the spool (they
answer requests of a connection that is gone) are dropped
(``spool.dropped_policy``); pushes and anything else go out in order.

Theory of operation. Socket I/O runs in one connection thread, not in the
service loop: name resolution, a connect bounded by ``TCP_SERVER.timeout``
and a TLS handshake are blocking steps by nature, and a slow HES needs writes
that wait for the socket to drain, which the loop (it polls for input only)
cannot express. The thread owns the socket, the reconnect backoff (exponential
with jitter, ``reconnect_min_s`` .. ``reconnect_max_s``), the registration
packet on every connect and the heartbeat packet; it waits in ``select`` on the
socket and a wake-up pipe, so ``stop()`` ends it at once. The loop owns
everything else (spool, counters, events) and never waits on the socket:

- loop -> thread: ``Connection.submit(gen, payloads)`` appends to a queue
  under a lock and wakes the thread; it refuses (returns False) if connection
  ``gen`` is no longer the live one.
- thread -> loop: downlink data, and a coalesced wake-up, through a
  ``ThreadInbox``; the truth (connection generation, up/down, payloads
  acknowledged so far) is read under the lock with ``snapshot()`` on each
  wake-up and every ``SYNC_INTERVAL``, so a dropped wake-up only delays,
  never loses, a change.

Delivered means acknowledged by the HES's TCP stack, not written: a write
only puts bytes in the kernel's send buffer, which a reset or a vanished HES
throws away. The thread records, for each write, the stream position its
payloads end at, and asks the kernel how far the peer has acknowledged
(``AckMeter``): after every write, then every ``ACK_POLL_MIN_S`` doubling to
``ACK_POLL_MAX_S`` while something is unacknowledged (ACKs wake nothing up).
Plain TCP: bytes written minus SIOCOUTQ (bytes not yet acknowledged). TLS,
where SIOCOUTQ counts record bytes the plaintext cannot be mapped to: raw
positions from SIOCOUTQ and TCP_INFO's ``tcpi_bytes_acked``, rounded so a
payload is confirmed late, never early. Only then does the loop count a
payload (``uplink.payloads``) and remove it from the spool; until then it
stays in ``inflight``. SO_SNDBUF is fixed at ``SNDBUF_BYTES``, so what a
dying link leaves in doubt (written, not acknowledged) stays bounded; at most
``DIRECT_MAX_BYTES`` of payloads held in memory, or ``INFLIGHT_MAX_BYTES``
read from the spool, are handed over and unacknowledged. When a connection ends the
thread looks at the ACKs once more (the kernel keeps them after a reset);
everything still unacknowledged is sent again, in order, on the next one:
spooled payloads are still in the spool, direct ones go back to its front.

Delivery is at least once. The HES may see a payload twice when its TCP
received it but the ACK had not reached the client when the link died (at
most the unacknowledged window; such payloads are counted in
``uplink.unacked_resent``), and a payload cut mid-write is sent whole again.
A TCP ACK means the HES's kernel has the bytes, not that its application read
them: an HES that crashes or resets with unread data in its receive buffer
loses that data, and only an application-level acknowledgement, which the HES
protocol does not have, could close that gap.

Stopping and crashing. On SIGTERM the thread waits up to ``STOP_ACK_WAIT_S``
for outstanding ACKs, then payloads held in memory still unacknowledged go to
the spool (with their units' marks, one transaction) and are sent again after
the restart (the kernel may still deliver the old copies: duplicates, counted
by the next client in ``uplink.duplicates_possible``). SIGKILL, or a crash,
loses nothing the uart handed over: a unit is acknowledged to the uart only
once all its payloads are in the spool (committed) or acknowledged by the
HES's TCP, so what only this process's memory held (the payloads held in
memory, at most ``DIRECT_MAX_BYTES`` unacknowledged, and those gathered for
the next spool transaction) belongs to units the uart still journals and
sends again to the restarted client. What can repeat is what was written to
the socket but not yet acknowledged when the process died: the kernel goes on
sending a dead process's socket buffer (unless unread downlink data turns the
close into a reset or the link fails), and the same payloads come again from
the uart. The ``sent`` marks (``common.marks``, written before a payload can
reach the HES) let the restarted client count those in
``uplink.duplicates_possible``. Everything the spool accepted survives (each
append is fsynced); spool acks are not fsynced, so after a power cut some
delivered payloads are sent again. A power cut of the whole gateway depends on
the uart journal's fsync policy for the units it had not yet had acknowledged.

Events: ``link.up`` / ``link.down`` (with ``reason``) on each change;
``link.status`` (state: ``up``, ``host``, ``port``, ``tls``, ``since``,
``spool_depth``, ``spool_bytes``, ``inflight`` (handed to the connection,
not acknowledged), ``reconnects``, ``last_error``) on each change, again one
tick later, and every ``STATUS_INTERVAL``. The heartbeat carries the same under ``link``.

Counters: ``uplink.payloads``/``uplink.bytes`` (acknowledged by the HES's
TCP), ``uplink.unacked_resent`` (written, not acknowledged when their link
ended, so sent again: the HES may have them twice),
``downlink.chunks``/``bytes``/``frames``, ``tcp.bytes_up``/``bytes_down``
(everything, registration and heartbeats included), ``hes.registrations``,
``hes.heartbeats``, ``link.connects``/``reconnects``/``connect_failed``/
``downs``/``errors``, ``spool.appended``/``requeued``, and the losses:
``spool.dropped_size``, ``spool.dropped_age``, ``spool.dropped_policy`` (payloads;
bytes in ``spool.evicted_bytes``), ``spool.errors``, ``downlink.dropped``,
``send.bad``, ``send.too_long`` (longer than the wrapper carries),
``hes.framing_errors``.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import fcntl
import itertools
import logging
import os
import random
import select
import socket
import ssl
import string
import struct
import sys
import termios
import threading
import time
from dataclasses import dataclass
from typing import Any

import zmq

from common import bus, delivery, metrics, rfc1662
from common.config import ConfigError
from common.dlms.count import count_apdu
from common.marks import MarkFile
from common.service import Service, ThreadInbox, setup_logging
from common.spool import Dropped, Spool, SpoolError
from services.hesframing import Decoder, FramingError, HesFraming

log = logging.getLogger("meterlink.client")

SPOOL_FILE = "client-spool.sqlite3"  # in the run directory
MARKS_FILE = "client-marks.bin"  # in the run directory (common.marks)
RECV_SIZE = 65536  # bytes per read from the HES
WRITE_CHUNK = 65536  # bytes per write to the HES
SNDBUF_BYTES = 128 * 1024  # SO_SNDBUF (the kernel doubles it): bounds the unacknowledged window
INFLIGHT_MAX_BYTES = 256 * 1024  # read from the spool, handed over, not yet acknowledged
#: While the link is up, payloads are held in memory (handed to the connection,
#: not spooled) up to this many bytes unacknowledged by the HES's TCP. Their
#: units are not acknowledged to the uart until then, so the uart's journal is
#: their durable copy and a SIGKILL loses none of them (the uart sends the units
#: again). Beyond it (an HES slower than the meter) payloads go to the spool.
DIRECT_MAX_BYTES = 1024 * 1024
SPOOL_BATCH_MAX_BYTES = 64 * 1024  # gathered for one spool transaction (lost on SIGKILL)
ACK_POLL_MIN_S = 0.005  # first look at the ACKs after a write ...
ACK_POLL_MAX_S = 0.1  # ... then doubling up to this while nothing moves
STOP_ACK_WAIT_S = 0.2  # on stop, how long the thread waits for data in flight to be acknowledged
DRAIN_BATCH = 256  # spool entries read per step while draining
DOWNLINK_HWM = 1000  # downlink chunks the thread may queue for the loop
DOWNLINK_WINDOW_BYTES = 64 * 1024  # read from the HES, not yet written to the meter
STASH_RETRY_S = 0.01  # the connection retries handing downlink data to a full inbox
ACK_DELAY_S = 0.01  # uplink acknowledgements are gathered this long
SYNC_INTERVAL = 0.25  # seconds: loop reconciles with the thread at least this often
STATUS_INTERVAL = 2.0  # seconds: link.status is published at least this often
EXPIRE_INTERVAL_MAX = 60.0  # seconds between spool age checks (less if max_age_s is short)
IDLE_SELECT_S = 1.0  # longest the thread waits in select with nothing due
STABLE_LINK_S = 10.0  # a link up this long resets the reconnect backoff
RECONNECT_FLOOR_S = 0.05  # never retry faster than this, whatever the config says
KEEPALIVE_PROBES = 3  # TCP_KEEPCNT; TCP_KEEPINTVL is keep_alive / this
SIOCOUTQ = termios.TIOCOUTQ  # Linux: bytes in the send queue not acknowledged by the peer
TCP_INFO_LEN = 256  # bytes of struct tcp_info asked for
TCPI_BYTES_ACKED = 120  # offset of __u64 tcpi_bytes_acked in struct tcp_info (Linux >= 4.1)
STOP_JOIN_S = 0.5  # how long close() waits for the connection thread

#: Names a text registration or heartbeat template may use.
TEMPLATE_NAMES = ("device_name", "meter_sn", "hostname", "hes_host", "hes_port")

_DATA = b"d"  # thread -> loop: [b"d", chunk]
_WAKE = b"w"  # thread -> loop: [b"w"], "look at snapshot()"


# -- configuration --------------------------------------------------------------


def template_values(config: dict[str, Any]) -> dict[str, str]:
    tcp = config["TCP_SERVER"]
    return {
        "device_name": config["DEVICE"]["name"],
        "meter_sn": config["DEVICE"]["meter_sn"],
        "hostname": socket.gethostname(),
        "hes_host": tcp["host"],
        "hes_port": str(tcp["port"]),
    }


def render_packet(spec: dict[str, Any], key: str, values: dict[str, str]) -> bytes:
    """A registration/heartbeat packet from its config (hex or text template).

    Raises ``ConfigError`` naming ``key`` for bad hex, an unknown template
    name or a malformed template.
    """
    payload: str = spec["payload"]
    if spec["format"] == "hex":
        try:
            return bytes.fromhex(payload)
        except ValueError as exc:
            raise ConfigError(f"config key {key}.payload: not hex: {exc}") from None
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(payload) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"config key {key}.payload: bad template: {exc}") from None
    for name in names:
        if name not in values:
            raise ConfigError(
                f"config key {key}.payload: unknown template name {{{name}}}; "
                f"known: {', '.join(sorted(values))}"
            )
    try:
        return payload.format(**values).encode()
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigError(f"config key {key}.payload: bad template: {exc}") from None


def ssl_context(tls: dict[str, Any]) -> ssl.SSLContext | None:
    """The client TLS context from ``TCP_SERVER.tls``; None when TLS is off."""
    if not tls["enabled"]:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls["ca"]:
        try:
            ctx.load_verify_locations(cafile=tls["ca"])
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"config key TCP_SERVER.tls.ca: cannot load {tls['ca']}: {exc}"
            ) from None
    else:
        ctx.load_default_certs()
    if tls["cert"]:
        try:
            ctx.load_cert_chain(tls["cert"], tls["key"] or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"config key TCP_SERVER.tls.cert/key: cannot load {tls['cert']}: {exc}"
            ) from None
    elif tls["key"]:
        raise ConfigError("config key TCP_SERVER.tls.key: set, but tls.cert is empty")
    if not tls["verify"]:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True)
class Target:
    """Everything the connection thread needs, checked at start."""

    host: str
    port: int
    timeout: float
    keep_alive: int
    reconnect_min: float
    reconnect_max: float
    reconnect_slow_after: float
    reconnect_slow_max: float
    resolve_timeout: float
    tls: ssl.SSLContext | None
    server_hostname: str
    registration: bytes
    heartbeat: bytes
    heartbeat_interval: float
    framing: HesFraming = HesFraming()  # registration and heartbeat are framed too

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Target:
        tcp = config["TCP_SERVER"]
        values = template_values(config)
        registration = render_packet(tcp["registration"], "TCP_SERVER.registration", values)
        hb = tcp["heartbeat"]
        heartbeat = render_packet(hb, "TCP_SERVER.heartbeat", values)
        if hb["interval_s"] > 0 and not heartbeat:
            raise ConfigError(
                "config key TCP_SERVER.heartbeat.payload: empty, "
                f"but heartbeat.interval_s is {hb['interval_s']}"
            )
        if tcp["reconnect_max_s"] < tcp["reconnect_min_s"]:
            raise ConfigError(
                f"config key TCP_SERVER.reconnect_max_s: {tcp['reconnect_max_s']} "
                f"is below reconnect_min_s {tcp['reconnect_min_s']}"
            )
        framing = HesFraming.from_config(tcp)
        for key, packet in (("registration", registration), ("heartbeat", heartbeat)):
            if packet and not framing.fits(packet):
                raise ConfigError(
                    f"config key TCP_SERVER.{key}.payload: {len(packet)} bytes do not fit "
                    f"one {framing.kind} PDU (at most {framing.max_payload})"
                )
        rmin = max(RECONNECT_FLOOR_S, float(tcp["reconnect_min_s"]))
        return cls(
            host=tcp["host"],
            port=int(tcp["port"]),
            timeout=float(tcp["timeout"]) or 1.0,
            keep_alive=int(tcp["keep_alive"]),
            reconnect_min=rmin,
            reconnect_max=max(rmin, float(tcp["reconnect_max_s"])),
            reconnect_slow_after=float(tcp["reconnect_slow_after_s"]),
            reconnect_slow_max=max(rmin, float(tcp["reconnect_slow_max_s"])),
            resolve_timeout=float(tcp["resolve_timeout_s"]),
            tls=ssl_context(tcp["tls"]),
            server_hostname=tcp["tls"]["server_hostname"] or tcp["host"],
            registration=registration,
            heartbeat=heartbeat if hb["interval_s"] > 0 else b"",
            heartbeat_interval=float(hb["interval_s"]),
            framing=framing,
        )

    def backoff(self, attempt: int, outage_s: float = 0.0) -> float:
        """Seconds before retry ``attempt`` (0-based): doubling, capped, jittered.

        The cap is ``reconnect_max`` for the first ``reconnect_slow_after``
        seconds of an outage, so a HES that accepts again is reached within
        about that long; ``reconnect_slow_max`` after that.
        """
        slow = outage_s >= self.reconnect_slow_after
        top = self.reconnect_slow_max if slow else self.reconnect_max
        cap = min(top, self.reconnect_min * 2 ** min(attempt, 30))
        return random.uniform(max(self.reconnect_min, cap / 2), cap)


# -- the connection thread --------------------------------------------------------


class LinkClosed(Exception):
    """The connection ended; the message says why (logged as ``reason=``)."""


@dataclass
class LinkStats:
    """Written by the connection thread only; the loop reads them."""

    connects: int = 0
    connect_failed: int = 0
    registrations: int = 0
    heartbeats: int = 0
    tcp_bytes_up: int = 0
    tcp_bytes_down: int = 0
    errors: int = 0
    unacked_resent: int = 0  # payloads written, not acknowledged when their link ended
    downlink_stalls: int = 0  # downlink chunks the loop's inbox refused (held, not lost)
    framing_errors: int = 0  # connections dropped for a bad wrapper header


def send_queue(sock: socket.socket) -> int:
    """SIOCOUTQ: bytes written to ``sock`` that its peer has not acknowledged yet."""
    buf = fcntl.ioctl(sock.fileno(), SIOCOUTQ, b"\0" * 4)
    return int(struct.unpack("i", buf)[0])


def tcp_bytes_acked(sock: socket.socket) -> int | None:
    """TCP_INFO's tcpi_bytes_acked (every byte of the connection the peer
    acknowledged, TLS records included); None if the kernel does not report it."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    if len(info) < TCPI_BYTES_ACKED + 8:
        return None
    return int(struct.unpack_from("Q", info, TCPI_BYTES_ACKED)[0])


class AckMeter:
    """How far the peer's TCP stack has acknowledged one connection's bytes.

    The thread calls ``wrote(n)`` after each write, ``mark()`` for the
    position a payload that write completed must reach, and ``acked()`` for
    the position reached; a payload is acknowledged once ``acked() >= mark``.
    Positions only compare with each other; their unit depends on the socket:

    - plain TCP: bytes written. ``acked() = written - SIOCOUTQ``, exact.
    - TLS: SIOCOUTQ counts record bytes (headers, MACs, handshake), which the
      plaintext written says nothing of, so positions are raw TCP bytes.
      ``acked()`` is TCP_INFO's ``tcpi_bytes_acked``; ``mark()`` is SIOCOUTQ
      plus ``tcpi_bytes_acked``, read in that order: an ACK arriving between
      the two reads can only put the mark past the true end (the payload is
      confirmed late, never early), and an empty send queue, when everything
      written is acknowledged, settles every mark handed out. OpenSSL (no
      partial-write mode) has passed every record of a write to the kernel
      when the write returns.
    - TLS without ``tcpi_bytes_acked`` (kernels before 4.1, or ``tcp_info``
      False): positions are plaintext bytes and all that was written counts
      as acknowledged only when SIOCOUTQ reads 0.

    Raises ``OSError`` if the socket cannot be asked.
    """

    def __init__(self, sock: socket.socket, tcp_info: bool = True) -> None:
        self._sock = sock
        self._written = 0
        self._acked = 0
        self._top = 0  # the furthest mark handed out
        self.mode = "plain"
        if isinstance(sock, ssl.SSLSocket):
            ok = tcp_info and tcp_bytes_acked(sock) is not None
            self.mode = "tls" if ok else "tls-drain"

    def wrote(self, n: int) -> None:
        self._written += n

    def mark(self) -> int:
        if self.mode == "tls":
            outq = send_queue(self._sock)
            self._top = max(self._top, outq + (tcp_bytes_acked(self._sock) or 0))
            return self._top
        return self._written

    def acked(self) -> int:
        if self.mode == "plain":
            self._acked = self._written - send_queue(self._sock)
        elif send_queue(self._sock) == 0:
            self._acked = self._top if self.mode == "tls" else self._written
        elif self.mode == "tls":
            self._acked = tcp_bytes_acked(self._sock) or 0
        return self._acked


@dataclass
class Flight:
    """One connection's payloads written but not yet acknowledged (thread only)."""

    meter: AckMeter
    # (position to reach, payloads that reach with it), in write order
    unacked: collections.deque[tuple[int, int]]
    poll_every: float = ACK_POLL_MIN_S
    next_poll: float = 0.0

    @property
    def payloads(self) -> int:
        return sum(n for _, n in self.unacked)


class NameResolver:
    """``getaddrinfo`` with a time limit, so that a hung DNS cannot hold the link.

    A numeric address needs no lookup. A name is looked up in a helper thread
    (it owns no socket); if it takes longer than the limit the connect attempt
    fails with ``resolve: timed out``, and the next attempt waits for that
    same lookup rather than starting another, so a dead resolver never piles
    up threads.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._result: list[Any] = []

    def resolve(self, host: str, port: int, timeout: float) -> list[Any]:
        try:
            return socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            pass  # a name, not an address
        if self._thread is None:
            result: list[Any] = []
            self._result = result

            def lookup() -> None:
                try:
                    result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
                except OSError as exc:
                    result.append(exc)

            self._thread = threading.Thread(target=lookup, name="hes-resolve", daemon=True)
            self._thread.start()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise OSError(f"timed out after {timeout:g}s")
        self._thread = None
        outcome = self._result[0]
        if isinstance(outcome, OSError):
            raise outcome
        return list(outcome)


class Connection(threading.Thread):
    """Owns the socket: connect, TLS, keep-alive, reads, writes, backoff."""

    def __init__(self, target: Target, inbox: ThreadInbox) -> None:
        super().__init__(name="hes-connection", daemon=True)
        self.t = target
        self._inbox = inbox
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # Shared under _lock:
        self._gen = 0
        self._up = False
        self._acked = 0  # payloads from submit() the HES's TCP acknowledged, ever
        self._queue: collections.deque[bytes] = collections.deque()
        self._wake_pending = False
        self.last_error = ""
        self.stats = LinkStats()
        self._was_up = False
        self._resolver = NameResolver()
        # Downlink window: bytes read from the HES and not yet written to the
        # meter (the loop subtracts what the uart acknowledged). The thread
        # stops reading at DOWNLINK_WINDOW_BYTES, so TCP pushes back on the HES.
        self._dl_unacked = 0
        self._stash: collections.deque[list[bytes]] = collections.deque()

    # -- called from the service loop --------------------------------------------

    def submit(self, gen: int, payloads: list[bytes]) -> bool:
        """Queue payloads for connection ``gen``; False if that connection is gone."""
        with self._lock:
            if not self._up or gen != self._gen:
                return False
            self._queue.extend(payloads)
        self._kick()
        return True

    def snapshot(self) -> tuple[int, bool, int]:
        """(generation, up, payloads acknowledged so far)."""
        with self._lock:
            self._wake_pending = False
            return self._gen, self._up, self._acked

    def downlink_done(self, nbytes: int) -> None:
        """``nbytes`` of downlink data were written to the meter (or forgotten)."""
        with self._lock:
            was_full = self._dl_unacked >= DOWNLINK_WINDOW_BYTES
            self._dl_unacked = max(0, self._dl_unacked - nbytes)
            full = self._dl_unacked >= DOWNLINK_WINDOW_BYTES
        if was_full and not full:
            self._kick()

    def _reading(self) -> bool:
        if self._stash:
            return False
        with self._lock:
            return self._dl_unacked < DOWNLINK_WINDOW_BYTES

    def _hand_over_stash(self) -> None:
        """Downlink data the loop's inbox refused, handed over in order."""
        while self._stash:
            if not self._inbox.post([_DATA, *self._stash[0]]):
                return
            self._stash.popleft()

    def stop(self) -> None:
        self._stopping.set()
        self._kick()

    def _kick(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full pipe: the thread is already due to wake

    # -- the thread ------------------------------------------------------------------

    def run(self) -> None:
        attempt = 0
        down_since = time.monotonic()
        try:
            while not self._stopping.is_set():
                delay = self.t.backoff(attempt, time.monotonic() - down_since)
                try:
                    stable = self._session(attempt, delay)
                except Exception:  # a bug must not end the link for good
                    self.stats.errors += 1
                    log.exception("connection error host=%s port=%d", self.t.host, self.t.port)
                    with self._lock:
                        self._up = False
                        self._queue.clear()
                        self.last_error = "internal error"
                    self._notify()
                    stable = False
                if self._stopping.is_set():
                    break
                if self._was_up:
                    self._was_up = False
                    down_since = time.monotonic()
                if stable:
                    attempt = 0
                    delay = self.t.backoff(0)
                else:
                    attempt += 1
                self._wait(delay)
        finally:
            self._inbox.close_thread_side()
            self._wake_r.close()

    def _session(self, attempt: int, delay: float) -> bool:
        """Connect and serve one connection; True if it stayed up long enough to be stable."""
        try:
            sock = self._connect()
        except LinkClosed as exc:
            self.stats.connect_failed += 1
            self._note_failure(str(exc), attempt, delay)
            return False
        if sock is None:
            return False  # stopping
        try:
            flight = Flight(AckMeter(sock), collections.deque())
        except OSError as exc:
            sock.close()
            self.stats.connect_failed += 1
            self._note_failure(f"tcp info: {exc.strerror or exc}", attempt, delay)
            return False
        started = time.monotonic()
        self._was_up = True
        with self._lock:
            self._gen += 1
            self._up = True
            self._queue.clear()
            self.last_error = ""
        self.stats.connects += 1
        self._notify()
        reason = "internal error"
        try:
            self._serve(sock, flight)
            reason = "stopping"
            self._settle(flight)
        except LinkClosed as exc:
            reason = str(exc)
        finally:
            # ACKs that came before the end still count (the kernel keeps
            # snd_una after a reset), so fewer payloads are sent twice.
            try:
                self._poll_acks(flight)
            except LinkClosed:
                pass
            self.stats.unacked_resent += flight.payloads
            with self._lock:
                self._up = False
                self._queue.clear()
                self.last_error = reason
            sock.close()
            self._notify()
        return time.monotonic() - started >= STABLE_LINK_S

    def _note_failure(self, reason: str, attempt: int, delay: float) -> None:
        with self._lock:
            same = self.last_error == reason
            self.last_error = reason
        # A vanished HES fails every few seconds for hours: log changes, then
        # only every 100th repeat.
        level = logging.DEBUG if same and (attempt + 1) % 100 else logging.WARNING
        log.log(
            level,
            "connect failed host=%s port=%d reason=%s attempt=%d retry_in=%.2fs",
            self.t.host,
            self.t.port,
            reason,
            attempt + 1,
            delay,
        )
        self._notify()

    def _notify(self) -> None:
        """Tell the loop to look at snapshot(), once until it has looked."""
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        if not self._inbox.post([_WAKE]):
            # The periodic sync will see the change anyway.
            with self._lock:
                self._wake_pending = False

    def _wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, ending at once on stop()."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            select.select([self._wake_r], [], [], left)
            self._drain_wake()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _connect(self) -> socket.socket | None:
        """A connected (and TLS-established) non-blocking socket, None if stopping."""
        t = self.t
        try:
            infos = self._resolver.resolve(t.host, t.port, t.resolve_timeout)
        except OSError as exc:
            raise LinkClosed(f"resolve: {exc}") from None
        deadline = time.monotonic() + t.timeout
        reason = "no address"
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                # A fixed send buffer (no autotuning to megabytes) keeps what
                # the kernel holds unacknowledged, and so what a dying link
                # makes us send again, bounded.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)
                sock.setblocking(False)
                err = sock.connect_ex(addr)
                if err not in (0, errno.EINPROGRESS):
                    raise LinkClosed(f"connect: {os.strerror(err)}")
                if err and not self._await(sock, write=True, deadline=deadline):
                    if self._stopping.is_set():
                        sock.close()
                        return None
                    raise LinkClosed(f"connect: timed out after {t.timeout}s")
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise LinkClosed(f"connect: {os.strerror(err)}")
                self._set_options(sock)
                if t.tls is not None:
                    tls_sock = self._handshake(sock, deadline)
                    if tls_sock is None:
                        sock.close()
                        return None
                    return tls_sock
                return sock
            except LinkClosed as exc:
                sock.close()
                reason = str(exc)
            except OSError as exc:
                sock.close()
                reason = f"connect: {exc.strerror or exc}"
        raise LinkClosed(reason)

    def _await(self, sock: socket.socket, *, write: bool, deadline: float) -> bool:
        """Wait until ``sock`` is writable (or readable); False on timeout or stop."""
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, w, _ = select.select(
                [self._wake_r] + ([] if write else [sock]), [sock] if write else [], [], left
            )
            if self._wake_r in r:
                self._drain_wake()
            if sock in r or sock in w:
                return True
        return False

    def _set_options(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        idle = self.t.keep_alive
        if idle <= 0:
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        interval = max(1, idle // KEEPALIVE_PROBES)
        for name, value in (
            ("TCP_KEEPIDLE", idle),
            ("TCP_KEEPINTVL", interval),
            ("TCP_KEEPCNT", KEEPALIVE_PROBES),
            # Unacknowledged data also ends the link after as long as
            # keep-alive would take to notice a dead peer.
            ("TCP_USER_TIMEOUT", (idle + interval * KEEPALIVE_PROBES) * 1000),
        ):
            opt = getattr(socket, name, None)
            if opt is not None:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)

    def _handshake(self, sock: socket.socket, deadline: float) -> ssl.SSLSocket | None:
        assert self.t.tls is not None
        try:
            tls = self.t.tls.wrap_socket(
                sock, server_hostname=self.t.server_hostname, do_handshake_on_connect=False
            )
        except (ssl.SSLError, ValueError) as exc:
            raise LinkClosed(f"tls: {exc}") from None
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                ok = self._await(tls, write=False, deadline=deadline)
            except ssl.SSLWantWriteError:
                ok = self._await(tls, write=True, deadline=deadline)
            except ssl.SSLCertVerificationError as exc:
                tls.close()
                raise LinkClosed(f"tls: certificate verify failed: {exc.verify_message}") from None
            except (ssl.SSLError, OSError) as exc:
                tls.close()
                raise LinkClosed(f"tls: {exc}") from None
            if not ok:
                if self._stopping.is_set():
                    tls.close()
                    return None
                tls.close()
                raise LinkClosed(f"tls: handshake timed out after {self.t.timeout}s")

    def _serve(self, sock: socket.socket, flight: Flight) -> None:
        """Move bytes both ways until the link fails (LinkClosed) or stop()."""
        t = self.t
        is_tls = isinstance(sock, ssl.SSLSocket)
        pending: collections.deque[tuple[bytes, bool]] = collections.deque()  # (data, counted)
        offset = 0  # bytes of pending[0] already written
        retry: bytes | None = None  # TLS: a write must be retried with the same bytes
        framing = t.framing
        decoder = framing.decoder()  # one per connection
        if t.registration:
            pending.append((framing.encode(t.registration), False))
            self.stats.registrations += 1
        hb_due = time.monotonic() + t.heartbeat_interval if t.heartbeat else float("inf")
        while not self._stopping.is_set():
            with self._lock:
                if self._queue:
                    pending.extend((framing.encode(p), True) for p in self._queue)
                    self._queue.clear()
            self._hand_over_stash()
            now = time.monotonic()
            if self.t is not t:
                # Reloaded (SIGHUP): the heartbeat's packet and interval change on
                # this connection; the framing stays what the connection began with.
                t = self.t
                hb_due = now + t.heartbeat_interval if t.heartbeat else float("inf")
            if now >= hb_due:
                pending.append((framing.encode(t.heartbeat), False))
                self.stats.heartbeats += 1
                hb_due = max(hb_due + t.heartbeat_interval, now)
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                due = min(hb_due, flight.next_poll if flight.unacked else hb_due)
                if self._stash:
                    due = min(due, now + STASH_RETRY_S)
                timeout = min(IDLE_SELECT_S, max(0.0, due - now))
                reading = self._reading()
                r, w, _ = select.select(
                    [sock, self._wake_r] if reading else [self._wake_r],
                    [sock] if pending else [],
                    [],
                    timeout,
                )
                if self._wake_r in r:
                    self._drain_wake()
            else:
                r, w = ([sock] if self._reading() else []), []
            if sock in r:
                self._read(sock, is_tls, decoder)
            wrote = False
            if sock in w and pending:
                offset, retry = self._write(sock, pending, offset, retry, flight)
                wrote = True
            now = time.monotonic()
            if flight.unacked and (wrote or now >= flight.next_poll):
                # ACKs wake nothing up: look after every write, then less and
                # less often while nothing moves (a stalled HES costs ~10 ioctls/s).
                if self._poll_acks(flight) or wrote:
                    flight.poll_every = ACK_POLL_MIN_S
                else:
                    flight.poll_every = min(2 * flight.poll_every, ACK_POLL_MAX_S)
                flight.next_poll = now + flight.poll_every

    def _poll_acks(self, flight: Flight) -> bool:
        """Confirm the payloads the peer acknowledged; True if there were any."""
        if not flight.unacked:
            return False
        try:
            pos = flight.meter.acked()
        except OSError as exc:
            raise LinkClosed(f"ioctl: {exc.strerror or exc}") from None
        n = 0
        while flight.unacked and flight.unacked[0][0] <= pos:
            n += flight.unacked.popleft()[1]
        if not n:
            return False
        with self._lock:
            self._acked += n
        self._notify()
        return True

    def _settle(self, flight: Flight) -> None:
        """On stop: give what is in flight a moment to be acknowledged, so that
        fewer payloads go back to the spool and out again after the restart."""
        deadline = time.monotonic() + STOP_ACK_WAIT_S
        while flight.unacked and time.monotonic() < deadline:
            if not self._poll_acks(flight):
                time.sleep(ACK_POLL_MIN_S)

    def _read(self, sock: socket.socket, is_tls: bool, decoder: Decoder) -> None:
        while True:
            try:
                data = sock.recv(RECV_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            except InterruptedError:
                continue
            except (ssl.SSLError, OSError) as exc:
                raise LinkClosed(f"recv: {getattr(exc, 'strerror', None) or exc}") from None
            if not data:
                raise LinkClosed("closed by the HES")
            self.stats.tcp_bytes_down += len(data)
            chunks = decoder.feed(data)
            size = sum(map(len, chunks))
            with self._lock:
                self._dl_unacked += size
            if chunks and (self._stash or not self._inbox.post([_DATA, *chunks])):
                # The loop is that far behind: keep them here (the HES's TCP has
                # acknowledged them) and read no more until they are handed over.
                self._stash.append(chunks)
                self.stats.downlink_stalls += 1
            if decoder.error is not None:
                self._bad_framing(decoder.error)
            if not self._reading():
                return
            if not (is_tls and isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return

    def _bad_framing(self, error: FramingError) -> None:
        """A bad wrapper header: the stream cannot be followed, drop the connection."""
        self.stats.framing_errors += 1
        log.warning(
            "hes protocol error reason=bad_header framing=%s error=%s host=%s port=%d",
            self.t.framing,
            error,
            self.t.host,
            self.t.port,
        )
        raise LinkClosed(f"protocol error: {error}")

    def _write(
        self,
        sock: socket.socket,
        pending: collections.deque[tuple[bytes, bool]],
        offset: int,
        retry: bytes | None,
        flight: Flight,
    ) -> tuple[int, bytes | None]:
        if retry is not None:
            chunk = retry
        else:
            parts = [pending[0][0][offset:]]
            size = len(parts[0])
            for data, _ in itertools.islice(pending, 1, None):
                if size >= WRITE_CHUNK:
                    break
                parts.append(data)
                size += len(data)
            chunk = b"".join(parts)
        try:
            n = sock.send(chunk)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return offset, chunk
        except (BlockingIOError, InterruptedError):
            return offset, retry
        except (ssl.SSLError, OSError) as exc:
            raise LinkClosed(f"send: {getattr(exc, 'strerror', None) or exc}") from None
        self.stats.tcp_bytes_up += n
        flight.meter.wrote(n)
        done = 0
        while n and pending:
            left = len(pending[0][0]) - offset
            if n < left:
                offset += n
                break
            n -= left
            _, counted = pending.popleft()
            offset = 0
            done += counted
        if done:
            # Written whole: delivered once the peer acknowledges up to here.
            try:
                mark = flight.meter.mark()
            except OSError as exc:
                raise LinkClosed(f"ioctl: {exc.strerror or exc}") from None
            flight.unacked.append((mark, done))
        return offset, None


# -- the service ------------------------------------------------------------------


class Client(Service):
    """The ``client`` service: uplink spool and send, downlink wrap, link events."""

    def __init__(self, config: dict[str, Any], *, ctx: Any = None) -> None:
        # Everything that can be a config error is checked before any socket exists.
        # So is the spool: a client that cannot keep data safe does not start.
        target = Target.from_config(config)
        spool_cfg = config["TCP_SERVER"]["spool"]
        spool = Spool(
            os.path.join(config["_run_dir"], SPOOL_FILE),
            max_bytes=int(spool_cfg["max_bytes"]),
            max_age_s=float(spool_cfg["max_age_s"]),
        )
        uart = config["UART"]
        super().__init__(bus.CLIENT, config, ctx=ctx)
        self.target = target
        self.spool = spool
        self.spool_policy: str = spool_cfg["policy"]
        self.tls = target.tls is not None
        self.max_info = int(uart["max_info"])
        self.profile = uart["profile"]
        self.accm = int(uart["accm"])
        self.link_inbox = self.thread_inbox("downlink", self._on_thread, hwm=DOWNLINK_HWM)
        self.conn = Connection(target, self.link_inbox)
        self.add_thread(self.conn)
        self._gen = 0
        self._up = False
        self._since = time.time()
        self._acked_seen = 0
        # Handed to the connection, not yet acknowledged:
        # (spool id or None, payload, its index among the payloads accepted).
        self._inflight: collections.deque[tuple[int | None, bytes, int]] = collections.deque()
        self._inflight_bytes = 0
        self._direct_n = 0  # entries of _inflight with no spool id (direct)
        # For the spool, gathered until a burst of messages ends.
        self._gathered: list[bytes] = []
        self._gathered_bytes = 0
        # Uplink delivery (common.delivery): units taken in, in order, each
        # with the index its payloads end at; a unit is safe (acknowledged to
        # its owner) once every payload before that index is safe: spooled,
        # or acknowledged by the HES's TCP.
        self.rx = delivery.Receiver()
        self.markfile = MarkFile(os.path.join(config["_run_dir"], MARKS_FILE))
        safe, sent, spool_sent = self.markfile.load()
        for src, inst, n in spool.marks():
            safe[(src, inst)] = max(n, safe.get((src, inst), -1))
        for (src, inst), n in safe.items():
            self.rx.load(src, inst, n)
        self._safe_marks = safe
        self._sent_marks = dict(sent)
        self._spool_sent = spool_sent
        # What the last client had handed to the HES beyond what it knew was
        # safe: if it comes again, the HES may have it already (counted).
        self._maybe_sent = {k: n for k, n in sent.items() if n > safe.get(k, -1)}
        self._maybe_spool_sent = spool_sent
        self._counted_to = 0  # spool ids counted as possibly repeated so far
        self._accepted = 0  # payloads taken in, ever (the next index)
        self._acks_due: set[tuple[str, int]] = set()
        self._acks_scheduled = False
        # (src, inst, n, payload index it ends at, read time)
        self._units: collections.deque[tuple[str, int, int, int, float | None]] = (
            collections.deque()
        )
        # Downlink delivery: HES data held until the uart has written it.
        self.dl: delivery.Sender[list[bytes]] = delivery.Sender(
            bus.CLIENT, self.inst, DOWNLINK_WINDOW_BYTES
        )
        self._cursor: int | None = None  # last spool id handed over
        self._draining = False
        self._drain_from = 0
        self._gathered_from = 0
        self._published: tuple[bool, int, int] | None = None
        self._repeat_status = True

        self.on(bus.OP_SEND)(self._on_send)
        self.on(bus.OP_ACK)(self._on_ack)
        self.on(bus.OP_NACK)(self._on_nack)
        self.on_event(bus.T_REGISTRY)(self._on_registry)
        self.every(SYNC_INTERVAL, self._tick)
        self.every(STATUS_INTERVAL, self.publish_status)
        self.every(min(EXPIRE_INTERVAL_MAX, max(1.0, self.spool.max_age_s / 10)), self._expire)
        self.on_close(self._close)

    # -- lifecycle -------------------------------------------------------------------

    def setup(self) -> None:
        log.info(
            "client starting host=%s port=%d tls=%s spool_depth=%d spool_bytes=%d",
            self.target.host,
            self.target.port,
            self.tls,
            self.spool.count,
            self.spool.nbytes,
        )
        self._expire()
        top = self.target.framing.max_payload
        if top is not None and self.spool.count:
            # Spooled under another framing: a payload the wrapper cannot carry
            # would hold the link up for ever.
            try:
                n, _ = self.spool.discard(lambda _first, size: size > top)
            except SpoolError as exc:
                n = 0
                self.count_drop("spool.errors", "spool check failed error=%s", exc)
            if n:
                self.count_drop(
                    "send.too_long",
                    "spooled payloads dropped reason=too_long framing=%s n=%d",
                    self.target.framing,
                    n,
                    n=n,
                )
        self.publish_status()
        self.conn.start()

    def _close(self) -> None:
        self.conn.stop()
        if self.conn.is_alive():
            self.conn.join(STOP_JOIN_S)
        # Count what the connection saw acknowledged before it ended; direct
        # payloads it did not go to the spool with what was gathered, to be
        # sent again after a restart.
        _, _, acked = self.conn.snapshot()
        self._confirm(acked - self._acked_seen)
        self._acked_seen = acked
        n = sum(1 for id_, _, _ in self._inflight if id_ is None)
        self._flush_gathered(pump=False, force=True)
        if n:
            log.info("unacknowledged payloads spooled n=%d reason=stopping", n)
        # Everything in flight went to the HES's socket and may still arrive
        # (the kernel sends what a closed socket holds): counted as possibly
        # repeated when the next client sends it from the spool.
        ids = [id_ for id_, _, _ in self._inflight if id_ is not None]
        if ids and max(ids) > self._spool_sent:
            self._spool_sent = max(ids)
            self._write_marks()
        self._send_acks()
        self.markfile.close()
        self.spool.close()

    # -- uplink ------------------------------------------------------------------------

    def _on_send(self, env: bus.Envelope) -> None:
        data = env.data if isinstance(env.data, list) else [env.data]
        payloads = [bytes(p) for p in data if isinstance(p, (bytes, bytearray)) and p]
        bad = sum(1 for p in data if not isinstance(p, (bytes, bytearray)))
        if bad:
            self.count_drop(
                "send.bad",
                "uplink payload dropped reason=not_bytes src=%s n=%d",
                env.src,
                bad,
                n=bad,
            )
        ref = env.ref
        # A unit we already have (sent again after a restart somewhere) is
        # acknowledged again; one after a gap asks for the gap.
        if ref is not None and not self.take_unit(self.rx, ref, "uplink"):
            return
        if ref is not None:
            maybe = self._maybe_sent.get(ref.stream)
            if maybe is not None and ref.n <= maybe and payloads:
                self.count_drop(
                    "uplink.duplicates_possible",
                    "uplink payloads possibly repeated reason=client_restarted "
                    "src=%s inst=%d unit=%d n=%d",
                    ref.src,
                    ref.inst,
                    ref.n,
                    len(payloads),
                    n=len(payloads),
                )
        payloads = self._framable(payloads, env.src)
        if payloads:
            self._take(payloads, ref)
        if ref is not None:
            self._units.append((ref.src, ref.inst, ref.n, self._accepted, ref.t))
            self._advance()

    def _framable(self, payloads: list[bytes], src: str) -> list[bytes]:
        """The payloads the HES framing can carry; the others are dropped (counted)."""
        fits = [p for p in payloads if self.target.framing.fits(p)]
        if len(fits) < len(payloads):
            n = len(payloads) - len(fits)
            self.count_drop(
                "send.too_long",
                "uplink payload dropped reason=too_long framing=%s src=%s n=%d",
                self.target.framing,
                src,
                n,
                n=n,
            )
        return fits

    def _take(self, payloads: list[bytes], ref: bus.Ref | None = None) -> None:
        """Payloads taken in, in order: to the connection, or gathered for the spool."""
        self._sync()
        first = self._accepted
        self._accepted += len(payloads)
        # Direct (no spool) only while little is unacknowledged: a direct
        # payload exists in this process's memory alone until acknowledged
        # (the uart holds its unit until then, so a crash only delays it).
        nbytes = sum(map(len, payloads))
        direct = (
            self._up
            and not self._gathered
            and self.spool.count == 0
            and self._inflight_bytes + nbytes <= DIRECT_MAX_BYTES
        )
        if direct and ref is not None:
            # Before the HES can have it: a restarted client then knows
            # this unit may be at the HES already (common.marks).
            self._sent_marks[ref.stream] = ref.n
            self._write_marks()
        if direct and self.conn.submit(self._gen, payloads):
            for i, p in enumerate(payloads):
                self._inflight.append((None, p, first + i))
            self._direct_n += len(payloads)
            self._inflight_bytes += nbytes
            return
        # One fsynced transaction per burst, not per message: while more
        # messages wait in the inbox (and not much is gathered) gather them.
        if not self._gathered:
            self._gathered_from = first
        self._gathered.extend(payloads)
        self._gathered_bytes += nbytes
        if self._gathered_bytes >= SPOOL_BATCH_MAX_BYTES or not self._inbox_waiting():
            self._flush_gathered()

    # -- uplink delivery marks ------------------------------------------------------------

    def _safe_index(self) -> int:
        """Payloads before this index are safe: spooled or acknowledged by TCP."""
        if self._direct_n:  # only then is the deque walked (it may hold thousands)
            for id_, _, index in self._inflight:
                if id_ is None:
                    return index  # direct, not acknowledged yet (they come first)
        if self._gathered:
            return self._gathered_from
        return self._accepted

    def _safe_units(self) -> dict[tuple[str, int], int]:
        """Pop the units that are safe now; the last of each stream."""
        safe = self._safe_index()
        last: dict[tuple[str, int], int] = {}
        units = self._units
        now = time.monotonic()
        while units and units[0][3] <= safe:
            src, inst, n, _, t = units.popleft()
            last[(src, inst)] = n
            if t is not None:
                metrics.observe(self.counters, "uplink", now - t)
        return last

    def _advance(self) -> None:
        """Acknowledge every unit that became safe, after writing its mark.

        Marks and acks go out together within ``ACK_DELAY_S`` (one pwrite, then
        one ack per stream): a unit the HES acknowledged whose mark a kill loses
        reaches the HES twice, the one repeat this design allows; ``sent``
        marks let the next client count it.
        """
        last = self._safe_units()
        for (src, inst), n in last.items():
            if self.rx.made_durable(src, inst, n):
                self._safe_marks[(src, inst)] = n
                self._acks_due.add((src, inst))
        if self._acks_due and not self._acks_scheduled:
            # Acknowledgements wait a moment and go out together: one message
            # per ACK_DELAY_S, not one per frame, on the bus and in the uart.
            self._acks_scheduled = True
            self.call_later(ACK_DELAY_S, self._send_acks)

    def _send_acks(self) -> None:
        """The marks first (a restarted client must know what is safe), then the acks."""
        self._acks_scheduled = False
        if not self._acks_due:
            return
        self._write_marks()
        for src, inst in self._acks_due:
            self.send(src, bus.OP_ACK, [inst, self.rx.durable(src, inst)])
        self._acks_due.clear()

    def _write_marks(self) -> None:
        known = self.rx.streams
        for marks in (self._safe_marks, self._sent_marks):
            for key in [k for k in marks if k not in known]:
                del marks[key]  # streams the receiver forgot (bounded)
        try:
            self.markfile.write(self._safe_marks, self._sent_marks, self._spool_sent)
        except OSError as exc:
            self.count_drop("marks.errors", "delivery marks not written error=%s", exc)

    def _marks_through(self, index: int) -> list[tuple[str, int, int]]:
        """Marks of the units whose payloads all end before ``index``: what a
        spool write that makes everything before ``index`` safe must store
        in its own transaction."""
        last = delivery.last_per_stream(
            (src, inst, n) for src, inst, n, end, _ in self._units if end <= index
        )
        return [(src, inst, n) for (src, inst), n in last.items()]

    def _inbox_waiting(self) -> bool:
        return self.pull is not None and bool(self.pull.poll(0, zmq.POLLIN))

    def _flush_gathered(self, pump: bool = True, force: bool = False) -> None:
        """Append the gathered payloads to the spool and hand on what fits.

        Direct payloads not yet acknowledged go into the same transaction,
        ahead of the gathered ones (they are older): so everything taken in
        is safe once it commits, and safe in order. They stay with the
        connection that has them; the spool drops them when their ACK comes.
        """
        direct = [i for i, (id_, _, _) in enumerate(self._inflight) if id_ is None]
        if not self._gathered and not (force and direct):
            return
        gathered = self._gathered
        payloads = [self._inflight[i][1] for i in direct] + gathered
        # After this write, only a direct payload too big for the spool (it
        # stays with the connection alone) is not safe.
        unsafe = [
            self._inflight[i][2] for i in direct if len(self._inflight[i][1]) > self.spool.max_bytes
        ]
        safe = unsafe[0] if unsafe else self._accepted
        if not self._spool_append(payloads, self._marks_through(safe)):
            return  # kept gathered (its units unacknowledged): tried again next tick
        self._gathered = []
        self._gathered_bytes = 0
        ids = self.spool.last_ids
        for k, i in enumerate(direct):
            _, p, index = self._inflight[i]
            id_ = ids[k]
            # A payload too big for the spool stays direct (it was counted as
            # dropped by the spool; the connection may still deliver it).
            if id_ is not None:
                self._inflight[i] = (id_, p, index)
                self._direct_n -= 1
                self._cursor = id_ if self._cursor is None else max(self._cursor, id_)
        self._advance()
        if pump:
            self._pump()

    def _spool_append(self, payloads: list[bytes], marks: list[tuple[str, int, int]]) -> bool:
        try:
            dropped = self.spool.append(payloads, marks)
        except SpoolError as exc:
            self.count_drop(
                "spool.errors",
                "uplink payloads not spooled reason=spool_error n=%d error=%s",
                len(payloads),
                exc,
                n=len(payloads),
            )
            return False
        self.counters["spool.appended"] += len(payloads)
        self._count_dropped(dropped)
        return True

    def _count_dropped(self, dropped: Dropped) -> None:
        if dropped.size:
            self.counters["spool.evicted_bytes"] += dropped.size_bytes
            self.count_drop(
                "spool.dropped_size",
                "spool dropped reason=size n=%d bytes=%d max_bytes=%d",
                dropped.size,
                dropped.size_bytes,
                self.spool.max_bytes,
                n=dropped.size,
            )
        if dropped.age:
            self.counters["spool.evicted_bytes"] += dropped.age_bytes
            self.count_drop(
                "spool.dropped_age",
                "spool dropped reason=age n=%d bytes=%d max_age_s=%g",
                dropped.age,
                dropped.age_bytes,
                self.spool.max_age_s,
                n=dropped.age,
            )

    def _pump(self) -> None:
        """Hand spooled payloads to the connection, oldest first, within the in-flight bound.

        Direct payloads still in flight are older than anything spooled (they
        went direct only while the spool was empty) and the connection keeps
        the order it was handed things in.
        """
        if not self._up:
            return
        while self._inflight_bytes < INFLIGHT_MAX_BYTES:
            try:
                batch = self.spool.peek(
                    DRAIN_BATCH,
                    after=self._cursor,
                    max_bytes=INFLIGHT_MAX_BYTES - self._inflight_bytes,
                )
            except SpoolError as exc:
                self.count_drop("spool.errors", "spool read failed error=%s", exc)
                return
            if not batch:
                return
            top = batch[-1][0]
            if top > self._spool_sent:
                self._spool_sent = top  # before the HES can have them (common.marks)
                self._write_marks()
            maybe = sum(1 for id_, _ in batch if self._counted_to < id_ <= self._maybe_spool_sent)
            if not self.conn.submit(self._gen, [d for _, d in batch]):
                self._sync()
                return
            if maybe:
                self.count_drop(
                    "uplink.duplicates_possible",
                    "uplink payloads possibly repeated reason=client_restarted from=spool n=%d",
                    maybe,
                    n=maybe,
                )
                self._counted_to = max(self._counted_to, top)
            for id_, d in batch:
                self._inflight.append((id_, d, -1))
                self._inflight_bytes += len(d)
            self._cursor = batch[-1][0]

    def _expire(self) -> None:
        try:
            self._count_dropped(self.spool.expire())
        except SpoolError as exc:
            self.count_drop("spool.errors", "spool expire failed error=%s", exc)

    # -- the connection's news ------------------------------------------------------------

    def _on_thread(self, parts: list[bytes]) -> None:
        if parts[0] == _DATA and len(parts) >= 2:
            for chunk in parts[1:]:  # with the wrapper, one APDU each
                self._downlink(chunk)
        else:
            self._sync()

    def _tick(self) -> None:
        self._flush_gathered()  # in case the burst ended with a message that was not a send
        self._sync()
        now = time.monotonic()
        if self.dl.due(now):
            self._resend_downlink(self.dl.resend_all(now), "no_ack")
        state = (self._up, self.spool.count, self.spool.nbytes)
        if state != self._published or self._repeat_status:
            # A change goes out twice, the second time a tick later: the
            # event connection may still have been coming up (at start, or
            # after a broker restart) when the first was sent.
            self._repeat_status = state != self._published
            self.publish_status()

    def _sync(self) -> None:
        """Bring the loop's view up to date with the connection thread."""
        gen, up, acked = self.conn.snapshot()
        self._mirror_stats()
        n = acked - self._acked_seen
        self._acked_seen = acked
        if n:
            self._confirm(n)
        changed = bool(n)
        if self._up and (not up or gen != self._gen):
            self._link_down()
            changed = True
        if up and not self._up:
            self._link_up(gen)
            changed = True
        if changed:
            self._pump()

    def _confirm(self, n: int) -> None:
        """``n`` more in-flight payloads were acknowledged: count them, ack the spool."""
        if n <= 0:
            return
        last_id: int | None = None
        nbytes = 0
        for _ in range(min(n, len(self._inflight))):
            id_, d, _index = self._inflight.popleft()
            if id_ is None:
                self._direct_n -= 1
            self._inflight_bytes -= len(d)
            nbytes += len(d)
            if id_ is not None:
                last_id = id_
        self.counters["uplink.payloads"] += n
        self.counters["uplink.bytes"] += nbytes
        if last_id is not None:
            try:
                self.spool.ack(last_id)
            except SpoolError as exc:  # the entries will be sent again
                self.count_drop("spool.errors", "spool ack failed error=%s", exc)
            if self.spool.count == 0 and self._draining:
                self._draining = False
                sent = self.counters["uplink.payloads"] - self._drain_from
                log.info("spool drained sent=%d", sent)
        self._advance()

    def _link_up(self, gen: int) -> None:
        self._up = True
        self._gen = gen
        self._since = time.time()
        if self.spool_policy == "pushes":
            self._drop_stale_responses()
        if self.spool.count:
            # Logged for the backlog of an outage; overflow while the link is
            # up (a slow HES) only shows in the spool.appended counter.
            self._draining = True
            self._drain_from = self.counters["uplink.payloads"]
            log.info("spool draining depth=%d bytes=%d", self.spool.count, self.spool.nbytes)
        log.info(
            "link up host=%s port=%d tls=%s spool_depth=%d",
            self.target.host,
            self.target.port,
            self.tls,
            self.spool.count,
        )
        self.publish(bus.T_LINK_UP, self._link_info())
        self.publish_status()
        self._repeat_status = True

    def _drop_stale_responses(self) -> None:
        """Spool policy ``pushes``: everything held now was taken in before this
        connection, so the responses among it answer requests of a connection
        that is gone; they are dropped (counted). Pushes, and whatever is not one
        whole response APDU, stay in order."""
        # Imported here: it brings the whole DLMS codec, needed only by this policy.
        from common.dlms.kinds import RESPONSE_TAGS, is_whole_response

        self._flush_gathered(pump=False)
        try:
            n, nbytes = self.spool.discard(
                lambda first, _size: first in RESPONSE_TAGS, is_whole_response
            )
        except SpoolError as exc:
            self.count_drop("spool.errors", "spool policy failed error=%s", exc)
            return
        if n:
            self.counters["spool.evicted_bytes"] += nbytes
            self.count_drop(
                "spool.dropped_policy",
                "spool dropped reason=policy policy=pushes n=%d bytes=%d",
                n,
                nbytes,
                n=n,
            )

    def _link_down(self) -> None:
        self._up = False
        self._since = time.time()
        self.counters["link.downs"] += 1
        unacked = len(self._inflight)
        self._requeue_direct()
        self._draining = False
        reason = self.conn.last_error or "unknown"
        log.warning(
            "link down host=%s port=%d reason=%s unacked=%d spool_depth=%d",
            self.target.host,
            self.target.port,
            reason,
            unacked,
            self.spool.count,
        )
        self.publish(bus.T_LINK_DOWN, {**self._link_info(), "reason": reason})
        self.publish_status()
        self._repeat_status = True

    def _requeue_direct(self) -> int:
        """Forget what is in flight; direct payloads (never spooled) go back to
        the front of the spool, ahead of anything newer; return how many.
        Spooled ones are still in the spool: it drops them only once the HES
        acknowledged them."""
        direct = [(d, index) for id_, d, index in self._inflight if id_ is None]
        self._inflight.clear()
        self._direct_n = 0
        self._inflight_bytes = 0
        self._cursor = None
        if not direct:
            return 0
        safe = self._gathered_from if self._gathered else self._accepted
        try:
            self._count_dropped(
                self.spool.push_front([d for d, _ in direct], self._marks_through(safe))
            )
            self.counters["spool.requeued"] += len(direct)
        except SpoolError as exc:
            # Not safe, so not acknowledged: they wait with what is gathered
            # (older, so first) and the next flush tries the spool again.
            self.count_drop(
                "spool.errors",
                "uplink payloads not spooled reason=spool_error n=%d error=%s",
                len(direct),
                exc,
                n=len(direct),
            )
            self._gathered = [d for d, _ in direct] + self._gathered
            self._gathered_bytes += sum(len(d) for d, _ in direct)
            self._gathered_from = direct[0][1]
            return len(direct)
        self._advance()
        return len(direct)

    # -- downlink ------------------------------------------------------------------------

    def _downlink(self, data: bytes) -> None:
        """HES data: a unit of the downlink stream, held until the uart wrote it."""
        frames = rfc1662.wrap_transparent(data, self.max_info, self.profile, self.accm)
        count_apdu(self.counters, "down", data)
        self.counters["downlink.chunks"] += 1
        self.counters["downlink.bytes"] += len(data)
        self.counters["downlink.frames"] += len(frames)
        unit = self.dl.submit(frames, len(data), time.monotonic())
        self.send(bus.UART, bus.OP_WRITE, frames, self.dl.ref(unit))

    def _on_ack(self, env: bus.Envelope) -> None:
        if env.src != bus.UART:  # only the uart acknowledges the downlink
            self.counters["ack.bad_src"] += 1
            return
        inst, n = delivery.inst_n(env.data)
        now = time.monotonic()
        released = self.dl.ack(inst, n, now)
        for unit in released:
            metrics.observe(self.counters, "downlink", now - unit.born)
        if released:
            self.counters["downlink.units_written"] += len(released)
            self.conn.downlink_done(sum(u.size for u in released))

    def _on_nack(self, env: bus.Envelope) -> None:
        if env.src != bus.UART:
            self.counters["ack.bad_src"] += 1
            return
        inst, n = delivery.inst_n(env.data)
        self._resend_downlink(self.dl.resend_from(inst, n, time.monotonic()), "nack")

    def _on_registry(self, _topic: str, env: bus.Envelope) -> None:
        """A restarted broker or uart lost what it held of ours: send it again."""
        for name in self.restarted_peers(env.data, bus.UART)[0]:
            self._resend_downlink(self.dl.resend_all(time.monotonic()), f"{name}_restarted")

    def _resend_downlink(self, units: list[delivery.Unit[list[bytes]]], reason: str) -> None:
        if not units:
            return
        self.counters["downlink.units_resent"] += len(units)
        self.count_drop(
            "downlink.resends",
            "downlink resend reason=%s units=%d first=%d",
            reason,
            len(units),
            units[0].n,
        )
        for unit in units:
            self.send(bus.UART, bus.OP_WRITE, unit.item, self.dl.ref(unit))

    # -- state -----------------------------------------------------------------------------

    def _mirror_stats(self) -> None:
        s = self.conn.stats
        self.counters["link.connects"] = s.connects
        self.counters["link.reconnects"] = max(0, s.connects - 1)
        self.counters["link.connect_failed"] = s.connect_failed
        self.counters["link.errors"] = s.errors
        self.counters["hes.registrations"] = s.registrations
        self.counters["hes.heartbeats"] = s.heartbeats
        self.counters["tcp.bytes_up"] = s.tcp_bytes_up
        self.counters["tcp.bytes_down"] = s.tcp_bytes_down
        self.counters["uplink.unacked_resent"] = s.unacked_resent
        self.counters["downlink.inbox_stalls"] = s.downlink_stalls
        self.counters["hes.framing_errors"] = s.framing_errors

    def _link_info(self) -> dict[str, Any]:
        return {"host": self.target.host, "port": self.target.port, "tls": self.tls}

    def link_status(self) -> dict[str, Any]:
        return {
            "up": self._up,
            **self._link_info(),
            "since": self._since,
            "spool_depth": self.spool.count,
            "spool_bytes": self.spool.nbytes,
            "spool_age_s": round(self.spool.age(), 3),
            "inflight": len(self._inflight),
            "reconnects": self.counters["link.reconnects"],
            "last_error": self.conn.last_error,
        }

    def publish_status(self) -> None:
        self._published = (self._up, self.spool.count, self.spool.nbytes)
        self.publish(bus.T_LINK_STATUS, self.link_status())

    def heartbeat_data(self) -> dict[str, Any]:
        data = super().heartbeat_data()
        data["link"] = self.link_status()
        return data

    # -- reload (SIGHUP): what changes without dropping the link -----------------------

    LIVE_KEYS = frozenset(
        {"TCP_SERVER.registration", "TCP_SERVER.heartbeat", "TCP_SERVER.spool", "DEVICE"}
    )

    def apply_config(self, new: dict[str, Any], changed: list[str]) -> None:
        try:
            target = Target.from_config(new)
        except ConfigError as exc:
            log.error("reload: keeping the running HES settings error=%r", str(exc))
            return
        # Same HES, new packets: the connection takes them from its next connect
        # (registration) or heartbeat period; the link itself is not touched.
        target = dataclasses.replace(
            target, host=self.target.host, port=self.target.port, framing=self.target.framing
        )
        self.target = target
        self.conn.t = target
        spool_cfg = new["TCP_SERVER"]["spool"]
        self.spool.max_bytes = int(spool_cfg["max_bytes"])
        self.spool.max_age_s = float(spool_cfg["max_age_s"])
        self.spool_policy = spool_cfg["policy"]
        log.info(
            "client config applied spool_max_bytes=%d spool_max_age_s=%g spool_policy=%s",
            self.spool.max_bytes,
            self.spool.max_age_s,
            self.spool_policy,
        )


def main() -> None:
    from common.daemon import boot

    config, _ = boot(bus.CLIENT, doc=__doc__)
    setup_logging(config["LOG"]["level"], bus.CLIENT)
    try:
        service = Client(config)
    except ConfigError as exc:
        print(f"meterlink: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except SpoolError as exc:
        print(f"meterlink: client: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    service.run()


if __name__ == "__main__":
    main()

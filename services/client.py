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

Theory of operation. The HES socket is served by the service's own poll
loop, so a payload goes from the bus to ``send()``, and a read from ``recv()``
to the bus, without waking another thread. Only the steps that block by
nature run in a connect thread (``Connector``): name resolution with its time
limit (``NameResolver``), a connect bounded by ``TCP_SERVER.timeout`` and the
TLS handshake. One attempt per request; the connected, non-blocking socket
(or the reason it failed) waits in ``Connector.take()`` and a wake-up goes to
the loop through a ``ThreadInbox`` (the loop also looks every
``SYNC_INTERVAL``, so a lost wake-up only delays). From then on the loop owns
the socket (``Link``):

- reads: the socket is polled for input (``add_socket`` on its fd) while the
  downlink window is open; each read (and what TLS holds decrypted,
  ``pending()``) becomes downlink units at once. At ``DOWNLINK_WINDOW_BYTES``
  read and not yet written to the meter the loop stops polling for input, so
  TCP pushes back on the HES, and polls again once the uart has written some.
- writes: payloads are written non-blocking as they are handed over (from
  ``_on_send`` or the spool pump); what the socket does not take waits, and
  the loop polls for POLLOUT (``watch_writable``) and resumes at the byte it
  stopped at. TLS: a write that wants to write again is retried with the same
  bytes; one that wants to read first is retried shortly.
- timers: the ACK looks, the heartbeat packet, and the reconnect backoff
  (exponential with jitter, ``reconnect_min_s`` .. ``reconnect_max_s``); the
  registration packet goes first on every connect.
- a failure (EOF, an error, a reset, a bad wrapper header) marks the
  connection failed; the loop closes it on its next pass (never in the middle
  of handing it payloads), looks at the ACKs once more and sends the rest
  again on the next connection.

Delivered means acknowledged by the HES's TCP stack, not written: a write
only puts bytes in the kernel's send buffer, which a reset or a vanished HES
throws away. The loop records, for each write, the stream position its
payloads end at, and asks the kernel how far the peer has acknowledged
(``AckMeter``): on the loop's next pass after a write, before a payload
would go to the spool for want of room in memory, then every
``ACK_POLL_MIN_S`` doubling to
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
loop looks at the ACKs once more (the kernel keeps them after a reset);
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

Stopping and crashing. On SIGTERM the client waits up to ``STOP_ACK_WAIT_S``
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
import errno
import fcntl
import itertools
import logging
import os
import random
import select
import socket
import string
import struct
import sys
import termios
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import zmq

from common import bus, delivery, metrics, rfc1662
from common.config import ConfigError
from common.dlms.count import count_apdu
from common.marks import MarkFile
from common.service import Service, ThreadInbox, setup_logging
from common.spool import Dropped, Spool, SpoolError
from services.hesframing import Decoder, FramingError, HesFraming

if TYPE_CHECKING:
    import ssl

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
STOP_ACK_WAIT_S = 0.2  # on stop, how long the client waits for data in flight to be acknowledged
DRAIN_BATCH = 256  # spool entries read per step while draining
CONNECT_HWM = 16  # wake-ups the connect thread may queue for the loop
DOWNLINK_WINDOW_BYTES = 64 * 1024  # read from the HES, not yet written to the meter
ACK_DELAY_S = 0.01  # uplink acknowledgements are gathered this long
SYNC_INTERVAL = 0.25  # seconds: loop looks for a connect outcome at least this often
STATUS_INTERVAL = 2.0  # seconds: link.status is published at least this often
EXPIRE_INTERVAL_MAX = 60.0  # seconds between spool age checks (less if max_age_s is short)
IDLE_SELECT_S = 1.0  # longest the connect thread waits in select with nothing due
STABLE_LINK_S = 10.0  # a link up this long resets the reconnect backoff
RECONNECT_FLOOR_S = 0.05  # never retry faster than this, whatever the config says
KEEPALIVE_PROBES = 3  # TCP_KEEPCNT; TCP_KEEPINTVL is keep_alive / this
SIOCOUTQ = termios.TIOCOUTQ  # Linux: bytes in the send queue not acknowledged by the peer
TCP_INFO_LEN = 256  # bytes of struct tcp_info asked for
TCPI_BYTES_ACKED = 120  # offset of __u64 tcpi_bytes_acked in struct tcp_info (Linux >= 4.1)
STOP_JOIN_S = 0.5  # how long close() waits for the connect thread

#: Names a text registration or heartbeat template may use.
TEMPLATE_NAMES = ("device_name", "meter_sn", "hostname", "hes_host", "hes_port")

_WAKE = b"w"  # connect thread -> loop: [b"w"], "look at Connector.take()"


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


class _Never(Exception):
    """Stands for ssl's classes while no link uses TLS: nothing is ever one."""


class _ssl:  # noqa: N801 - read as the module it stands for
    """The names of ``ssl`` the client uses, the module imported with the
    first TLS context: it costs the client process 4.2 MB, and most HES links
    are plain TCP. Until then each class is ``_Never``, so an ``except`` of it
    catches nothing and an ``isinstance`` of it is False."""

    SSLError: Any = _Never
    SSLWantReadError: Any = _Never
    SSLWantWriteError: Any = _Never
    SSLCertVerificationError: Any = _Never
    SSLContext: Any = None
    PROTOCOL_TLS_CLIENT: Any = None
    TLSVersion: Any = None
    CERT_NONE: Any = None

    @classmethod
    def load(cls) -> None:
        import ssl

        for name in (
            "SSLError",
            "SSLWantReadError",
            "SSLWantWriteError",
            "SSLCertVerificationError",
            "SSLContext",
            "PROTOCOL_TLS_CLIENT",
            "TLSVersion",
            "CERT_NONE",
        ):
            setattr(cls, name, getattr(ssl, name))


def is_tls(sock: socket.socket) -> bool:
    """True for a TLS socket (then ``_ssl`` holds ssl's own names). Without
    ssl imported no socket can be one, and this imports nothing."""
    mod = sys.modules.get("ssl")
    if mod is None or not isinstance(sock, mod.SSLSocket):
        return False
    _ssl.load()
    return True


def ssl_context(tls: dict[str, Any]) -> ssl.SSLContext | None:
    """The client TLS context from ``TCP_SERVER.tls``; None when TLS is off."""
    if not tls["enabled"]:
        return None
    _ssl.load()
    ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = _ssl.TLSVersion.TLSv1_2
    if tls["ca"]:
        try:
            ctx.load_verify_locations(cafile=tls["ca"])
        except (OSError, _ssl.SSLError) as exc:
            raise ConfigError(
                f"config key TCP_SERVER.tls.ca: cannot load {tls['ca']}: {exc}"
            ) from None
    else:
        ctx.load_default_certs()
    if tls["cert"]:
        try:
            ctx.load_cert_chain(tls["cert"], tls["key"] or None)
        except (OSError, _ssl.SSLError) as exc:
            raise ConfigError(
                f"config key TCP_SERVER.tls.cert/key: cannot load {tls['cert']}: {exc}"
            ) from None
    elif tls["key"]:
        raise ConfigError("config key TCP_SERVER.tls.key: set, but tls.cert is empty")
    if not tls["verify"]:
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    return ctx


class Target(NamedTuple):
    """Everything the connection needs, checked at start."""

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


# -- the connection --------------------------------------------------------


class LinkClosed(Exception):
    """The connection ended; the message says why (logged as ``reason=``)."""


class LinkStats:
    """The connection's counters (the loop mirrors them into ``counters``)."""

    __slots__ = (
        "connect_failed",
        "connects",
        "downlink_stalls",
        "errors",
        "framing_errors",
        "heartbeats",
        "registrations",
        "tcp_bytes_down",
        "tcp_bytes_up",
        "unacked_resent",
    )

    def __init__(self) -> None:
        self.connects = 0
        self.connect_failed = 0
        self.registrations = 0
        self.heartbeats = 0
        self.tcp_bytes_up = 0
        self.tcp_bytes_down = 0
        self.errors = 0
        self.unacked_resent = 0  # payloads written, not acknowledged when their link ended
        self.downlink_stalls = 0  # always 0 now that the loop reads the socket (kept for metrics)
        self.framing_errors = 0  # connections dropped for a bad wrapper header


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

    The loop calls ``wrote(n)`` after each write, ``mark()`` for the
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
        if is_tls(sock):
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


class Link:
    """One connection, served by the service loop (loop only)."""

    __slots__ = (
        "ack_at",
        "ack_token",
        "decoder",
        "failed",
        "fd",
        "framing",
        "hb_token",
        "meter",
        "offset",
        "out",
        "poll_every",
        "reading",
        "retry",
        "retry_armed",
        "sock",
        "started",
        "tls",
        "unacked",
        "writing",
        "wrote",
    )

    def __init__(
        self,
        *,
        sock: socket.socket,
        fd: int,
        meter: AckMeter,
        framing: HesFraming,
        decoder: Decoder,
        started: float,
        tls: bool,
    ) -> None:
        self.sock = sock
        self.fd = fd  # registered with the loop (the poller reports fds as ints)
        self.meter = meter
        self.framing = framing  # what the connection began with, whatever a reload says
        self.decoder = decoder  # one per connection
        self.started = started
        self.tls = tls
        # (position to reach, payloads that reach with it), in write order
        self.unacked: collections.deque[tuple[int, int]] = collections.deque()
        # to write: (bytes, counted as a payload), in order; ``offset`` bytes of
        # the first are written; ``retry``: TLS wants the same bytes again
        self.out: collections.deque[tuple[bytes, bool]] = collections.deque()
        self.offset = 0
        self.retry: bytes | None = None
        self.reading = False  # polled for POLLIN (not while the downlink window is full)
        self.writing = False  # polled for POLLOUT (a write would block)
        self.failed: str | None = None  # why it ended; the loop closes it on its next pass
        self.poll_every = ACK_POLL_MIN_S
        self.ack_at = float("inf")  # when the scheduled ACK look is due
        self.ack_token = 0  # only the latest scheduled ACK look runs
        self.wrote = False  # written since the last ACK look
        self.hb_token = 0  # only the latest scheduled heartbeat runs
        self.retry_armed = False  # a TLS write waits for a read: its retry timer is set

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


class Connector(threading.Thread):
    """The steps of a connect that block by nature, off the service loop.

    Name resolution (``NameResolver``, with its time limit), a connect bounded
    by ``TCP_SERVER.timeout`` and the TLS handshake run here, one attempt per
    ``request()``; the outcome (a connected, non-blocking socket, or the reason
    it failed) waits in ``take()`` and a wake-up goes to the loop through the
    ``ThreadInbox``. The thread never touches a socket once it is handed over:
    from then on the loop serves it.
    """

    def __init__(self, target: Target, inbox: ThreadInbox) -> None:
        super().__init__(name="hes-connect", daemon=True)
        self.t = target
        self._inbox = inbox
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._requested = False  # under _lock
        self._result: socket.socket | str | None = None  # under _lock
        self._resolver = NameResolver()

    # -- called from the service loop --------------------------------------------

    def request(self, target: Target) -> None:
        """Start one connect attempt to ``target``; its outcome comes in ``take()``."""
        with self._lock:
            self.t = target
            self._requested = True
        self._kick()

    def take(self) -> socket.socket | str | None:
        """The outcome of the last attempt: a socket, the reason it failed, or None (not yet)."""
        with self._lock:
            result, self._result = self._result, None
        return result

    def stop(self) -> None:
        self._stopping.set()
        self._kick()

    def _kick(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # full pipe (the thread is already due to wake), or closed

    def close_loop_side(self) -> None:
        """The loop's end of the wake-up pair (the thread closes its own)."""
        self._wake_w.close()

    # -- the thread ------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                select.select([self._wake_r], [], [], IDLE_SELECT_S)
                self._drain_wake()
                with self._lock:
                    requested, self._requested = self._requested, False
                if not requested or self._stopping.is_set():
                    continue
                try:
                    outcome: socket.socket | str | None = self._connect()
                except LinkClosed as exc:
                    outcome = str(exc)
                except Exception:  # a bug must not end the link for good
                    log.exception("connect error host=%s port=%d", self.t.host, self.t.port)
                    outcome = "internal error"
                if outcome is None:
                    break  # stopping
                with self._lock:
                    self._result = outcome
                # A refused wake-up only delays: the loop also looks every SYNC_INTERVAL.
                self._inbox.post([_WAKE])
        finally:
            with self._lock:
                left, self._result = self._result, None
            if isinstance(left, socket.socket):
                left.close()
            self._inbox.close_thread_side()
            self._wake_r.close()

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
        except (_ssl.SSLError, ValueError) as exc:
            raise LinkClosed(f"tls: {exc}") from None
        while True:
            try:
                tls.do_handshake()
                return tls
            except _ssl.SSLWantReadError:
                ok = self._await(tls, write=False, deadline=deadline)
            except _ssl.SSLWantWriteError:
                ok = self._await(tls, write=True, deadline=deadline)
            except _ssl.SSLCertVerificationError as exc:
                tls.close()
                raise LinkClosed(f"tls: certificate verify failed: {exc.verify_message}") from None
            except (_ssl.SSLError, OSError) as exc:
                tls.close()
                raise LinkClosed(f"tls: {exc}") from None
            if not ok:
                if self._stopping.is_set():
                    tls.close()
                    return None
                tls.close()
                raise LinkClosed(f"tls: handshake timed out after {self.t.timeout}s")


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
        self.link_inbox = self.thread_inbox("hes-connect", self._on_thread, hwm=CONNECT_HWM)
        self.connector = Connector(target, self.link_inbox)
        self.add_thread(self.connector)
        self.stats = LinkStats()
        self.last_error = ""
        self._link: Link | None = None  # the connection, while it is up
        self._connecting = False  # a connect attempt is under way
        self._attempt = 0  # connect attempts since the last stable link
        self._down_since = time.monotonic()
        self._gen = 0
        self._up = False
        self._since = time.time()
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
        # Spool ids counted as possibly repeated so far: from below the
        # oldest entry found at start, for payloads the last client put back
        # at the spool's front (ids 0 and below: sent on a link that died)
        # count too; those this client puts back are uplink.unacked_resent.
        self._counted_to = min(0, self._oldest_spooled() - 1)
        # Held in memory while the link is up, at most this much: never so
        # much that the uart, which holds every unit until it is acknowledged,
        # reaches its own bound first and stops reading the meter.
        self._direct_max = min(DIRECT_MAX_BYTES, int(config["UART"]["journal"]["max_bytes"]) // 2)
        self._accepted = 0  # payloads taken in, ever (the next index)
        self._acks_due: set[tuple[str, int]] = set()
        self._acks_scheduled = False
        # (src, inst, n, payload index it ends at, read time)
        self._units: collections.deque[tuple[str, int, int, int, float | None]] = (
            collections.deque()
        )
        # Downlink delivery: HES data held until the uart has written it. Its
        # held bytes are the downlink window: the loop stops reading at
        # DOWNLINK_WINDOW_BYTES, so TCP pushes back on the HES.
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
        self.connector.start()
        self._request_connect()

    def _close(self) -> None:
        self.connector.stop()
        link = self._link
        if link is not None:
            # Give what is in flight a moment to be acknowledged, so that fewer
            # payloads go back to the spool and out again after the restart;
            # count what was. Direct payloads that were not go to the spool
            # with what was gathered, to be sent again after a restart.
            self._settle(link)
            self._close_link(link)
            self.last_error = "stopping"
        if self.connector.is_alive():
            self.connector.join(STOP_JOIN_S)
        self.connector.close_loop_side()
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
        nbytes = sum(map(len, payloads))
        link = self._link
        if (
            link is not None
            and link.failed is None
            and link.unacked
            and self._inflight_bytes + nbytes > self._direct_max
        ):
            # The loop drains up to a thousand messages before its timers run:
            # look at the ACKs now rather than spool what the HES already has.
            self._guard(link, self._poll_acks)
        first = self._accepted
        self._accepted += len(payloads)
        # Direct (no spool) only while little is unacknowledged: a direct
        # payload exists in this process's memory alone until acknowledged
        # (the uart holds its unit until then, so a crash only delays it).
        direct = (
            self._up
            and not self._gathered
            and self.spool.count == 0
            and self._inflight_bytes + nbytes <= self._direct_max
        )
        if direct and ref is not None:
            # Before the HES can have it: a restarted client then knows
            # this unit may be at the HES already (common.marks).
            self._sent_marks[ref.stream] = ref.n
            self._write_marks()
        if direct and self._submit(payloads):
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
        if not self._gathered and not (force and self._direct_n):
            return
        direct = (
            [i for i, (id_, _, _) in enumerate(self._inflight) if id_ is None]
            if self._direct_n
            else []
        )
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
        # Those were handed to the connection already: should they come again
        # from the spool after a kill, they count as possibly repeated. (Their
        # units are acknowledged now, so the uart will not send them again.)
        handed = [id_ for id_ in ids[: len(direct)] if id_ is not None]
        if handed and max(handed) > self._spool_sent:
            self._spool_sent = max(handed)
            self._write_marks()
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

    def _oldest_spooled(self) -> int:
        try:
            head = self.spool.peek(1)
        except SpoolError:
            return 1
        return head[0][0] if head else 1

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
            if not self._submit([d for _, d in batch]):
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

    def _on_thread(self, _parts: list[bytes]) -> None:
        self._check_connector()

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
        """Counters up to date; a connect attempt's outcome taken (in case its wake-up was lost)."""
        self._mirror_stats()
        self._check_connector()

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
        reason = self.last_error or "unknown"
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

    # -- the connection, served by the loop ---------------------------------------------

    def _request_connect(self) -> None:
        """Start a connect attempt in the connect thread (its outcome wakes the loop)."""
        if self.stopping or self._link is not None or self._connecting:
            return
        self._connecting = True
        self.connector.request(self.target)

    def _check_connector(self) -> None:
        if not self._connecting:
            return
        outcome = self.connector.take()
        if outcome is None:
            return
        self._connecting = False
        if isinstance(outcome, str):
            self.stats.connect_failed += 1
            self._connect_failed(outcome)
            return
        self._open_link(outcome)

    def _connect_failed(self, reason: str) -> None:
        delay = self.target.backoff(self._attempt, time.monotonic() - self._down_since)
        self._note_failure(reason, self._attempt, delay)
        self._attempt += 1
        self.call_later(delay, self._request_connect)

    def _note_failure(self, reason: str, attempt: int, delay: float) -> None:
        same = self.last_error == reason
        self.last_error = reason
        # A vanished HES fails every few seconds for hours: log changes, then
        # only every 100th repeat.
        level = logging.DEBUG if same and (attempt + 1) % 100 else logging.WARNING
        log.log(
            level,
            "connect failed host=%s port=%d reason=%s attempt=%d retry_in=%.2fs",
            self.target.host,
            self.target.port,
            reason,
            attempt + 1,
            delay,
        )

    def _open_link(self, sock: socket.socket) -> None:
        """A connected socket from the connect thread: from now on the loop serves it."""
        try:
            meter = AckMeter(sock)
            fd = sock.fileno()
        except OSError as exc:
            sock.close()
            self.stats.connect_failed += 1
            self._connect_failed(f"tcp info: {exc.strerror or exc}")
            return
        framing = self.target.framing
        link = Link(
            sock=sock,
            fd=fd,
            meter=meter,
            framing=framing,
            decoder=framing.decoder(),
            started=time.monotonic(),
            tls=is_tls(sock),
        )
        self._link = link
        self.stats.connects += 1
        self.last_error = ""
        if self.target.registration:
            link.out.append((framing.encode(self.target.registration), False))
            self.stats.registrations += 1
        self._set_reading(link, self.dl.held_bytes < DOWNLINK_WINDOW_BYTES)
        self._schedule_heartbeat(link)
        self._mirror_stats()
        self._link_up(self._gen + 1)
        self._flush_out(link)
        self._pump()

    def _fail(self, link: Link, reason: str) -> None:
        """The connection failed: it is closed on the loop's next pass, never in
        the middle of a caller that is handing it payloads."""
        if link.failed is not None:
            return
        link.failed = reason
        self.call_later(0.0, lambda: self._end_link(link))

    def _end_link(self, link: Link) -> None:
        if self._link is not link:
            return
        reason = link.failed or "internal error"
        stable = time.monotonic() - link.started >= STABLE_LINK_S
        if stable:
            self._attempt = 0
            delay = self.target.backoff(0)
        else:
            delay = self.target.backoff(self._attempt)
            self._attempt += 1
        # Scheduled first: whatever fails below, the gateway connects again.
        self.call_later(delay, self._request_connect)
        try:
            self._close_link(link)
        finally:
            self._link = None
        self.last_error = reason
        self._mirror_stats()
        self._link_down()
        self._down_since = time.monotonic()

    def _close_link(self, link: Link) -> None:
        """Close the socket, after one more look at the ACKs."""
        # ACKs that came before the end still count (the kernel keeps
        # snd_una after a reset), so fewer payloads are sent twice.
        try:
            self._poll_acks(link)
        except LinkClosed:
            pass
        self.stats.unacked_resent += link.payloads + self._retry_payloads(link)
        link.unacked.clear()
        link.out.clear()
        link.failed = link.failed or "closed"
        self.remove_socket(link.fd)  # the writer watch too
        link.reading = link.writing = False
        link.sock.close()
        self._link = None

    def _settle(self, link: Link) -> None:
        """On stop: wait up to STOP_ACK_WAIT_S for what was written to be acknowledged."""
        deadline = time.monotonic() + STOP_ACK_WAIT_S
        while link.unacked and time.monotonic() < deadline:
            try:
                if not self._poll_acks(link):
                    time.sleep(ACK_POLL_MIN_S)
            except LinkClosed:
                return

    def _guard(self, link: Link, fn: Any) -> None:
        """Run a step of the connection; a failure ends the connection, never the loop."""
        try:
            fn(link)
        except LinkClosed as exc:
            self._fail(link, str(exc))
        except Exception:  # a bug must not end the link for good
            self.stats.errors += 1
            log.exception("connection error host=%s port=%d", self.target.host, self.target.port)
            self._fail(link, "internal error")

    def _set_reading(self, link: Link, on: bool) -> None:
        if on == link.reading:
            return
        link.reading = on
        if on:
            self.add_socket(link.fd, self._on_readable)
        else:
            self.stop_reading(link.fd)

    def _set_writing(self, link: Link, on: bool) -> None:
        if on == link.writing:
            return
        link.writing = on
        self.watch_writable(link.fd, self._on_writable if on else None)

    # reads

    def _on_readable(self) -> None:
        link = self._link
        if link is not None and link.failed is None and link.reading:
            self._guard(link, self._read)

    def _read(self, link: Link) -> None:
        """One read (and what TLS holds decrypted), while the downlink window is open."""
        sock = link.sock
        while self.dl.held_bytes < DOWNLINK_WINDOW_BYTES:
            try:
                data = sock.recv(RECV_SIZE)
            except (_ssl.SSLWantReadError, _ssl.SSLWantWriteError, BlockingIOError):
                break
            except InterruptedError:
                continue
            except (_ssl.SSLError, OSError) as exc:
                raise LinkClosed(f"recv: {getattr(exc, 'strerror', None) or exc}") from None
            if not data:
                raise LinkClosed("closed by the HES")
            self.stats.tcp_bytes_down += len(data)
            chunks = link.decoder.feed(data)
            for chunk in chunks:  # with the wrapper, one APDU each
                self._downlink(chunk)
            if link.decoder.error is not None:
                self._bad_framing(link.decoder.error)
            if not (link.tls and sock.pending()):
                break
        if self.dl.held_bytes >= DOWNLINK_WINDOW_BYTES:
            # The meter is that far behind: read no more until the uart has
            # written some (TCP pushes back on the HES).
            self._set_reading(link, False)

    def _downlink_done(self) -> None:
        """Downlink data the window held were written to the meter."""
        link = self._link
        if link is None or link.failed is not None or link.reading:
            return
        if self.dl.held_bytes < DOWNLINK_WINDOW_BYTES:
            self._set_reading(link, True)
            if link.tls and link.sock.pending():
                # Decrypted already: the poller will not report it.
                self.call_later(0.0, self._on_readable)

    def _bad_framing(self, error: FramingError) -> None:
        """A bad wrapper header: the stream cannot be followed, drop the connection."""
        self.stats.framing_errors += 1
        log.warning(
            "hes protocol error reason=bad_header framing=%s error=%s host=%s port=%d",
            self.target.framing,
            error,
            self.target.host,
            self.target.port,
        )
        raise LinkClosed(f"protocol error: {error}")

    # writes

    def _submit(self, payloads: list[bytes]) -> bool:
        """Hand payloads to the connection, written at once as far as the socket
        takes them; False if there is no connection (or it just failed)."""
        link = self._link
        if link is None or link.failed is not None:
            return False
        encode = link.framing.encode
        link.out.extend((encode(p), True) for p in payloads)
        self._flush_out(link)
        return True

    def _on_writable(self) -> None:
        link = self._link
        if link is not None and link.failed is None:
            self._flush_out(link)

    def _retry_write(self, link: Link) -> None:
        link.retry_armed = False
        if self._link is link and link.failed is None:
            self._flush_out(link)

    def _flush_out(self, link: Link) -> None:
        self._guard(link, self._write)

    def _write(self, link: Link) -> None:
        """Write what waits until the socket would block; then wait for POLLOUT."""
        sock, out = link.sock, link.out
        wrote = False
        try:
            while out:
                if link.retry is not None:
                    chunk = link.retry
                else:
                    parts = [out[0][0][link.offset :]]
                    size = len(parts[0])
                    for data, _ in itertools.islice(out, 1, None):
                        if size >= WRITE_CHUNK:
                            break
                        parts.append(data)
                        size += len(data)
                    chunk = parts[0] if len(parts) == 1 else b"".join(parts)
                try:
                    n = sock.send(chunk)
                except _ssl.SSLWantWriteError:
                    link.retry = chunk
                    self._set_writing(link, True)
                    return
                except _ssl.SSLWantReadError:
                    # TLS must read before it can write: look again shortly.
                    link.retry = chunk
                    self._set_writing(link, False)
                    if not link.retry_armed:  # one timer, however many writes come
                        link.retry_armed = True
                        self.call_later(ACK_POLL_MIN_S, lambda: self._retry_write(link))
                    return
                except BlockingIOError:
                    self._set_writing(link, True)
                    return
                except InterruptedError:
                    continue
                except (_ssl.SSLError, OSError) as exc:
                    raise LinkClosed(f"send: {getattr(exc, 'strerror', None) or exc}") from None
                link.retry = None
                wrote = True
                self._wrote(link, n)
                if n < len(chunk):
                    self._set_writing(link, True)  # the send buffer is full
                    return
            self._set_writing(link, False)
        finally:
            if wrote:
                # ACKs wake nothing up: look on the loop's next pass, then
                # less and less often while nothing moves.
                link.wrote = True
                self._schedule_acks(link, 0.0)

    @staticmethod
    def _retry_payloads(link: Link) -> int:
        """The payloads of a TLS write left to retry: TLS may have handed some of
        its records to the kernel before it wanted to write again, so any of them
        may be at the HES already and is counted as possibly sent twice."""
        if link.retry is None:
            return 0
        left, offset, n = len(link.retry), link.offset, 0
        for data, counted in link.out:
            if left <= 0:
                break
            n += counted
            left -= len(data) - offset
            offset = 0
        return n

    def _wrote(self, link: Link, n: int) -> None:
        """``n`` bytes of ``link.out`` were written: mark where its whole payloads end."""
        self.stats.tcp_bytes_up += n
        link.meter.wrote(n)
        out = link.out
        done = 0
        offset = link.offset
        while n and out:
            left = len(out[0][0]) - offset
            if n < left:
                offset += n
                break
            n -= left
            _, counted = out.popleft()
            offset = 0
            done += counted
        link.offset = offset
        if done:
            # Written whole: delivered once the peer acknowledges up to here.
            try:
                mark = link.meter.mark()
            except OSError as exc:
                raise LinkClosed(f"ioctl: {exc.strerror or exc}") from None
            link.unacked.append((mark, done))

    # acknowledgements

    def _schedule_acks(self, link: Link, delay: float) -> None:
        due = time.monotonic() + delay
        if link.ack_at <= due:
            return  # a look is due sooner already
        link.ack_at = due
        link.ack_token += 1
        token = link.ack_token
        self.call_later(delay, lambda: self._ack_timer(link, token))

    def _ack_timer(self, link: Link, token: int) -> None:
        if token != link.ack_token or self._link is not link or link.failed is not None:
            return
        link.ack_at = float("inf")
        if not link.unacked:
            link.poll_every = ACK_POLL_MIN_S
            return
        try:
            moved = self._poll_acks(link)
        except LinkClosed as exc:
            self._fail(link, str(exc))
            return
        if moved or link.wrote:
            link.poll_every = ACK_POLL_MIN_S
        else:  # a stalled HES costs ~10 ioctls/s
            link.poll_every = min(2 * link.poll_every, ACK_POLL_MAX_S)
        link.wrote = False
        if link.unacked:
            self._schedule_acks(link, link.poll_every)
        if moved:
            self._pump()  # room in flight: more from the spool

    def _poll_acks(self, link: Link) -> bool:
        """Confirm the payloads the peer acknowledged; True if there were any."""
        if not link.unacked:
            return False
        try:
            pos = link.meter.acked()
        except OSError as exc:
            raise LinkClosed(f"ioctl: {exc.strerror or exc}") from None
        n = 0
        while link.unacked and link.unacked[0][0] <= pos:
            n += link.unacked.popleft()[1]
        if not n:
            return False
        self._confirm(n)
        return True

    # heartbeat

    def _schedule_heartbeat(self, link: Link) -> None:
        """The heartbeat packet every interval_s on ``link``; again on a reload
        (SIGHUP), which may change its packet and interval."""
        link.hb_token += 1
        t = self.target
        if not t.heartbeat or t.heartbeat_interval <= 0:
            return
        token = link.hb_token
        self.call_later(t.heartbeat_interval, lambda: self._heartbeat_due(link, token))

    def _heartbeat_due(self, link: Link, token: int) -> None:
        if token != link.hb_token or self._link is not link or link.failed is not None:
            return
        if self.target.heartbeat:
            link.out.append((link.framing.encode(self.target.heartbeat), False))
            self.stats.heartbeats += 1
            self._flush_out(link)
        self._schedule_heartbeat(link)

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
            self._downlink_done()

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
        s = self.stats
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
            "last_error": self.last_error,
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
        target = target._replace(
            host=self.target.host, port=self.target.port, framing=self.target.framing
        )
        self.target = target
        if self._link is not None:
            self._schedule_heartbeat(self._link)
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

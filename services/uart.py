"""The ``uart`` service: owns the meter's serial port.

Theory of operation. Three threads, one job each:

- The **port thread** opens ``UART.port`` with ``serial.serial_for_url`` (a
  device path, or a pyserial URL such as ``socket://``, ``rfc2217://`` or
  ``loop://``), reads it with a short timeout and feeds the bytes to an
  ``rfc1662.Deframer``. When the line has been quiet for ``UART.idle_gap_ms``
  with a partial frame buffered, the partial is stale and ``flush()`` resolves
  it. Every read that completes frames posts them, as one batch, to the loop
  through a ``ThreadInbox`` (never blocks; a full inbox drops and counts). A
  read that fails (USB unplugged, pty closed) closes the port and reopens it
  with exponential backoff between ``UART.reopen_min_s`` and
  ``UART.reopen_max_s``; a path that does not exist yet is retried the same
  way. It also posts each open and loss to the loop.
- The **service loop** sends each batch to the resolver pool as one
  ``frames`` message (so the broker keeps their order), publishes
  ``serial.open`` / ``serial.lost`` on each change and the state topic
  ``serial.status`` on each change and every ``STATUS_INTERVAL_S``, and takes
  ``write`` messages (a list of raw frames for the meter) into a bounded queue.
- The **writer thread** writes queued frames to the port in arrival order, so
  a slow line never stalls the loop. A frame leaves the queue only once it is
  written whole, or when it is dropped by one of the two bounds: frames that
  arrive when the queue holds ``WRITE_QUEUE_MAX`` (``write_dropped``), and
  frames that waited longer than ``WRITE_HOLD_MAX_S`` (``write_stale``), each
  counted and logged. Everything else waits: while the port is closed; while
  the line accepts nothing (flow control holding off) for the write timeout,
  which is counted (``write_timeouts``), logged, and retried from the first
  unwritten byte after ``WRITE_RETRY_S``; and after a write fails with an I/O
  error (``write_errors``), which marks the port faulty for the port thread to
  reopen, and the frame is written again from its start on the new line.

Threads never touch a bus socket, and keep their counts in their own fields;
the loop copies them into ``self.counters`` for heartbeats and status.

Events: ``serial.open`` ``{port, rs485}``; ``serial.lost`` ``{port, reason,
open_s}``; ``serial.status`` ``{open, port, since, rs485 (off/on/unsupported),
reopens, attempts (failed opens since the last success), error, write_queue}``.

Counters: ``frames_in`` (sent to the pool), ``bytes_in``, the deframer's
``garbage_bytes``, ``bad_fcs``, ``bad_flag``, ``oversize``, ``bad_length``,
``truncated`` (...); ``frames_out``/``bytes_out`` (written whole),
``write_errors`` (I/O errors), ``write_timeouts`` (stalls; neither loses a
frame), ``write_dropped`` (queue full), ``write_stale``, ``write_bad`` (an item
of a ``write`` that is not bytes, or empty), ``rx_held`` (loop behind: journaled, sent again later),
``open_failures``, ``reopens``.

Shutdown: ``on_close`` sets a flag; the port thread sees it within
``READ_TIMEOUT_MAX_S``, closes the port and ends; both threads are joined
with a timeout, so SIGTERM ends the process well within a second.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import msgpack
import serial
import serial.rs485

try:
    from serial.serialposix import Serial as _PosixSerial
except ImportError:  # not a posix system: every port goes through write()
    _PosixSerial = None

from common import bus, delivery, rfc1662
from common.journal import Journal, JournalError
from common.service import Service, main_for

log = logging.getLogger("meterlink.uart")

#: Longest a read blocks: bounds how late the port thread sees a stop or a
#: write fault. Shorter when the idle gap is shorter, so the gap is honoured.
READ_TIMEOUT_MAX_S = 0.1
#: Shortest read timeout, so an idle gap of 0 does not spin.
READ_TIMEOUT_MIN_S = 0.002
#: Longest the port thread waits in select while no partial frame is pending
#: (ports with a file descriptor; a stop or write fault wakes it earlier).
IDLE_WAIT_S = 1.0
#: The gateway's own frames for the meter (0x2200 replies...) held while the
#: port is closed or the line is slow: their own lane, never behind HES data.
WRITE_QUEUE_MAX = 1000
#: ... and bytes.
WRITE_QUEUE_MAX_BYTES = 1024 * 1024
#: HES data held for the meter, bytes. The client holds at most its downlink
#: window unacknowledged, so this bound is only reached by a misbehaving sender;
#: what it refuses is not acknowledged and comes again.
HES_QUEUE_MAX_BYTES = 4 * 1024 * 1024
#: A gateway frame for the meter older than this when its turn comes is
#: dropped (an answer that late answers nothing). HES data is never dropped.
WRITE_HOLD_MAX_S = 60.0
#: While the device path does not exist, look for it this often (a replugged
#: USB adapter is in use again well within 2 s, whatever the back-off).
PORT_WATCH_S = 0.25
#: While the held uplink is at its bound the port thread looks again this often.
HOLD_WAIT_S = 0.05
#: How often the loop checks the resend timer and the journal's fsync policy.
DELIVERY_TICK_S = 0.25
JOURNAL_FILE = "uart-journal.bin"  # in the run directory
#: Write timeout: this much, plus WRITE_TIMEOUT_FACTOR times the line time of
#: a maximal frame, with no byte accepted before a write counts as stalled
#: (flow control held off).
WRITE_TIMEOUT_MIN_S = 1.0
WRITE_TIMEOUT_FACTOR = 4
#: After a stalled or cancelled write the writer lets go of the port this long
#: (so the port thread can close it) before it tries again.
WRITE_RETRY_S = 0.05
#: The first stall of an episode is logged, then every Nth retry of it.
STALL_LOG_EVERY = 10
#: Bits on the line per byte, upper bound (start, 8 data, parity, 2 stop).
LINE_BITS_PER_BYTE = 12
#: How long the writer sleeps waiting for work before it checks the stop flag.
WRITER_IDLE_S = 0.25
#: serial.status is published on each change and this often.
STATUS_INTERVAL_S = 2.0
#: The first periodic status comes sooner: the PUB socket may still have been
#: joining when the first change was published.
STATUS_FIRST_S = 0.5
#: How long on_close waits for each thread.
JOIN_TIMEOUT_S = 0.4
#: Consecutive open failures are logged for the first few, then every Nth.
OPEN_FAIL_LOG_FIRST = 3
OPEN_FAIL_LOG_EVERY = 20

_KIND_FRAMES = b"frames"
_KIND_OPEN = b"open"
_KIND_LOST = b"lost"
_KIND_WRITTEN = b"written"
_LANE_GW = 0  # the gateway's own frames
_LANE_HES = 1  # HES data, acknowledged to the client once written

_PARITY: dict[Any, str] = {
    # The reference solution's numbers ...
    0: serial.PARITY_NONE,
    1: serial.PARITY_EVEN,
    2: serial.PARITY_ODD,
    3: serial.PARITY_MARK,
    4: serial.PARITY_SPACE,
    # ... and pyserial's letters.
    "N": serial.PARITY_NONE,
    "E": serial.PARITY_EVEN,
    "O": serial.PARITY_ODD,
    "M": serial.PARITY_MARK,
    "S": serial.PARITY_SPACE,
}
_BYTESIZE = {5: serial.FIVEBITS, 6: serial.SIXBITS, 7: serial.SEVENBITS, 8: serial.EIGHTBITS}
_STOPBITS = {
    1: serial.STOPBITS_ONE,
    1.5: serial.STOPBITS_ONE_POINT_FIVE,
    2: serial.STOPBITS_TWO,
}
_FLOWCTL = {0: False, 1: True}  # 1: RTS/CTS


def _lookup(table: Mapping[Any, Any], key: str, value: Any) -> Any:
    # bool is an int in Python, so True would pass as 1; it is never meant.
    if isinstance(value, bool) or value not in table:
        allowed = ", ".join(repr(k) for k in table)
        raise ValueError(f"UART.{key}: {value!r} is not one of {allowed}")
    return table[value]


def serial_settings(uart: Mapping[str, Any]) -> dict[str, Any]:
    """pyserial keyword arguments for the ``UART`` config section.

    Keys keep the reference solution's meaning: ``bytesize`` 5-8, ``parity``
    0/1/2 (none/even/odd; 3/4 mark/space) or the letters N/E/O/M/S,
    ``stopbits`` 1, 1.5 or 2, ``flowctl`` 0 (none) or 1 (RTS/CTS).
    Raises ``ValueError`` naming the key for anything else.
    """
    baudrate = uart.get("baudrate", 115200)
    if isinstance(baudrate, bool) or not isinstance(baudrate, int) or baudrate <= 0:
        raise ValueError(f"UART.baudrate: {baudrate!r} is not a positive integer")
    return {
        "baudrate": baudrate,
        "bytesize": _lookup(_BYTESIZE, "bytesize", uart.get("bytesize", 8)),
        "parity": _lookup(_PARITY, "parity", uart.get("parity", 0)),
        "stopbits": _lookup(_STOPBITS, "stopbits", uart.get("stopbits", 1)),
        "rtscts": _lookup(_FLOWCTL, "flowctl", uart.get("flowctl", 0)),
        "xonxoff": False,  # binary frames: XON/XOFF bytes are data
        "dsrdtr": False,
    }


def is_url(port: str) -> bool:
    """A pyserial URL (``socket://...``) rather than a device path."""
    return "://" in port


def open_port(url: str, settings: Mapping[str, Any], rs485: bool) -> tuple[serial.SerialBase, str]:
    """Open ``url``; return the port and its RS-485 state: off, on or unsupported.

    With ``rs485`` the kernel's RS-485 mode is asked for (pyserial
    ``rs485_mode``). A port that does not support it (most USB adapters switch
    direction by themselves, a pty has no such thing) is opened without it and
    a warning says so, rather than never opening at all.
    Raises whatever pyserial raises if it cannot be opened (``SerialException``,
    ``OSError``, ``ValueError``, and ``termios.error``, which is none of these).
    """
    kwargs = dict(settings)
    if not is_url(url):
        kwargs["exclusive"] = True  # two processes on one meter garble both
    port = _make_port(url, kwargs)
    if not rs485:
        port.open()
        return port, "off"
    port.rs485_mode = serial.rs485.RS485Settings()
    try:
        port.open()
        return port, "on"
    except ValueError as exc:  # pyserial: "Failed to set RS485 mode: ..."
        log.warning("rs485 not supported port=%s error=%r action=open_without_rs485", url, str(exc))
    port = _make_port(url, kwargs)
    port.open()
    return port, "unsupported"


if _PosixSerial is not None:

    class KeepInputSerial(_PosixSerial):  # type: ignore[misc,valid-type]
        """A posix port whose ``open()`` keeps what the kernel holds for it.

        pyserial's ``open()`` flushes the input queue (``TCIFLUSH``): bytes
        the meter sent while the uart was restarting, or while the port was
        being reopened, would be thrown away. Only that flush is skipped;
        ``reset_input_buffer()`` called later still flushes.
        """

        _opening = False

        def open(self) -> None:
            self._opening = True
            try:
                super().open()
            finally:
                self._opening = False

        def _reset_input_buffer(self) -> None:
            if not self._opening:
                super()._reset_input_buffer()


def _make_port(url: str, kwargs: dict[str, Any]) -> serial.SerialBase:
    """A closed port for ``url``: a device path opens without flushing its input."""
    if _PosixSerial is not None and not is_url(url):
        port = KeepInputSerial(None, **kwargs)
        port.port = url
        return port
    return serial.serial_for_url(url, do_not_open=True, **kwargs)


class Uart(Service):
    """The ``uart`` process; see the module docstring."""

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        cfg = config["UART"]
        jcfg = cfg["journal"]
        # The journal before any socket: a uart that cannot keep frames safe
        # does not start (and says why).
        journal = Journal(
            os.path.join(config["_run_dir"], JOURNAL_FILE),
            fsync=jcfg["fsync"],
            fsync_interval_s=float(jcfg["fsync_interval_s"]),
        )
        replay = journal.open()
        super().__init__(bus.UART, config, **kwargs)
        self.journal = journal
        self.port_name: str = cfg["port"]
        self.rs485: bool = cfg["rs485"]
        self.idle_gap = cfg["idle_gap_ms"] / 1000.0
        self.reopen_min = max(cfg["reopen_min_s"], 0.01)
        self.reopen_max = max(cfg["reopen_max_s"], self.reopen_min)
        self.deframer = rfc1662.Deframer(
            profile=cfg["profile"], max_info=cfg["max_info"], accm=cfg["accm"]
        )
        self.settings = serial_settings(cfg)
        read_timeout = min(max(self.idle_gap, READ_TIMEOUT_MIN_S), READ_TIMEOUT_MAX_S)
        max_frame = rfc1662.MIN_FRAME + cfg["max_info"]
        if cfg["profile"] == "rfc1662":
            max_frame *= 2  # every byte may be escaped
        line_time = max_frame * LINE_BITS_PER_BYTE / self.settings["baudrate"]
        self.settings["timeout"] = read_timeout
        self.write_timeout = WRITE_TIMEOUT_MIN_S + WRITE_TIMEOUT_FACTOR * line_time
        self.settings["write_timeout"] = self.write_timeout

        # Acknowledged delivery. Uplink: every batch of frames is a unit,
        # journaled by the port thread before it is posted to the loop, held
        # until the client acknowledges it. _jlock guards the journal and
        # self.up (the port thread appends, the loop acknowledges and resends).
        self._jlock = threading.Lock()
        now = time.monotonic()
        # The stream is the journal's epoch: it outlives this process, and the
        # numbering goes on where the last uart stopped (common.journal).
        self.up: delivery.Sender[list[bytes]] = delivery.Sender(
            bus.UART, replay.epoch, int(jcfg["max_bytes"])
        )
        self.up.next_n = replay.next_n
        for inst, n, frames in replay.units:
            self.up.adopt(inst, n, frames, sum(map(len, frames)), now)
        # Downlink: HES data from the client, written once, in order.
        self.down = delivery.Receiver()
        for (src, inst), n in replay.marks.items():
            self.down.load(src, inst, n)
        self._replay = replay
        # The frame half read when the last uart died: its rest is still in
        # the kernel's buffer (reopening never flushes it).
        self._seed_frames = self.deframer.feed(replay.partial)
        self._journaled_partial = self.deframer.partial
        # Downlink marks journaled by the writer thread (under _jlock), ahead
        # of self.down until the loop hears of them.
        self._journaled_marks: dict[tuple[str, int], int] = dict(replay.marks)
        self._client_seen = True  # a client in the last registry (resend timer)
        self._waiting_room = False  # the port thread waits for room (wake it on acks)

        # Shared with the threads. _port is set and cleared only by the port
        # thread, under _port_lock, which the writer holds while it writes:
        # so the port is never closed under a write.
        self._halt = threading.Event()
        # Wakes the port thread's select on a stop or a write fault, so that it
        # can wait long while the line is quiet (an idle uart costs no CPU).
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._port: serial.SerialBase | None = None
        self._port_lock = threading.Lock()
        # Two lanes for the meter: the gateway's own frames first, then HES
        # data; items are (queued_at, frame, done) where done is the
        # (src, inst, n) of an HES unit whose last frame this is.
        self._wq: tuple[collections.deque[Any], collections.deque[Any]] = (
            collections.deque(),
            collections.deque(),
        )
        self._wq_bytes = [0, 0]
        self._wcond = threading.Condition()
        self._write_fault: str | None = None
        self.rs485_state = "off"
        self.last_error = ""
        self.open_since = time.time()  # since when open, or closed (display only)
        self.fail_attempts = 0

        # Port-thread counts (written only there).
        self._rx = {
            "bytes_in": 0,
            "rx_held": 0,
            "open_failures": 0,
            "reopens": 0,
            "held_waits": 0,
        }
        # Writer counts (written only there).
        self._tx = {
            "frames_out": 0,
            "bytes_out": 0,
            "write_errors": 0,
            "write_timeouts": 0,
            "write_stale": 0,
        }

        self._box = self.thread_inbox("serial", self._on_port_message)
        self._port_thread = threading.Thread(target=self._run_port, name="uart-port", daemon=True)
        self._writer = threading.Thread(target=self._run_writer, name="uart-writer", daemon=True)
        self.add_thread(self._port_thread)
        self.add_thread(self._writer)
        self.on(bus.OP_WRITE)(self._on_write)
        self.on(bus.OP_ACK)(self._on_ack)
        self.on(bus.OP_NACK)(self._on_nack)
        self.on_event(bus.T_REGISTRY)(self._on_registry)
        self.every(STATUS_INTERVAL_S, self.publish_status, first=STATUS_FIRST_S)
        self.every(DELIVERY_TICK_S, self._delivery_tick)
        self.on_close(self._shutdown)

    # -- the loop side -------------------------------------------------------------

    def setup(self) -> None:
        log.info(
            "uart starting port=%s baudrate=%d bytesize=%d parity=%s stopbits=%s rtscts=%s "
            "rs485=%s idle_gap_ms=%g",
            self.port_name,
            self.settings["baudrate"],
            self.settings["bytesize"],
            self.settings["parity"],
            self.settings["stopbits"],
            self.settings["rtscts"],
            self.rs485,
            self.idle_gap * 1000,
        )
        replay = self._replay
        if replay.torn_bytes:
            log.warning("journal torn record cut off bytes=%d", replay.torn_bytes)
        if self.up.held:
            log.info(
                "journal replay units=%d frames=%d bytes=%d",
                len(self.up.held),
                sum(len(u.item) for u in self.up.held),
                self.up.held_bytes,
            )
            self._resend(self.up.resend_all(time.monotonic()), "journal")
        if self._seed_frames:  # a partial that was whole after all
            self._post_frames(self._seed_frames)
        self.publish_status()
        self._port_thread.start()
        self._writer.start()

    @property
    def is_open(self) -> bool:
        return self._port is not None

    def _on_port_message(self, parts: list[bytes]) -> None:
        kind = parts[0]
        if kind == _KIND_FRAMES:
            n = int(parts[2])
            born = float(parts[3])
            frames = msgpack.unpackb(parts[1])
            self.counters["frames_in"] += len(frames)
            with self._jlock:
                ref = [bus.UART, self.up.inst, n, self.up.base(self.up.inst), born]
            self.send(bus.RESOLVER, bus.OP_FRAMES, frames, ref)
            return
        if kind == _KIND_WRITTEN:
            for src, inst, n in msgpack.unpackb(parts[1], raw=False):
                if self.down.made_durable(src, inst, n):
                    self.send(src, bus.OP_ACK, [inst, self.down.durable(src, inst)])
            return
        try:
            info = msgpack.unpackb(parts[1], raw=False) if len(parts) > 1 else {}
        except Exception:  # only this module posts here; a bad one is a bug
            info = {}
        if kind == _KIND_OPEN:
            log.info(
                "serial open port=%s rs485=%s reopens=%d",
                self.port_name,
                info.get("rs485", ""),
                self._rx["reopens"],
            )
            self.publish(bus.T_SERIAL_OPEN, {"port": self.port_name, **info})
        elif kind == _KIND_LOST:
            log.warning(
                "serial lost port=%s reason=%r open_s=%.1f",
                self.port_name,
                info.get("reason", ""),
                info.get("open_s", 0.0),
            )
            self.publish(bus.T_SERIAL_LOST, {"port": self.port_name, **info})
        self.publish_status()

    # -- uplink delivery -------------------------------------------------------------

    def _on_ack(self, env: bus.Envelope) -> None:
        if env.src != bus.CLIENT:  # only the client acknowledges the uplink
            self.counters["ack.bad_src"] += 1
            return
        inst, n = delivery.inst_n(env.data)
        now = time.monotonic()
        with self._jlock:
            released = self.up.ack(inst, n, now)
            if not released:
                return
            self.journal.ack(inst, n)
            if self.journal.wants_compaction(self.up.held_bytes):
                marks = dict(self._journaled_marks)
                for src, inst, n in self.down.marks():
                    marks[(src, inst)] = max(n, marks.get((src, inst), -1))
                self.journal.compact(
                    [(u.inst, u.n, u.item) for u in self.up.held],
                    marks,
                    self.up.next_n,
                    self._journaled_partial,
                )
        self.counters["units_acked"] += len(released)
        if self._waiting_room:
            self._wake_port_thread()  # room again

    def _on_nack(self, env: bus.Envelope) -> None:
        if env.src != bus.CLIENT:
            self.counters["ack.bad_src"] += 1
            return
        inst, n = delivery.inst_n(env.data)
        with self._jlock:
            units = self.up.resend_from(inst, n, time.monotonic())
        self._resend(units, "nack")

    def _on_registry(self, _topic: str, env: bus.Envelope) -> None:
        """A restarted broker or client lost what it held for us: send it again."""
        restarted, self._client_seen = self.restarted_peers(env.data, bus.CLIENT)
        for name in restarted:
            with self._jlock:
                units = self.up.resend_all(time.monotonic())
            self._resend(units, f"{name}_restarted")

    def _delivery_tick(self) -> None:
        now = time.monotonic()
        with self._jlock:
            # While no client runs, sending again only fills the broker's
            # queue for it; its return (seen in the registry) sends everything.
            due = self._client_seen and self.up.due(now)
            units = self.up.resend_all(now) if due else []
            self.journal.tick()
        self._resend(units, "no_ack")

    def _resend(self, units: list[delivery.Unit[list[bytes]]], reason: str) -> None:
        if not units:
            return
        self.counters["units_resent"] += len(units)
        self.count_drop(
            "resends",
            "uplink resend reason=%s units=%d first=%d:%d",
            reason,
            len(units),
            units[0].inst,
            units[0].n,
        )
        for unit in units:
            with self._jlock:
                ref = self.up.ref(unit)
            self.send(bus.RESOLVER, bus.OP_FRAMES, unit.item, ref)

    # -- downlink ----------------------------------------------------------------------

    def _on_write(self, env: bus.Envelope) -> None:
        data = env.data
        if not isinstance(data, list):
            data = [data]  # one frame outside a list, or junk: each is checked below
        frames: list[bytes] = []
        for frame in data:
            if not isinstance(frame, bytes) or not frame:
                self.count_drop(
                    "write_bad",
                    "write dropped reason=%s type=%s src=%s",
                    "empty" if isinstance(frame, bytes) else "not_bytes",
                    type(frame).__name__,
                    env.src,
                )
                continue
            frames.append(frame)
        ref = env.ref
        if ref is None or env.src != bus.CLIENT or ref.src != bus.CLIENT:
            # The gateway's own frames (replies to the meter): their own lane.
            self._enqueue(_LANE_GW, frames, None)
            return

        def written() -> int:  # written, even if the writer's word was lost
            with self._jlock:
                return self._journaled_marks.get((ref.src, ref.inst), -1)

        if not self.take_unit(self.down, ref, "downlink", written):
            return
        # Nothing to write (every item was bad) still queues an empty marker,
        # so the unit is acknowledged after those before it, never ahead.
        self._enqueue(_LANE_HES, frames or [b""], (ref.src, ref.inst, ref.n))

    def _enqueue(self, lane: int, frames: list[bytes], done: tuple[str, int, int] | None) -> None:
        now = time.monotonic()
        size = sum(map(len, frames))
        with self._wcond:
            queue = self._wq[lane]
            if lane == _LANE_GW:
                full = (
                    len(queue) + len(frames) > WRITE_QUEUE_MAX
                    or self._wq_bytes[lane] + size > WRITE_QUEUE_MAX_BYTES
                )
            else:
                full = bool(queue) and self._wq_bytes[lane] + size > HES_QUEUE_MAX_BYTES
            if full:
                if done is not None:
                    # Not acknowledged, so the client sends it again later; the
                    # stream stays in order because the receiver forgets it.
                    self.down.unaccept(*done)
                self.count_drop(
                    "write_dropped",
                    "write dropped reason=queue_full lane=%s frames=%d queued=%d open=%s",
                    "hes" if lane == _LANE_HES else "gateway",
                    len(frames),
                    len(queue),
                    self.is_open,
                    n=len(frames),
                )
                return
            last = len(frames) - 1
            for i, frame in enumerate(frames):
                queue.append((now, frame, done if i == last else None))
            self._wq_bytes[lane] += size
            self._wcond.notify()

    def _sync_counters(self) -> None:
        c = self.counters
        for name, value in self.deframer.counters().items():
            if name != "frames":  # frames_in counts what went to the pool
                c[name] = value
        for name, value in self._rx.items():
            c[name] = value
        for name, value in self._tx.items():
            c[name] = value

    def status(self) -> dict[str, Any]:
        return {
            "open": self.is_open,
            "port": self.port_name,
            "since": self.open_since,
            "rs485": self.rs485_state,
            "reopens": self._rx["reopens"],
            "attempts": self.fail_attempts,
            "error": self.last_error,
            "write_queue": len(self._wq[_LANE_GW]) + len(self._wq[_LANE_HES]),
            "write_queue_hes_bytes": self._wq_bytes[_LANE_HES],
            "held_units": len(self.up.held),
            "held_bytes": self.up.held_bytes,
            "journal_bytes": self.journal.size,
        }

    def publish_status(self) -> None:
        self._sync_counters()
        self.publish(bus.T_SERIAL_STATUS, self.status())

    def heartbeat_data(self) -> dict[str, Any]:
        self._sync_counters()
        data = super().heartbeat_data()
        data.update(self.status())
        data["deframer"] = self.deframer.counters()
        return data

    def _wake_port_thread(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # already woken (buffer full) or closing

    def _shutdown(self) -> None:
        self._halt.set()
        self._wake_port_thread()
        with self._wcond:
            self._wcond.notify_all()
        self._port_thread.join(JOIN_TIMEOUT_S)
        self._writer.join(JOIN_TIMEOUT_S)
        stuck = [t.name for t in (self._port_thread, self._writer) if t.is_alive()]
        for name in stuck:
            log.warning("thread did not stop name=%s action=left_to_exit", name)
        if not stuck:  # a stuck thread may still use them: left to the process exit
            self._wake_r.close()
            self._wake_w.close()
            with self._jlock:
                self.journal.close()
        self._sync_counters()
        log.info(
            "uart stopped frames_in=%d frames_out=%d unsent=%d held_units=%d",
            self.counters["frames_in"],
            self.counters["frames_out"],
            len(self._wq[_LANE_GW]) + len(self._wq[_LANE_HES]),
            len(self.up.held),
        )

    # -- the port thread ---------------------------------------------------------

    def _post(self, parts: list[bytes]) -> bool:
        return self._box.post(parts)

    def _post_frames(self, frames: list[bytes]) -> None:
        """Journal a batch as a unit of the uplink stream, then hand it to the loop.

        The journal comes first: from here on a SIGKILL of this process
        loses nothing, the next uart sends the unit again. So a full inbox
        (the loop far behind) costs only a delay: the unit is held, and sent
        again when the client asks for it or the resend timer fires.
        """
        size = sum(map(len, frames))
        partial = self.deframer.partial
        with self._jlock:
            unit = self.up.submit(frames, size, time.monotonic())
            self.journal.unit(unit.inst, unit.n, frames, partial)
            self._journaled_partial = partial
        # One part, not one per frame: pyzmq's per-part cost dominated the
        # hand-off to the loop under load.
        if self._post([_KIND_FRAMES, msgpack.packb(frames), b"%d" % unit.n, b"%r" % unit.born]):
            return
        before = self._rx["rx_held"]
        self._rx["rx_held"] = before + len(frames)
        if before < 10 or before // 1000 != (before + len(frames)) // 1000:
            log.warning(
                "frames held reason=loop_behind action=send_on_nack_or_timer count=%d total=%d",
                len(frames),
                before + len(frames),
            )

    def _run_port(self) -> None:
        delay = self.reopen_min
        opened_before = False
        try:
            while not self._halt.is_set():
                try:
                    port, rs485_state = open_port(self.port_name, self.settings, self.rs485)
                except Exception as exc:  # termios.error is no OSError: catch all
                    self._open_failed(exc, delay)
                    if self._watch_for_device(delay):
                        continue  # it appeared: open it now
                    self._halt.wait(delay)
                    delay = min(delay * 2, self.reopen_max)
                    continue
                opened_at = time.monotonic()
                if opened_before:
                    self._rx["reopens"] += 1
                opened_before = True
                self.rs485_state = rs485_state
                self.last_error = ""
                self.fail_attempts = 0
                self.open_since = time.time()
                self._write_fault = None
                with self._port_lock:
                    self._port = port
                with self._wcond:
                    self._wcond.notify_all()
                self._post([_KIND_OPEN, msgpack.packb({"rs485": rs485_state})])

                reason = self._read_until_fault(port)
                self._close_port(port)
                # A partial frame from a line that went away is stale.
                self._after_read(self.deframer.flush())
                if reason is None:
                    break  # stopping
                if not is_url(self.port_name) and not os.path.exists(self.port_name):
                    delay = self.reopen_min  # unplugged: watched, not backed off
                open_s = time.monotonic() - opened_at
                self.last_error = reason
                self.open_since = time.time()
                self._post(
                    [_KIND_LOST, msgpack.packb({"reason": reason, "open_s": round(open_s, 3)})]
                )
                # A port that stayed up longer than the longest backoff was
                # healthy: start over. One that flaps keeps backing off.
                if open_s >= self.reopen_max:
                    delay = self.reopen_min
                self._halt.wait(delay)
                delay = min(delay * 2, self.reopen_max)
        except Exception:
            # A bug, not a port fault (those end _read_until_fault): stop, and
            # supervisord restarts a uart that would otherwise never read again.
            log.exception("port thread failed port=%s action=stop", self.port_name)
            self.stop()
        finally:
            port = self._port
            if port is not None:
                self._close_port(port)
            self._box.close_thread_side()

    def _after_read(self, frames: list[bytes]) -> None:
        """Journal what a read (or an idle-gap flush) left: complete frames as
        a unit with the partial after them, else the partial alone if it
        changed, so a frame half read outlives a kill of this process."""
        if frames:
            self._post_frames(frames)
            return
        partial = self.deframer.partial
        if partial != self._journaled_partial:
            with self._jlock:
                self.journal.partial(partial)
                self._journaled_partial = partial

    def _watch_for_device(self, delay: float) -> bool:
        """While a device path does not exist, look for it every ``PORT_WATCH_S``
        (up to ``delay``, or for as long as it stays missing); True once it is
        there again, so it is opened at once instead of after the back-off."""
        if is_url(self.port_name) or os.path.exists(self.port_name):
            return False
        while not self._halt.wait(PORT_WATCH_S):
            if os.path.exists(self.port_name):
                return True
        return False

    def _wait_for_room(self) -> bool:
        """Backpressure: while the held uplink is at its bound, read nothing.

        The kernel's input queue (and the meter's flow control) holds the rest;
        an acknowledgement wakes this at once through the wake pipe. True if
        it waited: the line was not quiet meanwhile, so the caller restarts
        its idle gap (a frame half read before the wait is not stale).
        """
        if self.up.room():
            return False
        self._rx["held_waits"] += 1
        log.warning(
            "uplink held at bound held_bytes=%d max_bytes=%d action=stop_reading",
            self.up.held_bytes,
            self.up.max_bytes,
        )
        self._waiting_room = True
        try:
            while not self._halt.is_set() and self._write_fault is None and not self.up.room():
                select.select([self._wake_r], [], [], HOLD_WAIT_S)
                self._drain_wake()
        finally:
            self._waiting_room = False
        log.info("uplink room again held_bytes=%d action=read", self.up.held_bytes)
        return True

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except OSError:
            pass

    def _open_failed(self, exc: Exception, delay: float) -> None:
        self.fail_attempts += 1
        self._rx["open_failures"] += 1
        error = str(exc)
        self.last_error = error
        n = self.fail_attempts
        if n <= OPEN_FAIL_LOG_FIRST or n % OPEN_FAIL_LOG_EVERY == 0:
            log.warning(
                "serial open failed port=%s error=%r attempt=%d retry_in=%.2f",
                self.port_name,
                error,
                n,
                delay,
            )

    def _read_until_fault(self, port: serial.SerialBase) -> str | None:
        """Read and deframe until the port fails (return why) or we stop (None)."""
        try:
            fd = port.fileno()
        except Exception:  # URL ports (socket://, rfc2217://, loop://) may have none
            fd = None
        if fd is not None:
            return self._select_until_fault(port, fd)
        deframer = self.deframer
        idle_gap = self.idle_gap
        last_rx = time.monotonic()
        rx = self._rx
        while not self._halt.is_set():
            fault = self._write_fault
            if fault is not None:
                return fault
            if self._wait_for_room():
                last_rx = time.monotonic()
            try:
                data = port.read(port.in_waiting or 1)
            except Exception as exc:  # any failure here is the port's
                return str(exc) or type(exc).__name__
            now = time.monotonic()
            if data:
                last_rx = now
                rx["bytes_in"] += len(data)
                frames = deframer.feed(data)
            elif deframer.pending and now - last_rx >= idle_gap:
                frames = deframer.flush()
            else:
                continue
            self._after_read(frames)
        return None

    def _select_until_fault(self, port: serial.SerialBase, fd: int) -> str | None:
        """``_read_until_fault`` for ports with a file descriptor.

        Waits in select: as long as ``IDLE_WAIT_S`` while nothing is buffered,
        only until the idle gap ends while a partial frame is pending; a stop
        or a write fault wakes it at once through the wake pipe.
        """
        deframer = self.deframer
        # Floor as for the read-timeout loop: a gap shorter than the pause inside
        # one frame would flush every frame that arrives in two pieces.
        idle_gap = max(self.idle_gap, READ_TIMEOUT_MIN_S)
        last_rx = time.monotonic()
        rx = self._rx
        wake = self._wake_r
        while not self._halt.is_set():
            fault = self._write_fault
            if fault is not None:
                return fault
            if self._wait_for_room():
                last_rx = time.monotonic()
            if deframer.pending:
                wait = max(0.0, idle_gap - (time.monotonic() - last_rx))
            else:
                wait = IDLE_WAIT_S
            try:
                ready, _, _ = select.select([fd, wake], [], [], wait)
            except (OSError, ValueError) as exc:
                return str(exc) or type(exc).__name__
            if wake in ready:
                self._drain_wake()
            frames: list[bytes] = []
            if fd in ready:
                try:
                    data = port.read(port.in_waiting or 1)
                except Exception as exc:  # any failure here is the port's
                    return str(exc) or type(exc).__name__
                if not data:
                    continue
                last_rx = time.monotonic()
                rx["bytes_in"] += len(data)
                frames = deframer.feed(data)
            elif deframer.pending and time.monotonic() - last_rx >= idle_gap:
                frames = deframer.flush()
            else:
                continue
            self._after_read(frames)
        return None

    def _close_port(self, port: serial.SerialBase) -> None:
        # Wake a write blocked on a dead or stalled line, then wait for the
        # writer to let go before closing (it holds the lock while writing).
        cancel = getattr(port, "cancel_write", None)
        if cancel is not None:
            try:
                cancel()
            except Exception:
                pass
        with self._port_lock:
            if self._port is port:
                self._port = None
        try:
            port.close()
        except Exception as exc:  # a vanished device may fail even this
            log.debug("serial close failed port=%s error=%r", self.port_name, str(exc))

    # -- the writer thread ---------------------------------------------------------

    def _run_writer(self) -> None:
        try:
            self._write_queued()
        except Exception:
            # A bug, not a line fault. A uart that never writes again would be
            # worse than a restart by supervisord, which stopping gets us.
            log.exception("writer thread failed port=%s action=stop", self.port_name)
            self.stop()
        finally:
            self._box.close_thread_side()

    def _write_queued(self) -> None:
        """Write the queue's head until it is out whole or too old; repeat.

        The head stays in the queue while it is being written, so a frame is
        never lost between a failed write and the next try. ``sent`` counts
        its bytes already accepted by ``sent_on``, the port they went to.
        """
        tx = self._tx
        sent = 0
        sent_on: serial.SerialBase | None = None
        stall_began = 0.0  # when the line stopped taking bytes; 0: it is not
        stall_timeouts = 0
        lane = _LANE_GW
        gw, hes = self._wq
        while not self._halt.is_set():
            with self._wcond:
                # After a write fault, wait for the port thread to reopen.
                if (not gw and not hes) or self._port is None or self._write_fault is not None:
                    self._wcond.wait(WRITER_IDLE_S)
                    continue
                if sent == 0:
                    # Between frames the gateway's own lane goes first; a frame
                    # once begun is finished before the other lane's next one.
                    lane = _LANE_GW if gw else _LANE_HES
                queued_at, frame, done = self._wq[lane][0]
            held_s = time.monotonic() - queued_at
            if lane == _LANE_GW and held_s > WRITE_HOLD_MAX_S:
                self._drop_head_stale(frame, held_s, sent if sent_on is self._port else 0)
                sent, sent_on = 0, None
                continue
            outcome = ""
            with self._port_lock:
                port = self._port
                if port is None:
                    continue  # closed since we looked: the frame stays first in line
                if port is not sent_on:
                    # Any earlier part went to a line since closed: start over.
                    sent, sent_on = 0, port
                    stall_began, stall_timeouts = 0.0, 0
                try:
                    n, outcome = write_some(port, memoryview(frame)[sent:], self.write_timeout)
                    sent += n
                except Exception as exc:  # any failure here is the port's
                    error = str(exc) or type(exc).__name__
                    tx["write_errors"] += 1
                    log.warning(
                        "write failed reason=io len=%d sent=%d error=%r action=hold queued=%d "
                        "total=%d",
                        len(frame),
                        sent,
                        error,
                        len(gw) + len(hes),
                        tx["write_errors"],
                    )
                    # The frame stays first in line and goes out whole after the
                    # reopen. If part of it reached the meter before the fault,
                    # the meter's deframer drops that part (bad FCS or no closing
                    # flag where the length says) and resyncs on the next flag;
                    # only if all but the closing flag got out can the meter see
                    # the frame twice, which is better than never.
                    sent, sent_on = 0, None
                    stall_began, stall_timeouts = 0.0, 0
                    # The port thread closes and reopens it.
                    self._write_fault = f"write failed: {error}"
                    self._wake_port_thread()
                    continue
            if sent >= len(frame):
                with self._wcond:
                    self._wq[lane].popleft()  # only this thread takes from the left
                    self._wq_bytes[lane] -= len(frame)
                tx["frames_out"] += 1
                tx["bytes_out"] += len(frame)
                sent, sent_on = 0, None
                if done is not None:
                    self._written(done)
                if stall_began:
                    log.info(
                        "write resumed stalled_s=%.1f timeouts=%d queued=%d",
                        time.monotonic() - stall_began,
                        stall_timeouts,
                        len(gw) + len(hes),
                    )
                    stall_began, stall_timeouts = 0.0, 0
                continue
            if outcome == OUTCOME_TIMEOUT:
                tx["write_timeouts"] += 1
                stall_timeouts += 1
                if not stall_began:
                    stall_began = time.monotonic() - self.write_timeout
                if stall_timeouts == 1 or stall_timeouts % STALL_LOG_EVERY == 0:
                    log.warning(
                        "write stalled reason=timeout len=%d sent=%d timeout_s=%.2f "
                        "stalled_s=%.1f action=hold queued=%d total=%d",
                        len(frame),
                        sent,
                        self.write_timeout,
                        time.monotonic() - stall_began,
                        len(gw) + len(hes),
                        tx["write_timeouts"],
                    )
            # Timed out or cancelled (the port thread is closing the port): let
            # go of the port for a moment, then carry on from byte ``sent``.
            self._halt.wait(WRITE_RETRY_S)

    def _written(self, done: tuple[str, int, int]) -> None:
        """An HES unit's last frame is out: journal the mark at once (the
        shorter the gap between the write and the mark, the smaller the
        chance a kill makes the next uart write it again), then tell the loop,
        which acknowledges it to the client."""
        src, inst, n = done
        try:
            with self._jlock:
                self.journal.mark(src, inst, n)
                marks = self._journaled_marks
                marks.pop((src, inst), None)  # most recent last; bounded like the receiver
                marks[(src, inst)] = n
                while len(marks) > delivery.STREAMS_MAX:
                    del marks[next(iter(marks))]
        except JournalError as exc:
            log.warning("journal mark failed error=%s", exc)
        if not self._post([_KIND_WRITTEN, msgpack.packb([[src, inst, n]])]):
            self._tx["written_unposted"] = self._tx.get("written_unposted", 0) + 1

    def _drop_head_stale(self, frame: bytes, held_s: float, sent: int) -> None:
        with self._wcond:
            self._wq[_LANE_GW].popleft()
            self._wq_bytes[_LANE_GW] -= len(frame)
        tx = self._tx
        tx["write_stale"] += 1
        n = tx["write_stale"]
        if n <= 10 or n % 1000 == 0:
            # sent > 0: the meter got the start of it and drops that part.
            log.warning(
                "write dropped reason=stale len=%d sent=%d held_s=%.1f total=%d",
                len(frame),
                sent,
                held_s,
                n,
            )


#: write_some outcomes besides "all written".
OUTCOME_TIMEOUT = "timeout"
OUTCOME_CANCELLED = "cancelled"


def write_some(port: serial.SerialBase, data: memoryview, timeout: float) -> tuple[int, str]:
    """Write ``data`` to ``port``; return how many bytes went out, and why not all.

    The reason is ``""`` (all written), ``OUTCOME_TIMEOUT`` (the line took no
    byte for ``timeout`` seconds) or ``OUTCOME_CANCELLED`` (``cancel_write``
    from another thread). I/O errors raise.

    pyserial's ``write`` raises ``SerialTimeoutException`` without saying how
    much it wrote, so a retry would repeat or skip bytes. For a posix port
    (a device path) this does what its ``write`` does on the port's
    non-blocking fd, counting: a retry resumes at the first unwritten byte.
    Other ports (URLs) go through ``write``; after its timeout the retry
    starts again at the same byte, and the meter drops the repeated part as
    it drops any broken frame.
    """
    if _PosixSerial is not None and isinstance(port, _PosixSerial) and port.fd is not None:
        return _write_fd(port.fd, getattr(port, "pipe_abort_write_r", None), data, timeout)
    try:
        n = port.write(data)
    except serial.SerialTimeoutException:
        return 0, OUTCOME_TIMEOUT
    n = len(data) if n is None else n
    return n, "" if n >= len(data) else OUTCOME_CANCELLED


def _write_fd(fd: int, abort: int | None, data: memoryview, timeout: float) -> tuple[int, str]:
    done = 0
    last_progress = time.monotonic()
    waits = [abort] if abort is not None else []
    while done < len(data):
        try:
            n = os.write(fd, data[done:])
        except BlockingIOError:
            n = 0
        if n:
            done += n
            last_progress = time.monotonic()
            continue
        left = timeout - (time.monotonic() - last_progress)
        if left <= 0:
            return done, OUTCOME_TIMEOUT
        cancelled, _, _ = select.select(waits, [fd], [], left)
        if cancelled and abort is not None:
            try:
                os.read(abort, 1000)  # as pyserial's write does: one cancel, one wake
            except OSError:
                pass
            return done, OUTCOME_CANCELLED
    return done, ""


def make_uart(config: dict[str, Any]) -> Uart:
    try:
        return Uart(config)
    except JournalError as exc:  # a uart that cannot keep frames safe does not start
        print(f"meterlink: uart: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def main() -> None:
    main_for(make_uart, bus.UART, __doc__)


if __name__ == "__main__":
    main()

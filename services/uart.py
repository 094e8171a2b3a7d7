"""The ``uart`` service: owns the meter's serial port.

Theory of operation. For a device path (the production case, and a pty in
the tests) everything happens in the service loop; no other thread touches
the port:

- **Opening.** ``UART.port`` is opened (pyserial, non-blocking, the kernel's
  input queue kept) from a loop timer. A failed open is tried again after an
  exponential back-off between ``UART.reopen_min_s`` and
  ``UART.reopen_max_s``; while the device path does not exist it is looked
  for every ``PORT_WATCH_S`` and opened as soon as it is there.
- **Reading.** The port's file descriptor is polled by the loop. Each read
  feeds an ``rfc1662.Deframer``; the frames it completes are journaled as one
  unit (the journal comes before anything leaves the process) and sent to the
  resolver pool as one ``frames`` message, from the same handler. When the
  line has been quiet for ``UART.idle_gap_ms`` with a partial frame buffered,
  a timer flushes the stale partial. A read that fails (USB unplugged, pty
  closed) closes the port, publishes the loss and schedules the reopen.
  While the held uplink is at its bound the descriptor is not polled for
  input (the kernel and the meter's flow control hold the rest); an
  acknowledgement that makes room polls it again.
- **Writing.** ``write`` messages (a list of raw frames) go into two bounded
  lanes: the gateway's own frames (0x2200 replies) first, then HES data, a
  frame once begun finished before the other lane's next. The loop writes
  the head with a non-blocking ``os.write`` at once; what the line does not
  take waits for the descriptor to become writable (polled for POLLOUT only
  then) and goes on from the first unwritten byte. A frame leaves its lane
  only once written whole, or when dropped by a bound: frames that arrive
  when a lane is full (``write_dropped``), and gateway frames that waited
  longer than ``WRITE_HOLD_MAX_S`` (``write_stale``). A line that takes no
  byte for the write timeout (flow control holding off) counts
  ``write_timeouts`` and is logged, and the write goes on waiting; a write
  that fails with an I/O error (``write_errors``) closes and reopens the
  port, and the frame is written again whole on the new line. The last frame
  of an HES unit written, its mark is journaled, then the unit acknowledged.

A pyserial URL (``socket://``, ``rfc2217://``, ``loop://``) has no file
descriptor for the loop: per connection, a small reader thread opens it,
reads it and posts the bytes to the loop (``ThreadInbox``), and a writer
thread writes the one piece of a frame the loop hands it, posting back how
much went out. Every decision (back-off, deframing, journal, lanes, counts)
stays in the loop.

The loop publishes ``serial.open`` / ``serial.lost`` on each change and the
state topic ``serial.status`` on each change and every ``STATUS_INTERVAL_S``.

Events: ``serial.open`` ``{port, rs485}``; ``serial.lost`` ``{port, reason,
open_s}``; ``serial.status`` ``{open, port, since, rs485 (off/on/unsupported),
reopens, attempts (failed opens since the last success), error, write_queue}``.

Counters: ``frames_in`` (sent to the pool), ``bytes_in``, the deframer's
``garbage_bytes``, ``bad_fcs``, ``bad_flag``, ``oversize``, ``bad_length``,
``truncated`` (...); ``frames_out``/``bytes_out`` (written whole),
``write_errors`` (I/O errors), ``write_timeouts`` (stalls; neither loses a
frame), ``write_dropped`` (queue full), ``write_stale``, ``write_bad`` (an item
of a ``write`` that is not bytes, or empty), ``held_waits`` (reading stopped at
the uplink bound), ``rx_held`` (kept for its readers: with no hand-off between
threads nothing is held any more), ``open_failures``, ``reopens``.

Shutdown: ``on_close`` closes the port (a link's threads are told to stop
and joined with a timeout), so SIGTERM ends the process well within a second.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import queue
import select
import sys
import termios
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

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

#: Longest a link's read blocks: bounds how late it sees a stop. Shorter
#: when the idle gap is shorter.
READ_TIMEOUT_MAX_S = 0.1
#: Shortest read timeout, and shortest idle gap, so an idle gap of 0 does not
#: spin (nor flush every frame that arrives in two pieces).
READ_TIMEOUT_MIN_S = 0.002
#: Most bytes one read takes from the port.
READ_MAX = 65536
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
#: While the held uplink is at its bound a link's reader looks again this often.
HOLD_WAIT_S = 0.05
#: How often the loop checks the resend timer and the journal's fsync policy.
DELIVERY_TICK_S = 0.5
JOURNAL_FILE = "uart-journal.bin"  # in the run directory
#: Write timeout: this much, plus WRITE_TIMEOUT_FACTOR times the line time of
#: a maximal frame, with no byte accepted before a write counts as stalled
#: (flow control held off).
WRITE_TIMEOUT_MIN_S = 1.0
WRITE_TIMEOUT_FACTOR = 4
#: The first stall of an episode is logged, then every Nth timeout of it.
STALL_LOG_EVERY = 10
#: Bits on the line per byte, upper bound (start, 8 data, parity, 2 stop).
LINE_BITS_PER_BYTE = 12
#: serial.status is published on each change and this often.
STATUS_INTERVAL_S = 2.0
#: The first periodic status comes sooner: the PUB socket may still have been
#: joining when the first change was published.
STATUS_FIRST_S = 0.5
#: How long on_close waits for each of a link's threads.
JOIN_TIMEOUT_S = 0.4
#: Consecutive open failures are logged for the first few, then every Nth.
OPEN_FAIL_LOG_FIRST = 3
OPEN_FAIL_LOG_EVERY = 20

# What a link's threads post to the loop: [kind, link id, ...].
_KIND_OPEN = b"open"  # rs485 state
_KIND_FAILED = b"failed"  # error
_KIND_DATA = b"data"  # bytes read
_KIND_WROTE = b"wrote"  # bytes written, outcome
_KIND_LOST = b"lost"  # reason
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
    """A closed port for ``url`` whose ``open()`` flushes no input."""
    if _PosixSerial is not None and not is_url(url):
        port = KeepInputSerial(None, **kwargs)
        port.port = url
        return port
    port = serial.serial_for_url(url, do_not_open=True, **kwargs)
    # A URL port's open() ends with reset_input_buffer(): for socket:// that
    # reads and throws away what the meter sent as soon as it was connected.
    # Shadowed on the instance while it opens; a later call still flushes.
    real_open = port.open

    def open_keeping_input() -> None:
        port.reset_input_buffer = lambda: None  # type: ignore[method-assign]
        try:
            real_open()
        finally:
            del port.reset_input_buffer

    port.open = open_keeping_input  # type: ignore[method-assign]
    return port


def _close_quietly(port: serial.SerialBase, name: str) -> None:
    try:
        port.close()
    except Exception as exc:  # a vanished device may fail even this
        log.debug("serial close failed port=%s error=%r", name, str(exc))


def _output_queued(fd: int) -> bool:
    """True if the tty still holds bytes written and not sent (TIOCOUTQ)."""
    try:
        buf = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return False
    return int.from_bytes(buf, sys.byteorder, signed=True) > 0


class _Link:
    """A connection to a URL port, which has no file descriptor for the loop.

    Its reader thread opens the port, then reads it and posts the bytes to the
    loop; its writer thread writes the piece of a frame the loop hands it
    (``write``) and posts how much went out, so a line that holds off writes
    does not hold up reading. It decides nothing: a failure to open, a read or
    write that fails, all go to the loop, which starts a new link to reopen.

    Bytes read are not journaled until the loop has them, so the reader reads
    again only once the loop has taken its last read (``taken``): what a kill
    of the process can lose is one read, as on the descriptor path. Only the
    reader posts ``LOST`` (a failed write sets ``fault`` for it), after every
    byte it read: the loop never closes a link with its data still queued.
    """

    def __init__(self, uart: Uart, ident: int) -> None:
        self.ident = ident
        self.port: serial.SerialBase | None = None
        self.busy = False  # a piece handed to the writer, not reported yet (loop side)
        self.stop = threading.Event()
        self.room = threading.Event()  # cleared while the uplink is at its bound
        if not uart._held:
            self.room.set()
        self.taken = threading.Event()  # the loop has handled the last read
        self.taken.set()
        self.fault: str | None = None  # why a write failed (the reader reports it)
        self._uart = uart
        self._jobs: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self.threads = (
            threading.Thread(target=self._read, name="uart-link", daemon=True),
            threading.Thread(target=self._write, name="uart-link-writer", daemon=True),
        )
        for thread in self.threads:
            uart.add_thread(thread)
        self.threads[0].start()

    def write(self, data: memoryview) -> None:
        self.busy = True
        self._jobs.put(data)

    def close(self) -> None:
        """Tell both threads to end; the reader closes the port."""
        self.stop.set()
        self._jobs.put(None)

    def _post(self, kind: bytes, *parts: bytes) -> None:
        box = self._uart._box
        msg = [kind, b"%d" % self.ident, *parts]
        while not box.post(msg) and not self.stop.wait(HOLD_WAIT_S):
            pass  # the loop is far behind: these bytes are not journaled yet

    def _read(self) -> None:
        uart = self._uart
        try:
            try:
                port, rs485_state = open_port(uart.port_name, uart.settings, uart.rs485)
            except Exception as exc:  # termios.error is no OSError: catch all
                self._post(_KIND_FAILED, str(exc).encode())
                return
            self.port = port
            self.threads[1].start()
            self._post(_KIND_OPEN, rs485_state.encode())
            try:
                while not self.stop.is_set() and self.fault is None:
                    if not self.room.wait(HOLD_WAIT_S) or not self.taken.wait(HOLD_WAIT_S):
                        continue
                    buf = bytearray()
                    try:
                        buf += port.read(min(port.in_waiting or 1, READ_MAX))
                        # One hand-over per read: take what else is there now
                        # (socket:// says 1 for "some", so that goes byte-wise).
                        while buf and len(buf) < READ_MAX and port.in_waiting:
                            buf += port.read(min(port.in_waiting, READ_MAX - len(buf)))
                    except Exception as exc:  # the port's; what it gave first goes first
                        if not buf:
                            raise
                        self.fault = str(exc) or type(exc).__name__
                    data = bytes(buf)
                    if data:
                        self.taken.clear()
                        self._post(_KIND_DATA, data)
                if self.fault is not None and not self.stop.is_set():
                    self._post(_KIND_LOST, self.fault.encode())
            except Exception as exc:  # any failure here is the port's
                self._post(_KIND_LOST, (str(exc) or type(exc).__name__).encode())
            finally:
                self.close()
                port.close()
        finally:
            uart._box.close_thread_side()

    def _write(self) -> None:
        port = self.port
        assert port is not None
        try:
            while (job := self._jobs.get()) is not None and not self.stop.is_set():
                try:
                    n, outcome = write_some(port, job, self._uart.write_timeout)
                except Exception as exc:  # any failure here is the port's
                    self.fault = str(exc) or type(exc).__name__  # the reader tells
                    return
                self._post(_KIND_WROTE, b"%d" % n, outcome.encode())
        finally:
            self._uart._box.close_thread_side()


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
        self.settings["timeout"] = read_timeout  # link threads only
        self.write_timeout = WRITE_TIMEOUT_MIN_S + WRITE_TIMEOUT_FACTOR * line_time
        self.settings["write_timeout"] = self.write_timeout
        # Floored: a gap shorter than the pause inside one frame would flush
        # every frame that arrives in two pieces.
        self._gap = max(self.idle_gap, READ_TIMEOUT_MIN_S)

        # Acknowledged delivery. Uplink: every batch of frames is a unit,
        # journaled before it is sent, held until the client acknowledges it.
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
        # Downlink marks journaled, by stream, most recent last (compaction
        # keeps them; a duplicate is acknowledged up to them).
        self._journaled_marks: dict[tuple[str, int], int] = dict(replay.marks)
        self._client_seen = True  # a client in the last registry (resend timer)

        # The port. _fd is its descriptor while a device path is open; a URL
        # port is served by _link instead.
        self._port: serial.SerialBase | None = None
        self._fd: int | None = None
        self._link: _Link | None = None
        self._links = 0  # link ids: what an old link posts late is ignored
        self._opened_at = 0.0
        self._opened_before = False
        self._delay = self.reopen_min  # the back-off before the next open
        self._held = False  # reading stopped: the uplink is at its bound
        self._last_rx = 0.0
        self._flush_armed = False
        self.rs485_state = "off"
        self.last_error = ""
        self.open_since = time.time()  # since when open, or closed (display only)
        self.fail_attempts = 0

        # Two lanes for the meter: the gateway's own frames first, then HES
        # data; items are (queued_at, frame, done) where done is the
        # (src, inst, n) of an HES unit whose last frame this is.
        self._wq: tuple[collections.deque[Any], collections.deque[Any]] = (
            collections.deque(),
            collections.deque(),
        )
        self._wq_bytes = [0, 0]
        self._lane = _LANE_GW  # the lane of the head being written
        self._sent = 0  # its bytes the current line has taken
        self._waiting = False  # polled for POLLOUT: the line took all it would
        self._last_progress = 0.0  # when the line last took a byte (or the wait began)
        self._stall_armed = False
        self._stall_began = 0.0  # when the line stopped taking bytes; 0: it is not
        self._stall_timeouts = 0

        self._rx = {
            "bytes_in": 0,
            "rx_held": 0,
            "open_failures": 0,
            "reopens": 0,
            "held_waits": 0,
        }
        self._tx = {
            "frames_out": 0,
            "bytes_out": 0,
            "write_errors": 0,
            "write_timeouts": 0,
            "write_stale": 0,
        }

        self._box = self.thread_inbox("serial", self._on_link_message)
        self.on(bus.OP_WRITE)(self._on_write)
        self.on(bus.OP_ACK)(self._on_ack)
        self.on(bus.OP_NACK)(self._on_nack)
        self.on_event(bus.T_REGISTRY)(self._on_registry)
        self.every(STATUS_INTERVAL_S, self.publish_status, first=STATUS_FIRST_S)
        # Also the journal's fsync timer: at least as often as its interval.
        self.every(min(DELIVERY_TICK_S, float(jcfg["fsync_interval_s"])), self._delivery_tick)
        self.on_close(self._shutdown)

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
        self._open()

    @property
    def is_open(self) -> bool:
        return self._port is not None

    # -- opening and losing the port ---------------------------------------------------

    def _open(self) -> None:
        """Try to open the port (a URL: start a link that tries)."""
        if self.stopping or self._port is not None or self._link is not None:
            return
        if is_url(self.port_name):
            # Links that ended need no waiting for at close: forget them, so a
            # flapping line does not grow the list.
            self._threads = [t for t in self._threads if t.is_alive()]
            self._links += 1
            self._link = _Link(self, self._links)
            return
        try:
            port, rs485_state = open_port(self.port_name, self.settings, self.rs485)
        except Exception as exc:  # termios.error is no OSError: catch all
            self._open_failed(str(exc))
            return
        try:
            fd = port.fileno()
            os.set_blocking(fd, False)  # pyserial opens it so; reads and writes rely on it
        except Exception as exc:
            _close_quietly(port, self.port_name)
            self._open_failed(str(exc))
            return
        self._fd = fd
        self._opened(port, rs485_state)

    def _open_failed(self, error: str) -> None:
        delay = self._delay
        self.fail_attempts += 1
        self._rx["open_failures"] += 1
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
        if self._missing():
            # Unplugged: watched, not backed off; opened as soon as it is back.
            self.call_later(PORT_WATCH_S, self._watch_device)
            return
        self.call_later(delay, self._open)
        self._delay = min(delay * 2, self.reopen_max)

    def _missing(self) -> bool:
        return not is_url(self.port_name) and not os.path.exists(self.port_name)

    def _watch_device(self) -> None:
        if self._missing():
            self.call_later(PORT_WATCH_S, self._watch_device)
        else:
            self._open()

    def _opened(self, port: serial.SerialBase, rs485_state: str) -> None:
        now = time.monotonic()
        if self._opened_before:
            self._rx["reopens"] += 1
        self._opened_before = True
        self._port = port
        self._opened_at = now
        self._last_rx = now
        self.rs485_state = rs485_state
        self.last_error = ""
        self.fail_attempts = 0
        self.open_since = time.time()
        log.info(
            "serial open port=%s rs485=%s reopens=%d",
            self.port_name,
            rs485_state,
            self._rx["reopens"],
        )
        self.publish(bus.T_SERIAL_OPEN, {"port": self.port_name, "rs485": rs485_state})
        self.publish_status()
        if not self.up.room():
            self._hold()
        try:
            if self._fd is not None:
                self._poll_input(not self._held)
                # What the meter sent while the port was closed is read at once.
                if not self._held:
                    self._read(polled=False)
        finally:
            self._write_pending()

    def _lost(self, reason: str) -> None:
        """The port failed: close it, schedule the reopen, tell."""
        self._close_port()
        if self._missing():
            self._delay = self.reopen_min  # unplugged: watched, not backed off
        open_s = time.monotonic() - self._opened_at
        # A port that stayed up longer than the longest back-off was healthy:
        # start over. One that flaps keeps backing off. Scheduled first, so
        # that nothing below can leave the port closed for good.
        if open_s >= self.reopen_max:
            self._delay = self.reopen_min
        self.call_later(self._delay, self._open)
        self._delay = min(self._delay * 2, self.reopen_max)
        self.last_error = reason
        self.open_since = time.time()
        log.warning(
            "serial lost port=%s reason=%r open_s=%.1f",
            self.port_name,
            reason,
            open_s,
        )
        self.publish(
            bus.T_SERIAL_LOST,
            {"port": self.port_name, "reason": reason, "open_s": round(open_s, 3)},
        )
        self.publish_status()
        # A partial frame from a line that went away is stale.
        self._after_read(self.deframer.flush())

    def _close_port(self) -> None:
        fd, port, link = self._fd, self._port, self._link
        self._fd = self._port = self._link = None
        if fd is not None:
            self.remove_socket(fd)  # reading and writing both
        self._waiting = False
        # Any part of the head went to a line now gone: it goes out whole again.
        self._sent = 0
        self._stall_began, self._stall_timeouts = 0.0, 0
        if link is not None:
            link.close()  # the link closes its port itself
        elif port is not None:
            if fd is not None and _output_queued(fd):
                # A real UART's last close waits for its output to drain, up
                # to the driver's closing_wait (30 s by default), whatever
                # O_NONBLOCK says: a meter holding off writes would hold the
                # loop that long. Closed beside the loop instead.
                threading.Thread(
                    target=_close_quietly,
                    args=(port, self.port_name),
                    name="uart-close",
                    daemon=True,
                ).start()
            else:
                _close_quietly(port, self.port_name)

    def _on_link_message(self, parts: list[bytes]) -> None:
        link = self._link
        if link is None or int(parts[1]) != link.ident:
            return  # from a link since closed
        kind = parts[0]
        if kind == _KIND_DATA:
            try:
                self._on_bytes(parts[2])
            finally:
                link.taken.set()
        elif kind == _KIND_WROTE:
            link.busy = False
            n = int(parts[2])
            if n:
                self._wrote(n)
            if parts[3] == OUTCOME_TIMEOUT.encode():
                self._count_stall()
            self._write_pending()
        elif kind == _KIND_OPEN:
            assert link.port is not None
            self._opened(link.port, parts[2].decode())
        elif kind == _KIND_FAILED:
            self._link = None
            self._open_failed(parts[2].decode(errors="replace"))
        elif kind == _KIND_LOST:
            self._lost(parts[2].decode(errors="replace"))

    # -- reading -----------------------------------------------------------------------

    def _poll_input(self, on: bool) -> None:
        fd = self._fd
        if fd is None:
            return
        if on:
            self.add_socket(fd, self._on_readable)
            return
        self.stop_reading(fd)

    def _on_readable(self) -> None:
        self._read(polled=True)

    def _read(self, polled: bool) -> None:
        """Read what the port holds. pyserial sets VMIN=0, so a read of an
        empty tty returns no bytes: after poll said readable, that is a line
        gone (as pyserial's ``read`` has it), else just nothing there yet."""
        fd = self._fd
        if fd is None:
            return
        try:
            data = os.read(fd, READ_MAX)
        except BlockingIOError:
            return
        except OSError as exc:  # any failure here is the port's
            self._lost(f"read failed: {exc}")
            return
        if data:
            self._on_bytes(data)
        elif polled:
            self._lost(
                "read failed: device reports readiness to read but returned no data "
                "(device disconnected or multiple access on port?)"
            )

    def _on_bytes(self, data: bytes) -> None:
        self._rx["bytes_in"] += len(data)
        self._last_rx = time.monotonic()
        self._after_read(self.deframer.feed(data))
        if self.deframer.pending and not self._flush_armed:
            self._flush_armed = True
            self.call_later(self._gap, self._flush_due)
        if not self.up.room():
            self._hold()

    def _flush_due(self) -> None:
        """The idle-gap timer: flush a partial frame the line left stale."""
        self._flush_armed = False
        if self._held or self._port is None or not self.deframer.pending:
            return  # held: flushed after the wait if still stale; closed: flushed
        # The rest may be in already: in the kernel, or read by a link and
        # waiting for the loop.
        if self._fd is not None:
            self._read(polled=False)
        elif self._link is not None and not self._link.taken.is_set():
            self._box.drain()
        if self._flush_armed or self._port is None or not self.deframer.pending:
            return
        left = self._gap - (time.monotonic() - self._last_rx)
        if left > 0:
            self._flush_armed = True
            self.call_later(left, self._flush_due)
            return
        self._after_read(self.deframer.flush())

    def _post_frames(self, frames: list[bytes]) -> None:
        """Journal a batch as a unit of the uplink stream, then send it.

        The journal comes first: from here on a SIGKILL of this process
        loses nothing, the next uart sends the unit again.
        """
        partial = self.deframer.partial
        unit = self.up.submit(frames, sum(map(len, frames)), time.monotonic())
        with self._journal_or_stop("unit"):
            self.journal.unit(unit.inst, unit.n, frames, partial)
        self._journaled_partial = partial
        self.counters["frames_in"] += len(frames)
        self.send(bus.RESOLVER, bus.OP_FRAMES, frames, self.up.ref(unit))

    def _after_read(self, frames: list[bytes]) -> None:
        """Journal what a read (or an idle-gap flush) left: complete frames as
        a unit with the partial after them, else the partial alone if it
        changed, so a frame half read outlives a kill of this process."""
        if frames:
            self._post_frames(frames)
            return
        partial = self.deframer.partial
        if partial != self._journaled_partial:
            with self._journal_or_stop("partial"):
                self.journal.partial(partial)
            self._journaled_partial = partial

    @contextlib.contextmanager
    def _journal_or_stop(self, what: str) -> Iterator[None]:
        """A uart that cannot keep frames safe stops (supervisord restarts it,
        and the next uart replays the journal): the error is logged and raised
        on, so the step that needed the journal goes no further."""
        try:
            yield
        except JournalError:
            log.exception("journal %s failed port=%s action=stop", what, self.port_name)
            self.stop()
            raise

    def _hold(self) -> None:
        """Backpressure: while the held uplink is at its bound, read nothing.

        The kernel's input queue (and the meter's flow control) holds the
        rest; an acknowledgement that makes room reads again (``_unhold``).
        """
        if self._held:
            return
        self._held = True
        self._rx["held_waits"] += 1
        log.warning(
            "uplink held at bound held_bytes=%d max_bytes=%d action=stop_reading",
            self.up.held_bytes,
            self.up.max_bytes,
        )
        self._poll_input(False)
        if self._link is not None:
            self._link.room.clear()

    def _unhold(self) -> None:
        if not self._held or not self.up.room():
            return
        self._held = False
        log.info("uplink room again held_bytes=%d action=read", self.up.held_bytes)
        # The line was not quiet meanwhile: a frame half read before the wait
        # is not stale, its idle gap starts now.
        self._last_rx = time.monotonic()
        if self.deframer.pending and not self._flush_armed:
            self._flush_armed = True
            self.call_later(self._gap, self._flush_due)
        self._poll_input(True)
        if self._link is not None:
            self._link.room.set()

    # -- uplink delivery -------------------------------------------------------------

    def _on_ack(self, env: bus.Envelope) -> None:
        if env.src != bus.CLIENT:  # only the client acknowledges the uplink
            self.counters["ack.bad_src"] += 1
            return
        inst, n = delivery.inst_n(env.data)
        released = self.up.ack(inst, n, time.monotonic())
        if not released:
            return
        self.counters["units_acked"] += len(released)
        try:
            with self._journal_or_stop("ack"):
                self.journal.ack(inst, n)
                if self.journal.wants_compaction(self.up.held_bytes):
                    marks = dict(self._journaled_marks)
                    for src, m_inst, m_n in self.down.marks():
                        marks[(src, m_inst)] = max(m_n, marks.get((src, m_inst), -1))
                    self.journal.compact(
                        [(u.inst, u.n, u.item) for u in self.up.held],
                        marks,
                        self.up.next_n,
                        self._journaled_partial,
                    )
        finally:
            if not self.stopping:  # a journal that failed stops the uart: read no more
                self._unhold()

    def _on_nack(self, env: bus.Envelope) -> None:
        if env.src != bus.CLIENT:
            self.counters["ack.bad_src"] += 1
            return
        inst, n = delivery.inst_n(env.data)
        self._resend(self.up.resend_from(inst, n, time.monotonic()), "nack")

    def _on_registry(self, _topic: str, env: bus.Envelope) -> None:
        """A restarted broker or client lost what it held for us: send it again."""
        restarted, self._client_seen = self.restarted_peers(env.data, bus.CLIENT)
        for name in restarted:
            self._resend(self.up.resend_all(time.monotonic()), f"{name}_restarted")

    def _delivery_tick(self) -> None:
        now = time.monotonic()
        # While no client runs, sending again only fills the broker's
        # queue for it; its return (seen in the registry) sends everything.
        if self._client_seen and self.up.due(now):
            self._resend(self.up.resend_all(now), "no_ack")
        self._unhold()  # a no-op unless held with room (never expected)
        with self._journal_or_stop("fsync"):
            self.journal.tick()

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
            self.send(bus.RESOLVER, bus.OP_FRAMES, unit.item, self.up.ref(unit))

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

        def written() -> int:  # written, even if the acknowledgement was lost
            return self._journaled_marks.get((ref.src, ref.inst), -1)

        if not self.take_unit(self.down, ref, "downlink", written):
            return
        # Nothing to write (every item was bad) still queues an empty marker,
        # so the unit is acknowledged after those before it, never ahead.
        self._enqueue(_LANE_HES, frames or [b""], (ref.src, ref.inst, ref.n))

    def _enqueue(self, lane: int, frames: list[bytes], done: tuple[str, int, int] | None) -> None:
        now = time.monotonic()
        size = sum(map(len, frames))
        lane_q = self._wq[lane]
        if lane == _LANE_GW:
            full = (
                len(lane_q) + len(frames) > WRITE_QUEUE_MAX
                or self._wq_bytes[lane] + size > WRITE_QUEUE_MAX_BYTES
            )
        else:
            full = bool(lane_q) and self._wq_bytes[lane] + size > HES_QUEUE_MAX_BYTES
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
                len(lane_q),
                self.is_open,
                n=len(frames),
            )
            return
        last = len(frames) - 1
        for i, frame in enumerate(frames):
            lane_q.append((now, frame, done if i == last else None))
        self._wq_bytes[lane] += size
        if not self._waiting:  # else the line is full: POLLOUT says when it is not
            self._write_pending()

    def _write_pending(self) -> None:
        """Write the lanes' heads until they are empty or the line takes no more.

        The head stays in its lane while it is being written, so a frame is
        never lost between a failed write and the next try; ``_sent`` counts
        its bytes the current line has taken.
        """
        if self._port is None:
            return
        link, fd = self._link, self._fd
        if link is not None and link.busy:
            return  # its report calls again
        gw, hes = self._wq
        while gw or hes:
            if self._sent == 0:
                # Between frames the gateway's own lane goes first; a frame
                # once begun is finished before the other lane's next one.
                self._lane = _LANE_GW if gw else _LANE_HES
            queued_at, frame, _done = self._wq[self._lane][0]
            if self._lane == _LANE_GW:
                held_s = time.monotonic() - queued_at
                if held_s > WRITE_HOLD_MAX_S:
                    self._drop_head_stale(frame, held_s, self._sent)
                    self._sent = 0
                    continue
            piece = memoryview(frame)[self._sent :]
            if not piece:  # an HES unit's empty marker: nothing to write
                self._wrote(0)
                continue
            if link is not None:
                link.write(piece)
                return
            assert fd is not None
            try:
                n = os.write(fd, piece)
            except BlockingIOError:
                n = 0
            except OSError as exc:  # any failure here is the port's
                self._write_failed(frame, exc)
                return
            if not n:
                self._wait_writable(fd)
                return
            self._wrote(n)
        if self._waiting and fd is not None:
            self.watch_writable(fd, None)
        self._waiting = False

    def _wait_writable(self, fd: int) -> None:
        if not self._waiting:
            self._waiting = True
            self._last_progress = time.monotonic()
            self.watch_writable(fd, self._on_writable)
        if not self._stall_armed:
            self._stall_armed = True
            self.call_later(
                self._last_progress + self.write_timeout - time.monotonic(), self._check_stall
            )

    def _on_writable(self) -> None:
        self._write_pending()

    def _check_stall(self) -> None:
        """The write-timeout timer: a line that took nothing for the write
        timeout counts a stall; the write goes on waiting."""
        self._stall_armed = False
        if not self._waiting or self._fd is None:
            return
        if time.monotonic() - self._last_progress >= self.write_timeout:
            self._count_stall()
            self._last_progress = time.monotonic()
            self._write_pending()  # drops a head gone stale meanwhile
        if self._waiting and self._fd is not None:
            self._wait_writable(self._fd)

    def _count_stall(self) -> None:
        tx = self._tx
        tx["write_timeouts"] += 1
        self._stall_timeouts += 1
        if not self._stall_began:
            self._stall_began = time.monotonic() - self.write_timeout
        if self._stall_timeouts == 1 or self._stall_timeouts % STALL_LOG_EVERY == 0:
            gw, hes = self._wq
            frame = self._wq[self._lane][0][1] if self._wq[self._lane] else b""
            log.warning(
                "write stalled reason=timeout len=%d sent=%d timeout_s=%.2f "
                "stalled_s=%.1f action=hold queued=%d total=%d",
                len(frame),
                self._sent,
                self.write_timeout,
                time.monotonic() - self._stall_began,
                len(gw) + len(hes),
                tx["write_timeouts"],
            )

    def _wrote(self, n: int) -> None:
        """The line took ``n`` more bytes of the head."""
        self._sent += n
        self._last_progress = time.monotonic()
        lane = self._wq[self._lane]
        _queued_at, frame, done = lane[0]
        if self._sent < len(frame):
            return
        lane.popleft()
        self._wq_bytes[self._lane] -= len(frame)
        self._sent = 0
        self._tx["frames_out"] += 1
        self._tx["bytes_out"] += len(frame)
        if done is not None:
            self._written(done)
        if self._stall_began:
            gw, hes = self._wq
            log.info(
                "write resumed stalled_s=%.1f timeouts=%d queued=%d",
                time.monotonic() - self._stall_began,
                self._stall_timeouts,
                len(gw) + len(hes),
            )
            self._stall_began, self._stall_timeouts = 0.0, 0

    def _write_failed(self, frame: bytes, exc: Exception) -> None:
        error = str(exc) or type(exc).__name__
        tx = self._tx
        tx["write_errors"] += 1
        gw, hes = self._wq
        log.warning(
            "write failed reason=io len=%d sent=%d error=%r action=hold queued=%d total=%d",
            len(frame),
            self._sent,
            error,
            len(gw) + len(hes),
            tx["write_errors"],
        )
        # The frame stays first in line and goes out whole after the reopen.
        # If part of it reached the meter before the fault, the meter's
        # deframer drops that part (bad FCS or no closing flag where the
        # length says) and resyncs on the next flag; only if all but the
        # closing flag got out can the meter see the frame twice, which is
        # better than never.
        self._lost(f"write failed: {error}")

    def _written(self, done: tuple[str, int, int]) -> None:
        """An HES unit's last frame is out: journal the mark, then acknowledge
        the unit to the client."""
        src, inst, n = done
        try:
            self.journal.mark(src, inst, n)
            marks = self._journaled_marks
            marks.pop((src, inst), None)  # most recent last; bounded like the receiver
            marks[(src, inst)] = n
            while len(marks) > delivery.STREAMS_MAX:
                del marks[next(iter(marks))]
        except JournalError as exc:
            # Unlike every other journal error this one does not stop the uart:
            # the unit is on the line already, and a restart would write it to
            # the meter again. Acknowledged; only a later restart's replay
            # misses the mark (and the client's resend is then taken again).
            self.counters["journal.mark_errors"] += 1
            log.warning("journal mark failed error=%s", exc)
        if self.down.made_durable(src, inst, n):
            self.send(src, bus.OP_ACK, [inst, self.down.durable(src, inst)])

    def _drop_head_stale(self, frame: bytes, held_s: float, sent: int) -> None:
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

    # -- status ------------------------------------------------------------------------

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

    def _shutdown(self) -> None:
        link = self._link
        if link is not None:
            # A read the link made and the loop has not handled is journaled
            # (not acknowledged: the next uart sends it) before the link goes.
            link.stop.set()
            link.threads[0].join(JOIN_TIMEOUT_S)
            self._box.drain()
        self._close_port()  # a partial frame stays journaled for the next uart
        for thread in link.threads if link is not None else ():
            if thread.ident is not None:
                thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("thread did not stop name=%s action=left_to_exit", thread.name)
        self.journal.close()
        self._sync_counters()
        log.info(
            "uart stopped frames_in=%d frames_out=%d unsent=%d held_units=%d",
            self.counters["frames_in"],
            self.counters["frames_out"],
            len(self._wq[_LANE_GW]) + len(self._wq[_LANE_HES]),
            len(self.up.held),
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

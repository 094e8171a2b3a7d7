"""Meter simulator: a meter on a pseudo-terminal, so meterlink runs without hardware.

Run it as ``python -m services.sim.meter``. It does not connect to the bus: it opens a
pseudo-terminal (``os.openpty``, raw mode), links the terminal's slave side at the
configured serial port path (``UART.port``, ``{run_dir}/meter.tty`` in ``dev.json``; an
old link is replaced atomically, anything that is not a symlink is left alone) and acts
like a meter on the master side, with the frame codec of ``common.rfc1662`` and the
parameter layouts of ``common.params``.

What it does, each on its own timer (an interval of 0 turns that one off):

* every ``--interval`` seconds: an uplink 0x2100/BF frame holding a DLMS
  data-notification ``0F <long-invoke-id, 4 bytes> 00 02 02 09 06 <OBIS 1.0.1.8.0.255>
  06 <energy, 4 bytes>``; the invoke id counts 1, 2, 3 ... so order can be checked;
* every ``--lqi-interval`` seconds: 0x2200 GET 0x8003 (LQI), and prints the answer;
* every ``--name-interval`` seconds: typed 0x2200 GET 0x8007 (device name) with a
  request id, and prints the answer;
* every ``--event-interval`` seconds: 0x2200 EVENT (C2), and prints the acknowledgement.

What it answers:

* DLMS APDUs from the HES in 0x2100 frames (put back together when the gateway split
  one at ``UART.max_info``, or apart when TCP merged several), with ``--answer dlms``
  (default), from a small object model (``services.sim.dlms.MeterModel``): AARQ gets an
  AARE (accepted for logical-name referencing without security), RLRQ an RLRE, a
  get-request normal a get-response for the clock (0.0.1.0.0.255, attribute 2), the
  active energy register (1.0.1.8.0.255, attributes 2 and 3) and the load profile
  (1.0.99.1.0.255, attribute 2: 96 entries, sent in blocks of get-response
  with-datablock, each after a get-request next, when larger than the max-PDU-size the
  HES proposed or than ``UART.max_info``), or a data-access-result for anything else;
  what is not a request it knows gets an exception-response. GETs are answered with or
  without an association. With ``--answer echo`` the data comes back as it is;
* the gateway's own 0x2200 GET (C0 ``pid``) and SET (C1 ``pid data``): C4 ``pid plen
  data`` from a small table of meter-side parameters (0x2801..0x2807, 0x280F, 0x2860,
  0x2861; a SET stores the new bytes first); an unknown pid gets C8 ``pid 01 0C``.

Every frame sent or received is printed on one line to stdout, flushed, DLMS with
``common.dlms.describe``, e.g. ``meter -> gw 0x2100 BF len=21 data-notification
id=0x00000003 structure(2) [...]`` and
``meter <- gw 0x2200 C4 GET-response LQI=25 info=03800119``. Bytes that are not frames
are counted by the deframer and printed as ``meter <- gw dropped garbage_bytes=+5``. A
request unanswered after ``ANSWER_TIMEOUT_S`` is printed as such.

``--noise`` puts line noise before some uplink frames (random bytes or a frame cut short)
so the gateway's deframer can be seen recovering. ``--count N`` stops after N uplink
data frames, once they are written. The simulator keeps its own descriptor of the slave
open, so the gateway may close and reopen the port at will; while nobody reads, what the
meter sends waits in the terminal and then in a bounded buffer (overflow is counted).
SIGTERM or SIGINT ends it within a second and removes the link it made.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import params, rfc1662
from common.config import ENV_CONFIG, config_path, load_or_exit
from common.dlms import DlmsError, decode, describe
from services.sim import dlms as sim_dlms
from services.sim.dlms import OBIS_ENERGY, ApduStream, MeterModel, Piece
from services.sim.meter_pty import MeterPty

# --- timings and sizes ------------------------------------------------------------------

DEFAULT_INTERVAL_S = 2.0
DEFAULT_LQI_INTERVAL_S = 10.0
DEFAULT_NAME_INTERVAL_S = 30.0
DEFAULT_EVENT_INTERVAL_S = 20.0
#: A GET or EVENT with no answer after this long is reported as unanswered.
ANSWER_TIMEOUT_S = 3.0
READER_POLL_S = 0.1  # how often the meter looks for the gateway on the port at start
READER_SETTLE_S = 0.3  # the gateway has held the port this long: its open() is over
#: Longest the loop sleeps: bounds how late timers and the idle-gap flush can run.
MAX_POLL_S = 0.5
#: What waits for the gateway to read, beyond the terminal's own buffer.
TX_BUFFER_MAX = 16 * 1024
#: Share of uplink frames preceded by noise with ``--noise``.
NOISE_RATE = 0.3
#: Printed data is cut after this many bytes.
PRINT_MAX = 96
READ_SIZE = 4096

# --- DLMS ---------------------------------------------------------------------------------

APDU_DATA_NOTIFICATION = 0x0F
TAG_OCTET_STRING = 0x09
TAG_DOUBLE_LONG_UNSIGNED = 0x06
TAG_STRUCTURE = 0x02
#: A downlink APDU cut short waits this long for its rest.
PARTIAL_IDLE_S = 1.0


def data_notification(counter: int, energy_wh: int) -> bytes:
    """DLMS data-notification carrying the energy register; ``counter`` is the
    long-invoke-id, so order can be checked: ``0F <id, 4> 00 (no date-time) 02 02
    09 06 <OBIS 1.0.1.8.0.255> 06 <energy, 4>``."""
    return (
        bytes((APDU_DATA_NOTIFICATION,))
        + (counter & 0xFFFFFFFF).to_bytes(4, "big")
        + b"\x00"  # no date-time
        + bytes((TAG_STRUCTURE, 2, TAG_OCTET_STRING, 6))
        + OBIS_ENERGY
        + bytes((TAG_DOUBLE_LONG_UNSIGNED,))
        + (energy_wh & 0xFFFFFFFF).to_bytes(4, "big")
    )


def get_request(counter: int, obis: bytes = OBIS_ENERGY, class_id: int = 3, attr: int = 2) -> bytes:
    """DLMS get-request normal; the invoke id is the low four bits of ``counter``."""
    return sim_dlms.get_request(counter, class_id, obis, attr)


def describe_apdu(data: bytes) -> str:
    """``common.dlms.describe`` of one whole APDU, else ''."""
    try:
        return describe(decode(data))
    except DlmsError:
        return ""


# --- output -------------------------------------------------------------------------------


def hexs(data: bytes, limit: int = PRINT_MAX) -> str:
    """Compact hex, cut after ``limit`` bytes with the number left out."""
    if len(data) <= limit:
        return data.hex()
    return f"{data[:limit].hex()}..(+{len(data) - limit})"


class Printer:
    """One line per event to stdout, flushed at once (supervisord captures it)."""

    def __init__(self, timestamps: bool = False) -> None:
        self.timestamps = timestamps

    def __call__(self, line: str) -> None:
        if self.timestamps:
            now = time.time()
            stamp = time.strftime("%H:%M:%S", time.localtime(now))
            line = f"{stamp}.{int(now % 1 * 1000):03d} {line}"
        print(line, flush=True)


def read_config(path: str | None) -> dict[str, Any] | None:
    """The meterlink config, or None when none is named and ``dev.json`` is absent.

    A file that is named (``--config`` or ``METERLINK_CONFIG``) must load; a bad one ends
    the process with status 2, as every service does.
    """
    if path is None and ENV_CONFIG not in os.environ and not os.path.exists(config_path()):
        return None
    return load_or_exit(path)


# --- the meter ----------------------------------------------------------------------------


#: Meter-side parameters the gateway may read (wire-format.md names them by number only),
#: as the A-XDR bytes this meter answers with.
METER_PARAMS: dict[int, bytes] = {
    params.PID_METER_2801: params.Value.char("SIM0000000001").to_bytes(),
    params.PID_METER_2802: params.Value.char("meterlink-sim").to_bytes(),
    params.PID_METER_2803: params.Value.u8(1).to_bytes(),
    params.PID_METER_2804: params.Value.u16(0x0100).to_bytes(),
    params.PID_METER_2805: params.Value.u32(0).to_bytes(),
    params.PID_METER_2806: params.Value.octets(b"\x00\x01").to_bytes(),
    params.PID_METER_2807: params.Value.u8(0).to_bytes(),
    params.PID_METER_280F: params.Value.char("1.0.0").to_bytes(),
    params.PID_METER_2860: params.Value.u16(0).to_bytes(),
    params.PID_METER_2861: params.Value.u16(0).to_bytes(),
}

EVENT_CODE_POWER = 0x0101


class LinkError(Exception):
    """The link path cannot be made (not a symlink, or its directory is unusable)."""


def check_link(link: str) -> None:
    """Refuse a ``link`` path that is something other than a symlink (a real
    device or file is never replaced); make its directory."""
    path = Path(link)
    if path.exists() and not path.is_symlink():
        raise LinkError(f"{link} exists and is not a symlink; not replacing it")
    path.parent.mkdir(parents=True, exist_ok=True)


class MeterSim:
    """The meter: a select loop over the pty master, a signal pipe and timers."""

    def __init__(self, args: argparse.Namespace, uart: dict[str, Any]) -> None:
        self.args = args
        self.say = Printer(args.timestamps)
        self.profile: str = args.profile or uart.get("profile", "quectel")
        self.max_info: int = uart.get("max_info", rfc1662.DEFAULT_MAX_INFO)
        self.accm: int = uart.get("accm", rfc1662.DEFAULT_ACCM)
        self.idle_gap = uart.get("idle_gap_ms", 20) / 1000.0
        self.link: str = args.link
        self.rng = random.Random(args.seed)
        self.deframer = rfc1662.Deframer(self.profile, self.max_info, self.accm)
        self.seen = self.deframer.counters()
        self.counters: Counter[str] = Counter()
        self.meter_params = dict(METER_PARAMS)
        self.txbuf = bytearray()
        self.last_rx = 0.0
        self.uplinks = 0
        self.energy_wh = 123_456
        self.model = MeterModel(lambda: self.energy_wh)
        self.downstream = ApduStream()
        self.last_info = -1  # length of the last 0x2100 info printed as a whole APDU
        self.rid = 0
        self.events = 0
        self.pending: dict[str, tuple[float, str]] = {}  # what -> (sent at, description)
        self.stop_reason = ""
        self.master = -1
        self.slave = -1
        self.slave_name = ""
        self.pty: MeterPty | None = None
        self.wake_r = -1

    # --- setup and teardown ---------------------------------------------------------------

    def open(self) -> None:
        # The shared pty double: raw, the slave kept open (so the master lives on
        # while the gateway closes and reopens the port), a non-blocking master (so
        # a gateway that does not read cannot stall the loop), linked atomically.
        check_link(self.link)
        self.pty = MeterPty(self.link)
        self.master, self.slave, self.slave_name = (
            self.pty.master,
            self.pty.slave,
            self.pty.slave_name,
        )
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.say(
            f"meter ready link={self.link} pty={self.slave_name} profile={self.profile} "
            f"interval={self.args.interval}"
        )

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_reason = signal.Signals(signum).name

    def close(self) -> None:
        try:
            if os.readlink(self.link) == self.slave_name:
                os.unlink(self.link)
        except OSError:
            pass
        if self.pty is not None:
            self.pty.link = None  # unlinked above, only if still ours
            self.pty.close()
        if self.wake_r >= 0:
            os.close(self.wake_r)
        stats = " ".join(f"{k}={v}" for k, v in sorted(self.counters.items()))
        self.say(f"meter stopped reason={self.stop_reason or 'done'} {stats}".rstrip())

    # --- the loop -------------------------------------------------------------------------

    def reader_open(self) -> bool:
        """True when another process has this pty's slave open (the gateway's uart)."""
        me = os.getpid()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                for fd in os.scandir(f"/proc/{entry.name}/fd"):
                    if os.readlink(fd.path) == self.slave_name:
                        return True
            except OSError:
                continue
        return False

    def wait_for_reader(self) -> None:
        """Send nothing until the gateway has opened the port.

        Opening a serial port flushes its input (pyserial's ``open()`` does),
        so frames written before the gateway opened it would be lost. Once a
        reader has held the port for ``READER_SETTLE_S`` its open is over.
        """
        limit = self.args.wait_reader
        if limit <= 0:
            return
        deadline = time.monotonic() + limit
        seen: float | None = None
        while not self.stop_reason and time.monotonic() < deadline:
            if self.reader_open():
                seen = seen or time.monotonic()
                if time.monotonic() - seen >= READER_SETTLE_S:
                    self.say("meter sees the gateway on the port; sending")
                    return
            else:
                seen = None
            select.select([self.wake_r], [], [], READER_POLL_S)
            self._drain_wakeup()
        if not self.stop_reason:
            self.say(f"meter: no reader on the port after {limit}s; sending anyway")

    def run(self) -> int:
        self.wait_for_reader()
        now = time.monotonic()
        a = self.args
        timers = {
            "uplink": (a.interval, self.send_uplink),
            "lqi": (a.lqi_interval, self.ask_lqi),
            "name": (a.name_interval, self.ask_name),
            "event": (a.event_interval, self.send_event),
        }
        due = {name: now for name, (every, _) in timers.items() if every > 0}
        while not self.stop_reason:
            now = time.monotonic()
            for name, at in list(due.items()):
                if now >= at:
                    every, fn = timers[name]
                    fn()
                    # Keep the period even if one pass ran late, but never burst to catch up.
                    due[name] = max(at + every, now)
            if a.count and self.uplinks >= a.count:
                due.pop("uplink", None)
                if not self.txbuf:
                    self.stop_reason = f"count={a.count}"
                    break
            self.check_pending(now)
            wait = min([MAX_POLL_S, *(at - now for at in due.values())])
            if self.deframer.pending:
                wait = min(wait, self.last_rx + self.idle_gap - now)
            wlist = [self.master] if self.txbuf else []
            readable, writable, _ = select.select(
                [self.master, self.wake_r], wlist, [], max(0.0, wait)
            )
            if self.wake_r in readable:
                self._drain_wakeup()
            if self.master in readable:
                self.read()
            elif self.deframer.pending and time.monotonic() - self.last_rx >= self.idle_gap:
                self.handle_frames(self.deframer.flush())
            if writable:
                self.write()
        return 0

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # --- bytes in and out -----------------------------------------------------------------

    def read(self) -> None:
        try:
            data = os.read(self.master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO only if every slave descriptor is closed, which this process prevents;
            # report and carry on rather than spin.
            self.counters["read_errors"] += 1
            self.say(f"meter read error err={exc.strerror or exc}")
            time.sleep(MAX_POLL_S / 5)
            return
        if not data:
            return
        self.last_rx = time.monotonic()
        self.counters["rx_bytes"] += len(data)
        self.handle_frames(self.deframer.feed(data))

    def write(self) -> None:
        if not self.txbuf:
            return
        try:
            n = os.write(self.master, self.txbuf)
        except BlockingIOError:
            return
        except OSError as exc:
            self.counters["write_errors"] += 1
            self.say(f"meter write error err={exc.strerror or exc} pending={len(self.txbuf)}")
            return
        del self.txbuf[:n]

    def send_raw(self, raw: bytes, line: str) -> bool:
        if len(self.txbuf) + len(raw) > TX_BUFFER_MAX:
            self.counters["tx_dropped"] += 1
            self.say(
                f"meter -> gw dropped reason=tx_full len={len(raw)} pending={len(self.txbuf)} "
                f"total={self.counters['tx_dropped']}"
            )
            return False
        self.txbuf += raw
        self.say(line)
        self.write()
        return True

    def send_frame(self, frame: rfc1662.Frame, what: str) -> bool:
        raw = rfc1662.encode(frame, self.profile, self.accm, self.max_info)
        line = f"meter -> gw 0x{frame.protocol:04X} {frame.cmd:02X} {what}"
        ok = self.send_raw(raw, line)
        if ok:
            self.counters["tx_frames"] += 1
        return ok

    def send_noise(self) -> None:
        if self.rng.random() < 0.5:
            noise = self.rng.randbytes(self.rng.randint(1, 12))
            kind = "random"
        else:
            whole = rfc1662.encode(
                rfc1662.Frame(rfc1662.PROTO_TRANSPARENT, rfc1662.CMD_SERIAL_NET, b"cut short")
            )
            noise = whole[: self.rng.randint(3, len(whole) - 1)]
            kind = "truncated-frame"
        self.counters["noise_bytes"] += len(noise)
        self.send_raw(noise, f"meter -> gw noise kind={kind} len={len(noise)} data={hexs(noise)}")

    # --- what the meter sends on its own --------------------------------------------------

    def send_uplink(self) -> None:
        if self.args.noise and self.rng.random() < NOISE_RATE:
            self.send_noise()
        n = self.uplinks + 1
        self.energy_wh += 7
        data = data_notification(n, self.energy_wh)
        frame = rfc1662.Frame(rfc1662.PROTO_TRANSPARENT, rfc1662.CMD_SERIAL_NET, data)
        # Counted whether or not it fit: --count is about frames the meter produced.
        self.uplinks = n
        self.send_frame(frame, f"len={len(data)} {describe_apdu(data)}")

    def next_rid(self) -> int:
        self.rid = self.rid % 0xFFFF + 1
        return self.rid

    def ask_lqi(self) -> None:
        msg = params.GetRequest(params.PID_LQI)
        if self.send_frame(msg.to_frame(), f"GET pid=0x{params.PID_LQI:04X} (lqi)"):
            self.pending.setdefault("lqi", (time.monotonic(), "GET 0x8003 (lqi)"))

    def ask_name(self) -> None:
        rid = self.next_rid()
        msg = params.GetRequest(params.PID_DEVICE_NAME, rid)
        if self.send_frame(msg.to_frame(), f"GET pid=0x{params.PID_DEVICE_NAME:04X} rid={rid}"):
            self.pending[f"rid{rid}"] = (time.monotonic(), f"GET 0x8007 rid={rid}")

    def send_event(self) -> None:
        self.events += 1
        data = EVENT_CODE_POWER.to_bytes(2, "big") + self.events.to_bytes(4, "big")
        msg = params.Event(data)
        if self.send_frame(msg.to_frame(), f"EVENT n={self.events} data={hexs(data)}"):
            self.pending.setdefault("event", (time.monotonic(), f"EVENT n={self.events}"))

    def check_pending(self, now: float) -> None:
        if self.downstream.pending and now - self.last_rx >= PARTIAL_IDLE_S:
            self.answer_pieces(rfc1662.PROTO_TRANSPARENT, self.downstream.flush())
        for key, (sent, what) in list(self.pending.items()):
            if now - sent > ANSWER_TIMEOUT_S:
                del self.pending[key]
                self.counters["unanswered"] += 1
                self.say(f"meter no answer to {what} after={ANSWER_TIMEOUT_S}s")

    # --- what the gateway sends -----------------------------------------------------------

    def handle_frames(self, raws: list[bytes]) -> None:
        for raw in raws:
            try:
                frame = rfc1662.decode(raw, self.profile, self.max_info, self.accm)
            except rfc1662.FrameError as exc:  # the deframer checked it; kept for safety
                self.counters["rx_bad"] += 1
                self.say(f"meter <- gw bad frame err={exc} data={hexs(raw)}")
                continue
            self.counters["rx_frames"] += 1
            try:
                self.handle(frame)
            except params.ParamError as exc:
                self.counters["rx_bad"] += 1
                self.say(
                    f"meter <- gw 0x{frame.protocol:04X} {frame.cmd:02X} bad info err={exc} "
                    f"info={hexs(frame.info)}"
                )
        now = self.deframer.counters()
        deltas = {k: now[k] - self.seen[k] for k in now if k != "frames" and now[k] != self.seen[k]}
        self.seen = now
        if deltas:
            self.say("meter <- gw dropped " + " ".join(f"{k}=+{v}" for k, v in deltas.items()))

    def handle(self, frame: rfc1662.Frame) -> None:
        proto, cmd, info = frame.protocol, frame.cmd, frame.info
        head = f"meter <- gw 0x{proto:04X} {cmd:02X}"
        if proto == rfc1662.PROTO_TRANSPARENT:
            what = describe_apdu(info)
            self.last_info = len(info) if what else -1
            self.say(f"{head} len={len(info)} {what or 'data=' + hexs(info)}")
            self.answer_downlink(frame)
            return
        if proto != rfc1662.PROTO_PARAMS:
            self.counters["rx_unknown"] += 1
            self.say(f"{head} unknown protocol len={len(info)} info={hexs(info)}")
            return
        if cmd == rfc1662.CMD_GET:
            get = params.MeterGet.from_info(info)
            self.say(f"{head} GET pid=0x{get.pid:04X} ({params.param_name(get.pid)})")
            self.answer_param(frame, get.pid, None)
        elif cmd == rfc1662.CMD_SET:
            put = params.MeterSet.from_info(info)
            self.say(
                f"{head} SET pid=0x{put.pid:04X} ({params.param_name(put.pid)}) "
                f"data={hexs(put.data)}"
            )
            self.answer_param(frame, put.pid, put.data)
        elif cmd == rfc1662.CMD_GET_RESP:
            self.say(f"{head} GET-response {self.read_answer(info)} info={hexs(info)}")
        elif cmd == rfc1662.CMD_GET_ERROR:
            err = params.GetError.from_info(info)
            self._answered(get_pid=err.pid)
            self.say(f"{head} GET-error pid=0x{err.pid:04X} ({params.param_name(err.pid)})")
        elif cmd == rfc1662.CMD_SET_RESP:
            resp = params.SetResponse.from_info(info)
            self.say(f"{head} SET-response pid=0x{resp.pid:04X} ok={resp.ok}")
        elif cmd == rfc1662.CMD_SERIAL_NET:
            params.EventAck.from_info(info)
            self.pending.pop("event", None)
            self.say(f"{head} EVENT-ack")
        else:
            self.counters["rx_unknown"] += 1
            self.say(f"{head} unexpected cmd info={hexs(info)}")

    def _answered(self, get_pid: int, rid: int | None = None) -> None:
        if rid is not None:
            self.pending.pop(f"rid{rid}", None)
        elif get_pid == params.PID_LQI:
            self.pending.pop("lqi", None)
        else:
            # A GET error carries no rid: clear the oldest typed GET for that pid.
            for key, (_, what) in sorted(self.pending.items(), key=lambda kv: kv[1][0]):
                if key.startswith("rid") and f"0x{get_pid:04X}" in what:
                    del self.pending[key]
                    break

    def read_answer(self, info: bytes) -> str:
        """Describe a C4 answer to one of this meter's GETs."""
        pid = info[0] | (info[1] << 8) if len(info) >= 2 else -1
        if pid == params.PID_LQI:
            resp = params.GetResponse.from_info(info)
            self._answered(pid)
            if len(resp.data) == 1:
                return f"LQI={resp.data[0]}"
            return f"LQI data={resp.data.hex()}"
        try:
            typed = params.TypedGetResponse.from_info(info)
        except params.ParamError:
            plain = params.GetResponse.from_info(info)
            self._answered(plain.pid)
            return f"pid=0x{plain.pid:04X} data={hexs(plain.data)}"
        self._answered(typed.pid, typed.rid)
        value = typed.value
        shown = f"{value.text!r}" if isinstance(value.value, bytes) else str(value.value)
        return f"{params.param_name(typed.pid)}={shown} pid=0x{typed.pid:04X} rid={typed.rid}"

    def answer_param(self, request: rfc1662.Frame, pid: int, new: bytes | None) -> None:
        if pid not in self.meter_params or (new is not None and len(new) > 0xFF):
            self.send_frame(
                params.get_error(request, pid), f"GET-error pid=0x{pid:04X} (unknown to meter)"
            )
            return
        if new is not None:
            self.meter_params[pid] = new
        data = self.meter_params[pid]
        answer = params.reply(request, params.MeterGetResponse(pid, data))
        self.send_frame(answer, f"GET-response pid=0x{pid:04X} plen={len(data)} data={data.hex()}")

    def answer_downlink(self, request: rfc1662.Frame) -> None:
        if self.args.answer == "echo":
            self.send_answers(request.protocol, [request.info])
            return
        # An APDU longer than UART.max_info comes in several frames, and TCP may have
        # merged several APDUs into one: the stream puts them back together.
        self.answer_pieces(request.protocol, self.downstream.feed(request.info))

    def answer_pieces(self, protocol: int, pieces: list[Piece]) -> None:
        for piece in pieces:
            if piece.apdu is None:
                self.counters["rx_not_dlms"] += 1
                self.say(
                    f"meter <- gw not an APDU ({piece.error}) len={len(piece.data)} "
                    f"data={hexs(piece.data)}"
                )
                self.send_answers(protocol, [MeterModel.exception()])
                continue
            if len(piece.data) != self.last_info:  # not already printed whole
                self.say(f"meter <- gw APDU len={len(piece.data)} {describe(piece.apdu)}")
            self.send_answers(protocol, self.model.answer(piece.data, self.max_info))

    def send_answers(self, protocol: int, answers: list[bytes]) -> None:
        for answer in answers:
            self.counters["answers"] += 1
            for start in range(0, len(answer), self.max_info):
                chunk = answer[start : start + self.max_info]
                frame = rfc1662.Frame(protocol, rfc1662.CMD_SERIAL_NET, chunk)
                what = describe_apdu(chunk) or f"data={hexs(chunk)}"
                self.send_frame(frame, f"len={len(chunk)} {what}")


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m services.sim.meter",
        description=(
            "A simulated meter on a pseudo-terminal linked at UART.port: sends DLMS "
            "data-notifications (0x2100), asks the gateway for LQI and its name, sends "
            "events (0x2200), answers HES requests and the gateway's parameter reads. "
            "Every frame is printed on one line. An interval of 0 turns that timer off."
        ),
    )
    p.add_argument("--config", help="config file (default: $METERLINK_CONFIG or dev.json)")
    p.add_argument("--link", help="where to link the pty (default: config UART.port)")
    p.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds between uplinks"
    )
    p.add_argument("--count", type=int, default=0, help="stop after N uplink data frames")
    p.add_argument(
        "--wait-reader",
        type=float,
        default=0.0,
        help="send nothing until the gateway has the port open, up to SECONDS "
        "(0, the default: do not wait; the supervised simulator waits 30)",
    )
    p.add_argument(
        "--lqi-interval",
        type=float,
        default=DEFAULT_LQI_INTERVAL_S,
        help="seconds between LQI GETs",
    )
    p.add_argument(
        "--name-interval",
        type=float,
        default=DEFAULT_NAME_INTERVAL_S,
        help="seconds between device-name GETs",
    )
    p.add_argument(
        "--event-interval",
        type=float,
        default=DEFAULT_EVENT_INTERVAL_S,
        help="seconds between EVENTs",
    )
    p.add_argument("--noise", action="store_true", help="put line noise before some uplinks")
    p.add_argument("--seed", type=int, default=None, help="random seed for --noise")
    p.add_argument(
        "--answer",
        choices=("dlms", "echo"),
        default="dlms",
        help="how to answer HES data: DLMS GET response (default) or echo it back",
    )
    p.add_argument("--profile", choices=rfc1662.PROFILES, help="frame profile (default: config)")
    p.add_argument("--timestamps", action="store_true", help="prefix each line with the time")
    args = p.parse_args(argv)
    for name in ("interval", "lqi_interval", "name_interval", "event_interval"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.count < 0:
        p.error("--count must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = read_config(args.config)
    uart: dict[str, Any] = dict(config["UART"]) if config else {}
    if args.link is None:
        port = uart.get("port")
        if not port:
            print(
                "meter_sim: no link path: give --link or a config with UART.port", file=sys.stderr
            )
            return 2
        if "://" in port:
            print(
                f"meter_sim: UART.port {port!r} is a URL, not a path to link; give --link",
                file=sys.stderr,
            )
            return 2
        args.link = port
    sim = MeterSim(args, uart)
    try:
        sim.open()
    except (LinkError, OSError) as exc:
        print(f"meter_sim: cannot set up link={args.link}: {exc}", file=sys.stderr)
        return 2
    try:
        return sim.run()
    finally:
        sim.close()


if __name__ == "__main__":
    sys.exit(main())

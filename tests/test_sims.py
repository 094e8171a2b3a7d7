"""The meter and HES simulators as real processes: a real pty, real TCP on 127.0.0.1.

The test plays the gateway: it opens the meter simulator's pty link and deframes what
comes out, and connects to the HES simulator's port. Every wait has a deadline.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import time
import tty
from collections.abc import Callable
from pathlib import Path

import pytest
import serial

from common import params, rfc1662
from common.dlms import wrapper
from services.sim import dlms as sim_dlms
from services.sim.dlms import OBIS_CLOCK, ApduStream, MeterModel
from services.sim.meter import data_notification, describe_apdu, get_request
from tests.conftest import Proc, Stack, wait_for

FAST_METER = ("--interval", "0.1", "--lqi-interval", "0", "--name-interval", "0")
QUIET = ("--event-interval", "0")

Pred = Callable[[rfc1662.Frame], bool]
ASK_TRIES = 5
ASK_WAIT_S = 1.0


class GatewaySide:
    """The gateway's end of the meter pty: raw bytes in, whole frames out."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.deframer = rfc1662.Deframer()
        self.backlog: list[rfc1662.Frame] = []

    def close(self) -> None:
        os.close(self.fd)

    def write(self, frame: rfc1662.Frame, timeout: float = 5.0) -> None:
        # A pty write may be refused for a moment while the kernel moves earlier bytes on.
        raw = rfc1662.encode(frame)
        deadline = time.monotonic() + timeout
        while raw:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"pty not writable within {timeout}s")
            if select.select([], [self.fd], [], left)[1]:
                try:
                    raw = raw[os.write(self.fd, raw) :]
                except BlockingIOError:
                    time.sleep(0.001)  # writable said yes, the line discipline said not yet

    def _read(self, timeout: float) -> None:
        if select.select([self.fd], [], [], max(0.0, timeout))[0]:
            try:
                raws = self.deframer.feed(os.read(self.fd, 4096))
            except BlockingIOError:
                return
        else:
            raws = self.deframer.flush()
        self.backlog.extend(rfc1662.decode(r) for r in raws)

    def expect(self, pred: Pred, timeout: float = 5.0, what: str = "frame") -> rfc1662.Frame:
        """The first frame (seen before or arriving) that matches; it leaves the backlog."""
        deadline = time.monotonic() + timeout
        while True:
            for i, frame in enumerate(self.backlog):
                if pred(frame):
                    return self.backlog.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout}s; saw {self.backlog[-5:]}")
            self._read(min(left, 0.2))


def ask(gw: GatewaySide, request: rfc1662.Frame, pred: Pred, what: str) -> rfc1662.Frame:
    """Write a request and wait for the answer, asking again after a second, as a gateway
    would; the same stray reader as in ``increasing`` may take an answer now and then."""
    for _ in range(ASK_TRIES - 1):
        gw.write(request)
        try:
            return gw.expect(pred, timeout=ASK_WAIT_S, what=what)
        except AssertionError:
            continue
    gw.write(request)
    return gw.expect(pred, timeout=ASK_WAIT_S, what=what)


def increasing(ids: list[int]) -> bool:
    """Strictly increasing uplink counters.

    Not required to be consecutive: where other test sessions share the machine, a
    process of theirs retrying a stale link to a /dev/pts number that this test's pty
    has reused can read some of its bytes. Nothing on the line is reordered, though.
    """
    return all(a < b for a, b in zip(ids, ids[1:], strict=False))


def is_uplink(f: rfc1662.Frame) -> bool:
    return f.protocol == rfc1662.PROTO_TRANSPARENT and f.info[:1] == b"\x0f"


def uplink_id(f: rfc1662.Frame) -> int:
    return int.from_bytes(f.info[1:5], "big")


def is_get(pid: int) -> Pred:
    return lambda f: (
        f.protocol == rfc1662.PROTO_PARAMS
        and f.cmd == rfc1662.CMD_GET
        and f.info[:2] == pid.to_bytes(2, "little")
    )


def is_c4(pid: int) -> Pred:
    return lambda f: f.cmd == rfc1662.CMD_GET_RESP and f.info[:2] == pid.to_bytes(2, "little")


def start_meter(stack: Stack, *args: str) -> Proc:
    proc = stack.start("services.sim.meter", *args)
    proc.wait_log("meter ready", timeout=10)
    return proc


@pytest.fixture
def link(run_dir: Path) -> Path:
    return run_dir / "meter.tty"  # UART.port in base_config


def test_meter_uplinks_in_order_lqi_get_and_hes_request_answered(stack, link):
    meter = start_meter(
        stack, "--interval", "0.1", "--lqi-interval", "0.3", "--name-interval", "0", *QUIET
    )
    assert link.is_symlink()
    gw = GatewaySide(link)
    try:
        ids = [uplink_id(gw.expect(is_uplink, what="uplink")) for _ in range(4)]
        assert increasing(ids), ids

        lqi_get = gw.expect(is_get(params.PID_LQI), what="GET 0x8003")
        assert lqi_get.info == b"\x03\x80"
        gw.write(params.get_response(lqi_get, params.PID_LQI, b"\x19"))
        meter.wait_log("meter <- gw 0x2200 C4 GET-response LQI=25", timeout=5)

        request = get_request(7)
        answer = ask(
            gw,
            rfc1662.Frame(rfc1662.PROTO_TRANSPARENT, rfc1662.CMD_SERIAL_NET, request),
            lambda f: f.protocol == rfc1662.PROTO_TRANSPARENT and f.info[:2] == b"\xc4\x01",
            "GET response",
        )
        assert answer.cmd == rfc1662.CMD_SERIAL_NET
        assert answer.info[2] == request[2]  # the invoke id is echoed
        assert answer.info[3:5] == b"\x00\x06"  # success, double-long-unsigned
        meter.wait_log("get-request normal iid=7 class=3 1.0.1.8.0.255 attr=2", timeout=5)

        clock = get_request(8, OBIS_CLOCK, class_id=8)
        answer = ask(
            gw,
            rfc1662.Frame(rfc1662.PROTO_TRANSPARENT, rfc1662.CMD_SERIAL_NET, clock),
            lambda f: f.info[:3] == b"\xc4\x01\xc8",
            "clock response",
        )
        assert answer.info[3:6] == b"\x00\x09\x0c" and len(answer.info) == 18

        # Uplinks went on meanwhile, still in order.
        later = uplink_id(gw.expect(is_uplink, what="uplink"))
        assert later > ids[-1]
    finally:
        gw.close()
    assert meter.alive()


def test_meter_name_event_and_meter_parameters(stack, link):
    meter = start_meter(
        stack,
        "--interval",
        "0",
        "--lqi-interval",
        "0",
        "--name-interval",
        "0.3",
        "--event-interval",
        "0.3",
    )
    gw = GatewaySide(link)
    try:
        name_get = gw.expect(is_get(params.PID_DEVICE_NAME), what="GET 0x8007")
        req = params.GetRequest.from_info(name_get.info)
        assert req.rid is not None
        gw.write(
            params.typed_get_response(
                name_get, params.PID_DEVICE_NAME, req.rid, params.Value.char("gw-test")
            )
        )
        meter.wait_log(f"device_name='gw-test' pid=0x8007 rid={req.rid}", timeout=5)

        event = gw.expect(
            lambda f: f.protocol == rfc1662.PROTO_PARAMS and f.cmd == rfc1662.CMD_EVENT,
            what="EVENT",
        )
        gw.write(params.event_ack(event))
        meter.wait_log("meter <- gw 0x2200 BF EVENT-ack", timeout=5)

        # The gateway reads and writes the meter's own parameters.
        got = params.MeterGetResponse.from_info(
            ask(gw, params.meter_get(params.PID_METER_2801), is_c4(0x2801), "C4 0x2801").info
        )
        assert got.pid == params.PID_METER_2801
        value, rest = params.Value.parse(got.data)
        assert value.tag == params.TAG_CHAR and not rest

        set_5 = params.meter_set(params.PID_METER_2803, params.Value.u8(5))
        got = params.MeterGetResponse.from_info(ask(gw, set_5, is_c4(0x2803), "C4 0x2803").info)
        assert (got.pid, got.data) == (params.PID_METER_2803, b"\x11\x05")
        got = params.MeterGetResponse.from_info(
            ask(gw, params.meter_get(0x2803), is_c4(0x2803), "C4 0x2803 again").info
        )
        assert got.data == b"\x11\x05"

        err = ask(gw, params.meter_get(0x1234), lambda f: f.cmd == rfc1662.CMD_GET_ERROR, "C8")
        assert params.GetError.from_info(err.info).pid == 0x1234
    finally:
        gw.close()
    meter.wait_log("meter <- gw 0x2200 C1 SET pid=0x2803", timeout=5)


def test_meter_noise_is_recovered_and_port_reopens(stack, link):
    meter = start_meter(stack, *FAST_METER, *QUIET, "--noise", "--seed", "3", "--interval", "0.03")
    gw = GatewaySide(link)
    try:
        ids = [uplink_id(gw.expect(is_uplink, what="uplink")) for _ in range(30)]
        assert increasing(ids), ids
        assert gw.deframer.garbage_bytes > 0
        assert "meter -> gw noise" in meter.text()
    finally:
        gw.close()

    # The gateway goes away and comes back, through pyserial as the uart service opens
    # it: the meter is still there, still counting.
    port = serial.serial_for_url(str(link), timeout=0.1)
    try:
        deframer = rfc1662.Deframer()
        after: list[int] = []
        deadline = time.monotonic() + 10
        while len(after) < 3 and time.monotonic() < deadline:
            for raw in deframer.feed(port.read(4096)):
                frame = rfc1662.decode(raw)
                if is_uplink(frame):
                    after.append(uplink_id(frame))
        assert len(after) >= 3 and increasing([ids[-1], *after]), (ids[-1], after)
    finally:
        port.close()
    assert meter.alive()


def test_meter_count_stops_and_sigterm_removes_link(stack, link):
    os.symlink("/nonexistent-old-pty", link)  # a stale link from an earlier run
    meter = start_meter(stack, *FAST_METER, *QUIET, "--count", "3", "--interval", "0.05")
    assert os.readlink(link).startswith("/dev/pts/")
    assert meter.popen.wait(5) == 0
    assert meter.text().count("data-notification id=") == 3
    assert "reason=count=3" in meter.text()
    assert not link.exists() and not link.is_symlink()

    meter = start_meter(stack, *FAST_METER, *QUIET)
    t0 = time.monotonic()
    meter.popen.send_signal(signal.SIGTERM)
    assert meter.popen.wait(1.0) == 0
    assert time.monotonic() - t0 < 1.0
    assert "meter stopped reason=SIGTERM" in meter.text()
    assert not link.is_symlink()


def test_meter_refuses_to_replace_a_regular_file(stack, link):
    link.write_text("not a tty")
    proc = stack.start("services.sim.meter", *FAST_METER, *QUIET)
    assert proc.popen.wait(10) == 2
    assert "not a symlink" in proc.text()
    assert link.read_text() == "not a tty"


# --- HES simulator ---------------------------------------------------------------------------


def start_hes(stack: Stack, *args: str) -> tuple[Proc, int]:
    proc = stack.start("services.sim.hes", "--host", "127.0.0.1", "--port", "0", *args)
    m = wait_for(
        lambda: re.search(r"hes listening host=127\.0\.0\.1 port=(\d+)", proc.text()),
        10,
        "hes listening line",
    )
    return proc, int(m.group(1))


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.settimeout(3)
    return sock


def recv_until(sock: socket.socket, pred: Callable[[bytes], bool], timeout: float = 5) -> bytes:
    deadline = time.monotonic() + timeout
    buf = b""
    while not pred(buf):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout}s; got {buf!r}")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed; got {buf!r}")
        buf += chunk
    return buf


def wait_closed(sock: socket.socket, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(4096):
                return
        except ConnectionResetError:
            return
        except TimeoutError:
            raise AssertionError(f"connection not closed within {timeout}s") from None


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


class MeterOverTcp:
    """The gateway and the meter at once, as the HES sees them: ``MeterModel``
    answering over a TCP connection, raw or wrapped."""

    def __init__(self, sock: socket.socket, framing: str) -> None:
        self.sock = sock
        self.framing = framing
        self.model = MeterModel(lambda: 123_456)
        self.stream = ApduStream()
        self.unwrapper = wrapper.Unwrapper()
        self.requests: list[str] = []

    def send(self, *apdus: bytes) -> None:
        """One write, however many APDUs."""
        if self.framing == "wrapper":
            apdus = tuple(wrapper.wrap(a, 1, 16) for a in apdus)
        self.sock.sendall(b"".join(apdus))

    def serve_until(self, pred: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s; requests {self.requests}")
            self.sock.settimeout(min(left, 0.2))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            if not data:
                raise AssertionError(f"closed by the HES; requests {self.requests}")
            if self.framing == "wrapper":
                apdus = [p.apdu for p in self.unwrapper.feed(data)]
            else:
                apdus = [p.data for p in self.stream.feed(data)]
            for apdu in apdus:
                self.requests.append(sim_dlms.text(apdu))
                self.send(*self.model.answer(apdu, 1024))


@pytest.mark.parametrize("framing", ["raw", "wrapper"])
def test_hes_runs_a_dlms_session_and_prints_what_arrives(stack, framing):
    hes, port = start_hes(stack, "--request-interval", "30", "--framing", framing)
    sock = connect(port)
    meter = MeterOverTcp(sock, framing)
    try:
        hes.wait_log("hes gw#1 connected", timeout=5)
        if framing == "raw":
            sock.sendall(b"hello meter \x00\x7e")
            hes.wait_log(
                "n=1 len=14 not DLMS (BadTag) data=68656c6c6f206d6574657220007e "
                "text='hello meter .~'",
                5,
            )
        else:
            sock.sendall(wrapper.wrap(b"hello meter \x00\x7e", 1, 16))
            hes.wait_log("n=1 len=14 not DLMS (BadTag) data=68656c6c6f206d6574657220007e", 5)
        # Two notifications in one write: two APDUs.
        meter.send(data_notification(1, 1000), data_notification(2, 1007))
        hes.wait_log("hes <- gw#1 n=3 len=21 data-notification id=0x00000002", 5)

        # The session: association, four reads (one in blocks), release.
        meter.serve_until(lambda: "dlms session complete" in hes.text())
    finally:
        sock.close()
    assert meter.requests[0].startswith("aarq context=LN user-info: initiate-request dlms=6")
    gets = [r for r in meter.requests if r.startswith("get-request normal")]
    assert [g.split(" ", 3)[3] for g in gets] == [
        "class=8 0.0.1.0.0.255 attr=2",
        "class=3 1.0.1.8.0.255 attr=2",
        "class=3 1.0.1.8.0.255 attr=3",
        "class=7 1.0.99.1.0.255 attr=2",
    ]
    nexts = [r for r in meter.requests if r.startswith("get-request next")]
    assert len(nexts) >= 3 and meter.requests[-1] == "rlrq reason=0"
    text = hes.text()
    assert f"dlms session complete reads=4 blocks={len(nexts) + 1} profile_entries=96" in text
    assert "hes -> gw#1 len=" in text and "aare accepted" in text and "rlre reason=0" in text
    assert "get-response with-datablock" in text and "ok double-long-unsigned 123456" in text
    hes.wait_log("hes gw#1 closed reason=peer_closed", timeout=5)
    t0 = time.monotonic()
    hes.popen.send_signal(signal.SIGTERM)
    assert hes.popen.wait(1.0) == 0
    assert time.monotonic() - t0 < 1.0
    assert "hes stopped reason=SIGTERM" in hes.text()


def test_hes_session_without_answers_times_out_and_starts_again(stack):
    hes, port = start_hes(stack, "--request-interval", "0.2", "--step-timeout", "0.3")
    sock = connect(port)
    try:
        aarqs = recv_until(sock, lambda b: b.count(sim_dlms.aarq(512)) >= 2)
        assert aarqs.startswith(sim_dlms.aarq(512))
    finally:
        sock.close()
    hes.wait_log("hes gw#1 dlms session failed step=aare reason=timeout after=0.3s", timeout=5)


def test_hes_sigusr1_drops_link_and_refuses_for_down_for(stack):
    down_for = 1.5
    hes, port = start_hes(stack, "--request-interval", "0", "--down-for", str(down_for))
    sock = connect(port)
    try:
        hes.wait_log("hes gw#1 connected", timeout=5)
        t0 = time.monotonic()
        hes.popen.send_signal(signal.SIGUSR1)
        wait_closed(sock)
    finally:
        sock.close()
    assert refused(port)
    wait_for(lambda: not refused(port), down_for + 3, "the HES to accept again")
    elapsed = time.monotonic() - t0
    assert elapsed >= down_for - 0.1, elapsed
    hes.wait_log(f"hes down reason=sigusr1 for={down_for}s dropped=1 port={port}", timeout=5)
    assert hes.text().count(f"hes listening host=127.0.0.1 port={port}") == 2

    sock = connect(port)
    try:
        sock.sendall(b"after")
        hes.wait_log("len=5 not DLMS (Truncated) data=6166746572 text='after'", timeout=5)
    finally:
        sock.close()


def test_hes_echo_and_drop_every(stack):
    hes, port = start_hes(
        stack, "--echo", "--request-interval", "0", "--drop-every", "1", "--down-for", "0.5"
    )
    sock = connect(port)
    try:
        payload = bytes(range(256)) * 4
        sock.sendall(payload)
        assert recv_until(sock, lambda b: len(b) >= len(payload)) == payload
        wait_closed(sock, timeout=3)
    finally:
        sock.close()
    hes.wait_log("hes down reason=drop_every for=0.5s dropped=1", timeout=5)
    wait_for(lambda: not refused(port), 3, "the HES to accept again")
    sock = connect(port)
    try:
        sock.sendall(b"again")
        assert recv_until(sock, lambda b: len(b) >= 5) == b"again"
    finally:
        sock.close()


def test_apdu_readings_used_in_the_printed_lines():
    note = data_notification(3, 1000)
    assert note.hex() == "0f0000000300020209060100010800ff06000003e8"
    assert describe_apdu(note) == (
        "data-notification id=0x00000003 structure(2) [octet-string 0100010800ff "
        "double-long-unsigned 1000]"
    )
    assert get_request(17).hex() == "c001c100030100010800ff0200"
    assert describe_apdu(bytes.fromhex("c401c100060001e247")) == (
        "get-response normal iid=1 ok double-long-unsigned 123463"
    )
    assert describe_apdu(b"hello") == "" and describe_apdu(note + note) == ""


def test_meter_model_block_transfer_and_errors():
    model = MeterModel(lambda: 500, clock=lambda: 1_700_000_000.0)
    aare = model.answer(sim_dlms.aarq(256), 1024)
    assert describe_apdu(aare[0]).startswith("aare accepted")
    assert model.client_max_pdu == 256
    first = model.answer(get_request(4, sim_dlms.OBIS_PROFILE, class_id=7), 1024)[0]
    assert describe_apdu(first).startswith("get-response with-datablock iid=4 block=1 last=0")
    assert len(first) <= 256
    # Asking for a block other than the next ends the long get.
    bad = model.answer(sim_dlms.get_next(4, 5), 1024)[0]
    assert describe_apdu(bad).endswith("error data-block-number-invalid")
    assert describe_apdu(model.answer(get_request(5, b"\x00" * 6), 1024)[0]).endswith(
        "error object-undefined"
    )
    assert describe_apdu(model.answer(get_request(6, OBIS_CLOCK, class_id=3), 1024)[0]).endswith(
        "error object-class-inconsistent"
    )
    assert model.answer(b"\xff\x00", 1024) == [MeterModel.exception()]
    assert describe_apdu(model.answer(sim_dlms.rlrq(), 1024)[0]) == "rlre reason=0"

"""The uart service against a meter on a real pseudo-terminal.

The first tests (settings, opening, write_some) and the last (the port in a
uart's loop, driven in this process) aside, the tests run real processes: the
broker, a resolver worker (whose built-in 0x2100 handler forwards the info
bytes to ``client``) and ``services.uart``, configured with ``UART.port`` = a
symlink in the run directory that points at the slave of a pty the test holds
(services.sim.meter_pty).
The probe plays the client (it receives what the pool releases for it) and
sends ``write`` to uart as the client would.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import serial

from common import bus, config, rfc1662
from services import uart as uart_mod
from services.sim.meter_pty import MeterPty
from services.uart import (
    OUTCOME_CANCELLED,
    OUTCOME_TIMEOUT,
    Uart,
    is_url,
    open_port,
    serial_settings,
    write_some,
)
from tests.conftest import Probe, Stack, base_config, shared_dir, wait_for

# Longer than any pause between the test's own writes, so that only a real
# idle line (the end of a burst) makes uart flush a partial frame.
TEST_IDLE_GAP_MS = 150
FAST_REOPEN = {"reopen_min_s": 0.05, "reopen_max_s": 0.4}


def vectors() -> dict[str, Any]:
    return json.loads((shared_dir() / "vectors" / "frames.json").read_text())


def payload_frame(info: bytes) -> bytes:
    return rfc1662.encode(rfc1662.Frame(rfc1662.PROTO_TRANSPARENT, rfc1662.CMD_SERIAL_NET, info))


def forwarded(raw_frames: list[bytes]) -> list[bytes]:
    """What the built-in 0x2100 handler sends to the client for these frames."""
    out = []
    for raw in raw_frames:
        frame = rfc1662.decode(raw)
        if frame.protocol == rfc1662.PROTO_TRANSPARENT and frame.info:
            out.append(frame.info)
    return out


def collect(sock: Any, want: int, timeout: float, settle: float = 0.2) -> list[bytes]:
    """Payloads sent to the client: ``want`` of them, then anything in ``settle``."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        if sock.poll(100):
            env = bus.decode(sock.recv_multipart()[-1])
            assert env.op == bus.OP_SEND
            got.extend(env.data)
    end = time.monotonic() + settle
    while (left := end - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            got.extend(bus.decode(sock.recv_multipart()[-1]).data)
    return got


def uart_entry(registry: dict[str, Any]) -> dict[str, Any] | None:
    for entry in registry.get("services", []):
        if entry.get("name") == bus.UART:
            return entry
    return None


@pytest.fixture
def link(run_dir: Path) -> Path:
    return run_dir / "meter.tty"


@pytest.fixture
def meter(link: Path):
    m = MeterPty(link)
    yield m
    m.close()


def start(stack: Stack, run_dir: Path, resolver: bool = True, **uart: Any):
    stack.write_config(base_config(run_dir, UART={"idle_gap_ms": TEST_IDLE_GAP_MS, **uart}))
    broker = stack.start("services.broker")
    if resolver:
        worker = stack.start("services.resolver")
        broker.wait_log(f"worker up ident=resolver-{worker.pid}-", timeout=15)
    return broker, stack.start("services.uart")


# -- in-process: settings and opening ------------------------------------------------


def test_serial_settings_map_reference_values_and_letters():
    base = {"baudrate": 9600}
    s = serial_settings(base)
    assert (s["bytesize"], s["parity"], s["stopbits"], s["rtscts"]) == (
        serial.EIGHTBITS,
        serial.PARITY_NONE,
        serial.STOPBITS_ONE,
        False,
    )
    for value, letter in [(0, "N"), (1, "E"), (2, "O"), (3, "M"), (4, "S")]:
        assert serial_settings({**base, "parity": value})["parity"] == letter
        assert serial_settings({**base, "parity": letter})["parity"] == letter
    for size in (5, 6, 7, 8):
        assert serial_settings({**base, "bytesize": size})["bytesize"] == size
    assert serial_settings({**base, "stopbits": 1.5})["stopbits"] == serial.STOPBITS_ONE_POINT_FIVE
    assert serial_settings({**base, "stopbits": 2})["stopbits"] == serial.STOPBITS_TWO
    assert serial_settings({**base, "flowctl": 1})["rtscts"] is True
    assert serial_settings(base)["xonxoff"] is False  # frames are binary
    for key, bad in [
        ("parity", 5),
        ("parity", "X"),
        ("parity", True),
        ("bytesize", 9),
        ("stopbits", 3),
        ("flowctl", 2),
        ("baudrate", 0),
    ]:
        with pytest.raises(ValueError, match=f"UART.{key}"):
            serial_settings({**base, key: bad})
    assert is_url("socket://127.0.0.1:1") and is_url("loop://") and not is_url("/dev/ttyUSB0")


def test_open_port_on_a_pty_and_rs485_fallback(link: Path, meter: MeterPty, caplog):
    settings = {**serial_settings({"baudrate": 115200, "parity": "E"}), "timeout": 0.05}
    port, state = open_port(str(link), settings, rs485=False)
    try:
        assert state == "off" and port.parity == serial.PARITY_EVEN
    finally:
        port.close()
    # A pty has no RS-485 mode: a clear warning, and the port opens without it.
    # (A fresh pty: Linux refuses to set a pty's termios again once parity was on.)
    meter.replug()
    settings = {**serial_settings({"baudrate": 115200}), "timeout": 0.05}
    port, state = open_port(str(link), settings, rs485=True)
    try:
        assert state == "unsupported"
        assert "rs485 not supported" in caplog.text
        port.write(b"\x7e\x00\x7e")
        assert meter.read_exactly(3, timeout=5) == b"\x7e\x00\x7e"
    finally:
        port.close()
    # loop:// through the same function: a URL works as a path does.
    port, _ = open_port("loop://", settings, rs485=False)
    try:
        port.write(b"abc")
        assert port.read(3) == b"abc"
    finally:
        port.close()


def test_write_some_reports_exactly_what_a_stalled_or_dead_line_took(link: Path, meter: MeterPty):
    # The meter reads nothing: the pty fills, and a write stops part-way.
    settings = {**serial_settings({"baudrate": 115200}), "timeout": 0.05}
    port, _ = open_port(str(link), settings, rs485=False)
    try:
        data = random.Random(5).randbytes(200_000)
        n, outcome = write_some(port, memoryview(data), timeout=0.2)
        assert outcome == OUTCOME_TIMEOUT and 0 < n < len(data)
        assert meter.read_exactly(n, timeout=5) == data[:n]  # exactly n went out
        # Resuming at byte n continues the stream with nothing repeated.
        m, outcome = write_some(port, memoryview(data)[n:], timeout=0.2)
        assert outcome == OUTCOME_TIMEOUT and m > 0
        assert meter.read_exactly(m, timeout=5) == data[n : n + m]
        # cancel_write (the port thread closing the port) ends a stalled write.
        sent, outcome = write_some(port, memoryview(data)[n + m :], timeout=0.2)
        assert outcome == OUTCOME_TIMEOUT
        port.cancel_write()
        began = time.monotonic()
        k, outcome = write_some(port, memoryview(data)[n + m + sent :], timeout=5)
        assert outcome == OUTCOME_CANCELLED and k == 0
        assert time.monotonic() - began < 1
        # The meter goes away: the write fails with an I/O error, not a count.
        meter.vanish()
        with pytest.raises(OSError):
            write_some(port, memoryview(data), timeout=5)
    finally:
        port.close()
    # A URL port goes through pyserial's write.
    port, _ = open_port("loop://", settings, rs485=False)
    try:
        assert write_some(port, memoryview(b"abc"), timeout=1) == (3, "")
        assert port.read(3) == b"abc"
    finally:
        port.close()


# -- real processes ----------------------------------------------------------------------


def test_uplink_noise_and_split_writes_arrive_exact_and_in_order(
    stack: Stack, probe: Probe, run_dir: Path, meter: MeterPty
):
    sink = probe.inbox(bus.CLIENT)
    registry = probe.subscriber(bus.T_REGISTRY)
    _broker, uart = start(stack, run_dir)
    uart.wait_log("serial open port=", timeout=15)

    # 1. The noisy stream from the shared vectors, chunk by chunk as given. Its
    # last frames only come out when the line goes idle (the stale-partial rule).
    noisy = vectors()["streams"][0]
    assert noisy["flush_at_end"]
    noisy_frames = [bytes.fromhex(f) for f in noisy["frames"]]
    for chunk in noisy["chunks"]:
        meter.write(bytes.fromhex(chunk))
    want = forwarded(noisy_frames)
    assert collect(sink, len(want), timeout=15) == want

    # 2. Numbered frames with garbage between them: the first third written one
    # byte at a time, the next in random pieces, the rest in one write.
    rng = random.Random(7)
    seq_frames = [
        payload_frame(b"seq%04d" % i + bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
        + bytes(rng.choice(b"\x00\x7e\xff\x03\x21\x55") for _ in range(rng.randrange(4)))
        for i in range(60)
    ]
    stream = b"".join(seq_frames)
    third = len(b"".join(seq_frames[:20]))
    meter.write(stream[:third], chunk=1)
    rest = stream[third:]
    pos = 0
    while pos < len(rest) // 2:
        n = rng.randrange(1, 50)
        meter.write(rest[pos : pos + n])
        pos += n
    meter.write(rest[pos:])
    want_seq = [b"seq%04d" % i for i in range(60)]
    got = collect(sink, 60, timeout=15)
    assert [p[:7] for p in got] == want_seq
    assert got == forwarded([rfc1662.Deframer().feed(f)[0] for f in seq_frames])

    # The counters tell the same story as a deframer fed the same bytes.
    ref = rfc1662.Deframer()
    ref.feed(b"".join(bytes.fromhex(c) for c in noisy["chunks"]))
    ref.flush()
    ref.feed(stream)
    ref.flush()
    total = len(noisy_frames) + 60
    entry = probe.wait_event(
        registry,
        bus.T_REGISTRY,
        lambda d: (e := uart_entry(d)) is not None and e["counters"].get("frames_in") == total,
        timeout=10,
    )
    entry = uart_entry(entry)
    assert entry is not None and entry["open"] is True and entry["port"] == str(meter.link)
    for name in ("garbage_bytes", "bad_fcs", "oversize"):
        assert entry["counters"].get(name, 0) == getattr(ref, name), name
    assert entry["deframer"]["frames"] == total
    assert ref.garbage_bytes > 0 and ref.bad_fcs > 0


def test_downlink_writes_reach_the_meter_exact_and_in_order(
    stack: Stack, probe: Probe, run_dir: Path, meter: MeterPty
):
    status = probe.subscriber(bus.T_SERIAL_STATUS)
    registry = probe.subscriber(bus.T_REGISTRY)
    _broker, uart = start(stack, run_dir, resolver=False)
    uart.wait_log("serial open port=", timeout=15)
    got = probe.wait_event(status, bus.T_SERIAL_STATUS, lambda d: d["open"], timeout=5)
    assert got["port"] == str(meter.link) and got["rs485"] == "off"

    rng = random.Random(11)
    frames = [
        payload_frame(bytes(rng.randrange(256) for _ in range(rng.randrange(300))))
        for _ in range(80)
    ]
    frames.append(payload_frame(b"\x7e" * 1024))  # the largest info, all flag bytes
    i = 0
    while i < len(frames):
        n = rng.randint(1, 7)
        probe.send(bus.UART, bus.OP_WRITE, frames[i : i + n], src=bus.CLIENT)
        i += n
    want = b"".join(frames)
    assert meter.read_exactly(len(want), timeout=10) == want
    assert meter.expect_silence(0.2) == b""
    # Bad data in a write is counted and dropped; the good frames still go out.
    probe.send(bus.UART, bus.OP_WRITE, ["not bytes", frames[0]], src=bus.CLIENT)
    assert meter.read_exactly(len(frames[0]), timeout=5) == frames[0]
    uart.wait_log("write dropped reason=not_bytes")
    # Data that is not a list at all, and items that are no frame: each one
    # counted, nothing raised, and the uart keeps writing.
    for bad in ({"a": 1}, 7, None, "text", [b"", ["nested"], 3.5, {}]):
        probe.send(bus.UART, bus.OP_WRITE, bad, src=bus.CLIENT)
    probe.send(bus.UART, bus.OP_WRITE, frames[1], src=bus.CLIENT)  # one frame, no list
    probe.send(bus.UART, bus.OP_WRITE, [frames[2]], src=bus.CLIENT)
    assert meter.read_exactly(len(frames[1] + frames[2]), timeout=5) == frames[1] + frames[2]
    uart.wait_log("write dropped reason=empty")
    entry = probe.wait_event(
        registry,
        bus.T_REGISTRY,
        lambda d: (e := uart_entry(d)) is not None and e["counters"].get("write_bad") == 9,
        timeout=5,
    )
    e = uart_entry(entry)
    assert e is not None
    counters = e["counters"]
    assert counters.get("handler.errors", 0) == 0
    assert counters["frames_out"] == len(frames) + 3
    assert uart.alive()


def test_port_vanishes_and_returns_traffic_resumes_both_ways(
    stack: Stack, probe: Probe, run_dir: Path, meter: MeterPty
):
    events = probe.subscriber("serial.")
    registry = probe.subscriber(bus.T_REGISTRY)
    sink = probe.inbox(bus.CLIENT)
    _broker, uart = start(stack, run_dir, **FAST_REOPEN)
    uart.wait_log("serial open port=", timeout=15)
    probe.wait_event(events, bus.T_SERIAL_STATUS, lambda d: d["open"], timeout=5)

    meter.write(payload_frame(b"before"))
    assert collect(sink, 1, timeout=10) == [b"before"]

    meter.vanish()  # the USB adapter is pulled out
    lost = probe.wait_event(events, bus.T_SERIAL_LOST, timeout=5)
    assert lost["port"] == str(meter.link) and lost["reason"]
    probe.wait_event(events, bus.T_SERIAL_STATUS, lambda d: not d["open"], timeout=5)
    uart.wait_log("serial lost port=")

    # Frames for the meter while it is away are held, then written in order.
    held = [payload_frame(b"held-1"), payload_frame(b"held-2")]
    probe.send(bus.UART, bus.OP_WRITE, held, src=bus.CLIENT)
    probe.wait_event(
        registry,
        bus.T_REGISTRY,
        lambda d: (e := uart_entry(d)) is not None and e.get("write_queue") == 2,
        timeout=5,
    )

    meter.replug()  # a new pty, the link re-pointed
    opened = probe.wait_event(events, bus.T_SERIAL_OPEN, timeout=5)
    assert opened["port"] == str(meter.link)
    probe.wait_event(events, bus.T_SERIAL_STATUS, lambda d: d["open"] and d["reopens"] == 1)
    want = b"".join(held)
    assert meter.read_exactly(len(want), timeout=5) == want

    meter.write(payload_frame(b"after"))
    assert collect(sink, 1, timeout=10) == [b"after"]
    probe.send(bus.UART, bus.OP_WRITE, [payload_frame(b"down")], src=bus.CLIENT)
    assert meter.read_exactly(len(payload_frame(b"down")), timeout=5) == payload_frame(b"down")
    assert uart.alive()


def test_missing_port_at_start_is_retried_then_opens_and_stops_fast(
    stack: Stack, probe: Probe, run_dir: Path, link: Path
):
    status = probe.subscriber(bus.T_SERIAL_STATUS)
    _broker, uart = start(stack, run_dir, resolver=False, **FAST_REOPEN)
    uart.wait_log("serial open failed port=", timeout=15)
    got = probe.wait_event(status, bus.T_SERIAL_STATUS, lambda d: d["attempts"] >= 1, timeout=5)
    assert got["open"] is False and "No such file" in got["error"]
    assert uart.alive()

    meter = MeterPty(link)  # the device appears
    try:
        uart.wait_log("serial open port=", timeout=5)
        probe.wait_event(status, bus.T_SERIAL_STATUS, lambda d: d["open"], timeout=5)
        frame = payload_frame(b"hello meter")
        probe.send(bus.UART, bus.OP_WRITE, [frame], src=bus.CLIENT)
        assert meter.read_exactly(len(frame), timeout=5) == frame

        began = time.monotonic()
        uart.kill(signal.SIGTERM)
        elapsed = time.monotonic() - began
        assert uart.popen.returncode == 0
        assert elapsed < 1.0, f"uart took {elapsed:.2f}s to stop"
        assert "service stopped name=uart" in uart.text()
    finally:
        meter.close()


def test_socket_url_port_reconnects_after_the_peer_closes(
    stack: Stack, probe: Probe, run_dir: Path
):
    # UART.port may be any pyserial URL: here a meter behind a TCP serial server.
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    host, port = server.getsockname()
    try:
        events = probe.subscriber("serial.")
        _broker, uart = start(
            stack, run_dir, resolver=False, port=f"socket://{host}:{port}", **FAST_REOPEN
        )
        conn, _ = server.accept()
        conn.settimeout(5)
        uart.wait_log("serial open port=socket://", timeout=10)
        # The events reach the probe (a loss published before the uart's PUB
        # has the subscription would be dropped: ZeroMQ's slow joiner).
        probe.wait_event(events, bus.T_SERIAL_STATUS, lambda d: d["open"], timeout=5)
        frame = payload_frame(b"over tcp")
        probe.send(bus.UART, bus.OP_WRITE, [frame], src=bus.CLIENT)
        assert recv_exactly(conn, len(frame)) == frame

        conn.close()  # the serial server drops the connection
        lost = probe.wait_event(events, bus.T_SERIAL_LOST, timeout=5)
        assert "disconnected" in lost["reason"]
        conn, _ = server.accept()  # uart dials again
        conn.settimeout(5)
        probe.wait_event(events, bus.T_SERIAL_OPEN, timeout=5)
        probe.send(bus.UART, bus.OP_WRITE, [frame], src=bus.CLIENT)
        assert recv_exactly(conn, len(frame)) == frame
        conn.close()
    finally:
        server.close()


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))  # the socket's own timeout bounds this
        if not chunk:
            break
        buf += chunk
    return buf


# -- downlink: nothing is lost to a dead or stalled line -----------------------------------

#: Frames for the stall tests: together several times what a pty buffers
#: (about 20 KiB on Linux), so the uart's writer is certain to block.
STALL_FRAMES = 80
STALL_INFO = 1000
#: The writer counts as stuck once frames_out has not moved for this long
#: while frames are still queued (a free line writes them in milliseconds).
STUCK_S = 0.7


def numbered(n: int, size: int, seed: int) -> list[bytes]:
    """``n`` encoded frames whose info starts with its number (``n0042``)."""
    rng = random.Random(seed)
    return [payload_frame(b"n%04d" % i + rng.randbytes(size - 5)) for i in range(n)]


def numbers(raw: bytes) -> list[int]:
    """The numbers of the frames a meter's deframer finds in ``raw``."""
    d = rfc1662.Deframer()
    frames = d.feed(raw) + d.flush()
    return [int(rfc1662.decode(f).info[1:5]) for f in frames]


def send_in_batches(probe: Probe, frames: list[bytes], batch: int = 8) -> None:
    for i in range(0, len(frames), batch):
        probe.send(bus.UART, bus.OP_WRITE, frames[i : i + batch], src=bus.CLIENT)


def wait_writer_stuck(probe: Probe, registry: Any, total: int, timeout: float = 10.0):
    """The uart's registry entry once its writer is blocked on a full line."""
    seen: dict[str, Any] = {"out": None, "since": 0.0}

    def stuck(d: dict[str, Any]) -> bool:
        e = uart_entry(d)
        if e is None:
            return False
        out = e["counters"].get("frames_out", 0)
        now = time.monotonic()
        if out != seen["out"]:
            seen["out"], seen["since"] = out, now
            return False
        return out < total and e["write_queue"] > 0 and now - seen["since"] >= STUCK_S

    return uart_entry(probe.wait_event(registry, bus.T_REGISTRY, stuck, timeout=timeout))


def test_frames_held_when_the_port_dies_mid_write_go_out_after_the_reopen_in_order(
    stack: Stack, probe: Probe, run_dir: Path, meter: MeterPty
):
    events = probe.subscriber("serial.")
    registry = probe.subscriber(bus.T_REGISTRY)
    _broker, uart = start(stack, run_dir, resolver=False, **FAST_REOPEN)
    uart.wait_log("serial open port=", timeout=15)
    probe.wait_event(events, bus.T_SERIAL_STATUS, lambda d: d["open"], timeout=5)

    # The meter reads nothing, so the pty fills and a write blocks part-way.
    frames = numbered(STALL_FRAMES, STALL_INFO, seed=21)
    send_in_batches(probe, frames)
    wait_writer_stuck(probe, registry, len(frames))

    meter.vanish()  # unplugged mid-write: what sat in the pty is gone with it
    probe.wait_event(events, bus.T_SERIAL_LOST, timeout=5)
    entry = uart_entry(
        probe.wait_event(
            registry,
            bus.T_REGISTRY,
            lambda d: (e := uart_entry(d)) is not None and e["open"] is False,
            timeout=5,
        )
    )
    assert entry is not None
    done = entry["counters"].get("frames_out", 0)  # written whole before the loss
    assert 0 < done < len(frames)
    assert entry["write_queue"] == len(frames) - done  # the one in flight is held too

    # After the reopen the held frames go out from the one that was in flight.
    meter.replug()
    probe.wait_event(events, bus.T_SERIAL_OPEN, timeout=5)
    want = b"".join(frames[done:])
    got = meter.read_exactly(len(want), timeout=10)
    assert numbers(got) == list(range(done, len(frames)))
    assert got == want
    assert meter.expect_silence(0.2) == b""
    entry = uart_entry(
        probe.wait_event(
            registry,
            bus.T_REGISTRY,
            lambda d: (
                (e := uart_entry(d)) is not None and e["counters"].get("frames_out") == len(frames)
            ),
            timeout=5,
        )
    )
    assert entry is not None and entry["write_queue"] == 0
    for name in ("write_dropped", "write_stale", "write_bad"):
        assert entry["counters"].get(name, 0) == 0, name


def test_a_meter_holding_off_writes_past_the_write_timeout_loses_nothing(
    stack: Stack, probe: Probe, run_dir: Path, meter: MeterPty
):
    registry = probe.subscriber(bus.T_REGISTRY)
    # A fast line keeps the write timeout near its 1 s floor (a pty ignores the rate).
    _broker, uart = start(stack, run_dir, resolver=False, baudrate=921600)
    uart.wait_log("serial open port=", timeout=15)

    # The meter stops reading (as flow control holding CTS off would) for
    # longer than two write timeouts, then reads again.
    frames = numbered(STALL_FRAMES, STALL_INFO, seed=22)
    send_in_batches(probe, frames)
    uart.wait_log("write stalled reason=timeout", timeout=10)
    probe.wait_event(
        registry,
        bus.T_REGISTRY,
        lambda d: (e := uart_entry(d)) is not None and e["counters"].get("write_timeouts", 0) >= 2,
        timeout=10,
    )
    want = b"".join(frames)
    got = meter.read_exactly(len(want), timeout=10)
    assert numbers(got) == list(range(len(frames)))
    assert got == want  # every byte once, in order: each retry resumed where the last stopped
    assert meter.expect_silence(0.2) == b""
    uart.wait_log("write resumed", timeout=5)

    entry = uart_entry(
        probe.wait_event(
            registry,
            bus.T_REGISTRY,
            lambda d: (
                (e := uart_entry(d)) is not None and e["counters"].get("frames_out") == len(frames)
            ),
            timeout=5,
        )
    )
    assert entry is not None and entry["write_queue"] == 0
    for name in ("write_errors", "write_dropped", "write_stale", "write_bad"):
        assert entry["counters"].get(name, 0) == 0, name


def test_a_frame_half_read_when_the_uart_is_killed_is_finished_by_the_next(
    stack: Stack, probe: Probe, run_dir: Path, meter: MeterPty
):
    """The bytes of a frame the uart had begun to read live in its journal, not
    only in the dead process's deframer: the next uart completes the frame
    with the rest the kernel holds for the port."""
    from services.sim.fake_hes import FakeHES

    hes = FakeHES().start()
    try:
        registry = probe.subscriber(bus.T_REGISTRY)
        stack.write_config(
            base_config(
                run_dir,
                UART={"idle_gap_ms": 5000},  # the kill, not the idle gap, cuts the frame
                TCP_SERVER={"port": hes.port, "reconnect_min_s": 0.05},
            )
        )
        broker = stack.start("services.broker")
        worker = stack.start("services.resolver")
        broker.wait_log(f"worker up ident=resolver-{worker.pid}-", timeout=15)
        stack.start("services.client")
        uart = stack.start("services.uart")
        uart.wait_log("serial open port=", timeout=15)
        one, two, three = (payload_frame(b"FRAME-%d|" % i) for i in (1, 2, 3))
        meter.write(one + two[:9])
        wait_for(lambda: hes.data() == b"FRAME-1|", 15, "frame 1 at the HES")
        probe.wait_event(
            registry,
            bus.T_REGISTRY,
            lambda d: (
                (e := uart_entry(d)) is not None and e["counters"].get("bytes_in") == len(one) + 9
            ),
            timeout=5,
        )
        uart.kill()
        meter.write(two[9:] + three)
        stack.start("services.uart")
        wait_for(
            lambda: hes.data() == b"FRAME-1|FRAME-2|FRAME-3|",
            15,
            f"frames 2 and 3 at the HES, once, in order (got {hes.data()!r})",
        )
    finally:
        hes.stop()


# -- in-process: the port in the service loop ---------------------------------------------


def loop_uart(run_dir: Path, **uart: Any) -> Uart:
    """A uart in this process; nothing listens on its bus (sends queue, never block)."""
    cfg = config.validate(base_config(run_dir, UART={"idle_gap_ms": TEST_IDLE_GAP_MS, **uart}))
    cfg["_run_dir"] = str(run_dir)
    return Uart(cfg)


def write_some_of(meter: MeterPty, todo: bytearray) -> None:
    """Write what the pty takes now of ``todo`` (non-blocking), and drop it from ``todo``."""
    if todo:
        try:
            del todo[: os.write(meter.master, todo)]
        except BlockingIOError:
            pass


def sent_batches(uart: Uart) -> list[list[bytes]]:
    """The batches of frames ``uart`` sends to the resolver pool, as it sends them."""
    batches: list[list[bytes]] = []
    real_send = uart.send

    def send(dst: str, op: str, data: Any, ref: list[Any] | None = None) -> None:
        if op == bus.OP_FRAMES:
            batches.append(data)
        real_send(dst, op, data, ref)

    uart.send = send  # type: ignore[method-assign]
    return batches


def drive(uart: Uart, step: Any, timeout: float) -> None:
    """Run ``uart``'s loop in this thread, calling ``step()`` every 5 ms from
    it, until ``step`` returns True; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    timed_out = []

    def tick() -> None:
        if step():
            uart.stop()
        elif time.monotonic() > deadline:
            timed_out.append(True)
            uart.stop()

    uart.every(0.005, tick)
    uart._loop()
    assert not timed_out, f"the loop did not get there within {timeout}s"


def test_a_write_the_meter_does_not_take_waits_in_the_loop_which_goes_on_serving(
    run_dir: Path, meter: MeterPty
):
    """No thread: the uart opens the pty in its loop, writes what the line
    takes, and while the meter reads nothing for longer than the write
    timeout the same loop reads the uplink and acknowledges the units it
    wrote whole; a gateway frame goes out right after the frame in flight;
    once the meter reads, every byte arrives once, in order."""
    threads = threading.active_count()
    uart = loop_uart(run_dir, baudrate=921600)  # a write timeout near its 1 s floor
    sent: list[tuple[str, str, Any]] = []
    real_send = uart.send

    def send(dst: str, op: str, data: Any, ref: list[Any] | None = None) -> None:
        sent.append((dst, op, data))
        real_send(dst, op, data, ref)

    uart.send = send  # type: ignore[method-assign]
    try:
        uart.setup()
        assert uart.is_open and threading.active_count() == threads
        frames = numbered(STALL_FRAMES, STALL_INFO, seed=31)
        units = [frames[i : i + 8] for i in range(0, len(frames), 8)]
        for n, unit in enumerate(units):
            ref = [bus.CLIENT, 5, n, 0]
            uart.dispatch(bus.encode_parts(bus.CLIENT, 5, n, bus.OP_WRITE, unit, ref))
        reply = payload_frame(b"gateway reply")
        state: dict[str, Any] = {"phase": "stalled", "last": time.monotonic(), "gap": 0.0}
        got = bytearray()

        def step() -> bool:
            now = time.monotonic()
            state["gap"] = max(state["gap"], now - state["last"])
            state["last"] = now
            assert threading.active_count() == threads
            if state["phase"] == "stalled":
                if not uart.counters["frames_in"] and not state.get("up"):
                    meter.write(payload_frame(b"uplink while stalled"))
                    state["up"] = True
                acked = [d for dst, op, d in sent if dst == bus.CLIENT and op == bus.OP_ACK]
                if uart._tx["write_timeouts"] and uart.counters["frames_in"] and acked:
                    state["in_flight"] = (uart._tx["frames_out"], uart._sent)
                    state["stall_gap"] = state["gap"]
                    uart.dispatch(bus.encode_parts(bus.RESOLVER, 1, 0, bus.OP_WRITE, [reply], None))
                    state["phase"] = "reading"
                return False
            try:
                got.extend(os.read(meter.master, 65536))
            except BlockingIOError:
                pass
            return len(got) >= len(b"".join(frames)) + len(reply)

        drive(uart, step, timeout=15)
        # The loop ran its timers all through the stall: no write blocked it (a
        # blocking write would hold it for the write timeout; the margin below
        # that is for a busy machine's scheduling, not for the uart).
        assert state["stall_gap"] < 0.9 * uart.write_timeout, state
        done, began = state["in_flight"]
        at = done + 1 if began else done  # the frame in flight is finished first
        assert bytes(got) == b"".join(frames[:at]) + reply + b"".join(frames[at:])
        assert meter.expect_silence(0.1) == b""
        assert uart._tx["frames_out"] == len(frames) + 1 and uart._tx["write_errors"] == 0
        acks = [d for dst, op, d in sent if dst == bus.CLIENT and op == bus.OP_ACK]
        assert acks[-1] == [5, len(units) - 1]
        assert [op for dst, op, _ in sent if dst == bus.RESOLVER] == [bus.OP_FRAMES]
    finally:
        uart.close()


def test_at_the_uplink_bound_the_loop_stops_polling_the_port_and_an_ack_resumes_it(
    run_dir: Path, meter: MeterPty, caplog
):
    """Backpressure without a thread: with the held uplink at its bound the
    port's fd leaves the poll set (the kernel holds the rest, no partial is
    flushed as stale meanwhile); an acknowledgement polls it again, and every
    frame goes out once, in order."""
    caplog.set_level(logging.INFO, logger="meterlink.uart")
    uart = loop_uart(run_dir, journal={"max_bytes": 64 * 1024})
    sent = sent_batches(uart)
    frames = numbered(120, 1000, seed=41)
    todo = bytearray(b"".join(frames))
    state: dict[str, Any] = {}

    def ack_all() -> None:
        last = uart.up.held[-1]
        env = bus.encode_parts(bus.CLIENT, 1, 0, bus.OP_ACK, [last.inst, last.n])
        uart.dispatch(env)

    def step() -> bool:
        write_some_of(meter, todo)
        if uart._held and "held_at" not in state:
            state["held_at"] = time.monotonic()
            state["bytes_in"] = uart._rx["bytes_in"]
            state["polled"] = uart._fd in uart._sockets
        if "held_at" in state and "acked" not in state:
            if time.monotonic() - state["held_at"] < 0.3:  # twice the idle gap
                assert uart._rx["bytes_in"] == state["bytes_in"]  # nothing read
                return False
            state["acked"] = True
            ack_all()
        elif uart._held:
            ack_all()
        return sum(map(len, sent)) >= len(frames)

    try:
        uart.setup()
        drive(uart, step, timeout=20)
    finally:
        uart.close()
    assert state["polled"] is False
    assert uart._rx["held_waits"] >= 1
    assert [f for batch in sent for f in batch] == frames
    assert uart.deframer.counters().get("truncated", 0) == 0
    assert "uplink held at bound" in caplog.text and "uplink room again" in caplog.text


def socket_meter(data: bytes, then_close: bool) -> tuple[socket.socket, list[socket.socket]]:
    """A meter behind a TCP serial bridge on 127.0.0.1 (for a socket:// port): it
    sends ``data`` as soon as the uart connects, and closes if told to; the
    listener and the accepted connection, for the test to close."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    conns: list[socket.socket] = []

    def meter_side() -> None:
        conn, _ = server.accept()
        conns.append(conn)
        conn.sendall(data)
        if then_close:
            conn.close()

    threading.Thread(target=meter_side, daemon=True).start()
    return server, conns


def test_a_url_port_whose_write_fails_loses_none_of_what_its_reader_read(
    run_dir: Path, monkeypatch
):
    """A URL port's link reads in a thread: a failed write must not close the
    link while bytes its reader read are still on their way to the loop (the
    loop would drop them as from a closed link). Every byte the reader read
    reaches the loop, and the frames go out once, in order (and what the meter
    sent as soon as it was connected is not thrown away by the open)."""
    frames = numbered(300, 60, seed=7)
    # At once: the uart's open must not discard it.
    server, conns = socket_meter(b"".join(frames), then_close=False)

    def failing_write(port: Any, data: memoryview, timeout: float) -> tuple[int, str]:
        raise OSError(104, "Connection reset by peer (write side only)")

    monkeypatch.setattr(uart_mod, "write_some", failing_write)
    posted = [0]  # bytes the links' readers posted to the loop
    real_post = uart_mod._Link._post

    def post(link: Any, kind: bytes, *parts: bytes) -> None:
        if kind == uart_mod._KIND_DATA:
            posted[0] += len(parts[0])
        real_post(link, kind, *parts)

    monkeypatch.setattr(uart_mod._Link, "_post", post)
    uart = loop_uart(run_dir, port=f"socket://127.0.0.1:{server.getsockname()[1]}")
    batches = sent_batches(uart)
    state: dict[str, Any] = {}

    def step() -> bool:
        if uart._rx["bytes_in"] and "wrote" not in state:
            state["wrote"] = True
            env = bus.encode_parts(bus.RESOLVER, 1, 0, bus.OP_WRITE, [payload_frame(b"r")])
            uart.dispatch(env)  # the writer fails at once ...
            time.sleep(0.2)  # ... while the loop is behind and the reader has read
        return uart._rx["reopens"] >= 1

    try:
        uart.setup()
        drive(uart, step, timeout=20)
    finally:
        uart.close()
        server.close()
        for conn in conns:
            conn.close()
    assert posted[0] > 0 and uart._rx["bytes_in"] == posted[0]
    sent = [f for batch in batches for f in batch]
    assert sent == frames[: len(sent)]


def test_a_url_port_whose_peer_sends_then_closes_loses_none_of_it(run_dir: Path):
    """A bridge that sends its frames and then closes the connection: pyserial's
    socket:// says "some" at the end of the stream and its next read raises, so
    what the reader gathered in that read must reach the loop before the loss."""
    frames = numbered(300, 60, seed=11)
    server, conns = socket_meter(b"".join(frames), then_close=True)
    uart = loop_uart(run_dir, port=f"socket://127.0.0.1:{server.getsockname()[1]}")
    batches = sent_batches(uart)
    try:
        uart.setup()
        drive(uart, lambda: uart._rx["reopens"] >= 1, timeout=20)
    finally:
        uart.close()
        server.close()
        for conn in conns:
            conn.close()
    sent = [f for batch in batches for f in batch]
    assert len(sent) == len(frames) and sent == frames, f"{len(sent)} of {len(frames)} frames"


def test_a_journal_that_fails_stops_the_uart_instead_of_leaving_it_deaf(
    run_dir: Path, meter: MeterPty, monkeypatch, caplog
):
    """At the uplink bound, an acknowledgement whose journal write fails (a
    full disk) must not leave the port out of the poll set for good: the
    uart stops, says why, and supervisord's restart replays the journal."""
    uart = loop_uart(run_dir, journal={"max_bytes": 64 * 1024})
    frames = numbered(150, 1000, seed=3)
    todo = bytearray(b"".join(frames))

    def full_disk(*_args: Any) -> None:
        raise uart_mod.JournalError("journal: No space left on device")

    def step() -> bool:
        write_some_of(meter, todo)
        if uart._held and not hasattr(uart.journal, "_broken"):
            uart.journal._broken = True  # type: ignore[attr-defined]
            monkeypatch.setattr(uart.journal, "ack", full_disk)
            last = uart.up.held[-1]
            uart.dispatch(bus.encode_parts(bus.CLIENT, 1, 0, bus.OP_ACK, [last.inst, last.n]))
        return False

    try:
        uart.setup()
        uart.every(0.005, step)
        deadline = time.monotonic() + 10
        uart.every(0.05, lambda: time.monotonic() > deadline and uart.stop())
        uart._loop()
    finally:
        uart.close()
    assert uart.stopping
    assert "journal ack failed" in caplog.text and "action=stop" in caplog.text
    assert time.monotonic() < deadline, "the uart went on, deaf, instead of stopping"

"""The bus around the pool: bad input, the service base, the tap, restarts."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import zmq

from common import bus, config, rfc1662
from common.service import Service
from tests.conftest import ROOT, Probe, Stack, base_config
from tests.handlers_sleepy import SLEEPY


def frames(start: int, count: int, protocol: int = SLEEPY) -> list[bytes]:
    return [
        rfc1662.encode(rfc1662.Frame(protocol, 0xBF, i.to_bytes(4, "big")))
        for i in range(start, start + count)
    ]


def collect(sock: zmq.Socket, want: int, timeout: float) -> list[int]:
    got: list[int] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        if sock.poll(100):
            env = bus.decode(sock.recv_multipart()[-1])
            got.extend(int.from_bytes(p, "big") for p in env.data)
    return got


def registry(probe: Probe, pred=lambda r: True, timeout: float = 10.0) -> dict:
    sub = probe.subscriber(bus.T_REGISTRY)
    try:
        return probe.wait_event(sub, bus.T_REGISTRY, pred, timeout)
    finally:
        sub.close(linger=0)


def pool(stack: Stack, run_dir, workers: int = 1):
    stack.write_config(base_config(run_dir, RESOLVER={"handlers": ["tests.handlers_sleepy"]}))
    broker = stack.start("services.broker")
    procs = [stack.start("services.resolver", name=f"worker{i}") for i in range(workers)]
    for p in procs:
        broker.wait_log(f"worker up ident=resolver-{p.pid}-", timeout=15)
    return broker, procs


# -- configuration ------------------------------------------------------------


def test_bad_config_stops_process_with_message_naming_the_key(run_dir):
    cfg = base_config(run_dir, UART={"baudrate": "fast"})
    path = run_dir / "bad.json"
    path.write_text(json.dumps(cfg))
    for module in ("services.broker", "services.resolver"):
        proc = subprocess.run(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env={"METERLINK_CONFIG": str(path), "METERLINK_RUN_DIR": str(run_dir), "PATH": ""},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2, proc.stderr
        assert "config key UART.baudrate: must be integer" in proc.stderr


def test_config_errors_name_key_and_problem(run_dir):
    good = base_config(run_dir)
    cases = {
        "TCP_SERVER.port": ("TCP_SERVER", {"port": 70000}),
        "WATCHDOG.lqi.source": ("WATCHDOG", {"lqi": {"source": "guess"}}),
        "UART": ("UART", {"bogus": 1}),
    }
    for key, (section, values) in cases.items():
        doc = json.loads(json.dumps(good))
        doc[section].update(values)
        try:
            config.validate(doc)
        except config.ConfigError as exc:
            assert f"config key {key}:" in str(exc)
        else:
            raise AssertionError(f"{key} accepted")
    (run_dir / "notjson.json").write_text("{nope")
    try:
        config.load(run_dir / "notjson.json", str(run_dir))
    except config.ConfigError as exc:
        assert "not JSON" in str(exc)
    cfg = config.validate(good)
    assert cfg["UART"]["baudrate"] == 115200 and cfg["WATCHDOG"]["radio_cycle_after"] == 3


def test_run_dir_created_private(tmp_path, monkeypatch):
    target = tmp_path / "r"
    monkeypatch.setenv("METERLINK_RUN_DIR", str(target))
    assert config.run_dir() == str(target)
    assert (target.stat().st_mode & 0o777) == 0o700


# -- bad messages -------------------------------------------------------------


def test_unknown_destination_and_garbage_are_counted_and_nothing_else_stops(stack, run_dir, probe):
    broker, _ = pool(stack, run_dir, 1)
    sink = probe.inbox("client")
    probe.send("nosuch", "send", [b"x"])
    probe.push.send_multipart([b"client", b"\xc1\xc1 not msgpack"])
    probe.push.send_multipart([b"only-one-part"])
    probe.send(bus.RESOLVER, bus.OP_FRAMES, frames(0, 3), src="uart")
    probe.send("client", "send", [b"dire"])
    assert sorted(collect(sink, 4, 10)) == [0, 1, 2, int.from_bytes(b"dire", "big")]
    broker.wait_log("message dropped reason=unknown_dst dst='nosuch'")
    broker.wait_log("message dropped reason=bad_envelope")
    broker.wait_log("message dropped reason=bad_parts")
    reg = registry(probe, lambda r: r["broker"]["counters"].get("drop.bad_message"))
    counters = reg["broker"]["counters"]
    assert counters["drop.unknown_dst"] == 1
    assert counters["drop.bad_envelope"] == 1
    assert counters["route.probe>client"] == 1
    assert broker.alive()


class Echo(Service):
    """A service run in a thread, to show the base on its own."""

    def __init__(self, cfg, ctx):
        super().__init__("uart", cfg, ctx=ctx)
        self.got: list = []

        @self.on("write")
        def write(env):
            self.got.append(env.data)
            self.client.send(env.data)


def test_service_base_counts_garbage_and_uses_app_proxies(run_dir):
    cfg = config.validate(base_config(run_dir))
    cfg["_run_dir"] = str(run_dir)
    ctx = zmq.Context()
    addr = lambda name: bus.endpoint(cfg["BUS"], str(run_dir), name)  # noqa: E731
    # The test plays the broker: bind what the service connects to.
    inbox = ctx.socket(zmq.PUSH)
    inbox.bind(addr("uart.in"))
    broker_in = ctx.socket(zmq.PULL)
    broker_in.bind(addr(bus.BROKER_IN))
    xsub = ctx.socket(zmq.XSUB)
    xsub.bind(addr(bus.EVENTS_IN))
    xpub = ctx.socket(zmq.XPUB)
    xpub.bind(addr(bus.EVENTS_OUT))
    svc = Echo(cfg, ctx)
    t = threading.Thread(target=svc.run)
    t.start()
    try:
        inbox.send_multipart([b"uart", b"garbage"])
        inbox.send_multipart([b"uart", bus.encode(bus.Envelope("t", 1, 0, 0.0, "nosuchop", None))])
        inbox.send_multipart([b"uart", bus.encode(bus.Envelope("t", 1, 1, 0.0, "write", [b"ok"]))])
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if broker_in.poll(200):
                dst, raw = broker_in.recv_multipart()
                env = bus.decode(raw)
                seen.append((dst, env.op, env.data))
                if dst == b"client":
                    break
        assert (b"client", "send", [b"ok"]) in seen
        assert any(op == "hb" for _, op, _ in seen)
        assert svc.counters["bus.bad_envelope"] == 1
        assert svc.counters["bus.unknown_op"] == 1
        try:
            svc.nosuchservice  # noqa: B018
        except AttributeError:
            pass
        else:
            raise AssertionError("a typo must not become a service proxy")
    finally:
        svc.stop()
        t.join(2)
        assert not t.is_alive()
        for s in (inbox, broker_in, xsub, xpub):
            s.close(linger=0)
        ctx.term()


def test_sigterm_stops_services_within_a_second(stack, run_dir):
    broker, (worker,) = pool(stack, run_dir, 1)
    for proc in (worker, broker):
        started = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        proc.popen.wait(5)
        assert time.monotonic() - started < 1.0
        assert proc.popen.returncode == 0
        assert "stopped" in proc.text()


# -- restarts -------------------------------------------------------------------


def test_broker_killed_mid_stream_loses_only_what_was_in_flight(stack, run_dir, probe):
    broker, workers = pool(stack, run_dir, 2)
    sink = probe.inbox("client")
    rng = random.Random(7)
    sent = 0

    def send(n: int) -> None:
        nonlocal sent
        end = sent + n
        while sent < end:
            k = min(rng.randint(1, 10), end - sent)
            probe.send(bus.RESOLVER, bus.OP_FRAMES, frames(sent, k), src="uart", inst=11)
            sent += k

    send(2_000)
    got = collect(sink, 200, 10)
    broker.kill(signal.SIGKILL)  # mid-stream: some jobs are inside it
    send(1_000)  # while it is down: held by the sender's socket
    broker2 = stack.start("services.broker", name="broker2")
    for w in workers:
        broker2.wait_log(f"worker up ident=resolver-{w.pid}-", timeout=15)
    send(1_000)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not got or got[-1] != sent - 1):
        got += collect(sink, 1, 0.5)
    assert got == sorted(got), "order kept across the restart"
    assert len(set(got)) == len(got), "nothing delivered twice"
    lost = sent - len(got)
    print(f"broker restart: sent={sent} delivered={len(got)} lost={lost}")
    # What was lost was inside the dead broker: never anything sent after it died.
    assert set(range(2_000, sent)) <= set(got)
    assert lost <= 2_000


# -- tap ------------------------------------------------------------------------


def test_tap_sees_routed_messages_with_filters_and_costs_nothing_when_off(stack, run_dir, probe):
    broker, _ = pool(stack, run_dir, 1)
    sink = probe.inbox("client")
    probe.send(bus.RESOLVER, bus.OP_FRAMES, frames(0, 5), src="uart")
    assert collect(sink, 5, 10) == list(range(5))
    reg = registry(probe, lambda r: r["broker"]["counters"].get("pool.frames_out", 0) >= 5)
    assert "tap.mirrored" not in reg["broker"]["counters"] and reg["broker"]["tap"] is False

    tap_all = stack.start("services.cli.tap", "--json", "--count", "4", name="tap-all")
    tap_proto = stack.start(
        "services.cli.tap",
        "--protocol",
        "0x2300",
        "--src",
        "uart",
        "--count",
        "1",
        name="tap-proto",
    )
    broker.wait_log("tap attached")
    # A SUB's subscription reaches the broker asynchronously: keep sending until
    # both taps have printed what they asked for.
    i = 100
    deadline = time.monotonic() + 15
    while (tap_all.alive() or tap_proto.alive()) and time.monotonic() < deadline:
        probe.send(bus.RESOLVER, bus.OP_FRAMES, frames(i, 1), src="uart")
        probe.send(bus.RESOLVER, bus.OP_FRAMES, frames(i, 1, protocol=0x2100), src="uart")
        collect(sink, 2, 0.2)
        i += 1
    tap_all.popen.wait(5)
    tap_proto.popen.wait(5)
    recs = [json.loads(line) for line in tap_all.text().splitlines() if line.startswith("{")]
    assert len(recs) == 4
    routes = {(r["src"], r["dst"], r["op"]) for r in recs}
    assert ("uart", "resolver", "frames") in routes
    assert ("resolver", "client", "send") in routes
    fr = next(r for r in recs if r["op"] == "frames")["frames"][0]
    assert fr["protocol"] in (0x2300, 0x2100) and fr["cmd"] == 0xBF and fr["frame_len"] == 15
    assert fr["payload_len"] == 4
    text = tap_proto.text()
    assert "uart>resolver frames" in text and "proto=0x2300 cmd=0xbf payload=4 frame=15" in text
    assert "0x2100" not in text
    broker.wait_log("tap detached")
    detached = registry(
        probe, lambda r: not r["broker"]["tap"] and "tap.mirrored" in r["broker"]["counters"]
    )
    before = detached["broker"]["counters"]["tap.mirrored"]
    probe.send(bus.RESOLVER, bus.OP_FRAMES, frames(500, 3), src="uart")
    assert collect(sink, 3, 10) == [500, 501, 502]
    done = detached["broker"]["counters"]["pool.frames_out"]
    after = registry(probe, lambda r: r["broker"]["counters"]["pool.frames_out"] >= done + 3)
    assert after["broker"]["counters"]["tap.mirrored"] == before


def test_generated_config_validator_matches_schema():
    # The validator is generated ahead of time (it saves each process ~7 MB);
    # after a change to SCHEMA, run `python -m common.config --generate`.
    with open(config.GENERATED, encoding="utf-8") as fh:
        assert fh.read() == config.generate_validator()


def test_missing_required_key_is_named(run_dir):
    doc = base_config(run_dir)
    del doc["TCP_SERVER"]["host"]
    try:
        config.validate(doc)
    except config.ConfigError as exc:
        assert str(exc) == "config key TCP_SERVER.host: missing (it has no default)"
    else:
        raise AssertionError("missing TCP_SERVER.host accepted")


def test_a_ref_with_a_time_that_is_not_a_finite_number_is_refused():
    import math

    import pytest

    for t in (math.nan, math.inf, True):
        raw = bus.encode_parts("uart", 1, 0, bus.OP_FRAMES, [], ["uart", 1, 0, 0, t])
        with pytest.raises(bus.EnvelopeError):
            bus.decode(raw)
    assert bus.decode(
        bus.encode_parts("uart", 1, 0, bus.OP_FRAMES, [], ["uart", 1, 0, 0, 1.5])
    ).ref == bus.Ref("uart", 1, 0, 0, 1.5)


def test_a_call_later_made_inside_a_timer_is_due_when_it_says(run_dir):
    """The poll timeout must see a one-shot timer a callback just scheduled."""
    cfg = config.validate(base_config(run_dir))
    cfg["_run_dir"] = str(run_dir)
    svc = Service("probe2", cfg, inbox=False, heartbeat=False)
    try:
        fired: list[str] = []
        svc.every(100.0, lambda: svc.call_later(0.01, lambda: fired.append("x")), first=0.0)
        now = time.monotonic()
        nearest = svc._run_timers(now)
        assert nearest <= now + 0.011
        assert svc._run_timers(now + 0.02) and fired == ["x"]
    finally:
        svc.close()


def test_a_write_that_would_block_waits_for_room_in_the_loop(run_dir):
    """``watch_writable``: a raw socket with a full send buffer is polled for
    POLLOUT in the service loop, and the handler runs once there is room."""

    cfg = config.validate(base_config(run_dir))
    cfg["_run_dir"] = str(run_dir)
    svc = Service("probe3", cfg, inbox=False, heartbeat=False)
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        sent = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                sent += a.send(b"x" * 65536)
        calls: list[int] = []

        def writable() -> None:
            calls.append(a.send(b"y"))
            svc.watch_writable(a.fileno(), None)
            svc.stop()

        svc.add_socket(a.fileno(), lambda: None)
        svc.watch_writable(a.fileno(), writable)
        # Pausing input (backpressure) leaves the write waiting for room.
        svc.stop_reading(a.fileno())

        def drain() -> None:
            got = 0
            while got < sent:
                got += len(b.recv(1 << 20))

        read_some = threading.Timer(0.1, drain)
        read_some.start()
        runner = threading.Thread(target=svc._loop, daemon=True)
        runner.start()
        runner.join(5.0)
        read_some.join(5.0)
        assert not runner.is_alive(), "the loop never saw the socket writable"
        assert calls == [1]
        assert sent > 0
    finally:
        a.close()
        b.close()
        svc.close()

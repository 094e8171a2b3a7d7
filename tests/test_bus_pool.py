"""The resolver pool through real processes: order, redelivery, restarts."""

from __future__ import annotations

import random
import signal
import time

import pytest

from common import bus, rfc1662
from tests.conftest import Probe, Stack, base_config
from tests.handlers_sleepy import BROKEN, SLEEPY, UNENCODABLE


def frames_for(start: int, count: int) -> list[bytes]:
    return [
        rfc1662.encode(rfc1662.Frame(SLEEPY, 0xBF, i.to_bytes(4, "big")))
        for i in range(start, start + count)
    ]


def send_batches(probe: Probe, start: int, count: int, rng: random.Random, inst: int) -> None:
    i = start
    while i < start + count:
        n = min(rng.randint(1, 20), start + count - i)
        probe.send(bus.RESOLVER, bus.OP_FRAMES, frames_for(i, n), src="uart", inst=inst)
        i += n


def collect(sock, want: int, timeout: float) -> list[int]:
    got: list[int] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        if sock.poll(100):
            env = bus.decode(sock.recv_multipart()[-1])
            assert env.op == bus.OP_SEND
            got.extend(int.from_bytes(p, "big") for p in env.data)
    return got


@pytest.fixture
def pool_stack(stack: Stack, run_dir):
    stack.write_config(base_config(run_dir, RESOLVER={"handlers": ["tests.handlers_sleepy"]}))
    return stack


def start_pool(stack: Stack, workers: int):
    broker = stack.start("services.broker")
    procs = [stack.start("services.resolver", name=f"worker{i}") for i in range(workers)]
    for p in procs:
        broker.wait_log(f"worker up ident=resolver-{p.pid}-", timeout=15)
    return broker, procs


def test_10000_frames_four_workers_arrive_complete_and_in_order(pool_stack, probe):
    broker, workers = start_pool(pool_stack, 4)
    sink = probe.inbox("client")
    send_batches(probe, 0, 10_000, random.Random(1), inst=1)
    got = collect(sink, 10_000, timeout=60)
    assert got == list(range(10_000))
    # All four workers took part: their heartbeats in the registry say so.
    sub = probe.subscriber(bus.T_REGISTRY)

    def shares(reg):
        per = {s["pid"]: s["counters"].get("frames", 0) for s in reg["services"]}
        return all(per.get(w.pid, 0) > 0 for w in workers) and sum(per.values()) >= 10_000

    reg = probe.wait_event(sub, bus.T_REGISTRY, shares, timeout=15)
    per = {s["pid"]: s["counters"]["frames"] for s in reg["services"] if s["name"] == "resolver"}
    assert sum(per.values()) == 10_000, per


def test_worker_killed_mid_stream_loses_and_duplicates_nothing(pool_stack, probe):
    broker, workers = start_pool(pool_stack, 3)
    sink = probe.inbox("client")
    rng = random.Random(2)
    send_batches(probe, 0, 3_000, rng, inst=2)
    got = collect(sink, 500, timeout=30)
    workers[0].kill(signal.SIGKILL)
    send_batches(probe, 3_000, 3_000, rng, inst=2)
    got += collect(sink, 6_000 - len(got), timeout=60)
    assert got == list(range(6_000))
    broker.wait_log("worker lost", timeout=10)


def test_stalled_worker_is_replaced_and_its_late_results_ignored(pool_stack, probe):
    broker, workers = start_pool(pool_stack, 3)
    sink = probe.inbox("client")
    rng = random.Random(4)
    send_batches(probe, 0, 2_000, rng, inst=6)
    got = collect(sink, 300, timeout=30)
    workers[0].popen.send_signal(signal.SIGSTOP)  # alive but silent: misses heartbeats
    try:
        send_batches(probe, 2_000, 2_000, rng, inst=6)
        broker.wait_log(f"worker lost ident=resolver-{workers[0].pid}-", timeout=15)
    finally:
        workers[0].popen.send_signal(signal.SIGCONT)
    got += collect(sink, 4_000 - len(got), timeout=60)
    assert got == list(range(4_000))
    # The stalled worker comes back and answers jobs already given to others:
    # those answers are counted as duplicates, never released.
    broker.wait_log(f"worker up ident=resolver-{workers[0].pid}-", timeout=15)
    assert collect(sink, 1, timeout=1) == []


def test_broker_restart_services_reconnect(pool_stack, probe):
    broker, workers = start_pool(pool_stack, 2)
    sink = probe.inbox("client")
    rng = random.Random(3)
    send_batches(probe, 0, 1_000, rng, inst=3)
    assert collect(sink, 1_000, timeout=30) == list(range(1_000))
    broker.kill(signal.SIGKILL)
    broker2 = pool_stack.start("services.broker", name="broker2")
    for w in workers:
        broker2.wait_log(f"worker up ident=resolver-{w.pid}-", timeout=15)
    send_batches(probe, 1_000, 1_000, rng, inst=4)
    got = collect(sink, 1_000, timeout=30)
    assert got == list(range(1_000, 2_000))


def test_failing_handler_and_unknown_protocol_are_counted_not_fatal(pool_stack, probe):
    broker, workers = start_pool(pool_stack, 1)
    sink = probe.inbox("client")
    bad = [
        rfc1662.encode(rfc1662.Frame(UNENCODABLE, 0xBF, b"\x00\x00\x00\x63")),
        rfc1662.encode(rfc1662.Frame(BROKEN, 0xBF, b"x")),
        rfc1662.encode(rfc1662.Frame(0x7777, 0xBF, b"y")),
        b"\x7e\x00garbage",
    ]
    probe.send(bus.RESOLVER, bus.OP_FRAMES, bad + frames_for(0, 1), src="uart", inst=5)
    # The unencodable handler's good output (99) survives; its bad one is dropped.
    assert collect(sink, 2, timeout=10) == [99, 0]
    w = workers[0]
    w.wait_log("handler failed protocol=0x2301")
    w.wait_log("reason=unknown_protocol protocol=0x7777")
    w.wait_log("reason=decode")
    w.wait_log("handler output dropped reason=not_encodable dst=client op=send")
    assert w.alive()


def test_broker_survives_malformed_heartbeats_and_worker_messages(pool_stack, probe):
    import zmq

    broker, workers = start_pool(pool_stack, 1)
    sink = probe.inbox("client")
    probe.send(bus.BROKER, bus.OP_HB, {"name": 5, "pid": "x", "inst": "y"}, src="svc-a")
    probe.send(bus.BROKER, bus.OP_HB, {"pid": 7}, src="svc-b")
    probe.send(bus.BROKER, bus.OP_HB, "not a dict", src="svc-c")
    rogue = probe.ctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.connect(probe.addr(bus.RESOLVER_IN))
    rogue.send_multipart([bus.KIND_READY, probe.envelope("hb", {"capacity": "lots"})])
    rogue.send_multipart([bus.KIND_HB, b"garbage"])
    rogue.send_multipart([bus.KIND_RESULT, (12345).to_bytes(8, "big"), b"\x93\x01\x02\x03"])
    rogue.send_multipart([b"nonsense", b"x", b"y"])
    probe.send(bus.RESOLVER, bus.OP_FRAMES, frames_for(0, 5), src="uart", inst=8)
    assert collect(sink, 5, timeout=10) == list(range(5))
    broker.wait_log("worker message dropped reason=bad_fields")
    assert broker.alive()
    rogue.close(linger=0)

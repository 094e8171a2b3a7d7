"""The built-in 0x2200 handler and ``services.cli.ask``, through real broker and workers.

The probe plays the uart: it sends the meter's frames into the resolver pool as
``src="uart"`` and reads what the workers send back on the uart's inbox. Since the
broker releases results in the meter's order, a request that gets no reply is shown
by the next request's reply arriving first.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

import zmq

from common import bus, params, rfc1662
from common.params import Value
from tests.conftest import Probe, Stack, base_config, shared_dir

WRITABLE = [0x8007, 0x9001, 0x8003]  # 0x8003 (LQI) is live: listed, still refused
SYNC = "test.sync"


def vector(name: str) -> bytes:
    data = json.loads((shared_dir() / "vectors" / "frames.json").read_text())
    for item in data["frames"]:
        if item["name"] == name:
            return bytes.fromhex(item["raw"])
    raise KeyError(name)


def enc(msg: params.Message) -> bytes:
    return rfc1662.encode(msg.to_frame())


GET_LQI = enc(params.GetRequest(params.PID_LQI))


class Meter:
    """The probe as the uart: frames into the pool, the workers' writes out."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.inbox = probe.inbox(bus.UART)

    def send(self, *frames: bytes) -> None:
        self.probe.send(bus.RESOLVER, bus.OP_FRAMES, list(frames), src=bus.UART)

    def reply(self, timeout: float = 10.0) -> bytes:
        env = Probe.recv_env(self.inbox, timeout)
        assert env.op == bus.OP_WRITE
        assert len(env.data) == 1, env.data
        return bytes(env.data[0])

    def ask(self, frame: bytes) -> bytes:
        self.send(frame)
        return self.reply()

    def parsed(self, frame: bytes) -> params.FromGateway:
        return params.parse_gateway(rfc1662.decode(self.ask(frame)))


def start(stack: Stack, workers: int = 1, **device: Any) -> tuple[Any, list[Any]]:
    stack.write_config(
        base_config(stack.run_dir, DEVICE={"writable": WRITABLE, **device}, LOG={"level": "DEBUG"})
    )
    broker = stack.start("services.broker")
    procs = [start_worker(stack, broker, f"worker{i}") for i in range(workers)]
    return broker, procs


def start_worker(stack: Stack, broker: Any, name: str) -> Any:
    proc = stack.start("services.resolver", name=name)
    broker.wait_log(f"worker up ident=resolver-{proc.pid}-", timeout=15)
    return proc


def subscribe(probe: Probe, pub: zmq.Socket[bytes], *topics: str) -> zmq.Socket[bytes]:
    """A SUB socket whose subscriptions are known to have reached the broker."""
    sock = probe.subscriber(*topics, SYNC)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pub.send_multipart([SYNC.encode(), probe.envelope(bus.OP_EVENT, None)])
        if sock.poll(50):
            return sock
    raise AssertionError("subscription never reached the broker")


def settle(
    meter: Meter, pub: zmq.Socket[bytes], topic: str, data: dict[str, Any], get: bytes, want: bytes
) -> None:
    """Publish a state event until the worker's answer to ``get`` is ``want``."""
    deadline = time.monotonic() + 10
    got = b""
    while time.monotonic() < deadline:
        pub.send_multipart([topic.encode(), meter.probe.envelope(bus.OP_EVENT, data)])
        got = meter.ask(get)
        if got == want:
            return
        time.sleep(0.02)
    raise AssertionError(f"after {topic} {data}: got {got.hex()}, want {want.hex()}")


def state_get(rid: int | None = None) -> bytes:
    return enc(params.GetRequest(params.PID_MODULE_STATE, rid))


def state_reply(state: int, rid: int | None = None) -> bytes:
    req = params.GetRequest(params.PID_MODULE_STATE, rid).to_frame()
    if rid is None:
        return rfc1662.encode(params.get_response(req, params.PID_MODULE_STATE, bytes((state,))))
    return rfc1662.encode(
        params.typed_get_response(req, params.PID_MODULE_STATE, rid, Value.u8(state))
    )


def test_lqi_and_module_state_follow_the_state_events(stack: Stack, probe: Probe) -> None:
    start(stack)
    meter = Meter(probe)
    pub = probe.publisher()
    # Nothing known yet: the default LQI, and the module state counts as down.
    assert meter.parsed(GET_LQI) == params.GetResponse(params.PID_LQI, bytes((99,)))
    assert meter.ask(state_get(0x0102)) == state_reply(0, 0x0102)

    settle(
        meter,
        pub,
        bus.T_NET_STATUS,
        {"up": True, "lqi": 25},
        vector("meter->module GET LQI 0x8003"),
        vector("module reply GET_RESP LQI=25 (untyped)"),
    )
    assert meter.ask(state_get()) == state_reply(1)
    settle(meter, pub, bus.T_LINK_STATUS, {"up": True}, state_get(7), state_reply(2, 7))
    settle(meter, pub, bus.T_NET_STATUS, {"up": False, "lqi": 3}, state_get(), state_reply(0))
    assert meter.parsed(GET_LQI) == params.GetResponse(params.PID_LQI, b"\x03")
    settle(meter, pub, bus.T_LINK_STATUS, {"up": False}, state_get(), state_reply(0))
    settle(meter, pub, bus.T_NET_STATUS, {"up": True, "lqi": 40}, state_get(), state_reply(1))
    # An LQI that does not fit a byte is no value: the GET error.
    settle(
        meter,
        pub,
        bus.T_NET_STATUS,
        {"up": True, "lqi": 300},
        GET_LQI,
        vector("module reply GET error for 0x8003"),
    )
    # Typed GET of the LQI answers INT8U.
    settle(
        meter,
        pub,
        bus.T_NET_STATUS,
        {"up": True, "lqi": 25},
        GET_LQI,
        vector("module reply GET_RESP LQI=25 (untyped)"),
    )
    assert meter.parsed(enc(params.GetRequest(params.PID_LQI, 0x0A0B))) == (
        params.TypedGetResponse(params.PID_LQI, 0x0A0B, Value.u8(25))
    )


def test_config_values_unknown_and_malformed_requests(stack: Stack, probe: Probe) -> None:
    _, (worker,) = start(stack)
    meter = Meter(probe)
    assert meter.parsed(enc(params.GetRequest(params.PID_METER_SN, 0x0102))) == (
        params.TypedGetResponse(params.PID_METER_SN, 0x0102, Value.char("SN-TEST-1"))
    )
    assert meter.parsed(enc(params.GetRequest(params.PID_DEVICE_NAME))) == (
        params.GetResponse(params.PID_DEVICE_NAME, b"gw-test")
    )
    assert meter.parsed(enc(params.GetRequest(0x9999))) == params.GetError(0x9999)
    assert meter.parsed(enc(params.GetRequest(0x9999, 1))) == params.GetError(0x9999)

    # A reply keeps the request's protocol id (any id routed to this handler would).
    frame = rfc1662.decode(meter.ask(enc(params.GetRequest(0x9999))))
    assert frame.protocol == rfc1662.PROTO_PARAMS

    def raw(cmd: int, info: bytes) -> bytes:
        return rfc1662.encode(rfc1662.Frame(rfc1662.PROTO_PARAMS, cmd, info))

    # Malformed GET with a readable pid: GET error for that pid.
    assert meter.parsed(raw(0xC0, b"\x07\x80\x00")) == params.GetError(0x8007)
    # Malformed SET (value cut short): the SET failure the meter waits for.
    assert meter.parsed(raw(0xC1, b"\x07\x80\x05\x00\x01\x0a\x09a")) == (
        params.SetResponse(0x8007, False)
    )
    # No pid, a malformed meter answer, an ACTION: no reply; the next GET's comes first.
    meter.send(raw(0xC0, b"\x07"), raw(0xC4, b"\x01\x28\x05\x11"), raw(0xC3, b"\x01\x00"))
    assert meter.parsed(GET_LQI) == params.GetResponse(params.PID_LQI, bytes((99,)))
    worker.wait_log("reason=malformed protocol=0x2200 cmd=0xc0 len=1")
    worker.wait_log("reason=malformed protocol=0x2200 cmd=0xc4")
    worker.wait_log("reason=unexpected_cmd protocol=0x2200 cmd=0xc3")
    assert worker.alive()


def test_set_is_durable_across_workers_and_restarts(stack: Stack, probe: Probe) -> None:
    broker, (first,) = start(stack)
    meter = Meter(probe)
    pub = probe.publisher()
    events = subscribe(probe, pub, bus.T_PARAM_SET)

    set_name = params.SetRequest(params.PID_DEVICE_NAME, 9, Value.char("new-name"))
    assert meter.parsed(enc(set_name)) == params.SetResponse(params.PID_DEVICE_NAME, True)
    event = probe.wait_event(events, bus.T_PARAM_SET)
    assert event == {
        "pid": 0x8007,
        "name": "device_name",
        "rid": 9,
        "tag": params.TAG_CHAR,
        "type": "CHAR",
        "value": "new-name",
        "raw": Value.char("new-name").to_bytes(),
    }
    assert meter.parsed(enc(params.GetRequest(0x8007, 3))) == (
        params.TypedGetResponse(0x8007, 3, Value.char("new-name"))
    )

    # The examples of the wire-format page, byte for byte (0x9001 is writable here).
    assert meter.ask(vector("meter->module SET 0x9001 STR 'hello' request id 7")) == vector(
        "module reply SET_RESP success"
    )
    assert meter.ask(vector("meter->module SET 0x9002 INT16U 1234 request id 8")) == vector(
        "module reply SET_RESP failed"
    )
    get_9001 = vector("meter->module GET 0x9001 request id 0x0102")
    assert meter.parsed(get_9001) == params.TypedGetResponse(0x9001, 0x0102, Value.octets(b"hello"))
    meter.ask(enc(params.SetRequest(0x9001, 1, Value.octets(b"SN123"))))
    assert meter.ask(get_9001) == vector("module reply GET_RESP STR 'SN123'")
    meter.ask(enc(params.SetRequest(0x9001, 2, Value.u8(7))))
    assert meter.ask(get_9001) == vector("module reply GET_RESP INT8U 7")
    # Untyped GET of a stored value: its bytes alone.
    assert meter.parsed(enc(params.GetRequest(0x9001))) == params.GetResponse(0x9001, b"\x07")

    # Read-only: not listed, or a live value even though listed; nothing stored.
    for pid, value in ((0x8005, Value.char("X")), (0x8003, Value.u8(1))):
        assert meter.parsed(enc(params.SetRequest(pid, 4, value))) == (
            params.SetResponse(pid, False)
        )
    assert meter.parsed(enc(params.GetRequest(0x8005))) == params.GetResponse(0x8005, b"SN-TEST-1")
    assert meter.parsed(GET_LQI) == params.GetResponse(params.PID_LQI, bytes((99,)))

    # Another worker process sees the stored values; then after a full restart.
    second = start_worker(stack, broker, "worker-b")
    first.kill(signal.SIGTERM)
    assert meter.parsed(enc(params.GetRequest(0x8007))) == params.GetResponse(0x8007, b"new-name")
    second.kill(signal.SIGTERM)
    start_worker(stack, broker, "worker-c")
    assert meter.parsed(enc(params.GetRequest(0x8007))) == params.GetResponse(0x8007, b"new-name")
    assert meter.ask(get_9001) == vector("module reply GET_RESP INT8U 7")


def test_event_is_acked_and_meter_answers_are_published(stack: Stack, probe: Probe) -> None:
    start(stack)
    meter = Meter(probe)
    pub = probe.publisher()
    events = subscribe(probe, pub, bus.T_METER_EVENT, bus.T_METER_RESPONSE)

    assert meter.ask(vector("meter->module EVENT 01 02")) == vector("module ack of EVENT")
    event = probe.wait_event(events, bus.T_METER_EVENT)
    assert event["data"] == b"\x01\x02" and event["hex"] == "0102" and event["len"] == 2

    # The meter's answers to the gateway's GET/SET: published, never answered.
    meter.send(
        enc(params.MeterGetResponse(0x2801, b"\x11\x05")),
        enc(params.MeterGetResponse(0x2802, b"\x01\x02\x03")),
        rfc1662.encode(params.GetError(0x2803).to_frame()),
        rfc1662.encode(params.SetResponse(0x2804, True).to_frame()),
    )
    assert meter.parsed(GET_LQI) == params.GetResponse(params.PID_LQI, bytes((99,)))
    got = {}
    while len(got) < 4:
        data = probe.wait_event(events, bus.T_METER_RESPONSE)
        got[data["pid"]] = data
    assert got[0x2801] == {
        "pid": 0x2801,
        "name": "meter_2801",
        "cmd": 0xC4,
        "ok": True,
        "data": b"\x11\x05",
        "hex": "1105",
        "tag": params.TAG_INT8U,
        "type": "INT8U",
        "value": 5,
    }
    assert got[0x2802]["data"] == b"\x01\x02\x03" and "type" not in got[0x2802]
    assert got[0x2803]["cmd"] == 0xC8 and got[0x2803]["ok"] is False
    assert got[0x2804]["cmd"] == 0xC5 and got[0x2804]["ok"] is True


def run_ask(stack: Stack, *args: str) -> Any:
    return stack.start("services.cli.ask", *args, name="ask")


def finish(proc: Any, timeout: float = 15) -> tuple[int, str]:
    try:
        code = proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"ask did not exit:\n{proc.text()}") from None
    return code, proc.text()


def test_ask_end_to_end_with_the_probe_as_meter(stack: Stack, probe: Probe) -> None:
    start(stack)
    meter = Meter(probe)

    def answer(reply: params.Message) -> bytes:
        env = Probe.recv_env(meter.inbox, 10)
        assert env.op == bus.OP_WRITE and env.src == "ask"
        meter.send(enc(reply))
        return bytes(env.data[0])

    ask = run_ask(stack, "get", "0x2801", "--timeout", "10")
    assert answer(params.MeterGetResponse(0x2801, b"\x11\x05")) == vector(
        "module->meter GET param 0x2801"
    )
    code, out = finish(ask)
    assert code == 0, out
    assert "pid=0x2801 name=meter_2801 cmd=0xc4 ok=true hex=1105 type=INT8U value=5" in out

    ask = run_ask(stack, "set", "2801", "u8:5", "--json", "--timeout", "10")
    assert answer(params.MeterGetResponse(0x2801, b"\x00")) == vector(
        "module->meter SET param 0x2801 INT8U 5"
    )
    code, out = finish(ask)
    assert code == 0, out
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["pid"] == 0x2801 and doc["hex"] == "00" and doc["ok"] is True

    ask = run_ask(stack, "set", "0x2801", "char:AB", "--timeout", "10")
    assert answer(params.GetError(0x2801)) == rfc1662.encode(
        params.meter_set(0x2801, Value.char("AB"))
    )
    code, out = finish(ask)
    assert code == 3, out

    ask = run_ask(stack, "get", "0x2802", "--timeout", "1")
    assert Probe.recv_env(meter.inbox, 10).data == [rfc1662.encode(params.meter_get(0x2802))]
    code, out = finish(ask)
    assert code == 1 and "no answer for pid 0x2802 within 1s" in out

    code, out = finish(run_ask(stack, "set", "0x2801", "u8:300"))
    assert code == 2 and "bad u8 value" in out

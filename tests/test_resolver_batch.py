"""0x2100 batches cross the resolver as one unit (issue: batches stay batches)."""

from __future__ import annotations

from typing import Any

import zmq
from hypothesis import given
from hypothesis import strategies as st

from common import bus, config, rfc1662
from services import handlers  # noqa: F401  (registers the built-in handlers)
from services.resolver import Resolver, Worker, resolver
from tests.conftest import base_config


def transparent(info: bytes) -> bytes:
    return rfc1662.encode(rfc1662.Frame(rfc1662.PROTO_TRANSPARENT, rfc1662.CMD_SERIAL_NET, info))


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_transparent_infos_equal_what_decode_gives(infos: list[bytes]) -> None:
    frames = [transparent(i) for i in infos]
    assert rfc1662.transparent_infos(frames) == [rfc1662.decode(f).info for f in frames]


@given(st.binary(max_size=80))
def test_transparent_infos_takes_only_the_shape_of_a_0x2100_frame(raw: bytes) -> None:
    got = rfc1662.transparent_infos([raw])
    if got is not None:  # the shape holds; only the FCS is left unchecked
        assert raw[:5] == b"\x7e\xff\x03\x00\x21" and raw[-1] == 0x7E
        assert len(raw) == ((raw[5] << 8) | raw[6]) + 10 and got == [raw[8:-3]]


def test_other_protocols_and_shapes_take_the_per_frame_path() -> None:
    get = rfc1662.encode(rfc1662.Frame(rfc1662.PROTO_PARAMS, rfc1662.CMD_GET, b"\x03\x80"))
    assert rfc1662.transparent_infos([transparent(b"a"), get]) is None
    assert rfc1662.transparent_infos([transparent(b"a")[:-1]]) is None
    assert rfc1662.transparent_infos(["not bytes"]) is None


def make_worker(tmp_path: Any, registry: Resolver) -> Worker:
    cfg = config.validate(base_config(tmp_path))
    cfg["_run_dir"] = str(tmp_path)
    return Worker(cfg, ctx=zmq.Context.instance(), registry=registry)


def job(frames: list[bytes]) -> bytes:
    return bus.encode_parts("uart", 1, 0, bus.OP_FRAMES, frames, ["uart", 9, 4, 0])


def outputs(worker: Worker, frames: list[bytes]) -> list[tuple[str, str, Any, Any]]:
    out = []
    for dst, raw in worker.process(job(frames)):
        env = bus.decode(raw)
        out.append((dst, env.op, env.data, env.ref))
    return out


def test_a_batch_goes_out_as_one_send_with_its_ref(tmp_path) -> None:
    worker = make_worker(tmp_path, resolver)
    try:
        infos = [b"one", b"", b"three"]
        got = outputs(worker, [transparent(i) for i in infos])
        assert got == [("client", "send", [b"one", b"three"], bus.Ref("uart", 9, 4, 0))]
        assert worker.counters["frames"] == 3
        # The per-frame path gives the same result for the same frames.
        mixed = [transparent(b"one"), transparent(b"three")]
        unknown = 0x7E77
        assert resolver.get(unknown) is None
        mixed.append(rfc1662.encode(rfc1662.Frame(unknown, 0xBF, b"x")))  # no handler: per frame
        assert outputs(worker, mixed)[0][2] == [b"one", b"three"]
        assert worker.counters["frames.unknown_protocol"] == 1
    finally:
        worker.close()


def test_a_users_own_0x2100_handler_replaces_the_batch_path(tmp_path) -> None:
    own = Resolver()
    own.register_batch(rfc1662.PROTO_TRANSPARENT, handlers.handle_2100)(handlers.handle_2100_batch)

    @own.register(rfc1662.PROTO_TRANSPARENT)
    def mine(app: Any, frame: rfc1662.Frame) -> None:
        app.client.send(frame.info.upper())

    assert own.batch(rfc1662.PROTO_TRANSPARENT) is None
    worker = make_worker(tmp_path, own)
    try:
        assert outputs(worker, [transparent(b"ab")])[0][2] == [b"AB"]
    finally:
        worker.close()


def test_only_the_send_to_the_client_carries_the_units_ref(tmp_path) -> None:
    """A reply to the meter in the same batch is not part of the uplink stream:
    with the ref it would look like HES data to the uart, which would then
    acknowledge its own unit (a loss) or drop the reply as a gap."""
    worker = make_worker(tmp_path, resolver)
    try:
        get = rfc1662.encode(rfc1662.Frame(rfc1662.PROTO_PARAMS, rfc1662.CMD_GET, b"\x03\x80"))
        got = {(dst, op): ref for dst, op, _, ref in outputs(worker, [transparent(b"d"), get])}
        assert got == {("client", "send"): bus.Ref("uart", 9, 4, 0), ("uart", "write"): None}
    finally:
        worker.close()

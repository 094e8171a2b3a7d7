"""Resolver workers: decode each frame and dispatch it by protocol id.

As in the reference solution, handlers are registered on a resolver by
protocol id::

    from services.resolver import resolver

    @resolver.register(0x2100)
    def handle_2100(app, frame):
        app.client.send(frame.info)

A handler gets the worker (``app``) and the decoded ``Frame``. What it sends
with ``app.<service>.<op>(data)`` is not sent at once: it becomes the job's
result, which the broker releases in the order the meter sent the frames, so
replies and uplink data keep their order however many workers run.

Users add handlers in their own modules, named in ``RESOLVER.handlers``;
every worker imports them at start. Registering a protocol id twice is an
error at start. A frame with no handler is counted and logged.

Workers keep no state between frames except what they learn from events
(signal quality, network and link state), so any worker can take any frame.
Run as many as the load needs: ``python -m services.resolver`` each.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from common import bus, buskeys, rfc1662
from common.service import Service, main_for

log = logging.getLogger("meterlink.resolver")

HandlerFn = Callable[["Worker", rfc1662.Frame], None]
BatchFn = Callable[["Worker", list[bytes]], None]
_packb = msgpack.Packer(use_bin_type=True).pack


class Resolver:
    """A registry of frame handlers by protocol id (the reference's resolver)."""

    def __init__(self) -> None:
        self._handlers: dict[int, HandlerFn] = {}
        self._batch: dict[int, tuple[HandlerFn, BatchFn]] = {}

    def register(self, protocol: int) -> Callable[[HandlerFn], HandlerFn]:
        if not 0 <= protocol <= 0xFFFF:
            raise ValueError(f"protocol id out of range: {protocol:#x}")

        def deco(fn: HandlerFn) -> HandlerFn:
            if protocol in self._handlers:
                old = self._handlers[protocol]
                raise ValueError(
                    f"protocol {protocol:#06x} registered twice: "
                    f"{old.__module__}.{old.__qualname__} and {fn.__module__}.{fn.__qualname__}"
                )
            self._handlers[protocol] = fn
            return fn

        return deco

    def register_batch(self, protocol: int, per_frame: HandlerFn) -> Callable[[BatchFn], BatchFn]:
        """A whole-batch form of ``per_frame`` for 0x2100: ``fn(app, infos)`` gets
        the info fields of a batch in which every frame is of ``protocol``.

        Used only while ``per_frame`` is the handler registered for
        ``protocol`` (a user's own handler replaces both), and only for the
        ``quectel`` profile, whose frames the uart has already checked.
        """

        def deco(fn: BatchFn) -> BatchFn:
            self._batch[protocol] = (per_frame, fn)
            return fn

        return deco

    def unregister(self, protocol: int) -> None:
        self._handlers.pop(protocol, None)

    def get(self, protocol: int) -> HandlerFn | None:
        return self._handlers.get(protocol)

    def batch(self, protocol: int) -> BatchFn | None:
        pair = self._batch.get(protocol)
        if pair is None or self._handlers.get(protocol) is not pair[0]:
            return None
        return pair[1]

    def protocols(self) -> list[int]:
        return sorted(self._handlers)


#: The registry every worker dispatches on; handler modules decorate with it.
resolver = Resolver()


class Worker(Service):
    """One resolver worker: takes jobs from the broker's pool, returns results."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        ctx: zmq.Context[Any] | None = None,
        registry: Resolver | None = None,
    ) -> None:
        super().__init__(bus.RESOLVER, config, ctx=ctx, inbox=False, heartbeat=False)
        self.registry = registry if registry is not None else resolver
        uart = config["UART"]
        self.profile: str = uart["profile"]
        self.max_info: int = uart["max_info"]
        self.accm: int = uart["accm"]
        self.capacity: int = config["RESOLVER"]["prefetch"]
        #: What the worker has learnt from events; handlers read it.
        self.state: dict[str, Any] = {"lqi": 99, "net_up": None, "link_up": None}
        self._capture: list[list[Any]] | None = None

        self.dealer: zmq.Socket[bytes] = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.RECONNECT_IVL, 100)
        self.dealer.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self.ident = f"resolver-{os.getpid()}-{self.inst % 100000}".encode()
        self.dealer.setsockopt(zmq.IDENTITY, self.ident)
        buskeys.client(self.dealer, self.bus_cfg, self.run_dir, bus.RESOLVER)
        self.dealer.connect(self.endpoint(bus.RESOLVER_IN))
        self.add_socket(self.dealer, self._on_jobs)
        self.every(bus.HEARTBEAT_INTERVAL, self._pool_heartbeat)

        self.on_event(bus.T_NET_STATUS)(self._on_net_status)
        self.on_event(bus.T_LINK_STATUS)(self._on_link_status)

    # -- state from events -------------------------------------------------

    def _on_net_status(self, _topic: str, env: bus.Envelope) -> None:
        if isinstance(env.data, dict):
            if isinstance(env.data.get("lqi"), int):
                self.state["lqi"] = env.data["lqi"]
            if "up" in env.data:
                self.state["net_up"] = bool(env.data["up"])

    def _on_link_status(self, _topic: str, env: bus.Envelope) -> None:
        if isinstance(env.data, dict) and "up" in env.data:
            self.state["link_up"] = bool(env.data["up"])

    # -- pool protocol -------------------------------------------------------

    def _pool_send(self, kind: bytes, data: dict[str, Any]) -> None:
        try:
            self.dealer.send_multipart([kind, self.envelope(bus.OP_HB, data)], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.counters["bus.dropped"] += 1

    def setup(self) -> None:
        self._pool_send(bus.KIND_READY, {"capacity": self.capacity, "pid": os.getpid()})

    def _pool_heartbeat(self) -> None:
        data = self.heartbeat_data()
        data["capacity"] = self.capacity
        data["protocols"] = self.registry.protocols()
        self._pool_send(bus.KIND_HB, data)

    def _on_jobs(self) -> None:
        for _ in range(100):
            if self.stopping:
                return  # jobs left unanswered are redelivered by the broker
            try:
                parts = self.dealer.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) != 3 or parts[0] != bus.KIND_JOB:
                self.counters["bus.bad_message"] += 1
                continue
            try:
                out = self.process(parts[2])
            except Exception:
                # A bug must not kill the worker (and, redelivered, the next).
                self.counters["jobs.errors"] += 1
                log.exception("job failed; answering it empty")
                out = []
            try:
                self.dealer.send_multipart([bus.KIND_RESULT, parts[1], _packb(out)])
            except zmq.ZMQError as exc:
                self.counters["bus.dropped"] += 1
                log.warning("result dropped reason=%s", exc)

    # -- processing -------------------------------------------------------------

    def process(self, raw_env: bytes) -> list[list[Any]]:
        """Handle one job; return ``[[dst, envelope], ...]`` for the broker."""
        try:
            env = bus.decode(raw_env)
        except bus.EnvelopeError as exc:
            self.counters["bus.bad_envelope"] += 1
            log.warning("job dropped reason=bad_envelope error=%r", str(exc))
            return []
        if not isinstance(env.data, list):
            self.counters["bus.bad_envelope"] += 1
            return []
        self._capture = []
        try:
            if not self._handle_batch(env.data):
                for raw in env.data:
                    self.handle_frame(raw)
            captured = self._capture
        finally:
            self._capture = None
        ref = env.ref.wire() if env.ref is not None else None
        if ref is not None and not any(
            dst == bus.CLIENT and op == bus.OP_SEND for dst, op, _ in captured
        ):
            # Every unit of an acknowledged stream reaches the client, empty if
            # its frames had nothing for the HES: the client acknowledges
            # units in order, and a missing one would look like a loss.
            captured.append([bus.CLIENT, bus.OP_SEND, []])
        try:
            return [
                [dst, self.envelope(op, data, _ref_for(dst, op, ref))] for dst, op, data in captured
            ]
        except (TypeError, ValueError, OverflowError):
            return self._encode_each(captured, ref)

    def _encode_each(self, captured: list[list[Any]], ref: list[Any] | None) -> list[list[Any]]:
        """Something a handler sent does not encode: keep every item that does.

        Items of a batched list are tried one by one, so that one bad item
        costs only itself; those that encode still go as one message.
        """
        out: list[list[Any]] = []
        for dst, op, data in captured:
            if op in bus.BATCHABLE_OPS:
                good = [x for x in data if self._encodes(dst, op, x)]
                out.append([dst, self.envelope(op, good, _ref_for(dst, op, ref))])
            elif self._encodes(dst, op, data):
                out.append([dst, self.envelope(op, data, _ref_for(dst, op, ref))])
        return out

    def _encodes(self, dst: str, op: str, data: Any) -> bool:
        try:
            _packb(data)
            return True
        except (TypeError, ValueError, OverflowError) as exc:
            self.count_drop(
                "frames.handler_error",
                "handler output dropped reason=not_encodable dst=%s op=%s error=%r",
                dst,
                op,
                str(exc),
            )
            return False

    def _handle_batch(self, frames: list[Any]) -> bool:
        """A batch of 0x2100 frames as one unit (no FCS check again, one call);
        False if the batch is anything else, for the per-frame path."""
        if self.profile != "quectel":
            return False
        fn = self.registry.batch(rfc1662.PROTO_TRANSPARENT)
        if fn is None:
            return False
        infos = rfc1662.transparent_infos(frames, self.max_info)
        if infos is None:
            return False
        self.counters["frames"] += len(infos)
        try:
            fn(self, infos)
        except Exception:
            self.counters["frames.handler_error"] += len(infos)
            log.exception("batch handler failed protocol=0x2100 frames=%d", len(infos))
        return True

    def handle_frame(self, raw: Any) -> None:
        self.counters["frames"] += 1
        try:
            frame = rfc1662.decode(raw, self.profile, max_info=self.max_info, accm=self.accm)
        except (rfc1662.FrameError, TypeError) as exc:
            self.count_drop("frames.bad", "frame dropped reason=decode error=%r", str(exc))
            return
        handler = self.registry.get(frame.protocol)
        if handler is None:
            self.count_drop(
                "frames.unknown_protocol",
                "frame dropped reason=unknown_protocol protocol=%#06x cmd=%#04x len=%d",
                frame.protocol,
                frame.cmd,
                len(frame.info),
            )
            return
        try:
            handler(self, frame)
        except Exception:
            self.counters["frames.handler_error"] += 1
            log.exception(
                "handler failed protocol=%#06x cmd=%#04x len=%d",
                frame.protocol,
                frame.cmd,
                len(frame.info),
            )

    def send(self, dst: str, op: str, data: Any, ref: list[Any] | None = None) -> None:
        """Inside a job, collect what handlers send; outside, send at once.

        Inside a job, batchable operations (``send``, ``write``) to one
        destination become one message, in the order sent: the client takes
        one ``send`` per unit of the uplink stream.
        """
        capture = self._capture
        if capture is None:
            super().send(dst, op, data, ref)
            return
        if op in bus.BATCHABLE_OPS:
            for item in capture:
                if item[0] == dst and item[1] == op:
                    item[2].extend(data)
                    return
            capture.append([dst, op, list(data)])
        else:
            capture.append([dst, op, data])

    def close(self) -> None:
        self.dealer.close(linger=0)
        super().close()


def _ref_for(dst: str, op: str, ref: list[Any] | None) -> list[Any] | None:
    """Only the unit's one ``send`` to the client carries its ref: a reply to
    the meter (``uart.write``) or anything else a handler sends is not part
    of the acknowledged uplink stream, and must not look like it."""
    return ref if dst == bus.CLIENT and op == bus.OP_SEND else None


def load_handlers(config: dict[str, Any]) -> None:
    """Import the built-in handlers and the user's modules from the config."""
    importlib.import_module("services.handlers")
    for name in config["RESOLVER"]["handlers"]:
        importlib.import_module(name)


def make_worker(config: dict[str, Any]) -> Worker:
    load_handlers(config)
    # Run as ``python -m services.resolver`` this module is ``__main__``; the
    # handler modules registered on the ``services.resolver`` copy, so use it.
    registry = importlib.import_module("services.resolver").resolver
    return Worker(config, registry=registry)


def main() -> None:
    main_for(make_worker, "resolver", __doc__, worker=True)


if __name__ == "__main__":
    main()

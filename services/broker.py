"""The broker: meterlink's Application mediator.

It binds every bus endpoint (see ``common.bus``) and, in one poll loop:

- routes each ``[dst, envelope]`` from ``broker.in`` to ``<dst>.in``; a
  destination that is not connected right now gets its messages held in a
  bounded queue (oldest dropped, counted) until it is;
- runs the resolver pool on ``resolver.in`` (ROUTER): frames from a source go
  to workers as jobs under credit-based flow control; results are released to
  their destinations in the order the source sent the frames, whatever order
  the workers finish in. A worker that misses its heartbeats, or that can no
  longer be reached, has its unfinished jobs handed to another; a result for a
  job already released is ignored, so nothing is released twice;
- forwards the event bus (XSUB -> XPUB) and keeps the last value of each state
  topic, sent again whenever something subscribes;
- keeps the registry of live services from their heartbeats and publishes it
  with its own counters;
- mirrors everything it routes on topic ``tap``, but only while some tap is
  subscribed, so an unwatched bus pays nothing;
- keeps every service's counter totals across restarts (``common.metrics``)
  and serves them, with the state gauges, to Prometheus on ``METRICS.listen``
  from a snapshot it refreshes with the registry, never per frame.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import math
import os
import time
from typing import Any

import msgpack
import zmq

from common import bus, buskeys
from common.metrics import Totals, read_totals
from common.pool import Job, Pool, Release
from common.service import Counters, Stopper, setup_logging

log = logging.getLogger("meterlink.broker")

_packb = msgpack.Packer(use_bin_type=True).pack
_TAP = bus.T_TAP.encode()
_STATE = frozenset(t.encode() for t in bus.STATE_TOPICS)
TOTALS_FILE = "metrics-totals.json"  # in the run directory
#: state topic -> its key in the metrics snapshot
_SNAPSHOT_TOPICS = {
    bus.T_LINK_STATUS.encode(): "link",
    bus.T_SERIAL_STATUS.encode(): "serial",
    bus.T_NET_STATUS.encode(): "net",
}


#: How often the broker takes group/other bits off files in the run directory
#: that a hand-started supervisord created under a loose umask.
PRIVATE_SWEEP_S = 60.0


class Broker:
    """One broker process; ``run()`` until ``stop()``."""

    def __init__(self, config: dict[str, Any], ctx: zmq.Context[Any] | None = None) -> None:
        self.config = config
        self.run_dir: str = config["_run_dir"]
        self.bus_cfg: dict[str, Any] = config["BUS"]
        self.inst = bus.new_instance_id()
        self.started = time.time()
        self._seq = 0
        self._own_ctx = ctx is None
        self.ctx: zmq.Context[Any] = ctx if ctx is not None else zmq.Context()
        self.counters = Counters()
        self._stop = Stopper()
        self._wake_fd: int | None = None

        # CURVE (if configured): the ZAP handler must run before the first bind.
        self.auth = buskeys.authenticator(self.ctx, self.bus_cfg, self.run_dir)
        self.pull = self._bind(zmq.PULL, bus.BROKER_IN)
        self.pool = self._bind(zmq.ROUTER, bus.RESOLVER_IN)
        self.pool.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.xsub = self._bind(zmq.XSUB, bus.EVENTS_IN)
        self.xpub = self._bind(zmq.XPUB, bus.EVENTS_OUT, sndhwm=bus.SNDHWM)
        self.xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.xsub.send(b"\x01")  # receive every topic from the publishers
        self.inboxes: dict[str, zmq.Socket[bytes]] = {}
        for name in bus.all_inbox_services(self.bus_cfg):
            self.inboxes[name] = self._bind(zmq.PUSH, f"{name}.in", sndhwm=bus.SNDHWM)
        self._inbox_names = {sock: name for name, sock in self.inboxes.items()}
        self.pending: dict[str, collections.deque[list[bytes]]] = {
            name: collections.deque() for name in self.inboxes
        }
        self.pending_bytes: dict[str, int] = dict.fromkeys(self.inboxes, 0)

        self.subscriptions: set[bytes] = set()
        self.tap_active = False
        self.last_values: dict[bytes, list[bytes]] = {}

        self.registry: dict[tuple[str, int], dict[str, Any]] = {}
        self.pool_state = Pool(
            backlog_max_frames=bus.POOL_BACKLOG_MAX,
            backlog_max_bytes=bus.POOL_BACKLOG_MAX_BYTES,
            max_attempts=bus.POOL_MAX_ATTEMPTS,
            liveness_s=bus.HEARTBEAT_INTERVAL * bus.LIVENESS,
            first_job_id=time.time_ns(),  # increases across restarts: no id reuse
        )
        self._unknown_logged: set[str] = set()

        # Counter totals across restarts (of the services and of the broker).
        self.totals = Totals()
        self.totals_path = os.path.join(self.run_dir, TOTALS_FILE)
        self.totals.load(read_totals(self.totals_path), time.monotonic())
        self._totals_text = ""  # what was last written
        self.metrics_snapshot: dict[str, Any] = {}
        self.metrics: Any = None

    # -- sockets -------------------------------------------------------------

    def _bind(self, kind: int, name: str, sndhwm: int = 0) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if sndhwm:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        buskeys.server(sock, self.bus_cfg, self.run_dir)  # CURVE, if configured
        address = bus.endpoint(self.bus_cfg, self.run_dir, name)
        if address.startswith("ipc://"):
            path = address[len("ipc://") :]
            if os.path.exists(path):
                os.unlink(path)  # left by a broker that was killed
        sock.bind(address)
        return sock

    def _envelope(self, op: str, data: Any, ref: list[Any] | None = None) -> bytes:
        seq = self._seq
        self._seq += 1
        return bus.encode_parts(bus.BROKER, self.inst, seq, op, data, ref)

    def publish(self, topic: str, data: Any) -> None:
        parts = [topic.encode(), self._envelope(bus.OP_EVENT, data)]
        if parts[0] in _STATE:
            self.last_values[parts[0]] = parts
        self._broadcast(parts)

    def _broadcast(self, parts: list[bytes], dropped: str = "events.dropped") -> None:
        """Send on the event bus; a slow subscriber costs a counted drop, never a stall."""
        try:
            self.xpub.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.counters[dropped] += 1

    # -- routing ---------------------------------------------------------------

    def route(self, dst: str, env: bytes, src: str) -> None:
        """Deliver one envelope to ``dst``'s inbox, or hold it, or count a drop."""
        sock = self.inboxes.get(dst)
        if sock is None:
            self.counters["drop.unknown_dst"] += 1
            if dst not in self._unknown_logged and len(self._unknown_logged) < bus.NAMES_MAX:
                self._unknown_logged.add(dst)
                log.warning("message dropped reason=unknown_dst dst=%r src=%s", dst, src)
            return
        self._count_route(src, dst)
        if self.tap_active:
            self._mirror(src, dst, env)
        parts = [dst.encode(), env]
        pending = self.pending[dst]
        if not pending:
            try:
                sock.send_multipart(parts, flags=zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
        while pending and (
            len(pending) >= bus.PENDING_MAX
            or self.pending_bytes[dst] + len(env) > bus.PENDING_MAX_BYTES
        ):
            old = pending.popleft()
            self.pending_bytes[dst] -= len(old[1])
            self.counters[f"drop.queue_full.{dst}"] += 1
        pending.append(parts)
        self.pending_bytes[dst] += len(env)

    def _count_route(self, src: str, dst: str) -> None:
        key = f"route.{src}>{dst}"
        if key not in self.counters and len(self.counters) >= bus.NAMES_MAX:
            key = f"route.other>{dst}"  # names come from senders: keep the table bounded
        self.counters[key] += 1

    def _flush_pending(self, name: str) -> None:
        sock = self.inboxes[name]
        pending = self.pending[name]
        while pending:
            try:
                sock.send_multipart(pending[0], flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            sent = pending.popleft()
            self.pending_bytes[name] -= len(sent[1])

    def _mirror(self, src: str, dst: str, env: bytes) -> None:
        self.counters["tap.mirrored"] += 1
        self._broadcast([_TAP, _packb([src, dst, time.time(), env])], "tap.dropped")

    def _on_broker_in(self) -> None:
        for _ in range(2000):
            try:
                parts = self.pull.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) != 2:
                self.counters["drop.bad_message"] += 1
                log.warning("message dropped reason=bad_parts parts=%d", len(parts))
                continue
            try:
                dst = parts[0].decode()
                env = bus.decode(parts[1])
            except (UnicodeDecodeError, bus.EnvelopeError) as exc:
                self.counters["drop.bad_envelope"] += 1
                log.warning("message dropped reason=bad_envelope error=%r", str(exc))
                continue
            if dst == bus.BROKER:
                self._on_own(env)
            elif dst == bus.RESOLVER:
                self._submit(env, parts[1])
            else:
                self.route(dst, parts[1], env.src)

    def _on_own(self, env: bus.Envelope) -> None:
        if env.op == bus.OP_HB and isinstance(env.data, dict):
            self._heartbeat(env.src, env.inst, env.data)
        else:
            self.counters["drop.unknown_op"] += 1
            log.warning("message dropped reason=unknown_op op=%s src=%s", env.op, env.src)

    def _heartbeat(self, name: str, inst: int, data: dict[str, Any]) -> None:
        key = (name, inst)
        entry = self.registry.get(key)
        fresh = entry is None
        if entry is None:
            log.info("service up name=%s pid=%s", name, data.get("pid"))
            entry = self.registry[key] = {"name": name, "inst": inst}
        for key_, value in data.items():
            if key_ not in ("name", "inst", "last_seen", "age"):
                entry[key_] = value
        if not isinstance(entry.get("pid"), int):
            entry["pid"] = 0
        entry["last_seen"] = time.monotonic()
        self.totals.update(name, inst, data.get("counters"), entry["last_seen"])
        if fresh:
            self._publish_registry()

    # -- the resolver pool -------------------------------------------------------

    def _submit(self, env: bus.Envelope, raw: bytes) -> None:
        if env.op != bus.OP_FRAMES or not isinstance(env.data, list):
            self.counters["drop.unknown_op"] += 1
            log.warning("message dropped reason=unknown_op dst=resolver op=%s", env.op)
            return
        nframes = len(env.data)
        if self.tap_active:
            self._mirror(env.src, bus.RESOLVER, raw)
        self._count_route(env.src, bus.RESOLVER)
        ref = env.ref.wire() if env.ref is not None else None
        # One stream per source name, not per instance: what a restarted uart
        # sends again from its journal is released before what it reads anew.
        if not self.pool_state.submit(env.src, raw, nframes, ref, time.monotonic()):
            log.warning("frames dropped reason=pool_backlog count=%d", nframes)

    def _assign(self) -> None:
        self.pool_state.assign(self._send_job)

    def _send_job(self, ident: bytes, job: Job) -> bool:
        try:
            self.pool.send_multipart(
                [ident, bus.KIND_JOB, job.id.to_bytes(8, "big"), job.env], flags=zmq.NOBLOCK
            )
            return True
        except (zmq.Again, zmq.ZMQError) as exc:
            # Unreachable (gone) or full: the pool puts the job back and forgets the worker.
            log.warning("worker unreachable ident=%s error=%s", ident.hex(), exc)
            return False

    def _on_pool(self) -> None:
        pool = self.pool_state
        for _ in range(2000):
            try:
                parts = self.pool.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) < 3:
                self.counters["drop.bad_message"] += 1
                continue
            ident, kind = parts[0], parts[1]
            now = time.monotonic()
            if kind == bus.KIND_RESULT and len(parts) == 4:
                self._result(ident, int.from_bytes(parts[2], "big"), parts[3], now)
            elif kind in (bus.KIND_READY, bus.KIND_HB):
                try:
                    env = bus.decode(parts[2])
                except bus.EnvelopeError:
                    self.counters["drop.bad_envelope"] += 1
                    continue
                data = env.data if isinstance(env.data, dict) else {}
                capacity = data.get("capacity", bus.POOL_PREFETCH)
                pid = data.get("pid", 0)
                if not isinstance(capacity, int) or not isinstance(pid, int):
                    self.counters["drop.bad_message"] += 1
                    log.warning("worker message dropped reason=bad_fields ident=%r", ident)
                    continue
                capacity = max(1, min(capacity, bus.POOL_CAPACITY_MAX))
                if kind == bus.KIND_READY or not pool.worker_seen(ident, now, capacity):
                    self._lost_jobs(ident, pool.workers.get(ident))
                    self._release(pool.worker_ready(ident, capacity, pid, now))
                    log.info(
                        "worker up ident=%s pid=%s", ident.decode(errors="replace"), data.get("pid")
                    )
                if kind == bus.KIND_HB:
                    self._heartbeat(env.src, env.inst, data)
            else:
                self.counters["drop.bad_message"] += 1

    def _result(self, ident: bytes, job_id: int, raw: bytes, now: float) -> None:
        try:
            out = msgpack.unpackb(raw, raw=False)
            if not isinstance(out, list):
                raise ValueError("result is not a list")
        except Exception as exc:
            self.counters["drop.bad_result"] += 1
            log.warning("result dropped reason=bad_result job=%d error=%s", job_id, exc)
            out = None
        self._release(self.pool_state.result(ident, job_id, out, now))

    def _release(self, released: list[Release]) -> None:
        """Route released results, in their stream's order.

        A job released empty (it failed on every worker, or its result did not
        decode) still tells the client that its unit is done, so that the
        stream goes on; the frames are counted as dropped by the pool.
        """
        for job, outputs in released:
            to_client = False
            for item in outputs or ():
                if (
                    isinstance(item, list)
                    and len(item) == 2
                    and isinstance(item[0], str)
                    and isinstance(item[1], bytes)
                ):
                    to_client = to_client or item[0] == bus.CLIENT
                    self.route(item[0], item[1], bus.RESOLVER)
                else:
                    self.counters["drop.bad_result"] += 1
            if job.ref is not None and not to_client:
                # A worker that failed on the job (None, or an answer with
                # nothing for the client): the unit must still reach the
                # client, or every later one waits for it.
                self.counters["pool.units_emptied"] += 1
                env = self._envelope(bus.OP_SEND, [], job.ref)
                self.route(bus.CLIENT, env, bus.BROKER)

    def _lost_jobs(self, ident: bytes, worker: Any) -> None:
        if worker is not None and worker.inflight:
            log.warning(
                "worker lost ident=%s pid=%d jobs_requeued=%d",
                ident.decode(errors="replace"),
                worker.pid,
                len(worker.inflight),
            )

    # -- events and tap -------------------------------------------------------------

    def _on_xsub(self) -> None:
        for _ in range(2000):
            try:
                parts = self.xsub.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if parts[0] in _STATE:
                self.last_values[parts[0]] = parts
            self._broadcast(parts)

    def _on_xpub(self) -> None:
        for _ in range(2000):
            try:
                msg = self.xpub.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if not msg:
                continue
            topic = msg[1:]
            if msg[0] == 1:
                self.subscriptions.add(topic)
                for cached_topic, parts in list(self.last_values.items()):
                    if cached_topic.startswith(topic):
                        self._broadcast(parts)
            elif msg[0] == 0:
                self.subscriptions.discard(topic)
            was = self.tap_active
            self.tap_active = any(
                _TAP.startswith(t) or t.startswith(_TAP) for t in self.subscriptions
            )
            if was != self.tap_active:
                log.info("tap %s", "attached" if self.tap_active else "detached")

    # -- housekeeping -----------------------------------------------------------------

    def _expire(self, now: float) -> None:
        """Forget silent workers and services; monotonic time, so a step of
        the wall clock neither buries live services nor keeps dead ones."""
        limit = bus.HEARTBEAT_INTERVAL * bus.LIVENESS
        pool = self.pool_state
        for ident, worker in list(pool.workers.items()):
            if now - worker.last_seen > limit:
                self._lost_jobs(ident, worker)
        _gone, released = pool.expire(now)
        self._release(released)
        gone = [k for k, e in self.registry.items() if now - e["last_seen"] > limit]
        for key in gone:
            log.warning("service gone name=%s pid=%s", key[0], self.registry[key].get("pid"))
            del self.registry[key]
            self.totals.retire(*key)
        self.totals.expire(now, limit)
        if gone:
            self._publish_registry()

    def _make_private(self) -> None:
        from common.daemon import make_private

        if not os.path.isdir(self.run_dir):
            return
        fixed = make_private(self.run_dir)
        if fixed:
            log.warning("run directory files made private n=%d reason=loose_umask", fixed)

    def registry_data(self) -> dict[str, Any]:
        now = time.monotonic()
        pool = self.pool_state
        own = {**self.counters, **self.pool_state.counters}
        if self.auth is not None and self.auth[1].refused:
            own["auth.refused"] = self.auth[1].refused
        self.totals.update(bus.BROKER, self.inst, own, now)
        services = []
        for entry in sorted(self.registry.values(), key=lambda e: (e["name"], e["inst"])):
            item = {k: v for k, v in entry.items() if k != "last_seen"}
            item["age"] = round(now - entry["last_seen"], 3)
            services.append(item)
        return {
            "broker": {
                "pid": os.getpid(),
                "inst": self.inst,
                "started": self.started,
                "counters": own,
                "pending": {k: len(v) for k, v in self.pending.items() if v},
                "pool": {
                    "workers": len(pool.workers),
                    "queued_jobs": len(pool.queue),
                    "queued_frames": pool.queued_frames,
                    "inflight_jobs": pool.inflight_jobs,
                },
                "tap": self.tap_active,
            },
            "services": services,
            "totals": self.totals.totals(),
        }

    def _publish_registry(self) -> None:
        data = self.registry_data()
        self.publish(bus.T_REGISTRY, data)
        snap: dict[str, Any] = {"registry": data}
        for topic, key in _SNAPSHOT_TOPICS.items():
            parts = self.last_values.get(topic)
            if parts is not None:
                try:
                    snap[key] = bus.decode(parts[1]).data
                except (bus.EnvelopeError, IndexError):
                    pass
        for svc in data["services"]:  # heartbeats are fresher than state events
            if svc.get("name") == bus.CLIENT and isinstance(svc.get("link"), dict):
                snap["link"] = svc["link"]
            elif svc.get("name") == bus.UART and "open" in svc:
                snap["serial"] = svc
        self.metrics_snapshot = snap  # what the endpoint renders on a scrape

    def _save_totals(self) -> None:
        # Written when something changed: an idle gateway writes nothing.
        text = json.dumps(self.totals.dump())
        if text == self._totals_text:
            return
        try:
            self.totals.save(self.totals_path)
            self._totals_text = text
        except OSError as exc:
            self.counters["metrics.save_errors"] += 1
            log.warning("totals not saved error=%s", exc)

    def start_metrics(self) -> None:
        listen = self.config.get("METRICS", {}).get("listen", "")
        if not listen:
            return
        from services.metrics import MetricsServer

        self.metrics = MetricsServer(listen, lambda: self.metrics_snapshot)
        if not self.metrics.start():
            self.counters["metrics.errors"] += 1
            self.metrics = None

    # -- loop ------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.stop()

    def run(self) -> None:
        self._wake_fd = self._stop.install()
        log.info("broker started pid=%d run_dir=%s", os.getpid(), self.run_dir)
        try:
            self.start_metrics()
            self._loop()
        finally:
            self.close()
        log.info("broker stopped")

    def _guarded(self, fn: Any) -> None:
        """A bug tripped by one message is logged and counted, never fatal:
        the broker carries everything, so it must outlive any input."""
        try:
            fn()
        except Exception:
            self.counters["broker.errors"] += 1
            log.exception("broker handler failed fn=%s", getattr(fn, "__name__", fn))

    def _loop(self) -> None:
        poller = zmq.Poller()
        for sock in (self.pull, self.pool, self.xsub, self.xpub):
            poller.register(sock, zmq.POLLIN)
        if self._wake_fd is not None:
            poller.register(self._wake_fd, zmq.POLLIN)
        handlers = {
            self.pull: self._on_broker_in,
            self.pool: self._on_pool,
            self.xsub: self._on_xsub,
            self.xpub: self._on_xpub,
        }
        out_registered: set[str] = set()
        metrics_fds: dict[int, int] = {}  # the endpoint's fds, as registered
        next_house = time.monotonic()
        next_registry = time.monotonic() + bus.REGISTRY_INTERVAL
        next_private = time.monotonic()
        while not self._stop.is_set():
            for name, pending in self.pending.items():
                want = bool(pending)
                if want and name not in out_registered:
                    poller.register(self.inboxes[name], zmq.POLLOUT)
                    out_registered.add(name)
                elif not want and name in out_registered:
                    poller.unregister(self.inboxes[name])
                    out_registered.discard(name)
            if self.metrics is not None:
                metrics_fds = self._poll_metrics(poller, metrics_fds)
            now = time.monotonic()
            timeout = max(0.0, min(next_house, next_registry) - now)
            events = poller.poll(math.ceil(timeout * 1000))  # up: no busy last ms
            for sock, _ev in events:
                handler = handlers.get(sock)
                if handler is not None:
                    self._guarded(handler)
                elif sock in self._inbox_names:
                    self._flush_pending(self._inbox_names[sock])
                elif sock == self._wake_fd:
                    self._stop.drain()
                elif sock in metrics_fds and self.metrics is not None:
                    self._guarded(functools.partial(self.metrics.handle, sock))
            if self.pool_state.queue:
                self._guarded(self._assign)
            now = time.monotonic()
            if now >= next_house:
                next_house = now + bus.HEARTBEAT_INTERVAL
                self._expire(now)
                if self.metrics is not None:
                    self.metrics.expire(now)
                for name, pending in self.pending.items():
                    if pending:
                        self._flush_pending(name)
            if now >= next_registry:
                next_registry = now + bus.REGISTRY_INTERVAL
                self._publish_registry()
                self._save_totals()
            if now >= next_private:
                next_private = now + PRIVATE_SWEEP_S
                self._guarded(self._make_private)

    def _poll_metrics(self, poller: zmq.Poller, registered: dict[int, int]) -> dict[int, int]:
        """Bring the poller in line with the endpoint's fds (they come and go
        with scrapes): a closed one is unregistered before the next poll."""
        want = self.metrics.wanted()
        if want != registered:
            for fd in registered.keys() - want.keys():
                poller.unregister(fd)
            for fd, flags in want.items():
                if registered.get(fd) != flags:
                    poller.register(fd, flags)
        return want

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        self._save_totals()
        for sock in [self.pull, self.pool, self.xsub, self.xpub, *self.inboxes.values()]:
            sock.close(linger=0)
        if self.auth is not None:
            self.auth[0].stop()
        self._stop.close()
        if self._own_ctx:
            self.ctx.term()


def main() -> None:
    from common.daemon import boot, reload_config

    config, _ = boot("broker", doc=__doc__)
    setup_logging(config["LOG"]["level"], "broker")
    broker = Broker(config)
    broker._stop.on_reload = lambda: reload_config("broker", config, frozenset())
    broker.run()


if __name__ == "__main__":
    main()

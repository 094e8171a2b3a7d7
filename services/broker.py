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
  subscribed, so an unwatched bus pays nothing.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from common import bus
from common.service import Counters, Stopper, setup_logging

log = logging.getLogger("meterlink.broker")

_packb = msgpack.Packer(use_bin_type=True).pack
_TAP = bus.T_TAP.encode()
_STATE = frozenset(t.encode() for t in bus.STATE_TOPICS)


@dataclass(slots=True)
class Job:
    """Frames from one source message, waiting for or held by a worker."""

    id: int
    key: tuple[str, int]  # (src, inst): the ordering stream
    ordinal: int  # position in that stream
    env: bytes  # the source's envelope, forwarded untouched
    nframes: int
    attempts: int = 0
    worker: bytes | None = None


@dataclass(slots=True)
class Worker:
    ident: bytes
    capacity: int
    last_seen: float
    pid: int = 0
    inflight: dict[int, Job] = field(default_factory=dict)

    @property
    def credit(self) -> int:
        return self.capacity - len(self.inflight)


@dataclass(slots=True)
class Stream:
    """Release order for one source: results wait here until their turn."""

    next_ordinal: int = 0  # the next ordinal to hand out
    next_release: int = 0  # the next ordinal to release
    done: dict[int, list[list[Any]] | None] = field(default_factory=dict)
    last_active: float = 0.0


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
        self.workers: dict[bytes, Worker] = {}
        self.queue: collections.deque[Job] = collections.deque()
        self.queued_frames = 0
        self.queued_bytes = 0
        self.jobs: dict[int, Job] = {}
        self.streams: dict[tuple[str, int], Stream] = {}
        self._rr = 0  # round-robin start for _next_worker
        self._job_id = time.time_ns()  # increases across restarts: no id reuse
        self._unknown_logged: set[str] = set()

    # -- sockets -------------------------------------------------------------

    def _bind(self, kind: int, name: str, sndhwm: int = 0) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if sndhwm:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        address = bus.endpoint(self.bus_cfg, self.run_dir, name)
        if address.startswith("ipc://"):
            path = address[len("ipc://") :]
            if os.path.exists(path):
                os.unlink(path)  # left by a broker that was killed
        sock.bind(address)
        return sock

    def _envelope(self, op: str, data: Any) -> bytes:
        seq = self._seq
        self._seq += 1
        return bus.encode_parts(bus.BROKER, self.inst, seq, op, data)

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
        entry["last_seen"] = time.time()
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
        if (
            self.queued_frames + nframes > bus.POOL_BACKLOG_MAX
            or self.queued_bytes + len(raw) > bus.POOL_BACKLOG_MAX_BYTES
        ):
            self.counters["drop.pool_backlog"] += nframes
            log.warning("frames dropped reason=pool_backlog count=%d", nframes)
            return
        key = (env.src, env.inst)
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = Stream()
        stream.last_active = time.monotonic()
        self._job_id += 1
        job = Job(self._job_id, key, stream.next_ordinal, raw, nframes)
        stream.next_ordinal += 1
        self.jobs[job.id] = job
        self.queue.append(job)
        self.queued_frames += nframes
        self.queued_bytes += len(raw)
        self.counters["pool.frames_in"] += nframes

    def _assign(self) -> None:
        while self.queue:
            worker = self._next_worker()
            if worker is None:
                return
            job = self.queue.popleft()
            self.queued_frames -= job.nframes
            self.queued_bytes -= len(job.env)
            if job.id not in self.jobs:
                continue  # completed by a worker we had given up on
            try:
                self.pool.send_multipart(
                    [worker.ident, bus.KIND_JOB, job.id.to_bytes(8, "big"), job.env],
                    flags=zmq.NOBLOCK,
                )
            except (zmq.Again, zmq.ZMQError) as exc:
                # Unreachable (gone) or full: put the job back, forget the worker.
                self.queue.appendleft(job)
                self.queued_frames += job.nframes
                self.queued_bytes += len(job.env)
                log.warning("worker unreachable ident=%s error=%s", worker.ident.hex(), exc)
                self._worker_gone(worker)
                continue
            job.attempts += 1
            job.worker = worker.ident
            worker.inflight[job.id] = job

    def _next_worker(self) -> Worker | None:
        """The worker with the most credit; ties go round, so that at low
        rates every worker takes its share instead of always the first."""
        best: Worker | None = None
        workers = list(self.workers.values())
        n = len(workers)
        for k in range(n):
            w = workers[(self._rr + k) % n]
            if w.credit > 0 and (best is None or w.credit > best.credit):
                best = w
        if best is not None:
            self._rr = (workers.index(best) + 1) % n
        return best

    def _on_pool(self) -> None:
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
            worker = self.workers.get(ident)
            if kind == bus.KIND_RESULT and len(parts) == 4:
                if worker is not None:
                    worker.last_seen = now
                self._result(worker, int.from_bytes(parts[2], "big"), parts[3])
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
                if worker is None or kind == bus.KIND_READY:
                    if worker is not None:  # restarted with the same identity
                        self._worker_gone(worker)
                    worker = self.workers[ident] = Worker(ident, capacity, now)
                    log.info(
                        "worker up ident=%s pid=%s", ident.decode(errors="replace"), data.get("pid")
                    )
                worker.last_seen = now
                worker.pid = pid
                if kind == bus.KIND_HB:
                    self._heartbeat(env.src, env.inst, data)
            else:
                self.counters["drop.bad_message"] += 1

    def _result(self, worker: Worker | None, job_id: int, raw: bytes) -> None:
        job = self.jobs.get(job_id)
        if worker is not None:
            worker.inflight.pop(job_id, None)
        if job is None:
            # Released already (a slow worker answering after a redelivery),
            # or from before a broker restart: never release twice.
            self.counters["pool.duplicate_results"] += 1
            return
        try:
            out = msgpack.unpackb(raw, raw=False)
            if not isinstance(out, list):
                raise ValueError("result is not a list")
        except Exception as exc:
            self.counters["drop.bad_result"] += 1
            log.warning("result dropped reason=bad_result job=%d error=%s", job_id, exc)
            out = None
        if job.worker is not None and job.worker != (worker.ident if worker else None):
            other = self.workers.get(job.worker)
            if other is not None:
                other.inflight.pop(job_id, None)
        self._complete(job, out)

    def _complete(self, job: Job, out: list[list[Any]] | None) -> None:
        del self.jobs[job.id]
        stream = self.streams[job.key]
        stream.done[job.ordinal] = out
        self.counters["pool.frames_out"] += job.nframes
        while stream.next_release in stream.done:
            outputs = stream.done.pop(stream.next_release)
            stream.next_release += 1
            if outputs:
                for item in outputs:
                    if (
                        isinstance(item, list)
                        and len(item) == 2
                        and isinstance(item[0], str)
                        and isinstance(item[1], bytes)
                    ):
                        self.route(item[0], item[1], bus.RESOLVER)
                    else:
                        self.counters["drop.bad_result"] += 1

    def _worker_gone(self, worker: Worker) -> None:
        self.workers.pop(worker.ident, None)
        if not worker.inflight:
            return
        jobs = sorted(worker.inflight.values(), key=lambda j: (j.key, j.ordinal))
        log.warning(
            "worker lost ident=%s pid=%d jobs_requeued=%d",
            worker.ident.decode(errors="replace"),
            worker.pid,
            len(jobs),
        )
        for job in reversed(jobs):
            job.worker = None
            if job.attempts >= bus.POOL_MAX_ATTEMPTS:
                self.counters["drop.pool_attempts"] += job.nframes
                log.warning("frames dropped reason=attempts job=%d count=%d", job.id, job.nframes)
                self._complete(job, None)
                continue
            self.counters["pool.redelivered"] += 1
            self.queue.appendleft(job)
            self.queued_frames += job.nframes
            self.queued_bytes += len(job.env)
        worker.inflight.clear()

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

    def _expire(self, now_mono: float, now: float) -> None:
        limit = bus.HEARTBEAT_INTERVAL * bus.LIVENESS
        for worker in list(self.workers.values()):
            if now_mono - worker.last_seen > limit:
                self._worker_gone(worker)
        gone = [k for k, e in self.registry.items() if now - e["last_seen"] > limit]
        for key in gone:
            log.warning("service gone name=%s pid=%s", key[0], self.registry[key].get("pid"))
            del self.registry[key]
        if gone:
            self._publish_registry()
        for key, stream in list(self.streams.items()):
            idle = now_mono - stream.last_active > 60
            if idle and not stream.done and stream.next_release == stream.next_ordinal:
                del self.streams[key]

    def registry_data(self) -> dict[str, Any]:
        now = time.time()
        services = []
        for entry in sorted(self.registry.values(), key=lambda e: (e["name"], e["inst"])):
            item = dict(entry)
            item["age"] = round(now - entry["last_seen"], 3)
            services.append(item)
        return {
            "broker": {
                "pid": os.getpid(),
                "started": self.started,
                "counters": dict(self.counters),
                "pending": {k: len(v) for k, v in self.pending.items() if v},
                "pool": {
                    "workers": len(self.workers),
                    "queued_jobs": len(self.queue),
                    "queued_frames": self.queued_frames,
                    "inflight_jobs": sum(len(w.inflight) for w in self.workers.values()),
                },
                "tap": self.tap_active,
            },
            "services": services,
        }

    def _publish_registry(self) -> None:
        self.publish(bus.T_REGISTRY, self.registry_data())

    # -- loop ------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.stop()

    def run(self) -> None:
        self._wake_fd = self._stop.install()
        log.info("broker started pid=%d run_dir=%s", os.getpid(), self.run_dir)
        try:
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
        next_house = time.monotonic()
        next_registry = time.monotonic() + bus.REGISTRY_INTERVAL
        while not self._stop.is_set():
            for name, pending in self.pending.items():
                want = bool(pending)
                if want and name not in out_registered:
                    poller.register(self.inboxes[name], zmq.POLLOUT)
                    out_registered.add(name)
                elif not want and name in out_registered:
                    poller.unregister(self.inboxes[name])
                    out_registered.discard(name)
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
            if self.queue:
                self._guarded(self._assign)
            now = time.monotonic()
            if now >= next_house:
                next_house = now + bus.HEARTBEAT_INTERVAL
                self._expire(now, time.time())
                for name, pending in self.pending.items():
                    if pending:
                        self._flush_pending(name)
            if now >= next_registry:
                next_registry = now + bus.REGISTRY_INTERVAL
                self._publish_registry()

    def close(self) -> None:
        for sock in [self.pull, self.pool, self.xsub, self.xpub, *self.inboxes.values()]:
            sock.close(linger=0)
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

"""The service base: what every meterlink process is built on.

It plays the part of the reference solution's ``Application``: a service
connects to the broker, heartbeats, receives the operations addressed to it,
publishes and subscribes to events, and addresses the others by name, so that
``app.client.send(data)`` works here as ``CurrentApp().client.send(data)``
does there.

Theory of operation: one thread runs ``run()``, a poll loop over the inbox,
the event subscription, the file descriptors a service adds (its serial port,
its HES socket: ``add_socket`` for input, ``watch_writable`` while a write
waits for room), any thread inboxes and the signal wake-up pipe. On every pass
it runs the timers due (heartbeat among them), then polls, handles what
arrived and flushes the outbox. A thread a service still needs (a blocking
connect, a port without a descriptor) never touches a bus socket: it posts to
a ``ThreadInbox`` (inproc PUSH/PULL), which never blocks it; a full inbox
counts a drop. Sends to the broker never
block either: what the socket will not take now waits in a bounded outbox and
the oldest is dropped, with a count, when it is full.

SIGTERM or SIGINT only sets a flag; the loop then closes every socket with
linger 0 and terminates the context it created, well within a second.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from common import bus, buskeys, delivery

log = logging.getLogger("meterlink")

#: A periodic timer this close to due runs with the timers due now.
TIMER_SLACK_S = 0.005

Handler = Callable[[bus.Envelope], None]


def setup_logging(level: str = "INFO", name: str = "") -> None:
    """One line per event to stderr, which supervisord captures."""
    fmt = f"%(asctime)s %(levelname)s {name + ' ' if name else ''}%(message)s"
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format=fmt, force=True)


class Counters(collections.Counter[str]):
    """Named counters; every drop has one, so logs and ``status`` agree."""


class Stopper:
    """Shutdown on request: SIGTERM/SIGINT only set a flag and wake the loop.

    ``install()`` (main thread only) returns a file descriptor to poll; it
    becomes readable when a signal arrives or ``stop()`` is called from any
    thread, so a loop blocked in poll notices at once. Shared by the service
    base and the broker.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reload = threading.Event()
        #: Called in the loop thread after a SIGHUP (see ``drain``).
        self.on_reload: Callable[[], None] | None = None
        self._r: socket.socket | None = None
        self._w: socket.socket | None = None

    def install(self) -> int | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._event.set())
        # SIGHUP asks for a reload; ``drain`` (in the loop) calls ``on_reload``.
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        return self._r.fileno()

    def stop(self) -> None:
        self._event.set()
        if self._w is not None:
            try:
                self._w.send(b"\0")
            except OSError:
                pass

    def is_set(self) -> bool:
        return self._event.is_set()

    def drain(self) -> None:
        if self._r is None:
            return
        try:
            while self._r.recv(512):
                pass
        except OSError:
            pass
        if self._reload.is_set() and not self._event.is_set():
            self._reload.clear()
            if self.on_reload is not None:
                try:
                    self.on_reload()
                except Exception:
                    log.exception("reload failed")

    def close(self) -> None:
        if self._r is not None:
            signal.set_wakeup_fd(-1)
            self._r.close()
            self._r = None
        if self._w is not None:
            self._w.close()
            self._w = None


class ServiceProxy:
    """``app.<service>``: turns ``app.client.send(data)`` into a bus message."""

    __slots__ = ("_app", "_dst", "_calls")

    def __init__(self, app: Service, dst: str) -> None:
        self._app = app
        self._dst = dst
        self._calls: dict[str, Callable[[Any], None]] = {}

    def __getattr__(self, op: str) -> Callable[[Any], None]:
        if op.startswith("_"):
            raise AttributeError(op)
        call = self._calls.get(op)
        if call is None:  # made once per operation: handlers call these per frame
            app, dst, batch = self._app, self._dst, op in bus.BATCHABLE_OPS

            def call(data: Any = None) -> None:
                if batch and not isinstance(data, list):
                    data = [data]
                app.send(dst, op, data)

            self._calls[op] = call
        return call


class ThreadInbox:
    """A way for one reader thread to hand messages to the service loop.

    ``post(parts)`` never blocks: if the loop is that far behind, it refuses
    (returns False, counted under ``<name>.full``) and the poster decides
    (the poster keeps what was refused and tries again). Call ``post`` only from
    one thread (the socket is created lazily in the thread that first posts).
    """

    def __init__(self, app: Service, name: str, hwm: int) -> None:
        self.name = name
        self._app = app
        self._addr = f"inproc://thread-{name}-{id(self)}"
        self._hwm = hwm
        self.pull = app.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.RCVHWM, hwm)
        self.pull.bind(self._addr)
        self._push: zmq.Socket[bytes] | None = None
        self._local = threading.local()
        #: Handles what is waiting now, in the loop (set by ``Service.thread_inbox``).
        self.drain: Callable[[], None] = lambda: None

    def post(self, parts: list[bytes]) -> bool:
        push = getattr(self._local, "push", None)
        if push is None:
            push = self._app.ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.SNDHWM, self._hwm)
            push.setsockopt(zmq.LINGER, 0)
            push.connect(self._addr)
            self._local.push = push
            self._push = push
        try:
            push.send_multipart(parts, flags=zmq.NOBLOCK, copy=len(parts[0]) < 4096)
        except zmq.Again:
            self._app.counters[f"{self.name}.full"] += 1
            return False
        except zmq.ContextTerminated:
            return False
        return True

    def close_thread_side(self) -> None:
        """Close the posting socket; call from the posting thread when it ends."""
        push = getattr(self._local, "push", None)
        if push is not None:
            push.close(linger=0)
            self._local.push = None


class Service:
    """Base of every meterlink process. Subclasses register handlers and timers.

    ``name`` is the service's bus name; ``inbox`` False for processes that
    have no inbox of their own (the resolver workers, the tools).
    """

    def __init__(
        self,
        name: str,
        config: dict[str, Any],
        *,
        ctx: zmq.Context[Any] | None = None,
        inbox: bool = True,
        heartbeat: bool = True,
    ) -> None:
        self.name = name
        self.config = config
        self.run_dir: str = config["_run_dir"]
        self.bus_cfg: dict[str, Any] = config["BUS"]
        self.inst = bus.new_instance_id()
        self.started = time.time()
        self.counters = Counters()
        self._own_ctx = ctx is None
        self.ctx: zmq.Context[Any] = ctx if ctx is not None else zmq.Context()
        self._seq = 0
        self._stop = Stopper()
        self._stop.on_reload = self.reload
        self._handlers: dict[str, Handler] = {}
        self._event_handlers: list[tuple[str, Callable[[str, bus.Envelope], None]]] = []
        self._sockets: dict[Any, Callable[[], None]] = {}
        # Polled for POLLOUT while a write waits for room (``watch_writable``).
        self._writers: dict[Any, Callable[[], None]] = {}
        self._timers: list[list[Any]] = []
        self._outbox: collections.deque[list[bytes]] = collections.deque()
        self._outbox_bytes = 0
        self._thread_inboxes: list[ThreadInbox] = []
        self._closers: list[Callable[[], None]] = []
        self._threads: list[threading.Thread] = []
        self._peers: dict[str, int] = {}  # instance last seen of the broker and a peer
        self._heartbeat = heartbeat

        self.push = self._socket(zmq.PUSH, bus.BROKER_IN, sndhwm=bus.SNDHWM)
        self.pub = self._socket(zmq.PUB, bus.EVENTS_IN, sndhwm=bus.SNDHWM)
        self.sub = self._socket(zmq.SUB, bus.EVENTS_OUT)
        self._subscribed: set[str] = set()
        self.pull: zmq.Socket[bytes] | None = None
        if inbox:
            self.pull = self._socket(zmq.PULL, f"{name}.in")
            self._sockets[self.pull] = self._on_inbox
        self._sockets[self.sub] = self._on_event
        if heartbeat:
            self.every(bus.HEARTBEAT_INTERVAL, self.send_heartbeat)

    # -- sockets -------------------------------------------------------------

    def endpoint(self, name: str) -> str:
        return bus.endpoint(self.bus_cfg, self.run_dir, name)

    def _socket(self, kind: int, name: str, sndhwm: int = 0) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if sndhwm:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        buskeys.client(sock, self.bus_cfg, self.run_dir, self.name)  # CURVE, if configured
        sock.connect(self.endpoint(name))
        return sock

    def add_socket(self, sock: Any, handler: Callable[[], None]) -> None:
        """Poll ``sock`` (a zmq socket or a file descriptor) in the loop."""
        self._sockets[sock] = handler

    def remove_socket(self, sock: Any) -> None:
        """Stop polling ``sock`` altogether (for input and, if watched, for room)."""
        self._sockets.pop(sock, None)
        self._writers.pop(sock, None)

    def stop_reading(self, sock: Any) -> None:
        """Stop polling ``sock`` for input only: a write waiting for room on it
        (``watch_writable``) still is (backpressure pauses reads, not writes)."""
        self._sockets.pop(sock, None)

    def watch_writable(self, sock: Any, handler: Callable[[], None] | None) -> None:
        """Call ``handler`` in the loop whenever ``sock`` is writable, until
        called again with None: a write that would block waits for room in
        the loop, not in a thread. ``sock`` is a zmq socket or an int file
        descriptor (the poller reports raw fds as ints)."""
        if handler is None:
            self._writers.pop(sock, None)
        else:
            self._writers[sock] = handler

    def thread_inbox(
        self, name: str, handler: Callable[[list[bytes]], None], hwm: int = 10_000
    ) -> ThreadInbox:
        """A channel from a reader thread; ``handler(parts)`` runs in the loop."""
        box = ThreadInbox(self, name, hwm)
        self._thread_inboxes.append(box)

        def drain() -> None:
            for _ in range(1000):
                try:
                    parts = box.pull.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    return
                self.guarded(f"thread_inbox.{name}", handler, parts)

        self._sockets[box.pull] = drain
        box.drain = drain
        return box

    def add_thread(self, thread: threading.Thread) -> None:
        """A thread of this service: ``close()`` leaves the ZeroMQ context to
        the process exit while it still runs (it may own a socket)."""
        self._threads.append(thread)

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when the service stops (join threads, close ports)."""
        self._closers.append(fn)

    # -- sending ---------------------------------------------------------------

    def next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def envelope(self, op: str, data: Any, ref: list[Any] | None = None) -> bytes:
        return bus.encode_parts(self.name, self.inst, self.next_seq(), op, data, ref)

    def send(self, dst: str, op: str, data: Any, ref: list[Any] | None = None) -> None:
        """Send ``op`` to service ``dst`` through the broker; never blocks."""
        self.send_raw([dst.encode(), self.envelope(op, data, ref)])

    def send_raw(self, parts: list[bytes]) -> None:
        if self._outbox:
            self._queue(parts)
            return
        try:
            self.push.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            self._queue(parts)

    def _queue(self, parts: list[bytes]) -> None:
        size = sum(len(p) for p in parts)
        while self._outbox and (
            len(self._outbox) >= bus.OUTBOX_MAX or self._outbox_bytes + size > bus.OUTBOX_MAX_BYTES
        ):
            old = self._outbox.popleft()
            self._outbox_bytes -= sum(len(p) for p in old)
            self.count_drop("bus.dropped", "bus message dropped reason=outbox_full")
        self._outbox.append(parts)
        self._outbox_bytes += size

    def take_unit(
        self,
        rx: delivery.Receiver,
        ref: bus.Ref,
        label: str,
        written: Callable[[], int] | None = None,
    ) -> bool:
        """The receiving end of an acknowledged stream: True if unit ``ref`` is
        the next one (take it in). A unit already had is acknowledged again (up
        to what ``written()`` says is safe, if given); a unit after a gap asks
        for the gap; a resync is logged. Counted as ``<label>.duplicates``,
        ``<label>.gaps``, ``<label>.resyncs``."""
        verdict = rx.offer(ref.src, ref.inst, ref.n, ref.base)
        skipped = rx.take_resync()
        if skipped is not None:
            self.count_drop(
                f"{label}.resyncs",
                f"{label} resync src=%s inst=%d skipped=%d..%d reason=acknowledged_elsewhere",
                *skipped,
            )
        if verdict is delivery.Verdict.ACCEPT:
            return True
        if verdict is delivery.Verdict.DUPLICATE:
            self.counters[f"{label}.duplicates"] += 1
            if written is not None:
                rx.made_durable(ref.src, ref.inst, written())
            durable = rx.durable(ref.src, ref.inst)
            if durable >= 0:
                self.send(ref.src, bus.OP_ACK, [ref.inst, durable])
            return False
        self.counters[f"{label}.gaps"] += 1
        want = rx.nack_due(ref.src, ref.inst, time.monotonic())
        if want is not None:
            self.send(ref.src, bus.OP_NACK, [ref.inst, want])
        return False

    def restarted_peers(self, registry: Any, peer: str) -> tuple[list[str], bool]:
        """From a registry publication: which of the broker and ``peer`` have a
        new instance since the last publication seen (what they held for us is
        gone), and whether ``peer`` runs at all."""
        data = registry if isinstance(registry, dict) else {}
        seen: dict[str, int] = {}
        broker = data.get("broker")
        if isinstance(broker, dict) and isinstance(broker.get("inst"), int):
            seen[bus.BROKER] = broker["inst"]
        for svc in data.get("services") or ():
            if (
                isinstance(svc, dict)
                and svc.get("name") == peer
                and isinstance(svc.get("inst"), int)
            ):
                seen[peer] = max(svc["inst"], seen.get(peer, 0))
        restarted = []
        for name, inst in seen.items():
            before = self._peers.get(name)
            self._peers[name] = inst
            if before is not None and before != inst:
                restarted.append(name)
        return restarted, peer in seen

    def count_drop(self, counter: str, message: str, *args: Any, n: int = 1) -> None:
        """Count a drop and log it: the first ten, then every thousandth."""
        before = self.counters[counter]
        self.counters[counter] = before + n
        if before < 10 or before // 1000 != (before + n) // 1000:
            log.warning(message + " total=%d", *args, before + n)

    def _flush_outbox(self) -> None:
        while self._outbox:
            try:
                self.push.send_multipart(self._outbox[0], flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            sent = self._outbox.popleft()
            self._outbox_bytes -= sum(len(p) for p in sent)

    def publish(self, topic: str, data: Any) -> None:
        """Publish an event; dropped (counted) rather than blocking if the bus is slow."""
        try:
            self.pub.send_multipart(
                [topic.encode(), self.envelope(bus.OP_EVENT, data)], flags=zmq.NOBLOCK
            )
        except zmq.Again:
            self.counters["events.dropped"] += 1

    def __getattr__(self, name: str) -> ServiceProxy:
        # Only reached for names that are not attributes: ``app.client`` etc.
        # Limited to known services so that a typo stays an AttributeError.
        if name.startswith("_") or "bus_cfg" not in self.__dict__:
            raise AttributeError(name)
        if name not in bus.all_inbox_services(self.bus_cfg) and name != bus.BROKER:
            raise AttributeError(f"{type(self).__name__} has no attribute or service {name!r}")
        proxy = ServiceProxy(self, name)
        self.__dict__[name] = proxy  # later look-ups are plain attribute hits
        return proxy

    # -- receiving -------------------------------------------------------------

    def on(self, op: str) -> Callable[[Handler], Handler]:
        """Decorator: handle operation ``op`` arriving in this service's inbox."""

        def deco(fn: Handler) -> Handler:
            self._handlers[op] = fn
            return fn

        return deco

    def on_event(
        self, topic: str
    ) -> Callable[[Callable[[str, bus.Envelope], None]], Callable[[str, bus.Envelope], None]]:
        """Decorator: handle events whose topic starts with ``topic``."""

        def deco(fn: Callable[[str, bus.Envelope], None]) -> Callable[[str, bus.Envelope], None]:
            self._event_handlers.append((topic, fn))
            self.subscribe(topic)
            return fn

        return deco

    def subscribe(self, topic: str) -> None:
        if topic not in self._subscribed:
            self.sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
            self._subscribed.add(topic)

    def _on_inbox(self) -> None:
        assert self.pull is not None
        for _ in range(1000):
            try:
                parts = self.pull.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self.dispatch(parts[-1])

    def dispatch(self, raw: bytes) -> None:
        try:
            env = bus.decode(raw)
        except bus.EnvelopeError as exc:
            self.counters["bus.bad_envelope"] += 1
            log.warning("message dropped reason=bad_envelope error=%r", str(exc))
            return
        handler = self._handlers.get(env.op)
        if handler is None:
            self.counters["bus.unknown_op"] += 1
            log.warning("message dropped reason=unknown_op op=%s src=%s", env.op, env.src)
            return
        self.guarded(f"op.{env.op}", handler, env)

    def guarded(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        """Run a handler; an exception is logged and counted, never fatal.

        One bad message (or a bug its handler trips over) must not stop the
        service and with it everything else that flows through it.
        """
        try:
            fn(*args)
        except Exception:
            self.counters["handler.errors"] += 1
            log.exception("handler failed what=%s", what)

    def _on_event(self) -> None:
        for _ in range(1000):
            try:
                parts = self.sub.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) != 2:
                self.counters["events.bad"] += 1
                continue
            topic = parts[0].decode(errors="replace")
            try:
                env = bus.decode(parts[1])
            except bus.EnvelopeError:
                self.counters["events.bad"] += 1
                continue
            for prefix, fn in self._event_handlers:
                if topic.startswith(prefix):
                    self.guarded(f"event.{topic}", fn, topic, env)

    # -- timers and heartbeat ----------------------------------------------------

    def every(self, interval: float, fn: Callable[[], None], first: float | None = None) -> None:
        """Call ``fn`` every ``interval`` seconds from the loop."""
        if interval <= 0:
            raise ValueError(f"every: interval must be > 0, not {interval}")
        due = time.monotonic() + (interval if first is None else first)
        self._timers.append([due, interval, fn])

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` once from the loop in ``delay`` seconds (no periodic wake-up)."""
        self._timers.append([time.monotonic() + delay, None, fn])

    def heartbeat_data(self) -> dict[str, Any]:
        """What the heartbeat carries; subclasses add their state."""
        return {
            "pid": os.getpid(),
            "started": self.started,
            "inst": self.inst,
            "counters": dict(self.counters),
        }

    def send_heartbeat(self) -> None:
        # Never queued: while the broker is away, stale heartbeats must not
        # fill the outbox and push out real data.
        if self._outbox:
            self.counters["heartbeat.skipped"] += 1
            return
        try:
            self.push.send_multipart(
                [bus.BROKER.encode(), self.envelope(bus.OP_HB, self.heartbeat_data())],
                flags=zmq.NOBLOCK,
            )
        except zmq.Again:
            self.counters["heartbeat.skipped"] += 1

    def _run_timers(self, now: float) -> float:
        nearest = now + bus.POLL_MAX
        once = False
        for timer in list(self._timers):
            interval = timer[1]
            # A periodic timer due within TIMER_SLACK_S runs with those due
            # now, and keeps its phase (not "now + interval"): the timers a
            # service starts together (heartbeat, ticks, status) then wake
            # it once, not each on its own. One-shot timers run on time.
            if timer[0] <= (now if interval is None else now + TIMER_SLACK_S):
                if interval is None:  # call_later: run once, then forget
                    timer[0] = -1.0
                    once = True
                else:
                    due = timer[0] + interval
                    timer[0] = due if due > now else now + interval
                try:
                    timer[2]()
                except Exception:
                    self.counters["timer.errors"] += 1
                    log.exception("timer failed fn=%s", getattr(timer[2], "__name__", timer[2]))
        if once:
            self._timers = [t for t in self._timers if t[0] >= 0]
        # Over the list as it is now: a callback may have scheduled a timer
        # (call_later) that is due before anything else.
        for timer in self._timers:
            nearest = min(nearest, timer[0])
        return nearest

    # -- the loop -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end; safe from a signal handler or another thread."""
        self._stop.stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _install_signals(self) -> None:
        fd = self._stop.install()
        if fd is not None:
            self._sockets[fd] = self._stop.drain

    def setup(self) -> None:
        """Called once before the loop: open ports, start threads."""

    #: Config keys this service applies live on SIGHUP (``apply_config``).
    LIVE_KEYS: frozenset[str] = frozenset()

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply what can change live, log the rest."""
        from common.daemon import reload_config

        new, applied = reload_config(self.name, self.config, self.LIVE_KEYS)
        if new is None:
            return
        self.apply_config(new, applied)
        self.config = new

    def apply_config(self, new: dict[str, Any], changed: list[str]) -> None:
        """Take the live keys in ``changed`` from ``new``; subclasses override."""

    def run(self) -> None:
        """Run the service until stopped, then close everything."""
        self._install_signals()
        log.info("service starting name=%s pid=%d", self.name, os.getpid())
        try:
            self.setup()
            if self._heartbeat:
                self.send_heartbeat()
            self._loop()
        finally:
            self.close()
        log.info("service stopped name=%s", self.name)

    def _loop(self) -> None:
        poller = zmq.Poller()
        registered: dict[Any, int] = {}
        readers, writers = self._sockets, self._writers
        while not self._stop.is_set():
            # Timers first: a socket one of them adds is polled in this pass.
            nearest = self._run_timers(time.monotonic())
            # (Re)register what changed: sockets come and go with connections,
            # and a socket is polled for POLLOUT only while a write waits.
            wanted: dict[Any, int] = dict.fromkeys(readers, zmq.POLLIN)
            for sock in writers:
                wanted[sock] = wanted.get(sock, 0) | zmq.POLLOUT
            if self._outbox:
                wanted[self.push] = zmq.POLLOUT
            if wanted != registered:
                for sock in list(registered):
                    if sock not in wanted:
                        poller.unregister(sock)
                        del registered[sock]
                for sock, flags in wanted.items():
                    if registered.get(sock) != flags:
                        poller.register(sock, flags)  # registers or modifies
                        registered[sock] = flags
            # Rounded up: rounding down polls with 0 in a timer's last
            # millisecond, a busy loop that costs an idle service real CPU.
            timeout_ms = max(0, math.ceil((nearest - time.monotonic()) * 1000))
            try:
                events = poller.poll(timeout_ms)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM:
                    break
                raise
            for sock, ev in events:
                if sock is self.push:
                    self._flush_outbox()
                    continue
                # An error or hang-up wakes the reader (its read reports it),
                # else the writer.
                if ev & ~zmq.POLLOUT:
                    handler = readers.get(sock) or writers.get(sock)
                    if handler is not None:
                        self.guarded("poll", handler)
                if ev & zmq.POLLOUT:
                    handler = writers.get(sock)
                    if handler is not None:
                        self.guarded("poll", handler)
            if self._outbox:
                self._flush_outbox()

    def close(self) -> None:
        for fn in reversed(self._closers):
            try:
                fn()
            except Exception:
                log.exception("close failed")
        for box in self._thread_inboxes:
            box.pull.close(linger=0)
        for sock in (self.push, self.pub, self.sub, self.pull):
            if sock is not None:
                sock.close(linger=0)
        for sock in list(self._sockets):
            if isinstance(sock, zmq.Socket):
                sock.close(linger=0)
        self._stop.close()
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            # A socket is closed only by the thread that uses it: a thread
            # that did not end in time keeps its own, and the context, until
            # the process exits (its threads are daemons).
            log.warning("threads still running at close names=%s action=left_to_exit", stuck)
        elif self._own_ctx:
            self.ctx.term()


def main_for(
    factory: Callable[[dict[str, Any]], Service],
    name: str,
    doc: str | None = None,
    worker: bool = False,
) -> None:
    """Entry point shared by the services: arguments, umask, run directory,
    single-instance lock, config (``common.daemon.boot``), logging, run."""
    from common.daemon import boot, log_start_notes

    config, _args = boot(name, doc=doc, worker=worker)
    setup_logging(config["LOG"]["level"], name)
    log_start_notes(config, name)
    service = factory(config)
    service.run()

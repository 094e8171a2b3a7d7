"""The pipeline bench: the real stack, a meter on a pseudo-terminal, an HES on TCP.

``BenchStack`` starts the gateway's own programs as real processes (``python
-m services.broker``, ``services.resolver`` once per worker, ``services.uart``,
``services.client``, ``services.watchdog``), as supervisord would, with a bench
config in a short run directory under /tmp. The bench process plays both ends:

- the **meter** is the master side of a pty (``Meter``); the uart opens the
  slave through the link ``<run_dir>/meter.tty``. Uplink payloads are 64 bytes
  that start with a 64-bit sequence number, one 0x2100/0xBF frame around each
  (75 bytes on the wire).
- the **HES** is a TCP server on 127.0.0.1 (``Hes``); a thread records every
  chunk it reads with ``time.perf_counter()``. The client sends the payloads as
  a plain byte stream, so records are cut every 64 bytes (``PayloadStream``)
  and each is stamped with the time of the read that completed it.

``Target`` is what the runs need of a path from a pty to a TCP reader, so the
same runs time ``bench.ser2net`` (the same payloads, bare, through ser2net).

Every figure is exact: the driver stamps each frame before writing it, the HES
stamps each payload, and a run is valid only if every sequence number of the
run arrived once and in order (``Arrivals.take``).

- ``latency_run``: paced writes, one frame per write on a ``perf_counter``
  schedule; latency is HES read time - pty write time.
- ``throughput_run``: a burst of N frames written as fast as the pty accepts
  them; the figure is N / (first write -> last arrival).
- ``downlink_run``: the HES writes 16-byte records (magic, sequence number) at
  a pace; the meter side deframes what the uart writes to the pty and stamps
  each record.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bench import footprint
from common import bus, rfc1662
from services.sim.fake_hes import FakeHES
from services.sim.meter_pty import MeterPty

ROOT = Path(__file__).resolve().parents[1]

#: Every uplink payload (what the HES reads) is 64 bytes: a sequence number and fill.
PAYLOAD_BYTES = 64
#: meterlink's meter sends one 0x2100 frame around each payload (quectel profile: no escaping).
FRAME_BYTES = rfc1662.frame_size(PAYLOAD_BYTES)  # 75
_FILL = bytes((i * 37 + 11) & 0xFF for i in range(PAYLOAD_BYTES - 8))
_UP = struct.Struct(">Q")
_UP_RECORDS = f">Q{PAYLOAD_BYTES - 8}x"

DOWN_MAGIC = b"DLNK"
DOWN_BYTES = 16
_DOWN = struct.Struct(">4sQ4x")

#: The stack must come up (processes, registry, first payload through) within this.
START_TIMEOUT_S = 30.0
#: A worker added or removed shows in the broker's registry within this.
WORKERS_TIMEOUT_S = 10.0
#: After the last write, a run fails if no new payload arrives for this long.
STALL_S = 10.0
#: How often the waiting side looks for new arrivals.
POLL_S = 0.02
#: Quiet time after a run, to catch late duplicates before the next run starts.
SETTLE_S = 0.05
#: The HES thread's select timeout (bounds how late it sees a stop).
HES_SELECT_S = 0.1
#: Time for a tap subscription to reach the broker, and for the last mirrors to arrive.
TAP_SETTLE_S = 0.5
#: How long a stopped process gets before SIGKILL.
STOP_WAIT_S = 3.0
#: How often readiness conditions are polled.
READY_POLL_S = 0.05
#: Warm-up frames are written this often until one reaches the HES.
WARMUP_EVERY_S = 0.2
#: After the first warm-up payload, the rest are waited for until this long without news.
WARMUP_QUIET_S = 1.0


class StackError(RuntimeError):
    """The stack did not start, or a process of it died."""


def uplink_payload(seq: int) -> bytes:
    return _UP.pack(seq) + _FILL


def uplink_frame(seq: int) -> bytes:
    return rfc1662.encode(
        rfc1662.Frame(rfc1662.PROTO_TRANSPARENT, rfc1662.CMD_SERIAL_NET, uplink_payload(seq))
    )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# -- arrivals ------------------------------------------------------------------------------


class Arrivals:
    """Sequence numbers with their arrival times, appended by one thread, read by another."""

    def __init__(self) -> None:
        self.seqs = array("q")
        self.times = array("d")
        self._lock = threading.Lock()
        self.cursor = 0  # records before this belong to earlier runs

    def add(self, seqs: Sequence[int], t: float) -> None:
        with self._lock:
            self.seqs.extend(seqs)
            self.times.extend([t] * len(seqs))

    def count(self) -> int:
        with self._lock:
            return len(self.seqs) - self.cursor

    def last_time(self) -> float:
        with self._lock:
            return self.times[-1] if self.times else 0.0

    def take(self, first: int, n: int) -> dict[str, Any]:
        """The records since the cursor, checked against ``first .. first+n-1``."""
        with self._lock:
            seqs = self.seqs[self.cursor :]
            times = self.times[self.cursor :]
            self.cursor = len(self.seqs)
        expected = array("q", range(first, first + n))
        if seqs == expected:
            return {"ok": True, "received": n, "lost": 0, "extra": 0, "times": times}
        arrival: dict[int, float] = {}
        extra = 0
        for s, t in zip(seqs, times, strict=True):
            if first <= s < first + n and s not in arrival:
                arrival[s] = t
            else:
                extra += 1
        in_range = [s for s in seqs if first <= s < first + n]
        return {
            "ok": False,
            "received": len(arrival),
            "lost": n - len(arrival),
            "extra": extra,
            "in_order": in_range == sorted(set(in_range)),
            "arrival": arrival,
        }


# -- the meter -----------------------------------------------------------------------------


class Meter:
    """The meter: the master side of a pty whose slave the uart opens via ``link``."""

    def __init__(self, link: Path | None = None) -> None:
        # The meter double the tests and the simulator use too.
        self.pty = MeterPty(link)
        self.master, self.slave = self.pty.master, self.pty.slave
        os.set_blocking(self.master, True)  # the bench's writes wait for room
        #: The slave's device path (``/dev/pts/N``).
        self.device = self.pty.slave_name
        self.down = Arrivals()
        self.down_bad = 0
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None

    def write_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def start_reader(self) -> None:
        """Read what the gateway writes to the meter: 0x2100 frames of downlink records."""
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, name="meter-reader", daemon=True)
            self._reader.start()

    def _read(self) -> None:
        deframer = rfc1662.Deframer()
        partial = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], HES_SELECT_S)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            t = time.perf_counter()
            seqs: list[int] = []
            for raw in deframer.feed(data):
                frame = rfc1662.decode(raw)
                if frame.protocol != rfc1662.PROTO_TRANSPARENT:
                    self.down_bad += 1
                    continue
                buf = partial + frame.info
                whole = len(buf) - len(buf) % DOWN_BYTES
                for magic, seq in _DOWN.iter_unpack(buf[:whole]):
                    if magic == DOWN_MAGIC:
                        seqs.append(seq)
                    else:
                        self.down_bad += 1
                partial = buf[whole:]
            if seqs:
                self.down.add(seqs, t)

    def close(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(1)
        self.pty.close()


# -- the head-end system ---------------------------------------------------------------------


class PayloadStream:
    """Cuts one TCP byte stream into payloads; adds their sequence numbers to ``up``."""

    def __init__(self, up: Arrivals) -> None:
        self.up = up
        self.partial = b""

    def feed(self, data: bytes, t: float) -> None:
        buf = self.partial + data if self.partial else data
        whole = len(buf) - len(buf) % PAYLOAD_BYTES
        if whole:
            self.up.add([r[0] for r in struct.iter_unpack(_UP_RECORDS, buf[:whole])], t)
        self.partial = buf[whole:]


class Hes:
    """The HES: the shared HES double on 127.0.0.1, stamping every payload it reads."""

    def __init__(self) -> None:
        self.up = Arrivals()
        self._streams: dict[int, PayloadStream] = {}
        self.double = FakeHES(on_data=self._on_data, record=False).start()
        self.port: int = self.double.port

    def _on_data(self, index: int, data: bytes, t: float) -> None:
        stream = self._streams.get(index)
        if stream is None:
            stream = self._streams[index] = PayloadStream(self.up)
        stream.feed(data, t)

    @property
    def connections(self) -> int:
        return self.double.connections

    def send(self, data: bytes) -> None:
        try:
            self.double.send(data)
        except AssertionError:
            raise StackError("the gateway is not connected to the HES") from None

    def close(self) -> None:
        self.double.stop()


# -- the registry ------------------------------------------------------------------------------


class Registry:
    """The broker's registry (services, counters, pool), read from the event bus."""

    def __init__(self, run_dir: str) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, bus.T_REGISTRY.encode())
        self.sub.connect(bus.endpoint({"transport": "ipc"}, run_dir, bus.EVENTS_OUT))
        self.latest: dict[str, Any] | None = None
        self.latest_ts = 0.0

    def poll(self, timeout: float) -> dict[str, Any] | None:
        """Take what has arrived (waiting up to ``timeout`` for something); the newest."""
        wait_ms = int(timeout * 1000)
        while self.sub.poll(wait_ms):
            wait_ms = 0
            parts = self.sub.recv_multipart()
            try:
                env = bus.decode(parts[-1])
            except bus.EnvelopeError:
                continue
            if isinstance(env.data, dict):
                self.latest, self.latest_ts = env.data, env.ts
        return self.latest

    def fresh(self, after: float, timeout: float) -> dict[str, Any]:
        """A registry published after wall-clock time ``after``."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll(min(0.2, max(0.0, deadline - time.monotonic())))
            if self.latest is not None and self.latest_ts >= after:
                return self.latest
            if time.monotonic() > deadline:
                raise StackError(f"no registry from the broker within {timeout}s")

    def close(self) -> None:
        self.sub.close(linger=0)
        self.ctx.term()


def pool_workers(reg: dict[str, Any] | None) -> int:
    if not reg:
        return -1
    return int(reg.get("broker", {}).get("pool", {}).get("workers", -1))


def services_up(reg: dict[str, Any] | None) -> set[str]:
    if not reg:
        return set()
    return {s.get("name", "") for s in reg.get("services", [])}


def counters(reg: dict[str, Any]) -> dict[str, int]:
    """Every counter in a registry, as ``broker.<name>`` and ``<service>.<name>``."""
    out: dict[str, int] = {}
    for name, value in reg.get("broker", {}).get("counters", {}).items():
        out[f"broker.{name}"] = int(value)
    for entry in reg.get("services", []):
        svc = entry.get("name", "?")
        for name, value in (entry.get("counters") or {}).items():
            if isinstance(value, int):
                key = f"{svc}.{name}"
                out[key] = out.get(key, 0) + value
    return out


def losses(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Counters of drops, spooling and errors that moved between two registries."""
    words = ("drop", "error", "bad", "spool.appended", "stale", "truncated", "garbage")
    out: dict[str, int] = {}
    for key, value in after.items():
        if any(w in key for w in words):
            delta = value - before.get(key, 0)
            if delta:
                out[key] = delta
    return out


# -- the stack ----------------------------------------------------------------------------------


def bench_config(run_dir: str, hes_port: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults everywhere except where the meter and the HES are; then ``overrides``."""
    cfg: dict[str, Any] = {
        "UART": {"port": f"{run_dir}/meter.tty"},
        "TCP_SERVER": {"host": "127.0.0.1", "port": hes_port},
        "DEVICE": {"name": "meterlink-bench", "meter_sn": "BENCH0001"},
    }
    for dotted, value in overrides.items():
        node = cfg
        *path, last = dotted.split(".")
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return cfg


class Target:
    """A path from a meter pty to a TCP reader that stamps payloads: what the runs time.

    A subclass sets ``name``, ``meter`` (a ``Meter``), ``up`` (the ``Arrivals`` of
    payloads read on the TCP side) and ``next_seq``, and gives ``wire`` (what the
    meter writes for one payload), ``pids`` and ``check_alive``.
    """

    name = "?"
    meter: Meter
    up: Arrivals
    next_seq = 0

    def wire(self, seq: int) -> bytes:
        raise NotImplementedError

    def pids(self) -> dict[str, int]:
        raise NotImplementedError

    def check_alive(self) -> None:
        raise NotImplementedError

    def diagnose(self) -> str:
        """What to show when no payload comes through (log tails)."""
        return ""

    def warm_up(self) -> None:
        """Write single payloads until they come through to the reader, then start clean.

        Bytes written before the far side opened the pty may be lost (opening flushes
        the input), so only the first arrival is waited for, then quiet.
        """
        deadline = time.monotonic() + START_TIMEOUT_S
        next_write = 0.0
        first = self.next_seq
        while self.up.count() == 0:
            self.check_alive()
            now = time.monotonic()
            if now > deadline:
                raise StackError(
                    f"no payload reached the TCP side of {self.name} within "
                    f"{START_TIMEOUT_S:g}s\n" + self.diagnose()
                )
            if now >= next_write:
                self.meter.write_all(self.wire(self.next_seq))
                self.next_seq += 1
                next_write = now + WARMUP_EVERY_S
            time.sleep(READY_POLL_S)
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < WARMUP_QUIET_S:
            count = self.up.count()
            if count != seen:
                seen, quiet_since = count, time.monotonic()
            if count >= self.next_seq - first:
                break
            time.sleep(READY_POLL_S)
        time.sleep(SETTLE_S)
        self.up.take(first, self.next_seq - first)

    def wait_arrivals(self, arrivals: Arrivals, n: int) -> None:
        """Wait until ``n`` records arrived, failing if they stop coming for STALL_S."""
        last_count = -1
        last_change = time.monotonic()
        while True:
            count = arrivals.count()
            if count >= n:
                break
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change > STALL_S:
                self.check_alive()
                return  # take() reports what is missing
            time.sleep(POLL_S)
        time.sleep(SETTLE_S)


class BenchStack(Target):
    """The gateway's programs started directly, the meter pty and the HES."""

    name = "meterlink"

    def __init__(
        self,
        workers: int,
        overrides: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.extra_env = dict(env or {})
        self.run_dir = tempfile.mkdtemp(prefix="mlb-", dir="/tmp")
        os.chmod(self.run_dir, 0o700)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.meter = Meter(Path(self.run_dir) / "meter.tty")
        self.hes = Hes()
        self.up = self.hes.up
        self.config = bench_config(self.run_dir, self.hes.port, overrides or {})
        self.config_path = Path(self.run_dir) / "bench.json"
        self.config_path.write_text(json.dumps(self.config, indent=1))
        self.registry: Registry | None = None
        self.next_seq = 0
        self.next_down = 0
        try:
            self._start(workers)
        except BaseException as exc:
            self.close()
            if isinstance(exc, StackError):
                raise StackError(f"{exc}\n(the stack's logs are in {self.run_dir})") from None
            raise

    # -- processes --------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            METERLINK_CONFIG=str(self.config_path),
            METERLINK_RUN_DIR=self.run_dir,
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def _spawn(self, label: str, module: str) -> None:
        log = Path(self.run_dir) / f"{label}.log"
        with log.open("wb") as out:
            self.procs[label] = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=ROOT,
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.logs[label] = log

    def _start(self, workers: int) -> None:
        # As `meterlink run` does: processes that load .pyc instead of
        # compiling hold 3-4 MB less each.
        from common.daemon import compile_bytecode

        compile_bytecode(str(ROOT))
        self._spawn("broker", "services.broker")
        for _ in range(workers):
            self._add_worker()
        for name in ("uart", "client", "watchdog"):
            self._spawn(name, f"services.{name}")
        self.registry = Registry(self.run_dir)
        self._wait(
            lambda: (
                {"uart", "client", "watchdog"} <= services_up(self.registry_poll())
                and pool_workers(self.registry.latest if self.registry else None) == workers
            ),
            START_TIMEOUT_S,
            f"the broker to list uart, client, watchdog and {workers} resolver workers",
        )
        self.warm_up()

    def _add_worker(self) -> str:
        n = 1
        while f"resolver-{n}" in self.procs:
            n += 1
        label = f"resolver-{n}"
        self._spawn(label, "services.resolver")
        return label

    def workers(self) -> list[str]:
        return [k for k in self.procs if k.startswith("resolver-")]

    def set_workers(self, n: int) -> None:
        """Start or stop resolver workers until ``n`` run and the broker knows it."""
        while len(self.workers()) < n:
            self._add_worker()
        while len(self.workers()) > n:
            self._stop_proc(max(self.workers(), key=lambda w: int(w.split("-")[1])))
        self._wait(
            lambda: pool_workers(self.registry_poll()) == n,
            WORKERS_TIMEOUT_S,
            f"the broker to count {n} resolver workers",
        )

    def _stop_proc(self, label: str) -> None:
        proc = self.procs.pop(label)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_WAIT_S)

    def pids(self) -> dict[str, int]:
        return {label: p.pid for label, p in self.procs.items()}

    def check_alive(self) -> None:
        for label, proc in self.procs.items():
            rc = proc.poll()
            if rc is not None:
                raise StackError(
                    f"{label} exited with status {rc}\n--- {label} log (tail) ---\n"
                    + self.log_tail(label)
                )

    def log_tail(self, label: str, lines: int = 15) -> str:
        try:
            text = self.logs[label].read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def registry_poll(self) -> dict[str, Any] | None:
        assert self.registry is not None
        return self.registry.poll(0)

    def _wait(self, pred: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = pred()
            if value:
                return value
            if time.monotonic() > deadline:
                raise StackError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(READY_POLL_S)

    def wire(self, seq: int) -> bytes:
        return uplink_frame(seq)

    def diagnose(self) -> str:
        return (
            f"(HES connections: {self.hes.connections})\n--- uart log (tail) ---\n"
            + self.log_tail("uart")
            + "\n--- client log (tail) ---\n"
            + self.log_tail("client")
        )

    def close(self) -> None:
        for label in list(self.procs):
            proc = self.procs[label]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_WAIT_S)
        if self.registry is not None:
            self.registry.close()
        self.hes.close()
        self.meter.close()

    def remove(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)


# -- runs ----------------------------------------------------------------------------------


def _latency_summary(lat_s: list[float]) -> dict[str, float]:
    lat = sorted(x * 1000 for x in lat_s)
    return {
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else math.nan,
    }


def _latencies(result: dict[str, Any], first: int, written: array[float]) -> list[float]:
    if result["ok"]:
        return [a - w for a, w in zip(result["times"], written, strict=True)]
    arrival = result["arrival"]
    return [arrival[first + i] - w for i, w in enumerate(written) if first + i in arrival]


def _paced(count: int, rate: float, write: Callable[[int], None]) -> array[float]:
    """Call ``write(i)`` on a schedule of ``rate`` per second; return the write times."""
    times = array("d", bytes(8 * count))
    period = 1.0 / rate
    perf = time.perf_counter
    sleep = time.sleep
    t0 = perf() + 0.005
    for i in range(count):
        delay = t0 + i * period - perf()
        if delay > 0:
            sleep(delay)
        times[i] = perf()
        write(i)
    return times


def latency_run(stack: Target, rate: float, seconds: float) -> dict[str, Any]:
    """Uplink latency at a paced ``rate``: pty write -> HES read, per frame."""
    n = max(1, int(rate * seconds))
    first = stack.next_seq
    stack.next_seq += n
    frames = [stack.wire(first + i) for i in range(n)]
    fd = stack.meter.master
    written = _paced(n, rate, lambda i: os.write(fd, frames[i]))
    achieved = (n - 1) / (written[-1] - written[0]) if n > 1 else rate
    stack.wait_arrivals(stack.up, n)
    result = stack.up.take(first, n)
    out: dict[str, Any] = {
        "frames": n,
        "rate": rate,
        "achieved_rate": achieved,
        "valid": result["ok"],
        "lost": result["lost"],
        "extra": result["extra"],
    }
    out.update(_latency_summary(_latencies(result, first, written)))
    return out


def throughput_run(stack: Target, n: int, cpu: bool = False) -> dict[str, Any]:
    """A burst of ``n`` frames as fast as the pty takes them; first write -> last arrival.

    With ``cpu``, the result has ``cpu``: each process's CPU over the burst (% of a core).
    """
    first = stack.next_seq
    stack.next_seq += n
    stream = b"".join(stack.wire(first + i) for i in range(n))
    window = footprint.CpuWindow(stack.pids()) if cpu else None
    started = time.perf_counter()
    stack.meter.write_all(stream)
    written = time.perf_counter()
    stack.wait_arrivals(stack.up, n)
    last = stack.up.last_time()
    usage = window.stop() if window is not None else None
    result = stack.up.take(first, n)
    elapsed = last - started
    out: dict[str, Any] = {
        "frames": n,
        "valid": result["ok"],
        "lost": result["lost"],
        "extra": result["extra"],
        "write_s": written - started,
        "elapsed_s": elapsed,
        "frames_per_s": n / elapsed if result["ok"] and elapsed > 0 else math.nan,
    }
    if not result["ok"]:
        out["in_order"] = result["in_order"]
    if window is not None and usage is not None:
        out["cpu"] = usage
        out["cpu_us_per_frame"] = {k: 1e6 * v / n for k, v in window.seconds.items()}
    return out


def downlink_run(stack: BenchStack, rate: float, seconds: float) -> dict[str, Any]:
    """Downlink latency at a paced ``rate``: HES socket write -> meter pty read."""
    stack.meter.start_reader()
    n = max(1, int(rate * seconds))
    first = stack.next_down
    stack.next_down += n
    records = [_DOWN.pack(DOWN_MAGIC, first + i) for i in range(n)]
    written = _paced(n, rate, lambda i: stack.hes.send(records[i]))
    stack.wait_arrivals(stack.meter.down, n)
    result = stack.meter.down.take(first, n)
    out: dict[str, Any] = {
        "frames": n,
        "rate": rate,
        "valid": result["ok"],
        "lost": result["lost"],
        "extra": result["extra"],
        "bad": stack.meter.down_bad,
    }
    out.update(_latency_summary(_latencies(result, first, written)))
    return out


#: Hops of the uplink, in order, as ``breakdown_run`` names them.
HOPS = (
    "pty write -> uart sends",
    "uart sends -> broker has it",
    "broker has it -> worker's result",
    "worker's result -> broker releases",
    "broker releases -> HES reads",
)


def breakdown_run(stack: BenchStack, rate: float, seconds: float) -> dict[str, Any]:
    """Where the uplink latency goes, hop by hop, at a paced ``rate``.

    A tap subscription makes the broker mirror what it routes, with its own
    receive/release time; the envelopes carry the uart's and the worker's send
    times. All are wall-clock times on one machine, so the hops line up with
    the driver's write and the HES's read. The tap costs the broker a little,
    so this run's total is a little above the plain latency runs.
    """
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, bus.T_TAP.encode())
    sub.connect(bus.endpoint({"transport": "ipc"}, stack.run_dir, bus.EVENTS_OUT))
    seen: dict[str, dict[int, float]] = {k: {} for k in ("uart", "in", "worker", "out")}
    stop = threading.Event()

    def watch() -> None:  # the only user of ``sub``
        while not stop.is_set():
            if not sub.poll(int(HES_SELECT_S * 1000)):
                continue
            parts = sub.recv_multipart()
            try:
                _src, dst, t, raw = msgpack.unpackb(parts[-1])
                env = bus.decode(raw)
            except (ValueError, TypeError, bus.EnvelopeError):
                continue
            if env.op == bus.OP_FRAMES and isinstance(env.data, list):
                for f in env.data:
                    seq = _UP.unpack_from(f, 8)[0]
                    seen["uart"][seq], seen["in"][seq] = env.ts, t
            elif env.op == bus.OP_SEND and dst == bus.CLIENT and isinstance(env.data, list):
                for p in env.data:
                    seq = _UP.unpack_from(p, 0)[0]
                    seen["worker"][seq], seen["out"][seq] = env.ts, t

    watcher = threading.Thread(target=watch, name="tap", daemon=True)
    watcher.start()
    try:
        # Wait until the broker has seen the subscription (it logs "tap attached").
        time.sleep(TAP_SETTLE_S)
        offset = time.time() - time.perf_counter()  # perf_counter -> wall clock
        n = max(1, int(rate * seconds))
        first = stack.next_seq
        stack.next_seq += n
        frames = [uplink_frame(first + i) for i in range(n)]
        fd = stack.meter.master
        written = _paced(n, rate, lambda i: os.write(fd, frames[i]))
        stack.wait_arrivals(stack.up, n)
        result = stack.up.take(first, n)
        time.sleep(TAP_SETTLE_S)
    finally:
        stop.set()
        watcher.join(1)
        sub.close(linger=0)
        ctx.term()
    arrival = (
        dict(zip(range(first, first + n), result["times"], strict=True))
        if result["ok"]
        else result["arrival"]
    )
    hops: dict[str, list[float]] = {h: [] for h in (*HOPS, "total")}
    for i in range(n):
        seq = first + i
        if seq not in arrival or not all(seq in d for d in seen.values()):
            continue
        times = (
            written[i] + offset,
            seen["uart"][seq],
            seen["in"][seq],
            seen["worker"][seq],
            seen["out"][seq],
            arrival[seq] + offset,
        )
        for name, a, b in zip(HOPS, times, times[1:], strict=False):
            hops[name].append((b - a) * 1000)
        hops["total"].append((times[-1] - times[0]) * 1000)
    out: dict[str, Any] = {"frames": n, "traced": len(hops["total"]), "valid": result["ok"]}
    for name, values in hops.items():
        values.sort()
        out[name] = {"p50_ms": percentile(values, 50), "p90_ms": percentile(values, 90)}
    return out

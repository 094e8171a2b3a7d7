"""Fault injection, black box: the guarantees of "nothing lost, nothing twice".

Every test runs the whole stack under real supervisord (the ``Supervised``
harness of ``test_e2e``), a meter on a real pseudo-terminal and a head-end
system on a real TCP port of 127.0.0.1, then breaks something the way it
breaks in the field: SIGKILL of one process (supervisord restarts it), an HES
that goes away and comes back on the same port, a serial adapter unplugged
and plugged back, a downlink flood, a second instance, a permissive umask.

Data carries its own identity so that loss, duplication and reordering are
visible from outside: the meter sends ``P%08d|`` payloads, the HES sends
``D%08d|`` chunks, numbered from 0 in sending order. Whatever else travels
(registration, heartbeats) is ignored.

Repetition. Each fault runs once in the default suite (round ``r0``). Rounds
``r1`` .. ``rN`` (N = ``METERLINK_CHAOS_ROUNDS``, default 5) and the long
variants (a 60 s HES outage, a 10 s / 1 GB flood) carry the ``chaos`` marker,
which the default suite deselects; ``make chaos`` runs them.

Every wait has a deadline. The only plain sleeps are the faults' own
durations (how long the HES or the serial port stays away), which are the
point of the test, not a hope that something happened.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common import params, rfc1662
from services.sim.fake_hes import FakeHES
from tests.conftest import ROOT, base_config, wait_for
from tests.test_e2e import Hes, Meter, Supervised, transparent

#: Repeats of each fault under ``make chaos`` (on top of the default round).
ROUNDS = max(1, int(os.environ.get("METERLINK_CHAOS_ROUNDS", "5")))

#: The client's counter of payloads it may have sent twice (the only allowed
#: duplicates: a SIGKILL between the HES's TCP acknowledgement and the client
#: recording it). Read from ``python -m services.cli.status --json``.
DUP_COUNTER = "uplink.duplicates_possible"

UP_MARK = b"P"
DOWN_MARK = b"D"

#: After everything arrived, how long to keep watching for late duplicates.
SETTLE_S = 0.5
#: Longest a killed process may take to be RUNNING again under supervisord.
RESTART_S = 20.0
#: How long the data sent may take to arrive once the sender stopped.
DELIVER_S = 20.0
#: A kill comes this much later than "traffic flows", varied by round (seeded
#: by the round, so a failing round repeats), to hit different instants.
KILL_JITTER_S = 0.3


def kill_jitter(round_: int) -> None:
    time.sleep(random.Random(round_).uniform(0, KILL_JITTER_S))


def rounds(*extra: Any) -> list[Any]:
    """Round 0 in the default suite, rounds 1..ROUNDS under the chaos marker."""
    out = [pytest.param(0, id="r0")]
    out += [pytest.param(i, id=f"r{i}", marks=pytest.mark.chaos) for i in range(1, ROUNDS + 1)]
    return out


# -- the data: numbered payloads, and what arrived ---------------------------------------


def payload(mark: bytes, seq: int) -> bytes:
    return mark + b"%08d|" % seq


_PATTERNS: dict[bytes, re.Pattern[bytes]] = {}


def parse(data: bytes, mark: bytes) -> list[int]:
    """The sequence numbers in a byte stream, in stream order. Anything that is
    not a whole ``<mark>NNNNNNNN|`` (registration, heartbeat, a payload cut by
    a dying link) is skipped."""
    pat = _PATTERNS.setdefault(mark, re.compile(re.escape(mark) + rb"(\d{8})\|"))
    return [int(m.group(1)) for m in pat.finditer(data)]


def hes_seqs(*heses: FakeHES) -> list[int]:
    """Uplink sequence numbers received by the HES(es), connection by connection."""
    out: list[int] = []
    for hes in heses:
        for i in range(hes.connections):
            out += parse(hes.received(i), UP_MARK)
    return out


def _ranges(nums: list[int], limit: int = 8) -> str:
    runs: list[str] = []
    start = prev = None
    for x in nums:
        if start is None:
            start = prev = x
        elif x == prev + 1:
            prev = x
        else:
            runs.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = x
    if start is not None:
        runs.append(f"{start}-{prev}" if start != prev else f"{start}")
    more = f" (+{len(runs) - limit} more ranges)" if len(runs) > limit else ""
    return ", ".join(runs[:limit]) + more


def describe(got: list[int], n: int) -> str:
    """A one-line account of ``got`` against 0..n-1: lost, twice, out of order."""
    seen = set(got)
    missing = [s for s in range(n) if s not in seen]
    dups = len(got) - len(seen)
    parts = [f"sent {n}, received {len(got)} ({len(seen)} distinct)"]
    if missing:
        parts.append(f"LOST {len(missing)}, first missing {missing[0]}: {_ranges(missing)}")
    if dups:
        first_dup = next(s for i, s in enumerate(got) if s in got[:i])
        parts.append(f"DUPLICATED {dups}, first twice {first_dup}")
    firsts = list(dict.fromkeys(got))
    bad = next((i for i in range(1, len(firsts)) if firsts[i] < firsts[i - 1]), None)
    if bad is not None:
        parts.append(f"OUT OF ORDER: {firsts[bad]} after {firsts[bad - 1]}")
    extra = sorted(s for s in seen if s >= n)
    if extra:
        parts.append(f"UNKNOWN {len(extra)} beyond {n - 1}")
    return "; ".join(parts)


def resend_window(got: list[int], n: int) -> int | None:
    """If ``got`` is 0..n-1 once, in order, except one contiguous re-send
    (0..a, then b..n-1 with b <= a+1), the number re-sent (a+1-b); else None."""
    if got == list(range(n)):
        return 0
    for i in range(1, len(got)):
        if got[i] != got[i - 1] + 1:
            a, b = got[i - 1], got[i]
            if b <= a and got[:i] == list(range(a + 1)) and got[i:] == list(range(b, n)):
                return a + 1 - b
            return None
    return None


def wait_delivered(
    received: Callable[[], list[int]], n: int, timeout: float = DELIVER_S, what: str = "HES"
) -> list[int]:
    """Wait until 0..n-1 all arrived, then watch ``SETTLE_S`` longer for late
    copies; return what arrived. On timeout, fail with what is lost."""
    deadline = time.monotonic() + timeout
    while True:
        got = received()
        if set(range(n)) <= set(got):
            break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not everything arrived within {timeout}s: {describe(got, n)}"
            )
        time.sleep(0.05)
    time.sleep(SETTLE_S)  # observation window for late duplicates, not a wait for data
    return received()


def assert_exactly_once(got: list[int], n: int, what: str) -> None:
    assert got == list(range(n)), f"{what}: {describe(got, n)}"


# -- the meter and the HES as traffic sources ---------------------------------------------


class SeqWriter(threading.Thread):
    """The meter sending numbered 0x2100 frames at most ``rate`` per second.

    Frames go out in batches every 10 ms (one frame per batch below 100/s). A
    writer that fell behind (the pty was full because nobody read it) does not
    burst to catch up: the rate is a ceiling. ``pause()`` returns once no write
    is in progress (so the pty can be unplugged); ``sent`` is the number of
    frames written so far (their numbers are 0..sent-1).
    """

    def __init__(self, meter: Meter, rate: float, mark: bytes = UP_MARK) -> None:
        super().__init__(daemon=True)
        self.meter = meter
        self.rate = rate
        self.mark = mark
        self.sent = 0
        self.error: BaseException | None = None
        self._stop_ev = threading.Event()
        self._run_ev = threading.Event()
        self._run_ev.set()
        self._idle = threading.Event()

    def write_now(self, count: int) -> None:
        """Write ``count`` frames at once (from the test thread, while paused)."""
        self.meter.write(self._frames(count))
        self.sent += count

    def _frames(self, count: int) -> bytes:
        return b"".join(
            rfc1662.encode(transparent(payload(self.mark, s)))
            for s in range(self.sent, self.sent + count)
        )

    def run(self) -> None:
        batch = max(1, int(self.rate * 0.01))
        interval = batch / self.rate
        due = time.monotonic()
        try:
            while not self._stop_ev.is_set():
                if not self._run_ev.is_set():
                    self._idle.set()
                    self._run_ev.wait(0.05)
                    due = time.monotonic()
                    continue
                self._idle.clear()
                now = time.monotonic()
                if now < due:
                    self._stop_ev.wait(due - now)
                    continue
                self.meter.pty.write(self._frames(batch), timeout=60)
                self.sent += batch
                due = max(due + interval, time.monotonic() - interval)
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            self._idle.set()

    def pause(self) -> None:
        self._idle.clear()
        self._run_ev.clear()
        assert self._idle.wait(70), "meter writer did not pause"

    def resume(self) -> None:
        self._run_ev.set()

    def stop(self) -> int:
        self._stop_ev.set()
        self._run_ev.set()
        self.join(70)
        assert not self.is_alive(), "meter writer did not stop"
        if self.error is not None:
            raise AssertionError(f"meter writer failed: {self.error!r}")
        return self.sent


class HesSender(threading.Thread):
    """The HES sending numbered chunks at ``rate`` per second on its newest connection."""

    def __init__(self, hes: FakeHES, rate: float) -> None:
        super().__init__(daemon=True)
        self.hes = hes
        self.rate = rate
        self.sent = 0
        self.error: BaseException | None = None
        self._stop_ev = threading.Event()

    def run(self) -> None:
        due = time.monotonic()
        try:
            while not self._stop_ev.wait(max(0.0, due - time.monotonic())):
                self.hes.send(payload(DOWN_MARK, self.sent))
                self.sent += 1
                due = max(due + 1 / self.rate, time.monotonic() - 1 / self.rate)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> int:
        self._stop_ev.set()
        self.join(10)
        assert not self.is_alive(), "HES sender did not stop"
        if self.error is not None:
            raise AssertionError(f"HES sender failed: {self.error!r}")
        return self.sent


class MeterReader(threading.Thread):
    """The meter reading its pty all the time: deframes, keeps the 0x2100 info
    bytes in order (the downlink stream) and counts the rest."""

    def __init__(self, meter: Meter) -> None:
        super().__init__(daemon=True)
        self.meter = meter
        self.deframer = rfc1662.Deframer()
        self._lock = threading.Lock()
        self._stream = bytearray()
        self._stop_ev = threading.Event()

    def run(self) -> None:
        while not self._stop_ev.is_set():
            data = self.meter.pty.read_some(0.05)
            for raw in self.deframer.feed(data):
                frame = rfc1662.decode(raw)
                if frame.protocol == rfc1662.PROTO_TRANSPARENT:
                    with self._lock:
                        self._stream += frame.info

    def seqs(self) -> list[int]:
        with self._lock:
            return parse(bytes(self._stream), DOWN_MARK)

    def stop(self) -> None:
        self._stop_ev.set()
        self.join(5)


# -- the stack ----------------------------------------------------------------------------


class Gateway:
    """One stack under supervisord with its meter, its HES and a probe sink
    (the watchdog probes a listener of its own, so that the HES sees only the
    client's connections)."""

    def __init__(self, run_dir: Path, workers: int, umask: int | None, **sections: Any) -> None:
        self.run_dir = run_dir
        self.hes = Hes()
        self.sink = FakeHES().start()
        self.meter = Meter(run_dir / "meter.tty")
        watchdog = {
            "interval_s": 0.3,
            "timeout_s": 0.3,
            "targets": [["127.0.0.1", self.sink.port]],
            "lqi": {"source": "fixed", "value": 21},
        }
        watchdog.update(sections.pop("WATCHDOG", {}))
        tcp = {"port": self.hes.port, **sections.pop("TCP_SERVER", {})}
        config = base_config(run_dir, TCP_SERVER=tcp, WATCHDOG=watchdog, **sections)
        old = os.umask(umask) if umask is not None else None
        try:
            self.sup = Supervised(run_dir, config, workers)
        finally:
            if old is not None:
                os.umask(old)
        self.extra: list[Any] = []
        self.sup.wait_running()

    def env(self) -> dict[str, str]:
        return self.sup.env

    @staticmethod
    def program(name: str) -> str:
        """supervisord's name: workers are programs of their own (``meterlink scale``)."""
        return name if name.startswith("resolver-") else f"meterlink:{name}"

    def pid(self, name: str) -> int:
        out = self.sup.ctl("pid", self.program(name)).strip()
        return int(out) if out.isdigit() else 0

    def pids(self) -> dict[str, int]:
        """Running meterlink programs by name (``broker``, ``resolver-0`` ...)."""
        out: dict[str, int] = {}
        for line in self.sup.ctl("status").splitlines():
            m = re.match(r"(?:meterlink:)?(\S+)\s+RUNNING\s+pid (\d+)", line)
            if m:
                out[m.group(1)] = int(m.group(2))
        return out

    def kill(self, name: str) -> int:
        pid = self.pid(name)
        assert pid > 0, f"meterlink:{name} has no pid: {self.sup.ctl('status')}"
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = RESTART_S) -> int:
        def new_pid() -> int:
            p = self.pid(name)
            return p if p > 0 and p != old_pid else 0

        return int(wait_for(new_pid, timeout, f"supervisord to restart meterlink:{name}"))

    def counters(self) -> dict[str, int]:
        """Every service's counters (``client.uplink.payloads`` ...) from status --json."""
        out = subprocess.run(
            [sys.executable, "-m", "services.cli.status", "--json", "--timeout", "3"],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
        )
        if out.returncode != 0:
            return {}
        return dict(json.loads(out.stdout).get("summary", {}).get("counters", {}))

    def close(self) -> None:
        self.sup.close()
        for thing in (*self.extra, self.meter, self.hes, self.sink):
            thing.close() if hasattr(thing, "close") else thing.stop()


@pytest.fixture
def gateway(run_dir: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    made: list[Gateway] = []

    def start(workers: int = 2, umask: int | None = None, **sections: Any) -> Gateway:
        gw = Gateway(run_dir, workers, umask, **sections)
        made.append(gw)
        return gw

    yield start
    for gw in made:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(gw.sup.logs())
        gw.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def get_lqi(meter: Meter, deframer: rfc1662.Deframer, timeout: float) -> float | None:
    """Send a GET of LQI and read the pty (discarding the 0x2100 data) until its
    answer; the seconds it took, or None if no answer within ``timeout``."""
    pid = params.PID_LQI.to_bytes(2, "little")
    started = time.monotonic()
    meter.send(params.GetRequest(params.PID_LQI).to_frame())
    deadline = started + timeout
    while (left := deadline - time.monotonic()) > 0:
        for raw in deframer.feed(meter.pty.read_some(min(left, 0.05))):
            frame = rfc1662.decode(raw)
            if (
                frame.protocol == rfc1662.PROTO_PARAMS
                and frame.cmd == rfc1662.CMD_GET_RESP
                and frame.info[:2] == pid
            ):
                return time.monotonic() - started
    return None


# -- 1. uplink under kills ----------------------------------------------------------------

UPLINK_RATE = 1000  # frames/s
KEEP_SENDING_S = 3.0  # after the kill


@pytest.mark.parametrize("round_", rounds())
@pytest.mark.parametrize("victim", ["broker", "resolver", "client", "uart"])
def test_uplink_loses_and_repeats_nothing_when_a_process_is_killed(gateway, victim, round_):
    gw = gateway(workers=2)
    name = f"resolver-{round_ % 2}" if victim == "resolver" else victim
    gw.hes.wait_connections(1, 15)
    writer = SeqWriter(gw.meter, UPLINK_RATE)
    writer.start()
    wait_for(lambda: len(hes_seqs(gw.hes)) >= 500, 15, "the first 500 frames at the HES")
    kill_jitter(round_)
    old = gw.kill(name)
    killed_at = time.monotonic()
    gw.wait_restarted(name, old)
    time.sleep(max(0.0, killed_at + KEEP_SENDING_S - time.monotonic()))  # keep streaming
    n = writer.stop()

    got = wait_delivered(lambda: hes_seqs(gw.hes), n, what=f"uplink, {name} killed")
    if victim != "client":
        assert_exactly_once(got, n, f"uplink, {name} killed")
        return
    # The client may repeat what was in flight when it died: one contiguous
    # re-send, counted by the restarted client.
    window = resend_window(got, n)
    assert window is not None, f"uplink, client killed: {describe(got, n)}"
    if window:
        deadline = time.monotonic() + 10
        while (counted := _sum(gw.counters(), DUP_COUNTER)) < window:
            assert time.monotonic() < deadline, (
                f"uplink, client killed: the HES got {window} payloads twice "
                f"({describe(got, n)}) but {DUP_COUNTER} says {counted}"
            )
            time.sleep(0.5)


def _sum(counters: dict[str, int], suffix: str) -> int:
    return sum(v for k, v in counters.items() if k.endswith(suffix))


# -- 2. downlink under kills --------------------------------------------------------------

DOWNLINK_RATE = 100  # chunks/s


@pytest.mark.parametrize("round_", rounds())
@pytest.mark.parametrize("victim", ["broker", "uart"])
def test_downlink_loses_and_repeats_nothing_when_a_process_is_killed(gateway, victim, round_):
    gw = gateway(workers=2)
    gw.hes.wait_connections(1, 15)
    reader = MeterReader(gw.meter)
    reader.start()
    gw.extra.append(reader)
    sender = HesSender(gw.hes, DOWNLINK_RATE)
    sender.start()
    wait_for(lambda: len(reader.seqs()) >= 50, 15, "the first 50 chunks at the meter")
    kill_jitter(round_)
    old = gw.kill(victim)
    killed_at = time.monotonic()
    gw.wait_restarted(victim, old)
    time.sleep(max(0.0, killed_at + KEEP_SENDING_S - time.monotonic()))  # keep streaming
    n = sender.stop()

    got = wait_delivered(reader.seqs, n, what=f"downlink, {victim} killed")
    assert_exactly_once(got, n, f"downlink, {victim} killed")


# -- 3. HES down, then back on the same port ----------------------------------------------

HES_DOWN_RATE = 10  # frames/s
RECONNECT_GOAL_S = 2.0


def _outages() -> list[Any]:
    out = [pytest.param(8.0, 0, id="8s-r0")]
    out += [
        pytest.param(60.0, i, id=f"60s-r{i}", marks=[pytest.mark.chaos, pytest.mark.timeout(300)])
        for i in range(ROUNDS)
    ]
    return out


@pytest.mark.parametrize(("outage_s", "round_"), _outages())
def test_hes_outage_loses_nothing_and_reconnects_within_2s(gateway, outage_s, round_):
    gw = gateway(workers=2)
    gw.hes.wait_connections(1, 15)
    writer = SeqWriter(gw.meter, HES_DOWN_RATE)
    writer.start()
    wait_for(lambda: len(hes_seqs(gw.hes)) >= 10, 15, "the first frames at the HES")

    # Quiesce for an instant so that the HES goes away with nothing unread in
    # its socket (TCP would have acknowledged it: a loss of the test double,
    # not of the gateway); the meter keeps sending through the outage.
    writer.pause()
    sent = writer.sent
    wait_delivered(lambda: hes_seqs(gw.hes), sent, 10, "HES before the outage")
    port = gw.hes.port
    gw.hes.stop()
    writer.resume()
    time.sleep(outage_s)  # the outage itself

    back = FakeHES(port=port)
    gw.extra.append(back)
    back.start()
    assert back.listening_at is not None
    problems = []
    try:
        back.wait_connections(1, 45)
        delay = back.accepted_at(0) - back.listening_at
        if delay > RECONNECT_GOAL_S:
            problems.append(
                f"the client connected {delay:.1f}s after the HES listened again "
                f"(goal {RECONNECT_GOAL_S}s)"
            )
    except AssertionError:
        problems.append("the client did not reconnect within 45s of the HES listening again")
    time.sleep(2.0 if not problems else 0.0)  # keep streaming over the new link
    n = writer.stop()
    try:
        got = wait_delivered(lambda: hes_seqs(gw.hes, back), n, what="HES outage")
        if got != list(range(n)):
            problems.append(f"HES outage {outage_s:.0f}s: {describe(got, n)}")
    except AssertionError as exc:
        problems.append(str(exc))
    assert not problems, "; ".join(problems)


# -- 4. serial port unplugged 3.5 s, then back ---------------------------------------------

SERIAL_GONE_S = 3.5
SERIAL_BACK_GOAL_S = 2.0
SERIAL_RATE = 100  # frames/s
EARLY_FRAMES = 50  # written into the new pty at once, before the uart reopens it


def _holds(pid: int, path: str) -> bool:
    """Whether process ``pid`` has ``path`` open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                return True
        except OSError:
            continue
    return False


@pytest.mark.parametrize("round_", rounds())
def test_serial_port_back_within_2s_and_nothing_held_by_the_kernel_is_flushed(gateway, round_):
    gw = gateway(workers=2)
    gw.hes.wait_connections(1, 15)
    writer = SeqWriter(gw.meter, SERIAL_RATE)
    writer.start()
    wait_for(lambda: len(hes_seqs(gw.hes)) >= 20, 15, "the first frames at the HES")
    writer.pause()
    before = writer.sent
    wait_delivered(lambda: hes_seqs(gw.hes), before, 10, "HES before the unplug")

    gw.meter.pty.vanish()
    time.sleep(SERIAL_GONE_S)  # the adapter is unplugged this long
    gw.meter.pty.replug()
    replugged_at = time.monotonic()
    uart = gw.pid("uart")
    writer.write_now(EARLY_FRAMES)  # into the kernel's buffer, nobody reading yet
    early_before_open = not _holds(uart, gw.meter.pty.slave_name)
    writer.resume()

    problems = []
    deadline = replugged_at + SERIAL_BACK_GOAL_S
    while max(hes_seqs(gw.hes), default=-1) < before:
        if time.monotonic() > deadline:
            problems.append(
                f"no frame written after the replug reached the HES within "
                f"{SERIAL_BACK_GOAL_S}s of it"
            )
            break
        time.sleep(0.02)
    time.sleep(max(0.0, replugged_at + 4.0 - time.monotonic()))  # keep streaming
    n = writer.stop()
    try:
        got = wait_delivered(lambda: hes_seqs(gw.hes), n, what="serial replug")
        if got != list(range(n)):
            early = set(range(before, before + EARLY_FRAMES)) - set(got)
            problems.append(
                f"serial replug: {describe(got, n)}; {len(early)} of the {EARLY_FRAMES} frames "
                f"written right after the replug lost"
                + ("" if early_before_open else " (the uart had already reopened the port)")
            )
    except AssertionError as exc:
        problems.append(str(exc))
    assert not problems, "; ".join(problems)


# -- 5. HES flood ---------------------------------------------------------------------------

FLOOD_LIMIT = 1 << 30  # 1 GB
RSS_GROWTH_MAX_KIB = 10 * 1024
GET_ANSWER_S = 1.0
METER_IDLE_S = 0.5  # the meter does not read its pty between two GETs


def _floods() -> list[Any]:
    out = [pytest.param(4.0, 0, id="4s-r0")]
    out += [
        pytest.param(10.0, i, id=f"10s-r{i}", marks=[pytest.mark.chaos, pytest.mark.timeout(180)])
        for i in range(ROUNDS)
    ]
    return out


@pytest.mark.parametrize(("flood_s", "round_"), _floods())
def test_hes_flood_bounds_memory_and_gets_are_still_answered(gateway, flood_s, round_):
    gw = gateway(workers=2)
    gw.hes.wait_connections(1, 15)
    deframer = rfc1662.Deframer()
    # Warm up every path the flood takes (downlink, GET), so the baseline is
    # what a stack in service uses.
    gw.hes.send(b"warm-up" * 100)
    wait_for(lambda: get_lqi(gw.meter, deframer, 1.0), 15, "an answer to GET LQI")
    before = gw.pids()
    base = {name: rss_kib(pid) for name, pid in before.items()}
    peak = dict(base)

    def sample() -> None:
        for name, pid in before.items():
            try:
                peak[name] = max(peak[name], rss_kib(pid))
            except (OSError, AssertionError):
                pass

    sent = [0]
    flood = threading.Thread(
        target=lambda: sent.__setitem__(0, gw.hes.flood(FLOOD_LIMIT, flood_s)), daemon=True
    )
    flood.start()
    answers: list[float | None] = []
    while flood.is_alive():
        answers.append(get_lqi(gw.meter, deframer, GET_ANSWER_S))
        sample()
        idle_until = time.monotonic() + METER_IDLE_S
        while time.monotonic() < idle_until:  # the meter reads nothing meanwhile
            sample()
            time.sleep(0.1)
    flood.join(5)
    sample()

    problems = []
    after = gw.pids()
    restarted = {n for n, p in before.items() if after.get(n) != p}
    if restarted:
        problems.append(f"restarted during the flood: {sorted(restarted)}")
    grown = {n: peak[n] - base[n] for n in base if peak[n] - base[n] >= RSS_GROWTH_MAX_KIB}
    if grown:
        problems.append(
            "RSS grew >= 10 MB: "
            + ", ".join(f"{n} {base[n] // 1024}->{peak[n] // 1024} MiB" for n in sorted(grown))
        )
    late = [a for a in answers if a is None or a > GET_ANSWER_S]
    if not answers or late:
        problems.append(
            f"{len(late)} of {len(answers)} GETs of LQI not answered within {GET_ANSWER_S}s "
            f"(answered in: {['-' if a is None else f'{a:.2f}' for a in answers]})"
        )
    summary = f"flood of {sent[0] / 1e6:.0f} MB in {flood_s:.0f}s"
    assert not problems, f"{summary}: " + "; ".join(problems)


# -- 6. private files whatever the umask -----------------------------------------------------

#: What the test itself puts in the run directory (its config, supervisord's
#: stdout, the meter's link); everything else is the gateway's.
TEST_OWNED = {"e2e.json", "supervisord.out", "meter.tty", "meter.tty.new"}


def _exposed(run_dir: Path) -> list[str]:
    bad = []
    for dirpath, dirnames, filenames in os.walk(run_dir):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if path.parent == run_dir and name in TEST_OWNED:
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:  # went away while we looked
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            if st.st_mode & 0o077:
                bad.append(f"{path.relative_to(run_dir)} {stat.filemode(st.st_mode)}")
    st = run_dir.stat()
    if st.st_mode & 0o077:
        bad.append(f". {stat.filemode(st.st_mode)}")
    return sorted(bad)


@pytest.mark.parametrize("round_", rounds())
def test_nothing_in_the_run_directory_is_readable_by_others_under_umask_022(
    gateway, run_dir, round_
):
    gw = gateway(workers=2, umask=0o022, TCP_SERVER={"reconnect_min_s": 0.1, "reconnect_max_s": 1})
    gw.hes.wait_connections(1, 15)
    # Make every kind of file exist: uplink data, a stored parameter, the spool.
    writer = SeqWriter(gw.meter, 100)
    writer.start()
    wait_for(lambda: len(hes_seqs(gw.hes)) >= 10, 15, "frames at the HES")
    writer.pause()  # one writer on the pty at a time
    reply = gw.meter.ask(
        params.SetRequest(params.PID_DEVICE_NAME, 7, params.Value.char("umask")).to_frame(),
        rfc1662.CMD_SET_RESP,
    )
    assert params.SetResponse.from_info(reply.info).ok
    wait_delivered(lambda: hes_seqs(gw.hes), writer.sent, 10, "HES")
    port = gw.hes.port
    gw.hes.stop()
    writer.resume()
    time.sleep(1.0)  # the HES is away this long: the client spools
    during = _exposed(run_dir)
    back = FakeHES(port=port).start()
    gw.extra.append(back)
    n = writer.stop()
    wait_delivered(lambda: hes_seqs(gw.hes, back), n, what="after the outage")
    after = _exposed(run_dir)
    later = sorted(set(after) - set(during))
    assert not during and not after, (
        f"group/other bits under umask 022 ({len(during)} during an HES outage): {during}"
        + (f"; and after it: {later}" if later else "")
    )


# -- 7. one instance per run directory; --help starts nothing -----------------------------------

SECOND_EXIT_S = 8.0


@pytest.mark.parametrize("round_", rounds())
def test_a_second_broker_or_uart_is_refused_and_the_stack_keeps_working(gateway, round_):
    gw = gateway(workers=2)
    gw.hes.wait_connections(1, 15)
    writer = SeqWriter(gw.meter, 100)  # not started: the test writes each frame itself
    writer.write_now(1)
    wait_delivered(lambda: hes_seqs(gw.hes), 1, 15, "HES before the second instance")

    problems = []
    for svc in ("broker", "uart"):
        holder = gw.pid(svc)
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{svc}"],
            env=gw.env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            out, _ = proc.communicate(timeout=SECOND_EXIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
            problems.append(
                f"a second {svc} did not exit within {SECOND_EXIT_S}s (it ran beside the first)"
            )
            continue
        text = out.decode(errors="replace")
        if proc.returncode != 2:
            problems.append(f"a second {svc} exited {proc.returncode}, not 2: {text[-300:]!r}")
        if not re.search(rf"\b{holder}\b", text):
            problems.append(
                f"a second {svc} did not name the holder, pid {holder}: {text[-300:]!r}"
            )
        if gw.pid(svc) != holder:
            problems.append(f"the running {svc} (pid {holder}) did not survive the second one")

    # Still one stack: connections made now (status, a restarted uart) reach
    # the running broker, and frames go through.
    if not gw.counters():
        problems.append("status gets no answer from the broker any more")
    old_uart = gw.pid("uart")
    gw.sup.ctl("restart", gw.program("uart"))
    gw.wait_restarted("uart", old_uart)
    writer.write_now(1)
    try:
        wait_delivered(lambda: hes_seqs(gw.hes), 2, 15, "HES after the second instances")
    except AssertionError as exc:
        problems.append(f"the stack no longer works: {exc}")
    assert not problems, "; ".join(problems)


SERVICES = ("broker", "uart", "resolver", "client", "watchdog")
HELP_EXIT_S = 8.0


def test_help_on_every_service_exits_0_and_binds_nothing(run_dir):
    procs = {}
    dirs = {}
    try:
        for svc in SERVICES:
            fresh = Path(tempfile.mkdtemp(prefix="ml-h-", dir="/tmp"))
            os.chmod(fresh, 0o700)
            dirs[svc] = fresh
            cfg = run_dir / f"{svc}.json"
            cfg.write_text(json.dumps(base_config(fresh)))
            env = {
                **os.environ,
                "METERLINK_RUN_DIR": str(fresh),
                "METERLINK_CONFIG": str(cfg),
                "PYTHONPATH": str(ROOT),
            }
            procs[svc] = subprocess.Popen(
                [sys.executable, "-m", f"services.{svc}", "--help"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        problems = []
        deadline = time.monotonic() + HELP_EXIT_S
        for svc, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate(timeout=10)
                problems.append(f"{svc} --help still running after {HELP_EXIT_S}s")
            else:
                text = out.decode(errors="replace")
                if proc.returncode != 0:
                    problems.append(f"{svc} --help exited {proc.returncode}: {text[-200:]!r}")
                elif "usage" not in text.lower():
                    problems.append(f"{svc} --help printed no usage: {text[-200:]!r}")
            socks = [
                str(p.relative_to(dirs[svc]))
                for p in dirs[svc].rglob("*")
                if stat.S_ISSOCK(p.lstat().st_mode)
            ]
            if socks:
                problems.append(f"{svc} --help created sockets {socks}")
        assert not problems, "; ".join(problems)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)

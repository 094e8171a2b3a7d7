"""The watchdog as a real process against the real broker.

Probe targets are real TCP listeners on 127.0.0.1 made here; recovery and LQI
commands are small Python programs that leave a trace in the run directory;
the modem AT port is a real pseudo-terminal answered by a thread of the test.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from common import bus
from services.watchdog import Ladder, parse_csq
from tests.conftest import Probe, Proc, Stack, base_config, wait_for

INTERVAL = 0.2
TIMEOUT = 0.2

# Appends its METERLINK_WATCHDOG_FAILURES to the file argv[1]; exits with argv[2].
APPEND_FAILURES = (
    "import os, sys\n"
    "with open(sys.argv[1], 'a') as f:\n"
    "    f.write(os.environ['METERLINK_WATCHDOG_FAILURES'] + '\\n')\n"
    "sys.exit(int(sys.argv[2]))\n"
)
# Writes its pid to argv[1], then sleeps (a command that hangs).
WRITE_PID_AND_HANG = (
    "import os, sys, time\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
    "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "time.sleep(60)\n"
)
# Prints the file argv[1] (fails when it is missing).
CAT = "import sys; sys.stdout.write(open(sys.argv[1]).read())"


# -- helpers ---------------------------------------------------------------------------


class Listener:
    """A TCP listener on 127.0.0.1 that accepts and closes, and can go away and return."""

    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.listen()

    @property
    def target(self) -> list[Any]:
        return ["127.0.0.1", self.port]

    def listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, args=(sock, self._stop), daemon=True)
        self._thread.start()

    def _accept(self, sock: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.05)
            if ready:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                conn.close()
                self.accepted += 1

    def close(self) -> None:
        if self._sock is None:
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join(2)
        self._sock.close()
        self._sock = None


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


def refused_port() -> socket.socket:
    """A port that is bound but not listening: connects are refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


class Events:
    """Everything published on the subscribed topics, kept in arrival order."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self.seen: list[tuple[str, Any]] = []

    def _pump(self, timeout: float) -> None:
        if self.sock.poll(int(timeout * 1000)):
            while True:
                try:
                    parts = self.sock.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    return
                self.seen.append((parts[0].decode(), bus.decode(parts[1]).data))

    def mark(self) -> int:
        self._pump(0)
        return len(self.seen)

    def wait(
        self,
        topic: str,
        pred: Callable[[Any], bool] = lambda d: True,
        timeout: float = 10.0,
        after: int = 0,
    ) -> Any:
        deadline = time.monotonic() + timeout
        checked = after
        while True:
            for t, data in self.seen[checked:]:
                if t == topic and pred(data):
                    return data
            checked = max(checked, len(self.seen))
            left = deadline - time.monotonic()
            if left <= 0:
                last = [d for t, d in self.seen if t == topic][-1:]
                raise AssertionError(f"no matching {topic} within {timeout}s; last: {last}")
            self._pump(min(left, 0.1))

    def watchdog(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Wait for a registry entry of the watchdog (its heartbeat) matching ``pred``."""

        def match(reg: Any) -> bool:
            return any(s.get("name") == bus.WATCHDOG and pred(s) for s in reg["services"])

        reg = self.wait(bus.T_REGISTRY, match, timeout)
        return next(s for s in reg["services"] if s["name"] == bus.WATCHDOG and pred(s))


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def start(stack: Stack, probe: Probe, run_dir: Path, **watchdog: Any) -> tuple[Proc, Events]:
    """Broker, a subscriber known to be attached, then the watchdog."""
    log = watchdog.pop("log", "INFO")
    wd = {"interval_s": INTERVAL, "timeout_s": TIMEOUT, "status_interval_s": 0.5}
    wd.update(watchdog)
    stack.write_config(base_config(run_dir, WATCHDOG=wd, LOG={"level": log}))
    stack.start("services.broker")
    events = Events(probe.subscriber("net.", bus.T_REGISTRY))
    # The broker publishes (and re-sends to new subscribers) the registry, so
    # seeing it proves the subscription is in place before the watchdog runs.
    events.wait(bus.T_REGISTRY, timeout=15)
    return stack.start("services.watchdog"), events


def sigterm_exit_time(proc: Proc) -> float:
    t0 = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    proc.popen.wait(10)
    return time.monotonic() - t0


# -- the ladder, on its own ----------------------------------------------------------


def _steps(ladder: Ladder, failures: int) -> list[tuple[int, str]]:
    out = []
    for f in range(1, failures + 1):
        step = ladder.due(f)
        if step is not None:
            ladder.done(f)
            out.append((f, step))
    return out


def test_ladder_runs_once_then_repeats_spaced_out():
    assert _steps(Ladder(3, 6, 16), 300) == [
        (3, "radio_cycle"),
        (6, "reboot"),
        (12, "radio_cycle"),
        (18, "reboot"),
        (30, "radio_cycle"),
        (42, "reboot"),
        (66, "radio_cycle"),
        (90, "reboot"),
        (138, "radio_cycle"),
        (186, "reboot"),
        (234, "radio_cycle"),
        (282, "reboot"),
    ]
    # backoff 1 repeats at fixed spacing; reset starts over.
    ladder = Ladder(3, 6, 1)
    assert _steps(ladder, 12) == [
        (3, "radio_cycle"),
        (6, "reboot"),
        (9, "radio_cycle"),
        (12, "reboot"),
    ]
    ladder.reset()
    assert ladder.due(2) is None and ladder.due(3) == "radio_cycle"


def test_parse_csq():
    assert parse_csq(b"AT+CSQ\r\r\n+CSQ: 23,99\r\n\r\nOK\r\n") == {"lqi": 23, "error": None}
    assert parse_csq(b"\r\n+CSQ: 99,99\r\n\r\nOK\r\n") == {"lqi": 99, "error": None}
    assert parse_csq(b"\r\nERROR\r\n")["lqi"] == 99
    assert "ERROR" in parse_csq(b"\r\nERROR\r\n")["error"]
    assert parse_csq(b"\r\nOK\r\n")["error"].startswith("no +CSQ")
    assert parse_csq(b"+CSQ: 300,0\r\nOK\r\n")["lqi"] == 99


# -- the service -------------------------------------------------------------------------


def test_target_up_publishes_net_up_status_and_heartbeat(stack, probe, run_dir, listener):
    proc, events = start(
        stack, probe, run_dir, targets=[listener.target], lqi={"source": "fixed", "value": 17}
    )
    up = events.wait(bus.T_NET_UP)
    assert up["target"] == f"127.0.0.1:{listener.port}"
    status = events.wait(bus.T_NET_STATUS, lambda d: d["up"] is True)
    assert status["failures"] == 0
    assert status["lqi"] == 17
    assert status["step"] == "ok"
    assert status["targets"] == [listener.target]
    assert status["last_probe"]["ok"] is True
    assert status["last_change"] is not None
    # The periodic status keeps coming while nothing changes.
    mark = events.mark()
    events.wait(bus.T_NET_STATUS, lambda d: d["up"] is True, timeout=3, after=mark)
    hb = events.watchdog(lambda s: s.get("up") is True and s["counters"].get("probes", 0) >= 2)
    assert hb["lqi"] == 17 and hb["failures"] == 0 and hb["step"] == "ok"
    assert not [t for t, _ in events.seen if t == bus.T_NET_DOWN]
    assert sigterm_exit_time(proc) < 1.0
    assert "service stopped name=watchdog" in proc.text()


def test_default_target_is_the_hes_address(stack, probe, run_dir, listener):
    stack.write_config(
        base_config(
            run_dir,
            TCP_SERVER={"host": "127.0.0.1", "port": listener.port},
            WATCHDOG={"interval_s": INTERVAL, "timeout_s": TIMEOUT},
        )
    )
    stack.start("services.broker")
    events = Events(probe.subscriber("net."))
    stack.start("services.watchdog")
    status = events.wait(bus.T_NET_STATUS, lambda d: d["up"] is True, timeout=15)
    assert status["targets"] == [["127.0.0.1", listener.port]]


def test_outage_climbs_ladder_then_recovers(stack, probe, run_dir, listener):
    radio, reboot = run_dir / "radio.txt", run_dir / "reboot.txt"
    proc, events = start(
        stack,
        probe,
        run_dir,
        targets=[listener.target],
        radio_cycle_after=3,
        reboot_after=6,
        radio_cycle_cmd=[sys.executable, "-c", APPEND_FAILURES, str(radio), "0"],
        reboot_cmd=[sys.executable, "-c", APPEND_FAILURES, str(reboot), "3"],
    )
    events.wait(bus.T_NET_UP)
    listener.close()

    down = events.wait(bus.T_NET_DOWN)
    assert down["failures"] == 1
    assert down["errors"] == {f"127.0.0.1:{listener.port}": "ECONNREFUSED"}
    wait_for(lambda: lines(radio) == ["3"], 10, "radio cycle at 3 failures")
    wait_for(lambda: lines(reboot) == ["6"], 10, "reboot at 6 failures")
    # Still down after the reboot: the ladder repeats, spaced out (12, then 18).
    wait_for(lambda: lines(radio) == ["3", "12"], 10, "second radio cycle at 12 failures")
    status = events.wait(bus.T_NET_STATUS, lambda d: d["failures"] >= 12)
    assert status["up"] is False and status["step"] == "radio_cycle"

    mark = events.mark()
    listener.listen()
    up = events.wait(bus.T_NET_UP, after=mark)
    assert up["failures"] >= 12
    assert up["steps"][:3] == ["radio_cycle", "reboot", "radio_cycle"]
    assert up["down_s"] > 0
    status = events.wait(bus.T_NET_STATUS, lambda d: d["up"] is True, after=mark)
    assert status["failures"] == 0 and status["step"] == "ok"
    assert lines(radio) == ["3", "12"] and lines(reboot) == ["6"]

    text = proc.text()
    assert "recovery step=radio_cycle failures=3 cmd=" in text
    assert "recovery done step=radio_cycle failures=3 rc=0" in text
    assert "recovery step=reboot failures=6 cmd=" in text
    assert "recovery done step=reboot failures=6 rc=3" in text
    assert "network recovered target=" in text
    hb = events.watchdog(lambda s: s.get("up") is True and s["counters"].get("commands.run") == 3)
    assert hb["counters"]["commands.failed"] == 1
    assert hb["counters"]["probe.failures"] >= 12


def test_empty_commands_only_log(stack, probe, run_dir):
    closed = refused_port()
    try:
        proc, events = start(
            stack,
            probe,
            run_dir,
            targets=[["127.0.0.1", closed.getsockname()[1]]],
            radio_cycle_after=1,
            reboot_after=2,
        )
        down = events.wait(bus.T_NET_DOWN)
        assert down["failures"] == 1
        events.wait(bus.T_NET_STATUS, lambda d: d["up"] is False and d["step"] == "reboot")
        proc.wait_log("recovery step=radio_cycle failures=1 cmd=none would run radio_cycle_cmd")
        proc.wait_log("recovery step=reboot failures=2 cmd=none would run reboot_cmd")
        hb = events.watchdog(lambda s: s["counters"].get("probe.failures", 0) >= 2)
        assert hb["up"] is False
        assert "commands.run" not in hb["counters"]
        assert not [t for t, _ in events.seen if t == bus.T_NET_UP]
    finally:
        closed.close()


def test_lqi_from_command_follows_output_and_is_99_when_it_fails(stack, probe, run_dir, listener):
    csq = run_dir / "csq.txt"

    def put(text: str) -> None:
        (run_dir / "csq.tmp").write_text(text)
        os.replace(run_dir / "csq.tmp", csq)

    put("+CSQ: 23,99\r\n")
    proc, events = start(
        stack,
        probe,
        run_dir,
        targets=[listener.target],
        lqi={
            "source": "command",
            "command": [sys.executable, "-c", CAT, str(csq)],
            "pattern": r"\+CSQ: (\d+),",
        },
    )
    events.wait(bus.T_NET_STATUS, lambda d: d["lqi"] == 23 and d["up"] is True)
    put("+CSQ: 11,99\r\n")
    events.wait(bus.T_NET_STATUS, lambda d: d["lqi"] == 11)
    mark = events.mark()
    csq.unlink()
    failed = events.wait(bus.T_NET_STATUS, lambda d: d["lqi"] == 99, after=mark)
    assert "exit status 1" in failed["lqi_error"]
    proc.wait_log("lqi read failed source=command error=")
    put("no signal line here\n")
    proc.wait_log("pattern not found in output")
    put("+CSQ: 5,0\r\n")
    ok = events.wait(bus.T_NET_STATUS, lambda d: d["lqi"] == 5)
    assert ok["lqi_error"] is None
    hb = events.watchdog(lambda s: s["lqi"] == 5)
    assert hb["counters"]["lqi.errors"] >= 2
    assert hb["counters"]["lqi.reads"] >= 4


class Modem(threading.Thread):
    """Answers AT+CSQ on the master side of a pseudo-terminal."""

    def __init__(self, master: int) -> None:
        super().__init__(daemon=True)
        self.master = master
        self.rssi: int | None = 19  # None answers ERROR
        self.requests = 0
        self.stop = threading.Event()

    def run(self) -> None:
        buf = b""
        while not self.stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                buf += os.read(self.master, 1024)
            except OSError:
                return
            while b"\r" in buf:
                line, buf = buf.split(b"\r", 1)
                if line.strip() == b"AT+CSQ":
                    self.requests += 1
                    if self.rssi is None:
                        os.write(self.master, b"\r\nERROR\r\n")
                    else:
                        os.write(self.master, b"\r\n+CSQ: %d,99\r\n\r\nOK\r\n" % self.rssi)


def test_lqi_from_at_port_on_a_pty(stack, probe, run_dir, listener):
    master, slave = os.openpty()
    modem = Modem(master)
    modem.start()
    try:
        proc, events = start(
            stack,
            probe,
            run_dir,
            targets=[listener.target],
            lqi={"source": "at", "at_port": os.ttyname(slave), "at_baudrate": 115200},
        )
        events.wait(bus.T_NET_STATUS, lambda d: d["lqi"] == 19 and d["up"] is True)
        modem.rssi = 27
        events.wait(bus.T_NET_STATUS, lambda d: d["lqi"] == 27)
        mark = events.mark()
        modem.rssi = None
        failed = events.wait(bus.T_NET_STATUS, lambda d: d["lqi"] == 99, after=mark)
        assert "ERROR" in failed["lqi_error"]
        proc.wait_log("lqi read failed source=at")
        assert modem.requests >= 3
        hb = events.watchdog(lambda s: s["counters"].get("lqi.errors", 0) >= 1)
        assert hb["lqi"] == 99
        assert sigterm_exit_time(proc) < 1.0
    finally:
        modem.stop.set()
        modem.join(2)
        os.close(master)
        os.close(slave)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_with_probe_lqi_and_recovery_in_flight_exits_within_a_second(stack, probe, run_dir):
    # A listener whose accept queue is full drops SYNs: connects to it hang.
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(0)
    fill = [socket.socket() for _ in range(3)]
    for s in fill:
        s.setblocking(False)
        s.connect_ex(hang.getsockname())
    radio_pid, lqi_pid = run_dir / "radio.pid", run_dir / "lqi.pid"
    pids: list[int] = []
    try:
        proc, events = start(
            stack,
            probe,
            run_dir,
            log="DEBUG",
            targets=[list(hang.getsockname())],
            timeout_s=1.5,
            radio_cycle_after=1,
            radio_cycle_cmd=[sys.executable, "-c", WRITE_PID_AND_HANG, str(radio_pid)],
            lqi={
                "source": "command",
                "command": [sys.executable, "-c", WRITE_PID_AND_HANG, str(lqi_pid)],
                "timeout_s": 60,
            },
        )
        wait_for(lqi_pid.exists, 10, "the LQI command to start")
        pids.append(int(lqi_pid.read_text()))
        down = events.wait(bus.T_NET_DOWN)
        assert list(down["errors"].values()) == ["timeout"]
        wait_for(radio_pid.exists, 10, "the radio cycle command to start")
        pids.append(int(radio_pid.read_text()))
        proc.wait_log("probe start round=2")  # a probe that will hang for 1.5 s
        assert "probe start round=3" not in proc.text()
        assert sigterm_exit_time(proc) < 1.0
        text = proc.text()
        assert "service stopped name=watchdog" in text
        assert "recovery command left running at shutdown step=radio_cycle" in text
        # The LQI reading was killed with the watchdog; the radio cycle runs on.
        wait_for(lambda: not _alive(pids[0]), 5, "the LQI command to be killed")
        assert _alive(pids[1])
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for s in fill:
            s.close()
        hang.close()


def test_bad_lqi_pattern_is_a_clear_config_error(stack, run_dir):
    stack.write_config(base_config(run_dir, WATCHDOG={"lqi": {"pattern": r"\d+"}}))
    proc = stack.start("services.watchdog")
    assert proc.popen.wait(10) == 2
    assert "config key WATCHDOG.lqi.pattern: needs a group" in proc.text()


def test_sighup_changes_the_lqi_source_without_a_restart(stack, probe, run_dir, listener):
    """The LQI source is one of the keys a reload applies live: fixed 21, then
    a command that prints a CSQ line, read by the same process."""
    csq = run_dir / "csq.txt"
    csq.write_text("+CSQ: 17,99\r\n")
    proc, events = start(
        stack, probe, run_dir, targets=[listener.target], lqi={"source": "fixed", "value": 21}
    )
    events.wait(bus.T_NET_STATUS, lambda d: d["lqi"] == 21)
    cfg = dict(stack.config)
    cfg["WATCHDOG"] = {
        **cfg["WATCHDOG"],
        "lqi": {
            "source": "command",
            "command": [sys.executable, "-c", CAT, str(csq)],
            "pattern": r"\+CSQ: (\d+),",
        },
    }
    stack.write_config(cfg)
    proc.popen.send_signal(signal.SIGHUP)
    got = events.wait(bus.T_NET_STATUS, lambda d: d["lqi"] == 17, timeout=15)
    assert got["lqi_source"] == "command"
    assert proc.alive() and "lqi source now command" in proc.text()
    assert "config change needs restart" not in proc.text()

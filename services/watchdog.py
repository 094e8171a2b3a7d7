"""The watchdog: network reachability, the recovery ladder, signal quality.

It asks before it knocks. The client's HES link state (``link.status``,
``link.up``, ``link.down`` on the bus) is its first signal: while the link is
up the network is up (``source=link``) and nothing is probed at all, so a
healthy gateway opens no connection but the client's. Probes start when the
link is down or its state unknown, and are spaced by the ladder: in a long
outage the probe interval grows with the ladder's back-off factor.

Theory of operation. Every ``WATCHDOG.interval_s`` the loop asks a probe
thread to try a TCP connect to each target (``WATCHDOG.targets``, by default
the HES address ``TCP_SERVER.host``/``port``), all at once, non-blocking,
each for at most ``timeout_s``; the network is up as soon as any target
connects. A second thread reads the signal quality (LQI) on the same beat.
Both threads hand their result to the loop through a ``ThreadInbox``; a tick
that finds its thread still busy is owed and runs as soon as it is free, so
a slow probe delays the next one but never blocks the loop, and the loop owns
all state.

The loop counts consecutive failed probes and climbs the recovery ladder of
the reference solution (wait; toggle the radio after 3 failures; reboot after
6): at ``radio_cycle_after`` failures it runs ``radio_cycle_cmd``, at
``reboot_after`` it runs ``reboot_cmd``. Commands are argument lists run with
``subprocess`` (never a shell), in their own session, with
``METERLINK_WATCHDOG_STEP`` and ``METERLINK_WATCHDOG_FAILURES`` in their
environment; the loop polls them and kills one that outlives
``command_timeout_s``. Their output goes to the watchdog's own log. An empty
command only logs what would have run. One command runs at a time: a step
that comes due while another command runs waits for it to end.

Long outages. If the network is still down after the reboot step (the reboot
did not happen, or did not help), the ladder repeats, but spaced out: each
round starts from the failure count of the previous round's reboot and
multiplies both offsets by 2, up to ``ladder_backoff_max``. With the defaults
(3, 6, 16) and a 5 s interval the steps come at failures 3 and 6, then 12
and 18, 30 and 42, ... so a gateway that cannot reach the network reboots at
most every 8 minutes instead of every 30 seconds. The first probe that
connects resets the count and the ladder.

Events: ``net.up`` / ``net.down`` on each change; ``net.status`` (a state
topic) on every change of up, failures, LQI or ladder step, after each
recovery command, and every ``status_interval_s``::

    net.up      {"target", "failures", "down_s", "steps", "ts"}
    net.down    {"failures", "errors", "ts"}
    net.status  {"up", "failures", "last_change", "down_since", "lqi", "lqi_source",
                 "lqi_error", "targets", "last_probe", "step", "last_recovery", "ts"}

``up`` is None until the first probe; ``step`` is ``unknown``, ``ok``,
``wait``, ``radio_cycle`` or ``reboot`` (the last step run in this outage).
Probing starts once the watchdog has seen its own first ``net.status`` come
back through the broker (at most ``BUS_READY_MAX_S`` later), so that the
first ``net.up`` is not lost to a publisher that is not yet connected.

LQI (``WATCHDOG.lqi``): ``fixed`` is ``value``; ``command`` runs ``command``
and takes the first group of ``pattern`` in its output; ``at`` sends
``AT+CSQ`` on the modem's AT port (any pyserial URL) and takes the ``rssi``
of ``+CSQ: <rssi>,<ber>``. Unknown is 99, as in ``AT+CSQ``; a reading that
fails gives 99, counts ``lqi.errors`` and logs. Each reading has at most
``lqi.timeout_s``.

Counters: ``probes``, ``probe.failures``, ``commands.run``,
``commands.failed``, ``lqi.reads``, ``lqi.errors``, ``worker.errors``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import serial
import zmq

from common import bus
from common.config import ConfigError
from common.service import Service, main_for

log = logging.getLogger("meterlink.watchdog")

LQI_UNKNOWN = 99  # as AT+CSQ reports an unknown rssi
LQI_MAX = 0xFF  # the LQI parameter (0x8003) is one byte
STEP_S = 0.1  # longest a worker thread waits in one go, so that it stops quickly
HOUSEKEEPING_S = 0.25  # how often the loop polls a running command and bus readiness
BUS_READY_MAX_S = 1.0  # start probing after this even if the bus has not echoed
JOIN_TIMEOUT_S = 0.2  # how long shutdown waits for each worker thread
OUTPUT_MAX = 200  # characters of command output or modem reply quoted in logs

AT_CSQ = b"AT+CSQ\r"
_CSQ_RE = re.compile(rb"\+CSQ:\s*(\d+)\s*,\s*(\d+)")
_AT_FINAL = (b"OK", b"ERROR", b"+CME ERROR", b"+CMS ERROR")

STEP_UNKNOWN = "unknown"
STEP_OK = "ok"
STEP_WAIT = "wait"
STEP_RADIO = "radio_cycle"
STEP_REBOOT = "reboot"

_packb = msgpack.Packer(use_bin_type=True).pack


# -- the ladder (no I/O) -------------------------------------------------------------


class Ladder:
    """Which recovery step is due after how many consecutive failures.

    Round 0 has the radio cycle at ``radio_after`` and the reboot at
    ``reboot_after`` failures (in order of those numbers). Each later round
    starts at the failure count where the previous round's last step ran, with
    the offsets multiplied by 2 each round, up to ``backoff_max``.
    """

    def __init__(self, radio_after: int, reboot_after: int, backoff_max: int) -> None:
        self.rungs = sorted([(radio_after, STEP_RADIO), (reboot_after, STEP_REBOOT)])
        self.backoff_max = max(1, backoff_max)
        self.reset()

    def reset(self) -> None:
        self.round = 0
        self.scale = 1
        self.base = 0
        self.next = 0

    def threshold(self) -> int:
        """The failure count at which the next step comes due."""
        return self.base + self.rungs[self.next][0] * self.scale

    def due(self, failures: int) -> str | None:
        """The step due at ``failures`` (not yet marked done), or None."""
        return self.rungs[self.next][1] if failures >= self.threshold() else None

    def done(self, failures: int) -> None:
        """The due step was taken at ``failures``; move to the next one."""
        self.next += 1
        if self.next == len(self.rungs):
            self.round += 1
            self.scale = min(self.scale * 2, self.backoff_max)
            self.base = failures
            self.next = 0


# -- readings, run in worker threads ---------------------------------------------------


def target_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def probe_targets(
    targets: list[tuple[str, int]], timeout: float, stop: threading.Event
) -> dict[str, Any]:
    """Connect to every target at once; stop at the first that answers.

    Returns ``{"ok": name or None, "errors": {name: reason}}``. Every address a
    name resolves to is tried; a target's error is the last one seen.
    """
    errors: dict[str, str] = {}
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    ok: str | None = None
    deadline = time.monotonic() + timeout
    try:
        for host, port in targets:
            name = target_name(host, port)
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                errors[name] = f"resolve: {exc.strerror}"
                continue
            for family, kind, proto, _canon, addr in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                socks.append(sock)
                sock.setblocking(False)
                rc = sock.connect_ex(addr)
                if rc == 0:
                    return {"ok": name, "errors": errors}
                if rc in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                    sel.register(sock, selectors.EVENT_WRITE, name)
                else:
                    errors[name] = errno.errorcode.get(rc, str(rc))
        while sel.get_map() and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _events in sel.select(min(left, STEP_S)):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                sel.unregister(conn)
                err = conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == 0:
                    ok = key.data
                    break
                errors[key.data] = errno.errorcode.get(err, str(err))
            if ok is not None:
                return {"ok": ok, "errors": errors}
        for key in sel.get_map().values():
            errors.setdefault(key.data, "timeout" if not stop.is_set() else "stopped")
        return {"ok": None, "errors": errors}
    finally:
        sel.close()
        for sock in socks:
            sock.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill a command started in its own session, children and all."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


def _quote(data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    return text[:OUTPUT_MAX] + ("..." if len(text) > OUTPUT_MAX else "")


def check_lqi(value: int) -> dict[str, Any]:
    if not 0 <= value <= LQI_MAX:
        return {"lqi": LQI_UNKNOWN, "error": f"value {value} out of range 0..{LQI_MAX}"}
    return {"lqi": value, "error": None}


def read_lqi_command(
    argv: list[str], pattern: re.Pattern[str], timeout: float, stop: threading.Event
) -> dict[str, Any]:
    """Run ``argv`` and take the first group of ``pattern`` in its output."""
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return {"lqi": LQI_UNKNOWN, "error": f"cannot run: {exc.strerror or exc}"}
    deadline = time.monotonic() + timeout
    while True:
        try:
            out, err = proc.communicate(timeout=max(0.0, min(STEP_S, deadline - time.monotonic())))
            break
        except subprocess.TimeoutExpired:
            if stop.is_set() or time.monotonic() >= deadline:
                _kill_group(proc)
                try:
                    proc.communicate(timeout=STEP_S)
                except subprocess.TimeoutExpired:
                    pass
                why = "stopped" if stop.is_set() else f"timeout after {timeout}s"
                return {"lqi": LQI_UNKNOWN, "error": why}
    if proc.returncode != 0:
        said = _quote(err or out)
        error = f"exit status {proc.returncode}" + (f": {said}" if said else "")
        return {"lqi": LQI_UNKNOWN, "error": error}
    match = pattern.search(out.decode(errors="replace"))
    if match is None:
        return {"lqi": LQI_UNKNOWN, "error": f"pattern not found in output: {_quote(out)}"}
    try:
        value = int(match.group(1))
    except (TypeError, ValueError):
        return {"lqi": LQI_UNKNOWN, "error": f"not a number: {match.group(1)!r}"}
    return check_lqi(value)


def parse_csq(reply: bytes) -> dict[str, Any]:
    """The LQI from a modem's answer to ``AT+CSQ`` (``+CSQ: <rssi>,<ber>``)."""
    match = _CSQ_RE.search(reply)
    if match is None:
        if b"ERROR" in reply:
            return {"lqi": LQI_UNKNOWN, "error": f"modem answered: {_quote(reply)}"}
        return {"lqi": LQI_UNKNOWN, "error": f"no +CSQ in reply: {_quote(reply)}"}
    return check_lqi(int(match.group(1)))


def _at_complete(buf: bytes) -> bool:
    """True once the reply holds a final result line (OK, ERROR, +CME ERROR...)."""
    for line in re.split(rb"[\r\n]", buf)[:-1]:  # the last piece is not terminated
        if line.strip().startswith(_AT_FINAL):
            return True
    return False


class AtModem:
    """The modem's AT port, owned by the LQI thread; reopened after an error."""

    def __init__(self, url: str, baudrate: int, timeout: float) -> None:
        self.url = url
        self.baudrate = baudrate
        self.timeout = timeout
        self.port: Any = None

    def read(self, stop: threading.Event) -> dict[str, Any]:
        try:
            if self.port is None:
                self.port = serial.serial_for_url(
                    self.url, baudrate=self.baudrate, timeout=STEP_S, write_timeout=self.timeout
                )
            self.port.reset_input_buffer()  # a late answer to an earlier request
            self.port.write(AT_CSQ)
            buf = b""
            deadline = time.monotonic() + self.timeout
            while not _at_complete(buf):
                if stop.is_set():
                    return {"lqi": LQI_UNKNOWN, "error": "stopped"}
                if time.monotonic() >= deadline:
                    return {
                        "lqi": LQI_UNKNOWN,
                        "error": f"no reply within {self.timeout}s: {_quote(buf)}",
                    }
                buf += self.port.read(max(1, self.port.in_waiting))
        except (serial.SerialException, OSError) as exc:
            self.close()
            return {"lqi": LQI_UNKNOWN, "error": f"at port {self.url}: {exc}"}
        return parse_csq(buf)

    def close(self) -> None:
        if self.port is not None:
            try:
                self.port.close()
            except (serial.SerialException, OSError):
                pass
            self.port = None


class Worker:
    """A daemon thread that runs one job at a time for the loop.

    ``kick()`` (loop thread) starts a job, or, if one is running, owes one
    that starts when it ends. The result dict reaches ``on_result`` in the
    loop thread through a ThreadInbox.
    """

    def __init__(
        self,
        app: Service,
        name: str,
        job: Callable[[threading.Event], dict[str, Any]],
        on_result: Callable[[dict[str, Any]], None],
        cleanup: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.app = app
        self._job = job
        self._on_result = on_result
        self._cleanup = cleanup
        self._box = app.thread_inbox(name, self._deliver, hwm=16)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.busy = False
        self.owed = False
        self.rounds = 0
        self._thread = threading.Thread(target=self._run, name=f"watchdog-{name}", daemon=True)
        app.add_thread(self._thread)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> bool:
        if self.busy:
            self.owed = True
            return False
        self.busy = True
        self._wake.set()
        return True

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop.is_set():
                    return
                self.rounds += 1
                log.debug("%s start round=%d", self.name, self.rounds)
                started = time.monotonic()
                try:
                    result = self._job(self._stop)
                except Exception as exc:  # a bug here must not end the thread
                    log.exception("%s failed round=%d", self.name, self.rounds)
                    result = {"bug": f"{type(exc).__name__}: {exc}"}
                if self._stop.is_set():
                    return
                result["ms"] = round((time.monotonic() - started) * 1000, 1)
                try:
                    self._box.post([_packb(result)])
                except zmq.ZMQError:
                    return
        finally:
            if self._cleanup is not None:
                try:
                    self._cleanup()
                except Exception:
                    log.exception("%s cleanup failed", self.name)
            try:
                self._box.close_thread_side()
            except zmq.ZMQError:
                pass

    def _deliver(self, parts: list[bytes]) -> None:
        self.busy = False
        try:
            result = msgpack.unpackb(parts[0], raw=False)
        except Exception:
            result = {"bug": "undecodable result"}
        if not isinstance(result, dict):
            result = {"bug": "result is not a map"}
        if "bug" in result:
            self.app.counters["worker.errors"] += 1
        self._on_result(result)
        if self.owed:
            self.owed = False
            self.kick()


# -- the service ------------------------------------------------------------------------


class RunningCommand:
    """A recovery command in progress (a plain class: dataclasses costs memory)."""

    __slots__ = ("step", "failures", "argv", "proc", "started", "killed")

    def __init__(
        self,
        step: str,
        failures: int,
        argv: list[str],
        proc: subprocess.Popen[bytes],
        started: float,
        killed: bool = False,
    ) -> None:
        self.step = step
        self.failures = failures
        self.argv = argv
        self.proc = proc
        self.started = started
        self.killed = killed

    def __repr__(self) -> str:
        return (
            f"RunningCommand(step={self.step!r}, failures={self.failures!r}, "
            f"argv={self.argv!r}, proc={self.proc!r}, started={self.started!r}, "
            f"killed={self.killed!r})"
        )


def check_config(config: dict[str, Any]) -> re.Pattern[str]:
    """What the schema cannot check; returns the compiled LQI pattern."""
    lqi = config["WATCHDOG"]["lqi"]
    try:
        pattern = re.compile(lqi["pattern"])
    except re.error as exc:
        raise ConfigError(
            f"config key WATCHDOG.lqi.pattern: not a regular expression: {exc}"
        ) from None
    if pattern.groups < 1:
        raise ConfigError("config key WATCHDOG.lqi.pattern: needs a group (...) around the value")
    if lqi["source"] == "command" and not lqi["command"]:
        raise ConfigError("config key WATCHDOG.lqi.command: empty, but lqi.source is command")
    if lqi["source"] == "at" and not lqi["at_port"]:
        raise ConfigError("config key WATCHDOG.lqi.at_port: empty, but lqi.source is at")
    return pattern


class Watchdog(Service):
    """Network health: probes, the recovery ladder, LQI, net.* events."""

    def __init__(self, config: dict[str, Any], ctx: zmq.Context[Any] | None = None) -> None:
        pattern = check_config(config)
        super().__init__(bus.WATCHDOG, config, ctx=ctx)
        wd = config["WATCHDOG"]
        self.interval: float = wd["interval_s"]
        self.timeout: float = wd["timeout_s"]
        hes = config["TCP_SERVER"]
        self.targets: list[tuple[str, int]] = [(str(h), int(p)) for h, p in wd["targets"]] or [
            (str(hes["host"]), int(hes["port"]))
        ]
        self.commands: dict[str, list[str]] = {
            STEP_RADIO: list(wd["radio_cycle_cmd"]),
            STEP_REBOOT: list(wd["reboot_cmd"]),
        }
        self.command_timeout: float = wd["command_timeout_s"]
        self.ladder = Ladder(wd["radio_cycle_after"], wd["reboot_after"], wd["ladder_backoff_max"])

        self.up: bool | None = None
        self.failures = 0
        self.step = STEP_UNKNOWN
        self.steps: list[str] = []  # taken in this outage
        self.last_change: float | None = None
        self.down_since: float | None = None  # wall clock
        self._down_mono: float | None = None
        self.last_probe: dict[str, Any] | None = None
        self.last_recovery: dict[str, Any] | None = None
        self.command: RunningCommand | None = None
        self._published: tuple[Any, ...] | None = None

        lqi = wd["lqi"]
        self.lqi_source: str = lqi["source"]
        self.lqi: int = lqi["value"] if self.lqi_source == "fixed" else LQI_UNKNOWN
        self.lqi_error: str | None = None

        self._probing = False
        self._bus_ready = False
        self._ready_deadline = 0.0
        self.link_up: bool | None = None  # the client's HES link, from the bus
        self._next_probe = 0.0

        self.probe_worker = Worker(
            self,
            "probe",
            lambda stop: probe_targets(self.targets, self.timeout, stop),
            self._on_probe,
        )
        self.lqi_worker = self._lqi_worker(lqi, pattern)

        self.on_event(bus.T_NET_STATUS)(self._on_own_status)
        self.on_event(bus.T_LINK_STATUS)(self._on_link)
        self.on_event(bus.T_LINK_UP)(self._on_link)
        self.on_event(bus.T_LINK_DOWN)(self._on_link)
        self.every(self.interval, self._tick)
        self.every(wd["status_interval_s"], self.publish_status)
        self._hk_armed = False
        self._arm_housekeeping()
        self.on_close(self._shutdown)

    def _lqi_worker(self, lqi: dict[str, Any], pattern: re.Pattern[str]) -> Worker | None:
        """The thread that reads the LQI (``command`` or ``at``); None for ``fixed``."""
        if lqi["source"] == "command":
            argv = list(lqi["command"])
            timeout = lqi["timeout_s"]
            return Worker(
                self,
                "lqi",
                lambda stop: read_lqi_command(argv, pattern, timeout, stop),
                self._on_lqi,
            )
        if lqi["source"] == "at":
            modem = AtModem(lqi["at_port"], lqi["at_baudrate"], lqi["timeout_s"])
            return Worker(self, "lqi", modem.read, self._on_lqi, cleanup=modem.close)
        return None

    # -- start and stop ------------------------------------------------------------

    def setup(self) -> None:
        self.probe_worker.start()
        if self.lqi_worker is not None:
            self.lqi_worker.start()
        self._ready_deadline = time.monotonic() + BUS_READY_MAX_S
        # The first probe waits one interval for the client to say how its
        # link is: a gateway that starts healthy never probes the HES.
        self._next_probe = time.monotonic() + self.interval
        log.info(
            "watchdog starting targets=%s interval_s=%s timeout_s=%s lqi_source=%s",
            ",".join(target_name(h, p) for h, p in self.targets),
            self.interval,
            self.timeout,
            self.lqi_source,
        )
        self.publish_status()

    def _on_own_status(self, _topic: str, env: bus.Envelope) -> None:
        if env.src == self.name and env.inst == self.inst:
            self._bus_ready = True

    def _housekeeping(self) -> None:
        """Until probing starts, and while a recovery command runs: an idle
        watchdog has nothing to look at, so this is not a periodic timer."""
        self._hk_armed = False
        try:
            self._housekeep()
        finally:
            if not self._probing or self.command is not None:
                self._arm_housekeeping()

    def _housekeep(self) -> None:
        if not self._probing:
            if self._bus_ready or time.monotonic() >= self._ready_deadline:
                self._probing = True
                log.debug("probing starts bus_ready=%s", self._bus_ready)
                self._tick()
            else:
                self.publish_status()  # until one gets through
        if self.command is not None:
            self._reap()

    def _arm_housekeeping(self) -> None:
        if not self._hk_armed:
            self._hk_armed = True
            self.call_later(HOUSEKEEPING_S, self._housekeeping)

    def _shutdown(self) -> None:
        workers = [w for w in (self.probe_worker, self.lqi_worker) if w is not None]
        for worker in workers:
            worker.stop()
        for worker in workers:
            if not worker.join(JOIN_TIMEOUT_S):
                log.warning("worker still busy at shutdown name=%s", worker.name)
        if self.command is not None and self.command.proc.poll() is None:
            # Left alone: killing a modem reset or a reboot half-way is worse.
            log.warning(
                "recovery command left running at shutdown step=%s pid=%d",
                self.command.step,
                self.command.proc.pid,
            )

    # -- probing --------------------------------------------------------------------

    def _on_link(self, topic: str, env: bus.Envelope) -> None:
        data = env.data if isinstance(env.data, dict) else {}
        up = topic == bus.T_LINK_UP or (topic == bus.T_LINK_STATUS and bool(data.get("up")))
        if up == self.link_up:
            return
        self.link_up = up
        if up:
            target = f"hes-link {target_name(str(data.get('host')), int(data.get('port') or 0))}"
            log.info("network up from the HES link, probes paused source=link")
            self.counters["link_evidence"] += 1
            self._probe_ok(target, source="link")
            self._publish_if_changed()
        else:
            # The client reconnects by itself; give it one interval first.
            log.info("HES link down, probing resumes reason=%r", data.get("reason"))
            self._next_probe = time.monotonic() + self.interval

    def _tick(self) -> None:
        if not self._probing:
            return
        if self.lqi_worker is not None:
            self.lqi_worker.kick()
        if self.link_up:
            return  # the client's link says it all; no probe
        now = time.monotonic()
        if now < self._next_probe:
            return
        # Spaced by the ladder: the longer the outage, the rarer the probes.
        self._next_probe = now + self.interval * self.ladder.scale - HOUSEKEEPING_S / 2
        self.probe_worker.kick()

    def _on_probe(self, result: dict[str, Any]) -> None:
        self.counters["probes"] += 1
        target = result.get("ok")
        errors = result.get("errors") or {}
        if "bug" in result:
            errors = {"probe": result["bug"]}
        self.last_probe = {
            "ts": time.time(),
            "ok": bool(target),
            "target": target,
            "errors": errors,
            "ms": result.get("ms"),
        }
        if self.link_up:
            pass  # the link came up while this probe ran: it has the last word
        elif target:
            self._probe_ok(str(target))
        else:
            self.counters["probe.failures"] += 1
            self._probe_failed(errors)
        self._publish_if_changed()

    def _probe_ok(self, target: str, source: str = "probe") -> None:
        if self.up is True:
            return
        now = time.time()
        was_down = self.up is False
        failures = self.failures
        down_s = (
            round(time.monotonic() - self._down_mono, 3) if self._down_mono is not None else None
        )
        steps = self.steps
        self.up = True
        self.last_change = now
        self.failures = 0
        self.step = STEP_OK
        self.steps = []
        self.down_since = None
        self._down_mono = None
        self.ladder.reset()
        if was_down:
            log.info(
                "network recovered target=%s failures=%d down_s=%s steps=%s",
                target,
                failures,
                down_s,
                ",".join(steps) or "none",
            )
        else:
            log.info("network up target=%s source=%s", target, source)
        self.publish(
            bus.T_NET_UP,
            {
                "target": target,
                "failures": failures,
                "down_s": down_s,
                "steps": steps,
                "source": source,
                "ts": now,
            },
        )

    def _probe_failed(self, errors: dict[str, str]) -> None:
        self.failures += 1
        shown = " ".join(f"{k}={v}" for k, v in errors.items()) or "none"
        if self.up is not False:
            now = time.time()
            self.up = False
            self.last_change = now
            self.down_since = now
            self._down_mono = time.monotonic()
            self.step = STEP_WAIT
            self.ladder.reset()
            log.warning("network down failures=%d errors=%s", self.failures, shown)
            self.publish(bus.T_NET_DOWN, {"failures": self.failures, "errors": errors, "ts": now})
        else:
            log.debug("probe failed failures=%d errors=%s", self.failures, shown)
        step = self.ladder.due(self.failures)
        if step is not None and self.command is None:
            self._recover(step)

    # -- the recovery ladder ----------------------------------------------------------

    def _recover(self, step: str) -> None:
        failures = self.failures
        self.ladder.done(failures)
        self.step = step
        self.steps.append(step)
        argv = self.commands[step]
        key = "radio_cycle_cmd" if step == STEP_RADIO else "reboot_cmd"
        if not argv:
            log.warning(
                "recovery step=%s failures=%d cmd=none would run %s (empty, nothing run)",
                step,
                failures,
                key,
            )
            self.last_recovery = {
                "step": step,
                "failures": failures,
                "rc": None,
                "ran": False,
                "ts": time.time(),
            }
            return
        env = dict(
            os.environ, METERLINK_WATCHDOG_STEP=step, METERLINK_WATCHDOG_FAILURES=str(failures)
        )
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError as exc:
            self.counters["commands.failed"] += 1
            log.error(
                "recovery step=%s failures=%d cmd=%s error=%r",
                step,
                failures,
                shlex.join(argv),
                exc.strerror or str(exc),
            )
            self.last_recovery = {
                "step": step,
                "failures": failures,
                "rc": None,
                "ran": False,
                "error": exc.strerror or str(exc),
                "ts": time.time(),
            }
            return
        self.counters["commands.run"] += 1
        log.warning(
            "recovery step=%s failures=%d cmd=%s pid=%d", step, failures, shlex.join(argv), proc.pid
        )
        self.command = RunningCommand(step, failures, argv, proc, time.monotonic())
        self._arm_housekeeping()  # reaps it

    def _reap(self) -> None:
        run = self.command
        assert run is not None
        rc = run.proc.poll()
        elapsed = time.monotonic() - run.started
        if rc is None:
            if not run.killed and elapsed > self.command_timeout:
                log.error(
                    "recovery timeout step=%s failures=%d pid=%d timeout_s=%s",
                    run.step,
                    run.failures,
                    run.proc.pid,
                    self.command_timeout,
                )
                _kill_group(run.proc)
                run.killed = True
            return
        self.command = None
        ok = rc == 0 and not run.killed
        if not ok:
            self.counters["commands.failed"] += 1
        log.log(
            logging.INFO if ok else logging.ERROR,
            "recovery done step=%s failures=%d rc=%d ms=%d timed_out=%s",
            run.step,
            run.failures,
            rc,
            elapsed * 1000,
            run.killed,
        )
        self.last_recovery = {
            "step": run.step,
            "failures": run.failures,
            "rc": rc,
            "ran": True,
            "timed_out": run.killed,
            "ms": round(elapsed * 1000, 1),
            "ts": time.time(),
        }
        self.publish_status()

    # -- LQI ----------------------------------------------------------------------------

    def _on_lqi(self, result: dict[str, Any]) -> None:
        self.counters["lqi.reads"] += 1
        error = result.get("error") or result.get("bug")
        value = result.get("lqi")
        if not error and not (isinstance(value, int) and 0 <= value <= LQI_MAX):
            error = f"bad value {value!r}"
        if error or not isinstance(value, int):
            self.count_drop(
                "lqi.errors", "lqi read failed source=%s error=%r", self.lqi_source, error
            )
            value = LQI_UNKNOWN
        elif self.lqi_error is not None:
            log.info("lqi read ok again source=%s lqi=%d", self.lqi_source, value)
        if value != self.lqi:
            log.info("lqi changed lqi=%d was=%d source=%s", value, self.lqi, self.lqi_source)
        self.lqi = value
        self.lqi_error = str(error) if error else None
        self._publish_if_changed()

    # -- state out ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "failures": self.failures,
            "last_change": self.last_change,
            "down_since": self.down_since,
            "lqi": self.lqi,
            "lqi_source": self.lqi_source,
            "lqi_error": self.lqi_error,
            "targets": [[h, p] for h, p in self.targets],
            "last_probe": self.last_probe,
            "step": self.step,
            "last_recovery": self.last_recovery,
            "ts": time.time(),
        }

    def publish_status(self) -> None:
        self._published = (self.up, self.failures, self.lqi, self.step)
        self.publish(bus.T_NET_STATUS, self.status())

    def _publish_if_changed(self) -> None:
        if (self.up, self.failures, self.lqi, self.step) != self._published:
            self.publish_status()

    # -- reload ---------------------------------------------------------------------------

    LIVE_KEYS = frozenset(
        {
            "WATCHDOG.targets",
            "WATCHDOG.timeout_s",
            "WATCHDOG.radio_cycle_after",
            "WATCHDOG.reboot_after",
            "WATCHDOG.ladder_backoff_max",
            "WATCHDOG.radio_cycle_cmd",
            "WATCHDOG.reboot_cmd",
            "WATCHDOG.command_timeout_s",
            "WATCHDOG.lqi.value",
            "WATCHDOG.lqi.source",
            "WATCHDOG.lqi.command",
            "WATCHDOG.lqi.pattern",
            "WATCHDOG.lqi.at_port",
            "WATCHDOG.lqi.at_baudrate",
            "WATCHDOG.lqi.timeout_s",
        }
    )

    def apply_config(self, new: dict[str, Any], changed: list[str]) -> None:
        wd = new["WATCHDOG"]
        hes = new["TCP_SERVER"]
        self.targets = [(str(h), int(p)) for h, p in wd["targets"]] or [
            (str(hes["host"]), int(hes["port"]))
        ]
        self.timeout = wd["timeout_s"]
        self.commands = {
            STEP_RADIO: list(wd["radio_cycle_cmd"]),
            STEP_REBOOT: list(wd["reboot_cmd"]),
        }
        self.command_timeout = wd["command_timeout_s"]
        if any(
            k.startswith(("WATCHDOG.radio", "WATCHDOG.reboot", "WATCHDOG.ladder")) for k in changed
        ):
            self.ladder = Ladder(
                wd["radio_cycle_after"], wd["reboot_after"], wd["ladder_backoff_max"]
            )
        if any(k.startswith("WATCHDOG.lqi.") and k != "WATCHDOG.lqi.value" for k in changed):
            self._replace_lqi_source(new)
        if self.lqi_source == "fixed":
            self.lqi = wd["lqi"]["value"]
        log.info(
            "watchdog config applied targets=%s timeout_s=%s",
            ",".join(target_name(h, p) for h, p in self.targets),
            self.timeout,
        )
        self.publish_status()

    def _replace_lqi_source(self, new: dict[str, Any]) -> None:
        """A new LQI source: the old reader stops (a reading under way ends with
        its own timeout and is ignored), the new one reads at the next tick."""
        try:
            pattern = check_config(new)
        except ConfigError as exc:
            log.error("reload: keeping the LQI source error=%r", str(exc))
            return
        old = self.lqi_worker
        if old is not None:
            old.stop()
            if not old.join(JOIN_TIMEOUT_S):
                log.warning("lqi reader still busy, left to end on its own")
        lqi = new["WATCHDOG"]["lqi"]
        self.lqi_source = lqi["source"]
        self.lqi = lqi["value"] if self.lqi_source == "fixed" else LQI_UNKNOWN
        self.lqi_error = None
        self.lqi_worker = self._lqi_worker(lqi, pattern)
        if self.lqi_worker is not None:
            self.lqi_worker.start()
            self.lqi_worker.kick()
        log.info("watchdog lqi source now %s", self.lqi_source)

    def heartbeat_data(self) -> dict[str, Any]:
        data = super().heartbeat_data()
        data.update(
            up=self.up,
            link_up=self.link_up,
            failures=self.failures,
            lqi=self.lqi,
            step=self.step,
            targets=[target_name(h, p) for h, p in self.targets],
        )
        return data


def make_watchdog(config: dict[str, Any]) -> Watchdog:
    try:
        check_config(config)
    except ConfigError as exc:
        print(f"meterlink: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return Watchdog(config)


def main() -> None:
    main_for(make_watchdog, bus.WATCHDOG, __doc__)


if __name__ == "__main__":
    main()

"""Shared test fixtures: real processes, real ZeroMQ over ipc, short run directories.

Every wait here has a deadline; nothing sleeps in the hope that something
happened. Processes are started with ``python -m services.<name>`` from the
repository root, each with its own log file in the run directory, and are
killed at the end of the test whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import bus  # noqa: E402


def shared_dir() -> Path:
    """Where ``vectors/frames.json`` is: $METERLINK_SHARED, else the project's
    shared/ beside the checkout, else the copy in tests/ (a lone clone)."""
    env = os.environ.get("METERLINK_SHARED")
    if env:
        return Path(env)
    beside = ROOT.parent / "shared"
    if (beside / "vectors" / "frames.json").exists():
        return beside
    return ROOT / "tests"


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``pred`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def base_config(run_dir: str | Path, **sections: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "UART": {"port": f"{run_dir}/meter.tty", "idle_gap_ms": 20},
        "TCP_SERVER": {"host": "127.0.0.1", "port": 9, "timeout": 1},
        "DEVICE": {"name": "gw-test", "meter_sn": "SN-TEST-1"},
        "WATCHDOG": {"interval_s": 0.5, "timeout_s": 0.5, "status_interval_s": 0.5},
        "LOG": {"level": "INFO"},
        # Tests that scrape choose a free port; the others serve no endpoint.
        "METRICS": {"listen": ""},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


class Proc:
    """One service process with its log file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, needle: str, timeout: float = 10.0) -> None:
        wait_for(lambda: needle in self.text(), timeout, f"{needle!r} in {self.name} log")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.popen.wait(10)

    def alive(self) -> bool:
        return self.popen.poll() is None


class Stack:
    """Starts services as real processes in one run directory."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.config_path = run_dir / "test.json"
        self.procs: list[Proc] = []
        self.write_config(config)
        self._n = 0

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = config
        self.config_path.write_text(json.dumps(config, indent=1))

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            METERLINK_CONFIG=str(self.config_path),
            METERLINK_RUN_DIR=str(self.run_dir),
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def start(self, module: str, *args: str, name: str | None = None, **env: str) -> Proc:
        self._n += 1
        label = name or module.rsplit(".", 1)[-1]
        log = self.run_dir / f"{label}-{self._n}.log"
        out = log.open("wb")
        popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=self.env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        proc = Proc(label, popen, log)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in self.procs:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.text()[-3000:]}" for p in self.procs)


class Probe:
    """A test's own bus endpoints: act as any service, receive what it would."""

    def __init__(self, run_dir: Path, name: str = "probe") -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.run_dir = str(run_dir)
        self.name = name
        self.inst = bus.new_instance_id()
        self.seq = 0
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.setsockopt(zmq.SNDHWM, 0)
        self.push.connect(self.addr(bus.BROKER_IN))
        self._socks: list[zmq.Socket[bytes]] = [self.push]

    def addr(self, name: str) -> str:
        return bus.endpoint({"transport": "ipc"}, self.run_dir, name)

    def envelope(
        self, op: str, data: Any, src: str | None = None, inst: int | None = None
    ) -> bytes:
        seq = self.seq
        self.seq += 1
        return bus.encode(
            bus.Envelope(src or self.name, inst or self.inst, seq, time.time(), op, data)
        )

    def send(
        self, dst: str, op: str, data: Any, src: str | None = None, inst: int | None = None
    ) -> None:
        self.push.send_multipart([dst.encode(), self.envelope(op, data, src, inst)])

    def inbox(self, service: str) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.addr(f"{service}.in"))
        self._socks.append(sock)
        return sock

    def subscriber(self, *topics: str) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sock.connect(self.addr(bus.EVENTS_OUT))
        self._socks.append(sock)
        return sock

    def publisher(self) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.addr(bus.EVENTS_IN))
        self._socks.append(sock)
        return sock

    @staticmethod
    def recv(sock: zmq.Socket[bytes], timeout: float = 5.0) -> list[bytes]:
        if not sock.poll(int(timeout * 1000)):
            raise AssertionError(f"nothing received within {timeout}s")
        return sock.recv_multipart()

    @staticmethod
    def recv_env(sock: zmq.Socket[bytes], timeout: float = 5.0) -> bus.Envelope:
        return bus.decode(Probe.recv(sock, timeout)[-1])

    def wait_event(
        self,
        sock: zmq.Socket[bytes],
        topic: str,
        pred: Callable[[Any], bool] = lambda d: True,
        timeout: float = 10.0,
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {topic} event matching within {timeout}s")
            if not sock.poll(int(left * 1000)):
                continue
            parts = sock.recv_multipart()
            if parts[0].decode() == topic or (
                topic.endswith(".") and parts[0].decode().startswith(topic)
            ):
                data = (
                    bus.decode(parts[1]).data if parts[0] != b"tap" else msgpack.unpackb(parts[1])
                )
                if pred(data):
                    return data

    def close(self) -> None:
        for sock in self._socks:
            sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # ipc paths must stay under ~100 bytes, so not pytest's long tmp_path.
    path = Path(tempfile.mkdtemp(prefix="ml-", dir="/tmp"))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def stack(run_dir: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = Stack(run_dir, base_config(run_dir))
    yield s
    s.close()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(s.logs())


@pytest.fixture
def probe(run_dir: Path) -> Iterator[Probe]:
    p = Probe(run_dir)
    yield p
    p.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)

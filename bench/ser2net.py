"""ser2net beside meterlink: the same pty -> TCP path, as a reference.

ser2net is what a Linux user picks to put a serial device on the network: a C
daemon that relays bytes from a tty to TCP. ``Ser2net`` runs it on a pty of its
own with a ser2net 4 YAML config written to a temporary directory (nothing under
/etc is read or written):

    connection: &bench
      accepter: tcp,127.0.0.1,<free port>
      connector: serialdev,/dev/pts/<N>

raw TCP (no telnet, no RFC 2217), default options; started as ``ser2net -n -u
-c <file>`` (``-n`` stays in the foreground, ``-u`` skips the UUCP lock file
under /var/lock). The bench connects to it as the HES would and reads with the
same ``PayloadStream`` as meterlink's HES, and the meter writes the same 64-byte
payloads, bare (meterlink's meter wraps each in a 0x2100 frame). So
``pipeline.latency_run`` and ``pipeline.throughput_run`` time both alike.

``find()`` gives the program's path, or None when it is not installed (the bench
then says so and skips the side-by-side rows).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench import pipeline

#: Where Debian installs it, for shells whose PATH lacks the sbin directories.
SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
#: ser2net's TCP port must accept a connection within this.
START_TIMEOUT_S = 10.0
#: How long ser2net gets to exit after SIGTERM before SIGKILL.
STOP_WAIT_S = 3.0


class Ser2netError(RuntimeError):
    """ser2net did not start or died; the side-by-side rows are skipped."""


def find(name: str = "ser2net") -> str | None:
    """The path of ``name`` on PATH or in the sbin directories; None if not installed."""
    found = shutil.which(name)
    if found:
        return found
    return shutil.which(name, path=os.pathsep.join(SBIN_DIRS))


def version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (out.stdout + out.stderr).strip()
    return text.rsplit(" ", 1)[-1] if text else "?"


def config(port: int, device: str) -> str:
    """A ser2net 4 YAML config: one raw TCP accepter on 127.0.0.1:``port`` for ``device``."""
    return (
        f"connection: &bench\n  accepter: tcp,127.0.0.1,{port}\n  connector: serialdev,{device}\n"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Reader:
    """A TCP client of ser2net that stamps each payload it reads (the HES's part)."""

    def __init__(self, sock: socket.socket, up: pipeline.Arrivals) -> None:
        self.sock = sock
        self.stream = pipeline.PayloadStream(up)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="ser2net-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], pipeline.HES_SELECT_S)
            if not ready:
                continue
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                return
            t = time.perf_counter()
            if not data:
                return
            self.stream.feed(data, t)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


class Ser2net(pipeline.Target):
    """ser2net on a pty of its own, with the bench connected to its TCP port."""

    name = "ser2net"

    def __init__(self, exe: str) -> None:
        self.exe = exe
        self.version = version(exe)
        self.dir = tempfile.mkdtemp(prefix="mlb-s2n-", dir="/tmp")
        os.chmod(self.dir, 0o700)
        self.meter = pipeline.Meter()
        self.up = pipeline.Arrivals()
        self.next_seq = 0
        self.port = _free_port()
        self.config_path = Path(self.dir) / "ser2net.yaml"
        self.config_path.write_text(config(self.port, self.meter.device))
        self.log = Path(self.dir) / "ser2net.log"
        self.reader: _Reader | None = None
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [exe, "-n", "-u", "-c", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self.reader = _Reader(self._connect(), self.up)
            self.warm_up()
        except BaseException as exc:
            self.close()
            if isinstance(exc, pipeline.StackError):
                raise Ser2netError(str(exc)) from None
            raise

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self.check_alive()
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
            except OSError:
                if time.monotonic() > deadline:
                    raise Ser2netError(
                        f"ser2net did not accept on 127.0.0.1:{self.port} within "
                        f"{START_TIMEOUT_S:g}s\n{self.diagnose()}"
                    ) from None
                time.sleep(pipeline.READY_POLL_S)
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

    def wire(self, seq: int) -> bytes:
        return pipeline.uplink_payload(seq)

    def pids(self) -> dict[str, int]:
        return {"ser2net": self.proc.pid}

    def check_alive(self) -> None:
        rc = self.proc.poll()
        if rc is not None:
            raise Ser2netError(f"ser2net exited with status {rc}\n{self.diagnose()}")

    def diagnose(self) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            text = ""
        return "--- ser2net output (tail) ---\n" + "\n".join(text.splitlines()[-10:])

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_WAIT_S)
        self.meter.close()
        shutil.rmtree(self.dir, ignore_errors=True)

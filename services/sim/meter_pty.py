"""A meter's end of a real pseudo-terminal: the meter double of the tests, the
meter simulator and the bench.

``MeterPty(link)`` opens a pty, puts it in raw mode (no echo, no newline
translation: frames are binary) and points the symlink ``link`` at the slave,
so a service configured with ``UART.port = link`` opens it as it would open
``/dev/ttyUSB0``. The test holds the master and plays the meter.

The slave fd stays open here too: with no slave open, reads on the master fail
with EIO and what the master writes may be lost, so holding it keeps the
meter's side stable while the service closes and reopens its own fd.
``vanish()`` closes both ends and removes the link, which is how a USB
adapter being unplugged looks to the service (its reads fail, the device and
its by-id link disappear); ``replug()`` opens a new pty and points the link at
it atomically.
"""

from __future__ import annotations

import errno
import os
import select
import time
import tty
from pathlib import Path


class MeterPty:
    """The meter side of a pseudo-terminal reached through a symlink."""

    def __init__(self, link: str | Path | None, *, create: bool = True) -> None:
        #: The symlink to the slave (None: no link; use ``slave_name``).
        self.link = Path(link) if link is not None else None
        self.master = -1
        self.slave = -1
        self.slave_name = ""
        if create:
            self.replug()

    @property
    def is_open(self) -> bool:
        return self.master >= 0

    def replug(self) -> None:
        """Open a new pty and point the link at its slave (closing any old one)."""
        self._close_fds()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self.slave = master, slave
        self.slave_name = os.ttyname(slave)
        if self.link is None:
            return
        tmp = self.link.with_name(self.link.name + ".new")
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(self.slave_name, tmp)
        os.replace(tmp, self.link)  # atomic: never a moment with no link

    def vanish(self) -> None:
        """Close both ends and remove the link: the device is gone.

        The link goes too, as a ``/dev/serial/by-id`` link does on unplug. A
        dangling link would be worse than unrealistic: the kernel reuses pty
        numbers, so it could soon name another process's pty.
        """
        self._close_fds()
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    close = vanish

    def _close_fds(self) -> None:
        for fd in (self.master, self.slave):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = -1

    def write(self, data: bytes, chunk: int = 0, timeout: float = 10.0) -> None:
        """Write ``data`` as the meter; ``chunk`` > 0 splits it into writes of that size."""
        step = chunk or len(data) or 1
        deadline = time.monotonic() + timeout
        for start in range(0, len(data), step):
            piece = memoryview(data)[start : start + step]
            while piece:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"pty write stalled for {timeout}s")
                _, ready, _ = select.select([], [self.master], [], left)
                if not ready:
                    continue
                try:
                    n = os.write(self.master, piece)
                except BlockingIOError:
                    continue
                piece = piece[n:]

    def read_some(self, timeout: float) -> bytes:
        """What the service wrote, waiting up to ``timeout`` for the first byte."""
        ready, _, _ = select.select([self.master], [], [], max(0.0, timeout))
        if not ready:
            return b""
        try:
            return os.read(self.master, 65536)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # no slave open right now
                return b""
            raise

    def read_exactly(self, n: int, timeout: float = 10.0) -> bytes:
        """Read ``n`` bytes written by the service; fail after ``timeout``."""
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"read {len(buf)} of {n} bytes from the pty within {timeout}s: {bytes(buf)!r}"
                )
            buf += self.read_some(min(left, 0.1))
        return bytes(buf)

    def expect_silence(self, duration: float) -> bytes:
        """Everything the service writes during ``duration`` (ideally nothing)."""
        buf = bytearray()
        deadline = time.monotonic() + duration
        while (left := deadline - time.monotonic()) > 0:
            buf += self.read_some(min(left, 0.05))
        return bytes(buf)

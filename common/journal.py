"""The uart's journal: an append-only file of what it holds, in the run directory.

A frame read from the meter must outlive a SIGKILL of the uart before it
leaves the uart. So each batch of frames (a *unit* of the uplink stream, see
``common.delivery``) is appended here before it is sent, and the
acknowledgements that release units are appended as they come. A restarted
uart replays the file: every unit not acknowledged is held and sent again
with its old identity, and the receiver drops what it already has.

The journal also keeps the downlink marks: the last unit of each HES data
stream written whole to the meter, so that a restarted uart does not write
again what it had written (see ``Uart`` for the one window this leaves).

The uplink stream's identity is the journal's *epoch*, not the process
instance: a restarted uart goes on numbering where the last one stopped, in
the same stream, so the client keeps every unit in one order across restarts
of either. A new epoch starts only with a new (or lost) journal.

Records: a 4-byte big-endian length, then a msgpack array:

- ``["e", epoch, next_n]``           the stream's epoch (first record) and,
                                     after a compaction, its next number;
- ``["u", inst, n, [frame, ...], partial]``  a unit of uplink frames, with the
                                     bytes read after them toward the next frame;
- ``["p", partial]``                 the bytes read toward the next frame, when a
                                     read completed none;
- ``["a", inst, n]``                 units of ``inst`` up to ``n`` acknowledged;
- ``["d", src, inst, n]``            downlink unit ``n`` of ``(src, inst)`` written.

Durability. Every record is one ``write()`` to a file opened ``O_APPEND``,
so it is in the page cache, and survives a kill of the process, when the
call returns. Power loss is covered by the fsync policy: ``always`` (fsync
after every record: slowest, nothing lost), ``interval`` (at most every
``fsync_interval_s``: a power cut loses at most that much), ``never`` (the
kernel writes back on its own, usually within 30 s). A torn last record (a
power cut mid-write) is cut off at open, and counted.

Size. The file is rewritten with only what is still held (``compact``) when
it has grown past ``compact_bytes``; the rewrite goes to a temporary file
renamed over the old one, so a kill mid-way leaves one whole journal.
The file is created 0600. No sockets, no threads.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

FSYNC_POLICIES = ("always", "interval", "never")
_LEN = struct.Struct(">I")
#: A record longer than this is corruption, not data (frames are <= 64 KiB).
RECORD_MAX = 64 * 1024 * 1024


class JournalError(Exception):
    """The journal cannot be opened, read or written."""


class Replay:
    """What a journal held at open: units not acknowledged, in order, and marks."""

    def __init__(
        self,
        units: list[tuple[int, int, list[bytes]]] | None = None,
        marks: dict[tuple[str, int], int] | None = None,
        partial: bytes = b"",
        epoch: int = 0,
        next_n: int = 0,
        torn_bytes: int = 0,
        records: int = 0,
    ) -> None:
        self.units = [] if units is None else units
        self.marks = {} if marks is None else marks
        self.partial = partial  # bytes read toward a frame not complete yet
        self.epoch = epoch  # 0: a new journal (``open`` makes one)
        self.next_n = next_n  # the next unit number of the epoch
        self.torn_bytes = torn_bytes  # bytes of a partial last record, cut off
        self.records = records

    def __repr__(self) -> str:
        return f"Replay({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Journal:
    """Append-only journal at ``path``; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: str = "interval",
        fsync_interval_s: float = 1.0,
        compact_bytes: int = 4 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.path = os.fspath(path)
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.compact_bytes = compact_bytes
        self._clock = clock
        self._packb = msgpack.Packer(use_bin_type=True).pack
        self._dirty = False
        self._last_sync = clock()
        self.size = 0
        self.fd = -1
        self.epoch = 0

    # -- opening -------------------------------------------------------------------

    def open(self) -> Replay:
        """Read what the file holds, cut off a torn tail, open it for appending."""
        replay = Replay()
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise JournalError(f"journal {self.path}: {exc.strerror or exc}") from None
        good = self._parse(data, replay)
        replay.torn_bytes = len(data) - good
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.fchmod(self.fd, 0o600)
            if replay.torn_bytes:
                os.ftruncate(self.fd, good)
        except OSError as exc:
            raise JournalError(f"journal {self.path}: {exc.strerror or exc}") from None
        self.size = good
        if not replay.epoch:
            replay.epoch = time.time_ns()
            self._append(["e", replay.epoch, 0])
        self.epoch = replay.epoch
        return replay

    def _parse(self, data: bytes, replay: Replay) -> int:
        """Fill ``replay`` from ``data``; return the length of the whole records."""
        held: dict[tuple[int, int], list[bytes]] = {}
        order: list[tuple[int, int]] = []
        acked: dict[int, int] = {}
        pos = 0
        while pos + 4 <= len(data):
            (length,) = _LEN.unpack_from(data, pos)
            if length > RECORD_MAX or pos + 4 + length > len(data):
                break
            try:
                rec = msgpack.unpackb(data[pos + 4 : pos + 4 + length], raw=False)
                self._apply(rec, held, order, acked, replay)
            except (ValueError, TypeError, IndexError, msgpack.UnpackException):
                break  # corruption: keep what came before
            pos += 4 + length
            replay.records += 1
        for key in order:
            inst, n = key
            if inst == replay.epoch:
                replay.next_n = max(replay.next_n, n + 1)
            if key in held and n > acked.get(inst, -1):
                replay.units.append((inst, n, held[key]))
        return pos

    @staticmethod
    def _apply(
        rec: Any,
        held: dict[tuple[int, int], list[bytes]],
        order: list[tuple[int, int]],
        acked: dict[int, int],
        replay: Replay,
    ) -> None:
        kind = rec[0]
        if kind == "e":
            replay.epoch = int(rec[1])
            replay.next_n = max(replay.next_n, int(rec[2]))
        elif kind == "u":
            inst, n, frames = int(rec[1]), int(rec[2]), rec[3]
            if not isinstance(frames, list) or not all(isinstance(f, bytes) for f in frames):
                raise ValueError("bad unit record")
            if (inst, n) not in held:
                order.append((inst, n))
            held[(inst, n)] = frames
            if len(rec) > 4:
                replay.partial = bytes(rec[4])
        elif kind == "p":
            replay.partial = bytes(rec[1])
        elif kind == "a":
            inst, n = int(rec[1]), int(rec[2])
            acked[inst] = max(acked.get(inst, -1), n)
        elif kind == "d":
            key = (str(rec[1]), int(rec[2]))
            replay.marks[key] = max(replay.marks.get(key, -1), int(rec[3]))
        else:
            raise ValueError(f"unknown record kind {kind!r}")

    # -- appending -------------------------------------------------------------------

    def unit(self, inst: int, n: int, frames: list[bytes], partial: bytes = b"") -> None:
        """A unit, and the partial frame read after it, in one record."""
        self._append(["u", inst, n, frames, partial])

    def partial(self, data: bytes) -> None:
        """The bytes read toward the next frame (a read that completed none)."""
        self._append(["p", data])

    def ack(self, inst: int, n: int) -> None:
        self._append(["a", inst, n])

    def mark(self, src: str, inst: int, n: int) -> None:
        self._append(["d", src, inst, n])

    def _append(self, rec: list[Any]) -> None:
        body = self._packb(rec)
        record = _LEN.pack(len(body)) + body
        try:
            written = os.write(self.fd, record)
            if written != len(record):  # disk full mid-record: never leave it torn
                os.ftruncate(self.fd, self.size)
                raise JournalError(f"journal {self.path}: short write ({written} bytes)")
        except OSError as exc:
            raise JournalError(f"journal {self.path}: {exc.strerror or exc}") from None
        self.size += len(record)
        self._dirty = True
        if self.fsync == "always":
            self.sync()

    def sync(self) -> None:
        """fsync now if anything was appended since the last one."""
        if not self._dirty:
            return
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise JournalError(f"journal {self.path}: fsync: {exc.strerror or exc}") from None
        self._dirty = False
        self._last_sync = self._clock()

    def tick(self) -> None:
        """Call now and then: applies the ``interval`` fsync policy."""
        if self.fsync == "interval" and self._clock() - self._last_sync >= self.fsync_interval_s:
            self.sync()

    # -- compaction ---------------------------------------------------------------------

    def wants_compaction(self, held_bytes: int) -> bool:
        return self.size > max(self.compact_bytes, 4 * held_bytes)

    def compact(
        self,
        units: Iterable[tuple[int, int, list[bytes]]],
        marks: dict[tuple[str, int], int],
        next_n: int,
        partial: bytes = b"",
    ) -> None:
        """Rewrite the file with only ``units`` (still held), ``marks``, the
        partial frame and the epoch with its next number.

        The new file is written aside and renamed over the old one; from the
        rename on, appends go to the new file (its descriptor is the one
        kept), so a failure after it cannot leave records in an unlinked file.
        """
        tmp = self.path + ".tmp"
        out = bytearray()
        records: list[list[Any]] = [["e", self.epoch, next_n]]
        records += [["u", inst, n, frames] for inst, n, frames in units]
        records += [["d", src, inst, n] for (src, inst), n in marks.items()]
        records.append(["p", partial])
        for rec in records:
            body = self._packb(rec)
            out += _LEN.pack(len(body)) + body
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        except OSError as exc:
            raise JournalError(f"journal {self.path}: compact: {exc.strerror or exc}") from None
        try:
            view = memoryview(bytes(out))
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync != "never":
                os.fsync(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"journal {self.path}: compact: {exc.strerror or exc}") from None
        os.close(self.fd)
        self.fd = fd
        self.size = len(out)
        self._dirty = False
        if self.fsync != "never":
            try:
                dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError as exc:
                error = exc.strerror or exc
                raise JournalError(f"journal {self.path}: fsync dir: {error}") from None

    def close(self) -> None:
        if self.fd >= 0:
            try:
                if self.fsync != "never":
                    self.sync()
            finally:
                os.close(self.fd)
                self.fd = -1

"""A durable, bounded FIFO of payloads on disk (SQLite, WAL mode).

The client keeps here what it could not send to the HES yet, so that it goes
out in order once the link is back, even if the process was killed meanwhile.

Theory of operation: one table ``spool(id, ts, size, data)`` ordered by
``id``. ``append(payloads)`` inserts a whole batch in one transaction and
commits with ``synchronous=FULL``, so when it returns the batch is in the WAL
file and fsynced: a process killed (or a power cut) right after keeps it.
Draining is ``peek(n, after=id)`` to read the oldest entries without removing
them (appended ids only ever grow, even across an empty spool and a reopen,
so such a cursor stays valid while entries are appended or dropped), then
``ack(upto_id)`` once they are delivered; acks commit with
``synchronous=NORMAL`` (no fsync) because a lost ack only means a payload is
sent again, never that one is lost. Delivery is therefore at least once.

``push_front(payloads)`` puts payloads back ahead of everything (ids below the
smallest), for data that was handed to a connection that died before it was
written; it invalidates drain cursors.

Bounds: ``max_bytes`` (sum of payload sizes) and ``max_age_s``. When a batch
makes the spool too big, or entries grow too old, the OLDEST entries are
dropped; every append/expire returns a ``Dropped`` report (counts and bytes by
reason) so the caller can count and log it, and ``totals`` keeps the sums over
the spool object's life. A single payload larger than ``max_bytes`` is dropped
on arrival (reason ``size``). Only a prefix of the queue expires, so the order
of what remains never changes.

Age is measured on the spool's own clock, never on the wall clock: a gateway
without a battery-backed clock boots near 1970 and is stepped by NTP later,
and a step must neither expire the backlog nor keep it forever. The spool
clock is stored in the file (table ``meta``) and advances by the monotonic
time that passes while the spool is open, so it counts across restarts the
time the gateway was running; time powered off does not age the data.

Delivery marks (table ``marks``): the last unit of each acknowledged stream
(``common.delivery``) that the caller has made safe. ``append`` and
``push_front`` write the marks they are given in the same transaction as the
payloads, so after a crash the spool never holds a payload whose unit a
restarted client would take in a second time.

No I/O other than the database file; no zmq, no sockets. One thread only.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence

#: Rows read per step while looking for the cut-off of a size or age drop.
_SCAN_STEP = 512

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS spool (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    ts   REAL    NOT NULL,
    size INTEGER NOT NULL,
    data BLOB    NOT NULL
)""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)",
    """
CREATE TABLE IF NOT EXISTS marks (
    src  TEXT    NOT NULL,
    inst INTEGER NOT NULL,
    n    INTEGER NOT NULL,
    at   REAL    NOT NULL,
    PRIMARY KEY (src, inst)
)""",
)
#: Streams whose marks are kept (the most recently written ones).
MARKS_MAX = 64

Mark = tuple[str, int, int]  # (src, inst, n)


class SpoolError(Exception):
    """The spool database cannot be opened or written (disk full, corrupt file...)."""


class Dropped:
    """What a bound removed: entry counts and bytes, by reason."""

    # A plain class, not a dataclass: dataclasses costs every process its own memory.
    __slots__ = ("size", "size_bytes", "age", "age_bytes")

    def __init__(
        self, size: int = 0, size_bytes: int = 0, age: int = 0, age_bytes: int = 0
    ) -> None:
        self.size = size
        self.size_bytes = size_bytes
        self.age = age
        self.age_bytes = age_bytes

    def __repr__(self) -> str:
        return (
            f"Dropped(size={self.size!r}, size_bytes={self.size_bytes!r}, "
            f"age={self.age!r}, age_bytes={self.age_bytes!r})"
        )

    def __eq__(self, other: object) -> bool:
        if type(other) is not Dropped:
            return NotImplemented
        return (self.size, self.size_bytes, self.age, self.age_bytes) == (
            other.size,
            other.size_bytes,
            other.age,
            other.age_bytes,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __bool__(self) -> bool:
        return bool(self.size or self.age)

    def add(self, other: Dropped) -> None:
        self.size += other.size
        self.size_bytes += other.size_bytes
        self.age += other.age
        self.age_bytes += other.age_bytes


class Spool:
    """Durable FIFO of ``bytes`` payloads at ``path``, bounded by size and age."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int,
        max_age_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        self.path = os.fspath(path)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self.totals = Dropped()
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE).
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            self._db.execute("PRAGMA journal_mode=WAL")
            for stmt in _SCHEMA:
                self._db.execute(stmt)
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool").fetchone()
            saved = self._db.execute("SELECT value FROM meta WHERE key = 'clock'").fetchone()
            if saved is None:
                # A new file, or one from before the spool clock: carry on from
                # its newest entry, so the entries' ages stay as they were.
                newest = self._db.execute("SELECT MAX(ts) FROM spool").fetchone()[0]
                saved = (float(newest) if newest is not None else 0.0,)
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from None
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                os.chmod(name, 0o600)
            except OSError:
                pass
        self._count: int = int(row[0])
        self._bytes: int = int(row[1])
        self._sync: str | None = None
        self._clock_base = float(saved[0])
        self._clock_start = clock()
        #: Ids of the last ``append``, aligned with its payloads (None: dropped).
        self.last_ids: list[int | None] = []

    # -- state -------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Entries waiting."""
        return self._count

    @property
    def nbytes(self) -> int:
        """Sum of the sizes of the entries waiting."""
        return self._bytes

    def __len__(self) -> int:
        return self._count

    def now(self) -> float:
        """The spool clock: seconds the spool has been open, over its life."""
        return self._clock_base + (self._clock() - self._clock_start)

    def age(self) -> float:
        """Age of the oldest entry on the spool clock (0 if empty)."""
        if not self._count:
            return 0.0
        row = self._db.execute("SELECT ts FROM spool ORDER BY id LIMIT 1").fetchone()
        return max(0.0, self.now() - float(row[0])) if row else 0.0

    def marks(self) -> list[Mark]:
        """Every stored delivery mark ``(src, inst, n)``."""
        try:
            rows = self._db.execute("SELECT src, inst, n FROM marks").fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from None
        return [(str(a), int(b), int(c)) for a, b, c in rows]

    def set_marks(self, marks: Sequence[Mark]) -> None:
        """Store delivery marks (not fsynced: a lost one means a repeat, not a loss)."""
        if marks:
            with self._transaction("NORMAL"):
                self._write_marks(marks, self.now())

    def _write_marks(self, marks: Sequence[Mark], now: float) -> None:
        self._db.executemany(
            "INSERT INTO marks (src, inst, n, at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (src, inst) DO UPDATE SET n = MAX(n, excluded.n), at = excluded.at",
            [(src, inst, n, now) for src, inst, n in marks],
        )
        self._db.execute(
            "DELETE FROM marks WHERE rowid NOT IN "
            "(SELECT rowid FROM marks ORDER BY at DESC LIMIT ?)",
            (MARKS_MAX,),
        )
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('clock', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (now,),
        )

    def close(self) -> None:
        try:
            with self._transaction("NORMAL"):
                self._save_clock(self.now())
        except SpoolError:
            pass
        self._db.close()

    def _save_clock(self, now: float) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('clock', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (now,),
        )

    # -- writing -----------------------------------------------------------------

    def append(self, payloads: Sequence[bytes], marks: Sequence[Mark] = ()) -> Dropped:
        """Add ``payloads`` at the end, durably, in one transaction with ``marks``;
        apply the bounds. ``last_ids`` then holds each payload's id."""
        now = self.now()
        dropped = Dropped()
        rows: list[tuple[float, int, bytes]] = []
        self.last_ids = []
        for p in payloads:
            if len(p) > self.max_bytes:
                dropped.size += 1
                dropped.size_bytes += len(p)
                self.last_ids.append(None)
            else:
                rows.append((now, len(p), bytes(p)))
                self.last_ids.append(-1)
        if rows or marks:
            added = sum(r[1] for r in rows)
            with self._transaction("FULL"):
                # AUTOINCREMENT in one transaction: the ids follow the sequence.
                seq = self._db.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'spool'"
                ).fetchone()
                top = int(seq[0]) if seq else 0
                self._db.executemany("INSERT INTO spool (ts, size, data) VALUES (?, ?, ?)", rows)
                ids = list(range(top + 1, top + 1 + len(rows)))
                if marks:
                    self._write_marks(marks, now)
                self._count += len(rows)
                self._bytes += added
                self._apply_bounds(now, dropped)
            it = iter(ids)
            self.last_ids = [None if i is None else next(it) for i in self.last_ids]
        self.totals.add(dropped)
        return dropped

    def push_front(self, payloads: Sequence[bytes], marks: Sequence[Mark] = ()) -> Dropped:
        """Put ``payloads`` back ahead of every entry, in their order, in one
        transaction with ``marks``; apply the bounds."""
        if not payloads:
            if marks:
                self.set_marks(marks)
            return Dropped()
        now = self.now()
        dropped = Dropped()
        keep = [bytes(p) for p in payloads if len(p) <= self.max_bytes]
        for p in payloads:
            if len(p) > self.max_bytes:
                dropped.size += 1
                dropped.size_bytes += len(p)
        if keep:
            with self._transaction("FULL"):
                head = self._db.execute("SELECT id, ts FROM spool ORDER BY id LIMIT 1").fetchone()
                # Ids below the head keep FIFO order; the head's time keeps the
                # age prefix monotonic (these are at least as old as the head).
                first = (int(head[0]) if head else 1) - len(keep)
                ts = min(now, float(head[1])) if head else now
                self._db.executemany(
                    "INSERT INTO spool (id, ts, size, data) VALUES (?, ?, ?, ?)",
                    [(first + i, ts, len(p), p) for i, p in enumerate(keep)],
                )
                if marks:
                    self._write_marks(marks, now)
                self._count += len(keep)
                self._bytes += sum(len(p) for p in keep)
                self._apply_bounds(now, dropped)
        self.totals.add(dropped)
        return dropped

    def expire(self) -> Dropped:
        """Drop entries older than ``max_age_s`` (call now and then)."""
        dropped = Dropped()
        now = self.now()
        with self._transaction("NORMAL"):
            self._save_clock(now)  # now and then, so a crash loses little of it
            if self._count:
                self._drop_old(now, dropped)
        self.totals.add(dropped)
        return dropped

    # -- draining ------------------------------------------------------------------

    def peek(
        self, n: int, after: int | None = None, max_bytes: int | None = None
    ) -> list[tuple[int, bytes]]:
        """Up to ``n`` oldest entries ``(id, data)`` with id > ``after``, not removed.

        ``max_bytes`` limits the batch's total size (at least one entry is
        returned if any is waiting).
        """
        if n <= 0 or not self._count:
            return []
        try:
            if after is None:
                cur = self._db.execute("SELECT id, data FROM spool ORDER BY id LIMIT ?", (n,))
            else:
                cur = self._db.execute(
                    "SELECT id, data FROM spool WHERE id > ? ORDER BY id LIMIT ?", (after, n)
                )
            out: list[tuple[int, bytes]] = []
            total = 0
            for id_, data in cur:
                if max_bytes is not None and out and total + len(data) > max_bytes:
                    break
                out.append((int(id_), bytes(data)))
                total += len(data)
            cur.close()
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from None
        return out

    def ack(self, upto_id: int) -> int:
        """Remove every entry with id <= ``upto_id`` (delivered); return how many."""
        if not self._count:
            return 0
        with self._transaction("NORMAL"):
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool WHERE id <= ?", (upto_id,)
            ).fetchone()
            n, size = int(row[0]), int(row[1])
            if n:
                self._db.execute("DELETE FROM spool WHERE id <= ?", (upto_id,))
                self._count -= n
                self._bytes -= size
        return n

    def discard(
        self, pick: Callable[[int, int], bool], confirm: Callable[[bytes], bool] | None = None
    ) -> tuple[int, int]:
        """Delete the entries a policy rejects, wherever they are; the rest keep
        their order. Returns ``(entries, bytes)`` removed, for the caller to count.

        ``pick(first_octet, size)`` is asked about every entry from its row alone
        (the payload is not read); ``confirm(data)``, if given, is then asked about
        each picked entry with its whole payload. One transaction, not fsynced: a
        lost delete only means an entry is delivered after all. Invalidates drain
        cursors, as ``push_front`` does.
        """
        if not self._count:
            return 0, 0
        doomed: list[tuple[int, int]] = []
        after: int | None = None  # ids below 1 exist after push_front
        try:
            while True:
                rows = self._db.execute(
                    "SELECT id, size, substr(data, 1, 1) FROM spool "
                    + ("" if after is None else "WHERE id > ? ")
                    + "ORDER BY id LIMIT ?",
                    (_SCAN_STEP,) if after is None else (after, _SCAN_STEP),
                ).fetchall()
                if not rows:
                    break
                for id_, size, head in rows:
                    first = bytes(head)[0] if head else -1
                    if pick(first, int(size)):
                        doomed.append((int(id_), int(size)))
                after = int(rows[-1][0])
            if confirm is not None:
                kept = []
                for id_, size in doomed:
                    row = self._db.execute("SELECT data FROM spool WHERE id = ?", (id_,)).fetchone()
                    if row is not None and confirm(bytes(row[0])):
                        kept.append((id_, size))
                doomed = kept
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {self.path}: {exc}") from None
        if not doomed:
            return 0, 0
        freed = sum(size for _, size in doomed)
        with self._transaction("NORMAL"):
            self._db.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i, _ in doomed])
            self._count -= len(doomed)
            self._bytes -= freed
        return len(doomed), freed

    # -- internals ---------------------------------------------------------------------

    def _apply_bounds(self, now: float, dropped: Dropped) -> None:
        self._drop_old(now, dropped)
        if self._bytes > self.max_bytes:
            self._drop_prefix(lambda ts, freed: freed < self._bytes - self.max_bytes, dropped, True)

    def _drop_old(self, now: float, dropped: Dropped) -> None:
        cutoff = now - self.max_age_s
        self._drop_prefix(lambda ts, freed: ts < cutoff, dropped, False)

    def _drop_prefix(
        self, drop: Callable[[float, int], bool], dropped: Dropped, by_size: bool
    ) -> None:
        """Delete the longest prefix whose rows all satisfy ``drop(ts, bytes_freed_so_far)``."""
        last: int | None = None
        n = freed = 0
        after: int | None = None
        done = False
        while not done:
            if after is None:
                rows = self._db.execute(
                    "SELECT id, ts, size FROM spool ORDER BY id LIMIT ?", (_SCAN_STEP,)
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT id, ts, size FROM spool WHERE id > ? ORDER BY id LIMIT ?",
                    (after, _SCAN_STEP),
                ).fetchall()
            if not rows:
                break
            for id_, ts, size in rows:
                if not drop(float(ts), freed):
                    done = True
                    break
                last = int(id_)
                n += 1
                freed += int(size)
            after = int(rows[-1][0])
        if last is None:
            return
        self._db.execute("DELETE FROM spool WHERE id <= ?", (last,))
        self._count -= n
        self._bytes -= freed
        if by_size:
            dropped.size += n
            dropped.size_bytes += freed
        else:
            dropped.age += n
            dropped.age_bytes += freed

    def _transaction(self, synchronous: str) -> _Txn:
        if self._sync != synchronous:
            try:
                self._db.execute(f"PRAGMA synchronous={synchronous}")
            except sqlite3.Error as exc:
                raise SpoolError(f"spool {self.path}: {exc}") from None
            self._sync = synchronous
        return _Txn(self)


class _Txn:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; on any error roll back and restore counts."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._saved = (0, 0)

    def __enter__(self) -> None:
        s = self._spool
        self._saved = (s._count, s._bytes)
        try:
            s._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise SpoolError(f"spool {s.path}: {exc}") from None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        s = self._spool
        if exc_type is None:
            try:
                s._db.execute("COMMIT")
                return
            except sqlite3.Error as err:
                self._rollback()
                raise SpoolError(f"spool {s.path}: commit failed: {err}") from None
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise SpoolError(f"spool {s.path}: {exc}") from None

    def _rollback(self) -> None:
        s = self._spool
        s._count, s._bytes = self._saved
        try:
            s._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

"""Durable parameter values, shared by every process that uses the same run directory.

The meter SETs gateway parameters (the device name, by default) with 0x2200 frames, and
any resolver worker may take the SET, and any other worker the next GET. So the values
live in one small JSON file in the run directory, ``params.json``::

    {"version": 1, "params": {"8007": {"tag": 10, "value": "6777"},
                              "9002": {"tag": 18, "value": 1234}}}

Keys are the parameter ids in hex; each entry is a typed value (``common.params.Value``):
its A-XDR tag and the value, an int for the integer types and hex text for the others, so
that a GET answers with the type the SET gave.

Theory of operation:

- ``set`` takes an exclusive ``fcntl.flock`` on ``params.json.lock`` (a separate file,
  because the data file is replaced on each write), re-reads the file, changes one entry,
  writes a temporary file in the same directory, fsyncs it, renames it over the data file
  and fsyncs the directory. Two processes' SETs therefore never lose each other, a crash
  leaves either the old or the new file, and when ``set`` returns the value is on disk.
- ``get`` takes no lock: a rename is atomic, so a reader sees a whole file. It re-reads
  only when the file's (mtime_ns, inode, size) changed since it last read, or while the
  file is younger than ``RACY_WINDOW_NS`` at the time it was read (a file rewritten within
  one timestamp tick, with a recycled inode and the same size, would look unchanged:
  git's "racy clean" problem, solved the same way).
- A file that is not valid JSON or not of this shape is logged and counted
  (``params.corrupt``) once per version of the file and treated as empty; the next ``set``
  moves it aside to ``params.json.corrupt`` and starts afresh. A single entry that does
  not decode is skipped and counted (``params.bad_entry``). Nothing here raises on bad
  file contents; ``set`` raises ``OSError`` only when the disk write itself fails.

No ``zmq`` here: the store is plain files, usable by any process or tool.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, MutableMapping
from typing import Any, Final

from common.params import (
    TAG_CHAR,
    TAG_NAMES,
    TAG_STR,
    ParamError,
    Value,
)

__all__ = [
    "FILE_VERSION",
    "PARAMS_FILE",
    "RACY_WINDOW_NS",
    "TYPE_NAMES",
    "ParamStore",
    "describe_value",
    "value_from_json",
    "value_payload",
    "value_to_json",
]

log = logging.getLogger("meterlink.params")

PARAMS_FILE: Final = "params.json"
FILE_VERSION: Final = 1
#: A file read less than this long after its mtime is read again on the next ``get``:
#: it covers filesystems whose timestamps are coarse (2 s on FAT).
RACY_WINDOW_NS: Final = 2_000_000_000

TYPE_NAMES: Final = TAG_NAMES  # kept under this name for callers of the store

_Sig = tuple[int, int, int]  # (mtime_ns, inode, size)

#: Names tried for a temporary file before ``set`` gives up (a clash needs a dead
#: process's leftover with the same pid, counter and 32 random bits).
_TEMP_ATTEMPTS: Final = 100
_temp_seq = itertools.count()


# --- values as JSON and for display ------------------------------------------------------


def value_to_json(value: Value) -> dict[str, Any]:
    """``{"tag": n, "value": int | hex text}``: how a value is kept in the file."""
    v = value.value
    return {"tag": value.tag, "value": v if isinstance(v, int) else v.hex()}


def value_from_json(obj: object) -> Value:
    """The inverse of ``value_to_json``; raise ``ParamError`` for anything else."""
    if not isinstance(obj, dict) or set(obj) != {"tag", "value"}:
        raise ParamError(f"entry must be {{'tag', 'value'}}, got {obj!r:.80}")
    tag, raw = obj["tag"], obj["value"]
    if not isinstance(tag, int) or isinstance(tag, bool):
        raise ParamError(f"entry tag must be an int, got {tag!r:.40}")
    if isinstance(raw, str):
        try:
            return Value(tag, bytes.fromhex(raw))
        except ValueError as exc:
            if isinstance(exc, ParamError):
                raise
            raise ParamError(f"entry value is not hex: {raw!r:.40}") from None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return Value(tag, raw)
    raise ParamError(f"entry value must be an int or hex text, got {raw!r:.40}")


def value_payload(value: Value) -> bytes:
    """The value's own bytes, without tag or length: what an untyped GET answers.

    Integers big-endian in their type's size, CHAR/STR/DATETIME their bytes.
    """
    encoded = value.to_bytes()
    if value.tag in (TAG_CHAR, TAG_STR):
        return encoded[2:]
    return encoded[1:]


def describe_value(value: Value) -> dict[str, Any]:
    """A readable form for events and tools: ``{"tag", "type", "value"}``.

    ``value`` is the int for integer types, the text for CHAR, hex for STR and DATETIME.
    """
    v = value.value
    shown: int | str
    if isinstance(v, int):
        shown = v
    elif value.tag == TAG_CHAR:
        shown = value.text
    else:
        shown = v.hex()
    return {"tag": value.tag, "type": TYPE_NAMES.get(value.tag, str(value.tag)), "value": shown}


# --- the store ---------------------------------------------------------------------------


class ParamStore:
    """Typed parameter values in ``<directory>/params.json``; see the module docstring.

    ``counters`` (the owning service's counters, usually) receives ``params.corrupt``,
    ``params.bad_entry``, ``params.read_error`` and ``params.loads``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        filename: str = PARAMS_FILE,
        counters: MutableMapping[str, int] | None = None,
    ) -> None:
        self.directory = os.fspath(directory)
        self.filename = filename
        self.path = os.path.join(self.directory, filename)
        self.lock_path = self.path + ".lock"
        self.corrupt_path = self.path + ".corrupt"
        self.counters: MutableMapping[str, int] = counters if counters is not None else Counter()
        self._values: dict[int, Value] = {}
        self._sig: _Sig | None = None
        self._read_at = 0  # time.time_ns() of the last read
        self._corrupt = False  # the file as last read did not decode

    # -- reading -----------------------------------------------------------------------

    def _stat(self) -> _Sig | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def _fresh(self, sig: _Sig | None) -> bool:
        """True when what was read last is still what the file holds."""
        if sig != self._sig:
            return False
        if sig is None:
            return True
        return self._read_at - sig[0] >= RACY_WINDOW_NS

    def _refresh(self) -> None:
        try:
            sig = self._stat()
        except OSError as exc:
            self._count("params.read_error", "params file unreadable path=%s error=%r", exc)
            return
        if self._fresh(sig):
            return
        self._load(sig)

    def _load(self, sig: _Sig | None) -> None:
        read_at = time.time_ns()
        self.counters["params.loads"] = self.counters.get("params.loads", 0) + 1
        if sig is None:
            self._values, self._sig, self._read_at, self._corrupt = {}, None, read_at, False
            return
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                text = f.read()
        except FileNotFoundError:
            self._values, self._sig, self._read_at, self._corrupt = {}, None, read_at, False
            return
        except OSError as exc:
            self._count("params.read_error", "params file unreadable path=%s error=%r", exc)
            return
        # The signature of what was actually read: the file may have been replaced
        # between the stat and the open.
        new_sig = (st.st_mtime_ns, st.st_ino, st.st_size)
        # A corrupt file is reported once, not again on each re-read of the same file.
        quiet = self._corrupt and new_sig == self._sig
        self._sig, self._read_at = new_sig, read_at
        self._values, self._corrupt = self._decode(text, quiet)

    def _decode(self, text: bytes, quiet: bool) -> tuple[dict[int, Value], bool]:
        try:
            doc = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if not quiet:
                self._corrupt_file(f"not JSON: {exc}")
            return {}, True
        if (
            not isinstance(doc, dict)
            or doc.get("version") != FILE_VERSION
            or not isinstance(doc.get("params"), dict)
        ):
            if not quiet:
                self._corrupt_file(f"not a version {FILE_VERSION} params document")
            return {}, True
        values: dict[int, Value] = {}
        for key, entry in doc["params"].items():
            try:
                pid = int(key, 16)
                if not 0 <= pid <= 0xFFFF:
                    raise ValueError(f"pid {key!r} out of range")
                values[pid] = value_from_json(entry)
            except ValueError as exc:  # ParamError is a ValueError
                if not quiet:
                    self._count(
                        "params.bad_entry",
                        "params entry skipped path=%s pid=%r error=%r",
                        key,
                        str(exc),
                    )
        return values, False

    def _corrupt_file(self, why: str) -> None:
        self.counters["params.corrupt"] = self.counters.get("params.corrupt", 0) + 1
        log.error("params file corrupt, treated as empty path=%s error=%r", self.path, why)

    def _count(self, counter: str, message: str, *args: Any) -> None:
        self.counters[counter] = self.counters.get(counter, 0) + 1
        log.warning(message, self.path, *args)

    def get(self, pid: int) -> Value | None:
        """The stored value of ``pid``, or None; sees other processes' SETs at once."""
        self._refresh()
        return self._values.get(pid)

    def items(self) -> dict[int, Value]:
        """Every stored value, by parameter id (a copy)."""
        self._refresh()
        return dict(self._values)

    # -- writing -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def set(self, pid: int, value: Value) -> None:
        """Store ``value`` for ``pid`` durably; on return it is on disk.

        Raises ``OSError`` if the file cannot be written (the old file stays).
        """
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 <= pid <= 0xFFFF:
            raise ValueError(f"pid must be an int in 0..0xFFFF, got {pid!r}")
        if not isinstance(value, Value):
            raise TypeError(f"value must be a params.Value, got {type(value).__name__}")
        with self._locked():
            # Under the lock, always read the file itself: another process may have
            # written it within the same timestamp tick.
            self._load(self._stat())
            self._commit({**self._values, pid: value})

    def delete(self, pid: int) -> bool:
        """Forget ``pid``'s stored value; True if there was one."""
        with self._locked():
            self._load(self._stat())
            if pid not in self._values:
                return False
            self._commit({p: v for p, v in self._values.items() if p != pid})
        return True

    def _commit(self, values: dict[int, Value]) -> None:
        """Replace the file with ``values``; the caller holds the lock."""
        if self._corrupt:
            with contextlib.suppress(OSError):
                os.replace(self.path, self.corrupt_path)
                log.error("params file moved aside path=%s to=%s", self.path, self.corrupt_path)
        doc = {
            "version": FILE_VERSION,
            "params": {f"{pid:04x}": value_to_json(v) for pid, v in sorted(values.items())},
        }
        data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
        fd, tmp = self._create_temp()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._values = values
        self._corrupt = False
        self._sig = self._stat()
        self._read_at = time.time_ns()

    def _create_temp(self) -> tuple[int, str]:
        """A new private file beside the data file, as ``tempfile.mkstemp`` makes one
        (``O_EXCL``, mode 0600) without importing ``tempfile`` into every process: the
        name holds the pid, a counter and random bits, and a clash (a file left by a
        dead process) takes the next name."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        for _ in range(_TEMP_ATTEMPTS):
            name = f"{self.filename}.{os.getpid()}.{next(_temp_seq)}.{os.urandom(4).hex()}.tmp"
            tmp = os.path.join(self.directory, name)
            try:
                return os.open(tmp, flags, 0o600), tmp
            except FileExistsError:
                continue
        raise FileExistsError(f"no free temporary file name in {self.directory}")

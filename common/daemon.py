"""What every meterlink process does before its loop: be a well-behaved daemon.

``boot(name, argv, doc)`` is the first thing a service's ``main()`` calls:

1. parse the arguments (``--help`` prints usage and exits 0 before anything
   is opened, bound or started; ``--config`` and ``--run-dir`` override
   ``METERLINK_CONFIG`` / ``METERLINK_RUN_DIR``);
2. ``umask 077``, so every file and socket it creates is private whatever the
   umask it inherited;
3. check the run directory: created 0700 if missing, refused (exit 2, with a
   message) if it has any group or other permission bit;
4. take the single-instance lock ``<run_dir>/pids/<name>.pid`` (``fcntl``
   ``lockf``, released by the kernel when the process dies, so a stale file
   never blocks a restart); a second instance exits with status 2 naming the
   pid that holds it;
5. load and check the configuration; an error prints ``FATAL`` and the
   message and exits with ``EXIT_CONFIG`` (2), a code that supervisord is
   told not to restart (see ``common.supervisor_conf``).

Resolver workers are many per run directory: each locks its own name
(``resolver-0``, ``resolver-1``... from ``--name`` or supervisord's
``SUPERVISOR_PROCESS_NAME``), and one started by hand takes the first free
index, so two workers never share a lock and a worker never takes another's.

Reload: ``reload_config(service)`` re-reads the file on SIGHUP, applies what can
change live (the log level here; each service adds its own keys) and logs
every other change as ``config change needs restart key=...``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import struct
import sys
import types
from typing import TYPE_CHECKING, Any

#: Exit status for every error that a restart cannot fix: a config error, a
#: lock held by another instance, a run directory others can read, bad
#: arguments (argparse's own 2). supervisord is told (``exitcodes``) that it
#: is not worth a restart; any other exit (an exception's 1, a signal) is.
EXIT_CONFIG = 2
EXIT_LOCKED = 2
EXIT_RUN_DIR = 2
WORKER_INDEX_MAX = 256  # a hand-started worker looks for a free index below this

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("meterlink")

#: Keys every process applies live on reload. Services add their own.
LIVE_KEYS: frozenset[str] = frozenset({"LOG.level"})

#: What each service reads: on reload a service says "needs restart" only for
#: a changed key it uses, so one change is reported once, by its owner.
READS: dict[str, tuple[str, ...]] = {
    "broker": ("BUS", "RESOLVER.prefetch", "EXTENSIONS"),
    "uart": ("UART",),
    "client": ("TCP_SERVER", "DEVICE", "UART.max_info", "UART.profile", "UART.accm"),
    "watchdog": ("WATCHDOG", "TCP_SERVER.host", "TCP_SERVER.port"),
    "resolver": ("DEVICE", "RESOLVER"),
}


class RunDirError(Exception):
    """The run directory cannot be used: not a directory, or not private."""


def make_private(run_dir: str) -> int:
    """Take group and other bits off every file in the run directory; how many.

    Each meterlink process creates its files private (umask 077), and the
    launcher starts supervisord with umask 077 too. A supervisord started by
    hand under a looser umask (``supervisord -c supervisord.conf``) creates
    its own files (logs, pid file, the logs it rotates) with that umask: the
    broker calls this at start and every minute so that they do not stay
    readable by others.
    """
    fixed = 0
    for top, dirs, files in os.walk(run_dir):
        for name in dirs + files:
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
                    continue
                os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
                fixed += 1
            except OSError:
                continue  # gone meanwhile, or not ours
    return fixed


def private_umask() -> None:
    """umask 077: whatever this process creates is readable by its user only."""
    os.umask(0o077)


def check_run_dir(path: str | os.PathLike[str], create: bool = True) -> str:
    """Create the run directory 0700, or refuse one that others can read.

    Returns its absolute path."""
    p = os.path.abspath(path)
    if create:
        try:
            os.makedirs(p, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"run directory {p}: {exc.strerror or exc}") from None
    try:
        st = os.stat(p)
    except OSError as exc:
        raise RunDirError(f"run directory {p}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RunDirError(f"run directory {p}: not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise RunDirError(
            f"run directory {p} has mode {mode:04o}: group or others may read it; "
            f"it must be private (chmod 700 {p})"
        )
    if st.st_uid != os.geteuid():
        raise RunDirError(f"run directory {p} belongs to uid {st.st_uid}, not to this user")
    return p


class LockHeld(Exception):
    """Another live process holds the lock; ``pid`` is its pid (0 if unknown)."""

    def __init__(self, name: str, path: str, pid: int) -> None:
        super().__init__(f"{name} is already running in this run directory (pid {pid}, {path})")
        self.name = name
        self.path = path
        self.pid = pid


class PidLock:
    """``<run_dir>/pids/<name>.pid``: locked with ``lockf`` while the process lives.

    The file holds the pid of the holder. The lock, not the file, is what
    counts: the kernel drops it when the process dies, however it dies.
    """

    def __init__(self, run_dir: str | os.PathLike[str], name: str) -> None:
        self.name = name
        self.path = os.path.join(run_dir, "pids", f"{name}.pid")
        self._fd: int | None = None

    def acquire(self) -> PidLock:
        with contextlib.suppress(FileExistsError):
            os.mkdir(os.path.dirname(self.path), mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                held = os.read(fd, 32).decode(errors="replace").strip()
            finally:
                os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise LockHeld(self.name, self.path, int(held) if held.isdigit() else 0) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def holder(run_dir: str | os.PathLike[str], name: str) -> int | None:
        """The pid holding ``name``'s lock, or None if nobody does.

        Asks the kernel (``F_GETLK``) without taking the lock: a probe that
        took it, even for a moment, would turn away a worker starting then
        (it would take the next index instead).

        For other processes' locks only: POSIX record locks belong to the
        process, so asked from the holder itself it answers None, and closing
        the descriptor it opened would release the holder's own lock.
        """
        path = os.path.join(run_dir, "pids", f"{name}.pid")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
            l_type, _whence, _start, _len, pid = _FLOCK.unpack(
                fcntl.fcntl(fd, fcntl.F_GETLK, query)
            )
        finally:
            os.close(fd)
        return None if l_type == fcntl.F_UNLCK else pid


# Linux's struct flock: l_type, l_whence (short), l_start, l_len (off_t, 64 bits
# in CPython's large-file build), l_pid (pid_t), padded to its 8-byte alignment.
_FLOCK = struct.Struct("@hhqqi4x")


def worker_lock(run_dir: str | os.PathLike[str], name: str | None) -> PidLock:
    """A resolver worker's lock: its given name, else the first free index."""
    if name:
        return PidLock(run_dir, name).acquire()
    for i in range(WORKER_INDEX_MAX):
        try:
            return PidLock(run_dir, f"resolver-{i}").acquire()
        except LockHeld:
            continue
    raise LockHeld("resolver", os.path.join(run_dir, "pids"), 0)


def service_parser(name: str, doc: str | None, worker: bool = False) -> argparse.ArgumentParser:
    """The arguments every service takes; the first line of ``doc`` describes it."""
    import argparse  # here: a process started without arguments never needs it

    first = (doc or "").strip().splitlines()[0] if doc else f"the meterlink {name} service"
    ap = argparse.ArgumentParser(
        prog=f"python -m services.{name}",
        description=first,
        epilog=(
            "Run under supervisord (see `meterlink run`). The environment variables "
            "METERLINK_CONFIG and METERLINK_RUN_DIR choose the config file and the run "
            "directory when the options are not given. Exit status 2: another instance "
            "holds this run directory, or the run directory is not private; "
            f"{EXIT_CONFIG}: configuration error (supervisord does not restart it)."
        ),
    )
    ap.add_argument("--config", metavar="FILE", help="config file [$METERLINK_CONFIG, ./dev.json]")
    ap.add_argument("--run-dir", metavar="DIR", help="run directory [$METERLINK_RUN_DIR, ./run]")
    if worker:
        ap.add_argument(
            "--name",
            metavar="NAME",
            help="this worker's name, its lock in the run directory "
            "[$SUPERVISOR_PROCESS_NAME, else the first free resolver-N]",
        )
    return ap


def fatal(message: str, code: int) -> SystemExit:
    print(f"FATAL meterlink: {message}", file=sys.stderr, flush=True)
    return SystemExit(code)


def boot(
    name: str,
    argv: list[str] | None = None,
    doc: str | None = None,
    *,
    worker: bool = False,
    lock: bool = True,
    parser: argparse.ArgumentParser | None = None,
) -> tuple[dict[str, Any], Any]:
    """Arguments, umask, run directory, lock, config: see the module docstring.

    Returns the loaded config and the parsed arguments. The lock is kept for
    the life of the process (its file descriptor is never closed).
    """
    from common.config import ENV_CONFIG, ENV_RUN_DIR, ConfigError, load

    argv = sys.argv[1:] if argv is None else argv
    args: Any
    if parser is None and not argv:
        # Nothing to parse: the defaults, without importing argparse (with
        # gettext and textwrap, 0.4 MB in each process supervisord starts so).
        args = types.SimpleNamespace(config=None, run_dir=None, name=None)
    else:
        args = (parser or service_parser(name, doc, worker)).parse_args(argv)
    private_umask()
    if args.config:
        os.environ[ENV_CONFIG] = os.path.abspath(args.config)
    if args.run_dir:
        os.environ[ENV_RUN_DIR] = os.path.abspath(args.run_dir)
    try:
        rd = check_run_dir(os.environ.get(ENV_RUN_DIR) or "run")
    except RunDirError as exc:
        raise fatal(str(exc), EXIT_RUN_DIR) from None
    holder: PidLock | None = None
    if lock:
        try:
            if worker:
                wname = getattr(args, "name", None) or os.environ.get("SUPERVISOR_PROCESS_NAME")
                if wname and ":" in wname:
                    wname = wname.rsplit(":", 1)[-1]
                holder = worker_lock(rd, wname)
            else:
                holder = PidLock(rd, name).acquire()
        except LockHeld as exc:
            print(
                f"meterlink: {exc}; not starting a second one (pid {exc.pid} holds it)",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(EXIT_LOCKED) from None
    try:
        config = load(run_directory=str(rd))
    except ConfigError as exc:
        for line in getattr(exc, "errors", None) or [str(exc)]:
            print(f"FATAL meterlink: {name}: {line}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG) from None
    config["_lock"] = holder.name if holder else None
    _KEEP.append(holder)
    return config, args


_KEEP: list[PidLock | None] = []  # locks live as long as the process


def log_start_notes(config: dict[str, Any], name: str) -> None:
    """Log what the loader decided for this process (e.g. the UART mapping)."""
    note = config.get("_port_mapped")
    if note and name == "uart":
        log.info(
            "serial port mapped uart_number=%s device=%s rule=%s",
            note["number"],
            note["device"],
            note["rule"],
        )


# -- reload -------------------------------------------------------------------------


def flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    """``{"A": {"b": 1}}`` -> ``{"A.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key.startswith("_"):
                continue
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(value, dict) and value:
                out.update(flat(value, path))
            else:
                out[path] = value
    return out


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = flat(old), flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def is_live(key: str, live: frozenset[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in live)


def reload_config(
    name: str, old: dict[str, Any], live: frozenset[str]
) -> tuple[dict[str, Any] | None, list[str]]:
    """Re-read the config file (same path, same run directory).

    Returns ``(new_config, live_changes)``, or ``(None, [])`` when the file is
    bad now (logged; the process keeps its running config). Changes outside
    ``live`` are logged as needing a restart; the log level is applied here.
    """
    from common.config import ConfigError, load

    try:
        new = load(old.get("_path"), run_directory=old["_run_dir"])
    except ConfigError as exc:
        log.error("reload refused, keeping the running config error=%r", str(exc))
        return None, []
    reads = READS.get(name, (f"EXTENSIONS.{name}",))
    changes = [
        k for k in changed_keys(old, new) if k == "LOG.level" or is_live(k, frozenset(reads))
    ]
    live_all = LIVE_KEYS | live
    applied = [k for k in changes if is_live(k, live_all)]
    for key in changes:
        if not is_live(key, live_all):
            log.warning("config change needs restart key=%s service=%s", key, name)
    level = new["LOG"]["level"]
    logging.getLogger().setLevel(getattr(logging, level, logging.INFO))
    log.debug("log level now %s service=%s", level, name)  # shows only if it took
    log.info(
        "config reloaded service=%s applied=%s", name, ",".join(applied) if applied else "none"
    )
    return new, applied


def compile_bytecode(root: str) -> None:
    """Write the ``.pyc`` of meterlink's own modules under ``root`` where
    missing or stale, before the processes start.

    A process that finds no up-to-date ``.pyc`` compiles every module it
    imports, and the compiler's garbage stays in its heap: 3-4 MB of RSS more
    in each of the six processes. With ``PYTHONDONTWRITEBYTECODE`` set (or a
    checkout just pulled) nothing would write them; ``compileall`` writes
    them whatever that says. A tree this user cannot write is left as it is.
    """
    import compileall

    for pkg in ("common", "services"):
        path = os.path.join(root, pkg)
        if os.path.isdir(path) and os.access(path, os.W_OK):
            try:
                compileall.compile_dir(path, quiet=2, workers=1)
            except OSError:
                pass

"""Footprint of running processes, read from /proc: resident memory and CPU time.

``rss_kb(pid)`` is ``VmRSS`` from ``/proc/<pid>/status``; ``pss_kb(pid)`` is
``Pss`` from ``/proc/<pid>/smaps_rollup`` (shared pages such as libzmq and the
interpreter divided among the processes that map them, so PSS adds up to what
the stack really holds, where RSS counts the shared pages once per process).
``cpu_s(pid)`` is ``utime + stime`` from ``/proc/<pid>/stat`` (every thread of
the process), in seconds; ``CpuWindow`` takes it before and after a window and
gives each process's share of one core in percent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _status_field(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kb(pid: int) -> int | None:
    """Resident set size in KiB; None if the process is gone."""
    return _status_field(pid, "VmRSS")


def hwm_kb(pid: int) -> int | None:
    """Peak resident set size in KiB; None if the process is gone."""
    return _status_field(pid, "VmHWM")


def pss_kb(pid: int) -> int | None:
    """Proportional set size in KiB; None if unavailable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) used so far; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    # utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class CpuWindow:
    """CPU used by a set of processes between ``__init__`` and ``stop()``."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.before = {name: cpu_s(pid) for name, pid in self.pids.items()}
        self.started = time.perf_counter()

    def stop(self) -> dict[str, float]:
        """Percent of one core per process, and ``total``."""
        wall = time.perf_counter() - self.started
        after = {name: cpu_s(pid) for name, pid in self.pids.items()}
        used: dict[str, float] = {}
        for name, a in after.items():
            b = self.before[name]
            if a is None or b is None:
                raise RuntimeError(f"process {name} (pid {self.pids[name]}) ended in the window")
            used[name] = a - b
        used["total"] = sum(used.values())
        #: CPU seconds per process (and ``total``) in the window, after ``stop()``.
        self.seconds = used
        return {name: 100.0 * s / wall for name, s in used.items()}


def memory(pids: Mapping[str, int]) -> dict[str, dict[str, float]]:
    """``{"rss_mb": {name: MiB, "total": ...}, "pss_mb": {...}}`` for ``pids``."""
    rss: dict[str, float] = {}
    pss: dict[str, float] = {}
    for name, pid in pids.items():
        r = rss_kb(pid)
        if r is None:
            raise RuntimeError(f"process {name} (pid {pid}) is gone")
        rss[name] = r / 1024
        p = pss_kb(pid)
        if p is not None:
            pss[name] = p / 1024
    rss["total"] = sum(rss.values())
    if pss:
        pss["total"] = sum(pss.values())
    return {"rss_mb": rss, "pss_mb": pss}


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks summed over every CPU, from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


class MachineWindow:
    """CPU used by the whole machine, and by processes other than ``own``, in a window.

    ``stop()`` gives ``machine`` (every process) and ``others`` (the machine minus
    ``own`` pids and this process), both in percent of one core: a bench figure
    taken while ``others`` is high was taken on a busy machine.
    """

    def __init__(self, own: Mapping[str, int]) -> None:
        self.own = {**own, "bench": os.getpid()}
        self.cpu = CpuWindow(self.own)
        self.before = _machine_ticks()

    def stop(self) -> dict[str, float]:
        mine = self.cpu.stop()["total"]
        busy0, total0 = self.before
        busy1, total1 = _machine_ticks()
        cores = os.cpu_count() or 1
        per_core_ticks = (total1 - total0) / cores
        machine = 100.0 * (busy1 - busy0) / per_core_ticks if per_core_ticks else 0.0
        return {"machine": machine, "others": max(0.0, machine - mine)}

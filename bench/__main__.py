"""``make bench``: codec, pipeline and footprint figures in one table and one JSON file.

``python -m bench [--quick] [--runs N] [--out PATH] [--only codec|stack] [--set K=V ...]``

1. Codec, one core (``bench.codec``): decode, encode, Deframer.feed + decode,
   and a naive bit-by-bit CRC-16/X.25 check as the reference.
2. Pipeline, the real stack (``bench.pipeline``): the gateway's programs as
   real processes, a meter on a pty, an HES on 127.0.0.1. Added latency at
   100 and 1,000 frames/s; the greatest throughput with 1, 2 and 4 resolver
   workers (a burst written as fast as the pty takes it; valid only if every
   payload arrived once and in order); the same burst through the bare-pyzmq
   topology (``bench.bare``) with the same frame count and the same mean batch
   (frames per uart message, from the broker's counters); downlink latency;
   where the latency goes, hop by hop (the tap trace).
3. ser2net beside it (``bench.ser2net``), when installed: the same pty -> TCP
   path and payloads through ser2net, in rounds interleaved with the stack's
   (meterlink then ser2net, then ser2net then meterlink, ...) so that drift
   cancels; each figure for both and their ratio, which is the table's headline.
4. Footprint (``bench.footprint``): resident memory (RSS and PSS) per process
   and in total, CPU of the whole stack over idle windows and over the 1,000
   frames/s runs, CPU per frame per process over the throughput bursts.

Each figure is the median of ``--runs`` runs with their min and max; a run that
lost or repeated a payload is reported as failed and left out. The table
goes to stdout, progress to stderr, and the same figures as JSON to ``--out``
(default ``$METERLINK_RUN_DIR/bench.json``, ``./run/bench.json``). ``--quick``
is a smoke mode with tiny sizes. What each service's imports cost (time and
memory, with ``-X importtime``) is a separate script: ``python -m bench.imports``.
Exit status 0 when the bench ran (whether or not each aim is met), 2 when the
stack did not start or a process died; ser2net failing only skips its rows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bench import bare, codec, footprint, pipeline
from bench import dlms as dlms_bench
from bench import ser2net as s2n
from common import bus

#: A 921,600-baud line carries 92,160 bytes/s (10 bits per byte): 1,228 75-byte frames/s.
LINE_BAUD = 921_600
LINE_FPS = LINE_BAUD / 10 / pipeline.FRAME_BYTES
#: Worker count the latency and footprint figures are taken with (supervisord's default).
DEFAULT_WORKERS = 2
#: Other processes using more than this (% of one core) mark the machine as busy.
BUSY_OTHERS_PCT = 25
#: Extra wait for heartbeats to carry the counters of a finished run to the registry.
COUNTER_LAG_S = 0.6


@dataclass(frozen=True)
class Plan:
    runs: int
    codec_s: float
    idle_s: float
    lat_slow_s: float
    lat_fast_s: float
    down_s: float
    breakdown_s: float
    workers: tuple[int, ...]
    tp_warm: int
    tp_target_s: float
    tp_min: int
    tp_max: int


FULL = Plan(
    runs=3,
    codec_s=1.0,
    idle_s=10.0,
    lat_slow_s=5.0,
    lat_fast_s=10.0,
    down_s=5.0,
    breakdown_s=5.0,
    workers=(1, 2, 4),
    tp_warm=10_000,
    tp_target_s=3.0,
    tp_min=20_000,
    # Under the broker's pool backlog bound (200,000 frames), so that however far the
    # workers fall behind the uart, no frame of a burst is dropped for want of room.
    tp_max=bus.POOL_BACKLOG_MAX * 95 // 100,
)
QUICK = Plan(
    runs=1,
    codec_s=0.03,
    idle_s=1.0,
    lat_slow_s=0.5,
    lat_fast_s=1.0,
    down_s=0.5,
    breakdown_s=0.5,
    workers=(1, 2),
    tp_warm=500,
    tp_target_s=0.3,
    tp_min=2_000,
    tp_max=3_000,
)


METHOD = """\
how: the gateway's own programs run as processes (broker, resolver xN, uart, client,
watchdog) with default settings; the meter is a pty, the HES a TCP server on 127.0.0.1.
Payloads are 64 bytes, each in one 0x2100 frame (75 bytes) for meterlink, bare for
ser2net (ser2net 4, raw TCP accepter on 127.0.0.1, serialdev connector on its own pty,
default options; the bench connects to it as the HES). Latency: one payload per write on
a schedule, stamped before the write and when the HES reads it (each payload carries a
sequence number). Throughput: a burst of N payloads written as fast as the pty takes
them, N / (first write -> last payload read). A run counts only if every payload arrived
once and in order. meterlink and ser2net take turns, run by run (A/B, B/A, ...); each
ratio is meterlink / ser2net, the median of the per-round ratios. The bare limit is
producer -> broker -> worker -> broker -> sink in plain pyzmq PUSH/PULL + msgpack, fed
the same N frames in messages of the same mean size as the uart sent (the broker's
pool.frames_in / route.uart>resolver over the runs), so it shows what ZeroMQ and msgpack
alone cost for this traffic. CPU: utime+stime from /proc/<pid>/stat (every thread);
memory: VmRSS (counts shared libraries once per process) and PSS (shares them out)."""


def progress(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> dict[str, Any]:
    """Median, min and max of the finite values (NaN when there are none)."""
    good = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not good:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": statistics.median(good), "min": min(good), "max": max(good), "n": len(good)}


# -- machine ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    quota = ""
    try:
        quota = Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    except OSError:
        pass
    packer = type(msgpack.Packer()).__module__
    try:
        revision = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        revision = ""
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cgroup_cpu_max": quota,
        "cpu": model,
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "revision": revision or "?",
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "msgpack": ".".join(map(str, msgpack.version))
        + (" (C)" if "cmsgpack" in packer else " (pure Python)"),
    }


def header(m: dict[str, Any], mode: str, other: dict[str, Any] | None = None) -> str:
    cores = f"{m['cores']} cores ({m['usable_cores']} usable"
    if m["cgroup_cpu_max"] and not m["cgroup_cpu_max"].startswith("max"):
        cores += f", cgroup cpu.max {m['cgroup_cpu_max']}"
    cores += ")"
    return "\n".join(
        [
            f"meterlink bench ({mode})  {datetime.datetime.now().isoformat(timespec='seconds')}",
            f"machine: {cores}, {m['cpu']}, {m['kernel']}",
            f"software: {m['python']}, pyzmq {m['pyzmq']}, libzmq {m['libzmq']}, "
            f"msgpack {m['msgpack']}",
            f"code: {m['revision']}; load average at start: {m['loadavg']}"
            + (
                f"; other processes used {other['median']:.0f}% of a core "
                f"[{other['min']:.0f} - {other['max']:.0f}] during the idle and 1,000/s windows"
                + (
                    "  ** busy machine: figures are pessimistic **"
                    if other["median"] > BUSY_OTHERS_PCT
                    else ""
                )
                if other and other.get("n")
                else ""
            ),
        ]
    )


# -- the stack part -----------------------------------------------------------------------


class Reference:
    """ser2net beside the stack, or why it is not there.

    ``target`` is None when ser2net is not installed, did not start, or failed in a
    run; ``skipped`` then says which, and the side-by-side rows are left out.
    """

    def __init__(self, exe: str | None) -> None:
        self.target: s2n.Ser2net | None = None
        self.skipped: str | None = None
        self.version = ""
        if exe is None:
            self.skipped = "ser2net is not installed (apt-get install ser2net)"
            progress(f"{self.skipped}: the side-by-side rows are skipped")
            return
        progress(f"starting ser2net ({exe})")
        try:
            self.target = s2n.Ser2net(exe)
            self.version = self.target.version
        except s2n.Ser2netError as exc:
            self.fail(f"ser2net did not start: {exc}")

    def fail(self, why: str) -> None:
        self.skipped = why
        progress(f"{why.splitlines()[0]}; the side-by-side rows are skipped")
        self.close()

    def close(self) -> None:
        if self.target is not None:
            self.target.close()
            self.target = None


def run_stack(plan: Plan, overrides: dict[str, Any], ser2net_exe: str | None) -> dict[str, Any]:
    progress(f"starting the stack with {DEFAULT_WORKERS} resolver workers")
    stack = pipeline.BenchStack(DEFAULT_WORKERS, overrides)
    failed = True
    ref: Reference | None = None
    try:
        ref = Reference(ser2net_exe)
        out = _run_stack(stack, plan, ref)
        failed = False
        return out
    finally:
        if ref is not None:
            ref.close()
        stack.close()
        if failed:
            progress(f"logs of the stack kept in {stack.run_dir}")
        else:
            stack.remove()


def _memory_sample(stack: pipeline.BenchStack, samples: list[dict[str, Any]]) -> None:
    samples.append(footprint.memory(stack.pids()))


def _turns(r: int, ref: Reference) -> list[str]:
    """Who runs first in round ``r``: meterlink then ser2net, then the other way round."""
    if ref.target is None:
        return ["meterlink"]
    return ["meterlink", "ser2net"] if r % 2 == 0 else ["ser2net", "meterlink"]


def _ref_run(ref: Reference, what: str, run: Any) -> dict[str, Any] | None:
    """One ser2net run; on a failure of ser2net itself, stop using it."""
    assert ref.target is not None
    try:
        result: dict[str, Any] = run(ref.target)
    except s2n.Ser2netError as exc:
        ref.fail(f"ser2net failed in {what}: {exc}")
        return None
    return result


def _run_stack(stack: pipeline.BenchStack, plan: Plan, ref: Reference) -> dict[str, Any]:
    assert stack.registry is not None
    out: dict[str, Any] = {"config": stack.config}
    mem: list[dict[str, Any]] = []
    _memory_sample(stack, mem)

    idle: list[dict[str, float]] = []
    others: list[float] = []
    for r in range(plan.runs):
        window = footprint.CpuWindow(stack.pids())
        machine = footprint.MachineWindow(stack.pids())
        deadline = time.monotonic() + plan.idle_s
        while time.monotonic() < deadline:
            stack.check_alive()
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        idle.append(window.stop())
        others.append(machine.stop()["others"])
        _memory_sample(stack, mem)
        progress(
            f"idle window {r + 1}/{plan.runs}: {idle[-1]['total']:.2f}% of a core "
            f"(other processes on the machine: {others[-1]:.0f}%)"
        )

    # Latency: meterlink and ser2net take turns, run by run (A/B, B/A, ...).
    ref_runs: dict[str, list[dict[str, Any] | None]] = {"100": [], "1000": [], "throughput": []}
    ref_mem: list[dict[str, Any]] = []
    slow: list[dict[str, Any]] = []
    for r in range(plan.runs):
        for who in _turns(r, ref):
            if who == "meterlink":
                slow.append(pipeline.latency_run(stack, 100, plan.lat_slow_s))
                progress(f"latency at 100 frames/s, run {r + 1}/{plan.runs}: {_lat_text(slow[-1])}")
            elif ref.target is not None:
                got = _ref_run(
                    ref, "a latency run", lambda t: pipeline.latency_run(t, 100, plan.lat_slow_s)
                )
                ref_runs["100"].append(got)
                if got:
                    progress(f"  ser2net at 100/s, run {r + 1}/{plan.runs}: {_lat_text(got)}")

    fast: list[dict[str, Any]] = []
    busy: list[dict[str, float]] = []
    for r in range(plan.runs):
        for who in _turns(r, ref):
            if who == "meterlink":
                window = footprint.CpuWindow(stack.pids())
                machine = footprint.MachineWindow(stack.pids())
                fast.append(pipeline.latency_run(stack, 1000, plan.lat_fast_s))
                busy.append(window.stop())
                others.append(machine.stop()["others"])
                _memory_sample(stack, mem)
                progress(
                    f"latency at 1,000 frames/s, run {r + 1}/{plan.runs}: {_lat_text(fast[-1])}, "
                    f"stack CPU {busy[-1]['total']:.1f}% of a core "
                    f"(other processes: {others[-1]:.0f}%)"
                )
            elif ref.target is not None:
                got = _ref_run(
                    ref, "a latency run", lambda t: pipeline.latency_run(t, 1000, plan.lat_fast_s)
                )
                ref_runs["1000"].append(got)
                if got and ref.target is not None:
                    ref_mem.append(footprint.memory(ref.target.pids()))
                    progress(f"  ser2net at 1,000/s, run {r + 1}/{plan.runs}: {_lat_text(got)}")

    down = []
    for r in range(plan.runs):
        down.append(pipeline.downlink_run(stack, 100, plan.down_s))
        progress(f"downlink at 100 frames/s, run {r + 1}/{plan.runs}: {_lat_text(down[-1])}")

    # At 1,000/s and at 100/s: at the low rate every hop starts from idle, so
    # the two side by side show what waking up costs each hop (issue 10).
    breakdowns: dict[str, Any] = {}
    for rate in (1000, 100):
        breakdown = pipeline.breakdown_run(stack, rate, plan.breakdown_s)
        breakdowns[str(rate)] = breakdown
        progress(
            f"where the latency goes at {rate:,} frames/s (p50 ms): "
            + ", ".join(f"{h} {breakdown[h]['p50_ms']:.3f}" for h in (*pipeline.HOPS, "total"))
        )

    throughput: dict[str, Any] = {}
    order = sorted(plan.workers, key=lambda w: (w != DEFAULT_WORKERS, w))
    for workers in order:
        stack.set_workers(workers)
        with_ref = ref if workers == DEFAULT_WORKERS else None
        throughput[str(workers)] = _throughput(stack, plan, workers, with_ref, ref_runs)
        if workers == DEFAULT_WORKERS:
            _memory_sample(stack, mem)
        else:
            throughput[str(workers)]["memory"] = footprint.memory(stack.pids())

    out["latency"] = {"100": _lat_block(slow), "1000": _lat_block(fast)}
    out["downlink"] = {"100": _lat_block(down)}
    out["breakdown"] = breakdowns
    out["throughput"] = {k: throughput[k] for k in sorted(throughput, key=int)}
    out["cpu"] = {"idle": _cpu_block(idle), "1000": _cpu_block(busy)}
    out["memory"] = _mem_block(mem)
    out["other_load"] = summary(others)
    out["ser2net"] = _versus(out, ref, ref_runs, ref_mem)
    return out


def _lat_text(run: dict[str, Any]) -> str:
    text = f"p50 {run['p50_ms']:.3f} ms, p99 {run['p99_ms']:.3f} ms, max {run['max_ms']:.3f} ms"
    if not run["valid"]:
        text = f"FAILED (lost {run['lost']}, extra {run['extra']}): " + text
    return text


def _lat_block(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the valid runs only; a run that lost or repeated a payload is failed."""
    good = [r for r in runs if r["valid"]]
    return {
        "p50_ms": summary([r["p50_ms"] for r in good]),
        "p99_ms": summary([r["p99_ms"] for r in good]),
        "max_ms": summary([r["max_ms"] for r in good]),
        "valid": all(r["valid"] for r in runs),
        "failed": len(runs) - len(good),
        "runs": runs,
    }


def _cpu_block(windows: list[dict[str, float]]) -> dict[str, Any]:
    names = list(windows[0]) if windows else []
    return {name: summary([w[name] for w in windows]) for name in names}


def _mem_block(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("rss_mb", "pss_mb"):
        names = list(samples[0][kind]) if samples and samples[0][kind] else []
        out[kind] = {n: summary([s[kind][n] for s in samples if n in s[kind]]) for n in names}
    out["samples"] = len(samples)
    return out


def _tp_text(run: dict[str, Any], per_frame: dict[str, float] | None) -> str:
    if not run["valid"]:
        return f"FAILED (lost {run['lost']}, extra {run['extra']})"
    text = f"{run['frames_per_s']:,.0f} frames/s over {run['elapsed_s']:.2f}s"
    if per_frame:
        text += f"; CPU {per_frame['total']:.1f} us/frame" + (
            ": " + ", ".join(f"{k} {v:.1f}" for k, v in per_frame.items() if k != "total")
            if len(per_frame) > 2
            else ""
        )
    return text


def _throughput(
    stack: pipeline.BenchStack,
    plan: Plan,
    workers: int,
    ref: Reference | None,
    ref_runs: dict[str, list[dict[str, Any] | None]],
) -> dict[str, Any]:
    assert stack.registry is not None
    before = pipeline.counters(stack.registry.fresh(time.time(), 5.0))
    warm = pipeline.throughput_run(stack, plan.tp_warm)
    estimate = warm["frames_per_s"] if warm["valid"] else plan.tp_min / plan.tp_target_s
    n = int(min(plan.tp_max, max(plan.tp_min, estimate * plan.tp_target_s)))
    if ref is not None and ref.target is not None:
        _ref_run(ref, "a warm-up burst", lambda t: pipeline.throughput_run(t, plan.tp_warm))
    runs = []
    cpu: list[dict[str, float]] = []
    per_frame: list[dict[str, float]] = []
    for r in range(plan.runs):
        for who in _turns(r, ref) if ref is not None else ["meterlink"]:
            if who == "ser2net":
                if ref is None or ref.target is None:
                    continue
                got = _ref_run(
                    ref, "a throughput burst", lambda t: pipeline.throughput_run(t, n, cpu=True)
                )
                ref_runs["throughput"].append(got)
                if got:
                    progress(
                        f"  ser2net, {n:,} payloads, run {r + 1}/{plan.runs}: "
                        + _tp_text(got, got.get("cpu_us_per_frame"))
                    )
                continue
            runs.append(pipeline.throughput_run(stack, n, cpu=True))
            run = runs[-1]
            cpu.append(run.pop("cpu"))
            per_frame.append(run.pop("cpu_us_per_frame"))
            progress(
                f"throughput, {workers} worker(s), {n:,} frames, run {r + 1}/{plan.runs}: "
                + _tp_text(run, per_frame[-1])
            )
    after = pipeline.counters(stack.registry.fresh(time.time() + COUNTER_LAG_S, 5.0))
    messages = after.get("broker.route.uart>resolver", 0) - before.get(
        "broker.route.uart>resolver", 0
    )
    frames = after.get("broker.pool.frames_in", 0) - before.get("broker.pool.frames_in", 0)
    good = [i for i, r in enumerate(runs) if r["valid"]]
    return {
        "frames_per_s": summary([r["frames_per_s"] for r in runs]),
        "valid": all(r["valid"] for r in runs),
        "failed": len(runs) - len(good),
        "frames": n,
        "batch": frames / messages if messages else math.nan,
        "uart_messages": messages,
        "losses": pipeline.losses(before, after),
        "cpu": _cpu_block([cpu[i] for i in good]),
        "cpu_us_per_frame": _cpu_block([per_frame[i] for i in good]),
        "warm_up": warm,
        "runs": runs,
    }


#: The headline: (key, figure, format, ratio aim op, ratio aim). Each ratio is
#: meterlink / ser2net, so throughput aims at >= 1 and latency at <= 3.
VERSUS = (
    ("throughput", "uplink throughput, frames/s", ",.0f", ">=", 1.0),
    ("p50@1000", "latency p50 at 1,000/s, us", ",.0f", "<=", 3.0),
    ("p50@100", "latency p50 at 100/s, us", ",.0f", "<=", 3.0),
    ("p99@1000", "latency p99 at 1,000/s, us", ",.0f", "<=", 3.0),
)


def _pick(run: dict[str, Any] | None, key: str) -> float:
    """A run's figure for a VERSUS key; NaN for a missing or failed run."""
    if not run or not run.get("valid"):
        return math.nan
    if key == "throughput":
        return float(run["frames_per_s"])
    q = key.partition("@")[0]
    return float(run[f"{q}_ms"]) * 1000


def _versus(
    out: dict[str, Any],
    ref: Reference,
    ref_runs: dict[str, list[dict[str, Any] | None]],
    ref_mem: list[dict[str, Any]],
) -> dict[str, Any]:
    """Each figure for meterlink and ser2net, and the median of the per-round ratios."""
    if ref.skipped is not None and not any(ref_runs.values()):
        return {"available": False, "skipped": ref.skipped}
    ours: dict[str, list[dict[str, Any]]] = {
        "throughput": out["throughput"][str(DEFAULT_WORKERS)]["runs"],
        "100": out["latency"]["100"]["runs"],
        "1000": out["latency"]["1000"]["runs"],
    }
    figures = []
    for key, figure, fmt, op, aim in VERSUS:
        runs_key = key if key == "throughput" else key.partition("@")[2]
        mine = [_pick(r, key) for r in ours[runs_key]]
        theirs = [_pick(r, key) for r in ref_runs[runs_key]]
        ratios = [
            a / b
            for a, b in zip(mine, theirs, strict=False)
            if math.isfinite(a) and math.isfinite(b) and b > 0
        ]
        ratio = summary(ratios)
        met = None
        if math.isfinite(ratio["median"]):
            met = ratio["median"] >= aim if op == ">=" else ratio["median"] <= aim
        figures.append(
            {
                "key": key,
                "figure": figure,
                "meterlink": summary(mine),
                "ser2net": summary(theirs),
                "ratio": ratio,
                "aim": f"{op} {aim:g}x",
                "met": met,
                "failed": {
                    "meterlink": sum(1 for v in mine if not math.isfinite(v)),
                    "ser2net": sum(1 for r in ref_runs[runs_key] if not r or not r.get("valid")),
                },
                "fmt": fmt,
            }
        )
    tp_ref = [r for r in ref_runs["throughput"] if r and r.get("valid")]
    return {
        "available": True,
        "skipped": ref.skipped,  # set if ser2net failed part way
        "version": ref.version,
        "figures": figures,
        "cpu_us_per_frame": summary([r["cpu_us_per_frame"]["total"] for r in tp_ref]),
        # How long the bench took to write each burst, against the whole burst: near 1.0,
        # ser2net kept up with the writer, so its figure is the driver's limit, not its own.
        "write_share": summary([r["write_s"] / r["elapsed_s"] for r in tp_ref]),
        "memory": _mem_block(ref_mem),
        "runs": ref_runs,
    }


def run_bare(plan: Plan, stack_out: dict[str, Any]) -> dict[str, Any]:
    # Throughput only. The bare-pyzmq *latency* rows were dropped, not fixed: they were
    # taken after the stack had stopped, in a time slot of their own (not interleaved with
    # the stack's runs, outside the windows the busy-machine mark watches), so on a shared
    # machine a spell of other load fell on them alone, unmarked: that is how they could
    # read slower than the whole stack. And even when quiet they time another path (a zmq
    # socket at both ends, one frame per message; at 100/s mostly idle threads waking)
    # than the four hops between the uart and the client. The tap trace times those hops
    # in the real stack on the same frames, and ser2net beside the stack, run by run, is
    # the reference for the whole pty -> TCP path.
    out: dict[str, Any] = {}
    for workers, tp in stack_out["throughput"].items():
        batch = tp["batch"] if math.isfinite(tp["batch"]) else 1.0
        rates = bare.run_many(tp["frames"], batch, pipeline.FRAME_BYTES, repeats=plan.runs)
        out[workers] = {
            "frames_per_s": summary(rates),
            "frames": tp["frames"],
            "batch": batch,
            "runs": rates,
        }
        ours = tp["frames_per_s"]["median"]
        out[workers]["fraction"] = ours / summary(rates)["median"]
        progress(
            f"bare pyzmq limit, {tp['frames']:,} frames in batches of {batch:.1f}: "
            f"{summary(rates)['median']:,.0f} frames/s; ours with {workers} worker(s) "
            f"is {out[workers]['fraction']:.2f} of it"
        )
    return {"throughput": out}


# -- the table ---------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    stats: dict[str, Any] | None  # median/min/max
    fmt: str
    aim: str = ""
    met: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            **({k: self.stats[k] for k in ("median", "min", "max")} if self.stats else {}),
            "aim": self.aim,
            "met": self.met,
            "note": self.note,
        }


def _num(value: float, fmt: str) -> str:
    return "n/a" if not math.isfinite(value) else format(value, fmt)


def _aim(stats: dict[str, Any], op: str, limit: float) -> bool | None:
    value = stats["median"]
    if not math.isfinite(value):
        return None
    return value >= limit if op == ">=" else value < limit


def rows(result: dict[str, Any]) -> list[tuple[str, list[Row]]]:
    sections: list[tuple[str, list[Row]]] = []
    if "codec" in result:
        codec_rows = []
        for r in result["codec"]:
            stats = {"median": r["frames_per_s"], "min": r["min"], "max": r["max"]}
            row = Row(f"{r['case']}, {r['frame_bytes']} B", stats, ",.0f")
            if r["frame_bytes"] == 64 and str(r["case"]).startswith("feed+decode"):
                row.aim, row.met = ">= 300,000", _aim(stats, ">=", 300_000)
            codec_rows.append(row)
        sections.append(("codec, one core (frames/s)", codec_rows))
    if "dlms" in result:
        dlms_rows = [
            Row(
                str(r["case"]),
                {"median": r["apdus_per_s"], "min": r["min"], "max": r["max"]},
                ",.0f",
            )
            for r in result["dlms"]["results"]
        ]
        sections.append(("DLMS codec, one core (APDUs/s)", dlms_rows))
    stack = result.get("stack")
    if not stack:
        return sections
    sections.extend(versus_rows(result))
    lat: list[Row] = []
    for rate, block in stack["latency"].items():
        for q in ("p50", "p99", "max"):
            row = Row(f"uplink @{int(rate):,}/s {q}", block[f"{q}_ms"], ".3f")
            if rate == "1000" and q == "p50":
                row.aim, row.met = "< 0.5", _aim(block["p50_ms"], "<", 0.5)
            if rate == "1000" and q == "p99":
                row.aim, row.met = "< 2", _aim(block["p99_ms"], "<", 2.0)
            if not block["valid"]:
                row.note = f"{block['failed']} run(s) FAILED (loss or repeat), left out"
            lat.append(row)
    for rate, block in stack["downlink"].items():
        for q in ("p50", "p99"):
            row = Row(f"downlink @{int(rate):,}/s {q}", block[f"{q}_ms"], ".3f")
            if not block["valid"]:
                row.note = f"{block['failed']} run(s) FAILED (loss or repeat), left out"
            lat.append(row)
    sections.append(("added latency, pty <-> HES socket (ms)", lat))
    for rate, block in stack.get("breakdown", {}).items():
        hops: list[Row] = []
        for hop in (*pipeline.HOPS, "total"):
            hops.append(
                Row(
                    hop,
                    {"median": block[hop]["p50_ms"], "min": math.nan, "max": math.nan},
                    ".3f",
                    note=f"p90 {block[hop]['p90_ms']:.3f}"
                    + (f"; {block['traced']:,} frames traced" if hop == "total" else ""),
                )
            )
        sections.append(
            (
                f"where the uplink latency goes @{int(rate):,}/s, p50 (ms; one run, tap attached)",
                hops,
            )
        )

    tp: list[Row] = []
    bare_out = result.get("bare", {}).get("throughput", {})
    for workers, block in stack["throughput"].items():
        row = Row(
            f"{workers} worker{'s' if workers != '1' else ''}",
            block["frames_per_s"],
            ",.0f",
            note=f"{block['frames']:,} frames, batch {block['batch']:.1f}, "
            f"{block['frames_per_s']['median'] / LINE_FPS:.0f}x a 921,600-baud line",
        )
        if not block["valid"]:
            row.note = f"{block['failed']} run(s) FAILED, left out: " + ", ".join(
                f"lost {r['lost']} extra {r['extra']}" for r in block["runs"] if not r["valid"]
            )
        if block["losses"]:
            row.note += "; counters: " + ", ".join(f"{k}={v}" for k, v in block["losses"].items())
        if workers == str(DEFAULT_WORKERS):
            row.aim, row.met = ">= 50,000", _aim(block["frames_per_s"], ">=", 50_000)
        tp.append(row)
    for workers, block in stack["throughput"].items():
        per = block["cpu_us_per_frame"]
        if not per:
            continue
        tp.append(
            Row(
                f"{workers}w stack CPU per frame (us)",
                per["total"],
                ".1f",
                note=", ".join(f"{k} {v['median']:.1f}" for k, v in per.items() if k != "total"),
            )
        )
        if workers == str(DEFAULT_WORKERS):
            for name, stats in per.items():
                if name != "total":
                    tp.append(Row(f"  CPU per frame, {name} (us)", stats, ".1f"))
    for workers, block in bare_out.items():
        tp.append(
            Row(
                f"bare pyzmq limit (as for {workers}w)",  # diagnostic: ZeroMQ + msgpack alone
                block["frames_per_s"],
                ",.0f",
                note=f"{block['frames']:,} frames in batches of {block['batch']:.1f}",
            )
        )
    for workers, block in bare_out.items():
        frac = block["fraction"]
        row = Row(
            f"{workers}w as a fraction of bare",
            {"median": frac, "min": math.nan, "max": math.nan},
            ".2f",
        )
        if workers == str(DEFAULT_WORKERS):
            row.aim, row.met = ">= 0.50", (frac >= 0.5) if math.isfinite(frac) else None
        tp.append(row)
    sections.append(("end-to-end throughput, no loss, in order (frames/s)", tp))

    fp: list[Row] = []
    mem = stack["memory"]
    for name, stats in mem["rss_mb"].items():
        row = Row(f"RSS {name}", stats, ".1f")
        if name == "total":
            row.aim, row.met = "< 120", _aim(stats, "<", 120)
            row.note = "counts shared pages once per process"
        fp.append(row)
    for name, stats in mem["pss_mb"].items():
        row = Row(f"PSS {name}", stats, ".1f")
        if name == "total":
            row.aim, row.met = "< 80", _aim(stats, "<", 80)
            row.note = "shares them out: what the stack really holds"
        fp.append(row)
    for which, label in (("idle", "idle"), ("1000", "@1,000/s")):
        for name, stats in stack["cpu"][which].items():
            if name != "total" and which != "idle":
                continue
            row = Row(f"CPU {label} {name}", stats, ".2f")
            if name == "total" and which == "idle":
                row.aim, row.met = "< 1", _aim(stats, "<", 1.0)
            fp.append(row)
    busy = stack["cpu"]["1000"]
    per = ", ".join(f"{k} {v['median']:.1f}" for k, v in busy.items() if k != "total")
    if fp:
        fp[-1].note = per
    sections.append((f"footprint, {DEFAULT_WORKERS} workers (MB resident; CPU % of one core)", fp))
    return sections


def format_table(sections: list[tuple[str, list[Row]]]) -> str:
    head = f"{'figure':<38} {'median':>12} {'[min - max]':>27}  {'aim':<11} {'':<6} note"
    lines = [head, "-" * 110]
    for title, section in sections:
        lines.append(title)
        for row in section:
            s = row.stats or {}
            median = _num(s.get("median", math.nan), row.fmt)
            lo, hi = s.get("min", math.nan), s.get("max", math.nan)
            rng = (
                f"[{_num(lo, row.fmt)} - {_num(hi, row.fmt)}]"
                if math.isfinite(lo) and math.isfinite(hi)
                else ""
            )
            mark = "" if not row.aim else {True: "met", False: "MISSED", None: "n/a"}[row.met]
            lines.append(
                f"  {row.figure:<36} {median:>12} {rng:>27}  {row.aim:<11} {mark:<6} {row.note}"
            )
    return "\n".join(lines)


def _ratio_text(stats: dict[str, Any]) -> str:
    return "n/a" if not math.isfinite(stats["median"]) else f"{stats['median']:.2f}x"


def format_versus(vs: dict[str, Any] | None) -> str:
    """The headline: meterlink beside ser2net, each figure, the ratio and its aim."""
    if not vs:
        return ""
    if not vs.get("available"):
        return f"meterlink vs ser2net: skipped, {vs['skipped']}"
    lines = [
        f"meterlink ({DEFAULT_WORKERS} workers) vs ser2net {vs['version']}: the same pty -> TCP "
        "path, 64-byte payloads, rounds interleaved A/B, B/A",
        f"  {'figure':<30} {'meterlink':>10} {'ser2net':>10} {'ratio':>8} {'[min - max]':>16}"
        f"  {'aim':<8} {'':<6} note",
    ]
    for f in vs["figures"]:
        r = f["ratio"]
        rng = (
            f"[{r['min']:.2f} - {r['max']:.2f}]"
            if math.isfinite(r["min"]) and math.isfinite(r["max"])
            else ""
        )
        mark = {True: "met", False: "MISSED", None: "n/a"}[f["met"]]
        failed = ", ".join(f"{who} {k} run(s) FAILED" for who, k in f["failed"].items() if k)
        lines.append(
            f"  {f['figure']:<30} {_num(f['meterlink']['median'], f['fmt']):>10} "
            f"{_num(f['ser2net']['median'], f['fmt']):>10} {_ratio_text(r):>8} {rng:>16}"
            f"  {f['aim']:<8} {mark:<6} {failed}"
        )
    share = vs["write_share"]["median"]
    if math.isfinite(share):
        lines.append(
            f"  (ser2net's bursts: writing took {share:.0%} of the burst, "
            + (
                "so ser2net kept up with the bench's writer and its throughput is a lower bound)"
                if share > 0.9
                else "so the writer did not bound it)"
            )
        )
    if vs.get("skipped"):
        lines.append(f"  ser2net stopped part way: {vs['skipped'].splitlines()[0]}")
    return "\n".join(lines)


def versus_rows(result: dict[str, Any]) -> list[tuple[str, list[Row]]]:
    """The ser2net figures as table rows (ser2net's own footprint and CPU as diagnostics)."""
    vs = result.get("stack", {}).get("ser2net")
    if not vs:
        return []
    if not vs.get("available"):
        return [("meterlink vs ser2net", [Row("ser2net", None, "", note=vs["skipped"])])]
    out: list[Row] = []
    for f in vs["figures"]:
        row = Row(
            f"{f['figure']}: ratio",
            f["ratio"],
            ".2f",
            aim=f["aim"],
            met=f["met"],
            note=f"meterlink {_num(f['meterlink']['median'], f['fmt'])}, "
            f"ser2net {_num(f['ser2net']['median'], f['fmt'])}",
        )
        out.append(row)
    out.append(Row("ser2net CPU per frame (us)", vs["cpu_us_per_frame"], ".1f"))
    for kind, label in (("rss_mb", "RSS"), ("pss_mb", "PSS")):
        stats = vs["memory"].get(kind, {}).get("ser2net")
        if stats:
            out.append(Row(f"ser2net {label} (MB)", stats, ".1f"))
    return [("meterlink vs ser2net (ratio = meterlink / ser2net)", out)]


# -- main ---------------------------------------------------------------------------------------


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"bench: --set wants SECTION.key=VALUE, not {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def default_out() -> Path:
    return Path(os.environ.get("METERLINK_RUN_DIR") or "run") / "bench.json"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):  # array.array
        return obj.tolist()
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, one run each")
    ap.add_argument("--runs", type=int, help="runs per figure (default 3; 1 with --quick)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default run/bench.json)")
    ap.add_argument("--only", choices=("codec", "stack"), help="run one part only")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.key=VALUE",
        help="override the bench stack's config (VALUE is JSON, else a string)",
    )
    ap.add_argument(
        "--ser2net",
        metavar="PATH",
        default=None,
        help="the ser2net program to run beside the stack (default: found on PATH or in "
        "/usr/sbin); 'none' leaves it out",
    )
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = Plan(**{**plan.__dict__, "runs": max(1, args.runs)})
    overrides = _parse_set(args.set)
    out_path = args.out or default_out()
    started = time.monotonic()
    mode = "quick" if args.quick else "full"
    result: dict[str, Any] = {"machine": machine(), "mode": mode, "runs": plan.runs}
    result["started"] = datetime.datetime.now().isoformat(timespec="seconds")

    if args.only in (None, "codec"):
        progress(f"codec, {plan.codec_s:g}s per case")
        result["codec"] = codec.run(plan.codec_s)
        progress("DLMS codec")
        result["dlms"] = dlms_bench.run(args.quick)
    if args.only in (None, "stack"):
        try:
            exe = None if args.ser2net == "none" else (args.ser2net or s2n.find())
            result["stack"] = run_stack(plan, overrides, exe)
        except pipeline.StackError as exc:
            print(f"bench: the stack failed: {exc}", file=sys.stderr)
            return 2
        progress("bare pyzmq limit")
        result["bare"] = run_bare(plan, result["stack"])
    result["duration_s"] = round(time.monotonic() - started, 1)

    sections = rows(result)
    result["table"] = [
        {"section": title, **row.as_dict()} for title, section in sections for row in section
    ]
    other = result.get("stack", {}).get("other_load")
    text = header(result["machine"], mode, other)
    headline = format_versus(result.get("stack", {}).get("ser2net"))
    if headline:
        text += "\n\n" + headline
    text += "\n\n" + format_table(sections)
    if "stack" in result:
        text += "\n\n" + METHOD
    text += f"\n\nbench took {result['duration_s']:.0f}s; JSON in {out_path}"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(_json_safe(result), indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What each service process's imports cost: ``python -m bench.imports``.

Which modules: the stack is started as the pipeline bench starts it
(``pipeline.BenchStack``, one resolver worker) with ``PYTHONPROFILEIMPORTTIME=1``
in every process's environment, so each process logs ``-X importtime`` lines for
everything it imports: at module level, in ``main()`` and on the first frames
(the warm-up sends payloads through to the HES). The service's module and the
imports the process made itself (depth 0: in ``main()``, lazily) are its roots.

What they cost: the processes start together on a few cores, so their own
timings are mostly waiting for a core. Each service's roots are therefore
imported again, in the same order, in a fresh interpreter on its own
(``--repeat`` times, one after another), and per process the report gives:

- the import time in total (the sum of every module's own time, median of the
  repeats) and the top ``--top`` modules by cumulative time (a module and what
  it imported first; the least of the repeats);
- the top packages by their own time summed (``zmq``, ``msgpack``, ``sqlite3``,
  ...): what making one import lazy would save at most;
- the RSS after those imports, beside a bare interpreter's (``python -c pass``),
  and the process's RSS and PSS once running in the stack.

And for the stack as a whole, what each top-level package it imports (and each
module of ours) costs in memory on its own: the RSS of a fresh interpreter after
``import <package>`` (with whatever that pulls in) over a bare one, largest first.

Times are taken with the profiler on, so they are a little high; compare them
with each other. The report goes to stdout and JSON to ``--out`` (default
``run/imports.json``). Nothing in services/ or common/ is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import footprint, pipeline

#: The service processes, by the label ``BenchStack`` gives them and their module.
SERVICES = {
    "broker": "services.broker",
    "resolver-1": "services.resolver",
    "uart": "services.uart",
    "client": "services.client",
    "watchdog": "services.watchdog",
}
#: Our packages: their modules are weighed one by one.
OURS = ("common", "services")
#: After the warm-up, the processes get this long to finish what they import lazily.
SETTLE_S = 1.0

_RSS = "print(open('/proc/self/status').read())"
#: Imports each root named on the command line, in order, then prints its status.
_REPLAY = (
    "import sys\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n"
    "        __import__(name)  # through the C import, which -X importtime logs\n"
    "    except Exception as exc:\n"
    "        print(f'not imported: {name}: {exc}')\n" + _RSS
)


@dataclass(frozen=True)
class Import:
    name: str
    self_us: int
    cumulative_us: int
    depth: int  # 0 for an import the program made itself


def parse(text: str) -> list[Import]:
    """The ``-X importtime`` lines of a log: ``import time: self | cumulative | name``."""
    out: list[Import] = []
    for line in text.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line
        raw = parts[2].rstrip()
        name = raw.lstrip()
        depth = (len(raw) - len(name) - 1) // 2
        out.append(Import(name, int(parts[0]), int(parts[1]), max(0, depth)))
    return out


def by_package(imports: list[Import]) -> dict[str, int]:
    """Own time summed per top-level package, in microseconds, largest first."""
    totals: dict[str, int] = {}
    for imp in imports:
        top = imp.name.split(".", 1)[0]
        totals[top] = totals.get(top, 0) + imp.self_us
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _vmrss_mb(stdout: str) -> float:
    for line in stdout.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in the output")


def _fresh(args: list[str], importtime: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *(["-X", "importtime"] if importtime else []), *args],
        cwd=pipeline.ROOT,
        env={**os.environ, "PYTHONPATH": str(pipeline.ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def replay(roots: list[str], repeat: int) -> dict[str, Any]:
    """Import ``roots`` in fresh interpreters, ``repeat`` times, one after another."""
    best: dict[str, Import] = {}
    totals: list[float] = []
    rss: list[float] = []
    failed: set[str] = set()
    for _ in range(repeat):
        proc = _fresh(["-c", _REPLAY, *roots], importtime=True)
        imports = parse(proc.stderr)
        totals.append(sum(i.self_us for i in imports) / 1000)
        rss.append(_vmrss_mb(proc.stdout))
        failed.update(line for line in proc.stdout.splitlines() if line.startswith("not imp"))
        for i in imports:
            if i.name not in best or i.cumulative_us < best[i.name].cumulative_us:
                best[i.name] = i
    return {
        "imports": list(best.values()),
        "total_ms": statistics.median(totals),
        "rss_mb": statistics.median(rss),
        "failed": sorted(failed),
    }


def _unit(name: str) -> str:
    """A top-level package, or one of our own modules (``common.bus``, ``services.uart``)."""
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] in OURS else parts[0]


def measure(top: int, repeat: int) -> dict[str, Any]:
    stack = pipeline.BenchStack(1, env={"PYTHONPROFILEIMPORTTIME": "1"})
    try:
        time.sleep(SETTLE_S)
        stack.check_alive()
        mem = footprint.memory(stack.pids())
        logs = {label: stack.logs[label].read_text(errors="replace") for label in SERVICES}
    finally:
        stack.close()
    stack.remove()
    baseline = statistics.median(_vmrss_mb(_fresh(["-c", _RSS]).stdout) for _ in range(repeat))
    out: dict[str, Any] = {"baseline_rss_mb": baseline, "services": {}}
    for label, module in SERVICES.items():
        running = parse(logs[label])
        # Run with -m, the service module itself is __main__ and not in the log:
        # import it first, then whatever else the process imported itself (lazily).
        roots = [module, *(i.name for i in running if i.depth == 0 and i.name != module)]
        again = replay(roots, repeat)
        ranked = sorted(again["imports"], key=lambda i: -i.cumulative_us)
        packages = list(by_package(again["imports"]).items())[:top]
        out["services"][label] = {
            "module": module,
            "roots": roots,
            "modules": len(again["imports"]),
            "modules_running": len(running),
            "total_ms": again["total_ms"],
            "top": [
                {
                    "name": i.name,
                    "cumulative_ms": i.cumulative_us / 1000,
                    "self_ms": i.self_us / 1000,
                }
                for i in ranked[:top]
            ],
            "packages_ms": {k: v / 1000 for k, v in packages},
            "rss_after_import_mb": again["rss_mb"],
            "rss_running_mb": mem["rss_mb"][label],
            "pss_running_mb": mem["pss_mb"].get(label),
            "not_imported": again["failed"],
            "all": [i.name for i in again["imports"]],
        }
    packages = sorted({_unit(i) for s in out["services"].values() for i in s["all"]})
    grow: dict[str, float] = {}
    for name in packages:
        if name.startswith("_") and name != "__future__":
            continue  # private and C helpers: counted with the package that imports them
        try:
            grow[name] = _vmrss_mb(_fresh(["-c", f"import {name}\n{_RSS}"]).stdout) - baseline
        except subprocess.CalledProcessError:
            continue
    out["package_rss_mb"] = dict(sorted(grow.items(), key=lambda kv: -kv[1]))
    for s in out["services"].values():
        del s["all"]
    return out


def report(result: dict[str, Any]) -> str:
    base = result["baseline_rss_mb"]
    lines = [
        f"import footprint per service process (a fresh interpreter alone: {base:.1f} MB RSS)",
        "",
    ]
    for label, s in result["services"].items():
        pss = s["pss_running_mb"]
        lines.append(
            f"{label} ({s['module']}): {s['modules']} modules, {s['total_ms']:.0f} ms of imports; "
            f"RSS after import {s['rss_after_import_mb']:.1f} MB "
            f"(+{s['rss_after_import_mb'] - base:.1f} over a bare interpreter), running "
            f"{s['rss_running_mb']:.1f} MB" + (f" (PSS {pss:.1f})" if pss is not None else "")
        )
        lines.append(f"  {'cumulative ms':>13} {'self ms':>8}  module")
        for i in s["top"]:
            lines.append(f"  {i['cumulative_ms']:>13.1f} {i['self_ms']:>8.1f}  {i['name']}")
        lines.append(
            "  own time by package (ms): "
            + ", ".join(f"{k} {v:.1f}" for k, v in s["packages_ms"].items())
        )
        if s["not_imported"]:
            lines.append("  " + "; ".join(s["not_imported"]))
        lines.append("")
    top = list(result["package_rss_mb"].items())[:15]
    lines.append(
        "RSS a package adds to a bare interpreter on its own (MB, with what it imports): "
        + ", ".join(f"{k} {v:.1f}" for k, v in top)
    )
    return "\n".join(lines).rstrip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.imports", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--top", type=int, default=15, help="modules listed per process (15)")
    ap.add_argument("--repeat", type=int, default=3, help="fresh imports per service (3)")
    ap.add_argument("--out", type=Path, default=None, help="JSON (default run/imports.json)")
    args = ap.parse_args(argv)
    out_path = args.out or Path(os.environ.get("METERLINK_RUN_DIR") or "run") / "imports.json"
    try:
        result = measure(args.top, max(1, args.repeat))
    except pipeline.StackError as exc:
        print(f"bench.imports: the stack failed: {exc}", file=sys.stderr)
        return 2
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(report(result) + f"\n\nJSON in {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

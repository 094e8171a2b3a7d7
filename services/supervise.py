"""supervise: start the whole stack under supervisord, or talk to it.

``python -m services.supervise run [--quiet]``
    Fill in the environment ``supervisord.conf`` needs (run directory, config,
    workers, simulators, interpreter), create the run directory, start
    supervisord in the foreground and follow the simulators' logs, so that the
    traffic between the meter and the head-end shows on the terminal. Ctrl-C
    (or SIGTERM) stops supervisord and with it every process.

``python -m services.supervise ctl [supervisorctl arguments...]``
    Run supervisorctl against the stack of this run directory
    (``status``, ``restart meterlink:uart``, ``shutdown`` ...).

Environment (defaults in brackets): METERLINK_RUN_DIR [./run],
METERLINK_CONFIG [./dev.json], METERLINK_WORKERS [2], METERLINK_SIM [false;
true with ``make run``].
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "supervisord.conf"
#: Logs followed on the terminal by ``run`` (the simulators print the traffic).
FOLLOW = ("meter_sim", "hes_sim")
FOLLOW_INTERVAL_S = 0.2


def stack_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment supervisord.conf expects, with defaults filled in."""
    env = dict(os.environ if environ is None else environ)
    env["METERLINK_RUN_DIR"] = os.path.abspath(env.get("METERLINK_RUN_DIR") or "run")
    env["METERLINK_CONFIG"] = os.path.abspath(env.get("METERLINK_CONFIG") or "dev.json")
    workers = env.get("METERLINK_WORKERS") or "2"
    if not workers.isdigit() or int(workers) < 1:
        raise SystemExit(
            f"supervise: METERLINK_WORKERS must be a whole number >= 1, not {workers!r}"
        )
    env["METERLINK_WORKERS"] = workers
    sim = (env.get("METERLINK_SIM") or "false").lower()
    env["METERLINK_SIM"] = "true" if sim in ("1", "true", "yes", "on") else "false"
    env.setdefault("METERLINK_PYTHON", sys.executable)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    os.makedirs(Path(env["METERLINK_RUN_DIR"]) / "logs", mode=0o700, exist_ok=True)
    os.chmod(env["METERLINK_RUN_DIR"], 0o700)
    return env


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run(quiet: bool) -> int:
    env = stack_env()
    if not Path(env["METERLINK_CONFIG"]).exists():
        print(f"supervise: config file not found: {env['METERLINK_CONFIG']}", file=sys.stderr)
        return 2
    logs = Path(env["METERLINK_RUN_DIR"]) / "logs"
    print(
        f"meterlink: starting supervisord run_dir={env['METERLINK_RUN_DIR']} "
        f"config={env['METERLINK_CONFIG']} workers={env['METERLINK_WORKERS']} "
        f"simulators={env['METERLINK_SIM']}",
        flush=True,
    )
    proc = subprocess.Popen([_bin("supervisord"), "-c", str(CONF)], env=env)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    offsets: dict[str, int] = {}
    for name in FOLLOW:  # show only what is new from this start
        path = logs / f"{name}.log"
        offsets[name] = path.stat().st_size if path.exists() else 0
    while proc.poll() is None:
        if not quiet and not stopping:
            for name in FOLLOW:
                path = logs / f"{name}.log"
                try:
                    with path.open("rb") as fh:
                        fh.seek(offsets[name])
                        chunk = fh.read()
                except OSError:
                    continue
                if b"\n" in chunk:
                    chunk = chunk[: chunk.rindex(b"\n") + 1]
                    offsets[name] += len(chunk)
                    for line in chunk.decode(errors="replace").splitlines():
                        print(f"{name:>9} | {line}", flush=True)
        try:
            proc.wait(FOLLOW_INTERVAL_S)
        except subprocess.TimeoutExpired:
            pass
    return proc.returncode or 0


def ctl(args: list[str]) -> int:
    env = stack_env()
    return subprocess.call([_bin("supervisorctl"), "-c", str(CONF), *args], env=env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m services.supervise", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    run_p = sub.add_parser("run", help="start the stack in the foreground")
    run_p.add_argument("--quiet", action="store_true", help="do not follow the simulators' logs")
    ctl_p = sub.add_parser("ctl", help="supervisorctl against this stack")
    ctl_p.add_argument("args", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        return run(args.quiet)
    return ctl(args.args or ["status"])


if __name__ == "__main__":
    raise SystemExit(main())

"""supervise: the older entry point, kept for scripts and tests; `meterlink` is the command.

``python -m services.cli.supervise run [--quiet]`` is ``meterlink run`` and
``python -m services.cli.supervise ctl ARGS`` is ``meterlink ctl ARGS``, with the
stack chosen by the environment: METERLINK_RUN_DIR [./run], METERLINK_CONFIG
[./dev.json], METERLINK_WORKERS [2], METERLINK_SIM [false].

For harnesses that start supervisord themselves: ``stack_env()`` fills in
the environment and ``write_conf(env)`` writes the stack's supervisord.conf
into the run directory (as ``meterlink run`` does) and returns its path.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from services.cli import conf, launcher

ROOT = conf.ROOT


def stack_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a stack, with defaults filled in; creates the run directory."""
    from common.daemon import check_run_dir

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
    check_run_dir(env["METERLINK_RUN_DIR"])
    os.makedirs(Path(env["METERLINK_RUN_DIR"]) / "logs", mode=0o700, exist_ok=True)
    return env


def write_conf(env: dict[str, str], extensions: list[str] | None = None) -> Path:
    """Write ``<run_dir>/supervisord.conf`` for the stack ``env`` describes."""
    stack = conf.Stack(
        python=env.get("METERLINK_PYTHON") or sys.executable,
        config=env["METERLINK_CONFIG"],
        run_dir=env["METERLINK_RUN_DIR"],
        workers=int(env["METERLINK_WORKERS"]),
        sim=env["METERLINK_SIM"] == "true",
        extensions=list(extensions or []),
        user="root" if os.geteuid() == 0 else "",
    )
    return launcher.write_stack(stack)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m services.cli.supervise", description=(__doc__ or "").split("\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    run_p = sub.add_parser("run", help="start the stack in the foreground (meterlink run)")
    run_p.add_argument("--quiet", action="store_true", help="show only failures")
    ctl_p = sub.add_parser("ctl", help="supervisorctl against this stack (meterlink ctl)")
    ctl_p.add_argument("args", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    env = stack_env()
    if args.cmd == "run":
        return launcher.run(
            config=Path(env["METERLINK_CONFIG"]),
            run_dir=Path(env["METERLINK_RUN_DIR"]),
            workers=int(env["METERLINK_WORKERS"]),
            sim=env["METERLINK_SIM"] == "true",
            quiet=args.quiet,
        )
    return launcher.ctl(Path(env["METERLINK_RUN_DIR"]), args.args)


if __name__ == "__main__":
    raise SystemExit(main())

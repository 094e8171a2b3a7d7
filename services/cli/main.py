"""meterlink: run and look after the gateway.

Global options (before the command) choose the stack: ``--config FILE``
(``$METERLINK_CONFIG``, ``./dev.json``) and ``--run-dir DIR``
(``$METERLINK_RUN_DIR``, ``./run``). Every command takes ``--help``.

    run              check the config, start the stack under supervisord, show state
    check [CONFIG]   every problem in a config at once; exit 0 good, 2 bad; no network
    status           services, links (with the reason and age of a down link), counters
    tap              every message the broker routes, decoded
    ask get|set      ask the meter a parameter through the gateway
    ctl [ARGS...]    supervisorctl against the stack started by `run`
    scale N          N resolver workers on the running stack; nothing else restarts
    reload           every service re-reads the config (as SIGHUP does)
    keys             CURVE key pairs for the bus (BUS.curve) and the broker's allow-list
    supervisor-conf  programs for a host supervisord's [include]
    systemd-unit     a systemd unit that runs the stack as a dedicated user
    schema           the config's JSON schema
    version          the version
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from services.cli import conf, launcher

REMAINDER_COMMANDS = ("tap", "ask", "ctl", "status")


def version() -> str:
    try:
        from importlib.metadata import version as _v

        return _v("meterlink")
    except Exception:
        import tomllib

        with (conf.ROOT / "pyproject.toml").open("rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(
        prog="meterlink",
        description=doc.split("\n")[0],
        epilog="\n".join(doc.split("\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--config", help="config file [$METERLINK_CONFIG, ./dev.json]")
    ap.add_argument("--run-dir", help="run directory [$METERLINK_RUN_DIR, ./run]")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def stack_opts(p: argparse.ArgumentParser) -> None:
        # Also accepted after the command: `meterlink run --config site.json`.
        p.add_argument("--config", dest="sub_config", help=argparse.SUPPRESS)
        p.add_argument("--run-dir", dest="sub_run_dir", help=argparse.SUPPRESS)

    p = sub.add_parser("run", help="check the config and start the stack in the foreground")
    stack_opts(p)
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("METERLINK_WORKERS") or 2),
        help="resolver workers [$METERLINK_WORKERS, 2]",
    )
    p.add_argument(
        "--sim",
        action=argparse.BooleanOptionalAction,
        default=(os.environ.get("METERLINK_SIM") or "false").lower() in ("1", "true", "yes", "on"),
        help="start the meter and HES simulators [$METERLINK_SIM, false]",
    )
    p.add_argument("--quiet", action="store_true", help="show only failures")
    p.add_argument("--skip-check", action="store_true", help="start even if the config check fails")
    p.add_argument("--user", default="", help="supervisord drops to this user (when root)")

    p = sub.add_parser("check", help="check a config; every problem at once; exit 2 if bad")
    stack_opts(p)
    p.add_argument("file", nargs="?", help="the config [--config, $METERLINK_CONFIG, ./dev.json]")

    for name, what in (
        ("status", "services, links and counters of the running stack"),
        ("tap", "watch the bus live, decoded"),
        ("ask", "GET or SET a meter parameter (ask get 0x2801)"),
        ("ctl", "supervisorctl against the stack started by `meterlink run`"),
    ):
        p = sub.add_parser(name, help=what, add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)

    p = sub.add_parser("scale", help="set the number of resolver workers on a running stack")
    stack_opts(p)
    p.add_argument("workers", type=int)

    p = sub.add_parser("reload", help="every service re-reads the config (SIGHUP)")
    stack_opts(p)

    p = sub.add_parser("keys", help="CURVE key pairs for the bus and the broker's allow-list")
    stack_opts(p)
    p.add_argument("--dir", help="where to write them [BUS.curve.keys_dir]")
    p.add_argument(
        "--only",
        metavar="NAME",
        action="append",
        help="only this participant's pair (repeatable), e.g. resolver for a worker "
        "on another machine",
    )
    p.add_argument("--force", action="store_true", help="replace pairs that exist")

    p = sub.add_parser("supervisor-conf", help="programs for a host supervisord's [include]")
    stack_opts(p)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--user", default="", help="run the programs as this user")
    p.add_argument("--python", default=sys.executable, help="the interpreter [this one]")
    p.add_argument(
        "--checkout", action="store_true", help="print the checkout's own supervisord.conf"
    )

    p = sub.add_parser("systemd-unit", help="a systemd unit for the stack")
    p.add_argument("--user", default=os.environ.get("METERLINK_USER") or "meterlink")
    p.add_argument(
        "--unit-config",
        default=os.environ.get("METERLINK_ETC_CONFIG") or "/etc/meterlink/meterlink.json",
        help="config file [/etc/meterlink/meterlink.json]",
    )
    p.add_argument(
        "--state-dir",
        default=os.environ.get("METERLINK_STATE_DIR") or "/var/lib/meterlink",
        help="run directory [/var/lib/meterlink]",
    )
    p.add_argument("--workers", type=int, default=2)

    sub.add_parser("schema", help="the config's JSON schema")
    sub.add_parser("version", help="the version")
    return ap


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    cfg = getattr(args, "sub_config", None) or args.config
    rd = getattr(args, "sub_run_dir", None) or args.run_dir
    return launcher.resolve_config(cfg), launcher.resolve_run_dir(rd)


def _export(config: Path, run_dir: Path) -> None:
    os.environ["METERLINK_CONFIG"] = str(config)
    os.environ["METERLINK_RUN_DIR"] = str(run_dir)


def check(path: Path, run_dir: Path) -> int:
    import tempfile

    # The run directory only fills in {run_dir}; check creates nothing there.
    with tempfile.TemporaryDirectory(prefix="ml-check-") as tmp:
        cfg, errors = launcher.check_config(path, str(run_dir if run_dir.exists() else tmp))
    if errors:
        print(f"{path}: {len(errors)} problem(s)")
        for err in errors:
            print(f"  {err}")
        return 2
    assert cfg is not None
    mapped = cfg.get("_port_mapped")
    print(f"{path}: OK")
    if mapped:
        print(f"  UART.port {mapped['number']} -> {mapped['device']} (rule {mapped['rule']})")
    print(f"  HES {cfg['TCP_SERVER']['host']}:{cfg['TCP_SERVER']['port']} (not contacted)")
    if cfg["EXTENSIONS"]:
        print(f"  extensions: {', '.join(sorted(cfg['EXTENSIONS']))}")
    return 0


def keys(args: argparse.Namespace, config: Path, run_dir: Path) -> int:
    from common import buskeys
    from common.config import ConfigError, load

    names = args.only
    where = Path(args.dir) if args.dir else None
    if names is None or where is None:
        try:
            cfg = load(config, run_directory=str(run_dir))
        except ConfigError as exc:
            print(f"meterlink keys: {exc}", file=sys.stderr)
            return 2
        names = names or buskeys.participants(cfg)
        where = where or Path(buskeys.keys_dir(cfg["BUS"], str(run_dir)))
    bad = [n for n in names if not n or "/" in n or n.startswith(".")]
    if bad:
        print(f"meterlink keys: not a participant name: {bad[0]!r}", file=sys.stderr)
        return 2
    try:
        for line in buskeys.generate(where, names, force=args.force):
            print(line)
    except OSError as exc:
        print(f"meterlink keys: {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.only:
        print(
            f"copy {where}/{{NAME}}.key into the broker's {buskeys.ALLOWED}/ and the broker's "
            f"{buskeys.BROKER}.key into {where}/"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rest: list[str] | None = None
    i = 0
    while i < len(argv):  # the tools take their own arguments, --help included
        if argv[i] in ("--config", "--run-dir"):
            i += 2
            continue
        if not argv[i].startswith("-") and argv[i] in REMAINDER_COMMANDS:
            argv, rest = argv[: i + 1], argv[i + 1 :]
        break
    args = build_parser().parse_args(argv)
    if rest is not None:
        args.args = rest
    config, run_dir = _paths(args)
    cmd = args.cmd
    if cmd in REMAINDER_COMMANDS:
        _export(config, run_dir)
        rest = list(args.args)
        if cmd == "status":
            from services.cli import status

            return status.main(rest)
        if cmd == "tap":
            from services.cli import tap

            return tap.main(rest)
        if cmd == "ask":
            from services.cli import ask

            return ask.main(rest)
        return launcher.ctl(run_dir, rest)
    if cmd == "run":
        _export(config, run_dir)
        return launcher.run(
            config=config,
            run_dir=run_dir,
            workers=args.workers,
            sim=args.sim,
            quiet=args.quiet,
            skip_check=args.skip_check,
            user=args.user,
        )
    if cmd == "check":
        return check(launcher.resolve_config(args.file) if args.file else config, run_dir)
    if cmd == "scale":
        return launcher.scale(run_dir, args.workers)
    if cmd == "reload":
        return launcher.reload(run_dir)
    if cmd == "keys":
        return keys(args, config, run_dir)
    if cmd == "supervisor-conf":
        if args.checkout:
            sys.stdout.write(conf.checkout_conf())
            return 0
        exts: list[str] = []
        try:
            from common.config import load

            exts = sorted(load(config, run_directory=str(run_dir))["EXTENSIONS"])
        except Exception as exc:
            print(f"meterlink: {config}: {exc}", file=sys.stderr)
            return 2
        stack = conf.Stack(
            python=args.python,
            config=str(config),
            run_dir=str(run_dir),
            workers=args.workers,
            extensions=exts,
            prefix=conf.PREFIX,
            user=args.user,
        )
        from common.daemon import compile_bytecode

        compile_bytecode(stack.root)  # the host supervisord's processes load .pyc
        sys.stdout.write(conf.include(stack))
        return 0
    if cmd == "systemd-unit":
        exe = str(Path(sys.executable).parent / "meterlink")
        sys.stdout.write(
            conf.systemd_unit(
                exe=exe,
                config=args.unit_config,
                run_dir=args.state_dir,
                user=args.user,
                workers=args.workers,
            )
        )
        return 0
    if cmd == "schema":
        from common.config import SCHEMA

        print(json.dumps(SCHEMA, indent=2))
        return 0
    if cmd == "version":
        print(f"meterlink {version()}")
        return 0
    raise AssertionError(cmd)


if __name__ == "__main__":
    raise SystemExit(main())

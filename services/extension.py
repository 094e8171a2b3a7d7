"""extension: run a user's own service, named under ``EXTENSIONS`` in the config.

``python -m services.extension NAME`` imports ``EXTENSIONS.NAME.module``, takes
the ``common.service.Service`` subclass it defines (the one named by a module
attribute ``SERVICE``, or else the only one), and runs ``cls(NAME, config)``
like any built-in service: its own inbox on the bus (``NAME.in``), a heartbeat
(so it has a row in ``meterlink status``), ``app.client.send(...)``,
``app.uart.write(...)``, events, SIGHUP reload, the single-instance lock
``pids/NAME.pid``. Its settings are ``config["EXTENSIONS"][NAME]["settings"]``.
``meterlink run`` and ``meterlink supervisor-conf`` give each extension its own
supervisord program (``ext-NAME``); nothing in supervisord.conf is edited.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from typing import Any

from common.daemon import boot, fatal, log_start_notes, service_parser
from common.service import Service, setup_logging


def find_service(module: Any) -> type[Service]:
    chosen = getattr(module, "SERVICE", None)
    if inspect.isclass(chosen) and issubclass(chosen, Service):
        return chosen
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Service)
        and obj is not Service
        and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise ValueError(
            f"module {module.__name__} must define one Service subclass (or SERVICE = the class); "
            f"found: {names}"
        )
    return found[0]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap: argparse.ArgumentParser = service_parser("extension NAME", __doc__)
    ap.add_argument("name", help="the extension's name under EXTENSIONS in the config")
    name = next((a for a in argv if not a.startswith("-")), "extension")
    config, args = boot(name, argv, __doc__, parser=ap)
    ext = config["EXTENSIONS"].get(args.name)
    if ext is None:
        known = ", ".join(sorted(config["EXTENSIONS"])) or "none"
        raise fatal(f"config key EXTENSIONS.{args.name}: not configured (known: {known})", 2)
    setup_logging(config["LOG"]["level"], args.name)
    log_start_notes(config, args.name)
    try:
        module = importlib.import_module(ext["module"])
        cls = find_service(module)
    except (ImportError, ValueError) as exc:
        raise fatal(f"config key EXTENSIONS.{args.name}.module: {exc}", 2) from None
    service = cls(args.name, config)
    service.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a service process imports: stdlib modules that cost every process memory of its
own (``dataclasses`` with ``inspect``, ``ast`` and ``dis`` about 1 MB; ``pathlib`` with
``urllib.parse`` and ``ipaddress`` about 0.6 MB; ``tempfile`` about 0.5 MB; ``decimal`` 0.3 MB;
``ssl`` 4.2 MB where no TLS is configured) and that no
running service needs stay out, so that a later import cannot bring them back unseen.

Each service's imports are made as its process makes them at start (the service module,
then what its ``main()`` imports: ``common.daemon``, ``common.config``, ``common.checks``;
the resolver also loads ``services.handlers``), in a fresh interpreter, with
``-X importtime`` to name the module that imported an unwanted one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

#: What each service process imports at start, by service.
SERVICES: dict[str, tuple[str, ...]] = {
    "broker": ("services.broker",),
    "resolver": ("services.resolver", "services.handlers"),
    "uart": ("services.uart",),
    "client": ("services.client",),
    "watchdog": ("services.watchdog",),
}
START = ("common.daemon", "common.config", "common.checks")
KEPT_OUT = ("dataclasses", "inspect", "pathlib", "tempfile", "decimal", "ssl", "argparse")
#: Still imported, with the reason; a test fails once it no longer is (remove it here).
PENDING: dict[str, dict[str, str]] = {}

_PROBE = (
    "import json, sys\n"
    "for name in sys.argv[1:]:\n"
    "    __import__(name)  # the C import, which -X importtime logs with its depth\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)


def _importers(importtime: str) -> dict[str, str]:
    """Who imported whom, from ``-X importtime`` lines (a module is listed after what
    it imports, one indent level deeper than its importer)."""
    rows: list[tuple[int, str]] = []
    for line in importtime.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1]
            if name.strip() != "package":
                rows.append((len(name) - len(name.lstrip()), name.strip()))
    parent: dict[str, str] = {}
    for i, (depth, name) in enumerate(rows):
        parent[name] = next((n for d, n in rows[i + 1 :] if d < depth), "the process itself")
    return parent


def _imported(modules: tuple[str, ...]) -> tuple[set[str], dict[str, str]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _PROBE, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(json.loads(proc.stdout)), _importers(proc.stderr)


@pytest.mark.parametrize("service", SERVICES)
def test_service_process_imports_leave_out_what_costs_memory(service: str) -> None:
    present, importers = _imported(SERVICES[service] + START)
    assert "common.bus" in present  # the probe imported the tree under test
    pending = PENDING.get(service, {})
    unwanted = [m for m in KEPT_OUT if m in present and m not in pending]
    assert not unwanted, ", ".join(f"{m} (imported by {importers.get(m, '?')})" for m in unwanted)
    gone = [m for m in pending if m not in present]
    assert not gone, f"{service} no longer imports {gone}: remove them from PENDING"


def test_bytecode_is_written_before_the_processes_start_whatever_the_environment_says(
    tmp_path, monkeypatch
):
    """``meterlink run``, ``make`` and the bench write the .pyc of our own
    modules: a process that has to compile them holds 3-4 MB more."""
    import importlib.util
    import sys

    from common.daemon import compile_bytecode

    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE=1
    for pkg in ("common", "services"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "mod.py").write_text("X = 1\n")
    compile_bytecode(str(tmp_path))
    for pkg in ("common", "services"):
        pyc = importlib.util.cache_from_source(str(tmp_path / pkg / "mod.py"))
        assert os.path.exists(pyc), pyc
    # A tree this user cannot write is left as it is, without an error.
    ro = tmp_path / "ro"
    (ro / "common").mkdir(parents=True)
    (ro / "common" / "mod.py").write_text("X = 1\n")
    os.chmod(ro / "common", 0o500)
    try:
        compile_bytecode(str(ro))
        if os.geteuid() != 0:  # root writes anyway
            assert not os.path.exists(ro / "common" / "__pycache__")
    finally:
        os.chmod(ro / "common", 0o700)


def test_boot_without_arguments_leaves_them_out_too(run_dir) -> None:
    """What supervisord starts: ``boot()`` with no arguments (no argparse), the run
    directory checked and the config loaded, as every service's ``main()`` does."""
    from tests.conftest import base_config

    cfg = run_dir / "c.json"
    cfg.write_text(json.dumps(base_config(run_dir)))
    code = (
        "import json, sys\n"
        "from common import daemon\n"
        "daemon.boot('broker', argv=[], lock=False)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = dict(os.environ, METERLINK_RUN_DIR=str(run_dir), METERLINK_CONFIG=str(cfg))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    present, importers = set(json.loads(proc.stdout.splitlines()[-1])), _importers(proc.stderr)
    assert "common.config" in present  # the config was loaded
    unwanted = [m for m in KEPT_OUT if m in present]
    assert not unwanted, ", ".join(f"{m} (imported by {importers.get(m, '?')})" for m in unwanted)

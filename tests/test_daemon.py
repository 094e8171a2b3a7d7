"""Daemon behaviour of each process and the `meterlink` command, without supervisord:
--help everywhere, one instance per run directory, a private run directory,
config checks (every problem, the reference's dev.json, no network), and the
generated supervisord/systemd files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from common import config, daemon
from services.cli import conf
from services.cli import main as cli
from tests.conftest import ROOT, base_config, shared_dir, wait_for

SERVICES = ("broker", "uart", "client", "watchdog", "resolver")
TOOLS = (
    "cli.tap",
    "cli.status",
    "cli.ask",
    "sim.meter",
    "sim.hes",
    "cli.supervise",
    "extension",
    "cli",
)
METERLINK_COMMANDS = (
    "run",
    "check",
    "status",
    "tap",
    "ask",
    "ctl",
    "scale",
    "reload",
    "supervisor-conf",
    "systemd-unit",
    "schema",
    "version",
)


def seed_dev_json() -> Path:
    """The reference solution's dev.json as it ships: ../shared/seed/dev.json."""
    path = shared_dir() / "seed" / "dev.json"
    if not path.exists():
        pytest.skip(f"the reference's dev.json is not beside this checkout ({path})")
    return path


def run(
    args: list[str], run_dir: Path, cfg: Path | None = None, **kw
) -> subprocess.CompletedProcess:
    env = dict(os.environ, METERLINK_RUN_DIR=str(run_dir), PYTHONPATH=str(ROOT))
    if cfg is not None:
        env["METERLINK_CONFIG"] = str(cfg)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, **kw
    )


# -- --help on every entry point ------------------------------------------------------


def test_help_on_every_entry_point_exits_0_and_starts_nothing(run_dir):
    target = run_dir / "untouched"
    target.mkdir(mode=0o700)
    for name in (*SERVICES, *TOOLS):
        proc = run(["-m", f"services.{name}", "--help"], target)
        assert proc.returncode == 0, (name, proc.stderr)
        assert "usage:" in proc.stdout, name
    for command in METERLINK_COMMANDS:
        proc = run(["-m", "services.cli", command, "--help"], target)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
        assert "usage" in proc.stdout.lower(), command
    # Nothing was bound, locked, created or started.
    assert list(target.iterdir()) == []


# -- one instance per run directory -------------------------------------------------------


def test_second_broker_and_second_uart_are_refused_naming_the_holder(stack, run_dir):
    broker = stack.start("services.broker")
    broker.wait_log("broker")
    wait_for(lambda: (run_dir / "broker.in").exists(), 10, "the broker's socket")
    second = stack.start("services.broker", name="broker2")
    assert second.popen.wait(20) == 2
    assert f"pid {broker.pid}" in second.text()
    assert broker.alive()

    uart = stack.start("services.uart")
    wait_for(lambda: daemon.PidLock.holder(run_dir, "uart") == uart.pid, 10, "uart lock")
    uart2 = stack.start("services.uart", name="uart2")
    assert uart2.popen.wait(20) == 2
    assert f"pid {uart.pid}" in uart2.text()

    # Workers lock their own names; a hand-started one takes the first free index.
    w0 = stack.start("services.resolver", "--name", "resolver-0")
    wait_for(lambda: daemon.PidLock.holder(run_dir, "resolver-0") == w0.pid, 10, "worker 0")
    w_any = stack.start("services.resolver")
    wait_for(lambda: daemon.PidLock.holder(run_dir, "resolver-1") == w_any.pid, 10, "worker 1")
    dup = stack.start("services.resolver", "--name", "resolver-0", name="dup")
    assert dup.popen.wait(20) == 2
    assert f"pid {w0.pid}" in dup.text()


def test_lock_is_free_again_when_the_holder_dies(run_dir):
    code = (
        "from common.daemon import PidLock; import sys, time; "
        "PidLock(sys.argv[1], 'x').acquire(); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert daemon.PidLock.holder(run_dir, "x") == proc.pid
    finally:
        proc.kill()
        proc.wait(10)
    assert daemon.PidLock.holder(run_dir, "x") is None  # a stale file does not block


def test_asking_who_holds_a_lock_never_takes_it(run_dir):
    # A probe that took the lock for a moment turned away a worker starting then,
    # which took the next index (it failed CI once): the child here is refused
    # thousands of times by such a probe, and never by one that only asks.
    code = (
        "import sys\n"
        "from common.daemon import LockHeld, PidLock\n"
        "refused = 0\n"
        "for _ in range(3000):\n"
        "    try:\n"
        "        PidLock(sys.argv[1], 'x').acquire().release()\n"
        "    except LockHeld:\n"
        "        refused += 1\n"
        "print(refused, flush=True)\n"
    )
    (run_dir / "pids").mkdir(mode=0o700, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    probes = 0
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        daemon.PidLock.holder(run_dir, "x")
        probes += 1
    out, _ = proc.communicate(timeout=10)
    assert probes > 0
    assert out.strip() == "0"


# -- private files -------------------------------------------------------------------------


def test_run_directory_with_group_or_other_bits_is_refused(run_dir):
    cfg = run_dir / "c.json"
    cfg.write_text(json.dumps(base_config(run_dir)))
    shared = run_dir / "shared"
    shared.mkdir()
    os.chmod(shared, 0o750)
    for module in ("services.broker", "services.resolver"):
        proc = run(["-m", module], shared, cfg)
        assert proc.returncode == 2
        assert "FATAL" in proc.stderr and "mode 0750" in proc.stderr and "chmod 700" in proc.stderr
    proc = run(["-m", "services.cli", "--run-dir", str(shared), "run"], shared, cfg)
    assert proc.returncode == 2 and "mode 0750" in proc.stdout + proc.stderr
    assert sorted(p.name for p in shared.iterdir()) == []


def test_files_a_service_makes_are_private_under_umask_022(stack, run_dir):
    broker = stack.start("services.broker")
    client = stack.start("services.client")
    wait_for(lambda: (run_dir / "client-spool.sqlite3").exists(), 15, "the client's spool")
    wait_for(lambda: (run_dir / "pids" / "client.pid").exists(), 15, "the client's pid file")
    assert broker.alive() and client.alive()
    loose = [
        f"{p} {p.stat().st_mode & 0o777:04o}"
        for p in run_dir.rglob("*")
        if p.suffix not in (".log", ".json") and p.stat().st_mode & 0o077
    ]
    # (the test's own log files and config are written by pytest, not by the stack)
    assert loose == []


# -- config: every problem at once, the reference's dev.json, no network ----------------------


def test_check_names_every_problem_with_a_suggestion_and_exits_2(run_dir, capsys):
    doc = base_config(run_dir)
    doc["UART"]["baudrat"] = 9600
    doc["UART"]["bytesize"] = 9
    doc["TCP_SERVER"]["port"] = 70000
    path = run_dir / "bad.json"
    path.write_text(json.dumps(doc))
    assert cli.main(["check", str(path)]) == 2
    out = capsys.readouterr().out
    assert "3 problem(s)" in out
    assert "unknown key 'baudrat' (did you mean 'baudrate'?)" in out
    assert "UART.bytesize: must be one of 5, 6, 7, 8, not 9" in out
    assert "TCP_SERVER.port: must be <= 65535, not 70000" in out


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("UART", {"reopen_min_s": 9, "reopen_max_s": 1}, "UART.reopen_min_s: 9 but"),
        ("WATCHDOG", {"radio_cycle_after": 6, "reboot_after": 2}, "must be < reboot_after"),
        ("RESOLVER", {"handlers": ["no_such_handlers"]}, "RESOLVER.handlers.0: module"),
        ("TCP_SERVER", {"tls": {"enabled": True, "ca": "/nonexistent/ca.pem"}}, "tls.ca"),
        (
            "BUS",
            {"transport": "tcp", "base_port": 65000, "services": [f"s{i}" for i in range(540)]},
            "BUS.base_port: 65000 leaves no room",
        ),
        ("EXTENSIONS", {"x": {"module": "no_such_ext"}}, "EXTENSIONS.x.module"),
    ],
)
def test_semantic_mistakes_are_config_errors(run_dir, section, values, message):
    doc = base_config(run_dir, **{section: values})
    with pytest.raises(config.ConfigError) as info:
        config.validate(doc)
    assert message in "\n".join(info.value.errors)


def test_reference_dev_json_passes_check_without_touching_the_network(run_dir, monkeypatch, capsys):
    path = seed_dev_json()
    seed = json.loads(path.read_text())
    assert seed["UART"]["port"] == 2  # as the reference ships it

    def no_network(*args, **kwargs):
        raise AssertionError(f"check touched the network: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "gethostbyname", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    assert cli.main(["--run-dir", str(run_dir), "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "UART.port 2 -> /dev/ttyS2" in out and "(not contacted)" in out


def test_integer_uart_port_maps_by_rule_or_port_map(run_dir):
    doc = base_config(run_dir, UART={"port": 2})
    path = run_dir / "c.json"
    path.write_text(json.dumps(doc))
    cfg = config.load(path, str(run_dir))
    assert cfg["UART"]["port"] == "/dev/ttyS2"
    assert cfg["_port_mapped"] == {"number": 2, "device": "/dev/ttyS2", "rule": "/dev/ttyS<N>"}
    doc["UART"]["port_map"] = {"2": "/dev/ttyUSB0"}
    path.write_text(json.dumps(doc))
    cfg = config.load(path, str(run_dir))
    assert cfg["UART"]["port"] == "/dev/ttyUSB0"
    assert cfg["_port_mapped"]["rule"] == 'UART.port_map["2"]'


# -- generated files -------------------------------------------------------------------------


def test_checkout_supervisord_conf_is_the_generated_one():
    assert (ROOT / "supervisord.conf").read_text() == conf.checkout_conf(), (
        "regenerate: python -m services.cli supervisor-conf --checkout > supervisord.conf"
    )


def test_pyproject_pins_the_same_dependencies_as_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [
        ln.strip()
        for ln in (ROOT / "requirements.txt").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert sorted(project["dependencies"]) == sorted(reqs)
    assert all("==" in r for r in reqs)
    assert project["scripts"]["meterlink"] == "services.cli.main:main"


def test_supervisor_include_is_programs_only_with_prefixed_names(run_dir, capsys):
    path = run_dir / "c.json"
    path.write_text(json.dumps(base_config(run_dir)))
    assert cli.main(["--config", str(path), "--run-dir", str(run_dir), "supervisor-conf"]) == 0
    text = capsys.readouterr().out
    for section in ("[supervisord]", "[unix_http_server]", "[supervisorctl]", "%(ENV_"):
        assert section not in text
    programs = [ln for ln in text.splitlines() if ln.startswith("[program:")]
    assert programs and all(p.startswith("[program:meterlink-") for p in programs)
    assert "[group:meterlink]" in text and f'METERLINK_RUN_DIR="{run_dir}"' in text


def test_systemd_unit_runs_as_a_dedicated_user_with_etc_and_var_lib(capsys):
    assert cli.main(["systemd-unit"]) == 0
    unit = capsys.readouterr().out
    assert "User=meterlink" in unit and "StateDirectory=meterlink" in unit
    assert "--config /etc/meterlink/meterlink.json" in unit
    assert "--run-dir /var/lib/meterlink" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "RestartPreventExitStatus=2" in unit
    for line in unit.splitlines():  # systemd has no trailing comments
        assert line.startswith("#") or "#" not in line, line


def test_make_private_takes_group_and_other_bits_off_and_leaves_links(tmp_path):
    from common.daemon import make_private

    (tmp_path / "logs").mkdir(mode=0o755)
    loose = tmp_path / "logs" / "rotated.log.1"
    loose.write_text("x")
    loose.chmod(0o644)
    target = tmp_path / "elsewhere"
    target.write_text("y")
    target.chmod(0o644)
    (tmp_path / "link").symlink_to(target)
    assert make_private(str(tmp_path)) == 3  # logs/, the log, and the link's target
    assert loose.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "logs").stat().st_mode & 0o777 == 0o700
    assert make_private(str(tmp_path)) == 0

"""The launcher: ``meterlink run`` and the commands that talk to its supervisord.

``run`` checks the configuration first (every error on the terminal, exit 2,
nothing started), writes ``<run_dir>/supervisord.conf`` and ``stack.json``,
starts supervisord in the foreground, and then shows on the terminal:

- with simulators, their traffic (their log lines, as ``make run`` always did);
- the gateway's own state changes, from the bus: serial open/lost with the
  reason, HES link up/down with the reason, network up/down;
- any process that goes FATAL (or exits for good), once, with the last lines
  of its log.

SIGINT/SIGTERM stop every program at once, then supervisord (``stop_stack``;
supervisord runs in a process group of its own, so a terminal's Ctrl-C reaches
the launcher only, and the launcher stops the stack also when it ends on an
error; SIGQUIT too); SIGHUP is a reload (SIGHUP to every meterlink process, not
supervisord's own restart-all).

``scale N`` rewrites the file with N workers and applies only the difference
(``reloadConfig``, then ``removeProcessGroup`` / ``addProcessGroup`` for the
worker groups); ``reload`` signals every meterlink process with SIGHUP;
``ctl`` is supervisorctl against the stack's file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from services.cli import conf

STATE_FILE = "stack.json"
CONF_FILE = "supervisord.conf"
FOLLOW = ("meter_sim", "hes_sim")
TICK_S = 0.2
STOP_RPC_TIMEOUT_S = 2.0  # supervisord answers at once unless it is stuck
STOP_WAIT_S = 30.0  # stopwaitsecs is 2; supervisord then kills what is left
# What the terminal sends to stop a job (Ctrl-C, Ctrl-\) and what a service manager sends.
STOP_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)
STATE_POLL_S = 0.5
TAIL_LINES = 15
GATEWAY_TOPICS = ("serial.open", "serial.lost", "link.up", "link.down", "net.up", "net.down")


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def resolve_run_dir(arg: str | None) -> Path:
    return Path(os.path.abspath(arg or os.environ.get("METERLINK_RUN_DIR") or "run"))


def resolve_config(arg: str | None) -> Path:
    return Path(os.path.abspath(arg or os.environ.get("METERLINK_CONFIG") or "dev.json"))


# -- checking ----------------------------------------------------------------------


def check_config(path: Path, run_dir: str) -> tuple[dict[str, Any] | None, list[str]]:
    """Every problem the processes would find, without starting them or
    touching the network: the schema, the related keys, and the checks that
    the client and the watchdog make at start."""
    from common.config import ConfigError, load

    try:
        cfg = load(path, run_directory=run_dir)
    except ConfigError as exc:
        return None, list(exc.errors)
    errors: list[str] = []
    try:
        from services.watchdog import check_config as watchdog_check

        watchdog_check(cfg)
    except ConfigError as exc:
        errors.append(str(exc))
    try:
        from services.client import Target

        Target.from_config(cfg)
    except ConfigError as exc:
        errors.append(str(exc))
    except Exception:  # the client's own shape may change; the service checks again
        pass
    return (cfg if not errors else None), errors


# -- talking to supervisord ----------------------------------------------------------


def rpc(run_dir: Path, timeout: float | None = None) -> Any:
    """An XML-RPC proxy to the stack's supervisord (its unix socket); with a
    timeout, each socket operation of its calls gives up after that long."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{run_dir}/supervisor.sock")
    if timeout is not None:
        make = transport._get_connection  # supervisor's unix connection ignores .timeout

        def timed() -> Any:
            conn = make()
            connect = conn.connect

            def connect_timed() -> None:
                connect()
                conn.sock.settimeout(timeout)

            conn.connect = connect_timed
            return conn

        transport._get_connection = timed
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def load_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        raise SystemExit(
            f"meterlink: no stack started by `meterlink run` in {run_dir} ({path} missing)"
        ) from None


def stack_from_state(state: dict[str, Any]) -> conf.Stack:
    return conf.Stack(
        python=state["python"],
        config=state["config"],
        run_dir=state["run_dir"],
        workers=int(state["workers"]),
        sim=bool(state["sim"]),
        extensions=list(state.get("extensions", [])),
        user=state.get("user", ""),
    )


def write_stack(stack: conf.Stack) -> Path:
    rd = Path(stack.run_dir)
    path = rd / CONF_FILE
    tmp = path.with_suffix(".tmp")
    text = conf.standalone(stack)
    write_private(tmp, text)
    os.replace(tmp, path)
    precreate_private(text, rd)
    state = {
        "python": stack.python,
        "config": stack.config,
        "run_dir": stack.run_dir,
        "workers": stack.workers,
        "sim": stack.sim,
        "extensions": stack.extensions,
        "user": stack.user,
    }
    write_private(rd / STATE_FILE, json.dumps(state, indent=1))
    return path


def precreate_private(conf_text: str, run_dir: Path) -> None:
    """Create, 0600, every log and pid file ``conf_text`` names in ``run_dir``.

    supervisord sets its umask only when it daemonizes; in the foreground it
    creates its files with the umask it was started under. It opens existing
    ones in place, keeping their mode, so creating them first keeps them
    private even under ``supervisord -c`` from a shell with umask 022. (Logs
    it rotates later are made private by the broker's sweep.)
    """
    for m in re.finditer(r"^(?:logfile|pidfile|stdout_logfile)=(.+)$", conf_text, re.M):
        name = m.group(1).strip()
        top = os.path.realpath(run_dir) + os.sep
        inside = os.path.realpath(os.path.dirname(name)).startswith(top) or (
            os.path.realpath(os.path.dirname(name)) + os.sep == top
        )
        if not inside or "%(" in name:
            continue  # /dev/stdout, or anything not ours (symlinks resolved)
        try:
            os.makedirs(os.path.dirname(name), mode=0o700, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
            fd = os.open(name, flags, 0o600)
            os.fchmod(fd, 0o600)
            os.close(fd)
        except OSError:
            continue  # supervisord will say what is wrong with it


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, mode 0600 whatever the caller's umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def ctl(run_dir: Path, args: list[str]) -> int:
    if args in (["-h"], ["--help"]):
        print(
            "usage: meterlink ctl [supervisorctl arguments...]\n\nsupervisorctl against "
            "the stack that `meterlink run` started in the run directory, e.g.\n"
            "  meterlink ctl status\n  meterlink ctl restart meterlink:uart\n"
            "  meterlink ctl tail -f meterlink:client"
        )
        return 0
    path = run_dir / CONF_FILE
    if not path.exists():
        print(f"meterlink: no stack started by `meterlink run` in {run_dir}", file=sys.stderr)
        return 1
    if args and args[0] == "shutdown":
        stop_all_programs(run_dir)  # all at once, not a group per second
    return subprocess.call([bin_path("supervisorctl"), "-c", str(path), *(args or ["status"])])


def scale(run_dir: Path, workers: int) -> int:
    """Change the number of resolver workers on a running stack, nothing else."""
    if workers < 1:
        print("meterlink: scale needs at least 1 worker", file=sys.stderr)
        return 2
    state = load_state(run_dir)
    stack = stack_from_state(state)
    before = stack.workers
    stack.workers = workers
    write_stack(stack)
    server = rpc(run_dir)
    try:
        added, changed, removed = server.supervisor.reloadConfig()[0]
    except (OSError, xmlrpc.client.Fault) as exc:
        print(f"meterlink: supervisord did not answer: {exc}", file=sys.stderr)
        return 1
    workers_prefix = "resolver-"
    for name in removed:
        if name.startswith(workers_prefix):
            server.supervisor.stopProcessGroup(name, True)
            server.supervisor.removeProcessGroup(name)
    for name in added:
        if name.startswith(workers_prefix):
            server.supervisor.addProcessGroup(name)
    others = [n for n in [*added, *changed, *removed] if not n.startswith(workers_prefix)]
    if others:
        print(
            f"meterlink: left alone (they changed outside meterlink): {', '.join(others)}",
            file=sys.stderr,
        )
    print(f"meterlink: resolver workers {before} -> {workers}")
    return 0


def reload(run_dir: Path) -> int:
    """SIGHUP to every meterlink process (not the simulators, not supervisord)."""
    server = rpc(run_dir)
    try:
        infos = server.supervisor.getAllProcessInfo()
    except OSError as exc:
        print(f"meterlink: supervisord did not answer: {exc}", file=sys.stderr)
        return 1
    n = 0
    for info in infos:
        if info["name"] in conf.SIMS or info["statename"] != "RUNNING":
            continue
        server.supervisor.signalProcess(f"{info['group']}:{info['name']}", "HUP")
        n += 1
    print(f"meterlink: reload asked of {n} processes")
    return 0


# -- what the terminal shows -----------------------------------------------------------


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def describe_event(topic: str, data: Any) -> str:
    d = data if isinstance(data, dict) else {}
    if topic == "serial.open":
        return f"serial open port={d.get('port')}"
    if topic == "serial.lost":
        return f"serial LOST port={d.get('port')} reason={d.get('reason') or d.get('error')!r}"
    if topic == "link.up":
        return f"HES link up {d.get('host')}:{d.get('port')}"
    if topic == "link.down":
        return f"HES link DOWN {d.get('host')}:{d.get('port')} reason={d.get('reason')!r}"
    if topic == "net.up":
        return f"network up target={d.get('target')} source={d.get('source', 'probe')}"
    if topic == "net.down":
        return f"network DOWN failures={d.get('failures')} errors={d.get('errors')}"
    return f"{topic} {d}"


class Watcher:
    """Follows the bus's state events and supervisord's process states."""

    def __init__(self, run_dir: Path, cfg: dict[str, Any] | None) -> None:
        """Without a config (``run --skip-check`` on a file that does not load)
        only the process states are followed: where the bus is is unknown."""
        self.run_dir = run_dir
        self.ctx: Any = None
        self.sub: Any = None
        if cfg is not None:
            import zmq

            from common import bus, buskeys

            self.ctx = zmq.Context()
            self.sub = self.ctx.socket(zmq.SUB)
            self.sub.setsockopt(zmq.LINGER, 0)
            buskeys.client(self.sub, cfg["BUS"], str(run_dir), buskeys.TOOLS)
            for topic in (*GATEWAY_TOPICS, bus.T_SERIAL_STATUS, bus.T_LINK_STATUS):
                self.sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
            self.sub.connect(bus.endpoint(cfg["BUS"], str(run_dir), bus.EVENTS_OUT))
        self.reported: dict[str, float] = {}  # process -> stop time reported
        self.shown_status: dict[str, str] = {}
        self.next_poll = 0.0
        self.server = rpc(run_dir)

    def poll_events(self, out: Any) -> None:
        from common import bus

        while self.sub is not None and self.sub.poll(0):
            parts = self.sub.recv_multipart()
            topic = parts[0].decode(errors="replace")
            try:
                data = bus.decode(parts[1]).data
            except (bus.EnvelopeError, IndexError):
                continue
            if topic in (bus.T_SERIAL_STATUS, bus.T_LINK_STATUS):
                # The state topics come first to a new subscriber: show where
                # things stand, then only changes.
                line = self._status_line(topic, data)
                if line and self.shown_status.get(topic) != line:
                    self.shown_status[topic] = line
                    print(f"  gateway | {line}", file=out, flush=True)
                continue
            line = describe_event(topic, data)
            if topic.startswith(("serial", "link")):
                # The state this event leads to, in the status line's words, so
                # the next status publication does not say it again.
                d = data if isinstance(data, dict) else {}
                state = {
                    "up": topic == "link.up",
                    "open": topic == "serial.open",
                    "host": d.get("host"),
                    "port": d.get("port"),
                    "last_error": d.get("reason"),
                    "error": d.get("reason") or d.get("error"),
                }
                key = bus.T_SERIAL_STATUS if topic.startswith("serial") else bus.T_LINK_STATUS
                self.shown_status[key] = self._status_line(key, state)
            print(f"  gateway | {line}", file=out, flush=True)

    @staticmethod
    def _status_line(topic: str, d: Any) -> str:
        if not isinstance(d, dict):
            return ""
        if topic == "serial.status":
            if d.get("open"):
                return f"serial open port={d.get('port')}"
            if not d.get("error"):  # not open yet, and nothing failed
                return f"serial opening port={d.get('port')}"
            return f"serial CLOSED port={d.get('port')} reason={d.get('error')!r}"
        if d.get("up"):
            return f"HES link up {d.get('host')}:{d.get('port')}"
        if not d.get("last_error"):  # not up yet, and nothing failed
            return f"HES link connecting {d.get('host')}:{d.get('port')}"
        return f"HES link DOWN {d.get('host')}:{d.get('port')} reason={d.get('last_error')!r}"

    def poll_processes(self, out: Any) -> None:
        now = time.monotonic()
        if now < self.next_poll:
            return
        self.next_poll = now + STATE_POLL_S
        try:
            infos = self.server.supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error):
            return
        for info in infos:
            state = info["statename"]
            bad = state == "FATAL" or (state == "EXITED" and info.get("exitstatus") == 2)
            key = f"{info['group']}:{info['name']}"
            if not bad:
                if state == "RUNNING":
                    self.reported.pop(key, None)
                continue
            if self.reported.get(key) == info["stop"]:
                continue
            self.reported[key] = info["stop"]
            log = Path(info.get("stdout_logfile") or self.run_dir / "logs" / f"{info['name']}.log")
            why = info.get("spawnerr") or f"exit status {info.get('exitstatus')}"
            print(
                f"FATAL {key}: {state} ({why}); last lines of {log}:",
                file=out,
                flush=True,
            )
            for line in tail(log):
                print(f"    {line}", file=out, flush=True)

    def close(self) -> None:
        if self.sub is not None:
            self.sub.close(linger=0)
            self.ctx.term()


def run(
    *,
    config: Path,
    run_dir: Path,
    workers: int,
    sim: bool,
    quiet: bool,
    skip_check: bool = False,
    user: str = "",
) -> int:
    from common.checks import map_uart_port  # noqa: F401 - the same rule as the services
    from common.daemon import RunDirError, check_run_dir, compile_bytecode, private_umask

    private_umask()
    try:
        check_run_dir(run_dir)
    except RunDirError as exc:
        print(f"FATAL meterlink: {exc}", file=sys.stderr, flush=True)
        return 2
    (run_dir / "logs").mkdir(mode=0o700, exist_ok=True)
    cfg, errors = check_config(config, str(run_dir))
    if errors and not skip_check:
        print(f"FATAL meterlink: {config}: {len(errors)} problem(s); nothing started", flush=True)
        for err in errors:
            print(f"FATAL meterlink: {err}", flush=True)
        return 2
    if cfg is None:  # --skip-check with a bad file: the processes will say why
        from common.config import ConfigError, load

        try:
            cfg = load(config, run_directory=str(run_dir))
        except ConfigError:
            cfg = None
    mapped = cfg.get("_port_mapped") if cfg else None
    if mapped:
        print(
            f"meterlink: UART.port {mapped['number']} is the reference's UART number; "
            f"using {mapped['device']} (rule {mapped['rule']}; override with UART.port_map)",
            flush=True,
        )
    if os.geteuid() == 0 and not user:
        print(
            "meterlink: WARNING running as root; give --user NAME (or use `meterlink "
            "systemd-unit`, which runs as a dedicated user) so that no process runs as root",
            flush=True,
        )
        user = "root"  # said once here, instead of supervisord's CRIT at every start
    stack = conf.Stack(
        python=sys.executable,
        config=str(config),
        run_dir=str(run_dir),
        workers=workers,
        sim=sim,
        extensions=sorted(cfg["EXTENSIONS"]) if cfg else [],
        user=user,
    )
    conf_path = write_stack(stack)
    compile_bytecode(stack.root)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=stack.root)
    env["METERLINK_RUN_DIR"] = str(run_dir)
    env["METERLINK_CONFIG"] = str(config)
    print(
        f"meterlink: starting supervisord run_dir={run_dir} config={config} "
        f"workers={workers} simulators={'true' if sim else 'false'}",
        flush=True,
    )
    from supervisor.xmlrpc import SupervisorTransport  # noqa: F401 - not first in a handler

    proc: subprocess.Popen[bytes] | None = None
    stopping = False
    reload_asked = False

    def stop(*_: object) -> None:
        # Here, not in the loop: the loop may be waiting on supervisord.
        nonlocal stopping
        first, stopping = not stopping, True
        if proc is None:
            return
        if first:
            stop_stack(run_dir, proc)
        elif proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def hup(*_: object) -> None:
        nonlocal reload_asked
        reload_asked = True

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    signal.signal(signal.SIGHUP, hup)
    # supervisord in a process group of its own: a terminal's Ctrl-C reaches this
    # launcher alone, which stops every program at once (stop_stack). It writes
    # its log to the terminal from there: SIGTTOU ignored, so `stty tostop`
    # cannot stop it (the disposition is inherited across exec).
    ttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        proc = subprocess.Popen(
            [bin_path("supervisord"), "-c", str(conf_path)], env=env, process_group=0
        )
    finally:
        signal.signal(signal.SIGTTOU, ttou)
    watcher: Watcher | None = None
    try:
        if stopping:  # asked to stop while it was being started
            stop_stack(run_dir, proc)
        logs = run_dir / "logs"
        offsets: dict[str, int] = {}
        follow = FOLLOW if sim and not quiet else ()
        for name in follow:
            path = logs / f"{name}.log"
            offsets[name] = path.stat().st_size if path.exists() else 0
        while proc.poll() is None:
            if reload_asked:
                reload_asked = False
                try:
                    reload(run_dir)
                except (OSError, xmlrpc.client.Error) as exc:
                    print(f"meterlink: reload failed: {exc}", flush=True)
            if not stopping:
                for name in follow:
                    _follow(logs / f"{name}.log", name, offsets)
                if watcher is None and (run_dir / "supervisor.sock").exists():
                    watcher = Watcher(run_dir, cfg)
                if watcher is not None:
                    watcher.poll_processes(sys.stdout)
                    if not quiet:
                        watcher.poll_events(sys.stdout)
            try:
                proc.wait(TICK_S)
            except subprocess.TimeoutExpired:
                pass
    except BrokenPipeError:
        # Whoever read our output is gone (`run | head`): stop the stack without
        # a traceback, and without another at exit when Python flushes stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        if watcher is not None:
            watcher.close()
        if proc.poll() is None:
            # Leaving for any other reason (an error, a terminal gone): supervisord
            # no longer shares the terminal's signals, so stop it here.
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            if not stopping:
                stop_stack(run_dir, proc)
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                # Not killed: its programs (each in a group of its own) would
                # be left without it. It has its SIGTERM and goes on stopping.
                with contextlib.suppress(OSError):  # the output may be what failed
                    print(f"meterlink: supervisord (pid {proc.pid}) is still stopping", flush=True)
    return proc.returncode or 0


def stop_all_programs(run_dir: Path, pid: int | None = None) -> bool:
    """Ask supervisord to signal every program at once; False if it cannot.

    supervisord alone stops one process group per one-second tick, and every
    resolver worker is a group of its own (so that scaling never touches the
    others): its own shutdown takes a second per worker. It cannot take the
    call before its socket is up, nor once it is shutting down. With ``pid``,
    only the supervisord of that pid is asked (not another stack's that
    holds the socket).
    """
    import http.client
    from xml.parsers.expat import ExpatError

    if not (run_dir / "supervisor.sock").exists():
        return False
    try:
        server = rpc(run_dir, STOP_RPC_TIMEOUT_S)
        if pid is not None and server.supervisor.getPID() != pid:
            return False
        server.supervisor.stopAllProcesses(False)
    except (OSError, xmlrpc.client.Error, http.client.HTTPException, ExpatError):
        return False
    return True


def stop_stack(run_dir: Path, proc: subprocess.Popen[bytes]) -> None:
    """Stop every program at once (``stop_all_programs``), then supervisord,
    which exits once they have; if it cannot take the call, supervisord
    stops them itself, a group at a time."""
    if proc.poll() is None:
        stop_all_programs(run_dir, proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)


def _follow(path: Path, name: str, offsets: dict[str, int]) -> None:
    try:
        with path.open("rb") as fh:
            fh.seek(offsets[name])
            chunk = fh.read()
    except OSError:
        return
    if b"\n" in chunk:
        chunk = chunk[: chunk.rindex(b"\n") + 1]
        offsets[name] += len(chunk)
        for line in chunk.decode(errors="replace").splitlines():
            print(f"{name:>9} | {line}", flush=True)

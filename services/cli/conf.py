"""supervisord and systemd configuration, rendered from one description of the stack.

Three outputs from one function, so they cannot drift apart:

- the launcher's own file (``meterlink run`` writes ``<run_dir>/supervisord.conf``):
  a whole supervisord with its socket, logs and pid file in the run directory;
- ``meterlink supervisor-conf``: programs only, for a host supervisord's
  ``[include]``: names prefixed ``meterlink-``, absolute paths, one group, and
  no ``[supervisord]``, ``[unix_http_server]`` or ``[supervisorctl]`` section;
- the checkout's ``supervisord.conf``: the launcher's file with ``%(here)s``
  for every path, so plain ``supervisord -c supervisord.conf`` works with no
  environment set (a test checks it matches ``checkout_conf()``).

Failure policy, the same everywhere. A service exits with status 2 for what a
restart cannot fix (a config error, a lock held by another instance, a run
directory others can read; ``common.daemon``), anything else for a crash.
``exitcodes=2`` with ``autorestart=unexpected`` keeps a process that exits 2
after it counted as started from being restarted; ``startsecs=2`` with
``startretries=1`` makes one that exits in its first two seconds (where a
config check happens) FATAL after a single retry, within about 3 s, instead
of backing off for minutes. A crash later (status 1, a signal) is restarted
at once, as before.

Resolver workers are one program each (``resolver-0``, ``resolver-1``...),
each in a group of its own, so that ``meterlink scale N`` adds or removes
workers with supervisord's ``reloadConfig`` / ``addProcessGroup`` /
``removeProcessGroup`` and never touches another process.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUP = "meterlink"
PREFIX = "meterlink-"  # program names under a host supervisord
CORE = ("broker", "uart", "client", "watchdog")
SIMS = ("meter_sim", "hes_sim")
#: The simulator programs' modules (the program names stay as they were).
SIM_MODULES = {"meter_sim": "services.sim.meter", "hes_sim": "services.sim.hes"}
PRIORITY = {"meter_sim": 1, "hes_sim": 1, "broker": 10, "resolver": 20}
DEFAULT_PRIORITY = 30
EXT_PRIORITY = 40

#: The program settings every meterlink process gets (see the module docstring).
PROGRAM_COMMON = (
    ("startsecs", "2"),
    ("startretries", "1"),
    ("autorestart", "unexpected"),
    ("exitcodes", "2"),
    ("stopsignal", "TERM"),
    ("stopwaitsecs", "2"),
    ("stopasgroup", "true"),
    ("killasgroup", "true"),
    ("umask", "077"),
    ("redirect_stderr", "true"),
)


@dataclass
class Stack:
    """Where a stack lives and what it runs. Paths are written as given."""

    root: str = str(ROOT)
    python: str = ""
    config: str = ""
    run_dir: str = ""
    workers: int = 2
    sim: bool = False
    extensions: list[str] = field(default_factory=list)
    prefix: str = ""  # PREFIX under a host supervisord
    user: str = ""  # run programs as this user (supervisord must be root)
    #: Program output to supervisord's stdout instead of <run_dir>/logs (the
    #: checkout's file: supervisord cannot create the run directory itself).
    log_to_stdout: bool = False

    def name(self, program: str) -> str:
        return f"{self.prefix}{program}"


def worker_names(stack: Stack) -> list[str]:
    return [stack.name(f"resolver-{i}") for i in range(stack.workers)]


def _program(stack: Stack, program: str, module_args: list[str], priority: int) -> str:
    name = stack.name(program)
    env = ",".join(
        f'{k}="{v}"'
        for k, v in (
            ("METERLINK_CONFIG", stack.config),
            ("METERLINK_RUN_DIR", stack.run_dir),
            ("PYTHONPATH", stack.root),
            ("PYTHONUNBUFFERED", "1"),
        )
    )
    lines = [
        f"[program:{name}]",
        f"command={shlex.join([stack.python, '-m', *module_args])}",
        f"directory={stack.root}",
        f"priority={priority}",
        f"environment={env}",
    ]
    if stack.log_to_stdout:
        lines += ["stdout_logfile=/dev/stdout", "stdout_logfile_maxbytes=0"]
    else:
        lines += [
            f"stdout_logfile={stack.run_dir}/logs/{program}.log",
            "stdout_logfile_maxbytes=10MB",
            "stdout_logfile_backups=2",
        ]
    if stack.user:
        lines.append(f"user={stack.user}")
    lines.extend(f"{k}={v}" for k, v in PROGRAM_COMMON)
    return "\n".join(lines) + "\n"


def programs(stack: Stack) -> str:
    """Every program section, the meterlink group, one group per worker."""
    out: list[str] = []
    members: list[str] = []
    if stack.sim:
        for sim in SIMS:
            args = [SIM_MODULES[sim]] + (["--wait-reader", "30"] if sim == "meter_sim" else [])
            out.append(_program(stack, sim, args, PRIORITY[sim]))
            members.append(stack.name(sim))
    for prog in CORE:
        out.append(
            _program(stack, prog, [f"services.{prog}"], PRIORITY.get(prog, DEFAULT_PRIORITY))
        )
        members.append(stack.name(prog))
    for ext in stack.extensions:
        out.append(_program(stack, f"ext-{ext}", ["services.extension", ext], EXT_PRIORITY))
        members.append(stack.name(f"ext-{ext}"))
    out.append(f"[group:{GROUP}]\nprograms={','.join(members)}\n")
    for i in range(stack.workers):
        out.append(
            _program(
                stack,
                f"resolver-{i}",
                ["services.resolver", "--name", f"resolver-{i}"],
                PRIORITY["resolver"],
            )
        )
    return "\n".join(out)


def standalone(stack: Stack) -> str:
    """A whole supervisord for this stack, everything in the run directory."""
    rd = stack.run_dir
    head = f"""; meterlink under its own supervisord, written by `meterlink run`.
; Every process is started with the config and run directory below; `meterlink ctl`,
; `meterlink scale N` and `meterlink reload` talk to this supervisord.

[supervisord]
logfile={rd}/logs/supervisord.log
pidfile={rd}/supervisord.pid
childlogdir={rd}/logs
directory={stack.root}
nodaemon=true
loglevel=info
umask=077
logfile_maxbytes=10MB
logfile_backups=2
{"user=" + stack.user + chr(10) if stack.user else ""}
[unix_http_server]
file={rd}/supervisor.sock
chmod=0700

[supervisorctl]
serverurl=unix://{rd}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

"""
    return head + programs(stack)


def include(stack: Stack) -> str:
    """Programs only, for a host supervisord's ``[include]``."""
    head = f"""; meterlink programs for a host supervisord, written by `meterlink supervisor-conf`.
; Include this file from the host's supervisord.conf ([include] files = ...), then
; `supervisorctl reread && supervisorctl update`. Control: `supervisorctl status
; {GROUP}:*`, `supervisorctl restart {GROUP}:{PREFIX}uart`; workers are
; {", ".join(worker_names(stack))}. Run directory {stack.run_dir}, config {stack.config}.

"""
    return head + programs(stack)


def _checkout_head() -> str:
    return """; The checkout's supervisord.conf, generated by `meterlink supervisor-conf --checkout`
; (a test checks it matches). `supervisord -c supervisord.conf` runs the stack with the
; launcher's defaults and no environment: ./dev.json, ./run (each process creates it,
; 0700), two resolver workers, no simulators, .venv/bin/python (run `make` first).
; supervisord cannot create directories, so here everything logs to its stdout, and
; its socket and pid file sit beside this file. `meterlink run` is the friendlier
; way: it checks the config first, logs to run/logs, shows failures and state changes,
; and takes --config/--run-dir/--workers/--sim.

[supervisord]
logfile=/dev/stdout
logfile_maxbytes=0
pidfile=%(here)s/.supervisord.pid
directory=%(here)s
nodaemon=true
loglevel=info
umask=077

[unix_http_server]
file=%(here)s/.supervisor.sock
chmod=0700

[supervisorctl]
serverurl=unix://%(here)s/.supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

"""


def checkout_stack() -> Stack:
    """The checkout's own file: paths relative to it through ``%(here)s``."""
    return Stack(
        root="%(here)s",
        python="%(here)s/.venv/bin/python",
        config="%(here)s/dev.json",
        run_dir="%(here)s/run",
        workers=2,
        sim=False,
        log_to_stdout=True,
    )


def checkout_conf() -> str:
    return _checkout_head() + programs(checkout_stack())


def systemd_unit(
    *, exe: str, config: str, run_dir: str, user: str, workers: int, root: str = str(ROOT)
) -> str:
    """A unit that runs the whole stack as ``user`` (its own supervisord, no root)."""
    cmd = shlex.join(
        [exe, "run", "--quiet", "--config", config, "--run-dir", run_dir, "--workers", str(workers)]
    )
    state = run_dir.removeprefix("/var/lib/") if run_dir.startswith("/var/lib/") else ""
    lines = [
        "# meterlink: the smart-meter gateway, as a system service.",
        "# Install: meterlink systemd-unit > /etc/systemd/system/meterlink.service",
        "#          systemctl daemon-reload && systemctl enable --now meterlink",
        "# Reload the config (SIGHUP to every service): systemctl reload meterlink",
        "[Unit]",
        "Description=meterlink smart-meter gateway",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"User={user}",
        f"Group={user}",
        "SupplementaryGroups=dialout",
        f"WorkingDirectory={root}",
        "UMask=0077",
        f"ExecStart={cmd}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        "TimeoutStopSec=15",
        "Restart=on-failure",
        "RestartSec=5",
        # Exit 2 is a config error: do not loop on it.
        "RestartPreventExitStatus=2",
    ]
    if state:
        lines += [f"StateDirectory={state}", "StateDirectoryMode=0700"]
    lines += [
        "ConfigurationDirectory=meterlink",
        "# true unless a recovery command uses sudo (see the README)",
        "NoNewPrivileges=true",
        "ProtectSystem=full",
        "PrivateTmp=true",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"

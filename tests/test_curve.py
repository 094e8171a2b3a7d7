"""CURVE on the bus: keys, a stack on tcp with a worker configured as a remote
one, a worker with a key the broker does not know, a plain peer, and the
refusal to bind beyond loopback without CURVE.

Real processes over real TCP on 127.0.0.1 (free consecutive ports), a meter
on a pseudo-terminal and an HES on a TCP port.
"""

from __future__ import annotations

import json
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import zmq

from common import bus
from tests.conftest import ROOT, Stack, base_config, wait_for
from tests.test_e2e import Hes, Meter, transparent

BUS_PORTS = 7  # 4 fixed endpoints + uart, client, watchdog inboxes


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free TCP ports on 127.0.0.1."""
    for base in range(30000 + (time.time_ns() // 1000) % 20000, 60000, n):
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port range")


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_non_loopback_bind_without_curve_refuses_to_start(stack, run_dir):
    stack.write_config(base_config(run_dir, BUS={"transport": "tcp", "host": "0.0.0.0"}))
    broker = stack.start("services.broker")
    assert broker.popen.wait(20) == 2
    text = broker.text()
    assert "FATAL meterlink: broker: config key BUS.host: 0.0.0.0 is not a loopback" in text
    assert "BUS.curve.enabled is false" in text
    out = cli(stack, "check", str(stack.config_path))
    assert out.returncode == 2 and "BUS.host" in out.stdout
    # Loopback without CURVE is allowed, and so is any address with it.
    stack.write_config(
        base_config(
            run_dir, BUS={"transport": "tcp", "host": "0.0.0.0", "curve": {"enabled": True}}
        )
    )
    assert cli(stack, "check", str(stack.config_path)).returncode == 0


def test_keys_are_private_and_only_participants_are_allowed(stack, run_dir):
    out = cli(stack, "keys")
    assert out.returncode == 0, out.stderr
    d = run_dir / "keys"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in ("broker", "uart", "client", "watchdog", "resolver", "tools"):
        for suffix in (".key", ".key_secret"):
            assert stat.S_IMODE((d / f"{name}{suffix}").stat().st_mode) == 0o600
    allowed = sorted(p.name for p in (d / "allowed").iterdir())
    assert allowed == ["client.key", "resolver.key", "tools.key", "uart.key", "watchdog.key"]
    before = (d / "uart.key_secret").read_text()
    assert "kept" in cli(stack, "keys").stdout
    assert (d / "uart.key_secret").read_text() == before
    remote = run_dir / "remote"
    out = cli(stack, "keys", "--only", "resolver", "--dir", str(remote))
    assert out.returncode == 0
    assert sorted(p.name for p in remote.iterdir()) == [
        "allowed",
        "resolver.key",
        "resolver.key_secret",
    ]
    assert cli(stack, "keys", "--only", "../x", "--dir", str(remote)).returncode == 2


def _remote_worker(
    stack: Stack, run_dir: Path, name: str, allowed: bool, homes: list[Path]
) -> object:
    """A worker with its own run directory and keys: the broker's public key
    and its own pair, nothing else (as on another machine)."""
    home = Path(str(run_dir) + f"-{name}")
    home.mkdir(mode=0o700)
    keys_dir = home / "keys"
    out = cli(stack, "keys", "--only", "resolver", "--dir", str(keys_dir))
    assert out.returncode == 0, out.stderr
    shutil.rmtree(keys_dir / "allowed")
    shutil.copyfile(run_dir / "keys" / "broker.key", keys_dir / "broker.key")
    if allowed:
        shutil.copyfile(keys_dir / "resolver.key", run_dir / "keys" / "allowed" / f"{name}.key")
    cfg = json.loads(stack.config_path.read_text())
    cfg["BUS"]["curve"]["keys_dir"] = str(keys_dir)
    cfg_path = home / "remote.json"
    cfg_path.write_text(json.dumps(cfg))
    homes.append(home)
    return stack.start(
        "services.resolver",
        name=name,
        METERLINK_RUN_DIR=str(home),
        METERLINK_CONFIG=str(cfg_path),
    )


def test_curve_stack_on_tcp_with_a_remote_worker_refuses_a_stranger(stack, run_dir):
    homes: list[Path] = []
    hes = Hes()
    meter = Meter(run_dir / "meter.tty")
    try:
        _scenario(stack, run_dir, hes, meter, homes)
    finally:
        meter.close()
        hes.close()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


def _scenario(stack: Stack, run_dir: Path, hes: Hes, meter: Meter, homes: list[Path]) -> None:
    base = free_ports(BUS_PORTS)
    cfg = base_config(
        run_dir,
        TCP_SERVER={"port": hes.port, "reconnect_min_s": 0.1, "reconnect_max_s": 1},
        BUS={
            "transport": "tcp",
            "host": "127.0.0.1",
            "base_port": base,
            "curve": {"enabled": True},
        },
    )
    stack.write_config(cfg)
    assert cli(stack, "keys").returncode == 0
    broker = stack.start("services.broker")
    broker.wait_log("broker started")
    stack.start("services.uart")
    stack.start("services.client")
    worker = _remote_worker(stack, run_dir, "far", True, homes)
    broker.wait_log("worker up ident=resolver-", timeout=20)
    hes.wait_connections(1, 20)

    payloads = [f"curve-{i:03d}|".encode() for i in range(20)]
    for p in payloads:
        meter.send(transparent(p))
    want = b"".join(payloads)
    assert hes.wait_bytes(len(want))[: len(want)] == want

    # A worker whose key the broker does not know: refused, counted, gets nothing.
    stranger = _remote_worker(stack, run_dir, "stranger", False, homes)
    broker.wait_log("bus peer refused reason=unknown_key", timeout=20)
    more = [f"more-{i:03d}|".encode() for i in range(20)]
    for p in more:
        meter.send(transparent(p))
    assert hes.wait_bytes(len(want) + len(b"".join(more)))[len(want) :] == b"".join(more)
    out = wait_for(lambda: _status(stack, lambda s: s["counters"].get("broker.auth.refused")), 20)
    assert out["counters"]["broker.auth.refused"] >= 1
    assert stranger.alive() and worker.alive()
    assert "worker up" not in stranger.text()
    reg = _status(stack, lambda s: True, whole=True)[bus.T_REGISTRY]
    assert reg["broker"]["pool"]["workers"] == 1

    # A peer without CURVE gets nothing out of the bus and puts nothing in.
    ctx = zmq.Context()
    try:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(bus.endpoint(cfg["BUS"], str(run_dir), bus.EVENTS_OUT))
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(bus.endpoint(cfg["BUS"], str(run_dir), bus.BROKER_IN))
        forged = bus.encode(bus.Envelope("x", 1, 0, 0.0, bus.OP_SEND, [b"FORGED"]))
        if push.poll(2000, zmq.POLLOUT):  # never writable without a handshake
            push.send_multipart([b"client", forged], flags=zmq.NOBLOCK)
        # The registry is published every second: 3 s of silence is a refusal.
        assert sub.poll(3000) == 0
        assert b"FORGED" not in hes.data()
    finally:
        ctx.destroy(linger=0)


def _status(stack: Stack, pred, whole: bool = False):
    out = cli(stack, "status", "--json")
    if out.returncode != 0:
        return None
    doc = json.loads(out.stdout)
    return (doc if whole else doc["summary"]) if pred(doc["summary"]) else None


def test_the_allowlist_skips_a_bad_key_file_and_revokes_a_removed_key(tmp_path):
    """A half-copied key must not shut everybody out (an exception would end
    pyzmq's ZAP thread), and removing a key refuses it from then on."""
    import os

    import zmq.auth

    from common.buskeys import Allowlist

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    pub_file, _ = zmq.auth.create_certificates(str(tmp_path), "worker")
    public, _ = zmq.auth.load_certificate(pub_file)
    os.replace(pub_file, allowed / "worker.key")
    allow = Allowlist(allowed)
    assert allow.callback("*", public)
    (allowed / "broken.key").write_text("")  # a failed copy
    assert not allow.callback("*", b"x" * 40)  # refused, no exception
    assert allow.bad_files == 1
    assert allow.callback("*", public)  # the others still get in
    (allowed / "worker.key").unlink()
    assert not allow.callback("*", public)

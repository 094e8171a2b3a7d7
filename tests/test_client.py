"""The HES client as a real process, against the real broker and a real TCP server.

The test plays the resolver (``probe.send("client", "send", [...], src="resolver")``),
the uart (``probe.inbox("uart")``) and the HES (``FakeHES`` on 127.0.0.1, behind a
``Relay`` where a test must see exactly what the client's TCP peer acknowledged).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from common import bus, rfc1662
from common.config import ConfigError, validate
from common.dlms import wrapper
from services.client import DIRECT_MAX_BYTES, SNDBUF_BYTES, AckMeter, Target
from services.sim.fake_hes import FakeHES, Relay, Stalled, free_port, peek_all
from tests.conftest import Probe, Stack, base_config, wait_for

FAST = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.3, "timeout": 1, "keep_alive": 5}


def start_client(stack: Stack, run_dir: Path, port: int, broker: bool = True, **tcp: Any):
    tcp_cfg = {**FAST, "port": port, **tcp}
    stack.write_config(base_config(run_dir, TCP_SERVER=tcp_cfg))
    if broker:
        stack.start("services.broker")
    return stack.start("services.client")


def payloads(rng: random.Random, n: int, tag: bytes) -> list[bytes]:
    return [tag + b"%05d:" % i + rng.randbytes(rng.randint(0, 300)) for i in range(n)]


def send_in_batches(probe: Probe, items: list[bytes], rng: random.Random) -> None:
    i = 0
    while i < len(items):
        n = rng.randint(1, 8)
        probe.send(bus.CLIENT, bus.OP_SEND, items[i : i + n], src="resolver")
        i += n


def link_status(probe: Probe, sub, pred, timeout: float = 10.0) -> dict[str, Any]:
    return probe.wait_event(sub, bus.T_LINK_STATUS, pred, timeout)


def client_counters(probe: Probe, sub, pred) -> dict[str, int]:
    """The client's counters from the first registry update ``pred`` accepts."""

    def match(d: dict[str, Any]) -> bool:
        return any(s["name"] == "client" and pred(s["counters"]) for s in d["services"])

    reg = probe.wait_event(sub, bus.T_REGISTRY, match, timeout=10)
    return next(s for s in reg["services"] if s["name"] == "client")["counters"]


def wait_bytes(hes: FakeHES, want: bytes, timeout: float = 15.0, index: int | None = None) -> None:
    def got() -> bytes:
        return hes.data() if index is None else hes.received(index)

    wait_for(lambda: len(got()) >= len(want), timeout, f"{len(want)} bytes at the HES")
    assert got() == want


def test_uplink_payloads_arrive_byte_exact_and_in_order(stack, run_dir, probe):
    hes = FakeHES().start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS, bus.T_REGISTRY)
        start_client(stack, run_dir, hes.port)
        status = link_status(probe, sub, lambda d: d["up"])
        assert (status["host"], status["port"], status["tls"]) == ("127.0.0.1", hes.port, False)
        probe.send(bus.CLIENT, bus.OP_SEND, [b"first", b"second"], src="resolver")
        wait_bytes(hes, b"firstsecond")
        counters = client_counters(probe, sub, lambda c: c.get("uplink.payloads") == 2)
        assert counters.get("spool.appended", 0) == 0  # link up, spool empty: direct
        rng = random.Random(1)
        items = payloads(rng, 2000, b"U")
        # One large payload, every byte value; more than may go direct.
        items.append(bytes(range(256)) * (DIRECT_MAX_BYTES // 256 + 1))
        send_in_batches(probe, items, rng)
        wait_bytes(hes, b"firstsecond" + b"".join(items))
        assert hes.connections == 1

        # The registry shows the client's counters (from its heartbeat).
        def client_entry(d: dict[str, Any]) -> bool:
            for s in d["services"]:
                if s["name"] == "client" and s["counters"].get("uplink.payloads") == len(items) + 2:
                    return True
            return False

        reg = probe.wait_event(sub, bus.T_REGISTRY, client_entry, timeout=10)
        entry = next(s for s in reg["services"] if s["name"] == "client")
        assert entry["link"]["up"] is True
        assert entry["link"]["spool_depth"] == 0
        assert entry["counters"]["uplink.bytes"] == sum(map(len, items)) + 11
        assert entry["counters"]["spool.appended"] >= 1  # the large one
    finally:
        hes.stop()


# -- nothing lost when the link dies with data in flight ---------------------------------

IN_FLIGHT_ITEMS = 3000  # 1 KiB each: far more than the TCP buffers on either side hold
PEER_RCVBUF = 16384  # the receiving side's window stays small


def highest_ack(acks: Any, inst: int, timeout: float) -> int:
    """The highest unit of uart instance ``inst`` the client acknowledged on the
    ``acks`` inbox within ``timeout`` seconds (-1: none)."""
    top, deadline = -1, time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if acks.poll(int(left * 1000) + 1):
            env = bus.decode(acks.recv_multipart()[-1])
            if env.op == bus.OP_ACK and env.data[0] == inst:
                top = max(top, env.data[1])
    return top


def kib_items(rng: random.Random, n: int) -> list[bytes]:
    return [b"P%06d:" % i + rng.randbytes(1016) for i in range(n)]


def resent_tail(before: bytes, after: bytes, items: list[bytes]) -> tuple[int, int]:
    """Check at-least-once, in order, across a reset; return (first resent, duplicates).

    ``before`` (what reached the HES on the old connection) must be a prefix of
    the stream; ``after`` (the new connection) must be ``items[j:]`` for a
    ``j`` no later than the first payload ``before`` did not hold whole.
    """
    stream = b"".join(items)
    assert stream.startswith(before), "the old connection got bytes out of order"
    whole = len(before) // len(items[0])  # payloads that arrived whole before the reset
    assert after[:1] == b"P", after[:16]
    j = int(after[1:7])
    assert after == b"".join(items[j:]), "the new connection is not an ordered tail"
    assert j <= whole, f"P{whole:06d}..P{j - 1:06d} never reached the HES"
    return j, whole - j


def test_hes_reset_with_data_in_flight_loses_nothing(stack, run_dir, probe):
    # The HES stops reading, the client fills its socket buffers (and more),
    # then the HES resets the connection. What the HES's TCP stack had
    # acknowledged counts as received (FakeHES.reset peeks it); everything
    # else must come again, in order, on the next connection.
    hes = FakeHES(rcvbuf=PEER_RCVBUF).start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS, bus.T_REGISTRY)
        start_client(stack, run_dir, hes.port)
        link_status(probe, sub, lambda d: d["up"])
        hes.wait_connections(1)
        hes.pause()
        items = kib_items(random.Random(11), IN_FLIGHT_ITEMS)
        for i in range(0, len(items), 10):
            probe.send(bus.CLIENT, bus.OP_SEND, items[i : i + 10], src="resolver")
        wait_for(Stalled(lambda: hes.inq(0)), 15, "the HES's window to shut")
        hes.reset()
        hes.resume()
        wait_for(
            lambda: hes.connections >= 2 and hes.received(1).endswith(items[-1]),
            30,
            "the last payload on the new connection",
        )
        j, dup = resent_tail(hes.received(0), hes.received(1), items)
        assert j < len(items)
        counters = client_counters(probe, sub, lambda c: c.get("uplink.payloads", 0) >= len(items))
        # Some payloads were written to the socket but not acknowledged: sent again.
        assert counters["uplink.unacked_resent"] > 0
        assert counters["uplink.payloads"] == len(items)  # each acknowledged once
        link_status(probe, sub, lambda d: d["up"] and d["spool_depth"] == 0)
    finally:
        hes.stop()


def test_sigterm_spools_direct_payloads_not_yet_acknowledged(stack, run_dir, probe):
    # Direct payloads (never spooled) written to a stalled HES and not
    # acknowledged go to the spool when the client stops; the HES then resets
    # the old connection, and the restarted client sends them again.
    hes = FakeHES().start()
    relay = Relay(hes.port, rcvbuf=PEER_RCVBUF).start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS)
        client = start_client(stack, run_dir, relay.port)
        link_status(probe, sub, lambda d: d["up"])
        hes.wait_connections(1)
        relay.pause()
        items = kib_items(random.Random(13), 200)  # the first ones go direct, then the spool
        for i in range(0, len(items), 4):
            probe.send(bus.CLIENT, bus.OP_SEND, items[i : i + 4], src="resolver")
        wait_for(Stalled(lambda: relay.inq(0)), 15, "the relay's window to shut")
        client.popen.send_signal(signal.SIGTERM)
        assert client.popen.wait(5) == 0
        relay.reset()
        relay.resume()
        wait_for(lambda: not hes.is_open(0), 10, "the HES to read the old connection out")
        again = stack.start("services.client")
        wait_for(
            lambda: hes.connections >= 2 and hes.received(1).endswith(items[-1]),
            20,
            "the last payload on the new connection",
        )
        resent_tail(hes.received(0), hes.received(1), items)
        # Unacknowledged payloads were in the spool when it stopped: the direct
        # ones moved there with the first spool write, or at the stop.
        depth = re.search(r"client starting .* spool_depth=(\d+)", again.text())
        assert depth and int(depth.group(1)) > 0, again.text()
    finally:
        relay.stop()
        hes.stop()


def test_downlink_becomes_transparent_frames_split_at_max_info(stack, run_dir, probe):
    hes = FakeHES().start()
    try:
        uart = probe.inbox("uart")
        sub = probe.subscriber(bus.T_LINK_STATUS)
        stack.write_config(
            base_config(run_dir, TCP_SERVER={**FAST, "port": hes.port}, UART={"max_info": 100})
        )
        stack.start("services.broker")
        stack.start("services.client")
        link_status(probe, sub, lambda d: d["up"])
        hes.wait_connections(1)
        data = random.Random(2).randbytes(1000) + b"\x7e\x7d tail"
        hes.send(data)
        infos: list[bytes] = []
        frames = 0
        deadline = time.monotonic() + 10
        while sum(map(len, infos)) < len(data):
            assert time.monotonic() < deadline, f"only {sum(map(len, infos))} bytes arrived"
            env = probe.recv_env(uart, timeout=max(0.1, deadline - time.monotonic()))
            assert env.op == bus.OP_WRITE and env.src == "client" and env.ref is not None
            # Acknowledged as the uart would, so a slow run never sees a resend.
            probe.send(bus.CLIENT, bus.OP_ACK, [env.ref.inst, env.ref.n], src="uart")
            for raw in env.data:
                frame = rfc1662.decode(raw, max_info=100)
                assert frame.protocol == rfc1662.PROTO_TRANSPARENT
                assert frame.cmd == rfc1662.CMD_SERIAL_NET
                assert 1 <= len(frame.info) <= 100
                infos.append(frame.info)
                frames += 1
        assert b"".join(infos) == data
        assert frames >= -(-len(data) // 100)
    finally:
        hes.stop()


def test_hes_outage_spools_then_everything_arrives_in_order(stack, run_dir, probe):
    hes = FakeHES().start()
    try:
        sub = probe.subscriber("link.")
        start_client(stack, run_dir, hes.port)
        # link.status is replayed to a new subscriber, link.up is not: once a
        # status arrives the subscription is live and no later event is missed.
        link_status(probe, sub, lambda d: d["up"])
        rng = random.Random(3)
        before, during, after = (payloads(rng, 300, tag) for tag in (b"A", b"B", b"C"))
        send_in_batches(probe, before, rng)
        wait_bytes(hes, b"".join(before), index=0)

        hes.stop()  # the HES vanishes: not even listening
        down = probe.wait_event(sub, bus.T_LINK_DOWN)
        assert down["port"] == hes.port and down["reason"]
        send_in_batches(probe, during, rng)
        link_status(probe, sub, lambda d: not d["up"] and d["spool_depth"] == len(during))

        hes.start()  # back on the same port
        probe.wait_event(sub, bus.T_LINK_UP)
        send_in_batches(probe, after, rng)  # while the spool may still be draining
        wait_bytes(hes, b"".join(during + after), index=1)
        assert hes.data() == b"".join(before + during + after)
        link_status(probe, sub, lambda d: d["up"] and d["spool_depth"] == 0)
    finally:
        hes.stop()


def test_slow_hes_overflows_into_spool_while_up_and_order_holds(stack, run_dir, probe):
    hes = FakeHES(rcvbuf=4096).start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS)
        start_client(stack, run_dir, hes.port)
        link_status(probe, sub, lambda d: d["up"])
        hes.pause()
        rng = random.Random(7)
        items = [b"S%05d:" % i + rng.randbytes(8192) for i in range(1000)]  # ~8 MB
        send_in_batches(probe, items[:600], rng)
        # The HES reads nothing: in-flight data hits its bound and the rest is
        # spooled although the link is up.
        link_status(probe, sub, lambda d: d["up"] and d["spool_depth"] > 0, timeout=20)
        hes.resume()
        send_in_batches(probe, items[600:], rng)
        wait_bytes(hes, b"".join(items), timeout=30)
        link_status(probe, sub, lambda d: d["spool_depth"] == 0)
    finally:
        hes.stop()


def test_spool_survives_client_sigkill_and_drains_after_restart(stack, run_dir, probe):
    port = free_port()  # nobody listens yet
    sub = probe.subscriber(bus.T_LINK_STATUS)
    client = start_client(stack, run_dir, port)
    rng = random.Random(4)
    items = payloads(rng, 500, b"K")
    send_in_batches(probe, items, rng)
    link_status(probe, sub, lambda d: d["spool_depth"] == len(items))
    client.kill(signal.SIGKILL)

    hes = FakeHES(port)
    try:
        restarted = stack.start("services.client")
        restarted.wait_log(f"spool_depth={len(items)}")  # found the spool on disk
        hes.start()
        wait_bytes(hes, b"".join(items))
        link_status(probe, sub, lambda d: d["up"] and d["spool_depth"] == 0)
    finally:
        hes.stop()


def test_spool_bound_drops_oldest_counted_and_logged(stack, run_dir, probe):
    port = free_port()
    sub = probe.subscriber(bus.T_LINK_STATUS)
    client = start_client(stack, run_dir, port, spool={"max_bytes": 1024})
    items = [b"%03d" % i + b"." * 97 for i in range(25)]  # 100 bytes each, 2500 in all
    for item in items:
        probe.send(bus.CLIENT, bus.OP_SEND, [item], src="resolver")
    link_status(probe, sub, lambda d: d["spool_depth"] == 10 and d["spool_bytes"] == 1000)
    client.wait_log("spool dropped reason=size")
    hes = FakeHES(port).start()
    try:
        wait_bytes(hes, b"".join(items[15:]))  # the newest ten survive
    finally:
        hes.stop()


def test_registration_on_every_connect_and_heartbeats(stack, run_dir, probe):
    hes = FakeHES().start()
    try:
        sub = probe.subscriber("link.")
        start_client(
            stack,
            run_dir,
            hes.port,
            registration={"payload": "REG {device_name} {meter_sn}\r\n", "format": "text"},
            heartbeat={"interval_s": 0.1, "payload": "48 42 0a", "format": "hex"},
        )
        link_status(probe, sub, lambda d: d["up"])  # subscription live: see the outage test
        reg = b"REG gw-test SN-TEST-1\r\n"
        wait_for(lambda: hes.connections and hes.received(0).count(b"HB\n") >= 3, 10, "3 HBs")
        first = hes.received(0)
        assert first.startswith(reg)
        assert first[len(reg) :].replace(b"HB\n", b"") == b""

        hes.drop()  # the HES hangs up: the client reconnects and registers again
        probe.wait_event(sub, bus.T_LINK_DOWN)
        probe.wait_event(sub, bus.T_LINK_UP)
        probe.send(bus.CLIENT, bus.OP_SEND, [b"<data>"], src="resolver")
        wait_for(lambda: hes.connections >= 2 and b"<data>" in hes.received(1), 10, "data")
        assert hes.received(1).startswith(reg)
    finally:
        hes.stop()


def target(run_dir: Path, **tcp: Any) -> Target:
    return Target.from_config(validate(base_config(run_dir, TCP_SERVER=tcp)))


def test_packets_render_from_hex_and_text_templates(tmp_path):
    t = target(
        tmp_path,
        registration={"payload": "{device_name}|{meter_sn:>12}|{hes_port}\n", "format": "text"},
        heartbeat={"interval_s": 30, "payload": "00 01 fe FF", "format": "hex"},
    )
    assert t.registration == b"gw-test|   SN-TEST-1|9\n"
    assert (t.heartbeat, t.heartbeat_interval) == (b"\x00\x01\xfe\xff", 30)
    assert target(tmp_path).registration == b"" and target(tmp_path).heartbeat == b""


@pytest.mark.parametrize(
    ("tcp", "message"),
    [
        ({"registration": {"payload": "REG {imei}", "format": "text"}}, "{imei}"),
        ({"registration": {"payload": "{device_name.upper}", "format": "text"}}, "unknown"),
        ({"registration": {"payload": "REG {", "format": "text"}}, "bad template"),
        ({"registration": {"payload": "0g", "format": "hex"}}, "not hex"),
        ({"heartbeat": {"interval_s": 5, "payload": ""}}, "heartbeat.payload: empty"),
        ({"reconnect_min_s": 5, "reconnect_max_s": 1}, "reconnect_max_s"),
        ({"tls": {"enabled": True, "ca": "/nonexistent/ca.pem"}}, "TCP_SERVER.tls.ca"),
        ({"tls": {"enabled": True, "key": "/nonexistent/k.pem"}}, "TCP_SERVER.tls.key"),
    ],
)
def test_bad_client_settings_are_config_errors_naming_the_key(tmp_path, tcp, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        target(tmp_path, **tcp)
    assert "config key TCP_SERVER." in str(info.value)


def test_backoff_doubles_with_jitter_between_min_and_cap(tmp_path):
    t = target(tmp_path, reconnect_min_s=0.5, reconnect_max_s=8)
    for attempt in range(12):
        cap = min(8, 0.5 * 2**attempt)
        delays = [t.backoff(attempt) for _ in range(200)]
        assert all(max(0.5, cap / 2) <= d <= cap for d in delays)
    assert len({round(t.backoff(6), 6) for _ in range(20)}) > 1  # jittered
    assert t.backoff(10_000) <= 8


def test_unknown_template_name_is_a_config_error_naming_the_key(stack, run_dir):
    client = start_client(
        stack,
        run_dir,
        9,
        broker=False,
        registration={"payload": "REG {imei}", "format": "text"},
    )
    assert client.popen.wait(10) == 2
    text = client.text()
    assert "TCP_SERVER.registration.payload" in text and "{imei}" in text


def test_sigterm_exits_within_a_second(stack, run_dir, probe):
    hes = FakeHES().start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS)
        client = start_client(stack, run_dir, hes.port)
        link_status(probe, sub, lambda d: d["up"])
        t0 = time.monotonic()
        client.popen.send_signal(signal.SIGTERM)
        assert client.popen.wait(5) == 0
        assert time.monotonic() - t0 < 1.0
    finally:
        hes.stop()


def test_keep_alive_is_set_on_the_connection(stack, run_dir, probe):
    if shutil.which("ss") is None:
        pytest.skip("the ss command is not installed; cannot read socket timers")
    hes = FakeHES().start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS)
        start_client(stack, run_dir, hes.port, keep_alive=7)
        link_status(probe, sub, lambda d: d["up"])

        def timer() -> str:
            out = subprocess.run(
                ["ss", "-tno", "state", "established", f"dport = :{hes.port}"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            return out if "keepalive" in out else ""

        out = wait_for(timer, 5, "a keepalive timer on the client socket")
        # e.g. "timer:(keepalive,6.9sec,0)": at most keep_alive seconds away,
        # where the system default idle time would be 7200 s.
        m = re.search(r"keepalive,([\d.]+)(ms|sec|min)", out)
        assert m, out
        seconds = float(m[1]) * {"ms": 0.001, "sec": 1, "min": 60}[m[2]]
        assert 0 < seconds <= 7, out
    finally:
        hes.stop()


# -- TLS ---------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN={name}", cwd=d,
    )  # fmt: skip


def _make_cert(d: Path, name: str, ca: str, san: str, usage: str) -> None:
    (d / f"{name}.ext").write_text(
        f"subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Made with the openssl command: the cryptography package is not a
    # dependency of this project.
    if shutil.which("openssl") is None:
        pytest.skip("TLS tests need the openssl command to make their CA and certificates")
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _make_cert(d, "server", "ca", "DNS:localhost,IP:127.0.0.1", "serverAuth")
    _make_cert(d, "gateway", "ca", "DNS:gateway", "clientAuth")
    return d


def _server_ctx(pki: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    ctx.load_verify_locations(pki / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED  # the gateway must show its own certificate
    return ctx


def _client_ctx(pki: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki / "ca.pem")
    ctx.load_cert_chain(pki / "gateway.pem", pki / "gateway.key")
    return ctx


def _tcp_pair(pki: Path | None) -> list[socket.socket]:
    """[client, server, ...] over 127.0.0.1, TLS if ``pki``; the server's window is small.

    The server socket is plain TCP even with TLS (a second descriptor of the
    TLS connection, whose TLS end is kept last in the list): the ACK tests
    read raw bytes only.
    """
    with socket.socket() as lst:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PEER_RCVBUF)
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF_BYTES)  # as the client
        client.settimeout(5)
        client.connect(lst.getsockname())
        server, _ = lst.accept()
    if pki is None:
        client.setblocking(False)
        return [client, server]
    done: list[ssl.SSLSocket] = []
    t = threading.Thread(
        target=lambda: done.append(_server_ctx(pki).wrap_socket(server, server_side=True))
    )
    t.start()
    tls = _client_ctx(pki).wrap_socket(client, server_hostname="localhost")
    t.join(5)
    tls.setblocking(False)
    return [tls, socket.socket(fileno=os.dup(done[0].fileno())), done[0]]


@pytest.mark.parametrize("mode", ["plain", "tls", "tls-drain"])
def test_ack_meter_confirms_what_the_peer_acknowledged_and_in_the_end_all(mode, request):
    pki = request.getfixturevalue("pki") if mode != "plain" else None
    socks = _tcp_pair(pki)
    client, server = socks[:2]
    try:
        meter = AckMeter(client, tcp_info=mode != "tls-drain")
        assert meter.mode == mode
        item = b"A" * 1024
        marks: list[int] = []
        while True:  # the peer reads nothing: write until the socket is full
            try:
                n = client.send(item)
            except (BlockingIOError, ssl.SSLWantWriteError):
                break
            assert n == len(item)
            meter.wrote(n)
            marks.append(meter.mark())
        assert marks == sorted(marks) and len(marks) > 10
        confirmed = sum(1 for m in marks if m <= meter.acked())
        assert confirmed < len(marks)  # the rest waits in the client's send queue
        if mode == "plain":
            # Everything confirmed is in the peer's receive queue.
            assert confirmed * len(item) <= len(peek_all(server))

        def drained() -> bool:
            try:
                while server.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
            return meter.acked() >= marks[-1]

        server.setblocking(False)
        wait_for(drained, 10, "every write to be acknowledged once the peer reads")
    finally:
        for sock in socks:
            sock.close()


def test_tls_with_client_certificate_connects_and_carries_data(stack, run_dir, probe, pki):
    hes = FakeHES(tls=_server_ctx(pki)).start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS)
        uart = probe.inbox("uart")
        tls = {
            "enabled": True,
            "ca": str(pki / "ca.pem"),
            "cert": str(pki / "gateway.pem"),
            "key": str(pki / "gateway.key"),
            "server_hostname": "localhost",
        }
        start_client(stack, run_dir, hes.port, tls=tls)
        status = link_status(probe, sub, lambda d: d["up"])
        assert status["tls"] is True
        items = payloads(random.Random(5), 200, b"T")
        send_in_batches(probe, items, random.Random(6))
        wait_bytes(hes, b"".join(items))
        hes.send(b"downlink over tls")
        env = probe.recv_env(uart, timeout=10)
        assert b"".join(rfc1662.decode(f).info for f in env.data) == b"downlink over tls"
        assert hes.tls_failures == 0
    finally:
        hes.stop()


def test_tls_reset_with_data_in_flight_loses_nothing(stack, run_dir, probe, pki):
    # As the plain test above, through a relay: the TLS bytes the relay's TCP
    # stack acknowledged reach the HES, which decrypts them; the client must
    # send everything else again.
    hes = FakeHES(tls=_server_ctx(pki)).start()
    relay = Relay(hes.port, rcvbuf=PEER_RCVBUF).start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS)
        tls = {
            "enabled": True,
            "ca": str(pki / "ca.pem"),
            "cert": str(pki / "gateway.pem"),
            "key": str(pki / "gateway.key"),
            "server_hostname": "localhost",
        }
        start_client(stack, run_dir, relay.port, tls=tls)
        link_status(probe, sub, lambda d: d["up"])
        hes.wait_connections(1)
        relay.pause()
        items = kib_items(random.Random(12), IN_FLIGHT_ITEMS)
        for i in range(0, len(items), 10):
            probe.send(bus.CLIENT, bus.OP_SEND, items[i : i + 10], src="resolver")
        wait_for(Stalled(lambda: relay.inq(0)), 15, "the relay's window to shut")
        relay.reset()
        relay.resume()
        wait_for(lambda: not hes.is_open(0), 10, "the HES to read the old connection out")
        wait_for(
            lambda: hes.connections >= 2 and hes.received(1).endswith(items[-1]),
            30,
            "the last payload on the new connection",
        )
        j, _ = resent_tail(hes.received(0), hes.received(1), items)
        assert j < len(items)
        link_status(probe, sub, lambda d: d["up"] and d["spool_depth"] == 0)
    finally:
        relay.stop()
        hes.stop()


def test_tls_server_from_another_ca_is_rejected_and_retried(stack, run_dir, probe, pki):
    hes = FakeHES(tls=_server_ctx(pki)).start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS)
        tls = {
            "enabled": True,
            "ca": str(pki / "other-ca.pem"),
            "cert": str(pki / "gateway.pem"),
            "key": str(pki / "gateway.key"),
        }
        client = start_client(stack, run_dir, hes.port, tls=tls)
        probe.send(bus.CLIENT, bus.OP_SEND, [b"must not leak"], src="resolver")
        # Rejected, then retried with backoff: the HES sees several failed handshakes.
        wait_for(lambda: hes.tls_failures >= 2, 10, "two failed TLS handshakes")
        client.wait_log("reason=tls: certificate verify failed")
        status = link_status(probe, sub, lambda d: d["spool_depth"] == 1)
        assert status["up"] is False
        assert "certificate verify failed" in status["last_error"]
        assert hes.connections == 0 and hes.data() == b""
    finally:
        hes.stop()


# -- TCP_SERVER.framing "wrapper" and TCP_SERVER.spool.policy ------------------------------

WRAPPER = {"framing": "wrapper", "wrapper": {"source_wport": 1, "destination_wport": 0x66}}


def unwrap_all(data: bytes) -> list[wrapper.WrapperPdu]:
    u = wrapper.Unwrapper()
    pdus = u.feed(data)
    assert u.pending == 0, "the HES holds part of a PDU"
    return pdus


def downlink_unit(probe: Probe, uart, timeout: float = 10.0) -> bytes:
    """One write the client sent the uart (one downlink unit), as the bytes it
    carries; acknowledged as the uart would, so the client never sends it again."""
    env = probe.recv_env(uart, timeout=timeout)
    assert env.op == bus.OP_WRITE and env.src == "client" and env.ref is not None
    probe.send(bus.CLIENT, bus.OP_ACK, [env.ref.inst, env.ref.n], src="uart")
    return b"".join(rfc1662.decode(raw).info for raw in env.data)


def test_wrapper_over_tcp_split_and_merged_reads(stack, run_dir, probe):
    hes = FakeHES().start()
    try:
        uart = probe.inbox("uart")
        sub = probe.subscriber(bus.T_LINK_STATUS, bus.T_REGISTRY)
        start_client(stack, run_dir, hes.port, **WRAPPER)
        link_status(probe, sub, lambda d: d["up"])
        hes.wait_connections(1)

        # Uplink: each payload (one APDU) becomes one PDU from wPort 1 to wPort 0x66.
        rng = random.Random(21)
        items = [b"\x0f" + rng.randbytes(rng.randint(1, 600)) for _ in range(200)]
        send_in_batches(probe, items, rng)
        framed = b"".join(wrapper.wrap(p, 1, 0x66) for p in items)
        wait_bytes(hes, framed)
        pdus = unwrap_all(hes.data())
        assert [p.apdu for p in pdus] == items
        assert {(p.source, p.destination) for p in pdus} == {(1, 0x66)}
        counters = client_counters(probe, sub, lambda c: c.get("uplink.payloads") == len(items))
        assert counters["uplink.bytes"] == sum(map(len, items))  # APDUs, not headers
        assert counters["tcp.bytes_up"] == len(framed)

        # Downlink, merged: three PDUs in one write, three units for the meter.
        apdus = [bytes.fromhex("c001c100030100010800ff0200"), b"\xc0\x02\xc2\x00\x00\x00\x01"]
        apdus.append(rng.randbytes(1500))  # more than one 0x2100 frame (max_info 1024)
        hes.send(b"".join(wrapper.wrap(a, 0x66, 1) for a in apdus))
        assert [downlink_unit(probe, uart) for _ in apdus] == apdus

        # Downlink, split: one PDU in three writes, each read by the client
        # (its tcp.bytes_down says so) before the next is sent.
        whole = wrapper.wrap(rng.randbytes(300), 0x66, 1)
        down = len(b"".join(wrapper.wrap(a, 0x66, 1) for a in apdus))
        for a, b in ((0, 3), (3, 11)):
            hes.send(whole[a:b])
            down += b - a
            client_counters(probe, sub, lambda c, n=down: c.get("tcp.bytes_down") == n)
        hes.send(whole[11:])
        # Taken (and acknowledged) at once, as the uart would: a unit left
        # unacknowledged for 2 s is sent again, by design.
        assert downlink_unit(probe, uart) == whole[8:]
        sentinel = b"\xc0\x01\xc3\x00\x08\x00\x00\x01\x00\x00\xff\x02\x00"
        hes.send(wrapper.wrap(sentinel, 0x66, 1))
        assert downlink_unit(probe, uart) == sentinel
        assert hes.connections == 1
    finally:
        hes.stop()


def test_wrapper_bad_header_drops_the_connection_not_the_process(stack, run_dir, probe):
    hes = FakeHES().start()
    try:
        uart = probe.inbox("uart")
        sub = probe.subscriber("link.", bus.T_REGISTRY)
        client = start_client(stack, run_dir, hes.port, **WRAPPER)
        link_status(probe, sub, lambda d: d["up"])
        hes.wait_connections(1)
        good = b"\xc0\x01\xc1\x00\x03\x01\x00\x01\x08\x00\xff\x02\x00"
        # A good PDU, then a header with version 2 in the same write.
        hes.send(wrapper.wrap(good, 0x66, 1) + bytes.fromhex("0002 0066 0001 0003") + b"abc")
        assert downlink_unit(probe, uart) == good
        down = probe.wait_event(sub, bus.T_LINK_DOWN)
        assert "protocol error" in down["reason"] and "version 2" in down["reason"]
        probe.wait_event(sub, bus.T_LINK_UP)  # reconnected
        hes.wait_connections(2)
        client.wait_log("hes protocol error reason=bad_header framing=wrapper(src=1,dst=102)")
        counters = client_counters(probe, sub, lambda c: c.get("hes.framing_errors") == 1)
        assert counters["link.connects"] == 2
        # The new connection works both ways.
        probe.send(bus.CLIENT, bus.OP_SEND, [b"\x0f\x00\x00\x00\x01\x00\x00"], src="resolver")
        wait_for(lambda: hes.received(1) == wrapper.wrap(b"\x0f\x00\x00\x00\x01\x00\x00", 1, 0x66))
        hes.send(wrapper.wrap(good, 0x66, 1))
        assert downlink_unit(probe, uart) == good
        assert client.alive()
    finally:
        hes.stop()


# APDUs the meter might have sent while the HES was away, in this order.
NOTE = "0f{:08x}00020209060100010800ff06000003e8"
OUTAGE = [
    ("push", bytes.fromhex(NOTE.format(1))),
    ("response", bytes.fromhex("c401c100060001e240")),  # get-response normal
    ("push", bytes.fromhex("c200000100000a0000ff02110a")),  # event-notification-request
    ("part", bytes.fromhex("c402c10000000001000481")),  # the start of a long get-response
    ("response", bytes.fromhex("6303800100")),  # rlre
    ("push", bytes.fromhex(NOTE.format(2))),
    ("response", bytes.fromhex("d80102")),  # exception-response
    ("part", b"\xc4"),  # a response tag, and nothing more
    ("other", b"not dlms at all"),
    ("push", bytes.fromhex(NOTE.format(3))),
]


@pytest.mark.parametrize(("policy", "framing"), [("pushes", "wrapper"), ("all", "raw")])
def test_spool_policy_across_an_hes_outage(stack, run_dir, probe, policy, framing):
    hes = FakeHES().start()
    try:
        sub = probe.subscriber("link.", bus.T_REGISTRY)
        tcp = {**WRAPPER, "framing": framing, "spool": {"policy": policy}}
        client = start_client(stack, run_dir, hes.port, **tcp)
        link_status(probe, sub, lambda d: d["up"])
        before = [bytes.fromhex("c401c100060001e241"), bytes.fromhex(NOTE.format(0))]
        probe.send(bus.CLIENT, bus.OP_SEND, before, src="resolver")
        wait_for(lambda: len(hes.received(0)) >= sum(map(len, before)) + 8 * (framing != "raw"))

        hes.stop()
        probe.wait_event(sub, bus.T_LINK_DOWN)
        for _, apdu in OUTAGE:
            probe.send(bus.CLIENT, bus.OP_SEND, [apdu], src="resolver")
        link_status(probe, sub, lambda d: d["spool_depth"] == len(OUTAGE))

        hes.start()
        probe.wait_event(sub, bus.T_LINK_UP)
        after = bytes.fromhex("c401c100060001e242")  # answers a request of the new link
        probe.send(bus.CLIENT, bus.OP_SEND, [after], src="resolver")
        kept = [a for kind, a in OUTAGE if policy == "all" or kind != "response"] + [after]
        size = sum(len(a) + (8 if framing == "wrapper" else 0) for a in kept)
        wait_for(lambda: len(hes.received(1)) >= size, 15, f"{size} bytes on the new link")
        got = hes.received(1)
        if framing == "wrapper":
            assert [p.apdu for p in unwrap_all(got)] == kept
        else:
            assert got == b"".join(kept)
        dropped = 0 if policy == "all" else sum(1 for kind, _ in OUTAGE if kind == "response")
        counters = client_counters(
            probe, sub, lambda c: c.get("uplink.payloads") == len(before) + len(kept)
        )
        assert counters.get("spool.dropped_policy", 0) == dropped
        link_status(probe, sub, lambda d: d["up"] and d["spool_depth"] == 0)
        if dropped:
            client.wait_log(f"spool dropped reason=policy policy=pushes n={dropped}")
    finally:
        hes.stop()


def test_a_unit_is_acknowledged_only_once_the_hes_tcp_has_its_payloads(stack, run_dir, probe):
    """Direct payloads (not spooled) are safe only when the HES's TCP has
    acknowledged them: while the HES's window is shut the client must not tell
    the uart to let go of them, and must once the HES reads again."""
    hes = FakeHES().start()
    relay = Relay(hes.port, rcvbuf=PEER_RCVBUF).start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS)
        acks = probe.inbox(bus.UART)
        start_client(stack, run_dir, relay.port)
        link_status(probe, sub, lambda d: d["up"])
        hes.wait_connections(1)
        relay.pause()
        n = 60  # 60 KiB: under the direct path's bound, over what the shut window takes
        items = kib_items(random.Random(5), n)
        for i, item in enumerate(items):
            env = bus.Envelope(
                "resolver", 1, i, time.time(), bus.OP_SEND, [item], bus.Ref("uart", 77, i, 0)
            )
            probe.push.send_multipart([bus.CLIENT.encode(), bus.encode(env)])
        wait_for(Stalled(lambda: relay.inq(0)), 15, "the relay's window to shut")

        def highest(timeout: float) -> int:
            return highest_ack(acks, 77, timeout)

        # Acks of the units the window took may come; the last one's may not.
        stalled = highest(1.0)
        assert stalled < n - 1, f"unit {stalled} acknowledged while its bytes were unacknowledged"
        relay.resume()
        assert wait_for(lambda: highest(0.5) == n - 1, 15, f"the ack of unit {n - 1}")
        assert hes.data().endswith(items[-1])
    finally:
        relay.stop()
        hes.stop()


def test_slow_hes_holds_payloads_in_memory_and_a_sigkill_then_loses_nothing(stack, run_dir, probe):
    """While the link is up and the HES is slow, payloads wait in memory (the
    uart journals their units) up to DIRECT_MAX_BYTES, not in the spool; no unit
    is acknowledged before the HES's TCP has its payloads; a SIGKILL in that
    state loses nothing once the uart sends the units again, the order holds,
    and the payloads that may reach the HES twice are counted."""
    hes = FakeHES().start()
    relay = Relay(hes.port, rcvbuf=PEER_RCVBUF).start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS, bus.T_REGISTRY)
        acks = probe.inbox(bus.UART)
        client = start_client(stack, run_dir, relay.port)
        link_status(probe, sub, lambda d: d["up"])
        hes.wait_connections(1)
        relay.pause()
        n = 600  # 600 KiB: far over what the shut window takes, under DIRECT_MAX_BYTES
        assert n * 1024 < DIRECT_MAX_BYTES
        items = kib_items(random.Random(21), n)

        def send_units(first: int) -> None:
            for i in range(first, n):
                env = bus.Envelope(
                    "resolver",
                    1,
                    i,
                    time.time(),
                    bus.OP_SEND,
                    [items[i]],
                    bus.Ref("uart", 78, i, 0),
                )
                probe.push.send_multipart([bus.CLIENT.encode(), bus.encode(env)])

        send_units(0)
        wait_for(Stalled(lambda: relay.inq(0)), 15, "the relay's window to shut")

        def all_taken(d: dict[str, Any]) -> bool:
            for s in d["services"]:
                if s["name"] == "client":
                    return bool(
                        s["link"]["inflight"] + s["counters"].get("uplink.payloads", 0) == n
                    )
            return False

        reg = probe.wait_event(sub, bus.T_REGISTRY, all_taken, timeout=10)
        entry = next(s for s in reg["services"] if s["name"] == "client")
        assert entry["link"]["spool_depth"] == 0 and entry["link"]["inflight"] > 0
        assert entry["counters"].get("spool.appended", 0) == 0, entry["counters"]

        def highest(timeout: float) -> int:
            return highest_ack(acks, 78, timeout)

        acked = highest(1.0)
        assert acked < n - 1, f"unit {acked} acknowledged while its bytes were unacknowledged"
        # No more than the relay's TCP took (what it holds, and what it passed
        # to the HES before it paused): a client acknowledging units when it
        # wrote them would pass the bound above, not this one.
        taken = relay.inq(0) + len(hes.data())
        assert (acked + 1) * len(items[0]) <= taken, f"unit {acked} acknowledged, {taken} B taken"
        client.kill(signal.SIGKILL)
        again = stack.start("services.client")
        # The uart sends again everything not acknowledged (here: all of it;
        # the client acknowledges again what it already had).
        send_units(0)
        relay.resume()
        wait_for(
            lambda: hes.connections >= 2 and hes.received(1).endswith(items[-1]),
            20,
            "the last payload on the new connection",
        )
        wait_for(lambda: not hes.is_open(0), 10, "the HES to read the old connection out")
        j, repeats = resent_tail(hes.received(0), hes.received(1), items)
        assert wait_for(lambda: highest(0.5) == n - 1, 15, f"the ack of unit {n - 1}")
        # Every payload of the units the first client had handed to its
        # connection may be at the HES already: the second one counts them.
        client_counters(
            probe, sub, lambda c: c.get("uplink.duplicates_possible", 0) >= max(1, repeats)
        )
        assert "spool_depth=0" in again.text()
    finally:
        relay.stop()
        hes.stop()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_blocked_writes_resume_at_the_right_byte_and_the_downlink_flows_meanwhile(
    stack, run_dir, probe, pki, tls
):
    """The loop serves the socket: a write the socket does not take whole waits
    for POLLOUT and goes on at the byte it stopped at (payloads of every size,
    across TLS records and write chunks), and while writes are blocked the HES's
    data still reaches the uart."""
    hes = FakeHES(tls=_server_ctx(pki) if tls else None, rcvbuf=4096).start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS)
        uart = probe.inbox("uart")
        extra: dict[str, Any] = {}
        if tls:
            extra["tls"] = {
                "enabled": True,
                "ca": str(pki / "ca.pem"),
                "cert": str(pki / "gateway.pem"),
                "key": str(pki / "gateway.key"),
                "server_hostname": "localhost",
            }
        start_client(stack, run_dir, hes.port, **extra)
        link_status(probe, sub, lambda d: d["up"])
        hes.wait_connections(1)
        hes.pause()
        rng = random.Random(31)
        sizes = [1, 7, 100, 1500, 16383, 16385, 40000, 65535, 65537, 70000]
        items = [b"W%05d:" % i + rng.randbytes(rng.choice(sizes)) for i in range(120)]
        send_in_batches(probe, items, rng)
        wait_for(Stalled(lambda: hes.inq(0)), 15, "the HES's window to shut")
        link_status(probe, sub, lambda d: d["up"] and d["inflight"] > 0)
        hes.send(b"downlink while the uplink is blocked")
        env = probe.recv_env(uart, timeout=10)
        assert env.op == bus.OP_WRITE
        got = b"".join(rfc1662.decode(f).info for f in env.data)
        assert got == b"downlink while the uplink is blocked"
        hes.resume()
        wait_bytes(hes, b"".join(items), timeout=30)
        assert hes.connections == 1
        link_status(probe, sub, lambda d: d["up"] and d["spool_depth"] == 0)
    finally:
        hes.stop()


def test_the_memory_hold_stays_under_the_uarts_journal_bound(stack, run_dir, probe):
    """The client holds unacknowledged payloads in memory only up to half the
    uart's journal bound: beyond it they go to the spool and their units are
    acknowledged, so a slow HES never lets the uart reach its bound (where it
    stops reading the meter) while the client waits for TCP ACKs."""
    hes = FakeHES().start()
    relay = Relay(hes.port, rcvbuf=PEER_RCVBUF).start()
    try:
        sub = probe.subscriber(bus.T_LINK_STATUS, bus.T_REGISTRY)
        acks = probe.inbox(bus.UART)
        tcp_cfg = {**FAST, "port": relay.port}
        stack.write_config(
            base_config(run_dir, TCP_SERVER=tcp_cfg, UART={"journal": {"max_bytes": 256 * 1024}})
        )
        stack.start("services.broker")
        stack.start("services.client")
        link_status(probe, sub, lambda d: d["up"])
        hes.wait_connections(1)
        relay.pause()
        n = 300  # 300 KiB: more than the uart's 256 KiB bound
        items = kib_items(random.Random(5), n)
        for i in range(n):
            env = bus.Envelope(
                "resolver", 1, i, time.time(), bus.OP_SEND, [items[i]], bus.Ref("uart", 79, i, 0)
            )
            probe.push.send_multipart([bus.CLIENT.encode(), bus.encode(env)])
        # Units past the 128 KiB hold are spooled and acknowledged: the uart
        # holds well under its bound although the HES reads nothing.
        top, deadline = -1, time.monotonic() + 15
        while top < n - 1 and (left := deadline - time.monotonic()) > 0:
            if acks.poll(int(left * 1000) + 1):
                env = bus.decode(acks.recv_multipart()[-1])
                if env.op == bus.OP_ACK and env.data[0] == 79:
                    top = max(top, env.data[1])
        assert top == n - 1, f"units acknowledged up to {top} of {n - 1}"
        relay.resume()
        wait_for(
            lambda: hes.received(0).endswith(items[-1]), 20, "every payload at the HES, in order"
        )
        assert hes.received(0) == b"".join(items)
    finally:
        relay.stop()
        hes.stop()

"""Metrics: totals that survive restarts, every drop in the headline, the
Prometheus endpoint scraped over real HTTP from a real stack, APDU counts.

The scrape test runs the whole stack under supervisord (the chaos tests'
``Gateway``), a meter on a pseudo-terminal and an HES on 127.0.0.1, and reads
``/metrics`` from the broker's endpoint on a free port of 127.0.0.1.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common import bus, promtext
from common.dlms import count_apdu
from common.metrics import Totals, drop_reason, families
from services.cli import status
from services.sim.fake_hes import FakeHES, free_port
from tests.conftest import ROOT, wait_for
from tests.test_chaos import Gateway
from tests.test_e2e import transparent

# A data-notification APDU (tag 0x0F): long-invoke-id, no date-time, a u32.
NOTIFICATION = bytes.fromhex("0f0000000100") + bytes.fromhex("0600000001")


# -- pure parts ------------------------------------------------------------------------


def test_totals_survive_a_restart_and_never_go_down():
    t = Totals()
    t.update("uart", 1, {"frames_in": 5, "bad_fcs": 1}, now=0.0)
    t.update("uart", 1, {"frames_in": 7, "bad_fcs": 1}, now=0.5)
    t.update("uart", 1, {"frames_in": 6}, now=0.6)  # never down within an instance
    assert t.totals()["uart"] == {"frames_in": 7, "bad_fcs": 1}
    t.update("uart", 2, {"frames_in": 0}, now=1.0)  # restarted, old one not expired yet
    assert t.totals()["uart"]["frames_in"] == 7
    t.expire(now=3.0, limit=2.0)  # the old instance is gone: kept in the total
    t.update("uart", 2, {"frames_in": 3}, now=3.0)
    assert t.totals()["uart"] == {"frames_in": 10, "bad_fcs": 1}
    # ... and across a broker restart, through the file.
    again = Totals()
    again.load(json.loads(json.dumps(t.dump())), now=10.0)
    again.update("uart", 2, {"frames_in": 4}, now=10.1)  # same instance: no double count
    assert again.totals()["uart"]["frames_in"] == 11


def test_every_loss_has_a_reason_and_nothing_else_is_a_drop():
    assert drop_reason("frames.unknown_protocol") == "unknown_protocol"
    assert drop_reason("drop.unknown_dst") == "unknown_dst"
    assert drop_reason("drop.queue_full.client") == "queue_full_client"
    assert drop_reason("spool.dropped_age") == "spool_age"
    assert drop_reason("bad_fcs") == "bad_fcs"
    assert drop_reason("tap.dropped") == "tap"
    for key in ("frames_in", "frames_out", "uplink.payloads", "dlms.up.aarq", "garbage_bytes"):
        assert drop_reason(key) is None, key


def test_status_headline_counts_every_drop_reason():
    reg = {
        "broker": {"counters": {}},
        "services": [],
        "totals": {
            "uart": {"frames_in": 65, "bad_fcs": 2},
            "resolver": {"frames": 65, "frames.unknown_protocol": 1},
            "broker": {"drop.unknown_dst": 3},
        },
    }
    s = status.summary({bus.T_REGISTRY: reg})
    assert s["frames_in"] == 65
    assert s["drops"] == 6
    assert s["drops_by_reason"] == {
        "broker.unknown_dst": 3,
        "resolver.unknown_protocol": 1,
        "uart.bad_fcs": 2,
    }
    text = status.render({bus.T_REGISTRY: reg})
    assert "drops=6" in text and "resolver.unknown_protocol=1" in text


def test_count_apdu_looks_at_the_first_byte_only():
    c: dict[str, int] = {}
    count_apdu(c, "up", NOTIFICATION)
    count_apdu(c, "up", b"\xc4\x01\xc1\x00")  # get-response, cut short: still named
    count_apdu(c, "down", b"\x60\x1d")  # aarq
    count_apdu(c, "down", b"hello")  # not DLMS
    count_apdu(c, "down", b"")  # nothing
    assert c == {
        "dlms.up.data-notification": 1,
        "dlms.up.get-response": 1,
        "dlms.down.aarq": 1,
        "dlms.down.other": 1,
    }


def test_families_expose_totals_drops_and_gauges():
    snap = {
        "registry": {
            "broker": {"pool": {"workers": 2, "inflight_jobs": 1, "queued_frames": 0}},
            "services": [{"name": "uart"}, {"name": "resolver"}, {"name": "resolver"}],
            "totals": {
                "uart": {"frames_in": 9, "bad_fcs": 1},
                "resolver": {"dlms.up.get-response": 4},
            },
        },
        "link": {"up": False, "spool_depth": 3, "spool_bytes": 30, "spool_age_s": 2.5},
        "net": {"up": True, "lqi": 21},
    }

    # Parsed by prometheus_client's own parser: the page is what Prometheus reads.
    got = samples(promtext.render(families(snap, "1.2.3")).decode())
    assert got[("meterlink_frames_total", (("service", "uart"),))] == 9
    assert got[("meterlink_drops_total", (("reason", "bad_fcs"), ("service", "uart")))] == 1
    key = ("meterlink_dlms_apdus_total", (("apdu", "get-response"), ("direction", "meter_to_hes")))
    assert got[key] == 4
    assert got[("meterlink_spool_entries", ())] == 3
    assert got[("meterlink_spool_oldest_age_seconds", ())] == 2.5
    assert got[("meterlink_hes_link_up", ())] == 0
    assert got[("meterlink_lqi", ())] == 21
    assert got[("meterlink_resolver_workers", ())] == 2
    assert got[("meterlink_service_up", (("service", "resolver"),))] == 2
    assert got[("meterlink_build_info", (("version", "1.2.3"),))] == 1


# -- over HTTP, from a real stack -----------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return samples(resp.read().decode())


def value(port: int, name: str, **labels: str) -> float | None:
    return scrape(port).get((name, tuple(sorted(labels.items()))))


def status_json(gw: Gateway) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli.status", "--json"],
        env=gw.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_scrape_counts_frames_across_a_uart_restart_and_follows_an_hes_outage(
    run_dir: Path, request
):
    port = free_port()
    gw = Gateway(run_dir, 2, None, METRICS={"listen": f"127.0.0.1:{port}"})
    try:
        _scrape_scenario(gw, port)
    except BaseException:
        print(gw.sup.logs())
        raise
    finally:
        gw.close()


def _scrape_scenario(gw: Gateway, port: int) -> None:
    gw.hes.wait_connections(1, 15)
    n = 40
    for i in range(n):
        gw.meter.send(transparent(NOTIFICATION + i.to_bytes(2, "big")))
    gw.hes.wait_bytes(n * (len(NOTIFICATION) + 2))

    def frames_are(want: int):
        return lambda: value(port, "meterlink_frames_total", service="uart") == want

    wait_for(frames_are(n), 10, f"meterlink_frames_total{{service=uart}} == {n}")
    up = (
        "meterlink_dlms_apdus_total",
        (("apdu", "data-notification"), ("direction", "meter_to_hes")),
    )
    wait_for(lambda: scrape(port).get(up) == n, 10, "data-notifications counted")
    assert value(port, "meterlink_serial_open") == 1
    assert value(port, "meterlink_hes_link_up") == 1
    assert value(port, "meterlink_build_info", version=_version()) == 1

    # Latency histograms: every uplink unit observed once, each in a bucket;
    # downlink from HES data to the meter.
    lat = "meterlink_uplink_latency_seconds"

    def observed() -> float:
        return value(port, lat + "_count", service="client") or 0

    wait_for(lambda: observed() >= 1, 10, "uplink latencies observed")
    units = observed()
    assert units <= n
    assert value(port, lat + "_bucket", service="client", le="+Inf") == units
    assert 0 < (value(port, lat + "_sum", service="client") or 0) < units * 10
    gw.hes.send(b"\xc0\x01\xc1\x00\x01")
    wait_for(
        lambda: (
            (value(port, "meterlink_downlink_latency_seconds_count", service="client") or 0) == 1
        ),
        15,
        "one downlink latency observed",
    )

    # A uart restart is not a reset to the scraper ...
    old = gw.kill("uart")
    new = gw.wait_restarted("uart", old)
    wait_for(
        lambda: any(
            s["name"] == "uart" and s.get("pid") == new
            for s in status_json(gw)[bus.T_REGISTRY]["services"]
        ),
        15,
        "the new uart's heartbeat",
    )
    assert value(port, "meterlink_frames_total", service="uart") == n
    # ... nor after the old instance is forgotten (liveness), and new frames add up.
    wait_for(
        lambda: (
            [s["pid"] for s in status_json(gw)[bus.T_REGISTRY]["services"] if s["name"] == "uart"]
            == [new]
        ),
        15,
        "the killed uart to be forgotten",
    )
    assert value(port, "meterlink_frames_total", service="uart") == n
    s = status_json(gw)["summary"]
    assert s["frames_in"] == n

    # HES outage: the spool gauges follow it.
    hes_port = gw.hes.port
    gw.hes.stop()
    wait_for(lambda: value(port, "meterlink_hes_link_up") == 0, 15, "the link down gauge")
    k = 10
    for i in range(k):
        gw.meter.send(transparent(NOTIFICATION + (1000 + i).to_bytes(2, "big")))
    wait_for(lambda: (value(port, "meterlink_spool_entries") or 0) >= k, 15, f"{k} spooled entries")
    assert (value(port, "meterlink_spool_bytes") or 0) >= k * (len(NOTIFICATION) + 2)
    wait_for(
        lambda: (value(port, "meterlink_spool_oldest_age_seconds") or 0) > 0, 10, "a spool age"
    )
    assert value(port, "meterlink_frames_total", service="uart") == n + k
    back = FakeHES(port=hes_port)
    gw.extra.append(back)
    back.start()
    back.wait_connections(1, 30)
    wait_for(lambda: value(port, "meterlink_spool_entries") == 0, 20, "the spool drained")
    assert value(port, "meterlink_hes_link_up") == 1
    assert (value(port, "meterlink_hes_link_downs_total", service="client") or 0) >= 1
    assert (value(port, "meterlink_spool_oldest_age_seconds") or 0) == 0


def _version() -> str:
    from services.metrics import version

    return version()


def test_metrics_port_taken_leaves_the_broker_running(stack, run_dir):
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        cfg = dict(stack.config, METRICS={"listen": f"127.0.0.1:{holder.getsockname()[1]}"})
        stack.write_config(cfg)
        broker = stack.start("services.broker")
        broker.wait_log("metrics off reason=bind")
        broker.wait_log("broker started")
        assert broker.alive()
    finally:
        holder.close()


def test_bad_metrics_listen_is_a_config_error(run_dir):
    from tests.conftest import base_config

    path = run_dir / "bad.json"
    path.write_text(json.dumps(base_config(run_dir, METRICS={"listen": "nope"})))
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "check", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "METRICS.listen" in out.stdout


def test_the_counting_table_matches_the_codecs_tags():
    """count.NAMES is written out (so counting does not load the codec); it must
    say what the codec's own tables say for every tag."""
    from common.dlms.apdu import _CHOICE_LAYOUTS, _PLAIN_LAYOUTS, ACSE_TAGS
    from common.dlms.count import NAMES

    want = {
        **{tag: name for tag, (name, _v) in _CHOICE_LAYOUTS.items()},
        **{tag: name for tag, (name, _l) in _PLAIN_LAYOUTS.items()},
        **ACSE_TAGS,
    }
    assert want == NAMES


def test_an_instance_heard_from_again_after_a_silence_is_counted_once():
    """A stalled loop misses heartbeats and is retired; when the same process
    heartbeats again its figures must not be in the total twice."""
    t = Totals()
    t.update("uart", 7, {"frames_in": 100}, 0.0)
    t.expire(2.6, 2.0)
    assert t.totals()["uart"]["frames_in"] == 100
    t.update("uart", 7, {"frames_in": 101}, 2.7)
    assert t.totals()["uart"]["frames_in"] == 101
    t.update("uart", 8, {"frames_in": 5}, 3.0)  # a new instance adds to it
    assert t.totals()["uart"]["frames_in"] == 106
    again = Totals()
    again.load(json.loads(json.dumps(t.dump())), 10.0)
    again.expire(20.0, 2.0)
    again.update("uart", 8, {"frames_in": 6}, 21.0)  # back after a broker restart
    assert again.totals()["uart"]["frames_in"] == 107


def test_loss_counters_of_every_service_have_a_reason():
    for key in (
        "write_dropped",
        "write_stale",
        "write_bad",
        "send.too_long",
        "marks.errors",
        "uplink.resyncs",
        "downlink.resyncs",
    ):
        assert drop_reason(key) is not None, key
    assert drop_reason("rx_held") is None  # journaled, sent again: no loss


def test_the_page_escapes_labels_and_help_and_writes_histograms_as_prometheus_reads_them():
    fam = promtext.counter("x_events", "help with \\ and\nnewline", ["who"])
    fam.add(['a "quoted" \\ value\nnext'], 3)
    hist = promtext.histogram("x_seconds", "h", ["who"])
    hist.add_histogram(["a"], [("0.001", 1), ("0.01", 4), ("+Inf", 5)], 0.25)
    page = promtext.render([fam, hist, promtext.gauge("x_up", "g").add([], float("nan"))])
    parsed = {f.name: f for f in text_string_to_metric_families(page.decode())}
    assert parsed["x_events"].type == "counter"
    assert parsed["x_events"].documentation == "help with \\ and\nnewline"
    (sample,) = parsed["x_events"].samples
    assert sample.name == "x_events_total"
    assert sample.labels == {"who": 'a "quoted" \\ value\nnext'} and sample.value == 3
    got = {(s.name, s.labels.get("le")): s.value for s in parsed["x_seconds"].samples}
    assert got[("x_seconds_bucket", "+Inf")] == 5 and got[("x_seconds_count", None)] == 5
    assert got[("x_seconds_sum", None)] == 0.25
    assert math.isnan(parsed["x_up"].samples[0].value)


def test_the_endpoint_answers_while_a_client_hangs_and_refuses_what_it_does_not_serve(
    stack, run_dir
):
    """The endpoint lives in the broker's loop: a connection that never sends
    its request holds neither the other scrapes nor the bus."""
    port = free_port()
    stack.write_config(dict(stack.config, METRICS={"listen": f"127.0.0.1:{port}"}))
    broker = stack.start("services.broker")
    broker.wait_log("metrics serving")
    hung = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        hung[0].sendall(b"GET /metr")  # half a request, never finished
        wait_for(lambda: value(port, "meterlink_resolver_workers") == 0, 10, "a page")
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", method="HEAD")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200 and resp.read() == b""
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        for path, method, code in (("/nope", "GET", 404), ("/metrics", "POST", 405)):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=5)
            assert err.value.code == code
        with socket.create_connection(("127.0.0.1", port), timeout=5) as big:
            big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 9000)
            assert big.recv(100).startswith(b"HTTP/1.1 431 ")
        # The bus is served meanwhile: a worker that starts now is seen.
        stack.start("services.resolver")
        wait_for(lambda: value(port, "meterlink_resolver_workers") == 1, 10, "a worker")
    finally:
        for s in hung:
            s.close()
    assert broker.alive()


_EMFILE_PROBE = """
import os, resource, select, socket, sys, time
from services.metrics import MetricsServer
port = int(sys.argv[1])
srv = MetricsServer(f"127.0.0.1:{port}", lambda: {})
assert srv.start()
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
client = socket.create_connection(("127.0.0.1", port))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
client.sendall(b"GET /metrics HTTP/1.0\\r\\n\\r\\n")
client.setblocking(False)


def loop_pass():  # the broker's loop, as far as the endpoint goes
    p = select.poll()
    for fd, flags in srv.wanted().items():
        p.register(fd, select.POLLIN if flags == 1 else select.POLLOUT)
    for fd, _ in p.poll(100):
        srv.handle(fd)


passes, t0 = 0, time.monotonic()
while time.monotonic() - t0 < 0.5:
    loop_pass()
    passes += 1
for fd in held:  # descriptors free again: the waiting scraper is served
    os.close(fd)
answer, t1 = b"", time.monotonic()
while not answer and time.monotonic() - t1 < 5:
    loop_pass()
    try:
        answer = client.recv(64)
    except BlockingIOError:
        pass
print(passes, srv.errors, int(answer.startswith(b"HTTP/1.")))
"""


def test_out_of_file_descriptors_the_endpoint_rests_instead_of_spinning_the_broker():
    """accept() failing (EMFILE) with a scraper waiting left the listener
    readable on every pass: the broker's loop spun at 100%, logging each time."""
    out = subprocess.run(
        [sys.executable, "-c", _EMFILE_PROBE, str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    passes, errors, answered = map(int, out.stdout.split())
    assert errors >= 1 and passes < 10, (passes, errors)
    assert answered, "the listener never came back once descriptors were free"

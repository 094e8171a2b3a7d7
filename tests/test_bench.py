"""The bench: its quick mode end to end, its failure on a stack that cannot start,
and the pieces that decide whether a run is valid."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import bare, imports, pipeline, ser2net
from tests.conftest import ROOT


def _bench(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_quick_bench_prints_the_table_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = _bench("--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "machine:" in proc.stdout and "pyzmq" in proc.stdout and "libzmq" in proc.stdout
    assert "end-to-end throughput" in proc.stdout and "RSS total" in proc.stdout

    result = json.loads(out.read_text())
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["python"] and machine["libzmq"]
    assert {r["frame_bytes"] for r in result["codec"]} == {64, 256}
    assert all(r["frames_per_s"] > 0 for r in result["codec"])
    assert "DLMS codec, one core (APDUs/s)" in proc.stdout
    assert result["dlms"]["results"][0]["case"] == "decode get-response"
    assert result["dlms"]["apdus_per_s"] > 0

    stack = result["stack"]
    for rate in ("100", "1000"):
        block = stack["latency"][rate]
        assert block["valid"], block
        assert 0 < block["p50_ms"]["median"] <= block["p99_ms"]["median"] < 1000
    assert stack["downlink"]["100"]["valid"]
    for rate in ("1000", "100"):
        hops = stack["breakdown"][rate]
        assert hops["traced"] > 0
        assert all(hops[h]["p50_ms"] > 0 for h in pipeline.HOPS)
    assert 0 < stack["downlink"]["100"]["p50_ms"]["median"] < 1000
    for workers in ("1", "2"):
        tp = stack["throughput"][workers]
        assert tp["valid"], tp
        assert tp["frames_per_s"]["median"] > 1000
        assert 1 <= tp["batch"] <= tp["frames"]
        limit = result["bare"]["throughput"][workers]
        assert limit["frames_per_s"]["median"] > 0 and limit["fraction"] > 0
    assert "latency" not in result["bare"]  # dropped: see bench/bare.py

    vs = stack["ser2net"]
    if ser2net.find() is None:
        # The bench says so and leaves the side-by-side rows out.
        assert not vs["available"] and "not installed" in vs["skipped"]
        assert "ser2net is not installed" in proc.stderr
        assert "meterlink vs ser2net: skipped" in proc.stdout
    else:
        assert vs["available"] and not vs["skipped"], vs.get("skipped")
        assert "meterlink (2 workers) vs ser2net" in proc.stdout
        figures = {f["key"]: f for f in vs["figures"]}
        assert set(figures) == {"throughput", "p50@1000", "p50@100", "p99@1000"}
        for f in figures.values():
            assert f["failed"] == {"meterlink": 0, "ser2net": 0}, f
            assert f["meterlink"]["median"] > 0 and f["ser2net"]["median"] > 0
            assert f["ratio"]["median"] > 0 and f["met"] in (True, False)
        assert vs["memory"]["rss_mb"]["ser2net"]["median"] > 0

    rss = stack["memory"]["rss_mb"]
    assert {"broker", "uart", "client", "watchdog", "total"} <= set(rss)
    assert 5 < rss["broker"]["median"] < 500
    pss = stack["memory"]["pss_mb"]
    assert {"broker", "uart", "client", "total"} <= set(pss)
    per_frame = stack["throughput"]["2"]["cpu_us_per_frame"]
    assert {"broker", "resolver-1", "resolver-2", "uart", "client", "total"} <= set(per_frame)
    assert rss["total"]["median"] > rss["broker"]["median"]
    cpu = stack["cpu"]
    assert 0 <= cpu["idle"]["total"]["median"] < 100
    assert cpu["1000"]["total"]["median"] > cpu["idle"]["total"]["median"]

    aims = {row["figure"]: row for row in result["table"] if row["aim"]}
    assert "2 workers" in aims and "RSS total" in aims and "CPU idle total" in aims
    assert "PSS total" in aims
    assert all(row["met"] in (True, False, None) for row in aims.values())


def test_bench_exits_nonzero_with_a_clear_message_when_the_stack_cannot_start(
    tmp_path: Path,
) -> None:
    proc = _bench(
        "--quick",
        "--only",
        "stack",
        "--set",
        "UART.no_such_key=1",
        "--out",
        str(tmp_path / "b.json"),
    )
    assert proc.returncode == 2
    assert "the stack failed" in proc.stderr
    assert "exited with status 2" in proc.stderr
    assert "no_such_key" in proc.stderr  # the process's own complaint, from its log
    assert not (tmp_path / "b.json").exists()
    kept = re.search(r"the stack's logs are in (/tmp/mlb-\w+)", proc.stderr)
    assert kept, proc.stderr
    shutil.rmtree(kept.group(1))


def test_a_run_is_valid_only_if_every_payload_arrived_once_and_in_order() -> None:
    arrivals = pipeline.Arrivals()
    arrivals.add([10, 11, 12], 1.0)
    ok = arrivals.take(10, 3)
    assert ok["ok"] and list(ok["times"]) == [1.0, 1.0, 1.0]

    arrivals.add([20, 22, 21, 21], 2.0)  # disorder and a duplicate
    bad = arrivals.take(20, 3)
    assert not bad["ok"] and bad["lost"] == 0 and bad["extra"] == 1 and not bad["in_order"]

    arrivals.add([30, 32], 3.0)  # a loss
    lost = arrivals.take(30, 3)
    assert not lost["ok"] and lost["lost"] == 1 and lost["in_order"]
    assert arrivals.count() == 0


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert pipeline.percentile(values, 50) == 50.0
    assert pipeline.percentile(values, 99) == 99.0
    assert pipeline.percentile(values, 100) == 100.0
    assert pipeline.percentile([7.0], 99) == 7.0
    assert math.isnan(pipeline.percentile([], 50))


def test_bare_batches_keep_the_frame_count_and_the_mean_batch() -> None:
    sizes = bare.batch_sizes(1000, 63.4)
    assert sum(sizes) == 1000
    assert max(sizes) - min(sizes) <= 1
    assert abs(1000 / len(sizes) - 63.4) < 2
    assert bare.batch_sizes(5, 100) == [5]
    assert bare.batch_sizes(3, 0.5) == [1, 1, 1]


def test_uplink_payloads_are_64_bytes_in_one_frame_and_carry_their_sequence_number() -> None:
    frame = pipeline.uplink_frame(123456789)
    assert len(frame) == pipeline.FRAME_BYTES == 75
    payload = frame[8:-3]
    assert payload == pipeline.uplink_payload(123456789)
    assert len(payload) == pipeline.PAYLOAD_BYTES == 64
    assert int.from_bytes(payload[:8], "big") == 123456789


def test_payload_stream_cuts_records_across_reads() -> None:
    arrivals = pipeline.Arrivals()
    stream = pipeline.PayloadStream(arrivals)
    data = b"".join(pipeline.uplink_payload(s) for s in (5, 6, 7))
    stream.feed(data[:100], 1.0)
    stream.feed(data[100:], 2.0)
    got = arrivals.take(5, 3)
    assert got["ok"] and list(got["times"]) == [1.0, 2.0, 2.0]


def test_ser2net_config_is_one_raw_tcp_connection_on_localhost() -> None:
    text = ser2net.config(40123, "/dev/pts/9")
    assert "accepter: tcp,127.0.0.1,40123" in text
    assert "connector: serialdev,/dev/pts/9" in text
    assert "telnet" not in text and "options" not in text
    assert ser2net.find("no-such-program-here") is None


def test_a_missing_ser2net_is_said_in_the_headline_and_the_table() -> None:
    vs = {"available": False, "skipped": "ser2net is not installed (apt-get install ser2net)"}
    assert "skipped, ser2net is not installed" in bench_main.format_versus(vs)
    ((title, rows),) = bench_main.versus_rows({"stack": {"ser2net": vs}})
    assert "not installed" in rows[0].note


def test_each_ratio_is_the_median_of_the_rounds_and_failed_runs_are_left_out() -> None:
    def lat(p50: float, valid: bool = True) -> dict[str, object]:
        return {"valid": valid, "p50_ms": p50, "p99_ms": 2 * p50, "max_ms": 3 * p50}

    def tp(fps: float, valid: bool = True) -> dict[str, object]:
        return {
            "valid": valid,
            "frames_per_s": fps if valid else math.nan,
            "cpu_us_per_frame": {"total": 4.0},
            "write_s": 0.5,
            "elapsed_s": 1.0,
        }

    out = {
        "latency": {
            "100": bench_main._lat_block([lat(1.0), lat(2.0), lat(50.0, valid=False)]),
            "1000": bench_main._lat_block([lat(1.0), lat(1.0), lat(1.0)]),
        },
        "throughput": {"2": {"runs": [tp(100.0), tp(90.0), tp(80.0)]}},
    }
    assert out["latency"]["100"]["failed"] == 1
    assert out["latency"]["100"]["p50_ms"]["max"] == 2.0  # the failed run is not averaged in
    ref = bench_main.Reference.__new__(bench_main.Reference)
    ref.skipped, ref.version, ref.target = None, "4.3", None
    ref_runs = {
        "100": [lat(0.5), lat(0.5), lat(0.5)],
        "1000": [lat(0.5), lat(0.25), lat(0.5, valid=False)],
        "throughput": [tp(200.0), tp(100.0), None],
    }
    vs = bench_main._versus(out, ref, ref_runs, [])
    f = {x["key"]: x for x in vs["figures"]}
    assert f["p50@100"]["ratio"]["median"] == 3.0  # rounds 2 and 4: the third lost a payload
    assert f["p50@100"]["failed"] == {"meterlink": 1, "ser2net": 0}
    assert f["p50@1000"]["ratio"]["min"] == 2.0 and f["p50@1000"]["ratio"]["max"] == 4.0
    assert f["p50@1000"]["failed"] == {"meterlink": 0, "ser2net": 1}
    assert f["throughput"]["ratio"]["median"] == pytest.approx(
        0.7
    )  # 0.5 and 0.9; the third had no ser2net
    assert f["throughput"]["met"] is False and f["p50@100"]["met"] is True


def test_importtime_lines_are_parsed_with_their_depth() -> None:
    text = "\n".join(
        [
            "2026-01-01 INFO broker started",
            "import time: self [us] | cumulative | imported package",
            "import time:       120 |        120 |     zmq.constants",
            "import time:       300 |        420 |   zmq",
            "import time:      1000 |       1420 | services.broker",
            "import time:        50 |         50 | common.daemon",
        ]
    )
    got = imports.parse(text)
    assert [(i.name, i.depth) for i in got] == [
        ("zmq.constants", 2),
        ("zmq", 1),
        ("services.broker", 0),
        ("common.daemon", 0),
    ]
    assert got[2].self_us == 1000 and got[2].cumulative_us == 1420
    assert imports.by_package(got) == {"services": 1000, "zmq": 420, "common": 50}
    assert imports._unit("common.bus") == "common.bus" and imports._unit("zmq.sugar") == "zmq"

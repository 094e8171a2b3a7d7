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

from bench import bare, pipeline
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

    stack = result["stack"]
    for rate in ("100", "1000"):
        block = stack["latency"][rate]
        assert block["valid"], block
        assert 0 < block["p50_ms"]["median"] <= block["p99_ms"]["median"] < 1000
    assert stack["downlink"]["100"]["valid"]
    hops = stack["breakdown"]["1000"]
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
    assert result["bare"]["latency"]["1000"]["p50_ms"]["median"] > 0

    rss = stack["memory"]["rss_mb"]
    assert {"broker", "uart", "client", "watchdog", "total"} <= set(rss)
    assert 5 < rss["broker"]["median"] < 500
    assert rss["total"]["median"] > rss["broker"]["median"]
    cpu = stack["cpu"]
    assert 0 <= cpu["idle"]["total"]["median"] < 100
    assert cpu["1000"]["total"]["median"] > cpu["idle"]["total"]["median"]

    aims = {row["figure"]: row for row in result["table"] if row["aim"]}
    assert "2 workers" in aims and "RSS total" in aims and "CPU idle total" in aims
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


def test_uplink_frames_are_64_bytes_and_carry_their_sequence_number() -> None:
    frame = pipeline.uplink_frame(123456789)
    assert len(frame) == pipeline.FRAME_BYTES == 64
    payload = frame[8:-3]
    assert len(payload) == pipeline.INFO_BYTES
    assert int.from_bytes(payload[:8], "big") == 123456789

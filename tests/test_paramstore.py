"""The durable parameter store: typed round trips, sharing between processes, bad files."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path

import pytest

from common.params import Value
from common.paramstore import (
    PARAMS_FILE,
    ParamStore,
    describe_value,
    value_from_json,
    value_payload,
    value_to_json,
)

ALL_TYPES = [
    Value.char("gw-01"),
    Value.char(b""),
    Value.octets(b"\x00\x7e\xff"),
    Value.u8(0),
    Value.u8(255),
    Value.u16(1234),
    Value.u32(0xFFFFFFFF),
    Value.datetime(bytes(range(12))),
]


def test_values_round_trip_with_their_type(tmp_path: Path) -> None:
    store = ParamStore(tmp_path)
    for i, value in enumerate(ALL_TYPES):
        store.set(0x9000 + i, value)
    fresh = ParamStore(tmp_path)
    for i, value in enumerate(ALL_TYPES):
        got = fresh.get(0x9000 + i)
        assert got == value and got is not None and got.tag == value.tag
    assert fresh.items() == {0x9000 + i: v for i, v in enumerate(ALL_TYPES)}
    assert fresh.get(0x1234) is None


def test_missing_file_is_empty_and_json_helpers(tmp_path: Path) -> None:
    store = ParamStore(tmp_path)
    assert store.get(0x8007) is None and store.items() == {}
    for value in ALL_TYPES:
        assert value_from_json(json.loads(json.dumps(value_to_json(value)))) == value
    assert value_payload(Value.u16(0x1234)) == b"\x12\x34"
    assert value_payload(Value.char("AB")) == b"AB"
    assert value_payload(Value.datetime(bytes(12))) == bytes(12)
    assert describe_value(Value.char("AB")) == {"tag": 0x0A, "type": "CHAR", "value": "AB"}
    assert describe_value(Value.octets(b"\x01")) == {"tag": 0x09, "type": "STR", "value": "01"}


def test_get_sees_another_stores_set_at_once_even_same_size(tmp_path: Path) -> None:
    reader, writer = ParamStore(tmp_path), ParamStore(tmp_path)
    writer.set(0x8007, Value.char("aaaa"))
    assert reader.get(0x8007) == Value.char("aaaa")
    # Same size, written within the same timestamp tick: must still be seen.
    for text in ("bbbb", "cccc", "dddd"):
        writer.set(0x8007, Value.char(text))
        assert reader.get(0x8007) == Value.char(text)
    writer.delete(0x8007)
    assert reader.get(0x8007) is None


def test_unchanged_file_is_not_read_again(tmp_path: Path) -> None:
    ParamStore(tmp_path).set(0x8007, Value.char("x"))
    # Age the file past the racy window: from then on only a stat per get.
    old = os.stat(tmp_path / PARAMS_FILE).st_mtime_ns - 10 * 10**9
    os.utime(tmp_path / PARAMS_FILE, ns=(old, old))
    store = ParamStore(tmp_path)
    for _ in range(50):
        assert store.get(0x8007) == Value.char("x")
    assert store.counters["params.loads"] == 1
    ParamStore(tmp_path).set(0x8007, Value.char("y"))
    assert store.get(0x8007) == Value.char("y")
    assert store.counters["params.loads"] == 2


def test_file_is_written_atomically_leaving_no_temp_files(tmp_path: Path) -> None:
    store = ParamStore(tmp_path)
    for i in range(20):
        store.set(0x8007, Value.char(f"name-{i}"))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [PARAMS_FILE, PARAMS_FILE + ".lock"]
    doc = json.loads((tmp_path / PARAMS_FILE).read_text())
    assert doc == {"version": 1, "params": {"8007": value_to_json(Value.char("name-19"))}}


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b"[]", b'{"version": 2, "params": {}}', b'{"version": 1}', b""],
)
def test_corrupt_file_is_empty_counted_logged_then_replaced(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / PARAMS_FILE).write_bytes(content)
    store = ParamStore(tmp_path)
    with caplog.at_level(logging.ERROR, "meterlink.params"):
        assert store.get(0x8007) is None
        assert store.get(0x8007) is None  # the same file: reported once
    assert store.counters["params.corrupt"] == 1
    assert "params file corrupt" in caplog.text
    store.set(0x8007, Value.char("ok"))
    assert ParamStore(tmp_path).get(0x8007) == Value.char("ok")
    assert (tmp_path / (PARAMS_FILE + ".corrupt")).read_bytes() == content


def test_bad_entries_are_skipped_and_counted(tmp_path: Path) -> None:
    good = value_to_json(Value.u8(7))
    doc = {
        "version": 1,
        "params": {
            "9001": good,
            "zz": good,
            "10000": good,
            "9002": {"tag": 0x11, "value": 300},
            "9003": {"tag": 0x77, "value": 1},
            "9004": {"tag": 0x0A, "value": "not hex"},
            "9005": {"tag": 0x0A},
            "9006": "x",
        },
    }
    (tmp_path / PARAMS_FILE).write_text(json.dumps(doc))
    store = ParamStore(tmp_path)
    assert store.items() == {0x9001: Value.u8(7)}
    assert store.counters["params.bad_entry"] == 7
    assert store.counters.get("params.corrupt", 0) == 0


def test_bad_arguments_raise(tmp_path: Path) -> None:
    store = ParamStore(tmp_path)
    with pytest.raises(ValueError):
        store.set(0x10000, Value.u8(1))
    with pytest.raises(TypeError):
        store.set(0x8007, b"raw")  # type: ignore[arg-type]


def _writer(directory: str, base: int, count: int) -> None:
    store = ParamStore(directory)
    for i in range(count):
        store.set(base + i, Value.u16(i))
        # Read-modify-write of a shared entry too: the lock must serialise it.
        store.set(0x7FFF, Value.u16(base + i))


def test_concurrent_sets_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    count = 150
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), base, count)) for base in (0, 0x1000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    values = ParamStore(tmp_path).items()
    for base in (0, 0x1000):
        for i in range(count):
            assert values[base + i] == Value.u16(i)
    assert values[0x7FFF] in (Value.u16(count - 1), Value.u16(0x1000 + count - 1))
    assert len(values) == 2 * count + 1

"""The durable spool: order, bounds, age expiry, reopen, and a SIGKILL right after append."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.spool import Spool
from tests.conftest import ROOT


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def drain(sp: Spool) -> list[bytes]:
    return [d for _, d in sp.peek(1_000_000)]


def test_fifo_order_across_batches_peek_after_and_ack(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_s=3600)
    sp.append([b"a", b"bb"])
    sp.append([])
    sp.append([b"ccc", b"", b"dddd"])
    assert (sp.count, sp.nbytes) == (5, 10)
    first = sp.peek(2)
    assert [d for _, d in first] == [b"a", b"bb"]
    # peek does not remove; "after" continues from a cursor.
    nxt = sp.peek(10, after=first[-1][0])
    assert [d for _, d in nxt] == [b"ccc", b"", b"dddd"]
    assert sp.count == 5
    assert sp.ack(first[-1][0]) == 2
    assert (sp.count, sp.nbytes) == (3, 7)
    assert drain(sp) == [b"ccc", b"", b"dddd"]
    # A byte budget limits a batch, but one entry always comes back.
    assert [d for _, d in sp.peek(10, max_bytes=3)] == [b"ccc", b""]
    assert [d for _, d in sp.peek(10, max_bytes=1)] == [b"ccc"]
    assert sp.ack(nxt[-1][0]) == 3
    assert (sp.count, sp.nbytes) == (0, 0)
    assert sp.peek(5) == []
    assert sp.ack(10**9) == 0


def test_ids_keep_growing_across_an_empty_spool_and_reopen(tmp_path: Path) -> None:
    # A drain cursor (peek's "after") must stay valid when the spool empties.
    path = tmp_path / "s.db"
    sp = Spool(path, max_bytes=1 << 20, max_age_s=3600)
    sp.append([b"a", b"b"])
    cursor = sp.peek(2)[-1][0]
    sp.ack(cursor)
    sp.append([b"c"])
    assert [d for _, d in sp.peek(5, after=cursor)] == [b"c"]
    cursor = sp.peek(1)[0][0]
    sp.ack(cursor)
    sp.close()
    sp = Spool(path, max_bytes=1 << 20, max_age_s=3600)
    sp.append([b"d"])
    assert [d for _, d in sp.peek(5, after=cursor)] == [b"d"]


def test_push_front_goes_ahead_of_everything_in_order(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_s=3600)
    sp.push_front([b"x1", b"x2"])  # into an empty spool
    sp.append([b"c", b"d"])
    sp.push_front([b"a", b"b"])
    assert drain(sp) == [b"a", b"b", b"x1", b"x2", b"c", b"d"]
    sp.close()
    sp = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_s=3600)
    assert drain(sp) == [b"a", b"b", b"x1", b"x2", b"c", b"d"]
    sp.append([b"e"])
    assert drain(sp)[-1] == b"e"


def test_size_bound_drops_oldest_and_reports(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db", max_bytes=1000, max_age_s=3600)
    payloads = [bytes([i]) * 100 for i in range(15)]
    dropped = sp.append(payloads[:8])
    assert not dropped
    dropped = sp.append(payloads[8:])
    assert (dropped.size, dropped.size_bytes, dropped.age) == (5, 500, 0)
    assert drain(sp) == payloads[5:]
    assert (sp.count, sp.nbytes) == (10, 1000)
    # A payload bigger than the whole bound is dropped on arrival; the rest stays.
    dropped = sp.append([b"z" * 1001])
    assert (dropped.size, dropped.size_bytes) == (1, 1001)
    assert drain(sp) == payloads[5:]
    assert (sp.totals.size, sp.totals.size_bytes) == (6, 1501)


def test_age_expiry_drops_old_prefix_on_expire_and_on_append(tmp_path: Path) -> None:
    clock = Clock()
    sp = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_s=10, clock=clock)
    sp.append([b"t0a", b"t0b"])
    clock.t += 6
    sp.append([b"t6"])
    clock.t += 5  # t0 entries are 11 s old, t6 is 5 s old
    dropped = sp.expire()
    assert (dropped.age, dropped.age_bytes, dropped.size) == (2, 6, 0)
    assert drain(sp) == [b"t6"]
    clock.t += 6  # t6 is 11 s old: the next append expires it
    dropped = sp.append([b"t17"])
    assert dropped.age == 1
    assert drain(sp) == [b"t17"]
    assert sp.totals.age == 3
    assert not sp.expire()


def test_reopen_keeps_entries_counts_and_order(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    sp = Spool(path, max_bytes=1 << 20, max_age_s=3600)
    sp.append([b"one", b"two", b"three"])
    sp.ack(sp.peek(1)[0][0])
    sp.close()
    sp = Spool(path, max_bytes=1 << 20, max_age_s=3600)
    assert (sp.count, sp.nbytes) == (2, 8)
    assert drain(sp) == [b"two", b"three"]
    sp.append([b"four"])
    assert drain(sp) == [b"two", b"three", b"four"]


def test_bad_bounds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(tmp_path / "s.db", max_bytes=0, max_age_s=1)
    with pytest.raises(ValueError, match="max_age_s"):
        Spool(tmp_path / "s.db", max_bytes=10, max_age_s=0)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.lists(st.binary(max_size=40), max_size=6)),
            st.tuples(st.just("ack"), st.integers(0, 5)),
            st.tuples(st.just("front"), st.lists(st.binary(max_size=40), max_size=3)),
        ),
        max_size=30,
    )
)
def test_matches_a_bounded_list_model(tmp_path_factory: pytest.TempPathFactory, ops) -> None:
    bound = 100
    sp = Spool(tmp_path_factory.mktemp("m") / "s.db", max_bytes=bound, max_age_s=3600)
    model: list[bytes] = []
    dropped_total = 0
    for op, arg in ops:
        if op == "ack":
            got = sp.peek(arg)
            assert [d for _, d in got] == model[: len(got)]
            if got:
                sp.ack(got[-1][0])
                del model[: len(got)]
            continue
        fits = [p for p in arg if len(p) <= bound]
        dropped_total += len(arg) - len(fits)
        model = fits + model if op == "front" else model + fits
        while sum(map(len, model)) > bound:
            model.pop(0)
            dropped_total += 1
        (sp.push_front if op == "front" else sp.append)(arg)
        assert drain(sp) == model
        assert (sp.count, sp.nbytes) == (len(model), sum(map(len, model)))
    assert sp.totals.size == dropped_total
    sp.close()


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from common.spool import Spool
    sp = Spool(sys.argv[1], max_bytes=1 << 24, max_age_s=3600)
    for i in range(int(sys.argv[2])):
        sp.append([b"%d-%d" % (i, j) for j in range(50)])
    print("appended", flush=True)
    time.sleep(60)
    """
)


def test_data_appended_survives_sigkill_right_after_append_returns(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path), "20"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        # "appended" is printed only after append() returned.
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "writer did not finish its appends within 20 s"
        assert proc.stdout.readline() == b"appended\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    sp = Spool(path, max_bytes=1 << 24, max_age_s=3600)
    want = [b"%d-%d" % (i, j) for i in range(20) for j in range(50)]
    assert sp.count == len(want)
    assert drain(sp) == want


def test_a_wall_clock_step_of_a_year_either_way_expires_nothing(tmp_path, monkeypatch):
    """A gateway boots near 1970, spools through an outage, then NTP steps the
    clock: nothing expires, because ages are on the spool's own clock."""
    mono = [1000.0]
    year = 365 * 24 * 3600.0
    monkeypatch.setattr(time, "time", lambda: 31_536_000.0)  # 1971
    sp = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_s=3600, clock=lambda: mono[0])
    sp.append([b"%04d" % i for i in range(1000)])
    for step in (+50 * year, -50 * year):
        monkeypatch.setattr(time, "time", lambda s=step: 31_536_000.0 + s)
        assert not sp.expire()
        assert sp.count == 1000
    mono[0] += 3599
    assert not sp.expire() and sp.count == 1000
    mono[0] += 2
    assert sp.expire().age == 1000


def test_the_spool_clock_carries_on_across_a_restart(tmp_path):
    mono = [0.0]
    sp = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_s=100, clock=lambda: mono[0])
    sp.append([b"a"])
    mono[0] = 60.0
    sp.close()
    mono[0] = 5.0  # a new boot: the monotonic clock starts over
    sp = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_s=100, clock=lambda: mono[0])
    assert 59.0 <= sp.age() <= 61.0
    mono[0] = 5.0 + 41.0
    assert sp.expire().age == 1


def test_marks_are_stored_with_the_payloads_and_bounded(tmp_path):
    sp = Spool(tmp_path / "s.db", max_bytes=1 << 20, max_age_s=100)
    sp.append([b"a", b"b"], [("uart", 1, 5)])
    assert sp.last_ids[1] == sp.last_ids[0] + 1
    sp.set_marks([("uart", 1, 3)])  # never backwards
    assert sp.marks() == [("uart", 1, 5)]
    sp.set_marks([("uart", i, 0) for i in range(2, 200)])
    assert len(sp.marks()) <= 64

"""The uart's journal (common.journal): replay, torn records, compaction, modes."""

from __future__ import annotations

import os
import stat

from common.journal import Journal


def test_replay_holds_what_was_not_acknowledged_in_order(tmp_path):
    j = Journal(tmp_path / "j", fsync="never")
    first = j.open()
    assert first.units == [] and first.epoch and first.next_n == 0
    epoch = first.epoch
    for n in range(5):
        j.unit(epoch, n, [b"frame%d" % n, b"x"])
    j.ack(epoch, 2)
    j.mark("client", 99, 7)
    j.close()
    again = Journal(tmp_path / "j", fsync="never").open()
    assert again.epoch == epoch and again.next_n == 5
    assert [(i, n, f) for i, n, f in again.units] == [
        (epoch, 3, [b"frame3", b"x"]),
        (epoch, 4, [b"frame4", b"x"]),
    ]
    assert again.marks == {("client", 99): 7}


def test_a_torn_last_record_is_cut_off_and_the_rest_kept(tmp_path):
    path = tmp_path / "j"
    j = Journal(path, fsync="never")
    epoch = j.open().epoch
    j.unit(epoch, 0, [b"whole"])
    j.close()
    whole = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(b"\x00\x00\x01\x00partial")  # a power cut mid-record
    j = Journal(path, fsync="never")
    replay = j.open()
    assert replay.torn_bytes == 11 and [u[2] for u in replay.units] == [[b"whole"]]
    assert path.stat().st_size == whole
    j.unit(epoch, 1, [b"next"])  # appends after the cut, readable again
    j.close()
    assert [u[1] for u in Journal(path, fsync="never").open().units] == [0, 1]


def test_compaction_keeps_held_units_marks_and_numbering(tmp_path):
    path = tmp_path / "j"
    j = Journal(path, fsync="always", compact_bytes=1)
    epoch = j.open().epoch
    for n in range(100):
        j.unit(epoch, n, [b"y" * 100])
    j.ack(epoch, 97)
    assert j.wants_compaction(held_bytes=200)
    before = path.stat().st_size
    j.compact([(epoch, 98, [b"y" * 100]), (epoch, 99, [b"y" * 100])], {("client", 1): 4}, 100)
    assert path.stat().st_size < before / 10
    j.unit(epoch, 100, [b"z"])
    j.close()
    replay = Journal(path, fsync="never").open()
    assert [u[1] for u in replay.units] == [98, 99, 100]
    assert replay.next_n == 101 and replay.epoch == epoch
    assert replay.marks == {("client", 1): 4}


def test_the_journal_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        j = Journal(tmp_path / "j", fsync="never")
        j.open()
        j.compact([], {}, 0)
        j.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "j").stat().st_mode) == 0o600

"""Acknowledged delivery as a pure state machine (common.delivery), no sockets.

The stateful test plays both ends and a hostile path between them: the path
loses, repeats and reorders messages, either end restarts (the sender keeps
what its journal holds, the receiver what it made durable), and the receiver
makes units durable whenever it likes. Whatever happens, what the receiver
made durable is every unit submitted, exactly once, in order.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from common import delivery
from common.delivery import Receiver, Sender, Verdict


def test_sender_numbers_holds_and_releases_cumulatively():
    s: Sender[bytes] = Sender("uart", 7, max_bytes=100)
    units = [s.submit(b"x" * 10, 10, now=0.0) for _ in range(3)]
    assert [u.n for u in units] == [0, 1, 2]
    assert s.ref(units[1]) == ["uart", 7, 1, 0, 0.0]
    assert [u.n for u in s.ack(7, 1, now=1.0)] == [0, 1]
    assert s.base(7) == 2 and s.held_bytes == 10
    assert s.ack(7, 1, now=1.0) == []  # repeated ack: nothing more


def test_sender_room_is_bounded_in_bytes_but_never_stalls_an_empty_stream():
    s: Sender[bytes] = Sender("uart", 1, max_bytes=100)
    assert s.room(1000)  # nothing held: even an oversized unit may go
    s.submit(b"", 90, now=0.0)
    assert s.room(10) and not s.room(11)


def test_resend_timer_doubles_while_nothing_moves_and_resets_on_progress():
    s: Sender[bytes] = Sender("uart", 1, max_bytes=1000)
    s.submit(b"a", 1, now=0.0)
    assert not s.due(delivery.RESEND_MIN_S - 0.01)
    assert s.due(delivery.RESEND_MIN_S)
    s.resend_all(delivery.RESEND_MIN_S)
    assert not s.due(delivery.RESEND_MIN_S * 2.5)  # waits twice as long now
    assert s.due(delivery.RESEND_MIN_S * 3)
    s.submit(b"b", 1, now=10.0)
    s.ack(1, 0, now=10.0)
    assert not s.due(10.0 + delivery.RESEND_MIN_S - 0.01)  # progress: back to the minimum
    assert s.due(10.0 + delivery.RESEND_MIN_S)


def test_adopted_units_of_an_older_instance_go_first_and_keep_their_identity():
    s: Sender[bytes] = Sender("uart", 20, max_bytes=1000)
    s.adopt(10, 5, b"old5", 4, now=0.0)
    s.adopt(10, 6, b"old6", 4, now=0.0)
    s.submit(b"new0", 4, now=0.0)
    assert [(u.inst, u.n) for u in s.resend_all(1.0)] == [(10, 5), (10, 6), (20, 0)]
    assert s.ref(s.held[0]) == ["uart", 10, 5, 5, 0.0]
    # A nack for the new instance brings the old instance's units too (first).
    assert [(u.inst, u.n) for u in s.resend_from(20, 0, 2.0)] == [(10, 5), (10, 6), (20, 0)]


def test_receiver_accepts_in_order_drops_duplicates_and_gaps():
    r = Receiver()
    assert r.offer("uart", 1, 3, base=3) is Verdict.ACCEPT  # a new stream starts at base
    assert r.offer("uart", 1, 3, base=3) is Verdict.DUPLICATE
    assert r.offer("uart", 1, 5, base=3) is Verdict.GAP
    assert r.nack_due("uart", 1, now=0.0) == 4
    assert r.nack_due("uart", 1, now=0.1) is None  # asked just now
    assert r.offer("uart", 1, 4, base=3) is Verdict.ACCEPT
    assert r.durable("uart", 1) == 2
    assert r.made_durable("uart", 1, 4) and r.durable("uart", 1) == 4
    assert not r.made_durable("uart", 1, 3)


def test_receiver_made_durable_never_passes_what_it_accepted():
    r = Receiver()
    r.offer("c", 1, 0, base=0)
    r.made_durable("c", 1, 9)
    assert r.durable("c", 1) == 0


def test_receiver_forgets_the_least_recent_stream_beyond_its_bound():
    r = Receiver(streams_max=2)
    for inst in (1, 2, 3):
        r.offer("uart", inst, 0, base=0)
    assert set(r.streams) == {("uart", 2), ("uart", 3)}


@pytest.mark.parametrize("bad", [None, [1], [1, "2"], [True, 1], {"inst": 1}])
def test_inst_n_rejects_anything_but_two_integers(bad):
    with pytest.raises(ValueError):
        delivery.inst_n(bad)


class Link(RuleBasedStateMachine):
    """A sender and a receiver over a lossy, repeating, reordering path."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = random.Random(0)
        self.inst = 1
        self.sender: Sender[int] = Sender("uart", self.inst, max_bytes=50)
        self.journal: list[tuple[int, int, int]] = []  # (inst, n, item): what survives a kill
        self.receiver = Receiver()
        self.persisted: dict[tuple[str, int], int] = {}  # the receiver's stored marks
        self.path: list[tuple[str, list[object]]] = []  # messages in flight, either way
        self.accepted: list[int] = []  # items taken in, not durable yet
        self.delivered: list[int] = []  # what the receiver made durable, in order
        self.submitted: list[int] = []
        self.now = 0.0
        self.next_item = 0

    # -- the sender -------------------------------------------------------------

    @precondition(lambda self: self.sender.room(1))
    @rule()
    def submit(self) -> None:
        item = self.next_item
        self.next_item += 1
        unit = self.sender.submit(item, 1, self.now)
        self.journal.append((unit.inst, unit.n, item))
        self.submitted.append(item)
        self.path.append(("unit", [*self.sender.ref(unit), item]))

    @rule()
    def sender_restarts(self) -> None:
        """SIGKILL and restart: only the journal survives. The stream (its
        epoch) and the numbering go on; held units keep their identities."""
        sender: Sender[int] = Sender("uart", self.inst, max_bytes=50)
        sender.next_n = self.sender.next_n
        for inst, n, item in self.journal:
            if any(u.inst == inst and u.n == n for u in self.sender.held):
                sender.adopt(inst, n, item, 1, self.now)
        self.sender = sender
        for unit in sender.resend_all(self.now):
            self.path.append(("unit", [*sender.ref(unit), unit.item]))

    @rule()
    def sender_timer(self) -> None:
        self.now += delivery.RESEND_MAX_S
        if self.sender.due(self.now):
            for unit in self.sender.resend_all(self.now):
                self.path.append(("unit", [*self.sender.ref(unit), unit.item]))

    # -- the path ------------------------------------------------------------------

    @precondition(lambda self: self.path)
    @rule(data=st.data())
    def deliver_one(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.path) - 1))
        kind, msg = self.path.pop(i)
        if kind == "unit":
            self._on_unit(msg)
        elif kind == "ack":
            self.sender.ack(int(msg[0]), int(msg[1]), self.now)  # type: ignore[arg-type]
        else:
            for unit in self.sender.resend_from(int(msg[0]), int(msg[1]), self.now):  # type: ignore[arg-type]
                self.path.append(("unit", [*self.sender.ref(unit), unit.item]))

    @precondition(lambda self: self.path)
    @rule(data=st.data())
    def lose_one(self, data: st.DataObject) -> None:
        self.path.pop(data.draw(st.integers(0, len(self.path) - 1)))

    @precondition(lambda self: self.path)
    @rule(data=st.data())
    def repeat_one(self, data: st.DataObject) -> None:
        self.path.append(self.path[data.draw(st.integers(0, len(self.path) - 1))])

    # -- the receiver ----------------------------------------------------------------

    def _on_unit(self, msg: list[object]) -> None:
        src, inst, n, base, _born, item = msg
        assert isinstance(src, str) and isinstance(inst, int)
        assert isinstance(n, int) and isinstance(base, int) and isinstance(item, int)
        verdict = self.receiver.offer(src, inst, n, base)
        if verdict is Verdict.ACCEPT:
            self.accepted.append((src, inst, n, item))  # type: ignore[arg-type]
        elif verdict is Verdict.DUPLICATE:
            durable = self.receiver.durable(src, inst)
            if durable >= 0:
                self.path.append(("ack", [inst, durable]))
        else:
            want = self.receiver.nack_due(src, inst, self.now)
            if want is not None:
                self.path.append(("nack", [inst, want]))

    @precondition(lambda self: self.accepted)
    @rule(k=st.integers(1, 5))
    def make_durable(self, k: int) -> None:
        """The receiver makes its oldest accepted units safe, in order."""
        for src, inst, n, item in self.accepted[:k]:  # type: ignore[misc]
            self.receiver.made_durable(src, inst, n)
            self.persisted[(src, inst)] = n
            self.delivered.append(item)
            self.path.append(("ack", [inst, n]))
        del self.accepted[:k]

    @rule()
    def receiver_restarts(self) -> None:
        """What was accepted but not durable is lost; the stored marks survive."""
        self.accepted.clear()
        self.receiver = Receiver()
        for (src, inst), n in self.persisted.items():
            self.receiver.load(src, inst, n)

    @rule()
    def advance(self) -> None:
        self.now += 0.3

    # -- what must hold ------------------------------------------------------------------

    @invariant()
    def delivered_once_in_order(self) -> None:
        assert self.delivered == self.submitted[: len(self.delivered)]

    @invariant()
    def held_within_bounds(self) -> None:
        assert self.sender.held_bytes <= max(self.sender.max_bytes, 1)

    def teardown(self) -> None:
        """Heal the path: with no more losses, everything is delivered."""
        for _ in range(200):
            if len(self.delivered) == len(self.submitted):
                break
            self.now += delivery.RESEND_MAX_S
            for unit in self.sender.resend_all(self.now):
                self._on_unit([*self.sender.ref(unit), unit.item])
            while self.accepted:
                self.make_durable(len(self.accepted))
            for kind, msg in self.path:
                if kind == "ack":
                    self.sender.ack(int(msg[0]), int(msg[1]), self.now)  # type: ignore[arg-type]
            self.path.clear()
        assert self.delivered == self.submitted


TestLink = Link.TestCase
TestLink.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


def test_ack_releases_a_stream_held_behind_another_instances_units():
    """After a lost journal an older epoch's units are held ahead of the new
    ones: an ack of the new stream must still release exactly its units."""
    s: Sender[bytes] = Sender("uart", 20, max_bytes=1000)
    s.adopt(10, 5, b"a", 1, now=0.0)
    s.adopt(10, 6, b"b", 1, now=0.0)
    s.submit(b"c", 1, now=0.0)
    s.submit(b"d", 1, now=0.0)
    assert [(u.inst, u.n) for u in s.ack(20, 0, now=1.0)] == [(20, 0)]
    assert [(u.inst, u.n) for u in s.held] == [(10, 5), (10, 6), (20, 1)]
    assert [(u.inst, u.n) for u in s.ack(10, 6, now=1.0)] == [(10, 5), (10, 6)]
    assert [(u.inst, u.n) for u in s.held] == [(20, 1)] and s.held_bytes == 1

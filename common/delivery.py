"""Acknowledged delivery: the bookkeeping of both ends of a stream, with no I/O.

A *stream* is what one owner sends in order: the uart's batches of meter
frames (uplink), the client's chunks of HES data (downlink). Each *unit* of a
stream has a ``bus.Ref``: the owner's name and instance, its number ``n``
(0, 1, 2 ... per instance) and ``base``, the lowest number the owner still
holds. A unit keeps its ref for life, also when a restarted owner sends it
again from its journal.

``Sender`` (the owner) numbers units and holds each one until the receiver
acknowledges it, cumulatively (``ack(inst, n)``: everything up to ``n`` is
safe). It never drops: it is bounded in bytes, and ``room()`` tells the owner
to stop taking input (to stop reading the serial port or the HES socket), so
the bound pushes back instead. ``resend_from`` and ``due`` say what to send
again (go-back-N: everything held from a unit on, in order) after a nack, a
restart somewhere on the path, or a silence.

``Receiver`` decides, for each arriving unit, whether it is the next one of
its stream (``ACCEPT``), one it already has (``DUPLICATE``: dropped, its
ack repeated) or one after a gap (``GAP``: dropped, the gap is asked for
with a nack and the resend fills it). It keeps two marks per stream:
``accepted`` (taken in) and ``durable`` (made safe by the caller: spooled,
written, acknowledged by the HES); only ``durable`` is acknowledged, and the
caller persists it so that a restarted receiver still drops what it had.

So a unit is delivered once and in order whatever is lost, repeated or
reordered between the two, and whichever single process restarts: the
sender holds everything not yet durable at the receiver, the receiver
refuses everything it already has.

Times are arguments (monotonic seconds), so tests drive the clock.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: First wait for an ack before the sender sends everything held again ...
RESEND_MIN_S = 2.0
#: ... doubling while nothing moves, up to this.
RESEND_MAX_S = 30.0
#: Streams a receiver remembers (least recently used ones are forgotten).
STREAMS_MAX = 64
#: A receiver asks again for the same missing unit after this long.
NACK_REPEAT_S = 0.5


class Unit(Generic[T]):
    """One held unit: its stream instance, number, size and the caller's item."""

    # A plain class (not a dataclass): dataclasses costs every process its own memory.
    __slots__ = ("inst", "n", "size", "item", "born")

    def __init__(self, inst: int, n: int, size: int, item: T, born: float = 0.0) -> None:
        self.inst = inst
        self.n = n
        self.size = size
        self.item = item
        self.born = born  # monotonic time it was taken (for latency figures)

    def __repr__(self) -> str:
        return (
            f"Unit(inst={self.inst!r}, n={self.n!r}, size={self.size!r}, "
            f"item={self.item!r}, born={self.born!r})"
        )


class Sender(Generic[T]):
    """The owner's end: numbering, holding until acknowledged, resending.

    ``name`` is the owner's bus name, ``inst`` this process's instance.
    Units adopted from a journal keep their older instance; they are held
    (and sent again) ahead of this instance's own, in the order adopted.
    """

    def __init__(self, name: str, inst: int, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.name = name
        self.inst = inst
        self.max_bytes = max_bytes
        self.next_n = 0
        self.held: collections.deque[Unit[T]] = collections.deque()
        self.held_bytes = 0
        self._waiting_since: float | None = None  # when the oldest unacked wait began
        self._resend_after = RESEND_MIN_S
        self.resends = 0  # units sent again, ever

    # -- taking units ------------------------------------------------------------

    def room(self, size: int = 0) -> bool:
        """Whether a unit of ``size`` bytes may be taken now (one always may
        when nothing is held, so an oversized unit cannot stall the stream)."""
        return not self.held or self.held_bytes + size <= self.max_bytes

    def submit(self, item: T, size: int, now: float) -> Unit[T]:
        """Number and hold a new unit of this instance."""
        unit = Unit(self.inst, self.next_n, size, item)
        self.next_n += 1
        self._hold(unit, now)
        return unit

    def adopt(self, inst: int, n: int, item: T, size: int, now: float) -> Unit[T]:
        """Hold a unit of an earlier instance (replayed from a journal)."""
        unit = Unit(inst, n, size, item)
        if inst == self.inst:
            self.next_n = max(self.next_n, n + 1)
        self._hold(unit, now)
        return unit

    def _hold(self, unit: Unit[T], now: float) -> None:
        unit.born = now
        if not self.held:
            self._waiting_since = now
            self._resend_after = RESEND_MIN_S
        self.held.append(unit)
        self.held_bytes += unit.size

    def base(self, inst: int) -> int:
        """The lowest number of ``inst`` still held (the next one if none is)."""
        for unit in self.held:
            if unit.inst == inst:
                return unit.n
        return self.next_n if inst == self.inst else 0

    def ref(self, unit: Unit[T]) -> list[object]:
        """The unit's wire ref ``[src, inst, n, base, born]``."""
        return [self.name, unit.inst, unit.n, self.base(unit.inst), unit.born]

    # -- acknowledgements ----------------------------------------------------------

    def ack(self, inst: int, n: int, now: float) -> list[Unit[T]]:
        """Units of ``inst`` up to ``n`` are safe: release them (returned, oldest first).

        Acks come per unit, so the common case (the acknowledged units are at
        the front) costs only what it releases; the whole deque is looked at
        only when units of another instance are held ahead of them.
        """
        released: list[Unit[T]] = []
        held = self.held
        while held and held[0].inst == inst and held[0].n <= n:
            unit = held.popleft()
            released.append(unit)
            self.held_bytes -= unit.size
        if held and held[0].inst != inst:
            kept: collections.deque[Unit[T]] = collections.deque()
            for unit in held:
                if unit.inst == inst and unit.n <= n:
                    released.append(unit)
                    self.held_bytes -= unit.size
                else:
                    kept.append(unit)
            self.held = kept
        if released:
            self._waiting_since = now if self.held else None
            self._resend_after = RESEND_MIN_S
        return released

    # -- sending again ---------------------------------------------------------------

    def resend_from(self, inst: int, n: int, now: float) -> list[Unit[T]]:
        """Everything held from unit ``(inst, n)`` on, in order (a nack).

        Units of other instances held before it come too: go-back-N keeps the
        receiver's view of every stream in order.
        """
        if not any(u.inst == inst and u.n >= n for u in self.held):
            return []
        out = [u for u in self.held if u.inst != inst or u.n >= n]
        self._sent_again(out, now)
        return out

    def resend_all(self, now: float) -> list[Unit[T]]:
        """Everything held, in order (a restart on the path was seen)."""
        out = list(self.held)
        self._sent_again(out, now)
        return out

    def due(self, now: float) -> bool:
        """True when the oldest held unit has waited too long for an ack; the
        caller then calls ``resend_all``. Waits double while nothing moves."""
        if self._waiting_since is None or not self.held:
            return False
        return now - self._waiting_since >= self._resend_after

    def _sent_again(self, units: list[Unit[T]], now: float) -> None:
        if not units:
            return
        self.resends += len(units)
        if self._waiting_since is not None and now - self._waiting_since >= self._resend_after:
            self._resend_after = min(self._resend_after * 2, RESEND_MAX_S)
        self._waiting_since = now


class Verdict(enum.Enum):
    ACCEPT = "accept"
    DUPLICATE = "duplicate"
    GAP = "gap"


class StreamState:
    __slots__ = ("accepted", "durable", "nacked", "nacked_at")

    def __init__(
        self, accepted: int, durable: int, nacked: int = -1, nacked_at: float = -1e18
    ) -> None:
        self.accepted = accepted  # last unit taken in (-1: none)
        self.durable = durable  # last unit made safe (-1: none)
        self.nacked = nacked  # unit last asked for ...
        self.nacked_at = nacked_at  # ... and when

    def __repr__(self) -> str:
        return (
            f"StreamState(accepted={self.accepted!r}, durable={self.durable!r}, "
            f"nacked={self.nacked!r}, nacked_at={self.nacked_at!r})"
        )


class Receiver:
    """The receiving end of any number of streams (by ``(src, inst)``)."""

    def __init__(self, streams_max: int = STREAMS_MAX) -> None:
        self.streams: collections.OrderedDict[tuple[str, int], StreamState] = (
            collections.OrderedDict()
        )
        self.streams_max = streams_max
        self.resyncs = 0
        self.last_resync: tuple[str, int, int, int] | None = None

    def load(self, src: str, inst: int, durable: int) -> None:
        """What a persisted mark says was made safe before a restart."""
        self.streams[(src, inst)] = StreamState(durable, durable)
        self._bound()

    def offer(self, src: str, inst: int, n: int, base: int) -> Verdict:
        """Decide on unit ``n`` of stream ``(src, inst)``; ACCEPT takes it in."""
        key = (src, inst)
        st = self.streams.get(key)
        if st is None:
            st = self.streams[key] = StreamState(base - 1, base - 1)
            self._bound()
        else:
            self.streams.move_to_end(key)
            if base > st.accepted + 1:
                # The owner no longer holds what we expect: someone acknowledged
                # it (a state we lost). Carry on from what it still has; the
                # caller counts and logs the units skipped (``last_resync``).
                self.resyncs += 1
                self.last_resync = (src, inst, st.accepted + 1, base - 1)
                st.accepted = st.durable = base - 1
        if n <= st.accepted:
            return Verdict.DUPLICATE
        if n == st.accepted + 1:
            st.accepted = n
            return Verdict.ACCEPT
        return Verdict.GAP

    def take_resync(self) -> tuple[str, int, int, int] | None:
        """The last resync ``(src, inst, first, last)`` skipped, once."""
        out, self.last_resync = self.last_resync, None
        return out

    def unaccept(self, src: str, inst: int, n: int) -> None:
        """Forget that unit ``n`` was taken in (the caller could not keep it):
        it is a gap again, and its owner sends it again."""
        st = self.streams.get((src, inst))
        if st is not None and st.accepted == n and n > st.durable:
            st.accepted = n - 1

    def expected(self, src: str, inst: int) -> int:
        st = self.streams.get((src, inst))
        return 0 if st is None else st.accepted + 1

    def nack_due(self, src: str, inst: int, now: float) -> int | None:
        """The unit to ask for after a GAP, or None if it was asked for just now."""
        st = self.streams.get((src, inst))
        if st is None:
            return None
        want = st.accepted + 1
        if st.nacked == want and now - st.nacked_at < NACK_REPEAT_S:
            return None
        st.nacked, st.nacked_at = want, now
        return want

    def made_durable(self, src: str, inst: int, n: int) -> bool:
        """Units up to ``n`` are safe; True if that moved the durable mark."""
        st = self.streams.get((src, inst))
        if st is None or n <= st.durable:
            return False
        st.durable = min(n, st.accepted)
        return True

    def durable(self, src: str, inst: int) -> int:
        st = self.streams.get((src, inst))
        return -1 if st is None else st.durable

    def marks(self) -> Iterator[tuple[str, int, int]]:
        """``(src, inst, durable)`` of every stream with something durable."""
        for (src, inst), st in self.streams.items():
            if st.durable >= 0:
                yield src, inst, st.durable

    def _bound(self) -> None:
        while len(self.streams) > self.streams_max:
            self.streams.popitem(last=False)


def last_per_stream(refs: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    """The highest ``n`` per ``(src, inst)`` among ``refs``."""
    out: dict[tuple[str, int], int] = {}
    for src, inst, n in refs:
        key = (src, inst)
        if out.get(key, -1) < n:
            out[key] = n
    return out


def inst_n(data: Any) -> tuple[int, int]:
    """``[inst, n]``, the data of an ack or a nack; ValueError for anything else."""
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in data)
    ):
        raise ValueError(f"ack/nack data must be [inst, n], got {data!r}")
    return data[0], data[1]

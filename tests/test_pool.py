"""The resolver pool as a pure state machine (common.pool), no sockets.

Workers join, answer in any order, answer late or twice, stall, die and
become unreachable; the clock jumps past their liveness. Whatever happens,
every job submitted is released exactly once, in its stream's order.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from common.pool import Job, Pool

LIVENESS = 2.0


def make_pool(**kw: int) -> Pool:
    return Pool(
        backlog_max_frames=kw.get("frames", 1000),
        backlog_max_bytes=kw.get("bytes", 1 << 20),
        max_attempts=kw.get("attempts", 3),
        liveness_s=LIVENESS,
    )


def test_results_are_released_in_submission_order_per_stream():
    pool = make_pool()
    sent: list[tuple[bytes, Job]] = []
    pool.worker_ready(b"w1", 4, 1, now=0.0)
    for i in range(3):
        assert pool.submit("uart", b"env%d" % i, 1, ["uart", 1, i, 0], now=0.0)
    pool.assign(lambda ident, job: sent.append((ident, job)) or True)
    ids = [job.id for _, job in sent]
    assert pool.result(b"w1", ids[2], ["r2"], now=0.1) == []  # waits for 0 and 1
    assert pool.result(b"w1", ids[1], ["r1"], now=0.1) == []
    released = pool.result(b"w1", ids[0], ["r0"], now=0.1)
    assert [out for _, out in released] == [["r0"], ["r1"], ["r2"]]
    assert released[0][0].ref == ["uart", 1, 0, 0]


def test_backlog_is_bounded_in_bytes():
    pool = make_pool(bytes=10)
    assert pool.submit("uart", b"x" * 10, 1, None, now=0.0)
    assert not pool.submit("uart", b"y", 1, None, now=0.0)
    assert pool.counters["drop.pool_backlog"] == 1


def test_a_job_failing_on_every_worker_is_released_empty():
    pool = make_pool(attempts=2)
    for k in range(2):
        pool.worker_ready(b"w%d" % k, 1, k, now=0.0)
    pool.submit("uart", b"poison", 1, None, now=0.0)
    out = []
    for _ in range(2):
        pool.assign(lambda ident, job: True)
        busy = next(w for w in pool.workers.values() if w.inflight)
        out += pool.worker_gone(busy.ident)
    assert [o for _, o in out] == [None]
    assert pool.counters["drop.pool_attempts"] == 1


class Pooled(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = make_pool(attempts=1000)  # redelivery, never a give-up, in this test
        self.now = 0.0
        self.submitted: dict[str, list[int]] = {"a": [], "b": []}
        self.released: dict[str, list[int]] = {"a": [], "b": []}
        self.answers: list[tuple[bytes, int]] = []  # (worker, job id) a worker may answer
        self.jobs: dict[int, tuple[str, int]] = {}
        self.unreachable: set[bytes] = set()
        self.n = 0
        self.next_worker = 0

    def _send(self, ident: bytes, job: Job) -> bool:
        if ident in self.unreachable:
            return False
        self.answers.append((ident, job.id))
        self.jobs[job.id] = (job.key, int(job.env))
        return True

    def _take(self, released: list[tuple[Job, object]]) -> None:
        for job, out in released:
            assert out == ["out", int(job.env)]
            self.released[job.key].append(int(job.env))

    @rule(key=st.sampled_from(["a", "b"]))
    def submit(self, key: str) -> None:
        self.n += 1
        assert self.pool.submit(key, str(self.n).encode(), 1, None, self.now)
        self.submitted[key].append(self.n)

    @rule(capacity=st.integers(1, 4))
    def join(self, capacity: int) -> None:
        self.next_worker += 1
        self._take(self.pool.worker_ready(b"w%d" % self.next_worker, capacity, 0, self.now))

    @rule()
    def assign(self) -> None:
        self.pool.assign(self._send)

    @precondition(lambda self: self.answers)
    @rule(data=st.data(), keep=st.booleans())
    def answer(self, data: st.DataObject, keep: bool) -> None:
        """A worker answers one of its jobs, perhaps late; keep=True answers it again later."""
        i = data.draw(st.integers(0, len(self.answers) - 1))
        ident, job_id = self.answers[i] if keep else self.answers.pop(i)
        _, value = self.jobs[job_id]
        self._take(self.pool.result(ident, job_id, ["out", value], self.now))

    @precondition(lambda self: self.pool.workers)
    @rule(data=st.data())
    def die(self, data: st.DataObject) -> None:
        ident = data.draw(st.sampled_from(sorted(self.pool.workers)))
        self.answers = [(w, j) for w, j in self.answers if w != ident]
        self._take(self.pool.worker_gone(ident))

    @precondition(lambda self: self.pool.workers)
    @rule(data=st.data())
    def becomes_unreachable(self, data: st.DataObject) -> None:
        self.unreachable.add(data.draw(st.sampled_from(sorted(self.pool.workers))))

    @precondition(lambda self: self.pool.workers)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        self.pool.worker_seen(data.draw(st.sampled_from(sorted(self.pool.workers))), self.now)

    @rule(dt=st.sampled_from([0.1, LIVENESS + 0.1]))
    def clock(self, dt: float) -> None:
        self.now += dt
        _, released = self.pool.expire(self.now)
        self._take(released)

    @invariant()
    def released_once_in_order(self) -> None:
        for key in ("a", "b"):
            assert self.released[key] == self.submitted[key][: len(self.released[key])]

    def teardown(self) -> None:
        """A healthy worker joins and every pending answer arrives: all is released."""
        self.join(8)
        for _ in range(1000):
            self.pool.assign(self._send)
            if not self.answers:
                break
            ident, job_id = self.answers.pop(0)
            self._take(self.pool.result(ident, job_id, ["out", self.jobs[job_id][1]], self.now))
            if ident in self.unreachable or ident not in self.pool.workers:
                self.join(8)
        for key in ("a", "b"):
            assert self.released[key] == self.submitted[key]


TestPooled = Pooled.TestCase
TestPooled.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)

"""The resolver pool: credit, ordering, redelivery and duplicate suppression, no I/O.

The broker is a thin loop around ``Pool``: it feeds it events (a job
submitted, a worker ready or heard from, a result, the clock) and carries out
what it returns (send a job to a worker, release a result to its
destinations). Nothing here touches a socket, so the rules below are checked
by property tests that kill, stall and delay workers at will.

- **Credit.** A worker announces its capacity; it is given at most that many
  jobs at once. The worker with the most credit is chosen, ties taken in
  turn, so that at low rates every worker takes its share.
- **Order.** Jobs from one source (a stream key, the sender's name) are
  released in the order they were submitted, whatever order workers finish
  in: a finished job waits for those before it.
- **Redelivery.** A worker that stops heartbeating, or cannot be reached, is
  forgotten; its unfinished jobs go back to the front of the queue, oldest
  first. After ``max_attempts`` workers a job is released empty (``None``)
  and counted, so one poison frame cannot stop its stream for good.
- **Once.** A result for a job that is no longer held (released already, or
  from before a restart) is counted as a duplicate and ignored.
- **Bounds.** The queue of jobs waiting for a worker is bounded in frames
  and bytes; a job beyond the bound is refused (``submit`` returns False) and
  the caller counts the drop.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

# Plain classes with slots, not dataclasses: dataclasses costs every process its own memory.


class Job:
    """Frames from one source message, waiting for or held by a worker."""

    __slots__ = ("id", "key", "ordinal", "env", "nframes", "ref", "attempts", "worker")

    def __init__(
        self,
        id: int,
        key: str,
        ordinal: int,
        env: bytes,
        nframes: int,
        ref: Any = None,
        attempts: int = 0,
        worker: bytes | None = None,
    ) -> None:
        self.id = id
        self.key = key  # the ordering stream: the source's name
        self.ordinal = ordinal  # position in that stream
        self.env = env  # the source's envelope, forwarded untouched
        self.nframes = nframes
        self.ref = ref  # the source message's delivery ref (wire form), if any
        self.attempts = attempts
        self.worker = worker

    def __repr__(self) -> str:
        return (
            f"Job(id={self.id!r}, key={self.key!r}, ordinal={self.ordinal!r}, "
            f"env={self.env!r}, nframes={self.nframes!r}, ref={self.ref!r}, "
            f"attempts={self.attempts!r}, worker={self.worker!r})"
        )


class Worker:
    __slots__ = ("ident", "capacity", "last_seen", "pid", "inflight")

    def __init__(
        self,
        ident: bytes,
        capacity: int,
        last_seen: float,
        pid: int = 0,
        inflight: dict[int, Job] | None = None,
    ) -> None:
        self.ident = ident
        self.capacity = capacity
        self.last_seen = last_seen
        self.pid = pid
        self.inflight: dict[int, Job] = {} if inflight is None else inflight

    def __repr__(self) -> str:
        return (
            f"Worker(ident={self.ident!r}, capacity={self.capacity!r}, "
            f"last_seen={self.last_seen!r}, pid={self.pid!r}, inflight={self.inflight!r})"
        )

    @property
    def credit(self) -> int:
        return self.capacity - len(self.inflight)


class Stream:
    """Release order for one source: results wait here until their turn."""

    __slots__ = ("next_ordinal", "next_release", "done", "last_active")

    def __init__(
        self,
        next_ordinal: int = 0,
        next_release: int = 0,
        done: dict[int, tuple[Job, Any]] | None = None,
        last_active: float = 0.0,
    ) -> None:
        self.next_ordinal = next_ordinal
        self.next_release = next_release
        self.done: dict[int, tuple[Job, Any]] = {} if done is None else done
        self.last_active = last_active

    def __repr__(self) -> str:
        return (
            f"Stream(next_ordinal={self.next_ordinal!r}, next_release={self.next_release!r}, "
            f"done={self.done!r}, last_active={self.last_active!r})"
        )


#: A released job and its outputs (None: it failed and is released empty).
Release = tuple[Job, Any]


class Pool:
    """See the module docstring. ``now`` arguments are monotonic seconds."""

    def __init__(
        self,
        *,
        backlog_max_frames: int,
        backlog_max_bytes: int,
        max_attempts: int,
        liveness_s: float,
        first_job_id: int = 0,
    ) -> None:
        self.backlog_max_frames = backlog_max_frames
        self.backlog_max_bytes = backlog_max_bytes
        self.max_attempts = max_attempts
        self.liveness_s = liveness_s
        self.workers: dict[bytes, Worker] = {}
        self.queue: collections.deque[Job] = collections.deque()
        self.queued_frames = 0
        self.queued_bytes = 0
        self.jobs: dict[int, Job] = {}
        self.streams: dict[str, Stream] = {}
        self._rr = 0
        self._job_id = first_job_id
        self.counters: collections.Counter[str] = collections.Counter()

    # -- events ------------------------------------------------------------------

    def submit(self, key: str, env: bytes, nframes: int, ref: Any, now: float) -> bool:
        """Queue a job; False (nothing queued) when the backlog is full."""
        if (
            self.queued_frames + nframes > self.backlog_max_frames
            or self.queued_bytes + len(env) > self.backlog_max_bytes
        ):
            self.counters["drop.pool_backlog"] += nframes
            return False
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = Stream()
        stream.last_active = now
        self._job_id += 1
        job = Job(self._job_id, key, stream.next_ordinal, env, nframes, ref)
        stream.next_ordinal += 1
        self.jobs[job.id] = job
        self._enqueue(job, front=False)
        self.counters["pool.frames_in"] += nframes
        return True

    def worker_ready(self, ident: bytes, capacity: int, pid: int, now: float) -> list[Release]:
        """A worker (re)announced itself; a known one restarted with the same ident."""
        released: list[Release] = []
        old = self.workers.get(ident)
        if old is not None:
            released = self.worker_gone(ident)
        self.workers[ident] = Worker(ident, capacity, now, pid)
        return released

    def worker_seen(self, ident: bytes, now: float, capacity: int | None = None) -> bool:
        """A heartbeat; False if the worker is not known (it must announce itself)."""
        worker = self.workers.get(ident)
        if worker is None:
            return False
        worker.last_seen = now
        if capacity is not None:
            worker.capacity = capacity
        return True

    def result(self, ident: bytes, job_id: int, outputs: Any, now: float) -> list[Release]:
        """A worker's answer for ``job_id``; returns what can be released now."""
        worker = self.workers.get(ident)
        if worker is not None:
            worker.last_seen = now
            worker.inflight.pop(job_id, None)
        job = self.jobs.get(job_id)
        if job is None:
            self.counters["pool.duplicate_results"] += 1
            return []
        if job.worker is not None and job.worker != ident:
            other = self.workers.get(job.worker)
            if other is not None:
                other.inflight.pop(job_id, None)
        return self._complete(job, outputs)

    def worker_gone(self, ident: bytes) -> list[Release]:
        """Forget a worker; its jobs go back to the front of the queue."""
        worker = self.workers.pop(ident, None)
        if worker is None or not worker.inflight:
            return []
        released: list[Release] = []
        jobs = sorted(worker.inflight.values(), key=lambda j: (j.key, j.ordinal))
        worker.inflight.clear()
        for job in reversed(jobs):
            job.worker = None
            if job.attempts >= self.max_attempts:
                self.counters["drop.pool_attempts"] += job.nframes
                released.extend(self._complete(job, None))
                continue
            self.counters["pool.redelivered"] += 1
            self._enqueue(job, front=True)
        return released

    def expire(self, now: float) -> tuple[list[bytes], list[Release]]:
        """Forget workers silent for longer than the liveness; (their idents, releases)."""
        gone: list[bytes] = []
        released: list[Release] = []
        for worker in list(self.workers.values()):
            if now - worker.last_seen > self.liveness_s:
                gone.append(worker.ident)
                released.extend(self.worker_gone(worker.ident))
        for key, stream in list(self.streams.items()):
            idle = now - stream.last_active > 60
            if idle and not stream.done and stream.next_release == stream.next_ordinal:
                del self.streams[key]
        return gone, released

    # -- actions -----------------------------------------------------------------------

    def assign(self, send: Callable[[bytes, Job], bool]) -> None:
        """Give queued jobs to workers with credit; ``send(ident, job)`` carries
        one out and returns False if that worker cannot be reached (it is then
        forgotten and the job stays first in line)."""
        while self.queue:
            worker = self._next_worker()
            if worker is None:
                return
            job = self.queue.popleft()
            self.queued_frames -= job.nframes
            self.queued_bytes -= len(job.env)
            if job.id not in self.jobs:
                continue  # completed by a worker we had given up on
            if not send(worker.ident, job):
                self._enqueue(job, front=True)
                self.worker_gone(worker.ident)
                continue
            job.attempts += 1
            job.worker = worker.ident
            worker.inflight[job.id] = job

    # -- internals ---------------------------------------------------------------------

    def _enqueue(self, job: Job, front: bool) -> None:
        if front:
            self.queue.appendleft(job)
        else:
            self.queue.append(job)
        self.queued_frames += job.nframes
        self.queued_bytes += len(job.env)

    def _next_worker(self) -> Worker | None:
        best: Worker | None = None
        workers = list(self.workers.values())
        n = len(workers)
        for k in range(n):
            w = workers[(self._rr + k) % n]
            if w.credit > 0 and (best is None or w.credit > best.credit):
                best = w
        if best is not None:
            self._rr = (workers.index(best) + 1) % n
        return best

    def _complete(self, job: Job, outputs: Any) -> list[Release]:
        del self.jobs[job.id]
        stream = self.streams[job.key]
        stream.done[job.ordinal] = (job, outputs)
        self.counters["pool.frames_out"] += job.nframes
        released: list[Release] = []
        while stream.next_release in stream.done:
            released.append(stream.done.pop(stream.next_release))
            stream.next_release += 1
        return released

    # -- state -------------------------------------------------------------------------

    @property
    def inflight_jobs(self) -> int:
        return sum(len(w.inflight) for w in self.workers.values())

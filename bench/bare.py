"""The limit: the pipeline's topology in bare pyzmq, with msgpack and no work.

producer -> broker process -> worker process -> broker process -> sink, all
PUSH/PULL over ipc, one msgpack message per batch of frames as the uart sends
them, so the figure is what ZeroMQ and msgpack alone cost for the same shape
of traffic. It is measured as the pipeline is: every frame of a burst is sent
as fast as the producer can, and the rate is frames / (first send -> last
frame received), with every frame counted at the sink.

``run_many(frames, batch, repeats)`` starts the two processes once and times
``repeats`` bursts; ``batch`` may be fractional (a mean): the burst is then cut
into ``round(frames / batch)`` batches of nearly equal size. ``run()`` is one
burst. ``python -m bench.bare`` prints the limit for a few batch sizes.

It is a throughput limit only. Its latency figures were dropped: they were
taken after the stack had stopped, not interleaved with it and outside the
busy-machine windows, so other load on a shared machine fell on them alone and
they could read slower than the whole stack; and they timed another path (zmq
sockets at both ends, one frame per message; at 100/s mostly idle threads
waking). The stack's tap trace (``pipeline.breakdown_run``) times the four hops
themselves, and ser2net (``bench.ser2net``) is the reference for the whole path.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from typing import Any

import msgpack
import zmq

STOP = b"stop"
#: Longest the sink waits for the next message before the burst counts as stalled.
STALL_S = 10.0
#: How long the processes get to start and bind.
START_S = 20.0
#: Settle time for the connects before the first burst (zmq connects are async).
CONNECT_SETTLE_S = 0.2


def _broker(d: str, ready: Any) -> None:
    ctx = zmq.Context()
    a_in = ctx.socket(zmq.PULL)
    a_in.bind(f"ipc://{d}/a_in")
    to_worker = ctx.socket(zmq.PUSH)
    to_worker.bind(f"ipc://{d}/to_worker")
    b_in = ctx.socket(zmq.PULL)
    b_in.bind(f"ipc://{d}/b_in")
    to_sink = ctx.socket(zmq.PUSH)
    to_sink.bind(f"ipc://{d}/to_sink")
    poller = zmq.Poller()
    poller.register(a_in, zmq.POLLIN)
    poller.register(b_in, zmq.POLLIN)
    ready.set()
    done = False
    while not done:
        for sock, _ in poller.poll():
            parts = sock.recv_multipart()
            if sock is a_in:
                to_worker.send_multipart(parts)
            else:
                to_sink.send_multipart(parts)
                done = parts[0] == STOP
    ctx.destroy(linger=0)


def _worker(d: str, ready: Any) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(f"ipc://{d}/to_worker")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"ipc://{d}/b_in")
    ready.set()
    while True:
        parts = pull.recv_multipart()
        if parts[0] == STOP:
            push.send_multipart(parts)
            break
        frames = msgpack.unpackb(parts[1])
        push.send_multipart([b"out", msgpack.packb([f[8:-3] for f in frames])])
    ctx.destroy(linger=0)


def batch_sizes(frames: int, batch: float) -> list[int]:
    """Cut ``frames`` into batches whose mean size is as close to ``batch`` as can be."""
    count = max(1, min(frames, round(frames / max(batch, 1.0))))
    base, extra = divmod(frames, count)
    return [base + 1 if i < extra else base for i in range(count)]


class _Topology:
    """The broker and worker processes, and the producer and sink sockets."""

    def __enter__(self) -> tuple[Any, Any]:
        self.dir = tempfile.mkdtemp(prefix="mlb-", dir="/tmp")
        mpctx = mp.get_context("spawn")
        ready_b, ready_w = mpctx.Event(), mpctx.Event()
        self.procs = [
            mpctx.Process(target=_broker, args=(self.dir, ready_b), daemon=True),
            mpctx.Process(target=_worker, args=(self.dir, ready_w), daemon=True),
        ]
        self.ctx = zmq.Context()
        try:
            self.procs[0].start()
            if not ready_b.wait(START_S):
                raise RuntimeError("bare broker did not start")
            self.procs[1].start()
            if not ready_w.wait(START_S):
                raise RuntimeError("bare worker did not start")
            self.push = self.ctx.socket(zmq.PUSH)
            self.push.setsockopt(zmq.LINGER, 0)
            self.push.connect(f"ipc://{self.dir}/a_in")
            self.sink = self.ctx.socket(zmq.PULL)
            self.sink.setsockopt(zmq.LINGER, 0)
            self.sink.connect(f"ipc://{self.dir}/to_sink")
            time.sleep(CONNECT_SETTLE_S)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.push, self.sink

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None and hasattr(self, "sink"):
                self.push.send_multipart([STOP, b""])
                self.sink.poll(5000)
        finally:
            for p in self.procs:
                if p.pid is not None:
                    p.join(5)
                    if p.is_alive():
                        p.kill()
                        p.join(5)
            self.ctx.destroy(linger=0)
            shutil.rmtree(self.dir, ignore_errors=True)


def run_many(
    frames: int = 200_000, batch: float = 50, frame_size: int = 64, repeats: int = 3
) -> list[float]:
    """Frames per second through the bare topology, one figure per burst."""
    with _Topology() as (push, sink):
        frame = b"\x7e" + bytes(frame_size - 2) + b"\x7e"
        batches = [[frame] * n for n in batch_sizes(frames, batch)]
        return [_burst(push, sink, batches, frames) for _ in range(repeats)]


def _burst(push: Any, sink: Any, batches: list[list[bytes]], frames: int) -> float:
    received = 0
    started = time.perf_counter()
    for b in batches:
        push.send_multipart([b"frames", msgpack.packb(b)])
        while sink.poll(0):
            received += len(msgpack.unpackb(sink.recv_multipart()[1]))
    while received < frames:
        if not sink.poll(int(STALL_S * 1000)):
            raise RuntimeError(f"bare pipeline stalled at {received}/{frames} frames")
        received += len(msgpack.unpackb(sink.recv_multipart()[1]))
    elapsed = time.perf_counter() - started
    if received != frames:
        raise RuntimeError(f"bare pipeline delivered {received} frames, sent {frames}")
    return received / elapsed


def run(frames: int = 200_000, batch: float = 50, frame_size: int = 64) -> float:
    """Frames per second through the bare topology (one burst)."""
    return run_many(frames, batch, frame_size, repeats=1)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--batch", type=float, nargs="+", default=[1, 8, 50])
    args = ap.parse_args()
    for b in args.batch:
        rates = run_many(args.frames, b)
        print(f"batch {b:>6g}: {sorted(rates)[len(rates) // 2]:>12,.0f} frames/s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()

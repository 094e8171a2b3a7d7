"""The limit: the pipeline's topology in bare pyzmq, with msgpack and no work.

producer -> broker process -> worker process -> broker process -> sink, all
PUSH/PULL over ipc, one msgpack message per batch of frames exactly as the
uart sends them, so the figure is what ZeroMQ and msgpack alone cost for the
same shape of traffic. ``run(frames, batch)`` returns frames per second.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
from typing import Any

import msgpack
import zmq

STOP = b"stop"


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


def run(frames: int = 200_000, batch: int = 50, frame_size: int = 64) -> float:
    """Frames per second through the bare topology."""
    d = tempfile.mkdtemp(prefix="mlb-", dir="/tmp")
    mpctx = mp.get_context("spawn")
    ready_b, ready_w = mpctx.Event(), mpctx.Event()
    procs = [
        mpctx.Process(target=_broker, args=(d, ready_b)),
        mpctx.Process(target=_worker, args=(d, ready_w)),
    ]
    procs[0].start()
    ready_b.wait(10)
    procs[1].start()
    ready_w.wait(10)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"ipc://{d}/a_in")
    sink = ctx.socket(zmq.PULL)
    sink.connect(f"ipc://{d}/to_sink")
    frame = b"\x7e" + bytes(frame_size - 2) + b"\x7e"
    batches = [[frame] * batch for _ in range(frames // batch)]
    time.sleep(0.2)  # let both connects complete before the clock starts
    received = 0
    started = time.perf_counter()
    sent = 0
    for b in batches:
        push.send_multipart([b"frames", msgpack.packb(b)])
        sent += 1
        while sink.poll(0):
            parts = sink.recv_multipart()
            received += len(msgpack.unpackb(parts[1]))
    while received < len(batches) * batch:
        if not sink.poll(10_000):
            raise RuntimeError("bare pipeline stalled")
        parts = sink.recv_multipart()
        received += len(msgpack.unpackb(parts[1]))
    elapsed = time.perf_counter() - started
    push.send_multipart([STOP, b""])
    sink.poll(5000)
    for p in procs:
        p.join(5)
    ctx.destroy(linger=0)
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)
    return received / elapsed


if __name__ == "__main__":
    print(f"bare pyzmq limit: {run():,.0f} frames/s")

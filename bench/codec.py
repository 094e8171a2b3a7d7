"""Throughput of the frame codec (frames per second on one core).

Measures ``decode``, ``encode`` and ``Deframer.feed`` + ``decode`` for 64- and 256-byte
wire frames, and, as the baseline, checking a frame's FCS with a naive bit-by-bit
CRC-16/X.25 in plain Python. Each figure is the median of several timed repeats, with
their min and max. Run ``python -m bench.codec`` for a table.

The deframer is fed the way a serial reader delivers bytes: ``feed_chunk`` bytes at a
time (a 4 KiB read holds many frames), and also one whole frame per ``feed`` call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from common.rfc1662 import (
    CMD_SERIAL_NET,
    MIN_FRAME,
    PROTO_TRANSPARENT,
    Deframer,
    Frame,
    decode,
    encode,
)

FRAME_SIZES = (64, 256)
REPEATS = 5
FEED_CHUNK = 4096


def naive_fcs16(data: bytes) -> int:
    """CRC-16/X.25 one bit at a time: the obvious pure-Python version (baseline only)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0x8408
            else:
                crc >>= 1
    return crc ^ 0xFFFF


def naive_check(raw: bytes) -> bool:
    """Check a quectel frame's FCS with ``naive_fcs16``."""
    return naive_fcs16(raw[1:-3]) == (raw[-3] << 8) | raw[-2]


def _frames(size: int, count: int) -> list[bytes]:
    rng = os.urandom
    return [
        encode(Frame(PROTO_TRANSPARENT, CMD_SERIAL_NET, rng(size - MIN_FRAME)))
        for _ in range(count)
    ]


def _time(fn: Callable[[], int], seconds: float) -> tuple[float, float, float]:
    """Run ``fn`` (returns frames handled) ``REPEATS`` times for ~seconds in all."""
    per_repeat = seconds / REPEATS
    rates: list[float] = []
    fn()  # warm up
    for _ in range(REPEATS):
        done = 0
        start = time.perf_counter()
        elapsed = 0.0
        while elapsed < per_repeat:
            done += fn()
            elapsed = time.perf_counter() - start
        rates.append(done / elapsed)
    return statistics.median(rates), min(rates), max(rates)


def _cases(size: int) -> dict[str, Callable[[], int]]:
    frames = _frames(size, 256)
    objs = [decode(r) for r in frames]
    stream = b"".join(frames)
    chunks = [stream[i : i + FEED_CHUNK] for i in range(0, len(stream), FEED_CHUNK)]
    slow = frames[:8]

    def do_decode() -> int:
        for raw in frames:
            decode(raw)
        return len(frames)

    def do_encode() -> int:
        for f in objs:
            encode(f)
        return len(objs)

    def do_feed_chunks() -> int:
        d = Deframer()
        n = 0
        for chunk in chunks:
            for raw in d.feed(chunk):
                decode(raw)
                n += 1
        return n

    def do_feed_frames() -> int:
        d = Deframer()
        n = 0
        for chunk in frames:
            for raw in d.feed(chunk):
                decode(raw)
                n += 1
        return n

    def do_naive() -> int:
        for raw in slow:
            if not naive_check(raw):
                raise AssertionError("naive FCS disagrees with encode")
        return len(slow)

    return {
        "decode": do_decode,
        "encode": do_encode,
        f"feed+decode ({FEED_CHUNK} B reads)": do_feed_chunks,
        "feed+decode (1 frame/read)": do_feed_frames,
        "naive bitwise FCS check": do_naive,
    }


def run(seconds: float = 1.0) -> list[dict[str, object]]:
    """Measure every case for each frame size; ``seconds`` is the time per case."""
    results: list[dict[str, object]] = []
    for size in FRAME_SIZES:
        for name, fn in _cases(size).items():
            median, low, high = _time(fn, seconds)
            results.append(
                {
                    "case": name,
                    "frame_bytes": size,
                    "frames_per_s": median,
                    "min": low,
                    "max": high,
                    "mbit_per_s": median * size * 8 / 1e6,
                }
            )
    return results


def format_table(results: list[dict[str, object]]) -> str:
    head = f"{'case':<30} {'bytes':>5} {'frames/s':>12} {'min':>12} {'max':>12} {'Mbit/s':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r['case']!s:<30} {r['frame_bytes']!s:>5} {r['frames_per_s']:>12,.0f} "
            f"{r['min']:>12,.0f} {r['max']:>12,.0f} {r['mbit_per_s']:>8.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per case")
    args = parser.parse_args()
    print(format_table(run(args.seconds)))


if __name__ == "__main__":
    main()

"""Throughput of the DLMS/COSEM APDU codec (APDUs per second on one core).

The typical case is a get-response carrying a register value (double-long-unsigned), as
a meter answers a read of 1.0.1.8.0.255 attribute 2. ``run(quick)`` times ``decode``,
``encode`` and ``describe`` of it, and ``decode`` of a 12-element data-notification
push; each figure is the median of several timed repeats, with their min and max.
Run ``python -m bench.dlms`` for a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from common.dlms import decode, describe, encode

GET_RESPONSE = bytes.fromhex("C401C1000600BC614E")  # iid 1, ok, double-long-unsigned 12345678
PUSH = bytes.fromhex(
    "0f4000000000010c020209060101000281ff0a0b4149444f4e5f5630303031020209060000600100ff0a10"
    "37333539393932393032303831323036020209060000600107ff0a0436353430020309060100010700ff06"
    "0000001102020f00161b020309060100020700ff060000000002020f00161b020309060100030700ff0600"
    "00000002020f00161d020309060100040700ff060000000f02020f00161d0203090601001f0700ff100000"
    "02020fff1621020309060100470700ff10000002020fff1621020309060100200700ff12094402020fff16"
    "23020309060100340700ff12094102020fff1623020309060100480700ff12094b02020fff1623"
)


def _time(fn: Callable[[], object], seconds: float, repeats: int) -> tuple[float, float, float]:
    """Median, min and max calls per second over ``repeats`` runs of ~``seconds`` each."""
    n = 1
    while True:  # calibrate a batch that takes about a tenth of the time slot
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= seconds / 10 or n >= 1 << 22:
            break
        n *= 2
    rates = []
    for _ in range(repeats):
        calls = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(n):
                fn()
            calls += n
        rates.append(calls / (time.perf_counter() - t0))
    return statistics.median(rates), min(rates), max(rates)


def run(quick: bool) -> dict[str, object]:
    """Measure the codec; ``quick`` is a smoke mode that takes well under a second."""
    seconds, repeats = (0.05, 3) if quick else (1.0, 5)
    apdu = decode(GET_RESPONSE)
    cases: dict[str, Callable[[], object]] = {
        "decode get-response": lambda: decode(GET_RESPONSE),
        "encode get-response": lambda: encode(apdu),
        "describe get-response": lambda: describe(apdu),
        "decode data-notification (12 values)": lambda: decode(PUSH),
    }
    results = []
    for name, fn in cases.items():
        median, low, high = _time(fn, seconds, repeats)
        results.append({"case": name, "apdus_per_s": median, "min": low, "max": high})
    return {
        "apdus_per_s": results[0]["apdus_per_s"],
        "apdu": GET_RESPONSE.hex(),
        "results": results,
        "quick": quick,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    out = run(args.quick)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    head = f"{'case':<40} {'APDUs/s':>12} {'min':>12} {'max':>12}"
    print(head)
    print("-" * len(head))
    for r in out["results"]:  # type: ignore[attr-defined]
        print(f"{r['case']:<40} {r['apdus_per_s']:>12,.0f} {r['min']:>12,.0f} {r['max']:>12,.0f}")


if __name__ == "__main__":
    main()

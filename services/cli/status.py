"""status: one screen with the state of a running gateway.

``python -m services.cli.status [--json] [--watch SECONDS] [--timeout SECONDS]``

It subscribes to the broker's state topics (the registry, ``net.status``,
``link.status``, ``serial.status``); the broker sends their last values to
every new subscriber, so the answer comes at once. It shows each service
(pid, uptime, last heartbeat), the serial and HES link state, the network
state and signal quality, and the counters: frames, bad FCS, garbage bytes,
spool depth and every drop, so that logs and status tell the same story.

Exit status 0 when the broker answered, 1 when it did not within --timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import zmq

from common import bus, buskeys
from common.config import load_or_exit
from common.metrics import DLMS_PREFIX, drop_reason, is_latency

TOPICS = (bus.T_REGISTRY, bus.T_NET_STATUS, bus.T_LINK_STATUS, bus.T_SERIAL_STATUS)
#: How long to wait for the optional state topics after the registry came.
SETTLE_S = 0.3


def collect(config: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """Subscribe, wait for the registry (and briefly for the rest), return all."""
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    buskeys.client(sub, config["BUS"], config["_run_dir"], buskeys.TOOLS)
    for topic in TOPICS:
        sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sub.connect(bus.endpoint(config["BUS"], config["_run_dir"], bus.EVENTS_OUT))
    state: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            now = time.monotonic()
            if bus.T_REGISTRY in state:
                deadline = min(deadline, state["_registry_at"] + SETTLE_S)
            if now >= deadline or all(t in state for t in TOPICS):
                break
            if not sub.poll(int((deadline - now) * 1000) + 1):
                continue
            parts = sub.recv_multipart()
            try:
                env = bus.decode(parts[1])
            except (bus.EnvelopeError, IndexError):
                continue
            topic = parts[0].decode(errors="replace")
            state[topic] = env.data
            if topic == bus.T_REGISTRY and "_registry_at" not in state:
                state["_registry_at"] = time.monotonic()
    finally:
        sub.close(linger=0)
        ctx.term()
    state.pop("_registry_at", None)
    return state if bus.T_REGISTRY in state else None


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _since(ts: Any, now: float) -> str:
    return f" for={_age(now - float(ts))}" if isinstance(ts, (int, float)) and ts else ""


def _serial_line(serial: dict[str, Any], now: float) -> str:
    if serial.get("open"):
        return f"open port={serial.get('port')}" + _since(serial.get("since"), now)
    return (
        f"CLOSED port={serial.get('port')} reason={serial.get('error')!r}"
        f" attempts={serial.get('attempts', 0)}" + _since(serial.get("since"), now)
    )


def _link_line(link: dict[str, Any], now: float) -> str:
    where = f"{link.get('host')}:{link.get('port')} spool={link.get('spool_depth', 0)}"
    if link.get("up"):
        return f"up {where}" + _since(link.get("since"), now)
    return f"DOWN {where} reason={link.get('last_error')!r}" + _since(link.get("since"), now)


def summary(state: dict[str, Any]) -> dict[str, Any]:
    """The headline figures from the broker's totals, which survive restarts.

    ``drops`` is the sum of every counter that counts a loss
    (``common.metrics.drop_reason``), the same set as ``meterlink_drops_total``;
    ``drops_by_reason`` breaks it down.
    """
    reg = state[bus.T_REGISTRY]
    by_service: dict[str, dict[str, int]] = reg.get("totals") or {}
    if not by_service:  # an older broker: this instance's figures only
        for svc in reg.get("services", []):
            dest = by_service.setdefault(svc["name"], {})
            for key, value in (svc.get("counters") or {}).items():
                dest[key] = dest.get(key, 0) + int(value)
        by_service[bus.BROKER] = dict(reg.get("broker", {}).get("counters") or {})
    totals = {
        f"{name}.{key}": int(value)
        for name, counters in by_service.items()
        for key, value in counters.items()
    }
    reasons: dict[str, int] = {}
    apdus: dict[str, dict[str, int]] = {"meter_to_hes": {}, "hes_to_meter": {}}
    for name, counters in by_service.items():
        for key, value in counters.items():
            reason = drop_reason(key)
            if reason is not None and value:
                label = f"{name}.{reason}"
                reasons[label] = reasons.get(label, 0) + int(value)
            for prefix, direction in DLMS_PREFIX.items():
                if key.startswith(prefix):
                    apdu = key[len(prefix) :]
                    apdus[direction][apdu] = apdus[direction].get(apdu, 0) + int(value)

    def pick(service: str, key: str) -> int:
        return int(by_service.get(service, {}).get(key, 0))

    link = state.get(bus.T_LINK_STATUS) or {}
    return {
        "frames_in": pick(bus.UART, "frames_in"),
        "frames_to_meter": pick(bus.UART, "frames_out"),
        "bad_fcs": pick(bus.UART, "bad_fcs"),
        "garbage_bytes": pick(bus.UART, "garbage_bytes"),
        "spool_depth": link.get("spool_depth", 0),
        "drops": sum(reasons.values()),
        "drops_by_reason": dict(sorted(reasons.items())),
        "apdus": apdus,
        "counters": totals,
    }


def render(state: dict[str, Any]) -> str:
    reg = state[bus.T_REGISTRY]
    now = time.time()
    lines = []
    broker = reg.get("broker", {})
    pool = broker.get("pool", {})
    lines.append(
        f"broker    pid={broker.get('pid')} up={_age(now - broker.get('started', now))}"
        f" workers={pool.get('workers', 0)} queued={pool.get('queued_frames', 0)}"
        f" inflight={pool.get('inflight_jobs', 0)} tap={'on' if broker.get('tap') else 'off'}"
    )
    lines.append("")
    lines.append(f"{'SERVICE':<10} {'PID':>7} {'UPTIME':>8} {'HEARTBEAT':>10}")
    for svc in reg.get("services", []):
        up = _age(now - float(svc.get("started", now)))
        lines.append(
            f"{svc['name']:<10} {svc.get('pid', '?'):>7} {up:>8} {svc.get('age', 0):>9.1f}s"
        )
    lines.append("")
    serial = state.get(bus.T_SERIAL_STATUS)
    link = state.get(bus.T_LINK_STATUS)
    net = state.get(bus.T_NET_STATUS)
    lines.append("serial    " + (_serial_line(serial, now) if serial else "unknown"))
    lines.append("HES link  " + (_link_line(link, now) if link else "unknown"))
    lines.append(
        "network   "
        + (
            f"{'up' if net.get('up') else 'DOWN'} failures={net.get('failures', 0)}"
            f" lqi={net.get('lqi', 99)}"
            + _since(net.get("down_since") if not net.get("up") else None, now)
            if net
            else "unknown"
        )
    )
    s = summary(state)
    lines.append("")
    lines.append(
        f"frames in={s['frames_in']} to_meter={s['frames_to_meter']} bad_fcs={s['bad_fcs']}"
        f" garbage_bytes={s['garbage_bytes']} spool_depth={s['spool_depth']} drops={s['drops']}"
    )
    if s["drops_by_reason"]:
        lines.append(
            "drops by reason: " + " ".join(f"{k}={v}" for k, v in s["drops_by_reason"].items())
        )
    for direction, label in (("meter_to_hes", "meter->HES"), ("hes_to_meter", "HES->meter")):
        counts = s["apdus"][direction]
        if counts:
            lines.append(
                f"dlms {label}: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            )
    nonzero = {k: v for k, v in sorted(s["counters"].items()) if v and not is_latency(k)}
    if nonzero:
        lines.append("")
        lines.append("counters:")
        lines.extend(f"  {k} = {v}" for k, v in nonzero.items())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `status | head`: the reader left; say nothing more, and do not let
        # Python's flush at exit raise again on the closed stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m services.cli.status", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--json", action="store_true", help="print the state as JSON")
    ap.add_argument("--watch", type=float, default=0, help="refresh every SECONDS until Ctrl-C")
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the broker")
    args = ap.parse_args(argv)
    config = load_or_exit()
    try:
        while True:
            state = collect(config, args.timeout)
            if state is None:
                print(
                    f"status: no answer from the broker within {args.timeout}s "
                    f"(run dir {config['_run_dir']})",
                    file=sys.stderr,
                )
                return 1
            if args.json:
                state["summary"] = summary(state)
                print(json.dumps(state, default=str))
            else:
                if args.watch:
                    print("\033[H\033[J", end="")
                print(render(state), flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

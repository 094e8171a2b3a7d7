"""tap: watch what the broker routes, live, one line per message.

``python -m services.tap [--src S] [--dst D] [--op OP] [--protocol 0x2100]
[--json] [--count N] [--seconds T]``

The broker mirrors each message it routes on the event topic ``tap`` as
``[src, dst, ts, envelope]``, but only while something subscribes to that
topic: starting a tap turns the mirror on, ending it turns it off, so an
unwatched bus pays nothing. Frames (ops ``frames`` and ``write``) are decoded
and shown with protocol, cmd, length and hex; 0x2200 messages also by name.

Filters combine (all must match). ``--protocol`` keeps messages that carry a
frame of that protocol, and shows only those frames. ``--json`` prints JSON
lines instead of text, for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import zmq

from common import bus, params, rfc1662
from common.config import load_or_exit

FRAME_OPS = frozenset({bus.OP_FRAMES, bus.OP_WRITE})
HEX_MAX = 64  # bytes of hex shown per item in text mode


def describe_frame(raw: bytes, profile: str, max_info: int, accm: int) -> dict[str, Any]:
    """Decode one frame for display; a frame that does not decode says why."""
    item: dict[str, Any] = {"len": len(raw), "hex": raw.hex()}
    try:
        frame = rfc1662.decode(raw, profile, max_info=max_info, accm=accm)
    except rfc1662.FrameError as exc:
        item["error"] = f"{type(exc).__name__}: {exc}"
        return item
    item.update(protocol=frame.protocol, cmd=frame.cmd, info=frame.info.hex())
    if frame.protocol == rfc1662.PROTO_PARAMS:
        item["what"] = describe_params(frame)
    return item


def describe_params(frame: rfc1662.Frame) -> str:
    for parse in (params.parse_request, params.parse_gateway):
        try:
            msg = parse(frame)
        except (params.ParamError, ValueError):
            continue
        pid = getattr(msg, "pid", None)
        name = f" {params.param_name(pid)}" if isinstance(pid, int) else ""
        return f"{type(msg).__name__}{name}"
    return "unparsed"


class Tap:
    def __init__(self, args: argparse.Namespace, config: dict[str, Any]) -> None:
        self.args = args
        uart = config["UART"]
        self.profile = uart["profile"]
        self.max_info = uart["max_info"]
        self.accm = uart["accm"]
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, bus.T_TAP.encode())
        self.sub.connect(bus.endpoint(config["BUS"], config["_run_dir"], bus.EVENTS_OUT))
        self.protocol = int(args.protocol, 0) if args.protocol else None

    def records(self, parts: list[bytes]) -> Iterator[dict[str, Any]]:
        src, dst, ts, raw = msgpack.unpackb(parts[1], raw=False)
        env = bus.decode(raw)
        rec: dict[str, Any] = {
            "ts": ts,
            "src": src,
            "dst": dst,
            "from": env.src,
            "seq": env.seq,
            "op": env.op,
        }
        if env.op in FRAME_OPS and isinstance(env.data, list):
            frames = [describe_frame(f, self.profile, self.max_info, self.accm) for f in env.data]
            if self.protocol is not None:
                frames = [f for f in frames if f.get("protocol") == self.protocol]
                if not frames:
                    return
            rec["frames"] = frames
        elif self.protocol is not None:
            return
        elif env.op == bus.OP_SEND and isinstance(env.data, list):
            rec["payloads"] = [{"len": len(p), "hex": bytes(p).hex()} for p in env.data]
        else:
            rec["data"] = _jsonable(env.data)
        yield rec

    def keep(self, rec: dict[str, Any]) -> bool:
        a = self.args
        return (
            (not a.src or rec["src"] == a.src)
            and (not a.dst or rec["dst"] == a.dst)
            and (not a.op or rec["op"] == a.op)
        )

    def run(self) -> int:
        shown = 0
        deadline = time.monotonic() + self.args.seconds if self.args.seconds else None
        out = sys.stdout
        try:
            while True:
                timeout = 250
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    timeout = int(min(left, 0.25) * 1000)
                if not self.sub.poll(timeout):
                    continue
                parts = self.sub.recv_multipart()
                try:
                    recs = list(self.records(parts))
                except (ValueError, TypeError, IndexError, bus.EnvelopeError) as exc:
                    print(f"tap: undecodable mirror message: {exc}", file=sys.stderr)
                    continue
                for rec in recs:
                    if not self.keep(rec):
                        continue
                    out.write((json.dumps(rec) if self.args.json else format_text(rec)) + "\n")
                    out.flush()
                    shown += 1
                    if self.args.count and shown >= self.args.count:
                        return 0
        except KeyboardInterrupt:
            pass
        finally:
            self.sub.close(linger=0)
            self.ctx.term()
        return 0


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _clip(hexstr: str) -> str:
    return hexstr if len(hexstr) <= HEX_MAX * 2 else hexstr[: HEX_MAX * 2] + "..."


def format_text(rec: dict[str, Any]) -> str:
    stamp = (
        time.strftime("%H:%M:%S", time.localtime(rec["ts"]))
        + f".{int(rec['ts'] * 1000) % 1000:03d}"
    )
    head = f"{stamp} {rec['src']}>{rec['dst']} {rec['op']} seq={rec['seq']}"
    if "frames" in rec:
        lines = [head + f" frames={len(rec['frames'])}"]
        for f in rec["frames"]:
            if "error" in f:
                lines.append(f"    bad frame len={f['len']} {f['error']} hex={_clip(f['hex'])}")
            else:
                what = f" {f['what']}" if "what" in f else ""
                lines.append(
                    f"    proto={f['protocol']:#06x} cmd={f['cmd']:#04x} len={f['len']}{what}"
                    f" info={_clip(f['info'])}"
                )
        return "\n".join(lines)
    if "payloads" in rec:
        lines = [head + f" payloads={len(rec['payloads'])}"]
        lines += [f"    len={p['len']} hex={_clip(p['hex'])}" for p in rec["payloads"]]
        return "\n".join(lines)
    return head + f" data={json.dumps(rec.get('data'))[:200]}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m services.tap", description=__doc__.split("\n")[0])
    ap.add_argument("--src", help="only messages from this service (uart, resolver, client...)")
    ap.add_argument("--dst", help="only messages to this service")
    ap.add_argument("--op", help="only this operation (frames, write, send...)")
    ap.add_argument("--protocol", help="only frames of this protocol id, e.g. 0x2200")
    ap.add_argument("--json", action="store_true", help="print JSON lines")
    ap.add_argument("--count", type=int, default=0, help="exit after this many messages")
    ap.add_argument("--seconds", type=float, default=0, help="exit after this many seconds")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_or_exit()
    return Tap(args, config).run()


if __name__ == "__main__":
    raise SystemExit(main())

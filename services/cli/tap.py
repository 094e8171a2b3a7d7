"""tap: watch what the broker routes, live, one line per message.

``python -m services.cli.tap [--src S] [--dst D] [--op OP] [--protocol 0x2100]
[--dlms] [--json] [--count N] [--seconds T] [--wait S] [--record FILE]
[--replay FILE]``

The broker mirrors each message it routes on the event topic ``tap`` as
``[src, dst, ts, envelope]``, but only while something subscribes to that
topic: starting a tap turns the mirror on, ending it turns it off, so an
unwatched bus pays nothing. Frames (ops ``frames`` and ``write``) are decoded
and shown with protocol, cmd, payload length (``payload=``, the info field)
and frame length (``frame=``, the whole frame on the line); 0x2200 messages
by name, read the way they travel (``frames`` from the meter, ``write`` to
it). Each message says its direction: ``meter->gw``, ``gw->meter`` (with its
origin: the gateway's own answer comes from ``resolver``, HES data from
``client``) or ``gw->hes``. ``--dlms`` decodes the DLMS APDU in each 0x2100
payload (``common.dlms.describe``); with ``--json`` the decoded fields are in
``dlms``.

Filters combine (all must match). ``--protocol`` keeps messages that carry a
frame of that protocol, and shows only those frames. A filter that cannot
match (a bad protocol id, an unknown operation) is refused with exit 2; a
``--src``/``--dst`` that no live service has is warned about on stderr.

The tap first waits up to ``--wait`` seconds for the broker's registry; if
none comes it says so and exits 1. ``--json`` prints nothing but JSON lines
on stdout (diagnostics go to stderr). ``--record FILE`` also writes every
message seen, undecoded, as JSON lines; ``--replay FILE`` prints such a file
again, with any filters and ``--dlms``, without a running stack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import msgpack
import zmq

from common import bus, buskeys, params, rfc1662
from common.config import load, load_or_exit

FRAME_OPS = frozenset({bus.OP_FRAMES, bus.OP_WRITE})
KNOWN_OPS = (
    bus.OP_FRAMES,
    bus.OP_SEND,
    bus.OP_WRITE,
    bus.OP_HB,
    bus.OP_EVENT,
    bus.OP_ACK,
    bus.OP_NACK,
)
HEX_MAX = 64  # bytes of hex shown per item in text mode
EXIT_NO_BROKER = 1
EXIT_USAGE = 2

METER_TO_GW = "meter->gw"
GW_TO_METER = "gw->meter"
GW_TO_HES = "gw->hes"


def direction(src: str, dst: str, op: str) -> str:
    """Which way a message goes, as the meter and the HES see it ("" for internal)."""
    if op == bus.OP_FRAMES:
        return METER_TO_GW
    if op == bus.OP_WRITE and dst == bus.UART:
        return GW_TO_METER
    if op == bus.OP_SEND and dst == bus.CLIENT:
        return GW_TO_HES
    return ""


def describe_dlms(payload: bytes) -> dict[str, Any]:
    """The DLMS APDU in a payload: its fields and ``describe()`` line, or why not."""
    from common import dlms

    try:
        apdu = dlms.decode(payload)
    except dlms.DlmsError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {"name": apdu.name, "variant": apdu.variant}
    for key in ("invoke_id", "class_id", "obis", "attribute", "method"):
        value = getattr(apdu, key)
        if value is not None:
            out[key] = value
    out["describe"] = dlms.describe(apdu)
    return out


def describe_frame(
    raw: bytes,
    profile: str,
    max_info: int,
    accm: int,
    towards_meter: bool = False,
    dlms: bool = False,
) -> dict[str, Any]:
    """Decode one frame for display; a frame that does not decode says why."""
    item: dict[str, Any] = {"frame_len": len(raw), "hex": raw.hex()}
    try:
        frame = rfc1662.decode(raw, profile, max_info=max_info, accm=accm)
    except rfc1662.FrameError as exc:
        item["error"] = f"{type(exc).__name__}: {exc}"
        return item
    item.update(
        protocol=frame.protocol, cmd=frame.cmd, payload_len=len(frame.info), info=frame.info.hex()
    )
    if frame.protocol == rfc1662.PROTO_PARAMS:
        item["what"] = describe_params(frame, towards_meter)
    elif dlms and frame.protocol == rfc1662.PROTO_TRANSPARENT and frame.info:
        item["dlms"] = describe_dlms(frame.info)
    return item


def describe_params(frame: rfc1662.Frame, towards_meter: bool = False) -> str:
    """A 0x2200 message by name, parsed as what the sender would send."""
    parse = params.parse_gateway if towards_meter else params.parse_request
    try:
        msg = parse(frame)
    except (params.ParamError, ValueError):
        return "unparsed"
    pid = getattr(msg, "pid", None)
    name = f" {params.param_name(pid)}" if isinstance(pid, int) else ""
    return f"{type(msg).__name__}{name}"


def protocol_id(text: str) -> int:
    """``--protocol``: 0x2100, 8448 ...; argparse turns the error into exit 2."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a protocol id: {text!r} (give a number such as 0x2100)"
        ) from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"protocol id out of range 0..0xFFFF: {text}")
    return value


def _nonneg(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
        return value

    return parse


class Tap:
    def __init__(self, args: argparse.Namespace, config: dict[str, Any] | None) -> None:
        self.args = args
        uart = (config or {}).get("UART") or {}
        self.profile = uart.get("profile", "quectel")
        self.max_info = uart.get("max_info", rfc1662.DEFAULT_MAX_INFO)
        self.accm = uart.get("accm", rfc1662.DEFAULT_ACCM)
        self.protocol: int | None = args.protocol
        self.config = config
        self.out = sys.stdout
        self.record: IO[str] | None = None
        self.shown = 0

    # -- decoding --------------------------------------------------------------------

    def records(self, src: str, dst: str, ts: float, raw: bytes) -> Iterator[dict[str, Any]]:
        env = bus.decode(raw)
        rec: dict[str, Any] = {
            "ts": ts,
            "src": src,
            "dst": dst,
            "from": env.src,
            "seq": env.seq,
            "op": env.op,
            "direction": direction(src, dst, env.op),
        }
        if env.op in FRAME_OPS and isinstance(env.data, list):
            towards = rec["direction"] == GW_TO_METER
            frames = [
                describe_frame(
                    bytes(f), self.profile, self.max_info, self.accm, towards, self.args.dlms
                )
                for f in env.data
                if isinstance(f, (bytes, bytearray))
            ]
            if self.protocol is not None:
                frames = [f for f in frames if f.get("protocol") == self.protocol]
                if not frames:
                    return
            rec["frames"] = frames
        elif self.protocol is not None:
            return
        elif env.op == bus.OP_SEND and isinstance(env.data, list):
            payloads = []
            for p in env.data:
                item: dict[str, Any] = {"payload_len": len(p), "hex": bytes(p).hex()}
                if self.args.dlms and p:
                    item["dlms"] = describe_dlms(bytes(p))
                payloads.append(item)
            rec["payloads"] = payloads
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

    def show(self, src: str, dst: str, ts: float, raw: bytes) -> bool:
        """Print one mirrored message; False once ``--count`` is reached."""
        if self.record is not None:
            self.record.write(json.dumps({"ts": ts, "src": src, "dst": dst, "env": raw.hex()}))
            self.record.write("\n")
            self.record.flush()
        try:
            recs = list(self.records(src, dst, ts, raw))
        except (ValueError, TypeError, IndexError, bus.EnvelopeError) as exc:
            print(f"tap: undecodable mirror message: {exc}", file=sys.stderr)
            return True
        for rec in recs:
            if not self.keep(rec):
                continue
            self.out.write((json.dumps(rec) if self.args.json else format_text(rec)) + "\n")
            self.out.flush()
            self.shown += 1
            if self.args.count and self.shown >= self.args.count:
                return False
        return True

    # -- live ------------------------------------------------------------------------

    def run(self) -> int:
        assert self.config is not None
        ctx: zmq.Context[Any] = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        buskeys.client(sub, self.config["BUS"], self.config["_run_dir"], buskeys.TOOLS)
        sub.setsockopt(zmq.SUBSCRIBE, bus.T_REGISTRY.encode())
        sub.connect(bus.endpoint(self.config["BUS"], self.config["_run_dir"], bus.EVENTS_OUT))
        try:
            reg = self._wait_registry(sub)
            if reg is None:
                print(
                    f"tap: no answer from the broker within {self.args.wait:g}s "
                    f"(run dir {self.config['_run_dir']}); is the stack running?",
                    file=sys.stderr,
                )
                return EXIT_NO_BROKER
            self._warn_names(reg)
            sub.setsockopt(zmq.UNSUBSCRIBE, bus.T_REGISTRY.encode())
            sub.setsockopt(zmq.SUBSCRIBE, bus.T_TAP.encode())
            return self._loop(sub)
        except KeyboardInterrupt:
            return 0
        finally:
            sub.close(linger=0)
            ctx.term()

    def _wait_registry(self, sub: zmq.Socket[bytes]) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.args.wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sub.poll(max(1, int(left * 1000))):
                if time.monotonic() >= deadline:
                    return None
                continue
            parts = sub.recv_multipart()
            if parts[0] != bus.T_REGISTRY.encode() or len(parts) != 2:
                continue
            try:
                data = bus.decode(parts[1]).data
            except bus.EnvelopeError:
                continue
            if isinstance(data, dict):
                return data

    def _warn_names(self, reg: dict[str, Any]) -> None:
        live = {bus.BROKER, bus.RESOLVER} | {
            s.get("name") for s in reg.get("services") or () if isinstance(s, dict)
        }
        inboxes = set(bus.all_inbox_services(self.config["BUS"])) if self.config else set()
        for flag, name in (("--src", self.args.src), ("--dst", self.args.dst)):
            if name and name not in live and name not in inboxes:
                known = ", ".join(sorted(str(n) for n in live | inboxes))
                print(
                    f"tap: warning: {flag} {name}: no live service has this name "
                    f"(known: {known}); nothing may match",
                    file=sys.stderr,
                )

    def _loop(self, sub: zmq.Socket[bytes]) -> int:
        deadline = time.monotonic() + self.args.seconds if self.args.seconds else None
        while True:
            timeout = 250
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return 0
                timeout = int(min(left, 0.25) * 1000)
            if not sub.poll(timeout):
                continue
            parts = sub.recv_multipart()
            if parts[0] != bus.T_TAP.encode() or len(parts) != 2:
                continue
            try:
                src, dst, ts, raw = msgpack.unpackb(parts[1], raw=False)
            except (ValueError, TypeError) as exc:
                print(f"tap: undecodable mirror message: {exc}", file=sys.stderr)
                continue
            if not self.show(src, dst, ts, raw):
                return 0

    # -- replay ----------------------------------------------------------------------

    def replay(self, path: str) -> int:
        try:
            fh = open(path, encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            print(f"tap: --replay {path}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
        with fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    src, dst, ts = str(item["src"]), str(item["dst"]), float(item["ts"])
                    raw = bytes.fromhex(item["env"])
                except (ValueError, KeyError, TypeError) as exc:
                    print(
                        f"tap: --replay {path}:{lineno}: not a tap record ({exc})", file=sys.stderr
                    )
                    return EXIT_USAGE
                if not self.show(src, dst, ts, raw):
                    break
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
    way = f" [{rec['direction']}]" if rec.get("direction") else ""
    head = f"{stamp} {rec['src']}>{rec['dst']} {rec['op']} seq={rec['seq']}{way}"
    if "frames" in rec:
        lines = [head + f" frames={len(rec['frames'])}"]
        for f in rec["frames"]:
            if "error" in f:
                lines.append(
                    f"    bad frame frame={f['frame_len']} {f['error']} hex={_clip(f['hex'])}"
                )
                continue
            what = f" {f['what']}" if "what" in f else ""
            if "dlms" in f:
                d = f["dlms"]
                what = f" dlms: {d.get('describe') or d.get('error')}"
            lines.append(
                f"    proto={f['protocol']:#06x} cmd={f['cmd']:#04x} payload={f['payload_len']}"
                f" frame={f['frame_len']}{what} info={_clip(f['info'])}"
            )
        return "\n".join(lines)
    if "payloads" in rec:
        lines = [head + f" payloads={len(rec['payloads'])}"]
        for p in rec["payloads"]:
            d = p.get("dlms")
            what = f" dlms: {d.get('describe') or d.get('error')}" if d else ""
            lines.append(f"    payload={p['payload_len']}{what} hex={_clip(p['hex'])}")
        return "\n".join(lines)
    return head + f" data={json.dumps(rec.get('data'))[:200]}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m services.cli.tap", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--src", help="only messages from this service (uart, resolver, client...)")
    ap.add_argument("--dst", help="only messages to this service")
    ap.add_argument("--op", choices=KNOWN_OPS, help="only this operation")
    ap.add_argument(
        "--protocol", type=protocol_id, help="only frames of this protocol id, e.g. 0x2200"
    )
    ap.add_argument("--dlms", action="store_true", help="decode DLMS APDUs in 0x2100 payloads")
    ap.add_argument("--json", action="store_true", help="print JSON lines (and nothing else)")
    ap.add_argument("--count", type=_nonneg(int), default=0, help="exit after this many messages")
    ap.add_argument(
        "--seconds", type=_nonneg(float), default=0, help="exit after this many seconds"
    )
    ap.add_argument(
        "--wait",
        type=_nonneg(float),
        default=3.0,
        help="seconds to wait for the broker before giving up [3]",
    )
    ap.add_argument("--record", metavar="FILE", help="also write every message seen to FILE")
    ap.add_argument("--replay", metavar="FILE", help="print a --record file instead of the bus")
    args = ap.parse_args(argv)
    if args.record and args.replay:
        ap.error("--record and --replay do not go together")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `tap | head`: the reader left; end quietly (and not again at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    if args.replay:
        config = None
        try:
            config = load()
        except Exception:
            pass  # replaying needs no stack: the default frame settings do
        return Tap(args, config).replay(args.replay)
    config = load_or_exit()
    tap = Tap(args, config)
    if args.record:
        try:
            tap.record = open(args.record, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            print(f"tap: --record {args.record}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        return tap.run()
    finally:
        if tap.record is not None:
            tap.record.close()


if __name__ == "__main__":
    raise SystemExit(main())

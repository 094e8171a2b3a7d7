"""Ask the meter for one of its parameters, or set one, and print its answer.

Usage::

    python -m services.cli.ask get 0x2801
    python -m services.cli.ask set 0x2801 u8:5
    python -m services.cli.ask set 0x2801 char:ABC --timeout 3 --json

The pid is hexadecimal (``0x`` optional). A SET value is ``TYPE:VALUE``: ``u8:``,
``u16:``, ``u32:`` (an integer, ``0x`` for hex), ``char:`` (ASCII text), ``str:`` (an
octet string, in hex), or ``hex:`` (the value bytes exactly as given, no type added).

Theory of operation: the tool is a bus service without an inbox. It subscribes to
``meter.response`` and to a topic of its own, and publishes on that topic until it hears
itself: then its subscription is known to reach the broker, so the answer cannot slip
past it. Only then it sends the 0x2200 GET (C0 ``pid``) or SET (C1 ``pid value``) frame
to the ``uart`` service (op ``write``, through the broker, which holds it if the uart is
not connected yet). The meter's answer (C4, or C5/C8) comes back through the uart and a
resolver worker, which publishes it as ``meter.response``; the first one for this pid is
printed.

Exit status: 0 the meter answered, 1 no answer within ``--timeout`` seconds, 2 bad
arguments or configuration, 3 the meter answered with an error (C8, or C5 ``0C``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from common import bus, params, rfc1662
from common.config import load_or_exit
from common.service import Service, setup_logging

log = logging.getLogger("meterlink.ask")

NAME = "ask"
SYNC_TOPIC = "ask.sync"  # + the instance id: heard only by the tool that sent it
SYNC_INTERVAL = 0.05  # seconds between sync publications until one comes back
DEFAULT_TIMEOUT = 5.0

EXIT_OK = 0
EXIT_TIMEOUT = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

_INT_TYPES = {"u8": params.Value.u8, "u16": params.Value.u16, "u32": params.Value.u32}


def parse_pid(text: str) -> int:
    try:
        pid = int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"pid must be hexadecimal, got {text!r}") from None
    if not 0 <= pid <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"pid must be in 0x0000..0xFFFF, got {text!r}")
    return pid


def parse_value(text: str) -> bytes:
    """The SET value bytes for ``TYPE:VALUE`` (see the module docstring)."""
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if not sep:
        raise argparse.ArgumentTypeError(f"value must be TYPE:VALUE, got {text!r}")
    try:
        if kind in _INT_TYPES:
            return _INT_TYPES[kind](int(rest, 0)).to_bytes()
        if kind == "char":
            return params.Value.char(rest).to_bytes()
        if kind == "str":
            return params.Value.octets(bytes.fromhex(rest)).to_bytes()
        if kind == "hex":
            return bytes.fromhex(rest)
    except ValueError as exc:  # ParamError is a ValueError too
        raise argparse.ArgumentTypeError(f"bad {kind} value {rest!r}: {exc}") from None
    raise argparse.ArgumentTypeError(
        f"unknown value type {kind!r}: use u8, u16, u32, char, str or hex"
    )


def request_frame(args: argparse.Namespace) -> rfc1662.Frame:
    if args.action == "get":
        return params.meter_get(args.pid)
    return params.meter_set(args.pid, args.value)


def format_answer(data: dict[str, Any], as_json: bool) -> str:
    shown = {k: v for k, v in data.items() if not isinstance(v, bytes)}
    if as_json:
        return json.dumps(shown, sort_keys=True)
    line = (
        f"pid={data['pid']:#06x} name={data.get('name')} cmd={data.get('cmd', 0):#04x} "
        f"ok={str(data.get('ok')).lower()} hex={data.get('hex', '')}"
    )
    if "type" in data:
        line += f" type={data['type']} value={data['value']!r}"
    return line


class Ask(Service):
    """One question to the meter; ``result`` is the exit status once ``run`` returns."""

    def __init__(
        self,
        config: dict[str, Any],
        frame: rfc1662.Frame,
        pid: int,
        timeout: float,
        as_json: bool = False,
    ) -> None:
        super().__init__(NAME, config, inbox=False, heartbeat=False)
        uart = config["UART"]
        self.raw = rfc1662.encode(frame, uart["profile"], uart["accm"], uart["max_info"])
        self.pid = pid
        self.as_json = as_json
        self.timeout = timeout
        self.result = EXIT_TIMEOUT
        self.answer: dict[str, Any] | None = None
        self.sent = False
        self.sync_topic = f"{SYNC_TOPIC}.{self.inst}"
        # meter.response first: subscriptions reach the broker in order, so hearing the
        # sync topic proves the answer's subscription is in place.
        self.on_event(bus.T_METER_RESPONSE)(self._on_response)
        self.on_event(self.sync_topic)(self._on_sync)
        self.every(SYNC_INTERVAL, self._sync_tick, first=0)
        self.every(timeout, self._on_timeout)

    def _sync_tick(self) -> None:
        if not self.sent:
            self.publish(self.sync_topic, None)

    def _on_sync(self, _topic: str, _env: bus.Envelope) -> None:
        if self.sent:
            return
        self.sent = True
        log.info("request sent pid=%#06x frame=%s", self.pid, self.raw.hex())
        self.uart.write([self.raw])

    def _on_response(self, _topic: str, env: bus.Envelope) -> None:
        data = env.data
        if not self.sent or not isinstance(data, dict) or data.get("pid") != self.pid:
            return
        self.answer = data
        self.result = EXIT_OK if data.get("ok", True) else EXIT_REFUSED
        print(format_answer(data, self.as_json), flush=True)
        self.stop()

    def _on_timeout(self) -> None:
        if self.answer is None:
            self.result = EXIT_TIMEOUT
            what = "request not sent: broker not reachable" if not self.sent else "no answer"
            print(
                f"meterlink ask: {what} for pid {self.pid:#06x} within {self.timeout:g}s",
                file=sys.stderr,
                flush=True,
            )
        self.stop()


def build_parser() -> argparse.ArgumentParser:
    # The options go on each sub-command, so they may come anywhere after it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait")
    common.add_argument("--json", action="store_true", help="print the answer as JSON")
    common.add_argument("--config", help="config file (default: $METERLINK_CONFIG or dev.json)")
    common.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    ap = argparse.ArgumentParser(
        prog="python -m services.cli.ask",
        description="GET or SET a meter parameter over 0x2200 and print the answer.",
    )
    sub = ap.add_subparsers(dest="action", required=True)
    get = sub.add_parser("get", parents=[common], help="GET a meter parameter")
    get.add_argument("pid", type=parse_pid, help="parameter id, hexadecimal")
    put = sub.add_parser("set", parents=[common], help="SET a meter parameter")
    put.add_argument("pid", type=parse_pid, help="parameter id, hexadecimal")
    put.add_argument("value", type=parse_value, help="u8:N u16:N u32:N char:TEXT str:HEX hex:HEX")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.timeout <= 0:
        print("meterlink ask: --timeout must be > 0", file=sys.stderr)
        return EXIT_USAGE
    config = load_or_exit(args.config)
    setup_logging("INFO" if args.verbose else "WARNING", NAME)
    try:
        frame = request_frame(args)
        tool = Ask(config, frame, args.pid, args.timeout, args.json)
    except (ValueError, rfc1662.FrameError) as exc:
        print(f"meterlink ask: {exc}", file=sys.stderr)
        return EXIT_USAGE
    tool.run()
    return tool.result


if __name__ == "__main__":
    sys.exit(main())

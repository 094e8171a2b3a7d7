"""Built-in frame handlers, registered on the resolver every worker uses.

0x2100 (transparent): the info bytes go to the HES, as the reference's
``handle2100`` does with ``CurrentApp().client.send(data)``.

0x2200 (module parameters), by cmd from the meter:

- GET (C0) is answered from the parameter table:

  ======  ============  ====================================================  ======
  pid     name          value                                                 type
  ======  ============  ====================================================  ======
  0x8002  module state  ``MODULE_STATE_*`` below, from net.status/link.status INT8U
  0x8003  LQI           the watchdog's signal quality (net.status ``lqi``)     INT8U
  0x8005  meter serial  a stored SET value, else ``DEVICE.meter_sn``           CHAR
  0x8007  device name   a stored SET value, else ``DEVICE.name``               CHAR
  other   -             a stored SET value, in the type it was SET with
  ======  ============  ====================================================  ======

  A typed GET (with a request id) gets ``pid plen rid tag [len] value``; an untyped GET
  gets ``pid plen value-bytes`` (the value without tag and length: ``03 80 01 19`` for
  LQI 25). An unknown id, an LQI outside 0..255, an empty ``DEVICE.meter_sn`` with no
  stored value, or a value too long for the reply gets the GET error ``pid 01 0C``.
- SET (C1) of a pid listed in ``DEVICE.writable`` is stored in the run directory
  (``common.paramstore``, shared by every worker, kept across restarts) before the
  success reply ``pid 01 00`` is sent, and published as ``param.set``. A pid not listed,
  or one of the live values (LQI, module state), or a store that cannot be written,
  gets ``pid 01 0C``.
- EVENT (C2) is acknowledged (cmd BF, ``01 00``) and published as ``meter.event``.
- C4, C5 and C8 from the meter answer the gateway's own GET/SET (``services.cli.ask``):
  published as ``meter.response``, not answered.
- Malformed info is counted (``params.malformed``) and logged; a GET whose pid can be
  read gets the GET error, a SET whose pid can be read gets the SET failure (each is
  the reply that meter waits for), anything else no reply. Other cmds are counted
  (``params.unexpected_cmd``) and not answered.

Replies keep the request's protocol id. Events (data is msgpack, bytes stay bytes)::

    param.set       {"pid", "name", "rid", "tag", "type", "value", "raw"}
    meter.event     {"protocol", "data", "hex", "len"}
    meter.response  {"pid", "name", "cmd", "ok", "data", "hex"}
                    + {"tag", "type", "value"} when data is exactly one typed value
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Final

from common import bus, params, rfc1662
from common.dlms.count import count_apdu
from common.paramstore import ParamStore, describe_value, value_payload
from services.resolver import resolver

log = logging.getLogger("meterlink.handlers")

#: Module state (pid 0x8002), one byte. An unknown state counts as down.
MODULE_STATE_DOWN: Final = 0  # network down (or not known yet)
MODULE_STATE_NET_UP: Final = 1  # network up, HES link down (or not known yet)
MODULE_STATE_ONLINE: Final = 2  # network up and HES link up

#: Parameters whose value is live state: never stored, never SET by the meter.
LIVE_PIDS: Final = frozenset({params.PID_LQI, params.PID_MODULE_STATE})

_stores: weakref.WeakKeyDictionary[Any, ParamStore] = weakref.WeakKeyDictionary()


@resolver.register(rfc1662.PROTO_TRANSPARENT)
def handle_2100(app: Any, frame: rfc1662.Frame) -> None:
    """Meter data for the head-end system: forwarded as it is."""
    if frame.info:
        count_apdu(app.counters, "up", frame.info)
        app.client.send(frame.info)


@resolver.register_batch(rfc1662.PROTO_TRANSPARENT, handle_2100)
def handle_2100_batch(app: Any, infos: list[bytes]) -> None:
    """``handle_2100`` for a whole batch: one send of every non-empty info field."""
    data = [info for info in infos if info]
    counters = app.counters
    for info in data:
        count_apdu(counters, "up", info)
    if data:
        app.client.send(data)


# --- the parameter table -----------------------------------------------------------------


def module_state(state: dict[str, Any]) -> int:
    """The module state byte from what the worker learnt (``net_up``, ``link_up``)."""
    if state.get("net_up") is not True:
        return MODULE_STATE_DOWN
    if state.get("link_up") is not True:
        return MODULE_STATE_NET_UP
    return MODULE_STATE_ONLINE


def param_store(app: Any) -> ParamStore:
    """The worker's view of the run directory's parameter file (one per worker)."""
    store = _stores.get(app)
    if store is None:
        store = _stores[app] = ParamStore(app.run_dir, counters=app.counters)
    return store


def _config_char(app: Any, key: str) -> params.Value | None:
    text = app.config["DEVICE"][key]
    return params.Value.char(text) if text else None


def current_value(app: Any, pid: int) -> params.Value | None:
    """The value a GET of ``pid`` answers with, or None when there is none.

    Raises ``ParamError`` when the configured text cannot be a CHAR (not ASCII, too long).
    """
    if pid == params.PID_LQI:
        lqi = app.state.get("lqi")
        if isinstance(lqi, int) and not isinstance(lqi, bool) and 0 <= lqi <= 0xFF:
            return params.Value.u8(lqi)
        return None
    if pid == params.PID_MODULE_STATE:
        return params.Value.u8(module_state(app.state))
    stored = param_store(app).get(pid)
    if stored is not None:
        return stored
    if pid == params.PID_METER_SN:
        return _config_char(app, "meter_sn")
    if pid == params.PID_DEVICE_NAME:
        return _config_char(app, "name")
    return None


# --- the 0x2200 handler ------------------------------------------------------------------


def _write(app: Any, frame: rfc1662.Frame) -> None:
    app.uart.write([rfc1662.encode(frame, app.profile, app.accm, app.max_info)])


def _on_get(app: Any, frame: rfc1662.Frame, req: params.GetRequest) -> None:
    pid = req.pid
    app.counters["params.get"] += 1
    try:
        value = current_value(app, pid)
        if value is None:
            app.counters["params.get_unknown"] += 1
            log.info("param get refused pid=%#06x name=%s reason=no_value", pid, _name(pid))
            reply = params.get_error(frame, pid)
        elif req.rid is not None:
            reply = params.typed_get_response(frame, pid, req.rid, value)
        else:
            reply = params.get_response(frame, pid, value_payload(value))
    except params.ParamError as exc:
        app.count_drop(
            "params.bad_value",
            "param get refused pid=%#06x name=%s reason=bad_value error=%r",
            pid,
            _name(pid),
            str(exc),
        )
        reply = params.get_error(frame, pid)
    _write(app, reply)


def _on_set(app: Any, frame: rfc1662.Frame, req: params.SetRequest) -> None:
    pid = req.pid
    app.counters["params.set"] += 1
    writable = app.config["DEVICE"]["writable"]
    if pid not in writable or pid in LIVE_PIDS:
        app.counters["params.set_refused"] += 1
        log.info("param set refused pid=%#06x name=%s reason=read_only", pid, _name(pid))
        _write(app, params.set_response(frame, pid, False))
        return
    try:
        param_store(app).set(pid, req.value)
    except OSError as exc:
        app.count_drop(
            "params.store_error",
            "param set failed pid=%#06x name=%s reason=store error=%r",
            pid,
            _name(pid),
            str(exc),
        )
        _write(app, params.set_response(frame, pid, False))
        return
    shown = describe_value(req.value)
    log.info(
        "param set pid=%#06x name=%s rid=%d type=%s value=%r",
        pid,
        _name(pid),
        req.rid,
        shown["type"],
        shown["value"],
    )
    _write(app, params.set_response(frame, pid, True))
    app.publish(
        bus.T_PARAM_SET,
        {"pid": pid, "name": _name(pid), "rid": req.rid, **shown, "raw": req.value.to_bytes()},
    )


def _on_event(app: Any, frame: rfc1662.Frame, event: params.Event) -> None:
    app.counters["params.events"] += 1
    _write(app, params.event_ack(frame))
    log.info("meter event len=%d hex=%s", len(event.data), event.data.hex())
    app.publish(
        bus.T_METER_EVENT,
        {
            "protocol": frame.protocol,
            "data": event.data,
            "hex": event.data.hex(),
            "len": len(event.data),
        },
    )


MeterAnswer = params.MeterGetResponse | params.SetResponse | params.GetError


def meter_response_data(frame: rfc1662.Frame, msg: MeterAnswer) -> dict[str, Any]:
    """The ``meter.response`` event for the meter's answer ``msg`` (C4, C5 or C8)."""
    if isinstance(msg, params.MeterGetResponse):
        data, ok = msg.data, True
    elif isinstance(msg, params.SetResponse):
        data, ok = bytes((params.ACK_OK if msg.ok else params.ACK_FAILED,)), msg.ok
    else:
        data, ok = bytes((params.ACK_FAILED,)), False
    pid = msg.pid
    out: dict[str, Any] = {
        "pid": pid,
        "name": _name(pid),
        "cmd": frame.cmd,
        "ok": ok,
        "data": data,
        "hex": data.hex(),
    }
    if isinstance(msg, params.MeterGetResponse):
        try:
            value, rest = params.Value.parse(data)
        except params.ParamError:
            pass
        else:
            if not rest:
                out.update(describe_value(value))
    return out


def _on_meter_response(app: Any, frame: rfc1662.Frame, msg: MeterAnswer) -> None:
    app.counters["params.meter_responses"] += 1
    data = meter_response_data(frame, msg)
    log.info(
        "meter response pid=%#06x name=%s cmd=%#04x ok=%s hex=%s",
        data["pid"],
        data["name"],
        frame.cmd,
        data["ok"],
        data["hex"],
    )
    app.publish(bus.T_METER_RESPONSE, data)


def _on_malformed(app: Any, frame: rfc1662.Frame, exc: params.ParamError) -> None:
    info = frame.info
    if frame.cmd not in (
        rfc1662.CMD_GET,
        rfc1662.CMD_SET,
        rfc1662.CMD_EVENT,
        rfc1662.CMD_GET_RESP,
        rfc1662.CMD_SET_RESP,
        rfc1662.CMD_GET_ERROR,
    ):
        app.count_drop(
            "params.unexpected_cmd",
            "frame dropped reason=unexpected_cmd protocol=%#06x cmd=%#04x len=%d",
            frame.protocol,
            frame.cmd,
            len(info),
        )
        return
    app.count_drop(
        "params.malformed",
        "frame dropped reason=malformed protocol=%#06x cmd=%#04x len=%d error=%r",
        frame.protocol,
        frame.cmd,
        len(info),
        str(exc),
    )
    if len(info) < 2:
        return
    pid = info[0] | (info[1] << 8)
    if frame.cmd == rfc1662.CMD_GET:
        _write(app, params.get_error(frame, pid))
    elif frame.cmd == rfc1662.CMD_SET:
        _write(app, params.set_response(frame, pid, False))


def _name(pid: int) -> str:
    return params.param_name(pid)


@resolver.register(rfc1662.PROTO_PARAMS)
def handle_2200(app: Any, frame: rfc1662.Frame) -> None:
    """Module parameters: the meter's GET/SET/EVENT, and its answers to ours.

    An exception here (a bug, or a reply UART.max_info cannot carry) is caught,
    logged and counted (``frames.handler_error``) by the worker, like any
    handler's, and costs only this frame.
    """
    try:
        msg = params.parse_request(frame)
    except params.ParamError as exc:
        _on_malformed(app, frame, exc)
        return
    if isinstance(msg, params.GetRequest):
        _on_get(app, frame, msg)
    elif isinstance(msg, params.SetRequest):
        _on_set(app, frame, msg)
    elif isinstance(msg, params.Event):
        _on_event(app, frame, msg)
    else:
        _on_meter_response(app, frame, msg)

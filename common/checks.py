"""Every problem in a config at once, and the checks a JSON schema cannot make.

``schema_errors(schema, doc)`` walks ``common.config.SCHEMA`` (the subset of
JSON Schema it uses) and returns one message per problem, each naming the
key, saying what would be valid and, for an unknown key, suggesting the
nearest known one (``UART: unknown key 'baudrat' (did you mean 'baudrate'?)``).
The generated validator stays the fast path at every start; this walker runs
only when it has found something, and for ``meterlink check``.

``semantic_errors(cfg)`` checks what each key cannot say alone: the order of
related keys (``reopen_min_s <= reopen_max_s``, ``radio_cycle_after <
reboot_after``), ports that cannot exist, handler and extension modules that
cannot be found, TLS files that cannot be read. Nothing here touches the
network: host names are never resolved.

``map_uart_port(uart)`` turns the reference's UART number into a device.
No I/O beyond looking at files and module specs.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any

#: The reference numbers its UARTs (``"port": 2``); on Linux UART number N is
#: ``/dev/ttyS<N>`` unless ``UART.port_map`` names another device for it.
UART_DEVICE_RULE = "/dev/ttyS{n}"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return True
    return isinstance(value, _TYPES[kind])


def _key(path: tuple[str, ...]) -> str:
    return ".".join(path) or "(top level)"


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f'"{value}"'


def schema_errors(schema: dict[str, Any], doc: Any, path: tuple[str, ...] = ()) -> list[str]:
    """Every way ``doc`` breaks ``schema``, one message each."""
    errors: list[str] = []
    key = _key(path)
    kinds = schema.get("type")
    if kinds is not None:
        kinds_l = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(doc, k) for k in kinds_l):
            errors.append(f"config key {key}: must be {' or '.join(kinds_l)}, not {_show(doc)}")
            return errors
    if "enum" in schema and doc not in schema["enum"]:
        valid = ", ".join(_show(v) for v in schema["enum"])
        errors.append(f"config key {key}: must be one of {valid}, not {_show(doc)}")
        return errors
    if isinstance(doc, (int, float)) and not isinstance(doc, bool):
        if "minimum" in schema and doc < schema["minimum"]:
            errors.append(f"config key {key}: must be >= {schema['minimum']}, not {doc}")
        if "maximum" in schema and doc > schema["maximum"]:
            errors.append(f"config key {key}: must be <= {schema['maximum']}, not {doc}")
    if isinstance(doc, str) and len(doc) < schema.get("minLength", 0):
        errors.append(f"config key {key}: must not be empty")
    if isinstance(doc, dict):
        props: dict[str, Any] = schema.get("properties", {})
        for req in schema.get("required", ()):
            if req not in doc:
                errors.append(f"config key {_key((*path, req))}: missing (it has no default)")
        extra = schema.get("additionalProperties", True)
        for name, value in doc.items():
            if name in props:
                errors.extend(schema_errors(props[name], value, (*path, name)))
            elif extra is False:
                import difflib  # only when a key is wrong

                near = difflib.get_close_matches(name, list(props), n=1, cutoff=0.6)
                hint = f" (did you mean '{near[0]}'?)" if near else ""
                known = ", ".join(props)
                errors.append(f"config key {key}: unknown key '{name}'{hint}; known keys: {known}")
            elif isinstance(extra, dict):
                errors.extend(schema_errors(extra, value, (*path, name)))
    if isinstance(doc, list):
        if len(doc) < schema.get("minItems", 0):
            errors.append(f"config key {key}: needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(doc) > schema["maxItems"]:
            errors.append(f"config key {key}: takes at most {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, list):
            for i, (sub, value) in enumerate(zip(items, doc, strict=False)):
                errors.extend(schema_errors(sub, value, (*path, str(i))))
        elif isinstance(items, dict):
            for i, value in enumerate(doc):
                errors.extend(schema_errors(items, value, (*path, str(i))))
    return errors


def map_uart_port(uart: dict[str, Any]) -> dict[str, Any] | None:
    """Replace an integer ``UART.port`` by its device; return how it was mapped."""
    port = uart.get("port")
    if not isinstance(port, int) or isinstance(port, bool):
        return None
    mapped = uart.get("port_map", {}).get(str(port))
    device = mapped or UART_DEVICE_RULE.format(n=port)
    uart["port"] = device
    rule = f'UART.port_map["{port}"]' if mapped else UART_DEVICE_RULE.replace("{n}", "<N>")
    return {"number": port, "device": device, "rule": rule}


def is_loopback(host: str) -> bool:
    """True for a loopback address or ``localhost``; a name is never resolved."""
    if host == "localhost":
        return True
    import ipaddress  # here: the config checks, not every running process

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_listen(listen: str) -> tuple[str, int] | None:
    """``"host:port"`` (``"[::1]:9727"`` too) as ``(host, port)``, or None."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return host.strip("[]"), int(port)


def _module_found(name: str) -> str | None:
    """None if ``name`` can be imported, else why not (without importing it)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        return str(exc)
    return None if spec is not None else "no such module on the Python path"


def _readable(path: str) -> str | None:
    if not os.path.isfile(path):
        return "no such file"
    if not os.access(path, os.R_OK):
        return "not readable by this user"
    return None


def semantic_errors(cfg: dict[str, Any]) -> list[str]:
    """What each key cannot say alone; ``cfg`` is validated, defaults filled."""
    errors: list[str] = []

    def order(section: str, low: str, high: str, strict: bool = False) -> None:
        sec = cfg[section]
        a, b = sec[low], sec[high]
        if a > b or (strict and a == b):
            rel = "<" if strict else "<="
            errors.append(
                f"config key {section}.{low}: {a} but {section}.{high} is {b}; "
                f"{low} must be {rel} {high}"
            )

    order("UART", "reopen_min_s", "reopen_max_s")
    order("TCP_SERVER", "reconnect_min_s", "reconnect_max_s")
    order("WATCHDOG", "radio_cycle_after", "reboot_after", strict=True)
    port = cfg["UART"]["port"]
    if isinstance(port, str) and port.startswith("/dev/") and not port.startswith("/dev/tty"):
        if not port.startswith(("/dev/serial/", "/dev/rfcomm", "/dev/pts/")):
            errors.append(f"config key UART.port: {port} does not name a serial device")
    for key in cfg["UART"].get("port_map", {}):
        if not key.isdigit():
            errors.append(
                f"config key UART.port_map: key '{key}' must be a UART number such as \"2\""
            )
    bus = cfg["BUS"]
    if bus["transport"] == "tcp":
        n = 4 + 3 + len(bus["services"]) + len(cfg.get("EXTENSIONS", {}))
        if bus["base_port"] + n - 1 > 65535:
            errors.append(
                f"config key BUS.base_port: {bus['base_port']} leaves no room for the "
                f"{n} consecutive ports the bus needs (the last would be "
                f"{bus['base_port'] + n - 1} > 65535)"
            )
        if not bus["curve"]["enabled"] and not is_loopback(bus["host"]):
            errors.append(
                f"config key BUS.host: {bus['host']} is not a loopback address and "
                "BUS.curve.enabled is false; the bus would be open to anything that can "
                "reach it: enable CURVE (meterlink keys) or use 127.0.0.1"
            )
    listen = cfg.get("METRICS", {}).get("listen", "")
    if listen and split_listen(listen) is None:
        errors.append(
            f'config key METRICS.listen: "{listen}" must be "host:port" (port 1-65535) '
            'or "" to turn the endpoint off'
        )
    for i, name in enumerate(cfg["RESOLVER"]["handlers"]):
        why = _module_found(name)
        if why:
            errors.append(f"config key RESOLVER.handlers.{i}: module '{name}': {why}")
    tls = cfg["TCP_SERVER"]["tls"]
    if tls["enabled"]:
        for item in ("ca", "cert", "key"):
            if tls[item]:
                why = _readable(tls[item])
                if why:
                    errors.append(f"config key TCP_SERVER.tls.{item}: {tls[item]}: {why}")
        if bool(tls["cert"]) != bool(tls["key"]):
            errors.append("config key TCP_SERVER.tls: cert and key go together; give both")
    builtin = {"broker", "resolver", "uart", "client", "watchdog", "meter_sim", "hes_sim"}
    for name, ext in cfg.get("EXTENSIONS", {}).items():
        if not _NAME_RE.match(name) or name in builtin:
            errors.append(
                f"config key EXTENSIONS.{name}: a name must be lower case letters, digits "
                "and _ (up to 32), and not a built-in service's"
            )
        why = _module_found(ext["module"])
        if why:
            errors.append(f"config key EXTENSIONS.{name}.module: '{ext['module']}': {why}")
    return errors

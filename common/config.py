"""Configuration: one JSON file, read and validated by every process at start.

The path comes from ``METERLINK_CONFIG`` (default ``./dev.json``), the run
directory (sockets, pid and state files) from ``METERLINK_RUN_DIR`` (default
``./run``), created with mode 0700. The reference solution's ``UART`` and
``TCP_SERVER`` sections keep their keys and meaning; the other sections are
meterlink's own. Every key has a default except ``UART.port`` and
``TCP_SERVER.host``/``port``; unknown keys are errors, so a typo is caught at
start instead of being silently ignored.

String values may name the run directory as ``{run_dir}`` (for example
``"{run_dir}/meter.tty"``); it is replaced after validation.

A bad file raises ``ConfigError`` whose message names the key and the
problem; ``load_or_exit`` prints it and ends the process with status 2.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

ENV_CONFIG = "METERLINK_CONFIG"
ENV_RUN_DIR = "METERLINK_RUN_DIR"
DEFAULT_CONFIG = "dev.json"
DEFAULT_RUN_DIR = "run"


class ConfigError(Exception):
    """The configuration file is missing, not JSON, or breaks the schema.

    ``errors`` lists every problem found (the message is the first).
    """

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors: list[str] = errors or [message]


def _obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(required),
        "additionalProperties": False,
        "default": {},
    }


_NUM = "number"
_INT = "integer"


def _num(default: float, minimum: float = 0) -> dict[str, Any]:
    return {"type": _NUM, "minimum": minimum, "default": default}


def _int(default: int, minimum: int = 0, maximum: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": _INT, "minimum": minimum, "default": default}
    if maximum is not None:
        spec["maximum"] = maximum
    return spec


_ARGV = {"type": "array", "items": {"type": "string"}, "default": []}
_HOSTPORT = {
    "type": "array",
    "items": [{"type": "string", "minLength": 1}, {"type": _INT, "minimum": 1, "maximum": 65535}],
    "minItems": 2,
    "maxItems": 2,
}

SCHEMA: dict[str, Any] = _obj(
    {
        "UART": _obj(
            {
                # A device path or any pyserial URL (socket://, rfc2217://, loop://),
                # or the reference's UART number, mapped by port_map or /dev/ttyS<N>.
                "port": {"type": ["string", "integer"], "minLength": 1, "minimum": 0},
                "port_map": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "minLength": 1},
                    "default": {},
                },
                "baudrate": _int(115200, 50),
                "bytesize": {"enum": [5, 6, 7, 8], "default": 8},
                # Reference values 0/1/2 (none/even/odd) or pyserial letters.
                "parity": {"enum": [0, 1, 2, 3, 4, "N", "E", "O", "M", "S"], "default": 0},
                "stopbits": {"enum": [1, 1.5, 2], "default": 1},
                "flowctl": {"enum": [0, 1], "default": 0},  # 0 none, 1 RTS/CTS
                "rs485": {"type": "boolean", "default": False},
                "profile": {"enum": ["quectel", "rfc1662"], "default": "quectel"},
                "accm": _int(0xFFFFFFFF, 0, 0xFFFFFFFF),
                "max_info": _int(1024, 1, 65534),
                "idle_gap_ms": _num(20),
                "reopen_min_s": _num(0.2),
                "reopen_max_s": _num(5),
                # What the uart holds until the client has it safe (see common.journal).
                "journal": _obj(
                    {
                        "fsync": {"enum": ["always", "interval", "never"], "default": "interval"},
                        "fsync_interval_s": _num(1.0, 0.001),
                        # Bound of what is held; at the bound the uart stops reading.
                        "max_bytes": _int(8 * 1024 * 1024, 64 * 1024),
                    }
                ),
            },
            ("port",),
        ),
        "TCP_SERVER": _obj(
            {
                "host": {"type": "string", "minLength": 1},
                "port": _int(0, 1, 65535),
                "timeout": _num(5),  # connect timeout, seconds
                "keep_alive": _int(60),  # TCP keep-alive idle seconds; 0 turns it off
                "reconnect_min_s": _num(0.5),
                # Longest wait between connect attempts for the first
                # reconnect_slow_after_s of an outage (so the link is back
                # within about this long once the HES accepts again) ...
                "reconnect_max_s": _num(1.5),
                # ... and after that.
                "reconnect_slow_after_s": _num(600),
                "reconnect_slow_max_s": _num(30),
                # Longest a name lookup of the HES may take.
                "resolve_timeout_s": _num(5, 0.05),
                "tls": _obj(
                    {
                        "enabled": {"type": "boolean", "default": False},
                        "ca": {"type": "string", "default": ""},
                        "cert": {"type": "string", "default": ""},
                        "key": {"type": "string", "default": ""},
                        "verify": {"type": "boolean", "default": True},
                        "server_hostname": {"type": "string", "default": ""},
                    }
                ),
                # Sent on every connect / every interval: hex, or a template
                # such as "REG {device_name} {meter_sn}\r\n" when "format" is text.
                "registration": _obj(
                    {
                        "payload": {"type": "string", "default": ""},
                        "format": {"enum": ["hex", "text"], "default": "hex"},
                    }
                ),
                "heartbeat": _obj(
                    {
                        "interval_s": _num(0),
                        "payload": {"type": "string", "default": ""},
                        "format": {"enum": ["hex", "text"], "default": "hex"},
                    }
                ),
                "spool": _obj(
                    {
                        "max_bytes": _int(16 * 1024 * 1024, 1024),
                        "max_age_s": _num(7 * 24 * 3600, 1),
                        # "pushes": responses held while the HES was away are
                        # dropped (counted) when the link returns; the rest goes.
                        "policy": {"enum": ["all", "pushes"], "default": "all"},
                    }
                ),
                # What separates the APDUs on the TCP stream: nothing ("raw", as
                # the reference does) or the IEC 62056-47 wrapper header.
                "framing": {"enum": ["raw", "wrapper"], "default": "raw"},
                # wPorts of the uplink wrapper headers: source is the meter's
                # logical device (1: management), destination the HES's client
                # (16: public client).
                "wrapper": _obj(
                    {
                        "source_wport": _int(1, 0, 0xFFFF),
                        "destination_wport": _int(16, 0, 0xFFFF),
                    }
                ),
            },
            ("host", "port"),
        ),
        "DEVICE": _obj(
            {
                "name": {"type": "string", "default": "meterlink"},
                "meter_sn": {"type": "string", "default": ""},
                # Parameter ids the meter may SET; stored in the run directory.
                "writable": {
                    "type": "array",
                    "items": {"type": _INT, "minimum": 0, "maximum": 0xFFFF},
                    "default": [0x8007],
                },
            }
        ),
        "RESOLVER": _obj(
            {
                # Modules with @resolver.register handlers, imported by every worker.
                "handlers": {"type": "array", "items": {"type": "string"}, "default": []},
                "prefetch": _int(8, 1),
            }
        ),
        "WATCHDOG": _obj(
            {
                "interval_s": _num(5, 0.05),
                "timeout_s": _num(3, 0.01),
                # [[host, port], ...]; empty means the HES address.
                "targets": {"type": "array", "items": _HOSTPORT, "default": []},
                "radio_cycle_after": _int(3, 1),
                "reboot_after": _int(6, 1),
                "radio_cycle_cmd": _ARGV,
                "reboot_cmd": _ARGV,
                "status_interval_s": _num(10, 0.05),
                # A recovery command still running after this is killed.
                "command_timeout_s": _num(60, 0.1),
                # Largest factor by which the ladder's spacing grows when it
                # repeats during one long outage (1: repeat at fixed spacing).
                "ladder_backoff_max": _int(16, 1),
                "lqi": _obj(
                    {
                        "source": {"enum": ["fixed", "command", "at"], "default": "fixed"},
                        "value": _int(99, 0, 255),
                        "command": _ARGV,
                        # Regex whose first group is the value (command output).
                        "pattern": {"type": "string", "default": r"(\d+)"},
                        "at_port": {"type": "string", "default": ""},
                        "at_baudrate": _int(115200, 50),
                        # Longest one reading (command or AT exchange) may take.
                        "timeout_s": _num(2, 0.05),
                    }
                ),
            }
        ),
        "BUS": _obj(
            {
                "transport": {"enum": ["ipc", "tcp"], "default": "ipc"},
                "host": {"type": "string", "default": "127.0.0.1"},
                "base_port": _int(5550, 1, 65000),
                "services": {"type": "array", "items": {"type": "string"}, "default": []},
                # CURVE on every bus socket (see common.buskeys); required to
                # bind anything but loopback with transport tcp.
                "curve": _obj(
                    {
                        "enabled": {"type": "boolean", "default": False},
                        # Key pairs (meterlink keys) and allowed/ public keys.
                        "keys_dir": {"type": "string", "default": "{run_dir}/keys"},
                    }
                ),
            }
        ),
        # Prometheus exposition, served by the broker: "host:port", "" turns it off.
        "METRICS": _obj({"listen": {"type": "string", "default": "127.0.0.1:9727"}}),
        "LOG": _obj({"level": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR"], "default": "INFO"}}),
        # Your own long-running services: name -> {"module", "settings"}; each
        # gets an inbox on the bus and its own supervisord program.
        "EXTENSIONS": {
            "type": "object",
            "additionalProperties": _obj(
                {
                    "module": {"type": "string", "minLength": 1},
                    "settings": {"type": "object", "default": {}},
                },
                ("module",),
            ),
            "default": {},
        },
    },
    ("UART", "TCP_SERVER"),
)

GENERATED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_config_schema.py")


_IMPORT_LINE = "from fastjsonschema import JsonSchemaValueException, JsonSchemaValuesException\n"
_LOCAL_ERRORS = (
    "class JsonSchemaValueException(ValueError):\n"
    "    def __init__(self, message, **_):\n"
    "        super().__init__(message)\n"
    "        self.message = message\n"
    "\n"
    "\n"
    "JsonSchemaValuesException = JsonSchemaValueException\n"
)

# The validator checks numbers with isinstance(x, (int, float, Decimal)). A
# config read by json.loads never holds a Decimal, so a class of that name
# that nothing instantiates checks the same, and no process imports decimal
# (0.3 MB each).
_DECIMAL_LINE = "from decimal import Decimal\n"
_NO_DECIMAL = "class Decimal:  # json.loads makes none; see common.config\n    pass\n"


def generate_validator() -> str:
    """The validator's source, generated by fastjsonschema from SCHEMA.

    Generated ahead of time and committed: compiling SCHEMA at every start
    cost each process about 7 MB, and importing fastjsonschema another 3 MB,
    so the generated module defines its own exception and the processes never
    import the library. A test checks that it matches SCHEMA; regenerate with
    ``python -m common.config --generate``.
    """
    import fastjsonschema

    code = fastjsonschema.compile_to_code(SCHEMA, use_default=False, detailed_exceptions=False)
    if _IMPORT_LINE not in code or _DECIMAL_LINE not in code:
        raise RuntimeError("fastjsonschema's generated code changed shape; update config.py")
    if "Decimal(" in code:
        # A float multipleOf makes the validator build Decimals: the stand-in
        # would raise TypeError instead of naming the bad key.
        raise RuntimeError("the validator builds Decimals now; drop the stand-in in config.py")
    header = (
        "# Generated from common.config.SCHEMA by `python -m common.config --generate`.\n"
        "# Do not edit; a test fails when it no longer matches SCHEMA.\n"
        "# ruff: noqa\n"
        "# mypy: ignore-errors\n"
    )
    return header + code.replace(_IMPORT_LINE, _LOCAL_ERRORS).replace(_DECIMAL_LINE, _NO_DECIMAL)


from common import _config_schema  # noqa: E402

_validate: Callable[[Any], Any] = _config_schema.validate  # generated, so untyped


def _fill_defaults(schema: dict[str, Any], doc: dict[str, Any], path: tuple[str, ...] = ()) -> None:
    """Put in every missing key that has a default, all the way down; a
    missing required key is an error naming it."""
    for key in schema.get("required", ()):
        if key not in doc:
            raise ConfigError(f"config key {'.'.join((*path, key))}: missing (it has no default)")
    for key, spec in schema.get("properties", {}).items():
        if key not in doc and "default" in spec:
            doc[key] = json.loads(json.dumps(spec["default"]))
        if spec.get("type") == "object" and isinstance(doc.get(key), dict):
            _fill_defaults(spec, doc[key], (*path, key))


def _split_message(message: str) -> tuple[str, str]:
    """``"data.UART.baudrate must be integer"`` -> ``("UART.baudrate", "must be integer")``."""
    name, _, problem = message.partition(" ")
    if not name.startswith("data"):
        return "(top level)", message
    key = re.sub(r"\[(\d+)\]", r".\1", name[len("data") :]).lstrip(".")
    return key or "(top level)", problem


def validate(doc: Any) -> dict[str, Any]:
    """Validate a parsed document, fill defaults; raise ConfigError naming the key."""
    if not isinstance(doc, dict):
        raise ConfigError("config: the top level must be a JSON object")
    from common.checks import schema_errors, semantic_errors

    doc = json.loads(json.dumps(doc))
    try:
        _fill_defaults(SCHEMA, doc)
        out = _validate(doc)
    except (_config_schema.JsonSchemaValueException, ConfigError) as exc:
        # The fast validator stops at the first problem; name them all.
        errors = schema_errors(SCHEMA, doc)
        if not errors:
            if isinstance(exc, ConfigError):
                raise
            key, problem = _split_message(str(exc.message))
            errors = [f"config key {key}: {problem}"]
        raise ConfigError(errors[0], errors) from None
    assert isinstance(out, dict)
    for ext in out["EXTENSIONS"].values():
        ext.setdefault("settings", {})
    errors = semantic_errors(out)
    if errors:
        raise ConfigError(errors[0], errors)
    return out


def _expand(value: Any, run_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace("{run_dir}", run_dir)
    if isinstance(value, list):
        return [_expand(v, run_dir) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, run_dir) for k, v in value.items()}
    return value


def config_path() -> str:
    return os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG


def run_dir() -> str:
    """The run directory, created with mode 0700 if it does not exist."""
    path = os.path.abspath(os.environ.get(ENV_RUN_DIR) or DEFAULT_RUN_DIR)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def load(
    path: str | os.PathLike[str] | None = None, run_directory: str | None = None
) -> dict[str, Any]:
    """Read, validate and expand the configuration file."""
    file = os.fspath(path) if path is not None else config_path()
    try:
        with open(file, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"config file {file}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {file}: not JSON: {exc}") from None
    cfg = validate(doc)
    rd = run_directory if run_directory is not None else run_dir()
    expanded = _expand(cfg, rd)
    assert isinstance(expanded, dict)
    from common.checks import map_uart_port

    mapped = map_uart_port(expanded["UART"])
    if mapped:
        expanded["_port_mapped"] = mapped
    # Extensions are services with an inbox, as BUS.services are.
    services = expanded["BUS"]["services"]
    services.extend(name for name in expanded["EXTENSIONS"] if name not in services)
    expanded["_run_dir"] = rd
    expanded["_path"] = os.path.abspath(file)
    return expanded


def _main(argv: list[str]) -> int:
    if argv == ["--generate"]:
        with open(GENERATED, "w", encoding="utf-8") as fh:
            fh.write(generate_validator())
        print(f"wrote {os.path.basename(GENERATED)}")
        return 0
    print("usage: python -m common.config --generate", file=sys.stderr)
    return 2


def load_or_exit(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``load``, but a bad file ends the process with the message and status 2."""
    try:
        return load(path)
    except ConfigError as exc:
        print(f"meterlink: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))

"""The bus: endpoint names, topics, timings and the message envelope, in one place.

Every process imports this module (as zguide's Majordomo keeps ``MDP.py``), so
the broker and the services cannot disagree about a name or an interval.

Wire shapes (ZeroMQ multipart messages; every envelope is msgpack):

- service -> broker, on ``broker.in`` (PUSH -> PULL):  ``[dst, envelope]``
- broker -> service, on ``<name>.in`` (PUSH -> PULL):  ``[dst, envelope]``
- broker <-> resolver workers, on ``resolver.in`` (ROUTER <-> DEALER):
  worker -> broker ``[ready|hb, envelope]`` (data ``{"capacity", "pid", ...}``)
  and ``[result, job_id, msgpack([[dst, envelope], ...])]``;
  broker -> worker ``[job, job_id, envelope]`` where the envelope is the
  source's own ``frames`` message, forwarded untouched; job_id is 8 bytes,
  big-endian
- events, ``events.in`` (PUB -> XSUB) and ``events.out`` (XPUB -> SUB):
  ``[topic, envelope]``

The envelope is the msgpack array ``[src, inst, seq, ts, op, data]``, with an
optional seventh element ``ref`` on messages that belong to an acknowledged
stream (see ``common.delivery``):

=====  ======  ===========================================================
field  type    meaning
=====  ======  ===========================================================
src    str     the sending service's name (``uart``, ``resolver``, ...)
inst   int     the sending process's instance id (its start time in ns), so
               a restarted service starts a new sequence
seq    int     per-source sequence number, counting from 0 for each inst
ts     float   the sender's wall-clock time, seconds since the epoch
op     str     the operation (see ``OPS``)
data   any     the operation's data: msgpack types; frames are raw bytes
ref    array   optional: ``[src, inst, n, base, t]``, the identity of the unit of
               an acknowledged stream this message carries or derives from:
               the stream's owner and instance, the unit's number ``n``
               (0, 1, 2 ... per instance) and ``base``, the lowest unit the
               owner still holds (so a receiver that never saw the stream
               knows where it starts), and ``t``, when it was read (the
               monotonic clock, which Linux shares between processes; for
               latency figures only). A unit keeps its ref however often it
               is sent and whichever process instance sends it.
=====  ======  ===========================================================
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, NamedTuple

import msgpack

# -- endpoints --------------------------------------------------------------

BROKER_IN = "broker.in"
EVENTS_IN = "events.in"
EVENTS_OUT = "events.out"
RESOLVER_IN = "resolver.in"

BROKER = "broker"
RESOLVER = "resolver"
UART = "uart"
CLIENT = "client"
WATCHDOG = "watchdog"

#: Services with an inbox of their own (PUSH/PULL). The resolver pool has
#: ``resolver.in`` (ROUTER/DEALER) instead. Configured extras come after these.
INBOX_SERVICES: tuple[str, ...] = (UART, CLIENT, WATCHDOG)

#: Fixed endpoint order: with ``tcp://`` transport endpoint i is base_port + i.
FIXED_ENDPOINTS: tuple[str, ...] = (BROKER_IN, EVENTS_IN, EVENTS_OUT, RESOLVER_IN)

# -- pool message kinds -----------------------------------------------------

KIND_READY = b"ready"
KIND_HB = b"hb"
KIND_JOB = b"job"
KIND_RESULT = b"result"

# -- operations -------------------------------------------------------------

OP_FRAMES = "frames"  # uart -> resolver pool: data = [raw frame bytes, ...]
OP_SEND = "send"  # -> client: data = [payload bytes, ...] for the HES
OP_WRITE = "write"  # -> uart: data = [raw frame bytes, ...] for the meter
OP_HB = "hb"  # -> broker: data = {"pid", "started", "counters", ...}
OP_EVENT = "event"  # a published event; data is the event's own
OP_ACK = "ack"  # -> a stream's owner: data = [inst, n], units up to n are safe
OP_NACK = "nack"  # -> a stream's owner: data = [inst, n], send again from unit n

#: Operations whose data is a list that may be concatenated when consecutive
#: messages go to the same destination (the pool batches them this way).
BATCHABLE_OPS = frozenset({OP_SEND, OP_WRITE})

# -- event topics -----------------------------------------------------------

T_NET_UP = "net.up"
T_NET_DOWN = "net.down"
T_NET_STATUS = "net.status"
T_LINK_UP = "link.up"
T_LINK_DOWN = "link.down"
T_LINK_STATUS = "link.status"
T_SERIAL_OPEN = "serial.open"
T_SERIAL_LOST = "serial.lost"
T_SERIAL_STATUS = "serial.status"
T_REGISTRY = "registry"
T_METER_EVENT = "meter.event"
T_METER_RESPONSE = "meter.response"
T_PARAM_SET = "param.set"
T_TAP = "tap"

#: Topics whose last value the broker keeps and sends again to a new
#: subscriber, so that a service that starts late still learns the state.
STATE_TOPICS: tuple[str, ...] = (
    T_NET_STATUS,
    T_LINK_STATUS,
    T_SERIAL_STATUS,
    T_REGISTRY,
)

# -- timings and bounds ------------------------------------------------------

# Every heartbeat costs its sender and the broker a wake-up: at 1 s the idle
# stack stays under 1% of a core; a service (or worker) silent for
# LIVENESS heartbeats (3 s) counts as gone.
HEARTBEAT_INTERVAL = 1.0  # seconds between heartbeats from every service
LIVENESS = 3  # heartbeats missed before a service (or worker) counts as gone
POLL_MAX = 1.0  # longest a loop sleeps in poll with no timer due (a safety net)
OUTBOX_MAX = 100_000  # messages a service holds while the bus is slow or down
OUTBOX_MAX_BYTES = 64 * 1024 * 1024  # ... and bytes
PENDING_MAX = 100_000  # messages the broker holds per absent destination
PENDING_MAX_BYTES = 64 * 1024 * 1024  # ... and bytes
SNDHWM = 10_000  # ZeroMQ high-water marks on bus sockets
POOL_PREFETCH = 8  # jobs a resolver worker may hold at once (its credit)
POOL_BACKLOG_MAX = 200_000  # frames waiting for a worker before the broker drops
POOL_BACKLOG_MAX_BYTES = 64 * 1024 * 1024  # ... and bytes
POOL_CAPACITY_MAX = 256  # largest credit a worker may claim
NAMES_MAX = 256  # distinct names the broker keeps counters or log marks for
POOL_MAX_ATTEMPTS = 3  # workers a job may be given to before it is dropped
REGISTRY_INTERVAL = 1.0  # seconds between registry publications


class EnvelopeError(ValueError):
    """A message on the bus that does not decode: counted and dropped by its receiver."""


# Envelope and Ref are NamedTuples, not dataclasses: immutable values, quicker to
# build (one per message) and ``dataclasses`` (with ``inspect``, ``ast``, ``dis``)
# costs every process about a megabyte of its own memory.


class Envelope(NamedTuple):
    """One bus message; see the module docstring for the wire format."""

    src: str
    inst: int
    seq: int
    ts: float
    op: str
    data: Any
    ref: Ref | None = None


class Ref(NamedTuple):
    """A unit of an acknowledged stream: ``(src, inst)`` names the stream."""

    src: str
    inst: int
    n: int
    base: int
    t: float | None = None  # when the unit was read (monotonic, host-wide), if known

    @property
    def stream(self) -> tuple[str, int]:
        return (self.src, self.inst)

    def wire(self) -> list[Any]:
        if self.t is None:
            return [self.src, self.inst, self.n, self.base]
        return [self.src, self.inst, self.n, self.base, self.t]


def decode_ref(obj: Any) -> Ref:
    """A ``ref`` from its wire form; EnvelopeError if it is not one."""
    if (
        not isinstance(obj, list)
        or len(obj) not in (4, 5)
        or not isinstance(obj[0], str)
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in obj[1:4])
        or obj[2] < 0
        or obj[3] < 0
        or (
            len(obj) == 5
            and (
                not isinstance(obj[4], (int, float))
                or isinstance(obj[4], bool)
                or not math.isfinite(obj[4])
            )
        )
    ):
        raise EnvelopeError("ref must be [src, inst, n >= 0, base >= 0, (t)]")
    return Ref(obj[0], obj[1], obj[2], obj[3], float(obj[4]) if len(obj) == 5 else None)


_packb = msgpack.Packer(use_bin_type=True).pack


def encode(env: Envelope) -> bytes:
    """Encode an envelope; the one place the wire layout is written."""
    fields = [env.src, env.inst, env.seq, env.ts, env.op, env.data]
    if env.ref is not None:
        fields.append(env.ref.wire())
    raw: bytes = _packb(fields)
    return raw


def encode_parts(
    src: str, inst: int, seq: int, op: str, data: Any, ref: list[Any] | None = None
) -> bytes:
    """Encode without building an Envelope first (the hot path)."""
    if ref is None:
        raw: bytes = _packb([src, inst, seq, time.time(), op, data])
    else:
        raw = _packb([src, inst, seq, time.time(), op, data, ref])
    return raw


def decode(raw: bytes) -> Envelope:
    """Decode and check an envelope; raise EnvelopeError for anything else."""
    try:
        obj = msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise EnvelopeError(f"not msgpack: {type(exc).__name__} {exc}") from None
    if not isinstance(obj, list) or len(obj) not in (6, 7):
        raise EnvelopeError("not a 6- or 7-element envelope array")
    src, inst, seq, ts, op, data = obj[:6]
    ref = decode_ref(obj[6]) if len(obj) == 7 else None
    if not isinstance(src, str) or not isinstance(op, str):
        raise EnvelopeError("src and op must be strings")
    if not isinstance(inst, int) or not isinstance(seq, int) or seq < 0:
        raise EnvelopeError("inst and seq must be integers, seq >= 0")
    if not isinstance(ts, (int, float)):
        raise EnvelopeError("ts must be a number")
    return Envelope(src, inst, seq, float(ts), op, data, ref)


def new_instance_id() -> int:
    """A process instance id: unique per start, increasing across restarts."""
    return time.time_ns() + os.getpid() % 1000


# -- addresses ---------------------------------------------------------------

IPC_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


def endpoint(bus_cfg: dict[str, Any], run_dir: str, name: str) -> str:
    """The ZeroMQ address of endpoint ``name`` (``broker.in``, ``uart.in`` ...)."""
    if bus_cfg.get("transport", "ipc") == "tcp":
        names = list(FIXED_ENDPOINTS) + [f"{s}.in" for s in all_inbox_services(bus_cfg)]
        if name not in names:
            raise KeyError(f"unknown endpoint {name!r}")
        return f"tcp://{bus_cfg['host']}:{int(bus_cfg['base_port']) + names.index(name)}"
    path = os.path.join(os.path.abspath(run_dir), name)
    if len(path) > IPC_PATH_MAX:
        raise ValueError(
            f"ipc path too long ({len(path)} > {IPC_PATH_MAX}): {path}; "
            "choose a shorter METERLINK_RUN_DIR or BUS.transport tcp"
        )
    return f"ipc://{path}"


def all_inbox_services(bus_cfg: dict[str, Any]) -> tuple[str, ...]:
    """The built-in inbox services plus any configured in ``BUS.services``."""
    extra = tuple(s for s in bus_cfg.get("services", ()) if s not in INBOX_SERVICES)
    return INBOX_SERVICES + extra

"""Counter totals that survive restarts, and the Prometheus view of a gateway.

No sockets and no threads: the broker feeds ``Totals`` from the heartbeats it
already receives and ``families(snapshot)`` turns one snapshot of its state
into Prometheus metric families; ``services.metrics`` serves them over HTTP.

**Totals.** Every service reports its counters in each heartbeat, counted from
its own start. ``Totals`` keeps, per service name, what the instances that
are gone had counted (``retired``) plus the latest figures of the live ones,
so a restarted uart does not reset ``frames_in`` to 0: to a scraper (and in
``meterlink status``) a restart is not a reset. Within one instance a figure
never goes down (the highest seen is kept). What an instance counted after
its last heartbeat before it died (at most half a second) is not in the total.
The broker writes the totals to ``<run_dir>/metrics-totals.json`` once a
second, so its own restart keeps them too.

**Drops.** ``drop_reason(key)`` says whether a counter key counts a loss and
names the reason; ``status``'s headline and ``meterlink_drops_total`` both
use it, so they always agree and no reason is left out of either.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

from common import promtext

#: Counter keys that count a loss although their name does not say "drop":
#: frames the deframer or a worker threw away, and reasons from the spool.
LOSS_KEYS: frozenset[str] = frozenset(
    {
        "bad_fcs",
        "bad_flag",
        "oversize",
        "bad_length",
        "bad_header",
        "bad_escape",
        "truncated",
        "frames.bad",
        "frames.unknown_protocol",
        "frames.handler_error",
        "jobs.errors",
        "bus.bad_envelope",
        "bus.unknown_op",
        "bus.bad_message",
        "events.bad",
        "spool.errors",
        "send.bad",
        "send.too_long",
        "marks.errors",
        "write_dropped",
        "write_stale",
        "write_bad",
        "uplink.resyncs",
        "downlink.resyncs",
    }
)


#: Upper bounds (seconds) of the latency histograms' buckets.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 3600.0,
)  # fmt: skip
#: name -> (series, help) of the latency histograms services keep.
LATENCIES: dict[str, tuple[str, str]] = {
    "uplink": (
        "meterlink_uplink_latency_seconds",
        "From the frame's read on the serial line to the gateway holding it safe: "
        "the HES's TCP acknowledgement (or the spool, while the HES is away or behind)",
    ),
    "downlink": (
        "meterlink_downlink_latency_seconds",
        "From reading HES data to the uart's word that it is written to the meter",
    ),
}
_LAT = "latency."


def observe(counters: dict[str, int], name: str, seconds: float) -> None:
    """Count one latency in ``counters`` as histogram counters
    (``latency.<name>.b<i>``, ``.count``, ``.sum_us``): they travel in the
    heartbeat and are totalled across restarts like every counter."""
    if not math.isfinite(seconds):
        return  # a ref's time from a broken peer counts nothing
    i = 0
    for i, bound in enumerate(LATENCY_BUCKETS):  # noqa: B007 - i is the bucket found
        if seconds <= bound:
            break
    else:
        i = len(LATENCY_BUCKETS)
    prefix = _LAT + name
    counters[f"{prefix}.b{i}"] = counters.get(f"{prefix}.b{i}", 0) + 1
    counters[prefix + ".count"] = counters.get(prefix + ".count", 0) + 1
    counters[prefix + ".sum_us"] = counters.get(prefix + ".sum_us", 0) + max(0, int(seconds * 1e6))


def is_latency(key: str) -> bool:
    """A histogram counter (kept out of ``status``'s counter list)."""
    return key.startswith(_LAT)


def drop_reason(key: str) -> str | None:
    """The loss a counter key counts (``"unknown_protocol"``), or None if it counts no loss.

    A key is a loss if it is listed in ``LOSS_KEYS`` or any of its parts says
    ``drop``/``dropped`` (``drop.unknown_dst``, ``spool.dropped_age``,
    ``tap.dropped``, ``drop.queue_full.client``).
    """
    if key in LOSS_KEYS:
        return key.rsplit(".", 1)[-1] if key.startswith("frames.") else key.replace(".", "_")
    parts = key.split(".")
    if not any(p.startswith("drop") for p in parts):
        return None
    rest = [p for p in parts if p not in ("drop", "dropped")]
    reason = "_".join(p.removeprefix("dropped_") for p in rest)
    return reason or "dropped"


class Totals:
    """Per-service counter totals across instances (see the module docstring)."""

    #: Retired instances remembered, so that one heard from again (it was only
    #: silent for a while: a stalled loop, a slow broker) is not counted twice.
    GONE_MAX = 256

    def __init__(self) -> None:
        self.retired: dict[str, dict[str, int]] = {}
        #: (name, inst) -> [last_seen (monotonic), counters]
        self.live: dict[tuple[str, int], tuple[float, dict[str, int]]] = {}
        #: (name, inst) -> counters it had when retired (most recent last)
        self.gone: dict[tuple[str, int], dict[str, int]] = {}

    def update(self, name: str, inst: int, counters: Any, now: float) -> None:
        """An instance's latest counters (from a heartbeat)."""
        entry = self.live.get((name, inst))
        last = entry[1] if entry is not None else {}
        if entry is None and (name, inst) in self.gone:
            # Back after a silence: its figures leave the retired sum and go on
            # from where they were, so the total counts them once.
            last = self.gone.pop((name, inst))
            dest = self.retired.get(name, {})
            for key, value in last.items():
                dest[key] = dest.get(key, 0) - value
        if isinstance(counters, Mapping):
            for key, value in counters.items():
                if isinstance(key, str) and isinstance(value, int) and not isinstance(value, bool):
                    if value > last.get(key, 0):
                        last[key] = value
        self.live[(name, inst)] = (now, last)

    def retire(self, name: str, inst: int) -> None:
        """An instance is gone: what it counted stays in its service's total."""
        entry = self.live.pop((name, inst), None)
        if entry is None:
            return
        dest = self.retired.setdefault(name, {})
        for key, value in entry[1].items():
            dest[key] = dest.get(key, 0) + value
        if inst != -1:
            self.gone[(name, inst)] = entry[1]
            while len(self.gone) > self.GONE_MAX:
                del self.gone[next(iter(self.gone))]

    def expire(self, now: float, limit: float) -> None:
        """Retire the instances not heard from for ``limit`` seconds."""
        for key, (seen, _) in list(self.live.items()):
            if now - seen > limit:
                self.retire(*key)

    def totals(self) -> dict[str, dict[str, int]]:
        out = {name: dict(c) for name, c in self.retired.items()}
        for (name, _inst), (_seen, counters) in self.live.items():
            dest = out.setdefault(name, {})
            for key, value in counters.items():
                dest[key] = dest.get(key, 0) + value
        return out

    # -- persistence -----------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            "retired": self.retired,
            "live": [[name, inst, c] for (name, inst), (_s, c) in self.live.items()],
            "gone": [[name, inst, c] for (name, inst), c in self.gone.items()],
        }

    def load(self, doc: Any, now: float) -> None:
        """Take totals written by an earlier broker; live ones expire unless heard from."""
        if not isinstance(doc, dict):
            return
        for name, counters in (doc.get("retired") or {}).items():
            if isinstance(name, str) and isinstance(counters, dict):
                self.update(name, -1, counters, now)
                self.retire(name, -1)
        for item in doc.get("live") or ():
            if (
                isinstance(item, list)
                and len(item) == 3
                and isinstance(item[0], str)
                and isinstance(item[1], int)
            ):
                self.update(item[0], item[1], item[2], now)
        for item in doc.get("gone") or ():
            if (
                isinstance(item, list)
                and len(item) == 3
                and isinstance(item[0], str)
                and isinstance(item[1], int)
                and isinstance(item[2], dict)
            ):
                counts = {
                    k: v for k, v in item[2].items() if isinstance(k, str) and isinstance(v, int)
                }
                self.gone[(item[0], item[1])] = counts  # already in the retired sums

    def save(self, path: str | os.PathLike[str]) -> None:
        tmp = os.fspath(path) + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(json.dumps(self.dump()))
        os.replace(tmp, path)


def read_totals(path: str | os.PathLike[str]) -> Any:
    try:
        with open(path) as fh:
            return json.loads(fh.read())
    except (OSError, ValueError):
        return None


# -- the Prometheus view ------------------------------------------------------------------

#: (series, help, service, counter key): counters with a name of their own.
NAMED_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    (
        "meterlink_frames",
        "Frames read from the meter and sent to the resolver pool",
        "uart",
        "frames_in",
    ),
    ("meterlink_frames", "Frames a resolver worker decoded", "resolver", "frames"),
    ("meterlink_frames_to_meter", "Frames written to the meter", "uart", "frames_out"),
    ("meterlink_uplink_payloads", "Payloads the HES acknowledged", "client", "uplink.payloads"),
    ("meterlink_uplink_bytes", "Payload bytes the HES acknowledged", "client", "uplink.bytes"),
    ("meterlink_downlink_bytes", "Bytes received from the HES", "client", "downlink.bytes"),
    ("meterlink_hes_link_downs", "Times the HES link went down (flaps)", "client", "link.downs"),
    ("meterlink_hes_connects", "Connections made to the HES", "client", "link.connects"),
    ("meterlink_garbage_bytes", "Line-noise bytes skipped between frames", "uart", "garbage_bytes"),
    (
        "meterlink_bus_auth_refused",
        "Bus peers the broker refused (CURVE key not allowed)",
        "broker",
        "auth.refused",
    ),
)

DLMS_PREFIX = {"dlms.up.": "meter_to_hes", "dlms.down.": "hes_to_meter"}


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


def families(snap: Mapping[str, Any], version: str) -> Iterator[promtext.Family]:
    """Metric families for one snapshot: ``{"registry", "link", "serial", "net"}``.

    ``registry`` is what the broker publishes on ``registry`` (with ``totals``);
    the others are the last values of the state topics, or None if never seen.
    """
    reg = snap.get("registry") or {}
    totals: dict[str, dict[str, int]] = reg.get("totals") or {}
    yield promtext.info("meterlink_build", "meterlink version", {"version": version})

    named: dict[str, promtext.Family] = {}
    for series, help_, service, key in NAMED_COUNTERS:
        fam = named.get(series)
        if fam is None:
            fam = named[series] = promtext.counter(series, help_, ["service"])
        fam.add([service], totals.get(service, {}).get(key, 0))
    yield from named.values()

    drops = promtext.counter(
        "meterlink_drops",
        "Everything lost, by the service that counted it and the reason",
        ["service", "reason"],
    )
    every = promtext.counter(
        "meterlink_counter",
        "Every counter meterlink status shows, by service and counter name",
        ["service", "counter"],
    )
    apdus = promtext.counter(
        "meterlink_dlms_apdus",
        "DLMS APDUs in 0x2100 payloads by direction and name (first byte only)",
        ["direction", "apdu"],
    )
    dlms: dict[tuple[str, str], int] = {}
    for service in sorted(totals):
        by_reason: dict[str, int] = {}
        for key, value in sorted(totals[service].items()):
            every.add([service, key], value)
            reason = drop_reason(key)
            if reason is not None:
                by_reason[reason] = by_reason.get(reason, 0) + value
            for prefix, direction in DLMS_PREFIX.items():
                if key.startswith(prefix):
                    k = (direction, key[len(prefix) :])
                    dlms[k] = dlms.get(k, 0) + value
        for reason, value in sorted(by_reason.items()):
            drops.add([service, reason], value)
    for (direction, name), value in sorted(dlms.items()):
        apdus.add([direction, name], value)
    yield drops
    yield apdus
    yield every
    yield from _latency_families(totals)

    def gauge(name: str, help_: str, value: Any) -> Iterator[promtext.Family]:
        v = _num(value)
        if v is not None:
            yield promtext.gauge(name, help_).add([], v)

    broker = reg.get("broker") or {}
    pool = broker.get("pool") or {}
    yield from gauge("meterlink_resolver_workers", "Live resolver workers", pool.get("workers"))
    yield from gauge(
        "meterlink_inflight_jobs",
        "Jobs a worker holds and has not answered",
        pool.get("inflight_jobs"),
    )
    yield from gauge(
        "meterlink_queued_frames", "Frames waiting for a worker", pool.get("queued_frames")
    )
    up = promtext.gauge(
        "meterlink_service_up", "Live instances of each service (heartbeating)", ["service"]
    )
    live: dict[str, int] = {}
    for svc in reg.get("services") or ():
        if isinstance(svc, dict) and isinstance(svc.get("name"), str):
            live[svc["name"]] = live.get(svc["name"], 0) + 1
    for name in sorted(live):
        up.add([name], live[name])
    yield up

    serial = snap.get("serial")
    if isinstance(serial, dict):
        yield from gauge(
            "meterlink_serial_open", "1 while the serial port is open", serial.get("open")
        )
    link = snap.get("link")
    if isinstance(link, dict):
        yield from gauge("meterlink_hes_link_up", "1 while the HES link is up", link.get("up"))
        yield from gauge(
            "meterlink_spool_entries", "Uplink payloads held in the spool", link.get("spool_depth")
        )
        yield from gauge(
            "meterlink_spool_bytes", "Bytes held in the spool", link.get("spool_bytes")
        )
        yield from gauge(
            "meterlink_spool_oldest_age_seconds",
            "Age of the oldest spooled payload (gateway running time)",
            link.get("spool_age_s", 0),
        )
    net = snap.get("net")
    if isinstance(net, dict):
        yield from gauge("meterlink_network_up", "1 while the network is up", net.get("up"))
        yield from gauge("meterlink_lqi", "Signal quality (99: unknown)", net.get("lqi"))


def _latency_families(totals: Mapping[str, Mapping[str, int]]) -> Iterator[promtext.Family]:
    for name, (series, help_) in LATENCIES.items():
        fam = promtext.histogram(series, help_, ["service"])
        prefix = _LAT + name
        for service in sorted(totals):
            counts = totals[service]
            if prefix + ".count" not in counts:
                continue
            buckets: list[tuple[str, float]] = []
            running = 0
            for i, bound in enumerate(LATENCY_BUCKETS):
                running += counts.get(f"{prefix}.b{i}", 0)
                buckets.append((repr(bound), running))
            running += counts.get(f"{prefix}.b{len(LATENCY_BUCKETS)}", 0)
            buckets.append(("+Inf", running))
            fam.add_histogram([service], buckets, counts.get(prefix + ".sum_us", 0) / 1e6)
        yield fam

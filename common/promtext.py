"""The Prometheus text exposition format (version 0.0.4), written by hand.

Why not prometheus_client: the broker would import it, and with it
``http.server``, ``email``, ``urllib.request`` and ``ssl``: about 7.7 MB of
private memory in the broker for a page of text built once a scrape (issue
10, footprint). The format is small and stable; what a scraper sees is the
same as prometheus_client wrote before (counters end in ``_total``, an info
metric is a ``_info`` gauge of 1, a histogram has cumulative ``_bucket``
series with an ``le`` label ending at ``+Inf``, then ``_count`` and
``_sum``). The test suite parses every page with prometheus_client's own
parser, which stays a test dependency.

Reference: https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

#: The Content-Type of a page (as Prometheus and prometheus_client name it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def number(value: float) -> str:
    """A sample value as Prometheus reads it: ``+Inf``, ``-Inf``, ``NaN``, else repr."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(float(value))


class Family:
    """One metric: its HELP and TYPE lines and its samples.

    ``name`` is the family's name as Prometheus shows it in TYPE: a counter's
    ends in ``_total`` (added here if missing), an info metric's in ``_info``.
    """

    __slots__ = ("help", "kind", "labels", "lines", "name")

    def __init__(self, name: str, help_: str, kind: str, labels: Sequence[str] = ()) -> None:
        if kind == COUNTER and not name.endswith("_total"):
            name += "_total"
        self.name = name
        self.help = help_
        self.kind = kind
        self.labels = tuple(labels)
        self.lines: list[str] = []

    def _series(self, suffix: str, values: Sequence[str], extra: str = "") -> str:
        pairs = [f'{k}="{_escape_label(v)}"' for k, v in zip(self.labels, values, strict=True)]
        if extra:
            pairs.append(extra)
        inner = ",".join(pairs)
        return f"{self.name}{suffix}{{{inner}}}" if inner else f"{self.name}{suffix}"

    def add(self, values: Sequence[str], value: float) -> Family:
        """A counter's or a gauge's sample for the label ``values``."""
        self.lines.append(f"{self._series('', values)} {number(value)}")
        return self

    def add_histogram(
        self, values: Sequence[str], buckets: Iterable[tuple[str, float]], total: float
    ) -> Family:
        """Cumulative ``buckets`` as ``(le, count)``, the last ``("+Inf", count)``."""
        count = 0.0
        for le, n in buckets:
            self.lines.append(
                f"{self._series('_bucket', values, f'le={chr(34)}{le}{chr(34)}')} {number(n)}"
            )
            count = n
        self.lines.append(f"{self._series('_count', values)} {number(count)}")
        self.lines.append(f"{self._series('_sum', values)} {number(total)}")
        return self


def counter(name: str, help_: str, labels: Sequence[str] = ()) -> Family:
    return Family(name, help_, COUNTER, labels)


def gauge(name: str, help_: str, labels: Sequence[str] = ()) -> Family:
    return Family(name, help_, GAUGE, labels)


def histogram(name: str, help_: str, labels: Sequence[str] = ()) -> Family:
    return Family(name, help_, HISTOGRAM, labels)


def info(name: str, help_: str, values: dict[str, str]) -> Family:
    """``<name>_info{...} 1``, a gauge, as prometheus_client's Info metric."""
    fam = Family(name + "_info", help_, GAUGE, sorted(values))
    return fam.add([values[k] for k in sorted(values)], 1)


def render(families: Iterable[Family]) -> bytes:
    """The page: every family, HELP and TYPE first, in the order given."""
    out: list[str] = []
    for fam in families:
        out.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        out.append(f"# TYPE {fam.name} {fam.kind}")
        out.extend(fam.lines)
    out.append("")
    return "\n".join(out).encode()

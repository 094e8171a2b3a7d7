"""The Prometheus endpoint, served from the broker process (``METRICS.listen``).

prometheus_client's own HTTP server runs in a daemon thread and, on each
scrape, calls a collector that reads the snapshot the broker's loop last
stored (at most ``bus.REGISTRY_INTERVAL`` old): the thread never touches a
socket of the bus nor anything the loop is changing, and nothing is added to
the path of a frame. A port that cannot be bound is logged and counted and
the broker goes on without metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from common.checks import split_listen
from common.metrics import families

log = logging.getLogger("meterlink.metrics")


def version() -> str:
    try:
        from importlib.metadata import version as _v

        return _v("meterlink")
    except Exception:
        return "0+unknown"


class _Collector:
    def __init__(self, snapshot: Callable[[], dict[str, Any]], ver: str) -> None:
        self._snapshot = snapshot
        self._version = ver

    def collect(self) -> Iterator[Any]:
        yield from families(self._snapshot(), self._version)


class MetricsServer:
    """``start()`` binds ``host:port`` and serves /metrics; ``stop()`` ends it."""

    def __init__(self, listen: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.listen = listen
        self.snapshot = snapshot
        self._server: Any = None
        self._thread: Any = None

    def start(self) -> bool:
        from prometheus_client import CollectorRegistry, start_http_server

        where = split_listen(self.listen)
        if where is None:
            log.error("metrics off reason=bad_listen listen=%r", self.listen)
            return False
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self.snapshot, version()))  # type: ignore[arg-type]
        try:
            self._server, self._thread = start_http_server(
                where[1], addr=where[0], registry=registry
            )
        except OSError as exc:
            log.warning("metrics off reason=bind listen=%s error=%s", self.listen, exc)
            return False
        log.info("metrics serving listen=%s path=/metrics", self.listen)
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(1)
            self._thread = None

"""A wall clock stepped a year either way, under real processes.

A gateway without a battery-backed clock boots near 1970 and is stepped by
NTP later (or the other way, by a bad time source). The broker runs here
under libfaketime with its wall clock stepped at run time and its monotonic
clock left real; a real service heartbeats to it all along. No service may be
declared gone, and none may be kept "up" after it died. The broker never
calls ``time.sleep`` (libfaketime#426 makes it fail under this setup).
The spool's side of it is in tests/test_spool.py (an injected clock).
"""

from __future__ import annotations

import glob
import shutil

import pytest

from common import bus
from tests.conftest import Probe, Stack, base_config, wait_for

LIBFAKETIME = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), None)
YEAR = "365d"

pytestmark = pytest.mark.skipif(
    LIBFAKETIME is None or shutil.which("faketime") is None,
    reason="libfaketime is not installed (apt-get install faketime; .ci/run does)",
)


def names(reg: dict) -> list[str]:
    return sorted(s["name"] for s in reg["services"])


def watch_registry(probe: Probe, publications: int, pred) -> None:
    """The next ``publications`` registry publications all satisfy ``pred``."""
    sub = probe.subscriber(bus.T_REGISTRY)
    try:
        for i in range(publications):
            env = probe.wait_event(sub, bus.T_REGISTRY, lambda r: True, 5)
            assert pred(env), f"publication {i + 1} after the step: {names(env)}"
    finally:
        sub.close(linger=0)


def test_a_step_of_a_year_either_way_declares_no_service_gone(stack: Stack, run_dir, probe):
    offset = run_dir / "faketime"
    offset.write_text("+0\n")
    stack.write_config(base_config(run_dir))
    broker = stack.start(
        "services.broker",
        LD_PRELOAD=LIBFAKETIME,
        FAKETIME_TIMESTAMP_FILE=str(offset),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    )
    client = stack.start("services.client")
    wait_for(lambda: "service up name=client" in broker.text(), 15, "the client to heartbeat")
    liveness = bus.HEARTBEAT_INTERVAL * bus.LIVENESS
    # Publications come every REGISTRY_INTERVAL: watch for well over the liveness.
    watch = int(3 * liveness / bus.REGISTRY_INTERVAL) + 1
    for step in (f"+{YEAR}", f"-{YEAR}"):
        offset.write_text(step + "\n")
        watch_registry(probe, watch, lambda r: "client" in names(r))
        assert "service gone" not in broker.text(), broker.text()
    # And a dead service is not kept up by a clock that went back.
    client.kill()
    wait_for(lambda: "service gone name=client" in broker.text(), 3 * liveness + 5, "client gone")

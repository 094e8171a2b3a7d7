"""The tap never misleads: no broker, bad filters, unknown names, pure JSON,
directions and lengths, the gateway's own answers, DLMS, record and replay.

Real processes: a broker and one worker over ipc in a temporary run
directory; the test plays the uart with its probe.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from common import bus, params, rfc1662
from tests.conftest import ROOT, Probe, Stack
from tests.test_bus import collect, pool

GET_REQUEST = bytes.fromhex("c001c100030100010800ff0200")  # get-request normal iid=1 class=3
FRAME = rfc1662.encode(rfc1662.Frame(rfc1662.PROTO_TRANSPARENT, 0xBF, GET_REQUEST))


def tap(stack: Stack, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.tap", *args],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_no_broker_says_so_within_wait(stack):
    started = time.monotonic()
    out = tap(stack, "--wait", "0.5")
    assert out.returncode == 1
    assert "no answer from the broker within 0.5s" in out.stderr
    assert out.stdout == ""
    assert time.monotonic() - started < 10


def test_bad_filters_are_refused_with_exit_2(stack):
    for args, needle in (
        (["--protocol", "zz"], "not a protocol id: 'zz'"),
        (["--protocol", "0x12345"], "out of range"),
        (["--op", "nosuch"], "invalid choice: 'nosuch'"),
        (["--count", "-1"], "must be >= 0"),
        (["--wait", "soon"], "not a number"),
        (["--record", "a", "--replay", "b"], "do not go together"),
    ):
        out = tap(stack, *args)
        assert out.returncode == 2, (args, out.stderr)
        assert needle in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


def test_bad_replay_file_is_exit_2_naming_the_line(stack, run_dir):
    bad = run_dir / "bad.jsonl"
    bad.write_text('{"ts": 1, "src": "uart", "dst": "resolver", "env": "00"}\nnot json\n')
    out = tap(stack, "--replay", str(bad))
    assert out.returncode == 2
    assert f"{bad}:2: not a tap record" in out.stderr
    out = tap(stack, "--replay", str(run_dir / "missing.jsonl"))
    assert out.returncode == 2 and "No such file" in out.stderr


def _stream(probe: Probe, sink, procs, stop_when) -> None:
    """Send frames (as the uart) and a gateway answer until ``stop_when()``."""
    deadline = time.monotonic() + 20
    get = params.get_response(
        rfc1662.Frame(rfc1662.PROTO_PARAMS, params.CMD_GET, b"\x80\x03"), 0x8003, b"\x15"
    )
    while not stop_when() and time.monotonic() < deadline:
        probe.send(bus.RESOLVER, bus.OP_FRAMES, [FRAME], src="uart")
        probe.send("uart", bus.OP_WRITE, [rfc1662.encode(get)], src="resolver")
        collect(sink, 1, 0.2)
    assert stop_when(), "the taps did not finish"


def test_json_is_pure_with_directions_lengths_dlms_and_replays(stack, run_dir, probe):
    broker, _ = pool(stack, run_dir, 1)
    sink = probe.inbox("client")
    probe.inbox("uart")
    record = run_dir / "trace.jsonl"
    t = stack.start(
        "services.cli.tap", "--json", "--dlms", "--count", "6", "--record", str(record), name="tap"
    )
    warn = stack.start("services.cli.tap", "--src", "nosuch", "--seconds", "1", name="tap-warn")
    broker.wait_log("tap attached")
    _stream(probe, sink, [t], lambda: not t.alive())
    assert t.popen.wait(5) == 0
    warn.popen.wait(10)
    assert "--src nosuch: no live service has this name" in warn.text()

    # stdout is JSON lines and nothing else (the log file holds stdout+stderr;
    # stderr is empty here).
    lines = t.text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert len(recs) == 6
    up = next(r for r in recs if r["op"] == "frames")
    assert up["direction"] == "meter->gw"
    f = up["frames"][0]
    assert f["payload_len"] == len(GET_REQUEST) and f["frame_len"] == len(FRAME)
    assert f["dlms"]["name"] == "get-request" and f["dlms"]["obis"] == "1.0.1.8.0.255"
    assert f["dlms"]["class_id"] == 3 and f["dlms"]["attribute"] == 2
    assert f["dlms"]["describe"].startswith("get-request normal iid=1 class=3 1.0.1.8.0.255")
    down = next(r for r in recs if r["op"] == "write")
    assert down["direction"] == "gw->meter" and down["src"] == "resolver"
    # The gateway's own answer is named as the gateway's, not the meter's.
    assert down["frames"][0]["what"].startswith("GetResponse"), down["frames"][0]
    send = next(r for r in recs if r["op"] == "send")
    assert send["direction"] == "gw->hes" and send["payloads"][0]["dlms"]["name"] == "get-request"

    # Replay prints the same records from the file, with no stack needed.
    broker.kill()
    out = tap(stack, "--replay", str(record), "--json", "--dlms")
    assert out.returncode == 0, out.stderr
    again = [json.loads(line) for line in out.stdout.splitlines()]
    assert again[: len(recs)] == recs
    out = tap(stack, "--replay", str(record), "--op", "write")
    assert out.returncode == 0
    assert "[gw->meter]" in out.stdout and "GetResponse" in out.stdout
    assert "uart>resolver" not in out.stdout


def test_closed_pipe_ends_status_and_tap_quietly(stack, run_dir, probe):
    pool(stack, run_dir, 1)
    env = bus.encode(bus.Envelope("uart", 1, 0, 1.0, bus.OP_FRAMES, [FRAME]))
    line = json.dumps({"ts": 1.0, "src": "uart", "dst": "resolver", "env": env.hex()})
    big = run_dir / "big.jsonl"
    big.write_text((line + "\n") * 5000)  # far more than a pipe holds
    sh = (
        f"{sys.executable} -m services.cli.status --watch 0.05 | head -c 10; "
        f"echo; {sys.executable} -m services.cli.tap --replay {big} | head -c 10"
    )
    out = subprocess.run(
        ["bash", "-c", "set -o pipefail; " + sh],
        cwd=ROOT,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    assert out.returncode == 0, out.stderr

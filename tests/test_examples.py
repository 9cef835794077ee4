"""The runnable examples (examples/*.py) run and print what their docs say they print."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

from tests.conftest import DEMO_INI, config_from
from trioproxy.server import serve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GREETING = "You said: "


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_embedded_example_streams_in_process_and_over_http() -> None:
    result = run_example(str(EXAMPLES / "embedded.py"))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("serving on http://127.0.0.1:")
    assert f"chat(): {GREETING}hello in-process" in result.stdout
    assert f"HTTP: {GREETING}hello over HTTP" in result.stdout
    assert "error: UnknownModel 404 model_not_found" in result.stdout
    assert lines[-1].startswith("requests finished: ")  # 2 or 3: the counts land asynchronously


async def test_ws_client_example_streams_one_request_and_cancels_another() -> None:
    # A slow demo, so the second request is still streaming when its cancel arrives.
    ini = DEMO_INI.replace("demo_delay = 0", "demo_delay = 0.02")
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, config_from(ini)))
        ws_url = urls[0].replace("http://", "ws://") + "/v1/ws"
        result = await trio.to_thread.run_sync(run_example, str(EXAMPLES / "ws_client.py"), ws_url)
        nursery.cancel_scope.cancel()

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"r1: {GREETING}hello over a WebSocket"
    assert "trioproxy demo upstream" in result.stdout
    assert lines[-1].startswith("r2: cancelled (")

"""A real browser calls trioproxy across origins (issue 20.1).

Headless Chromium (Debian's `chromium` package; `.ci/run` installs it) loads tests/data/browser/
page.html from a page server on another port of 127.0.0.1, which is another origin. The page
calls trioproxy with fetch() carrying exactly the headers the openai npm package sends from a
browser (x-stainless-*, authorization, content-type), plain and streamed, reads
`GET /v1/models/demo`, and talks over the WebSocket face, then posts what happened back to the
page server. From the origin in `cors_origins` everything must work; from another origin the
browser must refuse every fetch (CORS), which is what protects the key-holding page's users.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h11
import pytest
import trio

from tests.conftest import config_from, on_server
from trioproxy.server import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

PAGE = (Path(__file__).parent / "data" / "browser" / "page.html").read_bytes()
KEY = "sk-browser-test-key"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed here (apt-get install -y chromium; .ci/run does)",
)

# The flags of a quiet, throwaway headless browser: no sandbox (CI runs as root), no GPU, no
# network of its own (updates, sync, QUIC probing), a fresh profile per run.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
PAGE_TIMEOUT = 60  # seconds for Chromium to start, run the page and post back (a busy CI box)


class PageServer:
    """Serves page.html and takes the page's results (`POST /result`), over h11."""

    def __init__(self) -> None:
        self.results: trio.MemorySendChannel[dict[str, Any]]
        self.results, self.received = trio.open_memory_channel[dict[str, Any]](8)
        self.origin = ""

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.origin = f"http://127.0.0.1:{port}"
        task_status.started(self.origin)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER)
            while True:
                request, body = await _read_request(conn, stream)
                if request is None:
                    return
                target = request.target.decode()
                if request.method == b"GET" and target.split("?")[0] == "/page.html":
                    status, content, kind = 200, PAGE, b"text/html; charset=utf-8"
                elif request.method == b"POST" and target == "/result":
                    await self.results.send(json.loads(body))
                    status, content, kind = 204, b"", b"text/plain"
                else:  # favicon.ico and anything else
                    status, content, kind = 404, b"", b"text/plain"
                headers = [("content-type", kind), ("content-length", str(len(content)))]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=content)) or b"")
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                conn.receive_data(await stream.receive_some(65536))
            except trio.BrokenResourceError:
                return None, b""
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, body
        else:  # ConnectionClosed, PAUSED
            return None, b""


def _ini(allowed_origin: str) -> str:
    return f"""
[proxy]
listen = 127.0.0.1:0
api_keys = {KEY}
cors_origins = {allowed_origin}

[upstream:demo]
type = demo
demo_delay = 0.01

[model:demo]
upstream = demo
"""


async def _run_page(page: PageServer, proxy_url: str, profile: Path) -> dict[str, Any]:
    """Chromium loads the page from `page`'s origin; the page's results, once it posts them."""
    url = f"{page.origin}/page.html?proxy={proxy_url}&key={KEY}"
    await trio.Path(profile).mkdir()
    log = profile.parent / f"{profile.name}.log"
    assert CHROMIUM is not None
    with log.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group, so its helpers go with it
        )
        try:
            with trio.move_on_after(PAGE_TIMEOUT):
                return await page.received.receive()
            tail = log.read_text(errors="replace")[-2000:]
            pytest.fail(f"the page posted nothing within {PAGE_TIMEOUT} s; chromium said:\n{tail}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()


@pytest.fixture
async def setup(server_kind: str) -> AsyncIterator[tuple[str, PageServer, PageServer]]:
    allowed, other = PageServer(), PageServer()
    async with trio.open_nursery() as nursery:
        allowed_origin = await nursery.start(allowed.serve)
        await nursery.start(other.serve)
        bound = await nursery.start(
            partial(serve, config_from(on_server(_ini(allowed_origin), server_kind)))
        )
        yield bound[0], allowed, other
        nursery.cancel_scope.cancel()


async def test_openai_npm_headers_work_from_the_allowed_origin(
    setup: tuple[str, PageServer, PageServer], tmp_path: Path
) -> None:
    proxy_url, allowed, _ = setup
    results = await _run_page(allowed, proxy_url, tmp_path / "profile")
    assert results["origin"] == allowed.origin

    plain = results["plain"]
    assert plain["ok"], plain
    assert plain["status"] == 200
    assert plain["content"]
    assert plain["requestId"]  # x-request-id is exposed to the page

    stream = results["stream"]
    assert stream["ok"], stream
    assert stream["status"] == 200
    assert stream["done"] is True  # read to data: [DONE]
    assert stream["content"] == plain["content"]  # the demo is deterministic

    model = results["model"]
    assert model["ok"], model
    assert model["status"] == 200
    assert model["body"]["id"] == "demo"
    assert model["body"]["object"] == "model"

    ws = results["websocket"]
    assert ws["ok"], ws
    assert ws["protocol"] == "trioproxy.v1"
    assert ws["end"] == "done"
    assert ws["content"] == plain["content"]


async def test_another_origin_is_refused_by_the_browser(
    setup: tuple[str, PageServer, PageServer], tmp_path: Path
) -> None:
    proxy_url, _, other = setup
    results = await _run_page(other, proxy_url, tmp_path / "profile")
    assert results["origin"] == other.origin
    for name in ("plain", "stream", "model"):
        # fetch() rejects with a TypeError when the CORS check fails; the page sees no status
        assert results[name] == {"ok": False, "error": "TypeError: Failed to fetch"}, name

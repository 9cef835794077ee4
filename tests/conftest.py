"""Fixtures: configs built in code, an in-memory ASGI driver, and a loopback fake upstream."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import trio

from trioproxy.config import parse_config
from trioproxy.servers.asgi import ASGIApp
from trioproxy.service import Runtime
from trioproxy.upstream import HTTPClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trioproxy.config_types import ProxyConfig

DEMO_INI = """
[proxy]
listen = 127.0.0.1:0
keepalive_interval = 15

[upstream:demo]
type = demo
demo_delay = 0

[model:demo]
upstream = demo
"""


def config_from(text: str, environ: dict[str, str] | None = None) -> ProxyConfig:
    return parse_config(text, environ or {})


# The servers of `[proxy] server`: our HTTP/1.1 server on h11 (the default) and hypercorn. Tests
# that go over a real socket take the `server_kind` fixture, so that both servers are tested.
SERVERS = ("native", "hypercorn")


@pytest.fixture(params=SERVERS)
def server_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def on_server(ini: str, kind: str) -> str:
    """`ini` with `server = kind` in its [proxy] section."""
    assert "[proxy]" in ini
    return ini.replace("[proxy]", f"[proxy]\nserver = {kind}", 1)


@pytest.fixture
def demo_config() -> ProxyConfig:
    return config_from(DEMO_INI)


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    pieces: list[bytes] = field(default_factory=list)
    complete: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)

    def json(self) -> Any:
        return json.loads(self.body)


class ASGIClient:
    """Drives the ASGI app through memory channels, as hypercorn would (STYLE.md §9)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.runtime = app.runtime

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | dict[str, Any] = b"",
        headers: list[tuple[str, str]] | None = None,
        disconnect: trio.Event | None = None,
        on_piece: Any = None,
    ) -> Response:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or [])],
        }
        response = Response()
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": raw, "more_body": False}
            if disconnect is not None:
                await disconnect.wait()
            else:
                await trio.sleep_forever()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                response.status = message["status"]
                response.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    response.pieces.append(message["body"])
                    if on_piece is not None:
                        on_piece(message["body"])
                if not message.get("more_body", False):
                    response.complete = True

        await self.app(scope, receive, send)
        return response

    async def chat(self, body: dict[str, Any], *, key: str | None = None, **kw: Any) -> Response:
        headers = [("content-type", "application/json")]
        if key:
            headers.append(("authorization", f"Bearer {key}"))
        return await self.request("POST", "/v1/chat/completions", body=body, headers=headers, **kw)


@pytest.fixture
async def http_client() -> AsyncIterator[HTTPClient]:
    client = HTTPClient()
    try:
        yield client
    finally:
        await client.aclose()


def make_client(config: ProxyConfig, http: HTTPClient) -> ASGIClient:
    return ASGIClient(ASGIApp(Runtime(config, http)))


@pytest.fixture
def demo_client(demo_config: ProxyConfig, http_client: HTTPClient) -> ASGIClient:
    return make_client(demo_config, http_client)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """In CI (`CI=true`, as .ci/run runs) a skipped test is a failure: CI installs what every
    test needs (chromium, redis-server), so a skip there means a test silently stopped testing."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may skip: {report.longrepr}"

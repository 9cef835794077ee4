"""`[proxy] server = hypercorn`: TLS (trustme certificates) and HTTP/2 over ALPN, with a real h2
client, on 127.0.0.1:0. What only this server does; everything else runs on both servers in the
end-to-end tests (the `server_kind` fixture)."""

from __future__ import annotations

import json
import ssl
from functools import partial
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio
import trustme

from tests.conftest import config_from
from tests.support import assert_stream_contract, sse_payloads
from trioproxy.server import serve
from trioproxy.service import Runtime
from trioproxy.upstream import HTTPClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

TLS_INI = """
[proxy]
listen = 127.0.0.1:0
server = hypercorn
certfile = {cert}
keyfile = {key}
write_timeout = {write_timeout}
http2 = {http2}

[upstream:demo]
type = demo
demo_delay = 0

[model:demo]
upstream = demo
"""


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


class Served:
    def __init__(
        self, port: int, runtime: Runtime, client_ctx: ssl.SSLContext, *, http2: bool
    ) -> None:
        self.http2 = http2
        self.port = port
        self.runtime = runtime
        self.client_ctx = client_ctx

    async def connect(self, alpn: str) -> trio.SSLStream[trio.SocketStream]:
        self.client_ctx.set_alpn_protocols([alpn])
        tcp = await trio.open_tcp_stream("127.0.0.1", self.port)
        stream = trio.SSLStream(
            tcp, self.client_ctx, server_hostname="localhost", https_compatible=True
        )
        await stream.do_handshake()
        return stream


@pytest.fixture(params=[True, False], ids=["http2", "http1-only"])
async def served(
    ca: trustme.CA, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Served]:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ini = TLS_INI.format(
        cert=tmp_path / "server.pem",
        key=tmp_path / "server.key",
        write_timeout=1,
        http2=str(request.param).lower(),
    )
    config = config_from(ini)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    http = HTTPClient()
    runtime = Runtime(config, http)
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, config, runtime=runtime))
        assert urls[0].startswith("https://")
        yield Served(int(urls[0].rsplit(":", 1)[1]), runtime, client_ctx, http2=request.param)
        nursery.cancel_scope.cancel()
    await http.aclose()


def _chat(content: str) -> bytes:
    return json.dumps(
        {"model": "demo", "stream": True, "messages": [{"role": "user", "content": content}]}
    ).encode()


async def test_tls_http11_stream_through_hypercorn(served: Served) -> None:
    stream = await served.connect("http/1.1")
    body = _chat("hello over tls")
    await stream.send_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = bytearray()
    with trio.fail_after(10):
        while data := await stream.receive_some(65536):
            received += data
    await trio.aclose_forcefully(stream)
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    chunked = b"".join(rest.split(b"\r\n")[1::2])  # the chunk sizes are every other line
    assert_stream_contract(sse_payloads(chunked), include_usage=False)


def _h2(window: int) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
    )
    conn.initiate_connection()
    return conn


def _request(conn: h2.connection.H2Connection, body: bytes) -> int:
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(
        stream_id,
        [
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            (":authority", "localhost"),
            (":scheme", "https"),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ],
    )
    frame = conn.max_outbound_frame_size
    for start in range(0, len(body), frame):
        end = start + frame
        conn.send_data(stream_id, body[start:end], end_stream=end >= len(body))
    return stream_id


async def test_http2_over_alpn_only_when_configured(served: Served) -> None:
    stream = await served.connect("h2")
    if not served.http2:
        assert stream.selected_alpn_protocol() in (None, "http/1.1")
        await trio.aclose_forcefully(stream)
        return
    assert stream.selected_alpn_protocol() == "h2"
    conn = _h2(65535)
    stream_id = _request(conn, _chat("hello over h2"))
    await stream.send_all(conn.data_to_send())
    status, data, ended = None, bytearray(), False
    with trio.fail_after(10):
        while not ended:
            for event in conn.receive_data(await stream.receive_some(65536)):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            await stream.send_all(conn.data_to_send())
    await trio.aclose_forcefully(stream)
    assert status == b"200"
    assert_stream_contract(sse_payloads(bytes(data)), include_usage=False)


async def test_http2_cleartext_is_refused_unless_configured() -> None:
    # hypercorn speaks h2c (prior knowledge) on plain TCP whatever ALPN says; with http2 off
    # (the default) the app answers such a request 505, so an h2 client gets nothing streamed.
    config = config_from(
        "[proxy]\nlisten = 127.0.0.1:0\nserver = hypercorn\n"
        "[upstream:demo]\ntype = demo\ndemo_delay = 0\n[model:demo]\nupstream = demo\n"
    )
    async with trio.open_nursery() as nursery:
        url = (await nursery.start(partial(serve, config)))[0]
        stream = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
        conn = _h2(65535)
        stream_id = _request(conn, _chat("hello over h2c"))
        await stream.send_all(conn.data_to_send())
        status = None
        with trio.fail_after(10):
            while status is None:
                for event in conn.receive_data(await stream.receive_some(65536)):
                    if isinstance(event, h2.events.ResponseReceived):
                        assert event.stream_id == stream_id
                        status = dict(event.headers)[b":status"]
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert status == b"505"

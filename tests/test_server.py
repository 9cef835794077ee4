"""The real server: hypercorn on 127.0.0.1:0 under `trioproxy.serve`, driven by real clients
(the official openai SDK in a worker thread, raw sockets for hostile input)."""

from __future__ import annotations

import json
import os
import socket
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import h11
import openai
import pytest
import trio

from tests.conftest import DEMO_INI, config_from, on_server
from tests.support import assert_stream_contract, sse_payloads
from trioproxy.server import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
async def demo_url(server_kind: str) -> AsyncIterator[str]:
    ini = DEMO_INI.replace("demo_delay = 0", "demo_delay = 0.001")
    config = config_from(on_server(ini, server_kind))
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, config))
        yield urls[0]
        nursery.cancel_scope.cancel()


def _sdk(url: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw
    )


async def test_openai_sdk_streams_and_completes_through_the_daemon(demo_url: str) -> None:
    def run() -> tuple[list[Any], Any, Any]:
        with _sdk(demo_url) as client:
            chunks = list(
                client.chat.completions.create(
                    model="demo",
                    messages=HELLO,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            full = client.chat.completions.create(model="demo", messages=HELLO)
            with client.chat.completions.stream(model="demo", messages=HELLO) as stream:
                final = stream.get_final_completion()
            return chunks, full, final

    chunks, full, final = await trio.to_thread.run_sync(run)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("You said: hello there")
    assert chunks[-1].usage.total_tokens > 0
    assert full.choices[0].message.content == text
    assert final.choices[0].message.content == text
    assert final.choices[0].message.role == "assistant"


async def test_openai_sdk_sees_status_errors(demo_url: str) -> None:
    def run() -> Exception:
        with _sdk(demo_url) as client:
            try:
                client.chat.completions.create(model="no-such-model", messages=HELLO)
            except openai.NotFoundError as exc:
                return exc
        raise AssertionError("expected NotFoundError")

    exc = await trio.to_thread.run_sync(run)
    assert exc.status_code == 404  # type: ignore[attr-defined]
    assert exc.code == "model_not_found"  # type: ignore[attr-defined]


def _raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


async def test_malformed_websocket_upgrade_costs_one_connection_not_the_daemon(
    demo_url: str,
) -> None:
    # hypercorn#225: stray bytes after an upgrade request's headers crashed the whole server.
    port = int(demo_url.rsplit(":", 1)[1])
    upgrade = (
        b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bKdPyn3u98cTfZJSh4TNeQ==\r\n"
        b"Sec-WebSocket-Protocol: trioproxy.v1\r\n\r\nx\n"
    )
    await trio.to_thread.run_sync(_raw_exchange, port, upgrade)
    health = await trio.to_thread.run_sync(
        _raw_exchange, port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert health.startswith(b"HTTP/1.1 200")


async def test_garbage_request_line_gets_400_and_the_daemon_keeps_serving(demo_url: str) -> None:
    port = int(demo_url.rsplit(":", 1)[1])
    reply = await trio.to_thread.run_sync(_raw_exchange, port, b"\x16\x03\x01 garbage\r\n\r\n")
    assert reply == b"" or reply.startswith(b"HTTP/1.1 400")
    health = await trio.to_thread.run_sync(
        _raw_exchange, port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert health.startswith(b"HTTP/1.1 200")


async def test_a_client_that_stops_reading_is_cancelled_after_the_write_deadline() -> None:
    from trioproxy.record import Outcome
    from trioproxy.service import Runtime
    from trioproxy.upstream import HTTPClient

    ini = DEMO_INI.replace("[proxy]", "[proxy]\nwrite_timeout = 0.5")
    config = config_from(ini)
    ended = trio.Event()
    outcomes = []
    http = HTTPClient()
    try:
        runtime = Runtime(config, http)

        def on_finish(record: object) -> None:
            if record.model == "demo":  # type: ignore[attr-defined]
                outcomes.append(record.outcome)  # type: ignore[attr-defined]
                ended.set()

        runtime.on_finish.append(on_finish)
        async with trio.open_nursery() as nursery:
            url = (await nursery.start(partial(serve, config, runtime=runtime)))[0]
            port = int(url.rsplit(":", 1)[1])
            # "You said: x x x ..." streams one chunk per word: tens of MB, more than the socket
            # buffers hold, to a client that never reads.
            body = json.dumps(
                {
                    "model": "demo",
                    "stream": True,
                    "messages": [{"role": "user", "content": "x " * 300_000}],
                }
            ).encode()
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                with trio.fail_after(30):
                    await ended.wait()
                health = await trio.to_thread.run_sync(
                    _raw_exchange,
                    port,
                    b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
            nursery.cancel_scope.cancel()
    finally:
        await http.aclose()
    assert outcomes == [Outcome.CLIENT_CANCELLED]
    assert health.startswith(b"HTTP/1.1 200")


async def test_oversized_request_headers_are_refused_and_the_daemon_keeps_serving(
    demo_url: str,
) -> None:
    port = int(demo_url.rsplit(":", 1)[1])
    huge = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    reply = await trio.to_thread.run_sync(_raw_exchange, port, huge)
    assert reply.startswith(b"HTTP/1.1 431")
    health = await trio.to_thread.run_sync(
        _raw_exchange, port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert health.startswith(b"HTTP/1.1 200")


def _paused_stream_read(port: int, body: bytes, pause: float) -> bytes:
    """POST a streaming request, read nothing for `pause` seconds (so the server's writes back
    up), then read the whole response; return the decoded body."""
    conn = h11.Connection(h11.CLIENT)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        request = h11.Request(
            method="POST",
            target="/v1/chat/completions",
            headers=[
                ("host", "x"),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
            ],
        )
        sock.sendall(
            conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        )
        time.sleep(pause)
        out = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                assert event.status_code == 200
            elif isinstance(event, h11.Data):
                out += event.data
            elif isinstance(event, h11.EndOfMessage):
                return bytes(out)


async def test_a_client_that_pauses_reading_gets_every_byte_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Writes go straight to the socket while it has room, and through the locked, deadline-bound
    # slow path once it is full; bytes must never overtake each other across the two.
    slow_writes = 0
    send_all = trio.SocketStream.send_all

    async def counting_send_all(self: trio.SocketStream, data: Any) -> None:
        nonlocal slow_writes
        slow_writes += 1
        await send_all(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", counting_send_all)
    words = 4_000
    body = json.dumps(
        {
            "model": "demo",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "w " * words}],
        }
    ).encode()
    async with trio.open_nursery() as nursery:
        url = (await nursery.start(partial(serve, config_from(DEMO_INI))))[0]
        port = int(url.rsplit(":", 1)[1])
        raw = await trio.to_thread.run_sync(_paused_stream_read, port, body, 0.5)
        nursery.cancel_scope.cancel()
    payloads = sse_payloads(raw)
    assert_stream_contract(payloads, include_usage=True)
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in payloads[:-1] if c["choices"]
    )
    assert text.startswith("You said: " + " ".join(["w"] * words) + "\n")
    assert slow_writes > 0, "the client's window never filled: the slow path went untested"


def _bare_connection(sock: socket.socket) -> Any:
    """A native server connection over a real socket, outside any accept loop."""
    from trioproxy.servers.native import _Connection, _Server
    from trioproxy.service import Runtime
    from trioproxy.upstream import HTTPClient

    server = _Server(Runtime(config_from(DEMO_INI), HTTPClient()))
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    return _Connection(server, stream, sock)


async def test_a_write_never_overtakes_one_waiting_for_room_in_the_socket() -> None:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    connection = _bare_connection(ours)
    big = bytes(range(256)) * 40_000  # 10 MB: more than the socket buffers hold
    received = bytearray()

    async def drain() -> None:
        while len(received) < len(big) + 4:
            await trio.lowlevel.wait_readable(peer)
            received.extend(peer.recv(1 << 20))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection.send_raw, big)
        await trio.testing.wait_all_tasks_blocked()
        assert connection._slow_write.locked(), "the big write is waiting for room"
        received.extend(peer.recv(1 << 16))  # room again, before the waiting write wakes up
        nursery.start_soon(drain)
        # a second writer arrives just then: it must queue behind the first, not go direct
        await connection.send_raw(b"TAIL")
    assert bytes(received) == big + b"TAIL"
    assert not connection.broken
    await connection.stream.aclose()
    peer.close()


async def test_a_write_to_a_vanished_client_breaks_the_connection_and_wakes_its_watcher() -> None:
    ours, peer = socket.socketpair()
    connection = _bare_connection(ours)
    peer.close()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            watcher = trio.CancelScope()
            connection.watching = watcher

            async def watch() -> None:
                with watcher:
                    await trio.sleep_forever()

            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()
            await connection.send_raw(b"data: late\n\n")  # EPIPE on the direct path
    assert connection.broken
    assert watcher.cancelled_caught, "the request's disconnect watcher was woken"
    await connection.send_raw(b"more")  # broken already: dropped quietly
    await connection.stream.aclose()


async def test_accepting_pauses_when_out_of_descriptors_and_skips_aborted_connections(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import errno

    from trioproxy.servers import native as server_module

    failures = [errno.EMFILE, errno.ECONNABORTED]

    class FlakyListener(socket.socket):
        def accept(self) -> tuple[socket.socket, Any]:
            if failures:
                raise OSError(failures.pop(0), "scripted")
            return super().accept()

    listening = FlakyListener()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    port = listening.getsockname()[1]
    handled: list[bytes] = []
    done = trio.Event()

    async def handle(stream: trio.SocketStream, raw: socket.socket) -> None:
        assert stream.socket.fileno() == raw.fileno()
        handled.append(await stream.receive_some(100))
        await stream.aclose()
        done.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server_module._accept_loop, listening, handle, nursery)
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(b"hello")
            await done.wait()
            await client.aclose()
            nursery.cancel_scope.cancel()
    assert handled == [b"hello"]
    assert failures == []
    assert listening.fileno() == -1, "the accept loop closes its listening socket"
    assert "cannot accept connections" in caplog.text


def test_the_listen_backlog_holds_a_burst_of_connects() -> None:
    from trioproxy.servers.hypercorn_server import hypercorn_config
    from trioproxy.servers.native import LISTEN_BACKLOG, bind_sockets

    # hypercorn's default (100) drops connects beyond it in a burst; each dropped SYN costs the
    # client a 1 s retransmission (seen in bench/ at 256 concurrent clients).
    settings = config_from(DEMO_INI).proxy
    assert hypercorn_config(settings, []).backlog == LISTEN_BACKLOG >= 1024
    (sock,) = bind_sockets(settings, reuse_port=False)
    with sock:  # the native server listens with the same backlog (Linux reports it in ss -lnt)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_keep_alive_connection_the_client_closed_is_closed_at_once(
    server_kind: str,
) -> None:
    # hypercorn 0.18 keeps an idle connection's handler, and its socket, until keep_alive_timeout
    # even after the client closed it; clients that connect per request would pile them up. Our
    # server closes at once; under `server = hypercorn` only the timeout helps (its default here
    # is 75 s; docs/operations.md says so), so this test sets it to 1 s there.
    ini = on_server(DEMO_INI.replace("[proxy]", "[proxy]\nkeep_alive_timeout = 1"), server_kind)
    async with trio.open_nursery() as nursery:
        url = (await nursery.start(partial(serve, config_from(ini))))[0]
        port = int(url.rsplit(":", 1)[1])
        before = _open_descriptors()
        for _ in range(5):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await client.receive_some(65536)).startswith(b"HTTP/1.1 200")
            await trio.sleep(0.05)  # the server has recycled the connection: it is idle
            await client.aclose()
        closed_at = trio.current_time()
        with trio.fail_after(5):  # a count of the OS's, with no event to wait on: poll it
            while _open_descriptors() > before:  # noqa: ASYNC110
                await trio.sleep(0.02)
        if server_kind == "native":
            assert trio.current_time() - closed_at < 0.9, "closed at once, not at the timeout"
        nursery.cancel_scope.cancel()


async def _get(stream: trio.SocketStream, path: bytes = b"/health") -> bytes:
    await stream.send_all(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = await stream.receive_some(65536)
    assert reply.startswith(b"HTTP/1.1 200"), reply
    return reply


async def test_keep_alive_timeout_closes_only_idle_time_and_moves_with_each_request() -> None:
    ini = DEMO_INI.replace("demo_delay = 0", "demo_delay = 0.05")
    config = config_from(ini.replace("[proxy]", "[proxy]\nkeep_alive_timeout = 0.5"))
    async with trio.open_nursery() as nursery:
        url = (await nursery.start(partial(serve, config)))[0]
        stream = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
        # requests 0.3 s apart: each one re-arms the timer, so 1.2 s in all is fine
        for _ in range(4):
            await _get(stream)
            await trio.sleep(0.3)
        # a stream that lasts longer than the timeout is never cut by it (~1.5 s)
        body = json.dumps(
            {"model": "demo", "stream": True, "max_tokens": 30, "messages": HELLO}
        ).encode()
        await stream.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        with trio.fail_after(10):
            while b"data: [DONE]" not in received:
                received += await stream.receive_some(65536)
        idle_from = trio.current_time()
        with trio.fail_after(5):
            rest = await stream.receive_some(65536)
            while rest and not rest.endswith(b"0\r\n\r\n"):  # the chunked body's last bytes
                rest = await stream.receive_some(65536)
            assert await stream.receive_some(65536) == b"", "closed once idle"
        assert trio.current_time() - idle_from >= 0.4
        await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_shutdown_closes_idle_keep_alive_connections_at_once() -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        url = (
            await nursery.start(partial(serve, config_from(DEMO_INI), shutdown_trigger=stop.wait))
        )[0]
        stream = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
        await _get(stream)
        stop.set()
        with trio.fail_after(2):  # not keep_alive_timeout (75 s)
            assert await stream.receive_some(65536) == b""
        await stream.aclose()

"""A scripted fake upstream: a real HTTP/1.1 server (h11 over trio) on 127.0.0.1:0.

Each accepted request takes the next `Reply` from the script (the last one repeats), answers with
its status, headers and body pieces (chunked, with optional pauses), and records what the client
sent and when the client closed the connection, so tests can assert that a cancelled client made
trioproxy close the upstream connection promptly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import h11
import trio


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(
        default_factory=lambda: [("content-type", "text/event-stream")]
    )
    # bytes are sent as one chunk each; a float pauses that many seconds; None holds forever
    body: list[bytes | float | None] = field(default_factory=list)
    delay_head: float = 0.0  # seconds before the response head


def sse_reply(raw: bytes, *, pieces: int = 1, pause: float = 0.0) -> Reply:
    """A 200 event-stream reply sending `raw` in `pieces` parts with `pause` between them."""
    size = max(1, len(raw) // pieces)
    body: list[bytes | float | None] = []
    for start in range(0, len(raw), size):
        if body and pause:
            body.append(pause)
        body.append(raw[start : start + size])
    return Reply(body=body)


def json_reply(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(
        status=status,
        headers=[("content-type", "application/json"), *(headers or [])],
        body=[json.dumps(payload).encode()],
    )


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    closed_at: float | None = None  # trio.current_time() when the client closed the connection
    closed: trio.Event = field(default_factory=trio.Event)

    def json(self) -> Any:
        return json.loads(self.body)


class FakeUpstream:
    def __init__(self, *script: Reply) -> None:
        self.script = list(script)
        self.seen: list[Seen] = []
        self.connections = 0
        self.url = ""
        self.request_arrived = trio.Event()
        self._changed = trio.Event()

    async def wait_requests(self, count: int) -> None:
        """Block until `count` requests have arrived in all."""
        while len(self.seen) < count:
            await self._changed.wait()

    def _next_reply(self) -> Reply:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        task_status.started(self.url)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                seen = await self._read_request(stream, conn)
                if seen is None:
                    return
                self.seen.append(seen)
                self.request_arrived.set()
                self._changed.set()
                self._changed = trio.Event()
                finished = await self._answer(stream, conn, seen)
                if not finished or conn.our_state is not h11.DONE:
                    return
                if conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()

    async def _read_request(self, stream: trio.SocketStream, conn: h11.Connection) -> Seen | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return None
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return Seen(
                    method=request.method.decode(),
                    target=request.target.decode(),
                    headers={k.decode(): v.decode() for k, v in request.headers},
                    body=bytes(body),
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _answer(self, stream: trio.SocketStream, conn: h11.Connection, seen: Seen) -> bool:
        reply = self._next_reply()
        finished = False
        async with trio.open_nursery() as nursery:

            async def watch_close() -> None:
                # The client sends nothing more on this connection until we answer, so any read
                # result here is its close (b"" or a reset).
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if data:  # the next keep-alive request raced the end of this answer: keep it
                    conn.receive_data(data)
                    return
                if data == b"":
                    seen.closed_at = trio.current_time()
                    seen.closed.set()
                    nursery.cancel_scope.cancel()

            async def write() -> None:
                nonlocal finished
                try:
                    if reply.delay_head:
                        await trio.sleep(reply.delay_head)
                    headers = [*reply.headers, ("transfer-encoding", "chunked")]
                    await stream.send_all(
                        conn.send(h11.Response(status_code=reply.status, headers=headers))
                    )
                    for piece in reply.body:
                        if piece is None:
                            await trio.sleep_forever()
                        elif isinstance(piece, float):
                            await trio.sleep(piece)
                        elif piece:
                            await stream.send_all(conn.send(h11.Data(data=piece)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    finished = True
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    seen.closed_at = seen.closed_at or trio.current_time()
                    seen.closed.set()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_close)
            nursery.start_soon(write)
        return finished

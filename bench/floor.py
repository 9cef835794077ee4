"""The floor: a minimal trio + h11 HTTP/1.1 relay, what any Python proxy on this stack must pay.

Stage: benchmark harness only (not part of trioproxy). Run as its own process:
`python bench/floor.py --port PORT --upstream-port UPSTREAM`; it serves 127.0.0.1:PORT until killed.

Per client connection: one task, one h11 server connection, and one kept-alive h11 client
connection to 127.0.0.1:UPSTREAM (opened at the first request, opened again only if the upstream
closed it). Per request: read the head and the whole body, forward them upstream (hop-by-hop
headers dropped, Content-Length set), relay the answer's head, then the body piece by piece: what
one upstream read brings goes to the client as one body piece (one HTTP chunk when the upstream
answer is chunked, h11 frames it) as soon as it arrives. While the answer is relayed a second task
reads the client, so a client that leaves mid-answer cancels the relay and closes the upstream
connection at once (a proxy must notice that; the fake's hold and slow streams rely on it).
No JSON, no translation, no auth, no logging, no metrics: it speaks the fake's own dialect, so
the load generator sends it Anthropic requests as on the direct path.
"""

from __future__ import annotations

import argparse
from functools import partial

import h11
import trio

READ = 65536
# RFC 9110 §7.6.1: connection-specific fields are not forwarded; framing is h11's job.
HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade"}


async def next_event(conn: h11.Connection, stream: trio.SocketStream) -> object:
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await stream.receive_some(READ))
    return event


async def watch(client: trio.SocketStream, down: h11.Connection, gone: trio.CancelScope) -> None:
    """Read the client while its answer is relayed: EOF cancels the relay; bytes (a pipelined
    next request) are kept for h11 and end the watch."""
    try:
        data = await client.receive_some(READ)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        data = b""
    if not data:
        gone.cancel()
    down.receive_data(data)


class Upstream:
    """One kept-alive h11 client connection to the fake, per client connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stream: trio.SocketStream | None = None
        self.conn = h11.Connection(h11.CLIENT)

    async def ready(self) -> trio.SocketStream:
        if self.stream is not None and self.conn.states == {
            h11.CLIENT: h11.DONE,
            h11.SERVER: h11.DONE,
        }:
            self.conn.start_next_cycle()
        elif self.stream is None or self.conn.our_state is not h11.IDLE:
            await self.close()  # never opened, closed by the fake, or left mid-answer
            self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            self.conn = h11.Connection(h11.CLIENT)
        return self.stream

    async def close(self) -> None:
        if self.stream is not None:
            await trio.aclose_forcefully(self.stream)
            self.stream = None


async def read_request(
    client: trio.SocketStream, down: h11.Connection
) -> tuple[h11.Request, bytes]:
    request = await next_event(down, client)
    if not isinstance(request, h11.Request):
        raise EOFError  # the client closed between requests
    body = bytearray()
    while isinstance(event := await next_event(down, client), h11.Data):
        body += event.data
    return request, bytes(body)


async def relay(
    up: Upstream, request: h11.Request, body: bytes, client: trio.SocketStream, down: h11.Connection
) -> None:
    """Forward one request upstream and relay its answer, one body piece per upstream read."""
    stream = await up.ready()
    conn = up.conn
    headers = [(n, v) for n, v in request.headers if n not in HOP and n != b"content-length"]
    headers.append((b"content-length", b"%d" % len(body)))
    head = h11.Request(method=request.method, target=request.target, headers=headers)
    await stream.send_all(
        conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    )
    response = await next_event(conn, stream)
    if not isinstance(response, h11.Response):
        raise EOFError  # the upstream closed before answering
    headers = [(n, v) for n, v in response.headers if n not in HOP]
    await client.send_all(
        down.send(
            h11.Response(status_code=response.status_code, headers=headers, reason=response.reason)
        )
    )
    while True:
        pieces = []
        while isinstance(event := conn.next_event(), h11.Data):
            pieces.append(event.data)
        out = down.send(h11.Data(data=b"".join(pieces))) if pieces else b""
        if isinstance(event, h11.EndOfMessage):
            await client.send_all(out + down.send(h11.EndOfMessage()))
            return
        if out:
            await client.send_all(out)
        conn.receive_data(await stream.receive_some(READ))  # b"" (EOF): h11 raises next


async def serve(upstream_port: int, client: trio.SocketStream) -> None:
    down = h11.Connection(h11.SERVER)
    up = Upstream(upstream_port)
    try:
        while True:
            request, body = await read_request(client, down)
            with trio.CancelScope() as gone:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch, client, down, gone)
                    await relay(up, request, body, client, down)
                    nursery.cancel_scope.cancel()
            if gone.cancelled_caught or down.our_state is not h11.DONE:
                return  # the client left, or asked to close (HTTP/1.0, Connection: close)
            down.start_next_cycle()
    except (EOFError, h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await up.close()
        await trio.aclose_forcefully(client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    trio.run(
        partial(trio.serve_tcp, partial(serve, args.upstream_port), args.port, host="127.0.0.1")
    )


if __name__ == "__main__":
    main()

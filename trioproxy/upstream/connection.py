"""One HTTP/1.1 client connection: a `trio.abc.Stream` driven by an `h11.Connection`.

Stage: the IO edge, under `client.HTTPClient` (which owns pooling, retries and error
translation; nothing here translates exceptions).

Theory of operation: the h11 loop of STYLE.md §3. `next_event()`; on `NEED_DATA`,
`receive_some()` under a deadline, then `receive_data()` (`b""` is EOF for both). Every wait
runs inside its own `trio.move_on_at`, closed before control returns to the caller, and
reports a miss as `TimedOut(limit)` naming the timeout.

Invariants:
- `reusable` is true only when both h11 sides are DONE: the request was fully sent and the
  response fully read. Anything else (a half-read body, an error, a cancellation, a server that
  said `connection: close`) means the connection must be closed, never pooled.
- `aclose()` is prompt even inside a cancelled scope (`trio.aclose_forcefully`): the peer sees
  EOF at once.
- `received_any` tells whether the current request got any byte back; a request that failed
  before any did is the one case `HTTPClient` may retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h11
import trio

from trioproxy.upstream.boundary import TimedOut

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioproxy.upstream.boundary import Limit

__all__ = ["HTTPConnection"]

RECEIVE_BYTES = 65536  # one receive_some; the size httpcore and hypercorn read with
# The longest response head we accept (status line + headers). h11's default is 16 KiB;
# the LLM APIs send a few KiB of headers at most, but some gateways add many: 64 KiB.
MAX_HEAD_BYTES = 64 * 1024


class HTTPConnection:
    """A client connection carrying one request at a time."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.received_any = False  # any byte of a response to the current request
        # An event (or h11's error) taken from h11 while draining buffered body data, not yet
        # handed out: `_next_event` returns (or raises) it before asking h11 again.
        self._pending: object | BaseException | None = None
        self.idle_since = 0.0  # trio.current_time() when last returned to the pool
        self.closed = False

    @property
    def reusable(self) -> bool:
        return (
            not self.closed
            and self._h11.our_state is h11.DONE
            and self._h11.their_state is h11.DONE
        )

    async def send_request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        limit: Limit,
    ) -> None:
        """Write the whole request (head and body) in one `send_all`."""
        self.received_any = False
        data = bytearray()
        for event in (
            h11.Request(method=method, target=target, headers=list(headers)),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            if isinstance(event, h11.Data) and not body:
                continue
            data += self._h11.send(event) or b""
        with trio.move_on_at(limit.at) as scope:
            await self._stream.send_all(data)
        if scope.cancelled_caught:
            raise TimedOut(limit)

    async def receive_head(self, limit: Limit) -> h11.Response:
        """The final response head (1xx heads are skipped), within one deadline."""
        while True:
            event = await self._next_event(lambda: limit)
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise h11.RemoteProtocolError("connection closed before the response head")

    async def receive_piece(self, limit: Callable[[], Limit]) -> bytes | None:
        """The next non-empty piece of the body, or None at its end.

        `limit` is asked for a fresh deadline before each receive: the read timeout is about
        silence between pieces, not the whole body.
        """
        while True:
            event = await self._next_event(limit)
            if isinstance(event, h11.Data):
                if event.data:
                    return self._drain_buffered(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return None
            else:
                raise h11.RemoteProtocolError("connection closed in the middle of the body")

    def _drain_buffered(self, first: bytes) -> bytes:
        """`first` joined with every body piece h11 already holds, without waiting.

        h11 hands out one `Data` event per HTTP chunk, and upstreams send one chunk per SSE
        event; one piece per receive (not per chunk) lets everything after it (decode,
        translate, one client write) run once per read. The next non-data event is kept for
        `_next_event`; an error is raised there too, after the data before it is delivered.
        """
        pieces = [first]
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._pending = exc
                break
            if event is h11.NEED_DATA:
                break
            if not isinstance(event, h11.Data):
                self._pending = event
                break
            pieces.append(event.data)
        return bytes(first) if len(pieces) == 1 else b"".join(pieces)

    def finish_without_io(self) -> bool:
        """True if the body's end is already buffered (a caller that stopped reading right
        after the last piece still leaves a reusable connection); never waits."""
        if self._pending is not None:
            event = self._pending
            self._pending = None
            if not isinstance(event, h11.EndOfMessage):
                return False
        elif self._h11.their_state is h11.SEND_BODY:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError:
                return False
            if not isinstance(event, h11.EndOfMessage):
                return False  # body data the caller never read, or NEED_DATA
        return self.reusable

    def start_next_cycle(self) -> None:
        self._h11.start_next_cycle()

    async def aclose(self) -> None:
        """Close now: never blocks, and never raises Cancelled, so a loop closing several
        connections inside a cancelled scope closes every one of them."""
        self.closed = True
        # aclose_forcefully alone is prompt, but re-raises an outer cancellation once done;
        # the shield cannot make it wait (it cancels its own graceful close at once).
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)

    async def _next_event(self, limit: Callable[[], Limit]) -> object:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if isinstance(pending, BaseException):
                raise pending
            return pending
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            deadline = limit()
            with trio.move_on_at(deadline.at) as scope:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            if scope.cancelled_caught:
                raise TimedOut(deadline)
            if data:
                self.received_any = True
            elif not self.received_any and self._h11.their_state is h11.SEND_RESPONSE:
                # h11 would say "can't handle event type ConnectionClosed": say it plainly.
                raise h11.RemoteProtocolError("connection closed before the response head")
            self._h11.receive_data(bytes(data))

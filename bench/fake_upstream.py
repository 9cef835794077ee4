"""A fast fake Anthropic Messages upstream for benchmarks: raw trio sockets, hand-written HTTP/1.1.

Stage: benchmark harness only (not part of trioproxy). Run as its own process:
`python bench/fake_upstream.py --port PORT`; it serves 127.0.0.1:PORT until killed.

What it answers (keep-alive, HTTP/1.1, no h11 so that the fake costs as little CPU as possible):
- `POST /v1/messages`: the request body's `model` selects the behaviour, so the same knobs work
  whether the request came straight from the load generator or was translated by trioproxy
  (which forwards the client's model name for `[model:bench-*]`):
  - `bench-s{N}-d{MS}`: with `"stream": true`, an SSE stream of N `content_block_delta` events
    (one HTTP chunk each, MS milliseconds apart; 0 = unpaced) framed by message_start /
    content_block_start ... content_block_stop / message_delta / message_stop. Without
    `stream`, one non-streaming Messages JSON body (Content-Length).
  - `bench-hold-{ID}`: a stream that sends its first delta and then holds; it records the
    `time.monotonic()` at which the client closed the connection (EOF or reset) under ID.
  - `bench-slow-{MS}`: a slow stream held open until the client leaves: the start events and a
    first delta at once, then one delta every MS milliseconds (for at most 10 minutes, then the
    normal end and the connection closes). A client's EOF is noticed at once (a second task
    reads), not at the next delta. Used to measure memory per open stream.
- `GET /_close/{ID}`: waits up to 5 s for that close and answers `{"closed_at": t}` (or 404).
  `time.monotonic()` is CLOCK_MONOTONIC, shared by all processes on the machine, so the load
  generator can subtract its own timestamps.
- `GET /_health`: 200, for readiness polling.
- `GET /_stats`: `{"accepted": connections accepted since start, "open": connections open now}`
  (this one included), so the load generator can check how many connections a path really used.

Invariants: requests must carry Content-Length (both h11 clients used here do); anything else
malformed closes the connection. Nothing here reads the environment or the clock except
`time.monotonic()` for the close records.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import trio

_MODEL = re.compile(rb'"model"\s*:\s*"([^"]*)"')
_STREAM = re.compile(rb'"stream"\s*:\s*true')
_KNOBS = re.compile(r"bench-s(\d+)-d(\d+)")
_HOLD = re.compile(r"bench-hold-(\w+)")
_SLOW = re.compile(r"bench-slow-(\d+)")
_SLOW_MAX_S = 600
_MAX_HEAD = 64 * 1024


def _event(name: str, payload: dict[str, object]) -> bytes:
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {name}\ndata: {data}\n\n".encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _stream_start(model: str) -> bytes:
    start = _event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_bench",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 12, "output_tokens": 1},
            },
        },
    )
    block = _event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    return _chunk(start + block)


_DELTA = _chunk(
    _event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " word"},
        },
    )
)


def _stream_end(chunks: int) -> bytes:
    end = (
        _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": chunks},
            },
        )
        + _event("message_stop", {"type": "message_stop"})
    )
    return _chunk(end) + b"0\r\n\r\n"


def _json_response(status: int, payload: object) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    reason = b"OK" if status == 200 else b"Not Found"
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        reason,
        len(body),
        body,
    )


def _message(model: str) -> bytes:
    return _json_response(
        200,
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "Hello from the fake upstream. " * 4}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 24},
        },
    )


class FakeUpstream:
    def __init__(self) -> None:
        self.closes: dict[str, float] = {}
        self._close_events: dict[str, trio.Event] = {}
        self.accepted = 0
        self.open = 0

    def _event_for(self, hold_id: str) -> trio.Event:
        event = self._close_events.get(hold_id)
        if event is None:
            event = self._close_events[hold_id] = trio.Event()
        return event

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        self.open += 1
        buf = bytearray()
        try:
            while True:
                end = buf.find(b"\r\n\r\n")
                while end < 0:
                    if len(buf) > _MAX_HEAD:
                        return
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                    end = buf.find(b"\r\n\r\n")
                head = bytes(buf[:end]).decode("latin-1")
                del buf[: end + 4]
                lines = head.split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = 0
                close = False
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    if name == "content-length":
                        length = int(value)
                    elif name == "connection" and "close" in value.lower():
                        close = True
                while len(buf) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                body = bytes(buf[:length])
                del buf[:length]
                keep = await self._dispatch(stream, method, target, body)
                if close or not keep:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
            return
        finally:
            self.open -= 1
            await trio.aclose_forcefully(stream)

    async def _dispatch(
        self, stream: trio.SocketStream, method: str, target: str, body: bytes
    ) -> bool:
        if method == "POST" and target.startswith("/v1/messages"):
            found = _MODEL.search(body)
            model = found.group(1).decode() if found else "bench"
            hold = _HOLD.fullmatch(model)
            if hold is not None:
                await self._hold(stream, model, hold.group(1))
                return False
            slow = _SLOW.fullmatch(model)
            if slow is not None:
                await self._slow(stream, model, int(slow.group(1)))
                return False
            knobs = _KNOBS.fullmatch(model)
            chunks, delay_ms = (int(knobs.group(1)), int(knobs.group(2))) if knobs else (20, 0)
            if _STREAM.search(body) is None:
                await stream.send_all(_message(model))
                return True
            await stream.send_all(_STREAM_HEAD + _stream_start(model))
            delay = delay_ms / 1000
            for _ in range(chunks):
                if delay:
                    await trio.sleep(delay)
                await stream.send_all(_DELTA)
            await stream.send_all(_stream_end(chunks))
            return True
        if method == "GET" and target.startswith("/_close/"):
            hold_id = target.removeprefix("/_close/")
            with trio.move_on_after(5):
                await self._event_for(hold_id).wait()
            if hold_id in self.closes:
                await stream.send_all(_json_response(200, {"closed_at": self.closes[hold_id]}))
            else:
                await stream.send_all(_json_response(404, {"error": "no close seen"}))
            return True
        if method == "GET" and target == "/_stats":
            stats = {"accepted": self.accepted, "open": self.open}
            await stream.send_all(_json_response(200, stats))
            return True
        if method == "GET" and target == "/_health":
            await stream.send_all(_json_response(200, {"ok": True}))
            return True
        await stream.send_all(_json_response(404, {"error": f"no route {method} {target}"}))
        return True

    async def _slow(self, stream: trio.SocketStream, model: str, interval_ms: int) -> None:
        async def send(cancel: trio.CancelScope) -> None:
            interval = max(interval_ms, 1) / 1000
            deltas = 1 + int(_SLOW_MAX_S / interval)
            try:
                await stream.send_all(_STREAM_HEAD + _stream_start(model) + _DELTA)
                for _ in range(deltas - 1):
                    await trio.sleep(interval)
                    await stream.send_all(_DELTA)
                await stream.send_all(_stream_end(deltas))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client left
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, nursery.cancel_scope)
            try:
                while await stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()  # the client left: stop sending

    async def _hold(self, stream: trio.SocketStream, model: str, hold_id: str) -> None:
        await stream.send_all(_STREAM_HEAD + _stream_start(model) + _DELTA)
        try:
            while await stream.receive_some(65536):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self.closes[hold_id] = time.monotonic()
        self._event_for(hold_id).set()


async def main(port: int) -> None:
    fake = FakeUpstream()
    await trio.serve_tcp(fake.handle, port, host="127.0.0.1")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    trio.run(main, parser.parse_args().port)

"""Black-box helpers for the lifecycle and hostile-client tests (issue 16).

Everything here talks to trioproxy through its public entry points only: the daemon as a
subprocess (`python -m trioproxy --config FILE`, real signals, its /proc descriptor table, its
/metrics), or `trioproxy.serve` in-process, and raw sockets / h11 as the client. Nothing imports
the server layer's internals, so these tests survive a rewrite of that layer.

Every wait is bounded: helpers that read return what they got and whether the peer closed, so a
test can assert with a message instead of hanging.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h11
import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).parent.parent
PROTOCOL = Path(__file__).parent / "data" / "protocol"

STREAM_TEXT = (PROTOCOL / "anthropic" / "stream_text.sse").read_bytes()
# An Anthropic stream up to its first text delta: trioproxy commits (sends the role chunk) and the
# fake upstream then holds the stream open, so the request stays in flight.
ANTHROPIC_HEAD = STREAM_TEXT[: STREAM_TEXT.index(b"event: content_block_delta")]

# RFC 6455 §1.3: the handshake example's key (any 16 random bytes, base64).
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="

# SO_RCVBUF for clients that never read: the kernel doubles and floors it (socket(7)), so the
# window is a few KiB and the server's writes back up after a few chunks.
TINY_RCVBUF = 4096


def anthropic_flood(events: int = 20_000, text_bytes: int = 200) -> bytes:
    """`events` text deltas of `text_bytes` each: megabytes of SSE, more than sockets buffer."""
    delta = json.dumps(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "x" * text_bytes},
        }
    ).encode()
    return (b"event: content_block_delta\ndata: " + delta + b"\n\n") * events


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chat_body(content: str = "hi", *, model: str = "demo", stream: bool = True) -> bytes:
    return json.dumps(
        {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}
    ).encode()


def chat_request(
    body: bytes,
    *,
    version: str = "1.1",
    key: str | None = None,
    extra: str = "",
) -> bytes:
    """A POST /v1/chat/completions written by hand (`extra`: more header lines, CRLF-ended)."""
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST /v1/chat/completions HTTP/{version}\r\nHost: x\r\n"
        f"Content-Type: application/json\r\n{auth}Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def upgrade_request(*, key: str | None = None, extra: str = "") -> bytes:
    """A WebSocket upgrade on /v1/ws with subprotocol trioproxy.v1 (RFC 6455 §4.1)."""
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        "GET /v1/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
        f"Sec-WebSocket-Protocol: trioproxy.v1\r\n{auth}{extra}\r\n"
    ).encode()


async def poll_until(predicate: Callable[[], bool], seconds: float) -> bool:
    """Poll `predicate` every 20 ms for up to `seconds`; whether it became true.

    For state with no event to wait on: another process (its exit, its /proc table) or a
    condition read across several objects.
    """
    with trio.move_on_after(seconds):
        while not predicate():  # noqa: ASYNC110 (nothing to wait on; see the docstring)
            await trio.sleep(0.02)
    return predicate()


# --- raw client sockets (trio) -------------------------------------------------------------------


async def connect(port: int, *, rcvbuf: int | None = None) -> trio.SocketStream:
    """A TCP connection to 127.0.0.1:port; `rcvbuf` is set before connect, so the advertised
    window is small from the handshake on."""
    sock = trio.socket.socket()
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def abort(stream: trio.SocketStream) -> None:
    """Close with a RST instead of a FIN (SO_LINGER 0): a client that vanished."""
    stream.socket.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )


@dataclass
class Received:
    data: bytes = b""
    closed: bool = False  # the server closed (EOF or reset) before the deadline
    reset: bool = False


async def read_until_eof(
    stream: trio.SocketStream, seconds: float, *, into: Received | None = None
) -> Received:
    """Read until the server closes or `seconds` pass; never raises on either."""
    got = into if into is not None else Received()
    with trio.move_on_after(seconds):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                got.closed = got.reset = True
                return got
            if not chunk:
                got.closed = True
                return got
            got.data += chunk
    return got


async def read_until(
    stream: trio.SocketStream, needle: bytes, seconds: float, *, into: Received | None = None
) -> Received:
    """Read until `needle` appears, the server closes, or `seconds` pass."""
    got = into if into is not None else Received()
    with trio.move_on_after(seconds):
        while needle not in got.data:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                got.closed = got.reset = True
                break
            if not chunk:
                got.closed = True
                break
            got.data += chunk
    return got


async def exchange(port: int, data: bytes, seconds: float = 5.0) -> Received:
    """Send `data` on a new connection and read until the server closes (or `seconds` pass)."""
    stream = await connect(port)
    async with stream:
        try:
            await stream.send_all(data)
        except trio.BrokenResourceError:
            return Received(closed=True, reset=True)
        return await read_until_eof(stream, seconds)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    http_version: str
    complete: bool  # the body's end was framed (or, with no framing, the server closed)


def parse_responses(data: bytes, *, eof: bool, head: bool = False) -> list[Response]:
    """Every HTTP/1.1 response in `data`, in order (h11 as a client; 1xx responses skipped).

    `eof`: the server closed after `data`, which ends a close-delimited body.
    """
    out: list[Response] = []
    rest = data
    while rest:
        conn = h11.Connection(h11.CLIENT)
        conn.send(
            h11.Request(method="HEAD" if head else "GET", target="/", headers=[("host", "x")])
        )
        conn.send(h11.EndOfMessage())
        conn.receive_data(rest)
        if eof:
            conn.receive_data(b"")
        response: h11.Response | None = None
        body = bytearray()
        complete = False
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return out
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                complete = True
                break
            elif isinstance(event, h11.ConnectionClosed):
                break
        if response is None:
            return out
        out.append(
            Response(
                status=response.status_code,
                headers={k.decode(): v.decode() for k, v in response.headers},
                body=bytes(body),
                http_version=response.http_version.decode(),
                complete=complete,
            )
        )
        if not complete:
            return out
        rest, _ = conn.trailing_data
    return out


async def read_responses(
    stream: trio.SocketStream, count: int, seconds: float, got: Received
) -> list[Response]:
    """Read until `count` complete responses are in `got` (or the server closes, or `seconds`
    pass); return the complete ones."""

    def complete() -> list[Response]:
        return [r for r in parse_responses(got.data, eof=got.closed) if r.complete]

    with trio.move_on_after(seconds):
        while len(complete()) < count and not got.closed:
            await read_until_eof(stream, 0.05, into=got)
    return complete()


def sse_events(body: bytes) -> list[Any]:
    """The `data:` payloads of an SSE body (JSON-parsed, `[DONE]` kept as str); a torn last event
    is dropped."""
    out: list[Any] = []
    for block in body.split(b"\n\n")[:-1]:
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                payload = line[len(b"data: ") :]
                out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


def error_codes(events: list[Any]) -> list[str | None]:
    return [e["error"].get("code") for e in events if isinstance(e, dict) and "error" in e]


async def http_get(port: int, path: str, seconds: float = 5.0) -> Response:
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    got = await exchange(port, request, seconds)
    responses = parse_responses(got.data, eof=got.closed)
    assert responses, f"no response to GET {path}: {got}"
    return responses[0]


def gauge(metrics_text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", metrics_text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


# --- WebSocket frames by hand (RFC 6455 §5.2) ---------------------------------------------------


def ws_frame(opcode: int, payload: bytes, *, mask: bytes | None = b"\x11\x22\x33\x44") -> bytes:
    """One final frame; client frames must be masked (§5.3), `mask=None` breaks that rule."""
    length = len(payload)
    if length < 126:
        size = bytes([length])
    elif length < 1 << 16:
        size = bytes([126]) + length.to_bytes(2, "big")
    else:
        size = bytes([127]) + length.to_bytes(8, "big")
    if mask is None:
        return bytes([0x80 | opcode]) + size + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, size[0] | 0x80]) + size[1:] + mask + masked


def ws_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The complete server frames in `data` as (opcode, payload); server frames are unmasked
    (RFC 6455 §5.1). A continuation's payload is appended to the frame it continues."""
    frames: list[tuple[int, bytes]] = []
    pos = 0
    while pos + 2 <= len(data):
        opcode = data[pos] & 0x0F
        length = data[pos + 1] & 0x7F
        start = pos + 2
        if length == 126:
            length, start = int.from_bytes(data[start : start + 2], "big"), start + 2
        elif length == 127:
            length, start = int.from_bytes(data[start : start + 8], "big"), start + 8
        if start + length > len(data):
            break  # torn frame
        payload = data[start : start + length]
        pos = start + length
        if opcode == 0x0 and frames:
            frames[-1] = (frames[-1][0], frames[-1][1] + payload)
        else:
            frames.append((opcode, payload))
    return frames


def ws_close_code(data: bytes) -> int | None:
    """The status code of the first close frame (opcode 8) the server sent in `data`, if any."""
    for opcode, payload in ws_frames(data):
        if opcode == 0x8:
            return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
    return None


def ws_messages(data: bytes) -> list[Any]:
    """The JSON text messages (opcode 1) the server sent in `data`."""
    return [json.loads(payload) for opcode, payload in ws_frames(data) if opcode == 0x1]


async def ws_handshake(port: int, *, key: str | None = None) -> tuple[trio.SocketStream, Received]:
    """Open a WebSocket on /v1/ws by hand; the Received holds what followed the 101 head."""
    stream = await connect(port)
    await stream.send_all(upgrade_request(key=key))
    got = await read_until(stream, b"\r\n\r\n", 5)
    head, sep, rest = got.data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 101"):
        await stream.aclose()
        raise AssertionError(f"WebSocket handshake refused: {got.data[:300]!r} closed={got.closed}")
    got.data = rest
    return stream, got


# --- the daemon as a subprocess -----------------------------------------------------------------


def daemon_ini(port: int, body: str, *, drain: float = 2, write_timeout: float = 30) -> str:
    """A config file: [proxy] on 127.0.0.1:port with the given drain and write timeouts, then
    `body` (more [proxy] keys first if it starts with them, then upstream and model sections)."""
    return (
        f"[proxy]\nlisten = 127.0.0.1:{port}\ndrain_timeout = {drain}\n"
        f"write_timeout = {write_timeout}\n{body}\n"
    )


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    stopped_at: float | None = None
    streams: list[trio.SocketStream] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    async def metrics(self) -> str:
        try:
            response = await http_get(self.port, "/metrics")
        except OSError:
            await self.assert_alive()
            raise
        assert response.status == 200, response
        return response.body.decode()

    async def assert_alive(self) -> None:
        """Fail with the daemon's log if it has exited (or does within half a second)."""
        await poll_until(lambda: self.proc.poll() is not None, 0.5)
        code = self.proc.poll()
        assert code is None, f"the daemon died (exit {code}):\n{self.stderr()[-3000:]}"

    async def in_flight(self) -> float:
        return gauge(await self.metrics(), "trioproxy_in_flight")

    def sigterm(self) -> float:
        self.proc.send_signal(signal.SIGTERM)
        self.stopped_at = time.monotonic()
        return self.stopped_at

    async def wait_exit(self, seconds: float) -> tuple[int | None, float]:
        """(exit code or None if still running after `seconds`, seconds since sigterm())."""
        await poll_until(lambda: self.proc.poll() is not None, seconds)
        assert self.stopped_at is not None
        return self.proc.poll(), time.monotonic() - self.stopped_at

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def spawn_daemon(tmp_path: Path, ini: str, port: int) -> Daemon:
    path = tmp_path / "proxy.ini"
    path.write_text(ini)
    log = tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trioproxy", "--config", str(path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return Daemon(proc=proc, port=port, log=log)


def wait_healthy_sync(daemon: Daemon, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", daemon.port), timeout=1) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    daemon.kill()
    raise AssertionError(f"daemon did not start:\n{daemon.stderr()}")


async def wait_healthy(daemon: Daemon, seconds: float = 20.0) -> None:
    with trio.move_on_after(seconds):
        while daemon.proc.poll() is None:
            try:
                if (await http_get(daemon.port, "/health", seconds=1)).status == 200:
                    return
            except OSError:
                pass
            await trio.sleep(0.05)
    daemon.kill()
    raise AssertionError(f"daemon did not start:\n{daemon.stderr()}")


def started_daemon(tmp_path: Path, ini_body: str, **kw: Any) -> Iterator[Daemon]:
    """For a sync fixture: a daemon, healthy, killed at the end whatever happened."""
    port = free_port()
    daemon = spawn_daemon(tmp_path, daemon_ini(port, ini_body, **kw), port)
    try:
        wait_healthy_sync(daemon)
        yield daemon
    finally:
        daemon.kill()

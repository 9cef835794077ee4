"""A trioproxy WebSocket client: stream one request, then start a second and cancel it.

Usage:
    python examples/ws_client.py [URL] [KEY]

URL defaults to ws://127.0.0.1:8003/v1/ws (the shipped proxy.ini, serving the `demo` model).
KEY, if given, is sent as `Authorization: Bearer KEY` on the upgrade request.

Needs trio and trio-websocket (`pip install trio trio-websocket`). Protocol: docs/websocket.md.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

DEFAULT_URL = "ws://127.0.0.1:8003/v1/ws"


def create(request_id: str, content: str) -> str:
    return json.dumps(
        {
            "type": "chat.completions.create",
            "id": request_id,
            "body": {"model": "demo", "messages": [{"role": "user", "content": content}]},
        }
    )


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await ws.get_message())
    return message


async def stream_one(ws: WebSocketConnection) -> str:
    """Stream request `r1` to its end and return the text it produced."""
    await ws.send_message(create("r1", "hello over a WebSocket"))
    parts: list[str] = []
    while True:
        message = await receive(ws)
        if message["type"] == "chunk":
            for choice in message["chunk"]["choices"]:
                parts.append(choice["delta"].get("content") or "")
        elif message["type"] == "done":
            return "".join(parts)
        else:
            raise RuntimeError(f"request r1 ended with {message}")


async def cancel_one(ws: WebSocketConnection) -> str:
    """Start request `r2`, cancel it after its first chunk, and return how it ended."""
    await ws.send_message(create("r2", "this one gets cancelled"))
    chunks = 0
    while True:
        message = await receive(ws)
        if message["type"] == "chunk":
            chunks += 1
            if chunks == 1:
                await ws.send_message(json.dumps({"type": "cancel", "id": "r2"}))
        else:
            # "cancelled", or "done" if the whole answer was sent before the cancel arrived.
            return f"{message['type']} ({chunks} chunk(s) arrived first)"


async def main(url: str, key: str | None) -> None:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else None
    async with open_websocket_url(url, subprotocols=["trioproxy.v1"], extra_headers=headers) as ws:
        text = await stream_one(ws)
        print(f"r1: {text}")
        print(f"r2: {await cancel_one(ws)}")


if __name__ == "__main__":
    trio.run(
        main,
        sys.argv[1] if len(sys.argv) > 1 else DEFAULT_URL,
        sys.argv[2] if len(sys.argv) > 2 else None,
    )

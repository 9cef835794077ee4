"""Run trioproxy inside a Trio program: an in-process stream and an HTTP request side by side.

Usage:
    python examples/embedded.py

Uses a config mapping (no proxy.ini, no keys): the built-in `demo` model on a free loopback port.
See docs/embedding.md.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import trio

import trioproxy

CONFIG: dict[str, dict[str, object]] = {
    "proxy": {"listen": "127.0.0.1:0"},  # port 0: any free port; see proxy.url
    "upstream:demo": {"type": "demo", "demo_delay": 0.001},
    "model:demo": {"upstream": "demo"},
}


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """A plain blocking HTTP request (run in a thread, so the proxy keeps serving)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.load(response)
        return result


async def main() -> None:
    config = trioproxy.load_config(CONFIG)
    async with trioproxy.open_proxy(config) as proxy:
        print(f"serving on {proxy.url}")

        parts: list[str] = []
        messages = [{"role": "user", "content": "hello in-process"}]
        async for chunk in proxy.chat({"model": "demo", "messages": messages}):
            for choice in chunk["choices"]:
                parts.append(choice["delta"].get("content") or "")
        print(f"chat(): {''.join(parts)}")

        body = {"model": "demo", "messages": [{"role": "user", "content": "hello over HTTP"}]}
        answer = await trio.to_thread.run_sync(post_json, proxy.url + "/v1/chat/completions", body)
        print(f"HTTP: {answer['choices'][0]['message']['content']}")

        try:
            await proxy.complete({"model": "no-such-model", "messages": messages})
        except trioproxy.ProxyError as exc:
            print(f"error: {type(exc).__name__} {exc.status} {exc.code}")

        stats = proxy.statistics()  # counts land as each request's bookkeeping ends
        print(f"requests finished: {stats.requests}")


if __name__ == "__main__":
    trio.run(main)

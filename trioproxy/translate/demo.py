"""The built-in `demo` upstream: a deterministic reply built from the request. Pure; no network.

Stage: stands where an upstream and its stream translator would; the edge (`proxy`) paces the
chunks with the upstream's `demo_delay`. It exists so that a new user can try every feature
(streaming, usage, tool calls, reasoning, cancellation, WebSocket) in the first minute, and so that
tests and benchmarks get a fast, steady upstream.

The reply: when `reasoning_effort` asks for reasoning, a short `reasoning_content` first; when
`tool_choice` forces a tool (`required`, or a named function), one call of that tool whose arguments
carry the last user message; otherwise the text "You said: <last user message>" followed by a fixed
passage. Each word is one delta. `max_tokens` / `max_completion_tokens` cut the words (finish
`length`), `stop` sequences cut the text before the first match (finish `stop`; the stop string
is not sent, as OpenAI does). Tokens are counted as whitespace-separated words.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from trioproxy.translate.base import Chunk, StreamMeta, chunk, usage_chunk

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["PASSAGE", "DemoReply"]

PASSAGE = (
    "This answer comes from the trioproxy demo upstream, which needs no network and no key. "
    "It streams one word at a time, so you can watch chunks arrive, cancel a request halfway, "
    "or try the WebSocket face before you configure a real provider."
)

_WORD = re.compile(r"\S+\s*")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _count_words(text: str) -> int:
    return len(text.split())


class DemoReply:
    """The demo's answer to one validated request, as chat-completion chunks."""

    def __init__(self, body: dict[str, Any], meta: StreamMeta) -> None:
        self._meta = meta
        messages = body["messages"]
        last_user = next(
            (_text_of(m.get("content")) for m in reversed(messages) if m["role"] == "user"), ""
        )
        self.prompt_tokens = sum(_count_words(_text_of(m.get("content"))) for m in messages)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]

        effort = body.get("reasoning_effort")
        self._reasoning = (
            ["Thinking ", "about ", "it ", "briefly."] if effort not in (None, "none") else []
        )
        self._tool = self._forced_tool(body)
        self._tool_arguments = json.dumps({"input": last_user})

        text = f"You said: {last_user.strip()}\n\n{PASSAGE}" if last_user.strip() else PASSAGE
        self.finish_reason = "tool_calls" if self._tool else "stop"
        cut = min((i for s in stops if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        words = [] if self._tool else _WORD.findall(text)
        budget = None if limit is None else max(0, limit - len(self._reasoning))
        if budget is not None and len(words) > budget:
            words = words[:budget]
            self.finish_reason = "length"
        self._words = words
        self.completion_tokens = len(self._reasoning) + len(words) + (1 if self._tool else 0)

    @staticmethod
    def _forced_tool(body: dict[str, Any]) -> str | None:
        tools = body.get("tools") or []
        choice = body.get("tool_choice")
        if not tools:
            return None
        if isinstance(choice, dict):
            name = choice.get("function", {}).get("name")
            return name if isinstance(name, str) else None
        if choice == "required":
            return str(tools[0]["function"]["name"])
        return None

    @property
    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def chunks(self) -> Iterator[list[Chunk]]:
        """One list of chunks per upstream "event"; the edge sleeps between them."""
        meta = self._meta
        yield [chunk(meta, {"role": "assistant", "content": ""})]
        for piece in self._reasoning:
            yield [chunk(meta, {"reasoning_content": piece})]
        if self._tool:
            call = {
                "index": 0,
                "id": f"call_demo_{meta.completion_id[-12:]}",
                "type": "function",
                "function": {"name": self._tool, "arguments": ""},
            }
            yield [chunk(meta, {"tool_calls": [call]})]
            yield [
                chunk(
                    meta,
                    {"tool_calls": [{"index": 0, "function": {"arguments": self._tool_arguments}}]},
                )
            ]
        for word in self._words:
            yield [chunk(meta, {"content": word})]
        final = [chunk(meta, {}, finish_reason=self.finish_reason)]
        if meta.include_usage:
            final.append(usage_chunk(meta, self.usage))
        yield final

"""Accumulate a chunk stream into one `chat.completion` object. Pure.

Stage: used where a non-streaming answer is built from a stream (the demo upstream, and
`Proxy.complete()` in-process). Follows the same merge rules as openai-python's stream helper
(`lib/streaming/chat/_completions.py`): content and reasoning strings concatenate, tool calls merge
by `index`, the last non-null `usage` wins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trioproxy.translate.base import Chunk

__all__ = ["CompletionAccumulator"]


class CompletionAccumulator:
    def __init__(self) -> None:
        self._id = ""
        self._created = 0
        self._model = ""
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self._extra: dict[str, Any] = {}
        self._finish_reason: str | None = None
        self._usage: dict[str, Any] | None = None

    def feed(self, item: Chunk) -> None:
        self._id = self._id or str(item.get("id", ""))
        self._created = self._created or int(item.get("created", 0))
        self._model = self._model or str(item.get("model", ""))
        if item.get("usage"):
            self._usage = item["usage"]
        for choice in item.get("choices") or []:
            delta = choice.get("delta") or {}
            for key, value in delta.items():
                if key == "content" and value:
                    self._content.append(value)
                elif key == "reasoning_content" and value:
                    self._reasoning.append(value)
                elif key == "tool_calls":
                    for call in value:
                        self._merge_tool_call(call)
                elif key not in ("role", "content", "reasoning_content") and value is not None:
                    self._extra[key] = value
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]

    def _merge_tool_call(self, call: dict[str, Any]) -> None:
        slot = self._tool_calls.setdefault(
            call["index"], {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if call.get("id"):
            slot["id"] = call["id"]
        function = call.get("function") or {}
        if function.get("name"):
            slot["function"]["name"] = function["name"]
        slot["function"]["arguments"] += function.get("arguments") or ""

    def result(self) -> dict[str, Any]:
        tool_calls = [self._tool_calls[i] for i in sorted(self._tool_calls)]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self._content) if self._content or not tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if self._reasoning:
            message["reasoning_content"] = "".join(self._reasoning)
        if tool_calls:
            message["tool_calls"] = tool_calls
        message.update(self._extra)
        completion: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion",
            "created": self._created,
            "model": self._model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish_reason or "stop",
                }
            ],
        }
        if self._usage is not None:
            completion["usage"] = self._usage
        return completion

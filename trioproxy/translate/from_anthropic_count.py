"""`POST /v1/messages/count_tokens` for models not served by Anthropic: a documented estimate.

Stage: translate (pure), for the Anthropic face. A model served by an Anthropic upstream has its
count request relayed there (`Engine.relay_count_tokens`, to `COUNT_TOKENS_PATH`): that count is
exact. Any other upstream has no such endpoint (OpenAI's APIs have none), so the face answers with
`estimate_input_tokens(body)` and says so in a response header (docs/anthropic-clients.md,
"count_tokens").

The estimate (every number below is a rule of thumb with its source, not a tokenizer):
- text: one token per 4 characters, rounded up, over every string the model reads (system, text
  blocks, tool results, tool_use inputs as compact JSON, tool definitions as compact JSON);
  "1 token ~= 4 chars in English" (https://help.openai.com/en/articles/4936856);
- 3 tokens per message for the turn markers (the OpenAI cookbook's count for chat messages,
  https://cookbook.openai.com/examples/how_to_count_tokens_with_tiktoken);
- an image: 1,600 tokens, about the cost of an image at the ~1.15 megapixels Anthropic scales
  images to ("tokens = width * height / 750",
  https://docs.anthropic.com/en/docs/build-with-claude/vision);
- a base64 PDF: 2,250 tokens per page, the middle of Anthropic's "1,500 to 3,000 tokens per
  page" (https://docs.anthropic.com/en/docs/build-with-claude/pdf-support); pages are counted by
  their `/Type /Page` objects, at least one;
- tools present: 346 tokens for the tool-use system prompt Anthropic adds (its table for Claude 4
  models, https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/overview#pricing);
- thinking and redacted_thinking blocks of earlier turns: 0 (Anthropic strips them from the
  context, https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking).

Invariant: never raises, whatever the body holds (it is counted, not validated; the face checks
`model` and `messages` first). No IO, no clock.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re

__all__ = [
    "CHARS_PER_TOKEN",
    "COUNT_TOKENS_PATH",
    "IMAGE_TOKENS",
    "MESSAGE_TOKENS",
    "PDF_PAGE_TOKENS",
    "TOOLS_SYSTEM_TOKENS",
    "estimate_input_tokens",
]

# https://docs.anthropic.com/en/api/messages-count-tokens (base_url without /v1, as for messages)
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

CHARS_PER_TOKEN = 4
MESSAGE_TOKENS = 3
IMAGE_TOKENS = 1600
PDF_PAGE_TOKENS = 2250
TOOLS_SYSTEM_TOKENS = 346

# A page object of a PDF (ISO 32000-1 §7.7.3.3: `/Type /Page`), not the `/Pages` tree nodes.
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")
# Keys whose strings are ids, markers or enums, not text the model reads.
_NOT_TEXT = frozenset(
    {"type", "id", "tool_use_id", "cache_control", "signature", "media_type", "citations"}
)
_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def estimate_input_tokens(body: object) -> int:
    """The estimated `input_tokens` of a Messages request (see the module docstring).

    >>> estimate_input_tokens({"model": "m", "messages": [{"role": "user", "content": "Hello"}]})
    5
    """
    if not isinstance(body, dict):
        return 0
    counter = _Counter()
    counter.walk(body.get("system"))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            counter.tokens += MESSAGE_TOKENS
            counter.walk(message.get("content") if isinstance(message, dict) else None)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        counter.tokens += TOOLS_SYSTEM_TOKENS
        counter.chars += len(_compact(tools))
    return counter.tokens + math.ceil(counter.chars / CHARS_PER_TOKEN)


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


class _Counter:
    def __init__(self) -> None:
        self.chars = 0
        self.tokens = 0

    def walk(self, value: object) -> None:
        if isinstance(value, str):
            self.chars += len(value)
        elif isinstance(value, list):
            for item in value:
                self.walk(item)
        elif isinstance(value, dict):
            self._block(value)

    def _block(self, block: dict[object, object]) -> None:
        kind = block.get("type")
        if kind in _SKIPPED_BLOCKS:
            return
        # "image_url": the same image in a Chat Completions body (the pump estimates those too).
        if kind in ("image", "image_url"):
            self.tokens += IMAGE_TOKENS
            return
        if kind == "document":
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "base64":
                self.tokens += PDF_PAGE_TOKENS * _pdf_pages(source.get("data"))
                return
        if kind == "tool_use":
            self.chars += len(_compact(block.get("input")))
            self.walk(block.get("name"))
            return
        for key, item in block.items():
            if key not in _NOT_TEXT:
                self.walk(item)


def _pdf_pages(data: object) -> int:
    if not isinstance(data, str):
        return 1
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return 1
    return max(1, len(_PDF_PAGE.findall(raw)))

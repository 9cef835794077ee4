"""Same dialect in and up: the client's own request goes up, the upstream's own events come back.

Stage: translate (pure), for pass-through. When a client speaks the Anthropic Messages API and its
model routes to an Anthropic upstream (or Responses to Responses), nothing is translated: the
request body goes up unchanged except `model` (the routed upstream model) and the model's
configured defaults where the client left them out, and the answer comes back event for event
(thinking blocks and signatures, cache fields, citations, server tools, event types added later).
What is not byte-for-byte: SSE line endings and the `data:` spacing are normalised by the framing
(`event: NAME\\ndata: JSON\\n\\n`); the JSON inside each event is the upstream's, unchanged.

A `RelayWatch` looks at the events as they pass, without changing them: it notes the usage (for
logs and metrics) and the terminal event, so that a stream cut before its end is an error, never
a clean finish.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from trioproxy.errors import ClientError, UpstreamProtocolError
from trioproxy.translate.base import UpstreamRequest

if TYPE_CHECKING:
    from trioproxy.sse import SSEEvent
    from trioproxy.translate.base import JSONObject, Target

__all__ = ["RELAY_DIALECTS", "Passthrough", "RelayWatch", "relay_request", "relay_usage"]

# The upstream types a client dialect can be passed through to unchanged.
RELAY_DIALECTS = ("anthropic", "openai-responses")
# Client request headers a pass-through carries up (Anthropic's API version and beta features:
# https://docs.anthropic.com/en/api/versioning, .../api/beta-headers). Nothing else the client
# sends reaches the upstream, unless the upstream's `forward_headers` names it.
_RELAYED_HEADERS = {"anthropic": ("anthropic-version", "anthropic-beta")}
# Terminal events: Anthropic `message_stop` (or an `error` event, which is itself an answer the
# client understands), https://docs.anthropic.com/en/docs/build-with-claude/streaming; Responses
# `response.completed` / `.incomplete` / `.failed` / `error`,
# https://platform.openai.com/docs/api-reference/responses-streaming.
_TERMINAL = {
    "anthropic": frozenset({"message_stop", "error"}),
    "openai-responses": frozenset(
        {"response.completed", "response.incomplete", "response.failed", "error"}
    ),
}


@dataclass(frozen=True, slots=True)
class Passthrough:
    """A client request that may go up unchanged to an upstream of the same dialect.

    Args:
        dialect: the upstream type it passes through to (`anthropic` or `openai-responses`).
        body: the client's request body, as the face validated it.
        headers: the client's request headers (lower-case names); only the dialect's version and
            beta headers are carried up.
    """

    dialect: str
    body: JSONObject
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


def relay_request(
    passthrough: Passthrough,
    target: Target,
    *,
    path: str,
    base_headers: tuple[tuple[str, str], ...],
) -> UpstreamRequest:
    """The upstream request for a pass-through: the client's body with the routed model and the
    model's defaults (client values win), the client's version/beta headers over the upstream's.

    Example:
        >>> from trioproxy.translate.base import Target
        >>> p = Passthrough("anthropic", {"model": "c", "max_tokens": 5, "messages": []})
        >>> r = relay_request(p, Target("claude-x"), path="/v1/messages", base_headers=())
        >>> json.loads(r.body)["model"], r.stream
        ('claude-x', False)
    """
    body = dict(passthrough.body)
    body["model"] = target.upstream_model
    defaults = target.defaults
    if passthrough.dialect == "anthropic":
        if defaults.max_tokens is not None and "max_tokens" not in body:
            body["max_tokens"] = defaults.max_tokens
        if defaults.system_prompt and "system" not in body:
            body["system"] = defaults.system_prompt
    else:
        if defaults.max_tokens is not None and "max_output_tokens" not in body:
            body["max_output_tokens"] = defaults.max_tokens
        if defaults.system_prompt and "instructions" not in body:
            body["instructions"] = defaults.system_prompt
        if defaults.reasoning_effort and "reasoning" not in body:
            body["reasoning"] = {"effort": defaults.reasoning_effort}
    names = _RELAYED_HEADERS.get(passthrough.dialect, ())
    client = [(name, value) for name, value in passthrough.headers if name in names]
    given = {name for name, _ in client}
    headers = [(n, v) for n, v in base_headers if n not in given] + client
    if not any(name == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/json"))
    try:
        raw = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
    except (ValueError, UnicodeEncodeError, RecursionError) as exc:
        raise ClientError("the request cannot be encoded as JSON: " + str(exc)) from exc
    return UpstreamRequest(
        path=path, body=raw, headers=tuple(headers), stream=body.get("stream") is True
    )


class RelayWatch:
    """Watches a relayed event stream: usage and the terminal event. Changes nothing."""

    def __init__(self, dialect: str) -> None:
        self._dialect = dialect
        self._terminal = _TERMINAL[dialect]
        self.done = False
        self.usage: JSONObject | None = None
        self._counts: dict[str, int] = {}  # the usage counters seen so far

    def feed(self, event: SSEEvent) -> None:
        name = event.event
        if name == "message":  # no `event:` line: the type is in the data (both APIs send both)
            try:
                payload = json.loads(event.data)
            except ValueError:
                return
            name = payload.get("type", "") if isinstance(payload, dict) else ""
        if name in self._terminal:
            self.done = True
        if name in ("message_start", "message_delta", "response.completed", "response.incomplete"):
            self._note_usage(event.data)

    def _note_usage(self, data: str) -> None:
        try:
            payload = json.loads(data)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        holder = payload.get("message") or payload.get("response") or payload
        usage = holder.get("usage") if isinstance(holder, dict) else None
        if not isinstance(usage, dict):
            usage = payload.get("usage")
        if isinstance(usage, dict):
            # Anthropic's counts are cumulative, spread over message_start (input, cache) and
            # message_delta (output; input again in newer versions, maybe as 0): keep the
            # largest of each, so a later event never loses an earlier count.
            for name, count in usage.items():
                if isinstance(count, int) and not isinstance(count, bool):
                    self._counts[name] = max(count, self._counts.get(name, 0))
            self.usage = relay_usage(self._counts)

    def finish(self) -> None:
        if not self.done:
            raise UpstreamProtocolError("the upstream's event stream ended before its last event")


def relay_usage(usage: dict[str, Any]) -> JSONObject:
    """An Anthropic or Responses `usage` object in OpenAI's shape, for logs, metrics and `tpm`.

    Anthropic's `input_tokens` leaves out cache reads and writes, which come as their own
    fields; OpenAI's `prompt_tokens` includes them (`openai_usage` in
    translate/anthropic_response.py), so they are added here: a relayed answer counts as the
    same answer translated would. The Responses API's `input_tokens` already includes its cached
    tokens and has no such fields.
    """
    prompt = sum(
        _count(usage.get(name))
        for name in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
    completion = _count(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

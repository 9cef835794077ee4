"""Anthropic Messages request -> the neutral chat request (docs/translation-anthropic-inbound.md).

Stage: translate (pure), inbound. The Anthropic face (`POST /v1/messages`) parses the body, then
calls `chat_request_from_anthropic(body)` when the routed upstream does not speak Anthropic (an
Anthropic upstream gets the body as a pass-through, not this round trip). The result is an OpenAI
Chat Completions request body, the neutral form every upstream dialect translates from; the face
runs it through `validate.validate_chat_request` like any other chat request.

Invariants:
- Every field is checked as it is read: a wrong type or value is a `ClientError` (400) whose
  `param` names the field in Anthropic's terms (`messages[1].content[0].source.media_type`,
  `stop_sequences`), never a KeyError or a 500.
- Nothing is dropped silently. A field with no chat equivalent that would change the answer is an
  `UntranslatableRequest` (400, `unsupported_parameter`) naming it; the few that are only hints
  (`cache_control`, `citations` on input text, `eager_input_streaming`, `service_tier: auto`) are
  dropped by a rule written in the doc's table.
- Pure and deterministic: no IO, clock, ids or environment; the caller's dict is not modified.

Theory of operation (inbound doc, "Messages"): `system` becomes one system message first; each
Anthropic turn becomes one or more chat messages, in order. An assistant turn becomes one
assistant message (thinking -> `reasoning_content`, text -> `content`, tool_use -> `tool_calls`).
A user turn becomes one `tool` message per `tool_result` block (Anthropic puts them first in the
turn), then one user message with the remaining blocks plus any images the tool results carried
(chat `tool` messages hold text only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

from trioproxy.errors import ClientError, UntranslatableRequest
from trioproxy.validate import Path, fail, missing, param_of, show, wrong_type

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "MAX_STOP_SEQUENCES",
    "MIN_THINKING_BUDGET",
    "REASONING_EFFORT_THRESHOLDS",
    "AnthropicInbound",
    "chat_request_from_anthropic",
    "reasoning_effort_for_budget",
]

JSONObject = dict[str, Any]

# "Must be ≥1024 and less than `max_tokens`" (anthropic-sdk-python
# types/thinking_config_enabled_param.py; https://platform.claude.com/docs/en/build-with-claude/extended-thinking).
MIN_THINKING_BUDGET = 1024

# thinking.budget_tokens -> reasoning_effort: the smallest budget for each effort. The inverse of
# anthropic_request.THINKING_BUDGETS for low / medium / high (1024 / 2048 / 4096), so a budget
# trioproxy's outbound table produced maps back to the effort it came from; capped at `high`, the
# highest value every OpenAI reasoning model accepts (`xhigh` only some, `max` is no OpenAI value:
# openai-python types/shared/reasoning_effort.py).
REASONING_EFFORT_THRESHOLDS: tuple[tuple[int, str], ...] = (
    (4096, "high"),
    (2048, "medium"),
    (MIN_THINKING_BUDGET, "low"),
)

# OpenAI: "Up to 4 sequences where the API will stop generating" (validate.MAX_STOP_SEQUENCES).
MAX_STOP_SEQUENCES = 4

# The base64 image media types Anthropic accepts (types/base64_image_source_param.py).
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

# Output-config effort levels (types/output_config_param.py); all are reasoning_effort values
# validation accepts (validate.REASONING_EFFORTS).
_OUTPUT_EFFORTS = ("low", "medium", "high", "xhigh", "max")

# Anthropic-only top-level fields that change what the model does or where it runs; no chat
# equivalent (types/message_create_params.py). Each is a 400 naming it when set (null = absent).
_UNSUPPORTED_TOP_LEVEL = (
    "container",
    "context_management",
    "diagnostics",
    "inference_geo",
    "mcp_servers",
    "user_profile_id",
    "workspace_id",
)
_KNOWN_TOP_LEVEL = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "stream",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "service_tier",
        "speed",
        "cache_control",
        *_UNSUPPORTED_TOP_LEVEL,
    }
)

# Keys each block type may carry; anything else is a 400 naming it (not a silent drop).
_TEXT_KEYS = frozenset({"type", "text", "cache_control", "citations"})
_IMAGE_KEYS = frozenset({"type", "source", "cache_control", "transformations"})
_DOCUMENT_KEYS = frozenset({"type", "source", "cache_control", "citations", "context", "title"})
_TOOL_RESULT_KEYS = frozenset(
    {"type", "tool_use_id", "content", "is_error", "cache_control", "toolset_name"}
)
_TOOL_USE_KEYS = frozenset(
    {"type", "id", "name", "input", "cache_control", "caller", "toolset_name"}
)
_THINKING_KEYS = frozenset({"type", "thinking", "signature"})
_REDACTED_KEYS = frozenset({"type", "data"})
_TOOL_KEYS = frozenset(
    {
        "type",
        "name",
        "description",
        "input_schema",
        "cache_control",
        "strict",
        "eager_input_streaming",
        "defer_loading",
        "input_examples",
        "allowed_callers",
    }
)

# Blocks that only Anthropic's servers produce or run (server tools, containers, tool search):
# a chat upstream has nothing to give them to.
_SERVER_BLOCK_HINT = (
    "server tools run on Anthropic's servers; a model served by another upstream cannot "
    "continue their results"
)


@dataclass(frozen=True, slots=True)
class AnthropicInbound:
    """What the Anthropic face needs from one translated request.

    Attributes:
        body: the neutral chat request (run it through `validate_chat_request`).
        model: the model the client named (for `message_start.message.model`).
        stream: whether the client asked for an event stream.
        stop_sequences: the client's stop sequences, for `stop_reason: "stop_sequence"`.
    """

    body: JSONObject
    model: str
    stream: bool
    stop_sequences: tuple[str, ...] = ()


def chat_request_from_anthropic(
    body: object, *, keep_cache_control: bool = False
) -> AnthropicInbound:
    """Translate an Anthropic Messages request body into the neutral chat request.

    Args:
        body: the parsed JSON body of `POST /v1/messages`.
        keep_cache_control: keep `cache_control` on text parts (system and messages), for
            OpenAI-compatible upstreams that honour it (OpenRouter, LiteLLM). Off by default:
            OpenAI caches prompts automatically and has no such field.

    Returns:
        The neutral request and what the face needs to answer in Anthropic's shapes.

    Raises:
        ClientError: a field of the wrong type or value (400; `param` names it).
        UntranslatableRequest: a field with no chat equivalent (400, `unsupported_parameter`).

    Example:
        >>> inbound = chat_request_from_anthropic({
        ...     "model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]})
        >>> inbound.body["messages"], inbound.body["max_tokens"]
        ([{'role': 'user', 'content': 'Hi'}], 64)
    """
    return _Translator(keep_cache_control=keep_cache_control).request(body)


def reasoning_effort_for_budget(budget_tokens: int) -> str:
    """The `reasoning_effort` for a thinking budget (REASONING_EFFORT_THRESHOLDS).

    >>> reasoning_effort_for_budget(1024), reasoning_effort_for_budget(3000)
    ('low', 'medium')
    >>> reasoning_effort_for_budget(31999)
    'high'
    """
    for floor, effort in REASONING_EFFORT_THRESHOLDS:
        if budget_tokens >= floor:
            return effort
    return REASONING_EFFORT_THRESHOLDS[-1][1]


# --- errors -------------------------------------------------------------------------------------


def _unsupported(path: Path, message: str) -> NoReturn:
    param = param_of(path)
    raise UntranslatableRequest(f"{param} {message}", param=param)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_keys(path: Path, block: JSONObject, allowed: frozenset[str], what: str) -> None:
    for key in block:
        if key not in allowed and block[key] is not None:
            _unsupported(
                (*path, key),
                f"is not supported on a {what} when the model is served by a non-Anthropic "
                "upstream; remove it",
            )


def _object(path: Path, value: object, example: str) -> JSONObject:
    if not isinstance(value, dict):
        wrong_type(path, f"an object {example}", value)
    return value


def _string(path: Path, value: object, *, non_empty: bool = False) -> str:
    if value is None:
        missing(path, "a string")
    if not isinstance(value, str) or (non_empty and not value):
        wrong_type(path, "a non-empty string" if non_empty else "a string", value)
    return value


# --- the translator -----------------------------------------------------------------------------


class _Translator:
    def __init__(self, *, keep_cache_control: bool) -> None:
        self._keep_cache_control = keep_cache_control

    def request(self, body: object) -> AnthropicInbound:
        if not isinstance(body, dict):
            raise ClientError(
                f"request body must be a JSON object with model, max_tokens and messages, got "
                f"{show(body)}",
                code="invalid_type",
            )
        # null for an optional field means absent, as validate.py treats chat requests.
        body = {key: value for key, value in body.items() if value is not None}
        for key in body:
            if key not in _KNOWN_TOP_LEVEL:
                _unsupported(
                    (key,),
                    "is not a Messages API field this proxy can translate for a non-Anthropic "
                    "upstream; remove it",
                )
        for key in _UNSUPPORTED_TOP_LEVEL:
            if key in body:
                _unsupported(
                    (key,), "has no equivalent on a model served by a non-Anthropic upstream"
                )

        model = body.get("model")
        if model is None:
            missing(("model",), 'name the model to use, e.g. "model": "claude-sonnet-4-5"')
        model = _string(("model",), model, non_empty=True)
        out: JSONObject = {"model": model}

        # max_tokens is required by the Messages API (types/message_create_params.py:
        # `max_tokens: Required[int]`); chat's `max_tokens` is the name every compatible
        # server knows (translate/chat.py). 0 ("pre-warm the cache") has no chat equivalent.
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            missing(("max_tokens",), "the most tokens to generate, e.g. 1024")
        if not _is_int(max_tokens):
            wrong_type(("max_tokens",), "an integer >= 1", max_tokens)
        if max_tokens < 1:
            fail(("max_tokens",), f"must be an integer >= 1, got {max_tokens}")

        messages: list[JSONObject] = self._system(body.get("system"))
        messages += self._messages(body.get("messages"))
        out["messages"] = messages
        out["max_tokens"] = max_tokens

        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            wrong_type(("stream",), "true or false", stream)
        if stream:
            # Usage arrives only when asked for; the face needs it for message_delta.usage.
            out["stream"] = True
            out["stream_options"] = {"include_usage": True}

        stop = self._stop_sequences(body.get("stop_sequences"))
        if stop:
            out["stop"] = list(stop)
        if "temperature" in body:
            out["temperature"] = self._between(("temperature",), body["temperature"], 0, 1)
        if "top_p" in body:
            out["top_p"] = self._between(("top_p",), body["top_p"], 0, 1)
        if "top_k" in body:
            top_k = body["top_k"]
            if not _is_int(top_k) or top_k < 0:
                wrong_type(("top_k",), "an integer >= 0", top_k)
            _unsupported(
                ("top_k",),
                "has no OpenAI Chat Completions equivalent; remove it (or use top_p) for models "
                "served by a non-Anthropic upstream",
            )
        self._metadata(body.get("metadata"), out)
        self._tools(body.get("tools"), body.get("tool_choice"), out)
        effort = self._thinking(body.get("thinking"))
        format_effort = self._output_config(body.get("output_config"), out)
        if format_effort is not None:
            effort = format_effort  # an explicit level beats a level derived from a budget
        if effort is not None:
            out["reasoning_effort"] = effort
        self._service_tier(body.get("service_tier"), out)
        speed = body.get("speed")
        if speed is not None and speed != "standard":
            if speed != "fast":
                fail(("speed",), f'must be "standard" or "fast", got {show(speed)}')
            _unsupported(("speed",), '"fast" is only available on Anthropic models')
        if "cache_control" in body:
            # Top-level automatic caching: a hint, never a change to the answer; OpenAI caches
            # prompts automatically (https://platform.openai.com/docs/guides/prompt-caching).
            _object(("cache_control",), body["cache_control"], '{"type": "ephemeral"}')
        return AnthropicInbound(body=out, model=model, stream=stream, stop_sequences=stop)

    # --- top-level fields ---

    def _between(self, path: Path, value: object, low: int, high: int) -> float | int:
        if not _is_number(value):
            wrong_type(path, f"a number between {low} and {high}", value)
        assert isinstance(value, int | float)
        if not low <= value <= high:
            fail(path, f"must be a number between {low} and {high}, got {show(value)}")
        return value

    def _stop_sequences(self, value: object) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            wrong_type(("stop_sequences",), "an array of strings", value)
        for index, item in enumerate(value):
            _string(("stop_sequences", index), item)
        if len(value) > MAX_STOP_SEQUENCES:
            _unsupported(
                ("stop_sequences",),
                f"has {len(value)} sequences; models served by a non-Anthropic upstream accept "
                f"at most {MAX_STOP_SEQUENCES} (OpenAI's `stop`)",
            )
        return tuple(value)

    def _metadata(self, value: object, out: JSONObject) -> None:
        if value is None:
            return
        metadata = _object(("metadata",), value, '{"user_id": "..."}')
        for key, item in metadata.items():
            if key != "user_id" and item is not None:
                _unsupported(("metadata", key), "is not a Messages API metadata field")
        user_id = metadata.get("user_id")
        if user_id is not None:
            out["user"] = _string(("metadata", "user_id"), user_id)

    def _service_tier(self, value: object, out: JSONObject) -> None:
        # Anthropic auto | standard_only (types/message_create_params.py); OpenAI's default is
        # "auto" and "default" is its standard tier (https://platform.openai.com/docs/api-reference/chat/create).
        if value is None or value == "auto":
            return
        if value == "standard_only":
            out["service_tier"] = "default"
            return
        fail(("service_tier",), f'must be "auto" or "standard_only", got {show(value)}')

    def _thinking(self, value: object) -> str | None:
        if value is None:
            return None
        thinking = _object(("thinking",), value, '{"type": "enabled", "budget_tokens": 2048}')
        kind = thinking.get("type")
        if kind is None:
            missing(("thinking", "type"), '"enabled", "adaptive" or "disabled"')
        display = thinking.get("display")
        if display is not None and display not in ("summarized", "omitted"):
            fail(
                ("thinking", "display"),
                f'must be "summarized" or "omitted", got {show(display)}',
            )
        if kind == "enabled":
            _check_keys(
                ("thinking",),
                thinking,
                frozenset({"type", "budget_tokens", "display"}),
                "thinking config",
            )
            budget = thinking.get("budget_tokens")
            if budget is None:
                missing(("thinking", "budget_tokens"), f"an integer >= {MIN_THINKING_BUDGET}")
            if not _is_int(budget):
                wrong_type(
                    ("thinking", "budget_tokens"), f"an integer >= {MIN_THINKING_BUDGET}", budget
                )
            if budget < MIN_THINKING_BUDGET:
                fail(
                    ("thinking", "budget_tokens"),
                    f"must be >= {MIN_THINKING_BUDGET}, got {budget}",
                )
            return reasoning_effort_for_budget(budget)
        if kind in ("disabled", "adaptive", "between_tools"):
            # disabled: the model's default applies (reasoning_effort "none" is refused by
            # many OpenAI reasoning models); adaptive / between_tools: the model decides.
            _check_keys(("thinking",), thinking, frozenset({"type", "display"}), "thinking config")
            return None
        fail(
            ("thinking", "type"),
            f'must be "enabled", "adaptive" or "disabled", got {show(kind)}',
        )

    def _output_config(self, value: object, out: JSONObject) -> str | None:
        if value is None:
            return None
        config = _object(("output_config",), value, '{"effort": "high"}')
        _check_keys(("output_config",), config, frozenset({"effort", "format"}), "output_config")
        fmt = config.get("format")
        if fmt is not None:
            fmt = _object(
                ("output_config", "format"), fmt, '{"type": "json_schema", "schema": {...}}'
            )
            if fmt.get("type") != "json_schema":
                fail(
                    ("output_config", "format", "type"),
                    f'must be "json_schema", got {show(fmt.get("type"))}',
                )
            schema = fmt.get("schema")
            if not isinstance(schema, dict):
                wrong_type(("output_config", "format", "schema"), "a JSON Schema object", schema)
            # https://platform.openai.com/docs/guides/structured-outputs: json_schema needs a name.
            out["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": schema},
            }
        effort = config.get("effort")
        if effort is None:
            return None
        if effort not in _OUTPUT_EFFORTS:
            fail(
                ("output_config", "effort"),
                f"must be one of {', '.join(_OUTPUT_EFFORTS)}, got {show(effort)}",
            )
        assert isinstance(effort, str)
        return effort

    # --- tools ---

    def _tools(self, tools: object, choice: object, out: JSONObject) -> None:
        converted: list[JSONObject] = []
        if tools is not None:
            if not isinstance(tools, list):
                wrong_type(("tools",), "an array of tools", tools)
            converted = [self._tool(index, tool) for index, tool in enumerate(tools)]
        if converted:
            out["tools"] = converted
        if choice is None:
            return
        path: Path = ("tool_choice",)
        tool_choice = _object(path, choice, '{"type": "auto"}')
        kind = tool_choice.get("type")
        allowed = {"type", "disable_parallel_tool_use"} | ({"name"} if kind == "tool" else set())
        _check_keys(path, tool_choice, frozenset(allowed), "tool_choice")
        disable_parallel = tool_choice.get("disable_parallel_tool_use", False)
        if not isinstance(disable_parallel, bool):
            wrong_type((*path, "disable_parallel_tool_use"), "true or false", disable_parallel)
        mapped: object
        match kind:
            case "auto":
                mapped = "auto"
            case "any":
                mapped = "required"
            case "none":
                mapped = "none"
            case "tool":
                name = _string((*path, "name"), tool_choice.get("name"), non_empty=True)
                if converted and name not in {t["function"]["name"] for t in converted}:
                    fail((*path, "name"), f"names {show(name)}, which is not one of the tools")
                mapped = {"type": "function", "function": {"name": name}}
            case None:
                missing((*path, "type"), '"auto", "any", "tool" or "none"')
            case _:
                fail(
                    (*path, "type"),
                    f'must be "auto", "any", "tool" or "none", got {show(kind)}',
                )
        if not converted:
            if kind in ("any", "tool"):
                fail(path, f"is {show(kind)} but the request has no tools")
            return  # auto / none without tools: what the model does anyway; OpenAI refuses it
        out["tool_choice"] = mapped
        if disable_parallel and kind != "none":
            out["parallel_tool_calls"] = False

    def _tool(self, index: int, value: object) -> JSONObject:
        path: Path = ("tools", index)
        tool = _object(path, value, '{"name": ..., "description": ..., "input_schema": {...}}')
        kind = tool.get("type")
        name = tool.get("name")
        if kind is not None and kind != "custom":
            # Server tools (web_search_*, code_execution_*) and Anthropic-defined client tools
            # (bash_*, text_editor_*, computer_*, memory_*) have no schema a chat upstream could
            # be given (types/tool_union_param.py).
            _unsupported(
                (*path, "type"),
                f"is the Anthropic tool {show(kind)}"
                + (f" ({show(name)})" if isinstance(name, str) else "")
                + ", which only Anthropic models can use; a model served by a non-Anthropic "
                "upstream takes custom tools with an input_schema only",
            )
        _check_keys(path, tool, _TOOL_KEYS, "tool")
        function: JSONObject = {"name": _string((*path, "name"), name, non_empty=True)}
        if "description" in tool:
            function["description"] = _string((*path, "description"), tool["description"])
        schema = tool.get("input_schema")
        if schema is None:
            missing((*path, "input_schema"), 'a JSON Schema object, e.g. {"type": "object"}')
        if not isinstance(schema, dict):
            wrong_type((*path, "input_schema"), "a JSON Schema object", schema)
        function["parameters"] = schema
        if "strict" in tool:
            if not isinstance(tool["strict"], bool):
                wrong_type((*path, "strict"), "true or false", tool["strict"])
            function["strict"] = tool["strict"]
        if "cache_control" in tool:
            _object((*path, "cache_control"), tool["cache_control"], '{"type": "ephemeral"}')
        if "eager_input_streaming" in tool and not isinstance(tool["eager_input_streaming"], bool):
            wrong_type(
                (*path, "eager_input_streaming"), "true or false", tool["eager_input_streaming"]
            )
        if tool.get("defer_loading", False) is not False:
            _unsupported((*path, "defer_loading"), "needs Anthropic's tool search")
        if tool.get("input_examples"):
            _unsupported((*path, "input_examples"), "has no OpenAI function-tool equivalent")
        callers = tool.get("allowed_callers")
        if callers is not None and callers != ["direct"]:
            _unsupported((*path, "allowed_callers"), "needs Anthropic's code execution tool")
        return {"type": "function", "function": function}

    # --- messages ---

    def _system(self, value: object) -> list[JSONObject]:
        if value is None:
            return []
        content = self._text_content(("system",), value)
        if content == "" or content == []:
            return []
        return [{"role": "system", "content": content}]

    def _text_content(self, path: Path, value: object) -> str | list[JSONObject]:
        """A string or an array of text blocks (system, a system-role message)."""
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            wrong_type(path, "a string or an array of text blocks", value)
        parts: list[JSONObject] = []
        for index, block in enumerate(value):
            here = (*path, index)
            block = _object(here, block, '{"type": "text", "text": "..."}')
            if block.get("type") != "text":
                fail((*here, "type"), f'must be "text" here, got {show(block.get("type"))}')
            parts.append(self._text_part(here, block))
        return parts

    def _text_part(self, path: Path, block: JSONObject) -> JSONObject:
        _check_keys(path, block, _TEXT_KEYS, "text block")
        part: JSONObject = {"type": "text", "text": _string((*path, "text"), block.get("text"))}
        citations = block.get("citations")
        if citations is not None and not isinstance(citations, list):
            wrong_type((*path, "citations"), "an array of citations", citations)
        self._cache_control(path, block, part)
        return part

    def _cache_control(self, path: Path, block: JSONObject, part: JSONObject) -> None:
        value = block.get("cache_control")
        if value is None:
            return
        _object((*path, "cache_control"), value, '{"type": "ephemeral"}')
        if self._keep_cache_control:
            part["cache_control"] = value

    def _messages(self, value: object) -> list[JSONObject]:
        path: Path = ("messages",)
        if value is None:
            missing(path, 'the conversation, e.g. [{"role": "user", "content": "Hello"}]')
        if not isinstance(value, list):
            wrong_type(path, "an array of message objects", value)
        if not value:
            fail(
                path,
                'must contain at least one message, e.g. {"role": "user", "content": "Hello"}',
                "empty_array",
            )
        out: list[JSONObject] = []
        for index, message in enumerate(value):
            here: Path = ("messages", index)
            message = _object(here, message, '{"role": "user", "content": "Hello"}')
            _check_keys(here, message, frozenset({"role", "content"}), "message")
            role = message.get("role")
            content = message.get("content")
            if content is None:
                missing((*here, "content"), "a string or an array of content blocks")
            match role:
                case "user":
                    out += self._user(here, content)
                case "assistant":
                    out.append(self._assistant(here, content))
                case "system":
                    text = self._text_content((*here, "content"), content)
                    if text != "" and text != []:
                        out.append({"role": "system", "content": text})
                case None:
                    missing((*here, "role"), '"user" or "assistant"')
                case _:
                    fail((*here, "role"), f'must be "user" or "assistant", got {show(role)}')
        return out

    def _blocks(self, path: Path, content: object) -> list[JSONObject]:
        if not isinstance(content, list):
            wrong_type(path, "a string or an array of content blocks", content)
        for index, block in enumerate(content):
            here = (*path, index)
            block = _object(here, block, '{"type": "text", "text": "..."}')
            if block.get("type") is None:
                missing((*here, "type"), '"text", "image", "tool_use", "tool_result", ...')
            if not isinstance(block.get("type"), str):
                wrong_type((*here, "type"), "a string", block.get("type"))
        return content

    def _user(self, path: Path, content: object) -> list[JSONObject]:
        if isinstance(content, str):
            return [{"role": "user", "content": content}]
        blocks = self._blocks((*path, "content"), content)
        tool_messages: list[JSONObject] = []
        parts: list[JSONObject] = []
        hoisted: list[JSONObject] = []  # images from tool results
        for index, block in enumerate(blocks):
            here: Path = (*path, "content", index)
            match block["type"]:
                case "text":
                    parts.append(self._text_part(here, block))
                case "image":
                    parts.append(self._image(here, block))
                case "document":
                    parts.append(self._document(here, block))
                case "tool_result":
                    message, images = self._tool_result(here, block)
                    tool_messages.append(message)
                    hoisted += images
                case "thinking" | "redacted_thinking" | "tool_use":
                    fail(
                        (*here, "type"),
                        f"{show(block['type'])} blocks belong in assistant messages",
                    )
                case kind:
                    self._unknown_block(here, kind)
        out = tool_messages
        if hoisted or parts:
            out.append({"role": "user", "content": hoisted + parts})
        return out

    def _assistant(self, path: Path, content: object) -> JSONObject:
        if isinstance(content, str):
            return {"role": "assistant", "content": content}
        blocks = self._blocks((*path, "content"), content)
        texts: list[JSONObject] = []
        reasoning: list[str] = []
        thinking_blocks: list[JSONObject] = []
        calls: list[JSONObject] = []
        for index, block in enumerate(blocks):
            here: Path = (*path, "content", index)
            match block["type"]:
                case "text":
                    texts.append(self._text_part(here, block))
                case "thinking":
                    _check_keys(here, block, _THINKING_KEYS, "thinking block")
                    thinking = _string((*here, "thinking"), block.get("thinking"))
                    signature = block.get("signature", "")
                    if not isinstance(signature, str):
                        wrong_type((*here, "signature"), "a string", signature)
                    reasoning.append(thinking)
                    if signature:  # only Anthropic can check it; kept for a route back there
                        thinking_blocks.append(
                            {"type": "thinking", "thinking": thinking, "signature": signature}
                        )
                case "redacted_thinking":
                    _check_keys(here, block, _REDACTED_KEYS, "redacted_thinking block")
                    data = _string((*here, "data"), block.get("data"), non_empty=True)
                    thinking_blocks.append({"type": "redacted_thinking", "data": data})
                case "tool_use":
                    calls.append(self._tool_use(here, block))
                case "image" | "document" | "tool_result":
                    fail(
                        (*here, "type"),
                        f"{show(block['type'])} blocks belong in user messages",
                    )
                case kind:
                    self._unknown_block(here, kind)
        message: JSONObject = {"role": "assistant"}
        if texts and all(set(t) == {"type", "text"} for t in texts):
            message["content"] = "".join(t["text"] for t in texts)
        elif texts:
            message["content"] = texts
        else:
            message["content"] = None if calls else ""
        if reasoning:
            # The DeepSeek / LiteLLM field (MAPPING.md B.3); several blocks joined as P-B2 does.
            message["reasoning_content"] = "\n\n".join(reasoning)
        if thinking_blocks:
            message["thinking_blocks"] = thinking_blocks  # LiteLLM's convention (MAPPING.md A.2.3)
        if calls:
            message["tool_calls"] = calls
        return message

    def _unknown_block(self, path: Path, kind: str) -> NoReturn:
        if (
            kind == "server_tool_use"
            or kind.endswith("_tool_result")
            or kind
            in (
                "search_result",
                "container_upload",
            )
        ):
            _unsupported((*path, "type"), f"{show(kind)}: {_SERVER_BLOCK_HINT}")
        _unsupported(
            (*path, "type"), f"{show(kind)} is not a content block this proxy can translate"
        )

    def _image(self, path: Path, block: JSONObject) -> JSONObject:
        _check_keys(path, block, _IMAGE_KEYS, "image block")
        if block.get("transformations"):
            _unsupported((*path, "transformations"), "are only available on Anthropic models")
        source = _object((*path, "source"), block.get("source"), '{"type": "base64", ...}')
        kind = source.get("type")
        if kind == "base64":
            media_type = source.get("media_type")
            if media_type not in IMAGE_MEDIA_TYPES:
                fail(
                    (*path, "source", "media_type"),
                    f"must be one of {', '.join(IMAGE_MEDIA_TYPES)}, got {show(media_type)}",
                )
            data = _string((*path, "source", "data"), source.get("data"), non_empty=True)
            url = f"data:{media_type};base64,{data}"  # RFC 2397
        elif kind == "url":
            url = _string((*path, "source", "url"), source.get("url"), non_empty=True)
        elif kind == "file":
            _unsupported(
                (*path, "source"),
                "file sources name files in Anthropic's Files API, which another upstream "
                "cannot read; send the image as base64",
            )
        else:
            fail((*path, "source", "type"), f'must be "base64" or "url", got {show(kind)}')
        part: JSONObject = {"type": "image_url", "image_url": {"url": url}}
        self._cache_control(path, block, {})  # checked; only text parts carry it (doc)
        return part

    def _document(self, path: Path, block: JSONObject) -> JSONObject:
        _check_keys(path, block, _DOCUMENT_KEYS, "document block")
        citations = block.get("citations")
        if citations is not None:
            citations = _object((*path, "citations"), citations, '{"enabled": true}')
            if citations.get("enabled") is True:
                _unsupported((*path, "citations"), "are only produced by Anthropic models")
        if block.get("context") is not None:
            _unsupported((*path, "context"), "has no equivalent in an OpenAI file or text part")
        title = block.get("title")
        if title is not None:
            _string((*path, "title"), title)
        self._cache_control(path, block, {})
        source = _object((*path, "source"), block.get("source"), '{"type": "base64", ...}')
        kind = source.get("type")
        if kind == "base64":
            media_type = source.get("media_type")
            if media_type != "application/pdf":
                fail(
                    (*path, "source", "media_type"),
                    f'must be "application/pdf", got {show(media_type)}',
                )
            data = _string((*path, "source", "data"), source.get("data"), non_empty=True)
            # OpenAI file parts: {"file": {"filename", "file_data": data URL}}
            # (https://platform.openai.com/docs/guides/pdf-files).
            return {
                "type": "file",
                "file": {
                    "filename": title or "document.pdf",
                    "file_data": f"data:application/pdf;base64,{data}",
                },
            }
        if kind == "text":
            if source.get("media_type") != "text/plain":
                fail(
                    (*path, "source", "media_type"),
                    f'must be "text/plain", got {show(source.get("media_type"))}',
                )
            if title is not None:
                _unsupported(
                    (*path, "title"), "of a text document has no equivalent in a text part"
                )
            return {"type": "text", "text": _string((*path, "source", "data"), source.get("data"))}
        if kind in ("url", "file", "content"):
            _unsupported(
                (*path, "source", "type"),
                f"{show(kind)} documents cannot be sent to a non-Anthropic upstream; "
                "send the PDF as base64",
            )
        fail((*path, "source", "type"), f'must be "base64" or "text", got {show(kind)}')

    def _tool_use(self, path: Path, block: JSONObject) -> JSONObject:
        _check_keys(path, block, _TOOL_USE_KEYS, "tool_use block")
        caller = block.get("caller")
        if caller is not None and caller != {"type": "direct"}:
            _unsupported((*path, "caller"), "names Anthropic's code execution tool")
        tool_input = block.get("input")
        if tool_input is None:
            missing((*path, "input"), "the tool's input object")
        if not isinstance(tool_input, dict):
            wrong_type((*path, "input"), "an object", tool_input)
        self._cache_control(path, block, {})
        return {
            "id": _string((*path, "id"), block.get("id"), non_empty=True),
            "type": "function",
            "function": {
                "name": _string((*path, "name"), block.get("name"), non_empty=True),
                "arguments": json.dumps(tool_input, ensure_ascii=False, separators=(",", ":")),
            },
        }

    def _tool_result(self, path: Path, block: JSONObject) -> tuple[JSONObject, list[JSONObject]]:
        _check_keys(path, block, _TOOL_RESULT_KEYS, "tool_result block")
        call_id = _string((*path, "tool_use_id"), block.get("tool_use_id"), non_empty=True)
        is_error = block.get("is_error", False)
        if not isinstance(is_error, bool):
            wrong_type((*path, "is_error"), "true or false", is_error)
        self._cache_control(path, block, {})
        content = block.get("content", "")
        images: list[JSONObject] = []
        result: str | list[JSONObject]
        if isinstance(content, str):
            result = content
        elif isinstance(content, list):
            parts: list[JSONObject] = []
            for index, item in enumerate(content):
                here: Path = (*path, "content", index)
                item = _object(here, item, '{"type": "text", "text": "..."}')
                match item.get("type"):
                    case "text":
                        parts.append(self._text_part(here, item))
                    case "image":
                        # Chat `tool` messages carry text only
                        # (https://platform.openai.com/docs/api-reference/chat/create, tool
                        # message content: "text" parts), so images move to the user message
                        # that follows the tool messages.
                        images.append(self._image(here, item))
                    case None:
                        missing((*here, "type"), '"text" or "image"')
                    case kind:
                        _unsupported(
                            (*here, "type"),
                            f"{show(kind)} in a tool_result cannot be sent to a non-Anthropic "
                            "upstream; only text and image are",
                        )
            if not parts:
                result = ""
            elif len(parts) == 1 and set(parts[0]) == {"type", "text"}:
                result = parts[0]["text"]  # one plain text block is the same as its string
            else:
                result = parts
        else:
            wrong_type((*path, "content"), "a string or an array of text and image blocks", content)
        if is_error:
            # Chat has no error flag on tool messages; the model is told in the content.
            if isinstance(result, str):
                result = f"Error: {result}" if result else "Error"
            else:
                result = [{"type": "text", "text": "Error:"}, *result]
        return {"role": "tool", "tool_call_id": call_id, "content": result}, images

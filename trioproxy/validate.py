"""Request validation: the client's bytes to a chat request translators can rely on.

Stage: after auth, before routing and translation. Pure: stdlib only, no IO.

`parse_json_body(raw, max_depth=...)` turns a request body into a JSON value;
`validate_chat_request` checks that value against what every translator may assume (BRIEF "What
request validation guarantees"; the shapes are OpenAI's, openai-python
`types/chat/completion_create_params.py`):

- the body is a dict; `model` a non-empty str; `messages` a non-empty list (at most `max_messages`)
  of dicts, each with `role` in system | developer | user | assistant | tool;
- `content` is a str, a list of part dicts each with a str `type`, or None (None or absent only for
  assistant); `text` parts have a str `text`; `image_url` parts have `image_url` = {"url": str,
  "detail"?: str}; assistant `tool_calls` (optional) is a list of {"id": str, "type": "function",
  "function": {"name": str, "arguments": str}}; `tool` messages have a non-empty str `tool_call_id`;
- if present: `stream` bool; `stream_options` dict with optional bool `include_usage`;
  `max_tokens` / `max_completion_tokens` int in [1, MAX_OUTPUT_TOKENS]; `temperature` number in
  [0, 2]; `top_p` number in [0, 1]; `n` int in [1, MAX_CHOICES]; `stop` str or list of <= 4 str;
  unless null (kept as sent, like any unknown field's null): `top_logprobs` int in
  [0, MAX_TOP_LOGPROBS], `seed` a signed 64-bit int, `presence_penalty` / `frequency_penalty`
  number in [-2, 2], `logit_bias` an object of numbers in [-100, 100] (the bounds and where they
  come from: the constants below); `tools` list (at most `max_tools`) of
  {"type": "function", "function": {"name": str, "description"?: str, "parameters"?: dict,
  "strict"?: bool}};
  `tool_choice` "none" | "auto" | "required" or {"type": "function", "function": {"name": str}};
  `parallel_tool_calls` bool; `reasoning_effort` one of REASONING_EFFORTS; `user` str;
  `response_format` dict with a str `type`;
- the whole body is plain JSON (dicts with str keys, lists, str, finite numbers, bool, None; no lone
  surrogates, which could not be encoded to UTF-8 for the upstream), nested at most `max_json_depth`
  deep, so no translator meets a RecursionError or a UnicodeEncodeError.

Normalisation (the only changes made; the result is a shallow copy, the caller's dict is untouched):
`null` for one of the optional fields above means "absent" and the key is removed (OpenAI accepts
null for them, and clients that serialise their own models send it); likewise an assistant's
`"tool_calls": null` and a tool function's null `description` / `parameters` / `strict`. Unknown
top-level fields are kept (translators forward or drop them). `stream` absent means false
(`body.get("stream", False)`). `model` is not resolved here (routing does that).

Every violation raises `ClientError` (400) with `param` naming the field in OpenAI's style
(`messages[2].content[0].image_url.url`), a message saying what to send instead, and `code` one of
OpenAI's: `invalid_type`, `invalid_value`, `missing_required_parameter`, `empty_array`,
`array_above_max_length`, or `invalid_json` for a body that is not JSON at all.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from trioproxy.errors import ClientError

if TYPE_CHECKING:
    from trioproxy.config_types import ProxySettings

__all__ = [
    "REASONING_EFFORTS",
    "ROLES",
    "RequestLimits",
    "parse_json_body",
    "validate_chat_request",
]

# openai-python `types/shared/reasoning_effort.py` lists none..xhigh; `max` is trioproxy's own top
# step (MAPPING.md A.1, tables/reasoning_effort.json).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
ROLES = ("system", "developer", "user", "assistant", "tool")
TOOL_CHOICE_MODES = ("none", "auto", "required")
MAX_STOP_SEQUENCES = 4  # OpenAI: "Up to 4 sequences where the API will stop generating"

# Integer bounds: a value beyond what any upstream takes is refused here, naming the field, rather
# than sent up to fail there (or, for a server that parses into a fixed-width int, to overflow).
# OpenAI's OpenAPI spec (openai-openapi, CreateChatCompletionRequest) gives `n` 1..128,
# `top_logprobs` 0..20, the penalties -2..2, `logit_bias` values -100..100, and `seed` the
# signed 64-bit range. It gives `max_tokens` no maximum: the largest real one is a model's
# context length (10M tokens for the longest open-weight models served by vLLM), so the bound
# is the signed 32-bit maximum, which every server's integer type holds and no model reaches.
MAX_OUTPUT_TOKENS = 2**31 - 1
MAX_CHOICES = 128
MAX_TOP_LOGPROBS = 20
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
PENALTY_MIN, PENALTY_MAX = -2, 2
LOGIT_BIAS_MIN, LOGIT_BIAS_MAX = -100, 100

# Optional top-level fields for which `null` means absent (OpenAI's schema marks them nullable).
_NULLABLE = (
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "user",
    "response_format",
)
_SURROGATE = re.compile("[\ud800-\udfff]")

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Size limits on one chat request (the `[proxy]` keys of the same names)."""

    max_messages: int = 2048
    max_tools: int = 256
    max_json_depth: int = 64  # containers nested in one another; the body itself is level 1

    @classmethod
    def from_settings(cls, settings: ProxySettings) -> RequestLimits:
        return cls(
            max_messages=settings.max_messages,
            max_tools=settings.max_tools,
            max_json_depth=settings.max_json_depth,
        )


# --- errors ------------------------------------------------------------------------------------


def param_of(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def show(value: object) -> str:
    """A client value for a message: JSON-ish, strings cut short, containers by kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return json.dumps(shown)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def fail(path: Path, message: str, code: str = "invalid_value") -> NoReturn:
    param = param_of(path)
    raise ClientError(f"{param or 'request body'} {message}", param=param or None, code=code)


def wrong_type(path: Path, expected: str, value: object) -> NoReturn:
    fail(path, f"must be {expected}, got {show(value)}", "invalid_type")


def missing(path: Path, what: str) -> NoReturn:
    fail(path, f"is required: {what}", "missing_required_parameter")


# --- parsing -----------------------------------------------------------------------------------


class _BadNumber(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _BadNumber(f"{name} is not a JSON number; send a finite number or null")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _BadNumber(f"the number {text[:20]} is too large for a float")
    return number


def parse_json_body(raw: bytes | bytearray | memoryview, *, max_depth: int) -> object:
    """Parse a request body as JSON, safely: depth-limited, UTF-8 only, finite numbers only.

    Deep nesting cannot exhaust the stack: the C decoder's recursion guard raises RecursionError
    (caught here) long before, and the depth limit is then checked by an iterative walk.

    Args:
        raw: the request body.
        max_depth: the deepest nesting of arrays / objects accepted (the body itself is level 1).

    Returns:
        The JSON value (not necessarily a dict: `validate_chat_request` checks that).

    Raises:
        ClientError: 400 `invalid_json`, saying what is wrong.
    """
    try:
        data = bytes(raw)
    except TypeError:
        raise ClientError("request body must be bytes", code="invalid_json") from None
    if not data.strip():
        raise ClientError(
            "request body is empty; send a JSON object with model and messages", code="invalid_json"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(
            f"request body is not valid UTF-8 (bad byte at position {exc.start}); send JSON "
            "encoded as UTF-8",
            code="invalid_json",
        ) from None
    if text.startswith("\ufeff"):  # RFC 8259 §8.1: parsers MAY ignore a byte order mark
        text = text[1:]
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ClientError(
            f"request body nests JSON deeper than {max_depth} levels", code="invalid_json"
        ) from None
    except ValueError as exc:  # JSONDecodeError, _BadNumber, int() digit limit
        raise ClientError(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    _check_tree(value, max_depth=max_depth)
    return value


def _check_tree(value: object, *, max_depth: int) -> None:
    """Check that `value` is plain JSON nested at most `max_depth` deep. Iterative (level by
    level), so depth costs no stack; paths are only worked out, by `_explain`, once it fails."""
    level = [value]
    depth = 0
    while level:
        depth += 1
        below: list[object] = []
        for node in level:
            if isinstance(node, dict):
                for key in node:
                    if not isinstance(key, str) or (not key.isascii() and _SURROGATE.search(key)):
                        _explain(value, max_depth)
                children: Any = node.values()
            elif isinstance(node, list):
                children = node
            else:
                children = (node,)  # only the top level can be a scalar
            for child in children:
                if isinstance(child, dict | list):
                    below.append(child)
                elif not _is_plain_scalar(child):
                    _explain(value, max_depth)
        if below and depth >= max_depth:
            _explain(value, max_depth)
        level = below


def _is_plain_scalar(value: object) -> bool:
    if isinstance(value, str):
        return value.isascii() or _SURROGATE.search(value) is None
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, int)  # bool is an int


def _explain(value: object, max_depth: int) -> NoReturn:
    """Find the first problem `_check_tree` saw, with its path, and raise for it."""
    stack: list[tuple[object, int, Path]] = [(value, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if not isinstance(node, dict | list):
            _check_scalar(node, path)
            continue
        if depth > max_depth:
            # Not `invalid_json`: the JSON is fine, there is just too much of it.
            fail(path, f"nests JSON deeper than {max_depth} levels (max_json_depth); flatten it")
        items: Any = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            if isinstance(node, dict) and (not isinstance(key, str) or _SURROGATE.search(key)):
                fail(path, f"has a key that is not a valid string: {show(key)}", "invalid_type")
            stack.append((child, depth + 1, (*path, key)))
    raise AssertionError("_explain found nothing wrong")  # pragma: no cover


def _check_scalar(value: object, path: Path) -> None:
    if _is_plain_scalar(value):
        return
    if isinstance(value, str):
        fail(path, "contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text")
    if isinstance(value, float):
        fail(path, f"must be a finite number, got {value!r}")
    wrong_type(path, "a JSON value (object, array, string, number, boolean or null)", value)


# --- validation ---------------------------------------------------------------------------------


def validate_chat_request(body: object, *, limits: RequestLimits) -> dict[str, Any]:
    """Check a parsed Chat Completions request; return a shallow copy with nulls normalised.

    Args:
        body: the parsed JSON body (from `parse_json_body`, or an embedder's dict).
        limits: message / tool counts and nesting depth allowed.

    Returns:
        The body (a new dict; nested values shared) that keeps every guarantee listed in the
        module docstring.

    Raises:
        ClientError: 400, with `param` naming the field and a message saying what to fix.

    Example:
        >>> body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        >>> validate_chat_request(body, limits=RequestLimits())["model"]
        'demo'
    """
    if not isinstance(body, dict):
        raise ClientError(
            f"request body must be a JSON object with model and messages, got {show(body)}",
            code="invalid_type",
        )
    _check_tree(body, max_depth=limits.max_json_depth)
    out = {key: value for key, value in body.items() if not (key in _NULLABLE and value is None)}

    model = out.get("model")
    if model is None:
        missing(("model",), 'name the model to use, e.g. "model": "demo"')
    if not isinstance(model, str) or not model:
        wrong_type(("model",), "a non-empty string", model)

    out["messages"] = _messages(out.get("messages"), limits)

    for key in ("stream", "parallel_tool_calls"):
        if key in out and not isinstance(out[key], bool):
            wrong_type((key,), "true or false", out[key])
    if "stream_options" in out:
        options = out["stream_options"]
        if not isinstance(options, dict):
            wrong_type(("stream_options",), 'an object such as {"include_usage": true}', options)
        if "include_usage" in options and not isinstance(options["include_usage"], bool):
            wrong_type(
                ("stream_options", "include_usage"), "true or false", options["include_usage"]
            )
    for key, low, high in (
        ("max_tokens", 1, MAX_OUTPUT_TOKENS),
        ("max_completion_tokens", 1, MAX_OUTPUT_TOKENS),
        ("n", 1, MAX_CHOICES),
        ("top_logprobs", 0, MAX_TOP_LOGPROBS),
        ("seed", SEED_MIN, SEED_MAX),
    ):
        if out.get(key) is not None:
            _int_between((key,), out[key], low, high)
    for key in ("presence_penalty", "frequency_penalty"):
        if out.get(key) is not None:
            _number_between((key,), out[key], PENALTY_MIN, PENALTY_MAX)
    if out.get("logit_bias") is not None:
        _logit_bias(out["logit_bias"])
    if "temperature" in out:
        _number_between(("temperature",), out["temperature"], 0, 2)
    if "top_p" in out:
        _number_between(("top_p",), out["top_p"], 0, 1)
    if "stop" in out:
        _stop(out["stop"])
    if "tools" in out:
        out["tools"] = _tools(out["tools"], limits)
    if "tool_choice" in out:
        _tool_choice(out["tool_choice"])
    if "reasoning_effort" in out and out["reasoning_effort"] not in REASONING_EFFORTS:
        fail(
            ("reasoning_effort",),
            f"must be one of {', '.join(REASONING_EFFORTS)}, got {show(out['reasoning_effort'])}",
        )
    if "user" in out and not isinstance(out["user"], str):
        wrong_type(("user",), "a string", out["user"])
    if "response_format" in out:
        response_format = out["response_format"]
        if not isinstance(response_format, dict):
            wrong_type(
                ("response_format",), 'an object such as {"type": "json_object"}', response_format
            )
        if "type" not in response_format:
            missing(("response_format", "type"), 'e.g. "text", "json_object" or "json_schema"')
        if not isinstance(response_format["type"], str):
            wrong_type(("response_format", "type"), "a string", response_format["type"])
    return out


def _int_between(path: Path, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        wrong_type(path, "an integer" if low < 0 else f"an integer >= {low}", value)
    if value < low:
        fail(path, f"must be an integer >= {low}, got {show(value)}")
    if value > high:
        fail(path, f"must be an integer <= {high}, got {show(value)}")


def _logit_bias(bias: object) -> None:
    if not isinstance(bias, dict):
        wrong_type(("logit_bias",), 'an object of token ids to biases, e.g. {"50256": -100}', bias)
    for token, value in bias.items():
        _number_between(("logit_bias", token), value, LOGIT_BIAS_MIN, LOGIT_BIAS_MAX)


def _number_between(path: Path, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        wrong_type(path, f"a number between {low} and {high}", value)
    if not low <= value <= high:
        fail(path, f"must be a number between {low} and {high}, got {show(value)}")


def _stop(stop: object) -> None:
    if isinstance(stop, str):
        return
    if not isinstance(stop, list):
        wrong_type(("stop",), f"a string or an array of up to {MAX_STOP_SEQUENCES} strings", stop)
    if len(stop) > MAX_STOP_SEQUENCES:
        fail(
            ("stop",),
            f"may hold at most {MAX_STOP_SEQUENCES} sequences, got {len(stop)}",
            "array_above_max_length",
        )
    for index, item in enumerate(stop):
        if not isinstance(item, str):
            wrong_type(("stop", index), "a string", item)


# --- messages ---


def _messages(messages: object, limits: RequestLimits) -> list[dict[str, Any]]:
    if messages is None:
        missing(("messages",), 'send the conversation, e.g. [{"role": "user", "content": "Hello"}]')
    if not isinstance(messages, list):
        wrong_type(("messages",), "an array of message objects", messages)
    if not messages:
        fail(
            ("messages",),
            'must contain at least one message, e.g. {"role": "user", "content": "Hello"}',
            "empty_array",
        )
    if len(messages) > limits.max_messages:
        fail(
            ("messages",),
            f"has {len(messages)} messages; this proxy accepts at most {limits.max_messages} "
            "(max_messages)",
            "array_above_max_length",
        )
    return [_message(index, message) for index, message in enumerate(messages)]


def _message(index: int, message: object) -> dict[str, Any]:
    path: Path = ("messages", index)
    if not isinstance(message, dict):
        wrong_type(path, 'an object such as {"role": "user", "content": "Hello"}', message)
    role = message.get("role")
    if role is None:
        missing((*path, "role"), f"one of {', '.join(ROLES)}")
    if role not in ROLES:
        fail((*path, "role"), f"must be one of {', '.join(ROLES)}, got {show(role)}")
    if role == "assistant" and "tool_calls" in message and message["tool_calls"] is None:
        message = {k: v for k, v in message.items() if k != "tool_calls"}

    content = message.get("content")
    if content is None:
        if role != "assistant":
            missing(
                (*path, "content"),
                f"a {role} message needs content (a string or an array of parts)",
            )
    elif isinstance(content, list):
        for part_index, part in enumerate(content):
            _part((*path, "content", part_index), part)
    elif not isinstance(content, str):
        wrong_type((*path, "content"), "a string or an array of content parts", content)

    if "name" in message and message["name"] is not None and not isinstance(message["name"], str):
        wrong_type((*path, "name"), "a string", message["name"])
    if role == "assistant" and "tool_calls" in message:
        _tool_calls((*path, "tool_calls"), message["tool_calls"])
    if role == "tool":
        call_id = message.get("tool_call_id")
        if call_id is None:
            missing((*path, "tool_call_id"), "the id of the tool call this message answers")
        if not isinstance(call_id, str) or not call_id:
            wrong_type(
                (*path, "tool_call_id"),
                "the id (a non-empty string) of the tool call it answers",
                call_id,
            )
    return message


def _part(path: Path, part: object) -> None:
    if not isinstance(part, dict):
        wrong_type(path, 'a content part object such as {"type": "text", "text": "Hello"}', part)
    kind = part.get("type")
    if kind is None:
        missing((*path, "type"), 'e.g. "text" or "image_url"')
    if not isinstance(kind, str):
        wrong_type((*path, "type"), 'a string such as "text" or "image_url"', kind)
    if kind == "text":
        if "text" not in part:
            missing((*path, "text"), "a text part carries its text")
        if not isinstance(part["text"], str):
            wrong_type((*path, "text"), "a string", part["text"])
    elif kind == "image_url":
        image = part.get("image_url")
        if image is None:
            missing((*path, "image_url"), '{"url": "https://... or data:image/png;base64,..."}')
        if not isinstance(image, dict):
            wrong_type((*path, "image_url"), 'an object such as {"url": "https://..."}', image)
        if "url" not in image:
            missing((*path, "image_url", "url"), "an https:// URL or a data: URL")
        if not isinstance(image["url"], str):
            wrong_type(
                (*path, "image_url", "url"), "a string (an https:// or data: URL)", image["url"]
            )
        if "detail" in image and not isinstance(image["detail"], str):
            wrong_type(
                (*path, "image_url", "detail"),
                'a string such as "auto", "low" or "high"',
                image["detail"],
            )


def _tool_calls(path: Path, calls: object) -> None:
    if not isinstance(calls, list):
        wrong_type(path, "an array of tool calls", calls)
    for index, call in enumerate(calls):
        here = (*path, index)
        if not isinstance(call, dict):
            wrong_type(
                here,
                'an object {"id", "type": "function", "function": {"name", "arguments"}}',
                call,
            )
        if "id" not in call:
            missing((*here, "id"), "the tool call's id, which the tool message answers")
        if not isinstance(call["id"], str):
            wrong_type((*here, "id"), "a string", call["id"])
        if "type" not in call:
            missing((*here, "type"), '"function"')
        if call["type"] != "function":
            fail((*here, "type"), f'must be "function", got {show(call["type"])}')
        function = call.get("function")
        if function is None:
            missing((*here, "function"), '{"name": ..., "arguments": "{...}"}')
        if not isinstance(function, dict):
            wrong_type(
                (*here, "function"), 'an object {"name": ..., "arguments": "{...}"}', function
            )
        for key in ("name", "arguments"):
            if key not in function:
                missing((*here, "function", key), "a string" if key == "name" else "a JSON string")
            if not isinstance(function[key], str):
                expected = "a string" if key == "name" else 'a string of JSON (e.g. "{}")'
                wrong_type((*here, "function", key), expected, function[key])


# --- tools ---


def _tools(tools: object, limits: RequestLimits) -> list[Any]:
    if not isinstance(tools, list):
        wrong_type(("tools",), "an array of tools", tools)
    if len(tools) > limits.max_tools:
        fail(
            ("tools",),
            f"has {len(tools)} tools; this proxy accepts at most {limits.max_tools} (max_tools)",
            "array_above_max_length",
        )
    return [_tool(index, tool) for index, tool in enumerate(tools)]


def _tool(index: int, tool: object) -> dict[str, Any]:
    path: Path = ("tools", index)
    example = '{"type": "function", "function": {"name": ..., "parameters": {...}}}'
    if not isinstance(tool, dict):
        wrong_type(path, f"an object {example}", tool)
    if "type" not in tool:
        missing((*path, "type"), '"function"')
    if tool["type"] != "function":
        fail(
            (*path, "type"),
            f'must be "function" (the only tool type this proxy serves), got {show(tool["type"])}',
        )
    function = tool.get("function")
    if function is None:
        missing((*path, "function"), example)
    if not isinstance(function, dict):
        wrong_type(
            (*path, "function"), '{"name": ..., "description": ..., "parameters": {...}}', function
        )
    here = (*path, "function")
    if "name" not in function:
        missing((*here, "name"), "the function's name")
    if not isinstance(function["name"], str) or not function["name"]:
        wrong_type((*here, "name"), "a non-empty string", function["name"])
    if any(function.get(key, 0) is None for key in ("description", "parameters", "strict")):
        function = {
            k: v
            for k, v in function.items()
            if not (k in ("description", "parameters", "strict") and v is None)
        }
        tool = {**tool, "function": function}
    if "description" in function and not isinstance(function["description"], str):
        wrong_type((*here, "description"), "a string", function["description"])
    if "parameters" in function and not isinstance(function["parameters"], dict):
        wrong_type((*here, "parameters"), "a JSON Schema object", function["parameters"])
    if "strict" in function and not isinstance(function["strict"], bool):
        wrong_type((*here, "strict"), "true or false", function["strict"])
    return tool


def _tool_choice(choice: object) -> None:
    path: Path = ("tool_choice",)
    expected = '"none", "auto", "required" or {"type": "function", "function": {"name": ...}}'
    if isinstance(choice, str):
        if choice not in TOOL_CHOICE_MODES:
            fail(path, f"must be {expected}, got {show(choice)}")
        return
    if not isinstance(choice, dict):
        wrong_type(path, expected, choice)
    if choice.get("type") != "function":
        fail((*path, "type"), f'must be "function", got {show(choice.get("type"))}')
    function = choice.get("function")
    if not isinstance(function, dict):
        if function is None:
            missing((*path, "function"), '{"name": ...} naming one of the tools')
        wrong_type((*path, "function"), '{"name": ...}', function)
    if not isinstance(function.get("name"), str) or not function["name"]:
        if function.get("name") is None:
            missing((*path, "function", "name"), "the name of one of the tools")
        wrong_type((*path, "function", "name"), "a non-empty string", function.get("name"))

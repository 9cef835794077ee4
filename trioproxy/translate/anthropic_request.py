"""OpenAI Chat Completions request -> Anthropic Messages request body (MAPPING.md A).

Stage: translate (pure), called by `AnthropicDialect.build_request` after validation and routing.
`translate_request(body, target)` returns the Messages API body as a dict; it never performs IO.

Invariants:
- Only what MAPPING.md A maps is forwarded. Fields listed as dropped (P-A7, P-A8) and every field
  this module does not know are left out, so nothing unexpected reaches the upstream.
- Features with no Anthropic equivalent are refused before any upstream is contacted:
  `UntranslatableRequest` (400, code `unsupported_parameter`) for `n > 1`, `logprobs`, audio,
  `json_object` on a model with `json_mode = off` (or combined with what its mode cannot carry),
  a prefill with thinking; `ClientError` (400) for malformed values (a bad data URL, tool-call
  arguments that are not a JSON object). Both name the field in `param`.
- `response_format: {"type": "json_object"}` follows the model's `json_mode` (see "JSON mode"
  below and docs/translation-anthropic.md); the answer side (anthropic_response.py,
  anthropic_stream.py) turns the `JSON_TOOL` call back into content and checks it.
- Never raises anything but `ClientError` subclasses, whatever the body holds (validation
  guarantees the shapes listed in BRIEF.md, but this module re-checks every value it reads).
- Deterministic: the same body and target always give the same upstream body (tool ids are
  rewritten with a hash of the id, not a counter or a random value).

JSON mode (issue 20). OpenAI's `json_object` promises content that parses as a JSON object.
Anthropic has no such switch, and its two nearest features cannot express it:
- structured outputs (`output_config.format` json_schema, GA; formerly `output_format` with
  `anthropic-beta: structured-outputs-2025-11-13`) require `additionalProperties: false` on every
  object ("For 'object' type, 'additionalProperties' must be explicitly set to false"; the
  anthropic SDK's `transform_schema` forces it too), so no schema accepts *any* object;
- an assistant prefill of `{` is refused by Claude Opus 4.6 / Sonnet 4.6 and later ("Prefilling
  assistant messages is not supported for this model") and by every model with thinking on [S12].
So `json_mode = tool` (the default) uses Anthropic's documented JSON-through-tools pattern
(https://docs.anthropic.com/en/docs/build-with-claude/tool-use, "JSON mode"): one tool,
`JSON_TOOL`, whose `input_schema` is `{"type": "object"}`, forced with `tool_choice`; the API
returns its input as a parsed JSON object, which becomes the message content. Forcing a tool is
not allowed with thinking [S25], and the forced call would shut out the client's own tools, so
those combinations are refused (a thinking default of the model is switched off instead).
`json_mode = instruction` adds a system instruction and no prefill (see above); the answer is
checked, since nothing upstream guarantees it. `json_mode = off` keeps the 400.

Theory of operation (MAPPING.md A.2, "order matters"): each chat message becomes either system
blocks (system/developer, hoisted in order) or one turn `(role, blocks)` (user, assistant, tool ->
user). Empty text blocks and then empty turns are dropped (A.2.5), consecutive same-role turns are
merged with `tool_result` blocks first (A.2.6), and a turn that is a single text block is sent as
a plain string (the `system` field likewise), which is what the fixtures show.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any

from trioproxy.errors import ClientError, UntranslatableRequest

if TYPE_CHECKING:
    from trioproxy.translate.base import JSONObject, Target

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "IMAGE_MEDIA_TYPES",
    "JSON_INSTRUCTION",
    "JSON_TOOL",
    "THINKING_BUDGETS",
    "sanitize_tool_id",
    "translate_request",
]

# P-A2: Anthropic requires max_tokens; LiteLLM's DEFAULT_ANTHROPIC_CHAT_MAX_TOKENS [S14].
DEFAULT_MAX_TOKENS = 4096

# P-A5 (tables/reasoning_effort.json): LiteLLM's DEFAULT_REASONING_EFFORT_*_THINKING_BUDGET [S14],
# with `minimal` raised to Anthropic's floor ("Must be >=1024 and less than max_tokens" [S7
# thinking_config_enabled_param.py]). `none` turns thinking off explicitly.
THINKING_BUDGETS: dict[str, int] = {
    "minimal": 1024,
    "low": 1024,
    "medium": 2048,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}

# A.2.2: the media types of Anthropic's base64 image source [S7 base64_image_source_param.py].
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# A.3 / P-A11: with thinking on, top_p must lie between 0.95 and 1 [S12].
_THINKING_TOP_P = (0.95, 1.0)

# A.2.8: tool_use ids must match ^[a-zA-Z0-9_-]+$ [S20].
_TOOL_ID_OK = re.compile(r"[A-Za-z0-9_-]+")
_TOOL_ID_BAD_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_TOOL_ID_HASH_CHARS = 12  # 48 bits of sha256: distinct foreign ids stay distinct in practice

_TOOL_CHOICE = {"auto": "auto", "none": "none", "required": "any"}  # tables/tool_choice.json

# JSON mode (module docstring). The tool's name is reserved: a client tool of that name is
# refused, so that the answer side can recognise the call by its name alone.
JSON_TOOL = "trioproxy_json_answer"
_JSON_TOOL_SPEC: JSONObject = {
    "name": JSON_TOOL,
    "description": (
        "Give your complete answer by calling this tool once. Its input is the JSON object "
        "the user asked for and is returned to them verbatim, so put everything in it."
    ),
    "input_schema": {"type": "object"},  # any JSON object, with any keys
}
JSON_INSTRUCTION = (
    "Respond with a single JSON object and nothing else: no text before or after it, no "
    "Markdown code fence. Your whole reply must parse as a JSON object ({...})."
)


def translate_request(body: JSONObject, target: Target) -> JSONObject:
    """The Messages API body for a validated OpenAI chat request (MAPPING.md A.1-A.3).

    Raises:
        UntranslatableRequest: a feature Anthropic has no equivalent for (param names it).
        ClientError: a value that cannot be translated as given (param names it).
    """
    if not isinstance(body, dict):
        raise ClientError("the request body must be a JSON object")
    _refuse_unsupported(body)

    json_mode = _json_mode(body, target)
    thinking = _thinking(body, target)
    thinking_on = thinking is not None and thinking["type"] == "enabled"
    if json_mode == "tool" and thinking_on:
        if body.get("reasoning_effort") is not None:
            raise UntranslatableRequest(
                'response_format {"type": "json_object"} forces a tool call on this model '
                "(json_mode = tool), which Anthropic does not allow with extended thinking: "
                'set reasoning_effort to "none", or set json_mode = instruction for the model',
                param="reasoning_effort",
            )
        thinking, thinking_on = None, False  # the model's default thinking yields to JSON mode
    system, messages = _convert_messages(body.get("messages"), target.defaults.system_prompt)
    if json_mode == "instruction":
        system = _append_system(system, JSON_INSTRUCTION)
    if thinking_on and messages[-1]["role"] == "assistant":
        # A.2.7 / P-A10: a final assistant message is a prefill, which extended thinking
        # does not allow [S12]; refuse rather than let the upstream answer 400 for it.
        by_default = "" if body.get("reasoning_effort") else " (this model thinks by default)"
        raise UntranslatableRequest(
            "a final assistant message (a prefill) cannot be combined with extended thinking on "
            "Anthropic models: remove the trailing assistant message or set reasoning_effort "
            f'to "none"{by_default}',
            param=f"messages[{_last_index(body['messages'], 'assistant')}]",
        )

    out: JSONObject = {"model": target.upstream_model}
    max_tokens = _max_tokens(body, target)
    if thinking is not None:
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and max_tokens <= budget:
            # P-A2: budget_tokens must stay below max_tokens (thinking counts toward it [S7]),
            # so the client's max_tokens is added on top of the budget.
            max_tokens += budget
    out["max_tokens"] = max_tokens
    if system is not None:
        out["system"] = system
    out["messages"] = messages
    if thinking is not None:
        out["thinking"] = thinking

    _sampling(body, out, thinking_on=thinking_on)
    _tools(body, out, thinking_on=thinking_on)
    if json_mode == "tool":
        if out.get("tools"):
            raise UntranslatableRequest(
                'response_format {"type": "json_object"} cannot be combined with tools on this '
                "model (json_mode = tool answers through a tool of its own): drop the tools, "
                "or set json_mode = instruction for the model",
                param="tools",
            )
        out["tools"] = [_JSON_TOOL_SPEC]
        # One forced call: the answer is that call's input (module docstring, "JSON mode").
        out["tool_choice"] = {
            "type": "tool",
            "name": JSON_TOOL,
            "disable_parallel_tool_use": True,
        }

    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise ClientError("user must be a string", param="user")
        if user:
            out["metadata"] = {"user_id": user}  # A.1

    output_format = _response_format(body.get("response_format"))
    if output_format is not None:
        out["output_config"] = {"format": output_format}  # P-A6

    if body.get("stream") is True:  # A.1: `false` is the same as absent
        out["stream"] = True
    return out


def sanitize_tool_id(tool_id: str) -> str:
    """A tool-call id as Anthropic accepts it (A.2.8), identical for tool_use and tool_result.

    Ids that already match `^[a-zA-Z0-9_-]+$` (Anthropic's `toolu_...`, OpenAI's `call_...`) are
    kept. Any other id has each disallowed character replaced by `_` and a short hash of the
    original appended, so that two foreign ids differing only in those characters stay distinct.

    >>> sanitize_tool_id("call_abc")
    'call_abc'
    >>> sanitize_tool_id("functions.get_weather:0")
    'functions_get_weather_0_79ac1aaab216'
    """
    if _TOOL_ID_OK.fullmatch(tool_id):
        return tool_id
    digest = hashlib.sha256(tool_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{_TOOL_ID_BAD_CHAR.sub('_', tool_id)}_{digest[:_TOOL_ID_HASH_CHARS]}"


# --- top-level fields ------------------------------------------------------------------------


def _refuse_unsupported(body: JSONObject) -> None:
    n = body.get("n")
    if n is not None and n != 1:  # A.1: no way to ask Anthropic for several choices
        raise UntranslatableRequest(
            "n > 1 is not supported for Anthropic models: send one request per choice",
            param="n",
        )
    if body.get("logprobs") is True:  # P-A7: Anthropic returns no log probabilities
        raise UntranslatableRequest(
            "logprobs is not supported for Anthropic models", param="logprobs"
        )
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:  # P-A7
        raise UntranslatableRequest(
            "audio output is not supported for Anthropic models", param="modalities"
        )
    if body.get("audio") is not None:  # P-A7
        raise UntranslatableRequest(
            "audio output is not supported for Anthropic models", param="audio"
        )


def _thinking(body: JSONObject, target: Target) -> JSONObject | None:
    """`thinking` from the client's reasoning_effort, else the model's default (P-A5)."""
    effort = body.get("reasoning_effort")
    source = "reasoning_effort"
    if effort is None:
        effort = target.defaults.reasoning_effort
        source = "the model's default reasoning_effort"
    if effort is None:
        return None
    if effort == "none":
        return {"type": "disabled"}
    if not isinstance(effort, str) or effort not in THINKING_BUDGETS:
        allowed = ", ".join(["none", *THINKING_BUDGETS])
        raise ClientError(f"{source} must be one of {allowed}", param="reasoning_effort")
    return {"type": "enabled", "budget_tokens": THINKING_BUDGETS[effort]}


def _max_tokens(body: JSONObject, target: Target) -> int:
    # A.1: max_completion_tokens ?? max_tokens, then the model's default, then P-A2's 4096.
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise ClientError(f"{name} must be an integer >= 1", param=name)
        return int(value)
    default = target.defaults.max_tokens
    return default if default is not None and default >= 1 else DEFAULT_MAX_TOKENS


def _sampling(body: JSONObject, out: JSONObject, *, thinking_on: bool) -> None:
    temperature = body.get("temperature")
    if temperature is not None:
        if not _is_number(temperature):
            raise ClientError("temperature must be a number", param="temperature")
        if not thinking_on:  # P-A11: thinking is incompatible with temperature changes [S12]
            out["temperature"] = min(temperature, 1.0)  # P-A3: Anthropic's range is 0-1
    top_p = body.get("top_p")
    if top_p is not None:
        if not _is_number(top_p):
            raise ClientError("top_p must be a number", param="top_p")
        if thinking_on:  # P-A11: with thinking, top_p only between 0.95 and 1 [S12]
            low, high = _THINKING_TOP_P
            top_p = min(max(top_p, low), high)
        out["top_p"] = top_p  # P-A4: forwarded as given, even beside temperature
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list):
        if not all(isinstance(item, str) for item in stop):
            raise ClientError("stop must be a string or a list of strings", param="stop")
        if stop:
            out["stop_sequences"] = list(stop)
    elif stop is not None:
        raise ClientError("stop must be a string or a list of strings", param="stop")


def _tools(body: JSONObject, out: JSONObject, *, thinking_on: bool) -> None:
    tools = body.get("tools")
    if tools is None or tools == []:
        # Without tools, tool_choice and parallel_tool_calls mean nothing; OpenAI itself rejects
        # them there, and Anthropic's tool_choice would need tools. Dropped.
        return
    if not isinstance(tools, list):
        raise ClientError("tools must be an array", param="tools")
    out["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]

    choice = _tool_choice(body.get("tool_choice"))
    if thinking_on and choice is not None and choice["type"] in ("any", "tool"):
        # P-A11: "Thinking may not be enabled when tool_choice forces tool use" [S25]; the
        # forced choice is downgraded to auto rather than refused.
        choice = {"type": "auto"}
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise ClientError("parallel_tool_calls must be a boolean", param="parallel_tool_calls")
    if parallel is False:
        # A.1: disable_parallel_tool_use lives on a tool_choice object (auto when absent) and
        # is not defined on {type: none} (tables/tool_choice.json).
        choice = choice if choice is not None else {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None:
        out["tool_choice"] = choice


def _tool(tool: Any, i: int) -> JSONObject:
    param = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise ClientError('each tool must be {"type": "function", "function": {...}}', param=param)
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ClientError("each tool needs function.name", param=f"{param}.function.name")
    out: JSONObject = {"name": function["name"]}
    description = function.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise ClientError(
                "function.description must be a string", param=f"{param}.function.description"
            )
        out["description"] = description
    parameters = function.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}  # A.1: input_schema is required
    elif not isinstance(parameters, dict):
        raise ClientError(
            "function.parameters must be a JSON Schema object",
            param=f"{param}.function.parameters",
        )
    out["input_schema"] = parameters  # `strict` has no Anthropic equivalent: dropped (A.1)
    if function["name"] == JSON_TOOL:
        raise ClientError(
            f"the tool name {JSON_TOOL!r} is reserved by trioproxy's JSON mode; rename the tool",
            param=f"{param}.function.name",
        )
    return out


def _tool_choice(choice: Any) -> JSONObject | None:
    # tables/tool_choice.json [S7 tool_choice_*_param.py]
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _TOOL_CHOICE:
        return {"type": _TOOL_CHOICE[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
    raise ClientError(
        'tool_choice must be "none", "auto", "required" or '
        '{"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


def _response_format(response_format: Any) -> JSONObject | None:
    # P-A6: json_schema -> output_config.format; json_object has no Anthropic equivalent; text
    # is the default anyway. Whether the target model supports structured outputs is for the
    # upstream to say (its 400 passes through).
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise ClientError("response_format must be an object", param="response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ClientError(
                "response_format.json_schema.schema must be a JSON Schema object",
                param="response_format.json_schema.schema",
            )
        return {"type": "json_schema", "schema": schema}
    if kind == "json_object":
        return None  # JSON mode: _json_mode() decides
    raise ClientError(
        'response_format.type must be "text", "json_schema" or "json_object"',
        param="response_format.type",
    )


def _json_mode(body: JSONObject, target: Target) -> str | None:
    """`tool` or `instruction` when the client asked for json_object, else None."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_object":
        return None
    mode = target.defaults.json_mode
    if mode in ("tool", "instruction"):
        return mode
    raise UntranslatableRequest(
        'response_format {"type": "json_object"} is turned off for this model (json_mode = '
        'off): use {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}, '
        "or ask for JSON in the prompt",
        param="response_format",
    )


def _append_system(system: str | list[JSONObject] | None, text: str) -> str | list[JSONObject]:
    # After the client's own system text, so the format requirement is what the model reads last.
    if system is None:
        return text
    blocks = [_text(system)] if isinstance(system, str) else list(system)
    return [*blocks, _text(text)]


# --- messages (A.2) -------------------------------------------------------------------------


def _convert_messages(
    messages: Any, system_prompt: str | None
) -> tuple[str | list[JSONObject] | None, list[JSONObject]]:
    """(system, messages) for the Messages API; A.2 steps 1-6."""
    if not isinstance(messages, list) or not messages:
        raise ClientError("messages must be a non-empty array", param="messages")
    # Target.defaults.system_prompt is prepended to the client's system messages.
    system: list[JSONObject] = [_text(system_prompt)] if system_prompt else []
    turns: list[tuple[str, list[JSONObject]]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ClientError("each message must be an object", param=f"messages[{i}]")
        role = message.get("role")
        match role:
            case "system" | "developer":
                # A.2.1 / P-A1 / P-A9: hoisted in order, one block per text; a mid-conversation
                # system message loses its position (lossy).
                system += _text_blocks(message.get("content"), f"messages[{i}].content")
            case "user":
                turns.append(("user", _user_blocks(message.get("content"), i)))
            case "assistant":
                turns.append(("assistant", _assistant_blocks(message, i)))
            case "tool":
                turns.append(("user", [_tool_result(message, i)]))
            case _:
                raise ClientError(
                    "role must be one of system, developer, user, assistant, tool",
                    param=f"messages[{i}].role",
                )

    merged: list[tuple[str, list[JSONObject]]] = []
    for role, blocks in turns:
        if not blocks:
            continue  # A.2.5: a message left with no blocks is dropped
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(blocks)  # A.2.6: consecutive same-role turns are merged
        else:
            merged.append((role, list(blocks)))
    if not merged:
        raise ClientError(
            "messages must contain at least one user or assistant message with content",
            param="messages",
        )
    out = []
    for role, blocks in merged:
        if role == "user":
            # A.2.6 / H.22: every tool_result for the previous assistant turn comes first,
            # then the text of the user message(s) that followed.
            results = [b for b in blocks if b["type"] == "tool_result"]
            blocks = results + [b for b in blocks if b["type"] != "tool_result"]
        out.append({"role": role, "content": _collapse(blocks)})
    return (_collapse(system) if system else None), out


def _collapse(blocks: list[JSONObject]) -> str | list[JSONObject]:
    # A single text block is sent as a plain string, which Anthropic treats the same
    # (P-A1: `system: "x"` == `[{"type":"text","text":"x"}]`); the fixtures use strings.
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"} and blocks[0]["type"] == "text":
        text: str = blocks[0]["text"]
        return text
    return blocks


def _text(text: str) -> JSONObject:
    return {"type": "text", "text": text}


def _text_blocks(content: Any, param: str, *, allow_refusal: bool = False) -> list[JSONObject]:
    """Text content (a string or `text` parts) as non-empty text blocks (A.2.5)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [_text(content)] if content else []
    if not isinstance(content, list):
        raise ClientError("content must be a string or an array of parts", param=param)
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks += _text_part(part, f"{param}[{j}]")
        elif kind == "refusal" and allow_refusal:
            continue  # A.2.3: assistant refusal parts are dropped
        else:
            raise ClientError(
                f"content part type {kind!r} is not allowed here; only text parts are",
                param=f"{param}[{j}]",
            )
    return blocks


def _text_part(part: JSONObject, param: str) -> list[JSONObject]:
    text = part.get("text")
    if not isinstance(text, str):
        raise ClientError("a text part needs a string text", param=f"{param}.text")
    return [_text(text)] if text else []  # A.2.5: Anthropic rejects empty text blocks [S19]


def _user_blocks(content: Any, i: int) -> list[JSONObject]:
    param = f"messages[{i}].content"
    if content is None or isinstance(content, str):
        return _text_blocks(content, param)
    if not isinstance(content, list):
        raise ClientError("content must be a string or an array of parts", param=param)
    blocks: list[JSONObject] = []
    for j, part in enumerate(content):
        part_param = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks += _text_part(part, part_param)
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), part_param))
        elif kind == "file":
            blocks.append(_document(part.get("file"), part_param))
        elif kind == "input_audio":
            raise UntranslatableRequest(
                "audio input is not supported for Anthropic models", param=part_param
            )
        else:
            raise ClientError(
                f"content part type {kind!r} is not supported; use text, image_url or file",
                param=part_param,
            )
    return blocks


def _image(image_url: Any, param: str) -> JSONObject:
    # A.2.2: data URLs become base64 sources, http(s) URLs url sources; `detail` is dropped.
    url = image_url.get("url") if isinstance(image_url, dict) else None
    url_param = f"{param}.image_url.url"
    if not isinstance(url, str):
        raise ClientError("an image_url part needs image_url.url", param=url_param)
    if url[:5].lower() == "data:":
        media_type, data = _data_url(url, url_param)
        if media_type not in IMAGE_MEDIA_TYPES:
            raise ClientError(
                f"image media type {media_type!r} is not supported by Anthropic models; "
                "use image/jpeg, image/png, image/gif or image/webp",
                param=url_param,
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url[:7].lower() == "http://" or url[:8].lower() == "https://":
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise ClientError(
        "image_url.url must be an http(s) URL or a base64 data URL (data:image/png;base64,...)",
        param=url_param,
    )


def _document(file: Any, param: str) -> JSONObject:
    # A.2.2: a PDF `file` part becomes a base64 document block. OpenAI file ids name files in
    # OpenAI's storage, which Anthropic cannot read.
    if not isinstance(file, dict):
        raise ClientError("a file part needs a file object", param=f"{param}.file")
    if file.get("file_data") is None and file.get("file_id") is not None:
        raise UntranslatableRequest(
            "file_id is not supported for Anthropic models: send the PDF inline as file_data "
            "(data:application/pdf;base64,...)",
            param=f"{param}.file.file_id",
        )
    data_param = f"{param}.file.file_data"
    file_data = file.get("file_data")
    if not isinstance(file_data, str) or file_data[:5].lower() != "data:":
        raise ClientError(
            "file.file_data must be a base64 data URL (data:application/pdf;base64,...)",
            param=data_param,
        )
    media_type, data = _data_url(file_data, data_param)
    if media_type != "application/pdf":
        raise UntranslatableRequest(
            f"file media type {media_type!r} is not supported for Anthropic models; "
            "only application/pdf is",
            param=data_param,
        )
    return {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": data},
    }


def _data_url(url: str, param: str) -> tuple[str, str]:
    """(media type, base64 payload) of `data:<media>[;params];base64,<payload>` (RFC 2397)."""
    header, comma, data = url[5:].partition(",")
    media_type, *params = header.split(";")
    if not comma or not media_type:
        raise ClientError(
            "malformed data URL: expected data:<media type>;base64,<data>", param=param
        )
    if "base64" not in (p.strip().lower() for p in params):
        raise ClientError(
            "data URLs must be base64-encoded (data:<media type>;base64,<data>)", param=param
        )
    return media_type.strip().lower(), data  # media types are case-insensitive (RFC 2045)


def _assistant_blocks(message: JSONObject, i: int) -> list[JSONObject]:
    # A.2.3: replayed thinking first, then text, then tool_use blocks. A bare reasoning_content
    # string has no signature, so it cannot be replayed and is dropped.
    blocks = _thinking_blocks(message.get("thinking_blocks"), f"messages[{i}].thinking_blocks")
    blocks += _text_blocks(message.get("content"), f"messages[{i}].content", allow_refusal=True)
    tool_calls = message.get("tool_calls")
    if tool_calls is None:
        return blocks
    if not isinstance(tool_calls, list):
        raise ClientError("tool_calls must be an array", param=f"messages[{i}].tool_calls")
    for k, call in enumerate(tool_calls):
        blocks.append(_tool_use(call, f"messages[{i}].tool_calls[{k}]"))
    return blocks


def _thinking_blocks(entries: Any, param: str) -> list[JSONObject]:
    """LiteLLM's `thinking_blocks` echoed by the client (A.2.3, B.3) as Anthropic blocks.

    Extra keys (e.g. an `index` a stream accumulator added) are ignored. A thinking block
    without a signature cannot be verified by Anthropic and is dropped, like bare
    `reasoning_content`.
    """
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ClientError("thinking_blocks must be an array", param=param)
    blocks: list[JSONObject] = []
    for k, entry in enumerate(entries):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind == "thinking":
            thinking, signature = entry.get("thinking"), entry.get("signature")
            if not isinstance(thinking, str) or not isinstance(signature, (str, type(None))):
                raise ClientError(
                    "a thinking block needs string thinking and signature",
                    param=f"{param}[{k}]",
                )
            if signature:
                blocks.append({"type": "thinking", "thinking": thinking, "signature": signature})
        elif kind == "redacted_thinking":
            data = entry.get("data")
            if not isinstance(data, str) or not data:
                raise ClientError(
                    "a redacted_thinking block needs its data string", param=f"{param}[{k}].data"
                )
            blocks.append({"type": "redacted_thinking", "data": data})
        else:
            raise ClientError(
                'thinking_blocks entries must have type "thinking" or "redacted_thinking"',
                param=f"{param}[{k}]",
            )
    return blocks


def _tool_use(call: Any, param: str) -> JSONObject:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(call.get("id"), str):
        raise ClientError("a tool call needs id and function", param=param)
    name, arguments = function.get("name"), function.get("arguments")
    if not isinstance(name, str):
        raise ClientError("a tool call needs function.name", param=f"{param}.function.name")
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        tool_input: Any = {}  # A.2.3: "" -> {}
    elif isinstance(arguments, str):
        try:
            tool_input = json.loads(arguments)
        except (ValueError, RecursionError):
            tool_input = None
    else:
        tool_input = None
    if not isinstance(tool_input, dict):
        raise ClientError(
            "function.arguments must be a JSON object encoded as a string, "
            'e.g. "{\\"city\\": \\"Oslo\\"}"',
            param=f"{param}.function.arguments",
        )
    return {
        "type": "tool_use",
        "id": sanitize_tool_id(call["id"]),
        "name": name,
        "input": tool_input,
    }


def _tool_result(message: JSONObject, i: int) -> JSONObject:
    # A.2.4: a tool message becomes a tool_result block (in a user turn, merged later).
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str):
        raise ClientError("a tool message needs tool_call_id", param=f"messages[{i}].tool_call_id")
    block: JSONObject = {"type": "tool_result", "tool_use_id": sanitize_tool_id(tool_call_id)}
    content = message.get("content")
    if isinstance(content, str):
        if content:  # an empty result is sent without content (it is optional upstream)
            block["content"] = content  # a string stays a string
    else:
        parts = _text_blocks(content, f"messages[{i}].content")
        if parts:
            block["content"] = parts
    return block


def _last_index(messages: list[Any], role: str) -> int:
    return max(i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == role)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

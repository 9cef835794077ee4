"""OpenAI Chat Completions request -> OpenAI Responses request body (MAPPING.md D).

Stage: translate (pure), called by `ResponsesDialect.build_request` after validation and
routing. `translate_request(body, target)` returns the Responses API body as a dict.

Invariants:
- Only what MAPPING.md D maps is forwarded; the fields it drops (P-D6: `seed`, penalties,
  `logit_bias`) and every field this module does not know are left out, so nothing unexpected
  reaches the upstream. `store` is `false` unless the client asked for `true` (P-D7).
- Features the Responses API does not have are refused before any upstream is contacted:
  `UntranslatableRequest` (400, `unsupported_parameter`) for `n > 1`, `stop` (P-D3), audio
  output and `input_audio` parts; `ClientError` (400) for values that cannot be sent, e.g. a
  `max_completion_tokens` below the API's minimum of 16 (P-D2, code
  `integer_below_min_value`, as the upstream itself would answer). Both name the field in
  `param`.
- Never raises anything but `ClientError` subclasses, whatever the body holds: validation
  guarantees the shapes listed in BRIEF.md, but every value read here is re-checked.
- Deterministic: the same body and target always give the same upstream body.

Theory of operation (D.1): messages map one to one, in order, onto `input` items; nothing is
merged or hoisted (Responses accepts consecutive same-role items and system / developer items
anywhere, P-D1). An assistant message becomes a message item for its text, then one
`function_call` item per tool call; a tool message becomes a `function_call_output` item.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioproxy.errors import ClientError, UntranslatableRequest

if TYPE_CHECKING:
    from trioproxy.translate.base import JSONObject, Target

__all__ = ["MIN_OUTPUT_TOKENS", "REASONING_EFFORTS", "translate_request"]

# H.20 / P-D2: the Responses API rejects max_output_tokens below 16 with
# `integer_below_min_value` [S22].
MIN_OUTPUT_TOKENS = 16

# The efforts validation accepts (validate.REASONING_EFFORTS); each is sent as given
# (tables/reasoning_effort.json `responses_reasoning`).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")

_TOOL_CHOICE_MODES = ("auto", "none", "required")  # tables/tool_choice.json: the same strings
_VERBOSITY = ("low", "medium", "high")  # Chat `verbosity` -> Responses `text.verbosity` [S4]
_MAX_TOP_LOGPROBS = 20  # "up to 20 of the most likely tokens" [S4 response_create_params.py]
# D: top-level fields with the same name and meaning in both APIs, and the type each must have.
_SAME_NAME: tuple[tuple[str, type, str], ...] = (
    ("user", str, "a string"),
    ("safety_identifier", str, "a string"),
    ("prompt_cache_key", str, "a string"),
    ("service_tier", str, "a string"),
)


def translate_request(body: JSONObject, target: Target) -> JSONObject:
    """The Responses API body for a validated OpenAI chat request (MAPPING.md D).

    Raises:
        UntranslatableRequest: a feature the Responses API has no equivalent for.
        ClientError: a value that cannot be translated as given (param names it).
    """
    if not isinstance(body, dict):
        raise ClientError("the request body must be a JSON object")
    _refuse_unsupported(body)

    out: JSONObject = {"model": target.upstream_model}
    system_prompt = target.defaults.system_prompt
    if system_prompt:
        # The model's default system prompt goes first: `instructions` is "a system (or
        # developer) message inserted into the model's context" ahead of `input` [S4].
        out["instructions"] = system_prompt
    out["input"] = _input(body.get("messages"))

    effort = _effort(body, target)
    reasoning_on = effort is not None and effort != "none"
    _sampling(body, out, reasoning_on=reasoning_on)
    _tools(body, out)
    max_output_tokens = _max_output_tokens(body, target)
    if max_output_tokens is not None:
        out["max_output_tokens"] = max_output_tokens
    if effort == "none":
        out["reasoning"] = {"effort": "none"}  # tables/reasoning_effort.json: no summary
    elif effort is not None:
        # P-D5: summary "auto" so that reasoning text exists to stream as reasoning_content.
        out["reasoning"] = {"effort": effort, "summary": "auto"}
    text = _text_config(body)
    if text:
        out["text"] = text
    _logprobs(body, out, reasoning_on=reasoning_on)

    for name, kind, what in _SAME_NAME:  # D: same name, same meaning
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, kind):
            raise ClientError(f"{name} must be {what}", param=name)
        out[name] = value
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ClientError("metadata must be an object of string values", param="metadata")
        out["metadata"] = metadata

    if body.get("stream") is True:  # `false` is the same as absent
        out["stream"] = True
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise ClientError("store must be true or false", param="store")
    out["store"] = store is True  # P-D7: stateless unless the client asks (Responses stores)
    return out


# --- top-level fields ------------------------------------------------------------------------


def _refuse_unsupported(body: JSONObject) -> None:
    n = body.get("n")
    if n is not None and n != 1:  # D: no way to ask the Responses API for several choices
        raise UntranslatableRequest(
            "n > 1 is not supported for OpenAI Responses models: send one request per choice",
            param="n",
        )
    stop = body.get("stop")
    if stop is not None and stop != []:
        # P-D3: the Responses API has no stop sequences [S4 response_create_params.py]; an
        # answer that runs past them would be wrong, so refuse rather than drop.
        raise UntranslatableRequest(
            "stop is not supported for OpenAI Responses models (the Responses API has no stop "
            "sequences): remove it, or cut the answer in your client",
            param="stop",
        )
    modalities = body.get("modalities")
    if isinstance(modalities, list) and "audio" in modalities:
        raise UntranslatableRequest(
            "audio output is not supported for OpenAI Responses models", param="modalities"
        )
    if body.get("audio") is not None:
        raise UntranslatableRequest(
            "audio output is not supported for OpenAI Responses models", param="audio"
        )


def _effort(body: JSONObject, target: Target) -> str | None:
    """The client's reasoning_effort, else the model's default (D, P-D5)."""
    effort = body.get("reasoning_effort")
    source = "reasoning_effort"
    if effort is None:
        effort = target.defaults.reasoning_effort
        source = "the model's default reasoning_effort"
    if effort is None:
        return None
    if not isinstance(effort, str) or effort not in REASONING_EFFORTS:
        raise ClientError(
            f"{source} must be one of {', '.join(REASONING_EFFORTS)}", param="reasoning_effort"
        )
    return effort


def _sampling(body: JSONObject, out: JSONObject, *, reasoning_on: bool) -> None:
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_number(value):
            raise ClientError(f"{name} must be a number", param=name)
        # P-D4: reasoning models reject temperature / top_p, so they are dropped when reasoning
        # is on. With effort "none" they are kept: that is how the GPT-5.x models accept them.
        if not reasoning_on:
            out[name] = value


def _max_output_tokens(body: JSONObject, target: Target) -> int | None:
    # D: max_completion_tokens ?? max_tokens ?? the model's default; it includes reasoning
    # tokens [S4]. None: the upstream's own default.
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise ClientError(f"{name} must be an integer >= 1", param=name)
        if value < MIN_OUTPUT_TOKENS:
            # P-D2 / H.20: refused here with the upstream's own code rather than sent to fail.
            raise ClientError(
                f"{name} must be at least {MIN_OUTPUT_TOKENS} for OpenAI Responses models "
                f"(got {value})",
                param=name,
                code="integer_below_min_value",
            )
        return int(value)
    default = target.defaults.max_tokens
    if default is None or default < 1:
        return None
    # A configured default below the minimum is the operator's slip, not the client's fault:
    # raised to the minimum rather than failing every request.
    return max(default, MIN_OUTPUT_TOKENS)


def _tools(body: JSONObject, out: JSONObject) -> None:
    tools = body.get("tools")
    if tools is None or tools == []:
        # Without tools, tool_choice and parallel_tool_calls mean nothing (OpenAI's Chat API
        # rejects them there); dropped, as for Anthropic.
        return
    if not isinstance(tools, list):
        raise ClientError("tools must be an array", param="tools")
    out["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is not None:
        out["tool_choice"] = _tool_choice(choice)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise ClientError(
                "parallel_tool_calls must be true or false", param="parallel_tool_calls"
            )
        out["parallel_tool_calls"] = parallel  # D: same field


def _tool(tool: Any, i: int) -> JSONObject:
    # D: {type, function: {name, description, parameters, strict}} is flattened.
    param = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise ClientError('each tool must be {"type": "function", "function": {...}}', param=param)
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ClientError("each tool needs function.name", param=f"{param}.function.name")
    out: JSONObject = {"type": "function", "name": function["name"]}
    description = function.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise ClientError(
                "function.description must be a string", param=f"{param}.function.description"
            )
        out["description"] = description
    parameters = function.get("parameters")
    if parameters is None:
        # Required (nullable) in Responses' FunctionToolParam [S4]; Chat's "no parameters" is an
        # empty object schema, which every model accepts.
        parameters = {"type": "object", "properties": {}}
    elif not isinstance(parameters, dict):
        raise ClientError(
            "function.parameters must be a JSON Schema object",
            param=f"{param}.function.parameters",
        )
    out["parameters"] = parameters
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise ClientError("function.strict must be true or false", param=f"{param}.function.strict")
    # H.19: Responses function tools default to strict, Chat tools to non-strict [S17]; an
    # absent `strict` is therefore sent as false, explicitly.
    out["strict"] = strict is True
    return out


def _tool_choice(choice: Any) -> Any:
    # tables/tool_choice.json: the modes are the same strings; a named function is flattened.
    if isinstance(choice, str) and choice in _TOOL_CHOICE_MODES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "function", "name": function["name"]}
    raise ClientError(
        'tool_choice must be "none", "auto", "required" or '
        '{"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


def _text_config(body: JSONObject) -> JSONObject:
    # D: response_format -> text.format (flattened), verbosity -> text.verbosity.
    text: JSONObject = {}
    response_format = body.get("response_format")
    if response_format is not None:
        text_format = _response_format(response_format)
        if text_format is not None:
            text["format"] = text_format
    verbosity = body.get("verbosity")
    if verbosity is not None:
        if verbosity not in _VERBOSITY:
            raise ClientError('verbosity must be "low", "medium" or "high"', param="verbosity")
        text["verbosity"] = verbosity
    return text


def _response_format(response_format: Any) -> JSONObject | None:
    if not isinstance(response_format, dict):
        raise ClientError("response_format must be an object", param="response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None  # the default anyway
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        # {type, json_schema: {name, schema, strict, description}} ->
        # {type: "json_schema", name, schema, strict, description} [S4].
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise ClientError(
                "response_format.json_schema must be an object with name and schema",
                param="response_format.json_schema",
            )
        name, schema = spec.get("name"), spec.get("schema")
        if not isinstance(name, str) or not name:
            raise ClientError(
                "response_format.json_schema.name must be a non-empty string",
                param="response_format.json_schema.name",
            )
        if not isinstance(schema, dict):
            raise ClientError(
                "response_format.json_schema.schema must be a JSON Schema object",
                param="response_format.json_schema.schema",
            )
        out: JSONObject = {"type": "json_schema", "name": name, "schema": schema}
        strict, description = spec.get("strict"), spec.get("description")
        if strict is not None:
            if not isinstance(strict, bool):
                raise ClientError(
                    "response_format.json_schema.strict must be true or false",
                    param="response_format.json_schema.strict",
                )
            out["strict"] = strict
        if description is not None:
            if not isinstance(description, str):
                raise ClientError(
                    "response_format.json_schema.description must be a string",
                    param="response_format.json_schema.description",
                )
            out["description"] = description
        return out
    raise ClientError(
        'response_format.type must be "text", "json_schema" or "json_object"',
        param="response_format.type",
    )


def _logprobs(body: JSONObject, out: JSONObject, *, reasoning_on: bool) -> None:
    # D: logprobs / top_logprobs -> include ["message.output_text.logprobs"] + top_logprobs.
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise ClientError("logprobs must be true or false", param="logprobs")
    top = body.get("top_logprobs")
    if top is not None and (not _is_int(top) or not 0 <= top <= _MAX_TOP_LOGPROBS):
        raise ClientError(
            f"top_logprobs must be an integer from 0 to {_MAX_TOP_LOGPROBS}", param="top_logprobs"
        )
    if logprobs is not True:
        return  # Chat ignores top_logprobs without logprobs: true
    # Reasoning models reject logprobs; like temperature (P-D4) they are then not asked for.
    if reasoning_on:
        return
    out["include"] = ["message.output_text.logprobs"]
    if top is not None:
        out["top_logprobs"] = top


# --- messages (D.1) --------------------------------------------------------------------------


def _input(messages: Any) -> list[JSONObject]:
    if not isinstance(messages, list) or not messages:
        raise ClientError("messages must be a non-empty array", param="messages")
    items: list[JSONObject] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ClientError("each message must be an object", param=f"messages[{i}]")
        role = message.get("role")
        param = f"messages[{i}].content"
        match role:
            case "system" | "developer":
                # P-D1: kept in place with the same role.
                items.append(
                    {"role": role, "content": _text_content(message.get("content"), param)}
                )
            case "user":
                items.append({"role": "user", "content": _user_content(message.get("content"), i)})
            case "assistant":
                items += _assistant_items(message, i)
            case "tool":
                items.append(_tool_output(message, i))
            case _:
                raise ClientError(
                    "role must be one of system, developer, user, assistant, tool",
                    param=f"messages[{i}].role",
                )
    if not items:
        raise ClientError(
            "messages must contain at least one message with content", param="messages"
        )
    return items


def _text_content(content: Any, param: str) -> str | list[JSONObject]:
    """System / developer content: a string stays a string, `text` parts become `input_text`."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ClientError("content must be a string or an array of text parts", param=param)
    parts: list[JSONObject] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else None
            raise ClientError(
                f"content part type {kind!r} is not allowed here; only text parts are",
                param=f"{param}[{j}]",
            )
        parts.append(_input_text(part, f"{param}[{j}]"))
    return parts


def _input_text(part: JSONObject, param: str) -> JSONObject:
    text = part.get("text")
    if not isinstance(text, str):
        raise ClientError("a text part needs a string text", param=f"{param}.text")
    return {"type": "input_text", "text": text}


def _user_content(content: Any, i: int) -> str | list[JSONObject]:
    param = f"messages[{i}].content"
    if isinstance(content, str):
        return content  # D.1: a string stays a string
    if not isinstance(content, list):
        raise ClientError("content must be a string or an array of parts", param=param)
    parts: list[JSONObject] = []
    for j, part in enumerate(content):
        part_param = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(_input_text(part, part_param))
        elif kind == "image_url":
            parts.append(_input_image(part.get("image_url"), part_param))
        elif kind == "file":
            parts.append(_input_file(part.get("file"), part_param))
        elif kind == "input_audio":
            # Responses message content is input_text | input_image | input_file [S4
            # response_input_message_content_list_param.py].
            raise UntranslatableRequest(
                "audio input is not supported for OpenAI Responses models", param=part_param
            )
        else:
            raise ClientError(
                f"content part type {kind!r} is not supported; use text, image_url or file",
                param=part_param,
            )
    return parts


def _input_image(image_url: Any, param: str) -> JSONObject:
    # D.1 / H.28: `detail` is required in Responses' input_image [S4
    # response_input_image_param.py]: the client's, else "auto" (Chat's default). The URL (an
    # http(s) URL or a data URL) is taken as it is: Responses accepts both.
    if not isinstance(image_url, dict) or not isinstance(image_url.get("url"), str):
        raise ClientError("an image_url part needs image_url.url", param=f"{param}.image_url.url")
    url: str = image_url["url"]
    detail = image_url.get("detail")
    if detail is None:
        detail = "auto"
    elif not isinstance(detail, str):
        raise ClientError("image_url.detail must be a string", param=f"{param}.image_url.detail")
    return {"type": "input_image", "image_url": url, "detail": detail}


def _input_file(file: Any, param: str) -> JSONObject:
    # D.1: Chat's {file: {file_data, file_id, filename}} -> input_file with the same fields
    # [S4 response_input_file_param.py]; file_data is the same base64 data URL in both.
    if not isinstance(file, dict):
        raise ClientError("a file part needs a file object", param=f"{param}.file")
    out: JSONObject = {"type": "input_file"}
    for key in ("file_id", "file_data", "filename"):
        value = file.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ClientError(f"file.{key} must be a string", param=f"{param}.file.{key}")
        out[key] = value
    if "file_id" not in out and "file_data" not in out:
        raise ClientError("a file part needs file.file_id or file.file_data", param=f"{param}.file")
    return out


def _assistant_items(message: JSONObject, i: int) -> list[JSONObject]:
    # D.1: the text first, as a message item, then one function_call item per tool call.
    # `reasoning_content` echoed back is dropped: Responses would need reasoning items
    # (ideally with encrypted_content), which a Chat client never has.
    items: list[JSONObject] = []
    text = _assistant_text(message.get("content"), f"messages[{i}].content")
    if text:
        items.append({"role": "assistant", "content": text})
    tool_calls = message.get("tool_calls")
    if tool_calls is None:
        return items
    if not isinstance(tool_calls, list):
        raise ClientError("tool_calls must be an array", param=f"messages[{i}].tool_calls")
    for k, call in enumerate(tool_calls):
        items.append(_function_call(call, f"messages[{i}].tool_calls[{k}]"))
    return items


def _assistant_text(content: Any, param: str) -> str:
    # Text parts are joined; `refusal` parts are dropped (as for Anthropic, A.2.3). An empty
    # text sends no message item (an assistant turn with only tool calls is the usual case).
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise ClientError("content must be a string or an array of text parts", param=param)
    texts: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(_input_text(part, f"{param}[{j}]")["text"])
        elif kind != "refusal":
            raise ClientError(
                f"content part type {kind!r} is not allowed here; only text parts are",
                param=f"{param}[{j}]",
            )
    return "".join(texts)


def _function_call(call: Any, param: str) -> JSONObject:
    # D.1 / H.17: the Chat tool-call id is the Responses `call_id` (the id the matching
    # function_call_output echoes); arguments are passed on unchanged.
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(call.get("id"), str):
        raise ClientError("a tool call needs id and function", param=param)
    name, arguments = function.get("name"), function.get("arguments")
    if not isinstance(name, str):
        raise ClientError("a tool call needs function.name", param=f"{param}.function.name")
    if arguments is None:
        arguments = ""
    if not isinstance(arguments, str):
        raise ClientError(
            "function.arguments must be a string", param=f"{param}.function.arguments"
        )
    return {"type": "function_call", "call_id": call["id"], "name": name, "arguments": arguments}


def _tool_output(message: JSONObject, i: int) -> JSONObject:
    # D.1: tool -> function_call_output; text parts are joined into the output string.
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str):
        raise ClientError("a tool message needs tool_call_id", param=f"messages[{i}].tool_call_id")
    content = message.get("content")
    param = f"messages[{i}].content"
    if content is None:
        output = ""
    elif isinstance(content, str):
        output = content
    else:
        parts = _text_content(content, param)
        output = parts if isinstance(parts, str) else "".join(p["text"] for p in parts)
    return {"type": "function_call_output", "call_id": tool_call_id, "output": output}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

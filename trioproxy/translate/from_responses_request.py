"""OpenAI Responses API request -> the neutral chat body (the `/v1/responses` face, inbound).

Stage: translate (pure), called by the Responses face before validation and routing.
`responses_request_to_chat(body)` returns a `ResponsesRequest`: the OpenAI Chat Completions body
every other part of trioproxy works on (`chat`, to be passed to `validate_chat_request`), plus
what the answer needs to repeat back (`echo`: the request parameters a Responses `response`
object carries) and whether the client asked for a stream.

Invariants:
- Stateless by design: every field that needs state kept on the server (`previous_response_id`,
  `conversation`, `store: true`, `background: true`, a stored `prompt`, `context_management`,
  `item_reference` input items, `file_id`s) is refused with `UntranslatableRequest` (400,
  `unsupported_parameter`) saying to send the full input instead. A half version (a store that
  is not shared across workers, or that forgets) would be worse than the 400 (issue 19).
- Every field is either mapped, accepted with a documented effect, or refused with a 400 naming
  it in `param`; an unknown field is a 400 `unknown_parameter`, as OpenAI itself answers. `null`
  for an optional field means absent (clients that serialise their own models send it).
- Never raises anything but `ClientError` subclasses, whatever the body holds; never a 500.
- Deterministic: the same body always gives the same result; the caller's dict is not changed.

Theory of operation: `input` items are read in order into chat messages. Message items map one to
one (`input_text` / `output_text` -> text parts, `input_image` -> `image_url`, `input_file` ->
`file`); a `function_call` item joins the assistant message just before it (so an answer's text
and its calls stay one assistant turn, MAPPING.md D.1 read backwards) or opens one; a
`function_call_output` item becomes a `tool` message; a `reasoning` item's text is held and
attached as `reasoning_content` to the next assistant message (the convention the chat upstreams
use for it, MAPPING.md B.3, G), and dropped if a user or tool turn comes first.

Sources: the request shapes are openai-python's `types/responses/response_create_params.py`,
`response_input_item_param.py`, `easy_input_message_param.py`, `function_tool_param.py`,
`response_input_image_param.py`, `response_input_file_param.py` (openai 3.57.0) and
https://platform.openai.com/docs/api-reference/responses/create ; the chat shapes are
`types/chat/completion_create_params.py`. docs/translation-responses-inbound.md has the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

from trioproxy.errors import ClientError, UntranslatableRequest

__all__ = [
    "BUILTIN_TOOL_TYPES",
    "ResponsesRequest",
    "responses_request_to_chat",
]

JSONObject = dict[str, Any]

# Tool types of the Responses API that OpenAI runs itself (openai-python
# `types/responses/tool_param.py` ToolParam); a chat upstream has none of them.
BUILTIN_TOOL_TYPES = (
    "web_search",
    "web_search_preview",
    "web_search_2025_08_26",
    "web_search_preview_2025_03_11",
    "file_search",
    "computer",
    "computer_use_preview",
    "code_interpreter",
    "image_generation",
    "mcp",
    "local_shell",
    "shell",
    "apply_patch",
    "custom",
    "namespace",
    "tool_search",
    "programmatic_tool_calling",
)

# Fields that only make sense with state kept on the server (issue 19: "stateless by design").
_STATEFUL = {
    "previous_response_id": "previous_response_id needs the previous response stored on the server",
    "conversation": "conversation needs the conversation stored on the server",
    "prompt": "prompt refers to a prompt template stored on OpenAI's servers",
    "context_management": "context_management (server-side compaction) needs the conversation "
    "stored on the server",
}
_STATELESS_HINT = (
    "; trioproxy keeps no state between requests: send the full conversation in input "
    "(previous messages, function_call and function_call_output items) with store: false"
)

# Fields of ResponseCreateParams that exist but have no equivalent for a chat upstream.
_UNMAPPABLE = (
    "moderation",
    "image",
    "access_programs",
    "background_options",
    "prompt_cache_options",
)

_REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_REASONING_SUMMARIES = ("auto", "concise", "detailed")
_TOOL_CHOICE_MODES = ("auto", "none", "required")
_VERBOSITY = ("low", "medium", "high")
_MAX_TOP_LOGPROBS = 20  # "An integer between 0 and 20" (response_create_params.py top_logprobs)
# "Set of 16 key-value pairs ... Keys are strings with a maximum length of 64 characters. Values
# are strings with a maximum length of 512 characters." (response_create_params.py metadata)
_MAX_METADATA_KEYS = 16
_MAX_METADATA_KEY = 64
_MAX_METADATA_VALUE = 512
_LOGPROBS_INCLUDE = "message.output_text.logprobs"


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A Responses API request read into trioproxy's neutral form.

    Attributes:
        chat: the OpenAI Chat Completions body (not yet validated: run it through
            `validate_chat_request`, then route and translate it as any chat request).
        echo: the request parameters the Responses `response` object repeats (`instructions`,
            `tools`, `tool_choice`, `text`, `reasoning`, `metadata`, ...), for
            `from_responses_stream.ResponseMeta`.
        stream: the client asked for an event stream (`stream: true`).
    """

    chat: JSONObject
    echo: JSONObject = field(default_factory=dict)
    stream: bool = False


def responses_request_to_chat(body: object) -> ResponsesRequest:
    """Read a Responses API request body (parsed JSON) into the neutral chat body.

    Args:
        body: the parsed JSON body of `POST /v1/responses`.

    Returns:
        The chat body, the fields to echo in the response object, and the stream flag.

    Raises:
        UntranslatableRequest: 400 `unsupported_parameter`: server-side state, built-in tools,
            or a feature a chat upstream does not have; `param` names the field.
        ClientError: 400: a missing, unknown or badly typed field; `param` names it.

    Example:
        >>> req = responses_request_to_chat({"model": "demo", "input": "Hi", "stream": True})
        >>> req.chat["messages"], req.stream
        ([{'role': 'user', 'content': 'Hi'}], True)
    """
    if not isinstance(body, dict):
        raise ClientError(
            'the request body must be a JSON object such as {"model": ..., "input": ...}',
            code="invalid_type",
        )
    # null means absent for every optional field (response_create_params.py marks them Optional).
    fields = {key: value for key, value in body.items() if value is not None}
    _refuse_stateful(fields)
    for name in fields:
        if name not in _KNOWN:
            if name in _UNMAPPABLE:
                raise UntranslatableRequest(
                    f"{name} is not supported by trioproxy's Responses API (no equivalent for "
                    "its upstreams): remove it",
                    param=name,
                )
            raise ClientError(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")

    model = fields.get("model")
    if model is None:
        _fail("model", 'name the model to use, e.g. "model": "demo"', "missing_required_parameter")
    if not isinstance(model, str) or not model:
        _fail("model", "must be a non-empty string", "invalid_type")

    chat: JSONObject = {"model": model}
    echo: JSONObject = {"background": False, "previous_response_id": None, "store": False}
    messages: list[JSONObject] = []
    instructions = fields.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            _fail("instructions", "must be a string", "invalid_type")
        # "A system (or developer) message inserted into the model's context"
        # (response_create_params.py instructions): the first message.
        messages.append({"role": "system", "content": instructions})
    echo["instructions"] = instructions
    messages += _input(fields.get("input"))
    chat["messages"] = messages

    _sampling(fields, chat, echo)
    _tools(fields, chat, echo)
    _text(fields, chat, echo)
    _reasoning(fields, chat, echo)
    _logprobs(fields, chat, echo)
    _passthrough(fields, chat, echo)

    stream = fields.get("stream", False)
    if not isinstance(stream, bool):
        _fail("stream", "must be true or false", "invalid_type")
    options = fields.get("stream_options")
    if options is not None:
        # {include_obfuscation: bool}: trioproxy never pads its deltas, so there is nothing to
        # turn off; checked and otherwise ignored (response_create_params.py StreamOptions).
        if not isinstance(options, dict):
            _fail("stream_options", "must be an object", "invalid_type")
        for key, value in options.items():
            if key != "include_obfuscation":
                raise ClientError(
                    f"Unknown parameter: 'stream_options.{key}'.",
                    param=f"stream_options.{key}",
                    code="unknown_parameter",
                )
            if not isinstance(value, bool):
                _fail("stream_options.include_obfuscation", "must be true or false", "invalid_type")
    if stream:
        chat["stream"] = True
        # A Responses stream always ends with usage in response.completed; the chat stream only
        # carries it when asked (MAPPING.md C.4).
        chat["stream_options"] = {"include_usage": True}
    return ResponsesRequest(chat=chat, echo=echo, stream=stream)


_KNOWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "parallel_tool_calls",
        "reasoning",
        "temperature",
        "top_p",
        "text",
        "tool_choice",
        "tools",
        "user",
        "store",
        "stream",
        "stream_options",
        "include",
        "top_logprobs",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "truncation",
        "background",
    }
)


def _fail(param: str, message: str, code: str = "invalid_value") -> NoReturn:
    raise ClientError(f"{param} {message}", param=param, code=code)


def _refuse_stateful(fields: JSONObject) -> None:
    for name, why in _STATEFUL.items():
        if name in fields:
            raise UntranslatableRequest(why + _STATELESS_HINT, param=name)
    store = fields.get("store")
    if store is not None and not isinstance(store, bool):
        _fail("store", "must be true or false", "invalid_type")
    # The Responses API stores by default ("Defaults to true when omitted",
    # response_create_params.py store); trioproxy cannot, and an omitted `store` is accepted
    # silently: a client that never asked for retrieval loses nothing. Only `true` is refused.
    if store is True:
        raise UntranslatableRequest(
            "store: true needs responses stored on the server for retrieval" + _STATELESS_HINT,
            param="store",
        )
    background = fields.get("background")
    if background is not None and not isinstance(background, bool):
        _fail("background", "must be true or false", "invalid_type")
    if background is True:
        raise UntranslatableRequest(
            "background: true needs the response kept on the server to be polled"
            + _STATELESS_HINT
            + " (use stream: true for long answers)",
            param="background",
        )


# --- top-level fields ------------------------------------------------------------------------


def _number(fields: JSONObject, name: str, low: float, high: float) -> float | int | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(name, f"must be a number between {low:g} and {high:g}", "invalid_type")
    if not low <= value <= high:
        _fail(name, f"must be a number between {low:g} and {high:g}, got {value!r}")
    return value


def _integer(fields: JSONObject, name: str, low: int, high: int | None = None) -> int | None:
    value = fields.get(name)
    if value is None:
        return None
    what = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, f"must be {what}", "invalid_type")
    if value < low or (high is not None and value > high):
        _fail(name, f"must be {what}, got {value}")
    return value


def _sampling(fields: JSONObject, chat: JSONObject, echo: JSONObject) -> None:
    # Same names and ranges in both APIs (response_create_params.py; completion_create_params.py).
    for name, high in (("temperature", 2.0), ("top_p", 1.0)):
        value = _number(fields, name, 0.0, high)
        if value is not None:
            chat[name] = value
        echo[name] = value
    # max_output_tokens "includes visible output tokens and reasoning tokens", as
    # max_completion_tokens does; the minimum of 16 is OpenAI's own (MAPPING.md H.20), enforced
    # by the Chat -> Responses translator where it applies, not here.
    max_output = _integer(fields, "max_output_tokens", 1)
    if max_output is not None:
        chat["max_completion_tokens"] = max_output
    echo["max_output_tokens"] = max_output
    # max_tool_calls bounds calls to *built-in* tools, which are refused here: nothing to bound.
    echo["max_tool_calls"] = _integer(fields, "max_tool_calls", 1)
    truncation = fields.get("truncation")
    if truncation is not None and truncation != "disabled":
        if truncation == "auto":
            # Dropping input items to fit the context window has no chat equivalent.
            raise UntranslatableRequest(
                'truncation: "auto" is not supported (the proxy does not drop input items to fit '
                'the context window): send "disabled" or leave it out, and shorten the input',
                param="truncation",
            )
        _fail("truncation", 'must be "auto" or "disabled"')
    echo["truncation"] = "disabled"


def _passthrough(fields: JSONObject, chat: JSONObject, echo: JSONObject) -> None:
    # Same name and meaning in Chat Completions (completion_create_params.py).
    for name in ("user", "safety_identifier", "prompt_cache_key", "service_tier"):
        value = fields.get(name)
        if value is not None:
            if not isinstance(value, str):
                _fail(name, "must be a string", "invalid_type")
            chat[name] = value
        echo[name] = value
    retention = fields.get("prompt_cache_retention")
    if retention is not None:
        if retention not in ("in_memory", "24h"):
            _fail("prompt_cache_retention", 'must be "in_memory" or "24h"')
        chat["prompt_cache_retention"] = retention
    metadata = fields.get("metadata")
    if metadata is not None:
        _check_metadata(metadata)
        # Forwarded in the chat body (Chat Completions has the same `metadata`); the chat
        # translators then forward or drop it as for any chat client (MAPPING.md A.1 P-A7, D).
        chat["metadata"] = metadata
    echo["metadata"] = metadata if metadata is not None else {}


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        _fail("metadata", "must be an object of string keys and string values", "invalid_type")
    if len(metadata) > _MAX_METADATA_KEYS:
        _fail("metadata", f"may hold at most {_MAX_METADATA_KEYS} keys, got {len(metadata)}")
    for key, value in metadata.items():
        if len(key) > _MAX_METADATA_KEY:
            _fail("metadata", f"keys may be at most {_MAX_METADATA_KEY} characters long")
        if not isinstance(value, str):
            _fail(f"metadata.{key}", "must be a string", "invalid_type")
        if len(value) > _MAX_METADATA_VALUE:
            _fail(f"metadata.{key}", f"may be at most {_MAX_METADATA_VALUE} characters long")


def _tools(fields: JSONObject, chat: JSONObject, echo: JSONObject) -> None:
    tools = fields.get("tools")
    echo_tools: list[JSONObject] = []
    if tools is not None:
        if not isinstance(tools, list):
            _fail("tools", "must be an array of tools", "invalid_type")
        chat_tools = []
        for i, tool in enumerate(tools):
            chat_tool, echoed = _tool(tool, i)
            chat_tools.append(chat_tool)
            echo_tools.append(echoed)
        if chat_tools:
            chat["tools"] = chat_tools
    echo["tools"] = echo_tools

    choice = fields.get("tool_choice")
    if choice is not None:
        chat["tool_choice"] = _tool_choice(choice)
    echo["tool_choice"] = choice if choice is not None else "auto"

    parallel = fields.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            _fail("parallel_tool_calls", "must be true or false", "invalid_type")
        chat["parallel_tool_calls"] = parallel
    echo["parallel_tool_calls"] = parallel if parallel is not None else True


def _tool(tool: Any, i: int) -> tuple[JSONObject, JSONObject]:
    # Responses {type: "function", name, description, parameters, strict} (function_tool
    # _param.py) -> Chat {type: "function", function: {name, description, parameters, strict}}.
    param = f"tools[{i}]"
    if not isinstance(tool, dict):
        _fail(param, 'must be an object such as {"type": "function", "name": ...}', "invalid_type")
    kind = tool.get("type")
    if kind != "function":
        if isinstance(kind, str) and kind in BUILTIN_TOOL_TYPES:
            raise UntranslatableRequest(
                f"the built-in tool {kind!r} is not available for this model (trioproxy only "
                "serves function tools to models it translates): remove it, or use a function "
                "tool your client runs",
                param=f"{param}.type",
            )
        _fail(f"{param}.type", f'must be "function", got {kind!r}')
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        _fail(f"{param}.name", "must be a non-empty string", "invalid_type")
    function: JSONObject = {"name": name}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            _fail(f"{param}.description", "must be a string", "invalid_type")
        function["description"] = description
    parameters = tool.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            _fail(f"{param}.parameters", "must be a JSON Schema object", "invalid_type")
        function["parameters"] = parameters
    strict = tool.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            _fail(f"{param}.strict", "must be true or false", "invalid_type")
        # An explicit value means the same in both APIs. An omitted one does not: Responses
        # "will attempt to normalize your schema into strict mode when possible, and will fall
        # back to non-strict" (https://developers.openai.com/api/docs/guides/function-calling
        # #strict-mode); Chat has no such fallback, so omitted stays omitted (best effort)
        # rather than turning a loose schema into a 400 upstream.
        function["strict"] = strict
    for key in ("defer_loading", "allowed_callers", "output_schema"):
        if tool.get(key) not in (None, False):
            raise UntranslatableRequest(
                f"function tool option {key} is not supported by trioproxy: remove it",
                param=f"{param}.{key}",
            )
    echoed = {
        "type": "function",
        "name": name,
        "description": function.get("description"),
        "parameters": function.get("parameters"),
        "strict": function.get("strict"),
    }
    return {"type": "function", "function": function}, echoed


def _tool_choice(choice: Any) -> Any:
    # "auto" / "none" / "required" are the same strings; {type: "function", name} ->
    # {type: "function", function: {name}} (tool_choice_function_param.py,
    # chat_completion_named_tool_choice_param.py).
    expected = '"auto", "none", "required" or {"type": "function", "name": ...}'
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_MODES:
            _fail("tool_choice", f"must be {expected}, got {choice!r}")
        return choice
    if not isinstance(choice, dict):
        _fail("tool_choice", f"must be {expected}", "invalid_type")
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            _fail("tool_choice.name", "must name one of the function tools", "invalid_type")
        return {"type": "function", "function": {"name": name}}
    if isinstance(kind, str):
        raise UntranslatableRequest(
            f"tool_choice of type {kind!r} is not supported by trioproxy (only function tools "
            f"are served): use {expected}",
            param="tool_choice",
        )
    _fail("tool_choice.type", f"must be a string; tool_choice must be {expected}", "invalid_type")


def _text(fields: JSONObject, chat: JSONObject, echo: JSONObject) -> None:
    # text: {format, verbosity} (response_text_config_param.py) -> response_format, verbosity.
    text = fields.get("text")
    echo_text: JSONObject = {"format": {"type": "text"}}
    if text is None:
        echo["text"] = echo_text
        return
    if not isinstance(text, dict):
        _fail("text", 'must be an object such as {"format": {"type": "text"}}', "invalid_type")
    for key in text:
        if key not in ("format", "verbosity"):
            raise ClientError(
                f"Unknown parameter: 'text.{key}'.", param=f"text.{key}", code="unknown_parameter"
            )
    text_format = text.get("format")
    if text_format is not None:
        response_format = _text_format(text_format)
        if response_format is not None:
            chat["response_format"] = response_format
        echo_text["format"] = text_format
    verbosity = text.get("verbosity")
    if verbosity is not None:
        if verbosity not in _VERBOSITY:
            _fail("text.verbosity", 'must be "low", "medium" or "high"')
        chat["verbosity"] = verbosity  # Chat's top-level `verbosity` (completion_create_params.py)
        echo_text["verbosity"] = verbosity
    echo["text"] = echo_text


def _text_format(text_format: Any) -> JSONObject | None:
    if not isinstance(text_format, dict):
        _fail(
            "text.format", 'must be an object such as {"type": "json_schema", ...}', "invalid_type"
        )
    kind = text_format.get("type")
    if kind == "text":
        return None  # the default
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        _fail("text.format.type", f'must be "text", "json_schema" or "json_object", got {kind!r}')
    # Flat {type, name, schema, strict, description} (response_format_text_json_schema_config
    # _param.py) -> Chat's nested {type, json_schema: {name, schema, strict, description}}.
    name, schema = text_format.get("name"), text_format.get("schema")
    if not isinstance(name, str) or not name:
        _fail("text.format.name", "must be a non-empty string", "missing_required_parameter")
    if not isinstance(schema, dict):
        _fail("text.format.schema", "must be a JSON Schema object", "missing_required_parameter")
    spec: JSONObject = {"name": name, "schema": schema}
    strict, description = text_format.get("strict"), text_format.get("description")
    if strict is not None:
        if not isinstance(strict, bool):
            _fail("text.format.strict", "must be true or false", "invalid_type")
        spec["strict"] = strict
    if description is not None:
        if not isinstance(description, str):
            _fail("text.format.description", "must be a string", "invalid_type")
        spec["description"] = description
    return {"type": "json_schema", "json_schema": spec}


def _reasoning(fields: JSONObject, chat: JSONObject, echo: JSONObject) -> None:
    # reasoning: {effort, summary, generate_summary (deprecated)} (shared_params/reasoning.py).
    reasoning = fields.get("reasoning")
    echoed: JSONObject = {"effort": None, "summary": None}
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            _fail("reasoning", 'must be an object such as {"effort": "medium"}', "invalid_type")
        for key in reasoning:
            if key not in ("effort", "summary", "generate_summary"):
                # `context` and `mode` select OpenAI-specific behaviour with no chat equivalent.
                raise UntranslatableRequest(
                    f"reasoning.{key} is not supported by trioproxy: remove it",
                    param=f"reasoning.{key}",
                )
        effort = reasoning.get("effort")
        if effort is not None:
            if effort not in _REASONING_EFFORTS:
                _fail("reasoning.effort", f"must be one of {', '.join(_REASONING_EFFORTS)}")
            chat["reasoning_effort"] = effort  # the same values (shared/reasoning_effort.py)
            echoed["effort"] = effort
        for key in ("summary", "generate_summary"):
            summary = reasoning.get(key)
            if summary is None:
                continue
            if summary not in _REASONING_SUMMARIES:
                _fail(f"reasoning.{key}", 'must be "auto", "concise" or "detailed"')
            # Chat has no such knob: the upstream's reasoning text (reasoning_content) is what
            # there is, and the answer carries it as a reasoning summary whatever was asked
            # (docs/translation-responses-inbound.md "Reasoning"). Echoed as given.
            echoed["summary"] = summary
    echo["reasoning"] = echoed


def _logprobs(fields: JSONObject, chat: JSONObject, echo: JSONObject) -> None:
    include = fields.get("include")
    wants_logprobs = False
    if include is not None:
        if not isinstance(include, list):
            _fail("include", "must be an array of strings", "invalid_type")
        for i, entry in enumerate(include):
            if not isinstance(entry, str):
                _fail(f"include[{i}]", "must be a string", "invalid_type")
            # Only output-text logprobs have a chat equivalent. The other includables add data
            # about built-in tools (refused above), inputs, or encrypted reasoning (for the
            # upstream's own replay, which a translated upstream cannot use): accepted and
            # answered without it, so that clients that always ask (Codex asks for
            # reasoning.encrypted_content) still work.
            wants_logprobs = wants_logprobs or entry == _LOGPROBS_INCLUDE
    top = _integer(fields, "top_logprobs", 0, _MAX_TOP_LOGPROBS)
    echo["top_logprobs"] = top if top is not None else 0
    if wants_logprobs:
        chat["logprobs"] = True
        if top is not None:
            chat["top_logprobs"] = top


# --- input items -----------------------------------------------------------------------------


def _input(value: Any) -> list[JSONObject]:
    if value is None:
        _fail(
            "input",
            'is required: send the conversation, e.g. "input": "Hello" or a list of items',
            "missing_required_parameter",
        )
    if isinstance(value, str):
        return [{"role": "user", "content": value}]  # "Text ... inputs to the model"
    if not isinstance(value, list):
        _fail("input", "must be a string or an array of input items", "invalid_type")
    if not value:
        _fail("input", "must contain at least one item", "empty_array")
    builder = _Messages()
    for i, item in enumerate(value):
        builder.add(item, f"input[{i}]")
    if not builder.messages:
        _fail("input", "must contain at least one message or function call item")
    return builder.messages


class _Messages:
    """Input items in, chat messages out, in order (see the module docstring)."""

    def __init__(self) -> None:
        self.messages: list[JSONObject] = []
        self._reasoning: list[str] = []  # reasoning text waiting for its assistant message
        self._open_assistant: JSONObject | None = None  # the one a function_call may join

    def add(self, item: Any, param: str) -> None:
        if not isinstance(item, dict):
            _fail(
                param,
                'must be an object such as {"role": "user", "content": "Hello"}',
                "invalid_type",
            )
        kind = item.get("type")
        if kind is None or kind == "message":
            # EasyInputMessageParam has an optional type; Message and ResponseOutputMessage
            # (an earlier answer passed back) say "message".
            self._message(item, param)
        elif kind == "function_call":
            self._function_call(item, param)
        elif kind == "function_call_output":
            self._function_call_output(item, param)
        elif kind == "reasoning":
            self._reasoning_item(item, param)
        elif kind == "item_reference":
            raise UntranslatableRequest(
                "item_reference points at an item stored on the server" + _STATELESS_HINT,
                param=param,
            )
        elif isinstance(kind, str):
            # Built-in tool calls and their outputs (web_search_call, computer_call_output,
            # local_shell_call, mcp_*, ...): their tools are refused, so are their items.
            raise UntranslatableRequest(
                f"input items of type {kind!r} are not supported by trioproxy (only messages, "
                "function_call, function_call_output and reasoning items are)",
                param=f"{param}.type",
            )
        else:
            _fail(f"{param}.type", "must be a string", "invalid_type")

    # -- items -------------------------------------------------------------------------------

    def _message(self, item: JSONObject, param: str) -> None:
        role = item.get("role")
        content = item.get("content")
        if role not in ("user", "assistant", "system", "developer"):
            _fail(f"{param}.role", f"must be user, assistant, system or developer, got {role!r}")
        if isinstance(content, str):
            parts: str | list[JSONObject] = content
        elif isinstance(content, list):
            parts = [
                self._part(part, role, f"{param}.content[{j}]") for j, part in enumerate(content)
            ]
        else:
            _fail(
                f"{param}.content", "must be a string or an array of content parts", "invalid_type"
            )
        if role == "assistant":
            message: JSONObject = {"role": "assistant", "content": parts}
            self._take_reasoning(message)
            self.messages.append(message)
            self._open_assistant = message
            return
        self._reasoning.clear()  # reasoning belongs to the assistant turn it preceded
        self._open_assistant = None
        self.messages.append({"role": role, "content": parts})

    def _part(self, part: Any, role: str, param: str) -> JSONObject:
        if not isinstance(part, dict):
            _fail(
                param,
                'must be a content part such as {"type": "input_text", "text": ...}',
                "invalid_type",
            )
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            # output_text: an earlier answer's text passed back; its annotations are dropped.
            text = part.get("text")
            if not isinstance(text, str):
                _fail(f"{param}.text", "must be a string", "invalid_type")
            return {"type": "text", "text": text}
        if kind == "refusal" and role == "assistant":
            refusal = part.get("refusal")
            if not isinstance(refusal, str):
                _fail(f"{param}.refusal", "must be a string", "invalid_type")
            return {"type": "refusal", "refusal": refusal}
        if kind in ("input_image", "input_file"):
            if role != "user":
                # Chat has images and files in user messages only (completion_create_params.py).
                raise UntranslatableRequest(
                    f"{kind} parts are only supported in user messages", param=param
                )
            return _input_image(part, param) if kind == "input_image" else _input_file(part, param)
        raise UntranslatableRequest(
            f"content part type {kind!r} is not supported here (use input_text, input_image or "
            "input_file; output_text and refusal in assistant messages)",
            param=f"{param}.type",
        )

    def _function_call(self, item: JSONObject, param: str) -> None:
        # {type: function_call, call_id, name, arguments, id?, status?} (response_function_tool
        # _call_param.py): `call_id` is the tool call id the function_call_output echoes (H.17).
        call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
        if not isinstance(call_id, str) or not call_id:
            _fail(f"{param}.call_id", "must be a non-empty string", "invalid_type")
        if not isinstance(name, str) or not name:
            _fail(f"{param}.name", "must be a non-empty string", "invalid_type")
        if not isinstance(arguments, str):
            _fail(f"{param}.arguments", "must be a string of JSON", "invalid_type")
        if item.get("namespace") is not None:
            raise UntranslatableRequest(
                "namespaced function calls are not supported", param=f"{param}.namespace"
            )
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        message = self._open_assistant
        if message is None:
            message = {"role": "assistant", "content": None}
            self.messages.append(message)
            self._open_assistant = message
        self._take_reasoning(message)
        message.setdefault("tool_calls", []).append(call)

    def _function_call_output(self, item: JSONObject, param: str) -> None:
        call_id, output = item.get("call_id"), item.get("output")
        if not isinstance(call_id, str) or not call_id:
            _fail(f"{param}.call_id", "must be a non-empty string", "invalid_type")
        if isinstance(output, str):
            content: str | list[JSONObject] = output
        elif isinstance(output, list):
            content = []
            for j, part in enumerate(output):
                here = f"{param}.output[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "input_text":
                    # Chat tool messages carry text only (chat_completion_tool_message_param.py).
                    raise UntranslatableRequest(
                        f"function_call_output parts of type {kind!r} are not supported (a chat "
                        "tool message carries text only): send the output as a string",
                        param=here,
                    )
                text = part.get("text")
                if not isinstance(text, str):
                    _fail(f"{here}.text", "must be a string", "invalid_type")
                content.append({"type": "text", "text": text})
        else:
            _fail(f"{param}.output", "must be a string or an array of parts", "invalid_type")
        self._reasoning.clear()
        self._open_assistant = None
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})

    def _reasoning_item(self, item: JSONObject, param: str) -> None:
        # {type: reasoning, id, summary: [{type: summary_text, text}], content?:
        # [{type: reasoning_text, text}], encrypted_content?} (response_reasoning_item_param.py).
        # The text goes back as reasoning_content; encrypted_content is OpenAI's own and only
        # OpenAI can read it: dropped (a same-dialect upstream gets the body unchanged anyway).
        texts = []
        for key, part_type in (("summary", "summary_text"), ("content", "reasoning_text")):
            parts = item.get(key)
            if parts is None:
                continue
            if not isinstance(parts, list):
                _fail(f"{param}.{key}", "must be an array", "invalid_type")
            for j, part in enumerate(parts):
                if not isinstance(part, dict) or not isinstance(part.get("text"), str):
                    _fail(
                        f"{param}.{key}[{j}]",
                        f"must be a {part_type} part with text",
                        "invalid_type",
                    )
                if part["text"]:
                    texts.append(part["text"])
        if not texts:
            return
        if self._reasoning:
            self._reasoning.append("\n\n")
        # Summary parts are joined with a blank line, as the Responses -> Chat translator does
        # (MAPPING.md E, P-RS1), so a round trip gives the reasoning_content back unchanged.
        self._reasoning.append("\n\n".join(texts))
        self._open_assistant = None  # a new assistant turn starts after reasoning

    def _take_reasoning(self, message: JSONObject) -> None:
        if self._reasoning:
            message["reasoning_content"] = message.get("reasoning_content", "") + "".join(
                self._reasoning
            )
            self._reasoning.clear()


def _input_image(part: JSONObject, param: str) -> JSONObject:
    # {type: input_image, image_url?, file_id?, detail} (response_input_image_param.py) ->
    # {type: image_url, image_url: {url, detail}}; the URL (https or data:) is taken as it is.
    if part.get("file_id") is not None:
        raise UntranslatableRequest(
            "input_image.file_id refers to a file stored on OpenAI's servers: send the image as "
            "image_url (an https:// URL or a data: URL)",
            param=f"{param}.file_id",
        )
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        _fail(
            f"{param}.image_url",
            "must be an https:// URL or a data: URL",
            "missing_required_parameter",
        )
    image: JSONObject = {"url": url}
    detail = part.get("detail")
    if detail is not None:
        if not isinstance(detail, str):
            _fail(f"{param}.detail", 'must be "auto", "low" or "high"', "invalid_type")
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _input_file(part: JSONObject, param: str) -> JSONObject:
    # {type: input_file, file_data?, file_id?, file_url?, filename?} (response_input_file
    # _param.py) -> Chat {type: file, file: {file_data, filename}} (the same base64 data URL).
    for key, why in (
        ("file_id", "refers to a file stored on OpenAI's servers"),
        ("file_url", "would have to be fetched by the proxy"),
    ):
        if part.get(key) is not None:
            raise UntranslatableRequest(
                f"input_file.{key} {why}: send the file inline as file_data "
                '("data:application/pdf;base64,...") with a filename',
                param=f"{param}.{key}",
            )
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        _fail(
            f"{param}.file_data",
            "must be the file as a base64 data: URL",
            "missing_required_parameter",
        )
    file: JSONObject = {"file_data": data}
    filename = part.get("filename")
    if filename is not None:
        if not isinstance(filename, str):
            _fail(f"{param}.filename", "must be a string", "invalid_type")
        file["filename"] = filename
    return {"type": "file", "file": file}

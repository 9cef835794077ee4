"""OpenAI-compatible Chat Completions upstreams: `Dialect` for `type = openai-chat` (MAPPING.md G).

Stage: translate (pure). The client already speaks the upstream's dialect, so the request passes
through nearly unchanged and the answer is re-framed rather than translated:

- `build_request`: the client's body with `model` renamed to the upstream's, the model's
  defaults filled in where the client gave none (module docstring of `ChatDialect`), and, for a
  stream, `stream_options.include_usage: true` always (so usage is known for metering);
- `chat_stream.ChatStreamTranslator`: the upstream's chunks re-framed to trioproxy's stream
  contract (one role chunk, one finish chunk, usage only when asked, tool indexes from 0);
- `translate_response`: the upstream's `chat.completion` body, passed through;
- `translate_error`: OpenAI's error envelope, passed through (`openai_common`, F.1).

Invariants: no IO, no clock, no ids; `build_request` raises only `ClientError` subclasses;
everything else raises only `UpstreamError` subclasses. The upstream key appears in
`auth_headers` and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioproxy.errors import ClientError, UntranslatableRequest, UpstreamProtocolError
from trioproxy.translate.base import UpstreamRequest
from trioproxy.translate.chat_stream import ChatStreamTranslator
from trioproxy.translate.openai_common import (
    bearer_auth,
    encode_body,
    error_from_body,
    error_in_success,
    load_body_json,
)

if TYPE_CHECKING:
    from trioproxy.errors import UpstreamStatusError
    from trioproxy.translate.base import JSONObject, StreamMeta, Target

__all__ = ["CHAT_PATH", "ChatDialect", "ChatStreamTranslator"]

# base_url is written as the OpenAI SDK takes it, with /v1 (DESIGN.md "proxy.ini").
CHAT_PATH = "/chat/completions"


class ChatDialect:
    """Any OpenAI-compatible Chat Completions API (OpenAI, DeepSeek, OpenRouter, vLLM, Ollama...).

    Request rules (MAPPING.md G):
    - `model` becomes `Target.upstream_model`; every other field passes through as the client
      sent it, unknown ones included (the upstream may understand them);
    - the model's defaults apply only where the client gave none: `max_tokens` (sent as
      `max_tokens`, the name every compatible server knows) when neither `max_tokens` nor
      `max_completion_tokens` is set, `reasoning_effort` when absent. The default system prompt
      is always put first as a system message (as for the other dialects, `ModelDefaults`:
      "prepended to the client's system messages");
    - a streaming request always asks for usage (`stream_options.include_usage: true`, other
      `stream_options` kept); whether the client gets the usage chunk follows what *it* asked
      (`StreamMeta.include_usage`);
    - `n > 1` is refused (400 `unsupported_parameter`): trioproxy's stream contract is one choice,
      the same whichever upstream serves the model.

    Example:
        >>> import json
        >>> from trioproxy.translate.base import Target
        >>> request = ChatDialect().build_request(
        ...     {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True},
        ...     Target("deepseek-chat"),
        ... )
        >>> request.path, json.loads(request.body)["stream_options"]
        ('/chat/completions', {'include_usage': True})
    """

    name = "openai-chat"

    def auth_headers(self, api_key: str) -> tuple[tuple[str, str], ...]:
        return bearer_auth(api_key)

    def build_request(self, body: JSONObject, target: Target) -> UpstreamRequest:
        """The upstream request for a validated chat request (see the class docstring).

        Raises:
            UntranslatableRequest: `n > 1`.
            ClientError: `messages` or `stream_options` of the wrong shape.
        """
        if not isinstance(body, dict):
            raise ClientError("the request body must be a JSON object")
        n = body.get("n")
        if n is not None and n != 1:
            raise UntranslatableRequest(
                "n > 1 is not supported through trioproxy: send one request per choice",
                param="n",
            )
        out = dict(body)
        out["model"] = target.upstream_model
        defaults = target.defaults
        if (
            defaults.max_tokens is not None
            and defaults.max_tokens >= 1
            and body.get("max_tokens") is None
            and body.get("max_completion_tokens") is None
        ):
            out["max_tokens"] = defaults.max_tokens
        if defaults.reasoning_effort is not None and body.get("reasoning_effort") is None:
            out["reasoning_effort"] = defaults.reasoning_effort
        if defaults.system_prompt:
            messages = body.get("messages")
            if not isinstance(messages, list):
                raise ClientError("messages must be a non-empty array", param="messages")
            out["messages"] = [{"role": "system", "content": defaults.system_prompt}, *messages]
        stream = body.get("stream") is True
        if stream:
            options = body.get("stream_options")
            if options is None:
                options = {}
            if not isinstance(options, dict):
                raise ClientError("stream_options must be an object", param="stream_options")
            # G: the proxy asks for usage for its own metering; the client's choice is applied
            # to what it gets back (ChatStreamTranslator, StreamMeta.include_usage).
            out["stream_options"] = {**options, "include_usage": True}
        return UpstreamRequest(path=CHAT_PATH, body=encode_body(out), stream=stream)

    def stream_translator(self, meta: StreamMeta) -> ChatStreamTranslator:
        return ChatStreamTranslator(meta)

    def translate_response(self, body: bytes, meta: StreamMeta) -> JSONObject:
        """The upstream's `chat.completion`, passed through (G), once it is known to be one.

        `model` is the upstream's (the resolved id, as OpenAI reports it); a body without one
        gets `meta.model`, the upstream model trioproxy asked for (docs/streaming.md "The model
        name").

        Raises:
            UpstreamProtocolError: the body is not a JSON object, or has no `choices` array of
                objects (`{}` from a broken server is never relayed as a success, issue 17).
            UpstreamStatusError: the body is an error envelope despite a 2xx status (502-class,
                `error_in_success`).
        """
        completion = load_body_json(body)
        error = completion.get("error")
        if error:
            raise error_in_success(error)
        choices = completion.get("choices")
        if (
            not isinstance(choices, list)
            or not choices
            or not all(isinstance(choice, dict) for choice in choices)
        ):
            raise UpstreamProtocolError(
                "upstream answered 200 without a choices array: not a chat.completion"
            )
        model = completion.get("model")
        if not isinstance(model, str) or not model:
            completion["model"] = meta.model
        return completion

    def translate_error(
        self, status: int, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> UpstreamStatusError:
        """A non-2xx answer: OpenAI's envelope passes through unchanged (MAPPING.md F.1)."""
        return error_from_body(status, headers, body)

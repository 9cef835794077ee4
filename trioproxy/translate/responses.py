"""The OpenAI Responses API dialect: `Dialect` for `[upstream:NAME] type = openai-responses`.

Stage: translate (pure). The edge asks it for the upstream request (`build_request`, with
`auth_headers`), then hands back what came: event-stream events to `stream_translator(meta)`, a
non-streaming body to `translate_response`, a non-2xx answer to `translate_error`. The work is
done in three modules, one per direction, plus what both OpenAI dialects share:

- `responses_request`: chat request -> Responses request (MAPPING.md D);
- `responses_stream`: Responses stream events -> chat chunks (E);
- `responses_response`: Responses body -> chat.completion, usage, failures (E);
- `openai_common`: OpenAI error envelopes passed through (F.1), bearer auth, JSON bodies.

Invariants: no IO, no clock, no ids (they arrive in `Target` / `StreamMeta`); `build_request`
raises only `ClientError` subclasses; everything else raises only `UpstreamError` subclasses.
The upstream key appears in `auth_headers` and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioproxy.translate.base import UpstreamRequest
from trioproxy.translate.openai_common import bearer_auth, encode_body, error_from_body
from trioproxy.translate.responses_request import translate_request
from trioproxy.translate.responses_response import translate_response
from trioproxy.translate.responses_stream import ResponsesStreamTranslator

if TYPE_CHECKING:
    from trioproxy.errors import UpstreamStatusError
    from trioproxy.translate.base import JSONObject, StreamMeta, Target

__all__ = ["RESPONSES_PATH", "ResponsesDialect", "ResponsesStreamTranslator"]

# base_url is written as the OpenAI SDK takes it, with /v1 (DESIGN.md "proxy.ini").
RESPONSES_PATH = "/responses"


class ResponsesDialect:
    """OpenAI's Responses API (https://platform.openai.com/docs/api-reference/responses).

    Example:
        >>> import json
        >>> from trioproxy.translate.base import Target
        >>> request = ResponsesDialect().build_request(
        ...     {"model": "gpt", "messages": [{"role": "user", "content": "Hi"}]},
        ...     Target("gpt-5-mini"),
        ... )
        >>> request.path, request.stream
        ('/responses', False)
        >>> json.loads(request.body)
        {'model': 'gpt-5-mini', 'input': [{'role': 'user', 'content': 'Hi'}], 'store': False}
    """

    name = "openai-responses"

    def auth_headers(self, api_key: str) -> tuple[tuple[str, str], ...]:
        return bearer_auth(api_key)

    def build_request(self, body: JSONObject, target: Target) -> UpstreamRequest:
        """The Responses API request for a validated chat request (MAPPING.md D).

        Raises:
            UntranslatableRequest: a feature with no Responses equivalent (`n > 1`, `stop`).
            ClientError: a value that cannot be translated (`max_tokens` below 16, ...).
        """
        upstream_body = translate_request(body, target)
        return UpstreamRequest(
            path=RESPONSES_PATH,
            body=encode_body(upstream_body),
            stream=upstream_body.get("stream") is True,
        )

    def stream_translator(self, meta: StreamMeta) -> ResponsesStreamTranslator:
        return ResponsesStreamTranslator(meta)

    def translate_response(self, body: bytes, meta: StreamMeta) -> JSONObject:
        """A non-streaming Responses body to a `chat.completion` (MAPPING.md E)."""
        return translate_response(body, meta)

    def translate_error(
        self, status: int, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> UpstreamStatusError:
        """A non-2xx answer to the error the client sees: OpenAI's envelope passes through
        unchanged (MAPPING.md F.1)."""
        return error_from_body(status, headers, body)

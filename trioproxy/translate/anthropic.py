"""The Anthropic Messages API dialect: `Dialect` for `[upstream:NAME] type = anthropic`.

Stage: translate (pure). The edge asks it for the upstream request (`build_request`, with
`auth_headers`), then hands back what came: event-stream events to `stream_translator(meta)`, a
non-streaming body to `translate_response`, a non-2xx answer to `translate_error`. The work is
done in three modules, one per direction:

- `anthropic_request`: chat request -> Messages request (MAPPING.md A);
- `anthropic_stream`: Messages stream events -> chat chunks (C);
- `anthropic_response`: Messages body -> chat.completion (B), usage (B.2), errors (F.1).

Invariants: no IO, no clock, no ids (they arrive in `Target` / `StreamMeta`); `build_request`
raises only `ClientError` subclasses; everything else raises only `UpstreamError` subclasses.
The upstream key appears in `auth_headers` and nowhere else.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from trioproxy.errors import ClientError
from trioproxy.translate.anthropic_request import translate_request
from trioproxy.translate.anthropic_response import error_from_body, translate_response
from trioproxy.translate.anthropic_stream import AnthropicStreamTranslator
from trioproxy.translate.base import UpstreamRequest

if TYPE_CHECKING:
    from trioproxy.errors import UpstreamStatusError
    from trioproxy.translate.base import JSONObject, StreamMeta, Target

__all__ = ["MESSAGES_PATH", "AnthropicDialect", "AnthropicStreamTranslator"]

# base_url is written as the Anthropic SDK takes it, without /v1 (DESIGN.md "proxy.ini").
MESSAGES_PATH = "/v1/messages"


class AnthropicDialect:
    """Anthropic's Messages API (https://docs.anthropic.com/en/api/messages).

    Args:
        version: the `anthropic-version` header (the API's date-stamped version).
        beta: `anthropic-beta` feature names, sent comma-joined when any are given.

    Example:
        >>> from trioproxy.translate.base import Target
        >>> request = AnthropicDialect().build_request(
        ...     {"model": "claude", "messages": [{"role": "user", "content": "Hi"}]},
        ...     Target("claude-sonnet-4-5"),
        ... )
        >>> request.path, request.stream
        ('/v1/messages', False)
    """

    name = "anthropic"

    def __init__(self, *, version: str = "2023-06-01", beta: tuple[str, ...] = ()) -> None:
        self.version = version
        self.beta = beta
        headers = [("anthropic-version", version)]
        if beta:
            headers.append(("anthropic-beta", ",".join(beta)))
        headers.append(("content-type", "application/json"))
        self._headers = tuple(headers)

    def auth_headers(self, api_key: str) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", api_key),)

    def build_request(self, body: JSONObject, target: Target) -> UpstreamRequest:
        """The Messages API request for a validated chat request (MAPPING.md A).

        Raises:
            UntranslatableRequest: a feature with no Anthropic equivalent (`n > 1`, ...).
            ClientError: a value that cannot be translated (a bad data URL, ...).
        """
        upstream_body = translate_request(body, target)
        try:
            # allow_nan=False: Python's json accepts NaN / Infinity, JSON does not.
            raw = json.dumps(upstream_body, ensure_ascii=False, allow_nan=False).encode()
        except UnicodeEncodeError as exc:  # a lone surrogate from a "\\ud800" escape
            raise ClientError(
                "the request contains text that is not valid Unicode (a lone surrogate)"
            ) from exc
        except ValueError as exc:
            raise ClientError(
                "the request contains a number JSON cannot carry (NaN, Infinity or too many digits)"
            ) from exc
        except RecursionError as exc:
            raise ClientError("the request is nested too deeply") from exc
        return UpstreamRequest(
            path=MESSAGES_PATH,
            body=raw,
            headers=self._headers,
            stream=body.get("stream") is True,
        )

    def stream_translator(self, meta: StreamMeta) -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator(meta)

    def translate_response(self, body: bytes, meta: StreamMeta) -> JSONObject:
        """A non-streaming Messages body to a `chat.completion` (MAPPING.md B)."""
        return translate_response(body, meta)

    def translate_error(
        self, status: int, headers: tuple[tuple[str, str], ...], body: bytes
    ) -> UpstreamStatusError:
        """A non-2xx Messages answer to the error the client sees (MAPPING.md F.1)."""
        return error_from_body(status, headers, body)

"""The HTTP face's routes: one request in, one answer out, whatever server carried it.

Stage: the IO edge facing HTTP clients. `serve_request(runtime, exchange)` takes the current
service generation once (a reload never changes a request half-way), checks the head's size,
answers CORS preflights for allowed origins, and dispatches by path. Every request is finished
(logged, counted) exactly once: by the pump when it ran, here otherwise.

Routes: GET /health, GET /metrics, GET /v1/models (OpenAI's list, or Anthropic's when the request
carries `anthropic-version`), GET /v1/models/{id}, and the dialects of `POST_ROUTES`: POST
/v1/chat/completions (chat.py), /v1/messages and /v1/messages/count_tokens (messages.py),
/v1/responses (responses.py; `/v1/responses/{id}` explains that no response is stored).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import trio

from trioproxy.errors import ClientError, ProxyError, UnknownModel
from trioproxy.faces.http.chat import serve_chat
from trioproxy.faces.http.common import (
    ClientGone,
    MethodNotAllowed,
    NotFound,
    Reply,
    authenticate,
    cors_headers,
    header,
    request_id,
)
from trioproxy.faces.http.messages import send_error as send_anthropic_error
from trioproxy.faces.http.messages import serve_count_tokens, serve_messages
from trioproxy.faces.http.responses import serve_responses, stored_response
from trioproxy.metrics import CONTENT_TYPE
from trioproxy.record import Outcome, RequestRecord

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trioproxy.faces.http.common import Exchange, Headers
    from trioproxy.service import Runtime, Service

    Route = Callable[[Service, Exchange, Reply, RequestRecord], Awaitable[None]]

__all__ = ["POST_ROUTES", "serve_request"]

# Requests whose route reads a body and runs the pump; each finishes its own record.
POST_ROUTES: dict[str, Route] = {
    "/v1/chat/completions": serve_chat,  # OpenAI Chat Completions (chat.py)
    "/v1/messages": serve_messages,  # Anthropic Messages (messages.py)
    "/v1/messages/count_tokens": serve_count_tokens,
    "/v1/responses": serve_responses,  # OpenAI Responses (responses.py)
}

# Request headers a browser may ask to send (Access-Control-Request-Headers) are echoed back for
# an allowed origin, if each is a plain token (RFC 9110 §5.6.2) and there are not too many.
_TOKEN_LIST = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")
_MAX_PREFLIGHT_HEADERS = 4096  # bytes of Access-Control-Request-Headers we echo at most
# Without Access-Control-Request-Headers: what the OpenAI and Anthropic browser SDKs send.
_DEFAULT_ALLOWED = (
    b"authorization, content-type, x-api-key, x-request-id, anthropic-version, anthropic-beta, "
    b"anthropic-dangerous-direct-browser-access"
)


class _HeadersTooLarge(ClientError):
    status_hint = 431  # RFC 6585 §5
    code_hint = "request_headers_too_large"


async def serve_request(runtime: Runtime, exchange: Exchange) -> None:
    """Answer one request; never raises for anything the client did."""
    service = runtime.service
    headers = exchange.headers
    record = RequestRecord(request_id=request_id(headers), started=trio.current_time())
    reply = Reply(exchange, record, cors_headers(service, headers))
    method, path = exchange.method, exchange.path
    try:
        # Our server and hypercorn's HTTP/1.1 bound the head while it arrives; this also bounds
        # what other ASGI servers and HTTP/2 hand us.
        limit = service.config.proxy.max_header_bytes
        if sum(len(name) + len(value) + 4 for name, value in headers) > limit:
            raise _HeadersTooLarge(
                f"request headers are larger than {limit} bytes (max_header_bytes); send fewer "
                "or shorter headers"
            )
        if method == "OPTIONS" and reply.allows_origin:
            await _preflight(reply, headers)  # CORS preflight (Fetch standard, "CORS protocol")
        elif (route := POST_ROUTES.get(path)) is not None:
            _require(method, "POST")
            await route(service, exchange, reply, record)
            return  # the route finished the record
        elif path == "/health":
            _require(method, "GET")
            await reply.json(200, service.health())
        elif path == "/metrics" and service.config.proxy.metrics:
            _require(method, "GET")
            service.check_metrics_key(headers)
            await reply.text(200, service.render_metrics(), CONTENT_TYPE)
        elif path == "/v1/models":
            _require(method, "GET")
            authenticate(service, headers, record)
            await reply.json(200, _models(service, anthropic=_anthropic(headers)))
        elif path.startswith("/v1/responses/"):  # stateless: no stored response (responses.py)
            stored_response(service, headers, record, path)
        elif path.startswith("/v1/models/"):
            _require(method, "GET")
            authenticate(service, headers, record)
            name = path[len("/v1/models/") :]
            await reply.json(200, _model(service, name, anthropic=_anthropic(headers)))
        else:
            raise NotFound(
                f"no route for {method} {path}; see GET /health and POST /v1/chat/completions"
            )
    except ProxyError as exc:
        record.outcome = record.outcome or Outcome.REJECTED
        record.error_code = exc.code
        if path.startswith("/v1/messages") or _anthropic(headers):
            await send_anthropic_error(reply, exc)  # an Anthropic client: its own envelope
        else:
            await reply.error(exc)
    except ClientGone:
        record.outcome = Outcome.CLIENT_CANCELLED
    service.finish(record)


def _require(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"use {allowed} for this route, not {method}")


def _anthropic(headers: Headers) -> bool:
    # The anthropic SDKs send `anthropic-version` on every request; OpenAI's never do.
    return header(headers, b"anthropic-version") is not None


def _model_object(name: str, owner: str, *, anthropic: bool) -> dict[str, Any]:
    if anthropic:  # https://docs.anthropic.com/en/api/models
        return {
            "type": "model",
            "id": name,
            "display_name": name,
            "created_at": "1970-01-01T00:00:00Z",
        }
    # https://platform.openai.com/docs/api-reference/models/object
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


def _models(service: Service, *, anthropic: bool) -> dict[str, Any]:
    data = [
        _model_object(model, upstream, anthropic=anthropic)
        for model, upstream in service.engine.router.listed_models()
    ]
    if anthropic:
        return {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    return {"object": "list", "data": data}


def _model(service: Service, name: str, *, anthropic: bool) -> dict[str, Any]:
    """`GET /v1/models/{id}`: the model object of a configured model (a pattern model answers
    with the name asked for, when it matches), else 404 `model_not_found`."""
    owner = service.engine.router.owner_of(name)
    if owner is None:
        raise UnknownModel(
            f"the model '{name}' is not served here; GET /v1/models lists the models",
            param="model",
        )
    return _model_object(name, owner, anthropic=anthropic)


async def _preflight(reply: Reply, request_headers: Headers) -> None:
    # A browser sends the preflight before the real request and names the headers that one
    # will carry (the openai npm package adds x-stainless-*); for an allowed origin, allow
    # exactly those (Fetch standard, "CORS-preflight fetch"), and say the answer depends on them.
    asked = (header(request_headers, b"access-control-request-headers") or b"").strip()
    allow = _DEFAULT_ALLOWED
    if asked and len(asked) <= _MAX_PREFLIGHT_HEADERS and _TOKEN_LIST.fullmatch(asked):
        allow = asked.lower()
    reply.record.status = 204
    headers = [
        (name, b"origin, access-control-request-headers" if name == b"vary" else value)
        for name, value in reply.headers()
    ]
    await reply.exchange.respond(
        204,
        [
            *headers,
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-allow-headers", allow),
            (b"access-control-max-age", b"600"),
        ],
        b"",
    )

"""`POST /v1/chat/completions`: the OpenAI Chat Completions API, JSON or SSE.

Stage: the HTTP face, one route. Auth -> read the body (size-limited; only now is
`Expect: 100-continue` answered) -> parse + validate -> the pump, with an SSE or a JSON sink.
The SSE contract is DESIGN.md's "The chat stream": `data:` lines only, `[DONE]` after a clean
finish, one error chunk (and no `[DONE]`) after a failure once the stream has started.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioproxy import framing
from trioproxy.errors import ProxyError
from trioproxy.faces.http.common import (
    ClientGone,
    OneAnswerSink,
    Reply,
    authenticate,
    run_pump,
)
from trioproxy.record import Outcome
from trioproxy.validate import parse_json_body, validate_chat_request

if TYPE_CHECKING:
    from trioproxy import pump
    from trioproxy.faces.http.common import Exchange
    from trioproxy.record import RequestRecord
    from trioproxy.service import Service
    from trioproxy.translate.base import Chunk

__all__ = ["serve_chat"]


async def serve_chat(
    service: Service, exchange: Exchange, reply: Reply, record: RequestRecord
) -> None:
    """Answer one chat completion request; finishes `record` (here or in the pump)."""
    try:
        key = authenticate(service, exchange.headers, record)
        raw = await exchange.read_body(service.config.proxy.max_body_bytes)
        body = validate_chat_request(
            parse_json_body(raw, max_depth=service.config.proxy.max_json_depth),
            limits=service.limits,
        )
    except ProxyError as exc:
        record.fail(exc)
        await reply.error(exc)
        service.finish(record)
        return
    except ClientGone:
        record.outcome = Outcome.CLIENT_CANCELLED
        service.finish(record)
        return
    sink: pump.Sink = SSESink(reply) if body.get("stream") else JSONSink(reply)
    await run_pump(service, exchange, body, key, record, sink)


class SSESink:
    """A chat stream as SSE."""

    __slots__ = ("_exchange", "_reply")

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._exchange = reply.exchange

    async def commit(self) -> None:
        await self._reply.start_stream()

    async def send_chunks(self, chunks: list[Chunk]) -> None:
        if len(chunks) == 1:
            await self._exchange.send(framing.sse_event(chunks[0]))
        else:
            await self._exchange.send(b"".join(framing.sse_event(item) for item in chunks))

    async def keepalive(self) -> None:
        await self._exchange.send(framing.KEEPALIVE)

    async def finish(self) -> None:
        await self._exchange.send(framing.DONE)
        await self._exchange.end()

    async def complete(self, completion: dict[str, Any]) -> None:  # pragma: no cover - streams only
        raise AssertionError("a streaming request has no complete answer")

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        if not committed:
            await self._reply.error(error)
            return
        await self._exchange.send(framing.sse_event(framing.error_body(error)))
        await self._exchange.end()


class JSONSink(OneAnswerSink):
    """A non-streaming answer: one `chat.completion` body, or an error status."""

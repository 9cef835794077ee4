"""ResponsesStreamTranslator (MAPPING.md E): golden transcripts through SSEDecoder + translator,
fed whole, one byte at a time and in random splits; the shared protocol fixtures; the openai SDK's
own stream accumulator as the compatibility check; and a fuzz property.

`Pipeline`, `replay`, `expected` and `sdk_state` are also used by the chat pass-through tests."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import ContentFilterFinishReasonError, LengthFinishReasonError

from tests.support import DATA, PROTOCOL, feed_in_pieces, sdk_final, sdk_state, sse_payloads
from trioproxy.errors import ProxyError, UpstreamProtocolError, UpstreamStatusError
from trioproxy.framing import error_body
from trioproxy.sse import SSEDecoder, SSEEvent
from trioproxy.translate.base import Dialect, StreamMeta, StreamTranslator
from trioproxy.translate.responses import ResponsesDialect, ResponsesStreamTranslator

if TYPE_CHECKING:
    from pathlib import Path

TRANSCRIPTS = DATA / "responses"
META = StreamMeta("chatcmpl-test", 1760000000, "client-model", include_usage=True)
NO_USAGE = StreamMeta("chatcmpl-test", 1760000000, "client-model")
NAMES = sorted(p.stem for p in TRANSCRIPTS.glob("*.sse"))


class Pipeline:
    """bytes -> SSEDecoder -> a dialect's stream translator -> chunks, as the engine chains them.

    A `ProxyError` ends the output with one record of what the client would get instead
    (`{"error": <envelope>, "status": N}`); later input is ignored, as the engine stops there.
    """

    def __init__(self, dialect: Dialect, meta: StreamMeta = META) -> None:
        self.decoder = SSEDecoder()
        self.translator = dialect.stream_translator(meta)
        self.failed = False

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return self._run(lambda: self.decoder.feed(data), finish=False)

    def finish(self) -> list[dict[str, Any]]:
        return self._run(self.decoder.finish, finish=True)

    def _run(self, events: Any, *, finish: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.failed:
            return out
        try:
            for event in events():
                out += self.translator.feed(event)
            if finish:
                out += self.translator.finish()
        except ProxyError as exc:
            self.failed = True
            out.append({**error_body(exc), "status": exc.status})
        return out


def replay(dialect: Dialect, raw: bytes, meta: StreamMeta = META) -> list[dict[str, Any]]:
    """The pipeline's output for `raw` fed whole, byte by byte and in random splits (all equal)."""
    first, *others = feed_in_pieces(lambda: Pipeline(dialect, meta), raw)
    for other in others:
        assert other == first
    return first


def expected(directory: Path, name: str) -> list[dict[str, Any]]:
    text = (directory / f"{name}.expected.jsonl").read_text(encoding="utf-8")
    # split on "\n" only: transcripts carry a raw U+2028, which str.splitlines() splits on
    return [json.loads(line) for line in text.split("\n") if line]


def expected_name(name: str) -> str:
    return name.removesuffix("_crlf")


def assert_chunk_contract(chunks: list[dict[str, Any]], *, include_usage: bool) -> None:
    """CLIENT_EXPECTATIONS.md §5 for a stream that finished (chunks only, no [DONE])."""
    assert chunks[0]["choices"][0]["delta"].get("role") == "assistant"
    assert sum("role" in c["choices"][0]["delta"] for c in chunks if c["choices"]) == 1
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    finishes = [
        i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    last = len(chunks) - (2 if include_usage else 1)
    assert finishes == [last], "exactly one finish chunk, after all content"
    assert chunks[last]["choices"][0]["delta"] == {}
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] >= 0
    assert all(c["usage"] is None for c in chunks if c["choices"])
    assert all("error" not in c for c in chunks)
    seen: set[int] = set()
    for c in chunks:
        if not c["choices"]:
            continue
        for call in c["choices"][0]["delta"].get("tool_calls", []):
            if call["index"] not in seen:
                assert call["index"] == len(seen), "tool indexes count from 0"
                assert call["type"] == "function" and "arguments" in call["function"]
                seen.add(call["index"])
            else:
                assert "id" not in call and "type" not in call
                assert "name" not in call.get("function", {})


# --- golden transcripts ----------------------------------------------------------------------


def test_every_transcript_has_an_expectation() -> None:
    assert len(NAMES) >= 20
    for name in NAMES:
        assert (TRANSCRIPTS / f"{expected_name(name)}.expected.jsonl").exists(), name


@pytest.mark.parametrize("name", NAMES)
def test_transcript_whole_bytewise_and_split(name: str) -> None:
    raw = (TRANSCRIPTS / f"{name}.sse").read_bytes()
    assert replay(ResponsesDialect(), raw) == expected(TRANSCRIPTS, expected_name(name))


@pytest.mark.parametrize("name", NAMES)
def test_transcript_without_include_usage_has_no_usage_chunk(name: str) -> None:
    raw = (TRANSCRIPTS / f"{name}.sse").read_bytes()
    want = [c for c in expected(TRANSCRIPTS, expected_name(name)) if c.get("choices") != []]
    assert replay(ResponsesDialect(), raw, NO_USAGE) == want


def test_crlf_transcript_really_is_crlf_framed() -> None:
    raw = (TRANSCRIPTS / "text_crlf.sse").read_bytes()
    assert raw.count(b"\r\n") == (TRANSCRIPTS / "text.sse").read_bytes().count(b"\n")


@pytest.mark.parametrize("name", NAMES)
def test_transcript_output_keeps_the_chunk_contract(name: str) -> None:
    chunks = expected(TRANSCRIPTS, expected_name(name))
    if "error" in chunks[-1]:
        chunks = chunks[:-1]
        assert not any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
        return
    assert_chunk_contract(chunks, include_usage=True)


def completed_response(raw: bytes) -> dict[str, Any] | None:
    """The `response` object of the transcript's terminal event, if it has one."""
    for event in SSEDecoder().feed(raw):
        if event.data.startswith("{"):
            payload = json.loads(event.data)
            if payload.get("type") in ("response.completed", "response.done"):
                response: dict[str, Any] = payload["response"]
                return response
    return None


@pytest.mark.parametrize("name", NAMES)
def test_openai_sdk_accumulates_the_stream_like_the_non_streaming_answer(name: str) -> None:
    # Two views of one answer must agree: the SDK's accumulation of our chunks, and our
    # translation of the terminal event's complete response object as a non-streaming body.
    raw = (TRANSCRIPTS / f"{name}.sse").read_bytes()
    response = completed_response(raw)
    chunks = expected(TRANSCRIPTS, expected_name(name))
    if response is None or "error" in chunks[-1]:
        return
    final = sdk_final(chunks)
    body = ResponsesDialect().translate_response(json.dumps(response).encode(), META)
    message, want = final.choices[0].message, body["choices"][0]["message"]
    assert message.role == "assistant"
    assert (message.content or None) == (want["content"] or None)
    assert message.refusal == want["refusal"]
    assert getattr(message, "reasoning_content", None) == want.get("reasoning_content")
    calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
    assert calls == [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in want.get("tool_calls", [])
    ]
    assert final.choices[0].finish_reason == body["choices"][0]["finish_reason"]
    logprobs, want_logprobs = final.choices[0].logprobs, body["choices"][0]["logprobs"]
    if want_logprobs is None:
        assert logprobs is None
    else:
        assert logprobs is not None and logprobs.content is not None
        assert [t.model_dump() for t in logprobs.content] == want_logprobs["content"]
    assert final.usage is not None
    assert final.usage.model_dump(exclude_none=True) == body["usage"]


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("incomplete_max_output_tokens", LengthFinishReasonError),
        ("incomplete_content_filter", ContentFilterFinishReasonError),
    ],
)
def test_openai_sdk_raises_for_cut_answers_as_with_openai_itself(
    name: str, error: type[Exception]
) -> None:
    # H.11: the SDK's stream helper raises for length / content_filter, as it does for OpenAI.
    state = sdk_state(expected(TRANSCRIPTS, name))
    with pytest.raises(error):
        state.get_final_completion()


def test_sdk_sees_logprobs_concatenated() -> None:
    final = sdk_state(expected(TRANSCRIPTS, "logprobs")).get_final_completion()
    logprobs = final.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert [t.token for t in logprobs.content] == ["Yes", "é"]
    assert logprobs.content[1].bytes == [0xC3, 0xA9]


# --- the shared protocol fixtures ------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "client"),
    [
        ("stream_text", "stream_text_include_usage"),
        ("stream_function_call", "stream_function_call"),
    ],
)
def test_protocol_stream_fixture_translates_exactly(upstream: str, client: str) -> None:
    raw = (PROTOCOL / "openai_responses" / f"{upstream}.sse").read_bytes()
    got = replay(ResponsesDialect(), raw)
    want = sse_payloads(
        (PROTOCOL / "openai_chat" / "from_responses" / f"{client}.sse").read_bytes()
    )
    assert want[-1] == "[DONE]"  # the framing adds it; the translator never returns it
    # README: id and created values are free; ours come from StreamMeta.
    assert got == [{**c, "id": "chatcmpl-test", "created": 1760000000} for c in want[:-1]]


def test_protocol_stream_fixture_keeps_the_contract_through_the_sdk() -> None:
    raw = (PROTOCOL / "openai_responses" / "stream_function_call.sse").read_bytes()
    chunks = replay(ResponsesDialect(), raw)
    assert_chunk_contract(chunks, include_usage=True)
    final = sdk_state(chunks).get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Reykjavik", "Oslo"]
    assert [c.id for c in calls] == [
        "call_Q7mR2xV9kL4pT1sW8nB3cY6d",
        "call_H5jN8wE2rT6yU3iO9pA1sD4f",
    ]
    assert final.choices[0].message.content is None  # the role chunk said content: null


# --- single behaviours -----------------------------------------------------------------------


def feed_all(payloads: list[Any], meta: StreamMeta = META) -> list[dict[str, Any]]:
    translator = ResponsesStreamTranslator(meta)
    out: list[dict[str, Any]] = []
    for payload in payloads:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        out += translator.feed(SSEEvent(data))
    return out + translator.finish()


COMPLETED = {"type": "response.completed", "response": {"status": "completed", "usage": None}}


def test_role_chunk_waits_for_the_first_output_so_an_early_error_leaves_nothing_sent() -> None:
    translator = ResponsesStreamTranslator(META)
    created = {"type": "response.created", "response": {"model": "gpt-x"}}
    assert translator.feed(SSEEvent(json.dumps(created))) == []
    error = {"type": "error", "code": "rate_limit_exceeded", "message": "slow down"}
    with pytest.raises(UpstreamStatusError) as info:
        translator.feed(SSEEvent(json.dumps(error)))
    assert (info.value.status, info.value.upstream_status) == (429, 200)
    assert info.value.retryable


def test_response_created_is_not_required_and_its_model_is_reported() -> None:
    delta = {"type": "response.output_text.delta", "item_id": "m", "delta": "x"}
    out = feed_all([delta, COMPLETED], NO_USAGE)
    assert [c["model"] for c in out] == ["client-model"] * 3
    created = {"type": "response.created", "response": {"model": "gpt-x"}}
    assert {c["model"] for c in feed_all([created, delta, COMPLETED])} == {"gpt-x"}


def test_usage_is_known_only_after_the_terminal_event() -> None:
    translator = ResponsesStreamTranslator(META)
    translator.feed(SSEEvent(json.dumps({"type": "response.created", "response": {}})))
    assert translator.usage is None and not translator.done
    usage = {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}
    completed = {"type": "response.completed", "response": {"usage": usage}}
    translator.feed(SSEEvent(json.dumps(completed)))
    assert translator.done
    assert translator.usage == {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_missing_usage_still_gives_the_promised_usage_chunk_with_zero_counts() -> None:
    out = feed_all([COMPLETED])
    assert out[-1]["choices"] == [] and out[-1]["usage"]["total_tokens"] == 0


def test_event_name_is_used_when_the_data_has_no_type() -> None:
    translator = ResponsesStreamTranslator(NO_USAGE)
    out = translator.feed(SSEEvent('{"item_id": "m", "delta": "hi"}', "response.output_text.delta"))
    assert [c["choices"][0]["delta"] for c in out] == [
        {"role": "assistant", "content": ""},
        {"content": "hi"},
    ]


def test_arguments_for_a_call_never_added_are_a_protocol_error() -> None:
    delta = {"type": "response.function_call_arguments.delta", "item_id": "fc_x", "delta": "{"}
    with pytest.raises(UpstreamProtocolError, match="never added"):
        feed_all([delta])


def test_arguments_are_found_by_output_index_when_the_item_id_differs() -> None:
    added = {
        "type": "response.output_item.added",
        "output_index": 3,
        "item": {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": ""},
    }
    delta = {"type": "response.function_call_arguments.delta", "output_index": 3, "delta": "{}"}
    out = feed_all([added, delta, COMPLETED], NO_USAGE)
    assert out[2]["choices"][0]["delta"] == {
        "tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]
    }
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_call_first_seen_at_output_item_done_is_started_there() -> None:
    arguments_done = {
        "type": "response.function_call_arguments.done",
        "item_id": "fc_9",
        "arguments": "{}",
    }
    item = {
        "id": "fc_9",
        "type": "function_call",
        "call_id": "call_9",
        "name": "f",
        "arguments": "{}",
    }
    item_done = {"type": "response.output_item.done", "output_index": 0, "item": item}
    out = feed_all([arguments_done, item_done, COMPLETED], NO_USAGE)
    start = {
        "index": 0,
        "id": "call_9",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    assert [c["choices"][0]["delta"] for c in out] == [
        {"role": "assistant", "content": None},
        {"tool_calls": [start]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
        {},
    ]


def test_arguments_in_done_that_contradict_the_deltas_are_not_resent() -> None:
    added = {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {"id": "fc_1", "type": "function_call", "call_id": "c", "name": "f"},
    }
    delta = {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": '{"a"'}
    done = {
        "type": "response.function_call_arguments.done",
        "item_id": "fc_1",
        "arguments": '{"b":1}',
    }
    out = feed_all([added, delta, done, COMPLETED], NO_USAGE)
    arguments = [
        call["function"].get("arguments")
        for c in out
        for call in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert arguments == ["", '{"a"']


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        ({"code": "server_error", "message": "m"}, 500, "server_error", "server_error"),
        ({"code": "invalid_prompt", "message": "m"}, 400, "server_error", "invalid_prompt"),
        (
            {"code": "vector_store_timeout", "message": "m"},
            504,
            "server_error",
            "vector_store_timeout",
        ),
        ({"code": "something_new", "message": "m", "type": "weird"}, 500, "weird", "something_new"),
        (None, 500, "server_error", None),
    ],
)
def test_failed_response_status_follows_its_code_else_500(
    error: Any, status: int, kind: str, code: str | None
) -> None:
    failed = {"type": "response.failed", "response": {"status": "failed", "error": error}}
    with pytest.raises(UpstreamStatusError) as info:
        feed_all([failed])
    assert (info.value.status, info.value.error_type, info.value.code) == (status, kind, code)


def test_response_done_with_status_failed_is_a_failure() -> None:
    done = {"type": "response.done", "response": {"status": "failed", "error": {"message": "x"}}}
    with pytest.raises(UpstreamStatusError, match="x"):
        feed_all([done])


def test_nested_error_fields_win_over_flat_ones() -> None:
    error = {
        "type": "error",
        "message": "flat",
        "error": {"type": "invalid_request_error", "message": "nested", "param": "input"},
    }
    with pytest.raises(UpstreamStatusError) as info:
        feed_all([error])
    exc = info.value
    assert (exc.message, exc.error_type, exc.param, exc.status) == (
        "nested",
        "invalid_request_error",
        "input",
        400,
    )


@pytest.mark.parametrize("data", ["null", "[1]", "{", '"text"'])
def test_data_that_is_not_a_json_object_is_a_protocol_error(data: str) -> None:
    with pytest.raises(UpstreamProtocolError):
        feed_all([data])


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "response.output_text.delta", "delta": 5},
        {"type": "response.output_item.added", "item": "nope"},
        {"type": "response.output_item.added", "item": {"type": "function_call", "name": "f"}},
        {"type": "response.reasoning_summary_text.delta"},
    ],
)
def test_known_events_missing_their_fields_are_protocol_errors(payload: dict[str, Any]) -> None:
    with pytest.raises(UpstreamProtocolError):
        feed_all([payload])


def test_finish_without_any_event_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match=r"response\.completed"):
        ResponsesStreamTranslator(META).finish()


def test_blank_data_is_ignored() -> None:
    assert feed_all([" ", COMPLETED], NO_USAGE)[-1]["choices"][0]["finish_reason"] == "stop"


# --- fuzz: any event list gives chunks that keep the contract, or a ProxyError ----------------

_TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.output_item.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_summary_part.added",
    "response.reasoning_summary_text.delta",
    "response.reasoning_text.delta",
    "response.completed",
    "response.incomplete",
    "response.done",
    "response.failed",
    "error",
    "response.unknown",
]
_scalars = st.none() | st.booleans() | st.integers(-2, 3) | st.sampled_from(["", "x", "fc_1", "{"])
_json = st.recursive(
    _scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(["a", "type"]), kids),
    max_leaves=6,
)
_item = st.fixed_dictionaries(
    {"type": st.sampled_from(["function_call", "message", "reasoning", "web_search_call"])},
    optional={
        "id": st.sampled_from(["fc_1", "fc_2"]),
        "call_id": st.sampled_from(["call_1", "call_2"]),
        "name": st.just("f"),
        "arguments": st.sampled_from(["", "{}", '{"a":1}']),
    },
)
_response = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["completed", "incomplete", "failed", "queued"]),
        "model": st.sampled_from(["m", ""]),
        "usage": st.none()
        | st.fixed_dictionaries({"input_tokens": st.integers(-1, 9), "output_tokens": _json}),
        "error": _json | st.fixed_dictionaries({"code": _json, "message": _json}),
        "incomplete_details": st.fixed_dictionaries({"reason": _json}),
    },
)
_payload = st.fixed_dictionaries(
    {"type": st.sampled_from(_TYPES)},
    optional={
        "item": _item | _json,
        "item_id": st.sampled_from(["fc_1", "fc_2", "msg_1"]) | _json,
        "output_index": st.integers(0, 2) | _json,
        "delta": st.sampled_from(["", "x", '{"a"', "é"]) | _json,
        "arguments": st.sampled_from(["", '{"a":1}']) | _json,
        "response": _response | _json,
        "error": _json | st.fixed_dictionaries({"message": _json, "type": _json}),
        "code": _json,
        "message": _json,
        "summary_index": st.integers(0, 1),
        "content_index": st.integers(0, 1),
        "logprobs": st.lists(st.fixed_dictionaries({"token": _json, "logprob": _json}), max_size=2),
    },
)
# Well-formed events, so that many generated streams get far enough to finish.
_valid = st.sampled_from(
    [
        {"type": "response.created", "response": {"model": "gpt-x"}},
        {"type": "response.output_text.delta", "item_id": "msg_1", "delta": "hi"},
        {"type": "response.reasoning_summary_text.delta", "item_id": "rs", "delta": "r"},
        {"type": "response.reasoning_summary_text.delta", "summary_index": 1, "delta": "s"},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f"},
        },
        {
            "type": "response.output_item.added",
            "output_index": 2,
            "item": {"id": "fc_2", "type": "function_call", "call_id": "call_2", "name": "g"},
        },
        {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "delta": '{"a":'},
        {"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{}"},
        {
            "type": "response.function_call_arguments.done",
            "item_id": "fc_1",
            "arguments": '{"a":1}',
        },
        {"type": "response.completed", "response": {"usage": {"input_tokens": 1}}},
        {"type": "response.incomplete", "response": {"incomplete_details": {"reason": "x"}}},
    ]
)
_event = st.builds(
    SSEEvent,
    data=(_valid | _valid | _payload).map(json.dumps)
    | st.sampled_from(["[DONE]", "null", "{", "", "3"]),
    event=st.sampled_from(["message", "response.output_text.delta"]),
)


def run_translator(
    translator: StreamTranslator, events: list[SSEEvent], meta: StreamMeta
) -> list[dict[str, Any]] | None:
    """Feed every event, then finish; None when a ProxyError ended the stream (the only exception
    allowed). A stream that finished must keep the chunk contract and satisfy openai-python's
    accumulator."""
    out: list[dict[str, Any]] = []
    try:
        for event in events:
            out += translator.feed(event)
        out += translator.finish()
    except ProxyError:
        return None
    assert all(isinstance(c, dict) for c in out)
    json.dumps(out, allow_nan=False)  # every chunk can be framed
    assert_chunk_contract(out, include_usage=meta.include_usage)
    sdk_final(out)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_event, max_size=12), st.booleans())
def test_any_event_list_gives_contract_chunks_or_a_proxy_error(
    events: list[SSEEvent], include_usage: bool
) -> None:
    meta = StreamMeta("chatcmpl-test", 1760000000, "client-model", include_usage=include_usage)
    run_translator(ResponsesStreamTranslator(meta), events, meta)

"""AnthropicStreamTranslator (MAPPING.md C): golden transcripts through SSEDecoder + translator,
fed whole, one byte at a time and in random splits; the shared protocol fixtures; the openai SDK's
own stream accumulator as the compatibility check; and a fuzz property."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai import ContentFilterFinishReasonError, LengthFinishReasonError

from tests.support import DATA, PROTOCOL, feed_in_pieces, sdk_state, sse_payloads
from trioproxy.errors import ProxyError, UpstreamProtocolError, UpstreamStatusError
from trioproxy.framing import error_body
from trioproxy.sse import SSEDecoder, SSEEvent
from trioproxy.translate.anthropic import AnthropicDialect, AnthropicStreamTranslator
from trioproxy.translate.base import Dialect, StreamMeta, StreamTranslator, Target

TRANSCRIPTS = DATA / "anthropic"
META = StreamMeta("chatcmpl-test", 1760000000, "client-model", include_usage=True)
NO_USAGE = StreamMeta("chatcmpl-test", 1760000000, "client-model")
NAMES = sorted(p.stem for p in TRANSCRIPTS.glob("*.sse"))


class Pipeline:
    """bytes -> SSEDecoder -> AnthropicStreamTranslator -> chunks, as the engine chains them.

    A `ProxyError` ends the output with one record of what the client would get instead
    (`{"error": <envelope>, "status": N}`); later input is ignored, as the engine stops there.
    """

    def __init__(self, meta: StreamMeta = META) -> None:
        self.decoder = SSEDecoder()
        self.translator = AnthropicDialect().stream_translator(meta)
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


def replay(raw: bytes, meta: StreamMeta = META) -> list[dict[str, Any]]:
    """The pipeline's output for `raw` fed whole, byte by byte and in random splits (all equal)."""
    first, *others = feed_in_pieces(lambda: Pipeline(meta), raw)
    for other in others:
        assert other == first
    return first


def expected(name: str) -> list[dict[str, Any]]:
    text = (TRANSCRIPTS / f"{name}.expected.jsonl").read_text(encoding="utf-8")
    # split on "\n" only: transcripts carry a raw U+2028, which str.splitlines() splits on
    return [json.loads(line) for line in text.split("\n") if line]


def expected_name(name: str) -> str:
    return "text" if name == "text_crlf" else name


def transcript(name: str) -> bytes:
    return (TRANSCRIPTS / f"{name}.sse").read_bytes()


# --- golden transcripts ----------------------------------------------------------------------


def test_every_transcript_has_an_expectation() -> None:
    assert len(NAMES) >= 17
    for name in NAMES:
        assert (TRANSCRIPTS / f"{expected_name(name)}.expected.jsonl").exists(), name


@pytest.mark.parametrize("name", NAMES)
def test_transcript_whole_bytewise_and_split(name: str) -> None:
    assert replay(transcript(name)) == expected(expected_name(name))


@pytest.mark.parametrize("name", NAMES)
def test_transcript_without_include_usage_has_no_usage_chunk(name: str) -> None:
    want = [c for c in expected(expected_name(name)) if c.get("choices") != []]
    assert replay(transcript(name), NO_USAGE) == want


def test_crlf_transcript_really_is_crlf_framed() -> None:
    raw = transcript("text_crlf")
    assert raw.count(b"\r\n") == transcript("text").count(b"\n")


@pytest.mark.parametrize("name", NAMES)
def test_transcript_output_keeps_the_chunk_contract(name: str) -> None:
    chunks = expected(expected_name(name))
    failed = "error" in chunks[-1]
    if failed:
        chunks = chunks[:-1]
        if not chunks:
            return  # failed before any output: the client gets an HTTP error instead
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert sum("role" in c["choices"][0]["delta"] for c in chunks if c["choices"]) == 1
    finishes = [
        i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    if failed:
        assert not finishes, "no finish chunk after an error"
        return
    assert finishes == [len(chunks) - 2]
    assert chunks[-2]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] >= 0
    first_deltas: dict[int, dict[str, Any]] = {}
    for c in chunks[:-1]:
        assert c["usage"] is None
        for call in c["choices"][0]["delta"].get("tool_calls", []):
            if call["index"] not in first_deltas:
                assert call["index"] == len(first_deltas), "tool indexes count from 0"
                assert set(call) == {"index", "id", "type", "function"}
                assert call["function"]["arguments"] == ""
                first_deltas[call["index"]] = call
            else:
                assert set(call) == {"index", "function"}
                assert set(call["function"]) == {"arguments"}


def test_tool_argument_fragments_pass_through_byte_exact() -> None:
    raw = transcript("tools")
    fragments = [
        e["delta"]["partial_json"]
        for e in (json.loads(x.data) for x in SSEDecoder().feed(raw))
        if e["type"] == "content_block_delta"
    ]
    sent = [
        call["function"]["arguments"]
        for c in replay(raw)
        if c.get("choices")
        for call in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert sent == [""] + [f for f in fragments if f]
    assert "\\u00e9" in "".join(sent)  # the escape is not re-serialised


# --- the shared protocol fixtures ------------------------------------------------------------

PROTOCOL_STREAMS = [
    ("stream_text", "stream_text", False),
    ("stream_text", "stream_text_include_usage", True),
    ("stream_thinking_text", "stream_thinking_text", True),
    ("stream_tool_use", "stream_tool_calls", True),
    ("stream_error_overloaded", "stream_error_overloaded", False),
]


def comparable(payload: dict[str, Any]) -> dict[str, Any]:
    # README: ids and created are free; a chunk without "usage" is the same as "usage": null.
    if "error" in payload:
        return {"error": payload["error"]}
    out = {k: v for k, v in payload.items() if k not in ("id", "created")}
    out.setdefault("usage", None)
    return out


@pytest.mark.parametrize(("upstream", "client", "include_usage"), PROTOCOL_STREAMS)
def test_protocol_stream_fixture(upstream: str, client: str, include_usage: bool) -> None:
    meta = META if include_usage else NO_USAGE
    got = replay((PROTOCOL / "anthropic" / f"{upstream}.sse").read_bytes(), meta)
    want = sse_payloads((PROTOCOL / "openai_chat/from_anthropic" / f"{client}.sse").read_bytes())
    if want[-1] == "[DONE]":  # the framing's, not a chunk
        want = want[:-1]
    # Our one addition: the thinking_blocks chunk before the finish chunk (anthropic_stream
    # docstring). The fixtures predate it; it is checked on its own below.
    extension = [
        c for c in got if "thinking_blocks" in (c.get("choices") or [{}])[0].get("delta", {})
    ]
    got = [c for c in got if c not in extension]
    assert [comparable(c) for c in got] == [comparable(c) for c in want]
    assert len(extension) == (1 if upstream == "stream_thinking_text" else 0)


def test_protocol_thinking_fixture_exposes_the_signed_thinking_block() -> None:
    chunks = replay((PROTOCOL / "anthropic/stream_thinking_text.sse").read_bytes())
    [blocks] = [
        c["choices"][0]["delta"]["thinking_blocks"]
        for c in chunks
        if c.get("choices") and "thinking_blocks" in c["choices"][0]["delta"]
    ]
    assert [b["type"] for b in blocks] == ["thinking"]
    assert blocks[0]["thinking"].startswith("The user wants to know whether 1001 is prime.")
    assert blocks[0]["signature"].startswith("EqQBCkgIBxABGAIiQF3k9sTq1cV0nGm8yXb2r7PzW4hJ6aLd0")


def test_protocol_error_event_raises_with_the_error_type_status() -> None:
    translator = AnthropicStreamTranslator(NO_USAGE)
    events = SSEDecoder().feed((PROTOCOL / "anthropic/stream_error_overloaded.sse").read_bytes())
    *before, error = events
    for event in before:
        translator.feed(event)
    with pytest.raises(UpstreamStatusError) as info:
        translator.feed(error)
    assert (info.value.status, info.value.upstream_status) == (529, 200)
    assert info.value.error_type == "overloaded_error"
    assert not translator.done


# --- the openai SDK's stream accumulator as the compatibility proof --------------------------


def test_sdk_accumulates_text_and_usage() -> None:
    final = sdk_state(replay(transcript("text"))).get_final_completion()
    assert (
        final.choices[0].message.content
        == "Ping-pong 🏓 at 40 °C — a line\u2028separator and \u00d72."
    )
    assert final.choices[0].message.role == "assistant"
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (19, 14)
    assert final.model == "claude-sonnet-4-5-20250929"


def test_sdk_accumulates_reasoning_and_thinking_blocks() -> None:
    final = sdk_state(replay(transcript("thinking_text"))).get_final_completion()
    message = final.choices[0].message.model_dump()
    assert message["content"] == "Let me double-check. 17 \u00d7 3 = 51."
    assert message["reasoning_content"] == (
        "Two blocks: first I plan. 17 \u00d7 3 = 51.\n\n51 ÷ 3 = 17, confirmed."
    )
    assert [(b["type"], b["thinking"]) for b in message["thinking_blocks"]] == [
        ("thinking", "Two blocks: first I plan. 17 \u00d7 3 = 51."),
        ("thinking", "51 ÷ 3 = 17, confirmed."),
    ]
    assert all(b["signature"] for b in message["thinking_blocks"])
    assert final.usage is not None
    assert final.usage.completion_tokens_details is not None
    assert final.usage.completion_tokens_details.reasoning_tokens == 70


@pytest.mark.parametrize(
    ("name", "calls", "text"),
    [
        ("tools", [("read_file", {"path": "notes/café \u2013 ünïcode.md", "lines": [1, 20]})], ""),
        (
            "parallel_tools",
            [("stat", {"path": "a.txt"}), ("stat", {"path": "b.txt", "follow": True})],
            "Checking both files.",
        ),
        ("tool_no_args", [("get_time", {})], ""),
    ],
)
def test_sdk_accumulates_tool_calls(
    name: str, calls: list[tuple[str, dict[str, Any]]], text: str
) -> None:
    # content "" (not None) for a tool-only answer: the role chunk's `"content": ""` (base.py).
    final = sdk_state(replay(transcript(name))).get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.content == text
    assert message.tool_calls is not None
    got = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]
    assert got == calls
    assert all(c.id.startswith("toolu_") and c.type == "function" for c in message.tool_calls)


def test_sdk_accumulates_the_protocol_tool_fixture() -> None:
    chunks = replay((PROTOCOL / "anthropic/stream_tool_use.sse").read_bytes())
    final = sdk_state(chunks).get_final_completion()
    assert final.choices[0].message.tool_calls is not None
    assert [
        json.loads(c.function.arguments)["city"] for c in final.choices[0].message.tool_calls
    ] == [
        "Reykjavik",
        "Oslo",
    ]
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.total_tokens) == (412, 508)
    assert final.usage.prompt_tokens_details is not None
    assert final.usage.prompt_tokens_details.cached_tokens == 400


def test_sdk_sees_length_when_max_tokens_cuts_a_tool_call() -> None:
    # C.3: the cut arguments stay cut; openai-python raises LengthFinishReasonError (H.11).
    state = sdk_state(replay(transcript("max_tokens_in_tool")))
    with pytest.raises(LengthFinishReasonError):
        state.get_final_completion()
    call = state.current_completion_snapshot.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.arguments.endswith("The first point is that")


def test_sdk_sees_content_filter_for_a_refusal() -> None:
    with pytest.raises(ContentFilterFinishReasonError):
        sdk_state(replay(transcript("refusal"))).get_final_completion()


def test_streamed_thinking_blocks_round_trip_into_the_next_request() -> None:
    # The multi-turn proof: what the SDK accumulated, sent back as the assistant message.
    final = sdk_state(replay(transcript("redacted_thinking"))).get_final_completion()
    assistant = final.choices[0].message.model_dump(exclude_none=True)
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "Hi"},
            assistant,
            {"role": "user", "content": "More"},
        ],
        "reasoning_effort": "low",
    }
    out = json.loads(AnthropicDialect().build_request(body, Target("m")).body)
    assert [b["type"] for b in out["messages"][1]["content"]] == [
        "redacted_thinking",
        "thinking",
        "text",
    ]
    assert out["messages"][1]["content"][1]["signature"].startswith("EpUBCkYIBxgCKkBx")


# --- event-level rules -----------------------------------------------------------------------


def events(*payloads: dict[str, Any] | str) -> list[SSEEvent]:
    out = []
    for p in payloads:
        if isinstance(p, str):
            out.append(SSEEvent(p))
        else:
            out.append(SSEEvent(json.dumps(p), event=str(p.get("type", "message"))))
    return out


START = {"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 1}}}


def run(*payloads: dict[str, Any] | str) -> list[dict[str, Any]]:
    translator = AnthropicStreamTranslator(META)
    out: list[dict[str, Any]] = []
    for event in events(*payloads):
        out += translator.feed(event)
    return out


def test_role_chunk_is_sent_at_message_start() -> None:
    # C.2; DESIGN.md commits the response headers at the first upstream event.
    translator = AnthropicStreamTranslator(META)
    [role] = translator.feed(events(START)[0])
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert role["model"] == "claude-x"


def test_usage_property_tracks_the_cumulative_counters() -> None:
    translator = AnthropicStreamTranslator(META)
    assert translator.usage is None
    translator.feed(events(START)[0])
    assert translator.usage == {
        "prompt_tokens": 1,
        "completion_tokens": 0,
        "total_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    for usage in ({"output_tokens": 5}, {"output_tokens": 9, "input_tokens": None}):
        translator.feed(events({"type": "message_delta", "delta": {}, "usage": usage})[0])
    assert translator.usage is not None
    assert translator.usage["completion_tokens"] == 9  # overwritten, never added (H.12)
    assert translator.usage["prompt_tokens"] == 1  # null is "not reported"


def test_done_only_after_message_stop_and_later_events_are_ignored() -> None:
    translator = AnthropicStreamTranslator(META)
    for event in events(START, {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}):
        translator.feed(event)
    assert not translator.done
    with pytest.raises(UpstreamProtocolError):
        translator.finish()  # P-C2 is not followed: EOF before message_stop is an error
    assert translator.feed(events({"type": "message_stop"})[0])
    assert translator.done
    assert translator.finish() == []
    assert translator.feed(events(START)[0]) == []
    assert translator.feed(SSEEvent("not json")) == []


@pytest.mark.parametrize(
    "payloads",
    [
        [{"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}],
        [{"type": "message_stop"}],
        [START, START],
        [
            START,
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "x"},
            },
        ],
        [START, {"type": "content_block_stop", "index": 3}],
        [
            START,
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        ],
        [
            START,
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "{"},
            },
        ],
        [
            START,
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            {"type": "content_block_stop", "index": 0},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "late"},
            },
        ],
        [START, {"type": "content_block_start", "index": "0", "content_block": {"type": "text"}}],
        [START, {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use"}}],
        [START, "not json"],
        [START, "[1, 2]"],
        [{"type": "message_start", "message": "nope"}],
    ],
)
def test_malformed_or_out_of_order_events_are_protocol_errors(payloads: list[Any]) -> None:
    with pytest.raises(UpstreamProtocolError):
        run(*payloads)


def test_unknown_and_ping_events_before_message_start_are_ignored() -> None:
    translator = AnthropicStreamTranslator(META)
    for event in [
        *events({"type": "ping"}, {"type": "future_thing"}, "{}"),
        SSEEvent("", event="ping"),  # an empty-data ping is not parsed (H.16)
    ]:
        assert translator.feed(event) == []
    assert translator.usage is None


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("overloaded_error", 529),
        ("rate_limit_error", 429),
        ("api_error", 500),
        ("invalid_request_error", 400),
        ("timeout_error", 504),
        ("some_new_error", 502),
    ],
)
def test_error_event_status_follows_the_error_type(error_type: str, status: int) -> None:
    with pytest.raises(UpstreamStatusError) as info:
        run(START, {"type": "error", "error": {"type": error_type, "message": "boom"}})
    assert (info.value.status, info.value.upstream_status, info.value.error_type) == (
        status,
        200,
        error_type,
    )
    assert info.value.message == "boom"


def test_error_event_without_details_still_raises_an_upstream_error() -> None:
    with pytest.raises(UpstreamStatusError) as info:
        run({"type": "error"})
    assert info.value.status == 500
    assert info.value.message == "upstream reported an error"


def test_non_empty_initial_block_text_is_emitted() -> None:
    out = run(
        START,
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": "Hi"},
        },
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "thinking", "thinking": "Hm"},
        },
    )
    assert [c["choices"][0]["delta"] for c in out[1:]] == [
        {"content": "Hi"},
        {"reasoning_content": "Hm"},
    ]


def test_tool_input_given_whole_in_content_block_start_is_sent_at_stop() -> None:
    out = run(
        START,
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": "é"}},
        },
        {"type": "content_block_stop", "index": 0},
    )
    assert out[-1]["choices"][0]["delta"] == {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"a":"é"}'}}]
    }


def table(name: str) -> list[dict[str, Any]]:
    rows = json.loads((PROTOCOL / "tables" / name).read_text(encoding="utf-8"))
    return [row for row in rows if row["upstream"] == "anthropic"]


@pytest.mark.parametrize("row", table("usage.json"))
def test_usage_table_through_the_stream(row: dict[str, Any]) -> None:
    # message_start carries the input counters, message_delta the cumulative rest (H.12).
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 0, "output_tokens": 1}}}
    out = run(
        start, {"type": "message_delta", "delta": {}, "usage": row["in"]}, {"type": "message_stop"}
    )
    assert out[-1]["choices"] == []
    assert out[-1]["usage"] == row["out"]


@pytest.mark.parametrize("row", table("stop_reason_to_finish_reason.json"))
def test_stop_reason_table_through_the_stream(row: dict[str, Any]) -> None:
    delta = {"type": "message_delta", "delta": {"stop_reason": row["stop_reason"]}}
    out = run(START, delta, {"type": "message_stop"})
    assert out[-2]["choices"][0]["finish_reason"] == row["finish_reason"]


def test_dialect_satisfies_the_protocols() -> None:
    dialect: Dialect = AnthropicDialect()  # checked by mypy --strict
    translator: StreamTranslator = dialect.stream_translator(META)
    assert translator.usage is None
    assert not translator.done


# --- property: any event list gives chunks or a ProxyError, never another exception ----------

_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2, 5), st.text(max_size=6))
_json = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_maybe_str = st.one_of(st.text(max_size=6), _scalar)
_block = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["text", "thinking", "redacted_thinking", "tool_use", "server_tool_use", "future", 3]
        )
    },
    optional={
        "text": _maybe_str,
        "thinking": _maybe_str,
        "signature": _maybe_str,
        "data": _maybe_str,
        "id": _maybe_str,
        "name": _maybe_str,
        "input": _json,
    },
)
_delta = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "text_delta",
                "thinking_delta",
                "signature_delta",
                "input_json_delta",
                "citations_delta",
                "future_delta",
                None,
            ]
        )
    },
    optional={
        "text": _maybe_str,
        "thinking": _maybe_str,
        "signature": _maybe_str,
        "partial_json": _maybe_str,
    },
)
_index = st.one_of(st.integers(0, 3), _scalar)
_usage = st.dictionaries(
    st.sampled_from(
        ["input_tokens", "output_tokens", "cache_read_input_tokens", "output_tokens_details"]
    ),
    _json,
    max_size=3,
)
_payload = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("message_start")},
        optional={
            "message": st.one_of(
                st.fixed_dictionaries({}, optional={"model": _maybe_str, "usage": _usage}), _json
            )
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("content_block_start")},
        optional={"index": _index, "content_block": st.one_of(_block, _json)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("content_block_delta")},
        optional={"index": _index, "delta": st.one_of(_delta, _json)},
    ),
    st.fixed_dictionaries({"type": st.just("content_block_stop")}, optional={"index": _index}),
    st.fixed_dictionaries(
        {"type": st.just("message_delta")},
        optional={
            "delta": st.one_of(
                st.fixed_dictionaries({}, optional={"stop_reason": _maybe_str}), _json
            ),
            "usage": st.one_of(_usage, _json),
        },
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["message_stop", "ping", "future_event"])}),
    st.fixed_dictionaries(
        {"type": st.just("error")},
        optional={
            "error": st.one_of(
                st.fixed_dictionaries({"type": _maybe_str, "message": _maybe_str}), _json
            )
        },
    ),
    _json,
)
_event = st.one_of(
    st.builds(
        lambda payload, name: SSEEvent(json.dumps(payload), event=name),
        _payload,
        st.sampled_from(["message", "ping", "content_block_delta", "message_start"]),
    ),
    st.builds(SSEEvent, st.text(max_size=10)),
)


# Real transcripts with a few mutations: keys dropped, values replaced by junk, events dropped,
# repeated or swapped. Random lists rarely build the sequences that reach deep code paths (a
# delta for a started block of the right kind); mutated real streams do.
_REAL = [
    [json.loads(e.data) for e in SSEDecoder().feed(p.read_bytes()) if e.data.strip()]
    for p in sorted([*TRANSCRIPTS.glob("*.sse"), *(PROTOCOL / "anthropic").glob("*.sse")])
]


def _key_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    if isinstance(value, dict):
        for key, inner in value.items():
            out.append((*path, key))
            out += _key_paths(inner, (*path, key))
    return out


@st.composite
def _mutated_stream(draw: st.DrawFn) -> list[SSEEvent]:
    stream = json.loads(json.dumps(draw(st.sampled_from(_REAL))))  # a deep copy
    for _ in range(draw(st.integers(1, 4))):
        if not stream:
            break
        at = draw(st.integers(0, len(stream) - 1))
        op = draw(st.sampled_from(["drop_key", "junk", "junk", "delete", "repeat", "swap"]))
        paths = _key_paths(stream[at])
        if op in ("drop_key", "junk") and paths:
            *parents, key = draw(st.sampled_from(paths))
            holder = stream[at]
            for parent in parents:
                holder = holder[parent]
            if op == "drop_key":
                del holder[key]
            else:
                holder[key] = draw(_json)
        elif op == "delete":
            del stream[at]
        elif op == "repeat":
            stream.insert(at, stream[at])
        elif op == "swap":
            other = draw(st.integers(0, len(stream) - 1))
            stream[at], stream[other] = stream[other], stream[at]
    return [SSEEvent(json.dumps(p)) for p in stream]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(_event, max_size=25), _mutated_stream()))
def test_any_event_list_gives_chunks_or_a_proxy_error(event_list: list[SSEEvent]) -> None:
    translator = AnthropicStreamTranslator(META)
    chunks: list[dict[str, Any]] = []
    try:
        for event in event_list:
            chunks += translator.feed(event)
        chunks += translator.finish()
    except ProxyError:
        pass
    # Whatever came out keeps the chunk contract: role first and once, one finish at most,
    # nothing but the usage chunk after it, a tool's id and name only in its first delta.
    if chunks:
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert sum(bool(c["choices"]) and "role" in c["choices"][0]["delta"] for c in chunks) <= 1
    finishes = [
        i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert len(finishes) <= 1
    if finishes:
        assert len(chunks) - finishes[0] == 2  # the finish chunk, then the usage chunk
        assert translator.done
    seen: set[int] = set()
    for c in chunks:
        json.dumps(c)  # serialisable
        for call in (c["choices"] or [{"delta": {}}])[0]["delta"].get("tool_calls", []):
            assert ("id" in call) is (call["index"] not in seen)
            seen.add(call["index"])
    assert seen == set(range(len(seen)))

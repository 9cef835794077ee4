"""translate/from_anthropic_count: the documented count_tokens estimate, and the Anthropic face's
relay framing (`frame_event`). Pure: no trio, no sockets."""

from __future__ import annotations

import base64
import math

from hypothesis import given
from hypothesis import strategies as st

from trioproxy.faces.http.messages import frame_event
from trioproxy.sse import SSEDecoder, SSEEvent
from trioproxy.translate.from_anthropic_count import (
    IMAGE_TOKENS,
    MESSAGE_TOKENS,
    PDF_PAGE_TOKENS,
    TOOLS_SYSTEM_TOKENS,
    estimate_input_tokens,
)

PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}


def _pdf(pages: int) -> str:
    body = b"%%PDF-1.7\n1 0 obj << /Type /Pages /Count %d >> endobj\n" % pages
    body += b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % (i + 2) for i in range(pages))
    return base64.b64encode(body).decode()


def test_text_is_a_token_per_four_characters_plus_turn_overhead() -> None:
    body = {
        "model": "m",
        "system": [{"type": "text", "text": "x" * 10, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "y" * 7},
            {"role": "assistant", "content": [{"type": "text", "text": "z" * 4}]},
        ],
    }
    assert estimate_input_tokens(body) == 2 * MESSAGE_TOKENS + math.ceil(21 / 4)


def test_images_pdfs_and_tools_use_their_documented_costs() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": PNG},
                    {"type": "document", "source": {"type": "base64", "data": _pdf(3)}},
                ],
            }
        ],
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
    }
    tool_chars = len('[{"name":"t","input_schema":{"type":"object"}}]')
    assert estimate_input_tokens(body) == (
        MESSAGE_TOKENS
        + IMAGE_TOKENS
        + 3 * PDF_PAGE_TOKENS
        + TOOLS_SYSTEM_TOKENS
        + math.ceil(tool_chars / 4)
    )


def test_earlier_thinking_is_not_counted_and_tool_turns_are() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "t" * 400, "signature": "s" * 400},
                    {"type": "redacted_thinking", "data": "d" * 400},
                    {"type": "tool_use", "id": "toolu_1", "name": "ab", "input": {"k": 1}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
            },
        ],
    }
    # "ab" + '{"k":1}' + "ok" = 2 + 7 + 2 characters
    assert estimate_input_tokens(body) == 2 * MESSAGE_TOKENS + math.ceil(11 / 4)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
)


@given(JSON)
def test_any_json_is_counted_without_raising(body: object) -> None:
    assert estimate_input_tokens(body) >= 0
    assert estimate_input_tokens({"model": "m", "messages": [body], "system": body}) >= 0


def test_frame_event_writes_the_event_as_it_came() -> None:
    named = SSEEvent(data='{"type":"message_stop"}', event="message_stop")
    assert frame_event(named) == b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    unnamed = SSEEvent(data="a\nb", id="7")
    assert frame_event(unnamed) == b"id: 7\ndata: a\ndata: b\n\n"


@given(
    st.lists(
        st.builds(
            SSEEvent,
            # the decoder never dispatches an event with empty data (WHATWG HTML 9.2.6)
            data=st.text(
                alphabet=st.characters(blacklist_characters="\r\x00", blacklist_categories=("Cs",)),
                min_size=1,
            ),
            event=st.sampled_from(["message", "ping", "content_block_delta", "future_x"]),
        ),
        max_size=5,
    )
)
def test_frame_event_round_trips_through_the_decoder(events: list[SSEEvent]) -> None:
    decoder = SSEDecoder()
    out = decoder.feed(b"".join(frame_event(event) for event in events))
    out += decoder.finish()
    assert [(e.event, e.data) for e in out] == [(e.event, e.data) for e in events]

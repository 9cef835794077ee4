"""SSEDecoder: the WHATWG event-stream rules, fed whole, byte by byte and in random splits."""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import PROTOCOL, feed_in_pieces
from trioproxy.errors import UpstreamProtocolError
from trioproxy.sse import SSEDecoder, SSEEvent

if TYPE_CHECKING:
    from pathlib import Path

FIXTURES = sorted(PROTOCOL.rglob("*.sse"))


def decode(data: bytes) -> list[SSEEvent]:
    """Decode `data` whole, byte by byte and in random splits; assert they agree; return it."""
    first, *others = feed_in_pieces(SSEDecoder, data)
    for other in others:
        assert other == first
    return first


def decode_cut(data: bytes, cuts: list[int]) -> list[SSEEvent]:
    decoder, out, pos = SSEDecoder(), [], 0
    for cut in [*cuts, len(data)]:
        out += decoder.feed(data[pos:cut])
        pos = cut
    return out + decoder.finish()


# --- the examples of WHATWG HTML 9.2.5 / 9.2.6 ---------------------------------------------


def test_whatwg_multiline_data_is_joined_with_lf() -> None:
    assert decode(b"data: YHOO\ndata: +2\ndata: 10\n\n") == [SSEEvent("YHOO\n+2\n10")]


def test_whatwg_comment_id_and_leading_space_example() -> None:
    stream = (
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n\n"
    )
    assert decode(stream) == [
        SSEEvent("first event", id="1"),
        SSEEvent("second event", id=""),  # "id" with no value resets the last event ID
        SSEEvent(" third event", id=""),  # only one space after the colon is removed
    ]


def test_whatwg_empty_data_example_and_unterminated_last_block() -> None:
    # "The first and last blocks fire events with the data set to the empty string. The middle
    # block fires an event with the data set to a single newline character. The last block is
    # discarded because it is not followed by a blank line."
    assert decode(b"data\n\ndata\ndata\n\ndata:") == [SSEEvent(""), SSEEvent("\n")]


def test_whatwg_space_after_colon_is_optional() -> None:
    assert decode(b"data:test\n\ndata: test\n\n") == [SSEEvent("test"), SSEEvent("test")]


# --- line endings ------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_each_line_ending_delimits_lines(eol: bytes) -> None:
    stream = eol.join([b"event: a", b"data: 1", b"data: 2", b"", b"data: 3", b"", b""])
    assert decode(stream) == [SSEEvent("1\n2", event="a"), SSEEvent("3")]


def test_mixed_line_endings_in_one_stream() -> None:
    assert decode(b"data: a\r\ndata: b\rdata: c\n\r\n") == [SSEEvent("a\nb\nc")]


def test_crlf_split_between_feeds_is_one_line_end() -> None:
    # If the CR and the LF were two line ends, the LF would be a blank line dispatching "a".
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [SSEEvent("a\nb")]
    assert decoder.feed(b"\n") == []


def test_cr_then_cr_is_two_line_ends() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [SSEEvent("a")]


def test_empty_feed_between_cr_and_lf_keeps_them_together() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") + decoder.feed(b"") + decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [SSEEvent("a")]


def test_event_ending_in_lone_cr_is_dispatched_without_waiting_for_more_bytes() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\r") == [SSEEvent("a")]


# --- fields --------------------------------------------------------------------------------


def test_comment_lines_are_ignored_anywhere() -> None:
    assert decode(b":hi\ndata: a\n: keep-alive\ndata: b\n:\n\n") == [SSEEvent("a\nb")]


def test_comment_only_block_dispatches_nothing() -> None:
    assert decode(b": keep-alive\n\n: keep-alive\n\n") == []


def test_unknown_fields_are_ignored() -> None:
    assert decode(b"foo: bar\ndata: x\nDATA: y\n data: z\n\n") == [SSEEvent("x")]


def test_field_without_colon_has_empty_value() -> None:
    assert decode(b"event: a\nevent\ndata\n\n") == [SSEEvent("", event="message")]


def test_only_one_space_after_colon_is_removed_and_tabs_are_kept() -> None:
    assert decode(b"data:   x \ndata:\ty\n\n") == [SSEEvent("  x \n\ty")]


def test_colons_after_the_first_belong_to_the_value() -> None:
    assert decode(b'data: {"a": "b:c"}\n\n') == [SSEEvent('{"a": "b:c"}')]


def test_event_type_resets_after_dispatch() -> None:
    assert decode(b"event: ping\ndata: 1\n\ndata: 2\n\n") == [
        SSEEvent("1", event="ping"),
        SSEEvent("2", event="message"),
    ]


def test_empty_event_field_means_message() -> None:
    assert decode(b"event:\ndata: 1\n\n") == [SSEEvent("1", event="message")]


def test_blank_line_without_data_dispatches_nothing_but_resets_event_type() -> None:
    assert decode(b"event: a\n\ndata: 1\n\n") == [SSEEvent("1")]


def test_last_event_id_persists_across_events() -> None:
    assert decode(b"id: 7\ndata: a\n\ndata: b\n\nid: 8\n\ndata: c\n\n") == [
        SSEEvent("a", id="7"),
        SSEEvent("b", id="7"),
        SSEEvent("c", id="8"),  # an id in a block without data still sets the buffer
    ]


def test_id_containing_nul_is_ignored() -> None:
    assert decode(b"id: 1\n\nid: 2\x003\ndata: a\n\n") == [SSEEvent("a", id="1")]


@pytest.mark.parametrize(
    ("line", "retry"),
    [
        (b"retry: 3000", 3000),
        (b"retry:0", 0),
        (b"retry: 30 00", None),
        (b"retry: -1", None),
        (b"retry: 1.5", None),
        (b"retry: ", None),
        (b"retry: 12a", None),
        ("retry: \u0663".encode(), None),  # ARABIC-INDIC DIGIT THREE: a digit, but not ASCII
        (b"retry: " + b"9" * 5000, None),  # longer than int() accepts: ignored, not ValueError
    ],
)
def test_retry_accepts_only_ascii_digits(line: bytes, retry: int | None) -> None:
    assert decode(line + b"\ndata: a\n\n") == [SSEEvent("a", retry=retry)]


def test_retry_persists_and_a_bad_value_keeps_the_previous_one() -> None:
    assert decode(b"retry: 5\ndata: a\n\nretry: x\ndata: b\n\n") == [
        SSEEvent("a", retry=5),
        SSEEvent("b", retry=5),
    ]


# --- byte order mark -------------------------------------------------------------------------


def test_leading_bom_is_stripped_once() -> None:
    # A second BOM is part of the first line's field name, so that line is an unknown field.
    assert decode(b"\xef\xbb\xbfdata: a\n\n") == [SSEEvent("a")]
    assert decode(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n") == [SSEEvent("b")]


def test_bom_split_across_feeds_is_stripped() -> None:
    decoder = SSEDecoder()
    out = decoder.feed(b"\xef") + decoder.feed(b"\xbb") + decoder.feed(b"\xbfdata: a\n\n")
    assert out == [SSEEvent("a")]


def test_bom_later_in_the_stream_is_kept() -> None:
    assert decode(b"data: \xef\xbb\xbfa\n\n") == [SSEEvent("\ufeffa")]


def test_short_stream_that_looks_like_a_bom_prefix_is_decoded() -> None:
    # b"\xef" alone is invalid UTF-8, but the decoder only sees it as an incomplete line.
    assert decode(b"\xef") == []
    with pytest.raises(UpstreamProtocolError, match="UTF-8"):
        decode_cut(b"\xef\n", [1])


# --- UTF-8 -----------------------------------------------------------------------------------


def test_multibyte_characters_survive_any_split() -> None:
    text = "héllo wörld — 你好 🎉 \u2028 end"
    stream = f"data: {text}\n\n".encode()
    for cut in range(len(stream) + 1):
        assert decode_cut(stream, [cut]) == [SSEEvent(text)]


def test_raw_u2028_and_non_ascii_inside_json_survive_splits() -> None:
    # U+2028/U+2029 are line breaks for str.splitlines() but not for SSE; JSON allows them raw.
    payload = {"text": "a\u2028b\u2029c é 日本 🙂", "n": 1}
    raw = json.dumps(payload, ensure_ascii=False)
    assert "\u2028" in raw
    events = decode(f"event: delta\ndata: {raw}\n\n".encode())
    assert events == [SSEEvent(raw, event="delta")]
    assert json.loads(events[0].data) == payload


@pytest.mark.parametrize(
    "bad", [b"data: \xff\n\n", b"data: \xc3\x28\n\n", b": \xed\xa0\x80\n\n", b"data: \xf0\x9f\n"]
)
def test_invalid_utf8_in_a_complete_line_raises_protocol_error(bad: bytes) -> None:
    with pytest.raises(UpstreamProtocolError, match="UTF-8"):
        SSEDecoder().feed(bad)


# --- limits and end of stream ----------------------------------------------------------------


def test_incomplete_line_longer_than_max_pending_raises() -> None:
    decoder = SSEDecoder(max_pending=16)
    assert decoder.feed(b"data: 0123456789") == []  # 16 bytes: at the limit
    with pytest.raises(UpstreamProtocolError, match="longer than 16 bytes"):
        decoder.feed(b"a")


def test_long_complete_lines_are_fine_whatever_max_pending() -> None:
    decoder = SSEDecoder(max_pending=16)
    value = "x" * 1000
    assert decoder.feed(f"data: {value}\n\n".encode()) == [SSEEvent(value)]


def test_max_pending_counts_only_the_incomplete_tail() -> None:
    decoder = SSEDecoder(max_pending=8)
    assert decoder.feed(b"data: first line is long\ndata: 1") == []
    assert decoder.feed(b"\n\n") == [SSEEvent("first line is long\n1")]


def test_finish_discards_an_unterminated_event_without_raising() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b\n") == [SSEEvent("a")]
    assert decoder.finish() == []


def test_finish_discards_an_incomplete_line_even_if_it_is_not_utf8() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: \xff")
    assert decoder.finish() == []


def test_finish_on_an_empty_stream_returns_nothing() -> None:
    assert SSEDecoder().finish() == []


# --- fixtures --------------------------------------------------------------------------------


def _fixture_id(path: Path) -> str:
    return str(path.relative_to(PROTOCOL))


def test_there_are_fixtures() -> None:
    assert len(FIXTURES) >= 10


@pytest.mark.parametrize("path", FIXTURES, ids=_fixture_id)
def test_fixture_decodes_identically_however_split(path: Path) -> None:
    raw = path.read_bytes()
    events = decode(raw)
    # One event per block that has a data line; each payload is JSON (or the [DONE] sentinel).
    blocks = [b for b in raw.decode().split("\n\n") if "data:" in b]
    assert len(events) == len(blocks)
    for event in events:
        if event.data != "[DONE]":
            json.loads(event.data)
    if b"event: " in raw:
        assert all(e.event != "message" for e in events)


@pytest.mark.parametrize("path", FIXTURES, ids=_fixture_id)
def test_fixture_with_crlf_or_cr_line_ends_equals_lf(path: Path) -> None:
    raw = path.read_bytes()
    lf = decode(raw)
    assert decode(raw.replace(b"\n", b"\r\n")) == lf
    assert decode(raw.replace(b"\n", b"\r")) == lf


def test_fixture_with_bom_equals_without() -> None:
    raw = FIXTURES[0].read_bytes()
    assert decode(b"\xef\xbb\xbf" + raw) == decode(raw)


# --- properties (h11's fuzz invariant, STYLE.md §9) ------------------------------------------


def _decode_or_error(data: bytes, cuts: list[int]) -> list[SSEEvent] | str:
    try:
        return decode_cut(data, cuts)
    except UpstreamProtocolError:
        return "error"


_sse_ish = st.lists(
    st.sampled_from(
        [
            b"data",
            b"data:",
            b": ",
            b"event: x",
            b"id: 1",
            b"id",
            b"retry: 10",
            b"\x00",
            b"\xef\xbb",
            b"\xbf",
            b"\r",
            b"\n",
            b"\r\n",
            b"\xc3",
            b"\xa9",
            b"\xff",
            b" ",
            b"x",
            b"\xe2\x80\xa8",
        ]
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), _sse_ish))
def test_any_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    decoder = SSEDecoder()
    try:
        events = decoder.feed(data) + decoder.finish()
    except UpstreamProtocolError:
        return
    assert all(isinstance(e, SSEEvent) for e in events)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), _sse_ish), seed=st.integers(0, 2**32))
def test_splitting_anywhere_gives_the_same_events(data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randint(0, 8))))
    whole = _decode_or_error(data, [])
    assert _decode_or_error(data, cuts) == whole
    assert _decode_or_error(data, list(range(len(data)))) == whole

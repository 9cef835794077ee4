"""Server-sent events: bytes from an upstream event-stream body in, complete events out.

Stage: between the upstream client (bytes) and a stream translator (events). Pure: stdlib only,
no IO, no clock.

Invariants:
- The events produced do not depend on how the body was split into chunks: `feed(a + b)` yields
  what `feed(a)` then `feed(b)` yield together (the one exception: `max_pending` is checked on the
  incomplete line left after each feed, so tiny pieces can trip it where one big feed would not).
- Only `UpstreamProtocolError` escapes, for a body that is not UTF-8 or a line that outgrows
  `max_pending`. After it is raised the decoder must not be fed again.

Theory of operation (WHATWG HTML, 9.2.6 "Interpreting an event stream",
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
bytes accumulate in a bytearray. After each feed, everything up to the last line terminator
(CRLF, LF or CR) is one "complete region": it is decoded as UTF-8 in one call (terminators are
ASCII, so a region never ends inside a multi-byte character) and split into lines with a C-level
regex, so there is no per-byte Python loop. What follows the last terminator waits for more bytes.
A region that ends in a bare CR ends its line at once (CR alone is a terminator), and the decoder
remembers to drop one LF if the next chunk starts with it: that CR may be the first half of a
CRLF split across two feeds. Each line then updates the event being assembled; a blank line
dispatches it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trioproxy.errors import UpstreamProtocolError

__all__ = ["SSEDecoder", "SSEEvent"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event (WHATWG HTML, 9.2.6 "Interpreting an event stream")."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None  # milliseconds


_BOM = b"\xef\xbb\xbf"  # "One leading U+FEFF BYTE ORDER MARK character must be ignored" (9.2.6)
_LINE_END = re.compile("\r\n|\r|\n")  # the spec's `end-of-line` production (9.2.5)
_LF = 0x0A
# Python refuses int() on more than 4300 digits (sys.int_info.default_max_str_digits); no
# reconnection time needs them, so longer `retry` values are ignored like malformed ones.
_MAX_RETRY_DIGITS = 4300


class SSEDecoder:
    """Bytes from an event-stream body in, complete events out, however the bytes were split.

    Args:
        max_pending: the longest incomplete line (bytes) the decoder holds while waiting for its
            terminator. Default 1 MiB: far above any single event the upstream APIs send (a
            whole tool-call argument delta is a few KiB), low enough to bound memory per stream.

    Example:
        >>> d = SSEDecoder()
        >>> d.feed(b"event: ping\\ndata: {}\\n") + d.feed(b"\\n") + d.finish()
        [SSEEvent(data='{}', event='ping', id=None, retry=None)]

    `SSEEvent.id` is the last event ID in effect when the event was dispatched (it persists
    across events, as the spec's "last event ID buffer" does): None until an `id` field is seen,
    and "" after an `id` field with an empty value. `SSEEvent.retry` likewise is the reconnection
    time in effect (the last valid `retry` field so far), None until one is seen.
    """

    def __init__(self, *, max_pending: int = 1 << 20) -> None:
        self._pending = bytearray()  # bytes after the last line terminator seen
        self._max_pending = max_pending
        self._at_start = True  # the leading BOM has not been decided on yet
        self._skip_lf = False  # the last byte fed was a CR ending a line: drop one LF next
        # The event being assembled (the spec's "data buffer" and "event type buffer").
        self._data: list[str] = []
        self._event = ""
        # Persist across events (the spec's "last event ID buffer" and reconnection time).
        self._last_id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add the next bytes of the body; return the events they complete (often none).

        Raises:
            UpstreamProtocolError: a complete line is not valid UTF-8, or the incomplete line
                held back is longer than `max_pending` bytes.
        """
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == _LF:  # the LF of a CRLF split across two feeds
                chunk = chunk[1:]
        buf = self._pending
        scan_from = len(buf)  # `buf` holds no terminator before this point
        buf += chunk
        if self._at_start:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                return []  # could still be a BOM split across feeds
            self._at_start = False
            if buf.startswith(_BOM):
                del buf[: len(_BOM)]
                scan_from = 0
        end = max(buf.rfind(b"\n", scan_from), buf.rfind(b"\r", scan_from))
        if end < 0:
            self._check_pending()
            return []
        try:
            text = buf[: end + 1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UpstreamProtocolError(
                f"upstream event stream is not valid UTF-8 ({exc.reason})"
            ) from exc
        del buf[: end + 1]
        if not buf and text[-1] == "\r":
            self._skip_lf = True  # this CR may be the first half of a CRLF
        self._check_pending()
        lines = _LINE_END.split(text)
        lines.pop()  # the empty string after the final terminator
        out: list[SSEEvent] = []
        for line in lines:
            if not line:
                # "If the line is empty (a blank line): Dispatch the event."
                if self._data:
                    out.append(self._dispatch())
                else:
                    # "If the data buffer is an empty string, set the data buffer and the event
                    # type buffer to the empty string and return."
                    self._event = ""
            elif line[0] != ":":  # a line starting with ':' is a comment: ignored
                self._on_field(line)
        return out

    def finish(self) -> list[SSEEvent]:
        """Signal the end of the body. Returns [] always, and never raises.

        Per the spec, "once the end of the file is reached, any pending data must be discarded.
        (If the file ends in the middle of an event, before the final empty line, the incomplete
        event is not dispatched.)" So an unterminated final event is dropped here, not reported:
        whether the stream ended early is for the stream translator to judge, from the events
        it did get (DESIGN.md: a truncated upstream stream is an error, never a clean finish).
        """
        self._pending.clear()
        self._data.clear()
        self._event = ""
        return []

    # -- internals -------------------------------------------------------------------------

    def _check_pending(self) -> None:
        if len(self._pending) > self._max_pending:
            raise UpstreamProtocolError(
                f"upstream event-stream line longer than {self._max_pending} bytes "
                "without a line end"
            )

    def _on_field(self, line: str) -> None:
        # "If the line contains a U+003A COLON character: collect the characters before it as
        # the field name and after it as the value; if the value starts with a U+0020 SPACE,
        # remove it. Otherwise the whole line is the field name and the value is empty."
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)  # joined with "\n" at dispatch (one LF per data line)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:  # "If the field value does not contain U+0000 NULL"
                self._last_id = value
        elif name == "retry" and _is_ascii_number(value):
            # "If the field value consists of only ASCII digits, then interpret the field value
            # as an integer in base ten"; otherwise the field is ignored.
            self._retry = int(value)
        # "Otherwise: The field is ignored."

    def _dispatch(self) -> SSEEvent:
        # The data buffer's trailing LF is removed: joining the lines with "\n" is the same.
        # An empty event type buffer means "message". The event type resets; the ID stays.
        event = SSEEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._last_id,
            retry=self._retry,
        )
        self._data = []
        self._event = ""
        return event


def _is_ascii_number(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= _MAX_RETRY_DIGITS

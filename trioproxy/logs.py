"""Logging: the daemon's handler setup and the one access-log line per request.

Stage: observability at the edge. Standard `logging` underneath (loggers `trioproxy`,
`trioproxy.access`, `trioproxy.upstream`, `trioproxy.hypercorn`), so embedders route them as they
like; `configure_logging` is only called by the CLI. Log lines never hold a key: records carry the
key's *name*, and upstream errors are logged by message, which never includes header values.

Log lines cannot be forged: the text access line is `name=value` pairs (logfmt style), and every
value passes through `log_value`, which escapes control characters (C0, DEL, C1, and U+2028 /
U+2029, which some viewers break lines on) and quotes a value holding a space, `"` or `=`, so a
client-chosen model name or request id can neither start a new line nor add a field. The JSON
format escapes through `json.dumps` (C0 controls as `\\u` escapes).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trioproxy.record import RequestRecord

__all__ = ["access_fields", "configure_logging", "escape_control", "log_access", "log_value"]

access_logger = logging.getLogger("trioproxy.access")

# C0 controls (CR, LF, TAB, ESC ...), DEL, C1 controls (NEL U+0085 ends a line for Python's
# str.splitlines and some viewers) and the Unicode line / paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_QUOTES = re.compile(r'[\s"=]')
_UNSAFE_IN_JSON = re.compile(r"[\x7f-\x9f\u2028\u2029]")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def escape_control(text: str) -> str:
    """`text` with backslashes doubled and control characters written as escapes (`\\n`,
    `\\x1b`, `\\u2028`): safe to put on one log line."""
    return _CONTROL.sub(_escape_char, text.replace("\\", "\\\\"))


def log_value(value: object) -> str:
    """One value of the text access line: `-` for None, else escaped, quoted when it holds a
    space, `"` or `=` (as logfmt does), so it stays one field of one line."""
    if value is None:
        return "-"
    text = escape_control(str(value))
    if not text or _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '\\"') + '"'
    return text


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the access fields if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # json.dumps escapes C0 only; DEL, C1 and U+2028 / U+2029 are escaped here too, so no
        # viewer or `str.splitlines` breaks the line (JSON allows \\uXXXX for any character).
        return _UNSAFE_IN_JSON.sub(_json_escape, json.dumps(out, ensure_ascii=False))


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("trioproxy")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000, 1)


def access_fields(record: RequestRecord) -> dict[str, Any]:
    usage = record.usage or {}
    return {
        "request_id": record.request_id,
        "upstream_request_id": record.upstream_request_id,
        "key": record.key_name,
        "model": record.model,
        "upstream": record.upstream,
        "upstream_key": record.upstream_key,
        "relayed": record.relayed,
        "stream": record.stream,
        "status": record.status,
        "outcome": record.outcome.value if record.outcome else None,
        "error_code": record.error_code,
        "ttfb_ms": _ms(record.started, record.first_byte),
        "duration_ms": _ms(record.started, record.ended),
        "input_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
        "retries": record.retries,
    }


def log_access(record: RequestRecord) -> None:
    if not access_logger.isEnabledFor(logging.INFO):
        return
    fields = access_fields(record)
    text = " ".join(f"{k}={log_value(v)}" for k, v in fields.items())
    access_logger.info("%s", text, extra={"access": fields})

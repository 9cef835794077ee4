"""Logging: the daemon's handler setup and the one access-log line per request.

Stage: observability at the edge. Standard `logging` underneath (loggers `trioproxy`,
`trioproxy.access`, `trioproxy.upstream`, `trioproxy.hypercorn`), so embedders route them as they
like; `configure_logging` is only called by the CLI. Log lines never hold a key: records carry the
key's *name*, and upstream errors are logged by message, which never includes header values.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trioproxy.record import RequestRecord

__all__ = ["access_fields", "configure_logging", "log_access"]

access_logger = logging.getLogger("trioproxy.access")


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
        return json.dumps(out, ensure_ascii=False)


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
        "key": record.key_name,
        "model": record.model,
        "upstream": record.upstream,
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
    text = " ".join(f"{k}={'-' if v is None else v}" for k, v in fields.items())
    access_logger.info("%s", text, extra={"access": fields})

"""Metrics: counters, gauges and histograms rendered in the Prometheus text exposition format.

Stage: observability (pure). The edge feeds one finished `RequestRecord` worth of numbers to
`Metrics.observe_request` and reads gauges when rendering; nothing here reads a clock.

Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (text format 0.0.4): one
`# HELP` and `# TYPE` line per family, label values escaped (backslash, double quote, newline),
histograms as cumulative `_bucket{le=...}` series plus `_sum` and `_count`. Label values are
model and upstream names and outcome codes: never keys (a key appears by its configured name only).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = ["CONTENT_TYPE", "GaugeSample", "Metrics", "RequestSample"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. Time to first byte of an LLM answer spans ~50 ms (cached, small) to minutes (long
# thinking); durations reach the 600 s default read timeout.
TTFB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RequestSample:
    """What one finished request contributes to the metrics."""

    model: str
    upstream: str
    key: str
    outcome: str
    status: int
    stream: bool
    ttfb: float | None  # seconds
    duration: float  # seconds
    input_tokens: int
    output_tokens: int
    retries: int
    error_code: str | None
    # (upstream, reason) per retry and per give-up (RequestRecord.retry_reasons / .giveups)
    retry_reasons: tuple[tuple[str, str], ...] = ()
    giveups: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class GaugeSample:
    """One labelled gauge value, from a collector (`Metrics.add_collector`)."""

    name: str
    help: str
    labels: Labels
    value: float


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{name}="{_escape(value)}"' for name, value in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(slots=True)
class _Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, _Histogram]] = {}
        self._collectors: list[Callable[[], Iterable[GaugeSample]]] = []
        self._help = {
            "trioproxy_requests_total": "Requests finished, by model/upstream/key/outcome/status.",
            "trioproxy_tokens_total": "Tokens reported by upstreams, by model and direction.",
            "trioproxy_upstream_retries_total": (
                "Retries before the first byte, by upstream and the failure retried."
            ),
            "trioproxy_upstream_giveups_total": (
                "Upstreams the proxy stopped trying for a request, by upstream and reason."
            ),
            "trioproxy_upstream_errors_total": "Requests that ended in an upstream error, by code.",
            "trioproxy_time_to_first_byte_seconds": "Seconds from request to first chunk.",
            "trioproxy_request_duration_seconds": "Seconds from request to its end.",
            "trioproxy_store_fallbacks_total": (
                "Requests admitted under this instance's own limits because the shared store "
                "was unavailable."
            ),
            "trioproxy_store_failures_total": (
                "Calls to the shared store that failed, by reason (timeout, error)."
            ),
        }
        # The shared store's state, rendered as a gauge: None without a shared store.
        self._store_degraded: bool | None = None

    def count(self, name: str, labels: Labels, help_text: str, by: float = 1.0) -> None:
        """Add `by` to the counter `name` with `labels` (a family made on first use)."""
        self._help.setdefault(name, help_text)
        self._inc(name, labels, by)

    def add_collector(self, collect: Callable[[], Iterable[GaugeSample]]) -> None:
        """`collect()` is called at every render; its labelled gauges are rendered with the
        rest (e.g. each upstream key's state, read from the key pools at that moment)."""
        self._collectors.append(collect)

    def _inc(self, name: str, labels: Labels, by: float = 1.0) -> None:
        family = self._counters.setdefault(name, {})
        family[labels] = family.get(labels, 0.0) + by

    def _observe(self, name: str, labels: Labels, buckets: tuple[float, ...], value: float) -> None:
        family = self._histograms.setdefault(name, {})
        family.setdefault(labels, _Histogram(buckets)).observe(value)

    def observe_request(self, sample: RequestSample) -> None:
        model = (("model", sample.model),)
        self._inc(
            "trioproxy_requests_total",
            (
                *model,
                ("upstream", sample.upstream),
                ("key", sample.key),
                ("outcome", sample.outcome),
                ("status", str(sample.status)),
            ),
        )
        if sample.input_tokens:
            self._inc(
                "trioproxy_tokens_total", (*model, ("direction", "input")), sample.input_tokens
            )
        if sample.output_tokens:
            self._inc(
                "trioproxy_tokens_total", (*model, ("direction", "output")), sample.output_tokens
            )
        for upstream, reason in sample.retry_reasons:
            self._inc(
                "trioproxy_upstream_retries_total", (("upstream", upstream), ("reason", reason))
            )
        for upstream, reason in sample.giveups:
            self._inc(
                "trioproxy_upstream_giveups_total", (("upstream", upstream), ("reason", reason))
            )
        if sample.outcome in ("upstream_error", "timeout") and sample.error_code:
            self._inc(
                "trioproxy_upstream_errors_total",
                (("upstream", sample.upstream), ("code", sample.error_code)),
            )
        stream = (*model, ("stream", "true" if sample.stream else "false"))
        if sample.ttfb is not None:
            self._observe("trioproxy_time_to_first_byte_seconds", stream, TTFB_BUCKETS, sample.ttfb)
        self._observe(
            "trioproxy_request_duration_seconds", stream, DURATION_BUCKETS, sample.duration
        )

    def store_fallback(self) -> None:
        """One request admitted by local limits because the shared store was unavailable."""
        self._inc("trioproxy_store_fallbacks_total", ())

    def store_failure(self, reason: str) -> None:
        """One failed call to the shared store; `reason` is "timeout" or "error"."""
        self._inc("trioproxy_store_failures_total", (("reason", reason),))

    def set_store_degraded(self, degraded: bool) -> None:
        self._store_degraded = degraded

    def render(self, gauges: Mapping[str, tuple[str, float]] = {}) -> str:
        """The exposition text. `gauges` maps a name to (help, value) read at render time."""
        lines: list[str] = []
        if self._store_degraded is not None:
            gauges = {
                **gauges,
                "trioproxy_store_degraded": (
                    "1 while the shared store is unavailable and local limits apply, else 0.",
                    float(self._store_degraded),
                ),
            }
        for name, (help_text, value) in gauges.items():
            lines += [
                f"# HELP {name} {help_text}",
                f"# TYPE {name} gauge",
                f"{name} {_number(value)}",
            ]
        families: dict[str, tuple[str, list[str]]] = {}
        for collect in self._collectors:
            for sample in collect():
                family = families.setdefault(sample.name, (sample.help, []))
                family[1].append(f"{sample.name}{_labels(sample.labels)} {_number(sample.value)}")
        for name, (help_text, samples) in families.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples]
        for name, series in sorted(self._counters.items()):
            lines += [f"# HELP {name} {self._help.get(name, name)}", f"# TYPE {name} counter"]
            lines += [f"{name}{_labels(labels)} {_number(v)}" for labels, v in series.items()]
        for name, hist_series in sorted(self._histograms.items()):
            lines += [f"# HELP {name} {self._help.get(name, name)}", f"# TYPE {name} histogram"]
            for labels, hist in hist_series.items():
                lines += self._render_histogram(name, labels, hist)
        return "\n".join(lines) + "\n"

    @staticmethod
    def _render_histogram(name: str, labels: Labels, hist: _Histogram) -> Iterable[str]:
        cumulative = 0
        for bound, count in zip(hist.buckets, hist.counts or [0] * len(hist.buckets), strict=True):
            cumulative += count
            le = 'le="' + _number(bound) + '"'
            yield f"{name}_bucket{_labels(labels, le)} {cumulative}"
        inf = 'le="+Inf"'
        yield f"{name}_bucket{_labels(labels, inf)} {hist.count}"
        yield f"{name}_sum{_labels(labels)} {_number(hist.total)}"
        yield f"{name}_count{_labels(labels)} {hist.count}"

"""Operations: /metrics in the exposition format, reload under a live stream, the access log."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import trio

from tests.conftest import DEMO_INI, config_from, make_client
from tests.support import assert_stream_contract, sse_payloads

if TYPE_CHECKING:
    import pytest

    from trioproxy.upstream import HTTPClient

HELLO = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A small parser of the Prometheus text format: every line is a comment or a sample."""
    samples = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, _, labels, value = match.groups()
        pairs = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        samples[(name, pairs)] = float(value)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"{name} has no # TYPE"
    return samples


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


async def test_metrics_counters_move_with_each_outcome(http_client: HTTPClient) -> None:
    client = make_client(config_from(DEMO_INI), http_client)
    await client.chat({**HELLO, "stream": True})
    await client.chat(HELLO)
    await client.chat({"model": "nope", "messages": HELLO["messages"]})
    resp = await client.request("GET", "/metrics")
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_exposition(resp.body.decode())
    assert _value(samples, "trioproxy_requests_total", model="demo", outcome="completed") == 2
    assert _value(samples, "trioproxy_requests_total", outcome="rejected", status="404") == 1
    assert _value(samples, "trioproxy_tokens_total", direction="output") > 0
    assert _value(samples, "trioproxy_request_duration_seconds_count", model="demo") == 2
    assert _value(samples, "trioproxy_active_streams") == 0


async def test_metrics_key_protects_metrics(http_client: HTTPClient) -> None:
    client = make_client(
        config_from(DEMO_INI.replace("[proxy]", "[proxy]\nmetrics_key = m-secret")), http_client
    )
    assert (await client.request("GET", "/metrics")).status == 401
    ok = await client.request("GET", "/metrics", headers=[("authorization", "Bearer m-secret")])
    assert ok.status == 200


async def test_reload_under_a_live_stream_keeps_its_settings(http_client: HTTPClient) -> None:
    slow = DEMO_INI.replace("demo_delay = 0", "demo_delay = 0.01")
    client = make_client(config_from(slow), http_client)
    renamed = slow.replace("[model:demo]", "[model:demo2]")
    pieces = 0

    def on_piece(_: bytes) -> None:
        nonlocal pieces
        pieces += 1
        if pieces == 3:
            client.runtime.reload(config_from(renamed))  # what SIGHUP does

    resp = await client.chat({**HELLO, "stream": True}, on_piece=on_piece)
    assert_stream_contract(
        sse_payloads(resp.body), include_usage=False
    )  # finished on the old config
    assert (await client.chat(HELLO)).status == 404  # new requests see the new config
    assert (await client.chat({**HELLO, "model": "demo2"})).status == 200


async def test_access_log_line_has_the_fields(
    http_client: HTTPClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioproxy.access")
    client = make_client(config_from(DEMO_INI), http_client)
    await client.chat({**HELLO, "stream": True, "stream_options": {"include_usage": True}})
    record = next(r for r in caplog.records if r.name == "trioproxy.access")
    fields = record.access  # type: ignore[attr-defined]
    assert fields["model"] == "demo"
    assert fields["upstream"] == "demo"
    assert fields["outcome"] == "completed"
    assert fields["status"] == 200
    assert fields["input_tokens"] == 1
    assert fields["output_tokens"] > 0
    assert fields["ttfb_ms"] is not None
    assert fields["request_id"].startswith("req_")
    await trio.lowlevel.checkpoint()

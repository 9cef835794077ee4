"""Hostile and careless clients: a fuzzed ASGI app never answers 500 and never hangs; CORS only
for configured origins."""

from __future__ import annotations

import json
from typing import Any

import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import DEMO_INI, ASGIClient, config_from
from trioproxy.servers.asgi import ASGIApp
from trioproxy.service import Runtime
from trioproxy.upstream import HTTPClient

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "temperature",
    "tools",
    "tool_choice",
    "stop",
    "n",
    "reasoning_effort",
    "response_format",
    "top_p",
    "user",
]
near_valid = st.fixed_dictionaries(
    {"model": st.sampled_from(["demo", "nope", ""]) | json_values},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["user", "system", "assistant", "tool", "x"])
                    | json_values
                },
                optional={"content": json_values | st.text(max_size=30), "tool_calls": json_values},
            ),
            max_size=3,
        )
        | json_values,
        **{name: json_values for name in FIELDS[2:]},
    },
)
bodies = st.one_of(
    st.binary(max_size=200),
    near_valid.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
)
_SEEN: list[int] = []
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD", "BREW"])
paths = st.sampled_from(
    [
        "/v1/chat/completions",
        "/v1/models",
        "/health",
        "/metrics",
        "/",
        "/v1/ws",
        "/v1/chat/completions/x",
    ]
) | st.text(max_size=30).map(lambda t: "/" + t)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
headers = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "authorization",
                "content-type",
                "x-api-key",
                "origin",
                "x-request-id",
                "content-length",
            ]
        ),
        header_values,
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=methods, path=paths, hdrs=headers, body=bodies)
# Anchors that hypothesis always runs, whatever it generates on a slow machine: one request that
# reaches the demo, one the validator refuses.
@example(
    method="POST",
    path="/v1/chat/completions",
    hdrs=[("content-type", "application/json")],
    body=b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}]}',
)
@example(
    method="POST",
    path="/v1/chat/completions",
    hdrs=[],
    body=b'{"model": "demo", "messages": [{"role": "x"}]}',
)
async def test_fuzzed_requests_never_get_a_500_nor_hang(
    method: str, path: str, hdrs: list[tuple[str, str]], body: bytes
) -> None:
    http = HTTPClient()
    try:
        client = ASGIClient(ASGIApp(Runtime(config_from(DEMO_INI), http)))
        with trio.fail_after(10):
            resp = await client.request(method, path, body=body, headers=hdrs)
    finally:
        await http.aclose()
    assert resp.complete
    _SEEN.append(resp.status)
    assert 200 <= resp.status < 500 or resp.status == 503, (resp.status, resp.body[:200])
    if resp.status >= 400:
        error: dict[str, Any] = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}


async def test_cors_is_off_by_default_and_on_for_configured_origins(
    http_client: HTTPClient,
) -> None:
    plain = ASGIClient(ASGIApp(Runtime(config_from(DEMO_INI), http_client)))
    resp = await plain.request("GET", "/health", headers=[("origin", "https://app.example")])
    assert "access-control-allow-origin" not in resp.headers
    cors = ASGIClient(
        ASGIApp(
            Runtime(
                config_from(
                    DEMO_INI.replace("[proxy]", "[proxy]\ncors_origins = https://app.example")
                ),
                http_client,
            )
        )
    )
    pre = await cors.request(
        "OPTIONS", "/v1/chat/completions", headers=[("origin", "https://app.example")]
    )
    assert pre.status == 204
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in pre.headers["access-control-allow-headers"]
    other = await cors.request(
        "OPTIONS", "/v1/chat/completions", headers=[("origin", "https://evil.example")]
    )
    assert "access-control-allow-origin" not in other.headers
    ok = await cors.request("GET", "/health", headers=[("origin", "https://app.example")])
    assert ok.headers["access-control-allow-origin"] == "https://app.example"


def test_the_fuzz_ran_and_reached_the_chat_route() -> None:
    # Runs after the fuzz test (file order): it must have run, its anchors (the @example
    # requests) among them, with some requests passing validation and answered by the demo.
    assert len(_SEEN) >= 20
    assert 200 in _SEEN
    assert 400 in _SEEN

"""The docs are true: README.md's and docs/streaming.md's Python blocks run against a real daemon,
and docs/errors.md's bad-input table matches what the proxy answers.

Each ```python block is run with exec() in a worker thread against `trioproxy.serve` on
127.0.0.1:0 with the demo config (no network), its "http://localhost:8003" rewritten to the bound
URL and its `print` captured.
"""

from __future__ import annotations

import io
import json
import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest
import trio

from tests.conftest import DEMO_INI, ASGIClient, config_from
from trioproxy.server import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ROOT = Path(__file__).resolve().parent.parent
DOC_URL = "http://localhost:8003"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(name: str) -> list[tuple[str, str]]:
    text = (ROOT / name).read_text(encoding="utf-8")
    blocks = _BLOCK.findall(text)
    return [(f"{name}#{i}", block) for i, block in enumerate(blocks)]


BLOCKS = python_blocks("README.md") + python_blocks("docs/streaming.md")


def run_block(source: str, url: str) -> str:
    """Run one doc block with `print` captured; close any SDK client it left open."""
    out = io.StringIO()

    def captured_print(*args: Any, **kw: Any) -> None:
        kw.pop("file", None)
        print(*args, file=out, **kw)

    namespace: dict[str, Any] = {"__name__": "__doc_block__", "print": captured_print}
    try:
        exec(compile(source.replace(DOC_URL, url), "<doc block>", "exec"), namespace)
    finally:
        for value in namespace.values():
            if isinstance(value, openai.OpenAI):
                value.close()
    return out.getvalue()


@pytest.fixture
async def daemon_url() -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, config_from(DEMO_INI)))
        yield urls[0]
        nursery.cancel_scope.cancel()


def test_the_docs_have_python_blocks_to_run() -> None:
    names = {name.split("#")[0] for name, _ in BLOCKS}
    assert names == {"README.md", "docs/streaming.md"}
    assert len(BLOCKS) >= 10
    assert all(DOC_URL in block for _, block in BLOCKS)


@pytest.mark.parametrize(("name", "source"), BLOCKS, ids=[name for name, _ in BLOCKS])
async def test_python_block_runs_against_the_demo_daemon(
    name: str, source: str, daemon_url: str
) -> None:
    output = await trio.to_thread.run_sync(run_block, source, daemon_url)
    assert output.strip(), f"{name} printed nothing"
    assert "Traceback" not in output
    assert "stream failed" not in output  # the mid-stream error branch is for real upstreams
    # Every block prints either demo text, tokens, a tool call or the 404 it provokes.
    assert re.search(
        r"You said|This answer|tokens|get_weather|404 model_not_found|usage|cancelled", output
    ), f"{name} printed something unexpected: {output!r}"


# --- docs/errors.md ------------------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _unquote(cell: str) -> str:
    return cell[1:-1].strip() if cell.startswith("`") and cell.endswith("`") else cell


def bad_input_rows() -> list[tuple[str, int, str | None, str]]:
    """(body, status, param, code) rows of the "Bad inputs" table in docs/errors.md."""
    text = (ROOT / "docs/errors.md").read_text(encoding="utf-8")
    section = text.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    table = section.split("| request body |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        body, status, param, code = _cells(line)
        body = "" if body == "`` (empty)" else _unquote(body)
        rows.append((body, int(status), _unquote(param) or None, _unquote(code)))
    return rows


def catalogue_codes() -> set[tuple[str, str]]:
    """(status, code) pairs of the Catalogue table in docs/errors.md."""
    text = (ROOT / "docs/errors.md").read_text(encoding="utf-8")
    section = text.split("## Catalogue", 1)[1].split("\n## ", 1)[0]
    pairs = set()
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| status") and "---" not in line:
            status, _, code, *_ = _cells(line)
            pairs.add((status, _unquote(code)))
    return pairs


BAD_INPUTS = bad_input_rows()


def test_the_bad_input_table_is_parsed_and_its_codes_are_catalogued() -> None:
    assert len(BAD_INPUTS) >= 6
    catalogue = catalogue_codes()
    for _, status, _, code in BAD_INPUTS:
        assert (str(status), code) in catalogue


@pytest.mark.parametrize(("body", "status", "param", "code"), BAD_INPUTS)
async def test_errors_md_row_matches_what_the_proxy_answers(
    body: str, status: int, param: str | None, code: str, demo_client: ASGIClient
) -> None:
    response = await demo_client.request(
        "POST",
        "/v1/chat/completions",
        body=body.encode(),
        headers=[("content-type", "application/json")],
    )
    error = response.json()["error"]
    assert (response.status, error["param"], error["code"]) == (status, param, code)
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/v1/chat/completions", b"", 405, "method_not_allowed"),
        ("POST", "/v2/anything", b"{}", 404, "not_found"),
        ("POST", "/v1/chat/completions", b"x" * 2048, 413, "request_too_large"),
    ],
)
async def test_errors_md_other_inputs_match_what_the_proxy_answers(
    method: str, path: str, body: bytes, status: int, code: str, demo_client: ASGIClient
) -> None:
    small = config_from(DEMO_INI.replace("keepalive_interval = 15", "max_body_bytes = 1024"))
    demo_client.runtime.reload(small)
    response = await demo_client.request(method, path, body=body)
    assert (response.status, response.json()["error"]["code"]) == (status, code)
    assert (str(status), code) in catalogue_codes()
    text = (ROOT / "docs/errors.md").read_text(encoding="utf-8")
    assert f"| {status} | `{code}` |" in text


async def test_errors_md_auth_row_matches_what_the_proxy_answers(demo_client: ASGIClient) -> None:
    keyed = DEMO_INI.replace("keepalive_interval = 15", "api_keys = sk-right")
    demo_client.runtime.reload(config_from(keyed))
    body = {"model": "demo", "messages": [{"role": "user", "content": "Hi"}]}
    missing = await demo_client.chat(body)
    wrong = await demo_client.chat(body, key="sk-wrong")
    right = await demo_client.chat(body, key="sk-right")
    assert [r.status for r in (missing, wrong, right)] == [401, 401, 200]
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert ("401", "invalid_api_key") in catalogue_codes()
    assert json.loads(right.body)["choices"][0]["message"]["content"].startswith("You said: Hi")

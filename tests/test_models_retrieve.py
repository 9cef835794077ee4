"""`GET /v1/models/{id}` through the official SDKs (issue 20.2): `client.models.retrieve(...)` is a
common first call. openai's SDK gets OpenAI model objects and `NotFoundError` (code
`model_not_found`) for a model not served; anthropic's SDK, which sends `anthropic-version`,
gets Anthropic's shape."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest
import trio

from tests.conftest import config_from, on_server
from trioproxy.server import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

KEY = "sk-client-models"
INI = f"""
[proxy]
listen = 127.0.0.1:0
api_keys = {KEY}

[upstream:demo]
type = demo

[model:demo]
upstream = demo

[model:claude-*]
upstream = demo

[model:vendor/*]
upstream = demo
"""


@pytest.fixture
async def url(server_kind: str) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve, config_from(on_server(INI, server_kind))))
        yield bound[0]
        nursery.cancel_scope.cancel()


async def _openai(url: str, call: Callable[[openai.OpenAI], Any]) -> Any:
    def run() -> Any:
        with openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0) as client:
            return call(client)

    return await trio.to_thread.run_sync(run)


async def _anthropic(url: str, call: Callable[[anthropic.Anthropic], Any]) -> Any:
    def run() -> Any:
        with anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0) as client:
            return call(client)

    return await trio.to_thread.run_sync(run)


async def test_openai_sdk_retrieves_a_configured_model(url: str) -> None:
    model = await _openai(url, lambda c: c.models.retrieve("demo"))
    assert isinstance(model, openai.types.Model)
    assert (model.id, model.object, model.owned_by) == ("demo", "model", "demo")


@pytest.mark.parametrize("name", ["claude-sonnet-4-5", "vendor/some-model"])
async def test_openai_sdk_retrieves_the_name_a_pattern_model_matches(url: str, name: str) -> None:
    model = await _openai(url, lambda c: c.models.retrieve(name))
    assert model.id == name
    assert model.object == "model"


async def test_openai_sdk_gets_not_found_for_a_model_not_served(url: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await _openai(url, lambda c: c.models.retrieve("gpt-unknown"))
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert "gpt-unknown" in info.value.message


async def test_openai_sdk_needs_the_key(url: str) -> None:
    def run() -> Any:
        with openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0) as client:
            return client.models.retrieve("demo")

    with pytest.raises(openai.AuthenticationError):
        await trio.to_thread.run_sync(run)


async def test_anthropic_sdk_retrieves_models_in_its_shape(url: str) -> None:
    model = await _anthropic(url, lambda c: c.models.retrieve("claude-sonnet-4-5"))
    assert isinstance(model, anthropic.types.ModelInfo)
    assert (model.type, model.id, model.display_name) == (
        "model",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
    )
    demo = await _anthropic(url, lambda c: c.models.retrieve("demo"))
    assert demo.id == "demo"


async def test_anthropic_sdk_gets_not_found_for_a_model_not_served(url: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        await _anthropic(url, lambda c: c.models.retrieve("gpt-unknown"))
    assert info.value.status_code == 404
    assert "gpt-unknown" in str(info.value)

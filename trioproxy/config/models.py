"""One `[model:NAME]` section to a `ModelConfig`: the upstreams it routes to, in failover order,
and the per-model request defaults. Pure.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from trioproxy.config.values import did_you_mean, show
from trioproxy.config_types import ModelConfig
from trioproxy.translate.base import ModelDefaults
from trioproxy.validate import REASONING_EFFORTS

if TYPE_CHECKING:
    from trioproxy.config.section import Section
    from trioproxy.config_types import UpstreamConfig

__all__ = ["MODEL_KEYS", "build_model"]

MODEL_KEYS = ("upstream", "upstream_model", "max_tokens", "reasoning_effort", "system_prompt")


def build_model(section: Section, upstreams: dict[str, UpstreamConfig]) -> ModelConfig:
    names = section.items("upstream")
    if not section.has("upstream"):
        section.fail(
            None,
            "needs upstream = NAME, an [upstream:NAME] section (a comma list fails over in order)",
        )
    if not names:
        section.fail("upstream", "is empty; name at least one [upstream:NAME]")
    seen: set[str] = set()
    for name in names:
        if name not in upstreams:
            defined = ", ".join(upstreams) or "none"
            close = difflib.get_close_matches(name, list(upstreams), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            section.fail(
                "upstream",
                f"names upstream '{name}', which is not defined; {hint}"
                f"defined upstreams: {defined}",
            )
        if name in seen:
            section.fail("upstream", f"names upstream '{name}' twice")
        seen.add(name)
    upstream_model = section.optional_string("upstream_model")
    if upstream_model is not None and any(
        c.isspace() or not c.isprintable() for c in upstream_model
    ):
        section.fail("upstream_model", f"cannot contain spaces, got {show(upstream_model)}")
    effort = (section.text("reasoning_effort") or "").lower()
    if effort and effort not in REASONING_EFFORTS:
        choices = tuple(sorted(REASONING_EFFORTS))
        section.fail(
            "reasoning_effort",
            f"must be one of {' | '.join(REASONING_EFFORTS)}, got {show(effort)}"
            + did_you_mean(effort, choices),
        )
    return ModelConfig(
        name=section.name,
        upstreams=names,
        upstream_model=upstream_model,
        defaults=ModelDefaults(
            max_tokens=section.optional_integer("max_tokens", minimum=1),
            reasoning_effort=effort or None,
            system_prompt=section.optional_string("system_prompt"),
        ),
    )

"""One `[model:NAME]` section to a `ModelConfig`: the upstreams it routes to, in failover order
(`strategy = ordered`, the default) or spread by weight and load (`strategy = weighted`, with
`weights = 3, 1`), and the per-model request defaults. Pure.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from trioproxy.config.values import did_you_mean, parse_decimal, show
from trioproxy.config_types import STRATEGIES, ModelConfig
from trioproxy.translate.base import ModelDefaults
from trioproxy.validate import REASONING_EFFORTS

if TYPE_CHECKING:
    from trioproxy.config.section import Section
    from trioproxy.config_types import UpstreamConfig

__all__ = ["JSON_MODES", "MODEL_KEYS", "build_model"]

MODEL_KEYS = (
    "upstream",
    "upstream_model",
    "max_tokens",
    "reasoning_effort",
    "system_prompt",
    "json_mode",
    "strategy",
    "weights",
)

# How `response_format: {"type": "json_object"}` is served by an Anthropic upstream
# (docs/translation-anthropic.md "JSON mode"); the first is the default.
JSON_MODES = ("tool", "instruction", "off")


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
    json_mode = (section.text("json_mode") or JSON_MODES[0]).lower()
    if json_mode not in JSON_MODES:
        section.fail(
            "json_mode",
            f"must be one of {' | '.join(JSON_MODES)}, got {show(json_mode)}"
            + did_you_mean(json_mode, JSON_MODES),
        )
    strategy = section.choice("strategy", "ordered", STRATEGIES)
    weights = _weights(section, names, strategy)
    return ModelConfig(
        name=section.name,
        upstreams=names,
        upstream_model=upstream_model,
        strategy=strategy,
        weights=weights,
        defaults=ModelDefaults(
            max_tokens=section.optional_integer("max_tokens", minimum=1),
            reasoning_effort=effort or None,
            system_prompt=section.optional_string("system_prompt"),
            json_mode=json_mode,
        ),
    )


def _weights(section: Section, names: tuple[str, ...], strategy: str) -> tuple[float, ...]:
    """`weights = 3, 1`: one number > 0 per upstream, in the order of `upstream`."""
    items = section.items("weights")
    if not items:
        return ()
    if strategy != "weighted":
        section.fail("weights", "applies only to strategy = weighted")
    if len(items) != len(names):
        section.fail(
            "weights",
            f"has {len(items)} numbers for {len(names)} upstreams; give one per upstream, "
            "in the order of upstream =",
        )
    weights = []
    for item in items:
        number = parse_decimal(item)
        if number is None or number <= 0:
            section.fail("weights", f"must be numbers > 0, got {show(item)}")
        weights.append(number)
    return tuple(weights)

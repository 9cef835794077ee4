"""Stage 4 of reading proxy.ini: the `ProxyConfig` tree from the raw sections. Pure: no file or
environment access (both come in as arguments).

`parse_config` / `parse_config_mapping` read the sections (`ini`), name each one (`classify`),
reject unknown keys, then build the upstreams (`upstreams`), the models that route to them
(`models`) and the `[proxy]` settings with the client keys (`settings`, `keys`), and collect the
warnings said once at start-up.

Invariants:
- They return a `ProxyConfig` or raise `ConfigError`, never anything else, whatever the input.
- Unknown sections and unknown keys are errors (hypercorn silently accepts typos; we don't,
  STYLE.md §8), with a "did you mean" from difflib.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from trioproxy.config.ini import SECTION_FORMS, RawSection, read_ini, sections_from_mapping
from trioproxy.config.keys import KEY_KEYS
from trioproxy.config.models import MODEL_KEYS, build_model
from trioproxy.config.section import Context, Section
from trioproxy.config.settings import PROXY_KEYS, build_settings
from trioproxy.config.upstreams import UPSTREAM_KEYS, build_upstream
from trioproxy.config.values import NAME
from trioproxy.config_types import ModelConfig, ProxyConfig, UpstreamConfig
from trioproxy.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["parse_config", "parse_config_mapping"]

SECTION_KINDS = {
    "proxy": PROXY_KEYS,
    "upstream": UPSTREAM_KEYS,
    "model": MODEL_KEYS,
    "key": KEY_KEYS,
}


def parse_config(
    text: str,
    environ: Mapping[str, str],
    *,
    source: str = "proxy.ini",
    files: Mapping[str, str] | None = None,
    base_dir: str | None = None,
) -> ProxyConfig:
    """Parse proxy.ini text into a `ProxyConfig`. Pure: no file or environment access.

    Args:
        text: the INI text.
        environ: the variables `${VAR}` may use (the process environment, or a dict in tests).
        source: the name used in error messages ("proxy.ini line 12: ...").
        files: the contents of files the config names (`api_keys_file`), by path as written.
            `load_config` passes a mapping that reads them; a missing path is a ConfigError.
        base_dir: the directory that relative `certfile` / `keyfile` paths are resolved against
            (`load_config` passes the config file's); None leaves them as written.

    Returns:
        The configuration; `warnings` lists what deserves a line at start-up.

    Raises:
        ConfigError: naming the line, section and key, and saying what to write instead.

    Example:
        >>> ini = "[upstream:demo]\\ntype = demo\\n[model:demo]\\nupstream = demo\\n"
        >>> config = parse_config(ini, {})
        >>> config.proxy.listen_port
        8003
    """
    if not isinstance(text, str):
        raise ConfigError(f"{source}: the config text must be a str, got {type(text).__name__}")
    return build(
        read_ini(text, source),
        Context(source, environ, {} if files is None else files, [], base_dir),
    )


def parse_config_mapping(
    sections: Mapping[str, Mapping[str, object]],
    environ: Mapping[str, str],
    *,
    source: str = "<config mapping>",
    files: Mapping[str, str] | None = None,
    base_dir: str | None = None,
) -> ProxyConfig:
    """Like `parse_config`, for `{section: {key: value}}` (values str, int, float, bool or list of
    str, which are written as the INI would spell them). Messages have no line numbers.

    Example:
        >>> sections = {"upstream:demo": {"type": "demo"}, "model:demo": {"upstream": "demo"}}
        >>> parse_config_mapping(sections, {}).models[0].name
        'demo'
    """
    return build(
        sections_from_mapping(sections, source),
        Context(source, environ, {} if files is None else files, [], base_dir),
    )


def _classify(ctx: Context, raw: RawSection) -> tuple[str, str]:
    """(kind, name) for a section title, or ConfigError for an unknown or malformed one."""
    where = f"{ctx.source} line {raw.line}" if raw.line is not None else ctx.source
    kind, colon, name = raw.title.partition(":")
    if kind in SECTION_KINDS and (colon or kind == "proxy"):
        if kind == "proxy":
            if colon:
                raise ConfigError(
                    f"{where}: [{raw.title}]: the proxy section takes no name; write [proxy]"
                )
            return kind, ""
        if not name:
            raise ConfigError(f"{where}: [{raw.title}] needs a name: [{kind}:NAME]")
        if kind in ("upstream", "key") and not NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: [{raw.title}]: a {kind} name is 1 to 64 letters, digits, '_', '-', "
                "'.' or '@', starting with a letter or digit"
            )
        if kind == "model" and any(c.isspace() or not c.isprintable() for c in name):
            raise ConfigError(
                f"{where}: [{raw.title}]: a model name cannot contain spaces or control characters"
            )
        return kind, name
    if kind in ("upstream", "model", "key"):
        raise ConfigError(f"{where}: [{raw.title}] needs a name: [{kind}:NAME]")
    close = difflib.get_close_matches(kind.strip().lower(), list(SECTION_KINDS), n=1)
    hint = ""
    if close:
        hint = (
            f"did you mean [{close[0]}]? "
            if close[0] == "proxy"
            else f"did you mean [{close[0]}:{name or 'NAME'}]? "
        )
    raise ConfigError(f"{where}: unknown section [{raw.title}]; {hint}sections are {SECTION_FORMS}")


def build(raws: list[RawSection], ctx: Context) -> ProxyConfig:
    proxy: Section | None = None
    upstream_sections: list[Section] = []
    model_sections: list[Section] = []
    key_sections: list[Section] = []
    for raw in raws:
        kind, name = _classify(ctx, raw)
        section = Section(ctx, raw, kind, name)
        section.check_keys(SECTION_KINDS[kind])
        if kind == "proxy":
            proxy = section
        elif kind == "upstream":
            upstream_sections.append(section)
        elif kind == "model":
            model_sections.append(section)
        else:
            key_sections.append(section)
    if proxy is None:
        proxy = Section(ctx, RawSection("proxy", None, {}), "proxy", "")

    upstreams = {s.name: build_upstream(s) for s in upstream_sections}
    models = tuple(build_model(s, upstreams) for s in model_sections)
    settings = build_settings(proxy, key_sections)
    _warn_about_upstreams(ctx, upstreams, models)
    if not models:
        ctx.warnings.append("no [model:NAME] section: every chat request will answer 404")
    return ProxyConfig(
        proxy=settings, upstreams=upstreams, models=models, warnings=tuple(ctx.warnings)
    )


def _warn_about_upstreams(
    ctx: Context, upstreams: dict[str, UpstreamConfig], models: tuple[ModelConfig, ...]
) -> None:
    for name, upstream in upstreams.items():
        users = [m.name for m in models if name in m.upstreams]
        if not upstream.enabled:
            stranded = [
                m.name
                for m in models
                if name in m.upstreams and not any(upstreams[u].enabled for u in m.upstreams)
            ]
            tail = f"; these models will answer 503: {', '.join(stranded)}" if stranded else ""
            ctx.warnings.append(f"upstream '{name}' is disabled: {upstream.disabled_reason}{tail}")
        elif not users:
            ctx.warnings.append(f"upstream '{name}' is not used by any [model:NAME] section")

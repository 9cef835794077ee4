"""proxy.ini to a `ProxyConfig`: parsing, `${VAR}` interpolation, validation, and `describe()`.

Stage: configuration, before anything else runs (start-up, `--check`, SIGHUP reload). The package
reads a config in stages, one module each; all are pure except `load`, the edge:

- `ini`: the INI text (or an embedder's mapping) to raw sections whose keys know their line;
- `interpolation`: `${VAR}`, `${VAR:-default}` and `$$` in one value, from the environ given;
- `values` and `section`: the value parsers and the typed fields of one section, whose errors
  name the source, line, section and key;
- `settings` (`[proxy]`), `keys` (the client-key sources), `upstreams`, `models`, and `build`,
  which puts them together: `parse_config(text, environ)` and `parse_config_mapping`;
- `summary`: `describe(config)`, what `trioproxy --check` prints;
- `load`: `load_config`, the one function that reads files and the process environment.

Invariants:
- `parse_config(text, environ)` returns a `ProxyConfig` or raises `ConfigError`, never anything
  else, whatever the text. Every `ConfigError` names the source, the line (when the config came
  from text), the section and the key.
- Unknown sections and unknown keys are errors (hypercorn silently accepts typos; we don't,
  STYLE.md §8), with a "did you mean" from difflib.
- No secret (upstream `api_key`, client keys, `metrics_key`, header values) appears in any message,
  warning, repr or in `describe()`.
- With no client key configured, `listen` must be a loopback address (DESIGN.md "proxy.ini").

The names below are the package's API; the modules' other names are its own business.
"""

from __future__ import annotations

from trioproxy.config.build import parse_config, parse_config_mapping
from trioproxy.config.ini import Lines, locate_lines
from trioproxy.config.interpolation import InterpolationError, VarRef, interpolate
from trioproxy.config.load import load_config
from trioproxy.config.summary import describe
from trioproxy.config.upstreams import DEFAULT_BASE_URLS
from trioproxy.config.values import is_loopback, parse_listen

__all__ = [
    "DEFAULT_BASE_URLS",
    "InterpolationError",
    "Lines",
    "VarRef",
    "describe",
    "interpolate",
    "is_loopback",
    "load_config",
    "locate_lines",
    "parse_config",
    "parse_config_mapping",
    "parse_listen",
]

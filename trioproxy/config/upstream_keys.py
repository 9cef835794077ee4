"""The key pool of one `[upstream:NAME]` section: `api_key` (one key or a comma list) and
`api_keys_file`. Pure: the file's text comes in through `Context.files` (`load_config` reads it,
relative to the config file's directory, on every load: a SIGHUP re-reads it).

- `api_key = ${KEY_A}, ${KEY_B}, sk-literal`: the list is split on the text as written, before
  interpolation, so a key's label is the variable it came from (`KEY_A`); a variable that holds
  a comma list gives `KEY_A-1`, `KEY_A-2`, ...; a literal key is labelled by its fingerprint
  (`fp-1a2b3c4d`, from SHA-256). Every key has weight 1.
- `api_keys_file = upstream-keys.txt`: one key per line, `KEY`, or `LABEL KEY`, either
  optionally followed by `weight=N` (N > 0, default 1); `#` starts a comment.
- An empty item (a variable unset or empty) is left out with a warning; when every item is empty
  the upstream is disabled as with one key (`disabled_reason` names the variable), and its models
  answer 503.
- The same key twice, or two keys with one label, is an error naming both places.

Invariant: no message shows a key, only where it was written ("proxy.ini line 9: [upstream:a]
api_key item 2", "keys.txt line 3").
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from trioproxy.config.interpolation import InterpolationError, interpolate, why_empty
from trioproxy.config.keys import key_file_lines
from trioproxy.config.values import NAME, parse_decimal, show
from trioproxy.config_types import UpstreamKey, key_fingerprint
from trioproxy.errors import ConfigError

if TYPE_CHECKING:
    from trioproxy.config.section import Section

__all__ = ["upstream_keys"]

# One `${NAME}` or `${NAME:-default}` and nothing else: the item is labelled NAME.
_ONE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


def upstream_keys(section: Section) -> tuple[tuple[UpstreamKey, ...], str]:
    """The upstream's keys and, when there are none, why (its `disabled_reason`)."""
    found: list[tuple[UpstreamKey, str]] = []  # (key, where it was written)
    empty: list[str] = []  # why each empty item is empty
    if section.has("api_key"):
        found += _from_api_key(section, empty)
    path = section.text("api_keys_file")
    if path:
        found += _from_file(section, path)
    keys = _unique(found)
    if keys:
        for why in empty:
            section.ctx.warnings.append(
                f"upstream '{section.name}': {why}; that key is left out of the pool"
            )
        return keys, ""
    if empty:
        return (), "; ".join(empty)
    if path:
        return (), f"api_keys_file {show(path)} holds no key"
    if section.has("api_key"):
        return (), "api_key is empty"
    return (), f"no api_key is set in [{section.title}]"


def _from_api_key(section: Section, empty: list[str]) -> list[tuple[UpstreamKey, str]]:
    entry = section.raw.entries["api_key"]
    pieces = [piece.strip() for piece in re.split(r"[,\n]", entry.value)]
    pieces = [piece for piece in pieces if piece]
    where = f"{section.where(section.line_of('api_key'))}: [{section.title}] api_key"
    if not pieces:
        return []
    found: list[tuple[UpstreamKey, str]] = []
    for index, piece in enumerate(pieces, start=1):
        item_where = where if len(pieces) == 1 else f"{where} item {index}"
        try:
            value, refs = interpolate(piece, section.ctx.environ, unset_is_empty=True)
        except InterpolationError as exc:
            section.fail("api_key", str(exc))
        values = [v.strip() for v in value.split(",") if v.strip()]
        if not values:
            why = why_empty(refs, "api_key")
            empty.append(why if len(pieces) == 1 else f"api_key item {index} is empty: {why}")
            continue
        var = _ONE_VAR.fullmatch(piece)
        for number, key in enumerate(values, start=1):
            _check_key(key, item_where)
            if var is not None and NAME.fullmatch(var.group(1)):
                label = var.group(1) if len(values) == 1 else f"{var.group(1)}-{number}"
            else:
                label = "fp-" + key_fingerprint(key)[:8]
            found.append((UpstreamKey(label, key), item_where))
    return found


def _from_file(section: Section, path: str) -> list[tuple[UpstreamKey, str]]:
    found = []
    for where, fields in key_file_lines(section, path):
        weight = 1.0
        if fields[-1].startswith("weight="):
            number = parse_decimal(fields.pop()[len("weight=") :])
            if number is None or number <= 0:
                raise ConfigError(f"{where}: weight= must be a number > 0 (e.g. weight=2)")
            weight = number
        if not 1 <= len(fields) <= 2:
            raise ConfigError(
                f"{where}: expected 'KEY' or 'LABEL KEY', optionally followed by 'weight=N'"
            )
        key = fields[-1]
        _check_key(key, f"{where}: the key")
        if len(fields) == 2:
            if not NAME.fullmatch(fields[0]):
                raise ConfigError(
                    f"{where}: a label is 1 to 64 letters, digits, '_', '-', '.' or '@'"
                )
            label = fields[0]
        else:
            label = "fp-" + key_fingerprint(key)[:8]
        found.append((UpstreamKey(label, key, weight), where))
    return found


def _check_key(key: str, where: str) -> None:
    if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'":
        raise ConfigError(f"{where} is wrapped in quotes; INI values are written without quotes")
    if not all(33 <= ord(c) <= 126 for c in key):
        # It goes into an HTTP header; spaces, control characters or non-ASCII would break it.
        raise ConfigError(f"{where} contains a space, a control character or non-ASCII text")


def _unique(found: list[tuple[UpstreamKey, str]]) -> tuple[UpstreamKey, ...]:
    by_id: dict[str, str] = {}
    by_label: dict[str, str] = {}
    for key, where in found:
        if key.id in by_id:
            raise ConfigError(f"{where}: this key is already in the pool ({by_id[key.id]})")
        if key.label in by_label:
            raise ConfigError(
                f"{where}: the label '{key.label}' is already used ({by_label[key.label]}); "
                "labels name keys in logs and metrics, so they must be unique"
            )
        by_id[key.id] = where
        by_label[key.label] = where
    return tuple(key for key, _ in found)

"""The client keys, from their three sources: `[proxy] api_keys`, `[proxy] api_keys_file` and
`[key:NAME]` sections. Pure: the key file's text comes in through `Context.files`.

DESIGN.md: "Every /v1/... route requires a valid key whenever keys are configured".
- `[proxy] api_keys = KEY, NAME:KEY, ...`: an item `NAME:KEY` names the key (split at the first
  `:`); an unnamed key is called `key-1`, `key-2`, ... in order. A key that itself contains `:`
  must therefore be written with a name.
- `[proxy] api_keys_file = PATH`: one `KEY` or `NAME KEY` per line, `#` comments. `parse_config`
  does no IO: it looks the path up in its `files` argument; `load_config` supplies a mapping that
  reads the file, relative to the config file's directory.
- `[key:NAME]` sections: `key`, `models` (fnmatch patterns), `max_concurrent`, `rpm`, `tpm`. A
  key that resolves empty is skipped with a warning, unless that leaves no key at all where some
  were configured: then it is an error, so a missing variable never silently turns auth off.
- Names are unique; two names with the same key are an error.

Invariant: no message names a key, only where it was written ("proxy.ini line 4: [proxy]
api_keys item 2").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trioproxy.config.interpolation import why_empty
from trioproxy.config.values import NAME, parse_decimal, show, split_items
from trioproxy.config_types import ClientKey
from trioproxy.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from trioproxy.config.section import Context, Section

__all__ = ["KEY_KEYS", "client_keys"]

KEY_KEYS = ("key", "models", "max_concurrent", "rpm", "tpm")
_SHORT_KEY = 16  # characters; below this a client key is guessable, so say so


@dataclass(slots=True)
class _KeyItem:
    name: str | None  # None: numbered later (key-1, key-2, ...)
    key: str
    where: str  # "proxy.ini line 4: [proxy] api_keys item 2" - for messages, never the key
    models: tuple[str, ...] = ()
    max_concurrent: int | None = None
    rpm: float | None = None
    tpm: int | None = None


def client_keys(section: Section, key_sections: list[Section]) -> tuple[tuple[ClientKey, ...], str]:
    """The client keys, and (when there are none) why api_keys came out empty, for messages."""
    items: list[_KeyItem] = []
    why_no_keys = ""
    found = section.resolved("api_keys")
    if found is not None:
        value, refs = found
        if not value:
            why_no_keys = why_empty(refs, "api_keys")
        where = f"{section.where(section.line_of('api_keys'))}: [proxy] api_keys"
        for index, item in enumerate(split_items(value), start=1):
            items.append(_key_item(f"{where} item {index}", item))
    path = section.text("api_keys_file")
    if path:
        items.extend(_key_file(section, path))
    skipped: list[str] = []
    for key_section in key_sections:
        named = _key_section(key_section)
        if isinstance(named, str):
            skipped.append(f"[{key_section.title}]: {named}")
            section.ctx.warnings.append(f"client key '{key_section.name}' is skipped: {named}")
        else:
            items.append(named)
    if skipped and not items:
        # A missing variable must never turn auth off: say so instead of serving everyone.
        first = key_sections[0]
        raise ConfigError(
            f"{first.where(first.line_of('key'))}: every client key resolved empty "
            f"({'; '.join(skipped)}), so auth would be off; set the variables their "
            "key = ${...} use, or remove those sections"
        )
    return _number_keys(section.ctx, items), why_no_keys


def _key_item(where: str, item: str) -> _KeyItem:
    if len(item) >= 2 and item[0] == item[-1] and item[0] in "\"'":
        raise ConfigError(f"{where} is wrapped in quotes; INI values are written without quotes")
    if not all(33 <= ord(c) <= 126 for c in item):
        raise ConfigError(f"{where} contains a space, a control character or non-ASCII text")
    name, colon, secret = item.partition(":")
    if not colon:
        return _KeyItem(None, item, where)
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: the name before ':' must be 1 to 64 letters, digits, '_', '-', '.' or '@' "
            "(NAME:KEY); a key that itself contains ':' must be written with a name"
        )
    if not secret:
        raise ConfigError(f"{where}: '{name}:' has no key after the ':'")
    return _KeyItem(name, secret, where)


def key_file_lines(section: Section, path: str) -> Iterator[tuple[str, list[str]]]:
    """(where, fields) of each line of the key file `path` that is not blank or a comment
    (`#` at the start, or after whitespace). Files are read by `load_config`, never here."""
    try:
        content = section.ctx.files[path]
    except KeyError as exc:
        reason = (
            exc.args[1]
            if len(exc.args) > 1 and isinstance(exc.args[1], str)
            else (
                "its contents were not provided (parse_config reads no files: pass files=, "
                "or use load_config)"
            )
        )
        section.fail("api_keys_file", f"cannot read {show(path)}: {reason}")
    if not isinstance(content, str):
        section.fail("api_keys_file", f"{show(path)}: its contents must be given as a str")
    for lineno, line in enumerate(content.splitlines(), start=1):
        text = re.split(r"\s#", line, maxsplit=1)[0].strip()
        if text and not text.startswith("#"):
            yield f"{path} line {lineno}", text.split()


def _key_file(section: Section, path: str) -> list[_KeyItem]:
    items = []
    for where, fields in key_file_lines(section, path):
        if len(fields) > 2 or not all(33 <= ord(c) <= 126 for c in "".join(fields)):
            raise ConfigError(
                f"{where}: expected 'KEY' or 'NAME KEY' (printable ASCII, no spaces in the key)"
            )
        if len(fields) == 1:
            items.append(_KeyItem(None, fields[0], where))
            continue
        if not NAME.fullmatch(fields[0]):
            raise ConfigError(
                f"{where}: a key name is 1 to 64 letters, digits, '_', '-', '.' or '@'"
            )
        items.append(_KeyItem(fields[0], fields[1], where))
    return items


def _key_section(section: Section) -> _KeyItem | str:
    """The key of a [key:NAME] section, or why it is skipped (it resolved empty)."""
    found = section.secret("key")
    if found is None:
        section.fail(None, "needs key = ${SOME_VARIABLE} (the key this client sends)")
    value, why = found
    if not value:
        return why
    models = section.items("models")
    for pattern in models:
        if any(c.isspace() or not c.isprintable() for c in pattern):
            section.fail(
                "models", f"has {show(pattern)}: a model name or pattern cannot contain spaces"
            )
    rpm = section.text("rpm")
    rpm_value = None
    if rpm:
        rpm_value = parse_decimal(rpm)
        if rpm_value is None or rpm_value <= 0:
            section.fail("rpm", f"must be a number of requests per minute > 0, got {show(rpm)}")
    return _KeyItem(
        section.name,
        value,
        f"{section.where(section.line_of('key'))}: [{section.title}] key",
        models=models,
        max_concurrent=section.optional_integer("max_concurrent", minimum=1),
        rpm=rpm_value,
        tpm=section.optional_integer("tpm", minimum=1),
    )


def _number_keys(ctx: Context, items: list[_KeyItem]) -> tuple[ClientKey, ...]:
    keys: list[ClientKey] = []
    by_name: dict[str, _KeyItem] = {}
    by_key: dict[str, str] = {}
    unnamed = 0
    for item in items:
        if item.name is None:
            unnamed += 1
            name = f"key-{unnamed}"
        else:
            name = item.name
        if name in by_name:
            raise ConfigError(
                f"{item.where}: the key name '{name}' is already used ({by_name[name].where}); "
                "names must be unique"
            )
        if item.key in by_key:
            raise ConfigError(
                f"{item.where}: this key is the same as key '{by_key[item.key]}'; give every "
                "client its own key"
            )
        by_name[name] = item
        by_key[item.key] = name
        if len(item.key) < _SHORT_KEY:
            ctx.warnings.append(
                f"client key '{name}' is shorter than {_SHORT_KEY} characters and could be "
                "guessed; generate one with: "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        keys.append(
            ClientKey(
                name=name,
                key=item.key,
                models=item.models,
                max_concurrent=item.max_concurrent,
                rpm=item.rpm,
                tpm=item.tpm,
            )
        )
    return tuple(keys)

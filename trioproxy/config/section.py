"""Stage 3 of reading proxy.ini: the typed fields of one section. `Section` wraps a raw section
and offers getters (`seconds`, `integer`, `choice`, `items`, `secret`, ...) that interpolate the
value, check it and, when it is wrong, raise a `ConfigError` naming the source, line, section and
key (`Section.fail`). Pure: the environment and the files come in through `Context`.

Lists (`api_keys`, `upstream`, `models`, `anthropic_beta`, `cors_origins`) are separated by commas
or newlines (`Section.items`).

Invariant: no secret appears in a message. A value that came from the environment is shown as its
`${VAR}` reference (`Section.redact`), and secrets are never shown at all.
"""

from __future__ import annotations

import configparser
import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from trioproxy.config.interpolation import InterpolationError, VarRef, interpolate, why_empty
from trioproxy.config.values import INT, did_you_mean, parse_decimal, show, split_items
from trioproxy.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trioproxy.config.ini import RawSection

__all__ = ["Context", "Section"]

_BOOLEANS = configparser.RawConfigParser.BOOLEAN_STATES  # 1/yes/true/on, 0/no/false/off


@dataclass(slots=True)
class Context:
    source: str
    environ: Mapping[str, str]
    files: Mapping[str, str]
    warnings: list[str]
    # The directory relative paths (certfile, keyfile) are resolved against: the config file's.
    # None leaves them as written (relative to the working directory of whoever opens them).
    base_dir: str | None = None


class Section:
    """One section being read: typed getters that interpolate and say where a bad value is."""

    def __init__(self, ctx: Context, raw: RawSection, kind: str, name: str) -> None:
        self.ctx = ctx
        self.raw = raw
        self.kind = kind
        self.name = name
        self.title = raw.title

    # where and what

    def where(self, line: int | None) -> str:
        return f"{self.ctx.source} line {line}" if line is not None else self.ctx.source

    def line_of(self, key: str) -> int | None:
        entry = self.raw.entries.get(key)
        return entry.line if entry is not None and entry.line is not None else self.raw.line

    def fail(self, key: str | None, message: str) -> NoReturn:
        if key is None:
            raise ConfigError(f"{self.where(self.raw.line)}: [{self.title}] {message}")
        message = self.redact(key, message)
        raise ConfigError(f"{self.where(self.line_of(key))}: [{self.title}] {key} {message}")

    def redact(self, key: str, message: str) -> str:
        # A bad value may have come from the environment, and someone may have written
        # `log_level = ${ANTHROPIC_API_KEY}`: show the reference, never what it resolved to.
        # (Short values, such as a port, cannot be secrets and would match unrelated text.)
        entry = self.raw.entries.get(key)
        if entry is None or "${" not in entry.value:
            return message
        try:
            _, refs = interpolate(entry.value, self.ctx.environ, unset_is_empty=True)
        except InterpolationError:
            return message
        for ref in refs:
            value = self.ctx.environ.get(ref.name, "").strip()
            if ref.state == "set" and len(value) >= 8:
                message = message.replace(value, f"${{{ref.name}}}")
        return message

    def has(self, key: str) -> bool:
        return key in self.raw.entries

    def check_keys(self, known: tuple[str, ...]) -> None:
        for key, entry in self.raw.entries.items():
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
            where = self.where(entry.line if entry.line is not None else self.raw.line)
            raise ConfigError(f"{where}: unknown key '{key}' in [{self.title}]; {hint}")

    # values

    def resolved(
        self, key: str, *, unset_is_empty: bool = False
    ) -> tuple[str, tuple[VarRef, ...]] | None:
        """The interpolated, stripped value and its ${VAR} references; None if the key is absent."""
        entry = self.raw.entries.get(key)
        if entry is None:
            return None
        try:
            value, refs = interpolate(entry.value, self.ctx.environ, unset_is_empty=unset_is_empty)
        except InterpolationError as exc:
            self.fail(key, str(exc))
        return value.strip(), refs

    def text(self, key: str) -> str | None:
        """The interpolated, stripped value, or None when the key is absent."""
        found = self.resolved(key)
        return None if found is None else found[0]

    def secret(self, key: str) -> tuple[str, str] | None:
        """(value, why it is empty) for a secret; unset ${VAR} counts as empty. None when absent."""
        found = self.resolved(key, unset_is_empty=True)
        if found is None:
            return None
        value, refs = found
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            self.fail(key, "is wrapped in quotes; INI values are written without quotes")
        if value and not all(33 <= ord(c) <= 126 for c in value):
            # It goes into an HTTP header; spaces, control characters or non-ASCII would break it.
            self.fail(key, "contains a space, a control character or non-ASCII text")
        return value, why_empty(refs, key)

    def string(self, key: str, default: str) -> str:
        value = self.text(key)
        return default if value is None else value

    def optional_string(self, key: str) -> str | None:
        return self.text(key) or None

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(key)
        if value is None:
            return default
        if value.lower() in choices:
            return value.lower()
        self.fail(
            key,
            f"must be one of {' | '.join(choices)}, got {show(value)}"
            + did_you_mean(value, choices),
        )

    def boolean(self, key: str, default: bool) -> bool:
        value = self.text(key)
        if value is None:
            return default
        found = _BOOLEANS.get(value.lower())
        if found is None:
            self.fail(key, f"must be true or false (or yes/no, on/off, 1/0), got {show(value)}")
        return found

    def integer(self, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        value = self.text(key)
        if value is None:
            return default
        limits = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        if (
            not INT.fullmatch(value)
            or int(value) < minimum
            or (maximum is not None and int(value) > maximum)
        ):
            self.fail(key, f"must be a whole number {limits}, got {show(value)}")
        return int(value)

    def optional_integer(self, key: str, *, minimum: int) -> int | None:
        if not self.text(key):
            return None
        return self.integer(key, 0, minimum=minimum)

    def seconds(self, key: str, default: float, *, allow_zero: bool) -> float:
        value = self.text(key)
        if value is None:
            return default
        number = parse_decimal(value)
        if number is None or number < 0 or (number == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            self.fail(key, f"must be a number of seconds {bound}, got {show(value)}")
        return number

    def optional_seconds(self, key: str) -> float | None:
        """Seconds > 0, or None when absent, empty or `none`."""
        value = self.text(key)
        if not value or value.lower() == "none":
            return None
        return self.seconds(key, 0.0, allow_zero=False)

    def items(self, key: str) -> tuple[str, ...]:
        """A comma- or newline-separated list, items stripped, empty items dropped."""
        value = self.text(key)
        if value is None:
            return ()
        return split_items(value)

"""proxy.ini to a `ProxyConfig`: parsing, `${VAR}` interpolation, validation, and `describe()`.

Stage: configuration, before anything else runs (start-up, `--check`, SIGHUP reload). Pure except
`load_config`, the one function here that does IO (it reads files and defaults to os.environ).

Invariants:
- `parse_config(text, environ)` returns a `ProxyConfig` or raises `ConfigError`, never anything
  else, whatever the text. Every `ConfigError` names the source, the line (when the config came
  from text), the section and the key.
- Unknown sections and unknown keys are errors (hypercorn silently accepts typos; we don't,
  STYLE.md §8), with a "did you mean" from difflib.
- No secret (upstream `api_key`, client keys, `metrics_key`, header values) appears in any message,
  warning, repr or in `describe()`.
- With no client key configured, `listen` must be a loopback address (DESIGN.md "proxy.ini").

Syntax (stdlib configparser, `interpolation=None`, `strict=True`):
- `key = value`; only `=` separates key from value (not `:`, which appears in URLs and headers).
  Keys are case-insensitive; section names are not.
- Comments: a line starting with `;` or `#`, or `;` / `#` after whitespace inside a line
  (configparser's inline-comment caveat: `a=b;c` keeps `;c`, `a = b ;c` does not). A value that
  must contain " ;" or " #" cannot be written inline; put it in the environment and use ${VAR}.
- A value continues on following lines indented deeper than its key (multi-line `system_prompt`,
  one `headers` entry per line).
- A section or key given twice is an error.

Interpolation (our own, from `environ` only; nothing else is interpolated):
- `${VAR}`: VAR's value. Unset is an error naming the variable, section, key and line, except for
  secrets (`[upstream:*] api_key`, `[key:*] key`), where unset means empty: the upstream is disabled
  (`disabled_reason` names the variable) or the client key is skipped, each with one warning.
- `${VAR:-default}`: the default when VAR is unset *or empty* (POSIX shell `:-`). The default is
  literal text up to the first `}`; it is not itself interpolated.
- `$$` is a literal `$`. Any other `$` (not followed by `{` or `$`) is literal too.

Lists (`api_keys`, `upstream`, `models`, `anthropic_beta`, `cors_origins`) are separated by commas
or newlines. `headers` is one `Name: value` per line; on one line, `, ` also separates entries when
it is followed by `Name:` (so `HTTP-Referer: https://x, X-Title: y` is two headers).

Client keys (DESIGN.md: "Every /v1/... route requires a valid key whenever keys are configured"):
- `[proxy] api_keys = KEY, NAME:KEY, ...`: an item `NAME:KEY` names the key (split at the first
  `:`); an unnamed key is called `key-1`, `key-2`, ... in order. A key that itself contains `:`
  must therefore be written with a name.
- `[proxy] api_keys_file = PATH`: one `KEY` or `NAME KEY` per line, `#` comments. `parse_config`
  does no IO: it looks the path up in its `files` argument; `load_config` supplies a mapping that
  reads the file, relative to the config file's directory.
- `[key:NAME]` sections: `key`, `models` (fnmatch patterns), `max_concurrent`, `rpm`. A key that
  resolves empty is skipped with a warning, unless that leaves no key at all where some were
  configured: then it is an error, so a missing variable never silently turns auth off.
- Names are unique; two names with the same key are an error.
"""

from __future__ import annotations

import configparser
import difflib
import io
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

from trioproxy.config_types import (
    UPSTREAM_TYPES,
    ClientKey,
    ModelConfig,
    ProxyConfig,
    ProxySettings,
    UpstreamConfig,
)
from trioproxy.errors import ConfigError
from trioproxy.translate.base import ModelDefaults
from trioproxy.validate import REASONING_EFFORTS

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator

__all__ = [
    "DEFAULT_BASE_URLS",
    "describe",
    "interpolate",
    "is_loopback",
    "load_config",
    "locate_lines",
    "parse_config",
    "parse_config_mapping",
    "parse_listen",
]

# Where each upstream type goes when `base_url` is not given (DESIGN.md "proxy.ini": written as the
# provider's own SDK takes it; Anthropic without /v1, OpenAI-style with /v1). openai-chat has no
# default: it is "any OpenAI-compatible provider", so the user must say which.
DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com",
    "openai-responses": "https://api.openai.com/v1",
}

_PROXY_KEYS = (
    "listen",
    "api_keys",
    "api_keys_file",
    "keepalive_interval",
    "max_body_bytes",
    "drain_timeout",
    "write_timeout",
    "log_level",
    "log_format",
    "metrics",
    "metrics_key",
    "ws_max_in_flight",
    "ws_max_message_bytes",
    "max_messages",
    "max_tools",
    "max_json_depth",
    "cors_origins",
)
_UPSTREAM_KEYS = (
    "type",
    "base_url",
    "api_key",
    "connect_timeout",
    "first_byte_timeout",
    "read_timeout",
    "total_timeout",
    "max_retries",
    "retry_max_wait",
    "verify_tls",
    "ca_file",
    "https_proxy",
    "max_idle_connections",
    "idle_expiry",
    "anthropic_version",
    "anthropic_beta",
    "headers",
    "forward_headers",
    "demo_delay",
)
_MODEL_KEYS = ("upstream", "upstream_model", "max_tokens", "reasoning_effort", "system_prompt")
_KEY_KEYS = ("key", "models", "max_concurrent", "rpm")
_SECTION_KINDS = {
    "proxy": _PROXY_KEYS,
    "upstream": _UPSTREAM_KEYS,
    "model": _MODEL_KEYS,
    "key": _KEY_KEYS,
}
_SECTION_FORMS = "[proxy], [upstream:NAME], [model:NAME], [key:NAME]"

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LOG_FORMATS = ("text", "json")
_BOOLEANS = configparser.RawConfigParser.BOOLEAN_STATES  # 1/yes/true/on, 0/no/false/off

# Names of upstreams and client keys go to logs, metrics labels and /health.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[0-9]{1,18}")  # ASCII digits only (int() would take "١٢" and "1_0")
_DECIMAL = re.compile(r"(?:[0-9]{1,18}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2 token
_HEADER_START = re.compile(r"\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*:")
# Headers trioproxy sets itself: framing (h11 owns them), the body type, and credentials (use
# api_key, so the key stays out of reprs and messages).
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "content-type",
        "authorization",
        "x-api-key",
        "anthropic-version",
        "anthropic-beta",
    }
)
_SHORT_KEY = 16  # characters; below this a client key is guessable, so say so
_MIN_JSON_DEPTH = 8  # a chat request with an image part already nests 5 deep


# --- reading the text -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    value: str
    line: int | None


@dataclass(frozen=True, slots=True)
class _RawSection:
    title: str  # as written between the brackets
    line: int | None
    entries: dict[str, _Entry]


@dataclass(frozen=True, slots=True)
class Lines:
    """Where things are in an INI text: `sections[title]` and `keys[(title, key)]` are 1-based line
    numbers of the header and of the key's first line (the first occurrence of each)."""

    sections: dict[str, int]
    keys: dict[tuple[str, str], int]


# configparser records no line numbers, so `locate_lines` re-reads the text with the same rules as
# `RawConfigParser._read` (CPython 3.11 Lib/configparser.py) for our settings: comment prefixes
# `#` `;` on their own line; inline prefixes after whitespace; continuation lines indented deeper
# than their key; blank lines kept inside values (empty_lines_in_values=True); only `=` delimits.
_SECTION_HEADER = configparser.RawConfigParser.SECTCRE
_OPTION = re.compile(r"(?P<option>.*?)\s*(?P<vi>=)\s*(?P<value>.*)$")
_NONSPACE = re.compile(r"\S")
_COMMENT_PREFIXES = ("#", ";")
_NO_DEFAULTS = "\n"  # a section title no header can have (lines split at "\n"), so no [DEFAULT]


def _strip_comment(line: str) -> str:
    """The line without its comment, found exactly as configparser finds it: in rounds, the k-th
    occurrence of every prefix in round k, stopping at the first round where one follows
    whitespace (so `v#1 #2 ;3` keeps `#2`: `;3` qualifies in round 1, `#2` only in round 2)."""
    comment_start: int | None = None
    positions = dict.fromkeys(_COMMENT_PREFIXES, -1)
    while comment_start is None and positions:
        following = {}
        for prefix, index in positions.items():
            index = line.find(prefix, index + 1)
            if index == -1:
                continue
            following[prefix] = index
            if index == 0 or line[index - 1].isspace():
                comment_start = index if comment_start is None else min(comment_start, index)
        positions = following
    if line.strip().startswith(_COMMENT_PREFIXES):
        comment_start = 0
    return line[:comment_start].strip()


def locate_lines(text: str) -> Lines:
    """Line numbers of the section headers and keys in `text`, found as configparser finds them."""
    sections: dict[str, int] = {}
    keys: dict[tuple[str, str], int] = {}
    section: str | None = None
    option: str | None = None
    indent_level = 0
    for lineno, line in enumerate(io.StringIO(text), start=1):
        value = _strip_comment(line)
        if not value:
            continue
        first = _NONSPACE.search(line)
        indent = first.start() if first else 0
        if section is not None and option and indent > indent_level:
            continue  # a continuation line of `option`
        indent_level = indent
        if (header := _SECTION_HEADER.match(value)) is not None:
            section = header.group("header")
            sections.setdefault(section, lineno)
            option = None
        elif section is not None and (found := _OPTION.match(value)) is not None:
            option = found.group("option").rstrip().lower()
            keys.setdefault((section, option), lineno)
    return Lines(sections, keys)


def _read_ini(text: str, source: str) -> list[_RawSection]:
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        strict=True,
        delimiters=("=",),
        default_section=_NO_DEFAULTS,
        empty_lines_in_values=True,
    )
    try:
        parser.read_string(text, source=source)
    except configparser.MissingSectionHeaderError as exc:
        # Never echo the line: a stray line in a config file may well be a pasted key.
        raise ConfigError(
            f"{source} line {exc.lineno}: expected a section header such as [proxy] before the "
            f"first setting (sections: {_SECTION_FORMS})"
        ) from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(
            f"{source} line {exc.lineno}: section [{exc.section}] appears twice; merge the two"
        ) from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(
            f"{source} line {exc.lineno}: key '{exc.option}' appears twice in [{exc.section}]"
        ) from None
    except configparser.ParsingError as exc:
        line = exc.errors[0][0] if exc.errors else "?"
        raise ConfigError(
            f"{source} line {line}: cannot read this line: expected 'key = value', a [section] "
            "header, or a comment starting with ; or #"
        ) from None
    except configparser.Error as exc:  # pragma: no cover - _read raises only the ones above
        raise ConfigError(f"{source}: {exc.message}") from None
    lines = locate_lines(text)
    result = []
    for title in parser.sections():
        entries = {
            key: _Entry(value, lines.keys.get((title, key)))
            for key, value in parser.items(title, raw=True)
        }
        result.append(_RawSection(title, lines.sections.get(title), entries))
    return result


def _sections_from_mapping(
    sections: Mapping[str, Mapping[str, object]], source: str
) -> list[_RawSection]:
    if not isinstance(sections, Mapping):
        raise ConfigError(f"{source}: a config mapping must be {{section: {{key: value}}}}")
    result = []
    for title, body in sections.items():
        if not isinstance(title, str):
            raise ConfigError(f"{source}: section names must be strings, got {title!r}")
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: [{title}] must be a mapping of key to value")
        entries: dict[str, _Entry] = {}
        for key, value in body.items():
            if not isinstance(key, str):
                raise ConfigError(f"{source}: [{title}] keys must be strings, got {key!r}")
            if key.lower() in entries:
                raise ConfigError(f"{source}: key '{key.lower()}' appears twice in [{title}]")
            entries[key.lower()] = _Entry(_mapping_value(value, title, key, source), None)
        result.append(_RawSection(title, None, entries))
    return result


def _mapping_value(value: object, title: str, key: str, source: str) -> str:
    # Embedders write Python values; give them the INI spelling of each.
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    raise ConfigError(
        f"{source}: [{title}] {key} must be a string, number, bool or list of strings, "
        f"got {type(value).__name__}"
    )


# --- interpolation --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VarRef:
    """One `${NAME}` / `${NAME:-default}` in a value and what the environment held for it."""

    name: str
    state: str  # "set", "empty" (set to ""), "unset"
    defaulted: bool  # the default text was used


class InterpolationError(ValueError):
    """A malformed `${...}`, or `${VAR}` unset with no default (the caller raises ConfigError)."""

    def __init__(self, message: str, *, unset: str | None = None) -> None:
        super().__init__(message)
        self.unset = unset


def interpolate(
    value: str, environ: Mapping[str, str], *, unset_is_empty: bool = False
) -> tuple[str, tuple[VarRef, ...]]:
    """Expand `${VAR}`, `${VAR:-default}` and `$$` in `value` from `environ` (see module docstring).

    Returns the text and the references found. Raises `InterpolationError` for a malformed
    reference, or for `${VAR}` with VAR unset unless `unset_is_empty`.
    """
    out: list[str] = []
    refs: list[VarRef] = []
    pos = 0
    while (dollar := value.find("$", pos)) != -1:
        out.append(value[pos:dollar])
        following = value[dollar + 1 : dollar + 2]
        if following == "$":
            out.append("$")
            pos = dollar + 2
            continue
        if following != "{":
            out.append("$")
            pos = dollar + 1
            continue
        end = value.find("}", dollar + 2)
        if end == -1:
            raise InterpolationError("has '${' without a closing '}' (write $$ for a literal $)")
        name, sep, default = value[dollar + 2 : end].partition(":-")
        if not _VAR_NAME.fullmatch(name):
            # Don't echo it: what follows the name may be a default that holds a key.
            raise InterpolationError(
                "has a malformed ${...}: write ${NAME} or ${NAME:-default}, NAME being letters, "
                "digits and _ (not starting with a digit); write $$ for a literal $"
            )
        found = environ.get(name)
        state = "unset" if found is None else "empty" if found == "" else "set"
        if found:
            out.append(found)
            refs.append(VarRef(name, state, defaulted=False))
        elif sep:
            out.append(default)
            refs.append(VarRef(name, state, defaulted=True))
        elif found is None and not unset_is_empty:
            raise InterpolationError(
                f"uses ${{{name}}}, but {name} is not set in the environment; set it, or write "
                f"${{{name}:-default}} to make it optional",
                unset=name,
            )
        else:
            refs.append(VarRef(name, state, defaulted=False))
        pos = end + 1
    out.append(value[pos:])
    return "".join(out), tuple(refs)


def _why_empty(refs: tuple[VarRef, ...], what: str) -> str:
    """Why a value that uses `refs` came out empty, naming the variable where there is one."""
    for ref in refs:
        if ref.state == "unset":
            return f"{ref.name} is not set"
        if ref.state == "empty":
            return f"{ref.name} is empty"
    if refs:
        return f"{refs[0].name} is blank"  # set, but only to whitespace
    return f"{what} is empty"


# --- sections -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    source: str
    environ: Mapping[str, str]
    files: Mapping[str, str]
    warnings: list[str]


class _Section:
    """One section being read: typed getters that interpolate and say where a bad value is."""

    def __init__(self, ctx: _Context, raw: _RawSection, kind: str, name: str) -> None:
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
        return value, _why_empty(refs, key)

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
            f"must be one of {' | '.join(choices)}, got {_show(value)}"
            + _did_you_mean(value, choices),
        )

    def boolean(self, key: str, default: bool) -> bool:
        value = self.text(key)
        if value is None:
            return default
        found = _BOOLEANS.get(value.lower())
        if found is None:
            self.fail(key, f"must be true or false (or yes/no, on/off, 1/0), got {_show(value)}")
        return found

    def integer(self, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        value = self.text(key)
        if value is None:
            return default
        limits = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        if (
            not _INT.fullmatch(value)
            or int(value) < minimum
            or (maximum is not None and int(value) > maximum)
        ):
            self.fail(key, f"must be a whole number {limits}, got {_show(value)}")
        return int(value)

    def optional_integer(self, key: str, *, minimum: int) -> int | None:
        if not self.text(key):
            return None
        return self.integer(key, 0, minimum=minimum)

    def seconds(self, key: str, default: float, *, allow_zero: bool) -> float:
        value = self.text(key)
        if value is None:
            return default
        number = _decimal(value)
        if number is None or number < 0 or (number == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            self.fail(key, f"must be a number of seconds {bound}, got {_show(value)}")
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
        return _split_items(value)


def _split_items(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in re.split(r"[,\n]", value) if item.strip())


def _decimal(value: str) -> float | None:
    if not _DECIMAL.fullmatch(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _show(value: str) -> str:
    """A non-secret value for a message, quoted and cut short."""
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _did_you_mean(value: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(value.lower(), choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


# --- listen addresses -----------------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` to (host, port); the host without brackets. Port 0 = any free.

    Raises:
        ConfigError: with a message saying what is wrong (no source or line: callers add those).
    """
    value = value.strip()
    example = "e.g. 127.0.0.1:8003, localhost:8003 or [::1]:8003"
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ConfigError(f"must be HOST:PORT ({example}), got {_show(value)}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(
                f"has {_show(host)} in brackets, which is not an IPv6 address"
            ) from None
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon or not host:
            raise ConfigError(f"must be HOST:PORT ({example}), got {_show(value)}")
        if ":" in host:
            raise ConfigError(
                f"must put an IPv6 address in brackets ([::1]:8003), got {_show(value)}"
            )
        if not _is_ipv4(host) and not _HOSTNAME.fullmatch(host):
            raise ConfigError(f"has {_show(host)}, which is neither an IP address nor a host name")
    if not _INT.fullmatch(port_text) or int(port_text) > 65535:
        raise ConfigError(f"must end in a port from 0 to 65535, got {_show(value)}")
    return host, int(port_text)


def _is_ipv4(host: str) -> bool:
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address: 127.0.0.0/8, ::1 (also IPv4-mapped), `localhost`.

    Other host names count as not loopback (no DNS lookup here). Brackets are allowed (`[::1]`).
    """
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


# --- building the config --------------------------------------------------------------------------


@dataclass(slots=True)
class _KeyItem:
    name: str | None  # None: numbered later (key-1, key-2, ...)
    key: str
    where: str  # "proxy.ini line 4: [proxy] api_keys item 2" - for messages, never the key
    models: tuple[str, ...] = ()
    max_concurrent: int | None = None
    rpm: float | None = None


def parse_config(
    text: str,
    environ: Mapping[str, str],
    *,
    source: str = "proxy.ini",
    files: Mapping[str, str] | None = None,
) -> ProxyConfig:
    """Parse proxy.ini text into a `ProxyConfig`. Pure: no file or environment access.

    Args:
        text: the INI text.
        environ: the variables `${VAR}` may use (pass `os.environ`, or a dict in tests).
        source: the name used in error messages ("proxy.ini line 12: ...").
        files: the contents of files the config names (`api_keys_file`), by path as written.
            `load_config` passes a mapping that reads them; a missing path is a ConfigError.

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
    return _build(
        _read_ini(text, source), _Context(source, environ, {} if files is None else files, [])
    )


def parse_config_mapping(
    sections: Mapping[str, Mapping[str, object]],
    environ: Mapping[str, str],
    *,
    source: str = "<config mapping>",
    files: Mapping[str, str] | None = None,
) -> ProxyConfig:
    """Like `parse_config`, for `{section: {key: value}}` (values str, int, float, bool or list of
    str, which are written as the INI would spell them). Messages have no line numbers.

    Example:
        >>> sections = {"upstream:demo": {"type": "demo"}, "model:demo": {"upstream": "demo"}}
        >>> parse_config_mapping(sections, {}).models[0].name
        'demo'
    """
    return _build(
        _sections_from_mapping(sections, source),
        _Context(source, environ, {} if files is None else files, []),
    )


def _classify(ctx: _Context, raw: _RawSection) -> tuple[str, str]:
    """(kind, name) for a section title, or ConfigError for an unknown or malformed one."""
    where = f"{ctx.source} line {raw.line}" if raw.line is not None else ctx.source
    kind, colon, name = raw.title.partition(":")
    if kind in _SECTION_KINDS and (colon or kind == "proxy"):
        if kind == "proxy":
            if colon:
                raise ConfigError(
                    f"{where}: [{raw.title}]: the proxy section takes no name; write [proxy]"
                )
            return kind, ""
        if not name:
            raise ConfigError(f"{where}: [{raw.title}] needs a name: [{kind}:NAME]")
        if kind in ("upstream", "key") and not _NAME.fullmatch(name):
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
    close = difflib.get_close_matches(kind.strip().lower(), list(_SECTION_KINDS), n=1)
    hint = ""
    if close:
        hint = (
            f"did you mean [{close[0]}]? "
            if close[0] == "proxy"
            else f"did you mean [{close[0]}:{name or 'NAME'}]? "
        )
    raise ConfigError(
        f"{where}: unknown section [{raw.title}]; {hint}sections are {_SECTION_FORMS}"
    )


def _build(raws: list[_RawSection], ctx: _Context) -> ProxyConfig:
    proxy: _Section | None = None
    upstream_sections: list[_Section] = []
    model_sections: list[_Section] = []
    key_sections: list[_Section] = []
    for raw in raws:
        kind, name = _classify(ctx, raw)
        section = _Section(ctx, raw, kind, name)
        section.check_keys(_SECTION_KINDS[kind])
        if kind == "proxy":
            proxy = section
        elif kind == "upstream":
            upstream_sections.append(section)
        elif kind == "model":
            model_sections.append(section)
        else:
            key_sections.append(section)
    if proxy is None:
        proxy = _Section(ctx, _RawSection("proxy", None, {}), "proxy", "")

    upstreams = {s.name: _upstream(s) for s in upstream_sections}
    models = tuple(_model(s, upstreams) for s in model_sections)
    settings = _settings(proxy, key_sections)
    _warn_about_upstreams(ctx, upstreams, models)
    if not models:
        ctx.warnings.append("no [model:NAME] section: every chat request will answer 404")
    return ProxyConfig(
        proxy=settings, upstreams=upstreams, models=models, warnings=tuple(ctx.warnings)
    )


_DEFAULT_SETTINGS = ProxySettings()


def _settings(section: _Section, key_sections: list[_Section]) -> ProxySettings:
    listen = section.text("listen")
    host, port = _DEFAULT_SETTINGS.listen_host, _DEFAULT_SETTINGS.listen_port
    if listen is not None:
        try:
            host, port = parse_listen(listen)
        except ConfigError as exc:
            section.fail("listen", exc.message)
    keys, why_no_keys = _client_keys(section, key_sections)
    if not keys and not is_loopback(host):
        because = f" ({why_no_keys})" if why_no_keys else ""
        refusal = (
            f"refusing to listen on {host} without api_keys{because}: anyone who can reach it "
            "could spend your upstream keys; set api_keys in [proxy] or listen on 127.0.0.1"
        )
        where = section.where(section.line_of("listen"))
        raise ConfigError(f"{where}: [proxy] listen: {section.redact('listen', refusal)}")
    metrics_key = section.secret("metrics_key")
    max_json_depth = section.integer(
        "max_json_depth", _DEFAULT_SETTINGS.max_json_depth, minimum=_MIN_JSON_DEPTH
    )
    return ProxySettings(
        listen_host=host,
        listen_port=port,
        keys=keys,
        keepalive_interval=section.seconds(
            "keepalive_interval", _DEFAULT_SETTINGS.keepalive_interval, allow_zero=False
        ),
        max_body_bytes=section.integer(
            "max_body_bytes", _DEFAULT_SETTINGS.max_body_bytes, minimum=1
        ),
        drain_timeout=section.seconds(
            "drain_timeout", _DEFAULT_SETTINGS.drain_timeout, allow_zero=True
        ),
        write_timeout=section.seconds(
            "write_timeout", _DEFAULT_SETTINGS.write_timeout, allow_zero=False
        ),
        log_level=section.choice("log_level", _DEFAULT_SETTINGS.log_level, _LOG_LEVELS),
        log_format=section.choice("log_format", _DEFAULT_SETTINGS.log_format, _LOG_FORMATS),
        metrics=section.boolean("metrics", _DEFAULT_SETTINGS.metrics),
        metrics_key=(metrics_key[0] or None) if metrics_key else None,
        ws_max_in_flight=section.integer(
            "ws_max_in_flight", _DEFAULT_SETTINGS.ws_max_in_flight, minimum=1
        ),
        ws_max_message_bytes=section.integer(
            "ws_max_message_bytes", _DEFAULT_SETTINGS.ws_max_message_bytes, minimum=1
        ),
        max_messages=section.integer("max_messages", _DEFAULT_SETTINGS.max_messages, minimum=1),
        max_tools=section.integer("max_tools", _DEFAULT_SETTINGS.max_tools, minimum=0),
        max_json_depth=max_json_depth,
        cors_origins=_cors_origins(section),
    )


def _cors_origins(section: _Section) -> tuple[str, ...]:
    origins = []
    for origin in section.items("cors_origins"):
        if origin == "*":
            origins.append(origin)
            continue
        try:
            parts = urlsplit(origin)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            section.fail(
                "cors_origins",
                f"must list origins like https://app.example.com or http://localhost:3000 "
                f"(scheme, host, optional port; no path), or *; got {_show(origin)}",
            )
        origins.append(origin.rstrip("/"))
    return tuple(origins)


# --- client keys ----------------------------------------------------------------------------------


def _client_keys(
    section: _Section, key_sections: list[_Section]
) -> tuple[tuple[ClientKey, ...], str]:
    """The client keys, and (when there are none) why api_keys came out empty, for messages."""
    items: list[_KeyItem] = []
    why_no_keys = ""
    found = section.resolved("api_keys")
    if found is not None:
        value, refs = found
        if not value:
            why_no_keys = _why_empty(refs, "api_keys")
        where = f"{section.where(section.line_of('api_keys'))}: [proxy] api_keys"
        for index, item in enumerate(_split_items(value), start=1):
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
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: the name before ':' must be 1 to 64 letters, digits, '_', '-', '.' or '@' "
            "(NAME:KEY); a key that itself contains ':' must be written with a name"
        )
    if not secret:
        raise ConfigError(f"{where}: '{name}:' has no key after the ':'")
    return _KeyItem(name, secret, where)


def _key_file(section: _Section, path: str) -> list[_KeyItem]:
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
        section.fail("api_keys_file", f"cannot read {_show(path)}: {reason}")
    if not isinstance(content, str):
        section.fail("api_keys_file", f"{_show(path)}: its contents must be given as a str")
    items = []
    for lineno, line in enumerate(content.splitlines(), start=1):
        text = re.split(r"\s#", line, maxsplit=1)[0].strip()  # "# ..." after whitespace: a comment
        if not text or text.startswith("#"):
            continue
        where = f"{path} line {lineno}"
        fields = text.split()
        if len(fields) > 2 or not all(33 <= ord(c) <= 126 for c in "".join(fields)):
            raise ConfigError(
                f"{where}: expected 'KEY' or 'NAME KEY' (printable ASCII, no spaces in the key)"
            )
        if len(fields) == 1:
            items.append(_KeyItem(None, fields[0], where))
            continue
        if not _NAME.fullmatch(fields[0]):
            raise ConfigError(
                f"{where}: a key name is 1 to 64 letters, digits, '_', '-', '.' or '@'"
            )
        items.append(_KeyItem(fields[0], fields[1], where))
    return items


def _key_section(section: _Section) -> _KeyItem | str:
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
                "models", f"has {_show(pattern)}: a model name or pattern cannot contain spaces"
            )
    rpm = section.text("rpm")
    rpm_value = None
    if rpm:
        rpm_value = _decimal(rpm)
        if rpm_value is None or rpm_value <= 0:
            section.fail("rpm", f"must be a number of requests per minute > 0, got {_show(rpm)}")
    return _KeyItem(
        section.name,
        value,
        f"{section.where(section.line_of('key'))}: [{section.title}] key",
        models=models,
        max_concurrent=section.optional_integer("max_concurrent", minimum=1),
        rpm=rpm_value,
    )


def _number_keys(ctx: _Context, items: list[_KeyItem]) -> tuple[ClientKey, ...]:
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
            )
        )
    return tuple(keys)


# --- upstreams ------------------------------------------------------------------------------------


def _upstream(section: _Section) -> UpstreamConfig:
    kind = section.text("type")
    kind = kind.lower() if kind is not None else None
    if kind is None:
        section.fail(None, f"needs type = one of {' | '.join(UPSTREAM_TYPES)}")
    if kind not in UPSTREAM_TYPES:
        section.fail(
            "type",
            f"must be one of {' | '.join(UPSTREAM_TYPES)}, got {_show(kind)}"
            + _did_you_mean(kind, UPSTREAM_TYPES),
        )
    for key, only in (
        ("anthropic_version", "anthropic"),
        ("anthropic_beta", "anthropic"),
        ("demo_delay", "demo"),
    ):
        if section.has(key) and kind != only:
            section.fail(key, f"applies only to type = {only} (this upstream is {kind})")

    base_url = _base_url(section, kind)
    api_key = ""
    disabled_reason = ""
    found = section.secret("api_key")
    if kind != "demo":
        if found is None:
            disabled_reason = f"no api_key is set in [{section.title}]"
        elif not found[0]:
            disabled_reason = found[1]
        else:
            api_key = found[0]

    defaults = UpstreamConfig(name=section.name, type=kind)
    first_byte = section.optional_seconds("first_byte_timeout")
    return UpstreamConfig(
        name=section.name,
        type=kind,
        base_url=base_url,
        api_key=api_key,
        disabled_reason=disabled_reason,
        connect_timeout=section.seconds(
            "connect_timeout", defaults.connect_timeout, allow_zero=False
        ),
        first_byte_timeout=first_byte,
        read_timeout=section.seconds("read_timeout", defaults.read_timeout, allow_zero=False),
        total_timeout=section.optional_seconds("total_timeout"),
        max_retries=section.integer("max_retries", defaults.max_retries, minimum=0),
        retry_max_wait=section.seconds("retry_max_wait", defaults.retry_max_wait, allow_zero=True),
        verify_tls=section.boolean("verify_tls", defaults.verify_tls),
        ca_file=section.optional_string("ca_file"),
        https_proxy=_https_proxy(section),
        max_idle_connections=section.integer(
            "max_idle_connections", defaults.max_idle_connections, minimum=0
        ),
        idle_expiry=section.seconds("idle_expiry", defaults.idle_expiry, allow_zero=True),
        anthropic_version=section.string("anthropic_version", defaults.anthropic_version)
        or defaults.anthropic_version,
        anthropic_beta=section.items("anthropic_beta"),
        extra_headers=_headers(section),
        forward_headers=_forward_headers(section),
        demo_delay=section.seconds("demo_delay", defaults.demo_delay, allow_zero=True),
    )


def _url_problem(url: str) -> str | None:
    """What is wrong with an http(s) URL for an upstream or proxy, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must start with https:// or http:// and name a host"
    if any(c.isspace() for c in url):
        return "cannot contain spaces"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "cannot have a ?query or #fragment: trioproxy appends the API path to it"
    return None


def _base_url(section: _Section, kind: str) -> str:
    url = section.text("base_url")
    if not url:
        if kind == "openai-chat":
            section.fail(
                None,
                "needs base_url for type = openai-chat: the provider's OpenAI-compatible URL "
                "with /v1 (e.g. https://openrouter.ai/api/v1); trioproxy appends "
                "/chat/completions",
            )
        return DEFAULT_BASE_URLS.get(kind, "")
    if "@" in url:
        section.fail("base_url", "cannot hold credentials (user:password@); use api_key or headers")
    if (problem := _url_problem(url)) is not None:
        section.fail("base_url", f"{problem}, got {_show(url)}")
    url = url.rstrip("/")
    parts = urlsplit(url)
    if kind == "anthropic" and parts.path.endswith("/v1"):
        section.ctx.warnings.append(
            f"upstream '{section.name}': base_url ends in /v1, but trioproxy appends /v1/messages "
            "(as the Anthropic SDK does); write it without /v1"
        )
    if kind != "demo" and parts.scheme == "http" and not is_loopback(parts.hostname or ""):
        section.ctx.warnings.append(
            f"upstream '{section.name}': base_url is plain http to {parts.hostname}, so its "
            "api_key crosses the network unencrypted"
        )
    return url


def _https_proxy(section: _Section) -> str | None:
    url = section.text("https_proxy")
    if not url:
        return None
    if (problem := _url_problem(url)) is not None:
        # May hold user:password@, so the value is not shown.
        section.fail("https_proxy", f"{problem} (e.g. http://proxy.internal:3128)")
    return url


def _headers(section: _Section) -> tuple[tuple[str, str], ...]:
    value = section.text("headers")
    if not value:
        return ()
    entries: list[str] = []
    for line in value.split("\n"):
        # ", " separates entries on one line only when a `Name:` follows it.
        pieces = re.split(r",(?=" + _HEADER_START.pattern + ")", line)
        entries.extend(piece.strip() for piece in pieces if piece.strip())
    headers = []
    seen: set[str] = set()
    for entry in entries:
        name, colon, header_value = entry.partition(":")
        name, header_value = name.strip(), header_value.strip()
        if not colon or not _HEADER_NAME.fullmatch(name):
            section.fail(
                "headers",
                "must be 'Name: value' entries, one per line (or ', '-separated), e.g. "
                "'X-Title: my-app'; header names are letters, digits and -",
            )
        lowered = name.lower()
        if lowered in _RESERVED_HEADERS:
            section.fail(
                "headers",
                f"cannot set {name}: trioproxy sets it "
                "(use api_key / anthropic_version / anthropic_beta)",
            )
        if lowered in seen:
            section.fail("headers", f"sets {name} twice")
        if any(not c.isprintable() and c != "\t" for c in header_value):
            section.fail("headers", f"{name} has a control character in its value")
        seen.add(lowered)
        headers.append((lowered, header_value))
    return tuple(headers)


def _forward_headers(section: _Section) -> tuple[str, ...]:
    names = []
    for name in section.items("forward_headers"):
        lowered = name.lower()
        if not _HEADER_NAME.fullmatch(name):
            section.fail("forward_headers", f"{name!r} is not a header name")
        # The client's own credentials must never reach an upstream (DESIGN.md, Errors).
        if lowered in _RESERVED_HEADERS or lowered in ("cookie", "proxy-authorization"):
            section.fail("forward_headers", f"{name} can never be forwarded")
        names.append(lowered)
    return tuple(names)


# --- models ---------------------------------------------------------------------------------------


def _model(section: _Section, upstreams: dict[str, UpstreamConfig]) -> ModelConfig:
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
        section.fail("upstream_model", f"cannot contain spaces, got {_show(upstream_model)}")
    effort = (section.text("reasoning_effort") or "").lower()
    if effort and effort not in REASONING_EFFORTS:
        choices = tuple(sorted(REASONING_EFFORTS))
        section.fail(
            "reasoning_effort",
            f"must be one of {' | '.join(REASONING_EFFORTS)}, got {_show(effort)}"
            + _did_you_mean(effort, choices),
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


def _warn_about_upstreams(
    ctx: _Context, upstreams: dict[str, UpstreamConfig], models: tuple[ModelConfig, ...]
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


# --- the one impure function ----------------------------------------------------------------------


class _FileReader(Mapping[str, str]):
    """IO. `files` for parse_config: reads a path on lookup, relative to the config's directory.
    A failure is a KeyError(path, reason) so that parse_config can name section, key and line."""

    def __init__(self, base: os.PathLike[str] | str) -> None:
        self._base = base

    def __getitem__(self, path: str) -> str:
        from pathlib import Path

        full = Path(self._base) / Path(path).expanduser()
        try:
            return full.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyError(path, exc.strerror or type(exc).__name__) from None
        except UnicodeDecodeError:
            raise KeyError(path, "it is not UTF-8 text") from None

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Mapping[str, object]],
    *,
    environ: Mapping[str, str] | None = None,
) -> ProxyConfig:
    """IMPURE: read a config file (and its `api_keys_file`) and parse it; the only IO here.

    Args:
        source: a path to proxy.ini; or INI text (a str containing a newline); or a mapping
            `{section: {key: value}}`, e.g. `{"upstream:demo": {"type": "demo"}, ...}`.
        environ: the variables `${VAR}` may use; defaults to `os.environ`.

    Raises:
        ConfigError: the configuration is wrong (the message names line, section and key).
        OSError: the config file itself cannot be read.

    Example:
        >>> config = load_config("proxy.ini")  # doctest: +SKIP
    """
    import os
    from pathlib import Path

    env: Mapping[str, str] = os.environ if environ is None else environ
    if isinstance(source, Mapping):
        return parse_config_mapping(source, env, files=_FileReader(Path.cwd()))
    if isinstance(source, str) and "\n" in source:
        return parse_config(source, env, source="<config text>", files=_FileReader(Path.cwd()))
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{os.fspath(source)}: not UTF-8 text (byte {exc.start})") from None
    return parse_config(text, env, source=os.fspath(source), files=_FileReader(path.parent))


# --- describe -------------------------------------------------------------------------------------


def _url_for(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def describe(config: ProxyConfig) -> str:
    """The human summary `trioproxy --check` prints. Pure; holds no secret (names, never keys).

    Example output::

        listen: http://127.0.0.1:8003
        auth: off (no client keys: anyone on this machine may use it; loopback only)
        metrics: GET /metrics, no key needed
        upstreams:
          anthropic  anthropic  https://api.anthropic.com  disabled: ANTHROPIC_API_KEY is not set
          demo       demo       (built in)                 enabled
        models:
          claude-*  -> anthropic (disabled)
          demo      -> demo
    """
    proxy = config.proxy
    lines = [f"listen: {_url_for(proxy.listen_host, proxy.listen_port)}"]
    if proxy.keys:
        described = []
        for key in proxy.keys:
            limits = []
            if key.models:
                limits.append("models " + ", ".join(key.models))
            if key.max_concurrent is not None:
                limits.append(f"{key.max_concurrent} at once")
            if key.rpm is not None:
                limits.append(f"{key.rpm:g}/min")
            described.append(key.name + (f" ({'; '.join(limits)})" if limits else ""))
        count = f"{len(proxy.keys)} client key" + ("s" if len(proxy.keys) != 1 else "")
        lines.append(f"auth: on, {count}: {', '.join(described)}")
    else:
        lines.append(
            "auth: off (no client keys: anyone who can reach the address may use it; loopback only)"
        )
    if not proxy.metrics:
        lines.append("metrics: off")
    else:
        lines.append(
            "metrics: GET /metrics, "
            + ("metrics_key required" if proxy.metrics_key else "no key needed")
        )
    if proxy.cors_origins:
        lines.append("cors origins: " + ", ".join(proxy.cors_origins))
    lines.append("upstreams:" if config.upstreams else "upstreams: none")
    rows = []
    for name, upstream in config.upstreams.items():
        where = upstream.base_url or "(built in)"
        state = "enabled" if upstream.enabled else f"disabled: {upstream.disabled_reason}"
        extra = []
        if upstream.extra_headers:
            extra.append("headers " + ", ".join(h for h, _ in upstream.extra_headers))
        if upstream.https_proxy:
            extra.append("via an https_proxy")
        if not upstream.verify_tls:
            extra.append("TLS NOT VERIFIED")
        rows.append(
            [name, upstream.type, where, state + (f" ({'; '.join(extra)})" if extra else "")]
        )
    lines += _table(rows)
    lines.append("models:" if config.models else "models: none")
    rows = []
    for model in config.models:
        targets = ", ".join(
            u
            + (
                ""
                if config.upstreams.get(u, None) is None or config.upstreams[u].enabled
                else " (disabled)"
            )
            for u in model.upstreams
        )
        notes = []
        if model.upstream_model:
            notes.append(f"as {model.upstream_model}")
        if model.defaults.max_tokens is not None:
            notes.append(f"max_tokens {model.defaults.max_tokens}")
        if model.defaults.reasoning_effort is not None:
            notes.append(f"reasoning_effort {model.defaults.reasoning_effort}")
        if model.defaults.system_prompt is not None:
            notes.append("system_prompt")
        rows.append([model.name, "-> " + targets + (f" [{'; '.join(notes)}]" if notes else "")])
    lines += _table(rows)
    return "\n".join(lines)


def _table(rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  "
        + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ]

"""Stage 1 of reading proxy.ini: the INI text (or an embedder's mapping) to raw sections whose
entries know their line numbers. Pure.

configparser does the reading (`interpolation=None`, `strict=True`, so a section or key given
twice is an error); it records no line numbers, so `locate_lines` re-reads the text with the same
rules to find them. Nothing is interpolated or typed here: values stay the text as written.

Syntax:
- `key = value`; only `=` separates key from value (not `:`, which appears in URLs and headers).
  Keys are case-insensitive; section names are not.
- Comments: a line starting with `;` or `#`, or `;` / `#` after whitespace inside a line
  (configparser's inline-comment caveat: `a=b;c` keeps `;c`, `a = b ;c` does not). A value that
  must contain " ;" or " #" cannot be written inline; put it in the environment and use ${VAR}.
- A value continues on following lines indented deeper than its key (multi-line `system_prompt`,
  one `headers` entry per line).
- A section or key given twice is an error.

Invariant: a problem is a `ConfigError` naming the source and the line, never echoing the line
itself (a stray line in a config file may well be a pasted key).
"""

from __future__ import annotations

import configparser
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass

from trioproxy.errors import ConfigError

__all__ = [
    "SECTION_FORMS",
    "Entry",
    "Lines",
    "RawSection",
    "locate_lines",
    "read_ini",
    "sections_from_mapping",
]

SECTION_FORMS = "[proxy], [upstream:NAME], [model:NAME], [key:NAME]"


@dataclass(frozen=True, slots=True)
class Entry:
    value: str
    line: int | None


@dataclass(frozen=True, slots=True)
class RawSection:
    title: str  # as written between the brackets
    line: int | None
    entries: dict[str, Entry]


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


def read_ini(text: str, source: str) -> list[RawSection]:
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
            f"first setting (sections: {SECTION_FORMS})"
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
            key: Entry(value, lines.keys.get((title, key)))
            for key, value in parser.items(title, raw=True)
        }
        result.append(RawSection(title, lines.sections.get(title), entries))
    return result


def sections_from_mapping(
    sections: Mapping[str, Mapping[str, object]], source: str
) -> list[RawSection]:
    if not isinstance(sections, Mapping):
        raise ConfigError(f"{source}: a config mapping must be {{section: {{key: value}}}}")
    result = []
    for title, body in sections.items():
        if not isinstance(title, str):
            raise ConfigError(f"{source}: section names must be strings, got {title!r}")
        if not isinstance(body, Mapping):
            raise ConfigError(f"{source}: [{title}] must be a mapping of key to value")
        entries: dict[str, Entry] = {}
        for key, value in body.items():
            if not isinstance(key, str):
                raise ConfigError(f"{source}: [{title}] keys must be strings, got {key!r}")
            if key.lower() in entries:
                raise ConfigError(f"{source}: key '{key.lower()}' appears twice in [{title}]")
            entries[key.lower()] = Entry(_mapping_value(value, title, key, source), None)
        result.append(RawSection(title, None, entries))
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

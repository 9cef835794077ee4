"""Stage 2 of reading proxy.ini: `${VAR}` interpolation of one value, from the `environ` mapping
given (never the process environment itself). Pure; nothing else is interpolated.

- `${VAR}`: VAR's value. Unset is an error naming the variable, section, key and line, except for
  secrets (`[upstream:*] api_key`, `[key:*] key`), where unset means empty: the upstream is disabled
  (`disabled_reason` names the variable) or the client key is skipped, each with one warning.
  (The caller decides which: `unset_is_empty=True`.)
- `${VAR:-default}`: the default when VAR is unset *or empty* (POSIX shell `:-`). The default is
  literal text up to the first `}`; it is not itself interpolated.
- `$$` is a literal `$`. Any other `$` (not followed by `{` or `$`) is literal too.

Errors never echo the text after a malformed `${`: it may be a default that holds a key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["InterpolationError", "VarRef", "interpolate", "why_empty"]

_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


def why_empty(refs: tuple[VarRef, ...], what: str) -> str:
    """Why a value that uses `refs` came out empty, naming the variable where there is one."""
    for ref in refs:
        if ref.state == "unset":
            return f"{ref.name} is not set"
        if ref.state == "empty":
            return f"{ref.name} is empty"
    if refs:
        return f"{refs[0].name} is blank"  # set, but only to whitespace
    return f"{what} is empty"

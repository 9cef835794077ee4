"""`load_config`: the edge of the config package, the one place that reads files and the process
environment. Everything else in `trioproxy.config` is pure and takes both as arguments.

It reads proxy.ini (or takes INI text, or a mapping), passes the environment, and hands
`parse_config` a mapping that reads the files the config names (`api_keys_file`) relative to the
config file's directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from trioproxy.config.build import parse_config, parse_config_mapping
from trioproxy.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from trioproxy.config_types import ProxyConfig

__all__ = ["load_config"]


class _FileReader(Mapping[str, str]):
    """IO. `files` for parse_config: reads a path on lookup, relative to the config's directory.
    A failure is a KeyError(path, reason) so that parse_config can name section, key and line."""

    def __init__(self, base: os.PathLike[str] | str) -> None:
        self._base = base

    def __getitem__(self, path: str) -> str:
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
    """IMPURE: read a config file (and its `api_keys_file`) and parse it; the package's only IO.

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

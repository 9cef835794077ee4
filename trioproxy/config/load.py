"""`load_config`: the edge of the config package, the one place that reads files and the process
environment. Everything else in `trioproxy.config` is pure and takes both as arguments.

It reads proxy.ini (or takes INI text, or a mapping), passes the environment, and hands
`parse_config` a mapping that reads the files the config names (`api_keys_file`) relative to the
config file's directory, and that directory, against which `certfile` and `keyfile` are resolved.
Those two are opened once here (and closed at once), so that `trioproxy --check` and a reload
name a wrong path and its line rather than the server failing later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from trioproxy.config.build import parse_config, parse_config_mapping
from trioproxy.config.ini import locate_lines
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
    """IMPURE: read a config file (and the files it names) and parse it; the package's only IO.

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
    text: str | None
    if isinstance(source, Mapping):
        text, name, base = None, "<config mapping>", Path.cwd()
        config = parse_config_mapping(
            source, env, source=name, files=_FileReader(base), base_dir=str(base)
        )
    else:
        if isinstance(source, str) and "\n" in source:
            text, name, base = source, "<config text>", Path.cwd()
        else:
            path = Path(source)
            name, base = os.fspath(source), path.parent
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{name}: not UTF-8 text (byte {exc.start})") from None
        config = parse_config(text, env, source=name, files=_FileReader(base), base_dir=str(base))
    _check_tls_files(config, text, name)
    return config


def _check_tls_files(config: ProxyConfig, text: str | None, source: str) -> None:
    """IO. certfile and keyfile must be readable now, not only when the server starts."""
    for key, path in (("certfile", config.proxy.certfile), ("keyfile", config.proxy.keyfile)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass  # opening is the check: readable now, not only when the server starts
        except OSError as exc:
            line = None if text is None else locate_lines(text).keys.get(("proxy", key))
            where = source if line is None else f"{source} line {line}"
            reason = exc.strerror or type(exc).__name__
            message = f"{where}: [proxy] {key} cannot read {path!r}: {reason}"
            raise ConfigError(message) from None

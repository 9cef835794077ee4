"""Parsers of single values, shared by the sections: listen addresses, loopback, numbers, lists,
URLs, names; and how a bad value is shown in a message. Pure (no DNS lookup, no IO).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from urllib.parse import urlsplit

from trioproxy.errors import ConfigError

__all__ = [
    "INT",
    "NAME",
    "did_you_mean",
    "is_loopback",
    "parse_decimal",
    "parse_listen",
    "show",
    "split_items",
    "url_problem",
]

# Names of upstreams and client keys go to logs, metrics labels and /health.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
INT = re.compile(r"[0-9]{1,18}")  # ASCII digits only (int() would take "١٢" and "1_0")
_DECIMAL = re.compile(r"(?:[0-9]{1,18}(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def split_items(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in re.split(r"[,\n]", value) if item.strip())


def parse_decimal(value: str) -> float | None:
    if not _DECIMAL.fullmatch(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def show(value: str) -> str:
    """A non-secret value for a message, quoted and cut short."""
    return repr(value if len(value) <= 60 else value[:57] + "...")


def did_you_mean(value: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(value.lower(), choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


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
            raise ConfigError(f"must be HOST:PORT ({example}), got {show(value)}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(
                f"has {show(host)} in brackets, which is not an IPv6 address"
            ) from None
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon or not host:
            raise ConfigError(f"must be HOST:PORT ({example}), got {show(value)}")
        if ":" in host:
            raise ConfigError(
                f"must put an IPv6 address in brackets ([::1]:8003), got {show(value)}"
            )
        if not _is_ipv4(host) and not _HOSTNAME.fullmatch(host):
            raise ConfigError(f"has {show(host)}, which is neither an IP address nor a host name")
    if not INT.fullmatch(port_text) or int(port_text) > 65535:
        raise ConfigError(f"must end in a port from 0 to 65535, got {show(value)}")
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


def url_problem(url: str) -> str | None:
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

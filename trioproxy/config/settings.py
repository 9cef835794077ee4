"""The `[proxy]` section to `ProxySettings`. Pure.

Invariants:
- With no client key configured, `listen` must be a loopback address (DESIGN.md "proxy.ini"):
  anyone who could reach the proxy could spend the upstream keys. TLS does not change that.
- TLS (`certfile`, `keyfile`) needs `server = hypercorn` (the native server speaks plain
  HTTP/1.1) and both files. Their paths are resolved against `Context.base_dir`, the config file's
  directory (as `api_keys_file` is); nothing here opens them: `load_config` checks they can be read.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from trioproxy.config.keys import client_keys
from trioproxy.config.values import is_loopback, parse_listen, show
from trioproxy.config_types import SERVERS, ProxySettings
from trioproxy.errors import ConfigError

if TYPE_CHECKING:
    from trioproxy.config.section import Section

__all__ = ["PROXY_KEYS", "build_settings"]

PROXY_KEYS = (
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
    "server",
    "certfile",
    "http2",
    "keyfile",
    "head_timeout",
    "body_timeout",
    "keep_alive_timeout",
    "max_header_bytes",
    "store",
    "store_timeout",
    "store_prefix",
)

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_LOG_FORMATS = ("text", "json")
_MIN_JSON_DEPTH = 8  # a chat request with an image part already nests 5 deep
# A request head with a bearer key, a content type, a user agent and the SDKs' x-stainless-*
# headers is well under 1 KiB; below that, ordinary clients would get 431.
_MIN_HEADER_BYTES = 1024
# `store_timeout` bounds, in milliseconds: a Redis round trip on a LAN is well under 1 ms, so 1 ms
# is the least that can succeed; past 10 s a request would wait on the store longer than on most
# upstreams' first byte, and "never a request blocked on the store" would not hold.
_MIN_STORE_TIMEOUT_MS = 1.0
_MAX_STORE_TIMEOUT_MS = 10_000.0
_STORE_SCHEMES = ("redis", "rediss")


_DEFAULT_SETTINGS = ProxySettings()


def build_settings(section: Section, key_sections: list[Section]) -> ProxySettings:
    listen = section.text("listen")
    host, port = _DEFAULT_SETTINGS.listen_host, _DEFAULT_SETTINGS.listen_port
    if listen is not None:
        try:
            host, port = parse_listen(listen)
        except ConfigError as exc:
            section.fail("listen", exc.message)
    keys, why_no_keys = client_keys(section, key_sections)
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
    server = section.choice("server", _DEFAULT_SETTINGS.server, SERVERS)
    certfile, keyfile = _tls_files(section, server)
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
        server=server,
        http2=_http2(section, server),
        certfile=certfile,
        keyfile=keyfile,
        head_timeout=section.seconds(
            "head_timeout", _DEFAULT_SETTINGS.head_timeout, allow_zero=False
        ),
        body_timeout=section.seconds(
            "body_timeout", _DEFAULT_SETTINGS.body_timeout, allow_zero=False
        ),
        keep_alive_timeout=section.seconds(
            "keep_alive_timeout", _DEFAULT_SETTINGS.keep_alive_timeout, allow_zero=False
        ),
        max_header_bytes=section.integer(
            "max_header_bytes", _DEFAULT_SETTINGS.max_header_bytes, minimum=_MIN_HEADER_BYTES
        ),
        store=_store(section),
        store_timeout=_store_timeout(section),
        store_prefix=_store_prefix(section),
    )


def _http2(section: Section, server: str) -> bool:
    """`http2 = true`: offer HTTP/2 (ALPN h2) on the hypercorn server. Off by default: hypercorn
    0.18 does not bound what it buffers for an HTTP/2 stream whose client holds its flow-control
    window at 0 (docs/operations.md, "The two servers")."""
    on = section.boolean("http2", _DEFAULT_SETTINGS.http2)
    if on and server != "hypercorn":
        section.fail(
            "http2",
            "is true, but HTTP/2 needs server = hypercorn (the native server speaks HTTP/1.1)",
        )
    return on


def _tls_files(section: Section, server: str) -> tuple[str | None, str | None]:
    """(certfile, keyfile) as resolved paths, or (None, None) without TLS."""
    certfile = _path(section, "certfile")
    keyfile = _path(section, "keyfile")
    if certfile is None and keyfile is None:
        return None, None
    given = "certfile" if certfile is not None else "keyfile"
    if server != "hypercorn":
        section.fail(
            given,
            "is set, but TLS needs server = hypercorn (the native server speaks plain HTTP/1.1); "
            "add server = hypercorn to [proxy], or remove certfile and keyfile",
        )
    if certfile is None or keyfile is None:
        missing = "keyfile" if keyfile is None else "certfile"
        section.fail(
            given,
            f"is set without {missing}: TLS needs both, certfile (the PEM certificate chain) "
            "and keyfile (its PEM private key)",
        )
    return certfile, keyfile


def _path(section: Section, key: str) -> str | None:
    """A file path, resolved against the config file's directory; None when absent or empty."""
    value = section.text(key)
    if not value:
        return None
    if not value.isprintable():
        section.fail(key, "cannot contain control characters")
    if value == "~" or value.startswith("~/"):
        # As a shell would expand it, from HOME in the environ given (this module reads none).
        home = section.ctx.environ.get("HOME")
        if not home:
            section.fail(key, "starts with ~, but HOME is not set; write the full path")
        value = home + value[1:]
    elif value.startswith("~"):
        section.fail(key, f"cannot use ~user, got {show(value)}; write the full path")
    base = section.ctx.base_dir
    return value if base is None else str(PurePath(base, value))


def _cors_origins(section: Section) -> tuple[str, ...]:
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
                f"(scheme, host, optional port; no path), or *; got {show(origin)}",
            )
        origins.append(origin.rstrip("/"))
    return tuple(origins)


def _store(section: Section) -> str:
    """`store = memory` or `store = redis://[[user]:password@]host[:port][/db]` (also `rediss://`,
    Redis over TLS). The URL form is the one redis-py and coredis take
    (https://www.iana.org/assignments/uri-schemes/prov/redis). A password usually comes from
    `${VAR}`; messages here never repeat the URL, which may hold it."""
    value = section.text("store")
    if value is None or value == "memory":
        return "memory"
    scheme, sep, _ = value.partition("://")
    if not sep or scheme.lower() not in _STORE_SCHEMES:
        shown = show(scheme) if sep else "a value without a scheme"
        section.fail(
            "store",
            f"must be memory or a redis:// or rediss:// URL (redis://host:6379/0), got {shown}",
        )
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        section.fail("store", "has a bad port; write redis://host:6379/0")
    if not parts.hostname:
        section.fail("store", "names no host; write redis://host:6379/0")
    if port == 0:
        section.fail("store", "has port 0; Redis listens on 6379 by default")
    db = parts.path.lstrip("/")
    if db and not (db.isdigit() and db.isascii()):
        section.fail("store", "has a database that is not a number; write redis://host:6379/0")
    if parts.query or parts.fragment:
        section.fail("store", "cannot carry ?options or a #fragment; write redis://host:6379/0")
    return value


def _store_timeout(section: Section) -> float:
    """Milliseconds, a number: 50 by default."""
    text = section.text("store_timeout")
    if text is None:
        return _DEFAULT_SETTINGS.store_timeout
    try:
        value = float(text.removesuffix("ms").strip())
    except ValueError:
        value = float("nan")
    if not _MIN_STORE_TIMEOUT_MS <= value <= _MAX_STORE_TIMEOUT_MS:  # also false for nan
        section.fail(
            "store_timeout",
            f"must be milliseconds between {_MIN_STORE_TIMEOUT_MS:g} and "
            f"{_MAX_STORE_TIMEOUT_MS:g}, got {show(text)}",
        )
    return value


def _store_prefix(section: Section) -> str:
    prefix = section.string("store_prefix", _DEFAULT_SETTINGS.store_prefix)
    if not prefix or not all(33 <= ord(c) <= 126 for c in prefix):
        section.fail(
            "store_prefix",
            "must be printable ASCII without spaces (trioproxy: by default); it starts every "
            "key trioproxy writes in the store",
        )
    return prefix

"""Opening the byte stream under one upstream connection: TCP, TLS, and the CONNECT tunnel.

Stage: the IO edge, called by `client.HTTPClient` when the pool has no idle connection.
Invariants:
- Everything here returns a `trio.abc.Stream` or raises; a stream that was half set up when an
  error or a cancellation arrived is closed with `trio.aclose_forcefully` first.
- The connect deadline is the caller's (`HTTPClient` wraps the whole of `open_stream`), so the
  TLS handshake and the CONNECT exchange count against it, as `Timeouts.connect` promises.
- Proxy selection (`select_proxy`, `no_proxy_matches`) is pure: the environment is passed in.
- A proxy's credentials live only in `ProxyURL.authorization` (not in its repr or `origin`).
"""

from __future__ import annotations

import base64
import ipaddress
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import h11
import trio

from trioproxy.errors import ConfigError, UpstreamConnectionError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trioproxy.upstream.options import TLSOptions

__all__ = [
    "Connector",
    "ProxyURL",
    "default_connector",
    "host_literal",
    "make_ssl_context",
    "no_proxy_matches",
    "open_stream",
    "parse_proxy_url",
    "select_proxy",
]

RECEIVE_BYTES = 65536  # one receive_some; the size httpcore and hypercorn read with
ALPN = ["http/1.1"]  # we speak only HTTP/1.1 (h11); offering h2 would invite a protocol we can't


class Connector(Protocol):
    """Opens a byte stream to `host:port`, wrapped in TLS when `tls` is given.

    The caller bounds the whole call by `connect_timeout` seconds already; a connector may use
    the number for its own sub-steps. Tests pass one returning `memory_stream_pair()` halves.
    """

    async def __call__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        server_hostname: str | None,
        connect_timeout: float,
    ) -> trio.abc.Stream: ...


async def default_connector(
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None,
    server_hostname: str | None,
    connect_timeout: float,
) -> trio.abc.Stream:
    """TCP (`trio.open_tcp_stream`, happy eyeballs, TCP_NODELAY), then TLS if asked."""
    del connect_timeout  # the caller's deadline covers this whole call
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if tls is not None:
        stream = await start_tls(stream, tls, server_hostname)
    return stream


async def start_tls(
    stream: trio.abc.Stream, context: ssl.SSLContext, server_hostname: str | None
) -> trio.SSLStream[trio.abc.Stream]:
    """Wrap `stream` in TLS and finish the handshake now, so certificate errors surface here
    (inside the connect timeout) rather than on the first send."""
    # https_compatible: tolerate a close without close_notify, as browsers and httpcore do; the
    # HTTP framing (content-length / chunked) is what detects a truncated body.
    tls_stream = trio.SSLStream(
        stream, context, server_hostname=server_hostname, https_compatible=True
    )
    try:
        await tls_stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tls_stream)
        raise
    return tls_stream


def make_ssl_context(tls: TLSOptions) -> ssl.SSLContext:
    """A client context: system CAs (or `ca_file`), host name checks, ALPN http/1.1.

    Raises:
        ConfigError: `ca_file` cannot be read or is not a PEM bundle.
    """
    try:
        context = ssl.create_default_context(cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"ca_file {tls.ca_file!r} could not be loaded: {exc}") from exc
    if not tls.verify:
        context.check_hostname = False  # must come before CERT_NONE
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(ALPN)
    return context


# --- proxies -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxyURL:
    """An HTTP proxy to reach upstreams through (`http://user:pass@host:port`)."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # Proxy-Authorization value

    @property
    def origin(self) -> str:
        """`http://host:port`, without credentials: safe to log."""
        return f"http://{host_literal(self.host)}:{self.port}"


def parse_proxy_url(url: str) -> ProxyURL:
    """Parse a proxy URL; the scheme defaults to http (as curl does for `HTTPS_PROXY=host:3128`).

    Raises:
        ConfigError: not an `http://` URL with a host, or a bad port. The message never
            repeats the URL (it may hold credentials).
    """
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError:
        port = -1
    if parts.scheme.lower() != "http" or not parts.hostname or port < 0:
        # An https:// proxy (TLS to the proxy itself) is rare and not supported.
        raise ConfigError("proxy URL must look like http://[user:password@]host[:port]")
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"  # RFC 7617
    return ProxyURL(parts.hostname, port, authorization)


def select_proxy(scheme: str, host: str, port: int, environ: Mapping[str, str]) -> str | None:
    """The proxy URL the environment asks for to reach `scheme://host:port`, or None.

    `https_proxy` / `HTTPS_PROXY` for https targets, `http_proxy` / `HTTP_PROXY` for http ones
    (lower case first, as curl reads them), unless `no_proxy` / `NO_PROXY` matches the target.
    """
    names = ("https_proxy", "HTTPS_PROXY") if scheme == "https" else ("http_proxy", "HTTP_PROXY")
    url = next((environ[name] for name in names if environ.get(name)), None)
    if url is None:
        return None
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    return None if no_proxy_matches(host, port, no_proxy) else url


def no_proxy_matches(host: str, port: int, no_proxy: str) -> bool:
    """Whether `host:port` is exempt from the proxy by a NO_PROXY value.

    The value is a comma (or space) separated list; each entry is one of: `*` (everything);
    a domain, which matches itself and its subdomains, with or without a leading `.` or `*.`;
    an IP address or a CIDR network (`10.0.0.0/8`); any of these with `:port`, which then
    matches only that port (IPv6 with a port as `[::1]:8080`). Matching ignores case and a
    trailing dot. This follows curl's reading, the most widely copied.
    """
    host = _normal_host(host)
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        name, entry_port = _split_entry(entry)
        if entry_port is not None and entry_port != port:
            continue
        if _host_matches(host, name):
            return True
    return False


def _normal_host(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _split_entry(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):  # [v6]:port or [v6]
        name, _, rest = entry[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif entry.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
        name, port_text = entry.split(":")
    else:
        name, port_text = entry, ""
    port = int(port_text) if port_text.isdigit() else None
    return _normal_host(name), port


def _host_matches(host: str, name: str) -> bool:
    if "/" in name:  # CIDR
        try:
            return ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False)
        except ValueError:
            return False
    name = name.removeprefix("*").lstrip(".")
    return bool(name) and (host == name or host.endswith("." + name))


def host_literal(host: str) -> str:
    """`host` as it appears in a URL authority or a Host header (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host else host


# --- opening -----------------------------------------------------------------------------------


async def open_stream(
    connector: Connector,
    *,
    scheme: str,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    proxy: ProxyURL | None,
    connect_timeout: float,
) -> trio.abc.Stream:
    """The stream a request to `scheme://host:port` is written on.

    Direct: the connector does TCP and TLS. Through a proxy, for https: TCP to the proxy,
    `CONNECT host:port`, then TLS inside the tunnel (SNI and certificate checks name the
    target, not the proxy). For http through a proxy: TCP to the proxy only; the request then
    goes out in absolute form (RFC 9112 §3.2.2), which `client` takes care of.
    """
    if proxy is None:
        return await connector(
            host,
            port,
            tls=tls,
            server_hostname=host if tls is not None else None,
            connect_timeout=connect_timeout,
        )
    stream = await connector(
        proxy.host, proxy.port, tls=None, server_hostname=None, connect_timeout=connect_timeout
    )
    if scheme != "https":
        return stream
    assert tls is not None
    try:
        await open_tunnel(stream, host, port, proxy)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return await start_tls(stream, tls, host)


async def open_tunnel(stream: trio.abc.Stream, host: str, port: int, proxy: ProxyURL) -> None:
    """Ask the proxy on `stream` for a tunnel to `host:port` (RFC 9110 §9.3.6).

    Raises:
        UpstreamConnectionError: the proxy answered with a non-2xx status.
        h11.RemoteProtocolError: the proxy's answer was not HTTP (translated by the caller).
    """
    conn = h11.Connection(h11.CLIENT)
    authority = f"{host_literal(host)}:{port}"
    headers = [("host", authority)]
    if proxy.authorization is not None:
        headers.append(("proxy-authorization", proxy.authorization))
    request = conn.send(h11.Request(method="CONNECT", target=authority, headers=headers))
    end = conn.send(h11.EndOfMessage())
    await stream.send_all((request or b"") + (end or b""))
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(RECEIVE_BYTES)))
        elif isinstance(event, h11.Response):
            break
        elif not isinstance(event, h11.InformationalResponse):
            raise h11.RemoteProtocolError("proxy closed the connection during CONNECT")
    target = f"https://{authority}"
    if event.status_code == 407:
        raise UpstreamConnectionError(
            f"{target}: proxy {proxy.origin} requires authentication (407)"
            + ("; the credentials in the proxy URL were refused" if proxy.authorization else "")
        )
    if not 200 <= event.status_code < 300:
        raise UpstreamConnectionError(
            f"{target}: proxy {proxy.origin} refused CONNECT with status {event.status_code}"
        )
    if conn.trailing_data[0]:
        raise h11.RemoteProtocolError("proxy sent data before the TLS handshake")

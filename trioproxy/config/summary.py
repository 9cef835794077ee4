"""`describe(config)`: the human summary `trioproxy --check` prints. Pure.

Invariant: it names keys, never shows them; the same for upstream keys, header values and proxy
credentials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trioproxy.config_types import ProxyConfig, UpstreamConfig

__all__ = ["describe"]


def _url_for(host: str, port: int, *, tls: bool = False) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def describe(config: ProxyConfig) -> str:
    """The human summary `trioproxy --check` prints. Pure; holds no secret (names, never keys).

    Example output::

        listen: http://127.0.0.1:8003
        auth: off (no client keys: anyone on this machine may use it; loopback only)
        metrics: GET /metrics, no key needed
        server: native; timeouts head 10 s, body 30 s, keep-alive 75 s; max_header_bytes 32768
        upstreams:
          anthropic  anthropic  https://api.anthropic.com  disabled: ANTHROPIC_API_KEY is not set
          openai     openai-responses  https://api.openai.com/v1  enabled
          demo       demo       (built in)                 enabled
        upstream keys (labels, never the keys):
          openai  2 keys: OPENAI_KEY_A, team-b (weight 2)
        models:
          claude-*  -> anthropic (disabled)
          demo      -> demo
    """
    proxy = config.proxy
    lines = [f"listen: {_url_for(proxy.listen_host, proxy.listen_port, tls=proxy.tls)}"]
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
            if key.tpm is not None:
                limits.append(f"{key.tpm} tokens/min")
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
    lines.append(_server_line(config))
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
    pools = [
        [name, _keys(upstream)]
        for name, upstream in config.upstreams.items()
        if upstream.enabled and upstream.type != "demo"
    ]
    if pools:
        lines.append("upstream keys (labels, never the keys):")
        lines += _table(pools)
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
        if model.strategy == "weighted":
            weights = model.weights or (1.0,) * len(model.upstreams)
            notes.append("weighted " + ":".join(f"{w:g}" for w in weights))
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


def _keys(upstream: UpstreamConfig) -> str:
    """The key pool by label (a fingerprint `fp-...` when none was given) and weight."""
    pool = upstream.pool
    labels = ", ".join(
        key.label + (f" (weight {key.weight:g})" if key.weight != 1 else "") for key in pool
    )
    source = f" from {upstream.api_keys_file}" if upstream.api_keys_file else ""
    return f"{len(pool)} key{'s' if len(pool) != 1 else ''}{source}: {labels}"


def _server_line(config: ProxyConfig) -> str:
    proxy = config.proxy
    if proxy.server == "native":
        kind = "native"
    elif proxy.tls:
        kind = f"hypercorn, TLS (certfile {proxy.certfile}, keyfile {proxy.keyfile})"
    else:
        kind = "hypercorn, no TLS"
    return (
        f"server: {kind}; timeouts head {proxy.head_timeout:g} s, body {proxy.body_timeout:g} s, "
        f"keep-alive {proxy.keep_alive_timeout:g} s; max_header_bytes {proxy.max_header_bytes}"
    )


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

"""The `trioproxy` command: run the daemon, or `--check` a configuration.

Stage: the outermost edge. Reads proxy.ini and the environment, sets up logging, turns SIGTERM and
SIGINT into a graceful shutdown and SIGHUP into a config reload, and returns an exit code:
0 after a clean shutdown or a good `--check`, 1 for a bad configuration, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import trio

from trioproxy._version import __version__
from trioproxy.config import describe, is_loopback, load_config
from trioproxy.errors import ConfigError
from trioproxy.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioproxy.config_types import ProxyConfig
    from trioproxy.service import Runtime

__all__ = ["main"]

logger = logging.getLogger("trioproxy")

_UNSET = object()  # CLI flags override the file only when actually given (STYLE.md §8)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioproxy",
        description="An LLM API proxy: OpenAI Chat Completions in; Anthropic, OpenAI Responses, "
        "OpenAI-compatible or demo upstreams out.",
    )
    parser.add_argument(
        "--config", default="proxy.ini", help="path to proxy.ini (default: %(default)s)"
    )
    parser.add_argument(
        "--listen", default=_UNSET, metavar="HOST:PORT", help="override [proxy] listen"
    )
    parser.add_argument(
        "--log-level",
        default=_UNSET,
        choices=["debug", "info", "warning", "error"],
        help="override [proxy] log_level",
    )
    parser.add_argument(
        "--check", action="store_true", help="validate the config, print what would be served, exit"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve with N processes sharing the port (SO_REUSEPORT), to use every core",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"trioproxy {__version__}")
    return parser


def _split_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:8003), got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def apply_overrides(config: ProxyConfig, listen: object, log_level: object) -> ProxyConfig:
    proxy = config.proxy
    if isinstance(listen, str):
        host, port = _split_listen(listen)
        if not proxy.keys and not is_loopback(host):
            raise ConfigError(
                f"refusing to listen on {host} without api_keys: anyone who can reach it could "
                "spend your upstream keys; set api_keys in [proxy] or listen on 127.0.0.1"
            )
        proxy = dataclasses.replace(proxy, listen_host=host, listen_port=port)
    if isinstance(log_level, str):
        proxy = dataclasses.replace(proxy, log_level=log_level)
    return dataclasses.replace(config, proxy=proxy)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = apply_overrides(load_config(args.config), args.listen, args.log_level)
    except ConfigError as exc:
        print(f"trioproxy: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"trioproxy: cannot read {args.config}: {exc.strerror}", file=sys.stderr)
        return 1
    if args.check:
        print(describe(config))
        for warning in config.warnings:
            print(f"warning: {warning}")
        return 0
    if args.workers > 1:
        return _supervise(args, config)
    configure_logging(config.proxy.log_level, config.proxy.log_format)
    for warning in config.warnings:
        logger.warning("%s", warning)
    try:
        trio.run(_run, config, args)
    except OSError as exc:  # e.g. the port is taken
        logger.error("cannot serve: %s", exc)
        return 1
    except ConfigError as exc:  # found only when serving starts (e.g. a missing optional extra)
        print(f"trioproxy: {exc.message}", file=sys.stderr)
        return 1
    return 0


async def _run(config: ProxyConfig, args: argparse.Namespace) -> None:
    from trioproxy.server import serve
    from trioproxy.service import Runtime
    from trioproxy.upstream import HTTPClient

    stop = trio.Event()
    http = HTTPClient()
    runtime = Runtime(config, http)
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:

                async def on_signals() -> None:
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            _reload(runtime, args)
                        else:
                            logger.info("received %s", signal.Signals(signum).name)
                            stop.set()

                nursery.start_soon(on_signals)
                await serve(
                    config,
                    runtime=runtime,
                    shutdown_trigger=stop.wait,
                    reuse_port=args.reuse_port,
                )
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await runtime.limiter.aclose()
            await http.aclose()


def _supervise(args: argparse.Namespace, config: ProxyConfig) -> int:
    """Run `args.workers` daemon processes on one port and pass signals on to them.

    Each worker is a whole trioproxy (its own trio loop, pool, limits and metrics: per-key limits
    and /metrics are per worker). SIGTERM / SIGINT / SIGHUP reach every worker; the exit code is
    0 when every worker exited 0.
    """
    if config.proxy.listen_port == 0:
        print("trioproxy: --workers needs a fixed port, not 0", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "trioproxy", "--config", args.config, "--reuse-port"]
    if isinstance(args.listen, str):
        argv += ["--listen", args.listen]
    if isinstance(args.log_level, str):
        argv += ["--log-level", args.log_level]
    workers = [subprocess.Popen(argv) for _ in range(args.workers)]
    stopping: set[int] = set()

    def forward(signum: int, frame: object) -> None:
        if signum != signal.SIGHUP:
            stopping.add(signum)
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    codes = [worker.wait() for worker in workers]
    # A worker stopped before it had installed its handlers dies of the signal itself (exit code
    # -SIGTERM): it had nothing to drain, so that is a clean stop too.
    return 0 if all(code == 0 or -code in stopping for code in codes) else 1


def _reload(runtime: Runtime, args: argparse.Namespace) -> None:
    try:
        new = apply_overrides(load_config(args.config), args.listen, args.log_level)
    except (ConfigError, OSError) as exc:
        logger.error("reload refused, keeping the running config: %s", exc)
        return
    old = runtime.service.config.proxy
    if (new.proxy.listen_host, new.proxy.listen_port) != (old.listen_host, old.listen_port):
        logger.warning("reload: a new listen address takes effect only after a restart")
    runtime.reload(new)
    for warning in new.warnings:
        logger.warning("%s", warning)
    logger.info(
        "reloaded %s: %d models, %d upstreams", args.config, len(new.models), len(new.upstreams)
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

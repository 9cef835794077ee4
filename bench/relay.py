"""A bare trio TCP relay: the floor any trio proxy pays per relayed read, for bench/run.py.

Stage: benchmark harness only (not part of trioproxy). Run as its own process:
`python bench/relay.py --port PORT --upstream-port UPSTREAM`; it serves 127.0.0.1:PORT until killed.

Each accepted connection gets one connection to 127.0.0.1:UPSTREAM and two tasks copying bytes
(`receive_some` -> `send_all`) each way, no parsing at all. Put in front of the fake upstream and
driven with Anthropic requests, its CPU per relayed chunk is what waking a trio task, one read and
one write cost on the machine: the part of the proxy's per-chunk cost that no HTTP, SSE or
translation work can remove.
"""

from __future__ import annotations

import argparse
from functools import partial

import trio


async def _copy(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(sink)


async def _relay(upstream_port: int, client: trio.SocketStream) -> None:
    upstream = await trio.open_tcp_stream("127.0.0.1", upstream_port)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_copy, client, upstream)
        nursery.start_soon(_copy, upstream, client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    trio.run(
        partial(trio.serve_tcp, partial(_relay, args.upstream_port), args.port, host="127.0.0.1")
    )


if __name__ == "__main__":
    main()

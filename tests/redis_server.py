"""A real `redis-server` on a free loopback port, for the shared-store tests and bench/store.py.

Debian's `redis-server` package (.ci/run installs it when missing). No persistence, so a restart
starts empty, as a Redis that lost its data would. Commands for assertions go over a plain
socket in RESP (https://redis.io/docs/latest/develop/reference/protocol-spec/), so the tests
check what is in Redis without trusting the client under test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["REDIS_SERVER", "RedisServer", "free_port"]

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process; `start()`, `stop()`, `pause()`/`resume()` (SIGSTOP: a store
    that accepts connections and never answers), `command()`."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed"
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        assert REDIS_SERVER is not None
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        with log:
            self.proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.workdir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"redis-server exited {self.proc.returncode}"
            try:
                if self.command("PING") == b"+PONG":
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"redis-server did not answer on {self.port} in {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def command(self, *args: str | int, timeout: float = 2.0) -> bytes:
        """One command; the reply's first line (`:3`, `+PONG`, `$-1`) or, for a bulk string,
        its value. Enough for ZCARD, EXISTS, HGET, KEYS counts, PING."""
        parts = [str(a).encode() for a in args]
        wire = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(wire)
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise OSError("redis closed the connection")
                data += chunk
            head, _, rest = data.partition(b"\r\n")
            if head.startswith(b"$") and head != b"$-1":
                size = int(head[1:])
                while len(rest) < size + 2:
                    rest += sock.recv(65536)
                return rest[:size]
            return head

    def integer(self, *args: str | int) -> int:
        reply = self.command(*args)
        assert reply.startswith(b":"), reply
        return int(reply[1:])

"""The pump's keep-alive timer: one task for every stream's keep-alives (pump.KeepAlives)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from trioproxy.pump import KeepAlives, _StreamWriter

if TYPE_CHECKING:
    from trioproxy.errors import ProxyError
    from trioproxy.translate.base import Chunk

INTERVAL = 15.0


class _Recorder:
    def __init__(self) -> None:
        self.log: list[tuple[float, str]] = []

    async def commit(self) -> None:
        self.log.append((trio.current_time(), "commit"))

    async def send_chunks(self, chunks: list[Chunk]) -> None:
        self.log.append((trio.current_time(), "chunk"))

    async def keepalive(self) -> None:
        self.log.append((trio.current_time(), "keepalive"))

    async def finish(self) -> None:
        self.log.append((trio.current_time(), "finish"))

    async def complete(self, completion: dict[str, Any]) -> None:
        raise AssertionError

    async def fail(self, error: ProxyError, *, committed: bool) -> None:
        raise AssertionError


async def test_one_timer_task_keeps_silent_streams_alive_and_leaves_busy_ones_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    keepalives = KeepAlives()
    silent, busy = _Recorder(), _Recorder()
    writers = [_StreamWriter(sink, INTERVAL, keepalives) for sink in (silent, busy)]
    idle = [_StreamWriter(_Recorder(), INTERVAL, keepalives) for _ in range(50)]
    start = trio.current_time()
    before = trio.lowlevel.current_statistics().tasks_living
    for writer in writers + idle:
        writer._on_accept()
    await trio.sleep(5)  # nothing is due yet
    after = trio.lowlevel.current_statistics().tasks_living
    assert after == before + 1, "one timer task for 52 streams, not one per stream"
    for writer in idle:
        writer.closed = True
    await writers[1]._emit([{}])
    for _ in range(5):  # the busy stream writes every 10 s (t = 5 ... 55), the silent one never
        await trio.sleep(10)
        await writers[1]._emit([{}])
    # Committed once, INTERVAL after acceptance, then a keep-alive every INTERVAL.
    times = [round(t - start) for t, what in silent.log]
    assert [what for _, what in silent.log] == ["commit", "keepalive", "keepalive", "keepalive"]
    assert times == [15, 15, 30, 45]
    assert all(what in ("commit", "chunk") for _, what in busy.log), "a busy stream needs none"
    for writer in writers:
        writer.closed = True
    await trio.sleep(3 * INTERVAL)
    assert [what for _, what in silent.log].count("keepalive") == 3, "a closed stream gets none"

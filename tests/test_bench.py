"""The benchmark harness runs end to end: `bench/run.py --smoke` (every scenario, tiny counts).

Only completeness is checked (exit status, every scenario on every path in the JSON, a table row
for each, the issue-16 targets computed), never a timing: this runs on slow, noisy machines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# scenario -> a fragment of the table row it must print
SCENARIO_ROWS = {
    "startup": "| time to ready after start (ms) |",
    "nonstream_c1": "| non-streaming c=1: req/s |",
    "nonstream_c32": "| non-streaming c=32: req/s |",
    "nonstream_c256": "| non-streaming c=256: req/s |",
    "stream_ttfb_c1": "| streaming: first data byte p50, c=1 (ms) |",
    "stream_c32_20x10ms": "| 32 concurrent streams, 20 chunks 10 ms apart: streams/s |",
    "stream_2000_unpaced": "| 2000-chunk stream unpaced, one at a time: duration p50 (ms) |",
    "stream_2000_unpaced_c32": " concurrent 2000-chunk streams unpaced: chunks/s, all streams |",
    "cancel_to_upstream_eof": "| client disconnect -> upstream EOF p50 (ms) |",
    "memory_slow_small": "| {small} slow streams open: RSS (MiB; direct = the fake's) |",
    "memory_slow_large": "| {large} slow streams open: RSS (MiB; direct = the fake's) |",
}


def test_smoke_run_reports_every_scenario(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads((tmp_path / "latest.json").read_text())
    assert out["mode"] == "smoke"
    assert out["omitted"] == {}
    assert out["paths_left_out"] == {}, out["paths_left_out"]
    assert out["paths"] == ["direct", "floor", "native", "hypercorn"]
    assert set(SCENARIO_ROWS) <= set(out["results"])
    for scenario in set(SCENARIO_ROWS) - {"startup"}:
        assert set(out["paths"]) <= set(out["results"][scenario]), scenario
    assert set(out["results"]["startup"]) >= {"floor", "native", "hypercorn"}
    # every ratio target of issue 16 was computed (the smoke figures themselves mean nothing)
    assert len([t for t in out["targets"] if t["ratio_to_floor"]]) == 6, out["targets"]
    assert all("native" in t and "hypercorn" in t for t in out["targets"])
    assert "| target (issue 16) |" in done.stdout
    assert out["calibration"]["python_loop_1e6_ints_ms"] > 0
    sizes = {"small": out["sizes"]["memory_small"], "large": out["sizes"]["memory_large"]}
    for scenario, fragment in SCENARIO_ROWS.items():
        assert fragment.format(**sizes) in done.stdout, scenario
    for name in ("memory_slow_small", "memory_slow_large"):
        memory = out["results"][name]
        assert memory["left_out"] == {}
        for path in out["paths"]:
            # every stream asked for was open when the RSS was read: no figure from fewer
            assert memory[path]["open"] == memory["streams"], (name, path, memory[path])
            assert memory[path]["open_at_measurement"] == memory["streams"], (name, path)
            assert memory[path]["failed"] == {}
    assert "machine speed:" in done.stdout
    # the plot is optional (matplotlib is a bench extra): drawn, or one line saying why not
    assert (tmp_path / "latest.png").exists() or "no plot: matplotlib" in done.stdout

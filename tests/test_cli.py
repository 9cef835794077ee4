"""The `trioproxy` command: --check, config errors, and the daemon's signal handling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

from trioproxy.cli import main

ROOT = Path(__file__).parent.parent


def test_check_on_the_shipped_config_serves_demo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY", "TRIOPROXY_API_KEYS"):
        monkeypatch.delenv(var, raising=False)
    assert main(["--config", str(ROOT / "proxy.ini"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "127.0.0.1:8003" in out
    assert "demo" in out


def test_bad_config_exits_1_naming_section_key_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "proxy.ini"
    path.write_text("[proxy]\nlisten = 127.0.0.1:8003\nlisn = x\n")
    assert main(["--config", str(path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "lisn" in err and "[proxy]" in err and "line 3" in err


def test_missing_config_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.ini"), "--check"]) == 1
    assert "nope.ini" in capsys.readouterr().err


def test_non_loopback_listen_without_keys_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRIOPROXY_API_KEYS", raising=False)
    assert main(["--config", str(ROOT / "proxy.ini"), "--listen", "0.0.0.0:8003", "--check"]) == 1
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_daemon(tmp_path: Path, extra: str = "") -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    path = tmp_path / "proxy.ini"
    path.write_text(
        f"[proxy]\nlisten = 127.0.0.1:{port}\ndrain_timeout = 1\n{extra}\n"
        "[upstream:demo]\ntype = demo\ndemo_delay = 0.2\n\n[model:demo]\nupstream = demo\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioproxy", "--config", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                if resp.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    _, err = proc.communicate()
    raise AssertionError(f"daemon did not start: {err.decode()}")


def test_daemon_exits_0_on_sigterm_and_ends_open_streams_with_an_error_chunk(
    tmp_path: Path,
) -> None:
    proc, port = _start_daemon(tmp_path)
    body = b'{"model":"demo","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        sent_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        received = first
        while chunk := sock.recv(65536):
            received += chunk
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert time.monotonic() - sent_at < 1 + 5  # drain_timeout plus a margin
    assert b'"code":"server_shutdown"' in received
    assert b"[DONE]" not in received
    stderr = err.decode()
    assert "Traceback" not in stderr


def test_daemon_exits_0_on_sigint_when_idle(tmp_path: Path) -> None:
    proc, _ = _start_daemon(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    stderr = err.decode()
    assert "Traceback" not in stderr
    assert "stopped" in stderr


def test_workers_share_one_port_and_stop_together(tmp_path: Path) -> None:
    port = _free_port()
    path = tmp_path / "proxy.ini"
    path.write_text(
        f"[proxy]\nlisten = 127.0.0.1:{port}\n\n"
        "[upstream:demo]\ntype = demo\n\n[model:demo]\nupstream = demo\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "trioproxy", "--config", str(path), "--workers", "2"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        served = 0
        while served < 5 and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                    served += resp.status == 200
            except OSError:
                time.sleep(0.05)
        assert served == 5
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()


def test_a_redis_store_without_the_extra_exits_1_saying_what_to_install(tmp_path: Path) -> None:
    config = tmp_path / "proxy.ini"
    config.write_text(
        "[proxy]\nlisten = 127.0.0.1:0\nstore = redis://127.0.0.1:1/0\n"
        "[upstream:demo]\ntype = demo\n[model:demo]\nupstream = demo\n"
    )
    # As if coredis were not installed: an import of it fails.
    code = (
        "import sys; sys.modules['coredis'] = None\n"
        "from trioproxy.cli import main\n"
        f"sys.exit(main(['--config', {str(config)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1, result.stderr
    assert "trioproxy[redis]" in result.stderr
    assert "Traceback" not in result.stderr

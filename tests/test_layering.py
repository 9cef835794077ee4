"""The pure core imports no IO library (STYLE.md §1)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "trioproxy"
PURE = [
    "errors",
    "config",
    "config_types",
    "wire",
    "auth",
    "routing",
    "sse",
    "framing",
    "metrics",
    "limits",
    "validate",
    "translate",
    "record",
]
IO_LIBS = {"trio", "h11", "hypercorn", "wsproto", "trio_websocket", "socket", "ssl", "asyncio"}
IO_MODULES = {
    "trioproxy." + name
    for name in ("upstream", "engine", "asgi", "server", "cli", "embed", "websocket")
}


def _module_files() -> list[Path]:
    files = []
    for name in PURE:
        path = PACKAGE / name
        if path.is_dir():
            files += sorted(path.rglob("*.py"))
        elif (file := path.with_suffix(".py")).exists():
            files.append(file)
    return files


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_pure_core_imports_no_io_library() -> None:
    files = _module_files()
    assert len(files) > 8
    for path in files:
        for name in _imports(ast.parse(path.read_text())):
            assert name.split(".")[0] not in IO_LIBS, f"{path.name} imports {name}"
            assert not any(name.startswith(io) for io in IO_MODULES), f"{path.name} imports {name}"


def test_pure_core_reads_no_clock_randomness_or_environment() -> None:
    for path in _module_files():
        if path.name == "config.py":
            continue  # load_config, the one documented IO convenience, reads a file and os.environ
        source = path.read_text()
        for forbidden in ("time.time(", "random.", "os.environ", "datetime.now"):
            assert forbidden not in source, f"{path.name} uses {forbidden}"

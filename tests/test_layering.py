"""The layers of DESIGN.md's data flow, enforced on the imports (STYLE.md §1).

- The pure core imports no IO library and no IO module, and reads no clock, randomness or
  environment (config/load.py, the one documented IO convenience, reads a file and os.environ).
- Every module of the package belongs to exactly one layer, so a new module must be placed.
- Faces never import each other; nothing below the faces imports a face or a server.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "trioproxy"
PURE = [
    "errors",
    "config",
    "config_types",
    "auth",
    "routing",
    "sse",
    "framing",
    "metrics",
    "limits",
    "validate",
    "translate",
    "record",
    "_version",
]
# The IO edge, from the inside out: logging setup, upstream client, engine, service + pump,
# faces, servers, entry points.
IO = [
    "logs",
    "store",
    "upstream",
    "engine",
    "service",
    "pump",
    "faces",
    "servers",
    "server",
    "embed",
    "cli",
]
ENTRY = {"__init__", "__main__"}
IO_LIBS = {"trio", "h11", "hypercorn", "wsproto", "trio_websocket", "socket", "ssl", "asyncio"}
IO_MODULES = {"trioproxy." + name for name in IO}


def _files(names: list[str]) -> list[Path]:
    files = []
    for name in names:
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
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _imports_of(path: Path) -> set[str]:
    return _imports(ast.parse(path.read_text()))


def test_pure_core_imports_no_io_library() -> None:
    files = _files(PURE)
    assert len(files) > 8
    for path in files:
        for name in _imports_of(path):
            assert name.split(".")[0] not in IO_LIBS, f"{path.name} imports {name}"
            assert not any(name.startswith(io) for io in IO_MODULES), f"{path.name} imports {name}"


def test_pure_core_reads_no_clock_randomness_or_environment() -> None:
    for path in _files(PURE):
        if path.relative_to(PACKAGE).as_posix() == "config/load.py":
            continue
        source = path.read_text()
        for forbidden in ("time.time(", "random.", "os.environ", "datetime.now"):
            assert forbidden not in source, f"{path.name} uses {forbidden}"


def test_every_module_is_in_a_layer() -> None:
    placed = set(_files(PURE)) | set(_files(IO))
    for path in PACKAGE.rglob("*.py"):
        if path.stem in ENTRY and path.parent == PACKAGE:
            continue
        if path.name == "__init__.py" and path.parent in {p.parent for p in placed}:
            continue
        assert path in placed, f"{path.relative_to(PACKAGE)} is in no layer of test_layering.py"


def test_faces_never_import_each_other() -> None:
    # A face is a module or a package under faces/; its own modules may import each other.
    faces = [p for p in (PACKAGE / "faces").iterdir() if p.suffix == ".py" or p.is_dir()]
    faces = [p for p in faces if p.stem not in {"__init__", "__pycache__"}]
    assert len(faces) >= 3
    for face in faces:
        own = "trioproxy.faces." + face.stem
        for path in sorted(face.rglob("*.py")) if face.is_dir() else [face]:
            for name in _imports_of(path):
                if name.startswith("trioproxy.faces") and not name.startswith(own):
                    raise AssertionError(f"{path.relative_to(PACKAGE)} imports {name}")
                assert not name.startswith("trioproxy.server"), f"{path.name} imports {name}"


def test_below_the_faces_nothing_imports_a_face_or_a_server() -> None:
    for path in _files(["upstream", "engine", "service", "pump"]):
        for name in _imports_of(path):
            for above in (
                "trioproxy.faces",
                "trioproxy.servers",
                "trioproxy.server",
                "trioproxy.embed",
            ):
                assert not name.startswith(above), f"{path.name} imports {name}"

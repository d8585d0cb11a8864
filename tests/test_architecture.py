"""The layering rules of ARCHITECTURE.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_LIBRARIES = {"telegram", "nio", "deep_translator", "aiohttp", "httpx", "requests"}


def imported_modules(folder: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / folder).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_handlers_and_storage_import_no_platform_library() -> None:
    for folder in ("handlers", "storage"):
        for path, names in imported_modules(folder).items():
            assert not names & PLATFORM_LIBRARIES, f"{path} imports {names & PLATFORM_LIBRARIES}"


def test_dependencies_point_inward() -> None:
    for path, names in imported_modules("handlers").items():
        assert "bot" not in names, f"{path} imports bot/"
    for path, names in imported_modules("storage").items():
        assert not names & {"bot", "handlers"}, f"{path} imports an outer layer"


def test_nothing_reads_the_environment_outside_the_entry_point() -> None:
    for folder in ("bot", "handlers", "storage"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "__main__.py":
                continue
            source = path.read_text(encoding="utf-8")
            assert "os.environ" not in source and "getenv" not in source, f"{path} reads the environment"

"""The layering rules of ARCHITECTURE.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORM_LIBRARIES = {
    "telegram", "nio", "deep_translator", "aiohttp", "httpx", "requests", "aioimaplib", "aiosmtplib", "imaplib",
    "smtplib", "email", "inscriptis", "mailparser_reply",
}


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


NETWORK_NAMES = ("telegram", "matrix", "email")


def network_names_in(path: Path) -> list[str]:
    """Where a module's code (not its comments or docstrings) names a network: a string, an attribute, a name."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words = node.value.lower()
        elif isinstance(node, ast.Attribute):
            words = node.attr.lower()
        elif isinstance(node, ast.Name):
            words = node.id.lower()
        else:
            continue
        found += [f"{path.relative_to(ROOT)}:{node.lineno} {words[:40]!r}" for name in NETWORK_NAMES
                  if name in words.replace(":", " ").split() or name in words.split("_")]
    return found


def test_the_core_names_no_network() -> None:
    """Networks are plugins: the composition root, settings, logging, the worker and the handlers loop over the
    registered networks; only `bot/networks/` and `bot/transports/` know one by name. Docstrings and comments
    may name them; code and the texts it shows may not."""
    core = [path for folder in ("bot", "handlers", "storage") for path in (ROOT / folder).rglob("*.py")
            if not {"networks", "transports"} & set(path.relative_to(ROOT).parts)]
    found = [hit for path in core for hit in network_names_in(path)]
    assert not found, "\n".join(found)

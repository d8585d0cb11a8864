"""The vendored Bot API facts (tests/data) must match the shared spec they were generated from."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC = REPO_ROOT.parent / "shared" / "spec" / "telegram-bot-api.json"
DATA = REPO_ROOT / "tests" / "data"


def _generator() -> ModuleType:
    # tools/ is not a package: load the script by path.
    path = REPO_ROOT / "tools" / "gen_bot_api_subset.py"
    spec = importlib.util.spec_from_file_location("gen_bot_api_subset", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> tuple[str, dict[str, bytes]]:
    if not SPEC.is_file():
        pytest.skip("../shared/spec not present: drift not checked")
    return _generator().generate(SPEC)


def test_bot_api_subset_matches_spec(generated: tuple[str, dict[str, bytes]]) -> None:
    subset_text, _ = generated
    vendored = (DATA / "bot_api.json").read_text(encoding="utf-8")
    assert vendored == subset_text, "tests/data/bot_api.json drifted: run python tools/gen_bot_api_subset.py"


def test_error_bodies_match_spec(generated: tuple[str, dict[str, bytes]]) -> None:
    _, bodies = generated
    vendored = {p.name: p.read_bytes() for p in sorted((DATA / "telegram_errors").glob("*.json"))}
    assert vendored == bodies, "tests/data/telegram_errors drifted: run python tools/gen_bot_api_subset.py"

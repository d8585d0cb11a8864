"""Vendor the facts the Telegram emulator needs from the shared Bot API spec.

Reads ``../shared/spec/telegram-bot-api.json`` (relative to the repository root) and writes
``tests/data/bot_api.json``: method and type names, field names, field types, whether a field is required and
what a method returns. Descriptions are left out on purpose: the emulator validates against facts, not prose.
It also copies Telegram's real error bodies (``telegram-errors/*.json``) byte for byte into
``tests/data/telegram_errors/``.

The output is deterministic (sorted keys, spec order for fields), so ``tests/test_bot_api_subset.py`` can
regenerate it in memory and compare, which catches drift between the vendored copy and the spec.

    python tools/gen_bot_api_subset.py [--spec PATH] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = REPO_ROOT.parent / "shared" / "spec" / "telegram-bot-api.json"
DEFAULT_OUT = REPO_ROOT / "tests" / "data"
ERRORS_DIR_NAME = "telegram-errors"
OUT_ERRORS_DIR_NAME = "telegram_errors"


def _fields(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": f["name"], "types": list(f["types"]), "required": bool(f["required"])}
        for f in entry.get("fields", [])
    ]


def build_subset(spec: dict[str, Any]) -> dict[str, Any]:
    """The facts of ``spec``: no descriptions, links or release notes."""
    methods = {
        name: {"fields": _fields(entry), "returns": list(entry["returns"])}
        for name, entry in spec["methods"].items()
    }
    types: dict[str, Any] = {}
    for name, entry in spec["types"].items():
        fact: dict[str, Any] = {"fields": _fields(entry)}
        # Abstract types (ChatMember, BotCommandScope, ...) have no fields, only the concrete types they stand for.
        if entry.get("subtypes"):
            fact["subtypes"] = list(entry["subtypes"])
        types[name] = fact
    return {"version": spec["version"], "methods": methods, "types": types}


def _compact(value: Any) -> bool:
    """Fields and lists of type names go on one line each: small diffs, readable file."""
    if isinstance(value, list):
        return all(isinstance(v, str) for v in value)
    return isinstance(value, dict) and "name" in value


def _render(value: Any, depth: int) -> str:
    if _compact(value) or not isinstance(value, dict | list) or not value:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(value, list):
        items = [inner + _render(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    items = [f"{inner}{json.dumps(k)}: {_render(value[k], depth + 1)}" for k in sorted(value)]
    return "{\n" + ",\n".join(items) + "\n" + pad + "}"


def render(subset: dict[str, Any]) -> str:
    """Deterministic JSON: sorted keys, one-space indent, one field per line."""
    return _render(subset, 0) + "\n"


def error_bodies(spec_path: Path) -> dict[str, bytes]:
    """Telegram's error bodies next to the spec, by file name, exactly as stored."""
    errors_dir = spec_path.parent / ERRORS_DIR_NAME
    return {p.name: p.read_bytes() for p in sorted(errors_dir.glob("*.json"))}


def generate(spec_path: Path) -> tuple[str, dict[str, bytes]]:
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    return render(build_subset(spec)), error_bodies(spec_path)


def write(spec_path: Path, out_dir: Path) -> None:
    subset_text, bodies = generate(spec_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bot_api.json").write_text(subset_text, encoding="utf-8")
    errors_out = out_dir / OUT_ERRORS_DIR_NAME
    errors_out.mkdir(exist_ok=True)
    # Remove bodies that disappeared from the spec so the vendored copy mirrors it exactly.
    for stale in errors_out.glob("*.json"):
        if stale.name not in bodies:
            stale.unlink()
    for name, body in bodies.items():
        (errors_out / name).write_bytes(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="path to telegram-bot-api.json")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="where bot_api.json goes")
    args = parser.parse_args(argv)
    if not args.spec.is_file():
        print(f"spec not found: {args.spec}", file=sys.stderr)
        return 2
    write(args.spec, args.out_dir)
    print(f"wrote {args.out_dir / 'bot_api.json'} and {args.out_dir / OUT_ERRORS_DIR_NAME}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

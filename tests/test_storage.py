"""Storage: migrations, the first-decision-wins rule, replays, and the outbox's crash recovery."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from storage.db import Database
from storage.letters import Decision, NewPart, join_parts
from storage.repositories import Repositories
from tests.test_architecture import ROOT, imported_modules


def part(message_id: str, text: str, at: float = 0.0) -> NewPart:
    return NewPart("telegram", "1", message_id, text, len(text), at)


async def test_migrations_are_numbered_and_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    db = await Database.open(path)
    version = await db.version()
    journal = (await db.fetchone("PRAGMA journal_mode"))[0]
    await db.close()
    db = await Database.open(path)  # a second start applies nothing again
    assert await db.version() == version >= 1
    assert journal == "wal"
    assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1
    await db.close()


async def test_a_letter_survives_a_reopen(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "relay.db")
    repos = Repositories.over(db)
    sender = await repos.senders.ensure("telegram", "42", "42", "es", 0)
    stored = await repos.letters.start_letter(sender.id, part("7", "¡Hola! ✊"))
    await db.close()
    repos = Repositories.over(await Database.open(tmp_path / "relay.db"))
    letter = await repos.letters.get(stored.id)
    assert letter is not None and letter.text == "¡Hola! ✊" and letter.status == "pending"
    assert await repos.letters.has_part("telegram", "1", "7")  # a replayed update is recognised
    await repos.db.close()


async def test_first_decision_wins_and_queues_once(tmp_path: Path) -> None:
    repos = Repositories.over(await Database.open(":memory:"))
    await repos.subscriptions.subscribe("telegram", "-1", "channel", "A", "en", 0)
    await repos.subscriptions.subscribe("telegram", "-2", "group", "B", "es", 0)
    sender = await repos.senders.ensure("telegram", "42", "42", None, 0)
    letter = await repos.letters.start_letter(sender.id, part("1", "x"))
    approve = Decision(letter.id, "approve", "telegram", "9", "Mo", None, 1.0)
    reject = Decision(letter.id, "reject", "telegram", "8", "Kim", "no", 2.0)
    assert await repos.letters.decide(letter.id, approve)
    assert not await repos.letters.decide(letter.id, reject)
    assert not await repos.letters.decide(letter.id, approve)
    assert await repos.deliveries.queue_for_active(letter.id, 1.0) == 2
    assert await repos.deliveries.queue_for_active(letter.id, 1.0) == 0  # queued once, whoever asks again
    assert (await repos.deliveries.progress(letter.id)).total == 2
    deciding = await repos.letters.deciding(letter.id)
    assert deciding is not None and deciding.moderator == "Mo"
    await repos.db.close()


async def test_in_flight_deliveries_are_recovered_and_one_per_chat_is_claimed() -> None:
    repos = Repositories.over(await Database.open(":memory:"))
    await repos.subscriptions.subscribe("telegram", "-1", "channel", "A", "en", 0)
    sender = await repos.senders.ensure("telegram", "42", "42", None, 0)
    for number in range(2):
        letter = await repos.letters.start_letter(sender.id, part(str(number), "x"))
        await repos.letters.decide(letter.id, Decision(letter.id, "approve", "telegram", "9", "Mo", None, 1.0))
        await repos.deliveries.queue_for_active(letter.id, 1.0)
    first = await repos.deliveries.claim_due(10.0, 10)
    assert len(first) == 1  # the same chat never has two deliveries in flight
    assert await repos.deliveries.claim_due(10.0, 10, frozenset({("telegram", "-1")})) == []
    assert await repos.deliveries.recover_in_flight(11.0) == 1  # a crash: 'sending' goes back to the queue
    again = await repos.deliveries.claim_due(11.0, 10)
    assert [job.id for job in again] == [first[0].id] and again[0].attempts == 2
    await repos.db.close()


def test_client_split_parts_are_rejoined_with_the_whitespace_the_client_dropped() -> None:
    assert join_parts(["We are with", "you."]) == "We are with you."
    assert join_parts(["End of a sentence.", "Next paragraph"]) == "End of a sentence.\nNext paragraph"
    assert join_parts(["kept ", "as is"]) == "kept as is"


async def test_a_database_from_a_newer_bot_stops_the_start(tmp_path: Path) -> None:
    """An older bot would misread a newer schema (or undo it): it refuses, with one line naming DATABASE."""
    from bot.app import Relay, StartupError
    from bot.config import Settings

    path = tmp_path / "relay.db"
    await (await Database.open(path)).close()
    with closing(sqlite3.connect(path)) as newer_bot:  # what a newer bot's migration leaves
        newer_bot.execute("PRAGMA user_version = 999")
    relay = Relay(Settings.from_env({"TELEGRAM_TOKEN": "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                                     "TELEGRAM_MODERATION_CHAT": "-100123", "DATABASE": str(path)}))
    with pytest.raises(StartupError, match=r"^DATABASE: the database is at version 999"):
        await relay.start()
    await relay.stop()


# What only SQLite (or its driver) understands; the repositories ask storage/connection.py's Dialect instead.
SQLITE_ONLY = {
    "INSERT OR IGNORE / OR REPLACE, UPDATE OR IGNORE": r"\b(INSERT|UPDATE)\s+OR\s+(IGNORE|REPLACE)\b",
    "json_group_array": r"\bjson_group_array\b",
    "MAX(a, b) as a scalar": r"\bMAX\s*\([^(),]*,",
    "BEGIN IMMEDIATE": r"\bBEGIN\s+IMMEDIATE\b",
    "PRAGMA": r"\bPRAGMA\b",
    "rowid": r"\browid\b",
    "sqlite_ tables and functions": r"\bsqlite_\w+",
    "a cursor, its lastrowid or rowcount": r"\bcursor\b|\.(lastrowid|rowcount)\b",
}


def test_repositories_see_the_connection_interface_not_sqlite() -> None:
    """The seam for another database: only storage/db.py (the SQLite implementation) knows aiosqlite and writes
    SQLite's own statements."""
    implementation = "storage/db.py"
    modules = {path: names for path, names in imported_modules("storage").items()
               if path != implementation and "migrations" not in path}
    assert "storage/letters.py" in modules and "storage/connection.py" in modules
    found = [f"{path} imports {names & {'aiosqlite', 'sqlite3'}}" for path, names in modules.items()
             if names & {"aiosqlite", "sqlite3"}]
    for path in modules:
        source = (ROOT / path).read_text(encoding="utf-8")
        found += [f"{path}:{source.count(chr(10), 0, hit.start()) + 1} {what}: {hit.group(0)!r}"
                  for what, pattern in SQLITE_ONLY.items() for hit in re.finditer(pattern, source, re.IGNORECASE)]
    assert not found, "\n".join(found)

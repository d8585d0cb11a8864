"""The SQLite connection: WAL, foreign keys, a busy timeout, numbered migrations and explicit transactions."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import aiosqlite

log = logging.getLogger(__name__)


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.read_text(encoding="utf-8")))
    return sorted(found)


class DatabaseTooNew(RuntimeError):
    """The database was migrated by a newer version of the bot: this one would misread it, so it does not start."""


class Database:
    """One connection shared by the whole process; writes are serialised by `transaction()`."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self.connection = connection
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> Database:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(str(path), isolation_level=None)
        connection.row_factory = aiosqlite.Row
        await connection.execute("PRAGMA journal_mode = WAL")
        await connection.execute("PRAGMA foreign_keys = ON")
        await connection.execute("PRAGMA busy_timeout = 5000")
        # NORMAL is durable across a process crash in WAL mode; only a power cut can lose the last commit.
        await connection.execute("PRAGMA synchronous = NORMAL")
        # Deleted rows are overwritten, not left in free pages: what was purged cannot be read back.
        await connection.execute("PRAGMA secure_delete = ON")
        database = cls(connection)
        try:
            await database.migrate()
        except BaseException:
            await connection.close()  # its thread would keep the process alive
            raise
        return database

    async def close(self) -> None:
        await self.connection.close()

    async def migrate(self) -> None:
        async with self.connection.execute("PRAGMA user_version") as cursor:
            (version,) = await cursor.fetchone()
        latest = max(number for number, _script in _migrations())
        if version > latest:
            raise DatabaseTooNew(
                f"DATABASE: the database is at version {version}, and this version of the bot knows up to {latest}: "
                "a newer version has used it; run that one, or restore a backup made with this one"
            )
        # A migration may rebuild a table others refer to (SQLite's documented 12-step way): foreign keys are
        # off while it runs, and checked before it commits. The pragma is a no-op inside a transaction.
        await self.connection.execute("PRAGMA foreign_keys = OFF")
        try:
            for number, script in _migrations():
                if number <= version:
                    continue
                log.info("applying database migration %03d", number)
                async with self.transaction() as db:
                    for statement in _statements(script):
                        await db.execute(statement)
                    async with db.execute("PRAGMA foreign_key_check") as cursor:
                        if await cursor.fetchone() is not None:
                            raise RuntimeError(f"database migration {number:03d} broke a foreign key")
                    await db.execute(f"PRAGMA user_version = {number:d}")
        finally:
            await self.connection.execute("PRAGMA foreign_keys = ON")

    async def checkpoint(self, attempts: int = 50) -> bool:
        """Copy the WAL into the database and empty it, so rows just deleted are not left in the WAL file.

        A read still open on the shared connection makes SQLite refuse ("database table is locked"): try again
        shortly, as reads are short. False if it never went through (the next purge tries again).
        """
        for _attempt in range(attempts):
            async with self._write_lock:
                try:
                    async with self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
                        busy, _pages, _done = await cursor.fetchone()
                except sqlite3.OperationalError:
                    busy = 1
            if not busy:
                return True
            await asyncio.sleep(0.02)
        log.warning("the WAL could not be emptied after a purge (the database stayed busy); the next purge retries")
        return False

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            await self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield self.connection
            except BaseException:
                await self.connection.execute("ROLLBACK")
                raise
            await self.connection.execute("COMMIT")

    async def fetchone(self, sql: str, params: tuple | dict = ()) -> aiosqlite.Row | None:
        async with self.connection.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: tuple | dict = ()) -> list[aiosqlite.Row]:
        async with self.connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def execute(self, sql: str, params: tuple | dict = ()) -> int:
        """One write in its own transaction; returns the number of rows changed."""
        async with self.transaction() as db, db.execute(sql, params) as cursor:
            return cursor.rowcount


def _statements(script: str) -> list[str]:
    # executescript() would commit on its own; splitting keeps a migration inside our transaction.
    without_comments = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [statement.strip() for statement in without_comments.split(";") if statement.strip()]

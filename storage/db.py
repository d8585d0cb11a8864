"""The SQLite implementation of storage/connection.py: one aiosqlite connection with WAL, foreign keys, a busy
timeout and secure deletion; numbered migrations; writes serialised in `BEGIN IMMEDIATE` transactions.

Everything SQLite spells its own way lives here: the pragmas, the write lock, the cursor (`rowcount`,
`lastrowid`) and, in `SQLiteDialect`, the statements repositories ask for by name. The repositories see only the
Protocols of storage/connection.py, so that a PostgreSQL backend can be added beside this one later.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import aiosqlite

from storage.connection import Params, Result

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


class SQLiteDialect:
    row_id = "rowid"

    def insert_or_ignore(self, table: str, columns: Sequence[str], select: str | None = None) -> str:
        return f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) {select or _values(columns)}"

    def insert_or_replace(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        # SQLite finds the conflicting row on any unique key itself; `key` is for engines that must be told.
        return f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) {_values(columns)}"

    def json_array(self, expression: str) -> str:
        return f"json_group_array({expression})"

    def greatest(self, first: str, second: str) -> str:
        return f"MAX({first}, {second})"  # with two arguments SQLite's MAX is scalar


def _values(columns: Sequence[str]) -> str:
    return f"VALUES ({', '.join('?' * len(columns))})"


class _Statements:
    """Statements on the shared connection as it stands: in a transaction when one is open, else each on its own."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, params: Params = ()) -> Result:
        # A write leaves nothing to read: the cursor is not closed (one thread hop fewer), as sqlite3 finished it.
        cursor = await self._connection.execute(sql, params)
        return Result(cursor.rowcount, cursor.lastrowid)

    async def executemany(self, sql: str, params: Iterable[Params]) -> int:
        cursor = await self._connection.executemany(sql, params)
        return cursor.rowcount

    async def fetchone(self, sql: str, params: Params = ()) -> aiosqlite.Row | None:
        # Closed at once: a read left open on the shared connection makes a checkpoint refuse.
        async with self._connection.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Params = ()) -> list[aiosqlite.Row]:
        async with self._connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())


# The query that reads every table, by schema version and tables left out: the tables are those of the version.
_DUMPS: dict[tuple[int, frozenset[str]], str] = {}


class Database:
    """storage/connection.py's `Connection` over SQLite: one connection shared by the whole process; writes are
    serialised by `transaction()`."""

    dialect = SQLiteDialect()

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self.connection = connection
        self._write_lock = asyncio.Lock()
        self._owner: asyncio.Task[object] | None = None  # the task whose transaction is open
        self._statements = _Statements(connection)

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

    async def version(self) -> int:
        """The number of the last migration applied."""
        row = await self.fetchone("PRAGMA user_version")
        assert row is not None
        return row[0]

    async def migrate(self) -> None:
        version = await self.version()
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
                    if await db.fetchone("PRAGMA foreign_key_check") is not None:
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

    async def schema_script(self) -> str:
        """The schema with its version, as one script: a database made from it equals a migrated one, made in one
        step rather than one per migration (what tests that open hundreds of databases need)."""
        rows = await self.fetchall("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
                                   "ORDER BY rowid")
        return "".join(f"{row[0]};\n" for row in rows) + f"PRAGMA user_version = {await self.version():d};"

    async def load_schema_script(self, script: str) -> None:
        """Make this new, empty database from a script of `schema_script()` instead of migrating it."""
        await self.connection.executescript(script)

    async def rows_by_table(self, leaving_out: Collection[str] = ()) -> dict[str, list[str]]:
        """Every row of every table (but those left out), each as one text of its quoted values, sorted, by table:
        what a test compares to tell whether anything in the database changed."""
        key = (await self.version(), frozenset(leaving_out))
        if key not in _DUMPS:
            selects = []
            tables = await self.fetchall("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%' ORDER BY name")
            for name in (table["name"] for table in tables if table["name"] not in leaving_out):
                columns = [row["name"] for row in await self.fetchall(f'PRAGMA table_info("{name}")')]
                row_text = " || ',' || ".join(f'quote("{column}")' for column in columns)
                selects.append(f"SELECT '{name}', {row_text} FROM \"{name}\"")
            _DUMPS[key] = " UNION ALL ".join(selects)
        found: dict[str, list[str]] = {}
        for name, row_text in await self.fetchall(_DUMPS[key]):
            found.setdefault(name, []).append(row_text)
        return {name: sorted(rows) for name, rows in found.items()}

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Statements]:
        if self._owner is not None and self._owner is asyncio.current_task():
            # A repository's own transaction inside a handler's: one transaction, committed by the outer block
            # (a change and the messages it causes commit together).
            yield self._statements
            return
        async with self._write_lock:
            self._owner = asyncio.current_task()
            try:
                await self.connection.execute("BEGIN IMMEDIATE")
                try:
                    yield self._statements
                except BaseException:
                    await self.connection.execute("ROLLBACK")
                    raise
                await self.connection.execute("COMMIT")
            finally:
                self._owner = None

    async def execute(self, sql: str, params: Params = ()) -> Result:
        """One write in its own transaction."""
        async with self.transaction() as db:
            return await db.execute(sql, params)

    async def executemany(self, sql: str, params: Iterable[Params]) -> int:
        async with self.transaction() as db:
            return await db.executemany(sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> aiosqlite.Row | None:
        async with self._reading():
            return await self._statements.fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[aiosqlite.Row]:
        async with self._reading():
            return await self._statements.fetchall(sql, params)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        """A read sees what was committed: while another task's transaction is open on the shared connection, it
        waits for the commit (else a card could be drawn from half of a sender's edit). The transaction's own
        task reads its own writes."""
        if self._owner is None or self._owner is asyncio.current_task():
            yield
            return
        async with self._write_lock:
            yield


def _statements(script: str) -> list[str]:
    # executescript() would commit on its own; splitting keeps a migration inside our transaction.
    without_comments = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [statement.strip() for statement in without_comments.split(";") if statement.strip()]

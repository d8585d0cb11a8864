"""The seam between the repositories and a database engine: what a repository may ask of a connection.

Repositories write plain parameterised SQL with `?` placeholders (a PostgreSQL implementation would number them)
and ask the connection's `dialect` for the few statements engines each spell their own way. They see no driver:
a write answers with a `Result` (rows changed, the key given), a read with its rows, all read at once. SQLite
(storage/db.py) is the one implementation; a PostgreSQL one is meant to come later behind the same Protocols, with
its own migrations, and leave the repositories as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

Params = Sequence[Any] | Mapping[str, Any]


class Row(Protocol):
    """One row read: a column by its name (`row["id"]`) or, for an unnamed aggregate, by its place (`row[0]`)."""

    def __getitem__(self, key: str | int) -> Any: ...


@dataclass(frozen=True)
class Result:
    changed: int  # rows inserted, updated or deleted
    last_id: int | None  # the key given to the row an INSERT added (None when none was)


class Statements(Protocol):
    """Statements run on one connection; inside `Connection.transaction()`, all in that transaction."""

    async def execute(self, sql: str, params: Params = ()) -> Result: ...

    async def executemany(self, sql: str, params: Iterable[Params]) -> int:
        """The same statement once per set of parameters; returns the rows changed in all."""
        ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...


class Dialect(Protocol):
    """The statements engines disagree on, built from names the repository gives (never from user input)."""

    # A column every table has that names one row, for deleting a batch of rows by their place.
    row_id: str

    def insert_or_ignore(self, table: str, columns: Sequence[str], select: str | None = None) -> str:
        """Insert one row of parameters, or the rows `select` yields, skipping any that would break a unique key."""
        ...

    def insert_or_replace(self, table: str, columns: Sequence[str], key: Sequence[str]) -> str:
        """Insert one row of parameters; a row already there under the unique `key` gives way to it."""
        ...

    def json_array(self, expression: str) -> str:
        """An aggregate: the values of `expression` over the group, in the order the rows come, as a JSON array."""
        ...

    def greatest(self, first: str, second: str) -> str:
        """The larger of two values of one row (not an aggregate)."""
        ...


class Connection(Statements, Protocol):
    """The database as the repositories hold it. A statement run here outside a transaction is one on its own:
    a write commits at once, a read sees what was committed (never another task's open transaction)."""

    dialect: Dialect

    def transaction(self) -> AbstractAsyncContextManager[Statements]:
        """A write transaction: one at a time in the process, committed at the end of the block, rolled back if it
        raises. Opened again by the task that holds it (a repository's inside a handler's), it is the same one."""
        ...

    async def checkpoint(self) -> bool:
        """Make rows just deleted unreadable in the database's files (a purge promises it); False when the
        database stayed busy and it should be tried again later."""
        ...

    async def close(self) -> None: ...

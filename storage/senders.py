"""Who wrote: a sender is a pseudonym ("sender 7"); the account behind it is kept only while it is needed.

`accounts` holds the one row that ties a pseudonym to a platform account (user id, private chat, language).
It is deleted when retention cuts the link and on `forget`; the letters then belong to the pseudonym alone.
Bans outlive the account as a keyed hash of it (the key lives in a file outside the database).
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.connection import Connection, Row


@dataclass(frozen=True)
class Sender:
    """A pseudonym with the account behind it: what the bot needs to tell the writer about their letters."""

    id: int
    platform: str
    user_id: str
    chat_id: str
    language: str | None


def _sender(row: Row) -> Sender:
    return Sender(row["sender_id"], row["platform"], row["user_id"], row["chat_id"], row["language"])


class SenderRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db

    async def ensure(self, platform: str, user_id: str, chat_id: str, language: str | None, at: float) -> Sender:
        """The sender of this account, a new pseudonym on first contact; chat and language follow the latest."""
        async with self.db.transaction() as db:
            row = await db.fetchone("SELECT sender_id FROM accounts WHERE platform = ? AND user_id = ?",
                                    (platform, user_id))
            if row is None:
                sender_id = (await db.execute("INSERT INTO senders (created_at) VALUES (?)", (at,))).last_id
                await db.execute(
                    """INSERT INTO accounts (sender_id, platform, user_id, chat_id, language, last_seen_at)
                       VALUES (?, ?, ?, ?, ?, ?)""",
                    (sender_id, platform, user_id, chat_id, language, at),
                )
            else:
                await db.execute(
                    """UPDATE accounts SET chat_id = ?, language = COALESCE(?, language), last_seen_at = ?
                       WHERE sender_id = ?""",
                    (chat_id, language, at, row["sender_id"]),
                )
        sender = await self.find(platform, user_id)
        assert sender is not None
        return sender

    async def find(self, platform: str, user_id: str) -> Sender | None:
        row = await self.db.fetchone("SELECT * FROM accounts WHERE platform = ? AND user_id = ?", (platform, user_id))
        return _sender(row) if row else None

    async def get(self, sender_id: int) -> Sender | None:
        """The account behind a pseudonym, or None once the link is cut."""
        row = await self.db.fetchone("SELECT * FROM accounts WHERE sender_id = ?", (sender_id,))
        return _sender(row) if row else None

    async def linked(self) -> list[tuple[str, str, str]]:
        """(platform, user id, chat id) of every account still tied to a pseudonym."""
        rows = await self.db.fetchall("SELECT platform, user_id, chat_id FROM accounts ORDER BY sender_id")
        return [(row["platform"], row["user_id"], row["chat_id"]) for row in rows]

    async def pseudonyms(self) -> int:
        """How many pseudonyms were ever made (a purge that moves an account away from its letters makes one)."""
        row = await self.db.fetchone("SELECT COUNT(*) FROM senders")
        return row[0]


class BanRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db
        self._ban = db.dialect.insert_or_ignore("bans", ("account_hash", "sender_id", "banned_at"))
        # The legacy ban's row under its hash, unless a ban of the hash is there already; the marker row goes.
        self._rehash = db.dialect.insert_or_ignore(
            "bans", ("account_hash", "sender_id", "banned_at"),
            select="SELECT ?, sender_id, banned_at FROM bans WHERE account_hash = ?",
        )

    async def is_banned(self, account_hash: str) -> bool:
        return await self.db.fetchone("SELECT 1 FROM bans WHERE account_hash = ?", (account_hash,)) is not None

    async def ban(self, account_hash: str, sender_id: int | None, at: float) -> bool:
        """True when this account was not banned before. A ban carried over from before hashing has no sender."""
        return (await self.db.execute(self._ban, (account_hash, sender_id, at))).changed == 1

    async def unban(self, account_hash: str | None, sender_id: int) -> bool:
        """Lift the ban of this account, or, once the account is unknown, the ban recorded for the pseudonym."""
        if account_hash is not None:
            sql, params = "DELETE FROM bans WHERE account_hash = ? OR sender_id = ?", (account_hash, sender_id)
        else:
            sql, params = "DELETE FROM bans WHERE sender_id = ?", (sender_id,)
        return (await self.db.execute(sql, params)).changed > 0

    async def legacy(self) -> list[tuple[str, str, str]]:
        """Bans carried over from before hashing: (marker, platform, user id), to be hashed at start-up."""
        rows = await self.db.fetchall("SELECT account_hash FROM bans WHERE account_hash LIKE 'legacy:%'")
        found = []
        for row in rows:
            _legacy, platform, user_id = row["account_hash"].split(":", 2)
            found.append((row["account_hash"], platform, user_id))
        return found

    async def hashes(self) -> list[str]:
        """The account hash of every ban (a marker for those carried over from before hashing), oldest first."""
        rows = await self.db.fetchall("SELECT account_hash FROM bans ORDER BY banned_at, account_hash")
        return [row["account_hash"] for row in rows]

    async def rehash(self, marker: str, account_hash: str) -> None:
        async with self.db.transaction() as db:
            await db.execute(self._rehash, (account_hash, marker))
            await db.execute("DELETE FROM bans WHERE account_hash = ?", (marker,))

"""Who wrote: platform identities behind the pseudonym number that moderators see."""

from __future__ import annotations

from dataclasses import dataclass

from storage.db import Database


@dataclass(frozen=True)
class Sender:
    id: int
    platform: str
    user_id: str
    chat_id: str
    language: str | None
    banned: bool


def _sender(row) -> Sender:
    return Sender(row["id"], row["platform"], row["user_id"], row["chat_id"], row["language"], bool(row["banned"]))


class SenderRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ensure(self, platform: str, user_id: str, chat_id: str, language: str | None, at: float) -> Sender:
        """The sender for this platform account, created on first contact; chat and language follow the latest."""
        async with self.db.transaction() as db:
            await db.execute(
                """INSERT INTO senders (platform, user_id, chat_id, language, created_at) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (platform, user_id)
                   DO UPDATE SET chat_id = excluded.chat_id, language = COALESCE(excluded.language, language)""",
                (platform, user_id, chat_id, language, at),
            )
        sender = await self.find(platform, user_id)
        assert sender is not None
        return sender

    async def find(self, platform: str, user_id: str) -> Sender | None:
        row = await self.db.fetchone("SELECT * FROM senders WHERE platform = ? AND user_id = ?", (platform, user_id))
        return _sender(row) if row else None

    async def get(self, sender_id: int) -> Sender | None:
        row = await self.db.fetchone("SELECT * FROM senders WHERE id = ?", (sender_id,))
        return _sender(row) if row else None

    async def set_banned(self, sender_id: int, banned: bool) -> bool:
        """True when this changed the ban."""
        changed = await self.db.execute(
            "UPDATE senders SET banned = ? WHERE id = ? AND banned != ?", (int(banned), sender_id, int(banned))
        )
        return changed == 1

"""Rooms the bot joined on someone's invitation, until they prove to be of use (see handlers/rooms.py)."""

from __future__ import annotations

from storage.connection import Connection


class RoomRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db
        self._join = db.dialect.insert_or_ignore("joined_rooms", ("platform", "chat_id", "joined_at"))

    async def joined(self, platform: str, chat_id: str, at: float) -> None:
        await self.db.execute(self._join, (platform, chat_id, at))

    async def joined_before(self, before: float, limit: int = 500) -> list[tuple[str, str]]:
        rows = await self.db.fetchall(
            "SELECT platform, chat_id FROM joined_rooms WHERE joined_at <= ? ORDER BY joined_at LIMIT ?",
            (before, limit),
        )
        return [(row["platform"], row["chat_id"]) for row in rows]

    async def settled(self, platform: str, chat_id: str) -> None:
        """Kept or left: no longer on probation."""
        await self.db.execute("DELETE FROM joined_rooms WHERE platform = ? AND chat_id = ?", (platform, chat_id))

"""Small facts the bot keeps between runs, and the inbound events it has already handled."""

from __future__ import annotations

from storage.db import Database


class StateRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str) -> str | None:
        row = await self.db.fetchone("SELECT value FROM bot_state WHERE key = ?", (key,))
        return row["value"] if row else None

    async def put(self, key: str, value: str) -> None:
        await self.db.execute(
            "INSERT INTO bot_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def first_time(self, platform: str, event_id: str, at: float) -> bool:
        """Record an inbound event; False when it was seen before (a replay after a restart)."""
        changed = await self.db.execute(
            "INSERT OR IGNORE INTO seen_events (platform, event_id, seen_at) VALUES (?, ?, ?)",
            (platform, event_id, at),
        )
        return changed == 1

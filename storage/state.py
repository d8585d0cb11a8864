"""Small facts the bot keeps between runs, and the inbound events it has already handled."""

from __future__ import annotations

from storage.connection import Connection


class StateRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db
        self._remember_event = db.dialect.insert_or_ignore("seen_events", ("platform", "event_id", "seen_at"))

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
        return (await self.db.execute(self._remember_event, (platform, event_id, at))).changed == 1

    async def events_seen(self) -> int:
        """How many inbound events are remembered as handled (the replay guards a purge has not deleted yet)."""
        row = await self.db.fetchone("SELECT COUNT(*) FROM seen_events")
        return row[0]

"""Subscriber chats and the language each wants letters in."""

from __future__ import annotations

from dataclasses import dataclass

from storage.connection import Connection, Row


@dataclass(frozen=True)
class Subscription:
    id: int
    platform: str
    chat_id: str
    kind: str
    title: str | None
    language: str
    active: bool
    deactivated_reason: str | None


def subscription_from(row: Row) -> Subscription:
    return Subscription(
        row["id"], row["platform"], row["chat_id"], row["kind"], row["title"], row["language"],
        bool(row["active"]), row["deactivated_reason"],
    )


class SubscriptionRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db

    async def subscribe(
        self, platform: str, chat_id: str, kind: str, title: str | None, language: str, at: float
    ) -> Subscription:
        """Create or reactivate the chat's subscription, with this language."""
        await self.db.execute(
            """INSERT INTO subscriptions (platform, chat_id, kind, title, language, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (platform, chat_id) DO UPDATE SET
                   kind = excluded.kind, title = COALESCE(excluded.title, title), language = excluded.language,
                   active = 1, deactivated_reason = NULL, updated_at = excluded.updated_at""",
            (platform, chat_id, kind, title, language, at, at),
        )
        subscription = await self.find(platform, chat_id)
        assert subscription is not None
        return subscription

    async def request(self, platform: str, chat_id: str, language: str, at: float) -> None:
        """A subscription waiting for its confirmation (the newest request's language wins)."""
        await self.db.execute(
            """INSERT INTO subscription_requests (platform, chat_id, language, asked_at) VALUES (?, ?, ?, ?)
               ON CONFLICT (platform, chat_id)
               DO UPDATE SET language = excluded.language, asked_at = excluded.asked_at""",
            (platform, chat_id, language, at),
        )

    async def take_request(self, platform: str, chat_id: str, asked_since: float) -> str | None:
        """The language of the chat's request made since `asked_since`, which is used up; None when there is none."""
        async with self.db.transaction() as db:
            row = await db.fetchone(
                "SELECT language, asked_at FROM subscription_requests WHERE platform = ? AND chat_id = ?",
                (platform, chat_id),
            )
            if row is None:
                return None
            await db.execute(
                "DELETE FROM subscription_requests WHERE platform = ? AND chat_id = ?", (platform, chat_id)
            )
        return str(row["language"]) if row["asked_at"] >= asked_since else None

    async def drop_requests(self, asked_before: float) -> int:
        dropped = await self.db.execute("DELETE FROM subscription_requests WHERE asked_at < ?", (asked_before,))
        return dropped.changed

    async def find(self, platform: str, chat_id: str) -> Subscription | None:
        row = await self.db.fetchone(
            "SELECT * FROM subscriptions WHERE platform = ? AND chat_id = ?", (platform, chat_id)
        )
        return subscription_from(row) if row else None

    async def active(self) -> list[Subscription]:
        rows = await self.db.fetchall("SELECT * FROM subscriptions WHERE active = 1 ORDER BY platform, id")
        return [subscription_from(row) for row in rows]

    async def audience(self) -> tuple[int, int]:
        """(active subscriptions, languages they read): counted in the database, as there may be 100,000."""
        row = await self.db.fetchone("SELECT COUNT(*), COUNT(DISTINCT language) FROM subscriptions WHERE active = 1")
        assert row is not None
        return row[0], row[1]

    async def deactivate(self, subscription_id: int, reason: str, at: float) -> bool:
        """Stop the subscription (what it still has queued is the outbox's to drop); True when it was active."""
        stopped = await self.db.execute(
            """UPDATE subscriptions SET active = 0, deactivated_reason = ?, updated_at = ?
               WHERE id = ? AND active = 1""",
            (reason, at, subscription_id),
        )
        return stopped.changed == 1

    async def move(self, subscription_id: int, new_chat_id: str, at: float) -> None:
        """Follow a chat that changed its id (a Telegram group upgraded to a supergroup)."""
        await self.db.execute(
            "UPDATE subscriptions SET chat_id = ?, updated_at = ? WHERE id = ?", (new_chat_id, at, subscription_id)
        )

"""The outbox: one row per (letter, subscription); the worker claims due rows, sends, and records the outcome.

States: queued → sending → sent; a retry goes back to queued with a later `next_attempt_at`; `failed` after the
retry budget; `dropped` when the subscription was deactivated. A row still `sending` at start-up was in flight
when the process died: it is queued again and resumes at the first part not recorded as sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.connection import Connection, Row
from storage.subscriptions import Subscription, subscription_from


@dataclass(frozen=True)
class DeliveryJob:
    id: int
    letter_id: int
    subscription_id: int
    platform: str
    chat_id: str
    kind: str
    language: str
    attempts: int
    parts_sent: int
    remote_ids: tuple[str, ...]


@dataclass(frozen=True)
class Progress:
    total: int
    sent: int
    dropped: int
    failed: int

    @property
    def open(self) -> int:
        return self.total - self.sent - self.dropped - self.failed


@dataclass(frozen=True)
class SentTimes:
    """When a letter's deliveries were recorded as sent, and which needed more than one attempt."""

    first: float | None
    last: float | None
    retried: int
    last_by_kind: dict[str, float]  # chat kind → its last delivery's, earliest kind first
    retry_reasons: dict[str, int]  # "kind: last error" → deliveries, most first


class DeliveryRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db
        # An attempt given back (not made) never takes the count below zero.
        self._one_attempt_back = f"attempts = {db.dialect.greatest('attempts - 1', '0')}"
        # At most one delivery of a letter per subscription, whatever queued it first (the unique key decides).
        self._queue_for_active = db.dialect.insert_or_ignore(
            "deliveries", ("letter_id", "subscription_id", "next_attempt_at", "updated_at"),
            select="SELECT ?, id, ?, ? FROM subscriptions WHERE active = 1 ORDER BY id",
        )

    async def queue_for_active(self, letter_id: int, at: float) -> int:
        """A delivery of the letter for every active subscription; returns how many were queued."""
        queued = await self.db.execute(self._queue_for_active, (letter_id, at, at))
        return queued.changed

    async def drop_for(self, subscription_id: int, reason: str, at: float) -> int:
        """A subscription that ended: what it still had queued will not be sent."""
        dropped = await self.db.execute(
            """UPDATE deliveries SET state = 'dropped', last_error = ?, updated_at = ?
               WHERE subscription_id = ? AND state IN ('queued', 'sending')""",
            (reason, at, subscription_id),
        )
        return dropped.changed

    async def recover_in_flight(self, at: float) -> int:
        # next_attempt_at is kept: it is already due, and keeps the row's place before later letters.
        recovered = await self.db.execute(
            "UPDATE deliveries SET state = 'queued', updated_at = ? WHERE state = 'sending'", (at,)
        )
        return recovered.changed

    async def claim_due(self, now: float, limit: int, busy_chats: frozenset[tuple[str, str]] = frozenset()) -> list[
        DeliveryJob
    ]:
        """Mark up to `limit` due deliveries as sending and return them, oldest first.

        Deliveries to chats in `busy_chats` are left queued, so one chat never has two sends in flight.
        """
        async with self.db.transaction() as db:
            rows = await db.fetchall(
                """SELECT d.id, d.letter_id, d.subscription_id, s.platform, s.chat_id, s.kind, s.language,
                          d.attempts, d.parts_sent, d.remote_ids
                   FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
                   WHERE d.state = 'queued' AND d.next_attempt_at <= ?
                   ORDER BY d.next_attempt_at, d.id LIMIT ?""",
                (now, limit + len(busy_chats)),
            )
            jobs: list[DeliveryJob] = []
            claimed_chats = set(busy_chats)
            for row in rows:
                chat = (row["platform"], row["chat_id"])
                if chat in claimed_chats or len(jobs) >= limit:
                    continue
                claimed_chats.add(chat)
                jobs.append(_job(row))
            await db.executemany(
                "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, updated_at = ? WHERE id = ?",
                [(now, job.id) for job in jobs],
            )
        return jobs

    async def record_part(self, delivery_id: int, parts_sent: int, remote_ids: tuple[str, ...], at: float) -> None:
        """Progress inside a multi-part letter, so a crash resumes after the last part known to be out."""
        await self.db.execute(
            "UPDATE deliveries SET parts_sent = ?, remote_ids = ?, updated_at = ? WHERE id = ?",
            (parts_sent, ",".join(remote_ids), at, delivery_id),
        )

    async def mark_sent(self, sent: list[tuple[int, int, tuple[str, ...]]], at: float) -> None:
        """(delivery id, parts sent, remote ids) of many deliveries, in one transaction (a group commit)."""
        async with self.db.transaction() as db:
            await db.executemany(
                "UPDATE deliveries SET state = 'sent', parts_sent = ?, remote_ids = ?, updated_at = ? WHERE id = ?",
                [(parts, ",".join(remote_ids), at, delivery_id) for delivery_id, parts, remote_ids in sent],
            )

    async def mark_failed(self, delivery_id: int, error: str, at: float) -> None:
        await self.db.execute(
            "UPDATE deliveries SET state = 'failed', last_error = ?, updated_at = ? WHERE id = ?",
            (error, at, delivery_id),
        )

    async def reschedule(self, delivery_id: int, next_attempt_at: float, error: str, at: float) -> None:
        await self.db.execute(
            """UPDATE deliveries SET state = 'queued', next_attempt_at = ?, last_error = ?, updated_at = ?
               WHERE id = ? AND state = 'sending'""",
            (next_attempt_at, error, at, delivery_id),
        )

    async def release(self, delivery_id: int, at: float) -> None:
        """Put back a claimed delivery that was not attempted (shutdown), without counting an attempt."""
        await self.db.execute(
            f"""UPDATE deliveries SET state = 'queued', {self._one_attempt_back}, updated_at = ?
                WHERE id = ? AND state = 'sending'""",
            (at, delivery_id),
        )

    async def postpone(self, delivery_id: int, next_attempt_at: float) -> None:
        """Not tried (something it needs is not ready): back to the queue without spending an attempt."""
        await self.db.execute(
            f"""UPDATE deliveries SET state = 'queued', {self._one_attempt_back}, next_attempt_at = ?
                WHERE id = ? AND state = 'sending'""",
            (next_attempt_at, delivery_id),
        )

    async def next_due_at(self) -> float | None:
        row = await self.db.fetchone("SELECT MIN(next_attempt_at) FROM deliveries WHERE state = 'queued'")
        return row[0]

    async def any_open(self, letter_id: int) -> bool:
        """Whether the letter still has deliveries to make (asked after every send: an index lookup)."""
        row = await self.db.fetchone(
            "SELECT 1 FROM deliveries WHERE letter_id = ? AND state IN ('queued', 'sending') LIMIT 1", (letter_id,)
        )
        return row is not None

    async def progress(self, letter_id: int) -> Progress:
        rows = await self.db.fetchall(
            "SELECT state, COUNT(*) FROM deliveries WHERE letter_id = ? GROUP BY state", (letter_id,)
        )
        counts = {row[0]: row[1] for row in rows}
        return Progress(
            total=sum(counts.values()),
            sent=counts.get("sent", 0),
            dropped=counts.get("dropped", 0),
            failed=counts.get("failed", 0),
        )

    async def problems(self, letter_id: int) -> list[tuple[str, Subscription, str]]:
        """(state, subscription, reason) of every delivery of this letter that did not go out."""
        rows = await self.db.fetchall(
            """SELECT d.state AS delivery_state, COALESCE(d.last_error, '') AS reason, s.*
               FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
               WHERE d.letter_id = ? AND d.state IN ('failed', 'dropped') ORDER BY d.id""",
            (letter_id,),
        )
        return [(row["delivery_state"], subscription_from(row), row["reason"]) for row in rows]

    async def sent_total(self) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")
        return row[0]

    async def states_of(self, letter_id: int) -> list[tuple[str, float]]:
        """(state, next attempt at) of each of the letter's deliveries, in the order they were queued."""
        rows = await self.db.fetchall(
            "SELECT state, next_attempt_at FROM deliveries WHERE letter_id = ? ORDER BY id", (letter_id,)
        )
        return [(row["state"], row["next_attempt_at"]) for row in rows]

    async def sent_times(self, letter_id: int) -> SentTimes:
        """A broadcast's timing, for a report of how long it took; computed in the database, as a broadcast to
        100,000 chats is as many rows."""
        sent = await self.db.fetchone(
            """SELECT MIN(updated_at), MAX(updated_at), SUM(CASE WHEN attempts > 1 THEN 1 ELSE 0 END)
               FROM deliveries WHERE letter_id = ? AND state = 'sent'""",
            (letter_id,),
        )
        by_kind = await self.db.fetchall(
            """SELECT s.kind, MAX(d.updated_at) FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
               WHERE d.letter_id = ? AND d.state = 'sent' GROUP BY s.kind ORDER BY 2""",
            (letter_id,),
        )
        reasons = await self.db.fetchall(
            """SELECT s.kind || ': ' || COALESCE(d.last_error, '?'), COUNT(*) FROM deliveries d
               JOIN subscriptions s ON s.id = d.subscription_id
               WHERE d.letter_id = ? AND d.attempts > 1 GROUP BY 1 ORDER BY 2 DESC""",
            (letter_id,),
        )
        assert sent is not None  # an aggregate without GROUP BY always has its one row
        return SentTimes(sent[0], sent[1], sent[2] or 0, {row[0]: row[1] for row in by_kind},
                         {row[0]: row[1] for row in reasons})


def _job(row: Row) -> DeliveryJob:
    return DeliveryJob(
        id=row["id"],
        letter_id=row["letter_id"],
        subscription_id=row["subscription_id"],
        platform=row["platform"],
        chat_id=row["chat_id"],
        kind=row["kind"],
        language=row["language"],
        attempts=row["attempts"] + 1,
        parts_sent=row["parts_sent"],
        remote_ids=tuple(filter(None, row["remote_ids"].split(","))),
    )

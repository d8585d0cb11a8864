"""The outbox of everything the bot says but broadcasts: replies (receipts, notices, answers, reports) and cards.

A row is written in the transaction of the change that causes it and deleted once sent or given up, so that
nothing a writer was told outlives its sending. States: queued → sending → (deleted); a retry goes back to queued
with a later `next_attempt_at`. A row still `sending` at start-up was in flight when the process died: it is
queued again. Broadcasts are the deliveries table (storage/deliveries.py): one worker claims from both.

A card row names the card part only; the worker renders it from the letter as it is then. Asking for a card again
while its row waits changes nothing but its version, so a card shows its newest state once, however many changes
came (card edits coalesce).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from storage.connection import Connection, Row

REPLIES, CARDS = 0, 1


@dataclass(frozen=True)
class CardPart:
    letter_id: int
    platform: str
    chat_id: str
    part: int


@dataclass(frozen=True)
class OutboxJob:
    id: int
    lane: int
    platform: str
    chat_id: str
    chat_kind: str
    message: str | None  # a reply, as the handlers serialised it
    card: CardPart | None
    version: int
    attempts: int  # this one included
    created_at: float

    @property
    def key(self) -> str:
        """Stable across retries and restarts, new for each row and each newer state of a card (Matrix's
        transaction id: a retried send is the same event, a new message never taken for an old one)."""
        return f"outbox {self.id} {self.version} {self.created_at!r}"


class OutboxRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db
        self._one_attempt_back = f"attempts = {db.dialect.greatest('attempts - 1', '0')}"

    async def add_message(self, platform: str, chat_id: str, chat_kind: str, message: str, at: float) -> int:
        added = await self.db.execute(
            """INSERT INTO outbox (lane, platform, chat_id, chat_kind, message, next_attempt_at, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (REPLIES, platform, chat_id, chat_kind, message, at, at),
        )
        assert added.last_id is not None
        return added.last_id

    async def want_cards(self, parts: Iterable[CardPart], at: float) -> None:
        """Each card part is to show its letter's newest state: a new row, or a waiting one whose version rises.

        A row in flight is sent again once it is done (its version no longer matches); a waiting row keeps its
        place, and a row waiting out a failure is brought forward, since there is something new to show.
        """
        await self.db.executemany(
            """INSERT INTO outbox (lane, platform, chat_id, chat_kind, letter_id, part, next_attempt_at, created_at)
               VALUES (?, ?, ?, 'group', ?, ?, ?, ?)
               ON CONFLICT (letter_id, platform, chat_id, part) WHERE letter_id IS NOT NULL DO UPDATE SET
                   version = version + 1,
                   next_attempt_at = CASE WHEN excluded.next_attempt_at < next_attempt_at
                                          THEN excluded.next_attempt_at ELSE next_attempt_at END""",
            [(CARDS, card.platform, card.chat_id, card.letter_id, card.part, at, at) for card in parts],
        )

    async def renew_in_flight(self, letter_id: int) -> None:
        """The letter changed while one of its card rows was in flight (its card being posted, say): that row is
        sent again once done, with the letter as it is now (a withdrawn letter's new card is scrubbed at once)."""
        await self.db.execute(
            "UPDATE outbox SET version = version + 1 WHERE letter_id = ? AND state = 'sending'", (letter_id,)
        )

    async def recover_in_flight(self, at: float) -> int:
        recovered = await self.db.execute("UPDATE outbox SET state = 'queued' WHERE state = 'sending'")
        return recovered.changed

    async def claim(self, lane: int, now: float, limit: int, busy_chats: frozenset[tuple[str, str]]) -> list[
        OutboxJob
    ]:
        """Up to `limit` due rows of the lane, oldest first, marked as sending; at most one per chat.

        A chat's rows go out in the order they were written: a row behind one that is waiting out a failure, or
        is in flight, waits too (a receipt never comes after the decision notice of the same letter).
        """
        async with self.db.transaction() as db:
            firsts = await db.fetchall(
                """SELECT * FROM outbox
                   WHERE id IN (SELECT MIN(id) FROM outbox WHERE lane = ? GROUP BY platform, chat_id) ORDER BY id""",
                (lane,),
            )
            jobs = [_job(row) for row in firsts
                    if row["state"] == "queued" and row["next_attempt_at"] <= now
                    and (row["platform"], row["chat_id"]) not in busy_chats][:limit]
            await db.executemany(
                "UPDATE outbox SET state = 'sending', attempts = attempts + 1 WHERE id = ?", [(job.id,) for job in jobs]
            )
        return jobs

    async def done(self, job: OutboxJob) -> bool:
        """Sent (or given up): the row goes, unless a newer state of its card was asked for meanwhile; then it is
        queued again, to be sent at once. True when the row is gone."""
        async with self.db.transaction() as db:
            gone = await db.execute("DELETE FROM outbox WHERE id = ? AND version = ?", (job.id, job.version))
            if gone.changed:
                return True
            await db.execute("UPDATE outbox SET state = 'queued', attempts = 0, last_error = NULL WHERE id = ?",
                             (job.id,))
        return False

    async def reschedule(self, job_id: int, next_attempt_at: float, error: str) -> None:
        await self.db.execute(
            """UPDATE outbox SET state = 'queued', next_attempt_at = ?, last_error = ?
               WHERE id = ? AND state = 'sending'""",
            (next_attempt_at, error, job_id),
        )

    async def release(self, job_id: int, next_attempt_at: float | None = None) -> None:
        """Back to the queue without spending an attempt (a shutdown, or something the row needs is not ready)."""
        await self.db.execute(
            f"""UPDATE outbox SET state = 'queued', {self._one_attempt_back},
                    next_attempt_at = COALESCE(?, next_attempt_at)
                WHERE id = ? AND state = 'sending'""",
            (next_attempt_at, job_id),
        )

    async def next_due_after(self, now: float) -> float | None:
        """When a row waiting out a failure falls due (rows due already wait for their chat's send in flight)."""
        row = await self.db.fetchone(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'queued' AND next_attempt_at > ?", (now,)
        )
        assert row is not None
        return row[0]

    async def waiting(self) -> list[tuple[int, str, str]]:
        """(lane, platform, chat id) of every row not yet sent, oldest first: what a test or an operator asks."""
        rows = await self.db.fetchall("SELECT lane, platform, chat_id FROM outbox ORDER BY id")
        return [(row["lane"], row["platform"], row["chat_id"]) for row in rows]

    async def forget_chat(self, platform: str, chat_id: str) -> int:
        """Drop what is still to be said into a chat (a writer's, on `forget`)."""
        dropped = await self.db.execute("DELETE FROM outbox WHERE platform = ? AND chat_id = ?", (platform, chat_id))
        return dropped.changed


def _job(row: Row) -> OutboxJob:
    card = None
    if row["letter_id"] is not None:
        card = CardPart(row["letter_id"], row["platform"], row["chat_id"], row["part"])
    return OutboxJob(
        id=row["id"],
        lane=row["lane"],
        platform=row["platform"],
        chat_id=row["chat_id"],
        chat_kind=row["chat_kind"],
        message=row["message"],
        card=card,
        version=row["version"],
        attempts=row["attempts"] + 1,
        created_at=row["created_at"],
    )

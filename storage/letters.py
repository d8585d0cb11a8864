"""Letters, the platform messages they are made of, and the moderators' decisions on them."""

from __future__ import annotations

import json
from dataclasses import dataclass

from storage.db import Database

PENDING, APPROVED, REJECTED, WITHDRAWN = "pending", "approved", "rejected", "withdrawn"


@dataclass(frozen=True)
class Letter:
    id: int
    sender_id: int
    status: str
    language: str
    text: str
    length: int  # as the platform counts it, summed over parts
    parts: int
    created_at: float
    last_part_at: float
    last_part_length: int
    announced_at: float | None
    decided_at: float | None
    edited: bool = False  # a moderator replaced the text the sender wrote
    text_removed: bool = False  # rejected or withdrawn, and its text deleted
    reported_at: float | None = None


@dataclass(frozen=True)
class Decision:
    letter_id: int
    action: str
    platform: str
    moderator_id: str
    moderator: str
    reason: str | None
    decided_at: float


@dataclass(frozen=True)
class NewPart:
    platform: str
    chat_id: str
    message_id: str
    text: str
    length: int
    received_at: float


def join_parts(texts: list[str]) -> str:
    """Rejoin a client-split text; the client dropped the whitespace it cut at, so put some back.

    After a sentence's end the cut was most likely a line break; anywhere else, a space between words.
    """
    joined = texts[0]
    for text in texts[1:]:
        if joined[-1:].isspace() or text[:1].isspace():
            separator = ""
        elif joined.rstrip("\"'»”)").endswith((".", "!", "?", "…", "。", "！", "？")):
            separator = "\n"
        else:
            separator = " "
        joined += separator + text
    return joined


_LETTER_SQL = """
    SELECT l.*, COUNT(p.seq) AS parts, SUM(p.length) AS length, MAX(p.received_at) AS last_part_at,
           (SELECT length FROM letter_parts WHERE letter_id = l.id ORDER BY seq DESC LIMIT 1) AS last_part_length,
           (SELECT json_group_array(text) FROM (SELECT text FROM letter_parts WHERE letter_id = l.id ORDER BY seq))
               AS texts
    FROM letters l JOIN letter_parts p ON p.letter_id = l.id
"""


def _letter(row) -> Letter:
    edited = row["edited_text"] is not None
    return Letter(
        id=row["id"],
        sender_id=row["sender_id"],
        status=row["status"],
        language=row["language"],
        text=row["edited_text"] if edited else join_parts(json.loads(row["texts"])),
        length=row["edited_length"] if edited else row["length"],
        parts=row["parts"],
        created_at=row["created_at"],
        last_part_at=row["last_part_at"],
        last_part_length=row["last_part_length"],
        announced_at=row["announced_at"],
        decided_at=row["decided_at"],
        edited=edited,
        text_removed=row["text_removed_at"] is not None,
        reported_at=row["reported_at"],
    )


class LetterRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_part(
        self, sender_id: int, part: NewPart, join_window: float, join_threshold: int
    ) -> tuple[Letter, bool] | None:
        """Store one incoming message as a new letter, or as the next part of the sender's open letter.

        A message joins the sender's newest letter when that letter has not been announced yet, its last
        part came at most `join_window` seconds earlier and was at least `join_threshold` long (the client
        cut it there). Returns (letter, is_new), or None when this platform message was stored before.
        """
        async with self.db.transaction() as db:
            async with db.execute(
                "SELECT 1 FROM letter_parts WHERE platform = ? AND chat_id = ? AND message_id = ?",
                (part.platform, part.chat_id, part.message_id),
            ) as cursor:
                if await cursor.fetchone():
                    return None
            letter_id, seq = await self._open_letter(db, sender_id, part, join_window, join_threshold)
            is_new = letter_id is None
            if is_new:
                async with db.execute(
                    "INSERT INTO letters (sender_id, created_at) VALUES (?, ?)", (sender_id, part.received_at)
                ) as cursor:
                    letter_id, seq = cursor.lastrowid, 1
            await db.execute(
                """INSERT INTO letter_parts (letter_id, seq, platform, chat_id, message_id, text, length, received_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (letter_id, seq, part.platform, part.chat_id, part.message_id, part.text, part.length,
                 part.received_at),
            )
        letter = await self.get(letter_id)
        assert letter is not None
        return letter, is_new

    async def _open_letter(
        self, db, sender_id: int, part: NewPart, join_window: float, join_threshold: int
    ) -> tuple[int | None, int]:
        async with db.execute(
            """SELECT l.id, p.seq, p.length, p.received_at FROM letters l
               JOIN letter_parts p ON p.letter_id = l.id
               WHERE l.sender_id = ? AND l.status = 'pending' AND l.announced_at IS NULL
               ORDER BY l.id DESC, p.seq DESC LIMIT 1""",
            (sender_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None, 0
        fresh = part.received_at - row["received_at"] <= join_window
        if fresh and row["length"] >= join_threshold:
            return row["id"], row["seq"] + 1
        return None, 0

    async def get(self, letter_id: int) -> Letter | None:
        row = await self.db.fetchone(_LETTER_SQL + " WHERE l.id = ? GROUP BY l.id", (letter_id,))
        return _letter(row) if row else None

    async def unannounced(self) -> list[Letter]:
        rows = await self.db.fetchall(_LETTER_SQL + " WHERE l.announced_at IS NULL GROUP BY l.id ORDER BY l.id")
        return [_letter(row) for row in rows]

    async def mark_announced(self, letter_id: int, at: float) -> bool:
        """True the first time only, so a receipt is sent once even if two timers race."""
        changed = await self.db.execute(
            "UPDATE letters SET announced_at = ? WHERE id = ? AND announced_at IS NULL", (at, letter_id)
        )
        return changed == 1

    async def pending(self, limit: int = 20) -> list[Letter]:
        rows = await self.db.fetchall(
            _LETTER_SQL + " WHERE l.status = 'pending' AND l.announced_at IS NOT NULL GROUP BY l.id"
            " ORDER BY l.id LIMIT ?",
            (limit,),
        )
        return [_letter(row) for row in rows]

    async def pending_of(self, sender_id: int) -> list[int]:
        rows = await self.db.fetchall(
            "SELECT id FROM letters WHERE sender_id = ? AND status = 'pending' ORDER BY id", (sender_id,)
        )
        return [row["id"] for row in rows]

    async def waiting_from(self, sender_id: int) -> int:
        """Letters of this sender still waiting for a decision."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM letters WHERE sender_id = ? AND status = 'pending'", (sender_id,)
        )
        return row[0]

    async def count_by_sender(self, sender_id: int, up_to_letter: int) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM letters WHERE sender_id = ? AND id <= ?", (sender_id, up_to_letter)
        )
        return row[0]

    async def counts_by_status(self) -> dict[str, int]:
        rows = await self.db.fetchall("SELECT status, COUNT(*) FROM letters GROUP BY status")
        return {row[0]: row[1] for row in rows}

    async def set_language(self, letter_id: int, language: str) -> bool:
        return await self.db.execute("UPDATE letters SET language = ? WHERE id = ?", (language, letter_id)) == 1

    async def decide(self, letter_id: int, decision: Decision) -> bool:
        """Approve, reject or withdraw a pending letter; approving queues a delivery for every active subscription.

        Returns False when the letter was not pending any more: the first decision wins, atomically.
        """
        status = {"approve": APPROVED, "reject": REJECTED, "withdraw": WITHDRAWN}[decision.action]
        async with self.db.transaction() as db:
            async with db.execute(
                "UPDATE letters SET status = ?, decided_at = ? WHERE id = ? AND status = 'pending'",
                (status, decision.decided_at, letter_id),
            ) as cursor:
                if cursor.rowcount != 1:
                    return False
            await _insert_decision(db, decision)
            if status == APPROVED:
                await db.execute(
                    """INSERT OR IGNORE INTO deliveries (letter_id, subscription_id, next_attempt_at, updated_at)
                       SELECT ?, id, ?, ? FROM subscriptions WHERE active = 1 ORDER BY id""",
                    (letter_id, decision.decided_at, decision.decided_at),
                )
        return True

    async def edit_text(self, letter_id: int, text: str, length: int, decision: Decision) -> bool:
        """A moderator's new text for a pending letter (a name, a place or a date taken out); False once decided."""
        async with self.db.transaction() as db:
            async with db.execute(
                "UPDATE letters SET edited_text = ?, edited_length = ? WHERE id = ? AND status = 'pending'",
                (text, length, letter_id),
            ) as cursor:
                if cursor.rowcount != 1:
                    return False
            await _insert_decision(db, decision)
        return True

    async def history(self, letter_id: int) -> list[Decision]:
        """Everything done to the letter after it arrived, oldest first."""
        rows = await self.db.fetchall("SELECT * FROM decisions WHERE letter_id = ? ORDER BY id", (letter_id,))
        return [_decision(row) for row in rows]

    async def latest(self, letter_id: int, action: str) -> Decision | None:
        row = await self.db.fetchone(
            "SELECT * FROM decisions WHERE letter_id = ? AND action = ? ORDER BY id DESC LIMIT 1", (letter_id, action)
        )
        return _decision(row) if row else None

    async def record(self, decision: Decision) -> None:
        """An audit entry for an action that is not a status change (ban, unban, language)."""
        async with self.db.transaction() as db:
            await _insert_decision(db, decision)

    async def deciding(self, letter_id: int) -> Decision | None:
        """The decision that settled this letter's status, if any."""
        row = await self.db.fetchone(
            """SELECT * FROM decisions WHERE letter_id = ? AND action IN ('approve', 'reject', 'withdraw')
               ORDER BY id LIMIT 1""",
            (letter_id,),
        )
        return _decision(row) if row else None

    async def unreported(self) -> list[int]:
        """Approved letters whose broadcast report has not gone out."""
        rows = await self.db.fetchall("SELECT id FROM letters WHERE status = 'approved' AND reported_at IS NULL")
        return [row["id"] for row in rows]

    async def mark_reported(self, letter_id: int, at: float) -> bool:
        changed = await self.db.execute(
            "UPDATE letters SET reported_at = ? WHERE id = ? AND reported_at IS NULL", (at, letter_id)
        )
        return changed == 1


def _decision(row) -> Decision:
    return Decision(
        row["letter_id"], row["action"], row["platform"], row["moderator_id"], row["moderator"], row["reason"],
        row["decided_at"],
    )


async def _insert_decision(db, decision: Decision) -> None:
    await db.execute(
        """INSERT INTO decisions (letter_id, action, platform, moderator_id, moderator, reason, decided_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        (decision.letter_id, decision.action, decision.platform, decision.moderator_id, decision.moderator,
         decision.reason, decision.decided_at),
    )

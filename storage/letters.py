"""Letters, the platform messages they are made of, and the moderators' decisions on them."""

from __future__ import annotations

import json
from dataclasses import dataclass

from storage.connection import Connection, Dialect, Row, Statements

PENDING, APPROVED, REJECTED, WITHDRAWN = "pending", "approved", "rejected", "withdrawn"
SENDER_EDIT = "sender_edit"  # the history's name for a supporter's edit of their own pending letter


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
    media_group: str | None = None  # an album's id: its messages join one letter


def join_parts(texts: list[str]) -> str:
    """Rejoin a client-split text; the client dropped the whitespace it cut at, so put some back.

    After a sentence's end the cut was most likely a line break; anywhere else, a space between words. Empty
    parts (an album's pictures without a caption) add nothing.
    """
    texts = [text for text in texts if text] or [""]
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


def _letter_sql(dialect: Dialect) -> str:
    """A letter with its parts' texts, in order, as one JSON array: one row per letter, whatever its parts."""
    return f"""
        SELECT l.*,
               (SELECT {dialect.json_array("text")}
                FROM (SELECT text FROM letter_parts WHERE letter_id = l.id ORDER BY seq)) AS texts
        FROM letters l
    """


def _letter(row: Row) -> Letter:
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


@dataclass(frozen=True)
class Growing:
    """What intake needs to know of a letter, without its text: read and written in O(1) per part."""

    id: int
    parts: int
    length: int
    last_part_at: float
    last_part_length: int
    media_group: str | None = None  # the album its last part belongs to


@dataclass(frozen=True)
class PartOf:
    """The letter a platform message is part of (found again when its sender edits or deletes it)."""

    letter_id: int
    sender_id: int
    seq: int
    status: str
    announced: bool
    length: int  # the part's
    letter_length: int


class LetterRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db
        self._letter_sql = _letter_sql(db.dialect)

    async def has_part(self, platform: str, chat_id: str, message_id: str) -> bool:
        """This platform message was stored before (a replayed update)."""
        row = await self.db.fetchone(
            "SELECT 1 FROM letter_parts WHERE platform = ? AND chat_id = ? AND message_id = ?",
            (platform, chat_id, message_id),
        )
        return row is not None

    async def growing(self, sender_id: int) -> Growing | None:
        """The sender's newest letter if it has not been announced: a new part may still join it."""
        row = await self.db.fetchone(
            """SELECT id, parts, length, last_part_at, last_part_length,
                      (SELECT media_group FROM letter_parts p WHERE p.letter_id = letters.id AND p.seq = letters.parts)
                      AS media_group
               FROM letters
               WHERE sender_id = ? AND status = 'pending' AND announced_at IS NULL ORDER BY id DESC LIMIT 1""",
            (sender_id,),
        )
        if row is None:
            return None
        return Growing(row["id"], row["parts"], row["length"], row["last_part_at"], row["last_part_length"],
                       row["media_group"])

    async def start_letter(self, sender_id: int, part: NewPart) -> Growing:
        """A new letter made of this one message."""
        async with self.db.transaction() as db:
            inserted = await db.execute(
                """INSERT INTO letters (sender_id, created_at, parts, length, last_part_at, last_part_length)
                   VALUES (?, ?, 1, ?, ?, ?)""",
                (sender_id, part.received_at, part.length, part.received_at, part.length),
            )
            letter_id = inserted.last_id
            assert letter_id is not None
            await _insert_part(db, letter_id, 1, part)
        return Growing(letter_id, 1, part.length, part.received_at, part.length, part.media_group)

    async def add_part(self, letter: Growing, part: NewPart) -> Growing:
        """The next part of a letter that is still growing; touches that one letter row and one new part row."""
        seq = letter.parts + 1
        async with self.db.transaction() as db:
            await _insert_part(db, letter.id, seq, part)
            await db.execute(
                """UPDATE letters SET parts = ?, length = length + ?, last_part_at = ?, last_part_length = ?
                   WHERE id = ?""",
                (seq, part.length, part.received_at, part.length, letter.id),
            )
        return Growing(letter.id, seq, letter.length + part.length, part.received_at, part.length, part.media_group)

    async def part_of(self, platform: str, chat_id: str, message_id: str) -> PartOf | None:
        row = await self.db.fetchone(
            """SELECT p.letter_id, l.sender_id, p.seq, p.length, l.status, l.announced_at, l.length AS letter_length
               FROM letter_parts p
               JOIN letters l ON l.id = p.letter_id WHERE p.platform = ? AND p.chat_id = ? AND p.message_id = ?""",
            (platform, chat_id, message_id),
        )
        if row is None:
            return None
        return PartOf(row["letter_id"], row["sender_id"], row["seq"], row["status"], row["announced_at"] is not None,
                      row["length"], row["letter_length"])

    async def replace_part(self, part: PartOf, text: str, length: int, decision: Decision) -> bool:
        """The sender's own edit of one part of a pending letter; a moderator's earlier edit gives way to it (it
        was of the older text). False once the letter is decided."""
        async with self.db.transaction() as db:
            replaced = await db.execute(
                """UPDATE letters SET length = length + ?, edited_text = NULL, edited_length = NULL,
                       last_part_length = CASE WHEN parts = ? THEN ? ELSE last_part_length END
                   WHERE id = ? AND status = 'pending'""",
                (length - part.length, part.seq, length, part.letter_id),
            )
            if replaced.changed != 1:
                return False
            await db.execute(
                "UPDATE letter_parts SET text = ?, length = ? WHERE letter_id = ? AND seq = ?",
                (text, length, part.letter_id, part.seq),
            )
            await _insert_decision(db, decision)
        return True

    async def letters_since(self, sender_id: int, since: float) -> int:
        """Letters this sender began since then (a client-split letter counts once)."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM letters WHERE sender_id = ? AND created_at > ?", (sender_id, since)
        )
        return row[0]

    async def get(self, letter_id: int) -> Letter | None:
        row = await self.db.fetchone(self._letter_sql + " WHERE l.id = ?", (letter_id,))
        return _letter(row) if row else None

    async def unannounced(self) -> list[Letter]:
        rows = await self.db.fetchall(self._letter_sql + " WHERE l.announced_at IS NULL ORDER BY l.id")
        return [_letter(row) for row in rows]

    async def mark_announced(self, letter_id: int, at: float) -> bool:
        """True the first time only, so a receipt is sent once even if two timers race."""
        announced = await self.db.execute(
            "UPDATE letters SET announced_at = ? WHERE id = ? AND announced_at IS NULL", (at, letter_id)
        )
        return announced.changed == 1

    async def pending(self, limit: int = 20) -> list[Letter]:
        rows = await self.db.fetchall(
            self._letter_sql + " WHERE l.status = 'pending' AND l.announced_at IS NOT NULL"
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
        updated = await self.db.execute("UPDATE letters SET language = ? WHERE id = ?", (language, letter_id))
        return updated.changed == 1

    async def decide(self, letter_id: int, decision: Decision) -> bool:
        """Approve, reject or withdraw a pending letter (the broadcast queue follows the decision's event).

        Returns False when the letter was not pending any more: the first decision wins, atomically.
        """
        status = {"approve": APPROVED, "reject": REJECTED, "withdraw": WITHDRAWN}[decision.action]
        async with self.db.transaction() as db:
            decided = await db.execute(
                "UPDATE letters SET status = ?, decided_at = ? WHERE id = ? AND status = 'pending'",
                (status, decision.decided_at, letter_id),
            )
            if decided.changed != 1:
                return False
            await _insert_decision(db, decision)
        return True

    async def edit_text(self, letter_id: int, text: str, length: int, decision: Decision) -> bool:
        """A moderator's new text for a pending letter (a name, a place or a date taken out); False once decided."""
        async with self.db.transaction() as db:
            edited = await db.execute(
                "UPDATE letters SET edited_text = ?, edited_length = ? WHERE id = ? AND status = 'pending'",
                (text, length, letter_id),
            )
            if edited.changed != 1:
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
        reported = await self.db.execute(
            "UPDATE letters SET reported_at = ? WHERE id = ? AND reported_at IS NULL", (at, letter_id)
        )
        return reported.changed == 1

    async def part_ids(self, letter_id: int) -> list[tuple[str | None, str | None]]:
        """(chat id, message id) of each part of the letter, in order; both None once retention or `forget` cut
        the link to the account."""
        rows = await self.db.fetchall(
            "SELECT chat_id, message_id FROM letter_parts WHERE letter_id = ? ORDER BY seq", (letter_id,)
        )
        return [(row["chat_id"], row["message_id"]) for row in rows]


def _decision(row: Row) -> Decision:
    return Decision(
        row["letter_id"], row["action"], row["platform"], row["moderator_id"], row["moderator"], row["reason"],
        row["decided_at"],
    )


async def _insert_decision(db: Statements, decision: Decision) -> None:
    await db.execute(
        """INSERT INTO decisions (letter_id, action, platform, moderator_id, moderator, reason, decided_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        (decision.letter_id, decision.action, decision.platform, decision.moderator_id, decision.moderator,
         decision.reason, decision.decided_at),
    )


async def _insert_part(db: Statements, letter_id: int, seq: int, part: NewPart) -> None:
    await db.execute(
        """INSERT INTO letter_parts
               (letter_id, seq, platform, chat_id, message_id, text, length, received_at, media_group)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (letter_id, seq, part.platform, part.chat_id, part.message_id, part.text, part.length, part.received_at,
         part.media_group),
    )

"""Cutting the link between letters and the accounts that wrote them: retention and `forget`.

What is cut: the `accounts` row (platform user id, private chat, language), the chat and message ids of the
letter's parts, and, for rejected and withdrawn letters, their text and translations. What stays: the letter as
"sender 7" wrote it when it was published, and bans as keyed hashes. Each batch is one short transaction, so a
purge of many letters lets intake in between batches.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.connection import Connection, Statements

# Small enough that a letter arriving meanwhile waits for one batch only (~10 ms), not for the whole purge.
BATCH = 100
_REMOVABLE = ("rejected", "withdrawn")


@dataclass(frozen=True)
class Forgotten:
    letters: int  # letters of the account, now unlinked
    subscriptions: int  # the account's personal subscription, if it had one


class PrivacyRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db

    async def unlink_decided(self, decided_before: float, now: float, batch: int = BATCH) -> int:
        """Unlink up to `batch` letters decided at or before `decided_before`; returns how many (0: done)."""
        async with self.db.transaction() as db:
            rows = await db.fetchall(
                """SELECT id, sender_id, status FROM letters
                   WHERE unlinked_at IS NULL AND status != 'pending' AND decided_at <= ?
                   ORDER BY decided_at LIMIT ?""",
                (decided_before, batch),
            )
            if not rows:
                return 0
            await _unlink(db, [(row["id"], row["status"]) for row in rows], now)
            await _detach_accounts(db, sorted({row["sender_id"] for row in rows}), decided_before, now)
        return len(rows)

    async def drop_idle_accounts(self, seen_before: float) -> int:
        """Accounts with no letter still linked to them and no contact since `seen_before` (refused messages)."""
        dropped = await self.db.execute(
            """DELETE FROM accounts WHERE last_seen_at <= ? AND NOT EXISTS (
                   SELECT 1 FROM letters WHERE letters.sender_id = accounts.sender_id AND unlinked_at IS NULL)""",
            (seen_before,),
        )
        return dropped.changed

    async def drop_replay_guards(self, seen_before: float, batch: int = BATCH * 10) -> int:
        row_id = self.db.dialect.row_id
        dropped = await self.db.execute(
            f"""DELETE FROM seen_events
                WHERE {row_id} IN (SELECT {row_id} FROM seen_events WHERE seen_at <= ? LIMIT ?)""",
            (seen_before, batch),
        )
        return dropped.changed

    async def forget(self, platform: str, user_id: str, now: float) -> Forgotten:
        """Every trace of the account: its link to all its letters, their parts' ids, the texts of its rejected
        and withdrawn letters, its personal subscription. Pending letters must be withdrawn before this."""
        async with self.db.transaction() as db:
            account = await db.fetchone(
                "SELECT sender_id, chat_id FROM accounts WHERE platform = ? AND user_id = ?", (platform, user_id)
            )
            letters: list[tuple[int, str]] = []
            if account is not None:
                rows = await db.fetchall("SELECT id, status FROM letters WHERE sender_id = ?", (account["sender_id"],))
                letters = [(row["id"], row["status"]) for row in rows]
                await _unlink(db, letters, now)
                await db.execute("DELETE FROM accounts WHERE sender_id = ?", (account["sender_id"],))
            # A private chat's id is the person (Telegram: their user id; Matrix: their direct room).
            chats = {user_id} | ({account["chat_id"]} if account is not None else set())
            subscriptions = await _drop_personal_subscriptions(db, platform, chats)
        return Forgotten(letters=len(letters), subscriptions=subscriptions)


async def _unlink(db: Statements, letters: list[tuple[int, str]], now: float) -> None:
    """A few set-wide statements per batch rather than a few per letter."""
    ids = [letter_id for letter_id, _status in letters]
    removable = [letter_id for letter_id, status in letters if status in _REMOVABLE]
    if not ids:
        return
    await db.execute(f"UPDATE letter_parts SET chat_id = NULL, message_id = NULL WHERE letter_id IN ({_marks(ids)})",
                     ids)
    await db.execute(f"UPDATE letters SET unlinked_at = ? WHERE unlinked_at IS NULL AND id IN ({_marks(ids)})",
                     [now, *ids])
    if removable:
        marks = _marks(removable)
        await db.execute(f"UPDATE letter_parts SET text = '' WHERE letter_id IN ({marks})", removable)
        await db.execute(f"UPDATE letters SET edited_text = NULL, edited_length = NULL, text_removed_at = ? "
                         f"WHERE id IN ({marks})", [now, *removable])
        await db.execute(f"DELETE FROM translations WHERE letter_id IN ({marks})", removable)
        await db.execute(f"DELETE FROM letter_media WHERE letter_id IN ({marks})", removable)


def _marks(values: list[int]) -> str:
    return ", ".join("?" * len(values))


async def _detach_accounts(db: Statements, sender_ids: list[int], decided_before: float, now: float) -> None:
    """The accounts behind `sender_ids` no longer belong to the letters just unlinked.

    An account with letters that stay linked (pending, or decided after `decided_before`) moves with them to a
    new pseudonym; the old one keeps the unlinked letters, and those a later batch of this purge unlinks, and from
    now on names nobody. Every other account is deleted: one statement for the batch, since that is the common case.
    """
    live = "unlinked_at IS NULL AND (status = 'pending' OR decided_at > ?)"
    rows = await db.fetchall(
        f"""SELECT sender_id FROM accounts WHERE sender_id IN ({_marks(sender_ids)}) AND EXISTS (
                SELECT 1 FROM letters WHERE letters.sender_id = accounts.sender_id AND {live})""",
        [*sender_ids, decided_before],
    )
    moving = [row["sender_id"] for row in rows]
    leaving = sorted(set(sender_ids) - set(moving))
    if leaving:
        await db.execute(f"DELETE FROM accounts WHERE sender_id IN ({_marks(leaving)})", leaving)
    for old_id in moving:
        new_id = (await db.execute("INSERT INTO senders (created_at) VALUES (?)", (now,))).last_id
        await db.execute(f"UPDATE letters SET sender_id = ? WHERE sender_id = ? AND {live}",
                         (new_id, old_id, decided_before))
        await db.execute("UPDATE accounts SET sender_id = ? WHERE sender_id = ?", (new_id, old_id))


async def _drop_personal_subscriptions(db: Statements, platform: str, chats: set[str]) -> int:
    dropped = 0
    for chat_id in sorted(chats):
        await db.execute("DELETE FROM subscription_requests WHERE platform = ? AND chat_id = ?", (platform, chat_id))
        row = await db.fetchone(
            "SELECT id FROM subscriptions WHERE platform = ? AND chat_id = ? AND kind = 'private'", (platform, chat_id)
        )
        if row is None:
            continue
        await db.execute("DELETE FROM deliveries WHERE subscription_id = ?", (row["id"],))
        await db.execute("DELETE FROM subscriptions WHERE id = ?", (row["id"],))
        dropped += 1
    return dropped

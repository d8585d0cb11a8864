"""Moderation cards: which platform messages show which letter, so a decision can edit all of them."""

from __future__ import annotations

from dataclasses import dataclass

from storage.connection import Connection


@dataclass(frozen=True)
class Card:
    letter_id: int
    platform: str
    chat_id: str
    message_id: str
    part: int


class CardRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db
        # A card posted again for the same part in the same chat takes the place of the one before.
        self._add = db.dialect.insert_or_replace(
            "cards", ("letter_id", "platform", "chat_id", "message_id", "part"),
            key=("letter_id", "platform", "chat_id", "part"),
        )

    async def add(self, card: Card) -> None:
        await self.db.execute(
            self._add,
            (card.letter_id, card.platform, card.chat_id, card.message_id, card.part),
        )

    async def for_letter(self, letter_id: int) -> list[Card]:
        rows = await self.db.fetchall(
            "SELECT * FROM cards WHERE letter_id = ? ORDER BY platform, chat_id, part", (letter_id,)
        )
        return [Card(*(row[key] for key in Card.__dataclass_fields__)) for row in rows]

    async def find_part(self, letter_id: int, platform: str, chat_id: str, part: int) -> Card | None:
        row = await self.db.fetchone(
            "SELECT * FROM cards WHERE letter_id = ? AND platform = ? AND chat_id = ? AND part = ?",
            (letter_id, platform, chat_id, part),
        )
        return Card(*(row[key] for key in Card.__dataclass_fields__)) if row else None

    async def find(self, platform: str, chat_id: str, message_id: str) -> Card | None:
        row = await self.db.fetchone(
            "SELECT * FROM cards WHERE platform = ? AND chat_id = ? AND message_id = ?",
            (platform, chat_id, message_id),
        )
        return Card(*(row[key] for key in Card.__dataclass_fields__)) if row else None

"""Stored translations: one per letter and language, reused by every subscription in that language."""

from __future__ import annotations

from storage.connection import Connection


class TranslationRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db

    async def get(self, letter_id: int, language: str) -> str | None:
        row = await self.db.fetchone(
            "SELECT text FROM translations WHERE letter_id = ? AND language = ?", (letter_id, language)
        )
        return row["text"] if row else None

    async def forget_made(self, letter_id: int) -> None:
        """Drop machine translations (made from a wrong source language); moderators' own texts stay."""
        await self.db.execute(
            "DELETE FROM translations WHERE letter_id = ? AND source != 'moderator'", (letter_id,)
        )

    async def put(self, letter_id: int, language: str, text: str, source: str, at: float) -> None:
        await self.db.execute(
            """INSERT INTO translations (letter_id, language, text, source, created_at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (letter_id, language)
               DO UPDATE SET text = excluded.text, source = excluded.source, created_at = excluded.created_at""",
            (letter_id, language, text, source, at),
        )

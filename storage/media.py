"""The media of letters: which stored files (by digest) a letter carries, in order."""

from __future__ import annotations

from dataclasses import dataclass

from storage.connection import Connection, Row


@dataclass(frozen=True)
class StoredMedia:
    digest: str
    kind: str
    mime_type: str
    size: int
    metadata_removed: bool


def _media(row: Row) -> StoredMedia:
    return StoredMedia(row["digest"], row["kind"], row["mime_type"], row["size"], bool(row["metadata_removed"]))


class MediaRepository:
    def __init__(self, db: Connection) -> None:
        self.db = db

    async def add(self, letter_id: int, media: list[StoredMedia]) -> None:
        """After what the letter has already (an album's next picture)."""
        async with self.db.transaction() as db:
            row = await db.fetchone("SELECT COALESCE(MAX(seq), -1) AS last FROM letter_media WHERE letter_id = ?",
                                    (letter_id,))
            first = int(row["last"]) + 1 if row is not None else 0
            await db.executemany(
                """INSERT INTO letter_media (letter_id, seq, digest, kind, mime_type, size, metadata_removed)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [(letter_id, first + index, item.digest, item.kind, item.mime_type, item.size,
                  int(item.metadata_removed)) for index, item in enumerate(media)],
            )

    async def of(self, letter_id: int) -> list[StoredMedia]:
        rows = await self.db.fetchall("SELECT * FROM letter_media WHERE letter_id = ? ORDER BY seq", (letter_id,))
        return [_media(row) for row in rows]

    async def referenced(self) -> set[str]:
        """Every digest a letter still carries: a stored file outside this set belongs to no letter."""
        rows = await self.db.fetchall("SELECT DISTINCT digest FROM letter_media")
        return {str(row["digest"]) for row in rows}

"""Everything a handler may use, handed over by the composition root (bot/app.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from handlers.domain import DomainEvents
from handlers.limits import RefusalGate
from handlers.ports import (
    AccountHasher,
    ChatDirectory,
    Clock,
    LanguageDetector,
    MediaShelf,
    Scheduler,
    Texts,
    Transport,
)
from handlers.translating import TranslationService
from storage.connection import Statements
from storage.repositories import Repositories

# A text at least this close to the platform's limit was probably cut there by the client.
SPLIT_MARGIN = 96
# Bounds that keep one person from flooding the moderators or the database.
MAX_LETTER_LENGTH = 60_000
MAX_OPEN_LETTERS = 10
DAY = 86400.0


class Network(Transport, ChatDirectory, Protocol):
    """A transport that also answers questions about its chats (both protocols, one object)."""


@dataclass(frozen=True)
class Room:
    platform: str
    chat_id: str


@dataclass(frozen=True)
class Policy:
    default_language: str
    moderation_rooms: tuple[Room, ...]
    letter_join_seconds: float = 5.0
    # How long a decided letter stays linked to its sender's account; 0: until the sender has been told.
    retention_days: float = 30.0
    # "telegram:123", "matrix:@mo:example.org"; empty: every member of a moderation room moderates.
    moderators: frozenset[str] = frozenset()
    letters_per_day: int = 20
    media_max_bytes: int = 20 * 1024 * 1024  # MEDIA_MAX_MB: larger files are refused before any download

    @property
    def retention_seconds(self) -> float:
        return self.retention_days * 86400


@dataclass
class Context:
    policy: Policy
    repos: Repositories
    networks: dict[str, Network]
    texts: Texts
    clock: Clock
    scheduler: Scheduler
    detector: LanguageDetector
    translating: TranslationService | None
    hasher: AccountHasher
    wake_delivery: Callable[[], None] = lambda: None
    refusals: RefusalGate = field(default_factory=RefusalGate)
    # What follows a decision (cards, notices, the broadcast queue, retention): subscribed at the composition root.
    events: DomainEvents = field(default_factory=DomainEvents)
    media: MediaShelf | None = None  # None: media letters are refused as before

    def transaction(self) -> AbstractAsyncContextManager[Statements]:
        """A change and what it causes (the messages it has the bot say, the events' effects) commit together.

        Writes are one at a time, so a transaction also serialises check-then-act steps (joining a part to its
        letter, the first decision winning). Nothing in it may wait for a network.
        """
        return self.repos.db.transaction()

    def network(self, platform: str) -> Network:
        return self.networks[platform]

    def is_moderation_room(self, platform: str, chat_id: str) -> bool:
        return Room(platform, chat_id) in self.policy.moderation_rooms

    def moderation_language(self) -> str:
        return self.policy.default_language

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# PTB warns on every 429 unless told to use timedeltas; with filterwarnings=error that warning would be an error.
os.environ.setdefault("PTB_TIMEDELTA", "1")

from bot.i18n import Catalogues
from bot.keys import AccountKey
from bot.outbox import OutboxWorker
from bot.pacing import Pacer, Rates
from handlers import broadcast, effects, router
from handlers.context import Context, Policy, Room
from handlers.domain import DomainEvents
from handlers.events import ChatKind, ChatRef, Event, IncomingMessage, OutgoingMessage, Role, UserRef
from storage.db import Database
from storage.letters import Letter
from storage.repositories import Repositories
from tests.fakes import FakeNetwork, ManualClock, ManualScheduler

# One Synapse and one mail system (Dovecot, an SMTP server) per test session, each with its log tail in the report of
# a failing test.
pytest_plugins = ("tests.synapse_fixtures", "tests.mailserver")

ROOT = Path(__file__).resolve().parents[1]
MODS = "-100500"


class FixedDetector:
    def __init__(self, language: str = "und") -> None:
        self.language = language

    def detect(self, text: str) -> str:
        return self.language


@dataclass
class World:
    """A bot with one fake network, an in-memory database and a moderation room with one moderator."""

    ctx: Context
    network: FakeNetwork
    clock: ManualClock
    scheduler: ManualScheduler
    mods: ChatRef
    moderator: UserRef
    outbox: OutboxWorker
    counter: int = 0

    async def dispatch(self, event: Event) -> None:
        """An event handled as the running bot handles it, and then everything the bot says sent."""
        await router.dispatch(event, self.ctx)
        await self.settle()

    async def settle(self) -> None:
        """The deferred jobs that are due run, and the outbox is sent (what the bot's loops do on their own)."""
        await self.scheduler.run_due()
        await self.outbox.drain()

    async def run_due(self) -> int:
        ran = await self.scheduler.run_due()
        await self.outbox.drain()
        return ran

    def user(self, user_id: str, name: str = "Ana", language: str | None = "en") -> UserRef:
        return UserRef("telegram", user_id, name, language)

    def message(self, chat: ChatRef, sender: UserRef | None, text: str | None, limit: int = 4096) -> IncomingMessage:
        self.counter += 1
        return IncomingMessage(
            event_id=f"m{self.counter}",
            chat=chat,
            sender=sender,
            text=text,
            message_id=str(self.counter),
            received_at=self.clock.now(),
            content_kind="text" if text is not None else "photo",
            length=len(text or ""),
            limit=limit,
        )

    def private(self, user: UserRef) -> ChatRef:
        return ChatRef("telegram", user.user_id, ChatKind.PRIVATE)


async def broadcast_of(ctx: Context, letter: Letter, chat_id: str, language: str) -> list[OutgoingMessage]:
    """The messages a subscriber chat on Telegram would get for the letter, as the outbox worker renders them
    (NotReady while its translation is being made)."""
    text = await broadcast.text_in(ctx, letter, language)
    return broadcast.address(broadcast.render(ctx, letter, "telegram", language, text), letter.id, chat_id)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    db = await Database.open(":memory:")
    network = FakeNetwork()
    clock = ManualClock()
    scheduler = ManualScheduler(clock)
    ctx = Context(
        policy=Policy(default_language="en", moderation_rooms=(Room("telegram", MODS),), letter_join_seconds=5),
        repos=Repositories.over(db),
        networks={"telegram": network},
        texts=Catalogues.load(ROOT / "locales", "en"),
        clock=clock,
        scheduler=scheduler,
        detector=FixedDetector(),
        translating=None,
        hasher=AccountKey(b"k" * 32),
        events=effects.subscribe(DomainEvents()),
    )
    moderator = UserRef("telegram", "900", "Mo", "en")
    network.roles[(MODS, "900")] = Role.MEMBER
    mods = ChatRef("telegram", MODS, ChatKind.GROUP, "Moderators")
    # Paced on the manual clock, which a wait moves on: these tests look at what is said, not when (bench/ and the
    # emulator tests measure pacing), and a platform's retry_after costs them no real time.
    async def wait(seconds: float) -> None:
        clock.advance(seconds)

    outbox = OutboxWorker(ctx, defaultdict(lambda: Pacer(Rates(1e6, 0, 0, 0), clock=clock.now, sleep=wait)))
    yield World(ctx, network, clock, scheduler, mods, moderator, outbox)
    await db.close()

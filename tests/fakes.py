"""Test doubles for handler unit tests: a network that records what the bot posts, a manual clock and scheduler.

The fake network is strict where the real ones are: unknown chats fail, blocked chats raise the normalised
error a real transport raises, and an edit of a message that was never sent fails.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from handlers.events import Attachment, ChatKind, ChatRef, OutgoingMessage, RemoteRef, Role
from handlers.ports import Capability, DeliveryError, Dispatch
from handlers.text import utf16_len


@dataclass
class Posted:
    ref: RemoteRef
    message: OutgoingMessage
    edits: list[OutgoingMessage] = field(default_factory=list)
    scrubbed: bool = False

    @property
    def current(self) -> OutgoingMessage:
        return self.edits[-1] if self.edits else self.message

    @property
    def full_text(self) -> str:
        current = self.current
        return "\n\n".join(part for part in (current.title, current.text, current.footer) if part)


class FakeNetwork:
    command_prefix = "/"
    capabilities = frozenset({Capability.BUTTONS, Capability.PRESS_ANSWERS, Capability.SCRUB_IN_PLACE})
    bot_username: str | None = "RelayBot"

    def __init__(self, platform: str = "telegram", max_text_length: int = 4096) -> None:
        self.platform = platform
        self.max_text_length = max_text_length
        self.posted: list[Posted] = []
        self.roles: dict[tuple[str, str], Role] = {}
        self.chats: dict[str, ChatRef] = {}
        self.gone: dict[str, str] = {}
        self.failures: list[DeliveryError] = []  # raised by the next sends, in order
        self.failing: dict[str, list[DeliveryError]] = {}  # raised by the next sends into a chat, in order
        self.press_answers: list[tuple[str | None, str]] = []
        self.left: list[str] = []
        self.forgotten: list[str] = []  # private chats whose traces `forget` asked the network to delete
        self.files: dict[str, bytes] = {}  # what `fetch` hands over, by attachment ref
        self.fetched: list[str] = []
        self._ids = itertools.count(1)

    def text_length(self, text: str) -> int:
        return utf16_len(text)

    async def start(self, dispatch: Dispatch) -> None:
        self.dispatch = dispatch

    async def stop_receiving(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send(self, message: OutgoingMessage) -> RemoteRef:
        if self.failures:
            raise self.failures.pop(0)
        if self.failing.get(message.chat_id):
            raise self.failing[message.chat_id].pop(0)
        if message.chat_id in self.gone:
            raise DeliveryError(self.gone[message.chat_id], retryable=False, gone=True)
        length = utf16_len("\n\n".join(part for part in (message.title, message.text, message.footer) if part))
        if length > self.max_text_length:
            raise DeliveryError("message is too long", retryable=False)
        ref = RemoteRef(self.platform, message.chat_id, str(next(self._ids)))
        self.posted.append(Posted(ref, message))
        return ref

    async def edit(self, ref: RemoteRef, message: OutgoingMessage) -> None:
        if self.failing.get(ref.chat_id):
            raise self.failing[ref.chat_id].pop(0)
        for posted in self.posted:
            if posted.ref == ref:
                posted.edits.append(message)
                return
        raise DeliveryError("message to edit not found", retryable=False)

    async def scrub(self, ref: RemoteRef, message: OutgoingMessage) -> None:
        """Like the real networks: the new content replaces every earlier version (no history kept)."""
        for posted in self.posted:
            if posted.ref == ref:
                posted.message, posted.edits, posted.scrubbed = message, [], True
                return
        raise DeliveryError("message to scrub not found", retryable=False)

    async def role_of(self, chat_id: str, user_id: str) -> Role:
        return self.roles.get((chat_id, user_id), Role.OUTSIDER)

    def owns(self, reference: str) -> bool:
        from bot.networks import by_name  # the real network's rule: the fake stands in for its transport only

        return by_name(self.platform).owns(reference)

    async def resolve_chat(self, reference: str) -> ChatRef | None:
        return self.chats.get(reference)

    async def can_post(self, chat_id: str) -> bool:
        return chat_id not in self.gone

    async def fetch(self, attachment: Attachment) -> bytes:
        self.fetched.append(attachment.ref)
        return self.files[attachment.ref]

    async def forget_chat(self, chat_id: str) -> None:
        self.forgotten.append(chat_id)

    async def leave(self, chat_id: str) -> None:
        self.left.append(chat_id)

    async def answer_press(self, token: str | None, text: str) -> None:
        self.press_answers.append((token, text))

    def in_chat(self, chat_id: str) -> list[Posted]:
        return [posted for posted in self.posted if posted.ref.chat_id == chat_id]

    def add_chat(self, chat_id: str, kind: ChatKind, title: str | None = None) -> ChatRef:
        chat = ChatRef(self.platform, chat_id, kind, title)
        self.chats[chat_id] = chat
        return chat


class ManualClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.time = now

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


class ManualScheduler:
    """Keeps deferred jobs until the test runs them, so no test sleeps."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.jobs: list[tuple[float, Callable[[], Awaitable[None]]]] = []

    def call_later(self, delay: float, job: Callable[[], Awaitable[None]]) -> None:
        self.jobs.append((self.clock.now() + delay, job))

    async def run_due(self) -> int:
        due = [entry for entry in self.jobs if entry[0] <= self.clock.now()]
        self.jobs = [entry for entry in self.jobs if entry[0] > self.clock.now()]
        for _when, job in due:
            await job()
        return len(due)


class MemoryState:
    """A key-value store like the state table, kept in memory: the test needs no database."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def put(self, key: str, value: str) -> None:
        self.values[key] = value

"""The small interfaces that `bot/` implements and `handlers/` uses."""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from handlers.events import Attachment, ChatRef, Event, Media, OutgoingMessage, RemoteRef, Role

# Hands an event to the bot; what it returns completes once the event is handled (a transport that confirms
# events itself, like Matrix's sync token, waits for it; one that cannot need not).
Dispatch = Callable[[Event], Awaitable[None]]


class DeliveryError(Exception):
    """A platform refused or failed a send, normalised so that only the worker decides what happens next.

    retryable:   try again later (5xx, connection lost, 429)
    retry_after: seconds the platform asked us to wait, if it said
    gone:        the chat is gone or forbids the bot: deactivate the subscription, never retry
    moved_to:    the chat has a new id (a Telegram group that became a supergroup)
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        gone: bool = False,
        moved_to: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.gone = gone
        self.moved_to = moved_to


class Capability(enum.Enum):
    """What a network can do beyond sending text; the handlers ask instead of calling methods that do nothing."""

    BUTTONS = "buttons"  # a message carries its actions as buttons (their labels)
    REACTIONS = "reactions"  # actions are reactions on the message (their symbols)
    PRESS_ANSWERS = "press answers"  # a press gets a private answer, seen by the one who pressed
    SCRUB_IN_PLACE = "scrub in place"  # a scrubbed message keeps its place (else it shows as deleted)
    # Each letter tells its reader how to stop them (email: what a mailing list's reader expects to find).
    SUBSCRIBER_FOOTER = "subscriber footer"


class Transport(Protocol):
    """What every network offers the bot: start, stop, send, edit (platform quirks stay behind it)."""

    platform: str
    capabilities: frozenset[Capability]
    command_prefix: str  # "/" on Telegram, "!" on Matrix, "" on email (whose transport marks commands itself)
    max_text_length: int  # longest text of one message, in `text_length` units
    # The name commands are addressed to (`/approve@RelayBot`), where the network has that convention; else None.
    bot_username: str | None

    def text_length(self, text: str) -> int: ...

    async def start(self, dispatch: Dispatch) -> None: ...

    async def stop_receiving(self) -> None:
        """Take in no more events, and hand over those already taken in (the first step of a stop)."""
        ...

    async def stop(self) -> None: ...

    async def send(self, message: OutgoingMessage) -> RemoteRef: ...

    async def edit(self, ref: RemoteRef, message: OutgoingMessage) -> None: ...

    async def scrub(self, ref: RemoteRef, message: OutgoingMessage) -> None:
        """Show `message` instead, leaving nothing of what `ref` showed before (its history included)."""
        ...

    async def fetch(self, attachment: Attachment) -> bytes:
        """The file behind an attachment this network delivered; MediaRefused when it cannot be had (too big for
        the platform to hand out), DeliveryError when the network failed."""
        ...


class ChatDirectory(Protocol):
    """Questions about chats and people that permissions depend on; every transport answers them."""

    async def role_of(self, chat_id: str, user_id: str) -> Role: ...

    def owns(self, reference: str) -> bool:
        """Whether a chat reference a moderator typed (@name, -100…, !room, #alias) is this network's to look up."""
        ...

    async def resolve_chat(self, reference: str) -> ChatRef | None:
        """A chat named by id, @username or alias, or None when the bot cannot see it."""
        ...

    async def can_post(self, chat_id: str) -> bool: ...

    async def leave(self, chat_id: str) -> None:
        """Leave a chat the bot has no use for."""
        ...

    async def answer_press(self, token: str | None, text: str) -> None:
        """Acknowledge a button press with a short notice only the presser sees (Capability.PRESS_ANSWERS)."""
        ...

    async def forget_chat(self, chat_id: str) -> None:
        """`forget`: delete what the network keeps of a person's private chat where the bot can (email: their mail
        in the bot's mailbox); nothing where it cannot (Telegram and Matrix keep the chat on their servers)."""
        ...


class MediaRefused(Exception):
    """A file the bot does not take (too large, damaged, a decompression bomb); `reason` names no one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaShelf(Protocol):
    """The bot's media store: files are cleaned of metadata before they are kept, and kept by content hash."""

    async def keep(self, data: bytes, mime_type: str | None, file_name: str | None, kind: str) -> Media:
        """Clean (pictures are written anew without metadata) and store; MediaRefused when it will not."""
        ...

    def read(self, digest: str) -> bytes: ...

    def sweep(self, referenced: set[str]) -> int:
        """Delete the stored files no letter carries (`referenced` names those that one does); returns how many.
        A file stored moments ago is spared: its letter may not be committed yet."""
        ...


class TranslationError(Exception):
    """A translation that failed; `permanent` when retrying the same request cannot succeed."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class Translator(Protocol):
    """Raises TranslationError when it cannot translate."""

    name: str

    async def translate(self, text: str, source: str, target: str) -> str: ...


class LanguageDetector(Protocol):
    def detect(self, text: str) -> str:
        """An ISO 639-1 code, or "und" when unsure."""
        ...


class AccountHasher(Protocol):
    """A keyed hash of a platform account: lets a ban outlive every stored trace of the account."""

    def account_hash(self, platform: str, user_id: str) -> str: ...


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class Texts(Protocol):
    """The bot's own wording, in the reader's language (gettext catalogues)."""

    def gettext(self, language: str | None) -> Callable[[str], str]: ...

    def ngettext(self, language: str | None) -> Callable[[str, str, int], str]: ...

    def language_name(self, code: str, in_language: str | None) -> str: ...

    def is_language(self, code: str) -> bool: ...


class Scheduler(Protocol):
    """Runs a coroutine later, outside the handler that asked (handlers never sleep)."""

    def call_later(self, delay: float, job: Callable[[], Awaitable[None]]) -> None: ...


class NotReady(Exception):
    """Something a delivery needs is still being made (a translation): try again in `retry_in` seconds.

    Not a failure: the delivery keeps its place and its retry budget.
    """

    def __init__(self, what: str, retry_in: float) -> None:
        super().__init__(what)
        self.retry_in = retry_in

"""Neutral event and reply types: the only shapes that cross the line between transports and handlers.

Transports turn platform updates into these and turn `OutgoingMessage` back into platform calls, so nothing
in `handlers/` or `storage/` needs to know which network a person is on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ChatKind(StrEnum):
    PRIVATE = "private"
    GROUP = "group"
    CHANNEL = "channel"


class Role(StrEnum):
    """What a user is in a chat, as far as the bot's permissions care."""

    OUTSIDER = "outsider"
    MEMBER = "member"
    ADMIN = "admin"


@dataclass(frozen=True)
class ChatRef:
    platform: str
    chat_id: str
    kind: ChatKind
    title: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.platform, self.chat_id)


@dataclass(frozen=True)
class UserRef:
    platform: str
    user_id: str
    display_name: str
    language: str | None = None  # the client's UI language, a hint for the bot's own texts


@dataclass(frozen=True)
class RemoteRef:
    """A message the bot posted, as its platform names it."""

    platform: str
    chat_id: str
    message_id: str


# The kinds of media a letter can carry.
IMAGE = "image"
VIDEO = "video"
DOCUMENT = "document"


@dataclass(frozen=True)
class Attachment:
    """A file that came with a message, before the bot has it: what its network says of it, and the network's own
    handle to fetch it with (`Transport.fetch`). Handlers never see a platform's file object."""

    kind: str  # IMAGE, VIDEO or DOCUMENT, as the network presents it (a photo, a video, a file)
    mime_type: str | None
    size: int  # bytes, as the network says before any download; 0 when it does not say
    file_name: str | None = field(default=None, repr=False)  # the sender's name for it, which may say who they are
    ref: str = field(default="", repr=False)  # opaque to handlers (a Telegram file_id, an mxc:// URI, a mail part)


@dataclass(frozen=True)
class Media:
    """A file in the bot's media store, cleaned of metadata where it could be: what cards and letters carry."""

    digest: str  # SHA-256 of the stored bytes
    kind: str  # IMAGE, VIDEO or DOCUMENT, as the bot found it (a document that is a picture is an IMAGE)
    mime_type: str
    file_name: str | None = None
    metadata_removed: bool = True  # False: passed on as it came (a video, a PDF): its metadata may name someone
    size: int = 0


@dataclass(frozen=True)
class IncomingMessage:
    event_id: str  # unique per platform: a replay of the same update carries the same id
    chat: ChatRef
    sender: UserRef | None  # None for a channel post, whose author the platform hides
    text: str | None  # None when the message is not text (photo, sticker, file...)
    message_id: str
    received_at: float
    content_kind: str = "text"
    length: int = 0  # as the platform counts it (Telegram: UTF-16 code units)
    limit: int = 0  # the platform's maximum length of one message; 0 when it has none
    # False where the network cannot vouch for the sender: an email's From can be forged by anyone. A mail that
    # answers one the bot sent to that address is proven (only the mailbox's reader has seen it).
    sender_proven: bool = True
    left_out: tuple[str, ...] = ()  # what the network could not carry of the message (an email's attachments)
    attachments: tuple[Attachment, ...] = ()  # photos, videos, files; the text is then their caption
    media_group: str | None = None  # an album: messages sharing it are one letter (Telegram's media_group_id)


@dataclass(frozen=True)
class MessageEdited:
    """A person changed the text of a message they sent (Telegram `edited_message`, Matrix `m.replace`)."""

    event_id: str
    chat: ChatRef
    sender: UserRef
    message_id: str  # the message as first sent: the one a letter's part refers to
    text: str | None
    received_at: float
    length: int = 0  # as the platform counts it


@dataclass(frozen=True)
class MessageDeleted:
    """A person deleted a message they sent (a Matrix redaction)."""

    event_id: str
    chat: ChatRef
    sender: UserRef
    message_id: str


@dataclass(frozen=True)
class ActionPressed:
    """A moderator pressed an inline button (Telegram) or reacted to a card (Matrix)."""

    event_id: str
    chat: ChatRef
    user: UserRef
    message: RemoteRef
    data: str  # e.g. "approve:12"
    token: str | None = None  # what the transport needs to answer the press (Telegram's callback query id)


# IncomingMessage.content_kind of a message nobody can read: its keys never came (UNDECRYPTABLE), or the bot
# takes no part in encrypted rooms (ENCRYPTED). The sender is answered either way, never left in silence.
UNDECRYPTABLE = "undecryptable"
ENCRYPTED = "encrypted"
# IncomingMessage.content_kind of a command the network recognised itself, where commands have no prefix
# (email: a subject or first line like `withdraw 12`); other text there is never read as a command.
COMMAND = "command"
INVITED = "invited"  # MembershipChanged.reason of a room joined on someone's invitation


@dataclass(frozen=True)
class MembershipChanged:
    """The bot was removed from a chat, or joined one (`active`): on someone's invitation (reason INVITED, where
    the network lets anyone invite the bot: Matrix), or added by a chat's administrator (Telegram)."""

    chat: ChatRef
    active: bool
    reason: str


Event = IncomingMessage | MessageEdited | MessageDeleted | ActionPressed | MembershipChanged


@dataclass(frozen=True)
class Action:
    """A one-click choice attached to a message: an inline button (its `label`), or a reaction (its `symbol`) where
    a network has no buttons. The symbol is the action's own, never taken from the label: a translated label
    need not start with it."""

    label: str
    data: str
    symbol: str = ""


@dataclass(frozen=True)
class OutgoingMessage:
    """Plain text; the transport escapes it for whatever markup its platform parses.

    `title` is shown emphasised above the body, `footer` in small print below it; a `quoted` body is someone
    else's words (a letter on a card) and shows as a quotation, set apart from the bot's own lines.
    """

    chat_id: str
    text: str
    title: str | None = None
    footer: str | None = None
    actions: tuple[Action, ...] = field(default=())
    silent: bool = False
    quoted: bool = False
    broadcast: bool = False  # a letter to a subscriber (Telegram may send these as paid broadcasts)
    idempotency_key: str | None = None  # a stable key so a retried send cannot post twice where the platform allows
    # The message this answers (IncomingMessage.message_id), for networks that thread answers (email: In-Reply-To).
    reply_to: str | None = None
    media: tuple[Media, ...] = ()  # shown with the text (before it, or as an album); the text is their caption

"""Small pieces every handler uses: parsing commands, answering, choosing the reader's language."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from handlers.context import Context
from handlers.events import ChatRef, IncomingMessage, MessageDeleted, MessageEdited, OutgoingMessage
from handlers.outbox import say

# A command word right after the prefix (no space: "/ we are with you" is a letter), optionally addressed to a
# bot by name as Telegram groups do (`/approve@RelayBot 12`), then the arguments.
_COMMAND = re.compile(r"^(?P<name>[A-Za-z0-9_]{1,32})(?:@(?P<addressee>[A-Za-z0-9_]{1,64}))?(?:\s+(?P<args>.*))?$",
                      re.DOTALL)
_LETTER_NUMBER = re.compile(r"#?([0-9]{1,9})")


@dataclass(frozen=True)
class Command:
    name: str
    args: str
    addressee: str | None = None  # `/cmd@name`: the bot it is meant for

    @property
    def words(self) -> list[str]:
        return self.args.split()

    @property
    def alone(self) -> bool:
        """Just the command word, as a person types a command; `/Basta ya` is more likely a letter."""
        return not self.args


def parse_command(text: str | None, prefix: str, addressable: bool = False) -> Command | None:
    """`/approve@RelayBot 12 why` → Command("approve", "12 why", "RelayBot"); None when the text has no command
    shape. Only networks where commands name a bot (`addressable`) accept the `@name` part."""
    if not text or not text.startswith(prefix):
        return None
    match = _COMMAND.match(text[len(prefix):].rstrip())
    if match is None or (match["addressee"] and not addressable):
        return None
    return Command(match["name"].lower(), (match["args"] or "").strip(), match["addressee"])


def letter_number(word: str) -> int | None:
    """`12` or `#12` → 12; anything else (`²`, `١٢`, `12a`, a 40-digit number) → None."""
    match = _LETTER_NUMBER.fullmatch(word)
    return int(match[1]) if match else None


def reader_language(ctx: Context, message: IncomingMessage) -> str:
    if message.sender and message.sender.language:
        return message.sender.language
    return ctx.policy.default_language


def gettext_for(ctx: Context, language: str | None) -> Callable[[str], str]:
    return ctx.texts.gettext(language or ctx.policy.default_language)


def command_text(ctx: Context, platform: str, command: str) -> str:
    """A command as the reader types it on their network: /withdraw 12 or !withdraw 12."""
    return ctx.network(platform).command_prefix + command


async def reply(ctx: Context, chat: ChatRef, text: str, title: str | None = None, reply_to: str | None = None) -> None:
    message = OutgoingMessage(chat_id=chat.chat_id, text=text, title=title, reply_to=reply_to)
    await say(ctx, chat.platform, message, chat.kind)


async def answer(ctx: Context, message: IncomingMessage, text: str, title: str | None = None) -> None:
    """A reply to `message` in its chat (in its thread, where the network has threads: email)."""
    await reply(ctx, message.chat, text, title, reply_to=message.message_id)


def account_of(ctx: Context, message: IncomingMessage | MessageEdited | MessageDeleted) -> str:
    assert message.sender is not None
    return ctx.hasher.account_hash(message.chat.platform, message.sender.user_id)


async def refuse(ctx: Context, message: IncomingMessage | MessageEdited, kind: str, text: str) -> None:
    """Answer a refused message, unless this sender got this refusal within the hour: a flood gets one answer."""
    if ctx.refusals.allow(account_of(ctx, message), kind, ctx.clock.now()):
        await reply(ctx, message.chat, text, reply_to=message.message_id)


async def refuse_outside(ctx: Context, message: IncomingMessage) -> None:
    _ = gettext_for(ctx, _language(ctx, message))
    await answer(ctx, message, _("Moderation commands work only in the moderators' room, for its members."))


def _language(ctx: Context, message: IncomingMessage) -> str:
    if message.sender and message.sender.language and message.chat.kind == "private":
        return message.sender.language
    return ctx.moderation_language()

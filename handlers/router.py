"""dispatch(event, ctx): the one entry point the transports call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from handlers import editing, moderation, privacy, submission, subscriptions
from handlers.common import Command, parse_command, refuse_outside
from handlers.context import Context, Network
from handlers.events import (
    COMMAND,
    ENCRYPTED,
    UNDECRYPTABLE,
    ActionPressed,
    ChatKind,
    Event,
    IncomingMessage,
    MembershipChanged,
    MessageDeleted,
    MessageEdited,
)
from handlers.loggable import log_failure

log = logging.getLogger(__name__)

CommandHandler = Callable[[Context, IncomingMessage, Command], Awaitable[None]]

PRIVATE: dict[str, CommandHandler] = {
    "start": submission.start,
    "help": submission.help_private,
    "withdraw": submission.withdraw,
    "forget": privacy.forget,
    "subscribe": subscriptions.subscribe_here,
    "unsubscribe": subscriptions.unsubscribe_here,
    "yes": subscriptions.confirm,
    "id": subscriptions.chat_id,
}

# What changes something for the sender needs a sender the network vouches for; an email's From can be forged,
# so these are done only for a mail that answers one of the bot's (`forget` alone only explains itself).
NEEDS_PROOF = frozenset({"withdraw", "unsubscribe", "yes"})

MODERATION_ROOM: dict[str, CommandHandler] = {
    "start": moderation.help_moderators,
    "help": moderation.help_moderators,
    "approve": moderation.approve_command,
    "reject": moderation.reject_command,
    "pending": moderation.pending,
    "stats": moderation.stats,
    "ban": moderation.ban_command,
    "unban": moderation.unban_command,
    "subscribe": subscriptions.subscribe_other,
    "unsubscribe": subscriptions.unsubscribe_other,
    "subscribers": subscriptions.subscribers,
    "lang": editing.lang_command,
    "translation": editing.translation_command,
    "edit": editing.edit_command,
    "history": editing.history_command,
    "id": subscriptions.chat_id,
}

SUBSCRIBER_CHAT: dict[str, CommandHandler] = {
    "subscribe": subscriptions.subscribe_here,
    "unsubscribe": subscriptions.unsubscribe_here,
    "id": subscriptions.chat_id,
}


# Moderation-room commands that only show something: every member of the room may use them. The others decide
# or change something, and with MODERATORS set only the listed accounts may.
READING = frozenset({"start", "help", "pending", "stats", "subscribers", "history", "id"})


async def dispatch(event: Event, ctx: Context) -> None:
    try:
        if isinstance(event, IncomingMessage):
            await _message(ctx, event)
        elif isinstance(event, MessageEdited):
            await submission.edited(ctx, event)
        elif isinstance(event, MessageDeleted):
            await submission.deleted(ctx, event)
        elif isinstance(event, ActionPressed):
            if await ctx.repos.state.first_time(event.chat.platform, event.event_id, ctx.clock.now()):
                await moderation.on_press(ctx, event)
        elif isinstance(event, MembershipChanged):
            await subscriptions.membership_changed(ctx, event)
    except Exception as error:
        # One bad event must never stop the bot; the event's data is already stored or can be resent.
        log_failure(log, f"handling {type(event).__name__} failed", error)


async def _message(ctx: Context, message: IncomingMessage) -> None:
    if message.content_kind in (UNDECRYPTABLE, ENCRYPTED):
        await _unreadable(ctx, message)
        return
    # Parsed before anything is looked up, so that chatter in a big room costs nothing.
    network = ctx.network(message.chat.platform)
    command = None
    # A caption is never a command: a photo captioned "/help" is a letter with its picture.
    if (network.command_prefix or message.content_kind == COMMAND) and not message.attachments:
        command = parse_command(message.text, network.command_prefix, addressable=network.bot_username is not None)
    if command is not None and command.addressee is not None and not _addressed_to(network, command):
        return  # `/cmd@otherbot`: for another bot
    if ctx.is_moderation_room(message.chat.platform, message.chat.chat_id):
        await _moderation_room(ctx, message, command)
    elif message.chat.kind == ChatKind.PRIVATE and message.sender is not None:
        await _private(ctx, message, command)
    elif command is not None:
        await _subscriber_chat(ctx, message, command)


async def _unreadable(ctx: Context, message: IncomingMessage) -> None:
    """Where the bot reads every message (a private chat, the moderation room), one it could not decrypt is
    answered: it may have been a letter or a decision."""
    private = message.chat.kind == ChatKind.PRIVATE and message.sender is not None
    if private or ctx.is_moderation_room(message.chat.platform, message.chat.chat_id):
        await submission.unreadable(ctx, message)


async def _private(ctx: Context, message: IncomingMessage, command: Command | None) -> None:
    """Only a known command is a command here: "!Basta ya" and "/ we are with you" are letters."""
    if command is not None and command.name in PRIVATE:
        if not message.sender_proven and _needs_proof(command):
            await submission.prove_first(ctx, message, command)
            return
        await PRIVATE[command.name](ctx, message, command)
    elif command is not None and command.name in moderation.MODERATION_COMMANDS:
        await refuse_outside(ctx, message)
    elif command is not None and command.alone:
        await submission.help_private(ctx, message, command)  # a lone `/word`: a command the bot doesn't know
    else:
        await submission.letter(ctx, message)


async def _moderation_room(ctx: Context, message: IncomingMessage, command: Command | None) -> None:
    if command is None or command.name not in MODERATION_ROOM:
        return  # moderators talking among themselves
    if command.name != "id":
        reading = command.name in READING or _shows_translation(command)
        if not await moderation.may_act(ctx, message.chat, message.sender, deciding=not reading):
            await moderation.refuse(ctx, message, reading)
            return
    if await ctx.repos.state.first_time(message.chat.platform, message.event_id, ctx.clock.now()):
        await MODERATION_ROOM[command.name](ctx, message, command)


def _needs_proof(command: Command) -> bool:
    return command.name in NEEDS_PROOF or (command.name == "forget" and bool(command.args))


def _addressed_to(network: Network, command: Command) -> bool:
    return (command.addressee or "").lower() == (network.bot_username or "").lower()


def _shows_translation(command: Command) -> bool:
    """`translation N LANG` shows a translation; with a text after it, it replaces it."""
    return command.name == "translation" and len(command.words) <= 2


async def _subscriber_chat(ctx: Context, message: IncomingMessage, command: Command) -> None:
    if command.name in SUBSCRIBER_CHAT:
        await SUBSCRIBER_CHAT[command.name](ctx, message, command)
    elif command.name in moderation.MODERATION_COMMANDS:
        await refuse_outside(ctx, message)

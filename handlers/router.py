"""dispatch(event, ctx): the one entry point the transports call."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from handlers import editing, moderation, privacy, submission, subscriptions
from handlers.common import Command, gettext_for, parse_command, reader_language, reply
from handlers.context import Context
from handlers.events import ActionPressed, ChatKind, Event, IncomingMessage, MembershipChanged
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
    "id": subscriptions.chat_id,
}

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


async def dispatch(event: Event, ctx: Context) -> None:
    try:
        if isinstance(event, IncomingMessage):
            await _message(ctx, event)
        elif isinstance(event, ActionPressed):
            if await ctx.repos.state.first_time(event.chat.platform, event.event_id, ctx.clock.now()):
                await moderation.on_press(ctx, event)
        elif isinstance(event, MembershipChanged):
            await subscriptions.membership_changed(ctx, event)
    except Exception as error:
        # One bad event must never stop the bot; the event's data is already stored or can be resent.
        log_failure(log, f"handling {type(event).__name__} failed", error)


async def _message(ctx: Context, message: IncomingMessage) -> None:
    command = parse_command(message.text, ctx.network(message.chat.platform).command_prefix)
    in_moderation_room = ctx.is_moderation_room(message.chat.platform, message.chat.chat_id)
    if in_moderation_room:
        await _moderation_room(ctx, message, command)
    elif message.chat.kind == ChatKind.PRIVATE:
        await _private(ctx, message, command)
    elif command is not None:
        await _subscriber_chat(ctx, message, command)


async def _private(ctx: Context, message: IncomingMessage, command: Command | None) -> None:
    if command is None:
        await submission.letter(ctx, message)
    elif command.name in PRIVATE:
        await PRIVATE[command.name](ctx, message, command)
    elif command.name in moderation.MODERATION_COMMANDS:
        await moderation.refuse_outside(ctx, message)
    else:
        await _unknown(ctx, message, command)


async def _moderation_room(ctx: Context, message: IncomingMessage, command: Command | None) -> None:
    if command is None or command.name not in MODERATION_ROOM:
        return  # moderators talking among themselves
    if command.name != "id" and not await moderation.is_moderator(ctx, message.chat, message.sender):
        await moderation.refuse_outside(ctx, message)
        return
    if await ctx.repos.state.first_time(message.chat.platform, message.event_id, ctx.clock.now()):
        await MODERATION_ROOM[command.name](ctx, message, command)


async def _subscriber_chat(ctx: Context, message: IncomingMessage, command: Command) -> None:
    if command.name in SUBSCRIBER_CHAT:
        await SUBSCRIBER_CHAT[command.name](ctx, message, command)
    elif command.name in moderation.MODERATION_COMMANDS:
        await moderation.refuse_outside(ctx, message)


async def _unknown(ctx: Context, message: IncomingMessage, command: Command) -> None:
    _ = gettext_for(ctx, reader_language(ctx, message))
    help_command = ctx.network(message.chat.platform).command_prefix + "help"
    await reply(ctx, message.chat, _("I don't know that command. {command} shows what I can do.").format(
        command=help_command))

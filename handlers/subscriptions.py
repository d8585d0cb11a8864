"""Subscriptions: a person, a group (by its admin), a channel or room (by a moderator); and the id helper."""

from __future__ import annotations

from handlers import rooms
from handlers.common import Command, answer, command_text, gettext_for, reader_language, refuse_outside
from handlers.context import DAY, Context
from handlers.events import ChatKind, ChatRef, IncomingMessage, MembershipChanged, Role
from handlers.outbox import end_subscription
from storage.subscriptions import Subscription

# How long a subscription waits for its confirmation.
REQUEST_DAYS = 7


async def chat_id(ctx: Context, message: IncomingMessage, command: Command) -> None:
    _ = gettext_for(ctx, reader_language(ctx, message))
    text = _("This chat's id: {chat_id}").format(chat_id=message.chat.chat_id)
    if message.sender is not None:
        text += "\n" + _("Your id: {user_id}").format(user_id=message.sender.user_id)
    await answer(ctx, message, text)


async def subscribe_here(ctx: Context, message: IncomingMessage, command: Command) -> None:
    _ = gettext_for(ctx, reader_language(ctx, message))
    if len(command.words) > 1:
        await refuse_outside(ctx, message)  # `subscribe CHAT LANG`: the moderators' form
        return
    if not await _may_change(ctx, message):
        await answer(ctx, message, _("Only an administrator of this chat can change its subscription."))
        return
    language = (command.words[0] if command.words else ctx.policy.default_language).lower()
    if not ctx.texts.is_language(language):
        await _unknown_language(ctx, message, language)
        return
    if not message.sender_proven:
        await _ask_to_confirm(ctx, message, language)
        return
    await _subscribe(ctx, message, language)


async def _ask_to_confirm(ctx: Context, message: IncomingMessage, language: str) -> None:
    """Double opt-in: the subscription starts once the address's owner answers; nobody subscribes someone else."""
    _ = gettext_for(ctx, reader_language(ctx, message))
    chat = message.chat
    await ctx.repos.subscriptions.request(chat.platform, chat.chat_id, language, ctx.clock.now())
    name = ctx.texts.language_name(language, reader_language(ctx, message))
    text = _("Someone, probably you, asked for approved letters in {language} at this address. Reply to this "
             "message with “{command}” to confirm. If it was not you, ignore this message: nothing will be sent.")
    await answer(ctx, message, text.format(language=name, command=command_text(ctx, chat.platform, "yes")))


async def confirm(ctx: Context, message: IncomingMessage, command: Command) -> None:
    """`yes`, answering the confirmation of a subscription (the router has checked that it answers the bot)."""
    _ = gettext_for(ctx, reader_language(ctx, message))
    chat = message.chat
    since = ctx.clock.now() - REQUEST_DAYS * DAY
    language = await ctx.repos.subscriptions.take_request(chat.platform, chat.chat_id, since)
    if language is None:
        example = command_text(ctx, chat.platform, "subscribe es")
        await answer(ctx, message, _("There is nothing to confirm. To receive letters: {command}").format(
            command=example))
        return
    await _subscribe(ctx, message, language)


async def _subscribe(ctx: Context, message: IncomingMessage, language: str) -> None:
    _ = gettext_for(ctx, reader_language(ctx, message))
    chat = message.chat
    await ctx.repos.subscriptions.subscribe(
        chat.platform, chat.chat_id, chat.kind.value, chat.title, language, ctx.clock.now()
    )
    stop = command_text(ctx, chat.platform, "unsubscribe")
    name = ctx.texts.language_name(language, reader_language(ctx, message))
    if chat.kind == ChatKind.PRIVATE:
        text = _("You will now receive approved letters in {language}. {command} stops them.")
    else:
        text = _("This chat now receives approved letters in {language}. {command} stops them.")
    await answer(ctx, message, text.format(language=name, command=stop))


async def unsubscribe_here(ctx: Context, message: IncomingMessage, command: Command) -> None:
    _ = gettext_for(ctx, reader_language(ctx, message))
    if command.words:
        await refuse_outside(ctx, message)  # `unsubscribe CHAT`: the moderators' form, never this chat's own
        return
    if not await _may_change(ctx, message):
        await answer(ctx, message, _("Only an administrator of this chat can change its subscription."))
        return
    await _end(ctx, message, message.chat.platform, message.chat.chat_id)


async def _may_change(ctx: Context, message: IncomingMessage) -> bool:
    """In a private chat the person decides; in a channel only admins can post; in a group, its admins."""
    if message.chat.kind in (ChatKind.PRIVATE, ChatKind.CHANNEL):
        return True
    if message.sender is None:
        return False
    role = await ctx.network(message.chat.platform).role_of(message.chat.chat_id, message.sender.user_id)
    return role == Role.ADMIN


async def _unknown_language(ctx: Context, message: IncomingMessage, language: str) -> None:
    _ = gettext_for(ctx, reader_language(ctx, message))
    example = command_text(ctx, message.chat.platform, "subscribe es")
    await answer(ctx, message, _("“{language}” is not a language code I know. For example: {command}").format(
        language=language, command=example))


async def _end(ctx: Context, message: IncomingMessage, platform: str, chat_id: str) -> None:
    _ = gettext_for(ctx, reader_language(ctx, message))
    subscription = await ctx.repos.subscriptions.find(platform, chat_id)
    if subscription is None or not subscription.active:
        await answer(ctx, message, _("{chat} is not subscribed.").format(chat=chat_id))
        return
    async with ctx.transaction():
        await end_subscription(ctx, subscription.id, "unsubscribed")
        await answer(ctx, message, _("{chat} no longer receives letters.").format(
            chat=subscription.title or chat_id))


def _platform_of(ctx: Context, reference: str) -> str | None:
    """The running network whose chats look like `reference` (each network knows its own)."""
    return next((name for name, network in ctx.networks.items() if network.owns(reference)), None)


async def subscribe_other(ctx: Context, message: IncomingMessage, command: Command) -> None:
    """`subscribe CHAT LANG` from a moderation room: a channel, group or room the bot can post to."""
    _ = gettext_for(ctx, ctx.moderation_language())
    if len(command.words) != 2:
        example = command_text(ctx, message.chat.platform, "subscribe @channel es")
        usage = _("Name the chat and the language, for example: {command}").format(command=example)
        await answer(ctx, message, usage)
        return
    reference, language = command.words[0], command.words[1].lower()
    if not ctx.texts.is_language(language):
        await _unknown_language(ctx, message, language)
        return
    target = await _resolve(ctx, reference)
    if target is None:
        not_found = _("I can't find {chat}. Add me to it first, then try again.").format(chat=reference)
        await answer(ctx, message, not_found)
        return
    if not await ctx.network(target.platform).can_post(target.chat_id):
        await answer(ctx, message, _("I can't post in {chat}: make me able to send messages there first.").format(
            chat=target.title or reference))
        return
    await ctx.repos.subscriptions.subscribe(
        target.platform, target.chat_id, target.kind.value, target.title, language, ctx.clock.now()
    )
    await answer(ctx, message, _("{chat} now receives approved letters in {language}.").format(
        chat=target.title or reference, language=ctx.texts.language_name(language, ctx.moderation_language())))


async def _resolve(ctx: Context, reference: str) -> ChatRef | None:
    platform = _platform_of(ctx, reference)
    if platform is None:
        return None
    return await ctx.network(platform).resolve_chat(reference)


async def unsubscribe_other(ctx: Context, message: IncomingMessage, command: Command) -> None:
    _ = gettext_for(ctx, ctx.moderation_language())
    if len(command.words) != 1:
        example = command_text(ctx, message.chat.platform, "unsubscribe @channel")
        await answer(ctx, message, _("Name the chat, for example: {command}").format(command=example))
        return
    reference = command.words[0]
    target = await _resolve(ctx, reference)
    platform = target.platform if target else (_platform_of(ctx, reference) or message.chat.platform)
    await _end(ctx, message, platform, target.chat_id if target else reference)


async def subscribers(ctx: Context, message: IncomingMessage, command: Command) -> None:
    _ = gettext_for(ctx, ctx.moderation_language())
    active = await ctx.repos.subscriptions.active()
    if not active:
        await answer(ctx, message, _("Nobody is subscribed yet."))
        return
    lines = [
        " · ".join((subscription.platform, subscription.kind, subscriber_name(ctx, subscription),
                    subscription.language))
        for subscription in active
    ]
    title = _("{count} active subscriptions:").format(count=len(active))
    await answer(ctx, message, "\n".join(lines), title=title)


def subscriber_name(ctx: Context, subscription: Subscription) -> str:
    """A channel or group by its title and id; a person only as "person 12", never by account or chat id."""
    if subscription.kind == ChatKind.PRIVATE:
        _ = gettext_for(ctx, ctx.moderation_language())
        return _("person {number}").format(number=subscription.id)
    if subscription.title:
        return f"{subscription.title} ({subscription.chat_id})"
    return subscription.chat_id


async def membership_changed(ctx: Context, event: MembershipChanged) -> None:
    """The bot was removed from a chat: its subscription ends at once, with the reason kept. A room it was
    invited to is on probation for an hour (handlers/rooms.py)."""
    if event.active:
        await rooms.joined(ctx, event)
        return
    subscription = await ctx.repos.subscriptions.find(event.chat.platform, event.chat.chat_id)
    if subscription is not None:
        await end_subscription(ctx, subscription.id, event.reason)

"""Moderators: who may decide, approve/reject (first decision wins), pending, stats, ban/unban."""

from __future__ import annotations

import logging
import time

from handlers import cards
from handlers.common import Command, answer, command_text, gettext_for, letter_number, refuse_outside
from handlers.context import Context
from handlers.domain import LetterDecided
from handlers.events import ActionPressed, ChatRef, IncomingMessage, Role, UserRef
from handlers.ports import Capability
from storage.letters import Decision

log = logging.getLogger(__name__)

MODERATION_COMMANDS = frozenset(
    {"approve", "reject", "pending", "stats", "ban", "unban", "subscribers", "lang", "translation", "edit", "history"}
)


async def is_moderator(ctx: Context, chat: ChatRef, user: UserRef | None) -> bool:
    """May decide here: a member of this moderation room, and listed in MODERATORS when that is set."""
    return await may_act(ctx, chat, user, deciding=True)


async def may_act(ctx: Context, chat: ChatRef, user: UserRef | None, deciding: bool) -> bool:
    """Members of a moderation room read along; deciding and changing takes a listed moderator where there is a
    list. Nobody outside a moderation room moderates. The list is looked at first: it costs no request."""
    if user is None or not ctx.is_moderation_room(chat.platform, chat.chat_id):
        return False
    if deciding and ctx.policy.moderators and f"{user.platform}:{user.user_id}" not in ctx.policy.moderators:
        return False
    return await ctx.network(chat.platform).role_of(chat.chat_id, user.user_id) != Role.OUTSIDER


async def refuse(ctx: Context, message: IncomingMessage, reading: bool) -> None:
    """A moderation-room command from someone who may not use it there."""
    if reading or not ctx.policy.moderators:
        await refuse_outside(ctx, message)
        return
    _ = gettext_for(ctx, ctx.moderation_language())
    await answer(ctx, message, _("Only the moderators named in the bot's settings can do that; "
                                 "everyone in this room can read along."))


async def on_press(ctx: Context, press: ActionPressed) -> None:
    _ = gettext_for(ctx, ctx.moderation_language())
    action, _sep, number = press.data.partition(":")
    if action == "react":
        action, number = await _reacted(ctx, press, number)
    if action not in ("approve", "reject") or not number.isdigit():
        if not press.data.startswith("react:"):  # people react to cards with all kinds of emoji
            await _answer(ctx, press, _("This button is no longer valid."))
        return
    if not await is_moderator(ctx, press.chat, press.user):
        await _answer(ctx, press, _("Only moderators can decide on letters."))
        log.info("a press on #%s by someone who may not decide was refused", number)
        return
    outcome = await decide(ctx, int(number), action, press.user, press.chat.platform, None)
    await _answer(ctx, press, outcome)


async def _answer(ctx: Context, press: ActionPressed, text: str) -> None:
    """Where a press has a private answer (Telegram); elsewhere the outcome shows on the card itself."""
    network = ctx.network(press.chat.platform)
    if Capability.PRESS_ANSWERS in network.capabilities:
        await network.answer_press(press.token, text)


REACTIONS = {symbol: decision for decision, symbol in cards.DECISION_SYMBOLS.items()}


async def _reacted(ctx: Context, press: ActionPressed, key: str) -> tuple[str, str]:
    """A reaction on the first part of a card: (action, letter number), or nothing for any other reaction."""
    card = await ctx.repos.cards.find(press.message.platform, press.message.chat_id, press.message.message_id)
    if card is None or card.part != 0 or key not in REACTIONS:
        return "", ""
    return REACTIONS[key], str(card.letter_id)


async def approve_command(ctx: Context, message: IncomingMessage, command: Command) -> None:
    await _decide_command(ctx, message, command, "approve")


async def reject_command(ctx: Context, message: IncomingMessage, command: Command) -> None:
    await _decide_command(ctx, message, command, "reject")


async def _decide_command(ctx: Context, message: IncomingMessage, command: Command, action: str) -> None:
    assert message.sender is not None
    _ = gettext_for(ctx, ctx.moderation_language())
    number = letter_number(command.words[0]) if command.words else None
    if number is None:
        usage = command_text(ctx, message.chat.platform, f"{action} 12" + (" reason" if action == "reject" else ""))
        await answer(ctx, message, _("Which letter? For example: {command}").format(command=usage))
        return
    reason = command.args.split(None, 1)[1].strip() if len(command.words) > 1 else None
    async with ctx.transaction():
        outcome = await decide(ctx, number, action, message.sender, message.chat.platform, reason)
        await answer(ctx, message, outcome)


async def decide(ctx: Context, number: int, action: str, moderator: UserRef, platform: str, reason: str | None) -> str:
    """Decide if the letter is still pending, show it everywhere, tell the sender; returns a short outcome."""
    _ = gettext_for(ctx, ctx.moderation_language())
    letter = await ctx.repos.letters.get(number)
    if letter is None or letter.announced_at is None:
        return _("There is no letter #{number}.").format(number=number)
    decision = Decision(number, action, platform, moderator.user_id, moderator.display_name, reason, ctx.clock.now())
    async with ctx.transaction():
        if not await ctx.repos.letters.decide(number, decision):
            return await _already_decided(ctx, number)
        # The cards, the sender's notice and the broadcast queue are written with the decision.
        await ctx.events.publish(ctx, LetterDecided(letter, decision))
    log.info("letter #%d: %s (%s)", number, action, platform)
    if action == "approve":
        return _("#{number} approved.").format(number=number)
    return _("#{number} rejected.").format(number=number)


async def _already_decided(ctx: Context, number: int) -> str:
    _ = gettext_for(ctx, ctx.moderation_language())
    first = await ctx.repos.letters.deciding(number)
    if first is None:
        return _("#{number} is not pending.").format(number=number)
    at = time.strftime("%H:%M UTC", time.gmtime(first.decided_at))
    if first.action == "approve":
        text = _("#{number} was already approved by {moderator} at {time}.")
    elif first.action == "reject":
        text = _("#{number} was already rejected by {moderator} at {time}.")
    else:
        text = _("#{number} was withdrawn by its sender at {time}.")
    return text.format(number=number, moderator=first.moderator, time=at)


async def pending(ctx: Context, message: IncomingMessage, command: Command) -> None:
    _ = gettext_for(ctx, ctx.moderation_language())
    letters = await ctx.repos.letters.pending(limit=30)
    if not letters:
        await answer(ctx, message, _("No letters are waiting. 🌱"))
        return
    lines = [
        _("#{number} · {language} · {length} characters: {start}").format(
            number=letter.id,
            language=ctx.texts.language_name(letter.language, ctx.moderation_language()),
            length=f"{letter.length:,}",
            start=_preview(letter.text),
        )
        for letter in letters
    ]
    await answer(ctx, message, "\n".join(lines), title=_("Waiting for a decision:"))


def _preview(text: str, length: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= length else flat[: length - 1] + "…"


async def stats(ctx: Context, message: IncomingMessage, command: Command) -> None:
    _ = gettext_for(ctx, ctx.moderation_language())
    counts = await ctx.repos.letters.counts_by_status()
    subscriptions = await ctx.repos.subscriptions.active()
    text = _(
        "Letters: {pending} pending, {approved} approved, {rejected} rejected, {withdrawn} withdrawn.\n"
        "Active subscriptions: {subscriptions}. Letters delivered: {delivered}."
    ).format(
        pending=counts.get("pending", 0),
        approved=counts.get("approved", 0),
        rejected=counts.get("rejected", 0),
        withdrawn=counts.get("withdrawn", 0),
        subscriptions=len(subscriptions),
        delivered=await ctx.repos.deliveries.sent_total(),
    )
    await answer(ctx, message, text)


async def ban_command(ctx: Context, message: IncomingMessage, command: Command) -> None:
    await _set_ban(ctx, message, command, banned=True)


async def unban_command(ctx: Context, message: IncomingMessage, command: Command) -> None:
    await _set_ban(ctx, message, command, banned=False)


async def _set_ban(ctx: Context, message: IncomingMessage, command: Command, banned: bool) -> None:
    assert message.sender is not None
    _ = gettext_for(ctx, ctx.moderation_language())
    number = letter_number(command.words[0]) if command.words else None
    letter = await ctx.repos.letters.get(number) if number is not None else None
    if letter is None:
        await answer(ctx, message, _("Which letter's sender? For example: {command}").format(
            command=command_text(ctx, message.chat.platform, ("ban" if banned else "unban") + " 12")))
        return
    sender = await ctx.repos.senders.get(letter.sender_id)
    account_hash = ctx.hasher.account_hash(sender.platform, sender.user_id) if sender is not None else None
    if not banned:
        await ctx.repos.bans.unban(account_hash, letter.sender_id)
    elif account_hash is None:
        text = _("The sender of letter #{number} can't be banned: the bot no longer knows who wrote it.")
        await answer(ctx, message, text.format(number=letter.id))
        return
    else:
        await ctx.repos.bans.ban(account_hash, letter.sender_id, ctx.clock.now())
    await ctx.repos.letters.record(Decision(
        letter.id, "ban" if banned else "unban", message.chat.platform, message.sender.user_id,
        message.sender.display_name, None, ctx.clock.now()))
    if banned:
        text = _("Sender {sender} (of letter #{number}) can no longer send letters.")
    else:
        text = _("Sender {sender} (of letter #{number}) can send letters again.")
    await answer(ctx, message, text.format(sender=letter.sender_id, number=letter.id))


async def help_moderators(ctx: Context, message: IncomingMessage, command: Command) -> None:
    _ = gettext_for(ctx, ctx.moderation_language())
    p = ctx.network(message.chat.platform).command_prefix
    text = _(
        "Every letter appears here as a card: approve or reject it with its buttons or reactions, or:\n"
        "{p}approve N · {p}reject N [reason]\n"
        "{p}pending: letters waiting · {p}stats: numbers\n"
        "{p}ban N / {p}unban N: refuse or accept again the sender of letter N\n"
        "{p}subscribe CHAT LANG / {p}unsubscribe CHAT: subscribe a channel, group or room\n"
        "{p}edit N text: replace letter N's text (take out a name, a place, a date) before deciding\n"
        "{p}lang N xx: correct letter N's language · {p}translation N LANG [text]: show or replace a translation\n"
        "{p}history N: everything done to letter N\n"
        "{p}subscribers: who receives letters · {p}id: this chat's id"
    ).format(p=p)
    await answer(ctx, message, text)

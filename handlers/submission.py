"""Supporters: start/help, a letter stored at once with a receipt and cards, client-split letters joined, withdraw."""

from __future__ import annotations

import logging
import unicodedata

from handlers import cards, privacy
from handlers.common import Command, command_text, gettext_for, letter_number, reader_language, reply, send
from handlers.context import MAX_LETTER_LENGTH, MAX_OPEN_LETTERS, SPLIT_MARGIN, Context
from handlers.events import IncomingMessage, OutgoingMessage
from storage.letters import Decision, Letter, NewPart
from storage.senders import Sender

log = logging.getLogger(__name__)


async def start(ctx: Context, message: IncomingMessage, command: Command) -> None:
    _ = gettext_for(ctx, reader_language(ctx, message))
    help_command = command_text(ctx, message.chat.platform, "help")
    text = _(
        "Hello! I carry letters of solidarity to people and movements around the world.\n"
        "Write your letter here, in any language: one message is one letter (long texts are fine).\n"
        "Moderators read every letter first; approved letters are translated and shared with our subscribers. "
        "Your name and account are never shown to them: sign your letter if you want to.\n"
        "{help} shows everything I can do."
    ).format(help=help_command)
    keeps = privacy.keeps_sentence(ctx, reader_language(ctx, message), message.chat.platform)
    await reply(ctx, message.chat, text + "\n" + keeps)


async def help_private(ctx: Context, message: IncomingMessage, command: Command) -> None:
    _ = gettext_for(ctx, reader_language(ctx, message))
    p = ctx.network(message.chat.platform).command_prefix
    text = _(
        "Write a message: it becomes a letter, and I answer with its number.\n"
        "{p}withdraw N: take back your letter N while it waits for the moderators.\n"
        "{p}forget: delete everything I know about you.\n"
        "{p}subscribe [language]: receive approved letters here, e.g. {p}subscribe es.\n"
        "{p}unsubscribe: stop receiving letters.\n"
        "{p}id: show this chat's id."
    ).format(p=p)
    keeps = privacy.keeps_sentence(ctx, reader_language(ctx, message), message.chat.platform)
    await reply(ctx, message.chat, text + "\n\n" + keeps)


def clean_text(text: str) -> str:
    """Drop control characters (binary junk, terminal escapes) but keep line breaks and tabs."""
    return "".join(
        char for char in text if char in "\n\t" or unicodedata.category(char) not in ("Cc", "Cs")
    ).strip()


async def letter(ctx: Context, message: IncomingMessage) -> None:
    """A supporter's message in a private chat: store it first, answer after."""
    assert message.sender is not None
    _ = gettext_for(ctx, reader_language(ctx, message))
    if message.text is None:
        text_only = _("I can only carry text letters for now: please write your letter as a message.")
        await reply(ctx, message.chat, text_only)
        return
    text = clean_text(message.text)
    if not text:
        await reply(ctx, message.chat, _("That message is empty. Write your letter as text, in any language."))
        return
    # Checked before anything is stored: a banned account leaves no new trace.
    if await ctx.repos.bans.is_banned(ctx.hasher.account_hash(message.chat.platform, message.sender.user_id)):
        await reply(ctx, message.chat, _("Sorry, the moderators no longer accept letters from this account."))
        return
    sender = await ctx.repos.senders.ensure(
        message.chat.platform, message.sender.user_id, message.chat.chat_id, message.sender.language, ctx.clock.now()
    )
    async with ctx.letters_lock:
        if not await _room_for_more(ctx, sender, message):
            return
        stored = await ctx.repos.letters.add_part(sender.id, _part(message, text), *_join_rule(ctx, message))
    if stored is None:
        return  # the same platform message again (a replayed update): it is stored already
    letter, _is_new = stored
    if letter.length > MAX_LETTER_LENGTH:
        log.info("letter #%d is %d characters long, over the limit", letter.id, letter.length)
    if _may_grow(ctx, letter, message):
        ctx.scheduler.call_later(ctx.policy.letter_join_seconds, lambda: announce_when_complete(ctx, letter.id))
    else:
        await announce(ctx, letter.id)


def _part(message: IncomingMessage, text: str) -> NewPart:
    return NewPart(
        platform=message.chat.platform,
        chat_id=message.chat.chat_id,
        message_id=message.message_id,
        text=text,
        length=message.length or len(text),
        received_at=message.received_at,
    )


def _join_rule(ctx: Context, message: IncomingMessage) -> tuple[float, int]:
    """(window, threshold): a message at least `threshold` long may be continued within `window` seconds."""
    if not message.limit:
        return (0.0, 1 << 62)  # a network without a length limit never splits a message
    return (ctx.policy.letter_join_seconds, message.limit - SPLIT_MARGIN)


def _may_grow(ctx: Context, letter: Letter, message: IncomingMessage) -> bool:
    window, threshold = _join_rule(ctx, message)
    return window > 0 and letter.last_part_length >= threshold


async def _room_for_more(ctx: Context, sender: Sender, message: IncomingMessage) -> bool:
    waiting = await ctx.repos.letters.waiting_from(sender.id)
    if waiting < MAX_OPEN_LETTERS:
        return True
    _ = gettext_for(ctx, reader_language(ctx, message))
    await reply(
        ctx,
        message.chat,
        _("You have {count} letters waiting for the moderators. Please wait for their decision before sending more.")
        .format(count=waiting),
    )
    return False


async def announce_when_complete(ctx: Context, letter_id: int) -> None:
    """Timer callback: announce once no further part can arrive, or look again when one just did."""
    letter = await ctx.repos.letters.get(letter_id)
    if letter is None or letter.announced_at is not None:
        return
    remaining = letter.last_part_at + ctx.policy.letter_join_seconds - ctx.clock.now()
    if remaining > 0:
        ctx.scheduler.call_later(remaining, lambda: announce_when_complete(ctx, letter_id))
        return
    await announce(ctx, letter_id)


async def announce(ctx: Context, letter_id: int) -> None:
    """The receipt to the sender and a card in every moderation room, once per letter."""
    async with ctx.letters_lock:
        letter = await ctx.repos.letters.get(letter_id)
        if letter is None or not await ctx.repos.letters.mark_announced(letter_id, ctx.clock.now()):
            return
        if letter.status != "pending":
            return  # withdrawn by `forget` while it could still grow: nothing to announce
        language = ctx.detector.detect(letter.text)
        if language != letter.language:
            await ctx.repos.letters.set_language(letter_id, language)
        letter = await ctx.repos.letters.get(letter_id)
    assert letter is not None
    sender = await ctx.repos.senders.get(letter.sender_id)
    if sender is None:
        return  # forgotten between its arrival and now
    await _send_receipt(ctx, sender, letter)
    if letter.length > MAX_LETTER_LENGTH:
        await _refuse_oversized(ctx, sender, letter)
        return
    await cards.post_cards(ctx, letter)


async def _send_receipt(ctx: Context, sender: Sender, letter: Letter) -> None:
    _ = gettext_for(ctx, sender.language)
    text = _(
        "📨 Thank you! Your letter #{number} is with the moderators. I will tell you here when they decide.\n"
        "Changed your mind? {command}"
    ).format(number=letter.id, command=command_text(ctx, sender.platform, f"withdraw {letter.id}"))
    await send(ctx, sender.platform, OutgoingMessage(chat_id=sender.chat_id, text=text))


async def _refuse_oversized(ctx: Context, sender: Sender, letter: Letter) -> None:
    """Too long to moderate or broadcast: withdrawn at once, and the sender is told how to fit it."""
    await ctx.repos.letters.decide(
        letter.id, Decision(letter.id, "withdraw", sender.platform, "bot", "bot", "too long", ctx.clock.now())
    )
    _ = gettext_for(ctx, sender.language)
    text = _(
        "Your letter #{number} is {length} characters long; letters can have at most {limit}. "
        "Please shorten it, or send it as several letters."
    ).format(number=letter.id, length=f"{letter.length:,}", limit=f"{MAX_LETTER_LENGTH:,}")
    await send(ctx, sender.platform, OutgoingMessage(chat_id=sender.chat_id, text=text))
    await privacy.after_told(ctx)


async def withdraw(ctx: Context, message: IncomingMessage, command: Command) -> None:
    assert message.sender is not None
    _ = gettext_for(ctx, reader_language(ctx, message))
    number = letter_number(command.words[0]) if command.words else None
    if number is None:
        usage = command_text(ctx, message.chat.platform, "withdraw 12")
        await reply(ctx, message.chat, _("Which letter? For example: {command}").format(command=usage))
        return
    letter = await ctx.repos.letters.get(number)
    sender = await ctx.repos.senders.find(message.chat.platform, message.sender.user_id)
    if letter is None or sender is None or letter.sender_id != sender.id:
        await reply(ctx, message.chat, _("You have no letter #{number}.").format(number=number))
        return
    # The sender's account is not recorded with the decision: the trail names them only by pseudonym.
    decision = Decision(number, "withdraw", message.chat.platform, "", "sender", None, ctx.clock.now())
    async with ctx.letters_lock:
        withdrawn = await ctx.repos.letters.decide(number, decision)
    if not withdrawn:
        await reply(ctx, message.chat, _("Letter #{number} was already decided and can't be withdrawn.")
                    .format(number=number))
        return
    await cards.show_status(ctx, number, cards.decision_status(ctx, decision))
    await reply(ctx, message.chat, _("Letter #{number} is withdrawn. Nobody will see it.").format(number=number))
    await privacy.after_told(ctx)


async def announce_leftovers(ctx: Context) -> None:
    """At start-up: letters stored before a crash but never announced get their receipt and cards now,
    and pending letters get the cards a crash or an outage kept them from (a new moderation room too)."""
    for letter in await ctx.repos.letters.unannounced():
        await announce_when_complete(ctx, letter.id)
    for letter in await ctx.repos.letters.pending(limit=10_000):
        await cards.post_cards(ctx, letter)

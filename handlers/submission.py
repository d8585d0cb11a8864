"""Supporters: start/help, a letter stored at once with a receipt and cards, client-split letters joined, limits,
the sender's own edits and deletions, withdraw."""

from __future__ import annotations

import logging
from dataclasses import replace

from handlers import cards, editing, media_intake, privacy
from handlers.common import (
    Command,
    account_of,
    answer,
    command_text,
    gettext_for,
    letter_number,
    reader_language,
    refuse,
    reply,
)
from handlers.context import DAY, MAX_LETTER_LENGTH, MAX_OPEN_LETTERS, SPLIT_MARGIN, Context
from handlers.domain import LetterAnnounced, LetterWithdrawn
from handlers.events import (
    UNDECRYPTABLE,
    ChatRef,
    IncomingMessage,
    Media,
    MessageDeleted,
    MessageEdited,
    OutgoingMessage,
)
from handlers.outbox import say
from handlers.text import clean_text
from storage.letters import (
    APPROVED,
    PENDING,
    REJECTED,
    SENDER_EDIT,
    WITHDRAWN,
    Decision,
    Growing,
    Letter,
    NewPart,
    PartOf,
)
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
    await answer(ctx, message, text + "\n" + keeps)


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
    await answer(ctx, message, text + "\n\n" + keeps)


async def letter(ctx: Context, message: IncomingMessage) -> None:
    """A supporter's message in a private chat: checked against the limits, stored, then answered."""
    assert message.sender is not None
    with_media = bool(message.attachments) and ctx.media is not None
    if await _refused_at_once(ctx, message, with_media):
        return
    if await ctx.repos.letters.has_part(message.chat.platform, message.chat.chat_id, message.message_id):
        return  # the same platform message again (a replayed update): it is stored already
    media = await media_intake.take(ctx, message) if with_media else []
    if media is None:
        return  # refused, and answered
    stored = await _store_with_media(ctx, message, media, with_media)
    if stored is None:
        return
    if _may_grow(ctx, stored, message):
        ctx.scheduler.call_later(ctx.policy.letter_join_seconds, lambda: announce_when_complete(ctx, stored.id))
    else:
        await announce(ctx, stored.id)


async def _refused_at_once(ctx: Context, message: IncomingMessage, with_media: bool) -> bool:
    """Nothing to carry, or a banned sender: answered before anything is fetched or stored."""
    _ = gettext_for(ctx, reader_language(ctx, message))
    if message.text is None and not with_media:
        await refuse(ctx, message, "not text", _not_carried(ctx, message))
        return True
    if not clean_text(message.text or "") and not with_media:
        await refuse(ctx, message, "empty", _("That message is empty. Write your letter as text, in any language."))
        return True
    # A banned account leaves no new trace.
    if await ctx.repos.bans.is_banned(account_of(ctx, message)):
        await refuse(ctx, message, "banned", _("Sorry, the moderators no longer accept letters from this account."))
        return True
    return False


async def _store_with_media(
    ctx: Context, message: IncomingMessage, media: list[Media], with_media: bool
) -> Growing | None:
    """The part, its media and the note of what did not travel, in one transaction; None when not stored."""
    async with ctx.transaction():
        if await ctx.repos.letters.has_part(message.chat.platform, message.chat.chat_id, message.message_id):
            return None
        stored = await _store(ctx, message, _part(message, clean_text(message.text or "")))
        if stored is None:
            return None
        if media:
            await ctx.repos.media.add(stored.id, [media_intake.stored(item) for item in media])
        left_out = message.left_out or (message.attachments if not with_media else ())
        if left_out:
            await _tell_left_out(ctx, message, len(left_out))  # once, with the letter: a replay is not told again
        return stored


def _not_carried(ctx: Context, message: IncomingMessage) -> str:
    _ = gettext_for(ctx, reader_language(ctx, message))
    if ctx.media is None:
        return _("I can only carry text letters for now: please write your letter as a message.")
    return _("I can carry text, photos, videos and documents, but not this kind of message (a sticker, a voice "
             "note, a poll or a location): please write your letter as a message.")


async def _tell_left_out(ctx: Context, message: IncomingMessage, count: int) -> None:
    """Attachments that did not travel with the letter: the sender learns it."""
    ngettext = ctx.texts.ngettext(reader_language(ctx, message))
    text = ngettext(
        "Your message had {count} attachment; I can carry only the text of a letter for now, so it was not kept.",
        "Your message had {count} attachments; I can carry only the text of a letter for now, so they were not "
        "kept.",
        count,
    ).format(count=count)
    await answer(ctx, message, text)


async def prove_first(ctx: Context, message: IncomingMessage, command: Command) -> None:
    """A command that changes something, from a sender the network cannot vouch for (a mail's From can be forged):
    done only once its sender answers this reply, which reaches the real owner of the address."""
    _ = gettext_for(ctx, reader_language(ctx, message))
    typed = command_text(ctx, message.chat.platform, " ".join((command.name, command.args)).strip())
    await answer(ctx, message, _("To make sure it is really you, reply to this message with “{command}”.").format(
        command=typed))


async def unreadable(ctx: Context, message: IncomingMessage) -> None:
    """An encrypted message the bot could not read. Keys that never came are answered every time (each such
    message was lost); a bot without encryption says so once an hour, like any refusal."""
    _ = gettext_for(ctx, reader_language(ctx, message))
    if message.content_kind == UNDECRYPTABLE:
        await answer(ctx, message, _("I could not decrypt your message. Please send it again."))
        return
    await refuse(ctx, message, "encrypted", _(
        "This chat is end-to-end encrypted, and I cannot read encrypted messages. "
        "Please write to me in a chat without encryption."))


async def _store(ctx: Context, message: IncomingMessage, part: NewPart) -> Growing | None:
    """The part joined to the letter it continues, or a new letter within the limits; None when refused.

    Reads and writes only the letter's own row and the new part, however long the letter has grown.
    """
    assert message.sender is not None
    sender = await ctx.repos.senders.find(message.chat.platform, message.sender.user_id)
    growing = await ctx.repos.letters.growing(sender.id) if sender is not None else None
    if growing is not None and _continues(ctx, growing, message, part):
        if growing.length + part.length > MAX_LETTER_LENGTH:
            await _refuse_continuation(ctx, message, growing)
            return None
        return await ctx.repos.letters.add_part(growing, part)
    if not await _within_limits(ctx, message, sender, part):
        return None
    sender = await ctx.repos.senders.ensure(
        message.chat.platform, message.sender.user_id, message.chat.chat_id, message.sender.language, ctx.clock.now()
    )
    return await ctx.repos.letters.start_letter(sender.id, part)


def _part(message: IncomingMessage, text: str) -> NewPart:
    return NewPart(
        platform=message.chat.platform,
        chat_id=message.chat.chat_id,
        message_id=message.message_id,
        text=text,
        length=message.length or len(text),
        received_at=message.received_at,
        media_group=message.media_group,
    )


def _join_rule(ctx: Context, message: IncomingMessage) -> tuple[float, int]:
    """(window, threshold): a message at least `threshold` long may be continued within `window` seconds."""
    if not message.limit:
        return (0.0, 1 << 62)  # a network without a length limit never splits a message
    return (ctx.policy.letter_join_seconds, message.limit - SPLIT_MARGIN)


def _continues(ctx: Context, growing: Growing, message: IncomingMessage, part: NewPart) -> bool:
    if message.media_group is not None:  # an album: its pictures arrive as messages of their own
        in_time = part.received_at - growing.last_part_at <= ctx.policy.letter_join_seconds
        return growing.media_group == message.media_group and in_time
    window, threshold = _join_rule(ctx, message)
    return part.received_at - growing.last_part_at <= window and growing.last_part_length >= threshold


def _may_grow(ctx: Context, letter: Growing, message: IncomingMessage) -> bool:
    if message.media_group is not None:
        return ctx.policy.letter_join_seconds > 0  # the album's other pictures are on their way
    window, threshold = _join_rule(ctx, message)
    # Also at the length limit: what the client sends after it is refused, rather than becoming new letters.
    return window > 0 and letter.last_part_length >= threshold


async def _within_limits(ctx: Context, message: IncomingMessage, sender: Sender | None, part: NewPart) -> bool:
    """A new letter: not too long, not too many waiting, not too many today. Refused (once an hour) if not."""
    _ = gettext_for(ctx, reader_language(ctx, message))
    if part.length > MAX_LETTER_LENGTH:
        text = _("Your letter is {length} characters long; letters can have at most {limit}. "
                 "Please shorten it, or send it as several letters.")
        await refuse(ctx, message, "too long", text.format(length=f"{part.length:,}",
                                                            limit=f"{MAX_LETTER_LENGTH:,}"))
        return False
    if sender is None:
        return True  # a first letter
    waiting = await ctx.repos.letters.waiting_from(sender.id)
    if waiting >= MAX_OPEN_LETTERS:
        text = _("You have {count} letters waiting for the moderators. Please wait for their decision before "
                 "sending more.")
        await refuse(ctx, message, "waiting", text.format(count=waiting))
        return False
    today = await ctx.repos.letters.letters_since(sender.id, ctx.clock.now() - DAY)
    if today >= ctx.policy.letters_per_day:
        text = _("You have sent {count} letters in the last 24 hours, as many as I can take from one person. "
                 "Please write again tomorrow.")
        await refuse(ctx, message, "daily", text.format(count=today))
        return False
    return True


async def _refuse_continuation(ctx: Context, message: IncomingMessage, growing: Growing) -> None:
    _ = gettext_for(ctx, reader_language(ctx, message))
    text = _("Your letter #{number} has reached {limit} characters, the most a letter can have: the rest of your "
             "text was not added. Please send it as another letter.")
    await refuse(ctx, message, "too long", text.format(number=growing.id, limit=f"{MAX_LETTER_LENGTH:,}"))


async def edited(ctx: Context, edit: MessageEdited) -> None:
    """The sender changed a message that is part of a letter: while pending the letter changes with it."""
    part = await _own_part(ctx, edit)
    if part is None:
        return  # not a letter of theirs (a command, another chat), or no longer linked to them
    _ = gettext_for(ctx, edit.sender.language or ctx.policy.default_language)
    text = clean_text(edit.text or "")
    length = edit.length or len(text)
    if part.status == PENDING and (not text or part.letter_length - part.length + length > MAX_LETTER_LENGTH):
        await refuse(ctx, edit, "edit", _("Your edit of letter #{number} was not applied: a letter must have "
                                           "some text and at most {limit} characters.").format(
            number=part.letter_id, limit=f"{MAX_LETTER_LENGTH:,}"))
        return
    decision = Decision(part.letter_id, SENDER_EDIT, edit.chat.platform, "", "sender", None, ctx.clock.now())
    async with ctx.transaction():
        replaced = part.status == PENDING and await ctx.repos.letters.replace_part(part, text, length, decision)
        if not replaced:
            await _refuse_late_edit(ctx, edit, part.letter_id)
            return
        await editing.forget_translations(ctx, part.letter_id)
        if part.announced:
            await _detect_again(ctx, part.letter_id)
            await cards.refresh(ctx, part.letter_id)
            await reply(ctx, edit.chat, _("Letter #{number} now has your new text.").format(number=part.letter_id))


async def _own_part(ctx: Context, event: MessageEdited | MessageDeleted) -> PartOf | None:
    part = await ctx.repos.letters.part_of(event.chat.platform, event.chat.chat_id, event.message_id)
    if part is None:
        return None
    sender = await ctx.repos.senders.find(event.chat.platform, event.sender.user_id)
    return part if sender is not None and sender.id == part.sender_id else None


async def _refuse_late_edit(ctx: Context, edit: MessageEdited, number: int) -> None:
    _ = gettext_for(ctx, edit.sender.language or ctx.policy.default_language)
    letter = await ctx.repos.letters.get(number)
    status = letter.status if letter is not None else WITHDRAWN
    texts = {
        APPROVED: _("Letter #{number} was already approved; your edit was not applied."),
        REJECTED: _("Letter #{number} was already rejected; your edit was not applied."),
    }
    text = texts.get(status, _("Letter #{number} was withdrawn; your edit was not applied."))
    await refuse(ctx, edit, "late edit", text.format(number=number))


async def _detect_again(ctx: Context, letter_id: int) -> None:
    """The new text's language, unless a moderator has set it by hand."""
    letter = await ctx.repos.letters.get(letter_id)
    if letter is None or await ctx.repos.letters.latest(letter_id, "lang") is not None:
        return
    language = ctx.detector.detect(letter.text)
    if language != letter.language:
        await ctx.repos.letters.set_language(letter_id, language)


async def deleted(ctx: Context, deletion: MessageDeleted) -> None:
    """The sender deleted a message of a pending letter: the letter is withdrawn, as with `withdraw N`."""
    part = await _own_part(ctx, deletion)
    if part is None or part.status != PENDING:
        return
    await _withdraw(ctx, deletion.chat, deletion.sender.language, part.letter_id)


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
    """The receipt to the sender and a card in every moderation room, once per letter, written together."""
    letter = await ctx.repos.letters.get(letter_id)
    if letter is None or letter.announced_at is not None:
        return
    # Detected before the transaction: a long text takes lingua a while, and the writes wait for nothing.
    language = ctx.detector.detect(letter.text) if letter.status == PENDING else letter.language
    async with ctx.transaction():
        if not await ctx.repos.letters.mark_announced(letter_id, ctx.clock.now()):
            return
        letter = await ctx.repos.letters.get(letter_id)
        if letter is None or letter.status != PENDING:
            return  # withdrawn by `forget` while it could still grow: nothing to announce
        if language != letter.language:
            await ctx.repos.letters.set_language(letter_id, language)
            letter = replace(letter, language=language)
        sender = await ctx.repos.senders.get(letter.sender_id)
        if sender is None:
            return  # forgotten between its arrival and now
        await _send_receipt(ctx, sender, letter, await first_message(ctx, letter.id))
        if letter.length > MAX_LETTER_LENGTH:
            await _refuse_oversized(ctx, sender, letter)
            return
        await ctx.events.publish(ctx, LetterAnnounced(letter))


async def first_message(ctx: Context, letter_id: int) -> str | None:
    """The message a letter began with, which its receipt and notice answer (where networks thread answers)."""
    parts = await ctx.repos.letters.part_ids(letter_id)
    return parts[0][1] if parts else None


def language_of(ctx: Context, sender: Sender, letter: Letter) -> str:
    """The sender's language for the bot's own texts: their client's, else their letter's (email has no client
    language, only what a mail says or is written in), else the default."""
    if sender.language:
        return sender.language
    if letter.language != "und" and ctx.texts.is_language(letter.language):
        return letter.language
    return ctx.policy.default_language


async def _send_receipt(ctx: Context, sender: Sender, letter: Letter, reply_to: str | None) -> None:
    _ = gettext_for(ctx, language_of(ctx, sender, letter))
    text = _(
        "📨 Thank you! Your letter #{number} is with the moderators. I will tell you here when they decide.\n"
        "Changed your mind? {command}"
    ).format(number=letter.id, command=command_text(ctx, sender.platform, f"withdraw {letter.id}"))
    await say(ctx, sender.platform, OutgoingMessage(chat_id=sender.chat_id, text=text, reply_to=reply_to))


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
    await say(ctx, sender.platform, OutgoingMessage(chat_id=sender.chat_id, text=text))
    privacy.after_told(ctx)


async def withdraw(ctx: Context, message: IncomingMessage, command: Command) -> None:
    assert message.sender is not None
    _ = gettext_for(ctx, reader_language(ctx, message))
    number = letter_number(command.words[0]) if len(command.words) == 1 else None
    if number is None:
        usage = command_text(ctx, message.chat.platform, "withdraw 12")
        await answer(ctx, message, _("Which letter? For example: {command}").format(command=usage))
        return
    letter = await ctx.repos.letters.get(number)
    sender = await ctx.repos.senders.find(message.chat.platform, message.sender.user_id)
    if letter is None or sender is None or letter.sender_id != sender.id:
        await answer(ctx, message, _("You have no letter #{number}.").format(number=number))
        return
    await _withdraw(ctx, message.chat, reader_language(ctx, message), number)


async def _withdraw(ctx: Context, chat: ChatRef, language: str | None, number: int) -> None:
    _ = gettext_for(ctx, language)
    # The sender's account is not recorded with the decision: the trail names them only by pseudonym.
    decision = Decision(number, "withdraw", chat.platform, "", "sender", None, ctx.clock.now())
    async with ctx.transaction():
        if not await ctx.repos.letters.decide(number, decision):
            await reply(ctx, chat, _("Letter #{number} was already decided and can't be withdrawn.")
                        .format(number=number))
            return
        await reply(ctx, chat, _("Letter #{number} is withdrawn. Nobody will see it.").format(number=number))
        await ctx.events.publish(ctx, LetterWithdrawn(decision))


async def announce_leftovers(ctx: Context) -> None:
    """At start-up: letters stored before a crash but never announced get their receipt and cards now,
    and pending letters get the cards a crash or an outage kept them from (a new moderation room too)."""
    for letter in await ctx.repos.letters.unannounced():
        await announce_when_complete(ctx, letter.id)
    for letter in await ctx.repos.letters.pending(limit=10_000):
        await cards.show(ctx, letter.id, whole=True)

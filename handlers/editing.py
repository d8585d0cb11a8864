"""Moderators protecting writers before they decide: `edit N text`, `lang N xx`, `translation N LANG [text]`,
and `history N`, the whole trail of what was done to a letter and by whom.

A correction is refused once it could only reach a text nobody may see any more (withdrawn, rejected) or that
moderators have not seen yet (not announced): sending such a text to a translator would leak it.
"""

from __future__ import annotations

import time

from handlers import cards
from handlers.common import Command, answer, command_text, gettext_for, letter_number
from handlers.context import Context
from handlers.events import IncomingMessage
from handlers.text import clean_text, utf16_len
from storage.letters import APPROVED, PENDING, SENDER_EDIT, Decision, Letter

_CORRECTABLE = (PENDING, APPROVED)


def _decision(ctx: Context, message: IncomingMessage, letter_id: int, action: str, reason: str | None) -> Decision:
    assert message.sender is not None
    return Decision(letter_id, action, message.chat.platform, message.sender.user_id, message.sender.display_name,
                    reason, ctx.clock.now())


async def _letter_or_usage(ctx: Context, message: IncomingMessage, number: int | None, example: str) -> Letter | None:
    _ = gettext_for(ctx, ctx.moderation_language())
    if number is None:
        usage = command_text(ctx, message.chat.platform, example)
        await answer(ctx, message, _("Which letter? For example: {command}").format(command=usage))
        return None
    letter = await ctx.repos.letters.get(number)
    if letter is None or letter.announced_at is None:
        await answer(ctx, message, _("There is no letter #{number}.").format(number=number))
        return None
    return letter


async def _refuse_decided(ctx: Context, message: IncomingMessage, letter: Letter, allowed: tuple[str, ...]) -> bool:
    """True (and the moderators told why) when the letter's state does not allow this change."""
    if letter.status in allowed:
        return False
    _ = gettext_for(ctx, ctx.moderation_language())
    texts = {
        "approved": _("#{number} is already approved: this can only be changed before the decision."),
        "rejected": _("#{number} was rejected: its text is not used any more."),
        "withdrawn": _("#{number} was withdrawn: its text is not used any more."),
    }
    await answer(ctx, message, texts[letter.status].format(number=letter.id))
    return True


async def edit_command(ctx: Context, message: IncomingMessage, command: Command) -> None:
    """`edit N text`: the letter's new text, before the decision; cards show it and who edited."""
    _ = gettext_for(ctx, ctx.moderation_language())
    number_word, _sep, rest = command.args.partition(" ")
    letter = await _letter_or_usage(ctx, message, letter_number(number_word), "edit 12 new text")
    if letter is None or await _refuse_decided(ctx, message, letter, (PENDING,)):
        return
    text = clean_text(rest)
    if not text:
        usage = command_text(ctx, message.chat.platform, f"edit {letter.id} new text")
        await answer(ctx, message, _("Write the new text after the number, for example: {command}").format(
            command=usage))
        return
    async with ctx.transaction():
        edited = await ctx.repos.letters.edit_text(letter.id, text, utf16_len(text),
                                                   _decision(ctx, message, letter.id, "edit", None))
        if not edited:
            await answer(ctx, message, _("#{number} is not pending any more.").format(number=letter.id))
            return
        await forget_translations(ctx, letter.id)
        await cards.refresh(ctx, letter.id)
        await answer(ctx, message, _("#{number} now has the new text; its translations will be made again.")
                    .format(number=letter.id))


async def forget_translations(ctx: Context, letter_id: int) -> None:
    await ctx.repos.translations.forget_made(letter_id)
    if ctx.translating is not None:
        ctx.translating.forget(letter_id)


async def lang_command(ctx: Context, message: IncomingMessage, command: Command) -> None:
    """`lang N xx`: correct a letter's detected language (`und`: send it untranslated)."""
    _ = gettext_for(ctx, ctx.moderation_language())
    words = command.words
    number = letter_number(words[0]) if len(words) == 2 else None
    code = words[1].lower() if len(words) == 2 else ""
    if number is not None and not (code == "und" or ctx.texts.is_language(code)):
        number = None
    if number is None:
        usage = command_text(ctx, message.chat.platform, "lang 12 es")
        await answer(ctx, message, _("Which letter and language? For example: {command}").format(command=usage))
        return
    letter = await _letter_or_usage(ctx, message, number, "lang 12 es")
    if letter is None or await _refuse_decided(ctx, message, letter, _CORRECTABLE):
        return
    name = ctx.texts.language_name(code, ctx.moderation_language())
    async with ctx.transaction():
        await ctx.repos.letters.set_language(number, code)
        await ctx.repos.letters.record(_decision(ctx, message, number, "lang", code))
        await forget_translations(ctx, number)
        await cards.refresh(ctx, number)
        await answer(ctx, message, _("Letter #{number} is now marked as {language}.").format(
            number=number, language=name))


async def translation_command(ctx: Context, message: IncomingMessage, command: Command) -> None:
    """`translation N LANG` shows the stored translation; `translation N LANG text` replaces it (while pending)."""
    _ = gettext_for(ctx, ctx.moderation_language())
    parts = command.args.split(None, 2)
    number = letter_number(parts[0]) if len(parts) >= 2 else None
    language = parts[1].lower() if len(parts) >= 2 else ""
    if number is None or not ctx.texts.is_language(language):
        usage = command_text(ctx, message.chat.platform, "translation 12 fr")
        await answer(ctx, message, _("Which letter and language? For example: {command}").format(command=usage))
        return
    letter = await _letter_or_usage(ctx, message, number, "translation 12 fr")
    replacing = len(parts) == 3
    if letter is None or await _refuse_decided(ctx, message, letter, (PENDING,) if replacing else _CORRECTABLE):
        return
    name = ctx.texts.language_name(language, ctx.moderation_language())
    if replacing:
        async with ctx.transaction():
            await ctx.repos.translations.put(letter.id, language, parts[2].strip(), "moderator", ctx.clock.now())
            await ctx.repos.letters.record(_decision(ctx, message, letter.id, "translation", language))
            await cards.refresh(ctx, letter.id)
            await answer(ctx, message, _("The {language} translation of #{number} is replaced; letters not yet "
                                         "sent will use it.").format(language=name, number=letter.id))
        return
    stored = await ctx.repos.translations.get(letter.id, language)
    if stored is not None:
        title = _("#{number} in {language}:").format(number=letter.id, language=name)
        await answer(ctx, message, stored, title=title)
        return
    if ctx.translating is not None and letter.language not in ("und", language):
        ctx.translating.request(letter, language)
        text = _("No {language} translation of #{number} yet; I am making one. Ask again in a moment.")
    else:
        text = _("No {language} translation of #{number} is stored.")
    await answer(ctx, message, text.format(language=name, number=letter.id))


async def history_command(ctx: Context, message: IncomingMessage, command: Command) -> None:
    """`history N`: received, edited, language set, translation replaced, decided, delivered — who and when."""
    _ = gettext_for(ctx, ctx.moderation_language())
    number = letter_number(command.words[0]) if command.words else None
    letter = await _letter_or_usage(ctx, message, number, "history 12")
    if letter is None:
        return
    lines = [_("{time} received from sender {sender}").format(time=_when(letter.created_at), sender=letter.sender_id)]
    lines += [_history_line(ctx, entry) for entry in await ctx.repos.letters.history(letter.id)]
    if letter.reported_at is not None:
        progress = await ctx.repos.deliveries.progress(letter.id)
        lines.append(_when(letter.reported_at) + " " + cards.progress_text(ctx, progress))
    title = _("History of letter #{number}:").format(number=letter.id)
    await answer(ctx, message, "\n".join(lines), title=title)


def _history_line(ctx: Context, entry: Decision) -> str:
    _ = gettext_for(ctx, ctx.moderation_language())
    language = ctx.texts.language_name(entry.reason or "und", ctx.moderation_language())
    texts = {
        "approve": _("approved by {moderator}"),
        "reject": _("rejected by {moderator}"),
        "withdraw": _("withdrawn by its sender"),
        "edit": _("text edited by {moderator}"),
        SENDER_EDIT: _("text edited by its sender"),
        "lang": _("language set to {language} by {moderator}"),
        "translation": _("{language} translation replaced by {moderator}"),
        "ban": _("sender banned by {moderator}"),
        "unban": _("sender's ban lifted by {moderator}"),
    }
    moderator = entry.moderator if entry.moderator_id != "bot" else _("the bot")
    text = texts.get(entry.action, entry.action).format(moderator=moderator, language=language)
    if entry.action == "reject" and entry.reason:
        text += f": “{entry.reason}”"
    if entry.action == "withdraw" and entry.moderator_id == "bot":
        text = _("withdrawn by the bot ({reason})").format(reason=entry.reason or "")
    return f"{_when(entry.decided_at)} {text}"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))

"""What subscribers receive for a letter, and the report to moderators when a broadcast ends."""

from __future__ import annotations

import logging

from handlers import cards
from handlers.common import gettext_for, send
from handlers.context import Context
from handlers.events import OutgoingMessage
from handlers.text import split_text
from storage.letters import Letter

log = logging.getLogger(__name__)

# Room for "✊ Letter of solidarity #N (k/n)" and the "translated from" line inside one message.
BROADCAST_OVERHEAD = 200


async def text_in(ctx: Context, letter: Letter, language: str) -> tuple[str, str | None]:
    """The letter's text for readers of `language`, and the language it was translated from (None: original).

    A translation is made once per letter and language, stored, and reused by every subscription.
    """
    if ctx.translator is None or letter.language in ("und", language):
        return letter.text, None
    stored = await ctx.repos.translations.get(letter.id, language)
    if stored is None:
        stored = await ctx.translator.translate(letter.text, letter.language, language)
        await ctx.repos.translations.put(letter.id, language, stored, ctx.translator.name, ctx.clock.now())
    return stored, letter.language


async def compose(ctx: Context, letter: Letter, platform: str, chat_id: str, language: str) -> list[OutgoingMessage]:
    """The messages of one delivery, in order: numbered parts cut at paragraph or sentence boundaries.

    Nothing here names the sender: a letter reaches subscribers as its text alone.
    """
    _ = gettext_for(ctx, language)
    text, source = await text_in(ctx, letter, language)
    footer = None
    if source is not None:
        footer = _("— translated from {language}").format(language=ctx.texts.language_name(source, language))
    network = ctx.network(platform)
    bodies = [part.strip() for part in split_text(text, network.max_text_length - BROADCAST_OVERHEAD,
                                                  network.text_length)]
    title = _("✊ Letter of solidarity #{number}").format(number=letter.id)
    messages = []
    for index, body in enumerate(bodies):
        numbered = title if len(bodies) == 1 else f"{title} ({index + 1}/{len(bodies)})"
        messages.append(OutgoingMessage(
            chat_id=chat_id,
            text=body,
            title=numbered,
            footer=footer if index == len(bodies) - 1 else None,
            idempotency_key=f"relay-{letter.id}-{chat_id}-{index}",
        ))
    return messages


async def report_if_finished(ctx: Context, letter_id: int) -> None:
    """Once no delivery of the letter is open: the final status on its cards and a report in every room."""
    progress = await ctx.repos.deliveries.progress(letter_id)
    if progress.open:
        return
    if not await ctx.repos.letters.mark_reported(letter_id, ctx.clock.now()):
        return
    decision = await ctx.repos.letters.deciding(letter_id)
    if decision is None:
        return
    await cards.show_status(ctx, letter_id, cards.decision_status(ctx, decision, progress))
    text = await _report_text(ctx, letter_id)
    for room in ctx.policy.moderation_rooms:
        await send(ctx, room.platform, OutgoingMessage(chat_id=room.chat_id, text=text, silent=True))


async def _report_text(ctx: Context, letter_id: int) -> str:
    _ = gettext_for(ctx, ctx.moderation_language())
    progress = await ctx.repos.deliveries.progress(letter_id)
    text = _("#{number} delivered to {sent} of {total} subscribers").format(
        number=letter_id, sent=progress.sent, total=progress.total
    )
    problems = await ctx.repos.deliveries.problems(letter_id)
    dropped = [f"{chat}: {reason}" for state, chat, reason in problems if state == "dropped"]
    failed = [f"{chat}: {reason}" for state, chat, reason in problems if state == "failed"]
    if dropped:
        text += "; " + _("{count} deactivated ({reasons})").format(count=len(dropped), reasons="; ".join(dropped))
    if failed:
        text += "; " + _("{count} failed ({reasons})").format(count=len(failed), reasons="; ".join(failed))
    return text + "."

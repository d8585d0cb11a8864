"""What subscribers receive for a letter, and the report to moderators when a broadcast ends."""

from __future__ import annotations

import logging
from dataclasses import replace

from handlers import cards, media_intake
from handlers.common import command_text, gettext_for
from handlers.context import Context
from handlers.domain import LetterDecided, LetterPublished
from handlers.events import ChatKind, Media, OutgoingMessage
from handlers.outbox import queue_broadcast, say
from handlers.ports import Capability
from handlers.subscriptions import subscriber_name
from handlers.text import split_text
from handlers.translating import LetterText
from storage.letters import Letter

log = logging.getLogger(__name__)

# Room for "✊ Letter of solidarity #N (k/n)" and the "translated from" line inside one message.
BROADCAST_OVERHEAD = 200


async def text_in(ctx: Context, letter: Letter, language: str) -> LetterText:
    """The letter's text for readers of `language`: a stored translation, the original, or NotReady."""
    if ctx.translating is None:
        stored = await ctx.repos.translations.get(letter.id, language)  # a moderator's own translation
        if stored is not None and letter.language not in ("und", language):
            return LetterText(stored, translated_from=letter.language)
        return LetterText(letter.text)
    return await ctx.translating.text_for(letter, language)


def _footer(ctx: Context, letter: Letter, text: LetterText, platform: str, language: str) -> str | None:
    _ = gettext_for(ctx, language)
    original = ctx.texts.language_name(letter.language, language)
    lines = []
    if text.translated_from is not None:
        lines.append(_("— translated from {language}").format(language=original))
    elif text.untranslated:
        lines.append(_("— no translation was available: this is the original, in {language}").format(
            language=original))
    if Capability.SUBSCRIBER_FOOTER in ctx.network(platform).capabilities:
        stop = command_text(ctx, platform, "unsubscribe")
        lines.append(_("You receive these letters because you subscribed. Reply “{command}” to stop them.").format(
            command=stop))
    return "\n".join(lines) or None


def render(
    ctx: Context, letter: Letter, platform: str, language: str, letter_text: LetterText, media: tuple[Media, ...] = ()
) -> list[OutgoingMessage]:
    """The parts of a letter for one platform and language, not yet addressed (the same for every chat); the first
    carries the letter's media."""
    _ = gettext_for(ctx, language)
    footer = _footer(ctx, letter, letter_text, platform, language)
    network = ctx.network(platform)
    limit = network.max_text_length - BROADCAST_OVERHEAD
    # A picture without a caption is still one message: the picture under the title.
    bodies = [part.strip() for part in split_text(letter_text.text, limit, network.text_length)] or [""]
    title = _("✊ Letter of solidarity #{number}").format(number=letter.id)
    return [
        OutgoingMessage(
            chat_id="",
            text=body,
            title=title if len(bodies) == 1 else f"{title} ({index + 1}/{len(bodies)})",
            footer=footer if index == len(bodies) - 1 else None,
            broadcast=True,
            media=media if index == 0 else (),
        )
        for index, body in enumerate(bodies)
    ]


async def compose(ctx: Context, letter: Letter, platform: str, language: str) -> list[OutgoingMessage]:
    """The letter for readers of `language` on `platform`, with its media (NotReady while being translated)."""
    text = await text_in(ctx, letter, language)
    media = media_intake.outgoing(letter.id, await ctx.repos.media.of(letter.id))
    return render(ctx, letter, platform, language, text, media)


def address(parts: list[OutgoingMessage], letter_id: int, chat_id: str) -> list[OutgoingMessage]:
    # The key is stable across retries and restarts, so a platform with idempotent sends never posts twice.
    return [replace(part, chat_id=chat_id, idempotency_key=f"relay-{letter_id}-{chat_id}-{index}")
            for index, part in enumerate(parts)]


async def show_progress(ctx: Context, letter_id: int) -> None:
    """"delivering 340/1000" on the letter's cards while its broadcast runs (rendered when the card is sent)."""
    await cards.show(ctx, letter_id)


async def publish_if_done(ctx: Context, letter_id: int) -> None:
    """Once no delivery of the letter is open, it is published: LetterPublished, once (marked in the database,
    in the transaction that writes what the event's subscribers say)."""
    if await ctx.repos.deliveries.any_open(letter_id):
        return
    async with ctx.repos.db.transaction():
        if not await ctx.repos.letters.mark_reported(letter_id, ctx.clock.now()):
            return
        progress = await ctx.repos.deliveries.progress(letter_id)
        decision = await ctx.repos.letters.deciding(letter_id)
        if decision is not None:
            await ctx.events.publish(ctx, LetterPublished(decision, progress))


async def report(ctx: Context, event: LetterPublished) -> None:
    """A published letter's report in every moderation room: how many received it, and what went wrong."""
    text = await _report_text(ctx, event.decision.letter_id)
    for room in ctx.policy.moderation_rooms:
        await say(ctx, room.platform, OutgoingMessage(chat_id=room.chat_id, text=text, silent=True), ChatKind.GROUP)


async def _report_text(ctx: Context, letter_id: int) -> str:
    _ = gettext_for(ctx, ctx.moderation_language())
    progress = await ctx.repos.deliveries.progress(letter_id)
    text = _("#{number} delivered to {sent} of {total} subscribers").format(
        number=letter_id, sent=progress.sent, total=progress.total
    )
    problems = await ctx.repos.deliveries.problems(letter_id)
    named = [(state, f"{subscriber_name(ctx, subscription)}: {reason}") for state, subscription, reason in problems]
    dropped = [text for state, text in named if state == "dropped"]
    failed = [text for state, text in named if state == "failed"]
    if dropped:
        text += "; " + _("{count} deactivated ({reasons})").format(count=len(dropped), reasons="; ".join(dropped))
    if failed:
        text += "; " + _("{count} failed ({reasons})").format(count=len(failed), reasons="; ".join(failed))
    return text + "."


async def on_decided(ctx: Context, event: LetterDecided) -> None:
    """An approved letter goes to the broadcast queue: a delivery for every active subscription (and a letter with
    no subscriber at all is published at once)."""
    if event.decision.action == "approve":
        await queue_broadcast(ctx, event.letter.id)
        await publish_if_done(ctx, event.letter.id)

"""Moderation cards: a letter in every moderation room, showing its state (pending with its buttons, decided,
delivering, delivered) on all its cards.

What a card should show is asked of the outbox (`show`); what it shows is rendered when the worker sends it
(`next_send`), from the letter as it is then: however many changes came, a card is sent its newest state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from handlers import media_intake
from handlers.common import gettext_for
from handlers.context import Context, Room
from handlers.domain import LetterAnnounced, LetterDecided, LetterPublished, LetterWithdrawn
from handlers.events import Action, ChatKind, Media, OutgoingMessage, RemoteRef
from handlers.outbox import say
from handlers.ports import Capability
from handlers.text import split_text
from storage.deliveries import Progress
from storage.letters import APPROVED, PENDING, REJECTED, SENDER_EDIT, WITHDRAWN, Decision, Letter
from storage.outbox import CardPart

log = logging.getLogger(__name__)

# Room for the card's header and status line inside one platform message.
CARD_OVERHEAD = 400


# The decisions a card offers, each with its symbol: the reaction that means it where a card has no buttons.
DECISION_SYMBOLS = {"approve": "✅", "reject": "❌"}


def card_actions(ctx: Context, letter_id: int) -> tuple[Action, ...]:
    _ = gettext_for(ctx, ctx.moderation_language())
    labels = {"approve": _("✅ Approve"), "reject": _("❌ Reject")}
    return tuple(Action(labels[decision], f"{decision}:{letter_id}", symbol)
                 for decision, symbol in DECISION_SYMBOLS.items())


async def card_title(ctx: Context, letter: Letter) -> str:
    language = ctx.moderation_language()
    _ = gettext_for(ctx, language)
    count = await ctx.repos.letters.count_by_sender(letter.sender_id, letter.id)
    header = _("📨 Letter #{number} · {language} · sender {sender} (letter {count} from them) · {length} characters")
    return header.format(
        number=letter.id,
        language=ctx.texts.language_name(letter.language, language),
        sender=letter.sender_id,
        count=count,
        length=f"{letter.length:,}",
    )


def card_bodies(ctx: Context, room: Room, letter: Letter) -> list[str]:
    if _text_gone(letter):
        return [_removed(ctx)]
    network = ctx.network(room.platform)
    parts = split_text(letter.text, network.max_text_length - CARD_OVERHEAD, network.text_length)
    return [part.strip() for part in parts] or [""]


def _removed(ctx: Context) -> str:
    _ = gettext_for(ctx, ctx.moderation_language())
    return _("(The text of this letter was removed.)")


def _text_gone(letter: Letter) -> bool:
    """A rejected or withdrawn letter's text leaves its cards at once, long before retention deletes it."""
    return letter.status in (REJECTED, WITHDRAWN) or letter.text_removed


async def card_notes(ctx: Context, letter: Letter) -> list[str]:
    """What moderators changed on the letter: "edited by Mo", "French translation by Kim"."""
    _ = gettext_for(ctx, ctx.moderation_language())
    editor: str | None = None
    translators: dict[str, str] = {}
    sender_edited = False
    for entry in await ctx.repos.letters.history(letter.id):
        if entry.action == "edit":
            editor = entry.moderator
        elif entry.action == SENDER_EDIT:
            sender_edited, editor = True, None  # the sender's newer text replaced the moderator's edit
        elif entry.action == "translation" and entry.reason:
            translators[entry.reason] = entry.moderator
    notes = [_("✏️ edited by {moderator}").format(moderator=editor)] if editor else []
    if sender_edited:
        notes.insert(0, _("✏️ edited by the sender"))
    for language, moderator in sorted(translators.items()):
        name = ctx.texts.language_name(language, ctx.moderation_language())
        notes.append(_("🌐 {language} translation by {moderator}").format(language=name, moderator=moderator))
    return notes


async def card_message(
    ctx: Context, room: Room, letter: Letter, status: str | None, part: int = 0, bodies: list[str] | None = None
) -> OutgoingMessage:
    """The card's part `part`; the first part carries the header, the buttons while pending, and the status.

    `bodies`: the letter already cut for this room (see card_bodies), when the caller has it.
    """
    bodies = bodies or card_bodies(ctx, room, letter)
    if part > 0:
        _ = gettext_for(ctx, ctx.moderation_language())
        title = _("Letter #{number}, part {part} of {parts}").format(number=letter.id, part=part + 1, parts=len(bodies))
        return OutgoingMessage(chat_id=room.chat_id, text=bodies[part], title=title, silent=True,
                               quoted=not _text_gone(letter))
    actions = card_actions(ctx, letter.id) if letter.status == "pending" and status is None else ()
    media = () if _text_gone(letter) else media_intake.outgoing(letter.id, await ctx.repos.media.of(letter.id))
    notes = [*_media_notes(ctx, media), *await card_notes(ctx, letter), *([status] if status else [])]
    # The letter is quoted: whatever it says, it cannot pass for the bot's header or a decision line.
    return OutgoingMessage(
        chat_id=room.chat_id, text=bodies[0], title=await card_title(ctx, letter), footer="\n".join(notes) or None,
        actions=actions, quoted=not _text_gone(letter), media=media,
    )


def _media_notes(ctx: Context, media: tuple[Media, ...]) -> list[str]:
    """A file passed on as it came (a video, a PDF) may say who made it, where and when: the moderators decide."""
    kept = sum(1 for item in media if not item.metadata_removed)
    if not kept:
        return []
    ngettext = ctx.texts.ngettext(ctx.moderation_language())
    return [ngettext("⚠️ metadata not removed from {count} file: it may name its author or place",
                     "⚠️ metadata not removed from {count} files: they may name their author or place",
                     kept).format(count=kept)]


async def show(ctx: Context, letter_id: int, whole: bool = False) -> None:
    """Ask for the letter's cards to show it as it is now: a card in every moderation room that has none yet, and
    the newest state on those there are. Written to the outbox (cards lane), rendered when sent.

    `whole`: every part, as after the text changed; else the first part, which carries the status. A rejected or
    withdrawn letter's text leaves every part.
    """
    letter = await ctx.repos.letters.get(letter_id)
    if letter is None:
        return
    gone = _text_gone(letter)
    wanted = {CardPart(letter_id, card.platform, card.chat_id, card.part)
              for card in await ctx.repos.cards.for_letter(letter_id) if whole or gone or card.part == 0}
    if not gone:
        for room in ctx.policy.moderation_rooms:
            parts = len(card_bodies(ctx, room, letter)) if whole else 1
            wanted.update(CardPart(letter_id, room.platform, room.chat_id, part) for part in range(parts))
    await ctx.repos.outbox.renew_in_flight(letter_id)
    # In order: a card's first part is posted before the rest.
    await ctx.repos.outbox.want_cards(sorted(wanted, key=lambda card: (card.platform, card.chat_id, card.part)),
                                      ctx.clock.now())
    ctx.wake_delivery()


@dataclass(frozen=True)
class CardSend:
    """What one card part needs now: a new message (`ref` None), an edit of `ref`, or a scrub of it."""

    message: OutgoingMessage
    ref: RemoteRef | None = None
    scrub: bool = False


async def next_send(ctx: Context, wanted: CardPart) -> CardSend | None:
    """The card part as its letter is now; None when there is nothing to show (no card for a rejected letter)."""
    letter = await ctx.repos.letters.get(wanted.letter_id)
    if letter is None:
        return None
    card = await ctx.repos.cards.find_part(wanted.letter_id, wanted.platform, wanted.chat_id, wanted.part)
    ref = RemoteRef(card.platform, card.chat_id, card.message_id) if card is not None else None
    room = Room(wanted.platform, wanted.chat_id)
    status = await card_status(ctx, letter)
    if _text_gone(letter):
        if ref is None:
            return None
        if wanted.part == 0:
            return CardSend(await card_message(ctx, room, letter, status), ref, scrub=True)
        return CardSend(OutgoingMessage(chat_id=room.chat_id, text=_removed(ctx), silent=True), ref, scrub=True)
    bodies = card_bodies(ctx, room, letter)
    if wanted.part >= len(bodies):
        if ref is None:
            return None
        _ = gettext_for(ctx, ctx.moderation_language())
        return CardSend(OutgoingMessage(chat_id=room.chat_id, text=_("(This part is no longer used.)"), silent=True),
                        ref)
    return CardSend(await card_message(ctx, room, letter, status, wanted.part, bodies), ref)


async def card_status(ctx: Context, letter: Letter) -> str | None:
    """The status line a decided letter's card shows: who decided, and how its broadcast is going."""
    decision = await ctx.repos.letters.deciding(letter.id) if letter.status != PENDING else None
    if decision is None:
        return None
    if letter.status != APPROVED:
        return decision_status(ctx, decision)
    progress = await ctx.repos.deliveries.progress(letter.id)
    return decision_status(ctx, decision, progress if progress.total or letter.reported_at is not None else None)


def decision_status(ctx: Context, decision: Decision, progress: Progress | None = None) -> str:
    _ = gettext_for(ctx, ctx.moderation_language())
    if decision.action == "approve":
        status = _("✅ #{number} approved by {moderator}").format(
            number=decision.letter_id, moderator=decision.moderator
        )
        if progress is not None:
            status += " · " + progress_text(ctx, progress)
        return status
    if decision.action == "reject":
        status = _("❌ #{number} rejected by {moderator}").format(
            number=decision.letter_id, moderator=decision.moderator
        )
        return status + (f": “{decision.reason}”" if decision.reason else "")
    return _("↩️ #{number} withdrawn by its sender").format(number=decision.letter_id)


def progress_text(ctx: Context, progress: Progress) -> str:
    _ = gettext_for(ctx, ctx.moderation_language())
    if progress.open:
        return _("delivering {done}/{total}").format(done=progress.sent, total=progress.total)
    text = _("delivered to {sent} of {total}").format(sent=progress.sent, total=progress.total)
    if progress.dropped:
        text += " · " + _("{count} deactivated").format(count=progress.dropped)
    if progress.failed:
        text += " · " + _("{count} failed").format(count=progress.failed)
    return text


async def _status_notices(ctx: Context, decision: Decision) -> None:
    """Where a scrubbed card shows as deleted, the decision is said in the room as well."""
    status = decision_status(ctx, decision)
    for room in ctx.policy.moderation_rooms:
        if Capability.SCRUB_IN_PLACE not in ctx.network(room.platform).capabilities:
            await say(ctx, room.platform, OutgoingMessage(chat_id=room.chat_id, text=status, silent=True),
                      ChatKind.GROUP)


async def refresh(ctx: Context, letter_id: int) -> None:
    """Re-render every part of a pending letter's cards after a moderator changed its text or notes.

    The new text may need more parts than the card has (they are posted) or fewer (the rest are emptied).
    """
    letter = await ctx.repos.letters.get(letter_id)
    if letter is not None and letter.status == PENDING:
        await show(ctx, letter_id, whole=True)


async def on_announced(ctx: Context, event: LetterAnnounced) -> None:
    await show(ctx, event.letter.id, whole=True)


async def on_decided(ctx: Context, event: LetterDecided) -> None:
    await show(ctx, event.letter.id)
    if event.decision.action != "approve":
        await _status_notices(ctx, event.decision)


async def on_withdrawn(ctx: Context, event: LetterWithdrawn) -> None:
    await show(ctx, event.decision.letter_id)
    await _status_notices(ctx, event.decision)


async def on_published(ctx: Context, event: LetterPublished) -> None:
    """The card's final status: delivered to how many."""
    await show(ctx, event.decision.letter_id)

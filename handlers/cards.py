"""Moderation cards: posting a letter in every moderation room, and showing each decision on all its cards."""

from __future__ import annotations

import logging

from handlers.common import gettext_for, retry_of, send
from handlers.context import Context, Room
from handlers.domain import LetterAnnounced, LetterDecided, LetterPublished, LetterWithdrawn
from handlers.events import Action, OutgoingMessage, RemoteRef
from handlers.ports import Capability, DeliveryError
from handlers.text import split_text
from storage.cards import Card
from storage.deliveries import Progress
from storage.letters import PENDING, REJECTED, SENDER_EDIT, WITHDRAWN, Decision, Letter

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
    footer = "\n".join([*await card_notes(ctx, letter), *([status] if status else [])]) or None
    # The letter is quoted: whatever it says, it cannot pass for the bot's header or a decision line.
    return OutgoingMessage(
        chat_id=room.chat_id, text=bodies[0], title=await card_title(ctx, letter), footer=footer, actions=actions,
        quoted=not _text_gone(letter),
    )


CARD_ATTEMPTS = 10


async def post_cards(ctx: Context, letter: Letter, attempt: int = 1) -> None:
    """A card in every moderation room that has none yet; a room that fails for now is tried again later."""
    posted = {(card.platform, card.chat_id, card.part) for card in await ctx.repos.cards.for_letter(letter.id)}
    added = False
    for room in ctx.policy.moderation_rooms:
        bodies = card_bodies(ctx, room, letter)
        for part in range(len(bodies)):
            if (room.platform, room.chat_id, part) in posted:
                continue
            message = await card_message(ctx, room, letter, None, part, bodies)
            try:
                ref = await ctx.network(room.platform).send(message)
            except DeliveryError as error:
                _card_failed(ctx, letter.id, room, error, attempt)
                break
            await ctx.repos.cards.add(Card(letter.id, ref.platform, ref.chat_id, ref.message_id, part))
            added = True
    if added:
        await _catch_up(ctx, letter.id)


async def _catch_up(ctx: Context, letter_id: int) -> None:
    """A decision taken while cards were being posted may have missed the newest of them: show it on all.

    The decision stores its status before it edits the cards it finds; a card stored after that is seen here.
    """
    current = await ctx.repos.letters.get(letter_id)
    if current is None or current.status == PENDING:
        return
    decision = await ctx.repos.letters.deciding(letter_id)
    if decision is not None:
        await show_status(ctx, letter_id, decision_status(ctx, decision))


def _card_failed(ctx: Context, letter_id: int, room: Room, error: DeliveryError, attempt: int) -> None:
    """Try again later: after a passing failure (CARD_ATTEMPTS in all), or once the room's turn has come."""
    if error.paced:
        log.debug("letter #%d: a card on %s waits for the room's turn", letter_id, room.platform)
    elif error.retryable and attempt < CARD_ATTEMPTS:
        log.warning("letter #%d: card not posted on %s yet: %s", letter_id, room.platform, error.reason)
    else:
        log.error("letter #%d: card not posted on %s: %s", letter_id, room.platform, error.reason)
    retry = retry_of(error, attempt, CARD_ATTEMPTS)
    if retry is not None:
        delay, again = retry
        ctx.scheduler.call_later(delay, lambda: _post_again(ctx, letter_id, again))


async def _post_again(ctx: Context, letter_id: int, attempt: int) -> None:
    letter = await ctx.repos.letters.get(letter_id)
    if letter is not None and letter.status == "pending":
        await post_cards(ctx, letter, attempt)


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


async def show_status(ctx: Context, letter_id: int, status: str) -> None:
    """Show the letter's status on every card; a rejected or withdrawn letter's text leaves every part."""
    letter = await ctx.repos.letters.get(letter_id)
    if letter is None:
        return
    if _text_gone(letter):
        await _scrub_cards(ctx, letter, status)
        return
    for card in await ctx.repos.cards.for_letter(letter_id):
        if card.part == 0:
            await _edit(ctx, card, await card_message(ctx, Room(card.platform, card.chat_id), letter, status))


async def refresh(ctx: Context, letter_id: int) -> None:
    """Re-render every part of a pending letter's cards after a moderator changed its text or notes.

    The new text may need more parts than the card has (they are posted) or fewer (the rest are emptied).
    """
    letter = await ctx.repos.letters.get(letter_id)
    if letter is None or letter.status != PENDING:
        return
    _ = gettext_for(ctx, ctx.moderation_language())
    for room in ctx.policy.moderation_rooms:
        bodies = card_bodies(ctx, room, letter)
        for card in await ctx.repos.cards.for_letter(letter_id):
            if (card.platform, card.chat_id) != (room.platform, room.chat_id):
                continue
            if card.part < len(bodies):
                message = await card_message(ctx, room, letter, None, card.part, bodies)
            else:
                message = OutgoingMessage(chat_id=room.chat_id, text=_("(This part is no longer used.)"), silent=True)
            await _edit(ctx, card, message)
    await post_cards(ctx, letter)


async def _scrub_cards(ctx: Context, letter: Letter, status: str) -> None:
    removed = _removed(ctx)
    for card in await ctx.repos.cards.for_letter(letter.id):
        if card.part == 0:
            message = await card_message(ctx, Room(card.platform, card.chat_id), letter, status)
        else:
            message = OutgoingMessage(chat_id=card.chat_id, text=removed, silent=True)
        network = ctx.network(card.platform)
        try:
            await network.scrub(RemoteRef(card.platform, card.chat_id, card.message_id), message)
        except DeliveryError as error:
            log.warning("letter #%d: a card part could not be scrubbed: %s", letter.id, error.reason)
            continue
        if card.part == 0 and Capability.SCRUB_IN_PLACE not in network.capabilities:
            # The card now shows as deleted: the decision must still be visible in the room.
            await send(ctx, card.platform, OutgoingMessage(chat_id=card.chat_id, text=status, silent=True))


async def _edit(ctx: Context, card: Card, message: OutgoingMessage) -> None:
    try:
        await ctx.network(card.platform).edit(RemoteRef(card.platform, card.chat_id, card.message_id), message)
    except DeliveryError as error:
        log.warning("letter #%d: a card on %s was not edited: %s", card.letter_id, card.platform, error.reason)


async def on_decided(ctx: Context, event: LetterDecided) -> None:
    await show_status(ctx, event.letter.id, decision_status(ctx, event.decision))


async def on_withdrawn(ctx: Context, event: LetterWithdrawn) -> None:
    await show_status(ctx, event.decision.letter_id, decision_status(ctx, event.decision))


async def on_published(ctx: Context, event: LetterPublished) -> None:
    """The card's final status: delivered to how many."""
    decision = event.decision
    await show_status(ctx, decision.letter_id, decision_status(ctx, decision, event.progress))


async def on_announced(ctx: Context, event: LetterAnnounced) -> None:
    await post_cards(ctx, event.letter)

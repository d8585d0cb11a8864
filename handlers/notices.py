"""What the sender of a letter is told when the moderators decide on it, in the sender's language (an outbox row
written with the decision)."""

from __future__ import annotations

from handlers.common import gettext_for
from handlers.context import Context
from handlers.domain import LetterDecided
from handlers.events import OutgoingMessage
from handlers.outbox import say
from handlers.submission import first_message, language_of
from storage.letters import Letter


async def on_decided(ctx: Context, event: LetterDecided) -> None:
    if event.decision.action == "approve":
        await _tell_sender_approved(ctx, event.letter)
    else:
        await _tell_sender_rejected(ctx, event.letter, event.decision.reason)


async def _tell_sender_approved(ctx: Context, letter: Letter) -> None:
    sender = await ctx.repos.senders.get(letter.sender_id)
    if sender is None:
        return
    count, languages = await ctx.repos.subscriptions.audience()
    ngettext = ctx.texts.ngettext(language_of(ctx, sender, letter))
    text = ngettext(
        "✅ Your letter #{number} was approved and is on its way to {count} subscriber in {languages} language(s).",
        "✅ Your letter #{number} was approved and is on its way to {count} subscribers in {languages} language(s).",
        count,
    ).format(number=letter.id, count=count, languages=languages)
    await say(ctx, sender.platform, OutgoingMessage(chat_id=sender.chat_id, text=text,
                                                    reply_to=await first_message(ctx, letter.id)))


async def _tell_sender_rejected(ctx: Context, letter: Letter, reason: str | None) -> None:
    sender = await ctx.repos.senders.get(letter.sender_id)
    if sender is None:
        return
    _ = gettext_for(ctx, language_of(ctx, sender, letter))
    if reason:
        text = _("Your letter #{number} was not published. The moderators said: “{reason}”.")
    else:
        text = _("Your letter #{number} was not published.")
    await say(ctx, sender.platform, OutgoingMessage(chat_id=sender.chat_id, text=text.format(
        number=letter.id, reason=reason), reply_to=await first_message(ctx, letter.id)))

"""What the sender of a letter is told when the moderators decide on it, in the sender's language (an outbox row
written with the decision)."""

from __future__ import annotations

from handlers.common import gettext_for
from handlers.context import Context
from handlers.domain import LetterDecided
from handlers.events import OutgoingMessage
from handlers.outbox import say
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
    ngettext = ctx.texts.ngettext(sender.language or ctx.policy.default_language)
    text = ngettext(
        "✅ Your letter #{number} was approved and is on its way to {count} subscriber in {languages} language(s).",
        "✅ Your letter #{number} was approved and is on its way to {count} subscribers in {languages} language(s).",
        count,
    ).format(number=letter.id, count=count, languages=languages)
    await say(ctx, sender.platform, OutgoingMessage(chat_id=sender.chat_id, text=text))


async def _tell_sender_rejected(ctx: Context, letter: Letter, reason: str | None) -> None:
    sender = await ctx.repos.senders.get(letter.sender_id)
    if sender is None:
        return
    _ = gettext_for(ctx, sender.language)
    if reason:
        text = _("Your letter #{number} was not published. The moderators said: “{reason}”.")
    else:
        text = _("Your letter #{number} was not published.")
    await say(ctx, sender.platform, OutgoingMessage(chat_id=sender.chat_id, text=text.format(
        number=letter.id, reason=reason)))

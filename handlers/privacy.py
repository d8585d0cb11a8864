"""What the bot keeps about writers, and for how long: retention, `forget`, bans by keyed hash.

A letter is linked to its sender's account only while the sender may still need to be told something about it:
until `RETENTION_DAYS` after its decision (with 0: as soon as they were told). Then the link is cut, and a
rejected or withdrawn letter loses its text. `forget` does the same at once for every letter of the account.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from handlers.common import Command, answer, command_text, gettext_for, reader_language
from handlers.context import DAY, Context
from handlers.domain import LetterWithdrawn
from handlers.events import IncomingMessage
from handlers.subscriptions import REQUEST_DAYS
from storage.letters import Decision

log = logging.getLogger(__name__)

# Replay guards name no writer, and a restart must not replay yesterday's moderator commands: keep them a day.
MIN_REPLAY_GUARD_SECONDS = 86400.0
# An account that only ever got refusals (limits, bans) is dropped after this long without contact.
MIN_IDLE_ACCOUNT_SECONDS = 3600.0
# Between two batches: storing a letter takes several short transactions, each of which may otherwise queue
# behind the next batch. A purge is background work; a supporter's receipt is not.
PAUSE_BETWEEN_BATCHES = 0.005


@dataclass(frozen=True)
class Purged:
    letters: int
    accounts: int
    replay_guards: int

    @property
    def anything(self) -> bool:
        return bool(self.letters or self.accounts or self.replay_guards)


async def purge(ctx: Context) -> Purged:
    """Cut every link older than the retention window, batch by batch, then empty the WAL of what was deleted."""
    now = ctx.clock.now()
    window = ctx.policy.retention_seconds
    letters = 0
    while batch := await ctx.repos.privacy.unlink_decided(now - window, now):
        letters += batch
        await asyncio.sleep(PAUSE_BETWEEN_BATCHES)
    accounts = await ctx.repos.privacy.drop_idle_accounts(now - max(window, MIN_IDLE_ACCOUNT_SECONDS))
    guards = 0
    while batch := await ctx.repos.privacy.drop_replay_guards(now - max(window, MIN_REPLAY_GUARD_SECONDS)):
        guards += batch
        await asyncio.sleep(PAUSE_BETWEEN_BATCHES)
    await ctx.repos.subscriptions.drop_requests(now - REQUEST_DAYS * DAY)
    await sweep_media(ctx)
    purged = Purged(letters, accounts, guards)
    if purged.anything:
        await ctx.repos.db.checkpoint()
        log.info("retention: %d letter(s) unlinked from their senders, %d idle account(s) and %d replay guard(s) "
                 "deleted", letters, accounts, guards)
    return purged


def after_told(ctx: Context) -> None:
    """With RETENTION_DAYS=0 a decided letter is unlinked as soon as its sender's notice is written (it carries its
    own address). The purge runs once the transaction that wrote it is committed; if the process dies first, the
    purge at the next start does it."""
    if ctx.policy.retention_days == 0:
        ctx.scheduler.call_later(0, lambda: purge(ctx))


async def hash_legacy_bans(ctx: Context) -> None:
    """Bans stored before accounts were hashed: hash them now, so the plain account goes from the database."""
    for marker, platform, user_id in await ctx.repos.bans.legacy():
        await ctx.repos.bans.rehash(marker, ctx.hasher.account_hash(platform, user_id))


def keeps_sentence(ctx: Context, language: str | None, platform: str) -> str:
    """One sentence for /start and help: what the bot keeps about the writer, and for how long."""
    forget = command_text(ctx, platform, "forget")
    days = ctx.policy.retention_days
    if days == 0:
        _ = gettext_for(ctx, language)
        text = _("I keep your account linked to a letter only until I have told you the moderators' decision; "
                 "then the letter belongs to no one, and rejected or withdrawn letters are deleted. "
                 "{forget} deletes everything about you now.")
        return text.format(forget=forget)
    ngettext = ctx.texts.ngettext(language or ctx.policy.default_language)
    text = ngettext(
        "I keep your account linked to a letter only until {days} day after the moderators' decision; "
        "then the letter belongs to no one, and rejected or withdrawn letters are deleted. "
        "{forget} deletes everything about you now.",
        "I keep your account linked to a letter only until {days} days after the moderators' decision; "
        "then the letter belongs to no one, and rejected or withdrawn letters are deleted. "
        "{forget} deletes everything about you now.",
        max(int(days), 1),
    )
    return text.format(days=f"{days:g}", forget=forget)


async def forget(ctx: Context, message: IncomingMessage, command: Command) -> None:
    """`forget`: say what would go and ask again; `forget yes`: withdraw what waits, then delete the account."""
    assert message.sender is not None
    _ = gettext_for(ctx, reader_language(ctx, message))
    if command.args.strip().lower() not in ("yes", _("yes").lower()):
        confirm = command_text(ctx, message.chat.platform, "forget yes")
        text = _(
            "This deletes everything I know about you: the link between your account and your letters, the texts "
            "of your rejected and withdrawn letters, and your subscription here. Letters waiting for the "
            "moderators are withdrawn. Published letters stay public, but nothing connects them to you any more. "
            "A ban by the moderators stays. Send {command} to go ahead."
        ).format(command=confirm)
        await answer(ctx, message, text)
        return
    platform, user_id = message.chat.platform, message.sender.user_id
    withdrawn = await _withdraw_pending(ctx, platform, user_id)
    forgotten = await ctx.repos.privacy.forget(platform, user_id, ctx.clock.now())
    await ctx.repos.db.checkpoint()
    await sweep_media(ctx)
    await _forget_chat(ctx, message)
    log.info("forget: an account was forgotten (%d letter(s) unlinked, %d withdrawn)", forgotten.letters,
             len(withdrawn))
    ngettext = ctx.texts.ngettext(reader_language(ctx, message))
    text = ngettext(
        "Done: I have forgotten you. {count} letter waiting for the moderators was withdrawn. "
        "If you write again, you will be a new sender to me.",
        "Done: I have forgotten you. {count} letters waiting for the moderators were withdrawn. "
        "If you write again, you will be a new sender to me.",
        len(withdrawn),
    ).format(count=len(withdrawn))
    await answer(ctx, message, text)


async def sweep_media(ctx: Context) -> None:
    """The files of letters that lost their media (rejected or withdrawn, once unlinked) leave the disk."""
    if ctx.media is not None:
        swept = ctx.media.sweep(await ctx.repos.media.referenced())
        if swept:
            log.info("retention: %d media file(s) no letter carries any more deleted", swept)


async def _forget_chat(ctx: Context, message: IncomingMessage) -> None:
    try:
        await ctx.network(message.chat.platform).forget_chat(message.chat.chat_id)
    except Exception as error:
        # The database has forgotten; what the network keeps goes with the retention window instead.
        log.warning("forget: the network's copy could not be deleted now (%s); it goes at the end of the "
                    "retention window", type(error).__name__)


async def _withdraw_pending(ctx: Context, platform: str, user_id: str) -> list[int]:
    sender = await ctx.repos.senders.find(platform, user_id)
    if sender is None:
        return []
    withdrawn = []
    for letter_id in await ctx.repos.letters.pending_of(sender.id):
        decision = Decision(letter_id, "withdraw", platform, "", "sender", None, ctx.clock.now())
        async with ctx.transaction():
            if await ctx.repos.letters.decide(letter_id, decision):
                withdrawn.append(letter_id)
                await ctx.events.publish(ctx, LetterWithdrawn(decision))
    return withdrawn


async def on_decided(ctx: Context, event: object) -> None:
    """The sender has been told of a decision or withdrawal: with RETENTION_DAYS=0 the link goes now."""
    after_told(ctx)

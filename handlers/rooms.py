"""Rooms the bot was invited to: it accepts every invitation (a room's administrator invites it, then
subscribes the room), and leaves, after an hour, every room that did not become a direct chat, a moderation
room or a subscription, so that nobody can park the bot in thousands of rooms.
"""

from __future__ import annotations

import logging

from handlers.context import Context
from handlers.events import INVITED, ChatKind, MembershipChanged

log = logging.getLogger(__name__)

PROBATION = 3600.0


async def joined(ctx: Context, event: MembershipChanged) -> None:
    """A room joined on anyone's invitation goes on probation; a direct chat is of use at once (and its id, a
    trace of a person, is not kept here). A Telegram group or channel the bot was added to by its administrator
    is not: a moderator may subscribe it days later."""
    if event.reason != INVITED or event.chat.kind == ChatKind.PRIVATE:
        return
    if not ctx.is_moderation_room(event.chat.platform, event.chat.chat_id):
        await ctx.repos.rooms.joined(event.chat.platform, event.chat.chat_id, ctx.clock.now())


async def leave_idle(ctx: Context) -> int:
    """Leave the rooms whose hour is up and that are of no use; returns how many were left."""
    left = 0
    for platform, chat_id in await ctx.repos.rooms.joined_before(ctx.clock.now() - PROBATION):
        if platform in ctx.networks and not await _in_use(ctx, platform, chat_id):
            await ctx.network(platform).leave(chat_id)
            left += 1
        await ctx.repos.rooms.settled(platform, chat_id)
    if left:
        log.info("left %d room(s) that were neither a direct chat, a moderation room nor subscribed", left)
    return left


async def _in_use(ctx: Context, platform: str, chat_id: str) -> bool:
    if ctx.is_moderation_room(platform, chat_id):
        return True
    subscription = await ctx.repos.subscriptions.find(platform, chat_id)
    if subscription is not None and subscription.active:
        return True
    chat = await ctx.network(platform).resolve_chat(chat_id)
    return chat is not None and chat.kind == ChatKind.PRIVATE

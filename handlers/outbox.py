"""The outbox service, as the handlers see it: what the bot says is written, not sent.

A reply, a notice or a report becomes an outbox row in the transaction of whatever caused it (`say`); the worker
(bot/outbox.py) sends it, paced and retried, and deletes it. Broadcasts are queued per subscription here too, and
a subscription that ends drops what it still had queued, in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from handlers.context import Context
from handlers.events import Action, ChatKind, Media, OutgoingMessage


async def say(ctx: Context, platform: str, message: OutgoingMessage, kind: str = ChatKind.PRIVATE) -> None:
    """Queue a message; the worker sends it once this handler's transaction (if any) is committed."""
    await ctx.repos.outbox.add_message(platform, message.chat_id, str(kind), serialise(message), ctx.clock.now())
    ctx.wake_delivery()


def serialise(message: OutgoingMessage) -> str:
    return json.dumps(asdict(message), ensure_ascii=False, separators=(",", ":"))


def deserialise(stored: str) -> OutgoingMessage:
    fields = json.loads(stored)
    fields["actions"] = tuple(Action(**action) for action in fields.get("actions", ()))
    fields["media"] = tuple(Media(**media) for media in fields.get("media", ()))
    return OutgoingMessage(**fields)


async def queue_broadcast(ctx: Context, letter_id: int) -> int:
    """A delivery of an approved letter for every active subscription; the worker is woken for them."""
    queued = await ctx.repos.deliveries.queue_for_active(letter_id, ctx.clock.now())
    ctx.wake_delivery()
    return queued


async def end_subscription(ctx: Context, subscription_id: int, reason: str) -> bool:
    """Stop a subscription and drop its queued deliveries, together; True when it was active."""
    now = ctx.clock.now()
    async with ctx.repos.db.transaction():
        stopped = await ctx.repos.subscriptions.deactivate(subscription_id, reason, now)
        await ctx.repos.deliveries.drop_for(subscription_id, reason, now)
    return stopped

"""Fair intake: every event waits in its sender's own queue, and senders take turns.

A flood from one sender (2,000 messages in a minute) then only ever waits behind itself: another sender's
letter is handled after at most one event of each sender ahead of it, whatever the flood's length. Each
sender's events stay in order (the parts of a letter, an edit after its message), one at a time, while
different senders' events are handled side by side by a few workers.

A supporter's messages are also rationed (a token bucket: a burst of `burst`, then `per_second`): more than
any person types or any client splits a letter into, so no letter waits, while a flood is handled at that
pace only, and costs next to nothing. Moderators and rooms are not rationed: a moderator deciding fast must
never wait.

`submit` queues at once and returns a future that completes when the event has been handled: the Matrix sync
loop waits for its batch before storing its sync token; Telegram's updates are confirmed by PTB when fetched,
so its transport does not wait. A sender with `per_sender` events already waiting is a flood beyond any
letter (a client-split letter is 15 messages at most): further events of theirs are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

from handlers.events import ActionPressed, ChatKind, Event, MembershipChanged

log = logging.getLogger(__name__)

WORKERS = 4
PER_SENDER = 500
BURST = 30
PER_SECOND = 1.0


def sender_of(event: Event) -> Hashable:
    """Whose turn an event takes: its author's; a channel post's or a membership change's chat."""
    if isinstance(event, MembershipChanged):
        return (event.chat.platform, "chat", event.chat.chat_id)
    person = event.user if isinstance(event, ActionPressed) else event.sender
    if person is None:
        return (event.chat.platform, "chat", event.chat.chat_id)
    return (person.platform, "user", person.user_id)


def rationed(event: Event) -> bool:
    """What a supporter sends in a private chat."""
    return not isinstance(event, ActionPressed | MembershipChanged) and event.chat.kind == ChatKind.PRIVATE


class _Bucket:
    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class FairIntake:
    def __init__(
        self,
        handle: Callable[[Event], Awaitable[None]],
        workers: int = WORKERS,
        per_sender: int = PER_SENDER,
        burst: float = BURST,
        per_second: float = PER_SECOND,
    ) -> None:
        self._handle = handle
        self._workers = workers
        self.per_sender = per_sender
        self.burst = burst
        self.per_second = per_second
        self._buckets: dict[Hashable, _Bucket] = {}
        self._queues: dict[Hashable, deque[tuple[Event, asyncio.Future[None]]]] = {}
        self._turns: deque[Hashable] = deque()  # senders with an event waiting and none being handled
        self._turn_ready = asyncio.Semaphore(0)  # one release per entry in _turns
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]

    def submit(self, event: Event) -> asyncio.Future[None]:
        handled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sender = sender_of(event)
        queue = self._queues.get(sender)
        if queue is None:
            queue = self._queues[sender] = deque()
            self._turns.append(sender)
            self._turn_ready.release()
        elif len(queue) >= self.per_sender:
            self._drop(handled)
            return handled
        queue.append((event, handled))
        self._idle.clear()
        return handled

    def _drop(self, handled: asyncio.Future[None]) -> None:
        self.dropped += 1
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            log.warning("intake: one sender has %d events waiting; %d events dropped so far", self.per_sender,
                        self.dropped)
        handled.set_result(None)

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._turn_ready.acquire()
            sender = self._turns.popleft()
            queue = self._queues[sender]
            event, handled = queue[0]
            wait = self._take_token(sender, loop.time()) if rationed(event) else 0.0
            if wait > 0:
                loop.call_later(wait, self._give_turn, sender)  # the others go on meanwhile
                continue
            try:
                await self._handle(event)
            except Exception as error:  # the router logs its own; this is the last guard of the worker
                log.error("intake: an event could not be handled (%s)", type(error).__name__)
            finally:
                queue.popleft()
                if not handled.done():
                    handled.set_result(None)
                self._next_turn(sender, queue)

    def _next_turn(self, sender: Hashable, queue: deque[tuple[Event, asyncio.Future[None]]]) -> None:
        if queue:
            self._give_turn(sender)  # to the back: everyone else waiting goes first
        else:
            del self._queues[sender]
            if not self._queues:
                self._idle.set()

    def _give_turn(self, sender: Hashable) -> None:
        if sender in self._queues:
            self._turns.append(sender)
            self._turn_ready.release()

    def _take_token(self, sender: Hashable, now: float) -> float:
        """0 when the sender may go now (a token taken); else the seconds until a token is there."""
        bucket = self._buckets.get(sender)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._forget_full(now)
            bucket = self._buckets[sender] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.per_second)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.per_second

    def _forget_full(self, now: float) -> None:
        """A bucket that has filled up again is the same as none: the table keeps only recent senders."""
        refill = self.burst / self.per_second
        self._buckets = {key: bucket for key, bucket in self._buckets.items() if now - bucket.at < refill}

    async def drain(self, within: float) -> bool:
        """Wait until every queued event is handled, or `within` seconds; True when nothing is left."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), within)
        return not self._queues

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for queue in self._queues.values():
            for _event, handled in queue:
                if not handled.done():
                    handled.cancel()
        self._queues.clear()
        self._turns.clear()

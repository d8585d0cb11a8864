"""The outbox worker: the one place that sends what the bot says, paces it and retries it.

Three lanes, claimed in this order, each with its own share of sends in flight, under one pacer per network:
replies (receipts, notices, answers, reports: storage/outbox.py), cards (posts and edits, coalesced, rendered
when sent) and broadcasts (storage/deliveries.py). A receipt so never waits behind a 10,000-subscriber broadcast.
One `RetryPolicy` decides about every failure. A broadcast's parts go out in order and each sent part is
recorded, so a crash resumes at the first part not known to be out; at most what was in flight can be repeated
(on Matrix not even that: transaction ids are stable across retries and restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

from bot.pacing import Pacer
from handlers import broadcast, cards
from handlers.context import Context
from handlers.events import ChatKind, OutgoingMessage
from handlers.loggable import log_failure, without_ids
from handlers.outbox import deserialise, end_subscription
from handlers.ports import DeliveryError, NotReady
from storage.cards import Card
from storage.deliveries import DeliveryJob
from storage.outbox import OutboxJob

log = logging.getLogger(__name__)

# Enough sends in flight to keep the fastest platform busy across a ~0.2 s round trip, and no more: a larger
# pool costs CPU in httpx/httpcore for every request (measured: it scans all connections per event).
ROUND_TRIP_SECONDS = 0.2
MIN_CONCURRENCY, MAX_CONCURRENCY = 8, 128


def concurrency_for(pacers: dict[str, Pacer]) -> int:
    fastest = max((pacer.rates.per_second for pacer in pacers.values()), default=1.0)
    return int(min(max(fastest * ROUND_TRIP_SECONDS, MIN_CONCURRENCY), MAX_CONCURRENCY))


class Lane(enum.IntEnum):
    REPLIES = 0  # storage.outbox.REPLIES
    CARDS = 1  # storage.outbox.CARDS
    BROADCASTS = 2


# Sends in flight per lane, beside the broadcasts' share: one per chat at most, so these are chats served at once.
REPLY_SENDS = 8
CARD_SENDS = 4
CLAIM_BATCH_SHARE = 8  # deliveries are claimed once 1/8 of the broadcasts' share is free

# Card edits count against the moderation chat's own rate limit (Telegram: 20 a minute into a group).
PROGRESS_EVERY = 10.0
# A moderator's correction of a letter's language or translation reaches deliveries within this time.
RENDER_CACHE_SECONDS = 5.0
RENDER_CACHE_SIZE = 64
GROUP_COMMIT_GATHER = 0.005  # seconds a recorded send waits for others to share its commit (it is still in flight)
# The reporter looks at most this often whether a broadcast is done (one query, however many sends ended): 20
# looks a second cost nothing next to 1,000 sends, and a moderator never waits long for the final report.
REPORT_GAP = 0.05


@dataclass(frozen=True)
class RetryPolicy:
    """What a failed send means, for every lane: when to try again, and when to give up."""

    first_delay: float = 2.0
    max_delay: float = 900.0
    max_attempts: int = 30  # with the delays above: about six hours of trying

    def delay(self, attempts: int) -> float:
        base = min(self.first_delay * 2 ** max(attempts - 1, 0), self.max_delay)
        return base * random.uniform(0.8, 1.2)

    def next_try(self, error: DeliveryError, attempts: int) -> float | None:
        """Seconds until the next attempt (the platform's own `retry_after` when it said); None: give up, as the
        error is permanent or the attempts are spent."""
        if not error.retryable or attempts >= self.max_attempts:
            return None
        return error.retry_after if error.retry_after is not None else self.delay(attempts)


class OutboxWorker:
    def __init__(
        self, ctx: Context, pacers: dict[str, Pacer], concurrency: int | None = None, retry: RetryPolicy | None = None
    ) -> None:
        self.ctx = ctx
        self.pacers = pacers
        self.concurrency = concurrency or concurrency_for(pacers)
        self.retry = retry or RetryPolicy()
        self._shares = {Lane.REPLIES: REPLY_SENDS, Lane.CARDS: CARD_SENDS, Lane.BROADCASTS: self.concurrency}
        self._wake = asyncio.Event()
        self._stopping = False
        self._run_task: asyncio.Task[None] | None = None
        self._in_flight: dict[asyncio.Task[None], tuple[Lane, str, str]] = {}
        self._busy_in = dict.fromkeys(Lane, 0)  # sends in flight per lane, kept as they start and end
        self._stop_requested = asyncio.Event()
        # When the replies and cards lanes may next have something to claim: now after a wake-up or a send, the
        # next retry otherwise. Looking only then keeps a broadcast's loop from asking for them every send.
        self._outbox_due = 0.0
        self._progress_shown: dict[int, float] = {}
        # (letter, language, platform) → its parts being rendered or rendered, until when they may be reused.
        self._rendered: dict[tuple[int, str, str], tuple[asyncio.Future[list[OutgoingMessage]], float]] = {}
        # Letters whose broadcast moved on: one reporter asks for their cards' progress and whether they are done.
        self._touched: set[int] = set()
        self._touched_event = asyncio.Event()
        # Sends waiting to be recorded: many go into one transaction (a group commit) while the last one runs.
        self._to_commit: list[tuple[tuple[int, int, tuple[str, ...]], asyncio.Future[None]]] = []
        self._committing = False
        self._commit_task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Something was written to the outbox (or queued for a broadcast)."""
        self._outbox_due = 0.0
        self._wake.set()

    async def run(self) -> None:
        self._run_task = asyncio.current_task()
        repos, now = self.ctx.repos, self.ctx.clock.now()
        recovered = await repos.deliveries.recover_in_flight(now) + await repos.outbox.recover_in_flight(now)
        if recovered:
            log.info("outbox: %d sends were in flight at the last stop; sending them again", recovered)
        # A broadcast that ended just before a stop still owes the moderators its report.
        self._touched.update(await repos.letters.unreported())
        self._touched_event.set()
        reporter = asyncio.create_task(self._reporter())
        try:
            while not self._stopping:
                self._wake.clear()
                started = await self._claim_and_start()
                if started and self._room_left():
                    continue  # there may be more due right now
                await self._sleep_until_due()
        finally:
            # Not cancelled: a report cut off between "reported" and its messages would be lost for good.
            self._touched_event.set()
            await asyncio.gather(reporter, return_exceptions=True)

    async def drain(self, rounds: int = 100) -> None:
        """Send everything due now and wait for it, without the loop (tests drive the handlers this way)."""
        for _round in range(rounds):
            self._outbox_due = 0.0
            started = await self._claim_and_start()
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
            await self._report_touched()
            if not started and not self._in_flight:
                return

    def _room_left(self) -> bool:
        return any(self._busy(lane) < share for lane, share in self._shares.items())

    def _busy(self, lane: Lane) -> int:
        return self._busy_in[lane]

    async def _claim_and_start(self) -> int:
        now = self.ctx.clock.now()
        started = 0
        if now >= self._outbox_due:
            # Not looked at again until a wake-up, a send done (its chat's next row may go), or the next retry
            # falls due; a wake-up while claiming lowers it again.
            self._outbox_due = math.inf
            for lane in (Lane.REPLIES, Lane.CARDS):
                for job in await self.ctx.repos.outbox.claim(lane, now, self._free(lane), self._chats(lane)):
                    self._start(self._say(job), lane, job.platform, job.chat_id)
                    started += 1
            retry_at = await self.ctx.repos.outbox.next_due_after(now)
            self._outbox_due = min(self._outbox_due, retry_at if retry_at is not None else math.inf)
        free = self._broadcast_room()
        if free > 0:
            for delivery in await self.ctx.repos.deliveries.claim_due(now, free, self._chats(Lane.BROADCASTS)):
                self._start(self._deliver(delivery), Lane.BROADCASTS, delivery.platform, delivery.chat_id)
                started += 1
        return started

    def _free(self, lane: Lane) -> int:
        return max(self._shares[lane] - self._busy(lane), 0)

    def _broadcast_room(self) -> int:
        """Deliveries to claim now: none until an eighth of the lane is free (one claim per send at 1,000 sends
        a second would be as many transactions), unless nothing is in flight."""
        free = self._free(Lane.BROADCASTS)
        if self._busy(Lane.BROADCASTS) and free < max(self.concurrency // CLAIM_BATCH_SHARE, 1):
            return 0
        return free

    def _chats(self, lane: Lane) -> frozenset[tuple[str, str]]:
        return frozenset((platform, chat) for task_lane, platform, chat in self._in_flight.values()
                         if task_lane == lane)

    def _start(self, send: Coroutine[Any, Any, None], lane: Lane, platform: str, chat_id: str) -> None:
        task = asyncio.create_task(send)
        self._in_flight[task] = (lane, platform, chat_id)
        self._busy_in[lane] += 1
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if task not in self._in_flight:
            return
        lane, _platform, _chat = self._in_flight.pop(task)
        self._busy_in[lane] -= 1
        if lane != Lane.BROADCASTS:
            self._outbox_due = 0.0  # the chat's next row, if any, may go now
        self._wake.set()

    async def _sleep_until_due(self) -> None:
        if not self._in_flight:
            for pacer in self.pacers.values():
                pacer.forget_idle()  # between broadcasts: forget the chats, keep the memory flat
        # With no room for deliveries, the next send to end wakes the loop: no need to ask when one falls due.
        deliveries_due = (await self.ctx.repos.deliveries.next_due_at() or math.inf) if self._broadcast_room() else \
            math.inf
        next_due = min(deliveries_due, self._outbox_due)
        timeout = min(max(next_due - self.ctx.clock.now(), 0.05), 5.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):  # not wait_for: no task made for every wake-up
                await self._wake.wait()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; give sends in flight `grace` seconds, then cancel them (they are retried at next start)."""
        self._stopping = True
        self._stop_requested.set()
        self._wake.set()
        if self._run_task is not None and self._run_task is not asyncio.current_task():
            # A claim under way would otherwise start sends after we stopped waiting for them.
            await asyncio.gather(self._run_task, return_exceptions=True)
        tasks = list(self._in_flight)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._report_touched()

    # --- replies and cards ---------------------------------------------------------------------------------

    async def _say(self, job: OutboxJob) -> None:
        try:
            if job.card is None:
                assert job.message is not None
                message = replace(deserialise(job.message), idempotency_key=job.key)
                await self._paced(job.platform, job.chat_id, job.chat_kind)
                await self.ctx.network(job.platform).send(message)
                await self.ctx.repos.outbox.done(job)
            else:
                await self._show_card(job)
        except DeliveryError as error:
            await self._unsaid(job, error)
        except asyncio.CancelledError:
            await asyncio.shield(self.ctx.repos.outbox.release(job.id))
            raise
        except Exception as error:
            log_failure(log, f"outbox {job.id}: unexpected error", error)
            await self._unsaid(job, DeliveryError(type(error).__name__, retryable=True))

    async def _show_card(self, job: OutboxJob) -> None:
        """The card part as its letter is now: posted (and recorded with the row's end), edited or scrubbed."""
        assert job.card is not None
        wanted = job.card
        # Drawn in one transaction: the letter, its notes and its status as one moment of the database, never the
        # text from before a sender's edit with the note of after it.
        async with self.ctx.transaction():
            send = await cards.next_send(self.ctx, wanted)
        if send is None:
            await self.ctx.repos.outbox.done(job)
            return
        network = self.ctx.network(job.platform)
        await self._paced(job.platform, job.chat_id, ChatKind.GROUP)
        if send.ref is None:
            # The same key for every try of this part: on Matrix a post retried after a lost answer is one card.
            key = f"card {wanted.letter_id} {wanted.platform} {wanted.chat_id} {wanted.part}"
            ref = await network.send(replace(send.message, idempotency_key=key))
            async with self.ctx.transaction():
                await self.ctx.repos.cards.add(Card(wanted.letter_id, ref.platform, ref.chat_id, ref.message_id,
                                                    wanted.part))
                await self.ctx.repos.outbox.done(job)
            return
        message = replace(send.message, idempotency_key=job.key)
        if send.scrub:
            await network.scrub(send.ref, message)
        else:
            await network.edit(send.ref, message)
        await self.ctx.repos.outbox.done(job)

    async def _paced(self, platform: str, chat_id: str, kind: str) -> None:
        await self.pacers[platform].acquire(chat_id, kind)

    async def _unsaid(self, job: OutboxJob, error: DeliveryError) -> None:
        what = "a card" if job.card is not None else "a message"
        reason = without_ids(error.reason)
        delay = None if error.gone or error.moved_to else self.retry.next_try(error, job.attempts)
        if delay is None:
            log.warning("outbox %d: %s on %s given up after %d attempt(s): %s", job.id, what, job.platform,
                        job.attempts, reason)
            await self.ctx.repos.outbox.done(job)
            return
        if error.retry_after is not None:
            self.pacers[job.platform].pause(job.chat_id, error.retry_after)
        log.info("outbox %d: %s on %s again in %.1f s (%s)", job.id, what, job.platform, delay, reason)
        at = self.ctx.clock.now() + delay
        await self.ctx.repos.outbox.reschedule(job.id, at, error.reason)
        self._outbox_due = min(self._outbox_due, at)

    # --- broadcasts ----------------------------------------------------------------------------------------

    async def _deliver(self, job: DeliveryJob) -> None:
        try:
            await self._send_parts(job)
        except DeliveryError as error:
            await self._failed(job, error)
        except NotReady as waiting:
            await self.ctx.repos.deliveries.postpone(job.id, self.ctx.clock.now() + waiting.retry_in)
            return
        except asyncio.CancelledError:
            await asyncio.shield(self.ctx.repos.deliveries.release(job.id, self.ctx.clock.now()))
            raise
        except Exception as error:
            log_failure(log, f"delivery {job.id}: unexpected error", error)
            await self._failed(job, DeliveryError(type(error).__name__, retryable=True))
        self._touched.add(job.letter_id)
        self._touched_event.set()

    async def _reporter(self) -> None:
        while True:
            await self._touched_event.wait()
            self._touched_event.clear()
            await self._report_touched()
            if self._stopping:
                return
            # At 1,000 sends a second, a look per send would be 1,000 queries a second for one answer.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPORT_GAP):
                    await self._stop_requested.wait()

    async def _report_touched(self) -> None:
        letters, self._touched = self._touched, set()
        for letter_id in sorted(letters):
            try:
                await self._report(letter_id)
            except Exception as error:
                log_failure(log, f"letter #{letter_id}: report failed", error)

    async def _report(self, letter_id: int) -> None:
        now = time.monotonic()
        if now - self._progress_shown.get(letter_id, 0.0) >= PROGRESS_EVERY:
            self._progress_shown[letter_id] = now
            await broadcast.show_progress(self.ctx, letter_id)
        await broadcast.publish_if_done(self.ctx, letter_id)

    async def _record_sent(self, job: DeliveryJob, parts: int, remote_ids: tuple[str, ...]) -> None:
        """Returns once the delivery is durably recorded as sent; commits are shared by the sends that are
        waiting for one, so the database never becomes the bottleneck of a broadcast."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._to_commit.append(((job.id, parts, remote_ids), future))
        if not self._committing:
            self._committing = True
            # Kept: the loop holds only a weak reference to a task, which could vanish mid-commit.
            self._commit_task = asyncio.get_running_loop().create_task(self._commit())
        await future

    async def _commit(self) -> None:
        try:
            while self._to_commit:
                # Sends that end in the next few milliseconds share this transaction: at 1,000 a second they came
                # one or two to a commit, each a round trip to the database thread.
                await asyncio.sleep(GROUP_COMMIT_GATHER)
                batch, self._to_commit = self._to_commit, []
                try:
                    await self.ctx.repos.deliveries.mark_sent([entry for entry, _ in batch], self.ctx.clock.now())
                except Exception as error:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._committing = False

    async def _send_parts(self, job: DeliveryJob) -> None:
        repos, clock = self.ctx.repos, self.ctx.clock
        messages = await self._messages(job)
        network = self.ctx.network(job.platform)
        pacer = self.pacers[job.platform]
        remote_ids = list(job.remote_ids)
        for index in range(job.parts_sent, len(messages)):
            await pacer.acquire(job.chat_id, job.kind, paid=True)  # a letter: paid where the network has that
            ref = await network.send(messages[index])
            remote_ids.append(ref.message_id)
            if index + 1 < len(messages):
                await repos.deliveries.record_part(job.id, index + 1, tuple(remote_ids), clock.now())
        await self._record_sent(job, len(messages), tuple(remote_ids))

    async def _messages(self, job: DeliveryJob) -> list[OutgoingMessage]:
        """This delivery's parts, rendered once per letter, language and platform rather than once per chat.

        What was rendered is reused for a few seconds only, so a moderator's correction (`lang`, `translation`)
        reaches every delivery that is not yet sent.
        """
        key = (job.letter_id, job.language, job.platform)
        now = time.monotonic()
        cached = self._rendered.get(key)
        if cached is None or cached[1] < now:
            if len(self._rendered) >= RENDER_CACHE_SIZE:
                self._rendered.clear()
            # One rendering shared by every send that asks meanwhile: a broadcast starts 128 sends at once.
            composing = asyncio.ensure_future(self._compose(job.letter_id, job.platform, job.language))
            cached = self._rendered[key] = (composing, now + RENDER_CACHE_SECONDS)
        rendering = cached[0]
        if rendering.done() and rendering.exception() is None:
            return broadcast.address(rendering.result(), job.letter_id, job.chat_id)
        try:
            parts = await asyncio.shield(rendering)  # one send stopped (a shutdown) leaves it to the others
        except Exception:
            if self._rendered.get(key) is cached:
                del self._rendered[key]  # not ready (translating) or failed: the next send tries again
            raise
        return broadcast.address(parts, job.letter_id, job.chat_id)

    async def _compose(self, letter_id: int, platform: str, language: str) -> list[OutgoingMessage]:
        letter = await self.ctx.repos.letters.get(letter_id)
        assert letter is not None
        return await broadcast.compose(self.ctx, letter, platform, language)  # NotReady: translating

    async def _failed(self, job: DeliveryJob, error: DeliveryError) -> None:
        repos, now = self.ctx.repos, self.ctx.clock.now()
        if error.moved_to is not None:
            log.info("delivery %d: subscription %d moved to the chat's new id", job.id, job.subscription_id)
            log.debug("delivery %d: chat %s moved to %s", job.id, job.chat_id, error.moved_to)
            await repos.subscriptions.move(job.subscription_id, error.moved_to, now)
            await repos.deliveries.reschedule(job.id, now, error.reason, now)
        elif error.gone:
            reason = without_ids(error.reason)
            log.info(
                "delivery %d: subscription %d ended, its %s chat is gone: %s",
                job.id, job.subscription_id, job.platform, reason,
            )
            log.debug("delivery %d: %s chat %s is gone: %s", job.id, job.platform, job.chat_id, error.reason)
            await end_subscription(self.ctx, job.subscription_id, error.reason)
        elif (delay := self.retry.next_try(error, job.attempts)) is None:
            reason = without_ids(error.reason)
            log.warning("delivery %d failed for good after %d attempts: %s", job.id, job.attempts, reason)
            await repos.deliveries.mark_failed(job.id, error.reason, now)
        else:
            if error.retry_after is not None:
                self.pacers[job.platform].pause(job.chat_id, error.retry_after)
            log.info("delivery %d: retry in %.1f s (%s)", job.id, delay, without_ids(error.reason))
            await repos.deliveries.reschedule(job.id, now + delay, error.reason, now)

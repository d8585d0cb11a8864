"""The outbox worker: claims due deliveries, sends them paced per platform and chat, records every outcome.

Only this module decides about retries. A delivery's parts go out in order and each sent part is recorded,
so a crash resumes at the first part not known to be out; at most the part in flight can be repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

from bot.pacing import Pacer
from handlers import broadcast
from handlers.context import Context
from handlers.events import OutgoingMessage
from handlers.loggable import log_failure, without_ids
from handlers.ports import DeliveryError, NotReady
from storage.deliveries import DeliveryJob

log = logging.getLogger(__name__)

# Enough sends in flight to keep the fastest platform busy across a ~0.2 s round trip, and no more: a larger
# pool costs CPU in httpx/httpcore for every request (measured: it scans all connections per event).
ROUND_TRIP_SECONDS = 0.2
MIN_CONCURRENCY, MAX_CONCURRENCY = 8, 128


def concurrency_for(pacers: dict[str, Pacer]) -> int:
    fastest = max((pacer.rates.per_second for pacer in pacers.values()), default=1.0)
    return int(min(max(fastest * ROUND_TRIP_SECONDS, MIN_CONCURRENCY), MAX_CONCURRENCY))


# Card edits count against the moderation chat's own rate limit (Telegram: 20 a minute into a group).
PROGRESS_EVERY = 10.0
# A moderator's correction of a letter's language or translation reaches deliveries within this time.
RENDER_CACHE_SECONDS = 5.0
RENDER_CACHE_SIZE = 64


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: float = 2.0
    max_delay: float = 900.0
    max_attempts: int = 30  # with the delays above: about six hours of trying

    def delay(self, attempts: int) -> float:
        base = min(self.first_delay * 2 ** max(attempts - 1, 0), self.max_delay)
        return base * random.uniform(0.8, 1.2)


class DeliveryWorker:
    def __init__(
        self, ctx: Context, pacers: dict[str, Pacer], concurrency: int | None = None, retry: RetryPolicy | None = None
    ) -> None:
        self.ctx = ctx
        self.pacers = pacers
        self.concurrency = concurrency or concurrency_for(pacers)
        self.retry = retry or RetryPolicy()
        self._wake = asyncio.Event()
        self._stopping = False
        self._run_task: asyncio.Task[None] | None = None
        self._in_flight: dict[asyncio.Task[None], tuple[str, str]] = {}
        self._progress_shown: dict[int, float] = {}
        self._rendered: dict[tuple[int, str, str], tuple[list[OutgoingMessage], float]] = {}
        # Letters whose cards may need an update; one reporter works through them, one edit at a time, so a
        # late progress edit can never overwrite the final report.
        self._touched: set[int] = set()
        self._touched_event = asyncio.Event()
        # Sends waiting to be recorded: many go into one transaction (a group commit) while the last one runs.
        self._to_commit: list[tuple[tuple[int, int, tuple[str, ...]], asyncio.Future[None]]] = []
        self._committing = False
        self._commit_task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        self._run_task = asyncio.current_task()
        repos = self.ctx.repos
        recovered = await repos.deliveries.recover_in_flight(self.ctx.clock.now())
        if recovered:
            log.info("delivery: %d deliveries were in flight at the last stop; sending them again", recovered)
        # A broadcast that ended just before a stop still owes the moderators its report.
        self._touched.update(await repos.letters.unreported())
        self._touched_event.set()
        reporter = asyncio.create_task(self._reporter())
        try:
            while not self._stopping:
                self._wake.clear()
                started = await self._claim_and_start()
                if started and len(self._in_flight) < self.concurrency:
                    continue  # there may be more due right now
                await self._sleep_until_due()
        finally:
            # Not cancelled: a report cut off between "reported" and the message would be lost for good.
            self._touched_event.set()
            await asyncio.gather(reporter, return_exceptions=True)

    async def _claim_and_start(self) -> int:
        free = self.concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        busy = frozenset(self._in_flight.values())
        jobs = await self.ctx.repos.deliveries.claim_due(self.ctx.clock.now(), free, busy)
        for job in jobs:
            task = asyncio.create_task(self._deliver(job))
            self._in_flight[task] = (job.platform, job.chat_id)
            task.add_done_callback(self._done)
        return len(jobs)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wake.set()

    async def _sleep_until_due(self) -> None:
        if not self._in_flight:
            for pacer in self.pacers.values():
                pacer.forget_idle()  # between broadcasts: forget the chats, keep the memory flat
        next_due = await self.ctx.repos.deliveries.next_due_at()
        timeout = 5.0 if next_due is None else min(max(next_due - self.ctx.clock.now(), 0.05), 5.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; give sends in flight `grace` seconds, then cancel them (they are retried at next start)."""
        self._stopping = True
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
            await pacer.acquire(job.chat_id, job.kind)
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
        cached = self._rendered.get(key)
        if cached is None or cached[1] < time.monotonic():
            letter = await self.ctx.repos.letters.get(job.letter_id)
            assert letter is not None
            text = await broadcast.text_in(self.ctx, letter, job.language)  # NotReady while being translated
            if len(self._rendered) > RENDER_CACHE_SIZE:
                self._rendered.clear()
            parts = broadcast.render(self.ctx, letter, job.platform, job.language, text)
            cached = self._rendered[key] = (parts, time.monotonic() + RENDER_CACHE_SECONDS)
        return broadcast.address(cached[0], job.letter_id, job.chat_id)

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
            await repos.subscriptions.deactivate(job.subscription_id, error.reason, now)
        elif not error.retryable or job.attempts >= self.retry.max_attempts:
            reason = without_ids(error.reason)
            log.warning("delivery %d failed for good after %d attempts: %s", job.id, job.attempts, reason)
            await repos.deliveries.mark_failed(job.id, error.reason, now)
        else:
            delay = error.retry_after if error.retry_after is not None else self.retry.delay(job.attempts)
            if error.retry_after is not None:
                self.pacers[job.platform].pause(job.chat_id, error.retry_after)
            log.info("delivery %d: retry in %.1f s (%s)", job.id, delay, without_ids(error.reason))
            await repos.deliveries.reschedule(job.id, now + delay, error.reason, now)

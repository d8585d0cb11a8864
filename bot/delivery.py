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
from handlers.ports import DeliveryError, NotReady
from handlers.translating import LetterText
from storage.deliveries import DeliveryJob
from storage.letters import Letter

log = logging.getLogger(__name__)

# Card edits count against the moderation chat's own rate limit (Telegram: 20 a minute into a group).
PROGRESS_EVERY = 10.0
# A moderator's `lang` correction reaches deliveries within this time.
LETTER_CACHE_SECONDS = 5.0
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
        self, ctx: Context, pacers: dict[str, Pacer], concurrency: int = 32, retry: RetryPolicy | None = None
    ) -> None:
        self.ctx = ctx
        self.pacers = pacers
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[asyncio.Task[None], tuple[str, str]] = {}
        self._progress_shown: dict[int, float] = {}
        self._letters: dict[int, tuple[Letter, float]] = {}
        self._rendered: dict[tuple[int, str, str, LetterText], list[OutgoingMessage]] = {}
        # One card edit at a time, so a late progress edit can never overwrite the final report.
        self._report_lock = asyncio.Lock()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        repos = self.ctx.repos
        recovered = await repos.deliveries.recover_in_flight(self.ctx.clock.now())
        if recovered:
            log.info("delivery: %d deliveries were in flight at the last stop; sending them again", recovered)
        while not self._stopping:
            self._wake.clear()
            started = await self._claim_and_start()
            if started and len(self._in_flight) < self.concurrency:
                continue  # there may be more due right now
            await self._sleep_until_due()

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
        next_due = await self.ctx.repos.deliveries.next_due_at()
        timeout = 5.0 if next_due is None else min(max(next_due - self.ctx.clock.now(), 0.05), 5.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; give sends in flight `grace` seconds, then cancel them (they are retried at next start)."""
        self._stopping = True
        self._wake.set()
        tasks = list(self._in_flight)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

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
            log.exception("delivery %d: unexpected error", job.id)
            await self._failed(job, DeliveryError(repr(error), retryable=True))
        try:
            await self._report(job.letter_id)
        except Exception:
            log.exception("letter #%d: report failed", job.letter_id)

    async def _report(self, letter_id: int) -> None:
        async with self._report_lock:
            now = time.monotonic()
            if now - self._progress_shown.get(letter_id, 0.0) >= PROGRESS_EVERY:
                self._progress_shown[letter_id] = now
                await broadcast.show_progress(self.ctx, letter_id)
            await broadcast.report_if_finished(self.ctx, letter_id)

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
        await repos.deliveries.mark_sent(job.id, len(messages), tuple(remote_ids), clock.now())

    async def _messages(self, job: DeliveryJob) -> list[OutgoingMessage]:
        """This delivery's parts. Rendering (splitting a long text) is done once per letter, platform and
        text, not once per chat; the letter itself is re-read at most every few seconds."""
        letter = self._letters.get(job.letter_id)
        if letter is None or letter[1] < time.monotonic():
            fresh = await self.ctx.repos.letters.get(job.letter_id)
            assert fresh is not None
            letter = self._letters[job.letter_id] = (fresh, time.monotonic() + LETTER_CACHE_SECONDS)
        text = await broadcast.text_in(self.ctx, letter[0], job.language)
        key = (job.letter_id, job.platform, job.language, text)
        parts = self._rendered.get(key)
        if parts is None:
            if len(self._rendered) > RENDER_CACHE_SIZE:
                self._rendered.clear()
            parts = self._rendered[key] = broadcast.render(self.ctx, letter[0], job.platform, job.language, text)
        return broadcast.address(parts, job.letter_id, job.chat_id)

    async def _failed(self, job: DeliveryJob, error: DeliveryError) -> None:
        repos, now = self.ctx.repos, self.ctx.clock.now()
        if error.moved_to is not None:
            log.info("delivery %d: chat %s moved to %s", job.id, job.chat_id, error.moved_to)
            await repos.subscriptions.move(job.subscription_id, error.moved_to, now)
            await repos.deliveries.reschedule(job.id, now, error.reason, now)
        elif error.gone:
            log.info("delivery %d: %s chat %s is gone: %s", job.id, job.platform, job.chat_id, error.reason)
            await repos.subscriptions.deactivate(job.subscription_id, error.reason, now)
        elif not error.retryable or job.attempts >= self.retry.max_attempts:
            log.warning("delivery %d failed for good after %d attempts: %s", job.id, job.attempts, error.reason)
            await repos.deliveries.mark_failed(job.id, error.reason, now)
        else:
            delay = error.retry_after if error.retry_after is not None else self.retry.delay(job.attempts)
            if error.retry_after is not None:
                self.pacers[job.platform].pause(job.chat_id, error.retry_after)
            log.info("delivery %d: retry in %.1f s (%s)", job.id, delay, error.reason)
            await repos.deliveries.reschedule(job.id, now + delay, error.reason, now)

"""Deferred jobs (e.g. closing a letter's joining window) as tasks the application can cancel on shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from handlers.loggable import log_failure

log = logging.getLogger(__name__)


class TaskScheduler:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def call_later(self, delay: float, job: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.get_running_loop().create_task(self._later(delay, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _later(delay: float, job: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(delay)
        try:
            await job()
        except Exception as error:
            log_failure(log, f"scheduled job {_name_of(job)} failed", error)

    async def cancel_all(self) -> None:
        """Work left undone here is found again at the next start (e.g. letters without receipt)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _name_of(job: Callable[[], Awaitable[None]]) -> str:
    target = getattr(job, "func", job)  # functools.partial
    return str(getattr(target, "__qualname__", type(target).__name__))

"""Even spacing of sends: a global rate per platform and a minimum interval per destination chat.

Reserving the next free slot (instead of reacting to 429s) keeps a broadcast under the platform's limits
without ever pausing unrelated destinations; a `retry_after` pushes back only the chat that got it. When 429s
come from several chats within a few seconds, the platform's global limit is lower than we thought: the global
rate is cut, then recovers slowly once they stop (additive increase, multiplicative decrease).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rates:
    per_second: float  # all destinations together
    private_interval: float  # seconds between two messages into one private chat
    group_interval: float
    channel_interval: float

    def interval(self, kind: str) -> float:
        return {"private": self.private_interval, "channel": self.channel_interval}.get(kind, self.group_interval)



# 429s from this many different chats within the window mean the global rate is too high.
CROWDED_CHATS = 2
CROWDED_WINDOW = 5.0
CUT_FACTOR = 0.7
RECOVERY_PER_SECOND = 0.05  # of the configured rate, regained per second without a crowded 429
FLOOR_PER_SECOND = 0.5


class Pacer:
    def __init__(
        self,
        rates: Rates,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rates = rates
        self.clock = clock
        self.sleep = sleep
        self._next_global = 0.0
        self._last_sent = float("-inf")
        self._next_for_chat: dict[str, float] = {}
        self._rate = rates.per_second
        self._last_change = clock()
        self._recent_429s: dict[str, float] = {}

    @property
    def rate(self) -> float:
        """The global rate in force now, recovered towards the configured one since the last cut."""
        recovered = self._rate + self.rates.per_second * RECOVERY_PER_SECOND * (self.clock() - self._last_change)
        return min(self.rates.per_second, recovered)

    async def acquire(self, chat_id: str, kind: str) -> None:
        """Wait for this chat's next slot, then for a free global slot.

        The global slot is taken only once the chat's own wait is over, so a chat that must wait (a busy
        group, a retry_after) never holds back the others.
        """
        now = self.clock()
        chat_slot = max(now, self._next_for_chat.get(chat_id, 0.0))
        self._next_for_chat[chat_id] = chat_slot + self.rates.interval(kind)
        if chat_slot > now:
            await self.sleep(chat_slot - now)
        now = self.clock()
        spacing = 1.0 / self.rate
        global_slot = max(now, self._next_global)
        self._next_global = global_slot + spacing
        if global_slot > now:
            await self.sleep(global_slot - now)
        # Tasks woken late by a busy loop would otherwise send in a burst: keep real sends apart too.
        while (gap := self._last_sent + spacing - self.clock()) > 0:
            await self.sleep(gap)
        self._last_sent = self.clock()
        # Measure the chat's interval from the moment it really sends. (forget_idle may have dropped the chat
        # while this send waited for its global slot.)
        self._next_for_chat[chat_id] = max(self._next_for_chat.get(chat_id, 0.0),
                                           self._last_sent + self.rates.interval(kind))

    def pause(self, chat_id: str, seconds: float) -> None:
        """The platform asked this chat to wait; 429s across several chats also slow everything down."""
        now = self.clock()
        self._next_for_chat[chat_id] = max(self._next_for_chat.get(chat_id, 0.0), now + seconds)
        self._recent_429s = {chat: at for chat, at in self._recent_429s.items() if now - at < CROWDED_WINDOW}
        self._recent_429s[chat_id] = now
        if len(self._recent_429s) >= CROWDED_CHATS:
            self._rate = max(self.rate * CUT_FACTOR, FLOOR_PER_SECOND)
            self._last_change = now
            self._recent_429s.clear()

    def forget_idle(self) -> None:
        """Drop chats whose slot is in the past, so the table does not grow with every chat ever served."""
        now = self.clock()
        self._next_for_chat = {chat: slot for chat, slot in self._next_for_chat.items() if slot > now}

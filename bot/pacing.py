"""Even spacing of sends: a global rate per platform and a minimum interval per destination chat.

Reserving the next free slot (instead of reacting to 429s) keeps a broadcast under the platform's limits
without ever pausing unrelated destinations; a `retry_after` pushes back only the chat that got it. When 429s
come from several chats within a few seconds, the platform's global limit is lower than we thought: the global
rate is cut, then recovers slowly once they stop (additive increase, multiplicative decrease).

The global slots are a schedule, one every 1/rate seconds: a send the event loop woke late (timers fire on
millisecond ticks, a busy loop later still) keeps its place, and the next ones catch up, rather than every
lateness pushing the whole broadcast back (measured before: 3 % over 600 sends at 30/s, 27 % at 1,000/s).
Catching up never puts more than one second's worth of sends into any second, the window Telegram counts in.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Rates:
    per_second: float  # all destinations together
    private_interval: float  # seconds between two messages into one private chat
    group_interval: float
    channel_interval: float
    # With paid broadcast, the letters go at per_second and everything else at this rate, as the platform counts
    # the two apart (Telegram: 1,000 paid a second, still 30 of the rest); None: no such split.
    unpaid_per_second: float | None = None

    def interval(self, kind: str) -> float:
        return {"private": self.private_interval, "channel": self.channel_interval}.get(kind, self.group_interval)



# 429s from this many different chats within the window mean the global rate is too high.
CROWDED_CHATS = 2
CROWDED_WINDOW = 5.0
CUT_FACTOR = 0.7
RECOVERY_PER_SECOND = 0.05  # of the configured rate, regained per second without a crowded 429
FLOOR_PER_SECOND = 0.5
CUT_HOLD_SECONDS = 1.0  # after a cut, 429s this soon are still from before it (the platform counts per second)
# Sends are counted over this window, as the platforms count them: never more than a window's worth in one.
WINDOW_SECONDS = 1.0
# How close two sends may come while catching up, as a share of the spacing: a late send may go at once, the
# one after it half a slot later. Not below a timer tick: the event loop's timers fire on millisecond ticks, so a
# shorter wait lasts a whole tick, which at 1,000/s is a whole slot (the window alone bounds those bursts).
CATCH_UP_GAP = 0.5
TIMER_TICK = 0.001


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
        self._next_unpaid = 0.0
        self._last_sent = float("-inf")
        self._window: deque[float] = deque()  # when the sends of the last WINDOW_SECONDS went, oldest first
        self._next_for_chat: dict[str, float] = {}
        self._rate = rates.per_second
        self._last_change = clock()
        self._last_cut = float("-inf")
        self._recent_429s: dict[str, float] = {}

    @property
    def rate(self) -> float:
        """The global rate in force now, recovered towards the configured one since the last cut."""
        recovered = self._rate + self.rates.per_second * RECOVERY_PER_SECOND * (self.clock() - self._last_change)
        return min(self.rates.per_second, recovered)

    async def acquire(self, chat_id: str, kind: str, paid: bool = False) -> None:
        """Wait for this chat's next slot, then for a free global slot (and, for a send that is not a paid
        broadcast, a slot at the unpaid rate, when the rates have one).

        The global slot is taken only once the chat's own wait is over, so a chat that must wait (a busy
        group, a retry_after) never holds back the others.
        """
        now = self.clock()
        chat_slot = max(now, self._next_for_chat.get(chat_id, 0.0))
        self._next_for_chat[chat_id] = chat_slot + self.rates.interval(kind)
        if chat_slot > now:
            await self.sleep(chat_slot - now)
        if not paid and self.rates.unpaid_per_second:
            now = self.clock()
            unpaid_slot = max(now, self._next_unpaid)
            self._next_unpaid = unpaid_slot + 1.0 / self.rates.unpaid_per_second
            if unpaid_slot > now:
                await self.sleep(unpaid_slot - now)
        now = self.clock()
        spacing = 1.0 / self.rate
        global_slot = max(now, self._next_global)
        self._next_global = global_slot + spacing
        if global_slot > now:
            await self.sleep(global_slot - now)
        await self._keep_apart(spacing)
        # Measure the chat's interval from the moment it really sends. (forget_idle may have dropped the chat
        # while this send waited for its global slot.)
        self._next_for_chat[chat_id] = max(self._next_for_chat.get(chat_id, 0.0),
                                           self._last_sent + self.rates.interval(kind))

    async def _keep_apart(self, spacing: float) -> None:
        """Late sends catch up, but no two closer than CATCH_UP_GAP of a slot, and no more in any window than the
        schedule would send there (a loop that stalled for a second must not then send two seconds' worth at
        once)."""
        budget = max(math.ceil(self.rate * WINDOW_SECONDS), 1)
        # The stretch the schedule itself needs for a window's worth and one more (at 29.5/s, 31 sends take
        # 1.017 s): catching up never squeezes them tighter, so the margin under the platform's limit stays.
        window = max(budget * spacing, WINDOW_SECONDS)
        gap = spacing * CATCH_UP_GAP if spacing * CATCH_UP_GAP >= TIMER_TICK else 0.0
        while True:
            now = self.clock()
            while self._window and self._window[0] <= now - window:
                self._window.popleft()
            wait = self._last_sent + gap - now
            if len(self._window) >= budget:
                wait = max(wait, self._window[0] + window - now)
            if wait <= 0:
                break
            await self.sleep(wait)
        self._last_sent = now
        self._window.append(now)

    def pause(self, chat_id: str, seconds: float) -> None:
        """The platform asked this chat to wait; 429s across several chats also slow everything down."""
        now = self.clock()
        self._next_for_chat[chat_id] = max(self._next_for_chat.get(chat_id, 0.0), now + seconds)
        self._recent_429s = {chat: at for chat, at in self._recent_429s.items() if now - at < CROWDED_WINDOW}
        self._recent_429s[chat_id] = now
        if len(self._recent_429s) >= CROWDED_CHATS:
            self._recent_429s.clear()
            # One cut per crowded moment: the sends already on their way when it came get 429s too, and cutting
            # again for each pair of them took 980/s down to ~400/s after one crowded second (measured).
            if now - self._last_cut >= CUT_HOLD_SECONDS:
                self._rate = max(self.rate * CUT_FACTOR, FLOOR_PER_SECOND)
                self._last_change = self._last_cut = now

    def forget_idle(self) -> None:
        """Drop chats whose slot is in the past, so the table does not grow with every chat ever served."""
        now = self.clock()
        self._next_for_chat = {chat: slot for chat, slot in self._next_for_chat.items() if slot > now}

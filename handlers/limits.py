"""How much one sender may ask of the bot, and how often a refusal is answered."""

from __future__ import annotations

from collections import OrderedDict

REFUSAL_INTERVAL = 3600.0


class RefusalGate:
    """At most one answer an hour per sender and kind of refusal (banned, too many letters, not text, ...).

    A flood of refused messages is answered once, so it cannot eat the sending rate the bot shares with its
    broadcasts. In memory only: it would be one more record of who wrote when, and a restart forgetting it
    costs one more answer at most. Keys are keyed hashes of accounts, never the accounts.
    """

    def __init__(self, interval: float = REFUSAL_INTERVAL) -> None:
        self.interval = interval
        self._answered: OrderedDict[tuple[str, str], float] = OrderedDict()

    def allow(self, account: str, kind: str, now: float) -> bool:
        self._expire(now)
        if (account, kind) in self._answered:
            return False
        self._answered[(account, kind)] = now
        return True

    def _expire(self, now: float) -> None:
        # Entries go in in time order, so the oldest are always first.
        while self._answered:
            key, at = next(iter(self._answered.items()))
            if now - at < self.interval:
                return
            del self._answered[key]

    def __len__(self) -> int:
        return len(self._answered)

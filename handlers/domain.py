"""What happens to a letter, as events: the handlers that decide publish them; the effects (cards, notices to the
sender, the broadcast queue, retention) subscribe to them at the composition root (`handlers.effects`).

A new sink (an archive, metrics) subscribes here; it does not pretend to be a network, and the handler that
decides does not learn of it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from handlers.loggable import log_failure
from storage.deliveries import Progress
from storage.letters import Decision, Letter

if TYPE_CHECKING:
    from handlers.context import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LetterAnnounced:
    """A letter is complete (its parts joined), receipted, and waits for the moderators."""

    letter: Letter


@dataclass(frozen=True)
class LetterDecided:
    """A moderator approved or rejected a pending letter (the first decision: later ones are refused)."""

    letter: Letter  # as it was when it was decided
    decision: Decision


@dataclass(frozen=True)
class LetterWithdrawn:
    """The sender took back a pending letter (`withdraw N`, a Matrix redaction), and has been answered."""

    decision: Decision


@dataclass(frozen=True)
class LetterPublished:
    """Every delivery of an approved letter is done (sent, dropped or failed): it is out in the world."""

    decision: Decision
    progress: Progress


E = TypeVar("E")
Effect = Callable[["Context", Any], Awaitable[None]]


class DomainEvents:
    """Subscribers by event type, called in the order they subscribed; one that fails is logged and the others
    still run, as each effect stands on its own (a card that cannot be edited must not keep the sender untold)."""

    def __init__(self) -> None:
        self._effects: defaultdict[type, list[Effect]] = defaultdict(list)

    def subscribe(self, kind: type[E], effect: Callable[[Context, E], Awaitable[None]]) -> None:
        self._effects[kind].append(effect)

    async def publish(self, ctx: Context, event: object) -> None:
        for effect in self._effects[type(event)]:
            try:
                await effect(ctx, event)
            except Exception as error:
                log_failure(log, f"{getattr(effect, '__qualname__', 'an effect')} of {type(event).__name__} failed",
                            error)

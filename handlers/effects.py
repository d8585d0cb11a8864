"""Which effects follow which domain event, in order: the one place that wires them (the composition root calls
`subscribe`). The handlers that decide only publish."""

from __future__ import annotations

from handlers import broadcast, cards, notices, privacy
from handlers.domain import DomainEvents, LetterAnnounced, LetterDecided, LetterPublished, LetterWithdrawn


def subscribe(events: DomainEvents) -> DomainEvents:
    # The cards show the decision first; the sender is told; an approved letter goes to the broadcast queue; then,
    # the sender being told, retention may cut the letter's link to their account.
    events.subscribe(LetterAnnounced, cards.on_announced)
    events.subscribe(LetterDecided, cards.on_decided)
    events.subscribe(LetterDecided, notices.on_decided)
    events.subscribe(LetterDecided, broadcast.on_decided)
    events.subscribe(LetterDecided, privacy.on_decided)
    # All deliveries done: the card's final status, then the report in every moderation room.
    events.subscribe(LetterPublished, cards.on_published)
    events.subscribe(LetterPublished, broadcast.report)
    events.subscribe(LetterWithdrawn, cards.on_withdrawn)
    events.subscribe(LetterWithdrawn, privacy.on_decided)
    return events

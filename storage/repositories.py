"""All repositories over one database, as handlers and the worker receive them."""

from __future__ import annotations

from dataclasses import dataclass

from storage.cards import CardRepository
from storage.connection import Connection
from storage.deliveries import DeliveryRepository
from storage.letters import LetterRepository
from storage.media import MediaRepository
from storage.outbox import OutboxRepository
from storage.privacy import PrivacyRepository
from storage.rooms import RoomRepository
from storage.senders import BanRepository, SenderRepository
from storage.state import StateRepository
from storage.subscriptions import SubscriptionRepository
from storage.translations import TranslationRepository


@dataclass(frozen=True)
class Repositories:
    db: Connection
    senders: SenderRepository
    bans: BanRepository
    privacy: PrivacyRepository
    letters: LetterRepository
    media: MediaRepository
    cards: CardRepository
    subscriptions: SubscriptionRepository
    deliveries: DeliveryRepository
    outbox: OutboxRepository
    translations: TranslationRepository
    state: StateRepository
    rooms: RoomRepository

    @classmethod
    def over(cls, db: Connection) -> Repositories:
        return cls(
            db=db,
            senders=SenderRepository(db),
            bans=BanRepository(db),
            privacy=PrivacyRepository(db),
            letters=LetterRepository(db),
            media=MediaRepository(db),
            cards=CardRepository(db),
            subscriptions=SubscriptionRepository(db),
            deliveries=DeliveryRepository(db),
            outbox=OutboxRepository(db),
            translations=TranslationRepository(db),
            state=StateRepository(db),
            rooms=RoomRepository(db),
        )

"""Email, as the core sees it: its settings section, rate, secrets and transport. It holds no moderation room."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bot.networks.base import Needs
from bot.networks.email_settings import EmailSettings, read_section
from bot.pacing import Rates
from bot.reading import Reader

if TYPE_CHECKING:
    from bot.config import Settings
    from handlers.context import Network

# One address at most once a second: answers to one person never come as a burst.
PER_ADDRESS_INTERVAL = 1.0


class EmailNetwork:
    name = "email"
    switch = "EMAIL_ADDRESS"
    moderator_account = (re.compile(r"(?!)"), "nothing: moderators decide in the Telegram or Matrix room")
    moderator_example = ""
    folders = ()
    moderates = False

    def owns(self, reference: str) -> bool:
        return False  # an address is subscribed only by its owner, who confirms it

    def section(self, reader: Reader) -> EmailSettings | None:
        return read_section(reader)

    def secrets(self, section: EmailSettings) -> list[str | None]:
        return [section.password]

    def rates(self, section: EmailSettings) -> Rates:
        # A mail server is one lane for everything; providers throttle a mailbox that sends faster than agreed.
        interval = PER_ADDRESS_INTERVAL
        return Rates(per_second=section.per_second, private_interval=interval, group_interval=interval,
                     channel_interval=interval)

    def build(self, section: EmailSettings, needs: Needs) -> Network:
        from bot.transports.email import EmailTransport

        return EmailTransport(section, needs.state, keep_days=needs.settings.retention_days, media=needs.media)

    async def check(self, section: EmailSettings, settings: Settings) -> list[str]:
        from bot.transports.email import EmailTransport
        from storage.db import Database
        from storage.repositories import Repositories

        db = await Database.open(settings.database)
        try:
            return await EmailTransport(section, Repositories.over(db).state).check()
        finally:
            await db.close()

    def moderation_room(self, section: EmailSettings, network: Network) -> str | None:
        return None


NETWORK = EmailNetwork()

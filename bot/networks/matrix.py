"""Matrix, as the core sees it: its settings section, rates, secrets, transport, check and moderation room."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bot.networks.base import Needs
from bot.pacing import Rates
from bot.reading import ConfigError, Reader

if TYPE_CHECKING:
    from bot.config import Settings
    from handlers.context import Network

# Synapse limits messages per user, not per room: an exempted bot (override_ratelimit) goes as fast as the
# homeserver answers; a bot that is not exempted gets 429s, and the rate adapts down to what it is allowed.
MATRIX_RATES = Rates(per_second=100.0, private_interval=0.0, group_interval=0.0, channel_interval=0.0)
_USER = re.compile(r"^@[^:\s]+:\S+$")
STORE_FOLDER = "matrix-store"


@dataclass(frozen=True)
class MatrixSettings:
    homeserver: str
    user: str
    password: str | None
    access_token: str | None
    moderation_room: str
    encryption: bool = True
    per_second: float | None = None  # MATRIX_MESSAGES_PER_SECOND: the operator's overall rate

    def __repr__(self) -> str:
        return f"MatrixSettings(homeserver={self.homeserver!r}, user={self.user!r})"


def owns(reference: str) -> bool:
    """Matrix rooms are `!id` (room v12: no server part) or `#alias:server`."""
    return reference[:1] in ("!", "#") and len(reference) > 1


class MatrixNetwork:
    name = "matrix"
    switch = "MATRIX_HOMESERVER"
    moderator_account = (_USER, "a full Matrix ID like @mo:example.org")
    moderator_example = "matrix:@mo:example.org"
    folders = (STORE_FOLDER,)
    moderates = True

    def owns(self, reference: str) -> bool:
        return owns(reference)

    def section(self, reader: Reader) -> MatrixSettings | None:
        homeserver = reader.optional("MATRIX_HOMESERVER")
        if homeserver is None:
            return None
        reader.url("MATRIX_HOMESERVER", "")
        user = reader.required("MATRIX_USER")
        if not _USER.match(user):
            raise ConfigError("MATRIX_USER", "must be a full Matrix ID like @relay:example.org")
        password, access_token = reader.optional("MATRIX_PASSWORD"), reader.optional("MATRIX_ACCESS_TOKEN")
        if password is None and access_token is None:
            raise ConfigError("MATRIX_PASSWORD", "not set (set it or MATRIX_ACCESS_TOKEN)")
        return MatrixSettings(
            homeserver=homeserver.rstrip("/"),
            user=user,
            password=password,
            access_token=access_token,
            moderation_room=reader.required("MATRIX_MODERATION_ROOM"),
            encryption=reader.flag("MATRIX_ENCRYPTION", True),
            per_second=reader.optional_number("MATRIX_MESSAGES_PER_SECOND", minimum=0.05, maximum=1000),
        )

    def secrets(self, section: MatrixSettings) -> list[str | None]:
        return [section.password, section.access_token]

    def rates(self, section: MatrixSettings) -> Rates:
        return replace(MATRIX_RATES, per_second=section.per_second) if section.per_second else MATRIX_RATES

    def build(self, section: MatrixSettings, needs: Needs) -> Network:
        from bot.transports.matrix import MatrixTransport

        return MatrixTransport(section, needs.state, needs.data_dir / STORE_FOLDER, needs.media)

    async def check(self, section: MatrixSettings, settings: Settings) -> list[str]:
        from bot.transports.matrix import MatrixTransport
        from storage.db import Database
        from storage.repositories import Repositories

        db = await Database.open(settings.database)
        try:
            transport = MatrixTransport(section, Repositories.over(db).state, settings.database.parent / STORE_FOLDER)
            return await transport.check()
        finally:
            await db.close()

    def moderation_room(self, section: MatrixSettings, network: Network) -> str | None:
        # Known once the transport started: an alias is resolved then, and a room it cannot join is none.
        return getattr(network, "moderation_room_id", None)


NETWORK = MatrixNetwork()

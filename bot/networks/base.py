"""What a network module declares, in one place: adding a network is one module and one line in `bot.networks`.

The core (`bot.app`, `bot.config`, `bot.logs`) loops over the registered modules and never names a network. A
module imports its transport's library only in `build` and `check`, so a bot with one network never loads the
other's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.pacing import Rates
from bot.reading import Reader

if TYPE_CHECKING:
    from bot.config import Settings
    from handlers.context import Network


class KeyValue(Protocol):
    """A small key-value table in the bot's database (the state repository)."""

    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str) -> None: ...


class MediaReader(Protocol):
    def read(self, digest: str) -> bytes: ...


@dataclass(frozen=True)
class Needs:
    """What the composition root hands a network to build its transport with."""

    settings: Settings
    state: KeyValue  # a small key-value table in the bot's database
    data_dir: Path  # the bot's data folder (0700), for files of the network's own
    concurrency: int  # sends the outbox worker may have in flight on this network
    media: MediaReader  # the bot's media store, for the files cards and letters carry


class NetworkModule(Protocol):
    name: str  # also the platform name in events and in the database
    switch: str  # the setting that turns the network on ("TELEGRAM_TOKEN")
    # A moderator's account in MODERATORS (`name:account`): its pattern, and how to describe it when it is wrong.
    moderator_account: tuple[re.Pattern[str], str]
    moderator_example: str  # "telegram:123456789"
    folders: tuple[str, ...]  # folders of its own in the data folder, kept private like the database
    moderates: bool  # whether it can hold a moderation room (email cannot: it has no room)

    def owns(self, reference: str) -> bool:
        """Whether a chat reference a moderator typed (`subscribe REFERENCE es`) names one of its chats."""
        ...

    def section(self, reader: Reader) -> Any | None:
        """The network's settings, or None when it is not configured; ConfigError names a bad one."""
        ...

    def secrets(self, section: Any) -> list[str | None]:
        """Values never to log (tokens, passwords)."""
        ...

    def rates(self, section: Any) -> Rates:
        """The platform's documented limits, with the operator's overrides in the section."""
        ...

    def build(self, section: Any, needs: Needs) -> Network: ...

    async def check(self, section: Any, settings: Settings) -> list[str]:
        """`--check`: one line per problem, after printing what was found."""
        ...

    def moderation_room(self, section: Any, network: Network) -> str | None:
        """The moderation room's chat id once the network started (None: it has none it could join)."""
        ...

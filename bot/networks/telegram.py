"""Telegram, as the core sees it: its settings section, rates, secrets, transport, check and moderation chat."""

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

# Telegram's documented limits: ~30 messages/s overall, ~1/s into one chat, 20/min into one group or channel.
# The bot keeps under the overall limit (1.7 %, 4 % with paid broadcast): a request that reaches Telegram a
# little late (network jitter, a busy loop) would otherwise make 31 in one second, or 1,001. Measured against the
# emulator: at 29.6 of 30 a second, a send 12 ms late made a 429 in one of three broadcasts to 600 chats (at 29.5
# evenly spaced sends leave 17 ms); at 990 of 1,000, 1 or 2 of 2,000 sends got a 429 in some runs, at 980 on a busier
# machine up to 12, at 960 none.
FREE_LIMIT, PAID_LIMIT = 30, 1000
TELEGRAM_RATES = Rates(per_second=29.5, private_interval=1.0, group_interval=3.0, channel_interval=3.0)
# With allow_paid_broadcast (paid in Telegram Stars) the overall limit is 1,000 messages/s.
# Only letters to subscribers are paid broadcasts: receipts, notices and cards stay under the free limit.
TELEGRAM_PAID_RATES = Rates(per_second=960.0, private_interval=1.0, group_interval=3.0, channel_interval=3.0,
                            unpaid_per_second=TELEGRAM_RATES.per_second)
_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{10,}$")
# `@channelname` or a numeric chat id (`-100…` for channels and supergroups).
_REFERENCE = re.compile(r"^(?:@\w{1,64}|-?\d{1,20})$")
# The worker's sends in flight, plus room for replies, card edits and the long poll.
SPARE_CONNECTIONS = 8
HTTP_BACKENDS = ("aiohttp", "httpx")


@dataclass(frozen=True)
class TelegramSettings:
    token: str
    api_url: str
    moderation_chat: str
    paid_broadcast: bool
    per_second: float | None = None  # TELEGRAM_MESSAGES_PER_SECOND: the operator's overall rate
    # TELEGRAM_HTTP_BACKEND: aiohttp (bot/transports/telegram_request.py: 2-3x the sends/s of PTB's default), or
    # httpx, PTB's own HTTPXRequest, for its proxy support (SOCKS, HTTPS proxies).
    http_backend: str = "aiohttp"

    def __repr__(self) -> str:
        # Keep the token out of logs and tracebacks.
        return f"TelegramSettings(api_url={self.api_url!r}, moderation_chat={self.moderation_chat!r})"


def owns(reference: str) -> bool:
    """Whether a chat reference a moderator typed names a Telegram chat."""
    return bool(_REFERENCE.match(reference))


class TelegramNetwork:
    name = "telegram"
    switch = "TELEGRAM_TOKEN"
    moderator_account = (re.compile(r"^\d{1,20}$"), "a numeric user id (the bot's /id shows it)")
    moderator_example = "telegram:123456789"
    folders = ()
    moderates = True

    def owns(self, reference: str) -> bool:
        return owns(reference)

    def section(self, reader: Reader) -> TelegramSettings | None:
        token = reader.optional("TELEGRAM_TOKEN")
        if token is None:
            return None
        if not _TOKEN.match(token):
            raise ConfigError("TELEGRAM_TOKEN", "does not look like a bot token from @BotFather (digits:letters)")
        paid = reader.flag("TELEGRAM_PAID_BROADCAST", False)
        per_second = reader.optional_number("TELEGRAM_MESSAGES_PER_SECOND", minimum=0.1, maximum=PAID_LIMIT)
        if per_second is not None and per_second > FREE_LIMIT and not paid:
            raise ConfigError("TELEGRAM_MESSAGES_PER_SECOND", f"above Telegram's limit of {FREE_LIMIT} a second; "
                              "set TELEGRAM_PAID_BROADCAST=true (paid in Telegram Stars) to send faster")
        return TelegramSettings(
            token=token,
            api_url=reader.url("TELEGRAM_API_URL", "https://api.telegram.org"),
            moderation_chat=reader.chat_id("TELEGRAM_MODERATION_CHAT"),
            paid_broadcast=paid,
            per_second=per_second,
            http_backend=reader.choice("TELEGRAM_HTTP_BACKEND", HTTP_BACKENDS, "aiohttp"),
        )

    def secrets(self, section: TelegramSettings) -> list[str | None]:
        return [section.token]

    def rates(self, section: TelegramSettings) -> Rates:
        """The paid rate only with paid broadcast; an operator's rate up to the limit is kept under it."""
        rates = TELEGRAM_PAID_RATES if section.paid_broadcast else TELEGRAM_RATES
        if section.per_second is None:
            return rates
        return replace(rates, per_second=min(section.per_second, rates.per_second))

    def build(self, section: TelegramSettings, needs: Needs) -> Network:
        from bot.transports.telegram import TelegramTransport

        return TelegramTransport(section, connection_pool_size=needs.concurrency + SPARE_CONNECTIONS,
                                 state=needs.state, media=needs.media)

    async def check(self, section: TelegramSettings, settings: Settings) -> list[str]:
        from bot.transports.telegram import TelegramTransport

        return await TelegramTransport(section).check()

    def moderation_room(self, section: TelegramSettings, network: Network) -> str | None:
        return section.moderation_chat


NETWORK = TelegramNetwork()

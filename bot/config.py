"""Settings, built once from an environment mapping; every problem names the setting to fix.

Each network reads its own section (`bot.networks`); what is here belongs to the bot as a whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.networks import NETWORKS
from bot.reading import ConfigError, Reader

__all__ = ["ConfigError", "Settings"]

TRANSLATORS = ("google", "libre", "deepl", "mymemory", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    # The configured networks' sections, by network name, in the order the networks are registered.
    networks: Mapping[str, Any]
    database: Path
    translator: str
    libretranslate_url: str | None
    libretranslate_api_key: str | None = field(repr=False)
    deepl_api_key: str | None = field(repr=False)
    letter_join_seconds: float
    translation_wait: float
    default_language: str
    log_level: str
    locales_dir: Path
    # Days after a letter's decision at which its link to the sender's account is cut; 0: once the sender is told.
    retention_days: float = 30.0
    letters_per_day: int = 20
    # "network:account" (each network's moderator_example); empty: every member of a moderation room moderates.
    moderators: frozenset[str] = field(default=frozenset(), repr=False)
    media_max_mb: float = 20.0  # larger photos, videos and documents are refused before any download

    def section(self, network: str) -> Any | None:
        """One network's settings, None when it is not configured."""
        return self.networks.get(network)

    @classmethod
    def from_env(cls, env: Mapping[str, str], locales_dir: Path | None = None) -> Settings:
        reader = Reader(env)
        sections = {network.name: network.section(reader) for network in NETWORKS}
        settings = cls(
            networks={name: section for name, section in sections.items() if section is not None},
            database=Path(reader.text("DATABASE", "data/relay.db")),
            translator=reader.choice("TRANSLATOR", TRANSLATORS, "google"),
            libretranslate_url=reader.optional("LIBRETRANSLATE_URL"),
            libretranslate_api_key=reader.optional("LIBRETRANSLATE_API_KEY"),
            deepl_api_key=reader.optional("DEEPL_API_KEY"),
            letter_join_seconds=reader.number("LETTER_JOIN_SECONDS", 5.0, minimum=0, maximum=60),
            translation_wait=reader.number("TRANSLATION_WAIT", 600.0, minimum=0, maximum=7 * 86400),
            default_language=reader.language("DEFAULT_LANGUAGE", "en"),
            log_level=reader.choice("LOG_LEVEL", LOG_LEVELS, "INFO", upper=True),
            locales_dir=locales_dir or Path(__file__).resolve().parent.parent / "locales",
            retention_days=reader.number("RETENTION_DAYS", 30.0, minimum=0, maximum=3650, unit="days"),
            letters_per_day=int(reader.number("LETTERS_PER_DAY", 20, minimum=1, maximum=100_000, unit="letters",
                                              whole=True)),
            moderators=_moderators(reader),
            # 20 MB: what Telegram's cloud Bot API lets a bot download; 50 MB: what it lets a bot upload.
            media_max_mb=reader.number("MEDIA_MAX_MB", 20.0, minimum=0.1, maximum=50, unit="MB"),
        )
        if not settings.networks:
            first, *others = (network.switch for network in NETWORKS if network.moderates)
            raise ConfigError(first, f"not set (set it or {' or '.join(others)}: at least one network is needed)")
        if not any(network.moderates for network in NETWORKS if network.name in settings.networks):
            first, *others = (network.switch for network in NETWORKS if network.moderates)
            raise ConfigError(first, f"not set (set it or {' or '.join(others)}): letters need a moderation room, "
                                     f"and {' and '.join(settings.networks)} cannot hold one")
        _check_translator(settings)
        return settings


def _moderators(reader: Reader) -> frozenset[str]:
    accounts = set()
    rules = {network.name: network.moderator_account for network in NETWORKS if network.moderates}
    for entry in (reader.optional("MODERATORS") or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        network, _sep, account = entry.partition(":")
        rule = rules.get(network.lower())
        if rule is None:
            examples = " or ".join(network.moderator_example for network in NETWORKS if network.moderates)
            raise ConfigError("MODERATORS", f"entries look like {examples}, got {entry!r}")
        if not rule[0].match(account):
            raise ConfigError("MODERATORS", f"{network.lower()}: needs {rule[1]}, got {account!r}")
        accounts.add(f"{network.lower()}:{account}")
    return frozenset(accounts)


def _check_translator(settings: Settings) -> None:
    if settings.translator == "libre" and not settings.libretranslate_url:
        raise ConfigError("LIBRETRANSLATE_URL", "required with TRANSLATOR=libre")
    if settings.translator == "deepl" and not settings.deepl_api_key:
        raise ConfigError("DEEPL_API_KEY", "required with TRANSLATOR=deepl")

"""Settings, built once from an environment mapping; every problem names the setting to fix."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

TRANSLATORS = ("google", "libre", "deepl", "mymemory", "none")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{10,}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


class ConfigError(Exception):
    """A missing or invalid setting; the message starts with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


@dataclass(frozen=True)
class TelegramSettings:
    token: str
    api_url: str
    moderation_chat: str
    paid_broadcast: bool

    def __repr__(self) -> str:
        # Keep the token out of logs and tracebacks.
        return f"TelegramSettings(api_url={self.api_url!r}, moderation_chat={self.moderation_chat!r})"


@dataclass(frozen=True)
class MatrixSettings:
    homeserver: str
    user: str
    password: str | None
    access_token: str | None
    moderation_room: str
    encryption: bool = True

    def __repr__(self) -> str:
        return f"MatrixSettings(homeserver={self.homeserver!r}, user={self.user!r})"


@dataclass(frozen=True)
class Settings:
    telegram: TelegramSettings | None
    matrix: MatrixSettings | None
    database: Path
    translator: str
    libretranslate_url: str | None
    libretranslate_api_key: str | None = field(repr=False)
    deepl_api_key: str | None = field(repr=False)
    letter_join_seconds: float
    translation_wait: float
    default_language: str
    log_level: str
    telegram_per_second: float | None
    matrix_per_second: float | None
    locales_dir: Path
    # Days after a letter's decision at which its link to the sender's account is cut; 0: once the sender is told.
    retention_days: float = 30.0
    letters_per_day: int = 20
    # "telegram:123456789", "matrix:@mo:example.org"; empty: every member of a moderation room moderates.
    moderators: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], locales_dir: Path | None = None) -> Settings:
        reader = _Reader(env)
        settings = cls(
            telegram=_telegram(reader),
            matrix=_matrix(reader),
            database=Path(reader.text("DATABASE", "data/relay.db")),
            translator=reader.choice("TRANSLATOR", TRANSLATORS, "google"),
            libretranslate_url=reader.optional("LIBRETRANSLATE_URL"),
            libretranslate_api_key=reader.optional("LIBRETRANSLATE_API_KEY"),
            deepl_api_key=reader.optional("DEEPL_API_KEY"),
            letter_join_seconds=reader.number("LETTER_JOIN_SECONDS", 5.0, minimum=0, maximum=60),
            translation_wait=reader.number("TRANSLATION_WAIT", 600.0, minimum=0, maximum=7 * 86400),
            default_language=reader.language("DEFAULT_LANGUAGE", "en"),
            log_level=reader.choice("LOG_LEVEL", LOG_LEVELS, "INFO", upper=True),
            telegram_per_second=reader.optional_number("TELEGRAM_MESSAGES_PER_SECOND", minimum=0.1, maximum=1000),
            matrix_per_second=reader.optional_number("MATRIX_MESSAGES_PER_SECOND", minimum=0.05, maximum=1000),
            locales_dir=locales_dir or Path(__file__).resolve().parent.parent / "locales",
            retention_days=reader.number("RETENTION_DAYS", 30.0, minimum=0, maximum=3650, unit="days"),
            letters_per_day=int(reader.number("LETTERS_PER_DAY", 20, minimum=1, maximum=100_000, unit="letters",
                                              whole=True)),
            moderators=_moderators(reader),
        )
        if settings.telegram is None and settings.matrix is None:
            raise ConfigError("TELEGRAM_TOKEN", "not set (set it or MATRIX_HOMESERVER: at least one network is needed)")
        _check_translator(settings)
        return settings


def _telegram(reader: _Reader) -> TelegramSettings | None:
    token = reader.optional("TELEGRAM_TOKEN")
    if token is None:
        return None
    if not _TOKEN.match(token):
        raise ConfigError("TELEGRAM_TOKEN", "does not look like a bot token from @BotFather (digits:letters)")
    return TelegramSettings(
        token=token,
        api_url=reader.url("TELEGRAM_API_URL", "https://api.telegram.org"),
        moderation_chat=reader.chat_id("TELEGRAM_MODERATION_CHAT"),
        paid_broadcast=reader.flag("TELEGRAM_PAID_BROADCAST", False),
    )


def _matrix(reader: _Reader) -> MatrixSettings | None:
    homeserver = reader.optional("MATRIX_HOMESERVER")
    if homeserver is None:
        return None
    reader.url("MATRIX_HOMESERVER", "")
    user = reader.required("MATRIX_USER")
    if not re.match(r"^@[^:\s]+:\S+$", user):
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
    )


_MODERATOR = {
    "telegram": (re.compile(r"^\d{1,20}$"), "a numeric user id (the bot's /id shows it)"),
    "matrix": (re.compile(r"^@[^:\s]+:\S+$"), "a full Matrix ID like @mo:example.org"),
}


def _moderators(reader: _Reader) -> frozenset[str]:
    accounts = set()
    for entry in (reader.optional("MODERATORS") or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        network, _sep, account = entry.partition(":")
        rule = _MODERATOR.get(network.lower())
        if rule is None:
            raise ConfigError("MODERATORS", f"entries look like telegram:123456789 or matrix:@mo:example.org, "
                                            f"got {entry!r}")
        if not rule[0].match(account):
            raise ConfigError("MODERATORS", f"{network.lower()}: needs {rule[1]}, got {account!r}")
        accounts.add(f"{network.lower()}:{account}")
    return frozenset(accounts)


def _check_translator(settings: Settings) -> None:
    if settings.translator == "libre" and not settings.libretranslate_url:
        raise ConfigError("LIBRETRANSLATE_URL", "required with TRANSLATOR=libre")
    if settings.translator == "deepl" and not settings.deepl_api_key:
        raise ConfigError("DEEPL_API_KEY", "required with TRANSLATOR=deepl")


class _Reader:
    """Typed access to the environment; blank values count as unset, as in most .env files."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def optional(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def required(self, name: str) -> str:
        value = self.optional(name)
        if value is None:
            raise ConfigError(name, "not set")
        return value

    def text(self, name: str, default: str) -> str:
        return self.optional(name) or default

    def url(self, name: str, default: str) -> str:
        value = self.text(name, default).rstrip("/")
        if not re.match(r"^https?://[^\s/]+", value):
            raise ConfigError(name, f"must be an http(s) URL, got {value!r}")
        return value

    def chat_id(self, name: str) -> str:
        value = self.required(name)
        if not re.match(r"^-?\d+$", value):
            hint = "a numeric chat id like -1001234567890 (send /id in the chat)"
            raise ConfigError(name, f"must be {hint}, got {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str, upper: bool = False) -> str:
        value = self.text(name, default)
        value = value.upper() if upper else value.lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def optional_number(self, name: str, minimum: float, maximum: float) -> float | None:
        return None if self.optional(name) is None else self.number(name, 0.0, minimum, maximum)

    def number(
        self, name: str, default: float, minimum: float, maximum: float, unit: str = "seconds", whole: bool = False
    ) -> float:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = float(int(raw)) if whole else float(raw)
        except ValueError:
            kind = "a whole number" if whole else "a number"
            raise ConfigError(name, f"must be {kind} of {unit}, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise ConfigError(name, f"must be between {minimum:g} and {maximum:g}, got {raw}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.optional(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"must be true or false, got {raw!r}")

    def language(self, name: str, default: str) -> str:
        value = self.text(name, default).lower()
        if not _LANGUAGE.match(value):
            raise ConfigError(name, f"must be a language code like en or es, got {value!r}")
        return value

"""Reading settings from an environment mapping: typed, with every problem naming the setting to fix.

Shared by the core settings (`bot.config`) and each network's own section (`bot.networks`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_LANGUAGE = re.compile(r"^[a-z]{2,3}$")


class ConfigError(Exception):
    """A missing or invalid setting; the message starts with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


class Reader:
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

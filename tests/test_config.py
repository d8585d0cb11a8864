"""Settings: a missing or invalid setting is one clear line and exit code 2, never a traceback or a token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def run_bot(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=clean, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_unconfigured_bot_exits_2_naming_the_setting(tmp_path: Path) -> None:
    result = run_bot({}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TELEGRAM_TOKEN" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"TELEGRAM_TOKEN": TOKEN}, "TELEGRAM_MODERATION_CHAT"),
        ({"TELEGRAM_TOKEN": "not-a-token"}, "TELEGRAM_TOKEN"),
        ({"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_MODERATION_CHAT": "mods"}, "TELEGRAM_MODERATION_CHAT"),
        ({"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_MODERATION_CHAT": "-1", "TELEGRAM_API_URL": "ftp://x"},
         "TELEGRAM_API_URL"),
        ({"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_MODERATION_CHAT": "-1", "LETTER_JOIN_SECONDS": "soon"},
         "LETTER_JOIN_SECONDS"),
        ({"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_MODERATION_CHAT": "-1", "TRANSLATOR": "babelfish"}, "TRANSLATOR"),
        ({"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_MODERATION_CHAT": "-1", "TRANSLATOR": "libre"}, "LIBRETRANSLATE_URL"),
        ({"MATRIX_HOMESERVER": "https://m.org", "MATRIX_USER": "@relay:m.org", "MATRIX_MODERATION_ROOM": "!r:m.org"},
         "MATRIX_PASSWORD"),
        ({"MATRIX_HOMESERVER": "https://m.org", "MATRIX_USER": "relay"}, "MATRIX_USER"),
        ({"MATRIX_HOMESERVER": "https://m.org", "MATRIX_USER": "@relay:m.org", "MATRIX_PASSWORD": "p",
          "MATRIX_MODERATION_ROOM": "!r:m.org", "MATRIX_ENCRYPTION": "maybe"}, "MATRIX_ENCRYPTION"),
        ({"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_MODERATION_CHAT": "-1", "DEFAULT_LANGUAGE": "English"},
         "DEFAULT_LANGUAGE"),
    ],
)
def test_invalid_settings_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert raised.value.setting == setting
    assert str(raised.value).startswith(setting)
    assert TOKEN not in str(raised.value)


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"TELEGRAM_TOKEN={TOKEN}\nTELEGRAM_MODERATION_CHAT=-1\nLOG_LEVEL=loud\n")
    result = run_bot({}, cwd=tmp_path)
    assert result.returncode == 2 and "LOG_LEVEL" in result.stderr
    result = run_bot({"TELEGRAM_MODERATION_CHAT": "oops"}, cwd=tmp_path)
    assert result.returncode == 2 and "TELEGRAM_MODERATION_CHAT" in result.stderr


def test_defaults() -> None:
    settings = Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_MODERATION_CHAT": "-100123"})
    telegram = settings.section("telegram")
    assert telegram is not None
    assert telegram.api_url == "https://api.telegram.org"
    assert settings.database == Path("data/relay.db")
    assert settings.letter_join_seconds == 5 and settings.default_language == "en" and settings.translator == "google"
    assert TOKEN not in repr(settings)


def test_the_repr_of_settings_shows_no_secret() -> None:
    secrets = {
        "TELEGRAM_TOKEN": "7123456789:AAHsecretTelegramTokenValue_0123456789",
        "MATRIX_PASSWORD": "correct horse battery staple",
        "MATRIX_ACCESS_TOKEN": "syt_cmVsYXk_secretMatrixToken_1a2b3c",
        "LIBRETRANSLATE_API_KEY": "libre-secret-key-4711",
        "DEEPL_API_KEY": "deepl-secret-key-0815:fx",
    }
    settings = Settings.from_env({
        **secrets,
        "TELEGRAM_MODERATION_CHAT": "-100123",
        "MATRIX_HOMESERVER": "https://matrix.example.org",
        "MATRIX_USER": "@relay:example.org",
        "MATRIX_MODERATION_ROOM": "!mods:example.org",
        "TRANSLATOR": "deepl",
        "LIBRETRANSLATE_URL": "https://lt.example.org",
    })
    shown = repr(settings) + str(settings) + repr(settings.section("telegram")) + repr(settings.section("matrix"))
    for name, secret in secrets.items():
        assert secret not in shown, name
    assert "example.org" in shown  # the repr still says something


def test_matrix_encryption_is_on_unless_turned_off() -> None:
    matrix = {"MATRIX_HOMESERVER": "https://m.org", "MATRIX_USER": "@relay:m.org", "MATRIX_PASSWORD": "p",
              "MATRIX_MODERATION_ROOM": "!r:m.org"}
    on = Settings.from_env(matrix).section("matrix")
    off = Settings.from_env({**matrix, "MATRIX_ENCRYPTION": "false"}).section("matrix")
    assert on is not None and on.encryption and off is not None and not off.encryption


EMAIL = {
    "EMAIL_ADDRESS": "letters@collective.example", "EMAIL_IMAP_URL": "imaps://imap.collective.example/INBOX",
    "EMAIL_SMTP_URL": "smtps://smtp.collective.example", "EMAIL_USER": "letters", "EMAIL_PASSWORD": "mail-secret-77",
}


def test_an_email_only_bot_is_refused_in_one_line_saying_a_moderation_room_is_needed(tmp_path: Path) -> None:
    result = run_bot(EMAIL, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "TELEGRAM_TOKEN: not set" in line and "MATRIX_HOMESERVER" in line and "moderation room" in line
    assert "mail-secret-77" not in result.stderr


def test_email_beside_telegram_is_a_third_network_whose_password_stays_out_of_the_repr() -> None:
    settings = Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_MODERATION_CHAT": "-1", **EMAIL})
    assert list(settings.networks) == ["telegram", "email"]
    assert settings.networks["email"].smtp.security == "tls" and settings.networks["email"].per_second == 5.0
    assert "mail-secret-77" not in repr(settings)


def test_moderators_cannot_be_email_addresses() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_MODERATION_CHAT": "-1", **EMAIL,
                           "MODERATORS": "email:mo@collective.example"})
    assert raised.value.setting == "MODERATORS" and "telegram:" in str(raised.value)


def test_media_max_mb_is_bounded_by_what_telegram_lets_a_bot_upload() -> None:
    base = {"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_MODERATION_CHAT": "-1"}
    assert Settings.from_env(base).media_max_mb == 20
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**base, "MEDIA_MAX_MB": "500"})
    assert raised.value.setting == "MEDIA_MAX_MB"


def test_the_paid_rate_needs_paid_broadcast_and_keeps_under_telegrams_limits() -> None:
    from bot.networks.telegram import NETWORK

    base = {"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_MODERATION_CHAT": "-1"}

    def rate(**env: str) -> float:
        section = Settings.from_env({**base, **env}).section("telegram")
        assert section is not None
        return NETWORK.rates(section).per_second

    assert (rate(), rate(TELEGRAM_PAID_BROADCAST="true")) == (29.5, 960.0)
    assert rate(TELEGRAM_MESSAGES_PER_SECOND="20") == 20.0
    assert rate(TELEGRAM_MESSAGES_PER_SECOND="30") == 29.5  # Telegram's own limit: kept under it
    assert rate(TELEGRAM_MESSAGES_PER_SECOND="1000", TELEGRAM_PAID_BROADCAST="true") == 960.0
    with pytest.raises(ConfigError) as raised:  # without paying, 1,000 a second would be 429s
        Settings.from_env({**base, "TELEGRAM_MESSAGES_PER_SECOND": "1000"})
    assert raised.value.setting == "TELEGRAM_MESSAGES_PER_SECOND" and "TELEGRAM_PAID_BROADCAST" in str(raised.value)

"""Email's settings: TLS unless the server is on this machine, one line naming the setting that is wrong."""

from __future__ import annotations

import pytest

from bot.networks.email_settings import MailServer, read_section
from bot.reading import ConfigError, Reader

BASE = {
    "EMAIL_ADDRESS": "relay@example.org",
    "EMAIL_IMAP_URL": "imaps://mail.example.org/INBOX",
    "EMAIL_SMTP_URL": "smtps://mail.example.org",
    "EMAIL_USER": "relay",
    "EMAIL_PASSWORD": "s3cret-password",
}


def section(**changes: str):
    return read_section(Reader({**BASE, **changes}))


def test_no_address_no_email() -> None:
    assert read_section(Reader({})) is None


def test_tls_from_the_first_byte_by_default_ports() -> None:
    settings = section()
    assert settings is not None
    assert settings.imap == MailServer("mail.example.org", 993, "tls", "INBOX")
    assert settings.smtp == MailServer("mail.example.org", 465, "tls", "INBOX")
    assert settings.per_second == 5.0 and settings.domain == "example.org"
    assert "s3cret" not in repr(settings)


def test_imap_and_smtp_upgrade_with_starttls_and_keep_the_mailbox() -> None:
    settings = section(EMAIL_IMAP_URL="imap://mail.example.org:1143/Letters%20In", EMAIL_SMTP_URL="smtp://mail.example.org")
    assert settings is not None
    assert settings.imap == MailServer("mail.example.org", 1143, "starttls", "Letters In")
    assert settings.smtp.security == "starttls" and settings.smtp.port == 587


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_plain_only_to_a_server_on_this_machine(host: str) -> None:
    settings = section(EMAIL_IMAP_URL=f"imap://{host}:10143", EMAIL_SMTP_URL=f"smtp://{host}:10025")
    assert settings is not None
    assert (settings.imap.security, settings.smtp.security) == ("plain", "plain")


@pytest.mark.parametrize(("name", "value", "says"), [
    ("EMAIL_ADDRESS", "Relay <relay@example.org>", "must be an address"),
    ("EMAIL_ADDRESS", "relay", "must be an address"),
    ("EMAIL_IMAP_URL", "https://mail.example.org", "must start with imaps:// or imap://"),
    ("EMAIL_IMAP_URL", "imaps://relay:pw@mail.example.org", "must not carry a login"),
    ("EMAIL_IMAP_URL", "imaps://mail.example.org:port", "not a number"),
    ("EMAIL_SMTP_URL", "smtps://mail.example.org/INBOX", "no mailbox"),
    ("EMAIL_SMTP_URL", "", "not set"),
    ("EMAIL_PASSWORD", "", "not set"),
])
def test_a_wrong_setting_is_named(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        section(**{name: value})
    assert raised.value.setting == name and says in str(raised.value)

"""Email's settings section: the bot's address, its IMAP and SMTP servers, the mailbox login and the sending rate.

TLS is the default: `imaps://`/`smtps://` speak it from the first byte, `imap://`/`smtp://` must upgrade with
STARTTLS. Only a server on this machine (a loopback host) may be spoken to in the clear: the login and every letter
would otherwise cross the network readable by anyone on the way.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from email.utils import parseaddr
from urllib.parse import unquote, urlsplit

from bot.reading import ConfigError, Reader

# A mail server is not a chat platform: providers throttle a mailbox that sends much faster than this.
DEFAULT_PER_SECOND = 5.0
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


@dataclass(frozen=True)
class MailServer:
    host: str
    port: int
    security: str  # "tls" (from the first byte), "starttls", or "plain" (a loopback host only)
    mailbox: str = "INBOX"  # IMAP only


@dataclass(frozen=True)
class EmailSettings:
    address: str
    imap: MailServer
    smtp: MailServer
    user: str
    password: str
    per_second: float = DEFAULT_PER_SECOND

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]

    def __repr__(self) -> str:
        # Keep the password out of logs and tracebacks.
        return f"EmailSettings(imap={self.imap.host}:{self.imap.port}, smtp={self.smtp.host}:{self.smtp.port})"


def read_section(reader: Reader) -> EmailSettings | None:
    address = reader.optional("EMAIL_ADDRESS")
    if address is None:
        return None
    if not is_address(address):
        raise ConfigError("EMAIL_ADDRESS", f"must be an address like relay@example.org, got {address!r}")
    return EmailSettings(
        address=address.strip(),
        imap=server(reader, "EMAIL_IMAP_URL", {"imaps": ("tls", 993), "imap": ("starttls", 143)}),
        smtp=server(reader, "EMAIL_SMTP_URL", {"smtps": ("tls", 465), "smtp": ("starttls", 587)}),
        user=reader.required("EMAIL_USER"),
        password=reader.required("EMAIL_PASSWORD"),
        per_second=reader.number("EMAIL_MESSAGES_PER_SECOND", DEFAULT_PER_SECOND, minimum=0.1, maximum=100),
    )


def is_address(text: str) -> bool:
    """A bare addr-spec (`a@b.org`): no display name, no angle brackets, one @ and a dotted domain."""
    name, address = parseaddr(text.strip())
    return not name and address == text.strip() and bool(_ADDRESS.match(address))


def server(reader: Reader, setting: str, schemes: dict[str, tuple[str, int]]) -> MailServer:
    value = reader.required(setting)
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ConfigError(setting, f"must start with {' or '.join(f'{scheme}://' for scheme in schemes)}, "
                                   f"got {value!r}")
    if parts.username or parts.password:
        raise ConfigError(setting, "must not carry a login: EMAIL_USER and EMAIL_PASSWORD hold it")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(setting, f"has a port that is not a number: {value!r}") from None
    host = parts.hostname
    if not host:
        raise ConfigError(setting, f"names no host: {value!r}")
    security, default_port = schemes[parts.scheme]
    if security == "starttls" and is_loopback(host):
        security = "plain"  # a server on this machine: nothing crosses the network
    mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
    if "smtp" in parts.scheme and parts.path.strip("/"):
        raise ConfigError(setting, f"an SMTP server has no mailbox: {value!r}")
    return MailServer(host, port or default_port, security, mailbox)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

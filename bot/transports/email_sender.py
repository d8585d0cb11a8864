"""Sending mail over SMTP (aiosmtplib), with what a server answers turned into the outbox's DeliveryError.

One message to one recipient per call: a broadcast never shares an envelope, so no subscriber can learn another.
A 5xx refusal of the recipient is a hard bounce (the address is gone, as a Telegram 403: the subscription ends);
4xx answers, timeouts and lost connections are passing (the outbox tries again). The server's own words can quote
the address: they stay out of the reason that reaches the logs.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from bot.networks.email_settings import MailServer
from handlers.ports import DeliveryError

# `--check` answers within this, whatever a send may wait.
CHECK_SECONDS = 30.0


class MailSender:
    def __init__(
        self, server: MailServer, user: str, password: str, envelope_from: str, timeout: float = 60.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.server = server
        self.tls = tls or ssl.create_default_context()  # certificates and host names verified
        self.user = user
        self.password = password
        self.envelope_from = envelope_from
        self.timeout = timeout

    async def send(self, message: EmailMessage, recipient: str) -> None:
        try:
            await aiosmtplib.send(
                message, sender=self.envelope_from, recipients=[recipient], username=self.user,
                password=self.password, **self._connection(),
            )
        except aiosmtplib.SMTPRecipientsRefused as refused:
            raise _refusal(refused.recipients[0].code, "recipient refused") from None
        except aiosmtplib.SMTPRecipientRefused as refused:
            raise _refusal(refused.code, "recipient refused") from None
        except aiosmtplib.SMTPAuthenticationError as error:
            # The operator's login is wrong or was changed: every send fails alike until it is mended.
            raise DeliveryError(f"SMTP login refused ({error.code})", retryable=True) from None
        except aiosmtplib.SMTPResponseException as error:
            raise _refusal(error.code, "message refused", gone_on_5xx=False) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise DeliveryError(f"SMTP server unreachable ({type(error).__name__})", retryable=True) from None


    async def login(self) -> None:
        """Connect and log in, then leave (`--check`); aiosmtplib's errors as they come."""
        async with aiosmtplib.SMTP(**(self._connection() | {"timeout": CHECK_SECONDS})) as client:
            await client.login(self.user, self.password)

    def _connection(self) -> dict[str, Any]:
        server = self.server
        return {
            "hostname": server.host,
            "port": server.port,
            "use_tls": server.security == "tls",
            # STARTTLS is required, not merely tried, where the server is not on this machine.
            "start_tls": server.security == "starttls",
            "tls_context": self.tls if server.security != "plain" else None,
            "timeout": self.timeout,
        }


def _refusal(code: int, what: str, gone_on_5xx: bool = True) -> DeliveryError:
    if 500 <= code < 600:
        # 5xx is permanent (RFC 5321 §4.2.1): for the recipient, the address does not take mail.
        return DeliveryError(f"{what} ({code})", retryable=False, gone=gone_on_5xx)
    return DeliveryError(f"{what} for now ({code})", retryable=True)

"""Sending through a real SMTP server into Dovecot: one recipient per envelope, bounces told from passing refusals."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from bot.networks.email_settings import MailServer
from bot.transports.email_sender import MailSender
from handlers.ports import DeliveryError
from tests.mailserver import MailSystem, fresh_local


def sender_for(mail: MailSystem, bot, password: str | None = None) -> MailSender:
    server = MailServer(mail.smtp_host, mail.smtp_port, "plain")
    return MailSender(server, bot.address, password or bot.password, bot.address, timeout=10)


def message(bot, to: str, text: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = bot.address, to, "Letter of solidarity #1"
    mail.set_content(text)
    return mail


async def test_a_letter_reaches_the_one_subscriber_it_is_for(mail_system: MailSystem) -> None:
    bot, ana, ben = (mail_system.add_user(fresh_local(name)) for name in ("relay", "ana", "ben"))
    await sender_for(mail_system, bot).send(message(bot, ana.address, "Fuerza"), ana.address)
    received = await mail_system.await_for(ana, lambda m: "Fuerza" in m.get_content())
    assert received["To"] == ana.address and ben.address not in str(received)
    assert await mail_system.ainbox(ben) == []


async def test_a_hard_bounce_ends_the_address_and_a_deferral_is_tried_again(mail_system: MailSystem) -> None:
    bot, gone, busy = (mail_system.add_user(fresh_local(name)) for name in ("relay", "gone", "busy"))
    mail_system.bounce(gone.address)
    mail_system.defer(busy.address, times=1)
    sender = sender_for(mail_system, bot)
    with pytest.raises(DeliveryError) as bounced:
        await sender.send(message(bot, gone.address, "x"), gone.address)
    assert bounced.value.gone and not bounced.value.retryable and gone.address not in bounced.value.reason
    with pytest.raises(DeliveryError) as deferred:
        await sender.send(message(bot, busy.address, "y"), busy.address)
    assert deferred.value.retryable and not deferred.value.gone
    await sender.send(message(bot, busy.address, "y"), busy.address)  # the retry goes through
    await mail_system.await_for(busy, lambda m: "y" in m.get_content())


async def test_a_wrong_login_and_a_dead_server_are_passing_failures_without_the_password(
    mail_system: MailSystem,
) -> None:
    bot, ana = mail_system.add_user(fresh_local("relay")), mail_system.add_user(fresh_local("ana"))
    with pytest.raises(DeliveryError) as refused:
        await sender_for(mail_system, bot, "wrong-password-77").send(message(bot, ana.address, "z"), ana.address)
    assert refused.value.retryable and "login refused" in refused.value.reason
    assert "wrong-password-77" not in refused.value.reason
    dead = MailSender(MailServer("127.0.0.1", 9, "plain"), bot.address, bot.password, bot.address, timeout=5)
    with pytest.raises(DeliveryError) as unreachable:
        await dead.send(message(bot, ana.address, "z"), ana.address)
    assert unreachable.value.retryable and "unreachable" in unreachable.value.reason


async def test_starttls_is_required_and_the_certificate_checked(mail_system: MailSystem) -> None:
    bot, ana = mail_system.add_user(fresh_local("relay")), mail_system.add_user(fresh_local("ana"))
    server = MailServer(mail_system.smtp_host, mail_system.smtp_port, "starttls")
    trusted = MailSender(server, bot.address, bot.password, bot.address, timeout=10, tls=mail_system.tls_context())
    await trusted.send(message(bot, ana.address, "sealed"), ana.address)
    await mail_system.await_for(ana, lambda m: "sealed" in m.get_content())
    untrusted = MailSender(server, bot.address, bot.password, bot.address, timeout=10)  # the system's CAs only
    with pytest.raises(DeliveryError) as refused:
        await untrusted.send(message(bot, ana.address, "never in the clear"), ana.address)
    assert refused.value.retryable
    assert len([m for m in await mail_system.ainbox(ana) if "never" in m.get_content()]) == 0

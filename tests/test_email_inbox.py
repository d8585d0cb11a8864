"""The bot's mailbox on a real Dovecot: each message once across restarts, flagged \\Seen, left in place."""

from __future__ import annotations

import asyncio
import datetime
import imaplib
import time
from email.message import EmailMessage

from bot.networks.email_settings import MailServer
from bot.transports.email_inbox import STATE_KEY, Inbox
from tests.fakes import MemoryState
from tests.mailserver import MailSystem, fresh_local


def letter(sender: str, to: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, "Solidarity"
    message.set_content(text)
    return message


def inbox_of(mail: MailSystem, bot, state: MemoryState) -> Inbox:
    server = MailServer(mail.imap_host, mail.imap_port, "plain", "INBOX")
    return Inbox(server, bot.address, bot.password, state)


def flags(mail: MailSystem, bot) -> list[bytes]:
    with mail.imap(bot) as client:
        client.select("INBOX", readonly=True)
        _, data = client.fetch("1:*", "(FLAGS)")
    return [line for line in data if isinstance(line, bytes)]


async def test_each_message_once_across_restarts_seen_and_left_in_place(mail_system: MailSystem) -> None:
    bot, ana = mail_system.add_user(fresh_local("relay")), mail_system.add_user(fresh_local("ana"))
    state = MemoryState()
    await mail_system.asend(ana, letter(ana.address, bot.address, "first letter"))
    await mail_system.asend(ana, letter(ana.address, bot.address, "second letter"))
    await mail_system.await_for(bot, lambda m: "second" in m.get_content())

    inbox = inbox_of(mail_system, bot, state)
    await inbox.connect()
    try:
        first_round = await inbox.new_messages()
        assert [b"first letter" in raw for _uid, raw in first_round] == [True, False]
        await inbox.handled(first_round[0][0])  # the process dies before the second is handled
    finally:
        await inbox.close()

    restarted = inbox_of(mail_system, bot, state)
    await restarted.connect()
    try:
        again = await restarted.new_messages()
        assert len(again) == 1 and b"second letter" in again[0][1]
        await restarted.handled(again[0][0])
        assert await restarted.new_messages() == []
    finally:
        await restarted.close()
    seen = flags(mail_system, bot)
    assert len(seen) == 2 and all(rb"\Seen" in line for line in seen)  # both still there, both seen
    assert state.values[STATE_KEY].endswith(f":{again[0][0]}")


async def test_idle_wakes_on_new_mail(mail_system: MailSystem) -> None:
    bot, ana = mail_system.add_user(fresh_local("relay")), mail_system.add_user(fresh_local("ana"))
    inbox = inbox_of(mail_system, bot, MemoryState())
    await inbox.connect()
    try:
        assert await inbox.new_messages() == []
        waiting = asyncio.ensure_future(inbox.wait_for_mail())
        await asyncio.sleep(0.3)
        await mail_system.asend(ana, letter(ana.address, bot.address, "while idling"))
        await asyncio.wait_for(waiting, 10)
        (message,) = await inbox.new_messages()
        assert b"while idling" in message[1]
    finally:
        await inbox.close()


async def test_a_wrong_password_is_a_clear_error_without_the_password(mail_system: MailSystem) -> None:
    bot = mail_system.add_user(fresh_local("relay"))
    server = MailServer(mail_system.imap_host, mail_system.imap_port, "plain", "INBOX")
    inbox = Inbox(server, bot.address, "not-the-password-42", MemoryState())
    try:
        await inbox.connect()
        raise AssertionError("a wrong password was accepted")
    except Exception as error:
        assert "login refused" in str(error) and "not-the-password-42" not in str(error)
    finally:
        await inbox.close()
    assert imaplib  # the test people's client, for the flags above


async def test_starttls_upgrades_before_the_login(mail_system: MailSystem) -> None:
    bot, ana = mail_system.add_user(fresh_local("relay")), mail_system.add_user(fresh_local("ana"))
    await mail_system.asend(ana, letter(ana.address, bot.address, "over TLS"))
    await mail_system.await_for(bot, lambda m: "over TLS" in m.get_content())
    server = MailServer(mail_system.imap_host, mail_system.imap_port, "starttls", "INBOX")
    inbox = Inbox(server, bot.address, bot.password, MemoryState(), tls=mail_system.tls_context())
    await inbox.connect()
    try:
        (message,) = await inbox.new_messages()
        assert b"over TLS" in message[1]
        assert inbox._connected().protocol.transport.get_extra_info("ssl_object") is not None  # inside TLS now
    finally:
        await inbox.close()


async def test_starttls_with_a_certificate_not_trusted_never_logs_in(mail_system: MailSystem) -> None:
    bot = mail_system.add_user(fresh_local("relay"))
    server = MailServer(mail_system.imap_host, mail_system.imap_port, "starttls", "INBOX")
    inbox = Inbox(server, bot.address, bot.password, MemoryState())  # the system's CAs: the test's cert is unknown
    try:
        await inbox.connect()
        raise AssertionError("an untrusted certificate was accepted")
    except Exception as error:
        assert "starttls" in str(error)
    finally:
        await inbox.close()


def subjects(mail: MailSystem, bot) -> list[str]:
    return [str(message["Subject"]) for message in mail.inbox(bot)]


async def test_handled_mail_past_the_window_is_deleted_and_nothing_else(mail_system: MailSystem) -> None:
    bot = mail_system.add_user(fresh_local("relay"))
    forty_days_ago = time.time() - 40 * 86400
    with mail_system.imap(bot) as client:  # mail that arrived long ago keeps its arrival date (INTERNALDATE)
        for subject, arrived in (("old handled", forty_days_ago), ("old not handled", forty_days_ago),
                                 ("new handled", time.time())):
            message = letter("ana@relay.test", bot.address, subject)
            message.replace_header("Subject", subject)
            client.append("INBOX", None, imaplib.Time2Internaldate(arrived), message.as_bytes())
    state = MemoryState()
    inbox = inbox_of(mail_system, bot, state)
    await inbox.connect()
    try:
        uids = await inbox.unhandled()
        await inbox.handled(uids[0])  # the second is still to be handled when the window ends
        cutoff = datetime.date.today() - datetime.timedelta(days=30)
        assert await inbox.delete_handled(cutoff) == 1
        assert subjects(mail_system, bot) == ["old not handled", "new handled"]
        for uid in uids[1:]:
            await inbox.handled(uid)
        assert await inbox.delete_handled(cutoff) == 1
        assert subjects(mail_system, bot) == ["new handled"]
        assert await inbox.unhandled() == []  # deleting moved nothing: what was handled stays handled
    finally:
        await inbox.close()


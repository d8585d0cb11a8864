"""The test mail system itself (tests/mailserver.py), checked with stdlib clients only.

If these fail, every email test of the bot would fail for reasons that are not the bot's.
"""

from __future__ import annotations

import dataclasses
import imaplib
import itertools
import smtplib
import socket
import time
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    # Types only, for now: importing tests.mailserver here, before pytest loads it as the plugin below, would
    # stop pytest from rewriting its asserts (a warning, so an error). Once tests/conftest.py lists the plugin,
    # a plain import is fine.
    from tests.mailserver import Mailbox, MailSystem


_names = itertools.count(1)


def fresh_local(prefix: str) -> str:
    """A local part no other test has taken: the mail system is shared by the whole session."""
    return f"{prefix}-t{next(_names)}"


def letter(sender: Mailbox, to: Mailbox, subject: str, body: str = "Solidarity forever.\n") -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender.address
    message["To"] = to.address
    message["Subject"] = subject
    message.set_content(body)
    return message


def smtp_login(mail_system: MailSystem, mailbox: Mailbox) -> smtplib.SMTP:
    smtp = smtplib.SMTP(mail_system.smtp_host, mail_system.smtp_port, timeout=10)
    try:
        smtp.login(mailbox.address, mailbox.password)
    except BaseException:
        smtp.close()  # a refused login must not leak the socket (a ResourceWarning, so an error)
        raise
    return smtp


def test_a_mail_sent_with_auth_arrives_in_the_inbox_over_imap(mail_system: MailSystem) -> None:
    ana = mail_system.add_user(fresh_local("ana"))
    bob = mail_system.add_user(fresh_local("bob"))
    cleo = mail_system.add_user(fresh_local("cleo"))
    # Non-ASCII in the header and body: the path must carry UTF-8 mail unchanged, as the bot's will be.
    message = letter(ana, bob, "Grève générale ✊", "Rendez-vous à 10 h.\n")
    message["Cc"] = cleo.address

    mail_system.send(ana, message)

    for person in (bob, cleo):
        got = mail_system.wait_for(person, lambda m: m["Subject"] == "Grève générale ✊", timeout=5)
        assert got["From"] == ana.address
        assert got.get_content() == "Rendez-vous à 10 h.\n"
        assert got["Delivered-To"] == person.address  # delivered by LMTP to this very mailbox
    assert mail_system.accepted[-1].rcpt_tos == [bob.address, cleo.address]
    assert mail_system.inbox(ana) == []


def test_raw_bytes_are_delivered_as_sent(mail_system: MailSystem) -> None:
    ana = mail_system.add_user(fresh_local("ana"))
    bob = mail_system.add_user(fresh_local("bob"))
    raw = f"From: {ana.address}\r\nTo: {bob.address}\r\nSubject: raw\r\nX-Relay: kept\r\n\r\nline one\r\n".encode()

    mail_system.send(ana, raw, to=[bob.address])

    got = mail_system.wait_for(bob, lambda m: m["Subject"] == "raw", timeout=5)
    assert got["X-Relay"] == "kept"
    assert got.get_content() == "line one\n"


def test_a_bad_password_is_refused_by_smtp_and_imap(mail_system: MailSystem) -> None:
    ana = mail_system.add_user(fresh_local("ana"))
    wrong = dataclasses.replace(ana, password=ana.password + "x")

    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        smtp_login(mail_system, wrong)
    assert refused.value.smtp_code == 535
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        mail_system.imap(wrong)
    # And the right password works on both, so the refusals above were about the password.
    smtp_login(mail_system, ana).quit()
    mail_system.imap(ana).logout()


def test_smtp_refuses_mail_without_auth(mail_system: MailSystem) -> None:
    bob = mail_system.add_user(fresh_local("bob"))
    with smtplib.SMTP(mail_system.smtp_host, mail_system.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        assert "PLAIN" in smtp.esmtp_features["auth"] and "LOGIN" in smtp.esmtp_features["auth"]
        code, _ = smtp.mail("stranger@elsewhere.test")
        assert code == 530
    assert mail_system.inbox(bob) == []


def test_a_bounced_recipient_gets_550_at_rcpt_and_others_still_get_the_mail(mail_system: MailSystem) -> None:
    ana = mail_system.add_user(fresh_local("ana"))
    gone = mail_system.add_user(fresh_local("gone"))
    bob = mail_system.add_user(fresh_local("bob"))
    mail_system.bounce(gone.address)

    with smtp_login(mail_system, ana) as smtp:
        smtp.mail(ana.address)
        assert smtp.rcpt(gone.address) == (550, b"5.1.1 user unknown")
        assert smtp.rcpt(bob.address)[0] == 250
        assert smtp.data(letter(ana, bob, "partly bounced").as_bytes())[0] == 250
    # send() raises the way smtplib does when every recipient is refused: what a bot's SMTP client sees.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        mail_system.send(ana, letter(ana, gone, "to nobody"))
    assert refused.value.recipients == {gone.address: (550, b"5.1.1 user unknown")}

    mail_system.wait_for(bob, lambda m: m["Subject"] == "partly bounced", timeout=5)
    assert mail_system.inbox(gone) == []


def test_unknown_users_and_other_domains_are_refused(mail_system: MailSystem) -> None:
    ana = mail_system.add_user(fresh_local("ana"))
    with smtp_login(mail_system, ana) as smtp:
        smtp.mail(ana.address)
        assert smtp.rcpt(f"{fresh_local('nobody')}@{mail_system.domain}") == (550, b"5.1.1 user unknown")
        assert smtp.rcpt("someone@elsewhere.test") == (550, b"5.7.1 relaying denied")


def test_a_deferred_recipient_gets_451_that_many_times_then_the_mail(mail_system: MailSystem) -> None:
    ana = mail_system.add_user(fresh_local("ana"))
    bob = mail_system.add_user(fresh_local("bob"))
    mail_system.defer(bob.address, times=2)

    for _ in range(2):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            mail_system.send(ana, letter(ana, bob, "later"))
        assert refused.value.recipients[bob.address][0] == 451
    mail_system.send(ana, letter(ana, bob, "later"))

    mail_system.wait_for(bob, lambda m: m["Subject"] == "later", timeout=5)
    assert len(mail_system.inbox(bob)) == 1


def test_imap_advertises_idle_and_idle_reports_new_mail(mail_system: MailSystem) -> None:
    ana = mail_system.add_user(fresh_local("ana"))
    bob = mail_system.add_user(fresh_local("bob"))
    with mail_system.imap(bob) as client:
        assert "IDLE" in client.capabilities

    # imaplib (3.11) has no IDLE: speak it on a socket, as an IMAP-in network that waits for mail would.
    with socket.create_connection((mail_system.imap_host, mail_system.imap_port), timeout=5) as sock:
        stream = sock.makefile("rwb")

        def command(line: str) -> list[bytes]:
            tag = line.split()[0].encode()
            stream.write(line.encode() + b"\r\n")
            stream.flush()
            lines = [stream.readline()]
            while not lines[-1].startswith(tag + b" "):
                lines.append(stream.readline())
            assert lines[-1].startswith(tag + b" OK"), lines
            return lines

        assert stream.readline().startswith(b"* OK")
        command(f'a1 LOGIN "{bob.address}" "{bob.password}"')
        command("a2 SELECT INBOX")
        stream.write(b"a3 IDLE\r\n")
        stream.flush()
        assert stream.readline().startswith(b"+")
        started = time.monotonic()
        mail_system.send(ana, letter(ana, bob, "wake up"))
        assert stream.readline().strip() == b"* 1 EXISTS"
        # Dovecot notices the delivery through inotify, not a poll: the bot will hear of mail at once.
        assert time.monotonic() - started < 2
        stream.write(b"DONE\r\n")
        stream.flush()
        while not stream.readline().startswith(b"a3 OK"):
            pass


def test_users_added_at_runtime_can_log_in_at_once(mail_system: MailSystem) -> None:
    # Several additions within the same second: Dovecot must see each (it re-reads the changed passwd-file).
    for _ in range(3):
        mailbox = mail_system.add_user(fresh_local("late"))
        mail_system.imap(mailbox).logout()
        smtp_login(mail_system, mailbox).quit()


def listening_addresses(port: int) -> set[str]:
    """The local addresses of every listening TCP socket on ``port``, from the kernel's own tables."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_the_servers_listen_on_loopback_only(mail_system: MailSystem) -> None:
    for port in (mail_system.imap_port, mail_system.smtp_port, mail_system.lmtp_port):
        assert listening_addresses(port) == {"127.0.0.1"}


async def test_the_async_wrappers_work_from_an_event_loop(mail_system: MailSystem) -> None:
    ana = mail_system.add_user(fresh_local("ana"))
    bob = mail_system.add_user(fresh_local("bob"))
    await mail_system.asend(ana, letter(ana, bob, "from a loop"))
    got = await mail_system.await_for(bob, lambda m: m["Subject"] == "from a loop", within=5)
    assert got["From"] == ana.address
    assert len(await mail_system.ainbox(bob)) == 1

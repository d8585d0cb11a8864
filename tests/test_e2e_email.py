"""The whole bot with email as its third network: a real Dovecot (IMAP, LMTP) and SMTP server on loopback, the
moderators on the strict Bot API emulator. Test people write and read mail with the standard library only."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest

from bot.app import Relay, check
from bot.config import Settings
from bot.networks.email_settings import EmailSettings, MailServer
from bot.pacing import Rates
from bot.transports.email import EmailTransport
from handlers.events import Event, IncomingMessage, OutgoingMessage
from tests.emulators.telegram import TelegramEmulator
from tests.fakes import MemoryState
from tests.mailserver import Mailbox, MailSystem, fresh_local
from tests.test_media import TELLTALES, phone_photo

TOKEN = "123456:TEST-relay-token"
FAST = Rates(per_second=100, private_interval=0.05, group_interval=0.05, channel_interval=0.05)
WITHIN = 20.0


@dataclass
class Post:
    """One bot with its own mailbox, its moderators on Telegram, and the people who write to it."""

    emu: TelegramEmulator
    mods: dict[str, Any]
    mo: dict[str, Any]
    mail: MailSystem
    bot: Mailbox
    database: Path
    relays: list[Relay] = field(default_factory=list)

    def settings(self, **overrides: str) -> Settings:
        return Settings.from_env({
            "TELEGRAM_TOKEN": TOKEN,
            "TELEGRAM_API_URL": self.emu.api_root,
            "TELEGRAM_MODERATION_CHAT": str(self.mods["id"]),
            **self.mail.settings_for(self.bot),
            "DATABASE": str(self.database),
            "LETTER_JOIN_SECONDS": "0",
            "TRANSLATOR": "none",
            **overrides,
        })

    async def start_bot(self) -> Relay:
        relay = Relay(self.settings(), rates={"telegram": FAST, "email": FAST})
        await relay.start()
        self.relays.append(relay)
        return relay

    async def stop_bot(self) -> None:
        await self.relays.pop().stop()

    def person(self, name: str) -> Mailbox:
        return self.mail.add_user(fresh_local(name))

    async def write(self, person: Mailbox, subject: str, text: str, *, sender: str | None = None,
                    answering: EmailMessage | None = None, **headers: str) -> EmailMessage:
        """A mail to the bot, as `person` (whose From line may be forged: `sender`), perhaps answering a mail."""
        message = EmailMessage()
        message["From"], message["To"] = sender or person.address, self.bot.address
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain="people.test")
        if answering is not None:
            message["In-Reply-To"] = answering["Message-ID"]
            message["References"] = f"{answering.get('References', '')} {answering['Message-ID']}".strip()
        for name, value in headers.items():
            message[name.replace("_", "-")] = value
        message.set_content(text)
        await self.mail.asend(person, message, to=[self.bot.address])
        return message

    async def bot_mail(self, person: Mailbox, pattern: str, within: float = WITHIN) -> EmailMessage:
        """The first mail from the bot to `person` whose text matches `pattern`."""
        def matches(message: EmailMessage) -> bool:
            return message["From"] == self.bot.address and re.search(pattern, body_of(message)) is not None
        return await self.mail.await_for(person, matches, within=within)

    async def bot_mails(self, person: Mailbox) -> list[EmailMessage]:
        return [m for m in await self.mail.ainbox(person) if m["From"] == self.bot.address]

    async def card(self, number: int) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for message in self.emu.sent_by_bot(self.mods):
                if message.get("text", "").startswith(f"📨 Letter #{number} ") and message.get("reply_markup"):
                    return message
            return None
        return await self.emu.wait_for(find, WITHIN, what=f"card of letter #{number}")

    def cards(self) -> list[str]:
        return [m.get("text", "") for m in self.emu.sent_by_bot(self.mods) if m.get("text", "").startswith("📨")]

    async def approve(self, number: int) -> None:
        card = await self.card(number)
        approve = card["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        self.emu.press_button(self.mo, self.mods["id"], card["message_id"], approve)

    async def subscribe(self, person: Mailbox, language: str = "en") -> None:
        """`subscribe LANG`, then `yes` in answer to the bot's confirmation."""
        await self.write(person, f"subscribe {language}", "")
        confirmation = await self.bot_mail(person, "to confirm")
        await self.write(person, f"Re: {confirmation['Subject']}", "yes", answering=confirmation)
        await self.bot_mail(person, "receive approved letters|recibirás las cartas aprobadas")


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    return part.get_content() if part is not None else ""  # type: ignore[attr-defined]


@pytest.fixture
async def post(mail_system: MailSystem, tmp_path: Path) -> AsyncIterator[Post]:
    async with TelegramEmulator(TOKEN) as emu:
        mo = emu.add_user("Mo", username="mo")
        mods = emu.add_group("Moderators", members=[(mo, "administrator")], bot_status="administrator")
        post = Post(emu, mods, mo, mail_system, mail_system.add_user(fresh_local("relay")), tmp_path / "relay.db")
        try:
            yield post
        finally:
            while post.relays:
                await post.stop_bot()


async def test_a_mailed_letter_is_answered_in_its_thread_moderated_and_mailed_to_subscribers(post: Post) -> None:
    await post.start_bot()
    reader = post.person("reader")
    await post.subscribe(reader)
    ana = post.person("ana")
    sent = await post.write(ana, "For the prisoners of Minsk", "You are not forgotten.\n\n-- Ana, Porto")

    receipt = await post.bot_mail(ana, r"#1\b")
    assert receipt["In-Reply-To"] == sent["Message-ID"] and sent["Message-ID"] in receipt["References"]
    assert receipt["Subject"] == "Re: For the prisoners of Minsk"
    assert receipt["Auto-Submitted"] == "auto-replied"
    assert "withdraw 1" in body_of(receipt)
    card = await post.card(1)
    assert "For the prisoners of Minsk\n\nYou are not forgotten.\n\n-- Ana, Porto" in card["text"]
    assert ana.address.partition("@")[0] not in card["text"]  # a pseudonym, never the address

    await post.approve(1)
    notice = await post.bot_mail(ana, "approved")
    assert notice["In-Reply-To"] == sent["Message-ID"]
    letter = await post.bot_mail(reader, "You are not forgotten")
    assert letter["Subject"] == "✊ Letter of solidarity #1"
    assert letter["To"] == reader.address and letter["Cc"] is None and letter["Bcc"] is None
    assert letter["Auto-Submitted"] == "auto-generated"
    assert re.fullmatch(rf"<mailto:{re.escape(post.bot.address)}\?subject=unsubscribe%20[0-9a-f]{{16}}>",
                        letter["List-Unsubscribe"].strip())
    assert "unsubscribe" in body_of(letter)
    assert ana.address not in letter.as_string()  # nothing in the letter leads back to its writer
    await post.emu.wait_for(lambda: any("delivered to 1 of 1" in m.get("text", "")
                                        for m in post.emu.sent_by_bot(post.mods)), WITHIN, what="the report")


async def test_html_koi8r_and_quoted_printable_letters_read_as_their_writers_wrote_them(post: Post) -> None:
    await post.start_bot()
    olga, ivan, lea = post.person("olga"), post.person("ivan"), post.person("lea")
    html = EmailMessage()
    html["From"], html["To"], html["Subject"] = lea.address, post.bot.address, "Solidarité"
    html.set_content("<html><body><p>Nous sommes <b>avec vous</b>.</p><blockquote type=\"cite\">old quoted "
                     "thread</blockquote><p>— Léa</p></body></html>", subtype="html")
    await post.mail.asend(lea, html, to=[post.bot.address])
    russian = "Держитесь! Мы с вами.\nВаши друзья из Тарту"
    koi8 = (f"From: {olga.address}\r\nTo: {post.bot.address}\r\nSubject: =?koi8-r?b?"
            f"{base64.b64encode('Письмо'.encode('koi8-r')).decode()}?=\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            ).encode() + russian.encode("koi8-r") + b"\r\n"
    await post.mail.asend(olga, koi8, to=[post.bot.address])
    qp = EmailMessage()
    qp["From"], qp["To"], qp["Subject"] = ivan.address, post.bot.address, "Привет"
    qp.set_content("Мы помним о вас каждый день. ✊", cte="quoted-printable")
    await post.mail.asend(ivan, qp, to=[post.bot.address])

    cards = [await post.card(number) for number in (1, 2, 3)]
    texts = "\n".join(card["text"] for card in cards)
    assert "Nous sommes avec vous." in texts and "— Léa" in texts
    assert "<b>" not in texts and "old quoted thread" not in texts
    assert "Письмо\n\nДержитесь! Мы с вами.\nВаши друзья из Тарту" in texts
    assert "Привет\n\nМы помним о вас каждый день. ✊" in texts


async def test_the_answer_is_in_the_writers_language_where_it_can_be_told(post: Post) -> None:
    await post.start_bot()
    marta, kim = post.person("marta"), post.person("kim")
    await post.write(marta, "Hola", "Un abrazo fuerte desde Rosario.", Content_Language="es")
    await post.bot_mail(marta, "Tu carta #1")
    await post.write(kim, "", "Desde Montevideo les mandamos toda nuestra fuerza y nuestro cariño, compañeras.")
    await post.bot_mail(kim, "Tu carta #2")


async def test_a_mailed_photo_travels_cleaned_to_moderators_and_subscribers(post: Post) -> None:
    await post.start_bot()
    reader, ana = post.person("reader"), post.person("ana")
    await post.subscribe(reader)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = ana.address, post.bot.address, "Our banner"
    message.set_content("The photo is of our banner.")
    message.add_attachment(phone_photo(), maintype="image", subtype="jpeg", filename="IMG_20240301_143022.jpg")
    await post.mail.asend(ana, message, to=[post.bot.address])
    await post.bot_mail(ana, r"#1\b")
    card = await post.card(1)
    assert "The photo is of our banner." in card["text"] and "IMG_2024" not in card["text"]
    (shown,) = [m for m in post.emu.sent_by_bot(post.mods) if "photo" in m]
    assert not any(telltale in post.emu.media_bytes(shown) for telltale in TELLTALES)

    await post.approve(1)
    letter = await post.bot_mail(reader, "The photo is of our banner")
    (attached,) = list(letter.iter_attachments())
    data = attached.get_content()
    assert attached.get_content_type() == "image/jpeg" and attached.get_filename() == "letter-1-1.jpg"
    assert not any(telltale in data for telltale in TELLTALES)
    assert not any("attachment" in body_of(m) for m in await post.bot_mails(ana))  # nothing was left out

    only = EmailMessage()
    only["From"], only["To"], only["Subject"] = ana.address, post.bot.address, ""
    only.add_attachment(b"%PDF-1.4\n%%EOF\n", maintype="application", subtype="pdf", filename="Ana Petrova.pdf")
    await post.mail.asend(ana, only, to=[post.bot.address])
    await post.bot_mail(ana, r"#2\b")
    card = await post.card(2)
    assert "metadata not removed" in card["text"] and "Petrova" not in card["text"]


async def test_mail_from_machines_is_never_answered_nor_a_letter(post: Post) -> None:
    await post.start_bot()
    ana, daemon = post.person("ana"), post.person("postmaster-of-somewhere")
    await post.write(ana, "Automatic reply: away", "I am on holiday until Monday.", Auto_Submitted="auto-replied")
    bounce = EmailMessage()
    bounce["From"], bounce["To"] = f"MAILER-DAEMON@{post.mail.domain}", post.bot.address
    bounce["Subject"] = "Undelivered Mail Returned to Sender"
    bounce.set_content("This is the mail system at host relay.test. I'm sorry to have to inform you...")
    await post.mail.asend(daemon, bounce, to=[post.bot.address])
    await post.write(ana, "[list] weekly digest", "Digest of the week", List_Id="<weekly.lists.example>")
    await post.write(ana, "A real letter", "This one is from a person.")  # handled after the three above

    await post.bot_mail(ana, r"#1\b")
    assert len(await post.bot_mails(ana)) == 1 and await post.bot_mails(daemon) == []
    assert len(post.cards()) == 1 and "This one is from a person." in post.cards()[0]


async def test_a_restart_handles_each_mail_once(post: Post) -> None:
    await post.start_bot()
    ana = post.person("ana")
    await post.write(ana, "One", "The first letter.")
    await post.bot_mail(ana, r"#1\b")
    await post.stop_bot()
    await post.write(ana, "Two", "Written while the bot was down.")
    await post.start_bot()
    await post.bot_mail(ana, r"#2\b")
    await post.stop_bot()
    await post.start_bot()
    await post.write(ana, "Three", "After a second restart.")
    await post.bot_mail(ana, r"#3\b")
    await asyncio.sleep(0.5)
    receipts = [m for m in await post.bot_mails(ana) if "with the moderators" in body_of(m)]
    assert len(receipts) == 3 and len(post.cards()) == 3


async def test_nobody_subscribes_an_address_but_its_owner(post: Post) -> None:
    await post.start_bot()
    victim, eve = post.person("victim"), post.person("eve")
    await post.write(eve, "subscribe en", "", sender=victim.address)  # Eve forges the victim's From line
    confirmation = await post.bot_mail(victim, "to confirm")  # the question goes to the real owner
    assert await post.bot_mails(eve) == []
    # Eve cannot answer the confirmation itself: she never saw its Message-ID, and guesses one.
    await post.write(eve, f"Re: {confirmation['Subject']}", "yes", sender=victim.address,
                     In_Reply_To=make_msgid(domain=post.mail.domain))
    await post.bot_mail(victim, "reply to this message with “yes”")
    assert await post.relays[-1].ctx.repos.subscriptions.active() == []  # type: ignore[union-attr]


async def test_two_subscribers_never_see_each_other_and_leave_by_reply_or_link(post: Post) -> None:
    await post.start_bot()
    nina, omar, ana = post.person("nina"), post.person("omar"), post.person("ana")
    await post.subscribe(nina, "es")
    await post.subscribe(omar, "en")
    await post.write(ana, "First", "The first letter.")
    await post.approve(1)
    to_nina, to_omar = await post.bot_mail(nina, "The first letter"), await post.bot_mail(omar, "The first letter")
    assert omar.address not in to_nina.as_string() and nina.address not in to_omar.as_string()
    letter_ids = {to_nina["Message-ID"], to_omar["Message-ID"]}
    accepted = [a for a in post.mail.accepted if parsed(a.content)["Message-ID"] in letter_ids]
    assert sorted(a.rcpt_tos[0] for a in accepted) == sorted((nina.address, omar.address))
    assert all(len(a.rcpt_tos) == 1 for a in accepted)  # one envelope each: no server learns the list

    await post.write(nina, f"Re: {to_nina['Subject']}", "unsubscribe", answering=to_nina)
    await post.bot_mail(nina, "no longer receives letters|ya no recibe cartas")
    link = re.search(r"subject=([^>]+)>", to_omar["List-Unsubscribe"])
    assert link is not None
    await post.write(omar, link[1].replace("%20", " "), "")  # a mail client's one click: a new mail, no thread
    await post.bot_mail(omar, "no longer receives letters")

    await post.write(ana, "Second", "The second letter.")
    await post.approve(2)
    await post.bot_mail(ana, "approved.*#2|#2.*approved")
    await asyncio.sleep(1.0)
    assert not any("The second letter" in body_of(m) for m in await post.bot_mails(nina) + await post.bot_mails(omar))


async def test_a_hard_bounce_ends_the_subscription(post: Post) -> None:
    await post.start_bot()
    gone, ana = post.person("gone"), post.person("ana")
    await post.subscribe(gone)
    post.mail.bounce(gone.address)
    await post.write(ana, "A letter", "Hold on.")
    await post.approve(1)
    report = await post.emu.wait_for(
        lambda: next((m["text"] for m in post.emu.sent_by_bot(post.mods) if "delivered to 0 of 1" in m.get("text", "")),
                     None), WITHIN, what="the report")
    assert "1 deactivated" in report and gone.address not in report
    assert await post.relays[-1].ctx.repos.subscriptions.active() == []  # type: ignore[union-attr]


async def test_withdraw_needs_the_writers_own_mailbox(post: Post) -> None:
    await post.start_bot()
    ana, eve = post.person("ana"), post.person("eve")
    await post.write(ana, "Mine", "My letter.")
    receipt = await post.bot_mail(ana, r"#1\b")
    await post.write(eve, "withdraw 1", "", sender=ana.address)  # forged
    await post.bot_mail(ana, "reply to this message with “withdraw 1”")
    assert (await post.relays[-1].ctx.repos.letters.get(1)).status == "pending"  # type: ignore[union-attr]
    await post.write(ana, f"Re: {receipt['Subject']}", "withdraw 1", answering=receipt)
    await post.bot_mail(ana, "is withdrawn")


async def test_logs_never_name_a_writer_or_subscriber(post: Post, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await post.start_bot()
    ana, sam = post.person("ana"), post.person("sam")
    await post.subscribe(sam)
    await post.write(ana, "Secret subject", "A letter that names nobody.")
    await post.approve(1)
    await post.bot_mail(sam, "names nobody")
    await post.stop_bot()
    # The test's own SMTP server (aiosmtpd's "mail.log") logs addresses; the bot and its libraries must not.
    logged = "\n".join(record.getMessage() for record in caplog.records
                       if record.levelno >= logging.INFO and not record.name.startswith("mail."))
    for secret in (ana.address, sam.address, "ana-", "sam-", "Secret subject", post.bot.password):
        assert secret not in logged



async def test_check_logs_in_to_both_mail_servers_and_names_a_wrong_password_without_it(
    post: Post, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await check(post.settings()) == 0
    found = capsys.readouterr().out
    assert "email: IMAP" in found and "email: SMTP" in found and "logged in" in found
    assert await check(post.settings(EMAIL_PASSWORD="wrong-password-42")) == 1
    found = capsys.readouterr().out
    assert "email: IMAP" in found and "login refused" in found and "wrong-password-42" not in found


async def test_the_transport_reads_and_answers_over_starttls(mail_system: MailSystem) -> None:
    bot, ana = mail_system.add_user(fresh_local("relay")), mail_system.add_user(fresh_local("ana"))
    settings = EmailSettings(
        address=bot.address, user=bot.address, password=bot.password,
        imap=MailServer(mail_system.imap_host, mail_system.imap_port, "starttls"),
        smtp=MailServer(mail_system.smtp_host, mail_system.smtp_port, "starttls"),
    )
    transport = EmailTransport(settings, MemoryState(), tls=mail_system.tls_context())
    events: asyncio.Queue[Event] = asyncio.Queue()

    async def dispatch(event: Event) -> None:
        await events.put(event)

    await transport.start(dispatch)
    try:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = ana.address, bot.address, "Over TLS"
        message.set_content("A letter that crossed no wire in the clear.")
        await mail_system.asend(ana, message, to=[bot.address])
        letter = await asyncio.wait_for(events.get(), WITHIN)
        assert isinstance(letter, IncomingMessage)
        assert letter.text == "Over TLS\n\nA letter that crossed no wire in the clear."
        await transport.send(OutgoingMessage(chat_id=ana.address, text="Received.", reply_to=letter.message_id))
        answer = await mail_system.await_for(ana, lambda m: m["From"] == bot.address, within=WITHIN)
        assert answer["Subject"] == "Re: Over TLS"
    finally:
        await transport.stop()


async def test_forget_by_mail_also_empties_the_bots_mailbox_of_the_writers_mail(post: Post) -> None:
    await post.start_bot()
    ana = post.person("ana")
    hana = post.mail.add_user("h" + ana.address.partition("@")[0])  # hana-…@ contains ana-…@: IMAP's FROM matches both
    await post.write(hana, "Other", "A letter from someone else.")
    await post.write(ana, "Mine", "My letter.")
    await post.bot_mail(ana, r"#2\b")
    await post.write(ana, "forget", "")
    explanation = await post.bot_mail(ana, "forget yes")
    await post.write(ana, f"Re: {explanation['Subject']}", "forget yes", answering=explanation)
    await post.bot_mail(ana, "I have forgotten you")
    senders = [str(message["From"]) for message in await post.mail.ainbox(post.bot)]
    assert ana.address not in senders and hana.address in senders  # only the exact address


async def test_mail_that_comes_while_earlier_mail_is_handled_is_read_at_once(mail_system: MailSystem) -> None:
    """The server announces such mail in its answers to the bot's own commands, which IDLE does not repeat: without
    another search it would wait for Dovecot's keep-alive, two minutes later."""
    bot, ana = mail_system.add_user(fresh_local("relay")), mail_system.add_user(fresh_local("ana"))
    settings = EmailSettings(
        address=bot.address, user=bot.address, password=bot.password,
        imap=MailServer(mail_system.imap_host, mail_system.imap_port, "plain"),
        smtp=MailServer(mail_system.smtp_host, mail_system.smtp_port, "plain"),
    )
    transport = EmailTransport(settings, MemoryState())
    handled: asyncio.Queue[str | None] = asyncio.Queue()
    first_taken, go_on = asyncio.Event(), asyncio.Event()

    async def dispatch(event: Event) -> None:
        assert isinstance(event, IncomingMessage)
        first_taken.set()
        await go_on.wait()  # the bot is busy with this mail while the next one comes
        await handled.put(event.text)

    await transport.start(dispatch)
    try:
        await mail_system.asend(ana, email_to(ana, bot, "One", "The first."), to=[bot.address])
        await asyncio.wait_for(first_taken.wait(), WITHIN)
        await mail_system.asend(ana, email_to(ana, bot, "Two", "The second."), to=[bot.address])
        await mail_system.await_for(bot, lambda m: m["Subject"] == "Two", within=WITHIN)
        go_on.set()
        assert await asyncio.wait_for(handled.get(), WITHIN) == "One\n\nThe first."
        assert await asyncio.wait_for(handled.get(), 10) == "Two\n\nThe second."
    finally:
        await transport.stop()


def email_to(sender: Mailbox, recipient: Mailbox, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender.address, recipient.address, subject
    message.set_content(text)
    return message


async def test_a_long_mailed_letter_with_a_photo_reaches_a_telegram_channel_whole(post: Post) -> None:
    await post.start_bot()
    channel = post.emu.add_channel("News", username="news")
    post.emu.user_sends(post.mo, "/subscribe @news en", chat=post.mods)
    await post.emu.wait_for(lambda: any("News now receives" in m.get("text", "")
                                        for m in post.emu.sent_by_bot(post.mods)), WITHIN, what="subscribed")
    ana = post.person("ana")
    text = " ".join(f"Line {number} of our letter to the prisoners." for number in range(1, 40))  # 1,500+
    assert len(text) > 1500
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = ana.address, post.bot.address, ""
    message.set_content(text)
    message.add_attachment(phone_photo(), maintype="image", subtype="jpeg", filename="banner.jpg")
    await post.mail.asend(ana, message, to=[post.bot.address])
    await post.bot_mail(ana, r"#1\b")
    await post.approve(1)

    def delivered() -> list[dict[str, Any]] | None:
        sent = post.emu.sent_by_bot(channel)
        return sent if len(sent) >= 2 else None

    picture, letter = await post.emu.wait_for(delivered, WITHIN, what="photo and text in the channel")
    assert "photo" in picture and "caption" not in picture  # too long for a caption: the text follows whole
    assert text in letter["text"]
    assert not any(telltale in post.emu.media_bytes(picture) for telltale in TELLTALES)

"""The email transport without servers: what it makes of a mail, what it sends, and what proves an address."""

from __future__ import annotations

import asyncio
import socket
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

import pytest

from bot.networks.email_settings import EmailSettings, MailServer
from bot.transports.email import ANSWERS_PER_HOUR, HOUR, AnswerLimit, EmailTransport, MailProof
from bot.transports.email_message import Thread
from bot.transports.email_sender import MailSender
from handlers.events import COMMAND, ChatKind, IncomingMessage, OutgoingMessage, RemoteRef
from handlers.ports import DeliveryError

BOT = "relay@solidarity.example"
ANA = "ana@mail.example"
BEA = "bea@mail.example"
POSITION = "7:42"


class MemoryKeyValue:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.values.get(key)

    async def put(self, key: str, value: str) -> None:
        self.values[key] = value


class RecordingSender(MailSender):
    """Stands in for SMTP: what would have been handed to the server."""

    def __init__(self) -> None:
        super().__init__(MailServer("127.0.0.1", 1, "plain"), "relay", "secret", BOT)
        self.sent: list[tuple[EmailMessage, str]] = []

    async def send(self, message: EmailMessage, recipient: str) -> None:
        self.sent.append((message, recipient))


class FakeClock:
    def __init__(self) -> None:
        self.time = 1000.0

    def __call__(self) -> float:
        return self.time


def closed_port() -> int:
    # A port that was free a moment ago: a connection there is refused, a retryable failure if it were tried.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def transport() -> EmailTransport:
    port = closed_port()
    settings = EmailSettings(
        address=BOT,
        imap=MailServer("127.0.0.1", port, "plain"),
        smtp=MailServer("127.0.0.1", port, "plain"),
        user="relay",
        password="secret",
    )
    made = EmailTransport(settings, MemoryKeyValue())
    made.proof = MailProof(bytes(32))  # what start() would load from the state table, without a mailbox to open
    return made


def raw_mail(
    subject: str = "Greetings from Lyon",
    body: str | None = "We stand with you.",
    sender: str = ANA,
    message_id: str = "<first@mail.example>",
    attachment: str | None = None,
    **headers: str,
) -> bytes:
    mail = EmailMessage(policy=policy.SMTP)
    mail["From"] = sender
    mail["To"] = BOT
    if subject:
        mail["Subject"] = subject
    mail["Message-ID"] = message_id
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    if body is not None:
        mail.set_content(body)
    if attachment is not None:
        mail.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename=attachment)
    return mail.as_bytes()


def event(raw: bytes, made: EmailTransport | None = None) -> IncomingMessage:
    got = (made or transport()).event_of(raw, POSITION)
    assert got is not None
    return got


def as_sent(mail: EmailMessage) -> EmailMessage:
    """The mail as a client receives it: serialised and read back."""
    read = BytesParser(policy=policy.default).parsebytes(mail.as_bytes())
    assert isinstance(read, EmailMessage)
    return read


def unsubscribe_link(mail: EmailMessage) -> SplitResult:
    # Folded on the wire: the value starts on the line after the header's name.
    return urlsplit(str(mail["List-Unsubscribe"]).strip().removeprefix("<").removesuffix(">"))


def proof() -> MailProof:
    made = transport().proof
    assert made is not None
    return made


# --- MailProof ----------------------------------------------------------------------------------------------------


def test_an_id_made_for_an_address_proves_a_reply_from_it_and_no_other() -> None:
    keys = MailProof(b"k" * 32)
    made = keys.message_id(ANA, "solidarity.example")
    assert keys.answers(ANA, (made,))
    assert keys.answers(ANA, ("<older@mail.example>", made))
    assert not keys.answers(BEA, (made,))
    assert not keys.answers(ANA, ())
    assert not MailProof(b"o" * 32).answers(ANA, (made,))  # another bot's key


def test_a_tampered_id_proves_nothing() -> None:
    keys = MailProof(b"k" * 32)
    made = keys.message_id(ANA, "solidarity.example")
    token, code = made[1:].split("@")[0].split(".")
    other = "0" if code[-1] != "0" else "1"
    assert not keys.answers(ANA, (f"<{token}.{code[:-1]}{other}@solidarity.example>",))
    swapped = "0" if token[0] != "0" else "1"
    assert not keys.answers(ANA, (f"<{swapped}{token[1:]}.{code}@solidarity.example>",))
    assert not keys.answers(ANA, (made[1:-1],))  # without its angle brackets it is no Message-ID


def test_a_seed_gives_the_same_id_and_no_seed_a_new_one() -> None:
    keys = MailProof(b"k" * 32)
    assert keys.message_id(ANA, "d.example", "relay-1-x-0") == keys.message_id(ANA, "d.example", "relay-1-x-0")
    assert keys.message_id(ANA, "d.example", "relay-1-x-0") != keys.message_id(ANA, "d.example", "relay-1-x-1")
    assert keys.message_id(ANA, "d.example") != keys.message_id(ANA, "d.example")
    assert keys.message_id(ANA, "d.example", "k") != keys.message_id(BEA, "d.example", "k")


def test_each_address_has_its_own_unsubscribe_code() -> None:
    keys = MailProof(b"k" * 32)
    assert keys.unsubscribe_code(ANA) == keys.unsubscribe_code(ANA)
    assert keys.unsubscribe_code(ANA) != keys.unsubscribe_code(BEA)
    assert keys.unsubscribe_code(ANA) != MailProof(b"o" * 32).unsubscribe_code(ANA)


# --- AnswerLimit --------------------------------------------------------------------------------------------------


def test_twenty_answers_an_hour_to_one_address() -> None:
    clock = FakeClock()
    limit = AnswerLimit(clock=clock)
    assert all(limit.take(ANA) for _ in range(ANSWERS_PER_HOUR))
    assert not limit.take(ANA)
    clock.time += HOUR - 1
    assert not limit.take(ANA)
    clock.time += 1
    assert limit.take(ANA)


def test_the_answer_limit_counts_each_address_alone() -> None:
    limit = AnswerLimit(clock=FakeClock())
    for _ in range(ANSWERS_PER_HOUR):
        limit.take(ANA)
    assert limit.take(BEA)
    assert not limit.take(ANA)


# --- event_of -----------------------------------------------------------------------------------------------------


def test_a_letter_is_a_private_message_from_its_address() -> None:
    got = event(raw_mail())
    assert got.chat.platform == "email" and got.chat.chat_id == ANA and got.chat.kind == ChatKind.PRIVATE
    assert got.sender is not None and got.sender.user_id == ANA
    assert got.text == "Greetings from Lyon\n\nWe stand with you."
    assert got.content_kind == "text"
    assert not got.sender_proven
    assert got.left_out == ()
    thread = Thread.from_json(got.message_id)
    assert thread.message_id == "<first@mail.example>"
    assert thread.position == POSITION
    assert thread.to == ANA


def test_a_command_in_the_subject_is_a_command() -> None:
    got = event(raw_mail(subject="withdraw 3", body=""))
    assert got.content_kind == COMMAND
    assert got.text == "withdraw 3"
    assert not got.sender_proven


def test_an_unsubscribe_link_with_the_address_code_proves_it() -> None:
    made = transport()
    code = proof().unsubscribe_code(ANA)
    got = event(raw_mail(subject=f"unsubscribe {code}", body=""), made)
    assert got.content_kind == COMMAND
    assert got.text == "unsubscribe"  # the code is no argument of the command
    assert got.sender_proven


def test_an_unsubscribe_code_of_another_address_proves_nothing() -> None:
    code = proof().unsubscribe_code(BEA)
    got = event(raw_mail(subject=f"unsubscribe {code}", body=""))
    assert got.text == "unsubscribe"
    assert not got.sender_proven
    got = event(raw_mail(subject="unsubscribe 0123456789abcdef", body=""))
    assert not got.sender_proven


def test_a_reply_to_the_bot_mail_for_that_address_is_proven() -> None:
    made = transport()
    assert made.proof is not None
    ours = made.proof.message_id(ANA, "solidarity.example")
    got = event(raw_mail(subject="Re: subscribe es", body="yes", In_Reply_To=ours, References=ours), made)
    assert got.sender_proven
    assert got.content_kind == COMMAND and got.text == "yes"
    assert Thread.from_json(got.message_id).references == (ours,)


def test_a_reply_naming_the_bot_mail_for_another_address_is_not_proven() -> None:
    made = transport()
    assert made.proof is not None
    theirs = made.proof.message_id(BEA, "solidarity.example")
    got = event(raw_mail(subject="Re: subscribe es", body="yes", In_Reply_To=theirs), made)
    assert not got.sender_proven


@pytest.mark.parametrize(
    "raw",
    [
        raw_mail(Auto_Submitted="auto-replied", subject="Out of office"),
        raw_mail(sender="MAILER-DAEMON@mail.example", subject="Undelivered Mail Returned to Sender"),
        raw_mail(Return_Path="<>", subject="Delivery Status Notification"),
        raw_mail(List_Id="<news.lists.example>"),
        raw_mail(Precedence="bulk"),
        raw_mail(sender=BOT),
        raw_mail(sender="Relay@Solidarity.Example"),
    ],
    ids=["auto-reply", "mailer-daemon", "null-return-path", "list-id", "precedence-bulk", "own", "own-other-case"],
)
def test_mail_from_machines_and_from_the_bot_itself_is_not_handed_on(raw: bytes) -> None:
    assert transport().event_of(raw, POSITION) is None


def test_an_attachment_comes_with_the_letter_and_is_fetched_from_the_mail_itself() -> None:
    made = transport()
    got = event(raw_mail(attachment="report.pdf"), made)
    (attachment,) = got.attachments
    assert (attachment.kind, attachment.mime_type, attachment.file_name) == ("document", "application/pdf",
                                                                             "report.pdf")
    assert attachment.size == len(b"%PDF-1.4") and got.left_out == ()
    assert got.text == "Greetings from Lyon\n\nWe stand with you."
    assert asyncio.run(made.fetch(attachment)) == b"%PDF-1.4"


def test_a_mail_that_is_only_an_attachment_is_a_letter_of_it_alone() -> None:
    for subject in ("", "Our banner"):  # a subject alone is no caption of the attachment
        got = event(raw_mail(subject=subject, body=None, attachment="report.pdf"))
        assert got.text is None and got.content_kind == "text"
        assert [attachment.file_name for attachment in got.attachments] == ["report.pdf"]


# --- compose ------------------------------------------------------------------------------------------------------


def letter_to(address: str, key: str | None = "relay-1-x-0") -> OutgoingMessage:
    return OutgoingMessage(
        chat_id=address,
        text="We stand with you.",
        title="✊ Letter of solidarity #1",
        footer="You receive these letters because you subscribed. Reply “unsubscribe” to stop them.",
        broadcast=True,
        idempotency_key=key,
    )


def test_a_letter_goes_to_its_subscriber_alone_with_an_unsubscribe_link() -> None:
    made = transport()
    mail = as_sent(made.compose(letter_to(ANA)))
    assert mail.get_all("To") == [ANA]
    assert "Cc" not in mail and "Bcc" not in mail
    assert mail["From"] == BOT
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Subject"] == "✊ Letter of solidarity #1"
    link = unsubscribe_link(mail)
    assert link.scheme == "mailto" and unquote(link.path) == BOT
    assert parse_qs(link.query)["subject"] == [f"unsubscribe {proof().unsubscribe_code(ANA)}"]
    assert proof().answers(ANA, (str(mail["Message-ID"]),))
    body = mail.get_content()
    assert "We stand with you." in body and "Reply “unsubscribe” to stop them." in body


def test_the_unsubscribe_link_and_a_reply_to_a_letter_both_prove_the_subscriber() -> None:
    made = transport()
    mail = as_sent(made.compose(letter_to(ANA)))
    subject = parse_qs(unsubscribe_link(mail).query)["subject"][0]
    clicked = event(raw_mail(subject=subject, body=""), made)
    assert clicked.text == "unsubscribe" and clicked.sender_proven
    letter_id = str(mail["Message-ID"])
    answered = event(raw_mail(subject="Re: ✊ Letter of solidarity #1", body="unsubscribe",
                              In_Reply_To=letter_id, References=letter_id), made)
    assert answered.text == "unsubscribe" and answered.sender_proven
    forwarded = event(raw_mail(sender=BEA, subject="Re: ✊ Letter of solidarity #1", body="unsubscribe",
                               In_Reply_To=letter_id), made)
    assert not forwarded.sender_proven


def test_an_answer_stays_in_the_writer_thread() -> None:
    made = transport()
    original = event(raw_mail(subject="subscribe es", body="", References="<root@mail.example>"), made)
    answer = OutgoingMessage(chat_id=ANA, text="Reply “yes” to confirm.", reply_to=original.message_id)
    mail = as_sent(made.compose(answer))
    assert mail["In-Reply-To"] == "<first@mail.example>"
    assert str(mail["References"]).split() == ["<root@mail.example>", "<first@mail.example>"]
    assert mail["Subject"] == "Re: subscribe es"
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail.get_all("To") == [ANA] and mail["From"] == BOT
    assert "List-Unsubscribe" not in mail
    assert "Reply “yes” to confirm." in mail.get_content()
    assert proof().answers(ANA, (str(mail["Message-ID"]),))


def test_an_answer_goes_to_the_chat_whatever_the_stored_thread_says() -> None:
    made = transport()
    stored = Thread(to=BEA, message_id="<first@mail.example>", references=(), subject="hello").to_json()
    mail = as_sent(made.compose(OutgoingMessage(chat_id=ANA, text="Thank you!", reply_to=stored)))
    assert mail.get_all("To") == [ANA]
    assert mail["In-Reply-To"] == "<first@mail.example>"


def test_an_answer_to_no_known_mail_is_a_new_mail_named_by_its_first_line() -> None:
    made = transport()
    mail = as_sent(made.compose(OutgoingMessage(chat_id=ANA, text="\nLetter #12 is withdrawn.\nNobody will see it.",
                                                reply_to="12")))
    assert mail["Subject"] == "Letter #12 is withdrawn."
    assert "In-Reply-To" not in mail and "References" not in mail
    assert mail.get_all("To") == [ANA]
    assert mail["Auto-Submitted"] == "auto-replied"
    long = "word " * 40
    # As composed: folding on the wire doubles the space before an encoded word (Python 3.11's email package).
    subject = str(made.compose(OutgoingMessage(chat_id=ANA, text=long + "\nmore", reply_to=None))["Subject"])
    assert subject.endswith("…") and len(subject) <= 70
    assert long.startswith(subject[:-1])


def test_a_retried_send_keeps_its_message_id() -> None:
    made = transport()
    first, again = made.compose(letter_to(ANA)), made.compose(letter_to(ANA))
    assert first["Message-ID"] == again["Message-ID"]
    assert made.compose(letter_to(ANA, key=None))["Message-ID"] != made.compose(letter_to(ANA, key=None))["Message-ID"]
    answer = OutgoingMessage(chat_id=ANA, text="Thank you!", idempotency_key="outbox 5")
    assert made.compose(answer)["Message-ID"] == made.compose(answer)["Message-ID"]


# --- send, edit, scrub --------------------------------------------------------------------------------------------


async def test_the_21st_answer_within_the_hour_is_refused_for_good_without_naming_the_address() -> None:
    made = transport()
    for _ in range(ANSWERS_PER_HOUR):
        assert made.answers.take(ANA)
    with pytest.raises(DeliveryError) as refused:
        await made.send(OutgoingMessage(chat_id=ANA, text="Thank you!"))
    # Refused before SMTP: the closed port would have made it a retryable "unreachable".
    assert refused.value.retryable is False
    assert ANA not in refused.value.reason and ANA not in str(refused.value)


async def test_letters_to_subscribers_are_not_held_by_the_answer_limit() -> None:
    made = transport()
    made.sender = RecordingSender()
    for _ in range(ANSWERS_PER_HOUR):
        made.answers.take(ANA)
    ref = await made.send(letter_to(ANA))
    ((mail, recipient),) = made.sender.sent
    assert recipient == ANA
    assert ref == RemoteRef("email", ANA, str(mail["Message-ID"]))


async def test_answers_are_sent_until_the_limit() -> None:
    made = transport()
    made.sender = RecordingSender()
    for _ in range(ANSWERS_PER_HOUR):
        await made.send(OutgoingMessage(chat_id=ANA, text="Thank you!"))
    with pytest.raises(DeliveryError):
        await made.send(OutgoingMessage(chat_id=ANA, text="Thank you!"))
    await made.send(OutgoingMessage(chat_id=BEA, text="Thank you!"))
    assert [recipient for _mail, recipient in made.sender.sent] == [ANA] * ANSWERS_PER_HOUR + [BEA]


async def test_a_sent_mail_is_never_edited_or_scrubbed() -> None:
    made = transport()
    ref = RemoteRef("email", ANA, "<x@solidarity.example>")
    message = OutgoingMessage(chat_id=ANA, text="changed")
    with pytest.raises(DeliveryError) as edited:
        await made.edit(ref, message)
    assert edited.value.retryable is False
    with pytest.raises(DeliveryError) as scrubbed:
        await made.scrub(ref, message)
    assert scrubbed.value.retryable is False


def test_a_reply_to_the_bots_mail_is_a_letter_without_the_bots_subject() -> None:
    made = transport()
    assert made.proof is not None
    ours = made.proof.message_id(ANA, "solidarity.example")
    reply_to_letter = raw_mail(subject="Re: ✊ Letter of solidarity #3", body="Thank you, from Porto.",
                               In_Reply_To=ours, References=ours)
    assert event(reply_to_letter, made).text == "Thank you, from Porto."
    assert event(raw_mail(subject="Re: ✊ Letter of solidarity #3", body="Thank you, from Porto."), made).text == (
        "✊ Letter of solidarity #3\n\nThank you, from Porto.")  # no proof it answers the bot: the writer's subject

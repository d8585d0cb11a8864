"""The email message layer, on raw messages shaped like those real clients and servers send."""

from __future__ import annotations

import base64
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.transports import email_message as em
from bot.transports.email_message import Thread, command_of, letter_mail, letter_text, parse, reply

BOT = "relay@solidarity.example"


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


THUNDERBIRD = crlf("""\
Return-Path: <maria@mail.example>
Message-ID: <3f1a2b@mail.example>
Date: Mon, 30 Nov 2026 18:02:11 +0100
MIME-Version: 1.0
User-Agent: Mozilla Thunderbird
Content-Language: de-DE
To: relay@solidarity.example
From: Maria Lopez <maria@Mail.EXAMPLE>
Subject: Greetings from Berlin
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit

Dear friends,

we are thinking of you every day.

--
Maria
Berlin
""")

GMAIL = crlf("""\
Return-Path: <tom.example@gmail.example>
MIME-Version: 1.0
References: <receipt-1@solidarity.example>
In-Reply-To: <receipt-1@solidarity.example>
From: Tom <tom.example@gmail.example>
Date: Tue, 1 Dec 2026 09:00:00 +0000
Message-ID: <CAF=abc123@mail.gmail.example>
Subject: Re: Hold on
To: Solidarity Relay <relay@solidarity.example>
Content-Type: multipart/alternative; boundary="000000000000aaaa"

--000000000000aaaa
Content-Type: text/plain; charset="UTF-8"

You are not alone.

Tom

On Mon, 30 Nov 2026 at 20:00, Solidarity Relay <relay@solidarity.example>
wrote:

> Thank you, your letter #12 has been received.
>

--000000000000aaaa
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">You are not alone.<div><br></div><div>Tom</div></div><br><div class="gmail_quote"><div \
dir="ltr" class="gmail_attr">On Mon, 30 Nov 2026 at 20:00, Solidarity Relay &lt;relay@solidarity.example&gt; \
wrote:<br></div><blockquote class="gmail_quote">Thank you, your letter #12 has been received.</blockquote></div>

--000000000000aaaa--
""")

GMAIL_HTML_ONLY = crlf("""\
From: Tom <tom.example@gmail.example>
Message-ID: <CAF=html@mail.gmail.example>
Subject: Re: Hold on
Content-Type: text/html; charset="UTF-8"

<div dir="ltr">You are <b>not</b> alone.<div><br></div><div>Tom</div></div><br><div class="gmail_quote"><div \
class="gmail_attr">On Mon, 30 Nov 2026, Solidarity Relay wrote:<br></div><blockquote class="gmail_quote">Your \
letter #12 has been received.</blockquote></div><script>alert(1)</script>
""")

OUTLOOK = crlf("""\
From: "Smith, John" <John.Smith@Corp.Example>
To: "relay@solidarity.example" <relay@solidarity.example>
Subject: RE: Your letter #7 was approved
Thread-Topic: Your letter #7 was approved
Message-ID: <DB9PR01MB1234@eurprd01.prod.outlook.example>
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable
Content-Language: en-US

Thank you for carrying it.

Kind regards,
John Smith

-----Original Message-----
From: Solidarity Relay <relay@solidarity.example>=20
Sent: Monday, November 30, 2026 8:00 PM
To: Smith, John <John.Smith@corp.example>
Subject: Your letter #7 was approved

Your letter #7 was approved and sent to 120 subscribers.
""")

KOI8 = crlf("""\
From: =?koi8-r?B?6dfBzg==?= <ivan@mail.example>
Subject: =?koi8-r?B?8NLJ18XU?=
Message-ID: <koi8@mail.example>
Content-Language: ru
Content-Type: text/plain; charset=koi8-r
Content-Transfer-Encoding: 8bit

""") + "Держитесь, друзья!\r\n\r\nИван\r\n".encode("koi8_r")

CP1251 = crlf("""\
From: olga@mail.example
Subject: =?windows-1251?Q?=CF=F0=E8=E2=E5=F2?=
Message-ID: <cp1251@mail.example>
Content-Type: text/plain; charset="windows-1251"
Content-Transfer-Encoding: 8bit

""") + "Мы с вами. Ольга\r\n".encode("cp1251")

QP_EMOJI = crlf("""\
From: ana@mail.example
Subject: =?UTF-8?Q?Fuerza_=F0=9F=92=AA?=
Message-ID: <qp@mail.example>
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

=C2=A1Mucha fuerza! =F0=9F=92=AA Estamos con ustedes, a=C3=BAn desde lejos, y s=
eguimos aqu=C3=AD.
""")

BASE64_UTF8 = crlf(f"""\
From: kim@mail.example
Subject: hello
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

{base64.b64encode("Grüße aus Köln".encode()).decode()}
""")

_JPEG = base64.b64encode(bytes([0xFF, 0xD8, 0xFF, 0xE0]) + b"fakejpeg").decode()
ATTACHMENT = crlf(f"""\
From: lee@mail.example
Subject: a photo
Message-ID: <att@mail.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8

Here is our banner.

--b1
Content-Type: image/jpeg; name="banner.jpg"
Content-Disposition: attachment; filename="banner.jpg"
Content-Transfer-Encoding: base64

{_JPEG}
--b1
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

AAAA
--b1--
""")

VACATION = crlf("""\
Return-Path: <maria@mail.example>
From: Maria Lopez <maria@mail.example>
To: relay@solidarity.example
Subject: Auto: Your letter #12 has been received
Auto-Submitted: auto-replied
Message-ID: <vac@mail.example>
Content-Type: text/plain; charset=utf-8

I am on holiday until 10 December.
""")

DSN = crlf("""\
Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@mx.solidarity.example>
To: relay@solidarity.example
Subject: Undelivered Mail Returned to Sender
Auto-Submitted: auto-replied
Message-ID: <dsn@mx.solidarity.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="r1"

--r1
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.solidarity.example.
I'm sorry to have to inform you that your message could not be delivered.

--r1
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.solidarity.example
Final-Recipient: rfc822; gone@mail.example
Action: failed
Status: 5.1.1

--r1--
""")

# A bounce from an older MTA that sets none of the auto headers: only its envelope shows it.
BARE_BOUNCE = crlf("""\
Return-Path: <>
From: MAILER-DAEMON@old.example
Subject: failure notice
Content-Type: text/plain

Sorry, no mailbox here by that name.
""")

MAILING_LIST = crlf("""\
From: news@campaign.example
To: relay@solidarity.example
Subject: Our weekly newsletter
List-Id: Campaign news <news.campaign.example>
List-Unsubscribe: <mailto:leave@campaign.example>
Message-ID: <list@campaign.example>
Content-Type: text/plain

This week...
""")

INJECTION = crlf("""\
From: mallory@mail.example
Subject: =?utf-8?Q?hello=0D=0ABcc=3A_everyone=40victim.example?=
Message-ID: <inj@mail.example>
Content-Type: text/plain

Hi
""")

RUSSIAN_REPLY = (
    crlf("""\
From: ivan@mail.example
Subject: Re: subscribe ru
Content-Type: text/plain; charset=utf-8

""")
    + "да, подписываюсь\r\n\r\n1 декабря 2026 г., в 10:00, Relay <relay@solidarity.example> написал:\r\n"
    "> Answer yes to confirm.\r\n".encode()
)


# --- reading ---------------------------------------------------------------------------------------------------


def test_a_thunderbird_letter_keeps_its_signature() -> None:
    mail = parse(THUNDERBIRD)
    assert mail.sender == "maria@mail.example"
    assert mail.return_path == "maria@mail.example"
    assert mail.message_id == "<3f1a2b@mail.example>"
    assert mail.language == "de"
    assert mail.text == "Dear friends,\n\nwe are thinking of you every day.\n\n--\nMaria\nBerlin"
    assert mail.automatic is None and mail.unreadable is None
    assert mail.attachments == ()
    assert letter_text(mail) == "Greetings from Berlin\n\n" + mail.text
    assert command_of(mail) is None


def test_a_gmail_reply_loses_the_quote_and_keeps_the_thread() -> None:
    mail = parse(GMAIL)
    assert mail.text == "You are not alone.\n\nTom"
    assert mail.references == ("<receipt-1@solidarity.example>",)
    assert mail.attachments == ()  # the HTML half is the same letter
    assert letter_text(mail) == "Hold on\n\nYou are not alone.\n\nTom"


def test_an_html_only_letter_is_read_as_text_without_the_gmail_quote() -> None:
    mail = parse(GMAIL_HTML_ONLY)
    assert "You are not alone." in mail.text
    assert "Tom" in mail.text
    assert "received" not in mail.text
    assert "alert" not in mail.text
    assert "<" not in mail.text


def test_an_outlook_reply_loses_the_original_message() -> None:
    mail = parse(OUTLOOK)
    assert mail.sender == "John.Smith@corp.example"
    assert mail.text == "Thank you for carrying it.\n\nKind regards,\nJohn Smith"
    assert mail.language == "en"
    assert letter_text(mail).startswith("Your letter #7 was approved\n\n")


@pytest.mark.parametrize(
    ("raw", "subject", "text"),
    [
        (KOI8, "Привет", "Держитесь, друзья!\n\nИван"),
        (CP1251, "Привет", "Мы с вами. Ольга"),
        (QP_EMOJI, "Fuerza 💪", "¡Mucha fuerza! 💪 Estamos con ustedes, aún desde lejos, y seguimos aquí."),
        (BASE64_UTF8, "hello", "Grüße aus Köln"),
    ],
    ids=["koi8-r", "windows-1251", "qp-utf8", "base64-utf8"],
)
def test_charsets_are_decoded(raw: bytes, subject: str, text: str) -> None:
    mail = parse(raw)
    assert mail.subject == subject
    assert mail.text == text


def test_a_koi8_sender_name_does_not_disturb_the_address() -> None:
    mail = parse(KOI8)
    assert mail.sender == "ivan@mail.example"
    assert mail.language == "ru"


def test_a_wrong_charset_falls_back_with_replacement() -> None:
    raw = crlf("From: a@b.example\nSubject: x\nContent-Type: text/plain; charset=utf-8\n\n") + "Привет".encode("koi8_r")
    mail = parse(raw)
    assert "\ufffd" in mail.text


def test_an_unknown_or_missing_charset_falls_back_to_utf8() -> None:
    unknown = crlf("From: a@b.example\nContent-Type: text/plain; charset=x-klingon\n\n") + "Grüße".encode()
    missing = crlf("From: a@b.example\nContent-Type: text/plain\n\n") + "Grüße".encode()
    assert parse(unknown).text == "Grüße"
    assert parse(missing).text == "Grüße"


def test_attachments_are_named_for_the_answer() -> None:
    mail = parse(ATTACHMENT)
    assert mail.text == "Here is our banner."
    assert mail.attachments == ("banner.jpg", "application/octet-stream")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (VACATION, em.AUTO_SUBMITTED),
        (DSN, em.AUTO_SUBMITTED),
        (BARE_BOUNCE, em.NULL_RETURN_PATH),
        (MAILING_LIST, em.MAILING_LIST),
    ],
    ids=["vacation", "dsn", "bare-bounce", "mailing-list"],
)
def test_machine_mail_is_marked_automatic(raw: bytes, reason: str) -> None:
    assert parse(raw).automatic == reason


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("Precedence: bulk\n", em.PRECEDENCE),
        ("Precedence: JUNK\n", em.PRECEDENCE),
        ("X-Autoreply: yes\n", em.AUTOREPLY),
        ("X-Autorespond: yes\n", em.AUTOREPLY),
        ("List-Unsubscribe: <mailto:x@y.example>\n", em.MAILING_LIST),
        ("Auto-Submitted: auto-generated; owner-email=x@y.example\n", em.AUTO_SUBMITTED),
        ("Content-Type: multipart/report; report-type=delivery-status; boundary=x\n", em.REPORT),
        ("Auto-Submitted: no\n", None),
        ("Precedence: first-class\n", None),
    ],
)
def test_each_automatic_sign(headers: str, reason: str | None) -> None:
    assert parse(crlf(f"From: a@b.example\n{headers}\nhello\n")).automatic == reason


def test_postmaster_is_automatic() -> None:
    assert parse(crlf("From: postmaster@b.example\n\nhello\n")).automatic == em.MAILER_DAEMON


def test_an_encoded_newline_in_a_subject_stays_in_the_subject() -> None:
    mail = parse(INJECTION)
    assert mail.subject == "hello Bcc: everyone@victim.example"
    msg = reply(mail, BOT, "Thanks", "en")
    sent = _reparse(msg)
    assert "Bcc" not in sent
    assert sent["Subject"] == "Re: hello Bcc: everyone@victim.example"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", em.NO_SENDER),
        (b"\x00\xff\xfe garbage \x80\x81\r\n\r\n\xde\xad\xbe\xef", em.NO_SENDER),
        (crlf("Subject: no sender\n\nhello\n"), em.NO_SENDER),
        (b"From: a@b.example\r\n\r\n" + b"x" * (em.MAX_RAW_BYTES + 1), em.TOO_LARGE),
    ],
    ids=["empty", "garbage", "no-from", "too-large"],
)
def test_unreadable_mail_has_a_reason(raw: bytes, reason: str) -> None:
    mail = parse(raw)
    assert mail.unreadable == reason
    assert mail.thread is None


def test_an_empty_body_is_an_empty_text() -> None:
    mail = parse(crlf("From: a@b.example\nSubject: only a subject\n\n"))
    assert mail.text == ""
    assert mail.unreadable is None
    assert letter_text(mail) == "only a subject"


def test_a_huge_body_is_cut_quickly() -> None:
    raw = crlf("From: a@b.example\nContent-Type: text/plain\n\n") + b"word " * 2_000_000
    start = time.monotonic()
    mail = parse(raw)
    assert time.monotonic() - start < 10
    assert mail.truncated
    assert len(mail.text) <= em.MAX_TEXT_CHARS


def test_a_quote_in_another_language_is_dropped_with_its_attribution() -> None:
    mail = parse(RUSSIAN_REPLY)
    assert mail.text == "да, подписываюсь"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("Hello\n\nAm 30.11.2026 um 20:00 schrieb Relay <relay@solidarity.example>:\n> Danke\n", "Hello"),
        ("Salut\n\nLe lun. 30 nov. 2026 à 20:00, Relay <relay@solidarity.example> a écrit :\n> Merci\n", "Salut"),
        ("Hi\n\n* Jo <jo@x.example> [2026-11-30 20:00]:\n> old\n> more\n", "Hi"),
        (
            "Dear all\n\n________________________________\nFrom: Solidarity Relay <relay@solidarity.example>\n"
            "Sent: Monday, November 30, 2026 8:00 PM\nSubject: Your letter #7\n\nYour letter #7 was approved.\n",
            "Dear all",
        ),
    ],
    ids=["german", "french", "mutt", "outlook-web"],
)
def test_reply_history_in_other_clients_is_dropped(text: str, kept: str) -> None:
    raw = crlf("From: a@b.example\nContent-Type: text/plain; charset=utf-8\n\n") + text.encode()
    assert parse(raw).text == kept


@pytest.mark.parametrize(
    "text",
    [
        "As Martin Luther King said:\n> Injustice anywhere is a threat to justice everywhere.",
        "Hello!\nFrom: all of us in Lyon\nTo: you in Kyiv\nWith love",
        "We marched on Monday.\nOn Monday we wrote to our mayor:\nfree them all!",
    ],
    ids=["a-quotation", "a-from-line", "an-on-line"],
)
def test_a_letter_that_only_looks_like_a_reply_is_kept_whole(text: str) -> None:
    raw = crlf("From: a@b.example\nContent-Type: text/plain; charset=utf-8\n\n") + text.encode()
    assert parse(raw).text == text


def test_an_inline_quote_is_kept() -> None:
    raw = crlf("From: a@b.example\n\n> you said\nand I answer\n")
    assert parse(raw).text == "> you said\nand I answer"


# --- what the mail says ------------------------------------------------------------------------------------------


def _mail(subject: str = "", text: str = "", references: tuple[str, ...] = ()) -> em.IncomingMail:
    return em.IncomingMail(
        message_id=None,
        references=references,
        sender="a@b.example",
        return_path=None,
        subject=subject,
        language=None,
        text=text,
    )


@pytest.mark.parametrize("subject", ["", "Re:", "RE: re:", "Fwd: AW:  Re: ", "  "])
def test_an_empty_subject_is_not_a_first_line(subject: str) -> None:
    assert letter_text(_mail(subject, "Hello\r\nworld  \r\n\r\n")) == "Hello\nworld"


def test_a_subject_repeated_as_first_line_is_not_doubled() -> None:
    assert letter_text(_mail("Hello", "Hello\n\nworld")) == "Hello\n\nworld"


@pytest.mark.parametrize(
    ("subject", "text", "command"),
    [
        ("", "withdraw 12", ("withdraw", "12")),
        ("", "/Withdraw #12", ("withdraw", "12")),
        ("", "\n\n  forget  \nmore", ("forget", "")),
        ("", "FORGET YES", ("forget", "yes")),
        ("subscribe es", "", ("subscribe", "es")),
        ("Re: subscribe es", "", ("subscribe", "es")),
        ("", "!subscribe", ("subscribe", "")),
        ("unsubscribe", "", ("unsubscribe", "")),
        ("Re: A letter from Kyiv", "Unsubscribe", ("unsubscribe", "")),
        ("Re: subscribe es", "Yes!", ("yes", "")),
        ("", "yes.", ("yes", "")),
        ("", "yes, I stand with you all", None),
        ("Subscribe to hope", "We stand with you", None),
        ("withdraw", "Please take my letter back", None),
        ("", "withdraw 12\n-- \nAna\nSent from my phone", ("withdraw", "12")),  # a signature may follow
        ("Help", "Dear friends,\nwe write from Lyon.\nYou are in our thoughts.\nStay strong.\nL.", None),
        ("Yes!", "We stand with you, all of us, every day, and we will until you are free: " * 3, None),
    ],
)
def test_commands(subject: str, text: str, command: tuple[str, str] | None) -> None:
    """In a reply (References): a confirmation answers the bot's mail, so `yes` is a command only there."""
    assert command_of(_mail(subject, text, references=("<q@relay.example>",))) == command


def test_yes_in_a_mail_that_answers_nothing_is_no_confirmation() -> None:
    assert command_of(_mail("Re: subscribe es", "Yes!")) == ("subscribe", "es")  # asked again, not confirmed
    assert command_of(_mail("", "yes.")) is None  # a letter


def test_a_gmail_yes_under_the_quote_is_a_confirmation() -> None:
    raw = GMAIL.replace(b"You are not alone.\r\n\r\nTom", b"yes")
    assert command_of(parse(raw)) == ("yes", "")


# --- writing -----------------------------------------------------------------------------------------------------


def _reparse(msg: object) -> object:
    assert hasattr(msg, "as_bytes")
    return BytesParser(policy=policy.default).parsebytes(msg.as_bytes())  # type: ignore[attr-defined]


def test_a_reply_stays_in_the_thread() -> None:
    mail = parse(GMAIL)
    sent = _reparse(reply(mail, BOT, "Thank you, your letter #13 has been received.", "en"))
    assert sent["To"] == "tom.example@gmail.example"
    assert sent["From"] == BOT
    assert sent["Subject"] == "Re: Hold on"
    assert sent["In-Reply-To"] == "<CAF=abc123@mail.gmail.example>"
    assert sent["References"] == "<receipt-1@solidarity.example> <CAF=abc123@mail.gmail.example>"
    assert sent["Auto-Submitted"] == "auto-replied"
    assert sent["Content-Language"] == "en"
    assert sent["Message-ID"].endswith("@solidarity.example>")
    assert sent["Date"]
    assert "Cc" not in sent and "Bcc" not in sent
    assert sent.get_content().strip() == "Thank you, your letter #13 has been received."


def test_a_reply_days_later_from_stored_thread_info() -> None:
    stored = parse(KOI8).thread
    assert stored is not None
    thread = Thread.from_json(stored.to_json())
    assert thread == stored
    sent = _reparse(reply(thread, BOT, "Ваше письмо #4 одобрено.", "ru"))
    assert sent["To"] == "ivan@mail.example"
    assert sent["Subject"] == "Re: Привет"
    assert sent["In-Reply-To"] == "<koi8@mail.example>"
    assert sent.get_content().strip() == "Ваше письмо #4 одобрено."


def test_a_reply_to_a_mail_without_subject() -> None:
    mail = parse(crlf("From: a@b.example\nMessage-ID: <x@b.example>\n\nhi\n"))
    assert _reparse(reply(mail, BOT, "ok", None, subject="Your letter #3"))["Subject"] == "Re: Your letter #3"
    assert "Content-Language" not in _reparse(reply(mail, BOT, "ok", None))


def test_a_mail_or_thread_in_a_log_line_names_nobody() -> None:
    mail = parse(THUNDERBIRD)
    for shown in (repr(mail), str(mail), repr(mail.thread)):
        assert "maria" not in shown.lower().replace("<3f1a2b@mail.example>", "")
        assert "Dear friends" not in shown
        assert "Berlin" not in shown


def test_a_mail_without_sender_cannot_be_answered() -> None:
    with pytest.raises(ValueError):
        reply(parse(b"Subject: x\r\n\r\nhi"), BOT, "ok", "en")


def test_a_letter_goes_to_one_subscriber_alone() -> None:
    msg = letter_mail(BOT, "sub@reader.example", "A letter from Kyiv", "We are still here.\n", "uk", BOT)
    sent = _reparse(msg)
    assert sent["To"] == "sub@reader.example"
    assert [k for k in sent if k.lower() in ("cc", "bcc", "reply-to", "sender")] == []
    assert sent["Auto-Submitted"] == "auto-generated"
    assert sent["Precedence"] == "bulk"
    assert sent["List-Unsubscribe"] == "<mailto:relay@solidarity.example?subject=unsubscribe>"
    assert "List-Unsubscribe-Post" not in sent
    assert sent["Content-Language"] == "uk"
    assert sent.get_content().strip() == "We are still here."


def test_a_header_like_subject_or_text_adds_no_header() -> None:
    evil = "hi\r\nBcc: all@victim.example\nX-Evil: 1\u2028Cc: x@y.example"
    sent = _reparse(letter_mail(BOT, "sub@reader.example", evil, "Bcc: body@victim.example\r\n\r\nX: y", "en", BOT))
    assert sorted(sent.keys()) == sorted(_LETTER_HEADERS)
    assert "\n" not in sent["Subject"]
    assert sent.get_content().startswith("Bcc: body@victim.example")


def test_the_email_package_alone_refuses_a_line_break_in_a_header() -> None:
    # The second line of defence under the builders' own cleaning.
    msg = EmailMessage(policy=policy.default)
    with pytest.raises(ValueError):
        msg["Subject"] = "hi\r\nBcc: all@victim.example"


@pytest.mark.parametrize("address", ["a@b.example, c@d.example", "a@b.example\r\nBcc: c@d.example", "Eve <e@x>", ""])
def test_a_recipient_must_be_one_bare_address(address: str) -> None:
    with pytest.raises(ValueError):
        letter_mail(BOT, address, "s", "t", "en", BOT)


_LETTER_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Content-Language",
    "Auto-Submitted",
    "Precedence",
    "List-Unsubscribe",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
)
_REPLY_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Content-Language",
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
)


# --- properties --------------------------------------------------------------------------------------------------


_HEADERS = st.sampled_from(
    [
        b"From: a@b.example\r\n",
        b"From: =?utf-8?q?=FF?= <@>\r\n",
        b'From: "\\\r\n',
        b"Subject: =?koi8-r?B?8NLJ18XU?=\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n",
        b"Content-Type: text/html; charset=bogus\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Return-Path: <>\r\n",
        b"References: <a@b> <<>>\r\n",
        b"Content-Language: \xff\r\n",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=2000)
    | st.tuples(st.lists(_HEADERS, max_size=6), st.binary(max_size=500)).map(lambda t: b"".join(t[0]) + b"\r\n" + t[1])
)
def test_parse_never_raises(raw: bytes) -> None:
    mail = parse(raw)
    assert isinstance(mail.text, str)
    letter_text(mail)
    command_of(mail)
    if mail.thread is not None:
        reply(mail, BOT, "ok", "en")


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("<>/=\"' abcdiv&#;!-[]pbrscriptgmail_quoteclass\u00e9\ud7ff\x00"), max_size=400)
)
def test_any_html_body_reads_as_text(html: str) -> None:
    raw = crlf("From: a@b.example\nContent-Type: text/html; charset=utf-8\n\n") + html.encode("utf-8", "replace")
    mail = parse(raw)
    assert mail.unreadable is None
    assert isinstance(mail.text, str)


@settings(max_examples=200, deadline=None)
@given(
    subject=st.text(max_size=300),
    text=st.text(max_size=1000),
    message_id=st.sampled_from(["<m@x.example>", "<m@x.example>\r\nBcc: y@z.example"]),
)
def test_builders_never_emit_extra_headers(subject: str, text: str, message_id: str) -> None:
    letter = _reparse(letter_mail(BOT, "sub@reader.example", subject, text, "en", BOT))
    assert sorted(letter.keys()) == sorted(_LETTER_HEADERS)
    assert letter["To"] == "sub@reader.example"
    thread = Thread(to="w@x.example", message_id=message_id, references=(text[:50], "<r@x.example>"), subject=subject)
    answer = _reparse(reply(thread, BOT, text, "en"))
    # A message id that is not one is left out rather than carried into a header.
    expected = _REPLY_HEADERS if message_id == "<m@x.example>" else set(_REPLY_HEADERS) - {"In-Reply-To", "References"}
    assert sorted(answer.keys()) == sorted(expected)
    assert answer["To"] == "w@x.example"

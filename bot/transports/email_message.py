"""Email messages as the bot reads and writes them: parsing, the letter and command inside, and the mails it sends.

Pure: no network, no clock beyond the `Date` header, no storage. The IMAP/SMTP transport feeds raw bytes into
`parse` and sends what the builders return. Nothing here logs: letters and addresses are personal data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import formatdate, make_msgid
from typing import TypeVar
from urllib.parse import quote

import lxml.html
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.html_engine import Inscriptis
from inscriptis.model.config import ParserConfig
from mailparser_reply import EmailReplyParser

# Beyond this the transport's mail server would hardly have accepted it; parsing it would only cost memory.
MAX_RAW_BYTES = 30 * 1024 * 1024
# Longer than any letter the bot accepts; cutting here bounds the time the reply parser's regexes can take.
MAX_TEXT_CHARS = 100_000
# A thread's References grow with every reply; RFC 5322 allows trimming, keeping the first (the thread's root).
MAX_REFERENCES = 10
# What may follow a command in its mail: a signature fits, a letter does not.
COMMAND_TAIL_LINES = 3
COMMAND_TAIL_CHARS = 200

# `automatic` reasons: the mail was sent by a machine, so it is never a letter and never answered (RFC 3834).
AUTO_SUBMITTED = "auto-submitted"
PRECEDENCE = "precedence"
MAILING_LIST = "mailing-list"
NULL_RETURN_PATH = "null-return-path"
MAILER_DAEMON = "mailer-daemon"
REPORT = "delivery-report"
AUTOREPLY = "autoreply"

# `unreadable` reasons: nothing the bot could carry or answer in the usual way.
NO_SENDER = "no-sender"
TOO_LARGE = "too-large"
MALFORMED = "malformed"

_DAEMONS = frozenset({"mailer-daemon", "postmaster"})
_BULK = frozenset({"bulk", "list", "junk", "auto_reply"})
# Reply and forward prefixes of the clients people use (German AW/WG, Nordic SV, Dutch Antw, French TR).
_PREFIX = re.compile(r"^(?:\s*(?:re|fwd?|aw|wg|sv|antw|tr)\s*(?:\[\d+\])?\s*:)+\s*", re.IGNORECASE)
_MSG_ID = re.compile(r"<[^<>\s]+>")
_LANG = re.compile(r"[a-z]{2}")
# Every character that a mail client or the email package could take as the end of a header line.
_HEADER_BREAKERS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
# mail-parser-reply's languages: its "On … wrote:" and "From:/Sent:" header patterns in each.
_REPLY_LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pl", "cs", "da", "sv", "ja", "ko", "zh"]
# An attribution line in any language ("… написал:", "… a écrit :"), recognised by what follows it: quoted lines.
_ATTRIBUTION = re.compile(r"\S.*:\s*$")
_HISTORY_SIGN = re.compile(r"@|\d{1,2}:\d{2}|\b(?:19|20)\d{2}\b")
_OUTLOOK_SEPARATOR = re.compile(r"^\s*-{3,}\s*(?:original message|ursprüngliche nachricht|исходное сообщение)", re.I)
_HTML_QUOTES = (
    "//*[contains(concat(' ', normalize-space(@class), ' '), ' gmail_quote ')]",
    "//blockquote[@type='cite']",
    "//*[contains(concat(' ', normalize-space(@class), ' '), ' moz-cite-prefix ')]",
    "//*[@id='divRplyFwdMsg']",
    "//*[@id='appendonsend']",
)

_T = TypeVar("_T")
_BYTES_PARSER = BytesParser(policy=policy.default)
_INSCRIPTIS = ParserConfig(css=CSS_PROFILES["strict"])


@dataclass(frozen=True)
class Thread:
    """What a reply days later needs of the mail it answers; small enough to store with the outbox row."""

    to: str = field(repr=False)
    message_id: str | None
    references: tuple[str, ...]
    subject: str = field(repr=False)
    # Where the mailbox holds it ("UIDVALIDITY:UID"): tells apart two mails that lack a Message-ID.
    position: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "to": self.to,
                "message_id": self.message_id,
                "references": list(self.references),
                "subject": self.subject,
                "position": self.position,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, data: str) -> Thread:
        value = json.loads(data)
        return cls(
            to=str(value["to"]),
            message_id=value.get("message_id"),
            references=tuple(str(ref) for ref in value.get("references", ())),
            subject=str(value.get("subject", "")),
            position=str(value.get("position", "")),
        )


@dataclass(frozen=True)
class MailFile:
    """An attachment as it came: the sender's name for it (or its type), its type, its decoded bytes."""

    name: str = field(repr=False)
    mime_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class IncomingMail:
    """One mail as read. Its repr names none of the personal fields, so a stray log line cannot leak them."""

    message_id: str | None
    references: tuple[str, ...]  # References, then In-Reply-To: the thread, oldest first
    sender: str | None = field(repr=False)  # the From address, domain lower-cased; None when there is none
    return_path: str | None = field(repr=False)  # "" for the null return path `<>`, None when the header is missing
    subject: str = field(repr=False)
    language: str | None  # ISO 639-1, from Content-Language
    text: str = field(repr=False)  # the letter: quoted reply history dropped, signature kept
    files: tuple[MailFile, ...] = field(default=(), repr=False)  # the attachments, in the mail's order
    automatic: str | None = None  # why a machine sent it: never a letter, never answered
    unreadable: str | None = None  # why it could not be read as a letter (no sender, too large, malformed)
    truncated: bool = False  # the text was cut at MAX_TEXT_CHARS

    @property
    def attachments(self) -> tuple[str, ...]:
        """The attachments' file names, or their content types where they have none."""
        return tuple(file.name for file in self.files)

    @property
    def thread(self) -> Thread | None:
        if self.sender is None:
            return None
        return Thread(to=self.sender, message_id=self.message_id, references=self.references, subject=self.subject)


# --- reading ---------------------------------------------------------------------------------------------------


def parse(raw: bytes) -> IncomingMail:
    """Never raises: whatever arrives, the transport gets a result it can act on (flag it `\\Seen` and move on)."""
    if len(raw) > MAX_RAW_BYTES:
        return _empty(TOO_LARGE)
    try:
        msg = _BYTES_PARSER.parsebytes(raw)
    except Exception:  # the parser is lenient, but a crafted message must not stop the mailbox
        return _empty(MALFORMED)
    try:
        return _read(msg)
    except Exception:
        # The header registry has had parsing bugs on crafted addresses; what survives is still worth a reason.
        return _empty(MALFORMED, automatic=_safe(lambda: _automatic(msg, None, None)))


def _empty(unreadable: str, automatic: str | None = None) -> IncomingMail:
    return IncomingMail(
        message_id=None,
        references=(),
        sender=None,
        return_path=None,
        subject="",
        language=None,
        text="",
        automatic=automatic,
        unreadable=unreadable,
    )


def sender_of(header: bytes) -> str | None:
    """The From address of a message's header block, normalised as `parse` does (to compare with a chat id)."""
    msg = _safe(lambda: BytesParser(policy=policy.default).parsebytes(header, headersonly=True))
    if not isinstance(msg, EmailMessage):
        return None
    return _safe(lambda: _address(msg, "From"))


def _safe(read: Callable[[], _T]) -> _T | None:
    try:
        return read()
    except Exception:
        return None


def _read(msg: EmailMessage) -> IncomingMail:
    sender = _safe(lambda: _address(msg, "From"))
    return_path = _safe(lambda: _return_path(msg))
    body = _safe(lambda: _body_part(msg))
    text = ""
    if body is not None:
        text = _safe(lambda: _text_of(body)) or ""
    truncated = len(text) > MAX_TEXT_CHARS
    if truncated:
        text = text[:MAX_TEXT_CHARS]
    stripped = _safe(lambda: _strip_quotes(text))
    # Should the rules ever fail on a strange text, the whole text with its history beats losing the letter.
    text = text.strip() if stripped is None else stripped
    files = tuple(_safe(lambda: _attachments(msg, body)) or ())
    return IncomingMail(
        message_id=_safe(lambda: _first_id(_header(msg, "Message-ID"))),
        references=_safe(lambda: _references(msg)) or (),
        sender=sender,
        return_path=return_path,
        subject=_one_line(_header(msg, "Subject")),
        language=_safe(lambda: _language(msg, body)),
        text=text,
        files=files,
        automatic=_automatic(msg, sender, return_path),
        unreadable=None if sender else NO_SENDER,
        truncated=truncated,
    )


def _header(msg: Message, name: str) -> str:
    """A header's decoded value (RFC 2047 words included), "" when it is missing or cannot be decoded."""
    try:
        value = msg.get(name)
    except Exception:
        return ""
    if value is None:
        return ""
    try:
        return str(value)
    except Exception:
        return ""


def _one_line(value: str) -> str:
    return " ".join(_HEADER_BREAKERS.sub(" ", value).split())


def _address(msg: EmailMessage, name: str) -> str | None:
    header = msg.get(name)
    addresses = getattr(header, "addresses", ())
    if not addresses:
        return None
    address = addresses[0]
    if not address.username or not address.domain:
        return None
    return _normalise(address.username, address.domain)


def _normalise(local: str, domain: str) -> str | None:
    # The local part is the receiving server's to interpret (RFC 5321 §2.4); the domain is case-insensitive.
    if _HEADER_BREAKERS.search(local + domain) or any(c in local + domain for c in ' <>,;"'):
        return None
    return f"{local}@{domain.lower()}"


def _return_path(msg: Message) -> str | None:
    raw = _header(msg, "Return-Path")
    if not raw and "Return-Path" not in msg:
        return None
    value = raw.strip().strip("<>").strip()
    if not value:
        return ""
    local, at, domain = value.rpartition("@")
    if not at:
        return value.lower()
    return _normalise(local, domain) or value


def _first_id(value: str) -> str | None:
    found = _MSG_ID.findall(value)
    return found[0] if found else None


def _references(msg: Message) -> tuple[str, ...]:
    refs: list[str] = []
    for ref in [*_MSG_ID.findall(_header(msg, "References")), *_MSG_ID.findall(_header(msg, "In-Reply-To"))]:
        if ref not in refs:
            refs.append(ref)
    return _trim_references(tuple(refs))


def _trim_references(refs: tuple[str, ...]) -> tuple[str, ...]:
    if len(refs) <= MAX_REFERENCES:
        return refs
    return (refs[0], *refs[-(MAX_REFERENCES - 1) :])


def _language(msg: Message, body: Message | None) -> str | None:
    for part in (msg, body):
        if part is None:
            continue
        value = _header(part, "Content-Language").split(",")[0].strip().lower()
        primary = value.split("-")[0]
        if _LANG.fullmatch(primary):
            return primary
    return None


def _automatic(msg: Message, sender: str | None, return_path: str | None) -> str | None:
    auto = _header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if auto and auto != "no":
        return AUTO_SUBMITTED
    if _header(msg, "Precedence").strip().lower() in _BULK:
        return PRECEDENCE
    if "List-Id" in msg or "List-Unsubscribe" in msg:
        return MAILING_LIST
    if return_path == "":
        return NULL_RETURN_PATH
    for address in (sender, return_path):
        if address and address.rpartition("@")[0].lower() in _DAEMONS:
            return MAILER_DAEMON
    if msg.get_content_type() == "multipart/report":
        return REPORT
    if "X-Autoreply" in msg or "X-Autorespond" in msg:
        return AUTOREPLY
    return None


def _body_part(msg: EmailMessage) -> EmailMessage | None:
    return msg.get_body(preferencelist=("plain", "html"))


def _text_of(part: EmailMessage) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    text = _decode(payload, part.get_content_charset())
    if part.get_content_subtype() == "html":
        text = _html_to_text(text)
    return _normalise_newlines(text)


def _decode(payload: bytes, charset: str | None) -> str:
    # A declared charset first; a wrong or unknown one falls back to UTF-8 (what most mail is), lossy at worst.
    for candidate in (charset, "utf-8"):
        if candidate:
            try:
                return payload.decode(candidate)
            except (LookupError, UnicodeDecodeError):
                continue
    try:
        return payload.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _html_to_text(html: str) -> str:
    if not html.strip():
        return ""
    try:
        tree = lxml.html.fromstring(html)
    except Exception:  # lxml refuses documents that are only a comment or a processing instruction
        return ""
    # Gmail, Thunderbird, Apple Mail and Outlook put the quoted history in marked elements: drop them before
    # layout, as their text is the bot's own earlier mail, not the letter.
    for query in _HTML_QUOTES:
        for element in tree.xpath(query):
            _drop(element)
    return Inscriptis(tree, _INSCRIPTIS).get_text()


def _drop(element: lxml.html.HtmlElement) -> None:
    parent = element.getparent()
    if parent is None:
        element.clear()
        return
    # Keep the tail: it is text after the element, not inside it.
    element.drop_tree()


def _normalise_newlines(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def _strip_quotes(text: str) -> str:
    """The new text of a reply, signature kept: the quoted history is the bot's own mail, not the letter."""
    if not text.strip():
        return ""
    text = _cut_outlook(text)
    try:
        replies = EmailReplyParser(languages=_REPLY_LANGUAGES).read(text).replies
    except Exception:
        replies = []
    # The library cuts at any "From:" line; a letter may well say "From: all of us in Lyon". The history it cut
    # must look like a mail's: an address, a time or a year in its headers.
    if len(replies) > 1 and any(_HISTORY_SIGN.search(older.headers) for older in replies[1:]):
        # `content` keeps the signature ("--" blocks), which is part of the writer's letter.
        latest = replies[0].content
        if latest.strip():
            text = latest
    # The library knows attributions in its languages only; a quote at the end is history in any language.
    return _cut_trailing_quote(text).strip()


def _cut_outlook(text: str) -> str:
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if index > 0 and _OUTLOOK_SEPARATOR.match(line):
            return "\n".join(lines[:index])
    return text


def _cut_trailing_quote(text: str) -> str:
    """Drop `>`-quoted lines at the end with the attribution line above them, whatever its language."""
    lines = text.rstrip().split("\n")
    end = len(lines)
    while end > 0 and (lines[end - 1].lstrip().startswith(">") or not lines[end - 1].strip()):
        end -= 1
    if end == len(lines):
        return text
    # Only under an attribution ("… <x@y> написал:", "* Jo [2026-11-30 20:00]:"): a letter may end by quoting
    # someone ("As King said:\n> Injustice anywhere…"), and that quote is the writer's.
    if end > 1 and _ATTRIBUTION.match(lines[end - 1]) and _HISTORY_SIGN.search(lines[end - 1]):
        return "\n".join(lines[: end - 1])
    return text


def _attachments(msg: EmailMessage, body: Message | None) -> list[MailFile]:
    found: list[MailFile] = []
    _collect(msg, body, found)
    return found


def _collect(part: EmailMessage, body: Message | None, found: list[MailFile]) -> None:
    if part is body:
        return
    ctype = part.get_content_type()
    if part.is_multipart() and ctype != "message/rfc822":
        for child in part.iter_parts():
            _collect(child, body, found)
        return
    filename = _safe(part.get_filename)
    if part.get("Content-ID") and part.get_content_disposition() != "attachment":
        return  # a picture the HTML shows in its text (a signature's logo), not one the writer attached
    inline_text = ctype in ("text/plain", "text/html") and part.get_content_disposition() != "attachment"
    if inline_text and not filename:
        return  # the other half of a multipart/alternative: the same letter, not an attachment
    data = _safe(part.as_bytes) if ctype == "message/rfc822" else _safe(lambda: part.get_payload(decode=True))
    name = _one_line(filename)[:200] if filename else ctype
    found.append(MailFile(name, ctype, data if isinstance(data, bytes) else b""))


# --- what the mail says ------------------------------------------------------------------------------------------


def strip_prefixes(subject: str) -> str:
    """ "Re: Fwd: AW: hello" → "hello"."""
    return _PREFIX.sub("", subject).strip()


def letter_text(mail: IncomingMail, keep_subject: bool = True) -> str:
    """The letter: the subject as its first line (`keep_subject`: not when the subject is the bot's own, as in a
    reply to one of its mails), then the text."""
    subject = strip_prefixes(_one_line(mail.subject)) if keep_subject else ""
    text = _normalise_newlines(mail.text)
    first = next((line.strip() for line in text.split("\n") if line.strip()), "")
    if not subject or subject == first:
        return text.strip()
    if not text.strip():
        return subject
    return f"{subject}\n\n{text.strip()}"


_COMMAND = re.compile(
    r"""[/!]?\s*(?:
        (?P<withdraw>withdraw)\s+\#?(?P<number>\d{1,12})
      | (?P<forget>forget)(?:\s+(?P<forget_yes>yes))?
      | (?P<unsubscribe>unsubscribe)(?:\s+(?P<code>[0-9a-f]{8,64}))?
      | (?P<help>help)
      | (?P<subscribe>subscribe)(?:\s+(?P<lang>[a-z]{2,3}(?:[-_][a-z0-9]{2,8})?))?
      | (?P<yes>yes)
    )[\s.!]*""",
    re.IGNORECASE | re.VERBOSE,
)


def command_of(mail: IncomingMail) -> tuple[str, str] | None:
    """(command, args) when the mail is a command rather than a letter.

    The text's first line comes first: answering the bot's "Re: subscribe es" with "yes" is a confirmation. A
    command is a mail of its own: with more than a short signature after it, the mail is a letter ("Help!" over
    a page of text), and `yes` counts only in a reply (a confirmation always is one).
    """
    lines = [line.strip() for line in _normalise_newlines(mail.text).split("\n") if line.strip()]
    candidates = [(lines[0], lines[1:])] if lines else []
    candidates.append((strip_prefixes(_one_line(mail.subject)), lines))
    for candidate, rest in candidates:
        found = _command(candidate)
        if found is None or not _short(rest) or (found[0] == "yes" and not mail.references):
            continue
        return found
    return None


def _short(lines: list[str]) -> bool:
    """Room for a signature ("-- ", a name, "Sent from my phone"), not for a letter."""
    return len(lines) <= COMMAND_TAIL_LINES and sum(len(line) for line in lines) <= COMMAND_TAIL_CHARS


def _command(line: str) -> tuple[str, str] | None:
    match = _COMMAND.fullmatch(line)
    if match is None:
        return None
    if match["withdraw"]:
        return ("withdraw", match["number"])
    if match["forget"]:
        return ("forget", "yes" if match["forget_yes"] else "")
    if match["unsubscribe"]:
        return ("unsubscribe", (match["code"] or "").lower())
    if match["help"]:
        return ("help", "")
    if match["subscribe"]:
        return ("subscribe", (match["lang"] or "").lower().replace("_", "-"))
    return ("yes", "")


# --- writing -----------------------------------------------------------------------------------------------------


def reply(
    to: IncomingMail | Thread,
    bot_address: str,
    text: str,
    language: str | None,
    subject: str | None = None,
) -> EmailMessage:
    """The bot's answer in the writer's thread: to the sender only, marked auto-replied so that their own
    vacation responder stays quiet (RFC 3834). `subject` is used only when the original had none."""
    thread = to.thread if isinstance(to, IncomingMail) else to
    if thread is None:
        raise ValueError("the mail has no sender to answer")
    original = strip_prefixes(_one_line(thread.subject)) or _one_line(subject or "")
    msg = _base(bot_address, thread.to, f"Re: {original}" if original else "Re:", text, language)
    if thread.message_id:
        msg_id = _one_line(thread.message_id)
        if _MSG_ID.fullmatch(msg_id):
            msg["In-Reply-To"] = msg_id
            refs = tuple(r for r in thread.references if _MSG_ID.fullmatch(r) and r != msg_id)
            msg["References"] = " ".join(_trim_references((*refs, msg_id)))
    msg["Auto-Submitted"] = "auto-replied"
    return msg


def message_mail(bot_address: str, to_address: str, subject: str, text: str, language: str | None) -> EmailMessage:
    """The bot's own message that answers no particular mail (a reply whose original is no longer known)."""
    msg = _base(bot_address, to_address, subject, text, language)
    msg["Auto-Submitted"] = "auto-replied"
    return msg


def letter_mail(
    bot_address: str,
    to_address: str,
    subject: str,
    text: str,
    language: str | None,
    unsubscribe_mailto: str,
    unsubscribe_subject: str = "unsubscribe",
) -> EmailMessage:
    """One letter to one subscriber: their address alone, so that no subscriber learns of another.

    `Precedence: bulk` is set: it is not a standard (RFC 2076 calls it discouraged) and does not help delivery,
    but vacation responders honour it (RFC 3834 §2), and every auto-reply it prevents is one less mail the bot
    must recognise and drop.
    """
    msg = _base(bot_address, to_address, subject, text, language)
    msg["Auto-Submitted"] = "auto-generated"
    msg["Precedence"] = "bulk"
    target = _addr_spec(unsubscribe_mailto)
    # RFC 6068: the address and the query are percent-encoded so that nothing in them can end the URI early.
    query = quote(_one_line(unsubscribe_subject), safe="")
    msg["List-Unsubscribe"] = f"<mailto:{quote(target, safe='@')}?subject={query}>"
    return msg


def _base(sender: str, recipient: str, subject: str, text: str, language: str | None) -> EmailMessage:
    sender = _addr_spec(sender)
    msg = EmailMessage(policy=policy.default)
    msg["From"] = sender
    msg["To"] = _addr_spec(recipient)
    # Cleaned first: the policy refuses a CR or LF with a ValueError, which would leave a subscriber without the
    # letter, and its checks have had gaps (CVE-2024-6923, the folding of encoded words, fixed in 3.11.10).
    msg["Subject"] = _one_line(subject)
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    msg.set_content(_normalise_newlines(text) + "\n", charset="utf-8")
    # After set_content, which replaces every Content-* header.
    lang = (language or "").strip().lower()
    if _LANG.fullmatch(lang):
        msg["Content-Language"] = lang
    return msg


def _addr_spec(address: str) -> str:
    """A bare address, checked: a display name or a second address here would reach someone else."""
    if _HEADER_BREAKERS.search(address) or any(c in address for c in ' <>,;"()'):
        raise ValueError("not a single bare address")
    try:
        parsed = Address(addr_spec=address)
    except Exception as error:  # the header parser raises IndexError on an empty string
        raise ValueError("not a single bare address") from error
    if not parsed.username or not parsed.domain:
        raise ValueError("not a single bare address")
    return parsed.addr_spec

"""Email as a network: the bot's mailbox read over IMAP, its answers and letters sent over SMTP.

A chat is an address, and so is its one person: every mail from an address is that address's private chat.
Mail from machines (auto-replies, bounces, lists) never reaches the handlers, so the bot never answers one and no
two robots write to each other for ever.

A mail's From line can be written by anyone. What proves an address is its mailbox: every mail the bot sends to
an address has a Message-ID that carries a keyed code for that address, and a mail whose References name one is
`sender_proven`: its writer has read the bot's mail there. So is an `unsubscribe CODE` subject from a letter's
List-Unsubscribe link, whose code is the address's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import hmac
import logging
import re
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from email.message import EmailMessage

from bot.networks.base import KeyValue, MediaReader
from bot.networks.email_settings import EmailSettings
from bot.transports.email_inbox import Inbox
from bot.transports.email_message import (
    IncomingMail,
    MailFile,
    Thread,
    command_of,
    letter_mail,
    letter_text,
    message_mail,
    parse,
    reply,
    sender_of,
)
from bot.transports.email_sender import MailSender
from handlers.events import (
    COMMAND,
    DOCUMENT,
    IMAGE,
    VIDEO,
    Attachment,
    ChatKind,
    ChatRef,
    IncomingMessage,
    OutgoingMessage,
    RemoteRef,
    Role,
    UserRef,
)
from handlers.ports import Capability, DeliveryError, Dispatch, MediaRefused

log = logging.getLogger(__name__)

KEY_STATE = "email.proof-key"
# Answers to one address (not letters to subscribers) within an hour: past this, a flood of mail forged in
# someone's name would have the bot flood them back.
ANSWERS_PER_HOUR = 20
HOUR = 3600.0
# How long a stop waits for the mail being handled; its UID is not marked handled, so it comes again otherwise.
STOP_SECONDS = 10.0
RECONNECT_SECONDS = (1.0, 5.0, 30.0, 120.0, 300.0)
SUBJECT_LENGTH = 70
SWEEP_SECONDS = 3600.0  # how often handled mail past the retention window is looked for
DAY = 86400.0
_OWN_ID = re.compile(r"<([0-9a-f]{16})\.([0-9a-f]{16})@[^<>\s]+>")
NOT_TEXT = "not text"  # IncomingMessage.content_kind of a mail with no text to read (too large, malformed)


class MailProof:
    """Keyed codes that only the bot can make: in the Message-IDs it sends to an address, and in its
    List-Unsubscribe links. No table: the code is checked by making it again."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def message_id(self, address: str, domain: str, seed: str | None = None) -> str:
        """A Message-ID for a mail to `address`; the same `seed` (a retried send) gives the same one, so that a
        mail the server took before a timeout and is sent again shows once in clients that merge by id."""
        token = self._code("seed", seed)[:16] if seed else secrets.token_hex(8)
        return f"<{token}.{self._code('answer', address, token)[:16]}@{domain}>"

    def answers(self, address: str, references: tuple[str, ...]) -> bool:
        """Whether the mail names, as the one it answers, a mail the bot sent to this very address."""
        for reference in references:
            match = _OWN_ID.fullmatch(reference)
            if match and hmac.compare_digest(match[2], self._code("answer", address, match[1])[:16]):
                return True
        return False

    def unsubscribe_code(self, address: str) -> str:
        return self._code("unsubscribe", address)[:16]

    def _code(self, purpose: str, *parts: str) -> str:
        return hmac.new(self.key, "\n".join((purpose, *parts)).encode(), hashlib.sha256).hexdigest()


class AnswerLimit:
    """At most `per_hour` answers to one address in any hour (in memory: a restart forgets, which is fine)."""

    def __init__(self, per_hour: int = ANSWERS_PER_HOUR, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = per_hour
        self.clock = clock
        self._sent: dict[str, deque[float]] = {}

    def take(self, address: str) -> bool:
        now = self.clock()
        sent = self._sent.setdefault(address, deque())
        while sent and sent[0] <= now - HOUR:
            sent.popleft()
        if len(sent) >= self.per_hour:
            return False
        sent.append(now)
        return True


class EmailTransport:
    platform = "email"
    capabilities = frozenset({Capability.SUBSCRIBER_FOOTER})
    command_prefix = ""  # a command is a subject or a first line; the transport marks it COMMAND
    max_text_length = 1_000_000  # a mail has no length limit of its own; the letters' own limit applies
    bot_username = None

    def __init__(
        self, settings: EmailSettings, state: KeyValue, tls: ssl.SSLContext | None = None, keep_days: float = 30.0,
        media: MediaReader | None = None,
    ) -> None:
        self.media = media
        # The files of the mail being handled, by attachment ref: `fetch` hands them over, then they are dropped.
        self._files: dict[str, bytes] = {}
        self.settings = settings
        self.keep_days = max(keep_days, 1.0)  # IMAP knows a mail's day of arrival, not its hour
        self.state = state
        self.tls = tls
        self.inbox = Inbox(settings.imap, settings.user, settings.password, state, tls=tls)
        self.sender = MailSender(settings.smtp, settings.user, settings.password, settings.address, tls=tls)
        self.answers = AnswerLimit()
        self.proof: MailProof | None = None
        self._dispatch: Dispatch | None = None
        self._reading: asyncio.Task[None] | None = None
        self._stopping = False
        self._waiting = False  # between mails (IDLE or a pause), where a stop may interrupt at once
        self._swept_at = float("-inf")

    def text_length(self, text: str) -> int:
        return len(text)

    # --- receiving ------------------------------------------------------------------------------------------

    async def start(self, dispatch: Dispatch) -> None:
        self.proof = MailProof(await self._key())
        await self.inbox.connect()  # a wrong login or mailbox stops the start with its reason
        self._dispatch = dispatch
        self._reading = asyncio.create_task(self._read())

    async def _key(self) -> bytes:
        stored = await self.state.get(KEY_STATE)
        if stored is None:
            stored = secrets.token_hex(32)
            await self.state.put(KEY_STATE, stored)
        return bytes.fromhex(stored)

    async def _read(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                if not self.inbox.connected:
                    await self.inbox.connect()
                # Until a search finds nothing: mail that came while earlier mail was handled was announced in
                # the answers to the bot's own commands, and IDLE would not announce it again.
                while uids := await self.inbox.unhandled():
                    for uid in uids:
                        if self._stopping:
                            return
                        await self._take(uid)
                await self._sweep()
                failures = 0
                await self._wait_for_mail()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # The server's words can quote the login: only the kind of failure is logged.
                delay = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                log.warning("email: reading the mailbox failed (%s); trying again in %.0f s", type(error).__name__,
                            delay)
                await self.inbox.close()
                await self._pause(delay)

    async def _take(self, uid: int) -> None:
        raw = await self.inbox.fetch(uid)
        # Parsed in a thread: a long letter takes the quote detector ~0.2 s, a 30 MB mail ~1 s, and the bot's
        # other networks and its outbox must not stop meanwhile.
        event = await asyncio.to_thread(self.event_of, raw, self.inbox.position_of(uid)) if raw is not None else None
        if event is not None:
            assert self._dispatch is not None
            try:
                await self._dispatch(event)
            finally:
                self._files.clear()
        await self.inbox.handled(uid)

    async def _sweep(self) -> None:
        """Handled mail goes from the mailbox once the retention window is over: the database forgets who wrote
        a letter, and the mailbox must not remember it for years."""
        if time.monotonic() - self._swept_at < SWEEP_SECONDS:
            return
        self._swept_at = time.monotonic()
        arrived_before = datetime.date.fromtimestamp(time.time() - self.keep_days * DAY)
        deleted = await self.inbox.delete_handled(arrived_before)
        if deleted:
            log.info("email: %d handled mail(s) older than %g days deleted from the mailbox", deleted, self.keep_days)

    async def _wait_for_mail(self) -> None:
        if self._stopping:
            return  # a stop came while the loop was busy: it must not go into IDLE now
        self._waiting = True
        try:
            await self.inbox.wait_for_mail()
        finally:
            self._waiting = False

    async def _pause(self, seconds: float) -> None:
        self._waiting = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self._waiting = False

    def event_of(self, raw: bytes, position: str) -> IncomingMessage | None:
        """A mail as the handlers see it, or None for one nobody should answer."""
        mail = parse(raw)
        if mail.automatic is not None:
            log.info("email: a mail sent by a machine (%s) was left unanswered", mail.automatic)
            return None
        if mail.sender is None or mail.thread is None:
            log.info("email: a mail without a sender's address was left unanswered (%s)", mail.unreadable)
            return None
        if mail.sender.lower() == self.settings.address.lower():
            return None  # the bot's own mail, come back: never a letter, never answered
        return self._message(mail, replace(mail.thread, position=position))

    def _message(self, mail: IncomingMail, thread: Thread) -> IncomingMessage:
        assert mail.sender is not None and self.proof is not None
        address = mail.sender
        answers_bot = proven = self.proof.answers(address, mail.references)
        command = command_of(mail)
        kind = "text"
        if command is not None:
            name, args = command
            if name == "unsubscribe":
                # The code of a letter's List-Unsubscribe link proves the address, and is no argument.
                proven = proven or hmac.compare_digest(args, self.proof.unsubscribe_code(address))
                args = ""
            text: str | None = f"{name} {args}".strip()
            kind = COMMAND
        elif mail.unreadable is not None:
            text, kind = None, NOT_TEXT
        elif not mail.text.strip() and mail.attachments:
            text = None  # the attachment is the letter: a subject alone is no caption of it
        else:
            # In a reply to the bot ("Re: ✊ Letter of solidarity #3") the subject is the bot's words, not theirs.
            text = letter_text(mail, keep_subject=not answers_bot)
        return IncomingMessage(
            event_id=f"mail {thread.position}",
            chat=ChatRef(self.platform, address, ChatKind.PRIVATE),
            sender=UserRef(self.platform, address, display_name="", language=mail.language),
            text=text,
            message_id=thread.to_json(),
            received_at=time.time(),
            content_kind=kind,
            length=len(text or ""),
            sender_proven=proven,
            attachments=self._attachments(mail.files, thread.position) if kind == "text" else (),
        )

    def _attachments(self, files: tuple[MailFile, ...], position: str) -> tuple[Attachment, ...]:
        attachments = []
        for index, file in enumerate(files):
            ref = f"{position}/{index}"
            self._files[ref] = file.data
            attachments.append(Attachment(_kind_of(file.mime_type), file.mime_type, len(file.data), file.name, ref))
        return tuple(attachments)

    async def fetch(self, attachment: Attachment) -> bytes:
        """An attachment of the mail being handled (the mail was read whole: nothing to download)."""
        data = self._files.get(attachment.ref)
        if data is None:
            raise MediaRefused("the mail it came with is no longer being handled")
        return data

    async def stop_receiving(self) -> None:
        self._stopping = True
        reading = self._reading
        if reading is None:
            return
        if self._waiting:
            reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
            await asyncio.wait_for(reading, STOP_SECONDS)

    async def stop(self) -> None:
        await self.stop_receiving()
        await self.inbox.close()

    # --- sending --------------------------------------------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> RemoteRef:
        recipient = message.chat_id
        if not message.broadcast and not self.answers.take(recipient):
            raise DeliveryError(f"more than {ANSWERS_PER_HOUR} answers to one address within the hour",
                                retryable=False)
        mail = self.compose(message)
        await self.sender.send(mail, recipient)
        return RemoteRef(self.platform, recipient, str(mail["Message-ID"]))

    def compose(self, message: OutgoingMessage) -> EmailMessage:
        assert self.proof is not None, "the transport has not started"
        bot, to = self.settings.address, message.chat_id
        body = "\n\n".join(part for part in (message.text, message.footer) if part)
        thread = _thread_of(message.reply_to)
        if message.broadcast:
            code = self.proof.unsubscribe_code(to)
            mail = letter_mail(bot, to, message.title or _subject_of(message.text), body, None, bot,
                               unsubscribe_subject=f"unsubscribe {code}")
            self._attach(mail, message)
        elif thread is not None:
            # The answer goes to the chat's address whatever the stored thread says.
            text = "\n\n".join(part for part in (message.title, body) if part)
            mail = reply(replace(thread, to=to), bot, text, None, subject=message.title)
        else:
            mail = message_mail(bot, to, message.title or _subject_of(message.text), body, None)
        del mail["Message-ID"]
        mail["Message-ID"] = self.proof.message_id(to, self.settings.domain, message.idempotency_key)
        return mail

    def _attach(self, mail: EmailMessage, message: OutgoingMessage) -> None:
        for item in message.media:
            assert self.media is not None, "media to send, but no media store"
            maintype, _, subtype = item.mime_type.partition("/")
            mail.add_attachment(self.media.read(item.digest), maintype=maintype or "application",
                                subtype=subtype or "octet-stream", filename=item.file_name or "file")

    async def edit(self, ref: RemoteRef, message: OutgoingMessage) -> None:
        # Nothing the bot sends by mail is ever edited (cards and progress live in the moderation rooms).
        raise DeliveryError("a sent mail cannot be changed", retryable=False)

    async def scrub(self, ref: RemoteRef, message: OutgoingMessage) -> None:
        raise DeliveryError("a sent mail cannot be changed", retryable=False)

    # --- the chat directory: an address is its own person's chat ------------------------------------------------

    async def role_of(self, chat_id: str, user_id: str) -> Role:
        return Role.ADMIN if chat_id == user_id else Role.OUTSIDER

    def owns(self, reference: str) -> bool:
        return False  # moderators cannot subscribe an address: only its owner can, by confirming

    async def resolve_chat(self, reference: str) -> ChatRef | None:
        return None

    async def can_post(self, chat_id: str) -> bool:
        return True

    async def leave(self, chat_id: str) -> None:
        return None

    async def answer_press(self, token: str | None, text: str) -> None:
        return None

    async def forget_chat(self, chat_id: str) -> None:
        """`forget`: the person's mail goes from the bot's mailbox now, not at the end of the retention window.
        On a connection of its own: the reading one may be waiting in IDLE."""
        inbox = Inbox(self.settings.imap, self.settings.user, self.settings.password, self.state, tls=self.tls)
        await inbox.connect()
        try:
            found = await inbox.from_header_matches(chat_id)
            await inbox.delete([uid for uid, header in found if sender_of(header) == chat_id])
        finally:
            await inbox.close()

    # --- `--check` -----------------------------------------------------------------------------------------------

    async def check(self) -> list[str]:
        problems = []
        imap, smtp = self.settings.imap, self.settings.smtp
        try:
            await self.inbox.connect()
            print(f"email: IMAP {imap.host}:{imap.port} ({imap.security}): logged in, mailbox {imap.mailbox!r} open")
        except Exception as error:
            problems.append(f"email: IMAP {imap.host}:{imap.port}: {type(error).__name__}: {error}")
        finally:
            await self.inbox.close()
        try:
            await self.sender.login()
            print(f"email: SMTP {smtp.host}:{smtp.port} ({smtp.security}): logged in")
        except Exception as error:
            problems.append(f"email: SMTP {smtp.host}:{smtp.port}: {type(error).__name__}: {error}")
        return problems


def _kind_of(mime_type: str) -> str:
    if mime_type.startswith("image/"):
        return IMAGE
    return VIDEO if mime_type.startswith("video/") else DOCUMENT


def _thread_of(reply_to: str | None) -> Thread | None:
    """The mail an answer belongs to, from the message id the handlers kept (another network's id: none)."""
    if not reply_to or not reply_to.startswith("{"):
        return None
    try:
        return Thread.from_json(reply_to)
    except (ValueError, KeyError, TypeError):
        return None


def _subject_of(text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first if len(first) <= SUBJECT_LENGTH else first[: SUBJECT_LENGTH - 1].rstrip() + "…"

"""Benchmark 8: email as a network, on a real mail system on loopback (Dovecot and aiosmtpd: tests/mailserver.py).

The whole bot runs here with email beside its Telegram moderation group on the strict Bot API emulator, with
its deployed rates (TELEGRAM_RATES) and EMAIL_MESSAGES_PER_SECOND=50. The SMTP server's list of accepted
messages is stamped as each one is appended, which is when the server answers 250: the message is in the
recipient's mailbox by then (the server delivers over LMTP before it answers).

a. Broadcast pacing: N email subscribers, seeded into the database before the bot starts (no confirmation mails).
   A letter arrives by mail, a moderator presses the card's ✅ on the emulator; from the press until the SMTP
   server accepted the letter for every subscriber, ÷ the minimum N ÷ 50 s. Each subscriber must get it once.
   As a diagnostic, a bare aiosmtplib.send loop as wide as the worker's concurrency shows what the SMTP round
   trip alone allows.
b. Intake: M writers mail a letter each at once (a thread pool of smtplib clients); from the first send until
   the SMTP server accepted all M receipts: letters/s, and each writer's latency from their letter reaching the
   bot's mailbox to their receipt's acceptance.
c. Parsing cost: every letter of the shared corpus as a mail three ways (plain UTF-8, HTML, quoted-printable),
   through `parse` and `letter_text`, without the bot: µs per mail for each kind, and the slowest mail.
"""

from __future__ import annotations

import asyncio
import email.policy
import html
import itertools
import json
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib

from bench.common import LETTER, ROOT, Result, n, tally_logs, temp_dir
from bench.flood import percentile, seconds
from bot.app import Relay
from bot.config import Settings
from bot.outbox import OutboxWorker
from bot.transports.email_message import letter_text, parse
from storage.db import Database
from storage.repositories import Repositories
from tests.emulators.telegram import TelegramEmulator
from tests.mailserver import DOVECOT, Accepted, Mailbox, MailSystem

TOKEN = "123456:BENCH-email-token"
PER_SECOND = 50.0  # EMAIL_MESSAGES_PER_SECOND
GOAL_RATIO = 1.1
GOAL = f"≤ {GOAL_RATIO:g} × N ÷ {PER_SECOND:g}/s, each subscriber once"
LETTER_SUBJECT = "Letter of solidarity #1"
RECEIPT_SIGN = "is with the moderators"  # the English receipt's words (locales/en: "Your letter #N is with …")
SENDERS = 32  # writers' SMTP clients at once: more would only queue for the SMTP server's few delivery threads
CORPUS = ROOT.parent / "shared" / "corpus" / "letters.jsonl"
_HEADERS = BytesHeaderParser(policy=email.policy.default)


# --- the SMTP server's accepted messages, with when ------------------------------------------------------------


class StampedList(list[Accepted]):
    """`RelayHandler.accepted`, with the monotonic time of each append. The SMTP server's thread appends; the
    time goes in first, so a reader that sees an item always finds its time."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    def append(self, item: Accepted) -> None:
        self.at.append(time.monotonic())
        super().append(item)


@dataclass(frozen=True)
class Seen:
    at: float
    mail_from: str
    to: str
    subject: str
    content: bytes


@dataclass
class Tracker:
    """Reads the accepted messages once each, as they come: who got what and when (first copy per address)."""

    accepted: StampedList
    done: int = 0
    by_recipient: dict[str, list[Seen]] = field(default_factory=dict)

    def update(self) -> None:
        count = len(self.accepted)
        for index in range(self.done, count):
            item, at = self.accepted[index], self.accepted.at[index]
            subject = str(_HEADERS.parsebytes(item.content).get("Subject", ""))
            for to in item.rcpt_tos:
                self.by_recipient.setdefault(to.lower(), []).append(Seen(at, item.mail_from, to, subject,
                                                                         item.content))
        self.done = count

    def first(self, to: str, matches: Callable[[Seen], bool] = lambda _: True) -> Seen | None:
        return next((seen for seen in self.by_recipient.get(to.lower(), []) if matches(seen)), None)

    def count(self, to: str, matches: Callable[[Seen], bool]) -> int:
        return sum(1 for seen in self.by_recipient.get(to.lower(), []) if matches(seen))


async def until(check: Callable[[], bool], tracker: Tracker, within: float) -> bool:
    """Poll every 10 ms (the times come from the stamps, so the poll only decides when to stop)."""
    deadline = time.monotonic() + within
    while True:
        tracker.update()
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)


def is_letter(seen: Seen) -> bool:
    return LETTER_SUBJECT in seen.subject


def body_of(content: bytes) -> str:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(("plain",))
    return part.get_content() if part is not None else ""  # type: ignore[attr-defined]


# --- the world: a mail system, the emulator, the bot ----------------------------------------------------------


@dataclass
class World:
    mail: MailSystem
    emu: TelegramEmulator
    mods: dict[str, Any]
    mo: dict[str, Any]
    bot: Mailbox
    database: Path

    def settings(self) -> Settings:
        return Settings.from_env({
            "TELEGRAM_TOKEN": TOKEN,
            "TELEGRAM_API_URL": self.emu.api_root,
            "TELEGRAM_MODERATION_CHAT": str(self.mods["id"]),
            **self.mail.settings_for(self.bot),
            "EMAIL_MESSAGES_PER_SECOND": f"{PER_SECOND:g}",
            "DATABASE": str(self.database),
            "LETTER_JOIN_SECONDS": "0",
            "TRANSLATOR": "none",
            "LOG_LEVEL": "WARNING",
        })


def start_mail_system() -> tuple[MailSystem, StampedList]:
    # Like Synapse for benchmark 3: without the server there is nothing to measure, and the run says so.
    if not os.access(DOVECOT, os.X_OK):
        raise RuntimeError(f"Dovecot is not installed at {DOVECOT} (apt-get install dovecot-imapd dovecot-lmtpd)")
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed (the mail system makes its STARTTLS certificate with it)")
    mail = MailSystem()
    accepted = StampedList()
    mail.handler.accepted = accepted  # before start: the SMTP server's controller takes the handler as it is
    mail.start()
    return mail, accepted


async def subscribe_all(database: Path, addresses: Iterable[str]) -> None:
    """Through the repository, before the bot starts, as if each address had confirmed its subscription."""
    db = await Database.open(database)
    try:
        subscriptions = Repositories.over(db).subscriptions
        for address in addresses:
            await subscriptions.subscribe("email", address, "private", None, "en", time.time())
    finally:
        await db.close()


def letter_mail(writer: Mailbox, to: str, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = writer.address, to, subject
    message["Message-ID"] = make_msgid(domain="people.test")
    message.set_content(text)
    return message


async def card(world: World, number: int, within: float) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        for message in world.emu.sent_by_bot(world.mods):
            if message.get("text", "").startswith(f"📨 Letter #{number} ") and message.get("reply_markup"):
                return message
        return None
    return await world.emu.wait_for(find, within, what=f"card of letter #{number}")


def press_approve(world: World, found: dict[str, Any]) -> float:
    """Mo presses the card's ✅ (the first button); returns the monotonic time of the press."""
    approve = found["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    pressed = time.monotonic()
    world.emu.press_button(world.mo, world.mods["id"], found["message_id"], approve)
    return pressed


# --- a: broadcast pacing --------------------------------------------------------------------------------------


@dataclass
class Broadcast:
    subscribers: int
    reached: int  # subscribers whose first copy was accepted
    elapsed: float | None  # press → the last subscriber's first copy; None when not all were reached
    first_after: float | None  # press → the first copy
    duplicates: int  # copies beyond the first, counted a moment after the last first copy
    missing: int
    concurrency: int
    bare_rate: float | None = None  # the bare aiosmtplib loop's sends/s
    bare_latency: float | None = None  # its median send


async def broadcast(world: World, relay: Relay, readers: list[Mailbox], writer: Mailbox, tracker: Tracker,
                    within: float) -> Broadcast:
    await world.mail.asend(writer, letter_mail(writer, world.bot.address, "For the strikers", LETTER),
                           to=[world.bot.address])
    pressed = press_approve(world, await card(world, 1, within=30))
    addresses = [reader.address for reader in readers]
    everyone = await until(lambda: all(tracker.first(a, is_letter) for a in addresses), tracker, within)
    await asyncio.sleep(1.0)  # a copy sent twice would come right after the first
    tracker.update()
    firsts = [seen.at for a in addresses if (seen := tracker.first(a, is_letter)) is not None]
    counts = [tracker.count(a, is_letter) for a in addresses]
    assert isinstance(relay.worker, OutboxWorker)
    return Broadcast(
        subscribers=len(addresses),
        reached=len(firsts),
        elapsed=max(firsts) - pressed if everyone else None,
        first_after=min(firsts) - pressed if firsts else None,
        duplicates=sum(max(count - 1, 0) for count in counts),
        missing=sum(1 for count in counts if count == 0),
        concurrency=relay.worker.concurrency,
    )


async def bare_sends(world: World, readers: list[Mailbox], concurrency: int) -> tuple[float, float]:
    """aiosmtplib.send as the bot calls it (a connection and login per mail), `concurrency` at a time, no pacing:
    sends/s and the median send. What the SMTP round trip alone allows the worker."""
    gate = asyncio.Semaphore(concurrency)
    times: list[float] = []

    async def one(reader: Mailbox) -> None:
        message = letter_mail(world.bot, reader.address, "Bare send", LETTER)
        async with gate:
            started = time.perf_counter()
            await aiosmtplib.send(message, sender=world.bot.address, recipients=[reader.address],
                                  hostname=world.mail.smtp_host, port=world.mail.smtp_port,
                                  username=world.bot.address, password=world.bot.password, use_tls=False,
                                  start_tls=False, timeout=30)
            times.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(reader) for reader in readers))
    return len(readers) / (time.perf_counter() - started), statistics.median(times)


def broadcast_lines(result: Broadcast) -> list[tuple[str, str]]:
    minimum = result.subscribers / PER_SECOND
    lines = [("minimum", f"{n(result.subscribers)} mails at {PER_SECOND:g}/s = {minimum:.2f} s; worker "
                         f"concurrency {result.concurrency} (sends in flight for broadcasts)")]
    if result.elapsed is None:
        lines.append(("broadcast", f"only {n(result.reached)} of {n(result.subscribers)} subscribers reached "
                                   f"in time"))
    else:
        lines.append(("broadcast", f"✅ → every subscriber's letter accepted: {result.elapsed:.2f} s = "
                                   f"{result.subscribers / result.elapsed:.1f} mails/s = "
                                   f"{result.elapsed / minimum:.3f} × the minimum (first accepted after "
                                   f"{result.first_after:.2f} s)"))
    lines.append(("", f"duplicates {result.duplicates}, missing {result.missing}"))
    if result.bare_rate is not None and result.bare_latency is not None:
        lines.append(("bare SMTP", f"aiosmtplib.send, {result.concurrency} at a time, unpaced: "
                                   f"{result.bare_rate:.1f} sends/s, median send {result.bare_latency * 1000:.0f} ms "
                                   f"(a connection, EHLO, AUTH and the server's LMTP delivery per mail)"))
    return lines


# --- b: intake ------------------------------------------------------------------------------------------------


@dataclass
class Intake:
    letters: int
    submitted: float  # first send started → the last letter accepted into the bot's mailbox
    elapsed: float | None  # first send started → the last receipt accepted; None when some never came
    latencies: list[float]  # each writer's letter in the bot's mailbox → their receipt accepted (inf: none)
    receipts_at: list[float]  # when each receipt was accepted, from the first send, in order
    duplicates: int  # mails to a writer beyond their first
    not_receipts: int  # first mails to a writer that were not a receipt

    @property
    def largest_pause(self) -> tuple[float, int]:
        """The longest time between two receipts, and how many came after it: a stall, not a slow pace."""
        gaps = [(later - earlier, len(self.receipts_at) - index - 1)
                for index, (earlier, later) in enumerate(itertools.pairwise(self.receipts_at))]
        return max(gaps, default=(0.0, 0))


def send_one(mail: MailSystem, writer: Mailbox, to: str, number: int) -> None:
    text = f"{LETTER}\n\n(letter {number} of the intake run)"
    mail.send(writer, letter_mail(writer, to, f"Greetings from writer {number}", text), to=[to])


async def intake(world: World, writers: list[Mailbox], tracker: Tracker, within: float) -> Intake:
    loop = asyncio.get_running_loop()
    bot = world.bot.address
    with ThreadPoolExecutor(max_workers=min(SENDERS, len(writers))) as pool:
        started = time.monotonic()
        await asyncio.gather(*(loop.run_in_executor(pool, send_one, world.mail, writer, bot, number)
                               for number, writer in enumerate(writers, start=1)))
    received = await until(lambda: all(tracker.first(w.address) for w in writers), tracker, within)
    await asyncio.sleep(0.5)  # a receipt sent twice would come right after the first
    tracker.update()
    latencies, sent_at, receipts_at, not_receipts = [], [], [], 0
    for writer in writers:
        letter = tracker.first(bot, sent_by(writer.address))
        receipt = tracker.first(writer.address)
        if letter is not None:
            sent_at.append(letter.at - started)
        if receipt is not None:
            receipts_at.append(receipt.at - started)
            not_receipts += RECEIPT_SIGN not in body_of(receipt.content)
        latencies.append(receipt.at - letter.at if letter and receipt else float("inf"))
    duplicates = sum(max(tracker.count(w.address, lambda _: True) - 1, 0) for w in writers)
    return Intake(len(writers), max(sent_at, default=0.0), max(receipts_at) if received else None, latencies,
                  sorted(receipts_at), duplicates, not_receipts)


def sent_by(address: str) -> Callable[[Seen], bool]:
    return lambda seen: seen.mail_from == address


def intake_lines(result: Intake) -> list[tuple[str, str]]:
    lines = [("intake", f"{n(result.letters)} writers mail at once ({min(SENDERS, result.letters)} SMTP clients at "
                        f"a time); all letters in the bot's mailbox {result.submitted:.2f} s after the first send")]
    if result.elapsed is None:
        lines.append(("", f"only {len(result.receipts_at)} of {result.letters} receipts accepted in time"))
    else:
        lines.append(("", f"first send → every receipt accepted: {result.elapsed:.2f} s = "
                          f"{result.letters / result.elapsed:.1f} letters/s"))
    p50, p95 = percentile(result.latencies, 0.5), percentile(result.latencies, 0.95)
    odd = f"; {result.not_receipts} first mails were no receipt" if result.not_receipts else ""
    lines.append(("receipts", f"letter in the bot's mailbox → its receipt accepted: p50 {seconds(p50)}, p95 "
                              f"{seconds(p95)}, max {seconds(max(result.latencies))}{odd}"))
    pause, after = result.largest_pause
    lines.append(("", f"largest pause between two receipts {pause:.2f} s, with {after} receipts after it; "
                      f"duplicates {result.duplicates}"))
    return lines


# --- c: parsing cost ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    kind: str
    letter_id: str
    size: int  # bytes of the mail
    micros: float  # per parse + letter_text
    faithful: bool  # the letter's words came out as written (whitespace aside)


def corpus_letters() -> list[tuple[str, str]]:
    """(id, text with its signature) of each corpus letter."""
    found = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            text, signature = entry["text"].strip(), entry.get("signature", "").strip()
            if signature and signature not in text:
                text = f"{text}\n\n{signature}"
            found.append((entry["id"], text))
    return found


def as_mail(text: str, kind: str) -> bytes:
    """Plain and HTML bodies in 8 bits (what the parser sees without transfer decoding), or quoted-printable."""
    writer = Mailbox("writer@people.test", "")
    if kind == "html":
        paragraphs = "".join(f"<p>{html.escape(part)}</p>\n" for part in text.split("\n"))
        message = letter_mail(writer, "relay@relay.test", "Solidarity", "")
        message.set_content(f"<html><body>\n{paragraphs}</body></html>\n", subtype="html", cte="8bit")
    else:
        message = letter_mail(writer, "relay@relay.test", "Solidarity", "")
        message.set_content(text, cte="8bit" if kind == "plain" else "quoted-printable")
    return message.as_bytes(policy=email.policy.SMTP)


def words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text))


def time_parse(raw: bytes, repeats: int) -> tuple[float, str]:
    started = time.perf_counter()
    for _ in range(repeats):
        text = letter_text(parse(raw))
    return (time.perf_counter() - started) / repeats * 1e6, text


def parsing(repeats: int) -> list[Parsed]:
    found = []
    for kind in ("plain", "html", "quoted-printable"):
        for letter_id, text in corpus_letters():
            raw = as_mail(text, kind)
            micros, out = time_parse(raw, repeats)
            found.append(Parsed(kind, letter_id, len(raw), micros, words(text) in words(out)))
    return found


def parsing_lines(found: list[Parsed], repeats: int) -> list[tuple[str, str]]:
    letters = len({p.letter_id for p in found})
    changed = sum(1 for p in found if not p.faithful)
    lines = [("parsing", f"{letters} corpus letters × 3 kinds, parse + letter_text, mean of {repeats} runs each; "
                         f"{len(found) - changed} of {len(found)} came out with every word of the letter")]
    for kind in ("plain", "html", "quoted-printable"):
        mine = [p for p in found if p.kind == kind]
        slowest = max(mine, key=lambda p: p.micros)
        unfaithful = [p.letter_id for p in mine if not p.faithful]
        lines.append((kind, f"{statistics.mean(p.micros for p in mine):,.0f} µs per mail (median "
                            f"{statistics.median(p.micros for p in mine):,.0f}); slowest {slowest.micros:,.0f} µs "
                            f"({slowest.letter_id}, {n(slowest.size)} bytes)"
                            + (f"; words changed in {', '.join(unfaithful)}" if unfaithful else "")))
    return lines


# --- the benchmark --------------------------------------------------------------------------------------------


async def email_network(subscribers: int, letters: int, repeats: int) -> Result:
    name = "Email, real Dovecot"
    title = (f"Email, real Dovecot: a letter to {n(subscribers)} subscribers at {PER_SECOND:g}/s, "
             f"{n(letters)} letters by mail at once, the corpus parsed")
    with temp_dir("relay-bench-8-") as tmp, tally_logs() as tally:
        mail, accepted = await asyncio.to_thread(start_mail_system)
        try:
            sent, received = await run_world(mail, accepted, tmp, subscribers, letters)
        finally:
            await asyncio.to_thread(mail.stop)
    lines = broadcast_lines(sent) + intake_lines(received)
    if CORPUS.exists():
        lines += parsing_lines(parsing(repeats), repeats)
    else:
        lines.append(("parsing", f"not measured: {CORPUS} is absent"))
    lines += [("bot log", line) for line in tally.top(4, skip=("starting", "stopped", "polling", "migration"))]
    p95 = percentile(received.latencies, 0.95)
    intake_text = (f"{received.letters / received.elapsed:.1f} letters/s, receipt p95 {p95:.2f} s" if received.elapsed
                   else f"{len(received.receipts_at)} of {received.letters} receipts in time")
    if sent.elapsed is None:
        return Result(8, name, f"{sent.reached} of {sent.subscribers} subscribers reached", GOAL, None,
                      details=intake_text, lines=lines, title=title)
    ratio = sent.elapsed / (subscribers / PER_SECOND)
    return Result(
        8, name, f"{ratio:.3f} × the minimum, {sent.duplicates} duplicates, {sent.missing} missing", GOAL,
        ratio <= GOAL_RATIO and sent.duplicates == 0 and sent.missing == 0,
        details=f"{sent.elapsed:.1f} s vs {subscribers / PER_SECOND:.1f} s minimum; {intake_text}",
        lines=lines, title=title,
    )


async def run_world(mail: MailSystem, accepted: StampedList, tmp: Path, subscribers: int,
                    letters: int) -> tuple[Broadcast, Intake]:
    readers = [mail.add_user(f"reader-{i}") for i in range(subscribers)]
    writers = [mail.add_user(f"writer-{i}") for i in range(letters)]
    first_writer = mail.add_user("writer-first")
    database = tmp / "relay.db"
    await subscribe_all(database, [reader.address for reader in readers])
    async with TelegramEmulator(TOKEN) as emu:
        mo = emu.add_user("Mo", username="mo")
        mods = emu.add_group("Moderators", members=[(mo, "administrator")], bot_status="administrator")
        world = World(mail, emu, mods, mo, mail.add_user("relay"), database)
        tracker = Tracker(accepted)
        relay = Relay(world.settings())  # rates from the settings, as deployed
        await relay.start()
        try:
            sent = await broadcast(world, relay, readers, first_writer, tracker,
                                   within=30 + 4 * subscribers / PER_SECOND)
            # A stalled read (Dovecot's next IDLE notice comes up to 2 minutes later) is cut off here: receipts
            # that did not come by then are reported as missing, and the run stays within its few minutes.
            received = await intake(world, writers, tracker, within=30 + letters / 5)
        finally:
            await relay.stop()
        sent.bare_rate, sent.bare_latency = await bare_sends(world, readers[:100], sent.concurrency)
    return sent, received

"""Fuzzing the whole bot through its real transports, with Hypothesis.

Telegram: generated updates are put into the emulator's getUpdates queue, so they travel as JSON over HTTP through
python-telegram-bot's ``Update.de_json`` and the bot's transport exactly as Telegram's would. Matrix: Synapse
refuses malformed or oversized events, so generated sync responses are parsed by nio (``SyncResponse.from_dict``)
and handed to the transport's sync-batch handler, the seam its sync loop uses.

A failure is what a person would notice, or what precedes it: a log record at ERROR or above or with a traceback
from any logger (the router's "handling X failed", PTB's "No error handlers are registered", asyncio's "Task
exception was never retrieved"), an exception out of the transport, an update queue that stops moving, and, at the
end of each test, a normal letter that gets no receipt.

Hypothesis runs in a worker thread and hands each example to the event loop the bot runs in, so the bot keeps
working between examples (as it would between updates) and each test can check afterwards that it still answers.
Every test prints one summary line (``pytest -s``) and records ``fuzz_cases`` for the JUnit report; ``CASES``
holds the counts. ``FUZZ_SCALE=5`` runs five times as many examples. ``FUZZ_KEEP_GOING=1`` does not stop at the
first failure (which Hypothesis then shrinks): it keeps the smallest example of every distinct failure and lists
them all at the end of the test.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import itertools
import logging
import os
import re
import tempfile
import time
import traceback
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nio import SyncResponse
from telegram import Update
from telegram.ext import ContextTypes, TypeHandler

from bot.app import Relay
from bot.config import Settings
from bot.pacing import Rates
from tests.emulators.telegram import Spec, TelegramEmulator
from tests.emulators.telegram_html import utf16_len
from tests.homeserver import Homeserver, fresh_name
from tests.matrix_people import Person, direct_room

# Hypothesis keeps caches (Unicode tables, constants) on disk even without an example database: not in the repo.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "solidarity-relay-hypothesis"))

pytest_plugins = ("tests.synapse_fixtures",)
# The Matrix tests share the session's Synapse (and its loop); the Telegram ones run there too, one loop for all.
pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "123456:TEST-relay-token"
# No pacing to speak of: every fuzzed letter puts a card into the one moderation room, and pacing is not tested here.
FAST = Rates(per_second=1000, private_interval=0.0, group_interval=0.0, channel_interval=0.0)
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
EXAMPLE_TIMEOUT = 60  # seconds one example may take before the run is declared stuck
SETTLE_TIMEOUT = 5  # seconds for the bot to take an update off the queue and handle it
# Shrinking replays examples against the running bot (Synapse round trips and all): after this long, the smallest
# failing example found so far is reported instead.
SHRINK_SECONDS = float(os.environ.get("FUZZ_SHRINK_SECONDS", "10"))
RECEIPT = r"#\d+\b"
STRANGERS = 60  # Telegram people with a private chat with the bot, besides Alice and Mo

KEEP_GOING = os.environ.get("FUZZ_KEEP_GOING", "") not in ("", "0")

CASES: Counter[str] = Counter()  # examples run per test (shrinking included), and details per test
FINDINGS: dict[str, str] = {}  # with FUZZ_KEEP_GOING: failure signature → the shortest report of it

T = TypeVar("T")
RecordProperty = Callable[[str, object], None]  # pytest's record_property fixture


# --- what went wrong, from the logs -----------------------------------------------------------------------------


class Trouble(logging.Handler):
    """Every record at ERROR or above, or carrying a traceback, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if (record.levelno >= logging.ERROR or record.exc_info) and not _nio_refusal(record):
            self.records.append(record)

    def since(self, mark: int) -> list[logging.LogRecord]:
        return self.records[mark:]


def _nio_refusal(record: logging.LogRecord) -> bool:
    # nio logs its own schema validation of an event at ERROR and drops the event: nio's property, not a crash.
    return record.name.startswith("nio") and record.getMessage().startswith("Error validating event")


def _ptb_parse_failure(record: logging.LogRecord) -> bool:
    """PTB could not turn the getUpdates answer into Update objects (and will fetch the same batch again)."""
    message = record.getMessage()
    return record.name.startswith("telegram") and (
        message.startswith("Error while parsing updates") or message.startswith("Something went wrong processing")
    )


def describe(records: list[logging.LogRecord], limit: int = 6) -> str:
    lines = []
    for record in records[:limit]:
        lines.append(f"{record.name} {record.levelname}: {_clip(record.getMessage(), 400)}")
        if record.exc_info and record.exc_info[1] is not None:
            formatted = traceback.format_exception(record.exc_info[1])
            lines += ["    " + _clip(line.rstrip(), 300) for line in "".join(formatted).splitlines()[-14:]]
    if len(records) > limit:
        lines.append(f"... and {len(records) - limit} more")
    return "\n".join(lines)


def signature(records: list[logging.LogRecord]) -> str:
    """What tells one failure from another: where it was raised, or what was logged."""
    for record in records:
        if record.exc_info and record.exc_info[1] is not None:
            return _where(record.exc_info[1])
    return _clip(re.sub(r"\d{3,}", "N", records[0].getMessage()), 160) if records else "no record"


def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    ours = [frame for frame in frames if "site-packages" not in frame.filename] or frames
    if not ours:
        return type(error).__name__
    last = ours[-1]
    return f"{type(error).__name__} at {'/'.join(Path(last.filename).parts[-2:])}:{last.lineno} in {last.name}"


def fail(kind: str, message: str) -> None:
    """A failure of this example: raised (Hypothesis shrinks it), or with FUZZ_KEEP_GOING kept for the end."""
    if not KEEP_GOING:
        raise AssertionError(message)
    if kind not in FINDINGS or len(message) < len(FINDINGS[kind]):
        FINDINGS[kind] = message


def findings_of(name: str) -> str:
    return "\n\n".join(f"[{kind}]\n{text}" for kind, text in FINDINGS.items() if kind.startswith(f"{name}: "))


def _clip(text: str, size: int) -> str:
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= size else f"{text[:size]}… ({len(text)} chars)"


def _short(value: Any, size: int = 1500) -> str:
    return _clip(repr(value), size)


@pytest.fixture
def trouble() -> Iterator[Trouble]:
    handler = Trouble()
    root = logging.getLogger()
    root.addHandler(handler)
    # The bot logs a failure's traceback at DEBUG (its ERROR line names only the place): keep it for the report.
    ours = [logging.getLogger(name) for name in ("bot", "handlers", "storage")]
    levels = [logger.level for logger in ours]
    for logger in ours:
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level in zip(ours, levels, strict=True):
            logger.setLevel(level)


# --- running Hypothesis next to the bot ---------------------------------------------------------------------------


class BotStopped(BaseException):
    """The bot no longer takes anything in. Every later example would fail as well, so shrinking could only
    mislead: a BaseException is what Hypothesis lets through at once, unshrunk."""


class ShrinkingStopped(BaseException):
    """SHRINK_SECONDS have passed since the first failure (a BaseException: Hypothesis stops at once)."""


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        deadline=None,
        database=None,  # nothing written into the repository; a failure prints its own reproduction
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                               HealthCheck.filter_too_much],
    )


async def fuzz(strategy: st.SearchStrategy[T], example: Callable[[T], Coroutine[Any, Any, None]],
               examples: int) -> None:
    """Run ``example`` on the running loop for every case Hypothesis draws from ``strategy``, from a worker
    thread: the loop (and the bot on it) keeps running between examples."""
    loop = asyncio.get_running_loop()
    first_failure: list[float] = []
    smallest: list[tuple[int, Exception]] = []

    @fuzz_settings(examples)
    @given(strategy)
    def property_(case: T) -> None:
        if first_failure and time.monotonic() - first_failure[0] > SHRINK_SECONDS:
            raise ShrinkingStopped
        future = asyncio.run_coroutine_threadsafe(example(case), loop)
        try:
            future.result(EXAMPLE_TIMEOUT)
        except Exception as error:
            if isinstance(error, TimeoutError):
                future.cancel()
            first_failure[:] = first_failure or [time.monotonic()]
            size = len(repr(case))
            if not smallest or size < smallest[0][0]:
                smallest[:] = [(size, error)]
            raise

    try:
        await asyncio.to_thread(property_)
    except BotStopped as stopped:
        raise AssertionError(f"the bot stopped working during the fuzzing: {stopped}") from None
    except ShrinkingStopped:
        error = smallest[0][1]
        raise AssertionError(f"(shrinking stopped after {SHRINK_SECONDS:g} s; the smallest failing example so far:)"
                             f"\n{error}") from error


def summary(name: str, started: float, record_property: RecordProperty) -> None:
    details = ", ".join(f"{key.split(':', 1)[1]} {count}" for key, count in sorted(CASES.items())
                        if key.startswith(f"{name}:"))
    line = f"fuzz {name}: {CASES[name]} cases in {time.monotonic() - started:.1f} s"
    if details:
        line += f" ({details})"
    print(line)
    record_property("fuzz_cases", CASES[name])
    record_property("fuzz_summary", line)


@pytest.fixture(scope="module", autouse=True)
def _print_totals() -> Iterator[None]:
    yield
    totals = {name: count for name, count in CASES.items() if ":" not in name}
    if totals:
        print("\nfuzz totals: " + ", ".join(f"{name} {count}" for name, count in totals.items()))


# --- text that has broken bots before -------------------------------------------------------------------------------

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u180e\u00ad\u034f"
ZWJ_EMOJI = ["👨‍👩‍👧‍👦", "🏳️‍🌈", "👩🏽‍🚀", "🧑‍🤝‍🧑", "❤️‍🔥", "👁️‍🗨️", "🏴‍☠️", "🇺🇦", "✊🏿", "🫱🏻‍🫲🏿",
             "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"]  # Scotland: tags
SCRIPTS = ["Estamos con ustedes", "Мы с вами", "معكم حتى النهاية", "אנחנו איתכם", "我们和你们在一起", "हम आपके साथ हैं",
           "เราอยู่กับคุณ", "ငါတို့ မင်းတို့နဲ့အတူ", "Biz siz bilan", "ᐃᓄᒃᑎᑐᑦ", "Z̴̢a̶l̸g̵o̷"]
ODD_PIECES = [
    *BIDI, *ZERO_WIDTH, *ZWJ_EMOJI, "\x00", "\x00\x00\x00", "\ufffd", "\uffff", "\ufffe", "\U0010ffff", "\u2028",
    "\u2029", "\r\n", "\r", "\t", "\x1b[31m", "\x7f", "<b>", "</a>", "<script>", "&", "&amp;", "&#0;", "&lt;",
    "@everyone", "@room", "@relay_test_bot", "@channel", "https://example.org/?a=1&b=2", "```", "*_~|", "\\",
    '"', "'", "{}", "{0}", "%s", "%(x)s", "$(id)", "'; DROP TABLE letters; --", "#1", "\u202eevil\u202c",
]
ODD_NUMBERS = ["1", "0", "-1", "+1", "01", "1.0", "1e3", "0x1f", "9" * 30, "2147483648", "١٢", "²", "①", "𝟙", "Ⅻ",
               "½", "NaN", "inf", "#1", "№1", "1,2", "1 2", "#", "", "1\x00", "1\u200b", "\u202e1", "-0", "٣"]
COMMANDS = ["start", "help", "withdraw", "forget", "subscribe", "unsubscribe", "id", "approve", "reject", "pending",
            "stats", "ban", "unban", "subscribers", "lang", "translation", "edit", "history", "START", "Approve",
            "nonsense", "", "a" * 33, "start@relay_test_bot", "approve@relay_test_bot", "start@other_bot",
            "approve@", "@relay_test_bot", "withdraw@relay_test_bot@x", "stärt", "ａｐｐｒｏｖｅ"]
SEPARATORS = [" ", "  ", "\n", "\t", "\u00a0", "\u3000", "\u200b", "", "\u2028"]
LANGUAGES = ["en", "es", "ru", "ar", "he", "zh-hans", "pt-br", "EN", "zz", "", "x" * 300, "../../../etc/passwd",
             "en\x00", "es_ES.UTF-8", "\u202een", "🇪🇸", "und", "C", "i-klingon"]
BIG_SIZES = [4096, 4097, 8192, 60_000, 60_001, 250_000, 1_000_000]

fragments: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(SCRIPTS),
    st.sampled_from(ODD_PIECES),
    st.text(max_size=20),  # anything but surrogates
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),  # unpaired surrogates
    st.text(st.characters(categories=["Mn", "Me"]), min_size=1, max_size=40),  # stacked combining marks
    st.text(st.characters(categories=["Cc", "Cf", "Co", "Zl", "Zp", "Zs"]), min_size=1, max_size=5),
    st.text(st.characters(min_codepoint=0x1F000, max_codepoint=0x1FAFF), min_size=1, max_size=5),
    st.text(st.characters(min_codepoint=0xE0000, max_codepoint=0xE007F), min_size=1, max_size=5),  # tags
)
short_texts = st.lists(fragments, max_size=6).map("".join)


def _sized(piece: str, size: int) -> str:
    return (piece * (size // len(piece) + 1))[:size]


big_texts = st.builds(_sized, fragments.filter(bool), st.sampled_from(BIG_SIZES))
command_texts = st.builds(
    lambda prefix, name, separator, args: prefix + name + (separator + " ".join(args) if args else ""),
    st.sampled_from(["/", "!"]),
    st.sampled_from(COMMANDS),
    st.sampled_from(SEPARATORS),
    st.lists(st.one_of(st.sampled_from(ODD_NUMBERS), short_texts), max_size=3),
)
letter_texts = st.one_of(
    short_texts, short_texts, command_texts, command_texts, big_texts,
    st.sampled_from(["/", "!", "/ we are with you", "!Basta ya", " ", "\n", "\u200b", "\x00", "/\x00", "/start\x00"]),
)
# JSON with nothing to do with what the field should hold; also much deeper than anything real.
odd_json: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from([2**64, -(2**70), 2**53 + 1]),
              st.floats(allow_nan=True, allow_infinity=True), short_texts),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(short_texts, children, max_size=3)),
    max_leaves=8,
)


def nested(depth: int) -> Any:
    """JSON ``depth`` levels deep: lists for odd depths, objects for even ones."""
    return reduce(lambda inner, _: [inner] if depth % 2 else {"a": inner}, range(depth), 0)


small_wrong_values = st.one_of(odd_json, st.integers(50, 300).map(nested))
wrong_values = st.one_of(small_wrong_values, big_texts)


def one_in(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws. Hypothesis favours the ends of a range (0 comes up ~2% of the time
    whatever the range), so a value from the middle is the one compared."""
    return draw(st.integers(1, n)) == n // 2 + 1


def _command_entities(text: str) -> list[dict[str, Any]]:
    """The bot_command entity a Telegram client adds to a message that starts with /word."""
    match = re.match(r"/[A-Za-z0-9_]{1,32}(@[A-Za-z0-9_]{1,64})?", text)
    return [{"type": "bot_command", "offset": 0, "length": utf16_len(match[0])}] if match else []


# --- Telegram: updates from the Bot API's own type descriptions ------------------------------------------------------

SPEC = Spec()
MAX_DEPTH = 3
# What the vendored spec cannot say: the values that tell a union's members apart, and a few closed sets.
DISCRIMINATOR_EXCEPTIONS = {"ChatMemberOwner": "creator", "ChatMemberBanned": "kicked"}
ENUMS: dict[tuple[str, str], list[Any]] = {
    ("Chat", "type"): ["private", "group", "supergroup", "channel"],
    ("Sticker", "type"): ["regular", "mask", "custom_emoji"],
    ("Poll", "type"): ["regular", "quiz"],
    ("MessageEntity", "type"): ["mention", "hashtag", "cashtag", "bot_command", "url", "email", "phone_number",
                                "bold", "italic", "underline", "strikethrough", "spoiler", "blockquote",
                                "expandable_blockquote", "code", "pre", "text_link", "text_mention", "custom_emoji"],
    ("InaccessibleMessage", "date"): [0],
}
# Fields the bot reads, or that change what a message is: drawn more often than the other hundred.
FAVOURED = {
    "Message": ["text", "from", "entities", "caption", "reply_to_message", "sender_chat", "photo", "sticker",
                "new_chat_members", "left_chat_member", "migrate_to_chat_id", "forward_origin", "document",
                "edit_date", "is_automatic_forward", "via_bot", "message_thread_id", "media_group_id"],
    "CallbackQuery": ["message", "data", "inline_message_id", "game_short_name"],
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _discriminators() -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for union, fact in SPEC.types.items():
        for member in fact.get("subtypes") or []:
            if member not in SPEC.types:
                continue  # a scalar or an array in the union
            strings = {f["name"] for f in SPEC.types[member]["fields"] if f["required"] and f["types"] == ["String"]}
            key = next((name for name in ("type", "status", "source") if name in strings), None)
            if key and member.startswith(union):
                found[member] = (key, DISCRIMINATOR_EXCEPTIONS.get(member, _snake(member[len(union):])))
    return found


DISCRIMINATORS = _discriminators()
Override = Callable[[int], st.SearchStrategy[Any]]


def _integers(name: str) -> st.SearchStrategy[int]:
    if name.endswith("date") or name in ("unix_time", "date"):
        return st.integers(0, 2**31 - 1)  # Unix time: Telegram's are 32-bit
    if name == "id" or name.endswith("_id"):
        # Telegram ids have up to 52 significant bits; chats are negative.
        return st.one_of(st.integers(-(2**52), 2**52), st.sampled_from([0, -1, 1, 777000, 2**31, -1_000_000_000_001]))
    return st.integers(-(2**31), 2**31)


def _scalar(type_name: str, name: str) -> st.SearchStrategy[Any]:
    if type_name == "Integer":
        return _integers(name)
    if type_name == "Float":
        return st.floats(-1e9, 1e9, allow_nan=False)
    if type_name == "Boolean":
        return st.booleans()
    if type_name == "True":
        return st.just(True)
    if name in ("text", "caption"):
        return letter_texts
    if name == "language_code":
        return st.one_of(st.sampled_from(LANGUAGES), short_texts)
    return short_texts  # String, InputFile


SCALARS = frozenset({"Integer", "Float", "Boolean", "True", "String", "InputFile"})


def _shallow(type_name: str) -> bool:
    """A scalar, or an object whose required fields are all scalars: where a recursive type can stop."""
    if type_name in SCALARS:
        return True
    fact = SPEC.types.get(type_name)
    return bool(fact) and not fact.get("subtypes") and all(
        t in SCALARS for f in fact["fields"] if f["required"] for t in f["types"])


def spec_values(type_name: str, name: str, depth: int,
                overrides: dict[tuple[str, str], Override]) -> st.SearchStrategy[Any]:
    if type_name.startswith("Array of "):
        if depth >= MAX_DEPTH:
            return st.just([])
        inner = type_name[len("Array of "):]
        return st.lists(spec_values(inner, name, depth + 1, overrides), max_size=2)
    if type_name in SCALARS:
        return _scalar(type_name, name)
    return spec_objects(type_name, overrides, depth)


def spec_objects(type_name: str, overrides: dict[tuple[str, str], Override] | None = None,
                 depth: int = 0) -> st.SearchStrategy[Any]:
    """Instances of a Bot API type that the vendored spec accepts: every required field, a few optional ones.

    Past MAX_DEPTH no optional field is added and a union takes a member that ends there, so recursive types
    (a RichText holds RichText) stay finite.
    """
    overrides = overrides or {}
    if depth > 4 * MAX_DEPTH:
        raise RuntimeError(f"the Bot API type {type_name} does not end: the generator needs a way out")
    fact = SPEC.types[type_name]
    if fact.get("subtypes"):
        members = fact["subtypes"]
        if depth >= MAX_DEPTH:
            members = [member for member in members if _shallow(member)] or members
        return st.deferred(lambda: st.one_of([spec_values(member, "", depth + 1, overrides) for member in members]))

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        fields = {f["name"]: f for f in fact["fields"]}
        optional = sorted(name for name, f in fields.items() if not f["required"])
        chosen: set[str] = set()
        if optional and depth < MAX_DEPTH:
            chosen = draw(st.sets(st.sampled_from(optional), max_size=3 if depth == 0 else 1))
            favoured = [name for name in FAVOURED.get(type_name, []) if name in fields]
            if favoured:
                chosen |= draw(st.sets(st.sampled_from(favoured), max_size=3))
        value: dict[str, Any] = {}
        for name, f in fields.items():
            if not f["required"] and name not in chosen:
                continue
            key = (type_name, name)
            if key in overrides:
                value[name] = draw(overrides[key](depth))
            elif key in ENUMS:
                value[name] = draw(st.sampled_from(ENUMS[key]))
            else:
                value[name] = draw(st.one_of([spec_values(t, name, depth + 1, overrides) for t in f["types"]]))
        if type_name in DISCRIMINATORS:
            key_name, constant = DISCRIMINATORS[type_name]
            value[key_name] = constant
        return value

    return build()


@dataclass(frozen=True)
class TelegramPools:
    """The world the generated updates refer to: the emulator's people and chats, so many updates reach the
    handlers that matter (the moderation room, a supporter's private chat, a subscribed channel)."""

    bot: dict[str, Any]
    mo: dict[str, Any]
    alice: dict[str, Any]
    mods: dict[str, Any]
    channel: dict[str, Any]
    strangers: list[dict[str, Any]]  # people with a private chat, who may write letters


def _private_chat(user: dict[str, Any]) -> dict[str, Any]:
    return {"id": user["id"], "type": "private", "first_name": user["first_name"]}


def telegram_updates(pools: TelegramPools, texts: st.SearchStrategy[str] = letter_texts
                     ) -> st.SearchStrategy[dict[str, Any]]:
    """Updates that Telegram could send (the spec accepts them), each with exactly one kind, odd in every other
    way: texts, commands, ids, optional fields, nested messages."""
    users = st.one_of(st.sampled_from(pools.strangers), st.sampled_from(pools.strangers),
                      st.sampled_from([pools.alice, pools.mo]))
    known_chats = st.sampled_from([pools.mods, pools.channel, _private_chat(pools.alice)])

    def users_or_any(depth: int) -> st.SearchStrategy[Any]:
        return st.one_of(users, users, spec_objects("User", {}, depth))

    def chats_or_any(depth: int) -> st.SearchStrategy[Any]:
        return st.one_of(known_chats, known_chats, spec_objects("Chat", {}, depth))

    callback_data = st.one_of(
        st.builds(lambda verb, number: f"{verb}:{number}", st.sampled_from(["approve", "reject", "react", "x", ""]),
                  st.one_of(st.sampled_from(ODD_NUMBERS), st.integers(-5, 50).map(str))),
        short_texts, st.sampled_from(["approve", ":", "approve:1:2", "approve:1 ", "react:✅"]),
    )
    overrides: dict[tuple[str, str], Override] = {
        ("Message", "from"): users_or_any,
        ("Message", "chat"): chats_or_any,
        ("CallbackQuery", "from"): users_or_any,
        ("CallbackQuery", "data"): lambda depth: callback_data,
        ("ChatMemberUpdated", "chat"): chats_or_any,
        ("ChatMemberUpdated", "from"): users_or_any,
        ("Message", "text"): lambda depth: texts,
        ("Message", "caption"): lambda depth: texts,
    }
    messages = spec_objects("Message", overrides)

    @st.composite
    def message_update(draw: st.DrawFn) -> dict[str, Any]:
        kind = draw(st.sampled_from(["message", "message", "message", "edited_message", "channel_post",
                                     "edited_channel_post", "business_message", "guest_message"]))
        message = draw(messages)
        if draw(st.booleans()):  # the shape real people's messages have, odd text and all
            user = draw(users)
            message["from"], message["chat"] = user, _private_chat(user)
        if kind.endswith("channel_post"):
            message.pop("from", None)
            message["chat"] = message["sender_chat"] = pools.channel
        if draw(st.integers(0, 4)) and "text" not in message:
            message["text"] = draw(texts)
        if isinstance(message.get("text"), str) and draw(st.booleans()):
            message["entities"] = _command_entities(message["text"])
        if kind.startswith("edited"):
            message["edit_date"] = draw(st.integers(0, 2**31 - 1))
        return {kind: message}

    @st.composite
    def press(draw: st.DrawFn) -> dict[str, Any]:
        query = draw(spec_objects("CallbackQuery", overrides))
        if draw(st.integers(0, 3)):  # a press on one of the bot's cards, or on what could be one
            query["message"] = {"message_id": draw(st.integers(1, 40)), "date": draw(st.integers(0, 2**31 - 1)),
                                "chat": pools.mods, "from": pools.bot, "text": draw(short_texts)}
            query["data"] = draw(callback_data)
        return {"callback_query": query}

    @st.composite
    def membership(draw: st.DrawFn) -> dict[str, Any]:
        kind = draw(st.sampled_from(["my_chat_member", "my_chat_member", "chat_member"]))
        change = draw(spec_objects("ChatMemberUpdated", overrides))
        if kind == "my_chat_member":
            change["new_chat_member"]["user"] = pools.bot
        return {kind: change}

    update_fields = {f["name"]: f["types"][0] for f in SPEC.types["Update"]["fields"] if f["name"] != "update_id"}
    other_kinds = sorted(name for name, type_name in update_fields.items() if type_name not in (
        "Message", "CallbackQuery", "ChatMemberUpdated"))
    others = st.sampled_from(other_kinds).flatmap(
        lambda kind: spec_objects(update_fields[kind], overrides).map(lambda value: {kind: value}))
    return st.one_of(message_update(), message_update(), message_update(), press(), membership(), others,
                     st.just({}))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if path:
        yield path
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _paths(inner, (*path, index))


def _mutated(value: Any, path: tuple[Any, ...], action: str, replacement: Any, new_key: str) -> Any:
    """A copy of ``value`` with the thing at ``path`` deleted, replaced, or given an unknown key."""
    if not path:
        return replacement
    head, rest = path[0], path[1:]
    changed = dict(value) if isinstance(value, dict) else list(value)
    if not rest and action == "delete":
        del changed[head]
    elif not rest and action == "add" and isinstance(changed[head], dict):
        changed[head] = {**changed[head], new_key: replacement}
    else:
        changed[head] = _mutated(value[head], rest, action, replacement, new_key)
    return changed


def malformed(updates: st.SearchStrategy[dict[str, Any]],
              wrong: st.SearchStrategy[Any] = wrong_values) -> st.SearchStrategy[dict[str, Any]]:
    """Updates no Telegram sends: fields missing, of the wrong type, unknown, two kinds at once, deep nesting."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        update = draw(updates)
        for _ in range(draw(st.integers(1, 3))):
            paths = list(_paths(update))
            if not paths or one_in(draw, 10):
                update = {**update, draw(st.sampled_from(["message", "callback_query", "my_chat_member",
                                                          "edited_message", "channel_post"])): draw(wrong)}
                continue
            path = draw(st.sampled_from(paths))
            action = draw(st.sampled_from(["delete", "delete", "replace", "replace", "add"]))
            update = _mutated(update, path, action, draw(wrong), draw(short_texts))
        return update

    return build()


# --- Telegram: the bot against the emulator -------------------------------------------------------------------------


async def until(condition: Callable[[], bool], within: float = SETTLE_TIMEOUT) -> bool:
    """Whether ``condition`` came true within ``within`` seconds (a deadline for polled state, not a timeout
    around one awaitable)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    # Polled: what it watches changes in callbacks of PTB, the scheduler and logging, which signal nothing.
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


@dataclass(frozen=True)
class Fed:
    """What became of updates given to the bot."""

    updates: list[dict[str, Any]]
    ids: list[int]
    records: list[logging.LogRecord]  # trouble logged meanwhile
    wedged: bool  # PTB could not parse the batch and would fetch it forever (dropped since)


@dataclass
class TelegramWorld:
    emu: TelegramEmulator
    relay: Relay
    trouble: Trouble
    pools: TelegramPools
    # Update ids the transport's handler has returned from (or raised in): the event is then in the bot's intake.
    handled: set[int] = field(default_factory=set)
    # What was fed last: when the bot stops, the update that stopped it may be one that seemed handled.
    recent: deque[list[dict[str, Any]]] = field(default_factory=lambda: deque(maxlen=3))

    async def feed(self, updates: list[dict[str, Any]]) -> Fed:
        """Queue updates for getUpdates; wait until the bot has handled them or something went wrong."""
        mark = len(self.trouble.records)
        self.recent.append(updates)
        ids = [self.emu.inject_raw_update(update) for update in updates]
        handled = await until(lambda: set(ids) <= self.handled or bool(self.trouble.since(mark)))
        if not handled and not self.unconfirmed(ids) and not await self.alive():
            earlier = "\n".join(f"  {_short(batch, 600)}" for batch in list(self.recent)[:-1])
            raise BotStopped(f"updates are fetched but no longer handled; this batch waited in vain: "
                             f"{_short(updates, 600)}\nthe batches before it:\n{earlier}\n{self.report()}\n"
                             f"{describe(self.trouble.since(mark))}")
        # Handled can come before confirmed: PTB confirms an update with the getUpdates call after it.
        await until(lambda: not self.unconfirmed(ids) or bool(self.trouble.since(mark)))
        wedged = bool(self.unconfirmed(ids)) and any(_ptb_parse_failure(r) for r in self.trouble.since(mark))
        if wedged:  # PTB fetches the same batch again and again: unstick it, so later examples mean something
            await self.drop_pending_updates()
        await self.settle()
        return Fed(updates, ids, self.trouble.since(mark), wedged)

    async def alive(self) -> bool:
        """Whether the bot still handles an ordinary update (Alice asks for help)."""
        probe = {"message": {"message_id": 2**40 + len(self.handled), "date": int(time.time()),
                             "from": self.pools.alice, "chat": _private_chat(self.pools.alice), "text": "/help"}}
        update_id = self.emu.inject_raw_update(probe)
        return await until(lambda: update_id in self.handled, SETTLE_TIMEOUT)

    async def settle(self) -> None:
        """Wait (a while) for the intake to finish the events and for timers the handlers set (a letter's joining
        window): what goes wrong there belongs to this example. Private attributes, looked up leniently: if they
        go, only the attribution of a failure to its example suffers, not the checks."""
        transport = self.relay.networks["telegram"]
        await until(lambda: not getattr(transport, "_handling", None)
                    and not getattr(self.relay.scheduler, "_tasks", None))

    def report(self) -> str:
        """What the emulator saw last: for a failure's message."""
        calls = [f"  {method} {_short(params, 200)}" for method, params in self.emu.calls[-6:]]
        errors = [f"  {method} → {status} {description}" for method, status, description in self.emu.errors[-4:]]
        application = self.relay.networks["telegram"].application
        # PTB's own task that hands fetched updates to the handlers (private, so looked up leniently).
        fetcher = getattr(application, "_Application__update_fetcher_task", None)
        died = fetcher.exception() if fetcher is not None and fetcher.done() and not fetcher.cancelled() else None
        return "\n".join([f"emulator calls ({len(self.emu.calls)} in all), latest:", *calls,
                          "latest errors answered:", *errors,
                          f"updater running: {application.updater and application.updater.running}; "
                          f"PTB's update fetcher: {'ended by ' + repr(died) if died else 'running'}"])

    def unconfirmed(self, ids: list[int]) -> list[dict[str, Any]]:
        return [update for update in self.emu.pending_updates if update["update_id"] in ids]

    async def drop_pending_updates(self) -> None:
        """What an operator does to a bot stuck on an update: deleteWebhook with drop_pending_updates."""
        async with aiohttp.ClientSession() as session:
            url = f"{self.emu.api_root}/bot{TOKEN}/deleteWebhook"
            async with session.post(url, json={"drop_pending_updates": True}) as response:
                assert response.status == 200

    async def still_answers(self, name: str) -> str:
        """A new supporter's ordinary letter gets a receipt with its number."""
        zoe = self.emu.add_user(f"Zoe {name}", language_code="en")
        self.emu.user_sends(zoe, "From the harbour workers: we stand with you, today and every day.")

        def receipt() -> list[str]:
            return [m["text"] for m in self.emu.sent_by_bot(zoe) if re.search(RECEIPT, m.get("text", ""))]

        (text,) = await self.emu.wait_for(receipt, 20, what="a receipt for a normal letter after the fuzzing")
        return text


@pytest_asyncio.fixture(loop_scope="session")
async def telegram(tmp_path: Path, trouble: Trouble) -> AsyncIterator[TelegramWorld]:
    # self_check off: the emulator would refuse to answer getUpdates with an update the spec does not allow.
    async with TelegramEmulator(TOKEN, self_check=False) as emu:
        mo = emu.add_user("Mo", username="mo")
        alice = emu.add_user("Alice", username="alice_at_risk", language_code="en")
        # Many writers, each sending a few messages: one person's messages are rationed by the bot's intake
        # (a burst, then one a second), which would make a fuzzer that always writes as Alice crawl.
        names = ["\u202eecilA", "ᐃᓄᒃ", "\x00", "🏳️‍🌈", "Zoë", "م", "\u200b", "Ana María"]
        languages = ["ar", None, "xx", "es", "en", "fa", "", "pt-br"]
        strangers = [emu.add_user(f"{names[n % len(names)]} {n}", language_code=languages[n % len(languages)])
                     for n in range(STRANGERS)]
        for person in (alice, mo, *strangers):
            emu.start_private_chat(person)  # the bot may answer them: they pressed Start
        mods = emu.add_group("Moderators", members=[(mo, "member")], bot_status="administrator")
        channel = emu.add_channel("News", username="news")
        settings = Settings.from_env({
            "TELEGRAM_TOKEN": TOKEN,
            "TELEGRAM_API_URL": emu.api_root,
            "TELEGRAM_MODERATION_CHAT": str(mods["id"]),
            "DATABASE": str(tmp_path / "relay.db"),
            # No joining window: a letter is answered while its example runs, so a failure is that example's.
            "LETTER_JOIN_SECONDS": "0",
            "TRANSLATOR": "none",
        })
        relay = Relay(settings, rates={"telegram": FAST})
        await relay.start()
        try:
            world = TelegramWorld(emu, relay, trouble, TelegramPools(emu.bot, mo, alice, mods, channel, strangers))

            async def handled(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
                world.handled.add(update.update_id)

            # A later group runs once the transport's handler has returned (or raised): the "handled" signal.
            relay.networks["telegram"].application.add_handler(TypeHandler(Update, handled), group=1)
            emu.user_sends(mo, "/subscribe @news en", chat=mods)  # approved letters then go somewhere
            await emu.wait_for(lambda: any("News" in m.get("text", "") for m in emu.sent_by_bot(mods)),
                               what="the channel subscribed")
            assert not trouble.records, describe(trouble.records)
            yield world
        finally:
            await relay.stop()


def _check_handled(world: TelegramWorld, name: str, fed: Fed) -> None:
    if fed.wedged:
        failures = [record for record in fed.records if _ptb_parse_failure(record)]
        fail(f"{name}: wedged", f"polling was stuck on an update PTB cannot parse: no later update reached the bot "
             f"({len(failures)} parse failures logged before the test dropped the pending updates; PTB retries at "
             f"once, forever): {_short(fed.updates)}\n{describe(failures[:1])}")
    elif fed.records:
        fail(f"{name}: {signature(fed.records)}",
             f"the bot logged trouble for {_short(fed.updates)}:\n{describe(fed.records)}")
    elif world.unconfirmed(fed.ids) or not set(fed.ids) <= world.handled:
        fail(f"{name}: not handled", f"updates not handled within {SETTLE_TIMEOUT} s: {_short(fed.updates)}\n"
                                     f"{world.report()}")


def parses(update: dict[str, Any], bot: Any) -> bool:
    """Whether PTB makes an Update of it (as its getUpdates does, with the bot's own Bot object)."""
    try:
        Update.de_json(copy.deepcopy({"update_id": 1, **update}), bot)
    except Exception:
        return False
    return True


async def _end(world: TelegramWorld, name: str, minimum: int) -> None:
    assert CASES[name] >= minimum, f"only {CASES[name]} cases ran"
    gc.collect()  # "Task exception was never retrieved" is logged when the task is collected
    await asyncio.sleep(0.05)
    receipt = await world.still_answers(name)
    assert "#" in receipt
    assert not findings_of(name), f"distinct failures:\n{findings_of(name)}"
    if not KEEP_GOING:  # otherwise the findings above stand for these records
        assert not world.trouble.records, describe(world.trouble.records)


async def test_telegram_odd_but_valid_updates(telegram: TelegramWorld, record_property: RecordProperty) -> None:
    """Anything the Bot API spec allows, however odd, is handled without an error, and the bot keeps answering."""
    name = "telegram-valid"
    started = time.monotonic()
    updates = telegram_updates(telegram.pools)

    async def example(batch: list[dict[str, Any]]) -> None:
        CASES[name] += 1
        CASES[f"{name}:updates"] += len(batch)
        for update in batch:
            problem = SPEC.check({"update_id": 1, **update}, ["Update"], "")
            assert problem is None, f"the generator made an update the spec refuses ({problem}): {_short(update)}"
        _check_handled(telegram, name, await telegram.feed(batch))

    try:
        await fuzz(st.lists(updates, min_size=1, max_size=3), example, 150)
    finally:  # the count is worth seeing when it failed too
        summary(name, started, record_property)
    await _end(telegram, name, 100)


async def test_telegram_odd_letters_and_commands(telegram: TelegramWorld, record_property: RecordProperty) -> None:
    """Supporters and moderators type anything (1 MB, surrogates, bidi, NUL, odd numbers) in the real chats."""
    name = "telegram-texts"
    started = time.monotonic()
    pools = telegram.pools
    message_ids = itertools.count(1)
    places = st.one_of(
        st.sampled_from([(person, _private_chat(person)) for person in pools.strangers]),
        st.sampled_from([(pools.mo, pools.mods), (pools.alice, pools.mods), (pools.mo, _private_chat(pools.mo)),
                         (pools.alice, _private_chat(pools.alice))]),
    )
    cases = st.tuples(places, letter_texts, st.sampled_from(["message", "message", "message", "edited_message"]),
                      st.integers(1, 60))

    async def example(case: tuple[tuple[dict[str, Any], dict[str, Any]], str, str, int]) -> None:
        (person, chat), text, kind, edited = case
        CASES[name] += 1
        CASES[f"{name}:{kind}"] += 1
        CASES[f"{name}:over 60,000 characters"] += len(text) > 60_000
        message: dict[str, Any] = {"message_id": next(message_ids), "date": int(time.time()), "chat": chat,
                                   "from": person, "text": text}
        if kind == "edited_message":  # one of the earlier messages, changed
            message.update(message_id=edited, edit_date=int(time.time()))
        if entities := _command_entities(text):
            message["entities"] = entities
        _check_handled(telegram, name, await telegram.feed([{kind: message}]))

    try:
        await fuzz(cases, example, 150)
    finally:  # the count is worth seeing when it failed too
        summary(name, started, record_property)
    await _end(telegram, name, 100)


async def test_telegram_malformed_updates_do_not_break_the_transport(telegram: TelegramWorld,
                                                                      record_property: RecordProperty) -> None:
    """Updates no Telegram sends, which PTB still turns into Update objects (wrong types, unknown fields,
    missing optional parts): the transport must not raise on them. The ones PTB cannot parse at all are left to
    test_telegram_unparsable_update_does_not_wedge_polling."""
    name = "telegram-malformed"
    started = time.monotonic()
    bot = telegram.relay.networks["telegram"].bot

    async def example(update: dict[str, Any]) -> None:
        CASES[name] += 1
        if not parses(update, bot):
            CASES[f"{name}:unparsable, not sent"] += 1
            return
        CASES[f"{name}:sent"] += 1
        _check_handled(telegram, name, await telegram.feed([update]))

    try:
        await fuzz(malformed(telegram_updates(telegram.pools)), example, 150)
    finally:  # the count is worth seeing when it failed too
        summary(name, started, record_property)
    await _end(telegram, name, 100)


async def test_telegram_unparsable_update_does_not_wedge_polling(telegram: TelegramWorld,
                                                                 record_property: RecordProperty) -> None:
    """One update PTB cannot parse (a required field missing) must not stop every later update: the bot still
    takes the next one off the queue."""
    name = "telegram-unparsable"
    started = time.monotonic()
    bot = telegram.relay.networks["telegram"].bot
    pools = telegram.pools

    async def example(update: dict[str, Any]) -> None:
        CASES[name] += 1
        person = pools.strangers[CASES[name] % len(pools.strangers)]
        normal = {"message": {"message_id": 10**6 + CASES[name], "date": int(time.time()), "from": person,
                              "chat": _private_chat(person), "text": "/help"}}
        fed = await telegram.feed([update, normal])
        CASES[f"{name}:wedged"] += fed.wedged
        _check_handled(telegram, name, fed)

    # Small values only: PTB logs the whole batch it could not parse, at every retry.
    updates = telegram_updates(pools, st.one_of(short_texts, command_texts))
    try:
        await fuzz(malformed(updates, small_wrong_values).filter(lambda update: not parses(update, bot)), example, 25)
    finally:  # the count is worth seeing when it failed too
        summary(name, started, record_property)
    await _end(telegram, name, 20)


# --- Matrix: sync responses through nio and the transport -----------------------------------------------------------


@dataclass(frozen=True)
class MatrixPools:
    bot: str
    alice: str
    mo: str
    dm: str  # Alice's direct chat with the bot
    mods: str
    card: str  # the event id of a card in the moderation room
    letter: str  # the event id of Alice's letter in her direct chat


def matrix_syncs(p: MatrixPools) -> st.SearchStrategy[dict[str, Any]]:
    """Sync responses nio accepts as a whole, with events of every kind and content inside."""
    strangers = st.integers(0, 10**6).map(lambda n: f"@fuzz-{n}:relay.test")
    # Mostly people the bot has never seen: the intake rations one person's messages (a burst, then one a second)
    # and the transport waits for its batch, so a fuzzer writing as Alice would mostly wait.
    senders = st.one_of(strangers, strangers, strangers, strangers, st.sampled_from([p.alice, p.mo, p.mo, p.bot]),
                        st.sampled_from(["@:relay.test", "@\u202eecila:relay.test", "@a:b:c", "@x:[::1]:8448",
                                         "@" + "a" * 255 + ":relay.test"]),
                        short_texts.map(lambda text: f"@{text}:relay.test"))
    event_ids = st.one_of(st.sampled_from([p.card, p.letter]), st.uuids().map(lambda u: f"${u.hex}"), short_texts)
    rooms = st.one_of(st.just(p.dm), st.just(p.dm), st.just(p.dm), st.just(p.dm), st.just(p.mods),
                      st.integers(0, 10**6).map(lambda n: f"!fz{n}:relay.test"),
                      st.sampled_from(["", "!", "#alias:relay.test", "!a/b?c#d:relay.test", "!..:relay.test"]),
                      short_texts.map(lambda text: f"!{text}:relay.test"))
    keys = st.one_of(st.sampled_from(["✅", "❌", "✅\ufe0f", "❌\ufe0f", "✔️", "👍", "", "✅✅"]), short_texts)
    # Mostly shaped as the spec says (so nio passes them on), odd in one place or another.
    def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any] = odd_json) -> st.SearchStrategy[Any]:
        return st.one_of(usual, usual, usual, odd)

    relation = st.fixed_dictionaries({}, optional={
        "rel_type": mostly(st.sampled_from(["m.replace", "m.annotation", "m.thread", "m.reference"]), short_texts),
        "event_id": mostly(event_ids),
        "key": mostly(keys),
        "m.in_reply_to": mostly(st.fixed_dictionaries({"event_id": event_ids})),
        "is_falling_back": odd_json,
    })
    annotation = st.fixed_dictionaries({"rel_type": mostly(st.just("m.annotation"), short_texts),
                                        "event_id": mostly(event_ids), "key": mostly(keys)})
    odd_msgtypes = st.sampled_from(["m.notice", "m.emote", "m.image", "m.file", "m.audio", "m.video", "m.location",
                                    "m.key.verification.request", "m.server_notice", "org.example.odd", ""])
    msgtypes = st.one_of(st.just("m.text"), st.just("m.text"), mostly(odd_msgtypes, st.one_of(short_texts, odd_json)))
    bodies = mostly(letter_texts)
    new_content = st.fixed_dictionaries({"msgtype": msgtypes, "body": bodies},
                                        optional={"formatted_body": mostly(letter_texts)})
    message_content = st.fixed_dictionaries({"msgtype": msgtypes, "body": bodies}, optional={
        "format": mostly(st.just("org.matrix.custom.html"), st.one_of(short_texts, odd_json)),
        "formatted_body": mostly(letter_texts),
        "m.relates_to": st.one_of(relation, st.just({"rel_type": "m.replace"}).flatmap(
            lambda base: st.fixed_dictionaries({**{k: st.just(v) for k, v in base.items()},
                                                "event_id": mostly(event_ids)})), odd_json),
        "m.new_content": mostly(new_content),
        "url": mostly(st.just("mxc://relay.test/abc"), st.one_of(short_texts, odd_json)),
        "info": odd_json,
        "m.mentions": odd_json,
    })
    contents = {
        "m.room.message": message_content,
        "m.reaction": mostly(st.fixed_dictionaries({"m.relates_to": mostly(annotation, relation)}),
                             st.dictionaries(short_texts, odd_json, max_size=2)),
        "m.room.redaction": st.fixed_dictionaries({}, optional={"redacts": mostly(event_ids),
                                                                "reason": mostly(short_texts)}),
        "m.room.member": st.fixed_dictionaries(
            {"membership": mostly(st.sampled_from(["join", "leave", "invite", "ban", "knock"]), short_texts)},
            optional={"displayname": mostly(short_texts), "is_direct": odd_json}),
        "m.room.encrypted": st.dictionaries(short_texts, odd_json, max_size=4),
        "m.sticker": st.dictionaries(short_texts, odd_json, max_size=4),
        "m.room.create": st.dictionaries(short_texts, odd_json, max_size=4),
        "m.room.power_levels": st.dictionaries(short_texts, odd_json, max_size=4),
    }
    state_kinds = {"m.room.member", "m.room.create", "m.room.power_levels"}

    @st.composite
    def event(draw: st.DrawFn) -> Any:
        if one_in(draw, 250):
            return draw(odd_json)  # not an event at all (nio gives up on the whole batch)
        kind = draw(st.one_of(st.sampled_from(sorted(contents)), st.sampled_from(["m.room.message"] * 4),
                              short_texts))
        value: dict[str, Any] = {
            "type": kind,
            "event_id": draw(event_ids),
            "sender": draw(senders),
            "origin_server_ts": draw(st.one_of(st.integers(0, 2**53), st.just(int(time.time() * 1000)))),
            "content": draw(contents.get(kind, st.dictionaries(short_texts, odd_json, max_size=4))),
        }
        if kind in state_kinds or one_in(draw, 10):
            value["state_key"] = draw(mostly(senders, short_texts) if kind == "m.room.member" else short_texts)
        if kind == "m.room.redaction" and not one_in(draw, 4):
            value["redacts"] = draw(mostly(event_ids))  # room versions before 11 keep it outside the content
        if one_in(draw, 6):
            value["unsigned"] = draw(st.one_of(st.dictionaries(short_texts, odd_json, max_size=3),
                                               st.fixed_dictionaries({"transaction_id": short_texts})))
        if one_in(draw, 16):  # one core field odd: nio should make a BadEvent of it
            value[draw(st.sampled_from(["type", "event_id", "sender", "origin_server_ts", "content"]))] = draw(odd_json)
        return value

    events = st.lists(event(), min_size=1, max_size=4)
    # Presence, receipts, typing, account data, to-device: not what the bot reads, but in the same batch.
    loose_events = st.fixed_dictionaries(
        {"type": st.one_of(st.sampled_from(["m.presence", "m.typing", "m.receipt", "m.direct", "m.fully_read"]),
                           short_texts),
         "sender": senders, "content": st.dictionaries(short_texts, odd_json, max_size=3)})
    joined = st.dictionaries(rooms, st.fixed_dictionaries(
        {"timeline": st.fixed_dictionaries({"events": events}, optional={"limited": st.booleans(),
                                                                         "prev_batch": short_texts})},
        optional={"state": st.fixed_dictionaries({"events": st.lists(event(), max_size=2)}),
                  "ephemeral": st.fixed_dictionaries({"events": st.lists(loose_events, max_size=2)}),
                  "account_data": st.fixed_dictionaries({"events": st.lists(loose_events, max_size=2)}),
                  "summary": st.fixed_dictionaries({}, optional={"m.joined_member_count": st.integers(-5, 5)})}),
        min_size=1, max_size=2)
    invited = st.dictionaries(rooms, st.fixed_dictionaries({"invite_state": st.fixed_dictionaries(
        {"events": st.lists(event(), max_size=2)})}), max_size=1)
    left = st.dictionaries(rooms, st.fixed_dictionaries({"timeline": st.fixed_dictionaries({"events": events})}),
                           max_size=1)
    sections = st.fixed_dictionaries({"join": joined}, optional={"invite": invited, "leave": left})
    return st.fixed_dictionaries({"next_batch": st.just("s_fuzz"), "rooms": sections}, optional={
        "presence": st.fixed_dictionaries({"events": st.lists(loose_events, max_size=2)}),
        "account_data": st.fixed_dictionaries({"events": st.lists(loose_events, max_size=2)}),
        "to_device": st.fixed_dictionaries({"events": st.lists(loose_events, max_size=2)}),
    })


@dataclass
class MatrixWorld:
    relay: Relay
    trouble: Trouble
    pools: MatrixPools
    bea: Person  # writes the normal letter at the end, from her own direct chat
    bea_dm: str


@pytest_asyncio.fixture(loop_scope="session")
async def matrix(homeserver: Homeserver, tmp_path: Path, trouble: Trouble) -> AsyncIterator[MatrixWorld]:
    bot = await homeserver.register(fresh_name("relay"), exempt=True)
    mo = await homeserver.register(fresh_name("mo"), displayname="Mo")
    alice = await homeserver.register(fresh_name("alice"), displayname="Alice")
    bea = await homeserver.register(fresh_name("bea"), displayname="Bea")
    mods = await mo.create_room(name="Moderators", invite=[bot.user_id])
    await bot.close()  # the bot logs in by itself, with its own device
    settings = Settings.from_env({
        "MATRIX_HOMESERVER": homeserver.url,
        "MATRIX_USER": bot.user_id,
        "MATRIX_PASSWORD": bot.password,
        "MATRIX_MODERATION_ROOM": mods,
        "DATABASE": str(tmp_path / "relay.db"),
        "LETTER_JOIN_SECONDS": "0",
        "TRANSLATOR": "none",
    })
    relay = Relay(settings, rates={"matrix": FAST})
    await relay.start()
    try:
        dm = await direct_room(alice, bot.user_id)
        letter = await alice.send_text(dm, "A first letter, so there is a card to react to.")
        await alice.wait_for_text(dm, bot.user_id, RECEIPT)
        await mo.wait_for_text(mods, bot.user_id, r"^📨 Letter #1 ")
        card = next(e["event_id"] for e in await mo.messages(mods)
                    if e.get("sender") == bot.user_id and str(e.get("content", {}).get("body", "")).startswith("📨"))
        bea_dm = await direct_room(bea, bot.user_id)
        assert not trouble.records, describe(trouble.records)
        pools = MatrixPools(bot.user_id, alice.user_id, mo.user_id, dm, mods, card, letter)
        yield MatrixWorld(relay, trouble, pools, bea, bea_dm)
    finally:
        await relay.stop()


async def test_matrix_odd_sync_responses(matrix: MatrixWorld, record_property: RecordProperty) -> None:
    """Whatever nio makes of a sync response, the transport handles it without raising or logging an error, and
    a normal letter still gets its receipt."""
    name = "matrix"
    started = time.monotonic()
    transport = matrix.relay.networks["matrix"]

    async def example(data: dict[str, Any]) -> None:
        CASES[name] += 1
        generated = copy.deepcopy(data)  # nio fills in defaults in place: report what was generated
        try:
            response = SyncResponse.from_dict(data)
        except Exception:
            CASES[f"{name}:nio raised"] += 1  # nio's own parser gave up: it never reaches the bot
            return
        if not isinstance(response, SyncResponse):
            CASES[f"{name}:nio refused"] += 1
            return
        events = [event for info in response.rooms.join.values() for event in info.timeline.events]
        CASES[f"{name}:events to _on_event"] += len(events)
        CASES[f"{name}:of them BadEvent"] += sum(type(event).__name__.endswith("BadEvent") for event in events)
        mark = len(matrix.trouble.records)
        try:
            await asyncio.wait_for(transport._handle_sync(response, since=None), EXAMPLE_TIMEOUT / 2)
        except TimeoutError:
            raise BotStopped(f"one sync batch took more than {EXAMPLE_TIMEOUT / 2:g} s (the sync loop would hang): "
                             f"{_short(generated)}") from None
        except Exception as error:
            if not KEEP_GOING:
                raise AssertionError(f"the transport raised on a sync batch (it would end the sync loop): "
                                     f"{_short(generated)}") from error
            fail(f"{name}: raised {_where(error)}", f"the transport raised on a sync batch (it would end the sync "
                 f"loop): {_short(generated)}\n{''.join(traceback.format_exception(error)[-12:])}")
            return
        records = matrix.trouble.since(mark)
        if records:
            fail(f"{name}: {signature(records)}",
                 f"the bot logged trouble for {_short(generated)}:\n{describe(records)}")

    try:
        await fuzz(matrix_syncs(matrix.pools), example, 200)
    finally:  # the count is worth seeing when it failed too
        summary(name, started, record_property)
    assert CASES[name] >= 100, f"only {CASES[name]} cases ran"
    gc.collect()
    await matrix.bea.send_text(matrix.bea_dm, "From the harbour workers: we stand with you, today and every day.")
    receipt = await matrix.bea.wait_for_text(matrix.bea_dm, matrix.pools.bot, RECEIPT)
    assert "#" in receipt
    assert not findings_of(name), f"distinct failures:\n{findings_of(name)}"
    if not KEEP_GOING:
        assert not matrix.trouble.records, describe(matrix.trouble.records)

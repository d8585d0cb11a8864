"""Benchmark 6: one sender floods the bot; do the others still get their receipts, and does a part cost O(1)?

a. Fairness, through the real bot over real HTTP. The strict Bot API emulator runs here with Telegram's limits
   (30/s overall, 1/s per chat, 20/min per group); the whole bot (`Relay`, `TELEGRAM_RATES`) runs in a process of
   its own, `python -m bench.flood --child`, so the emulator's work does not share the bot's event loop and the
   RSS is the bot's alone. One sender writes F private messages, injected as fast as the emulator takes them;
   O other senders each write one short letter, interleaved with the flood (from 10 % to 95 % of it). For each
   of the others: the time from their message entering the emulator's update queue to the bot's receipt (a
   message with "#" in their chat) reaching the emulator. The child wraps the bot's `dispatch` (what the
   transport calls) and `handlers.router.dispatch` (what handles) to report when each event arrived and was
   handled: how long the flood took to drain, and where the others' time went. A cut-off bounds the run:
   whatever did not happen by then is reported as such, and the child is killed (a graceful stop would first
   handle every update still queued).
b. The join-window attack, through `handlers.router.dispatch` directly (SQLite file, fake network, manual clock
   and scheduler): one sender sends parts of 4,096 characters 0.1 s apart, each one "may be continued". The
   handling cost of single parts along the way, and part N ÷ part 100: flat means O(1) per part.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("PTB_TIMEDELTA", "1")

from bench.common import ROOT, Result, n, temp_dir

TOKEN = "123456:BENCH-flood-token"
GOAL_P99 = 1.0  # seconds, message in → receipt out, for the others
GOAL_RATIO = 1.5  # part N ÷ part 100: "≈ 1" with room for a shared machine's noise
GOAL = f"others' receipt p99 < {GOAL_P99:g} s; part 1,500 ÷ part 100 ≈ 1 (≤ {GOAL_RATIO:g})"
STATUS_EVERY = 0.1  # seconds between the child's status lines
QUIET_FOR = 2.0  # the flooder's chat silent this long: no more answers are coming
SETTLE_AT_MOST = 12.0  # seconds allowed for that after the flood drained
CHECKPOINTS = (10, 100, 500, 1000, 1500)
WINDOW = 10  # parts either side of a checkpoint, for its median (a shared machine has spikes)
PART = 4096  # Telegram's limit: a client cuts a longer text into parts of exactly this length
MODERATION_CHAT = "-100500"


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank; unanswered letters count as infinitely late."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)] if ordered else float("nan")


def seconds(value: float, cut_off: float | None = None) -> str:
    if math.isinf(value):
        return f"> {cut_off:.0f} s" if cut_off is not None else "never"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def spread(values: list[float]) -> str:
    """median / max, and how many when some are missing; "-" when none was seen."""
    if not values:
        return "-"
    return f"{seconds(statistics.median(values))} / {seconds(max(values))} ({len(values)})"


def mib(kib: float | None) -> str:
    return "?" if not kib else f"{kib / 1024:.0f} MiB"


# --- a: the child process, the bot -----------------------------------------------------------------------------


def _vm_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return 0


class _Tally(logging.Handler):
    """The bot's log by template, with the latest text of each: an error's template alone says nothing."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: collections.Counter[str] = collections.Counter()
        self.latest: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.levelname} {record.msg!r}"
        self.counts[key] += 1
        if record.levelno >= logging.WARNING:
            self.latest[key] = record.getMessage()[:160]

    def top(self, limit: int = 4) -> list[str]:
        skip = ("starting", "stopped", "polling", "migration")
        found = [(count, key) for key, count in self.counts.items() if not any(s in key for s in skip)]
        return [f"{count}× {key}" + (f", latest: {self.latest[key]!r}" if key in self.latest else "")
                for count, key in sorted(found, reverse=True)[:limit]]


async def child(config: dict[str, Any]) -> None:
    """The bot, as `python -m bot` runs it but with the benchmark's settings; a JSON status line every 0.1 s.

    Ends (hard) when the parent closes stdin: `Relay.stop` would first handle every update still queued.
    """
    from bot.app import Relay
    from bot.config import Settings
    from bot.networks.telegram import TELEGRAM_RATES
    from handlers import router

    tally = _Tally()
    root = logging.getLogger()
    root.addHandler(tally)  # also keeps the last-resort handler from printing thousands of warnings
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore", "telegram", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    flood_user = config["flood_user"]
    # time.monotonic is CLOCK_MONOTONIC, one clock for every process on Linux: the parent compares these times.
    flood: dict[str, Any] = {"arrived": 0, "done": 0, "first": None, "last": None}
    # Keyed by the others' user ids (each writes once): event ids are the transport's business.
    others: dict[str, tuple[float, float]] = {}  # user id → (handler started, handler returned), first event
    arrived: dict[str, float] = {}  # user id → when the transport handed their first event to Relay.dispatch
    original = router.dispatch

    async def observed(event: Any, ctx: Any) -> None:
        started = time.monotonic()
        try:
            await original(event, ctx)
        finally:
            ended = time.monotonic()
            sender = getattr(event, "sender", None)
            if sender is not None and sender.user_id == flood_user:
                flood["done"] += 1
                flood["first"] = flood["first"] or started
                flood["last"] = ended
            elif sender is not None:
                others.setdefault(sender.user_id, (started, ended))

    # Looked up at call time by whoever dispatches (Relay today, an intake queue later): one observer for both.
    router.dispatch = observed  # type: ignore[assignment]
    settings = Settings.from_env(config["settings"])
    relay = Relay(settings, rates={"telegram": TELEGRAM_RATES})
    inner = relay.dispatch

    def arriving(event: Any) -> Any:
        """What the transport calls (start() hands it `self.dispatch`): the update is fetched and parsed."""
        sender = getattr(event, "sender", None)
        if sender is not None and sender.user_id == flood_user:
            flood["arrived"] += 1
        elif sender is not None:
            arrived.setdefault(sender.user_id, time.monotonic())
        return inner(event)  # whatever it returns (a coroutine, a future), the transport awaits it

    relay.dispatch = arriving  # type: ignore[method-assign]
    await relay.start()
    policy = relay.ctx.policy if relay.ctx is not None else None
    # What this version of the bot made of the settings: LETTERS_PER_DAY is passed whether it knows it or not.
    known = {"letters_per_day": getattr(policy, "letters_per_day", None),
             "letters_per_day_setting": getattr(settings, "letters_per_day", None),
             "letter_join_seconds": getattr(policy, "letter_join_seconds", None)}
    loop = asyncio.get_running_loop()
    closed = loop.run_in_executor(None, sys.stdin.buffer.read)  # EOF: the parent is done
    ready = True
    while not closed.done():
        status = {"t": time.monotonic(), "flood": flood, "others": others, "arrived": arrived,
                  "rss": _vm_kib("VmRSS"),
                  "hwm": _vm_kib("VmHWM"), "log": tally.top()}
        if ready:
            status.update(ready=True, policy=known)
            ready = False
        sys.stdout.write(json.dumps(status) + "\n")
        sys.stdout.flush()
        await asyncio.sleep(STATUS_EVERY)
    os._exit(0)


# --- a: the parent, the emulator and the people ----------------------------------------------------------------


@dataclass
class Watch:
    """What the parent sees: the bot's messages as they reach the emulator, and the child's status."""

    bot_id: int
    flood_chat: int
    others: dict[int, int] = field(default_factory=dict)  # chat id → index
    receipts: dict[int, float] = field(default_factory=dict)  # other's chat id → when its receipt arrived
    flood_answers: list[tuple[float, str]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    first_status: dict[str, Any] = field(default_factory=dict)
    ended: bool = False  # the child's stdout closed: it exited

    def listen(self, event: str, message: dict[str, Any]) -> None:
        if event != "new" or message.get("from", {}).get("id") != self.bot_id:
            return
        chat, text = message["chat"]["id"], message.get("text", "")
        if chat == self.flood_chat:
            self.flood_answers.append((time.monotonic(), text))
        elif chat in self.others and "#" in text and chat not in self.receipts:
            self.receipts[chat] = time.monotonic()


async def read_status(stream: asyncio.StreamReader, watch: Watch) -> None:
    while line := await stream.readline():
        with contextlib.suppress(ValueError):
            status = json.loads(line)
            if status.get("ready"):
                watch.first_status = status
            watch.status = status
    watch.ended = True


class ChildEnded(Exception):
    """The bot's process exited before the parent was done with it."""


async def fairness(flood_count: int, other_count: int, cut_off: float) -> dict[str, Any]:
    from tests.emulators.telegram import Limits, TelegramEmulator

    f: dict[str, Any] = {"flood_count": flood_count, "other_count": other_count, "cut_off": cut_off}
    with temp_dir("relay-bench-6-") as tmp:
        async with TelegramEmulator(TOKEN) as emu:
            emu.limits = Limits(global_per_second=30, per_chat_per_second=1, per_group_per_minute=20)
            mo = emu.add_user("Mo", username="mo")
            mods = emu.add_group("Moderators", members=[(mo, "member")], bot_status="administrator")
            flooder = emu.add_user("Flo", language_code="en")
            others = [emu.add_user(f"Supporter {i}", language_code="en") for i in range(other_count)]
            watch = Watch(emu.bot["id"], flooder["id"], {user["id"]: i for i, user in enumerate(others)})
            emu.listeners.append(watch.listen)
            settings = {
                "TELEGRAM_TOKEN": TOKEN,
                "TELEGRAM_API_URL": emu.api_root,
                "TELEGRAM_MODERATION_CHAT": str(mods["id"]),
                "DATABASE": str(tmp / "relay.db"),
                "TRANSLATOR": "none",
                "LOG_LEVEL": "WARNING",
                "LETTERS_PER_DAY": "20",  # ignored by a bot that does not know it yet
            }
            config = json.dumps({"settings": settings, "flood_user": str(flooder["id"])})
            stderr = (tmp / "child.err").open("wb")
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.flood", "--child", config, cwd=ROOT,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            )
            assert process.stdout is not None and process.stdin is not None
            reader = asyncio.create_task(read_status(process.stdout, watch))

            def tail() -> str:
                stderr.flush()
                return (tmp / "child.err").read_text(errors="replace")[-2000:]

            try:
                deadline = time.monotonic() + 60
                while not watch.first_status:
                    if watch.ended or time.monotonic() > deadline:
                        raise RuntimeError(f"the bot's process did not start: {tail()}")
                    await asyncio.sleep(0.05)
                f["started_s"] = time.monotonic() - (deadline - 60)
                f["policy"] = watch.first_status.get("policy", {})
                await asyncio.sleep(1.0)  # idle: what the bot holds before anyone writes
                f["rss_before"] = watch.status.get("rss")
                calls_before = len(emu.calls)
                try:
                    f.update(await flood_and_wait(emu, watch, flooder, others, flood_count, cut_off))
                except ChildEnded:
                    raise RuntimeError(f"the bot's process ended during the flood: {tail()}") from None
                f["rss_after"], f["hwm"] = watch.status.get("rss"), watch.status.get("hwm")
                f["log"] = watch.status.get("log", [])
                calls = emu.calls[calls_before:]
                f["flood_attempts"] = sum(1 for method, params in calls if method == "sendMessage"
                                          and str(params.get("chat_id")) == str(flooder["id"]))
                other_chats = {str(chat) for chat in watch.others}
                f["other_attempts"] = sum(1 for method, params in calls if method == "sendMessage"
                                          and str(params.get("chat_id")) in other_chats)
                f["mods_attempts"] = sum(1 for method, params in calls if method == "sendMessage"
                                         and str(params.get("chat_id")) == str(mods["id"]))
                f["count_429"] = emu.count_429
                f["pending_updates"] = len(emu.pending_updates)
            finally:
                process.stdin.close()  # the child exits at EOF
                try:
                    await asyncio.wait_for(process.wait(), 5)
                except TimeoutError:
                    process.kill()
                    await process.wait()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                stderr.close()
    return f


async def flood_and_wait(emu: Any, watch: Watch, flooder: dict[str, Any], others: list[dict[str, Any]],
                         flood_count: int, cut_off: float) -> dict[str, Any]:
    # The others write from 10 % to 95 % of the flood, evenly: their place in the queue is what fairness is about.
    first, last = flood_count // 10, flood_count * 95 // 100
    step = (last - first) / max(len(others) - 1, 1)
    positions = {first + round(k * step): user for k, user in enumerate(others)}
    sent_at: dict[int, float] = {}  # other's chat id (= user id) → when their message entered the update queue
    began = time.monotonic()
    for i in range(flood_count):
        user = positions.get(i)
        if user is not None:
            emu.user_sends(user, f"Greetings from the bakers of Rosario, supporter {user['first_name']}: you are "
                                 f"not alone ✊")
            sent_at[user["id"]] = time.monotonic()
        emu.user_sends(flooder, f"Flood letter {i + 1}: hold the line!")
        await asyncio.sleep(0)  # as fast as the emulator takes them, sharing its loop with the bot's requests
    injected = time.monotonic() - began
    deadline = began + cut_off

    def flood_done() -> int:
        return int(watch.status.get("flood", {}).get("done", 0))

    # Until every other has a receipt and the flood is handled (or the handled count stands still for a while:
    # a bot may drop messages before they reach the router), or the cut-off.
    last_count, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if watch.ended:
            raise ChildEnded
        count = flood_done()
        if count != last_count:
            last_count, still_since = count, time.monotonic()
        all_answered = len(watch.receipts) == len(others)
        if all_answered and (count >= flood_count or time.monotonic() - still_since > 3.0):
            break
        await asyncio.sleep(0.05)
    drained_at = time.monotonic()
    cut = drained_at >= deadline
    # Late answers to the flooder (receipts retried after 429s) still count; wait until its chat is quiet.
    settle_until = min(deadline, drained_at + SETTLE_AT_MOST)
    while time.monotonic() < settle_until:
        latest = watch.flood_answers[-1][0] if watch.flood_answers else began
        if time.monotonic() - max(latest, drained_at) > QUIET_FOR:
            break
        await asyncio.sleep(0.05)

    status = watch.status
    handled, arrived = status.get("others", {}), status.get("arrived", {})
    latencies = [watch.receipts.get(chat, math.inf) - at for chat, at in sent_at.items()]
    # Where the time went, for the others: fetched (emulator → the bot's dispatch), queued inside the bot
    # (→ router.dispatch began), handled and answered (→ the receipt reached the emulator).
    fetched = [arrived[str(chat)] - at for chat, at in sent_at.items() if str(chat) in arrived]
    queued = [handled[str(chat)][0] - arrived[str(chat)] for chat in sent_at
              if str(chat) in handled and str(chat) in arrived]
    waits = [handled[str(chat)][0] - at for chat, at in sent_at.items() if str(chat) in handled]
    handler_to_receipt = [watch.receipts[chat] - handled[str(chat)][0] for chat in sent_at
                          if chat in watch.receipts and str(chat) in handled]
    flood = status.get("flood", {})
    return {
        "injected_s": injected,
        "positions": sorted(positions),
        "latencies": latencies,
        "fetched": fetched,
        "queued": queued,
        "waits": waits,
        "handler_to_receipt": handler_to_receipt,
        "cut": cut,
        "flood_arrived": int(flood.get("arrived", 0)),
        "flood_done": int(flood.get("done", 0)),
        "flood_drain_s": None if flood.get("last") is None else flood["last"] - began,
        "flood_answers": len(watch.flood_answers),
        "flood_receipts": sum(1 for _, text in watch.flood_answers if "#" in text),
        "measured_s": time.monotonic() - began,
    }


# --- b: the join-window attack ---------------------------------------------------------------------------------


class _FixedDetector:
    def detect(self, text: str) -> str:
        return "en"


def part_text(index: int) -> str:
    """Exactly PART characters of prose, no whitespace at the ends (the bot strips it)."""
    words = (f"Part {index}: from the harbour to the mine, from the school to the hospital, we stand with you. "
             * (PART // 60 + 2))
    return words[:PART - 1].rstrip().ljust(PART - 1, ".") + "."


async def join_attack(parts: int, budget: float) -> dict[str, Any]:
    from bot.i18n import Catalogues
    from bot.keys import AccountKey
    from handlers import effects
    from handlers.context import Context, Policy, Room
    from handlers.domain import DomainEvents
    from handlers.events import ChatKind, ChatRef, IncomingMessage, UserRef
    from handlers.router import dispatch
    from storage.db import Database
    from storage.repositories import Repositories
    from tests.fakes import FakeNetwork, ManualClock, ManualScheduler

    with temp_dir("relay-bench-6b-") as tmp:
        database = tmp / "relay.db"
        db = await Database.open(database)
        try:
            network, clock = FakeNetwork(), ManualClock()
            ctx = Context(
                policy=Policy(default_language="en", moderation_rooms=(Room("telegram", MODERATION_CHAT),)),
                repos=Repositories.over(db),
                networks={"telegram": network},
                texts=Catalogues.load(ROOT / "locales", "en"),
                clock=clock,
                scheduler=ManualScheduler(clock),  # type: ignore[arg-type]  # the window never closes meanwhile
                detector=_FixedDetector(),
                translating=None,
                hasher=AccountKey(b"k" * 32),
                events=effects.subscribe(DomainEvents()),
            )
            user = "6000000001"
            chat = ChatRef("telegram", user, ChatKind.PRIVATE)
            sender = UserRef("telegram", user, "Ana", "en")
            texts = [part_text(i) for i in range(8)]
            costs: list[float] = []
            replies = 0
            began = time.perf_counter()
            for index in range(1, parts + 1):
                text = texts[index % len(texts)]
                message = IncomingMessage(
                    event_id=f"message:{user}:{index}", chat=chat, sender=sender, text=text,
                    message_id=str(index), received_at=clock.now(), content_kind="text", length=len(text),
                    limit=PART,
                )
                started = time.perf_counter()
                await dispatch(message, ctx)
                costs.append(time.perf_counter() - started)
                replies += len(network.posted)
                network.posted.clear()  # the fake's record is the harness's memory, not the bot's
                clock.advance(0.1)
                if time.perf_counter() - began > budget:
                    break  # a bot whose part costs grow with the letter would take minutes
            total = time.perf_counter() - began
            letters = await db.fetchall(
                """SELECT l.id, l.status, COUNT(p.seq), COALESCE(SUM(p.length), 0) FROM letters l
                   LEFT JOIN letter_parts p ON p.letter_id = l.id GROUP BY l.id ORDER BY l.id"""
            )
            await db.checkpoint()
        finally:
            await db.close()
        size = sum(path.stat().st_size for path in (database, Path(f"{database}-wal")) if path.exists())
    return {"parts": len(costs), "asked": parts, "budget": budget, "costs": costs, "total_s": total,
            "replies": replies, "db_bytes": size, "letters": [tuple(row) for row in letters]}


def at_part(costs: list[float], part: int) -> float:
    """Median cost of the parts around `part` (1-based), the window kept inside the run."""
    low = max(part - WINDOW, 1)
    high = min(low + 2 * WINDOW, len(costs))
    low = max(high - 2 * WINDOW, 1)
    return statistics.median(costs[low - 1:high])


# --- the benchmark ---------------------------------------------------------------------------------------------


async def flood(flood_count: int, other_count: int, parts: int, cut_off: float, budget: float) -> Result:
    """`cut_off`: seconds the fairness run may last after the flood began; `budget`: seconds for the parts."""
    name = "Flood: fairness and joining"
    title = (f"Flood: {n(flood_count)} messages from one sender while {other_count} others write once "
             f"(real bot, Telegram's limits); {n(parts)} client-split parts of {n(PART)} characters")
    a = await fairness(flood_count, other_count, cut_off)
    b = await join_attack(parts, budget)

    latencies = a["latencies"]
    answered = sum(1 for value in latencies if not math.isinf(value))
    p50, p99, worst = (percentile(latencies, q) for q in (0.5, 0.99, 1.0))
    policy = a["policy"]
    per_day = policy.get("letters_per_day")
    if per_day is None:
        per_day_text = "unknown to this bot"
    elif policy.get("letters_per_day_setting") is None:
        per_day_text = f"{per_day} (the bot's own; it does not read the setting)"
    else:
        per_day_text = f"{per_day}"
    drain = a["flood_drain_s"]
    done, reached = a["flood_done"], a["flood_arrived"]
    observed = done or a["waits"]
    if done >= flood_count and drain is not None:
        drain_text = f"all {n(flood_count)} handled {drain:.1f} s after the flood began"
    elif not observed and answered:
        drain_text = ("not observable: the wrapper around handlers.router.dispatch saw no event, so the bot no "
                      "longer calls it through the module")
    elif a["cut"]:
        drain_text = (f"{n(done)} of {n(flood_count)} handled by router.dispatch at the {cut_off:.0f} s cut-off "
                      f"({n(reached)} had reached the bot)")
        if done:
            rate = done / cut_off
            drain_text += (f"; at that {rate:.1f}/s the rest would take another "
                           f"{(flood_count - done) / rate / 60:.1f} min")
    else:
        drain_text = (f"{n(done)} of {n(flood_count)} reached router.dispatch, the last handled "
                      f"{drain or 0:.1f} s after the flood began; {n(reached)} reached the bot, so "
                      f"{n(reached - done)} were dropped inside it before the router"
                      + ("" if reached >= flood_count else f" and {n(flood_count - reached)} never reached it"))
    handling = a["handler_to_receipt"]
    lines = [
        ("setup", f"emulator limits 30/s overall, 1/s per chat, 20/min per group; bot TELEGRAM_RATES in its own "
                  f"process (started in {a['started_s']:.1f} s); LETTER_JOIN_SECONDS "
                  f"{policy.get('letter_join_seconds')}, LETTERS_PER_DAY "
                  f"{per_day_text} (passed: 20)"),
        ("flood", f"{n(flood_count)} messages from one sender injected in {a['injected_s']:.2f} s "
                  f"({flood_count / a['injected_s']:,.0f}/s); {other_count} others wrote once each, evenly between "
                  f"flood messages {a['positions'][0]} and {a['positions'][-1]}"),
        ("others", f"receipt latency p50 {seconds(p50, cut_off)}, p99 {seconds(p99, cut_off)}, max "
                   f"{seconds(worst, cut_off)} (nearest rank); {answered} of {other_count} answered"
                   + ("" if answered == other_count else f" within {a['measured_s']:.0f} s")),
        ("", "where it went (median / max): " + "; ".join(
            f"{label} {spread(values)}" for label, values in (
                ("to Relay.dispatch (getUpdates, PTB's own queue)", a["fetched"]),
                ("then to router.dispatch (the bot's intake)", a["queued"]),
                ("then to the receipt", handling)))),
        ("drain", drain_text),
        ("flooder", f"{a['flood_answers']} answers reached their chat ({a['flood_receipts']} receipts, "
                    f"{a['flood_answers'] - a['flood_receipts']} other) of {n(a['flood_attempts'])} sendMessage "
                    f"calls into it; the emulator refused the other "
                    f"{n(a['flood_attempts'] - a['flood_answers'])} (Telegram allows 1 message/s per chat)"),
        ("429s", f"{n(a['count_429'])} in all; calls into the others' chats {a['other_attempts']}, into the "
                 f"moderation group {a['mods_attempts']}; updates never fetched at the end {a['pending_updates']}"),
        ("RSS", f"the bot's process (VmRSS): {mib(a['rss_before'])} idle before the flood, {mib(a['rss_after'])} "
                f"at the end, peak (VmHWM) {mib(a['hwm'])}"),
    ]
    lines += [("bot log", line) for line in a["log"][:3]]

    costs = b["costs"]
    marks = [part for part in CHECKPOINTS if part <= len(costs)]
    if marks[-1] != len(costs):
        marks.append(len(costs))
    cost_at = {part: at_part(costs, part) for part in marks}
    base = cost_at.get(100, cost_at[marks[0]])
    last = marks[-1]
    ratio = cost_at[last] / base
    letters = b["letters"]
    first, more = (letters[0] if letters else (0, "?", 0, 0)), letters[1:]
    statuses = collections.Counter(status for _id, status, _parts, _length in more)
    more_text = "no other letter"
    if more:
        more_text = (f"{len(more)} more letters ({sum(parts for _i, _s, parts, _l in more):,} parts; "
                     + ", ".join(f"{count} {status}" for status, count in statuses.items()) + ")")
    lines += [
        ("join attack", f"{n(b['parts'])} parts of {n(PART)} characters, 0.1 s apart (manual clock), through "
                        f"router.dispatch on a SQLite file; {b['total_s']:.1f} s in all"
                        + ("" if b["parts"] == b["asked"] else
                           f" (stopped after {b['budget']:.0f} s, at part {b['parts']:,} of {b['asked']:,})")),
        ("", f"a part's handling, median of the {2 * WINDOW + 1} around it: "
             + ", ".join(f"#{part:,} {cost_at[part] * 1000:.2f} ms" for part in marks)),
        ("", f"part {last:,} ÷ part 100: {ratio:.2f} ×"
             # Long after the limit, a bot that refuses the parts runs one path: its cost alone, without joins.
             + (f" (÷ part 500: {cost_at[last] / cost_at[500]:.2f} ×)" if 500 in cost_at and last != 500 else "")
             + f"; slowest part {max(costs) * 1000:.1f} ms"),
        ("letters", f"letter #{first[0]}: {n(first[2])} parts, {n(first[3])} characters, {first[1]}; "
                    f"{more_text}; {b['replies']} replies; database {b['db_bytes'] / 2**20:.1f} "
                    f"MiB after a checkpoint"),
    ]
    headline = (f"others' receipt p99 {seconds(p99, cut_off)} ({answered}/{other_count} answered); "
                f"part {last:,} ÷ part 100 {ratio:.2f} ×")
    met = p99 < GOAL_P99 and ratio <= GOAL_RATIO
    details = (f"receipt p50 {seconds(p50, cut_off)}, max {seconds(worst, cut_off)}; "
               + (f"flood drained in {drain:.1f} s" if a["flood_done"] >= flood_count and drain is not None
                  else f"flood {n(a['flood_done'])}/{n(flood_count)} handled")
               + f"; {a['flood_answers']} answers to the flooder; bot RSS {mib(a['rss_after'])}; "
               f"part {last:,} {cost_at[last] * 1000:.1f} ms")
    return Result(6, name, headline, GOAL, met, details=details, lines=lines, title=title)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flood")
    parser.add_argument("--child", metavar="JSON", help="run the bot for benchmark 6 (internal)")
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(json.loads(args.child)))
        return 0
    parser.error("run it as `python -m bench --only 6`")
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks 1 and 2: one letter's broadcast through the whole bot against the strict Bot API emulator.

1. No limits: the bot's deliveries/s as a ratio to a bare python-telegram-bot `send_message` loop.
2. Telegram's limits on: elapsed time ÷ the minimum the limits allow, and the 429s the emulator answered.

The emulator runs in this process and event loop, as in the end-to-end tests, and so does the bare loop. With
no network latency to hide, benchmark 1 compares CPU spent per message: the worker's concurrency cannot help
it, and every database round trip or extra object per delivery shows up in the ratio.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import telegram_remote
from bench.common import (
    LETTER,
    UNLIMITED,
    Result,
    broadcast_times,
    n,
    progress_text,
    retries_text,
    tally_logs,
    temp_dir,
    wait_broadcast,
)
from bench.telegram_remote import Run
from bot.app import Relay, settle_memory
from bot.config import Settings
from bot.pacing import Rates
from storage.db import Database
from storage.repositories import Repositories
from tests.emulators.telegram import Limits, TelegramEmulator

TOKEN = "123456:BENCH-relay-token"
READING_SECONDS = 1.5
LETTERS_PER_BACKEND = 3  # in-process, for benchmark 1: as many bare loops, taking turns with the letters


@dataclass
class World:
    emu: TelegramEmulator
    mods: dict[str, Any]
    mo: dict[str, Any]
    alice: dict[str, Any]
    chats: list[tuple[str, str, str | None]] = field(default_factory=list)  # (chat id, kind, title)

    @property
    def chat_ids(self) -> list[str]:
        return [chat_id for chat_id, _, _ in self.chats]


async def make_world(emu: TelegramEmulator, private: int, groups: int, channels: int) -> World:
    mo = emu.add_user("Mo", username="mo")
    alice = emu.add_user("Alice", language_code="en")
    mods = emu.add_group("Moderators", members=[(mo, "member")], bot_status="administrator")
    world = World(emu, mods, mo, alice)
    for i in range(private):
        reader = emu.add_user(f"Reader {i}")
        emu.user_sends(reader, "/start")  # Telegram has a private chat only once the person wrote to the bot
        world.chats.append((str(reader["id"]), "private", None))
    for i in range(groups):
        world.chats.append((str(emu.add_group(f"Group {i}")["id"]), "group", f"Group {i}"))
    for i in range(channels):
        world.chats.append((str(emu.add_channel(f"Channel {i}")["id"]), "channel", f"Channel {i}"))
    return world


async def subscribe_all(database: Path, world: World) -> float:
    """Through the repository, before the bot starts (as if each chat had sent /subscribe); returns seconds."""
    started = time.perf_counter()
    db = await Database.open(database)
    try:
        subscriptions = Repositories.over(db).subscriptions
        for chat_id, kind, title in world.chats:
            await subscriptions.subscribe("telegram", chat_id, kind, title, "en", time.time())
    finally:
        await db.close()
    return time.perf_counter() - started


async def drop_pending_updates(emu: TelegramEmulator) -> None:
    """The readers' /start messages were only there to open the private chats; the bot need not answer them."""
    from telegram import Bot

    async with Bot(TOKEN, base_url=f"{emu.api_root}/bot") as bot:
        await bot.delete_webhook(drop_pending_updates=True)


def settings_for(emu: TelegramEmulator, world: World, database: Path, **extra: str) -> Settings:
    return Settings.from_env({
        "TELEGRAM_TOKEN": TOKEN,
        "TELEGRAM_API_URL": emu.api_root,
        "TELEGRAM_MODERATION_CHAT": str(world.mods["id"]),
        "DATABASE": str(database),
        "LETTER_JOIN_SECONDS": "0",
        "TRANSLATOR": "none",
        "LOG_LEVEL": "WARNING",
        **extra,
    })


async def submit_and_approve(world: World, number: int = 1) -> float:
    """Alice writes, the card appears, Mo approves with /approve N; returns the wall time of the approve."""
    emu = world.emu
    emu.user_sends(world.alice, f"{LETTER} ({number})")
    card = f"📨 Letter #{number} "
    await emu.wait_for(
        lambda: any(m.get("text", "").startswith(card) for m in emu.sent_by_bot(world.mods)), 30, what=card
    )
    # A moderator reads before approving; approving at once would also put the receipt and the card within one
    # second of the "approved" messages into the same chats, which Telegram's 1/s per chat would refuse.
    await asyncio.sleep(READING_SECONDS)
    command_at = time.time()
    emu.user_sends(world.mo, f"/approve {number}", chat=world.mods)
    return command_at


# --- 1: no limits ---------------------------------------------------------------------------------------------


@dataclass
class Side:
    """One backend's figures in one setting: the bot's best broadcast and the bare loop's best run."""

    backend: str
    bot: Run
    bare: Run
    concurrency: int

    @property
    def ratio(self) -> float:
        return self.bot.rate / self.bare.rate


async def in_process(emu: TelegramEmulator, world: World, database: Path, backend: str, first: int) -> Side:
    """Bare loop and bot take turns (the machine is shared and runs vary by ±10 %: the best of each)."""
    subscriptions = len(world.chats)
    settings = settings_for(emu, world, database, TELEGRAM_HTTP_BACKEND=backend)
    relay = Relay(settings, rates={"telegram": UNLIMITED})
    await relay.start()
    bots: list[Run] = []
    bares: list[Run] = []
    try:
        assert relay.ctx is not None and relay.worker is not None
        concurrency = relay.worker.concurrency
        for number in range(first, first + LETTERS_PER_BACKEND):
            bares.append(await telegram_remote.bare_loop(emu.api_root, [int(c) for c in world.chat_ids], backend,
                                                         concurrency, TOKEN, LETTER))
            await submit_and_approve(world, number)
            cpu = time.process_time()  # from the /approve message, which the bot has yet to read
            progress = await wait_broadcast(relay.ctx.repos, number, subscriptions, within=30 + subscriptions / 20)
            cpu_seconds = time.process_time() - cpu
            times = await broadcast_times(relay.ctx.repos, number)
            if times.elapsed is None or progress.open:
                raise RuntimeError(f"letter #{number} on {backend}: {progress_text(progress)}")
            bots.append(telegram_remote.Run(f"bot, {backend}", progress.sent, times.elapsed, cpu_seconds))
    finally:
        await relay.stop()
    return Side(backend, max(bots, key=lambda run: run.rate), min(bares, key=lambda run: run.seconds), concurrency)


async def no_limits(subscriptions: int) -> Result:
    name = "Telegram, no limits"
    title = f"Telegram, no limits: one letter to {n(subscriptions)} subscriptions vs a bare PTB loop"
    with temp_dir("relay-bench-1-") as tmp, tally_logs() as tally:
        # Remote first: the bot's own CPU is measured there, before this process holds 2,000 people's chats.
        remote = await telegram_remote.measure(subscriptions, tmp / "remote", paid_readers=subscriptions)
        async with TelegramEmulator(TOKEN) as emu:
            emu.limits = None
            world = await make_world(emu, private=subscriptions, groups=0, channels=0)
            await drop_pending_updates(emu)
            database = tmp / "relay.db"
            subscribe_seconds = await subscribe_all(database, world)
            local = [await in_process(emu, world, database, backend, first)
                     for backend, first in zip(telegram_remote.BACKENDS, (1, 1 + LETTERS_PER_BACKEND), strict=True)]
            plain = await telegram_remote.bare_loop(emu.api_root, [int(c) for c in world.chat_ids], "aiohttp",
                                                    local[1].concurrency, TOKEN, LETTER,
                                                    plain=True)

    concurrency = remote.concurrency
    lines = [
        ("setup", f"{n(subscriptions)} private chats, subscribed through the repository in {subscribe_seconds:.1f} s; "
                  f"bot rates unlimited, worker concurrency {concurrency}; the bare loop as many sends in flight"),
        ("", "CPU: this process's (in-process: the emulator's too), per message; bot: from the approval to the last "
             f"delivery recorded as sent, best of {LETTERS_PER_BACKEND} letters in-process; bare loop: the same "
             f"message as the bot sends (its HTML with the title, no link preview), best of {LETTERS_PER_BACKEND} "
             "runs in-process, of 2 remote"),
    ]
    ratios = []
    for where, sides in (("in-process", local), ("remote", [telegram_remote_side(remote, b) for b in
                                                            telegram_remote.BACKENDS])):
        for side in sides:
            ratios.append(side.ratio)
            lines.append((f"{where}, {side.backend}",
                          f"bot {side.bot.rate:,.0f}/s, {side.bot.cpu_us:,.0f} µs; bare loop {side.bare.rate:,.0f}/s, "
                          f"{side.bare.cpu_us:,.0f} µs; bot ÷ bare {side.ratio:.2f} ×"))
    paid = remote.paid
    paid_ok = paid is not None and paid.rate >= 900 and remote.paid_429 == 0
    if paid is not None:
        lines.append(("paid broadcast", f"TELEGRAM_PAID_BROADCAST=true, TELEGRAM_MESSAGES_PER_SECOND=1000, emulator "
                                        f"in its own process with Telegram's limits: {n(paid.sent)} deliveries at "
                                        f"{paid.rate:,.0f}/s, {paid.cpu_us:,.0f} µs each, {remote.paid_429} × 429"))
    lines.append(("diagnostic", f"in-process, aiohttp: the bare loop sending the letter as plain text (no title, "
                                f"no HTML for the emulator to parse): {plain.rate:,.0f}/s, {plain.cpu_us:,.0f} µs; the "
                                f"bot reaches {local[1].bot.rate / plain.rate:.2f} × that"))
    lines += [("bot log", line) for line in tally.top(3, skip=("starting", "stopped", "polling", "migration"))]
    worst = min(ratios)
    headline = f"{worst:.2f}–{max(ratios):.2f} × the bare loop" + (f"; paid {paid.rate:,.0f}/s" if paid else "")
    return Result(
        1, name, headline, "≥ 0.9 × on each backend; paid ≥ 900/s, 0 × 429", worst >= 0.9 and paid_ok,
        details=f"aiohttp: bot {local[1].bot.rate:,.0f}/s vs bare {local[1].bare.rate:,.0f}/s in-process, "
                f"{remote.bot['aiohttp'].rate:,.0f}/s vs {remote.bare['aiohttp'].rate:,.0f}/s remote",
        lines=lines,
        title=title,
    )


def telegram_remote_side(remote: telegram_remote.RemoteFigures, backend: str) -> Side:
    return Side(backend, remote.bot[backend], remote.bare[backend], remote.concurrency)


# --- 2: Telegram's limits -------------------------------------------------------------------------------------

GLOBAL_PER_SECOND = 30


async def with_limits(private: int, groups: int, channels: int) -> Result:
    total = private + groups + channels
    name = "Telegram, real limits"
    title = f"Telegram, real limits: {n(total)} subscriptions ({private} private, {groups} groups, {channels} channels)"
    minimum = total / GLOBAL_PER_SECOND  # each chat gets one message: only the global limit binds
    goal = "≤ 1.03 with 0 × 429"
    with temp_dir("relay-bench-2-") as tmp, tally_logs() as tally:
        async with TelegramEmulator(TOKEN) as emu:
            emu.limits = Limits(global_per_second=GLOBAL_PER_SECOND, per_chat_per_second=1, per_group_per_minute=20)
            world = await make_world(emu, private=private, groups=groups, channels=channels)
            await drop_pending_updates(emu)
            database = tmp / "relay.db"
            await subscribe_all(database, world)

            relay = Relay(settings_for(emu, world, database))  # rates from the settings: TELEGRAM_RATES
            await relay.start()
            settle_memory()  # as `python -m bot` does once started
            try:
                assert relay.ctx is not None and relay.worker is not None
                pacer = relay.worker.pacers["telegram"]
                rates: Rates = pacer.rates
                before, calls_before = emu.count_429, len(emu.calls)
                command_at = await submit_and_approve(world)
                progress = await wait_broadcast(relay.ctx.repos, 1, total, within=60 + 4 * minimum)
                times = await broadcast_times(relay.ctx.repos, 1)
                during = emu.count_429 - before
                subscribers = set(world.chat_ids)
                others = [str(params.get("chat_id")) for method, params in emu.calls[calls_before:]
                          if method == "sendMessage" and str(params.get("chat_id")) not in subscribers]
                rate_now = getattr(pacer, "rate", None)
            finally:
                await relay.stop()
            total_429 = emu.count_429

    pacer_floor = total / rates.per_second
    lines = [
        ("setup", f"emulator limits: {GLOBAL_PER_SECOND}/s overall, 1/s per chat, 20/min per group or channel; "
                  f"bot rates: {rates}"),
        ("minimum", f"{total} messages at {GLOBAL_PER_SECOND}/s = {minimum:.1f} s "
                    f"(the bot's own pacing allows no less than {total} at {rates.per_second:g}/s = "
                    f"{pacer_floor:.1f} s = {pacer_floor / minimum:.3f} × the minimum)"),
        ("bot", progress_text(progress)),
    ]
    if times.elapsed is None or progress.sent == 0:
        return Result(2, name, "no delivery was recorded as sent", goal, None, lines=lines, title=title)
    ratio = times.elapsed / minimum
    by_kind = ", ".join(f"{kind} {seconds:.1f} s" for kind, seconds in times.by_kind.items())
    lines += [
        ("", f"approval → last recorded sent: {times.elapsed:.2f} s = {progress.sent / times.elapsed:.1f} "
             f"messages/s (from the /approve message: {times.last_sent - command_at:.2f} s; the first delivery "
             f"{times.first_sent - times.decided_at:.2f} s after the approval)"),  # type: ignore[operator]
        ("", f"last delivery of each kind after: {by_kind}"),
        ("", f"sendMessage calls to other chats meanwhile (moderators, the sender: in the same pacer): "
             f"{len(others)}"),
        ("429s", f"{during} during the broadcast ({total_429} in the whole run); {retries_text(times)}"
                 + (f"; pacer rate at the end: {rate_now:.1f}/s" if isinstance(rate_now, float) else "")),
    ]
    lines += [("bot log", line) for line in tally.top(3, skip=("starting", "stopped", "polling", "migration"))]
    return Result(
        2, name, f"{ratio:.3f} × the minimum, {total_429} × 429", goal, ratio <= 1.03 and total_429 == 0,
        details=f"{times.elapsed:.1f} s vs {minimum:.1f} s minimum, {total_429} × 429",
        lines=lines,
        title=title,
    )

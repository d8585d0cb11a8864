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
    BroadcastTimes,
    Result,
    broadcast_times,
    n,
    progress_text,
    retries_text,
    tally_logs,
    temp_dir,
    wait_broadcast,
)
from bot.app import Relay
from bot.config import Settings
from bot.pacing import Rates
from storage.db import Database
from storage.deliveries import Progress
from storage.repositories import Repositories
from tests.emulators.telegram import Limits, TelegramEmulator

TOKEN = "123456:BENCH-relay-token"
READING_SECONDS = 1.5


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


async def bare_loop(emu: TelegramEmulator, chat_ids: list[str], text: str, like_the_bot: bool = False) -> float:
    """A plain telegram.Bot sending one message after another; returns seconds for the loop alone.

    `like_the_bot`: with the parameters the bot's transport sends (HTML with its title, no link preview), which
    cost more on both sides (the emulator parses the HTML); a diagnostic, not the goal's baseline.
    """
    from telegram import Bot, LinkPreviewOptions
    from telegram.constants import ParseMode

    from bot.markup import render_telegram_html

    options: dict[str, Any] = {}
    if like_the_bot:
        text = render_telegram_html("✊ Letter of solidarity #1", text, None)
        options = {"parse_mode": ParseMode.HTML, "link_preview_options": LinkPreviewOptions(is_disabled=True),
                   "disable_notification": False}
    bot = Bot(TOKEN, base_url=f"{emu.api_root}/bot")
    async with bot:
        started = time.perf_counter()
        for chat_id in chat_ids:
            await bot.send_message(int(chat_id), text, **options)
        return time.perf_counter() - started


async def drop_pending_updates(emu: TelegramEmulator) -> None:
    """The readers' /start messages were only there to open the private chats; the bot need not answer them."""
    from telegram import Bot

    async with Bot(TOKEN, base_url=f"{emu.api_root}/bot") as bot:
        await bot.delete_webhook(drop_pending_updates=True)


def settings_for(emu: TelegramEmulator, world: World, database: Path) -> Settings:
    return Settings.from_env({
        "TELEGRAM_TOKEN": TOKEN,
        "TELEGRAM_API_URL": emu.api_root,
        "TELEGRAM_MODERATION_CHAT": str(world.mods["id"]),
        "DATABASE": str(database),
        "LETTER_JOIN_SECONDS": "0",
        "TRANSLATOR": "none",
        "LOG_LEVEL": "WARNING",
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


async def no_limits(subscriptions: int) -> Result:
    """Bare loop and bot take turns twice (the machine may be shared: best of two for each), then a diagnostic."""
    name = "Telegram, no limits"
    title = f"Telegram, no limits: one letter to {n(subscriptions)} subscriptions vs a bare PTB loop"
    with temp_dir("relay-bench-1-") as tmp, tally_logs() as tally:
        async with TelegramEmulator(TOKEN) as emu:
            emu.limits = None
            world = await make_world(emu, private=subscriptions, groups=0, channels=0)
            await drop_pending_updates(emu)
            database = tmp / "relay.db"
            subscribe_seconds = await subscribe_all(database, world)

            relay = Relay(settings_for(emu, world, database), rates={"telegram": UNLIMITED})
            await relay.start()
            baseline: list[float] = []
            runs: list[tuple[Progress, BroadcastTimes, float]] = []
            try:
                assert relay.ctx is not None
                concurrency = getattr(relay.worker, "concurrency", "?")
                for number in (1, 2):
                    baseline.append(await bare_loop(emu, world.chat_ids, LETTER))  # the bot idles meanwhile
                    command_at = await submit_and_approve(world, number)
                    progress = await wait_broadcast(relay.ctx.repos, number, subscriptions,
                                                    within=30 + subscriptions / 20)
                    runs.append((progress, await broadcast_times(relay.ctx.repos, number), command_at))
            finally:
                await relay.stop()
            html_loop = await bare_loop(emu, world.chat_ids, LETTER, like_the_bot=True)
        remote = await telegram_remote.measure(subscriptions, tmp / "remote")

    best = min(baseline)
    base_rate = subscriptions / best
    lines = [
        ("setup", f"{n(subscriptions)} private chats, subscribed through the repository in {subscribe_seconds:.1f} s; "
                  f"bot rates unlimited, worker concurrency {concurrency}; emulator in this process and loop"),
        ("baseline", f"bare PTB send_message loop: {best:.2f} s = {base_rate:,.0f} messages/s "
                     f"(best of 2 runs, one before each letter: {baseline[0]:.2f} s, {baseline[1]:.2f} s)"),
    ]
    rates = [progress.sent / times.elapsed for progress, times, _ in runs if times.elapsed and progress.sent]
    for number, (progress, times, command_at) in enumerate(runs, start=1):
        if times.elapsed is None or times.first_sent is None or times.last_sent is None or not progress.sent:
            lines.append((f"letter #{number}", f"{progress_text(progress)}; none recorded as sent"))
            continue
        lines.append((f"letter #{number}", f"{progress_text(progress)}; approval → last recorded sent "
                                           f"{times.elapsed:.2f} s = {progress.sent / times.elapsed:,.0f} deliveries/s "
                                           f"(first sent after {times.first_sent - times.decided_at:.3f} s; from the "
                                           f"/approve message: {times.last_sent - command_at:.2f} s); "
                                           f"{retries_text(times)}"))
    if len(rates) < len(runs):
        return Result(1, name, "a broadcast did not finish", "≥ 0.9", None, lines=lines, title=title)
    rate = max(rates)
    ratio = rate / base_rate
    lines += [
        ("bot", f"best of the 2 letters: {rate:,.0f} deliveries/s"),
        ("diagnostic", f"bare loop with the bot's send parameters (HTML title, no link preview; not the goal's "
                       f"baseline): {subscriptions / html_loop:,.0f} messages/s; the bot reaches "
                       f"{rate * html_loop / subscriptions:.2f} × that"),
        ("remote", f"emulator in its own process: bare loop {subscriptions / remote.bare_seconds:,.0f}/s, bot "
                   f"{remote.sent / remote.bot_seconds:,.0f}/s = {remote.ratio:.2f} × (approval to last sent)"),
    ]
    lines += [("bot log", line) for line in tally.top(3, skip=("starting", "stopped", "polling", "migration"))]
    return Result(
        1, name, f"{ratio:.2f} × the bare loop's deliveries/s", "≥ 0.9", ratio >= 0.9,
        details=f"bot {rate:,.0f}/s vs bare PTB {base_rate:,.0f}/s, {n(subscriptions)} messages",
        lines=lines,
        title=title,
    )


# --- 2: Telegram's limits -------------------------------------------------------------------------------------

GLOBAL_PER_SECOND = 30


async def with_limits(private: int, groups: int, channels: int) -> Result:
    total = private + groups + channels
    name = "Telegram, real limits"
    title = f"Telegram, real limits: {n(total)} subscriptions ({private} private, {groups} groups, {channels} channels)"
    minimum = total / GLOBAL_PER_SECOND  # each chat gets one message: only the global limit binds
    goal = "≤ 1.05 with 0 × 429"
    with temp_dir("relay-bench-2-") as tmp, tally_logs() as tally:
        async with TelegramEmulator(TOKEN) as emu:
            emu.limits = Limits(global_per_second=GLOBAL_PER_SECOND, per_chat_per_second=1, per_group_per_minute=20)
            world = await make_world(emu, private=private, groups=groups, channels=channels)
            await drop_pending_updates(emu)
            database = tmp / "relay.db"
            await subscribe_all(database, world)

            relay = Relay(settings_for(emu, world, database))  # rates from the settings: TELEGRAM_RATES
            await relay.start()
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
        2, name, f"{ratio:.3f} × the minimum, {total_429} × 429", goal, ratio <= 1.05 and total_429 == 0,
        details=f"{times.elapsed:.1f} s vs {minimum:.1f} s minimum, {total_429} × 429",
        lines=lines,
        title=title,
    )

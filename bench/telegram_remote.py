"""Benchmark 1 with the emulator in its own process: the Bot API is remote, as Telegram is.

In-process, the emulator and the bot share one core and one event loop, so sending concurrently only adds CPU;
here each side has its own process, as in production, and the bare loop pays every round trip in full.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from bench.common import UNLIMITED
from bot.app import Relay
from bot.config import Settings
from storage.letters import Decision, NewPart

TOKEN = "123456:BENCH-remote-token"
TEXT = "Hold the line, comrades ✊ We are with you, from every harbour of the world."


def serve(connection: Connection, readers: int) -> None:
    """Child process: an emulator with `readers` private chats; sends (root, mods id, chat ids), runs until told."""
    from tests.emulators.telegram import TelegramEmulator

    async def main() -> None:
        async with TelegramEmulator(TOKEN) as emu:
            mods = emu.add_group("Moderators", bot_status="administrator")
            chats = [emu.start_private_chat(emu.add_user(f"Reader {n}"))["id"] for n in range(readers)]
            connection.send((emu.api_root, mods["id"], chats))
            await asyncio.get_running_loop().run_in_executor(None, connection.recv)

    asyncio.run(main())


@dataclass
class RemoteFigures:
    bare_seconds: float
    bot_seconds: float
    sent: int

    @property
    def ratio(self) -> float:
        return self.bare_seconds / self.bot_seconds


async def bare_loop(root: str, chats: list[int]) -> float:
    from telegram import Bot

    async with Bot(TOKEN, base_url=f"{root}/bot") as bot:
        started = time.perf_counter()
        for chat in chats:
            await bot.send_message(chat, TEXT)
        return time.perf_counter() - started


async def bot_broadcast(root: str, mods: int, chats: list[int], directory: Path) -> tuple[float, int]:
    settings = Settings.from_env({
        "TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": root, "TELEGRAM_MODERATION_CHAT": str(mods),
        "DATABASE": str(directory / "relay.db"), "TRANSLATOR": "none", "LOG_LEVEL": "WARNING",
    })
    relay = Relay(settings, rates={"telegram": UNLIMITED})
    await relay.start()
    try:
        assert relay.ctx is not None and relay.worker is not None
        repos = relay.ctx.repos
        for chat in chats:
            await repos.subscriptions.subscribe("telegram", str(chat), "private", None, "en", 0)
        sender = await repos.senders.ensure("telegram", "1", "1", "en", 0)
        letter = await repos.letters.start_letter(sender.id, NewPart("telegram", "1", "1", TEXT, len(TEXT), 0))
        await repos.letters.mark_announced(letter.id, time.time())
        started = time.perf_counter()
        await repos.letters.decide(letter.id, Decision(letter.id, "approve", "telegram", "0", "Bench", None,
                                                       time.time()))
        relay.worker.wake()
        while (await repos.deliveries.progress(letter.id)).open:  # noqa: ASYNC110 (the database is polled)
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        return elapsed, (await repos.deliveries.progress(letter.id)).sent
    finally:
        await relay.stop()


async def measure(readers: int, directory: Path) -> RemoteFigures:
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before anything is measured)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=serve, args=(theirs, readers), daemon=True)
    child.start()
    try:
        root, mods, chats = await asyncio.get_running_loop().run_in_executor(None, ours.recv)
        before = await bare_loop(root, chats)
        bot_seconds, sent = await bot_broadcast(root, mods, chats, directory)
        after = await bare_loop(root, chats)
        return RemoteFigures(min(before, after), bot_seconds, sent)
    finally:
        ours.send("stop")
        child.join(10)
        if child.is_alive():
            child.kill()

"""The delivery engine against the emulator: platform limits obeyed, faults survived, a kill -9 loses nothing."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.app import Relay
from bot.config import Settings
from bot.networks.telegram import TELEGRAM_RATES
from bot.outbox import concurrency_for
from bot.pacing import Pacer, Rates
from storage.db import Database
from storage.repositories import Repositories
from tests.emulators.telegram import Limits, TelegramEmulator

TOKEN = "123456:TEST-engine-token"
ROOT = Path(__file__).resolve().parents[1]
LETTER = "Solidarity from the engine room ✊"
FAST_RATES = Rates(per_second=200, private_interval=0, group_interval=0, channel_interval=0)


class Broadcast:
    """An emulator with subscriber chats already in the bot's database, one supporter and one moderator."""

    def __init__(self, emu: TelegramEmulator, database: Path) -> None:
        self.emu = emu
        self.database = database
        self.mo = emu.add_user("Mo")
        self.alice = emu.add_user("Alice")
        self.mods = emu.add_group("Moderators", members=[(self.mo, "member")], bot_status="administrator")
        self.chats: list[dict[str, Any]] = []

    async def subscribe(self, private: int = 0, groups: int = 0, channels: int = 0) -> None:
        kinds = [("private", private), ("group", groups), ("channel", channels)]
        for kind, count in kinds:
            for number in range(count):
                if kind == "private":
                    chat = self.emu.start_private_chat(self.emu.add_user(f"Reader {number}"))
                elif kind == "group":
                    chat = self.emu.add_group(f"Group {number}")
                else:
                    chat = self.emu.add_channel(f"Channel {number}")
                self.chats.append({**chat, "kind": kind})
        db = await Database.open(self.database)
        repos = Repositories.over(db)
        for chat in self.chats:
            await repos.subscriptions.subscribe("telegram", str(chat["id"]), chat["kind"], None, "en", 0)
        await db.close()

    def settings(self, **extra: str) -> dict[str, str]:
        return {
            "TELEGRAM_TOKEN": TOKEN,
            "TELEGRAM_API_URL": self.emu.api_root,
            "TELEGRAM_MODERATION_CHAT": str(self.mods["id"]),
            "DATABASE": str(self.database),
            "TRANSLATOR": "none",
            **extra,
        }

    async def submit_and_approve(self) -> None:
        self.emu.user_sends(self.alice, LETTER)
        await self.emu.wait_for(lambda: any(m.get("text", "").startswith("📨 Letter #1 ")
                                            for m in self.emu.sent_by_bot(self.mods)), 20, what="card")
        self.emu.user_sends(self.mo, "/approve 1", chat=self.mods)

    def received(self) -> Counter[int]:
        """How many copies of letter #1 each subscriber chat holds."""
        return Counter({chat["id"]: sum(1 for m in self.emu.sent_by_bot(chat["id"])
                                        if m.get("text", "").startswith("✊ Letter of solidarity #1"))
                        for chat in self.chats})

    async def report(self, within: float) -> str:
        pattern = re.compile(r"#1 delivered to \d+ of \d+")
        return await self.emu.wait_for(lambda: next((m["text"] for m in self.emu.sent_by_bot(self.mods)
                                                     if pattern.match(m.get("text", ""))), None),
                                       within, what="broadcast report")


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Broadcast]:
    async with TelegramEmulator(TOKEN) as emu:
        yield Broadcast(emu, tmp_path / "relay.db")


async def run_relay(scene: Broadcast, rates: Rates, **extra: str) -> Relay:
    relay = Relay(Settings.from_env(scene.settings(**extra)), rates={"telegram": rates})
    await relay.start()
    return relay


async def test_mixed_broadcast_within_the_limits_provokes_no_429(scene: Broadcast) -> None:
    # Telegram's limits scaled up five times, and the bot's pacing with them, to keep the test short.
    scene.emu.limits = Limits(global_per_second=150, per_chat_per_second=5, per_group_per_minute=100)
    await scene.subscribe(private=150, groups=50, channels=50)
    relay = await run_relay(scene, Rates(per_second=145, private_interval=0.2, group_interval=0.6,
                                         channel_interval=0.6))
    try:
        await scene.submit_and_approve()
        report = await scene.report(within=60)
    finally:
        await relay.stop()
    assert report.startswith("#1 delivered to 250 of 250")
    assert set(scene.received().values()) == {1}
    assert scene.emu.count_429 == 0


async def test_random_429s_and_5xx_lose_nothing_and_duplicate_nothing(scene: Broadcast) -> None:
    await scene.subscribe(private=60, groups=20, channels=20)
    relay = await run_relay(scene, Rates(per_second=500, private_interval=0, group_interval=0, channel_interval=0))
    try:
        await scene.submit_and_approve()
        scene.emu.random_429 = 0.2
        for _ in range(5):
            scene.emu.fail_next("sendMessage", status=502)
        report = await scene.report(within=90)
    finally:
        await relay.stop()
    assert report.startswith("#1 delivered to 100 of 100")
    assert set(scene.received().values()) == {1}
    assert scene.emu.count_429 > 5


async def test_bot_api_down_mid_broadcast_is_waited_out(scene: Broadcast) -> None:
    await scene.subscribe(channels=120)
    rates = Rates(per_second=40, private_interval=0, group_interval=0, channel_interval=0)
    relay = await run_relay(scene, rates)
    try:
        await scene.submit_and_approve()
        await scene.emu.wait_for(lambda: sum(scene.received().values()) >= 20, 30, what="broadcast under way")
        await scene.emu.stop()  # the Bot API is gone for a while
        await asyncio.sleep(4)
        await scene.emu.start()
        report = await scene.report(within=90)
    finally:
        await relay.stop()
    assert report.startswith("#1 delivered to 120 of 120")
    copies = scene.received()
    assert min(copies.values()) == 1
    # A send cut off by the outage may have reached Telegram before the connection dropped.
    assert sum(copies.values()) - len(copies) <= concurrency_for({"telegram": Pacer(rates)})


def start_bot_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    full = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PTB_TIMEDELTA": "1", **env}
    with log.open("ab") as output:
        return subprocess.Popen([sys.executable, "-m", "bot"], env=full, cwd=log.parent, stdout=output,
                                stderr=subprocess.STDOUT)


async def test_kill_9_mid_broadcast_loses_nothing_and_duplicates_at_most_the_sends_in_flight(
    scene: Broadcast, tmp_path: Path
) -> None:
    await scene.subscribe(channels=1000)
    env = scene.settings(TELEGRAM_MESSAGES_PER_SECOND="400", TELEGRAM_PAID_BROADCAST="true")
    log = tmp_path / "bot.log"
    bot = start_bot_process(env, log)
    try:
        await scene.submit_and_approve()
        await scene.emu.wait_for(lambda: sum(scene.received().values()) >= 300, 60, what="300 delivered")
        bot.send_signal(signal.SIGKILL)
        bot.wait(10)
        killed_at = sum(scene.received().values())
        bot = start_bot_process(env, log)
        report = await scene.report(within=120)
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(20) == 0, log.read_text()[-3000:]  # a clean stop after SIGTERM
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait()
    copies = scene.received()
    assert report.startswith("#1 delivered to 1000 of 1000")
    assert min(copies.values()) == 1, "a subscription never got the letter"
    duplicates = sum(copies.values()) - len(copies)
    in_flight = concurrency_for({"telegram": Pacer(replace(TELEGRAM_RATES, per_second=400))})
    print(f"kill -9 with {killed_at} of 1000 delivered: {duplicates} duplicates after the restart (bound {in_flight})")
    assert killed_at < 1000
    assert duplicates <= in_flight


async def test_progress_shows_on_the_card_then_the_final_report(scene: Broadcast) -> None:
    await scene.subscribe(channels=40)
    relay = await run_relay(scene, Rates(per_second=20, private_interval=0, group_interval=0, channel_interval=0))
    try:
        await scene.submit_and_approve()
        report = await scene.report(within=30)
    finally:
        await relay.stop()
    edits = [call["text"] for call in scene.emu.calls_of("editMessageText")]
    assert any(re.search(r"approved by Mo · delivering \d+/40", text) for text in edits)
    assert "approved by Mo · delivered to 40 of 40" in edits[-1]
    assert report.startswith("#1 delivered to 40 of 40")


async def test_paid_broadcast_flag_goes_only_on_letters(scene: Broadcast) -> None:
    await scene.subscribe(channels=3)
    relay = await run_relay(scene, FAST_RATES, TELEGRAM_PAID_BROADCAST="true")
    try:
        await scene.submit_and_approve()
        await scene.report(within=30)
    finally:
        await relay.stop()
    letters = [call for call in scene.emu.calls_of("sendMessage") if "Letter of solidarity" in call["text"]]
    notices = [call for call in scene.emu.calls_of("sendMessage") if "Letter of solidarity" not in call["text"]]
    assert len(letters) == 3 and all(call.get("allow_paid_broadcast") is True for call in letters)
    assert notices and all("allow_paid_broadcast" not in call for call in notices)


async def test_group_that_became_a_supergroup_is_followed(scene: Broadcast) -> None:
    group = scene.emu.add_group("Old group", supergroup=False)
    scene.chats.append({**group, "kind": "group"})
    await scene.subscribe()
    new_id = scene.emu.migrate_group(group)
    relay = await run_relay(scene, FAST_RATES)
    try:
        await scene.submit_and_approve()
        report = await scene.report(within=30)
    finally:
        await relay.stop()
    assert report.startswith("#1 delivered to 1 of 1")
    assert any(m.get("text", "").startswith("✊ Letter of solidarity #1") for m in scene.emu.sent_by_bot(new_id))
    db = await Database.open(scene.database)
    moved = await Repositories.over(db).subscriptions.find("telegram", str(new_id))
    await db.close()
    assert moved is not None and moved.active

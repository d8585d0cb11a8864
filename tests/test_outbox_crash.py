"""kill -9 while a message to a person waits for its retry: the restarted bot still sends it, exactly once.

Receipts, decision notices, card edits and broadcast reports must survive a crash as broadcasts do: each test makes
the first attempt fail with a 429 (Telegram's "retry after N"), kills the real bot process with SIGKILL while the
retry waits, starts a new process on the same database, and looks at the chats as people would see them.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulators.telegram import TelegramEmulator
from tests.test_delivery_engine import LETTER, TOKEN, Broadcast, start_bot_process

# Long enough that the kill surely lands inside the wait, short enough to keep each test well under 25 s.
RETRY_AFTER = 4
# A restarted bot has this long, beyond the retry_after, to start and send what it owes.
CATCH_UP = 12.0
# No Bot API call for this long: the bot has recorded what it just sent and is only waiting (for the retry).
QUIET = 0.5
# After the awaited message, time for a duplicate (a second sender of the same message) to show up.
SETTLE = 1.0

CARD = "📨 Letter #1 "
RECEIPT = "📨 Thank you! Your letter #1 is with the moderators"
NOTICE = "✅ Your letter #1 was approved"
REPORT = re.compile(r"#1 delivered to \d+ of \d+")


class Bot:
    """`python -m bot` on the scene's database, one process at a time; the last one is always reaped."""

    def __init__(self, scene: Broadcast, log: Path) -> None:
        self.env = scene.settings()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_bot_process(self.env, self.log)

    async def kill_9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, 10)

    async def stop(self) -> None:
        """SIGTERM and a clean exit: whatever the stop still sends is in the chats before they are counted."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        # Waited for in a thread: the bot's last calls on its way out need the emulator (this event loop).
        code = await asyncio.to_thread(self.process.wait, 20)
        assert code == 0, self.tail()

    def reap(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Broadcast]:
    async with TelegramEmulator(TOKEN) as emu:
        yield Broadcast(emu, tmp_path / "relay.db")


@pytest.fixture
def bot(scene: Broadcast, tmp_path: Path) -> Iterator[Bot]:
    running = Bot(scene, tmp_path / "bot.log")
    try:
        yield running
    finally:
        running.reap()  # before the scene's emulator stops: the fixture order guarantees it


def bot_texts(scene: Broadcast, chat: dict[str, Any], start: str | re.Pattern[str]) -> list[str]:
    """What the bot left in `chat` (as last edited) that begins with `start`."""
    texts = [m.get("text", "") for m in scene.emu.sent_by_bot(chat)]
    if isinstance(start, re.Pattern):
        return [text for text in texts if start.match(text)]
    return [text for text in texts if text.startswith(start)]


def cards(scene: Broadcast) -> list[str]:
    return bot_texts(scene, scene.mods, CARD)


def refuse_next(scene: Broadcast, method: str, chat: dict[str, Any], times: int = 1) -> int:
    """The next `times` calls of `method` into `chat` answer 429 "retry after RETRY_AFTER"; returns how many 429s
    the emulator had answered to `method` before, to tell when the bot has met the new ones."""
    before = refusals(scene, method)
    scene.emu.fail_next(method, times, retry_after=RETRY_AFTER, chat_id=chat["id"])
    return before


def refusals(scene: Broadcast, method: str) -> int:
    return sum(1 for name, status, _ in scene.emu.errors if name == method and status == 429)


async def quiet(scene: Broadcast, deadline: float) -> None:
    """Until the bot has made no Bot API call for QUIET seconds (a long poll counts once, when it starts), so
    that nothing it sent is still unrecorded; at the deadline at the latest, for the kill to land in the wait."""
    loop = asyncio.get_running_loop()
    seen, since = len(scene.emu.calls), loop.time()
    while loop.time() - since < QUIET and loop.time() < deadline:
        await asyncio.sleep(0.05)
        if len(scene.emu.calls) != seen:
            seen, since = len(scene.emu.calls), loop.time()


async def crash_and_recover(
    scene: Broadcast, bot: Bot, method: str, before: int, arrived: Callable[[], Any], what: str
) -> None:
    """Once the bot has met the 429, SIGKILL it inside the retry_after, start a new process, and wait for `what`;
    then a little longer, for a duplicate to show, and a clean stop."""
    await scene.emu.wait_for(lambda: refusals(scene, method) > before, 20, what=f"the refused {method}")
    await quiet(scene, asyncio.get_running_loop().time() + RETRY_AFTER / 2)
    await bot.kill_9()
    assert not arrived(), f"{what} came before the kill: the retry did not wait, the test exercised no crash"
    bot.start()
    try:
        await scene.emu.wait_for(arrived, RETRY_AFTER + CATCH_UP, what=f"{what} after the restart")
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- bot log ---\n{bot.tail()}") from None
    await asyncio.sleep(SETTLE)
    await bot.stop()


async def posted_card(scene: Broadcast) -> dict[str, Any]:
    return await scene.emu.wait_for(
        lambda: next((m for m in scene.emu.sent_by_bot(scene.mods) if m.get("text", "").startswith(CARD)), None),
        20, what="the card")


async def approve(scene: Broadcast) -> None:
    """Mo presses ✅ on the card. A button rather than `/approve 1`: the command's "#1 approved." answer is
    another message into the moderators' group, which would take the failure meant for the report."""
    card = await posted_card(scene)
    scene.emu.press_button(scene.mo, scene.mods, card["message_id"], "approve:1")


async def test_receipt_refused_then_kill_9_reaches_the_sender_once(scene: Broadcast, bot: Bot) -> None:
    before = refuse_next(scene, "sendMessage", scene.alice)  # the bot's first message to Alice is the receipt
    bot.start()
    scene.emu.user_sends(scene.alice, LETTER)
    await crash_and_recover(scene, bot, "sendMessage", before, lambda: bot_texts(scene, scene.alice, RECEIPT),
                            "the receipt")
    assert len(bot_texts(scene, scene.alice, RECEIPT)) == 1
    assert len(cards(scene)) == 1


async def test_decision_notice_refused_then_kill_9_reaches_the_sender_once(scene: Broadcast, bot: Bot) -> None:
    bot.start()
    scene.emu.user_sends(scene.alice, LETTER)
    await scene.emu.wait_for(lambda: bot_texts(scene, scene.alice, RECEIPT), 20, what="the receipt")
    before = refuse_next(scene, "sendMessage", scene.alice)
    await approve(scene)
    await crash_and_recover(scene, bot, "sendMessage", before, lambda: bot_texts(scene, scene.alice, NOTICE),
                            "the decision notice")
    assert len(bot_texts(scene, scene.alice, NOTICE)) == 1
    assert len(bot_texts(scene, scene.alice, RECEIPT)) == 1
    assert len(cards(scene)) == 1


async def test_card_edit_refused_then_kill_9_shows_the_approval(scene: Broadcast, bot: Bot) -> None:
    bot.start()
    scene.emu.user_sends(scene.alice, LETTER)
    await posted_card(scene)
    # Telegram refuses every edit in the group until retry_after has passed, and the approval's edit is followed
    # at once by the final status ("· delivered to 0 of 0", there being no subscribers): two refusals stand for
    # the window, so the approval shows only if a retry brings it, not because a later edit slipped in.
    before = refuse_next(scene, "editMessageText", scene.mods, times=2)
    await approve(scene)
    await crash_and_recover(scene, bot, "editMessageText", before,
                            lambda: any("approved by Mo" in text for text in cards(scene)),
                            "the card showing the approval")
    assert len(cards(scene)) == 1
    assert "approved by Mo" in cards(scene)[0]


async def test_report_refused_then_kill_9_reaches_the_moderators_once(scene: Broadcast, bot: Bot) -> None:
    await scene.subscribe(channels=3)
    bot.start()
    scene.emu.user_sends(scene.alice, LETTER)
    await posted_card(scene)
    # The card was the group's first message; approved with the button, the report is its next.
    before = refuse_next(scene, "sendMessage", scene.mods)
    await approve(scene)
    await crash_and_recover(scene, bot, "sendMessage", before, lambda: bot_texts(scene, scene.mods, REPORT),
                            "the broadcast report")
    reports = bot_texts(scene, scene.mods, REPORT)
    assert len(reports) == 1, reports
    assert reports[0].startswith("#1 delivered to 3 of 3")
    assert set(scene.received().values()) == {1}
    assert len(cards(scene)) == 1

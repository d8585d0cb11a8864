"""Abuse and authorization through the real transports: Synapse for Matrix, the strict Bot API emulator for
Telegram. Edits and redactions by supporters, letters that begin with "!", public moderation rooms, a moved
alias, rooms the bot leaves, and cards of letters that JSON-escaping makes twice their size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.app import Relay, StartupError
from bot.config import Settings
from handlers import rooms
from tests import test_e2e_matrix
from tests.emulators.telegram import TelegramEmulator
from tests.homeserver import Homeserver, fresh_name
from tests.matrix_people import direct_room, text_body
from tests.test_e2e_matrix import FAST, Room, _until_joined

pytest_plugins = ("tests.synapse_fixtures",)
pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "123456:TEST-relay-token"


# --- Matrix --------------------------------------------------------------------------------------------------

room = test_e2e_matrix.room  # the same scene as the other Matrix tests: bot, moderators, a supporter


async def test_matrix_letter_beginning_with_a_bang_is_a_letter(room: Room) -> None:
    await room.start_bot()
    dm, card = await room.letter_from_alice("!Basta ya: free the nine of Tucumán", 1)
    assert "!Basta ya: free the nine of Tucumán" in text_body(card)
    await room.alice.send_text(dm, "!nonsense")
    await room.alice.wait_for_text(dm, room.bot_user, r"!withdraw N")  # a lone unknown word: the help


async def test_matrix_edit_changes_a_pending_letter_and_not_a_decided_one(room: Room) -> None:
    await room.start_bot()
    dm, original = await room.sent_by_alice("Signed: Alicia Pérez, Calle 5, Rosario", 1)
    await room.alice.edit(dm, original, "Signed: A.")
    await room.mo.wait_for_text(room.mods, room.bot_user, r"edited by the sender")
    card = await room.card(1)
    assert "Signed: A." in text_body(card) and "Calle 5" not in text_body(card)
    await room.alice.wait_for_text(dm, room.bot_user, "now has your new text")
    await room.mo.send_text(room.mods, "!approve 1")
    await room.alice.wait_for_text(dm, room.bot_user, "was approved")
    await room.alice.edit(dm, original, "Signed: someone else entirely")
    await room.alice.wait_for_text(dm, room.bot_user, "already approved; your edit was not applied")
    letter = await room.relays[-1].ctx.repos.letters.get(1)
    assert letter is not None and letter.text == "Signed: A."


async def test_matrix_redaction_withdraws_a_pending_letter(room: Room) -> None:
    await room.start_bot()
    dm, sent = await room.sent_by_alice("I should not have written this", 1)
    await room.alice.redact(dm, sent)
    await room.alice.wait_for_text(dm, room.bot_user, "#1 is withdrawn")
    await room.mo.wait_for_text(room.mods, room.bot_user, "withdrawn by its sender")
    letter = await room.relays[-1].ctx.repos.letters.get(1)
    assert letter is not None and letter.status == "withdrawn"


async def test_matrix_cards_of_escape_heavy_letters_fit_in_events(room: Room) -> None:
    """`"` and `\\` count twice in JSON: a card measured as characters would be over 64 KiB and never posted."""
    await room.start_bot()
    letter = ('"\\' * 50 + "\n") * 580  # 59,160 characters, about 118,000 bytes as JSON, twice over (body + HTML)
    dm = await direct_room(room.alice, room.bot_user)
    await room.alice.send_text(dm, letter[:1000] + "…")  # Synapse itself refuses the whole text in one event
    await room.alice.wait_for_text(dm, room.bot_user, r"#1\b")
    ctx = room.relays[-1].ctx
    assert ctx is not None
    await ctx.repos.letters.edit_text(1, letter, len(letter), _decision())
    from handlers import cards

    await cards.refresh(ctx, 1)  # the card, re-cut for the letter as it now is
    # Posted one by one: once part 4 is there, parts 2 to 4 are.
    await room.mo.wait_for_text(room.mods, room.bot_user, r"part 4 of \d+", within=30)
    events = [event for event in await room.mo.messages(room.mods, limit=200) if event.get("sender") == room.bot_user]
    sizes = [len(json.dumps(event["content"], ensure_ascii=False).encode()) for event in events]
    assert max(sizes) < 60_000
    parts = [text_body(event) or "" for event in events if (text_body(event) or "").startswith("Letter #1, part")]
    assert len(parts) >= 3


def _decision():
    from storage.letters import Decision

    return Decision(1, "edit", "matrix", "@mo:test", "Mo", None, 0.0)


async def test_public_matrix_moderation_room_stops_the_bot(homeserver: Homeserver, tmp_path: Path) -> None:
    bot = await homeserver.register(fresh_name("relay"), exempt=True)
    mo = await homeserver.register(fresh_name("mo"))
    mods = await mo.create_room(name="Moderators", invite=[bot.user_id], preset="public_chat")
    await bot.close()
    relay = Relay(_matrix_settings(homeserver, bot.user_id, bot.password, mods, tmp_path), rates={"matrix": FAST})
    with pytest.raises(StartupError, match=r"MATRIX_MODERATION_ROOM: .*public"):
        await relay.start()
    await relay.stop()


async def test_a_moved_alias_stops_the_bot(homeserver: Homeserver, tmp_path: Path) -> None:
    bot = await homeserver.register(fresh_name("relay"), exempt=True)
    mo = await homeserver.register(fresh_name("mo"))
    first = await mo.create_room(name="Moderators", invite=[bot.user_id])
    alias = f"#{fresh_name('mods')}:{bot.user_id.split(':', 1)[1]}"
    await mo.request("PUT", f"/directory/room/{alias.replace('#', '%23')}", {"room_id": first})
    await bot.close()
    settings = _matrix_settings(homeserver, bot.user_id, bot.password, alias, tmp_path)
    relay = Relay(settings, rates={"matrix": FAST})
    await relay.start()
    assert relay.ctx is not None and relay.ctx.policy.moderation_rooms[0].chat_id == first
    await relay.stop()
    elsewhere = await mo.create_room(name="Not the moderators", invite=[bot.user_id])
    await mo.request("DELETE", f"/directory/room/{alias.replace('#', '%23')}")
    await mo.request("PUT", f"/directory/room/{alias.replace('#', '%23')}", {"room_id": elsewhere})
    relay = Relay(settings, rates={"matrix": FAST})
    with pytest.raises(StartupError, match=r"MATRIX_MODERATION_ROOM: .* now points to"):
        await relay.start()
    await relay.stop()
    assert bot.user_id not in await mo.joined_members(elsewhere)  # it never joined the other room


async def test_invited_rooms_of_no_use_are_left(room: Room, homeserver: Homeserver) -> None:
    relay = await room.start_bot()
    ada = await homeserver.register(fresh_name("ada"))
    # Three members: a room of two is a direct chat, which the bot keeps.
    parked = await ada.create_room(name=fresh_name("Parking"), invite=[room.kim.user_id, room.bot_user])
    await room.kim.join(parked)
    await _until_joined(ada, parked, room.bot_user)
    subscribed = await room.subscriber_room(ada, "en")
    assert relay.ctx is not None
    later = _Later(relay.ctx.clock, 3601)
    relay.ctx.clock = later
    assert await rooms.leave_idle(relay.ctx) == 1
    assert room.bot_user not in await ada.joined_members(parked)
    assert room.bot_user in await ada.joined_members(subscribed)


class _Later:
    def __init__(self, clock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def now(self) -> float:
        return self.clock.now() + self.seconds


def _matrix_settings(homeserver: Homeserver, user: str, password: str, mods: str, tmp_path: Path) -> Settings:
    return Settings.from_env({
        "MATRIX_HOMESERVER": homeserver.url, "MATRIX_USER": user, "MATRIX_PASSWORD": password,
        "MATRIX_MODERATION_ROOM": mods, "DATABASE": str(tmp_path / "relay.db"), "TRANSLATOR": "none",
    })


# --- Telegram -----------------------------------------------------------------------------------------------


async def test_telegram_edits_of_pending_and_decided_letters(tmp_path: Path) -> None:
    async with TelegramEmulator(TOKEN) as emu:
        mo = emu.add_user("Mo")
        alice = emu.add_user("Alicia")
        mods = emu.add_group("Moderators", members=[(mo, "member")])
        relay = Relay(_telegram_settings(emu, mods, tmp_path), rates={"telegram": FAST})
        await relay.start()
        try:
            sent = emu.user_sends(alice, "Greetings from Alicia Pérez, Calle 5")
            await emu.wait_for(lambda: [m for m in emu.sent_by_bot(alice) if "#1" in m["text"]])
            emu.user_edits(alice, sent["message_id"], "Greetings from A.")
            card = await emu.wait_for(lambda: next((m for m in emu.sent_by_bot(mods) if "edited by the sender" in
                                                    m.get("text", "")), None))
            assert "Greetings from A." in card["text"] and "Calle 5" not in card["text"]
            emu.press_button(mo, mods["id"], card["message_id"], "approve:1")
            await emu.wait_for(lambda: [m for m in emu.sent_by_bot(alice) if "approved" in m["text"]])
            emu.user_edits(alice, sent["message_id"], "Something else")
            await emu.wait_for(lambda: [m for m in emu.sent_by_bot(alice) if "your edit was not applied" in m["text"]])
            emu.user_sends(mo, "/start@SomeOtherBot", chat=mods)
            emu.user_sends(alice, "/ we are with you")
            await emu.wait_for(lambda: [m for m in emu.sent_by_bot(alice) if "#2" in m["text"]])
            assert not [m for m in emu.sent_by_bot(mods) if "Every letter appears here" in m.get("text", "")]
        finally:
            await relay.stop()


async def test_public_telegram_moderation_chat_exits_1_with_one_line(tmp_path: Path) -> None:
    async with TelegramEmulator(TOKEN) as emu:
        mods = emu.add_group("Moderators", username="our_mods")
        env = {**os.environ, "TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": emu.api_root,
               "TELEGRAM_MODERATION_CHAT": str(mods["id"]), "DATABASE": str(tmp_path / "relay.db"),
               "TRANSLATOR": "none", "PTB_TIMEDELTA": "1"}
        process = await _run_bot(env)
    assert process.returncode == 1
    problems = [line for line in process.stderr.splitlines() if " INFO " not in line and line.strip()]
    assert len(problems) == 1, process.stderr  # the start-up log at INFO, then the one line that matters
    assert "ERROR" in problems[0] and "TELEGRAM_MODERATION_CHAT" in problems[0] and "public" in problems[0]
    assert "Traceback" not in process.stderr


async def _run_bot(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import asyncio

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", "--env-file", os.devnull], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    # In a thread: the emulator answering the bot runs on this event loop.
    return await asyncio.to_thread(run)


def _telegram_settings(emu: TelegramEmulator, mods: dict, tmp_path: Path) -> Settings:
    return Settings.from_env({
        "TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": emu.api_root, "TELEGRAM_MODERATION_CHAT": str(mods["id"]),
        "DATABASE": str(tmp_path / "relay.db"), "TRANSLATOR": "none", "LETTER_JOIN_SECONDS": "1",
    })

"""The whole bot (bot.app.Relay, python-telegram-bot, SQLite file) against the strict Bot API emulator over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.app import Relay
from bot.config import Settings
from bot.pacing import Rates
from tests.emulators.telegram import TelegramEmulator

TOKEN = "123456:TEST-relay-token"
# Telegram's real pacing (3 s between posts into one channel) would make these tests slow; the pacer has its own.
FAST = Rates(per_second=100, private_interval=0.05, group_interval=0.05, channel_interval=0.05)
ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "letters.jsonl"


@dataclass
class Scene:
    emu: TelegramEmulator
    mods: dict[str, Any]
    channel: dict[str, Any]
    mo: dict[str, Any]
    kim: dict[str, Any]
    alice: dict[str, Any]
    database: Path
    relays: list[Relay]

    async def start_bot(self, join_seconds: float = 1.0, rates: Rates = FAST, **more: str) -> Relay:
        settings = Settings.from_env({
            "TELEGRAM_TOKEN": TOKEN,
            "TELEGRAM_API_URL": self.emu.api_root,
            "TELEGRAM_MODERATION_CHAT": str(self.mods["id"]),
            "DATABASE": str(self.database),
            "LETTER_JOIN_SECONDS": str(join_seconds),
            "TRANSLATOR": "none",
            **more,
        })
        relay = Relay(settings, rates={"telegram": rates})
        await relay.start()
        self.relays.append(relay)
        return relay

    async def stop_bot(self) -> None:
        await self.relays.pop().stop()

    def bot_texts(self, chat: Any) -> list[str]:
        return [message.get("text", "") for message in self.emu.sent_by_bot(chat)]

    async def bot_says(self, chat: Any, pattern: str, count: int = 1, within: float = 10) -> list[str]:
        """Wait until at least `count` of the bot's messages in `chat` match `pattern`; returns them."""
        def matching() -> list[str]:
            found = [text for text in self.bot_texts(chat) if re.search(pattern, text)]
            return found if len(found) >= count else []
        return await self.emu.wait_for(matching, within, what=f"bot says {pattern!r} in {chat}")

    async def card(self, number: int) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for message in self.emu.sent_by_bot(self.mods):
                if message.get("text", "").startswith(f"📨 Letter #{number} ") and message.get("reply_markup"):
                    return message
            return None
        return await self.emu.wait_for(find, what=f"card of letter #{number}")

    async def subscribe_channel(self) -> None:
        self.emu.user_sends(self.mo, "/subscribe @news en", chat=self.mods)
        await self.bot_says(self.mods, "News now receives approved letters")


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    async with TelegramEmulator(TOKEN) as emu:
        mo = emu.add_user("Mo", username="mo")
        kim = emu.add_user("Kim")
        alice = emu.add_user("Alice", username="alice_at_risk", language_code="en")
        mods = emu.add_group("Moderators", members=[(mo, "member"), (kim, "administrator")],
                             bot_status="administrator")
        channel = emu.add_channel("News", username="news")
        scene = Scene(emu, mods, channel, mo, kim, alice, tmp_path / "relay.db", [])
        try:
            yield scene
        finally:
            while scene.relays:
                await scene.stop_bot()


def identifies(text: str, person: dict[str, Any]) -> bool:
    return any(str(value) in text for value in (person["id"], person["first_name"], person.get("username")) if value)


async def test_letter_travels_from_supporter_to_channel_once(scene: Scene) -> None:
    emu = scene.emu
    await scene.start_bot()
    await scene.subscribe_channel()
    letter = "Desde la Ciudad de México, enviamos nuestra solidaridad ✊\n\nCon cariño, la asamblea"
    emu.user_sends(scene.alice, letter)
    (receipt,) = await scene.bot_says(scene.alice, r"#1\b")
    assert "/withdraw 1" in receipt
    card = await scene.card(1)
    assert letter in card["text"] and not identifies(card["text"], scene.alice)
    buttons = [b for row in card["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons[0]["text"].startswith("✅") and buttons[1]["text"].startswith("❌")

    emu.press_button(scene.mo, scene.mods["id"], card["message_id"], buttons[0]["callback_data"])
    (delivered,) = await scene.bot_says(scene.channel, "Letter of solidarity #1")
    assert letter in delivered
    assert not identifies(delivered, scene.alice)
    await scene.bot_says(scene.alice, "approved")
    edited = await emu.wait_for(
        lambda: next((m for m in emu.sent_by_bot(scene.mods) if m["message_id"] == card["message_id"]
                      and "approved by Mo" in m.get("text", "")), None), what="card edited")
    assert "reply_markup" not in edited
    await scene.bot_says(scene.mods, r"#1 delivered to 1 of 1 subscribers")
    assert len(scene.bot_texts(scene.channel)) == 1


async def test_double_press_and_late_reject_change_nothing(scene: Scene) -> None:
    emu = scene.emu
    await scene.start_bot()
    await scene.subscribe_channel()
    emu.user_sends(scene.alice, "We are with you.")
    card = await scene.card(1)
    # All three presses reach the bot before it has handled the first (the buttons are still there); Mo's two
    # are handled in order, Kim's beside them: whoever comes first decides, the others are told who did.
    emu.press_button(scene.mo, scene.mods["id"], card["message_id"], "approve:1")
    emu.press_button(scene.mo, scene.mods["id"], card["message_id"], "approve:1")
    emu.press_button(scene.kim, scene.mods["id"], card["message_id"], "approve:1")
    answers = await emu.wait_for(lambda: [a for a in emu.callback_answers] if len(emu.callback_answers) == 3 else [],
                                 what="three callback answers")
    texts = sorted(answer.get("text", "") for answer in answers)
    assert texts[0] == "#1 approved."
    (winner,) = {re.match(r"#1 was already approved by (Mo|Kim) at \d\d:\d\d UTC\.", text)[1] for text in texts[1:]}
    assert [entry.moderator for entry in await scene.relays[-1].ctx.repos.letters.history(1)] == [winner]
    await scene.bot_says(scene.mods, "delivered to 1 of 1")
    emu.user_sends(scene.kim, "/reject 1 too late", chat=scene.mods)
    await scene.bot_says(scene.mods, f"#1 was already approved by {winner}")
    assert len(scene.bot_texts(scene.channel)) == 1
    assert not [t for t in scene.bot_texts(scene.alice) if "not published" in t]


async def test_approve_refused_in_private_chat_and_for_non_members(scene: Scene) -> None:
    emu = scene.emu
    eve = emu.add_user("Eve")
    emu.set_member(scene.mods, eve, "member")
    await scene.start_bot()
    emu.user_sends(scene.alice, "Please approve me")
    await scene.card(1)
    emu.user_sends(scene.mo, "/approve 1")  # in Mo's private chat with the bot
    await scene.bot_says(scene.mo, "only in the moderators' room")
    emu.user_sends(eve, "/approve 1", chat=scene.mods)
    emu.set_member(scene.mods, eve, "left")  # gone before the bot checks who asked
    await scene.bot_says(scene.mods, "only in the moderators' room, for its members")
    emu.user_sends(scene.mo, "/pending", chat=scene.mods)
    await scene.bot_says(scene.mods, r"#1 ·")


async def test_markup_mentions_links_and_ampersands_arrive_literally(scene: Scene) -> None:
    emu = scene.emu
    await scene.start_bot()
    await scene.subscribe_channel()
    letter = "<b>not bold</b> & <a href='x'>no link</a> @everyone https://example.org/?a=1&b=2 &amp; 1 < 2"
    emu.user_sends(scene.alice, letter)
    card = await scene.card(1)
    # The same characters, but for a word joiner after the @: Telegram sees no mention, so nobody is pinged.
    shown = letter.replace("@", "@\u2060")
    assert shown in card["text"]
    # The letter is a block quote on the card: nothing in it can look like the bot's own lines.
    entities = card.get("entities", [])
    assert {entity["type"] for entity in entities} <= {"bold", "italic", "blockquote", "url"}
    (quote,) = [entity for entity in entities if entity["type"] == "blockquote"]
    assert _slice16(card["text"], quote["offset"], quote["length"]).strip() == shown
    emu.user_sends(scene.mo, "/approve 1", chat=scene.mods)
    (delivered,) = await scene.bot_says(scene.channel, "Letter of solidarity #1")
    assert shown in delivered
    message = emu.sent_by_bot(scene.channel)[0]
    formatted = {(e["type"], delivered[e["offset"]:e["offset"] + e["length"]]) for e in message.get("entities", [])
                 if e["type"] != "url"}
    assert formatted == {("bold", "✊ Letter of solidarity #1")}  # only the bot's own title is formatted


def _slice16(text: str, offset: int, length: int) -> str:
    """Telegram's entity offsets count UTF-16 code units."""
    units = text.encode("utf-16-le")
    return units[offset * 2:(offset + length) * 2].decode("utf-16-le")


def client_split(text: str, limit: int = 4096) -> list[str]:
    """What a Telegram client does with a pasted text over the limit: cut at the last space that fits."""
    parts = []
    while len(text) > limit:
        cut = text.rfind(" ", 0, limit)
        parts.append(text[:cut])
        text = text[cut + 1:]
    return [*parts, text]


async def test_client_split_long_letter_is_one_letter_and_arrives_in_parts(scene: Scene) -> None:
    emu = scene.emu
    await scene.start_bot(join_seconds=2)
    await scene.subscribe_channel()
    sentences = ["Nous sommes avec vous. ", "Мы с вами. ", "Estamos con ustedes. ", "我们和你们在一起。 ", "✊🏽 "]
    letter = "".join(sentences[i % len(sentences)] for i in range(800))[:10_000].strip()
    pieces = client_split(letter)
    assert len(pieces) == 3
    for piece in pieces:
        emu.user_sends(scene.alice, piece)
    (receipt,) = await scene.bot_says(scene.alice, r"#\d+")
    assert "#1" in receipt
    emu.user_sends(scene.mo, "/approve 1", chat=scene.mods)
    await scene.bot_says(scene.mods, "delivered to 1 of 1")
    parts = scene.bot_texts(scene.channel)
    assert [re.match(r"✊ Letter of solidarity #1 \((\d)/3\)", part)[1] for part in parts] == ["1", "2", "3"]
    assert len(scene.bot_texts(scene.alice)) == 2  # one receipt, one "approved": never three letters
    assert all(len(part.encode("utf-16-le")) // 2 <= 4096 for part in parts)
    bodies = [part.split("\n\n", 1)[1] for part in parts]
    assert " ".join(" ".join(bodies).split()) == " ".join(letter.split())


async def test_restart_neither_loses_nor_repeats(scene: Scene) -> None:
    emu = scene.emu
    await scene.start_bot()
    await scene.subscribe_channel()
    emu.user_sends(scene.alice, "First letter")
    await scene.card(1)
    emu.user_sends(scene.mo, "/approve 1", chat=scene.mods)
    await scene.bot_says(scene.mods, "#1 delivered to 1 of 1")
    await scene.stop_bot()

    emu.user_sends(scene.alice, "Written while the bot was down")
    await scene.start_bot()
    await scene.bot_says(scene.alice, r"#2\b")
    card = await scene.card(2)
    assert "Written while the bot was down" in card["text"]
    emu.press_button(scene.mo, scene.mods["id"], card["message_id"], "approve:2")
    await scene.stop_bot()  # possibly before the delivery went out

    await scene.start_bot()
    await scene.bot_says(scene.channel, "Letter of solidarity #2")
    await scene.bot_says(scene.mods, "#2 delivered to 1 of 1")
    texts = scene.bot_texts(scene.channel)
    assert len(texts) == 2 and "#1" in texts[0] and "#2" in texts[1]
    assert len([t for t in scene.bot_texts(scene.alice) if "Thank you" in t]) == 2
    assert len([text for text in scene.bot_texts(scene.mods) if text.startswith("📨")]) == 2


async def test_blocking_the_bot_ends_the_subscription_at_once(scene: Scene) -> None:
    emu = scene.emu
    bob = emu.add_user("Bob")
    await scene.start_bot()
    emu.user_sends(bob, "/subscribe en")
    await scene.bot_says(bob, "You will now receive approved letters in English")
    emu.block_bot(bob)  # Telegram tells the bot with a my_chat_member update
    # Handled beside Mo's command, not necessarily before it: Mo asks until the list is empty.
    answers = r"active subscriptions|Nobody is subscribed yet"
    for _ in range(50):
        asked = len([text for text in scene.bot_texts(scene.mods) if re.search(answers, text)])
        emu.user_sends(scene.mo, "/subscribers", chat=scene.mods)
        reply = await scene.bot_says(scene.mods, answers, count=asked + 1)
        if "Nobody is subscribed yet" in reply[-1]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the blocked person is still subscribed")


async def test_forbidden_at_delivery_deactivates_and_is_reported(scene: Scene) -> None:
    emu = scene.emu
    bob = emu.add_user("Bob")
    await scene.start_bot()
    await scene.subscribe_channel()
    emu.user_sends(bob, "/subscribe en")
    await scene.bot_says(bob, "You will now receive approved letters in English")
    emu.fail_next("sendMessage", error="forbidden-bot-blocked-by-user", chat_id=bob["id"])
    emu.user_sends(scene.alice, "hello all")
    await scene.card(1)
    emu.user_sends(scene.mo, "/approve 1", chat=scene.mods)
    (report,) = await scene.bot_says(scene.mods, "#1 delivered to 1 of 2 subscribers")
    assert "1 deactivated" in report and "bot was blocked by the user" in report
    emu.user_sends(scene.mo, "/subscribers", chat=scene.mods)
    (listing,) = await scene.bot_says(scene.mods, "1 active subscriptions")
    assert "News" in listing and str(bob["id"]) not in listing


async def test_rate_limit_and_server_errors_are_retried_without_loss(scene: Scene) -> None:
    emu = scene.emu
    await scene.start_bot()
    await scene.subscribe_channel()
    emu.fail_next("sendMessage", retry_after=1, chat_id=scene.channel["id"])
    emu.fail_next("sendMessage", status=502, chat_id=scene.channel["id"])
    emu.user_sends(scene.alice, "hello all")
    await scene.card(1)
    emu.user_sends(scene.mo, "/approve 1", chat=scene.mods)
    await scene.bot_says(scene.channel, "Letter of solidarity #1", within=20)
    await scene.bot_says(scene.mods, "#1 delivered to 1 of 1")
    assert len(scene.bot_texts(scene.channel)) == 1


async def test_group_subscribes_by_its_admin_only(scene: Scene) -> None:
    emu = scene.emu
    admin, member = emu.add_user("Ada"), emu.add_user("Ben")
    group = emu.add_group("Comrades", members=[(admin, "administrator"), (member, "member")])
    await scene.start_bot()
    emu.user_sends(member, "/subscribe es", chat=group)
    await scene.bot_says(group, "Only an administrator")
    emu.user_sends(admin, "/subscribe@relay_test_bot es", chat=group)
    await scene.bot_says(group, "receives approved letters in Spanish")


async def test_channel_subscribes_itself_and_people_read_their_language(scene: Scene) -> None:
    emu = scene.emu
    lucia = emu.add_user("Lucía", language_code="es")
    await scene.start_bot()
    emu.channel_posts(scene.channel, "/subscribe es")  # only a channel's admins can post in it
    await scene.bot_says(scene.channel, "Spanish|español")
    emu.user_sends(lucia, "¡Fuerza!")
    (receipt,) = await scene.bot_says(lucia, r"#1\b")
    assert "Gracias" in receipt and "/withdraw 1" in receipt
    emu.user_sends(scene.mo, "/approve 1", chat=scene.mods)
    (delivered,) = await scene.bot_says(scene.channel, "#1")
    assert "¡Fuerza!" in delivered and "Lucía" not in delivered
    assert delivered.startswith("✊ Carta de solidaridad #1")


@pytest.mark.skipif(not CORPUS.exists(), reason="../shared/corpus/letters.jsonl not present: real letters not run")
async def test_real_letters_from_the_corpus(scene: Scene) -> None:
    emu = scene.emu
    letters = [json.loads(line)["text"] for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    await scene.start_bot()
    await scene.subscribe_channel()
    for number, text in enumerate(letters, start=1):
        for piece in client_split(text):  # long ones arrive as a client sends them: in pieces
            emu.user_sends(scene.alice, piece)
        card = await scene.card(number)
        emu.press_button(scene.mo, scene.mods["id"], card["message_id"], f"approve:{number}")
        await scene.bot_says(scene.mods, rf"#{number} delivered to 1 of 1")
    delivered = scene.bot_texts(scene.channel)
    assert len(letters) >= 5 and len(delivered) >= len(letters)
    for number, text in enumerate(letters, start=1):
        received = " ".join(" ".join(m.split("\n\n", 1)[1].split()) for m in delivered
                            if re.match(rf"✊ Letter of solidarity #{number}\b", m))
        assert " ".join(text.split()) == received
    assert not any(identifies(text, scene.alice) for text in delivered)



async def test_rejected_token_is_one_line_without_the_token(tmp_path: Path) -> None:
    async with TelegramEmulator(TOKEN) as emu:
        wrong = "123456:WRONG-token-never-to-be-logged"
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PTB_TIMEDELTA": "1", "TELEGRAM_TOKEN": wrong,
               "TELEGRAM_API_URL": emu.api_root, "TELEGRAM_MODERATION_CHAT": "-100", "TRANSLATOR": "none",
               "DATABASE": str(tmp_path / "relay.db")}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    assert process.returncode == 1
    assert "telegram did not start" in output and "rejected" in output
    assert wrong not in output and "WRONG-token" not in output
    assert "Traceback" not in output


async def test_a_receipt_does_not_wait_behind_a_broadcast(scene: Scene) -> None:
    """While a letter goes to 200 channels at Telegram's pace (about 7 s), a new supporter's receipt comes within
    2 s: notices do not queue behind deliveries."""
    from bot.networks.telegram import TELEGRAM_RATES
    from tests.emulators.telegram import Limits

    emu = scene.emu
    emu.limits = Limits()
    relay = await scene.start_bot(rates=TELEGRAM_RATES)
    assert relay.ctx is not None
    channels = [emu.add_channel(f"Channel {index}", username=f"channel_{index:03d}") for index in range(200)]
    for channel in channels:
        await relay.ctx.repos.subscriptions.subscribe("telegram", str(channel["id"]), "channel", channel["title"],
                                                      "en", 0.0)
    emu.user_sends(scene.alice, "To every channel that will have it.")
    card = await scene.card(1)
    approve = card["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    emu.press_button(scene.mo, scene.mods["id"], card["message_id"], approve)

    def delivered() -> int:
        return sum(len(emu.sent_by_bot(channel)) for channel in channels)

    await emu.wait_for(lambda: delivered() >= 30, timeout=20, what="the broadcast under way")
    bob = emu.add_user("Bob", language_code="en")
    asked = asyncio.get_running_loop().time()
    emu.user_sends(bob, "Fuerza desde Rosario.")
    await scene.bot_says(bob, r"#2\b", within=10)
    waited = asyncio.get_running_loop().time() - asked
    print(f"\nreceipt during a 200-channel broadcast: {waited:.2f} s ({delivered()} of 200 delivered by then)")
    assert delivered() < 200, "the broadcast was over before the receipt was asked for: nothing was measured"
    assert waited < 2.0, f"the receipt took {waited:.2f} s"

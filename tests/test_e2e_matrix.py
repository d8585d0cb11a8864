"""The whole bot on a real Synapse, and both networks at once; people act through plain client-server HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.app import Relay
from bot.config import Settings
from bot.pacing import Rates
from tests.emulators.telegram import TelegramEmulator
from tests.homeserver import Homeserver, fresh_name
from tests.matrix_people import MatrixError, Person, direct_room, text_body

pytest_plugins = ("tests.synapse_fixtures",)
pytestmark = pytest.mark.asyncio(loop_scope="session")

FAST = Rates(per_second=100, private_interval=0.05, group_interval=0.05, channel_interval=0.05)
TOKEN = "123456:TEST-relay-token"


@dataclass
class Room:
    """The Matrix side of a test: the bot's account, moderators, a supporter, and the bot while it runs."""

    hs: Homeserver
    bot_user: str
    bot_password: str
    mods: str
    mo: Person
    kim: Person
    alice: Person
    database: Path
    relays: list[Relay] = field(default_factory=list)
    telegram: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # further settings, e.g. MATRIX_ENCRYPTION

    def settings(self) -> Settings:
        return Settings.from_env({
            "MATRIX_HOMESERVER": self.hs.url,
            "MATRIX_USER": self.bot_user,
            "MATRIX_PASSWORD": self.bot_password,
            "MATRIX_MODERATION_ROOM": self.mods,
            "DATABASE": str(self.database),
            "LETTER_JOIN_SECONDS": "1",
            "TRANSLATOR": "none",
            **self.telegram,
            **self.env,
        })

    async def start_bot(self) -> Relay:
        relay = Relay(self.settings(), rates={"telegram": FAST, "matrix": FAST})
        await relay.start()
        self.relays.append(relay)
        return relay

    async def stop_bot(self) -> None:
        await self.relays.pop().stop()

    async def card(self, number: int, reader: Person | None = None) -> dict[str, Any]:
        """Letter `number`'s card as `reader` (Mo unless said) sees it in the moderation room."""
        reader = reader or self.mo
        await reader.wait_for_text(self.mods, self.bot_user, rf"^📨 Letter #{number} ")
        for event in await reader.messages(self.mods):
            body = text_body(event)
            if event.get("sender") == self.bot_user and body and body.startswith(f"📨 Letter #{number} "):
                return event
        raise AssertionError(f"card #{number} vanished")

    async def letter_from_alice(self, text: str, number: int) -> tuple[str, dict[str, Any]]:
        dm, _sent = await self.sent_by_alice(text, number)
        return dm, await self.card(number)

    async def sent_by_alice(self, text: str, number: int) -> tuple[str, str]:
        """Alice's letter, receipted and carded: her direct room and the id of the event she sent."""
        dm = await direct_room(self.alice, self.bot_user)
        sent = await self.alice.send_text(dm, text)
        await self.alice.wait_for_text(dm, self.bot_user, rf"#{number}\b")
        await self.card(number)
        return dm, sent

    async def subscriber_room(self, admin: Person, language: str) -> str:
        room_id = await admin.create_room(name=fresh_name("Subscribers"), invite=[self.bot_user])
        await _until_joined(admin, room_id, self.bot_user)
        await admin.send_text(room_id, f"!subscribe {language}")
        await admin.wait_for_text(room_id, self.bot_user, "receives? approved letters")
        return room_id


async def _until_joined(person: Person, room_id: str, user_id: str, within: float = 20) -> None:
    for _ in range(int(within / 0.1)):
        if user_id in await person.joined_members(room_id):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{user_id} never joined {room_id}")


async def make_room(homeserver: Homeserver, tmp_path: Path, exempt: bool = True) -> Room:
    bot = await homeserver.register(fresh_name("relay"), exempt=exempt)
    mo = await homeserver.register(fresh_name("mo"), displayname="Mo")
    kim = await homeserver.register(fresh_name("kim"), displayname="Kim")
    alice = await homeserver.register(fresh_name("alice"), displayname="Alice At Risk")
    mods = await mo.create_room(name="Moderators", invite=[bot.user_id, kim.user_id])
    await kim.join(mods)
    await bot.close()  # the bot logs in by itself, with its own device
    return Room(homeserver, bot.user_id, bot.password, mods, mo, kim, alice, tmp_path / "relay.db")


@pytest_asyncio.fixture(loop_scope="session")
async def room(homeserver: Homeserver, tmp_path: Path) -> AsyncIterator[Room]:
    scene = await make_room(homeserver, tmp_path)
    try:
        yield scene
    finally:
        while scene.relays:
            await scene.stop_bot()


async def test_letter_approved_by_reaction_reaches_rooms_once(room: Room, homeserver: Homeserver) -> None:
    await room.start_bot()
    ada = await homeserver.register(fresh_name("ada"))
    subscribers = await room.subscriber_room(ada, "en")
    letter = "Hold the line. <b>no markup</b> @room & friends ✊"
    dm, card = await room.letter_from_alice(letter, 1)
    assert letter in text_body(card)
    assert "Alice" not in text_body(card) and room.alice.user_id not in text_body(card)
    reactions = [e for e in await room.mo.messages(room.mods) if e["type"] == "m.reaction"
                 and e["sender"] == room.bot_user]
    assert {e["content"]["m.relates_to"]["key"] for e in reactions} == {"✅", "❌"}

    await room.mo.react(room.mods, card["event_id"], "✅")
    delivered = await ada.wait_for_text(subscribers, room.bot_user, "Letter of solidarity #1")
    assert letter in delivered and "Alice" not in delivered
    await room.mo.wait_for_text(room.mods, room.bot_user, r"(?s)^📨 Letter #1 .*approved by Mo")
    await room.alice.wait_for_text(dm, room.bot_user, "approved")
    await room.mo.wait_for_text(room.mods, room.bot_user, "#1 delivered to 1 of 1 subscribers")
    events = [e for e in await ada.messages(subscribers) if e.get("sender") == room.bot_user
              and "Letter of solidarity" in (text_body(e) or "")]
    assert len(events) == 1
    assert events[0]["content"]["m.mentions"] == {}  # "@room" in a letter pings no one
    assert "&lt;b&gt;" in events[0]["content"]["formatted_body"]


async def test_reject_by_reaction_and_by_command_tell_the_sender(room: Room) -> None:
    await room.start_bot()
    dm, card = await room.letter_from_alice("first", 1)
    await room.kim.react(room.mods, card["event_id"], "❌")
    await room.alice.wait_for_text(dm, room.bot_user, "#1 was not published")
    await room.alice.send_text(dm, "second")
    await room.alice.wait_for_text(dm, room.bot_user, r"#2\b")
    await room.mo.send_text(room.mods, "!reject 2 names a place and a day")
    await room.alice.wait_for_text(dm, room.bot_user, "The moderators said: “names a place and a day”")
    await room.mo.send_text(room.mods, "!approve 2")
    await room.mo.wait_for_text(room.mods, room.bot_user, "#2 was already rejected by Mo")


async def test_outsider_cannot_decide(room: Room, homeserver: Homeserver) -> None:
    eve = await homeserver.register(fresh_name("eve"))
    await room.start_bot()
    _dm, card = await room.letter_from_alice("please", 1)
    with pytest.raises(MatrixError):
        await eve.react(room.mods, card["event_id"], "✅")  # Synapse refuses: she is not in the room
    await eve.send_text(await direct_room(eve, room.bot_user), "!approve 1")
    await room.mo.send_text(room.mods, "!pending")
    await room.mo.wait_for_text(room.mods, room.bot_user, r"#1 ·")


async def test_room_admin_subscribes_plain_member_cannot_kick_deactivates(room: Room, homeserver: Homeserver) -> None:
    await room.start_bot()
    ada, ben, cy = [await homeserver.register(fresh_name(n)) for n in ("ada", "ben", "cy")]
    room_id = await ada.create_room(name="Comrades", invite=[room.bot_user, ben.user_id, cy.user_id])
    await ben.join(room_id)
    await cy.join(room_id)
    await ada.set_power_level(room_id, cy.user_id, 50)
    await _until_joined(ada, room_id, room.bot_user)
    await ben.send_text(room_id, "!subscribe en")
    await ben.wait_for_text(room_id, room.bot_user, "Only an administrator")
    await cy.send_text(room_id, "!subscribe es")  # power level 50, not the creator
    await cy.wait_for_text(room_id, room.bot_user, "receives approved letters in Spanish")
    # Room v12: the creator is not in m.room.power_levels at all, yet outranks everyone.
    assert ada.user_id not in (await ada.room_state(room_id, "m.room.power_levels")).get("users", {})
    await ada.send_text(room_id, "!subscribe fr")
    await ada.wait_for_text(room_id, room.bot_user, "receives approved letters in French")
    await room.mo.send_text(room.mods, "!subscribers")
    await room.mo.wait_for_text(room.mods, room.bot_user, "1 active subscriptions")
    await ada.kick(room_id, room.bot_user, "enough")
    for _ in range(100):
        await room.mo.send_text(room.mods, "!subscribers")
        try:
            await room.mo.wait_for_text(room.mods, room.bot_user, "Nobody is subscribed yet", within=0.5)
            break
        except AssertionError:
            continue
    else:
        raise AssertionError("the kicked room is still subscribed")


async def test_long_letter_is_carded_and_delivered_in_parts(room: Room, homeserver: Homeserver) -> None:
    await room.start_bot()
    ada = await homeserver.register(fresh_name("ada"))
    subscribers = await room.subscriber_room(ada, "en")
    paragraph = "Our hands, our voices, our hope: we are with you until the end. " * 30
    letter = "\n\n".join([paragraph.strip()] * 18)  # about 34,000 characters: more than one event may carry
    await room.letter_from_alice(letter, 1)
    await room.mo.send_text(room.mods, "!approve 1")
    await room.mo.wait_for_text(room.mods, room.bot_user, "#1 delivered to 1 of 1", within=30)
    parts = [t for t in await ada.texts_from(subscribers, room.bot_user) if t.startswith("✊")]
    titles = [part.split("\n", 1)[0] for part in parts]
    # Each event stays under 60,000 bytes of JSON, the text counted twice (body and formatted_body).
    assert len(parts) >= 2
    assert titles == [f"✊ Letter of solidarity #1 ({n}/{len(parts)})" for n in range(1, len(parts) + 1)]
    bodies = [p.split("\n\n", 1)[1] for p in parts]
    assert " ".join(" ".join(bodies).split()) == " ".join(letter.split())


async def test_moderator_subscribes_a_room_by_id(room: Room, homeserver: Homeserver) -> None:
    await room.start_bot()
    ada = await homeserver.register(fresh_name("ada"))
    room_id = await ada.create_room(name="Far Away", invite=[room.bot_user])
    await _until_joined(ada, room_id, room.bot_user)
    await room.mo.send_text(room.mods, f"!subscribe {room_id} fr")
    await room.mo.wait_for_text(room.mods, room.bot_user, "Far Away now receives approved letters in French")


async def test_restart_replays_nothing(room: Room) -> None:
    await room.start_bot()
    dm, _card = await room.letter_from_alice("before the restart", 1)
    await room.stop_bot()
    await room.alice.send_text(dm, "while the bot is down")
    await room.start_bot()
    await room.alice.wait_for_text(dm, room.bot_user, r"#2\b")
    await asyncio.sleep(1.5)
    receipts = [t for t in await room.alice.texts_from(dm, room.bot_user) if "Thank you" in t]
    assert len(receipts) == 2
    cards = [t for t in await room.mo.texts_from(room.mods, room.bot_user) if t.startswith("📨")]
    assert len(cards) == 2


async def test_a_busy_room_while_the_bot_is_down_loses_nothing(room: Room) -> None:
    """A sync returns the last few events of a room (`limited`: Synapse's default is 10); what came before them
    while the bot was down is fetched from the room's history: a letter and a moderator's command among the
    chatter are both handled."""
    for person in (room.alice, room.kim, room.mo):
        await room.hs.exempt_from_rate_limits(person.user_id)
    await room.start_bot()
    dm, _card = await room.letter_from_alice("the first letter", 1)
    await room.stop_bot()
    await room.alice.send_text(dm, "a letter written while the bot was down")
    for number in range(12):
        await room.alice.send_text(dm, f"and another thought, number {number}, sent as its own message")
    await room.mo.send_text(room.mods, "!approve 1")
    for number in range(12):
        await room.kim.send_text(room.mods, f"moderators' chatter {number}")
    await room.start_bot()
    await room.alice.wait_for_text(dm, room.bot_user, "#1 .*approved|approved.*#1|was approved", within=30)
    await room.alice.wait_for_text(dm, room.bot_user, r"#2\b", within=30)
    receipts = [text for text in await room.alice.texts_from(dm, room.bot_user) if "Thank you" in text]
    assert any("#2" in text for text in receipts)


async def test_without_rate_limit_exemption_nothing_is_lost(homeserver: Homeserver, tmp_path: Path) -> None:
    scene = await make_room(homeserver, tmp_path, exempt=False)
    try:
        await scene.start_bot()
        admins = [await homeserver.register(fresh_name("ad")) for _ in range(3)]
        rooms = [await scene.subscriber_room(admin, "en") for admin in admins]
        await scene.letter_from_alice("to many rooms", 1)
        await scene.mo.send_text(scene.mods, "!approve 1")
        await scene.mo.wait_for_text(scene.mods, scene.bot_user, "#1 delivered to 3 of 3", within=90)
        for admin, room_id in zip(admins, rooms, strict=True):
            texts = [t for t in await admin.texts_from(room_id, scene.bot_user) if "Letter of solidarity" in t]
            assert len(texts) == 1
    finally:
        while scene.relays:
            await scene.stop_bot()


async def test_telegram_letter_approved_in_matrix_reaches_both_networks(room: Room, homeserver: Homeserver) -> None:
    async with TelegramEmulator(TOKEN) as emu:
        tg_mo = emu.add_user("Tele Mo")
        sasha = emu.add_user("Sasha", username="sasha_at_risk")
        tg_mods = emu.add_group("Moderators", members=[(tg_mo, "member")], bot_status="administrator")
        channel = emu.add_channel("News", username="news")
        room.telegram = {"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": emu.api_root,
                         "TELEGRAM_MODERATION_CHAT": str(tg_mods["id"])}
        await room.start_bot()
        ada = await homeserver.register(fresh_name("ada"))
        matrix_subscribers = await room.subscriber_room(ada, "en")
        emu.user_sends(tg_mo, "/subscribe @news en", chat=tg_mods)
        await emu.wait_for(lambda: any("News now receives" in m.get("text", "") for m in emu.sent_by_bot(tg_mods)))

        emu.user_sends(sasha, "From Kyiv with love ✊")
        card = await room.card(1)  # the Telegram letter is carded in the Matrix room too
        tg_card = await emu.wait_for(lambda: next((m for m in emu.sent_by_bot(tg_mods)
                                                   if m.get("text", "").startswith("📨 Letter #1 ")), None))
        await room.mo.react(room.mods, card["event_id"], "✅")

        delivered = await ada.wait_for_text(matrix_subscribers, room.bot_user, "From Kyiv with love")
        assert "Sasha" not in delivered and "sasha" not in delivered
        await emu.wait_for(lambda: any("From Kyiv with love" in m.get("text", "") for m in emu.sent_by_bot(channel)))
        edited = await emu.wait_for(lambda: next((m for m in emu.sent_by_bot(tg_mods) if m["message_id"] ==
                                                  tg_card["message_id"] and "approved by Mo" in m["text"]), None))
        assert "reply_markup" not in edited
        await room.mo.wait_for_text(room.mods, room.bot_user, "#1 delivered to 2 of 2 subscribers")
        await room.stop_bot()


async def test_synapse_restart_mid_broadcast_delivers_exactly_once(room: Room, homeserver: Homeserver) -> None:
    relay = Relay(room.settings(), rates={"matrix": Rates(per_second=8, private_interval=0, group_interval=0,
                                                             channel_interval=0)})
    await relay.start()
    room.relays.append(relay)
    admin = await homeserver.register(fresh_name("ad"), exempt=True)
    rooms = []
    for _ in range(24):
        room_id = await admin.create_room(name=fresh_name("Sub"), invite=[room.bot_user])
        rooms.append(room_id)
    assert relay.ctx is not None
    for room_id in rooms:  # straight into storage: !subscribe itself is tested above, and Mo is rate limited
        await _until_joined(admin, room_id, room.bot_user)
        await relay.ctx.repos.subscriptions.subscribe("matrix", room_id, "group", None, "en", 0)
    await room.letter_from_alice("through the storm", 1)
    await room.mo.send_text(room.mods, "!approve 1")

    for _ in range(400):
        if (await relay.ctx.repos.deliveries.progress(1)).sent >= 4:
            break
        await asyncio.sleep(0.025)
    sent_before = (await relay.ctx.repos.deliveries.progress(1)).sent
    await homeserver.restart()  # mid-broadcast: in-flight sends fail and are retried with the same txn id
    assert 0 < sent_before < 24
    await room.mo.wait_for_text(room.mods, room.bot_user, "#1 delivered to 24 of 24", within=90)
    for room_id in rooms:
        copies = [t for t in await admin.texts_from(room_id, room.bot_user) if t.startswith("✊ Letter of solidarity")]
        assert len(copies) == 1, f"{room_id} got {len(copies)} copies"

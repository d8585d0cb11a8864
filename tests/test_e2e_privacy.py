"""Writers' privacy end to end: the whole bot on both networks (Bot API emulator, real Synapse, a LibreTranslate
server), with RETENTION_DAYS=0 and `forget` on each network, then every log line, every message the bot posted
outside the moderation rooms and every byte of its files searched for the writers and for the secrets.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bot import logs
from bot.app import Relay
from bot.config import Settings
from tests.emulators.libretranslate import FakeLibreTranslate
from tests.emulators.telegram import TelegramEmulator
from tests.homeserver import Homeserver, fresh_name
from tests.matrix_people import Person, direct_room, text_body
from tests.test_e2e_matrix import FAST, _until_joined

pytest_plugins = ("tests.synapse_fixtures",)
pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "123456:TEST-relay-token-that-must-never-show"
LIBRE_KEY = "libre-api-key-never-logged-7f3a"
# Loggers of the servers this test runs in its own process: they are the test's, not the bot's.
TEST_SIDE = ("tests", "aiohttp.access", "aiohttp.server", "aiohttp.web")

PUBLISHED = "We stand with the workers of the port. Solidarity from Leipzig!"
REJECTED = "My cousin Ramiro Quispe-Huanca is held at the Yanamayo prison, write to him"
WITHDRAWN = "I changed my mind about this letter from the barricade on Calle Ocho"
CARMELA = "Carmela never asks to be forgotten; retention alone must cut her link to this letter"
WAITING = "A letter still waiting when its writer asks to be forgotten, from the Tbilisi assembly"


class Capture(logging.Handler):
    """Every record the bot's process logs, formatted the way `python -m bot` formats it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stream = io.StringIO()
        self.lines: list[tuple[int, str]] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(TEST_SIDE):
            return
        self.lines.append((record.levelno, self.format(record)))


@contextmanager
def bot_logging(settings: Settings) -> Iterator[Capture]:
    """The bot's own logging set-up (bot.logs), with its output captured instead of printed."""
    capture = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    _redacting, restore = logs.configure(settings, [capture])
    try:
        yield capture
    finally:
        restore()
        root.removeHandler(capture)
        root.setLevel(old_level)


def relay_said_everything(relay: Relay) -> Callable[[], Awaitable[bool]]:
    async def nothing_waits() -> bool:
        assert relay.ctx is not None
        return not await relay.ctx.repos.outbox.waiting()
    return nothing_waits


def found(haystack: str | bytes, needles: dict[str, str]) -> list[str]:
    if isinstance(haystack, bytes):
        return [name for name, value in needles.items() if value.encode() in haystack]
    return [name for name, value in needles.items() if value in haystack]


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_nothing_identifies_a_writer_or_leaks_a_secret(level: str, homeserver: Homeserver,
                                                               tmp_path: Path) -> None:
    bot = await homeserver.register(fresh_name("relay"), exempt=True)
    modesta = await homeserver.register(fresh_name("modesta"), displayname="Modesta Moderatorova")
    bea = await homeserver.register(fresh_name("bea"), displayname="Beatriz Escondida")
    ada = await homeserver.register(fresh_name("ada"), displayname="Ada Reader")
    matrix_mods = await modesta.create_room(name="Moderators", invite=[bot.user_id])
    await bot.close()
    subscribers = await ada.create_room(name=fresh_name("Subscribers"), invite=[bot.user_id])
    async with TelegramEmulator(TOKEN) as emu, FakeLibreTranslate(api_key=LIBRE_KEY) as libre:
        mo = emu.add_user("Mokgadi", username="mokgadi_mod")
        alice = emu.add_user("Alicja", username="alicja_at_risk", language_code="en")
        carmela = emu.add_user("Carmela", username="carmela_no_forget", language_code="en")  # relies on retention
        mods = emu.add_group("Moderators", members=[(mo, "administrator")], bot_status="administrator")
        channel = emu.add_channel("News", username="news")
        settings = Settings.from_env({
            "TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": emu.api_root, "TELEGRAM_MODERATION_CHAT": str(mods["id"]),
            "MATRIX_HOMESERVER": homeserver.url, "MATRIX_USER": bot.user_id, "MATRIX_PASSWORD": bot.password,
            "MATRIX_MODERATION_ROOM": matrix_mods, "DATABASE": str(tmp_path / "data" / "relay.db"),
            "TRANSLATOR": "libre", "LIBRETRANSLATE_URL": libre.url, "LIBRETRANSLATE_API_KEY": LIBRE_KEY,
            "RETENTION_DAYS": "0", "LETTER_JOIN_SECONDS": "1", "LOG_LEVEL": level,
        })
        with bot_logging(settings) as captured:
            relay = Relay(settings, rates={"telegram": FAST, "matrix": FAST})
            await relay.start()
            try:
                dms = await _the_whole_flow(emu, mods, channel, mo, alice, matrix_mods, modesta, bea, ada,
                                            subscribers, bot.user_id)
                emu.user_sends(carmela, CARMELA)
                card = await emu.wait_for(lambda: next((m for m in emu.sent_by_bot(mods) if m.get("reply_markup")
                                                        and m.get("text", "").startswith("📨 Letter #5 ")), None))
                emu.press_button(mo, mods["id"], card["message_id"], "reject:5")
                await emu.wait_for(lambda: [m for m in emu.sent_by_bot(carmela) if "not published" in m["text"]])
                # Notices go ahead of cards: the last cards are scrubbed once the outbox has nothing left.
                await emu.wait_for(relay_said_everything(relay), 30, what="the outbox sent")
            finally:
                await relay.stop()
        session = (tmp_path / "data" / "matrix-store" / "session.json").read_text()
        access_token = re.search(r'"access_token": "([^"]+)"', session)
        assert access_token is not None
        secrets = {"telegram token": TOKEN, "matrix password": bot.password, "libre key": LIBRE_KEY,
                   "matrix access token": access_token[1]}
        writers = {
            "telegram user id": str(alice["id"]), "telegram username": alice["username"],
            "telegram name": alice["first_name"], "matrix user id": bea.user_id,
            "telegram user id 2": str(carmela["id"]), "telegram username 2": carmela["username"],
            "matrix localpart": bea.user_id[1:].split(":")[0], "matrix display name": "Beatriz Escondida",
            **{f"matrix direct room {index}": room for index, room in enumerate(dms)},
        }
        moderators = {"telegram moderator": mo["first_name"], "matrix moderator": "Modesta Moderatorova"}
        letters = {"rejected text": REJECTED, "rejected text 2": CARMELA, "withdrawn text": WITHDRAWN,
                   "waiting text": WAITING}

        checked = 0
        for levelno, line in captured.lines:
            assert not found(line, secrets), line
            if levelno >= logging.INFO:
                assert not found(line, writers | moderators | letters | {"published text": PUBLISHED}), line
            checked += 1
        assert any("letter #2: reject" in line for _, line in captured.lines)  # the bot did log, by number
        assert any(levelno == logging.DEBUG for levelno, _ in captured.lines) == (level == "DEBUG")

        public = [message.get("text", "") for chat in (channel, alice, carmela) for message in emu.sent_by_bot(chat)]
        public += [text_body(event) or "" for event in await ada.messages(subscribers)]
        for dm in dms:
            public += [text_body(event) or "" for event in await bea.messages(dm)]
        assert any("Leipzig" in text for text in public)  # the published letter did go out, translated
        for text in public:
            assert not found(text, writers | secrets | moderators), text

        # The moderation rooms keep no text of a rejected or withdrawn letter either (cards scrubbed).
        for message in emu.sent_by_bot(mods):
            assert not found(message.get("text", ""), letters), message.get("text")
        for event in await modesta.messages(matrix_mods):
            assert not found(str(event.get("content", {})), letters), event

        for path in sorted((tmp_path / "data").rglob("*")):
            if path.is_file():
                content = path.read_bytes()
                hits = found(content, writers | letters)
                if path.name != "session.json":
                    hits += found(content, secrets)
                assert not hits, f"{path.name}: {hits}"
        print(f"\nleak test ({level}): {len(writers | letters)} identifiers and texts, {len(secrets)} secrets; "
              f"{checked} log lines, {len(public)} posted messages, "
              f"{sum(1 for p in (tmp_path / 'data').rglob('*') if p.is_file())} files searched: 0 hits")


async def _the_whole_flow(emu: TelegramEmulator, mods: dict[str, Any], channel: dict[str, Any], mo: dict[str, Any],
                          alice: dict[str, Any], matrix_mods: str, modesta: Person, bea: Person, ada: Person,
                          subscribers: str, bot_user: str) -> list[str]:
    def bot_said(chat: Any, pattern: str) -> Any:
        return emu.wait_for(lambda: [m for m in emu.sent_by_bot(chat) if re.search(pattern, m.get("text", ""))],
                            what=pattern)

    def card(number: int) -> Any:
        return emu.wait_for(lambda: next((m for m in emu.sent_by_bot(mods) if m.get("reply_markup")
                                          and m.get("text", "").startswith(f"📨 Letter #{number} ")), None),
                            what=f"card #{number}")

    await _until_joined(ada, subscribers, bot_user)
    await ada.send_text(subscribers, "!subscribe es")
    await ada.wait_for_text(subscribers, bot_user, "receives? approved letters")
    emu.user_sends(mo, "/subscribe @news es", chat=mods)
    await bot_said(mods, "News now receives")
    emu.user_sends(alice, "/subscribe en")
    await bot_said(alice, "You will now receive")

    emu.user_sends(alice, PUBLISHED)
    first = await card(1)
    emu.press_button(mo, mods["id"], first["message_id"], "approve:1")
    await bot_said(channel, "Leipzig")
    await ada.wait_for_text(subscribers, bot_user, "Leipzig")
    await bot_said(mods, r"#1 delivered to 3 of 3")
    await bot_said(alice, "approved")

    dm = await direct_room(bea, bot_user)
    await bea.send_text(dm, REJECTED)
    await bea.wait_for_text(dm, bot_user, r"#2\b")
    await modesta.wait_for_text(matrix_mods, bot_user, r"^📨 Letter #2 ")
    await modesta.send_text(matrix_mods, "!reject 2 it names a prisoner")
    await bea.wait_for_text(dm, bot_user, "not published")

    emu.user_sends(alice, WITHDRAWN)
    await card(3)
    emu.user_sends(alice, "/withdraw 3")
    await bot_said(alice, "#3 is withdrawn")
    emu.user_sends(alice, "/forget")
    await bot_said(alice, "/forget yes")
    emu.user_sends(alice, "/forget yes")
    await bot_said(alice, "forgotten")

    await bea.send_text(dm, WAITING)
    await bea.wait_for_text(dm, bot_user, r"#4\b")
    await bea.send_text(dm, "!forget yes")
    await bea.wait_for_text(dm, bot_user, "forgotten")
    await modesta.wait_for_text(matrix_mods, bot_user, r"#4 withdrawn")
    return [dm]

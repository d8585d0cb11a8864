"""Translation end to end: the bot, the Bot API emulator and a LibreTranslate-compatible server, all over HTTP."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import Relay
from bot.config import Settings
from bot.pacing import Rates
from bot.translation import DeepTranslator
from tests.emulators.libretranslate import FakeLibreTranslate
from tests.emulators.telegram import TelegramEmulator
from tests.test_e2e_telegram import client_split

TOKEN = "123456:TEST-translation-token"
FAST = Rates(per_second=200, private_interval=0, group_interval=0, channel_interval=0)
SPANISH = (
    "Desde la Ciudad de México enviamos nuestra solidaridad a las compañeras que salieron a las calles.\n\n"
    "Seguimos juntas, hoy y siempre.\nCon cariño, la asamblea del barrio"
)


class Scene:
    def __init__(self, emu: TelegramEmulator, libre: FakeLibreTranslate, database: Path) -> None:
        self.emu, self.libre, self.database = emu, libre, database
        self.mo = emu.add_user("Mo")
        self.alice = emu.add_user("Alicia", language_code="es")
        self.mods = emu.add_group("Moderators", members=[(self.mo, "member")], bot_status="administrator")
        self.channels: dict[str, list[dict[str, Any]]] = {}
        self.relay: Relay | None = None

    async def start(self, wait: float = 600, call_timeout: float = 5) -> None:
        settings = Settings.from_env({
            "TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": self.emu.api_root,
            "TELEGRAM_MODERATION_CHAT": str(self.mods["id"]), "DATABASE": str(self.database),
            "TRANSLATOR": "libre", "LIBRETRANSLATE_URL": self.libre.url, "TRANSLATION_WAIT": str(wait),
        })
        translator = DeepTranslator("libre", libre_url=self.libre.url, call_timeout=call_timeout, attempts=2,
                                    first_backoff=0.05)
        self.relay = Relay(settings, rates={"telegram": FAST}, translator=translator)
        await self.relay.start()

    async def subscribe(self, language: str, count: int = 2) -> None:
        for number in range(count):
            channel = self.emu.add_channel(f"{language} {number}", username=f"chan_{language}_{number}")
            self.channels.setdefault(language, []).append(channel)
            self.emu.user_sends(self.mo, f"/subscribe @chan_{language}_{number} {language}", chat=self.mods)
            await self.said(self.mods, f"{language} {number} now receives")

    async def said(self, chat: Any, pattern: str, within: float = 15) -> str:
        def find() -> str | None:
            return next((m["text"] for m in self.emu.sent_by_bot(chat) if re.search(pattern, m.get("text", ""))), None)
        return await self.emu.wait_for(find, within, what=f"{pattern!r} in {chat}")

    async def approve(self, text: str, number: int) -> None:
        for piece in client_split(text):
            self.emu.user_sends(self.alice, piece)
        await self.said(self.mods, rf"^📨 Letter #{number} ")
        self.emu.user_sends(self.mo, f"/approve {number}", chat=self.mods)

    def letters_in(self, language: str, number: int) -> list[str]:
        return [m["text"] for channel in self.channels[language] for m in self.emu.sent_by_bot(channel)
                if m.get("text", "").startswith("✊ ") and f"#{number}" in m["text"].split("\n", 1)[0]]


@pytest.fixture
async def scene(tmp_path: Path) -> AsyncIterator[Scene]:
    async with TelegramEmulator(TOKEN) as emu, FakeLibreTranslate() as libre:
        scene = Scene(emu, libre, tmp_path / "relay.db")
        try:
            yield scene
        finally:
            if scene.relay is not None:
                await scene.relay.stop()


async def test_one_call_per_language_original_for_its_own(scene: Scene) -> None:
    await scene.start()
    for language in ("es", "en", "fr"):
        await scene.subscribe(language)
    await scene.approve(SPANISH, 1)
    card = await scene.said(scene.mods, r"^📨 Letter #1 ")
    assert "Spanish" in card  # detected offline and shown to the moderators
    await scene.said(scene.mods, "#1 delivered to 6 of 6 subscribers")
    assert scene.libre.call_count == 2
    assert sorted(call.target for call in scene.libre.calls) == ["en", "fr"]
    for text in scene.letters_in("es", 1):
        assert SPANISH in text and "translated" not in text and "traducido" not in text
    for language, line in (("en", "— translated from Spanish"), ("fr", "— translated from espagnol")):
        texts = scene.letters_in(language, 1)
        assert len(texts) == 2
        for text in texts:
            body = text.split("\n\n", 1)[1]
            expected = "\n".join(f"[{language}] {row}" if row else "" for row in SPANISH.split("\n"))
            assert body.startswith(expected)  # paragraphs and line breaks as the writer made them
            assert text.endswith(line)


async def test_long_letter_is_translated_in_chunks_and_rejoined(scene: Scene) -> None:
    await scene.start()
    await scene.subscribe("en", count=1)
    paragraph = ("Compañeras, seguimos aquí, juntas, escribiendo cartas que cruzan fronteras y mares. " * 6).strip()
    letter = "\n\n".join([paragraph] * 24)  # about 12,000 characters
    await scene.approve(letter, 1)
    await scene.said(scene.mods, "#1 delivered to 1 of 1", within=30)
    assert scene.libre.call_count >= 3
    assert all(len(call.q) <= 5000 for call in scene.libre.calls)
    parts = scene.letters_in("en", 1)
    bodies = [part.split("\n\n", 1)[1].removesuffix("— translated from Spanish").strip() for part in parts]
    assert "\n\n".join(bodies).split("\n\n") == [f"[en] {paragraph}"] * 24


async def test_hung_translator_falls_back_after_the_wait_without_delaying_others(scene: Scene) -> None:
    scene.libre.hang = True
    await scene.start(wait=8, call_timeout=1)
    await scene.subscribe("en", count=1)
    await scene.approve(SPANISH, 1)
    await scene.said(scene.mods, r"^✅ #1 approved|approved\.")
    scene.emu.user_sends(scene.alice, "We are with you all, from Lisbon, every single day of this long year.")
    await scene.said(scene.mods, r"^📨 Letter #2 ")
    scene.emu.user_sends(scene.mo, "/approve 2", chat=scene.mods)
    await scene.said(scene.mods, "#2 delivered to 1 of 1", within=5)  # English for English: no translation
    assert scene.letters_in("en", 1) == []  # letter 1 still waits for its translation
    await scene.said(scene.mods, "#1 delivered to 1 of 1", within=20)
    (fallback,) = scene.letters_in("en", 1)
    assert SPANISH in fallback
    assert fallback.endswith("— no translation was available: this is the original, in Spanish")

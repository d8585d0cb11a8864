"""Translation in the broadcast: once per language, stored, postponed not blocked, and a fallback after the wait."""

from __future__ import annotations

import asyncio

import pytest

from handlers.ports import NotReady, TranslationError
from handlers.translating import TranslationService
from tests.conftest import MODS, FixedDetector, World, broadcast_of


class CountingTranslator:
    """Translates by tagging each line; counts calls; can fail or hang on demand."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failures = 0
        self.permanent = False
        self.hang = asyncio.Event()
        self.hanging = False

    async def translate(self, text: str, source: str, target: str) -> str:
        self.calls.append((source, target))
        if self.hanging:
            await self.hang.wait()
        if self.failures:
            self.failures -= 1
            raise TranslationError("translator down", permanent=self.permanent)
        return "\n".join(f"[{target}] {line}" if line else "" for line in text.split("\n"))


@pytest.fixture
def translator(world: World) -> CountingTranslator:
    translator = CountingTranslator()
    world.ctx.detector = FixedDetector("es")
    world.ctx.translating = TranslationService(translator, world.ctx.repos.translations, world.clock, 600)
    return translator


async def approve(world: World, text: str) -> None:
    user = world.user("1")
    await world.dispatch(world.message(world.private(user), user, text, limit=0))
    await world.dispatch(world.message(world.mods, world.moderator, "/approve 1"))


async def compose_all(world: World, language: str, attempts: int = 50) -> str:
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None
    for _ in range(attempts):
        try:
            messages = await broadcast_of(world.ctx, letter, "-1", language)
        except NotReady:
            await asyncio.sleep(0.01)
            continue
        return "\n\n".join(part for m in messages for part in (m.title, m.text, m.footer) if part)
    raise AssertionError("never ready")


async def test_one_call_per_language_and_the_original_for_its_own(world: World, translator: CountingTranslator) -> None:
    await approve(world, "Hola.\n\nSeguimos juntas.")
    for language in ("en", "en", "fr", "fr", "es", "es"):
        await compose_all(world, language)
    assert sorted(translator.calls) == [("es", "en"), ("es", "fr")]
    english = await compose_all(world, "en")
    assert "[en] Hola.\n\n[en] Seguimos juntas." in english
    assert english.endswith("— translated from Spanish")
    spanish = await compose_all(world, "es")
    assert "Hola.\n\nSeguimos juntas." in spanish and "translated" not in spanish


async def test_translation_is_postponed_not_blocking(world: World, translator: CountingTranslator) -> None:
    translator.hanging = True
    await approve(world, "Hola")
    letter = await world.ctx.repos.letters.get(1)
    with pytest.raises(NotReady):
        await broadcast_of(world.ctx, letter, "-1", "en")
    world.clock.advance(601)  # TRANSLATION_WAIT is over: the original goes out with a note
    text = await compose_all(world, "en")
    assert "Hola" in text and "no translation was available: this is the original, in Spanish" in text
    await world.ctx.translating.close()


async def test_permanent_failure_sends_the_original_at_once(world: World, translator: CountingTranslator) -> None:
    translator.failures, translator.permanent = 1, True
    await approve(world, "Hola")
    text = await compose_all(world, "uk")
    assert "no translation was available" in text


async def test_moderator_replaces_and_reads_a_translation(world: World, translator: CountingTranslator) -> None:
    user = world.user("1")
    await world.dispatch(world.message(world.private(user), user, "Hola a todas"))
    await world.dispatch(world.message(world.mods, world.moderator, "/translation 1 en Hello to everyone\n\nTruly."))
    assert "replaced" in world.network.in_chat(MODS)[-1].full_text
    await world.dispatch(world.message(world.mods, world.moderator, "/translation 1 en"))
    assert world.network.in_chat(MODS)[-1].message.text == "Hello to everyone\n\nTruly."
    await world.dispatch(world.message(world.mods, world.moderator, "/approve 1"))
    assert "Hello to everyone\n\nTruly." in await compose_all(world, "en")
    assert translator.calls == []


async def test_moderator_corrects_the_language(world: World, translator: CountingTranslator) -> None:
    await approve(world, "Bom dia")
    await world.dispatch(world.message(world.mods, world.moderator, "/lang 1 pt"))
    assert "marked as Portuguese" in world.network.in_chat(MODS)[-1].full_text
    await compose_all(world, "en")
    assert translator.calls == [("pt", "en")]
    await world.dispatch(world.message(world.mods, world.moderator, "/lang 1 xx"))
    assert "Which letter and language" in world.network.in_chat(MODS)[-1].full_text

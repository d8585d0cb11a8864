"""Translations of approved letters: one per letter and language, made in the background, stored, reused.

A delivery that needs a translation not made yet is postponed (NotReady), never blocked: a slow or hung
translator holds up only the letters and languages waiting for it. After `translation_wait` seconds from the
decision the original goes out instead, with a line saying no translation was available.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from handlers.loggable import failure_summary
from handlers.ports import Clock, NotReady, TranslationError, Translator
from storage.letters import Letter
from storage.translations import TranslationRepository

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
FIRST_BACKOFF = 2.0
MAX_BACKOFF = 120.0


@dataclass(frozen=True)
class LetterText:
    text: str
    translated_from: str | None = None  # the original language, when this is a translation
    untranslated: bool = False  # a translation was wanted but none could be made in time


class TranslationService:
    def __init__(
        self,
        translator: Translator,
        translations: TranslationRepository,
        clock: Clock,
        wait_seconds: float,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self.translator = translator
        self.translations = translations
        self.clock = clock
        self.wait_seconds = wait_seconds
        self.on_ready = on_ready
        self._running: dict[tuple[int, str], asyncio.Task[None]] = {}
        self._given_up: dict[tuple[int, str], str] = {}

    async def text_for(self, letter: Letter, language: str) -> LetterText:
        """The letter for readers of `language`; raises NotReady while its translation is being made."""
        if letter.language in ("und", language):
            return LetterText(letter.text)
        stored = await self.translations.get(letter.id, language)
        if stored is not None:
            return LetterText(stored, translated_from=letter.language)
        if (letter.id, language) in self._given_up or self._waited_enough(letter):
            return LetterText(letter.text, untranslated=True)
        self.request(letter, language)
        raise NotReady(f"translation of #{letter.id} into {language}", POLL_SECONDS)

    def _waited_enough(self, letter: Letter) -> bool:
        return letter.decided_at is not None and self.clock.now() - letter.decided_at >= self.wait_seconds

    def request(self, letter: Letter, language: str) -> None:
        """Start making the translation unless it is being made already (one call per language, not per chat)."""
        key = (letter.id, language)
        if key in self._running:
            return
        task = asyncio.get_running_loop().create_task(self._make(letter, language))
        self._running[key] = task
        task.add_done_callback(lambda _task: self._running.pop(key, None))

    async def _make(self, letter: Letter, language: str) -> None:
        key, delay = (letter.id, language), FIRST_BACKOFF
        deadline = (letter.decided_at or self.clock.now()) + self.wait_seconds
        while True:
            try:
                text = await self.translator.translate(letter.text, letter.language, language)
            except Exception as error:  # a TranslationError, or a translator's own bug: neither stops the others
                permanent = isinstance(error, TranslationError) and error.permanent
                if permanent or self.clock.now() + delay >= deadline:
                    log.warning("letter #%d: no translation into %s: %s", letter.id, language, _why(error))
                    self._given_up[key] = _why(error)
                    self.on_ready()
                    return
                log.info("letter #%d: translation into %s failed (%s); retrying", letter.id, language, _why(error))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            await self.translations.put(letter.id, language, text, self.translator.name, self.clock.now())
            self.on_ready()
            return

    def forget(self, letter_id: int) -> None:
        """After a moderator corrected the letter's language, earlier failures say nothing any more."""
        for key in [key for key in self._given_up if key[0] == letter_id]:
            del self._given_up[key]

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)


def _why(error: Exception) -> str:
    """The translator's own reason (worded without the letter), else only where it failed: a library's message
    may quote the text it was given."""
    return error.reason if isinstance(error, TranslationError) else failure_summary(error)

"""Offline language detection on short texts of our own and, where present, on the real letters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.language import LinguaDetector

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "letters.jsonl"


@pytest.fixture(scope="module")
def detector() -> LinguaDetector:
    return LinguaDetector()


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Desde la Ciudad de México, enviamos nuestra solidaridad y nuestro cariño a las compañeras.", "es"),
        ("Nous sommes avec vous, de tout cœur, jusqu'à la victoire.", "fr"),
        ("Wir stehen an eurer Seite und denken jeden Tag an euch.", "de"),
        ("Мы с вами, товарищи, и никогда вас не забудем. Мы всегда будем помнить вашу борьбу и смелость.", "ru"),
        ("Ми з вами, друзі, і ніколи вас не забудемо.", "uk"),
        ("我们和你们站在一起，永远支持你们的斗争。", "zh"),
        ("Siamo con voi, compagne e compagni, oggi e sempre.", "it"),
        ("Estamos com vocês, companheiras, hoje e sempre.", "pt"),
        ("نحن معكم دائما في نضالكم من أجل الحرية", "ar"),
        ("We stand with you, today and every day.", "en"),
    ],
)
def test_short_letters_in_many_languages(detector: LinguaDetector, text: str, language: str) -> None:
    assert detector.detect(text) == language


def test_a_close_call_is_not_guessed(detector: LinguaDetector) -> None:
    # Short Russian looks Ukrainian to the low-accuracy models: unsure is better than wrong.
    assert detector.detect("Мы с вами, товарищи, и никогда вас не забудем.") in ("ru", "und")


@pytest.mark.parametrize("text", ["✊✊✊", "ok", "12345", "   "])
def test_unclear_text_is_undetermined(detector: LinguaDetector, text: str) -> None:
    assert detector.detect(text) == "und"


@pytest.mark.skipif(not CORPUS.exists(), reason="../shared/corpus/letters.jsonl not present: real letters not run")
def test_real_letters_are_english(detector: LinguaDetector) -> None:
    letters = [json.loads(line)["text"] for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(letters) >= 10
    assert [detector.detect(text) for text in letters] == ["en"] * len(letters)

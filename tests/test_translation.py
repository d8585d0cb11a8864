"""The deep-translator adapter (bot/translation.py), through deep-translator for real, against fake servers."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web
from deep_translator.constants import BASE_URLS, LIBRE_LANGUAGES_TO_CODES

from bot import app
from bot.translation import DeepTranslator, build_translator
from handlers.ports import TranslationError
from handlers.text import split_text
from tests.emulators.libretranslate import FakeLibreTranslate

MakeTranslator = Callable[..., DeepTranslator]


@pytest.fixture
async def libre() -> AsyncIterator[FakeLibreTranslate]:
    async with FakeLibreTranslate() as server:
        yield server


@pytest.fixture
async def make_translator() -> AsyncIterator[MakeTranslator]:
    """LibreTranslate translators with test-sized waits, closed after the test."""
    made: list[DeepTranslator] = []

    def make(url: str, **options: Any) -> DeepTranslator:
        settings = {"call_timeout": 2.0, "first_backoff": 0.01, "workers": 2} | options
        translator = DeepTranslator("libre", libre_url=url, **settings)
        made.append(translator)
        return translator

    yield make
    for translator in made:
        await translator.close()


def fake_translation(text: str, target: str) -> str:
    """What the fake server makes of `text` sent whole."""
    return "\n".join(f"[{target}] {line}" if line.strip() else line for line in text.split("\n"))


def letter(characters: int, seed: int = 7) -> str:
    """A letter of paragraphs (blank lines between, line breaks inside) of about `characters` characters."""
    rng = random.Random(seed)
    words = ["we", "stand", "with", "you", "friends", "across", "borders", "solidarity", "bread", "roses"]
    paragraphs: list[str] = []
    while sum(len(p) + 2 for p in paragraphs) < characters:
        lines = []
        for _ in range(rng.randint(1, 4)):
            sentences = [" ".join(rng.choices(words, k=rng.randint(4, 12))).capitalize() + "." for _ in range(3)]
            lines.append(" ".join(sentences))
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- LibreTranslate: texts ------------------------------------------------------------------------------


async def test_a_short_text_takes_one_call(libre: FakeLibreTranslate, make_translator: MakeTranslator) -> None:
    translator = make_translator(libre.url)

    assert await translator.translate("Hello, friends!", "en", "fr") == "[fr] Hello, friends!"
    assert translator.name == "libre"
    assert libre.calls == [("Hello, friends!", "en", "fr")]
    # As deep-translator sends it: query parameters on an empty POST, and no key when none is configured.
    assert libre.received == [
        {"q": "Hello, friends!", "source": "en", "target": "fr", "format": "text", "via": "query"}
    ]


async def test_paragraphs_and_line_breaks_survive_exactly(
    libre: FakeLibreTranslate, make_translator: MakeTranslator
) -> None:
    translator = make_translator(libre.url)
    text = "\n  Dear friends,\n\nWe stand with you.\nAlways.\n\n\n  Signed,\r\nthe night shift  \n"

    translated = await translator.translate(text, "en", "de")

    # Whitespace around the text is kept here; inside, the translator sees it (this one keeps the indent and
    # turns CRLF into LF, as LibreTranslate does).
    assert translated == (
        "\n  [de] Dear friends,\n\n[de] We stand with you.\n[de] Always.\n\n\n[de]   Signed,\n[de] the night shift  \n"
    )
    assert libre.call_count == 1


async def test_a_long_text_is_chunked_and_rejoined_exactly(
    libre: FakeLibreTranslate, make_translator: MakeTranslator
) -> None:
    translator = make_translator(libre.url, chunk_limit=4500)
    text = letter(12_000)
    assert len(text) >= 12_000

    translated = await translator.translate(text, "en", "es")

    assert translated == fake_translation(text, "es")
    assert libre.call_count >= 3
    assert all(len(call.q) <= 4500 for call in libre.calls)
    assert "\n\n".join(call.q for call in libre.calls) == text  # cut at paragraph breaks


async def test_one_long_paragraph_is_cut_between_sentences(
    libre: FakeLibreTranslate, make_translator: MakeTranslator
) -> None:
    translator = make_translator(libre.url, chunk_limit=1000)
    text = letter(3000).replace("\n", " ")

    translated = await translator.translate(text, "en", "it")

    parts = split_text(text, 1000, len)
    assert translated == "".join(part.replace(part.strip(), "[it] " + part.strip()) for part in parts)
    assert libre.call_count == len(parts) >= 3
    assert all(call.q.endswith(".") for call in libre.calls)


@pytest.mark.parametrize("text", ["", "   ", "\n\n \t\n"])
async def test_blank_texts_are_not_sent(libre: FakeLibreTranslate, make_translator: MakeTranslator, text: str) -> None:
    assert await make_translator(libre.url).translate(text, "en", "fr") == text
    assert libre.call_count == 0


async def test_a_text_already_in_the_target_language_is_not_sent(
    libre: FakeLibreTranslate, make_translator: MakeTranslator
) -> None:
    assert await make_translator(libre.url).translate("Hola", "es", "es") == "Hola"
    assert libre.call_count == 0


@pytest.mark.parametrize("url_end", ["", "/"])
async def test_the_url_works_with_or_without_a_trailing_slash(
    libre: FakeLibreTranslate, make_translator: MakeTranslator, url_end: str
) -> None:
    # deep-translator appends "translate" to the URL as given: without a slash it would ask for ":port" + "translate".
    translator = make_translator(libre.url + url_end)

    assert await translator.translate("Hello", "en", "pt") == "[pt] Hello"


# --- LibreTranslate: failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "target"), [("en", "uk"), ("uk", "en"), ("en", "xx")])
async def test_an_unsupported_language_is_permanent_and_costs_no_request(
    libre: FakeLibreTranslate, make_translator: MakeTranslator, source: str, target: str
) -> None:
    translator = make_translator(libre.url)

    with pytest.raises(TranslationError) as caught:
        await translator.translate("Hello", source, target)

    assert caught.value.permanent
    assert "libre does not support the language" in str(caught.value)
    assert libre.call_count == 0


async def test_a_refused_key_is_permanent_and_not_repeated(make_translator: MakeTranslator) -> None:
    async with FakeLibreTranslate(api_key="secret") as server:
        with pytest.raises(TranslationError) as caught:
            await make_translator(server.url, libre_api_key="bad-key-4711").translate("Hello", "en", "fr")

        assert caught.value.permanent
        assert str(caught.value) == "libre: HTTP 403: Invalid API key"
        assert server.call_count == 1

        assert await make_translator(server.url, libre_api_key="secret").translate("Hi", "en", "fr") == "[fr] Hi"
        assert server.received[-1]["api_key"] == "secret"


async def test_a_missing_key_is_permanent(make_translator: MakeTranslator) -> None:
    async with FakeLibreTranslate(api_key="secret") as server:
        with pytest.raises(TranslationError) as caught:
            await make_translator(server.url).translate("Hello", "en", "fr")

    assert caught.value.permanent
    assert "Please contact the server operator" in str(caught.value)


async def test_rate_limits_are_waited_out(libre: FakeLibreTranslate, make_translator: MakeTranslator) -> None:
    translator = make_translator(libre.url, attempts=4, first_backoff=0.05)
    libre.fail_next(status=429, times=2)

    started = time.monotonic()
    assert await translator.translate("Hello", "en", "fr") == "[fr] Hello"

    assert libre.call_count == 3
    assert time.monotonic() - started >= (0.05 + 0.1) * 0.8  # two backoffs, doubling, jitter at most -20 %


async def test_a_flood_ban_is_waited_out_unlike_a_bad_key(
    libre: FakeLibreTranslate, make_translator: MakeTranslator
) -> None:
    libre.fail_next(status=403)  # LibreTranslate's ban after repeated 429s: a 403 that says so

    assert await make_translator(libre.url).translate("Hello", "en", "fr") == "[fr] Hello"
    assert libre.call_count == 2


async def test_server_errors_are_retried_then_given_up(
    libre: FakeLibreTranslate, make_translator: MakeTranslator
) -> None:
    translator = make_translator(libre.url, attempts=3)
    libre.fail_next(status=500, times=10)

    with pytest.raises(TranslationError) as caught:
        await translator.translate("Hello", "en", "fr")

    assert not caught.value.permanent
    assert str(caught.value).startswith("libre: HTTP 500: Cannot translate text")
    assert str(caught.value).endswith("(gave up after 3 attempts)")
    assert libre.call_count == 3


async def test_a_text_over_the_server_limit_is_permanent(make_translator: MakeTranslator) -> None:
    async with FakeLibreTranslate(char_limit=100) as server:
        text = letter(300).replace("\n", " ")
        with pytest.raises(TranslationError) as caught:
            await make_translator(server.url).translate(text, "en", "fr")

        assert caught.value.permanent
        assert "exceeds text limit (100)" in str(caught.value)
        assert server.call_count == 1

        # Chunks within the server's limit go through.
        translated = await make_translator(server.url, chunk_limit=100).translate(text, "en", "fr")
        assert translated.startswith("[fr] ")


async def test_an_unreachable_server_is_retried_and_the_error_hides_text_and_key(
    make_translator: MakeTranslator,
) -> None:
    translator = make_translator(f"http://127.0.0.1:{free_port()}", attempts=2, libre_api_key="secret-key-4711")

    with pytest.raises(TranslationError) as caught:
        await translator.translate("Private words", "en", "fr")

    assert not caught.value.permanent
    assert "ConnectionError" in str(caught.value)
    assert "secret-key-4711" not in str(caught.value)
    assert "Private" not in str(caught.value)


async def test_a_broken_url_is_permanent(make_translator: MakeTranslator) -> None:
    with pytest.raises(TranslationError) as caught:
        await make_translator("127.0.0.1:5000").translate("Hello", "en", "fr")

    assert caught.value.permanent


# --- time bounds ----------------------------------------------------------------------------------------


async def test_a_hung_server_fails_within_the_bound_and_frees_the_thread(
    libre: FakeLibreTranslate, make_translator: MakeTranslator
) -> None:
    # One worker: if the hung call kept its thread, the next call would queue behind it and fail too.
    translator = make_translator(libre.url, call_timeout=0.5, attempts=1, workers=1)
    libre.hang = True

    started = time.monotonic()
    with pytest.raises(TranslationError) as caught:
        await translator.translate("Hello", "en", "fr")
    elapsed = time.monotonic() - started

    assert not caught.value.permanent
    # The socket's own timeout ended it, long before the asyncio guard (call_timeout + 5 s) would have.
    assert 0.45 <= elapsed < 1.5
    assert isinstance(caught.value.__cause__, TranslationError)
    assert isinstance(caught.value.__cause__.__cause__, requests.ReadTimeout)

    libre.hang = False
    started = time.monotonic()
    assert await translator.translate("Hello", "en", "fr") == "[fr] Hello"
    assert time.monotonic() - started < 0.5


async def test_the_socket_bound_applies_only_to_the_translators_threads(
    libre: FakeLibreTranslate, make_translator: MakeTranslator, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, object]] = []
    send = requests.adapters.HTTPAdapter.send

    def spy(self: requests.adapters.HTTPAdapter, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        seen.append((threading.current_thread().name, kwargs.get("timeout")))
        return send(self, request, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", spy)
    await make_translator(libre.url, call_timeout=3.0).translate("Hello", "en", "fr")
    await asyncio.to_thread(requests.get, libre.url + "/languages")  # someone else's request, without a timeout
    await asyncio.to_thread(requests.get, libre.url + "/languages", timeout=7)

    (translator_thread, bound), (other_thread, unbound), (_, explicit) = seen
    assert translator_thread.startswith("translate")
    assert isinstance(bound, float) and 2.5 < bound <= 3.0
    assert not other_thread.startswith("translate")
    assert unbound is None
    assert explicit == 7


async def test_a_closed_translator_refuses_calls(libre: FakeLibreTranslate) -> None:
    translator = DeepTranslator("libre", libre_url=libre.url)
    await translator.close()

    with pytest.raises(TranslationError) as caught:
        await translator.translate("Hello", "en", "fr")
    assert caught.value.permanent


# --- other providers (their real clients, pointed at small fakes) ---------------------------------------


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_deepl_posts_the_key_in_a_header(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str | None, dict[str, Any], dict[str, str]]] = []

    async def translate(request: web.Request) -> web.Response:
        form = await request.post()
        seen.append((request.method, request.headers.get("Authorization"), dict(form), dict(request.query)))
        if request.headers.get("Authorization") != "DeepL-Auth-Key good:fx":
            return web.json_response({"message": "Forbidden"}, status=403)
        return web.json_response({"translations": [{"detected_source_language": "EN", "text": "Bonjour"}]})

    app = web.Application()
    app.router.add_post("/v2/translate", translate)
    async with serve(app) as url:
        monkeypatch.setitem(BASE_URLS, "DEEPL_FREE", url + "/{version}/")
        good = DeepTranslator("deepl", deepl_api_key="good:fx", first_backoff=0.01)
        bad = DeepTranslator("deepl", deepl_api_key="bad:fx", first_backoff=0.01)
        try:
            assert await good.translate("Hello", "en", "fr") == "Bonjour"
            assert await good.translate("Hello", "und", "en") == "Bonjour"
            with pytest.raises(TranslationError) as caught:
                await bad.translate("Hello", "en", "fr")
        finally:
            await good.close()
            await bad.close()

    form = {"text": "Hello", "target_lang": "FR", "source_lang": "EN"}
    assert seen[0] == ("POST", "DeepL-Auth-Key good:fx", form, {})  # nothing in the query string
    assert seen[1][2] == {"text": "Hello", "target_lang": "EN-GB"}  # source detected by DeepL; a current variant
    assert caught.value.permanent
    assert "bad:fx" not in str(caught.value)


async def test_mymemory_gets_its_locale_codes_and_short_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, str]] = []

    async def get(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        text = "[fr] " + request.query["q"]
        return web.json_response({"responseData": {"translatedText": text}, "responseStatus": 200, "matches": []})

    app = web.Application()
    app.router.add_get("/get", get)
    async with serve(app) as url:
        monkeypatch.setitem(BASE_URLS, "MYMEMORY", url + "/get")
        translator = DeepTranslator("mymemory")
        try:
            text = letter(1200).replace("\n", " ")
            translated = await translator.translate(text, "en", "fr")
        finally:
            await translator.close()

    assert {query["langpair"] for query in seen} == {"en-GB|fr-FR"}
    assert len(seen) >= 3
    assert all(len(query["q"]) < 500 for query in seen)  # MyMemory's client refuses 500 characters and more
    assert translated.replace("[fr] ", "") == text


async def test_a_mymemory_refusal_is_not_taken_for_a_translation(monkeypatch: pytest.MonkeyPatch) -> None:
    async def get(request: web.Request) -> web.Response:
        refusal = "'XX' IS AN INVALID TARGET LANGUAGE . EXAMPLE: LANGPAIR=EN|IT USING 2 LETTER ISO OR RFC3066"
        return web.json_response({"responseData": {"translatedText": refusal}, "responseStatus": 403,
                                  "responseDetails": refusal, "matches": []})  # fmt: skip

    app = web.Application()
    app.router.add_get("/get", get)
    async with serve(app) as url:
        monkeypatch.setitem(BASE_URLS, "MYMEMORY", url + "/get")
        translator = DeepTranslator("mymemory")
        try:
            with pytest.raises(TranslationError) as caught:
                await translator.translate("Hello", "en", "fr")
        finally:
            await translator.close()

    assert caught.value.permanent
    assert "INVALID TARGET LANGUAGE" in str(caught.value)


async def test_google_gets_its_own_codes_and_429_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, str]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        if len(seen) == 1:
            return web.Response(status=429, text="Too Many Requests")
        return web.Response(text='<html><div class="result-container">שלום</div></html>', content_type="text/html")

    app = web.Application()
    app.router.add_get("/m", page)
    async with serve(app) as url:
        monkeypatch.setitem(BASE_URLS, "GOOGLE_TRANSLATE", url + "/m")
        translator = DeepTranslator("google", first_backoff=0.01)
        try:
            assert await translator.translate("Hello", "en", "he") == "שלום"
        finally:
            await translator.close()

    assert [(query["sl"], query["tl"]) for query in seen] == [("en", "iw"), ("en", "iw")]


# --- building -------------------------------------------------------------------------------------------


async def test_build_translator_follows_the_settings(libre: FakeLibreTranslate) -> None:
    def settings(translator: str) -> SimpleNamespace:
        return SimpleNamespace(
            translator=translator, libretranslate_url=libre.url, libretranslate_api_key=None, deepl_api_key=None
        )

    assert app.make_translator(settings("none")) is None  # type: ignore[arg-type]
    translator = build_translator(settings("libre"))
    assert isinstance(translator, DeepTranslator)
    try:
        assert translator.name == "libre"
        assert await translator.translate("Hello", "en", "fr") == "[fr] Hello"
    finally:
        await translator.close()


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown translation provider"):
        DeepTranslator("babel")
    with pytest.raises(ValueError, match="URL"):
        DeepTranslator("libre")
    with pytest.raises(ValueError, match="API key"):
        DeepTranslator("deepl")


# --- the fake server speaks LibreTranslate's API --------------------------------------------------------


async def test_the_fake_server_reads_forms_json_and_answers_like_libretranslate(libre: FakeLibreTranslate) -> None:
    async with aiohttp.ClientSession(libre.url) as http:
        async with http.post("/translate", data={"q": "Hi\r\nyou", "source": "en", "target": "ru"}) as response:
            assert await response.json() == {"translatedText": "[ru] Hi\n[ru] you"}
        async with http.post("/translate", json={"q": "Hi", "source": "auto", "target": "ja"}) as response:
            assert await response.json() == {
                "translatedText": "[ja] Hi",
                "detectedLanguage": {"confidence": 90.0, "language": "en"},
            }
        async with http.post("/translate", data={"source": "en", "target": "fr"}) as response:
            assert response.status == 400
            assert await response.json() == {"error": "Invalid request: missing q parameter"}
        async with http.post("/translate", params={"q": "Hi", "source": "uk", "target": "fr"}) as response:
            assert response.status == 400
            assert await response.json() == {"error": "{'confidence': 100.0, 'language': 'uk'} is not supported"}
        async with http.post("/translate", params={"q": "Hi", "source": "en", "target": "uk"}) as response:
            assert await response.json() == {"error": "uk is not supported"}
        async with http.get("/languages") as response:
            languages = await response.json()
            # Exactly the languages deep-translator's LibreTranslate client allows.
            assert {language["code"] for language in languages} == set(LIBRE_LANGUAGES_TO_CODES.values())
            assert {"code", "name", "targets"} == set(languages[0])
        async with http.post("/detect", data={"q": "Привет"}) as response:
            assert await response.json() == [{"confidence": 90.0, "language": "ru"}]
    assert libre.calls[0] == ("Hi\r\nyou", "en", "ru")
    assert [entry["via"] for entry in libre.received[:2]] == ["form", "json"]


async def test_the_fake_server_stops_while_a_request_hangs(libre: FakeLibreTranslate) -> None:
    libre.hang = True
    async with aiohttp.ClientSession(libre.url) as http:
        request = asyncio.ensure_future(http.post("/translate", params={"q": "Hi", "source": "en", "target": "fr"}))
        await asyncio.wait_for(libre.wait_for_calls(1), 5)
        started = time.monotonic()
        await libre.stop()
        assert time.monotonic() - started < 1.5
        response = await request
        response.release()

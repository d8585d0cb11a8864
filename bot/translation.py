"""Machine translation through deep-translator (Google, LibreTranslate, DeepL, MyMemory), bounded in time.

deep-translator is synchronous and sets no timeouts: a server that accepts a connection and never answers would
hold a thread forever. So every call runs in this translator's own thread pool, and each HTTP request the
library makes from those threads gets a socket timeout (see `_HttpGuard`). `asyncio.wait_for` around the call is
only a second line: it frees the caller but cannot stop a thread stuck in a socket read.

Long letters go out in chunks (split at paragraph, line, sentence or word boundaries), each chunk's surrounding
whitespace kept locally so that the letter's layout survives any provider. Failures become `TranslationError`,
`permanent` when trying again cannot help (an unsupported language, a refused key, a text the server rejects).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

import requests
from deep_translator import DeeplTranslator, GoogleTranslator, LibreTranslator, MyMemoryTranslator
from deep_translator.base import BaseTranslator
from deep_translator.constants import MY_MEMORY_LANGUAGES_TO_CODES
from deep_translator.exceptions import (
    ApiKeyException,
    AuthorizationException,
    InvalidSourceOrTargetLanguage,
    LanguageNotSupportedException,
    NotValidLength,
    NotValidPayload,
    ServerException,
)
from deep_translator.validate import request_failed

from handlers.ports import TranslationError, Translator
from handlers.text import split_text

PROVIDERS = ("google", "libre", "deepl", "mymemory")
# What the bot's `und` (or "auto") becomes for providers that detect the source themselves; MyMemory cannot.
_AUTO = {"google": "auto", "libre": "auto", "deepl": "auto"}
# The most each provider's client accepts in one call: Google and MyMemory refuse `len(text) >=` 5000 and 500.
_MAX_CHARS = {"google": 4999, "mymemory": 499}
# Seconds the asyncio guard allows beyond the socket bound, before giving up on a call it cannot stop.
_GUARD_SLACK = 5.0
_GOOGLE_CODES = {
    "zh": "zh-CN", "zh-cn": "zh-CN", "zh-hans": "zh-CN", "zh-tw": "zh-TW", "zh-hant": "zh-TW",
    "he": "iw", "jv": "jw", "nb": "no", "nn": "no", "fil": "tl", "mni": "mni-Mtei",
}
# DeepL names English, Portuguese and Chinese targets by variant; the bare codes are kept only for old clients.
_DEEPL_TARGETS = {"en": "EN-GB", "pt": "PT-PT", "zh": "ZH-HANS"}
# Where "the language's own country" and "the shortest name" (see `_mymemory_codes`) pick badly.
_MYMEMORY_CHOICES = {"sr": "sr-Latn-RS", "no": "nb-NO"}
# LibreTranslate bans a client that keeps hitting its rate limit, for a while, with a 403 that is not about keys.
_LIBRE_BANNED = "Too many request limits violations"
_PERMANENT_ERRORS = (
    LanguageNotSupportedException,
    InvalidSourceOrTargetLanguage,
    NotValidLength,
    NotValidPayload,
    ApiKeyException,
)
# A URL in the settings that can never work (unlike refused or timed-out connections, which may recover).
_BAD_URL_ERRORS = (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema)


class TranslatorSettings(Protocol):
    """The part of `bot.config.Settings` that chooses and configures the translator."""

    @property
    def translator(self) -> str: ...

    @property
    def libretranslate_url(self) -> str | None: ...

    @property
    def libretranslate_api_key(self) -> str | None: ...

    @property
    def deepl_api_key(self) -> str | None: ...


def build_translator(settings: TranslatorSettings) -> Translator:
    """The translator the settings ask for (`none` is the composition root's: it loads no translation library)."""
    return DeepTranslator(
        settings.translator,
        libre_url=settings.libretranslate_url,
        libre_api_key=settings.libretranslate_api_key,
        deepl_api_key=settings.deepl_api_key,
    )


class DeepTranslator:
    """The `Translator` port over deep-translator; `name` is the provider."""

    def __init__(
        self,
        provider: str,
        *,
        libre_url: str | None = None,
        libre_api_key: str | None = None,
        deepl_api_key: str | None = None,
        call_timeout: float = 20.0,
        chunk_limit: int = 4500,
        attempts: int = 4,
        first_backoff: float = 1.0,
        workers: int = 4,
    ) -> None:
        _check_options(provider, libre_url, deepl_api_key, call_timeout, chunk_limit, attempts, workers)
        _HttpGuard.install()
        self.name = provider
        # deep-translator glues "translate" straight onto the URL: "https://lt.example" would become a host name
        # "lt.exampletranslate", "http://host:5000" a broken port.
        self._libre_url = libre_url.rstrip("/") + "/" if libre_url else None
        self._libre_api_key = libre_api_key
        self._deepl_api_key = deepl_api_key
        self._call_timeout = call_timeout
        self._chunk_limit = min(chunk_limit, _MAX_CHARS.get(provider, chunk_limit))
        self._attempts = attempts
        self._first_backoff = first_backoff
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="translate")
        self._closed = False

    async def translate(self, text: str, source: str, target: str) -> str:
        if self._closed:
            raise TranslationError(f"{self.name}: the translator is closed", permanent=True)
        if source == target or not text.strip():
            return text
        # One chunk at a time: a provider that limits its rate would refuse a burst anyway.
        parts = [await self._translate_part(part, source, target) for part in split_text(text, self._chunk_limit, len)]
        return "".join(parts)

    async def close(self) -> None:
        """Stop taking calls; a call still in a socket read ends by its own timeout."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _translate_part(self, part: str, source: str, target: str) -> str:
        core = part.strip()
        if not core:
            return part
        # Providers trim or rewrap the whitespace around a text: keep it here, where the cuts between chunks are.
        leading = part[: len(part) - len(part.lstrip())]
        trailing = part[len(part.rstrip()) :]
        translated = await self._with_retries(core, source, target)
        return leading + translated.strip() + trailing

    async def _with_retries(self, text: str, source: str, target: str) -> str:
        last: TranslationError | None = None
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._first_backoff * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
            try:
                return await self._call(text, source, target)
            except TranslationError as error:
                if error.permanent:
                    raise
                last = error
        tries = f"{self._attempts} attempts" if self._attempts > 1 else "1 attempt"
        raise TranslationError(f"{last} (gave up after {tries})", permanent=False) from last

    async def _call(self, text: str, source: str, target: str) -> str:
        loop = asyncio.get_running_loop()
        blocking = functools.partial(self._translate_blocking, text, source, target)
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, blocking), self._call_timeout + _GUARD_SLACK
            )
        except TimeoutError as error:
            bound = self._call_timeout + _GUARD_SLACK  # includes waiting for a free worker
            raise TranslationError(f"{self.name}: no result within {bound:g} s", permanent=False) from error

    def _translate_blocking(self, text: str, source: str, target: str) -> str:
        """One call, in a worker thread: the client is built here because building it may validate or fetch."""
        guard = _HttpGuard(time.monotonic() + self._call_timeout)
        token = _HttpGuard.current.set(guard)
        try:
            result = self._client(source, target).translate(text)
        except Exception as error:
            # Not chained to `error`: its text, in any traceback, would quote the letter (see _classify).
            raise _classify(self.name, error, guard.responses, text) from _stand_in(error)
        finally:
            _HttpGuard.current.reset(token)
        return self._checked(result, guard.responses)

    def _client(self, source: str, target: str) -> BaseTranslator:
        source_code = _provider_code(self.name, source, as_source=True)
        target_code = _provider_code(self.name, target, as_source=False)
        if self.name == "google":
            return GoogleTranslator(source=source_code, target=target_code)
        if self.name == "mymemory":
            return MyMemoryTranslator(source=source_code, target=target_code)
        if self.name == "deepl":
            assert self._deepl_api_key is not None
            return _DeeplByHeader(source_code, target_code, self._deepl_api_key)
        return self._libre_client(source_code, target_code)

    def _libre_client(self, source: str, target: str) -> LibreTranslator:
        # deep-translator insists on a key even for servers that need none, and only sends one that is truthy:
        # a placeholder passes its check, and clearing it after sends none, as a keyless client should (a server
        # with keys enabled refuses an unknown key with 403 but may well serve a request without one).
        client = LibreTranslator(
            source=source, target=target, api_key=self._libre_api_key or "none", custom_url=self._libre_url
        )
        if not self._libre_api_key:
            client.api_key = ""
        return client

    def _checked(self, result: object, responses: list[requests.Response]) -> str:
        if self.name == "mymemory" and responses:
            _check_mymemory(responses[-1])
        if not isinstance(result, str) or not result.strip():
            raise TranslationError(f"{self.name}: the answer held no translation", permanent=False)
        return result


@dataclass
class _HttpGuard:
    """The time limit for the HTTP requests of one translation call, and the responses they got.

    deep-translator calls `requests.get/post` without a timeout. Those go through `requests.Session.request`,
    which is wrapped once, process-wide, to add a timeout when the calling context holds a guard. Only
    `DeepTranslator._translate_blocking` sets one, in its pool's threads, for the length of one call: requests
    made anywhere else (other threads, other libraries) pass through untouched, and a timeout a caller gives
    explicitly is kept. `socket.setdefaulttimeout` was the alternative: it would change every blocking socket of
    the process, in every thread. The recorded responses let failures be judged by the real status and error
    text, which deep-translator's exceptions lose.

    The timeout is what remains of the call's budget, and requests applies it to the connect and to each read:
    a silent server is cut off in time; one that trickles bytes may take longer (the asyncio guard still frees
    the caller).
    """

    deadline: float
    responses: list[requests.Response] = field(default_factory=list)

    current = ContextVar["_HttpGuard | None"]("translation_http_guard", default=None)

    def timeout(self) -> float:
        return round(max(self.deadline - time.monotonic(), 0.01), 3)

    @staticmethod
    def install() -> None:
        for name in _URL_LOGGERS:
            logging.getLogger(name).addFilter(_QUIET_URLS)
        original: Callable[..., requests.Response] = requests.Session.request
        if getattr(original, "_translation_guard", False):
            return
        # A caller may pass the timeout by position; then it is its own and stays as it is.
        timeout_position = list(inspect.signature(original).parameters).index("timeout")

        @functools.wraps(original)
        def request(*args: Any, **kwargs: Any) -> requests.Response:
            guard = _HttpGuard.current.get()
            if guard is None:
                return original(*args, **kwargs)
            if kwargs.get("timeout") is None and len(args) <= timeout_position:
                kwargs["timeout"] = guard.timeout()
            response = original(*args, **kwargs)
            guard.responses.append(response)
            return response

        request._translation_guard = True  # type: ignore[attr-defined]
        requests.Session.request = request  # type: ignore[method-assign]


class _QuietUrls(logging.Filter):
    """urllib3 logs each request's URL at DEBUG, and the providers take the letter (LibreTranslate the key too) as
    query parameters: in a translation call the query is cut from those lines. A filter on the logger itself,
    since urllib3 logs to these loggers directly (a logger's filters see only its own records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _HttpGuard.current.get() is not None:
            record.msg = _QUERY.sub("?…", record.getMessage())
            record.args = None
        return True


_QUERY = re.compile(r"\?\S*")
_QUIET_URLS = _QuietUrls()
_URL_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry")


class _DeeplByHeader(DeeplTranslator):
    """DeepL as DeepL accepts it now: deep-translator 1.11.4 sends a GET with the key as a query parameter,
    which DeepL deprecated in March 2025 and refuses since January 2026. Same languages and exceptions; a POST
    with the key in the Authorization header, to the free or the pro endpoint as the key says (":fx": free)."""

    def __init__(self, source: str, target: str, api_key: str) -> None:
        super().__init__(source=source, target=target, api_key=api_key, use_free_api=api_key.endswith(":fx"))

    def translate(self, text: str, **kwargs: Any) -> str:
        data = {"text": text, "target_lang": _DEEPL_TARGETS.get(self._target, self._target).upper()}
        if self._source != "auto":  # no source: DeepL detects it
            data["source_lang"] = self._source.upper()
        headers = {"Authorization": f"DeepL-Auth-Key {self.api_key}"}
        response = requests.post(self._base_url + "translate", data=data, headers=headers)
        if response.status_code == 403:
            raise AuthorizationException("(hidden)")
        if request_failed(status_code=response.status_code):
            raise ServerException(response.status_code)
        return str(response.json()["translations"][0]["text"])


def _check_options(
    provider: str,
    libre_url: str | None,
    deepl_api_key: str | None,
    call_timeout: float,
    chunk_limit: int,
    attempts: int,
    workers: int,
) -> None:
    if provider not in PROVIDERS:
        raise ValueError(f"unknown translation provider {provider!r}; one of {', '.join(PROVIDERS)}")
    if provider == "libre" and not libre_url:
        raise ValueError("LibreTranslate needs the server's URL")
    if provider == "deepl" and not deepl_api_key:
        raise ValueError("DeepL needs an API key")
    if call_timeout <= 0 or chunk_limit < 1 or attempts < 1 or workers < 1:
        raise ValueError("call_timeout, chunk_limit, attempts and workers must be positive")


def _provider_code(provider: str, code: str, *, as_source: bool) -> str:
    """The provider's name for the bot's ISO 639-1 `code`; unknown codes pass through for the client to refuse."""
    code = code.lower()
    if code in ("und", "auto") and as_source:
        return _AUTO.get(provider, code)
    table: Mapping[str, str] = {}
    if provider == "google":
        table = _GOOGLE_CODES
    elif provider == "mymemory":
        table = _mymemory_codes()
    # A regional code the provider does not know ("pt-br" for LibreTranslate) falls back to its language.
    base = code.split("-")[0]
    return table.get(code) or table.get(base) or base


@functools.cache
def _mymemory_codes() -> dict[str, str]:
    """ISO 639-1 to MyMemory's locale codes ("fr" → "fr-FR"): the language's own country if listed (de-DE,
    pt-PT), else the variant with the plainest name ("english" → en-GB, "arabic" → ar-SA)."""
    variants: dict[str, list[tuple[str, str]]] = {}
    for name, locale in MY_MEMORY_LANGUAGES_TO_CODES.items():
        variants.setdefault(locale.split("-")[0].lower(), []).append((name, locale))
    chosen = {locale.lower(): locale for locale in MY_MEMORY_LANGUAGES_TO_CODES.values()}
    for language, options in variants.items():
        own_country = f"{language}-{language.upper()}"
        locales = [locale for _name, locale in options]
        chosen[language] = own_country if own_country in locales else min(options, key=lambda o: len(o[0]))[1]
    return chosen | _MYMEMORY_CHOICES


def _classify(provider: str, error: Exception, responses: list[requests.Response], text: str) -> TranslationError:
    """The failure in words of our own. The reason is logged, and deep-translator's exceptions quote the letter
    (TranslationNotFound and NotValidLength carry it as `val`) or the key (AuthorizationException); requests'
    errors quote the URL, which for LibreTranslate holds both. So no exception's text goes into it."""
    name = type(error).__name__
    if isinstance(error, LanguageNotSupportedException):
        return TranslationError(f"{provider} does not support the language {str(error.val)[:20]!r}", permanent=True)
    if isinstance(error, _PERMANENT_ERRORS):
        return TranslationError(f"{provider}: {name}: {_PERMANENT_WORDS.get(type(error), 'refused')}", permanent=True)
    if isinstance(error, requests.RequestException):
        words = next((words for kind, words in _REQUEST_WORDS if isinstance(error, kind)), "the request failed")
        cause = _system_reason(error)
        reason = f"{provider}: {name}: {words}" + (f" ({cause})" if cause else "")
        return TranslationError(reason, permanent=isinstance(error, _BAD_URL_ERRORS))
    response = responses[-1] if responses else None
    if response is None:
        return TranslationError(f"{provider}: {name} before any answer came", permanent=False)
    if response.ok:
        # Something odd about an answer that came (a page that is not the expected JSON or HTML): may pass.
        reason = f"{provider}: {name}: HTTP {response.status_code} without a translation in the answer"
        return TranslationError(reason, permanent=False)
    detail = _error_text(response, text)
    reason = f"{provider}: HTTP {response.status_code}" + (f": {detail}" if detail else "")
    return TranslationError(reason, permanent=not _may_pass(response.status_code, detail))


_PERMANENT_WORDS: dict[type[Exception], str] = {
    InvalidSourceOrTargetLanguage: "an invalid source or target language",
    NotValidLength: "a text of a length the provider does not accept",
    NotValidPayload: "not a text the provider accepts",
    ApiKeyException: "no API key",
}
_REQUEST_WORDS: tuple[tuple[type[Exception] | tuple[type[Exception], ...], str], ...] = (
    (requests.exceptions.ConnectTimeout, "no connection within the time limit"),
    (requests.exceptions.ReadTimeout, "no answer within the time limit"),
    (requests.exceptions.SSLError, "the TLS handshake failed"),
    (_BAD_URL_ERRORS, "the URL cannot work"),
    (requests.exceptions.ConnectionError, "could not connect"),
    (requests.exceptions.Timeout, "no answer within the time limit"),
)


def _stand_in(error: Exception) -> Exception | None:
    """What a TranslationError is chained to, for tracebacks: for requests' errors one of the same class in our
    own words (their text quotes the URL, so the letter and the key); nothing for deep-translator's, which
    quote the letter."""
    if not isinstance(error, requests.RequestException):
        return None
    words = next((words for kind, words in _REQUEST_WORDS if isinstance(error, kind)), "the request failed")
    try:
        return type(error)(words)
    except TypeError:  # a subclass with a constructor of its own (requests' JSONDecodeError)
        return requests.RequestException(words)


def _system_reason(error: BaseException) -> str:
    """The operating system's words under a requests error ("Connection refused"): they quote no URL."""
    pending: list[object] = [error]
    seen: set[int] = set()
    while pending and len(seen) < 32:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.strerror if isinstance(current.strerror, str) else os.strerror(current.errno)
        # urllib3's MaxRetryError keeps the failure as `reason`; requests passes it on as the first argument.
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
    return ""


def _may_pass(status: int, detail: str) -> bool:
    """Whether an error status is about the moment (load, rate, ban) rather than the request itself."""
    return status in (408, 425, 429) or status >= 500 or (status == 403 and _LIBRE_BANNED in detail)


def _error_text(response: requests.Response, text: str) -> str:
    """The server's own words about an error, LibreTranslate's {"error"} or DeepL's {"message"}, else the status's
    name: a page or a whole body might quote the request, and with it the letter."""
    try:
        body = response.json()
    except ValueError:
        body = None
    value = body.get("error") or body.get("message") if isinstance(body, dict) else None
    detail = value.strip()[:200] if isinstance(value, str) else ""
    quoted = text.strip()[:30]
    if quoted and quoted in detail:  # a server that quotes the text back
        detail = ""
    return detail or _status_phrase(response.status_code)


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _check_mymemory(response: requests.Response) -> None:
    """MyMemory answers HTTP 200 even when it refuses, its refusal ("INVALID LANGUAGE PAIR", "YOU USED ALL
    AVAILABLE FREE TRANSLATIONS") standing in for the translation: deep-translator would return it as one."""
    try:
        body = response.json()
        status = int(body.get("responseStatus", 200))
    except (ValueError, TypeError, AttributeError):
        return
    if status != 200:
        detail = str(body.get("responseDetails") or "")[:200]
        raise TranslationError(f"mymemory: status {status}: {detail}", permanent=not _may_pass(status, detail))

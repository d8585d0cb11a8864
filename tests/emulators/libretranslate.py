"""A fake LibreTranslate server for tests, speaking real HTTP on 127.0.0.1.

It answers the API the way LibreTranslate's `app.py` does (checked against its source): `POST /translate` reads
`q, source, target, format, api_key` from the query string or a form body (Flask's `request.values`, which is how
deep-translator sends them: query parameters on a POST with an empty body) or from a JSON body; `GET /languages`;
`POST /detect`. Errors carry LibreTranslate's status codes and `{"error": ...}` texts, including its quirks:
a bad source language is named by its whole detection record, and a client banned for flooding gets a 403.

The translation is deterministic: every line with text becomes ``"[{target}] " + line`` and blank lines stay as
they are, so tests can see that the target was right and the layout survived.

Manual mode: ``python -m tests.emulators.libretranslate [--port 5000] [--api-key KEY]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, NamedTuple

from aiohttp import web

SUPPORTED = ("ar", "de", "en", "es", "fr", "ga", "hi", "id", "it", "ja", "ko", "pl", "pt", "ru", "tr", "vi", "zh")
NAMES = {
    "ar": "Arabic", "de": "German", "en": "English", "es": "Spanish", "fr": "French", "ga": "Irish", "hi": "Hindi",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "pl": "Polish", "pt": "Portuguese",
    "ru": "Russian", "tr": "Turkish", "vi": "Vietnamese", "zh": "Chinese",
}
# What LibreTranslate says with each status when something other than the request is at fault.
FAILURES = {
    403: "Too many request limits violations",  # the flood ban (its limiter says 429 first)
    429: "Slowdown: 20 per 1 minute",  # Flask-Limiter's description, behind LibreTranslate's "Slowdown:"
    500: "Cannot translate text: the model failed",
}
# LibreTranslate runs on waitress, which takes request lines far longer than aiohttp's default 8 KiB; a long
# text sent as query parameters must reach the handler as it would reach the real server.
MAX_LINE = 1024 * 1024


class Call(NamedTuple):
    q: str
    source: str
    target: str


@dataclass
class Failure:
    status: int
    times: int


class FakeLibreTranslate:
    def __init__(self, *, api_key: str | None = None, char_limit: int = 5000, port: int = 0) -> None:
        """`api_key`: the one key the server accepts (None: keys are not used); `char_limit`: -1 for none;
        `port`: 0 for a free one."""
        self.api_key = api_key
        self.char_limit = char_limit
        self.calls: list[Call] = []
        self.received: list[dict[str, Any]] = []  # every /translate request's parameters, and "via" how they came
        self.hang = False
        self._arrival = asyncio.Event()
        self._failures: list[Failure] = []
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self._port = port

    @property
    def url(self) -> str:
        """The server's root, without a trailing slash (as an operator would usually write it)."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def call_count(self) -> int:
        return len(self.calls)

    def fail_next(self, status: int = 429, times: int = 1) -> None:
        """The next `times` translate requests fail with `status` (403 is the flood ban), then all is well."""
        self._failures.append(Failure(status, times))

    async def wait_for_calls(self, count: int) -> None:
        """Until `count` translate requests have arrived in all (say, before stopping a hung one)."""
        while self.call_count < count:
            self._arrival.clear()
            await self._arrival.wait()

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the fake LibreTranslate is already running")
        app = web.Application()
        app.router.add_post("/translate", self._translate)
        app.router.add_get("/languages", self._languages)
        app.router.add_post("/detect", self._detect)
        # A short shutdown: a hung request is released at stop and should not hold it up.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0, max_line_size=MAX_LINE
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = runner.addresses[0][1]
        self._runner = runner
        self._release = asyncio.Event()

    async def stop(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        if self._release is not None:
            self._release.set()
        await runner.cleanup()

    async def __aenter__(self) -> FakeLibreTranslate:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- handlers -----------------------------------------------------------------------------------------

    async def _translate(self, request: web.Request) -> web.Response:
        params, via = await _read_params(request)
        self.received.append({**params, "via": via})
        q, source, target = (_text(params.get(name)) for name in ("q", "source", "target"))
        self.calls.append(Call(q, source, target))
        self._arrival.set()
        if self.hang:
            return await self._never_answer()
        refusal = self._injected_failure() or self._access_refusal(params) or self._invalid(params, via)
        if refusal is not None:
            return refusal
        if via != "json":
            # LibreTranslate normalises line endings of form and query texts (so that limits count alike).
            q = "\n".join(q.splitlines())
        answer: dict[str, Any] = {"translatedText": _fake_translation(q, target)}
        if source == "auto":
            answer["detectedLanguage"] = {"confidence": 90.0, "language": _guess_language(q)}
        return web.json_response(answer)

    async def _languages(self, request: web.Request) -> web.Response:
        return web.json_response(
            [{"code": code, "name": NAMES[code], "targets": [t for t in SUPPORTED if t != code]} for code in SUPPORTED]
        )

    async def _detect(self, request: web.Request) -> web.Response:
        params, _via = await _read_params(request)
        refusal = self._access_refusal(params)
        if refusal is not None:
            return refusal
        q = _text(params.get("q"))
        if not q:
            return _error(400, "Invalid request: missing q parameter")
        return web.json_response([{"confidence": 90.0, "language": _guess_language(q)}])

    async def _never_answer(self) -> web.Response:
        assert self._release is not None
        await self._release.wait()  # until stop: the client has long given up by then
        return _error(503, "stopped")

    def _injected_failure(self) -> web.Response | None:
        if not self._failures:
            return None
        failure = self._failures[0]
        failure.times -= 1
        if failure.times <= 0:
            self._failures.pop(0)
        return _error(failure.status, FAILURES.get(failure.status, f"HTTP {failure.status}"))

    def _access_refusal(self, params: dict[str, Any]) -> web.Response | None:
        if self.api_key is None:
            return None  # keys off: LibreTranslate ignores whatever key comes
        key = params.get("api_key")
        if key and key != self.api_key:
            return _error(403, "Invalid API key")
        if not key:
            # As a server run with --require-api-key-secret (or -origin) answers a client without a key.
            return _error(400, "Please contact the server operator to get an API key")
        return None

    def _invalid(self, params: dict[str, Any], via: str) -> web.Response | None:
        """LibreTranslate's checks, in its order."""
        for name in ("q", "source", "target"):
            if not params.get(name):
                return _error(400, f"Invalid request: missing {name} parameter")
        q, source, target = _text(params["q"]), _text(params["source"]), _text(params["target"])
        size = len(q if via == "json" else "\n".join(q.splitlines()))
        if self.char_limit != -1 and size > self.char_limit:
            return _error(400, f"Invalid request: request ({size}) exceeds text limit ({self.char_limit})")
        if source != "auto" and source not in SUPPORTED:
            record = {"confidence": 100.0, "language": source}  # LibreTranslate names the source so (sic)
            return _error(400, f"{record} is not supported")
        if target not in SUPPORTED:
            return _error(400, f"{target} is not supported")
        text_format = _text(params.get("format")) or "text"
        if text_format not in ("text", "html"):
            return _error(400, f"{text_format} format is not supported")
        return None


async def _read_params(request: web.Request) -> tuple[dict[str, Any], str]:
    """The parameters as Flask would see them: a JSON body alone, else the query string merged with a form body
    (the query string winning, as in `request.values`)."""
    if request.content_type == "application/json":
        with contextlib.suppress(ValueError):
            body = await request.json()
            if isinstance(body, dict):
                return body, "json"
        return {}, "json"
    form = await request.post() if request.can_read_body else {}
    params: dict[str, Any] = {key: value for key, value in form.items() if isinstance(value, str)}
    params.update(request.query)
    via = "query" if request.query and not form else "form" if form and not request.query else "both"
    return params, via


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _fake_translation(q: str, target: str) -> str:
    return "\n".join(f"[{target}] {line}" if line.strip() else line for line in q.split("\n"))


def _guess_language(q: str) -> str:
    if any("\u0400" <= char <= "\u04ff" for char in q):
        return "ru"
    if any("\u4e00" <= char <= "\u9fff" for char in q):
        return "zh"
    return "en"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _serve(port: int, api_key: str | None) -> None:
    server = FakeLibreTranslate(api_key=api_key, port=port)
    async with server:
        print(f"fake LibreTranslate on {server.url}/ (Ctrl-C stops it)")
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.api_key))


if __name__ == "__main__":
    main()

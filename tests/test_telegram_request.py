"""AiohttpRequest (bot/transports/telegram_request.py): a real python-telegram-bot Bot over aiohttp, against the
strict Bot API emulator and against small aiohttp servers on loopback that misbehave."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import telegram
from aiohttp import web
from telegram import InputMediaDocument, InputMediaPhoto
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TimedOut
from telegram.request import HTTPXRequest

from bot.networks.telegram import NETWORK, TelegramSettings
from bot.reading import ConfigError, Reader
from bot.transports.telegram import TelegramTransport
from bot.transports.telegram_request import AiohttpRequest, _safe
from tests.emulators.telegram import TelegramEmulator
from tests.test_emulator_media import png

TOKEN = "123456:TEST-token-secret"


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(TOKEN) as emulator:
        yield emulator


def make_bot(root: str, **request: Any) -> telegram.Bot:
    return telegram.Bot(TOKEN, base_url=f"{root}/bot", base_file_url=f"{root}/file/bot",
                        request=AiohttpRequest(**request), get_updates_request=AiohttpRequest(connection_pool_size=1))


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[telegram.Bot]:
    async with make_bot(emu.api_root, connection_pool_size=8) as ptb_bot:
        yield ptb_bot


def people(emu: TelegramEmulator) -> tuple[dict[str, Any], dict[str, Any]]:
    alice = emu.add_user("Alice", "alice")
    mo = emu.add_user("Mo", "mo")
    mods = emu.add_group("Moderators", [(mo, "creator")], bot_status="administrator")
    emu.user_sends(alice, "/start")
    return alice, mods


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """An aiohttp server on 127.0.0.1 answering every request with `handler`; gives its root URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


ME = {"id": 123456, "is_bot": True, "first_name": "Relay", "username": "RelayBot"}
MESSAGE = {"message_id": 1, "date": 0, "chat": {"id": 5, "type": "private"}, "text": "x"}


def answer(request: web.Request) -> web.Response:
    """What the Bot API would answer to getMe, to a send, and to sendMediaGroup (enough for PTB)."""
    result: Any = ME if request.path.endswith("/getMe") else MESSAGE
    return web.json_response({"ok": True, "result": [result] if request.path.endswith("/sendMediaGroup") else result})


def slow_after_get_me(seconds: float) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if not request.path.endswith("/getMe"):
            await asyncio.sleep(seconds)
        return answer(request)
    return handler


def no_token(error: BaseException) -> None:
    """Neither the error's text nor its whole logged traceback (causes included) holds the token."""
    text = "".join(traceback.format_exception(error))
    for secret in (TOKEN, TOKEN.split(":", 1)[1]):
        assert secret not in text


# --- the Bot API, through PTB -----------------------------------------------------------------------------------


async def test_send_message_and_get_me(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, _ = people(emu)
    assert bot.username  # getMe, in initialize()
    sent = await bot.send_message(alice["id"], "<b>hello</b> &amp; more", parse_mode="HTML")
    assert (sent.text, sent.chat.id) == ("hello & more", alice["id"])
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [("bold", 0, 5)]
    assert [m["text"] for m in emu.sent_by_bot(alice["id"])] == ["hello & more"]
    assert isinstance(bot.request, AiohttpRequest)


async def test_long_poll_with_a_timeout(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await bot.get_updates(timeout=1) == ()  # read_timeout 5 + the poll's 1
    assert 0.9 <= loop.time() - started < 3
    alice = emu.add_user("Alice")
    poll = asyncio.create_task(bot.get_updates(timeout=10))
    await emu.wait_for(lambda: len(emu.calls_of("getUpdates")) == 2)
    emu.user_sends(alice, "hello")
    assert [u.message.text for u in await poll] == ["hello"]


async def test_errors_are_ptbs_own(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, mods = people(emu)
    emu.fail_next("sendMessage", retry_after=7)
    with pytest.raises(RetryAfter) as retry:
        await bot.send_message(alice["id"], "too fast")
    assert retry.value.retry_after.total_seconds() == 7
    emu.block_bot(alice["id"])
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(alice["id"], "blocked")
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(987654321, "nobody")
    emu.fail_next("sendMessage", status=502)
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(mods["id"], "a bad gateway")
    group = emu.add_group("Old group", supergroup=False)
    new_id = emu.migrate_group(group["id"])
    with pytest.raises(ChatMigrated) as migrated:
        await bot.send_message(group["id"], "moved")
    assert migrated.value.new_chat_id == new_id


async def test_multipart_uploads_are_accepted(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, mods = people(emu)
    image = png(64, 48)
    first = await bot.send_photo(mods["id"], image, caption="<b>Letter #1</b> «ü»", parse_mode="HTML")
    assert first.caption == "Letter #1 «ü»"
    [upload] = emu.uploads()
    assert (upload.method, upload.field, upload.chat_id, upload.data) == ("sendPhoto", "photo", mods["id"], image)
    # A file name with non-ASCII letters and a quote, a thumbnail that an attach:// names.
    sent = await bot.send_document(alice["id"], b"%PDF-1.7 ...", filename='Brief "Ä".pdf', caption="signed",
                                   thumbnail=png(2, 2))
    assert emu.calls_of("sendDocument")[0]["thumbnail"].startswith("attach://")
    assert (sent.document.mime_type, sent.caption) == ("application/pdf", "signed")
    assert emu.file_bytes(sent.document.file_id) == b"%PDF-1.7 ..."


async def test_a_large_upload_streams(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    """Over 1 MB of bytes: aiohttp would warn (an error here) if they were written to the socket in one go."""
    alice, _ = people(emu)
    data = bytes(range(256)) * (6 * 1024 * 1024 // 256)
    sent = await bot.send_document(alice["id"], data, filename="big.bin")
    assert emu.file_bytes(sent.document.file_id) == data


async def test_media_group_with_attach(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, _ = people(emu)
    one, two = png(10, 10, 0), png(10, 10, 200)
    sent = await bot.send_media_group(alice["id"], [InputMediaPhoto(one, caption="<i>two</i>", parse_mode="HTML"),
                                                    InputMediaPhoto(two)])
    assert len(sent) == 2 and sent[0].media_group_id == sent[1].media_group_id
    assert sent[0].caption == "two"
    media = emu.calls_of("sendMediaGroup")[0]["media"]
    assert all(item["media"].startswith("attach://") for item in media)
    assert [(u.field, u.data) for u in emu.uploads()] == [("media[0]", one), ("media[1]", two)]
    documents = await bot.send_media_group(alice["id"], [InputMediaDocument(b"1", filename="1.txt"),
                                                         InputMediaDocument(b"2", filename="2.txt")])
    assert [d.document.file_name for d in documents] == ["1.txt", "2.txt"]


async def test_download_through_get_file(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, _ = people(emu)
    image = png(8, 8)
    file_id = emu.user_sends_photo(alice, image)["photo"][-1]["file_id"]
    file = await bot.get_file(file_id)
    assert bytes(await file.download_as_bytearray()) == emu.file_bytes(file_id)


# --- what is sent: as HTTPXRequest sends it ---------------------------------------------------------------------


async def test_requests_are_the_ones_httpx_sends(server: Callable[[Handler], Awaitable[str]]) -> None:
    """Body type, fields, and each part's headers (name, file name, content type) equal PTB's HTTPXRequest's."""
    seen: list[Any] = []

    async def record(request: web.Request) -> web.Response:
        parts: list[Any] = []
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                parts.append((dict(part.headers), await part.read()))  # type: ignore[union-attr]
        else:
            parts.append(await request.read())
        seen.append((request.method, request.path, request.content_type, parts))
        return answer(request)

    root = await server(record)
    calls: list[list[Any]] = []
    for request in (AiohttpRequest(), HTTPXRequest()):
        seen.clear()
        async with telegram.Bot(TOKEN, base_url=f"{root}/bot", request=request) as ptb_bot:
            await ptb_bot.send_message(5, "hello «ü»", reply_markup=telegram.InlineKeyboardMarkup(
                [[telegram.InlineKeyboardButton("ok", callback_data="a")]]))
            await ptb_bot.send_document(5, b"\x00\x01data", filename='na"me\\ Ä.bin', caption="c",
                                        thumbnail=png(2, 2))
            await ptb_bot.send_media_group(5, [InputMediaPhoto(png(3, 3)), InputMediaPhoto(png(4, 4))])
        calls.append(list(seen))
    aio, httpx = calls

    def boundaryless(calls: list[Any]) -> list[Any]:
        # The attach:// names PTB makes are random: compare them by position.
        text = json.dumps(calls, default=lambda b: b.decode("latin-1"))
        names = list(dict.fromkeys(re.findall(r"attach://(\w+)", text)))
        for i, name in enumerate(names):
            text = text.replace(name, f"part{i}")
        return json.loads(text)

    assert len(aio) == 4
    assert boundaryless(aio) == boundaryless(httpx)
    # Not vacuous: the upload's parts are there, with their names, file names and types.
    _, _, kind, parts = aio[2]
    assert kind == "multipart/form-data"
    headers = [h for h, _ in parts]
    assert {"Content-Type": "application/octet-stream",
            "Content-Disposition": 'form-data; name="document"; filename="na%22me\\\\ Ä.bin"'} in headers
    assert all("Content-Type" not in h for h, body in parts if b"filename" not in h["Content-Disposition"].encode())


# --- failures of the network ------------------------------------------------------------------------------------


async def test_proxies_come_from_the_environment(
    server: Callable[[Handler], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is used as httpx's default uses it, and NO_PROXY too; the lookup is made once per host."""
    hosts: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        hosts.append(request.host)  # a proxy is asked for the absolute URL: the host is the Bot API's
        return answer(request)

    root = await server(proxy)
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", root)
    async with telegram.Bot(TOKEN, base_url="http://api.telegram.invalid/bot",
                            request=AiohttpRequest(connection_pool_size=2)) as ptb_bot:
        await ptb_bot.send_message(5, "through the proxy")
    assert hosts == ["api.telegram.invalid", "api.telegram.invalid"]  # getMe, sendMessage

    monkeypatch.setenv("NO_PROXY", "api.telegram.invalid")
    request = AiohttpRequest(connection_pool_size=1)
    await request.initialize()
    try:
        with pytest.raises(NetworkError) as direct:  # no proxy: the .invalid name cannot resolve
            await request.do_request(f"http://api.telegram.invalid/bot{TOKEN}/getMe", "POST")
    finally:
        await request.shutdown()
    no_token(direct.value)
    assert len(hosts) == 2


async def test_connection_refused_is_network_error_without_the_token() -> None:
    ptb_bot = make_bot(f"http://127.0.0.1:{free_port()}", connect_timeout=2)
    try:
        with pytest.raises(NetworkError) as refused:
            await ptb_bot.initialize()  # getMe
        assert not isinstance(refused.value, TimedOut)
        assert "aiohttp.ClientConnectorError" in str(refused.value)
        no_token(refused.value)
    finally:
        for request in ptb_bot._request:  # never initialized, so Bot.shutdown() would leave them
            await request.shutdown()


async def test_slow_server_past_read_timeout_is_timed_out(server: Callable[[Handler], Awaitable[str]]) -> None:
    root = await server(slow_after_get_me(3))
    async with make_bot(root, read_timeout=0.3) as ptb_bot:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimedOut) as timed_out:
            await ptb_bot.send_message(5, "slow")
        assert loop.time() - started < 2
        no_token(timed_out.value)
        # A longer read timeout, per call, waits it out (DEFAULT_NONE only falls back to the instance's).
        assert (await ptb_bot.get_me(read_timeout=5)).username == "RelayBot"


async def test_pool_timeout_when_every_connection_is_busy(server: Callable[[Handler], Awaitable[str]]) -> None:
    root = await server(slow_after_get_me(1))
    async with make_bot(root, connection_pool_size=1, pool_timeout=0.2) as ptb_bot:
        first = asyncio.create_task(ptb_bot.send_message(5, "one"))
        await asyncio.sleep(0.1)
        with pytest.raises(TimedOut, match="Pool timeout"):
            await ptb_bot.send_message(5, "two")
        assert (await first).text == "x"  # the one that had the connection was sent and answered


async def test_server_dropping_the_connection_is_network_error(server: Callable[[Handler], Awaitable[str]]) -> None:
    async def drop(request: web.Request) -> web.Response:
        if request.path.endswith("/getMe"):
            return web.json_response({"ok": True, "result": ME})
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    root = await server(drop)
    async with make_bot(root) as ptb_bot:
        with pytest.raises(NetworkError) as dropped:
            await ptb_bot.send_message(5, "x")
        assert str(dropped.value).startswith("aiohttp.")
        no_token(dropped.value)


def test_messages_lose_the_token_in_every_form() -> None:
    url = f"http://127.0.0.1:1/bot{TOKEN}/sendMessage"
    quoted = url.replace(":", "%3A", 2).replace("http%3A", "http:")
    for text in (f"Cannot reach {url}", f"bad {quoted}", f"token {TOKEN} alone"):
        safe = _safe(text, url)
        assert TOKEN not in safe and "TEST-token-secret" not in safe and "<token>" in safe
    assert _safe("Cannot connect to host 127.0.0.1:8081 ssl:default [Connect call failed]", url) == (
        "Cannot connect to host 127.0.0.1:8081 ssl:default [Connect call failed]")


# --- the session's life -----------------------------------------------------------------------------------------


async def test_shutdown_closes_the_session_and_connector(emu: TelegramEmulator) -> None:
    request = AiohttpRequest(connection_pool_size=4)
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request(f"{emu.api_root}/bot{TOKEN}/getMe", "POST")
    ptb_bot = telegram.Bot(TOKEN, base_url=f"{emu.api_root}/bot", request=request)
    async with ptb_bot:
        session = request._session
        assert session is not None and session.connector is not None
        assert session.connector.limit == 4
        await ptb_bot.get_me()
    assert session.closed and (session.connector is None or session.connector.closed)
    assert not request.is_initialized
    await request.shutdown()  # twice: nothing to do
    await request.initialize()  # and again: a new session
    assert request.is_initialized and request._session is not session
    await request.shutdown()
    gc.collect()  # an unclosed session or connector would warn here (ResourceWarning is an error in pytest)


# --- the setting ------------------------------------------------------------------------------------------------


def settings(**env: str) -> TelegramSettings:
    section = NETWORK.section(Reader({"TELEGRAM_TOKEN": TOKEN.replace("TEST-token-secret", "ABCDEFGHIJKLMN"),
                                      "TELEGRAM_MODERATION_CHAT": "-100123", **env}))
    assert section is not None
    return section


async def test_backend_setting_chooses_the_request() -> None:
    assert settings().http_backend == "aiohttp"
    assert settings(TELEGRAM_HTTP_BACKEND="HTTPX").http_backend == "httpx"
    with pytest.raises(ConfigError, match="TELEGRAM_HTTP_BACKEND: must be one of aiohttp, httpx"):
        settings(TELEGRAM_HTTP_BACKEND="requests")
    default = TelegramTransport(settings(), connection_pool_size=12)
    assert type(default.bot.request) is AiohttpRequest and default.bot.request.connection_pool_size == 12
    assert type(default.bot._request[0]) is AiohttpRequest and default.bot._request[0].connection_pool_size == 1
    httpx = TelegramTransport(settings(TELEGRAM_HTTP_BACKEND="httpx"))
    assert all(type(r) is HTTPXRequest for r in httpx.bot._request)
    for transport in (default, httpx):
        for request in transport.bot._request:
            await request.shutdown()


async def test_the_lean_send_reads_the_ids_and_refuses_an_answer_without_them(
    server: Callable[[Handler], Awaitable[str]]
) -> None:
    """RelayBot.send_text (every text the transport sends) reads only the two ids of Telegram's answer."""
    from bot.transports.telegram_bot import RelayBot

    broken = {"on": False}

    async def handler(request: web.Request) -> web.Response:
        if broken["on"] and request.path.endswith("/sendMessage"):
            return web.json_response({"ok": True, "result": True})
        return answer(request)

    root = await server(handler)
    async with RelayBot(TOKEN, base_url=f"{root}/bot", request=AiohttpRequest(connection_pool_size=2)) as ptb_bot:
        assert await ptb_bot.send_text({"chat_id": 5, "text": "x", "disable_notification": None}) == (5, 1)
        broken["on"] = True
        with pytest.raises(telegram.error.TelegramError, match="answered without a message"):
            await ptb_bot.send_text({"chat_id": 5, "text": "x"})

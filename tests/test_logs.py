"""What the logs say: no secret at any level (bot/logs.py), no letter text from a failing translator, and a
`--check` whose output is redacted and warns about third-party translators."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from aiohttp import web
from deep_translator import LibreTranslator
from deep_translator.exceptions import TranslationNotFound
from telegram import Bot

import handlers.translating
from bot import logs
from bot.app import check
from bot.config import Settings
from bot.logs import RedactingFilter, setup_logging
from bot.translation import DeepTranslator
from handlers.loggable import failure_summary, without_ids
from handlers.ports import NotReady, SystemClock, TranslationError
from handlers.translating import TranslationService
from storage.db import Database
from storage.letters import Letter
from storage.repositories import Repositories
from tests.emulators.libretranslate import FakeLibreTranslate
from tests.emulators.telegram import TelegramEmulator

# Shaped like a token from @BotFather, so the pattern must catch it even when nobody registered it.
TOKEN = "7123456789:AAEhBOweik6ad9r_QXMENQjcrGbqCr4K-ms"
# Too short for the pattern: only the exact value, registered from the settings, redacts it.
SHORT_TOKEN = "123456:TEST-relay-token"
SYNAPSE_TOKEN = "syt_cmVsYXk_QbVkWzrxeMNnsHytAeFL_0tUh4C"
FORMAT = "%(levelname)s %(name)s: %(message)s"


class Lines(logging.Handler):
    """Keeps every record as a formatted line (traceback and stack included), as a stream handler would write it."""

    def __init__(self, *filters: logging.Filter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        for each in filters:
            self.addFilter(each)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextmanager
def capturing(*handlers: logging.Handler, levels: dict[str, int] | None = None) -> Iterator[None]:
    """`handlers` on the root logger, in this order, with the given loggers' levels, all restored afterwards."""
    root = logging.getLogger()
    wanted = {"": logging.DEBUG, **(levels or {})}
    before = {name: logging.getLogger(name).level for name in wanted}
    for name, level in wanted.items():
        logging.getLogger(name).setLevel(level)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- (a) python-telegram-bot at DEBUG, for real ---------------------------------------------------------


@pytest.mark.parametrize(("token", "registered"), [(TOKEN, ()), (SHORT_TOKEN, (SHORT_TOKEN,))])
async def test_the_token_in_ptb_debug_lines_is_redacted(token: str, registered: tuple[str, ...]) -> None:
    raw = Lines()  # first on the root logger: sees each record before the redacting handler changes it
    redacted = Lines(RedactingFilter(registered))
    levels = {"telegram": logging.DEBUG, "httpx": logging.DEBUG, "httpcore": logging.DEBUG}
    async with TelegramEmulator(token) as emu:
        mods = emu.add_group("Moderators", members=[], bot_status="administrator")
        with capturing(raw, redacted, levels=levels):
            async with Bot(token, base_url=f"{emu.api_root}/bot") as bot:
                await bot.send_message(mods["id"], "We stand with you")
                await bot.get_updates(timeout=0)

    # The test means something: PTB (at DEBUG) and httpx put the token in their lines.
    leaking = [line for line in raw.lines if token in line]
    assert any(line.startswith("DEBUG telegram.Bot: Set Bot API URL") for line in leaking)
    assert any("httpx" in line and "/getMe" in line for line in leaking)
    assert len(redacted.lines) == len(raw.lines) > 10
    assert token not in redacted.text
    assert token.split(":")[1] not in redacted.text
    assert "DEBUG telegram.Bot: Set Bot API URL: http://127.0.0.1" in redacted.text
    assert f"/bot{logs.SECRET}/getMe" in redacted.text
    assert "sendMessage" in redacted.text


async def test_setup_logging_puts_the_filter_on_every_root_handler(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env({
        "TELEGRAM_TOKEN": SHORT_TOKEN, "TELEGRAM_MODERATION_CHAT": "-100123", "LOG_LEVEL": "DEBUG",
    })
    root, httpx = logging.getLogger(), logging.getLogger("httpx")
    before = root.level, httpx.level
    extra = Lines()
    root.addHandler(extra)
    try:
        redacting = setup_logging(settings)
        assert all(redacting in handler.filters for handler in root.handlers)
        assert httpx.level == logging.WARNING
        # Child loggers' records reach the root's handlers without the root logger's own filters.
        logging.getLogger("telegram.ext.Updater").debug("polling /bot%s/getUpdates", SHORT_TOKEN)
        logging.getLogger("nio.client").warning("login answered %s", {"access_token": "secret-of-nio-0815"})
    finally:
        root.removeHandler(extra)
        root.setLevel(before[0])
        httpx.setLevel(before[1])
        for handler in root.handlers:
            handler.removeFilter(redacting)

    for text in (extra.text, caplog.text):
        assert "polling /bot[secret]/getUpdates" in text
        assert "{'access_token': '[secret]'}" in text
        assert SHORT_TOKEN not in text and "secret-of-nio-0815" not in text


# --- (b) patterns, exceptions, tracebacks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        (f"GET /_matrix/client/v3/sync?since=s72594_4483&access_token={SYNAPSE_TOKEN}&timeout=30000", SYNAPSE_TOKEN),
        ("GET /_matrix/client/v3/sync?access_token=MDAxOGxvY2F0aW9uIGxvY2Fs&timeout=30000", "MDAxOGxvY2F0aW9u"),
        (f"whoami with {SYNAPSE_TOKEN}", SYNAPSE_TOKEN),
        ("compat token mct_6rXhQY3qjW2oF0dMDk8MxAOpZyTIBc_1rZ5nm", "mct_6rXhQY3qjW2oF0dMDk8MxAOpZyTIBc"),
        ('{"type": "m.login.password", "password": "correct horse \\"battery\\" staple"}', "horse"),
        ("{'user': '@relay:example.org', 'password': 'hunter2hunter2'}", "hunter2"),
        ('{"access_token": "opaque-token-from-another-server", "device_id": "ABC"}', "opaque-token"),
        ("Authorization: Bearer opaque_token.from-MAS.42", "opaque_token"),
        ("headers={'Authorization': 'Bearer opaque_token.from-MAS.42'}", "opaque_token"),
        ("headers={'Authorization': 'DeepL-Auth-Key 1e3f0a2b-deepl-key:fx'}", "1e3f0a2b"),
        ("POST /translate?q=hello&source=en&target=fr&api_key=libre-key-4711", "libre-key-4711"),
        (f"POST https://api.telegram.org/bot{TOKEN}/getUpdates", TOKEN.split(":")[1]),
    ],
)
def test_secret_shapes_are_redacted(line: str, secret: str) -> None:
    redacted = RedactingFilter().redact(line)
    assert secret not in redacted
    assert logs.SECRET in redacted


def test_ordinary_text_is_left_alone() -> None:
    text = "letter #12: approved; delivery 7 retry in 2.0 s (rate limited for 3 s); the bearer of good news"
    assert RedactingFilter(["abcd"]).redact(text) == text


def test_exact_secrets_are_redacted_also_encoded_and_short_ones_only_standing_alone() -> None:
    redacting = RedactingFilter(["p@ss w/rd!", "pw12"])
    assert redacting.redact("sent p@ss w/rd!, p%40ss%20w%2Frd%21 and p%40ss+w%2Frd%21") == (
        "sent [secret], [secret] and [secret]"
    )
    assert redacting.redact("pw12 but not pw123") == "[secret] but not pw123"


def test_exceptions_and_stacks_are_redacted_in_the_traceback_text_too() -> None:
    lines = Lines(RedactingFilter([SHORT_TOKEN]))
    # A logger of its own: pytest's handlers on the root logger would fail on the ill-formatted record.
    log = logging.getLogger("tests.logs.exceptions")
    log.propagate = False
    log.addHandler(lines)
    try:
        try:
            try:
                raise ValueError(f"no chat for {SHORT_TOKEN}")
            except ValueError as inner:
                raise RuntimeError(f"The token `{TOKEN}` was rejected; login said {SYNAPSE_TOKEN}") from inner
        except RuntimeError:
            log.exception("start failed with %s", SHORT_TOKEN)
        record = logging.LogRecord(log.name, logging.ERROR, __file__, 1, "stuck", None, None, sinfo=(
            f'Stack (most recent call last):\n  File "x.py", line 1, in f\n    call("{SYNAPSE_TOKEN}")'
        ))
        log.handle(record)
        log.warning("bad arguments %d for %s", "x", SHORT_TOKEN)  # the format does not fit: still redacted
    finally:
        log.removeHandler(lines)
        log.propagate = True

    text = lines.text
    for secret in (SHORT_TOKEN, TOKEN, TOKEN.split(":")[1], SYNAPSE_TOKEN):
        assert secret not in text
    assert "ERROR tests.logs.exceptions: start failed with [secret]" in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: no chat for [secret]" in text
    assert "RuntimeError: The token `[secret]` was rejected; login said [secret]" in text
    assert 'call("[secret]")' in text
    assert "bad arguments" in text


def test_ids_and_addresses_are_taken_out_of_reasons() -> None:
    reason = "User @ana:example.org not in room !AbC:example.org; chat -1001234567890, mail ana@example.org"
    assert without_ids(reason) == "User [id] not in room [id]; chat [id], mail [email]"
    assert without_ids("rate limited for 3 s") == "rate limited for 3 s"


def test_an_error_summary_names_the_class_and_place_not_the_message() -> None:
    try:
        raise KeyError("Querida Ana")
    except KeyError as error:
        summary = failure_summary(error)
    assert summary.startswith("KeyError at tests/test_logs.py:")
    assert "Querida" not in summary


# --- (c) a failing translator never logs the letter -----------------------------------------------------


class EmptyAnswers(FakeLibreTranslate):
    """LibreTranslate answering `{}`: deep-translator then raises TranslationNotFound(text), which quotes the letter."""

    async def _translate(self, request: web.Request) -> web.Response:
        answer = await super()._translate(request)
        return web.json_response({}) if answer.status == 200 else answer


@pytest.fixture
async def repos() -> AsyncIterator[Repositories]:
    db = await Database.open(":memory:")
    yield Repositories.over(db)
    await db.close()


async def test_a_translation_error_quoting_the_letter_never_reaches_the_log(
    repos: Repositories, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers.translating, "FIRST_BACKOFF", 0.05)
    caplog.set_level(logging.DEBUG)
    text = "Querida Ana, resistimos juntas en Rosario"
    now = SystemClock().now()
    letter = Letter(id=12, sender_id=3, status="approved", language="es", text=text, length=len(text), parts=1,
                    created_at=now, last_part_at=now, last_part_length=len(text), announced_at=now, decided_at=now)
    given_up = asyncio.Event()
    async with EmptyAnswers() as server:
        translator = DeepTranslator("libre", libre_url=server.url, call_timeout=2.0, first_backoff=0.01, attempts=2)
        service = TranslationService(translator, repos.translations, SystemClock(), 0.6, given_up.set)
        try:
            # The test means something: deep-translator's own exception quotes the letter.
            client = LibreTranslator(source="es", target="fr", api_key="none", custom_url=server.url + "/")
            with pytest.raises(TranslationNotFound) as raw:
                await asyncio.to_thread(client.translate, text)
            assert text in str(raw.value)
            caplog.clear()

            with pytest.raises(TranslationError) as caught:
                await translator.translate(text, "es", "fr")
            with pytest.raises(NotReady):
                await service.text_for(letter, "fr")
            await asyncio.wait_for(given_up.wait(), 10)
            assert (await service.text_for(letter, "fr")).untranslated
        finally:
            await service.close()
            await translator.close()
    assert server.call_count >= 4  # the translator's own attempts, and the service's retries of those

    assert text not in str(caught.value)
    assert "TranslationNotFound" in str(caught.value)
    messages = [record.getMessage() for record in caplog.records]
    assert any("letter #12: translation into fr failed" in message for message in messages)
    assert any("letter #12: no translation into fr" in message for message in messages)
    assert any(record.name.startswith("urllib3") for record in caplog.records)  # DEBUG lines were made
    forms = {text, quote(text), quote_plus(text), "resistimos", "Rosario"}
    for record in caplog.records:
        shown = record.getMessage()
        if record.exc_info:
            shown += logging.Formatter().formatException(record.exc_info)
        shown += record.exc_text or ""
        assert not any(form in shown for form in forms), shown


async def test_a_translation_error_keeps_no_library_text_in_its_chain() -> None:
    text = "Querida Ana, resistimos juntas en Rosario"
    async with EmptyAnswers() as server:
        translator = DeepTranslator("libre", libre_url=server.url, call_timeout=2.0, attempts=1)
        try:
            with pytest.raises(TranslationError) as caught:
                await translator.translate(text, "es", "fr")
        finally:
            await translator.close()
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    assert all("Rosario" not in str(each) for each in chain)


# --- (d) --check ----------------------------------------------------------------------------------------


def check_settings(api_url: str, chat: str, tmp_path: Path, translator: str = "google") -> Settings:
    return Settings.from_env({
        "TELEGRAM_TOKEN": TOKEN,
        "TELEGRAM_API_URL": api_url,
        "TELEGRAM_MODERATION_CHAT": chat,
        "TRANSLATOR": translator,
        "DATABASE": str(tmp_path / "relay.db"),
    })


WARNING = (
    "warning: TRANSLATOR=google sends the text of every approved letter to Google; "
    "TRANSLATOR=libre with a LibreTranslate server of your own keeps letters on your machines"
)


async def test_check_with_a_refused_token_prints_no_token_and_the_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with TelegramEmulator("7000000001:AAAnotTheTokenTheBotHasxxxxxxxxxxxxx") as emu:
        mods = emu.add_group("Moderators", members=[], bot_status="administrator")
        code = await check(check_settings(emu.api_root, str(mods["id"]), tmp_path))
        assert emu.calls and emu.calls[0][0] == "getMe"
    out = capsys.readouterr().out

    assert code == 1
    assert TOKEN not in out and TOKEN.split(":")[1] not in out
    assert "TELEGRAM_TOKEN / TELEGRAM_API_URL: getMe failed" in out
    assert "[secret]" in out  # PTB quotes the rejected token
    assert WARNING in out.splitlines()


async def test_check_with_a_closed_port_prints_no_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = await check(check_settings(f"http://127.0.0.1:{free_port()}", "-100123", tmp_path))
    out = capsys.readouterr().out

    assert code == 1
    assert TOKEN not in out and TOKEN.split(":")[1] not in out
    assert "getMe failed" in out
    assert WARNING in out.splitlines()


async def test_check_passes_with_only_the_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with TelegramEmulator(TOKEN) as emu:
        mods = emu.add_group("Moderators", members=[], bot_status="administrator")
        code = await check(check_settings(emu.api_root, str(mods["id"]), tmp_path))
    lines = capsys.readouterr().out.splitlines()

    assert code == 0
    assert lines == [
        "telegram: the token belongs to @relay_test_bot",
        WARNING,
        "configuration OK: every configured network is reachable",
    ]


@pytest.mark.parametrize(("translator", "warned"), [("deepl", "DeepL"), ("mymemory", "MyMemory"), ("none", None)])
async def test_check_warns_for_each_third_party_translator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], translator: str, warned: str | None
) -> None:
    async with TelegramEmulator(TOKEN) as emu:
        mods = emu.add_group("Moderators", members=[], bot_status="administrator")
        settings = Settings.from_env({
            "TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": emu.api_root, "TELEGRAM_MODERATION_CHAT": str(mods["id"]),
            "TRANSLATOR": translator, "DEEPL_API_KEY": "deepl-key-0815:fx", "DATABASE": str(tmp_path / "relay.db"),
        })
        code = await check(settings)
    out = capsys.readouterr().out

    assert code == 0
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and f"to {warned}" in warnings[0] and f"TRANSLATOR={translator} " in warnings[0]
    assert "deepl-key-0815" not in out


def test_a_librarys_warning_names_no_person_nor_device() -> None:
    """nio's crypto warns with the user, device and key it was handling; the bot's own lines are left alone."""
    settings = Settings.from_env({"TELEGRAM_TOKEN": SHORT_TOKEN, "TELEGRAM_MODERATION_CHAT": "-100123"})
    lines = Lines()
    _redacting, restore = logs.configure(settings, [lines])
    key = "b8Xk0J2mQ9cT1vR5yW3zA7dF4gH6jK8lN0pS2uV4wY6"
    try:
        with capturing(lines):
            logging.getLogger("nio.crypto.log").warning(
                "Missing Olm session for user @alice:example.org and device QWERTYUIOP (%s), skipping", key)
            logging.getLogger("bot.transports.matrix").warning("matrix: device %s", "ABCDEFGHIJ")
    finally:
        restore()
    assert lines.lines[0].endswith("Missing Olm session for user [id] and device [device] ([key]), skipping")
    assert lines.lines[1].endswith("matrix: device ABCDEFGHIJ")  # the bot's own device, logged on purpose

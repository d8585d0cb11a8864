"""Benchmark 1 with the emulator in its own process: the Bot API is remote, as Telegram is.

In-process, the emulator and the bot share one core and one event loop, so sending concurrently only adds CPU;
here each side has its own process (and core), as in production, and what the bot costs per delivery is its own.

Measured here: a bare python-telegram-bot loop on each request backend at the worker's concurrency, the bot
without pacing, and the bot as an operator with paid broadcast would run it (`TELEGRAM_PAID_BROADCAST=true`,
`TELEGRAM_MESSAGES_PER_SECOND=1000`) against an emulator that enforces Telegram's limits, paid ones included.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from bench.common import UNLIMITED, broadcast_times
from bot.app import Relay, settle_memory
from bot.config import Settings
from bot.pacing import Rates
from handlers.events import UserRef
from handlers.moderation import decide
from storage.letters import NewPart

TOKEN = "123456:BENCH-remote-token"
TEXT = "Hold the line, comrades ✊ We are with you, from every harbour of the world."
BACKENDS = ("httpx", "aiohttp")


def serve(connection: Connection, readers: int, limited: bool) -> None:
    """Child process: an emulator with `readers` private chats (Telegram's limits on when `limited`); sends
    (root, mods id, chat ids), then answers each "429?" with the 429s counted so far, until "stop"."""
    from tests.emulators.telegram import Limits, TelegramEmulator

    async def main() -> None:
        async with TelegramEmulator(TOKEN) as emu:
            emu.limits = Limits() if limited else None
            mods = emu.add_group("Moderators", bot_status="administrator")
            chats = [emu.start_private_chat(emu.add_user(f"Reader {n}"))["id"] for n in range(readers)]
            connection.send((emu.api_root, mods["id"], chats))
            loop = asyncio.get_running_loop()
            while await loop.run_in_executor(None, connection.recv) != "stop":
                connection.send(emu.count_429)

    asyncio.run(main())


@dataclass(frozen=True)
class Run:
    """One way of sending the same messages: how long it took and the CPU this process spent on it."""

    what: str
    sent: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """CPU per message, in microseconds."""
        return 1e6 * self.cpu_seconds / self.sent if self.sent else 0.0


class Emulator:
    """An emulator in a child process, for one `async with`."""

    def __init__(self, readers: int, limited: bool = False) -> None:
        self.readers, self.limited = readers, limited
        self.root, self.mods, self.chats = "", 0, list[int]()

    async def __aenter__(self) -> Emulator:
        context = multiprocessing.get_context("spawn")
        self._ours, theirs = context.Pipe()
        self._child = context.Process(target=serve, args=(theirs, self.readers, self.limited), daemon=True)
        self._child.start()
        self.root, self.mods, self.chats = await self._ask(None)
        return self

    async def count_429(self) -> int:
        """429s answered so far."""
        return int(await self._ask("429?"))  # type: ignore[call-overload]

    async def _ask(self, question: str | None) -> object:
        loop = asyncio.get_running_loop()
        if question is not None:
            self._ours.send(question)
        return await loop.run_in_executor(None, self._ours.recv)

    async def __aexit__(self, *exc_info: object) -> None:
        self._ours.send("stop")
        self._child.join(10)
        if self._child.is_alive():
            self._child.kill()


async def bare_loop(root: str, chats: list[int], backend: str, concurrency: int, token: str = TOKEN,
                    text: str = TEXT, plain: bool = False) -> Run:
    """A plain telegram.Bot on `backend` sending one message per chat, `concurrency` at a time: the message the
    bot sends (its HTML with the letter's title, no link preview), or with `plain` the text alone."""
    from telegram import Bot, LinkPreviewOptions
    from telegram.constants import ParseMode

    from bot.markup import render_telegram_html
    from bot.transports.telegram_request import REQUESTS

    options: dict[str, object] = {}
    if not plain:
        text = render_telegram_html("✊ Letter of solidarity #1", text, None)
        options = {"parse_mode": ParseMode.HTML, "link_preview_options": LinkPreviewOptions(is_disabled=True)}
    request = REQUESTS[backend](connection_pool_size=concurrency + 1)
    pending = iter(chats)

    async def sender(bot: Bot) -> None:
        for chat in pending:
            await bot.send_message(chat, text, **options)  # type: ignore[arg-type]

    async with Bot(token, base_url=f"{root}/bot", request=request) as bot:
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(sender(bot) for _ in range(concurrency)))
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    what = "plain text" if plain else "the bot's message"
    return Run(f"bare PTB loop, {backend}, {concurrency} in flight, {what}", len(chats), seconds, cpu_seconds)


async def bot_broadcast(
    emu: Emulator, directory: Path, what: str, env: dict[str, str], rates: Rates | None = None
) -> tuple[Run, int]:
    """The bot from approval to the last delivery recorded as sent; returns the run and its worker concurrency."""
    settings = Settings.from_env({
        "TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": emu.root, "TELEGRAM_MODERATION_CHAT": str(emu.mods),
        "DATABASE": str(directory / f"{what.replace(' ', '-')}.db"), "TRANSLATOR": "none", "LOG_LEVEL": "WARNING",
        **env,
    })
    relay = Relay(settings, rates={"telegram": rates} if rates else None)
    await relay.start()
    settle_memory()  # as `python -m bot` does once started
    try:
        assert relay.ctx is not None and relay.worker is not None
        ctx, repos = relay.ctx, relay.ctx.repos
        async with ctx.transaction():
            for chat in emu.chats:
                await repos.subscriptions.subscribe("telegram", str(chat), "private", None, "en", 0)
        sender = await repos.senders.ensure("telegram", "1", "1", "en", 0)
        letter = await repos.letters.start_letter(sender.id, NewPart("telegram", "1", "1", TEXT, len(TEXT), 0))
        await repos.letters.mark_announced(letter.id, time.time())
        await relay.worker.drain()  # the card, so that only the broadcast is measured
        cpu = time.process_time()
        # As a moderator's /approve does: the decision, the cards' edits, the queue, the worker woken.
        await decide(ctx, letter.id, "approve", UserRef("telegram", "0", "Bench"), "telegram", None)
        while (await repos.deliveries.progress(letter.id)).open:  # noqa: ASYNC110 (the database is polled)
            await asyncio.sleep(0.02)
        cpu_seconds = time.process_time() - cpu
        progress = await repos.deliveries.progress(letter.id)
        times = await broadcast_times(repos, letter.id)
        assert times.elapsed is not None, "nothing was sent"
        return Run(what, progress.sent, times.elapsed, cpu_seconds), relay.worker.concurrency
    finally:
        await relay.stop()


@dataclass(frozen=True)
class RemoteFigures:
    bare: dict[str, Run]  # backend → the bare loop's best run at the worker's concurrency
    bot: dict[str, Run]  # backend → the bot without pacing
    concurrency: int
    paid: Run | None = None  # TELEGRAM_PAID_BROADCAST=true, 1,000/s, emulator limits on
    paid_429: int = 0


async def measure(readers: int, directory: Path, paid_readers: int | None = None) -> RemoteFigures:
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before anything is measured)
    bare: dict[str, Run] = {}
    bot: dict[str, Run] = {}
    concurrency = 0
    async with Emulator(readers) as emu:
        for backend in BACKENDS:
            run, concurrency = await bot_broadcast(emu, directory, f"bot, {backend}",
                                                   {"TELEGRAM_HTTP_BACKEND": backend}, UNLIMITED)
            bot[backend] = run
            loops = [await bare_loop(emu.root, emu.chats, backend, concurrency) for _ in range(2)]
            bare[backend] = min(loops, key=lambda loop: loop.seconds)
    paid, paid_429 = None, 0
    if paid_readers:
        async with Emulator(paid_readers, limited=True) as emu:
            paid, _ = await bot_broadcast(emu, directory, "bot, paid broadcast", {
                "TELEGRAM_PAID_BROADCAST": "true", "TELEGRAM_MESSAGES_PER_SECOND": "1000"})
            paid_429 = await emu.count_429()
    return RemoteFigures(bare, bot, concurrency, paid, paid_429)

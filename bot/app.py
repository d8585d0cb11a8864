"""The composition root: database, catalogues, networks, worker; start and stop them in order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from bot import files
from bot.config import Settings
from bot.i18n import Catalogues
from bot.intake import FairIntake
from bot.keys import AccountKey
from bot.language import LinguaDetector
from bot.logs import redact
from bot.media import MediaStore, Shelf
from bot.networks import Needs, by_name
from bot.outbox import OutboxWorker, concurrency_for
from bot.pacing import Pacer, Rates
from bot.scheduler import TaskScheduler
from handlers import effects, privacy, rooms, router, submission
from handlers.context import Context, Network, Policy, Room
from handlers.domain import DomainEvents
from handlers.events import Event
from handlers.ports import SystemClock, Translator
from handlers.translating import TranslationService
from storage.db import Database, DatabaseTooNew
from storage.repositories import Repositories
from storage.state import StateRepository

log = logging.getLogger(__name__)

# Retention is measured in days: looking once an hour cuts every link within an hour of its time.
PURGE_EVERY = 3600.0
# Rooms on probation are looked at this often: none stays much more than its hour.
ROOM_SWEEP_EVERY = 300.0
# How long a stop waits for events already taken in (PTB has confirmed them to Telegram) to be handled.
DRAIN_SECONDS = 10.0


class StartupError(Exception):
    """A network refused to start (wrong token or password, no such room): one line for the operator."""


def build_networks(
    settings: Settings, state: StateRepository, pacers: dict[str, Pacer], media: Shelf
) -> dict[str, Network]:
    networks: dict[str, Network] = {}
    for name, section in settings.networks.items():
        needs = Needs(settings, state, settings.database.parent, concurrency_for({name: pacers[name]}), media)
        networks[name] = by_name(name).build(section, needs)
    return networks


def make_translator(settings: Settings) -> Translator | None:
    if settings.translator == "none":
        return None
    from bot.translation import build_translator  # deep-translator is loaded only when used

    return build_translator(settings)


def rates_for(settings: Settings) -> dict[str, Rates]:
    """The platforms' documented limits, or the operator's own global rates where set."""
    return {name: by_name(name).rates(section) for name, section in settings.networks.items()}


def moderation_rooms(settings: Settings, networks: dict[str, Network]) -> tuple[Room, ...]:
    rooms = []
    for name, section in settings.networks.items():
        room_id = by_name(name).moderation_room(section, networks[name]) if name in networks else None
        if room_id:
            rooms.append(Room(name, room_id))
    return tuple(rooms)


@dataclass
class Relay:
    """The running bot; `start()` and `stop()` are what tests drive, `run()` what `python -m bot` does."""

    settings: Settings
    networks: dict[str, Network] = field(default_factory=dict)
    db: Database | None = None
    ctx: Context | None = None
    worker: OutboxWorker | None = None
    scheduler: TaskScheduler = field(default_factory=TaskScheduler)
    rates: dict[str, Rates] | None = None  # None: from the settings
    translator: Translator | None = None  # None: built from the settings
    _worker_task: asyncio.Task[None] | None = None
    _chores: list[asyncio.Task[None]] = field(default_factory=list)
    intake: FairIntake | None = None

    async def start(self) -> None:
        settings = self.settings
        self.intake = FairIntake(self._handle)
        files.prepare(settings.database)
        try:
            self.db = await Database.open(settings.database)
        except DatabaseTooNew as error:
            raise StartupError(str(error)) from None
        repos = Repositories.over(self.db)
        pacers = {name: Pacer(rates) for name, rates in (self.rates or rates_for(settings)).items()}
        media = Shelf(MediaStore(files.media_folder(settings.database)))
        self.networks = self.networks or build_networks(settings, repos.state, pacers, media)
        for name, network in self.networks.items():
            log.info("starting %s", name)
            try:
                await network.start(self.dispatch)
            except Exception as error:
                raise StartupError(redact(f"{name} did not start: {error}", settings)) from None
        # What the networks wrote (the Matrix store) included.
        files.tighten(settings.database, [files.MEDIA_FOLDER,
                                          *(folder for name in settings.networks for folder in by_name(name).folders)])
        translator = self.translator or make_translator(settings)
        translating = None
        if translator is not None:
            translating = TranslationService(
                translator, repos.translations, SystemClock(), settings.translation_wait, self._wake_delivery
            )
        self.ctx = Context(
            policy=Policy(
                default_language=settings.default_language,
                moderation_rooms=moderation_rooms(settings, self.networks),
                letter_join_seconds=settings.letter_join_seconds,
                retention_days=settings.retention_days,
                moderators=settings.moderators,
                letters_per_day=settings.letters_per_day,
                media_max_bytes=int(settings.media_max_mb * 1024 * 1024),
            ),
            repos=repos,
            networks=self.networks,
            texts=Catalogues.load(settings.locales_dir, settings.default_language),
            clock=SystemClock(),
            scheduler=self.scheduler,
            detector=LinguaDetector(),
            translating=translating,
            hasher=AccountKey.load_or_create(files.key_path(settings.database)),
            events=effects.subscribe(DomainEvents()),
            media=media,
        )
        self.worker = OutboxWorker(self.ctx, {name: pacers[name] for name in self.networks})
        self.ctx.wake_delivery = self._wake_delivery
        await privacy.hash_legacy_bans(self.ctx)
        await submission.announce_leftovers(self.ctx)
        self.intake.start()  # events that came while starting waited in their queues
        self._worker_task = asyncio.create_task(self.worker.run())
        ctx = self.ctx
        self._chores = [
            asyncio.create_task(_every(PURGE_EVERY, "retention purge", lambda: privacy.purge(ctx))),
            asyncio.create_task(_every(ROOM_SWEEP_EVERY, "room sweep", lambda: rooms.leave_idle(ctx))),
        ]

    def _wake_delivery(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    def dispatch(self, event: Event) -> asyncio.Future[None]:
        """The networks' way in: queued at once in its sender's turn; the future completes once handled.

        Networks start before the context exists (the Matrix room id is known only once logged in): their
        events wait in the intake until it starts.
        """
        assert self.intake is not None
        return self.intake.submit(event)

    async def _handle(self, event: Event) -> None:
        assert self.ctx is not None
        await router.dispatch(event, self.ctx)

    async def stop(self) -> None:
        """Handle what was taken in, let in-flight sends finish briefly (the rest is retried at the next start),
        then stop the networks."""
        for chore in self._chores:
            chore.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)
        for name, network in self.networks.items():
            try:
                # Bounded: a network waits for the events it handed over, and one stuck handler must not hold the
                # stop for ever (what it had not finished comes again at the next start).
                await asyncio.wait_for(network.stop_receiving(), DRAIN_SECONDS * 2)
            except Exception as error:
                log.warning("%s did not stop receiving cleanly (%s)", name, type(error).__name__)
        if self.intake is not None:
            if self.ctx is not None and not await self.intake.drain(within=DRAIN_SECONDS):
                log.warning("stopping with %d events not handled", self.intake.waiting)
            await self.intake.stop()
        if self.worker is not None:
            await self.worker.stop()
        if self._worker_task is not None:
            await asyncio.gather(self._worker_task, return_exceptions=True)
        await self.scheduler.cancel_all()
        if self.ctx is not None and self.ctx.translating is not None:
            await self.ctx.translating.close()
            close = getattr(self.ctx.translating.translator, "close", None)
            if close is not None:
                await close()
        for name, network in self.networks.items():
            with contextlib.suppress(Exception):
                await network.stop()
            log.info("stopped %s", name)
        if self.db is not None:
            await self.db.close()


async def _every(seconds: float, name: str, chore: Callable[[], Awaitable[object]]) -> None:
    """At start-up, then every `seconds`; in the background, so a long backlog never delays the start."""
    while True:
        try:
            await chore()
        except Exception as error:
            log.error("%s failed (%s); trying again in %.0f s", name, type(error).__name__, seconds)
        await asyncio.sleep(seconds)


def settle_memory() -> None:
    """What start-up made (libraries, language models, settings) lives as long as the process: frozen, the
    garbage collector no longer walks it in every full collection, each of which otherwise stalled the loop for
    15-20 ms (measured in benchmark 2: long enough for a send to reach Telegram late and crowd a second)."""
    gc.collect()
    gc.freeze()


async def run(settings: Settings) -> int:
    relay = Relay(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await relay.start()
        settle_memory()
        log.info("Solidarity Relay is running")
        await stop.wait()
        log.info("stopping")
    finally:
        await relay.stop()
    return 0


async def check(settings: Settings) -> int:
    """`--check`: reach every configured network and report one line per problem; a warning alone passes."""
    problems: list[str] = []
    for name, section in settings.networks.items():
        problems += await _probe(name, settings, partial(by_name(name).check, section, settings))
    lines = [*problems]
    warning = translator_warning(settings)
    if warning is not None:
        lines.append(warning)
    if not problems:
        lines.append("configuration OK: every configured network is reachable")
    for line in lines:
        print(redact(line, settings))
    return 1 if problems else 0


# Where TRANSLATOR sends the text of every approved letter, for the providers that are someone else's servers.
THIRD_PARTY_TRANSLATORS = {"google": "Google", "deepl": "DeepL", "mymemory": "MyMemory (Translated)"}


def translator_warning(settings: Settings) -> str | None:
    provider = THIRD_PARTY_TRANSLATORS.get(settings.translator)
    if provider is None:
        return None
    return (
        f"warning: TRANSLATOR={settings.translator} sends the text of every approved letter to {provider}; "
        "TRANSLATOR=libre with a LibreTranslate server of your own keeps letters on your machines"
    )


async def _probe(name: str, settings: Settings, check_network: Callable[[], Awaitable[list[str]]]) -> list[str]:
    """One network's check, what it prints and what it raises redacted: libraries quote tokens in their errors."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            problems = await check_network()
    except Exception as error:
        problems = [f"{name}: the check failed: {type(error).__name__}: {error}"]
    for line in printed.getvalue().splitlines():
        print(redact(line, settings))
    return problems

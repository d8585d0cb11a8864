"""Benchmark 5: the retention purge of 100,000 decided letters, and what it does to a letter arriving meanwhile.

A file database is filled with bulk SQL: letters decided 31 to ~400 days ago (70% approved, 20% rejected, 10%
withdrawn), one 1–3 kB part and one decision each, from senders that each have an `accounts` row, plus
translations and old replay guards. `handlers.privacy.purge` then runs as a task with a 30-day retention while
an intake task, every 5 ms, sends a new supporter's message through `handlers.router.dispatch` (private chat,
fake network: the letter is stored, the receipt and the moderators' card go out) and times it. The same intake
runs first with no purge, for the ratio. Afterwards: WAL and database size, and checks that no account of the
old senders remains and no rejected or withdrawn letter keeps its text.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from array import array
from pathlib import Path
from typing import Any

from bench.common import ROOT, Result, n, tally_logs, temp_dir

GOAL_MS = 100.0
INTERVAL = 0.005  # the intake's pause between two letters
MODERATION_CHAT = "-100500"
DAY = 86400.0
OLD_USERS = 7_000_000_000  # user ids of the senders in the filled database: OLD_USERS + i
NEW_USERS = 8_000_000_000  # user ids of the intake's supporters
STATUSES = ("approved",) * 7 + ("rejected",) * 2 + ("withdrawn",)
ACTIONS = {"approved": "approve", "rejected": "reject", "withdrawn": "withdraw"}

PARAGRAPHS = {
    "en": [
        "From the dock workers of Valparaíso to everyone holding the line: we read about your strike every morning, "
        "and every morning we are prouder. Whatever they tell you, you are not alone.",
        "Our union voted yesterday to send what we can, and more will follow. We have seen what happens when people "
        "stand together and refuse to be divided by those who profit from their silence.",
        "Your courage reminds us that every right we have was won by someone who would not give up. We carry your "
        "story to our meetings, to our families, to the bus stops and the factory gates.",
        "The night shift at the hospital asked me to add their names, but they are too many for one letter: know "
        "that two hundred nurses are thinking of you tonight, and that we will not forget.",
        "Hold on, comrades ✊ The winter is long, but so is our memory, and so is our patience. With love from the "
        "teachers, the drivers, the cooks and the students of the whole valley.",
    ],
    "es": [
        "Desde el sindicato de panaderos de Rosario les mandamos un abrazo enorme. Seguimos cada noticia de su lucha "
        "y la compartimos en cada asamblea: no están solos, compañeras y compañeros.",
        "Sabemos lo que cuesta sostener una huelga cuando llega el fin de mes. Juntamos lo que pudimos y vamos a "
        "seguir juntando, porque su lucha es también la nuestra y la de nuestros hijos.",
        "Que nadie les diga que no vale la pena. Cada derecho que tenemos lo ganó alguien que no se rindió. Un "
        "saludo de las cocineras del comedor del barrio, que les mandan fuerza y cariño.",
    ],
    "fr": [
        "Chères camarades, depuis Marseille nous suivons votre grève avec une admiration immense. Les dockers du port "
        "ont voté hier une motion de soutien, et une collecte circule dans tous les ateliers.",
        "Ce que vous faites nous rend du courage à nous aussi. On nous répète que rien ne change, et vous prouvez le "
        "contraire chaque jour. Tenez bon : la solidarité n'a pas de frontières.",
        "Les étudiantes de la fac de Saint-Charles vous envoient leurs pensées et leurs chansons. Nous lirons votre "
        "lettre de réponse à voix haute, à la prochaine assemblée générale.",
    ],
}
SIGNATURES = ["With love, Sindicato N°1", "Solidarité, la CGT du port", "Un abrazo, el comedor de La Boca",
              "In solidarity, the night shift", "Love from the Leeds library workers"]


def letter_texts(rng: random.Random, count: int = 64) -> list[tuple[str, str]]:
    """`count` letters (language, text) of 1–3 kB, each a few paragraphs of one language and a signature."""
    texts = []
    for index in range(count):
        language = ("en", "en", "es", "fr")[index % 4]
        target = rng.randint(1000, 2750)
        paragraphs: list[str] = []
        while sum(len(p.encode()) + 2 for p in paragraphs) < target:
            paragraphs.append(rng.choice(PARAGRAPHS[language]))
        texts.append((language, "\n\n".join([*paragraphs, rng.choice(SIGNATURES)])))
    return texts


@dataclasses.dataclass
class Sizes:
    letters: int
    senders: int
    translations: int
    replay_guards: int

    @classmethod
    def for_letters(cls, letters: int) -> Sizes:
        return cls(letters, max(letters // 5, 1), letters // 20, letters // 2)


def files_size(database: Path) -> tuple[int, int]:
    """(database file, WAL file) in bytes."""
    wal = Path(f"{database}-wal")
    return database.stat().st_size, (wal.stat().st_size if wal.exists() else 0)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)] if ordered else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class TimedLock(asyncio.Lock):
    """The database's write lock, recording how long each task held it: what a transaction makes others wait."""

    def __init__(self) -> None:
        super().__init__()
        self.holds: list[tuple[str, float]] = []  # (task name, seconds held)
        self._since = 0.0
        self._owner = ""

    async def acquire(self) -> bool:
        await super().acquire()
        task = asyncio.current_task()
        self._owner = task.get_name() if task is not None else "?"
        self._since = time.perf_counter()
        return True

    def release(self) -> None:
        self.holds.append((self._owner, time.perf_counter() - self._since))
        super().release()


async def fill(db: Any, sizes: Sizes, now: float, seed: int = 5) -> dict[str, int]:
    """The database of a bot that has run for a year, all of it decided at least 31 days ago, in one transaction."""
    rng = random.Random(seed)
    texts = letter_texts(rng)
    count = sizes.letters
    newest = now - 31 * DAY - 2 * DAY  # decided at most 2 days after it arrived, so ≥ 31 days ago
    span = 365 * DAY
    # Per letter: its sender (uniform), status, text variant; arrival times are spread evenly over the year.
    sender_of = array("i", (rng.randrange(sizes.senders) + 1 for _ in range(count)))
    status_of = bytes(rng.randrange(len(STATUSES)) for _ in range(count))
    text_of = array("H", (rng.randrange(len(texts)) for _ in range(count)))
    delay_of = array("d", (rng.uniform(600, 2 * DAY) for _ in range(count)))

    def created(i: int) -> float:
        return newest - span + span * i / count

    def decided(i: int) -> float:
        return created(i) + delay_of[i]

    def text(i: int) -> str:
        return f"{texts[text_of[i]][1]}\n(letter {i + 1})"

    last_letter = {sender: i for i, sender in enumerate(sender_of)}
    async with db.transaction() as connection:
        await connection.executemany(
            "INSERT INTO senders (id, created_at) VALUES (?, ?)",
            ((sender, newest - span) for sender in range(1, sizes.senders + 1)),
        )
        await connection.executemany(
            """INSERT INTO accounts (sender_id, platform, user_id, chat_id, language, last_seen_at)
               VALUES (?, 'telegram', ?, ?, 'en', ?)""",
            ((sender, str(OLD_USERS + sender), str(OLD_USERS + sender),
              created(last_letter[sender]) if sender in last_letter else newest - span)
             for sender in range(1, sizes.senders + 1)),
        )
        await connection.executemany(
            """INSERT INTO letters (id, sender_id, status, language, created_at, announced_at, decided_at,
                                    reported_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            ((i + 1, sender_of[i], STATUSES[status_of[i]], texts[text_of[i]][0], created(i), created(i) + 1,
              decided(i), decided(i) + 600 if STATUSES[status_of[i]] == "approved" else None)
             for i in range(count)),
        )
        await connection.executemany(
            """INSERT INTO letter_parts (letter_id, seq, platform, chat_id, message_id, text, length, received_at)
               VALUES (?, 1, 'telegram', ?, ?, ?, ?, ?)""",
            ((i + 1, str(OLD_USERS + sender_of[i]), str(i + 1), body, len(body), created(i))
             for i in range(count) for body in (text(i),)),
        )
        await connection.executemany(
            """INSERT INTO decisions (letter_id, action, platform, moderator_id, moderator, reason, decided_at)
               VALUES (?, ?, 'telegram', ?, ?, ?, ?)""",
            ((i + 1, ACTIONS[STATUSES[status_of[i]]],
              "" if STATUSES[status_of[i]] == "withdrawn" else "900",
              "sender" if STATUSES[status_of[i]] == "withdrawn" else "Mo",
              "off topic" if STATUSES[status_of[i]] == "rejected" else None, decided(i))
             for i in range(count)),
        )
        # Translations of every 20th letter, whatever became of it (a moderator may translate before deciding).
        await connection.executemany(
            """INSERT INTO translations (letter_id, language, text, source, created_at)
               VALUES (?, ?, ?, 'deepl', ?)""",
            ((i + 1, "de" if texts[text_of[i]][0] != "de" else "en", text(i), decided(i))
             for i in range(0, count, 20)[:sizes.translations]),
        )
        await connection.executemany(
            "INSERT INTO seen_events (platform, event_id, seen_at) VALUES ('telegram', ?, ?)",
            ((f"u{i}", newest - span * i / sizes.replay_guards) for i in range(sizes.replay_guards)),
        )
    removable = sum(1 for status in status_of if STATUSES[status] != "approved")
    return {"removable": removable, "senders_used": len(last_letter)}


class Intake:
    """New supporters' letters through the real path, one at a time, every INTERVAL; each one timed."""

    def __init__(self, ctx: Any, network: Any, stored_at: dict[str, float]) -> None:
        self.ctx = ctx
        self.network = network
        self.stored_at = stored_at  # message id → when letters.start_letter returned (set by the timed repository)
        self.sent = 0
        rng = random.Random(7)
        self.texts = [text for _language, text in letter_texts(rng, 16)]

    async def one(self) -> tuple[float, float]:
        """(seconds until the reply and the card went out, seconds until the letter was stored)."""
        from handlers.events import ChatKind, ChatRef, IncomingMessage, UserRef
        from handlers.router import dispatch

        self.sent += 1
        user_id = str(NEW_USERS + self.sent)
        text = self.texts[self.sent % len(self.texts)]
        message = IncomingMessage(
            event_id=f"intake{self.sent}", chat=ChatRef("telegram", user_id, ChatKind.PRIVATE),
            sender=UserRef("telegram", user_id, "Ana", "en"), text=text, message_id=f"intake{self.sent}",
            received_at=time.time(), content_kind="text", length=len(text), limit=4096,
        )
        started = time.perf_counter()
        await dispatch(message, self.ctx)
        answered = time.perf_counter() - started
        self.network.posted.clear()  # the fake's record is the harness's memory, not the bot's
        stored = self.stored_at.pop(message.message_id, None)
        if stored is None:
            raise RuntimeError(f"intake letter {self.sent} was not stored (see the log above)")
        return answered, stored - started

    async def run(self, count: int | None = None, until: asyncio.Event | None = None) -> list[tuple[float, float]]:
        times = []
        while (count is None or len(times) < count) and not (until is not None and until.is_set()):
            times.append(await self.one())
            await asyncio.sleep(INTERVAL)
        return times


async def measure(sizes: Sizes) -> dict[str, Any]:
    from bot.i18n import Catalogues
    from bot.keys import AccountKey
    from handlers import effects
    from handlers import privacy as privacy_handlers
    from handlers.context import Context, Policy, Room
    from handlers.domain import DomainEvents
    from handlers.ports import SystemClock
    from storage.db import Database
    from storage.letters import LetterRepository
    from storage.privacy import PrivacyRepository
    from storage.repositories import Repositories
    from tests.fakes import FakeNetwork, ManualScheduler

    refused: list[str] = []  # checkpoints that gave up
    calls: dict[str, list[tuple[float, int]]] = {"unlink": [], "idle": [], "guards": [], "checkpoint": []}

    class TimedDatabase(Database):
        def __init__(self, connection: Any) -> None:
            super().__init__(connection)
            self.lock = self._write_lock = TimedLock()

        async def checkpoint(self, *args: Any, **kwargs: Any) -> bool:
            """The real checkpoint, timed, with how many times it took the write lock (one per attempt: SQLite
            refuses while a read is open on the shared connection, and Database.checkpoint tries again)."""
            started, held = time.perf_counter(), len(self.lock.holds)
            emptied = await super().checkpoint(*args, **kwargs)
            calls["checkpoint"].append((time.perf_counter() - started, len(self.lock.holds) - held))
            if emptied is False:
                refused.append("Database.checkpoint gave up: the WAL was not emptied")
            return emptied is not False

    class TimedPrivacy(PrivacyRepository):
        """The real repository, each call timed (lock wait included) with what it returned."""

        async def unlink_decided(self, *args: Any, **kwargs: Any) -> int:
            started = time.perf_counter()
            done = await super().unlink_decided(*args, **kwargs)
            calls["unlink"].append((time.perf_counter() - started, done))
            return done

        async def drop_idle_accounts(self, *args: Any, **kwargs: Any) -> int:
            started = time.perf_counter()
            done = await super().drop_idle_accounts(*args, **kwargs)
            calls["idle"].append((time.perf_counter() - started, done))
            return done

        async def drop_replay_guards(self, *args: Any, **kwargs: Any) -> int:
            started = time.perf_counter()
            done = await super().drop_replay_guards(*args, **kwargs)
            calls["guards"].append((time.perf_counter() - started, done))
            return done

    stored_at: dict[str, float] = {}

    class TimedLetters(LetterRepository):
        async def start_letter(self, sender_id: int, part: Any) -> Any:
            added = await super().start_letter(sender_id, part)
            stored_at[part.message_id] = time.perf_counter()
            return added

    class FixedDetector:
        def detect(self, text: str) -> str:
            return "en"

    f: dict[str, Any] = {}
    with temp_dir("relay-bench-5-") as tmp, tally_logs() as tally:
        database = tmp / "relay.db"
        db = await TimedDatabase.open(database)
        try:
            repos = dataclasses.replace(Repositories.over(db), privacy=TimedPrivacy(db), letters=TimedLetters(db))
            now = time.time()
            started = time.perf_counter()
            f.update(await fill(db, sizes, now))
            await db.checkpoint()
            calls["checkpoint"].clear()
            refused.clear()
            f["fill_s"] = time.perf_counter() - started
            f["size_before"] = files_size(database)
            (f["senders_before"],) = await db.fetchone("SELECT COUNT(*) FROM senders")

            network = FakeNetwork()
            clock = SystemClock()
            ctx = Context(
                policy=Policy(default_language="en", moderation_rooms=(Room("telegram", MODERATION_CHAT),),
                              retention_days=30),
                repos=repos,
                networks={"telegram": network},
                texts=Catalogues.load(ROOT / "locales", "en"),
                clock=clock,
                scheduler=ManualScheduler(clock),  # type: ignore[arg-type]  # nothing is deferred: no letter may grow
                detector=FixedDetector(),
                translating=None,
                hasher=AccountKey(b"k" * 32),
                events=effects.subscribe(DomainEvents()),
            )
            intake = Intake(ctx, network, stored_at)
            await intake.run(20)  # warm-up: statement cache, pages of the new rows
            baseline_count = 150 if sizes.letters < 50_000 else 400
            started = time.perf_counter()
            f["baseline"] = await intake.run(baseline_count)
            f["baseline_s"] = time.perf_counter() - started

            db.lock.holds.clear()
            done = asyncio.Event()

            async def purge() -> Any:
                try:
                    began = time.perf_counter()
                    purged = await privacy_handlers.purge(ctx)
                    # Before anything else may run (no await since the checkpoint): the WAL as the purge left it.
                    f["wal_after_purge"] = files_size(database)[1]
                    f["purge_s"] = time.perf_counter() - began
                    return purged
                finally:
                    done.set()

            purge_task = asyncio.create_task(purge(), name="purge")
            intake_task = asyncio.create_task(intake.run(until=done), name="intake")
            try:
                purged = await purge_task
            finally:
                f["during"] = await intake_task
            f["purged"] = dataclasses.asdict(purged)
            f["calls"] = calls
            holds = db.lock.holds
            f["purge_holds"] = [seconds for owner, seconds in holds if owner == "purge"]
            f["intake_holds"] = [seconds for owner, seconds in holds if owner == "intake"]

            await db.checkpoint()
            f["size_after"] = files_size(database)
            (f["freelist"],) = await db.fetchone("PRAGMA freelist_count")
            (f["page_size"],) = await db.fetchone("PRAGMA page_size")
            old = (str(OLD_USERS + 1), str(OLD_USERS + sizes.senders))
            checks = {
                "old_accounts": "SELECT COUNT(*) FROM accounts WHERE user_id BETWEEN ? AND ? AND length(user_id) = 10",
                "texts_kept": """SELECT COUNT(*) FROM letter_parts p JOIN letters l ON l.id = p.letter_id
                                 WHERE l.status IN ('rejected', 'withdrawn') AND p.text != ''""",
                "still_linked": "SELECT COUNT(*) FROM letters WHERE status != 'pending' AND unlinked_at IS NULL",
                "part_ids_kept": """SELECT COUNT(*) FROM letter_parts p JOIN letters l ON l.id = p.letter_id
                                    WHERE l.status != 'pending'
                                      AND (p.chat_id IS NOT NULL OR p.message_id IS NOT NULL)""",
                "translations_kept": """SELECT COUNT(*) FROM translations t JOIN letters l ON l.id = t.letter_id
                                        WHERE l.status IN ('rejected', 'withdrawn')""",
                "translations_left": "SELECT COUNT(*) FROM translations",
                "texts_removed": "SELECT COUNT(*) FROM letters WHERE text_removed_at IS NOT NULL",
                "intake_accounts": "SELECT COUNT(*) FROM accounts WHERE user_id > ?",
                "replay_guards_left": "SELECT COUNT(*) FROM seen_events",
                "senders_after": "SELECT COUNT(*) FROM senders",
            }
            params = {"old_accounts": old, "intake_accounts": (str(NEW_USERS),)}
            for key, sql in checks.items():
                (f[key],) = await db.fetchone(sql, params.get(key, ()))
            f["intake_sent"] = intake.sent
            f["checkpoint_refused"] = refused
            f["log"] = tally.top(3, skip=("migration",))
        finally:
            await db.close()
    return f


async def retention(letters: int) -> Result:
    sizes = Sizes.for_letters(letters)
    name = f"Retention purge: {n(letters)} letters"
    title = (f"Retention purge: {n(letters)} decided letters of {n(sizes.senders)} senders, while a new letter "
             f"arrives every {INTERVAL * 1000:.0f} ms (file database, fake network)")
    goal = f"largest intake pause ≤ {GOAL_MS:.0f} ms"
    f = await measure(sizes)

    base = [answered for answered, _stored in f["baseline"]]
    during = [answered for answered, _stored in f["during"]]
    base_stored = [stored for _answered, stored in f["baseline"]]
    during_stored = [stored for _answered, stored in f["during"]]
    worst, p99 = max(during), percentile(during, 0.99)
    base_worst, base_p99 = max(base), percentile(base, 0.99)
    unlink = [(seconds, done) for seconds, done in f["calls"]["unlink"] if done]
    batches = len(unlink)
    unlinked = f["purged"]["letters"]
    unlink_s = sum(seconds for seconds, _done in f["calls"]["unlink"])
    idle_s = sum(seconds for seconds, _done in f["calls"]["idle"])
    guards_s = sum(seconds for seconds, _done in f["calls"]["guards"])
    checkpoint_s = sum(seconds for seconds, _attempts in f["calls"]["checkpoint"])
    checkpoint_tries = sum(attempts for _seconds, attempts in f["calls"]["checkpoint"])
    holds = f["purge_holds"]
    db_before, wal_before = f["size_before"]
    db_after, wal_after = f["size_after"]
    mib = 2**20

    problems = []
    if f["old_accounts"]:
        problems.append(f"{n(f['old_accounts'])} accounts of the old senders remain")
    if f["texts_kept"]:
        problems.append(f"{n(f['texts_kept'])} rejected/withdrawn parts keep their text")
    if f["still_linked"] or f["part_ids_kept"]:
        problems.append(f"{n(f['still_linked'])} decided letters still linked, {n(f['part_ids_kept'])} parts keep ids")
    if f["translations_kept"]:
        problems.append(f"{n(f['translations_kept'])} translations of rejected/withdrawn letters remain")
    if f["intake_accounts"] != f["intake_sent"]:
        problems.append(f"{n(f['intake_accounts'])} intake accounts of {n(f['intake_sent'])}: the purge took new ones")
    if f["checkpoint_refused"]:
        problems.append(f"{f['checkpoint_refused'][0]} ({len(f['checkpoint_refused'])}×)")
    if f["wal_after_purge"]:
        problems.append(f"the WAL is {n(f['wal_after_purge'])} bytes after the purge's TRUNCATE checkpoint")

    lines = [
        ("fill", f"{n(letters)} letters ({n(f['removable'])} rejected or withdrawn), {n(sizes.senders)} senders with "
                 f"an account ({n(f['senders_used'])} wrote), {n(sizes.translations)} translations, "
                 f"{n(sizes.replay_guards)} replay guards: {f['fill_s']:.1f} s of bulk SQL"),
        ("purge", f"{n(unlinked)} letters unlinked in {f['purge_s']:.2f} s = {unlinked / f['purge_s']:,.0f} letters/s "
                  f"({batches} batches of up to {max((done for _, done in unlink), default=0)})"),
        ("", f"unlink {unlink_s:.2f} s (a batch: median {ms(percentile([s for s, _ in unlink], 0.5))}, largest "
             f"{ms(max((s for s, _ in unlink), default=0))}); idle accounts {ms(idle_s)} "
             f"({n(f['purged']['accounts'])} deleted); replay guards {ms(guards_s)} "
             f"({n(f['purged']['replay_guards'])} in {sum(1 for _, d in f['calls']['guards'] if d)} batches); "
             f"checkpoint {ms(checkpoint_s)} ({checkpoint_tries} attempt{'s' * (checkpoint_tries != 1)}: SQLite "
             f"refuses while a read is open on the shared connection)"),
        ("write lock", f"the purge held it {len(holds)} times, largest {ms(max(holds, default=0))}, p99 "
                       f"{ms(percentile(holds, 0.99))}, {sum(holds):.2f} s in all "
                       f"({sum(holds) / f['purge_s']:.0%} of the purge); the intake took it "
                       f"{len(f['intake_holds']) / max(len(during), 1):.1f} times per letter, largest "
                       f"{ms(max(f['intake_holds'], default=0))}: each time it may wait for a whole batch"),
        ("intake, purging", f"{n(len(during))} letters: largest {ms(worst)}, p99 {ms(p99)}, median "
                            f"{ms(percentile(during, 0.5))} (message → receipt and card); stored after: largest "
                            f"{ms(max(during_stored))}, p99 {ms(percentile(during_stored, 0.99))}"),
        ("intake, idle", f"{n(len(base))} letters in {f['baseline_s']:.1f} s: largest {ms(base_worst)}, p99 "
                         f"{ms(base_p99)}, median {ms(percentile(base, 0.5))}; stored after: largest "
                         f"{ms(max(base_stored))}, p99 {ms(percentile(base_stored, 0.99))}"),
        ("ratio", f"purging ÷ idle: largest {worst / base_worst:.1f} ×, p99 {p99 / base_p99:.1f} ×"),
        ("WAL", f"{n(f['wal_after_purge'])} bytes right after the purge (TRUNCATE checkpoint)"),
        ("size", f"database {db_before / mib:.1f} MiB before (WAL {wal_before / mib:.1f}), {db_after / mib:.1f} MiB "
                 f"after (WAL {wal_after / mib:.1f}; {n(f['freelist'])} free pages of {f['page_size']} B: "
                 f"secure_delete zeroes, nothing shrinks without VACUUM)"),
        ("checks", f"old senders' accounts left {n(f['old_accounts'])}; rejected/withdrawn parts with text "
                   f"{n(f['texts_kept'])} ({n(f['texts_removed'])} texts removed); decided letters still linked "
                   f"{n(f['still_linked'])}; parts with chat/message ids {n(f['part_ids_kept'])}; translations "
                   f"{n(sizes.translations)} → {n(f['translations_left'])} "
                   f"({n(f['translations_kept'])} of rejected/withdrawn); replay guards left "
                   f"{n(f['replay_guards_left'])}; intake accounts kept {n(f['intake_accounts'])} of "
                   f"{n(f['intake_sent'])}"),
        ("pseudonyms", f"senders {n(f['senders_before'])} before → {n(f['senders_after'])} after "
                       f"({n(f['senders_after'] - f['senders_before'] - f['intake_sent'])} new pseudonyms: "
                       f"accounts the purge moved away from the letters it unlinked)"),
    ]
    if problems:
        lines.append(("CHECK FAILED", "; ".join(problems)))
    lines += [("bot log", line) for line in f["log"]]
    headline = (f"largest intake pause {ms(worst)} while purging (p99 {ms(p99)}), "
                f"{worst / base_worst:.1f} × idle")
    if problems:
        headline += f"; {len(problems)} check(s) failed"
    return Result(
        5, name, headline, goal, worst * 1000 <= GOAL_MS,
        details=(f"{unlinked / f['purge_s']:,.0f} letters/s, {f['purge_s']:.1f} s, {batches} batches, "
                 f"WAL {n(f['wal_after_purge'])} B after, {db_before / mib:.0f} → {db_after / mib:.0f} MiB"
                 + ("" if not problems else "; CHECKS FAILED")),
        lines=lines, title=title,
    )


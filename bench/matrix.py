"""Benchmark 3: one letter to N Matrix rooms on a real Synapse, as a ratio to a bare matrix-nio room_send loop.

Both the bot's account and the bare loop's are exempted from Synapse's message rate limit. The bare loop runs
once before the bot starts and once after it stopped (so the bot's sync loop never handles its messages), and
the better of the two runs is the baseline. The bot runs with its default rates (MATRIX_RATES), as deployed;
then, as a diagnostic that tells pacing from the engine's own cost, letter #2 goes out with the operator's
MATRIX_MESSAGES_PER_SECOND at its maximum.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.common import (
    LETTER,
    BroadcastTimes,
    Result,
    broadcast_times,
    n,
    progress_text,
    retries_text,
    tally_logs,
    temp_dir,
    wait_broadcast,
)
from bot.app import Relay
from bot.config import Settings
from storage.db import Database
from storage.deliveries import Progress
from storage.repositories import Repositories
from tests.homeserver import Homeserver, fresh_name
from tests.matrix_people import Person, direct_room

T = TypeVar("T")
PARALLEL_SET_UP = 8  # requests at once while building the rooms (set-up only, not measured)
FAST_PER_SECOND = 1000  # MATRIX_MESSAGES_PER_SECOND's maximum, for the diagnostic run


async def limited(jobs: Iterable[Callable[[], Awaitable[T]]], at_once: int = PARALLEL_SET_UP) -> list[T]:
    gate = asyncio.Semaphore(at_once)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


def letter_content() -> dict[str, Any]:
    """Roughly what the bot sends: a title, the letter, plain and HTML."""
    title = "✊ Letter of solidarity #1"
    return {
        "msgtype": "m.text",
        "body": f"{title}\n\n{LETTER}",
        "format": "org.matrix.custom.html",
        "formatted_body": f"<b>{html.escape(title)}</b><br><br>{html.escape(LETTER).replace(chr(10), '<br>')}",
        "m.mentions": {},
    }


async def bare_loop(url: str, person: Person, rooms: list[str]) -> tuple[float, int]:
    """A plain matrix-nio AsyncClient sending into each room in turn; (seconds, errors)."""
    from nio import AsyncClient, AsyncClientConfig, RoomSendResponse

    client = AsyncClient(url, person.user_id, config=AsyncClientConfig(encryption_enabled=False))
    client.restore_login(person.user_id, person.device_id, person.access_token)
    content = letter_content()
    errors = 0
    try:
        started = time.perf_counter()
        for room_id in rooms:
            response = await client.room_send(room_id, "m.room.message", content)
            errors += not isinstance(response, RoomSendResponse)
        return time.perf_counter() - started, errors
    finally:
        await client.close()


@dataclass
class Scene:
    bot_user: str
    mo: Person
    alice: Person
    mods: str
    dm: str | None = None

    async def broadcast(self, relay: Relay, number: int, total: int) -> tuple[Progress, BroadcastTimes, float]:
        """Alice writes, the card appears, Mo approves; waits for the broadcast. Returns the approve's wall time."""
        assert relay.ctx is not None
        if self.dm is None:
            self.dm = await direct_room(self.alice, self.bot_user)
        await self.alice.send_text(self.dm, f"{LETTER} ({number})")
        await self.mo.wait_for_text(self.mods, self.bot_user, rf"^📨 Letter #{number} ", within=30)
        await asyncio.sleep(1.0)  # a moderator reads before approving
        command_at = time.time()
        await self.mo.send_text(self.mods, f"!approve {number}")
        progress = await wait_broadcast(relay.ctx.repos, number, total, within=60 + total)
        return progress, await broadcast_times(relay.ctx.repos, number), command_at


async def subscribe_all(database: Path, rooms: list[str]) -> None:
    db = await Database.open(database)
    try:
        subscriptions = Repositories.over(db).subscriptions
        for index, room_id in enumerate(rooms):
            await subscriptions.subscribe("matrix", room_id, "group", f"Subscribers {index}", "en", time.time())
    finally:
        await db.close()


async def rooms(count: int) -> Result:
    name = "Matrix, real Synapse"
    title = f"Matrix, real Synapse: one letter to {n(count)} rooms vs a bare matrix-nio loop"
    with temp_dir("relay-bench-3-") as tmp, tally_logs() as tally:
        hs = Homeserver()  # its own temporary directory, removed by stop()
        await hs.start()
        try:
            set_up = time.perf_counter()
            bot = await hs.register(fresh_name("relay"), exempt=True)
            bot_user, bot_password = bot.user_id, bot.password
            await bot.close()  # the bot logs in by itself, with its own device
            host = await hs.register(fresh_name("host"), exempt=True)  # creates the subscriber rooms
            peer = await hs.register(fresh_name("bare"), exempt=True)  # the bare nio loop's account
            mo = await hs.register(fresh_name("mo"), displayname="Mo", exempt=True)
            alice = await hs.register(fresh_name("alice"), exempt=True)
            mods = await mo.create_room(name="Moderators", invite=[bot_user])
            room_ids = await limited(
                (lambda i=i: host.create_room(name=f"Subscribers {i}", invite=[bot_user, peer.user_id]))
                for i in range(count)
            )
            await limited((lambda room_id=room_id: peer.join(room_id)) for room_id in room_ids)
            database = tmp / "relay.db"
            await subscribe_all(database, room_ids)
            set_up_seconds = time.perf_counter() - set_up

            baseline = [await bare_loop(hs.url, peer, room_ids)]
            env = {
                "MATRIX_HOMESERVER": hs.url,
                "MATRIX_USER": bot_user,
                "MATRIX_PASSWORD": bot_password,
                "MATRIX_MODERATION_ROOM": mods,
                "DATABASE": str(database),
                "LETTER_JOIN_SECONDS": "0",
                "TRANSLATOR": "none",
            }
            scene = Scene(bot_user, mo, alice, mods)
            relay = Relay(Settings.from_env(env))  # rates from the settings: MATRIX_RATES
            joining = time.perf_counter()
            await relay.start()  # the first sync joins every room the bot was invited to
            try:
                assert relay.worker is not None
                rates = relay.worker.pacers["matrix"].rates
                members = await limited((lambda room_id=room_id: host.joined_members(room_id)) for room_id in room_ids)
                not_joined = sum(bot_user not in joined for joined in members)
                join_seconds = time.perf_counter() - joining
                progress, times, command_at = await scene.broadcast(relay, 1, count)
            finally:
                await relay.stop()
            # Diagnostic: the same with the operator's knob turned up, to tell pacing from the engine's overhead.
            fast = Relay(Settings.from_env({**env, "MATRIX_MESSAGES_PER_SECOND": str(FAST_PER_SECOND)}))
            await fast.start()
            try:
                fast_progress, fast_times, _ = await scene.broadcast(fast, 2, count)
            finally:
                await fast.stop()
            baseline.append(await bare_loop(hs.url, peer, room_ids))
            synapse_rss = hs.rss_kib()
        finally:
            await hs.stop()

    best, errors = min(baseline)
    base_rate = count / best
    lines = [
        ("setup", f"{count} rooms created by one person, each inviting the bot and the bare loop's account "
                  f"({set_up_seconds:.0f} s); the bot joined them at start-up in {join_seconds:.1f} s"
                  + (f"; {not_joined} rooms NOT joined" if not_joined else "")),
        ("", f"bot rates: {rates}"),
        ("baseline", f"bare nio room_send loop: {best:.2f} s = {base_rate:,.1f} events/s (best of 2 runs, before "
                     f"and after the bot: {baseline[0][0]:.2f} s, {baseline[1][0]:.2f} s; {errors} errors)"),
        ("bot", progress_text(progress)),
    ]
    if times.elapsed is None or progress.sent == 0:
        return Result(3, name, "no delivery was recorded as sent", "≥ 0.9", None, lines=lines, title=title)
    rate = progress.sent / times.elapsed
    ratio = rate / base_rate
    assert times.first_sent is not None and times.last_sent is not None
    lines += [
        ("", f"approval → last recorded sent: {times.elapsed:.2f} s = {rate:,.1f} deliveries/s "
             f"(first sent after {times.first_sent - times.decided_at:.3f} s; from the !approve message: "
             f"{times.last_sent - command_at:.2f} s)"),
        ("", f"pacing floor: {count} at {rates.per_second:g}/s = {count / rates.per_second:.1f} s; "
             f"{retries_text(times)}" + (f"; Synapse RSS {synapse_rss / 1024:.0f} MiB" if synapse_rss else "")),
    ]
    fast_text = "no delivery recorded as sent"
    fast_details = ""
    if fast_times.elapsed and fast_progress.sent:
        fast_rate = fast_progress.sent / fast_times.elapsed
        fast_text = (f"{progress_text(fast_progress)} in {fast_times.elapsed:.2f} s = {fast_rate:,.1f} deliveries/s "
                     f"= {fast_rate / base_rate:.2f} × the bare loop")
        fast_details = f"; at {FAST_PER_SECOND}/s: {fast_rate / base_rate:.2f} ×"
    lines.append(("diagnostic", f"letter #2 with MATRIX_MESSAGES_PER_SECOND={FAST_PER_SECOND} (not the goal's figure): "
                                f"{fast_text}"))
    lines += [("bot log", line) for line in tally.top(3, skip=("starting", "stopped", "syncing", "migration"))]
    return Result(
        3, name, f"{ratio:.2f} × the bare loop's deliveries/s", "≥ 0.9", ratio >= 0.9,
        details=f"bot {rate:,.1f}/s vs bare nio {base_rate:,.1f}/s, {n(progress.sent)} rooms{fast_details}",
        lines=lines,
        title=title,
    )

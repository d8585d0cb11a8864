"""Benchmark 7: one letter to N end-to-end encrypted Matrix rooms, against the same letter to N unencrypted rooms,
on a real Synapse.

Every room has one reader whose device has keys (an encrypting test person: mautrix over libolm), so the bot
really shares a Megolm session per room with a device; the host who made the rooms has no device keys. Letter #1
goes to the unencrypted rooms; then the subscriptions move to the encrypted rooms: letter #2 is the first there
(an Olm session with the reader's device, one room key per room, then the events), letter #3 reuses the sessions;
then letter #4 to the unencrypted rooms again. The better of #1 and #4 is the baseline (the bot restarts before
#1, #2 and #4 alike).
Rates are the bot's defaults (MATRIX_RATES), the bot exempted from Synapse's message limit, as in benchmark 3.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import LETTER, BroadcastTimes, Result, n, progress_text, tally_logs, temp_dir
from bench.matrix import Scene, limited, subscribe_all
from bot.app import Relay
from bot.config import Settings
from storage.db import Database
from storage.deliveries import Progress
from storage.repositories import Repositories
from tests.homeserver import Homeserver, fresh_name
from tests.matrix_crypto_people import EncryptedPerson
from tests.matrix_people import Person, text_body

GOAL = 1.5
MEGOLM = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
SAMPLE = 10  # rooms in which the reader checks that it can read letter #3


async def make_rooms(host: Person, count: int, invite: list[str], encrypted: bool) -> list[str]:
    kind = "Secret" if encrypted else "Plain"
    bodies = [{"preset": "private_chat", "name": f"{kind} subscribers {index}", "invite": invite,
               "initial_state": [MEGOLM] if encrypted else []} for index in range(count)]
    created = await limited((lambda body=body: host.request("POST", "/createRoom", body)) for body in bodies)
    return [answer["room_id"] for answer in created]


async def move_subscriptions(database: Path, rooms: list[str]) -> None:
    """Every active subscription ends; `rooms` subscribe (the bot is stopped meanwhile)."""
    db = await Database.open(database)
    try:
        subscriptions = Repositories.over(db).subscriptions
        for subscription in await subscriptions.active():
            await subscriptions.deactivate(subscription.id, "benchmark: next set of rooms", time.time())
    finally:
        await db.close()
    await subscribe_all(database, rooms)


async def readable(reader: EncryptedPerson, rooms: list[str], bot_user: str, number: int) -> int:
    """In how many of `rooms` the reader's device decrypts letter `number` (proof the rooms were encrypted)."""
    found = 0
    for room_id in rooms:
        events = await reader.messages(room_id, limit=10)
        found += any(event.get("encrypted") and event.get("sender") == bot_user
                     and f"#{number}" in (text_body(event) or "") for event in events)
    return found


async def letters(env: dict[str, str], scene: Scene, numbers: tuple[int, ...], count: int,
                  ) -> list[tuple[Progress, BroadcastTimes]]:
    """The bot started afresh (as deployed: rates from the settings), letters `numbers` broadcast, the bot stopped."""
    relay = Relay(Settings.from_env(env))
    await relay.start()
    try:
        runs = []
        for number in numbers:
            progress, times, _ = await scene.broadcast(relay, number, count)
            runs.append((progress, times))
        return runs
    finally:
        await relay.stop()


def seconds(times: BroadcastTimes) -> float:
    return times.elapsed or float("nan")


async def encrypted_rooms(count: int) -> Result:
    name = "Matrix, encrypted rooms"
    title = f"Matrix, real Synapse: one letter to {n(count)} encrypted rooms vs {n(count)} unencrypted rooms"
    with temp_dir("relay-bench-7-") as tmp, tally_logs() as tally:
        hs = Homeserver()
        await hs.start()
        reader: EncryptedPerson | None = None
        try:
            set_up = time.perf_counter()
            bot = await hs.register(fresh_name("relay"), exempt=True)
            bot_user, bot_password = bot.user_id, bot.password
            await bot.close()
            host = await hs.register(fresh_name("host"), exempt=True)
            reader = await EncryptedPerson.create(await hs.register(fresh_name("reader"), exempt=True))
            mo = await hs.register(fresh_name("mo"), displayname="Mo", exempt=True)
            alice = await hs.register(fresh_name("alice"), exempt=True)
            mods = await mo.create_room(name="Moderators", invite=[bot_user])
            plain = await make_rooms(host, count, [bot_user, reader.user_id], encrypted=False)
            secret = await make_rooms(host, count, [bot_user, reader.user_id], encrypted=True)
            await limited((lambda room_id=room_id: reader.join(room_id)) for room_id in plain + secret)
            database = tmp / "relay.db"
            await subscribe_all(database, plain)
            set_up_seconds = time.perf_counter() - set_up
            env = {
                "MATRIX_HOMESERVER": hs.url, "MATRIX_USER": bot_user, "MATRIX_PASSWORD": bot_password,
                "MATRIX_MODERATION_ROOM": mods, "DATABASE": str(database), "LETTER_JOIN_SECONDS": "0",
                "TRANSLATOR": "none",
            }
            scene = Scene(bot_user, mo, alice, mods)
            runs = await letters(env, scene, (1,), count)
            await move_subscriptions(database, secret)
            runs += await letters(env, scene, (2, 3), count)
            decrypted = await readable(reader, secret[:SAMPLE], bot_user, 3)
            # The unencrypted letter again, after the encrypted ones: the baseline is the better of the two.
            await move_subscriptions(database, plain)
            runs += await letters(env, scene, (4,), count)
        finally:
            if reader is not None:
                await reader.close()
            await hs.stop()

    (plain_progress, plain_times), (first_progress, first_times), (second_progress, second_times), again = runs
    plain_progress, plain_times = min((plain_progress, plain_times), again, key=lambda run: seconds(run[1]))
    first_ratio = seconds(first_times) / seconds(plain_times)
    second_ratio = seconds(second_times) / seconds(plain_times)
    lines = [
        ("setup", f"{count} unencrypted and {count} encrypted rooms, each with the bot and one reader whose device "
                  f"has keys ({set_up_seconds:.0f} s); {LETTER[:40]}… as the letter"),
        ("unencrypted", f"the better of letters #1 and #4: {progress_text(plain_progress)} in "
                        f"{seconds(plain_times):.2f} s = {count / seconds(plain_times):,.1f} rooms/s (#1 "
                        f"{seconds(runs[0][1]):.2f} s, #4 {seconds(runs[3][1]):.2f} s)"),
        ("encrypted", f"letter #2, the first (room keys shared): {progress_text(first_progress)} in "
                      f"{seconds(first_times):.2f} s = {first_ratio:.2f} × the unencrypted time"),
        ("", f"letter #3, sessions reused: {progress_text(second_progress)} in {seconds(second_times):.2f} s "
             f"= {second_ratio:.2f} × the unencrypted time"),
        ("check", f"the reader's device (libolm) decrypted letter #3 in {decrypted} of the first {SAMPLE} "
                  "encrypted rooms"),
    ]
    lines += [("bot log", line) for line in tally.top(3, skip=("starting", "stopped", "syncing", "migration"))]
    worst = max(first_ratio, second_ratio)
    met = worst <= GOAL and decrypted == min(SAMPLE, count)
    return Result(
        7, name, f"{first_ratio:.2f} × the unencrypted time (first letter), {second_ratio:.2f} × (next)",
        f"≤ {GOAL} ×", met,
        details=f"{seconds(first_times):.1f} s / {seconds(second_times):.1f} s vs {seconds(plain_times):.1f} s, "
                f"{n(count)} rooms; {decrypted}/{min(SAMPLE, count)} decrypted by libolm",
        lines=lines, title=title,
    )

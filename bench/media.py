"""Benchmark 9: media letters.

1. One photo letter (a phone photo with GPS EXIF, and a caption) to N private subscriptions on the unlimited Bot
   API emulator: how many uploads (one: the moderators' card; every subscriber then gets the file_id), how many
   sendPhoto calls, and the deliveries/s from the approval to the last recorded sent, beside a text letter of the
   same caption in the same run.
2. The same on Matrix, a real Synapse: one photo letter to N subscriber rooms; the bot's uploads to the media
   repository over the whole letter (the card and every room: one), the m.image events in the rooms, and the
   deliveries/s from the approval to the last recorded sent, beside a text letter of the same caption.
3. Cleaning cost: `bot.media.clean` on a 12- and a 1-megapixel camera JPEG (EXIF with GPS, orientation 6).
"""

from __future__ import annotations

import asyncio
import collections
import io
import time
from typing import Any

from PIL import Image

from bench.common import (
    LETTER,
    UNLIMITED,
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
from bench.matrix import limited
from bench.matrix import subscribe_all as subscribe_rooms
from bench.telegram import READING_SECONDS, World, drop_pending_updates, make_world, settings_for, subscribe_all
from bot.app import Relay
from bot.config import Settings
from bot.media import clean
from storage.deliveries import Progress
from tests.emulators.telegram import TelegramEmulator
from tests.homeserver import Homeserver, fresh_name
from tests.matrix_people import direct_room
from tests.test_e2e_matrix_media import bot_uploads, files_from, send_photo
from tests.test_media import TELLTALES, camera_exif, phone_photo

GOAL = "uploads = 1 on each network"
LATENCY = 0.02  # letters 3 and 4: a round trip added to every Bot API call, as a remote Telegram has


class InFlight:
    """The most requests of each method the emulator was handling at once (the bot's concurrency, as seen), and an
    optional round trip added to each: the in-process emulator answers at once, so without one a send never
    waits and the bot's concurrency cannot show."""

    def __init__(self, emu: TelegramEmulator) -> None:
        self.now: collections.Counter[str] = collections.Counter()
        self.most: collections.Counter[str] = collections.Counter()
        self.latency = 0.0
        dispatch = emu._dispatch  # a diagnostic wrapper; nothing else changes

        async def counted(token: str, name: str, request: Any) -> Any:
            self.now[name] += 1
            self.most[name] = max(self.most[name], self.now[name])
            try:
                if self.latency and name != "getUpdates":
                    await asyncio.sleep(self.latency)
                return await dispatch(token, name, request)
            finally:
                self.now[name] -= 1

        emu._dispatch = counted  # type: ignore[method-assign]

    def reset(self) -> None:
        self.most.clear()


async def submit(world: World, number: int, photo: bytes | None) -> float:
    """Alice sends the photo with its caption (or the caption as a text), Mo approves; the approve's wall time."""
    emu = world.emu
    caption = f"{LETTER} ({number})"
    if photo is None:
        emu.user_sends(world.alice, caption)
    else:
        emu.user_sends_photo(world.alice, photo, caption=caption)
    card = f"📨 Letter #{number} "
    await emu.wait_for(
        lambda: any(m.get("text", "").startswith(card) for m in emu.sent_by_bot(world.mods)), 30, what=card
    )
    await asyncio.sleep(READING_SECONDS)
    command_at = time.time()
    emu.user_sends(world.mo, f"/approve {number}", chat=world.mods)
    return command_at


def where(chat_id: Any, world: World, subscribers: set[str]) -> str:
    chat = str(chat_id)
    if chat == str(world.mods["id"]):
        return "the moderators' chat"
    if chat == str(world.alice["id"]):
        return "the sender's chat"
    return "a subscriber" if chat in subscribers else f"chat {chat}"


def letter_line(lines: list[tuple[str, str]], kind: str, progress: Progress, times: BroadcastTimes,
                command_at: float, command: str, rate_format: str) -> float | None:
    """One letter's broadcast as a line of the block; returns its deliveries/s (None: nothing was sent)."""
    label = f"{kind} letter"
    if times.elapsed is None or times.first_sent is None or times.last_sent is None or not progress.sent:
        lines.append((label, f"{progress_text(progress)}; none recorded as sent"))
        return None
    rate = progress.sent / times.elapsed
    lines.append((label, f"{progress_text(progress)}; approval → last recorded sent {times.elapsed:.2f} s = "
                         f"{rate:{rate_format}} deliveries/s (first after {times.first_sent - times.decided_at:.3f} "
                         f"s; from the {command} message {times.last_sent - command_at:.2f} s); "
                         f"{retries_text(times)}"))
    return rate


async def one_photo_letter(subscriptions: int) -> tuple[list[tuple[str, str]], int, bool]:
    """Part 1: the block's lines, the uploads counted, and whether both broadcasts finished."""
    photo = phone_photo()
    lines: list[tuple[str, str]] = []
    runs: dict[str, tuple[Progress, BroadcastTimes, float, dict[str, int], int]] = {}
    photo_methods: collections.Counter[str] = collections.Counter()
    with temp_dir("relay-bench-9-") as tmp, tally_logs() as tally:
        async with TelegramEmulator("123456:BENCH-relay-token") as emu:
            emu.limits = None
            world = await make_world(emu, private=subscriptions, groups=0, channels=0)
            await drop_pending_updates(emu)
            database = tmp / "relay.db"
            await subscribe_all(database, world)
            subscribers = set(world.chat_ids)
            in_flight = InFlight(emu)

            relay = Relay(settings_for(emu, world, database), rates={"telegram": UNLIMITED})
            await relay.start()
            try:
                assert relay.ctx is not None
                concurrency = getattr(relay.worker, "concurrency", "?")
                for number, kind in ((1, "photo"), (2, "text"), (3, "photo, 20 ms"), (4, "text, 20 ms")):
                    calls_before = len(emu.calls)
                    in_flight.reset()
                    in_flight.latency = LATENCY if "ms" in kind else 0.0
                    command_at = await submit(world, number, photo if kind.startswith("photo") else None)
                    progress = await wait_broadcast(relay.ctx.repos, number, subscriptions,
                                                    within=30 + subscriptions / 20)
                    times = await broadcast_times(relay.ctx.repos, number)
                    methods = collections.Counter(method for method, _ in emu.calls[calls_before:])
                    to_subscribers = sum(1 for method, params in emu.calls[calls_before:]
                                         if method in ("sendPhoto", "sendMessage")
                                         and str(params.get("chat_id")) in subscribers)
                    runs[kind] = (progress, times, command_at,
                                  {m: in_flight.most[m] for m in ("sendPhoto", "sendMessage")}, to_subscribers)
                    runs[kind][3]["calls"] = sum(methods.values())
                    if kind == "photo":
                        photo_methods = methods
                in_flight.latency = 0.0
            finally:
                await relay.stop()
            uploads = emu.uploads()
            photo_calls = emu.calls_of("sendPhoto")

    by_place = collections.Counter(where(p.get("chat_id"), world, subscribers) for p in photo_calls)
    by_file_id = collections.Counter(
        where(p.get("chat_id"), world, subscribers) for p in photo_calls if isinstance(p.get("photo"), str))
    lines.append(("setup", f"{n(subscriptions)} private chats; bot rates unlimited, worker concurrency {concurrency}; "
                           f"photo: tests.test_media.phone_photo() ({len(photo):,} bytes, GPS EXIF, XMP, IPTC), "
                           f"caption {len(LETTER) + 4} characters; letter #1 the photo, #2 the same caption as text; "
                           f"#3 and #4 the same with {LATENCY * 1000:.0f} ms added to every Bot API call "
                           f"(same photo: its file_id known)"))
    lines.append(("uploads", f"{len(uploads)} in the whole run: " + ("; ".join(
        f"{u.method} {u.field} to {where(u.chat_id, world, subscribers)} ({len(u.data):,} bytes, "
        f"file name {u.file_name!r}, metadata left: "
        f"{', '.join(t.decode(errors='replace') for t in TELLTALES if t in u.data) or 'none'})"
        for u in uploads) or "none")))
    lines.append(("sendPhoto", f"{len(photo_calls):,} calls in the run (letters #1 and #3): "
                               + ", ".join(f"{count:,} to {place} ({by_file_id[place]:,} by file_id)"
                                           for place, count in by_place.items())))
    rates: dict[str, float] = {}
    for kind, (progress, times, command_at, most, to_subscribers) in runs.items():
        rate = letter_line(lines, kind, progress, times, command_at, "/approve", ",.0f")
        if rate is None:
            continue
        rates[kind] = rate
        lines.append(("", f"{to_subscribers:,} sends to subscribers, {most['calls']:,} Bot API calls in all from "
                          f"the submission on; most in flight at once: sendPhoto {most['sendPhoto']}, "
                          f"sendMessage {most['sendMessage']}"))
    lines.append(("#1 calls", ", ".join(f"{m} {c:,}" for m, c in sorted(photo_methods.items()))))
    if len(rates) == len(runs):
        lines.append(("ratio", f"photo ÷ text deliveries/s: {rates['photo'] / rates['text']:.2f}"))
        lines.append(("", f"with {LATENCY * 1000:.0f} ms per call: "
                          f"{rates['photo, 20 ms'] / rates['text, 20 ms']:.2f}"))
    lines += [("bot log", line) for line in tally.top(3, skip=("starting", "stopped", "polling", "migration"))]
    return lines, len(uploads), len(rates) == len(runs)


async def matrix_photo_letter(count: int) -> tuple[list[tuple[str, str]], int | None, bool]:
    """Part 2: the block's lines, the bot's uploads for the photo letter, and whether both broadcasts finished."""
    photo = phone_photo()
    lines: list[tuple[str, str]] = []
    runs: dict[str, tuple[Progress, BroadcastTimes, float]] = {}
    uploads: dict[str, int] = {}
    with temp_dir("relay-bench-9m-") as tmp, tally_logs() as tally:
        hs = Homeserver()
        await hs.start()
        try:
            bot = await hs.register(fresh_name("relay"), exempt=True)
            bot_user, bot_password = bot.user_id, bot.password
            await bot.close()  # the bot logs in by itself
            host = await hs.register(fresh_name("host"), exempt=True)  # creates the subscriber rooms
            mo = await hs.register(fresh_name("mo"), displayname="Mo", exempt=True)
            alice = await hs.register(fresh_name("alice"), exempt=True)
            mods = await mo.create_room(name="Moderators", invite=[bot_user])
            room_ids = await limited(
                (lambda i=i: host.create_room(name=f"Subscribers {i}", invite=[bot_user])) for i in range(count))
            database = tmp / "relay.db"
            await subscribe_rooms(database, room_ids)
            env = {"MATRIX_HOMESERVER": hs.url, "MATRIX_USER": bot_user, "MATRIX_PASSWORD": bot_password,
                   "MATRIX_MODERATION_ROOM": mods, "DATABASE": str(database), "LETTER_JOIN_SECONDS": "0",
                   "TRANSLATOR": "none"}
            relay = Relay(Settings.from_env(env))  # rates from the settings: MATRIX_RATES, as deployed
            await relay.start()
            try:
                assert relay.ctx is not None and relay.worker is not None
                rates = relay.worker.pacers["matrix"].rates
                dm = await direct_room(alice, bot_user)
                for number, kind in ((1, "photo"), (2, "text")):
                    before = len(await bot_uploads(hs, bot_user))
                    caption = f"{LETTER} ({number})"
                    if kind == "photo":
                        await send_photo(alice, dm, photo, caption)
                    else:
                        await alice.send_text(dm, caption)
                    await mo.wait_for_text(mods, bot_user, rf"^📨 Letter #{number} ", within=30)
                    await asyncio.sleep(1.0)  # a moderator reads before approving
                    carded = len(await bot_uploads(hs, bot_user))
                    command_at = time.time()
                    await mo.send_text(mods, f"!approve {number}")
                    progress = await wait_broadcast(relay.ctx.repos, number, count, within=60 + count)
                    runs[kind] = (progress, await broadcast_times(relay.ctx.repos, number), command_at)
                    uploads[kind] = len(await bot_uploads(hs, bot_user)) - before
                    uploads[f"{kind} card"] = carded - before
            finally:
                await relay.stop()
            in_rooms = await limited((lambda room_id=room_id: host.messages(room_id)) for room_id in room_ids)
            images = [files_from(events, bot_user) for events in in_rooms]
            texts = sum(1 for events in in_rooms for event in events if event.get("sender") == bot_user
                        and event.get("type") == "m.room.message"
                        and (event.get("content") or {}).get("msgtype") == "m.text")
            in_mods = files_from(await mo.messages(mods), bot_user)
            listed = await bot_uploads(hs, bot_user)
        finally:
            await hs.stop()

    urls = collections.Counter(event["content"].get("url") for found in [*images, in_mods] for event in found)
    lines.append(("setup", f"{count} rooms on a real Synapse, created by one person inviting the bot (joined at "
                           f"start-up); bot rate-limit exempt, rates {rates}; the same photo and caption; letter #1 "
                           f"the photo, #2 the caption as text"))
    lines.append(("uploads", f"photo letter: {uploads['photo']} (card {uploads['photo card']}, then "
                             f"{uploads['photo'] - uploads['photo card']} for {count} rooms); text letter: "
                             f"{uploads['text']}; {len(listed)} listed by the admin API in the run ("
                             + ", ".join(f"{m.get('media_type')} {m.get('media_length', 0):,} bytes"
                                         for m in listed) + ")"))
    lines.append(("m.image", f"{sum(map(len, images)):,} in {sum(1 for found in images if found)} of {count} rooms "
                             f"(most in one room: {max(map(len, images), default=0)}), {len(in_mods)} in the "
                             f"moderators' room; {len(urls)} distinct mxc:// URI(s); beside them {texts:,} m.text "
                             f"events from the bot in the rooms (both letters)"))
    rates_of: dict[str, float] = {}
    for kind, (progress, times, command_at) in runs.items():
        rate = letter_line(lines, kind, progress, times, command_at, "!approve", ",.1f")
        if rate is not None:
            rates_of[kind] = rate
    finished = len(rates_of) == len(runs) and all(p.sent == count for p, _, _ in runs.values())
    if len(rates_of) == len(runs):
        lines.append(("ratio", f"photo ÷ text deliveries/s: {rates_of['photo'] / rates_of['text']:.2f}"))
    lines += [("bot log", line) for line in tally.top(3, skip=("starting", "stopped", "syncing", "migration"))]
    return lines, uploads.get("photo"), finished


def camera_jpeg(width: int, height: int) -> bytes:
    """A camera-like JPEG: gradients and noise (so it does not compress to nothing), with EXIF, GPS included."""
    gradient = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 40)
    picture = Image.merge("RGB", (gradient, noise, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    output = io.BytesIO()
    picture.save(output, "JPEG", exif=camera_exif(), quality=92)
    return output.getvalue()


def cleaning_cost() -> list[tuple[str, str]]:
    lines = []
    for label, (width, height) in (("clean 12 MP", (4000, 3000)), ("clean 1 MP", (1152, 864))):
        data = camera_jpeg(width, height)
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            cleaned = clean(data, "image/jpeg", "IMG_0001.JPG")
            seconds.append(time.perf_counter() - started)
        header = cleaned.data[:cleaned.data.find(b"\xff\xda")]  # before the scan: compressed pixels match by chance
        left = [t.decode(errors="replace") for t in TELLTALES if t in header]
        left += ["EXIF"] if Image.open(io.BytesIO(cleaned.data)).getexif() else []
        lines.append((label, f"{width}×{height}: {min(seconds) * 1000:,.0f} ms best of 3 "
                             f"({', '.join(f'{s * 1000:,.0f}' for s in seconds)} ms); {len(data):,} → "
                             f"{len(cleaned.data):,} bytes = {len(cleaned.data) / len(data):.2f} × the input; out "
                             f"{cleaned.width}×{cleaned.height} {cleaned.mime_type}, metadata left: "
                             f"{', '.join(left) or 'none'}"))
    return lines


async def media_letters(subscriptions: int, rooms: int) -> Result:
    name = "Media: one photo letter"
    title = (f"Media: one photo letter to {n(subscriptions)} Telegram subscriptions and {n(rooms)} Matrix rooms, "
             f"and the cost of cleaning a photo")
    lines, uploads, finished = await one_photo_letter(subscriptions)
    matrix_lines, matrix_uploads, matrix_finished = await matrix_photo_letter(rooms)
    lines += [(f"Matrix {label}" if label else label, text) for label, text in matrix_lines]
    lines += cleaning_cost()
    headline = f"uploads: Telegram {uploads}, Matrix {matrix_uploads}"
    if not (finished and matrix_finished):
        return Result(9, name, f"{headline}; a broadcast did not finish", GOAL, None, lines=lines, title=title)
    ratio = next(text for label, text in lines if label == "ratio").rsplit(" ", 1)[-1]
    remote = next(text for label, text in lines if text.startswith("with ")).rsplit(" ", 1)[-1]
    matrix_ratio = next(text for label, text in matrix_lines if label == "ratio").rsplit(" ", 1)[-1]
    return Result(9, name, headline, GOAL, uploads == 1 and matrix_uploads == 1,
                  details=f"photo ÷ text deliveries/s: Telegram {ratio} ({remote} with {LATENCY * 1000:.0f} ms per "
                          f"call), Matrix {matrix_ratio}; {n(subscriptions)} subscriptions, {n(rooms)} rooms",
                  lines=lines, title=title)

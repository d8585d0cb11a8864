"""Writers' privacy in the handlers: retention with a controllable clock, forget, bans by keyed hash, cards
scrubbed, moderators' edits and the history, personal subscribers as pseudonyms."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from bot import files
from bot.keys import AccountKey
from handlers import privacy
from storage.db import Database
from storage.repositories import Repositories
from tests.conftest import MODS, World, broadcast_of
from tests.test_handlers import card, press, submit, texts_in

DAY = 86400.0


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def moderator_says(world: World, text: str) -> str:
    await world.dispatch(world.message(world.mods, world.moderator, text))
    return texts_in(world, MODS)[-1]


async def linked_accounts(world: World) -> list[tuple[str, str, str]]:
    return await world.ctx.repos.senders.linked()


async def part_ids(world: World, letter_id: int) -> list[tuple[str | None, str | None]]:
    return await world.ctx.repos.letters.part_ids(letter_id)


async def test_retention_cuts_the_link_after_the_window_and_not_before(world: World) -> None:
    await submit(world, "Approved and public", user_id="1")
    await submit(world, "Rejected and private", user_id="1")
    await press(world, 1, "approve")
    await press(world, 2, "reject")
    world.clock.advance(29 * DAY)
    assert (await privacy.purge(world.ctx)).letters == 0
    assert await linked_accounts(world) == [("telegram", "1", "1")]

    world.clock.advance(2 * DAY)
    purged = await privacy.purge(world.ctx)
    assert purged.letters == 2
    assert await linked_accounts(world) == []
    assert await part_ids(world, 1) == [(None, None)] and await part_ids(world, 2) == [(None, None)]
    published, rejected = await world.ctx.repos.letters.get(1), await world.ctx.repos.letters.get(2)
    assert published is not None and published.text == "Approved and public"
    assert rejected is not None and rejected.text == "" and rejected.text_removed
    assert await world.ctx.repos.senders.get(published.sender_id) is None


async def test_an_account_still_writing_moves_to_a_new_pseudonym(world: World) -> None:
    await submit(world, "old letter", user_id="1")
    await press(world, 1, "approve")
    world.clock.advance(31 * DAY)
    await submit(world, "new letter", user_id="1")
    await privacy.purge(world.ctx)
    old, new = await world.ctx.repos.letters.get(1), await world.ctx.repos.letters.get(2)
    assert old is not None and new is not None
    assert old.sender_id != new.sender_id
    assert await world.ctx.repos.senders.get(old.sender_id) is None
    sender = await world.ctx.repos.senders.get(new.sender_id)
    assert sender is not None and sender.user_id == "1"
    await press(world, 2, "approve")
    assert "#2 was approved" in texts_in(world, "1")[-1]  # the pending letter's sender is still told


async def test_retention_zero_unlinks_as_soon_as_the_sender_is_told(world: World) -> None:
    world.ctx.policy = replace(world.ctx.policy, retention_days=0)
    await submit(world, "Quick", user_id="1")
    await submit(world, "Still waiting", user_id="1")
    await press(world, 1, "reject")
    assert "#1 was not published" in texts_in(world, "1")[-1]
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.text_removed and await part_ids(world, 1) == [(None, None)]
    waiting = await world.ctx.repos.letters.get(2)
    assert waiting is not None and await world.ctx.repos.senders.get(waiting.sender_id) is not None
    await world.dispatch(world.message(world.private(world.user("1")), world.user("1"), "/withdraw 2"))
    assert "withdrawn" in texts_in(world, "1")[-1]
    assert await linked_accounts(world) == []


async def test_replay_guards_older_than_the_window_go(world: World) -> None:
    await submit(world, "hello")
    await press(world, 1, "approve")
    assert await world.ctx.repos.state.events_seen() == 1
    world.clock.advance(31 * DAY)
    assert (await privacy.purge(world.ctx)).replay_guards == 1


async def test_forget_asks_first_then_withdraws_and_deletes_everything(world: World) -> None:
    user = world.user("1", name="Ana Secret")
    chat = world.private(user)
    await world.dispatch(world.message(chat, user, "/subscribe es"))
    await submit(world, "published one", user_id="1")
    await press(world, 1, "approve")
    await submit(world, "waiting one", user_id="1")

    await world.dispatch(world.message(chat, user, "/forget"))
    assert "/forget yes" in texts_in(world, "1")[-1]
    assert await linked_accounts(world) != []  # nothing happened yet

    await world.dispatch(world.message(chat, user, "/forget yes"))
    assert "forgotten" in texts_in(world, "1")[-1] and "1 letter" in texts_in(world, "1")[-1]
    waiting = await world.ctx.repos.letters.get(2)
    assert waiting is not None and waiting.status == "withdrawn"
    assert "waiting one" not in card(world, 2).full_text and card(world, 2).scrubbed
    assert await linked_accounts(world) == []
    assert await world.ctx.repos.subscriptions.find("telegram", "1") is None
    assert await part_ids(world, 1) == [(None, None)]
    published = await world.ctx.repos.letters.get(1)
    assert published is not None and published.text == "published one"

    await submit(world, "I am back", user_id="1")
    again = await world.ctx.repos.letters.get(3)
    assert again is not None and again.sender_id not in (published.sender_id, waiting.sender_id)


async def test_forget_leaves_no_identifier_in_the_database_file(world: World, tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "relay.db")
    world.ctx.repos = type(world.ctx.repos).over(db)
    user = world.user("777123456", name="Zoe Unique")
    chat = world.private(user)
    await world.dispatch(world.message(chat, user, "a letter"))
    await press(world, 1, "reject")
    await world.dispatch(world.message(chat, user, "/subscribe"))
    await world.dispatch(world.message(chat, user, "/forget yes"))
    await db.close()
    for name, content in contents(tmp_path).items():
        assert b"777123456" not in content and b"a letter" not in content, name


async def test_ban_survives_retention_and_forget_as_a_hash(world: World) -> None:
    await submit(world, "spam", user_id="66")
    await moderator_says(world, "/ban 1")
    await press(world, 1, "reject")
    hashes = await world.ctx.repos.bans.hashes()
    assert hashes and "66" not in hashes[0] and len(hashes[0]) == 64
    world.clock.advance(31 * DAY)
    await privacy.purge(world.ctx)
    await world.dispatch(world.message(world.private(world.user("66")), world.user("66"), "/forget yes"))
    await submit(world, "more spam", user_id="66")
    assert "no longer accept" in texts_in(world, "66")[-1]
    assert "can send letters again" in await moderator_says(world, "/unban 1")
    await submit(world, "a real letter now", user_id="66")
    assert "#2" in texts_in(world, "66")[-1]


async def test_legacy_bans_are_hashed_at_start(world: World) -> None:
    await world.ctx.repos.bans.ban("legacy:telegram:55", None, 0)  # as migration 003 carried an old ban over
    await privacy.hash_legacy_bans(world.ctx)
    assert await world.ctx.repos.bans.hashes() == [world.ctx.hasher.account_hash("telegram", "55")]
    await submit(world, "hello", user_id="55")
    assert "no longer accept" in texts_in(world, "55")[-1]


@pytest.mark.parametrize("how", ["reject", "withdraw"])
async def test_every_part_of_a_card_loses_the_text(world: World, how: str) -> None:
    long = ("Una frase larga con nombres y lugares. " * 98).strip()  # under the split threshold, over one card part
    await submit(world, long)
    parts = [posted for posted in world.network.in_chat(MODS) if "#1" in (posted.message.title or "")]
    assert len(parts) >= 2
    if how == "reject":
        await press(world, 1, "reject")
    else:
        await world.dispatch(world.message(world.private(world.user("1")), world.user("1"), "/withdraw 1"))
    for posted in parts:
        assert posted.scrubbed and "nombres" not in posted.full_text
    assert "removed" in parts[0].full_text and ("rejected" in parts[0].full_text or "withdrawn" in parts[0].full_text)


async def test_edit_replaces_the_text_everywhere_and_is_refused_after_the_decision(world: World) -> None:
    await world.ctx.repos.subscriptions.subscribe("telegram", "-200", "channel", "News", "en", 0)
    await submit(world, "Signed: Ana from Calle 5, Oaxaca")
    answer = await moderator_says(world, "/edit 1 Signed: a friend")
    assert "new text" in answer
    shown = card(world, 1).full_text
    assert "Signed: a friend" in shown and "Calle 5" not in shown and "edited by Mo" in shown
    assert card(world, 1).current.actions  # still pending: the buttons stay
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None
    (message,) = await broadcast_of(world.ctx, letter, "-200", "en")
    assert message.text == "Signed: a friend"
    await press(world, 1, "approve")
    assert "already approved" in await moderator_says(world, "/edit 1 something else")
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.text == "Signed: a friend"


async def test_history_shows_the_trail_with_names_and_pseudonyms(world: World) -> None:
    await submit(world, "hola a todos")
    await moderator_says(world, "/lang 1 es")
    await moderator_says(world, "/edit 1 hola")
    await moderator_says(world, "/translation 1 en hello")
    await press(world, 1, "approve")
    history = await moderator_says(world, "/history 1")
    lines = [line for line in history.splitlines() if line]
    assert "History of letter #1" in lines[0]
    assert "received from sender 1" in lines[1]
    assert "language set to Spanish by Mo" in lines[2]
    assert "text edited by Mo" in lines[3]
    assert "English translation replaced by Mo" in lines[4]
    assert "approved by Mo" in lines[5]
    assert "English translation by Mo" in card(world, 1).full_text


async def test_lang_and_translation_are_refused_for_withdrawn_rejected_and_unannounced(world: World) -> None:
    await submit(world, "first")
    await submit(world, "second")
    await press(world, 1, "reject")
    await world.dispatch(world.message(world.private(world.user("1")), world.user("1"), "/withdraw 2"))
    assert "rejected" in await moderator_says(world, "/lang 1 es")
    assert "withdrawn" in await moderator_says(world, "/translation 2 fr")
    assert "withdrawn" in await moderator_says(world, "/translation 2 fr bonjour")
    await submit(world, "x" * 4090)  # may still grow: not announced yet
    assert "no letter #3" in await moderator_says(world, "/lang 3 es")
    assert await world.ctx.repos.translations.get(2, "fr") is None


async def test_translation_replacement_only_before_the_decision(world: World) -> None:
    await submit(world, "hola")
    await press(world, 1, "approve")
    assert "already approved" in await moderator_says(world, "/translation 1 en hello")
    assert await world.ctx.repos.translations.get(1, "en") is None


async def test_personal_subscribers_are_people_by_number(world: World) -> None:
    user = world.user("4242", name="Reader Name")
    await world.dispatch(world.message(world.private(user), user, "/subscribe"))
    listing = await moderator_says(world, "/subscribers")
    assert "person 1" in listing and "4242" not in listing and "Reader Name" not in listing


async def test_start_and_help_say_what_is_kept_and_for_how_long(world: World) -> None:
    user = world.user("1")
    await world.dispatch(world.message(world.private(user), user, "/start"))
    await world.dispatch(world.message(world.private(user), user, "/help"))
    start, help_text = texts_in(world, "1")
    for text in (start, help_text):
        assert "30 days after the moderators' decision" in text and "/forget" in text


def loosen(database: Path) -> None:
    database.chmod(0o644)
    database.parent.chmod(0o755)


def test_files_are_private_whatever_the_umask(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database = tmp_path / "data" / "relay.db"
    old = os.umask(0o022)
    try:
        files.prepare(database)
        AccountKey.load_or_create(files.key_path(database))
    finally:
        os.umask(old)
    assert stat.S_IMODE(database.parent.stat().st_mode) == 0o700
    for path in (database, files.key_path(database)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


async def test_wal_and_shm_are_private_and_loose_modes_are_tightened(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    database = tmp_path / "data" / "relay.db"
    old = os.umask(0o022)
    try:
        files.prepare(database)
        db = await Database.open(database)
        await Repositories.over(db).state.put("k", "v")
        for suffix in ("-wal", "-shm"):
            assert mode_of(Path(f"{database}{suffix}")) == 0o600, suffix
        await db.close()
        loosen(database)
        with caplog.at_level(logging.INFO, logger="bot.files"):
            files.prepare(database)
    finally:
        os.umask(old)
    assert mode_of(database) == 0o600 and mode_of(database.parent) == 0o700
    assert len([record for record in caplog.records if "tightened" in record.getMessage()]) == 1


async def test_purge_checkpoints_the_wal(world: World, tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "relay.db")
    world.ctx.repos = type(world.ctx.repos).over(db)
    await submit(world, "withdraw me, secret words", user_id="1")
    await press(world, 1, "reject")
    world.clock.advance(31 * DAY)
    await privacy.purge(world.ctx)
    assert contents(tmp_path)["relay.db-wal"] == b""
    await db.close()
    assert b"secret words" not in contents(tmp_path)["relay.db"]


async def test_a_purge_in_many_batches_keeps_an_expired_sender_on_one_pseudonym(world: World) -> None:
    for text in ("one", "two", "three"):
        await submit(world, text, user_id="1")
    for number in (1, 2, 3):
        await press(world, number, "approve")
    await submit(world, "still waiting", user_id="1")
    world.clock.advance(31 * DAY)
    now = world.clock.now()
    while await world.ctx.repos.privacy.unlink_decided(now - 30 * DAY, now, batch=1):
        pass
    letters = [await world.ctx.repos.letters.get(number) for number in (1, 2, 3, 4)]
    senders = {letter.sender_id for letter in letters[:3] if letter is not None}
    assert len(senders) == 1  # one rotation, not one per batch
    assert letters[3] is not None and letters[3].sender_id not in senders
    assert await world.ctx.repos.senders.pseudonyms() == 2

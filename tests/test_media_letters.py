"""Media letters in the handlers, with the real media shelf on disk: what is kept, for how long, and what the
writer is told."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from bot.media import SPARE_SECONDS, MediaStore, Shelf
from handlers import privacy
from handlers.events import DOCUMENT, IMAGE, Attachment, IncomingMessage
from tests.conftest import World
from tests.test_handlers import card, press, texts_in
from tests.test_media import TELLTALES, phone_photo
from tests.test_privacy import moderator_says


@pytest.fixture
def shelf(world: World, tmp_path: Path) -> Shelf:
    world.ctx.media = shelf = Shelf(MediaStore(tmp_path / "media"))
    return shelf


def photo_message(world: World, caption: str | None, ref: str = "photo-1", size: int | None = None,
                  kind: str = IMAGE, group: str | None = None) -> IncomingMessage:
    data = world.network.files.setdefault(ref, phone_photo())
    user = world.user("1")
    message = world.message(world.private(user), user, caption)
    attachment = Attachment(kind, "image/jpeg", len(data) if size is None else size, "IMG_0001.JPG", ref)
    return replace(message, attachments=(attachment,), media_group=group)


def age(shelf: Shelf, seconds: float) -> None:
    """The stored files as if kept `seconds` ago (a file younger than SPARE_SECONDS is never swept)."""
    for digest in shelf.store.digests():
        path = shelf.store.path(digest)
        os.utime(path, (path.stat().st_atime - seconds, path.stat().st_mtime - seconds))


async def test_a_photo_letter_is_stored_cleaned_and_carded(world: World, shelf: Shelf) -> None:
    await world.dispatch(photo_message(world, "Our banner"))
    (receipt,) = texts_in(world, "1")
    assert "#1" in receipt
    shown = card(world, 1).message
    assert shown.text == "Our banner" and len(shown.media) == 1 and shown.media[0].file_name == "letter-1-1.jpg"
    stored = shelf.read(shown.media[0].digest)
    assert not any(telltale in stored for telltale in TELLTALES)


async def test_a_file_over_the_limit_is_refused_and_never_fetched(world: World, shelf: Shelf) -> None:
    await world.dispatch(photo_message(world, None, size=world.ctx.policy.media_max_bytes + 1))
    (refusal,) = texts_in(world, "1")
    assert "too large" in refusal and world.network.fetched == []
    assert await world.ctx.repos.letters.get(1) is None


async def test_a_damaged_picture_is_refused_with_an_answer(world: World, shelf: Shelf) -> None:
    world.network.files["broken"] = phone_photo()[:300]
    await world.dispatch(photo_message(world, "A photo", ref="broken"))
    (refusal,) = texts_in(world, "1")
    assert "could not read that picture" in refusal
    assert await world.ctx.repos.letters.get(1) is None


async def test_a_document_keeps_its_metadata_and_the_card_says_so(world: World, shelf: Shelf) -> None:
    world.network.files["pdf"] = b"%PDF-1.4\n/Author (Ana Petrova)\n%%EOF\n"
    await world.dispatch(photo_message(world, "Our statement", ref="pdf", kind=DOCUMENT))
    shown = card(world, 1).message
    assert "metadata not removed from 1 file" in (shown.footer or "")
    assert shown.media[0].kind == DOCUMENT and not shown.media[0].metadata_removed


async def test_an_album_is_one_letter(world: World, shelf: Shelf) -> None:
    for index in range(3):
        world.network.files[f"p{index}"] = phone_photo(subsampling=index)  # three different pictures
        await world.dispatch(photo_message(world, "Three of us" if index == 0 else None, ref=f"p{index}",
                                           group="album-7"))
    world.clock.advance(6)
    await world.run_due()
    (receipt,) = texts_in(world, "1")
    assert "#1" in receipt
    assert len(card(world, 1).message.media) == 3 and card(world, 1).message.text == "Three of us"


async def test_a_rejected_photo_letter_loses_its_file_with_its_text(world: World, shelf: Shelf) -> None:
    await world.dispatch(photo_message(world, "Reject me"))
    await press(world, 1, "reject")
    assert card(world, 1).current.media == ()  # gone from the card at once
    world.clock.advance(world.ctx.policy.retention_seconds + 60)
    age(shelf, SPARE_SECONDS + 1)
    await privacy.purge(world.ctx)
    assert await world.ctx.repos.media.of(1) == [] and shelf.store.digests() == []


async def test_a_published_photo_stays_with_its_letter(world: World, shelf: Shelf) -> None:
    await world.dispatch(photo_message(world, "Publish me"))
    await press(world, 1, "approve")
    world.clock.advance(world.ctx.policy.retention_seconds + 60)
    age(shelf, SPARE_SECONDS + 1)
    await privacy.purge(world.ctx)
    assert len(await world.ctx.repos.media.of(1)) == 1 and len(shelf.store.digests()) == 1


async def test_a_file_just_stored_is_spared_by_the_sweep(world: World, shelf: Shelf) -> None:
    digest = shelf.store.put(b"a letter's file, its transaction not committed yet")
    assert shelf.sweep(set()) == 0 and shelf.store.exists(digest)
    age(shelf, SPARE_SECONDS + 1)
    assert shelf.sweep(set()) == 1


async def test_edit_and_history_cover_a_photo_letter_whose_text_is_its_caption(world: World, shelf: Shelf) -> None:
    await world.dispatch(photo_message(world, "Signed: Ana from Kharkiv"))
    answer = await moderator_says(world, "/edit 1 Signed: a friend")
    assert "new text" in answer
    shown = card(world, 1).current
    assert shown.text == "Signed: a friend" and len(shown.media) == 1  # the picture stays with the new caption
    assert "edit" in await moderator_says(world, "/history 1")

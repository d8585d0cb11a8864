"""Media letters through the whole bot on Telegram (the strict Bot API emulator): photos, documents, albums,
without the metadata that gives their writers away."""

from __future__ import annotations

import io
import os
from typing import Any

from PIL import Image

from tests import test_e2e_telegram
from tests.test_e2e_telegram import Scene
from tests.test_media import TELLTALES, phone_photo

scene = test_e2e_telegram.scene  # the Telegram scenes' fixture: the same people, group and channel


def media_of(scene: Scene, chat: Any) -> list[dict[str, Any]]:
    return [m for m in scene.emu.sent_by_bot(chat) if "photo" in m or "document" in m or "video" in m]


def assert_clean(data: bytes) -> None:
    for telltale in TELLTALES:
        assert telltale not in data, telltale
    assert not Image.open(io.BytesIO(data)).getexif()


async def approve(scene: Scene, number: int) -> None:
    card = await scene.card(number)
    approve_button = card["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    scene.emu.press_button(scene.mo, scene.mods["id"], card["message_id"], approve_button)


async def test_a_phone_photo_reaches_moderators_and_subscribers_without_its_metadata(scene: Scene) -> None:
    await scene.start_bot()
    await scene.subscribe_channel()
    scene.emu.user_sends_photo(scene.alice, phone_photo(), caption="Our banner at the factory gate ✊")
    await scene.bot_says(scene.alice, r"#1\b")
    card = await scene.card(1)
    assert "Our banner at the factory gate ✊" in card["text"]
    (shown,) = media_of(scene, scene.mods)
    assert shown["message_id"] < card["message_id"]  # the picture, then the card with its buttons
    assert_clean(scene.emu.media_bytes(shown))

    await approve(scene, 1)
    delivered = await scene.emu.wait_for(lambda: media_of(scene, scene.channel), what="the photo in the channel")
    (letter,) = delivered
    assert "Our banner at the factory gate ✊" in letter["caption"] and "Letter of solidarity #1" in letter["caption"]
    assert_clean(scene.emu.media_bytes(letter))
    assert Image.open(io.BytesIO(scene.emu.media_bytes(letter))).size == (20, 40)  # stood upright
    assert scene.emu.upload_count == 1  # the card's upload; the channel got its file_id
    assert all(not identifies(m.get("caption", ""), scene.alice) for m in delivered)


async def test_a_photo_sent_as_a_document_goes_out_as_a_cleaned_photo(scene: Scene) -> None:
    await scene.start_bot()
    await scene.subscribe_channel()
    scene.emu.user_sends_document(scene.alice, phone_photo(), "IMG_20240301_143022.JPG", "application/octet-stream")
    await scene.bot_says(scene.alice, r"#1\b")
    await approve(scene, 1)
    (letter,) = await scene.emu.wait_for(lambda: media_of(scene, scene.channel), what="the photo")
    assert "photo" in letter and "document" not in letter
    assert_clean(scene.emu.media_bytes(letter))
    assert all("IMG_2024" not in (upload.file_name or "") for upload in scene.emu.uploads())


async def test_an_album_is_one_letter_with_one_receipt_and_one_album_delivered(scene: Scene) -> None:
    await scene.start_bot()
    await scene.subscribe_channel()
    for index in range(3):
        scene.emu.user_sends_photo(scene.alice, phone_photo(), caption="Three of us" if index == 0 else None,
                                   media_group_id="album-1")
    await scene.bot_says(scene.alice, r"#1\b")
    await approve(scene, 1)
    album = await scene.emu.wait_for(lambda: m if len(m := media_of(scene, scene.channel)) == 3 else None,
                                     what="the album in the channel")
    assert len({m.get("media_group_id") for m in album}) == 1 and album[0].get("media_group_id")
    assert "Three of us" in album[0]["caption"]
    assert not any("#2" in text for text in scene.bot_texts(scene.alice))


async def test_a_caption_too_long_for_telegram_follows_its_picture_whole(scene: Scene) -> None:
    await scene.start_bot()
    await scene.subscribe_channel()
    caption = ("We stand with you. " * 53).strip()  # 1,006 characters: a caption, until the letter's title
    scene.emu.user_sends_photo(scene.alice, phone_photo(), caption=caption)
    await scene.bot_says(scene.alice, r"#1\b")
    await approve(scene, 1)
    await scene.bot_says(scene.channel, "Letter of solidarity #1")
    (picture,) = media_of(scene, scene.channel)
    assert "caption" not in picture
    assert any(caption in text for text in scene.bot_texts(scene.channel))


async def test_a_file_over_the_limit_is_refused_before_any_download(scene: Scene) -> None:
    await scene.start_bot(MEDIA_MAX_MB="1")
    scene.emu.user_sends_document(scene.alice, b"%PDF-1.4\n" + bytes(1_200_000), "report.pdf", "application/pdf")
    await scene.bot_says(scene.alice, "too large: I can take files of up to 1 MB")
    assert scene.emu.downloads == []


async def test_stickers_keep_their_clear_answer(scene: Scene) -> None:
    await scene.start_bot()
    scene.emu.user_sends_sticker(scene.alice, b"RIFF\0\0\0\0WEBPVP8 ")
    await scene.bot_says(scene.alice, "not this kind of message")


async def test_a_rejected_photo_leaves_the_moderators_room(scene: Scene) -> None:
    await scene.start_bot()
    scene.emu.user_sends_photo(scene.alice, phone_photo(), caption="Please reject me")
    card = await scene.card(1)
    reject = card["reply_markup"]["inline_keyboard"][0][1]["callback_data"]
    scene.emu.press_button(scene.mo, scene.mods["id"], card["message_id"], reject)
    await scene.emu.wait_for(lambda: not media_of(scene, scene.mods) or None, what="the photo deleted")


def identifies(text: str, person: dict[str, Any]) -> bool:
    return any(str(value) in text for value in (person["id"], person["first_name"], person.get("username")) if value)


async def test_a_picture_too_big_for_a_telegram_photo_goes_as_a_document(scene: Scene) -> None:
    await scene.start_bot()
    noise = Image.frombytes("RGB", (1900, 1900), os.urandom(1900 * 1900 * 3))
    png = io.BytesIO()
    noise.save(png, "PNG", compress_level=1)
    assert png.tell() > 10 * 1024 * 1024  # over sendPhoto's 10 MB, also once written anew
    scene.emu.user_sends_document(scene.alice, png.getvalue(), "poster.png", "image/png", caption="Our poster")
    # Written anew and uploaded: seconds on a busy machine, more than a card's usual wait.
    await scene.emu.wait_for(lambda: media_of(scene, scene.mods), 60, what="the poster on the card")
    (shown,) = media_of(scene, scene.mods)
    assert "document" in shown and shown["document"]["file_name"] == "letter-1-1.png"

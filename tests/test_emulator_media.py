"""The Telegram emulator's media: people send photos, documents, videos, voice and stickers; the bot fetches them
with getFile and a download, and sends its own (uploads, attach:// albums, file_ids) with python-telegram-bot."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import telegram
from telegram import InputMediaDocument, InputMediaPhoto, InputMediaVideo, Update
from telegram.error import BadRequest, InvalidToken, NetworkError

from tests.emulators.telegram import MAX_PHOTO_UPLOAD, ManualConsole, TelegramEmulator, error_body

TOKEN = "123456:TEST-token"
MB = 1024 * 1024


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(TOKEN) as emulator:
        yield emulator


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[telegram.Bot]:
    root = emu.api_root
    async with telegram.Bot(TOKEN, base_url=f"{root}/bot", base_file_url=f"{root}/file/bot") as ptb_bot:
        yield ptb_bot


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, emu: TelegramEmulator, method: str,
               data: dict[str, Any] | aiohttp.FormData) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{emu.api_root}/bot{TOKEN}/{method}", data=data) as response:
        return response.status, await response.json()


def bad_request(description: str) -> tuple[int, dict[str, Any]]:
    return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {description}"}


def png(width: int, height: int, shade: int = 0) -> bytes:
    """A real PNG image (one colour), made without Pillow."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + bytes((shade, 128, 255 - shade)) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def people(emu: TelegramEmulator) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """alice (who wrote to the bot), mo (moderator, group owner) and the moderation group."""
    alice = emu.add_user("Alice", "alice")
    mo = emu.add_user("Mo", "mo")
    mods = emu.add_group("Moderators", [(mo, "creator")], bot_status="administrator")
    emu.user_sends(alice, "/start")
    return alice, mo, mods


def last_error(emu: TelegramEmulator) -> str:
    return emu.errors[-1][2]


# --- people send media ----------------------------------------------------------------------------------------


async def test_a_persons_photo_downloads_as_the_same_bytes(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice = emu.add_user("Alice", "alice")
    image = png(300, 200)
    emu.user_sends_photo(alice, image, caption="Our banner /start, ask @relay_test_bot")
    [update] = await bot.get_updates()
    message = update.message
    assert message.text is None and message.caption == "Our banner /start, ask @relay_test_bot"
    # Captions get entities like texts, but they are not commands.
    assert [e.type for e in message.caption_entities] == ["mention"]
    small, full = message.photo
    assert full.file_size == len(image) and small.file_size < full.file_size
    assert max(small.width, small.height) <= 90 and full.file_unique_id != small.file_unique_id
    file = await bot.get_file(full.file_id)
    assert file.file_path.endswith(".jpg") and file.file_size == len(image)
    assert bytes(await file.download_as_bytearray()) == image
    assert emu.downloads == [file.file_path.rsplit("/file/bot" + TOKEN + "/", 1)[1]]
    assert emu.file_bytes(full.file_id) == image == emu.media_bytes(emu.messages(alice)[0])


async def test_photo_sizes_are_read_from_the_image(emu: TelegramEmulator) -> None:
    pytest.importorskip("PIL")
    alice = emu.add_user("Alice")
    small, full = emu.user_sends_photo(alice, png(300, 200))["photo"]
    assert (full["width"], full["height"]) == (300, 200) and (small["width"], small["height"]) == (90, 60)
    assert emu.file_bytes(small["file_id"]).startswith(b"\xff\xd8")  # the thumbnail is a JPEG
    small, full = emu.user_sends_photo(alice, b"not an image")["photo"]  # sizes made up, the bytes kept
    assert (full["width"], full["height"]) == (1280, 960) and emu.file_bytes(full["file_id"]) == b"not an image"


async def test_an_album_is_one_message_and_update_per_item(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice = emu.add_user("Alice")
    emu.user_sends_photo(alice, png(4, 4), caption="two pictures", media_group_id="1390001")
    emu.user_sends_video(alice, b"\x00\x00\x00\x18ftypmp42", media_group_id="1390001")
    updates = await bot.get_updates()
    assert [u.message.media_group_id for u in updates] == ["1390001", "1390001"]
    assert updates[0].message.caption == "two pictures" and updates[1].message.caption is None
    assert updates[1].message.video.mime_type == "video/mp4"


async def test_documents_videos_voice_and_stickers_parse_in_ptb(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice = emu.add_user("Alice")
    emu.user_sends_document(alice, b"%PDF-1.4 letter", "letter.pdf", "application/pdf", caption="my letter")
    emu.user_sends_video(alice, b"video bytes", caption="a video", width=1920, height=1080, duration=12)
    emu.user_sends_voice(alice, b"OggS voice", duration=3)
    emu.user_sends_sticker(alice, b"RIFF....WEBPVP8 ", emoji="✊")
    assert [emu.spec.check(u, ["Update"], "") for u in emu.pending_updates] == [None] * 4  # valid per the spec
    document, video, voice, sticker = [u.message for u in await bot.get_updates()]
    assert (document.document.file_name, document.document.mime_type) == ("letter.pdf", "application/pdf")
    assert document.caption == "my letter"
    assert (video.video.width, video.video.height, video.video.duration.total_seconds()) == (1920, 1080, 12)
    assert voice.voice.duration.total_seconds() == 3 and voice.voice.mime_type == "audio/ogg"
    assert sticker.sticker.emoji == "✊" and sticker.sticker.type == "regular"
    file = await bot.get_file(document.document.file_id)
    assert file.file_path.startswith(f"{emu.api_root}/file/bot{TOKEN}/documents/") and file.file_path.endswith(
        ".pdf")
    assert bytes(await file.download_as_bytearray()) == b"%PDF-1.4 letter"


async def test_privacy_mode_and_media_in_groups(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    mo = emu.add_user("Mo")
    group = emu.add_group("Readers", [(mo, "creator")])  # the bot is a plain member: privacy mode applies
    emu.user_sends_photo(mo, png(2, 2), chat=group)
    emu.user_sends_photo(mo, png(2, 2), caption="for @relay_test_bot", chat=group)
    emu.user_sends_document(mo, b"x", "x.txt", "text/plain", caption="/start@relay_test_bot", chat=group)
    assert [u.message.caption for u in await bot.get_updates()] == ["for @relay_test_bot"]


# --- getFile and downloads ------------------------------------------------------------------------------------


async def test_get_file_of_a_21_mb_document_is_refused(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice = emu.add_user("Alice")
    big = emu.user_sends_document(alice, bytes(21 * MB), "archive.zip", "application/zip")
    with pytest.raises(BadRequest, match="File is too big"):
        await bot.get_file(big["document"]["file_id"])
    assert last_error(emu) == error_body("bad-request-file-too-big")["description"] == "Bad Request: file is too big"
    small = emu.user_sends_document(alice, bytes(20 * MB), "archive.zip", "application/zip")
    assert (await bot.get_file(small["document"]["file_id"])).file_size == 20 * MB


async def test_unknown_file_id_is_refused(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, _, _ = people(emu)
    with pytest.raises(BadRequest, match="Invalid file_id"):
        await bot.get_file("AgACAgQAAxkBAAInothing")
    assert last_error(emu) == "Bad Request: invalid file_id"
    with pytest.raises(BadRequest, match="Wrong file identifier/http url specified"):
        await bot.send_photo(alice["id"], "AgACAgQAAxkBAAInothing")
    assert last_error(emu) == "Bad Request: wrong file identifier/HTTP URL specified"
    with pytest.raises(BadRequest, match="not implemented by the emulator"):
        await bot.send_document(alice["id"], "https://example.org/letter.pdf")


async def test_downloads_need_a_path_from_get_file(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    alice = emu.add_user("Alice")
    file_id = emu.user_sends_document(alice, b"secret", "a.txt", "text/plain")["document"]["file_id"]
    async with http.get(f"{emu.api_root}/file/bot{TOKEN}/documents/file_0.txt") as response:
        assert response.status == 404  # Telegram gives a file its path when getFile asks for one
        assert await response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
    status, body = await call(http, emu, "getFile", {"file_id": file_id})
    path = body["result"]["file_path"]
    assert status == 200 and path == "documents/file_0.txt"
    async with http.get(f"{emu.api_root}/file/bot{TOKEN}/{path}") as response:
        assert response.status == 200 and await response.read() == b"secret"
    async with http.get(f"{emu.api_root}/file/bot123456:wrong/{path}") as response:
        assert response.status == 401
    assert emu.downloads == [path]


async def test_ptb_calls_a_missing_download_an_invalid_token(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    # A 404 from the file endpoint is what PTB reports as InvalidToken (it maps every 404 and 401 so).
    file = telegram.File("x", "y", file_path=f"{emu.api_root}/file/bot{TOKEN}/photos/file_9.jpg")
    file.set_bot(bot)
    with pytest.raises(InvalidToken, match="Not Found"):
        await file.download_as_bytearray()


# --- the bot sends media --------------------------------------------------------------------------------------


async def test_send_photo_upload_then_by_file_id_is_one_upload(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, _, mods = people(emu)
    image = png(64, 48)
    first = await bot.send_photo(mods["id"], image, caption="<b>Letter #1</b> with a photo", parse_mode="HTML")
    assert first.caption == "Letter #1 with a photo"
    assert [(e.type, e.offset, e.length) for e in first.caption_entities] == [("bold", 0, 9)]
    file_id = first.photo[-1].file_id
    again = await bot.send_photo(alice["id"], file_id, caption="the same photo")
    assert [p.file_id for p in again.photo] == [p.file_id for p in first.photo]
    assert again.photo[-1].file_unique_id == first.photo[-1].file_unique_id
    assert emu.upload_count == 1
    [upload] = emu.uploads()
    assert (upload.method, upload.field, upload.chat_id, upload.data, upload.file_id) == (
        "sendPhoto", "photo", mods["id"], image, file_id)
    [stored] = emu.sent_by_bot(mods["id"])
    assert stored["caption"] == "Letter #1 with a photo" and emu.media_bytes(stored) == image
    assert emu.media_bytes(emu.sent_by_bot(alice["id"])[0]) == image
    assert emu.calls_of("sendPhoto")[1]["photo"] == file_id  # the second call sent a string, no upload


async def test_send_document_and_video_uploads(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, _, _ = people(emu)
    # PTB uploads the thumbnail as a part that an attach:// names; the emulator takes it and ignores it.
    sent = await bot.send_document(alice["id"], b"%PDF-1.7 ...", filename="letter.pdf", caption="signed",
                                   thumbnail=png(2, 2))
    assert emu.calls_of("sendDocument")[0]["thumbnail"].startswith("attach://")
    assert (sent.document.file_name, sent.document.mime_type, sent.caption) == (
        "letter.pdf", "application/pdf", "signed")
    assert emu.file_bytes(sent.document.file_id) == b"%PDF-1.7 ..."
    video = await bot.send_video(alice["id"], b"\x00\x00\x00\x18ftypmp42", filename="clip.mp4", width=640,
                                 height=360, duration=5, supports_streaming=True)
    assert (video.video.width, video.video.height, video.video.mime_type) == (640, 360, "video/mp4")
    again = await bot.send_document(alice["id"], sent.document.file_id)
    assert again.document.file_id == sent.document.file_id
    assert [u.file_name for u in emu.uploads()] == ["letter.pdf", "clip.mp4"]


async def test_a_file_id_of_another_type_is_refused(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, _, _ = people(emu)
    document = emu.user_sends_document(alice, b"%PDF", "a.pdf", "application/pdf")["document"]["file_id"]
    photo = emu.user_sends_photo(alice, png(4, 4))["photo"][-1]["file_id"]
    with pytest.raises(BadRequest):
        await bot.send_photo(alice["id"], document)
    assert last_error(emu) == "Bad Request: can't use file of type Document as Photo"
    with pytest.raises(BadRequest):
        await bot.send_document(alice["id"], photo)
    assert last_error(emu) == "Bad Request: can't use file of type Photo as Document"
    relayed = await bot.send_photo(alice["id"], photo)  # a person's file_id is the bot's to use
    assert relayed.photo[-1].file_id == photo and emu.upload_count == 0


@pytest.mark.parametrize(("caption", "parse_mode", "ok"), [
    ("a" * 1024, None, True),
    ("a" * 1025, None, False),
    ("💪" * 512, None, True),  # 1024 UTF-16 code units
    ("💪" * 512 + "a", None, False),
    ("<b>" + "a" * 1024 + "</b>", "HTML", True),  # the limit applies after entity parsing
])
async def test_caption_limit(emu: TelegramEmulator, bot: telegram.Bot, caption: str, parse_mode: str | None,
                             ok: bool) -> None:
    alice, _, _ = people(emu)
    if ok:
        await bot.send_photo(alice["id"], png(2, 2), caption=caption, parse_mode=parse_mode)
        return
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.send_photo(alice["id"], png(2, 2), caption=caption, parse_mode=parse_mode)
    assert last_error(emu) == "Bad Request: message caption is too long"
    assert emu.upload_count == 0 and emu.sent_by_bot(alice["id"]) == []  # a refused call uploads nothing


async def test_bad_caption_html_is_telegrams_error(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, _, _ = people(emu)
    with pytest.raises(BadRequest, match="Can't parse entities"):
        await bot.send_photo(alice["id"], png(2, 2), caption="<x>", parse_mode="HTML")
    assert last_error(emu).startswith("Bad Request: can't parse entities: Unsupported start tag")


async def test_edit_message_caption(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    _, _, mods = people(emu)
    card = await bot.send_photo(mods["id"], png(8, 8), caption="Letter #1: pending")
    edited = await bot.edit_message_caption(mods["id"], card.message_id, caption="Letter #1: <i>approved</i>",
                                            parse_mode="HTML")
    assert edited.caption == "Letter #1: approved" and edited.edit_date is not None
    stored = emu.sent_by_bot(mods["id"])[0]
    assert stored["caption_entities"] == [{"type": "italic", "offset": 11, "length": 8}]
    assert stored["photo"] == card.to_dict()["photo"]  # the photo stays
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_caption(mods["id"], card.message_id, caption="Letter #1: <i>approved</i>",
                                       parse_mode="HTML")
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.edit_message_caption(mods["id"], card.message_id, caption="a" * 1025)
    await bot.edit_message_caption(mods["id"], card.message_id)  # no caption: removed
    assert "caption" not in emu.sent_by_bot(mods["id"])[0]
    text = await bot.send_message(mods["id"], "a text")
    with pytest.raises(BadRequest, match="There is no caption in the message to edit"):
        await bot.edit_message_caption(mods["id"], text.message_id, caption="x")


# --- albums ---------------------------------------------------------------------------------------------------


async def test_send_media_group_with_attach(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, _, _ = people(emu)
    first, second = png(10, 10, 0), png(10, 10, 200)
    sent = await bot.send_media_group(alice["id"], [InputMediaPhoto(first, caption="<b>two</b> photos",
                                                                    parse_mode="HTML"),
                                                    InputMediaPhoto(second)])
    assert isinstance(sent, tuple) and len(sent) == 2
    assert sent[0].media_group_id is not None and sent[0].media_group_id == sent[1].media_group_id
    assert (sent[0].caption, sent[1].caption) == ("two photos", None)
    assert [emu.file_bytes(m.photo[-1].file_id) for m in sent] == [first, second]
    media = emu.calls_of("sendMediaGroup")[0]["media"]
    assert all(item["media"].startswith("attach://attached") for item in media)  # how PTB uploads album files
    assert [(u.field, u.data) for u in emu.uploads()] == [("media[0]", first), ("media[1]", second)]
    # The file_ids of an album are reusable, mixed with new uploads, photos with videos.
    again = await bot.send_media_group(alice["id"], [InputMediaPhoto(sent[1].photo[-1].file_id),
                                                     InputMediaVideo(b"video", duration=2)])
    assert again[0].media_group_id != sent[0].media_group_id
    assert again[1].video.duration.total_seconds() == 2 and emu.upload_count == 3
    assert [m["media_group_id"] for m in emu.sent_by_bot(alice["id"])] == [sent[0].media_group_id] * 2 + [
        again[0].media_group_id] * 2


async def test_media_group_rules(emu: TelegramEmulator, bot: telegram.Bot, http: aiohttp.ClientSession) -> None:
    alice, _, _ = people(emu)
    photo = emu.user_sends_photo(alice, png(2, 2))["photo"][-1]["file_id"]
    # PTB cannot send an empty album (it fails with an IndexError of its own): raw, then.
    assert await call(http, emu, "sendMediaGroup", {"chat_id": str(alice["id"]), "media": "[]"}) == bad_request(
        "there are no messages to send")
    cases = [
        ([InputMediaPhoto(photo)] * 11, "too many messages to send as an album"),
        ([InputMediaPhoto(photo), InputMediaDocument(b"%PDF", filename="a.pdf")],
         "document can't be mixed with other media types"),
        ([InputMediaPhoto(photo), InputMediaPhoto(photo, caption="a" * 1025)], "message caption is too long"),
        ([InputMediaPhoto(photo), InputMediaPhoto(photo, caption="<x>", parse_mode="HTML")],
         'can\'t parse InputMedia: Can\'t parse entities: Unsupported start tag "x" at byte offset 0'),
    ]
    for media, description in cases:
        with pytest.raises(BadRequest):
            await bot.send_media_group(alice["id"], media)
        assert last_error(emu) == f"Bad Request: {description}"
    with pytest.raises(BadRequest, match="2-10 items"):  # Telegram sends one item alone; the emulator refuses
        await bot.send_media_group(alice["id"], [InputMediaPhoto(photo)])
    documents = await bot.send_media_group(alice["id"], [InputMediaDocument(b"1", filename="1.txt"),
                                                         InputMediaDocument(b"2", filename="2.txt")])
    assert [d.document.file_name for d in documents] == ["1.txt", "2.txt"]
    assert emu.upload_count == 2  # only the album that was sent


async def test_unknown_attach_name_is_refused(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    alice, _, _ = people(emu)
    album = aiohttp.FormData()
    album.add_field("chat_id", str(alice["id"]))
    album.add_field("media", json.dumps([{"type": "photo", "media": "attach://one"},
                                         {"type": "photo", "media": "attach://two"}]))
    album.add_field("one", png(2, 2), filename="one.png", content_type="image/png")
    assert await call(http, emu, "sendMediaGroup", album) == bad_request("can't parse InputMedia: media not found")
    photo = aiohttp.FormData()
    photo.add_field("chat_id", str(alice["id"]))
    photo.add_field("photo", "attach://missing")
    assert await call(http, emu, "sendPhoto", photo) == bad_request("there is no photo in the request")
    stray = aiohttp.FormData()  # a file part that nothing names
    stray.add_field("chat_id", str(alice["id"]))
    stray.add_field("photo", png(2, 2), filename="p.png", content_type="image/png")
    stray.add_field("extra", b"x", filename="x.bin")
    assert await call(http, emu, "sendPhoto", stray) == bad_request('unknown parameter "extra"')
    named = aiohttp.FormData()  # attach:// works for a top-level file too
    named.add_field("chat_id", str(alice["id"]))
    named.add_field("photo", "attach://pic")
    named.add_field("pic", png(2, 2), filename="p.png", content_type="image/png")
    assert (await call(http, emu, "sendPhoto", named))[0] == 200
    assert emu.upload_count == 1


async def test_media_group_items_are_validated_per_type(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    alice, _, _ = people(emu)
    photo = emu.user_sends_photo(alice, png(2, 2))["photo"][-1]["file_id"]
    media = [{"type": "photo", "media": photo}, {"type": "photo", "media": photo, "captoin": "typo"}]
    status, body = await call(http, emu, "sendMediaGroup", {"chat_id": str(alice["id"]), "media": json.dumps(media)})
    assert (status, body["description"]) == (
        400, 'Bad Request: can\'t parse media: unknown field "[1].captoin" in InputMediaPhoto')
    status, body = await call(http, emu, "sendMediaGroup", {"chat_id": str(alice["id"]), "media": "[{"})
    assert (status, body["description"]) == (400, "Bad Request: can't parse media JSON object")
    media = [{"type": "photo", "media": photo}, {"type": "animation", "media": photo}]  # not allowed in albums
    assert await call(http, emu, "sendMediaGroup", {"chat_id": str(alice["id"]), "media": json.dumps(media)}) == (
        bad_request('can\'t parse InputMedia: type "animation" can\'t be used in sendMediaGroup'))
    media = [{"type": "photo", "media": photo}, {"type": "sticker", "media": photo}]
    assert await call(http, emu, "sendMediaGroup", {"chat_id": str(alice["id"]), "media": json.dumps(media)}) == (
        bad_request('can\'t parse InputMedia: type "sticker" is unsupported'))
    media = [{"type": "audio", "media": photo}, {"type": "audio", "media": photo}]
    assert await call(http, emu, "sendMediaGroup", {"chat_id": str(alice["id"]), "media": json.dumps(media)}) == (
        bad_request('InputMedia of type "audio" is not implemented by the emulator'))


# --- upload limits --------------------------------------------------------------------------------------------


async def test_upload_limits(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, _, _ = people(emu)
    too_big = bytes(MAX_PHOTO_UPLOAD + 1)
    with pytest.raises(BadRequest, match="is too big for a photo"):
        await bot.send_photo(alice["id"], too_big)
    assert last_error(emu) == (
        f"Bad Request: file of size {MAX_PHOTO_UPLOAD + 1} bytes is too big for a photo; the maximum size is "
        "10485760 bytes")
    await bot.send_document(alice["id"], too_big, filename="big.bin")  # documents may be bigger
    with pytest.raises(NetworkError, match="Request Entity Too Large"):
        await bot.send_document(alice["id"], bytes(50 * MB + 1), filename="huge.bin")
    assert emu.errors[-1] == ("sendDocument", 413, "Request Entity Too Large")
    with pytest.raises(BadRequest, match="File must be non-empty"):
        await bot.send_document(alice["id"], b"", filename="empty.txt")
    assert [len(u.data) for u in emu.uploads()] == [MAX_PHOTO_UPLOAD + 1]


# --- manual mode ----------------------------------------------------------------------------------------------


async def test_manual_console_shows_media(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    console = ManualConsole(emu)
    console.populate()
    alice = console.people["alice"]
    emu.user_sends_photo(alice, png(2, 2), caption="a banner")
    await bot.send_document(alice["id"], b"x", filename="x.txt")
    assert console.execute("show alice") == "#1 Alice: [photo] a banner\n#2 Solidarity Relay: [document]"
    assert Update.de_json(emu.pending_updates[0], bot).message.photo  # what PTB reads, without warnings

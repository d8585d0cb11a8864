"""Media letters through the whole bot on a real Synapse: a person's m.image reaches the moderators and the
subscribers without the metadata that gives its writer away, uploaded once for every room."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from mautrix.crypto.attachments import decrypt_attachment, encrypt_attachment
from PIL import Image
from yarl import URL

from bot.networks.matrix import MatrixSettings
from bot.transports.matrix import MatrixTransport
from handlers.events import DOCUMENT, IMAGE, Event, Media, OutgoingMessage
from handlers.ports import DeliveryError
from tests import test_e2e_encryption, test_e2e_matrix
from tests.fakes import MemoryState
from tests.homeserver import Homeserver, fresh_name
from tests.matrix_crypto_people import EncryptedPerson
from tests.matrix_people import MatrixError, Person, direct_room, q
from tests.test_e2e_matrix import Room
from tests.test_media import TELLTALES, phone_photo

pytest_plugins = ("tests.synapse_fixtures",)
pytestmark = pytest.mark.asyncio(loop_scope="session")

room = test_e2e_matrix.room  # the same scene as the other Matrix tests: bot, moderators, a supporter
CAPTION = "Our banner at the factory gate ✊"


# --- what test people do with the media repository (plain HTTP, as in tests/matrix_people.py) --------------

async def upload(person: Person, data: bytes, mime_type: str) -> str:
    url = URL(f"{person.base_url}/_matrix/media/v3/upload")
    headers = {"Authorization": f"Bearer {person.access_token}", "Content-Type": mime_type}
    async with person._http().post(url, data=io.BytesIO(data), headers=headers) as response:
        body = await response.json(content_type=None)
        if response.status >= 300:
            raise MatrixError(response.status, body.get("errcode", "?"), body.get("error", ""), "upload")
    return body["content_uri"]


async def download(person: Person, mxc: str) -> bytes:
    parsed = urlparse(mxc)
    url = URL(f"{person.base_url}/_matrix/client/v1/media/download/{q(parsed.netloc)}/{q(parsed.path.lstrip('/'))}",
              encoded=True)
    async with person._http().get(url, headers={"Authorization": f"Bearer {person.access_token}"}) as response:
        data = await response.read()
        if response.status >= 300:
            raise MatrixError(response.status, "?", data[:200].decode("utf-8", "replace"), "download")
    return data


async def send_photo(person: Person, room_id: str, data: bytes, caption: str | None,
                     filename: str = "IMG_20240301_143022.jpg") -> str:
    """An m.image the way Element sends one: `filename` the file's own name, `body` the caption (Matrix 1.10)."""
    mxc = await upload(person, data, "image/jpeg")
    content = {"msgtype": "m.image", "body": caption or filename, "filename": filename, "url": mxc,
               "info": {"mimetype": "image/jpeg", "size": len(data), "w": 40, "h": 20}}
    return await person.send(room_id, "m.room.message", content)


def files_from(events: list[dict[str, Any]], sender: str) -> list[dict[str, Any]]:
    return [event for event in events if event.get("sender") == sender and event.get("type") == "m.room.message"
            and (event.get("content") or {}).get("msgtype") in ("m.image", "m.video", "m.file")]


async def wait_for_files(person: Person, room_id: str, sender: str, count: int = 1,
                         within: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        found = files_from(await person.messages(room_id), sender)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} file(s) from {sender} never came to {room_id}")
        await asyncio.sleep(0.2)


async def bot_uploads(homeserver: Homeserver, user_id: str) -> list[dict[str, Any]]:
    admin = await homeserver._admin_person()
    listed = await admin.request("GET", f"/_synapse/admin/v1/users/{q(user_id)}/media", params={"limit": "100"})
    return list(listed.get("media", []))


def assert_clean(data: bytes) -> None:
    for telltale in TELLTALES:
        assert telltale not in data, telltale
    assert not Image.open(io.BytesIO(data)).getexif()


# --- the tests ---------------------------------------------------------------------------------------------

async def test_a_phone_photo_reaches_moderators_and_subscribers_without_its_metadata(
    room: Room, homeserver: Homeserver
) -> None:
    await room.start_bot()
    ada = await homeserver.register(fresh_name("ada"))
    subscribers = await room.subscriber_room(ada, "en")
    dm = await direct_room(room.alice, room.bot_user)
    await send_photo(room.alice, dm, phone_photo(), CAPTION)
    await room.alice.wait_for_text(dm, room.bot_user, r"#1\b")
    card = await room.card(1)
    assert CAPTION in card["content"]["body"]

    events = await room.mo.messages(room.mods)
    (shown,) = files_from(events, room.bot_user)
    order = [event["event_id"] for event in events]
    assert order.index(shown["event_id"]) < order.index(card["event_id"])  # the picture, then the card
    content = shown["content"]
    assert content["msgtype"] == "m.image" and content["m.mentions"] == {}
    assert "IMG_2024" not in json.dumps(content)  # the sender's file name stays with the bot
    assert content["info"]["mimetype"] == "image/jpeg" and (content["info"]["w"], content["info"]["h"]) == (20, 40)
    picture = await download(room.mo, content["url"])
    assert_clean(picture)
    assert content["info"]["size"] == len(picture)

    await room.mo.react(room.mods, card["event_id"], "✅")
    delivered = await ada.wait_for_text(subscribers, room.bot_user, "Letter of solidarity #1")
    assert CAPTION in delivered
    (letter,) = await wait_for_files(ada, subscribers, room.bot_user)
    in_order = [event["event_id"] for event in await ada.messages(subscribers)]
    texts = [e for e in await ada.messages(subscribers) if "Letter of solidarity" in (e["content"].get("body") or "")]
    assert in_order.index(letter["event_id"]) < in_order.index(texts[0]["event_id"])  # the picture, then the text
    assert_clean(await download(ada, letter["content"]["url"]))
    assert letter["content"]["url"] == content["url"]  # the card's upload, named again
    await room.mo.wait_for_text(room.mods, room.bot_user, "#1 delivered to 1 of 1 subscribers")
    assert len(await bot_uploads(homeserver, room.bot_user)) == 1
    (fetched,) = bot_downloads(homeserver, room.bot_user)  # Alice's photo, once, through authenticated media
    assert "/_matrix/client/v1/media/download/" in fetched


async def test_a_photo_without_a_caption_is_a_letter_of_its_own(room: Room, homeserver: Homeserver) -> None:
    await room.start_bot()
    dm = await direct_room(room.alice, room.bot_user)
    await send_photo(room.alice, dm, phone_photo(), None)  # body == filename: no caption
    await room.alice.wait_for_text(dm, room.bot_user, r"#1\b")
    card = await room.card(1)
    assert "IMG_2024" not in card["content"]["body"]
    assert files_from(await room.mo.messages(room.mods), room.bot_user)


async def test_the_same_photo_after_a_restart_is_not_uploaded_again(room: Room, homeserver: Homeserver) -> None:
    await room.start_bot()
    dm = await direct_room(room.alice, room.bot_user)
    await send_photo(room.alice, dm, phone_photo(), "the first time")
    await room.alice.wait_for_text(dm, room.bot_user, r"#1\b")
    await room.card(1)
    await room.stop_bot()
    await room.start_bot()
    await send_photo(room.alice, dm, phone_photo(), "the second time")  # cleaned, it is the same file
    await room.alice.wait_for_text(dm, room.bot_user, r"#2\b")
    await room.card(2)
    first, second = files_from(await room.mo.messages(room.mods), room.bot_user)
    assert first["content"]["url"] == second["content"]["url"]
    assert len(await bot_uploads(homeserver, room.bot_user)) == 1


async def test_a_rejected_photo_leaves_the_moderators_room(room: Room, homeserver: Homeserver) -> None:
    await room.start_bot()
    dm = await direct_room(room.alice, room.bot_user)
    await send_photo(room.alice, dm, phone_photo(), "Please reject me")
    await room.alice.wait_for_text(dm, room.bot_user, r"#1\b")
    card = await room.card(1)
    (shown,) = files_from(await room.mo.messages(room.mods), room.bot_user)
    await room.mo.react(room.mods, card["event_id"], "❌")
    await room.alice.wait_for_text(dm, room.bot_user, "#1 was not published")
    deadline = time.monotonic() + 20
    while files_from(await room.mo.messages(room.mods), room.bot_user):
        assert time.monotonic() < deadline, "the card's picture was never redacted"
        await asyncio.sleep(0.2)
    redacted = next(e for e in await room.mo.messages(room.mods) if e["event_id"] == shown["event_id"])
    assert "url" not in redacted["content"] and "redacted_because" in redacted.get("unsigned", {})


async def test_a_file_over_the_limit_is_refused_before_any_download(room: Room, homeserver: Homeserver) -> None:
    room.env = {"MEDIA_MAX_MB": "1"}
    await room.start_bot()
    dm = await direct_room(room.alice, room.bot_user)
    data = b"%PDF-1.4\n" + bytes(1_200_000)
    mxc = await upload(room.alice, data, "application/pdf")
    await room.alice.send(dm, "m.room.message", {"msgtype": "m.file", "body": "report.pdf", "filename": "report.pdf",
                                                 "url": mxc, "info": {"mimetype": "application/pdf",
                                                                      "size": len(data)}})
    await room.alice.wait_for_text(dm, room.bot_user, "too large: I can take files of up to 1 MB")
    assert not bot_downloads(homeserver, room.bot_user)


def bot_downloads(homeserver: Homeserver, user_id: str) -> list[str]:
    """The media downloads `user_id` made, as Synapse's access log lists them."""
    log = homeserver.log_path.read_text(encoding="utf-8", errors="replace")
    return [line for line in log.splitlines() if f"{{{user_id}}}" in line and "/media/download/" in line]


# --- encrypted rooms -----------------------------------------------------------------------------------------

secret = test_e2e_encryption.secret  # the encrypted scene: Mo's moderators' room and Alice's DM are encrypted


async def send_encrypted_photo(person: EncryptedPerson, room_id: str, data: bytes, caption: str) -> str:
    """An m.image as Element sends one to an encrypted room: the file encrypted, its key in the (encrypted) event."""
    ciphertext, keys = encrypt_attachment(data)
    mxc = await upload(person, ciphertext, "application/octet-stream")
    file = {**keys.serialize(), "url": mxc}
    content = {"msgtype": "m.image", "body": caption, "filename": "IMG_20240301_143022.jpg", "file": file,
               "info": {"mimetype": "image/jpeg", "size": len(data)}}
    return await person.send(room_id, "m.room.message", content)


async def decrypted_file(person: Person, content: dict[str, Any]) -> bytes:
    file = content["file"]
    ciphertext = await download(person, file["url"])
    return decrypt_attachment(ciphertext, file["key"]["k"], file["hashes"]["sha256"], file["iv"])


async def test_encrypted_rooms_get_the_photo_encrypted_and_uploaded_once(
    secret: test_e2e_encryption.Secret, homeserver: Homeserver
) -> None:
    await secret.start_bot()
    _ada_plain, ada = await secret.person("ada")
    subscribers = await secret.subscriber_room(ada, "en")
    dm = await secret.alice.direct_room(secret.bot_user)
    assert await secret.alice.is_encrypted(dm)
    await send_encrypted_photo(secret.alice, dm, phone_photo(), CAPTION)
    await secret.alice.wait_for_text(dm, secret.bot_user, r"#1\b")
    card = await secret.card(1)
    assert CAPTION in card["content"]["body"] and card["encrypted"]
    (shown,) = files_from(await secret.mo.messages(secret.mods), secret.bot_user)
    assert shown["encrypted"] and "url" not in shown["content"]  # the file's key travels inside the ciphertext
    assert_clean(await decrypted_file(secret.mo, shown["content"]))
    stored = await download(secret.mo, shown["content"]["file"]["url"])
    assert not stored.startswith(b"\xff\xd8")  # the media repository holds ciphertext, not a JPEG

    await secret.mo.react(secret.mods, card["event_id"], "✅")
    await ada.wait_for_text(subscribers, secret.bot_user, "Letter of solidarity #1")
    (letter,) = await wait_for_files(ada, subscribers, secret.bot_user)
    assert letter["encrypted"]
    assert_clean(await decrypted_file(ada, letter["content"]))
    assert letter["content"]["file"]["url"] == shown["content"]["file"]["url"]  # one encrypted upload, twice named
    await secret.mo.wait_for_text(secret.mods, secret.bot_user, "#1 delivered to 1 of 1 subscribers")
    assert len(await bot_uploads(homeserver, secret.bot_user)) == 1


# --- the transport alone: a retried send -------------------------------------------------------------------

class Shelf:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def read(self, digest: str) -> bytes:
        return self.files[digest]


async def test_a_send_retried_after_a_failure_posts_each_file_once(homeserver: Homeserver, tmp_path: Path) -> None:
    bot = await homeserver.register(fresh_name("media-relay"), exempt=True)
    mo = await homeserver.register(fresh_name("media-mo"))
    mods = await mo.create_room(name="Moderators", invite=[bot.user_id])
    await bot.close()
    settings = MatrixSettings(homeserver=homeserver.url, user=bot.user_id, password=bot.password, access_token=None,
                              moderation_room=mods)
    picture, pdf = phone_photo(), b"%PDF-1.4\n%%EOF\n"
    files = {hashlib.sha256(data).hexdigest(): data for data in (picture, pdf)}
    transport = MatrixTransport(settings, MemoryState(), tmp_path / "matrix-store", Shelf(files))

    async def nothing(event: Event) -> None:
        return None

    await transport.start(nothing)
    try:
        (photo_digest, pdf_digest) = files
        message = OutgoingMessage(
            chat_id=mods, text="with two files", idempotency_key="outbox 1 0 1.0",
            media=(Media(photo_digest, IMAGE, "image/jpeg", "letter-1-1.jpg"),
                   Media(pdf_digest, DOCUMENT, "application/pdf", "letter-1-2.pdf", metadata_removed=False)))
        sends = transport._room_send
        failed: list[str] = []

        async def failing_once(room_id: str, kind: str, content: dict[str, Any], *args: Any, **kw: Any) -> str:
            if content.get("msgtype") == "m.text" and not failed:
                failed.append(kind)  # the files went out; the text's answer was lost
                raise DeliveryError("connection lost", retryable=True)
            return await sends(room_id, kind, content, *args, **kw)

        transport._room_send = failing_once  # type: ignore[method-assign]
        with pytest.raises(DeliveryError):
            await transport.send(message)
        ref = await transport.send(message)  # the worker's retry, with the same key
        events = await mo.messages(mods)
        shown = files_from(events, bot.user_id)
        assert [event["content"]["msgtype"] for event in shown] == ["m.image", "m.file"]
        assert [e["event_id"] for e in events if e.get("sender") == bot.user_id
                and e["content"].get("msgtype") == "m.text"] == [ref.message_id]
        assert shown[1]["content"]["filename"] == "letter-1-2.pdf" and "w" not in shown[1]["content"]["info"]
        assert len(await bot_uploads(homeserver, bot.user_id)) == 2
    finally:
        await transport.stop()

"""Media on Matrix: m.image, m.video and m.file events read from people's messages and sent with cards and letters.

A file is uploaded to the media repository once per content hash: the mxc:// URI is kept (in memory and in the
state table), and every later event names it, so 10,000 subscriber rooms cost one upload. Encrypted rooms get the
file encrypted (AES-CTR, as the spec's EncryptedFile) and uploaded once too, with its key kept beside the URI: one
encrypted upload serves every encrypted room, each event carrying the key inside its own Megolm ciphertext.

An attachment's `ref` is the JSON of what `fetch` needs: the mxc:// URI and, for a file from an encrypted room,
its key, IV and hash.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nio import AsyncClient, MemoryDownloadResponse, Response, UploadResponse
from nio.crypto.attachments import decrypt_attachment, encrypt_attachment
from nio.exceptions import EncryptionError

from bot.networks.base import KeyValue, MediaReader
from handlers.events import DOCUMENT, IMAGE, VIDEO, Attachment, Media
from handlers.ports import DeliveryError, MediaRefused
from handlers.text import valid_unicode

# nio transfers with no timeout of their own: a stuck one would hold an outbox sender for ever. 50 MB at 1 MB/s.
TRANSFER_SECONDS = 120.0
log = logging.getLogger(__name__)

T = TypeVar("T", bound=Response)
Request = Callable[[Callable[[], Awaitable[Response]], type[T]], Awaitable[T]]

KINDS = {"m.image": IMAGE, "m.video": VIDEO, "m.file": DOCUMENT}
MSGTYPES = {IMAGE: "m.image", VIDEO: "m.video", DOCUMENT: "m.file"}
PLAIN_STATE = "matrix.mxc."  # + digest: the mxc:// URI of the file as stored
ENCRYPTED_STATE = "matrix.emxc."  # + digest: the EncryptedFile (URI, key, IV, hash) of the file encrypted once
CARD_MEDIA_STATE = "matrix.card-media."  # + room id + card event id: the card's media events


def attachment_of(content: dict[str, Any]) -> tuple[Attachment, str | None] | None:
    """An m.image, m.video or m.file's attachment and its caption (None: the event has none), or None when the
    event is no such file (or names none). Matrix 1.10: `body` is a caption when `filename` is there and differs."""
    kind = KINDS.get(content.get("msgtype"))  # type: ignore[arg-type]
    if kind is None:
        return None
    encrypted = content.get("file")
    if isinstance(encrypted, dict):
        url = encrypted.get("url")
        key, iv, hashes = encrypted.get("key"), encrypted.get("iv"), encrypted.get("hashes")
        if not (isinstance(key, dict) and isinstance(key.get("k"), str) and isinstance(iv, str)
                and isinstance(hashes, dict) and isinstance(hashes.get("sha256"), str)):
            return None
        ref = {"url": url, "key": key["k"], "iv": iv, "sha256": hashes["sha256"]}
    else:
        url = content.get("url")
        ref = {"url": url}
    if not isinstance(url, str) or not url.startswith("mxc://"):
        return None
    info = content.get("info") if isinstance(content.get("info"), dict) else {}
    mime_type = info.get("mimetype") if isinstance(info.get("mimetype"), str) else None
    size = info.get("size")
    size = size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 0
    body = content.get("body") if isinstance(content.get("body"), str) else None
    filename = content.get("filename") if isinstance(content.get("filename"), str) else None
    caption = body if filename is not None and body and body != filename else None
    name = filename or body
    attachment = Attachment(kind, mime_type and valid_unicode(mime_type), size,
                            valid_unicode(name) if name else None, json.dumps(ref))
    return attachment, valid_unicode(caption) if caption is not None else None


class MatrixMedia:
    def __init__(self, client: AsyncClient, state: KeyValue, shelf: MediaReader | None, request: Request) -> None:
        self.client = client
        self.state = state
        self.shelf = shelf
        self._request = request  # the transport's: an error answer becomes the DeliveryError the worker knows
        self._uploaded: dict[str, dict[str, Any]] = {}  # (state key) → the stored upload
        self._uploading: dict[str, asyncio.Lock] = {}

    # --- in --------------------------------------------------------------------------------------------

    async def fetch(self, attachment: Attachment) -> bytes:
        try:
            ref = json.loads(attachment.ref)
            url = ref["url"]
        except (ValueError, KeyError, TypeError):
            raise DeliveryError("not a file of this network", retryable=False) from None
        try:
            response = await self._request(
                lambda: asyncio.wait_for(self.client.download(mxc=url), TRANSFER_SECONDS), MemoryDownloadResponse)
        except DeliveryError as error:
            if "M_TOO_LARGE" in error.reason:  # more than the homeserver hands out
                raise MediaRefused("larger than the homeserver lets a client download") from None
            raise
        data = response.body
        if "key" not in ref:
            return data
        try:
            return await asyncio.to_thread(decrypt_attachment, data, ref["key"], ref["sha256"], ref["iv"])
        except (EncryptionError, KeyError, TypeError, ValueError) as error:
            # Not the file its event described (a wrong hash, a broken key): asked again, not taken.
            raise DeliveryError(f"the file could not be decrypted ({type(error).__name__})", retryable=False) from None

    # --- out -------------------------------------------------------------------------------------------

    async def content(self, item: Media, encrypted: bool) -> dict[str, Any]:
        """An m.room.message showing `item`, its file uploaded (once: reused from then on)."""
        upload = await self._upload(item, encrypted)
        name = item.file_name or "file"
        info: dict[str, Any] = {"mimetype": item.mime_type, "size": upload["size"]}
        if item.kind == IMAGE and "w" in upload:
            info |= {"w": upload["w"], "h": upload["h"]}
        content: dict[str, Any] = {"msgtype": MSGTYPES.get(item.kind, "m.file"), "body": name, "filename": name,
                                   "info": info, "m.mentions": {}}
        if encrypted:
            content["file"] = {key: upload[key] for key in ("url", "key", "iv", "hashes", "v")}
        else:
            content["url"] = upload["url"]
        return content

    async def _upload(self, item: Media, encrypted: bool) -> dict[str, Any]:
        key = (ENCRYPTED_STATE if encrypted else PLAIN_STATE) + item.digest
        async with self._uploading.setdefault(key, asyncio.Lock()):
            known = self._uploaded.get(key)
            if known is None and (stored := await self.state.get(key)) is not None:
                known = self._uploaded[key] = json.loads(stored)
            if known is not None:
                return known
            assert self.shelf is not None, "media to send, but no media store"
            data = self.shelf.read(item.digest)
            upload: dict[str, Any] = {"size": len(data), **_dimensions(item, data)}
            body, mime_type = data, item.mime_type
            if encrypted:
                body, keys = await asyncio.to_thread(encrypt_attachment, data)
                upload |= keys
                mime_type = "application/octet-stream"  # the server learns nothing of what it holds
            response = await self._request(_upload_request(self.client, body, mime_type), UploadResponse)
            upload["url"] = response.content_uri
            self._uploaded[key] = upload
            await self.state.put(key, json.dumps(upload))
            log.debug("matrix: uploaded %s (%d bytes, %s)", item.digest[:12], len(body),
                      "encrypted" if encrypted else "plain")
            return upload

    # --- a card's media ---------------------------------------------------------------------------------

    async def remember_card_media(self, room_id: str, card_event_id: str, event_ids: list[str]) -> None:
        """Which events show a card's media: a scrub (a rejected letter) redacts them with the text."""
        if event_ids:
            await self.state.put(f"{CARD_MEDIA_STATE}{room_id}.{card_event_id}", json.dumps(event_ids))

    async def card_media(self, room_id: str, card_event_id: str) -> list[str]:
        stored = await self.state.get(f"{CARD_MEDIA_STATE}{room_id}.{card_event_id}")
        return list(json.loads(stored)) if stored else []


def _upload_request(client: AsyncClient, body: bytes, mime_type: str) -> Callable[[], Awaitable[Response]]:
    """One upload, no file name: the neutral name is in the event, and the media repository need not keep it."""

    async def upload() -> Response:
        response, _keys = await asyncio.wait_for(
            client.upload(io.BytesIO(body), content_type=mime_type, filesize=len(body)), TRANSFER_SECONDS)
        return response

    return upload


def _dimensions(item: Media, data: bytes) -> dict[str, int]:
    """A picture's width and height, read from its header (the file was written by the bot's own cleaning)."""
    if item.kind != IMAGE:
        return {}
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as picture:
            width, height = picture.size
    except Exception:  # an unknown format: the event goes without them
        return {}
    return {"w": width, "h": height}


__all__ = ["CARD_MEDIA_STATE", "MatrixMedia", "attachment_of"]

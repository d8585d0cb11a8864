"""Media on Telegram: photos, videos and documents read from people's messages and sent with cards and letters.

A file is uploaded once: Telegram answers with a file_id, kept by content hash, and every later send names it,
so 10,000 subscribers cost one upload. A card's media go before its text, which carries the buttons (Telegram's
buttons sit under one message, and a caption is too short for a card); a letter's media carry its text as their
caption when it fits in 1,024 characters, else the text follows as a message of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from telegram import (
    Bot,
    InputFile,
    InputMediaDocument,
    InputMediaPhoto,
    InputMediaVideo,
    LinkPreviewOptions,
    Message,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError

from bot.markup import render_telegram_html
from bot.networks.base import KeyValue, MediaReader
from handlers.events import DOCUMENT, IMAGE, VIDEO, Attachment, Media, OutgoingMessage
from handlers.ports import MediaRefused
from handlers.text import utf16_len

log = logging.getLogger(__name__)

MAX_CAPTION = 1024
# sendPhoto takes pictures of up to 10 MB; a larger one (a big PNG) goes as a document, as Telegram would have it.
MAX_PHOTO = 10 * 1024 * 1024
MAX_ALBUM = 10
# What the cloud Bot API lets a bot download (getFile); larger files are refused before any request.
MAX_DOWNLOAD = 20 * 1024 * 1024
FILE_ID_STATE = "telegram.file."
CARD_MEDIA_STATE = "telegram.card-media."

Sender = Any  # a Bot.send_* method


def attachments_of(message: Message) -> tuple[Attachment, ...]:
    """A message's photo (its largest size), video or document, as the handlers see them."""
    if message.photo:
        largest = message.photo[-1]
        return (Attachment(IMAGE, "image/jpeg", largest.file_size or 0, None, largest.file_id),)
    if message.video is not None:
        video = message.video
        return (Attachment(VIDEO, video.mime_type, video.file_size or 0, video.file_name, video.file_id),)
    if message.document is not None:
        document = message.document
        return (Attachment(DOCUMENT, document.mime_type, document.file_size or 0, document.file_name,
                           document.file_id),)
    return ()


class TelegramMedia:
    def __init__(self, bot: Bot, state: KeyValue | None, shelf: MediaReader | None) -> None:
        self.bot = bot
        self.state = state
        self.shelf = shelf
        self._file_ids: dict[str, str] = {}
        self._uploading: dict[str, asyncio.Lock] = {}

    async def fetch(self, attachment: Attachment) -> bytes:
        if attachment.size > MAX_DOWNLOAD:
            raise MediaRefused("larger than Telegram lets a bot download")
        try:
            file = await self.bot.get_file(attachment.ref)
            return bytes(await file.download_as_bytearray())
        except BadRequest as error:
            if "too big" in error.message.lower():
                raise MediaRefused("larger than Telegram lets a bot download") from None
            raise

    async def send_letter(self, message: OutgoingMessage, options: dict[str, Any]) -> list[Message]:
        """The media with the text as their caption where it fits, else the text right after them."""
        text = render_telegram_html(message.title, message.text, message.footer, message.quoted)
        as_caption = utf16_len(text) <= MAX_CAPTION
        sent = await self._media(message.chat_id, message.media, text if as_caption else None, options)
        if not as_caption:
            sent.append(await self.bot.send_message(
                chat_id=message.chat_id, text=text, parse_mode=ParseMode.HTML,
                link_preview_options=LinkPreviewOptions(is_disabled=True), **options))
        return sent

    async def send_bare(self, chat_id: str, media: Sequence[Media], options: dict[str, Any]) -> list[Message]:
        """The media alone (a card's, whose text follows with the buttons)."""
        return await self._media(chat_id, media, None, options)

    async def remember_card_media(self, chat_id: str, card_message_id: int, media_ids: list[int]) -> None:
        """Which messages show a card's media: a scrub (a rejected letter) deletes them with the text."""
        if self.state is not None and media_ids:
            await self.state.put(f"{CARD_MEDIA_STATE}{chat_id}.{card_message_id}", json.dumps(media_ids))

    async def delete_card_media(self, chat_id: str, card_message_id: int) -> None:
        if self.state is None:
            return
        stored = await self.state.get(f"{CARD_MEDIA_STATE}{chat_id}.{card_message_id}")
        for message_id in json.loads(stored) if stored else []:
            try:
                await self.bot.delete_message(chat_id=chat_id, message_id=message_id)
            except TelegramError as error:
                log.info("telegram: a card's media could not be deleted (%s)", type(error).__name__)

    async def _media(
        self, chat_id: str, media: Sequence[Media], caption: str | None, options: dict[str, Any]
    ) -> list[Message]:
        if len(media) == 1:
            return [await self._one(chat_id, media[0], caption, options)]
        # Documents cannot share an album with pictures: the pictures as one, then the documents as another.
        pictures = [item for item in media if _sent_as(item) in (IMAGE, VIDEO)]
        documents = [item for item in media if _sent_as(item) == DOCUMENT]
        sent = await self._albums(chat_id, pictures, caption, options) if pictures else []
        return sent + await self._albums(chat_id, documents, None if pictures else caption, options)

    async def _one(self, chat_id: str, item: Media, caption: str | None, options: dict[str, Any]) -> Message:
        method, field = _METHODS[_sent_as(item)]
        send: Sender = getattr(self.bot, method)
        arguments = {"chat_id": chat_id, "caption": caption, "parse_mode": ParseMode.HTML if caption else None,
                     **options}
        known = await self._known(item.digest)
        if known is None:
            # Only the first send uploads: those that come while it is on its way wait for its file_id, and
            # once it is known sends go side by side again.
            async with self._lock(item.digest):
                known = await self._known(item.digest)
                if known is None:
                    sent = await send(**arguments, **{field: self._upload(item)})
                    await self._keep_file_id(item.digest, _file_id(sent))
                    return sent
        return await send(**arguments, **{field: known})

    async def _albums(
        self, chat_id: str, media: list[Media], caption: str | None, options: dict[str, Any]
    ) -> list[Message]:
        sent: list[Message] = []
        for start in range(0, len(media), MAX_ALBUM):
            chunk = media[start:start + MAX_ALBUM]
            if len(chunk) == 1:  # Telegram's albums have 2 to 10 items
                sent.append(await self._one(chat_id, chunk[0], caption if start == 0 else None, options))
                continue
            sent += await self._album(chat_id, chunk, caption if start == 0 else None, options)
        return sent

    async def _album(
        self, chat_id: str, media: list[Media], caption: str | None, options: dict[str, Any]
    ) -> list[Message]:
        if any([await self._known(item.digest) is None for item in media]):
            async with self._lock(" ".join(item.digest for item in media)):  # one upload of an album, as above
                return await self._album_now(chat_id, media, caption, options)
        return await self._album_now(chat_id, media, caption, options)

    async def _album_now(
        self, chat_id: str, media: list[Media], caption: str | None, options: dict[str, Any]
    ) -> list[Message]:
        known = [await self._known(item.digest) for item in media]
        inputs = [
            # Bytes, not an InputFile: PTB then sends them as attach:// parts, as albums need.
            _INPUTS[_sent_as(item)](media=file_id or self._bytes(item), filename=None if file_id else _name(item),
                               caption=caption if index == 0 else None,
                               parse_mode=ParseMode.HTML if caption and index == 0 else None)
            for index, (item, file_id) in enumerate(zip(media, known, strict=True))
        ]
        options = {key: value for key, value in options.items() if key != "reply_markup"}
        sent = list(await self.bot.send_media_group(chat_id=chat_id, media=inputs, **options))
        for item, file_id, message in zip(media, known, sent, strict=False):
            if file_id is None:
                await self._keep_file_id(item.digest, _file_id(message))
        return sent

    def _upload(self, item: Media) -> InputFile:
        return InputFile(self._bytes(item), filename=_name(item))

    def _bytes(self, item: Media) -> bytes:
        assert self.shelf is not None, "media to send, but no media store"
        return self.shelf.read(item.digest)

    def _lock(self, digest: str) -> asyncio.Lock:
        # One upload per file: the sends that come while it is on its way wait for its file_id.
        return self._uploading.setdefault(digest, asyncio.Lock())

    async def _known(self, digest: str) -> str | None:
        return self._file_ids.get(digest) or await self._stored_file_id(digest)

    async def _stored_file_id(self, digest: str) -> str | None:
        if self.state is None:
            return None
        found = await self.state.get(FILE_ID_STATE + digest)
        if found is not None:
            self._file_ids[digest] = found
        return found

    async def _keep_file_id(self, digest: str, file_id: str | None) -> None:
        if file_id is None:
            return
        self._file_ids[digest] = file_id
        if self.state is not None:
            await self.state.put(FILE_ID_STATE + digest, file_id)


_METHODS = {IMAGE: ("send_photo", "photo"), VIDEO: ("send_video", "video"), DOCUMENT: ("send_document", "document")}
_INPUTS: dict[str, Any] = {IMAGE: InputMediaPhoto, VIDEO: InputMediaVideo, DOCUMENT: InputMediaDocument}


def _sent_as(item: Media) -> str:
    return DOCUMENT if item.kind == IMAGE and item.size > MAX_PHOTO else item.kind


def _name(item: Media) -> str:
    return item.file_name or "file"


def _file_id(message: Message) -> str | None:
    if message.photo:
        return message.photo[-1].file_id
    for attachment in (message.video, message.document):
        if attachment is not None:
            return attachment.file_id
    return None

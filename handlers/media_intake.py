"""The files of a media letter: checked against the size limit before any download, fetched through the network
that received them, cleaned of metadata and stored (the shelf), or refused with an answer that says why.

Runs before the letter's transaction: a download waits for a network, and nothing inside a transaction may.
"""

from __future__ import annotations

import logging

from handlers.common import gettext_for, reader_language, refuse
from handlers.context import Context
from handlers.events import Attachment, IncomingMessage, Media
from handlers.loggable import without_ids
from handlers.ports import DeliveryError, MediaRefused
from storage.media import StoredMedia

log = logging.getLogger(__name__)

MB = 1024 * 1024


async def take(ctx: Context, message: IncomingMessage) -> list[Media] | None:
    """The message's media, kept; None when one was refused (the sender has been answered)."""
    assert ctx.media is not None
    limit = ctx.policy.media_max_bytes
    if any(attachment.size > limit for attachment in message.attachments):
        await refuse(ctx, message, "media size", _too_large(ctx, message, limit))
        return None
    kept = []
    for attachment in message.attachments:
        media = await _keep(ctx, message, attachment)
        if media is None:
            return None
        kept.append(media)
    return kept


async def _keep(ctx: Context, message: IncomingMessage, attachment: Attachment) -> Media | None:
    assert ctx.media is not None
    _ = gettext_for(ctx, reader_language(ctx, message))
    try:
        data = await ctx.network(message.chat.platform).fetch(attachment)
    except MediaRefused as refused:
        log.info("a file was not fetched: %s", refused.reason)
        await refuse(ctx, message, "media size", _too_large(ctx, message, ctx.policy.media_max_bytes))
        return None
    except DeliveryError as error:
        log.info("a file could not be fetched (%s)", without_ids(error.reason))  # a server's words may quote ids
        await refuse(ctx, message, "media fetch", _("I could not download your file. Please send it again."))
        return None
    if len(data) > ctx.policy.media_max_bytes:  # the network's size was wrong, or it gave none
        await refuse(ctx, message, "media size", _too_large(ctx, message, ctx.policy.media_max_bytes))
        return None
    try:
        return await ctx.media.keep(data, attachment.mime_type, attachment.file_name, attachment.kind)
    except MediaRefused as refused:
        log.info("a file was refused: %s", refused.reason)
        await refuse(ctx, message, "media refused", _(
            "I could not read that picture: it may be damaged, or too large to open. Please send it again, or "
            "in another format."))
        return None


def _too_large(ctx: Context, message: IncomingMessage, limit: int) -> str:
    _ = gettext_for(ctx, reader_language(ctx, message))
    return _("That file is too large: I can take files of up to {limit} MB.").format(limit=f"{limit / MB:g}")


def stored(media: Media) -> StoredMedia:
    return StoredMedia(media.digest, media.kind, media.mime_type, media.size, media.metadata_removed)


def outgoing(letter_id: int, media: list[StoredMedia]) -> tuple[Media, ...]:
    """The letter's media as messages carry them, under neutral names: never the sender's file name."""
    return tuple(
        Media(item.digest, item.kind, item.mime_type, f"letter-{letter_id}-{index + 1}{_extension(item.mime_type)}",
              item.metadata_removed, item.size)
        for index, item in enumerate(media)
    )


_EXTENSIONS = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif", "video/mp4": ".mp4",
    "video/quicktime": ".mov", "video/webm": ".webm", "application/pdf": ".pdf", "text/plain": ".txt",
}


def _extension(mime_type: str) -> str:
    return _EXTENSIONS.get(mime_type, "")

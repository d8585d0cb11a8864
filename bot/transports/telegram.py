"""Telegram through python-telegram-bot: updates become neutral events, neutral replies become Bot API calls.

The Application is started by hand (initialize / start / updater.start_polling) rather than with run_polling,
so other transports and the outbox worker share the same event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from telegram import (
    CallbackQuery,
    ChatMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    Update,
)
from telegram import (
    Chat as TgChat,
)
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler

from bot.markup import render_telegram_html
from bot.networks.base import KeyValue, MediaReader
from bot.networks.telegram import TelegramSettings
from bot.networks.telegram import owns as owns_reference
from bot.transports.telegram_bot import RelayBot
from bot.transports.telegram_media import MAX_CAPTION, TelegramMedia, attachments_of
from bot.transports.telegram_request import REQUESTS
from handlers.events import (
    ActionPressed,
    Attachment,
    ChatKind,
    ChatRef,
    Event,
    IncomingMessage,
    MembershipChanged,
    MessageEdited,
    OutgoingMessage,
    RemoteRef,
    Role,
    UserRef,
)
from handlers.loggable import without_ids
from handlers.ports import Capability, DeliveryError, Dispatch
from handlers.text import defuse_mentions, utf16_len, valid_unicode

log = logging.getLogger(__name__)

PLATFORM = "telegram"
MAX_TEXT = 4096
POLL_TIMEOUT = timedelta(seconds=25)
NO_LINK_PREVIEW = LinkPreviewOptions(is_disabled=True)  # immutable, so one for every send
NO_LINK_PREVIEW_JSON = json.dumps(NO_LINK_PREVIEW.to_dict())  # as PTB encodes it, once, for the lean send
RENDERINGS_KEPT = 8

_KINDS = {
    ChatType.PRIVATE: ChatKind.PRIVATE,
    ChatType.GROUP: ChatKind.GROUP,
    ChatType.SUPERGROUP: ChatKind.GROUP,
    ChatType.CHANNEL: ChatKind.CHANNEL,
}


class TelegramTransport:
    platform = PLATFORM
    command_prefix = "/"
    max_text_length = MAX_TEXT
    # Buttons with private answers; a scrub is an edit, which replaces the text in place.
    capabilities = frozenset({Capability.BUTTONS, Capability.PRESS_ANSWERS, Capability.SCRUB_IN_PLACE})

    def __init__(
        self, settings: TelegramSettings, connection_pool_size: int = 16, state: KeyValue | None = None,
        media: MediaReader | None = None,
    ) -> None:
        self.settings = settings
        bot = RelayBot(
            token=settings.token,
            base_url=f"{settings.api_url}/bot",
            base_file_url=f"{settings.api_url}/file/bot",
            request=REQUESTS[settings.http_backend](connection_pool_size=connection_pool_size, pool_timeout=30),
            get_updates_request=REQUESTS[settings.http_backend](connection_pool_size=1),
        )
        self.application: Application = ApplicationBuilder().bot(bot).build()
        self.media = TelegramMedia(bot, state, media)
        self._dispatch: Dispatch | None = None
        self._handling: set[asyncio.Future[None]] = set()
        self._bot_id: int | None = None
        self._rendered: dict[tuple[str | None, str, str | None, bool], str] = {}

    @property
    def bot(self):
        return self.application.bot

    @property
    def bot_username(self) -> str | None:
        """Commands in groups may be addressed to a bot: `/approve@RelayBot 12`."""
        return self.bot.username if self._bot_id is not None else None

    def text_length(self, text: str) -> int:
        return utf16_len(defuse_mentions(text))  # as sent: a word joiner after every `@name`

    async def start(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        self.application.add_handler(TypeHandler(Update, self._on_update))
        await self._initialize()
        self._bot_id = self.bot.id
        await self._refuse_public_moderation_chat()
        await self.application.start()
        assert self.application.updater is not None
        await self.application.updater.start_polling(
            timeout=POLL_TIMEOUT, bootstrap_retries=-1, error_callback=self._polling_error
        )
        log.info("telegram: polling as @%s", self.bot.username)

    async def _initialize(self) -> None:
        """getMe until it answers: a Bot API that is down at start-up is waited for, not fatal."""
        delay = 1.0
        while True:
            try:
                await self.application.initialize()
                return
            except (NetworkError, TimedOut) as error:
                reason = without_ids(_reason(error))
                log.warning("telegram: Bot API not reachable (%s); retrying in %.0f s", reason, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)

    async def _refuse_public_moderation_chat(self) -> None:
        """A chat with a username can be found and read by anyone: letters and moderators' names with them."""
        problem = await self.public_moderation_chat()
        if problem is not None:
            raise PublicModerationRoom(problem)

    async def public_moderation_chat(self) -> str | None:
        """The problem, in one line naming the setting, when the moderation chat is public; else None."""
        try:
            chat = await self.bot.get_chat(_chat_id(self.settings.moderation_chat))
        except TelegramError as error:
            log.warning("telegram: could not look at the moderation chat: %s", without_ids(_reason(error)))
            return None
        if not chat.username:
            return None
        return (f"TELEGRAM_MODERATION_CHAT: the moderators' chat is public (@{chat.username}): anyone could read "
                "the letters there; make it private (remove its public link) and start again")

    @staticmethod
    def _polling_error(error: TelegramError) -> None:
        log.warning("telegram: polling failed, retrying: %s", without_ids(_reason(error)))

    async def stop_receiving(self) -> None:
        """Polling stops; the updates PTB fetched (and so confirmed to Telegram) are dispatched before this returns,
        so that the bot's drain handles them: an update fetched and not handled would be lost."""
        updater = self.application.updater
        if updater is not None and updater.running:
            await updater.stop()
        if self.application.running:
            await self.application.stop()

    async def stop(self) -> None:
        updater = self.application.updater
        if updater is not None and updater.running:
            await updater.stop()
        if self.application.running:
            await self.application.stop()
        await self.application.shutdown()

    async def send(self, message: OutgoingMessage) -> RemoteRef:
        """One message, sent at once: the outbox worker paced it (Telegram has no idempotent sends, so a retry
        after a lost answer can post twice; the worker retries only what is not recorded as sent)."""
        options = {
            "disable_notification": True if message.silent else None,  # None: left out, Telegram's default
            "allow_paid_broadcast": True if message.broadcast and self.settings.paid_broadcast else None,
        }
        try:
            if message.media:
                return await self._send_with_media(message, options)
            chat_id, message_id = await self._send_text(message, options)
        except TelegramError as error:
            raise normalise(error) from error
        return RemoteRef(PLATFORM, str(chat_id), str(message_id))

    async def _send_text(self, message: OutgoingMessage, options: dict[str, Any]) -> tuple[int, int]:
        return await self.bot.send_text({
            "chat_id": _chat_id(message.chat_id),
            "text": self._html(message),
            "parse_mode": ParseMode.HTML,
            "reply_markup": _keyboard(message),
            "link_preview_options": NO_LINK_PREVIEW_JSON,
            **options,
        })

    def _html(self, message: OutgoingMessage) -> str:
        """A broadcast sends one letter to every chat: its HTML (up to ~0.15 ms for 4,000 characters) is made once.
        A few renderings are kept, in this process only, and none for longer than the next few letters."""
        key = (message.title, message.text, message.footer, message.quoted)
        html = self._rendered.get(key)
        if html is None:
            if len(self._rendered) >= RENDERINGS_KEPT:
                self._rendered.clear()
            html = self._rendered[key] = render_telegram_html(*key)
        return html

    async def _send_with_media(self, message: OutgoingMessage, options: dict[str, Any]) -> RemoteRef:
        """A letter: its media with the text as caption. A card: its media, then its text with the buttons, which
        is the card's message (edited as decisions come; a caption could not hold it)."""
        if message.broadcast:
            sent = await self.media.send_letter(message, options)
            return RemoteRef(PLATFORM, str(sent[-1].chat_id), str(sent[-1].message_id))
        shown = await self.media.send_bare(message.chat_id, message.media, options)
        chat_id, message_id = await self._send_text(message, options)
        await self.media.remember_card_media(str(chat_id), message_id, [m.message_id for m in shown])
        return RemoteRef(PLATFORM, str(chat_id), str(message_id))

    async def fetch(self, attachment: Attachment) -> bytes:
        try:
            return await self.media.fetch(attachment)
        except TelegramError as error:
            raise normalise(error) from error

    async def edit(self, ref: RemoteRef, message: OutgoingMessage) -> None:
        try:
            await self.bot.edit_message_text(
                chat_id=_chat_id(ref.chat_id),
                message_id=int(ref.message_id),
                text=self._html(message),
                parse_mode=ParseMode.HTML,
                reply_markup=_keyboard(message),
                link_preview_options=NO_LINK_PREVIEW,
            )
        except BadRequest as error:
            if "not modified" in error.message.lower():
                return  # already shows this: the goal is reached
            raise normalise(error) from error
        except TelegramError as error:
            raise normalise(error) from error

    async def scrub(self, ref: RemoteRef, message: OutgoingMessage) -> None:
        """Show `message` instead of what `ref` showed, leaving nothing of the old text (Telegram keeps no edit
        history for others to read): an edit; the card's media messages are deleted."""
        await self.edit(ref, replace(message, media=()))
        await self.media.delete_card_media(ref.chat_id, int(ref.message_id))

    async def role_of(self, chat_id: str, user_id: str) -> Role:
        try:
            member = await self.bot.get_chat_member(_chat_id(chat_id), int(user_id))
        except TelegramError as error:
            log.info("telegram: a membership lookup failed: %s", without_ids(_reason(error)))
            log.debug("telegram: member %s of %s unknown: %s", user_id, chat_id, error)
            return Role.OUTSIDER
        return _role(member)

    def owns(self, reference: str) -> bool:
        return owns_reference(reference)

    async def resolve_chat(self, reference: str) -> ChatRef | None:
        try:
            chat = await self.bot.get_chat(_chat_id(reference))
        except TelegramError as error:
            log.info("telegram: a chat lookup failed: %s", without_ids(_reason(error)))
            log.debug("telegram: chat %s not found: %s", reference, error)
            return None
        return _chat_ref(chat)

    async def can_post(self, chat_id: str) -> bool:
        try:
            member = await self.bot.get_chat_member(_chat_id(chat_id), self.bot.id)
        except TelegramError:
            return False
        if member.status == ChatMemberStatus.OWNER:
            return True
        if member.status == ChatMemberStatus.ADMINISTRATOR:
            return member.can_post_messages is not False
        if member.status == ChatMemberStatus.MEMBER:
            return True
        return member.status == ChatMemberStatus.RESTRICTED and bool(member.can_send_messages)

    async def forget_chat(self, chat_id: str) -> None:
        return None  # the platform keeps the chat; the bot cannot delete it

    async def leave(self, chat_id: str) -> None:
        try:
            await self.bot.leave_chat(_chat_id(chat_id))
        except TelegramError as error:
            log.info("telegram: could not leave a chat: %s", without_ids(_reason(error)))

    async def answer_press(self, token: str | None, text: str) -> None:
        if token is None:
            return
        try:
            await self.bot.answer_callback_query(token, text=text[:200])
        except TelegramError as error:
            log.info("telegram: callback answer failed: %s", without_ids(_reason(error)))

    async def check(self) -> list[str]:
        """Problems that would stop the bot from working, one line each, for `--check`."""
        try:
            await self.application.initialize()
        except TelegramError as error:
            # The Application counts as shut down already, but the bot's HTTP connections are open.
            await self.bot.shutdown()
            return [f"TELEGRAM_TOKEN / TELEGRAM_API_URL: getMe failed: {error}"]
        try:
            print(f"telegram: the token belongs to @{self.bot.username}")
            chat = self.settings.moderation_chat
            if await self.resolve_chat(chat) is None:
                return [f"TELEGRAM_MODERATION_CHAT: chat {chat} not found (is the bot a member?)"]
            if not await self.can_post(chat):
                return [f"TELEGRAM_MODERATION_CHAT: the bot can't post in chat {chat}"]
            public = await self.public_moderation_chat()
            return [public] if public else []
        finally:
            await self.application.shutdown()

    async def _on_update(self, update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        """Handed over without waiting for it to be handled: PTB takes updates one at a time, so waiting here
        would put every sender behind the slowest (a flood). PTB confirms an update to Telegram when it fetches
        it either way."""
        try:
            event = to_event(update)
        except Exception as error:  # a layout the transport does not know: that update only is lost
            log.warning("telegram: update %d could not be read (%s)", update.update_id, type(error).__name__)
            return
        if event is not None and self._dispatch is not None:
            handled = asyncio.ensure_future(self._dispatch(event))
            self._handling.add(handled)
            handled.add_done_callback(self._handling.discard)


class PublicModerationRoom(RuntimeError):
    """The moderators' room can be read by anyone: the bot must not start."""


def _chat_id(chat_id: str) -> int | str:
    return int(chat_id) if chat_id.lstrip("-").isdigit() else chat_id


def _keyboard(message: OutgoingMessage) -> InlineKeyboardMarkup | None:
    if not message.actions:
        return None
    buttons = [InlineKeyboardButton(action.label, callback_data=action.data) for action in message.actions]
    return InlineKeyboardMarkup([buttons])


def _role(member: ChatMember) -> Role:
    if member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR):
        return Role.ADMIN
    if member.status == ChatMemberStatus.MEMBER:
        return Role.MEMBER
    if member.status == ChatMemberStatus.RESTRICTED and getattr(member, "is_member", False):
        return Role.MEMBER
    return Role.OUTSIDER


def normalise(error: TelegramError) -> DeliveryError:
    """PTB's exceptions → DeliveryError, so only the outbox worker decides about retries."""
    if isinstance(error, RetryAfter):
        retry_after = error.retry_after
        seconds = retry_after.total_seconds() if isinstance(retry_after, timedelta) else float(retry_after)
        return DeliveryError(f"rate limited for {seconds:g} s", retryable=True, retry_after=seconds)
    if isinstance(error, ChatMigrated):
        return DeliveryError("group became a supergroup", retryable=True, moved_to=str(error.new_chat_id))
    if isinstance(error, Forbidden):
        return DeliveryError(_reason(error), retryable=False, gone=True)
    if isinstance(error, BadRequest):
        gone = "chat not found" in error.message.lower() or "deactivated" in error.message.lower()
        return DeliveryError(_reason(error), retryable=False, gone=gone)
    # NetworkError, TimedOut, 5xx (PTB raises NetworkError for those), anything else: try again later.
    return DeliveryError(_reason(error), retryable=True)


def _reason(error: TelegramError) -> str:
    return error.message.removeprefix("Forbidden: ").removeprefix("Bad Request: ")


def to_event(update: Update) -> Event | None:
    if update.callback_query is not None:
        return _press(update.callback_query)
    if update.my_chat_member is not None:
        change = update.my_chat_member
        if change.new_chat_member is None:
            return None
        status = change.new_chat_member.status
        active = status not in (ChatMemberStatus.LEFT, ChatMemberStatus.BANNED)
        return MembershipChanged(_chat_ref(change.chat), active, "bot was removed" if not active else "")
    if update.edited_message is not None:
        return _edited(update.edited_message)
    message = update.message or update.channel_post
    if message is None:
        return None
    return _incoming(update.update_id, message)


def _edited(message: Message) -> MessageEdited | None:
    """A person's edit of a message they sent; channel posts (no author) and bots' own messages are not letters."""
    if message.from_user is None or message.chat.type == ChatType.CHANNEL:
        return None
    at = message.edit_date or message.date
    return MessageEdited(
        event_id=f"edit:{message.chat_id}:{message.message_id}:{at.timestamp():.0f}",
        chat=_chat_ref(message.chat),
        sender=_user(message.from_user),
        message_id=str(message.message_id),
        text=_text(message.text),
        received_at=at.timestamp(),
        length=utf16_len(message.text) if message.text else 0,
    )


def _incoming(update_id: int, message: Message) -> IncomingMessage:
    attachments = attachments_of(message)
    text = _text(message.caption if attachments else message.text)
    content_kind = "text" if text is not None and not attachments else _content_kind(message)
    return IncomingMessage(
        event_id=f"message:{message.chat_id}:{message.message_id}",
        chat=_chat_ref(message.chat),
        sender=_user(message.from_user) if message.from_user and message.chat.type != ChatType.CHANNEL else None,
        text=text,
        message_id=str(message.message_id),
        received_at=message.date.timestamp(),
        content_kind=content_kind,
        length=utf16_len(text) if text else 0,
        limit=MAX_CAPTION if attachments else MAX_TEXT,
        attachments=attachments,
        media_group=message.media_group_id if attachments else None,
    )


def _content_kind(message: Message) -> str:
    attachment = message.effective_attachment
    if attachment is None:
        return "service"
    return type(attachment).__name__.lower() if not isinstance(attachment, tuple) else "photo"


def _press(query: CallbackQuery) -> ActionPressed | None:
    message = query.message
    if message is None or not isinstance(query.data, str) or query.from_user is None:
        return None
    return ActionPressed(
        event_id=f"callback:{query.id}",
        chat=_chat_ref(message.chat),
        user=_user(query.from_user),
        message=RemoteRef(PLATFORM, str(message.chat.id), str(message.message_id)),
        data=query.data,
        token=query.id,
    )


def _text(text: str | None) -> str | None:
    return valid_unicode(text) if isinstance(text, str) else None


def _chat_ref(chat: TgChat) -> ChatRef:
    # A private chat's title would be a person's name: keep it out of storage and reports.
    title = None if chat.type == ChatType.PRIVATE else chat.title or (f"@{chat.username}" if chat.username else None)
    return ChatRef(PLATFORM, str(chat.id), _KINDS.get(chat.type, ChatKind.GROUP), _text(title))


def _user(user) -> UserRef:
    name = user.full_name or (f"@{user.username}" if user.username else str(user.id))
    language = user.language_code if isinstance(user.language_code, str) and user.language_code.isascii() else None
    return UserRef(PLATFORM, str(user.id), _text(name) or str(user.id), language)

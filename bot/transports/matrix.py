"""Matrix through matrix-nio: a sync loop whose events become neutral events; replies become room sends and edits.

The sync token is stored after each batch is handled, so a restart neither replays nor misses events. The
session (device id, access token) is kept too: a stable device keeps transaction ids meaningful across restarts,
which is what makes a retried send impossible to duplicate, and keeps the device's keys and Olm sessions (in nio's
store beside the session file) valid. Encrypted rooms are read and written through nio's Olm machine
(`matrix_crypto`); with encryption off or unavailable they are refused, and the people in them told in plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from nio import (
    Api,
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    JoinedMembersResponse,
    LoginResponse,
    LogoutResponse,
    MegolmEvent,
    MessageDirection,
    ReactionEvent,
    RedactionEvent,
    Response,
    RoomEncryptionEvent,
    RoomGetStateEventResponse,
    RoomGetStateResponse,
    RoomMemberEvent,
    RoomMessage,
    RoomMessagesResponse,
    RoomMessageText,
    RoomRedactResponse,
    RoomResolveAliasResponse,
    RoomSendResponse,
    SyncResponse,
    UnknownEncryptedEvent,
)

# Not exported by the package (0.26), though AsyncClient.room_get_event_relations itself uses them.
from nio.api import RelationshipType
from nio.exceptions import EncryptionError, LocalProtocolError, OlmUnverifiedDeviceError, SendRetryError
from nio.responses import RoomEventRelationsResponse

from bot.files import PrivateFile, keep_private
from bot.networks.base import KeyValue, MediaReader
from bot.networks.matrix import MatrixSettings
from bot.networks.matrix import owns as owns_reference
from bot.transports.matrix_crypto import KeyChores, Undecrypted, encryption_unavailable, fingerprint
from bot.transports.matrix_media import MatrixMedia, attachment_of
from handlers.events import (
    ENCRYPTED,
    INVITED,
    UNDECRYPTABLE,
    ActionPressed,
    Attachment,
    ChatKind,
    ChatRef,
    Event,
    IncomingMessage,
    MembershipChanged,
    MessageDeleted,
    MessageEdited,
    OutgoingMessage,
    RemoteRef,
    Role,
    UserRef,
)
from handlers.loggable import without_ids
from handlers.ports import Capability, DeliveryError, Dispatch
from handlers.text import is_clean_id, valid_unicode

log = logging.getLogger(__name__)

PLATFORM = "matrix"
# An event may be 65,536 bytes of JSON with the server's own fields; what the bot sends stays under 60,000, and
# under 63,500 once encrypted (the ciphertext is base64: 4/3 of the plain event, and the text is in it once).
MAX_EVENT_BYTES = 60_000
MAX_ENCRYPTED_EVENT_BYTES = 63_500
# A text's share of that, measured as sent (text_length): an edit carries the text twice (the new content and
# its fallback), each as `body` and `formatted_body`; encrypted, that grows by a third; the rest is left to
# titles, footers and the envelope.
MAX_TEXT_BYTES = 22_000
SYNC_TIMEOUT_MS = 30_000
ADMIN_LEVEL = 50
KIND_CACHE_SECONDS = 300
# Room versions before 12 list every creator in m.room.power_levels; from 12 on, creators stand above it.
PRE_CREATOR_VERSIONS = frozenset(str(version) for version in range(1, 12))
LEGACY_SESSION_KEY = "matrix.session"
SCRUB_REASON = "letter text removed"
RELATIONS_PAGE = 50

PINNED_ROOM_KEY = "matrix.moderation_room"
# A room the bot has just joined is known to nio (members, encryption) only after the next sync, which the join
# itself ends: a send to it waits that long at most.
NEW_ROOM_WAIT = 10.0
PICKLE_KEY_FILE = "pickle.key"
# How far back a cut-short timeline is completed after downtime (per room and sync).
MAX_MISSED = 5_000

T = TypeVar("T", bound=Response)


class PublicModerationRoom(RuntimeError):
    """The moderators' room can be joined or read by anyone: the bot must not start."""


class ModerationRoomMoved(RuntimeError):
    """The moderation room's alias points to another room than the one pinned at first start."""


class EncryptedRoomRefused(RuntimeError):
    """The moderation room is encrypted and the bot cannot encrypt: it must not start."""


class MatrixTransport:
    platform = PLATFORM
    command_prefix = "!"
    max_text_length = MAX_TEXT_BYTES
    # Actions are reactions, with no private answer; clients show a redacted card as "message deleted", so its new
    # state must be posted on its own (no SCRUB_IN_PLACE).
    capabilities = frozenset({Capability.REACTIONS})
    bot_username = None  # Matrix commands name no bot

    def __init__(
        self, settings: MatrixSettings, state: KeyValue, store_path: Path, media: MediaReader | None = None
    ) -> None:
        self.settings = settings
        self.state = state
        self.store_path = store_path
        # The access token is a credential: kept in a private file, not in the database (backups leak).
        self._session_file = PrivateFile(store_path / "session.json")
        store_path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Why encrypted rooms are refused, or None when the bot takes part in them.
        self.encryption_off = encryption_unavailable(settings.encryption)
        config = AsyncClientConfig(
            encryption_enabled=self.encryption_off is None,
            # The store's secrets (Olm account, sessions) are pickled with a key kept in a file of its own.
            pickle_key=self._pickle_key() if self.encryption_off is None else "",
            store_sync_tokens=False,  # we store the token ourselves, after the batch is handled
            max_limit_exceeded=0,  # a 429 comes back to us: the outbox worker decides, per room
            max_timeouts=2,
            request_timeout=SYNC_TIMEOUT_MS / 1000 + 30,
        )
        self.client = AsyncClient(settings.homeserver, settings.user, store_path=str(store_path), config=config)
        self.moderation_room_id: str | None = None
        self._dispatch: Dispatch | None = None
        self._handling: list[asyncio.Future[None]] = []
        self._sync_task: asyncio.Task[None] | None = None
        self._answer_task: asyncio.Task[None] | None = None
        self._kinds: dict[str, tuple[ChatKind, float]] = {}
        self._creators_cache: dict[str, frozenset[str]] = {}
        self._running = False
        self._synced = asyncio.Event()
        self._keys = KeyChores(self.client, self._encryption_settings)
        self._encryption: dict[str, dict[str, Any]] = {}  # rooms' m.room.encryption, as the sync brought it
        self._undecrypted = Undecrypted(self.client, state)
        self.media = MatrixMedia(self.client, state, media, self._request)

    def _pickle_key(self) -> str:
        key_file = PrivateFile(self.store_path / PICKLE_KEY_FILE)
        key = key_file.read()
        if key is None:
            key = secrets.token_urlsafe(32)
            key_file.write(key)
        return key.strip()

    def text_length(self, text: str) -> int:
        """What `text` adds to a message's JSON, as the homeserver measures it: as `body` and `formatted_body`,
        quoted (the larger form), escaped for HTML and then for JSON (a `"` or `\\` counts twice)."""
        return _json_size(_plain_quote(text)) + _json_size(_quoted_html(text))

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        await self._log_in()
        keep_private(self.store_path)
        self.moderation_room_id = await self._moderation_room()
        token = await self.state.get("matrix.next_batch")
        if token is None:
            token = await self._first_sync()
        # Every room's state, once: nio must know each room's members and encryption before the first send (it
        # keeps neither across restarts). The events since `token` are handled by the loop, as any batch.
        first = await self.client.sync(timeout=0, since=token, full_state=True)
        if not isinstance(first, SyncResponse):
            raise RuntimeError(f"matrix sync failed: {first}")
        self._running = True
        if self.encryption_off is None:
            await self._keys.after_sync()
            await self._undecrypted.load()
            self._answer_task = asyncio.create_task(self._answer_undecryptable())
            log.info("matrix: end-to-end encryption on: device %s, fingerprint %s", self.client.device_id,
                     fingerprint(self.client))
        else:
            log.warning("matrix: encrypted rooms are refused: %s", self.encryption_off)
        self._sync_task = asyncio.create_task(self._sync_forever(first, token))
        log.info("matrix: syncing as %s (device %s)", self.client.user_id, self.client.device_id)

    async def _moderation_room(self) -> str | None:
        """The moderation room's id: an alias resolved and pinned, a room that is not public, joined."""
        configured = self.settings.moderation_room
        room_id = await self._resolve(configured)
        if room_id is not None and configured.startswith("#"):
            await self._pin(configured, room_id)
        if room_id is None or await self._join(room_id) is None:
            # Named by its setting: logs at INFO and above carry no chat ids.
            log.error("matrix: cannot join the room MATRIX_MODERATION_ROOM names: invite the bot")
            return None
        problem = await self.public_moderation_room(room_id)
        if problem is not None:
            raise PublicModerationRoom(problem)
        if self.encryption_off is not None and await self._encrypted(room_id):
            raise EncryptedRoomRefused(
                f"MATRIX_MODERATION_ROOM: the moderators' room is end-to-end encrypted and the bot cannot take part "
                f"in encrypted rooms ({self.encryption_off})"
            )
        return room_id

    async def _pin(self, alias: str, room_id: str) -> None:
        """The room an alias named at first is the moderation room for good: whoever can move an alias (a
        homeserver admin, or anyone once it is released) must not be able to redirect the moderators' cards."""
        saved = await self.state.get(PINNED_ROOM_KEY)
        pinned = json.loads(saved) if saved else {}
        if pinned.get("alias") == alias and pinned.get("room_id") != room_id:
            raise ModerationRoomMoved(
                f"MATRIX_MODERATION_ROOM: {alias} now points to {room_id}, not to {pinned.get('room_id')}, the room "
                "the bot was set up with; if the moderators really moved, set MATRIX_MODERATION_ROOM to the new "
                "room's id"
            )
        if pinned.get("alias") != alias:
            await self.state.put(PINNED_ROOM_KEY, json.dumps({"alias": alias, "room_id": room_id}))

    async def public_moderation_room(self, room_id: str) -> str | None:
        """The problem, in one line naming the setting, when anyone can join or read the moderation room."""
        join_rule = (await self._state(room_id, "m.room.join_rules")).get("join_rule")
        visibility = (await self._state(room_id, "m.room.history_visibility")).get("history_visibility")
        if join_rule == "public":
            how = "anyone can join it (join rule: public)"
        elif visibility == "world_readable":
            how = "anyone can read its history (history visibility: world_readable)"
        else:
            return None
        return (f"MATRIX_MODERATION_ROOM: the moderators' room is public: {how}; make it invite-only and its "
                "history visible to members only, then start again")

    async def _log_in(self) -> None:
        saved = await self._saved_session()
        session = json.loads(saved) if saved else {}
        lost = self._store_lost(session)
        if session.get("user_id") == self.settings.user and not lost:
            self.client.restore_login(session["user_id"], session["device_id"], session["access_token"])
        elif self.settings.access_token and not (lost and self.settings.password):
            # The operator's token names its device; its store is theirs to keep (no session file is written).
            self.client.access_token = self.settings.access_token
            whoami = await self.client.whoami()
            device_id = getattr(whoami, "device_id", None) or "RELAY"
            self.client.restore_login(self.settings.user, device_id, self.settings.access_token)
            return
        else:
            assert self.settings.password is not None  # the settings require a password or a token
            if lost:
                await self._log_out(session)
            response = await self.client.login(self.settings.password, device_name="Solidarity Relay")
            if not isinstance(response, LoginResponse):
                raise RuntimeError(f"matrix login failed: {response.message}")
            session = {"user_id": response.user_id, "device_id": response.device_id,
                       "access_token": response.access_token}
        if self.encryption_off is None and not session.get("encrypted"):
            # From now on this device has keys on the server that only this store holds.
            session["encrypted"] = True
            self._session_file.write(json.dumps(session))
        elif not saved or lost:
            self._session_file.write(json.dumps(session))

    async def _log_out(self, session: dict[str, Any]) -> None:
        """The device whose store is lost is logged out (the server deletes it and its keys): members' clients stop
        encrypting for a device nobody can read with, and its access token stops working."""
        method, path = Api.logout(session.get("access_token", ""))
        try:
            response = await self.client._send(LogoutResponse, method, path)
        except (OSError, TimeoutError) as error:
            response = None
            log.info("matrix: the old device could not be logged out (%s)", type(error).__name__)
        if isinstance(response, LogoutResponse):
            log.info("matrix: the old device %s is logged out", session.get("device_id"))

    def _store_lost(self, session: dict[str, Any]) -> bool:
        """The device has uploaded keys, but the store that holds them is gone: it cannot be used again."""
        if self.encryption_off is not None or not session.get("encrypted"):
            return False
        store = self.store_path / f"{session.get('user_id')}_{session.get('device_id')}.db"
        if store.exists():
            return False
        log.warning("matrix: the encryption store of device %s is missing: logging in as a new device",
                    session.get("device_id"))
        return True

    async def _saved_session(self) -> str | None:
        """The session file; an older version kept the session in the database: it moves out of it now."""
        saved = self._session_file.read()
        if saved is None and (saved := await self.state.get(LEGACY_SESSION_KEY)) is not None:
            self._session_file.write(saved)
            await self.state.put(LEGACY_SESSION_KEY, "{}")
        return saved

    async def _first_sync(self) -> str:
        """A new bot answers invites but does not replay the rooms' history."""
        response = await self.client.sync(timeout=0, sync_filter={"room": {"timeline": {"limit": 0}}})
        if not isinstance(response, SyncResponse):
            raise RuntimeError(f"matrix first sync failed: {response}")
        for room_id in response.rooms.invite:
            await self._accept(room_id)
        await self.state.put("matrix.next_batch", response.next_batch)
        return response.next_batch

    async def stop_receiving(self) -> None:
        """Nothing to hand over: a sync's token is stored only once its events are handled, so events cut off by
        the stop come again with the next start's sync."""

    async def stop(self) -> None:
        self._running = False
        for task in (self._sync_task, self._answer_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.client.close()

    # --- the sync loop ---------------------------------------------------------------------------------

    async def _sync_forever(self, first: SyncResponse, token: str) -> None:
        """`first` is the sync since `token` that start() made; each batch is handled, then its token stored."""
        response: SyncResponse | None = first
        delay = 1.0
        while self._running:
            if response is None:
                try:
                    answer = await self.client.sync(timeout=SYNC_TIMEOUT_MS, since=token)
                except (TimeoutError, OSError) as error:
                    answer = None
                    log.warning("matrix: sync failed (%s), retrying in %.0f s", error, delay)
                if not isinstance(answer, SyncResponse):
                    if answer is not None:
                        log.warning("matrix: sync error %s, retrying in %.0f s", without_ids(str(answer)), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 60)
                    continue
                response, delay = answer, 1.0
            self._synced.set()
            self._synced.clear()
            await self._handle_sync(response, since=token)
            token, response = response.next_batch, None
            await self.state.put("matrix.next_batch", token)

    async def _handle_sync(self, response: SyncResponse, since: str | None) -> None:
        """Every room and event on its own: one that cannot be read (a malformed id, an odd field) is skipped,
        with its error type logged, and never ends the sync loop. A room's timeline that the homeserver cut
        short (`limited`: more happened since `since` than a sync returns) is completed from its history."""
        for room_id in response.rooms.invite:
            if _guarded(room_id):
                await self._accept(room_id)
        for room_id, info in response.rooms.leave.items():
            if _guarded(room_id):
                reason = _removal_reason(info.timeline.events, self.client.user_id)
                self._kinds.pop(room_id, None)
                await self._emit(MembershipChanged(ChatRef(PLATFORM, room_id, ChatKind.GROUP), False, reason))
        for room_id, info in response.rooms.join.items():
            if not _guarded(room_id):
                continue
            for state in [*info.state, *info.timeline.events]:
                if isinstance(state, RoomEncryptionEvent):
                    self._encryption[room_id] = dict(state.source.get("content", {}))
            missed = await self._missed(room_id, info.timeline.prev_batch, since) if info.timeline.limited else []
            for event in [*missed, *info.timeline.events]:
                try:
                    await self._on_event(room_id, event)
                except Exception as error:
                    log.warning("matrix: an event could not be read (%s) and was skipped", type(error).__name__)
        if self.encryption_off is None:
            await self._crypto_chores()
        # The batch counts as handled (and its sync token may be stored) once every event of it is.
        handling, self._handling = self._handling, []
        await asyncio.gather(*handling)

    async def _missed(self, room_id: str, before: str | None, since: str | None) -> list[Any]:
        """The events between the last handled sync and this one's cut-short timeline, oldest first: a bot that
        was down while a room was busy (a supporter's many letters, the moderators' chatter) misses none."""
        if before is None or since is None:
            return []
        missed: list[Any] = []
        page: str | None = before
        while page is not None and len(missed) < MAX_MISSED:
            try:
                response = await self.client.room_messages(room_id, start=page, end=since, limit=RELATIONS_PAGE)
            except (OSError, TimeoutError) as error:
                # What was fetched is handled; the sync loop must go on whatever the history answers.
                log.warning("matrix: a room's earlier events could not all be fetched (%s)", type(error).__name__)
                break
            if not isinstance(response, RoomMessagesResponse) or not response.chunk:
                break
            missed.extend(response.chunk)
            page = response.end if response.end != page else None
        if missed:
            log.info("matrix: %d earlier events of a room fetched after a gap", len(missed))
        return list(reversed(missed))

    async def _crypto_chores(self) -> None:
        """Keys uploaded, queried and claimed as nio needs; events whose keys came in this batch handled now."""
        try:
            await self._keys.after_sync()
        except (LocalProtocolError, EncryptionError, OSError, TimeoutError) as error:
            log.warning("matrix: key maintenance failed (%s); trying again after the next sync", type(error).__name__)
        for room_id, event in await self._undecrypted.decryptable():
            try:
                await self._on_event(room_id, event)
            except Exception as error:
                log.warning("matrix: an event could not be read (%s) and was skipped", type(error).__name__)

    async def _answer_undecryptable(self) -> None:
        """When an event's keys have not come in time, its sender is asked to send it again (by the handlers)."""
        while True:
            await self._undecrypted.until_due()
            for waiting in await self._undecrypted.expired():
                try:
                    await self._emit(await self._unreadable(waiting.room_id, waiting.event, UNDECRYPTABLE))
                except Exception as error:
                    log.warning("matrix: an undecryptable event could not be answered (%s)", type(error).__name__)

    async def _on_event(self, room_id: str, event: Any) -> None:
        if isinstance(event, RoomMemberEvent):
            self._kinds.pop(room_id, None)  # membership changed: a DM may have become a group
            return
        sender, event_id = getattr(event, "sender", None), getattr(event, "event_id", None)
        if sender == self.client.user_id or not (is_clean_id(sender) and is_clean_id(event_id)):
            return
        if isinstance(event, ReactionEvent):
            await self._emit(await self._press(room_id, event))
        elif isinstance(event, RedactionEvent):
            await self._emit(await self._deleted(room_id, event))
        elif isinstance(event, RoomMessage) and _is_edit(event):
            await self._emit(await self._edited(room_id, event))
        elif isinstance(event, RoomMessage):
            await self._emit(await self._incoming(room_id, event))
        elif isinstance(event, MegolmEvent) and self.encryption_off is None:
            if await self._undecrypted.add(room_id, event):
                log.info("matrix: an encrypted event could not be decrypted yet; its keys are requested")
            else:
                await self._emit(await self._unreadable(room_id, event, UNDECRYPTABLE))
        elif isinstance(event, (MegolmEvent, UnknownEncryptedEvent)):
            kind = ENCRYPTED if self.encryption_off is not None else UNDECRYPTABLE
            await self._emit(await self._unreadable(room_id, event, kind))

    async def _accept(self, room_id: str) -> None:
        """Invitations are accepted from anyone; the room is on probation until it proves of use."""
        if await self._join(room_id) is not None:
            await self._emit(MembershipChanged(await self._chat(room_id), True, INVITED))

    async def _emit(self, event: Event | None) -> None:
        """Into the bot's intake, where senders take turns; the sync loop waits for the batch, not each event."""
        if event is not None and self._dispatch is not None:
            self._handling.append(asyncio.ensure_future(self._dispatch(event)))

    async def _incoming(self, room_id: str, event: RoomMessage) -> IncomingMessage:
        text = valid_unicode(event.body) if isinstance(event, RoomMessageText) and isinstance(event.body, str) else None
        content = event.source.get("content")
        found = attachment_of(content) if text is None and isinstance(content, dict) else None
        attachments: tuple[Attachment, ...] = ()
        if found is not None:
            attachment, text = found  # the text is the file's caption, if it has one
            attachments = (attachment,)
        return IncomingMessage(
            event_id=event.event_id,
            chat=await self._chat(room_id),
            # A moderator's name is shown with what they decide: looked up for a command, not for chatter.
            sender=await self._user(room_id, event.sender, named=(text or "").startswith(self.command_prefix)),
            text=text,
            message_id=event.event_id,
            received_at=event.server_timestamp / 1000,
            content_kind="text" if text is not None and not attachments else _msgtype(event.source),
            length=len(text or ""),
            limit=0,  # Matrix clients do not split long messages
            attachments=attachments,
        )

    async def _unreadable(self, room_id: str, event: MegolmEvent | UnknownEncryptedEvent, kind: str) -> IncomingMessage:
        """An event the bot cannot read: the handlers answer it (ENCRYPTED: the bot has no encryption at all)."""
        return IncomingMessage(
            event_id=event.event_id,
            chat=await self._chat(room_id),
            sender=await self._user(room_id, event.sender),
            text=None,
            message_id=event.event_id,
            received_at=event.server_timestamp / 1000,
            content_kind=kind,
        )

    async def _edited(self, room_id: str, event: RoomMessage) -> MessageEdited | None:
        """An `m.replace`: the new text is in `m.new_content` (the top-level body is a "* ..." fallback)."""
        content = event.source.get("content", {})
        original = content.get("m.relates_to", {}).get("event_id")
        new_content = content.get("m.new_content")
        if not is_clean_id(original) or not isinstance(new_content, dict):
            return None
        body = new_content.get("body")
        textual = new_content.get("msgtype") in ("m.text", "m.notice", "m.emote") and isinstance(body, str)
        text = valid_unicode(body) if textual else None
        return MessageEdited(
            event_id=event.event_id,
            chat=await self._chat(room_id),
            sender=await self._user(room_id, event.sender),
            message_id=original,
            text=text,
            received_at=event.server_timestamp / 1000,
            length=len(text or ""),
        )

    async def _deleted(self, room_id: str, event: RedactionEvent) -> MessageDeleted | None:
        if not is_clean_id(event.redacts):
            return None
        return MessageDeleted(
            event_id=event.event_id,
            chat=await self._chat(room_id),
            sender=await self._user(room_id, event.sender),
            message_id=event.redacts,
        )

    async def _press(self, room_id: str, event: ReactionEvent) -> ActionPressed | None:
        if not is_clean_id(event.reacts_to) or not isinstance(event.key, str):
            return None
        return ActionPressed(
            event_id=event.event_id,
            chat=await self._chat(room_id),
            user=await self._user(room_id, event.sender, named=True),
            message=RemoteRef(PLATFORM, room_id, event.reacts_to),
            data=f"react:{valid_unicode(event.key)}",
        )

    # --- neutral replies -------------------------------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> RemoteRef:
        """The message's media first (an m.image, m.video or m.file each), then its text, which is the message the
        reference names: a card's reactions, edits and scrubs go to it; its media events are remembered so that a
        scrub redacts them too."""
        shown = await self._send_media(message) if message.media else []
        content = _content(message)
        key = message.idempotency_key
        event_id = await self._room_send(message.chat_id, "m.room.message", content, _txn_id(key) if key else None,
                                         carries_letter=message.broadcast or message.quoted)
        for action in (action for action in message.actions if action.symbol):
            # Moderators then only click the reaction the bot already made. Its transaction id follows the card's:
            # a retried post is the same card to the server, and its reactions the same reactions.
            reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": action.symbol}}
            await self._room_send(message.chat_id, "m.reaction", reaction,
                                  _txn_id(f"{key} {action.symbol}") if key else None)
        if shown and not message.broadcast:
            await self.media.remember_card_media(message.chat_id, event_id, shown)
        return RemoteRef(PLATFORM, message.chat_id, event_id)

    async def _send_media(self, message: OutgoingMessage) -> list[str]:
        """One event per file, each uploaded once for all rooms (once more, encrypted, for encrypted rooms). The
        transaction ids follow the message's key: a retried send posts none of them twice."""
        room_id, key = message.chat_id, message.idempotency_key
        encrypted = await self._is_encrypted_room(room_id)
        if encrypted and self.encryption_off is not None:
            raise DeliveryError(f"the room is end-to-end encrypted ({self.encryption_off})", retryable=False)
        sent = []
        for index, item in enumerate(message.media):
            content = await self.media.content(item, encrypted)
            sent.append(await self._room_send(room_id, "m.room.message", content,
                                              _txn_id(f"{key} media {index}") if key else None, carries_letter=True))
        return sent

    async def fetch(self, attachment: Attachment) -> bytes:
        return await self.media.fetch(attachment)

    async def edit(self, ref: RemoteRef, message: OutgoingMessage) -> None:
        await self._replace(ref, message)

    async def scrub(self, ref: RemoteRef, message: OutgoingMessage) -> None:
        """Make the card show `message`, then redact every event of it that still carries the old text.

        An edit alone is not enough: the original keeps the old text in its `body`, and every earlier edit keeps
        it in `m.new_content` (and in its "* ..." fallback `body`); any member can fetch them, and clients offer
        the edit history. So each of them is redacted too, except the edit just sent, which carries only
        `message`. The edit comes first so that the card never shows the old text once scrubbing has begun.

        The original goes last: once it is redacted Synapse lists none of its relations any more, so a scrub
        retried after a failure could not find the edits left over. For the same reason, spec-following clients
        then show the card as a deleted message and no longer apply the new edit to it.
        """
        scrubbing = await self._replace(ref, message)
        for event_id in await self.media.card_media(ref.chat_id, ref.message_id):
            await self._redact(ref.chat_id, event_id)  # the card's pictures and files go with its text
        edits = [event_id for event_id in await self._own_edits(ref) if event_id != scrubbing]
        for event_id in [*edits, ref.message_id]:
            await self._redact(ref.chat_id, event_id)
        log.debug("matrix: scrubbed %s in %s (%d edits)", ref.message_id, ref.chat_id, len(edits))

    async def _replace(self, ref: RemoteRef, message: OutgoingMessage) -> str:
        new_content = _content(message)
        content = {
            **new_content,
            "body": "* " + new_content["body"],
            "m.new_content": new_content,
            "m.relates_to": {"rel_type": "m.replace", "event_id": ref.message_id},
        }
        key = message.idempotency_key
        return await self._room_send(ref.chat_id, "m.room.message", content, _txn_id(key) if key else None,
                                     carries_letter=message.quoted)

    async def _own_edits(self, ref: RemoteRef) -> list[str]:
        """The ids of the m.replace edits the bot sent of `ref`, through the relations API, every page of it.

        Not nio's `room_get_event_relations`: on an error answer it raises AttributeError (matrix-nio#551) and
        it would hide a 429 from us. Whatever the event type (an encrypted edit is m.room.encrypted), the
        relation and the sender are readable in the clear.
        """
        found: list[str] = []
        page: str | None = None
        while True:
            method, path = Api.room_get_event_relations(
                self.client.access_token, ref.chat_id, ref.message_id, RelationshipType.replacement,
                direction=MessageDirection.back, paginate_from=page, limit=RELATIONS_PAGE,
            )
            # nio's own request path: the same session, token header, timeouts and response parsing.
            request = partial(
                self.client._send, RoomEventRelationsResponse, method, path,
                response_data=(ref.chat_id, ref.message_id),
            )
            response = await self._request(request, RoomEventRelationsResponse)
            found += [
                event.source["event_id"] for event in response.events
                if event.source.get("sender") == self.client.user_id and "event_id" in event.source
            ]
            if not response.next_batch or response.next_batch == page:
                return found
            page = response.next_batch

    async def _redact(self, room_id: str, event_id: str) -> None:
        # A fixed transaction id: a redaction repeated by a retried scrub is the same redaction to the server.
        txn = _txn_id(f"redact {room_id} {event_id}")
        await self._request(
            lambda: self.client.room_redact(room_id, event_id, reason=SCRUB_REASON, tx_id=txn),
            RoomRedactResponse,
        )

    async def _room_send(
        self, room_id: str, kind: str, content: dict[str, Any], txn: str | None, carries_letter: bool = False
    ) -> str:
        """One room send; a rate limit or failure is the outbox worker's to wait out and retry.

        In an encrypted room nio encrypts the event (reactions excepted: nio sends them in the clear), after the
        room's members, their devices and an Olm session with each are known, so that the room key it shares
        first reaches every current device. The transaction id stays the bot's own: a retried send is the same
        event to the server, however it was encrypted the first time.
        """
        encrypted = await self._is_encrypted_room(room_id)
        size = _json_size(content)
        limit = MAX_EVENT_BYTES
        if encrypted and kind != "m.reaction":
            size, limit = _encrypted_size(room_id, kind, content), MAX_ENCRYPTED_EVENT_BYTES
        if size > limit:
            # Texts are cut to fit (text_length); this is the last guard, so that no oversized event is tried.
            raise DeliveryError(f"event of {size} bytes is over the {limit}-byte limit", retryable=False)
        if encrypted and self.encryption_off is not None and carries_letter:
            # A letter is not put in the clear into a room its members believe encrypted; a reply is (it tells
            # them why the bot cannot read them, and says nothing else).
            raise DeliveryError(f"the room is end-to-end encrypted ({self.encryption_off})", retryable=False)

        async def send() -> Response:
            if encrypted:
                await self._keys.prepare(room_id)
            elif self.encryption_off is None and room_id not in self.client.rooms:
                # nio refuses any room it has not synced; the homeserver gives the answer the worker knows
                # ("not in room": the subscription ends), and an unencrypted room is sent to as before.
                method, path, data = Api.room_send(
                    self.client.access_token, room_id, kind, content, txn or secrets.token_hex(16))
                return await self.client._send(RoomSendResponse, method, path, data, (room_id,))
            return await self.client.room_send(room_id, kind, content, tx_id=txn, ignore_unverified_devices=True)

        response = await self._request(send, RoomSendResponse)
        return response.event_id

    async def _is_encrypted_room(self, room_id: str) -> bool:
        """Whether events to the room must be encrypted. A room the bot joined a moment ago is waited for: nio
        learns its state (and whether it is encrypted) from the sync that the join ends."""
        room = self.client.rooms.get(room_id)
        deadline = time.monotonic() + NEW_ROOM_WAIT
        while room is None and self._running and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._synced.wait(), left)
            room = self.client.rooms.get(room_id)
        if room is None:
            # Not a room the bot is in: nio's store still knows whether it was encrypted when it was.
            return room_id in self.client.encrypted_rooms
        return room.encrypted

    async def _encryption_settings(self, room_id: str) -> dict[str, Any]:
        if room_id not in self._encryption:
            self._encryption[room_id] = await self._state(room_id, "m.room.encryption")
        return self._encryption[room_id]

    async def _encrypted(self, room_id: str) -> bool:
        """Whether the room has encryption turned on (also for rooms nio has not synced)."""
        return bool(await self._encryption_settings(room_id))

    async def _request(self, request: Callable[[], Awaitable[Response]], expected: type[T]) -> T:
        """One homeserver request, or DeliveryError (the outbox worker decides what happens next)."""
        try:
            response = await request()
        except (TimeoutError, OSError) as error:
            raise DeliveryError(f"homeserver unreachable: {error}", retryable=True) from error
        except (LocalProtocolError, EncryptionError, OlmUnverifiedDeviceError, SendRetryError) as error:
            # nio could not encrypt (a room not synced yet, keys not shared): another try, a little later.
            raise DeliveryError(f"could not encrypt: {type(error).__name__}", retryable=True,
                                retry_after=2.0) from error
        if isinstance(response, expected):
            return response
        if not isinstance(response, ErrorResponse):
            raise DeliveryError(f"unexpected answer {type(response).__name__}", retryable=False)
        raise _normalise(response)

    # --- questions about rooms and people -----------------------------------------------------------------

    async def role_of(self, chat_id: str, user_id: str) -> Role:
        if user_id not in await self._members(chat_id):
            return Role.OUTSIDER
        return Role.ADMIN if await self._power(chat_id, user_id) >= ADMIN_LEVEL else Role.MEMBER

    async def _power(self, room_id: str, user_id: str) -> float:
        if user_id in await self._creators(room_id):
            return float("inf")  # room v12+: creators outrank every power level (nio 0.26 reports 0)
        levels = await self._state(room_id, "m.room.power_levels")
        return float(levels.get("users", {}).get(user_id, levels.get("users_default", 0)))

    def owns(self, reference: str) -> bool:
        return owns_reference(reference)

    async def resolve_chat(self, reference: str) -> ChatRef | None:
        room_id = await self._join(reference)
        if room_id is None:
            return None
        name = (await self._state(room_id, "m.room.name")).get("name")
        return ChatRef(PLATFORM, room_id, await self._kind(room_id), name or reference)

    async def can_post(self, chat_id: str) -> bool:
        if self.client.user_id not in await self._members(chat_id):
            return False
        if self.encryption_off is not None and await self._encrypted(chat_id):
            log.info("matrix: an encrypted room cannot receive letters: %s", self.encryption_off)
            return False
        levels = await self._state(chat_id, "m.room.power_levels")
        needed = levels.get("events", {}).get("m.room.message", levels.get("events_default", 0))
        return await self._power(chat_id, self.client.user_id) >= needed

    async def forget_chat(self, chat_id: str) -> None:
        return None  # the platform keeps the chat; the bot cannot delete it

    async def leave(self, chat_id: str) -> None:
        response = await self.client.room_leave(chat_id)
        if isinstance(response, ErrorResponse):
            log.info("matrix: could not leave a room (%s)", response.status_code or "no error code")
        self._kinds.pop(chat_id, None)

    async def answer_press(self, token: str | None, text: str) -> None:
        """Matrix reactions have no private answer; the outcome shows on the card itself."""

    async def check(self) -> list[str]:
        try:
            await self._log_in()
            room_id = await self._join(self.settings.moderation_room)
            if room_id is None:
                return [f"MATRIX_MODERATION_ROOM: cannot join {self.settings.moderation_room} (invite the bot)"]
            print(f"matrix: logged in as {self.client.user_id}")
            if self.encryption_off is None:
                print(f"matrix: end-to-end encryption on; device {self.client.device_id}, "
                      f"fingerprint {fingerprint(self.client)}")
            else:
                print(f"matrix: encrypted rooms are refused ({self.encryption_off})")
            public = await self.public_moderation_room(room_id)
            return [public] if public else []
        except (RuntimeError, OSError, TimeoutError) as error:
            return [f"MATRIX_HOMESERVER / MATRIX_USER: {error}"]
        finally:
            await self.client.close()

    async def _resolve(self, room: str) -> str | None:
        """A room id for an alias (or the id itself), without joining."""
        if not room.startswith("#"):
            return room
        resolved = await self.client.room_resolve_alias(room)
        return resolved.room_id if isinstance(resolved, RoomResolveAliasResponse) else None

    async def _join(self, room: str) -> str | None:
        room_id = await self._resolve(room)
        if room_id is None:
            return None
        response = await self.client.join(room_id)
        if isinstance(response, ErrorResponse):
            # The room may be a supporter's direct chat, and Synapse's message may name people: DEBUG only.
            log.info("matrix: cannot join a room (%s)", response.status_code or "no error code")
            log.debug("matrix: cannot join %s: %s", room_id, response.message)
            return None
        return room_id

    async def _chat(self, room_id: str) -> ChatRef:
        return ChatRef(PLATFORM, room_id, await self._kind(room_id))

    async def _kind(self, room_id: str) -> ChatKind:
        """A room of two (the bot and one person) is a private chat; the moderation room never is."""
        cached = self._kinds.get(room_id)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        members = await self._members(room_id)
        kind = ChatKind.PRIVATE if len(members) == 2 and room_id != self.moderation_room_id else ChatKind.GROUP
        self._kinds[room_id] = (kind, time.monotonic() + KIND_CACHE_SECONDS)
        return kind

    async def _members(self, room_id: str) -> dict[str, str]:
        response = await self.client.joined_members(room_id)
        if not isinstance(response, JoinedMembersResponse):
            return {}
        return {member.user_id: member.display_name or member.user_id for member in response.members}

    async def _user(self, room_id: str, user_id: str, named: bool = False) -> UserRef:
        """The display name is looked up only where it is shown (a moderator's name on a decision): a
        supporter's is never used, and looking it up for every message would cost a request each."""
        name = user_id.split(":")[0].lstrip("@")
        if named and room_id == self.moderation_room_id:
            displayname = (await self._state(room_id, "m.room.member", user_id)).get("displayname")
            name = displayname if isinstance(displayname, str) and displayname else name
        return UserRef(PLATFORM, user_id, name, None)

    async def _state(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any]:
        response = await self.client.room_get_state_event(room_id, event_type, state_key)
        return dict(response.content) if isinstance(response, RoomGetStateEventResponse) else {}

    async def _creators(self, room_id: str) -> frozenset[str]:
        """Who created the room, when that alone gives them unlimited power (room v12 and later).

        The create event never changes, so the answer is kept. Its content has no creator field from v11 on:
        the sender of the event itself is the creator.
        """
        if room_id not in self._creators_cache:
            creators: frozenset[str] = frozenset()
            response = await self.client.room_get_state(room_id)
            for state in getattr(response, "events", []):
                content = state.get("content", {})
                version = content.get("room_version", "1")
                if state.get("type") == "m.room.create" and version not in PRE_CREATOR_VERSIONS:
                    creators = frozenset({state.get("sender"), *content.get("additional_creators", [])})
            if isinstance(response, RoomGetStateResponse):
                self._creators_cache[room_id] = creators
            return creators
        return self._creators_cache[room_id]


def _guarded(room_id: object) -> bool:
    """A room id the bot can ask about and store (a lone surrogate would fail in every URL and in SQLite)."""
    if is_clean_id(room_id):
        return True
    log.warning("matrix: a room with a malformed id was skipped")
    return False


def _is_edit(event: RoomMessage) -> bool:
    relates = event.source.get("content", {}).get("m.relates_to")
    return isinstance(relates, dict) and relates.get("rel_type") == "m.replace"


def _msgtype(source: dict[str, Any]) -> str:
    content = source.get("content")
    msgtype = content.get("msgtype") if isinstance(content, dict) else None
    return msgtype if isinstance(msgtype, str) else "other"


def _removal_reason(events: list[Any], user_id: str | None) -> str:
    for event in reversed(events):
        if isinstance(event, RoomMemberEvent) and event.state_key == user_id:
            if event.membership == "ban":
                return "bot was banned"
            if event.sender != user_id:
                return "bot was kicked"
    return "bot left the room"


def _content(message: OutgoingMessage) -> dict[str, Any]:
    """An m.room.message of plain text; a quoted body (a letter on a card) as a block quote, set apart from the
    bot's own lines. Mentions need no defusing here: `m.mentions: {}` says the message mentions nobody."""
    title, text, footer = message.title, message.text, message.footer
    body = _plain_quote(text) if message.quoted and text else text
    plain = "\n\n".join(part for part in (title, body, footer) if part)
    pieces = []
    if title:
        pieces.append(f"<b>{_html(title)}</b>")
    pieces.append(_quoted_html(text) if message.quoted and text else _html(text))
    if footer:
        pieces.append(f"<i>{_html(footer)}</i>")
    return {
        "msgtype": "m.notice" if message.silent else "m.text",
        "body": plain,
        "format": "org.matrix.custom.html",
        "formatted_body": "<br><br>".join(pieces),
        "m.mentions": {},  # a letter's @room or user IDs must ping no one
    }


def _html(text: str) -> str:
    return html.escape(text, quote=False).replace("\n", "<br>")


def _quoted_html(text: str) -> str:
    return f"<blockquote>{_html(text)}</blockquote>"


def _plain_quote(text: str) -> str:
    """The plain-text form of a quotation, as Matrix reply fallbacks write it: `> ` before every line."""
    return "\n".join("> " + line for line in text.split("\n"))


def _json_size(value: Any) -> int:
    """Bytes of `value` in the homeserver's canonical JSON (UTF-8, not \\u-escaped), which its size limit counts."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def _encrypted_size(room_id: str, kind: str, content: dict[str, Any]) -> int:
    """The size of the m.room.encrypted content nio makes of `content`: the Megolm ciphertext is base64 of the
    plain event padded to the AES block, with a version, an index, a MAC and a signature; the relation is copied
    out in the clear; sender key, session and device id come with it."""
    plain = _json_size({"content": content, "type": kind, "room_id": room_id})
    ciphertext = (plain // 16 + 1) * 16 + 96
    relation = _json_size(content.get("m.relates_to", {}))
    return math.ceil(ciphertext * 4 / 3) + relation + 300


def _txn_id(key: str) -> str:
    return "relay-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _normalise(response: ErrorResponse) -> DeliveryError:
    code = response.status_code or ""
    if code == "M_LIMIT_EXCEEDED" or getattr(response, "retry_after_ms", None):
        seconds = (response.retry_after_ms or 1000) / 1000
        return DeliveryError(f"rate limited for {seconds:g} s", retryable=True, retry_after=seconds)
    # Synapse's messages quote user and room ids ("User @x:… not in room !r:…"): reasons end up in logs.
    message = without_ids(response.message or "")
    if code in ("M_FORBIDDEN", "M_NOT_FOUND", "M_UNKNOWN") and "not in room" in message.lower():
        return DeliveryError(message, retryable=False, gone=True)
    if code == "M_FORBIDDEN":
        return DeliveryError(message, retryable=False, gone=True)
    status = getattr(getattr(response, "transport_response", None), "status", 0) or 0
    return DeliveryError(f"{code} {message}".strip(), retryable=status >= 500 or not code)


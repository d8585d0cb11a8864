"""End-to-end encryption for the Matrix transport: matrix-nio's Olm machine (vodozemac), driven after each sync the
way nio's own `sync_forever` drives it, plus what nio leaves to its users: whom to trust, which keys to ask for, and
what to do with an event that stays unreadable.

Trust is on first use: a device the bot sees for the first time in one of its rooms is trusted (and room keys are
shared with it); a known device whose signing key changes is refused by nio. A homeserver can therefore add a
device to a member's account and receive the keys of what the bot sends after that; it cannot read what was sent
before, nor swap the keys of a device the bot already knows. The README says this to operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from nio import AsyncClient, MegolmEvent, ToDeviceError
from nio.crypto import OlmDevice
from nio.exceptions import EncryptionError, LocalProtocolError

from bot.networks.base import KeyValue

log = logging.getLogger(__name__)

# How long keys requested for an undecryptable event may take before the sender is asked to send it again.
UNDECRYPTABLE_WAIT = 30.0
UNDECRYPTED_KEY = "matrix.undecrypted"
# A flood of unreadable events must not grow the state row (rewritten on each change) without bound: one sender's
# events beyond these wait no more, they are answered at once through the intake, which rations a flood.
MAX_WAITING = 500
MAX_WAITING_PER_SENDER = 20


def encryption_unavailable(wanted: bool) -> str | None:
    """Why the bot cannot take part in encrypted rooms, or None when it can."""
    if not wanted:
        return "MATRIX_ENCRYPTION=false"
    from nio.crypto import ENCRYPTION_ENABLED

    if ENCRYPTION_ENABLED:
        return None
    try:
        import vodozemac  # noqa: F401  (only to say why nio could not load it)
    except ImportError as error:
        return f"matrix-nio's e2e extra cannot be loaded ({error}); install matrix-nio[e2e]"
    return "matrix-nio's e2e extra cannot be loaded; install matrix-nio[e2e]"


def fingerprint(client: AsyncClient) -> str:
    """The bot's device signing key as clients show it for manual verification: groups of four characters."""
    if client.olm is None:
        return ""
    key = client.olm.account.identity_keys["ed25519"]
    return " ".join(key[i:i + 4] for i in range(0, len(key), 4))


class KeyChores:
    """Key upload, device-list queries, one-time key claims and to-device messages, one at a time.

    nio raises when two key queries overlap, and concurrent room sends that each claim one-time keys for the same
    device would burn one key and create one Olm session per send: everything here runs under one lock.
    """

    def __init__(self, client: AsyncClient, encryption_of: Callable[[str], Awaitable[dict[str, Any]]]) -> None:
        self.client = client
        self.encryption_of = encryption_of  # a room's m.room.encryption content
        self._lock = asyncio.Lock()

    async def after_sync(self) -> None:
        async with self._lock:
            client = self.client
            await client.send_to_device_messages()
            if client.should_upload_keys:
                await client.keys_upload()
            await self._query_keys()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())

    async def prepare(self, room_id: str) -> None:
        """Before a send to an encrypted room: its members and their devices known, an Olm session with each
        device, so that the room key nio shares next reaches every current device of every member."""
        client = self.client
        room = client.rooms.get(room_id)
        if room is None:
            raise LocalProtocolError("the room is not synced yet")
        if not room.members_synced:
            await client.joined_members(room_id)  # once per room and start: not under the lock
        async with self._lock:
            await self._query_keys()
            sharing = client.olm is not None and client.olm.should_share_group_session(room_id)
            if sharing:
                missing = client.get_missing_sessions(room_id)
                if missing:
                    await client.keys_claim(missing)
        if sharing:
            await self._new_session(room_id)

    async def _query_keys(self) -> None:
        """Device lists that changed, fetched (under the lock), and the devices new to the bot trusted."""
        if self.client.should_query_keys:
            await self.client.keys_query()
            self._trust_new_devices()

    async def _new_session(self, room_id: str) -> None:
        """The Megolm session nio is about to share, rotated as the room asks (`rotation_period_msgs`,
        `rotation_period_ms`; the spec's 100 messages and one week where it says nothing): nio itself keeps to
        100 messages and a week whatever the room says."""
        olm = self.client.olm
        assert olm is not None
        settings = await self.encryption_of(room_id)
        session = olm.outbound_group_sessions.get(room_id)
        if session is None or session.shared:
            olm.create_outbound_group_session(room_id)  # nio shares an unshared session as it is
            session = olm.outbound_group_sessions[room_id]
        messages, period = settings.get("rotation_period_msgs"), settings.get("rotation_period_ms")
        if isinstance(messages, int) and messages > 0:
            session.max_messages = messages
        if isinstance(period, int) and period > 0:
            session.max_age = timedelta(milliseconds=period)

    def _trust_new_devices(self) -> None:
        """Trust on first use: a device seen for the first time is verified; nio itself refuses a known device
        whose signing key changed, so trust never moves to a key the bot did not see first."""
        olm = self.client.olm
        if olm is None:
            return
        trusted = 0
        for device in list(self.client.device_store):
            if _untrusted(device) and not device.deleted:
                self.client.verify_device(device)
                trusted += 1
        if trusted:
            log.debug("matrix: trusted %d new device(s) on first use", trusted)


def _untrusted(device: OlmDevice) -> bool:
    return not (device.verified or device.blacklisted or device.ignored)


@dataclass
class Waiting:
    """An event that could not be decrypted, and until when its keys may still come."""

    room_id: str
    event: MegolmEvent
    deadline: float  # wall clock: it survives a restart

    def as_json(self) -> dict[str, Any]:
        return {"room_id": self.room_id, "event": self.event.source, "deadline": self.deadline}


Handler = Callable[[str, Any], Awaitable[None]]


class Undecrypted:
    """Events whose keys have not come: each is requested from the sender's device, tried again after every sync,
    and handed to `on_expired` when its wait is over. Kept in the state table, so a restart loses none."""

    def __init__(self, client: AsyncClient, state: KeyValue) -> None:
        self.client = client
        self.state = state
        self.wait = UNDECRYPTABLE_WAIT  # read here, not at import: a test shortens it
        self._waiting: list[Waiting] = []
        self._changed = asyncio.Event()

    @property
    def count(self) -> int:
        return len(self._waiting)

    async def load(self) -> None:
        saved = await self.state.get(UNDECRYPTED_KEY)
        for item in json.loads(saved) if saved else []:
            event = MegolmEvent.from_dict(item["event"])
            if isinstance(event, MegolmEvent):
                self._waiting.append(Waiting(item["room_id"], event, float(item["deadline"])))

    async def add(self, room_id: str, event: MegolmEvent) -> bool:
        """Wait for the event's keys; False when it cannot wait (its sender has too many waiting already)."""
        event.room_id = room_id
        if any(waiting.event.event_id == event.event_id for waiting in self._waiting):
            return True
        senders = sum(waiting.event.sender == event.sender for waiting in self._waiting)
        if senders >= MAX_WAITING_PER_SENDER or len(self._waiting) >= MAX_WAITING:
            return False
        self._waiting.append(Waiting(room_id, event, time.time() + self.wait))
        await self._save()
        await self._request_keys(event)
        self._changed.set()
        return True

    async def _request_keys(self, event: MegolmEvent) -> None:
        """Ask the sending device itself (nio's own request_room_key asks only the bot's other devices)."""
        message = event.as_key_request(event.sender, self.client.device_id, event.session_id, event.device_id)
        if self.client.olm is not None:
            # Queued as nio queues its own: once sent, nio records the request, and only a requested session
            # forwarded to the bot is accepted; a failed send goes again with the next sync's to-device messages.
            self.client.olm.outgoing_to_device_messages.append(message)
        try:
            response = await self.client.to_device(message)
        except (LocalProtocolError, OSError, TimeoutError) as error:
            log.info("matrix: a room key request could not be sent (%s)", type(error).__name__)
            return
        if isinstance(response, ToDeviceError):
            log.info("matrix: a room key request was refused (%s)", response.status_code or "no error code")

    async def decryptable(self) -> list[tuple[str, Any]]:
        """The waiting events that can be read now (their keys came), decrypted, in the order they arrived."""
        readable: list[tuple[str, Any]] = []
        still: list[Waiting] = []
        for waiting in self._waiting:
            try:
                readable.append((waiting.room_id, self.client.decrypt_event(waiting.event)))
            except (EncryptionError, LocalProtocolError):
                still.append(waiting)
        if readable:
            self._waiting = still
            await self._save()
        return readable

    async def expired(self, now: float | None = None) -> list[Waiting]:
        now = time.time() if now is None else now
        over = [waiting for waiting in self._waiting if waiting.deadline <= now]
        if over:
            self._waiting = [waiting for waiting in self._waiting if waiting.deadline > now]
            await self._save()
        return over

    async def until_due(self) -> None:
        """Until the earliest wait ends, or something is added (whose wait may end sooner)."""
        self._changed.clear()
        due = min((waiting.deadline for waiting in self._waiting), default=None)
        seconds = None if due is None else max(0.0, due - time.time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)

    async def _save(self) -> None:
        await self.state.put(UNDECRYPTED_KEY, json.dumps([waiting.as_json() for waiting in self._waiting]))

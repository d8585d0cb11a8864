"""People on a Matrix homeserver, as tests see them: a deliberately plain client-server API client.

Written with aiohttp and the spec, not with matrix-nio, so that tests do not share the bot's library's
assumptions: whatever the bot reads or writes is checked here against raw JSON.

Test people are not the subject under test, so a 429 is waited out (``retry_after_ms``) and retried a few
times; any other non-2xx answer raises ``MatrixError``. A person's HTTP session is created on first use in
the running event loop and closed by ``close()`` (``Homeserver.stop()`` closes every person it made).

    async with Person(url, user_id, token, device_id) as ana:   # or: ana = await homeserver.register("ana")
        room = await ana.create_room(name="Mods", invite=[bob.user_id])
        await bob.join(room)
        await bob.send_text(room, "hello")
        await ana.wait_for_text(room, bob.user_id, r"^hello$")
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from yarl import URL

JsonDict = dict[str, Any]

CLIENT_API = "/_matrix/client/v3"
RATE_LIMIT_RETRIES = 5
POLL_INTERVAL = 0.2
SYNC_LONG_POLL_MS = 5000
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60)
# /sync for invites only needs the invite list: keep timelines and presence out of it.
INVITE_SYNC_FILTER = '{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}},"presence":{"types":[]}}'
_txn_counter = itertools.count()


class MatrixError(Exception):
    """A non-2xx answer from the homeserver."""

    def __init__(
        self, status: int, errcode: str, error: str, request: str = "", retry_after_ms: int | None = None
    ) -> None:
        super().__init__(f"{status} {errcode}: {error}" + (f" ({request})" if request else ""))
        self.status = status
        self.errcode = errcode
        self.error = error
        self.request = request
        self.retry_after_ms = retry_after_ms


def q(part: str) -> str:
    """One path segment, percent-encoded (room ids contain ``!`` and ``:``, event ids ``$``)."""
    return quote(part, safe="")


def new_txn_id() -> str:
    # Unique per process run; retries of one request reuse it, which is what makes them idempotent.
    return f"{uuid.uuid4().hex}-{next(_txn_counter)}"


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    token: str | None = None,
    body: JsonDict | None = None,
    params: dict[str, str] | None = None,
    retries: int = RATE_LIMIT_RETRIES,
) -> JsonDict:
    """One JSON request; waits out up to ``retries`` 429s, raises MatrixError on any other non-2xx answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for attempt in range(retries + 1):
        # encoded=True: the path is already quoted segment by segment; yarl must not re-quote it.
        async with session.request(method, URL(url, encoded=True), json=body, params=params, headers=headers) as r:
            status, data = r.status, await _json_body(r)
        if status == 429 and attempt < retries:
            await asyncio.sleep(data.get("retry_after_ms", 1000) / 1000)
            continue
        if status >= 300:
            where = f"{method} {URL(url, encoded=True).path}"
            error = data.get("error", str(data))
            raise MatrixError(status, data.get("errcode", "?"), error, where, data.get("retry_after_ms"))
        return data
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _json_body(response: aiohttp.ClientResponse) -> JsonDict:
    text = await response.text()
    if not text:
        return {}
    try:
        data = await response.json(content_type=None)
    except ValueError:
        return {"error": text[:500]}
    return data if isinstance(data, dict) else {"value": data}


def relation(event: JsonDict) -> JsonDict:
    content = event.get("content") or {}
    relates = content.get("m.relates_to")
    return relates if isinstance(relates, dict) else {}


def is_edit(event: JsonDict) -> bool:
    return relation(event).get("rel_type") == "m.replace"


def with_current_content(events: list[JsonDict]) -> list[JsonDict]:
    """Give each event a ``current_content``: the newest valid edit's ``m.new_content``, or its own content.

    Edits count only from the original's sender and only while the original is not redacted (spec, "Event
    replacements"); the newest is the greatest (origin_server_ts, event_id). Edits outside the page are taken
    from the server's bundled aggregation (``unsigned.m.relations.m.replace``).
    """
    edits: dict[str, list[JsonDict]] = {}
    for event in events:
        if is_edit(event) and isinstance(event["content"].get("m.new_content"), dict):
            edits.setdefault(relation(event).get("event_id", ""), []).append(event)
    for event in events:
        event["current_content"] = _current_content(event, edits.get(event.get("event_id", ""), []))
    return events


def _current_content(event: JsonDict, page_edits: list[JsonDict]) -> JsonDict:
    content = event.get("content") or {}
    if not content or is_edit(event):
        return content
    bundled = ((event.get("unsigned") or {}).get("m.relations") or {}).get("m.replace")
    candidates = [*page_edits, *([bundled] if isinstance(bundled, dict) and "content" in bundled else [])]
    valid = [
        edit for edit in candidates
        if edit.get("sender") == event.get("sender") and isinstance(edit["content"].get("m.new_content"), dict)
    ]
    if not valid:
        return content
    newest = max(valid, key=lambda edit: (edit.get("origin_server_ts", 0), edit.get("event_id", "")))
    return newest["content"]["m.new_content"]


def text_body(event: JsonDict) -> str | None:
    """The current body of an m.room.message that is not itself an edit; None for anything else."""
    if event.get("type") != "m.room.message" or is_edit(event):
        return None
    body = event.get("current_content", event.get("content", {})).get("body")
    return body if isinstance(body, str) else None


class Person:
    """One logged-in device of one Matrix user."""

    def __init__(
        self, base_url: str, user_id: str, access_token: str, device_id: str, password: str | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.user_id = user_id
        self.access_token = access_token
        self.device_id = device_id
        self.password = password
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._sync_since: str | None = None
        self._invites: deque[str] = deque()

    def __repr__(self) -> str:
        return f"Person({self.user_id!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session; the next request opens a new one."""
        session, self._session, self._session_loop = self._session, None, None
        if session is not None:
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and self._session_loop is not loop:
            # An aiohttp session cannot move between loops, and abandoning it would warn (= fail) later.
            raise RuntimeError(
                f"{self} was first used in another event loop: run every test that uses the homeserver in the "
                'session loop (pytestmark = pytest.mark.asyncio(loop_scope="session"))'
            )
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=REQUEST_TIMEOUT)
            self._session_loop = loop
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: JsonDict | None = None,
        params: dict[str, str] | None = None,
        *,
        retries: int = RATE_LIMIT_RETRIES,
    ) -> JsonDict:
        """An authenticated call; ``path`` is relative to /_matrix/client/v3 unless it starts with ``/_``
        (e.g. ``/_synapse/admin/v1/...``)."""
        url = f"{self.base_url}{path if path.startswith('/_') else CLIENT_API + path}"
        return await call(self._http(), method, url, token=self.access_token, body=body, params=params, retries=retries)

    # Rooms and membership

    async def create_room(
        self,
        name: str | None = None,
        invite: Iterable[str] = (),
        is_direct: bool = False,
        preset: str = "private_chat",
        power_level_content_override: JsonDict | None = None,
        room_version: str | None = None,
    ) -> str:
        body: JsonDict = {"preset": preset, "invite": list(invite), "is_direct": is_direct}
        optional = {"name": name, "power_level_content_override": power_level_content_override,
                    "room_version": room_version}
        body.update({key: value for key, value in optional.items() if value is not None})
        return (await self.request("POST", "/createRoom", body))["room_id"]

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.request("POST", f"/rooms/{q(room_id)}/invite", {"user_id": user_id})

    async def join(self, room_id_or_alias: str) -> str:
        return (await self.request("POST", f"/join/{q(room_id_or_alias)}", {}))["room_id"]

    async def leave(self, room_id: str) -> None:
        await self.request("POST", f"/rooms/{q(room_id)}/leave", {})

    async def kick(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        await self.request("POST", f"/rooms/{q(room_id)}/kick", _with_reason({"user_id": user_id}, reason))

    async def ban(self, room_id: str, user_id: str, reason: str | None = None) -> None:
        await self.request("POST", f"/rooms/{q(room_id)}/ban", _with_reason({"user_id": user_id}, reason))

    async def set_power_level(self, room_id: str, user_id: str, level: int) -> None:
        """Read-modify-write of m.room.power_levels (room v12+ refuses creators here: they outrank it)."""
        levels = await self.room_state(room_id, "m.room.power_levels")
        levels.setdefault("users", {})[user_id] = level
        await self.put_state(room_id, "m.room.power_levels", levels)

    async def put_state(self, room_id: str, event_type: str, content: JsonDict, state_key: str = "") -> str:
        path = f"/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}"
        return (await self.request("PUT", path, content))["event_id"]

    async def room_state(self, room_id: str, event_type: str, state_key: str = "") -> JsonDict:
        """The content of one state event (MatrixError 404 M_NOT_FOUND when there is none)."""
        return await self.request("GET", f"/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}")

    async def joined_members(self, room_id: str) -> list[str]:
        return list((await self.request("GET", f"/rooms/{q(room_id)}/joined_members"))["joined"])

    # Events

    async def send(self, room_id: str, event_type: str, content: JsonDict) -> str:
        path = f"/rooms/{q(room_id)}/send/{q(event_type)}/{q(new_txn_id())}"
        return (await self.request("PUT", path, content))["event_id"]

    async def send_text(self, room_id: str, body: str) -> str:
        return await self.send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})

    async def edit(self, room_id: str, event_id: str, body: str) -> str:
        """Replace a text of one's own, the way clients do (fallback body with a leading ``*``)."""
        new_content = {"msgtype": "m.text", "body": body}
        content = {"msgtype": "m.text", "body": f"* {body}", "m.new_content": new_content,
                   "m.relates_to": {"rel_type": "m.replace", "event_id": event_id}}
        return await self.send(room_id, "m.room.message", content)

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self.send(room_id, "m.reaction", content)

    async def redact(self, room_id: str, event_id: str, reason: str | None = None) -> str:
        path = f"/rooms/{q(room_id)}/redact/{q(event_id)}/{q(new_txn_id())}"
        return (await self.request("PUT", path, _with_reason({}, reason)))["event_id"]

    async def messages(self, room_id: str, limit: int = 100) -> list[JsonDict]:
        """The room's latest ``limit`` events, oldest first, each with its ``current_content`` (edits resolved)."""
        params = {"dir": "b", "limit": str(limit)}
        chunk = (await self.request("GET", f"/rooms/{q(room_id)}/messages", params=params)).get("chunk", [])
        return with_current_content(list(reversed(chunk)))

    async def texts_from(self, room_id: str, sender_user_id: str) -> list[str]:
        """Current bodies of the texts ``sender_user_id`` sent to the room, oldest first (redacted ones omitted)."""
        events = await self.messages(room_id)
        bodies = (text_body(event) for event in events if event.get("sender") == sender_user_id)
        return [body for body in bodies if body is not None]

    # Waiting

    async def wait_for_text(self, room_id: str, sender: str, pattern: str, within: float = 20) -> str:
        """Poll until a current text body from ``sender`` matches ``pattern`` (re.search); returns that body."""
        deadline = time.monotonic() + within
        while True:
            events = await self.messages(room_id)
            bodies = [text_body(event) for event in events if event.get("sender") == sender]
            found = [body for body in bodies if body is not None and re.search(pattern, body)]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no text from {sender} matching {pattern!r} in {room_id} within {within:g} s; "
                    f"recent texts:\n{recent_texts(events)}{self._waiting_report(events)}"
                )
            await asyncio.sleep(POLL_INTERVAL)

    def _waiting_report(self, events: list[JsonDict]) -> str:
        """More to say when a wait fails (an encrypting person: what it could not decrypt)."""
        return ""

    async def wait_for_invite(self, within: float = 20) -> str:
        """The next room this person is invited to (one not returned before), found through /sync."""
        deadline = time.monotonic() + within
        while not self._invites:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.user_id} got no invite within {within:g} s")
            await self._sync_invites(min(SYNC_LONG_POLL_MS, int(remaining * 1000)))
        return self._invites.popleft()

    async def _sync_invites(self, timeout_ms: int) -> None:
        params = {"filter": INVITE_SYNC_FILTER, "timeout": str(timeout_ms)}
        if self._sync_since:
            params["since"] = self._sync_since
        data = await self.request("GET", "/sync", params=params)
        self._sync_since = data["next_batch"]
        self._invites.extend(room for room in data.get("rooms", {}).get("invite", {}) if room not in self._invites)


def recent_texts(events: list[JsonDict], count: int = 20) -> str:
    lines = [f"  {event.get('sender')}: {text_body(event)!r}" for event in events if text_body(event) is not None]
    return "\n".join(lines[-count:]) or "  (none)"


def _with_reason(body: JsonDict, reason: str | None) -> JsonDict:
    return {**body, "reason": reason} if reason is not None else body


async def log_in(base_url: str, user: str, password: str) -> Person:
    """A new device for an existing user (``user`` is a localpart or a full user id)."""
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}
    async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
        data = await call(session, "POST", f"{base_url.rstrip('/')}{CLIENT_API}/login", body=body)
    return Person(base_url, data["user_id"], data["access_token"], data["device_id"], password)


async def direct_room(person: Person, bot_user_id: str, within: float = 20) -> str:
    """A DM from ``person`` to the bot, the way Element starts one; returns once the bot has joined."""
    room_id = await person.create_room(invite=[bot_user_id], is_direct=True, preset="trusted_private_chat")
    await _mark_direct(person, bot_user_id, room_id)
    deadline = time.monotonic() + within
    while bot_user_id not in await person.joined_members(room_id):
        if time.monotonic() > deadline:
            raise AssertionError(f"{bot_user_id} did not join the direct room {room_id} within {within:g} s")
        await asyncio.sleep(POLL_INTERVAL)
    return room_id


async def _mark_direct(person: Person, other_user_id: str, room_id: str) -> None:
    # Clients also record the DM in the m.direct account data; the bot may look at either signal.
    path = f"/user/{q(person.user_id)}/account_data/m.direct"
    try:
        direct = await person.request("GET", path)
    except MatrixError as error:
        if error.status != 404:
            raise
        direct = {}
    direct.setdefault(other_user_id, []).append(room_id)
    await person.request("PUT", path, direct)

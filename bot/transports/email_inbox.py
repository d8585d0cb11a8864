"""The bot's mailbox over IMAP (aioimaplib): every message handed over once across restarts, flagged \\Seen once it
was handled, and left in place until the retention window is over. TLS from the first byte (imaps), or STARTTLS,
or plain to a loopback host only.

Which messages were handled is kept as the mailbox's UIDVALIDITY and the last UID handled (RFC 3501 §2.3.1.1): UIDs
only grow while UIDVALIDITY stays the same; when the server changes it (a rebuilt mailbox), the old UIDs mean
nothing and the mailbox is read again from its unseen messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
import ssl
from dataclasses import dataclass

import aioimaplib

from bot.networks.base import KeyValue
from bot.networks.email_settings import MailServer

STATE_KEY = "email.inbox"
# RFC 2177 asks for a new IDLE at least every 29 minutes; sooner here, because aioimaplib drops the EXISTS that
# a server sends during another command (a SEARCH that found nothing): such a mail waits at most this long.
IDLE_SECONDS = 5 * 60
POLL_SECONDS = 60.0
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_FETCHED_UID = re.compile(rb"UID (\d+)")


class MailboxError(Exception):
    """The server refused or failed (login, select, fetch): the transport logs it and connects again later."""


@dataclass(frozen=True)
class Position:
    uidvalidity: int
    last_uid: int

    def encode(self) -> str:
        return f"{self.uidvalidity}:{self.last_uid}"

    @classmethod
    def decode(cls, stored: str | None) -> Position | None:
        if not stored or ":" not in stored:
            return None
        validity, uid = stored.split(":", 1)
        return cls(int(validity), int(uid)) if validity.isdigit() and uid.isdigit() else None


class Inbox:
    def __init__(
        self, server: MailServer, user: str, password: str, state: KeyValue, timeout: float = 30.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.server = server
        self.tls = tls or ssl.create_default_context()  # certificates and host names verified
        self.user = user
        self.password = password
        self.state = state
        self.timeout = timeout
        self._imap: aioimaplib.IMAP4 | None = None
        self._uidvalidity = 0
        self._idle = False

    async def connect(self) -> None:
        server = self.server
        if server.security == "tls":
            imap: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(server.host, server.port, timeout=self.timeout,
                                                          ssl_context=self.tls)
        else:
            imap = aioimaplib.IMAP4(server.host, server.port, timeout=self.timeout)
        try:
            await _ok(imap.wait_hello_from_server(), "greeting")
            if server.security == "starttls":
                await _starttls(imap, server.host, self.tls, self.timeout)
            await _ok(imap.login(self.user, self.password), "login")
            selected = await _ok(imap.select(server.mailbox), "select")
        except BaseException:
            _drop(imap)  # a refused login must not leave its connection open
            raise
        validity = next((found for line in selected.lines if (found := _UIDVALIDITY.search(line))), None)
        if validity is None:
            _drop(imap)
            raise MailboxError("the server gave no UIDVALIDITY")
        self._uidvalidity = int(validity[1])
        self._idle = imap.has_capability("IDLE")
        self._imap = imap

    async def close(self) -> None:
        imap, self._imap = self._imap, None
        if imap is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(imap.logout(), 5)

    @property
    def connected(self) -> bool:
        return self._imap is not None

    def position_of(self, uid: int) -> str:
        """Where a message is, as long as the mailbox keeps its UIDVALIDITY: "UIDVALIDITY:UID"."""
        return f"{self._uidvalidity}:{uid}"

    async def unhandled(self) -> list[int]:
        """The UIDs of the messages not yet handled, oldest first (fetched one by one: a mailbox that waited a
        week must not be read into memory at once)."""
        imap = self._connected()
        position = Position.decode(await self.state.get(STATE_KEY))
        if position is not None and position.uidvalidity == self._uidvalidity:
            found = await _ok(imap.uid_search(f"UID {position.last_uid + 1}:*"), "search")
            floor = position.last_uid
        else:
            found = await _ok(imap.uid_search("UNSEEN"), "search")
            floor = 0
        # `n:*` always matches the highest UID, handled or not (RFC 3501 §6.4.8): the floor drops it.
        uids = sorted(int(word) for line in found.lines[:-1] for word in line.split() if word.isdigit())
        return [uid for uid in uids if uid > floor]

    async def new_messages(self) -> list[tuple[int, bytes]]:
        """(UID, raw message) of each message not yet handled, oldest first; not flagged \\Seen by reading."""
        messages = []
        for uid in await self.unhandled():
            raw = await self.fetch(uid)
            if raw is not None:
                messages.append((uid, raw))
        return messages

    async def handled(self, uid: int) -> None:
        """The message was handled: flagged \\Seen, and never handed over again (also after a restart)."""
        imap = self._connected()
        await _ok(imap.uid("store", str(uid), "+FLAGS.SILENT", r"(\Seen)"), "store")
        await self.state.put(STATE_KEY, Position(self._uidvalidity, uid).encode())

    async def delete_handled(self, arrived_before: datetime.date) -> int:
        """Delete the handled messages that arrived before that day (IMAP dates have no time); returns how many."""
        imap = self._connected()
        position = Position.decode(await self.state.get(STATE_KEY))
        if position is None or position.uidvalidity != self._uidvalidity:
            return 0
        found = await _ok(imap.uid_search(f"UID 1:{position.last_uid} BEFORE {_imap_date(arrived_before)}"),
                          "search")
        uids = [int(word) for line in found.lines[:-1] for word in line.split() if word.isdigit()]
        if not uids:
            return 0
        await self.delete(uids)
        return len(uids)

    async def wait_for_mail(self) -> None:
        """Until the server says something changed (IDLE), or a while has passed (polling)."""
        imap = self._connected()
        if not self._idle:
            await asyncio.sleep(POLL_SECONDS)
            return
        idle = await imap.idle_start(timeout=IDLE_SECONDS)
        try:
            await imap.wait_server_push(timeout=IDLE_SECONDS)
        except TimeoutError:
            pass
        finally:
            imap.idle_done()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle, self.timeout)

    async def delete(self, uids: list[int]) -> None:
        """Delete these messages now (a person's mail on `forget`)."""
        if not uids:
            return
        imap = self._connected()
        numbers = ",".join(str(uid) for uid in uids)
        await _ok(imap.uid("store", numbers, "+FLAGS.SILENT", r"(\Deleted)"), "store")
        if "UIDPLUS" in imap.protocol.capabilities:
            await _ok(imap.uid("expunge", numbers), "expunge")
        else:
            await _ok(imap.expunge(), "expunge")  # a mailbox of the bot's own: nothing else is marked deleted

    async def from_header_matches(self, text: str) -> list[tuple[int, bytes]]:
        """(UID, From header) of the messages whose From contains `text` (the server's substring search)."""
        found = await _ok(self._connected().uid_search(f'FROM "{_quoted(text)}"'), "search")
        uids = sorted(int(word) for line in found.lines[:-1] for word in line.split() if word.isdigit())
        headers = []
        for uid in uids:
            header = await self._fetch(uid, "BODY.PEEK[HEADER.FIELDS (FROM)]")
            if header is not None:
                headers.append((uid, header))
        return headers

    async def fetch(self, uid: int) -> bytes | None:
        """The raw message, or None when it was expunged meanwhile."""
        return await self._fetch(uid, "BODY.PEEK[]")

    async def _fetch(self, uid: int, part: str) -> bytes | None:
        response = await _ok(self._connected().uid("fetch", str(uid), f"(UID {part})"), "fetch")
        lines = response.lines
        for index, line in enumerate(lines[:-1]):
            match = _FETCHED_UID.search(line) if isinstance(line, bytes) and b"FETCH" in line else None
            if match and int(match[1]) == uid and isinstance(lines[index + 1], bytearray):
                return bytes(lines[index + 1])
        return None  # expunged meanwhile

    def _connected(self) -> aioimaplib.IMAP4:
        if self._imap is None:
            raise MailboxError("not connected")
        return self._imap


async def _starttls(imap: aioimaplib.IMAP4, host: str, context: ssl.SSLContext, within: float) -> None:
    """RFC 3501 §6.2.1: STARTTLS, then the connection goes on inside TLS. aioimaplib has no such call
    (iroco-co/aioimaplib#1), so the protocol's transport is upgraded with asyncio's own `start_tls`. Without the
    capability nothing is sent in the clear: the login is refused before it is tried."""
    protocol = imap.protocol
    if "STARTTLS" not in protocol.capabilities:
        raise MailboxError("the IMAP server offers no STARTTLS: use imaps://, or a server that has it")
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=asyncio.get_running_loop(), timeout=within)
    await _ok(protocol.execute(command), "starttls")
    try:
        protocol.transport = await asyncio.get_running_loop().start_tls(
            protocol.transport, protocol, context, server_hostname=host, ssl_handshake_timeout=within)
    except (ssl.SSLError, OSError, TimeoutError) as error:
        raise MailboxError(f"starttls: {type(error).__name__}") from error
    # What the server said before TLS may have been changed by someone on the way: ask again (RFC 3501 §6.2.1).
    await protocol.capability()


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _imap_date(day: datetime.date) -> str:
    """RFC 3501's date: 1-Feb-2026, with English month names whatever the locale."""
    return f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"


def _quoted(text: str) -> str:
    """An IMAP quoted string's content (RFC 3501 §4.3): backslash and quote escaped, no line breaks."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "")


def _drop(imap: aioimaplib.IMAP4) -> None:
    transport = getattr(imap.protocol, "transport", None)
    if transport is not None:
        transport.close()


async def _ok(request: object, what: str) -> aioimaplib.Response:
    try:
        response = await request  # type: ignore[misc]
    except (TimeoutError, OSError, aioimaplib.Abort) as error:
        raise MailboxError(f"{what}: {type(error).__name__}") from error
    if response is None:  # the greeting: wait_hello_from_server answers nothing
        return aioimaplib.Response("OK", [])
    if response.result != "OK":
        # The server's own words may quote the login: only the verb and the status go into logs.
        raise MailboxError(f"{what} refused ({response.result})")
    return response

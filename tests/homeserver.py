"""A real Synapse homeserver for tests: one process on 127.0.0.1, SQLite, everything in one directory.

    async with Homeserver() as hs:                 # or: await hs.start() ... await hs.stop()
        ana = await hs.register("ana")             # a Person (tests/matrix_people.py)
        bot = await hs.register("relay", admin=True)
        await hs.exempt_from_rate_limits(ana.user_id)
        await hs.restart()                         # same port, same database: tokens stay valid

Only the client API listens (no federation, no TLS). Rate limits on logins, registrations, joins, invites and
room creation are lifted for test people; ``rc_message`` (every event a user sends, including joins,
invites and room creation itself) keeps Synapse's default of 0.2/s with a burst of 10, because the bot's
handling of 429s is under test. Lift it per user with ``exempt_from_rate_limits``.

Synapse logs at INFO to ``log_path`` only (its stdout/stderr go there too); ``log_tail()`` for failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp

from tests.matrix_people import REQUEST_TIMEOUT, MatrixError, Person, call, log_in, q

START_WITHIN = 60.0
STOP_WITHIN = 10.0
POLL_INTERVAL = 0.05
DEFAULT_PASSWORD = "correct horse battery staple"
ADMIN_LOCALPART = "harness-admin"
_names = itertools.count(1)
# Generous enough that no test person ever waits on them; rc_message is left alone on purpose.
UNLIMITED = {"per_second": 1000, "burst_count": 1000}
LIFTED_RATE_LIMITS: dict[str, Any] = {
    "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
    "rc_registration": UNLIMITED,
    "rc_registration_token_validity": UNLIMITED,
    "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
    "rc_joins_per_room": UNLIMITED,
    "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED},
    "rc_third_party_invite": UNLIMITED,
    "rc_room_creation": UNLIMITED,
    "rc_3pid_validation": UNLIMITED,
    "rc_media_create": UNLIMITED,
    "rc_presence": {"per_user": UNLIMITED},
    "rc_delayed_event_mgmt": UNLIMITED,
    "rc_reports": UNLIMITED,
    "rc_user_directory": UNLIMITED,
    "rc_profile": UNLIMITED,
    "rc_key_requests": UNLIMITED,
}


def fresh_name(prefix: str) -> str:
    """A user name no other test has taken (the homeserver is shared by the whole session)."""
    return f"{prefix}-{next(_names)}"


def free_port() -> int:
    # The port is free when we look; Synapse binds it a moment later (a race we accept in tests).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def registration_mac(secret: str, nonce: str, username: str, password: str, admin: bool) -> str:
    """HMAC-SHA1 over nonce NUL username NUL password NUL admin|notadmin, as the shared-secret API wants."""
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(), b"admin" if admin else b"notadmin"]))
    return mac.hexdigest()


class Homeserver:
    """One Synapse process for tests; see the module docstring."""

    def __init__(self, server_name: str = "relay.test", directory: Path | None = None) -> None:
        self.server_name = server_name
        # A directory we were given is left behind (pytest's tmp dirs keep the log); one we made is removed.
        self._own_directory = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="synapse-"))
        self.port = free_port()
        self.secret = secrets.token_hex(16)
        self._process: asyncio.subprocess.Process | None = None
        self._people: list[Person] = []
        self._admin: Person | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "homeserver.log"

    @property
    def config_path(self) -> Path:
        return self.directory / "homeserver.yaml"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.returncode is None else None

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # Lifecycle

    async def start(self) -> None:
        """Write the configuration (first time only) and start Synapse; returns once it answers."""
        if not self.config_path.exists():
            self._write_config()
        await self._start_process()

    async def stop(self) -> None:
        """Stop Synapse, close every person it registered, and remove a directory it created itself."""
        for person in self._people:
            await person.close()
        await self._stop_process()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    async def restart(self) -> None:
        """Stop and start again on the same port and database: users, rooms and access tokens survive.

        People's requests in flight during the restart fail (connection errors); later ones work.
        """
        await self._stop_process()
        # Pooled keep-alive connections died with the process; let people open fresh ones.
        for person in self._people:
            await person.close()
        await self._start_process()

    async def _start_process(self) -> None:
        if self.pid is not None:
            raise RuntimeError("Synapse is already running")
        self._log_event("starting Synapse")
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "synapse.app.homeserver", "-c", str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=self.directory,
            )
        await self._wait_until_ready()

    async def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_WITHIN
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while not await self._answers(session):
                if self.pid is None:
                    await self._stop_process()
                    raise RuntimeError(f"Synapse exited while starting; log tail:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    await self._stop_process()
                    raise RuntimeError(f"Synapse did not answer in {START_WITHIN:g} s; log tail:\n{self.log_tail()}")
                await asyncio.sleep(POLL_INTERVAL)

    async def _answers(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.url}/_matrix/client/versions") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # ProcessLookupError: it may exit between our look at returncode and the signal.
        if process.returncode is None:
            self._log_event("stopping Synapse")
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_WITHIN)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # Synapse ignored SIGTERM for too long; SQLite recovers from that
            await process.wait()

    def _log_event(self, what: str) -> None:
        # A marker line in the log, so a tail shows where one run of the process ends and the next begins.
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"---- test harness: {what} ({time.strftime('%H:%M:%S')}) ----\n")

    # Inspection

    def log_tail(self, n: int = 80) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log yet)"
        return "\n".join(lines[-n:])

    def rss_kib(self) -> int | None:
        """Synapse's resident memory (VmRSS, KiB), while it runs on Linux."""
        if self.pid is None:
            return None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None

    # People

    async def register(
        self,
        username: str,
        password: str = DEFAULT_PASSWORD,
        admin: bool = False,
        *,
        displayname: str | None = None,
        exempt: bool = False,
    ) -> Person:
        """A new user through the shared-secret admin API, logged in on one device.

        ``exempt=True`` also lifts rc_message for them (see ``exempt_from_rate_limits``).
        """
        url = f"{self.url}/_synapse/admin/v1/register"
        async with aiohttp.ClientSession(timeout=REQUEST_TIMEOUT) as session:
            nonce = (await call(session, "GET", url))["nonce"]
            body = {"nonce": nonce, "username": username, "password": password, "admin": admin,
                    "mac": registration_mac(self.secret, nonce, username, password, admin)}
            if displayname is not None:
                body["displayname"] = displayname
            data = await call(session, "POST", url, body=body)
        person = self._track(Person(self.url, data["user_id"], data["access_token"], data["device_id"], password))
        if exempt:
            await self.exempt_from_rate_limits(person.user_id)
        return person

    async def log_in(self, user: str, password: str = DEFAULT_PASSWORD) -> Person:
        """A new device for an existing user (localpart or user id), closed by ``stop()``."""
        return self._track(await log_in(self.url, user, password))

    async def exempt_from_rate_limits(self, user_id: str) -> None:
        """Lift every rate limit for one user (Synapse reads a 0/s message override as "not limited")."""
        admin = await self._admin_person()
        path = f"/_synapse/admin/v1/users/{q(user_id)}/override_ratelimit"
        await admin.request("POST", path, {"messages_per_second": 0, "burst_count": 0})

    async def _admin_person(self) -> Person:
        if self._admin is None:
            try:
                self._admin = await self.register(ADMIN_LOCALPART, admin=True)
            except MatrixError as error:
                if error.errcode != "M_USER_IN_USE":
                    raise
                self._admin = await self.log_in(ADMIN_LOCALPART)
        return self._admin

    def _track(self, person: Person) -> Person:
        self._people.append(person)
        return person

    # Configuration

    def _write_config(self) -> None:
        log_config = self.directory / "log.yaml"
        # JSON is YAML: no YAML writer needed.
        log_config.write_text(json.dumps(self._log_config(), indent=2), encoding="utf-8")
        self.config_path.write_text(json.dumps(self._config(log_config), indent=2), encoding="utf-8")

    def _config(self, log_config: Path) -> dict[str, Any]:
        listener = {"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                    "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}
        return {
            "server_name": self.server_name,
            "public_baseurl": f"{self.url}/",
            "pid_file": str(self.directory / "homeserver.pid"),
            "listeners": [listener],
            "database": {"name": "sqlite3", "args": {"database": str(self.directory / "homeserver.db")}},
            "log_config": str(log_config),
            "media_store_path": str(self.directory / "media_store"),
            # Synapse generates the key on first start if the file is missing.
            "signing_key_path": str(self.directory / "signing.key"),
            "registration_shared_secret": self.secret,
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "enable_registration": False,
            "report_stats": False,
            "bcrypt_rounds": 4,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "presence": {"enabled": False},
            "url_preview_enabled": False,
            **LIFTED_RATE_LIMITS,
        }

    def _log_config(self) -> dict[str, Any]:
        return {
            "version": 1,
            "formatters": {"precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"}},
            # Synapse's formatter needs %(request)s, which its context filter provides.
            "filters": {"context": {"()": "synapse.logging.context.LoggingContextFilter", "request": ""}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise", "filters": ["context"],
                                  "filename": str(self.log_path), "encoding": "utf-8"}},
            "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }


__all__ = ["DEFAULT_PASSWORD", "Homeserver", "MatrixError", "Person", "fresh_name"]

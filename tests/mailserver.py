"""A real mail system on loopback for tests: Dovecot (IMAP in, LMTP delivery) and an aiosmtpd SMTP server.

How to use it in a test module:

    from tests.mailserver import MailSystem

    pytest_plugins = ("tests.mailserver",)   # only until tests/conftest.py lists it; harmless after

    def test_something(mail_system: MailSystem) -> None:
        ana = mail_system.add_user("ana-something")       # addresses are session-wide: keep them unique
        bob = mail_system.add_user("bob-something")
        mail_system.send(ana, message, to=[bob.address])  # stdlib smtplib, AUTH PLAIN, no TLS
        mail_system.wait_for(bob, lambda m: m["Subject"] == "hi")   # stdlib imaplib

The helpers block (stdlib clients); an async test calls them through ``asyncio.to_thread`` or uses the
``a``-prefixed wrappers. The SMTP server runs in its own thread and event loop, so a blocking client in the
test's loop never deadlocks it, and the fixture needs no event loop at all.

One mail system per test session (~0.1 s to start, ~1 s to stop). Both servers listen on 127.0.0.1 only, at free ports:

* Dovecot (``dovecot -F``, a config of our own in a temp dir, nothing system-wide): IMAP with plain-text
  logins allowed (loopback, ``ssl = no``), one passwd-file per user that ``add_user`` writes (Dovecot reads a
  new one at the user's first lookup), Maildir, and LMTP on an inet listener for delivery.
* SMTP (aiosmtpd): AUTH PLAIN/LOGIN required without TLS; every accepted message is handed to each recipient
  through Dovecot's LMTP. ``bounce(address)`` makes RCPT answer ``550 5.1.1``, ``defer(address, n)`` makes the
  next n RCPTs answer ``451 4.2.0``; unknown local users get the 550 too, other domains ``550 5.7.1``.

A wrong IMAP password is refused after ~0.5 s (Dovecot's login process; not configurable in 2.3); the 2 s auth
failure delay and the per-IP auth penalty are off, since every test client comes from 127.0.0.1.

When a test that used the mail system fails, its report gets a "Dovecot log tail" section; the whole log is
copied to ``dovecot.log`` under pytest's basetemp at session end.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import grp
import imaplib
import itertools
import logging
import os
import pwd
import re
import secrets
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

DOVECOT = "/usr/sbin/dovecot"
DOMAIN = "relay.test"
HOST = "127.0.0.1"
START_WITHIN = 10.0
STOP_WITHIN = 5.0
POLL_INTERVAL = 0.05
CLIENT_TIMEOUT = 10.0
LOG_TAIL_LINES = 60
SKIP_REASON = "Dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd): email tests not run"
_names = itertools.count(1)
_EXTENSION_OF = {"BODY": "8bitmime", "SMTPUTF8": "smtputf8"}  # MAIL FROM parameter -> the EHLO keyword it needs


def fresh_local(prefix: str) -> str:
    """A local part no other test has taken (the mail system is shared by the whole session)."""
    return f"{prefix}-{next(_names)}"


def free_port() -> int:
    # Free when we look; Dovecot binds it a moment later (a race we accept, and retry on, in tests).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Mailbox:
    """A test person's account: the address is also the login for IMAP and SMTP."""

    address: str
    password: str


@dataclass
class Accepted:
    """One message the SMTP server accepted, as it was on the wire."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes


def dovecot_version() -> tuple[int, int]:
    """Major and minor, from e.g. "2.3.19.1 (9b53102964)" or "2.4.1-4 (7d8c0e5759)"."""
    out = subprocess.run([DOVECOT, "--version"], capture_output=True, text=True, check=True, timeout=10).stdout
    found = re.match(r"(\d+)\.(\d+)", out.strip())
    if found is None:
        raise RuntimeError(f"cannot read the Dovecot version from {out!r}")
    return int(found[1]), int(found[2])


def dovecot_config(directory: Path, imap_port: int, lmtp_port: int, account: pwd.struct_passwd) -> str:
    """A self-contained config: every path in ``directory``, every listener on 127.0.0.1, one unix user."""
    version = dovecot_version()
    services = _services(imap_port, lmtp_port, "listen" if version >= (2, 4) else "address")
    if version >= (2, 4):
        # 2.4 renamed many settings and requires these version headers. Written from the 2.4 docs but not run
        # here (Debian 12 ships 2.3.19; Debian 13 ships 2.4): the first 2.4 machine may need it adjusted.
        return f"""\
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
protocols = imap lmtp
listen = {HOST}
# STARTTLS offered with a certificate made at start (MailSystem.tls_context trusts it); logins in the clear stay
# allowed on loopback, so the bot's plain setting (a loopback host) is tested too.
ssl = yes
ssl_server_cert_file = {directory}/tls/cert.pem
ssl_server_key_file = {directory}/tls/key.pem
auth_allow_cleartext = yes
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = {account.pw_name}
default_internal_group = {_group_name(account.pw_gid)}
default_login_user = {account.pw_name}
first_valid_uid = {account.pw_uid}
last_valid_uid = {account.pw_uid}
mail_driver = maildir
mail_path = ~/Maildir
mail_fsync = never
passdb passwd-file {{
  passwd_file_path = {directory}/users/%{{user}}
}}
userdb passwd-file {{
  passwd_file_path = {directory}/users/%{{user}}
}}
{services}"""
    return f"""\
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
protocols = imap lmtp
listen = {HOST}
# Loopback only, test passwords only: STARTTLS offered with a certificate made at start (MailSystem.tls_context
# trusts it), and plain-text logins allowed without it, so the bot's plain setting (a loopback host) is tested too.
ssl = yes
ssl_cert = <{directory}/tls/cert.pem
ssl_key = <{directory}/tls/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
# Every client is 127.0.0.1: without this (and the anvil socket below), one test's wrong password would slow
# every later login down, by a 2 s failure delay and then anvil's growing per-IP penalty.
auth_failure_delay = 0
# Dovecot runs unprivileged as this one user (it cannot switch users): every service and every mailbox is it.
default_internal_user = {account.pw_name}
default_internal_group = {_group_name(account.pw_gid)}
default_login_user = {account.pw_name}
first_valid_uid = {account.pw_uid}
last_valid_uid = {account.pw_uid}
mail_location = maildir:~/Maildir
# Test mail need not survive a power cut; fsyncs would only slow every delivery down.
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {directory}/users/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {directory}/users/%u
}}
{services}"""


def _services(imap_port: int, lmtp_port: int, address_key: str) -> str:
    """The listeners, the same in both versions but for the name of a listener's address (2.4: `listen`)."""
    return f"""\
# Unprivileged: no chroot (it needs root).
service anvil {{
  chroot =
  # Mode 0 is Dovecot's documented way to switch the auth penalty off (auth cannot connect, so it skips it).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    {address_key} = {HOST}
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    {address_key} = {HOST}
    port = {lmtp_port}
  }}
}}
"""


def _group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


def _service_account() -> pwd.struct_passwd:
    """The unix user Dovecot runs as: ourselves, or, when we are root, an unprivileged one.

    Dovecot refuses mail access for uid 0, and a root Dovecot would switch to its own users, which cannot
    enter pytest's 0700 temp dirs; an unprivileged Dovecot that owns its own temp dir avoids both.
    """
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in ("dovecot", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and neither a 'dovecot' nor a 'nobody' user exists to run Dovecot as")


class _DropLoginDataDeprecation(logging.Filter):
    """aiosmtpd 1.4 itself sets the deprecated ``Session.login_data`` on every successful AUTH, and logs a
    deprecation warning about it each time: noise about its own internals that no caller can avoid."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Session.login_data is deprecated")


_AIOSMTPD_LOG = logging.getLogger("mail.log")  # aiosmtpd's logger
_AIOSMTPD_LOG.addFilter(_DropLoginDataDeprecation())


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with AUTH required before MAIL, enforced here rather than by ``auth_required``.

    aiosmtpd warns (UserWarning, per connection, in its own thread) when ``auth_required`` is set without TLS;
    under ``filterwarnings = error`` that kills every connection. Loopback tests want exactly that setup, so we
    leave ``auth_required`` off and refuse MAIL from unauthenticated sessions ourselves, with the same 530.
    """

    async def smtp_MAIL(self, arg: str) -> None:
        if self.session is not None and not self.session.authenticated:
            await self.push("530 5.7.0 Authentication required")
            return
        await super().smtp_MAIL(arg)


class RelayController(Controller):
    """A threaded controller on a socket we bound ourselves, so the port is known and free, with no race."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self._sock.listen(64)
        super().__init__(handler, hostname=HOST, port=int(self._sock.getsockname()[1]), **kwargs)

    def factory(self) -> SMTP:
        return RelaySMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


@dataclass
class RelayHandler:
    """The SMTP server's behaviour: who may log in, which recipients are refused, and delivery over LMTP."""

    system: MailSystem
    accepted: list[Accepted] = field(default_factory=list)

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = self.system.check_password(login, password)
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        verdict = self.system.rcpt_verdict(address)
        if verdict is not None:
            return verdict
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        recipients = list(envelope.rcpt_tos)
        try:
            # smtplib blocks; the SMTP server's own loop keeps serving other connections meanwhile.
            await asyncio.to_thread(self.system.deliver, mail_from, recipients, content, envelope.mail_options)
        except (OSError, smtplib.SMTPException) as error:
            return f"451 4.3.0 delivery to the mail store failed: {error}"
        self.accepted.append(Accepted(mail_from, recipients, content))
        return "250 2.0.0 OK: delivered"


class MailSystem:
    """Dovecot plus the SMTP server, and the helpers test people use (stdlib smtplib/imaplib only)."""

    def __init__(self, directory: Path | None = None, domain: str = DOMAIN) -> None:
        self.domain = domain
        self.account = _service_account()
        # Our own temp dir rather than pytest's: an unprivileged Dovecot must be able to enter it (see above).
        self._own_directory = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="relay-mail-"))
        self.imap_host = self.smtp_host = HOST
        self.imap_port = self.lmtp_port = self.smtp_port = 0
        self.log_path = self.directory / "dovecot.log"
        self._users: dict[str, str] = {}
        self._bounced: set[str] = set()
        self._deferred: dict[str, int] = {}
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self.handler = RelayHandler(self)
        self._controller: RelayController | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        for sub in ("run", "state", "home", "users", "tls"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self._make_certificate()
        self.log_path.touch()  # before the chown below: Dovecot appends to it as the service account
        if os.geteuid() == 0:
            for path in [self.directory, *self.directory.rglob("*")]:
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
        for attempt in range(3):
            try:
                self._start_dovecot()
                break
            except RuntimeError as error:
                self._stop_dovecot()
                # A free port taken between our look and Dovecot's bind: try other ports; anything else is fatal.
                if "Address already in use" not in str(error) or attempt == 2:
                    raise RuntimeError(f"Dovecot did not start: {error}") from None
        # No auth_required: RelaySMTP enforces it without aiosmtpd's no-TLS warning (see RelaySMTP).
        self._controller = RelayController(
            self.handler,
            authenticator=self.handler.authenticate,
            auth_require_tls=False,
            # STARTTLS offered with the same certificate as Dovecot's; plain stays allowed on loopback.
            tls_context=self._server_tls(),
            server_hostname=f"mail.{self.domain}",
            ready_timeout=START_WITHIN,
        )
        self._controller.start()
        self.smtp_port = self._controller.port

    def _make_certificate(self) -> None:
        """A self-signed certificate for 127.0.0.1, a day long, for STARTTLS (clients trust it via tls_context)."""
        tls = self.directory / "tls"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")],
            check=True, capture_output=True, stdin=subprocess.DEVNULL,
        )

    def _server_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls = self.directory / "tls"
        context.load_cert_chain(str(tls / "cert.pem"), str(tls / "key.pem"))
        return context

    def tls_context(self) -> ssl.SSLContext:
        """A client context that trusts this mail system's certificate (and verifies the host name against it)."""
        return ssl.create_default_context(cafile=str(self.directory / "tls" / "cert.pem"))

    def _start_dovecot(self) -> None:
        self.imap_port, self.lmtp_port = free_port(), free_port()
        config = self.directory / "dovecot.conf"
        config.write_text(dovecot_config(self.directory, self.imap_port, self.lmtp_port, self.account))
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "run" / "master.pid").unlink()
        # Startup errors (a bad config, a port in use) go to stderr before log_path is open: same file.
        output = self.log_path.open("ab")
        offset = output.tell()  # this attempt's lines only: an earlier attempt's Fatal must not end this one
        as_root = os.geteuid() == 0
        self._process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            user=self.account.pw_uid if as_root else None,
            group=self.account.pw_gid if as_root else None,
            extra_groups=[] if as_root else None,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.directory)},
            start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, which then stops Dovecot itself
        )
        output.close()
        deadline = time.monotonic() + START_WITHIN
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"exited with {self._process.returncode}; log tail:\n{self.log_tail()}")
            if self._imap_greets():
                return
            if b"Fatal:" in self._log_since(offset):  # a service that cannot start: master only retries it
                raise RuntimeError(f"a Dovecot service failed; log tail:\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL)
        raise RuntimeError(f"no IMAP greeting within {START_WITHIN} s; log tail:\n{self.log_tail()}")

    def _log_since(self, offset: int) -> bytes:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read()

    def _imap_greets(self) -> bool:
        try:
            with socket.create_connection((HOST, self.imap_port), timeout=1.0) as sock:
                return sock.recv(256).startswith(b"* OK")
        except OSError:
            return False

    def stop(self, keep_log_at: Path | None = None) -> None:
        """Stop both servers; then the log is copied to ``keep_log_at`` (if given), and a temp dir that this
        MailSystem created is removed with all the mail in it."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        self._stop_dovecot()
        if keep_log_at is not None:
            with contextlib.suppress(OSError):
                shutil.copy(self.log_path, keep_log_at)
                self.log_path = keep_log_at
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _stop_dovecot(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # Dovecot's master stops its children on SIGTERM
        try:
            process.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)  # its own session: the master and any children it left behind
            process.wait(STOP_WITHIN)

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no Dovecot log)"

    # --- users and recipient rules ---------------------------------------------------------------------

    def settings_for(self, mailbox: Mailbox) -> dict[str, str]:
        """The bot's EMAIL_* settings for `mailbox` on this mail system (plain, on loopback: STARTTLS is offered)."""
        return {
            "EMAIL_ADDRESS": mailbox.address,
            "EMAIL_IMAP_URL": f"imap://{self.imap_host}:{self.imap_port}/INBOX",
            "EMAIL_SMTP_URL": f"smtp://{self.smtp_host}:{self.smtp_port}",
            "EMAIL_USER": mailbox.address,
            "EMAIL_PASSWORD": mailbox.password,
        }

    def add_user(self, local: str, password: str | None = None) -> Mailbox:
        """A new account ``local@domain``; Dovecot sees it at its next lookup (it re-reads a changed file)."""
        if not re.fullmatch(r"[a-z0-9][a-z0-9._+-]*", local):  # it names the user's passwd-file and home dir
            raise ValueError(f"local part {local!r}: use lower-case letters, digits and . _ + - only")
        address = f"{local}@{self.domain}"
        password = password or secrets.token_urlsafe(12)
        with self._lock:
            if address in self._users:
                raise ValueError(f"{address} exists already: mail users are session-wide, pick a fresh name")
            self._users[address] = password
            self._write_user(address, password)
        return Mailbox(address, password)

    def _write_user(self, address: str, password: str) -> None:
        # One passwd-file per user: Dovecot stats a passwd-file it has read at most once a second, so a user
        # appended to a shared file could stay unknown for up to a second; a new file is read at first lookup.
        home = self.directory / "home" / address
        users = self.directory / "users"
        staged = users / f".{address}.new"
        staged.write_text(f"{address}:{{PLAIN}}{password}:{self.account.pw_uid}:{self.account.pw_gid}::{home}::\n")
        staged.chmod(0o644)
        staged.replace(users / address)  # atomic: Dovecot never reads half a file

    def check_password(self, login: str, password: str) -> bool:
        with self._lock:
            expected = self._users.get(login.lower())
        return expected is not None and secrets.compare_digest(expected, password)

    def bounce(self, address: str) -> None:
        """From now on RCPT TO this address answers ``550 5.1.1 user unknown`` (a hard bounce)."""
        with self._lock:
            self._bounced.add(address.lower())

    def defer(self, address: str, times: int = 1) -> None:
        """The next ``times`` RCPTs to this address answer ``451 4.2.0`` (try again later)."""
        with self._lock:
            self._deferred[address.lower()] = self._deferred.get(address.lower(), 0) + times

    def rcpt_verdict(self, address: str) -> str | None:
        """The refusal for this recipient, or None to accept it."""
        address = address.lower()
        with self._lock:
            if address in self._bounced:
                return "550 5.1.1 user unknown"
            if self._deferred.get(address, 0) > 0:
                self._deferred[address] -= 1
                return "451 4.2.0 mailbox temporarily unavailable, try again later"
            if address.rpartition("@")[2] != self.domain:
                return "550 5.7.1 relaying denied"
            if address not in self._users:
                return "550 5.1.1 user unknown"
        return None

    @property
    def accepted(self) -> list[Accepted]:
        """Every message the SMTP server accepted this session, in order."""
        return self.handler.accepted

    # --- delivery (SMTP server side) -------------------------------------------------------------------

    def deliver(self, mail_from: str, recipients: Iterable[str], content: bytes, mail_options: list[str]) -> None:
        """Hand one message to Dovecot's LMTP, one transaction per recipient; raises if any is refused.

        One recipient per transaction because LMTP answers DATA once per recipient and smtplib.LMTP reads only
        the first answer (the rest would be misread as answers to later commands).
        """
        refused: dict[str, tuple[int, bytes]] = {}
        with smtplib.LMTP(HOST, self.lmtp_port, timeout=CLIENT_TIMEOUT) as lmtp:
            lmtp.ehlo(f"mail.{self.domain}")
            # Pass on only what Dovecot's LMTP says it supports (BODY=8BITMIME is the 8BITMIME extension).
            options = [o for o in mail_options if lmtp.has_extn(_EXTENSION_OF.get(o.partition("=")[0].upper(), o))]
            for recipient in recipients:
                try:
                    refused.update(lmtp.sendmail(mail_from, [recipient], content, mail_options=options))
                except smtplib.SMTPRecipientsRefused as error:
                    refused.update(error.recipients)
                    lmtp.rset()
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)

    # --- helpers for test people (stdlib clients only) -------------------------------------------------

    def send(self, sender: Mailbox, message: bytes | EmailMessage, to: Iterable[str] | None = None) -> None:
        """Send as ``sender`` through the SMTP server with AUTH; ``to`` defaults to the message's recipients."""
        with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=CLIENT_TIMEOUT) as smtp:
            smtp.login(sender.address, sender.password)
            if isinstance(message, EmailMessage):
                smtp.send_message(message, from_addr=sender.address, to_addrs=list(to) if to else None)
            else:
                if not to:
                    raise ValueError("raw bytes need explicit recipients (to=...)")
                smtp.sendmail(sender.address, list(to), message)

    def imap(self, mailbox: Mailbox) -> imaplib.IMAP4:
        """A logged-in IMAP connection for this mailbox; the caller closes it (``with`` works)."""
        client = imaplib.IMAP4(self.imap_host, self.imap_port, timeout=CLIENT_TIMEOUT)
        try:
            client.login(mailbox.address, mailbox.password)
        except BaseException:
            client.shutdown()  # a refused login must not leak the socket (a ResourceWarning, so an error)
            raise
        return client

    def inbox(self, mailbox: Mailbox) -> list[EmailMessage]:
        """Every message in the INBOX, oldest first, read over IMAP (read-only: nothing gets marked seen)."""
        with self.imap(mailbox) as client:
            client.select("INBOX", readonly=True)
            _, data = client.search(None, "ALL")
            messages: list[EmailMessage] = []
            for number in data[0].split():
                _, parts = client.fetch(number, "(BODY.PEEK[])")
                # IMAP hands out CRLF lines; as LF, bodies compare equal to the str a test put in.
                raw = next(p[1] for p in parts if isinstance(p, tuple)).replace(b"\r\n", b"\n")
                parsed = email.message_from_bytes(raw, policy=email.policy.default)
                assert isinstance(parsed, EmailMessage)
                messages.append(parsed)
            return messages

    def wait_for(
        self, mailbox: Mailbox, predicate: Callable[[EmailMessage], bool] = lambda _: True, timeout: float = 10.0
    ) -> EmailMessage:
        """The first INBOX message that satisfies ``predicate``, polling until ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.inbox(mailbox):
                if predicate(message):
                    return message
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching message for {mailbox.address} within {timeout} s")
            time.sleep(0.1)

    async def asend(self, sender: Mailbox, message: bytes | EmailMessage, to: Iterable[str] | None = None) -> None:
        await asyncio.to_thread(self.send, sender, message, to)

    async def ainbox(self, mailbox: Mailbox) -> list[EmailMessage]:
        return await asyncio.to_thread(self.inbox, mailbox)

    async def await_for(
        self, mailbox: Mailbox, predicate: Callable[[EmailMessage], bool] = lambda _: True, within: float = 10.0
    ) -> EmailMessage:
        # ``within``, not ``timeout``: an async ``timeout`` parameter reads as asyncio's own (ruff ASYNC109).
        return await asyncio.to_thread(self.wait_for, mailbox, predicate, within)


@pytest.fixture(scope="session")
def mail_system(tmp_path_factory: pytest.TempPathFactory) -> Generator[MailSystem, None, None]:
    """One Dovecot and one SMTP server for the whole session; skipped, with the reason, without Dovecot."""
    if not os.access(DOVECOT, os.X_OK):
        pytest.skip(SKIP_REASON)
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (it makes the mail system's STARTTLS certificate): email tests not run")
    system = MailSystem()
    try:
        system.start()
        yield system
    finally:
        # The log is kept where pytest keeps its temp dirs; the mail goes with our own temp dir.
        system.stop(keep_log_at=tmp_path_factory.getbasetemp() / "dovecot.log")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    system = getattr(item, "funcargs", {}).get("mail_system")
    if isinstance(report, pytest.TestReport) and report.failed and isinstance(system, MailSystem):
        # A section, not a print: pytest shows it with the failure, next to captured output.
        report.sections.append(("Dovecot log tail", system.log_tail()))
    return report

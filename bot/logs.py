"""Logging set-up, and the redaction that keeps secrets out of every log line and out of `--check` output.

Secrets are known two ways: the values in the settings (Telegram token, Matrix password and access token,
translator keys), registered exactly, and the shapes of secrets learnt only at run time (the access token a Matrix
login returns, a token in a URL a library logs at DEBUG), caught by patterns. Both apply to every record, of the
bot's own loggers and of third-party libraries alike, at every level.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

from handlers.loggable import without_ids

if TYPE_CHECKING:
    from bot.config import Settings

SECRET = "[secret]"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A value this short would, matched inside words, blank out ordinary text ("pass" in "passed"): it is replaced
# only where it stands alone. Longer values are replaced anywhere, since libraries glue tokens to other text
# ("/bot<token>/getUpdates").
_WHOLE_WORD_BELOW = 8

_KEY_NAMES = r"[A-Za-z_]*(?:password|access_token|refresh_token|api_key|auth_key|secret)|token"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A Telegram bot token, "<bot id>:<35 characters>": PTB logs request URLs, "/bot<token>/getUpdates", at DEBUG.
    (re.compile(r"\d{5,}:[A-Za-z0-9_-]{30,}"), SECRET),
    # Synapse's access and refresh tokens and the Matrix Authentication Service's compatibility tokens.
    (re.compile(r"\b(?:syt|syr|mct|mcr)_[A-Za-z0-9_=-]{8,}"), SECRET),
    # The same names as query or form parameters: nio and requests log URLs, LibreTranslate takes its key so.
    (re.compile(rf"(?i)\b({_KEY_NAMES})=[^&\s\"'#]+"), rf"\1={SECRET}"),
    # ... and as JSON or a Python dict's repr: a login body, a response logged whole.
    (
        re.compile(rf"""(?i)(["'](?:{_KEY_NAMES})["']\s*:\s*)(["'])(?:\\.|(?!\2).)*\2"""),
        rf"\1\2{SECRET}\2",
    ),
    # An Authorization header, as sent or as a dict's repr: "Authorization: Bearer …", "DeepL-Auth-Key …".
    (re.compile(r"""(?i)(\bauthorization["']?\s*[:=]\s*["']?)(?:[\w-]+\s+)?[^\s"',}]+"""), rf"\1{SECRET}"),
    # A bearer token on its own; one that looks like a token (a digit, "_" or "."), so that prose is left alone.
    (re.compile(r"(?i)\b(bearer\s+)(?=\S*[\d_.])[A-Za-z0-9._~+/=-]{8,}"), rf"\1{SECRET}"),
)
_PLAIN = logging.Formatter()  # formats tracebacks for redaction as the standard formatters would


class Redactor:
    """Replaces known secret values, and anything shaped like a secret, with "[secret]"."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._exact: re.Pattern[str] | None = None
        for value in secrets:
            self.add_secret(value)

    def add_secret(self, value: str | None) -> None:
        """Redact `value` from now on, also as it appears URL-encoded or JSON-escaped."""
        if not value or not value.strip():
            return
        forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
        with self._lock:
            if forms <= self._values:
                return
            self._values |= forms
            alternatives = [_alternative(form) for form in sorted(self._values, key=len, reverse=True)]
            # Swapped in whole: log calls from other threads read the attribute without the lock.
            self._exact = re.compile("|".join(alternatives))

    def redact(self, text: str) -> str:
        exact = self._exact
        if exact is not None:
            text = exact.sub(SECRET, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


def _alternative(value: str) -> str:
    escaped = re.escape(value)
    return escaped if len(value) >= _WHOLE_WORD_BELOW else rf"(?<![\w]){escaped}(?![\w])"


class RedactingFilter(logging.Filter):
    """Redacts each record it sees: its message (formatted with its arguments), traceback and stack.

    It has to sit on handlers, not on loggers: a logger's filters are consulted only for records logged to
    that very logger, and records of child loggers ("telegram.ext", "nio", "httpx") propagate to the root
    logger's handlers without passing the root logger's filters.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.redactor = Redactor(secrets)

    def add_secret(self, value: str | None) -> None:
        self.redactor.add_secret(value)

    def redact(self, text: str) -> str:
        return self.redactor.redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(_message(record))
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            # exc_info stays for formatters that look at it; they use exc_text when it is set.
            record.exc_text = self.redact(record.exc_text or _PLAIN.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:
        # Arguments that do not fit the format: the handler would print them raw in its error report.
        return f"{record.msg} (arguments not matching the format: {record.args!r})"


def secrets_of(settings: Settings) -> list[str | None]:
    from bot.networks import by_name

    secrets = [settings.libretranslate_api_key, settings.deepl_api_key]
    for name, section in settings.networks.items():
        secrets += by_name(name).secrets(section)
    return secrets


def redact(text: str, settings: Settings) -> str:
    """Libraries quote tokens in their errors (PTB: "The token `…` was rejected"): never pass them on."""
    return Redactor(secrets_of(settings)).redact(text)


def install(redacting: RedactingFilter, logger: logging.Logger | None = None) -> None:
    """Put `redacting` on every handler of `logger` (the root logger by default); see RedactingFilter."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(redacting)


def setup_logging(settings: Settings) -> RedactingFilter:
    """Log to stderr at the configured level, every handler of the root logger redacting secrets."""
    logging.basicConfig(format=LOG_FORMAT)  # a handler unless one is there already (a test's, a supervisor's)
    redacting, _restore = configure(settings, logging.getLogger().handlers)
    return redacting


# The bot's own loggers; every other one belongs to a library.
OWN_LOGGERS = ("bot", "handlers", "storage", "__main__")


class LibraryDetail(logging.Filter):
    """A library's INFO is the bot's DEBUG: matrix-nio announces every room it joins ("New joined room !…", a
    supporter's direct chat among them), PTB its start-up. Shown only with LOG_LEVEL=DEBUG, and as DEBUG."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in OWN_LOGGERS or record.levelno < logging.INFO:
            return True
        if record.levelno > logging.INFO:
            # A library's warning names what it was handling: nio's crypto "Missing Olm session for user @x:…
            # and device ABCDEFGHIJ". What stays is what went wrong.
            record.msg, record.args = _without_library_ids(_message(record)), None
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.level <= logging.DEBUG


# Beyond the ids of handlers.loggable: a Matrix device id (ten capitals, nio's and Synapse's form) and a
# curve25519 or ed25519 key (43 characters of unpadded base64), which name one person's device.
_DEVICE_ID = re.compile(r"\b[A-Z]{10}\b")
_DEVICE_KEY = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{43}(?![A-Za-z0-9+/=])")


def _without_library_ids(text: str) -> str:
    return _DEVICE_KEY.sub("[key]", _DEVICE_ID.sub("[device]", without_ids(text)))


def configure(settings: Settings, handlers: Iterable[logging.Handler]) -> tuple[RedactingFilter, Callable[[], None]]:
    """The bot's logging on these handlers: its level, secrets redacted, libraries' INFO as DEBUG.

    Returns the filter and a function that undoes all of it (tests run the bot inside their own process).
    """
    root, httpx, imap = logging.getLogger(), logging.getLogger("httpx"), logging.getLogger("aioimaplib")
    old_levels = (root.level, httpx.level, imap.level)
    level = logging.getLevelName(settings.log_level)
    root.setLevel(level)
    # httpx logs every request URL at INFO, and Bot API URLs contain the token: redacted, but noise.
    httpx.setLevel(logging.WARNING)
    # aioimaplib logs the whole IMAP conversation at DEBUG: every mail as it was read, sender and letter.
    imap.setLevel(max(level, logging.INFO))
    redacting, detail = RedactingFilter(secrets_of(settings)), LibraryDetail(level)
    handlers = list(handlers)
    for handler in handlers:
        handler.addFilter(detail)
        handler.addFilter(redacting)

    def restore() -> None:
        root.setLevel(old_levels[0])
        httpx.setLevel(old_levels[1])
        imap.setLevel(old_levels[2])
        for handler in handlers:
            handler.removeFilter(detail)
            handler.removeFilter(redacting)

    return redacting, restore

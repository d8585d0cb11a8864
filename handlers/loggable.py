"""What may go into a log line at INFO and above: no letter text, no account or chat id (see INTERFACE.md,
"What the logs say"). Exceptions and servers' reasons quote what they were handling, so they are reduced first."""

from __future__ import annotations

import logging
import re
import traceback
from pathlib import PurePath


def failure_summary(error: BaseException) -> str:
    """`KeyError at handlers/cards.py:88 in next_send`: where it failed, without the message (which may quote
    a letter's text or an account)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return type(error).__name__
    last = frames[-1]
    where = "/".join(PurePath(last.filename).parts[-2:])
    return f"{type(error).__name__} at {where}:{last.lineno} in {last.name}"


_ID_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "[email]"),
    # Matrix user ids, room ids and aliases, as servers quote them ("User @x:example.org not in room !r:…").
    (re.compile(r"[@!#+][^\s:'\"<>]+:[A-Za-z0-9.-]+(?::\d+)?"), "[id]"),
    # Telegram's user and chat ids: numbers of five digits and more, a minus sign in front for groups.
    (re.compile(r"(?<![\w.])-?\d{5,}(?![\w.])"), "[id]"),
)


def without_ids(text: str) -> str:
    """`text` (a server's reason for a failure) with the email addresses and platform ids it may quote taken out,
    for log lines at INFO and above, which name people and chats by number only."""
    for pattern, replacement in _ID_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def log_failure(log: logging.Logger, what: str, error: BaseException, level: int = logging.ERROR) -> None:
    """`what` failed: at `level` only the exception's type and place (its message may quote a letter or an
    account), the whole traceback at DEBUG, for an operator who asked for it."""
    log.log(level, "%s: %s", what, failure_summary(error))
    log.debug("%s", what, exc_info=error)

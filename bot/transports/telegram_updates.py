"""Reading updates so that no update can stop the bot.

python-telegram-bot parses a whole getUpdates batch at once: one update it cannot parse makes it raise, log the
raw batch at CRITICAL (letters, ids and names in the log) and fetch the same batch again, forever. An update
whose ids have the wrong types parses, then kills PTB's update fetcher (it uses them as dict keys), after
which nothing is handled and nothing is logged. `TolerantBot.get_updates` reads each update on its own and
checks what PTB will rely on; an update that fails either is replaced by an empty one with its id, so it is
confirmed like any other, and logged by id and error type only.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from telegram import Update
from telegram._utils.defaultvalue import DEFAULT_NONE, DefaultValue
from telegram.ext import ExtBot

from handlers.text import is_clean_id

log = logging.getLogger(__name__)


class UnsoundUpdate(TypeError):
    """An update PTB parsed but whose fields do not have the types the Bot API gives them."""


class TolerantBot(ExtBot):
    async def get_updates(  # type: ignore[override]
        self,
        offset: int | None = None,
        limit: int | None = None,
        timeout: timedelta | int | None = None,  # noqa: ASYNC109  (PTB's signature: the long poll's wait)
        allowed_updates: Any = None,
        *,
        read_timeout: Any = DEFAULT_NONE,
        write_timeout: Any = DEFAULT_NONE,
        connect_timeout: Any = DEFAULT_NONE,
        pool_timeout: Any = DEFAULT_NONE,
        api_kwargs: dict[str, Any] | None = None,
    ) -> tuple[Update, ...]:
        data = {"timeout": timeout, "offset": offset, "limit": limit, "allowed_updates": allowed_updates}
        # As PTB does: the long poll's own timeout on top of the request's read timeout.
        base = (read_timeout or 0) if not isinstance(read_timeout, DefaultValue) else (
            self._request[0].read_timeout or 0)
        waited = timeout.total_seconds() if isinstance(timeout, timedelta) else (timeout or 0)
        result = await self._post(
            "getUpdates", data, read_timeout=base + waited, write_timeout=write_timeout,
            connect_timeout=connect_timeout, pool_timeout=pool_timeout, api_kwargs=api_kwargs,
        )
        return tuple(update for raw in (result or []) if (update := self._read(raw)) is not None)

    def _read(self, raw: Any) -> Update | None:
        update_id = raw.get("update_id") if isinstance(raw, dict) else None
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            log.warning("telegram: an update without an id was skipped")
            return None
        try:
            update = Update.de_json(raw, self)
            check(update)
        except Exception as error:
            log.warning("telegram: update %d could not be read (%s) and was skipped", update_id,
                        type(error).__name__)
            return Update(update_id)
        self.insert_callback_data(update)
        return update


def check(update: Update) -> None:
    """Raise UnsoundUpdate unless the ids and texts PTB and the transport rely on have the Bot API's types."""
    message = update.effective_message
    if message is not None:
        _is(message.message_id, int, "message_id")
        _is(message.date, datetime, "date")
        _is_text(message.text, "text")
        _chat(message.chat)
    for user in (update.effective_user, getattr(message, "from_user", None)):
        if user is not None:
            _is(user.id, int, "user id")
            _is_text(user.first_name, "first_name")
    if update.effective_chat is not None:
        _chat(update.effective_chat)
    query = update.callback_query
    if query is not None:
        if not is_clean_id(query.id):
            raise UnsoundUpdate("callback_query.id")
        _is_text(query.data, "callback data")
    change = update.my_chat_member
    if change is not None:
        _is(getattr(change.new_chat_member, "status", None), str, "new_chat_member.status")


def _chat(chat: Any) -> None:
    _is(getattr(chat, "id", None), int, "chat id")
    _is(getattr(chat, "type", None), str, "chat type")


def _is(value: Any, kind: type, what: str) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UnsoundUpdate(what)


def _is_text(value: Any, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise UnsoundUpdate(what)

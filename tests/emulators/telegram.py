"""A strict Telegram Bot API emulator for tests, speaking real HTTP on 127.0.0.1.

The bot under test is pointed at ``emu.api_root`` (``TELEGRAM_API_URL``) and calls
``{api_root}/bot{token}/{method}`` exactly as it would call api.telegram.org. Every request is validated against
the vendored Bot API facts (``tests/data/bot_api.json``); errors are Telegram's real bodies
(``tests/data/telegram_errors/``). Tests arrange the world and act as people through Python helpers
(``add_user``, ``user_sends``, ``user_sends_photo``, ``press_button``, ...) and inspect what the bot left behind
(``messages``, ``sent_by_bot``, ``calls``, ``uploads``, ``file_bytes``).

Media: people's photos, documents, videos, voice notes and stickers arrive with file_ids the bot can pass to
getFile and then download from ``{api_root}/file/bot{token}/{file_path}`` (PTB: ``base_file_url``). The bot
uploads with multipart/form-data (a part named after the parameter, or any part an ``attach://`` URI names) or
sends an existing file_id; every upload is kept with its bytes. Limits as Telegram's: getFile up to 20 MB,
uploaded photos up to 10 MB, uploads up to 50 MB (413), captions up to 1024 characters after entity parsing.

Stricter than Telegram on purpose (so bugs show up in tests, not in production):
- unknown parameters and unknown fields inside JSON objects are errors, not silently ignored; so is an uploaded
  file part that neither a parameter nor an ``attach://`` names;
- a stray ``&`` in HTML text is an error (Telegram would keep it literally);
- a file_id must be of the method's type (Telegram lets some types stand for others, e.g. a video as document);
- an album of one item is an error (Telegram sends it as a lone message);
- spec methods the emulator does not implement answer 400 "method not implemented by the emulator"; sending a
  file by URL likewise.
More lenient: uploaded photos are not checked to be images (sizes are made up when Pillow cannot read them).

Manual mode: ``python -m tests.emulators.telegram [--port 8081] [--token T]``, then type ``help``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import functools
import inspect
import io
import itertools
import json
import math
import mimetypes
import random
import re
import struct
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web

try:  # Pillow reads photo sizes and makes thumbnails; without it sizes are made up and thumbnails are copies
    from PIL import Image
except ImportError:  # pragma: no cover - Pillow comes with the dev dependencies
    Image = None

from tests.emulators.telegram_html import EntityParseError, format_message, normalize, utf16_len

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SPEC_PATH = DATA_DIR / "bot_api.json"
ERRORS_DIR = DATA_DIR / "telegram_errors"

MAX_TEXT_LENGTH = 4096  # UTF-16 code units, after entity parsing
MAX_CAPTION_LENGTH = 1024  # likewise
MAX_DOWNLOAD_SIZE = 20 * 1024 * 1024  # getFile refuses bigger files ("file is too big")
MAX_PHOTO_UPLOAD = 10 * 1024 * 1024  # TDLib's photo limit, in bytes
MAX_UPLOAD = 50 * 1024 * 1024  # api.telegram.org answers 413 to bigger uploads
MEDIA_GROUP_SIZE = (2, 10)
THUMBNAIL_BOX = 90  # the small size of a photo fits in 90x90, as Telegram's "s" size
MAX_CALLBACK_DATA_BYTES = 64
LONG_POLL_MAX_TIMEOUT = 50  # telegram-bot-api caps getUpdates' timeout
DEFAULT_ALLOWED_UPDATES = frozenset(
    {"message", "edited_message", "channel_post", "edited_channel_post", "business_connection", "business_message",
     "edited_business_message", "deleted_business_messages", "guest_message", "inline_query",
     "chosen_inline_result", "callback_query", "shipping_query", "pre_checkout_query", "purchased_paid_media", "poll",
     "poll_answer", "my_chat_member", "chat_join_request", "chat_boost", "removed_chat_boost", "managed_bot"}
)
MEMBER_STATUSES = ("creator", "administrator", "member", "left", "kicked")
PRESENT = frozenset({"creator", "administrator", "member"})
# Methods that count against Telegram's sending limits.
SENDING_PREFIXES = ("send", "copymessage", "forwardmessage")
ATTACH = "attach://"
MEDIA_FIELDS = ("photo", "video", "document", "voice", "sticker")  # the Message fields of media, by kind below
_MESSAGE_FIELD = {"Photo": "photo", "Video": "video", "Document": "document", "VoiceNote": "voice",
                  "Sticker": "sticker"}
# Sending methods that take one file: (its parameter, the kind of file).
_SEND_MEDIA = {"sendPhoto": ("photo", "Photo"), "sendVideo": ("video", "Video"),
               "sendDocument": ("document", "Document"), "sendVoice": ("voice", "VoiceNote"),
               "sendSticker": ("sticker", "Sticker")}
_ALBUM_KINDS = {"photo": "Photo", "video": "Video", "document": "Document"}
_FOLDERS = {"Photo": "photos", "Video": "videos", "Document": "documents", "VoiceNote": "voice",
            "Sticker": "stickers"}
_FILE_ID_PREFIXES = {"Photo": "AgACAgQAAxkBAAI", "Video": "BAACAgQAAxkBAAI", "Document": "BQACAgQAAxkBAAI",
                     "VoiceNote": "AwACAgQAAxkBAAI", "Sticker": "CAACAgQAAxkBAAI"}
_TOO_LARGE = {"ok": False, "error_code": 413, "description": "Request Entity Too Large"}

UserLike = dict[str, Any] | int
ChatLike = dict[str, Any] | int | str


class EmulatorBug(Exception):
    """The emulator was about to answer something the spec does not allow (self_check)."""


class ApiError(Exception):
    """An error answer: HTTP status and Telegram's JSON body."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body.get("description"))
        self.body = body
        self.status = int(body["error_code"])


def error_body(name: str) -> dict[str, Any]:
    """One of Telegram's real error bodies, e.g. ``error_body("bad-request-chat-not-found")``."""
    return json.loads((ERRORS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def _bad_request(description: str) -> ApiError:
    return ApiError({"ok": False, "error_code": 400, "description": f"Bad Request: {description}"})


def _forbidden(description: str) -> ApiError:
    return ApiError({"ok": False, "error_code": 403, "description": f"Forbidden: {description}"})


def _named(name: str, **parameters: Any) -> ApiError:
    body = error_body(name)
    if parameters:
        body["parameters"] = {**body.get("parameters", {}), **parameters}
    return ApiError(body)


# --- the spec -------------------------------------------------------------------------------------------------

_SCALARS = frozenset({"Integer", "String", "Boolean", "Float", "True", "InputFile"})


class Spec:
    """Field and type facts from tests/data/bot_api.json; validation and coercion against them."""

    def __init__(self, path: Path = SPEC_PATH) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        self.version: str = data["version"]
        self.methods: dict[str, dict[str, Any]] = data["methods"]
        self.types: dict[str, dict[str, Any]] = data["types"]
        self._by_lower = {name.lower(): name for name in self.methods}

    def method(self, name: str) -> str | None:
        """The spec's spelling of a method name (Telegram ignores case), or None."""
        return self._by_lower.get(name.lower())

    def fields(self, method: str) -> dict[str, dict[str, Any]]:
        return {f["name"]: f for f in self.methods[method]["fields"]}

    # Input: coerce what came over HTTP (form strings, JSON values, uploads) to the field's type.
    def coerce(self, name: str, value: Any, types: list[str]) -> Any:
        problems = []
        # "Array of A or Array of B" (sendMediaGroup's media) is one array whose items are A or B.
        for alternative in [types] if _array_union(types) else [[t] for t in types]:
            try:
                return self._coerce_one(value, alternative)
            except ValueError as exc:
                problems.append(str(exc))
        if all(t in _SCALARS for t in types):
            raise _bad_request(f'field "{name}" must be of type {" or ".join(types)}')
        deepest = max(problems, key=_depth)
        if deepest in ("invalid JSON", _NOT_OBJECT) or _depth(deepest) == 0:
            # Telegram's words when the value is not the JSON object (or array) it expects.
            what = "reply keyboard markup" if name == "reply_markup" else name
            raise _bad_request(f"can't parse {what} JSON object")
        raise _bad_request(f"can't parse {name}: {deepest}")

    def _coerce_one(self, value: Any, types: list[str]) -> Any:
        type_name = types[0]
        if type_name in ("Integer", "Float", "Boolean", "String", "True"):
            return _coerce_scalar(value, type_name)
        if type_name == "InputFile":
            if isinstance(value, str | UploadedFile):
                return value
            raise ValueError("expected a file or a file_id/URL string")
        if isinstance(value, UploadedFile):
            raise ValueError("not a JSON object")
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError("invalid JSON") from None
        problem = self.check(value, types, "")
        if problem:
            raise ValueError(problem)
        return value

    # Structure: is ``value`` a valid instance of one of ``types``? Returns a problem or None.
    def check(self, value: Any, types: list[str], path: str) -> str | None:
        if _array_union(types):
            return self._check_array_union(value, [t[len("Array of ") :] for t in types], path)
        problems = []
        for type_name in types:
            problem = self._check_one(value, type_name, path)
            if problem is None:
                return None
            problems.append(problem)
        return problems[0] if len(problems) == 1 else f"{path or 'value'} matches none of {' or '.join(types)}"

    def _check_one(self, value: Any, type_name: str, path: str) -> str | None:
        if type_name.startswith("Array of "):
            if not isinstance(value, list):
                return f"{path} must be an Array" if path else _NOT_OBJECT
            item_type = type_name[len("Array of ") :]
            for index, item in enumerate(value):
                problem = self._check_one(item, item_type, f"{path}[{index}]")
                if problem:
                    return problem
            return None
        if type_name in _SCALARS:
            ok = _is_scalar(value, type_name)
            return None if ok else f"{path or 'value'} must be of type {type_name}"
        return self._check_object(value, type_name, path)

    def _check_array_union(self, value: Any, item_types: list[str], path: str) -> str | None:
        if not isinstance(value, list):
            return f"{path} must be an Array" if path else _NOT_OBJECT
        for index, item in enumerate(value):
            chosen = _by_type_field(item, item_types)
            problem = self.check(item, [chosen] if chosen else item_types, f"{path}[{index}]")
            if problem:
                return problem
        return None

    def _check_object(self, value: Any, type_name: str, path: str) -> str | None:
        fact = self.types.get(type_name)
        if fact is None:
            return f"unknown type {type_name}"
        if fact.get("subtypes"):
            return self.check(value, fact["subtypes"], path)
        if not isinstance(value, dict):
            return _NOT_OBJECT if not path else f"{path} must be a JSON object ({type_name})"
        fields = {f["name"]: f for f in fact["fields"]}
        for key in value:
            if key not in fields:
                return f'unknown field "{_join(path, key)}" in {type_name}'
        for name, fact_field in fields.items():
            if name not in value:
                if fact_field["required"]:
                    return f'field "{_join(path, name)}" of {type_name} is missing'
                continue
            problem = self.check(value[name], fact_field["types"], _join(path, name))
            if problem:
                return problem
        return None


_NOT_OBJECT = "not a JSON object"


def _depth(problem: str) -> int:
    """How deep inside the value a problem is (0: the value itself): the most specific one is reported."""
    quoted = re.search(r'"([^"]*)"', problem)
    path = quoted.group(1) if quoted else problem.split(" ", 1)[0]
    if problem in ("invalid JSON", _NOT_OBJECT) or path == "value":
        return 0
    return 1 + path.count(".") + path.count("[")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _array_union(types: list[str]) -> bool:
    return len(types) > 1 and all(t.startswith("Array of ") for t in types)


def _by_type_field(item: Any, types: list[str]) -> str | None:
    """The alternative an object's "type" names: {"type": "photo"} among InputMedia* is InputMediaPhoto."""
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        return None
    prefix = types[0]
    for other in types[1:]:
        while not other.startswith(prefix):
            prefix = prefix[:-1]
    name = prefix + "".join(part.capitalize() for part in item["type"].split("_"))
    return name if name in types else None


def _is_scalar(value: Any, type_name: str) -> bool:
    if type_name == "Integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "Float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_name in ("Boolean", "True"):
        return isinstance(value, bool) and (type_name == "Boolean" or value)
    return isinstance(value, str)  # String, InputFile given by file_id/URL


_INTEGER = re.compile(r"[+-]?\d+")


def _coerce_scalar(value: Any, type_name: str) -> Any:
    """Top-level parameters: form values are strings (PTB JSON-encodes non-strings into them)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        if type_name in ("Boolean", "True") and isinstance(value, bool):
            return value
        raise ValueError(f"must be of type {type_name}")
    if type_name == "String":
        return value if isinstance(value, str) else str(value)  # JSON bodies may carry numbers for strings
    text = str(value).strip()
    if type_name == "Integer":
        if isinstance(value, float) or not _INTEGER.fullmatch(text):
            raise ValueError("must be of type Integer")
        return int(text)
    if type_name == "Float":
        try:
            number = float(text)
        except ValueError:
            raise ValueError("must be of type Float") from None
        if not math.isfinite(number):
            raise ValueError("must be of type Float")
        return number
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0") and type_name == "Boolean":
        return False
    raise ValueError(f"must be of type {type_name}")


# --- state ----------------------------------------------------------------------------------------------------


@dataclass
class Chat:
    """A chat as the emulator keeps it. ``api()`` is the Bot API ``Chat`` object."""

    id: int
    type: str  # private, group, supergroup, channel
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    members: dict[int, str] = field(default_factory=dict)  # user id → status (the bot included)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)  # message id → Message, as last left
    by_bot: set[int] = field(default_factory=set)  # ids of the messages the bot sent
    next_message_id: int = 1
    migrated_to: int | None = None

    def api(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.id, "type": self.type}
        for key in ("title", "username", "first_name"):
            if getattr(self, key) is not None:
                chat[key] = getattr(self, key)
        return chat


@dataclass(repr=False)
class UploadedFile:
    """A file part of a multipart/form-data request, as the bot uploaded it."""

    name: str  # the part's name: a parameter ("photo") or what an attach:// URI names
    filename: str | None
    content_type: str | None
    data: bytes

    def __repr__(self) -> str:
        return f"<upload {self.name}: {self.filename} {self.content_type}, {len(self.data)} bytes>"


@dataclass(repr=False)
class StoredFile:
    """A file on Telegram's servers: a photo size, video, document, voice note or sticker, under its file_id."""

    file_id: str
    file_unique_id: str
    kind: str  # TDLib's name for the type, as in "can't use file of type Document as Photo"
    data: bytes
    file_name: str | None = None
    mime_type: str | None = None
    width: int = 0
    height: int = 0
    duration: int = 0
    emoji: str | None = None
    photo: list[str] = field(default_factory=list)  # for a photo size: the file_ids of all the photo's sizes
    file_path: str | None = None  # given by the first getFile, as in Telegram

    def __repr__(self) -> str:
        return f"<{self.kind} {self.file_id}: {len(self.data)} bytes>"


@dataclass(repr=False)
class Upload:
    """A file the bot uploaded in a call that succeeded; ``file_id`` is what Telegram gave it (photos: the
    largest size)."""

    method: str
    chat_id: int
    field: str  # the parameter ("photo"), or for sendMediaGroup "media[i]"
    file_name: str | None
    mime_type: str | None
    data: bytes
    file_id: str

    def __repr__(self) -> str:
        return f"<{self.method} {self.field} {self.file_name!r}: {len(self.data)} bytes as {self.file_id}>"


@dataclass
class Limits:
    """Telegram's sending limits; a field set to None is off. Only sending methods count."""

    global_per_second: int | None = 30
    per_chat_per_second: int | None = 1
    per_group_per_minute: int | None = 20
    paid_per_second: int | None = 1000  # with allow_paid_broadcast, instead of global_per_second


@dataclass
class _Failure:
    status: int
    body: dict[str, Any]
    chat_id: int | str | None = None  # None: whichever chat the call is for


class _Windows:
    """Sliding-window counters for Limits: timestamps of admitted sends per key."""

    def __init__(self) -> None:
        self._sent: dict[tuple[Any, ...], deque[float]] = {}

    def wait_needed(self, key: tuple[Any, ...], limit: int | None, window: float, now: float) -> float:
        if limit is None:
            return 0.0
        sent = self._sent.setdefault(key, deque())
        while sent and sent[0] <= now - window:
            sent.popleft()
        return 0.0 if len(sent) < limit else sent[0] + window - now

    def record(self, keys: Iterable[tuple[Any, ...]], now: float) -> None:
        for key in keys:
            self._sent.setdefault(key, deque()).append(now)


# --- the emulator ---------------------------------------------------------------------------------------------

Handler = Callable[[dict[str, Any]], Any]


class TelegramEmulator:
    """The Bot API on 127.0.0.1 plus a test-side API for arranging the world and acting as people."""

    def __init__(
        self,
        token: str | None = None,
        *,
        port: int = 0,
        bot_username: str = "relay_test_bot",
        bot_name: str = "Solidarity Relay",
        privacy_mode: bool = True,
        strict_ampersand: bool = True,
        self_check: bool = True,
    ) -> None:
        self.spec = Spec()
        self.token = token  # None: any token is accepted
        self.privacy_mode = privacy_mode  # bots see only commands, replies and mentions in groups (as in Telegram)
        self.strict_ampersand = strict_ampersand
        self.self_check = self_check  # validate every answer against the spec: catches emulator bugs
        self.limits: Limits | None = None
        # Fault injection: this share of sending calls answers 429 (retry after 1 s), chosen by a seeded RNG.
        self.random_429 = 0.0
        self._chaos = random.Random(20261123)
        self.count_429 = 0
        self.clock: Callable[[], float] = time.monotonic  # for Limits; tests may replace it
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[tuple[str, int, str]] = []  # (method, status, description) of every error answered
        self.callback_answers: list[dict[str, Any]] = []
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (scope as JSON, language) → commands
        self._port = port
        self._runner: web.AppRunner | None = None
        self._stopping = False
        bot_id = int(token.split(":", 1)[0]) if token and token.split(":", 1)[0].isdigit() else 7_000_000_001
        self.bot: dict[str, Any] = {"id": bot_id, "is_bot": True, "first_name": bot_name, "username": bot_username}
        self._users: dict[int, dict[str, Any]] = {bot_id: self.bot}
        self._chats: dict[int, Chat] = {}
        self._blocked: set[int] = set()
        self._ids = {"user": itertools.count(5_000_000_001), "group": itertools.count(4_000_000_001),
                     "super": itertools.count(1_002_000_000_001), "update": itertools.count(100_000_001),
                     "query": itertools.count(4_700_000_000_000_000_001), "file": itertools.count(1),
                     "album": itertools.count(13_900_000_000_000_001), "path": itertools.count(0)}
        self._updates: list[dict[str, Any]] = []
        self._files: dict[str, StoredFile] = {}  # file_id → file, for everything sent by anyone
        self._paths: dict[str, str] = {}  # file_path (given by getFile) → file_id
        self._uploads: list[Upload] = []
        self.downloads: list[str] = []  # file_path of every file the bot downloaded, oldest first
        self._allowed: frozenset[str] = DEFAULT_ALLOWED_UPDATES
        self._queries: dict[str, dict[str, Any]] = {}  # callback query id → {"answered": bool, ...}
        self._failures: dict[str, deque[_Failure]] = {}
        self._windows = _Windows()
        self._webhook_url = ""
        self._poll_generation = 0
        self._changed = asyncio.Event()
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []  # (event, message): manual mode prints
        self._handlers: dict[str, Handler] = {
            "getMe": self._get_me, "logOut": _true, "close": _true, "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook, "getWebhookInfo": self._get_webhook_info,
            "getUpdates": self._get_updates, "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text, "editMessageReplyMarkup": self._edit_reply_markup,
            "deleteMessage": self._delete_message, "deleteMessages": self._delete_messages,
            "answerCallbackQuery": self._answer_callback_query, "getChat": self._get_chat,
            "getChatMember": self._get_chat_member, "getChatAdministrators": self._get_chat_administrators,
            "getChatMemberCount": self._get_chat_member_count, "leaveChat": self._leave_chat,
            "sendChatAction": self._send_chat_action, "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands, "deleteMyCommands": self._delete_my_commands,
            "getFile": self._get_file, "editMessageCaption": self._edit_message_caption,
        }
        # Methods that take uploads: they also get the file parts that attach:// URIs name.
        self._upload_handlers: dict[str, Callable[[dict[str, Any], dict[str, UploadedFile]], Any]] = {
            method: functools.partial(self._send_media, method) for method in _SEND_MEDIA
        }
        self._upload_handlers["sendMediaGroup"] = self._send_media_group

    # --- lifecycle --------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def api_root(self) -> str:
        """What TELEGRAM_API_URL should be; the bot calls ``{api_root}/bot{token}/{method}``."""
        if not self._port:
            raise RuntimeError("the emulator has not been started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen on 127.0.0.1 (a free port the first time, the same port after a restart). State is kept."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping = False
        # Bigger than the upload limit, so an upload just over it is read and answered as Telegram does.
        app = web.Application(client_max_size=MAX_UPLOAD + 8 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("GET", "/file/bot{token}/{path:.+}", self._download)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening; pending long polls answer at once. ``start()`` again resumes on the same port."""
        if self._runner is None:
            return
        self._stopping = True
        self._notify()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> TelegramEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _notify(self) -> None:
        """Wake everything waiting for a state change (long polls, wait_for)."""
        self._changed.set()
        self._changed = asyncio.Event()

    # --- HTTP -------------------------------------------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.json_response(error_body("not-found-method"), status=404)

    async def _download(self, request: web.Request) -> web.Response:
        """``GET {api_root}/file/bot{token}/{file_path}``: the bytes of a file getFile gave this path to."""
        if self.token is not None and request.match_info["token"] != self.token:
            return web.json_response(error_body("unauthorized"), status=401)
        path = request.match_info["path"]
        file_id = self._paths.get(path)
        if file_id is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        self.downloads.append(path)
        self._notify()
        stored = self._files[file_id]
        return web.Response(body=stored.data, content_type=stored.mime_type or "application/octet-stream")

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["method"]
        try:
            result = await self._dispatch(request.match_info["token"], name, request)
        except ApiError as exc:
            body = exc.body
        except EmulatorBug as exc:
            body = {"ok": False, "error_code": 500, "description": f"Internal Server Error: {exc}"}
        else:
            return web.json_response({"ok": True, "result": result})
        self.errors.append((self.spec.method(name) or name, int(body["error_code"]), body.get("description", "")))
        return web.json_response(body, status=int(body["error_code"]))

    async def _dispatch(self, token: str, name: str, request: web.Request) -> Any:
        method = self.spec.method(name)
        position = len(self.calls)
        self.calls.append((method or name, {}))  # every request is logged, also the refused ones
        raw = await _read_params(request)
        self.calls[position] = (method or name, raw)
        if self.token is not None and token != self.token:
            raise _named("unauthorized")
        if method is None:
            raise _named("not-found-method")
        self._injected_failure(method, raw)
        if any(isinstance(v, UploadedFile) and len(v.data) > MAX_UPLOAD for v in raw.values()):
            raise ApiError(dict(_TOO_LARGE))  # api.telegram.org refuses the request before reading it
        # File parts that are not parameters are what attach:// URIs inside parameters name.
        fields = self.spec.fields(method)
        files = {k: v for k, v in raw.items() if isinstance(v, UploadedFile) and k not in fields}
        params = self._coerce_params(method, {k: v for k, v in raw.items() if k not in files})
        self.calls[position] = (method, params)  # the log shows values as the emulator understood them
        upload_handler = self._upload_handlers.get(method)
        handler = self._handlers.get(method)
        if upload_handler is None and files:
            raise _bad_request(f'unknown parameter "{next(iter(files))}"')
        if handler is None and upload_handler is None:
            raise _bad_request("method not implemented by the emulator")
        self._check_limits(method, params)
        result = handler(params) if handler is not None else upload_handler(params, files)
        if inspect.isawaitable(result):
            result = await result
        if self.self_check:
            problem = self.spec.check(result, self.spec.methods[method]["returns"], "result")
            if problem:
                raise EmulatorBug(f"emulator bug: {method} would answer an invalid result: {problem}")
        return result

    def _coerce_params(self, method: str, raw: dict[str, Any]) -> dict[str, Any]:
        fields = self.spec.fields(method)
        for key in raw:
            if key not in fields:
                raise _bad_request(f'unknown parameter "{key}"')
        params: dict[str, Any] = {}
        for key, fact in fields.items():
            value = raw.get(key)
            # Telegram treats an empty value as a missing one (setWebhook's url="" means "remove").
            if value is None or (value == "" and (method, key) != ("setWebhook", "url")):
                if fact["required"]:
                    raise _empty(method, key)
                continue
            params[key] = self.spec.coerce(key, value, fact["types"])
        return params

    # --- failures and limits ----------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        times: int = 1,
        *,
        retry_after: int | None = None,
        status: int | None = None,
        error: str | None = None,
        chat_id: int | str | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` (into ``chat_id``, if given) fail before doing anything.

        Default (or ``retry_after=N``): 429 "Too Many Requests: retry after N" with ``parameters.retry_after``.
        ``status=502`` (any status): ``{"ok":false,"error_code":502,"description":"Bad Gateway"}``.
        ``error="forbidden-bot-blocked-by-user"``: one of the vendored real error bodies.
        """
        canonical = self.spec.method(method)
        if canonical is None:
            raise ValueError(f"unknown Bot API method {method!r}")
        if error is not None:
            body = error_body(error)
        elif status is not None and status != 429:
            body = {"ok": False, "error_code": status, "description": HTTPStatus(status).phrase}
        else:
            body = _too_many_requests(1 if retry_after is None else retry_after)
        queue = self._failures.setdefault(canonical, deque())
        queue.extend(_Failure(int(body["error_code"]), body, chat_id) for _ in range(times))

    def _injected_failure(self, method: str, raw: dict[str, Any]) -> None:
        queue = self._failures.get(method)
        for failure in list(queue or ()):
            if failure.chat_id is None or str(failure.chat_id) == str(raw.get("chat_id")):
                queue.remove(failure)
                if failure.status == 429:
                    self.count_429 += 1
                raise ApiError(copy.deepcopy(failure.body))

    def _check_limits(self, method: str, params: dict[str, Any]) -> None:
        if self.random_429 and method.lower().startswith(SENDING_PREFIXES) and self._chaos.random() < self.random_429:
            self.count_429 += 1
            raise ApiError(_too_many_requests(1))
        limits = self.limits
        if limits is None or not method.lower().startswith(SENDING_PREFIXES) or "chat_id" not in params:
            return
        chat = self._find_chat(params["chat_id"])
        chat_key = chat.id if chat else params["chat_id"]
        now = self.clock()
        paid = bool(params.get("allow_paid_broadcast"))
        checks = [
            (("paid",) if paid else ("global",), limits.paid_per_second if paid else limits.global_per_second, 1.0),
            (("chat", chat_key), limits.per_chat_per_second, 1.0),
        ]
        if chat is not None and chat.type != "private":
            checks.append((("group", chat_key), limits.per_group_per_minute, 60.0))
        wait = max(self._windows.wait_needed(key, limit, window, now) for key, limit, window in checks)
        if wait > 0:
            self.count_429 += 1
            raise ApiError(_too_many_requests(max(1, math.ceil(wait))))
        self._windows.record((key for key, limit, _ in checks if limit is not None), now)

    # --- updates ----------------------------------------------------------------------------------------------

    def _enqueue(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        # allowed_updates applies when an update is created, as in Telegram.
        if kind not in self._allowed:
            return None
        update = {"update_id": next(self._ids["update"]), kind: copy.deepcopy(payload)}
        self._updates.append(update)
        self._notify()
        return update

    def inject_raw_update(self, payload: dict[str, Any]) -> int:
        """Queue ``payload`` for getUpdates as it is (for fuzzing); returns the update_id given to it.

        Nothing is checked: fields may be missing or of the wrong type. The emulator assigns ``update_id``
        (replacing one in ``payload``) because its own bookkeeping orders updates by it; ``allowed_updates`` is
        not applied, the caller decides what arrives. Answering such an update fails the emulator's self-check,
        so fuzz with ``self_check=False``.
        """
        update_id = next(self._ids["update"])
        self._updates.append({**copy.deepcopy(payload), "update_id": update_id})
        self._notify()
        return update_id

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by the bot (a getUpdates offset past them)."""
        return copy.deepcopy(self._updates)

    def _confirm(self, offset: int | None) -> None:
        if offset is None or offset == 0:
            return
        if offset < 0:
            self._updates = self._updates[offset:]
        else:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]

    async def _get_updates(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        if self._webhook_url:
            raise _named("webhook-is-active")
        limit = min(max(p.get("limit", 100), 1), 100)
        timeout = min(max(p.get("timeout", 0), 0), LONG_POLL_MAX_TIMEOUT)
        if "allowed_updates" in p:
            self._allowed = frozenset(p["allowed_updates"]) or DEFAULT_ALLOWED_UPDATES
        self._confirm(p.get("offset"))
        self._poll_generation += 1
        generation = self._poll_generation
        self._notify()  # an earlier long poll now ends with a conflict
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if generation != self._poll_generation:
                raise _named("conflicted-terminated-by-other-long-poll")
            if self._stopping:
                return []  # the server is going away: answer now rather than hold the connection
            remaining = deadline - loop.time()
            if self._updates or remaining <= 0:
                return copy.deepcopy(self._updates[:limit])
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _delete_webhook(self, p: dict[str, Any]) -> bool:
        self._webhook_url = ""
        if p.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _set_webhook(self, p: dict[str, Any]) -> bool:
        # Nothing is delivered to a webhook; setting one only makes getUpdates fail, as in Telegram.
        self._webhook_url = p["url"]
        if p.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _get_webhook_info(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"url": self._webhook_url, "has_custom_certificate": False, "pending_update_count": len(self._updates)}

    # --- people and chats (test helpers) ----------------------------------------------------------------------

    def add_user(
        self, first_name: str, username: str | None = None, language_code: str | None = "en", *, is_bot: bool = False
    ) -> dict[str, Any]:
        """A Telegram user (a Bot API ``User``). They have no private chat with the bot until they write."""
        user: dict[str, Any] = {"id": next(self._ids["user"]), "is_bot": is_bot, "first_name": first_name}
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        self._users[user["id"]] = user
        return dict(user)

    def add_group(
        self,
        title: str,
        members: Iterable[tuple[UserLike, str]] = (),
        supergroup: bool = True,
        bot_status: str = "member",
        username: str | None = None,
    ) -> dict[str, Any]:
        """A group (``supergroup=False``: a basic group) with the bot in it as ``bot_status``."""
        chat_id = -next(self._ids["super"]) if supergroup else -next(self._ids["group"])
        chat = Chat(chat_id, "supergroup" if supergroup else "group", title=title, username=username)
        self._add_chat(chat, members, bot_status)
        return chat.api()

    def add_channel(
        self,
        title: str,
        username: str | None = None,
        bot_status: str = "administrator",
        members: Iterable[tuple[UserLike, str]] = (),
    ) -> dict[str, Any]:
        """A channel; the bot must be an administrator to post in it."""
        chat = Chat(-next(self._ids["super"]), "channel", title=title, username=username)
        self._add_chat(chat, members, bot_status)
        return chat.api()

    def _add_chat(self, chat: Chat, members: Iterable[tuple[UserLike, str]], bot_status: str) -> None:
        for user, status in [*members, (self.bot["id"], bot_status)]:
            chat.members[self._user(user)["id"]] = _status(status)
        self._chats[chat.id] = chat

    def set_member(self, chat_id: ChatLike, user_id: UserLike, status: str) -> None:
        """Change someone's status; for the bot itself this sends ``my_chat_member`` like Telegram does."""
        chat, user = self._chat(chat_id), self._user(user_id)
        old = chat.members.get(user["id"], "left")
        chat.members[user["id"]] = _status(status)
        self._member_changed(chat, user, old, status)

    def _member_changed(self, chat: Chat, user: dict[str, Any], old: str, new: str, actor: UserLike | None = None
                        ) -> None:
        if old == new:
            return
        change = {
            "chat": chat.api(), "from": self._user(actor) if actor else self._owner(chat, user), "date": _now(),
            "old_chat_member": self._member_object(chat, user, old),
            "new_chat_member": self._member_object(chat, user, new),
        }
        if user["id"] == self.bot["id"]:
            self._enqueue("my_chat_member", change)
        elif chat.members.get(self.bot["id"]) in ("creator", "administrator"):
            self._enqueue("chat_member", change)  # only reaches the bot when it asked for chat_member

    def _owner(self, chat: Chat, fallback: dict[str, Any]) -> dict[str, Any]:
        owner = next((uid for uid, s in chat.members.items() if s == "creator"), None)
        return dict(self._users[owner]) if owner else dict(fallback)

    def start_private_chat(self, user: UserLike) -> dict[str, Any]:
        """The user pressed Start long ago: the bot may write to them, and no update is queued now."""
        return self._private_chat(self._user(user)).api()

    def block_bot(self, user_id: UserLike) -> None:
        """The user blocks the bot: sending to them answers 403 "bot was blocked by the user"."""
        user = self._user(user_id)
        self._blocked.add(user["id"])
        chat = self._chats.get(user["id"])
        if chat is not None:
            self._member_changed(chat, self.bot, "member", "kicked", actor=user)

    def unblock_bot(self, user_id: UserLike) -> None:
        user = self._user(user_id)
        if user["id"] in self._blocked:
            self._blocked.discard(user["id"])
            chat = self._chats.get(user["id"])
            if chat is not None:
                self._member_changed(chat, self.bot, "kicked", "member", actor=user)

    def migrate_group(self, chat_id: ChatLike) -> int:
        """Upgrade a basic group to a supergroup; the old id then answers "group chat was migrated"."""
        old = self._chat(chat_id)
        if old.type != "group":
            raise ValueError(f"only a basic group can migrate, {old.id} is a {old.type}")
        new = Chat(-next(self._ids["super"]), "supergroup", title=old.title, members=dict(old.members))
        self._chats[new.id] = new
        old.migrated_to = new.id
        actor = self._owner(old, self.bot)
        # Telegram posts a service message in both chats; the bot receives both.
        self._deliver(old, self._store(old, actor, extra={"migrate_to_chat_id": new.id}))
        self._deliver(new, self._store(new, actor, extra={"migrate_from_chat_id": old.id}))
        return new.id

    # --- people act (test helpers) ----------------------------------------------------------------------------

    def user_sends(self, user: UserLike, text: str, chat: ChatLike | None = None) -> dict[str, Any]:
        """``user`` writes ``text`` (as a Telegram client would: commands get bot_command entities).

        ``chat=None``: in their private chat with the bot (created on first use; writing unblocks the bot).
        Returns the stored Message; the bot receives a ``message`` update when Telegram would deliver one.
        """
        sender, target = self._author(user, chat)
        plain, entities = _user_text(text)
        message = self._store(target, sender, plain, entities)
        self._deliver(target, message)
        return copy.deepcopy(message)

    def _author(self, user: UserLike, chat: ChatLike | None) -> tuple[dict[str, Any], Chat]:
        """Who writes where: their private chat (created on first use; writing unblocks the bot) or a group."""
        sender = self._user(user)
        if chat is None:
            target = self._private_chat(sender)
            self.unblock_bot(sender["id"])
            return sender, target
        target = self._chat(chat)
        if target.type == "channel":
            raise ValueError("people do not write in channels: use channel_posts()")
        if target.members.get(sender["id"]) not in PRESENT:
            raise ValueError(f"{sender['first_name']} is not a member of {target.title!r}")
        return sender, target

    def user_sends_photo(
        self,
        user: UserLike,
        data: bytes,
        caption: str | None = None,
        media_group_id: str | None = None,
        chat: ChatLike | None = None,
    ) -> dict[str, Any]:
        """``user`` sends a photo (the image's bytes), like user_sends. The message carries ``photo``: two
        PhotoSize, a thumbnail that fits in 90x90 and the full size, with the image's width and height when
        Pillow can read it (else 1280x960 made up, and the thumbnail's bytes are the photo's).

        ``caption`` gets entities as a text does, but no bot_command: captions are not commands. Messages
        sent with the same ``media_group_id`` form an album: one message and one update each, as in Telegram.
        """
        return self._user_media(user, chat, "Photo", data, caption, media_group_id)

    def user_sends_document(
        self,
        user: UserLike,
        data: bytes,
        file_name: str,
        mime_type: str,
        caption: str | None = None,
        media_group_id: str | None = None,
        chat: ChatLike | None = None,
    ) -> dict[str, Any]:
        """``user`` sends a file as a document (``document`` with file_name and mime_type), like user_sends_photo."""
        return self._user_media(user, chat, "Document", data, caption, media_group_id, file_name=file_name,
                                mime_type=mime_type)

    def user_sends_video(
        self,
        user: UserLike,
        data: bytes,
        file_name: str = "video.mp4",
        mime_type: str = "video/mp4",
        caption: str | None = None,
        media_group_id: str | None = None,
        chat: ChatLike | None = None,
        *,
        width: int = 640,
        height: int = 360,
        duration: int = 1,
    ) -> dict[str, Any]:
        """``user`` sends a video (``video``; its size and duration are given, nothing reads the bytes)."""
        return self._user_media(user, chat, "Video", data, caption, media_group_id, file_name=file_name,
                                mime_type=mime_type, width=width, height=height, duration=duration)

    def user_sends_voice(
        self, user: UserLike, data: bytes, caption: str | None = None, chat: ChatLike | None = None, *,
        duration: int = 1, mime_type: str = "audio/ogg",
    ) -> dict[str, Any]:
        """``user`` records a voice message (``voice``)."""
        return self._user_media(user, chat, "VoiceNote", data, caption, None, mime_type=mime_type,
                                duration=duration)

    def user_sends_sticker(self, user: UserLike, data: bytes, emoji: str = "👍", chat: ChatLike | None = None
                           ) -> dict[str, Any]:
        """``user`` sends a sticker (``sticker``: a regular one; 512x512 unless Pillow reads the image)."""
        return self._user_media(user, chat, "Sticker", data, None, None, emoji=emoji)

    def _user_media(self, user: UserLike, chat: ChatLike | None, kind: str, data: bytes, caption: str | None,
                    media_group_id: str | None, **facts: Any) -> dict[str, Any]:
        sender, target = self._author(user, chat)
        if not data:
            raise ValueError("Telegram clients do not send empty files")
        files = self._new_files(kind, data, **facts)
        self._files.update((f.file_id, f) for f in files)
        extra = _media_fields(files)
        if caption is not None:
            plain, entities = normalize(caption, [])
            _set_optional(extra, "caption", plain)
            _set_optional(extra, "caption_entities", _caption_entities(entities))
        if media_group_id is not None:
            extra["media_group_id"] = str(media_group_id)
        message = self._store(target, sender, extra=extra)
        self._deliver(target, message)
        return copy.deepcopy(message)

    def user_replies(self, user: UserLike, chat: ChatLike, message_id: int, text: str) -> dict[str, Any]:
        """Like user_sends, as a reply to ``message_id`` in ``chat`` (bots see replies to them in groups)."""
        target = self._chat(chat)
        replied = self._message(target, message_id)
        sender = self._user(user)
        if target.type != "private" and target.members.get(sender["id"]) not in PRESENT:
            raise ValueError(f"{sender['first_name']} is not a member of {target.title!r}")
        plain, entities = _user_text(text)
        message = self._store(target, sender, plain, entities, reply_to=replied)
        self._deliver(target, message)
        return copy.deepcopy(message)

    def user_edits(self, user: UserLike, message_id: int, text: str, chat: ChatLike | None = None) -> dict[str, Any]:
        """``user`` edits the text of their message ``message_id`` (in their private chat unless ``chat``); the
        bot receives an ``edited_message`` update where it received the message."""
        sender = self._user(user)
        target = self._private_chat(sender) if chat is None else self._chat(chat)
        message = self._message(target, message_id)
        if message.get("from", {}).get("id") != sender["id"] or "text" not in message:
            raise ValueError("people can edit only the text messages they sent")
        plain, entities = _user_text(text)
        message["text"] = plain
        message.pop("entities", None)
        _set_optional(message, "entities", entities)
        edited = self._edited(message)
        private = target.type == "private"
        if (message["chat"]["id"] not in self._blocked) if private else self._bot_sees(target, message):
            self._enqueue("edited_message", edited)
        return edited

    def channel_posts(self, chat: ChatLike, text: str) -> dict[str, Any]:
        """An administrator posts in a channel; the bot (a member) receives ``channel_post``."""
        target = self._chat(chat)
        if target.type != "channel":
            raise ValueError(f"{target.id} is not a channel")
        plain, entities = _user_text(text)
        message = self._store(target, None, plain, entities)
        self._deliver(target, message)
        return copy.deepcopy(message)

    def press_button(self, user: UserLike, chat_id: ChatLike, message_id: int, callback_data: str) -> str:
        """``user`` presses the inline button with ``callback_data`` under the bot's message.

        Enqueues a ``callback_query`` update and returns its id. Raises LookupError when the message has no
        such button (a real client could not press it).
        """
        presser, chat = self._user(user), self._chat(chat_id)
        message = self._message(chat, message_id)
        buttons = [b for row in message.get("reply_markup", {}).get("inline_keyboard", []) for b in row]
        if not any(b.get("callback_data") == callback_data for b in buttons):
            found = [b.get("callback_data") for b in buttons]
            raise LookupError(f"message {message_id} in {chat.id} has no button {callback_data!r} (has {found})")
        query_id = str(next(self._ids["query"]))
        query = {"id": query_id, "from": presser, "message": message, "chat_instance": str(abs(chat.id) * 7 + 3),
                 "data": callback_data}
        self._queries[query_id] = {"answered": False, "user_id": presser["id"]}
        self._enqueue("callback_query", query)
        return query_id

    # --- inspection (test helpers) ----------------------------------------------------------------------------

    def messages(self, chat_id: ChatLike) -> list[dict[str, Any]]:
        """Every message in the chat (the bot's and people's), oldest first, as last left; deleted ones gone."""
        return copy.deepcopy(list(self._chat(chat_id).messages.values()))

    def sent_by_bot(self, chat_id: ChatLike) -> list[dict[str, Any]]:
        """The bot's messages in the chat, as last left; media keep their objects (``media_bytes`` has the bytes)."""
        chat = self._chat(chat_id)
        return copy.deepcopy([m for mid, m in chat.messages.items() if mid in chat.by_bot])

    def uploads(self) -> list[Upload]:
        """Every file the bot uploaded (multipart/form-data) in a call that succeeded, oldest first, with its
        bytes. Sending by file_id is no upload; refused calls upload nothing."""
        return list(self._uploads)

    @property
    def upload_count(self) -> int:
        return len(self._uploads)

    def file_bytes(self, file_id: str) -> bytes:
        """The bytes behind any file_id the emulator gave out (people's files and the bot's)."""
        if file_id not in self._files:
            raise KeyError(f"unknown file_id {file_id!r}")
        return self._files[file_id].data

    def media_bytes(self, message: dict[str, Any]) -> bytes:
        """The bytes of a message's media: its largest photo size, document, video, voice note or sticker."""
        for key in MEDIA_FIELDS:
            if key in message:
                media = message[key][-1] if key == "photo" else message[key]
                return self.file_bytes(media["file_id"])
        raise LookupError(f"message {message.get('message_id')} has no media")

    def chat(self, chat_id: ChatLike) -> dict[str, Any]:
        """The Bot API Chat object for a chat id, @username, or a chat/user dict."""
        return self._chat(chat_id).api()

    def private_chat_exists(self, user: UserLike) -> bool:
        return self._user(user)["id"] in self._chats

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        """Parameters of every call of ``method`` (any case), oldest first."""
        wanted = (self.spec.method(method) or method).lower()
        return [params for name, params in self.calls if name.lower() == wanted]

    # `timeout` is a deadline for polling state, not a timeout around one awaitable.
    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 10.0, what: str | None = None  # noqa: ASYNC109
    ) -> Any:
        """Wait until ``predicate()`` (sync or async) is truthy and return its value.

        Raises AssertionError after ``timeout`` seconds, with the latest calls and errors to show what happened.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(self._timeout_report(predicate, timeout, what))
            changed = self._changed
            # State changes wake us at once; the short cap also covers changes made outside the emulator.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 0.05))

    def _timeout_report(self, predicate: Callable[[], Any], timeout: float, what: str | None) -> str:
        name = what or getattr(predicate, "__qualname__", repr(predicate))
        try:
            source = inspect.getsource(predicate).strip() if what is None else ""
        except (OSError, TypeError):
            source = ""
        lines = [f"timed out after {timeout}s waiting for {name}" + (f": {source}" if source else "")]
        lines.append(f"last calls ({len(self.calls)} in all):")
        lines += [f"  {method} {_summary(params)}" for method, params in self.calls[-10:]]
        if self.errors:
            lines.append("last errors answered:")
            lines += [f"  {method} → {status} {description}" for method, status, description in self.errors[-5:]]
        lines.append(f"unconfirmed updates: {len(self._updates)}")
        return "\n".join(lines)

    # --- lookups ----------------------------------------------------------------------------------------------

    def _user(self, user: UserLike | None) -> dict[str, Any]:
        user_id = user["id"] if isinstance(user, dict) else user
        if user_id not in self._users:
            raise KeyError(f"unknown user {user_id}")
        return dict(self._users[user_id])

    def _chat(self, chat: ChatLike) -> Chat:
        """Test-side lookup (raises KeyError): chat dict, user dict (their private chat), id or @username."""
        found = self._find_chat(chat["id"] if isinstance(chat, dict) else chat)
        if found is None:
            raise KeyError(f"unknown chat {chat!r}")
        return found

    def _find_chat(self, chat_id: int | str) -> Chat | None:
        if isinstance(chat_id, str):
            if not chat_id.startswith("@"):
                return self._chats.get(int(chat_id)) if _INTEGER.fullmatch(chat_id) else None
            name = chat_id[1:].lower()
            return next((c for c in self._chats.values() if c.username and c.username.lower() == name), None)
        return self._chats.get(chat_id)

    def _private_chat(self, user: dict[str, Any]) -> Chat:
        chat = self._chats.get(user["id"])
        if chat is None:
            chat = Chat(user["id"], "private", first_name=user["first_name"], username=user.get("username"))
            chat.members = {user["id"]: "member", self.bot["id"]: "member"}
            self._chats[chat.id] = chat
        return chat

    def _message(self, chat: Chat, message_id: int) -> dict[str, Any]:
        if message_id not in chat.messages:
            raise KeyError(f"no message {message_id} in chat {chat.id}")
        return chat.messages[message_id]

    def _resolve_user(self, user_id: int) -> dict[str, Any] | None:
        user = self._users.get(user_id)
        return dict(user) if user else None

    # --- messages ---------------------------------------------------------------------------------------------

    def _store(
        self,
        chat: Chat,
        sender: dict[str, Any] | None,
        text: str | None = None,
        entities: list[dict[str, Any]] | None = None,
        *,
        reply_markup: dict[str, Any] | None = None,
        reply_to: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        by_bot: bool = False,
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"message_id": chat.next_message_id, "date": _now(), "chat": chat.api()}
        chat.next_message_id += 1
        if chat.type == "channel":
            message["sender_chat"] = chat.api()  # channel posts are signed by the channel, not a user
        elif sender is not None:
            message["from"] = _public_user(sender)
        if reply_to is not None:
            message["reply_to_message"] = {k: v for k, v in reply_to.items() if k != "reply_to_message"}
        if text is not None:
            message["text"] = text
            if entities:
                message["entities"] = entities
        if reply_markup is not None:
            message["reply_markup"] = reply_markup
        message.update(extra or {})
        chat.messages[message["message_id"]] = message
        if by_bot:
            chat.by_bot.add(message["message_id"])
        self._tell("new", message)
        return message

    def _deliver(self, chat: Chat, message: dict[str, Any]) -> None:
        """Hand a message from someone else to the bot, if Telegram would."""
        bot_status = chat.members.get(self.bot["id"])
        if chat.type == "private":
            if message["chat"]["id"] not in self._blocked:
                self._enqueue("message", message)
        elif bot_status not in PRESENT:
            return
        elif chat.type == "channel":
            self._enqueue("channel_post", message)
        elif self._bot_sees(chat, message):
            self._enqueue("message", message)

    def _bot_sees(self, chat: Chat, message: dict[str, Any]) -> bool:
        """Privacy mode: in groups a bot that is not an administrator sees commands, replies to it, mentions
        of it and service messages only."""
        if not self.privacy_mode or chat.members.get(self.bot["id"]) in ("creator", "administrator"):
            return True
        if "text" not in message and not any(key in message for key in MEDIA_FIELDS):
            return True  # a service message
        if message.get("reply_to_message", {}).get("from", {}).get("id") == self.bot["id"]:
            return True
        # A caption is read like a text; it has no commands.
        text = message.get("text", message.get("caption", ""))
        username = self.bot["username"].lower()
        for entity in message.get("entities", message.get("caption_entities", [])):
            part = _slice16(text, entity["offset"], entity["length"]).lower()
            if entity["type"] == "mention" and part == f"@{username}":
                return True
            if entity["type"] == "bot_command" and ("@" not in part or part.endswith(f"@{username}")):
                return True
        return False

    def _tell(self, event: str, message: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(event, message)
        self._notify()

    # --- Bot API: chats and access ----------------------------------------------------------------------------

    def _target(self, chat_id: int | str, *, posting: bool = False) -> Chat:
        """The chat a bot call addresses, or Telegram's error for why the bot cannot use it."""
        chat = self._find_chat(chat_id)
        if chat is None:
            user = self._users.get(chat_id) if isinstance(chat_id, int) else None
            if user is not None and posting:
                if user["is_bot"]:
                    raise _named("forbidden-bot-cant-send-messages-to-bots")
                raise _named("forbidden-cant-initiate-conversation")
            raise _named("bad-request-chat-not-found")
        if chat.migrated_to is not None:
            raise _named("bad-request-group-chat-migrated", migrate_to_chat_id=chat.migrated_to)
        if chat.type == "private":
            if posting and chat.id in self._blocked:
                raise _named("forbidden-bot-blocked-by-user")
            return chat
        status = chat.members.get(self.bot["id"], "left")
        if status not in PRESENT:
            raise _not_member(chat, status)
        if posting and chat.type == "channel" and status not in ("creator", "administrator"):
            raise _bad_request("need administrator rights in the channel chat")
        return chat

    def _get_chat(self, p: dict[str, Any]) -> dict[str, Any]:
        chat = self._target(p["chat_id"])
        info = {**chat.api(), "accent_color_id": 0, "max_reaction_count": 11,
                "accepted_gift_types": {"unlimited_gifts": False, "limited_gifts": False, "unique_gifts": False,
                                        "premium_subscription": False, "gifts_from_channels": False}}
        if chat.type == "private":
            user = self._users[chat.id]
            info.update({k: user[k] for k in ("last_name",) if k in user})
        return info

    def _member_object(self, chat: Chat, user: dict[str, Any], status: str) -> dict[str, Any]:
        public = _public_user(user)
        if status == "creator":
            return {"status": "creator", "user": public, "is_anonymous": False}
        if status == "administrator":
            rights = dict.fromkeys(
                ("can_manage_chat", "can_delete_messages", "can_manage_video_chats", "can_restrict_members",
                 "can_promote_members", "can_change_info", "can_invite_users", "can_post_stories",
                 "can_edit_stories", "can_delete_stories"), True)
            if chat.type == "channel":
                rights.update(can_post_messages=True, can_edit_messages=True)
            else:
                rights.update(can_pin_messages=True)
            return {"status": "administrator", "user": public, "can_be_edited": False, "is_anonymous": False,
                    **rights}
        if status == "kicked":
            return {"status": "kicked", "user": public, "until_date": 0}
        return {"status": status, "user": public}

    def _get_chat_member(self, p: dict[str, Any]) -> dict[str, Any]:
        chat = self._target(p["chat_id"])
        user = self._users.get(p["user_id"])
        if user is None:
            raise _bad_request("user not found")
        return self._member_object(chat, user, chat.members.get(user["id"], "left"))

    def _get_chat_administrators(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        chat = self._target(p["chat_id"])
        if chat.type == "private":
            raise _bad_request("there are no administrators in the private chat")
        admins = []
        for user_id, status in chat.members.items():
            user = self._users[user_id]
            if status in ("creator", "administrator") and (not user["is_bot"] or p.get("return_bots", True)):
                admins.append(self._member_object(chat, user, status))
        return admins

    def _get_chat_member_count(self, p: dict[str, Any]) -> int:
        chat = self._target(p["chat_id"])
        return sum(1 for status in chat.members.values() if status in PRESENT)

    def _leave_chat(self, p: dict[str, Any]) -> bool:
        chat = self._target(p["chat_id"])
        if chat.type == "private":
            raise _bad_request("chat member status can't be changed in private chats")
        old = chat.members.get(self.bot["id"], "left")
        chat.members[self.bot["id"]] = "left"
        self._member_changed(chat, self.bot, old, "left", actor=self.bot["id"])
        return True

    def _send_chat_action(self, p: dict[str, Any]) -> bool:
        self._target(p["chat_id"], posting=True)
        return True

    # --- Bot API: messages ------------------------------------------------------------------------------------

    def _format(self, text: str, parse_mode: str | None, entities: list[dict[str, Any]] | None
                ) -> tuple[str, list[dict[str, Any]]]:
        """A text (or caption) and its entities as Telegram stores them, or Telegram's error for the formatting."""
        if parse_mode and entities is None:
            if parse_mode.lower() in ("markdown", "markdownv2"):
                raise _bad_request(f"parse_mode {parse_mode} is not implemented by the emulator: use HTML")
            if parse_mode.lower() != "html":
                raise _bad_request("unsupported parse_mode")
        try:
            return format_message(text, parse_mode, entities, self._resolve_user, self.strict_ampersand)
        except EntityParseError as exc:
            prefix = "can't parse entities: " if entities is None else ""
            message = str(exc)
            raise _bad_request(prefix + (message if prefix else message[:1].lower() + message[1:])) from None

    def _formatted(self, p: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """Text and entities as Telegram stores them, or Telegram's error."""
        text, entities = self._format(p["text"], p.get("parse_mode"), p.get("entities"))
        if not text:
            raise _named("bad-request-message-text-is-empty")
        if utf16_len(text) > MAX_TEXT_LENGTH:
            raise _named("bad-request-message-is-too-long")
        return text, entities

    def _inline_markup(self, p: dict[str, Any]) -> dict[str, Any] | None:
        """The inline keyboard to store (other keyboards are not part of a Message), after Telegram's checks."""
        markup = p.get("reply_markup")
        if markup is None or "inline_keyboard" not in markup:
            return None
        for row in markup["inline_keyboard"]:
            for button in row:
                _check_button(button)
        return markup if any(markup["inline_keyboard"]) else None

    def _send_message(self, p: dict[str, Any]) -> dict[str, Any]:
        chat = self._target(p["chat_id"], posting=True)
        text, entities = self._formatted(p)
        markup = self._inline_markup(p)
        reply_to = self._replied(chat, p.get("reply_parameters"))
        extra = {"has_protected_content": True} if p.get("protect_content") else None
        message = self._store(chat, self.bot, text, entities, reply_markup=markup, reply_to=reply_to, extra=extra,
                              by_bot=True)
        return copy.deepcopy(message)

    def _replied(self, chat: Chat, reply: dict[str, Any] | None) -> dict[str, Any] | None:
        if reply is None:
            return None
        source = self._target(reply["chat_id"]) if "chat_id" in reply else chat
        message = source.messages.get(reply["message_id"])
        if message is None and not reply.get("allow_sending_without_reply"):
            raise _named("bad-request-reply-message-not-found")
        return message

    def _editable(self, p: dict[str, Any]) -> tuple[Chat, dict[str, Any]]:
        if "inline_message_id" in p:
            raise _bad_request("inline messages are not implemented by the emulator")
        if "chat_id" not in p:
            raise _empty("editMessageText", "chat_id")
        if "message_id" not in p:
            raise _bad_request("message identifier is not specified")
        chat = self._target(p["chat_id"], posting=True)
        message = chat.messages.get(p["message_id"])
        if message is None:
            raise _named("bad-request-message-to-edit-not-found")
        if p["message_id"] not in chat.by_bot:
            raise _named("bad-request-message-cant-be-edited")
        return chat, message

    def _edit_message_text(self, p: dict[str, Any]) -> dict[str, Any]:
        if "rich_message" in p:
            raise _bad_request("rich_message is not implemented by the emulator")
        if not p.get("text"):
            raise _named("bad-request-message-text-is-empty")
        _, message = self._editable(p)
        if "text" not in message:
            raise _bad_request("there is no text in the message to edit")
        text, entities = self._formatted(p)
        # Editing the text without reply_markup removes the inline keyboard, as in Telegram.
        markup = self._inline_markup(p)
        if (text, entities, markup) == (message["text"], message.get("entities", []), message.get("reply_markup")):
            raise _named("bad-request-message-not-modified")
        message["text"] = text
        _set_optional(message, "entities", entities)
        _set_optional(message, "reply_markup", markup)
        return self._edited(message)

    def _edit_reply_markup(self, p: dict[str, Any]) -> dict[str, Any]:
        _, message = self._editable(p)
        markup = self._inline_markup(p)
        if markup == message.get("reply_markup"):
            raise _named("bad-request-message-not-modified")
        _set_optional(message, "reply_markup", markup)
        return self._edited(message)

    def _edited(self, message: dict[str, Any]) -> dict[str, Any]:
        message["edit_date"] = max(_now(), message["date"])
        self._tell("edited", message)
        return copy.deepcopy(message)

    def _delete_message(self, p: dict[str, Any]) -> bool:
        chat = self._target(p["chat_id"])
        self._delete_one(chat, p["message_id"])
        return True

    def _delete_messages(self, p: dict[str, Any]) -> bool:
        chat = self._target(p["chat_id"])
        for message_id in p["message_ids"]:
            if message_id in chat.messages and self._may_delete(chat, message_id):
                self._delete_one(chat, message_id)
        return True

    def _may_delete(self, chat: Chat, message_id: int) -> bool:
        rights = chat.type == "private" or chat.members.get(self.bot["id"]) in ("creator", "administrator")
        return message_id in chat.by_bot or rights

    def _delete_one(self, chat: Chat, message_id: int) -> None:
        if message_id not in chat.messages:
            raise _named("bad-request-message-to-delete-not-found")
        if not self._may_delete(chat, message_id):
            raise _named("bad-request-message-cant-be-deleted")
        message = chat.messages.pop(message_id)
        chat.by_bot.discard(message_id)
        self._tell("deleted", message)

    def _answer_callback_query(self, p: dict[str, Any]) -> bool:
        query = self._queries.get(p["callback_query_id"])
        if query is None or query["answered"]:
            raise _bad_request("query is too old and response timeout expired or query ID is invalid")
        query["answered"] = True
        self.callback_answers.append(dict(p))
        self._notify()
        return True

    # --- Bot API: media ---------------------------------------------------------------------------------------

    def _caption(self, source: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """Caption and caption_entities of a send call or an InputMedia ("" when there is none)."""
        if not source.get("caption"):
            return "", []
        text, entities = self._format(source["caption"], source.get("parse_mode"), source.get("caption_entities"))
        return text, _caption_entities(entities)

    def _input_file(self, value: str | UploadedFile, files: dict[str, UploadedFile], used: set[str]
                    ) -> UploadedFile | StoredFile | None:
        """What an InputFile parameter or InputMedia.media names; None for an attach:// without its part."""
        if isinstance(value, UploadedFile):
            return value
        if value.startswith(ATTACH):
            name = value[len(ATTACH) :]
            used.add(name)
            return files.get(name)
        if re.match(r"https?://", value, re.IGNORECASE):
            raise _bad_request("sending files by URL is not implemented by the emulator")
        stored = self._files.get(value)
        if stored is None:
            raise _bad_request("wrong file identifier/HTTP URL specified")
        return stored

    def _media(self, source: UploadedFile | StoredFile, kind: str, facts: dict[str, Any]) -> list[StoredFile]:
        """The files a message of ``kind`` carries: those of a file_id (of that type), or new ones for an upload."""
        if isinstance(source, StoredFile):
            if source.kind != kind:
                raise _bad_request(f"can't use file of type {source.kind} as {kind}")
            return [self._files[i] for i in source.photo] if source.photo else [source]
        size = len(source.data)
        if size == 0:
            raise _bad_request("file must be non-empty")
        if kind == "Photo" and size > MAX_PHOTO_UPLOAD:
            raise _bad_request(f"file of size {size} bytes is too big for a photo; the maximum size is "
                               f"{MAX_PHOTO_UPLOAD} bytes")
        mime_type = source.content_type
        if not mime_type or mime_type == "application/octet-stream":
            mime_type = mimetypes.guess_type(source.filename or "")[0] or mime_type
        if kind == "Video":
            mime_type = mime_type if mime_type and mime_type.startswith("video/") else "video/mp4"
        if kind == "VoiceNote":
            mime_type = "audio/ogg"
        return self._new_files(kind, source.data, file_name=source.filename, mime_type=mime_type,
                               width=facts.get("width", 0), height=facts.get("height", 0),
                               duration=facts.get("duration", 0), emoji=facts.get("emoji"))

    def _keep(self, method: str, chat: Chat, field_name: str, source: UploadedFile | StoredFile,
              media: list[StoredFile]) -> None:
        """After a successful send: new files get their file_ids, uploads are recorded."""
        if isinstance(source, StoredFile):
            return
        self._files.update((f.file_id, f) for f in media)
        mime_type = media[-1].mime_type or source.content_type
        self._uploads.append(Upload(method, chat.id, field_name, source.filename, mime_type, source.data,
                                    media[-1].file_id))

    def _media_extra(self, p: dict[str, Any], media: list[StoredFile], caption: str,
                     entities: list[dict[str, Any]]) -> dict[str, Any]:
        extra = _media_fields(media)
        _set_optional(extra, "caption", caption)
        _set_optional(extra, "caption_entities", entities)
        if p.get("show_caption_above_media") and caption and media[0].kind in ("Photo", "Video"):
            extra["show_caption_above_media"] = True
        if p.get("has_spoiler") and media[0].kind in ("Photo", "Video"):
            extra["has_media_spoiler"] = True
        if p.get("protect_content"):
            extra["has_protected_content"] = True
        return extra

    def _send_media(self, method: str, p: dict[str, Any], files: dict[str, UploadedFile]) -> dict[str, Any]:
        """sendPhoto, sendVideo, sendDocument, sendVoice and sendSticker: an upload, an attach:// or a file_id."""
        param, kind = _SEND_MEDIA[method]
        used: set[str] = set()
        source = self._input_file(p[param], files, used)
        if source is None:
            raise _bad_request(f"there is no {param} in the request")
        for extra_param in ("thumbnail", "cover"):  # read (so their parts are used) and otherwise ignored
            if isinstance(p.get(extra_param), str) and p[extra_param].startswith(ATTACH):
                used.add(p[extra_param][len(ATTACH) :])
        _check_all_used(files, used)
        caption, entities = self._caption(p)
        chat = self._target(p["chat_id"], posting=True)
        if utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise _bad_request("message caption is too long")
        media = self._media(source, kind, p)
        markup = self._inline_markup(p)
        reply_to = self._replied(chat, p.get("reply_parameters"))
        message = self._store(chat, self.bot, reply_markup=markup, reply_to=reply_to,
                              extra=self._media_extra(p, media, caption, entities), by_bot=True)
        self._keep(method, chat, param, source, media)
        return copy.deepcopy(message)

    def _send_media_group(self, p: dict[str, Any], files: dict[str, UploadedFile]) -> list[dict[str, Any]]:
        """An album: 2-10 photos and videos, or documents only; one message each, sharing a media_group_id."""
        items = p["media"]
        if not items:
            raise _bad_request("there are no messages to send")
        if len(items) > MEDIA_GROUP_SIZE[1]:
            raise _bad_request("too many messages to send as an album")
        if len(items) < MEDIA_GROUP_SIZE[0]:
            raise _bad_request("media must include 2-10 items (Telegram would send a single item as a lone "
                               "message; the emulator is stricter)")
        used: set[str] = set()
        parts: list[tuple[dict[str, Any], str, UploadedFile | StoredFile, str, list[dict[str, Any]]]] = []
        for item in items:
            kind = _ALBUM_KINDS.get(item["type"])
            # The spec has no values for "type": any InputMedia* shape passes it, Telegram's server decides.
            if item["type"] == "animation":
                raise _bad_request('can\'t parse InputMedia: type "animation" can\'t be used in sendMediaGroup')
            if item["type"] not in ("audio", "live_photo") and kind is None:
                raise _bad_request(f'can\'t parse InputMedia: type "{item["type"]}" is unsupported')
            if kind is None:  # audio and live photos: in the spec, not in the emulator
                raise _bad_request(f'InputMedia of type "{item["type"]}" is not implemented by the emulator')
            try:
                caption, entities = self._caption(item)
            except ApiError as exc:  # Telegram names where the fault is
                detail = exc.body["description"].removeprefix("Bad Request: ")
                raise _bad_request(f"can't parse InputMedia: {detail[:1].upper()}{detail[1:]}") from None
            source = self._input_file(item["media"], files, used)
            if source is None:
                raise _bad_request("can't parse InputMedia: media not found")
            for extra_param in ("thumbnail", "cover"):
                if item.get(extra_param, "").startswith(ATTACH):
                    used.add(item[extra_param][len(ATTACH) :])
            parts.append((item, kind, source, caption, entities))
        _check_all_used(files, used)
        kinds = {kind for _, kind, _, _, _ in parts}
        if "Document" in kinds and len(kinds) > 1:
            raise _bad_request("document can't be mixed with other media types")
        chat = self._target(p["chat_id"], posting=True)
        if any(utf16_len(caption) > MAX_CAPTION_LENGTH for _, _, _, caption, _ in parts):
            raise _bad_request("message caption is too long")
        media = [self._media(source, kind, item) for item, kind, source, _, _ in parts]
        reply_to = self._replied(chat, p.get("reply_parameters"))
        album = str(next(self._ids["album"]))
        sent = []
        for index, ((item, _, source, caption, entities), files_of_item) in enumerate(zip(parts, media, strict=True)):
            extra = self._media_extra({**item, "protect_content": p.get("protect_content")}, files_of_item, caption,
                                      entities)
            extra["media_group_id"] = album
            sent.append(self._store(chat, self.bot, reply_to=reply_to, extra=extra, by_bot=True))
            self._keep("sendMediaGroup", chat, f"media[{index}]", source, files_of_item)
        return copy.deepcopy(sent)

    def _get_file(self, p: dict[str, Any]) -> dict[str, Any]:
        stored = self._files.get(p["file_id"])
        if stored is None:
            # The Bot API server's words (TdOnCheckRemoteFileIdCallback); the vendored
            # bad-request-invalid-file-id ("invalid file id") is an older wording.
            raise _bad_request("invalid file_id")
        if len(stored.data) > MAX_DOWNLOAD_SIZE:
            raise _named("bad-request-file-too-big")
        if stored.file_path is None:
            stored.file_path = f"{_FOLDERS[stored.kind]}/file_{next(self._ids['path'])}{_extension(stored)}"
            self._paths[stored.file_path] = stored.file_id
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "file_size": len(stored.data),
                "file_path": stored.file_path}

    def _edit_message_caption(self, p: dict[str, Any]) -> dict[str, Any]:
        _, message = self._editable(p)
        if not any(key in message for key in MEDIA_FIELDS):
            raise _bad_request("there is no caption in the message to edit")
        caption, entities = self._caption(p)
        if utf16_len(caption) > MAX_CAPTION_LENGTH:
            raise _bad_request("message caption is too long")
        # Editing the caption without reply_markup removes the inline keyboard, as editing a text does.
        markup = self._inline_markup(p)
        above = bool(p.get("show_caption_above_media")) and bool(caption)
        old = (message.get("caption", ""), message.get("caption_entities", []), message.get("reply_markup"),
               message.get("show_caption_above_media", False))
        if (caption, entities, markup, above) == old:
            raise _named("bad-request-message-not-modified")
        _set_optional(message, "caption", caption)
        _set_optional(message, "caption_entities", entities)
        _set_optional(message, "reply_markup", markup)
        _set_optional(message, "show_caption_above_media", above)
        return self._edited(message)

    def _new_files(self, kind: str, data: bytes, *, file_name: str | None = None, mime_type: str | None = None,
                   width: int = 0, height: int = 0, duration: int = 0, emoji: str | None = None) -> list[StoredFile]:
        """New files on Telegram's servers (not yet known by file_id): a photo's two sizes, or one file."""
        if kind == "Photo":
            image = _image_facts(data)
            full_size = image[:2] if image else (1280, 960)
            small_size = image[2:4] if image else _fit(full_size, THUMBNAIL_BOX)
            small_data = image[4] if image else data
            sizes = [self._stored("Photo", small_data, width=small_size[0], height=small_size[1]),
                     self._stored("Photo", data, width=full_size[0], height=full_size[1])]
            for size in sizes:
                size.photo = [s.file_id for s in sizes]
            return sizes
        if kind == "Sticker":
            image = _image_facts(data)
            width, height = image[:2] if image else (512, 512)
        return [self._stored(kind, data, file_name=file_name, mime_type=mime_type, width=width, height=height,
                             duration=duration, emoji=emoji)]

    def _stored(self, kind: str, data: bytes, **facts: Any) -> StoredFile:
        serial = next(self._ids["file"])
        token = base64.urlsafe_b64encode(struct.pack(">IQ", serial, self.bot["id"])).decode().rstrip("=")
        unique = base64.urlsafe_b64encode(struct.pack(">I", serial)).decode().rstrip("=")
        return StoredFile(_FILE_ID_PREFIXES[kind] + token, "AQAD" + unique, kind, data, **facts)

    # --- Bot API: the bot ---------------------------------------------------------------------------------------

    def _get_me(self, p: dict[str, Any]) -> dict[str, Any]:
        return {**self.bot, "can_join_groups": True, "can_read_all_group_messages": not self.privacy_mode,
                "supports_inline_queries": False, "can_connect_to_business": False, "has_main_web_app": False}

    def _commands_key(self, p: dict[str, Any]) -> tuple[str, str]:
        scope = p.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), p.get("language_code", "")

    def _set_my_commands(self, p: dict[str, Any]) -> bool:
        for command in p["commands"]:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", command["command"]):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(command["description"]) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._commands_key(p)] = list(p["commands"])
        return True

    def _get_my_commands(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self.commands.get(self._commands_key(p), []))

    def _delete_my_commands(self, p: dict[str, Any]) -> bool:
        self.commands.pop(self._commands_key(p), None)
        return True


# --- small helpers --------------------------------------------------------------------------------------------


def _true(p: dict[str, Any]) -> bool:
    return True


def _now() -> int:
    return int(time.time())


def _status(status: str) -> str:
    if status not in MEMBER_STATUSES:
        raise ValueError(f"status must be one of {MEMBER_STATUSES}, not {status!r}")
    return status


def _public_user(user: dict[str, Any]) -> dict[str, Any]:
    """A User as it appears inside messages (getMe's extra fields only come from getMe)."""
    return {k: user[k] for k in ("id", "is_bot", "first_name", "last_name", "username", "language_code")
            if k in user}


def _caption_entities(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Captions are not commands: no bot_command entities in them."""
    return [e for e in entities if e["type"] != "bot_command"]


def _media_object(stored: StoredFile) -> dict[str, Any]:
    """The Bot API object for a file: PhotoSize, Video, Document, Voice or Sticker."""
    base: dict[str, Any] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
    if stored.kind == "Photo":
        return {**base, "width": stored.width, "height": stored.height, "file_size": len(stored.data)}
    if stored.kind == "Sticker":
        head = stored.data[:4]
        base.update(type="regular", width=stored.width, height=stored.height, is_animated=head[:2] == b"\x1f\x8b",
                    is_video=head == b"\x1a\x45\xdf\xa3")
        if stored.emoji:
            base["emoji"] = stored.emoji
        return {**base, "file_size": len(stored.data)}
    if stored.kind == "Video":
        base.update(width=stored.width, height=stored.height, duration=stored.duration)
    if stored.kind == "VoiceNote":
        base["duration"] = stored.duration
    if stored.file_name and stored.kind in ("Video", "Document"):
        base["file_name"] = stored.file_name
    if stored.mime_type:
        base["mime_type"] = stored.mime_type
    return {**base, "file_size": len(stored.data)}


def _media_fields(files: list[StoredFile]) -> dict[str, Any]:
    """The Message fields that carry ``files`` (a photo: all its sizes, smallest first)."""
    key = _MESSAGE_FIELD[files[0].kind]
    objects = [_media_object(f) for f in files]
    return {key: objects if key == "photo" else objects[0]}


def _check_all_used(files: dict[str, UploadedFile], used: set[str]) -> None:
    """A file part that no attach:// names is an unknown parameter (Telegram would ignore it)."""
    for name in files:
        if name not in used:
            raise _bad_request(f'unknown parameter "{name}"')


def _fit(size: tuple[int, int], box: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, box / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _image_facts(data: bytes) -> tuple[int, int, int, int, bytes] | None:
    """(width, height, thumbnail width, thumbnail height, thumbnail JPEG) when Pillow reads ``data``."""
    if Image is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings about odd images are no concern here
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                small = image.convert("RGB")
                small.thumbnail((THUMBNAIL_BOX, THUMBNAIL_BOX))
                out = io.BytesIO()
                small.save(out, "JPEG")
    except Exception:  # anything Pillow cannot read is not an image to it: sizes are made up
        return None
    return width, height, small.width, small.height, out.getvalue()


def _extension(stored: StoredFile) -> str:
    """The file_path suffix Telegram gives: .jpg for photos, the name's or the type's for others."""
    if stored.kind == "Photo":
        return ".jpg"
    if stored.kind == "VoiceNote":
        return ".oga"
    suffix = Path(stored.file_name or "").suffix
    if suffix:
        return suffix.lower()
    guessed = mimetypes.guess_extension(stored.mime_type or "") if stored.mime_type else None
    return guessed or {"Video": ".mp4", "Sticker": ".webp"}.get(stored.kind, "")


def _user_text(text: str) -> tuple[str, list[dict[str, Any]]]:
    plain, entities = normalize(text, [])
    if not plain:
        raise ValueError("Telegram clients do not send empty messages")
    return plain, entities


def _slice16(text: str, offset: int, length: int) -> str:
    data = text.encode("utf-16-le")
    return data[offset * 2 : (offset + length) * 2].decode("utf-16-le", errors="replace")


def _set_optional(message: dict[str, Any], key: str, value: Any) -> None:
    if value:
        message[key] = value
    else:
        message.pop(key, None)


def _empty(method: str, field_name: str) -> ApiError:
    # Telegram names the missing text of a message its own way.
    if field_name == "text" and method.lower() in ("sendmessage", "editmessagetext"):
        return _named("bad-request-message-text-is-empty")
    return _bad_request(f"{field_name} is empty")


def _too_many_requests(retry_after: int) -> dict[str, Any]:
    body = error_body("too-many-requests")
    body["description"] = f"Too Many Requests: retry after {retry_after}"
    body["parameters"] = {**body.get("parameters", {}), "retry_after": retry_after}
    return body


def _not_member(chat: Chat, status: str) -> ApiError:
    kicked = status == "kicked"
    if chat.type == "group":
        return _named("forbidden-bot-was-kicked") if kicked else _forbidden("bot is not a member of the group chat")
    if chat.type == "supergroup":
        if kicked:
            return _forbidden("bot was kicked from the supergroup chat")
        return _named("forbidden-bot-not-member-supergroup")
    return _forbidden("bot was kicked from the channel chat") if kicked else _named("forbidden-bot-not-member-channel")


_URL_BUTTON = re.compile(r"(https?|tg)://\S+", re.IGNORECASE)
_BUTTON_ACTIONS = ("url", "callback_data", "web_app", "login_url", "switch_inline_query",
                   "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
                   "callback_game", "pay")


def _check_button(button: dict[str, Any]) -> None:
    if "callback_data" in button:
        size = len(button["callback_data"].encode("utf-8"))
        if not 1 <= size <= MAX_CALLBACK_DATA_BYTES:
            raise _named("bad-request-button-data-invalid")
    if "url" in button and not _URL_BUTTON.fullmatch(button["url"]):
        raise _named("bad-request-button-url-invalid")
    if not any(key in button for key in _BUTTON_ACTIONS):
        raise _bad_request("can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Parameters from the query string and the body: urlencoded, multipart, JSON or nothing."""
    params: dict[str, Any] = dict(request.query)
    if not request.can_read_body:
        return params
    if request.content_type == "application/json":
        raw = await request.read()
        if raw.strip():
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                raise _bad_request("can't parse JSON encoded request") from None
            if not isinstance(body, dict):
                raise _bad_request("JSON request must be an object")
            params.update(body)
        return params
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(dict(_TOO_LARGE)) from None
        for key, value in form.items():
            # aiohttp gives the bytes of multipart parts that are not text/* and not files (e.g. JSON parts).
            if isinstance(value, bytes | bytearray):
                value = bytes(value).decode("utf-8", errors="replace")
            elif isinstance(value, web.FileField):
                value = UploadedFile(key, value.filename, value.content_type, value.file.read())
            params[key] = value
        return params
    await request.read()  # Telegram ignores bodies of other types
    return params


def _summary(params: dict[str, Any]) -> str:
    shown = {k: (v[:60] + "…" if isinstance(v, str) and len(v) > 60 else v) for k, v in params.items()}
    text = json.dumps(shown, ensure_ascii=False, default=str)
    return text if len(text) <= 200 else text[:200] + "…"


# --- manual mode ----------------------------------------------------------------------------------------------

HELP = """\
as NAME: TEXT               NAME writes TEXT to the bot in private
as NAME in CHAT: TEXT       NAME writes TEXT in CHAT (mods), or posts it (channel)
reply NAME in CHAT ID: TEXT NAME answers message ID in CHAT
press NAME ID WHAT          NAME presses a button of message ID (in mods, else NAME's private chat);
                            WHAT: approve (✅…), reject (❌…), or the button's callback data or text
show CHAT                   the chat as the bot left it (CHAT: mods, channel, or a person's name)
block NAME / unblock NAME   NAME blocks or unblocks the bot
calls [N]                   the last N requests the bot made (default 10)
help / quit"""


class ManualConsole:
    """Drive the emulator by hand: people, a moderation group and a channel, commands typed on stdin."""

    def __init__(self, emulator: TelegramEmulator) -> None:
        self.emu = emulator
        self.people: dict[str, dict[str, Any]] = {}
        self.chats: dict[str, dict[str, Any]] = {}

    def populate(self) -> None:
        for name, language in (("alice", "en"), ("bob", "es"), ("mo", "en"), ("kim", "de")):
            self.people[name] = self.emu.add_user(name.capitalize(), username=name, language_code=language)
        self.chats["mods"] = self.emu.add_group(
            "Moderators", [(self.people["mo"], "creator"), (self.people["kim"], "member")], bot_status="administrator"
        )
        self.chats["channel"] = self.emu.add_channel("Solidarity News", username="solidarity_news")
        self.emu.listeners.append(self._print_change)

    def banner(self, token: str) -> str:
        lines = ["Telegram Bot API emulator running. Put this in .env:",
                 f"  TELEGRAM_API_URL={self.emu.api_root}",
                 f"  TELEGRAM_TOKEN={token}",
                 f"  TELEGRAM_MODERATION_CHAT={self.chats['mods']['id']}",
                 "Chats: " + ", ".join(f"{name}={chat['id']}" for name, chat in self.chats.items()),
                 "People: " + ", ".join(f"{name}={user['id']}" for name, user in self.people.items()),
                 "Type 'help' for commands."]
        return "\n".join(lines)

    def _print_change(self, event: str, message: dict[str, Any]) -> None:
        # What people type is echoed by the prompt already; show what the bot does.
        if message.get("from", {}).get("id") == self.emu.bot["id"] or "sender_chat" in message:
            print(f"\n[{event} in {self._chat_name(message['chat']['id'])}] {_render(message)}", flush=True)

    def _chat_name(self, chat_id: int) -> str:
        for name, chat in self.chats.items():
            if chat["id"] == chat_id:
                return name
        for name, user in self.people.items():
            if user["id"] == chat_id:
                return name
        return str(chat_id)

    def _resolve_chat(self, name: str) -> int:
        name = name.strip()
        if name in self.chats:
            return self.chats[name]["id"]
        if name in self.people:
            return self.people[name]["id"]
        return int(name)

    def _person(self, name: str) -> dict[str, Any]:
        if name not in self.people:
            raise ValueError(f"unknown person {name!r}; known: {', '.join(self.people)}")
        return self.people[name]

    def execute(self, line: str) -> str | None:
        """Run one command line; return what to print (None: quit)."""
        line = line.strip()
        if not line:
            return ""
        verb, _, rest = line.partition(" ")
        commands: dict[str, Callable[[str], str]] = {
            "as": self._as, "reply": self._reply, "press": self._press, "show": self._show, "block": self._block,
            "unblock": self._unblock, "calls": self._calls, "help": lambda _: HELP,
        }
        if verb in ("quit", "exit"):
            return None
        if verb not in commands:
            return f"unknown command {verb!r}; type help"
        try:
            return commands[verb](rest)
        except (ValueError, KeyError, LookupError) as exc:
            return f"error: {exc}"

    def _as(self, rest: str) -> str:
        who, sep, text = rest.partition(":")
        if not sep:
            raise ValueError("use: as NAME: TEXT or as NAME in CHAT: TEXT")
        name, _, chat_name = who.partition(" in ")
        person = self._person(name.strip())
        text = text.strip()
        if not chat_name:
            message = self.emu.user_sends(person, text)
        elif chat_name.strip() == "channel":
            message = self.emu.channel_posts(self.chats["channel"], text)
        else:
            message = self.emu.user_sends(person, text, self._resolve_chat(chat_name))
        return f"sent as message {message['message_id']}"

    def _reply(self, rest: str) -> str:
        match = re.fullmatch(r"(\S+) in (\S+) (\d+):(.*)", rest.strip(), re.DOTALL)
        if not match:
            raise ValueError("use: reply NAME in CHAT ID: TEXT")
        name, chat_name, message_id, text = match.groups()
        message = self.emu.user_replies(self._person(name), self._resolve_chat(chat_name), int(message_id),
                                        text.strip())
        return f"sent as message {message['message_id']}"

    def _press(self, rest: str) -> str:
        parts = rest.split(maxsplit=2)
        if len(parts) != 3:
            raise ValueError("use: press NAME MESSAGE_ID approve|reject|DATA")
        person, message_id, what = self._person(parts[0]), int(parts[1]), parts[2].strip()
        chat_ids = [self.chats["mods"]["id"]]
        if self.emu.private_chat_exists(person):
            chat_ids.append(person["id"])
        for chat_id in chat_ids:
            message = next((m for m in self.emu.messages(chat_id) if m["message_id"] == message_id), None)
            if message is not None:
                data = _pick_button(message, what)
                self.emu.press_button(person, chat_id, message_id, data)
                return f"pressed {data!r}"
        raise LookupError(f"no message {message_id} in mods or in {parts[0]}'s chat")

    def _show(self, rest: str) -> str:
        chat_id = self._resolve_chat(rest)
        messages = self.emu.messages(chat_id)
        return "\n".join(_render(m) for m in messages) or "(no messages)"

    def _block(self, rest: str) -> str:
        self.emu.block_bot(self._person(rest.strip()))
        return "blocked"

    def _unblock(self, rest: str) -> str:
        self.emu.unblock_bot(self._person(rest.strip()))
        return "unblocked"

    def _calls(self, rest: str) -> str:
        count = int(rest) if rest.strip() else 10
        return "\n".join(f"{method} {_summary(params)}" for method, params in self.emu.calls[-count:])


def _pick_button(message: dict[str, Any], what: str) -> str:
    buttons = [b for row in message.get("reply_markup", {}).get("inline_keyboard", []) for b in row
               if "callback_data" in b]
    prefix = {"approve": "✅", "reject": "❌"}.get(what.lower())
    for button in buttons:
        if (prefix and button["text"].startswith(prefix)) or what in (button["callback_data"], button["text"]):
            return button["callback_data"]
    raise LookupError(f"message {message['message_id']} has no button {what!r}")


def _render(message: dict[str, Any]) -> str:
    author = message.get("from", {}).get("first_name") or message.get("sender_chat", {}).get("title", "?")
    edited = " (edited)" if "edit_date" in message else ""
    media = next((f"[{key}]" for key in MEDIA_FIELDS if key in message), "")
    body = message.get("text") or " ".join(filter(None, [media, message.get("caption")])) or json.dumps(
        {k: v for k, v in message.items() if k.startswith("migrate")})
    lines = [f"#{message['message_id']} {author}{edited}: {body}"]
    for row in message.get("reply_markup", {}).get("inline_keyboard", []):
        lines.append("    " + "  ".join(f"[{b['text']} → {b.get('callback_data', b.get('url', ''))}]" for b in row))
    return "\n".join(lines)


async def _manual(port: int, token: str | None) -> None:
    emulator = TelegramEmulator(token, port=port)
    console = ManualConsole(emulator)
    console.populate()
    await emulator.start()
    print(console.banner(token or f"{emulator.bot['id']}:any-token-works"), flush=True)
    loop = asyncio.get_running_loop()
    try:
        while True:
            print("> ", end="", flush=True)
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:  # end of input
                break
            output = console.execute(line)
            if output is None:
                break
            if output:
                print(output, flush=True)
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Telegram Bot API emulator, driven by hand")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default=None, help="accept only this token (default: any)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_manual(args.port, args.token))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "ApiError",
    "Chat",
    "EmulatorBug",
    "Limits",
    "ManualConsole",
    "Spec",
    "StoredFile",
    "TelegramEmulator",
    "Upload",
    "UploadedFile",
    "error_body",
]

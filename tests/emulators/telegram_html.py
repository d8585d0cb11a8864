"""Telegram's text formatting, as the Bot API server applies it to message text.

What a bot sends is not what is stored: HTML is parsed into plain text plus entities, control characters are
replaced, leading and trailing whitespace is trimmed, and commands, mentions, hashtags and links get entities of
their own. Limits (4096) apply to the result, counted in UTF-16 code units like every offset and length.

The HTML parser follows tdlib's ``parse_html`` (td/telegram/MessageEntity.cpp) step by step, on UTF-8 bytes,
so its error messages and byte offsets are Telegram's. One deliberate difference: Telegram keeps a stray ``&``
that does not start an entity as a literal character; with ``strict_ampersand`` (the default) it is an error,
so a bot that forgets to escape user text is caught (``A&amp;B`` would otherwise silently become ``A&B``).
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable
from typing import Any

Entity = dict[str, Any]

SUPPORTED_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler", "tg-emoji", "span",
     "pre", "code", "blockquote", "tg-time"}
)
_SIMPLE_TAGS = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
    "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
}
_NAMED_ENTITIES = {b"lt": "<", b"gt": ">", b"amp": "&", b"quot": '"'}
# tdlib's is_space() includes NUL: the parser relies on a NUL sentinel after the text.
_SPACES = frozenset(b" \t\r\n\x0b\x0c\x00")
# Entities whose data is not in the text itself: tdlib keeps them even when they cover whitespace only.
_HIDDEN_DATA = frozenset({"text_link", "text_mention", "custom_emoji", "date_time"})
# Formatting that may overlap anything; other entities may not be crossed by auto-detected ones.
_SPLITTABLE = frozenset({"bold", "italic", "underline", "strikethrough", "spoiler"})
# tdlib's sort order among entities with the same offset and length.
_PRIORITY = {
    "mention": 50, "hashtag": 50, "bot_command": 50, "url": 50, "email": 50, "cashtag": 50, "phone_number": 50,
    "bold": 90, "italic": 91, "underline": 92, "strikethrough": 93, "spoiler": 94, "custom_emoji": 99,
    "code": 20, "pre": 11, "text_link": 49, "text_mention": 49, "blockquote": 0, "expandable_blockquote": 0,
    "date_time": 49,
}
ENTITY_TYPES = frozenset(_PRIORITY)


class EntityParseError(ValueError):
    """The text could not be parsed; ``str(error)`` is tdlib's message (without "can't parse entities: ")."""


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def _units(text: str) -> array:
    return array("H", text.encode("utf-16-le"))


def _text(units: array) -> str:
    return units.tobytes().decode("utf-16-le")


# --- HTML ----------------------------------------------------------------------------------------------------


def _decode_entity(data: bytes, pos: int) -> tuple[int, int]:
    """tdlib's decode_html_entity: (code point or 0, position after the entity)."""
    end = pos + 1
    code = 0
    if data[end] == ord("#"):
        end += 1
        if data[end] == ord("x"):
            end += 1
            while chr(data[end]) in "0123456789abcdefABCDEF":
                code = code * 16 + int(chr(data[end]), 16)
                end += 1
        else:
            while 0x30 <= data[end] <= 0x39:
                code = code * 10 + data[end] - 0x30
                end += 1
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return 0, pos
    else:
        while chr(data[end]).isascii() and chr(data[end]).isalpha():
            end += 1
        name = data[pos + 1 : end]
        if name not in _NAMED_ENTITIES:
            return 0, pos
        code = ord(_NAMED_ENTITIES[name])
    if data[end] == ord(";"):
        end += 1
    return code, end


class _HtmlParser:
    """One parse of one text; see tdlib's do_parse_html."""

    def __init__(self, text: str, strict_ampersand: bool) -> None:
        self.data = text.encode("utf-8") + b"\x00"
        self.size = len(self.data) - 1
        self.strict_ampersand = strict_ampersand
        self.out: list[str] = []
        self.out_units = 0  # UTF-16 length of what self.out holds
        self.entities: list[Entity] = []
        # open tags: (name, argument, utf16 offset, index in self.out)
        self.stack: list[tuple[str, str, int, int]] = []

    def parse(self) -> tuple[str, list[Entity]]:
        i = 0
        pending = bytearray()  # plain bytes not yet decoded into self.out
        while i < self.size:
            c = self.data[i]
            if c == ord("&"):
                code, end = _decode_entity(self.data, i)
                if code:
                    self._flush(pending)
                    self._append(chr(code))
                    i = end
                    continue
                if self.strict_ampersand:
                    raise EntityParseError(
                        f'Character "&" at byte offset {i} does not start an HTML entity: escape it as "&amp;" '
                        "(the emulator is stricter than Telegram, which would keep it)"
                    )
            if c != ord("<"):
                pending.append(c)
                i += 1
                continue
            self._flush(pending)
            i = self._end_tag(i) if self.data[i + 1] == ord("/") else self._start_tag(i)
        self._flush(pending)
        if self.stack:
            raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{self.stack[-1][0]}"')
        text = "".join(self.out)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise EntityParseError(
                "Text contains invalid Unicode characters after decoding HTML entities, check for unmatched "
                "surrogate code units"
            ) from None
        for entity in self.entities:
            # tdlib drops the language of a <code> that is not inside a <pre>.
            if entity["type"] == "code":
                entity.pop("language", None)
        return text, sort_entities(self.entities)

    def _flush(self, pending: bytearray) -> None:
        if pending:
            self._append(pending.decode("utf-8", errors="replace"))
            pending.clear()

    def _append(self, text: str) -> None:
        self.out.append(text)
        self.out_units += utf16_len(text) if not (len(text) == 1 and 0xD800 <= ord(text) < 0xE000) else 1

    def _start_tag(self, begin: int) -> int:
        data, i = self.data, begin + 1
        while data[i] not in _SPACES and data[i] != ord(">"):
            i += 1
        if data[i] == 0:
            raise EntityParseError(f"Unclosed start tag at byte offset {begin}")
        tag = data[begin + 1 : i].decode("utf-8", errors="replace").lower()
        if tag not in SUPPORTED_TAGS:
            raise EntityParseError(f'Unsupported start tag "{tag}" at byte offset {begin}')
        argument, i = self._attributes(tag, begin, i)
        if tag == "span" and argument.get("class") != "spoiler":
            raise EntityParseError(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
        self.stack.append((tag, _encode_argument(argument), self.out_units, len(self.out)))
        return i + 1

    def _attributes(self, tag: str, begin: int, i: int) -> tuple[dict[str, str], int]:
        """Parse attributes up to the closing '>'; return the ones Telegram uses and the '>' position."""
        data = self.data
        argument: dict[str, str] = {}
        while data[i] != ord(">"):
            while data[i] != 0 and data[i] in _SPACES:
                i += 1
            if data[i] == ord(">"):
                break
            name_begin = i
            while data[i] not in _SPACES and data[i] not in b"=>":
                i += 1
            name = data[name_begin:i].decode("utf-8", errors="replace")
            if not name:
                raise EntityParseError(f'Empty attribute name in the tag "{tag}" at byte offset {begin}')
            while data[i] != 0 and data[i] in _SPACES:
                i += 1
            if data[i] != ord("="):
                if tag == "blockquote" and name == "expandable":
                    argument["expandable"] = "1"
                    continue
                raise EntityParseError(
                    f'Expected equal sign in declaration of an attribute of the tag "{tag}" at byte offset {begin}'
                )
            i += 1
            while data[i] != 0 and data[i] in _SPACES:
                i += 1
            if data[i] == 0:
                raise EntityParseError(f'Unclosed start tag "{tag}" at byte offset {begin}')
            value, i = self._attribute_value(i)
            if data[i] == 0:
                raise EntityParseError(f"Unclosed start tag at byte offset {begin}")
            _keep_attribute(tag, name, value, argument)
        return argument, i

    def _attribute_value(self, i: int) -> tuple[str, int]:
        data = self.data
        if data[i] not in b"'\"":
            # A name token: letters, digits, periods, hyphens; case-insensitive.
            begin = i
            while chr(data[i]).isascii() and (chr(data[i]).isalnum() or data[i] in b".-"):
                i += 1
            if data[i] not in _SPACES and data[i] != ord(">"):
                raise EntityParseError(f"Unexpected end of name token at byte offset {begin}")
            return data[begin:i].decode("ascii").lower(), i
        quote = data[i]
        i += 1
        value = bytearray()
        while data[i] != quote and data[i] != 0:
            if data[i] == ord("&"):
                code, end = _decode_entity(data, i)
                if code:
                    value += chr(code).encode("utf-8", errors="surrogatepass")
                    i = end
                    continue
            value.append(data[i])
            i += 1
        if data[i] == quote:
            i += 1
        return value.decode("utf-8", errors="replace"), i

    def _end_tag(self, begin: int) -> int:
        data = self.data
        if not self.stack:
            raise EntityParseError(f"Unexpected end tag at byte offset {begin}")
        i = begin + 2
        while data[i] not in _SPACES and data[i] != ord(">"):
            i += 1
        end_name = data[begin + 2 : i].decode("utf-8", errors="replace").lower()
        while data[i] != 0 and data[i] in _SPACES:
            i += 1
        if data[i] != ord(">"):
            raise EntityParseError(f"Unclosed end tag at byte offset {begin}")
        tag, argument, offset, out_index = self.stack[-1]
        if end_name and end_name != tag:
            raise EntityParseError(
                f'Unmatched end tag at byte offset {begin}, expected "</{tag}>", found "</{end_name}>"'
            )
        self.stack.pop()
        if self.out_units > offset:
            inner = "".join(self.out[out_index:])
            self._close(tag, _decode_argument(argument), offset, self.out_units - offset, inner)
        return i + 1

    def _close(self, tag: str, argument: dict[str, str], offset: int, length: int, inner: str) -> None:
        entities = self.entities
        if tag in _SIMPLE_TAGS or tag == "span":
            entities.append({"type": _SIMPLE_TAGS.get(tag, "spoiler"), "offset": offset, "length": length})
        elif tag == "blockquote":
            kind = "expandable_blockquote" if argument.get("expandable") else "blockquote"
            entities.append({"type": kind, "offset": offset, "length": length})
        elif tag == "tg-emoji":
            emoji_id = argument.get("emoji-id", "")
            if not emoji_id.isdigit() or int(emoji_id) == 0:
                raise EntityParseError("Invalid custom emoji identifier specified")
            entities.append({"type": "custom_emoji", "offset": offset, "length": length, "custom_emoji_id": emoji_id})
        elif tag == "tg-time":
            entities.append(_time_entity(argument, offset, length))
        elif tag == "a":
            link = _link_entity(argument.get("href") or inner, offset, length)
            if link:
                entities.append(link)
        elif tag == "pre":
            last = entities[-1] if entities else None
            if last and last["type"] == "code" and (last["offset"], last["length"]) == (offset, length) \
                    and last.get("language"):
                last["type"] = "pre"  # <pre><code class="language-x">…</code></pre>
            else:
                entities.append({"type": "pre", "offset": offset, "length": length})
        elif tag == "code":
            last = entities[-1] if entities else None
            language = argument.get("language", "")
            if last and last["type"] == "pre" and (last["offset"], last["length"]) == (offset, length) and language:
                last["language"] = language
            else:
                entity = {"type": "code", "offset": offset, "length": length}
                if language:
                    entity["language"] = language
                entities.append(entity)


def _keep_attribute(tag: str, name: str, value: str, argument: dict[str, str]) -> None:
    """Only these attributes mean something to Telegram; all others are parsed and ignored."""
    if tag == "a" and name == "href":
        argument["href"] = value
    elif tag == "code" and name == "class" and value.startswith("language-"):
        argument["language"] = value[len("language-") :]
    elif tag == "span" and name == "class" and value.startswith("tg-"):
        argument["class"] = value[len("tg-") :]
    elif tag == "tg-emoji" and name == "emoji-id":
        argument["emoji-id"] = value
    elif tag == "tg-time" and name in ("unix", "format"):
        argument[name] = value


def _encode_argument(argument: dict[str, str]) -> str:
    return "\x00".join(f"{k}\x01{v}" for k, v in argument.items())


def _decode_argument(encoded: str) -> dict[str, str]:
    return dict(part.split("\x01", 1) for part in encoded.split("\x00")) if encoded else {}


def _time_entity(argument: dict[str, str], offset: int, length: int) -> Entity:
    unix = argument.get("unix", "")
    if not unix.lstrip("-").isdigit():
        raise EntityParseError("Invalid Unix time specified")
    entity: Entity = {"type": "date_time", "offset": offset, "length": length, "unix_time": int(unix)}
    if argument.get("format"):
        entity["date_time_format"] = argument["format"]
    return entity


_USER_LINK = re.compile(r"tg://user\?id=(\d+)", re.IGNORECASE)


def _link_entity(url: str, offset: int, length: int) -> Entity | None:
    """A text_link, a text_mention (tg://user?id=N; the caller resolves the user) or None for a bad URL.

    Telegram silently drops links it cannot accept instead of failing the message.
    """
    user = _USER_LINK.fullmatch(url.strip())
    if user:
        return {"type": "text_mention", "offset": offset, "length": length, "user": {"id": int(user.group(1))}}
    checked = checked_link(url)
    return {"type": "text_link", "offset": offset, "length": length, "url": checked} if checked else None


def checked_link(url: str) -> str | None:
    """A simplified LinkManager::get_checked_link: http(s), tg and ton links; bare domains get http://."""
    url = url.strip()
    if not url or any(c in url for c in " \n<>\""):
        return None
    scheme, sep, rest = url.partition("://")
    if not sep:
        return f"http://{url}" if re.match(r"[\w-]+(\.[\w-]+)+(?:[:/?#]|$)", url) else None
    if scheme.lower() in ("http", "https"):
        return url if re.match(r"[\w-]+(\.[\w-]+)*(?::\d+)?(?:[/?#]|$)", rest) else None
    return url if scheme.lower() in ("tg", "ton") and rest else None


def parse_html(text: str, strict_ampersand: bool = True) -> tuple[str, list[Entity]]:
    """Telegram's HTML → (plain text, entities). Raises EntityParseError with tdlib's message."""
    return _HtmlParser(text, strict_ampersand).parse()


# --- what the server does to every text -----------------------------------------------------------------------


def sort_entities(entities: list[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (e["offset"], -e["length"], _PRIORITY.get(e["type"], 50)))


_REMOVED = frozenset({0x2028, 0x2029, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x0333, 0x033F, 0x030A})
_WHITESPACE = frozenset({0x20, 0x0A})


def _clean(units: array, entities: list[Entity]) -> tuple[array, list[Entity]]:
    """Control characters become spaces; CR, line/paragraph separators, bidi overrides and a few combining
    marks are removed (tdlib's clean_input_string_with_entities); entity offsets follow the removals."""
    kept = array("H")
    new_index = []  # new_index[i]: position in the cleaned text of original unit i
    for unit in units:
        new_index.append(len(kept))
        if unit == 0x0D or unit in _REMOVED:
            continue
        kept.append(0x20 if unit < 0x20 and unit != 0x0A else unit)
    new_index.append(len(kept))
    moved = []
    for entity in entities:
        start, end = new_index[entity["offset"]], new_index[entity["offset"] + entity["length"]]
        if end > start:
            moved.append({**entity, "offset": start, "length": end - start})
    return kept, moved


def _drop_blank_entities(units: array, entities: list[Entity]) -> list[Entity]:
    """Entities lose leading whitespace; whitespace-only ones disappear (tdlib's remove_invalid_entities)."""
    result = []
    for entity in entities:
        if entity["type"] in _HIDDEN_DATA:
            result.append(entity)
            continue
        start, end = entity["offset"], entity["offset"] + entity["length"]
        while start < end and units[start] in _WHITESPACE:
            start += 1
        if start < end:
            result.append({**entity, "offset": start, "length": end - start})
    return result


def _trim(units: array, entities: list[Entity]) -> tuple[array, list[Entity]]:
    end = len(units)
    while end > 0 and units[end - 1] in _WHITESPACE:
        end -= 1
    first_entity = min((e["offset"] for e in entities), default=end)
    start = 0
    while start < min(end, first_entity) and units[start] in _WHITESPACE:
        start += 1
    trimmed = []
    for entity in entities:
        e_start, e_end = max(entity["offset"], start), min(entity["offset"] + entity["length"], end)
        if e_end > e_start:
            trimmed.append({**entity, "offset": e_start - start, "length": e_end - e_start})
    return units[start:end], trimmed


def check_entities(text: str, entities: list[Entity]) -> None:
    """Explicit ``entities`` must lie inside the text (tdlib's messages)."""
    size = utf16_len(text)
    for entity in entities:
        if entity["offset"] < 0 or entity["offset"] > 1_000_000:
            raise EntityParseError(f"Receive an entity with incorrect offset {entity['offset']}")
        if entity["length"] < 0 or entity["length"] > 1_000_000:
            raise EntityParseError(f"Receive an entity with incorrect length {entity['length']}")
        if entity["type"] not in ENTITY_TYPES:
            raise EntityParseError(f'Unsupported entity type "{entity["type"]}"')
    for entity in sort_entities(entities):
        if entity["length"] and entity["offset"] >= size:
            raise EntityParseError(f"Entity begins after the end of the text at UTF-16 offset {entity['offset']}")
        if entity["offset"] + entity["length"] > size:
            raise EntityParseError(
                f"Entity beginning at UTF-16 offset {entity['offset']} ends after the end of the text at UTF-16 "
                f"offset {entity['offset'] + entity['length']}"
            )


# Auto-detected entities, after tdlib's match_* regular expressions (simplified: no bare domains, no e-mail).
_FINDERS = (
    ("bot_command", re.compile(r"(?<![\w/<>])/[a-zA-Z0-9_]{1,64}(?:@[a-zA-Z0-9_]{3,32})?(?![\w/<>])")),
    ("mention", re.compile(r"(?<!\w)@[a-zA-Z0-9_]{2,32}(?!\w)")),
    ("hashtag", re.compile(r"(?<![\w\u200c])#[\w\u200c]*[^\W\d_][\w\u200c]*(?![\w\u200c]*#)")),
    ("cashtag", re.compile(r"(?<![\w$])\$(?:1INCH|[A-Z]{1,8})(?![\w$])")),
    ("url", re.compile(r"(?<![\w@/.])https?://[\w-]+(?:\.[\w-]+)*(?::\d+)?(?:[/?#][^\s<>\"]*)?", re.IGNORECASE)),
)
_URL_TRAILING = ".,:;!?)]}'\""


def find_entities(text: str) -> list[Entity]:
    """Commands, mentions, hashtags, cashtags and http(s) links that Telegram marks by itself."""
    prefix = [0]  # UTF-16 offset of every str index
    for ch in text:
        prefix.append(prefix[-1] + (2 if ord(ch) > 0xFFFF else 1))
    found = []
    for kind, pattern in _FINDERS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if kind == "url":
                while end > start and text[end - 1] in _URL_TRAILING:
                    end -= 1
            found.append({"type": kind, "offset": prefix[start], "length": prefix[end] - prefix[start]})
    return found


def _overlaps(a: Entity, b: Entity) -> bool:
    return a["offset"] < b["offset"] + b["length"] and b["offset"] < a["offset"] + a["length"]


def _merge_found(entities: list[Entity], found: list[Entity]) -> list[Entity]:
    """Detected entities never cross code, links or other detected entities (tdlib's merge_new_entities)."""
    merged = list(entities)
    for entity in sorted(found, key=lambda e: (e["offset"], -e["length"])):
        if not any(_overlaps(entity, other) for other in merged if other["type"] not in _SPLITTABLE
                   and other["type"] not in ("blockquote", "expandable_blockquote")):
            merged.append(entity)
    return merged


def normalize(text: str, entities: list[Entity], detect: bool = True) -> tuple[str, list[Entity]]:
    """What Telegram stores for (text, entities): cleaned, trimmed, with detected entities. May return ""."""
    units, entities = _clean(_units(text), entities)
    entities = _drop_blank_entities(units, entities)
    units, entities = _trim(units, entities)
    plain = _text(units)
    if detect and plain:
        entities = _merge_found(entities, find_entities(plain))
    return plain, sort_entities(entities)


def format_message(
    text: str,
    parse_mode: str | None = None,
    entities: list[Entity] | None = None,
    resolve_user: Callable[[int], dict[str, Any] | None] | None = None,
    strict_ampersand: bool = True,
) -> tuple[str, list[Entity]]:
    """The stored (text, entities) for what a bot sent. Raises EntityParseError (message without prefix).

    Explicit ``entities`` win over ``parse_mode`` like in the Bot API server. Only HTML is parsed here;
    callers reject the Markdown modes before calling.
    """
    if entities is not None:
        check_entities(text, entities)
        parsed = [dict(e) for e in entities]
    elif parse_mode and parse_mode.lower() == "html":
        text, parsed = parse_html(text, strict_ampersand)
    else:
        parsed = []
    parsed = _resolve_mentions(parsed, resolve_user)
    return normalize(text, parsed)


def _resolve_mentions(
    entities: list[Entity], resolve_user: Callable[[int], dict[str, Any] | None] | None
) -> list[Entity]:
    """text_mention entities carry the whole user; unknown users lose the entity, as in Telegram."""
    result = []
    for entity in entities:
        if entity["type"] == "text_mention":
            user = resolve_user(entity["user"]["id"]) if resolve_user else None
            if user is None:
                continue
            entity = {**entity, "user": user}
        result.append(entity)
    return result

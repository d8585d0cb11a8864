"""Measuring texts as the platforms count them, and splitting a long text into messages that each fit.

Everything here is pure: the transports and the outbox worker call it with their own limit and measure.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from enum import IntEnum

Measure = Callable[[str], int]

_WHITESPACE = re.compile(r"\s+")
_NON_SPACE = re.compile(r"\S")
_CLOSERS = "\"'”’»)]」』）"
# A sentence end followed by whitespace: without the space "3.5" or "example.org" would look like ends ...
_SENTENCE_END_BEFORE = re.compile(rf"[.!?…。！？｡][{re.escape(_CLOSERS)}]*\Z")
# ... while CJK full-width ends need no space after them: CJK text has none to cut at.
_FULL_WIDTH_END = re.compile(rf"[。！？｡][{re.escape(_CLOSERS)}]*")
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_ZWJ = "\u200d"


class _Boundary(IntEnum):
    """Where a cut reads best, best last."""

    SPACE = 1
    SENTENCE = 2
    LINE = 3
    PARAGRAPH = 4


# Removed from letters: control characters but line breaks and tabs, lone surrogates, the bidirectional
# embeddings, overrides and isolates (which can make a card read differently from what it holds), and tag
# characters (invisible text), except inside a subdivision flag (🏴 + tags + cancel tag: 🏴󠁧󠁢󠁳󠁣󠁴󠁿).
_UNWANTED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]+")
_SUBDIVISION_FLAG = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")
# `@name` as Telegram detects a mention; a word joiner after the `@` leaves it a plain word.
_MENTION = re.compile(r"(?<![\w.@])@(?=[A-Za-z0-9_])")
WORD_JOINER = "\u2060"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(text: str) -> str:
    """Lone surrogates (only a broken or hostile client sends them; JSON can carry them as `\\ud800`) become
    U+FFFD: they cannot be stored, hashed or sent on."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def is_clean_id(value: object, longest: int = 255) -> bool:
    """An identifier the bot can store and send back: a non-empty string of valid Unicode, not absurdly long."""
    return isinstance(value, str) and 0 < len(value) <= longest and not _LONE_SURROGATE.search(value)


def clean_text(text: str) -> str:
    """A letter's text as stored: without what could hide or disguise text, then stripped.

    Zero-width joiners and non-joiners stay: emoji sequences and scripts (Persian, Indic) need them.
    """
    kept: list[str] = []
    position = 0
    for flag in _SUBDIVISION_FLAG.finditer(text):
        kept += [_UNWANTED.sub("", text[position:flag.start()]), flag[0]]
        position = flag.end()
    kept.append(_UNWANTED.sub("", text[position:]))
    return "".join(kept).strip()


def defuse_mentions(text: str) -> str:
    """`@name` → `@\u2060name`: shown the same, but never a live mention that notifies someone."""
    return _MENTION.sub("@" + WORD_JOINER, text)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, as Telegram counts message length: a non-BMP emoji counts 2."""
    # surrogatepass: a lone surrogate (from a broken client) still counts one unit instead of raising.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def split_text(text: str, limit: int, measure: Measure = utf16_len) -> list[str]:
    """Split `text` into parts with `measure(part) <= limit`, each cut where it reads best.

    Cuts go, by preference, at a paragraph break (blank line), a line break, a sentence end, any whitespace,
    and only as a last resort inside a word (between whole characters, and between grapheme clusters
    unless one cluster alone exceeds the limit). Among cuts of the best kind available the latest is taken.

    Parts keep the text exactly: `"".join(parts) == text`. Whitespace at a cut stays at the end of the part
    before it (as far as the limit allows), so callers may strip a part for display but must rejoin the
    unstripped parts. A part is whitespace only just when the text has a run of whitespace that does not fit
    in one part next to any text (a run about as long as `limit`), or is whitespace only; callers that strip
    should skip parts that become empty.

    `measure` must not shrink when a text grows. An empty text gives no parts. Raises ValueError when
    `limit` is below 1 or a single character measures more than `limit`.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, not {limit}")
    # Offsets rather than slicing off the rest: copying a long text at every part would be quadratic.
    text_end = len(text.rstrip())
    parts: list[str] = []
    start = 0
    while start < len(text):
        fitting = _longest_fitting_end(text, start, limit, measure)
        if fitting == start:
            raise ValueError(f"the character {text[start]!r} alone measures more than {limit}")
        cut = fitting if fitting == len(text) else _choose_cut(text, start, fitting, text_end, limit, measure)
        parts.append(text[start:cut])
        start = cut
    return parts


def _longest_fitting_end(text: str, start: int, limit: int, measure: Measure) -> int:
    """The largest `end` with `measure(text[start:end]) <= limit`."""
    # Gallop, then bisect: measuring all the rest of a long text for every part would be quadratic.
    low, high = start, min(len(text), start + limit)
    while measure(text[start:high]) <= limit:
        low = high
        if high == len(text):
            return high
        high = min(len(text), start + (high - start) * 2)
    # Invariant: text[start:low] fits, text[start:high] does not.
    while high - low > 1:
        middle = (low + high) // 2
        if measure(text[start:middle]) <= limit:
            low = middle
        else:
            high = middle
    return low


def _choose_cut(text: str, start: int, fitting: int, text_end: int, limit: int, measure: Measure) -> int:
    """Where to end the part from `start` that may reach `fitting` (short of the end of `text`).

    `text_end` is where the text's trailing whitespace begins.
    """
    content = _NON_SPACE.search(text, start)
    content_start = content.start() if content else len(text)
    if text_end <= fitting:
        # Only trailing whitespace is left over: cut earlier, so that it ends a part with text in it instead
        # of becoming a blank part of its own.
        low = max(content_start + 1, _shortest_fitting_suffix(text, start, limit, measure))
        cut = _nicest_cut(text, start, low, text_end - 1)
        if cut is not None:
            return cut
    # A cut before any text would leave a part of whitespace only.
    cut = _nicest_cut(text, start, content_start + 1, fitting)
    # None: leading whitespace longer than a part, or one grapheme cluster longer than a part. Cutting at the
    # limit is then the only way on (a blank part, or a torn cluster, but never a torn character).
    return fitting if cut is None else cut


def _nicest_cut(text: str, start: int, low: int, high: int) -> int | None:
    """The best-reading cut in `low..high` of the part from `start`: the latest of the best kind of boundary,
    else the latest grapheme boundary (a hard cut), else None."""
    if low > high:
        return None
    candidates = [
        (kind, position)
        for kind, position in _boundaries(text, start, high)
        if position >= low and _is_grapheme_break(text, start, position)
    ]
    if candidates:
        return max(candidates)[1]
    positions = range(high, low - 1, -1)
    return next((position for position in positions if _is_grapheme_break(text, start, position)), None)


def _shortest_fitting_suffix(text: str, start: int, limit: int, measure: Measure) -> int:
    """The smallest index at or after `start` whose suffix fits."""
    low, high = start, len(text)  # text[high:] fits, and no index before `low` does
    while low < high:
        middle = (low + high) // 2
        if measure(text[middle:]) <= limit:
            high = middle
        else:
            low = middle + 1
    return high


def _boundaries(text: str, start: int, high: int) -> list[tuple[_Boundary, int]]:
    """Every boundary that a part from `start` ending at or before `high` could be cut at, by kind."""
    found = [(kind, min(end, high)) for kind, end in _whitespace_runs(text, start, high)]
    found += [(_Boundary.SENTENCE, match.end()) for match in _FULL_WIDTH_END.finditer(text, start, high)]
    return found


def _whitespace_runs(text: str, start: int, high: int) -> list[tuple[_Boundary, int]]:
    """Each run of whitespace starting in `start..high`, by kind and end."""
    runs = []
    for match in _WHITESPACE.finditer(text, start, high + 1):
        # The window may have truncated the last run, and a run is a paragraph break only as a whole.
        whole = _WHITESPACE.match(text, match.start()) or match
        runs.append((_run_kind(text, whole.start(), whole.group()), whole.end()))
    return runs


def _run_kind(text: str, run_start: int, run: str) -> _Boundary:
    run = run.replace("\r\n", "\n")
    breaks = sum(run.count(char) for char in _LINE_BREAKS) + run.count("\u2029")  # U+2029 ends a paragraph
    if breaks >= 2:
        return _Boundary.PARAGRAPH
    if breaks == 1:
        return _Boundary.LINE
    if _SENTENCE_END_BEFORE.search(text, max(0, run_start - 8), run_start):
        return _Boundary.SENTENCE
    return _Boundary.SPACE


def _is_grapheme_break(text: str, start: int, position: int) -> bool:
    """A conservative subset of the Unicode extended grapheme cluster rules (UAX #29).

    `start` is where the current part begins, itself taken as a boundary.
    """
    if position <= start or position >= len(text):
        return True
    before, after = text[position - 1], text[position]
    if before == "\r" and after == "\n":
        return False
    if _extends(after) or before == _ZWJ:
        return False
    if _is_regional_indicator(before) and _is_regional_indicator(after):
        # Flags are pairs of regional indicators: break only after an even number of them, counted from the
        # part's start (a boundary), so a long row of flags is not recounted from its beginning.
        count = 1
        while position - count > start and _is_regional_indicator(text[position - count - 1]):
            count += 1
        return count % 2 == 0
    return not _is_hangul_jamo_tail(after)


def _extends(char: str) -> bool:
    """Whether `char` attaches to the character before it: marks, joiners, selectors, skin tones, tags."""
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or char == _ZWJ
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (subdivision flags)
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _is_hangul_jamo_tail(char: str) -> bool:
    # Medial vowels and final consonants of a decomposed Hangul syllable.
    code = ord(char)
    return 0x1160 <= code <= 0x11FF or 0xD7B0 <= code <= 0xD7FF

"""Measuring and splitting texts (handlers/text.py) and escaping them for Telegram HTML (bot/markup.py)."""

from __future__ import annotations

import html
import random
import re

import pytest

from bot.markup import escape_html, render_telegram_html
from handlers.text import split_text, utf16_len


def _assert_valid_split(text: str, limit: int, parts: list[str], measure=utf16_len) -> None:
    assert "".join(parts) == text
    assert all(part for part in parts)
    assert all(measure(part) <= limit for part in parts), [measure(part) for part in parts]


# --- utf16_len -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("hello", 5),
        ("ñandú", 5),
        ("日本語", 3),  # BMP: one unit each
        ("😀", 2),  # outside the BMP: a surrogate pair
        ("a😀b", 4),
        ("👍🏽", 4),  # emoji + skin tone: two astral code points
        ("👩‍👩‍👧", 8),  # three astral emoji joined by two ZWJ (BMP)
        ("🇪🇸", 4),
        ("e\u0301", 2),  # e + combining acute: two code points, one on screen
    ],
)
def test_utf16_len_counts_code_units(text: str, expected: int) -> None:
    assert utf16_len(text) == expected


def test_utf16_len_tolerates_lone_surrogates() -> None:
    assert utf16_len("a\ud800b") == 3


# --- split_text: basics -------------------------------------------------------------------------------


def test_empty_text_gives_no_parts() -> None:
    assert split_text("", 10) == []


def test_text_that_fits_is_one_part() -> None:
    assert split_text("Short letter.", 100) == ["Short letter."]
    assert split_text("exactly10!", 10) == ["exactly10!"]


@pytest.mark.parametrize("limit", [0, -5])
def test_limit_must_be_positive(limit: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        split_text("abc", limit)


def test_character_longer_than_limit_is_refused() -> None:
    # An emoji is two UTF-16 units: a limit of one cannot hold it without splitting a character.
    with pytest.raises(ValueError, match="alone"):
        split_text("a😀", 1)


# --- split_text: where it cuts --------------------------------------------------------------------------


def test_prefers_paragraph_break() -> None:
    text = "First paragraph.\n\nSecond one. It goes on\nwith a line break here."
    parts = split_text(text, 40)
    assert parts[0] == "First paragraph.\n\n"
    _assert_valid_split(text, 40, parts)


def test_paragraph_break_with_spaces_and_crlf() -> None:
    text = "One line.\r\n  \r\nNext paragraph. And more text here."
    parts = split_text(text, 30)
    assert parts[0] == "One line.\r\n  \r\n"
    _assert_valid_split(text, 30, parts)


def test_prefers_line_break_over_sentence_end() -> None:
    text = "Line one. Still line one\nline two is here and long"
    parts = split_text(text, 30)
    assert parts[0] == "Line one. Still line one\n"


def test_prefers_sentence_end_over_space() -> None:
    text = "We stand with you. Your struggle is ours and we will keep writing"
    parts = split_text(text, 30)
    assert parts[0] == "We stand with you. "
    _assert_valid_split(text, 30, parts)


@pytest.mark.parametrize("end", ["!", "?", "…", '."', ".»", "?)"])
def test_other_sentence_ends(end: str) -> None:
    text = f"Solidarity forever{end} and then a lot more words"
    parts = split_text(text, 30)
    assert parts[0] == f"Solidarity forever{end} "


def test_decimal_point_is_not_a_sentence_end() -> None:
    parts = split_text("Version 3.5 is out and ready now", 20)
    assert parts[0] == "Version 3.5 is out "


def test_falls_back_to_last_space() -> None:
    text = "one two three four five six seven eight nine ten"
    parts = split_text(text, 20)
    # "five six seven eight" fills the part exactly: the space after it has to lead the next one.
    assert parts == ["one two three four ", "five six seven eight", " nine ten"]
    _assert_valid_split(text, 20, parts)


def test_latest_cut_of_the_best_kind_wins() -> None:
    text = "a b c d e f g h i j k l m n"
    assert split_text(text, 10)[0] == "a b c d e "


def test_whitespace_at_the_cut_stays_with_the_previous_part() -> None:
    parts = split_text("alpha beta   gamma", 13)
    assert parts == ["alpha beta   ", "gamma"]


def test_whitespace_run_straddling_the_limit() -> None:
    # The paragraph break does not fit whole: the part takes what fits, the rest leads the next part.
    text = "abcdefgh\n\n\n\nijkl"
    parts = split_text(text, 10)
    assert parts == ["abcdefgh\n\n", "\n\nijkl"]


def test_no_whitespace_only_parts_between_words() -> None:
    text = ("word " * 50).strip()
    for limit in range(4, 30):
        parts = split_text(text, limit)
        _assert_valid_split(text, limit, parts)
        assert all(part.strip() for part in parts)


def test_whitespace_longer_than_a_part_is_the_only_way_to_a_blank_part() -> None:
    text = "word" + " " * 30 + "next"
    parts = split_text(text, 10)
    _assert_valid_split(text, 10, parts)
    assert parts[0] == "word      "
    assert parts[-1].strip() == "next"


def test_trailing_whitespace_is_not_a_part_of_its_own() -> None:
    # The text fits but for its final newline: the cut moves back so the newline ends a part with words.
    text = "one two three four\n"
    parts = split_text(text, 18)
    assert parts == ["one two three ", "four\n"]


def test_trailing_whitespace_after_a_word_without_spaces() -> None:
    text = "x" * 12 + "\n\n"
    parts = split_text(text, 12)
    assert parts == ["x" * 11, "x\n\n"]


def test_whitespace_only_text_is_kept() -> None:
    assert split_text("   ", 10) == ["   "]
    assert "".join(split_text(" " * 25, 10)) == " " * 25


def test_leading_whitespace_is_not_a_part_of_its_own() -> None:
    parts = split_text("   hello there friend", 10)
    assert parts[0].strip()
    _assert_valid_split("   hello there friend", 10, parts)


# --- split_text: scripts and symbols ---------------------------------------------------------------------


def test_text_without_spaces_is_cut_hard() -> None:
    text = "x" * 25
    assert split_text(text, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_long_word_after_short_words_does_not_leave_a_tiny_tail_first() -> None:
    text = "hi " + "y" * 30
    parts = split_text(text, 10)
    assert parts[0] == "hi "
    _assert_valid_split(text, 10, parts)


def test_cjk_cuts_after_full_width_sentence_ends() -> None:
    text = "我们与你们站在一起。团结就是力量！你好吗？再见"
    parts = split_text(text, 12, len)
    assert parts[0] == "我们与你们站在一起。"
    assert all(part.endswith(("。", "！", "？")) for part in parts[:-1])
    _assert_valid_split(text, 12, parts, len)


def test_cjk_full_width_end_followed_by_space_keeps_the_space() -> None:
    parts = split_text("第一句。 第二句很长很长很长", 8, len)
    assert parts[0] == "第一句。 "


def test_cjk_without_punctuation_is_cut_hard() -> None:
    text = "団結" * 20
    parts = split_text(text, 7)
    assert [len(part) for part in parts] == [7] * 5 + [5]
    _assert_valid_split(text, 7, parts)


def test_emoji_are_never_split_into_surrogates() -> None:
    text = "😀" * 10  # 20 UTF-16 units
    parts = split_text(text, 5)
    assert parts == ["😀😀"] * 5  # 3 emoji would be 6 units; 2.5 cannot exist
    _assert_valid_split(text, 5, parts)


def test_mixed_bmp_and_astral() -> None:
    text = "a😀" * 20
    for limit in range(2, 15):
        _assert_valid_split(text, limit, split_text(text, limit))


@pytest.mark.parametrize(
    "cluster",
    [
        "👍🏽",  # skin tone modifier
        "👩‍👩‍👧",  # ZWJ sequence
        "🇪🇸",  # flag: regional indicator pair
        "e\u0301",  # combining accent
        "❤️",  # variation selector
        "1️⃣",  # keycap
        "🏴󠁧󠁢󠁳󠁣󠁴󠁿",  # subdivision flag: tag characters
    ],
)
def test_grapheme_clusters_stay_whole_when_they_fit(cluster: str) -> None:
    text = cluster * 9
    limit = utf16_len(cluster) * 2 + 1
    parts = split_text(text, limit)
    _assert_valid_split(text, limit, parts)
    assert all(part == cluster * 2 for part in parts[:-1])


def test_flags_pair_up_from_the_start() -> None:
    text = "🇪🇸🇺🇦🇵🇸"  # ES, UA, PS: cutting after an odd indicator would make "SU" and "AP"
    parts = split_text(text, 6)
    assert parts == ["🇪🇸", "🇺🇦", "🇵🇸"]


def test_grapheme_cluster_longer_than_limit_is_cut_between_characters() -> None:
    family = "👩‍👩‍👧‍👦"  # 11 UTF-16 units
    parts = split_text(family, 5)
    _assert_valid_split(family, 5, parts)
    assert len(parts) > 1


def test_crlf_is_not_torn_apart() -> None:
    text = "abcdefgh\r\nijkl"
    parts = split_text(text, 9)
    assert not any(part.startswith("\n") for part in parts)
    _assert_valid_split(text, 9, parts)


# --- split_text: long texts and a custom measure ---------------------------------------------------------


def test_long_letter_in_paragraphs() -> None:
    paragraph = "We read your letter aloud at the assembly. Everyone signed it. " * 12
    text = "\n\n".join(paragraph.strip() for _ in range(10))
    parts = split_text(text, 4096)
    _assert_valid_split(text, 4096, parts)
    assert all(part.endswith("\n\n") for part in parts[:-1])
    assert len(parts) == 2


def test_long_paragraph_is_cut_at_sentences() -> None:
    text = "Sentence number one is here. " * 300
    parts = split_text(text, 4096)
    _assert_valid_split(text, 4096, parts)
    assert all(part.endswith(". ") for part in parts)


def test_custom_measure_in_bytes() -> None:
    def utf8_len(part: str) -> int:
        return len(part.encode())

    text = "ñandú " * 40
    parts = split_text(text, 50, utf8_len)
    _assert_valid_split(text, 50, parts, utf8_len)
    assert all(part.endswith(" ") for part in parts)


def test_measure_that_ignores_some_characters() -> None:
    def visible(part: str) -> int:
        return len(part.replace("*", ""))

    text = "*" * 100 + "abc def"
    parts = split_text(text, 5, visible)
    _assert_valid_split(text, 5, parts, visible)


def test_very_long_text_is_fast_enough() -> None:
    text = ("Palabras de apoyo y solidaridad. " * 40 + "\n\n") * 100  # ~130k characters
    parts = split_text(text, 4096)
    _assert_valid_split(text, 4096, parts)


# --- split_text: properties over random texts ------------------------------------------------------------

_ALPHABET = [
    *"abcdefghij ABC,;:",
    *[" ", " ", " ", "\n", "\n\n", "\r\n", "\t", ". ", "! ", "? ", "… ", "。", "！"],
    *"日本語团结ñüé",
    *["\u0301", "\u200d", "\ufe0f", "😀", "👍🏽", "🇪🇸", "🇺", "\U0001f3fd", "\u2029"],
    "👩\u200d👩\u200d👧",
]


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 300)))


def test_random_texts_rejoin_exactly_and_fit() -> None:
    rng = random.Random(20240501)
    for _ in range(1500):
        text = _random_text(rng)
        limit = rng.randint(2, 60)  # two units hold any single character
        parts = split_text(text, limit)
        _assert_valid_split(text, limit, parts)


def test_random_texts_blank_parts_only_from_long_whitespace() -> None:
    rng = random.Random(7)
    for _ in range(1000):
        text = _random_text(rng)
        limit = rng.randint(2, 60)
        longest_space_run = max((len(run) for run in re.findall(r"\s+", text)), default=0)
        parts = split_text(text, limit)
        if text.strip() and longest_space_run < limit // 2:
            assert all(part.strip() for part in parts), (text, limit, parts)


def test_random_texts_with_len_measure() -> None:
    rng = random.Random(99)
    for _ in range(500):
        text = _random_text(rng)
        limit = rng.randint(1, 40)
        _assert_valid_split(text, limit, split_text(text, limit, len), len)


def test_parts_are_as_long_as_the_limit_allows_without_boundaries() -> None:
    rng = random.Random(3)
    for _ in range(200):
        text = "".join(rng.choice("abcxyz") for _ in range(rng.randint(1, 500)))
        limit = rng.randint(1, 50)
        parts = split_text(text, limit)
        assert all(len(part) == limit for part in parts[:-1])


# --- escape_html / render_telegram_html ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("<b>bold?</b>", "&lt;b&gt;bold?&lt;/b&gt;"),
        ("fish & chips", "fish &amp; chips"),
        ("&amp;", "&amp;amp;"),
        ("&lt;", "&amp;lt;"),
        ('say "hi"', "say &quot;hi&quot;"),
        ("it's", "it's"),
        ("@mention #tag", "@mention #tag"),
        ("https://example.org/?a=1&b=<2>", "https://example.org/?a=1&amp;b=&lt;2&gt;"),
        ("1 < 2 > 0", "1 &lt; 2 &gt; 0"),
    ],
)
def test_escape_html(text: str, expected: str) -> None:
    assert escape_html(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "<b>x</b>",
        "&amp;",
        "&&&<<<>>>",
        "@mention",
        "https://example.org/?a=1&b=2",
        '<a href="x">y</a>',
        "😀 e\u0301 日本",
    ],
)
def test_escaping_round_trips(text: str) -> None:
    escaped = escape_html(text)
    assert "<" not in escaped and ">" not in escaped
    assert html.unescape(escaped) == text


def test_escaped_text_has_no_stray_ampersands() -> None:
    escaped = escape_html("a & b &amp; c &#39; d")
    assert re.fullmatch(r"(?:[^&]|&(?:amp|lt|gt|quot);)*", escaped)


def test_render_all_parts() -> None:
    rendered = render_telegram_html("Letter #3", "Hello & welcome", "via Matrix")
    assert rendered == "<b>Letter #3</b>\n\nHello &amp; welcome\n\n<i>via Matrix</i>"


def test_render_escapes_every_part() -> None:
    rendered = render_telegram_html("<i>t</i>", "<b>b</b>", "</i>f")
    assert rendered == "<b>&lt;i&gt;t&lt;/i&gt;</b>\n\n&lt;b&gt;b&lt;/b&gt;\n\n<i>&lt;/i&gt;f</i>"


@pytest.mark.parametrize(
    ("title", "footer", "expected"),
    [
        (None, None, "body"),
        ("T", None, "<b>T</b>\n\nbody"),
        (None, "F", "body\n\n<i>F</i>"),
        ("", "", "body"),
    ],
)
def test_render_leaves_out_missing_parts(title: str | None, footer: str | None, expected: str) -> None:
    assert render_telegram_html(title, "body", footer) == expected


def test_render_keeps_body_whitespace() -> None:
    assert render_telegram_html(None, "line 1\nline 2\n\npara", None) == "line 1\nline 2\n\npara"

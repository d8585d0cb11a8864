"""Catalogue loading and language fallback (bot/i18n.py), and the completeness of the real catalogues."""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import PoFileError, read_po

from bot.i18n import N_, Catalogues

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("bot", "handlers")
REQUIRED_CATALOGUES = ("en", "es")
# The keywords `make locales` extracts with: `pybabel extract -k _ -k N_` keeps Babel's defaults
# (gettext, ngettext, pgettext...) and _ and N_ are among them.
KEYWORDS = {**DEFAULT_KEYWORDS, "_": None, "N_": None}

PO_HEADER = """\
msgid ""
msgstr ""
"Project-Id-Version: test\\n"
"Language: {language}\\n"
"Plural-Forms: {plural_forms}\\n"
"MIME-Version: 1.0\\n"
"Content-Type: text/plain; charset=utf-8\\n"
"Content-Transfer-Encoding: 8bit\\n"

"""
TWO_FORMS = "nplurals=2; plural=(n != 1);"
# Ukrainian: one / few / many, to prove Plural-Forms is honoured rather than assumed.
THREE_FORMS = (
    "nplurals=3; plural=(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2);"
)


def write_po(locales: Path, language: str, body: str, plural_forms: str = TWO_FORMS) -> Path:
    path = locales / language / "LC_MESSAGES" / "bot.po"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = PO_HEADER.format(language=language, plural_forms=plural_forms)
    path.write_text(header + textwrap.dedent(body), encoding="utf-8")
    return path


@pytest.fixture
def locales(tmp_path: Path) -> Path:
    root = tmp_path / "locales"
    write_po(
        root,
        "es",
        """\
        msgid "Letter #{number} received"
        msgstr "Carta n.º {number} recibida"

        msgid "Only in Spanish and Portuguese"
        msgstr "Solo en español"

        msgid "Not translated yet"
        msgstr ""

        #, fuzzy
        msgid "Guessed by a machine"
        msgstr "Adivinado"

        msgid "{count} letter waiting"
        msgid_plural "{count} letters waiting"
        msgstr[0] "{count} carta en espera"
        msgstr[1] "{count} cartas en espera"

        msgid "Ñandú ✊"
        msgstr "Ñandú ✊ ¡sí!"
        """,
    )
    write_po(
        root,
        "pt",
        """\
        msgid "Letter #{number} received"
        msgstr "Carta n.º {number} recebida"

        msgid "Only in Spanish and Portuguese"
        msgstr "Só em português"
        """,
    )
    write_po(
        root,
        "pt_BR",
        """\
        msgid "Letter #{number} received"
        msgstr "Carta nº {number} recebida"
        """,
    )
    write_po(
        root,
        "uk",
        """\
        msgid "{count} letter waiting"
        msgid_plural "{count} letters waiting"
        msgstr[0] "{count} лист чекає"
        msgstr[1] "{count} листи чекають"
        msgstr[2] "{count} листів чекають"
        """,
        plural_forms=THREE_FORMS,
    )
    return root


@pytest.fixture
def catalogues(locales: Path) -> Catalogues:
    return Catalogues.load(locales, default_language="es")


# --- loading ---------------------------------------------------------------------------------------------


def test_languages_are_the_catalogues_plus_english(catalogues: Catalogues) -> None:
    assert catalogues.languages == {"en", "es", "pt", "pt_BR", "uk"}


def test_translates_and_formats_afterwards(catalogues: Catalogues) -> None:
    _ = catalogues.gettext("es")
    assert _("Letter #{number} received").format(number=7) == "Carta n.º 7 recibida"
    assert _("Ñandú ✊") == "Ñandú ✊ ¡sí!"


def test_unknown_message_is_shown_in_english(catalogues: Catalogues) -> None:
    assert catalogues.gettext("es")("Never extracted") == "Never extracted"


def test_untranslated_and_fuzzy_entries_fall_back_to_the_source(catalogues: Catalogues) -> None:
    _ = catalogues.gettext("es")
    assert _("Not translated yet") == "Not translated yet"
    assert _("Guessed by a machine") == "Guessed by a machine"


def test_nothing_is_written_into_the_locales_directory(locales: Path) -> None:
    before = sorted(locales.rglob("*"))
    Catalogues.load(locales, "es")
    assert sorted(locales.rglob("*")) == before
    assert not list(locales.rglob("*.mo"))


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Catalogues.load(tmp_path / "nowhere", "es")


def test_empty_directory_gives_english_only(tmp_path: Path) -> None:
    catalogues = Catalogues.load(tmp_path, "es")
    assert catalogues.languages == {"en"}
    assert catalogues.gettext("es")("Hello") == "Hello"


def test_broken_catalogue_stops_loading(tmp_path: Path) -> None:
    write_po(tmp_path, "es", 'msgid "Hello"\nthis is not a po line\nmsgstr "Hola"\n')
    with pytest.raises(PoFileError):
        Catalogues.load(tmp_path, "es")


def test_english_catalogue_can_reword_the_source(tmp_path: Path) -> None:
    write_po(
        tmp_path, "en", 'msgid "Letter received"\nmsgstr "Your letter arrived"\n\nmsgid "Same"\nmsgstr ""\n'
    )
    _ = Catalogues.load(tmp_path, "es").gettext("en")
    assert _("Letter received") == "Your letter arrived"
    assert _("Same") == "Same"


# --- fallback --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("es", "es"),
        ("ES", "es"),
        ("es-419", "es"),
        ("pt-BR", "pt_BR"),
        ("pt_BR", "pt_BR"),
        ("pt-br", "pt_BR"),
        ("pt-PT", "pt"),
        ("pt", "pt"),
        ("en", "en"),  # English is always available, even with Spanish as the default
        ("en-GB", "en"),
        ("fr", "es"),  # no catalogue: the default language
        ("", "es"),
        (None, "es"),
        ("  ", "es"),
    ],
)
def test_resolve(catalogues: Catalogues, language: str | None, expected: str) -> None:
    assert catalogues.resolve(language) == expected


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("pt-BR", "Carta nº 5 recebida"),
        ("pt_BR", "Carta nº 5 recebida"),
        ("pt", "Carta n.º 5 recebida"),
        ("fr", "Carta n.º 5 recibida"),
        ("en", "Letter #5 received"),
        (None, "Carta n.º 5 recibida"),
    ],
)
def test_gettext_by_language(catalogues: Catalogues, language: str | None, expected: str) -> None:
    assert catalogues.gettext(language)("Letter #{number} received").format(number=5) == expected


def test_regional_catalogue_falls_back_to_its_base_language(catalogues: Catalogues) -> None:
    # pt_BR lacks this message: Portuguese beats English, and the default language (Spanish) is not mixed in.
    assert catalogues.gettext("pt-BR")("Only in Spanish and Portuguese") == "Só em português"


def test_default_language_without_catalogue_falls_back_to_english(locales: Path) -> None:
    catalogues = Catalogues.load(locales, default_language="de")
    assert catalogues.resolve("fr") == "en"
    assert catalogues.gettext("fr")("Letter #{number} received") == "Letter #{number} received"


def test_regional_default_language(locales: Path) -> None:
    catalogues = Catalogues.load(locales, default_language="pt-BR")
    assert catalogues.resolve("fr") == "pt_BR"
    assert catalogues.default_language == "pt-BR"


# --- plurals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "count", "expected"),
    [
        ("es", 1, "1 carta en espera"),
        ("es", 0, "0 cartas en espera"),
        ("es", 5, "5 cartas en espera"),
        ("uk", 1, "1 лист чекає"),
        ("uk", 3, "3 листи чекають"),
        ("uk", 5, "5 листів чекають"),
        ("uk", 21, "21 лист чекає"),
        ("en", 1, "1 letter waiting"),
        ("en", 2, "2 letters waiting"),
        ("pt", 2, "2 letters waiting"),  # not in the Portuguese catalogue
    ],
)
def test_ngettext(catalogues: Catalogues, language: str, count: int, expected: str) -> None:
    ngettext = catalogues.ngettext(language)
    assert (
        ngettext("{count} letter waiting", "{count} letters waiting", count).format(count=count) == expected
    )


def test_n_marks_without_translating() -> None:
    assert N_("Spam") == "Spam"


# --- language names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "in_language", "expected"),
    [
        ("es", "en", "Spanish"),
        ("es", "es", "español"),
        ("en", "es", "inglés"),
        ("uk", "en", "Ukrainian"),
        ("pt-BR", "en", "Portuguese (Brazil)"),
        ("pt_BR", "es", "portugués (Brasil)"),
        ("de", "fr", "allemand"),  # Babel knows French even though the bot has no French catalogue
        ("de", "xx", "alemán"),  # an unknown reader language: the bot's fallback (Spanish)
        ("und", "en", "Unknown language"),
        ("und", "es", "lengua desconocida"),
        ("xx", "en", "xx"),  # not a language: shown as it came
        ("en", None, "inglés"),  # no reader language: the default language
    ],
)
def test_language_name(catalogues: Catalogues, code: str, in_language: str | None, expected: str) -> None:
    assert catalogues.language_name(code, in_language) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("es", True),
        ("en", True),
        ("uk", True),
        ("zh", True),
        ("eo", True),
        ("xx", False),
        ("english", False),
        ("eng", False),  # ISO 639-2, not 639-1
        ("und", False),
        ("ES", False),  # codes are stored lower-case: callers normalise user input first
        ("e", False),
        ("", False),
        ("e1", False),
        ("pt-BR", False),
        ("ñu", False),
    ],
)
def test_is_language(code: str, expected: bool) -> None:
    assert Catalogues.is_language(code) is expected


def test_real_catalogues_load() -> None:
    catalogues = Catalogues.load(REPO / "locales", default_language="es")
    assert set(REQUIRED_CATALOGUES) <= catalogues.languages
    assert catalogues.resolve("es-AR") == "es"


# --- completeness of the real catalogues -----------------------------------------------------------------


@dataclass
class Extracted:
    ids: tuple[str, ...]  # (msgid,) or (msgid, msgid_plural)
    context: str | None
    locations: list[str] = field(default_factory=list)

    def describe(self) -> str:
        where = ", ".join(self.locations[:3])
        context = f" (context {self.context!r})" if self.context else ""
        return f"{self.ids[0]!r}{context} [{where}]"


def extract_messages(root: Path) -> dict[tuple[str | None, str], Extracted]:
    """Every marked text under `root`, found as `make locales` finds it: babel.cfg's map and keywords."""
    with (root / "babel.cfg").open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle, "babel.cfg")
    found: dict[tuple[str | None, str], Extracted] = {}
    for filename, lineno, message, _comments, context in extract_from_dir(
        root, method_map, options_map, keywords=KEYWORDS
    ):
        ids = message if isinstance(message, tuple) else (message,)
        entry = found.setdefault((context, ids[0]), Extracted(tuple(ids), context))
        entry.locations.append(f"{filename}:{lineno}")
    return found


def placeholders(text: str) -> set[str]:
    """The names used by str.format in `text`: "{count}", "{user.name}" -> {"count", "user"}."""
    names = set()
    for _literal, name, _spec, _conversion in Formatter().parse(text):
        if name is not None:
            names.add(name.split(".", 1)[0].split("[", 1)[0])
    return names


def placeholder_problems(ids: tuple[str, ...], strings: tuple[str, ...]) -> list[str]:
    try:
        expected = set().union(*(placeholders(msgid) for msgid in ids))
        found = [placeholders(string) for string in strings if string]
    except ValueError as error:  # a stray brace: .format() would raise at run time
        return [f"malformed braces ({error})"]
    problems = []
    if len(ids) == 1 and found and found[0] != expected:
        problems.append(f"placeholders {sorted(found[0])} instead of {sorted(expected)}")
    for names in found:
        if names - expected:
            problems.append(f"unknown placeholders {sorted(names - expected)}")
    # The last plural form covers "many": it must say how many, as the source does. Other forms may leave
    # the number out ("una carta").
    if len(ids) > 1 and strings and strings[-1] and placeholders(strings[-1]) != placeholders(ids[-1]):
        problems.append(f"last plural form has {sorted(placeholders(strings[-1]))}, not {sorted(expected)}")
    return problems


def catalogue_problems(
    messages: dict[tuple[str | None, str], Extracted], catalog: Catalog, *, needs_translation: bool
) -> list[str]:
    problems = []
    for (context, msgid), extracted in sorted(
        messages.items(), key=lambda item: (item[0][1], item[0][0] or "")
    ):
        entry = catalog.get(msgid, context=context)
        if entry is None:
            problems.append(f"missing {extracted.describe()}")
            continue
        entry_ids = entry.id if isinstance(entry.id, tuple) else (entry.id,)
        if entry_ids != extracted.ids:
            problems.append(f"plural forms differ from the source for {extracted.describe()}")
            continue
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        if entry.fuzzy:
            problems.append(f"fuzzy {extracted.describe()}")
        elif needs_translation and not all(strings):
            problems.append(f"untranslated {extracted.describe()}")
        problems += [
            f"{problem} in {extracted.describe()}" for problem in placeholder_problems(entry_ids, strings)
        ]
    return problems


def read_catalog(path: Path) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle, abort_invalid=True)


def completeness_problems(root: Path, required: tuple[str, ...] = REQUIRED_CATALOGUES) -> list[str]:
    """Everything that keeps `root/locales` from covering every text marked in `root`'s sources."""
    messages = extract_messages(root)
    locales = root / "locales"
    problems = [
        f"locales/bot.pot: {problem}"
        for problem in catalogue_problems(
            messages, read_catalog(locales / "bot.pot"), needs_translation=False
        )
    ]
    catalogues = {path.parents[1].name: path for path in sorted(locales.glob("*/LC_MESSAGES/bot.po"))}
    problems += [f"locales/{language}: no catalogue" for language in required if language not in catalogues]
    for language, path in catalogues.items():
        # English is the source language: an empty msgstr shows the msgid, which is the English text.
        needs_translation = language.split("_")[0] != "en"
        catalog_problems = catalogue_problems(
            messages, read_catalog(path), needs_translation=needs_translation
        )
        problems += [f"locales/{language}: {problem}" for problem in catalog_problems]
    return problems


def test_catalogues_cover_every_marked_text() -> None:
    problems = completeness_problems(REPO)
    assert not problems, "run `make locales`, then translate:\n" + "\n".join(problems)


# The checker above guards every future text, so it gets a source tree of its own to fail on.


def make_project(root: Path, source: str) -> None:
    (root / "babel.cfg").write_text("[python: bot/**.py]\n[python: handlers/**.py]\n", encoding="utf-8")
    (root / "bot").mkdir(parents=True)
    (root / "bot" / "texts.py").write_text(textwrap.dedent(source), encoding="utf-8")
    (root / "tests").mkdir()
    (root / "tests" / "ignored.py").write_text('_("Not scanned")\n', encoding="utf-8")
    (root / "locales").mkdir()


SAMPLE_SOURCE = """\
    from bot.i18n import N_

    REASON = N_("Spam")


    def texts(_, ngettext, number, count):
        return [
            _("Letter #{number} received").format(number=number),
            ngettext("{count} letter", "{count} letters", count).format(count=count),
        ]
    """
SAMPLE_CATALOGUE = """\
    msgid "Spam"
    msgstr "{spam}"

    msgid "Letter #{{number}} received"
    msgstr "{letter}"

    msgid "{{count}} letter"
    msgid_plural "{{count}} letters"
    msgstr[0] "{one}"
    msgstr[1] "{many}"
    """


def write_sample_catalogue(locales: Path, language: str, spam: str, letter: str, one: str, many: str) -> None:
    write_po(locales, language, SAMPLE_CATALOGUE.format(spam=spam, letter=letter, one=one, many=many))


def write_complete_sample(root: Path) -> None:
    locales = root / "locales"
    template = SAMPLE_CATALOGUE.format(spam="", letter="", one="", many="")
    header = PO_HEADER.format(language="", plural_forms="")
    (locales / "bot.pot").write_text(header + textwrap.dedent(template), encoding="utf-8")
    write_sample_catalogue(locales, "en", spam="", letter="", one="", many="")
    write_sample_catalogue(
        locales,
        "es",
        spam="Spam",
        letter="Carta n.º {number} recibida",
        one="una carta",
        many="{count} cartas",
    )


def test_checker_accepts_a_complete_project(tmp_path: Path) -> None:
    make_project(tmp_path, SAMPLE_SOURCE)
    write_complete_sample(tmp_path)
    assert completeness_problems(tmp_path) == []


def test_checker_finds_every_kind_of_gap(tmp_path: Path) -> None:
    make_project(tmp_path, SAMPLE_SOURCE + '    NEW = N_("Brand new text")\n')
    write_complete_sample(tmp_path)
    locales = tmp_path / "locales"
    write_sample_catalogue(
        locales, "es", spam="", letter="Carta n.º {numero} recibida", one="", many="cartas"
    )
    english = locales / "en" / "LC_MESSAGES" / "bot.po"
    fuzzy = english.read_text(encoding="utf-8").replace('msgid "Spam"', '#, fuzzy\nmsgid "Spam"')
    english.write_text(fuzzy, encoding="utf-8")

    problems = "\n".join(completeness_problems(tmp_path))

    assert "locales/bot.pot: missing 'Brand new text'" in problems
    assert "locales/es: missing 'Brand new text'" in problems
    assert "locales/en: missing 'Brand new text'" in problems
    assert "locales/es: untranslated 'Spam'" in problems
    assert "locales/en: fuzzy 'Spam'" in problems
    assert "placeholders ['numero'] instead of ['number']" in problems
    assert "unknown placeholders ['numero']" in problems
    assert "last plural form has [], not ['count']" in problems
    assert "Not scanned" not in problems  # outside babel.cfg's map
    assert "untranslated 'Letter" not in problems and "locales/en: untranslated" not in problems


def test_checker_wants_the_required_catalogues(tmp_path: Path) -> None:
    make_project(tmp_path, SAMPLE_SOURCE)
    write_complete_sample(tmp_path)
    (tmp_path / "locales" / "es" / "LC_MESSAGES" / "bot.po").unlink()
    assert completeness_problems(tmp_path) == ["locales/es: no catalogue"]


def test_checker_notices_a_singular_that_became_plural(tmp_path: Path) -> None:
    singular = SAMPLE_SOURCE.replace(
        'ngettext("{count} letter", "{count} letters", count)', '_("{count} letter")'
    )
    make_project(tmp_path, singular)
    write_complete_sample(tmp_path)
    problems = completeness_problems(tmp_path)
    assert any("plural forms differ" in problem for problem in problems)


@pytest.mark.parametrize(
    ("ids", "strings", "expected"),
    [
        (("Hi {name}",), ("Hola {name}",), []),
        (("Hi {name}",), ("",), []),  # untranslated is judged elsewhere
        (("Hi {name}",), ("Hola",), ["placeholders [] instead of ['name']"]),
        (("Hi {user.name}",), ("Hola {user.name}",), []),
        (("{a} and {b}",), ("{b} y {a}",), []),
        (("{0}",), ("{0}",), []),
        (("{{literal}} {x}",), ("{{literal}} {x}",), []),
        (("Hi {name}",), ("Hola {name",), ["malformed braces (expected '}' before end of string)"]),
    ],
)
def test_placeholder_problems(ids: tuple[str, ...], strings: tuple[str, ...], expected: list[str]) -> None:
    assert placeholder_problems(ids, strings) == expected


# --- no formatting inside _() ----------------------------------------------------------------------------

GETTEXT_NAMES = frozenset(KEYWORDS)


def formatted_gettext_calls(source: str, filename: str) -> list[str]:
    """Calls like _(f"...") or _("...".format(...)): the catalogue would be asked for the finished text."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name not in GETTEXT_NAMES:
            continue
        if any(is_formatted(argument) for argument in node.args):
            found.append(f"{filename}:{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def is_formatted(node: ast.expr) -> bool:
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return is_formatted(node.left) or (
            isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)
        )
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("format", "format_map")
    )


def test_no_formatted_text_inside_gettext_calls() -> None:
    found = []
    for directory in SOURCE_DIRS:
        for path in sorted((REPO / directory).rglob("*.py")):
            found += formatted_gettext_calls(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not found, "format after translating, _('... {x}').format(x=...):\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ('_("Letter #{number} received").format(number=n)', False),
        ('_(f"Letter #{n} received")', True),
        ('_("Letter #{number} received".format(number=n))', True),
        ('_("Letter #%d received" % n)', True),
        ('_("Letter #" + str(n))', True),
        ("_(REASON)", False),
        ('N_(f"{x}")', True),
        ('ngettext("{n} letter", f"{n} letters", n)', True),
        ('self._(f"{x}")', True),
        ('print(f"{x}")', False),
        ('catalogues.gettext(language)("Hello")', False),
    ],
)
def test_formatted_gettext_scanner(source: str, flagged: bool) -> None:
    assert bool(formatted_gettext_calls(source, "sample.py")) is flagged

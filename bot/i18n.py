"""The bot's own texts in the reader's language, from gettext catalogues compiled in memory at start-up.

Catalogues live in `locales/<lang>/LC_MESSAGES/bot.po`. No `.mo` files are kept in git or written next to the
sources: `Catalogues.load` compiles every `.po` with Babel into a buffer, so a fresh checkout (or a read-only
install) runs without a build step.

Marking texts, so that `make locales` (pybabel extract -k _ -k N_) finds them:

    _ = catalogues.gettext(user.language)
    _("Letter #{number} received").format(number=n)     # never _(f"...") nor _("...".format(...))

    ngettext = catalogues.ngettext(user.language)         # keep this local name: pybabel knows it
    ngettext("{count} letter waiting", "{count} letters waiting", count).format(count=count)

    REASON = N_("Spam")   # marked where defined, translated later with _(REASON)

Pass the language to `gettext`/`ngettext` as a variable, never as a literal: pybabel matches calls by name
and would extract `catalogues.gettext("en")` as a message "en".
"""

from __future__ import annotations

import gettext as gettext_module
from collections.abc import Callable, Iterator, Mapping
from io import BytesIO
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

SOURCE_LANGUAGE = "en"  # the language msgids are written in: it needs no catalogue to be available
DOMAIN = "bot"
UNDETERMINED = "und"  # what language detection says when it is unsure

Gettext = Callable[[str], str]
NGettext = Callable[[str, str, int], str]


def N_(message: str) -> str:
    """Mark a text for extraction without translating it yet (it is translated where it is shown)."""
    return message


def _key(code: str) -> str:
    # Telegram sends "pt-br", directories are named "pt_BR": compare one spelling of both.
    return code.strip().replace("-", "_").lower()


def _with_base(code: str | None) -> Iterator[str]:
    if not code or not code.strip():
        return
    key = _key(code)
    yield key
    base = key.split("_", 1)[0]
    if base != key:
        yield base


def _compile(po_path: Path) -> gettext_module.GNUTranslations:
    # abort_invalid: a broken catalogue should stop start-up, not silently lose its messages.
    with po_path.open("rb") as handle:
        catalog = read_po(handle, domain=DOMAIN, abort_invalid=True)
    buffer = BytesIO()
    write_mo(buffer, catalog)  # untranslated and fuzzy entries are left out, so they fall back to the source
    buffer.seek(0)
    return gettext_module.GNUTranslations(buffer)


def _chain_regional_variants(translations: Mapping[str, gettext_module.NullTranslations]) -> None:
    # A message that pt_BR lacks is better shown in pt than in English.
    by_key = {_key(code): catalogue for code, catalogue in translations.items()}
    for key, catalogue in by_key.items():
        base = key.split("_", 1)[0]
        if base != key and base in by_key:
            catalogue.add_fallback(by_key[base])


def _babel_locale(code: str) -> Locale | None:
    try:
        return Locale.parse(code.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return None


class Catalogues:
    """Every loaded catalogue, and the fallback rules that pick one for a reader."""

    def __init__(
        self, translations: Mapping[str, gettext_module.NullTranslations], default_language: str
    ) -> None:
        """`translations` maps a language code (as its directory is named) to its catalogue, used as given."""
        self._names = {_key(code): code for code in translations}
        self._by_key: dict[str, gettext_module.NullTranslations] = {
            _key(code): catalogue for code, catalogue in translations.items()
        }
        # English is the source language: always available, as the msgids themselves when it has no catalogue.
        self._by_key.setdefault(SOURCE_LANGUAGE, gettext_module.NullTranslations())
        self._names.setdefault(SOURCE_LANGUAGE, SOURCE_LANGUAGE)
        self._default_language = default_language

    @classmethod
    def load(cls, locales_dir: Path, default_language: str) -> Catalogues:
        """Compile `<locales_dir>/<lang>/LC_MESSAGES/bot.po` for every language found.

        A missing directory raises FileNotFoundError: a wrong path should not quietly turn the bot English.
        """
        if not locales_dir.is_dir():
            raise FileNotFoundError(f"no locales directory at {locales_dir}")
        translations = {
            po_path.parents[1].name: _compile(po_path)
            for po_path in sorted(locales_dir.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
        }
        _chain_regional_variants(translations)
        return cls(translations, default_language)

    @property
    def languages(self) -> frozenset[str]:
        """Codes with a catalogue, spelled as their directories are, plus the source language."""
        return frozenset(self._names.values())

    @property
    def default_language(self) -> str:
        return self._default_language

    def resolve(self, language: str | None) -> str:
        """The catalogue `language` gets: its own, its base language's, the default language's, or English."""
        # Always found: the source language closes every list of candidates.
        key = next(key for key in self._candidates(language) if key in self._by_key)
        return self._names[key]

    def translations(self, language: str | None) -> gettext_module.NullTranslations:
        return self._by_key[_key(self.resolve(language))]

    def gettext(self, language: str | None) -> Gettext:
        return self.translations(language).gettext

    def ngettext(self, language: str | None) -> NGettext:
        return self.translations(language).ngettext

    def language_name(self, code: str, in_language: str | None) -> str:
        """The name of language `code` as said in `in_language` ("es", "en" -> "Spanish").

        When Babel has no data for `in_language` (or it is None), the name is given in the language the bot's
        own texts fall back to, so it matches the sentence around it. An unknown `code` is returned as it is.
        """
        display = _babel_locale(in_language) if in_language else None
        display = display or _babel_locale(self.resolve(in_language)) or Locale.parse(SOURCE_LANGUAGE)
        if _key(code) == UNDETERMINED:
            # Babel would read "und" as a likely-subtags request (en_US); CLDR names it instead.
            return display.languages.get(UNDETERMINED, UNDETERMINED)
        locale = _babel_locale(code)
        if locale is None:
            return code
        return locale.get_display_name(display) or code

    @staticmethod
    def is_language(code: str) -> bool:
        """Whether `code` is a lower-case ISO 639-1 code that Babel (CLDR) names: "uk" yes, "xx"/"UK" no."""
        if len(code) != 2 or not (code.isascii() and code.isalpha() and code.islower()):
            return False
        return code in Locale.parse(SOURCE_LANGUAGE).languages

    def _candidates(self, language: str | None) -> Iterator[str]:
        yield from _with_base(language)
        yield from _with_base(self._default_language)
        yield SOURCE_LANGUAGE

"""Plain text made safe for Telegram's HTML parse mode.

Letters are written by the public: whatever they type (`<b>`, `&amp;`, a link) must show literally, and only
the bot's own framing (title, footer) is markup.
"""

from __future__ import annotations

from handlers.text import defuse_mentions

# "&" first, or the ampersands of the other entities would be escaped again.
_ENTITIES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"))


def escape_html(text: str) -> str:
    """Escape `& < > "` with the only named entities Telegram accepts, so the text shows as typed."""
    for char, entity in _ENTITIES:
        text = text.replace(char, entity)
    return text


def render_telegram_html(title: str | None, body: str, footer: str | None, quoted: bool = False) -> str:
    """`<b>title</b>`, the body and `<i>footer</i>`, apart by blank lines; empty or missing parts left out.

    Every part is escaped here, so callers pass plain text; no `@name` in it becomes a live mention. A quoted
    body (someone else's words, e.g. a letter on a card) is a block quote, so that nothing in it can pass for
    one of the bot's own lines.
    """
    text = escape_html(defuse_mentions(body))
    sections = [
        f"<b>{escape_html(defuse_mentions(title))}</b>" if title else "",
        f"<blockquote>{text}</blockquote>" if quoted and text else text,
        f"<i>{escape_html(defuse_mentions(footer))}</i>" if footer else "",
    ]
    return "\n\n".join(section for section in sections if section)

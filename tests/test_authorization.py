"""Who may do what, as one table: every command and button × every place × every role → allowed, refused or ignored.

635 cells, one parametrised test; each cell gets a fresh `world` (in-memory database, fake networks), so a cell
that changes something cannot make another pass or fail.

The world of every cell: Telegram and Matrix, each with a moderation room (the Matrix one is where reactions are
tried); letter #1 from the supporter, pending and carded in both rooms; a stored French translation of #1; the
channel "News" (`@news`) subscribed; the channel `@target` known to the bot and not subscribed. What a command needs
besides is made for it alone: the actor's own letter (`withdraw-own`, `forget-yes`), another writer's letter
(`withdraw-other`), a subscription of the chat the command is sent in (`unsubscribe-here`; `unsubscribe-chat`
outside moderation rooms), a ban of the supporter (`unban`).

Places: `private` (the actor's own private chat with the bot), `modroom` (the Telegram moderation room), `group`
(a Telegram group that is no moderation room), `channel` (a Telegram channel), `mxroom` (a Matrix room the bot was
invited to), `mxmods` (the Matrix moderation room, for reactions).

Roles (where MODERATORS is set it also names someone else, so it is a list even when the actor is not on it):
- `supporter`: the writer of letter #1 (on Matrix: someone who writes letters); not in the moderation room.
  MODERATORS unset.
- `moderator`: member of the moderation room. MODERATORS unset.
- `allowlisted`: member of the moderation room and listed. MODERATORS set.
- `unlisted`: member of the moderation room, not listed. MODERATORS set.
- `admin`: an administrator of the chat the command is sent in (in the moderation room: of that room), not listed.
  MODERATORS set.
- `outsider`: not a member of the chat the command is sent in, nor of the moderation room. MODERATORS unset.
- `left`: listed, but no longer in the moderation room (the network reports an outsider). MODERATORS set.
In the place's own chat (group, Matrix room) every role but `admin` and `outsider` is an ordinary member.

Cells that cannot happen are not in the table: a private chat has no administrator and nobody outside it; a channel
post has no sender (only its administrators can post, anonymously), so the channel has one column, `admin`; buttons
and reactions only exist on cards, which only moderation rooms get; in a moderation room `subscribe` and
`unsubscribe` are the moderation commands (`subscribe-chat`, `unsubscribe-chat`), so `subscribe-here` and
`unsubscribe-here` are not tried there.

Outcomes, as a person would notice them:
- allowed: the change happened (letter status, ban, subscription, text, language, translation), or, for a command
  that only shows something, the answer shows it.
- refused: nothing changed anywhere (database, cards, other chats) and the person got a refusal: a reply in that
  chat, or an answer to the press.
- ignored: nothing changed and the bot said nothing at all.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

import pytest

from bot.i18n import Catalogues
from handlers.context import Room
from handlers.events import ActionPressed, ChatKind, ChatRef, Role, UserRef
from storage.db import Database
from tests import conftest
from tests.conftest import MODS, World
from tests.fakes import FakeNetwork, Posted

ALLOWED, REFUSED, IGNORED = "allowed", "refused", "ignored"
MARKS = {"A": ALLOWED, "R": REFUSED, "I": IGNORED}

# ---------------------------------------------------------------------------------------------------------------
# The table. Columns, in this order:
ROLES = ("supporter", "moderator", "allowlisted", "unlisted", "admin", "outsider", "left")
# A allowed · R refused · I ignored · - cannot happen there (see the module docstring).

_PRIVATE = {
    "start":               "A A A A - - A",
    "help":                "A A A A - - A",
    "withdraw-own":        "A A A A - - A",
    "withdraw-other":      "R R R R - - R",
    "forget":              "A A A A - - A",
    "forget-yes":          "A A A A - - A",
    "subscribe-here":      "A A A A - - A",
    "unsubscribe-here":    "A A A A - - A",
    "id":                  "A A A A - - A",
    # Refused even in an allowlisted moderator's own private chat.
    "approve":             "R R R R - - R",
    "reject":              "R R R R - - R",
    "pending":             "R R R R - - R",
    "stats":               "R R R R - - R",
    "ban":                 "R R R R - - R",
    "unban":               "R R R R - - R",
    "subscribe-chat":      "R R R R - - R",
    "unsubscribe-chat":    "R R R R - - R",
    "subscribers":         "R R R R - - R",
    "lang":                "R R R R - - R",
    "translation-show":    "R R R R - - R",
    "translation-replace": "R R R R - - R",
    "edit":                "R R R R - - R",
    "history":             "R R R R - - R",
}

# Reading: every member; deciding and changing: moderators (every member, or the listed members when the list is
# set); outsiders and those who left: only `id`. A supporter's commands are no moderation-room commands.
_MODROOM = {
    "start":               "R A A A A R R",
    "help":                "R A A A A R R",
    "withdraw-own":        "I I I I I I I",
    "withdraw-other":      "I I I I I I I",
    "forget":              "I I I I I I I",
    "forget-yes":          "I I I I I I I",
    "id":                  "A A A A A A A",
    "approve":             "R A A R R R R",
    "reject":              "R A A R R R R",
    "pending":             "R A A A A R R",
    "stats":               "R A A A A R R",
    "ban":                 "R A A R R R R",
    "unban":               "R A A R R R R",
    "subscribe-chat":      "R A A R R R R",
    "unsubscribe-chat":    "R A A R R R R",
    "subscribers":         "R A A A A R R",
    "lang":                "R A A R R R R",
    "translation-show":    "R A A A A R R",
    "translation-replace": "R A A R R R R",
    "edit":                "R A A R R R R",
    "history":             "R A A A A R R",
    "press-approve":       "R A A R R R R",
    "press-reject":        "R A A R R R R",
}

# A subscriber chat: its administrators subscribe it; moderation commands are refused; anything else is ignored.
_GROUP = {
    "start":               "I I I I I I I",
    "help":                "I I I I I I I",
    "withdraw-own":        "I I I I I I I",
    "withdraw-other":      "I I I I I I I",
    "forget":              "I I I I I I I",
    "forget-yes":          "I I I I I I I",
    "subscribe-here":      "R R R R A R R",
    "unsubscribe-here":    "R R R R A R R",
    "id":                  "A A A A A A A",
    "approve":             "R R R R R R R",
    "reject":              "R R R R R R R",
    "pending":             "R R R R R R R",
    "stats":               "R R R R R R R",
    "ban":                 "R R R R R R R",
    "unban":               "R R R R R R R",
    "subscribe-chat":      "R R R R R R R",
    "unsubscribe-chat":    "R R R R R R R",
    "subscribers":         "R R R R R R R",
    "lang":                "R R R R R R R",
    "translation-show":    "R R R R R R R",
    "translation-replace": "R R R R R R R",
    "edit":                "R R R R R R R",
    "history":             "R R R R R R R",
}

_CHANNEL = {
    "start":               "- - - - I - -",
    "help":                "- - - - I - -",
    "withdraw-own":        "- - - - I - -",
    "withdraw-other":      "- - - - I - -",
    "forget":              "- - - - I - -",
    "forget-yes":          "- - - - I - -",
    "subscribe-here":      "- - - - A - -",
    "unsubscribe-here":    "- - - - A - -",
    "id":                  "- - - - A - -",
    "approve":             "- - - - R - -",
    "reject":              "- - - - R - -",
    "pending":             "- - - - R - -",
    "stats":               "- - - - R - -",
    "ban":                 "- - - - R - -",
    "unban":               "- - - - R - -",
    "subscribe-chat":      "- - - - R - -",
    "unsubscribe-chat":    "- - - - R - -",
    "subscribers":         "- - - - R - -",
    "lang":                "- - - - R - -",
    "translation-show":    "- - - - R - -",
    "translation-replace": "- - - - R - -",
    "edit":                "- - - - R - -",
    "history":             "- - - - R - -",
}

_MXMODS = {
    "react-approve":       "R A A R R R R",
    "react-reject":        "R A A R R R R",
}

TABLE: dict[str, dict[str, str]] = {
    "private": _PRIVATE,
    "modroom": _MODROOM,
    "group": _GROUP,
    "channel": _CHANNEL,
    "mxroom": _GROUP,  # the contract treats an invited Matrix room like a group
    "mxmods": _MXMODS,
}


@dataclass(frozen=True)
class Row:
    command: str
    place: str
    role: str
    expected: str

    @property
    def id(self) -> str:
        return f"{self.command}-{self.place}-{self.role}-{self.expected}"


ROWS: list[Row] = [
    Row(command, place, role, MARKS[mark])
    for place, commands in TABLE.items()
    for command, marks in commands.items()
    for role, mark in zip(ROLES, marks.split(), strict=True)
    if mark != "-"
]

# ---------------------------------------------------------------------------------------------------------------
# Speed only: the conftest `world` migrates a new database step by step and compiles every catalogue, for each of
# hundreds of cells. Each cell still gets its own new in-memory database, built from the migrated schema in one
# script, and shares the catalogues, which nothing changes after loading.


class _Premigrated(Database):
    schema: ClassVar[str | None] = None

    async def migrate(self) -> None:
        if _Premigrated.schema is not None:
            await self.load_schema_script(_Premigrated.schema)
            return
        await super().migrate()
        _Premigrated.schema = await self.schema_script()


class _LoadedOnce:
    load = staticmethod(functools.cache(Catalogues.load))


@pytest.fixture(autouse=True)
def _fast_world(monkeypatch: pytest.MonkeyPatch) -> None:
    # Autouse fixtures are set up before `world`; the names are replaced only where conftest looks them up.
    monkeypatch.setattr(conftest, "Database", _Premigrated)
    monkeypatch.setattr(conftest, "Catalogues", _LoadedOnce)


# ---------------------------------------------------------------------------------------------------------------
# The places and the people.

TG_MODS = ChatRef("telegram", MODS, ChatKind.GROUP, "Moderators")
MX_MODS = ChatRef("matrix", "!mods:example.org", ChatKind.GROUP, "Matrix moderators")
MODERATION_ROOM = {"telegram": TG_MODS, "matrix": MX_MODS}
PLACES: dict[str, tuple[str, ChatRef | None]] = {  # (platform, chat); None: the actor's own private chat
    "private": ("telegram", None),
    "modroom": ("telegram", TG_MODS),
    "group": ("telegram", ChatRef("telegram", "-300", ChatKind.GROUP, "Comrades")),
    "channel": ("telegram", ChatRef("telegram", "-400", ChatKind.CHANNEL, "Bulletin")),
    "mxroom": ("matrix", ChatRef("matrix", "!friends:example.org", ChatKind.GROUP, "Friends")),
    "mxmods": ("matrix", MX_MODS),
}
NAMES = {"supporter": "Ana", "moderator": "Mo", "allowlisted": "Lis", "unlisted": "Una", "admin": "Ada",
         "outsider": "Eve", "left": "Leo"}
ACCOUNTS = {
    "telegram": {"supporter": "1", "moderator": "900", "allowlisted": "901", "unlisted": "902", "admin": "903",
                 "outsider": "666", "left": "904"},
    "matrix": {role: f"@{name.lower()}:example.org" for role, name in NAMES.items()},
}
OTHER_WRITER = "2"
# Someone else on the list, so that a list without the actor is still a list.
LISTED_OTHERS = frozenset({"telegram:999", "matrix:@chief:example.org"})
LISTED_ROLES = frozenset({"allowlisted", "left"})
LIST_SET_ROLES = frozenset({"allowlisted", "unlisted", "admin", "left"})
MEMBER_ROLES = frozenset({"moderator", "allowlisted", "unlisted"})  # of the moderation room

TRANSLATION = "Nous sommes avec vous"
REPLACED_TRANSLATION = "Solidarité sans frontières"
EDITED = "A safer text"

# Refusals in any wording the bot uses or is likely to: "only in the moderators' room", "Only an administrator",
# "Only moderators can decide", "Only the moderators named ...", "You have no letter #2".
REFUSAL = re.compile(r"\bonly\b|no letter #|not allowed|may not|cannot|can't|permission", re.IGNORECASE)
# Bookkeeping a refusal may touch without anything a person would notice: replay guards, the bot's own state.
VOLATILE_TABLES = frozenset({"seen_events", "bot_state", "joined_rooms"})


@dataclass
class Cell:
    world: World
    row: Row
    actor: UserRef | None  # None: a channel post
    chat: ChatRef  # where the command is sent
    networks: dict[str, FakeNetwork]
    own: int = 1  # the actor's own pending letter, where the command needs one
    other: int = 2  # another writer's letter, where the command needs one

    @property
    def network(self) -> FakeNetwork:
        return self.networks[self.chat.platform]


def private_chat(user: UserRef) -> ChatRef:
    chat_id = user.user_id if user.platform == "telegram" else f"!dm-{user.user_id[1:].split(':')[0]}:example.org"
    return ChatRef(user.platform, chat_id, ChatKind.PRIVATE)


async def write(world: World, user: UserRef, text: str) -> None:
    await world.dispatch(world.message(private_chat(user), user, text))


def card_part(network: FakeNetwork, room: ChatRef, number: int) -> Posted:
    return next(posted for posted in network.in_chat(room.chat_id)
                if (posted.message.title or "").startswith(f"📨 Letter #{number} "))


def role_in_moderation_room(role: str, sent_there: bool) -> Role:
    if role in MEMBER_ROLES:
        return Role.MEMBER
    if role == "admin" and sent_there:
        return Role.ADMIN
    return Role.OUTSIDER  # "left" too: that is how a network reports someone who left


def role_in_chat(role: str) -> Role:
    """In a group or room that is no moderation room."""
    return {"admin": Role.ADMIN, "outsider": Role.OUTSIDER}.get(role, Role.MEMBER)


async def arrange(world: World, row: Row) -> Cell:
    telegram = world.network
    matrix = FakeNetwork("matrix")
    # Set on the instance: the fake's class attributes are Telegram's.
    matrix.command_prefix = "!"
    matrix.bot_username = None  # Matrix commands name no bot
    networks = {"telegram": telegram, "matrix": matrix}
    world.ctx.networks["matrix"] = matrix
    telegram.roles.clear()  # the fixture's moderator: only this cell's people count
    platform, place_chat = PLACES[row.place]
    room = MODERATION_ROOM[platform]

    actor: UserRef | None = None
    moderators = LISTED_OTHERS if row.role in LIST_SET_ROLES else frozenset()
    if row.place != "channel":  # a channel post has no sender
        actor = UserRef(platform, ACCOUNTS[platform][row.role], NAMES[row.role], "en")
        if row.role in LISTED_ROLES:
            moderators = moderators | {f"{platform}:{actor.user_id}"}
        roles = networks[platform].roles
        roles[(room.chat_id, actor.user_id)] = role_in_moderation_room(row.role, sent_there=place_chat == room)
        if place_chat is not None and place_chat != room:
            roles[(place_chat.chat_id, actor.user_id)] = role_in_chat(row.role)
    world.ctx.policy = dataclasses.replace(
        world.ctx.policy,
        moderation_rooms=(Room("telegram", MODS), Room("matrix", MX_MODS.chat_id)),
        moderators=frozenset(moderators),
    )
    if place_chat is not None:
        chat = place_chat
    else:
        assert actor is not None
        chat = private_chat(actor)

    telegram.chats["@target"] = ChatRef("telegram", "-500", ChatKind.CHANNEL, "Target")
    telegram.chats["@news"] = ChatRef("telegram", "-600", ChatKind.CHANNEL, "News")
    repos, now = world.ctx.repos, world.clock.now()
    await repos.subscriptions.subscribe("telegram", "-600", "channel", "News", "en", now)
    await write(world, UserRef("telegram", ACCOUNTS["telegram"]["supporter"], "Ana", "en"), "We stand with you")
    await repos.translations.put(1, "fr", TRANSLATION, "machine", now)
    cell = Cell(world, row, actor, chat, networks)
    prepare = COMMANDS[row.command].prepare
    if prepare is not None:
        await prepare(cell)
    return cell


# ---------------------------------------------------------------------------------------------------------------
# The commands: what is sent, what it needs beforehand, and how its effect shows.

Check = Callable[[Cell], Awaitable[None]]


@dataclass(frozen=True)
class Spec:
    text: str = ""  # after the prefix; {own}: the actor's own letter, {other}: another writer's
    gesture: str = "message"  # or "press" (a Telegram button) or "react" (a Matrix reaction)
    data: str = ""  # of a press or reaction
    shows: str | None = None  # what the answer of a command that only shows something contains
    changes: Check | None = None  # asserts the change an allowed command made
    prepare: Check | None = None


async def own_letter(cell: Cell) -> None:
    if cell.actor is None:
        return
    repos = cell.world.ctx.repos
    sender = await repos.senders.find(cell.actor.platform, cell.actor.user_id)
    if sender is None or not await repos.letters.pending_of(sender.id):
        await write(cell.world, cell.actor, "A letter of my own")
        sender = await repos.senders.find(cell.actor.platform, cell.actor.user_id)
    assert sender is not None
    cell.own = (await repos.letters.pending_of(sender.id))[0]


async def other_writers_letter(cell: Cell) -> None:
    writer = UserRef("telegram", OTHER_WRITER, "Ben", "en")
    await write(cell.world, writer, "Hold on, friends")
    sender = await cell.world.ctx.repos.senders.find("telegram", OTHER_WRITER)
    assert sender is not None
    cell.other = (await cell.world.ctx.repos.letters.pending_of(sender.id))[0]


async def chat_subscribed(cell: Cell) -> None:
    chat = cell.chat
    await cell.world.ctx.repos.subscriptions.subscribe(
        chat.platform, chat.chat_id, chat.kind.value, chat.title, "en", cell.world.clock.now())


async def chat_subscribed_outside_moderation(cell: Cell) -> None:
    # Sent anywhere but a moderation room, `unsubscribe @news` must not end the subscription of the chat it is
    # sent in either: a subscribed chat shows that.
    if not cell.world.ctx.is_moderation_room(*cell.chat.key):
        await chat_subscribed(cell)


async def supporter_banned(cell: Cell) -> None:
    ctx = cell.world.ctx
    await ctx.repos.bans.ban(ctx.hasher.account_hash("telegram", ACCOUNTS["telegram"]["supporter"]), 1,
                             cell.world.clock.now())


async def status_of(cell: Cell, number: int) -> str:
    letter = await cell.world.ctx.repos.letters.get(number)
    assert letter is not None, f"letter #{number} is gone"
    return letter.status


def letter_becomes(status: str, own: bool = False) -> Check:
    async def check(cell: Cell) -> None:
        number = cell.own if own else 1
        assert await status_of(cell, number) == status, f"letter #{number} should be {status}"
    return check


async def own_account_forgotten(cell: Cell) -> None:
    assert cell.actor is not None
    assert await status_of(cell, cell.own) == "withdrawn", "forget yes should withdraw the pending letter"
    assert await cell.world.ctx.repos.senders.find(cell.actor.platform, cell.actor.user_id) is None


def subscribed(platform_chat: tuple[str, str] | None, language: str) -> Check:
    async def check(cell: Cell) -> None:
        platform, chat_id = platform_chat or cell.chat.key
        subscription = await cell.world.ctx.repos.subscriptions.find(platform, chat_id)
        assert subscription is not None and subscription.active, f"{chat_id} should be subscribed"
        assert subscription.language == language
    return check


def unsubscribed(platform_chat: tuple[str, str] | None) -> Check:
    async def check(cell: Cell) -> None:
        platform, chat_id = platform_chat or cell.chat.key
        subscription = await cell.world.ctx.repos.subscriptions.find(platform, chat_id)
        assert subscription is not None and not subscription.active, f"{chat_id} should no longer be subscribed"
    return check


async def supporter_is_banned(cell: Cell) -> None:
    ctx, world = cell.world.ctx, cell.world
    supporter = UserRef("telegram", ACCOUNTS["telegram"]["supporter"], "Ana", "en")
    assert await ctx.repos.bans.is_banned(ctx.hasher.account_hash("telegram", supporter.user_id))
    before = await ctx.repos.letters.counts_by_status()
    await write(world, supporter, "Another letter")
    assert await ctx.repos.letters.counts_by_status() == before, "a banned sender's letter was stored"


async def supporter_not_banned(cell: Cell) -> None:
    ctx = cell.world.ctx
    assert not await ctx.repos.bans.is_banned(ctx.hasher.account_hash("telegram", ACCOUNTS["telegram"]["supporter"]))


async def language_corrected(cell: Cell) -> None:
    letter = await cell.world.ctx.repos.letters.get(1)
    assert letter is not None and letter.language == "es"


async def translation_replaced(cell: Cell) -> None:
    assert await cell.world.ctx.repos.translations.get(1, "fr") == REPLACED_TRANSLATION


async def text_edited(cell: Cell) -> None:
    letter = await cell.world.ctx.repos.letters.get(1)
    assert letter is not None and letter.text == EDITED


COMMANDS: dict[str, Spec] = {
    "start": Spec("start", shows=r"Hello!|approve N"),  # the moderation room answers with the moderators' help
    "help": Spec("help", shows=r"withdraw N|approve N"),
    "withdraw-own": Spec("withdraw {own}", changes=letter_becomes("withdrawn", own=True), prepare=own_letter),
    "withdraw-other": Spec("withdraw {other}", prepare=other_writers_letter),
    "forget": Spec("forget", shows=r"forget yes"),
    "forget-yes": Spec("forget yes", changes=own_account_forgotten, prepare=own_letter),
    "subscribe-here": Spec("subscribe es", changes=subscribed(None, "es")),
    "unsubscribe-here": Spec("unsubscribe", changes=unsubscribed(None), prepare=chat_subscribed),
    "id": Spec("id", shows=r"This chat's id"),
    "approve": Spec("approve 1", changes=letter_becomes("approved")),
    "reject": Spec("reject 1 names a place", changes=letter_becomes("rejected")),
    "pending": Spec("pending", shows=r"Waiting for a decision"),
    "stats": Spec("stats", shows=r"Letters: \d+ pending"),
    "ban": Spec("ban 1", changes=supporter_is_banned),
    "unban": Spec("unban 1", changes=supporter_not_banned, prepare=supporter_banned),
    "subscribe-chat": Spec("subscribe @target es", changes=subscribed(("telegram", "-500"), "es")),
    "unsubscribe-chat": Spec("unsubscribe @news", changes=unsubscribed(("telegram", "-600")),
                             prepare=chat_subscribed_outside_moderation),
    "subscribers": Spec("subscribers", shows=r"active subscriptions"),
    "lang": Spec("lang 1 es", changes=language_corrected),
    "translation-show": Spec("translation 1 fr", shows=re.escape(TRANSLATION)),
    "translation-replace": Spec(f"translation 1 fr {REPLACED_TRANSLATION}", changes=translation_replaced),
    "edit": Spec(f"edit 1 {EDITED}", changes=text_edited),
    "history": Spec("history 1", shows=r"History of letter #1"),
    "press-approve": Spec(gesture="press", data="approve:1", changes=letter_becomes("approved")),
    "press-reject": Spec(gesture="press", data="reject:1", changes=letter_becomes("rejected")),
    "react-approve": Spec(gesture="react", data="react:✅", changes=letter_becomes("approved")),
    "react-reject": Spec(gesture="react", data="react:❌", changes=letter_becomes("rejected")),
}
assert {row.command for row in ROWS} == set(COMMANDS), "every command in the table needs a Spec, and no more"


# ---------------------------------------------------------------------------------------------------------------
# What a person could notice: the database, every message the bot posted or edited, every answer to a press.

@dataclass(frozen=True)
class Seen:
    tables: dict[str, list[str]]
    posted: dict[str, int]
    versions: dict[str, list[tuple[int, bool]]]  # per posted message: (edits, scrubbed)
    answers: dict[str, int]


async def look(cell: Cell) -> Seen:
    # Every table a person could notice a change in.
    database = cell.world.ctx.repos.db
    assert isinstance(database, Database)
    return Seen(
        await database.rows_by_table(leaving_out=VOLATILE_TABLES),
        {platform: len(network.posted) for platform, network in cell.networks.items()},
        {platform: [(len(p.edits), p.scrubbed) for p in network.posted] for platform, network in cell.networks.items()},
        {platform: len(network.press_answers) for platform, network in cell.networks.items()},
    )


def new_posts(cell: Cell, before: Seen) -> list[Posted]:
    return [posted for platform, network in cell.networks.items()
            for posted in network.posted[before.posted[platform]:]]


def new_answers(cell: Cell, before: Seen) -> list[str]:
    return [text for platform, network in cell.networks.items()
            for _token, text in network.press_answers[before.answers[platform]:]]


async def assert_nothing_changed(cell: Cell, before: Seen) -> None:
    after = await look(cell)
    names = before.tables.keys() | after.tables.keys()  # an empty table has no rows in the dump
    changed = sorted(name for name in names if before.tables.get(name) != after.tables.get(name))
    assert not changed, f"the database changed: {', '.join(changed)}"
    for platform, versions in before.versions.items():
        assert after.versions[platform][: len(versions)] == versions, f"a message on {platform} was edited"
    elsewhere = [p.ref for p in new_posts(cell, before) if p.ref.chat_id != cell.chat.chat_id]
    assert not elsewhere, f"the bot posted elsewhere: {elsewhere}"


async def act(cell: Cell) -> None:
    spec, world = COMMANDS[cell.row.command], cell.world
    if spec.gesture == "message":
        prefix = cell.network.command_prefix
        text = prefix + spec.text.format(own=cell.own, other=cell.other)
        await world.dispatch(world.message(cell.chat, cell.actor, text))
        return
    assert cell.actor is not None
    world.counter += 1
    part = card_part(cell.network, cell.chat, 1)
    await world.dispatch(ActionPressed(
        event_id=f"press{world.counter}",
        chat=cell.chat,
        user=cell.actor,
        message=part.ref,
        data=spec.data,
        token=f"token{world.counter}" if spec.gesture == "press" else None,  # Matrix reactions carry none
    ))


async def assert_allowed(cell: Cell, before: Seen) -> None:
    spec = COMMANDS[cell.row.command]
    replies = [p.full_text for p in new_posts(cell, before) if p.ref.chat_id == cell.chat.chat_id]
    answers = new_answers(cell, before)
    if spec.gesture == "message":
        assert replies, "allowed, yet the bot did not answer"
    else:
        assert answers and not REFUSAL.search(answers[-1]), f"allowed, yet the press was answered {answers}"
    if spec.shows is not None:
        assert any(re.search(spec.shows, text) for text in replies), f"the answer does not show it: {replies}"
    if spec.changes is not None:
        await spec.changes(cell)


async def assert_refused(cell: Cell, before: Seen) -> None:
    spec = COMMANDS[cell.row.command]
    replies = [p.full_text for p in new_posts(cell, before) if p.ref.chat_id == cell.chat.chat_id]
    if spec.gesture == "message":
        assert replies, "refused, yet the bot said nothing"
        assert REFUSAL.search(replies[-1]), f"the answer is no refusal: {replies[-1]!r}"
        if spec.shows is not None:
            assert not any(re.search(spec.shows, text) for text in replies), f"refused, yet shown: {replies}"
    else:
        answers = new_answers(cell, before)
        assert answers and REFUSAL.search(answers[-1]), f"the press got no refusal: {answers}"
    await assert_nothing_changed(cell, before)


async def assert_ignored(cell: Cell, before: Seen) -> None:
    said = [p.full_text for p in new_posts(cell, before)] + new_answers(cell, before)
    assert not said, f"ignored, yet the bot said {said}"
    await assert_nothing_changed(cell, before)


OUTCOMES = {ALLOWED: assert_allowed, REFUSED: assert_refused, IGNORED: assert_ignored}


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
async def test_who_may_do_what(world: World, row: Row, caplog: pytest.LogCaptureFixture) -> None:
    cell = await arrange(world, row)
    before = await look(cell)
    await act(cell)
    # The router logs and swallows a handler's crash: without this a crash would pass for "ignored".
    crashes = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert not crashes, f"a handler failed: {crashes}"
    await OUTCOMES[row.expected](cell, before)

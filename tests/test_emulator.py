"""The Telegram emulator itself: real HTTP on loopback, driven by raw requests and by python-telegram-bot."""

from __future__ import annotations

import asyncio
import datetime as dtm
import html
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import telegram
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, Update
from telegram.error import BadRequest, ChatMigrated, Conflict, Forbidden, NetworkError, RetryAfter
from telegram.ext import ApplicationBuilder, CallbackQueryHandler, CommandHandler, ContextTypes

from tests.emulators.telegram import EmulatorBug, Limits, ManualConsole, Spec, TelegramEmulator, error_body
from tests.emulators.telegram_html import parse_html, utf16_len

TOKEN = "123456:TEST-token"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(TOKEN) as emulator:
        yield emulator


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(TOKEN, base_url=f"{emu.api_root}/bot") as ptb_bot:
        yield ptb_bot


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    emu: TelegramEmulator,
    method: str,
    data: dict[str, Any] | aiohttp.FormData | None = None,
    *,
    json_body: Any = None,
    token: str = TOKEN,
    http_method: str = "POST",
) -> tuple[int, dict[str, Any]]:
    """One raw request the way a client library would make it; returns (HTTP status, JSON body)."""
    url = f"{emu.api_root}/bot{token}/{method}"
    async with http.request(http_method, url, data=data, json=json_body) as response:
        return response.status, await response.json()


def form(**values: Any) -> dict[str, str]:
    """PTB's encoding: strings raw, everything else JSON inside the form field."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def bad_request(description: str) -> dict[str, Any]:
    return {"ok": False, "error_code": 400, "description": f"Bad Request: {description}"}


def people(emu: TelegramEmulator) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """alice (a supporter who wrote to the bot), mo (moderator, group owner) and the moderation group."""
    alice = emu.add_user("Alice", "alice")
    mo = emu.add_user("Mo", "mo")
    mods = emu.add_group("Moderators", [(mo, "creator")], bot_status="administrator")
    emu.user_sends(alice, "/start")
    return alice, mo, mods


CARD = InlineKeyboardMarkup([[InlineKeyboardButton("✅ Approve", callback_data="approve:1"),
                              InlineKeyboardButton("❌ Reject", callback_data="reject:1")]])


# --- lifecycle -----------------------------------------------------------------------------------------------


async def test_binds_loopback_on_a_free_port(emu: TelegramEmulator) -> None:
    assert emu.api_root == f"http://127.0.0.1:{emu.port}"
    assert emu.port > 0


async def test_restart_keeps_port_and_state(emu: TelegramEmulator, bot: telegram.Bot,
                                            http: aiohttp.ClientSession) -> None:
    alice, _, mods = people(emu)
    await bot.send_message(mods["id"], "before the outage")
    port = emu.port
    await emu.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(http, emu, "getMe")
    await emu.start()
    assert emu.port == port
    assert [m["text"] for m in emu.sent_by_bot(mods["id"])] == ["before the outage"]
    updates = await bot.get_updates()
    assert updates[0].message.text == "/start" and updates[0].message.from_user.id == alice["id"]


async def test_stop_answers_pending_long_poll_at_once(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    poll = asyncio.create_task(call(http, emu, "getUpdates", form(timeout=30)))
    await emu.wait_for(lambda: emu.calls_of("getUpdates"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await emu.stop()
    assert loop.time() - started < 2
    assert await asyncio.wait_for(poll, 2) == (200, {"ok": True, "result": []})


# --- transport and validation --------------------------------------------------------------------------------


async def test_get_me_through_ptb(bot: telegram.Bot, emu: TelegramEmulator) -> None:
    me = await bot.get_me()
    assert me.id == 123456 and me.is_bot and me.username == "relay_test_bot"
    assert me.can_join_groups is True and me.can_read_all_group_messages is False
    assert emu.calls == [("getMe", {})] * 2  # Bot.initialize() calls getMe too


async def test_accepts_form_json_multipart_query_and_empty_bodies(emu: TelegramEmulator,
                                                                  http: aiohttp.ClientSession) -> None:
    alice, _, _ = people(emu)
    assert (await call(http, emu, "getMe"))[0] == 200  # empty body
    assert (await call(http, emu, "getMe", http_method="GET"))[0] == 200
    assert (await call(http, emu, "sendMessage", form(chat_id=alice["id"], text="form")))[0] == 200
    assert (await call(http, emu, "sendMessage", json_body={"chat_id": alice["id"], "text": "json"}))[0] == 200
    multipart = aiohttp.FormData()
    multipart.add_field("chat_id", str(alice["id"]))
    multipart.add_field("text", "multipart")
    multipart.add_field("reply_markup", json.dumps(CARD.to_dict()), content_type="application/json")
    assert (await call(http, emu, "sendMessage", multipart))[0] == 200
    url = f"{emu.api_root}/bot{TOKEN}/sendMessage?chat_id={alice['id']}&text=query"
    async with http.get(url) as response:
        assert response.status == 200
    texts = [m["text"] for m in emu.sent_by_bot(alice["id"])]
    assert texts == ["form", "json", "multipart", "query"]
    assert emu.sent_by_bot(alice["id"])[2]["reply_markup"] == CARD.to_dict()


async def test_method_names_are_case_insensitive(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    assert (await call(http, emu, "GETME"))[0] == 200
    assert (await call(http, emu, "getme"))[0] == 200
    assert [name for name, _ in emu.calls] == ["getMe", "getMe"]


async def test_unknown_method_is_404_not_found(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    assert await call(http, emu, "sendLetter") == (404, error_body("not-found-method"))
    async with http.get(f"{emu.api_root}/elsewhere") as response:
        assert response.status == 404


async def test_wrong_token_is_401(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    assert await call(http, emu, "getMe", token="123456:wrong") == (401, error_body("unauthorized"))
    assert emu.calls == [("getMe", {})]  # refused requests are logged too
    with pytest.raises(telegram.error.InvalidToken):
        async with telegram.Bot("123456:wrong", base_url=f"{emu.api_root}/bot") as wrong:
            await wrong.get_me()


async def test_any_token_is_accepted_without_a_configured_one(http: aiohttp.ClientSession) -> None:
    async with TelegramEmulator() as open_emu:
        assert (await call(http, open_emu, "getMe", token="42:whatever"))[0] == 200


async def test_missing_required_field(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    alice, _, _ = people(emu)
    assert await call(http, emu, "sendMessage", form(text="hi")) == (400, bad_request("chat_id is empty"))
    assert await call(http, emu, "sendMessage", form(chat_id="")) == (400, bad_request("chat_id is empty"))
    # Telegram names a missing message text its own way.
    assert await call(http, emu, "sendMessage", form(chat_id=alice["id"])) == (
        400, error_body("bad-request-message-text-is-empty"))
    assert await call(http, emu, "deleteMessage", form(chat_id=alice["id"])) == (
        400, bad_request("message_id is empty"))


async def test_values_are_coerced_per_spec_type(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    alice, _, mods = people(emu)
    # chat_id is "Integer or String": a name is a valid value (then the chat is unknown), a number too.
    assert await call(http, emu, "sendMessage", form(chat_id="abc", text="x")) == (
        400, error_body("bad-request-chat-not-found"))
    assert (await call(http, emu, "sendMessage", form(chat_id=str(alice["id"]), text="x")))[0] == 200
    assert emu.calls[-1] == ("sendMessage", {"chat_id": alice["id"], "text": "x"})
    assert await call(http, emu, "deleteMessage", form(chat_id=alice["id"], message_id="abc")) == (
        400, bad_request('field "message_id" must be of type Integer'))
    assert await call(http, emu, "sendMessage", form(chat_id=alice["id"], text="x", disable_notification="yes")) == (
        400, bad_request('field "disable_notification" must be of type Boolean'))
    assert (await call(http, emu, "sendMessage", form(chat_id=mods["id"], text="x", disable_notification=True)))[0] \
        == 200


@pytest.mark.parametrize("markup", ["not json", "[1, 2]", '"text"', "{"])
async def test_reply_markup_must_be_a_json_object(emu: TelegramEmulator, http: aiohttp.ClientSession,
                                                  markup: str) -> None:
    alice, _, _ = people(emu)
    assert await call(http, emu, "sendMessage", form(chat_id=alice["id"], text="x", reply_markup=markup)) == (
        400, bad_request("can't parse reply keyboard markup JSON object"))


async def test_nested_objects_are_validated(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    alice, _, _ = people(emu)
    typo = {"inline_keyboard": [[{"text": "✅", "callback_dat": "a"}]]}
    status, body = await call(http, emu, "sendMessage", form(chat_id=alice["id"], text="x", reply_markup=typo))
    assert status == 400
    assert body["description"] == (
        'Bad Request: can\'t parse reply_markup: unknown field "inline_keyboard[0][0].callback_dat" in '
        "InlineKeyboardButton")
    wrong_type = {"inline_keyboard": [[{"text": 5, "callback_data": "a"}]]}
    status, body = await call(http, emu, "sendMessage", form(chat_id=alice["id"], text="x", reply_markup=wrong_type))
    assert body["description"].endswith("inline_keyboard[0][0].text must be of type String")
    status, body = await call(http, emu, "sendMessage",
                              form(chat_id=alice["id"], text="x", entities=[{"type": "bold", "offset": 0}]))
    assert body["description"] == (
        'Bad Request: can\'t parse entities: field "[0].length" of MessageEntity is missing')


async def test_unknown_parameter_is_rejected(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    alice, _, _ = people(emu)
    assert await call(http, emu, "sendMessage", form(chat_id=alice["id"], text="x", disable_web_page_preview=True)
                      ) == (400, bad_request('unknown parameter "disable_web_page_preview"'))


@pytest.mark.parametrize(("data", "ok"), [("a" * 64, True), ("é" * 32, True), ("a" * 65, False), ("é" * 33, False)])
async def test_callback_data_is_1_to_64_bytes(emu: TelegramEmulator, bot: telegram.Bot, data: str, ok: bool) -> None:
    _, _, mods = people(emu)
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("✅ Approve", callback_data=data)]])
    if ok:
        await bot.send_message(mods["id"], "card", reply_markup=markup)
        return
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await bot.send_message(mods["id"], "card", reply_markup=markup)
    assert emu.errors[-1] == ("sendMessage", 400, error_body("bad-request-button-data-invalid")["description"])


async def test_buttons_need_an_action(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    alice, _, _ = people(emu)
    markup = {"inline_keyboard": [[{"text": "nothing"}]]}
    status, body = await call(http, emu, "sendMessage", form(chat_id=alice["id"], text="x", reply_markup=markup))
    assert (status, body["description"]) == (
        400, "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")


async def test_spec_methods_not_emulated_say_so(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    alice, _, _ = people(emu)
    assert await call(http, emu, "sendDice", form(chat_id=alice["id"])) == (
        400, bad_request("method not implemented by the emulator"))


# --- who the bot may write to --------------------------------------------------------------------------------


async def test_access_errors_are_telegrams(emu: TelegramEmulator, bot: telegram.Bot,
                                           http: aiohttp.ClientSession) -> None:
    alice, mo, mods = people(emu)
    stranger = emu.add_user("Stranger")
    kicked = emu.add_group("Old group", [(mo, "creator")], supergroup=False, bot_status="kicked")
    left = emu.add_group("Left supergroup", [(mo, "creator")], bot_status="left")
    gone = emu.add_channel("Gone channel", bot_status="left")
    reader = emu.add_channel("Bot only reads", bot_status="member")
    cases = {
        -1: "bad-request-chat-not-found",
        stranger["id"]: "forbidden-cant-initiate-conversation",
        kicked["id"]: "forbidden-bot-was-kicked",
        left["id"]: "forbidden-bot-not-member-supergroup",
        gone["id"]: "forbidden-bot-not-member-channel",
    }
    for chat_id, name in cases.items():
        body = error_body(name)
        assert await call(http, emu, "sendMessage", form(chat_id=chat_id, text="x")) == (body["error_code"], body)
    assert await call(http, emu, "sendMessage", form(chat_id=reader["id"], text="x")) == (
        400, bad_request("need administrator rights in the channel chat"))
    emu.block_bot(alice)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(alice["id"], "hello?")
    assert emu.errors[-1] == ("sendMessage", 403, error_body("forbidden-bot-blocked-by-user")["description"])
    emu.user_sends(alice, "/start")  # writing to the bot again unblocks it
    await bot.send_message(alice["id"], "welcome back")
    await bot.send_message(mods["id"], "still here")


async def test_removed_from_group_later(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    _, _, mods = people(emu)
    emu.set_member(mods["id"], emu.bot["id"], "kicked")
    with pytest.raises(Forbidden, match="bot was kicked from the supergroup chat"):
        await bot.send_message(mods["id"], "x")
    updates = await bot.get_updates()
    change = updates[-1].my_chat_member
    assert change.chat.id == mods["id"] and change.new_chat_member.status == "kicked"


async def test_migrated_group(emu: TelegramEmulator, bot: telegram.Bot, http: aiohttp.ClientSession) -> None:
    mo = emu.add_user("Mo")
    group = emu.add_group("Small group", [(mo, "creator")], supergroup=False)
    new_id = emu.migrate_group(group["id"])
    expected = error_body("bad-request-group-chat-migrated")
    expected["parameters"]["migrate_to_chat_id"] = new_id
    assert await call(http, emu, "sendMessage", form(chat_id=group["id"], text="x")) == (400, expected)
    with pytest.raises(ChatMigrated) as caught:
        await bot.send_message(group["id"], "x")
    assert caught.value.new_chat_id == new_id
    await bot.send_message(new_id, "in the supergroup")
    assert emu.chat(new_id)["type"] == "supergroup"
    service = [u.message for u in await bot.get_updates()]
    assert (service[0].migrate_to_chat_id, service[1].migrate_from_chat_id) == (new_id, group["id"])


async def test_channel_by_username(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    channel = emu.add_channel("Solidarity News", username="solidarity_news")
    sent = await bot.send_message("@solidarity_news", "letter")
    assert sent.chat.id == channel["id"] and sent.sender_chat.id == channel["id"] and sent.from_user is None
    assert emu.sent_by_bot(channel["id"])[0]["text"] == "letter"


# --- text -----------------------------------------------------------------------------------------------------


async def test_user_text_arrives_literally_through_html(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    _, _, mods = people(emu)
    letter = "Tom & Jerry <script>alert(1)</script> &amp; <b>not bold</b> 💪 @everyone"
    sent = await bot.send_message(mods["id"], f"<b>Letter #1</b>\n{html.escape(letter)}", parse_mode="HTML")
    stored = emu.sent_by_bot(mods["id"])[0]
    assert stored["text"] == f"Letter #1\n{letter}" == sent.text
    bold = [e for e in stored["entities"] if e["type"] == "bold"]
    assert bold == [{"type": "bold", "offset": 0, "length": 9}]
    assert {e["type"] for e in stored["entities"]} == {"bold", "mention"}  # Telegram marks @everyone itself


async def test_entity_offsets_are_utf16(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    _, _, mods = people(emu)
    await bot.send_message(mods["id"], "💪💪 <i>solidarity</i>", parse_mode="HTML")
    stored = emu.sent_by_bot(mods["id"])[0]
    assert stored["entities"] == [{"type": "italic", "offset": 5, "length": 10}]


async def test_explicit_entities_instead_of_parse_mode(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    _, _, mods = people(emu)
    await bot.send_message(mods["id"], "<b>literal</b>", entities=[MessageEntity("italic", 0, 3)])
    stored = emu.sent_by_bot(mods["id"])[0]
    assert stored["text"] == "<b>literal</b>"
    assert stored["entities"] == [{"type": "italic", "offset": 0, "length": 3}]


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ("<x>hi</x>", 'Unsupported start tag "x" at byte offset 0'),
        ("<b>open", 'Can\'t find end tag corresponding to start tag "b"'),
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
        ("1<2", "Unclosed start tag at byte offset 1"),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("é<x>", 'Unsupported start tag "x" at byte offset 2'),  # offsets count UTF-8 bytes
        ("Tom & Jerry", 'Character "&" at byte offset 4 does not start an HTML entity'),
        ("<span>s</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ],
)
async def test_bad_html_is_rejected(emu: TelegramEmulator, http: aiohttp.ClientSession, text: str,
                                    description: str) -> None:
    alice, _, _ = people(emu)
    status, body = await call(http, emu, "sendMessage", form(chat_id=alice["id"], text=text, parse_mode="HTML"))
    assert status == 400
    assert body["description"].startswith(f"Bad Request: can't parse entities: {description}")
    if text == "<x>hi</x>":
        assert body == error_body("bad-request-cant-parse-entities")


def test_supported_html() -> None:
    text, entities = parse_html(
        '<b>b</b><strong>s</strong><i>i</i><em>e</em><u>u</u><ins>n</ins><s>s</s><strike>k</strike><del>d</del>'
        '<span class="tg-spoiler">p</span><tg-spoiler>q</tg-spoiler><a href="https://example.org">a</a>'
        '<code>c</code><pre><code class="language-python">x</code></pre><blockquote>q</blockquote>'
        '<blockquote expandable>e</blockquote><tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>'
        '<tg-time unix="1647531900" format="wDT">t</tg-time> &lt;&gt;&amp;&quot;&#65;&#x42;'
    )
    assert text == 'bsieunskdpqacxqe👍t <>&"AB'
    types = [e["type"] for e in entities]
    assert types == ["bold", "bold", "italic", "italic", "underline", "underline", "strikethrough", "strikethrough",
                     "strikethrough", "spoiler", "spoiler", "text_link", "code", "pre", "blockquote",
                     "expandable_blockquote", "custom_emoji", "date_time"]
    assert entities[13]["language"] == "python" and entities[11]["url"] == "https://example.org"


@pytest.mark.parametrize(
    ("text", "parse_mode", "ok"),
    [
        ("a" * 4096, None, True),
        ("a" * 4097, None, False),
        ("💪" * 2048, None, True),  # 4096 UTF-16 code units
        ("💪" * 2048 + "a", None, False),
        ("é" * 4096, None, True),  # 8192 UTF-8 bytes, 4096 characters
        ("<b>" + "a" * 4096 + "</b>", "HTML", True),  # the limit applies after entity parsing
        ("&lt;" * 4096, "HTML", True),
        ("&lt;" * 4097, "HTML", False),
        ("  " + "a" * 4096 + "\n\n", None, True),  # surrounding whitespace is trimmed first
    ],
)
async def test_message_length_limit(emu: TelegramEmulator, http: aiohttp.ClientSession, text: str,
                                    parse_mode: str | None, ok: bool) -> None:
    alice, _, _ = people(emu)
    values: dict[str, Any] = {"chat_id": alice["id"], "text": text}
    if parse_mode:
        values["parse_mode"] = parse_mode
    status, body = await call(http, emu, "sendMessage", form(**values))
    if ok:
        assert status == 200 and utf16_len(body["result"]["text"]) == 4096
    else:
        assert (status, body) == (400, error_body("bad-request-message-is-too-long"))


@pytest.mark.parametrize(("text", "parse_mode"), [("", None), ("   \n ", None), ("<b></b>", "HTML"), ("\r", None)])
async def test_empty_text(emu: TelegramEmulator, http: aiohttp.ClientSession, text: str,
                          parse_mode: str | None) -> None:
    alice, _, _ = people(emu)
    values: dict[str, Any] = {"chat_id": alice["id"], "text": text}
    if parse_mode:
        values["parse_mode"] = parse_mode
    assert await call(http, emu, "sendMessage", form(**values)) == (
        400, error_body("bad-request-message-text-is-empty"))


async def test_commands_get_entities_like_a_telegram_client_sends(emu: TelegramEmulator) -> None:
    alice = emu.add_user("Alice")
    message = emu.user_sends(alice, "  /withdraw 12  ")
    assert message["text"] == "/withdraw 12"
    assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 9}]


# --- editing and deleting -------------------------------------------------------------------------------------


async def test_edits_change_the_stored_message(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    _, _, mods = people(emu)
    card = await bot.send_message(mods["id"], "Letter #1", reply_markup=CARD)
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text("Letter #1", mods["id"], card.message_id, reply_markup=CARD)
    edited = await bot.edit_message_text("<b>#1 approved</b>", mods["id"], card.message_id, parse_mode="HTML",
                                         reply_markup=CARD)
    assert edited.edit_date is not None
    stored = emu.messages(mods["id"])[-1]
    assert stored["text"] == "#1 approved" and stored["reply_markup"] == CARD.to_dict()
    await bot.edit_message_reply_markup(mods["id"], card.message_id)  # no markup: buttons removed
    assert "reply_markup" not in emu.messages(mods["id"])[-1]
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_reply_markup(mods["id"], card.message_id)


async def test_editing_text_without_markup_removes_the_buttons(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    _, _, mods = people(emu)
    card = await bot.send_message(mods["id"], "Letter #1", reply_markup=CARD)
    await bot.edit_message_text("#1 approved", mods["id"], card.message_id)
    assert "reply_markup" not in emu.sent_by_bot(mods["id"])[0]


async def test_edit_errors(emu: TelegramEmulator, bot: telegram.Bot, http: aiohttp.ClientSession) -> None:
    _, mo, mods = people(emu)
    by_mo = emu.user_sends(mo, "/pending", mods)
    assert await call(http, emu, "editMessageText", form(chat_id=mods["id"], message_id=99, text="x")) == (
        400, error_body("bad-request-message-to-edit-not-found"))
    assert await call(http, emu, "editMessageText",
                      form(chat_id=mods["id"], message_id=by_mo["message_id"], text="x")) == (
        400, error_body("bad-request-message-cant-be-edited"))
    assert await call(http, emu, "editMessageText", form(chat_id=mods["id"], message_id=by_mo["message_id"])) == (
        400, error_body("bad-request-message-text-is-empty"))


async def test_delete_message(emu: TelegramEmulator, bot: telegram.Bot, http: aiohttp.ClientSession) -> None:
    _, _, mods = people(emu)
    sent = await bot.send_message(mods["id"], "oops")
    assert await bot.delete_message(mods["id"], sent.message_id) is True
    assert emu.messages(mods["id"]) == []
    assert await call(http, emu, "deleteMessage", form(chat_id=mods["id"], message_id=sent.message_id)) == (
        400, error_body("bad-request-message-to-delete-not-found"))
    again = await bot.send_message(mods["id"], "next")
    assert again.message_id == sent.message_id + 1  # ids are never reused


# --- updates --------------------------------------------------------------------------------------------------


async def test_get_updates_offset_and_limit(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice = emu.add_user("Alice")
    for n in range(5):
        emu.user_sends(alice, f"letter {n}")
    first = await bot.get_updates(limit=2)
    assert [u.message.text for u in first] == ["letter 0", "letter 1"]
    assert first[1].update_id == first[0].update_id + 1
    again = await bot.get_updates(limit=2)  # nothing confirmed yet: the same ones
    assert [u.update_id for u in again] == [u.update_id for u in first]
    rest = await bot.get_updates(offset=first[-1].update_id + 1)  # confirms the first two forever
    assert [u.message.text for u in rest] == ["letter 2", "letter 3", "letter 4"]
    assert [u.message.text for u in await bot.get_updates(offset=-1)] == ["letter 4"]
    assert [u.message.text for u in await bot.get_updates()] == ["letter 4"]
    assert await bot.get_updates(offset=rest[-1].update_id + 1) == ()
    assert emu.pending_updates == []


async def test_long_poll_returns_when_an_update_arrives(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice = emu.add_user("Alice")
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(bot.get_updates(timeout=10, read_timeout=15))
    await emu.wait_for(lambda: emu.calls_of("getUpdates"))
    emu.user_sends(alice, "hello")
    updates = await poll
    assert [u.message.text for u in updates] == ["hello"]
    assert loop.time() - started < 2


async def test_long_poll_times_out_empty(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await bot.get_updates(timeout=1) == ()
    assert 0.9 <= loop.time() - started < 3


async def test_second_long_poll_terminates_the_first(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    first = asyncio.create_task(call(http, emu, "getUpdates", form(timeout=10)))
    await emu.wait_for(lambda: emu.calls_of("getUpdates"))
    second = await call(http, emu, "getUpdates", form(timeout=0))
    assert second == (200, {"ok": True, "result": []})
    assert await asyncio.wait_for(first, 2) == (409, error_body("conflicted-terminated-by-other-long-poll"))


async def test_conflict_reaches_ptb(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=10, read_timeout=15))
    await emu.wait_for(lambda: emu.calls_of("getUpdates"))
    # A second process polling with the same token (PTB itself never overlaps its own polls).
    async with telegram.Bot(TOKEN, base_url=f"{emu.api_root}/bot") as second:
        assert await second.get_updates() == ()
    with pytest.raises(Conflict, match="terminated by other long poll"):
        await first


async def test_allowed_updates(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, mo, mods = people(emu)
    card = await bot.send_message(mods["id"], "card", reply_markup=CARD)
    await bot.get_updates(allowed_updates=["callback_query"], offset=-1)
    emu.user_sends(alice, "not wanted")  # created while only callback queries are allowed: dropped
    emu.press_button(mo, mods["id"], card.message_id, "approve:1")
    kinds = [u.to_dict().keys() - {"update_id"} for u in await bot.get_updates(offset=-1)]
    assert kinds == [{"callback_query"}]
    await bot.get_updates(allowed_updates=[])  # back to the default set
    emu.user_sends(alice, "wanted")
    assert (await bot.get_updates(offset=-1))[0].message.text == "wanted"


async def test_button_press_and_answer(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    _, mo, mods = people(emu)
    card = await bot.send_message(mods["id"], "Letter #1", reply_markup=CARD)
    query_id = emu.press_button(mo, mods["id"], card.message_id, "reject:1")
    query = (await bot.get_updates(offset=-1))[0].callback_query
    assert (query.id, query.data, query.from_user.id) == (query_id, "reject:1", mo["id"])
    assert query.message.message_id == card.message_id
    assert await query.answer("Rejected") is True
    assert emu.callback_answers == [{"callback_query_id": query_id, "text": "Rejected"}]
    with pytest.raises(BadRequest, match="Query is too old"):
        await query.answer()
    with pytest.raises(LookupError, match="no button 'approve:2'"):
        emu.press_button(mo, mods["id"], card.message_id, "approve:2")


async def test_privacy_mode_in_groups(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    mo, kim = emu.add_user("Mo"), emu.add_user("Kim")
    group = emu.add_group("Readers", [(mo, "creator"), (kim, "member")])  # the bot is a plain member
    emu.user_sends(kim, "just chatting", group)
    emu.user_sends(kim, "/subscribe en", group)
    emu.user_sends(kim, "/subscribe@other_bot en", group)
    emu.user_sends(kim, "hey @relay_test_bot", group)
    card = await bot.send_message(group["id"], "card")
    emu.user_replies(mo, group, card.message_id, "a reply to the bot")
    seen = [u.message.text for u in await bot.get_updates()]
    assert seen == ["/subscribe en", "hey @relay_test_bot", "a reply to the bot"]
    assert len(emu.messages(group["id"])) == 6  # everything is in the chat all the same
    with pytest.raises(ValueError, match="not a member"):
        emu.user_sends(emu.add_user("Outsider"), "hi", group)


async def test_updates_parse_in_ptb(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, mo, mods = people(emu)
    channel = emu.add_channel("News", username="news")
    card = await bot.send_message(mods["id"], "card", reply_markup=CARD)
    emu.user_replies(mo, mods, card.message_id, "ok")
    emu.press_button(mo, mods["id"], card.message_id, "approve:1")
    emu.channel_posts(channel, "#solidarity from the channel")
    emu.block_bot(alice)
    updates = [Update.de_json(u, bot) for u in emu.pending_updates]  # warnings are errors in this suite
    assert [u.effective_chat.id for u in updates] == [alice["id"], mods["id"], mods["id"], channel["id"],
                                                      alice["id"]]
    assert updates[2].effective_message.message_id == card.message_id
    assert updates[3].channel_post.sender_chat.id == channel["id"]
    assert updates[4].my_chat_member.new_chat_member.status == "kicked"
    assert updates[1].message.reply_to_message.message_id == card.message_id


# --- chats and members ----------------------------------------------------------------------------------------


async def test_chat_and_member_lookups(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, mo, mods = people(emu)
    kim = emu.add_user("Kim", "kim", "de")
    emu.set_member(mods["id"], kim["id"], "administrator")
    chat = await bot.get_chat(mods["id"])
    assert (chat.id, chat.type, chat.title) == (mods["id"], "supergroup", "Moderators")
    private = await bot.get_chat(alice["id"])
    assert (private.type, private.first_name, private.username) == ("private", "Alice", "alice")
    assert (await bot.get_chat_member(mods["id"], mo["id"])).status == "creator"
    assert (await bot.get_chat_member(mods["id"], kim["id"])).status == "administrator"
    assert (await bot.get_chat_member(mods["id"], alice["id"])).status == "left"
    assert (await bot.get_chat_member(mods["id"], emu.bot["id"])).status == "administrator"
    admins = await bot.get_chat_administrators(mods["id"])
    assert {a.user.id for a in admins} == {mo["id"], kim["id"], emu.bot["id"]}
    assert await bot.get_chat_member_count(mods["id"]) == 3
    emu.set_member(mods["id"], kim["id"], "left")
    assert (await bot.get_chat_member(mods["id"], kim["id"])).status == "left"
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.get_chat(-42)


async def test_bot_setup_calls(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    assert await bot.set_my_commands([("start", "What I do"), ("help", "Everything I can do")]) is True
    assert [c.command for c in await bot.get_my_commands()] == ["start", "help"]
    assert await bot.delete_webhook() is True
    assert (await bot.get_webhook_info()).url == ""
    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await bot.set_my_commands([("Start", "capitals are not allowed")])


async def test_webhook_blocks_polling_until_deleted(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice = emu.add_user("Alice")
    emu.user_sends(alice, "hello")
    assert await bot.set_webhook("https://example.org/hook") is True
    with pytest.raises(Conflict, match="webhook is active"):
        await bot.get_updates()
    assert (await bot.get_webhook_info()).pending_update_count == 1
    assert await bot.delete_webhook(drop_pending_updates=True) is True
    assert await bot.get_updates() == ()


# --- failures and limits --------------------------------------------------------------------------------------


async def test_fail_next_429(emu: TelegramEmulator, bot: telegram.Bot, http: aiohttp.ClientSession) -> None:
    alice, _, _ = people(emu)
    emu.fail_next("sendMessage", times=2, retry_after=7)
    expected = error_body("too-many-requests")
    expected.update(description="Too Many Requests: retry after 7", parameters={"retry_after": 7})
    assert await call(http, emu, "sendMessage", form(chat_id=alice["id"], text="x")) == (429, expected)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(alice["id"], "x")
    assert caught.value.retry_after == dtm.timedelta(seconds=7)
    await bot.send_message(alice["id"], "x")
    assert emu.count_429 == 2
    assert [m["text"] for m in emu.sent_by_bot(alice["id"])] == ["x"]


async def test_fail_next_5xx_and_named_errors(emu: TelegramEmulator, bot: telegram.Bot,
                                              http: aiohttp.ClientSession) -> None:
    alice, _, _ = people(emu)
    emu.fail_next("sendmessage", status=502)
    assert await call(http, emu, "sendMessage", form(chat_id=alice["id"], text="x")) == (
        502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})
    emu.fail_next("sendMessage", status=502)
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(alice["id"], "x")
    emu.fail_next("sendMessage", error="forbidden-user-is-deactivated")
    with pytest.raises(Forbidden, match="user is deactivated"):
        await bot.send_message(alice["id"], "x")
    with pytest.raises(ValueError, match="unknown Bot API method"):
        emu.fail_next("sendLetter")


async def test_built_in_limits(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    now = [1000.0]
    emu.clock = lambda: now[0]
    emu.limits = Limits(global_per_second=3, per_chat_per_second=1, per_group_per_minute=2)
    users = [emu.add_user(f"U{n}") for n in range(4)]
    for user in users:
        emu.user_sends(user, "/start")
    group = emu.add_group("Group", [(users[0], "creator")])
    await bot.send_message(users[0]["id"], "1")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(users[0]["id"], "2")  # one a second into one chat
    assert caught.value.retry_after == dtm.timedelta(seconds=1)
    await bot.send_message(users[1]["id"], "1")
    await bot.send_message(users[2]["id"], "1")
    with pytest.raises(RetryAfter):
        await bot.send_message(users[3]["id"], "1")  # three a second in all
    now[0] += 1
    await bot.send_message(group["id"], "1")
    now[0] += 1
    await bot.send_message(group["id"], "2")
    now[0] += 1
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(group["id"], "3")  # two a minute into one group
    assert caught.value.retry_after == dtm.timedelta(seconds=58)
    assert emu.count_429 == 3
    await bot.get_me()  # only sending counts
    now[0] += 60
    await bot.send_message(group["id"], "3")
    now[0] += 60
    for user in users[:3]:
        await bot.send_message(user["id"], "paid", allow_paid_broadcast=True)
    await bot.send_message(users[3]["id"], "paid", allow_paid_broadcast=True)  # 1000 a second when paying


# --- helpers for tests -----------------------------------------------------------------------------------------


async def test_wait_for_explains_a_timeout(emu: TelegramEmulator, bot: telegram.Bot) -> None:
    alice, _, _ = people(emu)
    await bot.send_message(alice["id"], "receipt")
    assert await emu.wait_for(lambda: emu.sent_by_bot(alice["id"])) == emu.sent_by_bot(alice["id"])
    with pytest.raises(AssertionError) as caught:
        await emu.wait_for(lambda: len(emu.sent_by_bot(alice["id"])) == 2, timeout=0.1)
    report = str(caught.value)
    assert "timed out after 0.1s" in report and "sendMessage" in report and "receipt" in report


def test_spec_checks_structures() -> None:
    spec = Spec()
    assert spec.method("SENDMESSAGE") == "sendMessage"
    assert spec.check({"id": 1, "is_bot": False, "first_name": "A"}, ["User"], "") is None
    assert spec.check({"id": 1, "is_bot": False}, ["User"], "") == 'field "first_name" of User is missing'
    assert spec.check({"status": "left", "user": {"id": 1, "is_bot": False, "first_name": "A"}},
                      ["ChatMember"], "") is None
    assert spec.check([[1]], ["Array of Array of Integer"], "") is None


async def test_self_check_catches_invalid_answers(emu: TelegramEmulator, http: aiohttp.ClientSession) -> None:
    emu.bot.pop("first_name")  # simulate an emulator bug: getMe would answer a User without first_name
    status, body = await call(http, emu, "getMe")
    assert status == 500 and "first_name" in body["description"]
    assert issubclass(EmulatorBug, Exception)


# --- manual mode ----------------------------------------------------------------------------------------------


async def test_manual_console_commands(bot: telegram.Bot, emu: TelegramEmulator,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    console = ManualConsole(emu)
    console.populate()
    mods = console.chats["mods"]["id"]
    assert console.execute("as alice: hello bot") == "sent as message 1"
    assert console.execute("as mo in mods: /approve 3") == "sent as message 1"
    card = await bot.send_message(mods, "Letter #3", reply_markup=CARD)
    assert "[new in mods] #2 Solidarity Relay: Letter #3" in capsys.readouterr().out
    assert console.execute(f"press mo {card.message_id} approve") == "pressed 'approve:1'"
    assert console.execute(f"press mo {card.message_id} ❌ Reject") == "pressed 'reject:1'"
    shown = console.execute("show mods")
    assert "#1 Mo: /approve 3" in shown and "[✅ Approve → approve:1]" in shown
    assert console.execute("show alice") == "#1 Alice: hello bot"
    assert "press NAME" in console.execute("help")
    assert console.execute("as nobody: hi").startswith("error: unknown person")
    assert console.execute("quit") is None
    assert [u["callback_query"]["data"] for u in emu.pending_updates if "callback_query" in u] == [
        "approve:1", "reject:1"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_manual_mode_runs_as_a_module() -> None:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.emulators.telegram", "--port", str(port), "--token", TOKEN,
        cwd=REPO_ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(b"as alice: hello\nshow alice\nquit\n"), 30)
    text = out.decode()
    assert process.returncode == 0, text
    assert f"TELEGRAM_API_URL=http://127.0.0.1:{port}" in text
    assert f"TELEGRAM_TOKEN={TOKEN}" in text and "TELEGRAM_MODERATION_CHAT=-100" in text
    assert "#1 Alice: hello" in text


# --- a whole PTB application ----------------------------------------------------------------------------------


async def test_ptb_application_polls_answers_and_stops(emu: TelegramEmulator) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await context.bot.send_message(update.effective_chat.id, "<b>Hello!</b> Write your letter.",
                                       parse_mode="HTML", reply_markup=CARD)

    async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None
        await update.callback_query.answer("Noted")
        await update.callback_query.edit_message_text(f"pressed {update.callback_query.data}")

    app = ApplicationBuilder().token(TOKEN).base_url(f"{emu.api_root}/bot").build()
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CallbackQueryHandler(pressed))
    alice = emu.add_user("Alice", "alice")
    emu.user_sends(alice, "/start")
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=5)
        [greeting] = await emu.wait_for(lambda: emu.sent_by_bot(alice["id"]))
        assert greeting["text"] == "Hello! Write your letter."
        emu.press_button(alice, alice["id"], greeting["message_id"], "approve:1")
        await emu.wait_for(lambda: emu.sent_by_bot(alice["id"])[0]["text"] == "pressed approve:1")
        await app.updater.stop()
        await app.stop()
    assert [a["text"] for a in emu.callback_answers] == ["Noted"]
    assert emu.pending_updates == []  # PTB confirmed everything with its last getUpdates
    assert [name for name, _ in emu.calls[:3]] == ["getMe", "deleteWebhook", "getUpdates"]

"""Abuse and bad input, handler by handler: letters that look like commands, limits answered once an hour,
a client-split letter stopped at 60,000 characters, the sender's own edits and deletions, text that cannot
deceive, and rooms the bot leaves."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from handlers import rooms
from handlers.events import INVITED, ChatKind, ChatRef, MembershipChanged, MessageDeleted, MessageEdited
from handlers.text import clean_text
from tests.conftest import MODS, World
from tests.test_handlers import card, press, submit, texts_in


async def edit(world: World, message_id: str, text: str, user_id: str = "1") -> None:
    user = world.user(user_id)
    world.counter += 1
    event = MessageEdited(f"e{world.counter}", world.private(user), user, message_id, text, world.clock.now(),
                          len(text))
    await world.dispatch(event)


# --- letters that look like commands --------------------------------------------------------------------------


async def test_text_that_begins_like_a_command_is_a_letter(world: World) -> None:
    for text in ("/ we are with you", "/Basta ya, free them all", "/2024 was the year we marched"):
        await submit(world, text)
    letters = [await world.ctx.repos.letters.get(number) for number in (1, 2, 3)]
    assert [letter.text for letter in letters if letter] == [
        "/ we are with you", "/Basta ya, free them all", "/2024 was the year we marched"]
    assert all("is with the moderators" in text for text in texts_in(world, "1"))


async def test_a_lone_unknown_word_gets_the_help_and_is_no_letter(world: World) -> None:
    await submit(world, "/basta")
    (answer,) = texts_in(world, "1")
    assert "/withdraw N" in answer and "/forget" in answer
    assert await world.ctx.repos.letters.get(1) is None


async def test_commands_for_another_bot_are_ignored_and_ours_work(world: World) -> None:
    await submit(world, "/start@OtherBot")
    assert texts_in(world, "1") == []
    await submit(world, "/help@relaybot")  # Telegram names are case-insensitive
    assert "/withdraw N" in texts_in(world, "1")[0]
    await submit(world, "/approve@OtherBot 1", user_id="900")
    assert texts_in(world, "900") == []


async def test_odd_letter_numbers_get_a_clear_answer(world: World) -> None:
    await submit(world, "A letter")
    for command in ("/withdraw ²", "/withdraw ١", "/withdraw 99999999999999999999", "/withdraw 1 2", "/withdraw x"):
        await submit(world, command)
    answers = texts_in(world, "1")[1:]
    assert len(answers) == 5 and all("Which letter?" in answer for answer in answers)
    assert (await world.ctx.repos.letters.get(1)).status == "pending"


# --- limits -------------------------------------------------------------------------------------------------------


async def test_ten_waiting_letters_then_one_refusal_an_hour(world: World) -> None:
    for number in range(13):
        await submit(world, f"letter {number}")
    answers = texts_in(world, "1")
    assert sum("is with the moderators" in text for text in answers) == 10
    assert [text for text in answers if "waiting" in text] == [
        "You have 10 letters waiting for the moderators. Please wait for their decision before sending more."]
    world.clock.advance(3601)
    await submit(world, "one more")
    assert sum("10 letters waiting" in text for text in texts_in(world, "1")) == 2
    assert await world.ctx.repos.letters.get(11) is None


async def test_letters_per_day(world: World) -> None:
    world.ctx.policy = replace(world.ctx.policy, letters_per_day=3)
    for number in range(5):
        await submit(world, f"letter {number}")
        if await world.ctx.repos.letters.get(number + 1):
            await press(world, number + 1, "approve")  # nothing waits: only the daily limit applies
    answers = texts_in(world, "1")
    assert sum("is with the moderators" in text for text in answers) == 3
    assert sum("3 letters in the last 24 hours" in text for text in answers) == 1
    world.clock.advance(86401)
    await submit(world, "a new day")
    assert "is with the moderators" in texts_in(world, "1")[-1]


async def test_refusals_of_a_banned_sender_are_answered_once_an_hour(world: World) -> None:
    await submit(world, "first")
    await submit(world, "/ban 1", user_id="900")  # in Mo's private chat: refused
    await world.dispatch(world.message(world.mods, world.moderator, "/ban 1"))
    for _ in range(50):
        await submit(world, "again")
    assert sum("no longer accept" in text for text in texts_in(world, "1")) == 1


async def test_a_client_split_letter_stops_at_the_limit(world: World) -> None:
    user = world.user("1")
    chat = world.private(user)
    for _ in range(20):  # 20 × 4,096: the client cut 81,920 characters into parts
        await world.dispatch(world.message(chat, user, "x" * 4096))
        world.clock.advance(0.1)
    world.clock.advance(6)
    await world.run_due()
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.parts == 14 and letter.length == 14 * 4096
    assert await world.ctx.repos.letters.get(2) is None  # what followed was refused, not made a new letter
    answers = texts_in(world, "1")
    assert sum("the rest of your text was not added" in text for text in answers) == 1
    assert sum("#1 is with the moderators" in text for text in answers) == 1


async def test_one_message_over_the_limit_is_refused_before_it_is_stored(world: World) -> None:
    user = world.user("1")
    await world.dispatch(world.message(world.private(user), user, "y" * 60_001, limit=0))
    assert "at most 60,000" in texts_in(world, "1")[0]
    assert await world.ctx.repos.letters.get(1) is None


# --- the sender's edits and deletions ------------------------------------------------------------------------


async def test_an_edit_of_a_pending_letter_changes_it_and_its_card(world: World) -> None:
    await submit(world, "Free them all, signed Ana from Calle 5")
    message_id = str(world.counter)
    await edit(world, message_id, "Free them all, signed A.")
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.text == "Free them all, signed A."
    posted = card(world, 1)
    assert posted.current.text == "Free them all, signed A."
    assert "edited by the sender" in (posted.current.footer or "")
    assert all("Calle 5" not in text for text in texts_in(world, MODS))
    assert "now has your new text" in texts_in(world, "1")[-1]
    history = await world.ctx.repos.letters.history(1)
    assert [entry.action for entry in history] == ["sender_edit"]


async def test_an_edit_after_the_decision_is_not_applied(world: World) -> None:
    await submit(world, "Original words")
    message_id = str(world.counter)
    await press(world, 1, "approve")
    await edit(world, message_id, "Other words")
    assert (await world.ctx.repos.letters.get(1)).text == "Original words"
    assert texts_in(world, "1")[-1] == "Letter #1 was already approved; your edit was not applied."


async def test_someone_else_cannot_edit_a_letter(world: World) -> None:
    await submit(world, "Mine")
    await edit(world, str(world.counter), "Hijacked", user_id="2")
    assert (await world.ctx.repos.letters.get(1)).text == "Mine"


async def test_deleting_a_pending_letter_withdraws_it(world: World) -> None:
    await submit(world, "Please take this back")
    user = world.user("1")
    await world.dispatch(MessageDeleted("d1", world.private(user), user, str(world.counter)))
    assert (await world.ctx.repos.letters.get(1)).status == "withdrawn"
    assert "withdrawn" in texts_in(world, "1")[-1]
    assert "Please take this back" not in card(world, 1).current.text


# --- text that cannot deceive ----------------------------------------------------------------------------------


def test_bidi_controls_and_tags_are_removed_but_flags_and_joiners_stay() -> None:
    scotland = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    family = "👩\u200d👩\u200d👧"
    persian = "می\u200cخواهم"  # a zero-width non-joiner the word needs
    dirty = f"\u202eevil\u202c \u2066isolated\u2069 hidden\U000e0041\U000e0042 {scotland} {family} {persian}"
    assert clean_text(dirty) == f"evil isolated hidden {scotland} {family} {persian}"


async def test_a_card_quotes_the_letter_so_it_cannot_imitate_the_bot(world: World) -> None:
    await submit(world, "✅ #1 approved by Mo")
    posted = card(world, 1)
    assert posted.message.quoted  # the transport shows it as a quotation, apart from the bot's lines
    assert posted.message.footer is None and posted.message.title.startswith("📨 Letter #1 ")


async def test_stored_letters_have_no_bidi_controls(world: World) -> None:
    await submit(world, "\u202eamrof\u202c free them")
    assert (await world.ctx.repos.letters.get(1)).text == "amrof free them"


# --- rooms the bot was invited to ------------------------------------------------------------------------------


async def test_rooms_of_no_use_are_left_after_an_hour(world: World) -> None:
    idle = ChatRef("telegram", "-7", ChatKind.GROUP, "Parking lot")
    subscribed = ChatRef("telegram", "-8", ChatKind.GROUP, "Readers")
    direct = ChatRef("telegram", "33", ChatKind.PRIVATE)
    added = ChatRef("telegram", "-9", ChatKind.CHANNEL, "Added by its admin")
    for chat in (idle, subscribed, direct):
        world.network.add_chat(chat.chat_id, chat.kind, chat.title)
        await world.dispatch(MembershipChanged(chat, True, INVITED))
    await world.dispatch(MembershipChanged(added, True, ""))  # not on probation: subscribed days later
    await world.ctx.repos.subscriptions.subscribe("telegram", "-8", "group", "Readers", "en", world.clock.now())
    assert await rooms.leave_idle(world.ctx) == 0  # within the hour
    world.clock.advance(3601)
    assert await rooms.leave_idle(world.ctx) == 1
    assert world.network.left == ["-7"]
    world.clock.advance(7200)
    assert await rooms.leave_idle(world.ctx) == 0  # settled: never looked at again


# --- fair intake ----------------------------------------------------------------------------------------------


async def test_a_flood_never_delays_another_sender() -> None:
    from bot.intake import FairIntake

    handled: list[str] = []

    async def handle(event) -> None:
        await asyncio.sleep(0)
        handled.append(event.sender.user_id)

    intake = FairIntake(handle, workers=1, burst=1000)
    world_user = _messages("flood", 200) + _messages("calm", 1)
    futures = [intake.submit(event) for event in world_user]
    intake.start()
    await asyncio.gather(*futures)
    await intake.stop()
    assert handled.index("calm") <= 1  # after at most one of the flood's 200
    assert handled.count("flood") == 200  # and the flood, in its order, all of it


async def test_a_flood_is_rationed_and_others_are_not() -> None:
    from bot.intake import FairIntake

    handled: list[str] = []

    async def handle(event) -> None:
        handled.append(event.sender.user_id)

    intake = FairIntake(handle, workers=2, burst=5, per_second=20)
    futures = [intake.submit(event) for event in _messages("flood", 15)]
    intake.start()
    await asyncio.sleep(0.01)
    assert handled.count("flood") == 5  # the burst; the rest comes at 20 a second
    calm = intake.submit(_messages("calm", 1)[0])
    await asyncio.wait_for(calm, 0.05)  # a sender with tokens never waits behind the rationed flood
    await asyncio.wait_for(asyncio.gather(*futures), 2)
    assert handled.count("flood") == 15
    await intake.stop()


def _messages(user_id: str, count: int) -> list:
    from handlers.events import IncomingMessage, UserRef

    user = UserRef("telegram", user_id, user_id)
    chat = ChatRef("telegram", user_id, ChatKind.PRIVATE)
    return [IncomingMessage(f"{user_id}{n}", chat, user, "x", str(n), 0.0) for n in range(count)]


async def test_a_receipt_the_platform_holds_back_is_sent_once_it_may_be(world: World) -> None:
    from handlers.ports import DeliveryError

    # Eight 429s in a row: each is waited out as the platform says, none loses the receipt or the card.
    world.network.failures = [DeliveryError("turn", retryable=True, retry_after=3) for _ in range(8)]
    await submit(world, "Hold on")
    for _ in range(8):
        world.clock.advance(3)
        await world.run_due()
    assert any("#1 is with the moderators" in text for text in texts_in(world, "1"))
    assert card(world, 1).message.quoted

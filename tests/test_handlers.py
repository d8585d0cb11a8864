"""Handlers with a fake network and an in-memory database: what supporters and moderators see."""

from __future__ import annotations

import re
from dataclasses import replace

from handlers.events import ENCRYPTED, UNDECRYPTABLE, ActionPressed, ChatKind, ChatRef, RemoteRef, Role
from tests.conftest import MODS, World


async def submit(world: World, text: str | None, user_id: str = "1") -> None:
    user = world.user(user_id)
    await world.dispatch(world.message(world.private(user), user, text))


def texts_in(world: World, chat_id: str) -> list[str]:
    return [posted.full_text for posted in world.network.in_chat(chat_id)]


def card(world: World, number: int):
    return next(p for p in world.network.in_chat(MODS) if (p.message.title or "").startswith(f"📨 Letter #{number} "))


async def press(world: World, number: int, action: str, user_id: str = "900", name: str = "Mo") -> None:
    posted = card(world, number)
    world.counter += 1
    event = ActionPressed(
        event_id=f"press{world.counter}",
        chat=world.mods,
        user=world.user(user_id, name),
        message=posted.ref,
        data=f"{action}:{number}",
        token=f"token{world.counter}",
    )
    await world.dispatch(event)


async def test_letter_gets_receipt_and_card(world: World) -> None:
    await submit(world, "We stand with you ✊ <b>&</b>")
    (receipt,) = texts_in(world, "1")
    assert "#1" in receipt and "/withdraw 1" in receipt
    posted = card(world, 1)
    assert posted.message.text == "We stand with you ✊ <b>&</b>"
    assert "sender 1" in posted.message.title
    assert [action.data for action in posted.message.actions] == ["approve:1", "reject:1"]
    assert posted.message.actions[0].label.startswith("✅") and posted.message.actions[1].label.startswith("❌")


async def test_card_never_names_the_sender(world: World) -> None:
    user = world.user("1", name="Very Secret Name")
    await world.dispatch(world.message(world.private(user), user, "hello"))
    assert all("Very Secret Name" not in text and "@" not in text for text in texts_in(world, MODS))


async def test_non_text_and_empty_messages_are_answered_and_not_stored(world: World) -> None:
    await submit(world, None)
    await submit(world, "   \u0000\u0007  ")
    answers = texts_in(world, "1")
    assert "only carry text" in answers[0]
    assert "empty" in answers[1]
    assert await world.ctx.repos.letters.get(1) is None
    assert texts_in(world, MODS) == []


async def test_replayed_update_changes_nothing(world: World) -> None:
    user = world.user("1")
    message = world.message(world.private(user), user, "once")
    await world.dispatch(message)
    await world.dispatch(message)
    assert len(texts_in(world, "1")) == 1
    assert len(texts_in(world, MODS)) == 1


async def test_client_split_parts_become_one_letter(world: World) -> None:
    user = world.user("1")
    chat = world.private(user)
    parts = ["a" * 4000, "b" * 4096, "tail"]
    for part in parts[:2]:
        await world.dispatch(world.message(chat, user, part))
        world.clock.advance(1)
    assert texts_in(world, "1") == []  # the window is still open: no receipt yet
    await world.dispatch(world.message(chat, user, parts[2]))  # short: the letter is complete
    (receipt,) = texts_in(world, "1")
    assert "#1" in receipt
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.parts == 3
    assert letter.text == " ".join(parts)
    world.clock.advance(10)
    await world.run_due()
    assert len(texts_in(world, "1")) == 1  # the timers find it announced already


async def test_long_part_alone_is_announced_when_the_window_closes(world: World) -> None:
    await submit(world, "x" * 4095)
    assert texts_in(world, "1") == []
    world.clock.advance(5)
    await world.run_due()
    assert "#1" in texts_in(world, "1")[0]
    world.clock.advance(1)
    await submit(world, "later, separate")
    assert "#2" in texts_in(world, "1")[1]


async def test_long_letter_card_comes_in_parts_with_one_set_of_buttons(world: World) -> None:
    for _ in range(3):
        await submit(world, "Solidarity forever. " * 204)  # 4,080 characters each
        world.clock.advance(1)
    world.clock.advance(5)
    await world.run_due()
    cards = world.network.in_chat(MODS)
    assert len(cards) >= 3
    assert sum(1 for posted in cards if posted.message.actions) == 1
    assert all(len(posted.full_text) <= 4096 for posted in cards)


async def test_approve_by_button_edits_card_tells_sender_and_broadcasts(world: World) -> None:
    await world.ctx.repos.subscriptions.subscribe("telegram", "-200", "channel", "News", "en", 0)
    await submit(world, "hello")
    await press(world, 1, "approve")
    posted = card(world, 1)
    assert posted.current.actions == ()
    assert "approved by Mo" in posted.current.footer
    assert "approved" in texts_in(world, "1")[-1] and "#1" in texts_in(world, "1")[-1]
    (letter,) = texts_in(world, "-200")
    assert letter.startswith("✊ Letter of solidarity #1") and "hello" in letter
    assert "delivered to 1 of 1" in posted.current.footer


async def test_first_decision_wins(world: World) -> None:
    world.network.roles[(MODS, "901")] = Role.MEMBER
    await submit(world, "hello")
    await press(world, 1, "approve")
    await press(world, 1, "approve", user_id="901", name="Kim")
    await press(world, 1, "reject", user_id="901", name="Kim")
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.status == "approved"
    answers = [text for _token, text in world.network.press_answers]
    assert answers[0] == "#1 approved."
    assert re.match(r"#1 was already approved by Mo at \d\d:\d\d UTC\.", answers[1])
    assert answers[2] == answers[1]
    assert len([t for t in texts_in(world, "1") if "approved" in t]) == 1  # the sender is told once


async def test_outsider_cannot_press_approve(world: World) -> None:
    await submit(world, "hello")
    await press(world, 1, "approve", user_id="666", name="Eve")
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.status == "pending"
    assert "Only moderators" in world.network.press_answers[-1][1]
    assert card(world, 1).edits == []


async def test_approve_command_refused_in_private_and_for_non_members(world: World) -> None:
    await submit(world, "hello")
    user = world.user("1")
    await world.dispatch(world.message(world.private(user), user, "/approve 1"))
    assert "only in the moderators' room" in texts_in(world, "1")[-1]
    outsider = world.user("666", "Eve")
    await world.dispatch(world.message(world.mods, outsider, "/approve 1"))
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.status == "pending"


async def test_reject_with_reason_tells_the_sender(world: World) -> None:
    await submit(world, "hello")
    await world.dispatch(world.message(world.mods, world.moderator, "/reject 1 mentions a place and a day"))
    assert texts_in(world, MODS)[-1] == "#1 rejected."
    assert "The moderators said: “mentions a place and a day”" in texts_in(world, "1")[-1]
    assert "rejected by Mo" in card(world, 1).current.footer
    assert (await world.ctx.repos.deliveries.progress(1)).total == 0


async def test_withdraw_only_own_pending_letter(world: World) -> None:
    await submit(world, "mine", user_id="1")
    await submit(world, "theirs", user_id="2")
    user = world.user("1")
    await world.dispatch(world.message(world.private(user), user, "/withdraw 2"))
    assert "no letter #2" in texts_in(world, "1")[-1]
    await world.dispatch(world.message(world.private(user), user, "/withdraw 1"))
    assert "withdrawn" in texts_in(world, "1")[-1]
    assert "withdrawn by its sender" in card(world, 1).current.footer
    await world.dispatch(world.message(world.mods, world.moderator, "/approve 1"))
    assert "withdrawn by its sender" in texts_in(world, MODS)[-1]


async def test_group_admin_subscribes_member_cannot(world: World) -> None:
    group = ChatRef("telegram", "-300", ChatKind.GROUP, "Comrades")
    world.network.roles[("-300", "10")] = Role.ADMIN
    world.network.roles[("-300", "11")] = Role.MEMBER
    await world.dispatch(world.message(group, world.user("11"), "/subscribe en"))
    assert "Only an administrator" in texts_in(world, "-300")[-1]
    await world.dispatch(world.message(group, world.user("10"), "/subscribe@RelayBot es"))
    assert "Spanish" in texts_in(world, "-300")[-1]
    subscription = await world.ctx.repos.subscriptions.find("telegram", "-300")
    assert subscription is not None and subscription.language == "es" and subscription.active


async def test_unknown_language_is_refused(world: World) -> None:
    user = world.user("1")
    await world.dispatch(world.message(world.private(user), user, "/subscribe klingon"))
    assert "not a language code" in texts_in(world, "1")[-1]
    assert await world.ctx.repos.subscriptions.find("telegram", "1") is None


async def test_moderator_subscribes_a_channel(world: World) -> None:
    world.network.add_chat("@news", ChatKind.CHANNEL, "News")
    world.network.chats["@news"] = ChatRef("telegram", "-400", ChatKind.CHANNEL, "News")
    await world.dispatch(world.message(world.mods, world.moderator, "/subscribe @news fr"))
    assert "News now receives approved letters in French" in texts_in(world, MODS)[-1]
    await world.dispatch(world.message(world.mods, world.moderator, "/subscribers"))
    assert "-400" in texts_in(world, MODS)[-1]
    await world.dispatch(world.message(world.mods, world.moderator, "/subscribe @nowhere fr"))
    assert "can't find @nowhere" in texts_in(world, MODS)[-1]


async def test_ban_refuses_further_letters(world: World) -> None:
    await submit(world, "first")
    await world.dispatch(world.message(world.mods, world.moderator, "/ban 1"))
    await submit(world, "second")
    assert "no longer accept" in texts_in(world, "1")[-1]
    assert await world.ctx.repos.letters.get(2) is None
    await world.dispatch(world.message(world.mods, world.moderator, "/unban 1"))
    await submit(world, "third")
    assert "#2" in texts_in(world, "1")[-1]


async def test_pending_and_stats(world: World) -> None:
    await submit(world, "first letter, waiting")
    await submit(world, "second letter")
    await world.dispatch(world.message(world.mods, world.moderator, "/approve 2"))
    await world.dispatch(world.message(world.mods, world.moderator, "/pending"))
    listing = texts_in(world, MODS)[-1]
    assert "#1" in listing and "first letter, waiting" in listing and "#2 ·" not in listing
    await world.dispatch(world.message(world.mods, world.moderator, "/stats"))
    assert "1 pending, 1 approved" in texts_in(world, MODS)[-1]


async def test_flooding_sender_is_asked_to_wait(world: World) -> None:
    for index in range(12):
        await submit(world, f"letter {index}")
    assert "wait for their decision" in texts_in(world, "1")[-1]
    assert len(texts_in(world, MODS)) == 10


async def test_bot_removed_from_chat_ends_its_subscription(world: World) -> None:
    from handlers.events import MembershipChanged

    chat = ChatRef("telegram", "-300", ChatKind.GROUP, "Comrades")
    await world.ctx.repos.subscriptions.subscribe("telegram", "-300", "group", "Comrades", "en", 0)
    await world.dispatch(MembershipChanged(chat, False, "bot was removed"))
    subscription = await world.ctx.repos.subscriptions.find("telegram", "-300")
    assert subscription is not None and not subscription.active


async def test_press_on_a_stale_button_is_answered(world: World) -> None:
    event = ActionPressed("p1", world.mods, world.moderator, RemoteRef("telegram", MODS, "77"), "bogus", "t1")
    await world.dispatch(event)
    assert "no longer valid" in world.network.press_answers[-1][1]


async def test_unreadable_encrypted_messages_are_answered_where_the_bot_reads(world: World) -> None:
    """An encrypted message whose keys never came is answered each time in a private chat and in the moderation
    room (it may have been a letter or a decision); a bot without encryption says so once an hour; in another
    group such a message is nobody's business."""
    user = world.user("1")
    lost = replace(world.message(world.private(user), user, None), content_kind=UNDECRYPTABLE)
    await world.dispatch(lost)
    await world.dispatch(replace(lost, event_id="again", message_id="again"))
    assert texts_in(world, "1") == ["I could not decrypt your message. Please send it again."] * 2
    mods_message = replace(world.message(world.mods, world.user("900", "Mo"), None), content_kind=UNDECRYPTABLE)
    await world.dispatch(mods_message)
    assert texts_in(world, MODS) == ["I could not decrypt your message. Please send it again."]
    other_group = ChatRef("telegram", "-100777", ChatKind.GROUP)
    await world.dispatch(replace(world.message(other_group, user, None), content_kind=UNDECRYPTABLE))
    assert texts_in(world, "-100777") == []

    plain_bot = replace(world.message(world.private(world.user("2")), world.user("2"), None), content_kind=ENCRYPTED)
    await world.dispatch(plain_bot)
    await world.dispatch(replace(plain_bot, event_id="twice", message_id="twice"))
    assert len(texts_in(world, "2")) == 1 and "chat without encryption" in texts_in(world, "2")[0]
    assert await world.ctx.repos.letters.get(1) is None


async def test_a_decision_is_one_domain_event_and_each_effect_stands_alone(world: World) -> None:
    """Deciding publishes LetterDecided once; a new sink (an archive) subscribes without the deciding code knowing
    it; an effect that fails leaves the others (cards, the sender's notice) to run."""
    from handlers import effects
    from handlers.domain import DomainEvents, LetterDecided

    seen: list[LetterDecided] = []

    async def broken_sink(ctx: object, event: LetterDecided) -> None:
        raise RuntimeError("the archive is down")

    async def archive(ctx: object, event: LetterDecided) -> None:
        seen.append(event)

    events = DomainEvents()
    events.subscribe(LetterDecided, broken_sink)
    world.ctx.events = effects.subscribe(events)
    world.ctx.events.subscribe(LetterDecided, archive)
    await submit(world, "Fuerza, compañeras")
    await press(world, 1, "approve")
    await press(world, 1, "approve")  # a second press decides nothing: no second event
    assert [(event.letter.id, event.decision.action) for event in seen] == [(1, "approve")]
    assert any("approved" in text for text in texts_in(world, "1"))
    assert "approved by Mo" in card(world, 1).full_text

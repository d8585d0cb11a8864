"""The handlers as an email writer meets them: commands without a prefix, proof of address for what changes
something, double opt-in, attachments left behind, answers in the writer's language and thread."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.transports.email import NOT_TEXT
from handlers import privacy
from handlers.events import COMMAND, ActionPressed, ChatKind, ChatRef, IncomingMessage, UserRef
from handlers.ports import Capability
from handlers.subscriptions import REQUEST_DAYS
from tests.conftest import MODS, FixedDetector, World
from tests.fakes import FakeNetwork, Posted

ANA = "ana@mail.example"
BEA = "bea@mail.example"
DAY = 86400.0


@pytest.fixture
def mail(world: World) -> FakeNetwork:
    """An email-like network beside the fixture's Telegram: no command prefix, no bot name, the unsubscribe
    footer (what EmailTransport declares)."""
    network = FakeNetwork("email", max_text_length=1_000_000)
    # Set on the instance: the fake's class attributes are Telegram's.
    network.command_prefix = ""
    network.bot_username = None
    network.capabilities = frozenset({Capability.SUBSCRIBER_FOOTER})
    world.ctx.networks["email"] = network
    return network


def letter_mail(
    world: World, text: str | None, address: str = ANA, *, proven: bool = False, left_out: tuple[str, ...] = ()
) -> IncomingMessage:
    """A mail as EmailTransport hands it on; a mail's From proves nothing unless it answers the bot's mail."""
    world.counter += 1
    return IncomingMessage(
        event_id=f"mail {world.counter}",
        chat=ChatRef("email", address, ChatKind.PRIVATE),
        sender=UserRef("email", address, "", None),
        text=text,
        message_id=f"<m{world.counter}@mail.example>",
        received_at=world.clock.now(),
        content_kind="text" if text is not None else NOT_TEXT,
        length=len(text or ""),
        sender_proven=proven,
        left_out=left_out,
    )


def command_mail(world: World, text: str, address: str = ANA, *, proven: bool = False) -> IncomingMessage:
    """A subject or first line the transport recognised as a command."""
    mail = letter_mail(world, text, address, proven=proven)
    return replace(mail, content_kind=COMMAND)


async def send(world: World, text: str, address: str = ANA, *, proven: bool = False) -> IncomingMessage:
    sent = command_mail(world, text, address, proven=proven)
    await world.dispatch(sent)
    return sent


def answers(network: FakeNetwork, address: str = ANA) -> list[Posted]:
    return network.in_chat(address)


def last_text(network: FakeNetwork, address: str = ANA) -> str:
    return answers(network, address)[-1].full_text


async def subscribed_in(world: World, address: str = ANA) -> str | None:
    found = await world.ctx.repos.subscriptions.find("email", address)
    return found.language if found is not None and found.active else None


async def requests(world: World) -> list[str]:
    rows = await world.ctx.repos.db.fetchall("SELECT chat_id FROM subscription_requests ORDER BY chat_id")
    return [row["chat_id"] for row in rows]


async def approve(world: World, number: int) -> None:
    card = next(p for p in world.network.in_chat(MODS) if (p.message.title or "").startswith(f"📨 Letter #{number} "))
    world.counter += 1
    await world.dispatch(ActionPressed(
        event_id=f"press{world.counter}", chat=world.mods, user=world.moderator, message=card.ref,
        data=f"approve:{number}", token=f"token{world.counter}",
    ))


# --- double opt-in ------------------------------------------------------------------------------------------------


async def test_subscribing_by_mail_waits_for_a_proven_yes(world: World, mail: FakeNetwork) -> None:
    asked = await send(world, "subscribe es")
    assert await subscribed_in(world) is None
    (question,) = answers(mail)
    assert "Spanish" in question.full_text and "Reply to this message with “yes” to confirm" in question.full_text
    assert question.message.reply_to == asked.message_id  # in the writer's thread: their answer proves the address

    forged = await send(world, "yes")
    assert await subscribed_in(world) is None
    assert last_text(mail) == "To make sure it is really you, reply to this message with “yes”."
    assert answers(mail)[-1].message.reply_to == forged.message_id

    await send(world, "yes", proven=True)
    assert await subscribed_in(world) == "es"
    assert last_text(mail) == "You will now receive approved letters in Spanish. unsubscribe stops them."

    await send(world, "yes", proven=True)
    assert last_text(mail).startswith("There is nothing to confirm. To receive letters: subscribe es")
    assert await subscribed_in(world) == "es"


async def test_a_proven_subscribe_needs_no_confirmation(world: World, mail: FakeNetwork) -> None:
    await send(world, "subscribe es", proven=True)
    assert await subscribed_in(world) == "es"
    assert await requests(world) == []


async def test_a_request_older_than_a_week_is_not_confirmed(world: World, mail: FakeNetwork) -> None:
    await send(world, "subscribe es", ANA)
    await send(world, "subscribe es", BEA)
    world.clock.advance(REQUEST_DAYS * DAY - 1)
    await send(world, "yes", BEA, proven=True)
    assert await subscribed_in(world, BEA) == "es"
    world.clock.advance(2)
    await send(world, "yes", ANA, proven=True)
    assert await subscribed_in(world, ANA) is None
    assert last_text(mail, ANA).startswith("There is nothing to confirm.")


async def test_the_purge_drops_requests_older_than_a_week_only(world: World, mail: FakeNetwork) -> None:
    await send(world, "subscribe es", ANA)
    world.clock.advance(REQUEST_DAYS * DAY + 1)
    await send(world, "subscribe en", BEA)
    await privacy.purge(world.ctx)
    assert await requests(world) == [BEA]
    await send(world, "yes", BEA, proven=True)
    assert await subscribed_in(world, BEA) == "en"


async def test_forget_drops_a_pending_request(world: World, mail: FakeNetwork) -> None:
    await send(world, "subscribe es")
    await send(world, "forget yes", proven=True)
    assert last_text(mail).startswith("Done: I have forgotten you.")
    assert await requests(world) == []
    await send(world, "yes", proven=True)
    assert await subscribed_in(world) is None
    assert last_text(mail).startswith("There is nothing to confirm.")


# --- what changes something needs proof ---------------------------------------------------------------------------


async def test_withdraw_needs_a_proven_sender(world: World, mail: FakeNetwork) -> None:
    await world.dispatch(letter_mail(world, "We stand with you."))
    (receipt,) = answers(mail)
    assert "#1" in receipt.full_text and "Changed your mind? withdraw 1" in receipt.full_text  # no prefix on email

    await send(world, "withdraw 1")
    assert last_text(mail) == "To make sure it is really you, reply to this message with “withdraw 1”."
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.status == "pending"

    await send(world, "withdraw 1", proven=True)
    assert last_text(mail) == "Letter #1 is withdrawn. Nobody will see it."
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.status == "withdrawn"


async def test_forget_explains_itself_to_anyone_and_forgets_only_a_proven_sender(
    world: World, mail: FakeNetwork
) -> None:
    await world.dispatch(letter_mail(world, "We stand with you."))
    await send(world, "forget")
    assert "This deletes everything I know about you" in last_text(mail)
    assert last_text(mail).endswith("Send forget yes to go ahead.")

    await send(world, "forget yes")
    assert last_text(mail) == "To make sure it is really you, reply to this message with “forget yes”."
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.status == "pending"
    assert await world.ctx.repos.senders.find("email", ANA) is not None

    await send(world, "forget yes", proven=True)
    assert last_text(mail).startswith("Done: I have forgotten you. 1 letter waiting for the moderators was withdrawn.")
    assert await world.ctx.repos.senders.find("email", ANA) is None


async def test_unsubscribe_needs_a_proven_sender(world: World, mail: FakeNetwork) -> None:
    await world.ctx.repos.subscriptions.subscribe("email", ANA, "private", None, "en", world.clock.now())
    await send(world, "unsubscribe")
    assert last_text(mail) == "To make sure it is really you, reply to this message with “unsubscribe”."
    assert await subscribed_in(world) == "en"

    await send(world, "unsubscribe", proven=True)
    assert last_text(mail) == f"{ANA} no longer receives letters."
    assert await subscribed_in(world) is None


async def test_a_letter_that_reads_like_a_command_is_a_letter(world: World, mail: FakeNetwork) -> None:
    # Without a prefix only the transport decides what is a command: text it passes on as a letter stays one.
    await world.dispatch(letter_mail(world, "help us keep the school open"))
    assert "#1" in last_text(mail)
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.text == "help us keep the school open"


# --- attachments --------------------------------------------------------------------------------------------------


async def test_a_letter_with_an_attachment_is_kept_and_the_attachment_named_as_left_behind(
    world: World, mail: FakeNetwork
) -> None:
    await world.dispatch(letter_mail(world, "We stand with you.", left_out=("report.pdf",)))
    notice, receipt = (posted.full_text for posted in answers(mail))
    assert notice == ("Your message had 1 attachment; I can carry only the text of a letter for now, so it was "
                      "not kept.")
    assert "#1" in receipt
    letter = await world.ctx.repos.letters.get(1)
    assert letter is not None and letter.text == "We stand with you."
    assert any("We stand with you." in posted.full_text for posted in world.network.in_chat(MODS))


async def test_attachments_alone_are_refused_and_nothing_is_stored(world: World, mail: FakeNetwork) -> None:
    await world.dispatch(letter_mail(world, None, left_out=("photo.jpg", "report.pdf")))
    (refusal,) = (posted.full_text for posted in answers(mail))
    assert refusal == "I can only carry text letters for now: please write your letter as a message."
    assert await world.ctx.repos.letters.get(1) is None
    assert world.network.in_chat(MODS) == []


async def test_a_mail_handed_on_again_is_answered_once(world: World, mail: FakeNetwork) -> None:
    # The transport marks a mail handled after the handlers are done: one interrupted in between comes again.
    again = letter_mail(world, "We stand with you.", left_out=("report.pdf",))
    await world.dispatch(again)
    await world.dispatch(again)
    assert len(answers(mail)) == 2  # the notice and the receipt, once each
    assert len(world.network.in_chat(MODS)) == 1


# --- the writer's language and thread -----------------------------------------------------------------------------


async def test_receipt_and_notice_are_in_the_letter_language_and_answer_its_mail(
    world: World, mail: FakeNetwork
) -> None:
    world.ctx.detector = FixedDetector("es")
    letter = letter_mail(world, "Estamos con ustedes, compañeras.")  # a mail names no language of its reader
    await world.dispatch(letter)
    (receipt,) = answers(mail)
    assert receipt.full_text.startswith("📨 ¡Gracias! Tu carta #1 ya está con el equipo de moderación.")
    assert receipt.full_text.endswith("¿Cambiaste de idea? withdraw 1")
    assert receipt.message.reply_to == letter.message_id

    await approve(world, 1)
    notice = answers(mail)[-1]
    assert notice.full_text.startswith("✅ Tu carta #1 fue aprobada")
    parts = await world.ctx.repos.letters.part_ids(1)
    assert notice.message.reply_to == parts[0][1] == letter.message_id


async def test_a_client_language_still_comes_first(world: World, mail: FakeNetwork) -> None:
    world.ctx.detector = FixedDetector("es")
    letter = letter_mail(world, "Estamos con ustedes.")
    await world.dispatch(replace(letter, sender=UserRef("email", ANA, "", "en")))
    assert last_text(mail).startswith("📨 Thank you! Your letter #1 is with the moderators.")


# --- broadcasts ---------------------------------------------------------------------------------------------------


async def test_letters_by_mail_say_how_to_stop_them_and_elsewhere_they_do_not(world: World, mail: FakeNetwork) -> None:
    now = world.clock.now()
    await world.ctx.repos.subscriptions.subscribe("email", ANA, "private", None, "es", now)
    await world.ctx.repos.subscriptions.subscribe("email", BEA, "private", None, "en", now)
    await world.ctx.repos.subscriptions.subscribe("telegram", "-200", "channel", "News", "es", now)
    writer = world.user("1")
    await world.dispatch(world.message(world.private(writer), writer, "We stand with you."))
    await approve(world, 1)

    (to_ana,) = answers(mail, ANA)
    assert to_ana.message.broadcast and "We stand with you." in to_ana.full_text
    assert to_ana.message.footer == ("Recibes estas cartas porque te suscribiste. Responde “unsubscribe” para dejar "
                                     "de recibirlas.")
    (to_bea,) = answers(mail, BEA)
    assert to_bea.message.footer == (
        "You receive these letters because you subscribed. Reply “unsubscribe” to stop them.")
    (to_channel,) = world.network.in_chat("-200")
    assert "We stand with you." in to_channel.full_text
    assert "unsubscribe" not in to_channel.full_text and "suscribiste" not in to_channel.full_text

"""The whole bot in end-to-end encrypted rooms on a real Synapse.

The people here encrypt with mautrix's crypto over libolm (tests/matrix_crypto_people.py), the bot with matrix-nio
over vodozemac: a test passes only when the two implementations understand each other. What the homeserver holds is
read through a plain `Person` of the same account, which sees ciphertext only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from bot.app import Relay, StartupError
from bot.networks.matrix import STORE_FOLDER
from bot.transports import matrix_crypto
from tests.homeserver import DEFAULT_PASSWORD, Homeserver, fresh_name
from tests.matrix_crypto_people import EncryptedPerson
from tests.matrix_people import JsonDict, Person, q, text_body
from tests.test_e2e_matrix import FAST, Room, _until_joined

pytest_plugins = ("tests.synapse_fixtures",)
pytestmark = pytest.mark.asyncio(loop_scope="session")

ENCRYPTED = "m.room.encrypted"
LETTER = "Querida Ana: no estás sola. Desde Valparaíso te mandamos fuerza ✊ — Colectivo 8M"


@dataclass
class Secret(Room):
    """The Matrix scene of tests/test_e2e_matrix.py, encrypted: Mo in an encrypted moderators' room and Alice who
    writes both encrypt (Kim is not in the room here). `mo_plain` is Mo's plain view of what the server stores."""

    mo_plain: Person | None = None
    people: list[EncryptedPerson] = field(default_factory=list)  # closed when the test ends

    async def person(self, prefix: str, displayname: str | None = None) -> tuple[Person, EncryptedPerson]:
        plain = await self.hs.register(fresh_name(prefix), displayname=displayname, exempt=True)
        person = await EncryptedPerson.create(plain)
        self.people.append(person)
        return plain, person

    async def new_device(self, user_id: str) -> EncryptedPerson:
        person = await EncryptedPerson.log_in(self.hs.url, user_id, DEFAULT_PASSWORD)
        self.people.append(person)
        return person


async def raw_events(person: Person, room_id: str, sender: str) -> list[JsonDict]:
    """What the homeserver keeps of `sender`'s events, as stored (nothing decrypted)."""
    chunk = (await person.request("GET", f"/rooms/{q(room_id)}/messages", params={"dir": "b", "limit": "100"}))
    return [event for event in chunk["chunk"] if event.get("sender") == sender]


@pytest_asyncio.fixture(loop_scope="session")
async def secret(homeserver: Homeserver, tmp_path: Path) -> AsyncIterator[Secret]:
    bot = await homeserver.register(fresh_name("relay"), exempt=True)
    await bot.close()  # the bot logs in by itself, with its own device
    mo_plain = await homeserver.register(fresh_name("mo"), displayname="Mo", exempt=True)
    mo = await EncryptedPerson.create(mo_plain)
    alice = await EncryptedPerson.create(await homeserver.register(fresh_name("alice"), exempt=True))
    kim = await homeserver.register(fresh_name("kim"), exempt=True)
    mods = await mo.create_room(name="Moderators", invite=[bot.user_id])
    scene = Secret(homeserver, bot.user_id, bot.password, mods, mo, kim, alice, tmp_path / "relay.db",
                   mo_plain=mo_plain, people=[mo, alice])
    try:
        yield scene
    finally:
        while scene.relays:
            await scene.stop_bot()
        for person in scene.people:
            await person.close()
        assert not [problem for person in scene.people for problem in person.sync_problems]


async def test_encrypted_direct_chat_moderation_and_broadcast(secret: Secret) -> None:
    """Element's encrypted DM gets its receipt; the encrypted card, Mo's encrypted ✅ and the card's edit all
    decrypt; the encrypted subscriber room receives the letter once; the server holds ciphertext only."""
    await secret.start_bot()
    ada_plain, ada = await secret.person("ada")
    subscribers = await secret.subscriber_room(ada, "en")
    dm = await secret.alice.direct_room(secret.bot_user)
    assert await secret.alice.is_encrypted(dm)
    await secret.alice.send_text(dm, LETTER)
    receipt = await secret.alice.wait_for_text(dm, secret.bot_user, r"#1\b")
    # Matrix tells no client language: the receipt is in the letter's (Spanish).
    assert "Tu carta #1 ya está con el equipo de moderación" in receipt
    card = await secret.card(1)
    assert LETTER in text_body(card) and card["encrypted"]
    deadline = time.monotonic() + 10
    while True:  # the bot reacts right after posting the card: the second reaction may be a moment behind
        reactions = [event for event in await secret.mo.messages(secret.mods)
                     if event["type"] == "m.reaction" and event["sender"] == secret.bot_user]
        keys = {event["content"]["m.relates_to"]["key"] for event in reactions}
        if keys == {"✅", "❌"} or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert keys == {"✅", "❌"}

    await secret.mo.react(secret.mods, card["event_id"], "✅")
    await secret.mo.wait_for_text(secret.mods, secret.bot_user, r"(?s)^📨 Letter #1 .*approved by Mo")
    await secret.alice.wait_for_text(dm, secret.bot_user, "Tu carta #1 fue aprobada")
    delivered = await ada.wait_for_text(subscribers, secret.bot_user, "Letter of solidarity #1")
    assert LETTER in delivered
    await secret.mo.wait_for_text(secret.mods, secret.bot_user, "#1 delivered to 1 of 1 subscribers")
    letters = [event for event in await ada.messages(subscribers)
               if event["sender"] == secret.bot_user and "Letter of solidarity" in (text_body(event) or "")]
    assert len(letters) == 1 and letters[0]["encrypted"]

    # What the homeserver keeps: every text of the bot's (cards, edits, receipt, broadcast) as ciphertext.
    alice_plain = _plain(secret.alice)
    try:
        for viewer, room_id in ((secret.mo_plain, secret.mods), (alice_plain, dm), (ada_plain, subscribers)):
            stored = await raw_events(viewer, room_id, secret.bot_user)
            assert {event["type"] for event in stored} <= {ENCRYPTED, "m.reaction", "m.room.member"}, stored
            assert LETTER not in json.dumps(stored, ensure_ascii=False)
    finally:
        await alice_plain.close()
    reaction_on_server = [event for event in await raw_events(secret.mo_plain, secret.mods, secret.mo.user_id)
                          if event["content"].get("m.relates_to", {}).get("event_id") == card["event_id"]]
    assert [event["type"] for event in reaction_on_server] == [ENCRYPTED]  # Mo's ✅ was encrypted, and read


async def test_rejected_letter_is_scrubbed_from_an_encrypted_card(secret: Secret) -> None:
    """`!reject` (an encrypted command) removes the letter's text from the card: the bot's encrypted edits are
    found through their relations, which stay in the clear."""
    await secret.start_bot()
    dm = await secret.alice.direct_room(secret.bot_user)
    await secret.alice.send_text(dm, "Take this back, please: my name is in it. — Alice from the night shift")
    await secret.alice.wait_for_text(dm, secret.bot_user, r"#1\b")
    await secret.card(1)
    await secret.mo.send_text(secret.mods, "!reject 1 names a person")
    await secret.alice.wait_for_text(dm, secret.bot_user, "names a person")
    deadline = time.monotonic() + 20
    while True:
        texts = [text_body(event) or "" for event in await secret.mo.messages(secret.mods)
                 if event["sender"] == secret.bot_user]
        if any("rejected" in text for text in texts) and not any("night shift" in text for text in texts):
            break
        assert time.monotonic() < deadline, texts
        await asyncio.sleep(0.2)


async def test_restart_keeps_the_device_and_reads_new_letters(secret: Secret) -> None:
    relay = await secret.start_bot()
    device = relay.networks["matrix"].client.device_id  # type: ignore[attr-defined]
    store = secret.database.parent / STORE_FOLDER
    devices_before = await _devices(secret, store)
    dm = await secret.alice.direct_room(secret.bot_user)
    await secret.alice.send_text(dm, "The first letter, before the restart.")
    await secret.alice.wait_for_text(dm, secret.bot_user, r"#1\b")
    await secret.stop_bot()

    assert oct(store.stat().st_mode & 0o777) == "0o700"
    assert all(oct(path.stat().st_mode & 0o777) == "0o600" for path in store.iterdir()), list(store.iterdir())
    relay = await secret.start_bot()
    assert relay.networks["matrix"].client.device_id == device  # type: ignore[attr-defined]
    await secret.alice.send_text(dm, "The second letter, after the restart.")
    await secret.alice.wait_for_text(dm, secret.bot_user, r"#2\b")
    assert "after the restart" in text_body(await secret.card(2))
    assert device in devices_before and await _devices(secret, store) == devices_before  # no new device


async def _devices(secret: Secret, store: Path) -> set[str]:
    """The bot account's devices on the homeserver (its registration's and the bot's own login)."""
    session = json.loads((store / "session.json").read_text())
    bot = Person(secret.hs.url, secret.bot_user, session["access_token"], session["device_id"])
    try:
        return {entry["device_id"] for entry in (await bot.request("GET", "/devices"))["devices"]}
    finally:
        await bot.close()


async def test_a_moderators_new_device_reads_the_next_card(secret: Secret) -> None:
    relay = await secret.start_bot()
    dm = await secret.alice.direct_room(secret.bot_user)
    await secret.alice.send_text(dm, "A letter the first device reads.")
    await secret.card(1)
    phone = await secret.new_device(secret.mo.user_id)
    client = relay.networks["matrix"].client  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    # The bot learns of the device from its next sync; a card sent before that could not be for the phone.
    while phone.device_id not in client.device_store[secret.mo.user_id]:
        assert time.monotonic() < deadline, "the bot never saw Mo's new device"
        await asyncio.sleep(0.1)
    await secret.alice.send_text(dm, "A letter the new device reads too.")
    card = await secret.card(2, reader=phone)
    assert "new device reads too" in text_body(card)


async def test_a_message_without_keys_is_answered_after_the_wait(
    secret: Secret, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys that come late (after the bot asked for them) still make a letter; keys that never come make the bot
    ask the sender to send it again, once the wait is over."""
    monkeypatch.setattr(matrix_crypto, "UNDECRYPTABLE_WAIT", 4.0)
    relay = await secret.start_bot()
    dm = await secret.alice.direct_room(secret.bot_user)
    await secret.alice.send_undecryptable(dm, "A letter whose keys come late.")
    await asyncio.sleep(1.0)
    await secret.alice.share_withheld(dm)
    await secret.alice.wait_for_text(dm, secret.bot_user, r"#1\b")
    assert "keys come late" in text_body(await secret.card(1))

    sent = time.monotonic()
    never = await secret.alice.send_undecryptable(dm, "A letter whose keys never come.")
    client = relay.networks["matrix"].client  # type: ignore[attr-defined]
    session = (await secret.alice.request("GET", f"/rooms/{q(dm)}/event/{q(never)}"))["content"]["session_id"]
    deadline = time.monotonic() + 10
    # The bot asked Alice's device for the keys (a request nio records once sent, so that a forwarded key counts).
    while session not in {request.session_id for request in client.olm.outgoing_key_requests.values()}:
        assert time.monotonic() < deadline, "the bot never asked for the keys"
        await asyncio.sleep(0.1)
    answer = await secret.alice.wait_for_text(dm, secret.bot_user, "could not decrypt", within=30)
    assert answer == "I could not decrypt your message. Please send it again."
    assert time.monotonic() - sent >= 3.5  # not before the keys had their time
    texts = [text_body(event) or "" for event in await secret.mo.messages(secret.mods)]
    assert not any("never come" in text for text in texts) and not any("#2" in text for text in texts)


async def test_without_encryption_encrypted_rooms_are_refused(secret: Secret, homeserver: Homeserver) -> None:
    """MATRIX_ENCRYPTION=false: an encrypted moderators' room stops the bot; in an unencrypted one it runs, and
    a supporter writing in an encrypted chat is told, in plain text, to write without encryption."""
    secret.env["MATRIX_ENCRYPTION"] = "false"
    refused = Relay(secret.settings(), rates={"matrix": FAST})
    with pytest.raises(StartupError, match=r"MATRIX_MODERATION_ROOM: .*end-to-end encrypted"):
        await refused.start()
    await refused.stop()

    secret.mods = await secret.mo.create_room(name="Plain moderators", invite=[secret.bot_user], encrypted=False)
    await secret.start_bot()
    alice_plain = _plain(secret.alice)
    dm = await secret.alice.direct_room(secret.bot_user)
    await secret.alice.send_text(dm, "Can you read this?")
    answer = await secret.alice.wait_for_text(dm, secret.bot_user, "without encryption")
    assert "cannot read encrypted messages" in answer
    try:
        stored = await raw_events(alice_plain, dm, secret.bot_user)
    finally:
        await alice_plain.close()
    answers = [event for event in stored if event["type"] != "m.room.member"]
    assert [event["type"] for event in answers] == ["m.room.message"]  # told in the clear: nothing to decrypt
    assert not [event for event in await secret.mo.messages(secret.mods) if "Letter #" in (text_body(event) or "")]


def _plain(person: EncryptedPerson) -> Person:
    """The same device seen through plain HTTP: what the server stores, nothing decrypted."""
    return Person(person.base_url, person.user_id, person.access_token, person.device_id)


async def test_room_keys_rotate_as_the_room_asks_not_per_message(secret: Secret) -> None:
    """One Megolm session serves many messages, and a new one starts after the room's `rotation_period_msgs`."""
    await secret.start_bot()
    encryption = {"algorithm": "m.megolm.v1.aes-sha2", "rotation_period_msgs": 2}
    dm = (await secret.alice.request("POST", "/createRoom", {
        "preset": "trusted_private_chat", "is_direct": True, "invite": [secret.bot_user],
        "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": encryption}],
    }))["room_id"]
    await _until_joined(secret.alice, dm, secret.bot_user)
    for number in (1, 2, 3):
        await secret.alice.send_text(dm, f"Letter number {number} of three, for the rotation.")
        await secret.alice.wait_for_text(dm, secret.bot_user, rf"#{number}\b")
    alice_plain = _plain(secret.alice)
    try:
        stored = await raw_events(alice_plain, dm, secret.bot_user)
    finally:
        await alice_plain.close()
    sessions = [event["content"]["session_id"] for event in reversed(stored) if event["type"] == ENCRYPTED]
    assert len(sessions) == 3 and sessions[0] == sessions[1] != sessions[2], sessions


async def test_cards_of_the_longest_letters_fit_once_encrypted(
    secret: Secret, caplog: pytest.LogCaptureFixture
) -> None:
    """Encrypted, an event is a third bigger (base64): a card part and its edit (the text twice) must still be
    under Synapse's 64 KiB, also for a letter of 60,000 characters that JSON escapes twice over."""
    from handlers import cards
    from storage.letters import Decision

    relay = await secret.start_bot()
    dm = await secret.alice.direct_room(secret.bot_user)
    await secret.alice.send_text(dm, "A short letter, soon a long one.")
    await secret.alice.wait_for_text(dm, secret.bot_user, r"#1\b")
    ctx = relay.ctx
    assert ctx is not None
    letter = ('"\\' * 50 + "\n") * 580  # 59,160 characters; Synapse refuses it as one event even in the clear
    await ctx.repos.letters.edit_text(1, letter, len(letter), Decision(1, "edit", "matrix", "@mo:test", "Mo", None, 0))
    await cards.refresh(ctx, 1)
    await secret.mo.wait_for_text(secret.mods, secret.bot_user, r"part \d+ of \d+", within=30)
    await secret.mo.send_text(secret.mods, "!approve 1")
    await secret.mo.wait_for_text(secret.mods, secret.bot_user, r"(?s)^📨 Letter #1 .*approved by Mo", within=30)
    stored = await raw_events(secret.mo_plain, secret.mods, secret.bot_user)
    sizes = [len(json.dumps(event["content"], ensure_ascii=False).encode()) for event in stored]
    assert max(sizes) > 40_000  # the long parts and their edits are there, encrypted
    assert max(sizes) < 64_000
    assert not [record for record in caplog.records if "byte limit" in record.getMessage()]


async def test_a_room_the_bot_is_not_in_ends_its_subscription(secret: Secret, monkeypatch: pytest.MonkeyPatch) -> None:
    """nio refuses rooms it has not synced; the homeserver's "not in room" must still reach the worker, so that
    the subscription ends instead of being retried for ever."""
    from bot.transports import matrix

    monkeypatch.setattr(matrix, "NEW_ROOM_WAIT", 1.0)
    relay = await secret.start_bot()
    assert relay.ctx is not None
    _, ada = await secret.person("ada")
    elsewhere = await ada.create_room(name="Never joined", encrypted=False)
    await relay.ctx.repos.subscriptions.subscribe("matrix", elsewhere, "group", "Never joined", "en", time.time())
    dm = await secret.alice.direct_room(secret.bot_user)
    await secret.alice.send_text(dm, "To every room that will have it.")
    await secret.card(1)
    await secret.mo.send_text(secret.mods, "!approve 1")
    deadline = time.monotonic() + 30
    while (subscription := await relay.ctx.repos.subscriptions.find("matrix", elsewhere)) and subscription.active:
        assert time.monotonic() < deadline, "the subscription stayed active"
        await asyncio.sleep(0.2)
    assert subscription is not None and subscription.deactivated_reason


async def test_a_retried_broadcast_to_an_encrypted_room_is_one_event(secret: Secret) -> None:
    """A retry encrypts the letter anew (another ciphertext), but with the same transaction id: the homeserver
    answers with the first event, and the room holds the letter once."""
    from handlers.events import OutgoingMessage

    relay = await secret.start_bot()
    ada_plain, ada = await secret.person("ada")
    subscribers = await secret.subscriber_room(ada, "en")
    letter = OutgoingMessage(subscribers, LETTER, title="✊ Letter of solidarity #7", broadcast=True,
                             idempotency_key=f"relay-7-{subscribers}-0")
    matrix = relay.networks["matrix"]
    first, again = await matrix.send(letter), await matrix.send(letter)
    assert first == again
    await ada.wait_for_text(subscribers, secret.bot_user, "Letter of solidarity #7")
    stored = await raw_events(ada_plain, subscribers, secret.bot_user)
    decrypted = [event for event in await ada.messages(subscribers) if "#7" in (text_body(event) or "")]
    assert len(decrypted) == 1 and decrypted[0]["event_id"] == first.message_id
    assert first.message_id in {event["event_id"] for event in stored if event["type"] == ENCRYPTED}


async def test_a_lost_store_means_a_new_device_and_the_old_one_logged_out(secret: Secret) -> None:
    """A store that is gone cannot be rebuilt (its keys are on the server): the bot logs in anew, and logs the
    old device out, so that members stop encrypting for a device nobody can read with."""
    relay = await secret.start_bot()
    old = relay.networks["matrix"].client.device_id  # type: ignore[attr-defined]
    store = secret.database.parent / STORE_FOLDER
    await secret.stop_bot()
    (store / f"{secret.bot_user}_{old}.db").unlink()
    relay = await secret.start_bot()
    new = relay.networks["matrix"].client.device_id  # type: ignore[attr-defined]
    assert new != old
    devices = await _devices(secret, store)
    assert new in devices and old not in devices
    dm = await secret.alice.direct_room(secret.bot_user)
    await secret.alice.send_text(dm, "A letter for the new device.")
    await secret.alice.wait_for_text(dm, secret.bot_user, r"#1\b")

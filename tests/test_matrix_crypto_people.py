"""The encrypting test people themselves (tests/matrix_crypto_people.py), on the real Synapse.

What the server stores is read through a plain ``Person`` of the same account: it must see ciphertext only,
with relations in the clear.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from tests.homeserver import DEFAULT_PASSWORD, Homeserver, fresh_name
from tests.matrix_crypto_people import MEGOLM, EncryptedPerson
from tests.matrix_people import JsonDict, Person, q

pytest_plugins = ("tests.synapse_fixtures",)
pytestmark = pytest.mark.asyncio(loop_scope="session")

WITHIN = 10


@dataclass
class Crowd:
    """Encrypting people for one test, all closed when it ends (the Homeserver does not track them)."""

    homeserver: Homeserver
    people: list[EncryptedPerson] = field(default_factory=list)

    async def person(self, prefix: str) -> tuple[Person, EncryptedPerson]:
        """A fresh user: the plain Person (the server's view) and the EncryptedPerson on the same device."""
        plain = await self.homeserver.register(fresh_name(prefix), exempt=True)
        return plain, self._keep(await EncryptedPerson.create(plain))

    async def new_device(self, user_id: str) -> EncryptedPerson:
        return self._keep(await EncryptedPerson.log_in(self.homeserver.url, user_id, DEFAULT_PASSWORD))

    def _keep(self, person: EncryptedPerson) -> EncryptedPerson:
        self.people.append(person)
        return person

    async def close(self) -> None:
        for person in self.people:
            await person.close()
        # A person's sync loop swallows what goes wrong (so one bad event cannot stop it); not here.
        assert not [problem for person in self.people for problem in person.sync_problems]


@pytest_asyncio.fixture(loop_scope="session")
async def crowd(homeserver: Homeserver) -> AsyncIterator[Crowd]:
    people = Crowd(homeserver)
    yield people
    await people.close()


async def encrypted_pair(crowd: Crowd) -> tuple[Person, EncryptedPerson, EncryptedPerson, str]:
    """Ana's encrypted room with Bob in it; also Ana's plain Person, to look at what the server holds."""
    ana_plain, ana = await crowd.person("ana")
    _, bob = await crowd.person("bob")
    room = await ana.create_room(name="Secret", invite=[bob.user_id])
    assert await bob.wait_for_invite(within=WITHIN) == room
    await bob.join(room)
    return ana_plain, ana, bob, room


def by_id(events: list[JsonDict]) -> dict[str, JsonDict]:
    return {event["event_id"]: event for event in events}


async def eventually(check: Callable[[], bool], within: float = WITHIN) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s"
        await asyncio.sleep(0.1)


async def test_a_text_arrives_decrypted_and_the_server_sees_only_ciphertext(crowd: Crowd) -> None:
    ana_plain, ana, bob, room = await encrypted_pair(crowd)
    assert await ana_plain.room_state(room, "m.room.encryption") == {"algorithm": MEGOLM}
    secret = "the banner is in the blue van"
    sent = await ana.send_text(room, secret)

    assert await bob.wait_for_text(room, ana.user_id, r"blue van$", within=WITHIN) == secret
    read = by_id(await bob.messages(room))[sent]
    assert (read["type"], read["content"], read["encrypted"]) == ("m.room.message", {"msgtype": "m.text",
                                                                                       "body": secret}, True)
    assert read["sender"] == ana.user_id and "undecryptable" not in read
    assert read["sender_trust"] == "unverified"  # Bob never verified Ana's device, and still reads her
    assert by_id(await ana.messages(room))[sent]["sender_trust"] == "verified"  # her own device
    await eventually(lambda: by_id(bob.received(room)).get(sent, {}).get("encrypted") is True)

    on_server = await ana_plain.messages(room)
    wire = by_id(on_server)[sent]
    assert wire["type"] == "m.room.encrypted" and wire["content"]["algorithm"] == MEGOLM
    assert wire["content"]["session_id"] == read["session_id"]
    assert "blue van" not in json.dumps(on_server)


async def test_reactions_and_edits_are_encrypted_with_relations_in_the_clear(crowd: Crowd) -> None:
    ana_plain, ana, bob, room = await encrypted_pair(crowd)
    question = await ana.send_text(room, "who brings the banner?")
    await bob.wait_for_text(room, ana.user_id, "banner", within=WITHIN)
    answer = await bob.send_text(room, "me, on Tuesday")
    reaction = await bob.react(room, question, "👍")
    edit = await bob.edit(room, answer, "me, on Wednesday")

    await ana.wait_for_text(room, bob.user_id, r"^me, on Wednesday$", within=WITHIN)
    read = by_id(await ana.messages(room))
    annotation = {"rel_type": "m.annotation", "event_id": question, "key": "👍"}
    replacement = {"rel_type": "m.replace", "event_id": answer}
    assert (read[reaction]["type"], read[reaction]["encrypted"]) == ("m.reaction", True)
    assert read[reaction]["content"]["m.relates_to"] == annotation
    assert read[edit]["content"]["m.relates_to"] == replacement
    assert read[edit]["content"]["m.new_content"] == {"msgtype": "m.text", "body": "me, on Wednesday"}
    assert read[answer]["current_content"]["body"] == "me, on Wednesday"
    assert await ana.texts_from(room, bob.user_id) == ["me, on Wednesday"]

    on_server = await ana_plain.messages(room)
    wire = by_id(on_server)
    assert wire[reaction]["type"] == wire[edit]["type"] == "m.room.encrypted"
    assert wire[reaction]["content"]["m.relates_to"] == annotation
    assert wire[edit]["content"]["m.relates_to"] == replacement
    assert "Wednesday" not in json.dumps(on_server) and "Tuesday" not in json.dumps(on_server)

    redaction = await bob.redact(room, reaction)
    after = by_id(await ana_plain.messages(room))
    assert after[redaction]["type"] == "m.room.redaction"  # never encrypted: the server must act on it
    assert "undecryptable" not in by_id(await ana.messages(room))[reaction]  # redacted, nothing left to decrypt


async def test_a_new_device_reads_what_is_sent_after_it_appeared(crowd: Crowd) -> None:
    _, ana, bob, room = await encrypted_pair(crowd)
    before = await ana.send_text(room, "before the new phone")
    await bob.wait_for_text(room, ana.user_id, "^before", within=WITHIN)

    phone = await crowd.new_device(bob.user_id)
    assert phone.user_id == bob.user_id and phone.device_id != bob.device_id
    assert phone.device_keys()[1] != bob.device_keys()[1]
    await ana.send_text(room, "after the new phone")
    assert await phone.wait_for_text(room, ana.user_id, "^after", within=WITHIN) == "after the new phone"
    assert await bob.wait_for_text(room, ana.user_id, "^after", within=WITHIN) == "after the new phone"
    known = await ana.crypto_store.get_device(bob.user_id, phone.device_id)
    assert known is not None and known.signing_key == phone.device_keys()[1]

    # The older session never went to the phone (no key backup here), until the phone asks Ana for it.
    assert by_id(await phone.messages(room))[before]["undecryptable"] is True
    assert await phone.request_keys(room, before, within=WITHIN), "Ana did not answer a member's key request"
    assert by_id(await phone.messages(room))[before]["content"]["body"] == "before the new phone"


async def test_an_undecryptable_text_stays_so_until_its_key_is_shared(crowd: Crowd) -> None:
    ana_plain, ana, bob, room = await encrypted_pair(crowd)
    await ana.send_text(room, "readable")
    await bob.wait_for_text(room, ana.user_id, "^readable$", within=WITHIN)

    hidden = await ana.send_undecryptable(room, "nobody reads this yet")
    read = by_id(await bob.messages(room))[hidden]
    assert read["type"] == "m.room.encrypted" and read["undecryptable"] is True
    assert read["decryption_error"].startswith("SessionNotFound")
    assert "nobody reads" not in json.dumps(await ana_plain.messages(room))
    assert not await bob.request_keys(room, hidden, within=1.5), "a withheld session was handed out on request"

    await ana.share_withheld(room)
    assert await bob.wait_for_text(room, ana.user_id, "^nobody reads", within=WITHIN) == "nobody reads this yet"
    # What the sync loop kept is decrypted too, once the key came.
    await eventually(lambda: by_id(bob.received(room)).get(hidden, {}).get("encrypted") is True)
    assert await ana.wait_for_text(room, ana.user_id, "^nobody reads", within=WITHIN) == "nobody reads this yet"


async def test_a_direct_room_is_encrypted_the_way_element_makes_one(crowd: Crowd) -> None:
    ana_plain, ana = await crowd.person("ana")
    _, bob = await crowd.person("bob")
    making = asyncio.create_task(ana.direct_room(bob.user_id, within=WITHIN))
    room = await bob.wait_for_invite(within=WITHIN)
    await bob.join(room)
    assert await making == room

    assert await ana_plain.room_state(room, "m.room.encryption") == {"algorithm": MEGOLM}
    history = await ana_plain.messages(room)
    invites = [event for event in history if event["type"] == "m.room.member"
               and event["content"].get("membership") == "invite" and event["state_key"] == bob.user_id]
    assert [invite["content"].get("is_direct") for invite in invites] == [True]
    assert (await ana_plain.room_state(room, "m.room.join_rules"))["join_rule"] == "invite"
    # trusted_private_chat: the invitee gets the creator's power (room v12 names them an additional creator).
    create = await ana_plain.room_state(room, "m.room.create")
    levels = await ana_plain.room_state(room, "m.room.power_levels")
    assert bob.user_id in create.get("additional_creators", []) or levels["users"].get(bob.user_id) == 100
    direct = await ana_plain.request("GET", f"/user/{q(ana.user_id)}/account_data/m.direct")
    assert direct == {bob.user_id: [room]}
    await bob.send_text(room, "hi Ana")
    assert await ana.wait_for_text(room, bob.user_id, "^hi Ana$", within=WITHIN) == "hi Ana"
    reply = await ana.send_text(room, "hi Bob")
    assert by_id(await ana_plain.messages(room))[reply]["type"] == "m.room.encrypted"

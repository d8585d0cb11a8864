"""MatrixTransport.scrub against a real Synapse: a rejected letter's text must be gone from the room's history.

What a moderator's client can fetch is checked with plain HTTP (tests/matrix_people.py), not with nio, so the
test does not share the transport's assumptions about what Synapse keeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from nio import ErrorResponse

from bot.networks.matrix import MatrixSettings
from bot.transports.matrix import SCRUB_REASON, MatrixTransport
from handlers.events import Action, Event, OutgoingMessage, RemoteRef
from handlers.ports import DeliveryError
from tests.fakes import MemoryState
from tests.homeserver import Homeserver, fresh_name
from tests.matrix_people import Person, is_edit, q, relation

pytest_plugins = ("tests.synapse_fixtures",)
pytestmark = pytest.mark.asyncio(loop_scope="session")

# Markers rather than prose: HTML escaping in formatted_body cannot hide them from a plain substring search.
ORIGINAL = "ORIGINAL-text-kharkiv-5b1e"
FIRST_EDIT = "FIRST-edit-text-odesa-93c4"
SECOND_EDIT = "SECOND-edit-text-lviv-e07a"
OLD_TEXTS = (ORIGINAL, FIRST_EDIT, SECOND_EDIT)
REMOVED = "The text of this letter was removed."
ACTIONS = (Action("✅ approve", "approve:1", "✅"), Action("❌ reject", "reject:1", "❌"))


async def ignore(event: Event) -> None:
    """Nothing but the transport's own calls is under test; what it hears is of no interest."""


@dataclass
class Scene:
    transport: MatrixTransport
    bot_user: str
    mods: str
    mo: Person


async def make_scene(homeserver: Homeserver, tmp_path: Path) -> Scene:
    bot = await homeserver.register(fresh_name("scrub-relay"), exempt=True)
    mo = await homeserver.register(fresh_name("scrub-mo"), displayname="Mo")
    mods = await mo.create_room(name="Moderators", invite=[bot.user_id])
    await bot.close()  # the transport logs in by itself, with its own device
    settings = MatrixSettings(
        homeserver=homeserver.url, user=bot.user_id, password=bot.password, access_token=None, moderation_room=mods
    )
    transport = MatrixTransport(settings, MemoryState(), tmp_path / "matrix-store")
    await transport.start(ignore)
    assert transport.moderation_room_id == mods
    return Scene(transport, bot.user_id, mods, mo)


@pytest_asyncio.fixture(loop_scope="session")
async def scene(homeserver: Homeserver, tmp_path: Path) -> AsyncIterator[Scene]:
    made = await make_scene(homeserver, tmp_path)
    try:
        yield made
    finally:
        await made.transport.stop()


def card(chat_id: str, text: str, status: str = "pending") -> OutgoingMessage:
    return OutgoingMessage(chat_id=chat_id, title=f"📨 Letter #1 ({status})", text=text, footer="sender 7")


async def post_and_edit_twice(scene: Scene) -> RemoteRef:
    transport, mods = scene.transport, scene.mods
    ref = await transport.send(replace(card(mods, ORIGINAL), actions=ACTIONS))
    await transport.edit(ref, card(mods, FIRST_EDIT))
    await transport.edit(ref, card(mods, SECOND_EDIT))
    return ref


async def scrub(scene: Scene, ref: RemoteRef) -> None:
    await scene.transport.scrub(ref, card(scene.mods, REMOVED, "rejected by moderator 2"))


async def scrub_as_the_worker_does(scene: Scene, ref: RemoteRef, tries: int = 30) -> None:
    """The transport gives a rate limit back; the outbox worker waits it out and scrubs again, with the same key."""
    message = replace(card(scene.mods, REMOVED, "rejected by moderator 2"), idempotency_key="outbox 7 0 1.0")
    for _try in range(tries):
        try:
            await scene.transport.scrub(ref, message)
            return
        except DeliveryError as error:
            assert error.retryable and error.retry_after is not None, error.reason
            await asyncio.sleep(error.retry_after)
    raise AssertionError(f"the scrub was still refused after {tries} tries")


async def event(person: Person, room_id: str, event_id: str) -> dict[str, Any]:
    return await person.request("GET", f"/rooms/{q(room_id)}/event/{q(event_id)}")


async def whole_history(person: Person, room_id: str) -> list[dict[str, Any]]:
    """Every event of the room the person may see, paginated back to the start: not just the latest page."""
    events: list[dict[str, Any]] = []
    params = {"dir": "b", "limit": "100"}
    while True:
        page = await person.request("GET", f"/rooms/{q(room_id)}/messages", params=params)
        events += page.get("chunk", [])
        if "end" not in page or not page.get("chunk"):
            return events
        params = {**params, "from": page["end"]}


def assert_redacted(found: dict[str, Any]) -> None:
    assert found["content"] == {}, found
    because = found.get("unsigned", {}).get("redacted_because") or found.get("redacted_because")
    assert because is not None, found
    assert because["content"].get("reason") == SCRUB_REASON


async def test_scrub_redacts_the_card_and_its_earlier_edits_leaving_only_the_new_text(scene: Scene) -> None:
    ref = await post_and_edit_twice(scene)
    await scrub(scene, ref)
    mo, mods = scene.mo, scene.mods

    history = await whole_history(mo, mods)
    edits = [e for e in history if e.get("sender") == scene.bot_user and e["type"] == "m.room.message"
             and e["event_id"] != ref.message_id and (is_edit(e) or not e["content"])]
    # A redacted edit loses its m.relates_to (room v12 keeps no content): the scrubbing edit alone still is one.
    scrubbing = [e for e in edits if is_edit(e)]
    earlier = [e for e in edits if not is_edit(e)]
    assert len(scrubbing) == 1 and relation(scrubbing[0])["event_id"] == ref.message_id
    assert len(earlier) == 2

    for event_id in (ref.message_id, *(e["event_id"] for e in earlier)):
        assert_redacted(await event(mo, mods, event_id))

    kept = await event(mo, mods, scrubbing[0]["event_id"])
    assert REMOVED in kept["content"]["m.new_content"]["body"]
    assert REMOVED in kept["content"]["m.new_content"]["formatted_body"]
    assert "rejected by moderator 2" in kept["content"]["m.new_content"]["body"]
    assert not [old for old in OLD_TEXTS if old in json.dumps(kept, ensure_ascii=False)]

    seen = json.dumps(await whole_history(mo, mods), ensure_ascii=False)
    assert not [old for old in OLD_TEXTS if old in seen]
    # Reactions carry no letter text, so they are left alone.
    reactions = [e for e in history if e["type"] == "m.reaction" and e.get("sender") == scene.bot_user]
    assert {relation(e)["key"] for e in reactions} == {"✅", "❌"}


async def test_a_scrub_cut_off_by_rate_limits_is_finished_by_its_retries(scene: Scene, homeserver: Homeserver) -> None:
    ref = await post_and_edit_twice(scene)
    # From here on one event at a time, two a second: each redaction right after another event gets a 429.
    admin = await homeserver.register(fresh_name("scrub-admin"), admin=True)
    path = f"/_synapse/admin/v1/users/{q(scene.bot_user)}/override_ratelimit"
    await admin.request("POST", path, {"messages_per_second": 2, "burst_count": 1})
    refused = record_refusals(scene.transport, "room_redact")

    await scrub_as_the_worker_does(scene, ref)

    assert refused, "no redaction was rate limited: this test would prove nothing"
    assert {error.status_code for error in refused} == {"M_LIMIT_EXCEEDED"}
    assert_redacted(await event(scene.mo, scene.mods, ref.message_id))
    seen = json.dumps(await whole_history(scene.mo, scene.mods), ensure_ascii=False)
    assert not [old for old in OLD_TEXTS if old in seen]


def record_refusals(transport: MatrixTransport, method: str) -> list[ErrorResponse]:
    """Wrap one of the real client's methods to see the error answers the transport got (and then retried)."""
    refusals: list[ErrorResponse] = []
    real: Callable[..., Awaitable[Any]] = getattr(transport.client, method)

    async def recording(*args: Any, **kwargs: Any) -> Any:
        response = await real(*args, **kwargs)
        if isinstance(response, ErrorResponse):
            refusals.append(response)
        return response

    setattr(transport.client, method, recording)
    return refusals


async def test_a_cards_reactions_are_its_actions_symbols_whatever_the_labels_say(scene: Scene) -> None:
    """A translation may drop the emoji from a label ("Aprobar"): the reaction is the action's symbol."""
    actions = (Action("Aprobar", "approve:1", "✅"), Action("Rechazar", "reject:1", "❌"))
    ref = await scene.transport.send(replace(card(scene.mods, "Una carta"), actions=actions))
    reactions = [event for event in await whole_history(scene.mo, scene.mods)
                 if event["type"] == "m.reaction" and relation(event).get("event_id") == ref.message_id]
    assert sorted(relation(event)["key"] for event in reactions) == ["✅", "❌"]

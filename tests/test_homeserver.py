"""The Synapse test harness itself: a real homeserver, and people who use it through plain HTTP."""

from __future__ import annotations

import asyncio

import pytest

from tests.homeserver import Homeserver, fresh_name
from tests.matrix_people import MatrixError, Person, direct_room, q

pytest_plugins = ("tests.synapse_fixtures",)
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def pair(homeserver: Homeserver) -> tuple[Person, Person, str]:
    """Ana's private room with Bob in it (he accepted her invite)."""
    ana = await homeserver.register(fresh_name("ana"))
    bob = await homeserver.register(fresh_name("bob"))
    room = await ana.create_room(name="Harness", invite=[bob.user_id])
    assert await bob.wait_for_invite(within=10) == room
    assert await bob.join(room) == room
    return ana, bob, room


async def test_registered_people_have_tokens_and_devices(homeserver: Homeserver) -> None:
    name = fresh_name("reg")
    person = await homeserver.register(name, password="s3cret")
    assert person.user_id == homeserver.user_id(name) == f"@{name}:relay.test"
    assert person.access_token and person.device_id and person.password == "s3cret"
    assert (await person.request("GET", "/account/whoami"))["user_id"] == person.user_id


async def test_a_taken_name_is_a_matrix_error(homeserver: Homeserver) -> None:
    name = fresh_name("twice")
    await homeserver.register(name)
    with pytest.raises(MatrixError) as caught:
        await homeserver.register(name)
    assert (caught.value.status, caught.value.errcode) == (400, "M_USER_IN_USE")


async def test_people_meet_talk_and_react(homeserver: Homeserver) -> None:
    ana, bob, room = await pair(homeserver)
    assert sorted(await ana.joined_members(room)) == sorted([ana.user_id, bob.user_id])
    hello = await bob.send_text(room, "hello")
    reaction = await ana.react(room, hello, "👍")
    events = {event["event_id"]: event for event in await ana.messages(room)}
    assert events[reaction]["content"]["m.relates_to"] == {"rel_type": "m.annotation", "event_id": hello, "key": "👍"}
    assert await ana.wait_for_text(room, bob.user_id, r"^hel+o$", within=5) == "hello"
    assert await ana.texts_from(room, bob.user_id) == ["hello"]


async def test_messages_resolve_the_latest_edit(homeserver: Homeserver) -> None:
    ana, bob, room = await pair(homeserver)
    first = await bob.send_text(room, "draft")
    await bob.send_text(room, "second")
    await bob.edit(room, first, "better")
    await bob.edit(room, first, "best")
    await ana.edit(room, first, "not Ana's to edit")  # only the sender's own edits count
    events = await ana.messages(room)
    original = next(event for event in events if event["event_id"] == first)
    assert original["content"]["body"] == "draft"
    assert original["current_content"]["body"] == "best"
    assert await ana.texts_from(room, bob.user_id) == ["best", "second"]


async def test_redacted_texts_drop_out(homeserver: Homeserver) -> None:
    ana, bob, room = await pair(homeserver)
    gone = await bob.send_text(room, "oops")
    await bob.send_text(room, "kept")
    await bob.redact(room, gone, reason="typo")
    assert await ana.texts_from(room, bob.user_id) == ["kept"]


async def test_wait_for_text_times_out_showing_recent_texts(homeserver: Homeserver) -> None:
    ana, bob, room = await pair(homeserver)
    await bob.send_text(room, "something else")
    with pytest.raises(AssertionError, match="something else"):
        await ana.wait_for_text(room, bob.user_id, "never said", within=0.5)


async def test_power_levels_and_kick(homeserver: Homeserver) -> None:
    ana, bob, room = await pair(homeserver)
    carol = await homeserver.register(fresh_name("carol"))
    await ana.invite(room, carol.user_id)
    await carol.join(room)
    await ana.set_power_level(room, bob.user_id, 50)
    assert (await ana.room_state(room, "m.room.power_levels"))["users"] == {bob.user_id: 50}
    await bob.kick(room, carol.user_id, reason="test")
    assert carol.user_id not in await ana.joined_members(room)
    member = await ana.room_state(room, "m.room.member", carol.user_id)
    assert (member["membership"], member["reason"]) == ("leave", "test")


async def test_room_version_12_creators_stand_above_power_levels(homeserver: Homeserver) -> None:
    ana, _, room = await pair(homeserver)
    assert (await ana.room_state(room, "m.room.create"))["room_version"] == "12"
    assert ":" not in room  # v12 room ids are a hash of the create event: no server name
    assert ana.user_id not in (await ana.room_state(room, "m.room.power_levels"))["users"]
    with pytest.raises(MatrixError, match=r"must not appear in content\.users"):
        await ana.set_power_level(room, ana.user_id, 100)


async def test_older_room_versions_list_the_creator(homeserver: Homeserver) -> None:
    ana = await homeserver.register(fresh_name("ana"))
    room = await ana.create_room(room_version="10")
    assert room.endswith(":relay.test")
    assert (await ana.room_state(room, "m.room.power_levels"))["users"] == {ana.user_id: 100}


async def test_ban_and_leave(homeserver: Homeserver) -> None:
    ana, bob, room = await pair(homeserver)
    await ana.ban(room, bob.user_id)
    with pytest.raises(MatrixError) as caught:
        await bob.join(room)
    assert caught.value.status == 403
    member = await ana.room_state(room, "m.room.member", bob.user_id)
    assert member["membership"] == "ban"
    await ana.leave(room)
    with pytest.raises(MatrixError) as caught:
        await ana.send_text(room, "gone")
    assert caught.value.status == 403


async def test_direct_room_waits_for_the_bot_to_join(homeserver: Homeserver) -> None:
    ana = await homeserver.register(fresh_name("ana"))
    bot = await homeserver.register(fresh_name("bot"))

    async def bot_accepts() -> None:
        await bot.join(await bot.wait_for_invite(within=10))

    room, _ = await asyncio.gather(direct_room(ana, bot.user_id, within=10), bot_accepts())
    assert sorted(await ana.joined_members(room)) == sorted([ana.user_id, bot.user_id])
    invite = await bot.room_state(room, "m.room.member", bot.user_id)
    assert invite["membership"] == "join"
    direct = await ana.request("GET", f"/user/{q(ana.user_id)}/account_data/m.direct")
    assert direct == {bot.user_id: [room]}


async def test_rc_message_is_synapse_default_unless_exempted(homeserver: Homeserver) -> None:
    ana = await homeserver.register(fresh_name("ana"))
    room = await ana.create_room()
    with pytest.raises(MatrixError) as caught:
        for number in range(30):  # burst 10, then 0.2/s: a 429 comes well before 30
            await _send_once(ana, room, f"burst {number}")
    assert (caught.value.status, caught.value.errcode) == (429, "M_LIMIT_EXCEEDED")
    assert caught.value.retry_after_ms and caught.value.retry_after_ms > 0

    await homeserver.exempt_from_rate_limits(ana.user_id)
    for number in range(30):
        await _send_once(ana, room, f"free {number}")


async def test_exemption_is_recorded(homeserver: Homeserver) -> None:
    ana = await homeserver.register(fresh_name("ana"), exempt=True)
    root = await homeserver.register(fresh_name("root"), admin=True)
    override = await root.request("GET", f"/_synapse/admin/v1/users/{q(ana.user_id)}/override_ratelimit")
    assert override == {"messages_per_second": 0, "burst_count": 0}


async def test_synapse_logs_to_its_file_only(homeserver: Homeserver) -> None:
    assert homeserver.log_path.is_file()
    # The whole file: other tests share this Synapse and may have pushed the start far out of any tail.
    assert "Synapse now listening on TCP port" in homeserver.log_path.read_text(encoding="utf-8", errors="replace")
    assert len(homeserver.log_tail(5).splitlines()) == 5
    assert homeserver.rss_kib()


async def test_restart_keeps_port_users_and_tokens(homeserver: Homeserver) -> None:
    ana, bob, room = await pair(homeserver)
    await bob.send_text(room, "before")
    url, pid = homeserver.url, homeserver.pid
    await homeserver.restart()
    assert homeserver.url == url and homeserver.pid != pid
    assert (await ana.request("GET", "/account/whoami"))["user_id"] == ana.user_id
    again = await homeserver.log_in(bob.user_id, bob.password or "")
    assert again.device_id != bob.device_id
    await again.send_text(room, "after")
    assert await ana.texts_from(room, bob.user_id) == ["before", "after"]


async def _send_once(person: Person, room_id: str, body: str) -> None:
    # No retries: the 429 itself is what is under test here.
    path = f"/rooms/{q(room_id)}/send/m.room.message/{q(fresh_name('txn'))}"
    await person.request("PUT", path, {"msgtype": "m.text", "body": body}, retries=0)

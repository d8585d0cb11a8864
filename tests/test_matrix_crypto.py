"""The Matrix transport's encryption parts that need no homeserver: when encryption is off and why, the size of an
encrypted event, and undecryptable events kept across a restart."""

from __future__ import annotations

import json
import sys
import time

import nio.crypto
import pytest
import vodozemac
from nio import AsyncClient, AsyncClientConfig, MegolmEvent

from bot.transports import matrix_crypto
from bot.transports.matrix import _encrypted_size, _json_size
from bot.transports.matrix_crypto import Undecrypted, encryption_unavailable
from tests.fakes import MemoryState


def test_encryption_is_off_when_asked_or_when_the_e2e_extra_cannot_load(monkeypatch: pytest.MonkeyPatch) -> None:
    assert encryption_unavailable(True) is None
    assert encryption_unavailable(False) == "MATRIX_ENCRYPTION=false"
    monkeypatch.setattr(nio.crypto, "ENCRYPTION_ENABLED", False)
    monkeypatch.setitem(sys.modules, "vodozemac", None)  # what an install without the extra looks like
    reason = encryption_unavailable(True)
    assert reason is not None and "install matrix-nio[e2e]" in reason and "vodozemac" in reason


@pytest.mark.parametrize("text", ["short", "é" * 5_000, '"\\' * 20_000, "✊🏽" * 3_000])
def test_the_size_of_an_encrypted_event_is_never_underestimated(text: str) -> None:
    """Against a real Megolm encryption by vodozemac, with nio's payload and envelope."""
    room_id = "!abcdefghijklmnopqrstuvwx:example.org"
    content = {"msgtype": "m.text", "body": text, "format": "org.matrix.custom.html", "formatted_body": text,
               "m.relates_to": {"rel_type": "m.replace", "event_id": "$" + "e" * 43}}
    session = vodozemac.GroupSession()
    plaintext = json.dumps({"content": content, "type": "m.room.message", "room_id": room_id},
                           ensure_ascii=False, separators=(",", ":"))
    account = vodozemac.Account()
    encrypted = {
        "algorithm": "m.megolm.v1.aes-sha2",
        "sender_key": account.curve25519_key.to_base64(),
        "ciphertext": session.encrypt(plaintext.encode()).to_base64(),
        "session_id": session.session_id,
        "device_id": "ABCDEFGHIJ",
        "m.relates_to": content["m.relates_to"],
    }
    actual = _json_size(encrypted)
    estimate = _encrypted_size(room_id, "m.room.message", content)
    assert actual <= estimate <= actual * 1.02 + 400


def megolm_event(event_id: str) -> MegolmEvent:
    return MegolmEvent.from_dict({
        "type": "m.room.encrypted", "event_id": event_id, "sender": "@ana:example.org",
        "origin_server_ts": int(time.time() * 1000),
        "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA", "device_id": "ANADEVICE0",
                    "sender_key": "k" * 43, "session_id": "s" * 43},
    })


async def test_undecryptable_events_wait_across_a_restart_and_are_answered_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(matrix_crypto, "UNDECRYPTABLE_WAIT", 30.0)
    state = MemoryState()
    # Nothing listens on port 9: the key request fails at once, which is logged and does not lose the event.
    client = AsyncClient("http://127.0.0.1:9", "@relay:example.org", config=AsyncClientConfig(encryption_enabled=False))
    try:
        waiting = Undecrypted(client, state)
        await waiting.add("!dm:example.org", megolm_event("$one"))
        await waiting.add("!dm:example.org", megolm_event("$one"))  # the same event again (a replayed sync)
        assert waiting.count == 1
        assert await waiting.expired() == []

        after_restart = Undecrypted(client, state)
        await after_restart.load()
        assert after_restart.count == 1
        assert await after_restart.expired(now=time.time() + 10) == []
        over = await after_restart.expired(now=time.time() + 31)
        assert [(item.room_id, item.event.event_id) for item in over] == [("!dm:example.org", "$one")]
        assert await after_restart.expired(now=time.time() + 60) == []  # answered once
        assert json.loads(state.values[matrix_crypto.UNDECRYPTED_KEY]) == []
    finally:
        await client.close()


async def test_one_senders_flood_of_unreadable_events_waits_no_more_than_twenty() -> None:
    client = AsyncClient("http://127.0.0.1:9", "@relay:example.org", config=AsyncClientConfig(encryption_enabled=False))
    try:
        waiting = Undecrypted(client, MemoryState())
        accepted = [await waiting.add("!dm:example.org", megolm_event(f"$e{index}")) for index in range(25)]
        assert accepted == [True] * matrix_crypto.MAX_WAITING_PER_SENDER + [False] * 5
        assert waiting.count == matrix_crypto.MAX_WAITING_PER_SENDER
    finally:
        await client.close()

"""The outbox worker against a fake network: parts, retries, deactivation, reports, and what is never sent."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from bot.outbox import RetryPolicy
from bot.pacing import Pacer, Rates
from handlers.common import reply
from handlers.outbox import end_subscription
from handlers.ports import DeliveryError
from tests.conftest import MODS, World


async def approved_letter(world: World, text: str, subscribers: dict[str, str]) -> None:
    for chat_id, kind in subscribers.items():
        await world.ctx.repos.subscriptions.subscribe("telegram", chat_id, kind, f"chat {chat_id}", "en", 0)
    user = world.user("1", name="Secret Sender")
    await world.dispatch(world.message(world.private(user), user, text, limit=0))
    await world.dispatch(world.message(world.mods, world.moderator, "/approve 1"))


async def until_published(world: World, rounds: int = 50) -> None:
    """The outbox sent, and retried a minute later, until the letter's broadcast is over."""
    for _ in range(rounds):
        await world.settle()
        progress = await world.ctx.repos.deliveries.progress(1)
        if progress.total and not progress.open:
            return
        world.clock.advance(60)


async def test_every_subscription_gets_the_letter_once_without_the_sender(world: World) -> None:
    await approved_letter(world, "Hold on, we are with you.", {"-201": "channel", "-202": "group", "55": "private"})
    for chat_id in ("-201", "-202", "55"):
        (posted,) = world.network.in_chat(chat_id)
        assert posted.message.text == "Hold on, we are with you."
        assert posted.message.title == "✊ Letter of solidarity #1"
        assert "Secret" not in posted.full_text and "sender" not in posted.full_text.lower()
    report = world.network.in_chat(MODS)[-1].full_text
    assert report == "#1 delivered to 3 of 3 subscribers."


async def test_long_letter_goes_as_numbered_parts_within_the_limit(world: World) -> None:
    paragraph = "We remember every name. " * 40 + "\n\n"
    text = (paragraph * 12).strip()  # about 11,500 characters
    await approved_letter(world, text, {"-201": "channel"})
    parts = world.network.in_chat("-201")
    assert len(parts) == 3
    assert [p.message.title for p in parts] == [f"✊ Letter of solidarity #1 ({n}/3)" for n in (1, 2, 3)]
    assert all(len(p.full_text) <= 4096 for p in parts)
    assert " ".join(" ".join(p.message.text.split()) for p in parts) == " ".join(text.split())


async def test_blocked_chat_is_deactivated_and_reported(world: World) -> None:
    world.network.gone["55"] = "bot was blocked by the user"
    await approved_letter(world, "hello", {"-201": "channel", "55": "private"})
    subscription = await world.ctx.repos.subscriptions.find("telegram", "55")
    assert subscription is not None and not subscription.active
    assert subscription.deactivated_reason == "bot was blocked by the user"
    report = world.network.in_chat(MODS)[-1].full_text
    assert report.startswith("#1 delivered to 1 of 2 subscribers; 1 deactivated")
    assert "bot was blocked by the user" in report


async def test_retry_after_is_obeyed_and_nothing_is_lost(world: World) -> None:
    world.network.failing["-201"] = [DeliveryError("rate limited", retryable=True, retry_after=30)]
    await approved_letter(world, "hello", {"-201": "channel"})
    state, next_attempt_at = (await world.ctx.repos.deliveries.states_of(1))[0]
    assert state == "queued" and next_attempt_at >= world.clock.now() + 29.9
    assert world.network.in_chat("-201") == []
    await until_published(world)
    assert len(world.network.in_chat("-201")) == 1


async def test_permanent_failure_after_the_retry_budget(world: World) -> None:
    world.outbox.retry = RetryPolicy(max_attempts=3)
    world.network.failing["-201"] = [DeliveryError("Bad Gateway", retryable=True) for _ in range(3)]
    await approved_letter(world, "hello", {"-201": "channel"})
    await until_published(world)
    progress = await world.ctx.repos.deliveries.progress(1)
    assert progress.failed == 1
    assert "1 failed" in world.network.in_chat(MODS)[-1].full_text


async def test_migrated_group_is_followed(world: World) -> None:
    world.network.failing["-202"] = [DeliveryError("migrated", retryable=True, moved_to="-100777")]
    await approved_letter(world, "hello", {"-202": "group"})
    await until_published(world)
    assert len(world.network.in_chat("-100777")) == 1
    assert await world.ctx.repos.subscriptions.find("telegram", "-100777") is not None


async def test_a_crash_mid_letter_resumes_after_the_last_recorded_part(world: World) -> None:
    world.network.failing["-201"] = [DeliveryError("Bad Gateway", retryable=True)]
    await approved_letter(world, ("Paragraph of hope. " * 200 + "\n\n") * 3, {"-201": "channel"})
    world.clock.advance(60)
    jobs = await world.ctx.repos.deliveries.claim_due(world.clock.now(), 10)
    await world.ctx.repos.deliveries.record_part(jobs[0].id, 1, ("41",), world.clock.now())
    # The process dies here: the row stays 'sending' with one part recorded; the next start queues it again.
    await world.ctx.repos.deliveries.recover_in_flight(world.clock.now())
    await until_published(world)
    titles = [p.message.title for p in world.network.in_chat("-201")]
    assert titles == ["✊ Letter of solidarity #1 (2/3)", "✊ Letter of solidarity #1 (3/3)"]


async def test_a_card_is_sent_its_newest_state_once_however_many_changes_came(world: World) -> None:
    """The approval's card edit fails; by its retry the broadcast is over: one edit shows the end, none the
    states in between."""
    world.network.failing[MODS] = [DeliveryError("Bad Gateway", retryable=True)]
    await approved_letter(world, "hello", {"-201": "channel", "-202": "channel"})
    await until_published(world)
    (posted,) = [p for p in world.network.in_chat(MODS) if (p.message.title or "").startswith("📨 Letter #1 ")]
    assert [edit.footer for edit in posted.edits] == ["✅ #1 approved by Mo · delivered to 2 of 2"]
    assert await world.ctx.repos.outbox.waiting() == []


async def test_a_change_and_what_it_says_commit_together_or_not_at_all(world: World) -> None:
    repos, chat = world.ctx.repos, world.private(world.user("1"))
    await repos.subscriptions.subscribe("telegram", "-201", "channel", "A", "en", 0)
    with pytest.raises(RuntimeError):
        async with world.ctx.transaction():
            subscription = await repos.subscriptions.find("telegram", "-201")
            assert subscription is not None
            await end_subscription(world.ctx, subscription.id, "unsubscribed")  # its own transaction: this one
            await reply(world.ctx, chat, "-201 no longer receives letters.")
            raise RuntimeError("the handler fails before the end of its transaction")
    subscription = await repos.subscriptions.find("telegram", "-201")
    assert subscription is not None and subscription.active
    assert await repos.outbox.waiting() == []


class FakeTime:
    """A clock that only moves when the pacer sleeps, recording when each send would go out."""

    def __init__(self) -> None:
        self.now = 0.0

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_pacer_spaces_sends_per_chat_and_globally() -> None:
    time = FakeTime()
    pacer = Pacer(Rates(per_second=10, private_interval=1.0, group_interval=3.0, channel_interval=3.0),
                  clock=lambda: time.now, sleep=time.sleep)
    sent_at = []
    for _ in range(3):
        await pacer.acquire("group", "group")
        sent_at.append(round(time.now, 3))
    assert sent_at == [0.0, 3.0, 6.0]
    await pacer.acquire("person", "private")  # another chat right after: only the global spacing applies
    assert round(time.now, 3) == 6.1
    await pacer.acquire("group", "group")
    assert round(time.now, 3) == 9.0


class Timeline:
    """Simulated time for many concurrent sends: a sleeper wakes `late` seconds after it asked to (as timers
    fire on a busy loop), and time jumps to the next wake-up once every task is waiting."""

    def __init__(self, late: float = 0.0) -> None:
        self.now, self.late = 0.0, late
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def sleep(self, seconds: float) -> None:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds + self.late, next(self._order), woken))
        await woken

    async def run(self, senders: list[asyncio.Task[None]], stall: tuple[int, float] | None = None,
                  sent: list[float] | None = None) -> None:
        """Drive the tasks; `stall` (after this many sends, this many seconds): the loop was blocked."""
        while not all(task.done() for task in senders):
            for _ in range(3):
                await asyncio.sleep(0)
            if stall and sent is not None and len(sent) >= stall[0]:
                self.now += stall[1]
                stall = None
            if self._sleepers:
                when, _, woken = heapq.heappop(self._sleepers)
                self.now = max(self.now, when)
                woken.set_result(None)


def busiest_second(times: list[float]) -> int:
    """The most sends in any one-second window (open at its start), as the platform counts them."""
    times = sorted(times)
    return max(sum(1 for other in times[i:] if other < at + 1.0 - 1e-9) for i, at in enumerate(times))


async def paced_broadcast(time: Timeline, rate: float, sends: int, stall: tuple[int, float] | None = None
                          ) -> list[float]:
    pacer = Pacer(Rates(per_second=rate, private_interval=1.0, group_interval=3.0, channel_interval=3.0),
                  clock=lambda: time.now, sleep=time.sleep)
    chats = iter(range(sends))
    sent: list[float] = []

    async def sender() -> None:  # as the worker's sends in flight: each takes the next chat
        for chat in chats:
            await pacer.acquire(str(chat), "private")
            sent.append(time.now)

    await time.run([asyncio.ensure_future(sender()) for _ in range(64)], stall, sent)
    return sent


async def test_late_timers_do_not_add_up_over_a_broadcast() -> None:
    """Every wake-up 3 ms late (a loop this busy is usual at 1,000/s): 600 sends still take 600 slots."""
    sent = await paced_broadcast(Timeline(late=0.003), rate=30, sends=600)
    assert len(sent) == 600
    assert max(sent) < 600 / 30 + 0.05  # spaced strictly from each send, it was 20.08 s
    assert busiest_second(sent) <= 30


async def test_catching_up_after_a_stall_never_crowds_a_second() -> None:
    """The loop stalls 1.5 s mid-broadcast: the sends that were due go, but never more than a second's worth in
    any second, which is how Telegram counts (30 a second, 1,000 with paid broadcast)."""
    for rate in (29.5, 960.0):
        sent = await paced_broadcast(Timeline(late=0.0005), rate=rate, sends=int(rate * 4), stall=(int(rate), 1.5))
        assert busiest_second(sent) <= round(rate + 0.5), rate
        assert max(sent) < 4 + 1.5 + 0.1, rate  # and the time lost is only the stall's


async def test_with_paid_broadcast_everything_but_letters_keeps_the_free_rate() -> None:
    """Telegram takes 1,000 paid broadcasts a second but still 30 of the rest: receipts and cards keep to that,
    and waiting for it never holds back the letters."""
    time = FakeTime()
    pacer = Pacer(Rates(per_second=100, private_interval=0, group_interval=0, channel_interval=0,
                        unpaid_per_second=2), clock=lambda: time.now, sleep=time.sleep)
    for receipt in range(4):
        await pacer.acquire(f"writer {receipt}", "private")
    assert round(time.now, 3) == 1.5  # 2 a second, not 100
    started = time.now
    for letter in range(10):
        await pacer.acquire(f"subscriber {letter}", "private", paid=True)
    assert round(time.now - started, 3) == 0.1  # only the paid rate's spacing


async def test_a_burst_of_429s_cuts_the_rate_once() -> None:
    """429s from six chats within a third of a second are one crowded moment (the sends were already on their
    way): the rate is cut once. Crowding again a few seconds later cuts it again."""
    time = FakeTime()
    pacer = Pacer(Rates(per_second=100, private_interval=1.0, group_interval=3.0, channel_interval=3.0),
                  clock=lambda: time.now, sleep=time.sleep)
    for chat in range(6):
        pacer.pause(f"chat {chat}", 1)
        time.now += 0.05
    assert 70 <= pacer.rate < 72  # 100 × 0.7, recovering at 5/s; three cuts would be 34
    time.now = 3.0
    pacer.pause("chat 7", 1)
    pacer.pause("chat 8", 1)
    assert pacer.rate < 70 * 0.7 + 15


async def test_retry_after_pauses_only_that_chat() -> None:
    time = FakeTime()
    pacer = Pacer(Rates(per_second=10, private_interval=1.0, group_interval=3.0, channel_interval=3.0),
                  clock=lambda: time.now, sleep=time.sleep)
    pacer.pause("person", 30)
    await pacer.acquire("other", "private")
    assert time.now == 0.0
    await pacer.acquire("person", "private")
    assert time.now == 30.0


async def test_forgetting_idle_chats_while_a_notice_waits_for_its_slot() -> None:
    """A send waiting for its global slot while the worker forgets idle chats between broadcasts."""
    now = [0.0]
    gate = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await gate.wait()  # the send waits here until the test has forgotten its chat
        now[0] += seconds

    pacer = Pacer(Rates(per_second=1, private_interval=1.0, group_interval=3.0, channel_interval=3.0),
                  clock=lambda: now[0], sleep=sleep)
    await pacer.acquire("first", "private")
    waiting = asyncio.ensure_future(pacer.acquire("person", "private"))  # waits for the next global slot
    await asyncio.sleep(0)
    now[0] = 5.0
    pacer.forget_idle()  # the person's own slot is in the past now: dropped while the send still waits
    gate.set()
    await waiting  # and the send goes out, its chat's next slot measured from it
    started = now[0]
    await pacer.acquire("person", "private")
    assert now[0] - started == 1.0

"""Benchmark 4: 100,000 subscriptions. Enqueue time, bytes per delivery row, peak RSS (in a process of its own).

The parent runs `python -m bench.scale --subscriptions N --claims K` and reads the JSON on its last line. The
child inserts the subscriptions with SQL, approves one letter as the bot does (`letters.decide` and the broadcast
queue's `deliveries.queue_for_active`, one delivery row per subscription, in one transaction), then starts the
whole Relay on that database with a fake Telegram network (tests/fakes.py) and unlimited rates, and lets the
worker claim and send the first K deliveries. ru_maxrss covers all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PTB_TIMEDELTA", "1")

from bench.common import (
    LETTER,
    ROOT,
    UNLIMITED,
    Result,
    max_rss_kib,
    n,
    quiet_logging,
    tally_logs,
    temp_dir,
)

GOAL_MIB = 150
MODERATION_CHAT = "-100500"


def vm_kib(field: str = "VmRSS") -> int:
    """VmRSS: resident now; VmHWM: this address space's peak (both KiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def files_size(database: Path) -> int:
    """The database with its WAL and shared-memory files."""
    return sum(path.stat().st_size for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"))
               if path.exists())


async def checkpoint(db: Any) -> None:
    await db.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def measure(subscriptions: int, claims: int, cap: float) -> dict[str, Any]:
    from bot.app import Relay
    from bot.config import Settings
    from storage.db import Database
    from storage.letters import Decision, NewPart
    from storage.repositories import Repositories
    from tests.fakes import FakeNetwork

    figures: dict[str, Any] = {"subscriptions": subscriptions, "rss_kib": {"imports": max_rss_kib()}}
    with temp_dir("relay-bench-4-") as tmp, tally_logs() as tally:
        database = tmp / "relay.db"
        db = await Database.open(database)
        repos = Repositories.over(db)
        now = time.time()
        started = time.perf_counter()
        async with db.transaction() as connection:
            await connection.executemany(
                """INSERT INTO subscriptions (platform, chat_id, kind, title, language, created_at, updated_at)
                   VALUES ('telegram', ?, 'private', NULL, 'en', ?, ?)""",
                ((str(5_000_000_000 + i), now, now) for i in range(subscriptions)),  # a generator: no list in RSS
            )
        figures["insert_s"] = time.perf_counter() - started
        sender = await repos.senders.ensure("telegram", "42", "42", "en", now)
        letter = await repos.letters.start_letter(sender.id, NewPart("telegram", "42", "1", LETTER, len(LETTER), now))
        await repos.letters.mark_announced(letter.id, now)
        await checkpoint(db)
        size_before = files_size(database)
        figures["rss_kib"]["before_enqueue"] = max_rss_kib()

        decision = Decision(letter.id, "approve", "telegram", "900", "Mo", None, time.time())
        started = time.perf_counter()
        async with db.transaction():
            assert await repos.letters.decide(letter.id, decision)
            await repos.deliveries.queue_for_active(letter.id, decision.decided_at)
        figures["enqueue_s"] = time.perf_counter() - started
        figures["rss_kib"]["after_enqueue"] = max_rss_kib()
        figures["wal_growth"] = files_size(database) - size_before
        (rows,) = await db.fetchone("SELECT COUNT(*) FROM deliveries WHERE letter_id = ?", (letter.id,))
        await checkpoint(db)
        figures["rows"] = rows
        figures["bytes_per_row"] = (files_size(database) - size_before) / max(rows, 1)
        figures["database_bytes"] = files_size(database)
        await db.close()

        fake = FakeNetwork()
        settings = Settings.from_env({
            "TELEGRAM_TOKEN": "123456:BENCH-relay-token",
            "TELEGRAM_MODERATION_CHAT": MODERATION_CHAT,
            "DATABASE": str(database),
            "TRANSLATOR": "none",
        })
        relay = Relay(settings, networks={"telegram": fake}, rates={"telegram": UNLIMITED})
        started = time.perf_counter()
        await relay.start()
        figures["start_s"] = time.perf_counter() - started
        first_at = None
        sent = 0
        deadline = time.monotonic() + cap
        try:
            while time.monotonic() < deadline:
                # Count and forget what the fake recorded: its list is the harness's memory, not the bot's.
                sent += sum(1 for posted in fake.posted if posted.ref.chat_id != MODERATION_CHAT)
                fake.posted.clear()
                if sent and first_at is None:
                    first_at = time.perf_counter()
                if sent >= claims:
                    break
                await asyncio.sleep(0.02)
            figures["claim_s"] = time.perf_counter() - started
            figures["first_s"] = None if first_at is None else first_at - started
            figures["sent"] = sent
            figures["rss_kib"]["while_sending"] = vm_kib("VmRSS")
        finally:
            await relay.stop()
        figures["rss_kib"]["ru_maxrss"] = max_rss_kib()
        figures["rss_kib"]["hwm"] = vm_kib("VmHWM")
        # The kernel updates these high-water marks lazily; the largest of the three is the peak.
        figures["rss_kib"]["peak"] = max(figures["rss_kib"][key] for key in ("ru_maxrss", "hwm", "while_sending"))
        figures["log"] = tally.top(3, skip=("starting", "stopped", "migration"))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=5_000, help="stop once the worker sent this many")
    parser.add_argument("--cap", type=float, default=60.0, help="or after this many seconds")
    args = parser.parse_args()
    quiet_logging()
    figures = asyncio.run(measure(args.subscriptions, args.claims, args.cap))
    print(json.dumps(figures))
    return 0


async def scale(subscriptions: int, claims: int, cap: float) -> Result:
    name = f"Scale: {n(subscriptions)} subscriptions"
    title = (f"Scale: {n(subscriptions)} subscriptions, one letter enqueued, the worker sends the first {n(claims)} "
             f"(fake network, own process)")
    # Linux carries the parent's peak RSS over fork and exec into the child's ru_maxrss (our parent has PTB,
    # nio and an emulator loaded). A shell that forks the child (it does not exec it: a command follows) gives
    # the child a fresh count, so the peak is its own. VmHWM, the address space's own peak, is the cross-check.
    command = [sys.executable, "-m", "bench.scale", "--subscriptions", str(subscriptions), "--claims", str(claims),
               "--cap", str(cap)]
    process = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", '"$0" "$@"; exit $?', *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    goal = f"≤ {GOAL_MIB} MiB peak RSS"
    if process.returncode != 0:
        return Result(4, name, f"the child process failed (exit {process.returncode})", goal, None, title=title)
    f = json.loads(out.decode().strip().splitlines()[-1])
    rss = f["rss_kib"]
    peak_mib = rss["peak"] / 1024
    sent, claim_s = f["sent"], f["claim_s"]
    lines = [
        ("insert", f"{n(subscriptions)} subscriptions with one executemany: {f['insert_s']:.2f} s "
                   f"({subscriptions / f['insert_s']:,.0f} rows/s)"),
        ("enqueue", f"the decision → {n(f['rows'])} delivery rows in {f['enqueue_s']:.2f} s "
                    f"({f['rows'] / f['enqueue_s']:,.0f} rows/s); the files grew {f['wal_growth'] / 2**20:.1f} MiB "
                    f"before the checkpoint"),
        ("size", f"{f['bytes_per_row']:.0f} bytes per delivery row (database + WAL, after a checkpoint, before vs "
                 f"after); whole database {f['database_bytes'] / 2**20:.1f} MiB"),
        ("worker", f"Relay start {f['start_s']:.2f} s; first delivery after {f['first_s'] or float('nan'):.2f} s; "
                   f"{n(sent)} sent in {claim_s:.1f} s = {sent / claim_s:,.1f} deliveries/s with "
                   f"{n(f['rows'])} rows queued" + ("" if sent >= claims else f" (stopped at the {cap:g} s cap)")),
        ("", f"at that rate the whole broadcast would take {f['rows'] / max(sent / claim_s, 1e-9) / 60:,.0f} min"),
        ("RSS", f"peak {peak_mib:.0f} MiB (ru_maxrss {rss['ru_maxrss'] / 1024:.0f}, VmHWM {rss['hwm'] / 1024:.0f}); "
                f"after imports {rss['imports'] / 1024:.0f}, before enqueue {rss['before_enqueue'] / 1024:.0f}, "
                f"after enqueue {rss['after_enqueue'] / 1024:.0f}, while sending {rss['while_sending'] / 1024:.0f}"),
    ]
    lines += [("bot log", line) for line in f["log"]]
    return Result(
        4, name, f"{peak_mib:.0f} MiB peak RSS", goal, peak_mib <= GOAL_MIB,
        details=(f"enqueue {f['enqueue_s']:.2f} s, {f['bytes_per_row']:.0f} B/row, "
                 f"worker {sent / claim_s:,.1f}/s at {n(f['rows'])} queued"),
        lines=lines, title=title,
    )


if __name__ == "__main__":
    sys.exit(main())

"""Run the benchmarks: `python -m bench [--only 1,3] [--quick]`; a full run also writes bench/latest.txt.

1  Telegram, emulator without limits: 2,000 subscriptions, deliveries/s ÷ a bare PTB send_message loop (≥ 0.9)
2  Telegram, emulator with Telegram's limits: 600 mixed subscriptions, elapsed ÷ 20 s minimum (≤ 1.05, no 429)
3  Matrix, real Synapse: 200 rooms, bot ÷ a bare matrix-nio room_send loop (≥ 0.9)
4  Scale: 100,000 subscriptions: enqueue time, bytes per delivery row, peak RSS in a subprocess (≤ 150 MiB)
5  Retention purge: 100,000 decided letters while a letter arrives every 5 ms: largest intake pause (≤ 100 ms)
6  Flood: 2,000 messages from one sender while 20 others write once: their receipt p99 (< 1 s); 1,500 client-split
   parts of 4,096 characters: a part's cost, part 1,500 ÷ part 100 (≈ 1)
7  Matrix, real Synapse: one letter to 100 end-to-end encrypted rooms ÷ the same to 100 unencrypted rooms (≤ 1.5)
8  Email, real Dovecot: one letter to 300 subscribers at 50 mails/s ÷ the 6 s minimum (≤ 1.1, each once); 200
   letters mailed at once: letters/s, receipt p50/p95; the corpus parsed as plain, HTML, quoted-printable mail
9  Media: one photo letter to 2,000 Telegram subscriptions and to 100 Matrix rooms (real Synapse): uploads (= 1
   on each), photo ÷ text deliveries/s; cleaning a 12 and a 1 megapixel JPEG: milliseconds, output ÷ input size

Benchmarks report; they never fail on speed. The exit status is 1 only when a benchmark could not run (an
error), never for a missed goal.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable

os.environ.setdefault("PTB_TIMEDELTA", "1")

from bench.common import ROOT, Result, print_block, quiet_logging, summary

NAMES = {
    1: "Telegram, no limits",
    2: "Telegram, real limits",
    3: "Matrix, real Synapse",
    4: "Scale: 100,000 subscriptions",
    5: "Retention purge: 100,000 decided letters",
    6: "Flood: fairness and joining",
    7: "Matrix, encrypted rooms",
    8: "Email, real Dovecot",
    9: "Media: one photo letter",
}
GOALS = {1: "≥ 0.9", 2: "≤ 1.05 with 0 × 429", 3: "≥ 0.9", 4: "≤ 150 MiB peak RSS", 5: "largest intake pause ≤ 100 ms",
         6: "others' receipt p99 < 1 s; part 1,500 ÷ part 100 ≈ 1 (≤ 1.5)", 7: "≤ 1.5 ×",
         8: "≤ 1.1 × N ÷ 50/s, each subscriber once", 9: "uploads = 1 on each network"}


def benchmark(number: int, quick: bool) -> Callable[[], Awaitable[Result]]:
    """The benchmark's coroutine function, with its sizes (--quick: a smoke check, minutes → seconds)."""
    if number == 1:
        from bench.telegram import no_limits

        return lambda: no_limits(300 if quick else 2000)
    if number == 2:
        from bench.telegram import with_limits

        return lambda: with_limits(*((60, 15, 15) if quick else (400, 100, 100)))
    if number == 3:
        from bench.matrix import rooms

        return lambda: rooms(30 if quick else 200)
    if number == 4:
        from bench.scale import scale

        return lambda: scale(*((10_000, 1_000, 15.0) if quick else (100_000, 5_000, 60.0)))
    if number == 5:
        from bench.purge import retention

        return lambda: retention(10_000 if quick else 100_000)
    if number == 6:
        from bench.flood import flood

        # Time limits bound a bot that handles the flood one message after another, or whose cost per part
        # grows with the letter (minutes otherwise): what did not happen by then is reported as such.
        return lambda: flood(*((300, 5, 300, 20.0, 20.0) if quick else (2000, 20, 1500, 45.0, 50.0)))
    if number == 7:
        from bench.encryption import encrypted_rooms

        return lambda: encrypted_rooms(20 if quick else 100)
    if number == 8:
        from bench.email import email_network

        return lambda: email_network(*((40, 20, 5) if quick else (300, 200, 50)))
    if number == 9:
        from bench.media import media_letters

        return lambda: media_letters(*((200, 15) if quick else (2000, 100)))
    raise ValueError(number)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(map(str, NAMES)),
                        help="comma-separated benchmark numbers (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke check (< 1 minute)")
    args = parser.parse_args(argv)
    try:
        args.numbers = sorted({int(part) for part in args.only.split(",") if part.strip()})
    except ValueError:
        parser.error(f"--only takes numbers like 1,3, got {args.only!r}")
    if not args.numbers or any(number not in NAMES for number in args.numbers):
        parser.error(f"--only takes numbers among {sorted(NAMES)}, got {args.only!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    quiet_logging()
    started = time.monotonic()
    results: list[Result] = []
    broken = 0
    for number in args.numbers:
        print(f"\n… [{number}] {NAMES[number]}{' (quick)' if args.quick else ''}", flush=True)
        began, load = time.monotonic(), os.getloadavg()[0]
        try:
            result = asyncio.run(benchmark(number, args.quick)())
        except Exception as error:
            traceback.print_exc()
            broken += 1
            result = Result(number, NAMES[number], f"could not run: {type(error).__name__}: {error}",
                            GOALS[number], None)
        result.lines.append(("took", f"{time.monotonic() - began:.0f} s (set-up included); load average before it "
                                     f"{load:.2f}, after {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"))
        print_block(result)
        results.append(result)
    table = summary(results, args.quick, time.monotonic() - started)
    print("\n" + table)
    if args.quick or len(results) < len(NAMES):
        # A smoke check or a subset would replace the last full figures with partial or incomparable ones.
        print("(bench/latest.txt keeps the last full run: only `python -m bench` without --only/--quick writes it)")
    else:
        (ROOT / "bench" / "latest.txt").write_text(table + "\n", encoding="utf-8")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

"""What every benchmark shares: its result, the printed block, waiting for a broadcast, and the bot's log tally."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("PTB_TIMEDELTA", "1")

from bot.pacing import Rates
from storage.deliveries import Progress
from storage.repositories import Repositories

ROOT = Path(__file__).resolve().parents[1]
# No pacing at all: the engine's own overhead is what benchmark 1 and 4 look at.
UNLIMITED = Rates(per_second=1e9, private_interval=0.0, group_interval=0.0, channel_interval=0.0)
LETTER = (
    "From the dock workers of Valparaíso to everyone holding the line: we read about your strike every morning, "
    "and every morning we are prouder. Whatever they tell you, you are not alone. Our union voted yesterday to "
    "send what we can, and more will follow. Hold on, comrades ✊\n\nWith love, Sindicato N°1"
)


@dataclass
class Result:
    number: int
    name: str  # short, for the summary table
    headline: str  # the figure the goal is about, e.g. "0.93 × bare PTB loop"
    goal: str
    met: bool | None  # None: not measured (an error)
    details: str = ""  # absolute figures, short, for the summary table
    lines: list[tuple[str, str]] = field(default_factory=list)  # the block: (label, text)
    title: str = ""  # the block's heading; the name when empty

    @property
    def verdict(self) -> str:
        return {True: "MET", False: "MISSED", None: "NOT MEASURED"}[self.met]


def print_block(result: Result) -> None:
    print(f"\n== [{result.number}] {result.title or result.name}", flush=True)
    width = max([len(label) for label, _ in result.lines] + [6])
    for label, text in result.lines:
        print(f"   {label:<{width}}  {text}")
    print(f"   {'result':<{width}}  {result.headline}")
    print(f"   {'goal':<{width}}  {result.goal}  →  {result.verdict}", flush=True)


def summary(results: list[Result], quick: bool, seconds: float) -> str:
    rows = [("#", "benchmark", "figure", "goal", "met", "details")]
    rows += [(str(r.number), r.name, r.headline, r.goal, r.verdict, r.details) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [f"Solidarity Relay benchmarks, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
             + (" (--quick: smaller sizes, figures not comparable)" if quick else "") + f", {seconds:.0f} s"]
    for row in rows:
        lines.append("  ".join(cell.ljust(widths[i]) if i < 5 else cell for i, cell in enumerate(row)).rstrip())
    lines.append(f"machine: {machine()}")
    lines.append(f"engine: {engine_version()}")
    return "\n".join(lines)


def engine_version() -> str:
    """The commit measured, and whether the working tree had changes on top of it (others edit meanwhile)."""
    try:
        found = subprocess.run(["git", "describe", "--always", "--dirty=+uncommitted changes", "--abbrev=10"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"git {found.stdout.strip() or 'unknown'}"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{model}, {os.cpu_count()} cores ({usable} usable), Python {platform.python_version()} "
            f"({platform.python_implementation()}), {platform.system()} {platform.release()}")


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def n(value: float) -> str:
    """12,345"""
    return f"{value:,.0f}"


class LogTally(logging.Handler):
    """Counts the bot's log records by their message template, so a block can say what happened (retries...)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[(record.levelname, str(record.msg))] += 1

    def top(self, limit: int = 4, minimum_level: int = logging.INFO, skip: tuple[str, ...] = ()) -> list[str]:
        found = [(count, level, msg) for (level, msg), count in self.counts.items()
                 if logging.getLevelName(level) >= minimum_level and not any(s in msg for s in skip)]
        return [f"{count}× {level} {msg!r}" for count, level, msg in sorted(found, reverse=True)[:limit]]


@contextmanager
def tally_logs() -> Iterator[LogTally]:
    """Count the bot's INFO+ records (shown: WARNING+ only, on stderr) for the duration of one benchmark."""
    tally = LogTally()
    loggers = [logging.getLogger(name) for name in ("bot", "handlers", "storage")]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.addHandler(tally)
    try:
        yield tally
    finally:
        for logger, level in zip(loggers, previous, strict=True):
            logger.removeHandler(tally)
            logger.setLevel(level)


def quiet_logging() -> None:
    """Warnings and errors on stderr; the bot's INFO lines go to the tally only."""
    logging.basicConfig(level=logging.WARNING, format="   log: %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)


async def wait_broadcast(repos: Repositories, letter_id: int, total: int, within: float) -> Progress:
    """Poll until all `total` deliveries of the letter are closed (sent, dropped or failed), or `within` passes.

    The poll is coarse on purpose (it shares the bot's one connection); times come from the rows themselves.
    """
    deadline = time.monotonic() + within
    while True:
        progress = await repos.deliveries.progress(letter_id)
        if (progress.total >= total and progress.open == 0) or time.monotonic() > deadline:
            return progress
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class BroadcastTimes:
    decided_at: float  # the approval, as the bot recorded it (wall clock)
    first_sent: float | None
    last_sent: float | None
    retried: int  # deliveries that needed more than one attempt
    by_kind: dict[str, float]  # chat kind → when its last delivery was recorded as sent
    retry_reasons: dict[str, int]  # "kind: last error" → deliveries that needed more than one attempt

    @property
    def elapsed(self) -> float | None:
        return None if self.last_sent is None else self.last_sent - self.decided_at


async def broadcast_times(repos: Repositories, letter_id: int) -> BroadcastTimes:
    letter = await repos.letters.get(letter_id)
    assert letter is not None and letter.decided_at is not None, f"letter {letter_id} was not decided"
    sent = await repos.deliveries.sent_times(letter_id)
    return BroadcastTimes(letter.decided_at, sent.first, sent.last, sent.retried,
                          {kind: at - letter.decided_at for kind, at in sent.last_by_kind.items()}, sent.retry_reasons)


def retries_text(times: BroadcastTimes) -> str:
    if not times.retried:
        return "retried deliveries: 0"
    reasons = "; ".join(f"{count}× {reason}" for reason, count in times.retry_reasons.items())
    return f"retried deliveries: {times.retried} ({reasons})"


def progress_text(progress: Progress) -> str:
    text = f"{n(progress.sent)} sent of {n(progress.total)}"
    if progress.failed or progress.dropped or progress.open:
        text += f" ({progress.failed} failed, {progress.dropped} dropped, {progress.open} still open)"
    return text

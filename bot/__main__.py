"""python -m bot: read settings, set up logging, run until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from dotenv import dotenv_values

from bot.config import ConfigError, Settings

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Solidarity Relay: letters of solidarity.")
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env; the environment wins)")
    parser.add_argument("--check", action="store_true", help="validate settings, reach every network, and exit")
    args = parser.parse_args(argv)

    env = _environment(Path(args.env_file))
    try:
        settings = Settings.from_env(env)
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG

    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request URL at INFO, and Bot API URLs contain the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # PTB's RetryAfter otherwise warns about its int retry_after on every 429.
    os.environ.setdefault("PTB_TIMEDELTA", "1")

    from bot import app  # after logging, so import-time messages are formatted

    if args.check:
        return asyncio.run(app.check(settings))
    try:
        return asyncio.run(app.run(settings))
    except KeyboardInterrupt:
        return 0
    except app.StartupError as error:
        logging.getLogger("bot").error("%s", error)
        return 1


def _environment(env_file: Path) -> dict[str, str]:
    values = {key: value for key, value in dotenv_values(env_file).items() if value is not None}
    values.update(os.environ)
    return values


if __name__ == "__main__":
    sys.exit(main())

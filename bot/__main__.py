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
from bot.logs import Redactor, setup_logging
from handlers.loggable import log_failure

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Solidarity Relay: letters of solidarity.")
    parser.add_argument("--env-file", default=".env", help="settings file (default: .env; the environment wins)")
    parser.add_argument("--check", action="store_true", help="validate settings, reach every network, and exit")
    args = parser.parse_args(argv)
    # The database, the Matrix store (keys and sessions) and media hold letters and secrets: what the bot
    # writes is for its own user only (0600 files, 0700 directories), whatever umask it was started with.
    os.umask(0o077)

    env = _environment(Path(args.env_file))
    try:
        settings = Settings.from_env(env)
    except ConfigError as error:
        # Before logging is set up; the patterns still catch a token quoted in a value.
        print(f"configuration error: {Redactor().redact(str(error))}", file=sys.stderr)
        return EXIT_CONFIG

    setup_logging(settings)
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
    except Exception as error:
        # Logged rather than left to the interpreter, whose traceback would bypass the redaction; the summary
        # only at CRITICAL, since the message may quote a letter or a chat id.
        log = logging.getLogger("bot")
        log_failure(log, "the bot stopped on an unexpected error (LOG_LEVEL=DEBUG shows the traceback)", error,
                    logging.CRITICAL)
        return 1


def _environment(env_file: Path) -> dict[str, str]:
    values = {key: value for key, value in dotenv_values(env_file).items() if value is not None}
    values.update(os.environ)
    return values


if __name__ == "__main__":
    sys.exit(main())

"""The bot's files are its operator's alone: the data folder 0700, every file the bot writes in it 0600.

Modes are set when a file is created (whatever the umask) and tightened at start-up when found looser, so a
database copied in with `cp`, or left by an older version, does not stay readable by every local user.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
# SQLite's files beside the database: WAL, shared memory, rollback journal.
SIDECARS = ("-wal", "-shm", "-journal")


MEDIA_FOLDER = "media"  # the letters' media, by content hash


def media_folder(database: Path) -> Path:
    return database.parent / MEDIA_FOLDER


def key_path(database: Path) -> Path:
    return database.parent / "ban.key"


def prepare(database: Path) -> None:
    """Create the data folder and an empty database file with private modes, before SQLite creates them."""
    if str(database) == ":memory:":
        return
    database.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    descriptor = os.open(database, os.O_RDWR | os.O_CREAT, FILE_MODE)
    os.close(descriptor)
    tighten(database)


def tighten(database: Path, folders: Iterable[str] = ()) -> int:
    """Take group and other permissions off everything the bot keeps (the database, its key, and the `folders`
    of the data folder that networks keep their own files in); one log line when anything changed."""
    if str(database) == ":memory:":
        return 0
    changed = 0
    folder = database.parent
    if folder.resolve() != Path.cwd().resolve():  # never lock the operator out of a working directory
        changed += _restrict(folder, DIRECTORY_MODE)
    for path in [database, *(Path(f"{database}{suffix}") for suffix in SIDECARS), key_path(database)]:
        changed += _restrict(path, FILE_MODE)
    for store in (folder / name for name in folders):
        if store.is_dir():
            changed += _restrict_tree(store)
    if changed:
        log.warning("tightened the permissions of %d file(s) under %s: others could read them", changed, folder)
    return changed


def keep_private(folder: Path) -> None:
    """What a library has just created in `folder` (nio's crypto store, with the process's umask), made private
    at once and without a log line: it is new, nobody had the time to read it."""
    _restrict_tree(folder)


def _restrict_tree(folder: Path) -> int:
    changed = _restrict(folder, DIRECTORY_MODE)
    for path in folder.rglob("*"):
        changed += _restrict(path, DIRECTORY_MODE if path.is_dir() else FILE_MODE)
    return changed


def _restrict(path: Path, wanted: int) -> int:
    try:
        mode = stat.S_IMODE(path.lstat().st_mode)
    except FileNotFoundError:
        return 0
    if path.is_symlink() or mode & 0o077 == 0:
        return 0
    path.chmod(mode & ~0o077 & 0o7777 | (wanted & 0o700))
    return 1


class PrivateFile:
    """A small text file only the bot's user can read, replaced atomically so a crash never leaves half of it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def write(self, text: str) -> None:
        self.path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

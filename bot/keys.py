"""The key of the account hash that keeps bans working after the accounts themselves are deleted.

It lives in a file beside the database and never in it: a copy of the database alone (a leaked backup) cannot
be used to test whether a given account was ever banned.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_BYTES = 32


class AccountKey:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "AccountKey(…)"

    @classmethod
    def load_or_create(cls, path: Path) -> AccountKey:
        try:
            key = path.read_bytes()
        except FileNotFoundError:
            key = secrets.token_bytes(KEY_BYTES)
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # O_EXCL: two processes starting at once must not each write a key of their own.
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return cls.load_or_create(path)
            with os.fdopen(descriptor, "wb") as file:
                file.write(key)
                file.flush()
                os.fsync(file.fileno())
        if len(key) != KEY_BYTES:
            raise ValueError(f"{path} is not a key file of {KEY_BYTES} bytes")
        return cls(key)

    def account_hash(self, platform: str, user_id: str) -> str:
        message = f"{platform}\0{user_id}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

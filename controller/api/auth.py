"""Bearer tokens: a JSON file in the data directory (mode 0600) mapping token -> tenant and admin flag."""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ADMIN_TENANT = "admin"


@dataclass(frozen=True)
class Principal:
    tenant: str
    admin: bool

    def can_see(self, tenant: str) -> bool:
        return self.admin or tenant == self.tenant


class LastAdminToken(Exception):
    """Revoking this token would leave no admin token."""


def new_token() -> str:
    """A random bearer token; the prefix keeps it from starting with '-' (command-line friendly)."""
    return "sdn_" + secrets.token_urlsafe(32)


class Tokens(Protocol):
    """What the API needs of a token table: TokenFile (one controller), auth_etcd.EtcdTokens (shared)."""

    created_admin_token: str | None

    def lookup(self, token: str) -> Principal | None: ...
    def admin_token(self) -> str: ...
    def create(self, tenant: str, admin: bool) -> str: ...
    def revoke(self, token: str) -> bool: ...
    def on_revoke(self, listener: Callable[[str], object]) -> None: ...
    def remove_revoke_listener(self, listener: Callable[[str], object]) -> None: ...


class TokenFile:
    """Loaded once, rewritten atomically on change; the first start creates it with one admin token. A change
    is in memory only once it is durable in the file: a failed write (disk full) leaves both as they were."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.created_admin_token: str | None = None
        self._revoke_listeners: list[Callable[[str], object]] = []  # see on_revoke
        if self.path.exists():
            self._tokens: dict[str, Principal] = self._read()
        else:
            token = new_token()
            self._tokens = {token: Principal(ADMIN_TENANT, True)}
            self.created_admin_token = token
            self._write()

    def _read(self) -> dict[str, Principal]:
        data = json.loads(self.path.read_text())
        return {t: Principal(v["tenant"], bool(v.get("admin", False))) for t, v in data["tokens"].items()}

    def _write(self, tokens: dict[str, Principal] | None = None) -> None:
        """Write `tokens` (default: the current table) durably: temp file, fsync, rename, fsync of the
        directory. Raises OSError (full or read-only disk) with the file as it was."""
        tokens = self._tokens if tokens is None else tokens
        tmp = self.path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(
                    {"tokens": {t: {"tenant": p.tenant, "admin": p.admin} for t, p in tokens.items()}},
                    f,
                    indent=2,
                )
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # (a read-only disk) the first error is the one to report
            raise
        dirfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)  # the rename itself is durable
        finally:
            os.close(dirfd)

    def lookup(self, token: str) -> Principal | None:
        return self._tokens.get(token)

    def items(self) -> list[tuple[str, Principal]]:
        return list(self._tokens.items())

    def admin_token(self) -> str:
        return next(t for t, p in self._tokens.items() if p.admin)

    def create(self, tenant: str, admin: bool) -> str:
        with self._lock:
            token = new_token()
            tokens = {**self._tokens, token: Principal(tenant, admin)}
            self._write(tokens)  # memory changes only once the file has it
            self._tokens = tokens
            return token

    def revoke(self, token: str) -> bool:
        """False if unknown; LastAdminToken if it is the only admin token (nobody could administer)."""
        with self._lock:
            if token not in self._tokens:
                return False
            if self._tokens[token].admin and sum(p.admin for p in self._tokens.values()) == 1:
                raise LastAdminToken()
            tokens = {t: p for t, p in self._tokens.items() if t != token}
            self._write(tokens)
            self._tokens = tokens
        for listener in list(self._revoke_listeners):
            listener(token)
        return True

    # --- fair API: the open streams of a revoked token end at once (controller/streams.py) ---

    def on_revoke(self, listener: Callable[[str], object]) -> None:
        """Call `listener(token)` after each revocation (it is already refused by lookup by then)."""
        self._revoke_listeners.append(listener)

    def remove_revoke_listener(self, listener: Callable[[str], object]) -> None:
        if listener in self._revoke_listeners:
            self._revoke_listeners.remove(listener)

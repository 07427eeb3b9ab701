"""Bearer tokens shared by every controller of an etcd deployment (store = "etcd").

Keys `PREFIX/auth/tokens/<sha256 of the token, hex>` hold `{"tenant": ..., "admin": ...}`; a revoked token's
key holds `{"revoked": true}` (a tombstone, so that a controller restarted with the token in its own
tokens.json does not bring it back). Only hashes are stored: whoever reads etcd cannot call the API with
what it finds. Each controller keeps a mirror of the keys, current through an etcd watch, so a lookup is a
dictionary read (no etcd round trip per call, and unknown tokens cost etcd nothing); a token created or
revoked through one controller is known to the others within the watch's delay (milliseconds), and a
revocation ends the token's open streams on every controller (its revoke listeners run where it was seen).

The local tokens.json stays: the first start of each controller creates one admin token there, as with
SQLite, and every token of that file is published (create-if-absent) at start, so the token an operator
reads on any controller's host works on all of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable

from controller.api.auth import LastAdminToken, Principal, TokenFile, new_token
from topology.etcd_store import EtcdStore, StoreUnavailable
from topology.store import HistoryCompacted

log = logging.getLogger(__name__)

#: a watch that broke is opened again after this long
RETRY_S = 0.5


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class EtcdTokens:
    """The TokenFile interface over etcd (see the module's doc)."""

    def __init__(self, store: EtcdStore, local: TokenFile) -> None:
        self.store = store
        self.local = local
        self.prefix = store.prefix + b"auth/tokens/"
        self.created_admin_token = local.created_admin_token
        self._lock = threading.Lock()
        self._mirror: dict[str, Principal | None] = {}  # hash -> principal, None: revoked
        self._seen: dict[str, str] = {}  # hash -> the token, for tokens looked up here (their streams)
        self._revoke_listeners: list[Callable[[str], object]] = []
        self._stopped = threading.Event()
        for token, p in local.items():  # this controller's own tokens work on every controller
            value = json.dumps({"tenant": p.tenant, "admin": p.admin}).encode()
            if store.create_if_absent(self._key(token_hash(token)), value, 0):
                log.info("published a token of %s to etcd (tenant %s)", local.path, p.tenant)
        revision = self._reload()
        self._watcher = threading.Thread(
            target=self._follow, args=(revision + 1,), name="etcd-tokens", daemon=True
        )
        self._watcher.start()

    def _key(self, digest: str) -> bytes:
        return self.prefix + digest.encode()

    def _reload(self) -> int:
        revision, kvs = self.store.range_prefix(self.prefix)
        mirror = {bytes(k[len(self.prefix) :]).decode(): _principal(v) for k, v, _ in kvs}
        with self._lock:
            gone = [h for h, p in self._mirror.items() if p is not None and mirror.get(h) is None]
            self._mirror = mirror
        for digest in gone:
            self._revoked(digest)
        return revision

    def _follow(self, start: int) -> None:
        while not self._stopped.is_set():
            try:
                for _, events in self.store.watch_prefix(self.prefix, start):
                    for key, value in events:
                        digest = key[len(self.prefix) :].decode()
                        p = _principal(value) if value is not None else None
                        with self._lock:
                            was = self._mirror.get(digest)
                            self._mirror[digest] = p
                        if was is not None and p is None:
                            self._revoked(digest)
                return  # closed
            except (StoreUnavailable, HistoryCompacted) as err:
                if self._stopped.is_set() or self.store.closed:
                    return
                log.warning("token watch: %s; reading the tokens again", err)
                time.sleep(RETRY_S)
                try:
                    start = self._reload() + 1
                except StoreUnavailable as again:
                    log.warning("token watch: %s", again)

    def stop(self) -> None:
        self._stopped.set()

    def _revoked(self, digest: str) -> None:
        with self._lock:
            token = self._seen.pop(digest, None)
        if token is not None:
            for listener in list(self._revoke_listeners):
                listener(token)

    # --- the TokenFile interface ---

    def lookup(self, token: str) -> Principal | None:
        digest = token_hash(token)
        p = self._mirror.get(digest)
        if p is not None and digest not in self._seen:
            with self._lock:
                self._seen[digest] = token
        return p

    def admin_token(self) -> str:
        return self.local.admin_token()

    def create(self, tenant: str, admin: bool) -> str:
        token = new_token()
        digest = token_hash(token)
        value = json.dumps({"tenant": tenant, "admin": admin}).encode()
        self.store.put(self._key(digest), value)  # durable in etcd before it is answered
        with self._lock:
            self._mirror[digest] = Principal(tenant, admin)
        return token

    def revoke(self, token: str) -> bool:
        """False if unknown; LastAdminToken if it is the only admin token of the deployment."""
        digest = token_hash(token)
        with self._lock:
            p = self._mirror.get(digest)
            if p is None:
                return False
            if p.admin and sum(1 for q in self._mirror.values() if q is not None and q.admin) == 1:
                raise LastAdminToken()
        self.store.put(self._key(digest), json.dumps({"revoked": True}).encode())
        with self._lock:
            self._mirror[digest] = None
            self._seen.pop(digest, None)
        for listener in list(self._revoke_listeners):
            listener(token)
        return True

    def on_revoke(self, listener: Callable[[str], object]) -> None:
        self._revoke_listeners.append(listener)

    def remove_revoke_listener(self, listener: Callable[[str], object]) -> None:
        if listener in self._revoke_listeners:
            self._revoke_listeners.remove(listener)


def _principal(value: bytes | None) -> Principal | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    if data.get("revoked"):
        return None
    return Principal(str(data["tenant"]), bool(data.get("admin", False)))

"""The model in etcd, for several controllers sharing one topology (store = "etcd"; topology/state_etcd.py
drives it).

Layout under a prefix (default `/sdn/v1/`): `model/<kind>/<id>` holds one record as JSON; `head` is put by
every model write, so its mod revision is the revision of the last model write: the model's revision, and
a write's only compare (optimistic concurrency: the write was validated on the model at that revision, so
it commits only if no other controller wrote since). etcd's own history is the change log: Watch replays
and resumes read it from etcd (or from the recent changes every controller keeps in memory), and etcd's
compaction is what bounds it. A record's `revision` is its key's mod revision (the resource's etag).

The client is synchronous gRPC (grpcio, which the API already uses) over etcd's v3 protocol, with the
message classes aetcd ships: measured here (BENCHMARKS.md) a txn costs the same as through aetcd's asyncio
client and about a third of etcd3gw's HTTP/JSON gateway; it needs no event loop thread, talks TLS with
client certificates, and fails over between endpoints (which aetcd's client, one host and port, does not).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import grpc
from aetcd.rpc import kv_pb2
from aetcd.rpc import rpc_pb2 as rpc
from aetcd.rpc import rpc_pb2_grpc as rpc_grpc

from topology.records import RECORD_TYPES, Record, from_dict
from topology.store import OP_CREATED, OP_DELETED, OP_UPDATED, HistoryCompacted

log = logging.getLogger(__name__)

MAX_MESSAGE = 256 << 20  # a full load of a large model is one Range answer
#: every request: a member without a leader (the cluster lost its quorum) answers UNAVAILABLE "etcdserver: no
#: leader" at once instead of holding it until the deadline (a write then waited 3 x timeout_s = 15 s to be
#: refused, a read 5 s), and a watch ends instead of going silent
REQUIRE_LEADER = (("hasleader", "true"),)


class StoreUnavailable(OSError):
    """No endpoint answered (an OSError: callers treat it as storage failing). `maybe_applied`: a write was sent and its outcome is unknown."""

    def __init__(self, message: str, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


@dataclass(frozen=True)
class EtcdConfig:
    endpoints: tuple[str, ...]  # "http://127.0.0.1:2379" or "https://…" (TLS)
    prefix: str = "/sdn/v1/"
    ca_file: str = ""  # TLS: the CA that signed the etcd servers' certificates
    cert_file: str = ""  # TLS client certificate and key (etcd --client-cert-auth)
    key_file: str = ""
    timeout_s: float = 5.0  # one request to one endpoint


@dataclass
class Commit:
    """What a write's txn did: committed at `revision`, or refused because the head moved to `head`;
    `contenders`: on success, the other controllers whose txns kept losing (id -> (tries, wall time))."""

    ok: bool
    revision: int = 0
    head: int = 0
    contenders: dict[str, tuple[int, float]] = field(default_factory=dict)


@dataclass
class Snapshot:
    records: list[Record]
    revision: int  # the model's: the last model write
    read_at: int  # etcd's revision when it was read: a watch goes on from read_at + 1


@dataclass
class _Endpoint:
    url: str
    channel: grpc.Channel
    kv: rpc_grpc.KVStub
    watch: rpc_grpc.WatchStub
    lease: rpc_grpc.LeaseStub


@dataclass
class WatchBatch:
    """The changes of one model revision as etcd's watch gives them: (kind, id, record or None, op)."""

    revision: int
    events: list[tuple[str, str, Record | None, str]] = field(default_factory=list)


def _range_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdStore:
    def __init__(self, config: EtcdConfig) -> None:
        if not config.endpoints:
            raise ValueError("etcd: no endpoints")
        self.config = config
        self.prefix = config.prefix.encode()
        self.model_prefix = self.prefix + b"model/"
        self.head_key = self.prefix + b"head"
        # a controller whose txns keep losing says so here (a hint, never a compare: see commit)
        self.contend_prefix = self.prefix + b"contend/"
        self._endpoints = [self._connect(url) for url in config.endpoints]
        self._current = 0
        self._lock = threading.Lock()
        #: history before it is gone (etcd's compaction): the latest compact revision etcd told us of
        self.compacted_revision = 0
        self._watches: set[grpc.Future] = set()
        self.closed = False
        #: kinds of records stored that no loaded code knows (an uninstalled plug-in's), as of load()
        self.unknown: dict[str, int] = {}

    @property
    def path(self) -> Path:  # what log lines and metrics name the store by
        return Path(",".join(self.config.endpoints))

    def _connect(self, url: str) -> _Endpoint:
        u = urlparse(url if "://" in url else f"http://{url}")
        target = u.netloc
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            # a dead endpoint is retried soon: the next request finds it back when it is
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if u.scheme == "https":
            c = self.config
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(c.ca_file).read_bytes() if c.ca_file else None,
                private_key=Path(c.key_file).read_bytes() if c.key_file else None,
                certificate_chain=Path(c.cert_file).read_bytes() if c.cert_file else None,
            )
            channel = grpc.secure_channel(target, creds, options=options)
        else:
            channel = grpc.insecure_channel(target, options=options)
        return _Endpoint(
            url, channel, rpc_grpc.KVStub(channel), rpc_grpc.WatchStub(channel), rpc_grpc.LeaseStub(channel)
        )

    def close(self) -> None:
        self.closed = True
        for call in list(self._watches):
            call.cancel()
        for ep in self._endpoints:
            ep.channel.close()

    # ------------------------------------------------------------------------------------------ requests

    def _kv(self, method: str, request: object, sent_write: bool = False, service: str = "kv") -> object:
        """One KV (or `service`) request on the current endpoint, then on each other one while they are
        unavailable."""
        n = len(self._endpoints)
        errors = []
        start = self._current
        for i in range(n):
            ep = self._endpoints[(start + i) % n]
            try:
                answer = getattr(getattr(ep, service), method)(
                    request, timeout=self.config.timeout_s, metadata=REQUIRE_LEADER
                )
            except grpc.RpcError as err:
                code = err.code()
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                errors.append(f"{ep.url}: {code.name} {err.details()}")
                if code is grpc.StatusCode.DEADLINE_EXCEEDED and sent_write:
                    # it may have committed: the caller's retry (same compare) tells which
                    raise StoreUnavailable("; ".join(errors), maybe_applied=True) from None
                continue
            self._current = (start + i) % n
            return answer
        raise StoreUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    def key(self, kind: str, ident: str) -> bytes:
        return self.model_prefix + f"{kind}/{ident}".encode()

    def _kind(self, kv: kv_pb2.KeyValue) -> str:
        return kv.key[len(self.model_prefix) :].decode().partition("/")[0]

    def unknown_kinds(self) -> dict[str, int]:
        """Kinds stored here that no loaded code knows (an uninstalled plug-in's), as of the last load()."""
        return dict(self.unknown)

    def _parse(self, kv: kv_pb2.KeyValue, value: bytes | None) -> tuple[str, str, Record | None]:
        kind, _, ident = kv.key[len(self.model_prefix) :].decode().partition("/")
        if value is None:
            return kind, ident, None
        rec = from_dict(kind, json.loads(value))
        return kind, ident, _stamped(rec, kv.mod_revision)

    # ------------------------------------------------------------------------------------------ reads

    def load(self) -> Snapshot:
        """Every record and the head, in one read-only txn (one consistent revision)."""
        answer = self._kv(
            "Txn",
            rpc.TxnRequest(
                success=[
                    rpc.RequestOp(request_range=rpc.RangeRequest(key=self.head_key)),
                    rpc.RequestOp(
                        request_range=rpc.RangeRequest(
                            key=self.model_prefix, range_end=_range_end(self.model_prefix)
                        )
                    ),
                ]
            ),
        )
        head_kvs = answer.responses[0].response_range.kvs  # type: ignore[attr-defined]
        kvs = answer.responses[1].response_range.kvs  # type: ignore[attr-defined]
        records = []
        unknown: dict[str, int] = {}
        for kv in kvs:
            kind = self._kind(kv)
            if kind not in RECORD_TYPES:  # an uninstalled plug-in's: kept in etcd, counted, left out
                unknown[kind] = unknown.get(kind, 0) + 1
                continue
            _kind, _id, rec = self._parse(kv, kv.value)
            assert rec is not None
            records.append(rec)
        self.unknown = unknown
        head = head_kvs[0].mod_revision if head_kvs else 0
        return Snapshot(records, head, answer.header.revision)  # type: ignore[attr-defined]

    def head(self) -> int:
        """The model's revision in etcd now (a linearizable read: what every controller will reach)."""
        answer = self._kv("Range", rpc.RangeRequest(key=self.head_key))
        kvs = answer.kvs  # type: ignore[attr-defined]
        return int(kvs[0].mod_revision) if kvs else 0

    def changes_since(self, after: int, upto: int) -> list[tuple[int, str, str, Record]]:
        """(revision, kind, op, record) of the model changes with after < revision <= upto, oldest first,
        read from etcd's history; HistoryCompacted if etcd compacted part of it."""
        try:
            answer = self._kv("Range", rpc.RangeRequest(key=self.head_key, revision=upto))
        except grpc.RpcError as err:
            if err.code() is grpc.StatusCode.OUT_OF_RANGE:  # "required revision has been compacted"
                raise HistoryCompacted(after, max(self.compacted_revision, after + 1)) from None
            raise
        kvs = answer.kvs  # type: ignore[attr-defined]
        last = int(kvs[0].mod_revision) if kvs else 0
        if last <= after:
            return []
        rows = []
        for batch in self.watch(after + 1, stop_at=last):
            for kind, _ident, rec, op in batch.events:
                assert rec is not None
                rows.append((batch.revision, kind, op, rec))
        return rows

    # ------------------------------------------------------------------------------------------ watch

    def watch(self, start: int, stop_at: int = 0) -> Iterator[WatchBatch]:
        """The model's changes from revision `start` on, one batch per revision (a deleted record comes
        as it was before). Ends after revision `stop_at` if given, else runs until close() or a failure:
        StoreUnavailable (the stream broke: go on from the last revision seen), HistoryCompacted."""
        requests: queue.Queue[rpc.WatchRequest | None] = queue.Queue()
        requests.put(
            rpc.WatchRequest(
                create_request=rpc.WatchCreateRequest(
                    key=self.model_prefix,
                    range_end=_range_end(self.model_prefix),
                    start_revision=start,
                    prev_kv=True,
                    progress_notify=True,
                )
            )
        )

        def outgoing() -> Iterator[rpc.WatchRequest]:
            while (r := requests.get()) is not None:
                yield r

        ep = self._endpoints[self._current]
        # hasleader: a member cut off from the leader ends the stream instead of going silent
        call = ep.watch.Watch(outgoing(), metadata=REQUIRE_LEADER)
        self._watches.add(call)
        try:
            for answer in call:
                if answer.compact_revision:
                    self.compacted_revision = max(self.compacted_revision, answer.compact_revision)
                    raise HistoryCompacted(start - 1, answer.compact_revision)
                if answer.canceled:
                    raise StoreUnavailable(f"{ep.url}: watch canceled: {answer.cancel_reason}")
                batch: WatchBatch | None = None
                for ev in answer.events:
                    kv = ev.kv
                    if batch is None or batch.revision != kv.mod_revision:
                        if batch is not None:
                            yield batch
                        batch = WatchBatch(kv.mod_revision)
                    if self._kind(kv) not in RECORD_TYPES:
                        continue  # an uninstalled plug-in's record: not this controller's model
                    if ev.type == kv_pb2.Event.DELETE:
                        if not ev.HasField("prev_kv"):  # its old value is compacted: cannot be shown
                            raise HistoryCompacted(start - 1, kv.mod_revision)
                        kind, ident, rec = self._parse(ev.prev_kv, ev.prev_kv.value)
                        batch.events.append((kind, ident, rec, OP_DELETED))
                    else:
                        kind, ident, rec = self._parse(kv, kv.value)
                        op = OP_CREATED if kv.create_revision == kv.mod_revision else OP_UPDATED
                        batch.events.append((kind, ident, rec, op))
                if batch is not None:
                    yield batch
                    start = batch.revision + 1
                    if stop_at and batch.revision >= stop_at:
                        return
        except grpc.RpcError as err:
            if self.closed or err.code() is grpc.StatusCode.CANCELLED:
                return
            self._current = (self._endpoints.index(ep) + 1) % len(self._endpoints)
            raise StoreUnavailable(f"{ep.url}: watch broke: {err.code().name} {err.details()}") from None
        finally:
            requests.put(None)
            call.cancel()
            self._watches.discard(call)

    def watch_keys(self, prefix: bytes, start: int) -> Iterator[list[tuple[int, bytes, bytes | None]]]:
        """Raw changes of the keys under `prefix` from revision `start` on, one list per answer: (mod
        revision, key, value or None when deleted). Runs until close() or a failure: StoreUnavailable (go on
        from the last revision seen), HistoryCompacted (read the keys again)."""
        requests: queue.Queue[rpc.WatchRequest | None] = queue.Queue()
        requests.put(
            rpc.WatchRequest(
                create_request=rpc.WatchCreateRequest(
                    key=prefix, range_end=_range_end(prefix), start_revision=start
                )
            )
        )

        def outgoing() -> Iterator[rpc.WatchRequest]:
            while (r := requests.get()) is not None:
                yield r

        ep = self._endpoints[self._current]
        call = ep.watch.Watch(outgoing(), metadata=(("hasleader", "true"),))
        self._watches.add(call)
        try:
            for answer in call:
                if answer.compact_revision:
                    raise HistoryCompacted(start - 1, answer.compact_revision)
                if answer.canceled:
                    raise StoreUnavailable(f"{ep.url}: watch canceled: {answer.cancel_reason}")
                events = [
                    (
                        int(ev.kv.mod_revision),
                        bytes(ev.kv.key),
                        None if ev.type == kv_pb2.Event.DELETE else bytes(ev.kv.value),
                    )
                    for ev in answer.events
                ]
                if events:
                    start = events[-1][0] + 1
                    yield events
        except grpc.RpcError as err:
            if self.closed or err.code() is grpc.StatusCode.CANCELLED:
                return
            self._current = (self._endpoints.index(ep) + 1) % len(self._endpoints)
            raise StoreUnavailable(f"{ep.url}: watch broke: {err.code().name} {err.details()}") from None
        finally:
            requests.put(None)
            call.cancel()
            self._watches.discard(call)

    # ------------------------------------------------------------------------------------------ writes

    def commit(
        self,
        base: int,
        writes: list[tuple[bytes, bytes | None]],
        write_id: str,
        contender: str = "",
        tries: int = 0,
    ) -> Commit:
        """One txn: if the head's mod revision is still `base`, put (value) or delete (None) the keys in the
        order given, then the head (whose value is `write_id`); else read the head. etcd's watch gives the
        events in that order. A retry after an unknown outcome tells its own earlier success by the head's
        value.

        Fairness hint (`contender`, this controller's id; `tries`, how many txns of these writes lost): a
        refused txn puts `contend/<contender>`, a committed one deletes it and reads the others', so a
        controller that keeps committing learns that another keeps losing and can let it go first. Only a
        hint: what commits is still decided by the head compare alone."""
        ops = [
            rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k))
            if v is None
            else rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=v))
            for k, v in writes
        ]
        ops.append(rpc.RequestOp(request_put=rpc.PutRequest(key=self.head_key, value=write_id.encode())))
        failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=self.head_key))]
        if contender:
            mine = self.contend_prefix + contender.encode()
            ops.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=mine)))  # if any
            ops.append(
                rpc.RequestOp(
                    request_range=rpc.RangeRequest(
                        key=self.contend_prefix, range_end=_range_end(self.contend_prefix)
                    )
                )
            )
            claim = json.dumps({"tries": tries + 1, "ts": time.time()}).encode()
            failure.append(rpc.RequestOp(request_put=rpc.PutRequest(key=mine, value=claim)))
        request = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    key=self.head_key,
                    target=rpc.Compare.MOD,
                    result=rpc.Compare.EQUAL,
                    mod_revision=base,
                )
            ],
            success=ops,
            failure=failure,
        )
        answer: object = None
        unknown = False  # an earlier try's outcome is unknown: so is the write's, whatever a later try says
        for attempt in range(3):
            try:
                answer = self._kv("Txn", request, sent_write=True)
                break
            except StoreUnavailable as err:
                if unknown and not err.maybe_applied:
                    raise StoreUnavailable(str(err), maybe_applied=True) from None
                if not err.maybe_applied or attempt == 2:
                    raise
                unknown = True
                time.sleep(0.1)
        if answer.succeeded:  # type: ignore[attr-defined]
            done = Commit(True, int(answer.header.revision))  # type: ignore[attr-defined]
            if contender:
                for kv in answer.responses[-1].response_range.kvs:  # type: ignore[attr-defined]
                    who = kv.key[len(self.contend_prefix) :].decode()
                    if who != contender:
                        claim = json.loads(kv.value)
                        done.contenders[who] = (int(claim["tries"]), float(claim["ts"]))
            return done
        kvs = answer.responses[0].response_range.kvs  # type: ignore[attr-defined]
        head = int(kvs[0].mod_revision) if kvs else 0
        if kvs and kvs[0].value == write_id.encode():  # an earlier try of this very write committed
            return Commit(True, head)
        return Commit(False, head=head)

    # ------------------------------------------------------------------------------------------ leases

    def lease_grant(self, ttl_s: int) -> int:
        """A new lease of `ttl_s` seconds; its id."""
        answer = self._kv("LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl_s), service="lease")
        return int(answer.ID)  # type: ignore[attr-defined]

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew a lease once; the seconds it has left now (0: it expired, its keys are gone)."""
        request = rpc.LeaseKeepAliveRequest(ID=lease_id)
        errors = []
        for ep in self._endpoints[self._current :] + self._endpoints[: self._current]:
            call = ep.lease.LeaseKeepAlive(
                iter([request]), timeout=self.config.timeout_s, metadata=REQUIRE_LEADER
            )
            try:
                for answer in call:
                    return int(answer.TTL)
                return 0
            except grpc.RpcError as err:
                errors.append(f"{ep.url}: {err.code().name} {err.details()}")
            finally:
                call.cancel()
        raise StoreUnavailable("no etcd endpoint renewed the lease: " + "; ".join(errors))

    def lease_revoke(self, lease_id: int) -> None:
        """End a lease now: its keys are deleted."""
        self._kv("LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id), service="lease")

    def range_prefix(self, prefix: bytes) -> tuple[int, list[tuple[bytes, bytes, int]]]:
        """(etcd's revision, [(key, value, create revision)]) of the keys under `prefix`."""
        answer = self._kv("Range", rpc.RangeRequest(key=prefix, range_end=_range_end(prefix)))
        kvs = answer.kvs  # type: ignore[attr-defined]
        return int(answer.header.revision), [  # type: ignore[attr-defined]
            (bytes(kv.key), bytes(kv.value), int(kv.create_revision)) for kv in kvs
        ]

    def create_if_absent(self, key: bytes, value: bytes, lease_id: int) -> int:
        """Put `key` (attached to the lease) only if it does not exist; its create revision, or 0 if it
        existed."""
        answer = self._kv(
            "Txn",
            rpc.TxnRequest(
                compare=[
                    rpc.Compare(
                        key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0
                    )
                ],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease_id))],
            ),
        )
        return int(answer.header.revision) if answer.succeeded else 0  # type: ignore[attr-defined]

    def put_leased(self, key: bytes, value: bytes, lease_id: int) -> None:
        self._kv("Put", rpc.PutRequest(key=key, value=value, lease=lease_id))

    def put_many_leased(self, puts: list[tuple[bytes, bytes]], deletes: list[bytes], lease_id: int) -> None:
        """Put keys (attached to the lease) and delete keys in one txn (one revision, seen at once)."""
        ops = [rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=v, lease=lease_id)) for k, v in puts]
        ops += [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k)) for k in deletes]
        if ops:
            self._kv("Txn", rpc.TxnRequest(success=ops))

    def delete_if(self, key: bytes, value: bytes) -> bool:
        """Delete `key` only if it still holds `value`; True if it did."""
        answer = self._kv(
            "Txn",
            rpc.TxnRequest(
                compare=[
                    rpc.Compare(key=key, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=value)
                ],
                success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))],
            ),
        )
        return bool(answer.succeeded)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------ other keys (tokens)

    def put(self, key: bytes, value: bytes) -> int:
        """Put `key` (no lease); etcd's revision after it."""
        answer = self._kv("Put", rpc.PutRequest(key=key, value=value), sent_write=True)
        return int(answer.header.revision)  # type: ignore[attr-defined]

    def watch_prefix(
        self, prefix: bytes, start: int
    ) -> Iterator[tuple[int, list[tuple[bytes, bytes | None]]]]:
        """The changes of the keys under `prefix` from revision `start` on: (revision, [(key, value or None
        if deleted)]) per revision, until close() (returns) or a failure (StoreUnavailable, HistoryCompacted:
        the caller reads the prefix again and goes on from there)."""
        requests: queue.Queue[rpc.WatchRequest | None] = queue.Queue()
        requests.put(
            rpc.WatchRequest(
                create_request=rpc.WatchCreateRequest(
                    key=prefix, range_end=_range_end(prefix), start_revision=start
                )
            )
        )

        def outgoing() -> Iterator[rpc.WatchRequest]:
            while (r := requests.get()) is not None:
                yield r

        ep = self._endpoints[self._current]
        call = ep.watch.Watch(outgoing(), metadata=REQUIRE_LEADER)
        self._watches.add(call)
        try:
            for answer in call:
                if answer.compact_revision:
                    raise HistoryCompacted(start - 1, answer.compact_revision)
                if answer.canceled:
                    raise StoreUnavailable(f"{ep.url}: watch canceled: {answer.cancel_reason}")
                by_rev: dict[int, list[tuple[bytes, bytes | None]]] = {}
                for ev in answer.events:
                    deleted = ev.type == kv_pb2.Event.DELETE
                    by_rev.setdefault(int(ev.kv.mod_revision), []).append(
                        (bytes(ev.kv.key), None if deleted else bytes(ev.kv.value))
                    )
                for rev in sorted(by_rev):
                    yield rev, by_rev[rev]
                    start = rev + 1
        except grpc.RpcError as err:
            if self.closed or err.code() is grpc.StatusCode.CANCELLED:
                return
            self._current = (self._endpoints.index(ep) + 1) % len(self._endpoints)
            raise StoreUnavailable(f"{ep.url}: watch broke: {err.code().name} {err.details()}") from None
        finally:
            requests.put(None)
            call.cancel()
            self._watches.discard(call)

    # ------------------------------------------------------------------------------------------ like Store

    def oldest_retained_revision(self) -> int:
        return self.compacted_revision

    def sizes(self) -> dict[str, int]:
        return {}


def _stamped(rec: Record, revision: int) -> Record:
    """`rec` with its revision (etag) set to its key's mod revision."""
    if rec.revision == revision:
        return rec
    return dataclasses.replace(rec, revision=revision)

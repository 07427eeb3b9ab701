"""The SQLite store's commit: a batch of writes is stored by its net effect (few statements), and the IP / MAC
keys stay exact whatever the order of frees and takes inside one commit; a duplicate is still refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from topology.model import Change
from topology.records import Network, Port
from topology.store import Store


def port(ident: str, mac: str, *ips: str, chassis: str = "") -> Port:
    return Port(
        id=ident,
        tenant="t",
        network_id="n",
        mac=mac,
        fixed_ips=tuple(("s", a) for a in ips),
        binding_chassis=chassis,
    )


def keys(path: Path) -> tuple[set[tuple[str, str, str]], set[tuple[str, str]], set[str]]:
    db = sqlite3.connect(path)
    try:
        ips = set(db.execute("SELECT subnet_id, address, port_id FROM ip_allocations"))
        macs = set(db.execute("SELECT mac, port_id FROM mac_addresses"))
        objects = {i for (i,) in db.execute("SELECT id FROM objects")}
    finally:
        db.close()
    return ips, macs, objects


def test_frees_and_takes_in_one_commit_leave_exact_keys(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    a, b, c = port("a", "m1", "10.0.0.1"), port("b", "m2", "10.0.0.2"), port("c", "m3", "10.0.0.3")
    store.commit_many(
        [(1, [("network", "n", None, Network(id="n", tenant="t"))]), (2, [("port", "a", None, a)])]
    )
    store.commit(3, [("port", "b", None, b), ("port", "c", None, c)])
    a2 = port("a", "m1", "10.0.0.1", chassis="hv1")  # a binding: keeps its addresses
    d = port("d", "m2", "10.0.0.2", "10.0.0.9")  # takes b's address and MAC, freed earlier in the commit
    e = port("e", "m5", "10.0.0.5")
    writes: list[tuple[int, list[Change]]] = [
        (4, [("port", "a", a, a2)]),
        (5, [("port", "b", b, None)]),
        (6, [("port", "d", None, d)]),
        (7, [("port", "e", None, e)]),
        (8, [("port", "e", e, None)]),  # created and deleted in the same commit: leaves nothing
        (9, [("port", "c", c, port("c", "m3", "10.0.0.4"))]),  # moves its address
    ]
    store.commit_many(writes)
    ips, macs, objects = keys(tmp_path / "db")
    assert ips == {
        ("s", "10.0.0.1", "a"),
        ("s", "10.0.0.2", "d"),
        ("s", "10.0.0.9", "d"),
        ("s", "10.0.0.4", "c"),
    }
    assert macs == {("m1", "a"), ("m2", "d"), ("m3", "c")}
    assert objects == {"n", "a", "c", "d"}
    records, revision = store.load()
    assert revision == 9 and {r.id: r for r in records}["a"] == a2
    # every change is in the history, in order
    assert [rev for rev, *_ in store.changes_since(3, 9)] == [4, 5, 6, 7, 8, 9]
    store.close()


def test_a_duplicate_is_refused_and_nothing_of_the_commit_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    a = port("a", "m1", "10.0.0.1")
    store.commit(1, [("port", "a", None, a)])
    # against a stored port: the UNIQUE constraint
    with pytest.raises(sqlite3.IntegrityError):
        store.commit_many(
            [
                (2, [("port", "x", None, port("x", "m9", "10.0.0.9"))]),
                (3, [("port", "y", None, port("y", "m8", "10.0.0.1"))]),
            ]
        )
    with pytest.raises(sqlite3.IntegrityError):
        store.commit(2, [("port", "y", None, port("y", "m1", "10.0.0.8"))])
    # two ports of one commit
    with pytest.raises(sqlite3.IntegrityError):
        store.commit_many(
            [
                (2, [("port", "x", None, port("x", "m9", "10.0.0.9"))]),
                (3, [("port", "y", None, port("y", "m8", "10.0.0.9"))]),
            ]
        )
    # taken, freed and taken again in one commit by a port while another (stored) holds it: still refused
    with pytest.raises(sqlite3.IntegrityError):
        x = port("x", "m7", "10.0.0.1")
        store.commit_many(
            [
                (2, [("port", "x", None, x)]),
                (3, [("port", "x", x, None)]),
                (4, [("port", "z", None, port("z", "m6", "10.0.0.1"))]),
            ]
        )
    ips, macs, objects = keys(tmp_path / "db")
    assert ips == {("s", "10.0.0.1", "a")} and macs == {("m1", "a")} and objects == {"a"}
    assert store.revision() == 1
    store.close()


@pytest.mark.parametrize("n", [1, 7, 256, 600])
def test_a_big_commit_stores_every_row_in_order(tmp_path: Path, n: int) -> None:
    """Rows go in by multi-row INSERTs in chunks (powers of two, at most 256 rows): every row of every
    table stored, the history in the writes' order; a duplicate in the last chunk refuses the whole commit."""
    store = Store(tmp_path / "db")
    ports = [port(f"p{i:04d}", f"m{i}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(n)]
    store.commit_many([(1 + i, [("port", p.id, None, p)]) for i, p in enumerate(ports)])
    ips, macs, objects = keys(tmp_path / "db")
    assert ips == {("s", p.fixed_ips[0][1], p.id) for p in ports}
    assert macs == {(p.mac, p.id) for p in ports}
    assert objects == {p.id for p in ports}
    assert [r[0] for r in store.changes_since(0, n)] == list(range(1, n + 1))
    assert store.revision() == n
    dup = [port(f"q{i:04d}", f"mq{i}", f"10.9.{i // 250}.{i % 250 + 1}") for i in range(n)]
    dup[-1] = port("q-last", "mq-last", ports[0].fixed_ips[0][1])  # in the last chunk
    with pytest.raises(sqlite3.IntegrityError):
        store.commit_many([(n + 1 + i, [("port", p.id, None, p)]) for i, p in enumerate(dup)])
    assert keys(tmp_path / "db")[2] == {p.id for p in ports} and store.revision() == n
    store.close()


def test_concurrent_writers_share_commits_and_each_returns_durable(tmp_path: Path) -> None:
    """Group commit with a writer woken once (done, or handed the commit): 8 threads, every write acknowledged
    only once durable, each on disk after a reopen, commits shared (fewer transactions than writes)."""
    import threading

    from topology import ops
    from topology.state import State

    state = State(tmp_path / "db")
    state.write(lambda t, r, n: ops.create_network(t, Network(id="n", tenant="t"), r, n))
    batches: list[int] = []
    state.on_commit = lambda _s, writes: batches.append(writes)
    acknowledged: list[int] = []
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(60):
                rec = Network(id=f"w{w}-{i}", tenant="t")
                rev, _ = state.write(lambda t, r, n, rec=rec: ops.create_network(t, rec, r, n))  # type: ignore[misc]
                assert state.durable_revision >= rev
                acknowledged.append(rev)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(acknowledged) == 480 == len(set(acknowledged))
    assert sum(batches) == 480 and len(batches) < 480
    state.close()
    again = Store(tmp_path / "db")
    records, revision = again.load()
    assert revision == max(acknowledged) and len(records) == 481
    again.close()


def test_writes_applied_by_another_caller_keep_their_outcome_and_context(tmp_path: Path) -> None:
    """Concurrent writes are applied by whichever caller is applying (State.write): each caller still gets
    its own outcome (its refusal raised in its own thread, its revision), its write runs and is told to the
    listeners in its own context (provenance), refusals and no-ops are answered without a commit, and a
    listener that writes while holding the model lock writes at once (no wait for itself)."""
    import contextvars
    import threading

    from topology import errors as model_errors
    from topology import ops
    from topology.state import State

    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="")
    state = State(tmp_path / "db")
    state.write(lambda t, r, n: ops.create_network(t, Network(id="n", tenant="t"), r, n))
    seen_by_fn: dict[str, str] = {}
    told: dict[int, str] = {}
    nested: list[int] = []

    def listener(revision: int, changes: list[Change]) -> None:
        told[revision] = who.get()
        if any(i == "trigger" for _k, i, _o, _n in changes):  # a write from a listener: under the lock
            rec = Network(id="from-listener", tenant="t")
            nested.append(state.write(lambda t, r, n: ops.create_network(t, rec, r, n))[0])

    state.add_listener(listener)
    results: dict[str, object] = {}

    def writer(w: int) -> None:
        for i in range(40):
            name = f"w{w}-{i}"
            who.set(name)
            kind = i % 4  # a create, a refusal, a no-op, a create

            def fn(t: object, r: int, n: float, name: str = name, kind: int = kind) -> list[Change]:
                seen_by_fn[name] = who.get()
                if kind == 1:
                    raise model_errors.invalid("network.display_name", f"refused {name}")
                if kind == 2:
                    return []
                return ops.create_network(t, Network(id=name, tenant="t"), r, n)  # type: ignore[arg-type]

            try:
                results[name] = state.write(fn)
            except model_errors.ApiError as err:
                results[name] = err

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    state.write(lambda t, r, n: ops.create_network(t, Network(id="trigger", tenant="t"), r, n))
    for t in threads:
        t.join(timeout=120)
    assert len(results) == 320 and seen_by_fn == {name: name for name in results}
    for name, got in results.items():
        kind = int(name.split("-")[1]) % 4
        if kind == 1:
            assert isinstance(got, model_errors.ApiError) and name in got.message
        elif kind == 2:
            assert isinstance(got, tuple) and got[1] == []
        else:
            assert isinstance(got, tuple) and got[1][0][1] == name and told[got[0]] == name
            assert state.durable_revision >= got[0]
    assert len(nested) == 1 and "from-listener" in state.topology.networks
    state.close()
    again = Store(tmp_path / "db")
    records, _revision = again.load()
    assert {r.id for r in records} == {"n", "trigger", "from-listener"} | {
        name for name in results if int(name.split("-")[1]) % 4 in (0, 3)
    }
    again.close()


def test_watch_reads_recent_changes_from_memory_as_the_file_has_them(tmp_path: Path) -> None:
    """The change log readers use (Watch) serves recent revisions from memory — the records the model holds,
    not decoded again from the file — with exactly the rows the file has; from before the compaction it
    refuses as the file does."""
    from topology import ops
    from topology.state import State
    from topology.store import HistoryCompacted

    state = State(tmp_path / "db")
    start = state.revision
    state.write(lambda t, r, n: ops.create_network(t, Network(id="n", tenant="t"), r, n))
    for i in range(5):
        state.write(lambda t, r, n, i=i: ops.create_network(t, Network(id=f"x{i}", tenant="t"), r, n))  # type: ignore[misc]
    state.write(lambda t, r, n: ops.delete_network(t, t.networks["x0"], False, r, n))
    assert state.sqlite is not None
    head = state.revision
    rows = state.store.changes_since(start, head)
    assert rows == state.sqlite.changes_since(start, head) and len(rows) == 7
    assert rows[2][3] is state.topology.networks["x1"]  # the model's own record: not read back
    assert state.store.changes_since(head - 2, head) == state.sqlite.changes_since(head - 2, head)
    state.sqlite.compact(keep_revisions=3)
    with pytest.raises(HistoryCompacted):
        state.store.changes_since(start, head)
    assert state.store.changes_since(head - 3, head) == state.sqlite.changes_since(head - 3, head)
    state.close()
    # a reopened store has nothing in memory: read from the file
    again = State(tmp_path / "db")
    assert again.store.changes_since(head - 3, head) == rows[-3:]
    again.close()

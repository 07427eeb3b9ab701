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

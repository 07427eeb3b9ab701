"""A model listener that fails (a bug in it) neither undoes, loses nor stalls the write it was told about."""

from __future__ import annotations

import threading
from pathlib import Path

from topology import ops
from topology.records import Network
from topology.state import State


def test_a_failing_listener_is_logged_and_the_write_still_becomes_durable(tmp_path: Path) -> None:
    state = State(tmp_path / "topology.sqlite")
    seen: list[int] = []

    def broken(revision: int, _changes: object) -> None:
        raise RuntimeError("listener bug")

    state.add_listener(broken)
    state.add_listener(lambda revision, _changes: seen.append(revision))
    rev, changes = state.write(lambda t, r, n: ops.create_network(t, Network(id="n", tenant="t"), r, n))
    assert changes and seen == [rev]  # the listeners after the failing one are still told
    assert state.listener_errors == 1
    assert state.durable_revision == rev
    closer = threading.Thread(target=state.close)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive(), "close() waited for a write nobody drives"
    again = State(tmp_path / "topology.sqlite")
    try:
        assert "n" in again.topology.networks and again.revision == rev
    finally:
        again.close()

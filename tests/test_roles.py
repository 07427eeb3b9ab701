"""Chassis ownership (controller/southbound/roles.py): assignment by rendezvous hashing, and the step-down
timing of a controller cut off from etcd, against an in-memory etcd with a fake clock."""

from __future__ import annotations

from collections import Counter

from controller.southbound.roles import LeaseTimer, Ownership, assign


def test_assign_spreads_and_moves_only_what_it_must() -> None:
    chassis = [f"hv{i}" for i in range(300)]
    three = assign(chassis, ["c1", "c2", "c3"])
    counts = Counter(three.values())
    assert set(counts) == {"c1", "c2", "c3"}
    assert all(70 <= n <= 130 for n in counts.values()), counts
    assert assign(reversed(chassis), ["c3", "c1", "c2"]) == three  # order of inputs does not matter
    two = assign(chassis, ["c1", "c3"])
    assert all(two[ch] == ctl for ch, ctl in three.items() if ctl != "c2")  # only c2's chassis move
    four = assign(chassis, ["c1", "c2", "c3", "c4"])
    assert all(four[ch] in (three[ch], "c4") for ch in chassis)  # a newcomer only takes
    assert assign(chassis, []) == {}


def test_lease_timer() -> None:
    t = LeaseTimer(3.0, 1.0)
    assert not t.valid(0.0)
    t.renewed(10.0)
    assert t.valid(11.99) and not t.valid(12.0)
    t.renewed(9.0)  # an older confirmation does not move it back
    assert t.step_down_at() == 12.0
    t.lost()
    assert not t.valid(10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeEtcd:
    """Leases, create-if-absent and revisions, as etcd does them, on the fake clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.revision = 1
        self.keys: dict[bytes, tuple[bytes, int, int]] = {}  # key -> (value, create revision, lease)
        self.leases: dict[int, tuple[int, float]] = {}  # id -> (ttl, expires at)
        self.next_lease = 1

    def view(self, name: str) -> FakeClient:
        return FakeClient(self, name)

    def expire(self) -> None:
        now = self.clock.now
        for lid, (_ttl, at) in list(self.leases.items()):
            if at <= now:
                del self.leases[lid]
                self.keys = {k: v for k, v in self.keys.items() if v[2] != lid}
                self.revision += 1


class FakeClient:
    prefix = b"/t/"

    def __init__(self, etcd: FakeEtcd, name: str) -> None:
        self.etcd = etcd
        self.name = name
        self.down = False  # cut off from etcd

    def _check(self) -> FakeEtcd:
        if self.down:
            raise OSError(f"{self.name}: etcd unreachable")
        self.etcd.expire()
        return self.etcd

    def lease_grant(self, ttl: int) -> int:
        e = self._check()
        lid, e.next_lease = e.next_lease, e.next_lease + 1
        e.leases[lid] = (ttl, e.clock.now + ttl)
        return lid

    def lease_keepalive(self, lid: int) -> int:
        e = self._check()
        if lid not in e.leases:
            return 0
        ttl = e.leases[lid][0]
        e.leases[lid] = (ttl, e.clock.now + ttl)
        return ttl

    def lease_revoke(self, lid: int) -> None:
        e = self._check()
        e.leases[lid] = (0, e.clock.now)
        e.expire()

    def put_leased(self, key: bytes, value: bytes, lid: int) -> None:
        e = self._check()
        e.revision += 1
        old = e.keys.get(key)
        e.keys[key] = (value, old[1] if old else e.revision, lid)

    def range_prefix(self, prefix: bytes) -> tuple[int, list[tuple[bytes, bytes, int]]]:
        e = self._check()
        return e.revision, [(k, v, c) for k, (v, c, _l) in sorted(e.keys.items()) if k.startswith(prefix)]

    def create_if_absent(self, key: bytes, value: bytes, lid: int) -> int:
        e = self._check()
        if key in e.keys:
            return 0
        e.revision += 1
        e.keys[key] = (value, e.revision, lid)
        return e.revision

    def delete_if(self, key: bytes, value: bytes) -> bool:
        e = self._check()
        if e.keys.get(key, (None,))[0] != value:
            return False
        del e.keys[key]
        e.revision += 1
        return True


def _controllers(n: int, chassis: list[str]) -> tuple[Clock, FakeEtcd, list[Ownership], list[dict]]:  # type: ignore[type-arg]
    clock = Clock()
    etcd = FakeEtcd(clock)
    owners, roles = [], []
    for i in range(n):
        seen: dict[str, tuple[bool, int]] = {}
        roles.append(seen)

        def on_role(ch: str, master: bool, gen: int, seen: dict = seen) -> None:  # type: ignore[type-arg]
            seen[ch] = (master, gen)

        owners.append(
            Ownership(etcd.view(f"c{i}"), f"c{i}", lambda: chassis, on_role, 3.0, 1.0, clock=clock)  # type: ignore[arg-type]
        )
    return clock, etcd, owners, roles


def _run(clock: Clock, owners: list[Ownership], seconds: float, step: float = 0.1) -> None:
    end = clock.now + seconds
    while clock.now < end:
        for o in owners:
            o.step()
        masters = Counter(ch for o in owners for ch in o.masters())
        assert all(n == 1 for n in masters.values()), f"two masters at {clock.now}: {masters}"
        clock.now += step


def test_chassis_split_then_taken_over_with_higher_generations() -> None:
    chassis = [f"hv{i}" for i in range(12)]
    clock, etcd, owners, roles = _controllers(3, chassis)
    _run(clock, owners, 3.0)
    held = [set(o.masters()) for o in owners]
    assert set().union(*held) == set(chassis) and sum(map(len, held)) == len(chassis)
    assert all(held), held  # each carries some
    gens = owners[0].masters()
    # c0 dies (no more rounds, its lease is not revoked): its chassis go to the others once etcd expires it
    survivors = owners[1:]
    died = clock.now
    taken_at: dict[str, float] = {}
    while set(gens) - set(taken_at):
        _run(clock, survivors, 0.1)
        for ch in gens:
            if ch not in taken_at and any(ch in o.masters() for o in survivors):
                taken_at[ch] = clock.now
        assert clock.now - died < 5.0, "not taken over"
    assert all(t - died <= 3.0 + 0.3 for t in taken_at.values()), taken_at  # within the lease
    for ch, gen in gens.items():
        new = next(o.masters()[ch] for o in survivors if ch in o.masters())
        assert new > gen
    # the slaves were told the master's generation (for their own role requests)
    for ch in chassis:
        masters = [r[ch] for r in roles[1:] if r.get(ch, (False, 0))[0]]
        assert len(masters) == 1


def test_cut_off_controller_steps_down_before_its_lease_expires() -> None:
    chassis = ["hv1", "hv2", "hv3", "hv4"]
    clock, etcd, owners, roles = _controllers(2, chassis)
    _run(clock, owners, 2.0)
    a, b = owners
    mine = set(a.masters())
    assert mine
    last_ok = a.timer.last_ok
    assert last_ok is not None
    a.store.down = True  # type: ignore[attr-defined]
    stepped_down = taken = None
    while taken is None:
        clock.now += 0.05
        a.step()
        b.step()
        if stepped_down is None and not a.masters():
            stepped_down = clock.now
        if mine <= set(b.masters()):
            taken = clock.now
        assert not (set(a.masters()) & set(b.masters())), "two masters"
        assert clock.now - last_ok < 10
    assert stepped_down is not None
    assert stepped_down <= last_ok + 2.0 + 0.06  # lease 3 s - margin 1 s
    assert taken >= last_ok + 3.0 > stepped_down  # etcd expired a's lease only after it stepped down
    assert a.step_downs == 1
    # etcd back: a gets a new lease and, the hash giving it some chassis, takes them back by hand-over
    a.store.down = False  # type: ignore[attr-defined]
    _run(clock, owners, 3.0)
    assert a.masters() and b.masters()
    assert set(a.masters()) | set(b.masters()) == set(chassis)

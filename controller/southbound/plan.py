"""The pure half of sync: desired flows, groups and meters vs what a switch holds -> ordered operations.

No I/O, no threads, no encoding: the transport (transport.py) turns each Op into an OpenFlow message and the
engine (sync.py) decides when to plan and what to do with the outcome.

Order (`Plan.steps`): meter ADD / MODIFY as plain messages confirmed first (OVS takes no meter-mod in a
bundle, and rejects a flow naming a missing meter); then one bundle of group ADD (a group whose buckets
point at another group after the plain ones), group MODIFY, flow DELETE, flow ADD, group DELETE (OVS
deletes the flows still pointing at a deleted group, so those go first); then meter DELETE once the bundle
is confirmed (deleting a meter deletes the flows using it).

Flows are identified by (stage, priority, match). A flow whose actions or cookie change is one ADD
(OpenFlow ADD replaces the entry; MODIFY would keep the old cookie). On a resync every switch entry that is
not desired is swept (a foreign cookie, ours but no longer wanted, or undecodable); one equal to a desired
entry is adopted (nothing sent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from flows.actions import GroupAction
from flows.flow import Flow, Group, MeterEntry

Item = Flow | Group | MeterEntry

#: the commands of an Op (the same strings as flows.encode's, which the transport checks)
ADD: Final = "add"
MODIFY: Final = "modify"
DELETE: Final = "delete"

#: meters the engine never deletes although nobody desires them: the packet-in meter, which the OpenFlow
#: app adds on every connection itself (apps.ids.PACKET_IN_METER)
KEEP_METERS = frozenset({1})


class FlowKey:
    """What OpenFlow identifies a flow by (stage, priority, match), with its hash computed once: tuples
    re-hash their nested match on every dict lookup, which dominated diffing 50k flows."""

    __slots__ = ("_hash", "key")

    def __init__(self, flow: Flow) -> None:
        self.key = flow.key()
        self._hash = hash(self.key)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (
            isinstance(other, FlowKey) and self._hash == other._hash and self.key == other.key
        )

    def __repr__(self) -> str:
        return f"FlowKey{self.key!r}"


@dataclass(frozen=True, slots=True)
class RawFlow:
    """A switch flow no Flow value describes: what deleting exactly it takes, and how to show it."""

    cookie: int
    table_id: int
    priority: int
    match: Any  # the switch's match as the transport parsed it (opaque here)
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class RawGroup:
    """A switch group no Group value describes."""

    group_id: int
    type: int
    text: str

    def __str__(self) -> str:
        return f"group_id={self.group_id} (undecodable)"


@dataclass(frozen=True, slots=True)
class ZoneFlush:
    """Flush the switch's conntrack entries of one zone (sent after the bundle that removed the zone's last
    flows: a zone given up by a port starts empty when another port gets it)."""

    zone: int

    def __str__(self) -> str:
        return f"ct flush zone={self.zone}"


#: the Op command of a ZoneFlush
FLUSH: Final = "flush"


@dataclass(frozen=True, slots=True)
class RawMeter:
    """A switch meter whose config no MeterEntry describes."""

    meter_id: int
    text: str


@dataclass
class Installed:
    """What a switch holds, as dumped and decoded: entries with a value, entries without one, and each
    decoded flow's (packets, bytes) counters."""

    flows: dict[FlowKey, Flow] = field(default_factory=dict)
    groups: dict[int, Group] = field(default_factory=dict)
    meters: dict[int, MeterEntry] = field(default_factory=dict)
    raw_flows: list[RawFlow] = field(default_factory=list)
    raw_groups: list[RawGroup] = field(default_factory=list)
    raw_meters: list[RawMeter] = field(default_factory=list)
    counters: dict[FlowKey, tuple[int, int]] = field(default_factory=dict)
    reordered: int = 0  # flows recognised only after re-ordering their match (transport.Recognizer)


_FLOWS = (Flow, RawFlow)


class Op(NamedTuple):
    """One operation: ADD / MODIFY / DELETE of a flow, group, meter, or a raw switch entry (DELETE only)."""

    command: str
    item: Item | RawFlow | RawGroup | ZoneFlush


@dataclass(slots=True)
class Plan:
    """The operations turning a switch's state into the desired one, in the three steps they go in."""

    meters_before: list[Op] = field(default_factory=list)  # plain messages, confirmed before the bundle
    bundle: list[Op] = field(default_factory=list)  # one atomic ordered bundle
    meters_after: list[Op] = field(default_factory=list)  # plain messages, once the bundle is confirmed
    adopted: int = 0  # resync: switch flows equal to a desired one, kept as they are

    def steps(self) -> tuple[tuple[list[Op], bool], ...]:
        """(operations, bundled) in sending order; a step may be empty."""
        return ((self.meters_before, False), (self.bundle, True), (self.meters_after, False))

    def ops(self) -> list[Op]:
        return [*self.meters_before, *self.bundle, *self.meters_after]

    @property
    def flow_mods(self) -> int:
        """Flow operations of the bundle (raw ones included)."""
        return sum(1 for _, item in self.bundle if type(item) in _FLOWS)

    @property
    def flow_deletes(self) -> int:
        """Flow deletes of the bundle (stale, foreign and undecodable entries)."""
        return sum(1 for command, item in self.bundle if command == DELETE and type(item) in _FLOWS)

    @property
    def group_mods(self) -> int:
        return len(self.bundle) - self.flow_mods

    @property
    def meter_mods(self) -> int:
        return len(self.meters_before) + len(self.meters_after)

    def __bool__(self) -> bool:
        return bool(self.meters_before or self.bundle or self.meters_after)


def _refers_to_groups(item: Item) -> bool:
    return isinstance(item, Group) and any(
        isinstance(a, GroupAction) for b in item.buckets for a in b.actions
    )


def bundle_ops(
    desired: Mapping[FlowKey, Flow],
    groups: Mapping[int, Group],
    inst: Mapping[FlowKey, Flow],
    inst_groups: Mapping[int, Group],
    keys: Iterable[FlowKey] | None,
    gkeys: Iterable[int],
) -> tuple[list[Op], list[Op], list[Op], list[Op], list[Op]]:
    """(group adds, group mods, flow deletes, flow adds, group deletes) turning `inst` into `desired` over
    flow keys `keys` (None: every key of either) and group ids `gkeys`."""
    g_add: list[Op] = []
    g_mod: list[Op] = []
    g_del: list[Op] = []
    for g in gkeys:
        want, have = groups.get(g), inst_groups.get(g)
        if want == have:
            continue
        if want is None:
            assert have is not None
            g_del.append(Op(DELETE, have))
        elif have is None:
            g_add.append(Op(ADD, want))
        else:
            g_mod.append(Op(MODIFY, want))
    # a group whose buckets point at another new group goes after it (one level of chaining)
    g_add.sort(key=lambda op: _refers_to_groups(op.item))  # type: ignore[arg-type]
    f_del: list[Op] = []
    f_add: list[Op] = []
    if keys is None:
        if not inst:  # an empty switch (cold install): everything is an ADD, nothing to compare
            return g_add, g_mod, f_del, [Op(ADD, f) for f in desired.values()], g_del
        f_del, f_add, _ = _all_flow_ops(desired, inst)
        return g_add, g_mod, f_del, f_add, g_del
    for k in keys:
        fwant, fhave = desired.get(k), inst.get(k)
        if fhave is None:
            if fwant is not None:
                f_add.append(Op(ADD, fwant))
        elif fwant is None:
            f_del.append(Op(DELETE, fhave))
        elif fwant is not fhave and fwant != fhave:
            # same match+priority, other actions or cookie: ADD replaces (MODIFY would keep the cookie)
            f_add.append(Op(ADD, fwant))
    return g_add, g_mod, f_del, f_add, g_del


def _all_flow_ops(
    desired: Mapping[FlowKey, Flow], inst: Mapping[FlowKey, Flow]
) -> tuple[list[Op], list[Op], int]:
    """(deletes, adds, how many installed flows equal a desired one) turning every flow of `inst` into
    `desired`. One pass over `desired` (an adopted entry is usually the desired Flow itself: the transport
    hands back the engine's own values), and a pass over `inst` only if it holds keys `desired` lacks."""
    f_del: list[Op] = []
    f_add: list[Op] = []
    get = inst.get
    found = adopted = 0
    for k, fwant in desired.items():
        fhave = get(k)
        if fhave is fwant:
            found += 1
            adopted += 1
        elif fhave is None:
            f_add.append(Op(ADD, fwant))
        else:
            found += 1
            if fwant == fhave:
                adopted += 1
            else:  # same match+priority, other actions or cookie: ADD replaces (MODIFY would keep the cookie)
                f_add.append(Op(ADD, fwant))
    if found < len(inst):
        f_del = [Op(DELETE, fhave) for k, fhave in inst.items() if k not in desired]
    return f_del, f_add, adopted


def meter_ops(
    desired: Mapping[int, MeterEntry],
    inst: Mapping[int, MeterEntry],
    mkeys: Iterable[int],
    raw: Iterable[int] = (),
) -> tuple[list[Op], list[Op]]:
    """(adds and modifies to send before the bundle, deletes to send after it) turning `inst` into
    `desired` over meter ids `mkeys`; `raw`: ids the switch holds with a config no MeterEntry describes."""
    before: list[Op] = []
    after: list[Op] = []
    raw = set(raw)
    for m in sorted(mkeys):
        want, have = desired.get(m), inst.get(m)
        if want is not None:
            if have is None and m not in raw:
                before.append(Op(ADD, want))
            elif want != have:
                before.append(Op(MODIFY, want))
        elif m not in KEEP_METERS and (have is not None or m in raw):
            after.append(Op(DELETE, have or MeterEntry(m, 1)))
    return before, after


def plan_push(
    desired: Mapping[FlowKey, Flow],
    groups: Mapping[int, Group],
    meters: Mapping[int, MeterEntry],
    inst: Mapping[FlowKey, Flow],
    inst_groups: Mapping[int, Group],
    inst_meters: Mapping[int, MeterEntry],
    keys: Iterable[FlowKey],
    gkeys: Iterable[int],
    mkeys: Iterable[int],
) -> Plan:
    """A change of the desired state over flow keys / group ids / meter ids that changed, against what the
    engine believes is installed (`desired` etc. need only hold those keys)."""
    parts = bundle_ops(desired, groups, inst, inst_groups, keys, gkeys)
    before, after = meter_ops(meters, inst_meters, mkeys)
    return Plan(before, [op for part in parts for op in part], after)


def plan_resync(
    desired: Mapping[FlowKey, Flow],
    groups: Mapping[int, Group],
    meters: Mapping[int, MeterEntry],
    have: Installed,
) -> Plan:
    """Everything the switch holds against the whole desired state: adopt what is equal, add what is
    missing, replace what differs, sweep the rest (undecodable entries included; meters but KEEP_METERS)."""
    g_add, g_mod, _, _, g_del = bundle_ops(
        {}, groups, {}, have.groups, None, groups.keys() | have.groups.keys()
    )
    f_del, f_add, adopted = _all_flow_ops(desired, have.flows)
    f_del[:0] = [Op(DELETE, e) for e in have.raw_flows]  # before an ADD of the same key
    # an undecodable group whose id we want is overwritten (MODIFY), any other one deleted
    raw_ids = {g.group_id for g in have.raw_groups}
    for op in [op for op in g_add if op.item.group_id in raw_ids]:  # type: ignore[union-attr]
        g_add.remove(op)
        g_mod.append(Op(MODIFY, op.item))
    g_del.extend(Op(DELETE, g) for g in have.raw_groups if g.group_id not in groups)
    raw_meters = {m.meter_id for m in have.raw_meters if m.meter_id not in KEEP_METERS}
    before, after = meter_ops(
        meters, have.meters, meters.keys() | have.meters.keys() | raw_meters, raw_meters
    )
    return Plan(before, [*g_add, *g_mod, *f_del, *f_add, *g_del], after, adopted)

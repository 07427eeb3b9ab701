"""The sync plan alone (controller/southbound/plan.py): desired vs installed -> which flows, groups and
meters are added, replaced or removed, and in which order. No switch, no sockets."""

from __future__ import annotations

from collections.abc import Iterable

from controller.southbound.plan import (
    ADD,
    DELETE,
    MODIFY,
    FlowKey,
    Installed,
    Op,
    Plan,
    RawFlow,
    RawGroup,
    RawMeter,
    plan_push,
    plan_resync,
)
from flows import actions as A
from flows import pipeline as P
from flows.cookie import Cookie
from flows.flow import Bucket, Flow, Group, MeterEntry

APP_PORT, APP_NET = 1, 2


def flow(reg7: int, out: int = 1, owner: str = "p", actions: list[A.Action] | None = None) -> Flow:
    return Flow(
        "output", P.MATCH, {"reg7": reg7}, actions or [A.Output(out)], Cookie.for_owner(APP_PORT, owner)
    )


def flood(group_id: int, ports: Iterable[int]) -> Group:
    return Group(group_id, "all", tuple(Bucket((A.Output(p),)) for p in ports))


def to_group(reg7: int, group_id: int) -> Flow:
    return flow(reg7, actions=[A.GroupAction(group_id)])


def keyed(flows: Iterable[Flow]) -> dict[FlowKey, Flow]:
    return {FlowKey(f): f for f in flows}


def installed(items: Iterable[Flow | Group | MeterEntry], **raw: list) -> Installed:  # type: ignore[type-arg]
    have = Installed(**raw)
    for it in items:
        if isinstance(it, Flow):
            have.flows[FlowKey(it)] = it
        elif isinstance(it, Group):
            have.groups[it.group_id] = it
        else:
            have.meters[it.meter_id] = it
    return have


def resync(want: Iterable[Flow | Group | MeterEntry], have: Installed) -> Plan:
    want = list(want)
    return plan_resync(
        keyed(f for f in want if isinstance(f, Flow)),
        {g.group_id: g for g in want if isinstance(g, Group)},
        {m.meter_id: m for m in want if isinstance(m, MeterEntry)},
        have,
    )


def push(
    want: Iterable[Flow | Group | MeterEntry],
    have: Iterable[Flow | Group | MeterEntry],
    changed: Iterable[Flow | Group | MeterEntry],
) -> Plan:
    """What the engine plans after `changed` entries of the desired state changed (were added, replaced or
    removed), against what it believes `have` is installed."""
    want, have, changed = list(want), list(have), list(changed)
    inst = installed(have)
    return plan_push(
        keyed(f for f in want if isinstance(f, Flow)),
        {g.group_id: g for g in want if isinstance(g, Group)},
        {m.meter_id: m for m in want if isinstance(m, MeterEntry)},
        inst.flows,
        inst.groups,
        inst.meters,
        {FlowKey(f) for f in changed if isinstance(f, Flow)},
        {g.group_id for g in changed if isinstance(g, Group)},
        {m.meter_id for m in changed if isinstance(m, MeterEntry)},
    )


def position(ops: list[Op], item: object) -> int:
    return next(i for i, op in enumerate(ops) if op.item == item)


# --- resync: everything the switch holds against the desired state ------------------------------------------


def test_empty_switch_gets_every_flow_and_group_each_group_before_the_flows_using_it() -> None:
    g = flood(7, [1, 2])
    flows = [to_group(10, 7), flow(11), flow(12)]
    plan = resync([*flows, g], Installed())
    assert set(plan.bundle) == {Op(ADD, g), *(Op(ADD, f) for f in flows)}
    assert position(plan.bundle, g) < position(plan.bundle, flows[0])
    assert not plan.meters_before and not plan.meters_after
    assert (plan.flow_mods, plan.group_mods, plan.flow_deletes, plan.adopted) == (3, 1, 0, 0)


def test_reconnect_with_nothing_changed_adopts_everything_and_sends_nothing() -> None:
    items = [flood(7, [1, 2]), to_group(10, 7), flow(11), MeterEntry(70000, 10)]
    plan = resync(items, installed(items))
    assert not plan and plan.ops() == []
    assert plan.adopted == 2


def test_resync_sweeps_what_is_not_desired_and_replaces_what_differs() -> None:
    keep, changed, missing = flow(1), flow(2, out=5), flow(3)
    stale = flow(4, owner="gone")  # ours, no longer desired
    foreign = Flow("output", P.MATCH, {"reg7": 9}, [A.Output(1)], 0)  # a foreign cookie
    raw = RawFlow(0x1234, 120, 1, None, "cookie=0x1234, table=120, priority=1")
    have = installed([keep, flow(2, out=4), stale, foreign], raw_flows=[raw])
    plan = resync([keep, changed, missing], have)
    assert set(plan.bundle) == {
        Op(ADD, changed),
        Op(ADD, missing),
        Op(DELETE, stale),
        Op(DELETE, foreign),
    } | {Op(DELETE, raw)}
    assert plan.adopted == 1
    assert plan.flow_deletes == 3
    # deletes go before adds (an undecodable entry may sit on a key we add)
    assert max(i for i, op in enumerate(plan.bundle) if op.command == DELETE) < min(
        i for i, op in enumerate(plan.bundle) if op.command == ADD
    )
    assert plan.bundle[0] == Op(DELETE, raw)


def test_groups_change_around_the_flows_a_removed_group_goes_after_its_flows() -> None:
    old_g, new_g = flood(1, [1]), flood(2, [2])
    moved = flood(3, [3]), flood(3, [3, 4])  # same id, other buckets
    old_f, new_f = to_group(10, 1), to_group(11, 2)
    plan = resync([new_g, moved[1], new_f], installed([old_g, moved[0], old_f]))
    b = plan.bundle
    assert set(b) == {
        Op(ADD, new_g),
        Op(MODIFY, moved[1]),
        Op(DELETE, old_f),
        Op(ADD, new_f),
        Op(DELETE, old_g),
    }
    assert position(b, new_g) < position(b, new_f)  # the group exists before a flow names it
    assert position(b, old_f) < position(b, old_g)  # no flow names a group when it goes


def test_a_group_pointing_at_another_new_group_is_added_after_it() -> None:
    inner = flood(5, [1, 2])
    outer = Group(4, "indirect", [[A.GroupAction(5)]])
    plan = resync([outer, inner], Installed())
    assert plan.bundle == [Op(ADD, inner), Op(ADD, outer)]


def test_undecodable_groups_are_overwritten_when_wanted_and_deleted_otherwise() -> None:
    wanted = flood(8, [1])
    have = Installed(raw_groups=[RawGroup(8, 0, "group 8"), RawGroup(9, 0, "group 9")])
    plan = resync([wanted], have)
    assert plan.bundle == [Op(MODIFY, wanted), Op(DELETE, have.raw_groups[1])]


def test_meters_are_added_before_the_bundle_and_removed_after_it_the_packet_in_meter_never() -> None:
    m_new, m_changed, m_gone = MeterEntry(70001, 10), MeterEntry(70002, 20), MeterEntry(70003, 10)
    packet_in = MeterEntry(1, 100)
    uses = Flow("dhcp", P.MATCH, {"reg6": 1}, [A.Meter(70001), A.Controller()], Cookie.for_owner(11, "x"))
    have = installed([MeterEntry(70002, 10), m_gone, packet_in], raw_meters=[RawMeter(70004, "meter 70004")])
    plan = resync([m_new, m_changed, uses], have)
    assert plan.meters_before == [Op(ADD, m_new), Op(MODIFY, m_changed)]
    assert plan.bundle == [Op(ADD, uses)]
    assert plan.meters_after == [Op(DELETE, m_gone), Op(DELETE, MeterEntry(70004, 1))]
    assert [bundled for _, bundled in plan.steps()] == [False, True, False]
    assert plan.meter_mods == 4


def test_an_undecodable_meter_that_is_wanted_is_modified_not_added() -> None:
    m = MeterEntry(70005, 10)
    plan = resync([m], Installed(raw_meters=[RawMeter(70005, "meter 70005")]))
    assert plan.meters_before == [Op(MODIFY, m)] and not plan.meters_after


# --- push: a change of the desired state against what the engine believes is installed --------------------


def test_push_touches_only_the_changed_keys() -> None:
    a, b, c = flow(1), flow(2), flow(3)
    b2 = flow(2, out=9)
    # b replaced, c removed, d added; a is not among the changed keys: left alone even if it differed
    d = flow(4)
    plan = push([a, b2, d], [flow(1, out=7), b, c], changed=[b2, c, d])
    assert set(plan.bundle) == {Op(ADD, b2), Op(DELETE, c), Op(ADD, d)}
    assert plan.bundle.index(Op(DELETE, c)) < plan.bundle.index(Op(ADD, d))


def test_push_of_an_unchanged_entry_sends_nothing() -> None:
    a, g, m = flow(1), flood(3, [1]), MeterEntry(70000, 5)
    assert not push([a, g, m], [a, g, m], changed=[a, g, m])


def test_push_removing_a_group_and_its_flow_deletes_the_flow_first_and_a_meter_after_the_bundle() -> None:
    g, m = flood(3, [1]), MeterEntry(70000, 5)
    f = Flow("dhcp", P.MATCH, {"reg6": 1}, [A.Meter(70000), A.GroupAction(3)], Cookie.for_owner(11, "x"))
    plan = push([], [g, m, f], changed=[g, m, f])
    assert plan.bundle == [Op(DELETE, f), Op(DELETE, g)]
    assert plan.meters_after == [Op(DELETE, m)] and not plan.meters_before

"""The per-tenant flow budget: a write that adds security-group flows is refused when, with it, a chassis would
hold more of the tenant's security-group flows than the operator allows (option flow_budget_per_tenant).

The estimate (apps.acl.over_budget) needs the model as it would be after the write, so the changes are applied
to the model for the estimate. Under State (Topology.keeps_trial) they are then handed over with the write:
the model is changed once, and a refusal leaves them for State to take back. Otherwise they are always taken
back before the write goes on (or is refused): the model the caller's write then applies to is exactly the
one it validated against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from topology import errors
from topology.model import Change, Topology
from topology.records import Port, SecurityGroupRule

WriteFn = Callable[[Topology, int, float], list[Change]]
# the fields of a port that decide its security-group flows (and its weight as a remote-group member)
_PORT_FIELDS = (
    "security_groups",
    "port_security_enabled",
    "fixed_ips",
    "allowed_address_pairs",
    "binding_chassis",
    "admin_state_up",
)


def tenants_to_check(changes: list[Change]) -> set[str]:
    """Tenants whose security-group flows the changes may grow: new rules, ports joining groups or changing
    what their groups' flows are made of."""
    out: set[str] = set()
    for _kind, _ident, old, new in changes:
        if (
            isinstance(new, SecurityGroupRule)
            and old is None
            or (
                isinstance(new, Port)
                and new.port_security_enabled
                and new.security_groups
                and (old is None or any(getattr(old, f) != getattr(new, f) for f in _PORT_FIELDS))
            )
        ):
            out.add(new.tenant)
    return out


def _surely_within(topo: Topology, changes: list[Change], tenant: str, budget: int) -> bool:
    """True when the tenant's busiest chassis now, plus the most these changes can add to any chassis, stays
    within the budget (the common case: no tentative apply needed). Only port writes have such a bound."""
    from apps import acl

    bound = 0
    for _kind, _ident, _old, new in changes:
        if getattr(new, "tenant", tenant) != tenant:
            continue
        if isinstance(new, SecurityGroupRule):
            return False
        if isinstance(new, Port):
            bound += acl.port_growth_bound(topo, new)
    peak = max((total for total, _by_rule in acl.estimate(topo, tenant).values()), default=0)
    return peak + bound <= budget


def _over_budget() -> Callable[[Topology, str, int], Any] | None:
    try:
        from apps.acl import over_budget
    except ImportError:  # the estimator is not there yet: no budget to enforce
        return None
    return over_budget  # type: ignore[no-any-return]


def budgeted(fn: WriteFn, budget: int) -> WriteFn:
    """`fn`, refusing its changes (FAILED_PRECONDITION FLOW_BUDGET_EXCEEDED) when they take a tenant's
    security-group flows on some chassis over `budget` and beyond what that chassis held before (a write
    that makes an over-budget tenant no worse, e.g. detaching a group, passes). 0: no budget."""
    if budget <= 0:
        return fn

    def write(topo: Topology, rev: int, now: float) -> list[Change]:
        changes = fn(topo, rev, now)
        tenants = tenants_to_check(changes)
        estimate = _over_budget() if tenants else None
        if estimate is None:
            return changes
        tenants = {t for t in tenants if not _surely_within(topo, changes, t, budget)}
        if not tenants:
            return changes
        if topo.keeps_trial:
            _check_kept(topo, changes, tenants, budget, estimate)
            return changes
        before = {t: estimate(topo, t, budget) for t in sorted(tenants)}
        old_rev = topo.revision
        # at the model's own revision: a thread waiting for a revision (etcd: another controller's) never
        # sees it reached by this trial
        topo.apply(changes, old_rev)
        try:
            for tenant in sorted(tenants):
                excess = estimate(topo, tenant, budget)
                if excess is None:
                    continue
                prior = before[tenant]
                if prior is not None and prior.chassis == excess.chassis and excess.flows <= prior.flows:
                    continue
                raise _refusal(topo, tenant, excess)
        finally:
            topo.apply([(k, i, new, old) for k, i, old, new in reversed(changes)], old_rev)
        return changes

    return write


def _check_kept(
    topo: Topology, changes: list[Change], tenants: set[str], budget: int, estimate: Callable[..., Any]
) -> None:
    """The check on the model as the write leaves it, kept for the caller (Topology.keeps_trial): applied
    once, not tried, taken back and applied again. The model before the write is only looked at for a
    tenant found over the budget (was it already, as much?); a refusal leaves the trial for the caller to
    take back."""
    topo.settle(changes)
    for tenant in sorted(tenants):
        excess = estimate(topo, tenant, budget)
        if excess is None:
            continue
        tried = topo.trial
        topo.take_back()
        prior = estimate(topo, tenant, budget)
        topo.try_changes(tried)
        if prior is not None and prior.chassis == excess.chassis and excess.flows <= prior.flows:
            continue
        raise _refusal(topo, tenant, excess)


def _refusal(topo: Topology, tenant: str, excess: Any) -> errors.ApiError:
    rule = topo.sg_rules.get(excess.rule_id)
    group = topo.security_groups.get(rule.security_group_id) if rule is not None else None
    label = "?"
    if group is not None:
        label = repr(group.display_name or group.id) + (
            f" ({group.id})" if group.display_name not in ("", group.id) else ""
        )
    return errors.failed_precondition(
        "FLOW_BUDGET_EXCEEDED",
        f"security group rule {excess.rule_id} of group {label} would make ~{excess.flows} flows on chassis "
        f"{excess.chassis} (budget {excess.budget}, tenant {tenant!r})",
        tenant=tenant,
        chassis=str(excess.chassis),
        security_group_rule=str(excess.rule_id),
        flows=str(excess.flows),
        budget=str(excess.budget),
    )

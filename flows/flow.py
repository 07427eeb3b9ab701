"""Flow and Group values: immutable, hashable, checked against the pipeline declaration at construction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flows import fields, pipeline
from flows.actions import (
    CT,
    INSTRUCTIONS,
    Action,
    Conjunction,
    Controller,
    CtClear,
    DecTtl,
    Goto,
    GroupAction,
    Meter,
    Move,
    Output,
    PopVlan,
    PushVlan,
    Resubmit,
    SetField,
    WriteMetadata,
)
from flows.cookie import Cookie

#: one match entry: (field, canonical value, canonical mask or None)
MatchField = tuple[str, Any, Any]


class FlowError(ValueError):
    """A flow or group that breaks the pipeline declaration or OpenFlow's rules."""


_IP4 = ("eth_type", (0x0800,))
_IP6 = ("eth_type", (0x86DD,))
_IP = ("eth_type", (0x0800, 0x86DD))
#: field -> prerequisites: each (field, allowed exact values) must be in the same match
PREREQUISITES: dict[str, tuple[tuple[str, tuple[int, ...]], ...]] = {
    "ipv4_src": (_IP4,),
    "ipv4_dst": (_IP4,),
    "ipv6_src": (_IP6,),
    "ipv6_dst": (_IP6,),
    "ipv6_flabel": (_IP6,),
    "arp_op": (("eth_type", (0x0806,)),),
    "arp_spa": (("eth_type", (0x0806,)),),
    "arp_tpa": (("eth_type", (0x0806,)),),
    "arp_sha": (("eth_type", (0x0806,)),),
    "arp_tha": (("eth_type", (0x0806,)),),
    "ip_proto": (_IP,),
    "ip_dscp": (_IP,),
    "ip_ecn": (_IP,),
    "nw_ttl": (_IP,),
    "tcp_src": (_IP, ("ip_proto", (6,))),
    "tcp_dst": (_IP, ("ip_proto", (6,))),
    "udp_src": (_IP, ("ip_proto", (17,))),
    "udp_dst": (_IP, ("ip_proto", (17,))),
    "sctp_src": (_IP, ("ip_proto", (132,))),
    "sctp_dst": (_IP, ("ip_proto", (132,))),
    "icmpv4_type": (_IP4, ("ip_proto", (1,))),
    "icmpv4_code": (_IP4, ("ip_proto", (1,))),
    "icmpv6_type": (_IP6, ("ip_proto", (58,))),
    "icmpv6_code": (_IP6, ("ip_proto", (58,))),
    "ipv6_nd_target": (_IP6, ("ip_proto", (58,)), ("icmpv6_type", (135, 136))),
    "ipv6_nd_sll": (_IP6, ("ip_proto", (58,)), ("icmpv6_type", (135,))),
    "ipv6_nd_tll": (_IP6, ("ip_proto", (58,)), ("icmpv6_type", (136,))),
}


#: names of a match in given order -> the same names in canonical order (few distinct shapes)
_SORTED_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}


def normalize_match(match: Mapping[str, Any] | Iterable[Any]) -> tuple[MatchField, ...]:
    """Canonical match tuple from a mapping {field: value | (value, mask)} or (field, value[, mask]) items."""
    if not match and type(match) in (dict, tuple, list):
        return ()
    out: dict[str, MatchField] = {}
    normalize = fields.normalize
    try:
        if type(match) is dict:
            int_limit = fields._INT_LIMIT
            for name, user in match.items():  # a dict has no field twice
                if type(user) is int:  # fields.normalize's first fast path, inline
                    lim = int_limit.get(name)
                    if lim and 0 <= user < lim:
                        out[name] = (name, user, None)
                        continue
                norm = normalize(name, user)
                if norm is not None:
                    out[name] = (name, norm[0], norm[1])
        else:
            items: Iterable[Any] = match.items() if isinstance(match, Mapping) else match
            for item in items:
                if len(item) == 3:
                    name, value, mask = item
                    user = value if mask is None else (value, mask)
                else:
                    name, user = item
                if name in out:
                    raise FlowError(f"field {name} matched twice")
                norm = normalize(name, user)
                if norm is not None:
                    out[name] = (name, norm[0], norm[1])
    except fields.FieldError as e:
        raise FlowError(str(e)) from None
    names = tuple(out)
    order = _SORTED_NAMES.get(names)
    if order is None:
        order = tuple(sorted(names, key=fields.sort_key))
        if len(_SORTED_NAMES) >= _CACHE_MAX:
            _SORTED_NAMES.clear()
        _SORTED_NAMES[names] = order
    return tuple(map(out.__getitem__, order))


def _check_prerequisites(match: tuple[MatchField, ...]) -> None:
    exact = {name: value for name, value, mask in match if mask is None}
    for name, _, _ in match:
        for pre, allowed in PREREQUISITES.get(name, ()):
            if exact.get(pre) not in allowed:
                want = " or ".join(f"{v:#x}" if pre == "eth_type" else str(v) for v in allowed)
                raise FlowError(f"matching {name} needs {pre}={want} in the same match")


def _check_action_prerequisites(match: tuple[MatchField, ...], actions: tuple[Action, ...]) -> None:
    """OVS rejects actions the match does not make valid (OFPBAC_MATCH_INCONSISTENT): set_field / move
    of a field whose prerequisites the match lacks, ct() and dec_ttl without an IP match, nat() of an
    address family the match does not pin down, pop_vlan / set vlan_vid without a VLAN tag (matched,
    or pushed by an earlier action), ct(commit) of a packet matched as +inv. (Learnt from OVS 3.1.)"""
    exact = {name: value for name, value, mask in match if mask is None}

    def need(what: str, name: str) -> None:
        for pre, allowed in PREREQUISITES.get(name, ()):
            if exact.get(pre) not in allowed:
                want = " or ".join(f"{v:#x}" if pre == "eth_type" else str(v) for v in allowed)
                raise FlowError(f"{what} needs {pre}={want} in the match")

    ip_any = exact.get("eth_type") in (0x0800, 0x86DD)
    ct_state = next((v for n, v, _ in match if n == "ct_state"), 0)
    # VLAN tags on the packet at this point (OVS tracks at most two)
    vlan = (
        1
        if exact.get("vlan_vid", 0) & 0x1000
        or any(n == "vlan_vid" and v & 0x1000 and m & 0x1000 for n, v, m in match if m is not None)
        else 0
    )
    for a in actions:
        if isinstance(a, PushVlan):
            vlan += 1
            if vlan > 2:
                raise FlowError("push_vlan beyond two VLAN tags")
        elif isinstance(a, PopVlan):
            if not vlan:
                raise FlowError("pop_vlan needs a VLAN: match vlan_vid with 0x1000 set, or push_vlan first")
            vlan -= 1
        elif isinstance(a, SetField) and a.field in ("vlan_vid", "vlan_pcp") and not vlan:
            raise FlowError(f"set_field of {a.field} needs a VLAN: match one or push_vlan first")
        if isinstance(a, SetField):
            need(f"set_field of {a.field}", a.field)
        elif isinstance(a, Move):
            need(f"move from {a.src}", a.src)
            need(f"move to {a.dst}", a.dst)
        elif isinstance(a, DecTtl) and not ip_any:
            raise FlowError("dec_ttl needs eth_type=0x800 or 0x86dd in the match")
        elif isinstance(a, CT):
            if not ip_any:
                raise FlowError("ct() needs eth_type=0x800 or 0x86dd in the match")
            if a.commit and ct_state & _CT_INV:
                raise FlowError("ct(commit) of a packet matched as ct_state=+inv")
            if a.alg and exact.get("ip_proto") != _ALG_PROTO[a.alg]:
                raise FlowError(f"ct(alg={a.alg}) needs ip_proto={_ALG_PROTO[a.alg]} in the match")
            if a.nat is not None and a.nat.ip_min:
                family = 0x86DD if ":" in a.nat.ip_min else 0x0800
                if exact.get("eth_type") != family:
                    raise FlowError(f"nat to {a.nat.ip_min} needs eth_type={family:#x} in the match")


_ORDER = {Meter: 0, WriteMetadata: 2, Goto: 3}
_CT_INV = 0x10
#: conntrack helpers OVS has: ftp (tcp), tftp (udp)
_ALG_PROTO = {21: 6, 69: 17}


def _canonical_actions(actions: Iterable[Action]) -> tuple[Action, ...]:
    """Actions in canonical order: Meter first, apply-actions in given order, WriteMetadata, Goto."""
    acts = tuple(actions)
    seen: set[type] = set()
    for a in acts:
        if not isinstance(
            a,
            (
                Output,
                SetField,
                Move,
                GroupAction,
                PushVlan,
                PopVlan,
                DecTtl,
                CtClear,
                Resubmit,
                Goto,
                WriteMetadata,
                Meter,
                Conjunction,
                Controller,
                CT,
            ),
        ):
            raise FlowError(f"not an action value: {a!r}")
        if isinstance(a, INSTRUCTIONS):
            if type(a) in seen:
                raise FlowError(f"more than one {type(a).__name__} in one flow")
            seen.add(type(a))
    if any(isinstance(a, Conjunction) for a in acts) and not all(isinstance(a, Conjunction) for a in acts):
        raise FlowError("conjunction() actions cannot be mixed with other actions (OVS rejects it)")
    return tuple(sorted(acts, key=lambda a: _ORDER.get(type(a), 1)))


def _check_targets(owner: str, actions: Iterable[Action], st: pipeline.Stage | None) -> None:
    """Goto / resubmit / ct(table) targets must be declared successors (of `st`, if given)."""
    for a in actions:
        target = None
        if isinstance(a, (Goto, Resubmit)):
            target = a.stage
        elif isinstance(a, CT) and a.table is not None:
            target = a.table
        if target is None:
            continue
        try:
            t = pipeline.stage(target)
        except KeyError as e:
            raise FlowError(f"{owner}: {e.args[0]}") from None
        if st is None:
            continue
        if target not in st.next:
            raise FlowError(
                f"{owner}: stage {st.name} may not pass to {target} "
                f"(declared successors: {', '.join(sorted(st.next)) or 'none'})"
            )
        if isinstance(a, Goto) and t.table <= st.table:
            raise FlowError(f"{owner}: goto from {st.name} to {target} goes backwards; use Resubmit")


# ---------------------------------------------------------------------------------------------------------
# Validation cache. A Flow's checks (fields allowed in the stage, match prerequisites, canonical actions,
# targets, action prerequisites) read only: the stage, the match's field names, the exact values of a few
# match fields, and per action its type and a few of its attributes. `_validation_key` collects exactly
# those, so flows with equal keys pass or fail alike; only passes are cached, so every failure is
# reported by the full checks in `_validate`.
# ---------------------------------------------------------------------------------------------------------

_CACHE_MAX = 1 << 14
_STAGES: dict[str, pipeline.Stage] = pipeline.BY_NAME  # live: plug-in stages are declared at start
_PRIORITIES = frozenset(p for b in pipeline.BANDS for p in range(b.base, b.base + b.width))
#: match fields whose values (not just presence) the checks read
_VALUE_FIELDS = frozenset(
    {pre for pres in PREREQUISITES.values() for pre, _ in pres}
    | {"eth_type", "ip_proto", "vlan_vid", "ct_state"}
)
_MISS = object()
#: (stage, match key, actions key) -> permutation into canonical action order (None: already in order)
_VALID: dict[tuple[Any, ...], tuple[int, ...] | None] = {}


def _ct_key(a: CT) -> tuple[Any, ...]:
    nat = a.nat
    family = 0 if nat is None or not nat.ip_min else 2 if ":" in nat.ip_min else 1
    return (CT, bool(a.commit), a.alg, a.table, family)


#: action type -> what the checks read of such an action (a constant: the type alone)
_ACTION_KEY: dict[type, Any] = {
    Output: Output,
    GroupAction: GroupAction,
    PushVlan: PushVlan,
    PopVlan: PopVlan,
    DecTtl: DecTtl,
    CtClear: CtClear,
    WriteMetadata: WriteMetadata,
    Meter: Meter,
    Conjunction: Conjunction,
    Controller: Controller,
    SetField: lambda a: (SetField, a.field),
    Move: lambda a: (Move, a.src, a.dst),
    Goto: lambda a: (Goto, a.stage),
    Resubmit: lambda a: (Resubmit, a.stage),
    CT: _ct_key,
}


def _validation_key(stage: str, match: tuple[MatchField, ...], acts: tuple[Any, ...]) -> Any:
    """What the checks of a flow read; None when some action is not one of our exact types (no caching)."""
    akey = []
    for a in acts:
        k = _ACTION_KEY.get(type(a))
        if k is None:
            return None
        akey.append(k if type(k) is type else k(a))
    mkey = tuple([m if m[0] in _VALUE_FIELDS else m[0] for m in match])
    return (stage, mkey, tuple(akey))


def _permutation(acts: tuple[Any, ...], actions: tuple[Any, ...]) -> tuple[int, ...] | None:
    if len(actions) == len(acts) and all(x is y for x, y in zip(acts, actions)):
        return None
    pending = list(range(len(acts)))
    order = []
    for a in actions:
        i = next(i for i in pending if acts[i] is a)
        pending.remove(i)
        order.append(i)
    return tuple(order)


def _validate(
    stage_name: str, st: pipeline.Stage, match: tuple[MatchField, ...], acts: tuple[Any, ...]
) -> tuple[Action, ...]:
    """Every check of a flow (raises FlowError); its actions in canonical order."""
    for name, _, _ in match:
        if name not in st.matches:
            raise FlowError(
                f"stage {stage_name} does not match on {name} (allowed: {', '.join(sorted(st.matches))})"
            )
    _check_prerequisites(match)
    actions = _canonical_actions(acts)
    _check_targets(f"flow in {stage_name}", actions, st)
    _check_action_prerequisites(match, actions)
    return actions


@dataclass(frozen=True, slots=True)
class Flow:
    """One OpenFlow entry, by value: stage name, priority, canonical match, actions, cookie.

    Flow(stage, priority, match={...}, actions=[...], cookie=Cookie|int). `priority` may be a Band
    (its base) or an int inside a band. Raises FlowError if the flow breaks the declaration.
    """

    stage: str
    priority: int
    match: tuple[MatchField, ...] = ()
    actions: tuple[Action, ...] = ()
    cookie: int = 0
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    if TYPE_CHECKING:  # what the constructor accepts; __post_init__ makes the fields canonical

        def __init__(
            self,
            stage: str,
            priority: int | pipeline.Band,
            match: Mapping[str, Any] | Iterable[Any] = (),
            actions: Iterable[Action] = (),
            cookie: int | Cookie = 0,
        ) -> None: ...

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        st = _STAGES.get(self.stage) if type(self.stage) is str else None
        if st is None:
            try:
                st = pipeline.stage(self.stage)
            except KeyError as e:
                raise FlowError(e.args[0]) from None
        prio = self.priority
        if type(prio) is pipeline.Band:
            prio = prio.base
        if type(prio) is not int or prio not in _PRIORITIES:
            if isinstance(prio, pipeline.Band):
                prio = prio.base
            try:
                pipeline.band_of(prio)
            except ValueError as e:
                raise FlowError(f"stage {self.stage}: {e}") from None
        if prio is not self.priority:
            setattr_(self, "priority", prio)
        match = normalize_match(self.match)
        acts = self.actions
        if type(acts) is not tuple:
            acts = tuple(acts)
        key = _validation_key(st.name, match, acts)
        order = _MISS
        if key is not None:
            try:
                order = _VALID.get(key, _MISS)
            except TypeError:  # e.g. an unhashable Goto target: let the checks say what is wrong
                key = None
        if order is _MISS:
            actions = _validate(self.stage, st, match, acts)
            if key is not None:
                if len(_VALID) >= _CACHE_MAX:
                    _VALID.clear()
                # the actions' permutation into canonical order (it depends on their types only)
                _VALID[key] = _permutation(acts, actions)
        elif order is None:
            actions = acts
        else:
            actions = tuple(map(acts.__getitem__, order))  # type: ignore[call-overload]  # a permutation
        setattr_(self, "match", match)
        setattr_(self, "actions", actions)
        cookie = self.cookie
        if type(cookie) is Cookie:
            cookie = cookie.value
        if type(cookie) is not int or not 0 <= cookie < 1 << 64:
            cookie = cookie.value if isinstance(cookie, Cookie) else cookie
            if not isinstance(cookie, int) or not 0 <= cookie < 1 << 64:
                raise FlowError(f"cookie {self.cookie!r} is not a 64-bit value")
        if cookie is not self.cookie:
            setattr_(self, "cookie", cookie)
        setattr_(self, "_hash", hash((self.stage, prio, match, actions, cookie)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def table(self) -> int:
        """Table number of this flow's stage."""
        return pipeline.table_of(self.stage)

    def match_dict(self) -> dict[str, Any]:
        """The match as {field: value or (value, mask)}."""
        return {n: v if m is None else (v, m) for n, v, m in self.match}

    @property
    def owner(self) -> Cookie | None:
        """The decoded cookie, or None if the cookie is not ours."""
        return Cookie.decode(self.cookie)

    def key(self) -> tuple[str, int, tuple[MatchField, ...]]:
        """What OpenFlow identifies a flow by (table, priority, match): for MODIFY/DELETE_STRICT."""
        return (self.stage, self.priority, self.match)


GROUP_TYPES = ("all", "select", "indirect", "ff")


@dataclass(frozen=True, slots=True)
class Bucket:
    """One group bucket: its actions, weight (select groups) and liveness watch (ff groups)."""

    actions: tuple[Action, ...]
    weight: int = 0
    watch_port: int = 0xFFFFFFFF
    watch_group: int = 0xFFFFFFFF

    if TYPE_CHECKING:  # any iterable of actions; __post_init__ makes it a tuple

        def __init__(
            self,
            actions: Iterable[Action],
            weight: int = 0,
            watch_port: int = 0xFFFFFFFF,
            watch_group: int = 0xFFFFFFFF,
        ) -> None: ...

    def __post_init__(self) -> None:
        acts = tuple(self.actions)
        for a in acts:
            if isinstance(a, INSTRUCTIONS + (Conjunction,)):
                raise FlowError(f"{type(a).__name__} cannot be in a group bucket")
        _canonical_actions(acts)
        _check_targets("group bucket", acts, None)
        object.__setattr__(self, "actions", acts)


@dataclass(frozen=True, slots=True)
class Group:
    """An OpenFlow group: id, type ("all", "select", "indirect", "ff") and buckets."""

    group_id: int
    type: str
    buckets: tuple[Bucket, ...]

    if TYPE_CHECKING:  # buckets or bare action lists; __post_init__ makes them Buckets

        def __init__(
            self, group_id: int, type: str, buckets: Iterable[Bucket | Iterable[Action]]
        ) -> None: ...

    def __post_init__(self) -> None:
        if not 0 <= self.group_id <= 0xFFFFFF00:
            raise FlowError(f"group id {self.group_id:#x} out of range")
        if self.type not in GROUP_TYPES:
            raise FlowError(f"group type {self.type!r} not one of {GROUP_TYPES}")
        buckets = tuple(b if isinstance(b, Bucket) else Bucket(tuple(b)) for b in self.buckets)
        if self.type == "select":
            # OpenFlow needs a weight on select buckets; 1 is OVS's default.
            buckets = tuple(
                b if b.weight else Bucket(b.actions, 1, b.watch_port, b.watch_group) for b in buckets
            )
        if self.type == "indirect" and len(buckets) != 1:
            raise FlowError("an indirect group has exactly one bucket")
        object.__setattr__(self, "buckets", buckets)


#: meter ids a switch may hold (OpenFlow reserves 0xffff0000 and above; 0 is no meter)
MAX_METER_ID = 0xFFFF0000


@dataclass(frozen=True, slots=True)
class MeterEntry:
    """An OpenFlow meter, by value: id and one drop band of `rate` packets/s with `burst` packets of burst
    (0: none), or with `kbps` of `rate` kbit/s with `burst` kbit (rate limiting traffic, e.g. QoS).
    Flows reach it through the Meter instruction; the sync engine adds it before them and deletes it after
    them (see controller/southbound/plan.py)."""

    meter_id: int
    rate: int
    burst: int = 0
    kbps: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.meter_id < MAX_METER_ID:
            raise FlowError(f"meter id {self.meter_id:#x} out of range")
        if not 0 < self.rate < 1 << 32:
            raise FlowError(f"meter rate {self.rate} is not a positive 32-bit value")
        if not 0 <= self.burst < 1 << 32:
            raise FlowError(f"meter burst {self.burst} is not a 32-bit value")

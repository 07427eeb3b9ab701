"""The one declaration of the OpenFlow pipeline: stages, registers, priority bands.

Table numbers live only in this module. Everything else names stages ("l2_lookup"), registers
(SRC_PORT) and priority bands (MATCH); tests and debug output never depend on the numbers.

Packet walk (logical switch, then optionally a logical router, then back to a logical switch)::

    classify ─► port_sec_in ─► plugin_from_port ─► (plug-in stages) ─► acl_egress ─► fw_router_in ─► acl_egress_commit
       │                                                               ▲    │  ct(table=acl_egress)           │
       │                                                               └────┘  (replies / +rel skip to arp_nd) ▼
       │                                                                        arp_nd ─► dhcp ─► lb ─► l2_lookup
       │                                                                                                    │
       └─ from tunnel / provider VLAN ──────────────────────────────────────────────────────────────► l2_lookup
                                                                                                            │
    l2_lookup ─┬─► egress_dispatch ─► acl_ingress ─► acl_ingress_commit ─► plugin_to_port ─► (plug-in stages) ─► output
               │        └─► tunnel / VLAN out                         (remote port; local port: the line above)
               └─► dnat ─► l3_lookup ─► arp_resolve ─► fw_router_out ─► snat ─► (resubmit) l2_lookup   (router MAC)

    arp_nd ─► mac_lookup ─► mac_found ─► out IN_PORT         (an ARP request / NS for a port's address: answered)
                   └─► dhcp                                  (an address nobody has: the request goes on)
    arp_resolve ─► (resubmit) mac_lookup ─► mac_found ─► fw_router_out   (a port's address: its MAC)
                                  └─► arp_resolve (LOOKED): learned neighbours, the gateway's ask-the-controller

Register map (the only place logical state is assigned to packet registers)::

    field       bits    name            meaning
    ----------  ------  --------------  ------------------------------------------------------------------
    metadata    0..63   DATAPATH        key of the logical network (or router) the packet is in; < 2**24
                                        so it travels unchanged as a VXLAN VNI / GRE key / Geneve VNI
    reg0        0..31   NEXT_HOP        IPv4 next hop chosen by l3_lookup (read by snat / neighbour rules)
    xxreg3      0..127  NEXT_HOP6       IPv6 next hop chosen by l3_lookup; a neighbour solicitation's target
                                        (reg12..reg15: no other register overlaps it)
    reg5        0..15   CT_ZONE         conntrack zone of the current logical port or router
    reg6        0..31   SRC_PORT        key of the logical port the packet came from (0: none / tunnel)
    reg7        0..31   DST_PORT        key of the logical port the packet goes to (0: not decided yet)
    reg8        0..31   MAC_LO          mac_lookup's answer (a port's MAC), low 32 bits
    reg9        0..15   MAC_HI          mac_lookup's answer, high 16 bits
    reg10       0..31   FLAGS           named bits, see FLAGS below
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------------------
# Priority bands
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Band:
    """A named range of flow priorities: [base, base + width)."""

    name: str
    base: int
    width: int

    def __call__(self, offset: int = 0) -> int:
        """Priority `offset` steps above the band's base (e.g. MATCH(prefix_len) for longest prefix)."""
        if not 0 <= offset < self.width:
            raise ValueError(f"offset {offset} outside priority band {self.name} (width {self.width})")
        return self.base + offset

    def __contains__(self, priority: object) -> bool:
        return isinstance(priority, int) and self.base <= priority < self.base + self.width


#: the catch-all of a stage: drop, or pass everything on to the next stage
DEFAULT = Band("default", 0, 1)
#: broad fallbacks that specific matches override (flood unknown unicast, allow-all ACLs)
LOW = Band("low", 100, 100)
#: ordinary matches; longest-prefix routing uses MATCH(2 * prefix_len (+1)) so longer prefixes win (IPv6 /128
#: included)
MATCH = Band("match", 1000, 300)
#: exceptions that must beat ordinary matches (anti-spoofing drops, ct_state=+inv, conjunction results)
HIGH = Band("high", 2000, 200)
#: operator / debug overrides above everything the apps compile
OVERRIDE = Band("override", 3000, 100)

BANDS: tuple[Band, ...] = (DEFAULT, LOW, MATCH, HIGH, OVERRIDE)


def band_of(priority: int) -> Band:
    """The band holding `priority`; raises ValueError for a priority outside every band."""
    for band in BANDS:
        if priority in band:
            return band
    raise ValueError(f"priority {priority} is in no priority band ({', '.join(b.name for b in BANDS)})")


# ---------------------------------------------------------------------------------------------------------
# Registers
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register:
    """A named slice [start, end] (inclusive bit numbers) of a packet field carrying logical state."""

    name: str
    field: str
    start: int
    end: int
    doc: str

    @property
    def mask(self) -> int:
        """The slice's bits as a mask of the whole field."""
        return ((1 << (self.end - self.start + 1)) - 1) << self.start

    @property
    def n_bits(self) -> int:
        return self.end - self.start + 1


DATAPATH = Register("DATAPATH", "metadata", 0, 63, "key of the logical network or router (< 2**24)")
NEXT_HOP = Register("NEXT_HOP", "reg0", 0, 31, "IPv4 next hop chosen by l3_lookup")
NEXT_HOP6 = Register("NEXT_HOP6", "xxreg3", 0, 127, "IPv6 next hop chosen by l3_lookup, or an NS's target")
CT_ZONE = Register("CT_ZONE", "reg5", 0, 15, "conntrack zone of the current logical port or router")
SRC_PORT = Register("SRC_PORT", "reg6", 0, 31, "key of the logical port the packet came from")
DST_PORT = Register("DST_PORT", "reg7", 0, 31, "key of the logical port the packet goes to")
FLAGS = Register("FLAGS", "reg10", 0, 31, "flag bits, see Flag")
MAC_LO = Register("MAC_LO", "reg8", 0, 31, "mac_lookup's answer: the low 32 bits of the MAC")
MAC_HI = Register("MAC_HI", "reg9", 0, 15, "mac_lookup's answer: the high 16 bits of the MAC")

REGISTERS: tuple[Register, ...] = (
    DATAPATH,
    NEXT_HOP,
    NEXT_HOP6,
    CT_ZONE,
    SRC_PORT,
    DST_PORT,
    FLAGS,
    MAC_LO,
    MAC_HI,
)

#: the largest datapath key: it must fit a 24-bit VNI
MAX_DATAPATH_KEY = (1 << 24) - 1


@dataclass(frozen=True, slots=True)
class Flag:
    """One named bit of the FLAGS register."""

    name: str
    bit: int
    doc: str

    @property
    def mask(self) -> int:
        return 1 << self.bit


FROM_TUNNEL = Flag("FROM_TUNNEL", 0, "arrived from a tunnel: never sent back into a tunnel (split horizon)")
ROUTED = Flag("ROUTED", 1, "crossed a logical router: TTL decremented, MACs rewritten")
ALLOW_LOOPBACK = Flag("ALLOW_LOOPBACK", 2, "may leave on its own in_port (ARP/ND responder replies)")
CT_COMMIT = Flag("CT_COMMIT", 3, "acl accepted a new connection: commit it to conntrack")
NAT_DONE = Flag("NAT_DONE", 4, "dnat/snat already applied: do not translate again")
FLOOD = Flag("FLOOD", 5, "destination is broadcast/multicast/unknown: replicate")
PORT_SECURED = Flag("PORT_SECURED", 6, "from a VM port with port security: port_sec_in's shared checks apply")
REMOTE = Flag("REMOTE", 7, "DST_PORT is bound on another chassis (l2_lookup set tun_ipv4_dst): send it there")
ARP_ASK = Flag(
    "ARP_ASK", 8, "mac_lookup runs for an ARP request's target (answer it), not for a routed packet"
)
LOOKED = Flag("LOOKED", 9, "arp_resolve asked mac_lookup already: what is left is arp_resolve's own flows")
ND_ROUTER = Flag("ND_ROUTER", 10, "mac_lookup's answer is a router's address: its advertisement sets R")

FLAG_BITS: tuple[Flag, ...] = (
    FROM_TUNNEL,
    ROUTED,
    ALLOW_LOOPBACK,
    CT_COMMIT,
    NAT_DONE,
    FLOOD,
    PORT_SECURED,
    REMOTE,
)


def flags_match(set_: Iterable[Flag] = (), clear: Iterable[Flag] = ()) -> tuple[int, int]:
    """(value, mask) for matching FLAGS with the given bits set and the given bits clear."""
    value = 0
    mask = 0
    for f in set_:
        value |= f.mask
        mask |= f.mask
    for f in clear:
        if value & f.mask:
            raise ValueError(f"flag {f.name} both set and clear")
        mask |= f.mask
    return value, mask


# ---------------------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stage:
    """One table: its name, number, the fields its flows may match, and the stages it may pass to."""

    name: str
    table: int
    matches: frozenset[str]
    next: frozenset[str]
    doc: str


_L2 = {"eth_src", "eth_dst", "eth_type", "vlan_vid"}
_IP = {"ip_proto", "ipv4_src", "ipv4_dst", "ipv6_src", "ipv6_dst", "ip_dscp", "nw_ttl"}
_L4 = {
    "tcp_src",
    "tcp_dst",
    "udp_src",
    "udp_dst",
    "sctp_src",
    "sctp_dst",
    "icmpv4_type",
    "icmpv4_code",
    "icmpv6_type",
    "icmpv6_code",
}
_ARP = {"arp_op", "arp_spa", "arp_tpa", "arp_sha", "arp_tha"}
_ND = {"ipv6_nd_target", "ipv6_nd_sll", "ipv6_nd_tll"}
_CT = {"ct_state", "ct_zone", "ct_mark", "ct_label"}
_LOGICAL = {"metadata", "reg0", "xxreg3", "reg5", "reg6", "reg7", "reg8", "reg9", "reg10"}
_ACL = _LOGICAL | _L2 | _IP | _L4 | _CT | {"conj_id"}


def _stage(name: str, table: int, matches: Iterable[str], next_: Iterable[str], doc: str) -> Stage:
    return Stage(name, table, frozenset(matches), frozenset(next_), doc)


STAGES: tuple[Stage, ...] = (
    _stage(
        "classify",
        0,
        {"in_port", "tunnel_id", "tun_ipv4_src", "tun_ipv4_dst", "vlan_vid", "eth_dst"},
        {"port_sec_in", "l2_lookup", "l3_lookup"},
        "in_port / tunnel tun_id / provider VLAN -> DATAPATH in metadata, SRC_PORT, FROM_TUNNEL; "
        "on a gateway chassis, a router-redirect tun_id -> the router's l3_lookup",
    ),
    _stage(
        "port_sec_in",
        10,
        _LOGICAL | {"in_port"} | _L2 | _IP | _L4 | _ARP | _ND,
        {"plugin_from_port"},
        "anti-spoofing: only the port's own MAC / IPs (and allowed address pairs) may enter, ARP included; "
        "a VM never answers DHCP; everything else drops",
    ),
    _stage(
        "plugin_from_port",
        14,
        _LOGICAL,
        {"acl_egress"},
        "hook for plug-ins on packets from a VM port (after port security, before the egress ACL): passes "
        "to the first plug-in stage of the hook (tables 15-19), or on to acl_egress",
    ),
    _stage(
        "acl_egress",
        20,
        _ACL,
        {"acl_egress", "fw_router_in", "arp_nd"},
        "from-port security groups: ct(zone=the port's zone, table=acl_egress); +inv drops, replies "
        "(+est+rpl) and +rel pass on; other tracked packets pass only if a rule of the port's groups allows "
        "(conjunctions), then fw_router_in; non-IP passes",
    ),
    _stage(
        "fw_router_in",
        24,
        _ACL,
        {"acl_egress_commit"},
        "router firewall, ingress side: a packet to a firewalled router interface's MAC is checked "
        "against the interface's ingress policy (ordered: allow / deny / reject to the controller)",
    ),
    _stage(
        "acl_egress_commit",
        27,
        _ACL,
        {"arp_nd"},
        "a new connection that got this far is committed to conntrack in CT_ZONE",
    ),
    _stage(
        "arp_nd",
        30,
        _LOGICAL | _L2 | _ARP | _ND | {"ip_proto", "ipv6_src", "icmpv6_type", "icmpv6_code"},
        {"dhcp", "mac_lookup"},
        "answers ARP / neighbour solicitations for known addresses in flows: an ARP request's target (NEXT_HOP) "
        "or an NS's target (NEXT_HOP6) goes to mac_lookup (a port asking about its own address, or duplicate "
        "address detection from ::, is not answered)",
    ),
    _stage(
        "mac_lookup",
        32,
        _LOGICAL,
        {"mac_found", "dhcp", "arp_resolve"},
        "(DATAPATH, NEXT_HOP) -> MAC_LO/MAC_HI := the MAC of the port holding that address (one flow per "
        "address, for ARP answers and routing both); unknown: an ARP request goes on (dhcp), a routed packet "
        "back to arp_resolve's other flows (LOOKED)",
    ),
    _stage(
        "mac_found",
        33,
        _LOGICAL | {"eth_type", "ip_proto", "icmpv6_type"},
        {"fw_router_out", "mac_found"},
        "ARP_ASK: the ARP reply (or the neighbour advertisement: made in two passes, as OVS sets nd_tll only "
        "on a packet that is an NA already) built from the registers, out IN_PORT; else (routing) eth_dst := "
        "the MAC",
    ),
    _stage(
        "dhcp",
        40,
        _LOGICAL
        | _L2
        | {"ip_proto", "ipv4_src", "ipv4_dst", "udp_src", "udp_dst", "ipv6_dst", "icmpv6_type"},
        {"lb"},
        "DHCP, DHCPv6 requests and IPv6 router solicitations to the controller (metered packet-in); everything "
        "else passes",
    ),
    _stage(
        "lb",
        50,
        _LOGICAL | _L2 | _IP | _L4 | _CT,
        {"l2_lookup", "lb", "plugin_to_port"},
        "load-balancer VIPs after DNAT: eth_dst VIP MAC -> the member's (or its router's) MAC; hairpin: "
        "SNAT to the VIP in the VIP's zone (ct(table=lb)), the reply un-NAT'ed and out its own port",
    ),
    _stage(
        "l2_lookup",
        60,
        _LOGICAL
        | {"eth_dst", "eth_type", "vlan_vid", "arp_op", "arp_tpa"}
        | {"ip_proto", "ipv6_dst", "icmpv6_type", "icmpv6_code", "ipv6_src", "ipv6_nd_target"},
        {"egress_dispatch", "dnat", "mac_lookup"},
        "dst MAC -> DST_PORT, or flood group (an unanswered solicited-node NS: the ND group); router port "
        "MACs go to the router (dnat); on a gateway chassis, ARP from the physical network for a router's "
        "gateway / floating IPs is answered here, and neighbour solicitations for its IPv6 addresses are "
        "asked of mac_lookup",
    ),
    _stage(
        "dnat",
        70,
        _ACL,
        {"dnat", "l3_lookup"},
        "router: floating IP / un-SNAT of replies via ct(nat) in the router's zone; on a gateway chassis, "
        "echo requests from outside to the gateway address are answered (before ct)",
    ),
    _stage(
        "l3_lookup",
        80,
        _LOGICAL | _L2 | _IP | _ARP | {"icmpv4_type", "icmpv4_code", "icmpv6_type", "icmpv6_code"},
        {"l3_lookup", "arp_resolve", "snat"},
        "router: longest-prefix routing (priority = prefix length), IPv4 and IPv6; dec_ttl (hop limit), eth_src "
        ":= interface MAC, NEXT_HOP / NEXT_HOP6 := next hop, DATAPATH := egress network; echo replies (ICMP and "
        "ICMPv6) for the router's own addresses",
    ),
    _stage(
        "arp_resolve",
        85,
        _LOGICAL | {"eth_type"},
        {"fw_router_out", "snat", "mac_lookup"},
        "router: NEXT_HOP in the egress network -> eth_dst: a port's address through mac_lookup (every "
        "port's MAC is known: no ARP request); learned neighbours, VIPs, the router's own gateway here",
    ),
    _stage(
        "fw_router_out",
        87,
        _ACL,
        {"snat"},
        "router firewall, egress side: a routed packet leaving a firewalled interface (eth_src = its MAC) "
        "is checked against the interface's egress policy; replies (+rpl) and +rel pass",
    ),
    _stage(
        "snat",
        90,
        _ACL,
        {"snat", "l2_lookup"},
        "router: SNAT / floating IP source translation, then resubmit to l2_lookup of egress network",
    ),
    _stage(
        "egress_dispatch",
        100,
        _LOGICAL | {"eth_dst", "in_port"},
        {"acl_ingress"},
        "DST_PORT local -> acl_ingress; remote -> tun_id+tun_dst+tunnel port; provider -> VLAN out",
    ),
    _stage(
        "acl_ingress",
        110,
        _ACL,
        {"acl_ingress", "acl_ingress_commit", "plugin_to_port"},
        "to-port security groups: ct(zone=the destination port's zone, table=acl_ingress); as acl_egress, "
        "with rules matching the remote end as source",
    ),
    _stage(
        "acl_ingress_commit",
        115,
        _ACL,
        {"plugin_to_port"},
        "a new connection allowed to the port is committed to conntrack in CT_ZONE",
    ),
    _stage(
        "plugin_to_port",
        116,
        _LOGICAL,
        {"output"},
        "hook for plug-ins on packets to a local VM port (after the ingress ACL, before output): passes to "
        "the first plug-in stage of the hook (tables 117-119), or on to output",
    ),
    _stage(
        "output",
        120,
        _LOGICAL | {"in_port", "eth_dst"},
        {"output"},
        "DST_PORT -> local OpenFlow port (drops hairpin unless ALLOW_LOOPBACK: then in_port := 0 and again)",
    ),
)

_BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
_BY_TABLE: dict[int, Stage] = {s.table: s for s in STAGES}
#: every declared stage by name, plug-in stages included (live: flows/flow.py checks flows against it)
BY_NAME = _BY_NAME


@dataclass(frozen=True, slots=True)
class Hook:
    """A place in the pipeline reserved for plug-in stages: the core stage that enters it, the tables its
    plug-in stages may take, and the core stage the chain leaves to. With no plug-in stage the hook's
    entry passes straight on (apps/defaults.py), so a core without plug-ins forwards as before."""

    name: str
    entry: str
    tables: range
    exit: str


#: the plug-in hooks: from a VM port (policing what it sends, marking it) and to a local VM port
HOOKS: dict[str, Hook] = {
    "from_port": Hook("from_port", "plugin_from_port", range(15, 20), "acl_egress"),
    "to_port": Hook("to_port", "plugin_to_port", range(117, 120), "output"),
}
#: hook name -> the plug-in stages declared in it, in table order
_PLUGIN_STAGES: dict[str, list[Stage]] = {h: [] for h in HOOKS}
#: the match fields a plug-in stage may use: the logical registers, L2, IP and L4 headers (no conntrack)
PLUGIN_MATCHES = frozenset(_LOGICAL | _L2 | _IP | _L4)


def declare_plugin_stage(name: str, hook: str, table: int, doc: str) -> Stage:
    """Declare a plug-in's stage at `table` inside `hook`'s reserved tables (raises ValueError otherwise, or
    when the name or table is taken). Its flows are then checked like every other: they match only
    PLUGIN_MATCHES and pass only to the next stage of the hook's chain. Idempotent for an equal
    declaration (a plug-in loaded twice in one process, as tests do)."""
    if hook not in HOOKS:
        raise ValueError(f"unknown plug-in hook {hook!r}; hooks: {', '.join(HOOKS)}")
    h = HOOKS[hook]
    old = _BY_NAME.get(name)
    if old is not None:
        if old.table == table and old in _PLUGIN_STAGES[hook]:
            return old
        raise ValueError(f"stage name {name!r} is taken")
    if table not in h.tables:
        raise ValueError(f"plug-in stage {name!r}: table {table} outside hook {hook}'s tables {h.tables}")
    if table in _BY_TABLE:
        raise ValueError(f"plug-in stage {name!r}: table {table} is taken by {_BY_TABLE[table].name}")
    chain = sorted([*_PLUGIN_STAGES[hook], Stage(name, table, PLUGIN_MATCHES, frozenset(), doc)], key=_table)
    _PLUGIN_STAGES[hook] = _relink(h, chain)
    return _BY_NAME[name]


def remove_plugin_stage(name: str) -> None:
    """Undo declare_plugin_stage (a plug-in uninstalled in this process): the hook's chain is relinked
    without it. A no-op for a name that is not a plug-in stage."""
    for hook, stages in _PLUGIN_STAGES.items():
        for s in stages:
            if s.name == name:
                del _BY_NAME[name], _BY_TABLE[s.table]
                _PLUGIN_STAGES[hook] = _relink(HOOKS[hook], [x for x in stages if x.name != name])
                return


def plugin_stages(hook: str) -> list[Stage]:
    """The plug-in stages of `hook`, in table order (the order a packet visits them)."""
    return list(_PLUGIN_STAGES[hook])


def hook_next(stage_name: str) -> str:
    """Where a hook entry or a plug-in stage passes a packet it does not act on: the next plug-in stage of
    the chain, or the core stage the hook leaves to."""
    for h in HOOKS.values():
        chain = [h.entry, *(s.name for s in _PLUGIN_STAGES[h.name]), h.exit]
        if stage_name in chain[:-1]:
            return chain[chain.index(stage_name) + 1]
    raise KeyError(f"{stage_name!r} is not a hook entry or a plug-in stage")


def all_stages() -> list[Stage]:
    """Every declared stage, core and plug-in, in table order."""
    return sorted(_BY_TABLE.values(), key=_table)


def _table(s: Stage) -> int:
    return s.table


def _relink(h: Hook, chain: list[Stage]) -> list[Stage]:
    """Each stage of the chain (entry, plug-in stages) may pass to the next one only."""
    names = [h.entry, *(s.name for s in chain), h.exit]
    linked = []
    for s in [_BY_NAME[h.entry], *chain]:
        nxt = names[names.index(s.name) + 1]
        new = Stage(s.name, s.table, s.matches, frozenset({nxt}), s.doc)
        _BY_NAME[s.name] = _BY_TABLE[s.table] = new
        if s.name != h.entry:
            linked.append(new)
    return linked


#: the stage every packet enters
FIRST_STAGE = "classify"


def stage(name: str) -> Stage:
    """The declared stage called `name`; KeyError names the known stages."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; known: {', '.join(_BY_NAME)}") from None


def table_of(name: str) -> int:
    """Table number of stage `name`."""
    return stage(name).table


def stage_at(table: int) -> Stage | None:
    """The stage at table number `table`, or None if no stage lives there."""
    return _BY_TABLE.get(table)


def _check_declaration() -> None:
    """Internal consistency: unique names/numbers, successors exist, gotos can go forward."""
    if len(_BY_NAME) != len(STAGES) or len(_BY_TABLE) != len(STAGES):
        raise AssertionError("duplicate stage name or table number")
    for s in STAGES:
        if not 0 <= s.table < 255:
            raise AssertionError(f"stage {s.name}: table {s.table} out of range")
        for n in s.next:
            if n not in _BY_NAME:
                raise AssertionError(f"stage {s.name}: successor {n!r} undeclared")
    if STAGES[0].name != FIRST_STAGE or STAGES[0].table != 0:
        raise AssertionError("classify must be table 0")


_check_declaration()

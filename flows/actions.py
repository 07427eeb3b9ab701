"""Immutable action and instruction values of a Flow (no os-ken objects here).

Dropping is the absence of output actions. ``Goto``, ``WriteMetadata`` and ``Meter`` are OpenFlow
instructions rather than actions; a Flow keeps them in its action tuple in canonical places
(Meter first, WriteMetadata and Goto last) and the encoder splits them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import netaddr

from flows import fields

# OpenFlow 1.3 reserved port numbers
IN_PORT = 0xFFFFFFF8
TABLE = 0xFFFFFFF9
NORMAL = 0xFFFFFFFA
FLOOD = 0xFFFFFFFB
ALL = 0xFFFFFFFC
CONTROLLER = 0xFFFFFFFD
LOCAL = 0xFFFFFFFE
ANY = 0xFFFFFFFF
#: the largest ordinary port number OVS accepts (16-bit port space below the OpenFlow 1.0 reserved range)
MAX_PORT = 0xFEFF
PORT_NAMES = {
    IN_PORT: "IN_PORT",
    TABLE: "TABLE",
    NORMAL: "NORMAL",
    FLOOD: "FLOOD",
    ALL: "ALL",
    CONTROLLER: "CONTROLLER",
    LOCAL: "LOCAL",
    ANY: "ANY",
}

#: the largest datapath-specific group id (above it are reserved ids)
MAX_GROUP_ID = 0xFFFFFF00

# packet-in reasons (OFPR_*)
REASON_NO_MATCH = 0
REASON_ACTION = 1
REASON_INVALID_TTL = 2


class ActionError(ValueError):
    """An action value that cannot exist."""


def _u(name: str, v: int, bits: int) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < (1 << bits):
        raise ActionError(f"{name}={v!r} is not a {bits}-bit unsigned integer")


@dataclass(frozen=True, slots=True)
class Output:
    """Send the packet out `port` (an OpenFlow port number or a reserved port such as IN_PORT)."""

    port: int
    max_len: int = 0

    def __post_init__(self) -> None:
        _u("port", self.port, 32)
        _u("max_len", self.max_len, 16)
        if self.port == CONTROLLER:
            raise ActionError("use Controller() to send to the controller (one canonical form)")
        if self.port > MAX_PORT and self.port not in (IN_PORT, TABLE, NORMAL, FLOOD, ALL, LOCAL):
            raise ActionError(
                f"output port {self.port:#x} is neither a port (< 0xff00) nor a usable reserved one"
            )


@dataclass(frozen=True, slots=True)
class SetField:
    """Load `value` into `field`; with `mask`, only the mask's bits (Nicira reg_load2)."""

    field: str
    value: Any
    mask: Any = None

    def __post_init__(self) -> None:
        user = self.value if self.mask is None else (self.value, self.mask)
        norm = fields.normalize(self.field, user)
        if norm is None:
            raise ActionError(f"set_field {self.field} with an all-zero mask does nothing")
        object.__setattr__(self, "value", norm[0])
        object.__setattr__(self, "mask", norm[1])


def load(fld: str, value: int, start: int = 0, end: int | None = None) -> SetField:
    """``load:value->fld[start..end]`` as a masked SetField (ovs-ofctl bit numbering, inclusive)."""
    width = fields.field_size(fld) * 8
    end = width - 1 if end is None else end
    if not 0 <= start <= end < width:
        raise ActionError(f"bad bit range [{start}..{end}] for {fld} ({width} bits)")
    n = end - start + 1
    _u("value", value, n)
    mask = ((1 << n) - 1) << start
    return SetField(fld, fields.from_int(fld, value << start), fields.from_int(fld, mask))


@dataclass(frozen=True, slots=True)
class Move:
    """``move:src[src_ofs..]->dst[dst_ofs..]`` over `n_bits` bits (Nicira reg_move)."""

    src: str
    dst: str
    n_bits: int
    src_ofs: int = 0
    dst_ofs: int = 0

    def __post_init__(self) -> None:
        for name, ofs in ((self.src, self.src_ofs), (self.dst, self.dst_ofs)):
            width = fields.field_size(name) * 8
            if self.n_bits < 1 or ofs < 0 or ofs + self.n_bits > width:
                raise ActionError(f"move of {self.n_bits} bits at {ofs} overflows {name} ({width} bits)")


@dataclass(frozen=True, slots=True)
class GroupAction:
    """Hand the packet to group `group_id` (replication for ALL groups, choice for SELECT)."""

    group_id: int

    def __post_init__(self) -> None:
        _u("group_id", self.group_id, 32)
        if self.group_id > MAX_GROUP_ID:
            raise ActionError(f"group id {self.group_id:#x} is reserved")


@dataclass(frozen=True, slots=True)
class PushVlan:
    """Push a VLAN tag (then SetField vlan_vid = 0x1000 | vid)."""

    ethertype: int = 0x8100


@dataclass(frozen=True, slots=True)
class PopVlan:
    """Pop the outer VLAN tag."""


@dataclass(frozen=True, slots=True)
class DecTtl:
    """Decrement the IP TTL / hop limit; a packet at TTL 0 or 1 is dropped (or sent to controller)."""


@dataclass(frozen=True, slots=True)
class CtClear:
    """Forget conntrack state (before a second ct() in another zone)."""


@dataclass(frozen=True, slots=True)
class Resubmit:
    """Look the packet up in `stage` and come back (Nicira resubmit; may go to earlier tables)."""

    stage: str


@dataclass(frozen=True, slots=True)
class Goto:
    """Instruction: continue in `stage` (must be a later table)."""

    stage: str


@dataclass(frozen=True, slots=True)
class WriteMetadata:
    """Instruction: metadata = (metadata & ~mask) | (value & mask)."""

    value: int
    mask: int = 0xFFFFFFFFFFFFFFFF

    def __post_init__(self) -> None:
        _u("metadata", self.value, 64)
        _u("metadata mask", self.mask, 64)
        object.__setattr__(self, "value", self.value & self.mask)


@dataclass(frozen=True, slots=True)
class Meter:
    """Instruction: pass the packet through meter `meter_id` (rate limit packet-ins)."""

    meter_id: int

    def __post_init__(self) -> None:
        _u("meter_id", self.meter_id, 32)


@dataclass(frozen=True, slots=True)
class Conjunction:
    """``conjunction(conj_id, clause/n_clauses)``; clause counts from 1 as in ovs-ofctl."""

    conj_id: int
    clause: int
    n_clauses: int

    def __post_init__(self) -> None:
        _u("conj_id", self.conj_id, 32)
        if not 2 <= self.n_clauses <= 64 or not 1 <= self.clause <= self.n_clauses:
            raise ActionError(f"bad conjunction clause {self.clause}/{self.n_clauses}")


@dataclass(frozen=True, slots=True)
class Controller:
    """Send the packet to the controller as a packet-in (Nicira controller action)."""

    reason: int = REASON_ACTION
    max_len: int = 0xFFFF
    controller_id: int = 0

    def __post_init__(self) -> None:
        _u("reason", self.reason, 8)
        _u("max_len", self.max_len, 16)
        _u("controller_id", self.controller_id, 16)


@dataclass(frozen=True, slots=True)
class NAT:
    """``nat`` inside ct(): kind "src"/"dst" with an address (range) and optional port range;
    kind "" with no range means "translate replies of an existing NAT connection"."""

    kind: str = ""
    ip_min: str = ""
    ip_max: str = ""
    port_min: int | None = None
    port_max: int | None = None
    persistent: bool = False
    random: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("", "src", "dst"):
            raise ActionError(f"nat kind must be '', 'src' or 'dst', not {self.kind!r}")
        ips: list[netaddr.IPAddress | None] = []  # each parsed once, kept in its canonical spelling
        for name in ("ip_min", "ip_max"):
            v = getattr(self, name)
            addr = None
            if v:
                try:
                    addr = netaddr.IPAddress(v)
                except (netaddr.AddrFormatError, ValueError, TypeError):
                    raise ActionError(f"nat {name}={v!r} is not an IP address") from None
                object.__setattr__(self, name, str(addr))
            ips.append(addr)
        lo, hi = ips
        if hi is not None and lo is None:
            raise ActionError("nat ip_max without ip_min")
        if lo is not None and int(lo) == 0:  # 0.0.0.0 or ::
            raise ActionError("nat to the unspecified address (OVS reads it as 'no address')")
        if lo is not None and hi is not None and lo.version != hi.version:
            raise ActionError("nat range mixes IPv4 and IPv6")
        if hi is not None and hi == lo:
            object.__setattr__(self, "ip_max", "")
        elif hi is not None and lo is not None and hi < lo:
            raise ActionError(f"nat range {self.ip_min}-{self.ip_max} runs backwards")
        if self.port_max is not None and self.port_min is None:
            raise ActionError("nat port_max without port_min")
        for name in ("port_min", "port_max"):
            v = getattr(self, name)
            if v is not None:
                _u(name, v, 16)
        if self.port_max == self.port_min:
            object.__setattr__(self, "port_max", None)
        elif self.port_max is not None and self.port_max < self.port_min:  # type: ignore[operator]
            raise ActionError(f"nat port range {self.port_min}-{self.port_max} runs backwards")
        if (self.ip_min or self.port_min is not None) and not self.kind:
            raise ActionError("nat with a range needs kind 'src' or 'dst'")


@dataclass(frozen=True, slots=True)
class CT:
    """``ct(commit?, zone=Z or zone=REG[0..15], table=stage?, nat?, exec(set ct_mark/ct_label))``."""

    commit: bool = False
    zone: int | str = 0
    table: str | None = None
    nat: NAT | None = None
    exec: tuple[SetField, ...] = field(default=())
    force: bool = False
    alg: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.zone, str):
            if fields.field_size(self.zone) < 2:
                raise ActionError(f"ct zone field {self.zone} is narrower than 16 bits")
        else:
            _u("zone", self.zone, 16)
        object.__setattr__(self, "exec", tuple(self.exec))
        for a in self.exec:
            if not isinstance(a, SetField) or a.field not in ("ct_mark", "ct_label"):
                raise ActionError(f"ct exec may only set ct_mark / ct_label, not {a!r}")
        if self.exec and not self.commit:
            raise ActionError("ct exec() needs commit")
        if self.force and not self.commit:
            raise ActionError("ct force needs commit")
        if self.nat is not None and self.nat.kind and not self.commit:
            raise ActionError("nat with an address range needs ct(commit) (OVS rejects it otherwise)")
        if self.alg not in (0, 21, 69):
            raise ActionError(f"ct alg={self.alg}: OVS has helpers for ftp (21) and tftp (69) only")


Action = (
    Output
    | SetField
    | Move
    | GroupAction
    | PushVlan
    | PopVlan
    | DecTtl
    | CtClear
    | Resubmit
    | Goto
    | WriteMetadata
    | Meter
    | Conjunction
    | Controller
    | CT
)

#: instruction-level values: at most one of each per flow
INSTRUCTIONS = (Goto, WriteMetadata, Meter)

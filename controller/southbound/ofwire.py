"""Byte-level OpenFlow 1.3 helpers of the sync engine: bundle framing structs, flow-stats entry keys that
compare equal for the same flow however OVS spells it, and readable error names."""

from __future__ import annotations

import struct
from typing import Any

from os_ken.ofproto import ofproto_common
from os_ken.ofproto import ofproto_v1_3 as ofp

from flows import encode

#: cookie and cookie_mask at the start of a flow-mod body
COOKIES = struct.Struct("!QQ")
#: ONF bundle ADD_MESSAGE: outer header, experimenter, exp_type, bundle id, flags, then the inner header
BUNDLE_ADD = struct.Struct("!BBHIIII2xHBBHI")
#: multipart reply: header, type, flags
MP_HDR = struct.Struct("!BBHIHH4x")
#: ofp_flow_stats: length, table, duration s/ns, priority, idle/hard timeout, flags, cookie, packets, bytes
FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")


def canonical_key(
    table: int, priority: int, cookie: int, buf: bytes, start: int, stop: int | None = None
) -> tuple[Any, ...]:
    """(table, priority, cookie, sorted match TLVs, instructions) of a flow-mod body (start=40) or a
    flow-stats entry (start=48: its offset + 48 in a reply, `stop` its end): equal for the same flow
    whatever order the switch lists match fields in."""
    mlen = (buf[start + 2] << 8) | buf[start + 3]
    end = start + mlen
    off = start + 4
    tlvs = []
    while off < end:
        n = 4 + buf[off + 3]
        tlvs.append(buf[off : off + n])
        off += n
    tlvs.sort()
    return (table, priority, cookie, b"".join(tlvs), buf[start + ((mlen + 7) & ~7) : stop])


def _nxm_to_oxm() -> dict[int, int]:
    """NXM header -> OXM header of the fields that have both, at equal width (OVS reports reg_move
    with NXM_OF_ETH_SRC where we send OXM_OF_ETH_SRC)."""
    out = {}
    for t in ofp.oxm_types:
        if t.name.endswith("_nxm"):
            base = t.name.removesuffix("_nxm")
            try:
                nxm, size = encode._oxm_header(t.name, False)
                oxm, size2 = encode._oxm_header(base, False)
            except (encode.EncodeError, KeyError, ValueError):
                continue
            if size == size2:
                out[nxm] = oxm
    return out


_NXM_TO_OXM = _nxm_to_oxm()
_NX_REG_MOVE_HDR = struct.pack("!I", ofproto_common.NX_EXPERIMENTER_ID) + struct.pack(
    "!H", 6
)  # NXAST_REG_MOVE


_OXM_TO_NXM = {oxm: nxm for nxm, oxm in _NXM_TO_OXM.items()}


def oxm_moves(instructions: bytes) -> bytes | None:
    """`instructions` with reg_move field headers spelled OXM (as we encode them), or None if none is NXM."""
    return _respell_moves(instructions, _NXM_TO_OXM)


def nxm_moves(instructions: bytes) -> bytes | None:
    """`instructions` with reg_move field headers spelled NXM where the field has an NXM header (as OVS
    reports them: it encodes NXAST_REG_MOVE's fields with NXM headers), or None if nothing changes."""
    return _respell_moves(instructions, _OXM_TO_NXM)


def _respell_moves(instructions: bytes, headers: dict[int, int]) -> bytes | None:
    if _NX_REG_MOVE_HDR not in instructions:
        return None
    buf = bytearray(instructions)
    changed = False
    off = 0
    while off + 4 <= len(buf):
        itype, ilen = struct.unpack_from("!HH", buf, off)
        if ilen < 8:
            return None
        if itype == ofp.OFPIT_APPLY_ACTIONS:
            a, end = off + 8, off + ilen
            while a + 4 <= end:
                atype, alen = struct.unpack_from("!HH", buf, a)
                if alen < 8:
                    return None
                if atype == 0xFFFF and buf[a + 4 : a + 10] == _NX_REG_MOVE_HDR:
                    for pos in (a + 16, a + 20):
                        hdr = struct.unpack_from("!I", buf, pos)[0]
                        other = headers.get(hdr)
                        if other is not None:
                            struct.pack_into("!I", buf, pos, other)
                            changed = True
                a += alen
        off += ilen
    return bytes(buf) if changed else None


def error_name(msg: Any) -> str:
    """``OFPBAC_BAD_OUT_GROUP``-style name of an error message (ONF bundle errors included)."""
    if msg.type == ofp.OFPET_EXPERIMENTER:
        exp_type = int(getattr(msg, "exp_type", 0) or 0)
        name = _ONF_ERRORS.get(exp_type, f"exp_type={exp_type}")
        return f"{name} (experimenter {getattr(msg, 'experimenter', 0) or 0:#x})"
    type_name = _ERR_TYPES.get(msg.type, f"type {msg.type}")
    prefix = _ERR_CODE_PREFIX.get(msg.type)
    code = _codes(prefix).get(msg.code, str(msg.code)) if prefix else str(msg.code)
    return f"{type_name}/{code}"


def _codes(prefix: str) -> dict[int, str]:
    return {v: k for k, v in vars(ofp).items() if k.startswith(prefix) and isinstance(v, int)}


_ERR_TYPES = {v: k for k, v in vars(ofp).items() if k.startswith("OFPET_") and isinstance(v, int)}
_ERR_CODE_PREFIX = {
    ofp.OFPET_BAD_REQUEST: "OFPBRC_",
    ofp.OFPET_BAD_ACTION: "OFPBAC_",
    ofp.OFPET_BAD_INSTRUCTION: "OFPBIC_",
    ofp.OFPET_BAD_MATCH: "OFPBMC_",
    ofp.OFPET_FLOW_MOD_FAILED: "OFPFMFC_",
    ofp.OFPET_GROUP_MOD_FAILED: "OFPGMFC_",
    ofp.OFPET_TABLE_FEATURES_FAILED: "OFPTFFC_",
    ofp.OFPET_METER_MOD_FAILED: "OFPMMFC_",
}
_ONF_ERRORS = {v: k for k, v in vars(ofp).items() if k.startswith("ONFERR_ET_") and isinstance(v, int)}

"""Byte-level keys the sync engine adopts switch entries by (no switch needed)."""

from __future__ import annotations

import struct

from controller.southbound import ofwire
from flows import actions as A
from flows import encode
from flows import pipeline as P
from flows.flow import Flow


def stats_entry(flow: Flow, match_order: list[int] | None = None, instructions: bytes | None = None) -> bytes:
    """An ofp_flow_stats entry for `flow` as a switch might report it: match TLVs reordered, other
    instruction bytes."""
    body = encode.Encoder().flow_body(flow)
    mlen = struct.unpack_from("!H", body, 42)[0]
    tlvs, off = [], 44
    while off < 40 + mlen:
        n = 4 + body[off + 3]
        tlvs.append(body[off : off + n])
        off += n
    if match_order is not None:
        tlvs = [tlvs[i] for i in match_order]
    match = body[40:44] + b"".join(tlvs) + body[40 + mlen : 40 + ((mlen + 7) & ~7)]
    insts = body[40 + ((mlen + 7) & ~7) :] if instructions is None else instructions
    tail = match + insts
    return (
        ofwire.FLOW_STATS.pack(48 + len(tail), flow.table, 1, 2, flow.priority, 0, 0, 0, flow.cookie, 5, 500)
        + tail
    )


FLOW = Flow(
    "port_sec_in",
    P.MATCH,
    {"reg6": 3, "eth_src": "02:00:00:00:00:01", "eth_type": 0x0806, "arp_spa": "10.0.0.1"},
    [A.Goto("plugin_from_port")],
    0xC501000000010000,
)


def test_key_ignores_match_field_order() -> None:
    body = encode.Encoder().flow_body(FLOW)
    ours = ofwire.canonical_key(FLOW.table, FLOW.priority, FLOW.cookie, body, 40)
    assert ofwire.canonical_key(FLOW.table, FLOW.priority, FLOW.cookie, stats_entry(FLOW), 48) == ours
    reordered = stats_entry(FLOW, match_order=[3, 2, 1, 0])
    assert ofwire.canonical_key(FLOW.table, FLOW.priority, FLOW.cookie, reordered, 48) == ours
    other = Flow(FLOW.stage, FLOW.priority, {**FLOW.match_dict(), "reg6": 4}, FLOW.actions, FLOW.cookie)
    assert ofwire.canonical_key(FLOW.table, FLOW.priority, FLOW.cookie, stats_entry(other), 48) != ours


def test_moves_reported_with_nxm_headers_compare_equal() -> None:
    flow = Flow("arp_nd", P.MATCH, {"metadata": 1}, [A.Move("eth_src", "eth_dst", 48), A.Output(A.IN_PORT)])
    ours = encode.instructions_bytes(flow.actions)
    nxm = bytearray(ours)
    for name in ("eth_src", "eth_dst"):  # OVS spells them NXM_OF_ETH_SRC / NXM_OF_ETH_DST
        oxm_hdr = struct.pack("!I", encode._oxm_header(name, False)[0])
        nxm_hdr = struct.pack("!I", encode._oxm_header(f"{name}_nxm", False)[0])
        i = bytes(nxm).index(oxm_hdr)
        nxm[i : i + 4] = nxm_hdr
    assert bytes(nxm) != ours
    assert ofwire.oxm_moves(bytes(nxm)) == ours
    assert ofwire.oxm_moves(ours) is None  # nothing to respell
    assert ofwire.oxm_moves(encode.instructions_bytes([A.Output(3)])) is None

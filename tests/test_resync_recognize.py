"""transport.Recognizer without a switch: a flow-stats entry is recognised as a desired flow exactly when it
is that flow's flow-mod as OVS reports it (match fields in any order, reg_move in NXM spelling), and never
when anything but its counters and duration differs."""

from __future__ import annotations

import struct

from controller.southbound import ofwire
from controller.southbound.plan import FlowKey
from controller.southbound.transport import Recognizer, _rank
from flows import encode
from flows.flow import Flow
from tests.test_sync import pipeline_flows


def entry(f: Flow, order: str = "ovs", idle: int = 0, hard: int = 0, flags: int = 0, **change: int) -> bytes:
    """`f`'s flow-stats entry: its ADD body's match (fields in OVS's order, reversed, or ours) and
    instructions (reg_move spelled NXM as OVS does), with counters, and `change`d head fields."""
    body = encode.Encoder().flow_body(f, encode.ADD)
    mlen = struct.unpack_from("!H", body, 42)[0]
    tlvs, off = [], 44
    while off < 40 + mlen:
        n = 4 + body[off + 3]
        tlvs.append(body[off : off + n])
        off += n
    tlvs = sorted(tlvs, key=_rank) if order == "ovs" else tlvs[::-1] if order == "reversed" else tlvs  # type: ignore[arg-type]
    instructions = body[40 + ((mlen + 7) & ~7) :]
    instructions = ofwire.nxm_moves(instructions) or instructions
    m = body[40:44] + b"".join(tlvs)
    m += bytes(-len(m) & 7)
    head = ofwire.FLOW_STATS.pack(
        48 + len(m) + len(instructions),
        change.get("table", f.table),
        5,
        7,
        change.get("priority", f.priority),
        idle,
        hard,
        flags,
        change.get("cookie", int(f.cookie)),
        3,
        300,
    )
    return head + m + instructions


def reply(entries: list[bytes]) -> bytes:
    body = b"".join(entries)
    return ofwire.MP_HDR.pack(4, 19, ofwire.MP_HDR.size + len(body), 0, 1, 0) + body


FLOWS = [f for f in pipeline_flows(40) if isinstance(f, Flow)]
DESIRED = {FlowKey(f): f for f in FLOWS}


def recognise(parts: list[bytes]) -> tuple[Recognizer, list[object]]:
    rec = Recognizer(DESIRED, encode.Encoder())
    slow: list[object] = []
    for p in parts:
        rec.feed(p, slow)
    return rec, slow


def test_every_entry_in_ovs_order_is_recognised_by_its_bytes_as_the_engines_own_key_and_flow() -> None:
    assert any(b"\x00\x00\x23\x20\x00\x06" in encode.flow_instructions(f) for f in FLOWS)  # reg_moves there
    rec, slow = recognise([reply([entry(f) for f in FLOWS[:200]]), reply([entry(f) for f in FLOWS[200:]])])
    assert not slow and rec.have.reordered == 0
    assert len(rec.have.flows) == len(FLOWS)
    for k, f in rec.have.flows.items():
        assert DESIRED[k] is f and next(dk for dk in DESIRED if dk is k)  # the engine's own objects
    assert set(rec.have.counters.values()) == {(3, 300)}


def test_an_entry_in_another_match_order_is_recognised_after_reordering() -> None:
    multi = [f for f in FLOWS if len(f.match) > 1][:150]
    rec, slow = recognise(
        [reply([entry(f, "reversed") for f in multi]), reply([entry(f, "ours") for f in multi])]
    )
    assert not slow and len(rec.have.flows) == len(multi)
    assert 0 < rec.have.reordered <= 2 * len(multi)


def test_an_entry_differing_in_anything_but_counters_is_not_recognised() -> None:
    f = next(f for f in FLOWS if len(f.match) > 1)
    changed = [
        entry(f, idle=30),
        entry(f, hard=30),
        entry(f, flags=1),
        entry(f, cookie=int(f.cookie) ^ 1),
        entry(f, priority=f.priority + 1),
        entry(f, table=f.table + 1),
    ]
    other = next(g for g in FLOWS if g.actions != f.actions and g.stage == f.stage)
    changed.append(entry(Flow(f.stage, f.priority, f.match, other.actions, f.cookie)))
    for c in changed:
        rec, slow = recognise([reply([c])])
        assert not rec.have.flows and len(slow) == 1

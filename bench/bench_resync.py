#!/usr/bin/env python3
"""The controller's half of a resync with nothing changed, without a switch (printed, not pass/fail): N
desired flows (tests/test_sync.pipeline_flows' shapes), the flow-stats reply a switch holding exactly
them sends (our flow-mod bodies as flow-stats entries, match fields in OVS's order, reg_move in NXM
spelling, as OVS reports them), then what the engine does with it: recognise each entry by its bytes
(before: previous_recognise, sorted keys; after: transport.Recognizer), and plan_resync (adopt; 0
operations expected; the same code on both sides). bench/bench_resync_e2e.py measures the whole thing
against a real ovs-vswitchd (dump included).

    .venv/bin/python bench/bench_resync.py [--flows 100000] [--runs 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.southbound import ofwire
from controller.southbound.plan import FlowKey, Installed, plan_resync
from controller.southbound.transport import Recognizer, _rank
from flows import encode
from flows.flow import Flow, Group
from tests.test_sync import pipeline_flows

_MP_LIMIT = 60_000  # OVS splits a dump into replies of < 64 KiB


def reply_parts(flows: list[Flow]) -> list[bytes]:
    """Flow-stats multipart replies holding `flows`, as a switch would send them."""
    enc = encode.Encoder()
    parts: list[bytes] = []
    entries: list[bytes] = []
    size = 0

    def flush(more: bool) -> None:
        nonlocal entries, size
        body = b"".join(entries)
        hdr = ofwire.MP_HDR.pack(4, 19, ofwire.MP_HDR.size + len(body), 0, 1, 1 if more else 0)
        parts.append(hdr + body)
        entries, size = [], 0

    for f in flows:
        body = enc.flow_body(f, encode.ADD)
        mlen = struct.unpack_from("!H", body, 42)[0]
        match = body[40 : 40 + mlen]
        tlvs, off = [], 4
        while off < mlen:
            n = 4 + match[off + 3]
            tlvs.append(match[off : off + n])
            off += n
        rest = body[40 + ((mlen + 7) & ~7) :]
        rest = ofwire.nxm_moves(rest) or rest  # OVS reports reg_move's fields in NXM spelling
        m = match[:4] + b"".join(sorted(tlvs, key=_rank))  # type: ignore[arg-type]  # as OVS orders
        m += bytes(((len(m) + 7) & ~7) - len(m))
        entry_len = 48 + len(m) + len(rest)
        entry = ofwire.FLOW_STATS.pack(entry_len, f.table, 1, 0, f.priority, 0, 0, 0, int(f.cookie), 7, 700)
        entries.append(entry + m + rest)
        size += entry_len
        if size > _MP_LIMIT:
            flush(True)
    flush(False)
    return parts


def previous_recognise(desired: dict[FlowKey, Flow], parts: list[bytes]) -> Installed:
    """The recognition before 2026-12-07's second pass (for the A/B): every desired flow's key as
    (table, priority, cookie, match TLVs sorted, instructions) from encode.stats_key, and each entry's
    TLVs parsed and sorted into the same shape."""
    have = Installed()
    expected = {encode.stats_key(f): (k, f) for k, f in desired.items()}
    for part in parts:
        off, end = ofwire.MP_HDR.size, len(part)
        while off < end:
            length, table, _, _, prio, _, _, _, cookie, packets, nbytes = ofwire.FLOW_STATS.unpack_from(
                part, off
            )
            key = ofwire.canonical_key(table, prio, cookie, part[off : off + length], 48)
            hit = expected.get(key)
            if hit is None:
                hit = expected.get(key[:4] + (ofwire.oxm_moves(key[4]),))
            assert hit is not None
            have.flows[hit[0]] = hit[1]
            have.counters[hit[0]] = (packets, nbytes)
            off += length
    return have


def resync_once(
    desired: dict[FlowKey, Flow], groups: dict[int, Group], parts: list[bytes], new: bool = True
) -> tuple[float, float, int]:
    """(CPU seconds recognising the dump, CPU seconds planning, operations planned): CPU time, as this
    machine is shared. new=False: the previous recognition (previous_recognise), with automatic garbage
    collection on during it as it was; new=True: transport.Recognizer, reply by reply, collections paused
    (as the transport does)."""
    encode.Encoder()  # a new engine: its encoder cache cold, as after a restart
    t0 = time.process_time()
    if new:
        gc.disable()
        try:
            rec = Recognizer(desired, encode.Encoder())
            slow_entries: list[object] = []
            for part in parts:
                rec.feed(part, slow_entries)
            slow, have = len(slow_entries), rec.have
        finally:
            gc.enable()
        assert have.reordered == 0, have.reordered
    else:
        have, slow = previous_recognise(desired, parts), 0
    t1 = time.process_time()
    have.groups = dict(groups)
    gc.disable()
    try:
        plan = plan_resync(desired, groups, {}, have)
    finally:
        gc.enable()
    t2 = time.process_time()
    assert slow == 0 and plan.adopted == len(desired), (slow, plan.adopted, len(desired))
    return t1 - t0, t2 - t1, len(plan.ops())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    items = pipeline_flows(max(8, int(a.flows / 8.6)))
    flows = [f for f in items if isinstance(f, Flow)]
    groups = {g.group_id: g for g in items if isinstance(g, Group)}
    desired = {FlowKey(f): f for f in flows}
    parts = reply_parts(flows)
    print(f"{len(flows)} flows in {len(parts)} replies; load average {os.getloadavg()[0]:.2f}")
    if a.profile:
        prof = cProfile.Profile()
        prof.enable()
        resync_once(desired, groups, parts)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(18)
    # before (sorted keys) and after (transport.Recognizer), alternated
    res: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    n_ops = 0
    for _ in range(a.runs):
        for keys in (False, True):
            r, p, n_ops = resync_once(desired, groups, parts, new=keys)
            res[keys].append((r, p))
    for keys, name in ((False, "before (sorted keys)"), (True, "after (OVS's order)")):
        rec = [r for r, _p in res[keys]]
        plan = [p for _r, p in res[keys]]
        tot = [r + p for r, p in res[keys]]
        print(
            f"{name}: recognise the dump median {statistics.median(rec):.3f} s, plan median "
            f"{statistics.median(plan):.3f} s; total min {min(tot):.3f} / median {statistics.median(tot):.3f} / "
            f"max {max(tot):.3f} s ({a.runs} runs, {n_ops} operations)"
        )
    before = statistics.median(r + p for r, p in res[False])
    after = statistics.median(r + p for r, p in res[True])
    print(f"ratio after / before (medians): {after / before:.2f}; load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

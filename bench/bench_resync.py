#!/usr/bin/env python3
"""The controller's half of a resync with nothing changed, without a switch (printed, not pass/fail): N
desired flows (tests/test_sync.pipeline_flows' shapes), the flow-stats reply a switch holding exactly
them sends (our flow-mod bodies as flow-stats entries, match fields in OVS's order, reg_move in NXM
spelling, as OVS reports them), then what the engine does with it: recognise each entry by its bytes
(before: previous_recognise, sorted keys; after: transport.Recognizer), and plan_resync (adopt; 0
operations expected; the same code on both sides). bench/bench_resync_e2e.py measures the whole thing
against a real ovs-vswitchd (dump included).

Third pass (the engine keeps the index, sync.py): "built in the resync" is the Recognizer building the
expected bytes of every desired flow on the first entry (as before the engine kept them), "kept index" is
the same with the engine's ExpectedIndex built beforehand (recognise + plan only). Also measured: that
build, cold (the encoder's process caches emptied, as a restarted process has them) and warm, its memory
(RSS growth), and patching it with a delta of 1,000 changed keys.

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
from controller.southbound.transport import ExpectedIndex, Recognizer, _rank
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


def clear_process_caches() -> None:
    """The encoder's process-wide caches, as a freshly started controller has them (empty)."""
    for name in ("_MATCH_TLVS", "_INSTRUCTIONS", "_TLV_PREFIX", "_TABLES"):
        cache = getattr(encode, name, None)
        if isinstance(cache, dict):
            cache.clear()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def index_mib(idx: ExpectedIndex) -> float:
    """What the index holds beyond the desired flows and their keys: its dicts, the expected bytes and
    the (table, bytes) pairs (sys.getsizeof; the bytes are shared by both maps)."""
    n = sys.getsizeof(idx.by_table) + sys.getsizeof(idx.where)
    for d in idx.by_table.values():
        n += sys.getsizeof(d) + sum(sys.getsizeof(k) for k in d)
    n += sum(sys.getsizeof(v) for v in idx.where.values())
    return n / (1 << 20)


def index_costs(desired: dict[FlowKey, Flow], runs: int) -> None:
    """The kept index: its build cold and warm (CPU), its memory, and a patch of 1,000 keys."""
    cold, warm, patch, mem, size = [], [], [], [], 0.0
    keys = list(desired)[:: max(1, len(desired) // 1000)][:1000]
    for _ in range(runs):
        clear_process_caches()
        gc.collect()
        r0 = rss_mib()
        gc.disable()
        try:
            t0 = time.process_time()
            idx = ExpectedIndex.build(desired, encode.Encoder())
            cold.append(time.process_time() - t0)
            mem.append(rss_mib() - r0)
            t0 = time.process_time()
            ExpectedIndex.build(desired, encode.Encoder())
            warm.append(time.process_time() - t0)
            changed = dict(desired)
            for k in keys[::2]:
                del changed[k]
            t0 = time.process_time()
            idx.patch(keys, changed, encode.Encoder())
            patch.append(time.process_time() - t0)
            size = index_mib(idx)
        finally:
            gc.enable()
        del idx
    print(
        f"kept index ({len(desired)} flows, {runs} runs, CPU min / median / max): build cold "
        f"{stats(cold)} s, warm {stats(warm)} s; patch of {len(keys)} changed keys {stats(patch)} s; "
        f"RSS growth of one build {stats(mem, '.0f')} MiB; its objects {size:.0f} MiB (sys.getsizeof)"
    )


def stats(xs: list[float], fmt: str = ".3f") -> str:
    return f"{min(xs):{fmt}} / {statistics.median(xs):{fmt}} / {max(xs):{fmt}}"


def resync_once(
    desired: dict[FlowKey, Flow],
    groups: dict[int, Group],
    parts: list[bytes],
    new: bool = True,
    kept: ExpectedIndex | None = None,
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
            rec = Recognizer(desired, encode.Encoder(), kept)
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
    # sorted keys (first pass), the Recognizer building its index (second pass), and the kept index
    # (third pass), alternated; the process caches warm (a reconnect; cold: index_costs)
    kept = ExpectedIndex.build(desired, encode.Encoder())
    res: dict[str, list[tuple[float, float]]] = {"sorted": [], "built": [], "kept": []}
    n_ops = 0
    for _ in range(a.runs):
        for mode in res:
            r, p, n_ops = resync_once(
                desired, groups, parts, new=mode != "sorted", kept=kept if mode == "kept" else None
            )
            res[mode].append((r, p))
    names = {
        "sorted": "first pass (sorted keys)",
        "built": "second pass (OVS's order, index built in the resync)",
        "kept": "third pass (index kept by the engine)",
    }
    for mode, name in names.items():
        rec = [r for r, _p in res[mode]]
        plan = [p for _r, p in res[mode]]
        tot = [r + p for r, p in res[mode]]
        print(
            f"{name}: recognise the dump median {statistics.median(rec):.3f} s, plan median "
            f"{statistics.median(plan):.3f} s; total {stats(tot)} s ({a.runs} runs, {n_ops} operations)"
        )
    built = statistics.median(r + p for r, p in res["built"])
    after = statistics.median(r + p for r, p in res["kept"])
    print(f"ratio kept / built (medians): {after / built:.2f}; load average now {os.getloadavg()[0]:.2f}")
    index_costs(desired, a.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Takeover after kill -9 of a chassis's master, over N kills: the demo's lab (2 chassis, tenants alice and
bob, a VM of each on each chassis) on 3 controllers sharing a 3-member etcd cluster (lab/ha.py).

Each kill (alternately the master of hv1 and of hv2) runs under a 10 ms ping hv1 -> hv2 and a writer
creating networks through the other controllers every 20 ms; the killed controller is started again and
handed its chassis back before the next kill. Printed: takeover (kill -> the new master's owner key in
etcd, when it claims the switch), adoption (kill -> its engine has dumped and adopted the switch), both
also as a ratio to the lease; flow-mods + group-mods sent by the new master on taking over and by the
restarted one on being handed the chassis back (0 = adopted as installed); pings and acknowledged writes
lost.

    sudo .venv/bin/python bench/bench_ha.py              # 10 kills, lease 3 s
    sudo .venv/bin/python bench/bench_ha.py --kills 2    # a smoke run
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.pki import Pki  # noqa: E402
from lab.demo import start_topology  # noqa: E402
from lab.ha import HaCluster, KillResult, kill_master  # noqa: E402
from lab.lab import Lab  # noqa: E402


def mmm(xs: list[float], fmt: str = "{:.2f}") -> str:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return "-"
    return " / ".join(fmt.format(v) for v in (min(xs), statistics.median(xs), max(xs)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--lease", type=float, default=3.0, help="ownership_lease_s of the controllers")
    ap.add_argument("--controllers", type=int, default=3)
    args = ap.parse_args()
    results: list[KillResult] = []
    handbacks: list[int] = []  # flow/group-mods of the restarted controller when handed its chassis back
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as tmp:
        work = Path(tmp)
        authority = Pki(work / "pki")
        authority.init()
        with Lab(pki=authority) as lab:
            chassis = [lab.add_chassis(f"hv{i}") for i in (1, 2)]
            ha = HaCluster(lab, authority.root, work / "ha", controllers=args.controllers, lease_s=args.lease)
            try:
                t = time.monotonic()
                ha.start()
                vms = start_topology(ha, chassis)
                ha.wait_settled()
                assert vms["alice-vm1"].ping("10.0.0.12", count=3, timeout=15)
                print(
                    f"lab, etcd and {args.controllers} controllers up in {time.monotonic() - t:.1f} s",
                    flush=True,
                )
                for i in range(args.kills):
                    ch = chassis[i % len(chassis)].name
                    r = kill_master(ha, ch, vms["alice-vm1"], "10.0.0.12")
                    results.append(r)
                    print(f"{i + 1:2}: {r.line()}", flush=True)
                    if r.note:
                        print(r.note, flush=True)
                    back = ha.controllers[r.killed]
                    back.start()
                    ha.wait_settled()
                    deadline = time.monotonic() + 20
                    # its own engine's counters (ListChassisStatus shows whichever controller is master)
                    while not (own := back.engine_counters(ch))["sdn_resyncs_total"]:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.05)
                    mods = own["sdn_flow_mods_sent_total"] + own["sdn_group_mods_sent_total"]
                    handbacks.append(int(mods) if own["sdn_resyncs_total"] else -1)
            finally:
                ha.close()
    lease = args.lease
    takeovers = [r.takeover_s for r in results]
    adopted = [r.adopted_s for r in results]
    print()
    print(
        f"{len(results)} kills -9 of a chassis's master, {args.controllers} controllers, etcd 3 members, lease {lease} s"
    )
    print(f"  takeover (s)             min / median / max  {mmm(takeovers)}")
    print(f"  takeover / lease                             {mmm([x / lease for x in takeovers])}")
    print(f"  adopted (s)                                  {mmm(adopted)}")
    print(f"  flow+group-mods on takeover (each kill)      {[r.flow_mods for r in results]}")
    print(f"  flow+group-mods on hand-back (each restart)  {handbacks}")
    print(
        f"  pings lost {sum(r.pings_sent - r.pings_received for r in results)} of "
        f"{sum(r.pings_sent for r in results)}; writes acknowledged {sum(len(r.writes_acked) for r in results)}, "
        f"lost {sum(len(r.writes_lost) for r in results)}, refused {sum(len(r.writes_refused) for r in results)}"
    )
    ok = all(r.lossless for r in results) and all(h == 0 for h in handbacks)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

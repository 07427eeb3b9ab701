"""Where steady pings are lost during port churn (BENCHMARKS.md "Churn soak").

    sudo .venv/bin/python -m bench.churn_where [MODES] [--seconds 20] [--vms 20] [--out DIR]

One lab (tests/churn.py's steady objects, then VMS churn ports with VMs), then per mode SECONDS of it with
the steady `l2` (s1 on hv1 -> s2 on hv2) and `fip` (external host -> s2's floating IP) pings, tcpdump on
s1, s2, the external host, hv1's provider uplink and both underlay veths. Each lost echo request or reply
is placed after the last capture point that saw it: "hvN encap" (left a VM or the uplink, never reached
the underlay), "hvN decap" (on the underlay, never reached the VM or uplink). Also counted: ICMP "udp port
4789 unreachable" on the underlay (VXLAN handed to a chassis's kernel instead of being decapsulated) and
coverage/show deltas. Modes: idle; any Churn operation (vm_port, delete_port, ...); ports (vm_port and
delete_port in turn); raw (a VM whose iface-id names no port plugged and unplugged: the controller does
nothing); static-routes (not timed: adds `ovs/route/add` of the underlay on both chassis).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from lab import proc
from tests.churn import EXT_HOST, Churn, build, start_ping
from tests.e2e import PHYSNET, lab_env

COVERAGE = ("rev_reconfigure", "rev_flow_table", "datapath_drop", "drop_action", "bridge_reconfigure")
ECHO = re.compile(r"([\d.]+) > ([\d.]+): ICMP echo (request|reply), id \d+, seq (\d+)")


def read_pcap(path: Path) -> tuple[set[tuple[str, str, str, int]], int]:
    """The echo packets (src, dst, kind, seq) in a capture (tunneled ones decoded), and its unreachables."""
    out = subprocess.run(
        ["tcpdump", "-r", str(path), "-n", "-v"], capture_output=True, text=True, check=False
    ).stdout
    records: list[str] = []
    for line in out.splitlines():
        if line[:1].isdigit():
            records.append(line)
        elif records:
            records[-1] += " " + line.strip()
    seen, unreachable = set(), 0
    for rec in records:
        if "udp port 4789 unreachable" in rec:
            unreachable += 1
            continue
        for m in ECHO.finditer(rec):
            seen.add((m.group(1), m.group(2), m.group(3), int(m.group(4))))
    return seen, unreachable


def classify(d: Path, s1: str, s2: str, fip: str) -> tuple[Counter[str], int]:
    pts = {}
    unreachable = 0
    for name in ("s1", "s2", "ext", "prov1", "ul1", "ul2"):
        pts[name], n = read_pcap(d / f"{name}.pcap")
        unreachable += n if name == "ul1" else 0  # the underlay bridge: ul1 and ul2 see the same ones
    ext = EXT_HOST
    # (capture point, packet, what lies between it and the next point)
    paths = {
        "l2": [
            ("s1", (s1, s2, "request"), "hv1 encap"),
            ("ul1", (s1, s2, "request"), "wire"),
            ("ul2", (s1, s2, "request"), "hv2 decap"),
            ("s2", (s1, s2, "request"), "vm"),
            ("s2", (s2, s1, "reply"), "hv2 encap"),
            ("ul2", (s2, s1, "reply"), "wire"),
            ("ul1", (s2, s1, "reply"), "hv1 decap"),
            ("s1", (s2, s1, "reply"), ""),
        ],
        "fip": [
            ("ext", (ext, fip, "request"), "wire"),
            ("prov1", (ext, fip, "request"), "hv1 encap"),
            ("ul1", (ext, s2, "request"), "wire"),
            ("ul2", (ext, s2, "request"), "hv2 decap"),
            ("s2", (ext, s2, "request"), "vm"),
            ("s2", (s2, ext, "reply"), "hv2 encap"),
            ("ul2", (s2, ext, "reply"), "wire"),
            ("ul1", (s2, ext, "reply"), "hv1 decap"),
            ("prov1", (fip, ext, "reply"), "wire"),
            ("ext", (fip, ext, "reply"), ""),
        ],
    }
    where: Counter[str] = Counter()
    for name, path in paths.items():
        first_pt, first_key, _ = path[0]
        seqs = sorted(k[3] for k in pts[first_pt] if k[:3] == first_key)
        for seq in seqs[:-3]:  # the last few can be in flight when the captures stop
            for i, (pt, key, _) in enumerate(path):
                if (*key, seq) not in pts[pt]:
                    where[f"{name} {path[i - 1][1][2]} {path[i - 1][2]}"] += 1
                    break
    return where, unreachable


def coverage(ch) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {
        ln.split()[0]: int(ln.split()[-1]) for ln in ch.appctl("coverage/show").splitlines() if "total:" in ln
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modes", nargs="?", default="idle,ports,raw")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--vms", type=int, default=20, help="churn ports with VMs plugged before the modes")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="keep the captures here")
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        lab_env(Path(tmp), extra_args=["--gateway-chassis", "hv1"]) as env,
    ):
        out = args.out or Path(tmp) / "captures"
        out.mkdir(parents=True, exist_ok=True)
        steady = build(env)
        churn = Churn(steady, random.Random(args.seed))
        for _ in range(args.vms):
            churn.vm_port()
        env.wait_realized(60)
        hvs = [env.chassis("hv1"), env.chassis("hv2")]
        rng = random.Random(args.seed)
        for i, mode in enumerate(args.modes.split(",")):
            if mode == "static-routes":
                for ch in hvs:
                    ch.appctl("ovs/route/add", "10.250.0.0/24", "br-phy")
                continue
            d = out / f"{i:02d}-{mode}"
            d.mkdir()
            caps = []
            for name, ns, ifname in [
                ("s1", steady.s1.namespace, "eth0"),
                ("s2", steady.s2.namespace, "eth0"),
                ("ext", steady.ext.namespace, "eth0"),
                ("ul1", None, hvs[0].underlay_root_ifname),
                ("ul2", None, hvs[1].underlay_root_ifname),
                ("prov1", None, hvs[0].provider_uplink_root_ifname(PHYSNET)),
            ]:
                argv = [
                    "tcpdump",
                    "-i",
                    ifname,
                    "-n",
                    "-U",
                    "-s",
                    "200",
                    "-w",
                    str(d / f"{name}.pcap"),
                    "icmp or udp port 4789",
                ]
                caps.append(
                    subprocess.Popen(proc.in_netns(ns, argv) if ns else argv, stderr=subprocess.DEVNULL)
                )
            time.sleep(1)
            before = [coverage(ch) for ch in hvs]
            pingers = [start_ping("l2", steady.s1, steady.s2.ip), start_ping("fip", steady.ext, steady.fip)]
            t0, n = time.monotonic(), 0
            while time.monotonic() - t0 < args.seconds:
                if mode == "idle":
                    time.sleep(0.5)
                    continue
                if mode == "raw":
                    ch = rng.choice(hvs)
                    vm = ch.add_vm(
                        f"raw{n}",
                        f"fa:16:3e:99:00:{n % 256:02x}",
                        f"10.199.0.{n % 200 + 2}/24",
                        iface_id=f"nobody-{n}",
                    )
                    ch.remove_vm(vm)
                elif mode == "ports":
                    (churn.vm_port if n % 2 == 0 or not churn.ports else churn.delete_port)()
                else:
                    getattr(churn, mode)()
                n += 1
            lost = [(p.name, *p.stop()) for p in pingers]
            time.sleep(1)
            after = [coverage(ch) for ch in hvs]
            for p in caps:
                p.send_signal(2)
            for p in caps:
                p.wait(timeout=10)
            where, unreachable = classify(d, steady.s1.ip, steady.s2.ip, steady.fip)
            print(
                f"{mode:<12} {n:4d} steps  "
                + "  ".join(f"{name} {s - r}/{s}" for name, s, r in lost)
                + f"  missing at capture points: {dict(where)}  port unreachables: {unreachable}",
                flush=True,
            )
            for ch, b, a in zip(hvs, before, after, strict=True):
                delta = {
                    k: v - b.get(k, 0) for k, v in a.items() if k.startswith(COVERAGE) and v != b.get(k, 0)
                }
                print(f"    {ch.name} coverage {json.dumps(delta)}", flush=True)


if __name__ == "__main__":
    main()

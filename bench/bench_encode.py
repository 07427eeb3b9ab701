"""Encoding speed: os-ken objects vs our struct + cache + bundle path, on ~50k realistic flows.

Prints flows/s for each path and the ratios (wall time is never a pass/fail; compare within one run).
Run: .venv/bin/python bench/bench_encode.py [n_ports]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows import actions as A
from flows import pipeline as P
from flows.cookie import Cookie
from flows.encode import ADD, MODIFY, Encoder, osken_bytes, to_osken_flow_mod
from flows.flow import Flow


def mac(i: int) -> str:
    return "02:" + ":".join(f"{(i >> shift) & 255:02x}" for shift in (32, 24, 16, 8, 0))


def ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def realistic_flows(n_ports: int) -> list[Flow]:
    """Per port: classify, port security (MAC, IP, ARP), l2_lookup, egress (local or tunnel), output,
    and a few security-group rules with conntrack; per network: flood, router route."""
    out: list[Flow] = []
    est = (0x22, 0x22)
    for p in range(1, n_ports + 1):
        net = 1000 + p // 20
        cookie = Cookie.for_owner(1, f"port/{p}")
        m, addr = mac(p), ip(p)
        out += [
            Flow(
                "classify",
                P.MATCH,
                {"in_port": p},
                [A.WriteMetadata(net), A.load("reg6", p), A.load("reg5", p & 0xFFFF), A.Goto("port_sec_in")],
                cookie,
            ),
            Flow(
                "port_sec_in",
                P.MATCH,
                {"reg6": p, "eth_src": m, "eth_type": 0x800, "ipv4_src": addr},
                [A.Goto("plugin_from_port")],
                cookie,
            ),
            Flow(
                "port_sec_in",
                P.MATCH,
                {"reg6": p, "eth_src": m, "eth_type": 0x806, "arp_spa": addr, "arp_sha": m},
                [A.Goto("plugin_from_port")],
                cookie,
            ),
            Flow(
                "l2_lookup",
                P.MATCH,
                {"metadata": net, "eth_dst": m},
                [A.load("reg7", p), A.Goto("egress_dispatch")],
                cookie,
            ),
            Flow(
                "egress_dispatch",
                P.MATCH,
                {"metadata": net, "reg7": p},
                [A.Goto("acl_ingress")]
                if p % 3
                else [
                    A.SetField("tunnel_id", net),
                    A.SetField("tun_ipv4_dst", ip(0x0A0000 + p % 50)),
                    A.Output(9),
                ],
                cookie,
            ),
            Flow("output", P.MATCH, {"reg7": p}, [A.Output(p)], cookie),
            Flow("acl_ingress", P.MATCH, {"reg7": p, "ct_state": est}, [A.Goto("plugin_to_port")], cookie),
            Flow(
                "acl_ingress",
                P.MATCH(1),
                {"reg7": p, "eth_type": 0x800, "ip_proto": 6, "tcp_dst": 22, "ct_state": (0x21, 0x21)},
                [A.CT(commit=True, zone="reg5"), A.Goto("plugin_to_port")],
                cookie,
            ),
            Flow(
                "acl_egress",
                P.MATCH,
                {"reg6": p, "ct_state": (0, 0x20), "eth_type": 0x800},
                [A.CT(zone="reg5", table="acl_egress")],
                cookie,
            ),
            Flow(
                "arp_nd",
                P.MATCH,
                {"metadata": net, "eth_type": 0x806, "arp_op": 1, "arp_tpa": addr},
                [
                    A.Move("eth_src", "eth_dst", 48),
                    A.SetField("eth_src", m),
                    A.SetField("arp_op", 2),
                    A.Move("arp_sha", "arp_tha", 48),
                    A.SetField("arp_sha", m),
                    A.Move("arp_spa", "arp_tpa", 32),
                    A.SetField("arp_spa", addr),
                    A.Output(A.IN_PORT),
                ],
                cookie,
            ),
        ]
    return out


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("inf")


def main() -> None:
    n_ports = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    t0 = time.perf_counter()
    flows = realistic_flows(n_ports)
    t_build = time.perf_counter() - t0
    n = len(flows)
    print(f"{n} flows ({n_ports} ports); building Flow values: {rate(n, t_build):,.0f} flows/s")

    t0 = time.perf_counter()
    osken = [osken_bytes(to_osken_flow_mod(f, ADD, i)) for i, f in enumerate(flows)]
    t_osken = time.perf_counter() - t0
    osken_buf = b"".join(osken)

    enc = Encoder()
    ops = [(ADD, f) for f in flows]
    t0 = time.perf_counter()
    cold, _ = enc.messages(ops, xid=0)
    t_cold = time.perf_counter() - t0
    assert cold == osken_buf, "struct path differs from os-ken's bytes"

    t0 = time.perf_counter()
    warm, _ = enc.messages(ops, xid=0)
    t_warm = time.perf_counter() - t0
    assert warm == osken_buf

    t0 = time.perf_counter()
    bundle, _ = enc.bundle(ops, bundle_id=1, xid=0)
    t_bundle = time.perf_counter() - t0

    t0 = time.perf_counter()
    modify, _ = enc.bundle([(MODIFY, f) for f in flows], bundle_id=2, xid=0)
    t_modify = time.perf_counter() - t0

    base = rate(n, t_osken)
    rows = [
        ("os-ken objects: build + serialize", t_osken, None),
        ("ours, cold cache: struct encode + plain messages", t_cold, len(cold)),
        ("ours, warm cache: plain messages (xid patched)", t_warm, len(warm)),
        ("ours, warm cache: one bundle buffer (open/adds/commit)", t_bundle, len(bundle)),
        ("ours, MODIFY_STRICT bundle (patched from cached ADD)", t_modify, len(modify)),
    ]
    for name, secs, size in rows:
        r = rate(n, secs)
        extra = f"  {size / 1e6:6.2f} MB" if size else ""
        print(f"{name:58s} {r:12,.0f} flows/s  x{r / base:7.1f}{extra}")
    print(f"bytes identical to os-ken for all {n} flow-mods: yes")


if __name__ == "__main__":
    main()

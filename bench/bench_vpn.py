#!/usr/bin/env python3
"""VPNaaS through the real controller, ovs-vswitchd chassis and strongSwan (needs root):

1. iperf3 throughput VM -> remote host through the IPsec tunnel, divided by the same VM -> the same remote host
   without the tunnel (routed through SNAT: the remote site's gateway is the external subnet's gateway, so the
   router's default route reaches the remote subnet through it), both measured in the same run, alternated;
2. tunnel setup time: from the CreateIpsecSiteConnection call (VPN service, policies and endpoint groups made
   before) to the first packet of a 20/s ping from the VM arriving at the remote host with the VM's fixed IP
   (through the tunnel: without it the host sees the SNAT address).
The VM is on hv2, the router's gateway chassis is hv1: both paths cross the overlay to hv1 first. Userspace ESP
(strongSwan's kernel-libipsec: this kernel has no ESP), IKEv2, aes128-sha256, modp2048.

    .venv/bin/python bench/bench_vpn.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_nat import iperf  # noqa: E402
from proto.sdn.v1 import topology_pb2 as pb  # noqa: E402
from tests.e2e import lab_env  # noqa: E402
from tests.e2e_vpn import (  # noqa: E402
    create_connection,
    create_vpn_service,
    make_tenant,
    public_network,
    vpn_hosts,
    vpn_stub,
)

EXT_CIDR = "172.28.4.0/24"
SITE_IP = "172.28.4.1"  # the external subnet's gateway_ip: the router's default route leads to the site


def setup_time(env, t) -> float:  # type: ignore[no-untyped-def]
    """Seconds from the CreateIpsecSiteConnection call to the first echo request from the VM's fixed IP at the
    remote host."""
    dump = t.site.host.popen(
        ["tcpdump", "-i", "eth0", "-nn", "-tt", "-l", "-c", "1", f"icmp and src host {t.vm.ip}"],
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # tcpdump listening
    pinger = t.vm.popen(["ping", "-n", "-i", "0.05", "-W", "1", t.site.host.ip], stdout=subprocess.DEVNULL)
    try:
        t0 = time.time()
        create_connection(env, t)
        out, _ = dump.communicate(timeout=60)
        return float(out.split()[0]) - t0
    finally:
        pinger.kill()
        pinger.communicate()


def delete_connection(env, t) -> None:  # type: ignore[no-untyped-def]
    vpn_stub(env).DeleteIpsecSiteConnection(
        pb.DeleteIpsecSiteConnectionRequest(name=f"ipsecSiteConnections/{t.name}-conn"), metadata=t.md
    )
    env.wait_realized()
    deadline = time.monotonic() + 20
    while t.site.up() and time.monotonic() < deadline:
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hosts, cleanup = vpn_hosts(Path(tmp) / "data")
        try:
            with lab_env(
                Path(tmp),
                chassis=2,
                extra_args=["--gateway-chassis", "hv1", "--vpn-esp", "userspace"],
                lab_args=hosts,
                self_check=False,
            ) as env:
                public_network(env, EXT_CIDR)
                t = make_tenant(env, "a", SITE_IP, vm_chassis="hv2")
                create_vpn_service(env, t)
                env.wait_realized()
                snat, tunnel, setups = [], [], []
                for r in range(args.rounds):
                    snat.append(iperf(t.vm, t.site.host, args.seconds, 5300 + 2 * r))
                    setups.append(setup_time(env, t))
                    tunnel.append(iperf(t.vm, t.site.host, args.seconds, 5301 + 2 * r))
                    delete_connection(env, t)
                    print(
                        f"round {r + 1}: SNAT {snat[-1] / 1e6:.0f} Mbit/s, tunnel {tunnel[-1] / 1e6:.0f} Mbit/s "
                        f"(ratio {tunnel[-1] / snat[-1]:.2f}), setup {setups[-1]:.2f} s",
                        flush=True,
                    )
        finally:
            cleanup()
    ratios = [a / b for a, b in zip(tunnel, snat, strict=True)]
    print(
        json.dumps(
            {
                "snat_mbit_s": [round(x / 1e6) for x in snat],
                "tunnel_mbit_s": [round(x / 1e6) for x in tunnel],
                "ratio_tunnel_over_snat": [round(x, 3) for x in ratios],
                "ratio_median": round(statistics.median(ratios), 3),
                "setup_s": [round(x, 2) for x in setups],
                "setup_median_s": round(statistics.median(setups), 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

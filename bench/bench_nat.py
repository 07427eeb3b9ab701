#!/usr/bin/env python3
"""Routing and SNAT throughput through the real controller and real ovs-vswitchd chassis (needs root):

iperf3 throughput, each divided by a baseline measured in the same run:
1. VM -> VM across a router (two subnets, two chassis);
2. VM -> external host through SNAT, from the gateway chassis (hv1) and from the other chassis (hv2,
   redirected to hv1 through a tunnel);
baseline: two endpoints of the same shape (VM namespaces with a veth into a netdev bridge, tx offload off)
joined by a single in->out flow each way on one bridge of a chassis the controller does not manage.
Goal (issue 4): ratio >= 0.9.

    .venv/bin/python bench/bench_nat.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.hosts import Host  # noqa: E402
from proto.sdn.v1 import topology_pb2 as pb  # noqa: E402
from tests.e2e import PHYSNET, lab_env  # noqa: E402


def iperf(client: Host, server: Host, seconds: float, port: int) -> float:
    """Received bits/s of one iperf3 TCP run from `client` to `server`."""
    srv = server.popen(["iperf3", "-s", "-1", "-p", str(port)])
    try:
        time.sleep(0.5)
        for _ in range(3):  # the first connection attempt may meet an unresolved next hop
            res = client.exec(
                ["iperf3", "-c", server.ip, "-p", str(port), "-t", str(seconds), "-J"],
                check=False,
                timeout=seconds + 30,
            )
            if res.returncode == 0:
                return float(json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"])
            time.sleep(1)
        raise RuntimeError(f"iperf3 {client.name} -> {server.name} failed: {res.stdout[-2000:]} {res.stderr}")
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.communicate()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        lab_env(Path(tmp), extra_args=["--gateway-chassis", "hv1"], self_check=False) as env,
    ):
        ext = env.stub.CreateNetwork(
            pb.CreateNetworkRequest(
                network=pb.Network(segment_type=pb.Network.FLAT, physical_network=PHYSNET, external=True),
                network_id="public",
            ),
            metadata=env.admin,
        )
        env.stub.CreateSubnet(
            pb.CreateSubnetRequest(
                subnet=pb.Subnet(network=ext.name, cidr="172.24.4.0/24"), subnet_id="public-v4"
            ),
            metadata=env.admin,
        )
        md = env.md("bench")
        a = env.network(md, "b-a", "10.140.0.0/24")
        b = env.network(md, "b-b", "10.141.0.0/24")
        r = env.stub.CreateRouter(
            pb.CreateRouterRequest(
                router=pb.Router(external_gateway=pb.ExternalGateway(network=ext.name)), router_id="b-r"
            ),
            metadata=md,
        )
        for sub in ("b-a-v4", "b-b-v4"):
            env.stub.AddRouterInterface(
                pb.AddRouterInterfaceRequest(name=r.name, subnet=f"subnets/{sub}"), metadata=md
            )
        host = env.lab.add_external_host(PHYSNET, "ext", "172.24.4.100/24")
        host.exec("ethtool -K eth0 tx off", check=False)
        va1 = env.plug("hv1", env.port(md, "b-va1", a))
        va2 = env.plug("hv2", env.port(md, "b-va2", a))
        vb2 = env.plug("hv2", env.port(md, "b-vb2", b))
        env.wait_realized()
        for vm in (va1, va2):
            assert vm.ping(host.ip, count=1, timeout=10), "SNAT path not working"
        assert va1.ping(vb2.ip, count=1, timeout=10)

        # baseline: two endpoints of the same shape on one bridge, one flow in->out each way
        base_ch = env.lab.add_chassis("hvb")
        x = base_ch.add_vm("bx", "02:bb:00:00:00:01", "10.150.0.1/24", iface_id="bx")
        y = base_ch.add_vm("by", "02:bb:00:00:00:02", "10.150.0.2/24", iface_id="by")
        base_ch.ofctl("del-flows", "br-int")
        px, py = base_ch.ofport(x.port_name), base_ch.ofport(y.port_name)
        base_ch.ofctl("add-flow", "br-int", f"in_port={px},actions=output:{py}")
        base_ch.ofctl("add-flow", "br-int", f"in_port={py},actions=output:{px}")
        assert x.ping(y.ip, count=1, timeout=5)

        s = args.seconds
        baseline = iperf(x, y, s, 5201)
        results = {
            "VM -> VM across the router (hv1 -> hv2)": iperf(va1, vb2, s, 5202),
            "VM -> external through SNAT (on the gateway chassis)": iperf(va1, host, s, 5203),
            "VM -> external through SNAT (redirected from hv2)": iperf(va2, host, s, 5204),
        }
        print(f"baseline (one bridge, one flow each way): {baseline / 1e6:8.1f} Mbit/s")
        for name, bps in results.items():
            print(f"{name:55s} {bps / 1e6:8.1f} Mbit/s  ratio {bps / baseline:.2f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()

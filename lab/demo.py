"""`python -m lab.demo`: the README's first command. Starts a lab of two chassis, the controller on the
default store (./data), registers the chassis, creates two tenants with the same subnet and plugs their
VMs, then tells you what to ping. Ctrl-C stops the controller and removes the lab."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc

from controller import demo
from controller.pki import Pki
from lab import demo_vpn
from lab.chassis import Chassis
from lab.demo_util import ROOT, _admin_token, _wait_ready
from lab.ha import HaCluster, kill_master
from lab.hosts import VM
from lab.lab import Lab
from proto.sdn.v1 import dataplane_pb2 as dpb
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc

log = logging.getLogger("demo")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="data", help="the controller's store (default ./data)")
    ap.add_argument("--grpc-listen", default="127.0.0.1:50051")
    ap.add_argument(
        "--dashboard-listen",
        default="",
        help="HOST:PORT of the web dashboard (default 127.0.0.1:8080, or a free port if that is taken)",
    )
    ap.add_argument(
        "--metrics-listen", default="127.0.0.1:9464", help='HOST:PORT of the Prometheus endpoint ("" = off)'
    )
    ap.add_argument(
        "--check",
        action="store_true",
        help="run the pings yourself, print the result, exit (with --controllers N: also kill -9 each "
        "chassis's master under a ping and a writer)",
    )
    ap.add_argument(
        "--controllers",
        type=int,
        default=1,
        help="1: one controller on the SQLite store in DATA_DIR; N > 1: N controllers on a 3-member etcd "
        "cluster (started on free loopback ports, its data and the controllers' in DATA_DIR/ha, anew each run)",
    )
    ap.add_argument(
        "--vpn",
        action="store_true",
        help="the VPN demo instead: one IPsec tunnel from a tenant's router to a remote site (store: --data-dir, "
        "default ./data-vpn)",
    )
    args = ap.parse_args(argv)
    if args.controllers < 1:
        ap.error("--controllers must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.vpn:
        if args.data_dir == "data":
            args.data_dir = "data-vpn"
        return demo_vpn.main(args)
    data = Path(args.data_dir).resolve()
    dashboard_listen = args.dashboard_listen or _dashboard_address()
    authority = Pki(data / "pki")  # the controller's CA (kept in the store): each chassis gets a certificate
    authority.init()
    if args.controllers > 1:
        return _main_ha(args, data, authority, dashboard_listen)
    with Lab(pki=authority) as lab:
        chassis = [lab.add_chassis(f"hv{i}") for i in (1, 2)]
        of_port = lab.free_port()
        # OpenFlow over TLS (ssl: target, certificates both ways), OVSDB over SSL (ssl:MGMT_IP:6640)
        ctl = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "run_controller.py"),
                "--data-dir",
                str(data),
                "--grpc-listen",
                args.grpc_listen,
                "--openflow-listen",
                f"{lab.mgmt_ip}:{of_port}",
                "--switch-target",
                f"ssl:{lab.mgmt_ip}:{of_port}",
                "--datapath-type",
                "netdev",
                "--vswitchd-ctl-dir",
                str(lab.workdir),
                "--dashboard-listen",
                dashboard_listen,
                "--neutron-listen",
                "",
                "--metrics-listen",
                args.metrics_listen,
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
        )
        try:
            _wait_ready(args.grpc_listen, ctl)
            admin_token = _admin_token(data)
            admin = (("authorization", f"Bearer {admin_token}"),)
            channel = grpc.insecure_channel(args.grpc_listen)
            stub = pb_grpc.TopologyServiceStub(channel)
            for ch in chassis:  # create, or point an existing record at this lab's switch
                record = pb.Chassis(
                    name=f"chassis/{ch.name}",
                    datapath_id=ch.datapath_id,
                    tunnel_ip=ch.tunnel_ip,
                    ovsdb_address=ch.ovsdb_remote,
                )
                try:
                    stub.UpdateChassis(pb.UpdateChassisRequest(chassis=record), metadata=admin)
                except grpc.RpcError:
                    stub.CreateChassis(
                        pb.CreateChassisRequest(chassis=record, chassis_id=ch.name), metadata=admin
                    )
            ports = demo.seed(args.grpc_listen, admin_token, data)
            vms = {p.port_id: _add_vm(chassis[p.chassis_index], p) for p in ports}
            dp = dpb_grpc.DataplaneServiceStub(channel)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                listed = stub.ListPorts(pb.ListPortsRequest(), metadata=admin).ports
                if all(p.status == pb.Port.ACTIVE for p in listed if p.name.split("/")[1] in vms):
                    break
                time.sleep(0.2)
            dp.WaitRealized(dpb.WaitRealizedRequest(), metadata=admin)
            dashboard = _dashboard_url(data, dashboard_listen)
            _guide(lab, vms, args.grpc_listen, data, dashboard, admin_token)
            if args.check:
                print(
                    f"demo check: dashboard {'ok' if _dashboard_ok(dashboard, admin_token) else 'FAILED'}",
                    flush=True,
                )
                ok = vms["alice-vm1"].ping("10.0.0.12", count=3) and vms["bob-vm1"].ping("10.0.0.12", count=3)
                neigh = vms["bob-vm1"].exec("ip neigh show 10.0.0.12").stdout
                isolated = vms["bob-vm2"].mac in neigh and vms["alice-vm2"].mac not in neigh
                print(
                    f"demo check: pings {'ok' if ok else 'FAILED'}, tenants "
                    f"{'isolated' if isolated else 'MIXED'}",
                    flush=True,
                )
                dual = _dual_stack_ok(vms)
                print(
                    f"demo check: dual-stack ping across the router {'ok' if dual else 'FAILED'}", flush=True
                )
                tls = _tls_ok(chassis)
                print(f"demo check: switches and OVSDB over TLS {'ok' if tls else 'FAILED'}", flush=True)
                return 0 if ok and isolated and dual and tls else 1
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
            return 0
        finally:
            ctl.terminate()
            try:
                ctl.wait(timeout=15)
            except subprocess.TimeoutExpired:
                ctl.kill()


def _main_ha(args: argparse.Namespace, data: Path, authority: Pki, dashboard_listen: str) -> int:
    """The demo on several controllers sharing a 3-member etcd cluster (README "Several controllers")."""
    work = data / "ha"
    shutil.rmtree(work, ignore_errors=True)  # the last run's etcd cluster and controllers: anew each run
    work.mkdir(parents=True)
    with Lab(pki=authority) as lab:
        chassis = [lab.add_chassis(f"hv{i}") for i in (1, 2)]
        ha = HaCluster(lab, authority.root, work, controllers=args.controllers)
        first = ha.first
        first.grpc_listen = args.grpc_listen
        first.args += ["--dashboard-listen", dashboard_listen]  # (metrics: each on its own port, lab/ha.py)
        try:
            ha.start()
            vms = start_topology(ha, chassis)
            masters = ha.wait_settled()
            dashboard = _dashboard_url(first.data_dir, dashboard_listen)
            _guide_ha(lab, ha, vms, masters, dashboard)
            if not args.check:
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
                try:
                    signal.pause()
                except KeyboardInterrupt:
                    pass
                return 0
            ok = vms["alice-vm1"].ping("10.0.0.12", count=3, timeout=15) and vms["bob-vm1"].ping(
                "10.0.0.12", count=3, timeout=15
            )
            neigh = vms["bob-vm1"].exec("ip neigh show 10.0.0.12").stdout
            isolated = vms["bob-vm2"].mac in neigh and vms["alice-vm2"].mac not in neigh
            print(
                f"demo check: pings {'ok' if ok else 'FAILED'}, tenants {'isolated' if isolated else 'MIXED'}",
                flush=True,
            )
            tls = _tls_ok(chassis)
            print(f"demo check: switches and OVSDB over TLS {'ok' if tls else 'FAILED'}", flush=True)
            failover = True
            for ch in chassis:
                result = kill_master(ha, ch.name, vms["alice-vm1"], "10.0.0.12")
                print(f"demo check: {result.line()}", flush=True)
                if result.note:
                    print(result.note, flush=True)
                failover = failover and result.lossless
                ha.controllers[result.killed].start()  # back: the hash hands it its chassis again
                ha.wait_settled()
            print(f"demo check: failover {'ok' if failover else 'FAILED'}", flush=True)
            return 0 if ok and isolated and tls and failover else 1
        finally:
            ha.close()


def _add_vm(ch: Chassis, p: demo.DemoPort) -> VM:
    """The demo port's VM; a dual-stack one gets its IPv6 address statically (no duplicate address detection)
    and default routes of both families via the router."""
    vm = ch.add_vm(p.port_id, p.mac, f"{p.ip}/24", iface_id=p.port_id, mtu=p.mtu, gateway=p.gateway or None)
    if p.ip6:
        vm.exec(f"ip -6 addr add {p.ip6}/64 dev eth0 nodad && ip -6 route add default via {p.gateway6}")
    return vm


def _dual_stack_ok(vms: dict[str, VM]) -> bool:
    """alice-vm1 (hv1, network web) reaches alice-db1 (hv2, network db) across her router, both families."""
    src = vms["alice-vm1"]
    v4 = src.ping(demo.DB_VM[1], count=3, timeout=15)
    v6 = src.exec(f"ping -6 -n -c 3 -i 0.2 -w 15 {demo.V6['alice-db1']}", check=False).returncode == 0
    return v4 and v6


def start_topology(ha: HaCluster, chassis: list[Chassis]) -> dict[str, VM]:
    """The demo's chassis, tenants and VMs through the first controller of `ha`; until the ports are up."""
    first = ha.first
    stub, admin = first.topology(), first.admin
    for ch in chassis:
        stub.CreateChassis(
            pb.CreateChassisRequest(
                chassis=pb.Chassis(
                    datapath_id=ch.datapath_id, tunnel_ip=ch.tunnel_ip, ovsdb_address=ch.ovsdb_remote
                ),
                chassis_id=ch.name,
            ),
            metadata=admin,
        )
    ports = demo.seed(first.grpc_listen, first.admin_token(), first.data_dir)
    vms = {p.port_id: _add_vm(chassis[p.chassis_index], p) for p in ports}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = stub.ListPorts(pb.ListPortsRequest(), metadata=admin).ports
        if all(p.status == pb.Port.ACTIVE for p in listed if p.name.split("/")[1] in vms):
            break
        time.sleep(0.2)
    return vms


def _guide_ha(lab: Lab, ha: HaCluster, vms: dict[str, VM], masters: dict[str, str], dashboard: str) -> None:
    ns = {name: vm.namespace for name, vm in vms.items()}
    rows = "\n".join(
        f"  {c.controller_id}: API {c.grpc_listen}, OpenFlow {c.target}, pid {c.proc.pid if c.proc else '-'}, "
        f"master of {', '.join(ch for ch, m in sorted(masters.items()) if m == c.controller_id) or 'none'}, "
        f"log {c.log}"
        for c in ha.controllers.values()
    )
    print(
        f"""
The demo is up on {len(ha.controllers)} controllers sharing a {len(ha.etcd.members)}-member etcd cluster
({", ".join(ha.etcd.endpoints)}); every switch connects to every controller, one master per chassis:
{rows}

Ping across chassis (alice and bob both use 10.0.0.0/24; vm1 on hv1, vm2 on hv2):
  ip netns exec {ns["alice-vm1"]} ping -i 0.01 10.0.0.12
then kill -9 a chassis's master (its pid above): another takes over in about the lease (3 s), no ping lost.
The roles as the switch sees them:
  OVS_RUNDIR={lab.chassis["hv1"].rundir} ovs-vsctl --columns=target,role list controller

The API (any controller; a token works on every one: they share the token table in etcd):
  export SDN_ENDPOINT={ha.first.grpc_listen} SDN_TOKEN_FILE={ha.first.data_dir}/tokens.json
  .venv/bin/sdnctl port list
Dashboard of {ha.first.controller_id}: {dashboard}  (admin token {ha.first.admin_token()})
Ctrl-C stops the controllers and etcd and removes the lab.
""",
        flush=True,
    )


def _tls_ok(chassis: list, timeout: float = 15.0) -> bool:  # type: ignore[type-arg]
    """Every br-int is connected to an ssl: controller target (vswitchd refreshes is_connected every few
    seconds: wait for it) and the controller reaches its OVSDB over SSL."""
    deadline = time.monotonic() + timeout
    while True:
        bad = {}
        for ch in chassis:
            rows = ch.vsctl(
                "--format=csv",
                "--data=bare",
                "--no-headings",
                "--columns=target,is_connected",
                "list",
                "Controller",
            ).splitlines()
            if (
                not rows
                or not all(r.startswith("ssl:") and r.endswith(",true") for r in rows)
                or not ch.ovsdb_remote.startswith("ssl:")
            ):
                bad[ch.name] = (rows, ch.ovsdb_remote)
        if not bad:
            return True
        if time.monotonic() > deadline:
            print(f"not over TLS: {bad}", file=sys.stderr, flush=True)
            return False
        time.sleep(0.5)


def _dashboard_address() -> str:
    """127.0.0.1:8080 when it is free, else a free port (the controller would not start on a taken one)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 8080))
            return "127.0.0.1:8080"
        except OSError:
            pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _dashboard_url(data: Path, listen: str) -> str:
    try:
        return str(json.loads((data / "endpoints.json").read_text())["dashboard"])
    except (OSError, KeyError, ValueError):
        return f"http://{listen}/"


def _dashboard_ok(url: str, token: str) -> bool:
    """The page loads and the admin token is accepted by its API."""
    try:
        with urllib.request.urlopen(url, timeout=5) as page:
            if b'id="login-form"' not in page.read():
                return False
        req = urllib.request.Request(url + "api/topology", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            nodes = {n["id"] for n in json.loads(resp.read())["nodes"]}
        return {"network:alice-web", "network:bob-web", "chassis:hv1", "chassis:hv2"} <= nodes
    except (OSError, ValueError, KeyError):
        return False


def _guide(
    lab: Lab,
    vms: dict,
    endpoint: str,
    data: Path,
    dashboard: str,  # type: ignore[type-arg]
    admin_token: str,
) -> None:
    ns = {name: vm.namespace for name, vm in vms.items()}
    port = urllib.parse.urlsplit(dashboard).port
    print(
        f"""
The demo is up: two chassis (ovs-vswitchd in namespaces {", ".join(c.namespace for c in lab.chassis.values())}),
tenants alice and bob, each with network "web" = 10.0.0.0/24 and VMs vm1 = 10.0.0.11 on hv1, vm2 = 10.0.0.12 on hv2.

Ping across chassis over VXLAN, inside each tenant (same addresses, separate networks):
  ip netns exec {ns["alice-vm1"]} ping -c 3 10.0.0.12     # alice-vm1 -> alice-vm2
  ip netns exec {ns["bob-vm1"]} ping -c 3 10.0.0.12       # bob-vm1 -> bob-vm2, never alice's
  ip netns exec {ns["bob-vm1"]} ip neigh                  # the MAC is bob-vm2's (answered by flows)

Dual stack across alice's router: web also has fd00:a::/64, alice-vm1 = fd00:a::11; network db (10.0.1.0/24,
fd00:db::/64) has alice-db1 = 10.0.1.11 / fd00:db::11 on hv2:
  ip netns exec {ns["alice-vm1"]} ping -c 3 10.0.1.11      # IPv4, routed (TTL 63)
  ip netns exec {ns["alice-vm1"]} ping -6 -c 3 fd00:db::11 # IPv6, routed (hop limit 63)
  ip netns exec {ns["alice-vm1"]} ip -6 neigh              # the router's MAC (neighbour discovery answered by flows)

Look at the API and the flows:
  export SDN_ENDPOINT={endpoint} SDN_TOKEN_FILE={data}/tokens.json
  .venv/bin/sdnctl port list
  .venv/bin/sdnctl chassis list
  OVS_RUNDIR={lab.chassis["hv1"].rundir} ovs-ofctl -O OpenFlow13 dump-flows br-int
Tenant tokens are in {data}/demo-tokens.json. Ctrl-C stops the controller and removes the lab.

Every switch talks OpenFlow over TLS to the controller with its own certificate (CN = chassis id), and the
controller reaches each chassis's OVSDB over SSL ({lab.chassis["hv1"].ovsdb_remote}); the CA is {data}/pki/ca.crt.

Watch it in a browser (read-only dashboard: topology, flow tables with counters, packet traces):
  {dashboard}
  sign in with the admin token {admin_token}
  (or a tenant's token from demo-tokens.json to see only that tenant). From another machine:
  ssh -L {port}:127.0.0.1:{port} <this host>, then open the same URL.
""",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m lab.demo`: the README's first command. Starts a lab of two chassis, the controller on the
default store (./data), registers the chassis, creates two tenants with the same subnet and plugs their
VMs, then tells you what to ping. Ctrl-C stops the controller and removes the lab."""

from __future__ import annotations

import argparse
import json
import logging
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
from lab.lab import Lab
from proto.sdn.v1 import dataplane_pb2 as dpb
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("demo")


def _admin_token(data: Path) -> str:
    tokens = json.loads((data / "tokens.json").read_text())["tokens"]
    return next(t for t, v in tokens.items() if v["admin"])


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    channel = grpc.insecure_channel(endpoint)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit("the controller exited; see its log above")
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                return
            except grpc.FutureTimeoutError:
                continue
        raise SystemExit("the controller did not start")
    finally:
        channel.close()


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
    ap.add_argument("--check", action="store_true", help="run the pings yourself, print the result, exit")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = Path(args.data_dir).resolve()
    dashboard_listen = args.dashboard_listen or _dashboard_address()
    authority = Pki(data / "pki")  # the controller's CA (kept in the store): each chassis gets a certificate
    authority.init()
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
            vms = {}
            for p in ports:
                vms[p.port_id] = chassis[p.chassis_index].add_vm(
                    p.port_id, p.mac, f"{p.ip}/24", iface_id=p.port_id, mtu=p.mtu
                )
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
                tls = _tls_ok(chassis)
                print(f"demo check: switches and OVSDB over TLS {'ok' if tls else 'FAILED'}", flush=True)
                return 0 if ok and isolated and tls else 1
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

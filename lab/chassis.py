"""A chassis: one network namespace with its own ovs-vswitchd, br-phy (underlay + VTEP) and br-int."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import netaddr

from controller.pki import TlsFiles
from lab import netlink, proc
from lab.contracts import LabResources
from lab.hosts import VM
from lab.ovs import OvsInstance

INTEGRATION_BRIDGE = "br-int"
UNDERLAY_BRIDGE = "br-phy"
MGMT_IFNAME = "mgmt0"
UNDERLAY_IFNAME = "ul0"
TUNNEL_TYPES = ("vxlan", "gre", "geneve")


class Chassis:
    """One hypervisor. vswitchd runs in `namespace`; its database and logs live in `rundir`."""

    def __init__(
        self,
        lab: LabResources,
        name: str,
        index: int,
        namespace: str,
        rundir: Path,
        tunnel_ip: str,
        tunnel_prefixlen: int,
        mgmt_ip: str,
        datapath_id: int,
        tls: TlsFiles | None = None,
    ) -> None:
        self.lab = lab
        self.name = name
        self.index = index
        self.namespace = namespace
        self.rundir = rundir
        self.tunnel_ip = tunnel_ip
        self.tunnel_prefixlen = tunnel_prefixlen
        self.mgmt_ip = mgmt_ip
        self.datapath_id = datapath_id
        self.vms: dict[str, VM] = {}
        self.provider_bridges: dict[str, str] = {}  # bridge name -> physnet
        # Without the kernel's routes: OVS 3.1 re-reads them after every link change in the namespace (each VM
        # plugged or unplugged), deleting and re-inserting each route and, with the route over br-phy, the
        # tunnel-termination entries of br-phy's address; a packet translated in between is dropped (no
        # route: not encapsulated) or handed to the kernel (no tunnel port: ICMP port unreachable). A route
        # of our own (ovs/route/add) survives those re-reads. See BENCHMARKS.md "Churn soak".
        self.tls = tls  # its certificate (CN = name) when the lab has a CA: ssl: to the controller and OVSDB
        self._ovs = OvsInstance(
            rundir, namespace, lab.state, tls=tls, ovsdb_ssl_ip=mgmt_ip, system_routes=False
        )

    def __repr__(self) -> str:
        return f"Chassis({self.name!r}, ns={self.namespace!r}, vtep={self.tunnel_ip}, dpid={self.datapath_id:#x})"

    def describe(self) -> dict[str, object]:
        """Plain data for `Lab.describe()`."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "ovsdb": self.ovsdb,
            "ovsdb_remote": self.ovsdb_remote,
            "tunnel_ip": self.tunnel_ip,
            "mgmt_ip": self.mgmt_ip,
            "datapath_id": self.datapath_id_hex,
            "rundir": str(self.rundir),
            "provider_bridges": dict(self.provider_bridges),
            "vms": [vm.describe() for vm in self.vms.values()],
        }

    @property
    def ovsdb(self) -> str:
        """OVSDB address (`unix:/.../db.sock`)."""
        return self._ovs.ovsdb

    @property
    def ovsdb_remote(self) -> str:
        """The OVSDB address to register with the controller: `ssl:MGMT_IP:6640` when the chassis has a
        certificate, else the unix socket."""
        return self._ovs.ovsdb_remote

    @property
    def bridge_mappings(self) -> dict[str, str]:
        """physnet -> provider bridge, as a chassis registers them with the controller."""
        return {physnet: bridge for bridge, physnet in self.provider_bridges.items()}

    @property
    def underlay_root_ifname(self) -> str:
        """This chassis's underlay veth end on the root underlay bridge (tcpdump here sees its tunnels)."""
        return f"{self.lab.prefix}c{self.index}u"

    @property
    def mgmt_root_ifname(self) -> str:
        """This chassis's management veth end on the root management bridge."""
        return f"{self.lab.prefix}c{self.index}m"

    @property
    def datapath_id_hex(self) -> str:
        """The datapath id as the 16 hex digits OVS stores in other_config:datapath-id."""
        return f"{self.datapath_id:016x}"

    def start(self) -> None:
        """Start the daemons and build br-phy (underlay, VTEP IP on its internal port) and br-int."""
        self._ovs.start()
        self.vsctl(
            "add-br", UNDERLAY_BRIDGE, "--", "set", "Bridge", UNDERLAY_BRIDGE, "datapath_type=netdev",
            "--", "set", "Interface", UNDERLAY_BRIDGE, f"mtu_request={self.lab.underlay_mtu}",
            "--", "add-port", UNDERLAY_BRIDGE, UNDERLAY_IFNAME,
        )  # fmt: skip
        # The VTEP must sit on br-phy's internal port (LAB.md): on a plain veth, native tunneling drops.
        netlink.set_link(UNDERLAY_BRIDGE, self.namespace, mtu=self.lab.underlay_mtu)
        netlink.add_address(UNDERLAY_BRIDGE, f"{self.tunnel_ip}/{self.tunnel_prefixlen}", self.namespace)
        self._add_underlay_route()
        self.vsctl(
            "add-br", INTEGRATION_BRIDGE,
            "--", "set", "Bridge", INTEGRATION_BRIDGE, "datapath_type=netdev", "fail_mode=secure",
            "protocols=OpenFlow13", f"other_config:datapath-id={self.datapath_id_hex}",
            "--", "set", "Open_vSwitch", ".", f"external_ids:system-id={self.name}",
        )  # fmt: skip

    # --- OVS tools -------------------------------------------------------------------------------------

    def vsctl(self, *args: str, wait: bool = True, check: bool = True) -> str:
        """ovs-vsctl against this chassis's database (waits for vswitchd unless `wait=False`)."""
        return self._ovs.vsctl(*args, wait=wait, check=check)

    def ofctl(self, *args: str, check: bool = True) -> str:
        """ovs-ofctl -O OpenFlow13, e.g. `ofctl("add-flow", "br-int", "priority=1,actions=drop")`."""
        return self._ovs.ofctl(*args, check=check)

    def appctl(self, *args: str, check: bool = True) -> str:
        """ovs-appctl to this chassis's ovs-vswitchd, e.g. `appctl("ofproto/trace", "br-int", "...")`."""
        return self._ovs.appctl(*args, check=check)

    def exec(
        self, cmd: str | Sequence[str], check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the chassis namespace (a string runs through sh -c)."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return proc.run(argv, namespace=self.namespace, check=check, timeout=timeout)

    def ofport(self, port_name: str) -> int:
        """OpenFlow port number of an interface (-1 while vswitchd has not opened it)."""
        return int(self.vsctl("get", "Interface", port_name, "ofport"))

    def dump_flows(self, bridge: str = INTEGRATION_BRIDGE) -> list[str]:
        """Flow lines of `bridge` without the header line."""
        return [ln.strip() for ln in self.ofctl("dump-flows", bridge).splitlines() if "actions=" in ln]

    def set_controller(self, target: str | Sequence[str], bridge: str = INTEGRATION_BRIDGE) -> None:
        """Point `bridge` at controller target(s), e.g. "tcp:100.96.3.1:6653".

        max_backoff=1000 and connection_mode=out-of-band on every Controller row (LAB.md): the default backoff
        grows to 8 s, and in-band mode adds hidden flows. Note that adding a bridge's first controller
        deletes all its flows.
        """
        targets = [target] if isinstance(target, str) else list(target)
        # One transaction, so vswitchd never connects with the default (in-band, 8 s backoff) settings.
        args: list[str] = []
        for i, t in enumerate(targets):
            args += ["--", f"--id=@c{i}", "create", "Controller", f'target="{t}"']
            args += ["max_backoff=1000", "connection_mode=out-of-band"]
        refs = ",".join(f"@c{i}" for i in range(len(targets)))
        self.vsctl(*args, "--", "set", "Bridge", bridge, f"controller=[{refs}]")

    def del_controller(self, bridge: str = INTEGRATION_BRIDGE) -> None:
        """Remove every controller of `bridge` (removing the last one deletes its flows)."""
        self.vsctl("del-controller", bridge)

    def add_tunnel_port(self, tunnel_type: str, name: str | None = None) -> int:
        """Add a flow-based tunnel port (remote_ip=flow, key=flow) to br-int; return its ofport."""
        if tunnel_type not in TUNNEL_TYPES:
            raise ValueError(f"tunnel type must be one of {TUNNEL_TYPES}, not {tunnel_type!r}")
        port = name or f"{tunnel_type}-tun"
        self.vsctl(
            "add-port", INTEGRATION_BRIDGE, port, "--", "set", "Interface", port, f"type={tunnel_type}",
            "options:remote_ip=flow", "options:key=flow",
        )  # fmt: skip
        return self.ofport(port)

    # --- vswitchd lifecycle ----------------------------------------------------------------------------

    def vswitchd_pid(self) -> int | None:
        """Pid of ovs-vswitchd, None when it is not running."""
        return self._ovs.vswitchd_pid()

    def kill_vswitchd(self) -> None:
        """SIGKILL ovs-vswitchd, as in a crash. Bridges and ports stay in OVSDB; flows are lost."""
        self._ovs.kill_vswitchd()

    def start_vswitchd(self) -> None:
        """Start ovs-vswitchd again; it re-creates bridges and ports from OVSDB, with no flows."""
        self._ovs.start_vswitchd()
        # A write without --no-wait returns once vswitchd has applied the whole database (bridges, ports).
        self.vsctl("set", "Open_vSwitch", ".", f"external_ids:lab-vswitchd-pid={self.vswitchd_pid()}")
        self._add_underlay_route()

    def _add_underlay_route(self) -> None:
        """The route to the other VTEPs, held by ovs-vswitchd itself (it does not read the kernel's: see
        __init__); lost when vswitchd stops, so added after each start."""
        subnet = netaddr.IPNetwork(f"{self.tunnel_ip}/{self.tunnel_prefixlen}").cidr
        # vswitchd refuses the route ("Error while inserting route") until its view of br-phy has the
        # address, which it reads a moment after the bridge exists (seen in CI under load): retry a while
        deadline = time.monotonic() + 10
        while True:
            try:
                self.appctl("ovs/route/add", str(subnet), UNDERLAY_BRIDGE)
                return
            except proc.CommandError as err:
                if (
                    "Error while inserting route" not in err.stdout + err.stderr
                    or time.monotonic() > deadline
                ):
                    raise
            time.sleep(0.1)

    def restart_vswitchd(self) -> None:
        """Kill and start ovs-vswitchd."""
        self.kill_vswitchd()
        self.start_vswitchd()

    # --- provider networks -----------------------------------------------------------------------------

    def add_provider_bridge(self, bridge: str, physnet: str) -> str:
        """A netdev bridge whose uplink veth joins the lab's `physnet`; return the uplink's port name.

        The bridge runs in standalone mode (NORMAL) until someone sets a controller or flows. No patch
        ports to br-int are created: bridge mappings belong to the controller.
        """
        root_bridge, physnet_index = self.lab.physnet_bridge(physnet)
        uplink = f"up{physnet_index}-{physnet}"[:15]
        root_end = f"{self.lab.prefix}c{self.index}p{physnet_index}"
        self.lab.state.add_link(root_end)
        netlink.add_veth(root_end, uplink, peer_namespace=self.namespace, master=root_bridge)
        self.vsctl(
            "add-br", bridge, "--", "set", "Bridge", bridge, "datapath_type=netdev",
            "--", "add-port", bridge, uplink,
        )  # fmt: skip
        netlink.set_link(bridge, self.namespace)
        self.provider_bridges[bridge] = physnet
        # A hint in OVSDB, OVN-style ("physnet:bridge,..."); nothing in the lab acts on it.
        mappings = ",".join(f"{p}:{b}" for p, b in sorted(self.bridge_mappings.items()))
        self.vsctl("set", "Open_vSwitch", ".", f'external_ids:bridge-mappings="{mappings}"')
        return uplink

    def provider_uplink_root_ifname(self, physnet: str) -> str:
        """Name of this chassis's uplink veth end on `physnet`'s root bridge (for tcpdump)."""
        return f"{self.lab.prefix}c{self.index}p{self.lab.physnet_bridge(physnet)[1]}"

    # --- VMs -------------------------------------------------------------------------------------------

    def add_vm(
        self,
        name: str,
        mac: str,
        ip_cidr: str,
        iface_id: str,
        mtu: int = 1450,
        gateway: str | None = None,
    ) -> VM:
        """Create a VM namespace whose eth0 is peered with a br-int port carrying `iface_id`."""
        namespace = self.lab.claim_name(name)
        port = f"vm{self.lab.next_port_number()}-{name}"[:15]
        self.lab.state.add_namespace(namespace)
        netlink.create_netns(namespace)
        # Created directly in both namespaces: an eth0 made in the root namespace would clash with the host's.
        netlink.add_veth(
            port, "eth0", namespace=self.namespace, peer_namespace=namespace, mtu=mtu, peer_mac=mac
        )
        netlink.add_address("eth0", ip_cidr, namespace)
        if gateway is not None:
            netlink.add_default_route(gateway, namespace)
        # Without this TCP breaks: the userspace datapath does not do TSO for veths.
        proc.run(["ethtool", "-K", "eth0", "tx", "off"], namespace=namespace)
        self.vsctl(
            "add-port", INTEGRATION_BRIDGE, port, "--", "set", "Interface", port,
            f"external_ids:iface-id={iface_id}", f"external_ids:attached-mac={mac}",
        )  # fmt: skip
        vm = VM(name, namespace, mac, ip_cidr, iface_id, port, self, mtu)
        self.vms[name] = vm
        return vm

    def remove_vm(self, vm: VM) -> None:
        """Unplug `vm`: delete its br-int port and its namespace (and every process in it)."""
        if self.vms.get(vm.name) is not vm:
            raise ValueError(f"{vm!r} is not on {self!r}")
        self.vsctl("--if-exists", "del-port", INTEGRATION_BRIDGE, vm.port_name)
        proc.kill_pids(proc.pids_in_netns([vm.namespace]))
        netlink.delete_link(vm.port_name, self.namespace)
        netlink.remove_netns(vm.namespace)
        self.lab.state.forget_namespace(vm.namespace)
        self.lab.release_name(vm.name)
        del self.vms[vm.name]

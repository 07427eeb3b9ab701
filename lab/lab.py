"""The Lab: management network, underlay, provider networks, chassis and external hosts, torn down as one."""

from __future__ import annotations

import os
import random
import re
import secrets
import socket
from pathlib import Path
from types import TracebackType
from typing import Self

import netaddr

from controller.pki import Pki
from lab import netlink, proc
from lab.chassis import Chassis
from lab.hosts import ExternalHost
from lab.ovs import OvsInstance
from lab.state import DEFAULT_STATE_DIR, LabState, cleanup_stale, destroy, state_lock

MGMT_SUPERNET = netaddr.IPNetwork("100.96.0.0/16")  # one /24 per lab, on a root-namespace bridge
UNDERLAY_NET = netaddr.IPNetwork("10.250.0.0/24")  # VTEPs; lives only inside chassis namespaces
UNDERLAY_MTU = 1600  # >= VM MTU + 50 for VXLAN/Geneve headers (LAB.md)
EXTERNAL_BRIDGE = "br-ext"
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,20}")


class Lab:
    """A set of chassis and hosts in namespaces. Use as a context manager; two labs can run at once.

    Every name the lab creates starts with `prefix` (6 chars), so root-namespace links stay under the
    15-character limit: `<p>mg` management bridge, `<p>ul` underlay bridge, `<p>n<j>` physnet j's bridge,
    `<p>c<i>m|u|p<j>` chassis i's veth ends, `<p>x<k>` external host k's veth end.
    """

    def __init__(
        self, state_dir: Path = DEFAULT_STATE_DIR, clean_stale: bool = True, pki: Pki | None = None
    ) -> None:
        self.state_dir = Path(state_dir)
        self.clean_stale = clean_stale
        self.pki = pki  # the controller's CA: each chassis gets its certificate from it at creation
        self.prefix = ""
        self.chassis: dict[str, Chassis] = {}
        self.external_hosts: dict[str, ExternalHost] = {}
        self.underlay_mtu = UNDERLAY_MTU
        self._physnets: dict[str, tuple[str, int]] = {}
        self._names: set[str] = set()
        self._port_counter = 0
        self._state: LabState | None = None
        self.mgmt_net = netaddr.IPNetwork("0.0.0.0/32")

    # --- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> Self:
        """Claim a prefix and a management /24, create the management and underlay bridges."""
        if self.clean_stale:
            cleanup_stale(self.state_dir)
        try:
            self._create_base()
        except BaseException:
            self.close()
            raise
        return self

    def _create_base(self) -> None:
        with state_lock(self.state_dir):
            self.prefix = self._free_prefix()
            self.mgmt_net = self._free_mgmt_net()
            workdir = self.state_dir / self.prefix
            owner = os.getpid()
            self._state = LabState(
                self.prefix, str(self.state_dir), str(workdir), owner, proc.pid_start_time(owner)
            )
            self._state.save()
            workdir.mkdir(parents=True)
            self._state.add_link(self.mgmt_bridge)
            netlink.add_bridge(self.mgmt_bridge)
            netlink.add_address(self.mgmt_bridge, f"{self.mgmt_ip}/{self.mgmt_net.prefixlen}")
        self._state.add_link(self.underlay_bridge)
        netlink.add_bridge(self.underlay_bridge, mtu=self.underlay_mtu)

    def close(self) -> None:
        """Kill every daemon and process of the lab, then delete its links, namespaces and files."""
        if self._state is not None:
            destroy(self._state)
            self._state = None

    def detach(self) -> str:
        """Leave the lab running after this process exits (only `python -m lab down` removes it)."""
        state = self.state
        state.owner_pid, state.owner_start = 0, None
        state.save()
        self._state = None
        return state.prefix

    def describe(self) -> dict[str, object]:
        """What a demo or a person needs to use the lab, as plain data (JSON-ready)."""
        return {
            "prefix": self.prefix,
            "workdir": str(self.workdir),
            "mgmt_ip": self.mgmt_ip,
            "mgmt_bridge": self.mgmt_bridge,
            "underlay_bridge": self.underlay_bridge,
            "provider_networks": {name: bridge for name, (bridge, _) in self._physnets.items()},
            "chassis": [c.describe() for c in self.chassis.values()],
            "external_hosts": [h.describe() for h in self.external_hosts.values()],
        }

    def _free_prefix(self) -> str:
        taken = {p.stem for p in self.state_dir.glob("*.json")}
        links = netlink.list_links()
        while True:
            prefix = "lb" + secrets.token_hex(2)
            if prefix not in taken and not any(name.startswith(prefix) for name in links):
                return prefix

    def _free_mgmt_net(self) -> netaddr.IPNetwork:
        used = [netaddr.IPNetwork(a).cidr for a in netlink.root_addresses()]
        candidates = list(MGMT_SUPERNET.subnet(24))
        random.shuffle(candidates)
        for net in candidates:
            if not any(net in u or u in net for u in used):  # CIDR blocks overlap only by nesting
                return net
        raise RuntimeError(f"no free /24 left in {MGMT_SUPERNET}")

    # --- names and addresses ---------------------------------------------------------------------------

    @property
    def state(self) -> LabState:
        if self._state is None:
            raise RuntimeError("lab is not started (use `with Lab() as lab:`)")
        return self._state

    @property
    def workdir(self) -> Path:
        return Path(self.state.workdir)

    @property
    def mgmt_bridge(self) -> str:
        return f"{self.prefix}mg"

    @property
    def underlay_bridge(self) -> str:
        return f"{self.prefix}ul"

    @property
    def mgmt_ip(self) -> str:
        """The root namespace's address on the management network: where a controller should listen."""
        return str(self.mgmt_net.network + 1)

    def free_port(self) -> int:
        """A TCP port free on `mgmt_ip` right now (never listen on a fixed port in tests)."""
        with socket.socket() as s:
            s.bind((self.mgmt_ip, 0))
            return int(s.getsockname()[1])

    def claim_name(self, name: str) -> str:
        """Reserve a chassis or host name lab-wide; return the namespace it will use."""
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"bad name {name!r}: use letters, digits, '-' and '_', at most 20 chars")
        if name in self._names:
            raise ValueError(f"name {name!r} already used in this lab")
        self._names.add(name)
        return f"{self.prefix}-{name}"

    def release_name(self, name: str) -> None:
        self._names.discard(name)

    def next_port_number(self) -> int:
        self._port_counter += 1
        return self._port_counter

    # --- chassis ---------------------------------------------------------------------------------------

    def add_chassis(self, name: str, datapath_id: int | None = None) -> Chassis:
        """Create a chassis namespace with mgmt and underlay veths, its daemons, br-phy and br-int."""
        namespace = self.claim_name(name)
        index = len(self.chassis) + 1
        mgmt_ip = str(self.mgmt_net.network + 10 + index)
        tunnel_ip = str(UNDERLAY_NET.network + 10 + index)
        if datapath_id is None:
            datapath_id = (int(self.prefix.removeprefix("lb"), base=16) << 16) | index
        self.state.add_namespace(namespace)
        netlink.create_netns(namespace)
        mgmt_root = f"{self.prefix}c{index}m"  # names mirrored by Chassis.*_root_ifname
        self.state.add_link(mgmt_root)
        netlink.add_veth(mgmt_root, "mgmt0", peer_namespace=namespace, master=self.mgmt_bridge)
        netlink.add_address("mgmt0", f"{mgmt_ip}/{self.mgmt_net.prefixlen}", namespace)
        underlay_root = f"{self.prefix}c{index}u"
        self.state.add_link(underlay_root)
        netlink.add_veth(
            underlay_root, "ul0", peer_namespace=namespace, mtu=self.underlay_mtu, master=self.underlay_bridge
        )
        tls = self.pki.issue_chassis(name, out=self.workdir / "pki" / name) if self.pki is not None else None
        chassis = Chassis(
            self, name, index, namespace, self.workdir / name, tunnel_ip, UNDERLAY_NET.prefixlen, mgmt_ip,
            datapath_id, tls,
        )  # fmt: skip
        self.chassis[name] = chassis
        chassis.start()
        return chassis

    # --- provider networks and external hosts ----------------------------------------------------------

    def add_provider_network(self, physnet: str) -> str:
        """A root-namespace Linux bridge standing for physical network `physnet`; return its name.

        It forwards 802.1q-tagged frames unchanged (no VLAN filtering), like a trunking switch.
        """
        if physnet in self._physnets:
            raise ValueError(f"provider network {physnet!r} already exists")
        index = len(self._physnets) + 1
        bridge = f"{self.prefix}n{index}"
        self.state.add_link(bridge)
        netlink.add_bridge(bridge)
        self._physnets[physnet] = (bridge, index)
        return bridge

    def physnet_bridge(self, physnet: str) -> tuple[str, int]:
        """(root bridge name, index) of a provider network."""
        try:
            return self._physnets[physnet]
        except KeyError:
            raise KeyError(f"no provider network {physnet!r}; call add_provider_network first") from None

    def add_external_host(
        self, physnet: str, name: str, ip_cidr: str, vlan: int | None = None, mac: str | None = None
    ) -> ExternalHost:
        """A host namespace on `physnet`: untagged, or on VLAN `vlan` (an OVS access port, see ExternalHost)."""
        root_bridge, _ = self.physnet_bridge(physnet)
        namespace = self.claim_name(name)
        index = len(self.external_hosts) + 1
        root_end = f"{self.prefix}x{index}"
        mac = mac or "02:ee:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(4))
        self.state.add_namespace(namespace)
        netlink.create_netns(namespace)
        self.state.add_link(root_end)
        ovs = None
        if vlan is None:
            netlink.add_veth(root_end, "eth0", peer_namespace=namespace, master=root_bridge, peer_mac=mac)
        else:
            netlink.add_veth(root_end, "trunk0", peer_namespace=namespace, master=root_bridge)
            ovs = OvsInstance(self.workdir / f"x-{name}", namespace, self.state)
            ovs.start()
            ovs.vsctl(
                "add-br", EXTERNAL_BRIDGE, "--", "set", "Bridge", EXTERNAL_BRIDGE, "datapath_type=netdev",
                "--", "add-port", EXTERNAL_BRIDGE, "trunk0",
                "--", "add-port", EXTERNAL_BRIDGE, "eth0", f"tag={vlan}",
                "--", "set", "Interface", "eth0", "type=internal", f'mac="{mac}"',
            )  # fmt: skip
            netlink.set_link("eth0", namespace)
        netlink.add_address("eth0", ip_cidr, namespace)
        proc.run(["ethtool", "-K", "eth0", "tx", "off"], namespace=namespace)
        host = ExternalHost(name, namespace, mac, ip_cidr, physnet, vlan, root_end, ovs)
        self.external_hosts[name] = host
        return host

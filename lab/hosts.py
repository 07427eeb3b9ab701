"""Hosts in their own namespaces: VMs plugged into br-int, and external hosts on a physical network."""

from __future__ import annotations

import math
import re
import subprocess
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lab import proc
from lab.contracts import VswitchHost

if TYPE_CHECKING:
    from lab.ovs import OvsInstance


class Host:
    """A namespace with one addressed interface (eth0 or a VLAN access port) and a way to run commands."""

    def __init__(self, name: str, namespace: str, mac: str, ip_cidr: str) -> None:
        self.name = name
        self.namespace = namespace
        self.mac = mac
        self.ip_cidr = ip_cidr
        self.ip = ip_cidr.split("/")[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, ip={self.ip}, mac={self.mac}, ns={self.namespace!r})"

    def describe(self) -> dict[str, object]:
        """Plain data for `Lab.describe()`."""
        return {"name": self.name, "namespace": self.namespace, "mac": self.mac, "ip": self.ip_cidr}

    def exec(
        self, cmd: str | Sequence[str], check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the host's namespace (a string runs through sh -c)."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return proc.run(argv, namespace=self.namespace, check=check, timeout=timeout)

    def popen(self, cmd: str | Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start a command in the host's namespace; the lab kills it at teardown if still running.

        stdout/stderr default to pipes: read them (or pass other targets) for chatty long-running commands.
        """
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        kwargs.setdefault("text", True)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(proc.in_netns(self.namespace, argv), **kwargs)

    def ping(
        self, ip: str, count: int = 1, timeout: float = 5.0, interval: float = 0.2, size: int | None = None
    ) -> bool:
        """True when `count` echo replies from `ip` arrive within `timeout` seconds.

        Losses early on (ARP, OVS resolving a tunnel destination) are retried until the deadline: ping
        itself quits at once on "Destination Host Unreachable", e.g. while an ARP entry is FAILED.
        """
        deadline = time.monotonic() + timeout
        received = 0
        while received < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            cmd = [
                "ping",
                "-n",
                "-q",
                "-c",
                str(count - received),
                "-i",
                str(interval),
                "-w",
                str(math.ceil(left)),
            ]
            if size is not None:
                cmd += ["-s", str(size), "-M", "do"]  # no fragmentation: MTU problems show up as loss
            result = self.exec([*cmd, ip], check=False, timeout=left + 5)
            m = re.search(r"(\d+) received", result.stdout)
            received += int(m.group(1)) if m else 0
            if received < count:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return True


class VM(Host):
    """A 'VM': a namespace whose eth0 is a veth peered with a br-int port on its chassis."""

    def __init__(
        self,
        name: str,
        namespace: str,
        mac: str,
        ip_cidr: str,
        iface_id: str,
        port_name: str,
        chassis: VswitchHost,
        mtu: int,
    ) -> None:
        super().__init__(name, namespace, mac, ip_cidr)
        self.iface_id = iface_id
        self.port_name = port_name  # the br-int port (veth end inside the chassis namespace)
        self.chassis = chassis
        self.mtu = mtu

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "iface_id": self.iface_id, "port": self.port_name}

    @property
    def ofport(self) -> int:
        """The OpenFlow port number of this VM's br-int port (looked up in OVSDB each time)."""
        return int(self.chassis.vsctl("get", "Interface", self.port_name, "ofport"))


class ExternalHost(Host):
    """A host on a physical (provider) network, outside every chassis.

    With a VLAN, the kernel here has no 802.1q support (no vlan links, no tc vlan action, no bridge VLAN
    filtering), so the host terminates the VLAN with its own small OVS: a netdev bridge holding the trunk
    veth and an internal port `eth0` with `tag=VLAN` carrying the IP.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        mac: str,
        ip_cidr: str,
        physnet: str,
        vlan: int | None,
        root_ifname: str,
        ovs: OvsInstance | None,
    ) -> None:
        super().__init__(name, namespace, mac, ip_cidr)
        self.physnet = physnet
        self.vlan = vlan
        self.root_ifname = root_ifname  # its veth end on the physical network's root bridge
        self.ovs = ovs

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "physnet": self.physnet, "vlan": self.vlan}

"""A remote VPN site for tests and demos: a gateway on a physical network with its own strongSwan (the
tests' IPsec peer, configured over VICI by the caller, not by the controller) and a host on a private subnet
behind it."""

from __future__ import annotations

from typing import Any

import netaddr

from controller.services.charon import Charon
from lab import netlink, proc
from lab.hosts import ExternalHost, Host
from lab.lab import Lab


class RemoteSite:
    """`gateway`: an external host on `physnet` at `public_cidr` running charon (userspace ESP);
    `host`: a namespace at the private subnet's .10, routed through the gateway's .1."""

    def __init__(
        self, lab: Lab, physnet: str, name: str, public_cidr: str, private_cidr: str, mac: str | None = None
    ) -> None:
        self.name = name
        self.private = netaddr.IPNetwork(private_cidr)
        self.gateway: ExternalHost = lab.add_external_host(physnet, name, public_cidr, mac=mac)
        gw_ns = self.gateway.namespace
        host_ns = lab.claim_name(f"{name}-h")
        lab.state.add_namespace(host_ns)
        netlink.create_netns(host_ns)
        netlink.add_veth("lan0", "eth0", namespace=gw_ns, peer_namespace=host_ns)
        inside = f"{self.private.network + 1}/{self.private.prefixlen}"
        host_ip = f"{self.private.network + 10}/{self.private.prefixlen}"
        netlink.add_address("lan0", inside, gw_ns)
        netlink.add_address("eth0", host_ip, host_ns)
        netlink.add_default_route(str(self.private.network + 1), host_ns)
        for ns, dev in ((gw_ns, "lan0"), (host_ns, "eth0")):
            proc.run(["ethtool", "-K", dev, "tx", "off"], namespace=ns)
        proc.run(
            [
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
            namespace=gw_ns,
        )
        self.host = Host(f"{name}-h", host_ns, "", host_ip)
        self.charon = Charon(gw_ns, lab.workdir / f"charon-{name}", "userspace")

    def start(self) -> None:
        self.charon.start()

    def stop(self) -> None:
        self.charon.stop()

    def connect(
        self,
        name: str,
        remote: str,
        local_ts: list[str],
        remote_ts: list[str],
        psk: str,
        initiate: bool = False,
        proposal: str = "aes128-sha256-modp2048",
        dpd_delay: str = "2s",
    ) -> None:
        """Load (or replace) an IKEv2 PSK connection to `remote` (ids = addresses), with DPD."""
        local = self.gateway.ip
        conn: dict[str, Any] = {
            "version": 2,
            "local_addrs": [local],
            "remote_addrs": [remote],
            "proposals": [proposal],
            "encap": "yes",
            "mobike": "no",
            "dpd_delay": dpd_delay,
            "local": {"auth": "psk", "id": local},
            "remote": {"auth": "psk", "id": remote},
            "children": {
                name: {
                    "local_ts": local_ts,
                    "remote_ts": remote_ts,
                    "esp_proposals": [proposal],
                    "dpd_action": "clear",
                    "start_action": "start" if initiate else "none",
                }
            },
        }
        self.charon.call(
            lambda s: s.load_shared(
                {"id": f"psk-{name}", "type": "IKE", "data": psk, "owners": [local, remote]}
            )
        )
        self.charon.call(lambda s: s.load_conn({name: conn}))

    def child_sas(self) -> list[dict[str, Any]]:
        """The CHILD_SAs the site's charon holds (INSTALLED ones carry traffic)."""
        return [
            child
            for entry in self.charon.list_sas()
            for sa in entry.values()
            for child in (sa.get("child-sas") or {}).values()
        ]

    def up(self) -> bool:
        return any(c.get("state") == "INSTALLED" for c in self.child_sas())

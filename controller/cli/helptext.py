"""Help for the options and arguments many `sdnctl` commands share, given once here rather than at each
of their definitions; `fill` gives it to every one defined without its own help (tests/test_cli_osc.py
checks that none is left without)."""

from __future__ import annotations

import argparse

REF = "id or name (id match first, then a unique display name)"

OPTION_HELP = {
    "--enable": "administratively up (the default)",
    "--disable": "administratively down",
    "--enable-snat": "translate the tenant's outgoing traffic to the gateway address (the default)",
    "--disable-snat": "no source NAT: the gateway routes tenant addresses as they are",
    "--enable-port-security": "anti-spoofing and security groups on (the default)",
    "--disable-port-security": "no anti-spoofing and no security groups: the port may send as any address",
    "--external": "usable as a router's external gateway network (admin)",
    "--no-external": "no longer an external network (admin)",
    "--dhcp": "serve DHCP on this subnet (the default)",
    "--no-dhcp": "no DHCP server on this subnet",
    "--gateway": "the gateway address (default: the subnet's first address)",
    "--no-gateway": "no gateway address",
    "--share": "admin: every tenant sees the network and may attach ports to it",
    "--no-share": "admin: no longer shared (refused while other tenants' ports are on it)",
    "--enable-rule": "the rule takes effect (the default)",
    "--disable-rule": "keep the rule but ignore it",
    "--segment-type": "overlay or provider type (default: the controller's, vxlan); vlan and flat: admin",
    "--mtu": "the network's MTU (default: 1500 minus the overlay header)",
    "--network": f"the network: {REF}",
    "--cidr": "the subnet's prefix, e.g. 10.0.0.0/24 or 2001:db8::/64",
    "--mac-address": "the port's MAC (default: generated)",
    "--device-owner": 'what uses the port, e.g. "compute:nova"',
    "--device-id": "the id of what uses the port (a VM's)",
    "--host": "only the ports bound to this chassis",
    "--datapath-id": "the bridge's OpenFlow datapath id (hex or decimal)",
    "--tunnel-ip": "the chassis's tunnel endpoint address",
    "--icmp-type": "ICMP type (with --protocol icmp or icmpv6)",
    "--icmp-code": "ICMP code (with --icmp-type)",
    "--description": "free text",
    "--limit": "at most N (default: every page)",
    "--page-size": "items per request (default 1000)",
    "--ip-version": "the IP version the rule matches",
    "--source-ip-address": "match this source prefix (default any)",
    "--destination-ip-address": "match this destination prefix (default any)",
    "--source-port": "match these source ports (default any)",
    "--destination-port": "match these destination ports (default any)",
    "--vip-subnet-id": f"the subnet the VIP is allocated on: {REF}",
    "--protocol": "the transport protocol",
    "--protocol-port": "the TCP/UDP port",
    "--default-pool": f"the pool taking new connections: {REF}",
    "--no-default-pool": "no default pool",
    "--loadbalancer": f"the load balancer: {REF}",
    "--lb-algorithm": "how a member is chosen for a new connection",
    "--name": "display name",
    "--address": "the member's IP address",
    "--weight": "its share of new connections relative to the others (0: none; default 1)",
    "--type": "how members are probed",
    "--delay": "seconds between probes",
    "--max-retries": "failed probes before a member is marked down",
    "--pool": f"the pool: {REF}",
    "--port": f"the port: {REF}",
    "--fixed-ip-address": "which of the port's addresses (default: its only IPv4)",
    "--in-port": "the OpenFlow port number the packet enters on (with --chassis)",
    "--eth-dst": "destination MAC address",
    "--ip-dst": "destination IPv4 address",
    "--proto": "IP protocol",
    "--revision": "the revision to wait for (default: the current one)",
    "--wait": "seconds to wait at most (default 10)",
    "--tenant": "the tenant",
    "--router": f"the router: {REF}",
    "--vpnservice": f"the VPN service: {REF}",
    "--ikepolicy": f"the IKE policy: {REF}",
    "--ipsecpolicy": f"the IPsec policy: {REF}",
    "--local-endpoint-group": f"the endpoint group of the local subnets: {REF}",
    "--peer-endpoint-group": f"the endpoint group of the peer's CIDRs: {REF}",
    "--peer-address": "the peer gateway's public IP address",
    "--admin": "an admin token (sees and changes every tenant's resources)",
}

WHAT = {
    "NET": "network",
    "SUBNET": "subnet",
    "PORT": "port",
    "ROUTER": "router",
    "SG": "security group",
    "RULE": "rule",
    "FWG": "firewall group",
    "POLICY": "policy",
    "LB": "load balancer",
    "LOAD_BALANCER": "load balancer",
    "LISTENER": "listener",
    "POOL": "pool",
    "MEMBER": "member (id, name, or ADDRESS:PORT)",
    "HM": "health monitor",
    "FIP": "floating IP (id or address)",
    "CHASSIS": "chassis: its id (usually the hostname)",
    "IKE_POLICY": "IKE policy",
    "IPSEC_POLICY": "IPsec policy",
    "SERVICE": "VPN service",
    "GROUP": "endpoint group",
    "CONNECTION": "IPsec site connection",
}


def fill(parser: argparse.ArgumentParser) -> None:
    """Give the shared help to every option and reference argument of `parser`'s tree that has none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                fill(child)
            continue
        if action.help or action.dest == "help":
            continue
        if action.option_strings:
            action.help = next((OPTION_HELP[o] for o in action.option_strings if o in OPTION_HELP), None)
        elif isinstance(action.metavar, str) and action.metavar in WHAT:
            what = WHAT[action.metavar]
            action.help = f"the {what}" if "(" in what or ":" in what else f"the {what}: {REF}"

"""Lab: real Open vSwitch chassis, VMs and physical networks in network namespaces (see LAB.md).

    with Lab() as lab:                       # unique 6-char prefix "lbXXXX"; mgmt bridge + underlay bridge
        ch1 = lab.add_chassis("ch1")         # netns, ovsdb-server + ovs-vswitchd, br-phy (VTEP), br-int
        vm = ch1.add_vm("vm1", "02:00:00:00:00:01", "10.0.0.1/24", iface_id="port-1")
        ch1.set_controller(f"tcp:{lab.mgmt_ip}:{port}")   # controller listens on lab.mgmt_ip (or 0.0.0.0)
        lab.add_provider_network("physnet1"); ch1.add_provider_bridge("br-ex", "physnet1")
        ext = lab.add_external_host("physnet1", "ext1", "10.9.0.100/24", vlan=101)
        assert vm.ping(ext.ip)

Layout (names start with the lab prefix <p>, root-namespace links are at most 12 characters):
- management: root bridge <p>mg holds `lab.mgmt_ip` (.1 of a free 100.96.N.0/24); chassis i has `mgmt0`
  with .(10+i). ovs-vswitchd in a namespace reaches the root namespace only this way.
- underlay: root bridge <p>ul, MTU 1600; chassis i has `ul0` in its br-phy, VTEP 10.250.0.(10+i)/24 on
  br-phy's internal port. VMs default to MTU 1450. tcpdump on <p>c<i>u (`chassis.underlay_root_ifname`)
  sees that chassis's encapsulated traffic.
- br-int: netdev, fail_mode=secure, OpenFlow13, datapath-id (prefix hex << 16 | index) unless given.
- TLS: `Lab(pki=controller.pki.Pki(...))` (the controller's CA) issues each chassis a certificate at
  creation (CN = chassis name, files in <workdir>/pki/<name>/, key 0600). Its ovs-vswitchd gets them on the
  command line (for `ssl:` controller targets), and its ovsdb-server then runs inside the chassis namespace
  and also serves SSL on mgmt_ip:6640 (`chassis.ovsdb_remote`; `chassis.ovsdb` stays the local unix socket).
  Without a CA the lab is plaintext and ovsdb-server stays in the root namespace.
- provider network j: root bridge <p>n<j> forwarding 802.1q frames untouched; per chassis a netdev
  bridge with uplink `up<j>-<physnet>` (root end <p>c<i>p<j>). No patch ports: bridge mappings are the
  controller's (`chassis.bridge_mappings`, also written to Open_vSwitch external_ids:bridge-mappings;
  external_ids:system-id is the chassis name).
- state: /run/sdn-lab/<p>.json (override with SDN_LAB_STATE_DIR) lists namespaces, root links, daemon pids
  and the workdir /run/sdn-lab/<p>/ (one rundir per chassis: conf.db, db.sock, *.log, *.pid, *.ctl).
  `cleanup_stale()` (run by every `Lab()` start and by `python -m lab cleanup`) removes labs whose
  owner pid (+ start time) is dead. `python -m lab up --chassis 2 --physnet ext [--detach]`, `down`, `list`.
- `lab.traffic`: `tcp_transfer(client, server)` (sha256-checked TCP stream), `capture(ifname)` (tcpdump -e).

Measured here (2 vCPU, idle): Lab start 0.02 s, add_chassis 0.33 s, add_vm 0.12 s, VLAN external host
0.26 s (untagged 0.07 s), restart_vswitchd 0.16 s, close 0.36 s; tests/test_lab.py ~17 s in all.
Under load (others' tests running) everything takes 2-3x: most of add_chassis is process spawns and
pyroute2 NetNS sockets (each opens a helper in the namespace, 10-50 ms).

Gotchas learned:
- This kernel has no 802.1q (no vlan links), no tc vlan action or flower/matchall, no bridge VLAN
  filtering, no dummy links. A Linux bridge still forwards tagged frames, so a host on a VLAN runs its
  own small OVS (bridge br-ext: trunk veth + internal port eth0 with tag=VLAN). Frames tagged for a VLAN
  reaching a plain (untagged) host are dropped by its kernel, which is what tests want.
- The host sets net.bridge.bridge-nf-call-iptables=1: lab bridges opt out per bridge (nf_call_* = 0),
  or bridged traffic would cross the root namespace's iptables FORWARD chain.
- tcpdump on a Linux bridge device sees only flooded/local frames: capture on a bridge port (a root veth
  end). Use --immediate-mode: otherwise a short capture stopped with SIGINT prints nothing (TPACKET_V3
  blocks are delivered by timeout).
- After a failed ping the kernel keeps sending ARP probes for ~3 s; if they hit half-installed flows the
  neighbour goes FAILED and the next `ping` exits at once with "Destination Host Unreachable". `VM.ping`
  therefore retries until its deadline; tests also `ip neigh flush all` after installing flows.
- The first packet to a new tun_dst can be lost while OVS ARPs for it (`appctl tnl/neigh/show`).
- ovs-vswitchd runs with --disable-system-route and the underlay /24 added with `ovs/route/add ... br-phy`
  (after every start: such routes live in vswitchd only; retried while vswitchd has not seen br-phy's
  address yet: "Error while inserting route"). OVS 3.1 re-reads the kernel's routes after
  every link change in its namespace (each VM plugged or unplugged), deleting and re-inserting them, and
  with the br-phy route the tunnel-termination entries of the VTEP address: a steady tunneled packet
  translated in between was dropped before encapsulation or given to the kernel (ICMP port unreachable).
- Deleting a namespace releases its veths asynchronously: teardown deletes the root-side ends first, then
  the namespaces, after killing every process in them (vswitchd would live on in a hidden namespace).
- Read-only ovs-vsctl commands never wait for vswitchd; after starting it, `start_vswitchd` writes
  external_ids:lab-vswitchd-pid (a waiting write) so bridges and ports exist when it returns.
- `set_controller` creates the Controller rows with max_backoff/out-of-band in the same transaction, so
  vswitchd never tries in-band mode. `ovs-vsctl get` returns map values quoted only when needed.
- Running commands in a namespace uses `ip netns exec` (it also gives the command a /sys for that
  namespace); namespaces, veths, bridges, addresses and routes go through pyroute2 0.9.7 without trouble.
"""

from lab.chassis import Chassis
from lab.hosts import VM, ExternalHost, Host
from lab.lab import Lab
from lab.proc import CommandError
from lab.state import cleanup_stale

__all__ = ["VM", "Chassis", "CommandError", "ExternalHost", "Host", "Lab", "cleanup_stale"]

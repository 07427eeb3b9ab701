"""The router firewall end to end: real TCP/UDP through a distributed router on real ovs-vswitchd.

One tenant (so the default security group lets its VMs talk), two subnets behind one router, VMs of each
subnet on both chassis. Each test puts a firewall group on the router's interfaces and removes it after.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from google.protobuf import field_mask_pb2

from lab import VM
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, lab_env

pytestmark = pytest.mark.lab

TENANT = "fw"

_SERVER = """
import socket, sys, threading
def serve(kind, port):
    if kind == "tcp":
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port)); s.listen(16)
        while True:
            c, _ = s.accept(); c.sendall(b"hi"); c.close()
    s = socket.socket(type=socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        _, peer = s.recvfrom(64); s.sendto(b"hi", peer)
for spec in sys.argv[1:]:
    kind, port = spec.split(":")
    threading.Thread(target=serve, args=(kind, int(port)), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

_CLIENT = """
import socket, sys, time
kind, ip, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
t = time.monotonic()
try:
    if kind == "tcp":
        c = socket.create_connection((ip, port), timeout=timeout)
    else:
        c = socket.socket(type=socket.SOCK_DGRAM); c.settimeout(timeout); c.connect((ip, port)); c.send(b"x")
    c.settimeout(timeout)
    got = c.recv(16)
    print("ok" if got == b"hi" else "bad", time.monotonic() - t)
except ConnectionRefusedError:
    print("refused", time.monotonic() - t)
except (TimeoutError, socket.timeout):
    print("timeout", time.monotonic() - t)
"""


@dataclass
class Setup:
    env: Env
    md: tuple[tuple[str, str], ...]
    vms: dict[str, VM]
    iface: dict[str, str]  # subnet letter -> the router interface port id


def _serve(vm: VM, *specs: str) -> None:
    srv = vm.popen([sys.executable, "-c", _SERVER, *specs])
    assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with lab_env(tmp_path_factory.mktemp("e2e-fw"), provider=False) as env:
        md = env.md(TENANT)
        nets = {x: env.network(md, f"fw-{x}", f"10.13{i}.0.0/24") for i, x in enumerate("ab", start=1)}
        r = env.stub.CreateRouter(
            pb.CreateRouterRequest(router=pb.Router(display_name="fw-r"), router_id="fw-r"), metadata=md
        )
        iface = {}
        for x in "ab":
            ri = env.stub.AddRouterInterface(
                pb.AddRouterInterfaceRequest(name=r.name, subnet=f"subnets/fw-{x}-v4"), metadata=md
            )
            iface[x] = ri.port.split("/")[1]
        vms = {
            "a1": env.plug("hv1", env.port(md, "fw-a1", nets["a"])),
            "a2": env.plug("hv2", env.port(md, "fw-a2", nets["a"])),
            "b1": env.plug("hv2", env.port(md, "fw-b1", nets["b"])),
            "b2": env.plug("hv1", env.port(md, "fw-b2", nets["b"])),
        }
        for vm in vms.values():
            _serve(vm, "tcp:22", "tcp:80", "udp:53")
        env.wait_realized()
        s = Setup(env, md, vms, iface)
        assert connect(s, "a1", "b1", 22) == "ok", env.controller_log()
        yield s


def connect(
    s: Setup,
    src: str,
    dst: str,
    port: int,
    kind: str = "tcp",
    timeout: float = 3.0,
    elapsed: list[float] | None = None,
) -> str:
    """ "ok" (the server answered), "refused" (RST / ICMP unreachable) or "timeout"."""
    out = (
        s.vms[src]
        .exec(
            [sys.executable, "-c", _CLIENT, kind, s.vms[dst].ip, str(port), str(timeout)],
            check=False,
            timeout=timeout + 10,
        )
        .stdout.split()
    )
    assert out, f"client printed nothing ({src} -> {dst}:{port})"
    if elapsed is not None:
        elapsed.append(float(out[1]))
    return out[0]


def firewall(
    s: Setup, name: str, rules: list[dict[str, object]], *, ingress: str = "", egress: str = ""
) -> str:
    """A policy of `rules` (FirewallRule fields) on the ingress and/or egress of the interfaces on subnets
    `ingress` / `egress` ("a", "b", "ab"); returns the group's resource name."""
    st, md = s.env.stub, s.md
    ids = []
    for i, fields in enumerate(rules):
        st.CreateFirewallRule(
            pb.CreateFirewallRuleRequest(
                firewall_rule=pb.FirewallRule(**fields),  # type: ignore[arg-type]
                firewall_rule_id=f"{name}-r{i}",
            ),
            metadata=md,
        )
        ids.append(f"firewallRules/{name}-r{i}")
    pol = st.CreateFirewallPolicy(
        pb.CreateFirewallPolicyRequest(
            firewall_policy=pb.FirewallPolicy(firewall_rules=ids), firewall_policy_id=f"{name}-p"
        ),
        metadata=md,
    )
    ports = sorted({f"ports/{s.iface[x]}" for x in ingress + egress})
    group = st.CreateFirewallGroup(
        pb.CreateFirewallGroupRequest(
            firewall_group=pb.FirewallGroup(
                ingress_firewall_policy=pol.name if ingress else "",
                egress_firewall_policy=pol.name if egress else "",
                ports=ports,
            ),
            firewall_group_id=f"{name}-g",
        ),
        metadata=md,
    )
    s.env.wait_realized()
    return group.name


def remove(s: Setup, group: str) -> None:
    s.env.stub.DeleteFirewallGroup(pb.DeleteFirewallGroupRequest(name=group), metadata=s.md)
    s.env.wait_realized()


DENY_22 = [
    {"action": "deny", "protocol": "tcp", "destination_port_min": 22, "destination_port_max": 22},
    {"action": "allow"},
]


def test_deny_rule_blocks_routed_traffic_between_subnets_not_inside_them(setup: Setup) -> None:
    s = setup
    # a port range (20-23: one masked match) rather than one port
    group = firewall(
        s,
        "deny22",
        [{**DENY_22[0], "destination_port_min": 20, "destination_port_max": 23}, DENY_22[1]],
        egress="b",
    )
    try:
        assert connect(s, "a1", "b1", 22, timeout=1.5) == "timeout", "routed tcp/22 into subnet b is denied"
        assert connect(s, "a2", "b2", 22, timeout=1.5) == "timeout", "from the other chassis too"
        assert connect(s, "a1", "b1", 80) == "ok", "tcp/80 is allowed (the next rule)"
        assert connect(s, "a1", "b1", 53, kind="udp") == "ok"
        assert connect(s, "b1", "a1", 22) == "ok", "the other direction leaves through a, unfiltered"
        assert connect(s, "a1", "a2", 22) == "ok" and connect(s, "b2", "b1", 22) == "ok", (
            "inside each subnet nothing is filtered"
        )
    finally:
        remove(s, group)
    assert connect(s, "a1", "b1", 22) == "ok", "removing the group restores traffic"


def test_ingress_deny_on_the_source_subnets_interface(setup: Setup) -> None:
    s = setup
    group = firewall(s, "in22", DENY_22, ingress="a")
    try:
        assert connect(s, "a1", "b1", 22, timeout=1.5) == "timeout"
        assert connect(s, "a1", "b1", 80) == "ok"
        assert connect(s, "b2", "a2", 22) == "ok", "from subnet b the router receives on b's interface"
    finally:
        remove(s, group)


def test_reject_fails_at_once(setup: Setup) -> None:
    s = setup
    group = firewall(
        s,
        "rej",
        [
            {"action": "reject", "protocol": "tcp", "destination_port_min": 22},
            {"action": "reject", "protocol": "udp", "destination_port_min": 53},
            {"action": "allow"},
        ],
        egress="b",
    )
    try:
        took: list[float] = []
        assert connect(s, "a1", "b1", 22, timeout=5, elapsed=took) == "refused", s.env.controller_log()
        assert connect(s, "a2", "b2", 22, timeout=5, elapsed=took) == "refused"
        assert max(took) < 1.0, f"a RST, not a timeout: {took}"
        assert connect(s, "a1", "b1", 53, kind="udp", timeout=5, elapsed=took) == "refused", (
            "ICMP port unreachable"
        )
        assert connect(s, "a1", "b1", 80) == "ok"
    finally:
        remove(s, group)


def test_stateful_replies_pass_a_policy_that_denies_every_new_connection(setup: Setup) -> None:
    s = setup
    # subnet b may open nothing through the router (an empty policy: no match is deny)
    group = firewall(s, "state", [], ingress="b")
    try:
        assert connect(s, "a1", "b1", 80) == "ok", "replies of a connection opened from subnet a come back"
        assert connect(s, "a2", "b2", 80) == "ok"
        assert s.vms["a1"].ping(s.vms["b1"].ip, count=2)
        assert connect(s, "b1", "a1", 80, timeout=1.5) == "timeout", "subnet b cannot open a connection"
        assert not s.vms["b2"].ping(s.vms["a2"].ip, count=1, timeout=1.5)
        assert connect(s, "b1", "b2", 80) == "ok", "inside subnet b nothing is filtered"
    finally:
        remove(s, group)
    assert connect(s, "b1", "a1", 80) == "ok"


def test_rule_changes_apply_to_established_connections_too(setup: Setup) -> None:
    """Original-direction packets meet the current rules on every packet: denying a port stops a
    connection that was open (its next segment is dropped)."""
    s = setup
    group = firewall(s, "live", [{"action": "allow"}], egress="b")
    try:
        a1, b1 = s.vms["a1"], s.vms["b1"]
        # a long-lived connection: the client sends a line per 0.2 s for 6 s, the server counts them
        srv = b1.popen([sys.executable, "-c", _COUNTER])
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        cli = a1.popen([sys.executable, "-c", _TALKER, b1.ip])
        time.sleep(1.5)
        s.env.stub.UpdateFirewallRule(
            pb.UpdateFirewallRuleRequest(
                firewall_rule=pb.FirewallRule(name="firewallRules/live-r0", action="deny"),
                update_mask=field_mask_pb2.FieldMask(paths=["action"]),
            ),
            metadata=s.md,
        )
        s.env.wait_realized()
        cut = time.monotonic()
        cli.wait(timeout=30)
        srv.kill()
        out, _ = srv.communicate()
        stamps = [float(x) for x in out.split()]  # CLOCK_MONOTONIC: one clock for every namespace
        assert stamps and max(stamps) < cut + 0.5, "no segment got through after the deny"
    finally:
        remove(s, group)


_COUNTER = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(1); print("ready", flush=True)
c, _ = s.accept()
while True:
    b = c.recv(64)
    if not b:
        break
    print(time.monotonic(), flush=True)
"""

_TALKER = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], 7000), timeout=3)
end = time.monotonic() + 6
while time.monotonic() < end:
    try:
        c.send(b"x")
    except OSError:
        break
    time.sleep(0.2)
"""

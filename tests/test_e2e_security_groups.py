"""Security groups end to end: real connections between VM namespaces on two real ovs-vswitchd chassis.

Every check that something is blocked sits next to a check that the same traffic, allowed, does arrive,
so a broken lab cannot pass for a working filter.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import grpc
import pytest

from lab.hosts import Host
from proto.sdn.v1 import topology_pb2 as pb
from tests.e2e import Env, at_once, lab_env

pytestmark = pytest.mark.lab

TENANT = "sgt"

_LISTEN = """
import socket, sys, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
def echo(c):
    try:
        while True:
            b = c.recv(4096)
            if not b:
                break
            c.sendall(b)
    except OSError:
        pass
    c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        b, a = s.recvfrom(4096); s.sendto(b, a)
for p in sys.argv[1].split(","):
    threading.Thread(target=tcp, args=(int(p),), daemon=True).start()
for p in sys.argv[2].split(","):
    if p:
        threading.Thread(target=udp, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

_CONNECT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.sendall(b"hello"); c.settimeout(float(sys.argv[3]))
    print("ok" if c.recv(16) == b"hello" else "bad")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("error", e.errno)
"""

_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(float(sys.argv[3]))
for _ in range(3):
    s.sendto(b"hi", (sys.argv[1], int(sys.argv[2])))
    try:
        if s.recvfrom(16)[0] == b"hi":
            print("ok"); break
    except socket.timeout:
        continue
else:
    print("timeout")
"""

# a SYN to each port from a raw socket; prints the ports that answered SYN-ACK
_SCAN = """
import sys
from scapy.all import IP, TCP, conf, sr
conf.verb = 0
ports = [int(p) for p in sys.argv[2].split(",")]
ans, _ = sr(IP(dst=sys.argv[1]) / TCP(sport=47000, dport=ports, flags="S"), timeout=2, retry=1)
print(",".join(str(r[TCP].sport) for _s, r in ans if r.haslayer(TCP) and (int(r[TCP].flags) & 0x12) == 0x12))
"""

# a long-lived connection that echoes a message every 0.2 s; prints "ok" per answer, "lost" on a timeout
_CHAT = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
c.settimeout(1.0)
lost = 0
for _ in range(int(sys.argv[3])):
    try:
        c.sendall(b"x"); print("ok" if c.recv(16) else "closed", flush=True); lost = 0
    except (socket.timeout, OSError):
        print("lost", flush=True); lost += 1
    if lost == int(sys.argv[4]):
        break  # stopped for that many rounds in a row (TCP retransmitted all along): it stays stopped
    time.sleep(0.2)
"""


def connect(client: Host, server: Host, port: int, timeout: float = 1.5) -> str:
    return client.exec(
        [sys.executable, "-c", _CONNECT, server.ip, str(port), str(timeout)],
        check=False,
        timeout=timeout * 3 + 5,
    ).stdout.strip()


def udp(client: Host, server: Host, port: int, timeout: float = 1.0) -> str:
    return client.exec(
        [sys.executable, "-c", _UDP, server.ip, str(port), str(timeout)], check=False, timeout=timeout * 4 + 5
    ).stdout.strip()


def eventually(check, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    """Flows are realized before the API call returns only if we wait: retry a little."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with lab_env(tmp_path_factory.mktemp("e2e-sg"), provider=False) as e:
        yield e


class Sg:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.md = env.md(TENANT)

    def group(self, ident: str) -> pb.SecurityGroup:
        return self.env.stub.CreateSecurityGroup(
            pb.CreateSecurityGroupRequest(
                security_group=pb.SecurityGroup(display_name=ident), security_group_id=ident
            ),
            metadata=self.md,
        )

    def rule(self, group: str, direction: str, **kw) -> pb.SecurityGroupRule | None:  # type: ignore[no-untyped-def]
        try:
            r = self.env.stub.CreateSecurityGroupRule(
                pb.CreateSecurityGroupRuleRequest(
                    security_group_rule=pb.SecurityGroupRule(
                        security_group=f"securityGroups/{group}", direction=direction, **kw
                    )
                ),
                metadata=self.md,
            )
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.ALREADY_EXISTS:  # e.g. a new group's own egress rules
                return None
            raise
        self.env.wait_realized()
        return r

    def delete_rule(self, rule: pb.SecurityGroupRule) -> None:
        self.env.stub.DeleteSecurityGroupRule(
            pb.DeleteSecurityGroupRuleRequest(name=rule.name), metadata=self.md
        )
        self.env.wait_realized()

    def vm(self, ident: str, net: pb.Network, chassis: str, groups: list[str] | None = None):  # type: ignore[no-untyped-def]
        port = pb.Port(network=net.name, security_groups=[f"securityGroups/{g}" for g in groups or []])
        p = self.env.stub.CreatePort(pb.CreatePortRequest(port=port, port_id=ident), metadata=self.md)
        return self.env.plug(chassis, p)


@pytest.fixture(scope="module")
def world(env: Env):  # type: ignore[no-untyped-def]
    """m1, m2: the default group (on two chassis); x1: 'outsider' (egress only); w1: 'web' (tcp/22 from
    anywhere); d1: 'db' (tcp/5432 from web members). Each VM listens on tcp 22, 23, 5432 and udp 53, 54."""
    sg = Sg(env)
    net = env.network(sg.md, "sgt-net", "10.110.0.0/24")
    for g in ("outsider", "web", "db"):
        sg.group(g)
        sg.rule(g, "egress")
    ssh = sg.rule(
        "web", "ingress", protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0"
    )
    sg.rule(
        "db",
        "ingress",
        protocol="tcp",
        port_range_min=5432,
        port_range_max=5432,
        remote_group="securityGroups/web",
    )
    vms = {
        "m1": sg.vm("sgt-m1", net, "hv1"),
        "m2": sg.vm("sgt-m2", net, "hv2"),
        "x1": sg.vm("sgt-x1", net, "hv1", ["outsider"]),
        "w1": sg.vm("sgt-w1", net, "hv2", ["web"]),
        "d1": sg.vm("sgt-d1", net, "hv1", ["db"]),
    }
    env.wait_realized()
    servers = []
    for vm in vms.values():
        srv = vm.popen([sys.executable, "-c", _LISTEN, "22,23,5432", "53,54"])
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        servers.append(srv)
    yield sg, vms, {"ssh": ssh}
    for srv in servers:
        srv.kill()
        srv.communicate()


def test_default_group_members_reach_each_other_and_outsiders_do_not_reach_in(world) -> None:  # type: ignore[no-untyped-def]
    _sg, vms, _ = world
    m1, m2, x1 = vms["m1"], vms["m2"], vms["x1"]
    assert m1.ping(m2.ip, count=2) and m2.ping(m1.ip, count=2), "members of the default group, across chassis"
    assert connect(m1, m2, 23) == "ok"
    x1_in, x1_tcp, m1_out = at_once(
        lambda: x1.ping(m1.ip, count=1, timeout=2),
        lambda: connect(x1, m1, 23),
        lambda: m1.ping(x1.ip, count=1, timeout=2),
    )
    assert not x1_in, "x1 is not a member of m1's default group"
    assert x1_tcp == "timeout"
    assert not m1_out, "egress of the default group is open, but x1's group lets nothing in"


def test_ingress_tcp_22_opens_22_and_not_23(world) -> None:  # type: ignore[no-untyped-def]
    _sg, vms, _ = world
    x1, w1 = vms["x1"], vms["w1"]
    assert connect(x1, w1, 22) == "ok", "x1's egress is open and w1 allows tcp/22 from anywhere"
    assert connect(x1, w1, 23) == "timeout", "23 listens too, but no rule opens it"
    scan = x1.exec([sys.executable, "-c", _SCAN, w1.ip, "21,22,23,24,80"], check=False, timeout=30)
    assert scan.returncode == 0, scan.stderr
    assert scan.stdout.strip() == "22", scan.stdout


def test_remote_group_rule(world) -> None:  # type: ignore[no-untyped-def]
    _sg, vms, _ = world
    assert connect(vms["w1"], vms["d1"], 5432) == "ok", "w1 is in web, which db lets in on 5432"
    from_x1, to_23 = at_once(
        lambda: connect(vms["x1"], vms["d1"], 5432), lambda: connect(vms["w1"], vms["d1"], 23)
    )
    assert from_x1 == "timeout"
    assert to_23 == "timeout", "only 5432"


def test_remote_cidr_udp_and_icmp_rules(world) -> None:  # type: ignore[no-untyped-def]
    sg, vms, _ = world
    x1, m1, d1 = vms["x1"], vms["m1"], vms["d1"]
    assert at_once(lambda: udp(x1, d1, 53), lambda: x1.ping(d1.ip, count=1, timeout=2)) == ["timeout", False]
    sg.rule(
        "db", "ingress", protocol="udp", port_range_min=53, port_range_max=53, remote_ip_prefix=f"{x1.ip}/32"
    )
    assert eventually(lambda: udp(x1, d1, 53) == "ok"), "udp/53 from x1's address"
    not_54, not_m1 = at_once(lambda: udp(x1, d1, 54), lambda: udp(m1, d1, 53))
    assert not_54 == "timeout", "not 54"
    assert not_m1 == "timeout", "not from another address"
    sg.rule("db", "ingress", protocol="icmp", icmp_type=8, icmp_code=0)
    assert eventually(lambda: x1.ping(d1.ip, count=1, timeout=2)), "echo requests from anywhere"
    assert m1.ping(d1.ip, count=1, timeout=2)


def test_removing_a_rule_blocks_new_and_established_connections(world) -> None:  # type: ignore[no-untyped-def]
    sg, vms, rules = world
    x1, w1 = vms["x1"], vms["w1"]
    assert connect(x1, w1, 22) == "ok"
    chat = x1.popen([sys.executable, "-u", "-c", _CHAT, w1.ip, "22", "30", "4"])
    assert chat.stdout is not None
    assert chat.stdout.readline().strip() == "ok", "the connection is up before the rule goes"
    sg.delete_rule(rules["ssh"])
    out, _ = chat.communicate(timeout=60)
    lines = out.split()
    assert "lost" in lines, "the established connection stops once its rule is gone"
    assert lines[-1] == "lost", "and stays stopped"
    assert connect(x1, w1, 22) == "timeout", "no new connection either"
    rules["ssh"] = sg.rule(
        "web", "ingress", protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0"
    )
    assert eventually(lambda: connect(x1, w1, 22) == "ok"), "the rule back: new connections again"

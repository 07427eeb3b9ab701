"""VPNaaS records in the model and the store (no API): round trip through SQLite, indices rebuilt on
reload, on etcd (two controllers and a third started later), the status op the realization calls, the PSK
hidden from repr."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.etcd import EtcdCluster
from topology import ops_vpn
from topology.etcd_store import EtcdConfig, EtcdStore
from topology.model import Change, Topology
from topology.records import (
    IkePolicy,
    IpsecPolicy,
    IpsecSiteConnection,
    Record,
    VpnEndpointGroup,
    VpnService,
)
from topology.state import State
from topology.state_etcd import EtcdState

PSK = "s3cret-psk-value"


def _records() -> list[Change]:
    recs: list[Record] = [
        IkePolicy(id="ike", tenant="a", ike_version="v1", pfs="group19", lifetime_s=7200),
        IpsecPolicy(id="ipsec", tenant="a", encryption_algorithm="aes-256-gcm-16"),
        VpnService(id="vpn", tenant="a", router_id="r1"),
        VpnEndpointGroup(id="local", tenant="a", type="subnet", endpoints=("s1", "s2")),
        VpnEndpointGroup(id="peer", tenant="a", type="cidr", endpoints=("192.168.0.0/24",)),
        IpsecSiteConnection(
            id="conn",
            tenant="a",
            vpnservice_id="vpn",
            ikepolicy_id="ike",
            ipsecpolicy_id="ipsec",
            local_ep_group_id="local",
            peer_ep_group_id="peer",
            peer_address="203.0.113.9",
            peer_id="203.0.113.9",
            psk=PSK,
        ),
    ]
    return [(r.KIND, r.id, None, r) for r in recs]


def test_vpn_records_survive_a_reload_with_their_indices(tmp_path: Path) -> None:
    state = State(tmp_path / "db")
    state.write(lambda t, r, n: _records())
    before = state.topology
    assert before.router_vpn == {"r1": "vpn"} and before.subnet_epgs == {"s1": {"local"}, "s2": {"local"}}
    assert before.vpn_users[("ike_policy", "ike")] == {"conn"}
    assert before.vpn_users[("vpn_endpoint_group", "peer")] == {"conn"}
    state.close()
    again = State(tmp_path / "db")
    after = again.topology
    for table in ("ike_policies", "ipsec_policies", "vpn_services", "vpn_endpoint_groups"):
        assert getattr(after, table) == getattr(before, table)
    assert after.ipsec_site_connections == before.ipsec_site_connections
    assert after.ipsec_site_connections["conn"].psk == PSK  # the realization needs it back
    assert after.vpn_endpoint_groups["peer"].endpoints == ("192.168.0.0/24",)  # a tuple again
    assert after.router_vpn == before.router_vpn and after.vpn_users == before.vpn_users
    assert after.subnet_epgs == before.subnet_epgs
    assert set(after.graph.edges) == set(before.graph.edges)
    again.close()


def test_the_psk_is_not_in_a_records_repr() -> None:
    conn = _records()[-1][3]
    assert PSK not in repr(conn) and PSK not in str(conn) and "psk" not in repr(conn)


def test_status_op_sets_the_connection_and_derives_the_service() -> None:
    topo = Topology()
    topo.apply(_records(), 1)
    changes = ops_vpn.set_vpn_status(topo, "conn", "ACTIVE", "", 2, 10.0)
    assert [(k, i) for k, i, _o, _n in changes] == [("ipsec_site_connection", "conn"), ("vpn_service", "vpn")]
    topo.apply(changes, 2)
    assert topo.ipsec_site_connections["conn"].status == "ACTIVE"
    assert topo.vpn_services["vpn"].status == "ACTIVE" and topo.vpn_services["vpn"].revision == 2
    assert ops_vpn.set_vpn_status(topo, "conn", "ACTIVE", "", 3, 11.0) == []  # nothing changes
    changes = ops_vpn.set_vpn_status(topo, "conn", "DOWN", "authentication failed", 3, 11.0)
    topo.apply(changes, 3)
    conn = topo.ipsec_site_connections["conn"]
    assert (conn.status, conn.status_reason) == ("DOWN", "authentication failed")
    assert topo.vpn_services["vpn"].status == "DOWN"
    changes = ops_vpn.set_vpn_status(topo, "conn", "ERROR", "charon failed", 4, 12.0)
    topo.apply(changes, 4)
    assert topo.vpn_services["vpn"].status == "ERROR"
    assert ops_vpn.set_vpn_status(topo, "gone", "ACTIVE", "", 5, 13.0) == []


def test_an_admin_down_connection_stays_down_whatever_is_reported() -> None:
    topo = Topology()
    recs = _records()
    conn = recs[-1][3]
    assert isinstance(conn, IpsecSiteConnection)
    recs[-1] = (conn.KIND, conn.id, None, IpsecSiteConnection(**{**conn.__dict__, "admin_state_up": False}))
    topo.apply(recs, 1)
    changes = ops_vpn.set_vpn_status(topo, "conn", "ACTIVE", "", 2, 10.0)
    topo.apply(changes, 2)
    got = topo.ipsec_site_connections["conn"]
    assert (got.status, got.status_reason) == ("DOWN", ops_vpn.ADMIN_DOWN_REASON)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


def test_vpn_records_on_etcd_reach_every_controller_and_a_new_one(etcd: EtcdCluster) -> None:
    prefix = f"/vpn-{uuid.uuid4().hex[:8]}/"

    def open_state() -> EtcdState:
        return EtcdState(EtcdStore(EtcdConfig(tuple(etcd.endpoints), prefix=prefix, timeout_s=2.0)))

    a, b = open_state(), open_state()
    try:
        made, _ = a.write(lambda t, r, n: _records())
        assert b.catch_up(made)  # b reports about a connection it has seen (as the realization does)
        rev, changes = b.write(lambda t, r, n: ops_vpn.set_vpn_status(t, "conn", "ACTIVE", "", r, n))
        assert changes and a.catch_up(rev) and b.catch_up(rev)
        for state in (a, b):
            conn = state.topology.ipsec_site_connections["conn"]
            assert (conn.status, conn.psk) == ("ACTIVE", PSK)
            assert state.topology.vpn_services["vpn"].status == "ACTIVE"
            assert state.topology.router_vpn == {"r1": "vpn"}
        c = open_state()
        try:
            for table in ("ike_policies", "ipsec_policies", "vpn_services", "vpn_endpoint_groups"):
                assert getattr(c.topology, table) == getattr(a.topology, table), table
            assert c.topology.ipsec_site_connections == a.topology.ipsec_site_connections
            assert c.topology.vpn_users == a.topology.vpn_users
        finally:
            c.close()
    finally:
        a.close()
        b.close()

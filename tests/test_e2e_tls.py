"""Chassis identity over TLS, end to end: real ovs-vswitchd switches with their certificates, the real
controller, and fake switches claiming a real switch's datapath id — with no certificate, with another
chassis's certificate, with a certificate for no registered chassis, with the right certificate and the
wrong datapath id, and in plaintext. None of them is ever sent a flow, the real switch stays connected and
realizes a change made meanwhile, and each refusal is logged and counted. Plaintext clients are refused by
the OpenFlow listener and by each chassis's OVSDB server. Without TLS (--insecure-openflow), a datapath id
already connected is refused from another address.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.ovs import OVSDB_SSL_PORT
from tests.e2e import Env, lab_env
from tests.fake_switch import FakeSwitchThread, run_fake_switch

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with lab_env(tmp_path_factory.mktemp("e2e-tls"), provider=False) as e:
        yield e


def rejected(env: Env) -> dict[str, float]:
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{env.controller.metrics_port}/metrics", timeout=10
    ).read()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text.decode()):
        if fam.name == "sdn_southbound_rejected":
            for s in fam.samples:
                out[s.labels["reason"]] = s.value
    return out


def test_fake_switches_get_no_flow_and_the_real_one_keeps_realizing(env: Env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lab, hv1, hv2 = env.lab, env.chassis("hv1"), env.chassis("hv2")
    assert lab.pki is not None and hv1.tls is not None and hv2.tls is not None
    md = env.md("alice")
    net = env.network(md, "net", "10.30.0.0/24")
    a = env.plug("hv1", env.port(md, "a", net))
    b = env.plug("hv2", env.port(md, "b", net))
    env.wait_realized()
    assert a.ping(b.ip, count=1)
    before = rejected(env)
    intruder = lab.pki.issue_client("intruder", out=tmp_path / "intruder")  # signed by the CA, no chassis
    host, port, ca = lab.mgmt_ip, env.controller.of_port, str(lab.pki.ca_cert)
    fakes = {
        "plaintext": FakeSwitchThread("plaintext", host, port, hv1.datapath_id),
        "no-certificate": FakeSwitchThread("nocert", host, port, hv1.datapath_id, ca=ca),
        "other-chassis-certificate": FakeSwitchThread("hv2cert", host, port, hv1.datapath_id, hv2.tls, ca),
        "unregistered-certificate": FakeSwitchThread("intruder", host, port, hv1.datapath_id, intruder, ca),
        "right-certificate-wrong-dpid": FakeSwitchThread("hv1cert", host, port, hv2.datapath_id, hv1.tls, ca),
    }
    for f in fakes.values():
        f.start()
    try:
        time.sleep(2)  # the fakes are connecting and being refused, again and again
        # a change meanwhile: a new port on hv1, realized on the real switch
        c = env.plug("hv1", env.port(md, "c", net))
        env.wait_realized()
        assert c.ping(b.ip, count=1) and b.ping(c.ip, count=1), env.controller_log()
        time.sleep(2)
    finally:
        results = {name: f.stop() for name, f in fakes.items()}
    for name, runs in results.items():
        assert runs, name
        for r in runs:
            assert not r.programmed, f"{name} was sent programming messages {r.programmed}"
        assert all(r.closed_by_peer for r in runs if r.connected), f"{name}: not refused: {runs}"
    for name in ("other-chassis-certificate", "unregistered-certificate", "right-certificate-wrong-dpid"):
        assert any(r.features_sent for r in results[name]), f"{name} never got to claim its datapath id"
    # the real switches stayed connected and realized everything
    status = env.status()
    assert status["hv1"].connected and status["hv2"].connected
    # after the fakes are gone, a change still reaches hv1 at once (no waiting on a fake's dead connection)
    d = env.plug("hv1", env.port(md, "d", net), wait=False)
    env.wait_active("ports/d", "hv1", timeout=10)
    env.wait_realized(timeout=10)
    assert d.ping(a.ip, count=1)
    after = rejected(env)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert grew["tls_handshake"] >= 2, grew  # plaintext, no certificate
    assert grew["wrong_datapath_id"] >= 2, grew  # hv2's certificate as hv1, hv1's certificate as hv2
    assert grew["unknown_chassis"] >= 1, grew
    log = env.controller.log.read_text()
    assert "refused switch from" in log and "wrong_datapath_id" in log and "TLS handshake failed" in log
    assert "BEGIN" not in log and "PRIVATE KEY" not in log  # no key material in the log


def test_plaintext_clients_are_refused_by_openflow_and_ovsdb(env: Env) -> None:
    hv1 = env.chassis("hv1")
    # OpenFlow: a plaintext HELLO gets no OpenFlow answer, the connection is closed
    r = run_fake_switch(env.lab.mgmt_ip, env.controller.of_port, hv1.datapath_id, duration=5)
    assert r.connected and r.closed_by_peer and not r.received, r
    # OVSDB: the chassis's ovsdb-server speaks SSL only; a plaintext JSON-RPC request gets no JSON back
    assert hv1.ovsdb_remote == f"ssl:{hv1.mgmt_ip}:{OVSDB_SSL_PORT}"
    with socket.create_connection((hv1.mgmt_ip, OVSDB_SSL_PORT), timeout=5) as s:
        s.sendall(json.dumps({"method": "list_dbs", "params": [], "id": 1}).encode())
        s.settimeout(5)
        reply = b""
        try:
            while chunk := s.recv(4096):
                reply += chunk
        except (TimeoutError, ConnectionError):
            pass
    assert b"Open_vSwitch" not in reply and b'"result"' not in reply, reply


def test_insecure_openflow_binds_a_datapath_to_its_address(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with lab_env(tmp_path, chassis=1, provider=False, tls=False) as env:
        hv1 = env.chassis("hv1")
        assert env.status()["hv1"].connected
        # from the root namespace's address, not hv1's: refused while hv1 is connected
        r = run_fake_switch(env.lab.mgmt_ip, env.controller.of_port, hv1.datapath_id, duration=5)
        assert r.features_sent and r.closed_by_peer and not r.programmed, r
        assert env.status()["hv1"].connected
        md = env.md("t")
        net = env.network(md, "n", "10.31.0.0/24")
        a = env.plug("hv1", env.port(md, "a", net))
        b = env.plug("hv1", env.port(md, "b", net))
        env.wait_realized()
        assert a.ping(b.ip, count=1)
        log = env.controller.log.read_text()
        assert "datapath_in_use" in log
        assert "insecure_openflow: OpenFlow" in log and "WARNING" in log


def test_a_chassis_certificate_names_the_chassis(env: Env) -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    hv1 = env.chassis("hv1")
    assert hv1.tls is not None
    cert = x509.load_pem_x509_certificate(hv1.tls.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "hv1"
    assert (hv1.tls.key.stat().st_mode & 0o777) == 0o600
    assert env.lab.pki is not None and hv1.tls.ca.read_bytes() == env.lab.pki.ca_cert.read_bytes()
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(hv1.tls.ca.read_bytes()))

"""The built-in PKI, the gRPC API over TLS (a real controller process, real TLS channels), the OpenFlow
listener refusing plaintext, and the insecure options' warnings. No switches needed."""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from controller import config
from controller.cli import sdnctl as cli
from controller.pki import Pki, peer_common_name
from controller.pki import main as pki_main
from controller.southbound.ovsdb import ChassisAgent
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import ROOT, ControllerProcess
from tests.fake_switch import run_fake_switch


def mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_pki_init_and_issue(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run_controller.py"),
            "pki",
            "--data-dir",
            str(data),
            "init",
            "--san",
            "ctl.example",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    root = data / "pki"
    assert mode(root / "ca.key") == 0o600 and mode(root / "controller.key") == 0o600 and mode(root) == 0o700
    assert pki_main(["--data-dir", str(data), "issue-chassis", "hv7"]) == 0
    assert pki_main(["--data-dir", str(data), "issue-client", "ops", "--out", str(tmp_path / "ops")]) == 0
    assert pki_main(["--data-dir", str(data), "issue-chassis", "bad name"]) == 2
    ca = x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())
    chassis = x509.load_pem_x509_certificate((root / "chassis" / "hv7.crt").read_bytes())
    assert chassis.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "hv7"
    chassis.verify_directly_issued_by(ca)
    assert mode(root / "chassis" / "hv7.key") == 0o600 and mode(tmp_path / "ops" / "ops.key") == 0o600
    assert (tmp_path / "ops" / "ca.crt").read_bytes() == (root / "ca.crt").read_bytes()
    ctl = x509.load_pem_x509_certificate((root / "controller.crt").read_bytes())
    sans = ctl.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "ctl.example" in sans.get_values_for_type(x509.DNSName)
    # init again keeps the CA; a new name re-issues the controller's certificate only
    ca_before = (root / "ca.crt").read_bytes()
    files = Pki(root).ensure_controller(["192.0.2.9"])
    assert (root / "ca.crt").read_bytes() == ca_before
    sans = (
        x509.load_pem_x509_certificate(files.cert.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert any(str(ip) == "192.0.2.9" for ip in sans.get_values_for_type(x509.IPAddress))
    assert not any(b"PRIVATE" in p.read_bytes() for p in root.rglob("*.crt"))


def test_peer_common_name() -> None:
    assert peer_common_name({"subject": ((("organizationName", "x"),), (("commonName", "hv1"),))}) == "hv1"
    assert peer_common_name(None) is None and peer_common_name({}) is None


def test_secure_defaults_and_checks() -> None:
    cfg = config.load([])
    assert cfg.switch_controller_target.startswith("ssl:")
    assert not cfg.grpc_uses_tls  # loopback: plaintext is reachable only from this machine
    assert config.load(["--grpc-listen", "0.0.0.0:1"]).grpc_uses_tls
    assert not config.load(["--grpc-listen", "0.0.0.0:1", "--insecure-grpc"]).grpc_uses_tls
    assert config.load(["--grpc-tls", "always"]).grpc_uses_tls
    assert config.load(["--insecure-openflow"]).switch_controller_target.startswith("tcp:")
    with pytest.raises(SystemExit):
        config.load(["--switch-target", "tcp:192.0.2.1:6653"])  # a plaintext target for a TLS listener


def test_ovsdb_agent_refuses_plaintext_tcp_unless_allowed(caplog: pytest.LogCaptureFixture) -> None:
    agent = ChassisAgent("x", "tcp:127.0.0.1:9", controller_targets=[], datapath_id=1)
    with caplog.at_level(logging.ERROR, logger="controller.southbound.ovsdb"):
        agent.start()
    assert agent._thread is None and "refusing plaintext OVSDB address" in caplog.text
    assert not agent.snapshot().connected


@pytest.fixture
def tls_controller(tmp_path: Path) -> ControllerProcess:
    data = tmp_path / "data"
    Pki(data / "pki").init()
    ctl = ControllerProcess(data, ["--grpc-tls", "always"])
    ctl.credentials = grpc.ssl_channel_credentials((data / "pki" / "ca.crt").read_bytes())
    return ctl


def _list(channel: grpc.Channel, md: tuple[tuple[str, str], ...] = ()) -> None:
    pb_grpc.TopologyServiceStub(channel).ListNetworks(pb.ListNetworksRequest(), metadata=md, timeout=10)


def test_grpc_over_tls_tokens_still_required_plaintext_refused(
    tls_controller: ControllerProcess, tmp_path: Path
) -> None:
    ctl = tls_controller
    ctl.start()
    try:
        endpoints = json.loads((ctl.data_dir / "endpoints.json").read_text())
        assert endpoints["grpc_tls"] is True and endpoints["ca_cert"].endswith("ca.crt")
        admin = (("authorization", f"Bearer {ctl.admin_token()}"),)
        with ctl.channel() as ch:
            _list(ch, admin)
            with pytest.raises(grpc.RpcError) as e:
                _list(ch)  # TLS is no substitute for a token
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # a client certificate is optional, and accepted
        assert pki_main(["--data-dir", str(ctl.data_dir), "issue-client", "ops"]) == 0
        d = ctl.data_dir / "pki" / "clients"
        creds = grpc.ssl_channel_credentials(
            (ctl.data_dir / "pki" / "ca.crt").read_bytes(),
            (d / "ops.key").read_bytes(),
            (d / "ops.crt").read_bytes(),
        )
        with grpc.secure_channel(ctl.endpoint, creds) as ch:
            _list(ch, admin)
        # the CLI over TLS, with and without a client certificate; plaintext fails with "cannot reach" (8)
        token = ["--endpoint", ctl.endpoint, "--token", ctl.admin_token(), "-f", "json"]
        ca = ["--ca-cert", str(ctl.data_dir / "pki" / "ca.crt")]
        assert cli.main([*token, *ca, "network", "list"]) == 0
        assert (
            cli.main(
                [
                    *token,
                    *ca,
                    "--client-cert",
                    str(d / "ops.crt"),
                    "--client-key",
                    str(d / "ops.key"),
                    "network",
                    "list",
                ]
            )
            == 0
        )
        assert cli.main([*token, "network", "list"]) == 8
        # plaintext to the TLS listener: refused
        with grpc.insecure_channel(ctl.endpoint) as ch:
            with pytest.raises(grpc.RpcError) as e:
                _list(ch, admin)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # the OpenFlow listener (TLS by default) answers a plaintext switch with nothing and closes
        r = run_fake_switch("127.0.0.1", ctl.of_port, 0x1234, duration=5)
        assert r.connected and r.closed_by_peer and not r.received, r
        # an unknown CA: the handshake fails on our side already
        with (
            pytest.raises(ssl.SSLError),
            socket.create_connection(("127.0.0.1", ctl.of_port), timeout=5) as raw,
        ):
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")
    finally:
        ctl.stop()


def test_grpc_client_certificate_required(tls_controller: ControllerProcess) -> None:
    ctl = tls_controller
    ctl.extra_args.append("--grpc-require-client-cert")
    pki = Pki(ctl.data_dir / "pki")
    files = pki.issue_client("ops")
    ctl.credentials = grpc.ssl_channel_credentials(
        pki.ca_cert.read_bytes(), files.key.read_bytes(), files.cert.read_bytes()
    )
    ctl.start()
    try:
        admin = (("authorization", f"Bearer {ctl.admin_token()}"),)
        with ctl.channel() as ch:
            _list(ch, admin)
        with grpc.secure_channel(ctl.endpoint, grpc.ssl_channel_credentials(pki.ca_cert.read_bytes())) as ch:
            with pytest.raises(grpc.RpcError) as e:
                _list(ch, admin)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        ctl.stop()


def test_insecure_options_are_warned_about(tmp_path: Path) -> None:
    ctl = ControllerProcess(tmp_path / "data", ["--insecure-openflow", "--insecure-ovsdb"])
    ctl.start()
    try:
        log = ctl.log.read_text()
        assert "WARNING" in log and "insecure_openflow: OpenFlow" in log and "insecure_ovsdb:" in log
        assert "gRPC API on 127.0.0.1" in log and "plaintext, loopback only" in log
        assert mode(tmp_path / "data" / "pki" / "ca.key") == 0o600  # the CA exists anyway (first start)
        assert "PRIVATE KEY" not in log
    finally:
        ctl.stop()
    assert os.path.exists(tmp_path / "data" / "pki" / "controller.crt")


def test_the_dashboard_reaches_a_tls_api_with_the_controllers_certificate(
    tls_controller: ControllerProcess,
) -> None:
    """The dashboard is a client of the gRPC API: over TLS it connects with the controller's own certificate."""
    import http.client

    ctl = tls_controller
    ctl.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", ctl.dashboard_port, timeout=10)
        conn.request("GET", "/api/whoami", headers={"Authorization": f"Bearer {ctl.admin_token()}"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 200 and body["admin"] is True, body
    finally:
        ctl.stop()

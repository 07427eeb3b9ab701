"""DebugService's servicer over a compiled World: admin-only traces, tenant-scoped Explain, error details."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2

from controller.api.auth import Principal
from controller.api.debug_api import DebugService
from controller.api.interceptors import Caller, guard
from proto.sdn.v1 import debug_pb2 as dbg
from tests.test_apps_l2 import BCAST, two_tenants
from tests.test_trace import FakeDataplane


class Aborted(Exception):
    def __init__(self, status: grpc.Status) -> None:
        super().__init__(status.details)
        self.status = status


class Ctx:
    def invocation_metadata(self) -> list[tuple[str, str]]:
        return []

    def send_initial_metadata(self, md: Any) -> None:
        pass

    def set_trailing_metadata(self, md: Any) -> None:
        pass

    def abort_with_status(self, status: grpc.Status) -> None:
        raise Aborted(status)


def service(principal: Principal) -> Any:
    """The service's methods as the server runs them: authenticated as `principal`, errors as statuses."""
    w, _ = two_tenants()
    svc = DebugService(SimpleNamespace(), FakeDataplane(w))  # type: ignore[arg-type]
    return SimpleNamespace(
        **{
            m: guard(m, lambda _ctx: Caller(principal, ""), getattr(svc, m))
            for m in ("Trace", "DiffTrace", "Explain")
        }
    )


def call(svc: Any, method: str, request: Any) -> Any:
    return getattr(svc, method)(request, Ctx())


ADMIN = Principal("admin", True)
ALICE = Principal("alice", False)


def test_trace_and_diff_trace_are_admin_only() -> None:
    req = dbg.TraceRequest(
        port="ports/a1", destination_port="ports/a3", headers={"ip_proto": "6", "tcp_dst": "22"}
    )
    resp = call(service(ADMIN), "Trace", req)
    assert resp.verdict == "delivered to ports/a3 on hv2" and [h.chassis for h in resp.hops] == ["hv1", "hv2"]
    assert resp.hops[0].outputs[0].kind == "tunnel" and resp.hops[1].from_chassis == "hv1"
    assert resp.headers["tcp_dst"] == "22" and "Verdict:" in resp.text
    diff = call(service(ADMIN), "DiffTrace", req)
    assert not diff.divergences and diff.installed.flows == "installed"
    with pytest.raises(Aborted) as e:
        call(service(ALICE), "Trace", req)
    assert e.value.status.code == grpc.StatusCode.PERMISSION_DENIED


def test_trace_errors_name_the_field() -> None:
    with pytest.raises(Aborted) as e:
        call(service(ADMIN), "Trace", dbg.TraceRequest(port="a1"))
    assert e.value.status.code == grpc.StatusCode.INVALID_ARGUMENT and "port" in e.value.status.details
    with pytest.raises(Aborted) as e:
        call(service(ADMIN), "Trace", dbg.TraceRequest(port="ports/zz", headers={"eth_dst": BCAST}))
    assert e.value.status.code == grpc.StatusCode.NOT_FOUND
    assert code_pb2.NOT_FOUND == 5


def test_explain_tenant_scope() -> None:
    ok = call(
        service(ALICE),
        "Explain",
        dbg.ExplainRequest(source_port="ports/a1", destination="ports/a2", protocol="tcp", port=22),
    )
    assert (
        ok.allowed
        and ok.verdict.startswith("allowed, same network a; securityGroupRules/")
        and ok.trace_confirms
    )
    assert not ok.HasField("trace") and ok.trace_verdict == ""  # the path (chassis) is for admins
    by_ip = call(
        service(ALICE), "Explain", dbg.ExplainRequest(source_port="ports/a1", destination="10.0.0.6")
    )
    assert by_ip.allowed and by_ip.destination == "ports/a2"
    for src, dst in (("ports/b1", "ports/a1"), ("ports/a1", "ports/b2")):
        with pytest.raises(Aborted) as e:
            call(service(ALICE), "Explain", dbg.ExplainRequest(source_port=src, destination=dst))
        assert e.value.status.code == grpc.StatusCode.NOT_FOUND
    cross = call(
        service(ADMIN), "Explain", dbg.ExplainRequest(source_port="ports/a1", destination="ports/b2")
    )
    assert not cross.allowed and cross.HasField("trace") and cross.trace_confirms
    assert {d.kind for d in cross.deciders if not d.allows} == {"isolation", "tenant"}

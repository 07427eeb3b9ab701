"""Logs an operator can use: one access line per API call (method, tenant, code, duration, request id), the
request id in every line written during a call and in the answer's metadata, JSON lines on request, and
server reflection under v1 as well as v1alpha."""

from __future__ import annotations

import json
import logging
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from controller.logs import JsonFormatter, TextFormatter
from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import Api, ControllerProcess, InProcessServer


def _access(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sdn.access"]


def test_every_call_gets_one_access_line(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    alice = api.md(api.tenant_token("alice"))
    caplog.clear()
    caplog.set_level(logging.INFO, logger="sdn.access")
    net, call = api.stub.CreateNetwork.with_call(
        pb.CreateNetworkRequest(network=pb.Network(display_name="n1")),
        metadata=(*alice, ("x-request-id", "op-42")),
    )
    (line,) = _access(caplog)
    assert (line.method, line.tenant, line.code, line.request_id) == (  # type: ignore[attr-defined]
        "CreateNetwork",
        "alice",
        "OK",
        "op-42",
    )
    assert 0 < line.duration_ms < 10_000  # type: ignore[attr-defined]
    # the request id comes back in the initial and in the trailing metadata
    assert ("x-request-id", "op-42") in call.initial_metadata()
    assert ("x-request-id", "op-42") in call.trailing_metadata()

    caplog.clear()
    with pytest.raises(grpc.RpcError) as info:  # a refusal: its code, and the generated request id back
        api.stub.CreateSubnet(
            pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr="not-a-cidr")), metadata=alice
        )
    (line,) = _access(caplog)
    assert (line.method, line.tenant, line.code) == ("CreateSubnet", "alice", "INVALID_ARGUMENT")  # type: ignore[attr-defined]
    trailing = dict(info.value.trailing_metadata())  # type: ignore[attr-defined]
    assert trailing["x-request-id"] == line.request_id and len(line.request_id) >= 8  # type: ignore[attr-defined]

    caplog.clear()
    with pytest.raises(grpc.RpcError):  # no token: the tenant is unknown
        api.stub.ListNetworks(pb.ListNetworksRequest())
    (line,) = _access(caplog)
    assert (line.tenant, line.code) == ("-", "UNAUTHENTICATED")  # type: ignore[attr-defined]

    caplog.clear()
    api.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=api.admin)
    (line,) = _access(caplog)
    assert line.tenant == "admin(admin)"  # type: ignore[attr-defined]


def test_a_watch_stream_gets_its_access_line_when_it_ends(
    server: InProcessServer, caplog: pytest.LogCaptureFixture
) -> None:
    api = server.api
    caplog.set_level(logging.INFO, logger="sdn.access")
    stream = api.stub.Watch(pb.WatchRequest(), metadata=(*api.admin, ("x-request-id", "w-1")))
    api.stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network()), metadata=api.admin)
    next(iter(stream))
    stream.cancel()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not [r for r in _access(caplog) if r.method == "Watch"]:  # type: ignore[attr-defined]
        time.sleep(0.05)
    (line,) = [r for r in _access(caplog) if r.method == "Watch"]  # type: ignore[attr-defined]
    assert (line.request_id, line.tenant) == ("w-1", "admin(admin)")  # type: ignore[attr-defined]


def test_lines_written_during_a_call_name_its_request_id() -> None:
    from controller.api.context import REQUEST

    record = logging.LogRecord("topology.ops", logging.WARNING, __file__, 1, "port %s moved", ("p1",), None)
    token = REQUEST.set("CreatePort abc123")
    try:
        text = TextFormatter().format(record)
        obj = json.loads(JsonFormatter().format(record))
    finally:
        REQUEST.reset(token)
    assert text.endswith("port p1 moved [req abc123]")
    assert obj["request_id"] == "abc123" and obj["message"] == "port p1 moved"
    assert obj["level"] == "WARNING" and obj["logger"] == "topology.ops" and obj["time"].endswith("Z")
    # outside a call: no request id
    assert "req" not in TextFormatter().format(record) and "request_id" not in JsonFormatter().format(record)


def test_controller_with_json_logs_writes_only_json_lines(tmp_path: Path) -> None:
    ctl = ControllerProcess(tmp_path / "data", ["--log-format", "json"])
    ctl.start()
    try:
        channel = ctl.channel()
        stub = pb_grpc.TopologyServiceStub(channel)
        md = (("authorization", f"Bearer {ctl.admin_token()}"), ("x-request-id", "json-1"))
        stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(display_name="j")), metadata=md)
        channel.close()
    finally:
        ctl.kill(signal.SIGTERM)
    lines = [ln for ln in ctl.log.read_text().splitlines() if ln.strip()]
    objs = [json.loads(ln) for ln in lines]  # every line is one JSON object (no warnings, no tracebacks)
    assert {"time", "level", "logger", "message"} <= set(objs[0])
    (access,) = [o for o in objs if o["logger"] == "sdn.access" and o.get("request_id") == "json-1"]
    assert (
        access["method"] == "CreateNetwork" and access["code"] == "OK" and access["tenant"] == "admin(admin)"
    )


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_answers_v1_and_v1alpha(api: Api, version: str) -> None:
    """A client of either reflection version lists the services (grpcurl and newer clients ask v1; v1's
    messages are v1alpha's under another package, so these messages are what a v1 client sends)."""
    call = api.channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (answer,) = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    names = {s.name for s in answer.list_services_response.service}
    assert {"sdn.v1.TopologyService", "grpc.reflection.v1.ServerReflection"} <= names
    assert "grpc.reflection.v1alpha.ServerReflection" in names
    (desc,) = list(
        call(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="sdn.v1.TopologyService")]))
    )
    assert desc.file_descriptor_response.file_descriptor_proto

"""The gRPC DebugService: Trace and DiffTrace (admin only), Explain (a tenant on its own ports)."""

from __future__ import annotations

from typing import Any

from controller.api import convert
from controller.api.interceptors import principal
from controller.api.northbound import TopologyService
from controller.api.resources import admin_only
from controller.dataplane import Dataplane
from controller.debug import explain, trace
from proto.sdn.v1 import debug_pb2 as dbg
from proto.sdn.v1 import debug_pb2_grpc as dbg_grpc
from topology import errors


def _str_map(d: Any) -> dict[str, str]:
    return {
        k: (
            f"{v:#x}"
            if isinstance(v, int) and k in ("eth_type", "metadata", "tunnel_id", "vlan_vid")
            else str(v)
        )
        for k, v in dict(d).items()
    }


def trace_to_pb(r: trace.TraceResult) -> dbg.TraceResponse:
    return dbg.TraceResponse(
        verdict=r.verdict,
        flows=r.flows,
        text=r.format(),
        resolved=r.source.get("resolved", ""),
        source_port=r.source.get("port", ""),
        source_chassis=r.source.get("chassis", ""),
        source_in_port=int(r.source.get("in_port") or 0),
        headers=_str_map(r.source.get("headers", {})),
        hops=[
            dbg.TraceHop(
                chassis=h.chassis,
                in_port=h.in_port,
                from_chassis=h.came_from,
                drops=h.drops,
                error=h.error,
                steps=[
                    dbg.TraceStep(
                        stage=s.stage, table=s.table, flow=s.flow, owner=s.owner, note=s.note, depth=s.depth
                    )
                    for s in h.steps
                ],
                outputs=[
                    dbg.TraceOutput(
                        kind=o.kind,
                        chassis=o.chassis,
                        port=o.port,
                        ofport=o.ofport or 0,
                        headers=_str_map(o.headers),
                    )
                    for o in h.outputs
                ],
            )
            for h in r.hops
        ],
    )


class DebugService(dbg_grpc.DebugServiceServicer):
    def __init__(self, topology: TopologyService, dataplane: Dataplane) -> None:
        self.topology = topology  # shares authentication and the state
        self.dataplane = dataplane

    def _args(self, request: dbg.TraceRequest) -> dict[str, Any]:
        port = convert.parse_name("port", request.port, "port") if request.port else None
        chassis = convert.parse_name("chassis", request.chassis, "chassis") if request.chassis else None
        if port and chassis:
            raise errors.invalid("chassis", "give a source port or a chassis and in_port, not both")
        dst = (
            convert.parse_name("port", request.destination_port, "destination_port")
            if request.destination_port
            else None
        )
        return {
            "port_id": port,
            "chassis_id": chassis,
            "in_port": request.in_port or None,
            "headers": dict(request.headers),
            "dst_port": dst,
        }

    def Trace(self, request: dbg.TraceRequest, context: Any) -> dbg.TraceResponse:
        admin_only(principal(), "", "tracing")
        source = "installed" if request.source == dbg.TraceRequest.INSTALLED else "desired"
        return trace_to_pb(trace.trace(self.dataplane, source=source, **self._args(request)))

    def DiffTrace(self, request: dbg.TraceRequest, context: Any) -> dbg.DiffTraceResponse:
        admin_only(principal(), "", "tracing")
        d = trace.diff_trace(self.dataplane, **self._args(request))
        return dbg.DiffTraceResponse(
            desired=trace_to_pb(d.desired),
            installed=trace_to_pb(d.installed),
            text=d.format(),
            divergences=[
                dbg.Divergence(
                    chassis=x.chassis,
                    stage=x.stage,
                    table=x.table,
                    desired_flow=x.desired,
                    installed_flow=x.installed,
                    description=x.description,
                )
                for x in d.divergences
            ],
            switch_traces=[
                dbg.SwitchTrace(chassis=s.chassis, flow=s.flow, output=s.output, error=s.error)
                for s in d.switch
            ],
        )

    def Explain(self, request: dbg.ExplainRequest, context: Any) -> dbg.ExplainResponse:
        p = principal()
        src = convert.parse_name("port", request.source_port, "source_port")
        if not request.destination:
            raise errors.invalid("destination", "required: a port (ports/ID) or an IP address")
        dest = request.destination
        if dest.startswith("ports/"):
            dest = convert.parse_name("port", dest, "destination")
        e = explain.explain(
            self.dataplane,
            None,
            src,
            dest,
            request.protocol or "tcp",
            request.port or None,
            visible=p.can_see,
        )
        resp = dbg.ExplainResponse(
            allowed=e.allowed,
            verdict=e.verdict,
            destination=e.destination,
            notes=e.notes,
            trace_confirms=bool(e.confirmed),
            trace_verdict=e.trace.verdict if e.trace is not None and p.admin else "",
            deciders=[
                dbg.Decider(kind=d.kind, allows=d.allows, description=d.description, resource=d.resource)
                for d in e.deciders
            ],
            text=e.format(with_trace=p.admin),
        )
        if p.admin and e.trace is not None:
            resp.trace.CopyFrom(trace_to_pb(e.trace))
        return resp

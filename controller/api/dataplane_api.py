"""The gRPC DataplaneService: wait for writes to be realized on the switches, dump a chassis's flows."""

from __future__ import annotations

from typing import Any

from apps import ids, owners
from controller.api import convert
from controller.api.interceptors import principal
from controller.api.northbound import TopologyService
from controller.api.resources import admin_only
from controller.api.streams import refusal_status
from controller.dataplane import Dataplane
from controller.debug.trace import not_master
from controller.southbound.status_feed import ChassisReport
from flows import pipeline
from flows.cookie import owner_hash
from flows.flow import Flow, Group
from flows.format import format_flow, format_group, format_match
from proto.sdn.v1 import dataplane_pb2 as dpb
from proto.sdn.v1 import dataplane_pb2_grpc as dpb_grpc
from proto.sdn.v1 import topology_pb2 as pb
from topology import errors

DEFAULT_WAIT_S = 10.0
MAX_WAIT_S = 300.0


class DataplaneService(dpb_grpc.DataplaneServiceServicer):
    def __init__(self, topology: TopologyService, dataplane: Dataplane) -> None:
        self.topology = topology  # shares authentication and the state
        self.dataplane = dataplane

    def WaitRealized(self, request: dpb.WaitRealizedRequest, context: Any) -> dpb.WaitRealizedResponse:
        p = principal()
        revision = request.revision or self.topology.state.revision
        if revision < 0:
            raise errors.invalid("revision", "must not be negative")
        timeout = DEFAULT_WAIT_S
        if request.HasField("timeout"):
            timeout = request.timeout.ToTimedelta().total_seconds()
            if not 0 <= timeout <= MAX_WAIT_S:
                raise errors.invalid("timeout", f"must be between 0 and {MAX_WAIT_S:.0f} s")
        done, report = self.dataplane.wait_realized(revision, 0)
        if not done and timeout > 0:
            # a wait holds its thread like a stream: it takes a stream slot (the same caps), so waits cannot
            # take the threads of unary calls either
            limiter = self.topology.streams
            try:
                ticket = limiter.admit(p.tenant, "", "WaitRealized")
            except errors.ApiError as err:
                context.abort_with_status(refusal_status(err, limiter))
                raise  # not reached: abort_with_status raises
            try:
                done, report = self.dataplane.wait_realized(revision, timeout)
            finally:
                limiter.release(ticket)
        return dpb.WaitRealizedResponse(
            realized=done,
            revision=revision,
            chassis=[
                dpb.ChassisRealization(
                    chassis=convert.name_of("chassis", r["chassis"]),
                    connected=r["connected"],
                    realized_revision=r["realized_revision"],
                    needed_revision=r["needed_revision"],
                    realized=r["realized"],
                )
                for r in report
                if p.admin
            ],
        )

    def DumpFlows(self, request: dpb.DumpFlowsRequest, context: Any) -> dpb.DumpFlowsResponse:
        admin_only(principal(), "", "dumping flows")
        chassis_id = convert.parse_name("chassis", request.chassis, "chassis")
        if request.stage and request.stage not in {s.name for s in pipeline.STAGES}:
            raise errors.invalid(
                "stage", f"unknown stage; stages: {', '.join(s.name for s in pipeline.STAGES)}"
            )
        size = request.page_size or 1000
        if not 0 < size <= 10000:
            raise errors.invalid("page_size", "must be 1-10000")
        offset = 0
        if request.page_token:
            try:
                offset = int(request.page_token)
            except ValueError:
                raise errors.invalid("page_token", "not a token this server issued") from None
        with self.topology.state.lock:
            topo = self.topology.state.topology
            if chassis_id not in topo.chassis:
                raise errors.not_found("chassis", chassis_id)
            registry = ids.registry_for(owners.model_owners(topo))
            # a chassis another controller masters: compiled for this answer (not kept)
            desired = self.dataplane.compiler.compile_for(topo, chassis_id)
            plane = self.dataplane.planes.get(chassis_id)
            port_match: tuple[str, int, int | None] | None = None
            if request.port:
                port_id = convert.parse_name("port", request.port, "port")
                port = topo.ports.get(port_id)
                if port is None:
                    raise errors.not_found("port", port_id)
                ofport = plane.runtime.vifs.get(port_id) if plane is not None and plane.runtime else None
                port_match = (port_id, port.key, ofport)
        stats: dict[Flow, tuple[int, int]] = {}
        if request.desired_only:
            flows = [i for i in desired if isinstance(i, Flow)]
        else:
            not_master(self.dataplane, chassis_id)
            engine: Any = plane.engine if plane is not None else None  # a SwitchSync: connected, flow_stats
            if engine is None or not engine.connected:
                raise errors.failed_precondition(
                    "SWITCH_NOT_CONNECTED",
                    f"chassis {chassis_id!r} has no switch connection; use desired_only",
                    chassis=chassis_id,
                )
            stats = engine.flow_stats()
            flows = list(stats)
        owner = owner_hash(request.owner) if request.owner else None
        picked = [
            f
            for f in flows
            if (not request.stage or f.stage == request.stage)
            and (owner is None or (f.owner is not None and f.owner.owner == owner))
            and (port_match is None or _about_port(f, *port_match))
        ]
        picked.sort(key=lambda f: (f.table, -f.priority, format_match(f)))
        page = picked[offset : offset + size]
        groups = []
        if offset == 0 and not (request.stage or request.owner or request.port):
            groups = sorted((i for i in desired if isinstance(i, Group)), key=lambda g: g.group_id)
        return dpb.DumpFlowsResponse(
            flows=[self._line(chassis_id, f, registry, stats.get(f)) for f in page],
            groups=[format_group(g).strip() for g in groups],
            total=len(picked),
            next_page_token=str(offset + size) if offset + size < len(picked) else "",
        )

    def Verify(self, request: dpb.VerifyRequest, context: Any) -> dpb.VerifyResponse:
        admin_only(principal(), "", "verifying switches")
        drift = getattr(self.dataplane, "drift", None)
        if drift is None:
            raise errors.failed_precondition("NO_DATAPLANE", "this controller runs no dataplane")
        if request.chassis:
            chassis_id = convert.parse_name("chassis", request.chassis, "chassis")
            if chassis_id not in self.dataplane.planes:
                raise errors.not_found("chassis", chassis_id)
            targets = [chassis_id]
        else:
            targets = sorted(self.dataplane.planes)
        out = []
        for chassis_id in targets:
            r = drift.check(chassis_id, repair=request.repair)
            c = self.dataplane.selfcheck.run([chassis_id], repair=request.repair)[0]
            out.append(
                dpb.ChassisDrift(
                    chassis=convert.name_of("chassis", chassis_id),
                    checked=r.checked,
                    missing=r.missing,
                    unexpected=r.unexpected,
                    undecodable=r.undecodable,
                    repaired=r.repaired or c.repaired,
                    note=r.note,
                    compile_missing=c.missing,
                    compile_extra=c.extra,
                    compile_owners=c.owners,
                )
            )
        return dpb.VerifyResponse(chassis=out)

    def _line(
        self, chassis_id: str, flow: Flow, registry: Any, counters: tuple[int, int] | None = None
    ) -> str:
        """A dump-flows line, then who owns the flow and the revision and request that last changed it."""
        line = format_flow(flow, registry).strip()
        if counters is not None:
            head, _, rest = line.partition(", table=")
            line = f"{head}, n_packets={counters[0]}, n_bytes={counters[1]}, table={rest}"
        owner = registry.lookup(flow.cookie)
        if owner is not None:
            why = self.dataplane.why(chassis_id, owner[1])
            if why is not None:
                line += f" rev={why[0]} by {why[1]}"
        return line

    def ListChassisStatus(
        self, request: dpb.ListChassisStatusRequest, context: Any
    ) -> dpb.ListChassisStatusResponse:
        admin_only(principal(), "", "chassis status")
        # a chassis another controller masters: what its master published (nothing: no master yet)
        with self.topology.state.lock:
            out = [_status(ch, self.dataplane.chassis_report(ch)) for ch in sorted(self.dataplane.planes)]
        return dpb.ListChassisStatusResponse(chassis=out)


def _status(chassis_id: str, rep: ChassisReport | None) -> dpb.ChassisStatus:
    name = convert.name_of("chassis", chassis_id)
    if rep is None:
        return dpb.ChassisStatus(chassis=name)
    return dpb.ChassisStatus(
        chassis=name,
        connected=rep.connected,
        ovsdb_ready=rep.ovsdb_ready,
        realized_revision=rep.realized_revision,
        desired_flows=rep.desired_flows,
        flow_mods_sent=rep.flow_mods_sent,
        bundles_sent=rep.bundles_sent,
        packet_ins=rep.packet_ins,
        group_mods_sent=rep.group_mods_sent,
        resyncs=rep.resyncs,
        installed_flows=rep.installed_flows,
        drift_repairs=rep.drift_repairs,
        compile_divergences=rep.compile_divergences,
    )


def _about_port(flow: Flow, port_id: str, key: int, ofport: int | None) -> bool:
    """Owned by the port, or matching its ofport or its logical key (source/destination register)."""
    if flow.owner is not None and flow.owner.owner == owner_hash(port_id):
        return True
    m = flow.match_dict()
    return (ofport is not None and m.get("in_port") == ofport) or m.get("reg6") == key or m.get("reg7") == key


FORWARDING_STAGES = {"classify", "l2_lookup", "egress_dispatch", "output"}
PLAN_SAMPLE = 20


def plan_pb(dataplane: Dataplane, revision: int, changes: list[Any]) -> pb.Plan:
    """The Plan of a validate_only write: per chassis the flows it would add and delete (called by
    State.dry_run with the model as it would be)."""
    topo = dataplane.state.topology
    deltas = dataplane.compiler.plan(topo, changes)
    registry = ids.registry_for([*owners.model_owners(topo), *(c[1] for c in changes)])
    plan = pb.Plan(revision=revision)
    for chassis_id in sorted(deltas):
        delta = deltas[chassis_id]
        added = sorted((f for f in delta.add if isinstance(f, Flow)), key=lambda f: (f.table, -f.priority))
        deleted = sorted(
            (f for f in delta.remove if isinstance(f, Flow)), key=lambda f: (f.table, -f.priority)
        )
        before = sum(1 for i in dataplane.compiler.desired(chassis_id) if isinstance(i, Flow))
        plan.chassis.append(
            pb.ChassisPlan(
                chassis=convert.name_of("chassis", chassis_id),
                flows_added=len(added),
                flows_deleted=len(deleted),
                groups_added=sum(1 for g in delta.add if isinstance(g, Group)),
                groups_deleted=sum(1 for g in delta.remove if isinstance(g, Group)),
                sample_added=[format_flow(f, registry).strip() for f in added[:PLAN_SAMPLE]],
                sample_deleted=[format_flow(f, registry).strip() for f in deleted[:PLAN_SAMPLE]],
                flows_before=before,
                flows_after=before + len(added) - len(deleted),
            )
        )
        replaced = {f.key() for f in added}
        cut = [f for f in deleted if f.stage in FORWARDING_STAGES and f.key() not in replaced]
        cut_owners = sorted({(registry.lookup(f.cookie) or ("?", f"{f.cookie:#x}"))[1] for f in cut})
        if cut_owners:
            plan.cuts_connections = True
            plan.cut_reasons.append(
                f"chassis {chassis_id}: forwarding for {', '.join(cut_owners)} would be removed "
                f"({len(cut)} flows)"
            )
    return plan

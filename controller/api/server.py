"""Assemble the gRPC server: TopologyService, health checking and reflection, on one port.

Threads: grpcio's sync server runs every call on one thread of its pool, and a stream holds its thread
while it is open. The pool has `workers` threads for unary calls plus `max_streams` for streams, and
StreamLimiter refuses a stream over `max_streams` (or over `max_streams_per_tenant` for its tenant) before
it starts: however many streams clients open, `workers` threads stay for unary calls. (grpc.aio would hold
no thread per stream, but every handler here is sync code that blocks on the store; measured, a sync
pool sized so keeps unary p99 low with 200 open Watch streams: BENCHMARKS.md.)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from apps import plugin
from controller.api.apply import ApplyService
from controller.api.auth import Tokens
from controller.api.dataplane_api import DataplaneService, plan_pb
from controller.api.debug_api import DebugService
from controller.api.interceptors import AuthInterceptor
from controller.api.lb_api import LoadBalancerService
from controller.api.northbound import TopologyService
from controller.api.resources import Tables
from controller.api.streams import (
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_TENANT,
    StreamAdmission,
    StreamLimiter,
)
from controller.api.vpn_api import VpnaasService
from controller.dataplane import Dataplane
from controller.pki import TlsFiles
from proto.sdn.v1 import (
    apply_pb2,
    apply_pb2_grpc,
    dataplane_pb2,
    dataplane_pb2_grpc,
    debug_pb2,
    debug_pb2_grpc,
    topology_pb2,
    topology_pb2_grpc,
)
from topology.ops_security import DEFAULT_FLOW_BUDGET
from topology.state import State

SERVICE_NAME = topology_pb2.DESCRIPTOR.services_by_name["TopologyService"].full_name
LB_SERVICE_NAME = topology_pb2.DESCRIPTOR.services_by_name["LoadBalancerService"].full_name
VPN_SERVICE_NAME = topology_pb2.DESCRIPTOR.services_by_name["VpnaasService"].full_name
DATAPLANE_SERVICE_NAME = dataplane_pb2.DESCRIPTOR.services_by_name["DataplaneService"].full_name
APPLY_SERVICE_NAME = apply_pb2.DESCRIPTOR.services_by_name["ApplyService"].full_name
#: the largest request (an Apply document of DEFAULT_MAX_OBJECTS objects fits; gRPC's default is 4 MiB)
MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEBUG_SERVICE_NAME = debug_pb2.DESCRIPTOR.services_by_name["DebugService"].full_name
WATCH_METHOD = f"/{SERVICE_NAME}/Watch"  # admits itself, by tenant, once authenticated


def tls_credentials(files: TlsFiles, require_client_cert: bool = False) -> grpc.ServerCredentials:
    """Our key and certificate; client certificates are asked for, and required and verified against the CA
    with `require_client_cert` (bearer tokens are required either way)."""
    return grpc.ssl_server_credentials(
        [(files.key.read_bytes(), files.cert.read_bytes())],
        root_certificates=files.ca.read_bytes(),
        require_client_auth=require_client_cert,
    )


@dataclass
class PluginHost:
    """What a plug-in's `api` hook gets: the resource tables (add its specs with tables.add_specs), the gRPC
    server (add its servicer), and `services`, where it appends its services' full names (authenticated,
    in reflection)."""

    tables: Tables
    server: grpc.Server
    services: list[str] = field(default_factory=list)


#: gRPC server reflection v1 (what grpcurl and newer clients ask); grpcio-reflection serves only v1alpha
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(services: list[str], server: grpc.Server) -> None:
    """Server reflection under both names, v1 and v1alpha, listing both. v1's messages are v1alpha's with
    another package name (same fields and numbers), so the v1alpha servicer answers v1 on the wire."""
    names = [*services, REFLECTION_V1]
    reflection.enable_server_reflection(names, server)
    servicer = reflection.ReflectionServicer(names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler}),)
    )


class ApiServer:
    def __init__(
        self,
        state: State,
        tokens: Tokens,
        address: str,
        workers: int = 32,
        dataplane: Dataplane | None = None,
        interceptors: Sequence[grpc.ServerInterceptor] = (),
        flow_budget: int = DEFAULT_FLOW_BUDGET,
        max_streams: int = DEFAULT_MAX_STREAMS,
        max_streams_per_tenant: int = DEFAULT_MAX_STREAMS_PER_TENANT,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        """`credentials`: TLS (see tls_credentials); None listens in plaintext."""
        self.state = state
        self.tokens = tokens
        self._stopping = threading.Event()
        self.streams = StreamLimiter(max_streams, max_streams_per_tenant, wake=self._wake_streams)
        tokens.on_revoke(self.streams.revoke)
        # `workers` threads for unary calls, `max_streams` more for the streams the limiter lets in
        pool = futures.ThreadPoolExecutor(max_workers=workers + max_streams, thread_name_prefix="grpc")
        admission = StreamAdmission(self.streams, frozenset({WATCH_METHOD}))
        authn = AuthInterceptor(
            tokens,
            frozenset(
                {
                    SERVICE_NAME,
                    LB_SERVICE_NAME,
                    VPN_SERVICE_NAME,
                    APPLY_SERVICE_NAME,
                    DATAPLANE_SERVICE_NAME,
                    DEBUG_SERVICE_NAME,
                }
            ),
        )
        self.server = grpc.server(
            pool,
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", MAX_REQUEST_BYTES)],
            interceptors=[*interceptors, admission, authn],
        )
        self.topology = TopologyService(
            state, tokens, stopping=self._stopping.is_set, flow_budget=flow_budget, streams=self.streams
        )
        topology_pb2_grpc.add_TopologyServiceServicer_to_server(self.topology, self.server)
        topology_pb2_grpc.add_LoadBalancerServiceServicer_to_server(
            LoadBalancerService(self.topology), self.server
        )
        topology_pb2_grpc.add_VpnaasServiceServicer_to_server(VpnaasService(self.topology), self.server)
        self.apply = ApplyService(lambda: self.topology.tables)
        apply_pb2_grpc.add_ApplyServiceServicer_to_server(self.apply, self.server)
        services = [
            SERVICE_NAME,
            LB_SERVICE_NAME,
            VPN_SERVICE_NAME,
            APPLY_SERVICE_NAME,
            health.SERVICE_NAME,
            reflection.SERVICE_NAME,
        ]
        # plug-ins' services: standard methods over the same tables, authenticated like the core's
        host = PluginHost(self.topology.tables, self.server)
        for p in plugin.loaded():
            if p.api is not None:
                before = len(host.services)
                p.api(host)
                self.topology.plugin_services[p.name] = host.services[before:]
        authn.services = authn.services | frozenset(host.services)
        services += host.services
        if dataplane is not None:
            self.topology.planner = lambda revision, changes: plan_pb(dataplane, revision, changes)
            dataplane_pb2_grpc.add_DataplaneServiceServicer_to_server(
                DataplaneService(self.topology, dataplane), self.server
            )
            services.append(DATAPLANE_SERVICE_NAME)
            debug_pb2_grpc.add_DebugServiceServicer_to_server(
                DebugService(self.topology, dataplane), self.server
            )
            services.append(DEBUG_SERVICE_NAME)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection(services, self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {address}")

    def start(self) -> None:
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def _wake_streams(self) -> None:
        self.topology.wake_streams()

    def stop(self, grace: float) -> None:
        """Health NOT_SERVING first, then refuse new calls and let in-flight ones finish within `grace`."""
        self.health.enter_graceful_shutdown()
        self._stopping.set()
        self.tokens.remove_revoke_listener(self.streams.revoke)
        self._wake_streams()  # wake Watch streams so they end
        self.server.stop(grace).wait()

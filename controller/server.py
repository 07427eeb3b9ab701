"""Assemble the gRPC server: TopologyService, health checking and reflection, on one port."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from controller.auth import TokenFile
from controller.dataplane import Dataplane
from controller.dataplane_api import DataplaneService, plan_pb
from controller.lb_api import LoadBalancerService
from controller.northbound import TopologyService
from controller.pki import TlsFiles
from controller.debug_api import DebugService
from proto.sdn.v1 import dataplane_pb2, dataplane_pb2_grpc, topology_pb2, topology_pb2_grpc
from proto.sdn.v1 import debug_pb2, debug_pb2_grpc
from topology.ops_security import DEFAULT_FLOW_BUDGET
from topology.state import State

SERVICE_NAME = topology_pb2.DESCRIPTOR.services_by_name["TopologyService"].full_name
LB_SERVICE_NAME = topology_pb2.DESCRIPTOR.services_by_name["LoadBalancerService"].full_name
DATAPLANE_SERVICE_NAME = dataplane_pb2.DESCRIPTOR.services_by_name["DataplaneService"].full_name
DEBUG_SERVICE_NAME = debug_pb2.DESCRIPTOR.services_by_name["DebugService"].full_name


def tls_credentials(files: TlsFiles, require_client_cert: bool = False) -> grpc.ServerCredentials:
    """Our key and certificate; client certificates are asked for, and required and verified against the CA
    with `require_client_cert` (bearer tokens are required either way)."""
    return grpc.ssl_server_credentials([(files.key.read_bytes(), files.cert.read_bytes())],
                                       root_certificates=files.ca.read_bytes(),
                                       require_client_auth=require_client_cert)


class ApiServer:
    def __init__(self, state: State, tokens: TokenFile, address: str, workers: int = 32,
                 dataplane: Dataplane | None = None,
                 interceptors: Sequence[grpc.ServerInterceptor] = (),
                 flow_budget: int = DEFAULT_FLOW_BUDGET,
                 credentials: grpc.ServerCredentials | None = None) -> None:
        """`credentials`: TLS (see tls_credentials); None listens in plaintext."""
        self.state = state
        self._stopping = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
                                  options=[("grpc.so_reuseport", 0)], interceptors=list(interceptors))
        self.topology = TopologyService(state, tokens, stopping=self._stopping.is_set, flow_budget=flow_budget)
        topology_pb2_grpc.add_TopologyServiceServicer_to_server(self.topology, self.server)
        topology_pb2_grpc.add_LoadBalancerServiceServicer_to_server(LoadBalancerService(self.topology), self.server)
        services = [SERVICE_NAME, LB_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME]
        if dataplane is not None:
            self.topology.planner = lambda revision, changes: plan_pb(dataplane, revision, changes)
            dataplane_pb2_grpc.add_DataplaneServiceServicer_to_server(
                DataplaneService(self.topology, dataplane), self.server)
            services.append(DATAPLANE_SERVICE_NAME)
            debug_pb2_grpc.add_DebugServiceServicer_to_server(
                DebugService(self.topology, dataplane), self.server)
            services.append(DEBUG_SERVICE_NAME)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(services, self.server)
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

    def stop(self, grace: float) -> None:
        """Health NOT_SERVING first, then refuse new calls and let in-flight ones finish within `grace`."""
        self.health.enter_graceful_shutdown()
        self._stopping.set()
        with self.state.changed:
            self.state.changed.notify_all()  # wake Watch streams so they end
        self.server.stop(grace).wait()

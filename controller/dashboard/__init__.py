"""The read-only web dashboard: topology graph, flow tables, traces, live updates (see server.py); a client
of the gRPC API (client.py)."""

from controller.dashboard.client import connect
from controller.dashboard.server import DashboardServer

__all__ = ["DashboardServer", "connect"]

"""The read-only web dashboard: topology graph, flow tables, traces, live updates (see server.py)."""

from controller.dashboard.server import DashboardServer

__all__ = ["DashboardServer"]

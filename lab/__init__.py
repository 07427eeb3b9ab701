"""Lab: real Open vSwitch chassis, VMs and physical networks in network namespaces (see LAB.md).

Notes for the next engineer are filled in below once measured.
"""

from lab.chassis import Chassis
from lab.hosts import VM, ExternalHost, Host
from lab.lab import Lab
from lab.proc import CommandError
from lab.state import cleanup_stale

__all__ = ["VM", "Chassis", "CommandError", "ExternalHost", "Host", "Lab", "cleanup_stale"]

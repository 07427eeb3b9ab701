"""What the lab's parts need of each other, as Protocols: a chassis of its lab, a VM of its chassis.

lab.py builds chassis (chassis.py), and chassis build VMs (hosts.py); annotating the way back with the
concrete classes would make those imports cycles (STYLE.md), so the back references are typed by these.
"""

from __future__ import annotations

from typing import Protocol

from lab.state import LabState


class LabResources(Protocol):
    """The lab-wide names, numbers and state a chassis draws on (lab.lab.Lab)."""

    @property
    def prefix(self) -> str: ...

    @property
    def underlay_mtu(self) -> int: ...

    @property
    def state(self) -> LabState: ...

    def claim_name(self, name: str) -> str: ...

    def release_name(self, name: str) -> None: ...

    def next_port_number(self) -> int: ...

    def physnet_bridge(self, physnet: str) -> tuple[str, int]: ...


class VswitchHost(Protocol):
    """The chassis a VM is plugged into (lab.chassis.Chassis): its br-int's database."""

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    def vsctl(self, *args: str, wait: bool = True, check: bool = True) -> str: ...

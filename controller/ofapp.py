"""The os-ken application: accepts switch connections and keeps a registry of connected datapaths.

The dataplane (flow compile and sync) attaches here in a later step; today the registry answers
"which chassis are connected" by datapath id.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

log = logging.getLogger(__name__)


class DatapathRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_dpid: dict[int, Any] = {}

    def add(self, dp: Any) -> None:
        with self._lock:
            self._by_dpid[dp.id] = dp

    def remove(self, dp: Any) -> None:
        with self._lock:
            if self._by_dpid.get(dp.id) is dp:
                del self._by_dpid[dp.id]

    def connected(self) -> dict[int, Any]:
        with self._lock:
            return dict(self._by_dpid)


class OFApp(app_manager.OSKenApp):  # type: ignore[misc]
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.registry = DatapathRegistry()

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)  # type: ignore[misc]
    def on_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        log.info("switch connected: datapath %016x from %s", dp.id, dp.address)
        self.registry.add(dp)

    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])  # type: ignore[misc]
    def on_state(self, ev: Any) -> None:
        dp = ev.datapath
        if ev.state == DEAD_DISPATCHER and dp.id is not None:
            log.info("switch disconnected: datapath %016x", dp.id)
            self.registry.remove(dp)

"""The QoS plug-in: the value the entry point `sdn_controller.plugins: qos` gives the controller."""

from __future__ import annotations

from apps.plugin import PLUGIN_API, Plugin, StageDecl, UnitKind
from sdn_qos import api, cli, compile
from sdn_qos.records import COLLECTIONS, RECORDS

PLUGIN = Plugin(
    name="qos",
    version="0.1.0",
    api_version=PLUGIN_API,
    app_id=compile.APP_ID,
    records=RECORDS,
    collections=COLLECTIONS,
    stages=(
        StageDecl(
            compile.EGRESS_STAGE,
            "from_port",
            15,
            "QoS from a VM: its egress bandwidth-limit meter, DSCP marking (set_field ip_dscp)",
        ),
        StageDecl(compile.INGRESS_STAGE, "to_port", 117, "QoS to a VM: its ingress bandwidth-limit meter"),
    ),
    units=(UnitKind(compile.UNIT, compile.all_units, compile.dirty, compile.port_flows),),
    meters=compile.METERS,
    api=api.register,
    cli=cli.register,
)

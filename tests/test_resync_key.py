"""A resync recognises a dump's entries by encode.stats_key, built from the encoder's caches: it must be
exactly what ofwire.canonical_key makes of the flow-mod we send (and of the flow-stats entry a switch
returns for it), for every shape the pipeline compiles."""

from __future__ import annotations

from apps.compiler import desired_from_scratch
from controller.southbound import ofwire
from flows import encode
from flows.flow import Flow
from tests.test_apps_l2 import two_tenants
from tests.test_sync import pipeline_flows


def test_stats_key_is_the_canonical_key_of_the_flow_mod() -> None:
    w, _p = two_tenants()
    compiled = [
        i for ch in w.runtime for i in desired_from_scratch(w.topo, w.runtime, ch) if isinstance(i, Flow)
    ]
    shaped = [f for f in pipeline_flows(40) if isinstance(f, Flow)]
    enc = encode.Encoder()
    assert compiled and shaped
    for f in compiled + shaped:
        body = enc.flow_body(f, encode.ADD)
        assert encode.stats_key(f) == ofwire.canonical_key(f.table, f.priority, f.cookie, body, 40), f

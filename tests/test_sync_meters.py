"""Meters as desired state (sync engine against a real ovs-vswitchd): added before the flows that use them,
deleted after, adopted on reconnect (nothing re-sent), unknown ones swept, the packet-in meter kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.pki import Pki
from controller.southbound.ofapp import OFApp
from flows import actions as A
from flows import pipeline as P
from flows.cookie import Cookie
from flows.flow import Flow, MeterEntry
from lab import Lab
from tests.test_sync import Switch, engine, install, ofapp, pki  # noqa: F401 - fixtures

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(pki: Pki) -> Iterator[Lab]:  # noqa: F811
    with Lab(pki=pki) as lab:
        yield lab


@pytest.fixture(scope="module")
def sw(lab: Lab, ofapp: OFApp) -> Switch:  # noqa: F811
    s = Switch(lab, ofapp, "m1")
    s.connect()
    return s


@pytest.fixture(autouse=True)
def fresh(ofapp: OFApp, sw: Switch) -> Iterator[None]:  # noqa: F811
    ofapp.sync.reset()
    sw.ch.ofctl("del-flows", "br-int")
    for mid in meters(sw):
        if mid != 1:
            sw.ch.ofctl("-O", "OpenFlow13", "del-meter", "br-int", f"meter={mid}")
    yield
    ofapp.sync.reset()


def meters(sw: Switch) -> dict[int, str]:
    out = {}
    for line in sw.ch.ofctl("-O", "OpenFlow13", "dump-meters", "br-int").split("meter=")[1:]:
        mid, _, rest = line.partition(" ")
        out[int(mid)] = " ".join(rest.split())
    return out


def items(n: int, rate: int = 10) -> list[Flow | MeterEntry]:
    out: list[Flow | MeterEntry] = []
    for i in range(1, n + 1):
        mid = 65536 + i
        out.append(MeterEntry(mid, rate, rate))
        out.append(
            Flow(
                "dhcp",
                P.MATCH,
                {"reg6": i, "eth_type": 0x0800, "ip_proto": 17, "udp_src": 68, "udp_dst": 67},
                [A.Meter(mid), A.Controller()],
                Cookie.for_owner(11, f"port-{i}"),
            )
        )
    out.append(Flow("dhcp", P.DEFAULT, {}, [A.Goto("lb")], Cookie.for_owner(1, "pipeline")))
    return out


def test_meters_go_before_their_flows_and_are_adopted_on_reconnect(ofapp: OFApp, sw: Switch) -> None:  # noqa: F811
    eng = install(ofapp, sw, items(3))  # type: ignore[arg-type]
    got = meters(sw)
    assert {65537, 65538, 65539} <= set(got) and "rate=10 burst_size=10" in got[65537], got
    assert 1 in got  # the packet-in meter (the OpenFlow app's) is left alone
    assert sum("meter:6553" in ln for ln in sw.flow_lines()) == 3
    st = eng.stats
    assert st.meter_mods_sent == 3 and st.flow_mods_sent == 4, st
    assert eng.verify().clean
    assert "meter=65537 pktps burst bands=type=drop rate=10 burst_size=10" in eng.dump_text(live=True)
    # a restarted controller: same desired state, reconnect -> nothing at all is sent
    ofapp.sync.reset()
    eng = engine(ofapp, sw)
    eng.replace_desired(items(3), 5)
    assert eng.wait_realized(5, 30)
    sw.reconnect()
    assert eng.wait_realized(5, 30)
    st = eng.stats
    assert st.meter_mods_sent == 0 and st.flow_mods_sent == 0 and st.bundles_sent == 0, st


def test_removed_meter_goes_after_its_flow_changed_one_is_modified(ofapp: OFApp, sw: Switch) -> None:  # noqa: F811
    full = items(2)
    eng = install(ofapp, sw, full)  # type: ignore[arg-type]
    gone = [
        i
        for i in full
        if (isinstance(i, MeterEntry) and i.meter_id == 65538)
        or (isinstance(i, Flow) and i.cookie == Cookie.for_owner(11, "port-2").value)
    ]
    eng.apply([MeterEntry(65537, 20, 5)], gone, 2)
    assert eng.wait_realized(2, 30), eng.stats
    got = meters(sw)
    assert 65538 not in got and "rate=20 burst_size=5" in got[65537], got
    assert sum("meter:6553" in ln for ln in sw.flow_lines()) == 1
    assert eng.verify().clean


def test_unknown_meters_are_swept_and_wrong_ones_repaired(ofapp: OFApp, sw: Switch) -> None:  # noqa: F811
    eng = install(ofapp, sw, items(1))  # type: ignore[arg-type]
    ofapp.sync.reset()
    sw.disconnect()
    sw.ch.ofctl("-O", "OpenFlow13", "add-meter", "br-int", "meter=70000,pktps,band=type=drop,rate=5")
    sw.ch.ofctl("-O", "OpenFlow13", "add-meter", "br-int", "meter=70001,kbps,band=type=drop,rate=5")
    sw.ch.ofctl("-O", "OpenFlow13", "mod-meter", "br-int", "meter=65537,pktps,band=type=drop,rate=99")
    eng = engine(ofapp, sw)
    eng.replace_desired(items(1), 3)
    sw.reconnect()
    assert eng.wait_realized(3, 30), eng.stats
    got = meters(sw)
    assert set(got) == {1, 65537} and "rate=10 burst_size=10" in got[65537], got
    assert eng.stats.meter_mods_sent == 3, eng.stats  # two deletes, one modify
    assert eng.verify().clean


def test_a_new_meter_shares_the_round_trip_of_the_bundle_that_uses_it(ofapp: OFApp, sw: Switch) -> None:  # noqa: F811
    """A port's DHCP meter and its flows (CreatePort -> WaitRealized): the meter-mod is written ahead of the
    bundle and one barrier confirms both (one send, not two). A meter-mod the switch refuses fails that send
    like an error in the bundle: the engine resyncs."""
    eng = install(ofapp, sw, items(1))  # type: ignore[arg-type]
    sends: list[tuple[int, bool]] = []
    eng.on_bundle = lambda _dp, _s, n, ok: sends.append((n, ok))
    meter, flow = items(2)[2:4]
    eng.apply([meter, flow], [], 2)
    assert eng.wait_realized(2, 30), eng.stats
    assert sends == [(2, True)], sends
    assert 65538 in meters(sw) and eng.verify().clean
    # a meter added behind the engine's back: its ADD is refused (meter exists), which fails the send; the
    # resync that follows adopts the switch's meter and sets its rate
    sends.clear()
    sw.ch.ofctl(
        "-O",
        "OpenFlow13",
        "add-meter",
        "br-int",
        "meter=65539 pktps burst bands=type=drop rate=7 burst_size=7",
    )
    meter, flow = items(3)[4:6]
    eng.apply([meter, flow], [], 3)
    assert eng.wait_realized(3, 30), eng.stats
    assert sends[0] == (2, False), sends
    assert eng.stats.resyncs >= 2 and eng.verify().clean, eng.stats
    assert "rate=10 burst_size=10" in meters(sw)[65539]

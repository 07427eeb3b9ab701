"""The controller as a real process: kill -9 and restart, concurrent writers, Watch resume, clean shutdown."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import grpc
import pytest

from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import ControllerProcess


def connect(
    ctl: ControllerProcess,
) -> tuple[grpc.Channel, pb_grpc.TopologyServiceStub, tuple[tuple[str, str]]]:
    channel = grpc.insecure_channel(ctl.endpoint)
    return channel, pb_grpc.TopologyServiceStub(channel), (("authorization", f"Bearer {ctl.admin_token()}"),)


def all_ports(stub: pb_grpc.TopologyServiceStub, md) -> list[pb.Port]:  # type: ignore[no-untyped-def]
    out, token = [], ""
    while True:
        resp = stub.ListPorts(pb.ListPortsRequest(page_size=1000, page_token=token), metadata=md)
        out += resp.ports
        token = resp.next_page_token
        if not token:
            return out


def test_kill_9_keeps_every_acknowledged_write(controller: ControllerProcess) -> None:
    controller.start()
    channel, stub, md = connect(controller)
    net = stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(display_name="n")), metadata=md)
    sub = stub.CreateSubnet(
        pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr="10.0.0.0/16")), metadata=md
    )
    acked: dict[str, pb.Port] = {}
    stop = threading.Event()

    def writer(k: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                port = stub.CreatePort(
                    pb.CreatePortRequest(port=pb.Port(network=net.name), port_id=f"w{k}-{i}"),
                    metadata=md,
                    timeout=5,
                )
                acked[port.name] = port
            except grpc.RpcError:
                return  # the controller died under us: this call was not acknowledged
            i += 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    controller.kill(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    channel.close()
    assert len(acked) > 50

    controller.start()
    channel, stub, md = connect(controller)
    stored = {p.name: p for p in all_ports(stub, md)}
    for name, port in acked.items():
        assert stored[name] == port, f"acknowledged {name} lost or changed"
    # at most the calls in flight at the kill (one per writer) were stored without an answer
    assert len(set(stored) - set(acked)) <= len(threads)
    assert stub.GetSubnet(pb.GetSubnetRequest(name=sub.name), metadata=md) == sub
    ips = [p.fixed_ips[0].ip_address for p in stored.values()]
    assert len(ips) == len(set(ips))
    # the restored IPAM keeps allocating fresh addresses
    fresh = stub.CreatePort(pb.CreatePortRequest(port=pb.Port(network=net.name)), metadata=md)
    assert fresh.fixed_ips[0].ip_address not in ips
    channel.close()


def test_concurrent_clients_never_share_an_ip_or_mac(controller: ControllerProcess) -> None:
    controller.start()
    channel, stub, md = connect(controller)
    net = stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network()), metadata=md)
    stub.CreateSubnet(
        pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr="10.0.0.0/20")), metadata=md
    )
    created: list[list[pb.Port]] = [[] for _ in range(8)]
    errors: list[BaseException] = []

    def client(k: int) -> None:
        ch = grpc.insecure_channel(controller.endpoint)  # a client each, with its own connection
        s = pb_grpc.TopologyServiceStub(ch)
        try:
            for _ in range(200):
                created[k].append(
                    s.CreatePort(pb.CreatePortRequest(port=pb.Port(network=net.name)), metadata=md)
                )
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            ch.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ports = [p for batch in created for p in batch]
    assert len(ports) == 1600
    ip_counts = Counter(p.fixed_ips[0].ip_address for p in ports)
    mac_counts = Counter(p.mac_address for p in ports)
    assert ip_counts.most_common(1)[0][1] == 1 and mac_counts.most_common(1)[0][1] == 1
    channel.close()

    controller.kill(signal.SIGTERM)
    controller.start()
    channel, stub, md = connect(controller)
    stored = {p.name: p for p in all_ports(stub, md)}
    assert stored == {p.name: p for p in ports}
    channel.close()


def _collect(stream, n: int) -> list[pb.WatchEvent]:  # type: ignore[no-untyped-def]
    return [next(stream) for _ in range(n)]


def test_watch_snapshot_then_changes_and_resume_without_gaps(controller: ControllerProcess) -> None:
    controller.start()
    channel, stub, md = connect(controller)
    alice = (
        (
            "authorization",
            "Bearer " + stub.CreateToken(pb.CreateTokenRequest(tenant="alice"), metadata=md).token,
        ),
    )
    net = stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(), network_id="n1"), metadata=alice)
    stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(), network_id="admin-net"), metadata=md)

    stream = stub.Watch(pb.WatchRequest(start_revision=0), metadata=alice)
    existing = next(stream)
    assert existing.type == pb.WatchEvent.EXISTING and existing.network.name == net.name  # not admin-net
    synced = next(stream)
    assert synced.type == pb.WatchEvent.SYNCED
    start = synced.revision
    stub.CreateSubnet(
        pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr="10.0.0.0/24"), subnet_id="s1"),
        metadata=alice,
    )
    port = stub.CreatePort(pb.CreatePortRequest(port=pb.Port(network=net.name), port_id="p1"), metadata=alice)
    # the tenant's first port brings its default security group (and the group's four rules) in its write
    events = _collect(stream, 7)
    assert [(e.type, e.WhichOneof("resource")) for e in events] == [
        (pb.WatchEvent.CREATED, "subnet"),
        (pb.WatchEvent.CREATED, "security_group"),
        *[(pb.WatchEvent.CREATED, "security_group_rule")] * 4,
        (pb.WatchEvent.CREATED, "port"),
    ]
    assert events[-1].port == port and events[0].revision == start + 1
    assert {e.revision for e in events[1:]} == {start + 2}
    assert list(port.security_groups) == [events[1].security_group.name]
    stream.cancel()
    resume_at = events[-1].revision

    # changes while nobody watches, then a restart: resuming replays exactly what was missed
    stub.UpdatePort(
        pb.UpdatePortRequest(port=pb.Port(name=port.name, display_name="renamed")), metadata=alice
    )
    stub.DeleteNetwork(pb.DeleteNetworkRequest(name=net.name, force=True), metadata=alice)
    channel.close()
    controller.kill(signal.SIGKILL)
    controller.start()
    channel, stub, md = connect(controller)
    stream = stub.Watch(pb.WatchRequest(start_revision=resume_at), metadata=alice)
    events = _collect(stream, 5)
    assert [(e.type, e.WhichOneof("resource")) for e in events] == [
        (pb.WatchEvent.UPDATED, "port"),
        (pb.WatchEvent.DELETED, "port"),
        (pb.WatchEvent.DELETED, "subnet"),
        (pb.WatchEvent.DELETED, "network"),
        (pb.WatchEvent.SYNCED, None),
    ]
    assert events[0].revision == resume_at + 1 and events[0].port.display_name == "renamed"
    assert {e.revision for e in events[1:4]} == {resume_at + 2}  # one write, one revision
    # live changes keep coming on the resumed stream
    stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(), network_id="n2"), metadata=alice)
    live = next(stream)
    assert live.type == pb.WatchEvent.CREATED and live.network.name == "networks/n2"
    assert live.revision == resume_at + 3
    stream.cancel()
    with pytest.raises(grpc.RpcError) as info:
        next(stub.Watch(pb.WatchRequest(start_revision=10_000), metadata=alice))
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    channel.close()


def test_sigterm_finishes_in_flight_calls_and_closes(controller: ControllerProcess) -> None:
    controller.start()
    channel, stub, md = connect(controller)
    stream = stub.Watch(pb.WatchRequest(start_revision=0), metadata=md)
    assert next(stream).type == pb.WatchEvent.SYNCED
    stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(), network_id="before"), metadata=md)
    assert next(stream).network.name == "networks/before"
    rc = controller.kill(signal.SIGTERM)
    assert rc == 0
    with pytest.raises((grpc.RpcError, StopIteration)):
        next(stream)  # the stream ended with the server, it did not hang
    log = controller.log.read_text()
    assert "stopped cleanly" in log
    channel.close()
    controller.start()
    _, stub, md = connect(controller)
    assert (
        stub.GetNetwork(pb.GetNetworkRequest(name="networks/before"), metadata=md).name == "networks/before"
    )

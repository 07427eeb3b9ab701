"""The data directory with real controller processes: one instance per directory, private modes, and a
read-only directory refused in one line (a read-only tmpfs: as root, permission bits would not stop us)."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from proto.sdn.v1 import topology_pb2 as pb
from proto.sdn.v1 import topology_pb2_grpc as pb_grpc
from tests.conftest import ControllerProcess

root_only = pytest.mark.lab  # mounts a tmpfs: needs root, like every lab test (never skipped)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def stub_of(
    ctl: ControllerProcess,
) -> tuple[grpc.Channel, pb_grpc.TopologyServiceStub, tuple[tuple[str, str]]]:
    channel = grpc.insecure_channel(ctl.endpoint)
    return channel, pb_grpc.TopologyServiceStub(channel), (("authorization", f"Bearer {ctl.admin_token()}"),)


def refused_start(ctl: ControllerProcess) -> tuple[int, list[str]]:
    """Start a controller that must not come up: its exit code and its log lines (import noise aside)."""
    with pytest.raises(RuntimeError):
        ctl.start(timeout=60)
    assert ctl.proc is not None
    rc = ctl.proc.wait(timeout=30)
    lines = [
        line
        for line in ctl.log.read_text(errors="replace").splitlines()
        if line.strip() and "Warning" not in line and not line.startswith("  ")
    ]
    return rc, lines


def test_a_second_controller_on_the_same_directory_exits_naming_the_first(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ControllerProcess(data)
    second = ControllerProcess(data)
    second.log = tmp_path / "second.log"
    try:
        first.start()
        assert first.proc is not None
        rc, lines = refused_start(second)
        assert rc != 0
        assert any(f"in use by another controller (pid {first.proc.pid})" in line for line in lines), lines
        assert not any("Traceback" in line for line in lines)
        # the first one was not disturbed: it keeps serving and acknowledging writes
        channel, stub, md = stub_of(first)
        net = stub.CreateNetwork(
            pb.CreateNetworkRequest(network=pb.Network(), network_id="after"), metadata=md
        )
        assert stub.GetNetwork(pb.GetNetworkRequest(name=net.name), metadata=md) == net
        channel.close()
        assert first.proc.poll() is None
        # once it is gone, the directory can be used again (the lock died with the process)
        first.kill()
        second.start()
        channel, stub, md = stub_of(second)
        assert (
            stub.GetNetwork(pb.GetNetworkRequest(name="networks/after"), metadata=md).name == "networks/after"
        )
        channel.close()
    finally:
        first.stop()
        second.stop()


def test_store_and_token_files_are_private_also_after_writes_and_fixed_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ctl = ControllerProcess(data)
    ctl.log = tmp_path / "controller.log"
    try:
        ctl.start()
        channel, stub, md = stub_of(ctl)
        net = stub.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network()), metadata=md)
        stub.CreateSubnet(
            pb.CreateSubnetRequest(subnet=pb.Subnet(network=net.name, cidr="10.0.0.0/24")), metadata=md
        )
        stub.CreatePort(pb.CreatePortRequest(port=pb.Port(network=net.name)), metadata=md)
        stub.CreateToken(pb.CreateTokenRequest(tenant="alice"), metadata=md)
        channel.close()
        files = ["topology.sqlite", "topology.sqlite-wal", "topology.sqlite-shm", "tokens.json"]
        assert mode(data) == 0o700
        for name in files:
            assert (data / name).exists() and mode(data / name) == 0o600, (name, oct(mode(data / name)))
        assert not [p.name for p in data.iterdir() if mode(p) & 0o077]

        # a directory left world-readable (an older version, a copy) is made private at the next start
        ctl.kill()
        os.chmod(data, 0o755)
        for name in files:
            os.chmod(data / name, 0o644)
        ctl.start()
        assert mode(data) == 0o700 and all(mode(data / name) == 0o600 for name in files)
        log = ctl.log.read_text()
        assert "data directory mode fixed" in log and "topology.sqlite: 0644 -> 0600" in log
        assert f"{data}: 0755 -> 0700" in log
    finally:
        ctl.stop()


@contextmanager
def tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@root_only
@pytest.mark.parametrize("with_store", [False, True], ids=["empty", "with-store"])
def test_a_read_only_data_directory_is_refused_in_one_line(tmp_path: Path, with_store: bool) -> None:
    with tmpfs(tmp_path / "data") as data:
        ctl = ControllerProcess(data)
        ctl.log = tmp_path / "controller.log"
        try:
            if with_store:
                ctl.start()
                ctl.kill()
            subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
            ctl.log.write_text("")
            rc, lines = refused_start(ctl)
        finally:
            ctl.stop()
        assert rc == 1
        assert not any("Traceback" in line for line in lines), lines
        errors = [line for line in lines if "ERROR" in line]
        assert len(errors) == 1 and "read-only file system" in errors[0], lines
        assert str(data) in errors[0]


@root_only
def test_a_full_data_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data", "1m") as data:
        ctl = ControllerProcess(data)
        ctl.log = tmp_path / "controller.log"
        try:
            ctl.start()
            ctl.kill()
            with open(data / "filler", "wb", buffering=0) as f:
                chunk = b"\0" * 65536
                while chunk:
                    try:
                        f.write(chunk)
                    except OSError:
                        chunk = chunk[: len(chunk) // 2]
            ctl.log.write_text("")
            rc, lines = refused_start(ctl)
        finally:
            ctl.stop()
        assert rc == 1 and not any("Traceback" in line for line in lines), lines
        errors = [line for line in lines if "ERROR" in line]
        assert len(errors) == 1 and "full" in errors[0], lines


def test_an_openflow_port_in_use_stops_the_start_with_a_clear_message(tmp_path: Path) -> None:
    """The OpenFlow listener binds in os-ken's own thread: a port already taken must refuse the start (it
    used to come up without a listener, saying nothing, and no switch could ever connect)."""
    import socket

    ctl = ControllerProcess(tmp_path / "data")
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind((ctl.of_host, ctl.of_port))
    taken.listen(1)
    try:
        rc, lines = refused_start(ctl)
    finally:
        taken.close()
        ctl.stop()
    assert rc != 0
    assert any(f"cannot listen for OpenFlow on {ctl.of_host}:{ctl.of_port}" in line for line in lines), lines
    assert not any("Traceback" in line for line in lines), lines

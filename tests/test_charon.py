"""The IKE daemon wrapper (controller/services/charon.py) with a real charon in a namespace: the ESP backend is
the configuration's (kernel-libipsec loaded before kernel-netlink for userspace ESP, kernel-netlink alone for
kernel ESP), VICI answers, a second wrapper adopts the running daemon, stop ends it."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.services.charon import Charon, _is_charon, strongswan_conf

pytestmark = pytest.mark.lab  # root: a namespace and a daemon


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"vpntest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _loaded_plugins(rundir: Path) -> list[str]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in (rundir / "charon.log").read_text().splitlines():
            if "loaded plugins:" in line:
                return line.split("loaded plugins:")[1].split()
        time.sleep(0.05)
    raise AssertionError((rundir / "charon.log").read_text())


@pytest.mark.parametrize("esp", ["userspace", "kernel"])
def test_the_esp_backend_is_the_configurations(netns: str, tmp_path: Path, esp: str) -> None:
    c = Charon(netns, tmp_path / "run", esp)
    c.start()
    try:
        plugins = _loaded_plugins(tmp_path / "run")
        assert c.call(lambda s: s.version())["daemon"] == b"charon"
        assert c.list_sas() == []
    finally:
        c.stop()
    if esp == "userspace":
        assert plugins.index("kernel-libipsec") < plugins.index("kernel-netlink"), plugins
    else:
        assert "kernel-libipsec" not in plugins and "kernel-netlink" in plugins, plugins
    assert not c.running() and not (tmp_path / "run" / "charon.vici").exists()


def test_a_second_wrapper_adopts_the_running_daemon_and_stops_it(netns: str, tmp_path: Path) -> None:
    first = Charon(netns, tmp_path / "run")
    first.start()
    pid = first.pid
    assert pid is not None
    first.proc = None  # as if the controller that started it were gone (its child handle with it)
    second = Charon(netns, tmp_path / "run")
    assert second.adopt() and second.pid == pid and second.running()
    assert second.call(lambda s: s.version())["daemon"] == b"charon"
    second.stop()
    deadline = time.monotonic() + 5
    while _is_charon(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _is_charon(pid)
    assert not Charon(netns, tmp_path / "run").adopt(), "nothing left to adopt"


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="ESP backend"):
        strongswan_conf("/x", "hardware")

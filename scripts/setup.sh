#!/usr/bin/env bash
# Idempotent setup on Debian 12: system packages (Open vSwitch userspace datapath, iproute2, tools the lab
# uses), then a venv in .venv with the project installed editable. Needs root for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PKGS="openvswitch-switch openvswitch-common iproute2 ethtool iputils-ping tcpdump iperf3 netcat-openbsd"
APT_PKGS="$APT_PKGS chromium chromium-driver"  # headless browser for the dashboard test (no downloaded driver)
APT_PKGS="$APT_PKGS busybox"  # udhcpc: the DHCP client of the DHCP end-to-end test
APT_PKGS="$APT_PKGS systemd"  # systemd-analyze: tests/test_deploy.py verifies contrib/sdn-controller.service
APT_PKGS="$APT_PKGS prometheus"  # tests/test_dashboard.py runs the Grafana dashboard's queries on a real Prometheus
APT_PKGS="$APT_PKGS isc-dhcp-client ndisc6"  # dhclient -6 and rdisc6: the IPv6 address configuration e2e test
APT_PKGS="$APT_PKGS etcd-server"  # store = "etcd"; tests start their own etcd processes (lab/etcd.py)
# VPNaaS: strongSwan's IKE daemon (charon, one per VPN service, driven over VICI), its userspace ESP
# (kernel-libipsec, in the extra plug-ins) and the openssl plug-in (ECP groups, AES-GCM)
APT_PKGS="$APT_PKGS strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins"
missing=""
for p in $APT_PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  # The packaged service would start a system-wide ovs-vswitchd; the lab runs its own per chassis.
  systemctl disable --now openvswitch-switch >/dev/null 2>&1 || true
  # Nor a system-wide charon: the controller runs one per VPN service, each in its own namespace
  systemctl disable --now strongswan-starter strongswan >/dev/null 2>&1 || true
  # Nor is the packaged etcd service needed: the tests run theirs on free loopback ports, and a controller
  # with store = "etcd" is pointed at the operator's cluster.
  systemctl disable --now etcd >/dev/null 2>&1 || true
  # Nor the packaged Prometheus: the dashboard test runs its own on a free loopback port.
  systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating the venv .venv"
  python3 -m venv .venv
fi
# the stamp covers the plug-in packages' pyprojects too (plugins/*/pyproject.toml: installed after the core);
# constraints.txt pins the exact versions tested (pyproject.toml states ranges)
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt plugins/*/pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "setup: installing the Python packages into .venv (constraints.txt; a few minutes the first time)"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
  for plugin in plugins/*/; do
    .venv/bin/pip install -q --disable-pip-version-check --no-deps -e "$plugin" 2>&1 | grep -v "^WARNING: Location" || true
  done
  .venv/bin/python -c "import grpc, os_ken, ovs, networkx, netaddr, pyroute2, vici" 
  rm -f .venv/.installed-*
  touch "$stamp"
fi

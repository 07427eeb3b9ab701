"""Against a real ovs-vswitchd: every load-balancer flow and group shape (select groups of ct(commit, nat,
exec(ct_mark)), SOURCE_IP slots, hairpin ct_zone / ct_mark matches, floating IP groups) installs and dumps
back equal."""

from __future__ import annotations

import pytest

from flows import actions as A
from tests.test_apps_lb import lb_world
from tests.test_flows_ovs import switch, unique_keys  # noqa: F401 - the fixture

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("algorithm", ["ROUND_ROBIN", "SOURCE_IP"])
def test_load_balancer_shapes_install_and_dump_back_as_equal_values(switch, algorithm):  # noqa: F811
    w, _p = lb_world(algorithm, fip=True)
    items = w.switch("hv1")
    flows = [
        f for fl in items.tables.values() for f in fl if not any(isinstance(a, A.Meter) for a in f.actions)
    ]
    groups = list(items.groups.values())
    assert any(f.stage == "lb" for f in flows) and (algorithm == "SOURCE_IP" or groups)
    wanted = unique_keys(flows)
    assert switch.install(wanted, groups) == []
    got_flows, got_groups = switch.dump()
    assert set(wanted) <= set(got_flows)
    assert set(groups) <= set(got_groups)

"""The plug-in interface (version PLUGIN_API) and the registry of the plug-ins loaded in this process.

A plug-in is a `Plugin` value an entry point of the group ENTRY_POINT_GROUP gives (controller/plugins.py
loads them at start). What it brings: record kinds (stored, revisioned and watched like the core's), stages
inside the pipeline's plug-in hooks (flows/pipeline.py HOOKS), unit kinds with a pure compile keyed by
owner, an app id for its cookies and a range of meter ids, and optionally its gRPC services and sdnctl
commands. The compiler asks this registry instead of naming plug-ins; no core module imports a plug-in.
docs/plugins.md is the contract: what a plug-in may touch and what it must not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from apps.view import View
from flows import pipeline
from flows.cookie import Cookie
from flows.flow import Flow, Group, MeterEntry
from topology import records
from topology.model import Change, Topology

#: the interface version this core implements; a plug-in built for another one is refused at load
PLUGIN_API = 1
#: the entry-point group plug-ins register under (pyproject: [project.entry-points."sdn_controller.plugins"])
ENTRY_POINT_GROUP = "sdn_controller.plugins"
#: cookie app ids reserved for plug-ins (the core's are below, apps/ids.py)
PLUGIN_APP_IDS = range(128, 256)
#: meter ids reserved for plug-ins: above the DHCP meters (apps/ids.py), inside the 262144 meters OVS 3.1's
#: userspace datapath holds; each plug-in declares a sub-range no other loaded plug-in overlaps
PLUGIN_METER_IDS = range(1 << 17, 1 << 18)

Item = Flow | Group | MeterEntry


class PluginError(ValueError):
    """A plug-in breaks the interface: refused at load, or its compile produced what it may not."""


@dataclass(frozen=True)
class StageDecl:
    """A stage the plug-in fills: its name, the hook it sits in, its table (inside the hook's tables)."""

    name: str
    hook: str
    table: int
    doc: str


@dataclass(frozen=True)
class UnitKind:
    """A kind of owner unit the plug-in compiles, e.g. ("qos_port", port id).

    `units(topo)`: every unit id the model has. `dirty(topo, change)`: the unit ids a model change can reach
    (topo is the model after the change; the change is (kind, id, old, new)). `compile(view, chassis, id)`:
    the flows and meters the chassis wants for the unit; pure (no clock, no I/O), as every app."""

    kind: str
    units: Callable[[Topology], Iterable[str]]
    dirty: Callable[[Topology, Change], Iterable[str]]
    compile: Callable[[View, str, str], Iterable[Item]]


@dataclass(frozen=True)
class Plugin:
    """What an entry point gives. `records`: record classes (frozen dataclasses with KIND, id, tenant,
    revision) the generic store keeps; `collections`: each kind's resource-name collection ("qosPolicies");
    `api(server)` adds its gRPC services (controller/plugins.py ApiHost); `cli(subparsers)` its sdnctl
    commands."""

    name: str
    version: str
    api_version: int
    app_id: int
    records: tuple[type, ...] = ()
    collections: Mapping[str, str] = field(default_factory=dict)
    stages: tuple[StageDecl, ...] = ()
    units: tuple[UnitKind, ...] = ()
    meters: range = range(0)
    api: Callable[[Any], None] | None = None
    cli: Callable[[Any], None] | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(r.KIND for r in self.records)  # type: ignore[attr-defined]


_LOADED: dict[str, Plugin] = {}
_UNITS: dict[str, tuple[Plugin, UnitKind]] = {}


def check(plugin: Plugin) -> None:
    """Refuse a plug-in this core cannot host (PluginError saying why); nothing is registered."""
    if plugin.api_version != PLUGIN_API:
        raise PluginError(
            f"plug-in {plugin.name!r} implements plug-in interface {plugin.api_version}, "
            f"this controller implements {PLUGIN_API}"
        )
    if plugin.app_id not in PLUGIN_APP_IDS:
        raise PluginError(f"plug-in {plugin.name!r}: app id {plugin.app_id} outside {PLUGIN_APP_IDS}")
    for other in _LOADED.values():
        if other.name == plugin.name:
            continue
        if other.app_id == plugin.app_id:
            raise PluginError(f"plug-in {plugin.name!r}: app id {plugin.app_id} is {other.name!r}'s")
        if set(other.meters) & set(plugin.meters):
            raise PluginError(f"plug-in {plugin.name!r}: meter ids overlap {other.name!r}'s")
        if set(other.kinds) & set(plugin.kinds):
            raise PluginError(f"plug-in {plugin.name!r}: record kinds overlap {other.name!r}'s")
    if plugin.meters and (plugin.meters[0] < PLUGIN_METER_IDS[0] or plugin.meters[-1] > PLUGIN_METER_IDS[-1]):
        raise PluginError(f"plug-in {plugin.name!r}: meter ids {plugin.meters} outside {PLUGIN_METER_IDS}")
    for kind in plugin.kinds:
        if kind in records.CORE_KINDS:
            raise PluginError(f"plug-in {plugin.name!r}: record kind {kind!r} is the core's")
    for unit in plugin.units:
        owner = _UNITS.get(unit.kind)
        if unit.kind in CORE_UNIT_KINDS or (owner is not None and owner[0].name != plugin.name):
            raise PluginError(f"plug-in {plugin.name!r}: unit kind {unit.kind!r} is taken")


#: unit kinds the core compiler owns (apps/compiler.py)
CORE_UNIT_KINDS = frozenset(
    {"pipeline", "network", "router", "port", "acl", "acl_clause", "sg_rule", "lb", "firewall_group"}
)


def install(plugin: Plugin) -> None:
    """Check `plugin` and register its record kinds, stages and unit kinds (idempotent per name)."""
    check(plugin)
    for stage in plugin.stages:
        try:
            pipeline.declare_plugin_stage(stage.name, stage.hook, stage.table, stage.doc)
        except ValueError as e:
            raise PluginError(f"plug-in {plugin.name!r}: {e}") from None
    for cls in plugin.records:
        records.register_kind(cls)
    for unit in plugin.units:
        _UNITS[unit.kind] = (plugin, unit)
    _LOADED[plugin.name] = plugin


def uninstall(name: str) -> None:
    """Take an installed plug-in out of this process again (its stages, record kinds, unit kinds): what a
    test that installs one must do when it ends, so no other test sees it. A no-op for an unknown name."""
    plugin = _LOADED.pop(name, None)
    if plugin is None:
        return
    for stage in plugin.stages:
        pipeline.remove_plugin_stage(stage.name)
    for cls in plugin.records:
        records.unregister_kind(cls)
    for unit in plugin.units:
        if _UNITS.get(unit.kind, (None,))[0] is plugin:
            del _UNITS[unit.kind]


def is_plugin_unit(kind: str) -> bool:
    """Whether `kind` is an installed plug-in's unit kind (the compiler asks this, never a plug-in)."""
    return kind in _UNITS


def loaded() -> list[Plugin]:
    """The installed plug-ins, by name."""
    return [_LOADED[n] for n in sorted(_LOADED)]


def unit_kinds() -> list[str]:
    return sorted(_UNITS)


def all_units(topo: Topology) -> list[tuple[str, str]]:
    """Every plug-in unit of the model."""
    return [(kind, ident) for kind in sorted(_UNITS) for ident in _UNITS[kind][1].units(topo)]


def dirty_units(topo: Topology, change: Change) -> set[tuple[str, str]]:
    """The plug-in units a model change can reach."""
    return {(kind, ident) for kind, (_p, unit) in _UNITS.items() for ident in unit.dirty(topo, change)}


def compile_unit(view: View, chassis_id: str, unit: tuple[str, str]) -> frozenset[Item]:
    """A plug-in unit's items, checked: flows in the plug-in's own stages under its app id, meters in its
    range (PluginError otherwise: a plug-in cannot write over the core's flows or another plug-in's)."""
    plugin, kind = _UNITS[unit[0]]
    items = frozenset(kind.compile(view, chassis_id, unit[1]))
    stages = {s.name for s in plugin.stages}
    for item in items:
        if isinstance(item, Flow):
            c = Cookie.decode(int(item.cookie))
            if item.stage not in stages or c is None or c.app != plugin.app_id:
                raise PluginError(
                    f"plug-in {plugin.name!r}: flow in {item.stage} with cookie {int(item.cookie):#x} "
                    f"(its stages: {sorted(stages)}, its app id: {plugin.app_id})"
                )
        elif isinstance(item, MeterEntry):
            if item.meter_id not in plugin.meters:
                raise PluginError(f"plug-in {plugin.name!r}: meter {item.meter_id} outside {plugin.meters}")
        else:
            raise PluginError(f"plug-in {plugin.name!r}: {type(item).__name__} is not a plug-in's to make")
    return items


def app_names() -> dict[int, str]:
    """Cookie app id -> plug-in name, for dumps and traces."""
    return {p.app_id: p.name for p in _LOADED.values()}

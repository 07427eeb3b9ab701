"""Load the installed plug-ins (entry points of apps.plugin.ENTRY_POINT_GROUP) at start, and report what an
uninstalled one left behind.

Installed = loaded at start: its record kinds, stages and units join the core's before the store is read.
A plug-in whose interface version is not this core's, or that breaks the interface otherwise, is refused
with an ERROR naming it and why; the controller runs without it. Uninstalled (or refused, or disabled with
`disabled_plugins`) = its flows and meters are swept from every switch at the next resync (nobody desires
them: cookie app id and meter ids are the plug-in's), and its stored records are kept, untouched, and
reported (log at start, GetServerInfo's orphan_records).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata

from apps import plugin as api
from controller.api import convert

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    loaded: list[api.Plugin] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # entry point name -> why
    disabled: list[str] = field(default_factory=list)


def install(plugins: Iterable[api.Plugin], report: LoadReport | None = None) -> LoadReport:
    """Install plug-in values (the loader's second half; tests give values directly)."""
    report = report or LoadReport()
    for p in plugins:
        try:
            api.install(p)
        except (api.PluginError, TypeError, ValueError) as e:
            log.error("plug-in %s refused: %s", p.name, e)
            report.refused[p.name] = str(e)
            continue
        convert.COLLECTION.update(p.collections)
        report.loaded.append(p)
        log.info("plug-in %s %s loaded (interface %d, app id %d)", p.name, p.version, p.api_version, p.app_id)
    return report


def uninstall(plugin: api.Plugin) -> None:
    """Take an installed plug-in out of this process (install's undo; tests scope a plug-in with it)."""
    api.uninstall(plugin.name)
    for kind in plugin.collections:
        convert.COLLECTION.pop(kind, None)


def discover(disabled: Iterable[str] = ()) -> LoadReport:
    """Every installed plug-in's entry point loaded (but the disabled ones), nothing registered: `loaded`
    holds the values (sdnctl takes their CLI hooks from here; the controller installs them with `load`)."""
    report = LoadReport()
    off = set(disabled)
    for ep in sorted(metadata.entry_points(group=api.ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in off:
            report.disabled.append(ep.name)
            continue
        try:
            value = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plug-in must not stop the controller
            log.error("plug-in %s refused: cannot load %s: %s", ep.name, ep.value, e)
            report.refused[ep.name] = f"cannot load: {e}"
            continue
        if not isinstance(value, api.Plugin):
            log.error("plug-in %s refused: %s is not an apps.plugin.Plugin", ep.name, ep.value)
            report.refused[ep.name] = "not an apps.plugin.Plugin"
            continue
        report.loaded.append(value)
    return report


def load(disabled: Iterable[str] = ()) -> LoadReport:
    """Every installed plug-in's entry point, loaded and installed in this process (but the disabled ones)."""
    report = discover(disabled)
    for name in report.disabled:
        log.warning("plug-in %s disabled by configuration: its flows will be swept", name)
    values, report.loaded = report.loaded, []
    return install(values, report)


def report_orphans(unknown: dict[str, int]) -> None:
    """Log the records of kinds no loaded plug-in knows (kept in the store, untouched)."""
    for kind, n in sorted(unknown.items()):
        log.warning(
            "store holds %d %s record(s) of no loaded plug-in: kept untouched, not served; "
            "its flows are swept (install the plug-in again to serve them)",
            n,
            kind,
        )

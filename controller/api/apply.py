"""Declarative apply: a whole topology as one document, planned against the model and written as ONE
transaction (one durable commit, one compile), all or nothing.

The document is a JSON object whose keys are the resource tables' collections ("networks", "ports",
"load_balancers", a plug-in's "qos_policies", ...: a spec's List field), each a list of the resource's
messages in their proto3 JSON form, named by their client-chosen id ("networks/web" or just "web"; members
"pools/{pool}/members/{id}"). Objects refer to each other by resource name, within the document or to what
the model holds. Every object goes through its kind's Create or Update hook (controller/api/resources.py), in
dependency order, each seeing the model as the objects before it left it; a refusal anywhere refuses the
document, its field named by its path in the document ("ports[412].fixed_ips[0].ip_address").

Update semantics: the fields an object names are compared with the model (a nested message by the fields the
document gives: a port's fixed_ips `[{subnet: s}]` matches its allocated address); fields it leaves out keep
their value (the server's default at creation). Routers: `interfaces` ([{subnet}] or [{port}]) are
reconciled (added / removed) and `routes` set once the interfaces are there. A kind without Update (security
group rules) is replaced (deleted and created in the same transaction).

Prune: objects Apply creates are recorded in their tenant's AppliedSet (topology/records.py), in the same
transaction; with `prune`, an Apply deletes, among those only, the ones its document no longer has (in the
caller's tenant; an admin's: also in every tenant the document names). Objects made any other way are never
pruned.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from controller.api import convert
from controller.api.auth import Principal
from controller.api.flow_budget import budgeted
from controller.api.interceptors import principal
from controller.api.resources import Call, Resource, Scope, Tables, admin_only
from proto.sdn.v1 import apply_pb2 as apb
from proto.sdn.v1 import apply_pb2_grpc as apb_grpc
from proto.sdn.v1 import topology_pb2 as pb
from topology import errors, ops
from topology import ops_security as sec
from topology.errors import ApiError
from topology.model import Change, Topology
from topology.records import (
    OWNER_FLOATING_IP,
    OWNER_LOAD_BALANCER,
    OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE,
    AppliedSet,
    Port,
    Router,
)

#: what a plan shows for a write-only field's values
SECRET = "<secret>"
#: objects one document may hold (the server's default; `ApplyService(max_objects=...)`)
DEFAULT_MAX_OBJECTS = 20_000
#: the order objects are written in (references point backwards); plug-ins' kinds come after, in the order
#: they were loaded; prune deletes in the reverse order
ORDER = (
    "network",
    "subnet",
    "security_group",
    "security_group_rule",
    "port",
    "router",
    "floating_ip",
    "firewall_rule",
    "firewall_policy",
    "firewall_group",
    "load_balancer",
    "listener",
    "pool",
    "member",
    "health_monitor",
    "ike_policy",
    "ipsec_policy",
    "vpn_service",
    "vpn_endpoint_group",
    "ipsec_site_connection",
)
#: ports the controller makes for other objects (not exported: their owner brings them back)
IMPLIED_OWNERS = (OWNER_ROUTER_GATEWAY, OWNER_FLOATING_IP, OWNER_LOAD_BALANCER)
#: fields the server sets (in the messages of kinds that do not list them as output only): not exported,
#: not compared
SERVER_FIELDS = frozenset(
    {
        "etag",
        "revision",
        "create_time",
        "update_time",
        "status",
        "operating_status",
        "tunnel_key",
        "conjunction_id",
    }
)
#: how a document names its tenant's default security group (made by the server, never exported)
DEFAULT_GROUP = json.dumps(convert.name_of("security_group", sec.DEFAULT_GROUP_REF))
#: fields a Create reads that no answer shows (not compared on later Applies)
CREATE_ONLY = frozenset({("pool", "listener")})
#: string fields compared as they are (others ignoring case: "TCP" is the server's "tcp")
CASE_SENSITIVE = frozenset({"display_name", "description", "url_path", "device_id", "device_owner", "tenant"})
_DICT_OPTS: dict[str, Any] = {
    "preserving_proto_field_name": True,
    "always_print_fields_with_no_presence": True,
}
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass(frozen=True)
class Entry:
    """One object of the document, parsed."""

    spec: Resource
    path: str  # "ports[3]"
    ident: str
    name: str  # its resource name: "ports/web-1"
    parent: str  # members: "pools/{pool}"
    raw: dict[str, Any]  # the fields the document gives (proto names), as it gives them
    msg: Message  # the object as the kind's message


@dataclass
class Outcome:
    """What an Apply does: the object changes (in order) and the model changes."""

    objects: list[apb.ObjectChange] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)  # (kind, id)
    deleted: list[tuple[str, str]] = field(default_factory=list)


def ordered_specs(specs: Mapping[str, Resource]) -> list[Resource]:
    """The tenant-scoped kinds (chassis are the operator's, registered by their hosts) in write order."""
    rank = {kind: i for i, kind in enumerate(ORDER)}
    kinds = [s for s in specs.values() if s.scope is Scope.TENANT]
    return sorted(kinds, key=lambda s: rank.get(s.kind, len(rank)))


def _message_class(spec: Resource) -> type[Message]:
    request = getattr(spec.pb_module or pb, f"Create{spec.rpc}Request")
    return type(getattr(request(), spec.kind))


def _snake(key: str) -> str:
    return _CAMEL.sub("_", key).lower()


def own_name(spec: Resource, name: Any, field_path: str) -> tuple[str, str, str]:
    """(id, resource name, parent name) of an object named `name` in the document."""
    if not isinstance(name, str) or not name:
        raise errors.invalid(field_path, f"required: the {spec.kind}'s name (an id you choose, like web-1)")
    if spec.kind == "member":
        pool, ident = convert.parse_member_name(name, field_path)
        return ident, name, convert.name_of("pool", pool)
    ident = convert.parse_name(spec.kind, name, field_path) if "/" in name else name
    ops.check_id(ident, field_path)
    return ident, convert.name_of(spec.kind, ident), ""


def document_size(document: Mapping[str, Any]) -> int:
    return sum(len(v) for v in document.values() if isinstance(v, list))


def parse(document: Mapping[str, Any], specs: Sequence[Resource], max_objects: int) -> list[Entry]:
    """The document's objects in write order (kinds in ORDER, each in the document's order); refuses an
    unknown collection or field, a missing or repeated name, a value of the wrong type, a document too big."""
    count = document_size(document)
    if count > max_objects:
        raise ApiError(
            "RESOURCE_EXHAUSTED",
            "DOCUMENT_TOO_LARGE",
            f"the document has {count} objects; one Apply takes at most {max_objects}: split it",
            [("document", f"at most {max_objects} objects")],
            metadata={"limit": str(max_objects), "objects": str(count)},
        )
    by_field = {s.list_field: s for s in specs}
    for key, value in document.items():
        if key not in by_field:
            known = ", ".join(sorted(by_field))
            raise errors.invalid(key, f"not a collection Apply knows (one of: {known})")
        if not isinstance(value, list):
            raise errors.invalid(key, "must be a list of objects")
    seen: dict[tuple[str, str], str] = {}
    out = []
    for spec in specs:
        cls = _message_class(spec)
        desc = cls.DESCRIPTOR
        for i, obj in enumerate(document.get(spec.list_field, ())):
            path = f"{spec.list_field}[{i}]"
            if not isinstance(obj, dict):
                raise errors.invalid(path, f"must be a {spec.kind} object")
            raw: dict[str, Any] = {}
            for key, value in obj.items():
                fd = desc.fields_by_name.get(key) or desc.fields_by_camelcase_name.get(key)
                if fd is None:
                    raise errors.invalid(f"{path}.{key}", f"{desc.name} has no field {key!r}")
                raw[fd.name] = value
            ident, name, parent = own_name(spec, raw.pop("name", None), f"{path}.name")
            if (spec.kind, ident) in seen:
                raise errors.invalid(f"{path}.name", f"{name!r} is also {seen[(spec.kind, ident)]}")
            seen[(spec.kind, ident)] = path
            try:
                msg = json_format.ParseDict(raw, cls())
            except json_format.ParseError as err:
                raise errors.invalid(path, str(err)) from None
            out.append(Entry(spec, path, ident, name, parent, raw, msg))
    return out


def at_path(err: ApiError, entry: Entry) -> ApiError:
    """`err` (raised for `entry`) naming its fields by their place in the document."""
    kind = entry.spec.kind
    request_level = (f"{kind}_id", "parent", "name")

    def where(f: str) -> str:
        if not f or f in request_level:
            return f"{entry.path}.name" if f else entry.path
        if f.startswith(kind + "."):
            f = f[len(kind) + 1 :]
        return f"{entry.path}.{f}"

    err.violations = [(where(f), d) for f, d in err.violations] or [(entry.path, err.message)]
    err.message = f"{entry.path} ({entry.name}): {err.message}"
    err.metadata = {**err.metadata, "document_path": entry.path}
    return err


def _matches(raw: Any, canon: Any, current: Any, name: str = "") -> bool:
    """Does the model's value `current` hold what the document gives (`raw`, normalized as `canon`)? A
    nested message matches on the fields the document names."""
    if isinstance(raw, dict):
        canon = canon if isinstance(canon, dict) else {}
        current = current if isinstance(current, dict) else {}
        for key, value in raw.items():
            name = key if key in canon or key in current else _snake(key)
            if not _matches(value, canon.get(name), current.get(name), name):
                return False
        return True
    if isinstance(raw, list):
        canon = canon if isinstance(canon, list) else []
        current = current if isinstance(current, list) else []
        return len(raw) == len(current) == len(canon) and all(
            _matches(r, c, m, name) for r, c, m in zip(raw, canon, current, strict=True)
        )
    if raw is None:
        return current in (None, {}, [], "", 0, False)
    if isinstance(canon, str) and isinstance(current, str) and name not in CASE_SENSITIVE:
        return canon.lower() == current.lower()  # the server's spelling of a protocol, a MAC, an IPv6 address
    return bool(canon == current)


class Applier:
    """One Apply's write: runs inside State.write (or dry_run), changing the model as it goes (each object's
    hook sees the objects before it) and returning the changes, collapsed to one per record (the store writes
    each record once). Under State the model's changes go with them (Topology.keeps_trial: applied once);
    otherwise it puts the model back before it returns."""

    def __init__(self, tables: Tables, p: Principal, entries: list[Entry], prune: bool) -> None:
        self.tables = tables
        self.p = p
        self.entries = entries
        self.prune = prune
        self.outcome = Outcome()
        self._log: list[Change] = []
        self._topo: Topology | None = None
        self._scope: set[str] = set()
        self._rev = 0
        self._now = 0.0

    # ------------------------------------------------------------------------------------------ the write

    def __call__(self, topo: Topology, rev: int, now: float) -> list[Change]:
        self.outcome = Outcome()
        self._log, self._topo, self._rev, self._now = [], topo, rev, now
        before = topo.revision
        self._scope = self._tenants()
        try:
            later = self._prune(self._doomed(), final=False) if self.prune else []
            for entry in self.entries:
                try:
                    self._one(entry)
                except ApiError as err:
                    raise at_path(err, entry) from None
            self._prune(later, final=True)
            self._mark()
            return collapse(self._log)
        finally:
            if not topo.keeps_trial:  # else the model's changes go to State with the write (Topology.trial)
                topo.apply([(k, i, new, old) for k, i, old, new in reversed(self._log)], before)

    @property
    def topo(self) -> Topology:
        assert self._topo is not None
        return self._topo

    def _add(self, changes: Iterable[Change]) -> list[Change]:
        changes = list(changes)
        if changes:
            if self.topo.keeps_trial:
                self.topo.try_changes(changes)
            else:
                self.topo.apply(changes, self._rev)
            self._log.extend(changes)
        return changes

    def _call(self, spec: Resource, request: Any) -> Call:
        return Call(self.tables, spec, self.p, request, self.topo, self._rev, self._now)

    def _request(self, entry: Entry, msg: Message) -> Any:
        spec = entry.spec
        request = getattr(spec.pb_module or pb, f"Create{spec.rpc}Request")()
        setattr(request, f"{spec.kind}_id", entry.ident)
        getattr(request, spec.kind).CopyFrom(msg)
        if entry.parent:
            request.parent = entry.parent
        return request

    # ------------------------------------------------------------------------------------------ objects

    def _one(self, entry: Entry) -> None:
        spec = entry.spec
        if entry.ident not in self.topo.table(spec.kind):
            self._create(entry)
            return
        old = self.tables.lookup(self.topo, self.p, spec.kind, entry.name, f"{spec.kind}.name", owned=True)
        if spec.kind == "member" and entry.parent != convert.name_of("pool", old.pool_id):
            raise errors.invalid("parent", f"member {entry.ident!r} is in another pool")
        skip = {"interfaces", "routes"} if spec.kind == "router" else set()
        diffs = self._diff(entry, self.tables.show(spec, old), skip, old.tenant, old)
        if diffs and spec.update is None:
            self._replace(entry, old, diffs)
            return
        if diffs:
            self._update(entry, old, [f for f, _b, _a in diffs], diffs)
        if spec.kind == "router":
            self._router_extras(entry)

    def _create(self, entry: Entry) -> None:
        spec = entry.spec
        msg = entry.msg
        if spec.kind == "router":  # routes need the interfaces, which need the router: set them after
            msg = type(msg)()
            msg.CopyFrom(entry.msg)
            msg.ClearField("routes")
        changes = self._add(spec.create(self._call(spec, self._request(entry, msg)), msg))
        rec = next((new for k, i, old, new in changes if k == spec.kind and i == entry.ident), None)
        if rec is None:
            raise errors.invalid("name", f"the {spec.kind} was not made with the id {entry.ident!r}")
        self.outcome.created.append((spec.kind, entry.ident))
        self.outcome.objects.append(
            apb.ObjectChange(
                action=apb.ObjectChange.CREATE,
                kind=spec.kind,
                name=entry.name,
                path=entry.path,
                tenant=rec.tenant,
            )
        )
        if spec.kind == "router":
            self._router_extras(entry)

    def _diff(
        self, entry: Entry, current: Message, skip: set[str], tenant: str, record: Any = None
    ) -> list[tuple[str, Any, Any]]:
        """(field, model's value, document's value) of each field the document gives that differs. A
        write-only field (a PSK, never shown) is compared with the record itself, and its values are
        reported as "<secret>"."""
        spec = entry.spec
        now = _as_dict(current, entry.raw)
        mine = _as_dict(entry.msg, entry.raw)
        default = self.topo.default_groups.get(tenant)
        text = json.dumps(mine)
        if default is not None and DEFAULT_GROUP in text:  # "securityGroups/default": the tenant's
            mine = json.loads(text.replace(DEFAULT_GROUP, json.dumps(_group_name(default))))
        out: list[tuple[str, Any, Any]] = []
        for name, value in entry.raw.items():
            if name in spec.write_only:
                if record is not None and getattr(record, name, None) != mine.get(name):
                    out.append((name, SECRET, SECRET))
                continue
            if (
                name in skip
                or name in spec.output_only
                or name in SERVER_FIELDS
                or (spec.kind, name) in CREATE_ONLY
            ):
                continue
            if not _matches(value, mine.get(name), now.get(name), name):
                out.append((name, now.get(name), mine.get(name)))
        return out

    def _update(self, entry: Entry, old: Any, paths: list[str], diffs: list[tuple[str, Any, Any]]) -> None:
        spec = entry.spec
        assert spec.update is not None
        for path in paths:
            if path in spec.immutable or path not in spec.mutable:
                raise errors.invalid(
                    path,
                    "immutable: the model has "
                    f"{json.dumps(next(b for f, b, _a in diffs if f == path))}; "
                    "give the object another name to replace it",
                    reason="IMMUTABLE_FIELD",
                )
        call = self._call(spec, self._request(entry, entry.msg))
        if spec.check_paths is not None:  # admin-only fields
            spec.check_paths(call, old, entry.msg, paths)
        fields = {path: Tables._value(spec, call, entry.msg, path) for path in paths}
        self._add(spec.update(call, old, fields))
        self.outcome.objects.append(
            apb.ObjectChange(
                action=apb.ObjectChange.UPDATE,
                kind=spec.kind,
                name=entry.name,
                path=entry.path,
                tenant=old.tenant,
                fields=[apb.FieldChange(field=f, before=_js(b), after=_js(a)) for f, b, a in diffs],
            )
        )

    def _replace(self, entry: Entry, old: Any, diffs: list[tuple[str, Any, Any]]) -> None:
        spec = entry.spec
        call = self._call(spec, self._request(entry, entry.msg))
        self._add(spec.delete(call, old, False))
        self._add(spec.create(self._call(spec, self._request(entry, entry.msg)), entry.msg))
        self.outcome.objects.append(
            apb.ObjectChange(
                action=apb.ObjectChange.REPLACE,
                kind=spec.kind,
                name=entry.name,
                path=entry.path,
                tenant=old.tenant,
                fields=[apb.FieldChange(field=f, before=_js(b), after=_js(a)) for f, b, a in diffs],
            )
        )

    # ------------------------------------------------------------------------------------------ routers

    def _router_extras(self, entry: Entry) -> None:
        """Interfaces as the document lists them (added first, removed last), routes once they are there."""
        router = self.topo.routers[entry.ident]
        changed: list[apb.FieldChange] = []
        removed: list[Port] = []
        if "interfaces" in entry.raw:
            wanted = list(entry.msg.interfaces)  # type: ignore[attr-defined]
            have = [
                port
                for port in self.topo.router_ports(router.id)
                if port.device_owner == OWNER_ROUTER_INTERFACE
            ]
            matched: set[str] = set()
            for i, itf in enumerate(wanted):
                where = f"interfaces[{i}]"
                subnet = _ref(itf.subnet, "subnet", f"{where}.subnet")
                port = _ref(itf.port, "port", f"{where}.port")
                if bool(subnet) == bool(port):
                    raise errors.invalid(where, "give a subnet or a port")
                hit = next(
                    (
                        x
                        for x in have
                        if x.id not in matched
                        and (
                            (port and x.id == port)
                            or (subnet and x.fixed_ips and x.fixed_ips[0][0] == subnet)
                        )
                    ),
                    None,
                )
                if hit is not None:
                    matched.add(hit.id)
                    continue
                if subnet:
                    subnet = self.tables.lookup(
                        self.topo, self.p, "subnet", itf.subnet, f"{where}.subnet", True
                    ).id
                else:
                    port = self.tables.lookup(self.topo, self.p, "port", itf.port, f"{where}.port", True).id
                made = self._add(
                    ops.add_router_interface(
                        self.topo,
                        router,
                        subnet,
                        port,
                        _port_id(router.id, subnet, port),
                        self._rev,
                        self._now,
                    )
                )
                matched.add(made[0][1])
                changed.append(apb.FieldChange(field=where, before="null", after=_js(_itf_dict(itf))))
            removed = [x for x in have if x.id not in matched]
        if "routes" in entry.raw:
            routes = tuple((r.destination, r.nexthop) for r in entry.msg.routes)  # type: ignore[attr-defined]
            router = self.topo.routers[router.id]
            now = tuple(router.routes)
            if routes != now:
                self._add(ops.update_router(self.topo, router, {"routes": routes}, self._rev, self._now))
                changed.append(
                    apb.FieldChange(field="routes", before=_js(_routes(now)), after=_js(_routes(routes)))
                )
        for gone in removed:
            router = self.topo.routers[router.id]
            self._add(ops.remove_router_interface(self.topo, router, "", gone.id, self._rev, self._now))
            subnet = gone.fixed_ips[0][0] if gone.fixed_ips else ""
            changed.append(
                apb.FieldChange(
                    field="interfaces",
                    before=_js({"subnet": convert.name_of("subnet", subnet)}),
                    after="null",
                )
            )
        if not changed:
            return
        last = self.outcome.objects[-1] if self.outcome.objects else None
        if last is not None and last.name == entry.name:
            last.fields.extend(changed)  # the router's own create or update
        else:
            self.outcome.objects.append(
                apb.ObjectChange(
                    action=apb.ObjectChange.UPDATE,
                    kind="router",
                    name=entry.name,
                    path=entry.path,
                    tenant=router.tenant,
                    fields=changed,
                )
            )

    # ------------------------------------------------------------------------------------------ prune, marks

    def _tenants(self) -> set[str]:
        """Whose applied objects this Apply answers for: the caller's; an admin's also every tenant the
        document's objects are in (as the model has them, or as the document asks)."""
        out = {self.p.tenant}
        if self.p.admin:
            for entry in self.entries:
                rec = self.topo.table(entry.spec.kind).get(entry.ident)
                if rec is not None:
                    out.add(rec.tenant)
                elif isinstance(entry.raw.get("tenant"), str) and entry.raw["tenant"]:
                    out.add(entry.raw["tenant"])
        return out

    def _doomed(self) -> list[tuple[str, str]]:
        """The applied objects of the tenants this Apply answers for that its document lacks, in the order
        they can go (dependents first)."""
        rank = {s.kind: i for i, s in enumerate(ordered_specs(self.tables.specs))}
        named = {(e.spec.kind, e.ident) for e in self.entries}
        doomed = []
        for tenant in sorted(self._scope):
            marked = self.topo.applied_sets.get(tenant)
            for item in marked.objects if marked is not None else ():
                kind, _slash, ident = item.partition("/")
                if kind in rank and (kind, ident) not in named:
                    doomed.append((kind, ident))
        return sorted(doomed, key=lambda ki: (-rank[ki[0]], ki[1]))

    def _prune(self, doomed: list[tuple[str, str]], final: bool) -> list[tuple[str, str]]:
        """Delete `doomed`. Before the document's objects are written (not `final`) a deletion the model
        refuses (still in use by something the document changes) is put back and returned, to be done
        after them; then a refusal refuses the Apply. Deleting first keeps a new port from taking an
        address on a subnet about to go; deleting last lets the document first drop its references."""
        later = []
        for kind, ident in doomed:
            rec = self.topo.table(kind).get(ident)
            if rec is None or not self.p.can_see(rec.tenant):
                continue  # gone already (deleted with its parent, or by hand)
            spec = self.tables.specs[kind]
            name = _name_of(kind, rec)
            mark = len(self._log)
            try:
                if isinstance(rec, Router):
                    for port in self.topo.router_ports(ident):
                        if port.device_owner == OWNER_ROUTER_INTERFACE:
                            router = self.topo.routers[ident]
                            self._add(
                                ops.remove_router_interface(
                                    self.topo, router, "", port.id, self._rev, self._now
                                )
                            )
                self._add(spec.delete(self._call(spec, None), self.topo.table(kind)[ident], False))
            except ApiError as err:
                if not final:
                    self._undo_to(mark)
                    later.append((kind, ident))
                    continue
                err.message = f"prune {name}: {err.message}"
                err.metadata = {**err.metadata, "pruning": name}
                raise
            self.outcome.deleted.append((kind, ident))
            self.outcome.objects.append(
                apb.ObjectChange(action=apb.ObjectChange.DELETE, kind=kind, name=name, tenant=rec.tenant)
            )
        return later

    def _undo_to(self, mark: int) -> None:
        undone, self._log = self._log[mark:], self._log[:mark]
        inverse = [(k, i, new, old) for k, i, old, new in reversed(undone)]
        if self.topo.keeps_trial:
            self.topo.try_changes(inverse)
        else:
            self.topo.apply(inverse, self._rev)

    def _mark(self) -> None:
        """The tenants' AppliedSets: what they had, plus what this Apply created, less what is gone."""
        touched: dict[str, set[str]] = {}
        for kind, ident in self.outcome.created:
            rec = self.topo.table(kind).get(ident)
            if rec is not None:
                touched.setdefault(rec.tenant, set()).add(f"{kind}/{ident}")
        if self.prune:
            for tenant in self._scope:
                touched.setdefault(tenant, set())
        for tenant, created in sorted(touched.items()):
            old = self.topo.applied_sets.get(tenant)
            items = set(old.objects if old is not None else ()) | created
            kept = tuple(sorted(i for i in items if _exists(self.topo, i)))
            if old is not None and old.objects == kept:
                continue
            if old is None and not kept:
                continue
            new = AppliedSet(
                id=tenant,
                objects=kept,
                revision=self._rev,
                create_time=old.create_time if old is not None else self._now,
                update_time=self._now,
            )
            self._add([("applied_set", tenant, old, new)])


_DEFAULTS: dict[type, dict[str, Any]] = {}


def _as_dict(msg: Message, fields: Iterable[str]) -> dict[str, Any]:
    """`msg`'s `fields` in their JSON form, unset ones as their defaults: what MessageToDict with
    always_print_fields_with_no_presence gives for them, at a fraction of its cost (only these are walked)."""
    kind = type(msg)
    defaults = _DEFAULTS.get(kind)
    if defaults is None:
        defaults = _DEFAULTS[kind] = json_format.MessageToDict(kind(), **_DICT_OPTS)
    part = kind()
    for name in fields:
        fd = msg.DESCRIPTOR.fields_by_name.get(name)
        if fd is None or (fd.has_presence and not msg.HasField(name)):
            continue
        value = getattr(msg, name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            getattr(part, name).update(value)
        elif fd.is_repeated:
            getattr(part, name).extend(value)
        elif fd.message_type is not None:
            getattr(part, name).CopyFrom(value)
        else:
            setattr(part, name, value)
    out = dict(defaults)
    out.update(json_format.MessageToDict(part, preserving_proto_field_name=True))
    return out


def _exists(topo: Topology, item: str) -> bool:
    kind, _slash, ident = item.partition("/")
    try:
        return ident in topo.table(kind)
    except KeyError:  # a kind whose plug-in is gone
        return False


def _name_of(kind: str, rec: Any) -> str:
    if kind == "member":
        return f"pools/{rec.pool_id}/members/{rec.id}"
    return convert.name_of(kind, rec.id)


def _group_name(gid: str) -> str:
    return convert.name_of("security_group", gid)


def _ref(name: str, kind: str, field_path: str) -> str:
    return convert.parse_name(kind, name, field_path) if name else ""


def _port_id(router_id: str, subnet_id: str, port_id: str) -> str:
    """A new interface port's id, the same for the same router and subnet (a plan and its commit agree)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sdn:router-interface:{router_id}:{subnet_id}:{port_id}"))


def _itf_dict(itf: Any) -> dict[str, str]:
    return {"subnet": itf.subnet} if itf.subnet else {"port": itf.port}


def _routes(routes: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"destination": d, "nexthop": n} for d, n in routes]


def _js(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def collapse(changes: list[Change]) -> list[Change]:
    """One change per record: the first old, the last new, at the record's first place; a record created
    and deleted in the same write is dropped, one changed and changed back too."""
    at: dict[tuple[str, str], int] = {}
    out: list[Change] = []
    for kind, ident, old, new in changes:
        i = at.get((kind, ident))
        if i is None:
            at[(kind, ident)] = len(out)
            out.append((kind, ident, old, new))
        else:
            out[i] = (kind, ident, out[i][2], new)
    return [c for c in out if c[2] is not c[3] and not (c[2] is None and c[3] is None)]


# ---------------------------------------------------------------------------------------------- export


def export(tables: Tables, topo: Topology, p: Principal, tenant: str = "") -> dict[str, Any]:
    """The objects `p` owns (an admin: every tenant's, or `tenant`'s) as an Apply document: applied back to
    the same model it is an empty plan. Ports the controller makes for routers' gateways, floating IPs and
    load balancers, and router interfaces made by subnet, are left out (their owners bring them back)."""
    out: dict[str, list[dict[str, Any]]] = {}
    defaults = {gid: topo.security_groups[gid] for gid in topo.default_groups.values()}
    for spec in ordered_specs(tables.specs):
        rows = []
        for rec in sorted(topo.table(spec.kind).values(), key=lambda r: r.id):
            if not p.can_see(rec.tenant) or (tenant and rec.tenant != tenant):
                continue
            if (isinstance(rec, Port) and _implied(topo, rec)) or rec.id in defaults:
                continue
            if spec.kind == "security_group_rule" and _made_with_its_group(topo, rec):
                continue  # one of the rules the server gives a new group (egress; a default group's ingress)
            rows.append(_exported(tables, spec, rec, p))
        if rows:
            out[spec.list_field] = rows
    # the default groups by the name that means "this tenant's default group", wherever it is
    text = json.dumps(out)
    for gid in defaults:
        text = text.replace(json.dumps(_group_name(gid)), DEFAULT_GROUP)
    return dict(json.loads(text))


def _made_with_its_group(topo: Topology, rule: Any) -> bool:
    """A rule the server made with its group (same write, and no Apply named it)."""
    group = topo.security_groups.get(rule.security_group_id)
    if group is None or group.create_time != rule.create_time:
        return False
    applied = topo.applied_sets.get(rule.tenant)
    return applied is None or f"security_group_rule/{rule.id}" not in applied.objects


def _implied(topo: Topology, port: Port) -> bool:
    if port.device_owner in IMPLIED_OWNERS:
        return True
    if port.device_owner == OWNER_ROUTER_INTERFACE and port.fixed_ips:
        subnet = topo.subnets.get(port.fixed_ips[0][0])
        return subnet is not None and subnet.gateway_ip == port.fixed_ips[0][1]
    return False


def _exported(tables: Tables, spec: Resource, rec: Any, p: Principal) -> dict[str, Any]:
    shown = tables.show(spec, rec)
    row = json_format.MessageToDict(shown, preserving_proto_field_name=True)
    for name in list(row):
        if (name in spec.output_only or name in SERVER_FIELDS) and name not in ("name", "interfaces"):
            del row[name]
    row["name"] = _name_of(spec.kind, rec)
    if not p.admin:
        row.pop("tenant", None)
        if spec.kind == "network":
            row.pop("segment_id", None)
    if spec.kind == "port":
        row.pop("binding_chassis", None)  # where it is bound now; a pin (admins') is requested_chassis
        if rec.requested_chassis and p.admin:
            row["binding_chassis"] = convert.name_of("chassis", rec.requested_chassis)
        if row.get("device_owner") == OWNER_ROUTER_INTERFACE:  # an interface by port: the router's
            row.pop("device_owner", None)
            row.pop("device_id", None)
    if spec.kind == "router":
        gw = row.get("external_gateway")
        if isinstance(gw, dict):
            gw.pop("port", None)
        row["interfaces"] = sorted(
            (
                {"subnet": i["subnet"]} if _by_subnet(tables, i) else {"port": i["port"]}
                for i in row.get("interfaces", [])
            ),
            key=lambda i: json.dumps(i, sort_keys=True),
        )
        if not row["interfaces"]:
            del row["interfaces"]
    return row


def _by_subnet(tables: Tables, itf: Mapping[str, Any]) -> bool:
    port = tables.state.topology.ports.get(str(itf.get("port", "")).removeprefix("ports/"))
    return port is None or _implied(tables.state.topology, port)


# ---------------------------------------------------------------------------------------------- service


def _struct(document: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(document)
    return out


class ApplyService(apb_grpc.ApplyServiceServicer):
    """Apply and Export over the TopologyService's tables (its specs, plug-ins' included, and its write)."""

    def __init__(self, tables_of: Callable[[], Tables], max_objects: int = DEFAULT_MAX_OBJECTS) -> None:
        self._tables_of = tables_of
        self.max_objects = max_objects

    def Apply(self, request: apb.ApplyRequest, context: grpc.ServicerContext) -> apb.ApplyResponse:
        p = principal()
        tables = self._tables_of()
        document = json_format.MessageToDict(request.document)
        specs = ordered_specs(tables.specs)
        entries = parse(document, specs, self.max_objects)
        for entry in entries:  # acting for another tenant: refused before anything is read
            tenant = getattr(entry.msg, "tenant", "") if "tenant" in entry.raw else ""
            if tenant and tenant != p.tenant:
                try:
                    admin_only(p, "tenant", "acting for another tenant")
                except ApiError as err:
                    raise at_path(err, entry) from None
        applier = Applier(tables, p, entries, request.prune)
        write = budgeted(applier, tables.flow_budget)
        plan = None
        if request.validate_only:
            revision, changes, plan = tables.state.dry_run(write, tables.planner)
        else:
            revision, changes = tables.state.write(write)
        response = apb.ApplyResponse(
            revision=revision,
            changes=applier.outcome.objects if changes else [],
            objects=len(entries),
            applied=bool(changes) and not request.validate_only,
        )
        if plan is not None:
            response.plan.CopyFrom(plan)
        elif request.validate_only:
            response.plan.CopyFrom(pb.Plan(revision=revision))
        return response

    def Export(self, request: apb.ExportRequest, context: grpc.ServicerContext) -> apb.ExportResponse:
        p = principal()
        if request.tenant and request.tenant != p.tenant:
            admin_only(p, "tenant", "exporting another tenant's objects")
        tables = self._tables_of()
        with tables.state.lock:
            document = export(tables, tables.state.topology, p, request.tenant)
            revision = tables.state.revision
        return apb.ExportResponse(document=_struct(document), revision=revision)

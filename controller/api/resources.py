"""Resources as tables (AIP-style): one frozen `Resource` spec per kind, and the standard methods (Create with
client ids and validate_only, Get, List with paging and filters, Update with a FieldMask, Delete with force)
written once over the specs in `Tables`. A kind's special behaviour is a hook on its spec; custom methods
(AddRouterInterface, WaitRealized, Trace, ...) stay explicit in their services and use the same plumbing.

The API layer owns the request's shape: names, the FieldMask, paging, tenant scope. topology.ops owns the
model's invariants and names a refused field relative to the resource ("cidr"); `Tables` puts it under the
request's field ("subnet.cidr") in one place (`prefixed`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from controller.api import convert
from controller.api.auth import Principal
from controller.api.flow_budget import budgeted
from controller.api.interceptors import add_trailing, principal
from proto.sdn.v1 import topology_pb2 as pb
from topology import errors, ops
from topology import ops_security as sec
from topology.errors import ApiError
from topology.model import Change, Topology
from topology.records import INTERNAL_KINDS, Chassis, Network, Record, Subnet
from topology.state import State

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

WriteFn = Callable[[Topology, int, float], list[Change]]
Planner = Callable[[int, list[Change]], pb.Plan]


class Scope(Enum):
    TENANT = "tenant"  # owned by a tenant: seen by it (and the operator), changed by it
    ADMIN = "admin"  # the operator's only (chassis)


def visible(p: Principal, rec: Record, networks: Mapping[str, Any] | None = None) -> bool:
    """May `p` see `rec`? External and shared networks are seen by every tenant, and so are their subnets
    (as Neutron shows them: a tenant attaching a port to a shared network picks among its subnets) when
    `networks` (the model's network table) is given."""
    if rec.KIND in INTERNAL_KINDS:  # the controller's own records (neighbours, gateway holds): not API ones
        return False
    if isinstance(rec, Chassis):
        return p.admin
    if p.can_see(rec.tenant):
        return True
    if isinstance(rec, Network):
        return rec.external or rec.shared
    if isinstance(rec, Subnet) and networks is not None:
        net = networks.get(rec.network_id)
        return net is not None and (net.external or net.shared)
    return False


def admin_only(p: Principal, field_path: str, what: str) -> None:
    if not p.admin:
        raise errors.permission_denied(field_path, f"{what} is admin only")


@dataclass(frozen=True)
class Parent:
    """The kind a resource lives under, and how a List request names it: only children of that parent are
    listed (all of them without one, unless `required`). The page token binds the parent's id."""

    kind: str  # "network"
    request_field: str  # the List request's field naming it: "network" ("parent" for members)
    record_field: str  # the child record's field holding its id: "network_id"
    token_key: str = ""  # its key in the page token's filters (default: request_field)
    required: bool = False  # the parent must be given and visible to the caller (NOT_FOUND otherwise)


@dataclass(frozen=True)
class Call:
    """One standard method call inside its write: what a hook needs (caller, request, model, revision)."""

    tables: Tables
    spec: Resource
    p: Principal
    request: Any
    topo: Topology
    rev: int
    now: float

    def new_id(self) -> str:
        """The id of the record a Create makes: the client's `<kind>_id` if given (checked), else a UUID."""
        path = f"{self.spec.kind}_id"
        return ops.new_id(self.topo, self.spec.kind, getattr(self.request, path), path)

    def get(self, kind: str, name: str, field_path: str) -> Any:
        """The visible record `name` of `kind` (NOT_FOUND otherwise)."""
        return self.tables.lookup(self.topo, self.p, kind, name, field_path, owned=False)

    def owned(self, kind: str, name: str, field_path: str) -> Any:
        """The record `name` of `kind`, which the caller may change (PERMISSION_DENIED: it only reads it)."""
        return self.tables.lookup(self.topo, self.p, kind, name, field_path, owned=True)

    def tenant_for(self, requested: str, field_path: str) -> str:
        """The tenant a new record belongs to: the caller's, or (admin only) the one asked for."""
        if requested and requested != self.p.tenant:
            admin_only(self.p, field_path, "acting for another tenant")
            ops.check_id(requested, field_path)
            return requested
        return self.p.tenant


#: Create: build the record from the message (names resolved, ids from call.new_id()) and call the model op
CreateHook = Callable[[Call, Any], list[Change]]
#: Update: the model op over the record and the mask's fields (mutable ones: check_mask refuses the rest)
UpdateHook = Callable[[Call, Any, dict[str, Any]], list[Change]]
#: Delete: the model op over the record; the bool is the request's force (False where it has none)
DeleteHook = Callable[[Call, Any, bool], list[Change]]
#: Update: a mutable field's value for the record, from the message (default: the message's field as is)
FieldValue = Callable[[Call, Any], Any]
#: Update: refuse some paths for this caller before anything is converted (admin-only fields)
CheckPaths = Callable[[Call, Any, Any, list[str]], None]
#: a List's filter: keep(record), and the filters as the page token binds them
KeepAndFilters = tuple[Callable[[Any], bool], dict[str, str]]
#: List: the filter from the request's filter fields
ListFilter = Callable[["Tables", Principal, Any], KeepAndFilters]
#: before each standard method ("create", "get", "list", "update", "delete"), outside the write
Before = Callable[["Tables", Principal, Any, str], None]
#: the API message of a record, as `changes` (of a write, possibly a dry run) leave the model around it
Show = Callable[["Tables", Any, Sequence[Change]], Message]
#: a lookup by name other than "<collection>/<id>" in the kind's table: (tables, topo, p, name, path, owned)
Lookup = Callable[["Tables", Topology, Principal, str, str, bool], Any]


@dataclass(frozen=True)
class Resource:
    """A resource kind as data. `kind` is the model's table and the request's field ("floating_ip": the
    request has `floating_ip` and `floating_ip_id`); `plural` names the List RPC and its response. Names are
    "{convert.COLLECTION[kind]}/{id}" unless `lookup` reads them otherwise ("pools/{pool}/members/{id}")."""

    kind: str
    plural: str  # "FloatingIps": ListFloatingIps, ListFloatingIpsResponse.floating_ips
    to_pb: Callable[[Any], Message]
    create: CreateHook
    delete: DeleteHook
    update: UpdateHook | None = None  # None: no Update (security group rules)
    mutable: frozenset[str] = frozenset()  # FieldMask paths an Update may name (the model op's fields)
    immutable: frozenset[str] = frozenset()  # paths set at create only: refused by name in a mask
    output_only: frozenset[str] = frozenset()  # set by the server: refused in a mask, ignored in a message
    # secrets (a PSK): written, never shown; Apply compares them with the record, and never prints them
    write_only: frozenset[str] = frozenset()
    values: Mapping[str, FieldValue] = field(default_factory=dict)
    check_paths: CheckPaths | None = None
    parent: Parent | None = None
    list_filter: ListFilter | None = None  # instead of the parent's (ports: network, device, chassis)
    scope: Scope = Scope.TENANT
    before: Before | None = None
    show: Show | None = None  # default: to_pb(record)
    lookup: Lookup | None = None
    pb_module: Any = None  # the module of the List response messages (default: sdn.v1 topology_pb2)

    @property
    def rpc(self) -> str:
        """ "floating_ip" -> "FloatingIp": CreateFloatingIp, GetFloatingIp, ..."""
        return "".join(w.capitalize() for w in self.kind.split("_"))

    @property
    def list_field(self) -> str:
        """ "FloatingIps" -> "floating_ips", the repeated field of the List response."""
        return "".join(f"_{c.lower()}" if c.isupper() else c for c in self.plural).lstrip("_")


def request_level(specs: Sequence[Resource]) -> tuple[str, ...]:
    """Field paths that name the request, not the resource: left as they are in errors."""
    return ("update_mask", "parent", *(f"{s.kind}_id" for s in specs), *(f"{s.kind}." for s in specs))


def prefixed(err: ApiError, prefix: str, keep: tuple[str, ...]) -> ApiError:
    """`err` with the model's field paths (relative to the resource) named from the request: under `prefix`
    unless they already name the request (`keep`)."""
    err.violations = [(f if not f or f.startswith(keep) else prefix + f, d) for f, d in err.violations]
    return err


def page(items: list[Any], page_size: int, page_token: str, filters: dict[str, str]) -> tuple[list[Any], str]:
    """Keyset pagination by id; the token binds the filters so a token cannot be replayed on another query."""
    if page_size < 0:
        raise errors.invalid("page_size", "must not be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    fingerprint = hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:16]
    after = ""
    if page_token:
        try:
            tok = json.loads(base64.urlsafe_b64decode(page_token.encode()))
            after, fp = tok["after"], tok["f"]
        except (ValueError, KeyError, TypeError):
            raise errors.invalid("page_token", "not a token this server issued") from None
        if fp != fingerprint:
            raise errors.invalid("page_token", "was issued for a different query")
    ordered = sorted((r for r in items if r.id > after), key=lambda r: r.id)
    chosen = ordered[:size]
    token = ""
    if len(ordered) > size:
        after_last = json.dumps({"after": chosen[-1].id, "f": fingerprint})
        token = base64.urlsafe_b64encode(after_last.encode()).decode()
    return chosen, token


def mask(
    msg: Any, update_mask: Any, current: Any, output_only: frozenset[str], mutable: frozenset[str]
) -> list[str]:
    """Explicit paths as given ("*" = every mutable field); an empty mask = every populated field,
    ignoring output-only fields and immutable fields whose value is unchanged (AIP-134)."""
    if update_mask.paths:
        paths = list(update_mask.paths)
        return sorted(mutable) if "*" in paths else paths
    out = []
    for fd, value in msg.ListFields():
        if fd.name in ("name", "etag") or fd.name in output_only:
            continue
        if fd.name not in mutable and value == getattr(current, fd.name):
            continue
        out.append(fd.name)
    return out


def check_mask(spec: Resource, paths: Sequence[str]) -> None:
    """Every path of an update is a mutable field of the resource (INVALID_ARGUMENT naming the mask)."""
    for path in paths:
        if path in spec.immutable:
            raise errors.invalid("update_mask", f"{path!r} is immutable", reason="IMMUTABLE_FIELD")
        if path in spec.output_only:
            raise errors.invalid("update_mask", f"{path!r} is output only", reason="OUTPUT_ONLY_FIELD")
        if path not in spec.mutable:
            raise errors.invalid("update_mask", f"unknown field {path!r}", reason="UNKNOWN_FIELD")


def etag(rec: Record) -> str:
    """A resource's etag (AIP-154): the revision of its last change, the same through every controller."""
    return str(rec.revision)


def check_etag(rec: Record, given: str, field_path: str) -> None:
    """ABORTED if the client read `rec` at another etag than it has now (a read-modify-write lost a race:
    re-read and retry). Checked inside the write, so it holds against every controller's writes."""
    if given and given != etag(rec):
        raise ApiError(
            "ABORTED",
            "ETAG_MISMATCH",
            f"{rec.KIND} {rec.id!r} changed since it was read (etag {given}, now {etag(rec)}): read it again",
            [(field_path, "stale")],
            metadata={"etag": etag(rec)},
        )


def _answer(changes: Sequence[Change], kind: str, ident: str | None) -> Any:
    """The record of `kind` named `ident` (None: the last one created) as the changes leave it."""
    if ident is None:
        ident = next(
            (i for k, i, old, new in reversed(changes) if k == kind and old is None and new is not None), None
        )
    return next(
        (new for k, i, _old, new in reversed(changes) if k == kind and i == ident and new is not None), None
    )


class Tables:
    """The standard methods over the specs, and the write every method (custom ones too) goes through."""

    def __init__(
        self, state: State, specs: Sequence[Resource], flow_budget: int = sec.DEFAULT_FLOW_BUDGET
    ) -> None:
        self.state = state
        self.specs = {s.kind: s for s in specs}
        self.request_level = request_level(specs)
        self.flow_budget = flow_budget  # per tenant and chassis, security-group flows (0: none)
        # builds the Plan of a validate_only write (set when a dataplane runs; else plans are empty)
        self.planner: Planner | None = None

    def add_specs(self, specs: Sequence[Resource]) -> None:
        """More kinds (a plug-in's): their standard methods share this store and write path."""
        self.specs.update({s.kind: s for s in specs})
        self.request_level = request_level(list(self.specs.values()))

    # ------------------------------------------------------------------------------------------ plumbing

    def write(
        self, fn: WriteFn, request: Any = None, context: grpc.ServicerContext | None = None, prefix: str = ""
    ) -> list[Change]:
        """A write, or with request.validate_only (AIP-163) a dry run whose Plan goes in the trailer. Either
        is refused when it takes a tenant's security-group flows over the flow budget. With `prefix`, the
        model's field paths in a refusal are put under it."""
        fn = budgeted(fn, self.flow_budget)
        try:
            if request is None or not getattr(request, "validate_only", False):
                return self.state.write(fn)[1]
            revision, changes, plan = self.state.dry_run(fn, self.planner)
        except ApiError as err:
            raise (prefixed(err, prefix, self.request_level) if prefix else err) from None
        if context is not None:
            plan = plan if plan is not None else pb.Plan(revision=revision)
            add_trailing(context, "sdn-plan-bin", plan.SerializeToString())
        return changes

    def lookup(
        self,
        topo: Topology,
        p: Principal,
        kind: str,
        name: str,
        field_path: str = "name",
        owned: bool = False,
    ) -> Any:
        """The record `name` of `kind` as `p` may see it (NOT_FOUND otherwise); with `owned`, one it may
        change (PERMISSION_DENIED for a tenant on the operator's records it can read)."""
        spec = self.specs.get(kind)
        if spec is not None and spec.lookup is not None:
            return spec.lookup(self, topo, p, name, field_path, owned)
        ident = convert.parse_name(kind, name, field_path)
        rec = topo.table(kind).get(ident)
        if spec is not None and spec.scope is Scope.ADMIN and not p.admin:
            raise errors.permission_denied(field_path, f"{kind} are admin only")
        if rec is None or not visible(p, rec, topo.networks):
            raise errors.not_found(kind, ident)
        if owned and not p.can_see(rec.tenant):
            raise errors.permission_denied(
                field_path,
                f"{kind} {rec.id!r} belongs to the operator or is shared by it; tenants may only read it",
            )
        return rec

    def show(self, spec: Resource, rec: Any, changes: Sequence[Change] = ()) -> Message:
        return spec.show(self, rec, changes) if spec.show is not None else spec.to_pb(rec)

    def _call(self, spec: Resource, p: Principal, request: Any, topo: Topology, rev: int, now: float) -> Call:
        return Call(self, spec, p, request, topo, rev, now)

    def _start(self, spec: Resource, request: Any, method: str) -> Principal:
        p = principal()
        if spec.before is not None:
            spec.before(self, p, request, method)
        return p

    # -------------------------------------------------------------------------------------- standard methods

    def create(self, spec: Resource, request: Any, context: grpc.ServicerContext) -> Message:
        p = principal()
        if spec.scope is Scope.ADMIN:
            admin_only(p, "", spec.kind)
        if spec.before is not None:
            spec.before(self, p, request, "create")
        message = getattr(request, spec.kind)

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            return spec.create(self._call(spec, p, request, topo, rev, now), message)

        changes = self.write(fn, request, context, prefix=spec.kind + ".")
        rec = _answer(changes, spec.kind, None)
        assert rec is not None, f"a create of {spec.kind} made none"
        return self.show(spec, rec, changes)

    def get(self, spec: Resource, request: Any, context: grpc.ServicerContext) -> Message:
        p = self._start(spec, request, "get")
        with self.state.lock:
            rec = self.lookup(self.state.topology, p, spec.kind, request.name)
            return self.show(spec, rec)

    def list(self, spec: Resource, request: Any, context: grpc.ServicerContext) -> Message:
        p = self._start(spec, request, "list")
        if spec.list_filter is not None:
            keep, filters = spec.list_filter(self, p, request)
        elif spec.parent is not None:
            keep, filters = self._children_of(spec.parent, p, request)
        else:
            keep, filters = None, {}
        tenant = ""
        if spec.scope is Scope.ADMIN:
            admin_only(p, "", spec.kind)
        else:
            tenant = request.tenant
            if tenant and not p.admin and tenant != p.tenant:
                raise errors.permission_denied("tenant", "filtering by another tenant is admin only")
            filters = {"tenant": tenant, **filters}
        tags = frozenset(getattr(request, "tags", ()))  # Neutron's `tags`: every one of them
        if tags:
            filters = {**filters, "tags": ",".join(sorted(tags))}
        with self.state.lock:
            items = [
                r
                for r in self.state.topology.table(spec.kind).values()
                if visible(p, r, self.state.topology.networks)
                and (not tenant or r.tenant == tenant)
                and (keep is None or keep(r))
                and tags <= frozenset(getattr(r, "tags", ()))
            ]
        chosen, token = page(items, request.page_size, request.page_token, filters)
        module = spec.pb_module or pb
        response: Message = getattr(module, f"List{spec.plural}Response")(next_page_token=token)
        getattr(response, spec.list_field).extend([self.show(spec, r) for r in chosen])
        return response

    def _children_of(self, parent: Parent, p: Principal, request: Any) -> KeepAndFilters:
        name = getattr(request, parent.request_field)
        ident = ""
        if parent.required:
            with self.state.lock:
                ident = self.lookup(self.state.topology, p, parent.kind, name, parent.request_field).id
        elif name:
            ident = convert.parse_name(parent.kind, name, parent.request_field)
        field_name = parent.record_field
        return (
            (lambda r: not ident or getattr(r, field_name) == ident),
            {parent.token_key or parent.request_field: ident},
        )

    def update(self, spec: Resource, request: Any, context: grpc.ServicerContext) -> Message:
        assert spec.update is not None
        update = spec.update
        p = self._start(spec, request, "update")
        message = getattr(request, spec.kind)
        target: list[str] = []

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            call = self._call(spec, p, request, topo, rev, now)
            old = call.owned(spec.kind, message.name, f"{spec.kind}.name")
            check_etag(old, message.etag, f"{spec.kind}.etag")
            target.append(old.id)
            paths = mask(message, request.update_mask, self.show(spec, old), spec.output_only, spec.mutable)
            if spec.check_paths is not None:
                spec.check_paths(call, old, message, paths)
            fields = {path: self._value(spec, call, message, path) for path in paths if path in spec.mutable}
            check_mask(spec, paths)
            return update(call, old, fields)

        changes = self.write(fn, request, context, prefix=spec.kind + ".")
        rec = _answer(changes, spec.kind, target[-1]) if target else None
        if rec is None:
            raise errors.invalid("update_mask", "nothing to update")
        return self.show(spec, rec, changes)

    @staticmethod
    def _value(spec: Resource, call: Call, message: Any, path: str) -> Any:
        convert_value = spec.values.get(path)
        return convert_value(call, message) if convert_value is not None else getattr(message, path)

    def delete(self, spec: Resource, request: Any, context: grpc.ServicerContext) -> empty_pb2.Empty:
        p = self._start(spec, request, "delete")
        force = bool(getattr(request, "force", False))

        def fn(topo: Topology, rev: int, now: float) -> list[Change]:
            call = self._call(spec, p, request, topo, rev, now)
            old = call.owned(spec.kind, request.name, "name")
            check_etag(old, getattr(request, "etag", ""), "etag")
            return spec.delete(call, old, force)

        self.write(fn, request, context)
        return empty_pb2.Empty()


def serve(service: type, specs: Sequence[Resource]) -> None:
    """Give `service` (a generated servicer class whose instances have `tables`) the standard methods of
    `specs`: CreateX, GetX, ListXs, UpdateX (where the spec has one) and DeleteX: Tables' over the spec."""

    def method(
        spec: Resource, standard: Callable[..., Message]
    ) -> Callable[[Any, Any, grpc.ServicerContext], Message]:
        def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Message:
            return standard(self.tables, spec, request, context)

        return handler

    for spec in specs:
        rpcs = {
            f"Create{spec.rpc}": Tables.create,
            f"Get{spec.rpc}": Tables.get,
            f"List{spec.plural}": Tables.list,
            f"Delete{spec.rpc}": Tables.delete,
        }
        if spec.update is not None:
            rpcs[f"Update{spec.rpc}"] = Tables.update
        for rpc, standard in rpcs.items():
            handler = method(spec, standard)
            handler.__name__ = handler.__qualname__ = rpc
            setattr(service, rpc, handler)

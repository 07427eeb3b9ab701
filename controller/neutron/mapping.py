"""How one resource kind looks in Neutron's JSON: a `Kind` is a list of `Attr`s, each reading its value from
the gRPC message (`get`) and, if writable, setting it on a request's message (`put`, returning the message's
field paths it set: an update's FieldMask). Values are converted here (names "networks/ID" <-> ids, null <->
unset); the tables behind them validate as they do for gRPC."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from controller.api import convert
from controller.api.auth import Principal
from controller.api.resources import Tables


@dataclass(frozen=True)
class View:
    """What rendering a record needs beyond its message: the caller (admin-only attributes) and the tables
    (attributes computed from other records, as a network's subnets)."""

    p: Principal
    tables: Tables


Getter = Callable[[View, Any], Any]  # (view, message) -> the JSON value
Putter = Callable[[Any, Any], list[str]]  # (message, JSON value) -> the message's field paths set


@dataclass(frozen=True)
class Attr:
    name: str  # Neutron's: "provider:network_type"
    get: Getter
    put: Putter | None = None  # None: read only (a request giving it is refused, as Neutron does)
    admin: bool = False  # shown to admins only (Neutron's default policy)
    accept: bool = False  # read only, but accepted (and ignored) in a create: ip_version on a subnet
    field: str = ""  # the message's field it sets: refusals naming that field name this attribute
    shown: bool = True  # False: input only (a message field Neutron carries in another attribute)
    # written by a call of its own after the record's write, given (tables, the record's id, the value):
    # an attribute that is another kind's record here (a port's qos_policy_id is a QoS binding)
    after: Callable[[Tables, str, Any], None] | None = None


#: a kind's own fix-up of a request body before its attributes are put (ICMP type/code in rules)
BodyHook = Callable[[dict[str, Any], bool], dict[str, Any]]


@dataclass(frozen=True)
class Kind:
    """One resource kind as Neutron (or Octavia) shows it, over the table `spec`."""

    spec: str  # the Tables spec kind: "floating_ip"
    member: str  # JSON key of one: "floatingip"
    collection: str  # URL segment and JSON key of many: "floatingips"
    prefix: str  # "/v2.0", "/v2.0/fwaas", "/v2.0/qos", "/v2/lbaas"
    attrs: tuple[Attr, ...]
    parent: str = ""  # members: the parent's URL segment ("pools"): /pools/{id}/members
    parent_kind: str = ""  # its table kind ("pool"); the List and Create requests' field names it
    body: BodyHook | None = None
    octavia: bool = False  # Octavia's error body
    aliases: tuple[str, ...] = ()  # more prefixes it is served under (Octavia: /v2 and /v2.0)
    parent_field: str = ""  # the message's field naming the parent, where names are not nested (QoS rules)
    fixed: tuple[tuple[str, str], ...] = ()  # message fields this collection holds one value of (rule type)

    @property
    def by_name(self) -> Mapping[str, Attr]:
        return {a.name: a for a in self.attrs}


class BadInput(Exception):
    """An attribute's value is not what Neutron accepts for it (400 InvalidInput)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"Invalid input for {name}. Reason: {reason}.")
        self.name = name


def ident(name: str) -> str:
    """The id in a resource name: "networks/ID" -> "ID", "pools/P/members/ID" -> "ID"."""
    return name.rpartition("/")[2]


# ------------------------------------------------------------------------------------------ JSON values


def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BadInput(name, f"'{value}' is not a valid boolean value")


def as_str(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadInput(name, f"'{value}' is not a valid string")
    return value


def as_int(name: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise BadInput(name, f"'{value}' is not an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadInput(name, f"'{value}' is not an integer") from None
    if number < 0:
        raise BadInput(name, f"'{value}' should be non-negative")
    return number


def as_list(name: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadInput(name, f"'{value}' is not a list")
    return value


def as_dict(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput(name, f"'{value}' is not a dictionary")
    return value


def timestamp(ts: Any) -> str | None:
    if not ts.seconds and not ts.nanos:
        return None
    return str(ts.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ"))


# ------------------------------------------------------------------------------------------ attribute kinds


def _set(field: str, convert_value: Callable[[str, Any], Any], name: str) -> Putter:
    def put(msg: Any, value: Any) -> list[str]:
        setattr(msg, field, convert_value(name, value))
        return [field]

    return put


def text(name: str, field: str = "", null: bool = False, admin: bool = False, ro: bool = False) -> Attr:
    """A string; with `null`, "" shows as null (and null sets "")."""
    f = field or name
    return Attr(
        name,
        lambda v, m: (getattr(m, f) or None) if null else getattr(m, f),
        None if ro else _set(f, as_str, name),
        admin,
        field=f,
    )


def number(name: str, field: str = "", null: bool = False, admin: bool = False, ro: bool = False) -> Attr:
    """An integer; with `null`, 0 shows as null (and null sets 0)."""
    f = field or name
    return Attr(
        name,
        lambda v, m: (getattr(m, f) or None) if null else getattr(m, f),
        None if ro else _set(f, as_int, name),
        admin,
        field=f,
    )


def flag(name: str, field: str = "", default: bool = True, ro: bool = False, admin: bool = False) -> Attr:
    """A bool (an `optional bool` in the message: unset shows as `default`)."""
    f = field or name

    def get(v: View, m: Any) -> bool:
        try:
            if not m.HasField(f):
                return default
        except ValueError:  # not an optional field: its value is what it is
            pass
        return bool(getattr(m, f))

    return Attr(name, get, None if ro else _set(f, as_bool, name), admin, field=f)


def ref(name: str, field: str, kind: str, ro: bool = False) -> Attr:
    """An id (another record's: the message holds its name "networks/ID"; null is none)."""

    def put(m: Any, value: Any) -> list[str]:
        setattr(m, field, convert.name_of(kind, as_str(name, value)))
        return [field]

    return Attr(name, lambda v, m: ident(getattr(m, field)) or None, None if ro else put, field=field)


def refs(name: str, field: str, kind: str) -> Attr:
    """A list of ids of another kind's records."""

    def put(m: Any, value: Any) -> list[str]:
        del getattr(m, field)[:]
        getattr(m, field).extend(convert.name_of(kind, as_str(name, x)) for x in as_list(name, value))
        return [field]

    return Attr(name, lambda v, m: [ident(x) for x in getattr(m, field)], put, field=field)


def strings(name: str, field: str = "") -> Attr:
    f = field or name

    def put(m: Any, value: Any) -> list[str]:
        del getattr(m, f)[:]
        getattr(m, f).extend(as_str(name, x) for x in as_list(name, value))
        return [f]

    return Attr(name, lambda v, m: list(getattr(m, f)), put, field=f)


@dataclass(frozen=True)
class Sub:
    """One key of the dicts in a list attribute: Neutron's key, the sub-message's field, and the kind of
    record it names (its value is an id then)."""

    key: str
    field: str
    kind: str = ""


def items(name: str, field: str, subs: Iterable[Sub]) -> Attr:
    """A list of dicts (repeated sub-messages): fixed_ips, allocation_pools, host_routes, ..."""
    keys = tuple(subs)

    def get(v: View, m: Any) -> list[dict[str, Any]]:
        out = []
        for item in getattr(m, field):
            out.append(
                {s.key: ident(getattr(item, s.field)) if s.kind else getattr(item, s.field) for s in keys}
            )
        return out

    def put(m: Any, value: Any) -> list[str]:
        repeated = getattr(m, field)
        del repeated[:]
        by_key = {s.key: s for s in keys}
        for entry in as_list(name, value):
            item = repeated.add()
            for k, x in as_dict(name, entry).items():
                s = by_key.get(k)
                if s is None:
                    raise BadInput(name, f"unrecognized key '{k}' (known: {', '.join(by_key)})")
                setattr(item, s.field, convert.name_of(s.kind, as_str(k, x)) if s.kind else as_str(k, x))
        return [field]

    return Attr(name, get, put, field=field)


def const(name: str, value: Any) -> Attr:
    """A value this project always has (Neutron's default), shown; in a request only that value is taken."""

    def put(m: Any, given: Any) -> list[str]:
        if given != value:
            raise BadInput(name, f"only {value!r} is supported here")
        return []

    return Attr(name, lambda v, m: value, put)


def computed(name: str, get: Getter, admin: bool = False) -> Attr:
    return Attr(name, get, None, admin)


def common(message: type[Message]) -> tuple[Attr, ...]:
    """id, the owner (tenant_id and project_id, as Neutron names it), timestamps and revision; name and
    description where `message` has them."""
    return common_attrs(has_field(message, "display_name"), has_field(message, "description"))


def common_attrs(name: bool, description: bool) -> tuple[Attr, ...]:
    def put_tenant(m: Any, value: Any) -> list[str]:
        m.tenant = as_str("tenant_id", value)
        return []  # the owner is chosen at create only (immutable)

    out = [
        Attr("id", lambda v, m: ident(m.name)),
        Attr("tenant_id", lambda v, m: m.tenant, put_tenant),
        Attr("project_id", lambda v, m: m.tenant, put_tenant),
        computed("created_at", lambda v, m: timestamp(m.create_time)),
        computed("updated_at", lambda v, m: timestamp(m.update_time)),
        computed("revision_number", lambda v, m: m.revision),
    ]
    if name:
        out.insert(1, text("name", "display_name"))
    if description:
        out.append(text("description"))
    return tuple(out)


def has_field(message: type[Message], field: str) -> bool:
    return field in message.DESCRIPTOR.fields_by_name

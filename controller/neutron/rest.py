"""The Neutron REST API as a WSGI application (Werkzeug), served by cheroot's thread pool.

Every route is generated from the kind mappings (kinds.py): list, show, create, update, delete per kind,
each calling the same `Tables` method the gRPC servicer calls (same validation, same tenant scope: the
caller named by X-Auth-Token is put in the CALLER contextvar as the gRPC interceptor does). The only custom
routes are Neutron's own: version discovery, extensions, and a router's add/remove_router_interface.

Why Werkzeug on cheroot: every handler here is sync code that blocks on the store, like the gRPC
servicers on their thread pool; a WSGI app on a threaded server fits that as is (an asyncio framework would
push each call to a thread anyway). Werkzeug gives routing, request parsing and responses without a
framework's globals; cheroot (CherryPy's server) is a maintained, pure-Python threaded WSGI server with TLS
built in (waitress, the other common choice, has no TLS).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from controller.api import convert
from controller.api.auth import Tokens
from controller.api.context import REQUEST
from controller.api.interceptors import CALLER, Caller
from controller.api.resources import MAX_PAGE_SIZE, Resource, Tables
from controller.logs import access
from controller.neutron import errors as nerrors
from controller.neutron import query as q
from controller.neutron.extensions import supported
from controller.neutron.mapping import BadInput, Kind, View, as_dict, as_str
from controller.neutron.mapping import ident as ident_of
from controller.pki import TlsFiles
from proto.sdn.v1 import topology_pb2 as pb
from topology.errors import ApiError

log = logging.getLogger(__name__)
V2 = "/v2.0"
JSON = "application/json"


class Refusal(Exception):
    """An HTTP refusal of the REST layer itself (a body that is not JSON, an unknown attribute)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


@dataclass(frozen=True)
class Route:
    kind: Kind | None
    action: str  # list, create, show, update, delete, versions, v2, extensions, extension, interface


RouterInterface = Callable[[Any, Any], pb.RouterInterface]  # (request, context) -> the interface


class NeutronApi:
    """The WSGI application: `kinds` over `tables`, callers authenticated by `tokens`."""

    def __init__(
        self,
        tables: Tables,
        tokens: Tokens,
        kinds: Sequence[Kind],
        add_interface: RouterInterface,
        remove_interface: RouterInterface,
    ) -> None:
        self.tables = tables
        self.tokens = tokens
        self.kinds = [k for k in kinds if k.spec in tables.specs]  # a plug-in's only when it is loaded
        self.served = frozenset(k.spec for k in self.kinds)
        self.interface = {"add_router_interface": add_interface, "remove_router_interface": remove_interface}
        rules: list[Rule] = [
            Rule("/", endpoint=Route(None, "versions"), methods=["GET"]),
            Rule(f"{V2}/", endpoint=Route(None, "v2"), methods=["GET"]),
            Rule(f"{V2}/extensions", endpoint=Route(None, "extensions"), methods=["GET"]),
            Rule(f"{V2}/extensions/<alias>", endpoint=Route(None, "extension"), methods=["GET"]),
        ]
        for kind in self.kinds:
            for prefix in (kind.prefix, *kind.aliases):
                rules += self._rules(kind, prefix)
        self.url_map = Map(rules, strict_slashes=False, merge_slashes=False)

    def _rules(self, kind: Kind, prefix: str) -> list[Rule]:
        """The standard routes of `kind` under `prefix`."""
        base = (
            f"{prefix}/{kind.parent}/<parent_id>/{kind.collection}"
            if kind.parent
            else f"{prefix}/{kind.collection}"
        )
        rules = [
            Rule(base, endpoint=Route(kind, "list"), methods=["GET"]),
            Rule(base, endpoint=Route(kind, "create"), methods=["POST"]),
            Rule(f"{base}/<ident>", endpoint=Route(kind, "show"), methods=["GET"]),
            Rule(f"{base}/<ident>", endpoint=Route(kind, "delete"), methods=["DELETE"]),
        ]
        if self.tables.specs[kind.spec].update is not None:
            rules.append(Rule(f"{base}/<ident>", endpoint=Route(kind, "update"), methods=["PUT"]))
        if kind.spec == "router":
            rules.append(Rule(f"{base}/<ident>/<action>", endpoint=Route(kind, "interface"), methods=["PUT"]))
        return rules

    # ------------------------------------------------------------------------------------------ WSGI

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        started = time.monotonic()
        response = self.dispatch(request)
        tenant = request.environ.get("sdn.tenant", "-")
        rid = response.headers.get("X-Openstack-Request-Id", "-")
        access(f"{request.method} {request.path}", tenant, str(response.status_code), started, rid)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        """The answer to `request` (the access line is written by __call__, with its status)."""
        rid = "req-" + str(uuid.uuid4())
        method = f"{request.method} {request.path}"
        who: Caller | None = None
        octavia = request.path.startswith("/v2/")
        try:
            try:
                route, args = self.url_map.bind_to_environ(request.environ).match()
            except NotFound:
                raise Refusal(404, "HTTPNotFound", "The resource could not be found.") from None
            except MethodNotAllowed:
                raise Refusal(405, "HTTPMethodNotAllowed", f"{request.method} is not allowed here") from None
            except HTTPException as exc:  # a redirect (trailing slash) or another routing answer
                return exc.get_response(request.environ)  # type: ignore[return-value]
            assert isinstance(route, Route)
            octavia = route.kind.octavia if route.kind is not None else octavia
            if route.kind is None and route.action in ("versions", "v2"):
                return self._json(200, getattr(self, f"_{route.action}")(request), rid)
            who = self._authenticate(request)
            token = CALLER.set(who)
            request_token = REQUEST.set(f"{method} {rid}")
            try:
                status, answer = self._serve(route, args, request, View(who.principal, self.tables))
            finally:
                REQUEST.reset(request_token)
                CALLER.reset(token)
            return self._json(status, answer, rid)
        except Refusal as err:
            return self._error(err.status, err.kind, err.message, rid, octavia)
        except BadInput as err:
            return self._error(400, "HTTPBadRequest", str(err), rid, octavia)
        except ApiError as err:
            kind = self._kind_of(request)
            attr_of = {a.field: a.name for a in kind.attrs if a.field} if kind is not None else {}
            status, etype, message = nerrors.from_api_error(err, attr_of, kind.spec if kind else "")
            return self._error(status, etype, message, rid, octavia)
        except (OSError, sqlite3.Error) as err:
            log.error("%s: storage failure: %s", method, err)
            return self._error(503, "ServiceUnavailable", "the store is unavailable; retry", rid, octavia)
        except Exception:
            log.exception("%s %s: internal error", method, rid)
            return self._error(500, "HTTPInternalServerError", f"internal error ({rid})", rid, octavia)
        finally:
            if who is not None:
                request.environ["sdn.tenant"] = who.principal.tenant + (
                    "(admin)" if who.principal.admin else ""
                )

    def _kind_of(self, request: Request) -> Kind | None:
        try:
            route, _ = self.url_map.bind_to_environ(request.environ).match()
        except HTTPException:
            return None
        return route.kind if isinstance(route, Route) else None

    def _authenticate(self, request: Request) -> Caller:
        token = request.headers.get("X-Auth-Token", "").strip()
        if not token:
            raise Refusal(401, "HTTPUnauthorized", "The request you have made requires authentication.")
        found = self.tokens.lookup(token)
        if found is None:
            raise Refusal(401, "HTTPUnauthorized", "The request you have made requires authentication.")
        return Caller(found, token)

    @staticmethod
    def _json(status: int, answer: Any, rid: str) -> Response:
        response = Response(
            b"" if answer is None else json.dumps(answer).encode(), status=status, content_type=JSON
        )
        if answer is None:
            response.headers.remove("Content-Type")
        response.headers["X-Openstack-Request-Id"] = rid
        return response

    def _error(self, status: int, kind: str, message: str, rid: str, octavia: bool) -> Response:
        return self._json(status, nerrors.body(kind, message, octavia, status), rid)

    # ------------------------------------------------------------------------------------------ routes

    def _serve(self, route: Route, args: Mapping[str, Any], request: Request, view: View) -> tuple[int, Any]:
        if route.kind is None:
            if route.action == "extensions":
                return 200, {"extensions": supported(self.served)}
            found = [e for e in supported(self.served) if e["alias"] == args["alias"]]
            if not found:
                raise Refusal(404, "ExtensionNotFound", f"Extension {args['alias']} could not be found.")
            return 200, {"extension": found[0]}
        kind = route.kind
        spec = self.tables.specs[kind.spec]
        parent = args.get("parent_id", "")
        if route.action == "list":
            return 200, self._list(kind, spec, parent, request, view)
        if route.action == "create":
            return 201, self._create(kind, spec, parent, self._body(request), view)
        name = self._name(kind, parent, args["ident"])
        fields = [f for v in request.args.getlist("fields") for f in v.split(",") if f]
        if route.action == "show":
            msg = self._in_collection(kind, spec, name, parent, args["ident"])
            return 200, {kind.member: q.project(self.render(kind, msg, view), fields)}
        if route.action != "interface" and (kind.fixed or kind.parent_field):
            self._in_collection(
                kind, spec, name, parent, args["ident"]
            )  # a rule of another type or policy: 404
        if route.action == "update":
            return 200, {
                kind.member: self._update(kind, spec, name, args["ident"], self._body(request), view)
            }
        if route.action == "delete":
            req = self._module(spec).__dict__[f"Delete{spec.rpc}Request"](name=name)
            if request.args.get("cascade", "").lower() == "true" and "force" in req.DESCRIPTOR.fields_by_name:
                req.force = True  # Octavia's cascade delete: the load balancer with its listeners, pools, ...
            self._by_name(lambda: self.tables.delete(spec, req, None), kind, args["ident"])
            return 204, None
        return 200, self._interface(kind, args["ident"], args["action"], self._body(request), view)

    def _in_collection(self, kind: Kind, spec: Resource, name: str, parent: str, ident: str) -> Any:
        """The record `name` if it is one of this collection's (its fixed fields, under `parent`); 404
        otherwise."""
        get = self._module(spec).__dict__[f"Get{spec.rpc}Request"]
        msg = self._by_name(lambda: self.tables.get(spec, get(name=name), None), kind, ident)
        if not self._belongs(kind, msg, parent):
            raise ApiError("NOT_FOUND", "NOT_FOUND", "", metadata={"kind": kind.spec, "id": ident})
        return msg

    @staticmethod
    def _belongs(kind: Kind, msg: Any, parent: str) -> bool:
        if any(getattr(msg, f) != v for f, v in kind.fixed):
            return False
        return not (kind.parent_field and parent and ident_of(getattr(msg, kind.parent_field)) != parent)

    @staticmethod
    def _module(spec: Resource) -> Any:
        return spec.pb_module or pb

    @staticmethod
    def _name(kind: Kind, parent: str, ident: str) -> str:
        if kind.parent_kind == "pool":
            return convert.member_name(parent, ident)
        return convert.name_of(kind.spec, ident)

    @staticmethod
    def _by_name(call: Callable[[], Any], kind: Kind, ident: str) -> Any:
        """`call`; a name the tables refuse as malformed is a resource that does not exist (404, so a
        client looking a resource up by name first and by id second gets Neutron's answer)."""
        try:
            return call()
        except ApiError as err:
            if err.code == "INVALID_ARGUMENT" and [f for f, _ in err.violations] == ["name"]:
                raise ApiError(
                    "NOT_FOUND", "NOT_FOUND", "", metadata={"kind": kind.spec, "id": ident}
                ) from None
            raise

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(request.get_data() or b"null")
        except ValueError:
            raise Refusal(400, "HTTPBadRequest", "Malformed request body") from None
        if not isinstance(data, dict):
            raise Refusal(400, "HTTPBadRequest", "Resource body required")
        return data

    def render(self, kind: Kind, msg: Any, view: View) -> dict[str, Any]:
        return {a.name: a.get(view, msg) for a in kind.attrs if a.shown and (view.p.admin or not a.admin)}

    def _list(self, kind: Kind, spec: Resource, parent: str, request: Request, view: View) -> dict[str, Any]:
        args = {k: request.args.getlist(k) for k in request.args}
        query = q.parse(args, [a.name for a in kind.attrs if a.shown])
        make = self._module(spec).__dict__[f"List{spec.plural}Request"]
        rows: list[dict[str, Any]] = []
        token = ""
        while True:
            req = make(page_size=MAX_PAGE_SIZE, page_token=token)
            if parent and spec.parent is not None:
                setattr(req, spec.parent.request_field, convert.name_of(spec.parent.kind, parent))
            answer = self.tables.list(spec, req, None)
            rows += [
                self.render(kind, m, view)
                for m in getattr(answer, spec.list_field)
                if self._belongs(kind, m, parent)
            ]
            token = answer.next_page_token
            if not token:
                break
        page, more, earlier = q.select(rows, query)
        out: dict[str, Any] = {kind.collection.replace("-", "_"): [q.project(r, query.fields) for r in page]}
        found = q.links(request.base_url, args, page, query, more, earlier)
        if found:
            out[f"{kind.collection.replace('-', '_')}_links"] = found
        return out

    def _fill(self, kind: Kind, msg: Any, attrs: dict[str, Any], create: bool) -> list[str]:
        """Put the request's attributes on `msg`; the message's field paths set."""
        if kind.body is not None:
            attrs = kind.body(attrs, create)
        by_name = kind.by_name
        unknown = sorted(k for k in attrs if k not in by_name)
        if unknown:
            raise Refusal(400, "HTTPBadRequest", f"Unrecognized attribute(s) '{', '.join(unknown)}'")
        paths: list[str] = []
        for key, value in attrs.items():
            attr = by_name[key]
            if attr.after is not None:
                continue  # written after the record (see _after)
            if attr.put is None:
                if create and attr.accept:
                    continue
                if create:
                    raise Refusal(400, "HTTPBadRequest", f"Attribute '{key}' not allowed in POST")
                raise Refusal(400, "HTTPBadRequest", f"Cannot update read-only attribute {key}")
            for path in attr.put(msg, value):
                if path not in paths:
                    paths.append(path)
        return paths

    def _member_body(self, kind: Kind, data: dict[str, Any]) -> dict[str, Any]:
        key = kind.member
        if key not in data:
            raise Refusal(400, "HTTPBadRequest", f'Resource body required: {{"{key}": {{...}}}}')
        return dict(as_dict(key, data[key]))

    def _create(
        self, kind: Kind, spec: Resource, parent: str, data: dict[str, Any], view: View
    ) -> dict[str, Any]:
        attrs = self._member_body(kind, data)
        req = self._module(spec).__dict__[f"Create{spec.rpc}Request"]()
        if parent and kind.parent_field:
            setattr(getattr(req, spec.kind), kind.parent_field, convert.name_of(kind.parent_kind, parent))
        elif parent and kind.parent_kind:
            req.parent = convert.name_of(kind.parent_kind, parent)
        for field, value in kind.fixed:
            setattr(getattr(req, spec.kind), field, value)
        client_id = attrs.pop("id", None)
        if client_id is not None:
            setattr(req, f"{spec.kind}_id", as_str("id", client_id))
        self._fill(kind, getattr(req, spec.kind), attrs, create=True)
        created = self.tables.create(spec, req, None)
        try:
            after = self._after(kind, attrs, ident_of(created.name))
        except Exception:
            # a refused second write (a qos_policy_id naming no policy of the caller's) fails the whole POST:
            # the record just created goes again, so the request leaves nothing behind
            delete = self._module(spec).__dict__[f"Delete{spec.rpc}Request"](name=created.name)
            try:
                self.tables.delete(spec, delete, None)
            except Exception:  # the refusal is the answer; say the leftover in the log
                log.exception(
                    "%s %s: created, its second write refused, not deleted", spec.kind, created.name
                )
            raise
        if after:
            created = self._get(spec, created.name, kind)
        return {kind.member: self.render(kind, created, view)}

    def _after(self, kind: Kind, attrs: dict[str, Any], record: str) -> bool:
        """Write the attributes that are records of their own (Attr.after) once `record` exists."""
        done = False
        for attr in kind.attrs:
            if attr.after is not None and attr.name in attrs:
                attr.after(self.tables, record, attrs[attr.name])
                done = True
        return done

    def _get(self, spec: Resource, name: str, kind: Kind) -> Any:
        get = self._module(spec).__dict__[f"Get{spec.rpc}Request"]
        return self._by_name(lambda: self.tables.get(spec, get(name=name), None), kind, ident_of(name))

    def _update(
        self, kind: Kind, spec: Resource, name: str, ident: str, data: dict[str, Any], view: View
    ) -> dict[str, Any]:
        attrs = self._member_body(kind, data)
        req = self._module(spec).__dict__[f"Update{spec.rpc}Request"]()
        msg = getattr(req, spec.kind)
        msg.name = name
        paths = self._fill(kind, msg, attrs, create=False)
        by_field = {a.field: a.name for a in kind.attrs if a.field}
        for path in paths:
            if path not in spec.mutable:
                raise Refusal(
                    400, "HTTPBadRequest", f"Cannot update read-only attribute {by_field.get(path, path)}"
                )
        answer = None
        if paths:
            req.update_mask.paths.extend(paths)
            answer = self._by_name(lambda: self.tables.update(spec, req, None), kind, ident)
        else:
            self._get(spec, name, kind)  # the record must exist (and be the caller's to see) all the same
        if self._after(kind, attrs, ident) or answer is None:  # the record as the other writes leave it
            answer = self._get(spec, name, kind)
        return self.render(kind, answer, view)

    def _interface(
        self, kind: Kind, router: str, action: str, data: dict[str, Any], view: View
    ) -> dict[str, Any]:
        """PUT /v2.0/routers/{id}/add_router_interface (or remove_): by subnet_id or port_id."""
        call = self.interface.get(action)
        if call is None:
            raise Refusal(404, "HTTPNotFound", "The resource could not be found.")
        if not data.get("subnet_id") and not data.get("port_id"):
            raise Refusal(
                400, "HTTPBadRequest", "Bad router request: Either subnet_id or port_id must be specified"
            )
        if data.get("subnet_id") and data.get("port_id") and action == "add_router_interface":
            raise Refusal(
                400, "HTTPBadRequest", "Bad router request: Cannot specify both subnet-id and port-id"
            )
        make = (
            pb.AddRouterInterfaceRequest
            if action == "add_router_interface"
            else pb.RemoveRouterInterfaceRequest
        )
        req = make(name=convert.name_of("router", router))
        if data.get("subnet_id"):
            req.subnet = convert.name_of("subnet", as_str("subnet_id", data["subnet_id"]))
        else:
            req.port = convert.name_of("port", as_str("port_id", data["port_id"]))
        answer = self._by_name(lambda: call(req, None), kind, router)
        subnet = answer.subnet.rpartition("/")[2]
        return {
            "id": router,
            "tenant_id": view.p.tenant,
            "project_id": view.p.tenant,
            "port_id": answer.port.rpartition("/")[2],
            "subnet_id": subnet,
            "subnet_ids": [subnet] if subnet else [],
            "network_id": answer.network.rpartition("/")[2],
        }

    # ------------------------------------------------------------------------------------------ discovery

    def _versions(self, request: Request) -> dict[str, Any]:
        return {
            "versions": [
                {
                    "id": "v2.0",
                    "status": "CURRENT",
                    "links": [{"href": f"{request.host_url}v2.0/", "rel": "self"}],
                }
            ]
        }

    def _v2(self, request: Request) -> dict[str, Any]:
        return {
            "resources": [
                {
                    "name": k.member,
                    "collection": k.collection,
                    "links": [{"href": f"{request.host_url}v2.0/{k.collection}", "rel": "self"}],
                }
                for k in self.kinds
                if k.prefix == V2
            ]
        }


class NeutronServer:
    """The listener: cheroot's threaded WSGI server on (host, port), TLS with `tls` (our certificate)."""

    def __init__(
        self, app: NeutronApi, host: str, port: int, tls: TlsFiles | None = None, threads: int = 16
    ) -> None:
        self.server = wsgi.Server((host, port), app, numthreads=threads, server_name="sdn-neutron")
        if tls is not None:
            self.server.ssl_adapter = BuiltinSSLAdapter(str(tls.cert), str(tls.key))
        self.server.prepare()  # binds: the port is known from here on
        self.host = host
        self.port = int(self.server.bind_addr[1])
        self.tls = tls is not None
        self._thread = threading.Thread(target=self.server.serve, name="neutron-api", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.stop()
        self._thread.join(timeout=10)


def listen(
    topology: Any, tokens: Tokens, kinds: Sequence[Kind], host: str, port: int, tls: TlsFiles | None = None
) -> NeutronServer:
    """The Neutron API of a TopologyService (its tables and router interface methods), listening."""
    app = NeutronApi(
        topology.tables, tokens, kinds, topology.AddRouterInterface, topology.RemoveRouterInterface
    )
    server = NeutronServer(app, host, port, tls)
    server.start()
    return server

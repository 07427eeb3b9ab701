"""`sdnctl network qos ...` (the grammar of `openstack network qos ...`), added by the plug-in's cli hook:

    network qos policy create [--id ID] [--name N] [--description D] | list | show POLICY | delete POLICY...
    network qos rule create POLICY --type bandwidth-limit --max-kbps N [--max-burst-kbits N]
                                   [--egress | --ingress]
    network qos rule create POLICY --type dscp-marking --dscp-mark M  | list POLICY | delete RULE...
    network qos policy set-port PORT POLICY | set-network NETWORK POLICY   (Neutron: port/network set --qos-policy)
    network qos policy unset-port PORT | unset-network NETWORK

POLICY and RULE are resource names ("qosPolicies/gold") or ids; PORT and NETWORK also names (sdnctl's rule).
Output as every sdnctl command's: -f table|json|yaml|value|csv, -c, --long.
"""

from __future__ import annotations

import argparse
from typing import Any

from controller.cli.common import Client, command
from controller.cli.format import EXIT_OK, LIST_COLUMNS
from sdn_qos.v1 import qos_pb2 as pb
from sdn_qos.v1 import qos_pb2_grpc as pb_grpc


def _name(collection: str, ref: str) -> str:
    return ref if "/" in ref else f"{collection}/{ref}"


def _call(c: Client, method: str, request: Any) -> Any:
    return getattr(pb_grpc.QosServiceStub(c.channel), method)(request, metadata=c.md, timeout=c.timeout)


def policy_create(c: Client, a: argparse.Namespace) -> Any:
    msg = pb.QosPolicy(display_name=a.display_name or "", description=a.description or "")
    return _call(c, "CreateQosPolicy", pb.CreateQosPolicyRequest(qos_policy=msg, qos_policy_id=a.id or ""))


def policy_list(c: Client, a: argparse.Namespace) -> Any:
    return list(_call(c, "ListQosPolicies", pb.ListQosPoliciesRequest(page_size=1000)).qos_policies)


def policy_show(c: Client, a: argparse.Namespace) -> Any:
    return _call(c, "GetQosPolicy", pb.GetQosPolicyRequest(name=_name("qosPolicies", a.ref)))


def policy_delete(c: Client, a: argparse.Namespace) -> int:
    for ref in a.refs:
        _call(c, "DeleteQosPolicy", pb.DeleteQosPolicyRequest(name=_name("qosPolicies", ref)))
    return EXIT_OK


def rule_create(c: Client, a: argparse.Namespace) -> Any:
    msg = pb.QosRule(
        qos_policy=_name("qosPolicies", a.policy),
        type=a.type.replace("-", "_"),
        direction=a.direction,
        max_kbps=a.max_kbps or 0,
        max_burst_kbps=a.max_burst_kbits or 0,
        dscp_mark=a.dscp_mark or 0,
    )
    return _call(c, "CreateQosRule", pb.CreateQosRuleRequest(qos_rule=msg, qos_rule_id=a.id or ""))


def rule_list(c: Client, a: argparse.Namespace) -> Any:
    req = pb.ListQosRulesRequest(page_size=1000, qos_policy=_name("qosPolicies", a.policy))
    return list(_call(c, "ListQosRules", req).qos_rules)


def rule_delete(c: Client, a: argparse.Namespace) -> int:
    for ref in a.refs:
        _call(c, "DeleteQosRule", pb.DeleteQosRuleRequest(name=_name("qosRules", ref)))
    return EXIT_OK


def _binding_id(kind: str, ident: str) -> str:
    """The binding of a port or network is named after it: one per port or network."""
    return f"{kind}-{ident.rsplit('/', 1)[-1]}"


def bind(kind: str) -> Any:
    def run(c: Client, a: argparse.Namespace) -> Any:
        target = c.resolve(kind, a.target).name  # a port or network by id or name, as sdnctl's
        msg = pb.QosBinding(qos_policy=_name("qosPolicies", a.policy))
        setattr(msg, kind, target)
        req = pb.CreateQosBindingRequest(qos_binding=msg, qos_binding_id=_binding_id(kind, target))
        return _call(c, "CreateQosBinding", req)

    return run


def unbind(kind: str) -> Any:
    def run(c: Client, a: argparse.Namespace) -> int:
        name = f"qosBindings/{_binding_id(kind, c.resolve(kind, a.target).name)}"
        _call(c, "DeleteQosBinding", pb.DeleteQosBindingRequest(name=name))
        return EXIT_OK

    return run


def register(sub: Any) -> None:
    """The plug-in's cli hook: `network qos ...` under sdnctl's top-level parser `sub`."""
    top = sub.add_parser("network-qos", help="QoS policies, rules, bindings (plug-in qos)")
    qos = top.add_subparsers(dest="qos_kind", metavar="policy|rule", required=True)
    pol = qos.add_parser("policy", help="QoS policies").add_subparsers(dest="action", required=True)
    LIST_COLUMNS["qos_policy"] = [("name", "ID"), ("display_name", "Name"), ("description", "Description")]
    LIST_COLUMNS["qos_rule"] = [
        ("name", "ID"),
        ("type", "Type"),
        ("direction", "Direction"),
        ("max_kbps", "Max Kbps"),
        ("max_burst_kbps", "Max Burst Kbits"),
        ("dscp_mark", "DSCP Mark"),
    ]
    pc = command(pol, "create", policy_create, "qos_policy", help="create a policy")
    pc.add_argument("--id", help="client-chosen id")
    pc.add_argument("--name", dest="display_name", help="display name")
    pc.add_argument("--description", help="free text")
    command(pol, "list", policy_list, "qos_policy", out="many", help="list policies")
    command(pol, "show", policy_show, "qos_policy", help="show a policy").add_argument(
        "ref", help="the policy: id or resource name"
    )
    command(pol, "delete", policy_delete, "qos_policy", out="self", help="delete policies").add_argument(
        "refs", nargs="+", help="the policies: ids or resource names"
    )
    for kind in ("port", "network"):
        p = command(pol, f"set-{kind}", bind(kind), "qos_binding", help=f"give a {kind} a policy")
        p.add_argument("target", metavar=kind.upper(), help=f"the {kind}: id or name")
        p.add_argument("policy", metavar="POLICY", help="the QoS policy: id or resource name")
        u = command(pol, f"unset-{kind}", unbind(kind), "qos_binding", out="self", help=f"{kind}: no policy")
        u.add_argument("target", metavar=kind.upper(), help=f"the {kind}: id or name")
    rules = qos.add_parser("rule", help="QoS rules").add_subparsers(dest="action", required=True)
    rc = command(rules, "create", rule_create, "qos_rule", help="add a rule to a policy")
    rc.add_argument("policy", metavar="POLICY", help="the QoS policy: id or resource name")
    rc.add_argument("--id", help="client-chosen id")
    rc.add_argument(
        "--type", required=True, choices=["bandwidth-limit", "dscp-marking"], help="the rule type"
    )
    rc.add_argument("--max-kbps", type=int, help="bandwidth-limit: the rate in kbit/s")
    rc.add_argument("--max-burst-kbits", type=int, help="bandwidth-limit: the burst in kbit")
    rc.add_argument("--dscp-mark", type=int, help="dscp-marking: the DSCP value (0-63)")
    g = rc.add_mutually_exclusive_group()
    g.add_argument(
        "--egress", dest="direction", action="store_const", const="egress", help="traffic the port sends"
    )
    g.add_argument(
        "--ingress", dest="direction", action="store_const", const="ingress", help="traffic to the port"
    )
    rc.set_defaults(direction="")
    command(rules, "list", rule_list, "qos_rule", out="many", help="list a policy's rules").add_argument(
        "policy", metavar="POLICY", help="the QoS policy: id or resource name"
    )
    command(rules, "delete", rule_delete, "qos_rule", out="self", help="delete rules").add_argument(
        "refs", nargs="+", help="the rules: ids or resource names"
    )

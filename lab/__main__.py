"""`python -m lab up|down|cleanup|list`: a lab for demos and poking around by hand."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from lab.lab import Lab
from lab.state import DEFAULT_STATE_DIR, cleanup_stale, destroy, list_labs


def _up(args: argparse.Namespace) -> int:
    lab = Lab(state_dir=args.state_dir).start()
    try:
        for physnet in args.physnet:
            lab.add_provider_network(physnet)
        for i in range(1, args.chassis + 1):
            chassis = lab.add_chassis(f"ch{i}")
            for j, physnet in enumerate(args.physnet, start=1):
                chassis.add_provider_bridge(f"br-prov{j}", physnet)
            for k in range(1, args.vms + 1):
                n = (i - 1) * args.vms + k
                chassis.add_vm(f"vm{n}", f"02:00:00:00:{i:02x}:{k:02x}", f"10.0.0.{n}/24", f"port-vm{n}")
        print(json.dumps(lab.describe(), indent=1), flush=True)
        if args.detach:
            print(f"detached; remove with: python -m lab down {lab.detach()}", file=sys.stderr)
            return 0
        print("lab is up; Ctrl-C (or SIGTERM) tears it down", file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        lab.close()
    return 0


def _down(args: argparse.Namespace) -> int:
    for state in list_labs(args.state_dir):
        if state.prefix in args.prefix or (not args.prefix and state.owner_pid == 0):
            destroy(state)
            print(f"removed {state.prefix}")
    cleanup_stale(args.state_dir)
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    for prefix in cleanup_stale(args.state_dir):
        print(f"removed {prefix}")
    return 0


def _list(args: argparse.Namespace) -> int:
    for state in list_labs(args.state_dir):
        owner = "detached" if state.owner_pid == 0 else f"pid {state.owner_pid}"
        alive = "" if state.owner_alive() else " (stale)"
        print(f"{state.prefix}  {owner}{alive}  {len(state.namespaces)} namespaces  {state.workdir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build a lab and print it as JSON")
    up.add_argument("--chassis", type=int, default=2)
    up.add_argument("--vms", type=int, default=1, help="VMs per chassis (10.0.0.N/24, no flows)")
    up.add_argument("--physnet", action="append", default=[], help="provider network (repeatable)")
    up.add_argument("--detach", action="store_true", help="exit and leave the lab running")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="remove the named labs (default: every detached lab) and stale ones")
    down.add_argument("prefix", nargs="*")
    down.set_defaults(func=_down)
    sub.add_parser("cleanup", help="remove labs whose owner process died").set_defaults(func=_cleanup)
    sub.add_parser("list", help="list recorded labs").set_defaults(func=_list)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

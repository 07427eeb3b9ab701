#!/usr/bin/env python3
"""Run the SDN controller: `python run_controller.py --help` (also installed as `sdn-controller`)."""

import sys

try:
    from controller.main import main
except ModuleNotFoundError as exc:  # started with a Python that lacks the project's packages
    venv = __file__.rsplit("/", 1)[0] + "/.venv/bin/python" if "/" in __file__ else ".venv/bin/python"
    sys.stderr.write(
        f"run_controller.py: missing Python package {exc.name!r}: this Python ({sys.executable}) does not "
        f"have the controller's dependencies.\nRun ./scripts/setup.sh (as root) once, then start it with "
        f"{venv} run_controller.py ... (or .venv/bin/sdn-controller ...)\n"
    )
    raise SystemExit(2) from None

if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Run the SDN controller: `python run_controller.py --help` (also installed as `sdn-controller`)."""

from controller.main import main

if __name__ == "__main__":
    raise SystemExit(main())

"""sdnctl, the command-line client of the API (the `sdnctl` entry point is `controller.cli:main`)."""

from controller.cli.sdnctl import main

__all__ = ["main"]

"""The ``idle-accel`` command line."""

from worker.cli.root import cli, main

__all__ = ["cli", "main"]

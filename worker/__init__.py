"""Volunteer side of Idle Accelerator: the worker, its owner-idle gate and the CLI."""

"""Helpers shared by commands: flag help that names the matching setting."""

from __future__ import annotations

from compute.settings import Settings, env_name


def setting_help(key: str) -> str:
    """Help text for the flag of setting ``key``: its meaning and variable."""
    field = Settings.model_fields[key]
    return f"{field.description} [env: {env_name(key)}]"

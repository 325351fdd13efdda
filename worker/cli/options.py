"""Helpers shared by commands: every setting as a flag, with help that names its variable."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from compute.settings import Settings, env_name

#: Settings that are Celery's own environment variables, not flags (DESIGN.md contract 2).
ENV_ONLY = ("broker_url", "result_backend", "broker_url_file")
#: Flag names that differ from the setting's name.
FLAG_NAMES = {"log_level": "--loglevel",
              "allow_emergency_when_busy": "--allow-emergency-when-busy/--no-emergency-when-busy"}


#: How each kind of value is shown in --help.
METAVARS = {int: "N", float: "NUMBER", str: "TEXT"}


def setting_help(key: str) -> str:
    """Help text for the flag of setting ``key``: its meaning, default and variable.

    No square brackets: the help is rendered as rich markup, which would eat them.
    """
    field = Settings.model_fields[key]
    default = field.default
    if isinstance(default, tuple):
        default = ",".join(default) or None
    if isinstance(default, bool):
        default = "on" if default else "off"
    shown = "" if default in (None, "") else f" Default: {default}."
    return f"{field.description}{shown} Env: {env_name(key)}."


def flag_name(key: str) -> str:
    if key in FLAG_NAMES:
        return FLAG_NAMES[key]
    flag = key.replace("_", "-")
    return f"--{flag}/--no-{flag}" if _python_type(key) is bool else f"--{flag}"


def _python_type(key: str) -> type:
    """What the flag parses: bool, int, float, else text (lists are comma-separated)."""
    annotation = Settings.model_fields[key].annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if candidate in (bool, int, float):
            return candidate
    return str


def with_setting_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command(**overrides)`` one flag per setting (None: not given).

    Every ``IDLE_ACCEL_*`` setting is also a flag, named after it; a flag wins
    over the variable. The command receives the given ones as keywords.
    """
    parameters = []
    for key in Settings.model_fields:
        if key in ENV_ONLY:
            continue
        kind = _python_type(key)
        option = typer.Option(*flag_name(key).split(" "), help=setting_help(key),
                              show_default=False,
                              metavar="" if kind is bool else METAVARS[kind])
        parameters.append(inspect.Parameter(
            key, inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[_python_type(key) | None, option]))
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return command

"""Argument checks for tasks: a bad argument fails the task with a clear message."""

from __future__ import annotations

import math
from numbers import Real

from compute.errors import InvalidArgument

_REPR_LIMIT = 60


def shown(value: object) -> str:
    """A short, safe description of ``value`` for an error message."""
    text = repr(value)
    if len(text) > _REPR_LIMIT:
        text = text[: _REPR_LIMIT - 3] + "..."
    return f"{text} ({type(value).__name__})"


def seconds(task: str, arg: str, value: object, *, maximum: float) -> float:
    """``value`` as a float number of seconds in ``[0, maximum]``.

    Refuses booleans, strings, None, NaN, infinities, negatives and anything
    above ``maximum`` with :class:`InvalidArgument` naming ``task`` and ``arg``.
    """
    number = value if isinstance(value, Real) and not isinstance(value, bool) else None
    # Range first: a huge JSON integer (10**400) has no float, so isfinite() would overflow.
    if number is None or not 0 <= number <= maximum or not math.isfinite(number):
        raise InvalidArgument(
            f"{task}: argument '{arg}' must be a number of seconds from 0 to {maximum:g}; "
            f"got {shown(value)}"
        )
    return float(number)


def count(task: str, arg: str, value: object, *, minimum: int, maximum: int) -> int:
    """``value`` as a whole number in ``[minimum, maximum]`` (booleans and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidArgument(f"{task}: argument '{arg}' must be a whole number from {minimum} "
                              f"to {maximum}; got {shown(value)}")
    return value


def text(task: str, arg: str, value: object, *, max_length: int) -> str:
    """``value`` as a string of at most ``max_length`` characters."""
    if not isinstance(value, str) or len(value) > max_length:
        raise InvalidArgument(f"{task}: argument '{arg}' must be text of at most {max_length} "
                              f"characters; got {shown(value)}")
    return value


#: Longest path or URL a task accepts.
MAX_PATH = 4096


def path(task: str, arg: str, value: object, *, local: bool = False) -> str:
    """``value`` as a path or URL: non-empty text without NUL characters.

    ``local``: a path on the worker's file system; a URL (``scheme://...``) is refused.
    """
    what = "a file path" if local else "a file path or URL"
    if (not isinstance(value, str) or not value.strip() or "\0" in value
            or len(value) > MAX_PATH or (local and "://" in value)):
        raise InvalidArgument(f"{task}: argument '{arg}' must be {what} (text, not empty, "
                              f"no NUL character, at most {MAX_PATH} characters); "
                              f"got {shown(value)}")
    return value


def is_a(value: object, kinds: type | tuple[type, ...]) -> bool:
    """``isinstance``, except that a boolean is not a number unless ``bool`` is asked for."""
    wanted = kinds if isinstance(kinds, tuple) else (kinds,)
    return isinstance(value, wanted) and (bool in wanted or not isinstance(value, bool))


def _kind_names(kinds: type | tuple[type, ...]) -> str:
    names = {str: "text", int: "a whole number", float: "a number", list: "a list",
             dict: "an object", bool: "true/false", type(None): "null"}
    wanted = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(kind, kind.__name__) for kind in wanted)


def records(task: str, arg: str, value: object,
            fields: dict[str, type | tuple[type, ...]], *, minimum: int = 0) -> list[dict]:
    """``value`` as a list of at least ``minimum`` JSON objects, each with ``fields``.

    ``fields`` maps each required key to the type(s) its value must have
    (a boolean is not a number). Other keys are ignored.
    """
    if not isinstance(value, list) or len(value) < minimum:
        least = f"at least {minimum} " if minimum else ""
        raise InvalidArgument(f"{task}: argument '{arg}' must be a list of {least}objects with "
                              f"{', '.join(fields)}; got {shown(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidArgument(f"{task}: argument '{arg}': item {index} must be an object "
                                  f"with {', '.join(fields)}; got {shown(item)}")
        for name, kinds in fields.items():
            if name not in item or not is_a(item[name], kinds):
                got = shown(item[name]) if name in item else "nothing"
                raise InvalidArgument(f"{task}: argument '{arg}': item {index} needs '{name}' "
                                      f"as {_kind_names(kinds)}; got {got}")
    return value

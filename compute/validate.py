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
    if number is None or not math.isfinite(number) or not 0 <= number <= maximum:
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

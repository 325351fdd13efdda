"""Task argument checks: every value is either accepted in range or refused by name."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compute.errors import InvalidArgument
from compute.validate import seconds

ANYTHING = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=200), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(ANYTHING)
def test_any_value_is_accepted_in_range_or_refused_with_a_message(value):
    try:
        result = seconds("t.sleep", "seconds", value, maximum=600)
    except InvalidArgument as exc:
        message = str(exc)
        assert message.startswith("t.sleep: argument 'seconds' must be a number of seconds")
        assert "from 0 to 600" in message
        assert len(message) < 250  # a huge argument is not echoed back whole
    else:
        assert isinstance(result, float)
        assert 0 <= result <= 600
        assert result == value


@pytest.mark.parametrize("value", [0, 0.0, 1, 2.5, 600, 600.0])
def test_in_range_values_come_back_as_floats(value):
    assert seconds("t", "s", value, maximum=600) == float(value)


@pytest.mark.parametrize("value", [True, False, "1", None, math.nan, math.inf, -1, 600.0001, [1]])
def test_out_of_range_or_non_numbers_are_refused(value):
    with pytest.raises(InvalidArgument, match=r"got "):
        seconds("t", "s", value, maximum=600)


def test_invalid_argument_is_a_value_error_rebuilt_from_its_message():
    error = InvalidArgument("t: argument 's' ...")

    assert isinstance(error, ValueError)
    assert type(error)(*error.args).args == error.args  # how Celery rebuilds it from JSON

"""The shared argument checks (dropoutlab.checks)."""

import numpy as np
import pytest

from dropoutlab.checks import integer


@pytest.mark.parametrize(("value", "minimum", "expected"), [(1, 1, 1), (np.int64(5), 2, 5), (0, 0, 0)])
def test_integer_accepts_and_returns_an_int(value, minimum, expected):
    out = integer(value, "n", minimum)
    assert out == expected and type(out) is int


@pytest.mark.parametrize(("value", "minimum"), [(0, 1), (True, 1), (2.0, 1), ("3", 1), (None, 1), (1, 2)])
def test_integer_refuses_by_name(value, minimum):
    with pytest.raises(ValueError, match=rf"^n_masks must be an integer ≥ {minimum}, got "):
        integer(value, "n_masks", minimum)

"""The shared argument checks (dropoutlab.checks)."""

import dataclasses
import re

import numpy as np
import pytest

from dropoutlab.checks import (
    choice,
    choices,
    finite,
    integer,
    integers,
    keep_probability,
    optional_integer,
    positive,
    positives,
    probabilities,
    probability,
    seed_list,
    settle,
)


@pytest.mark.parametrize(("value", "minimum", "expected"), [(1, 1, 1), (np.int64(5), 2, 5), (0, 0, 0)])
def test_integer_accepts_and_returns_an_int(value, minimum, expected):
    out = integer(value, "n", minimum)
    assert out == expected and type(out) is int


@pytest.mark.parametrize(("value", "minimum"), [(0, 1), (True, 1), (2.0, 1), ("3", 1), (None, 1), (1, 2)])
def test_integer_refuses_by_name(value, minimum):
    with pytest.raises(ValueError, match=rf"^n_masks must be an integer ≥ {minimum}, got "):
        integer(value, "n_masks", minimum)


@pytest.mark.parametrize(("values", "expected"), [([3, 1], [3, 1]), ((2,), [2]), (range(1, 3), [1, 2]),
                                                  (np.array([4, 5]), [4, 5]), (7, [7])])
def test_integers_accepts_lists_and_a_single_value(values, expected):
    out = integers(values, "sizes")
    assert out == expected and all(type(v) is int for v in out)


@pytest.mark.parametrize("values", [[], [0], [1, True], [1.0], "12", None, {1: 2}])
def test_integers_refuses_by_name(values):
    with pytest.raises(ValueError, match=r"^sizes must be a non-empty list of integers ≥ 1, got "):
        integers(values, "sizes")


def test_seed_list_wants_distinct_integers_from_zero():
    assert seed_list([0, np.int64(3)]) == [0, 3]
    for bad in ([], [0, 0], [-1], [0.0], [False]):
        with pytest.raises(ValueError, match=r"^run: seeds must be a non-empty list of distinct integers ≥ 0, got "):
            seed_list(bad, "run: seeds")


@pytest.mark.parametrize(("kwargs", "good", "bad", "interval"), [
    ({}, [0, 0.5, np.float32(0.25)], [1.0, -0.1, True, float("nan"), "0.5", None], "[0, 1)"),
    ({"zero": False}, [0.5], [0.0, 1.0], "(0, 1)"),
    ({"one": True}, [0.0, 1], [1.5], "[0, 1]"),
    ({"zero": False, "one": True}, [1.0], [0], "(0, 1]"),
])
def test_probability_intervals(kwargs, good, bad, interval):
    for value in good:
        out = probability(value, "p", **kwargs)
        assert out == float(value) and type(out) is float
    for value in bad:
        with pytest.raises(ValueError, match=rf"^p must be a drop probability in {re.escape(interval)}, got "):
            probability(value, "p", **kwargs)


def test_probabilities_and_keep_probability():
    assert probabilities([0.1, 0.2], "rates") == [0.1, 0.2] and probabilities(0.3, "rates") == [0.3]
    with pytest.raises(ValueError, match=r"^rates must be a non-empty list of distinct drop probabilities in \[0, 1\)"):
        probabilities([0.1, 0.1], "rates", distinct=True)
    with pytest.raises(ValueError, match="rates"):
        probabilities([], "rates")
    assert keep_probability(1, "keep") == 1.0
    with pytest.raises(ValueError, match=r"^keep must be a keep \(retain\) probability in \(0, 1\], got 0"):
        keep_probability(0, "keep")


def test_finite_positive_and_choice():
    assert finite(-2, "x") == -2.0 and positive(0.5, "lr") == 0.5 and positive(0, "wd", zero=True) == 0.0
    for bad in (float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match=r"^x must be a finite number, got "):
            finite(bad, "x")
    for bad in (0, -1.0, float("inf"), False):
        with pytest.raises(ValueError, match=r"^lr must be a finite number > 0, got "):
            positive(bad, "lr")
    with pytest.raises(ValueError, match=r"^wd must be a finite number ≥ 0, got -1"):
        positive(-1, "wd", zero=True)
    assert choice("a", ("a", "b"), "arm") == "a"
    for bad in ("c", ["a"], None):
        with pytest.raises(ValueError, match=r"^arm must be one of \('a', 'b'\), got "):
            choice(bad, ("a", "b"), "arm")


@pytest.mark.parametrize(("values", "expected"), [("relu", ("relu",)), (["tanh", "relu"], ("tanh", "relu")),
                                                  (("relu",), ("relu",))])
def test_choices_returns_a_tuple(values, expected):
    assert choices(values, ("relu", "tanh"), "activations") == expected


@pytest.mark.parametrize("values", [[], ["swish"], ["relu", "swish"], [["relu"]], None])
def test_choices_refuses_by_name(values):
    with pytest.raises(ValueError, match=r"^activations must be a non-empty list of names from \('relu', 'tanh'\)"):
        choices(values, ("relu", "tanh"), "activations")


def test_positives():
    assert positives([1, 2.5], "tau_grid") == [1.0, 2.5] and positives(3, "tau_grid") == [3.0]
    for bad in ([], [1, 0], [float("inf")], [True], "1"):
        with pytest.raises(ValueError, match=r"^tau_grid must be a non-empty list of finite numbers > 0"):
            positives(bad, "tau_grid")


def test_settle_writes_canonical_values_on_a_frozen_dataclass():
    @dataclasses.dataclass(frozen=True)
    class Config:
        sizes: tuple[int, ...] = (1,)

        def __post_init__(self):
            settle(self, sizes=tuple(sorted(integers(self.sizes, "Config.sizes"))))

    assert Config([3, 1]).sizes == (1, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().sizes = (2,)
    with pytest.raises(ValueError, match=r"^Config\.sizes"):
        Config([0])


def test_optional_integer():
    assert optional_integer(None, "n_train") is None and optional_integer(5, "n_train") == 5
    with pytest.raises(ValueError, match=r"^n_train must be an integer ≥ 1, got 0"):
        optional_integer(0, "n_train")

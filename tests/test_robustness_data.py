"""Bad input to kexue.data and to the shared argument checks of kexue._checks, and the review's worst cases.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The checks' own configuration (``name``, ``minimum``, the bounds of ``check_real``) is probed too:
a typo there would otherwise turn a check off silently. The regression tests below the cases pin
the review's findings for these modules (issue 22): numpy scalars rejected as integers and reals,
flags given as strings, a bool taken for a noise level, unclear errors for empty splits.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from kexue import _checks as C
from kexue import data as D
from tests._probe import Arg, Case, inventory_test, probe_tests


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- kexue.data


def _split(a, b, test_size, seed):
    return D.train_test_split(a, b, test_size=test_size, seed=seed)


_ANY_TENSOR = {"an int64 tensor": "any tensor with a first dimension can be split (ids, labels, images)",
               "a bool tensor": "as above", "a complex tensor": "as above"}

DATA_CASES = [
    Case("load_digits", lambda: (D.load_digits, {"dtype": torch.float32, "scale": True}),
         {"dtype": Arg("dtype"), "scale": Arg("flag")}),
    Case("make_moons", lambda: (D.make_moons, {"n": 10, "noise": 0.1, "seed": 0, "dtype": torch.float32}),
         {"n": Arg("int", minimum=2), "noise": Arg("real", low=0.0), "seed": Arg("int", minimum=0),
          "dtype": Arg("dtype")}),
    # train_test_split takes *tensors: the wrapper passes a and b as tensors[0] and tensors[1]
    Case("train_test_split",
         lambda: (_split, {"a": torch.arange(10), "b": torch.arange(20.0).reshape(10, 2), "test_size": 0.3,
                           "seed": 0}),
         {"a": Arg("tensor", ndim=(1,), name="tensors[0]"), "b": Arg("tensor", ndim=(2,), name="tensors[1]"),
          "test_size": Arg("real", low=0.0, open_low=True, high=1.0), "seed": Arg("int", minimum=0)},
         skip={"a": {**_ANY_TENSOR, "one dimension too many": "a (1, 10) tensor is one example of 10 values: "
                                                              "its length differs from tensors[1]'s (error names both)"},
               "b": {**_ANY_TENSOR, "one dimension too many": "as for tensors[0]",
                     "one dimension too few": "a vector is 10 examples of one value"}}),
]

DATA_EXEMPT: dict[str, str] = {}


# ----------------------------------------------------------------------------- kexue._checks

# The name a check reports is any string: an unknown one is not an error, a non-string is.
_NAME = Arg("choice", name="name")
_NAME_SKIP = {"an unknown name": "any string names an argument"}


def _bound(name: str, optional: bool = True) -> Arg:
    return Arg("choice", name=name, optional=optional)


_ANY_INT = {"an int": "any integer is a valid bound"}

CHECKS_CASES = [
    Case("check_int", lambda: (C.check_int, {"value": 3, "name": "n", "minimum": 1}),
         {"value": Arg("int", minimum=1, name="n"), "name": _NAME, "minimum": _bound("minimum", optional=False)},
         skip={"name": _NAME_SKIP, "minimum": _ANY_INT}),
    Case("check_real",
         lambda: (C.check_real, {"value": 0.5, "name": "lr", "above": 0.0, "at_least": None, "at_most": 1.0,
                                 "finite": True, "hint": ""}),
         {"value": Arg("real", low=0.0, open_low=True, high=1.0, name="lr"), "name": _NAME,
          "above": _bound("above"), "at_least": _bound("at_least"), "at_most": _bound("at_most"),
          "finite": Arg("flag"), "hint": Arg("choice", name="hint")},
         skip={"name": _NAME_SKIP, "above": _ANY_INT, "at_least": _ANY_INT, "at_most": _ANY_INT,
               "hint": {"an unknown name": "any string is a hint"}}),
    Case("check_tensor",
         lambda: (C.check_tensor, {"x": torch.randn(3, 2, generator=_gen()), "name": "x", "ndim": 2,
                                   "floating": True, "nonempty": True}),
         {"x": Arg("tensor", ndim=(2,)), "name": _NAME, "ndim": _bound("ndim"),
          "floating": Arg("flag", optional=True), "nonempty": Arg("flag")},
         skip={"name": _NAME_SKIP, "ndim": {"an int": "any rank is a valid requirement (3 names x's rank)"}}),
    Case("check_generator", lambda: (C.check_generator, {"generator": _gen(), "name": "generator"}),
         {"generator": Arg("generator"), "name": _NAME}, skip={"name": _NAME_SKIP}),
    Case("check_bool", lambda: (C.check_bool, {"value": True, "name": "per_sample"}),
         {"value": Arg("flag", name="per_sample"), "name": _NAME}, skip={"name": _NAME_SKIP}),
    Case("check_finite", lambda: (C.check_finite, {"x": torch.randn(3, 2, generator=_gen()), "name": "x"}),
         {"x": Arg("tensor", finite=True), "name": _NAME},
         skip={"x": {"an int64 tensor": "integer tensors are always finite (documented)", "a bool tensor": "as above",
                     "a complex tensor": "a finite complex tensor is finite",
                     "an empty batch": "no entry is non-finite"},
               "name": _NAME_SKIP}),
    Case("check_floating_dtype", lambda: (C.check_floating_dtype, {"dtype": torch.float32, "name": "dtype"}),
         {"dtype": Arg("dtype"), "name": _NAME}, skip={"name": _NAME_SKIP}),
]

CHECKS_EXEMPT: dict[str, str] = {}

CASES = DATA_CASES + CHECKS_CASES

test_bad_input, test_bad_scalars = probe_tests(CASES)
test_data_inventory = inventory_test("kexue.data", DATA_CASES, DATA_EXEMPT)
test_checks_inventory = inventory_test("kexue._checks", CHECKS_CASES, CHECKS_EXEMPT)


# ----------------------------------------------------------------------------- the review's findings


@pytest.mark.parametrize("scale", ["yes", None, 1])
def test_load_digits_rejects_a_flag_that_is_not_a_bool(scale):
    """Review S3: scale='yes' and scale=None were taken as truthy/falsy and loaded the data."""
    with pytest.raises(ValueError, match=r"^scale must be True or False, got "):
        D.load_digits(scale=scale)


@pytest.mark.parametrize("noise", [True, "1", None, float("nan"), -0.1, float("inf")])
def test_make_moons_noise_must_be_a_finite_number(noise):
    """Review S3/S6: noise=True drew noise of scale 1; '1' and None failed with a bare comparison error."""
    with pytest.raises(ValueError, match=r"^noise must be a finite number >= 0, got "):
        D.make_moons(10, noise=noise)


def test_make_moons_takes_numpy_integers_and_names_a_seed_beyond_scikit_learns_range():
    a, la = D.make_moons(np.int64(10), noise=np.float64(0.1), seed=np.int64(3))
    b, lb = D.make_moons(10, noise=0.1, seed=3)
    assert torch.equal(a, b) and torch.equal(la, lb)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        D.make_moons(10, seed=2**32)


def test_train_test_split_names_the_tensor_that_does_not_fit():
    """Review S6: an empty tensor was reported as 'tensors must share their first dimension, got [0, 10]'."""
    a, b = torch.arange(10), torch.zeros(10, 2)
    with pytest.raises(ValueError, match=r"tensors\[0\] has 0, tensors\[1\] has 10"):
        D.train_test_split(a[:0], b)
    with pytest.raises(ValueError, match=r"tensors\[0\] has 10, tensors\[2\] has 9"):
        D.train_test_split(a, b, b[:9])
    with pytest.raises(ValueError, match=r"tensors\[0\] must hold at least 2 examples to split, got 1"):
        D.train_test_split(a[:1])
    with pytest.raises(TypeError, match=r"tensors\[1\] must be a torch.Tensor, got list"):
        D.train_test_split(a, b.tolist())
    with pytest.raises(ValueError, match=r"tensors\[0\] must have at least one dimension"):
        D.train_test_split(a[0], a[0])


def test_train_test_split_counts_given_as_numpy_integers():
    a = torch.arange(10)
    assert len(D.train_test_split(a, test_size=np.int64(3))[1]) == 3
    assert torch.equal(D.train_test_split(a, test_size=np.float64(0.3))[1], D.train_test_split(a, test_size=0.3)[1])
    for bad in (True, np.bool_(True)):
        with pytest.raises(TypeError, match="test_size must be a float fraction or an int count"):
            D.train_test_split(a, test_size=bad)


def test_numpy_scalars_reach_the_checks_as_numbers():
    """Review S5: check_int(np.int64(3), 'n') and check_real(np.float32(0.5), ...) were rejected."""
    assert C.check_int(np.int64(3), "n", 1) == 3
    assert C.check_real(np.float32(0.5), "lr", above=0.0, at_most=1.0) == 0.5
    assert C.check_real(Fraction(1, 2), "lr", above=0.0, at_most=1.0) == 0.5

"""Bad input to kexue.data and to the shared argument checks of kexue._checks, and the review's worst cases.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The checks' own configuration (``name``, ``minimum``, the bounds of ``check_real``) is probed too:
a typo there would otherwise turn a check off silently. The regression tests below the cases pin
the review's findings for these modules (issue 22): numpy scalars rejected as integers and reals,
flags given as strings, a bool taken for a noise level, unclear errors for empty splits.
"""

from __future__ import annotations

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

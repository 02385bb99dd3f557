"""The shared argument checks: what they accept, what they reject, and that errors name the argument."""

from __future__ import annotations

import math

import pytest
import torch

from kexue._checks import (
    check_bool,
    check_finite,
    check_floating_dtype,
    check_generator,
    check_int,
    check_real,
    check_tensor,
)


@pytest.mark.parametrize(("value", "minimum"), [(1, 1), (0, 0), (7, 4), (10**12, 1)])
def test_check_int_accepts_and_returns(value, minimum):
    assert check_int(value, "n", minimum) == value


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, 2.5, "3", None, float("nan"), torch.tensor(3)])
def test_check_int_rejects_with_the_name(value):
    with pytest.raises(ValueError, match=r"^epochs must be an integer >= 1, got "):
        check_int(value, "epochs")


def test_check_int_minimum_is_in_the_message():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 4, got 3"):
        check_int(3, "batch_size", 4)


@pytest.mark.parametrize(
    ("value", "bounds", "expected"),
    [(0.5, {"above": 0}, 0.5), (3, {"above": 1}, 3.0), (0, {"at_least": 0}, 0.0), (1, {"at_least": 0, "at_most": 1}, 1.0),
     (math.inf, {"above": 0, "finite": False}, math.inf), (-2.0, {}, -2.0)],
)
def test_check_real_accepts_and_returns_a_float(value, bounds, expected):
    out = check_real(value, "x", **bounds)
    assert out == expected and type(out) is float


@pytest.mark.parametrize(
    ("value", "bounds", "words"),
    [(0, {"above": 0}, "a finite number > 0"), (-1e-300, {"at_least": 0}, "a finite number >= 0"),
     (1.5, {"at_least": 0, "at_most": 1}, "a finite number >= 0 and <= 1"), (math.inf, {"above": 0}, "a finite number > 0"),
     (math.nan, {}, "a finite number"), (math.nan, {"finite": False}, "a real number"), (True, {}, "a finite number"),
     ("0.1", {"above": 0}, "a finite number > 0"), (None, {}, "a finite number")],
)
def test_check_real_rejects_with_the_name_and_bounds(value, bounds, words):
    with pytest.raises(ValueError, match=rf"^lr must be {words}, got "):
        check_real(value, "lr", **bounds)


def test_check_real_hint_is_appended():
    with pytest.raises(ValueError, match=r"alpha must be a finite number > 0 \(use 'none'\), got 0"):
        check_real(0, "alpha", above=0, hint=" (use 'none')")


def test_check_tensor_accepts_and_returns_the_same_object():
    x = torch.zeros(2, 3)
    assert check_tensor(x, "x", 2, floating=True, nonempty=True) is x
    assert check_tensor(x, "x", (1, 2)) is x
    ids = torch.zeros(4, dtype=torch.long)
    assert check_tensor(ids, "ids", 1, floating=False) is ids
    assert check_tensor(torch.zeros(3, dtype=torch.bool), "mask", floating=False) is not None


@pytest.mark.parametrize(
    ("x", "kwargs", "error", "message"),
    [([1.0, 2.0], {}, TypeError, "x must be a torch.Tensor, got list"),
     (torch.zeros(2, dtype=torch.long), {"floating": True}, TypeError, "x must be a floating-point tensor, got torch.int64"),
     (torch.zeros(2), {"floating": False}, TypeError, "x must be an integer or bool tensor, got torch.float32"),
     (torch.zeros(2, 3), {"ndim": 3}, ValueError, r"x must have 3 dimensions, got shape \(2, 3\)"),
     (torch.zeros(2), {"ndim": (2, 4)}, ValueError, r"x must have 2 or 4 dimensions, got shape \(2,\)"),
     (torch.zeros(0, 3), {"nonempty": True}, ValueError, r"x is empty: .* got shape \(0, 3\)"),
     (torch.zeros(3, 0), {"nonempty": True}, ValueError, r"x is empty: .* got shape \(3, 0\)")],
)
def test_check_tensor_rejects_with_the_name(x, kwargs, error, message):
    with pytest.raises(error, match=f"^{message}"):
        check_tensor(x, "x", **kwargs)


def test_check_tensor_checks_dtype_before_rank():
    # an integer tensor of the wrong rank is reported by its dtype (TypeError), the more basic mistake
    with pytest.raises(TypeError, match="floating"):
        check_tensor(torch.zeros(2, dtype=torch.long), "x", 3, floating=True)


def test_check_generator():
    g = torch.Generator().manual_seed(0)
    assert check_generator(g) is g
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got int"):
        check_generator(0)
    with pytest.raises(TypeError, match="gen must be"):
        check_generator(None, "gen")


def test_check_bool():
    assert check_bool(True, "flag") is True
    assert check_bool(False, "flag") is False
    for value in ("yes", 1, 0, None, 1.0, torch.tensor(True)):
        with pytest.raises(ValueError, match=r"^per_sample must be True or False, got "):
            check_bool(value, "per_sample")


def test_check_finite():
    x = torch.tensor([1.0, -2.0])
    assert check_finite(x, "x") is x
    ids = torch.tensor([3, 4])
    assert check_finite(ids, "ids") is ids  # integers are always finite
    with pytest.raises(ValueError, match=r"^logits must be finite, got 1 NaN and 2 infinite entries"):
        check_finite(torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0]), "logits")
    with pytest.raises(ValueError, match="z must be finite"):
        check_finite(torch.tensor([1.0, float("nan")], requires_grad=True), "z")
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        check_finite([1.0], "x")


def test_check_floating_dtype():
    assert check_floating_dtype(torch.float64) is torch.float64
    for value in (torch.int64, torch.bool, "float32", None, float):
        with pytest.raises(TypeError, match=r"^dtype must be a floating torch.dtype"):
            check_floating_dtype(value)
    with pytest.raises(TypeError, match="out_dtype must be"):
        check_floating_dtype(torch.int32, "out_dtype")


# ----------------------------------------------------------------------------- numpy scalars, fractions, the checks' own parameters


def test_numpy_integers_are_integers_and_come_back_as_int():
    """Review S5: check_int(np.int64(3), 'n') was rejected although it is a valid integer."""
    np = pytest.importorskip("numpy")
    for value in (np.int64(3), np.int32(3), np.uint8(3)):
        out = check_int(value, "n", 1)
        assert out == 3 and type(out) is int
    for value in (np.float64(3.0), np.bool_(True), np.int64(0)):
        with pytest.raises(ValueError, match=r"^n must be an integer >= 1, got "):
            check_int(value, "n")


def test_numpy_floats_and_fractions_are_reals():
    """Review S5: check_real(np.float32(0.5), ...) and Fraction(1, 2) were rejected."""
    from fractions import Fraction

    np = pytest.importorskip("numpy")
    for value in (np.float32(0.5), np.float64(0.5), np.float16(0.5), Fraction(1, 2)):
        out = check_real(value, "lr", above=0.0, at_most=1.0)
        assert out == 0.5 and type(out) is float
    assert check_real(np.int64(2), "scale", above=0) == 2.0
    for value in (np.float32("nan"), np.float64("inf"), np.bool_(True), Fraction(3, 2), torch.tensor(0.5)):
        with pytest.raises(ValueError, match=r"^lr must be a finite number > 0 and <= 1, got "):
            check_real(value, "lr", above=0.0, at_most=1.0)


def test_an_int_beyond_the_float_range_is_infinite_not_an_overflow():
    with pytest.raises(ValueError, match=r"^n_sigma must be a finite number, got 1000"):
        check_real(10**400, "n_sigma")
    assert check_real(10**400, "t", finite=False) == math.inf
    assert check_real(-(10**400), "t", finite=False) == -math.inf


@pytest.mark.parametrize(
    ("call", "word"),
    [(lambda: check_int(3, None), "name"), (lambda: check_int(3, "n", 1.5), "minimum"),
     (lambda: check_int(3, "n", True), "minimum"), (lambda: check_int(3, "n", "3"), "minimum"),
     (lambda: check_int(3, "n", None), "minimum"), (lambda: check_real(0.5, 3), "name"),
     (lambda: check_real(0.5, "lr", above="1"), "above"), (lambda: check_real(0.5, "lr", at_least=True), "at_least"),
     (lambda: check_real(0.5, "lr", at_most=math.nan), "at_most"), (lambda: check_real(0.5, "lr", finite=1), "finite"),
     (lambda: check_real(0.5, "lr", hint=None), "hint"), (lambda: check_tensor(torch.zeros(2), None), "name"),
     (lambda: check_tensor(torch.zeros(2), "x", "1"), "ndim"), (lambda: check_tensor(torch.zeros(2), "x", (1, -1)), "ndim"),
     (lambda: check_tensor(torch.zeros(2), "x", 1.0), "ndim"), (lambda: check_tensor(torch.zeros(2), "x", floating="yes"), "floating"),
     (lambda: check_tensor(torch.zeros(2), "x", nonempty=None), "nonempty"),
     (lambda: check_generator(torch.Generator(), None), "name"), (lambda: check_bool(True, 0), "name"),
     (lambda: check_finite(torch.zeros(2), None), "name"), (lambda: check_floating_dtype(torch.float32, 1), "name")],
)
def test_the_checks_own_parameters_are_checked(call, word):
    """Review S3/S6: check_int(3, 'n', 1.5) and check_generator(g, None) passed silently; a str bound
    failed with a bare comparison error. A slip in a caller must not turn a check off."""
    with pytest.raises(TypeError, match=rf"^{word} must be"):
        call()


def test_numpy_ranks_are_ranks():
    np = pytest.importorskip("numpy")
    x = torch.zeros(2, 3)
    assert check_tensor(x, "x", np.int64(2)) is x
    assert check_tensor(x, "x", [1, np.int64(2)]) is x

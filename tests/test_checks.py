"""The shared argument checks: what they accept, what they reject, and that errors name the argument."""

from __future__ import annotations

import math

import pytest
import torch

from kexue._checks import check_finite, check_flag, check_generator, check_int, check_real, check_tensor


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


def test_check_flag():
    assert check_flag(True, "clip") is True and check_flag(False, "clip") is False
    for value in ("yes", 1, 0, None, torch.tensor(True)):
        with pytest.raises(TypeError, match=r"^clip must be True or False, got "):
            check_flag(value, "clip")


def test_check_finite():
    x = torch.tensor([0.0, 1e38, -2.0])
    assert check_finite(x, "x") is x
    assert check_finite(torch.tensor([1, 2]), "ids") is not None  # integers are always finite
    assert check_finite(torch.zeros(0), "x").numel() == 0
    with pytest.raises(ValueError, match=r"^scores must be finite, got a tensor of shape \(3,\) containing NaN"):
        check_finite(torch.tensor([0.0, math.nan, math.inf]), "scores")
    with pytest.raises(ValueError, match="containing an infinite value"):
        check_finite(torch.tensor([[0.0, -math.inf]], dtype=torch.float16), "p")

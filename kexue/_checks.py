"""Argument checks shared by the kexue modules.

Every check names the argument it rejects, so an error reads
``iterations must be an integer >= 1, got 0``. Conventions, the same in every module:

* a scalar of the wrong kind or out of range (``"3"``, ``True``, ``1.5`` or ``0`` for a count;
  NaN or ``inf`` for a rate) raises ``ValueError``;
* a tensor argument that is not a tensor, or has the wrong dtype, raises ``TypeError``;
  the wrong number of dimensions or an empty batch raises ``ValueError``.

Checks that only one module needs (a Gram matrix, a padding mask, an even head size) stay in
that module and build on these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_finite", "check_flag", "check_generator", "check_int", "check_real", "check_tensor"]


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) and at least ``minimum``.

    Raises:
        ValueError: naming ``name``, for any other value.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_real(
    value: object,
    name: str,
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
    finite: bool = True,
    hint: str = "",
) -> float:
    """Return ``value`` as a float if it is a real number (not a ``bool``, not NaN) within bounds.

    Args:
        value: The argument to check.
        name: The argument's name, for the message.
        above: Strict lower bound (``above=0`` for a positive rate), or None.
        at_least: Inclusive lower bound (``at_least=0`` for a weight that may be off), or None.
        at_most: Inclusive upper bound (``at_most=1`` for a probability), or None.
        finite: Reject ``inf`` too.
        hint: Extra words for the message, e.g. what to use instead.

    Raises:
        ValueError: naming ``name``, for any other value.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and not (finite and math.isinf(value))
    ok = ok and (above is None or value > above) and (at_least is None or value >= at_least)
    ok = ok and (at_most is None or value <= at_most)
    if not ok:
        bounds = [f"> {above:g}"] if above is not None else []
        bounds += [f">= {at_least:g}"] if at_least is not None else []
        bounds += [f"<= {at_most:g}"] if at_most is not None else []
        what = ("a finite number" if finite else "a real number") + " and".join(f" {b}" for b in bounds)
        raise ValueError(f"{name} must be {what}{hint}, got {value!r}")
    return float(value)


def check_tensor(
    x: object,
    name: str,
    ndim: int | Sequence[int] | None = None,
    *,
    floating: bool | None = None,
    nonempty: bool = False,
) -> Tensor:
    """Return ``x`` if it is a tensor of an allowed rank and dtype kind.

    Args:
        x: The argument to check.
        name: The argument's name, for the message.
        ndim: Allowed number of dimensions (one or several), or None for any.
        floating: True to require a floating dtype, False to require an integer or bool dtype,
            None to accept any.
        nonempty: Require at least one entry along every dimension (no empty batch, no
            zero-width matrix).

    Raises:
        TypeError: ``x`` is not a tensor, or its dtype is of the wrong kind.
        ValueError: ``x`` has the wrong number of dimensions or an empty batch.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating is True and not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if floating is False and (x.dtype.is_floating_point or x.dtype.is_complex):
        raise TypeError(f"{name} must be an integer or bool tensor, got {x.dtype}")
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in dims:
            raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {tuple(x.shape)}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} is empty: every dimension needs at least one entry, got shape {tuple(x.shape)}")
    return x


def check_generator(generator: object, name: str = "generator") -> torch.Generator:
    """Return ``generator`` if it is a ``torch.Generator``; raise ``TypeError`` naming ``name`` otherwise."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator, got {type(generator).__name__}")
    return generator


def check_flag(value: object, name: str) -> bool:
    """Return ``value`` if it is a ``bool``; raise ``TypeError`` naming ``name`` otherwise (``"yes"``, ``1``, None)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_finite(x: Tensor, name: str) -> Tensor:
    """Return the tensor ``x`` if it has no NaN or infinite entry; raise ``ValueError`` naming ``name`` otherwise.

    For functions that reduce data to a statistic, a test, a loss or a decision (the NaN/inf policy);
    integer and bool tensors pass unchecked. Call ``check_tensor`` first.
    """
    if (x.is_floating_point() or x.is_complex()) and x.numel() and not bool(torch.isfinite(x).all()):
        bad = "NaN" if bool(torch.isnan(x).any()) else "an infinite value"
        raise ValueError(f"{name} must be finite, got a tensor of shape {tuple(x.shape)} containing {bad}")
    return x

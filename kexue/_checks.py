"""Argument checks shared by the kexue modules.

Every check names the argument it rejects, so an error reads
``iterations must be an integer >= 1, got 0``. Conventions, the same in every module:

* a scalar of the wrong kind or out of range (``"3"``, ``True``, ``1.5`` or ``0`` for a count;
  NaN or ``inf`` for a rate) raises ``ValueError``;
* a tensor argument that is not a tensor, or has the wrong dtype, raises ``TypeError``;
  the wrong number of dimensions or an empty batch raises ``ValueError``.

Integers are Python ``int`` and numpy integer scalars (``np.int64(3)``), never ``bool``; reals are
any ``numbers.Real`` (``int``, ``float``, numpy floating and integer scalars, ``Fraction``), never
``bool``; tensors (even 0-dim ones) are neither. The checks' own parameters (``name``,
``minimum``, the bounds, ``ndim``, the flags) are checked too, so a slip in a caller cannot turn a
check off silently: a wrong one raises ``TypeError`` naming it.

Checks that only one module needs (a Gram matrix, a padding mask, an even head size) stay in
that module and build on these.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_bool", "check_finite", "check_floating_dtype", "check_generator", "check_int", "check_real", "check_tensor"]


def _is_int(value: object) -> bool:
    """Python or numpy integer, not ``bool``."""
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def _is_real(value: object) -> bool:
    """Any ``numbers.Real`` (ints, floats, numpy scalars, fractions), not ``bool``."""
    return type(value) is float or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def _check_name(name: object) -> None:
    if type(name) is not str:
        raise TypeError(f"name must be a str (the argument's name, for messages), got {type(name).__name__}")


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` if it is an integer (not a ``bool``) and at least ``minimum``.

    Python ints and numpy integer scalars are integers; floats (even ``3.0``), strings and tensors
    are not.

    Raises:
        ValueError: naming ``name``, for any other value.
        TypeError: if ``name`` is not a string or ``minimum`` is not an integer.
    """
    _check_name(name)
    if not _is_int(minimum):
        raise TypeError(f"minimum must be an integer, got {minimum!r}")
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return operator.index(value)


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

    Real numbers are Python ints and floats, numpy integer and floating scalars and any other
    ``numbers.Real`` such as ``Fraction``; an int too large for a float counts as infinite.

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
        TypeError: if ``name``, a bound, ``finite`` or ``hint`` is of the wrong type.
    """
    _check_name(name)
    for bound_name, bound in (("above", above), ("at_least", at_least), ("at_most", at_most)):
        if bound is not None and not (_is_real(bound) and not math.isnan(bound)):
            raise TypeError(f"{bound_name} must be a real number or None, got {bound!r}")
    if not isinstance(finite, bool):
        raise TypeError(f"finite must be True or False, got {finite!r}")
    if type(hint) is not str:
        raise TypeError(f"hint must be a str, got {type(hint).__name__}")
    ok = _is_real(value)
    if ok:
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range: infinite for these purposes
            number = math.inf if value > 0 else -math.inf
        ok = not math.isnan(number) and not (finite and math.isinf(number))
        ok = ok and (above is None or number > above) and (at_least is None or number >= at_least)
        ok = ok and (at_most is None or number <= at_most)
    if not ok:
        bounds = [f"> {float(above):g}"] if above is not None else []
        bounds += [f">= {float(at_least):g}"] if at_least is not None else []
        bounds += [f"<= {float(at_most):g}"] if at_most is not None else []
        what = ("a finite number" if finite else "a real number") + " and".join(f" {b}" for b in bounds)
        raise ValueError(f"{name} must be {what}{hint}, got {value!r}")
    return number


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
        TypeError: ``x`` is not a tensor, or its dtype is of the wrong kind (or ``name``,
            ``ndim``, ``floating``, ``nonempty`` are of the wrong type).
        ValueError: ``x`` has the wrong number of dimensions or an empty batch.
    """
    _check_name(name)
    if floating is not None and not isinstance(floating, bool):
        raise TypeError(f"floating must be True, False or None, got {floating!r}")
    if not isinstance(nonempty, bool):
        raise TypeError(f"nonempty must be True or False, got {nonempty!r}")
    if ndim is not None:
        dims = (ndim,) if _is_int(ndim) else ndim
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or not dims \
                or not all(_is_int(d) and d >= 0 for d in dims):
            raise TypeError(f"ndim must be a rank >= 0, a sequence of ranks or None, got {ndim!r}")
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating is True and not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if floating is False and (x.dtype.is_floating_point or x.dtype.is_complex):
        raise TypeError(f"{name} must be an integer or bool tensor, got {x.dtype}")
    if ndim is not None:
        dims = (int(ndim),) if _is_int(ndim) else tuple(ndim)
        if x.dim() not in dims:
            raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {tuple(x.shape)}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} is empty: every dimension needs at least one entry, got shape {tuple(x.shape)}")
    return x


def check_generator(generator: object, name: str = "generator") -> torch.Generator:
    """Return ``generator`` if it is a ``torch.Generator``; raise ``TypeError`` naming ``name`` otherwise."""
    _check_name(name)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator, got {type(generator).__name__}")
    return generator


def check_bool(value: object, name: str) -> bool:
    """Return ``value`` if it is a ``bool``; raise ``ValueError`` naming ``name`` otherwise.

    A flag given as ``"yes"``, ``1`` or ``None`` is a mistake, not a truthy value.

    Raises:
        ValueError: naming ``name``, for anything but ``True`` or ``False``.
    """
    _check_name(name)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")  # noqa: TRY004 - a wrong scalar is a ValueError here (module docstring)
    return value


def check_finite(x: Tensor, name: str) -> Tensor:
    """Return the tensor ``x`` if none of its entries is NaN or infinite.

    For functions that reduce data to a statistic, a test, a loss or a decision: they reject
    non-finite input instead of returning a NaN or a finite number computed from it. Integer and
    bool tensors are always finite.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: naming ``name`` and counting the NaN and infinite entries.
    """
    _check_name(name)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if (x.is_floating_point() or x.is_complex()) and not bool(torch.isfinite(x).all()):
        nan = int(torch.isnan(x).sum())
        inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} must be finite, got {nan} NaN and {inf} infinite entries (shape {tuple(x.shape)})")
    return x


def check_floating_dtype(dtype: object, name: str = "dtype") -> torch.dtype:
    """Return ``dtype`` if it is a floating ``torch.dtype``; raise ``TypeError`` naming ``name`` otherwise."""
    _check_name(name)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}")
    return dtype

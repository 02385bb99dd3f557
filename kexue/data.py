"""Small data sets for the pages: scikit-learn's digits and two-moons, as seeded torch tensors.

Nothing here downloads: the 8x8 digits (1,797 images, 17 grey levels 0..16) ship
inside scikit-learn, and two-moons is generated. Splits and noise are seeded, so
every build and every test sees the same numbers.

Examples:
    >>> from kexue.data import load_digits, train_test_split
    >>> images, labels = load_digits()
    >>> x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.25, seed=0)
    >>> tuple(x_train.shape), tuple(x_test.shape)
    ((1348, 1, 8, 8), (449, 1, 8, 8))
"""

from __future__ import annotations

import numbers

import torch

from kexue._checks import check_bool, check_floating_dtype, check_int, check_real

__all__ = ["load_digits", "make_moons", "train_test_split"]


def load_digits(*, dtype: torch.dtype = torch.float32, scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Load scikit-learn's 8x8 handwritten digits as image tensors.

    Args:
        dtype: Floating dtype of the images.
        scale: If True, divide the grey levels 0..16 by 16 so pixels lie in [0, 1];
            if False, keep the integer levels (as ``dtype``), e.g. for discrete likelihoods.

    Returns:
        ``(images, labels)`` with images in the original order of the data set.

    Shapes:
        images: ``(1797, 1, 8, 8)``; labels: ``(1797,)`` int64 in 0..9.

    Raises:
        TypeError: If ``dtype`` is not a floating-point dtype.
        ValueError: If ``scale`` is not ``True`` or ``False``.

    Examples:
        >>> images, labels = load_digits()
        >>> tuple(images.shape), images.max().item(), labels[:5].tolist()
        ((1797, 1, 8, 8), 1.0, [0, 1, 2, 3, 4])
    """
    check_floating_dtype(dtype)
    check_bool(scale, "scale")
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = torch.as_tensor(bunch.images, dtype=dtype).unsqueeze(1)
    if scale:
        images = images / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images, labels


def make_moons(
    n: int, *, noise: float = 0.1, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaving half-circles (scikit-learn's ``make_moons``), seeded.

    Args:
        n: Number of points (>= 2; split evenly between the two moons).
        noise: Standard deviation of Gaussian noise added to each coordinate (>= 0).
        seed: Seed of the generator, in ``[0, 2**32)`` (scikit-learn's range).
        dtype: Floating dtype of the points.

    Returns:
        ``(points, labels)``.

    Shapes:
        points: ``(n, 2)``; labels: ``(n,)`` int64 in {0, 1}.

    Raises:
        ValueError: If ``n < 2``, ``noise < 0`` or ``seed`` is invalid.
        TypeError: If ``dtype`` is not a floating-point dtype.

    Examples:
        >>> points, labels = make_moons(200, noise=0.1, seed=0)
        >>> tuple(points.shape), labels.sum().item()
        ((200, 2), 100)
    """
    check_int(n, "n", 2)
    noise = check_real(noise, "noise", at_least=0)
    if check_int(seed, "seed", 0) >= 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32) (scikit-learn's range), got {seed!r}")
    check_floating_dtype(dtype)
    from sklearn.datasets import make_moons as _sk_make_moons

    x, y = _sk_make_moons(n_samples=int(n), noise=noise, random_state=int(seed))
    return torch.as_tensor(x, dtype=dtype), torch.as_tensor(y, dtype=torch.int64)


def train_test_split(
    *tensors: torch.Tensor, test_size: float = 0.25, seed: int = 0
) -> list[torch.Tensor]:
    """Shuffle and split tensors along their first axis with a seeded permutation.

    Args:
        *tensors: One or more tensors with the same first dimension ``n``.
        test_size: Fraction of ``n`` in (0, 1) (a float) or an absolute count in [1, n - 1] (an
            integer, numpy integers included).
        seed: Seed of the permutation.

    Returns:
        ``[a_train, a_test, b_train, b_test, ...]`` in the order of ``tensors``.

    Raises:
        TypeError: If an argument of ``tensors`` is not a tensor, or ``test_size`` is not a number.
        ValueError: If no tensor is given, a tensor is 0-dim, first dimensions differ, ``n < 2``,
            or ``test_size`` is out of range.
    """
    if not tensors:
        raise ValueError("train_test_split needs at least one tensor")
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"tensors[{i}] must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() == 0:
            raise ValueError(f"tensors[{i}] must have at least one dimension (the examples), got a 0-dim tensor")
    n = tensors[0].shape[0]
    for i, t in enumerate(tensors[1:], start=1):
        if t.shape[0] != n:
            raise ValueError(f"tensors must share their first dimension, got {[t.shape[0] for t in tensors]} "
                             f"(tensors[0] has {n}, tensors[{i}] has {t.shape[0]})")
    if n < 2:
        raise ValueError(f"tensors[0] must hold at least 2 examples to split, got {n}")
    if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
        n_test = int(test_size)
    elif isinstance(test_size, numbers.Real) and not isinstance(test_size, bool):
        if not 0.0 < test_size < 1.0:  # also rejects NaN
            raise ValueError(f"test_size as a fraction must lie in (0, 1), got {test_size}")
        n_test = max(1, round(n * float(test_size)))
    else:
        raise TypeError(f"test_size must be a float fraction or an int count, got {test_size!r}")
    if not 1 <= n_test <= n - 1:
        raise ValueError(f"test_size leaves an empty split: {n_test} test of {n} examples")
    check_int(seed, "seed", 0)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    out: list[torch.Tensor] = []
    for t in tensors:
        out.extend([t[train_idx], t[test_idx]])
    return out

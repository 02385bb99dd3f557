r"""The Hilbert–Schmidt independence criterion (HSIC): kernels, estimators, tests, the bottleneck objective.

Companion to Su Jianlin, "HSIC简介：一个有意思的判断相关性的思路"
([kexue.fm/archives/6910](https://kexue.fm/archives/6910), 2019), which derives HSIC from the
covariances $\mathrm{Cov}[f(X), g(Y)]$ of all test functions and writes it as a trace of Gram
matrices. The estimators follow Gretton et al. (2005, biased) and Song et al. (2012, unbiased);
the gamma-approximation test follows Gretton et al. (NeurIPS 2007); the normalised objective of the
HSIC bottleneck follows Ma, Lewis & Kleijn (2020) and their code
([choasma/HSIC-bottleneck](https://github.com/choasma/HSIC-bottleneck)). The page's experiments
(dependence shapes, bottleneck training) are in [`kexue.experiments.hsic`][kexue.experiments.hsic].

Conventions (they differ between libraries by factors of 2, see the page):

* Gaussian kernel $k(a, b) = \exp(-\lVert a-b\rVert^2 / (2\sigma^2))$. Su's form
  $\exp(-\lVert a-b\rVert^2/\sigma_{\text{Su}}^2)$ is ``sigma = sigma_su / sqrt(2)``.
* ``sigma="median"``: $\sigma$ is the median of the non-zero pairwise distances
  $\lVert x_i - x_j\rVert$, $i < j$ (hyppo's choice, except that zero distances of tied or
  discrete data are skipped).
* All estimators take symmetric Gram matrices ``K``, ``L`` of shape ``(n, n)`` and run in
  $O(n^2)$ time without forming the centring matrix $H = I - \mathbf 1\mathbf 1^\top/n$ or any
  third $n\times n$ matrix; [`hsic_reference`][kexue.hsic.hsic_reference] is the slow,
  explicit-$H$ path, and [`hsic_gaussian`][kexue.hsic.hsic_gaussian] the path for large $n$
  that never holds an $n\times n$ matrix.

Examples:
    >>> import torch
    >>> from kexue.hsic import gaussian_kernel, hsic, hsic_test
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(300, 1, generator=g, dtype=torch.float64)
    >>> y = x**2 + 0.1 * torch.randn(300, 1, generator=g, dtype=torch.float64)  # uncorrelated with x
    >>> K, L = gaussian_kernel(x), gaussian_kernel(y)
    >>> z = torch.randn(300, 1, generator=g, dtype=torch.float64)  # independent of x
    >>> hsic(K, L, "unbiased").item() > 10 * abs(hsic(K, gaussian_kernel(z), "unbiased").item())
    True
    >>> hsic_test(x, y, "gamma").p_value < 1e-10
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from kexue._checks import check_bool, check_finite, check_generator, check_int, check_real, check_tensor

__all__ = [
    "sq_distances",
    "median_bandwidth",
    "gaussian_kernel",
    "linear_kernel",
    "delta_kernel",
    "KERNELS",
    "gram",
    "hsic_biased",
    "hsic_unbiased",
    "hsic_su",
    "ESTIMATORS",
    "hsic",
    "hsic_reference",
    "normalized_hsic",
    "HSICTestResult",
    "gamma_test",
    "permutation_test",
    "TESTS",
    "hsic_test",
    "hsic_gaussian",
    "cca_operator",
    "hsic_normalized_cca",
    "bottleneck_loss",
]


# ----------------------------------------------------------------------------------------------
# input checks


_LOW_PRECISION = (torch.float16, torch.bfloat16)
"""Dtypes computed in float32 and rounded back once: their rounding would swamp HSIC, a small
difference of large sums (the review measured CKA off by 0.12 in float16)."""

_LEAST_N = {"biased": 1, "su": 2, "unbiased": 4}
"""Smallest sample size of each estimator."""


def _as_points(x: torch.Tensor, name: str) -> torch.Tensor:
    """Return ``x`` as a finite floating ``(n, d)`` tensor (a vector becomes one column)."""
    check_tensor(x, name, (1, 2), floating=True)
    if x.dim() == 1:
        x = x.unsqueeze(1)
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one point of dimension >= 1, got {tuple(x.shape)}")
    return check_finite(x, name)


def _check_magnitude(x: torch.Tensor, name: str, *, centred: bool = True) -> torch.Tensor:
    r"""Reject points whose Gram matrix would overflow ``x``'s dtype.

    Squared distances of centred points are at most $4\sum_k \mathrm{span}_k^2$ (products of
    uncentred points $\max_i\lVert x_i\rVert^2$); beyond the dtype's largest number the kernels'
    arithmetic turns ``inf - inf`` into NaN entries. O(n d), in float64.
    """
    xd = x.detach().double()
    if centred:
        span = xd.amax(dim=0) - xd.amin(dim=0)
        worst = 4 * float((span * span).sum())
    else:
        worst = float((xd * xd).sum(dim=1).max())
    big = torch.finfo(x.dtype).max
    if not worst < big:
        raise ValueError(
            f"{name} is too large for {x.dtype}: its kernel's squared distances or products reach about "
            f"{worst:.3g}, beyond the largest {x.dtype} ({big:.3g}); scale {name} down or use float64"
        )
    return x


def _check_labels(labels: torch.Tensor, name: str) -> torch.Tensor:
    """Categories of a delta kernel: a non-empty vector of any dtype, without NaN."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty vector (n,) of labels, got shape {tuple(labels.shape)}")
    return check_finite(labels, name)  # a NaN label is no category: NaN != NaN


def _max_asymmetry(M: torch.Tensor) -> float:
    r"""$\max_{ij} |M_{ij} - M_{ji}|$, one pair of 512 x 512 tiles at a time (no $n\times n$ temporary)."""
    n, b = M.shape[0], 512
    buf = torch.empty(min(b, n) ** 2, dtype=M.dtype)
    worst = []
    for i in range(0, n, b):
        for j in range(i, n, b):
            a, t = M[i : i + b, j : j + b], M[j : j + b, i : i + b]
            d = torch.sub(a, t.mT, out=buf[: a.numel()].view(a.shape))
            worst.append(torch.stack(torch.aminmax(d)).abs().max())
    return torch.stack(worst).max().item()


def _check_gram_values(M: torch.Tensor, name: str) -> float:
    r"""Check that a square Gram matrix is finite and symmetric; return $\max_{ij}|M_{ij}|$.

    Symmetric means $|M_{ij} - M_{ji}| \le 0.01\max|M|$: rounding passes, even that of a Gram
    matrix computed in bfloat16 and cast to float64 (the tolerance cannot depend on the dtype
    the matrix has now), while a matrix of another kind (a cross-Gram matrix $k(x_i, y_j)$, an
    asymmetric similarity, a transposed product) does not. One pass for the range and one tiled
    pass for the symmetry: at large $n$ about three quarters of the time of an estimator's core
    (n = 4000 in float64: 28 ms against 37 ms), so the public estimators cost about 2.5 times
    their cores; paths that build their own Gram matrices call the cores directly.
    """
    M = M.detach()
    lo, hi = (v.item() for v in torch.aminmax(M))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        check_finite(M, name)  # raises, counting the NaN and infinite entries
    top = max(-lo, hi)
    worst = _max_asymmetry(M)
    if worst > 0.01 * top:
        raise ValueError(
            f"{name} must be a symmetric Gram matrix (k(a, b) = k(b, a)), but |{name}[i, j] - {name}[j, i]| "
            f"reaches {worst:.3g} for entries up to {top:.3g}; if that is rounding, pass ({name} + {name}.mT) / 2"
        )
    return top


def _check_grams(
    K: torch.Tensor, L: torch.Tensor, min_n: int, what: str, names: tuple[str, str] = ("K", "L")
) -> int:
    """Validate two finite, symmetric square Gram matrices of the same size and floating dtype; return ``n``."""
    for name, M in zip(names, (K, L), strict=True):
        check_tensor(M, name, 2, floating=True)
        if M.shape[0] != M.shape[1]:
            raise ValueError(f"{name} must be a square (n, n) Gram matrix, got shape {tuple(M.shape)}")
    a, b = names
    if K.shape != L.shape:
        raise ValueError(f"{a} and {b} must have the same shape (same n), got {tuple(K.shape)} and {tuple(L.shape)}")
    if K.dtype != L.dtype:
        raise TypeError(f"{a} and {b} must share a dtype, got {K.dtype} and {L.dtype}")
    n = K.shape[0]
    if n < min_n:
        raise ValueError(f"{a} and {b}: the {what} needs n >= {min_n} samples, got n = {n}")
    _check_gram_values(K, a)
    if L is not K:
        _check_gram_values(L, b)
    return n


def _widen(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """float16/bfloat16 tensors as float32 (other dtypes unchanged): see ``_LOW_PRECISION``."""
    return tuple(t.float() if t.dtype in _LOW_PRECISION else t for t in tensors)


def _tame(K: torch.Tensor) -> torch.Tensor:
    r"""``K`` divided by a power of two when its entries are far from 1 (exact; the normalised values do not change).

    CKA is invariant to scaling each Gram matrix, but its self-terms are sums of squared entries:
    Gram matrices with entries of $10^{30}$ overflow float32 and ones of $10^{-30}$ underflow
    it. Entries up to $2^{20}$ in size and down to $2^{-20}$ (every Gaussian and delta kernel has
    maximum 1) are left alone, so ordinary input gives bit-identical results.
    """
    top = max(abs(v.item()) for v in torch.aminmax(K.detach()))
    if top == 0 or 2.0**-20 <= top <= 2.0**20:
        return K
    return K * 2.0 ** -math.floor(math.log2(top))


# ----------------------------------------------------------------------------------------------
# kernels


def sq_distances(x: torch.Tensor) -> torch.Tensor:
    r"""Pairwise squared Euclidean distances $D_{ij} = \lVert x_i - x_j\rVert^2$ (exact zeros on the diagonal).

    Computed as $\lVert x_i\rVert^2 + \lVert x_j\rVert^2 - 2x_i^\top x_j$ after centring ``x``
    (which leaves distances unchanged and limits cancellation), clamped at zero. Differentiable.

    Args:
        x: Points, one per row (a vector is read as one column).

    Returns:
        The distance matrix, same dtype as ``x`` (float16 and bfloat16 are computed in float32).

    Shapes:
        x: ``(n, d)`` or ``(n,)``; returns ``(n, n)``.
    """
    x = _as_points(x, "x")
    if x.dtype in _LOW_PRECISION:  # computed in float32, rounded once at the end
        return sq_distances(x.float()).to(x.dtype)
    _check_magnitude(x, "x")
    x = x - x.mean(dim=0, keepdim=True)
    r = (x * x).sum(dim=1)
    if torch.is_grad_enabled() and x.requires_grad:
        d2 = (r[:, None] + r[None, :] - 2.0 * (x @ x.mT)).clamp_min(0.0)
    else:  # same arithmetic in one n x n buffer: fresh n^2 allocations dominate the cost at large n
        d2 = (x @ x.mT).mul_(-2.0).add_(r[:, None]).add_(r[None, :]).clamp_min_(0.0)
    return d2.fill_diagonal_(0.0)


def median_bandwidth(x: torch.Tensor) -> float:
    r"""Median heuristic: the median of the non-zero pairwise distances $\lVert x_i - x_j\rVert$, $i<j$.

    Zero distances (repeated points, labels, one-hot codes) are skipped so that discrete data
    still get a usable width; if every distance is zero (constant data) the width is 1.0, and any
    Gaussian Gram matrix of such data is all ones, so HSIC is 0 whatever the width.
    Used as $\sigma$ in $\exp(-d^2/(2\sigma^2))$ this matches hyppo's ``gamma = 1/(2 median^2)``;
    it is $\sqrt 2$ times smaller than the $\sigma$ of Gretton's ``hsicTestGamma``
    ($\exp(-d^2/\operatorname{median}(d^2))$) and $\sqrt2$ times smaller than causal-learn's
    ``est_width="median"``.

    Args:
        x: Points, one per row.

    Returns:
        The bandwidth as a Python float (not differentiated through).

    Shapes:
        x: ``(n, d)`` or ``(n,)``.
    """
    x = _as_points(x, "x").detach()
    return _median_of_sq_distances(sq_distances(x.to(torch.float64)))


def _median_of_sq_distances(d2: torch.Tensor) -> float:
    """Median of the non-zero off-diagonal distances given squared distances (1.0 if none)."""
    n = d2.shape[0]
    upper = torch.ones(n, n, dtype=torch.bool).triu_(1)
    d = torch.masked_select(d2.detach().to(torch.float64), upper).numpy()
    d = d[d > 0]
    if not d.size:
        return 1.0
    # The median of the distances from two order statistics of the squared distances (sqrt is
    # monotone), found by partial sorting instead of taking n^2/2 square roots and a full median.
    m = d.size
    lo, hi = (m - 1) // 2, m // 2
    part = np.partition(d, [lo, hi])
    return float((np.sqrt(part[lo]) + np.sqrt(part[hi])) / 2)


def gaussian_kernel(x: torch.Tensor, sigma: float | str = "median", *, scale: float = 1.0) -> torch.Tensor:
    r"""Gaussian Gram matrix $K_{ij} = \exp\big(-\lVert x_i - x_j\rVert^2 / (2 (s\sigma)^2)\big)$.

    Su's toy kernel $\exp(-(a-b)^2)$ is ``sigma = 1 / sqrt(2)``. The HSIC-bottleneck code's
    $\exp(-d^2/(2\sigma_b^2 p))$ for $p$-dimensional inputs is ``sigma = sigma_b * sqrt(p)``.

    Args:
        x: Points, one per row.
        sigma: Bandwidth $\sigma > 0$, or ``"median"`` for
            [`median_bandwidth`][kexue.hsic.median_bandwidth] of ``x``.
        scale: Factor $s > 0$ multiplying $\sigma$ (for bandwidth sweeps around the median).

    Returns:
        The Gram matrix (diagonal exactly 1), same dtype as ``x`` (float16 and bfloat16 are
        computed in float32), differentiable in ``x``.

    Shapes:
        x: ``(n, d)`` or ``(n,)``; returns ``(n, n)``.

    Raises:
        ValueError: If ``sigma`` or ``scale`` is not positive, or ``x`` has a bad shape, holds
            NaN/inf, or is so large that its squared distances overflow its dtype.

    Examples:
        >>> import math, torch
        >>> x = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
        >>> K = gaussian_kernel(x, sigma=1 / math.sqrt(2))  # Su's exp(-(a - b)^2)
        >>> K[0, 1].item(), K.diagonal().tolist()  # exp(-1) off the diagonal, 1 on it
        (0.367879, [1.0, 1.0, 1.0])
        >>> median_bandwidth(x), gaussian_kernel(x).shape  # distances 1, 3, 2: median 2
        (2.0, torch.Size([3, 3]))
    """
    x = _as_points(x, "x")
    if x.dtype in _LOW_PRECISION:  # computed in float32, rounded once at the end
        return gaussian_kernel(x.float(), sigma, scale=scale).to(x.dtype)
    _check_magnitude(x, "x")
    d2 = sq_distances(x)
    if isinstance(sigma, str):
        if sigma != "median":
            raise ValueError(f"sigma must be a positive number or 'median', got {sigma!r}")
        sigma = _median_of_sq_distances(d2)
    s = check_real(sigma, "sigma", above=0) * check_real(scale, "scale", above=0)
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.exp(d2 / (-2.0 * s * s))
    return d2.mul_(-0.5 / (s * s)).exp_()  # in place: no second n x n buffer


def linear_kernel(x: torch.Tensor) -> torch.Tensor:
    r"""Linear Gram matrix $K = XX^\top$. Not characteristic: HSIC with it only sees covariance.

    Args:
        x: Points, one per row.

    Returns:
        The Gram matrix, same dtype as ``x`` (float16 and bfloat16 are computed in float32).

    Shapes:
        x: ``(n, d)`` or ``(n,)``; returns ``(n, n)``.
    """
    x = _as_points(x, "x")
    if x.dtype in _LOW_PRECISION:  # computed in float32, rounded once at the end
        return linear_kernel(x.float()).to(x.dtype)
    _check_magnitude(x, "x", centred=False)
    return x @ x.mT


def delta_kernel(labels: torch.Tensor, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""Delta kernel for categories, $K_{ij} = [\ell_i = \ell_j]$ (characteristic on a finite set).

    Args:
        labels: Integer (or any comparable) labels.
        dtype: Floating dtype of the result.

    Returns:
        The 0/1 Gram matrix.

    Shapes:
        labels: ``(n,)``; returns ``(n, n)``.

    Raises:
        ValueError: If ``labels`` is not a non-empty vector, or holds NaN (no category).
        TypeError: If ``labels`` is not a tensor or ``dtype`` is not floating.
    """
    _check_labels(labels, "labels")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return (labels[:, None] == labels[None, :]).to(dtype)


KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian": gaussian_kernel,
    "linear": linear_kernel,
    "delta": delta_kernel,
}
"""Kernels by name; [`gram`][kexue.hsic.gram] dispatches here."""


def gram(x: torch.Tensor, kernel: str = "gaussian", **kwargs: float | str) -> torch.Tensor:
    """Gram matrix of ``x`` under a named kernel of [`KERNELS`][kexue.hsic.KERNELS].

    The names are ``"gaussian"``, ``"linear"`` and ``"delta"``.

    Args:
        x: Points, one per row (labels for ``"delta"``).
        kernel: Kernel name.
        **kwargs: Passed to the kernel (e.g. ``sigma``, ``scale`` for the Gaussian).

    Returns:
        The Gram matrix.

    Shapes:
        x: ``(n, d)`` or ``(n,)``; returns ``(n, n)``.

    Raises:
        ValueError: If ``kernel`` is unknown.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {kernel!r}")
    return KERNELS[kernel](x, **kwargs)


# ----------------------------------------------------------------------------------------------
# estimators: same signature f(K, L) -> 0-dim tensor, O(n^2), no third n x n matrix


def _flat_dot(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    r"""$\sum_{ij} K_{ij} L_{ij}$ as one BLAS dot on flattened views (no ``K * L`` temporary)."""
    return torch.dot(K.reshape(-1), L.reshape(-1))


def _centred_sum(K: torch.Tensor, L: torch.Tensor, row_shift: torch.Tensor, col_shift: torch.Tensor) -> torch.Tensor:
    r"""$\sum_{ij} K_{ij}(L_{ij} - a_i - b_j)$, one block of rows of the centred ``L`` at a time.

    Centring first keeps the summed terms small and of both signs, so float32 inputs do not lose
    HSIC (a small difference of large sums) to rounding; block dots are accumulated in float64.
    Memory: one block of about 2^20 entries besides ``K`` and ``L``.
    """
    n = K.shape[0]
    rows = max(1, 2**20 // n)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(0, n, rows):
        centred = torch.sub(L[i : i + rows], row_shift[i : i + rows, None]).sub_(col_shift)
        total = total + _flat_dot(K[i : i + rows], centred).double()
    return total


# --8<-- [start:biased]
def hsic_biased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    r"""Biased (V-statistic) HSIC, $\mathrm{HSIC}_b = \operatorname{tr}(KHLH)/n^2$ (Gretton et al., 2005).

    The article's three sampling terms are the expansion of this trace,

    $$\mathrm{HSIC}_b = \frac{1}{n^2}\sum_{ij}K_{ij}L_{ij} - \frac{2}{n}\sum_i \bar K_i \bar L_i
    + \bar K\,\bar L = \frac{1}{n^2}\sum_{ij} K_{ij}\,(L_{ij} - \bar L_i - \bar L_j + \bar L),$$

    with row means $\bar L_i = \frac1n\sum_j L_{ij}$ and grand mean $\bar L$; the last form
    ($\sum K\circ HLH$) is what is computed, a block of rows at a time: $O(n^2)$ time, no
    $H$ and no third $n\times n$ matrix. ``K`` and ``L`` must be symmetric.

    Args:
        K: Gram matrix of the ``x`` sample.
        L: Gram matrix of the ``y`` sample.

    Returns:
        A 0-dim tensor of ``K``'s dtype (differentiable); $\ge 0$ for positive semi-definite kernels.

    Shapes:
        K, L: ``(n, n)`` with ``n >= 1``.

    Raises:
        ValueError: If ``K`` or ``L`` is not square, finite and symmetric, or their shapes differ.
        TypeError: If they are not floating tensors of one dtype.
    """
    _check_grams(K, L, 1, "biased estimator")
    return _hsic_biased(*_widen(K, L)).to(K.dtype)


def _hsic_biased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Unchecked core of [`hsic_biased`][kexue.hsic.hsic_biased] (the other paths call it directly)."""
    n = K.shape[0]
    l_row = L.mean(dim=1)
    l_mean = l_row.double().mean()
    total = _centred_sum(K, L, l_row, (l_row.double() - l_mean).to(L.dtype))
    return (total / n**2).to(K.dtype)
# --8<-- [end:biased]


# --8<-- [start:unbiased]
def hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    r"""Unbiased (U-statistic) HSIC of Song et al. (2012), eq. 5.

    With $\tilde K$, $\tilde L$ the Gram matrices with zeroed diagonals,

    $$\mathrm{HSIC}_u = \frac{1}{n(n-3)}\Big[\operatorname{tr}(\tilde K\tilde L)
    + \frac{\mathbf 1^\top\tilde K\mathbf 1\;\mathbf 1^\top\tilde L\mathbf 1}{(n-1)(n-2)}
    - \frac{2}{n-2}\,\mathbf 1^\top\tilde K\tilde L\mathbf 1\Big]
    = \frac{1}{n(n-3)}\sum_{i\ne j}\tilde K_{ij}\Big(\tilde L_{ij} - \frac{r_i + r_j}{n-2}
    + \frac{\mathbf 1^\top\tilde L\mathbf 1}{(n-1)(n-2)}\Big),$$

    where $r = \tilde L\mathbf 1$; the bracket is the "U-centred" $\tilde L$ (Székely & Rizzo 2014),
    and the second form is computed a block of rows at a time without forming $\tilde K$, $\tilde L$.
    Its expectation is exactly HSIC; it can be negative.

    Args:
        K: Gram matrix of the ``x`` sample (symmetric).
        L: Gram matrix of the ``y`` sample (symmetric).

    Returns:
        A 0-dim tensor of ``K``'s dtype (differentiable).

    Shapes:
        K, L: ``(n, n)`` with ``n >= 4``.
    """
    _check_grams(K, L, 4, "unbiased estimator")
    return _hsic_unbiased(*_widen(K, L)).to(K.dtype)


def _hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Unchecked core of [`hsic_unbiased`][kexue.hsic.hsic_unbiased]."""
    n = K.shape[0]
    l_diag = L.diagonal()
    r = (L.sum(dim=1) - l_diag).double()  # row sums of L~
    row_shift = r / (n - 2)
    col_shift = row_shift - r.sum() / ((n - 1) * (n - 2))
    total = _centred_sum(K, L, row_shift.to(L.dtype), col_shift.to(L.dtype))
    # drop the i == j terms that the blocks included
    total = total - torch.dot(K.diagonal().double(), l_diag.double() - row_shift - col_shift)
    return (total / (n * (n - 3))).to(K.dtype)
# --8<-- [end:unbiased]


def hsic_su(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    r"""The article's estimator, $\operatorname{tr}(KHLH)/(n-1)^2 = \frac{n^2}{(n-1)^2}\mathrm{HSIC}_b$.

    Su calls it unbiased; it is Gretton et al.'s (2005) estimator and its bias is $O(1/n)$,
    like that of [`hsic_biased`][kexue.hsic.hsic_biased] (the page measures both).

    Args:
        K: Gram matrix of the ``x`` sample (symmetric).
        L: Gram matrix of the ``y`` sample (symmetric).

    Returns:
        A 0-dim tensor (differentiable).

    Shapes:
        K, L: ``(n, n)`` with ``n >= 2``.
    """
    _check_grams(K, L, 2, "article's (n-1)^-2 estimator")
    return _hsic_su(*_widen(K, L)).to(K.dtype)


def _hsic_su(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Unchecked core of [`hsic_su`][kexue.hsic.hsic_su]."""
    n = K.shape[0]
    return _hsic_biased(K, L) * (n * n / ((n - 1) * (n - 1)))


ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "biased": hsic_biased,
    "unbiased": hsic_unbiased,
    "su": hsic_su,
}
"""Estimators by name, all ``f(K, L) -> tensor``: ``"biased"``, ``"unbiased"``, ``"su"`` (the article's)."""

_CORES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "biased": _hsic_biased,
    "unbiased": _hsic_unbiased,
    "su": _hsic_su,
}
"""The estimators' unchecked cores, for paths that have validated (or built) their Gram matrices."""


def _check_estimator(estimator: object) -> str:
    if not isinstance(estimator, str) or estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {estimator!r}")
    return estimator


def hsic(K: torch.Tensor, L: torch.Tensor, estimator: str = "biased") -> torch.Tensor:
    """HSIC of two Gram matrices with a named estimator of [`ESTIMATORS`][kexue.hsic.ESTIMATORS] ($O(n^2)$).

    Args:
        K: Gram matrix of the ``x`` sample (symmetric).
        L: Gram matrix of the ``y`` sample (symmetric).
        estimator: ``"biased"`` (tr(KHLH)/n²), ``"unbiased"`` (Song et al. 2012) or ``"su"``
            (tr(KHLH)/(n-1)², the article's).

    Returns:
        A 0-dim tensor.

    Shapes:
        K, L: ``(n, n)``.

    Raises:
        ValueError: If ``estimator`` is unknown, the shapes differ, ``n`` is too small, or a Gram
            matrix is not finite and symmetric.

    Examples:
        The article's toy: independent samples give a small positive value (the bias of the
        $(n-1)^{-2}$ form), a strong dependence two orders of magnitude more.

        >>> import math, torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x, e = torch.randn(2, 1000, 1, generator=g, dtype=torch.float64)
        >>> K = gaussian_kernel(x, 1 / math.sqrt(2))
        >>> round(hsic(K, gaussian_kernel(e, 1 / math.sqrt(2)), "su").item(), 4)
        0.0004
        >>> round(hsic(K, gaussian_kernel(x + 0.1 * e, 1 / math.sqrt(2)), "su").item(), 3)
        0.093
    """
    _check_grams(K, L, _LEAST_N[_check_estimator(estimator)], f"{estimator} estimator")
    return _CORES[estimator](*_widen(K, L)).to(K.dtype)


# --8<-- [start:reference]
def hsic_reference(K: torch.Tensor, L: torch.Tensor, estimator: str = "biased") -> torch.Tensor:
    r"""Slow, obvious HSIC: forms $H = I - \mathbf 1\mathbf 1^\top/n$ and multiplies matrices ($O(n^3)$).

    ``"biased"``: $\operatorname{tr}(KHLH)/n^2$; ``"su"``: $\operatorname{tr}(KHLH)/(n-1)^2$;
    ``"unbiased"``: Song et al.'s formula with explicit zero-diagonal matrices and products.

    Args:
        K: Gram matrix of the ``x`` sample.
        L: Gram matrix of the ``y`` sample.
        estimator: A name of [`ESTIMATORS`][kexue.hsic.ESTIMATORS].

    Returns:
        A 0-dim tensor.

    Shapes:
        K, L: ``(n, n)``.
    """
    n = _check_grams(K, L, _LEAST_N[_check_estimator(estimator)], f"{estimator} estimator")
    dtype, (K, L) = K.dtype, _widen(K, L)
    one = torch.ones(n, 1, dtype=K.dtype)
    if estimator == "unbiased":
        Kt = K - torch.diag(torch.diagonal(K))
        Lt = L - torch.diag(torch.diagonal(L))
        total = (one.T @ Kt @ one) * (one.T @ Lt @ one) / ((n - 1) * (n - 2))
        cross = 2.0 / (n - 2) * (one.T @ Kt @ Lt @ one)
        return ((torch.trace(Kt @ Lt) + total - cross) / (n * (n - 3))).squeeze().to(dtype)
    H = torch.eye(n, dtype=K.dtype) - one @ one.T / n
    trace = torch.trace(K @ H @ L @ H)
    return (trace / (n * n if estimator == "biased" else (n - 1) * (n - 1))).to(dtype)
# --8<-- [end:reference]


def normalized_hsic(K: torch.Tensor, L: torch.Tensor, estimator: str = "biased") -> torch.Tensor:
    r"""Normalised HSIC (centred kernel alignment, CKA): $\mathrm{HSIC}(K,L)/\sqrt{\mathrm{HSIC}(K,K)\,\mathrm{HSIC}(L,L)}$.

    With the biased estimator and positive semi-definite kernels it lies in $[0, 1]$ (Cauchy–Schwarz
    for the Frobenius product of $HKH$ and $HLH$); with linear kernels it is the RV coefficient
    (linear CKA). If either self-term is $\le 0$ (negative unbiased estimates, as hyppo does) or
    is rounding noise, at most $64\,\varepsilon\max_{ij}K_{ij}^2$ for the dtype's machine epsilon
    $\varepsilon$ (constant data, where the exact value is 0), the result is defined as 0, with
    gradient 0. Gram matrices with entries far from 1 (beyond $2^{\pm 20}$) are first divided by a
    power of two, which leaves CKA unchanged but keeps its self-terms from overflowing.

    Args:
        K: Gram matrix of the ``x`` sample (symmetric).
        L: Gram matrix of the ``y`` sample (symmetric).
        estimator: A name of [`ESTIMATORS`][kexue.hsic.ESTIMATORS] used for all three terms.

    Returns:
        A 0-dim tensor.

    Shapes:
        K, L: ``(n, n)``.

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(2, 200, 3, generator=g, dtype=torch.float64)
        >>> K = gaussian_kernel(x)
        >>> normalized_hsic(K, K).item()
        1.0
        >>> 0 < normalized_hsic(K, gaussian_kernel(y)).item() < 0.05
        True
        >>> q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
        >>> round(normalized_hsic(linear_kernel(x), linear_kernel(x @ q)).item(), 12)  # linear CKA, rotated x
        1.0
    """
    _check_grams(K, L, _LEAST_N[_check_estimator(estimator)], f"{estimator} estimator")
    return _normalized_hsic(*_widen(K, L), estimator).to(K.dtype)


def _normalized_hsic(K: torch.Tensor, L: torch.Tensor, estimator: str) -> torch.Tensor:
    """Unchecked core of [`normalized_hsic`][kexue.hsic.normalized_hsic]."""
    K, L = _tame(K), _tame(L)
    (hkk, tol_k), (hll, tol_l) = _self_term(K, estimator), _self_term(L, estimator)
    return _cka(_CORES[estimator](K, L), hkk, hll, tol_k, tol_l)


def _self_term(K: torch.Tensor, estimator: str) -> tuple[torch.Tensor, float]:
    r"""$\mathrm{HSIC}(K, K)$ and its rounding tolerance $64\,\varepsilon\max_{ij}K_{ij}^2$."""
    return _CORES[estimator](K, K), 64 * torch.finfo(K.dtype).eps * K.detach().abs().max().item() ** 2


def _cka(hkl: torch.Tensor, hkk: torch.Tensor, hll: torch.Tensor, tol_k: float, tol_l: float) -> torch.Tensor:
    r"""$h_{KL}/\sqrt{h_{KK}h_{LL}}$, or 0 when a self-term is at most its rounding tolerance.

    The 0 stays attached to the graph (its gradient is 0, the true gradient at a constant
    representation), so a loss built on it can still be back-propagated: a collapsed layer of the
    HSIC bottleneck gives a zero step, not an error.
    """
    if hkk.item() <= tol_k or hll.item() <= tol_l:
        return hkl * 0.0 + 0.0  # +0.0 even for a negative hkl
    return hkl / (hkk * hll).sqrt()


# ----------------------------------------------------------------------------------------------
# independence tests


class HSICTestResult(NamedTuple):
    r"""Outcome of an HSIC independence test.

    Attributes:
        statistic: $\mathrm{HSIC}_b = \operatorname{tr}(KHLH)/n^2$ of the observed sample.
        p_value: Approximate probability, under independence, of a statistic at least this large.
        method: ``"gamma"`` or ``"permutation"``.
    """

    statistic: float
    p_value: float
    method: str


# --8<-- [start:gamma]
def gamma_test(K: torch.Tensor, L: torch.Tensor) -> HSICTestResult:
    r"""HSIC test with the gamma approximation of the null (Gretton et al., NeurIPS 2007; ``hsicTestGamma``).

    $T = n\,\mathrm{HSIC}_b$ is matched to a gamma law with the null mean and variance

    $$\mathbb E[\mathrm{HSIC}_b] \approx \tfrac1n\big(1 + \mu_K\mu_L - \mu_K - \mu_L\big),\qquad
    \mathrm{Var}[\mathrm{HSIC}_b] \approx \frac{72(n-4)(n-5)}{n(n-1)(n-2)(n-3)}
    \cdot\frac{1}{n(n-1)}\sum_{i\ne j}\Big(\frac{(K_c\circ L_c)_{ij}}{6}\Big)^2,$$

    with $\mu_K = \sum_{i\ne j}K_{ij}/(n(n-1))$ and $K_c = HKH$; shape $\alpha = \mathbb E^2/\mathrm{Var}$,
    scale $\theta = n\mathrm{Var}/\mathbb E$. The mean formula assumes $k(x, x) = 1$
    (Gaussian, delta kernels), so other kernels are refused. If the null variance or the statistic
    is zero (constant data) the p-value is 1.

    Args:
        K: Gram matrix of ``x`` with unit diagonal.
        L: Gram matrix of ``y`` with unit diagonal.

    Returns:
        [`HSICTestResult`][kexue.hsic.HSICTestResult] with ``method="gamma"``.

    Shapes:
        K, L: ``(n, n)`` with ``n >= 6``.

    Raises:
        ValueError: If a diagonal is not 1, ``n < 6``, or a Gram matrix is not finite and symmetric.
    """
    _check_grams(K, L, 6, "gamma approximation")
    return _gamma_test(K, L)


def _gamma_test(K: torch.Tensor, L: torch.Tensor) -> HSICTestResult:
    """Unchecked core of [`gamma_test`][kexue.hsic.gamma_test] (except for the unit diagonals)."""
    from scipy.stats import gamma as gamma_dist

    n = K.shape[0]
    K, L = K.detach().to(torch.float64), L.detach().to(torch.float64)
    for name, M in (("K", K), ("L", L)):
        if not torch.allclose(M.diagonal(), torch.ones(n, dtype=torch.float64), atol=1e-6):
            raise ValueError(f"{name}: the gamma approximation assumes k(x, x) = 1 (Gaussian/delta kernels)")
    Kc = K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()
    Lc = L - L.mean(0, keepdim=True) - L.mean(1, keepdim=True) + L.mean()
    prod = Kc * Lc
    stat = prod.sum().item() / n**2  # HSIC_b
    v = (prod / 6.0) ** 2
    var = (v.sum() - v.diagonal().sum()).item() / (n * (n - 1))
    var *= 72.0 * (n - 4) * (n - 5) / (n * (n - 1) * (n - 2) * (n - 3))
    mu_k = (K.sum() - n).item() / (n * (n - 1))
    mu_l = (L.sum() - n).item() / (n * (n - 1))
    mean = (1.0 + mu_k * mu_l - mu_k - mu_l) / n
    if var <= 0 or mean <= 0 or stat <= 0:
        return HSICTestResult(stat, 1.0, "gamma")
    shape, scale = mean**2 / var, n * var / mean
    return HSICTestResult(stat, float(gamma_dist.sf(n * stat, shape, scale=scale)), "gamma")
# --8<-- [end:gamma]


# --8<-- [start:permutation]
def permutation_test(
    K: torch.Tensor, L: torch.Tensor, *, n_permutations: int = 1000, generator: torch.Generator | None = None
) -> HSICTestResult:
    r"""HSIC permutation test: shuffle the ``y`` sample only, i.e. rows *and* columns of ``L``.

    $\mathrm{HSIC}_b(K, P L P^\top) = \sum_{ij} (K_c)_{ij} L_{\pi_i\pi_j}/n^2$ with $K_c = HKH$
    computed once; replicates are evaluated in chunks. The p-value counts the observed sample
    as one of the permutations, $p = (1 + \#\{T_b \ge T\})/(1 + B)$ (hyppo's convention),
    so it is never 0.

    Args:
        K: Gram matrix of ``x`` (symmetric).
        L: Gram matrix of ``y`` (symmetric).
        n_permutations: Number $B \ge 1$ of random permutations.
        generator: Source of the permutations (seed it for reproducible p-values).

    Returns:
        [`HSICTestResult`][kexue.hsic.HSICTestResult] with ``method="permutation"``.

    Shapes:
        K, L: ``(n, n)`` with ``n >= 2``.

    Raises:
        ValueError: If ``n_permutations < 1``, ``n < 2``, or a Gram matrix is not finite and symmetric.
        TypeError: If ``generator`` is neither None nor a ``torch.Generator``.
    """
    _check_grams(K, L, 2, "permutation test")
    check_int(n_permutations, "n_permutations")
    if generator is not None:
        check_generator(generator)
    return _permutation_test(K, L, n_permutations, generator)


def _permutation_test(
    K: torch.Tensor, L: torch.Tensor, n_permutations: int, generator: torch.Generator | None
) -> HSICTestResult:
    """Unchecked core of [`permutation_test`][kexue.hsic.permutation_test]."""
    n = K.shape[0]
    K, L = K.detach().to(torch.float64), L.detach().to(torch.float64)
    Kc = K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()
    stat = _flat_dot(Kc, L).item() / n**2
    perms = torch.argsort(torch.rand(n_permutations, n, generator=generator), dim=1)
    chunk = max(1, 2**22 // (n * n))
    kc = Kc.reshape(-1)
    null = torch.cat([L[p[:, :, None], p[:, None, :]].reshape(len(p), -1) @ kc for p in perms.split(chunk)]) / n**2
    exceed = int((null >= stat - 1e-12 * abs(stat)).sum())  # tolerance: identity permutation counts
    return HSICTestResult(stat, (1 + exceed) / (1 + n_permutations), "permutation")
# --8<-- [end:permutation]


TESTS: dict[str, Callable[..., HSICTestResult]] = {"gamma": gamma_test, "permutation": permutation_test}
"""Independence tests by name, all ``f(K, L, **options) -> HSICTestResult``; only the permutation
test takes options (``n_permutations``, ``generator``)."""


def hsic_test(
    x: torch.Tensor,
    y: torch.Tensor,
    method: str = "permutation",
    *,
    kernel_x: str = "gaussian",
    kernel_y: str = "gaussian",
    sigma_x: float | str = "median",
    sigma_y: float | str = "median",
    n_permutations: int = 1000,
    generator: torch.Generator | None = None,
) -> HSICTestResult:
    r"""Test $H_0: X \perp Y$ from paired samples with HSIC (statistic $\mathrm{HSIC}_b$).

    Args:
        x: Sample of $X$, one row per observation (labels if ``kernel_x="delta"``).
        y: Sample of $Y$, paired with ``x`` row by row.
        method: ``"permutation"`` or ``"gamma"`` (see [`TESTS`][kexue.hsic.TESTS]).
        kernel_x: Kernel name for ``x`` ([`KERNELS`][kexue.hsic.KERNELS]).
        kernel_y: Kernel name for ``y``.
        sigma_x: Gaussian bandwidth for ``x`` (number or ``"median"``); ignored by other kernels.
        sigma_y: Gaussian bandwidth for ``y``.
        n_permutations: Permutations for ``method="permutation"``.
        generator: Random source for ``method="permutation"``.

    Returns:
        [`HSICTestResult`][kexue.hsic.HSICTestResult].

    Shapes:
        x: ``(n, p)`` or ``(n,)``; y: ``(n, q)`` or ``(n,)``.

    Raises:
        ValueError: If ``method`` or a kernel name is unknown, ``x`` and ``y`` have different
            ``n``, a bandwidth is not positive, or a sample holds NaN or infinite values.
        TypeError: If a sample is not a tensor of the kind its kernel takes (floating points for
            ``"gaussian"`` and ``"linear"``, labels of any dtype for ``"delta"``).

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = 2 * torch.rand(100, 1, generator=g, dtype=torch.float64) - 1
        >>> y = x**2 + 0.1 * torch.randn(100, 1, generator=g, dtype=torch.float64)
        >>> hsic_test(x, y, "permutation", n_permutations=199, generator=g).p_value  # the smallest possible
        0.005
        >>> hsic_test(x, y, "gamma").p_value < 1e-6
        True
        >>> hsic_test(x, y, "permutation", kernel_x="linear", kernel_y="linear", generator=g).p_value > 0.05
        True
    """
    if not isinstance(method, str) or method not in TESTS:
        raise ValueError(f"method must be one of {sorted(TESTS)}, got {method!r}")
    grams = []
    for name, z, kernel, sigma in (("x", x, kernel_x, sigma_x), ("y", y, kernel_y, sigma_y)):
        if not isinstance(kernel, str) or kernel not in KERNELS:
            raise ValueError(f"kernel_{name} must be one of {sorted(KERNELS)}, got {kernel!r}")
        if kernel == "delta":
            _check_labels(z, name)
            grams.append(lambda z=z: delta_kernel(z))
            continue
        _as_points(z, name)
        if kernel == "linear":
            _check_magnitude(z.float() if z.dtype in _LOW_PRECISION else z, name, centred=False)
            if method == "gamma":
                raise ValueError(f"kernel_{name}='linear' does not fit the gamma test, which assumes k(a, a) = 1 "
                                 "(Gaussian, delta kernels); use method='permutation'")
            grams.append(lambda z=z: linear_kernel(z))
            continue
        if isinstance(sigma, str) and sigma == "median":
            z = _tame(z)  # the median width is scale-free: an exact power-of-two rescaling changes nothing
        else:
            check_real(sigma, f"sigma_{name}", above=0, hint=" or 'median'")
            _check_magnitude(z.float() if z.dtype in _LOW_PRECISION else z, name)
        grams.append(lambda z=z, sigma=sigma: gaussian_kernel(z, sigma))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of rows n, got {x.shape[0]} and {y.shape[0]}")
    if method == "permutation":
        check_int(n_permutations, "n_permutations")
        if generator is not None:
            check_generator(generator)
    n = x.shape[0]
    least = 6 if method == "gamma" else 2
    if n < least:
        raise ValueError(f"x and y: the {method} test needs n >= {least} samples, got n = {n}")
    K, L = (make().to(torch.float64) for make in grams)  # symmetric by construction: the cores run unchecked
    if method == "gamma":
        return _gamma_test(K, L)
    return _permutation_test(K, L, n_permutations, generator)


# ----------------------------------------------------------------------------------------------
# the path for large n: Gaussian HSIC straight from the points, never an n x n matrix


def _gram_sums(x: torch.Tensor, y: torch.Tensor, gx: float, gy: float, rows: int) -> dict[str, torch.Tensor]:
    r"""Sums of two Gaussian Gram matrices, built one block of rows at a time in reused buffers.

    Returns $S_{KL} = \sum_{ij}K_{ij}L_{ij}$, $S_{KK}$, $S_{LL}$ and the row sums $k = K\mathbf 1$,
    $l = L\mathbf 1$, in float64, for $K_{ij} = e^{-g_x\lVert x_i - x_j\rVert^2}$ and likewise $L$.
    The diagonals are exactly 1, as in [`gaussian_kernel`][kexue.hsic.gaussian_kernel]. Only the blocks on and above the
    diagonal are computed (the matrices are symmetric): rows ``i:i+m`` against columns ``i:``.
    The exponent $-g\lVert z_i - z_j\rVert^2 = 2g\,z_i^\top z_j - g r_i - g r_j$ ($r = \lVert z\rVert^2$,
    after centring) is one matrix product of the points augmented with $r$ and 1.
    """
    n = x.shape[0]
    sums = torch.zeros(3, dtype=torch.float64)  # S_KL, S_KK, S_LL
    row_sums = torch.zeros(2, n, dtype=torch.float64)  # k, l
    factors = []
    for z, g in ((x, gx), (y, gy)):
        z = z.to(torch.float64)
        z = z - z.mean(dim=0, keepdim=True)
        r = (z * z).sum(dim=1, keepdim=True)
        one = torch.ones_like(r)
        factors.append((torch.cat((z, r, one), dim=1), torch.cat((2 * g * z, -g * one, -g * r), dim=1)))
    buffers = [torch.empty(min(rows, n) * n, dtype=torch.float64) for _ in range(2)]
    for i in range(0, n, rows):
        m, w = min(rows, n - i), n - i
        tiles = []
        for (left, right), buf in zip(factors, buffers, strict=True):
            t = torch.mm(left[i : i + m], right[i:].mT, out=buf[: m * w].view(m, w))
            t.clamp_max_(0.0).diagonal().zero_()  # exact zero distance on the diagonal: entry 1
            tiles.append(t.exp_())
        kt, lt = tiles
        flat_k, flat_l = kt.reshape(-1), lt.reshape(-1)  # views: the blocks are contiguous
        # entries right of the diagonal block stand for their mirror images too: count them twice
        full = torch.stack((torch.dot(flat_k, flat_l), torch.dot(flat_k, flat_k), torch.dot(flat_l, flat_l)))
        dk, dl = kt[:, :m], lt[:, :m]
        square = torch.stack(((dk * dl).sum(), (dk * dk).sum(), (dl * dl).sum()))
        sums += 2 * full - square
        for row, t in zip(row_sums, tiles, strict=True):
            row[i : i + m] += t.sum(dim=1)
            row[i + m :] += t[:, m:].sum(dim=0)
    return {"KL": sums[0], "KK": sums[1], "LL": sums[2], "k": row_sums[0], "l": row_sums[1]}


def _hsic_from_sums(s_ab: torch.Tensor, a: torch.Tensor, b: torch.Tensor, n: int, estimator: str) -> torch.Tensor:
    r"""HSIC of Gram matrices $A$, $B$ (unit diagonals) from $\sum_{ij}A_{ij}B_{ij}$ and the row sums."""
    if estimator == "unbiased":  # Song et al. (2012), eq. 5, with the unit diagonals removed
        at, bt = a - 1.0, b - 1.0
        trace = s_ab - n
        return (trace + at.sum() * bt.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * torch.dot(at, bt)) / (n * (n - 3))
    biased = (s_ab - 2.0 / n * torch.dot(a, b) + a.sum() * b.sum() / n**2) / n**2
    return biased * (n * n / ((n - 1) * (n - 1))) if estimator == "su" else biased


def hsic_gaussian(
    x: torch.Tensor,
    y: torch.Tensor,
    sigma_x: float | str = "median",
    sigma_y: float | str = "median",
    *,
    estimator: str = "biased",
    normalized: bool = False,
    block_rows: int | None = None,
) -> torch.Tensor:
    r"""HSIC (or CKA) of Gaussian kernels straight from the points, without any $n\times n$ matrix.

    Every estimator of [`ESTIMATORS`][kexue.hsic.ESTIMATORS] needs only
    $S_{KL} = \sum_{ij}K_{ij}L_{ij}$ and the row
    sums $k = K\mathbf 1$, $l = L\mathbf 1$; e.g. the biased one is

    $$\mathrm{HSIC}_b = \frac{1}{n^2}\Big(S_{KL} - \frac{2}{n}k^\top l + \frac{(\mathbf 1^\top k)(\mathbf 1^\top l)}{n^2}\Big),$$

    and the normalised value (``normalized=True``, as
    [`normalized_hsic`][kexue.hsic.normalized_hsic]) also needs $S_{KK}$
    and $S_{LL}$. These sums are accumulated over blocks of rows of $K$ and $L$ computed on the fly
    in two reused buffers, so memory is $O(n \cdot \text{block\_rows})$ and no page of an
    $n\times n$ matrix is ever touched. It equals
    ``hsic(gaussian_kernel(x, sigma_x), gaussian_kernel(y, sigma_y), estimator)`` (tested to a
    relative 1e-10 in float64), which stays the readable path; use this one for large $n$. Everything is computed
    in float64 (the raw sums cancel, see the Float32 pitfall on the page) and returned in ``x``'s
    dtype. If ``x`` or ``y`` requires a gradient, the differentiable Gram-matrix path is used.

    Args:
        x: Points of the first sample, one per row.
        y: Points of the second sample, paired with ``x`` row by row.
        sigma_x: Bandwidth for ``x`` ($\sigma > 0$), or ``"median"``
            ([`median_bandwidth`][kexue.hsic.median_bandwidth],
            which does form the $n\times n$ distances once; pass a number to avoid it).
        sigma_y: The same for ``y``.
        estimator: ``"biased"``, ``"unbiased"`` or ``"su"`` (see [`hsic`][kexue.hsic.hsic]).
        normalized: Return CKA, $\mathrm{HSIC}(K,L)/\sqrt{\mathrm{HSIC}(K,K)\mathrm{HSIC}(L,L)}$, 0 when
            a self-term is $\le 0$ or rounding noise (constant data), as
            [`normalized_hsic`][kexue.hsic.normalized_hsic].
        block_rows: Rows of $K$ and $L$ per block (default: about $2^{19}$ entries, 4 MB, per block).

    Returns:
        A 0-dim tensor of ``x``'s dtype.

    Shapes:
        x: ``(n, d_x)`` or ``(n,)``; y: ``(n, d_y)`` or ``(n,)``.

    Raises:
        ValueError: If the samples differ in length, ``n`` is too small for the estimator, a
            bandwidth or ``block_rows`` is not positive, or ``estimator`` is unknown.

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(2, 500, 2, generator=g, dtype=torch.float64)
        >>> tiled = hsic_gaussian(x, y, 1.0, 1.5, estimator="unbiased", block_rows=64)
        >>> grams = hsic(gaussian_kernel(x, 1.0), gaussian_kernel(y, 1.5), "unbiased")
        >>> bool(torch.allclose(tiled, grams, rtol=1e-10, atol=1e-15))
        True
    """
    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of points, got {x.shape[0]} and {y.shape[0]}")
    _check_estimator(estimator)
    check_bool(normalized, "normalized")
    n = x.shape[0]
    least = _LEAST_N[estimator]
    if n < least:
        raise ValueError(f"x and y: the {estimator} estimator needs n >= {least} samples, got n = {n}")
    rows = max(1, 2**19 // n) if block_rows is None else check_int(block_rows, "block_rows")
    sx, sy = (
        check_real(median_bandwidth(z) if isinstance(sig, str) and sig == "median" else sig, name, above=0)
        for z, sig, name in ((x, sigma_x, "sigma_x"), (y, sigma_y, "sigma_y"))
    )
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        xw, yw = _widen(x, y)  # one dtype for both Gram matrices, float16 computed in float32
        dtype = torch.promote_types(xw.dtype, yw.dtype)
        K, L = gaussian_kernel(xw.to(dtype), sx), gaussian_kernel(yw.to(dtype), sy)
        return (_normalized_hsic(K, L, estimator) if normalized else _CORES[estimator](K, L)).to(x.dtype)
    with torch.no_grad():
        t = _gram_sums(x, y, 0.5 / (sx * sx), 0.5 / (sy * sy), rows)
        value = _hsic_from_sums(t["KL"], t["k"], t["l"], n, estimator)
        if normalized:  # Gaussian Grams have max entry 1: the tolerance of normalized_hsic in float64
            tol = 64 * torch.finfo(torch.float64).eps
            hkk = _hsic_from_sums(t["KK"], t["k"], t["k"], n, estimator)
            value = _cka(value, hkk, _hsic_from_sums(t["LL"], t["l"], t["l"], n, estimator), tol, tol)
    return value.to(x.dtype)


# ----------------------------------------------------------------------------------------------
# the HSIC bottleneck (Ma, Lewis & Kleijn 2020): its normalisation and the per-layer objective


def cca_operator(K: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    r"""The regularised operator $R_K = K_c (K_c + \varepsilon n I)^{-1}$ of the bottleneck's normalised HSIC.

    $K_c = KH$ is the right-centred Gram matrix (each row minus its mean, one-sided as in the
    reference code). $K_c$ and $(K_c + \varepsilon n I)^{-1}$ commute, so $R_K$ is one linear solve.
    It keeps each eigen-direction of $K_c$ with eigenvalue $\lambda$ at weight
    $\lambda / (\lambda + \varepsilon n)$. With a small $\varepsilon$ it is close to a projection
    onto the directions the kernel resolves, and $\operatorname{tr}(R_K R_K)$ counts them.

    Args:
        K: Gram matrix.
        eps: Regulariser $\varepsilon > 0$ (1e-5 in the reference code).

    Returns:
        $R_K$, differentiable in ``K``.

    Shapes:
        K: ``(n, n)`` with ``n >= 2``; returns ``(n, n)``.

    Raises:
        ValueError: If ``K`` is not a finite symmetric square matrix with ``n >= 2``, or ``eps``
            is not a positive number.
        TypeError: If ``K`` is not a floating tensor.
    """
    _check_grams(K, K, 2, "CCA operator", ("K", "K"))
    eps = check_real(eps, "eps", above=0)
    return _cca_operator(*_widen(K), eps).to(K.dtype)


def _cca_operator(K: torch.Tensor, eps: float) -> torch.Tensor:
    """Unchecked core of [`cca_operator`][kexue.hsic.cca_operator] (float16 is widened first: no LU in float16)."""
    n = K.shape[0]
    Kc = K - K.mean(dim=1, keepdim=True)  # K H: subtract each row's mean
    return torch.linalg.solve(Kc + (eps * n) * torch.eye(n, dtype=K.dtype), Kc)


def _trace_of_product(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    r"""$\operatorname{tr}(AB) = \sum_{ij} A_{ij} B_{ji}$ without the matrix product."""
    return (A * B.mT).sum()


def hsic_normalized_cca(K: torch.Tensor, L: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    r"""The HSIC bottleneck's normalised HSIC (Ma et al. 2020; ``hsic_normalized_cca`` in their code).

    With the operators $R_K$, $R_L$ of [`cca_operator`][kexue.hsic.cca_operator],

    $$\mathrm{nHSIC}(K, L) = \operatorname{tr}(R_K R_L) = \sum_{ij} (R_K)_{ij} (R_L)_{ji},$$

    a regularised normalised cross-covariance (Fukumizu et al. 2008). It is not bounded by 1:
    it grows with the number of directions both kernels resolve. $O(n^3)$ (two solves); meant
    for mini-batches. Differentiable.

    Args:
        K: Gram matrix of the first sample.
        L: Gram matrix of the second sample.
        eps: Regulariser $\varepsilon > 0$ (1e-5 in the reference code).

    Returns:
        A 0-dim tensor of ``K``'s dtype (float16 and bfloat16 are computed in float32).

    Shapes:
        K, L: ``(n, n)``.
    """
    _check_grams(K, L, 2, "normalised (CCA) HSIC")
    eps = check_real(eps, "eps", above=0)
    Kw, Lw = _widen(K, L)
    return _trace_of_product(_cca_operator(Kw, eps), _cca_operator(Lw, eps)).to(K.dtype)


# --8<-- [start:bottleneck]
def bottleneck_loss(
    z: torch.Tensor,
    Kx: torch.Tensor,
    Ky: torch.Tensor,
    *,
    beta: float,
    sigma: float | str = "median",
    nhsic: str = "cka",
    eps: float = 1e-5,
    cache: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per-layer HSIC-bottleneck objective $\mathrm{nHSIC}(Z, X) - \beta\,\mathrm{nHSIC}(Z, Y)$.

    Minimising it squeezes out information about the input $X$ that is not needed for the labels
    $Y$ (Ma et al. 2020, eq. 4). nHSIC is [`normalized_hsic`][kexue.hsic.normalized_hsic]
    (``nhsic="cka"``, biased, in $[0, 1]$) or the reference code's
    [`hsic_normalized_cca`][kexue.hsic.hsic_normalized_cca] (``nhsic="cca"``). The bandwidth of
    $Z$ is picked on the (detached) batch when ``sigma="median"``.

    Every layer of a network shares the batch's $X$ and $Y$. Pass the same ``cache`` dict to the
    calls of one batch, and what the normalisation needs of $X$ and $Y$ alone (the self-terms
    $\mathrm{HSIC}(K_x, K_x)$, $\mathrm{HSIC}(K_y, K_y)$ of CKA, or the operators $R_X$, $R_Y$ of
    ``"cca"``, two $O(n^3)$ solves) is computed, and ``Kx``, ``Ky`` are checked to be finite
    and symmetric, by the first call only. It must be a fresh dict for each batch. The values are
    the same with or without it.

    A collapsed layer (``z`` constant over the batch) has nHSIC 0 with both kernels and gets a
    loss of 0 whose gradient is 0, the true gradient there: training goes on, the layer gets no
    step from this batch. With ``sigma="median"`` the loss does not depend on the scale of ``z``,
    so huge or tiny representations (1e30, 1e-30) give the same finite loss as moderate ones.
    float16 and bfloat16 inputs are computed in float32 and the results rounded back.

    Args:
        z: Hidden representation of the batch.
        Kx: Gram matrix of the batch inputs.
        Ky: Gram matrix of the batch labels.
        beta: Weight $\beta \ge 0$ of the label term (``lambda_y`` in the reference code).
        sigma: Bandwidth of the Gaussian kernel on ``z``.
        nhsic: ``"cka"`` or ``"cca"``.
        eps: Regulariser of ``"cca"``.
        cache: Optional dict shared by the layers of one batch (see above).

    Returns:
        ``(loss, nhsic_zx, nhsic_zy)``, 0-dim tensors of ``z``'s dtype; only ``loss`` carries a
        useful gradient.

    Shapes:
        z: ``(batch, h)``; Kx, Ky: ``(batch, batch)``.

    Raises:
        ValueError: If ``z`` holds NaN/inf or is empty, ``Kx`` or ``Ky`` is not the finite,
            symmetric Gram matrix of the batch, ``beta``, ``sigma`` or ``eps`` is out of range,
            or ``nhsic`` is unknown.
        TypeError: If a tensor is not floating, ``Kx``/``Ky`` differ from ``z`` in dtype, or
            ``cache`` is not a dict.
    """
    cache = _check_bottleneck(z, Kx, Ky, beta, nhsic, eps, cache)
    dtype, (z, Kx, Ky) = z.dtype, _widen(z, Kx, Ky)
    Kz = gaussian_kernel(_tame(z) if isinstance(sigma, str) else z, sigma)  # the median width is scale-free
    if nhsic == "cka":  # normalized_hsic(Kz, Kx) and (Kz, Ky), sharing the self-terms
        for key, K, name in (("cka_x", Kx, "Kx"), ("cka_y", Ky, "Ky")):
            if key not in cache:  # the first call of a batch checks Kx and Ky
                _check_gram_values(K, name)
                K = _tame(K)
                cache[key] = (*_self_term(K, "biased"), K)
        (hzz, tol_z), (hxx, tol_x, Kx), (hyy, tol_y, Ky) = _self_term(Kz, "biased"), cache["cka_x"], cache["cka_y"]
        hx = _cka(_hsic_biased(Kz, _same_batch(Kx, Kz)), hzz, hxx, tol_z, tol_x)
        hy = _cka(_hsic_biased(Kz, _same_batch(Ky, Kz)), hzz, hyy, tol_z, tol_y)
    else:
        for key, K, name in (("cca_x", Kx, "Kx"), ("cca_y", Ky, "Ky")):
            if key not in cache:
                _check_gram_values(K, name)
                cache[key] = _cca_operator(K, eps)
        Rz = _cca_operator(Kz, eps)
        hx = _trace_of_product(Rz, _same_batch(cache["cca_x"], Rz))
        hy = _trace_of_product(Rz, _same_batch(cache["cca_y"], Rz))
    return (hx - beta * hy).to(dtype), hx.detach().to(dtype), hy.detach().to(dtype)
# --8<-- [end:bottleneck]


def _check_bottleneck(
    z: torch.Tensor, Kx: torch.Tensor, Ky: torch.Tensor, beta: float, nhsic: str, eps: float,
    cache: dict[str, torch.Tensor] | None,
) -> dict[str, torch.Tensor]:
    """Check the arguments of [`bottleneck_loss`][kexue.hsic.bottleneck_loss] (all but the values of
    ``Kx`` and ``Ky``, which the first call of a batch checks); return the cache dict to use."""
    check_real(beta, "beta", at_least=0)
    if not isinstance(nhsic, str) or nhsic not in ("cka", "cca"):
        raise ValueError(f"nhsic must be 'cka' or 'cca', got {nhsic!r}")
    check_real(eps, "eps", above=0)
    if cache is not None and not isinstance(cache, dict):
        raise TypeError(f"cache must be a dict (a fresh one for each batch) or None, got {type(cache).__name__}")
    check_finite(check_tensor(z, "z", 2, floating=True, nonempty=True), "z")
    n = z.shape[0]
    if nhsic == "cca" and n < 2:
        raise ValueError(f"z: the 'cca' normalisation needs a batch of n >= 2 examples, got n = {n}")
    for name, K in (("Kx", Kx), ("Ky", Ky)):
        check_tensor(K, name, 2, floating=True)
        if tuple(K.shape) != (n, n):
            raise ValueError(f"{name} must be the (n, n) = ({n}, {n}) Gram matrix of z's batch, got shape {tuple(K.shape)}")
        if K.dtype != z.dtype:
            raise TypeError(f"{name} must have z's dtype {z.dtype}, got {K.dtype}")
    return {} if cache is None else cache


def _same_batch(cached: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """``cached`` if it belongs to the batch of ``current`` (a cache reused across batches does not)."""
    if cached.shape != current.shape:
        raise ValueError(f"cache holds the matrices of a batch of {cached.shape[0]} examples, but z has "
                         f"{current.shape[0]} rows: pass a fresh dict for each batch")
    return cached

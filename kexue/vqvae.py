r"""VQ-VAE: nearest-code quantisation, the straight-through estimator, codebook learning and a code prior.

Companion to Su Jianlin, ["VQ-VAE的简明介绍：量子化自编码器"](https://kexue.fm/archives/6760) (2019),
which explains van den Oord, Vinyals and Kavukcuoglu, ["Neural Discrete Representation
Learning"](https://arxiv.org/abs/1711.00937). An encoder maps an image to a grid of vectors $z$;
each vector is replaced by its nearest codebook entry $e_k$; a decoder reconstructs from the
quantised grid. Gradients pass the non-differentiable nearest-neighbour step with the
straight-through estimator, and two extra losses move the codebook toward the encoder outputs and
keep the encoder committed to its codes.

Layout: pure functions on tensors ([`nearest_code`][kexue.vqvae.nearest_code],
[`quantize`][kexue.vqvae.quantize], [`ema_update`][kexue.vqvae.ema_update],
[`restart_dead_codes`][kexue.vqvae.restart_dead_codes], [`perplexity`][kexue.vqvae.perplexity],
[`kmeans`][kexue.vqvae.kmeans]), a registry of codebook initialisers
([`CODEBOOK_INITS`][kexue.vqvae.CODEBOOK_INITS]), a thin codebook layer
([`VectorQuantizer`][kexue.vqvae.VectorQuantizer]) and the autoregressive prior over code grids
([`CodePrior`][kexue.vqvae.CodePrior], [`sample_codes`][kexue.vqvae.sample_codes]). Vectors are
channels-last, ``(..., D)``, in the functions; the layer takes channels-first feature maps
``(B, D, H, W)`` as convolutions produce them. The small digit model, its training loops and the
baselines of the page live in [`kexue.experiments.vqvae`][kexue.experiments.vqvae].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_finite, check_generator, check_int, check_real, check_tensor

__all__ = [
    "CODEBOOK_INITS",
    "CodePrior",
    "EMAState",
    "Quantized",
    "VectorQuantizer",
    "code_usage",
    "codebook_init",
    "dead_codes",
    "ema_update",
    "kmeans",
    "nearest_code",
    "nearest_code_reference",
    "perplexity",
    "prior_nll_bits",
    "quantize",
    "restart_dead_codes",
    "sample_codes",
    "squared_distances",
    "straight_through",
    "uniform_bits",
]

_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------


def _check_codebook(codebook: Tensor, name: str = "codebook") -> None:
    check_tensor(codebook, name, 2, floating=True, nonempty=True)


def _check_vectors(z: Tensor, codebook: Tensor, name: str = "z") -> None:
    check_tensor(z, name, floating=True)
    if z.dim() < 1:
        raise ValueError(f"{name} must have shape (..., dim), got a scalar")
    if z.shape[-1] != codebook.shape[1]:
        raise ValueError(
            f"{name} has last dimension {z.shape[-1]} but the codebook holds {codebook.shape[1]}-dim codes "
            f"(dimension mismatch)"
        )
    if z.dtype != codebook.dtype:
        raise TypeError(f"{name} ({z.dtype}) and codebook ({codebook.dtype}) must share a dtype")


def _check_choice(value: object, name: str, choices: object) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def _check_indices(indices: Tensor, num_codes: int, name: str = "indices") -> None:
    check_tensor(indices, name, floating=False)
    if indices.dtype not in _INDEX_DTYPES:
        raise TypeError(f"{name} must be an integer tensor, got {indices.dtype}")
    check_int(num_codes, "num_codes")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_codes):
        raise ValueError(
            f"{name} must lie in [0, {num_codes - 1}], got range [{int(indices.min())}, {int(indices.max())}]"
        )


def _finite_extent(x: Tensor, name: str, *, at_least: float | None = None, at_most: float | None = None,
                   what: str = "values") -> tuple[float, float]:  # fmt: skip
    """``(min, max)`` of a real tensor in one pass (``(inf, -inf)`` if empty), if finite and within the bounds.

    For reducers (statistics, decisions, losses), which reject NaN/inf; the NaN and infinite entries
    are counted only on the way to the error. Raises ``ValueError`` naming ``name``.
    """
    if x.numel() == 0:
        return math.inf, -math.inf
    lo, hi = (float(v) for v in x.detach().aminmax())  # NaN propagates into both
    if not (math.isfinite(lo) and math.isfinite(hi)):
        check_finite(x, name)  # raises, counting the NaN and infinite entries
    if (at_least is not None and lo < at_least) or (at_most is not None and hi > at_most):
        bounds = f"[{'-inf' if at_least is None else f'{at_least:g}'}, {'inf' if at_most is None else f'{at_most:g}'}]"
        raise ValueError(f"{name} must hold {what} in {bounds}, got entries from {lo:.4g} to {hi:.4g}")
    return lo, hi


def _largest(x: Tensor, name: str) -> float:
    """Largest ``|entry|`` of a finite ``x`` (0 if empty), in one pass; NaN/inf raise ``ValueError`` naming ``name``."""
    lo, hi = _finite_extent(x, name)
    return max(-lo, hi, 0.0)


def _check_distance_args(z: Tensor, codebook: Tensor, code_sqnorms: Tensor | None) -> float | None:
    r"""Validate the arguments of the distance functions once; say how to compute safely.

    Reducing vectors to distances and nearest codes is a decision, so NaN/inf entries are rejected.
    The one-matmul form $\|z\|^2 - 2 z\cdot e + \|e\|^2$ has intermediates up to $4 D m^2$ for
    entries of size $m$; beyond the dtype's largest number it turns into ``inf - inf`` = NaN.

    Returns:
        None when the fast path is safe as it is; otherwise the power of two to multiply ``z`` and
        the codebook by in the working dtype (float32 for float16/bfloat16, whose rounding changes
        nearest codes; the dtype itself otherwise) so that their largest entry lies in [1/2, 1).
        Scaling both by a power of two is exact and leaves every nearest code unchanged.
    """
    _check_codebook(codebook)
    _check_vectors(z, codebook)
    num_codes = codebook.shape[0]
    if code_sqnorms is not None:
        check_tensor(code_sqnorms, "code_sqnorms", 1, floating=True)
        if code_sqnorms.shape != (num_codes,):
            raise ValueError(f"code_sqnorms must have shape ({num_codes},), one per code, got {tuple(code_sqnorms.shape)}")
        if code_sqnorms.dtype != codebook.dtype:
            raise TypeError(f"code_sqnorms ({code_sqnorms.dtype}) and codebook ({codebook.dtype}) must share a dtype")
        check_finite(code_sqnorms, "code_sqnorms")
    m = max(_largest(codebook, "codebook"), _largest(z, "z"))
    work = torch.promote_types(z.dtype, torch.float32)
    if m > math.sqrt(torch.finfo(work).max / (4 * codebook.shape[1])):
        return math.ldexp(1.0, -math.frexp(m)[1])
    return None if work == z.dtype else 1.0


def _rescaled(z: Tensor, codebook: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """``z`` and ``codebook`` in the working dtype, both times the power of two ``scale``."""
    work = torch.promote_types(z.dtype, torch.float32)
    return z.to(work) * scale, codebook.to(work) * scale


def _squared_distances_safely(z: Tensor, codebook: Tensor, scale: float) -> Tensor:
    """Distances of float16/bfloat16 or very large float32 input, computed in float64 and rounded once."""
    if z.dtype == torch.float64:  # scale < 1: the squares themselves overflow float64
        raise ValueError(
            f"z and codebook have entries near 2**{1 - math.frexp(scale)[1]}: their squared distances "
            "overflow float64; scale them down"
        )
    d64 = squared_distances(z.double(), codebook.double(), validate_args=False)
    d = d64.to(z.dtype)
    if not bool(torch.isfinite(d).all()):
        raise ValueError(
            f"the squared distances of z and codebook overflow {z.dtype} (the largest is "
            f"{float(d64.max()):.3g}); pass float64 tensors or scale z and codebook down"
        )
    return d


# ----------------------------------------------------------------------------------------------
# nearest code
# ----------------------------------------------------------------------------------------------


def squared_distances(
    z: Tensor, codebook: Tensor, code_sqnorms: Tensor | None = None, *, validate_args: bool = True
) -> Tensor:
    r"""Squared Euclidean distances between vectors and codes, through one matrix multiply.

    $$d_{nk} = \|z_n\|^2 - 2\, z_n \cdot e_k + \|e_k\|^2 .$$

    In floating point the result can be slightly negative for a vector sitting on a code; no
    square root is taken, so that is harmless. float16/bfloat16 input, and float32 entries so
    large that the intermediate squares would overflow, are computed in float64 and rounded once
    to the input's dtype.

    Args:
        z: Vectors, last axis is the code dimension.
        codebook: Codes $e_k$ as rows.
        code_sqnorms: Optional precomputed $\|e_k\|^2$ (reuse it across calls with one codebook).
        validate_args: False skips the checks (for callers that ran them already, e.g. under
            ``torch.func.vmap``, where the data-dependent ones cannot run).

    Returns:
        The distance matrix; an empty ``z`` gives an empty result.

    Shapes:
        z: ``(..., D)``; codebook: ``(K, D)``; code_sqnorms: ``(K,)``; returns ``(..., K)``.

    Raises:
        ValueError: On a dimension mismatch, an empty codebook, NaN/inf entries, or distances
            beyond the largest number of the dtype.
        TypeError: On non-floating or mismatched dtypes.
    """
    if validate_args and (scale := _check_distance_args(z, codebook, code_sqnorms)) is not None:
        return _squared_distances_safely(z, codebook, scale)  # float16, or squares beyond the dtype
    flat = z.reshape(-1, z.shape[-1])
    e2 = codebook.pow(2).sum(1) if code_sqnorms is None else code_sqnorms
    d = torch.addmm(e2, flat, codebook.t(), beta=1.0, alpha=-2.0)
    d += flat.pow(2).sum(1, keepdim=True)
    return d.reshape(*z.shape[:-1], codebook.shape[0])


# --8<-- [start:nearest]
def nearest_code(
    z: Tensor, codebook: Tensor, code_sqnorms: Tensor | None = None, *, validate_args: bool = True
) -> Tensor:
    r"""Index of the nearest code for every vector (the fast path).

    $$k(z) = \arg\min_k \|z - e_k\|^2 = \arg\min_k \big(\|e_k\|^2 - 2\, z \cdot e_k\big),$$

    since $\|z\|^2$ does not depend on $k$. ``addmm`` computes the bracket for a block of vectors
    against all codes at once and the block's nearest codes are read off before the next block, so
    the full $N \times K$ matrix is never stored and each block is still in cache when it is
    scanned; no square root. The scan is parallel and exact: each row's minimum, a mask of where
    the row reaches it, and the sum of the mask times $2^p + k$ (with $2^p \ge K$, exact in the
    dtype), which is $2^p + k(z)$ when the minimum is unique and at least $2^{p+1}$ on a tie. Ties
    go to the lowest index (tied rows, and problems of at most $2^{17}$ scores, are scanned by
    NumPy's argmin), and identical codes count as one code with the lowest index, even where the
    matrix product rounds their scores apart. Compare
    [`nearest_code_reference`][kexue.vqvae.nearest_code_reference], the slow obvious version.

    A nearest code is a decision, so NaN/inf entries are rejected. float16/bfloat16 input is
    compared in float32 (its own rounding changes nearest codes), and entries so large that the
    squares would overflow are first scaled by a power of two, which is exact and changes no
    nearest code.

    Args:
        z: Vectors, last axis is the code dimension.
        codebook: Codes as rows.
        code_sqnorms: Optional precomputed $\|e_k\|^2$ (e.g. once per training step).
        validate_args: False skips the checks and takes the single-``addmm`` path that function
            transforms can trace (for callers that ran the checks already, e.g. under
            ``torch.func.vmap``, where the data-dependent ones cannot run). That path does not
            merge identical codes, so a vector may get either index of a duplicated code.

    Returns:
        int64 indices in ``[0, K)``; an empty input gives an empty result.

    Shapes:
        z: ``(..., D)``; codebook: ``(K, D)``; code_sqnorms: ``(K,)``; returns ``(...)``.

    Raises:
        ValueError: On a dimension mismatch (``z`` vs ``codebook``), an empty codebook or NaN/inf
            entries.
        TypeError: On non-floating or mismatched dtypes.

    Examples:
        >>> import torch
        >>> from kexue.vqvae import nearest_code
        >>> codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> nearest_code(torch.tensor([[0.9, 0.2], [0.1, 0.1], [0.2, 0.7]]), codebook)
        tensor([1, 0, 2])
    """
    if not validate_args:  # traceable: one (N, K) matrix
        flat = z.reshape(-1, z.shape[-1])
        e2 = codebook.pow(2).sum(1) if code_sqnorms is None else code_sqnorms
        return torch.addmm(e2, flat, codebook.t(), beta=1.0, alpha=-2.0).argmin(dim=1).reshape(z.shape[:-1])
    if (scale := _check_distance_args(z, codebook, code_sqnorms)) is not None:
        z, codebook = _rescaled(z, codebook, scale)  # float16, or huge entries
        code_sqnorms = None
    return _nearest_in_blocks(z.reshape(-1, z.shape[-1]), codebook, code_sqnorms).reshape(z.shape[:-1])


def _nearest_in_blocks(flat: Tensor, codebook: Tensor, code_sqnorms: Tensor | None) -> Tensor:
    """``argmin_k (|e_k|^2 - 2 z.e_k)`` for checked ``(N, D)`` vectors, a cache-sized block of rows at a time."""
    with torch.no_grad():  # indices have no gradient; out= needs tensors outside autograd
        flat, codebook = flat.detach(), codebook.detach()
        e2 = codebook.pow(2).sum(1) if code_sqnorms is None else code_sqnorms.detach()
        n, k, codes_t = flat.shape[0], codebook.shape[0], codebook.t()
        if flat.device.type != "cpu":
            index = torch.addmm(e2, flat, codes_t, beta=1.0, alpha=-2.0).argmin(dim=1)
        elif n * k <= _SMALL_ENTRIES or (offset := _tag_offset(k, flat.dtype)) is None:
            index = _argmin_in_blocks(flat, codes_t, e2)  # a small problem, or too many codes to tag
        else:
            index = _tagged_argmin_in_blocks(flat, codes_t, e2, offset)
        # a matrix product may round the scores of two identical codes differently (their columns
        # fall in different register tiles): identical codes are one code, the lowest index
        return index if (lowest := _lowest_equal_code(codebook)) is None else lowest[index]


def _score_blocks(flat: Tensor, codes_t: Tensor, e2: Tensor) -> Iterator[tuple[slice, Tensor]]:
    """Yield ``(rows, scores)``: ``|e_k|^2 - 2 z.e_k`` for each block of at most ``_BLOCK_ENTRIES`` scores, the
    vectors ``flat[rows]``, computed into one buffer that the next block overwrites."""
    n, k = flat.shape[0], codes_t.shape[1]
    step = max(16, _BLOCK_ENTRIES // k)
    buffer = torch.empty(min(step, n), k, dtype=flat.dtype)
    for start in range(0, n, step):
        block = flat[start : start + step]
        out = buffer[: block.shape[0]]
        torch.addmm(e2, block, codes_t, beta=1.0, alpha=-2.0, out=out)
        yield slice(start, start + block.shape[0]), out


def _tagged_argmin_in_blocks(flat: Tensor, codes_t: Tensor, e2: Tensor, offset: float) -> Tensor:
    """``argmin_k (|e_k|^2 - 2 z.e_k)`` by parallel reductions on each score block (exact; see ``nearest_code``)."""
    k = codes_t.shape[1]
    tags = torch.arange(k, dtype=flat.dtype).add_(offset)
    found = torch.empty(flat.shape[0], dtype=flat.dtype)
    for rows, out in _score_blocks(flat, codes_t, e2):
        torch.eq(out, out.amin(1, keepdim=True), out=out)  # 1 where a row reaches its minimum, else 0
        torch.sum(out.mul_(tags), 1, out=found[rows])
    # a row with one minimum sums to offset + k exactly; a tie sums to >= 2 * offset
    index = found.sub_(offset).long()
    if (tied := ((index < 0) | (index >= k)).nonzero().squeeze(1)).numel():
        index[tied] = _argmin_in_blocks(flat[tied], codes_t, e2)
    return index
# --8<-- [end:nearest]


def _lowest_equal_code(codebook: Tensor) -> Tensor | None:
    """``lowest[j]``: the lowest index of a code equal to code ``j`` (``-0.0 == 0.0``); None when all codes differ.

    Exact integer sums of the codes' bit patterns find candidates in O(K D) (equal codes have equal
    sums); only when two sums agree does ``torch.unique`` compare whole rows.
    """
    k = codebook.shape[0]
    plain = codebook + 0.0  # -0.0 -> 0.0, so equal vectors have equal bits
    bits = plain.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[plain.element_size()])
    if k < 2 or torch.unique(bits.sum(1, dtype=torch.int64)).numel() == k:
        return None
    _, group = torch.unique(plain, dim=0, return_inverse=True)
    first = torch.full((k,), k, dtype=torch.int64, device=codebook.device)
    first.scatter_reduce_(0, group, torch.arange(k, device=codebook.device), "amin")
    lowest = first[group]
    return None if bool((lowest == torch.arange(k, device=codebook.device)).all()) else lowest


def _tag_offset(k: int, dtype: torch.dtype) -> float | None:
    """The power of two ``2^p >= k`` whose tags ``2^p + j`` (j < k) and their doubled sums are exact integers in
    ``dtype``; None when ``k`` is too large for that (over 2^22 codes in float32)."""
    offset = 2.0 ** max(0, math.ceil(math.log2(k)))
    return None if 2 * offset * torch.finfo(dtype).eps > 1 else offset


def _argmin_in_blocks(flat: Tensor, codes_t: Tensor, e2: Tensor) -> Tensor:
    """The same argmin with NumPy (first index on ties), for tied rows, small problems and codebooks too large to tag."""
    index = np.empty(flat.shape[0], dtype=np.int64)
    for rows, out in _score_blocks(flat, codes_t, e2):
        np.argmin(out.numpy(), axis=1, out=index[rows])
    return torch.from_numpy(index)


_BLOCK_ENTRIES = 1 << 21
"""Entries of the score block of [`nearest_code`][kexue.vqvae.nearest_code] (8 MiB in float32, a
quarter of the L3 cache): big enough that the five operations per block cost little more than their
memory traffic, small enough to stay in cache until its nearest codes are read. Measured on the
benchmark shapes: 2^19, 2^20, 2^21 and 2^22 entries gave about 70, 77, 80 and 78 % of the GEMM
throughput."""


_SMALL_ENTRIES = 1 << 17
"""Problems of at most this many scores (512 KiB in float32) are scanned by NumPy's argmin in one
block: the five parallel operations of the tagged scan cost more than they save there (about 110
against 130 µs at 1024×128, 60 against 90 µs at 1024×64)."""


def nearest_code_reference(z: Tensor, codebook: Tensor) -> Tensor:
    r"""Slow, obvious nearest code: try every code in turn, keep the first strictly closer one.

    $$k(z) = \min\{k : \|z - e_k\|^2 = \min_j \|z - e_j\|^2\}.$$

    Args:
        z: Vectors, last axis is the code dimension.
        codebook: Codes as rows.

    Returns:
        int64 indices (lowest index on ties).

    Shapes:
        z: ``(..., D)``; codebook: ``(K, D)``; returns ``(...)``.

    Raises:
        ValueError: On a dimension mismatch, an empty codebook or NaN/inf entries (as
            [`nearest_code`][kexue.vqvae.nearest_code], with the same float16 and rescaling rules).
        TypeError: On non-floating or mismatched dtypes.
    """
    if (scale := _check_distance_args(z, codebook, None)) is not None:
        z, codebook = _rescaled(z, codebook, scale)
    flat = z.reshape(-1, z.shape[-1])
    best = torch.full((flat.shape[0],), float("inf"), dtype=z.dtype, device=z.device)
    index = torch.zeros(flat.shape[0], dtype=torch.int64, device=z.device)
    for k in range(codebook.shape[0]):
        d = ((flat - codebook[k]) ** 2).sum(dim=1)
        closer = d < best
        best = torch.where(closer, d, best)
        index = torch.where(closer, torch.full_like(index, k), index)
    return index.reshape(z.shape[:-1])


# ----------------------------------------------------------------------------------------------
# straight-through estimator and the losses
# ----------------------------------------------------------------------------------------------


# --8<-- [start:quantize]
def straight_through(z: Tensor, z_q: Tensor) -> Tensor:
    r"""Straight-through estimator: the value of ``z_q`` with the gradient of ``z``.

    $$z_{st} = z + \mathrm{sg}[z_q - z],\qquad \frac{\partial z_{st}}{\partial z} = I .$$

    Bengio, Léonard and Courville ([arXiv:1308.3432](https://arxiv.org/abs/1308.3432)); the form
    used by VQ-VAE. With ``z_q = relu(z)`` it is Su's example: the value of a ReLU with
    derivative 1 everywhere.

    Elementwise: NaN/inf propagate as in torch.

    Shapes:
        z, z_q: the same shape; returns that shape.

    Raises:
        TypeError: If ``z`` or ``z_q`` is not a floating tensor (a gradient needs one), or their
            dtypes differ.
        ValueError: If the shapes differ.
    """
    check_tensor(z, "z", floating=True)
    check_tensor(z_q, "z_q", floating=True)
    if z.shape != z_q.shape:
        raise ValueError(f"z {tuple(z.shape)} and z_q {tuple(z_q.shape)} must have the same shape")
    if z.dtype != z_q.dtype:
        raise TypeError(f"z ({z.dtype}) and z_q ({z_q.dtype}) must share a dtype")
    return z + (z_q - z).detach()


class Quantized(NamedTuple):
    r"""Output of [`quantize`][kexue.vqvae.quantize].

    Attributes:
        z_st: Straight-through output: the value of ``z_q``, the gradient of ``z``.
        indices: Code index per vector.
        z_q: The selected codes (the gradient of the codebook term flows to the codebook).
        codebook_loss: Mean of $(\mathrm{sg}[z] - z_q)^2$.
        commitment_loss: Mean of $(z - \mathrm{sg}[z_q])^2$.
        loss: ``codebook_weight * codebook_loss + beta * commitment_loss``.
    """

    z_st: Tensor
    indices: Tensor
    z_q: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    loss: Tensor


def quantize(
    z: Tensor, codebook: Tensor, beta: float = 0.25, codebook_weight: float = 1.0, *, validate_args: bool = True
) -> Quantized:
    r"""Quantise vectors to their nearest codes, with the straight-through output and both VQ losses.

    $$\mathcal L_{\text{VQ}} = w\,\|\mathrm{sg}[z] - z_q\|^2 + \beta\,\|z - \mathrm{sg}[z_q]\|^2,
    \qquad z_q = e_{k(z)},$$

    the last two terms of eq. (3) of arXiv:1711.00937 ($w = 1$, $\beta = 0.25$). Both squared norms
    are **averaged over all N·D elements** (Keras/PyTorch ``mse``, as in Su's script, Sonnet and
    vector-quantize-pytorch), not summed over D. Su writes the weights the other way round
    ($\beta$ on the codebook term, $\gamma$ on the commitment term). With an EMA codebook pass
    ``codebook_weight=0``.

    Args:
        z: Encoder outputs, last axis is the code dimension (at least one vector).
        codebook: Codes as rows.
        beta: Commitment weight (>= 0).
        codebook_weight: Weight of the codebook term (>= 0).
        validate_args: False skips the checks (for callers that ran them already, e.g.
            [`StackedVQVAE`][kexue.experiments.vqvae.StackedVQVAE] under ``torch.func.vmap``).

    Returns:
        A [`Quantized`][kexue.vqvae.Quantized] tuple.

    Shapes:
        z: ``(..., D)``; codebook: ``(K, D)``; z_st, z_q: ``(..., D)``; indices: ``(...)``;
        losses: scalars.

    Raises:
        ValueError: On a dimension mismatch, an empty codebook, an empty ``z``, NaN/inf entries,
            losses beyond the largest number of the dtype, or negative weights.
        TypeError: On non-floating or mismatched dtypes.

    Examples:
        >>> import torch
        >>> from kexue.vqvae import quantize
        >>> codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0]], requires_grad=True)
        >>> z = torch.tensor([[0.8, 1.0], [0.0, 0.2]], requires_grad=True)
        >>> q = quantize(z, codebook, beta=0.25)
        >>> q.indices, q.z_st
        (tensor([1, 0]), tensor([[1., 1.], [0., 0.]], grad_fn=<AddBackward0>))
        >>> round(q.codebook_loss.item(), 4), round(q.commitment_loss.item(), 4)  # (0.04 + 0.04) / 4
        (0.02, 0.02)
    """
    if validate_args:  # the data checks (NaN/inf, magnitude) run once, in nearest_code
        _check_codebook(codebook)
        _check_vectors(z, codebook)
        if z.numel() == 0:
            raise ValueError(f"z must hold at least one vector, got shape {tuple(z.shape)}")
        check_real(beta, "beta", at_least=0)
        check_real(codebook_weight, "codebook_weight", at_least=0)
    with torch.no_grad():
        indices = nearest_code(z, codebook, validate_args=validate_args)
    z_q = F.embedding(indices, codebook)  # gather rows; gradient flows to the codebook
    codebook_loss = F.mse_loss(z_q, z.detach())
    commitment_loss = F.mse_loss(z, z_q.detach())
    loss = codebook_weight * codebook_loss + beta * commitment_loss
    if validate_args and not bool(torch.isfinite(loss)):  # finite inputs, but squares beyond the dtype
        raise ValueError(f"the VQ losses overflow {z.dtype}: z lies too far from its codes; scale z down or use float64")
    return Quantized(straight_through(z, z_q), indices, z_q, codebook_loss, commitment_loss, loss)
# --8<-- [end:quantize]


# ----------------------------------------------------------------------------------------------
# EMA codebook and dead-code restarts
# ----------------------------------------------------------------------------------------------


class EMAState(NamedTuple):
    r"""Running statistics of an EMA codebook: per-code counts $N_i$ and sums $m_i$.

    Attributes:
        cluster_size: ``(K,)`` exponentially averaged number of vectors assigned to each code.
        embed_sum: ``(K, D)`` exponentially averaged sum of those vectors.
    """

    cluster_size: Tensor
    embed_sum: Tensor


def _check_state(state: object, codebook: Tensor) -> None:
    if not isinstance(state, tuple) or len(state) != 2 or not all(isinstance(t, Tensor) for t in state):
        raise TypeError(f"state must be an EMAState(cluster_size, embed_sum), got {type(state).__name__}")
    check_tensor(state[0], "state.cluster_size", 1, floating=True)
    check_tensor(state[1], "state.embed_sum", 2, floating=True)
    if state[0].shape != codebook.shape[:1] or state[1].shape != codebook.shape:
        raise ValueError(
            f"state must hold cluster_size (K,) and embed_sum (K, D) matching the codebook {tuple(codebook.shape)}, "
            f"got {tuple(state[0].shape)} and {tuple(state[1].shape)}"
        )
    check_finite(state[0], "state.cluster_size")
    check_finite(state[1], "state.embed_sum")


def _check_ema_args(codebook: Tensor, z: Tensor, indices: Tensor, state: EMAState, decay: float, eps: float) -> None:
    """All checks of ema_update: shapes and dtypes, finite statistics (an average), index range, rates."""
    _check_codebook(codebook)
    _check_vectors(z, codebook)
    _largest(codebook, "codebook")
    _largest(z, "z")
    _check_indices(indices, codebook.shape[0])
    if indices.shape != z.shape[:-1]:
        raise ValueError(f"indices {tuple(indices.shape)} must match z without its last axis {tuple(z.shape[:-1])}")
    _check_state(state, codebook)
    check_real(decay, "decay", at_least=0)
    if decay >= 1:
        raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
    check_real(eps, "eps", at_least=0)


# --8<-- [start:ema]
def ema_update(
    codebook: Tensor,
    z: Tensor,
    indices: Tensor,
    state: EMAState,
    decay: float = 0.99,
    eps: float = 1e-5,
    *,
    validate_args: bool = True,
) -> tuple[Tensor, EMAState]:
    r"""One EMA codebook step (arXiv:1711.00937, appendix A.1) with Laplace-smoothed counts.

    With $n_i$ vectors assigned to code $i$ and $s_i$ their sum,

    $$N_i \leftarrow \gamma N_i + (1-\gamma) n_i,\quad m_i \leftarrow \gamma m_i + (1-\gamma) s_i,\quad
    e_i = \frac{m_i}{\tilde N_i},\quad \tilde N_i = \frac{N_i + \epsilon}{\sum_j N_j + K\epsilon}\sum_j N_j .$$

    The smoothing (Sonnet, vector-quantize-pytorch) only keeps $\tilde N_i > 0$; with
    ``decay=0, eps=0`` this is one Lloyd (k-means) step. A code whose $\tilde N_i$ is exactly 0
    keeps its previous value.

    Args:
        codebook: Current codes.
        z: Vectors that were quantised.
        indices: Their code indices.
        state: Current [`EMAState`][kexue.vqvae.EMAState].
        decay: $\gamma$ in [0, 1).
        eps: Laplace smoothing $\epsilon$ (>= 0).
        validate_args: False skips the checks (for callers that ran them already).

    Returns:
        ``(new_codebook, new_state)``; the inputs are not modified.

    Shapes:
        codebook: ``(K, D)``; z: ``(..., D)``; indices: ``(...)``; state: ``(K,)``, ``(K, D)``.

    Raises:
        ValueError: On inconsistent shapes, out-of-range indices, NaN/inf in ``codebook``, ``z``
            or ``state`` (the step averages them), or bad ``decay``/``eps``.
        TypeError: If ``state`` is not an [`EMAState`][kexue.vqvae.EMAState], or on non-floating
            or mismatched dtypes.

    Examples:
        One Lloyd step (``decay=0, eps=0``): each used code moves to the mean of its vectors,
        the unused code 2 keeps its value.

        >>> import torch
        >>> from kexue.vqvae import EMAState, ema_update, nearest_code
        >>> codebook = torch.tensor([[0.0, 0.0], [4.0, 4.0], [9.0, -9.0]])
        >>> z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [5.0, 4.0]])
        >>> state = EMAState(torch.ones(3), codebook.clone())
        >>> new, state = ema_update(codebook, z, nearest_code(z, codebook), state, decay=0.0, eps=0.0)
        >>> new
        tensor([[ 0.5000,  0.5000], [ 4.0000,  4.0000], [ 9.0000, -9.0000]])
        >>> state.cluster_size
        tensor([2., 2., 0.])
    """
    if validate_args:
        _check_ema_args(codebook, z, indices, state, decay, eps)
    num_codes = codebook.shape[0]
    flat, idx = z.detach().reshape(-1, z.shape[-1]), indices.reshape(-1).long()
    counts = torch.bincount(idx, minlength=num_codes).to(z.dtype)
    sums = torch.zeros_like(codebook).index_add_(0, idx, flat)
    cluster_size = decay * state.cluster_size + (1 - decay) * counts
    embed_sum = decay * state.embed_sum + (1 - decay) * sums
    total = cluster_size.sum()
    smoothed = (cluster_size + eps) / (total + num_codes * eps) * total
    safe = torch.where(smoothed > 0, smoothed, torch.ones_like(smoothed))
    new = torch.where((smoothed > 0)[:, None], embed_sum / safe[:, None], codebook.detach())
    return new, EMAState(cluster_size, embed_sum)
# --8<-- [end:ema]


def restart_dead_codes(
    codebook: Tensor,
    state: EMAState,
    z: Tensor,
    threshold: float = 1.0,
    *,
    generator: torch.Generator | None = None,
    validate_args: bool = True,
) -> tuple[Tensor, EMAState, Tensor]:
    r"""Replace codes whose EMA usage fell below ``threshold`` by random current encoder outputs.

    $$e_i \leftarrow z_{\pi(i)},\quad N_i \leftarrow \tau,\quad m_i \leftarrow \tau\, z_{\pi(i)}
    \qquad\text{for all } i \text{ with } N_i < \tau,$$

    with $\pi(i)$ drawn uniformly from the batch (without replacement when the batch is large
    enough). Jukebox / SoundStream style; vector-quantize-pytorch's ``threshold_ema_dead_code``.

    Args:
        codebook: Current codes.
        state: Current [`EMAState`][kexue.vqvae.EMAState].
        z: A batch of encoder outputs to draw replacements from (at least one vector).
        threshold: $\tau > 0$, in units of "vectors per step" of the EMA count.
        generator: Source of randomness.
        validate_args: False skips the checks (for callers that ran them already).

    Returns:
        ``(new_codebook, new_state, dead)`` where ``dead`` is the boolean mask of restarted codes.

    Shapes:
        codebook: ``(K, D)``; z: ``(..., D)``; dead: ``(K,)``.

    Raises:
        ValueError: On a non-positive threshold, an empty ``z``, shape mismatches or NaN/inf in
            ``codebook``, ``state`` or ``z`` (they would become codes).
        TypeError: If ``state`` is not an [`EMAState`][kexue.vqvae.EMAState], ``generator`` not a
            ``torch.Generator``, or on non-floating or mismatched dtypes.
    """
    if validate_args:
        _check_codebook(codebook)
        _check_vectors(z, codebook)
        _check_state(state, codebook)
        check_real(threshold, "threshold", above=0)
        if z.numel() == 0:
            raise ValueError("z must hold at least one vector to draw replacement codes from")
        _largest(codebook, "codebook")
        _largest(z, "z")
        if generator is not None:
            check_generator(generator)
    flat = z.detach().reshape(-1, z.shape[-1])
    dead = state.cluster_size < threshold
    n_dead = int(dead.sum())
    if n_dead == 0:
        return codebook.detach().clone(), EMAState(state.cluster_size.clone(), state.embed_sum.clone()), dead
    if flat.shape[0] >= n_dead:
        pick = torch.randperm(flat.shape[0], generator=generator)[:n_dead]
    else:
        pick = torch.randint(flat.shape[0], (n_dead,), generator=generator)
    new_codes = flat[pick.to(flat.device)]
    codebook = codebook.detach().clone()
    codebook[dead] = new_codes
    cluster_size = state.cluster_size.clone()
    cluster_size[dead] = threshold
    embed_sum = state.embed_sum.clone()
    embed_sum[dead] = new_codes * threshold
    return codebook, EMAState(cluster_size, embed_sum), dead


# ----------------------------------------------------------------------------------------------
# usage metrics
# ----------------------------------------------------------------------------------------------


def code_usage(indices: Tensor, num_codes: int) -> Tensor:
    r"""Fraction of vectors assigned to each code, $p_k = n_k / N$.

    Args:
        indices: Code indices (any shape, at least one element).
        num_codes: Codebook size $K$.

    Returns:
        float64 probabilities summing to 1.

    Shapes:
        indices: ``(...)``; returns ``(K,)``.

    Raises:
        ValueError: If ``indices`` is empty or out of range.
    """
    _check_indices(indices, num_codes)
    if indices.numel() == 0:
        raise ValueError("indices is empty: usage of zero vectors is undefined")
    counts = torch.bincount(indices.reshape(-1).long(), minlength=num_codes).double()
    return counts / counts.sum()


def perplexity(indices: Tensor, num_codes: int) -> float:
    r"""Perplexity of the code usage, $\exp(-\sum_k p_k \log p_k)$, between 1 (one code) and $K$ (uniform).

    Args:
        indices: Code indices (any shape, at least one element).
        num_codes: Codebook size $K$.

    Returns:
        The perplexity as a float.

    Raises:
        ValueError: If ``indices`` is empty or out of range.

    Examples:
        >>> import torch
        >>> from kexue.vqvae import dead_codes, perplexity
        >>> perplexity(torch.tensor([0, 1, 2, 3]), 8), perplexity(torch.tensor([5, 5, 5]), 8)
        (4.0, 1.0)
        >>> dead_codes(torch.tensor([0, 1, 2, 3]), 8)
        4
    """
    p = code_usage(indices, num_codes)
    nz = p[p > 0]
    return float(torch.exp(-(nz * nz.log()).sum()))


def dead_codes(indices: Tensor, num_codes: int) -> int:
    r"""Number of codes that no vector in ``indices`` uses, $\#\{k : n_k = 0\}$.

    Args:
        indices: Code indices (e.g. of a whole epoch); may be empty (then all codes are dead).
        num_codes: Codebook size $K$.

    Returns:
        The count, in ``[0, K]``.

    Raises:
        ValueError: If ``indices`` is out of range.
    """
    _check_indices(indices, num_codes)
    return int((torch.bincount(indices.reshape(-1).long(), minlength=num_codes) == 0).sum())


# ----------------------------------------------------------------------------------------------
# k-means and codebook initialisers
# ----------------------------------------------------------------------------------------------


def kmeans(
    x: Tensor, num_codes: int, iters: int = 20, *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    r"""Lloyd's k-means with k-means++ seeding; empty clusters keep their centre.

    $$k_n = \arg\min_k \|x_n - c_k\|^2,\qquad c_k = \frac{1}{|\{n : k_n = k\}|}\sum_{n : k_n = k} x_n .$$

    Seeding (Arthur and Vassilvitskii, 2007): the first centre is a uniform sample, each next one
    a sample drawn with probability proportional to its squared distance to the nearest centre so far.

    k-means summarises the points, so NaN/inf entries are rejected. float16/bfloat16 points are
    clustered in float32 (their sums of squared distances overflow), and points so large that
    those sums would overflow are first scaled by a power of two; both give the same centres as
    exact arithmetic would, rounded once to the input's dtype.

    Args:
        x: Points (at least one).
        num_codes: Number of centres $K$ (if the points have fewer distinct values, centres repeat).
        iters: Lloyd iterations (>= 0).
        generator: Source of randomness for the seeding.

    Returns:
        ``(centres, indices)``, the indices being the assignment under the final centres.

    Shapes:
        x: ``(N, D)``; centres: ``(K, D)``; indices: ``(N,)``.

    Raises:
        ValueError: If ``x`` is not a non-empty 2-D tensor, holds NaN/inf, or
            ``num_codes``/``iters`` are invalid.
        TypeError: If ``x`` is not a floating tensor or ``generator`` not a ``torch.Generator``.
    """
    check_tensor(x, "x", 2, floating=True, nonempty=True)
    check_int(num_codes, "num_codes")
    check_int(iters, "iters", 0)
    if generator is not None:
        check_generator(generator)
    return _kmeans(x, num_codes, iters, generator, "x")


def _kmeans(x: Tensor, num_codes: int, iters: int, generator: torch.Generator | None, name: str) -> tuple[Tensor, Tensor]:
    """k-means of checked arguments; ``name`` is the caller's name for ``x`` in the NaN/inf error."""
    m = _largest(x, name)
    work = torch.promote_types(x.dtype, torch.float32)
    # the seeding sums N squared distances, each at most 4 D m^2
    shift = math.frexp(m)[1] if m > math.sqrt(torch.finfo(work).max / (4 * x.numel())) else 0
    if work == x.dtype and shift == 0:
        return _lloyd(x.detach(), num_codes, iters, generator)
    centres, idx = _lloyd(torch.ldexp(x.detach().to(work), torch.tensor(-shift)), num_codes, iters, generator)
    half = shift // 2  # undo the scaling in float64, in two exact steps that cannot overflow
    centres = centres.double() * math.ldexp(1.0, half) * math.ldexp(1.0, shift - half)
    return centres.to(x.dtype), idx


def _lloyd(x: Tensor, num_codes: int, iters: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centres = x[first].repeat(num_codes, 1)
    closest = ((x - centres[0]) ** 2).sum(1)
    for k in range(1, num_codes):
        total = closest.sum()
        if total <= 0:  # every point coincides with a centre: repeat the last one
            break
        pick = int(torch.multinomial((closest / total).double().cpu(), 1, generator=generator))
        centres[k:] = x[pick]
        closest = torch.minimum(closest, ((x - x[pick]) ** 2).sum(1))
    for _ in range(iters):
        idx = _nearest_in_blocks(x, centres, None)
        counts = torch.bincount(idx, minlength=num_codes).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, idx, x)
        used = counts > 0
        centres[used] = sums[used] / counts[used, None]
    return centres, _nearest_in_blocks(x, centres, None)


def _init_normal(z: Tensor, num_codes: int, generator: torch.Generator | None) -> Tensor:
    d = z.shape[-1]
    return torch.randn(num_codes, d, generator=generator, dtype=z.dtype) / math.sqrt(d)


def _init_uniform(z: Tensor, num_codes: int, generator: torch.Generator | None) -> Tensor:
    d = z.shape[-1]
    return (torch.rand(num_codes, d, generator=generator, dtype=z.dtype) * 2 - 1) / num_codes


def _init_kmeans(z: Tensor, num_codes: int, generator: torch.Generator | None) -> Tensor:
    return _kmeans(z.reshape(-1, z.shape[-1]), num_codes, 10, generator, "z")[0]


CODEBOOK_INITS: dict[str, Callable[[Tensor, int, torch.Generator | None], Tensor]] = {
    "normal": _init_normal,
    "uniform": _init_uniform,
    "kmeans": _init_kmeans,
}
r"""Codebook initialisers, all ``f(z, num_codes, generator) -> (K, D)``.

``z`` is a batch of encoder outputs ``(N, D)``; the data-free initialisers use only its width and
dtype. ``"normal"``: $\mathcal N(0, 1/D)$; ``"uniform"``: $U[-1/K, 1/K]$ (Sonnet, zalando's
notebook); ``"kmeans"``: 10 Lloyd iterations on the batch (vector-quantize-pytorch ``kmeans_init``).
"""


def codebook_init(name: str, z: Tensor, num_codes: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Initialise a codebook with the registered initialiser ``name`` (see [`CODEBOOK_INITS`][kexue.vqvae.CODEBOOK_INITS]).

    Args:
        name: A key of [`CODEBOOK_INITS`][kexue.vqvae.CODEBOOK_INITS].
        z: Encoder outputs ``(N, D)`` (or any ``(..., D)``).
        num_codes: Codebook size $K$.
        generator: Source of randomness.

    Returns:
        The codebook ``(K, D)``.

    Raises:
        ValueError: On an unknown ``name``, a non-positive ``num_codes``, a ``z`` without a code
            axis, or (for ``"kmeans"``, which uses the data) an empty ``z`` or one with NaN/inf.
        TypeError: If ``z`` is not a floating tensor or ``generator`` not a ``torch.Generator``.
    """
    _check_choice(name, "name", CODEBOOK_INITS)
    check_int(num_codes, "num_codes")
    check_tensor(z, "z", floating=True)
    if z.dim() < 1 or z.shape[-1] < 1:
        raise ValueError(f"z must have shape (..., dim) with dim >= 1, got {tuple(z.shape)}")
    if name == "kmeans" and z.numel() == 0:
        raise ValueError(f"z must hold at least one vector for the k-means initialiser, got shape {tuple(z.shape)}")
    if generator is not None:
        check_generator(generator)
    return CODEBOOK_INITS[name](z.detach().reshape(-1, z.shape[-1]), num_codes, generator)


# ----------------------------------------------------------------------------------------------
# the codebook layer
# ----------------------------------------------------------------------------------------------


class VectorQuantizer(nn.Module):
    r"""A codebook with its update rule; forward quantises a channels-first feature map.

    ``update="loss"``: the codebook is an ``nn.Parameter`` moved by the codebook loss (paper).
    ``update="ema"``: the codebook is a buffer moved by [`ema_update`][kexue.vqvae.ema_update]
    (never by the optimizer), and the codebook loss is dropped.
    [`update_codebook`][kexue.vqvae.VectorQuantizer.update_codebook] does the EMA step and the
    optional dead-code restart from the batch just quantised.

    Both modes keep the buffers ``cluster_size`` ($N_i$) and ``embed_sum`` ($m_i$). With
    ``update="loss"`` only ``cluster_size`` is used (an EMA of the usage, which decides the
    restarts); ``embed_sum`` stays at its initial value there.

    Args:
        num_codes: Codebook size $K$.
        dim: Code dimension $D$.
        update: ``"loss"`` or ``"ema"``.
        beta: Commitment weight.
        decay: EMA decay $\gamma$.
        eps: Laplace smoothing of the EMA counts.
        dead_threshold: Restart codes whose EMA count falls below this (0 disables restarts).
        init: ``"normal"`` or ``"uniform"``, the data-free initialisers of
            [`CODEBOOK_INITS`][kexue.vqvae.CODEBOOK_INITS]. The layer has no data at
            construction: for ``"kmeans"`` build it with a data-free start and call
            [`set_codebook`][kexue.vqvae.VectorQuantizer.set_codebook] with
            ``codebook_init("kmeans", z, num_codes)`` on a batch of encoder outputs ``z``.
        seed: Seed of the initial codebook (>= 0).

    Raises:
        ValueError: On a non-positive size, an unknown ``update`` or ``init``, ``init="kmeans"``
            (see ``init``), a negative weight or threshold, ``decay`` outside [0, 1) or a negative
            ``eps``.

    Examples:
        >>> import torch
        >>> from kexue.vqvae import VectorQuantizer
        >>> vq = VectorQuantizer(num_codes=32, dim=16, update="ema", seed=0)
        >>> z = torch.randn(8, 16, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_()
        >>> q = vq(z)  # z: (B, D, H, W)
        >>> q.z_st.shape, q.indices.shape
        (torch.Size([8, 16, 4, 4]), torch.Size([8, 4, 4]))
        >>> q.commitment_loss.requires_grad, q.codebook_loss.requires_grad  # EMA: no codebook gradient
        (True, False)
        >>> vq.update_codebook(z, q.indices)  # one EMA step; returns the number of restarted codes
        0
    """

    def __init__(
        self,
        num_codes: int,
        dim: int,
        *,
        update: str = "loss",
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_threshold: float = 0.0,
        init: str = "normal",
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_int(num_codes, "num_codes")
        check_int(dim, "dim")
        _check_choice(update, "update", ("loss", "ema"))
        check_real(beta, "beta", at_least=0)
        check_real(decay, "decay", at_least=0)
        if decay >= 1:
            raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
        check_real(eps, "eps", at_least=0)
        check_real(dead_threshold, "dead_threshold", at_least=0)
        _check_choice(init, "init", CODEBOOK_INITS)
        if init == "kmeans":  # k-means of one zero vector would start with num_codes identical codes
            raise ValueError(
                "init='kmeans' needs encoder outputs, which the layer does not have at construction: build it "
                "with init='normal' or 'uniform', then call set_codebook(codebook_init('kmeans', z, num_codes))"
            )
        check_int(seed, "seed", 0)
        self.num_codes, self.dim, self.update, self.beta = num_codes, dim, update, beta
        self.decay, self.eps, self.dead_threshold = decay, eps, dead_threshold
        g = torch.Generator().manual_seed(seed)
        codebook = codebook_init(init, torch.zeros(1, dim), num_codes, generator=g)
        if update == "loss":
            self.codebook = nn.Parameter(codebook)
        else:
            self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", codebook.clone())

    def set_codebook(self, codebook: Tensor) -> None:
        """Overwrite the codes (e.g. after k-means init) and reset the EMA state to match.

        Raises:
            ValueError: If ``codebook`` is not ``(num_codes, dim)`` or holds NaN/inf.
            TypeError: If ``codebook`` is not a floating tensor.
        """
        _check_codebook(codebook)
        if codebook.shape != (self.num_codes, self.dim):
            raise ValueError(f"codebook must have shape {(self.num_codes, self.dim)}, got {tuple(codebook.shape)}")
        check_finite(codebook, "codebook")
        with torch.no_grad():
            self.codebook.copy_(codebook)
            self.cluster_size.fill_(1.0)
            self.embed_sum.copy_(codebook)

    def forward(self, z: Tensor) -> Quantized:
        """Quantise ``z`` of shape ``(B, D, H, W)``; outputs are channels-first, indices ``(B, H, W)``.

        Raises:
            ValueError: If ``z`` is not ``(B, dim, H, W)``, is empty or holds NaN/inf (see
                [`quantize`][kexue.vqvae.quantize]).
            TypeError: If ``z`` is not a floating tensor.
        """
        self._check_feature_map(z, "z")
        zl = z.movedim(1, -1)
        q = quantize(zl, self.codebook, beta=self.beta, codebook_weight=1.0 if self.update == "loss" else 0.0)
        return q._replace(z_st=q.z_st.movedim(-1, 1), z_q=q.z_q.movedim(-1, 1))

    def _check_feature_map(self, z: Tensor, name: str) -> None:
        check_tensor(z, name, 4, floating=True)
        if z.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (B, dim={self.dim}, H, W), got {tuple(z.shape)}")

    @torch.no_grad()
    def update_codebook(self, z: Tensor, indices: Tensor, *, generator: torch.Generator | None = None) -> int:
        """EMA step (``update="ema"``) and dead-code restart (``dead_threshold > 0``) from one batch.

        Args:
            z: The batch just quantised, ``(B, D, H, W)``.
            indices: Its codes, ``(B, H, W)``.
            generator: Draws the replacement vectors of restarted codes.

        Returns:
            The number of codes restarted (with ``update="loss"`` and no restarts there is
            nothing to do, and 0 is returned once the arguments are checked).

        Raises:
            ValueError: If ``z`` is not ``(B, dim, H, W)``, is empty or holds NaN/inf (the step
                averages it), or ``indices`` is not ``(B, H, W)`` in ``[0, num_codes)``.
            TypeError: On a non-floating ``z``, non-integer ``indices`` or a ``generator`` that is
                not a ``torch.Generator``.
        """
        self._check_feature_map(z, "z")
        if z.dtype != self.codebook.dtype:
            raise TypeError(f"z ({z.dtype}) must have the codebook's dtype ({self.codebook.dtype})")
        if z.numel() == 0:
            raise ValueError(f"z must hold at least one vector, got shape {tuple(z.shape)}")
        _check_indices(indices, self.num_codes)
        if indices.shape != (z.shape[0], *z.shape[2:]):
            raise ValueError(f"indices must have shape (B, H, W) = {(z.shape[0], *z.shape[2:])}, got {tuple(indices.shape)}")
        _largest(z, "z")
        if generator is not None:
            check_generator(generator)
        if self.update == "loss" and self.dead_threshold == 0:
            return 0
        zl = z.detach().movedim(1, -1)
        state = EMAState(self.cluster_size, self.embed_sum)
        codebook = self.codebook.detach()
        if self.update == "ema":
            codebook, state = ema_update(codebook, zl, indices, state, decay=self.decay, eps=self.eps,
                                         validate_args=False)  # fmt: skip
        else:  # track usage only, for restarts
            counts = torch.bincount(indices.reshape(-1), minlength=self.num_codes).to(zl.dtype)
            state = EMAState(self.decay * state.cluster_size + (1 - self.decay) * counts, state.embed_sum)
        restarted = 0
        if self.dead_threshold > 0:
            codebook, state, dead = restart_dead_codes(codebook, state, zl, self.dead_threshold, generator=generator,
                                                       validate_args=False)  # fmt: skip
            restarted = int(dead.sum())
        self.codebook.copy_(codebook)
        self.cluster_size.copy_(state.cluster_size)
        self.embed_sum.copy_(state.embed_sum)
        return restarted


# ----------------------------------------------------------------------------------------------
# a prior over code grids: a tiny causal transformer (Su's "PixelAtt")
# ----------------------------------------------------------------------------------------------


def uniform_bits(positions: int, num_codes: int) -> float:
    r"""Bits to write ``positions`` symbols from an alphabet of ``num_codes`` under the uniform prior.

    $$\text{bits} = m^2 \log_2 K$$

    for an $m\times m$ code grid ($m^2$ = ``positions``). It is also the raw cost of an image whose
    $n$ pixels take $L$ levels each ($n \log_2 L$), the number VQ-VAE's compression is measured
    against; a learned prior can need fewer bits on data it fits (and more on data it does not).

    Args:
        positions: Number of symbols (grid cells or pixels), >= 1.
        num_codes: Alphabet size, >= 1.

    Returns:
        The number of bits.

    Raises:
        ValueError: If either argument is not a positive integer.

    Examples:
        >>> from kexue.vqvae import uniform_bits
        >>> uniform_bits(16, 32)  # a 4x4 grid over 32 codes
        80.0
        >>> round(uniform_bits(64, 17), 1)  # 64 pixels with 17 grey levels
        261.6
    """
    check_int(positions, "positions")
    check_int(num_codes, "num_codes")
    return positions * math.log2(num_codes)


class _Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(), nn.Linear(2 * d, d))

    def forward(self, h: Tensor) -> Tensor:
        b, t, d = h.shape
        # (b, t, 3d) -> (3, b, heads, t, d / heads)
        q, k, v = self.qkv(self.ln1(h)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (b, heads, t, d / heads)
        h = h + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return h + self.mlp(self.ln2(h))


class CodePrior(nn.Module):
    r"""Autoregressive prior over an $h\times w$ code grid in raster order, $p(k)=\prod_t p(k_t\mid k_{<t})$.

    A small causal transformer in the spirit of Su's "PixelAtt": the input at step $t$ is the
    previous code (a BOS token at $t = 0$) plus row and column embeddings of position $t$; the output
    is a softmax over the $K$ codes.

    Args:
        num_codes: $K$.
        grid: ``(h, w)`` of the code grid.
        d_model: Width.
        heads: Attention heads (must divide ``d_model``).
        layers: Transformer blocks.
        seed: Seed of the initial weights (>= 0).

    Raises:
        ValueError: On non-positive sizes, a ``grid`` that is not two positive integers or
            ``heads`` not dividing ``d_model``.

    Examples:
        >>> import torch
        >>> from kexue.vqvae import CodePrior, prior_nll_bits, sample_codes
        >>> prior = CodePrior(num_codes=32, grid=(4, 4), seed=0)
        >>> codes = sample_codes(prior, 5, generator=torch.Generator().manual_seed(0))
        >>> codes.shape, prior(codes).shape  # logits of every code given the ones before it
        (torch.Size([5, 4, 4]), torch.Size([5, 16, 32]))
        >>> 40 < prior_nll_bits(prior, codes) < 120  # untrained: about 16 log2(32) = 80 bits
        True
    """

    def __init__(
        self, num_codes: int, grid: tuple[int, int] = (4, 4), d_model: int = 64, heads: int = 4,
        layers: int = 2, *, seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        check_int(num_codes, "num_codes")
        if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence) or len(grid) != 2:
            raise ValueError(f"grid must be a pair (h, w) of positive integers, got {grid!r}")
        h, w = check_int(grid[0], "grid[0]"), check_int(grid[1], "grid[1]")
        check_int(d_model, "d_model")
        check_int(heads, "heads")
        check_int(layers, "layers")
        if d_model % heads:
            raise ValueError(f"heads ({heads}) must divide d_model ({d_model})")
        check_int(seed, "seed", 0)
        self.num_codes, self.grid = num_codes, (h, w)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.tok = nn.Embedding(num_codes + 1, d_model)  # index num_codes is BOS
            self.row, self.col = nn.Embedding(h, d_model), nn.Embedding(w, d_model)
            self.blocks = nn.ModuleList(_Block(d_model, heads) for _ in range(layers))
            self.ln = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, num_codes)
        self.register_buffer("rows", torch.arange(h).repeat_interleave(w), persistent=False)
        self.register_buffer("cols", torch.arange(w).repeat(h), persistent=False)

    def check_codes(self, codes: Tensor, name: str = "codes", *, prefix: bool = True) -> Tensor:
        """Return ``codes`` if it is a batch of code grids of this prior, raise naming ``name`` otherwise.

        Valid: an integer tensor ``(B, h, w)`` of the prior's grid or, with ``prefix``, ``(B, T)``
        with ``1 <= T <= h w`` (the first ``T`` cells in raster order), ``B >= 1``, every code
        in ``[0, num_codes)``.

        Raises:
            TypeError: If ``codes`` is not an integer tensor.
            ValueError: On another shape, an empty batch or a code out of range.
        """
        h, w = self.grid
        check_tensor(codes, name, (2, 3) if prefix else 3, floating=False, nonempty=True)
        if codes.dtype not in _INDEX_DTYPES:
            raise TypeError(f"{name} must be an integer tensor, got {codes.dtype}")
        if (codes.dim() == 3 and codes.shape[1:] != (h, w)) or (codes.dim() == 2 and codes.shape[1] > h * w):
            raise ValueError(
                f"{name} must be code grids (B, {h}, {w})" + (f" or their first T <= {h * w} cells (B, T)" if prefix else "")
                + f", got shape {tuple(codes.shape)}"
            )
        _check_indices(codes, self.num_codes, name)
        return codes

    def forward(self, codes: Tensor, *, validate_args: bool = True) -> Tensor:
        """Logits ``(B, T, K)`` of every code given the ones before it; ``codes`` is ``(B, h, w)`` or ``(B, T)``.

        ``validate_args=False`` skips [`check_codes`][kexue.vqvae.CodePrior.check_codes], for a
        caller that has checked them already (e.g. under ``torch.func.vmap``, where the
        data-dependent checks cannot run).
        """
        if validate_args:
            self.check_codes(codes)
        flat = codes.reshape(codes.shape[0], -1)
        t = flat.shape[1]
        bos = torch.full((flat.shape[0], 1), self.num_codes, dtype=torch.long, device=flat.device)
        inp = torch.cat([bos, flat[:, :-1].long()], dim=1)  # shift right: position t sees codes < t
        h = self.tok(inp) + self.row(self.rows[:t]) + self.col(self.cols[:t])
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.ln(h))


def _check_prior(prior: object) -> CodePrior:
    if not isinstance(prior, CodePrior):
        raise TypeError(f"prior must be a CodePrior, got {type(prior).__name__}")
    return prior


def prior_nll_bits(prior: CodePrior, codes: Tensor) -> float:
    r"""Mean negative log-likelihood of code grids under ``prior``, in bits per grid (image).

    $$\text{bits} = -\frac{1}{B}\sum_{b}\sum_{t} \log_2 p(k_{bt} \mid k_{b,<t}).$$

    Args:
        prior: The prior (evaluated in ``eval()`` mode; its own mode is restored afterwards).
        codes: Code grids (at least one).

    Returns:
        Bits per grid.

    Shapes:
        codes: ``(B, h, w)`` with ``(h, w)`` the prior's grid.

    Raises:
        ValueError: If ``codes`` has another shape, is empty or is out of range.
        TypeError: If ``prior`` is not a [`CodePrior`][kexue.vqvae.CodePrior] or ``codes`` not an
            integer tensor.
    """
    _check_prior(prior).check_codes(codes, prefix=False)
    was_training = prior.training
    prior.eval()
    try:
        with torch.no_grad():
            logits = prior(codes, validate_args=False)
            nll = F.cross_entropy(logits.reshape(-1, prior.num_codes), codes.reshape(-1).long(), reduction="sum")
    finally:
        prior.train(was_training)
    return float(nll) / codes.shape[0] / math.log(2)


@torch.no_grad()
def sample_codes(
    prior: CodePrior, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""Draw ``n`` code grids from ``prior`` one position at a time in raster order.

    $$k_t \sim \mathrm{softmax}(\ell_t / T),\qquad \ell_t = \text{logits of } p(\cdot \mid k_{<t}).$$

    Args:
        prior: The prior (sampled in ``eval()`` mode; its own mode is restored afterwards).
        n: Number of grids.
        temperature: $T > 0$ (1 samples the model's own distribution).
        generator: Source of randomness.

    Returns:
        int64 codes ``(n, h, w)``.

    Raises:
        ValueError: If ``n`` is not a positive integer or ``temperature`` is not positive.
        TypeError: If ``prior`` is not a [`CodePrior`][kexue.vqvae.CodePrior] or ``generator``
            not a ``torch.Generator``.
    """
    _check_prior(prior)
    check_int(n, "n")
    check_real(temperature, "temperature", above=0)
    if generator is not None:
        check_generator(generator)
    was_training = prior.training
    prior.eval()
    try:
        h, w = prior.grid
        codes = torch.zeros(n, h * w, dtype=torch.long)
        for t in range(h * w):
            logits = prior(codes[:, : t + 1], validate_args=False)[:, t] / temperature
            codes[:, t] = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
    finally:
        prior.train(was_training)
    return codes.reshape(n, h, w)

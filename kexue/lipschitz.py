r"""Lipschitz constraints in deep learning: spectral norms, spectral normalisation, gradient penalties.

Companion to Su Jianlin, "深度学习中的Lipschitz约束：泛化与生成模型"
([kexue.fm/archives/6051](https://kexue.fm/archives/6051), 2018). A layer $x \mapsto \phi(Wx + b)$
with an activation of slope at most 1 is $\|W\|_2$-Lipschitz, so the spectral norm of each weight
matrix controls how sensitive a network is to its input. This module holds the article's own
mathematics:

* the spectral norm by power iteration
  ([`spectral_norm_estimate`][kexue.lipschitz.spectral_norm_estimate]) beside the exact SVD value
  ([`spectral_norm_exact`][kexue.lipschitz.spectral_norm_exact]);
* one spectral-normalisation step $W \mapsto W/\hat\sigma(W)$ with persistent singular-vector
  estimates ([`spectral_normalize`][kexue.lipschitz.spectral_normalize], and the slow reference
  [`spectral_normalize_reference`][kexue.lipschitz.spectral_normalize_reference] that mirrors
  PyTorch's parametrization), the parametrization module [`SpectralNorm`][kexue.lipschitz.SpectralNorm]
  and [`spectral_normalization`][kexue.lipschitz.spectral_normalization] to register it on a layer;
* the article's Keras kernel constraint, a projection after the optimiser step
  ([`spectral_project_`][kexue.lipschitz.spectral_project_]);
* the spectral-norm regulariser [`spectral_penalty`][kexue.lipschitz.spectral_penalty];
* the true operator norm of a 2-D convolution
  ([`conv_operator_norm`][kexue.lipschitz.conv_operator_norm],
  [`conv_operator_norm_fft`][kexue.lipschitz.conv_operator_norm_fft], the dense
  [`conv_matrix`][kexue.lipschitz.conv_matrix]) to compare with the norm of the reshaped kernel
  ([`reshaped_kernel_norm`][kexue.lipschitz.reshaped_kernel_norm]);
* the WGAN gradient penalty, two- and one-sided ([`PENALTIES`][kexue.lipschitz.PENALTIES],
  [`gradient_penalty`][kexue.lipschitz.gradient_penalty]), weight clipping, Lipschitz bounds of a
  network, and the exact Wasserstein-1 distance between two equal-size samples
  ([`exact_w1`][kexue.lipschitz.exact_w1]).

The page's experiments (synthetic matrices, the digits classifiers, the WGAN critics) live in
[`kexue.experiments.lipschitz`][kexue.experiments.lipschitz].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from kexue._checks import check_finite, check_generator, check_int, check_real, check_tensor
from kexue._memory import LARGE, ReusableBuffer, fresh_like

__all__ = [
    "PowerIteration",
    "SpectralNormStep",
    "spectral_norm_estimate",
    "spectral_norm_exact",
    "spectral_normalize",
    "spectral_normalize_reference",
    "SpectralNorm",
    "spectral_normalization",
    "spectral_project_",
    "spectral_penalty",
    "reshaped_kernel_norm",
    "conv_matrix",
    "conv_operator_norm",
    "conv_operator_norm_fft",
    "PENALTIES",
    "gradient_penalty",
    "gradient_norms",
    "clip_weights_",
    "clip_frobenius_",
    "lipschitz_upper_bound",
    "jacobian_norms",
    "exact_w1",
]


# ----------------------------------------------------------------------------------------------
# validation helpers


def _check_matrix(W: object, name: str = "W", *, finite: bool = False) -> Tensor:
    check_tensor(W, name, 2, floating=True, nonempty=True)
    return check_finite(W, name) if finite else W


def _check_vector(x: object, name: str, size: int, like: Tensor) -> Tensor:
    check_tensor(x, name)
    if x.dtype != like.dtype:
        raise TypeError(f"{name} must have dtype {like.dtype} like the matrix, got {x.dtype}")
    if x.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {tuple(x.shape)}")
    return x


def _check_module(module: object, name: str = "module") -> nn.Module:
    if not isinstance(module, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
    return module


def _check_callable(fn: object, name: str) -> Callable:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    return fn


def _check_eps(eps: object) -> float:
    return check_real(eps, "eps", above=0)


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _pow2_scale(w: Tensor) -> Tensor:
    r"""A power of two $2^k$ with $2^k \le \max|w| < 2^{k+1}$, a 0-d tensor of ``w``'s dtype (0.5 for a zero ``w``).

    Dividing by it is exact (only the exponents change), so every sum, product and norm computed
    from ``w / 2^k`` is exactly ``2^-k`` times the one computed from ``w``, rounding included;
    the entries lie in $[-2, 2]$, so squared norms neither overflow (entries of $10^{30}$) nor
    underflow (entries of $10^{-20}$).
    """
    exponent = torch.frexp(w.detach().abs().amax()).exponent - 1
    return torch.full((), 2.0, dtype=w.dtype, device=w.device).pow(exponent.to(w.dtype))


def _exact_norm(W: Tensor) -> Tensor:
    """Unchecked core of [`spectral_norm_exact`][kexue.lipschitz.spectral_norm_exact] (low precision via float32)."""
    if W.dtype in _LOW_PRECISION:  # LAPACK has no half precision: compute in float32, round once
        return torch.linalg.matrix_norm(W.float(), ord=2).to(W.dtype)
    return torch.linalg.matrix_norm(W, ord=2)


# ----------------------------------------------------------------------------------------------
# spectral norm by power iteration


class PowerIteration(NamedTuple):
    """Result of [`spectral_norm_estimate`][kexue.lipschitz.spectral_norm_estimate].

    Attributes:
        sigma: The estimate ``u^T W v`` of the largest singular value (a 0-d tensor).
        u: Unit left singular-vector estimate, shape ``(out,)``.
        v: Unit right singular-vector estimate, shape ``(in,)``.
        history: The estimate after each iteration, shape ``(n_iter,)``; ``history[-1] == sigma``.
    """

    sigma: Tensor
    u: Tensor
    v: Tensor
    history: Tensor


def spectral_norm_exact(W: Tensor) -> Tensor:
    r"""Exact spectral norm $\|W\|_2 = \max_{x \neq 0} \|Wx\| / \|x\| = \sigma_1(W)$ via the SVD.

    This is the reference the power iteration is checked against (use float64 for tests).
    float16 and bfloat16 matrices are computed in float32 and the result rounded to their dtype.

    Args:
        W: A matrix.

    Returns:
        The largest singular value, a 0-d tensor of ``W``'s dtype.

    Shapes:
        W: ``(out, in)``.

    Raises:
        TypeError: If ``W`` is not a floating tensor.
        ValueError: If ``W`` is not a non-empty 2-D matrix or holds NaN/inf.
    """
    return _exact_norm(_check_matrix(W, finite=True))


# --8<-- [start:power]
def spectral_norm_estimate(
    W: Tensor,
    n_iter: int = 20,
    u0: Tensor | Literal["ones"] | None = None,
    *,
    generator: torch.Generator | None = None,
    eps: float = 1e-12,
) -> PowerIteration:
    r"""Largest singular value of ``W`` by power iteration (the article's algorithm).

    Starting from $u_0$, each iteration computes

    $$v \leftarrow \frac{W^\top u}{\|W^\top u\|},\qquad u \leftarrow \frac{W v}{\|W v\|},
    \qquad \hat\sigma = u^\top W v = \|W v\|,$$

    i.e. the power method on $W^\top W$. If the top singular value is simple and $u_0$ is not
    orthogonal to the top left singular vector, the angle between $v$ and the top right singular
    vector shrinks like $(\sigma_2/\sigma_1)^{2k}$ after $k$ iterations, and the relative error of
    $\hat\sigma$, quadratic in that angle, like $(\sigma_2/\sigma_1)^{4k}$; $\hat\sigma \le \sigma_1$ always.

    Args:
        W: The matrix.
        n_iter: Number of iterations (>= 1).
        u0: Start vector of shape ``(out,)``; ``"ones"`` reproduces the article's all-ones start
            (it fails when the all-ones vector is orthogonal to the top singular vector);
            ``None`` (default) draws a standard normal vector from ``generator``, as PyTorch does.
        generator: Random generator for the default start.
        eps: Floor of the norms when normalising (> 0; a zero matrix gives ``sigma = 0``).

    Returns:
        A [`PowerIteration`][kexue.lipschitz.PowerIteration] ``(sigma, u, v, history)``.

    Shapes:
        W: ``(out, in)``; u: ``(out,)``; v: ``(in,)``; history: ``(n_iter,)``.

    Raises:
        TypeError: If ``W``, ``u0`` or ``generator`` has the wrong type or dtype.
        ValueError: If ``W`` is not a non-empty finite matrix, ``n_iter < 1``, ``eps <= 0``, or
            ``u0`` has the wrong shape, is zero or holds NaN/inf.

    Source: power iteration as in Su (2018, [kexue.fm/archives/6051](https://kexue.fm/archives/6051))
    and Miyato et al. (2018).

    Examples:
        >>> import torch
        >>> W = torch.tensor([[3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
        >>> r = spectral_norm_estimate(W, n_iter=30, generator=torch.Generator().manual_seed(0))
        >>> round(r.sigma.item(), 6), spectral_norm_exact(W).item()
        (3.0, 3.0)
        >>> spectral_norm_estimate(torch.eye(2, dtype=torch.float64), 3, u0="ones").sigma.item()
        1.0
    """
    _check_power_inputs(W, n_iter, u0, generator, eps)
    if u0 is None:
        u = torch.randn(W.shape[0], generator=generator, dtype=W.dtype, device=W.device)
    elif isinstance(u0, str):
        if u0 != "ones":
            raise ValueError(f"u0 must be None, 'ones' or a tensor, got {u0!r}")
        u = torch.ones(W.shape[0], dtype=W.dtype, device=W.device)
    else:
        u = _check_vector(u0, "u0", W.shape[0], W)
    scale = _pow2_scale(W)  # iterate on W / 2^k (exact): squared norms neither overflow nor underflow
    W = W.detach() / scale
    u = F.normalize(u.detach(), dim=0, eps=eps)
    history = W.new_empty(n_iter)
    for k in range(n_iter):
        v = F.normalize(W.mT @ u, dim=0, eps=eps)
        Wv = W @ v
        history[k] = torch.linalg.vector_norm(Wv)  # = u_new^T W v
        u = F.normalize(Wv, dim=0, eps=eps)
    history = history * scale
    return PowerIteration(history[-1].clone(), u, v, history)
# --8<-- [end:power]


def _check_power_inputs(W: object, n_iter: object, u0: object, generator: object, eps: object) -> None:
    """Arguments of [`spectral_norm_estimate`][kexue.lipschitz.spectral_norm_estimate] (u0's kind is checked there)."""
    _check_matrix(W, finite=True)
    check_int(n_iter, "n_iter", 1)
    _check_eps(eps)
    if generator is not None:
        check_generator(generator)
    if isinstance(u0, Tensor):
        _check_vector(u0, "u0", W.shape[0], W)
        if not bool(check_finite(u0, "u0").any()):
            raise ValueError("u0 must be a nonzero start vector, got all zeros")


# ----------------------------------------------------------------------------------------------
# spectral normalisation: one step, as a pure function


class SpectralNormStep(NamedTuple):
    """Result of one spectral-normalisation step.

    Attributes:
        weight: ``W / sigma`` (differentiable in ``W``).
        sigma: The estimate of ``||W||_2`` (differentiable in ``W``; ``u`` and ``v`` held constant).
        u: Updated left vector (detached), shape ``(out,)``.
        v: Updated right vector (detached), shape ``(in,)``.
    """

    weight: Tensor
    sigma: Tensor
    u: Tensor
    v: Tensor


def _check_step_inputs(W: Tensor, u: Tensor, v: Tensor, n_iter: int, eps: float) -> None:
    _check_matrix(W)
    _check_vector(u, "u", W.shape[0], W)
    _check_vector(v, "v", W.shape[1], W)
    check_int(n_iter, "n_iter", 0)
    _check_eps(eps)


# --8<-- [start:step]
def spectral_normalize(W: Tensor, u: Tensor, v: Tensor, n_iter: int = 1, eps: float = 1e-12) -> SpectralNormStep:
    r"""One spectral-normalisation step $W \mapsto W/\hat\sigma(W)$ with persistent vectors (fast path).

    Runs ``n_iter`` power iterations in PyTorch's order, $u \leftarrow \mathrm{normalize}(Wv)$ then
    $v \leftarrow \mathrm{normalize}(W^\top u)$, without gradient, and uses

    $$\hat\sigma = u^\top W v = \|W^\top u\|,\qquad
    \frac{\partial \hat\sigma}{\partial W} = u v^\top ,$$

    which holds because the last update sets $v = W^\top u / \|W^\top u\|$. So the final
    $W^\top u$ serves both as the new $v$ and as $\hat\sigma$: two matrix-vector products per
    step instead of PyTorch's three, the same value and the same gradient. With ``n_iter = 0``
    (evaluation) the stored vectors are used as they are: $\hat\sigma = u^\top W v$.

    A matrix too large for the CPU cache (over 8 MiB) is read from memory once per iteration
    instead of twice: in row blocks that stay in cache, $y = Wv$ and $z = W^\top y$ are formed
    together (the two halves of each block as one batched product, which PyTorch spreads over two
    threads), and $u = y/\|y\|$, $W^\top u = z/\|y\|$ (same values up to rounding).

    Args:
        W: The weight matrix (gradient flows through it).
        u: Current left vector (unit norm), treated as a constant.
        v: Current right vector (unit norm), treated as a constant.
        n_iter: Power iterations before normalising (>= 0; PyTorch uses 1 per training forward).
        eps: Floor of the norms (> 0). A zero matrix, a matrix whose norm is below ``eps``, or
            (with ``n_iter = 0``) a ``u`` orthogonal to $Wv$ gives ``sigma`` of 0 or about 0 and a
            non-finite weight; [`SpectralNorm`][kexue.lipschitz.SpectralNorm] floors ``sigma`` at ``eps``.
            NaN/inf entries of ``W`` propagate.

    Returns:
        A [`SpectralNormStep`][kexue.lipschitz.SpectralNormStep] ``(weight, sigma, u, v)``; the inputs are not modified.

    Shapes:
        W: ``(out, in)``; u: ``(out,)``; v: ``(in,)``.

    Raises:
        TypeError: For non-tensors or mismatched dtypes.
        ValueError: For shapes that do not match ``W``, ``n_iter < 0`` or ``eps <= 0``.

    Source: Miyato et al. (2018), [arXiv:1802.05957](https://arxiv.org/abs/1802.05957), Algorithm 1; PyTorch's
    ``torch.nn.utils.parametrizations.spectral_norm`` for the update order.
    """
    _check_step_inputs(W, u, v, n_iter, eps)
    sigma, scale, u, v = _safe_sigma_step(W, u, v, n_iter, eps)
    return SpectralNormStep(_divide(W, _floored(sigma, eps) * scale), sigma * scale, u, v)


def _sigma_step(W: Tensor, u: Tensor, v: Tensor, n_iter: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(sigma, u, v)`` of one step: ``sigma`` differentiable in ``W``, the vectors detached."""
    if n_iter == 0:
        sigma = u.detach() @ (W @ v.detach())
        return sigma, u.detach(), v.detach()
    if W.numel() * W.element_size() > _IN_CACHE_BYTES:
        return _sigma_step_one_pass(W, u, v, n_iter, eps)
    Wd = W.detach()
    with torch.no_grad():
        v = v.detach()
        for _ in range(n_iter - 1):
            u = F.normalize(Wd @ v, dim=0, eps=eps)
            v = F.normalize(Wd.mT @ u, dim=0, eps=eps)
        u = F.normalize(Wd @ v, dim=0, eps=eps)
    Wtu = W.mT @ u  # carries the gradient: d||W^T u|| / dW = u v^T
    sigma = torch.linalg.vector_norm(Wtu)
    v = Wtu.detach() / sigma.detach().clamp_min(eps)
    return sigma, u, v
# --8<-- [end:step]


def _floored(sigma: Tensor, eps: float) -> Tensor:
    """``sigma`` with values of magnitude at most ``eps`` replaced by ``eps`` (a zero weight stays zero); NaN stays."""
    return torch.where(sigma.abs() <= eps, torch.full_like(sigma, eps), sigma)


def _safe_range(dtype: torch.dtype) -> tuple[float, float]:
    info = torch.finfo(dtype)
    return math.sqrt(info.tiny) * 1e3, math.sqrt(info.max) * 1e-3


def _safe_sigma_step(W: Tensor, u: Tensor, v: Tensor, n_iter: int, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(sigma_s, scale, u, v)``: one step on ``W / scale``, where ``scale`` is 1 or, when the squared norms of
    ``W`` itself may under- or overflow (entries near 1e-20 or 1e30 in float32), an exact power of two.

    ``sigma(W) = scale * sigma_s`` with the same rounding (dividing by ``2^k`` only changes exponents), and
    ``sigma_s`` is the value to compare with ``eps``. Ordinary matrices never take the second pass: one
    scalar comparison decides.
    """
    one = torch.ones((), dtype=W.dtype, device=W.device)
    sigma, u2, v2 = _sigma_step(W, u, v, n_iter, eps)
    low, high = _safe_range(W.dtype)
    try:
        value = abs(float(sigma.detach()))
    except RuntimeError:  # under torch.func transforms a value cannot be read: keep the plain result
        return sigma, one, u2, v2
    if low < value < high or math.isnan(value):
        return sigma, one, u2, v2
    scale = _pow2_scale(W)
    sigma_s, u2, v2 = _sigma_step(W / scale, u, v, n_iter, eps)
    return sigma_s, scale, u2, v2


_IN_CACHE_BYTES = 8 << 20  # matrices larger than this take the one-pass iteration
_PASS_BLOCK_BYTES = 4 << 20  # row block of the one-pass iteration (and of the division after it)


def _pass_rows(cols: int, element_size: int, block_bytes: int | None = None) -> int:
    """Rows of one block of the one-pass iteration: an even number, about ``block_bytes`` of the matrix."""
    block_bytes = _PASS_BLOCK_BYTES if block_bytes is None else block_bytes
    return max(2, block_bytes // max(1, cols * element_size)) // 2 * 2


def _sigma_step_one_pass(
    W: Tensor, u: Tensor, v: Tensor, n_iter: int, eps: float, block_bytes: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``_sigma_step`` for a matrix larger than the cache: each iteration reads ``W`` from memory once.

    Row block by row block, ``y_b = W_b v`` and then ``z += W_b^T y_b`` while ``W_b`` is still in
    cache, so ``y = W v`` and ``z = W^T W v``; then ``u = y/||y||`` and ``W^T u = z/||y||``.
    ``sigma = ||W^T u||`` gets its gradient ``u v^T`` from ``_SigmaOfVectors`` instead of a
    differentiable product with ``W`` (which would read ``W`` once more).

    A matrix-vector product on the CPU runs on one core (MKL's GEMV), while ``torch.bmm`` hands the
    items of a batch to different threads: each block (an even number of rows) is viewed as a batch
    of its two halves, and ``z`` is accumulated per half (``baddbmm``) and summed at the end. Only
    a last block with an odd number of rows takes the plain products.
    """
    Wd = W.detach()
    rows = _pass_rows(W.shape[1], W.element_size(), block_bytes)
    with torch.no_grad():
        v = v.detach()
        for _ in range(n_iter):  # no out= or in-place updates: torch.func.vmap can batch this loop
            ys, z2, z = [], None, None
            pair = v.expand(2, 1, -1)
            for r0 in range(0, W.shape[0], rows):
                block = Wd[r0:r0 + rows]
                if block.shape[0] % 2:  # the last block of an odd number of rows
                    ys.append(block @ v)
                    z = block.mT @ ys[-1]
                    continue
                halves = block.unflatten(0, (2, -1))  # (2, rows/2, in), a view
                y2 = torch.bmm(pair, halves.mT)  # (2, 1, rows/2): each half times v
                ys.append(y2.reshape(-1))
                z2 = torch.bmm(y2, halves) if z2 is None else torch.baddbmm(z2, y2, halves)
            if z2 is not None:
                halves_z = z2.sum(0).squeeze(0)
                z = halves_z if z is None else z + halves_z
            y = torch.cat(ys)
            y_norm = torch.linalg.vector_norm(y).clamp_min(eps)
            u = y / y_norm
            Wtu = z / y_norm
            sigma = torch.linalg.vector_norm(Wtu)
            v = Wtu / sigma.clamp_min(eps)
    return _SigmaOfVectors.apply(W, u, v, sigma), u, v


class _SigmaOfVectors(torch.autograd.Function):
    """``sigma = u^T W v`` already computed, as a function of ``W`` with ``u``, ``v`` constant: gradient ``u v^T``."""

    @staticmethod
    def forward(W: Tensor, u: Tensor, v: Tensor, sigma: Tensor) -> Tensor:
        return sigma.clone()

    @staticmethod
    def setup_context(ctx: object, inputs: tuple, output: Tensor) -> None:
        _, u, v, _ = inputs
        ctx.save_for_backward(u, v)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        u, v = ctx.saved_tensors
        return (grad * torch.outer(u, v) if ctx.needs_input_grad[0] else None), None, None, None

    @staticmethod
    def vmap(info: object, in_dims: tuple, W: Tensor, u: Tensor, v: Tensor, sigma: Tensor) -> tuple[Tensor, int | None]:
        """Under ``torch.func.vmap`` (e.g. ``jacobian_norms``): batched inputs take ``u^T W v`` itself."""
        if all(d is None for d in in_dims):
            return _SigmaOfVectors.apply(W, u, v, sigma), None
        return torch.func.vmap(lambda w, a, b, _: a @ (w @ b), in_dims=in_dims)(W, u, v, sigma), 0


def _divide(weight: Tensor, sigma: Tensor, buffer: ReusableBuffer | None = None) -> Tensor:
    """``weight / sigma``; a large result goes into a buffer from ``kexue._memory`` (2 MiB pages; ``buffer``'s
    memory again when it is idle)."""
    if weight.numel() * weight.element_size() < LARGE:
        return weight / sigma
    return _Divide.apply(weight, sigma, buffer)


class _Divide(torch.autograd.Function):
    """``weight / sigma`` (``sigma`` 0-d) written into a fresh buffer, with the gradients of a division.

    The division runs over the one-pass iteration's row blocks, from the last to the first: that
    iteration has just read ``weight`` from first to last, so its last blocks may still be in cache,
    and each half of a block is divided by the thread that read it there (an elementwise operation
    splits its range in halves, as the batched product split the block). Iteration and division on
    4096x4096 float32, medians on the benchmark machine: 6.7 ms, against 7.3 ms for one division
    and 7.7 ms for 2 MiB blocks (which split each half between the threads) in the state where data
    read by the other core is expensive, and 8.1, 8.6 and 8.4 ms in the normal state (see the
    Performance page).
    """

    @staticmethod
    def forward(weight: Tensor, sigma: Tensor, buffer: ReusableBuffer | None) -> Tensor:
        dtype = torch.result_type(weight, sigma)
        out = fresh_like(weight, dtype=dtype) if buffer is None else buffer.take(weight, dtype=dtype)
        if not weight.is_contiguous():
            return torch.div(weight, sigma, out=out)
        w, o = weight.view(-1), out.view(-1)
        cols = w.numel() // weight.shape[0]  # the matrix view (shape[0], -1) of the iteration
        step = _pass_rows(cols, weight.element_size()) * cols
        for start in reversed(range(0, w.numel(), step)):
            torch.div(w[start:start + step], sigma, out=o[start:start + step])
        return out

    @staticmethod
    def setup_context(ctx: object, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(*inputs[:2])

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        weight, sigma = ctx.saved_tensors
        grad_w = grad / sigma if ctx.needs_input_grad[0] else None
        grad_s = -(grad * weight).sum() / (sigma * sigma) if ctx.needs_input_grad[1] else None
        return grad_w, grad_s, None

    @staticmethod
    def vmap(info: object, in_dims: tuple, weight: Tensor, sigma: Tensor,
             buffer: ReusableBuffer | None) -> tuple[Tensor, int | None]:
        """Under ``torch.func.vmap`` (e.g. ``jacobian_norms``): batched inputs take the plain division."""
        if all(d is None for d in in_dims[:2]):
            return _Divide.apply(weight, sigma, buffer), None
        return torch.func.vmap(torch.div, in_dims=in_dims[:2])(weight, sigma), 0


def spectral_normalize_reference(
    W: Tensor, u: Tensor, v: Tensor, n_iter: int = 1, eps: float = 1e-12
) -> SpectralNormStep:
    r"""Slow, obvious spectral-normalisation step, written like PyTorch's parametrization.

    ``n_iter`` times $u \leftarrow \mathrm{normalize}(Wv)$, $v \leftarrow \mathrm{normalize}(W^\top u)$
    (no gradient), then $\hat\sigma = u^\top W v$ with $u, v$ constant and $W/\hat\sigma$.
    Three matrix-vector products per step; [`spectral_normalize`][kexue.lipschitz.spectral_normalize] must agree with it.

    Args:
        W: The weight matrix.
        u: Current left vector.
        v: Current right vector.
        n_iter: Power iterations (>= 0).
        eps: Floor of the norms (> 0; degenerate inputs as in ``spectral_normalize``).

    Returns:
        A [`SpectralNormStep`][kexue.lipschitz.SpectralNormStep].

    Shapes:
        W: ``(out, in)``; u: ``(out,)``; v: ``(in,)``.

    Raises:
        TypeError: For non-tensors or mismatched dtypes.
        ValueError: For shapes that do not match ``W``, ``n_iter < 0`` or ``eps <= 0``.
    """
    _check_step_inputs(W, u, v, n_iter, eps)
    u, v = u.detach().clone(), v.detach().clone()
    with torch.no_grad():
        for _ in range(n_iter):
            u = F.normalize(torch.mv(W, v), dim=0, eps=eps)
            v = F.normalize(torch.mv(W.mT, u), dim=0, eps=eps)
    sigma = torch.dot(u, torch.mv(W, v))
    return SpectralNormStep(W / _floored(sigma, eps), sigma, u, v)


# ----------------------------------------------------------------------------------------------
# spectral normalisation as a parametrization


def _to_matrix(weight: Tensor, dim: int) -> Tensor:
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.ndim) if d != dim))
    return weight.flatten(1)


class SpectralNorm(nn.Module):
    r"""Parametrization $W \mapsto W / \hat\sigma(W)$ with persistent power-iteration vectors.

    A thin module around [`spectral_normalize`][kexue.lipschitz.spectral_normalize]: it holds the buffers ``u`` and ``v``, updates
    them (``n_power_iterations`` per forward) only in training mode, never sends gradients into
    them, and reshapes conv kernels to ``(weight.shape[dim], -1)``. One-dimensional weights are
    divided by their Euclidean norm. Register it with [`spectral_normalization`][kexue.lipschitz.spectral_normalization].

    Because the new vectors are fresh tensors copied into the buffers after use, a loss built from
    two forwards (``D(real) - D(fake)``) backpropagates without "modified by an in-place operation"
    errors (the issue PyTorch solves by cloning).

    Tiny, huge and zero weights: the power iteration runs on the weight divided by a power of two
    near its largest entry, which is exact (the result is bit for bit the same for ordinary
    weights), so weights with entries of $10^{-20}$ or $10^{30}$ are normalised as accurately as
    any other. A zero weight stays zero: an estimate $|\hat\sigma| \le$ ``eps`` (of the rescaled
    weight) is replaced by ``eps``, and in training the buffers are then left as they were, so the
    iteration resumes once the weight is non-zero. NaN/inf entries of the weight propagate, as in a layer.

    Large weights (32 MiB and more): each forward writes ``weight / sigma`` into the memory of the
    previous output when no tensor holds that any more (``kexue._memory.ReusableBuffer``; an
    output that autograd saved for a backward pass still counts as held), so a training loop does
    not pay for fresh pages every step. The module keeps that memory, one weight's size, while it
    lives; copies of the module start without it.

    Args:
        weight: The weight the parametrization will act on (for shapes and the warm-up).
        n_power_iterations: Iterations per training forward (>= 1).
        dim: The output dimension of the weight (0 for Linear/Conv, 1 for ConvTranspose).
        eps: Floor of the norms.
        generator: Random generator for the start vectors.
        warmup: Iterations run at construction (PyTorch runs 15).

    Shapes:
        weight: any shape with ``ndim >= 1``; viewed as ``(weight.shape[dim], numel / weight.shape[dim])``.

    Raises:
        TypeError: For a weight that is not a floating tensor or a ``generator`` that is not a
            ``torch.Generator``.
        ValueError: For an empty or 0-d weight, a bad ``dim``, ``n_power_iterations < 1``,
            ``eps <= 0`` or ``warmup < 0``.

    Source: Miyato et al. (2018); PyTorch's ``_SpectralNorm`` parametrization (buffers, warm-up,
    no update in eval mode).
    """

    def __init__(
        self,
        weight: Tensor,
        n_power_iterations: int = 1,
        dim: int = 0,
        eps: float = 1e-12,
        generator: torch.Generator | None = None,
        warmup: int = 15,
    ) -> None:
        super().__init__()
        check_tensor(weight, "weight", floating=True, nonempty=True)
        if weight.ndim == 0:
            raise ValueError("weight must have at least one dimension, got a 0-d tensor")
        if not isinstance(dim, int) or isinstance(dim, bool) or not -weight.ndim <= dim < weight.ndim:
            raise ValueError(f"dim must be an integer in [-{weight.ndim}, {weight.ndim - 1}], got {dim!r}")
        self.n_power_iterations = check_int(n_power_iterations, "n_power_iterations", 1)
        check_int(warmup, "warmup", 0)
        if generator is not None:
            check_generator(generator)
        self.dim = dim % weight.ndim
        self.eps = _check_eps(eps)
        self.weight_shape = tuple(weight.shape)
        self._out = ReusableBuffer()  # a large output goes into the last one's memory once that is free
        if weight.ndim > 1:
            mat = _to_matrix(weight.detach(), self.dim)
            u = torch.randn(mat.shape[0], generator=generator, dtype=mat.dtype, device=mat.device)
            v = torch.randn(mat.shape[1], generator=generator, dtype=mat.dtype, device=mat.device)
            u, v = F.normalize(u, dim=0, eps=eps), F.normalize(v, dim=0, eps=eps)
            if warmup:
                step = spectral_normalize_reference(mat / _pow2_scale(mat), u, v, n_iter=warmup, eps=eps)
                u, v = step.u, step.v
            self.register_buffer("u", u)
            self.register_buffer("v", v)

    def forward(self, weight: Tensor) -> Tensor:
        """Return ``weight / sigma`` (updating ``u`` and ``v`` first in training mode); a zero weight stays zero."""
        check_tensor(weight, "weight", floating=True)
        if tuple(weight.shape) != self.weight_shape:
            raise ValueError(f"weight must have the shape {self.weight_shape} this parametrization was built for, "
                             f"got {tuple(weight.shape)}")
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        mat = _to_matrix(weight, self.dim)
        n_iter = self.n_power_iterations if self.training else 0
        sigma, scale, u, v = _safe_sigma_step(mat, self.u, self.v, n_iter, self.eps)
        if self.training:
            with torch.no_grad():
                ok = sigma.detach() > self.eps  # a zero weight leaves the vectors as they were
                self.u.copy_(torch.where(ok, u, self.u))
                self.v.copy_(torch.where(ok, v, self.v))
        return _divide(weight, _floored(sigma, self.eps) * scale, self._out)


def spectral_normalization(
    module: nn.Module,
    name: str = "weight",
    n_power_iterations: int = 1,
    dim: int | None = None,
    eps: float = 1e-12,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Register [`SpectralNorm`][kexue.lipschitz.SpectralNorm] on ``module.<name>`` (same call as PyTorch's ``spectral_norm``).

    Args:
        module: The layer (e.g. ``nn.Linear``, ``nn.Conv2d``).
        name: Name of the weight parameter.
        n_power_iterations: Iterations per training forward.
        dim: Output dimension of the weight; default 1 for ``ConvTranspose`` layers, else 0.
        eps: Floor of the norms.
        generator: Random generator for the start vectors.

    Returns:
        The same module, with ``module.<name>`` now computed as ``W / sigma``; the buffers are
        ``module.parametrizations.<name>[0].u`` and ``.v``.

    Raises:
        TypeError: If ``module`` is not an ``nn.Module`` or ``name`` not a string.
        ValueError: If the module has no parameter called ``name``, or as [`SpectralNorm`][kexue.lipschitz.SpectralNorm].

    Examples:
        >>> import torch
        >>> layer = spectral_normalization(torch.nn.Linear(8, 4), generator=torch.Generator().manual_seed(0))
        >>> for _ in range(20):  # each training-mode forward runs one power iteration
        ...     _ = layer(torch.zeros(1, 8))
        >>> round(spectral_norm_exact(layer.weight.detach()).item(), 4)
        1.0
        >>> sorted(name for name, _ in layer.named_buffers())
        ['parametrizations.weight.0.u', 'parametrizations.weight.0.v']
    """
    _check_module(module)
    if not isinstance(name, str):
        raise TypeError(f"name must be the name of a parameter (a str), got {type(name).__name__}")
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):  # a wrong name is a wrong value of `name`, hence ValueError
        raise ValueError(f"name: module {type(module).__name__} has no parameter or buffer {name!r}")  # noqa: TRY004
    if dim is None:
        transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
        dim = 1 if isinstance(module, transposed) else 0
    parametrize.register_parametrization(
        module, name, SpectralNorm(weight, n_power_iterations, dim, eps, generator)
    )
    return module


@torch.no_grad()
def spectral_project_(module: nn.Module, n_iter: int | None = 5) -> nn.Module:
    r"""Divide every weight matrix of ``module`` by its spectral norm, in place (the article's Keras constraint).

    Each parameter with two or more dimensions, viewed as a matrix ``(shape[0], -1)``, becomes
    $W \leftarrow W/\hat\sigma(W)$, where $\hat\sigma$ comes from ``n_iter`` power iterations started
    from the all-ones vector and recomputed from scratch at every call, as in the Keras code of the
    article (``n_iter=None`` uses the exact SVD value instead). Biases and other vectors are left alone.

    Called after each optimiser step, as a Keras ``kernel_constraint`` is, this is a *projection*:
    the step's gradient was computed for the weights before normalisation, not for the normalised
    network. Su found this hurt his WGAN-SN samples and patched Keras to reparametrise instead,
    which is what [`spectral_normalization`][kexue.lipschitz.spectral_normalization] does.

    Args:
        module: The network (its weights are changed in place).
        n_iter: Power iterations from all ones (>= 1), or ``None`` for the exact norm.

    Returns:
        The module.

    Raises:
        TypeError: If ``module`` is not an ``nn.Module``.
        ValueError: If ``n_iter`` is not ``None`` or an integer >= 1.

    Source: Su (2018), the ``spectral_normalization`` Keras constraint of
    [kexue.fm/archives/6051](https://kexue.fm/archives/6051) (5 iterations from ones).

    Examples:
        >>> import torch
        >>> net = torch.nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        >>> spectral_project_(net).weight
        Parameter containing:
        tensor([[1.0000, 0.0000, 0.0000],
                [0.0000, 0.5000, 0.0000]], requires_grad=True)
    """
    _check_module(module)
    if n_iter is not None:
        check_int(n_iter, "n_iter", 1)
    for p in module.parameters():
        if p.ndim < 2:
            continue
        mat = p.flatten(1)
        if n_iter is None:
            sigma = _exact_norm(mat)
        else:  # on the weight rescaled by an exact power of two: tiny or huge weights do not under/overflow
            scale = _pow2_scale(mat)
            sigma = spectral_norm_estimate(mat / scale, n_iter, u0="ones").sigma * scale
        p.div_(sigma.clamp_min(torch.finfo(p.dtype).tiny))  # a zero weight stays zero
    return module


def spectral_penalty(sigmas: Sequence[Tensor], lam: float) -> Tensor:
    r"""Spectral-norm regulariser $\lambda \sum_l \sigma(W_l)^2$ (the article's convention).

    Its gradient with respect to each $W_l$ is $2\lambda\,\sigma_l\, u_l v_l^\top$ when $\sigma_l$ comes
    from [`spectral_normalize`][kexue.lipschitz.spectral_normalize] (or is exact with a simple top singular value). Yoshida & Miyato
    (2017) write $\frac{\lambda}{2}\sum_l \sigma_l^2$; pass ``lam / 2`` for their convention.
    Replacing $\sigma(W)$ by the Frobenius norm $\|W\|_F \ge \sigma(W)$ gives ordinary L2 weight decay.

    Args:
        sigmas: Spectral-norm estimates of the layers (0-d tensors, differentiable).
        lam: Weight of the penalty (>= 0).

    Returns:
        The penalty, a 0-d tensor (0 for an empty sequence).

    Shapes:
        sigmas: a sequence of 0-d tensors.

    Raises:
        TypeError: If ``sigmas`` is not a sequence.
        ValueError: If ``lam`` is negative, a ``sigmas`` entry is not a 0-d floating tensor, or the
            penalty is not finite (a NaN or huge ``sigma``).
    """
    lam = check_real(lam, "lam", at_least=0)
    if isinstance(sigmas, (str, bytes)) or not isinstance(sigmas, Iterable):
        raise TypeError(f"sigmas must be a sequence of 0-d tensors, got {type(sigmas).__name__}")
    total: Tensor | None = None
    for i, s in enumerate(sigmas):
        if not isinstance(s, Tensor) or s.ndim != 0 or not s.dtype.is_floating_point:
            raise ValueError(f"sigmas[{i}] must be a 0-d floating tensor, got {s!r}")
        total = s.square() if total is None else total + s.square()
    if total is None:
        return torch.zeros(())
    if not bool(torch.isfinite(total)):
        raise ValueError(f"sigmas must be finite (the sum of squares is {total.item()})")
    return lam * total


# ----------------------------------------------------------------------------------------------
# convolutions: reshaped kernel vs the true operator norm


def _check_kernel(weight: object, *, finite: bool = False) -> Tensor:
    check_tensor(weight, "weight", 4, floating=True, nonempty=True)  # (out, in, kh, kw)
    return check_finite(weight, "weight") if finite else weight


def _check_conv(weight: object, input_size: object, *, finite: bool = False) -> tuple[Tensor, tuple[int, int]]:
    weight = _check_kernel(weight, finite=finite)
    kh, kw = weight.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"weight must have odd kernel sizes ('same' padding), got {kh}x{kw}")
    if (
        not isinstance(input_size, (tuple, list))
        or len(input_size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in input_size)
    ):
        raise ValueError(f"input_size must be a pair of integers (H, W), got {input_size!r}")
    H, Wd = input_size
    if H < kh or Wd < kw:
        raise ValueError(f"input_size {tuple(input_size)} must be at least the kernel size {kh}x{kw}")
    return weight, (H, Wd)


def _check_padding_mode(padding_mode: object) -> None:
    if padding_mode not in ("zeros", "circular"):
        raise ValueError(f"padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")


PaddingMode = Literal["zeros", "circular"]


def _conv_same(x: Tensor, weight: Tensor, padding_mode: PaddingMode) -> Tensor:
    kh, kw = weight.shape[-2:]
    ph, pw = kh // 2, kw // 2
    if padding_mode == "zeros":
        return F.conv2d(x, weight, padding=(ph, pw))
    if padding_mode == "circular":
        return F.conv2d(F.pad(x, (pw, pw, ph, ph), mode="circular"), weight)
    raise ValueError(f"padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")


def reshaped_kernel_norm(weight: Tensor) -> Tensor:
    r"""Spectral norm of the kernel reshaped to a matrix, $\|W_{\text{mat}}\|_2$ with $W_{\text{mat}} \in \mathbb{R}^{c_\text{out} \times c_\text{in} k_h k_w}$.

    This is what spectral normalisation of a convolution divides by (PyTorch, Miyato et al.). For
    a stride-1 'same' convolution it bounds the true operator norm $\|\mathcal{C}\|$ from both sides:

    $$\|W_{\text{mat}}\|_2 \;\le\; \|\mathcal{C}\| \;\le\; \sqrt{k_h k_w}\,\|W_{\text{mat}}\|_2 .$$

    Left: apply the adjoint to a single output pixel away from the border. Right: each output
    pixel is $W_{\text{mat}}$ times a patch, and every input pixel lies in $k_h k_w$ patches.

    Args:
        weight: Convolution kernel (float16/bfloat16: computed in float32, rounded to its dtype).

    Returns:
        A 0-d tensor.

    Shapes:
        weight: ``(out, in, kh, kw)``.

    Raises:
        TypeError: If ``weight`` is not a floating tensor.
        ValueError: If ``weight`` is not a non-empty 4-D kernel or holds NaN/inf.

    Examples:
        An all-ones $3\times 3$ kernel: the reshaped matrix has norm 3, the circular convolution
        norm 9 (the upper bound), the zero-padded one on the same $8\times 8$ input a little less:

        >>> import torch
        >>> w = torch.ones(1, 1, 3, 3, dtype=torch.float64)
        >>> reshaped_kernel_norm(w).item()
        3.0
        >>> round(conv_operator_norm_fft(w, (8, 8)).item(), 6)
        9.0
        >>> g = torch.Generator().manual_seed(0)
        >>> round(conv_operator_norm(w, (8, 8), "zeros", n_iter=300, generator=g).item(), 3)
        8.291
    """
    return _exact_norm(_check_kernel(weight, finite=True).flatten(1))


def conv_matrix(weight: Tensor, input_size: tuple[int, int], padding_mode: PaddingMode = "zeros") -> Tensor:
    """Dense matrix of a stride-1 'same' 2-D convolution on inputs of ``input_size`` (slow reference).

    Column ``j`` is the flattened output for the ``j``-th basis input. Only for tiny sizes.

    Args:
        weight: Convolution kernel with odd kernel sizes.
        input_size: Spatial size ``(H, W)`` of the input (at least the kernel size).
        padding_mode: ``"zeros"`` or ``"circular"``.

    Returns:
        The matrix.

    Shapes:
        weight: ``(out, in, kh, kw)``; result: ``(out*H*W, in*H*W)``.

    Raises:
        TypeError: If ``weight`` is not a floating tensor.
        ValueError: For bad shapes, sizes or padding modes (NaN/inf entries of the kernel propagate).
    """
    weight, (H, Wd) = _check_conv(weight, input_size)
    _check_padding_mode(padding_mode)
    c_in = weight.shape[1]
    n = c_in * H * Wd
    basis = torch.eye(n, dtype=weight.dtype, device=weight.device).reshape(n, c_in, H, Wd)
    return _conv_same(basis, weight.detach(), padding_mode).reshape(n, -1).mT


def conv_operator_norm(
    weight: Tensor,
    input_size: tuple[int, int],
    padding_mode: PaddingMode = "zeros",
    n_iter: int = 200,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""True operator norm $\|\mathcal{C}\|_2$ of a stride-1 'same' convolution, by power iteration.

    The power method on $\mathcal{C}^\top \mathcal{C}$ on an input of the actual spatial size. For an odd
    kernel and 'same' padding (zeros or circular) the adjoint $\mathcal{C}^\top$ is the same kind of
    convolution with the kernel's channel axes swapped and its spatial axes flipped. The estimate
    $\|\mathcal{C} x\|$ for unit $x$ approaches the norm from below.

    Args:
        weight: Convolution kernel with odd kernel sizes.
        input_size: Spatial size ``(H, W)`` of the input (at least the kernel size).
        padding_mode: ``"zeros"`` or ``"circular"``.
        n_iter: Iterations (>= 1).
        generator: Random generator for the start vector.

    Returns:
        A 0-d tensor (a lower estimate of the norm that converges to it).

    Shapes:
        weight: ``(out, in, kh, kw)``.

    Raises:
        TypeError: If ``weight`` is not a floating tensor or ``generator`` not a ``torch.Generator``.
        ValueError: For bad shapes, sizes, padding modes or ``n_iter``, or a kernel with NaN/inf.
    """
    weight, (H, Wd) = _check_conv(weight, input_size, finite=True)
    n_iter = check_int(n_iter, "n_iter", 1)
    _check_padding_mode(padding_mode)
    if generator is not None:
        check_generator(generator)
    w = weight.detach()
    scale = _pow2_scale(w)  # exact rescaling: kernels of 1e-30 or 1e30 neither underflow nor overflow
    w = w / scale
    w_adj = w.transpose(0, 1).flip(-2, -1)  # the adjoint of a 'same' convolution is one with this kernel
    x = torch.randn(1, w.shape[1], H, Wd, generator=generator, dtype=w.dtype, device=w.device)
    x = x / torch.linalg.vector_norm(x)
    for _ in range(n_iter):
        g = _conv_same(_conv_same(x, w, padding_mode), w_adj, padding_mode)
        norm = torch.linalg.vector_norm(g)
        if norm == 0:
            break
        x = g / norm
    return torch.linalg.vector_norm(_conv_same(x, w, padding_mode)) * scale


def conv_operator_norm_fft(weight: Tensor, input_size: tuple[int, int]) -> Tensor:
    r"""Exact operator norm of a stride-1 *circular* convolution via the 2-D FFT (Sedghi et al., 2019).

    A circular convolution is block-circulant, so the discrete Fourier transform block-diagonalises
    it: its singular values are those of the $c_\text{out} \times c_\text{in}$ matrices
    $\hat K(\omega) = \sum_{p,q} K_{:,:,p,q}\, e^{-2\pi i (\omega_1 p / H + \omega_2 q / W)}$,
    one per frequency, and $\|\mathcal{C}\| = \max_\omega \|\hat K(\omega)\|_2$.

    Args:
        weight: Convolution kernel with odd kernel sizes (float16/bfloat16: computed in float32,
            rounded to its dtype).
        input_size: Spatial size ``(H, W)`` (at least the kernel size).

    Returns:
        A 0-d tensor.

    Shapes:
        weight: ``(out, in, kh, kw)``.

    Raises:
        TypeError: If ``weight`` is not a floating tensor.
        ValueError: For bad shapes or sizes, or a kernel with NaN/inf.

    Source: H. Sedghi, V. Gupta, P. Long, "The Singular Values of Convolutional Layers", ICLR 2019,
    [arXiv:1805.10408](https://arxiv.org/abs/1805.10408).
    """
    weight, (H, Wd) = _check_conv(weight, input_size, finite=True)
    w = weight.detach().float() if weight.dtype in _LOW_PRECISION else weight.detach()  # no half-precision FFT on CPU
    freq = torch.fft.fft2(w, s=(H, Wd))  # (out, in, H, W), zero-padded kernel
    return torch.linalg.matrix_norm(freq.permute(2, 3, 0, 1), ord=2).max().to(weight.dtype)


# ----------------------------------------------------------------------------------------------
# gradient penalty (WGAN-GP) and weight clipping


def _two_sided(grad_norm: Tensor) -> Tensor:
    r"""WGAN-GP: $(\|\nabla f\| - 1)^2$ (Gulrajani et al., 2017)."""
    return (grad_norm - 1).square()


def _one_sided(grad_norm: Tensor) -> Tensor:
    r"""One-sided: $\max(\|\nabla f\| - 1, 0)^2$ (Su's preference; Petzka et al. 2018)."""
    return F.relu(grad_norm - 1).square()


PENALTIES: dict[str, Callable[[Tensor], Tensor]] = {"two-sided": _two_sided, "one-sided": _one_sided}
r"""Gradient-penalty variants by name, each ``f(grad_norm) -> per-example penalty`` (same signature):
``"two-sided"`` $(\|\nabla f\| - 1)^2$ (WGAN-GP) and ``"one-sided"`` $\max(\|\nabla f\| - 1, 0)^2$ (Su's choice)."""


def _grad_norms(critic: Callable[[Tensor], Tensor], x: Tensor, create_graph: bool) -> Tensor:
    x = x.detach().requires_grad_(True)
    out = critic(x)
    if out.shape not in ((x.shape[0],), (x.shape[0], 1)):
        raise ValueError(f"critic must return shape (n,) or (n, 1) for n = {x.shape[0]}, got {tuple(out.shape)}")
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=create_graph)
    # sqrt(sum g^2 + tiny) keeps the double backward finite when a gradient is exactly zero
    return torch.sqrt(grad.flatten(1).square().sum(dim=1) + torch.finfo(x.dtype).tiny)


def gradient_norms(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    r"""Per-example gradient norms $\|\nabla_x f(x_i)\|_2$ of a scalar critic (no graph kept).

    Args:
        critic: Maps a batch to one score per example.
        x: Points.

    Returns:
        The norms (a point with NaN/inf entries gets a NaN/inf norm: per-example, like a layer).

    Shapes:
        x: ``(n, ...)``; result: ``(n,)``.

    Raises:
        ValueError: If ``x`` is empty or the critic's output shape is wrong.
        TypeError: If ``critic`` is not callable or ``x`` is not a floating tensor.
    """
    _check_callable(critic, "critic")
    _check_points(x, "x")
    return _grad_norms(critic, x, create_graph=False).detach()


def _check_points(x: object, name: str) -> Tensor:
    check_tensor(x, name, floating=True, nonempty=True)
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (n, ...) with one point per row, got {tuple(x.shape)}")
    return x


# --8<-- [start:gp]
def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    lam: float = 10.0,
    kind: str = "two-sided",
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Gradient penalty at random interpolates between real and fake points.

    With $\epsilon_i \sim U[0, 1]$ drawn per example and $\hat x_i = \epsilon_i x^r_i + (1-\epsilon_i) x^g_i$,

    $$\text{two-sided: } \lambda\,\mathbb{E}\big[(\|\nabla f(\hat x)\| - 1)^2\big],\qquad
    \text{one-sided: } \lambda\,\mathbb{E}\big[\max(\|\nabla f(\hat x)\| - 1, 0)^2\big].$$

    The graph is kept (``create_graph=True``) so the penalty can be minimised: a double backward.

    Args:
        critic: Maps a batch to one score per example.
        real: Real points.
        fake: Generated points (same shape).
        lam: Penalty weight (>= 0; 10 in Gulrajani et al.).
        kind: A key of [`PENALTIES`][kexue.lipschitz.PENALTIES].
        generator: Random generator for $\epsilon$.

    Returns:
        The penalty, a 0-d tensor.

    Shapes:
        real, fake: ``(n, ...)``.

    Raises:
        TypeError: If ``critic`` is not callable, ``real`` or ``fake`` not a floating tensor, or
            ``generator`` not a ``torch.Generator``.
        ValueError: For mismatched or empty batches, NaN/inf points, a negative ``lam`` or an
            unknown ``kind``.

    Source: Gulrajani et al. (2017), [arXiv:1704.00028](https://arxiv.org/abs/1704.00028); one-sided
    form: Su (2018), Petzka et al. (2018).

    Examples:
        A linear critic $f(x) = a^\top x$ has $\|\nabla f\| = \|a\|$ everywhere, so the penalty
        is $\lambda(\|a\| - 1)^2$ two-sided and zero one-sided when $\|a\| < 1$:

        >>> import torch
        >>> a = torch.tensor([0.3, 0.4])  # ||a|| = 0.5
        >>> critic = lambda x: x @ a
        >>> real, fake = torch.randn(16, 2), torch.randn(16, 2)
        >>> gradient_penalty(critic, real, fake, lam=10.0).item()
        2.5
        >>> gradient_penalty(critic, real, fake, lam=10.0, kind="one-sided").item()
        0.0
    """
    lam = check_real(lam, "lam", at_least=0)
    _check_gp_inputs(critic, real, fake, kind, generator)
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    eps = torch.rand(shape, generator=generator, dtype=real.dtype, device=real.device)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    norms = _grad_norms(critic, x_hat, create_graph=True)
    return lam * PENALTIES[kind](norms).mean()
# --8<-- [end:gp]


def _check_gp_inputs(critic: object, real: object, fake: object, kind: object, generator: object) -> None:
    """Arguments of [`gradient_penalty`][kexue.lipschitz.gradient_penalty] other than ``lam``."""
    if not isinstance(kind, str) or kind not in PENALTIES:
        raise ValueError(f"kind must be one of {sorted(PENALTIES)}, got {kind!r}")
    _check_callable(critic, "critic")
    _check_points(real, "real")
    check_tensor(fake, "fake", floating=True)
    if real.shape != fake.shape or real.dtype != fake.dtype:
        raise ValueError(f"real and fake must have the same shape and dtype, got {tuple(real.shape)} {real.dtype} "
                         f"and {tuple(fake.shape)} {fake.dtype}")
    check_finite(real, "real")
    check_finite(fake, "fake")
    if generator is not None:
        check_generator(generator)


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float) -> nn.Module:
    """Clamp every parameter of ``module`` to ``[-c, c]`` in place (the original WGAN, Arjovsky et al. 2017).

    Args:
        module: The critic.
        c: Clipping bound (> 0; 0.01 in the WGAN paper).

    Returns:
        The module.

    Raises:
        TypeError: If ``module`` is not an ``nn.Module``.
        ValueError: If ``c <= 0``.
    """
    _check_module(module)
    c = check_real(c, "c", above=0)
    for p in module.parameters():
        p.clamp_(-c, c)
    return module


@torch.no_grad()
def clip_frobenius_(module: nn.Module, c: float) -> nn.Module:
    r"""Rescale each weight matrix in place so that $\|W\|_F \le c$: $W \leftarrow W \min(1, c/\|W\|_F)$.

    Since $\|W\|_2 \le \|W\|_F$ this makes each such layer $c$-Lipschitz; biases are left alone.

    Args:
        module: The network.
        c: Bound (> 0).

    Returns:
        The module.

    Raises:
        TypeError: If ``module`` is not an ``nn.Module``.
        ValueError: If ``c <= 0``.
    """
    _check_module(module)
    c = check_real(c, "c", above=0)
    for p in module.parameters():
        if p.ndim >= 2:
            p.mul_((c / torch.linalg.vector_norm(p).clamp_min(1e-30)).clamp(max=1.0))
    return module


# ----------------------------------------------------------------------------------------------
# Lipschitz bounds and the exact Wasserstein-1 distance


def lipschitz_upper_bound(weights: Sequence[Tensor]) -> Tensor:
    r"""Upper bound $\prod_l \|W_l\|_2$ on the Lipschitz constant of an MLP with 1-Lipschitz activations.

    Args:
        weights: The layers' weight matrices in the order they are applied (exact spectral norms
            are taken); consecutive layers must compose, ``weights[i + 1].shape[1] == weights[i].shape[0]``.

    Returns:
        A 0-d tensor.

    Shapes:
        each weight: ``(out, in)``.

    Raises:
        TypeError: If ``weights`` is not a sequence or an entry is not a floating tensor.
        ValueError: If ``weights`` is empty, an entry is not a finite matrix, or two consecutive
            layers do not compose.
    """
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise TypeError(f"weights must be a sequence of weight matrices, got {type(weights).__name__}")
    if len(weights) == 0:
        raise ValueError("weights must hold at least one matrix")
    for i, W in enumerate(weights):
        _check_matrix(W, f"weights[{i}]", finite=True)
        if i and W.shape[1] != weights[i - 1].shape[0]:
            raise ValueError(f"weights[{i}] of shape {tuple(W.shape)} does not compose with weights[{i - 1}] of shape "
                             f"{tuple(weights[i - 1].shape)}: its input size must be the previous output size")
    return torch.stack([_exact_norm(W.detach()) for W in weights]).prod()


def jacobian_norms(model: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    r"""Spectral norm of the input Jacobian $\|\partial f(x_i)/\partial x_i\|_2$ at each point.

    The maximum over points is a lower bound on the Lipschitz constant of ``model`` (an upper bound
    being [`lipschitz_upper_bound`][kexue.lipschitz.lipschitz_upper_bound]). An ``nn.Module`` is
    differentiated in ``eval()`` mode and gets its own mode back afterwards: in training mode a
    spectrally normalised layer would update its buffers (which the Jacobian transform cannot do)
    and dropout would draw a random mask.

    Args:
        model: Maps ``(n, d)`` inputs to ``(n, k)`` outputs, one example at a time independently.
        x: Points.

    Returns:
        One norm per point.

    Shapes:
        x: ``(n, d)``; result: ``(n,)``.

    Raises:
        TypeError: If ``model`` is not callable or ``x`` not a floating tensor.
        ValueError: If ``x`` is not a non-empty finite ``(n, d)`` tensor.
    """
    _check_callable(model, "model")
    check_tensor(x, "x", 2, floating=True, nonempty=True)
    check_finite(x, "x")

    def single(xi: Tensor) -> Tensor:
        return model(xi.unsqueeze(0)).squeeze(0)

    was_training = isinstance(model, nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        jac = torch.func.vmap(torch.func.jacrev(single))(x.detach())  # (n, k, d)
    finally:
        if was_training:
            model.train()
    if jac.ndim == 2:  # scalar output
        return torch.linalg.vector_norm(jac, dim=1).detach()
    return torch.linalg.matrix_norm(jac, ord=2).detach()


def exact_w1(x: Tensor, y: Tensor) -> float:
    r"""Exact Wasserstein-1 distance between two equal-size empirical measures (optimal assignment).

    $W_1 = \min_\pi \frac1n \sum_i \|x_i - y_{\pi(i)}\|$ over permutations $\pi$ (Birkhoff: an optimal
    coupling of two uniform measures of equal size is a permutation). For every 1-Lipschitz $f$,
    $\frac1n\sum_i f(x_i) - \frac1n\sum_i f(y_i) \le W_1$ (Kantorovich–Rubinstein).

    Args:
        x: First sample.
        y: Second sample (same shape).

    Returns:
        The distance (computed in float64 with ``scipy.optimize.linear_sum_assignment``).

    Shapes:
        x, y: ``(n, d)``.

    Raises:
        TypeError: If ``x`` or ``y`` is not a floating tensor.
        ValueError: If the samples are empty, hold NaN/inf or their shapes differ.

    Examples:
        >>> import torch
        >>> x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        >>> exact_w1(x, x + torch.tensor([0.0, 2.0]))  # a translation by 2
        2.0
        >>> exact_w1(x, x.flip(0))  # the same set in another order
        0.0
    """
    from scipy.optimize import linear_sum_assignment

    check_tensor(x, "x", 2, floating=True, nonempty=True)
    check_tensor(y, "y", 2, floating=True, nonempty=True)
    if x.shape != y.shape:
        raise ValueError(f"x and y must be samples of the same shape (n, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    check_finite(x, "x")
    check_finite(y, "y")
    cost = torch.cdist(x.detach().double(), y.detach().double()).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())

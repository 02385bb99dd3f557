"""Lipschitz constraints in deep learning: spectral norms, spectral normalisation, gradient penalties.

Companion to Su Jianlin, "深度学习中的Lipschitz约束：泛化与生成模型" (kexue.fm/archives/6051, 2018).
A layer ``x -> act(W x + b)`` with an activation of slope at most 1 is ``||W||_2``-Lipschitz, so the
spectral norm of each weight matrix controls how sensitive a network is to its input. This module
holds:

* the spectral norm by power iteration (:func:`spectral_norm`) beside the exact SVD value
  (:func:`spectral_norm_exact`);
* one spectral-normalisation step ``W -> W / sigma(W)`` with persistent singular-vector estimates
  (:func:`spectral_normalize`, and the slow reference :func:`spectral_normalize_reference` that
  mirrors PyTorch's parametrization), the parametrization module :class:`SpectralNorm` and
  :func:`spectral_normalization` to register it on a layer;
* the spectral-norm regulariser :func:`spectral_penalty`;
* the true operator norm of a 2-D convolution (:func:`conv_operator_norm`, :func:`conv_operator_norm_fft`,
  the dense :func:`conv_matrix`) to compare with the norm of the reshaped kernel
  (:func:`reshaped_kernel_norm`);
* the WGAN gradient penalty, two- and one-sided (:data:`PENALTIES`, :func:`gradient_penalty`),
  weight clipping, Lipschitz bounds of a network, and the exact Wasserstein-1 distance between two
  equal-size samples (:func:`exact_w1`);
* small seeded experiments used on the page (:func:`train_classifier`, :func:`train_critic`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from kexue._checks import check_int, check_real, check_tensor

__all__ = [
    "PowerIteration",
    "SpectralNormStep",
    "spectral_norm",
    "spectral_norm_exact",
    "spectral_normalize",
    "spectral_normalize_reference",
    "SpectralNorm",
    "spectral_normalization",
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
    "sharpening_matrix",
    "matrix_with_spectrum",
    "shifted_gaussian",
    "count_matmul_flops",
    "mlp",
    "CLASSIFIER_METHODS",
    "train_classifier",
    "CRITIC_METHODS",
    "train_critic",
]


# ----------------------------------------------------------------------------------------------
# validation helpers


def _check_matrix(W: object, name: str = "W") -> Tensor:
    return check_tensor(W, name, 2, floating=True, nonempty=True)


def _check_vector(x: object, name: str, size: int, like: Tensor) -> Tensor:
    check_tensor(x, name)
    if x.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got {tuple(x.shape)}")
    if x.dtype != like.dtype:
        raise TypeError(f"{name} must have dtype {like.dtype} like the matrix, got {x.dtype}")
    return x


# ----------------------------------------------------------------------------------------------
# spectral norm by power iteration


class PowerIteration(NamedTuple):
    """Result of :func:`spectral_norm`.

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

    Args:
        W: A matrix.

    Returns:
        The largest singular value, a 0-d tensor of ``W``'s dtype.

    Shapes:
        W: ``(out, in)``.

    Raises:
        TypeError: If ``W`` is not a floating tensor.
        ValueError: If ``W`` is not a non-empty 2-D matrix.
    """
    W = _check_matrix(W)
    return torch.linalg.matrix_norm(W, ord=2)


# --8<-- [start:power]
def spectral_norm(
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
        eps: Floor of the norms when normalising (a zero matrix gives ``sigma = 0``).

    Returns:
        A :class:`PowerIteration` ``(sigma, u, v, history)``.

    Shapes:
        W: ``(out, in)``; u: ``(out,)``; v: ``(in,)``; history: ``(n_iter,)``.

    Raises:
        TypeError: If ``W`` or ``u0`` has the wrong type or dtype.
        ValueError: If ``W`` is not a non-empty matrix, ``n_iter < 1`` or ``u0`` has the wrong shape.

    Source: power iteration as in Su (2018, kexue.fm/archives/6051) and Miyato et al. (2018).
    """
    W = _check_matrix(W)
    n_iter = check_int(n_iter, "n_iter", 1)
    if u0 is None:
        u = torch.randn(W.shape[0], generator=generator, dtype=W.dtype, device=W.device)
    elif isinstance(u0, str):
        if u0 != "ones":
            raise ValueError(f"u0 must be None, 'ones' or a tensor, got {u0!r}")
        u = torch.ones(W.shape[0], dtype=W.dtype, device=W.device)
    else:
        u = _check_vector(u0, "u0", W.shape[0], W)
    W = W.detach()
    u = F.normalize(u.detach(), dim=0, eps=eps)
    history = W.new_empty(n_iter)
    for k in range(n_iter):
        v = F.normalize(W.mT @ u, dim=0, eps=eps)
        Wv = W @ v
        history[k] = torch.linalg.vector_norm(Wv)  # = u_new^T W v
        u = F.normalize(Wv, dim=0, eps=eps)
    return PowerIteration(history[-1].clone(), u, v, history)
# --8<-- [end:power]


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


def _check_step_inputs(W: Tensor, u: Tensor, v: Tensor, n_iter: int) -> None:
    _check_matrix(W)
    _check_vector(u, "u", W.shape[0], W)
    _check_vector(v, "v", W.shape[1], W)
    check_int(n_iter, "n_iter", 0)


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

    Args:
        W: The weight matrix (gradient flows through it).
        u: Current left vector (unit norm), treated as a constant.
        v: Current right vector (unit norm), treated as a constant.
        n_iter: Power iterations before normalising (>= 0; PyTorch uses 1 per training forward).
        eps: Floor of the norms (a zero matrix gives ``sigma = 0`` and a non-finite weight; use
            a non-zero matrix).

    Returns:
        A :class:`SpectralNormStep` ``(weight, sigma, u, v)``; the inputs are not modified.

    Shapes:
        W: ``(out, in)``; u: ``(out,)``; v: ``(in,)``.

    Raises:
        TypeError: For non-tensors or mismatched dtypes.
        ValueError: For shapes that do not match ``W`` or ``n_iter < 0``.

    Source: Miyato et al. (2018), arXiv:1802.05957, Algorithm 1; PyTorch's
    ``torch.nn.utils.parametrizations.spectral_norm`` for the update order.
    """
    _check_step_inputs(W, u, v, n_iter)
    if n_iter == 0:
        sigma = u.detach() @ (W @ v.detach())
        return SpectralNormStep(W / sigma, sigma, u.detach(), v.detach())
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
    return SpectralNormStep(W / sigma, sigma, u, v)
# --8<-- [end:step]


def spectral_normalize_reference(
    W: Tensor, u: Tensor, v: Tensor, n_iter: int = 1, eps: float = 1e-12
) -> SpectralNormStep:
    r"""Slow, obvious spectral-normalisation step, written like PyTorch's parametrization.

    ``n_iter`` times $u \leftarrow \mathrm{normalize}(Wv)$, $v \leftarrow \mathrm{normalize}(W^\top u)$
    (no gradient), then $\hat\sigma = u^\top W v$ with $u, v$ constant and $W/\hat\sigma$.
    Three matrix-vector products per step; :func:`spectral_normalize` must agree with it.

    Args:
        W: The weight matrix.
        u: Current left vector.
        v: Current right vector.
        n_iter: Power iterations (>= 0).
        eps: Floor of the norms.

    Returns:
        A :class:`SpectralNormStep`.

    Shapes:
        W: ``(out, in)``; u: ``(out,)``; v: ``(in,)``.

    Raises:
        TypeError: For non-tensors or mismatched dtypes.
        ValueError: For shapes that do not match ``W`` or ``n_iter < 0``.
    """
    _check_step_inputs(W, u, v, n_iter)
    u, v = u.detach().clone(), v.detach().clone()
    with torch.no_grad():
        for _ in range(n_iter):
            u = F.normalize(torch.mv(W, v), dim=0, eps=eps)
            v = F.normalize(torch.mv(W.mT, u), dim=0, eps=eps)
    sigma = torch.dot(u, torch.mv(W, v))
    return SpectralNormStep(W / sigma, sigma, u, v)


# ----------------------------------------------------------------------------------------------
# spectral normalisation as a parametrization


def _to_matrix(weight: Tensor, dim: int) -> Tensor:
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.ndim) if d != dim))
    return weight.flatten(1)


class SpectralNorm(nn.Module):
    r"""Parametrization $W \mapsto W / \hat\sigma(W)$ with persistent power-iteration vectors.

    A thin module around :func:`spectral_normalize`: it holds the buffers ``u`` and ``v``, updates
    them (``n_power_iterations`` per forward) only in training mode, never sends gradients into
    them, and reshapes conv kernels to ``(weight.shape[dim], -1)``. One-dimensional weights are
    divided by their Euclidean norm. Register it with :func:`spectral_normalization`.

    Because the new vectors are fresh tensors copied into the buffers after use, a loss built from
    two forwards (``D(real) - D(fake)``) backpropagates without "modified by an in-place operation"
    errors (the issue PyTorch solves by cloning).

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
        ValueError: For a non-floating or empty weight, a bad ``dim``, ``n_power_iterations < 1``
            or ``warmup < 0``.

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
        if not isinstance(weight, Tensor) or not weight.dtype.is_floating_point or weight.numel() == 0:
            raise ValueError("weight must be a non-empty floating tensor")
        if not isinstance(dim, int) or not -weight.ndim <= dim < weight.ndim:
            raise ValueError(f"dim must be an integer in [-{weight.ndim}, {weight.ndim - 1}], got {dim!r}")
        self.n_power_iterations = check_int(n_power_iterations, "n_power_iterations", 1)
        check_int(warmup, "warmup", 0)
        self.dim = dim % weight.ndim
        self.eps = eps
        if weight.ndim > 1:
            mat = _to_matrix(weight.detach(), self.dim)
            u = torch.randn(mat.shape[0], generator=generator, dtype=mat.dtype, device=mat.device)
            v = torch.randn(mat.shape[1], generator=generator, dtype=mat.dtype, device=mat.device)
            u, v = F.normalize(u, dim=0, eps=eps), F.normalize(v, dim=0, eps=eps)
            if warmup:
                step = spectral_normalize_reference(mat, u, v, n_iter=warmup, eps=eps)
                u, v = step.u, step.v
            self.register_buffer("u", u)
            self.register_buffer("v", v)

    def forward(self, weight: Tensor) -> Tensor:
        """Return ``weight / sigma`` (updating ``u`` and ``v`` first in training mode)."""
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        mat = _to_matrix(weight, self.dim)
        step = spectral_normalize(mat, self.u, self.v, self.n_power_iterations if self.training else 0, self.eps)
        if self.training:
            with torch.no_grad():
                self.u.copy_(step.u)
                self.v.copy_(step.v)
        return weight / step.sigma


def spectral_normalization(
    module: nn.Module,
    name: str = "weight",
    n_power_iterations: int = 1,
    dim: int | None = None,
    eps: float = 1e-12,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Register :class:`SpectralNorm` on ``module.<name>`` (same call as PyTorch's ``spectral_norm``).

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
        ValueError: If the module has no parameter called ``name``.
    """
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


def spectral_penalty(sigmas: Sequence[Tensor], lam: float) -> Tensor:
    r"""Spectral-norm regulariser $\lambda \sum_l \sigma(W_l)^2$ (the article's convention).

    Its gradient with respect to each $W_l$ is $2\lambda\,\sigma_l\, u_l v_l^\top$ when $\sigma_l$ comes
    from :func:`spectral_normalize` (or is exact with a simple top singular value). Yoshida & Miyato
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
        ValueError: If ``lam`` is negative or a ``sigmas`` entry is not a 0-d tensor.
    """
    lam = check_real(lam, "lam", at_least=0)
    total: Tensor | None = None
    for i, s in enumerate(sigmas):
        if not isinstance(s, Tensor) or s.ndim != 0:
            raise ValueError(f"sigmas[{i}] must be a 0-d tensor, got {s!r}")
        total = s.square() if total is None else total + s.square()
    if total is None:
        return torch.zeros(())
    return lam * total


# ----------------------------------------------------------------------------------------------
# convolutions: reshaped kernel vs the true operator norm


def _check_conv(weight: object, input_size: object) -> tuple[Tensor, tuple[int, int]]:
    if not isinstance(weight, Tensor) or not weight.dtype.is_floating_point:
        raise TypeError("weight must be a floating torch.Tensor of shape (out, in, kh, kw)")
    if weight.ndim != 4 or weight.numel() == 0:
        raise ValueError(f"weight must have shape (out, in, kh, kw), got {tuple(weight.shape)}")
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
        weight: Convolution kernel.

    Returns:
        A 0-d tensor.

    Shapes:
        weight: ``(out, in, kh, kw)``.

    Raises:
        TypeError: If ``weight`` is not a floating tensor.
        ValueError: If ``weight`` is not 4-D.
    """
    if not isinstance(weight, Tensor) or not weight.dtype.is_floating_point:
        raise TypeError("weight must be a floating torch.Tensor of shape (out, in, kh, kw)")
    if weight.ndim != 4 or weight.numel() == 0:
        raise ValueError(f"weight must have shape (out, in, kh, kw), got {tuple(weight.shape)}")
    return torch.linalg.matrix_norm(weight.flatten(1), ord=2)


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
        ValueError: For bad shapes, sizes or padding modes.
    """
    weight, (H, Wd) = _check_conv(weight, input_size)
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
        TypeError: If ``weight`` is not a floating tensor.
        ValueError: For bad shapes, sizes, padding modes or ``n_iter``.
    """
    weight, (H, Wd) = _check_conv(weight, input_size)
    n_iter = check_int(n_iter, "n_iter", 1)
    if padding_mode not in ("zeros", "circular"):
        raise ValueError(f"padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")
    w = weight.detach()
    w_adj = w.transpose(0, 1).flip(-2, -1)  # the adjoint of a 'same' convolution is one with this kernel
    x = torch.randn(1, w.shape[1], H, Wd, generator=generator, dtype=w.dtype, device=w.device)
    x = x / torch.linalg.vector_norm(x)
    for _ in range(n_iter):
        g = _conv_same(_conv_same(x, w, padding_mode), w_adj, padding_mode)
        norm = torch.linalg.vector_norm(g)
        if norm == 0:
            break
        x = g / norm
    return torch.linalg.vector_norm(_conv_same(x, w, padding_mode))


def conv_operator_norm_fft(weight: Tensor, input_size: tuple[int, int]) -> Tensor:
    r"""Exact operator norm of a stride-1 *circular* convolution via the 2-D FFT (Sedghi et al., 2019).

    A circular convolution is block-circulant, so the discrete Fourier transform block-diagonalises
    it: its singular values are those of the $c_\text{out} \times c_\text{in}$ matrices
    $\hat K(\omega) = \sum_{p,q} K_{:,:,p,q}\, e^{-2\pi i (\omega_1 p / H + \omega_2 q / W)}$,
    one per frequency, and $\|\mathcal{C}\| = \max_\omega \|\hat K(\omega)\|_2$.

    Args:
        weight: Convolution kernel with odd kernel sizes.
        input_size: Spatial size ``(H, W)`` (at least the kernel size).

    Returns:
        A 0-d tensor.

    Shapes:
        weight: ``(out, in, kh, kw)``.

    Raises:
        TypeError: If ``weight`` is not a floating tensor.
        ValueError: For bad shapes or sizes.

    Source: H. Sedghi, V. Gupta, P. Long, "The Singular Values of Convolutional Layers", ICLR 2019.
    """
    weight, (H, Wd) = _check_conv(weight, input_size)
    freq = torch.fft.fft2(weight.detach(), s=(H, Wd))  # (out, in, H, W), zero-padded kernel
    return torch.linalg.matrix_norm(freq.permute(2, 3, 0, 1), ord=2).max()


# ----------------------------------------------------------------------------------------------
# gradient penalty (WGAN-GP) and weight clipping


def _two_sided(grad_norm: Tensor) -> Tensor:
    """WGAN-GP: $(\\|\\nabla f\\| - 1)^2$ (Gulrajani et al., 2017)."""
    return (grad_norm - 1).square()


def _one_sided(grad_norm: Tensor) -> Tensor:
    """One-sided: $\\max(\\|\\nabla f\\| - 1, 0)^2$ (Su's preference; Petzka et al. 2018)."""
    return F.relu(grad_norm - 1).square()


#: Gradient-penalty variants, each ``f(grad_norm) -> per-example penalty`` (same signature).
PENALTIES: dict[str, Callable[[Tensor], Tensor]] = {"two-sided": _two_sided, "one-sided": _one_sided}


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
        The norms.

    Shapes:
        x: ``(n, ...)``; result: ``(n,)``.

    Raises:
        ValueError: If ``x`` is empty or the critic's output shape is wrong.
        TypeError: If ``x`` is not a floating tensor.
    """
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
        raise TypeError("x must be a floating torch.Tensor")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (n, ...) with n >= 1, got {tuple(x.shape)}")
    return _grad_norms(critic, x, create_graph=False).detach()


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
        kind: A key of :data:`PENALTIES`.
        generator: Random generator for $\epsilon$.

    Returns:
        The penalty, a 0-d tensor.

    Shapes:
        real, fake: ``(n, ...)``.

    Raises:
        ValueError: For mismatched or empty batches, a negative ``lam`` or an unknown ``kind``.

    Source: Gulrajani et al. (2017), arXiv:1704.00028; one-sided form: Su (2018), Petzka et al. (2018).
    """
    if kind not in PENALTIES:
        raise ValueError(f"kind must be one of {sorted(PENALTIES)}, got {kind!r}")
    lam = check_real(lam, "lam", at_least=0)
    if not isinstance(real, Tensor) or not isinstance(fake, Tensor) or real.shape != fake.shape:
        raise ValueError("real and fake must be tensors of the same shape")
    if real.ndim < 2 or real.shape[0] == 0:
        raise ValueError(f"real must have shape (n, ...) with n >= 1, got {tuple(real.shape)}")
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    eps = torch.rand(shape, generator=generator, dtype=real.dtype, device=real.device)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    norms = _grad_norms(critic, x_hat, create_graph=True)
    return lam * PENALTIES[kind](norms).mean()
# --8<-- [end:gp]


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float) -> nn.Module:
    """Clamp every parameter of ``module`` to ``[-c, c]`` in place (the original WGAN, Arjovsky et al. 2017).

    Args:
        module: The critic.
        c: Clipping bound (> 0; 0.01 in the WGAN paper).

    Returns:
        The module.

    Raises:
        ValueError: If ``c <= 0``.
    """
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
        ValueError: If ``c <= 0``.
    """
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
        weights: The layers' weight matrices (exact spectral norms are taken).

    Returns:
        A 0-d tensor.

    Shapes:
        each weight: ``(out, in)``.

    Raises:
        ValueError: If ``weights`` is empty or an entry is not a matrix.
    """
    if len(weights) == 0:
        raise ValueError("weights must hold at least one matrix")
    norms = [spectral_norm_exact(_check_matrix(W.detach(), f"weights[{i}]")) for i, W in enumerate(weights)]
    return torch.stack(norms).prod()


def jacobian_norms(model: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    r"""Spectral norm of the input Jacobian $\|\partial f(x_i)/\partial x_i\|_2$ at each point.

    The maximum over points is a lower bound on the Lipschitz constant of ``model`` (an upper bound
    being :func:`lipschitz_upper_bound`). Put spectrally normalised models in ``eval()`` mode first
    so their buffers are not updated.

    Args:
        model: Maps ``(n, d)`` inputs to ``(n, k)`` outputs, one example at a time independently.
        x: Points.

    Returns:
        One norm per point.

    Shapes:
        x: ``(n, d)``; result: ``(n,)``.

    Raises:
        ValueError: If ``x`` is not a non-empty ``(n, d)`` tensor.
    """
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[0] == 0 or not x.dtype.is_floating_point:
        raise ValueError(f"x must be a non-empty floating (n, d) tensor, got {getattr(x, 'shape', x)!r}")

    def single(xi: Tensor) -> Tensor:
        return model(xi.unsqueeze(0)).squeeze(0)

    jac = torch.func.vmap(torch.func.jacrev(single))(x.detach())  # (n, k, d)
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
        ValueError: If the samples are empty or their shapes differ.
    """
    from scipy.optimize import linear_sum_assignment

    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape != y.shape:
        raise ValueError("x and y must be tensors of the same shape (n, d)")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (n, d) with n >= 1, got {tuple(x.shape)}")
    cost = torch.cdist(x.detach().double(), y.detach().double()).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


# ----------------------------------------------------------------------------------------------
# synthetic matrices and data


def sharpening_matrix(n: int, centre: float = 3.0, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""Circulant matrix of the 1-D filter $(-1, c, -1)$: $W = cI - P - P^\top$ ($P$ the cyclic shift).

    Its rows sum to $c - 2$, so the all-ones vector is an eigenvector with eigenvalue $c - 2$, while
    $\|W\|_2 = c + 2$ for even $n$. Power iteration started from all ones therefore stays on the
    ones vector and returns $|c - 2|$ (exactly, for integer $c$), not the norm.

    Args:
        n: Size (>= 3).
        centre: The centre tap $c$.
        dtype: Floating dtype.

    Returns:
        The symmetric matrix.

    Shapes:
        result: ``(n, n)``.

    Raises:
        ValueError: If ``n < 3``.
    """
    n = check_int(n, "n", 3)
    eye = torch.eye(n, dtype=dtype)
    shift = torch.roll(eye, 1, dims=1)
    return centre * eye - shift - shift.mT


def matrix_with_spectrum(
    singular_values: Sequence[float], shape: tuple[int, int], *, seed: int = 0, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Random matrix ``U diag(s) V^T`` with prescribed singular values (random orthogonal U, V).

    Args:
        singular_values: The singular values (at most ``min(shape)`` of them; the rest are 0).
        shape: ``(out, in)``.
        seed: Seed of the orthogonal factors.
        dtype: Floating dtype.

    Returns:
        The matrix.

    Shapes:
        result: ``shape``.

    Raises:
        ValueError: If there are more singular values than ``min(shape)`` or a value is negative.
    """
    m, n = shape
    k = len(singular_values)
    if k > min(m, n) or any(s < 0 for s in singular_values):
        raise ValueError(f"singular_values must be <= min(shape) = {min(m, n)} non-negative numbers")
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    s = torch.tensor(list(singular_values), dtype=torch.float64)
    return ((U[:, :k] * s) @ V[:, :k].mT).to(dtype)


def shifted_gaussian(
    n: int, mean: tuple[float, float] = (0.5, -1.5), std: float = 0.3, *, seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Isotropic 2-D Gaussian sample, the fixed "generator" distribution of the critic experiment.

    Args:
        n: Number of points (>= 1).
        mean: Centre.
        std: Standard deviation (> 0).
        seed: Seed.
        dtype: Floating dtype.

    Returns:
        The points.

    Shapes:
        result: ``(n, 2)``.

    Raises:
        ValueError: If ``n < 1`` or ``std <= 0``.
    """
    n = check_int(n, "n", 1)
    std = check_real(std, "std", above=0)
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 2, generator=g, dtype=torch.float64) * std + torch.tensor(mean)).to(dtype)


# ----------------------------------------------------------------------------------------------
# small experiments used on the page


def count_matmul_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of the matrix products (mm, addmm, bmm, mv, dot, ...) run by ``fn()``.

    A deterministic stand-in for wall time: it counts forward, backward and double-backward
    products alike (PyTorch's ``FlopCounterMode`` cannot follow ``torch.autograd.grad`` here).
    Element-wise work is not counted. Uses PyTorch's dispatch-mode hook and flop formulas.

    Args:
        fn: A zero-argument callable.

    Returns:
        The number of floating-point operations (multiply and add counted separately).
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    aten = torch.ops.aten
    vector_ops = {aten.mv: lambda a, b: 2 * a.shape[0] * a.shape[1], aten.dot: lambda a, b: 2 * a.shape[0],
                  aten.vdot: lambda a, b: 2 * a.shape[0]}

    class _Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            packet = func._overloadpacket
            if packet in flop_registry:
                self.flops += int(flop_registry[packet](*args, **kwargs, out_val=out))
            elif packet in vector_ops:
                self.flops += int(vector_ops[packet](*args[:2]))
            return out

    with _Counter() as counter:
        fn()
    return counter.flops


def mlp(sizes: Sequence[int], *, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """ReLU MLP ``Linear -> ReLU -> ... -> Linear`` with seeded default initialisation.

    Args:
        sizes: Layer widths, input first (at least two entries).
        seed: Seed of the initialisation.
        dtype: Parameter dtype.

    Returns:
        The network.

    Raises:
        ValueError: If fewer than two sizes are given or a size is not positive.
    """
    if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sizes must hold >= 2 positive integers, got {list(sizes)!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b, dtype=dtype))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _Scale(nn.Module):
    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: Tensor) -> Tensor:
        return self.c * x


def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


#: Training variants of :func:`train_classifier`.
CLASSIFIER_METHODS: tuple[str, ...] = ("plain", "weight-decay", "spectral-reg", "spectral-norm")


def train_classifier(
    method: str,
    x_train: Tensor,
    y_train: Tensor,
    *,
    hidden: Sequence[int] = (256, 256),
    epochs: int = 200,
    batch_size: int = 100,
    lr: float = 1e-3,
    lam: float = 1e-2,
    sn_scale: float = 1.0,
    seed: int = 0,
) -> nn.Sequential:
    r"""Train a ReLU MLP classifier with one of the Lipschitz controls of the article.

    * ``"plain"``: cross-entropy only;
    * ``"weight-decay"``: $+\lambda \sum_l \|W_l\|_F^2$ (the Frobenius bound on $\sigma$);
    * ``"spectral-reg"``: $+\lambda \sum_l \sigma(W_l)^2$ with one persistent power iteration per step;
    * ``"spectral-norm"``: every weight replaced by $W/\sigma(W)$ (:func:`spectral_normalization`),
      logits multiplied by ``sn_scale`` (so the network is ``sn_scale``-Lipschitz, up to the
      power-iteration error).

    Adam, shuffled mini-batches, everything seeded; the model is returned in ``eval()`` mode.

    Args:
        method: One of :data:`CLASSIFIER_METHODS`.
        x_train: Inputs.
        y_train: Integer labels.
        hidden: Hidden widths.
        epochs: Passes over the data (>= 1).
        batch_size: Mini-batch size (>= 1).
        lr: Adam learning rate (> 0).
        lam: Penalty weight for the two regularised methods (>= 0).
        sn_scale: Output scale of the spectrally normalised network (> 0).
        seed: Seed of initialisation, shuffling and power-iteration starts.

    Returns:
        The trained network.

    Shapes:
        x_train: ``(n, d)``; y_train: ``(n,)``.

    Raises:
        ValueError: For an unknown method, mismatched data or bad hyper-parameters.
    """
    if method not in CLASSIFIER_METHODS:
        raise ValueError(f"method must be one of {CLASSIFIER_METHODS}, got {method!r}")
    if x_train.ndim != 2 or y_train.shape != (x_train.shape[0],) or x_train.shape[0] == 0:
        raise ValueError("x_train must be (n, d) and y_train (n,) with n >= 1")
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 1)
    check_real(lr, "lr", above=0)
    check_real(lam, "lam", at_least=0)
    n_classes = int(y_train.max()) + 1
    model = mlp([x_train.shape[1], *hidden, n_classes], seed=seed, dtype=x_train.dtype)
    gen = torch.Generator().manual_seed(seed)
    layers = _linears(model)
    if method == "spectral-norm":
        for layer in layers:
            spectral_normalization(layer, generator=gen)
        if check_real(sn_scale, "sn_scale", above=0) != 1.0:
            model.append(_Scale(sn_scale))
    vectors = []  # persistent (u, v) for the spectral regulariser
    if method == "spectral-reg":
        for layer in layers:
            W = layer.weight.detach()
            warm = spectral_norm(W, n_iter=15, generator=gen)
            vectors.append((warm.u, warm.v))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = x_train.shape[0]
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            if method == "weight-decay":
                loss = loss + lam * sum(layer.weight.square().sum() for layer in layers)
            elif method == "spectral-reg":
                sigmas = []
                for i, layer in enumerate(layers):
                    step = spectral_normalize(layer.weight, *vectors[i])
                    vectors[i] = (step.u, step.v)
                    sigmas.append(step.sigma)
                loss = loss + spectral_penalty(sigmas, lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


#: Lipschitz controls of :func:`train_critic`.
CRITIC_METHODS: tuple[str, ...] = ("clip", "gp-two-sided", "gp-one-sided", "spectral-norm")


def train_critic(
    method: str,
    real: Tensor,
    fake: Tensor,
    *,
    hidden: Sequence[int] = (128, 128),
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    lam: float = 10.0,
    clip: float = 0.01,
    seed: int = 0,
) -> nn.Sequential:
    r"""Train a WGAN critic $f$ between two fixed samples: minimise $\mathbb{E}_g f - \mathbb{E}_r f$ (+ penalty).

    No generator: ``real`` and ``fake`` stay fixed, so the result can be compared with the exact
    $W_1$ of the two samples. Variants: ``"clip"`` (clamp all parameters to ``[-clip, clip]`` after
    each step), ``"gp-two-sided"`` / ``"gp-one-sided"`` (:func:`gradient_penalty` with weight ``lam``)
    and ``"spectral-norm"`` (every weight spectrally normalised, no penalty).
    Adam with $\beta = (0.5, 0.9)$; the critic is returned in ``eval()`` mode.

    Args:
        method: One of :data:`CRITIC_METHODS`.
        real: Real sample.
        fake: Generated sample (any size).
        hidden: Hidden widths of the ReLU MLP.
        steps: Critic updates (>= 1).
        batch_size: Points drawn (with replacement) from each sample per step.
        lr: Learning rate (> 0).
        lam: Gradient-penalty weight.
        clip: Clipping bound.
        seed: Seed of everything.

    Returns:
        The critic, mapping ``(n, d)`` to ``(n, 1)``.

    Shapes:
        real: ``(n_r, d)``; fake: ``(n_g, d)``.

    Raises:
        ValueError: For an unknown method, mismatched data or bad hyper-parameters.
    """
    if method not in CRITIC_METHODS:
        raise ValueError(f"method must be one of {CRITIC_METHODS}, got {method!r}")
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1] or min(len(real), len(fake)) == 0:
        raise ValueError("real and fake must be non-empty (n, d) tensors with the same d")
    check_int(steps, "steps", 1)
    check_int(batch_size, "batch_size", 1)
    check_real(lr, "lr", above=0)
    critic = mlp([real.shape[1], *hidden, 1], seed=seed, dtype=real.dtype)
    gen = torch.Generator().manual_seed(seed)
    if method == "spectral-norm":
        for layer in _linears(critic):
            spectral_normalization(layer, generator=gen)
    opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
    critic.train()
    for _ in range(steps):
        xr = real[torch.randint(len(real), (batch_size,), generator=gen)]
        xg = fake[torch.randint(len(fake), (batch_size,), generator=gen)]
        loss = critic(xg).mean() - critic(xr).mean()
        if method.startswith("gp-"):
            loss = loss + gradient_penalty(critic, xr, xg, lam, method[3:], generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if method == "clip":
            clip_weights_(critic, clip)
    return critic.eval()

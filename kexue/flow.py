"""Normalising flows from NICE to RealNVP and Glow: exact likelihoods by change of variables.

Companion to Su Jianlin, ["细水长flow之RealNVP与Glow：流模型的传承与升华"](https://kexue.fm/archives/5807)
(2018), which builds on ["细水长flow之NICE"](https://kexue.fm/archives/5776). The papers are Dinh,
Krueger and Bengio, *NICE* ([arXiv:1410.8516](https://arxiv.org/abs/1410.8516)); Dinh, Sohl-Dickstein
and Bengio, *Density estimation using Real NVP* ([arXiv:1605.08803](https://arxiv.org/abs/1605.08803));
Kingma and Dhariwal, *Glow* ([arXiv:1807.03039](https://arxiv.org/abs/1807.03039)).

One contract for every layer (data -> latent is "forward"):

* ``forward(x) -> (y, log_det)`` with ``log_det = log|det dy/dx|`` per example, shape ``(batch,)``;
* ``inverse(y) -> (x, log_det)`` with ``log_det = log|det dx/dy|`` (the negative of the forward one).

Every layer maps a tensor to a tensor of the same shape (a multi-scale split is written as a bijection
onto the same shape, see [`SplitPrior`][kexue.flow.SplitPrior]), so a model is a chain of layers
with a standard normal base on the output. normflows uses the opposite naming (its ``forward`` goes
latent -> data). Tensors are ``(batch, channels, height, width)`` for images and
``(batch, features)`` for vectors. Training loops, baselines and the page's toy model are in
[`kexue.experiments.flow`][kexue.experiments.flow].

Bad input: every function and layer raises ``TypeError``/``ValueError`` naming the argument for
non-tensors, integer or complex tensors where floats are meant, wrong ranks, mismatched shapes and
empty batches. The layers are bijections applied elementwise or position by position, so NaN/inf
entries of their input propagate to the output, as in torch; what reduces data to numbers
([`bits_per_dim`][kexue.flow.bits_per_dim], [`Flow.log_prob`][kexue.flow.Flow.log_prob], ActNorm's
data-dependent initialisation) rejects them.

Examples:
    >>> import torch
    >>> from kexue.flow import glow
    >>> model = glow((1, 8, 8), levels=2, depth=2, hidden=16, seed=0)
    >>> x = torch.rand(5, 1, 8, 8)
    >>> z, log_det = model(x)  # data -> latent, one log-det per example
    >>> z.shape, log_det.shape
    (torch.Size([5, 1, 8, 8]), torch.Size([5]))
    >>> x_back, _ = model.inverse(z)
    >>> torch.allclose(x_back, x, atol=1e-5)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kexue._checks import (
    check_bool,
    check_finite,
    check_floating_dtype,
    check_generator,
    check_int,
    check_real,
    check_tensor,
)

__all__ = [
    "COUPLINGS",
    "PERMUTATIONS",
    "squeeze2d",
    "unsqueeze2d",
    "squeeze2d_reference",
    "checkerboard_mask",
    "channel_mask",
    "affine_forward",
    "affine_inverse",
    "conv1x1_logdet_slogdet",
    "conv1x1_logdet_lu",
    "lu_init",
    "dequantize",
    "bits_per_dim",
    "FlowSequential",
    "Squeeze",
    "Permutation",
    "InvConv1x1",
    "InvConv1x1LU",
    "ActNorm",
    "MaskedCoupling",
    "ChannelCoupling",
    "SplitPrior",
    "LearnedPrior",
    "GlowStep",
    "GlowLevel",
    "Flow",
    "coupling_convnet",
    "glow",
]

_LOG2PI = math.log(2 * math.pi)


def _sum_except_batch(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(dim=1)


def _check_batch(x: object, name: str, ndim: int | Sequence[int] | None = None) -> torch.Tensor:
    """A non-empty floating tensor with a batch dimension (and one of the ranks ``ndim``)."""
    check_tensor(x, name, ndim, floating=True, nonempty=True)
    assert isinstance(x, torch.Tensor)
    if x.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
    return x


def _check_sizes(shape: object, name: str, *, length: int | None = None) -> tuple[int, ...]:
    """A sequence of positive ints (of ``length`` entries if given), as a tuple."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"{name} must be a sequence of positive integers, got {type(shape).__name__}")
    if length is not None and len(shape) != length:
        raise ValueError(f"{name} must have {length} entries, got {tuple(shape)!r}")
    for i, s in enumerate(shape):
        check_int(s, f"{name}[{i}]")
    return tuple(shape)


def _check_optional_generator(generator: object) -> None:
    if generator is not None:
        check_generator(generator)


def _check_parity(parity: object) -> None:
    if not isinstance(parity, int) or isinstance(parity, bool) or parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")


def _check_levels(v: object, name: str, levels: int) -> torch.Tensor:
    """Integer levels ``0 .. levels - 1`` in any real dtype (bool: the levels 0 and 1)."""
    check_tensor(v, name)
    assert isinstance(v, torch.Tensor)
    if v.dtype.is_complex:
        raise TypeError(f"{name} must hold integer levels in a real dtype, got {v.dtype}")
    if v.numel():
        w = v.to(torch.uint8) if v.dtype == torch.bool else v
        if w.min() < 0 or w.max() > levels - 1 or (w.is_floating_point() and not torch.equal(w, w.round())):
            raise ValueError(f"{name} must hold integers in 0..{levels - 1} (levels={levels}), "
                             f"got values in [{w.min().item():g}, {w.max().item():g}]")
    return v


def _check_flow_layer(layer: object, name: str) -> None:
    if not isinstance(layer, nn.Module) or not callable(getattr(layer, "inverse", None)):
        raise TypeError(f"{name} must be a flow layer (an nn.Module with forward and inverse), got {type(layer).__name__}")


def _check_layers(layers: object, name: str) -> list[nn.Module]:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise TypeError(f"{name} must be a sequence of flow layers, got {type(layers).__name__}")
    layers = list(layers)
    for i, layer in enumerate(layers):
        _check_flow_layer(layer, f"{name}[{i}]")
    return layers


# ----------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------


def squeeze2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    r"""Move each ``factor x factor`` spatial block into channels (a pure permutation, log-det 0).

    Output channel ``c * factor**2 + factor * i + j`` holds pixel ``(factor * h + i, factor * w + j)``
    of input channel ``c``: the ordering of Glow's ``squeeze2d`` and of ``torch.pixel_unshuffle``.
    Su's Keras ``Squeeze`` orders channels as ``(i, j, c)`` instead.

    Args:
        x: Images (a permutation of the entries: NaN/inf are moved like any value).
        factor: Block size (>= 1); height and width must be divisible by it.

    Returns:
        The squeezed tensor.

    Shapes:
        x: ``(batch, C, H, W)`` -> ``(batch, C * factor**2, H / factor, W / factor)``.

    Raises:
        TypeError: If ``x`` is not a floating tensor.
        ValueError: If ``x`` is not 4-D or empty, ``factor`` is not a positive integer, or the height/width
            is not divisible by ``factor``.

    Examples:
        >>> import torch
        >>> from kexue.flow import squeeze2d
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> squeeze2d(x)[0, :, 0, 0]  # the top-left 2x2 block becomes four channels
        tensor([0., 1., 4., 5.])
    """
    _check_squeeze(x, factor, "x")
    return F.pixel_unshuffle(x, factor)


def _check_squeeze(x: object, factor: object, name: str) -> None:
    _check_batch(x, name, (4,))
    check_int(factor, "factor")
    assert isinstance(x, torch.Tensor) and isinstance(factor, int)
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"{name} height and width must be divisible by factor={factor}, got {tuple(x.shape[2:])}")


def _check_unsqueeze(x: object, factor: object, name: str) -> None:
    _check_batch(x, name, (4,))
    check_int(factor, "factor")
    assert isinstance(x, torch.Tensor) and isinstance(factor, int)
    if x.shape[1] % (factor * factor):
        raise ValueError(f"{name} channels must be divisible by factor**2={factor * factor}, got {x.shape[1]}")


def unsqueeze2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Inverse of [`squeeze2d`][kexue.flow.squeeze2d].

    Args:
        x: Squeezed images.
        factor: Block size used by [`squeeze2d`][kexue.flow.squeeze2d].

    Returns:
        The unsqueezed tensor.

    Shapes:
        x: ``(batch, C * factor**2, h, w)`` -> ``(batch, C, h * factor, w * factor)``.

    Raises:
        TypeError: If ``x`` is not a floating tensor.
        ValueError: If ``x`` is not 4-D or empty, ``factor`` is not a positive integer, or the channels
            are not divisible by ``factor**2``.
    """
    _check_unsqueeze(x, factor, "x")
    return F.pixel_shuffle(x, factor)


def squeeze2d_reference(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Slow, obvious loop version of [`squeeze2d`][kexue.flow.squeeze2d] (the reference in tests).

    Args:
        x: Images.
        factor: Block size.

    Returns:
        The squeezed tensor, built pixel by pixel.

    Shapes:
        x: ``(batch, C, H, W)`` -> ``(batch, C * factor**2, H / factor, W / factor)``.

    Raises:
        TypeError: If ``x`` is not a floating tensor.
        ValueError: As [`squeeze2d`][kexue.flow.squeeze2d].
    """
    _check_squeeze(x, factor, "x")
    b, c, h, w = x.shape
    out = x.new_empty(b, c * factor * factor, h // factor, w // factor)
    for ch in range(c):
        for i in range(factor):
            for j in range(factor):
                out[:, ch * factor * factor + factor * i + j] = x[:, ch, i::factor, j::factor]
    return out


def checkerboard_mask(height: int, width: int, parity: int = 0, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""RealNVP's spatial checkerboard mask $b_{ij} = (i + j + \text{parity}) \bmod 2$.

    Args:
        height: Image height.
        width: Image width.
        parity: 0 or 1; the two parities are complementary.
        dtype: Floating dtype of the mask.

    Returns:
        The mask, broadcastable against ``(batch, C, height, width)``.

    Shapes:
        out: ``(1, 1, height, width)``.

    Raises:
        ValueError: If a size is not positive or ``parity`` is not 0 or 1.
        TypeError: If ``dtype`` is not a floating dtype.
    """
    check_int(height, "height")
    check_int(width, "width")
    _check_parity(parity)
    check_floating_dtype(dtype)
    i = torch.arange(height).view(-1, 1)
    j = torch.arange(width).view(1, -1)
    return ((i + j + parity) % 2).to(dtype).view(1, 1, height, width)


def channel_mask(channels: int, parity: int = 0, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RealNVP's channel mask: ones on the first half of the channels (``parity=0``) or the second.

    Args:
        channels: Number of channels (or features for vectors), >= 2.
        parity: 0 or 1; the two parities are complementary.
        dtype: Floating dtype of the mask.

    Returns:
        The mask as a vector; reshape with ``.view(1, -1, 1, 1)`` for images.

    Shapes:
        out: ``(channels,)``.

    Raises:
        ValueError: If ``channels < 2`` or ``parity`` is not 0 or 1.
        TypeError: If ``dtype`` is not a floating dtype.
    """
    check_int(channels, "channels", 2)
    _check_parity(parity)
    check_floating_dtype(dtype)
    m = (torch.arange(channels) < channels // 2).to(dtype)
    return m if parity == 0 else 1 - m


def _check_affine(x: object, name: str, log_s: object, t: object) -> None:
    for arg, arg_name in ((x, name), (log_s, "log_s"), (t, "t")):
        _check_batch(arg, arg_name)
    assert isinstance(x, torch.Tensor) and isinstance(log_s, torch.Tensor) and isinstance(t, torch.Tensor)
    if log_s.shape != x.shape or t.shape != x.shape:
        raise ValueError(f"{name}, log_s and t must have the same shape (the log-det sums log_s per example; "
                         f"broadcasting would change it), got {name} {tuple(x.shape)}, log_s {tuple(log_s.shape)}, "
                         f"t {tuple(t.shape)}")


# --8<-- [start:affine]
def affine_forward(x: torch.Tensor, log_s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Element-wise affine map $y = x \odot e^{\log s} + t$ and its log-det $\sum \log s$.

    The core of NICE's additive coupling ($\log s = 0$) and RealNVP's affine coupling. NaN/inf
    entries propagate elementwise.

    Args:
        x: The half being transformed.
        log_s: Log scales, same shape as ``x``.
        t: Shifts, same shape as ``x``.

    Returns:
        ``(y, log_det)``.

    Shapes:
        x, log_s, t, y: ``(batch, ...)``; log_det: ``(batch,)``.

    Raises:
        TypeError: If an argument is not a floating tensor.
        ValueError: If the shapes differ (no broadcasting) or the batch is empty.
    """
    _check_affine(x, "x", log_s, t)
    return x * torch.exp(log_s) + t, _sum_except_batch(log_s)


def affine_inverse(y: torch.Tensor, log_s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Inverse of [`affine_forward`][kexue.flow.affine_forward]: $x = (y - t) \odot e^{-\log s}$, log-det $-\sum \log s$.

    Args:
        y: The transformed half.
        log_s: Log scales, same shape as ``y``.
        t: Shifts, same shape as ``y``.

    Returns:
        ``(x, log_det)``.

    Shapes:
        y, log_s, t, x: ``(batch, ...)``; log_det: ``(batch,)``.

    Raises:
        TypeError: If an argument is not a floating tensor.
        ValueError: If the shapes differ (no broadcasting) or the batch is empty.
    """
    _check_affine(y, "y", log_s, t)
    return (y - t) * torch.exp(-log_s), -_sum_except_batch(log_s)
# --8<-- [end:affine]


def _additive(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NICE: the net output is the shift; log-scale 0 (Dinh et al. 2014)."""
    return torch.zeros_like(h), h


def _exp(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RealNVP paper: log s is the raw net output (unbounded; Dinh et al. 2016)."""
    a, t = h.chunk(2, dim=1)
    return a, t


def _tanh(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log s = tanh(raw) in (-1, 1): a bounded variant (RealNVP's code scales tanh by a learned c)."""
    a, t = h.chunk(2, dim=1)
    return torch.tanh(a), t


def _sigmoid(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Glow's code: s = sigmoid(raw + 2), so log s = logsigmoid(raw + 2) < 0 and s(0) = 0.88."""
    a, t = h.chunk(2, dim=1)
    return F.logsigmoid(a + 2.0), t


COUPLINGS: dict[str, Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = {
    "additive": _additive,
    "exp": _exp,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
}
r"""Coupling variants: ``name -> f(h) -> (log_s, t)`` from the coupling net's raw output ``h``.

``"additive"`` (NICE) needs ``C`` output channels; the others ``2 C`` (first half -> log s):
``"exp"`` (RealNVP paper, unbounded), ``"tanh"`` (bounded) and ``"sigmoid"`` (Glow's code,
$s = \sigma(h + 2)$)."""


def _check_mask(mask: object) -> None:
    check_tensor(mask, "mask", nonempty=True)
    assert isinstance(mask, torch.Tensor)
    if mask.dtype.is_complex or mask.dim() == 0:
        raise TypeError(f"mask must be a real tensor with at least one dimension, got {mask.dtype} of shape "
                        f"{tuple(mask.shape)}")
    if not bool(torch.all((mask == 0) | (mask == 1))):
        raise ValueError("mask must contain only zeros and ones")


def _coupling_params(kind: str) -> int:
    if kind not in COUPLINGS:
        raise ValueError(f"coupling must be one of {sorted(COUPLINGS)}, got {kind!r}")
    return 1 if kind == "additive" else 2


# --8<-- [start:logdet1x1]
def conv1x1_logdet_slogdet(weight: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    r"""Reference log-det of an invertible 1x1 convolution: $hw \log|\det W|$ by ``slogdet`` (O(C^3)).

    Computed in float64, as Glow's code does, then cast back to the weight's dtype (to float32 for
    a float16 or bfloat16 weight, whose range a log-det can exceed). NaN/inf entries of ``weight``
    propagate to the log-det, as in the layer that calls this.

    Args:
        weight: The channel-mixing matrix $W$ (floating; an integer matrix is rejected, not truncated).
        pixels: $h \cdot w$, the number of positions the matrix is applied at (>= 1).

    Returns:
        A scalar tensor.

    Shapes:
        weight: ``(C, C)``.

    Raises:
        TypeError: If ``weight`` is not a floating tensor.
        ValueError: If ``weight`` is not a non-empty square matrix or ``pixels`` is not a positive integer.
    """
    check_tensor(weight, "weight", 2, floating=True, nonempty=True)
    if weight.shape[0] != weight.shape[1]:
        raise ValueError(f"weight must be a square matrix, got shape {tuple(weight.shape)}")
    check_int(pixels, "pixels")
    out = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
    return (pixels * torch.linalg.slogdet(weight.double()).logabsdet).to(out)


def conv1x1_logdet_lu(log_s: torch.Tensor, pixels: int = 1) -> torch.Tensor:
    r"""Log-det of $W = P L (U + \operatorname{diag}(\operatorname{sign}(s) e^{\log s}))$ in O(C).

    $P$ is a permutation ($|\det P| = 1$), $L$ is unit lower triangular ($\det L = 1$) and the
    upper-triangular factor has diagonal $\operatorname{sign}(s) e^{\log s}$, so
    $\log|\det W| = \sum_c \log s_c$ and the layer's log-det is $hw \sum_c \log s_c$.

    Args:
        log_s: Log of the absolute diagonal of the upper factor (NaN/inf propagate).
        pixels: $h \cdot w$ (>= 1).

    Returns:
        A scalar tensor.

    Shapes:
        log_s: ``(C,)``.

    Raises:
        TypeError: If ``log_s`` is not a floating tensor.
        ValueError: If ``log_s`` is not a non-empty vector or ``pixels`` is not a positive integer.
    """
    check_tensor(log_s, "log_s", 1, floating=True, nonempty=True)
    check_int(pixels, "pixels")
    return pixels * log_s.sum()
# --8<-- [end:logdet1x1]


def lu_init(channels: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Glow's LU initialisation: factor a random orthogonal matrix $Q = P L U$.

    Args:
        channels: Matrix size ``C`` (>= 1).
        generator: Random generator for the orthogonal matrix.

    Returns:
        Dict with ``P``, ``L`` (unit lower), ``U`` (strictly upper part), ``sign_s`` and ``log_s``
        (sign and log-magnitude of ``diag(U)``); ``P @ L @ (U + diag(sign_s * exp(log_s)))`` is ``Q``.

    Shapes:
        P, L, U: ``(C, C)``; sign_s, log_s: ``(C,)``. All float64.

    Raises:
        ValueError: If ``channels`` is not a positive integer.
        TypeError: If ``generator`` is not a ``torch.Generator`` (or None).
    """
    check_int(channels, "channels")
    _check_optional_generator(generator)
    a = torch.randn(channels, channels, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(a)
    p, lower, upper = torch.linalg.lu(q)
    d = torch.diagonal(upper)
    return {"P": p, "L": lower, "U": torch.triu(upper, 1), "sign_s": torch.sign(d), "log_s": d.abs().log()}


def dequantize(
    v: torch.Tensor, levels: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    r"""Uniform dequantisation $x = (v + u) / L$, $u \sim U[0, 1)^D$, mapping levels $0..L-1$ into $[0, 1)$.

    Args:
        v: Integer-valued data in ``0 .. levels - 1``, in any real dtype (bool: the levels 0 and 1).
        levels: Number of levels $L$ (17 for scikit-learn's digits, 256 for 8-bit images).
        generator: Random generator for $u$.
        dtype: Floating dtype of the result.

    Returns:
        Dequantised data in ``[0, 1)``; an empty ``v`` gives an empty result.

    Shapes:
        v, out: ``(batch, ...)``.

    Raises:
        ValueError: If ``levels < 2`` or ``v`` has values outside ``0 .. levels - 1``, non-integers or NaN.
        TypeError: If ``v`` is not a real tensor, ``dtype`` not a floating dtype or ``generator`` not a
            ``torch.Generator``.
    """
    check_int(levels, "levels", 2)
    _check_levels(v, "v", levels)
    _check_optional_generator(generator)
    check_floating_dtype(dtype)
    u = torch.rand(v.shape, generator=generator, dtype=dtype)
    return (v.to(dtype) + u) / levels


# --8<-- [start:bpd]
def _bits_per_dim(log_px: torch.Tensor, dims: int, levels: int) -> torch.Tensor:
    """[`bits_per_dim`][kexue.flow.bits_per_dim] without its checks (for callers that checked, and under vmap)."""
    return (-log_px + dims * math.log(levels)) / (dims * math.log(2.0))


def bits_per_dim(log_px: torch.Tensor, dims: int, levels: int) -> torch.Tensor:
    r"""Bits per dimension of discrete data from the density of its dequantised version.

    With $x = (v + u)/L$ the discrete model $P(v) = \int_{[0,1)^D} p\big((v + u)/L\big) L^{-D}\,du$
    satisfies $\log P(v) \ge \mathbb{E}_u \log p(x) - D \log L$ (Jensen), hence the upper bound
    $$\text{bits/dim} = \frac{-\log p(x) + D \log L}{D \ln 2}.$$

    Args:
        log_px: Log-density (nats) of the dequantised data, per example (finite).
        dims: $D$, the number of dimensions per example.
        levels: $L$, the number of levels each dimension had before dequantisation.

    Returns:
        Bits per dimension per example (an empty batch gives an empty result).

    Shapes:
        log_px: ``(batch,)`` -> ``(batch,)``.

    Raises:
        TypeError: If ``log_px`` is not a floating tensor.
        ValueError: If ``log_px`` is not a vector or has NaN/inf entries, ``dims < 1`` or ``levels < 2``.

    Examples:
        >>> import torch
        >>> from kexue.flow import bits_per_dim
        >>> bits_per_dim(torch.zeros(1), dims=64, levels=17)  # the uniform density: log2(17)
        tensor([4.0875])
    """
    check_tensor(log_px, "log_px", 1, floating=True)
    check_finite(log_px, "log_px")
    check_int(dims, "dims")
    check_int(levels, "levels", 2)
    return _bits_per_dim(log_px, dims, levels)
# --8<-- [end:bpd]


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


class FlowSequential(nn.Module):
    """A chain of flow layers; log-dets add up (and the inverse runs the chain backwards).

    NaN/inf entries propagate as the layers propagate them.

    Args:
        layers: Flow layers obeying the ``forward``/``inverse`` contract of this module (an empty
            sequence is the identity).

    Shapes:
        x: any shape the layers accept; log_det: ``(batch,)``.

    Raises:
        TypeError: If ``layers`` is not a sequence of modules with an ``inverse``, or the input is
            not a floating tensor.
        ValueError: If the input has no batch dimension or is empty.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_check_layers(layers, "layers"))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(x, "x")
        log_det = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(y, "y")
        log_det = y.new_zeros(y.shape[0])
        for layer in reversed(self.layers):
            y, ld = layer.inverse(y)
            log_det = log_det + ld
        return y, log_det


class Squeeze(nn.Module):
    """[`squeeze2d`][kexue.flow.squeeze2d] as a flow layer (log-det 0); NaN/inf entries are moved like any value.

    Args:
        factor: Block size.

    Shapes:
        x: ``(batch, C, H, W)`` -> ``(batch, 4C, H/2, W/2)`` for ``factor=2``.
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = check_int(factor, "factor")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_squeeze(x, self.factor, "x")
        return F.pixel_unshuffle(x, self.factor), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_unsqueeze(y, self.factor, "y")
        return F.pixel_shuffle(y, self.factor), y.new_zeros(y.shape[0])


class Permutation(nn.Module):
    """A fixed channel permutation (log-det 0): NICE's reversal or RealNVP/Su's random shuffle.

    NaN/inf entries are moved like any value.

    Args:
        channels: Number of channels (dimension 1 of the input).
        kind: ``"reverse"`` or ``"shuffle"``.
        generator: Random generator for ``"shuffle"``.

    Shapes:
        x: ``(batch, channels)`` or ``(batch, channels, H, W)``.
    """

    def __init__(self, channels: int, kind: str = "reverse", generator: torch.Generator | None = None) -> None:
        super().__init__()
        check_int(channels, "channels")
        _check_optional_generator(generator)
        if kind == "reverse":
            perm = torch.arange(channels - 1, -1, -1)
        elif kind == "shuffle":
            perm = torch.randperm(channels, generator=generator)
        else:
            raise ValueError(f"kind must be 'reverse' or 'shuffle', got {kind!r}")
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def _check(self, x: torch.Tensor, name: str) -> None:
        _check_batch(x, name, (2, 4))
        if x.shape[1] != self.perm.numel():
            raise ValueError(f"{name} must have {self.perm.numel()} channels, got {x.shape[1]}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "x")
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y, "y")
        return y[:, self.inv_perm], y.new_zeros(y.shape[0])


def _mix_channels(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y[:, i] = sum_j W[i, j] x[:, j] at every position (a 1x1 convolution / dense layer)."""
    if x.dim() == 4:
        return F.conv2d(x, weight.view(*weight.shape, 1, 1))
    return x @ weight.T


def _pixels(x: torch.Tensor) -> int:
    return int(math.prod(x.shape[2:]))


class InvConv1x1(nn.Module):
    r"""Glow's invertible 1x1 convolution, plain parameterisation (the slow reference).

    $y_{:,ij} = W x_{:,ij}$ with log-det $hw \log|\det W|$ by float64 ``slogdet`` (O(C^3)); $W$ starts
    as a random orthogonal matrix. Works on vectors ``(batch, C)`` too (then $hw = 1$). NaN/inf at a
    position propagate to every channel of that position.

    Args:
        channels: Number of channels ``C``.
        generator: Random generator for the initial orthogonal matrix.

    Shapes:
        x: ``(batch, C, H, W)`` or ``(batch, C)``.
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        check_int(channels, "channels")
        _check_optional_generator(generator)
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))
        self.weight = nn.Parameter(q.float())

    def _check(self, x: torch.Tensor, name: str) -> None:
        _check_batch(x, name, (2, 4))
        if x.shape[1] != self.weight.shape[0]:
            raise ValueError(f"{name} must have {self.weight.shape[0]} channels, got {x.shape[1]}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "x")
        ld = conv1x1_logdet_slogdet(self.weight, _pixels(x))
        return _mix_channels(self.weight, x), ld.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y, "y")
        w_inv = torch.linalg.inv(self.weight.double()).to(self.weight.dtype)
        ld = -conv1x1_logdet_slogdet(self.weight, _pixels(y))
        return _mix_channels(w_inv, y), ld.expand(y.shape[0])


# --8<-- [start:lu]
class InvConv1x1LU(nn.Module):
    r"""Invertible 1x1 convolution with Glow's LU parameterisation: log-det in O(C).

    $W = P L (U + \operatorname{diag}(\operatorname{sign}(s) \odot e^{\log s}))$ with $P$ and
    $\operatorname{sign}(s)$ fixed buffers, $L$ unit lower and $U$ strictly upper triangular;
    log-det $hw \sum_c \log s_c$ ([`conv1x1_logdet_lu`][kexue.flow.conv1x1_logdet_lu]). Initialised from the LU factors of a
    random orthogonal matrix ([`lu_init`][kexue.flow.lu_init]). The inverse uses two triangular solves.
    NaN/inf at a position propagate to every channel of that position.

    Args:
        channels: Number of channels ``C``.
        generator: Random generator for the initial orthogonal matrix.

    Shapes:
        x: ``(batch, C, H, W)`` or ``(batch, C)``.

    Examples:
        >>> import torch
        >>> from kexue.flow import InvConv1x1LU, conv1x1_logdet_slogdet
        >>> layer = InvConv1x1LU(4, torch.Generator().manual_seed(0))
        >>> y, log_det = layer(torch.randn(2, 4, 3, 3))
        >>> torch.allclose(log_det[0], conv1x1_logdet_slogdet(layer.weight(), pixels=9), atol=1e-5)
        True
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        f = {k: v.float() for k, v in lu_init(channels, generator).items()}
        self.register_buffer("P", f["P"])
        self.register_buffer("sign_s", f["sign_s"])
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.L = nn.Parameter(f["L"])
        self.U = nn.Parameter(f["U"])
        self.log_s = nn.Parameter(f["log_s"])

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the unit-lower factor ``L`` and the full upper factor ``U + diag(sign_s e^{log_s})``."""
        lower = self.L * self.lower_mask + self.eye
        upper = self.U * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    def weight(self) -> torch.Tensor:
        """Assemble ``W = P L U`` (O(C^3) matmuls, but no determinant)."""
        lower, upper = self.factors()
        return self.P @ lower @ upper

    def _check(self, x: torch.Tensor, name: str) -> None:
        _check_batch(x, name, (2, 4))
        if x.shape[1] != self.log_s.numel():
            raise ValueError(f"{name} must have {self.log_s.numel()} channels, got {x.shape[1]}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "x")
        ld = conv1x1_logdet_lu(self.log_s, _pixels(x))
        return _mix_channels(self.weight(), x), ld.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y, "y")
        lower, upper = self.factors()
        # W^-1 = U^-1 L^-1 P^T, by triangular solves instead of a general inverse (in float32 for a
        # float16/bfloat16 layer: the CPU solver has no half precision).
        work = lower.dtype if lower.dtype in (torch.float32, torch.float64) else torch.float32
        tmp = torch.linalg.solve_triangular(lower.to(work), self.P.T.to(work), upper=False, unitriangular=True)
        w_inv = torch.linalg.solve_triangular(upper.to(work), tmp, upper=True).to(lower.dtype)
        ld = -conv1x1_logdet_lu(self.log_s, _pixels(y))
        return _mix_channels(w_inv, y), ld.expand(y.shape[0])
# --8<-- [end:lu]


# --8<-- [start:actnorm]
class ActNorm(nn.Module):
    r"""Glow's activation normalisation $y = e^{\log s} \odot (x + b)$ per channel.

    Log-det $hw \sum_c \log s_c$. On the first ``forward`` in training mode the parameters are set
    from that batch (data-dependent initialisation, as in Glow's ``actnorm``): $b = -\text{mean}$,
    $s = 1/(\text{std} + 10^{-6})$ per channel (biased std), so the batch comes out with zero mean and
    unit variance. A channel whose std is below ``1e-6`` keeps $s = 1$ (it is only centred) instead of
    being scaled by $10^6$. The ``initialized`` buffer travels with ``state_dict``, so loading weights
    skips the initialisation. NICE's scaling layer is the same map without $b$. After the
    initialisation the map is elementwise: NaN/inf entries propagate.

    Args:
        channels: Number of channels ``C``.
        ddi: Whether to run the data-dependent initialisation (otherwise $b = 0$, $s = 1$).

    Shapes:
        x: ``(batch, C, H, W)`` or ``(batch, C)``.

    Raises:
        ValueError: If ``channels`` is not a positive integer, ``ddi`` not a bool, or the batch that
            initialises the layer has NaN/inf entries.

    Examples:
        >>> import torch
        >>> from kexue.flow import ActNorm
        >>> x = 3.0 + 2.0 * torch.randn(256, 2, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> y, _ = ActNorm(2)(x)  # the first batch in training mode initialises b and s
        >>> y.mean().abs() < 1e-5, (y.std() - 1).abs() < 1e-2
        (tensor(True), tensor(True))
    """

    def __init__(self, channels: int, ddi: bool = True) -> None:
        super().__init__()
        check_int(channels, "channels")
        check_bool(ddi, "ddi")
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_s = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(not ddi))

    def _view(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    def _moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dim=dims)
        return mean, (x - self._view(mean, x)).pow(2).mean(dim=dims).sqrt()

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set ``bias`` and ``log_s`` so that ``x`` is mapped to zero mean, unit variance per channel.

        If the statistics overflow ``x``'s dtype (squares of entries beyond about ``1e19`` in
        float32), they are computed again in float64, so huge but finite data gets a finite ``log_s``.

        Raises:
            ValueError: If ``x`` has NaN/inf entries (they would poison ``bias`` and ``log_s``).
        """
        self._check(x, "x")
        check_finite(x, "x")
        mean, std = self._moments(x)
        if not bool(torch.isfinite(mean).all() & torch.isfinite(std).all()):  # overflow in x's dtype
            mean, std = self._moments(x.double())
        self.bias.copy_(-mean)
        self.log_s.copy_(torch.where(std > 1e-6, -torch.log(std + 1e-6), torch.zeros_like(std)))
        self.initialized.fill_(True)

    def _check(self, x: torch.Tensor, name: str) -> None:
        _check_batch(x, name, (2, 4))
        if x.shape[1] != self.bias.numel():
            raise ValueError(f"{name} must have {self.bias.numel()} channels, got {x.shape[1]}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "x")
        if self.training and not bool(self.initialized):
            self.initialize(x)
        y = (x + self._view(self.bias, x)) * torch.exp(self._view(self.log_s, x))
        return y, (_pixels(x) * self.log_s.sum()).expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y, "y")
        x = y * torch.exp(-self._view(self.log_s, y)) - self._view(self.bias, y)
        return x, (-_pixels(y) * self.log_s.sum()).expand(y.shape[0])
# --8<-- [end:actnorm]


# --8<-- [start:masked]
class MaskedCoupling(nn.Module):
    r"""RealNVP's masked coupling: $y = b \odot x + (1-b) \odot \big(x \odot e^{\log s(b \odot x)} + t(b \odot x)\big)$.

    Log-det $\sum (1-b) \odot \log s$. The mask $b$ may be a checkerboard, a channel mask or, for
    vectors, any 0/1 vector. ``coupling`` picks how the net's output becomes $(\log s, t)$
    ([`COUPLINGS`][kexue.flow.COUPLINGS]; ``"additive"`` is NICE's coupling, log-det 0). NaN/inf
    entries propagate within their example (through the net to the positions it mixes).

    Args:
        mask: 0/1 tensor broadcastable to the input, without the batch dimension (an integer or bool
            mask is converted to the default floating dtype).
        net: Maps the masked input ``(batch, C, ...)`` to ``(batch, k C, ...)``, ``k = 1`` for additive
            coupling and 2 otherwise (first half: raw log-scale, second half: shift).
        coupling: Key of [`COUPLINGS`][kexue.flow.COUPLINGS].

    Shapes:
        x: ``(batch, C, H, W)`` or ``(batch, C)``.

    Raises:
        TypeError: If ``mask`` is not a real tensor or ``net`` not an ``nn.Module``.
        ValueError: If ``mask`` is empty or not 0/1, ``coupling`` is unknown, or an input does not
            match the mask or the net's output.
    """

    def __init__(self, mask: torch.Tensor, net: nn.Module, coupling: str = "exp") -> None:
        super().__init__()
        self.k = _coupling_params(coupling)
        _check_mask(mask)
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module (its weights train with the layer), got {type(net).__name__}")
        mask = mask if mask.is_floating_point() else mask.to(torch.get_default_dtype())
        self.register_buffer("mask", mask.reshape(1, *mask.shape) if mask.dim() == 1 else mask)
        self.net = net
        self.coupling = coupling

    def _check(self, x: torch.Tensor, name: str) -> None:
        _check_batch(x, name, (2, 4))
        try:
            fits = torch.broadcast_shapes(self.mask.shape, x.shape) == x.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"{name} of shape {tuple(x.shape)} does not match the mask of shape {tuple(self.mask.shape)}")

    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.mask
        h = self.net(x * b)
        if h.shape[1] != self.k * x.shape[1] or h.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"net must map x of shape {tuple(x.shape)} to {self.k} x its channels, got {tuple(h.shape)}"
            )
        log_s, t = COUPLINGS[self.coupling](h)
        return log_s * (1 - b), t * (1 - b)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "x")
        log_s, t = self._params(x)
        return affine_forward(x, log_s, t)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y, "y")
        log_s, t = self._params(y)  # b * y = b * x, so the net sees the same input
        return affine_inverse(y, log_s, t)
# --8<-- [end:masked]


def coupling_convnet(in_channels: int, out_channels: int, hidden: int) -> nn.Sequential:
    """Glow's coupling net: Conv3x3 -> ReLU -> Conv1x1 -> ReLU -> Conv3x3 with the last layer zeroed.

    The zero-initialised last layer makes every coupling start as the identity.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        hidden: Hidden width.

    Returns:
        The network.

    Shapes:
        x: ``(batch, in_channels, H, W)`` -> ``(batch, out_channels, H, W)``.

    Raises:
        ValueError: If a width is not a positive integer.
    """
    check_int(in_channels, "in_channels")
    check_int(out_channels, "out_channels")
    check_int(hidden, "hidden")
    last = nn.Conv2d(hidden, out_channels, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 1),
        nn.ReLU(),
        last,
    )


# --8<-- [start:channel]
class ChannelCoupling(nn.Module):
    r"""Glow's coupling on a channel split: $x = [x_1, x_2]$, $y_1 = x_1$, $y_2 = x_2 \odot e^{\log s(x_1)} + t(x_1)$.

    Equivalent to [`MaskedCoupling`][kexue.flow.MaskedCoupling] with a channel mask, but the net sees only the ``C/2`` kept
    channels. Glow's code writes the shift before the scale, $(x_2 + t) \odot s$; the two forms have the
    same expressive power. Log-det $\sum \log s$. NaN/inf entries propagate within their example.

    Args:
        channels: Number of channels ``C`` (>= 2); the first ``C // 2`` are kept.
        hidden: Hidden width of [`coupling_convnet`][kexue.flow.coupling_convnet].
        coupling: Key of [`COUPLINGS`][kexue.flow.COUPLINGS] (Glow: ``"sigmoid"`` for affine, ``"additive"``).

    Shapes:
        x: ``(batch, C, H, W)``.

    Raises:
        ValueError: If ``channels < 2``, ``hidden`` is not a positive integer, ``coupling`` is unknown,
            or an input has another number of channels.
    """

    def __init__(self, channels: int, hidden: int = 64, coupling: str = "sigmoid") -> None:
        super().__init__()
        check_int(channels, "channels", 2)
        check_int(hidden, "hidden")
        self.k = _coupling_params(coupling)
        self.channels = channels
        self.c1 = channels // 2
        self.coupling = coupling
        self.net = coupling_convnet(self.c1, self.k * (channels - self.c1), hidden)

    def _check(self, x: torch.Tensor, name: str) -> None:
        _check_batch(x, name, (4,))
        if x.shape[1] != self.channels:
            raise ValueError(f"{name} must have {self.channels} channels, got {x.shape[1]}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "x")
        x1, x2 = x[:, : self.c1], x[:, self.c1 :]
        log_s, t = COUPLINGS[self.coupling](self.net(x1))
        y2, ld = affine_forward(x2, log_s, t)
        return torch.cat([x1, y2], dim=1), ld

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y, "y")
        y1, y2 = y[:, : self.c1], y[:, self.c1 :]
        log_s, t = COUPLINGS[self.coupling](self.net(y1))
        x2, ld = affine_inverse(y2, log_s, t)
        return torch.cat([y1, x2], dim=1), ld
# --8<-- [end:channel]


# --8<-- [start:split]
class SplitPrior(nn.Module):
    r"""Multi-scale split with Glow's conditional prior, written as a bijection of the same shape.

    $h = [z_{\text{keep}}, z_{\text{out}}]$ is mapped to $[z_{\text{keep}}, \hat z]$ with
    $\hat z = (z_{\text{out}} - \mu(z_{\text{keep}})) / \sigma(z_{\text{keep}})$, where
    $(\mu, \log\sigma)$ come from a zero-initialised 3x3 convolution of $z_{\text{keep}}$. With
    $\hat z \sim \mathcal{N}(0, I)$ this is exactly
    $\log p(z_{\text{out}} \mid z_{\text{keep}}) = \log \mathcal{N}(\hat z; 0, I) - \sum \log\sigma$,
    so the log-det is $-\sum \log \sigma$. Later levels transform only $z_{\text{keep}}$
    (see [`GlowLevel`][kexue.flow.GlowLevel]); $\hat z$ goes straight to the base distribution.
    NaN/inf entries propagate within their example.

    Args:
        channels: Channels ``C`` of ``h`` (>= 2); the first ``C // 2`` are kept.

    Shapes:
        x: ``(batch, C, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        check_int(channels, "channels", 2)
        self.channels = channels
        self.c1 = channels // 2
        self.conv = nn.Conv2d(self.c1, 2 * (channels - self.c1), 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def _check(self, x: torch.Tensor, name: str) -> None:
        _check_batch(x, name, (4,))
        if x.shape[1] != self.channels:
            raise ValueError(f"{name} must have {self.channels} channels, got {x.shape[1]}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "x")
        keep, out = x[:, : self.c1], x[:, self.c1 :]
        mu, log_sigma = self.conv(keep).chunk(2, dim=1)
        z_hat, ld = affine_forward(out, -log_sigma, -mu * torch.exp(-log_sigma))
        return torch.cat([keep, z_hat], dim=1), ld

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y, "y")
        keep, z_hat = y[:, : self.c1], y[:, self.c1 :]
        mu, log_sigma = self.conv(keep).chunk(2, dim=1)
        out, ld = affine_forward(z_hat, log_sigma, mu)  # z_out = mu + sigma * z_hat
        return torch.cat([keep, out], dim=1), ld
# --8<-- [end:split]


class LearnedPrior(nn.Module):
    r"""Glow's "learntop": a learned diagonal Gaussian $\mathcal{N}(\mu, \sigma^2)$ on the top latent.

    Written as the standardisation $\hat z = (z - \mu)/\sigma$ (log-det $-\sum\log\sigma$), with one
    $(\mu, \log\sigma)$ per element, zero-initialised. NICE's scaling layer is this map with $\mu = 0$.
    Elementwise: NaN/inf entries propagate.

    Args:
        shape: Shape of one example, e.g. ``(C, H, W)``; ``()`` for scalar examples, ``x`` of shape
            ``(batch,)``.

    Shapes:
        x: ``(batch, *shape)``.

    Raises:
        TypeError: If ``shape`` is not a sequence, or an input not a floating tensor.
        ValueError: If an entry of ``shape`` is not a positive integer, or an input has another shape.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        shape = _check_sizes(shape, "shape")
        self.mu = nn.Parameter(torch.zeros(shape))
        self.log_sigma = nn.Parameter(torch.zeros(shape))

    def _check(self, x: torch.Tensor, name: str) -> None:
        _check_batch(x, name)
        if x.shape[1:] != self.mu.shape:
            raise ValueError(f"{name} must have shape (batch, *{tuple(self.mu.shape)}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, "x")
        ls = self.log_sigma.expand_as(x)
        return affine_forward(x, -ls, (-self.mu * torch.exp(-self.log_sigma)).expand_as(x))

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(y, "y")
        return affine_forward(y, self.log_sigma.expand_as(y), self.mu.expand_as(y))


def _reverse(c: int, g: torch.Generator | None) -> nn.Module:
    """NICE: reverse the channel order."""
    return Permutation(c, "reverse")


def _shuffle(c: int, g: torch.Generator | None) -> nn.Module:
    """RealNVP-style fixed random shuffle (Su's ``glow.py`` uses this)."""
    return Permutation(c, "shuffle", g)


def _conv(c: int, g: torch.Generator | None) -> nn.Module:
    """Glow: learned 1x1 convolution, plain W with slogdet (Glow's default code path)."""
    return InvConv1x1(c, g)


def _lu(c: int, g: torch.Generator | None) -> nn.Module:
    """Glow: learned 1x1 convolution with the LU parameterisation (O(C) log-det)."""
    return InvConv1x1LU(c, g)


PERMUTATIONS: dict[str, Callable[[int, torch.Generator | None], nn.Module]] = {
    "reverse": _reverse,
    "shuffle": _shuffle,
    "conv": _conv,
    "lu": _lu,
}
"""Channel-mixing variants of a Glow step: ``name -> f(channels, generator) -> layer``.

``"reverse"`` (NICE), ``"shuffle"`` (a fixed random permutation), ``"conv"`` (Glow's 1x1
convolution with a float64 ``slogdet``) and ``"lu"`` (its LU parameterisation)."""


# --8<-- [start:step]
class GlowStep(nn.Module):
    """One step of Glow: ActNorm -> channel mixing -> coupling (data -> latent direction).

    NaN/inf entries propagate within their example.

    Args:
        channels: Number of channels ``C`` (>= 2).
        hidden: Hidden width of the coupling net.
        permutation: Key of [`PERMUTATIONS`][kexue.flow.PERMUTATIONS] (``"lu"``, ``"conv"``, ``"shuffle"``, ``"reverse"``).
        coupling: Key of [`COUPLINGS`][kexue.flow.COUPLINGS] (``"sigmoid"`` = Glow's affine, ``"additive"``).
        actnorm: Whether to include ActNorm (with data-dependent init).
        generator: Random generator for the permutation / 1x1 initialisation.

    Shapes:
        x: ``(batch, C, H, W)``.

    Raises:
        ValueError: If ``channels < 2``, ``hidden < 1``, a name is unknown, ``actnorm`` is not a bool, or
            an input has the wrong shape.
        TypeError: If ``generator`` is not a ``torch.Generator`` (or None), or an input not a floating tensor.
    """

    def __init__(
        self,
        channels: int,
        hidden: int = 64,
        permutation: str = "lu",
        coupling: str = "sigmoid",
        actnorm: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_int(channels, "channels", 2)
        check_int(hidden, "hidden")
        if permutation not in PERMUTATIONS:
            raise ValueError(f"permutation must be one of {sorted(PERMUTATIONS)}, got {permutation!r}")
        _coupling_params(coupling)
        check_bool(actnorm, "actnorm")
        _check_optional_generator(generator)
        self.actnorm = ActNorm(channels) if actnorm else None
        self.mix = PERMUTATIONS[permutation](channels, generator)
        self.coupling = ChannelCoupling(channels, hidden, coupling)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.coupling._check(x, "x")
        log_det = x.new_zeros(x.shape[0])
        if self.actnorm is not None:
            x, log_det = self.actnorm(x)
        x, ld = self.mix(x)
        y, ld2 = self.coupling(x)
        return y, log_det + ld + ld2

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, log_det = self.coupling.inverse(y)  # checks y
        x, ld = self.mix.inverse(x)
        log_det = log_det + ld
        if self.actnorm is not None:
            x, ld = self.actnorm.inverse(x)
            log_det = log_det + ld
        return x, log_det
# --8<-- [end:step]


class GlowLevel(nn.Module):
    """One scale of Glow: squeeze -> K steps -> split (inner levels on the kept half) -> unsqueeze.

    The whole level maps ``(batch, C, H, W)`` to the same shape (NaN/inf entries propagate within
    their example), so the model's latent has the shape of the data; factored-out halves are standardised by [`SplitPrior`][kexue.flow.SplitPrior], the last level's output
    by [`LearnedPrior`][kexue.flow.LearnedPrior].

    Args:
        steps: The K [`GlowStep`][kexue.flow.GlowStep] layers (acting on the squeezed tensor with ``4C`` channels).
        inner: The next level (acting on the kept ``2C`` channels), or None for the last level.
        shape: Shape ``(4C, H/2, W/2)`` of the squeezed tensor the steps act on (it sizes the split,
            or the learned top prior of the last level).

    Shapes:
        x: ``(batch, C, H, W)``.

    Raises:
        TypeError: If ``steps`` is not a sequence of flow layers, ``inner`` neither a ``GlowLevel`` nor
            None, or an input not a floating tensor.
        ValueError: If ``shape`` is not three positive integers, or an input has the wrong shape.
    """

    def __init__(self, steps: Sequence[nn.Module], inner: GlowLevel | None, shape: Sequence[int]) -> None:
        super().__init__()
        steps = _check_layers(steps, "steps")
        if inner is not None and not isinstance(inner, GlowLevel):
            raise TypeError(f"inner must be a GlowLevel or None, got {type(inner).__name__}")
        shape = _check_sizes(shape, "shape", length=3)
        self.steps = FlowSequential(steps)
        self.inner = inner
        self.split = SplitPrior(shape[0]) if inner is not None else None
        self.top = LearnedPrior(shape) if inner is None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = squeeze2d(x)
        h, log_det = self.steps(h)
        if self.inner is None:
            h, ld = self.top(h)
            return unsqueeze2d(h), log_det + ld
        h, ld = self.split(h)
        c1 = self.split.c1
        keep, ld_inner = self.inner(h[:, :c1])
        return unsqueeze2d(torch.cat([keep, h[:, c1:]], dim=1)), log_det + ld + ld_inner

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_squeeze(y, 2, "y")
        h = squeeze2d(y)
        if self.inner is None:
            h, log_det = self.top.inverse(h)
        else:
            c1 = self.split.c1
            keep, ld_inner = self.inner.inverse(h[:, :c1])
            h, ld = self.split.inverse(torch.cat([keep, h[:, c1:]], dim=1))
            log_det = ld + ld_inner
        x, ld = self.steps.inverse(h)
        return unsqueeze2d(x), log_det + ld


# ----------------------------------------------------------------------------------------------
# The standard normal base and the Flow container
# ----------------------------------------------------------------------------------------------


def _normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Standard normal, summed over all non-batch dims."""
    return _sum_except_batch(-0.5 * (z * z + _LOG2PI))


# --8<-- [start:flow]
class Flow(nn.Module):
    r"""A flow model: an invertible ``transform`` (data -> latent) over a standard normal base.

    $\log p(x) = \log \mathcal{N}(f(x); 0, I) + \log|\det \partial f / \partial x|$. Sampling at
    temperature $T$ draws $z = T \varepsilon$, $\varepsilon \sim \mathcal{N}(0, I)$, and inverts;
    because split priors are written as standardisations, this scales the noise of every level, as
    in Glow.

    Args:
        transform: Any layer (or [`FlowSequential`][kexue.flow.FlowSequential]) following this
            module's contract.
        event_shape: Shape of one example, e.g. ``(2,)`` or ``(1, 8, 8)``; ``()`` for scalar examples.

    Shapes:
        x: ``(batch, *event_shape)``.

    Raises:
        TypeError: If ``transform`` is not a module with an ``inverse`` or ``event_shape`` not a sequence.
        ValueError: If an entry of ``event_shape`` is not a positive integer.

    Examples:
        >>> import torch
        >>> from kexue.flow import Flow, FlowSequential
        >>> identity = Flow(FlowSequential([]), (2,))  # no layers: the standard normal itself
        >>> identity.log_prob(torch.zeros(1, 2))  # -log(2 pi)
        tensor([-1.8379])
    """

    def __init__(self, transform: nn.Module, event_shape: Sequence[int]) -> None:
        super().__init__()
        _check_flow_layer(transform, "transform")
        self.transform = transform
        self.event_shape = _check_sizes(event_shape, "event_shape")

    @property
    def dims(self) -> int:
        """Number of dimensions ``D`` of one example."""
        return int(math.prod(self.event_shape))

    def _check(self, x: torch.Tensor, name: str) -> None:
        _check_batch(x, name, (len(self.event_shape) + 1,))
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"{name} must have shape (batch, *{self.event_shape}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map data to latent: ``(z, log|det dz/dx|)`` (NaN/inf entries propagate, as in the layers)."""
        self._check(x, "x")
        return self.transform(x)

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map latent to data: ``(x, log|det dx/dz|)``."""
        self._check(z, "z")
        return self.transform.inverse(z)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log_prob`` without its finiteness checks (for objectives that checked, and under vmap)."""
        z, log_det = self(x)
        return _normal_log_prob(z) + log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density (nats) per example.

        Raises:
            ValueError: If ``x`` has NaN/inf entries, or its log-density is not finite (the latent
                overflows ``x``'s dtype, e.g. entries of ``1e30`` in float32, or the weights are not finite).
        """
        self._check(x, "x")
        check_finite(x, "x")
        out = self._log_prob(x)
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            raise ValueError(f"the log-density of x is not finite for {bad} of {x.shape[0]} examples (|x| up to "
                             f"{x.abs().max().item():.3g} in {x.dtype}): the latent overflows, or the model's "
                             f"weights are not finite; use float64 or data on the model's scale")
        return out

    def bits_per_dim(self, x: torch.Tensor, levels: int) -> torch.Tensor:
        """[`bits_per_dim`][kexue.flow.bits_per_dim] of dequantised data ``x = (v + u) / levels`` per example.

        Raises:
            ValueError: As [`log_prob`][kexue.flow.Flow.log_prob], or if ``levels < 2``.
        """
        check_int(levels, "levels", 2)
        return _bits_per_dim(self.log_prob(x), self.dims, levels)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        r"""Draw ``n`` samples $f^{-1}(T \varepsilon)$, $\varepsilon \sim \mathcal{N}(0, I)$.

        Args:
            n: Number of samples (>= 1).
            temperature: $T \ge 0$, the standard deviation of the base noise.
            generator: Random generator.

        Returns:
            Samples of shape ``(n, *event_shape)``.

        Raises:
            ValueError: If ``n < 1`` or ``temperature`` is negative or not finite.
            TypeError: If ``generator`` is not a ``torch.Generator`` (or None).
        """
        check_int(n, "n")
        check_real(temperature, "temperature", at_least=0)
        _check_optional_generator(generator)
        dtype = next((p.dtype for p in self.parameters()), torch.get_default_dtype())
        z = torch.randn(n, *self.event_shape, generator=generator, dtype=dtype) * temperature
        return self.transform.inverse(z)[0]
# --8<-- [end:flow]


# ----------------------------------------------------------------------------------------------
# The article's model
# ----------------------------------------------------------------------------------------------


def glow(
    event_shape: Sequence[int] = (1, 8, 8),
    levels: int = 2,
    depth: int = 4,
    hidden: int = 32,
    permutation: str = "lu",
    coupling: str = "sigmoid",
    actnorm: bool = True,
    seed: int = 0,
) -> Flow:
    """A small multi-scale Glow: ``levels`` x (squeeze -> ``depth`` steps -> split), learned top prior.

    For 8x8 digits with ``levels=2``: 1x8x8 -> 4x4x4 (steps, split 2 | 2) -> 8x2x2 (steps, top prior).

    Args:
        event_shape: ``(C, H, W)``; ``H`` and ``W`` divisible by ``2**levels``.
        levels: Number of scales (>= 1).
        depth: Glow steps per level (>= 1).
        hidden: Coupling net width.
        permutation: Key of [`PERMUTATIONS`][kexue.flow.PERMUTATIONS].
        coupling: Key of [`COUPLINGS`][kexue.flow.COUPLINGS].
        actnorm: Whether the steps include ActNorm.
        seed: Seed for all initial weights (>= 0).

    Returns:
        A [`Flow`][kexue.flow.Flow] with a standard normal base.

    Raises:
        TypeError: If ``event_shape`` is not a sequence.
        ValueError: If ``event_shape`` is not three positive integers, the image size is not divisible
            by ``2**levels``, a size or the seed is not an integer in range, a name is unknown or
            ``actnorm`` is not a bool.
    """
    event_shape = _check_sizes(event_shape, "event_shape", length=3)
    check_int(levels, "levels")
    check_int(depth, "depth")
    check_int(hidden, "hidden")
    if permutation not in PERMUTATIONS:
        raise ValueError(f"permutation must be one of {sorted(PERMUTATIONS)}, got {permutation!r}")
    _coupling_params(coupling)
    check_bool(actnorm, "actnorm")
    check_int(seed, "seed", 0)
    c, h, w = event_shape
    if h % 2**levels or w % 2**levels:
        raise ValueError(f"event_shape height and width must be divisible by 2**levels={2**levels}, got {(h, w)}")
    shapes = []
    for _ in range(levels):
        c, h, w = 4 * c, h // 2, w // 2
        shapes.append((c, h, w))
        c = c // 2
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # nn.Conv2d draws from the global generator; leave it as it was
        torch.manual_seed(seed)
        steps = [[GlowStep(s[0], hidden, permutation, coupling, actnorm, g) for _ in range(depth)] for s in shapes]
        inner: GlowLevel | None = None
        for level_steps, shape in zip(reversed(steps), reversed(shapes)):
            inner = GlowLevel(level_steps, inner, shape)
    assert inner is not None
    return Flow(inner, event_shape)

r"""DGCNN: a dilated gated convolutional reader for multi-passage question answering.

Companion to Su Jianlin, "基于CNN的阅读理解式问答模型：DGCNN"
([kexue.fm/archives/5409](https://kexue.fm/archives/5409), 2018-04-15) and to his 2019 Keras
re-implementation ([kexue.fm/archives/6906](https://kexue.fm/archives/6906),
[bojone/dgcnn_for_reading_comprehension](https://github.com/bojone/dgcnn_for_reading_comprehension)).
The gated convolution follows ConvS2S / GLU (Dauphin et al. 2017, Gehring et al. 2017), the
dilation schedule WaveNet (van den Oord et al. 2016), the attention pooling R-Net's additive
attention (Wang et al. 2017) and the loss the focal loss of Lin et al. (2017).

Everything works on token ids with boolean masks; masks must be *left-aligned* (valid tokens
first, padding after). Tensors are channels-last: a sequence of vectors is ``(batch, seq, d)``.

NaN/inf policy: the layers ([`gated_conv1d`][kexue.dgcnn.gated_conv1d], the attention
pooling, the modules and the reader) propagate NaN/inf like torch and do not check for them;
the losses, span scoring, decoding and voting reduce probabilities to a number or a decision and
reject NaN/inf, and probabilities outside $[0, 1]$, with a ``ValueError`` naming the argument.

The module contains

* the math as pure functions: [`gated_conv1d`][kexue.dgcnn.gated_conv1d] (eq. 1/3 with gate
  noise, eq. 9), [`receptive_field`][kexue.dgcnn.receptive_field],
  [`attention_pooling`][kexue.dgcnn.attention_pooling] (eq. 4),
  [`sinusoidal_position_embedding`][kexue.dgcnn.sinusoidal_position_embedding] (eq. 6), the
  tagging losses ([`LOSSES`][kexue.dgcnn.LOSSES]), span scoring ([`SPAN_SCORES`][kexue.dgcnn.SPAN_SCORES]),
  cross-passage voting ([`VOTING`][kexue.dgcnn.VOTING]), the hand-crafted match features
  ([`match_features`][kexue.dgcnn.match_features]) and the Sogou-style metric
  ([`sogou_score`][kexue.dgcnn.sogou_score]);
* thin modules holding parameters: [`GatedConv1d`][kexue.dgcnn.GatedConv1d],
  [`DGCNNEncoder`][kexue.dgcnn.DGCNNEncoder] (the stack, callable on its own),
  [`AttentionPooling1d`][kexue.dgcnn.AttentionPooling1d] and
  [`DGCNNReader`][kexue.dgcnn.DGCNNReader].

The synthetic task, the multi-seed trainer and the recurrent encoder used for speed comparisons
live in [`kexue.experiments.dgcnn`][kexue.experiments.dgcnn].
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_bool, check_finite, check_int, check_real, check_tensor

__all__ = [
    "gated_conv1d",
    "gated_conv1d_reference",
    "receptive_field",
    "GatedConv1d",
    "DGCNNEncoder",
    "attention_weights",
    "attention_pooling",
    "AttentionPooling1d",
    "sinusoidal_position_embedding",
    "binary_cross_entropy",
    "binary_focal_loss",
    "LOSSES",
    "DGCNNReader",
    "edit_distance",
    "match_features",
    "match_features_reference",
    "SPAN_SCORES",
    "span_scores",
    "best_spans",
    "extract_candidates",
    "VOTING",
    "vote",
    "pick_answer",
    "normalize_answer",
    "answer_f1",
    "sogou_score",
]


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_mask(name: str, mask: object, shape: tuple[int, ...], like: str) -> Tensor:
    """A bool tensor of ``shape``, the shape of the tensor described by ``like`` (e.g. "x's (batch, seq)")."""
    check_tensor(mask, name)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have {like} shape {tuple(shape)}, got {tuple(mask.shape)}")
    return mask


def _lengths_of_prefix_mask(name: str, mask: Tensor) -> Tensor:
    lengths = mask.sum(-1)
    prefix = torch.arange(mask.shape[-1], device=mask.device) < lengths[..., None]
    if not torch.equal(prefix, mask):
        raise ValueError(f"{name} must be left-aligned (valid tokens first, then padding)")
    return lengths


def _check_ids(name: str, ids: object, ndim: int, vocab_size: int | None = None) -> Tensor:
    """An integer tensor of non-negative token ids (below ``vocab_size`` when given)."""
    check_tensor(ids, name, ndim, floating=False)
    if ids.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of token ids, got {ids.dtype}")
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or (vocab_size is not None and hi >= vocab_size):
            limit = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
            raise ValueError(f"{name} must be token ids {limit}, got values in [{lo}, {hi}]")
    return ids


def _check_sequence(value: object, name: str) -> Sequence:
    """A list, tuple, str or other ``Sequence`` (not None, a number, a set or a tensor)."""
    if not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence (list, tuple or str), got {type(value).__name__}")
    return value


def _check_dilations(dilations: object, name: str, *, nonempty: bool = True) -> tuple[int, ...]:
    if not isinstance(dilations, Sequence) or isinstance(dilations, str):
        raise TypeError(f"{name} must be a sequence of integers >= 1, got {type(dilations).__name__}")
    if nonempty and len(dilations) == 0:
        raise ValueError(f"{name} must name at least one block, got {dilations!r}")
    for r in dilations:
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ValueError(f"{name} must hold integers >= 1, got {dilations!r}")
    return tuple(dilations)


def _check_kernel_size(kernel_size: object) -> int:
    if check_int(kernel_size, "kernel_size") % 2 == 0:
        raise ValueError(f"kernel_size must be odd (centred padding), got {kernel_size}")
    return kernel_size


def _check_layer_dtype(x: object, weight: Tensor) -> None:
    """A module's input must have the module's dtype (named from the caller's side: ``x``, not ``weight``)."""
    if isinstance(x, Tensor) and x.is_floating_point() and x.dtype != weight.dtype:
        raise TypeError(f"x must have the layer's dtype {weight.dtype} (convert x or the module), got {x.dtype}")


def _check_probabilities(p: object, name: str, ndim: tuple[int, ...] = tuple(range(1, 9))) -> Tensor:
    """A non-empty floating tensor of finite values in [0, 1]."""
    check_finite(check_tensor(p, name, ndim, floating=True, nonempty=True), name)
    if bool((p < 0).any()) or bool((p > 1).any()):
        raise ValueError(f"{name} must hold probabilities in [0, 1], got values in [{p.min().item():g}, {p.max().item():g}]")
    return p


# ----------------------------------------------------------------------------------------------
# gated dilated convolution (eqs. 1-3, 9)


def _check_gated_conv(
    x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int, mask: Tensor | None, gate_noise: Tensor | None
) -> None:
    """The arguments of [`gated_conv1d`][kexue.dgcnn.gated_conv1d] and its reference, checked once."""
    check_tensor(x, "x", 3, floating=True)
    check_tensor(weight, "weight", 3, floating=True, nonempty=True)
    if weight.dtype != x.dtype:
        raise TypeError(f"weight must have x's dtype {x.dtype}, got {weight.dtype}")
    check_int(dilation, "dilation")
    two_d_out, d_in, k = weight.shape
    if two_d_out % 2:
        raise ValueError(f"weight must have an even number of output channels (value | gate), got {two_d_out}")
    if k % 2 == 0:
        raise ValueError(f"weight must have an odd kernel size for centred padding, got {k}")
    if x.shape[-1] != d_in:
        raise ValueError(f"x has {x.shape[-1]} channels but weight expects d_in={d_in}")
    if bias is not None:
        check_tensor(bias, "bias", 1, floating=True)
        if bias.dtype != x.dtype or bias.shape[0] != two_d_out:
            raise ValueError(f"bias must have {two_d_out} entries of x's dtype {x.dtype}, got shape "
                             f"{tuple(bias.shape)} and {bias.dtype}")
    if mask is not None:
        _check_mask("mask", mask, tuple(x.shape[:2]), "x's (batch, seq)")
    if gate_noise is not None:
        check_tensor(gate_noise, "gate_noise", 3, floating=True)
        if tuple(gate_noise.shape) != (*x.shape[:2], two_d_out // 2):
            raise ValueError(f"gate_noise must have shape (batch, seq, d_out) = {(*x.shape[:2], two_d_out // 2)}, "
                             f"got {tuple(gate_noise.shape)}")


# --8<-- [start:gated_conv]
def gated_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    dilation: int = 1,
    mask: Tensor | None = None,
    gate_noise: Tensor | None = None,
) -> Tensor:
    r"""Dilated gated 1-D convolution with the article's residual gate.

    One convolution produces ``2 * d_out`` channels, split into a linear value branch and a gate
    branch (the order of ``torch.nn.functional.glu``). With $\sigma = \sigma(\mathrm{Conv}_2(X))$:

    $$Y = X \otimes (1 - \sigma) + \mathrm{Conv}_1(X) \otimes \sigma \quad (d_{in} = d_{out}),
    \qquad Y = \mathrm{Conv}_1(X) \otimes \sigma \quad (d_{in} \ne d_{out}).$$

    Padding is $d (k-1)/2$ on both sides (non-causal, output aligned with input). Padded
    positions are zeroed before the convolution and in the output, so they never leak into real
    positions. ``gate_noise`` $\varepsilon$ multiplies the gate pre-activation,
    $\sigma = \sigma(\mathrm{Conv}_2(X) \otimes (1 + \varepsilon))$ (the article's eq. 9; pass it in
    training only).

    The residual form is computed as ``torch.lerp(x, value, s)``, i.e. $X + \sigma \otimes
    (\mathrm{Conv}_1(X) - X)$, the same interpolation in one operation; the loop version
    [`gated_conv1d_reference`][kexue.dgcnn.gated_conv1d_reference] writes it term by term.

    Source: [kexue.fm/archives/5409](https://kexue.fm/archives/5409) eqs. (1)-(3), (9); GLU of
    Dauphin et al. (2017).

    Args:
        x: Input sequence.
        weight: Convolution weight; the first ``d_out`` output channels are the value branch,
            the last ``d_out`` the gate. Kernel size ``k`` must be odd.
        bias: Optional bias of the convolution.
        dilation: Dilation rate (>= 1).
        mask: Optional bool mask, True at real tokens.
        gate_noise: Optional multiplicative noise on the gate logits.

    Returns:
        The output sequence.

    Shapes:
        x: ``(batch, seq, d_in)``; weight: ``(2 * d_out, d_in, k)``; bias: ``(2 * d_out,)``;
        mask: ``(batch, seq)``; gate_noise: ``(batch, seq, d_out)``; output: ``(batch, seq, d_out)``.

    Raises:
        ValueError: On bad shapes, an even kernel or a non-positive dilation.
        TypeError: If ``x``, ``weight``, ``bias`` or ``gate_noise`` is not floating (``weight`` of
            another dtype than ``x``) or ``mask`` is not bool.

    Examples:
        A gate shut tight ($\sigma \approx 0$) passes the input through unchanged:

        >>> x = torch.randn(1, 6, 4)
        >>> w = torch.zeros(8, 4, 3)  # value | gate, kernel 3
        >>> b = torch.cat([torch.zeros(4), torch.full((4,), -30.0)])
        >>> torch.allclose(gated_conv1d(x, w, b, dilation=2), x)
        True
        >>> gated_conv1d(x, torch.zeros(10, 4, 3)).shape  # d_out = 5: no residual
        torch.Size([1, 6, 5])
    """
    _check_gated_conv(x, weight, bias, dilation, mask, gate_noise)
    return _gated_conv1d(x, weight, bias, dilation, mask, gate_noise)


def _gated_conv1d(
    x: Tensor, weight: Tensor, bias: Tensor | None, dilation: int, mask: Tensor | None, gate_noise: Tensor | None
) -> Tensor:
    """[`gated_conv1d`][kexue.dgcnn.gated_conv1d] without the argument checks (callers have checked)."""
    two_d_out, d_in, k = weight.shape
    d_out = two_d_out // 2
    if mask is not None:
        x = x * mask.unsqueeze(-1).to(x.dtype)
    h = F.conv1d(x.transpose(1, 2), weight, bias, padding=dilation * (k - 1) // 2, dilation=dilation)
    value, gate = h.transpose(1, 2).chunk(2, dim=-1)
    if gate_noise is not None:
        gate = gate * (1 + gate_noise)
    s = torch.sigmoid(gate)
    y = torch.lerp(x, value, s) if d_in == d_out else value * s  # x (1 - s) + value s
    if mask is not None:
        y = y * mask.unsqueeze(-1).to(y.dtype)
    return y
# --8<-- [end:gated_conv]


def gated_conv1d_reference(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    dilation: int = 1,
    mask: Tensor | None = None,
    gate_noise: Tensor | None = None,
) -> Tensor:
    """Slow, obvious loop version of [`gated_conv1d`][kexue.dgcnn.gated_conv1d] (same arguments, same result).

    Each output position ``t`` sums ``weight[:, :, j] @ x[t + (j - (k-1)/2) * dilation]`` over the
    taps ``j`` that fall inside the sequence, then applies the gate formula term by term.

    Shapes:
        As [`gated_conv1d`][kexue.dgcnn.gated_conv1d].

    Raises:
        TypeError: As [`gated_conv1d`][kexue.dgcnn.gated_conv1d].
        ValueError: As [`gated_conv1d`][kexue.dgcnn.gated_conv1d].
    """
    _check_gated_conv(x, weight, bias, dilation, mask, gate_noise)
    two_d_out, d_in, k = weight.shape
    d_out = two_d_out // 2
    batch, length, _ = x.shape
    if mask is not None:
        x = x * mask.unsqueeze(-1).to(x.dtype)
    half = (k - 1) // 2
    out = torch.zeros(batch, length, two_d_out, dtype=x.dtype)
    for t in range(length):
        for j in range(k):
            src = t + (j - half) * dilation
            if 0 <= src < length:
                out[:, t] += x[:, src] @ weight[:, :, j].T
    if bias is not None:
        out = out + bias
    value, gate = out[..., :d_out], out[..., d_out:]
    if gate_noise is not None:
        gate = gate * (1 + gate_noise)
    s = 1 / (1 + torch.exp(-gate))
    y = x - x * s + value * s if d_in == d_out else value * s
    if mask is not None:
        y = y * mask.unsqueeze(-1).to(y.dtype)
    return y


def receptive_field(kernel_size: int, dilations: Sequence[int]) -> int:
    r"""Receptive field of a stack of dilated convolutions, $R = 1 + (k-1)\sum_\ell d_\ell$.

    With kernel 3, dilations (1, 2) see 7 inputs, (1, 2, 4) see 15, (1, 2, 4, 8, 16, 1) see 65.

    Args:
        kernel_size: Kernel size ``k`` (>= 1).
        dilations: Dilation rate of each layer (each >= 1).

    Returns:
        The number of input positions one output position depends on (without edge effects).

    Raises:
        TypeError: If ``dilations`` is not a sequence.
        ValueError: If ``kernel_size`` or any of ``dilations`` is not a positive integer.

    Examples:
        >>> receptive_field(3, (1, 2)), receptive_field(3, (1, 2, 4, 8, 1)), receptive_field(3, (1,) * 5)
        (7, 33, 11)
        >>> receptive_field(3, ())  # no layer: one position sees itself
        1
    """
    check_int(kernel_size, "kernel_size")
    _check_dilations(dilations, "dilations", nonempty=False)
    return 1 + (kernel_size - 1) * sum(dilations)


class GatedConv1d(nn.Module):
    r"""One DGCNN block: a dilated gated convolution, residual when ``d_in == d_out``.

    Holds the convolution weight; the math is [`gated_conv1d`][kexue.dgcnn.gated_conv1d]. In
    training mode the gate logits get multiplicative uniform noise $\varepsilon \sim U[-a, a]$
    (``gate_noise = a``, 0.1 in the article, drawn from torch's global generator like dropout); in
    eval mode none.

    Args:
        d_in: Input channels.
        d_out: Output channels.
        kernel_size: Odd kernel size.
        dilation: Dilation rate.
        gate_noise: Amplitude ``a`` of the training-time gate noise (>= 0).

    Shapes:
        x: ``(batch, seq, d_in)``; mask: ``(batch, seq)``; output: ``(batch, seq, d_out)``.

    Raises:
        ValueError: In the constructor, for a non-positive size or dilation, an even kernel or a
            negative or non-finite ``gate_noise``; in ``forward``, as
            [`gated_conv1d`][kexue.dgcnn.gated_conv1d] (``x`` must have the layer's dtype).
    """

    def __init__(self, d_in: int, d_out: int, kernel_size: int = 3, dilation: int = 1, gate_noise: float = 0.0):
        super().__init__()
        check_int(d_in, "d_in")
        check_int(d_out, "d_out")
        _check_kernel_size(kernel_size)
        check_int(dilation, "dilation")
        self.dilation = dilation
        self.gate_noise = check_real(gate_noise, "gate_noise", at_least=0)
        self.conv = nn.Conv1d(d_in, 2 * d_out, kernel_size)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_layer_dtype(x, self.conv.weight)
        _check_gated_conv(x, self.conv.weight, self.conv.bias, self.dilation, mask, None)
        return self._forward(x, mask)

    def _forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``forward`` without the argument checks (callers have checked)."""
        noise = None
        if self.training and self.gate_noise > 0:
            d_out = self.conv.out_channels // 2
            noise = (torch.rand(*x.shape[:2], d_out, dtype=x.dtype) * 2 - 1) * self.gate_noise
        return _gated_conv1d(x, self.conv.weight, self.conv.bias, self.dilation, mask, noise)


class DGCNNEncoder(nn.Module):
    """A stack of residual dilated gated convolutions (the DGCNN sequence encoder).

    Callable on its own (e.g. to benchmark against
    [`BiLSTMEncoder`][kexue.experiments.dgcnn.BiLSTMEncoder]): ``d`` channels in and out, one
    [`GatedConv1d`][kexue.dgcnn.GatedConv1d] per entry of ``dilations``.

    Args:
        d: Channels.
        dilations: Dilation rate of each block, e.g. ``(1, 2, 4, 8, 1)``.
        kernel_size: Odd kernel size.
        gate_noise: Training-time gate-noise amplitude of every block.

    Shapes:
        x: ``(batch, seq, d)``; mask: ``(batch, seq)``; output: ``(batch, seq, d)``.

    Raises:
        TypeError: If ``dilations`` is not a sequence.
        ValueError: As [`GatedConv1d`][kexue.dgcnn.GatedConv1d], and for empty ``dilations``.
    """

    def __init__(self, d: int, dilations: Sequence[int] = (1, 2, 4, 8, 1), kernel_size: int = 3, gate_noise: float = 0.0):
        super().__init__()
        check_int(d, "d")
        dilations = _check_dilations(dilations, "dilations")
        _check_kernel_size(kernel_size)
        check_real(gate_noise, "gate_noise", at_least=0)
        self.blocks = nn.ModuleList(GatedConv1d(d, d, kernel_size, r, gate_noise) for r in dilations)
        self.dilations = dilations
        self.kernel_size = kernel_size

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        first = self.blocks[0].conv
        _check_layer_dtype(x, first.weight)
        _check_gated_conv(x, first.weight, first.bias, 1, mask, None)  # every block has first's shapes
        return self._forward(x, mask)

    def _forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``forward`` without the argument checks (callers have checked)."""
        for block in self.blocks:
            x = block._forward(x, mask)
        return x


# ----------------------------------------------------------------------------------------------
# attention pooling (eq. 4) and position embedding (eq. 6)


def attention_weights(x: Tensor, weight: Tensor, alpha: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Additive attention weights $\lambda_i = \mathrm{softmax}_i\big(\alpha^\top \tanh(W x_i)\big)$.

    Masked positions get weight exactly 0; a row with no valid position gets all-zero weights.

    Args:
        x: Sequence.
        weight: $W$.
        alpha: $\alpha$.
        mask: Optional bool mask, True at real tokens.

    Returns:
        The weights $\lambda$.

    Shapes:
        x: ``(..., seq, d)``; weight: ``(h, d)``; alpha: ``(h,)``; mask: ``(..., seq)``;
        output: ``(..., seq)``.

    Raises:
        TypeError: If ``x``, ``weight`` or ``alpha`` is not floating (or ``weight``/``alpha`` not of
            ``x``'s dtype), or ``mask`` is not bool.
        ValueError: On mismatched shapes.
    """
    _check_attention(x, weight, alpha, mask)
    return _attention_weights(x, weight, alpha, mask)


def _check_attention(x: Tensor, weight: Tensor, alpha: Tensor, mask: Tensor | None) -> None:
    check_tensor(x, "x", tuple(range(2, 9)), floating=True)
    check_tensor(weight, "weight", 2, floating=True, nonempty=True)
    check_tensor(alpha, "alpha", 1, floating=True)
    for name, t in (("weight", weight), ("alpha", alpha)):
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype {x.dtype}, got {t.dtype}")
    if weight.shape[1] != x.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} channels but weight expects d={weight.shape[1]}")
    if alpha.shape[0] != weight.shape[0]:
        raise ValueError(f"alpha must have h = weight.shape[0] = {weight.shape[0]} entries, got {alpha.shape[0]}")
    if mask is not None:
        _check_mask("mask", mask, tuple(x.shape[:-1]), "x's (..., seq)")


def _attention_weights(x: Tensor, weight: Tensor, alpha: Tensor, mask: Tensor | None) -> Tensor:
    """[`attention_weights`][kexue.dgcnn.attention_weights] without the argument checks."""
    logits = torch.tanh(x @ weight.T) @ alpha
    if mask is None:
        return torch.softmax(logits, dim=-1)
    # A large negative, not -inf: a fully masked row would give NaN with -inf.
    logits = logits.masked_fill(~mask, -1e12 if logits.dtype != torch.float16 else -6e4)
    return torch.softmax(logits, dim=-1) * mask.to(logits.dtype)


def attention_pooling(x: Tensor, weight: Tensor, alpha: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Attention pooling of a sequence into one vector, $x = \sum_i \lambda_i x_i$ (article eq. 4).

    Weights from [`attention_weights`][kexue.dgcnn.attention_weights]; a fully masked row pools to the zero vector.

    Shapes:
        x: ``(..., seq, d)``; weight: ``(h, d)``; alpha: ``(h,)``; mask: ``(..., seq)``;
        output: ``(..., d)``.

    Raises:
        TypeError: As [`attention_weights`][kexue.dgcnn.attention_weights].
        ValueError: As [`attention_weights`][kexue.dgcnn.attention_weights].
    """
    _check_attention(x, weight, alpha, mask)
    return _attention_pooling(x, weight, alpha, mask)


def _attention_pooling(x: Tensor, weight: Tensor, alpha: Tensor, mask: Tensor | None) -> Tensor:
    lam = _attention_weights(x, weight, alpha, mask)
    return (lam.unsqueeze(-1) * x).sum(-2)


class AttentionPooling1d(nn.Module):
    r"""Holds $W$ (``h x d``) and $\alpha$ (``h``) for [`attention_pooling`][kexue.dgcnn.attention_pooling].

    No biases, as in the 2019 code; $W$ is Xavier-uniform, $\alpha \sim U(-1/\sqrt h, 1/\sqrt h)$.

    Args:
        d: Input channels.
        h: Hidden size of the scoring layer.

    Shapes:
        x: ``(..., seq, d)``; mask: ``(..., seq)``; output: ``(..., d)``.
    """

    def __init__(self, d: int, h: int):
        super().__init__()
        check_int(d, "d")
        check_int(h, "h")
        self.weight = nn.Parameter(torch.empty(h, d))
        self.alpha = nn.Parameter(torch.empty(h))
        nn.init.xavier_uniform_(self.weight)
        nn.init.uniform_(self.alpha, -1 / math.sqrt(h), 1 / math.sqrt(h))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        _check_layer_dtype(x, self.weight)
        return attention_pooling(x, self.weight, self.alpha, mask)

    def _forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``forward`` without the argument checks (callers have checked)."""
        return _attention_pooling(x, self.weight, self.alpha, mask)


def sinusoidal_position_embedding(
    length: int, dim: int, *, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""Sinusoidal position features (article eq. 6), positions $p = 0, \dots, \text{length}-1$:

    $$PE_{2i}(p) = \sin\big(p / \text{base}^{2i/d}\big), \qquad PE_{2i+1}(p) = \cos\big(p / \text{base}^{2i/d}\big).$$

    Args:
        length: Number of positions (>= 1).
        dim: Feature size $d$ (even).
        base: Frequency base (> 0).
        dtype: Floating dtype of the result (computed in float64 first).

    Returns:
        The embedding table.

    Shapes:
        output: ``(length, dim)``.

    Raises:
        ValueError: If ``length``/``dim`` are not positive, ``dim`` is odd or ``base <= 0``.
        TypeError: If ``dtype`` is not floating.
    """
    check_int(length, "length")
    check_int(dim, "dim")
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    check_real(base, "base", above=0)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    p = torch.arange(length, dtype=torch.float64)[:, None]
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    pe = torch.empty(length, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(p * inv)
    pe[:, 1::2] = torch.cos(p * inv)
    return pe.to(dtype)


# ----------------------------------------------------------------------------------------------
# losses


def _masked_mean(loss: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return loss.mean()
    m = mask.to(loss.dtype)
    return (loss * m).sum() / m.sum().clamp_min(1)


def _check_loss_inputs(p: Tensor, y: Tensor, mask: Tensor | None, eps: float) -> Tensor:
    """Check the arguments every tagging loss shares; return ``y`` as floating targets."""
    _check_probabilities(p, "p")
    check_tensor(y, "y")
    if y.is_complex():
        raise TypeError(f"y must be a real tensor of targets, got {y.dtype}")
    if tuple(y.shape) != tuple(p.shape):
        raise ValueError(f"y must have p's shape {tuple(p.shape)}, got {tuple(y.shape)}")
    if not y.is_floating_point():  # 0/1 integer or bool targets are promoted, never truncated
        y = y.to(p.dtype)
    check_finite(y, "y")
    if bool((y < 0).any()) or bool((y > 1).any()):
        raise ValueError(f"y must hold targets in [0, 1], got values in [{y.min().item():g}, {y.max().item():g}]")
    if mask is not None:
        _check_mask("mask", mask, tuple(p.shape), "p's")
    check_real(eps, "eps", above=0, at_most=0.5)
    return y


def _upcast(p: Tensor, y: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    """float16/bfloat16 probabilities are scored in float32 (1 - 1e-7 rounds to 1 in float16)."""
    out = torch.promote_types(p.dtype, y.dtype)
    if out in (torch.float16, torch.bfloat16):
        return p.float(), y.float(), out
    return p, y, out


def binary_cross_entropy(p: Tensor, y: Tensor, mask: Tensor | None = None, *, eps: float = 1e-7) -> Tensor:
    r"""Mean binary cross-entropy of probabilities, $-y\log p - (1-y)\log(1-p)$, over unmasked entries.

    Args:
        p: Probabilities in [0, 1] (clamped to ``[eps, 1 - eps]``).
        y: Targets in [0, 1]; integer or bool 0/1 targets are promoted to ``p``'s dtype.
        mask: Optional bool mask of entries to average over.
        eps: Clamp for the logarithms, in ``(0, 0.5]``.

    Returns:
        The scalar loss (float16/bfloat16 inputs are scored in float32 and the loss cast back).

    Shapes:
        p, y, mask: any common shape; output: scalar.

    Raises:
        TypeError: If ``p`` is not floating, ``y`` is complex or ``mask`` is not bool.
        ValueError: On mismatched or empty shapes, probabilities or targets outside [0, 1] (NaN and
            inf included) or an ``eps`` outside ``(0, 0.5]``.
    """
    y = _check_loss_inputs(p, y, mask, eps)
    return _bce(p, y, mask, eps=eps)


def _bce(p: Tensor, y: Tensor, mask: Tensor | None = None, *, eps: float = 1e-7) -> Tensor:
    """[`binary_cross_entropy`][kexue.dgcnn.binary_cross_entropy] without the argument checks."""
    p, y, out = _upcast(p, y)
    q = p.clamp(eps, 1 - eps)
    return _masked_mean(-(y * torch.log(q) + (1 - y) * torch.log1p(-q)), mask).to(out)


# --8<-- [start:focal]
def binary_focal_loss(
    p: Tensor, y: Tensor, mask: Tensor | None = None, *, alpha: float = 0.25, gamma: float = 2.0, eps: float = 1e-7
) -> Tensor:
    r"""Mean binary focal loss of probabilities over unmasked entries (Lin et al. 2017):

    $$FL(p, y) = -\alpha\, y (1-p)^\gamma \log p - (1-\alpha)(1-y)\, p^\gamma \log(1-p).$$

    Works on probabilities because DGCNN's taggers are multiplied by the passage gate after the
    sigmoid; ``torchvision.ops.sigmoid_focal_loss`` is the same on logits. ``alpha = 0.25``,
    ``gamma = 2`` are the 2019 code's values (the 2018 article does not state them).

    Args:
        p: Probabilities in [0, 1] (clamped to ``[eps, 1 - eps]``).
        y: Targets in [0, 1]; integer or bool 0/1 targets are promoted to ``p``'s dtype.
        mask: Optional bool mask of entries to average over.
        alpha: Weight of the positive class, in [0, 1].
        gamma: Focusing exponent (>= 0).
        eps: Clamp for the logarithms, in ``(0, 0.5]``.

    Returns:
        The scalar loss (float16/bfloat16 inputs are scored in float32 and the loss cast back).

    Shapes:
        p, y, mask: any common shape; output: scalar.

    Raises:
        TypeError: As [`binary_cross_entropy`][kexue.dgcnn.binary_cross_entropy].
        ValueError: As [`binary_cross_entropy`][kexue.dgcnn.binary_cross_entropy], and for ``alpha``
            or ``gamma`` out of range.
    """
    y = _check_loss_inputs(p, y, mask, eps)
    check_real(alpha, "alpha", at_least=0, at_most=1)
    check_real(gamma, "gamma", at_least=0)
    return _focal(p, y, mask, alpha=alpha, gamma=gamma, eps=eps)


def _focal(p: Tensor, y: Tensor, mask: Tensor | None = None, *, alpha: float = 0.25, gamma: float = 2.0,
           eps: float = 1e-7) -> Tensor:
    """[`binary_focal_loss`][kexue.dgcnn.binary_focal_loss] without the argument checks."""
    p, y, out = _upcast(p, y)
    q = p.clamp(eps, 1 - eps)
    pos = -alpha * y * (1 - q) ** gamma * torch.log(q)
    neg = -(1 - alpha) * (1 - y) * q**gamma * torch.log1p(-q)
    return _masked_mean(pos + neg, mask).to(out)
# --8<-- [end:focal]


LOSSES: dict[str, Callable[..., Tensor]] = {"bce": binary_cross_entropy, "focal": binary_focal_loss}
"""Registry of tagging losses, each ``f(p, y, mask=None) -> scalar`` on probabilities."""

_LOSS_CORES: dict[str, Callable[..., Tensor]] = {"bce": _bce, "focal": _focal}
# The same losses without argument checks, for callers that have checked their inputs and call
# them under torch.func.vmap, where a data-dependent check cannot run (kexue.experiments.dgcnn).


# ----------------------------------------------------------------------------------------------
# the reader


class DGCNNReader(nn.Module):
    r"""The DGCNN reader: question encoder, passage encoder, gated start/end taggers.

    * question: embedding -> [`DGCNNEncoder`][kexue.dgcnn.DGCNNEncoder] (``q_dilations``) ->
      attention pooling -> $q$;
    * passage: $[\text{emb}_i \,\|\, q \,\|\, PE_i \,\|\, f_i]$ -> linear ->
      [`DGCNNEncoder`][kexue.dgcnn.DGCNNEncoder] (``p_dilations``) -> $h_i$, where $f_i$ are optional
      match features ([`match_features`][kexue.dgcnn.match_features]);
    * taggers (article eq. 7, 8):
      $p^{start}_i = p^{global}\,\sigma(\alpha_1^\top \tanh(W_1 h_i + b_1) + \beta_1)$, same for
      end, with $p^{global} = \sigma(w^\top o + b)$, $o$ = attention pooling of $h$.
      With ``global_gate=False`` $p^{global} \equiv 1$.

    The article's model froze pretrained 128-d word2vec vectors and used 128 channels; the defaults
    here are toy widths for the CPU experiments.

    NaN/inf in ``features`` propagate to the outputs, as in any torch layer.

    Args:
        vocab_size: Number of token ids (id 0 is padding).
        d: Channels of the encoders.
        d_emb: Word-embedding size (trainable; the article froze pretrained word2vec).
        d_pos: Position-embedding size (even; 0 disables).
        n_features: Number of hand features per passage token (0 disables).
        q_dilations: Dilations of the question encoder.
        p_dilations: Dilations of the passage encoder.
        kernel_size: Odd kernel size of every block.
        global_gate: Multiply both taggers by the passage-level probability.
        gate_noise: Training-time gate-noise amplitude (article: 0.1).
        max_len: Longest passage the position table covers.

    Shapes:
        question: ``(batch, lq)`` long; q_mask: ``(batch, lq)`` bool;
        passages: ``(batch, n_passages, lp)`` long; p_mask: ``(batch, n_passages, lp)`` bool;
        features: ``(batch, n_passages, lp, n_features)``;
        outputs: p_start, p_end ``(batch, n_passages, lp)``; p_global ``(batch, n_passages)``.

    Raises:
        ValueError: In the constructor, for a non-positive size, an odd or negative ``d_pos``, a
            negative ``n_features``, empty or non-positive dilations, an even kernel or a negative
            ``gate_noise``; in ``forward``, for inputs whose shapes do not fit the block above
            (missing ``features`` when ``n_features > 0``, or ``features`` when ``n_features = 0``,
            included), token ids outside ``[0, vocab_size)`` and masks that are not left-aligned.
        TypeError: If token ids are floating, masks are not bool, features are not floating or a
            flag is not a bool.

    Examples:
        >>> _ = torch.manual_seed(0)
        >>> reader = DGCNNReader(vocab_size=50, d=16, d_emb=16, d_pos=8).eval()
        >>> question = torch.tensor([[5, 6, 7, 0]])  # one question of 3 tokens, padded to 4
        >>> passages = torch.randint(2, 50, (1, 3, 12))  # its 3 passages of 12 tokens
        >>> p_start, p_end, p_global = reader(question, question != 0, passages, passages != 0)
        >>> tuple(p_start.shape), tuple(p_global.shape)
        ((1, 3, 12), (1, 3))
        >>> bool((p_start <= p_global[..., None]).all())  # both taggers sit under the passage gate
        True
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        d: int = 32,
        d_emb: int = 32,
        d_pos: int = 16,
        n_features: int = 0,
        q_dilations: Sequence[int] = (1, 2, 1),
        p_dilations: Sequence[int] = (1, 2, 4, 8, 1),
        kernel_size: int = 3,
        global_gate: bool = True,
        gate_noise: float = 0.1,
        max_len: int = 256,
    ):
        super().__init__()
        check_int(vocab_size, "vocab_size")
        check_int(d, "d")
        check_int(d_emb, "d_emb")
        if check_int(d_pos, "d_pos", 0) % 2:
            raise ValueError(f"d_pos must be a non-negative even integer, got {d_pos!r}")
        check_int(n_features, "n_features", 0)
        _check_dilations(q_dilations, "q_dilations")
        _check_dilations(p_dilations, "p_dilations")
        _check_kernel_size(kernel_size)
        check_bool(global_gate, "global_gate")
        check_real(gate_noise, "gate_noise", at_least=0)
        check_int(max_len, "max_len")
        self.vocab_size = vocab_size
        self.n_features = n_features
        self.global_gate = global_gate
        self.embed = nn.Embedding(vocab_size, d_emb, padding_idx=0)
        self.q_in = nn.Linear(d_emb, d)
        self.q_encoder = DGCNNEncoder(d, q_dilations, kernel_size, gate_noise)
        self.q_pool = AttentionPooling1d(d, d)
        self.p_in = nn.Linear(d_emb + d + d_pos + n_features, d)
        self.p_encoder = DGCNNEncoder(d, p_dilations, kernel_size, gate_noise)
        self.start_head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1))
        self.end_head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1))
        self.p_pool = AttentionPooling1d(d, d)
        self.global_head = nn.Linear(d, 1)
        pos = sinusoidal_position_embedding(max_len, d_pos) if d_pos else torch.zeros(max_len, 0)
        self.register_buffer("pos", pos, persistent=False)

    def _check_inputs(
        self, question: Tensor, q_mask: Tensor, passages: Tensor, p_mask: Tensor, features: Tensor | None
    ) -> None:
        """Raise a ValueError/TypeError naming the first argument that does not fit the Shapes block."""
        _check_ids("question", question, 2, self.vocab_size)
        _check_ids("passages", passages, 3, self.vocab_size)
        _check_mask("q_mask", q_mask, tuple(question.shape), "question's")
        _check_mask("p_mask", p_mask, tuple(passages.shape), "passages'")
        _lengths_of_prefix_mask("q_mask", q_mask)
        _lengths_of_prefix_mask("p_mask", p_mask)
        b, n, lp = passages.shape
        if b != question.shape[0]:
            raise ValueError(f"passages has batch {b} but question has {question.shape[0]}")
        if lp > self.pos.shape[0]:
            raise ValueError(f"passages are {lp} long but max_len is {self.pos.shape[0]}")
        if self.n_features:
            if features is None:
                raise ValueError(f"features are required: the reader was built with n_features={self.n_features}")
            check_tensor(features, "features", 4, floating=True)
            if tuple(features.shape) != (b, n, lp, self.n_features):
                raise ValueError(f"features must have shape {(b, n, lp, self.n_features)}, got {tuple(features.shape)}")
        elif features is not None:
            raise ValueError("features must be None: the reader was built with n_features=0")

    def forward(
        self,
        question: Tensor,
        q_mask: Tensor,
        passages: Tensor,
        p_mask: Tensor,
        features: Tensor | None = None,
        *,
        gated: bool = True,
        validate_args: bool = True,
    ) -> tuple[Tensor, Tensor, Tensor]:
        r"""``(p_start, p_end, p_global)``; with ``gated=False`` the taggers' own probabilities
        $\sigma(\cdot)$ of eq. (7), before eq. (8) multiplies them by $p^{global}$.

        ``validate_args=False`` skips the argument checks, for a caller that has checked the inputs
        already (e.g. [`ReaderStack`][kexue.experiments.dgcnn.ReaderStack], which runs the reader
        under ``torch.func.vmap``, where the data-dependent checks cannot run).
        """
        if validate_args:
            self._check_inputs(question, q_mask, passages, p_mask, features)
            check_bool(gated, "gated")
        b, n, lp = passages.shape
        # question -> one vector q per question
        hq = self.q_encoder._forward(self.q_in(self.embed(question)) * q_mask.unsqueeze(-1), q_mask)  # (b, lq, d)
        qv = self.q_pool._forward(hq, q_mask)  # (b, d)
        # every passage becomes its own sequence: (b, n, lp) -> (b*n, lp), question k's passages adjacent
        pm = p_mask.reshape(b * n, lp)
        parts = [
            self.embed(passages.reshape(b * n, lp)),  # (b*n, lp, d_emb)
            qv.repeat_interleave(n, dim=0).unsqueeze(1).expand(-1, lp, -1),  # q of each passage: (b*n, lp, d)
            self.pos[:lp].unsqueeze(0).expand(b * n, -1, -1),  # (b*n, lp, d_pos)
        ]
        if self.n_features:
            parts.append(features.reshape(b * n, lp, -1).to(qv.dtype))  # (b*n, lp, n_features)
        h = self.p_in(torch.cat(parts, dim=-1)) * pm.unsqueeze(-1)  # (b*n, lp, d)
        h = self.p_encoder._forward(h, pm)  # (b*n, lp, d)
        fm = pm.to(h.dtype)
        ps = torch.sigmoid(self.start_head(h).squeeze(-1)) * fm  # (b*n, lp)
        pe = torch.sigmoid(self.end_head(h).squeeze(-1)) * fm  # (b*n, lp)
        if self.global_gate:
            pg = torch.sigmoid(self.global_head(self.p_pool._forward(h, pm)).squeeze(-1))  # (b*n,)
        else:
            pg = torch.ones(b * n, dtype=h.dtype)
        if gated:
            ps, pe = ps * pg[:, None], pe * pg[:, None]
        # back to one row per question: (b*n, lp) -> (b, n, lp), (b*n,) -> (b, n)
        return ps.reshape(b, n, lp), pe.reshape(b, n, lp), pg.reshape(b, n)


# ----------------------------------------------------------------------------------------------
# hand-crafted match features (word level)


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance (insert, delete, substitute, each cost 1) by dynamic programming.

    Raises:
        TypeError: If ``a`` or ``b`` is not a sequence (a list, tuple or str).
    """
    _check_sequence(a, "a")
    _check_sequence(b, "b")
    prev = list(range(len(b) + 1))
    for i, ai in enumerate(a, 1):
        cur = [i]
        for j, bj in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ai != bj)))
        prev = cur
    return prev[-1]


_PLACEHOLDER = -1


def match_features_reference(question: Sequence[int], passages: Sequence[Sequence[int]]) -> list[list[list[float]]]:
    """Slow, obvious version of [`match_features`][kexue.dgcnn.match_features] for one question (lists of valid tokens).

    Returns:
        ``out[p][i] = [q_match, ee_cooccurrence, window_jaccard, window_rel_edit]``.

    Raises:
        TypeError: If ``question`` is not a sequence or ``passages`` not a sequence of sequences.
    """
    _check_sequence(question, "question")
    for p in _check_sequence(passages, "passages"):
        _check_sequence(p, "passages[i]")
    m = len(question)
    qset = set(question)
    n = len(passages)
    sets = [set(p) for p in passages]
    out = []
    for pi, p in enumerate(passages):
        rows = []
        for i, w in enumerate(p):
            qm = float(w in qset)
            ee = sum(w in sets[o] for o in range(n) if o != pi) / n
            if m:
                lo = i - m // 2
                win = [p[t] if 0 <= t < len(p) else _PLACEHOLDER for t in range(lo, lo + m)]
                ws = set(win)
                jac = len(ws & qset) / len(ws | qset)
                red = edit_distance(win, list(question)) / m
            else:
                jac, red = 0.0, 0.0
            rows.append([qm, ee, jac, red])
        out.append(rows)
    return out


def _distinct_first(a: Tensor) -> Tensor:
    """True at the first occurrence of each value along the last axis."""
    m = a.shape[-1]
    earlier = torch.ones(m, m, dtype=torch.bool).tril(-1)
    eq = a.unsqueeze(-1) == a.unsqueeze(-2)
    return ~(eq & earlier).any(-1)


# --8<-- [start:features]
def match_features(question: Tensor, q_mask: Tensor, passages: Tensor, p_mask: Tensor) -> Tensor:
    r"""The article's four word-level hand features for every passage token.

    For token $w$ at position $i$ of passage $e$, with question $Q$ (length $m$) and $n$ passages:

    1. Q-E match: $[w \in Q]$;
    2. E-E co-occurrence: (number of *other* passages containing $w$) / $n$;
    3. window Jaccard: $|S \cap Q| / |S \cup Q|$ of the sets of the window
       $S = e[i - \lfloor m/2 \rfloor \,..\, i - \lfloor m/2 \rfloor + m - 1]$ (positions outside the
       passage are one shared placeholder) and the question;
    4. window relative edit distance: $\mathrm{lev}(S, Q)/m$ (ordered comparison).

    The article also averages the same four features over the characters of each word (8 in
    total); synthetic tokens have no characters, so only the word level is implemented. The window
    alignment is our convention (the article gives only an example). Padding gets zeros.

    Args:
        question: Question token ids.
        q_mask: Left-aligned bool mask of the question.
        passages: Passage token ids.
        p_mask: Left-aligned bool mask of the passages.

    Returns:
        Features in float32.

    Shapes:
        question, q_mask: ``(batch, lq)``; passages, p_mask: ``(batch, n_passages, lp)``;
        output: ``(batch, n_passages, lp, 4)``.

    Raises:
        ValueError: On mismatched shapes, negative token ids (they would collide with the padding
            placeholders) or masks that are not left-aligned.
        TypeError: If token ids are floating or masks are not bool.

    Examples:
        >>> q = torch.tensor([[5, 6]])
        >>> p = torch.tensor([[[5, 9, 6], [9, 8, 8]]])  # two passages of one question
        >>> f = match_features(q, q != 0, p, p != 0)
        >>> f.shape
        torch.Size([1, 2, 3, 4])
        >>> f[0, 0, :, 0].tolist()  # 1. the word occurs in the question
        [1.0, 0.0, 1.0]
        >>> f[0, 0, :, 1].tolist()  # 2. share of the other passages that contain it (n = 2)
        [0.0, 0.5, 0.0]
    """
    _check_ids("question", question, 2)
    _check_ids("passages", passages, 3)
    _check_mask("q_mask", q_mask, tuple(question.shape), "question's")
    _check_mask("p_mask", p_mask, tuple(passages.shape), "passages'")
    if passages.shape[0] != question.shape[0]:
        raise ValueError(f"passages has batch {passages.shape[0]} but question has {question.shape[0]}")
    q_len = _lengths_of_prefix_mask("q_mask", q_mask)
    _lengths_of_prefix_mask("p_mask", p_mask)
    b, n, lp = passages.shape
    q = question.long().masked_fill(~q_mask, -2)  # pads never match anything
    p = passages.long().masked_fill(~p_mask, _PLACEHOLDER)
    out = torch.zeros(b, n, lp, 4)
    # 1. token occurs in the question
    out[..., 0] = (p.unsqueeze(-1) == q[:, None, None, :]).any(-1).float()
    # 2. share of the other passages that contain the token
    # eq[b, e, o, i]: token i of passage e occurs in passage o
    eq = (p[:, :, None, :, None] == p[:, None, :, None, :]).any(-1)
    other = ~torch.eye(n, dtype=torch.bool)[None, :, :, None]  # o != e
    out[..., 1] = (eq & other).sum(2).float() / n
    # 3.-4. sliding windows of |Q| tokens, grouped by question length
    for m in sorted(set(q_len.tolist())):
        if m == 0:
            continue
        idx = (q_len == m).nonzero().squeeze(-1)
        qq = q[idx, :m][:, None, None, :]  # (k, 1, 1, m)
        left = m // 2
        win = F.pad(p[idx], (left, m - 1 - left), value=_PLACEHOLDER).unfold(-1, m, 1)  # (k, n, lp, m)
        q_first = _distinct_first(qq)
        inter = ((qq.unsqueeze(-1) == win.unsqueeze(-2)).any(-1) & q_first).sum(-1)
        union = _distinct_first(win).sum(-1) + q_first.sum(-1) - inter
        jac = inter.float() / union.float()
        # Levenshtein DP over the window (rows) and the question (columns), batched
        prev = torch.arange(m + 1).expand(*win.shape[:-1], m + 1)
        for i in range(1, m + 1):
            cur = [torch.full(win.shape[:-1], i)]
            for j in range(1, m + 1):
                sub = prev[..., j - 1] + (win[..., i - 1] != qq[..., j - 1]).long()
                cur.append(torch.minimum(torch.minimum(prev[..., j] + 1, cur[j - 1] + 1), sub))
            prev = torch.stack(cur, dim=-1)
        out[idx, ..., 2] = jac
        out[idx, ..., 3] = prev[..., m].float() / m
    return out * p_mask.unsqueeze(-1).float()
# --8<-- [end:features]


# ----------------------------------------------------------------------------------------------
# span scoring, decoding, voting


SPAN_SCORES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "product": lambda ps, pe: ps * pe,
    "sqrt": lambda ps, pe: torch.sqrt(ps * pe),
}
"""Registry of span scores ``f(p_start_i, p_end_j) -> score``: the article's product and the
square root of the product it compared against."""


def _check_spans(
    p_start: Tensor, p_end: Tensor, mask: Tensor | None, max_len: int, rule: str = "product"
) -> None:
    """The arguments every span function shares: two probability tensors of one shape, a mask, a length."""
    _check_probabilities(p_start, "p_start")
    if not isinstance(p_end, Tensor) or p_end.shape != p_start.shape:
        raise ValueError(f"p_end must be a tensor of p_start's shape {tuple(p_start.shape)}, got "
                         f"{tuple(p_end.shape) if isinstance(p_end, Tensor) else type(p_end).__name__}")
    _check_probabilities(p_end, "p_end")
    if mask is not None:
        _check_mask("mask", mask, tuple(p_start.shape), "p_start's")
    check_int(max_len, "max_len")
    if rule not in SPAN_SCORES:
        raise ValueError(f"rule must be one of {sorted(SPAN_SCORES)}, got {rule!r}")


def span_scores(
    p_start: Tensor, p_end: Tensor, mask: Tensor | None = None, *, max_len: int = 10, rule: str = "product"
) -> Tensor:
    r"""Scores of all spans $[i, j]$, $i \le j < i + L_{max}$, inside the mask; 0 elsewhere.

    ``rule="product"``: $s_{ij} = p^{start}_i\, p^{end}_j$ (article); ``"sqrt"``: its square root.

    Shapes:
        p_start, p_end, mask: ``(..., seq)``; output: ``(..., seq, seq)`` indexed ``[i, j]``.

    Raises:
        TypeError: If ``p_start`` or ``p_end`` is not floating, or ``mask`` is not bool.
        ValueError: On mismatched or empty shapes, probabilities outside [0, 1] (NaN and inf
            included), a non-positive ``max_len`` or an unknown ``rule``.
    """
    _check_spans(p_start, p_end, mask, max_len, rule)
    return _span_scores(p_start, p_end, mask, max_len, rule)


def _span_scores(p_start: Tensor, p_end: Tensor, mask: Tensor | None, max_len: int, rule: str) -> Tensor:
    length = p_start.shape[-1]
    i = torch.arange(length)
    band = (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_len)
    if mask is not None:
        band = band & mask.unsqueeze(-1) & mask.unsqueeze(-2)
    s = SPAN_SCORES[rule](p_start.unsqueeze(-1), p_end.unsqueeze(-2))
    return s * band.to(s.dtype)


def best_spans(
    p_start: Tensor, p_end: Tensor, mask: Tensor | None = None, *, max_len: int = 10
) -> tuple[Tensor, Tensor, Tensor]:
    """Best span of each sequence by the product score (ties: smallest start, then smallest end).

    Returns:
        ``(start, end, score)``, inclusive positions.

    Shapes:
        p_start, p_end, mask: ``(..., seq)``; each output: ``(...)``.

    Raises:
        TypeError: As [`span_scores`][kexue.dgcnn.span_scores].
        ValueError: As [`span_scores`][kexue.dgcnn.span_scores].
    """
    _check_spans(p_start, p_end, mask, max_len)
    return _best_spans(p_start, p_end, mask, max_len)


def _best_spans(p_start: Tensor, p_end: Tensor, mask: Tensor | None, max_len: int) -> tuple[Tensor, Tensor, Tensor]:
    s = _span_scores(p_start, p_end, mask, max_len, "product")
    length = s.shape[-1]
    flat = s.reshape(*s.shape[:-2], length * length)
    score, arg = flat.max(-1)
    return arg // length, arg % length, score


def extract_candidates(
    tokens: Tensor,
    p_start: Tensor,
    p_end: Tensor,
    mask: Tensor,
    *,
    max_len: int = 10,
    threshold: float = 0.1,
    rule: str = "product",
) -> list:
    """Candidate answers of one question's passages (or of a batch of questions): every span
    whose start and end probabilities exceed ``threshold``, scored by ``rule``
    ([`SPAN_SCORES`][kexue.dgcnn.SPAN_SCORES]); duplicates of a string within a passage keep the max.

    Shapes:
        tokens, p_start, p_end, mask: ``(n_passages, seq)`` for one question, output: one dict per
        passage mapping the answer's token tuple to its score; or ``(n_questions, n_passages, seq)``,
        output: one such list per question.

    Raises:
        TypeError: If ``tokens`` is not an integer tensor, and as [`span_scores`][kexue.dgcnn.span_scores].
        ValueError: If ``tokens`` is not 2-D or 3-D, the other inputs do not have its shape, or
            ``threshold`` is not in [0, 1], and as [`span_scores`][kexue.dgcnn.span_scores].
    """
    check_tensor(tokens, "tokens", (2, 3), floating=False)
    if not isinstance(p_start, Tensor) or tuple(p_start.shape) != tuple(tokens.shape):
        raise ValueError(f"p_start must be a tensor of tokens' shape {tuple(tokens.shape)}, got "
                         f"{tuple(p_start.shape) if isinstance(p_start, Tensor) else type(p_start).__name__}")
    _check_spans(p_start, p_end, _check_mask("mask", mask, tuple(tokens.shape), "tokens'"), max_len, rule)
    check_real(threshold, "threshold", at_least=0, at_most=1)
    return _extract_candidates(tokens, p_start, p_end, mask, max_len, threshold, rule)


def _extract_candidates(
    tokens: Tensor, p_start: Tensor, p_end: Tensor, mask: Tensor, max_len: int, threshold: float, rule: str
) -> list:
    s = _span_scores(p_start, p_end, mask, max_len, rule)  # (..., seq, seq), [i, j]
    ok = (p_start > threshold).unsqueeze(-1) & (p_end > threshold).unsqueeze(-2) & (s > 0)
    seq = tokens.shape[-1]
    rows = tokens.reshape(-1, seq).tolist()  # one row per passage
    flat: list[dict[tuple[int, ...], float]] = [{} for _ in rows]
    ok = ok.reshape(-1, seq, seq)
    for (r, i, j), score in zip(ok.nonzero().tolist(), s.reshape(-1, seq, seq)[ok].tolist()):
        ans = tuple(rows[r][i : j + 1])
        if score > flat[r].get(ans, -1.0):
            flat[r][ans] = score
    if tokens.dim() == 2:
        return flat
    n_passages = tokens.shape[1]
    return [flat[k * n_passages : (k + 1) * n_passages] for k in range(tokens.shape[0])]


VOTING: dict[str, Callable[[Sequence[float]], float]] = {
    "sum": lambda s: float(sum(s)),
    "max": lambda s: float(max(s)),
    "sum_sq": lambda s: float(sum(x * x for x in s)),
    "smoothed": lambda s: float(sum(x * x for x in s) / (1 + sum(s))),
}
r"""Registry of cross-passage voting rules ``f(scores of one answer) -> total``: plain ``sum`` and
``max``, the article's ``sum_sq`` $\sum_i s_i^2$ and the ``smoothed`` form it used in the contest,
$\sum_i s_i^2 / (1 + \sum_i s_i)$."""


def _check_candidates(candidates: object, rule: object) -> None:
    if rule not in VOTING:
        raise ValueError(f"rule must be one of {sorted(VOTING)}, got {rule!r}")
    if not isinstance(candidates, Sequence) or isinstance(candidates, str):
        raise TypeError(f"candidates must be a sequence of mappings answer -> score, got {type(candidates).__name__}")
    for cand in candidates:
        if not isinstance(cand, Mapping):
            raise TypeError(f"candidates must hold one mapping answer -> score per passage, got {type(cand).__name__}")
        for answer, score in cand.items():
            try:
                value = float(score)
            except (TypeError, ValueError):
                raise TypeError(f"candidates' scores must be numbers, got {score!r} for {answer!r}") from None
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"candidates' scores must be finite and >= 0, got {score!r} for {answer!r}")


# --8<-- [start:vote]
def vote(candidates: Sequence[Mapping[Hashable, float]], rule: str = "smoothed") -> dict[Hashable, float]:
    r"""Combine per-passage candidate scores into one score per answer (article, "decoding").

    ``candidates[e][a]`` is the score $s_{a,e}$ of answer $a$ in passage $e$ (already the max over
    duplicates within $e$). The total is ``VOTING[rule]`` of $(s_{a,e})_e$, e.g. for ``"smoothed"``
    $s_a = \sum_e s_{a,e}^2 / (1 + \sum_e s_{a,e})$.

    Args:
        candidates: One mapping answer -> score per passage; scores are finite and >= 0.
        rule: A key of [`VOTING`][kexue.dgcnn.VOTING].

    Returns:
        Total score of each answer.

    Raises:
        TypeError: If ``candidates`` is not a sequence of mappings or a score is not a number.
        ValueError: On an unknown ``rule`` or a negative or non-finite score.
    """
    _check_candidates(candidates, rule)
    return _vote(candidates, rule)


def _vote(candidates: Sequence[Mapping[Hashable, float]], rule: str) -> dict[Hashable, float]:
    gathered: dict[Hashable, list[float]] = {}
    for cand in candidates:
        for answer, score in cand.items():
            gathered.setdefault(answer, []).append(float(score))
    return {a: VOTING[rule](s) for a, s in gathered.items()}
# --8<-- [end:vote]


def pick_answer(candidates: Sequence[Mapping[Hashable, float]], rule: str = "smoothed") -> Hashable | None:
    """The answer with the highest [`vote`][kexue.dgcnn.vote] total (ties: first seen), or ``None`` if there is none.

    Raises:
        TypeError: As [`vote`][kexue.dgcnn.vote].
        ValueError: As [`vote`][kexue.dgcnn.vote].

    Examples:
        The article's case: one confident passage says A, four lukewarm ones say B.

        >>> candidates = [{"A": 0.7}] + [{"B": 0.2}] * 4
        >>> pick_answer(candidates, "sum"), pick_answer(candidates, "sum_sq"), pick_answer(candidates, "smoothed")
        ('B', 'A', 'A')
    """
    return _pick_answer(vote(candidates, rule))


def _pick_answer(totals: dict[Hashable, float]) -> Hashable | None:
    best, best_score = None, -math.inf
    for a, s in totals.items():
        if s > best_score:
            best, best_score = a, s
    return best


# ----------------------------------------------------------------------------------------------
# metric


def normalize_answer(text: str) -> str:
    """Sogou-eval-style normalisation: NFKC (full-width -> half-width), lowercase, no punctuation or spaces."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(c for c in text if not unicodedata.category(c).startswith(("P", "Z", "C", "S")))


def _is_one_answer(references: object) -> bool:
    """A string, or a tuple of tokens rather than of answers, is one answer, not a list of them."""
    if isinstance(references, str):
        return True
    return isinstance(references, tuple) and not all(isinstance(r, (str, tuple)) for r in references)


def answer_f1(prediction: Sequence[Hashable] | None, references: Sequence[Sequence[Hashable]]) -> float:
    r"""Overlap F1 of a predicted answer against the best-matching reference.

    Items are characters of strings (after [`normalize_answer`][kexue.dgcnn.normalize_answer]) or tokens of tuples:
    $F_1 = 2PR/(P+R)$ with $P = |\text{common}|/|\text{pred}|$, $R = |\text{common}|/|\text{ref}|$,
    common counted as a multiset. An empty or missing prediction scores 0.

    Raises:
        TypeError: If ``prediction`` is not None, a str or a sequence of tokens, or ``references``
            is not a sequence of answers (one answer, a string or a tuple of tokens, included).
    """
    _check_answer(prediction, "prediction", optional=True)
    _check_references(references)
    return _answer_f1(prediction, references)


def _check_answer(answer: object, name: str, *, optional: bool = False) -> None:
    if answer is None and optional:
        return
    if not isinstance(answer, Sequence):
        raise TypeError(f"{name} must be {'None, ' if optional else ''}a str or a sequence of tokens, "
                        f"got {type(answer).__name__}")


def _check_references(references: object, name: str = "references") -> None:
    if not isinstance(references, Sequence) or _is_one_answer(references):
        raise TypeError(f"{name} must be a sequence of answers (e.g. a list), not "
                        f"{'a single answer' if isinstance(references, (str, tuple)) else type(references).__name__}")
    for ref in references:
        _check_answer(ref, f"{name}' answers")


def _answer_f1(prediction: Sequence[Hashable] | None, references: Sequence[Sequence[Hashable]]) -> float:
    if prediction is None or len(references) == 0:
        return 0.0
    pred = normalize_answer(prediction) if isinstance(prediction, str) else prediction
    best = 0.0
    for ref in references:
        r = normalize_answer(ref) if isinstance(ref, str) else ref
        common = sum((Counter(pred) & Counter(r)).values())
        if common:
            pr, rc = common / len(pred), common / len(r)
            best = max(best, 2 * pr * rc / (pr + rc))
    return best


def sogou_score(
    predictions: Sequence[Sequence[Hashable] | None], references: Sequence[Sequence[Sequence[Hashable]]]
) -> dict[str, float]:
    """The contest's score: mean of exact-match accuracy and overlap F1 ([`answer_f1`][kexue.dgcnn.answer_f1]).

    Returns:
        ``{"accuracy": ..., "f1": ..., "score": (accuracy + f1) / 2}``.

    Raises:
        TypeError: If ``predictions`` or ``references`` is not a sequence, or an entry is not an
            answer (as [`answer_f1`][kexue.dgcnn.answer_f1]).
        ValueError: If there are no predictions or not one list of references per prediction.

    Examples:
        >>> sogou_score(["北京", "上海市"], [["北京"], ["上海", "沪"]])
        {'accuracy': 0.5, 'f1': 0.9, 'score': 0.7}
    """
    for name, value in (("predictions", predictions), ("references", references)):
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise TypeError(f"{name} must be a sequence with one entry per question, got {type(value).__name__}")
    if len(predictions) != len(references):
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) differ in length")
    if not predictions:
        raise ValueError("predictions must not be empty")
    for p, refs in zip(predictions, references):
        _check_answer(p, "predictions' entries", optional=True)
        _check_references(refs, "references' entries")

    def norm(a: Sequence[Hashable]) -> Sequence[Hashable]:
        return normalize_answer(a) if isinstance(a, str) else tuple(a)

    acc = sum(p is not None and any(norm(p) == norm(r) for r in refs) for p, refs in zip(predictions, references))
    f1 = sum(_answer_f1(p, refs) for p, refs in zip(predictions, references))
    n = len(predictions)
    return {"accuracy": acc / n, "f1": f1 / n, "score": (acc + f1) / (2 * n)}

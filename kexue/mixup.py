r"""SamplePairing and mixup: mixing training examples, and why it acts as a regulariser.

Companion to Su Jianlin, "从SamplePairing到mixup：神奇的正则项" (From SamplePairing to mixup:
a magical regulariser), [kexue.fm/archives/5693](https://kexue.fm/archives/5693), 2018-07-07.

Every batch transform ("mixer") has one signature,

    mixer(x, y, *, generator, **params) -> MixedBatch

and returns the mixed inputs together with the label information the loss needs: two label
vectors ``y_a``, ``y_b`` and the weight ``lam`` of ``y_a``. The loss is then
$\lambda\,\mathrm{CE}(p, y_a) + (1-\lambda)\,\mathrm{CE}(p, y_b)$
([`mixed_cross_entropy`][kexue.mixup.mixed_cross_entropy]), which is the cross-entropy against
the soft target $\lambda e_{y_a} + (1-\lambda) e_{y_b}$
([`soft_cross_entropy`][kexue.mixup.soft_cross_entropy] of
[`soft_targets`][kexue.mixup.soft_targets]), because cross-entropy is linear in its target.

Variants (registry [`MIXERS`][kexue.mixup.MIXERS]):

* ``"none"`` -- no mixing (empirical risk minimisation).
* ``"sample_pairing"`` -- Inoue (2018): average with a random partner, keep the first label
  (his on/off schedule: [`sample_pairing_active`][kexue.mixup.sample_pairing_active]).
* ``"sample_pairing_soft"`` -- SamplePairing in expectation: the same averaged input with the
  half-and-half label $(e_{y_a} + e_{y_b})/2$. Our variant, built from Su's symmetry argument
  (the article re-describes SamplePairing this way but does not train with it); it is mixup
  with $\lambda$ fixed at $1/2$.
* ``"mixup"`` -- Zhang et al. (2018): $\lambda \sim \mathrm{Beta}(\alpha, \alpha)$, the same
  $\lambda$ for inputs and labels.
* ``"mixup_uniform"`` -- Su's suggestion: $\lambda \sim U[0, 1]$ (= Beta(1, 1)), no hyper-parameter.

Plus the diagnostic [`linearity_gap`][kexue.mixup.linearity_gap]: how far a model is from
commuting with mixing, the quantity Su's argument says mixup makes small. Training loops,
evaluation and calibration live in [`kexue.experiments.mixup`][kexue.experiments.mixup].

Examples:
    >>> import torch
    >>> from kexue.mixup import MIXERS, linearity_gap, mixed_cross_entropy
    >>> gen = torch.Generator().manual_seed(0)
    >>> x, y = torch.rand(8, 64, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    >>> batch = MIXERS["mixup_uniform"](x, y, generator=gen)
    >>> batch.x.shape, batch.lam.unique().numel()  # one lambda for the whole batch
    (torch.Size([8, 64]), 1)
    >>> loss = mixed_cross_entropy(torch.zeros(8, 10), batch.y_a, batch.y_b, batch.lam)
    >>> round(loss.item(), 4)  # uniform predictions: log 10 whatever the targets
    2.3026
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kexue._checks import check_generator, check_int, check_real

__all__ = [
    "MixedBatch",
    "MIXERS",
    "sample_lambda",
    "mix_inputs",
    "no_mixing",
    "sample_pairing",
    "sample_pairing_soft",
    "mixup",
    "mixup_uniform",
    "sample_pairing_active",
    "soft_targets",
    "mixed_cross_entropy",
    "soft_cross_entropy",
    "linearity_gap",
    "linearity_gap_reference",
]


@dataclass(frozen=True)
class MixedBatch:
    """A mixed batch and the label information its loss needs.

    Attributes:
        x: Mixed inputs.
        y_a: Integer class labels of the first sample of each pair.
        y_b: Integer class labels of the partner of each sample.
        lam: Weight of ``y_a`` in the target (``1 - lam`` goes to ``y_b``).
        index: Partner of each sample: row ``i`` was mixed with row ``index[i]`` of the input batch.

    Shapes:
        x: ``(B, ...)``; y_a, y_b, index: ``(B,)`` int64; lam: ``(B,)`` floating.
    """

    x: torch.Tensor
    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: torch.Tensor
    index: torch.Tensor


# ----------------------------------------------------------------------------- checks


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (convert integer images first), got "
                        f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have a non-empty batch dimension, got shape {tuple(x.shape)}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.dim() != 1:
        raise TypeError(f"y must be a 1-D int64 tensor of class labels, got "
                        f"{(y.dtype, tuple(y.shape)) if isinstance(y, torch.Tensor) else type(y).__name__}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got x: {x.shape[0]} and y: {y.shape[0]}")


def _check_alpha(alpha: float) -> None:
    check_real(alpha, "alpha", above=0, hint=" (use the 'none' mixer to switch mixing off)")


# ----------------------------------------------------------------------------- sampling


# --8<-- [start:sample_lambda]
def sample_lambda(
    alpha: float, size: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    r"""Draw mixing weights $\lambda \sim \mathrm{Beta}(\alpha, \alpha)$ by inverting the CDF.

    One uniform number per draw comes from ``generator``; the Beta quantile is computed in
    float64 with SciPy's regularised incomplete beta inverse, so the draws are exact up to
    float64 rounding and reproducible. $\alpha = 1$ is the uniform distribution on $[0, 1]$
    (Su's suggestion); small $\alpha$ (0.2 in the mixup paper's ImageNet runs) piles the mass
    near 0 and 1. $\mathbb E\lambda = 1/2$, $\operatorname{Var}\lambda = 1/(4(2\alpha + 1))$.

    Args:
        alpha: Concentration $\alpha > 0$ of the symmetric Beta distribution.
        size: Number of draws (>= 0).
        generator: Source of randomness.
        dtype: Floating dtype of the result.

    Returns:
        The draws.

    Shapes:
        output: ``(size,)``.

    Raises:
        ValueError: If ``alpha`` is not a finite positive number or ``size`` is negative.
        TypeError: If ``generator`` is not a ``torch.Generator`` or ``dtype`` is not floating.

    Examples:
        >>> import torch
        >>> lam = sample_lambda(0.2, 10_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> round(lam.mean().item(), 2), round(lam.var().item(), 2)  # exact: 0.5 and 1/(4 * 1.4) = 0.18
        (0.5, 0.18)
    """
    _check_alpha(alpha)
    check_generator(generator)
    check_int(size, "size", 0)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    u = torch.rand(size, generator=generator, dtype=torch.float64)
    if alpha == 1:
        return u.to(dtype)
    from scipy.special import betaincinv

    lam = torch.from_numpy(betaincinv(float(alpha), float(alpha), u.numpy()))
    return lam.to(dtype)
# --8<-- [end:sample_lambda]


def _partner(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random partner for each row: a uniform permutation (a row may be paired with itself)."""
    return torch.randperm(n, generator=generator)


# --8<-- [start:mix_inputs]
def mix_inputs(x: torch.Tensor, index: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    r"""Mix each sample with its partner: $\tilde x_i = \lambda_i x_i + (1 - \lambda_i) x_{\pi(i)}$.

    Args:
        x: Inputs.
        index: Partner $\pi(i)$ of each row.
        lam: Weight of the row itself, a scalar or one value per row.

    Returns:
        The mixed inputs.

    Shapes:
        x: ``(B, ...)``; index: ``(B,)`` int64; lam: ``()`` or ``(B,)``; output: like ``x``.

    Raises:
        ValueError: If ``index`` or ``lam`` does not match the batch size.
    """
    if index.dim() != 1 or index.shape[0] != x.shape[0]:
        raise ValueError(f"index must have shape ({x.shape[0]},), got {tuple(index.shape)}")
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    if lam.dim() == 1 and lam.shape[0] != x.shape[0]:
        raise ValueError(f"lam must be a scalar or have shape ({x.shape[0]},), got {tuple(lam.shape)}")
    if lam.dim() > 1:
        raise ValueError(f"lam must be a scalar or 1-D, got shape {tuple(lam.shape)}")
    lam = lam.reshape(-1, *([1] * (x.dim() - 1))) if lam.dim() == 1 else lam
    return lam * x + (1 - lam) * x[index]
# --8<-- [end:mix_inputs]


# ----------------------------------------------------------------------------- the mixers


def no_mixing(x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator) -> MixedBatch:
    """Empirical risk minimisation: the batch unchanged (``lam = 1``, each row its own partner).

    Args:
        x: Inputs.
        y: Class labels.
        generator: Unused (kept for the common signature).

    Returns:
        The batch as a [`MixedBatch`][kexue.mixup.MixedBatch].

    Shapes:
        x: ``(B, ...)``; y: ``(B,)`` int64.
    """
    _check_batch(x, y)
    check_generator(generator)
    index = torch.arange(x.shape[0], device=x.device)
    return MixedBatch(x, y, y, torch.ones(x.shape[0], dtype=x.dtype, device=x.device), index)


# --8<-- [start:sample_pairing]
def sample_pairing(x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator) -> MixedBatch:
    r"""SamplePairing: average each sample with a random partner and keep the sample's own label.

    $$\tilde x = \tfrac12 (x_a + x_b), \qquad \tilde y = y_a .$$

    Partners come from a uniform random permutation of the batch (so $\tilde x$ for the pair
    $(a, b)$ also appears, with label $y_b$, whenever $b$ draws $a$; in expectation the label of
    an averaged pair is $(y_a + y_b)/2$ -- see [`sample_pairing_soft`][kexue.mixup.sample_pairing_soft]).
    Source: H. Inoue, "Data Augmentation by Pairing Samples for Images Classification", 2018.

    Args:
        x: Inputs (floating).
        y: Class labels.
        generator: Source of the pairing.

    Returns:
        Mixed inputs with ``lam = 1`` (the target is ``y_a`` only).

    Shapes:
        x: ``(B, ...)``; y: ``(B,)`` int64.

    Raises:
        ValueError: If the batch is empty or ``x`` and ``y`` differ in batch size.
        TypeError: If ``x`` is not floating, ``y`` not int64 or ``generator`` not a generator.

    Examples:
        >>> import torch
        >>> x, y = torch.tensor([[0.0], [2.0], [4.0]]), torch.tensor([0, 1, 2])
        >>> b = sample_pairing(x, y, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(b.x, (x + x[b.index]) / 2), torch.equal(b.y_a, y), b.lam.tolist()
        (True, True, [1.0, 1.0, 1.0])
    """
    _check_batch(x, y)
    check_generator(generator)
    index = _partner(x.shape[0], generator)
    x_mixed = mix_inputs(x, index, 0.5)
    lam = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    return MixedBatch(x_mixed, y, y[index], lam, index)
# --8<-- [end:sample_pairing]


def sample_pairing_soft(x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator) -> MixedBatch:
    r"""SamplePairing in expectation: the averaged input with the half-and-half label $(y_a + y_b)/2$.

    $$\tilde x = \tfrac12 (x_a + x_b), \qquad \tilde y = \tfrac12 (y_a + y_b)$$

    (one-hot labels). Our variant, built from Su's symmetry argument: averaged over which of the
    two images is "first", SamplePairing's label is this soft label. The article uses that
    reading to move on to mixup; it does not propose training with it. It is the mixup rule with
    $\lambda$ fixed at $1/2$. Same pairing draws as [`sample_pairing`][kexue.mixup.sample_pairing]
    for the same generator state, so the two differ only in the label.

    Args:
        x: Inputs (floating).
        y: Class labels.
        generator: Source of the pairing.

    Returns:
        Mixed inputs with ``lam = 1/2``.

    Shapes:
        x: ``(B, ...)``; y: ``(B,)`` int64.

    Raises:
        ValueError: If the batch is empty or ``x`` and ``y`` differ in batch size.
        TypeError: If ``x`` is not floating, ``y`` not int64 or ``generator`` not a generator.
    """
    mb = sample_pairing(x, y, generator=generator)
    return MixedBatch(mb.x, mb.y_a, mb.y_b, torch.full_like(mb.lam, 0.5), mb.index)


# --8<-- [start:mixup]
def mixup(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    generator: torch.Generator,
    alpha: float = 1.0,
    per_sample: bool = False,
) -> MixedBatch:
    r"""mixup: interpolate inputs and one-hot labels with the same random weight.

    $$\lambda \sim \mathrm{Beta}(\alpha, \alpha), \qquad
    \tilde x = \lambda x_a + (1 - \lambda) x_b, \qquad \tilde y = \lambda y_a + (1 - \lambda) y_b .$$

    As in the reference CIFAR code, one $\lambda$ serves the whole batch and partners are a
    random permutation of the batch; ``per_sample=True`` draws one $\lambda$ per row (as
    kornia's ``RandomMixUpV2`` does). Source: H. Zhang, M. Cisse, Y. N. Dauphin, D. Lopez-Paz,
    "mixup: Beyond Empirical Risk Minimization", ICLR 2018.

    Args:
        x: Inputs (floating).
        y: Class labels.
        generator: Source of the pairing and of $\lambda$ (pairing is drawn first).
        alpha: Concentration $\alpha > 0$; $\alpha = 1$ is the uniform distribution.
        per_sample: One $\lambda$ per row instead of one per batch.

    Returns:
        Mixed inputs and the label information, ``lam`` broadcast to ``(B,)``.

    Shapes:
        x: ``(B, ...)``; y: ``(B,)`` int64.

    Raises:
        ValueError: If ``alpha <= 0``, the batch is empty or ``x`` and ``y`` differ in batch size.
        TypeError: If ``x`` is not floating, ``y`` not int64 or ``generator`` not a generator.

    Examples:
        >>> import torch
        >>> x, y = torch.eye(4), torch.arange(4)
        >>> b = mixup(x, y, generator=torch.Generator().manual_seed(0), alpha=0.4)
        >>> lam = b.lam[0]
        >>> torch.allclose(b.x, lam * x + (1 - lam) * x[b.index]), torch.equal(b.y_b, y[b.index])
        (True, True)
    """
    _check_batch(x, y)
    check_generator(generator)
    _check_alpha(alpha)
    n = x.shape[0]
    index = _partner(n, generator)
    lam = sample_lambda(alpha, n if per_sample else 1, generator=generator, dtype=x.dtype)
    lam = lam.to(x.device).expand(n).contiguous()
    return MixedBatch(mix_inputs(x, index, lam), y, y[index], lam, index)
# --8<-- [end:mixup]


def mixup_uniform(
    x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator, per_sample: bool = False
) -> MixedBatch:
    r"""Su's mixup variant: $\lambda \sim U[0, 1]$ (that is, $\alpha = 1$), no hyper-parameter.

    Identical to ``mixup(x, y, generator=generator, alpha=1.0, per_sample=per_sample)``.

    Args:
        x: Inputs (floating).
        y: Class labels.
        generator: Source of the pairing and of $\lambda$.
        per_sample: One $\lambda$ per row instead of one per batch.

    Returns:
        Mixed inputs and the label information.

    Shapes:
        x: ``(B, ...)``; y: ``(B,)`` int64.

    Raises:
        ValueError: If the batch is empty or ``x`` and ``y`` differ in batch size.
        TypeError: If ``x`` is not floating, ``y`` not int64 or ``generator`` not a generator.
    """
    return mixup(x, y, generator=generator, alpha=1.0, per_sample=per_sample)


MIXERS: dict[str, Callable[..., MixedBatch]] = {
    "none": no_mixing,
    "sample_pairing": sample_pairing,
    "sample_pairing_soft": sample_pairing_soft,
    "mixup": mixup,
    "mixup_uniform": mixup_uniform,
}
"""Batch transforms by name, all with the signature ``f(x, y, *, generator, **params) -> MixedBatch``
(``params``: ``alpha`` and ``per_sample`` for ``"mixup"``, ``per_sample`` for ``"mixup_uniform"``)."""


def sample_pairing_active(epoch: int, *, start: int, end: int, on: int, off: int) -> bool:
    """Inoue's SamplePairing schedule: off before ``start``, then ``on`` epochs on / ``off`` epochs off, off from ``end``.

    The paper trains without mixing first, then alternates (8 epochs on, 2 off in its ILSVRC and
    CIFAR runs, from epoch 100 to 800 in the torchbearer port of the policy), and finishes with
    mixing switched off to fine-tune. Scale the numbers to the length of your run.

    Args:
        epoch: Current epoch, counted from 0.
        start: First epoch that may mix.
        end: First epoch of the final phase without mixing (>= start).
        on: Length of an "on" phase (>= 1).
        off: Length of an "off" phase (>= 0).

    Returns:
        Whether SamplePairing is applied in ``epoch``.

    Raises:
        ValueError: If an argument is negative or ``end < start`` or ``on < 1``.
    """
    for name, value in (("epoch", epoch), ("start", start), ("end", end), ("off", off)):
        check_int(value, name, 0)
    check_int(on, "on")
    if end < start:
        raise ValueError(f"end must be >= start, got start={start}, end={end}")
    if not start <= epoch < end:
        return False
    return (epoch - start) % (on + off) < on


# ----------------------------------------------------------------------------- losses


def soft_targets(y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor, num_classes: int) -> torch.Tensor:
    r"""The mixed one-hot target $\lambda\, e_{y_a} + (1 - \lambda)\, e_{y_b}$.

    Args:
        y_a: First labels.
        y_b: Partner labels.
        lam: Weight of ``y_a`` (scalar or per row).
        num_classes: Number of classes $K$.

    Returns:
        Soft targets whose rows sum to 1.

    Shapes:
        y_a, y_b: ``(B,)`` int64; lam: ``()`` or ``(B,)``; output: ``(B, K)``.

    Raises:
        ValueError: If ``num_classes`` is not positive or the shapes disagree.
    """
    check_int(num_classes, "num_classes")
    if y_a.shape != y_b.shape or y_a.dim() != 1:
        raise ValueError(f"y_a and y_b must be 1-D of equal shape, got {tuple(y_a.shape)} and {tuple(y_b.shape)}")
    lam = torch.as_tensor(lam)
    dtype = lam.dtype if lam.is_floating_point() else torch.get_default_dtype()
    lam = lam.to(dtype).reshape(-1, 1) if lam.dim() == 1 else lam.to(dtype)
    return lam * F.one_hot(y_a, num_classes).to(dtype) + (1 - lam) * F.one_hot(y_b, num_classes).to(dtype)


# --8<-- [start:losses]
def mixed_cross_entropy(
    logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor | float
) -> torch.Tensor:
    r"""The mixup loss as two hard-label terms: $\lambda\,\mathrm{CE}(p, y_a) + (1-\lambda)\,\mathrm{CE}(p, y_b)$.

    Averaged over the batch. Equals [`soft_cross_entropy`][kexue.mixup.soft_cross_entropy] against [`soft_targets`][kexue.mixup.soft_targets]
    because cross-entropy $-\sum_k t_k \log p_k$ is linear in the target $t$.

    Args:
        logits: Unnormalised class scores.
        y_a: First labels.
        y_b: Partner labels.
        lam: Weight of ``y_a`` (scalar or per row).

    Returns:
        Scalar loss.

    Shapes:
        logits: ``(B, K)``; y_a, y_b: ``(B,)`` int64; lam: ``()`` or ``(B,)``.

    Raises:
        ValueError: If the shapes disagree.
    """
    if logits.dim() != 2 or y_a.shape != (logits.shape[0],) or y_b.shape != y_a.shape:
        raise ValueError(f"logits must be (B, K) with y_a, y_b of shape (B,), got logits {tuple(logits.shape)}, "
                         f"y_a {tuple(y_a.shape)}, y_b {tuple(y_b.shape)}")
    lam = torch.as_tensor(lam, dtype=logits.dtype, device=logits.device)
    ce_a = F.cross_entropy(logits, y_a, reduction="none")
    ce_b = F.cross_entropy(logits, y_b, reduction="none")
    return (lam * ce_a + (1 - lam) * ce_b).mean()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Cross-entropy against soft targets, $-\frac1B \sum_i \sum_k t_{ik} \log \mathrm{softmax}(z_i)_k$.

    Args:
        logits: Unnormalised class scores $z$.
        targets: Target distributions $t$ (rows summing to 1).

    Returns:
        Scalar loss.

    Shapes:
        logits, targets: ``(B, K)``.

    Raises:
        ValueError: If the shapes differ or are not 2-D.
    """
    if logits.dim() != 2 or targets.shape != logits.shape:
        raise ValueError(f"logits and targets must both be (B, K), got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(-1).mean()
# --8<-- [end:losses]


# ----------------------------------------------------------------------------- diagnostics


# --8<-- [start:linearity_gap]
def linearity_gap(
    f: Callable[[torch.Tensor], torch.Tensor],
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    lam: torch.Tensor | float,
) -> torch.Tensor:
    r"""How far ``f`` is from commuting with mixing, per pair of inputs.

    $$G_i(\lambda) = \big\| f(\lambda x_{a,i} + (1-\lambda) x_{b,i})
      - \lambda f(x_{a,i}) - (1 - \lambda) f(x_{b,i}) \big\|_1 .$$

    Zero for every $\lambda$ exactly when ``f`` is affine along the segment; always zero at
    $\lambda \in \{0, 1\}$. Su's argument predicts that mixup-trained models have a smaller gap.
    Our diagnostic (the article states the functional equation, not this measurement). On
    probabilities it also shrinks when a model is merely less confident (a constant has no
    gap), so compare models at equal confidence.

    Args:
        f: The model, mapping a batch of inputs to a batch of outputs (e.g. class probabilities).
        x_a: First inputs.
        x_b: Second inputs.
        lam: Mixing weight, a scalar or one per pair.

    Returns:
        The gap of every pair.

    Shapes:
        x_a, x_b: ``(B, ...)``; lam: ``()`` or ``(B,)``; output: ``(B,)``.

    Raises:
        ValueError: If ``x_a`` and ``x_b`` differ in shape or ``lam`` has the wrong shape.

    Examples:
        >>> import torch
        >>> x_a, x_b = torch.zeros(1, 1), torch.ones(1, 1)
        >>> linearity_gap(lambda x: 3 * x + 1, x_a, x_b, 0.5)  # affine: no gap
        tensor([0.])
        >>> linearity_gap(torch.square, x_a, x_b, 0.5)  # |1/4 - 1/2|
        tensor([0.2500])
    """
    if x_a.shape != x_b.shape or x_a.dim() < 1:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    n = x_a.shape[0]
    lam = torch.as_tensor(lam, dtype=x_a.dtype, device=x_a.device)
    if lam.dim() > 1 or (lam.dim() == 1 and lam.shape[0] != n):
        raise ValueError(f"lam must be a scalar or have shape ({n},), got {tuple(lam.shape)}")
    lam_x = lam.reshape(-1, *([1] * (x_a.dim() - 1))) if lam.dim() == 1 else lam
    out = f(torch.cat([lam_x * x_a + (1 - lam_x) * x_b, x_a, x_b]))
    f_mix, f_a, f_b = out[:n], out[n : 2 * n], out[2 * n :]
    lam_f = lam.to(out.dtype).reshape(-1, *([1] * (out.dim() - 1))) if lam.dim() == 1 else lam.to(out.dtype)
    return (f_mix - lam_f * f_a - (1 - lam_f) * f_b).abs().reshape(n, -1).sum(-1)
# --8<-- [end:linearity_gap]


def linearity_gap_reference(
    f: Callable[[torch.Tensor], torch.Tensor],
    x_a: torch.Tensor,
    x_b: torch.Tensor,
    lam: torch.Tensor | float,
) -> torch.Tensor:
    """Slow, obvious version of [`linearity_gap`][kexue.mixup.linearity_gap]: one pair at a time, one model call per point.

    Args:
        f: The model.
        x_a: First inputs.
        x_b: Second inputs.
        lam: Mixing weight, a scalar or one per pair.

    Returns:
        The gap of every pair.

    Shapes:
        x_a, x_b: ``(B, ...)``; lam: ``()`` or ``(B,)``; output: ``(B,)``.
    """
    n = x_a.shape[0]
    lam = torch.as_tensor(lam, dtype=x_a.dtype).expand(n)
    gaps = []
    for i in range(n):
        li = float(lam[i])
        xa, xb = x_a[i : i + 1], x_b[i : i + 1]
        diff = f(li * xa + (1 - li) * xb) - li * f(xa) - (1 - li) * f(xb)
        gaps.append(sum(abs(float(v)) for v in diff.flatten()))
    return torch.tensor(gaps, dtype=torch.float64)

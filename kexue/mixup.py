r"""SamplePairing and mixup: mixing training examples, and why it acts as a regulariser.

Companion to Su Jianlin, "从SamplePairing到mixup：神奇的正则项" (From SamplePairing to mixup:
a magical regulariser), [kexue.fm/archives/5693](https://kexue.fm/archives/5693), 2018-07-07.

Every batch transform ("mixer") has one signature,

    mixer(x, y, *, generator, **params) -> MixedBatch

and returns the mixed inputs together with the label information the loss needs: two label
vectors ``y_a``, ``y_b`` and the weight ``lam`` of ``y_a``. A mixer checks the types and batch
sizes of ``x`` and ``y``; the labels pass through, and the loss, which knows the number of
classes, checks their range. The loss is then
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


def _check_inputs(x: object, name: str) -> torch.Tensor:
    """A floating tensor with a non-empty batch dimension (integer images must be converted first)."""
    check_tensor(x, name, floating=True)
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must have a non-empty batch dimension, got shape {tuple(x.shape)}")
    return x


def _check_labels(y: object, name: str, num_classes: int | None = None) -> torch.Tensor:
    """A 1-D int64 tensor of class labels; with ``num_classes``, every label in ``[0, num_classes)``."""
    check_tensor(y, name, 1, floating=False)
    if y.dtype != torch.int64:
        raise TypeError(f"{name} must be an int64 tensor of class labels, got {y.dtype}")
    if num_classes is not None and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must hold class labels in [0, {num_classes}), got labels from {lo} to {hi}")
    return y


def _check_batch(x: object, y: object, names: tuple[str, str] = ("x", "y")) -> None:
    """Inputs and labels of one batch, as every mixer takes them (the label range is the loss's business)."""
    _check_inputs(x, names[0])
    _check_labels(y, names[1])
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same batch size, got {names[0]}: {x.shape[0]} "
                         f"and {names[1]}: {y.shape[0]}")


def _check_lam(
    lam: object, n: int, dtype: torch.dtype | None, device: torch.device | None = None, name: str = "lam"
) -> torch.Tensor:
    """A mixing weight in [0, 1], a number or a floating tensor of shape ``()`` or ``(n,)``, as a tensor.

    A tensor is converted to ``dtype`` (its own dtype if None), a number to ``dtype`` (the default
    dtype if None).
    """
    if isinstance(lam, torch.Tensor):
        if not lam.is_floating_point():
            raise TypeError(f"{name} must be a number or a floating-point tensor, got {lam.dtype}")
        if lam.dim() > 1 or (lam.dim() == 1 and lam.shape[0] != n):
            raise ValueError(f"{name} must be a scalar or have shape ({n},), got shape {tuple(lam.shape)}")
        if not bool(((lam >= 0) & (lam <= 1)).all()):
            raise ValueError(f"{name} must lie in [0, 1], got values from {lam.min().item()} to {lam.max().item()}")
        return lam.to(dtype=dtype if dtype is not None else lam.dtype, device=device if device is not None else lam.device)
    if not isinstance(lam, (int, float)) or isinstance(lam, bool):
        raise TypeError(f"{name} must be a number in [0, 1] or a floating-point tensor, got {type(lam).__name__}")
    check_real(lam, name, at_least=0, at_most=1)
    return torch.as_tensor(lam, dtype=dtype if dtype is not None else torch.get_default_dtype(), device=device)


def _check_partners(index: object, n: int) -> torch.Tensor:
    """Row numbers ``(n,)`` of a batch of ``n`` rows (a bool mask or a negative number is not a partner)."""
    check_tensor(index, "index", 1, floating=False)
    if index.dtype == torch.bool or index.shape[0] != n:
        raise ValueError(f"index must hold one row number of x per row ({n},), got {index.dtype} of shape "
                         f"{tuple(index.shape)}")
    lo, hi = int(index.min()), int(index.max())
    if lo < 0 or hi >= n:
        raise ValueError(f"index must hold row numbers of x in [0, {n}), got {lo} to {hi}")
    return index


def _check_logits(logits: object, n: int | None = None) -> torch.Tensor:
    """Class scores ``(B, K)``: no NaN and no ``+inf`` (a ``-inf`` logit masks its class)."""
    check_tensor(logits, "logits", 2, floating=True, nonempty=True)
    if n is not None and logits.shape[0] != n:
        raise ValueError(f"logits must have one row per label ({n}), got shape {tuple(logits.shape)}")
    if bool((torch.isnan(logits) | (logits == float("inf"))).any()):
        raise ValueError("logits must not contain NaN or +inf (a -inf logit masks its class)")
    return logits


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
    check_floating_dtype(dtype)
    return _sample_lambda(alpha, size, generator, dtype)


def _sample_lambda(alpha: float, size: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Unchecked core of [`sample_lambda`][kexue.mixup.sample_lambda] (the mixers call it directly)."""
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

    Mixing is elementwise: NaN and inf entries of ``x`` propagate as in torch.

    Args:
        x: Inputs (floating; convert integer images first, since a weight cast to an integer
            dtype would be 0 or 1).
        index: Partner $\pi(i)$ of each row, a row number of ``x``.
        lam: Weight of the row itself in $[0, 1]$, a number or one value per row.

    Returns:
        The mixed inputs.

    Shapes:
        x: ``(B, ...)``; index: ``(B,)`` int64; lam: ``()`` or ``(B,)``; output: like ``x``.

    Raises:
        TypeError: If ``x`` is not floating, ``index`` not an integer tensor or ``lam`` neither a
            number nor a floating tensor.
        ValueError: If ``index`` or ``lam`` does not match the batch size, an index is not a row
            of ``x`` or a weight lies outside $[0, 1]$.
    """
    _check_inputs(x, "x")
    _check_partners(index, x.shape[0])
    return _mix_inputs(x, index, _check_lam(lam, x.shape[0], x.dtype, x.device))


def _mix_inputs(x: torch.Tensor, index: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """Unchecked core of [`mix_inputs`][kexue.mixup.mix_inputs]; ``lam`` a number or a tensor of ``x``'s dtype."""
    if isinstance(lam, torch.Tensor) and lam.dim() == 1:
        lam = lam.reshape(-1, *([1] * (x.dim() - 1)))
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
    x_mixed = _mix_inputs(x, index, 0.5)
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
    check_bool(per_sample, "per_sample")
    n = x.shape[0]
    index = _partner(n, generator)
    lam = _sample_lambda(alpha, n if per_sample else 1, generator, x.dtype)
    lam = lam.to(x.device).expand(n).contiguous()
    return MixedBatch(_mix_inputs(x, index, lam), y, y[index], lam, index)
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
        Soft targets whose rows sum to 1, in ``lam``'s dtype (the default dtype for a number).

    Shapes:
        y_a, y_b: ``(B,)`` int64; lam: ``()`` or ``(B,)``; output: ``(B, K)``.

    Raises:
        TypeError: If a label tensor is not int64 or ``lam`` is neither a number nor a floating tensor.
        ValueError: If ``num_classes`` is not positive, a label is outside ``[0, num_classes)``,
            the shapes disagree or ``lam`` lies outside $[0, 1]$.
    """
    check_int(num_classes, "num_classes")
    _check_labels(y_a, "y_a", num_classes)
    _check_labels(y_b, "y_b", num_classes)
    if y_a.shape != y_b.shape:
        raise ValueError(f"y_a and y_b must have the same shape, got {tuple(y_a.shape)} and {tuple(y_b.shape)}")
    lam = _check_lam(lam, y_a.shape[0], None)
    dtype = lam.dtype
    lam = lam.reshape(-1, 1) if lam.dim() == 1 else lam
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
        Scalar loss: ``+inf`` when a label with positive weight has the logit ``-inf`` (its
        probability is 0), finite otherwise.

    Shapes:
        logits: ``(B, K)``; y_a, y_b: ``(B,)`` int64; lam: ``()`` or ``(B,)``.

    Raises:
        TypeError: For a non-floating ``logits``, labels that are not int64, or a ``lam`` that is
            neither a number nor a floating tensor.
        ValueError: If the shapes disagree, the batch is empty, ``logits`` holds NaN or ``+inf``,
            a label is outside ``[0, K)`` or ``lam`` lies outside $[0, 1]$.
    """
    lam = _check_mixed_loss_inputs(logits, y_a, y_b, lam)
    ce_a = F.cross_entropy(logits, y_a, reduction="none")
    ce_b = F.cross_entropy(logits, y_b, reduction="none")
    return (lam * ce_a + (1 - lam) * ce_b).mean()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    r"""Cross-entropy against soft targets, $-\frac1B \sum_i \sum_k t_{ik} \log \mathrm{softmax}(z_i)_k$.

    A class with target 0 contributes 0 even where its logit is ``-inf`` (a masked class), as in
    the two-term [`mixed_cross_entropy`][kexue.mixup.mixed_cross_entropy]; a positive target on a
    ``-inf`` logit gives ``+inf``, the true value.

    Args:
        logits: Unnormalised class scores $z$ (no NaN, no ``+inf``; ``-inf`` masks a class).
        targets: Target distributions $t$: entries in $[0, 1]$, rows summing to 1 (within 1e-3).

    Returns:
        Scalar loss.

    Shapes:
        logits, targets: ``(B, K)``.

    Raises:
        TypeError: If ``logits`` or ``targets`` is not a floating tensor.
        ValueError: If the shapes differ or are not 2-D, the batch is empty, ``logits`` holds NaN or
            ``+inf``, or a row of ``targets`` is not a distribution.
    """
    _check_soft_loss_inputs(logits, targets)
    log_p = F.log_softmax(logits, dim=-1).masked_fill(targets == 0, 0.0)  # 0 * log 0 = 0 for a masked class
    return -(targets.to(logits.dtype) * log_p).sum(-1).mean()
# --8<-- [end:losses]


def _check_mixed_loss_inputs(logits: object, y_a: object, y_b: object, lam: object) -> torch.Tensor:
    """Arguments of [`mixed_cross_entropy`][kexue.mixup.mixed_cross_entropy]; returns ``lam`` as a tensor."""
    _check_logits(logits)
    n, k = logits.shape
    for name, y in (("y_a", y_a), ("y_b", y_b)):
        _check_labels(y, name, k)
        if y.shape[0] != n:
            raise ValueError(f"{name} must have one label per row of logits ({n}), got shape {tuple(y.shape)}")
    return _check_lam(lam, n, logits.dtype, logits.device)


def _check_soft_loss_inputs(logits: object, targets: object) -> None:
    """Arguments of [`soft_cross_entropy`][kexue.mixup.soft_cross_entropy]: logits, and one distribution per row."""
    _check_logits(logits)
    check_tensor(targets, "targets", 2, floating=True)
    if targets.shape != logits.shape:
        raise ValueError(f"targets must have the shape of logits {tuple(logits.shape)}, got {tuple(targets.shape)}")
    check_finite(targets, "targets")
    sums = targets.sum(-1, dtype=torch.float64)
    if not bool(((targets >= 0) & (targets <= 1)).all()) or not bool(((sums - 1).abs() <= 1e-3).all()):
        raise ValueError("targets must hold distributions: entries in [0, 1], rows summing to 1, got entries "
                         f"from {targets.min().item():.4g} to {targets.max().item():.4g} and row sums from "
                         f"{sums.min().item():.6g} to {sums.max().item():.6g}")


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
        x_a: First inputs (floating, finite).
        x_b: Second inputs.
        lam: Mixing weight in $[0, 1]$, a number or one per pair.

    Returns:
        The gap of every pair.

    Shapes:
        x_a, x_b: ``(B, ...)``; lam: ``()`` or ``(B,)``; output: ``(B,)``.

    Raises:
        TypeError: If ``f`` is not callable, an input is not a floating tensor or ``lam`` is
            neither a number nor a floating tensor.
        ValueError: If ``x_a`` and ``x_b`` differ in shape, are empty or hold NaN/inf, ``lam``
            has the wrong shape or lies outside $[0, 1]$, or ``f`` does not return one output per input.

    Examples:
        >>> import torch
        >>> x_a, x_b = torch.zeros(1, 1), torch.ones(1, 1)
        >>> linearity_gap(lambda x: 3 * x + 1, x_a, x_b, 0.5)  # affine: no gap
        tensor([0.])
        >>> linearity_gap(torch.square, x_a, x_b, 0.5)  # |1/4 - 1/2|
        tensor([0.2500])
    """
    lam = _check_gap_inputs(f, x_a, x_b, lam)
    n = x_a.shape[0]
    lam_x = lam.reshape(-1, *([1] * (x_a.dim() - 1))) if lam.dim() == 1 else lam
    out = _check_outputs(f(torch.cat([lam_x * x_a + (1 - lam_x) * x_b, x_a, x_b])), 3 * n)
    f_mix, f_a, f_b = out[:n], out[n : 2 * n], out[2 * n :]
    lam_f = lam.to(out.dtype).reshape(-1, *([1] * (out.dim() - 1))) if lam.dim() == 1 else lam.to(out.dtype)
    return (f_mix - lam_f * f_a - (1 - lam_f) * f_b).abs().reshape(n, -1).sum(-1)
# --8<-- [end:linearity_gap]


def _check_outputs(out: object, m: int) -> torch.Tensor:
    """The model's answer to a batch of ``m`` inputs: a tensor with ``m`` rows."""
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != m:
        raise ValueError(f"f must map a batch of {m} inputs to {m} outputs, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return out


def _check_gap_inputs(f: object, x_a: object, x_b: object, lam: object) -> torch.Tensor:
    """Arguments of the two linearity-gap functions; returns ``lam`` as a tensor of ``x_a``'s dtype."""
    if not callable(f):
        raise TypeError(f"f must be callable (a model), got {type(f).__name__}")
    _check_inputs(x_a, "x_a")
    check_tensor(x_b, "x_b", floating=True)
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape (one pair per row), got {tuple(x_a.shape)} "
                         f"and {tuple(x_b.shape)}")
    check_finite(x_a, "x_a")
    check_finite(x_b, "x_b")
    return _check_lam(lam, x_a.shape[0], x_a.dtype, x_a.device)


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

    Raises:
        TypeError: If ``f`` is not callable, an input is not a floating tensor or ``lam`` is
            neither a number nor a floating tensor.
        ValueError: If ``x_a`` and ``x_b`` differ in shape (an unmatched row would get a gap of
            0), are empty or hold NaN/inf, or ``lam`` has the wrong shape or lies outside $[0, 1]$.
    """
    lam = _check_gap_inputs(f, x_a, x_b, lam)
    n = x_a.shape[0]
    lam = lam.expand(n)
    gaps = []
    for i in range(n):
        li = float(lam[i])
        xa, xb = x_a[i : i + 1], x_b[i : i + 1]
        with torch.no_grad():  # the gaps are plain numbers: no graph through a model's parameters
            diff = f(li * xa + (1 - li) * xb) - li * f(xa) - (1 - li) * f(xb)
        gaps.append(sum(abs(float(v)) for v in diff.flatten()))
    return torch.tensor(gaps, dtype=torch.float64)

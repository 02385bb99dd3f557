r"""What the RealNVP/Glow page needs beyond the article's layers: baselines, a toy model, training.

The layers and the Glow model live in [`kexue.flow`][kexue.flow]. This module holds what only the
page [RealNVP and Glow](../articles/realnvp-glow.md) needs to reproduce the article at CPU scale:

* **Baselines** in bits per dimension, fitted on the same split as the flows: the uniform
  distribution over the levels, an independent categorical per pixel and one full-covariance
  Gaussian on the dequantised pixels.
* **A toy model**, [`realnvp_2d`][kexue.experiments.flow.realnvp_2d], for two-dimensional data.
* **Objectives**: [`DequantizedFlow`][kexue.experiments.flow.DequantizedFlow] (bits/dim of integer
  levels, with uniform or learned dequantisation by
  [`LogisticDequantizer`][kexue.experiments.flow.LogisticDequantizer]) and
  [`ContinuousNLL`][kexue.experiments.flow.ContinuousNLL] (nats of real-valued points).
* **A stacked trainer**, [`fit_stacked`][kexue.experiments.flow.fit_stacked]. It trains several
  flows of one architecture (several seeds, or several ablation variants embedded in one
  architecture by [`glow_variant`][kexue.experiments.flow.glow_variant]) as one batched model with
  ``torch.func.vmap``. It does not fit the shared [`fit`][kexue.experiments.training.fit], which
  trains one model: it stacks many, freezes some of their entries, clips gradients per model,
  follows a learning-rate schedule and evaluates held-out data during training to show when the
  curves flatten. Inside it, the convolutions on the digits Glow's 4×4 and 2×2 maps run as single
  matrix products ([`conv2d_as_matmul`][kexue.experiments.flow.conv2d_as_matmul]), which
  ``vmap`` batches better than the grouped convolutions it would otherwise make of them.

Everything here reduces data to numbers (bits/dim, log-likelihoods, losses), so NaN/inf data is
rejected with a ``ValueError`` naming the argument; integer levels may be stored in any real dtype
(as ``load_digits(scale=False)`` does) but must be integers in ``0 .. levels - 1``.

Examples:
    >>> import torch
    >>> from kexue.experiments.flow import categorical_bpd, uniform_bpd
    >>> round(uniform_bpd(17), 4)
    4.0875
    >>> v = torch.zeros(10, 1, 2, 2, dtype=torch.long)  # every pixel at level 0
    >>> round(categorical_bpd(v, v, 17, alpha=0.5), 4)  # -log2((10 + 0.5) / (10 + 17 * 0.5))
    0.8171
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from kexue._checks import check_bool, check_finite, check_int, check_real, check_tensor
from kexue.experiments.training import minibatches, seeded_mlp
from kexue.flow import (
    COUPLINGS,
    ActNorm,
    Flow,
    FlowSequential,
    InvConv1x1LU,
    MaskedCoupling,
    Permutation,
    SplitPrior,
    _bits_per_dim,
    _check_levels,
    bits_per_dim,
    glow,
)

__all__ = [
    "uniform_bpd",
    "categorical_bpd",
    "gaussian_bpd",
    "realnvp_2d",
    "SCHEDULES",
    "glow_variant",
    "LogisticDequantizer",
    "DequantizedFlow",
    "ContinuousNLL",
    "fit_stacked",
    "conv2d_as_matmul",
    "multiply_adds",
]


# ----------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------


def uniform_bpd(levels: int) -> float:
    r"""Bits per dimension of the uniform distribution over ``levels`` values: $\log_2 L$.

    Args:
        levels: Number of levels $L \ge 2$.

    Returns:
        $\log_2 L$.

    Raises:
        ValueError: If ``levels < 2``.
    """
    check_int(levels, "levels", 2)
    return math.log2(levels)


def categorical_bpd(v_train: Tensor, v_test: Tensor, levels: int, alpha: float = 0.5) -> float:
    r"""Baseline: an independent categorical per pixel with add-$\alpha$ smoothing, test bits/dim.

    $P(v_d = k) = (n_{dk} + \alpha) / (n + L\alpha)$ fitted on ``v_train``; returns
    $-\frac{1}{N D}\sum_{n,d} \log_2 P(v_{nd})$ on ``v_test``. It models each pixel's marginal
    exactly (no dequantisation) and ignores every dependency between pixels.

    Args:
        v_train: Integer levels of the training set (any real dtype).
        v_test: Integer levels of the test set.
        levels: Number of levels $L$.
        alpha: Additive smoothing (> 0).

    Returns:
        Test bits per dimension.

    Shapes:
        v_train: ``(n, ...)``; v_test: ``(m, ...)`` with the same trailing shape.

    Raises:
        TypeError: If a levels tensor is not a real tensor.
        ValueError: If a levels tensor is empty or has no batch dimension, trailing shapes differ,
            ``alpha <= 0`` or values are not integers in ``0..levels-1``.
    """
    check_int(levels, "levels", 2)
    check_real(alpha, "alpha", above=0)
    for name, v in (("v_train", v_train), ("v_test", v_test)):
        check_tensor(v, name, nonempty=True)
        if v.dim() == 0:
            raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
        _check_levels(v, name, levels)
    if v_train.shape[1:] != v_test.shape[1:]:
        raise ValueError(f"v_train and v_test trailing shapes differ: {tuple(v_train.shape)} vs {tuple(v_test.shape)}")
    tr = v_train.reshape(v_train.shape[0], -1).long()
    te = v_test.reshape(v_test.shape[0], -1).long()
    counts = F.one_hot(tr, levels).sum(0).double()  # (D, L)
    logp = torch.log2((counts + alpha) / (tr.shape[0] + levels * alpha))
    picked = logp.gather(1, te.T)  # (D, m)
    return float(-picked.mean())


def gaussian_bpd(x_train: Tensor, x_test: Tensor, levels: int, ridge: float = 1e-6) -> float:
    r"""Baseline: one full-covariance Gaussian on dequantised data, test bits/dim.

    Fits $\mu$ and $\Sigma$ (maximum likelihood, plus ``ridge`` on the diagonal) on ``x_train`` and
    evaluates [`bits_per_dim`][kexue.flow.bits_per_dim] of $\mathcal{N}(x; \mu, \Sigma)$ on
    ``x_test``, in float64. It captures linear (second-order) dependencies between pixels only.

    Args:
        x_train: Dequantised training data in ``[0, 1)``.
        x_test: Dequantised test data.
        levels: Number of levels $L$ before dequantisation.
        ridge: Added to the covariance diagonal (>= 0).

    Returns:
        Test bits per dimension.

    Shapes:
        x_train: ``(n, ...)``; x_test: ``(m, ...)`` with the same trailing shape.

    Raises:
        TypeError: If the data are not floating tensors.
        ValueError: If the data are empty or have NaN/inf entries, trailing shapes differ,
            ``ridge < 0``, or the covariance is singular (constant or collinear pixels with
            ``ridge=0``: the Gaussian then has no density; use ``ridge > 0``).
    """
    check_int(levels, "levels", 2)
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        check_tensor(x, name, floating=True, nonempty=True)
        if x.dim() == 0:
            raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
        check_finite(x, name)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"x_train and x_test trailing shapes differ: {tuple(x_train.shape)} vs {tuple(x_test.shape)}")
    check_real(ridge, "ridge", at_least=0)
    tr = x_train.reshape(x_train.shape[0], -1).double()
    te = x_test.reshape(x_test.shape[0], -1).double()
    mu = tr.mean(0)
    cov = (tr - mu).T @ (tr - mu) / tr.shape[0] + ridge * torch.eye(tr.shape[1], dtype=torch.float64)
    if int(torch.linalg.cholesky_ex(cov).info):
        raise ValueError(f"the covariance of x_train plus ridge={ridge:g} is singular ({tr.shape[0]} examples of "
                         f"{tr.shape[1]} dimensions; constant or collinear pixels): use ridge > 0")
    dist = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
    return float(bits_per_dim(dist.log_prob(te), tr.shape[1], levels).mean())


# ----------------------------------------------------------------------------------------------
# The toy model
# ----------------------------------------------------------------------------------------------


def realnvp_2d(
    n_couplings: int = 8,
    hidden: int = 64,
    coupling: str = "tanh",
    actnorm: bool = False,
    seed: int = 0,
) -> Flow:
    r"""RealNVP for 2-D points: affine couplings with alternating masks ``[1, 0]`` / ``[0, 1]``.

    Each coupling $y = b \odot x + (1 - b) \odot (x \odot e^{\log s(b \odot x)} + t(b \odot x))$
    ([`MaskedCoupling`][kexue.flow.MaskedCoupling]) gets its own two-hidden-layer ReLU MLP from
    [`seeded_mlp`][kexue.experiments.training.seeded_mlp] with a zero last layer, so the model
    starts as the identity map and its density as the standard normal.

    Args:
        n_couplings: Number of coupling layers (>= 1).
        hidden: Hidden width of each MLP.
        coupling: Key of [`COUPLINGS`][kexue.flow.COUPLINGS].
        actnorm: Put an [`ActNorm`][kexue.flow.ActNorm] before each coupling.
        seed: Seed of the first coupling's weights (coupling ``i`` uses ``seed + i``).

    Returns:
        A [`Flow`][kexue.flow.Flow] with ``event_shape == (2,)``.

    Shapes:
        x: ``(batch, 2)``.

    Raises:
        ValueError: If a size is not a positive integer, ``seed`` a non-negative integer, ``actnorm`` a
            bool, or ``coupling`` is unknown.

    Examples:
        >>> import torch
        >>> from kexue.experiments.flow import realnvp_2d
        >>> model = realnvp_2d(n_couplings=4, hidden=16, seed=0)
        >>> x = torch.zeros(3, 2)
        >>> model.log_prob(x)  # identity at initialisation: log N(0; 0, I) = -log(2 pi)
        tensor([-1.8379, -1.8379, -1.8379], grad_fn=<AddBackward0>)
    """
    check_int(n_couplings, "n_couplings")
    check_int(hidden, "hidden")
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling must be one of {sorted(COUPLINGS)}, got {coupling!r}")
    check_bool(actnorm, "actnorm")
    check_int(seed, "seed", 0)
    out = 2 if coupling == "additive" else 4
    layers: list[nn.Module] = []
    for i in range(n_couplings):  # seeded_mlp leaves the global generator alone
        if actnorm:
            layers.append(ActNorm(2))
        mask = torch.tensor([1.0, 0.0]) if i % 2 == 0 else torch.tensor([0.0, 1.0])
        net = seeded_mlp([2, hidden, hidden, out], seed=seed + i, zero_last=True)
        layers.append(MaskedCoupling(mask, net, coupling))
    return Flow(FlowSequential(layers), (2,))


# ----------------------------------------------------------------------------------------------
# Stacked training of Glow models
# ----------------------------------------------------------------------------------------------


def _constant(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then a constant learning rate."""
    return min(1.0, (step + 1) / max(warmup, 1))


def _cosine(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then a cosine decay to zero at the last step."""
    return min(1.0, (step + 1) / max(warmup, 1)) * 0.5 * (1.0 + math.cos(math.pi * step / total))


SCHEDULES: dict[str, Callable[[int, int, int], float]] = {"constant": _constant, "cosine": _cosine}
"""Learning-rate multipliers ``f(step, total_steps, warmup) -> factor``, by name."""


def glow_variant(
    permutation: str = "lu",
    actnorm: bool = True,
    *,
    conditional_prior: bool = True,
    seed: int = 0,
    **kwargs: object,
) -> tuple[Flow, dict[str, Tensor]]:
    r"""Build a [`glow`][kexue.flow.glow] variant inside the LU + ActNorm architecture, with a freeze mask.

    A fixed channel permutation $\pi$ is the LU 1x1 convolution with $P = I_\pi$ (rows of the
    identity in the order $\pi$), $L = I$, $U = 0$ and $\log s = 0$, since then $W = P$ and
    $W x = x_\pi$ with log-det 0. A step without ActNorm is ActNorm with $b = 0$, $\log s = 0$ and no
    data-dependent initialisation, the identity. Holding those entries fixed during training gives
    exactly the variant ``glow(permutation=..., actnorm=...)``; every other weight is copied from it.
    With ``conditional_prior=False`` the convolutions of the [`SplitPrior`][kexue.flow.SplitPrior]
    layers stay at zero, so every factored-out half gets a plain $\mathcal{N}(0, I)$ instead of
    Glow's $\mathcal{N}(\mu(z_\text{keep}), \sigma(z_\text{keep})^2)$ (the top prior stays learned).
    So variants that differ only in these choices share one architecture and can be trained as one
    stacked model by [`fit_stacked`][kexue.experiments.flow.fit_stacked].

    Args:
        permutation: ``"lu"``, ``"shuffle"`` or ``"reverse"``.
        actnorm: Whether the variant has ActNorm.
        conditional_prior: Whether the split priors are conditioned on the kept half (Glow) or
            fixed at $\mathcal{N}(0, I)$.
        seed: Seed of [`glow`][kexue.flow.glow] (the same seed gives the same coupling nets in every
            variant).
        **kwargs: Other arguments of [`glow`][kexue.flow.glow] (``event_shape``, ``levels``,
            ``depth``, ``hidden``, ``coupling``).

    Returns:
        ``(model, trainable)``: the LU + ActNorm model computing the variant, and for each parameter
        name a 0/1 tensor of its shape, 0 where the entry is held fixed.

    Raises:
        ValueError: If ``permutation`` is not one of the three, ``actnorm`` or ``conditional_prior``
            is not a bool, or an argument of [`glow`][kexue.flow.glow] is out of range.

    Examples:
        >>> import torch
        >>> from kexue.flow import glow
        >>> from kexue.experiments.flow import glow_variant
        >>> model, trainable = glow_variant("reverse", actnorm=False, seed=0, depth=1, hidden=8)
        >>> x = torch.rand(4, 1, 8, 8)
        >>> direct = glow(permutation="reverse", actnorm=False, seed=0, depth=1, hidden=8)
        >>> torch.equal(model.log_prob(x), direct.log_prob(x))
        True
        >>> sum(int(m.sum()) for m in trainable.values()) == sum(p.numel() for p in direct.parameters())
        True
    """
    if permutation not in ("lu", "shuffle", "reverse"):
        raise ValueError(f"permutation must be 'lu', 'shuffle' or 'reverse', got {permutation!r}")
    check_bool(actnorm, "actnorm")
    check_bool(conditional_prior, "conditional_prior")
    variant = glow(permutation=permutation, actnorm=actnorm, seed=seed, **kwargs)  # type: ignore[arg-type]
    model = glow(permutation="lu", actnorm=True, seed=seed, **kwargs)  # type: ignore[arg-type]
    shared = {k: v for k, v in variant.state_dict().items() if k in model.state_dict()}
    model.load_state_dict(shared, strict=False)  # coupling nets, priors, and LU / ActNorm where the variant has them
    trainable = {name: torch.ones_like(p) for name, p in model.named_parameters()}
    theirs = dict(variant.named_modules())
    with torch.no_grad():
        for name, module in model.named_modules():
            other = theirs.get(name)
            if isinstance(module, InvConv1x1LU) and isinstance(other, Permutation):
                module.P.copy_(torch.eye(other.perm.numel())[other.perm])  # W = P: (W x)_i = x_perm[i]
                module.sign_s.fill_(1.0)
                frozen = ("L", "U", "log_s")
            elif isinstance(module, ActNorm) and other is None:
                module.initialized.fill_(True)  # the identity, never initialised from data
                frozen = ("bias", "log_s")
            else:
                continue
            for pname in frozen:
                getattr(module, pname).zero_()
                trainable[f"{name}.{pname}"].zero_()
        if not conditional_prior:
            for name, module in model.named_modules():
                if isinstance(module, SplitPrior):
                    for pname in ("weight", "bias"):
                        getattr(module.conv, pname).zero_()
                        trainable[f"{name}.conv.{pname}"].zero_()
    return model, trainable


class LogisticDequantizer(nn.Module):
    r"""A learned dequantisation noise $q(u \mid v)$: one logistic in logit space per pixel and level.

    Uniform dequantisation $x = (v + u)/L$, $u \sim U[0, 1)^D$, wastes likelihood wherever the
    model's density is not flat inside a bin (Ho et al., *Flow++*, 2019, section 3.1). Variational
    dequantisation learns $q(u \mid v)$ and trains the bound
    $$\log P(v) \ge \mathbb{E}_{u \sim q}\big[\log p\big((v + u)/L\big) - \log q(u \mid v)\big] - D \log L .$$
    Here $u_d = \sigma\big(\mu_{d, v_d} + e^{\log a_{d, v_d}}\,\operatorname{logit}(u^0_d)\big)$ with
    $u^0 \sim U(0, 1)^D$: a logistic distribution in logit space whose location and scale are
    learned for every pixel $d$ and level $v_d$ (Flow++ conditions on the whole image with a flow;
    this table is the cheapest version). Its log-density is
    $\log q(u \mid v) = \sum_d \log\big(u^0_d (1 - u^0_d)\big) - \log a_{d, v_d} - \log\big(u_d(1 - u_d)\big)$;
    at initialisation ($\mu = \log a = 0$) $u = u^0$ and $\log q = 0$, uniform dequantisation.

    Args:
        dims: Number of pixels $D$.
        levels: Number of levels $L$.

    Shapes:
        v: ``(batch, ...)`` integer levels with ``dims`` entries per example; noise: same shape.

    Raises:
        ValueError: If ``dims`` or ``levels`` is out of range, or the inputs do not match (see
            [`forward`][kexue.experiments.flow.LogisticDequantizer.forward]).
    """

    def __init__(self, dims: int, levels: int) -> None:
        super().__init__()
        check_int(dims, "dims")
        check_int(levels, "levels", 2)
        self.mu = nn.Parameter(torch.zeros(dims, levels))
        self.log_a = nn.Parameter(torch.zeros(dims, levels))

    def forward(self, v: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(u, log q(u | v))`` for levels ``v`` and uniform noise ``noise`` in [0, 1].

        Raises:
            TypeError: If ``v`` is not a real tensor or ``noise`` not a floating tensor.
            ValueError: If ``v`` is empty, has no batch dimension, another number of entries per
                example than ``dims`` or values that are not integers in ``0 .. levels - 1``, or
                ``noise`` has another shape, NaN/inf or values outside [0, 1].
        """
        dims, levels = self.mu.shape
        _check_inputs(v, noise, levels, "v")
        if v[0].numel() != dims:
            raise ValueError(f"v must have {dims} entries per example (dims), got shape {tuple(v.shape)}")
        return self._forward(v, noise)

    def _forward(self, v: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        idx = v.reshape(v.shape[0], -1).long()
        mu = self.mu.gather(1, idx.T).T  # (batch, D)
        log_a = self.log_a.gather(1, idx.T).T
        z0 = torch.logit(noise.reshape(idx.shape), eps=1e-6)
        y = mu + torch.exp(log_a) * z0
        log_q = (F.logsigmoid(z0) + F.logsigmoid(-z0) - log_a - F.logsigmoid(y) - F.logsigmoid(-y)).sum(1)
        return torch.sigmoid(y).view_as(noise), log_q


class DequantizedFlow(nn.Module):
    r"""A flow on dequantised levels, returning the bits/dim bound of every example.

    $x = (v + u)/L$ with $u = u^0$ (uniform dequantisation, ``dequantizer=None``) or $u \sim q(u \mid v)$
    from ``dequantizer`` (e.g. [`LogisticDequantizer`][kexue.experiments.flow.LogisticDequantizer]);
    the output is $\big(-\log p(x) + \log q(u \mid v) + D \log L\big) / (D \ln 2)$, the
    [`bits_per_dim`][kexue.flow.bits_per_dim] bound ($\log q = 0$ for uniform noise).

    Args:
        flow: The density model of $x$.
        levels: Number of levels $L$.
        dequantizer: A module ``(v, noise) -> (u, log_q)``, or None for uniform dequantisation.

    Shapes:
        v, noise: ``(batch, *flow.event_shape)``; output: ``(batch,)``.

    Raises:
        TypeError: If ``flow`` is not a [`Flow`][kexue.flow.Flow] or ``dequantizer`` not a module
            (or None); on a call, if ``v`` is not a real tensor or ``noise`` not a floating one.
        ValueError: If ``levels < 2`` or a ``LogisticDequantizer`` has other ``dims``/``levels``; on a
            call, if ``v`` does not hold integer levels of the flow's event shape or ``noise`` has
            another shape, NaN/inf or values outside [0, 1].
    """

    def __init__(self, flow: Flow, levels: int, dequantizer: nn.Module | None = None) -> None:
        super().__init__()
        _check_flow(flow)
        self.flow = flow
        self.levels = check_int(levels, "levels", 2)
        if dequantizer is not None and not isinstance(dequantizer, nn.Module):
            raise TypeError(f"dequantizer must be an nn.Module (v, noise) -> (u, log_q) or None, "
                            f"got {type(dequantizer).__name__}")
        if isinstance(dequantizer, LogisticDequantizer) and tuple(dequantizer.mu.shape) != (flow.dims, levels):
            raise ValueError(f"dequantizer must have dims={flow.dims} and levels={levels} (the flow's), "
                             f"got dims={dequantizer.mu.shape[0]}, levels={dequantizer.mu.shape[1]}")
        self.dequantizer = dequantizer

    def forward(self, v: Tensor, noise: Tensor) -> Tensor:
        _check_inputs(v, noise, self.levels, "v")
        if tuple(v.shape[1:]) != self.flow.event_shape:
            raise ValueError(f"v must have shape (batch, *{self.flow.event_shape}), got {tuple(v.shape)}")
        return self._forward(v, noise)

    def _forward(self, v: Tensor, noise: Tensor) -> Tensor:
        """The bound without argument checks (for fit_stacked, which checks its data once, and vmap)."""
        if self.dequantizer is None:
            u, log_q = noise, noise.new_zeros(noise.shape[0])
        elif isinstance(self.dequantizer, LogisticDequantizer):
            u, log_q = self.dequantizer._forward(v, noise)
        else:
            u, log_q = self.dequantizer(v, noise)
        x = (v.to(noise.dtype) + u) / self.levels
        return _bits_per_dim(self.flow._log_prob(x) - log_q, self.flow.dims, self.levels)


def _check_flow(flow: object) -> None:
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a kexue.flow.Flow, got {type(flow).__name__}")


def _check_noise(noise: object, name: str, shape: torch.Size) -> None:
    check_tensor(noise, name, floating=True)
    assert isinstance(noise, Tensor)
    if noise.shape != shape:
        raise ValueError(f"{name} must have the shape of the levels {tuple(shape)}, got {tuple(noise.shape)}")
    check_finite(noise, name)
    if noise.numel() and (noise.min() < 0 or noise.max() > 1):
        raise ValueError(f"{name} must hold uniform noise in [0, 1], got values in "
                         f"[{noise.min().item():g}, {noise.max().item():g}]")


def _check_inputs(v: object, noise: object, levels: int, name: str, noise_name: str = "noise") -> None:
    """Integer levels (non-empty, with a batch dimension) and their uniform noise."""
    check_tensor(v, name, nonempty=True)
    assert isinstance(v, Tensor)
    if v.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
    _check_levels(v, name, levels)
    _check_noise(noise, noise_name, v.shape)


class ContinuousNLL(nn.Module):
    r"""A flow on real-valued points, returning the negative log-likelihood of every example (nats).

    The objective for continuous data in [`fit_stacked`][kexue.experiments.flow.fit_stacked]; the
    ``noise`` argument is accepted (the trainer passes one) and ignored.

    Args:
        flow: The density model.

    Shapes:
        x, noise: ``(batch, *flow.event_shape)``; output: ``(batch,)``.

    Raises:
        TypeError: If ``flow`` is not a [`Flow`][kexue.flow.Flow]; on a call, if ``x`` is not a
            floating tensor.
        ValueError: On a call, if ``x`` has another shape or NaN/inf entries, or its log-density is
            not finite.
    """

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        _check_flow(flow)
        self.flow = flow

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return -self.flow.log_prob(x)

    def _forward(self, x: Tensor, noise: Tensor) -> Tensor:
        """The loss without argument checks (for fit_stacked, which checks its data once, and vmap)."""
        return -self.flow._log_prob(x)


# ----------------------------------------------------------------------------------------------
# Small convolutions as matrix products (the stacked trainer's fast path)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _tap_matrix(height: int, width: int, k: int, dtype: torch.dtype) -> Tensor:
    """``G[t, q, p] = 1`` when input position ``q`` reaches output position ``p`` through tap ``t``.

    Cached (a handful of small constant tensors, never written to): every training step needs them.
    """
    r = k // 2
    out = torch.zeros(k * k, height * width, height * width, dtype=dtype)
    for dy in range(k):
        for dx in range(k):
            for y in range(height):
                for x in range(width):
                    yy, xx = y + dy - r, x + dx - r
                    if 0 <= yy < height and 0 <= xx < width:
                        out[dy * k + dx, yy * width + xx, y * width + x] = 1
    return out


def conv2d_as_matmul(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    r"""A stride-1, zero-padded ("same") 2-D convolution written as one matrix product.

    On an $H \times W$ map a $k \times k$ convolution with $k$ odd and padding $\lfloor k/2 \rfloor$
    is the linear map

    $$
    y_{b,o,p} = \beta_o + \sum_{c,q} x_{b,c,q}\, M_{(c,q),(o,p)}, \qquad
    M_{(c,q),(o,p)} = \sum_{t} W_{o,c,t}\, G_{t,q,p},
    $$

    where $t$ runs over the $k^2$ taps and $G_{t,q,p} = 1$ when tap $t$ of output position $p$
    reads input position $q$ (0 where it falls into the padding). A $1 \times 1$ kernel is simply
    $y_{b,:,p} = W x_{b,:,p} + \beta$. For the tiny maps of the digits Glow (4×4 and 2×2) the dense
    $M$ costs at most $HW/k^2 < 2$ times the convolution's multiply-adds and turns it into one
    matrix product, which batches far better under ``torch.func.vmap`` than the grouped
    convolution ``vmap`` makes of ``F.conv2d`` over stacked weights.
    [`fit_stacked`][kexue.experiments.flow.fit_stacked] uses it for every such convolution; it is
    the same function as ``F.conv2d(x, weight, bias, padding=k // 2)`` (tested in float64), with
    floating-point sums in another order.

    Args:
        x: Input maps.
        weight: Kernel with ``k`` odd.
        bias: Optional bias.

    Returns:
        The convolution, of shape ``(B, O, H, W)``.

    Shapes:
        x: ``(B, C, H, W)``; weight: ``(O, C, k, k)``; bias: ``(O,)``.

    Raises:
        TypeError: If an argument is not a floating tensor of ``x``'s dtype.
        ValueError: If the shapes do not match or ``k`` is even.

    Examples:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from kexue.experiments.flow import conv2d_as_matmul
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
        >>> w = torch.randn(5, 3, 3, 3, generator=g, dtype=torch.float64)
        >>> torch.allclose(conv2d_as_matmul(x, w), F.conv2d(x, w, padding=1))
        True
    """
    check_tensor(x, "x", 4, floating=True)
    check_tensor(weight, "weight", 4, floating=True)
    if weight.dtype != x.dtype:
        raise TypeError(f"weight must have x's dtype {x.dtype}, got {weight.dtype}")
    o, c, k, k2 = weight.shape
    if k != k2 or k % 2 == 0:
        raise ValueError(f"weight must have a square kernel of odd size, got {k}x{k2}")
    if x.shape[1] != c:
        raise ValueError(f"x must have {c} channels (weight's second dimension), got {x.shape[1]}")
    if bias is not None:
        check_tensor(bias, "bias", 1, floating=True)
        if bias.dtype != x.dtype:
            raise TypeError(f"bias must have x's dtype {x.dtype}, got {bias.dtype}")
        if bias.shape[0] != o:
            raise ValueError(f"bias must have {o} entries (weight's first dimension), got {bias.shape[0]}")
    return _conv2d_as_matmul(x, weight, bias)


def _conv2d_as_matmul(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """conv2d_as_matmul without checks (inside vmap, where shapes are the per-model ones)."""
    b, c, h, w = x.shape
    o, k = weight.shape[0], weight.shape[-1]
    if k == 1:
        out = torch.matmul(weight.reshape(o, c), x.reshape(b, c, h * w))
    else:
        taps = _tap_matrix(h, w, k, x.dtype)
        m = torch.einsum("oct,tqp->cqop", weight.reshape(o, c, k * k), taps).reshape(c * h * w, o * h * w)
        out = (x.reshape(b, c * h * w) @ m).reshape(b, o, h * w)
    if bias is not None:
        out = out + bias.reshape(o, 1)
    return out.reshape(b, o, h, w)


_SMALL_MAP = 16  # positions: up to a 4x4 map the dense form is at most 16/9 of the convolution's work


def _pair(value: object) -> object:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _same_padding(args: tuple, kwargs: dict) -> tuple[Tensor, Tensor, Tensor | None] | None:
    """(x, weight, bias) of an F.conv2d call that conv2d_as_matmul computes, else None."""
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    call = dict(zip(names, args)) | kwargs
    x, weight = call.get("input"), call.get("weight")
    if not isinstance(x, Tensor) or not isinstance(weight, Tensor) or x.dim() != 4 or weight.dim() != 4:
        return None
    k = weight.shape[-1]
    padding = call.get("padding", 0)
    if padding == "same":
        padding = k // 2
    if (weight.shape[-2] != k or k % 2 == 0 or _pair(call.get("stride", 1)) != (1, 1)
            or _pair(call.get("dilation", 1)) != (1, 1) or call.get("groups", 1) != 1
            or _pair(padding) != (k // 2, k // 2) or x.shape[2] * x.shape[3] > _SMALL_MAP):
        return None
    return x, weight, call.get("bias")


class _SmallConvsAsMatmul(torch.overrides.TorchFunctionMode):
    """Routes every "same" stride-1 F.conv2d on a map of at most 16 positions to conv2d_as_matmul."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is F.conv2d or func is torch.conv2d:
            call = _same_padding(args, kwargs)
            if call is not None:
                return _conv2d_as_matmul(*call)
        return func(*args, **kwargs)


class _Unchecked(nn.Module):
    """Calls an objective's unchecked core: fit_stacked checks its data once, and vmap allows no data-dependent checks."""

    def __init__(self, objective: DequantizedFlow | ContinuousNLL) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, v: Tensor, u: Tensor) -> Tensor:
        return self.objective._forward(v, u)


def _check_data(models: list[DequantizedFlow | ContinuousNLL], data: object, name: str) -> None:
    """Data of the models' event shape: integer levels for DequantizedFlow, finite floats for ContinuousNLL."""
    event_shape = models[0].flow.event_shape
    check_tensor(data, name, len(event_shape) + 1, nonempty=True)
    assert isinstance(data, Tensor)
    if tuple(data.shape[1:]) != event_shape:
        raise ValueError(f"{name} must have shape (n, *{event_shape}) (the models' event shape), got {tuple(data.shape)}")
    levels = [m.levels for m in models if isinstance(m, DequantizedFlow)]
    if levels:
        _check_levels(data, name, min(levels))
    if len(levels) < len(models):
        check_tensor(data, name, floating=True)
        check_finite(data, name)


def fit_stacked(
    models: Sequence[DequantizedFlow | ContinuousNLL],
    data: Tensor,
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    schedule: str = "cosine",
    warmup: int = 50,
    clip: float = 50.0,
    init_batch: int = 512,
    trainable: Sequence[Mapping[str, Tensor]] | None = None,
    eval_data: Tensor | None = None,
    eval_noise: Tensor | None = None,
    eval_every: int = 5,
) -> dict[str, Tensor | list[int]]:
    r"""Train flows of one architecture as one stacked model, each by its own objective.

    The models are objectives ``model(batch, noise) -> loss per example``:
    [`DequantizedFlow`][kexue.experiments.flow.DequantizedFlow] (bits/dim of integer levels) or
    [`ContinuousNLL`][kexue.experiments.flow.ContinuousNLL] (nats of real-valued points). Model $i$
    is trained exactly as it would be alone: its own generator (seeded ``seeds[i]``) draws the
    data-dependent ActNorm initialisation batch, the minibatch order and the uniform noise of each
    batch; the loss is the mean objective; its gradient norm is clipped to ``clip``;
    Adam (element-wise, so stacking does not couple the models) follows the learning-rate
    ``schedule`` of [`SCHEDULES`][kexue.experiments.flow.SCHEDULES]. Entries where
    ``trainable[i]`` is 0 keep their initial value. The forward pass is ``torch.func.vmap`` over the
    models' stacked weights, so many small models share every operation; within it, "same"
    stride-1 convolutions on maps of at most 16 positions are computed by
    [`conv2d_as_matmul`][kexue.experiments.flow.conv2d_as_matmul] (the same function, about a
    third faster here than the grouped convolution ``vmap`` makes of them). The trained weights are
    written back into ``models``, and each module's training/eval mode is restored. The data are
    checked once here; the models' unchecked objectives run inside the loop.

    Why not the shared [`fit`][kexue.experiments.training.fit]: it trains one model, and this loop
    stacks many, clips gradients per model, freezes entries, follows a schedule and evaluates
    held-out data during training (to show where the curves flatten).

    Args:
        models: Objectives of identical architecture (e.g. several seeds of one model, or
            [`glow_variant`][kexue.experiments.flow.glow_variant] models).
        data: The training set (integer levels for ``DequantizedFlow``).
        seeds: One seed per model (models with the same seed see the same batches and noise).
        epochs: Passes over the data (>= 1).
        batch_size: Examples per step.
        lr: Peak Adam learning rate.
        schedule: Key of [`SCHEDULES`][kexue.experiments.flow.SCHEDULES].
        warmup: Steps of linear warm-up.
        clip: Maximum gradient norm per model.
        init_batch: Examples for the data-dependent ActNorm initialisation.
        trainable: Per model, parameter name (as in ``model.named_parameters()``, so ``"flow."``
            before the names [`glow_variant`][kexue.experiments.flow.glow_variant] returns) -> 0/1
            mask of the entries that train; missing names are trainable.
        eval_data: Held-out data, evaluated every ``eval_every`` epochs and after the last one.
        eval_noise: Noise in (0, 1) of ``eval_data``'s shape, the same for every model and
            evaluation (required with ``eval_data``; ignored by ``ContinuousNLL``).
        eval_every: Evaluation period in epochs.

    Returns:
        ``{"loss": (models, epochs) mean training objective per epoch, "eval_epoch": [...],
        "eval": (models, evaluations) mean held-out objective}`` (``eval`` is empty without
        ``eval_data``).

    Shapes:
        data: ``(n, *event_shape)``; eval_data, eval_noise: ``(m, *event_shape)``.

    Raises:
        TypeError: If ``models``, ``seeds`` or ``trainable`` is not a sequence (of objectives, ints,
            dicts), or a data tensor has the wrong dtype.
        ValueError: If the models differ in architecture, the number of seeds or masks does not
            match, a hyper-parameter is out of range, the data do not have the models' event shape,
            are empty, have NaN/inf or (for ``DequantizedFlow``) values that are not integer levels,
            or ``eval_noise`` is missing, of another shape or outside [0, 1].

    Examples:
        >>> import torch
        >>> from kexue.flow import glow
        >>> from kexue.experiments.flow import DequantizedFlow, fit_stacked
        >>> v = torch.randint(0, 17, (64, 1, 8, 8), generator=torch.Generator().manual_seed(0))
        >>> models = [DequantizedFlow(glow(depth=1, hidden=8, seed=s), levels=17) for s in (0, 1, 2)]
        >>> history = fit_stacked(models, v, seeds=[0, 1, 2], epochs=2, batch_size=32, warmup=2)
        >>> history["loss"].shape  # (models, epochs): mean training bits/dim
        torch.Size([3, 2])
    """
    if isinstance(models, (str, bytes, nn.Module)) or not isinstance(models, Iterable):
        raise TypeError(f"models must be a sequence of DequantizedFlow or ContinuousNLL models, got {type(models).__name__}")
    models = list(models)
    if not models or not all(isinstance(m, (DequantizedFlow, ContinuousNLL)) for m in models):
        raise ValueError("models must be a non-empty sequence of DequantizedFlow or ContinuousNLL models")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise TypeError(f"seeds must be a sequence of integer seeds, got {type(seeds).__name__}")
    seeds = list(seeds)
    for i, seed in enumerate(seeds):
        check_int(seed, f"seeds[{i}]", 0)
    if len(seeds) != len(models):
        raise ValueError(f"seeds must give one seed per model: {len(seeds)} seeds for {len(models)} models")
    if trainable is not None:
        if isinstance(trainable, (str, bytes, Mapping)) or not isinstance(trainable, Sequence):
            raise TypeError(f"trainable must be a sequence of dicts (one per model) or None, got {type(trainable).__name__}")
        if len(trainable) != len(models):
            raise ValueError(f"trainable must give one mask dict per model, got {len(trainable)} for {len(models)}")
        for i, t in enumerate(trainable):
            if not isinstance(t, Mapping):
                raise TypeError(f"trainable[{i}] must be a dict of parameter name -> 0/1 mask, got {type(t).__name__}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    check_int(epochs, "epochs")
    check_int(batch_size, "batch_size")
    check_int(warmup, "warmup", 0)
    check_int(init_batch, "init_batch")
    check_int(eval_every, "eval_every")
    check_real(lr, "lr", above=0)
    check_real(clip, "clip", above=0)
    names = [n for n, _ in models[0].named_parameters()]
    layout = [(n, p.shape) for n, p in models[0].named_parameters()]
    if any([(n, p.shape) for n, p in m.named_parameters()] != layout or m.flow.event_shape != models[0].flow.event_shape
           for m in models[1:]):
        raise ValueError("models must share one architecture (same parameter names and shapes); see glow_variant")
    _check_data(models, data, "data")
    if eval_data is not None:
        _check_data(models, eval_data, "eval_data")
        if eval_noise is None:
            raise ValueError("eval_noise must be given with eval_data, with the same shape")
        _check_noise(eval_noise, "eval_noise", eval_data.shape)
    modes = [[m.training for m in model.modules()] for model in models]

    k, n = len(models), data.shape[0]
    dtype = next(models[0].parameters()).dtype
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    for model, g in zip(models, gens):  # data-dependent ActNorm initialisation, one model at a time
        model.train()
        vb = data[torch.randint(0, n, (min(init_batch, n),), generator=g)]
        with torch.no_grad():
            model._forward(vb, torch.rand(vb.shape, generator=g, dtype=dtype))
        model.eval()  # ActNorm never re-initialises under vmap
    params, buffers = stack_module_state(models)
    for t in trainable or []:
        unknown = set(t) - set(names)
        if unknown:
            raise ValueError(f"trainable names parameters the models do not have: {sorted(unknown)[:3]}")
    masks = {
        name: torch.stack([torch.as_tensor((t or {}).get(name, 1.0)).expand_as(p) for t in (trainable or [None] * k)])
        for name, p in models[0].named_parameters()
    }
    masks = {name: m for name, m in masks.items() if not bool((m == 1).all())}  # only the partly frozen ones
    skeleton = _Unchecked(copy.deepcopy(models[0])).to("meta")  # the weights come from the stack
    params_in = {f"objective.{name}": t for name, t in params.items()}  # the same tensors, named for skeleton
    buffers_in = {f"objective.{name}": t for name, t in buffers.items()}

    def bound(p: dict[str, Tensor], b: dict[str, Tensor], v: Tensor, u: Tensor) -> Tensor:
        with _SmallConvsAsMatmul():  # vmap would make grouped convolutions of them; see conv2d_as_matmul
            return functional_call(skeleton, (p, b), (v, u))

    train_bpd = vmap(bound, in_dims=(0, 0, 0, 0))
    eval_bpd = vmap(bound, in_dims=(0, 0, None, None))
    plist = list(params.values())
    opt = torch.optim.Adam(plist, lr=lr, foreach=True)
    total = epochs * math.ceil(n / batch_size)
    factor = SCHEDULES[schedule]
    loss_hist = torch.zeros(k, epochs)
    eval_epochs: list[int] = []
    evals: list[Tensor] = []
    step = 0
    for epoch in range(epochs):
        orders = [minibatches(n, batch_size, generator=g) for g in gens]
        for batch in zip(*orders):
            vb = torch.stack([data[idx] for idx in batch])
            ub = torch.stack([torch.rand(data[idx].shape, generator=g, dtype=dtype) for idx, g in zip(batch, gens)])
            bpd = train_bpd(params_in, buffers_in, vb, ub).mean(1)  # (models,)
            for group in opt.param_groups:
                group["lr"] = lr * factor(step, total, warmup)
            opt.zero_grad(set_to_none=False)
            bpd.sum().backward()
            with torch.no_grad():
                for name, m in masks.items():
                    params[name].grad.mul_(m)
                norms = torch.cat([p.grad.reshape(k, -1) for p in plist], dim=1).norm(dim=1)
                scale = (clip / (norms + 1e-6)).clamp(max=1.0)
                if bool((scale < 1).any()):  # clip each model's gradient to norm <= clip
                    for p in plist:
                        p.grad.mul_(scale.view(k, *([1] * (p.dim() - 1))))
            opt.step()
            loss_hist[:, epoch] += bpd.detach() * batch[0].numel() / n
            step += 1
        if eval_data is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            with torch.no_grad():
                evals.append(eval_bpd(params_in, buffers_in, eval_data, eval_noise).mean(1))
            eval_epochs.append(epoch + 1)
    with torch.no_grad():
        for i, model in enumerate(models):
            model.load_state_dict({name: t[i] for name, t in {**params, **buffers}.items()})
    for model, mode in zip(models, modes):  # the init pass switched them to eval(): restore each module's mode
        for m, training in zip(model.modules(), mode):
            m.training = training
    return {
        "loss": loss_hist,
        "eval_epoch": eval_epochs,
        "eval": torch.stack(evals, 1) if evals else torch.zeros(k, 0),
    }


# ----------------------------------------------------------------------------------------------
# Cost of a coupling
# ----------------------------------------------------------------------------------------------


def multiply_adds(model: nn.Module, x: Tensor) -> int:
    r"""Multiply-adds of the convolutions and linear layers in one forward pass of ``model`` on ``x``.

    Counts $C_\text{in} k_h k_w / \text{groups}$ per output entry of every ``nn.Conv2d`` (and
    $C_\text{in}$ per output entry of every ``nn.Linear``), by forward hooks; element-wise
    operations are not counted. Used to compare the cost of affine and additive couplings.

    The pass runs in eval mode without gradients, so it changes nothing in the model (an ActNorm
    is not initialised from ``x``); each module's mode is restored afterwards.

    Args:
        model: Any module.
        x: An input batch (whatever ``model`` takes).

    Returns:
        The number of multiply-adds for the whole batch.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module`` or ``x`` not a tensor.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_tensor(x, "x")
    total = 0

    def conv_hook(m: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Conv2d)
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Linear)
        total += out.numel() * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    return total

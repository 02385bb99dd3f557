r"""Experiment helpers for the HSIC page: dependence shapes, and the HSIC bottleneck on a small MLP.

[`kexue.hsic`][kexue.hsic] holds the article's mathematics (kernels, estimators, tests and the
bottleneck objective [`bottleneck_loss`][kexue.hsic.bottleneck_loss]). This module holds what
only the page needs to test it on a CPU in seconds:

* [`make_dependence`][kexue.experiments.hsic.make_dependence]: seeded 1-D pairs with a named
  shape of dependence, some with a linear trend and some without;
* [`pearson_variance_ratio`][kexue.experiments.hsic.pearson_variance_ratio]: how far the spread of
  Pearson's $r$ under a dependence departs from its spread under independence, which decides
  how often Pearson's test rejects a shape whose correlation is zero;
* the HSIC bottleneck of Ma, Lewis & Kleijn (2020) on an MLP built by
  [`seeded_mlp`][kexue.experiments.training.seeded_mlp] and trained by
  [`fit`][kexue.experiments.training.fit] with two loss callbacks: a
  [`BottleneckObjective`][kexue.experiments.hsic.BottleneckObjective] for the hidden layers and
  ``LOSSES["readout"]`` for the "format" layer on top.

Examples:
    >>> import torch
    >>> from kexue.experiments.hsic import fit_hsic_bottleneck
    >>> from kexue.experiments.training import accuracy, seeded_mlp
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(240, 4, generator=gen)
    >>> y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # four quadrant labels
    >>> model = seeded_mlp([4, 16, 16, 4], activation="tanh", seed=0)
    >>> run = fit_hsic_bottleneck(model, x, y, epochs=15, readout_epochs=15, batch_size=60,
    ...                           lr=1e-2, beta=10.0)
    >>> len(run["nhsic_y"]), len(run["nhsic_y"][0])  # epochs, hidden layers
    (15, 2)
    >>> accuracy(model, x, y) > 0.8
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_bool, check_finite, check_floating_dtype, check_int, check_real, check_tensor
from kexue.experiments.training import LossFn, fit
from kexue.hsic import bottleneck_loss, delta_kernel, gaussian_kernel

__all__ = [
    "DEPENDENCES",
    "make_dependence",
    "pearson_variance_ratio",
    "hidden_representations",
    "BottleneckObjective",
    "LOSSES",
    "fit_hsic_bottleneck",
]


# ----------------------------------------------------------------------------------------------
# synthetic dependence shapes

DEPENDENCES: dict[str, float] = {
    "linear": 0.5,
    "parabola": 0.1,
    "circle": 0.1,
    "sine": 0.2,
    "cosine": 0.2,
    "checkerboard-4": 0.0,
    "checkerboard-3": 0.0,
    "independent": 0.0,
}
"""Shapes [`make_dependence`][kexue.experiments.hsic.make_dependence] draws, with default noise levels."""

# cells (column, row) of the two boards: every cell whose column + row is even
_BOARDS = {
    "checkerboard-4": torch.tensor([(c, r) for c in range(4) for r in range(4) if (c + r) % 2 == 0]),
    "checkerboard-3": torch.tensor([(c, r) for c in range(3) for r in range(3) if (c + r) % 2 == 0]),
}


def make_dependence(
    kind: str, n: int, *, noise: float | None = None, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    r"""Paired 1-D samples with a named shape of dependence (seeded).

    With $x\sim U(-1, 1)$ and $\varepsilon\sim N(0, 1)$ drawn independently for each coordinate:

    * ``linear``: $y = x + s\varepsilon$;
    * ``parabola``: $y = x^2 + s\varepsilon$ (population correlation 0, by symmetry);
    * ``circle``: $(\cos\theta, \sin\theta) + s\varepsilon$, $\theta\sim U(0, 2\pi)$ (correlation 0);
    * ``sine``: $y = \sin(4\pi x) + s\varepsilon$; odd like $x$, so it keeps a linear trend
      (population correlation $-\sqrt6/(4\pi)\approx -0.195$ without noise);
    * ``cosine``: $y = \cos(4\pi x) + s\varepsilon$; even, so its correlation with $x$ is 0;
    * ``checkerboard-4``: uniform on the cells of a 4x4 board whose column + row is even, plus
      noise; the cells lean along the diagonal (population correlation $3/16$ without noise);
    * ``checkerboard-3``: the same on a 3x3 board, whose five cells are symmetric about both
      middle lines (correlation 0);
    * ``independent``: $x, y\sim N(0, 1)$ independent (``noise`` ignored).

    Args:
        kind: A name of [`DEPENDENCES`][kexue.experiments.hsic.DEPENDENCES].
        n: Number of pairs (>= 1).
        noise: Standard deviation $s \ge 0$ of the added Gaussian noise; default per kind.
        seed: Seed of the generator.
        dtype: Floating dtype of the result.

    Returns:
        ``(x, y)``.

    Shapes:
        x, y: ``(n, 1)``.

    Raises:
        ValueError: On an unknown ``kind``, ``n < 1``, negative ``noise`` or a bad ``seed``.
        TypeError: If ``dtype`` is not floating.

    Examples:
        >>> x, y = make_dependence("parabola", 5, noise=0.0, seed=0)
        >>> x.shape, bool(torch.allclose(y, x * x))
        (torch.Size([5, 1]), True)
    """
    if not isinstance(kind, str) or kind not in DEPENDENCES:
        raise ValueError(f"kind must be one of {sorted(DEPENDENCES)}, got {kind!r}")
    n = check_int(n, "n")
    seed = check_int(seed, "seed", 0)
    s = DEPENDENCES[kind] if noise is None else check_real(noise, "noise", at_least=0)
    check_floating_dtype(dtype)
    g = torch.Generator().manual_seed(seed)

    def u(a: float, b: float) -> Tensor:
        return a + (b - a) * torch.rand(n, generator=g, dtype=torch.float64)

    def eps() -> Tensor:
        return torch.randn(n, generator=g, dtype=torch.float64)

    if kind == "independent":
        x, y = eps(), eps()
    elif kind == "circle":
        theta = u(0.0, 2 * math.pi)
        x, y = theta.cos() + s * eps(), theta.sin() + s * eps()
    elif kind in _BOARDS:
        cells = _BOARDS[kind][torch.randint(0, len(_BOARDS[kind]), (n,), generator=g)]
        x = cells[:, 0] + u(0.0, 1.0) + s * eps()
        y = cells[:, 1] + u(0.0, 1.0) + s * eps()
    else:
        x = u(-1.0, 1.0)
        shapes = {"linear": x, "parabola": x * x, "sine": torch.sin(4 * math.pi * x),
                  "cosine": torch.cos(4 * math.pi * x)}
        y = shapes[kind] + s * eps()
    return x.to(dtype).unsqueeze(1), y.to(dtype).unsqueeze(1)


def pearson_variance_ratio(x: Tensor, y: Tensor) -> tuple[float, float]:
    r"""Sample correlation $r$ and the variance ratio $\rho = \mathbb E[\tilde x^2\tilde y^2]$ of Pearson's $r$.

    With $\tilde x$, $\tilde y$ the standardised variables, $\sqrt n\, r$ tends to a normal law with
    variance $\rho$ when the population correlation is 0 (delta method on the sample moments); its
    null distribution assumes independence, where $\rho = 1$. So on a dependence with zero correlation
    Pearson's test at level $\alpha$ rejects at the rate
    $P(|Z| > z_{1-\alpha/2}/\sqrt\rho)$: more often than $\alpha$ when $\rho > 1$, less often when
    $\rho < 1$. Estimate it on a large sample of the shape.

    Args:
        x: Sample of $X$.
        y: Sample of $Y$, paired with ``x``.

    Returns:
        ``(r, rho)`` as Python floats.

    Shapes:
        x, y: ``(n,)`` or ``(n, 1)`` with ``n >= 2``.

    Raises:
        ValueError: If the shapes differ or are not one column, ``n < 2``, a sample holds NaN or
            infinite values, or a sample is constant.
        TypeError: If a sample is not a floating tensor.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(2, 100_000, generator=g, dtype=torch.float64)
        >>> r, rho = pearson_variance_ratio(x, y)
        >>> abs(r) < 0.01, abs(rho - 1) < 0.02
        (True, True)
    """
    for t, name in ((x, "x"), (y, "y")):
        check_finite(check_tensor(t, name, (1, 2), floating=True), name)
        if t.dim() == 2 and t.shape[1] != 1:
            raise ValueError(f"{name} must be one sample, of shape (n,) or (n, 1), got shape {tuple(t.shape)}")
    x, y = x.reshape(-1).double(), y.reshape(-1).double()
    if x.shape != y.shape or x.numel() < 2:
        raise ValueError(f"x and y must hold the same number n >= 2 of values, got {x.numel()}, {y.numel()}")
    xs, ys = x - x.mean(), y - y.mean()
    sx, sy = xs.pow(2).mean().sqrt(), ys.pow(2).mean().sqrt()
    if sx == 0 or sy == 0:
        raise ValueError("x and y must not be constant")
    xs, ys = xs / sx, ys / sy
    return (xs * ys).mean().item(), (xs * xs * ys * ys).mean().item()


# ----------------------------------------------------------------------------------------------
# the HSIC bottleneck on a seeded MLP


def _hidden_layers(model: nn.Module) -> tuple[list[nn.Linear], list[nn.Module], nn.Linear]:
    """Split a ``Linear -> act -> ... -> Linear`` Sequential into hidden layers, activations, readout."""
    if not isinstance(model, nn.Sequential) or len(model) < 3 or len(model) % 2 == 0:
        raise TypeError("model must be a Sequential Linear -> act -> ... -> Linear (seeded_mlp, no flatten)")
    mods = list(model)
    linears, acts = mods[0:-1:2], mods[1:-1:2]
    ok = all(isinstance(m, nn.Linear) for m in [*linears, mods[-1]])
    if not ok or any(isinstance(a, nn.Linear) for a in acts):
        raise TypeError("model must alternate Linear layers and activations and end with a Linear readout")
    return linears, acts, mods[-1]


def _check_batch(model: nn.Module, x: Tensor, name: str) -> list[nn.Linear]:
    """Check that ``x`` is a non-empty batch the MLP ``model`` takes; return its hidden layers' Linears."""
    linears, _, _ = _hidden_layers(model)
    check_tensor(x, name, 2, floating=True, nonempty=True)
    first = linears[0].weight
    if x.shape[1] != first.shape[1]:
        raise ValueError(f"{name} must have {first.shape[1]} features (the model's input width), got shape {tuple(x.shape)}")
    if x.dtype != first.dtype:
        raise TypeError(f"{name} must have the model's dtype {first.dtype}, got {x.dtype}")
    return linears


def _check_class_labels(y: Tensor, name: str, n: int, n_classes: int | None = None) -> Tensor:
    """Integer labels, one per example (in ``[0, n_classes)`` if given)."""
    check_tensor(y, name, 1, floating=False)
    if y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got torch.bool")
    if y.shape[0] != n:
        raise ValueError(f"{name} must hold one label per example ({n}), got shape {tuple(y.shape)}")
    if n_classes is not None and y.numel() and not (0 <= int(y.min()) and int(y.max()) < n_classes):
        raise ValueError(f"{name} must hold class labels in [0, {n_classes}) (the readout's outputs), "
                         f"got labels from {int(y.min())} to {int(y.max())}")
    return y


def hidden_representations(model: nn.Module, x: Tensor, *, detach: bool = True) -> list[Tensor]:
    r"""Every hidden representation $Z_i = \phi(W_i Z_{i-1} + b_i)$ of an MLP, $Z_0 = X$.

    With ``detach`` each layer's input is cut from the graph, so a loss on $Z_i$ reaches only
    layer $i$'s weights: this is how the HSIC bottleneck trains without backpropagating between
    layers. The readout (last ``Linear``) is not applied.

    Args:
        model: A ``Linear -> act -> ... -> Linear`` ``nn.Sequential`` such as
            [`seeded_mlp`][kexue.experiments.training.seeded_mlp] builds (without ``flatten``).
        x: Inputs.
        detach: Detach each layer's input.

    Returns:
        One tensor per hidden layer.

    Shapes:
        x: ``(batch, d_in)``; each ``Z_i``: ``(batch, h_i)``.

    Raises:
        TypeError: If ``model`` is not such a Sequential, or ``x`` is not a floating tensor of its dtype.
        ValueError: If ``x`` is not a non-empty ``(batch, d_in)`` batch, or ``detach`` is not a bool.

    Examples:
        >>> from kexue.experiments.training import seeded_mlp
        >>> model = seeded_mlp([6, 5, 4, 3], activation="tanh", seed=0)
        >>> [tuple(z.shape) for z in hidden_representations(model, torch.zeros(2, 6))]
        [(2, 5), (2, 4)]
    """
    check_bool(detach, "detach")
    _check_batch(model, x, "x")
    return _hidden(model, x, detach)


def _hidden(model: nn.Module, x: Tensor, detach: bool) -> list[Tensor]:
    """Unchecked core of [`hidden_representations`][kexue.experiments.hsic.hidden_representations]."""
    linears, acts, _ = _hidden_layers(model)
    zs, z = [], x
    for linear, act in zip(linears, acts, strict=True):
        z = act(linear(z.detach() if detach else z))
        zs.append(z)
    return zs


class BottleneckObjective:
    r"""Loss callback of the HSIC bottleneck for [`fit`][kexue.experiments.training.fit].

    For a minibatch it returns $\sum_i \big[\mathrm{nHSIC}(Z_i, X) - \beta\,\mathrm{nHSIC}(Z_i, Y)\big]$
    over the hidden layers, each term from [`bottleneck_loss`][kexue.hsic.bottleneck_loss] on the
    representations of [`hidden_representations`][kexue.experiments.hsic.hidden_representations]
    (inputs detached). Because every layer's input is detached, the gradient of this sum with
    respect to layer $i$ is that of its own term only; and Adam treats each parameter separately,
    so one Adam over all layers takes exactly the steps of the paper's one optimiser per layer.
    The readout gets no gradient (it is not in the graph) and is left alone.

    Kernels: Gaussian on $X$ and on each $Z_i$, with the batch's median bandwidth
    (``sigma_scale=None``) or, as in the reference code, $\sigma = \sigma_b\sqrt{p}$ for
    $p$-dimensional inputs (``sigma_scale=`` $\sigma_b$); a delta kernel on the labels.
    Batches of fewer than 4 examples contribute a zero loss. A collapsed layer (constant over the
    batch) contributes a zero loss with a zero gradient, so training goes on (see
    [`bottleneck_loss`][kexue.hsic.bottleneck_loss]). If every normalised HSIC of a batch is 0
    although some hidden representation varies, the kernels are too wide for the dtype (a large
    ``sigma_scale``): that raises ``ValueError`` instead of training on nothing.

    The batch averages of $\mathrm{nHSIC}(Z_i, X)$ and $\mathrm{nHSIC}(Z_i, Y)$ are recorded per
    epoch in [`history`][kexue.experiments.hsic.BottleneckObjective.history].

    Args:
        beta: Weight $\beta \ge 0$ of the label term (``lambda_y`` = 50 in the reference code).
        nhsic: ``"cka"`` or ``"cca"`` (see [`bottleneck_loss`][kexue.hsic.bottleneck_loss]).
        eps: Regulariser of ``"cca"``.
        sigma_scale: ``None`` for median bandwidths, or $\sigma_b > 0$ for $\sigma = \sigma_b\sqrt p$.

    Shapes:
        xb: ``(batch, d_in)``; yb: ``(batch,)`` integer labels.

    Raises:
        ValueError: On a ``beta``, ``eps`` or ``sigma_scale`` out of range, an unknown ``nhsic``;
            when called, on a batch with NaN/inf entries, labels of the wrong length, a bad ``epoch``.
        TypeError: When called, on a batch that is not a floating tensor of the model's dtype,
            or labels that are not integers.
    """

    def __init__(
        self, *, beta: float = 50.0, nhsic: str = "cka", eps: float = 1e-5, sigma_scale: float | None = None
    ) -> None:
        self.beta = check_real(beta, "beta", at_least=0)
        if not isinstance(nhsic, str) or nhsic not in ("cka", "cca"):
            raise ValueError(f"nhsic must be 'cka' or 'cca', got {nhsic!r}")
        self.nhsic = nhsic
        self.eps = check_real(eps, "eps", above=0)
        self.sigma_scale = None if sigma_scale is None else check_real(sigma_scale, "sigma_scale", above=0)
        self._sums: dict[int, list[Tensor]] = {}

    def _sigma(self, z: Tensor) -> float | str:
        return "median" if self.sigma_scale is None else self.sigma_scale * math.sqrt(z.shape[1])

    def __call__(
        self, model: nn.Module, xb: Tensor, yb: Tensor, *, generator: torch.Generator, epoch: int
    ) -> Tensor:
        """The summed per-layer objective of one minibatch (a 0-dim tensor)."""
        _check_batch(model, xb, "xb")
        check_finite(xb, "xb")
        _check_class_labels(yb, "yb", xb.shape[0])
        check_int(epoch, "epoch", 0)
        zs = _hidden(model, xb, True)
        if xb.shape[0] < 4:
            return sum(z.sum() for z in zs) * 0.0
        Kx = gaussian_kernel(xb, self._sigma(xb))
        Ky = delta_kernel(yb, dtype=xb.dtype)
        total, hx, hy, cache = xb.new_zeros(()), [], [], {}
        for z in zs:
            loss, zx, zy = bottleneck_loss(
                z, Kx, Ky, beta=self.beta, sigma=self._sigma(z), nhsic=self.nhsic, eps=self.eps, cache=cache
            )
            total = total + loss
            hx.append(zx)
            hy.append(zy)
        if all(h.item() == 0 for h in (*hx, *hy)) and any(_varies(z) for z in zs):
            raise ValueError(
                "every normalised HSIC of the batch is 0 although a hidden representation varies: the Gaussian "
                f"kernels are too wide for {xb.dtype} (a self-term below rounding; sigma_scale={self.sigma_scale}); "
                "use a smaller sigma_scale, the median (sigma_scale=None) or float64"
            )
        stats = torch.stack((torch.stack(hx), torch.stack(hy))).double()
        prev = self._sums.get(epoch)
        self._sums[epoch] = [stats, 1] if prev is None else [prev[0] + stats, prev[1] + 1]
        return total

    @property
    def history(self) -> dict[str, list[list[float]]]:
        """Per epoch, the batch-averaged nHSIC of each layer: ``{"nhsic_x": [...], "nhsic_y": [...]}``."""
        out: dict[str, list[list[float]]] = {"nhsic_x": [], "nhsic_y": []}
        for epoch in sorted(self._sums):
            total, count = self._sums[epoch]
            out["nhsic_x"].append((total[0] / count).tolist())
            out["nhsic_y"].append((total[1] / count).tolist())
        return out


def _varies(z: Tensor) -> bool:
    """Whether a representation is not constant over the batch (some column takes two values)."""
    z = z.detach()
    return bool((z.amax(dim=0) > z.amin(dim=0)).any())


def _readout_cross_entropy(
    model: nn.Module, xb: Tensor, yb: Tensor, *, generator: torch.Generator, epoch: int
) -> Tensor:
    """Cross-entropy of the readout on the frozen last hidden representation."""
    _, _, readout = _hidden_layers(model)
    _check_batch(model, xb, "xb")
    check_finite(xb, "xb")
    _check_class_labels(yb, "yb", xb.shape[0], readout.out_features)
    check_int(epoch, "epoch", 0)
    with torch.no_grad():
        z = _hidden(model, xb, True)[-1]
    return F.cross_entropy(readout(z), yb.long())


LOSSES: dict[str, LossFn] = {"readout": _readout_cross_entropy}
"""Loss callbacks of the page by name: ``"readout"`` trains only the last ``Linear`` (the "format"
layer) by cross-entropy on the frozen last hidden representation. End-to-end backpropagation is
``kexue.experiments.training.LOSSES["cross_entropy"]``; the bottleneck itself is a
[`BottleneckObjective`][kexue.experiments.hsic.BottleneckObjective] (it has parameters and a history)."""


def fit_hsic_bottleneck(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    readout_epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    readout_lr: float | None = None,
    beta: float = 50.0,
    nhsic: str = "cka",
    eps: float = 1e-5,
    sigma_scale: float | None = None,
    seed: int = 0,
) -> dict[str, list]:
    r"""Train the hidden layers with the HSIC bottleneck, then the readout with cross-entropy.

    Two calls of [`fit`][kexue.experiments.training.fit] (Adam) with one shared batch-order
    generator: ``epochs`` passes of a
    [`BottleneckObjective`][kexue.experiments.hsic.BottleneckObjective] at learning rate ``lr``,
    then ``readout_epochs`` passes of ``LOSSES["readout"]`` at ``readout_lr`` (default: ``lr``).
    The budget is ``epochs + readout_epochs`` passes over the data; give a baseline the same.

    Args:
        model: A ``Linear -> act -> ... -> Linear`` Sequential (trained in place).
        x: Training inputs.
        y: Integer labels.
        epochs: Passes of bottleneck training (>= 1).
        readout_epochs: Passes of readout training (>= 1).
        batch_size: Minibatch size (>= 4; a last batch of fewer than 4 examples is skipped by
            the bottleneck phase).
        lr: Adam learning rate of the bottleneck phase.
        readout_lr: Adam learning rate of the readout phase (None: ``lr``).
        beta: Label weight $\beta$.
        nhsic: ``"cka"`` or ``"cca"``.
        eps: Regulariser of ``"cca"``.
        sigma_scale: ``None`` (median bandwidths) or $\sigma_b$ for $\sigma = \sigma_b\sqrt p$.
        seed: Seed of the batch order.

    Returns:
        ``{"nhsic_x", "nhsic_y"}`` (per epoch, per layer), ``"hsic_loss"`` and ``"readout_loss"``
        (mean loss per epoch of each phase).

    Shapes:
        x: ``(n, d_in)``; y: ``(n,)``.

    Raises:
        TypeError: If ``model`` is not such a Sequential, ``x`` is not a floating tensor of its
            dtype, or ``y`` does not hold integer labels.
        ValueError: If ``x`` holds NaN/inf or has the wrong width, ``y`` has the wrong length or
            labels outside the readout's classes, fewer than 4 examples are given or
            ``batch_size < 4`` (the smallest batch the bottleneck trains on), or a
            hyper-parameter is out of range.
    """
    _, _, readout = _hidden_layers(model)
    _check_batch(model, x, "x")
    check_finite(x, "x")
    _check_class_labels(y, "y", x.shape[0], readout.out_features)
    check_int(epochs, "epochs")
    check_int(readout_epochs, "readout_epochs")
    check_int(batch_size, "batch_size", 4)
    if x.shape[0] < 4:
        raise ValueError(f"x must hold at least 4 examples (the smallest batch the bottleneck trains on), got {x.shape[0]}")
    check_real(lr, "lr", above=0)
    if readout_lr is not None:
        check_real(readout_lr, "readout_lr", above=0)
    check_int(seed, "seed", 0)
    gen = torch.Generator().manual_seed(seed)
    obj = BottleneckObjective(beta=beta, nhsic=nhsic, eps=eps, sigma_scale=sigma_scale)
    hsic_loss = fit(model, x, y, obj, epochs=epochs, batch_size=batch_size, lr=lr, generator=gen)
    readout_loss = fit(
        model, x, y, LOSSES["readout"], epochs=readout_epochs, batch_size=batch_size,
        lr=lr if readout_lr is None else readout_lr, generator=gen,
    )
    return {**obj.history, "hsic_loss": hsic_loss, "readout_loss": readout_loss}

r"""Experiment helpers for the HSIC page: dependence shapes, and the HSIC bottleneck on a small MLP.

[`kexue.hsic`][kexue.hsic] holds the article's mathematics (kernels, estimators, tests and the
bottleneck objective [`bottleneck_loss`][kexue.hsic.bottleneck_loss]). This module holds what
only the page needs to test it on a CPU in seconds:

* [`make_dependence`][kexue.experiments.hsic.make_dependence]: seeded 1-D pairs with a named
  shape of dependence;
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

from kexue._checks import check_int, check_real, check_tensor
from kexue.experiments.training import LossFn, fit
from kexue.hsic import bottleneck_loss, delta_kernel, gaussian_kernel

__all__ = [
    "DEPENDENCES",
    "make_dependence",
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
    "sinusoid": 0.2,
    "checkerboard": 0.0,
    "independent": 0.0,
}
"""Shapes [`make_dependence`][kexue.experiments.hsic.make_dependence] draws, with default noise levels."""


def make_dependence(
    kind: str, n: int, *, noise: float | None = None, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    r"""Paired 1-D samples with a given shape of dependence (seeded).

    * ``linear``: $x\sim U(-1,1)$, $y = x + \text{noise}\cdot\varepsilon$;
    * ``parabola``: $y = x^2 + \text{noise}\cdot\varepsilon$ (Pearson $r\approx 0$);
    * ``circle``: $(\cos\theta, \sin\theta) + \text{noise}\cdot\varepsilon$, $\theta\sim U(0, 2\pi)$;
    * ``sinusoid``: $y = \sin(4\pi x) + \text{noise}\cdot\varepsilon$;
    * ``checkerboard``: uniform on the black squares of a 4x4 board (cells with even $i+j$), plus noise;
    * ``independent``: $x, y \sim N(0, 1)$ independent (noise ignored).

    Args:
        kind: A name of [`DEPENDENCES`][kexue.experiments.hsic.DEPENDENCES].
        n: Number of pairs (>= 1).
        noise: Standard deviation of the added Gaussian noise (>= 0); default per kind.
        seed: Seed of the generator.
        dtype: Floating dtype.

    Returns:
        ``(x, y)``.

    Shapes:
        x, y: ``(n, 1)``.

    Raises:
        ValueError: On an unknown ``kind``, ``n < 1``, negative ``noise`` or a bad ``seed``.
    """
    if kind not in DEPENDENCES:
        raise ValueError(f"kind must be one of {sorted(DEPENDENCES)}, got {kind!r}")
    check_int(n, "n")
    check_int(seed, "seed", 0)
    s = DEPENDENCES[kind] if noise is None else noise
    if not (s >= 0 and math.isfinite(s)):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
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
    elif kind == "checkerboard":
        col = torch.randint(0, 4, (n,), generator=g)
        row = 2 * torch.randint(0, 2, (n,), generator=g) + col % 2  # row + col even
        x = col + u(0.0, 1.0) + s * eps()
        y = row + u(0.0, 1.0) + s * eps()
    else:
        x = u(-1.0, 1.0)
        f = {"linear": x, "parabola": x * x, "sinusoid": torch.sin(4 * math.pi * x)}[kind]
        y = f + s * eps()
    return x.to(dtype).unsqueeze(1), y.to(dtype).unsqueeze(1)


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
        TypeError: If ``model`` is not such a Sequential.

    Examples:
        >>> from kexue.experiments.training import seeded_mlp
        >>> model = seeded_mlp([6, 5, 4, 3], activation="tanh", seed=0)
        >>> [tuple(z.shape) for z in hidden_representations(model, torch.zeros(2, 6))]
        [(2, 5), (2, 4)]
    """
    linears, acts, _ = _hidden_layers(model)
    check_tensor(x, "x", 2, floating=True, nonempty=True)
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
    Batches of fewer than 4 examples contribute a zero loss.

    The batch averages of $\mathrm{nHSIC}(Z_i, X)$ and $\mathrm{nHSIC}(Z_i, Y)$ are recorded per
    epoch in [`history`][kexue.experiments.hsic.BottleneckObjective.history].

    Args:
        beta: Weight $\beta \ge 0$ of the label term (``lambda_y`` = 50 in the reference code).
        nhsic: ``"cka"`` or ``"cca"`` (see [`bottleneck_loss`][kexue.hsic.bottleneck_loss]).
        eps: Regulariser of ``"cca"``.
        sigma_scale: ``None`` for median bandwidths, or $\sigma_b > 0$ for $\sigma = \sigma_b\sqrt p$.

    Shapes:
        xb: ``(batch, d_in)``; yb: ``(batch,)`` integer labels.
    """

    def __init__(
        self, *, beta: float = 50.0, nhsic: str = "cka", eps: float = 1e-5, sigma_scale: float | None = None
    ) -> None:
        self.beta = check_real(beta, "beta", at_least=0)
        if nhsic not in ("cka", "cca"):
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
        zs = hidden_representations(model, xb)
        if xb.shape[0] < 4:
            return sum(z.sum() for z in zs) * 0.0
        Kx = gaussian_kernel(xb, self._sigma(xb))
        Ky = delta_kernel(yb, dtype=xb.dtype)
        total, hx, hy = xb.new_zeros(()), [], []
        for z in zs:
            loss, zx, zy = bottleneck_loss(
                z, Kx, Ky, beta=self.beta, sigma=self._sigma(z), nhsic=self.nhsic, eps=self.eps
            )
            total = total + loss
            hx.append(zx)
            hy.append(zy)
        if not total.requires_grad:
            raise FloatingPointError(
                "every normalised HSIC of the batch was 0 (a self-term below rounding: "
                f"is the kernel too wide for {xb.dtype}?); nothing to train"
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


def _readout_cross_entropy(
    model: nn.Module, xb: Tensor, yb: Tensor, *, generator: torch.Generator, epoch: int
) -> Tensor:
    """Cross-entropy of the readout on the frozen last hidden representation."""
    _, _, readout = _hidden_layers(model)
    with torch.no_grad():
        z = hidden_representations(model, xb)[-1]
    return F.cross_entropy(readout(z), yb)


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
        batch_size: Minibatch size.
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
    """
    check_int(epochs, "epochs")
    check_int(readout_epochs, "readout_epochs")
    check_int(seed, "seed", 0)
    _hidden_layers(model)
    gen = torch.Generator().manual_seed(seed)
    obj = BottleneckObjective(beta=beta, nhsic=nhsic, eps=eps, sigma_scale=sigma_scale)
    hsic_loss = fit(model, x, y, obj, epochs=epochs, batch_size=batch_size, lr=lr, generator=gen)
    readout_loss = fit(
        model, x, y, LOSSES["readout"], epochs=readout_epochs, batch_size=batch_size,
        lr=lr if readout_lr is None else readout_lr, generator=gen,
    )
    return {**obj.history, "hsic_loss": hsic_loss, "readout_loss": readout_loss}

r"""Experiment helpers of the SamplePairing/mixup page: mixing losses, training loops, evaluation.

[`kexue.mixup`][kexue.mixup] holds what the article and the two papers define: the mixers, the
mixed loss and the linearity gap. This module holds what the page needs to test them on a CPU in
seconds:

* [`LOSSES`][kexue.experiments.mixup.LOSSES], one named loss callback per mixer of
  [`MIXERS`][kexue.mixup.MIXERS], in the shape
  [`fit`][kexue.experiments.training.fit] expects, and
  [`mixing_loss`][kexue.experiments.mixup.mixing_loss], the one function behind them;
* [`train_classifier`][kexue.experiments.mixup.train_classifier], the plain loop (a
  [`seeded_mlp`][kexue.experiments.training.seeded_mlp] trained by
  [`fit`][kexue.experiments.training.fit]), and
  [`train_classifiers`][kexue.experiments.mixup.train_classifiers], which trains many
  [`Run`][kexue.experiments.mixup.Run]s as one stacked model and gives the same result;
* [`evaluate`][kexue.experiments.mixup.evaluate] (accuracy, likelihood, confidence, calibration),
  [`expected_calibration_error`][kexue.experiments.mixup.expected_calibration_error] and
  [`temperature_for_confidence`][kexue.experiments.mixup.temperature_for_confidence], which lets
  the page compare linearity gaps at equal confidence.

Examples:
    >>> import torch
    >>> from kexue.experiments.mixup import Run, evaluate, train_classifiers
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(120, 2, generator=gen)
    >>> y = (x[:, 0] + x[:, 1] > 0).long()
    >>> runs = [Run("none", seed=0), Run("mixup", seed=0, params={"alpha": 0.4})]
    >>> trained = train_classifiers(x, y, runs, n_classes=2, hidden=(16,), epochs=30, batch_size=40, lr=1e-2)
    >>> [evaluate(net, x, y)["acc"] > 0.9 for net in trained.models]
    [True, True]
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_finite, check_int, check_real, check_tensor
from kexue.experiments.training import LossFn, evaluating, fit, minibatches, seeded_mlp
from kexue.mixup import MIXERS, MixedBatch, mixed_cross_entropy, no_mixing

__all__ = [
    "mixed_batch",
    "mixing_loss",
    "LOSSES",
    "Run",
    "train_classifier",
    "TrainedRuns",
    "train_classifiers",
    "expected_calibration_error",
    "evaluate",
    "temperature_for_confidence",
]


def _check_mixer(mixer: object) -> None:
    if not isinstance(mixer, str) or mixer not in MIXERS:
        raise ValueError(f"mixer must be one of {sorted(MIXERS)}, got {mixer!r}")


def _check_active(active: object) -> None:
    if active is not None and not callable(active):
        raise TypeError(f"active must be None or a callable epoch -> bool, got {type(active).__name__}")


def _check_model(model: object) -> None:
    if not callable(model):
        raise TypeError(f"model must be callable (inputs -> logits), got {type(model).__name__}")


def _check_classes(y: Tensor, name: str, logits: object) -> None:
    """The labels ``y`` of a batch are classes of the model's ``(B, K)`` logits (other shapes: the loss says so)."""
    if isinstance(logits, Tensor) and logits.dim() == 2:
        _check_labels(y, name, logits.shape[1])


def _check_labels(y: object, name: str, n_classes: int | None = None) -> Tensor:
    """A 1-D int64 tensor of class labels; with ``n_classes``, every label in ``[0, n_classes)``."""
    check_tensor(y, name, 1, floating=False)
    if y.dtype != torch.int64:
        raise TypeError(f"{name} must be an int64 tensor of class labels, got {y.dtype}")
    if y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or (n_classes is not None and hi >= n_classes):
            bound = f"in [0, {n_classes})" if n_classes is not None else ">= 0"
            raise ValueError(f"{name} must hold class labels {bound}, got labels from {lo} to {hi}")
    return y


# ----------------------------------------------------------------------------- loss callbacks


def mixed_batch(
    xb: Tensor,
    yb: Tensor,
    *,
    generator: torch.Generator,
    epoch: int,
    mixer: str = "none",
    active: Callable[[int], bool] | None = None,
    **params: float,
) -> MixedBatch:
    r"""Mix one minibatch with ``MIXERS[mixer]``, or leave it unmixed in epochs where ``active`` says no.

    Both training loops of this module call it, so a run mixes the same way in either.

    Args:
        xb: Inputs of the minibatch.
        yb: Labels of the minibatch.
        generator: The run's generator (pairing and $\lambda$ are drawn from it).
        epoch: Current epoch, counted from 0.
        mixer: Name in [`MIXERS`][kexue.mixup.MIXERS].
        active: ``epoch -> bool`` schedule (e.g. [`sample_pairing_active`][kexue.mixup.sample_pairing_active]);
            None mixes in every epoch. An inactive epoch draws nothing from ``generator``.
        **params: Extra keyword arguments of the mixer (``alpha`` for ``"mixup"``).

    Returns:
        The (possibly unmixed) batch; the labels pass through unchecked (the loss checks their range).

    Shapes:
        xb: ``(B, ...)`` floating; yb: ``(B,)`` int64.

    Raises:
        TypeError: If ``xb`` is not floating, ``yb`` not int64 or ``active`` not callable.
        ValueError: If ``mixer`` is unknown, ``epoch`` negative or the batch sizes differ.
    """
    _check_mixer(mixer)
    check_int(epoch, "epoch", 0)
    _check_active(active)
    check_tensor(xb, "xb", floating=True)
    check_tensor(yb, "yb", 1, floating=False)
    if xb.dim() < 1 or xb.shape[0] == 0 or xb.shape[0] != yb.shape[0]:
        raise ValueError(f"xb and yb must hold the same non-empty batch, got shapes {tuple(xb.shape)} and "
                         f"{tuple(yb.shape)}")
    if active is not None and not active(epoch):
        return no_mixing(xb, yb, generator=generator)
    return MIXERS[mixer](xb, yb, generator=generator, **params)


# --8<-- [start:mixing_loss]
def mixing_loss(
    model: nn.Module,
    xb: Tensor,
    yb: Tensor,
    *,
    generator: torch.Generator,
    epoch: int,
    mixer: str = "none",
    active: Callable[[int], bool] | None = None,
    **params: float,
) -> Tensor:
    r"""Loss callback for [`fit`][kexue.experiments.training.fit]: mix the minibatch, then the mixed cross-entropy.

    $$\ell = \lambda\,\mathrm{CE}\big(f(\tilde x), y_a\big) + (1 - \lambda)\,\mathrm{CE}\big(f(\tilde x), y_b\big)$$

    with $(\tilde x, y_a, y_b, \lambda)$ from [`mixed_batch`][kexue.experiments.mixup.mixed_batch].
    Bind ``mixer``, ``active`` and the mixer's parameters with ``functools.partial`` (or take a
    ready one from [`LOSSES`][kexue.experiments.mixup.LOSSES]).

    Args:
        model: Maps inputs to logits.
        xb: Inputs of the minibatch.
        yb: Labels of the minibatch.
        generator: The run's generator.
        epoch: Current epoch.
        mixer: Name in [`MIXERS`][kexue.mixup.MIXERS].
        active: ``epoch -> bool`` schedule of the mixing (None: always).
        **params: Extra keyword arguments of the mixer.

    Returns:
        Scalar loss.

    Shapes:
        xb: ``(B, ...)``; yb: ``(B,)`` int64.

    Raises:
        TypeError: If ``model`` is not callable, or as [`mixed_batch`][kexue.experiments.mixup.mixed_batch].
        ValueError: If a label of ``yb`` is not a class of the model's output, or as
            [`mixed_batch`][kexue.experiments.mixup.mixed_batch] and
            [`mixed_cross_entropy`][kexue.mixup.mixed_cross_entropy].
    """
    _check_model(model)
    b = mixed_batch(xb, yb, generator=generator, epoch=epoch, mixer=mixer, active=active, **params)
    logits = model(b.x)
    _check_classes(yb, "yb", logits)
    return mixed_cross_entropy(logits, b.y_a, b.y_b, b.lam)
# --8<-- [end:mixing_loss]


LOSSES: dict[str, LossFn] = {name: partial(mixing_loss, mixer=name) for name in MIXERS}
"""One loss callback per mixer of [`MIXERS`][kexue.mixup.MIXERS], by the same name.

``partial(LOSSES["mixup"], alpha=0.2)`` sets a parameter; ``partial(..., active=schedule)`` a
schedule. ``LOSSES["none"]`` is plain cross-entropy."""


@dataclass(frozen=True)
class Run:
    """One training run: which mixer, its parameters and schedule, and the seed.

    Attributes:
        mixer: Name in [`MIXERS`][kexue.mixup.MIXERS] (and in [`LOSSES`][kexue.experiments.mixup.LOSSES]).
        seed: Seeds the initialisation (weights), the shuffling and the mixing of this run.
        params: Extra keyword arguments of the mixer.
        active: ``epoch -> bool`` schedule of the mixing (None: always).

    Examples:
        >>> from functools import partial
        >>> from kexue.mixup import sample_pairing_active
        >>> run = Run("sample_pairing", seed=1, active=partial(sample_pairing_active, start=2, end=8, on=2, off=1))
        >>> run.loss_fn.keywords["mixer"], run.loss_fn.keywords["active"](2)
        ('sample_pairing', True)
    """

    mixer: str = "none"
    seed: int = 0
    params: dict = field(default_factory=dict)
    active: Callable[[int], bool] | None = None

    def __post_init__(self) -> None:
        _check_mixer(self.mixer)
        check_int(self.seed, "seed", 0)
        if not isinstance(self.params, Mapping):
            raise TypeError(f"params must be a dict of the mixer's keyword arguments, got {type(self.params).__name__}")
        accepted = [name for name, p in inspect.signature(MIXERS[self.mixer]).parameters.items()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "generator"]
        unknown = sorted(str(k) for k in self.params if k not in accepted)
        if unknown:
            raise ValueError(f"params {unknown} are not keyword arguments of mixer {self.mixer!r} "
                             f"(it takes {accepted})")
        _check_active(self.active)

    @property
    def loss_fn(self) -> LossFn:
        """The run's loss callback: ``LOSSES[mixer]`` with its schedule and parameters bound."""
        return partial(LOSSES[self.mixer], active=self.active, **self.params)


# ----------------------------------------------------------------------------- training


def _check_data(x: object, y: object, n_classes: int, names: tuple[str, str] = ("x", "y")) -> None:
    """Training (or held-out) data: finite float32/float64 inputs and labels in ``[0, n_classes)``."""
    check_int(n_classes, "n_classes", 2)
    check_tensor(x, names[0], floating=True, nonempty=True)
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{names[0]} must be float32 or float64 (the MLP is built in x's dtype; float16 and "
                        f"bfloat16 training is not supported), got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{names[0]} must have shape (n, ...) with one example per row, got {tuple(x.shape)}")
    check_finite(x, names[0])
    _check_labels(y, names[1], n_classes)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, got {x.shape[0]} and {y.shape[0]}")


def _check_hidden(hidden: object) -> list[int]:
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"hidden must be a sequence of hidden-layer widths, got {type(hidden).__name__}")
    return [check_int(h, f"hidden[{i}]", 1) for i, h in enumerate(hidden)]


def _sizes(x: Tensor, hidden: Sequence[int], n_classes: int) -> list[int]:
    return [x[0].numel(), *_check_hidden(hidden), n_classes]


# --8<-- [start:train]
def train_classifier(
    x: Tensor,
    y: Tensor,
    run: Run,
    *,
    n_classes: int,
    hidden: Sequence[int] = (128, 128),
    epochs: int = 150,
    batch_size: int = 64,
    lr: float = 1e-3,
) -> tuple[nn.Sequential, list[float]]:
    """Train one ReLU MLP with Adam on mixed minibatches: the plain loop.

    Args:
        x: Training inputs (flattened by the network).
        y: Training labels.
        run: Mixer, parameters, schedule and seed.
        n_classes: Number of classes.
        hidden: Hidden widths of the MLP.
        epochs: Passes over the data.
        batch_size: Minibatch size.
        lr: Adam learning rate.

    Returns:
        The trained model (eval mode, in ``x``'s dtype) and its training loss per epoch.

    Shapes:
        x: ``(n, ...)`` float32 or float64; y: ``(n,)`` int64.

    Raises:
        TypeError: If ``run`` is not a [`Run`][kexue.experiments.mixup.Run], ``x`` is not float32 or
            float64 or ``y`` not int64.
        ValueError: For non-finite inputs, labels outside ``[0, n_classes)``, mismatched lengths, bad
            widths or hyper-parameters.
    """
    _check_run(run, "run")
    _check_data(x, y, n_classes)
    model = seeded_mlp(_sizes(x, hidden, n_classes), seed=run.seed, flatten=True, dtype=x.dtype)
    history = fit(model, x, y, run.loss_fn, epochs=epochs, batch_size=batch_size, lr=lr, seed=run.seed)
    return model.eval(), history
# --8<-- [end:train]


def _check_run(run: object, name: str) -> Run:
    if not isinstance(run, Run):
        raise TypeError(f"{name} must be a Run, got {type(run).__name__}")
    return run


@dataclass(frozen=True)
class TrainedRuns:
    """What [`train_classifiers`][kexue.experiments.mixup.train_classifiers] returns.

    Attributes:
        models: One trained MLP per run, in order (eval mode).
        history: Training loss per epoch and run, as [`fit`][kexue.experiments.training.fit]
            reports it (the mean minibatch loss of the epoch, mixed where the run mixes).
        val_epochs: Epochs (1-based: after that many epochs) at which the held-out set was scored.
        val_acc: Held-out accuracy at those epochs, per run.
        val_nll: Held-out negative log-likelihood (nats) at those epochs, per run.

    Shapes:
        history: ``(epochs, runs)``; val_acc, val_nll: ``(len(val_epochs), runs)``.
    """

    models: list[nn.Sequential]
    history: Tensor
    val_epochs: list[int]
    val_acc: Tensor
    val_nll: Tensor


# --8<-- [start:stacked]
def _stacked_logits(weights: list[Tensor], biases: list[Tensor], h: Tensor) -> Tensor:
    """All runs' MLPs at once: ``h`` is ``(runs, batch, d_in)``, each layer one batched product."""
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = torch.baddbmm(b, h, w)  # (runs, batch, d_out) = b + h @ w, per run
        if k < len(weights) - 1:
            h = torch.relu(h)
    return h
# --8<-- [end:stacked]


def train_classifiers(
    x: Tensor,
    y: Tensor,
    runs: Sequence[Run],
    *,
    n_classes: int,
    hidden: Sequence[int] = (128, 128),
    epochs: int = 150,
    batch_size: int = 64,
    lr: float = 1e-3,
    x_val: Tensor | None = None,
    y_val: Tensor | None = None,
    eval_every: int = 10,
) -> TrainedRuns:
    r"""Train several MLPs at once, each exactly as [`train_classifier`][kexue.experiments.mixup.train_classifier] would.

    Why a loop of its own rather than [`fit`][kexue.experiments.training.fit]: ``fit`` steps one
    model, and the page trains tens of tiny networks (conditions × seeds) whose cost is almost
    all Python overhead per step. Here the runs' weights are stacked along a leading dimension and
    every layer is one ``baddbmm``, so a step costs about as much overhead as for one network.
    Each run keeps its own generator (shuffling, pairing, $\lambda$), its own schedule and its own
    Adam state (Adam is element-wise, so one optimiser over the stacked tensors is one optimiser per
    run), and its loss is its own batch mean; the runs never interact. The result matches
    ``train_classifier`` run by run up to float rounding (tested).

    Args:
        x: Training inputs.
        y: Training labels.
        runs: What to train.
        n_classes: Number of classes.
        hidden: Hidden widths of every MLP.
        epochs: Passes over the data.
        batch_size: Minibatch size.
        lr: Adam learning rate.
        x_val: Held-out inputs scored every ``eval_every`` epochs (optional).
        y_val: Their labels.
        eval_every: Score the held-out set after every this many epochs (and after the last).

    Returns:
        The models (in ``x``'s dtype), their loss histories and the held-out curves.

    Shapes:
        x: ``(n, ...)`` float32 or float64; y: ``(n,)`` int64; x_val: ``(m, ...)`` like ``x``; y_val: ``(m,)``.

    Raises:
        TypeError: If ``runs`` is not a sequence of [`Run`][kexue.experiments.mixup.Run]s, or a
            tensor has the wrong type or dtype.
        ValueError: If ``runs`` is empty, only one of ``x_val``, ``y_val`` is given, an input is
            not finite, a label is outside ``[0, n_classes)``, or a width or hyper-parameter is bad.
    """
    if isinstance(runs, (str, bytes)) or not isinstance(runs, Sequence):
        raise TypeError(f"runs must be a sequence of Run, got {type(runs).__name__}")
    if not runs:
        raise ValueError("runs must name at least one run")
    for i, r in enumerate(runs):
        _check_run(r, f"runs[{i}]")
    _check_data(x, y, n_classes)
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 1)
    check_real(lr, "lr", above=0)
    check_int(eval_every, "eval_every", 1)
    if (x_val is None) != (y_val is None):
        raise ValueError("x_val and y_val must be given together")
    if x_val is not None:
        _check_data(x_val, y_val, n_classes, ("x_val", "y_val"))
        if x_val.dtype != x.dtype or x_val.shape[1:] != x.shape[1:]:
            raise ValueError(f"x_val must have the dtype and example shape of x ({x.dtype}, {tuple(x.shape[1:])}), "
                             f"got {x_val.dtype}, {tuple(x_val.shape[1:])}")
    sizes = _sizes(x, hidden, n_classes)
    models = [seeded_mlp(sizes, seed=r.seed, flatten=True, dtype=x.dtype) for r in runs]
    linears = [[m for m in model if isinstance(m, nn.Linear)] for model in models]
    n_layers = len(linears[0])
    weights = [torch.stack([lin[k].weight.detach().mT for lin in linears]).requires_grad_() for k in range(n_layers)]
    biases = [torch.stack([lin[k].bias.detach()[None] for lin in linears]).requires_grad_() for k in range(n_layers)]
    opt = torch.optim.Adam([*weights, *biases], lr=lr)
    gens = [torch.Generator().manual_seed(r.seed) for r in runs]
    xf = x.flatten(1)
    n_runs, n = len(runs), len(x)
    history = torch.zeros(epochs, n_runs, dtype=torch.float64)
    val_epochs: list[int] = []
    val_acc: list[Tensor] = []
    val_nll: list[Tensor] = []
    for epoch in range(epochs):
        per_run = [minibatches(n, batch_size, generator=g) for g in gens]
        for idx in zip(*per_run, strict=True):
            mixed = [mixed_batch(xf[i], y[i], generator=g, epoch=epoch, mixer=r.mixer, active=r.active, **r.params)
                     for r, g, i in zip(runs, gens, idx, strict=True)]
            logits = _stacked_logits(weights, biases, torch.stack([b.x for b in mixed])).flatten(0, 1)
            ya, yb, lam = (torch.cat([getattr(b, k) for b in mixed]) for k in ("y_a", "y_b", "lam"))
            ce = lam * F.cross_entropy(logits, ya, reduction="none") + (1 - lam) * F.cross_entropy(
                logits, yb, reduction="none")
            loss = ce.reshape(n_runs, -1).mean(1)  # each run's own batch mean; runs do not interact
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            history[epoch] += loss.detach().double() * idx[0].numel() / n
        if x_val is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            with torch.no_grad():
                z = _stacked_logits(weights, biases, x_val.flatten(1).expand(n_runs, -1, -1))
                val_epochs.append(epoch + 1)
                val_acc.append((z.argmax(-1) == y_val).double().mean(1))
                val_nll.append(F.cross_entropy(z.transpose(1, 2), y_val.expand(n_runs, -1), reduction="none")
                               .double().mean(1))
    with torch.no_grad():
        for j, lin in enumerate(linears):
            for k, layer in enumerate(lin):
                layer.weight.copy_(weights[k][j].mT)
                layer.bias.copy_(biases[k][j, 0])
    empty = torch.zeros(0, n_runs, dtype=torch.float64)
    return TrainedRuns(
        [m.eval() for m in models],
        history,
        val_epochs,
        torch.stack(val_acc) if val_acc else empty,
        torch.stack(val_nll) if val_nll else empty,
    )


# ----------------------------------------------------------------------------- evaluation


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    r"""Expected calibration error with equal-width confidence bins.

    $$\mathrm{ECE} = \sum_{m} \frac{|B_m|}{n} \big| \mathrm{acc}(B_m) - \mathrm{conf}(B_m) \big|,$$

    where $B_m$ holds the samples whose top probability lies in $((m-1)/M, m/M]$
    (C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern Neural Networks", 2017).

    Args:
        probs: Predicted class probabilities (entries in $[0, 1]$).
        labels: True classes, in ``[0, K)``.
        n_bins: Number of bins $M$ (>= 1).

    Returns:
        The ECE in [0, 1].

    Shapes:
        probs: ``(n, K)``; labels: ``(n,)`` int64.

    Raises:
        TypeError: If ``probs`` is not floating or ``labels`` not int64.
        ValueError: If the shapes disagree, the set is empty, ``n_bins < 1``, a probability is
            outside $[0, 1]$ (or NaN) or a label is not a class.

    Examples:
        >>> import torch
        >>> probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
        >>> round(expected_calibration_error(probs, torch.tensor([0, 1]), n_bins=10), 3)  # |1 - .9|/2 + |0 - .6|/2
        0.35
    """
    check_int(n_bins, "n_bins")
    check_tensor(probs, "probs", 2, floating=True, nonempty=True)
    if not bool(((probs >= 0) & (probs <= 1)).all()):
        raise ValueError(f"probs must hold probabilities in [0, 1], got {int((~((probs >= 0) & (probs <= 1))).sum())} "
                         "entries outside (or NaN)")
    _check_labels(labels, "labels", probs.shape[1])
    if labels.shape[0] != probs.shape[0]:
        raise ValueError(f"labels must have one entry per row of probs ({probs.shape[0]}), got {tuple(labels.shape)}")
    conf, pred = probs.to(torch.float64).max(dim=1)
    correct = (pred == labels).to(torch.float64)
    bins = torch.clamp(torch.ceil(conf * n_bins).long() - 1, 0, n_bins - 1)
    ece = torch.zeros((), dtype=torch.float64)
    for m in range(n_bins):
        sel = bins == m
        if sel.any():
            ece += sel.sum().item() / len(conf) * (correct[sel].mean() - conf[sel].mean()).abs()
    return float(ece)


def evaluate(model: nn.Module, x: Tensor, y: Tensor, *, temperature: float = 1.0, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, negative log-likelihood (nats), mean confidence and calibration error on held-out data.

    Args:
        model: Maps inputs to logits.
        x: Inputs.
        y: Labels.
        temperature: Divide the logits by this before the softmax (1: the model as trained).
        n_bins: Bins of the calibration error.

    Returns:
        ``{"acc": ..., "nll": ..., "conf": ..., "ece": ...}``; ``conf`` is the mean top probability
        (below ``acc``: under-confident on average; above: over-confident). The model is scored in
        ``eval()`` mode and gets its own mode back afterwards.

    Shapes:
        x: ``(n, ...)`` floating, finite; y: ``(n,)`` int64; the model's output: ``(n, K)``.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``, ``x`` not floating or ``y`` not int64.
        ValueError: If ``x`` is empty or not finite, the lengths differ, the model's output is not
            ``(n, K)`` or a label is not one of its classes, or ``temperature``/``n_bins`` is bad.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_tensor(x, "x", floating=True, nonempty=True)
    check_finite(x, "x")
    _check_labels(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    check_real(temperature, "temperature", above=0)
    check_int(n_bins, "n_bins")
    with evaluating(model):
        logits = model(x) / temperature
    if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(f"model must map the {x.shape[0]} rows of x to logits (n, K), got {tuple(logits.shape)}")
    _check_labels(y, "y", logits.shape[1])
    probs = logits.softmax(-1)
    return {
        "acc": float((logits.argmax(-1) == y).double().mean()),
        "nll": float(F.cross_entropy(logits, y)),
        "conf": float(probs.max(-1).values.mean()),
        "ece": expected_calibration_error(probs, y, n_bins),
    }


def temperature_for_confidence(logits: Tensor, confidence: float, *, iters: int = 60) -> float:
    r"""The temperature $T$ at which the mean top probability of ``softmax(logits / T)`` is ``confidence``.

    $$\frac1n \sum_i \max_k \operatorname{softmax}(z_i / T)_k = c .$$

    The left side falls monotonically from its $T \to 0$ limit (1 for distinct maxima) to $1/K$ as
    $T \to \infty$, so bisection on $\log T$ finds $T$ for any $1/K < c < 1$. The page uses it to
    flatten a plain network until it is exactly as confident as a mixup network, so that two
    linearity gaps are compared at equal confidence (a flatter model has a smaller gap for free).

    Args:
        logits: Logits of the model on the inputs where confidence is measured.
        confidence: Target mean top probability $c$, with $1/K < c < 1$.
        iters: Bisection steps on $\log T \in [\log 10^{-3}, \log 10^{3}]$.

    Returns:
        The temperature $T$.

    Shapes:
        logits: ``(n, K)``.

    Raises:
        TypeError: If ``logits`` is not a floating tensor.
        ValueError: If ``logits`` is not a finite ``(n, K)`` matrix with $K \ge 2$, ``confidence``
            is outside $(1/K, 1)$ or the target is not reached on $[10^{-3}, 10^3]$.

    Examples:
        >>> import torch
        >>> z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> t = temperature_for_confidence(z, 0.7)
        >>> round(float((z / t).softmax(-1).max(-1).values.mean()), 6)
        0.7
    """
    check_tensor(logits, "logits", 2, floating=True, nonempty=True)
    check_finite(logits, "logits")
    k = logits.shape[1]
    if k < 2:
        raise ValueError(f"logits must have at least 2 classes, got shape {tuple(logits.shape)}")
    check_real(confidence, "confidence", above=1 / k)
    check_real(confidence, "confidence", at_most=1 - 1e-12)
    check_int(iters, "iters", 1)
    z = logits.detach().to(torch.float64)

    def conf(log_t: float) -> float:
        return float((z / math.exp(log_t)).softmax(-1).max(-1).values.mean())

    lo, hi = math.log(1e-3), math.log(1e3)
    if not conf(hi) <= confidence <= conf(lo):
        raise ValueError(f"confidence {confidence} is not reached for temperatures in [1e-3, 1e3] "
                         f"(range {conf(hi):.4f} to {conf(lo):.4f})")
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if conf(mid) > confidence else (lo, mid)
    return math.exp((lo + hi) / 2)

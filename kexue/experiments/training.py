r"""The small training harness every page shares: seeded MLPs, seeded minibatches, one fit loop.

The pages train many tiny models. Instead of one loop per page, each page writes only what is
particular to its experiment, a **loss callback**, and hands it to [`fit`][kexue.experiments.training.fit]:

```
loss_fn(model, xb, yb, *, generator, epoch) -> scalar tensor
```

``generator`` is the run's own ``torch.Generator`` (the one that also shuffles the minibatches),
so a loss that draws random numbers (mixup's $\lambda$, dequantisation noise) stays reproducible
from one seed; ``epoch`` lets a loss follow a schedule (SamplePairing is switched on and off by
epoch). Named losses live in registries of such callbacks: [`LOSSES`][kexue.experiments.training.LOSSES]
here for the generic ones, and one registry per topic for the article's variants (mixup's mixers,
the Lipschitz penalties), never ``if method == ...`` branches inside a loop.

Examples:
    >>> import torch
    >>> from kexue.experiments.training import LOSSES, accuracy, fit, seeded_mlp
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(200, 2, generator=gen)
    >>> y = (x[:, 0] * x[:, 1] > 0).long()  # XOR of the signs
    >>> model = seeded_mlp([2, 32, 32, 2], seed=0)
    >>> history = fit(model, x, y, LOSSES["cross_entropy"], epochs=60, batch_size=50, lr=1e-2, seed=0)
    >>> history[-1] < 0.5 * history[0], accuracy(model, x, y) > 0.9
    (True, True)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_generator, check_int, check_real, check_tensor

__all__ = [
    "ACTIVATIONS",
    "seeded_mlp",
    "minibatches",
    "LossFn",
    "LOSSES",
    "fit",
    "evaluating",
    "accuracy",
    "run_side_by_side",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
}
"""Hidden-layer activations [`seeded_mlp`][kexue.experiments.training.seeded_mlp] accepts, by name."""


def seeded_mlp(
    sizes: Sequence[int],
    *,
    seed: int = 0,
    activation: str = "relu",
    dtype: torch.dtype = torch.float32,
    flatten: bool = False,
    zero_last: bool = False,
) -> nn.Sequential:
    r"""A multilayer perceptron ``Linear -> act -> ... -> Linear`` whose weights follow one seed.

    Each layer gets PyTorch's default initialisation, $W, b \sim U(-1/\sqrt{\text{fan-in}},
    1/\sqrt{\text{fan-in}})$, drawn from a generator seeded with ``seed`` (weights, then bias, layer
    by layer), so the network does not depend on the global random state and leaves it untouched.

    Args:
        sizes: Widths, input first and output last (at least two).
        seed: Seed of the initial weights.
        activation: Name in [`ACTIVATIONS`][kexue.experiments.training.ACTIVATIONS].
        dtype: Parameter dtype (floating).
        flatten: Start with ``nn.Flatten()`` (for image inputs).
        zero_last: Initialise the last layer to zero (the network starts as the zero map, as
            coupling networks of a flow usually do).

    Returns:
        The network.

    Raises:
        ValueError: If fewer than two sizes are given, a size is not a positive integer, or the
            activation is unknown.
        TypeError: If ``dtype`` is not a floating dtype.
    """
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(f"sizes must be a sequence of layer widths, got {type(sizes).__name__}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must hold at least two widths (input and output), got {sizes}")
    for i, s in enumerate(sizes):
        check_int(s, f"sizes[{i}]", 1)
    check_int(seed, "seed", 0)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    pairs = list(itertools.pairwise(sizes))
    for i, (a, b) in enumerate(pairs):
        lin = nn.utils.skip_init(nn.Linear, a, b, dtype=dtype)  # no draw from the global generator
        bound = 1 / math.sqrt(a)
        with torch.no_grad():
            if zero_last and i == len(pairs) - 1:
                lin.weight.zero_()
                lin.bias.zero_()
            else:
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
        layers.append(lin)
        if i < len(pairs) - 1:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def minibatches(n: int, batch_size: int, *, generator: torch.Generator) -> list[Tensor]:
    """Indices of one shuffled pass over ``n`` examples, in minibatches of ``batch_size``.

    The last batch is smaller when ``batch_size`` does not divide ``n``.

    Args:
        n: Number of examples.
        batch_size: Examples per batch.
        generator: Draws the permutation.

    Returns:
        A list of int64 index tensors covering ``range(n)`` once.

    Raises:
        ValueError: If ``n`` or ``batch_size`` is not a positive integer.
        TypeError: If ``generator`` is not a ``torch.Generator``.
    """
    check_int(n, "n", 1)
    check_int(batch_size, "batch_size", 1)
    check_generator(generator)
    return list(torch.randperm(n, generator=generator).split(batch_size))


class LossFn(Protocol):
    """A training loss for [`fit`][kexue.experiments.training.fit]: ``loss_fn(model, xb, yb, *, generator, epoch)``."""

    def __call__(self, model: nn.Module, xb: Tensor, yb: Tensor, *, generator: torch.Generator, epoch: int) -> Tensor:
        """Return the scalar loss of one minibatch."""
        ...


def _cross_entropy(model: nn.Module, xb: Tensor, yb: Tensor, *, generator: torch.Generator, epoch: int) -> Tensor:
    return F.cross_entropy(model(xb), yb)


def _mse(model: nn.Module, xb: Tensor, yb: Tensor, *, generator: torch.Generator, epoch: int) -> Tensor:
    return F.mse_loss(model(xb), yb)


LOSSES: dict[str, LossFn] = {
    "cross_entropy": _cross_entropy,
    "mse": _mse,
}
"""Generic losses by name: ``"cross_entropy"`` (integer labels) and ``"mse"`` (real targets)."""


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in ``eval()`` mode and turn off gradients; restore its mode afterwards."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def fit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    *,
    epochs: int,
    batch_size: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    clip_grad_norm: float | None = None,
) -> list[float]:
    """Train ``model`` with Adam on shuffled minibatches of ``(x, y)``; return the loss per epoch.

    One loop for every page: shuffle with the run's generator, call ``loss_fn`` on each
    minibatch, step Adam (with decoupled ``weight_decay``, i.e. AdamW, when it is positive), then
    ``after_step(model)`` if given (a projection, a clipping, a normalisation update). The model
    is in ``train()`` mode during the loop and back in the mode it had afterwards.

    Args:
        model: The network (trained in place).
        x: Inputs, one example per row along dimension 0.
        y: Targets, same length as ``x``.
        loss_fn: A [`LossFn`][kexue.experiments.training.LossFn], e.g. ``LOSSES["cross_entropy"]``.
        epochs: Passes over the data.
        batch_size: Examples per minibatch.
        lr: Learning rate.
        weight_decay: Decoupled weight decay (AdamW); 0 gives plain Adam.
        seed: Seeds the run's generator (ignored when ``generator`` is given).
        generator: The run's generator, when the caller wants to share or continue one.
        after_step: Called with the model after each optimiser step.
        clip_grad_norm: Clip the global gradient norm to this value before each step.

    Returns:
        The mean minibatch loss of each epoch (weighted by batch size).

    Shapes:
        x: ``(n, ...)``; y: ``(n, ...)``.

    Raises:
        TypeError: If ``model`` is not a module, ``x``/``y`` are not tensors, or ``loss_fn`` is
            not callable.
        ValueError: If ``x`` and ``y`` differ in length, are empty, or a hyper-parameter is out of range.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_tensor(x, "x", nonempty=True)
    check_tensor(y, "y")
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length along dimension 0, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    check_int(epochs, "epochs", 1)
    check_int(batch_size, "batch_size", 1)
    check_real(lr, "lr", above=0)
    check_real(weight_decay, "weight_decay", at_least=0)
    if clip_grad_norm is not None:
        check_real(clip_grad_norm, "clip_grad_norm", above=0)
    if generator is None:
        check_int(seed, "seed", 0)
        generator = torch.Generator().manual_seed(seed)
    else:
        check_generator(generator)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if weight_decay > 0:
        opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr)
    n = x.shape[0]
    history: list[float] = []
    was_training = model.training
    model.train()
    try:
        for epoch in range(epochs):
            total = 0.0
            for idx in minibatches(n, batch_size, generator=generator):
                loss = loss_fn(model, x[idx], y[idx], generator=generator, epoch=epoch)
                if not isinstance(loss, Tensor) or loss.dim() != 0:
                    raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r:.80}")
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} in epoch {epoch}; lower lr or check the data")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(params, clip_grad_norm)
                opt.step()
                if after_step is not None:
                    after_step(model)
                total += loss.item() * idx.numel()
            history.append(total / n)
    finally:
        model.train(was_training)
    return history


def accuracy(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int | None = None) -> float:
    """Fraction of rows whose largest output is the label (in ``eval()`` mode, mode restored).

    Args:
        model: A classifier returning ``(n, classes)`` scores.
        x: Inputs.
        y: Integer labels.
        batch_size: Evaluate in chunks of this many rows (None: all at once).

    Shapes:
        x: ``(n, ...)``; y: ``(n,)`` integer.
    """
    check_tensor(x, "x", nonempty=True)
    check_tensor(y, "y", 1, floating=False)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    step = x.shape[0] if batch_size is None else check_int(batch_size, "batch_size", 1)
    correct = 0
    with evaluating(model):
        for start in range(0, x.shape[0], step):
            scores = model(x[start : start + step])
            correct += int((scores.argmax(-1) == y[start : start + step]).sum())
    return correct / x.shape[0]


def run_side_by_side(jobs: Sequence[Callable[[], object]], *, workers: int = 2) -> list[object]:
    """Run independent jobs (typically trainings) two at a time, each operation single-threaded.

    The pages' models are small: splitting each of their operations over two cores (PyTorch's
    intra-op threads) makes the threads meet at the end of every operation, which is cheap on an
    idle machine but slow when other processes share the cores (a thread that must wait for a
    descheduled partner waits a whole time slice). Two trainings side by side, each operation on
    one core, keep both cores busy without such meetings, because PyTorch releases the GIL inside
    each operation. On the capsule page this was about as fast as two threads per operation on an
    idle machine and several times faster beside another page's build. This runs the jobs in a
    pool of ``workers`` threads with PyTorch's intra-op thread count set to 1, restores the count
    afterwards, and returns the results in the order of ``jobs``.

    The results are those of running the jobs one after another, whatever the interleaving,
    provided each job draws random numbers only from its own ``torch.Generator``: the global
    generator is shared, so a job drawing from it would make the results depend on the
    scheduling. That is checked: if the global generator's state changed, a ``RuntimeError`` is
    raised. Build the models (which seed the global generator) before, not inside, the jobs.
    Whether an operation's result depends on the intra-op thread count depends on the operation
    (a reduction may split its sum differently); a page using this states its thread count.

    Args:
        jobs: Zero-argument callables.
        workers: Jobs running at once (>= 1).

    Returns:
        Each job's return value, in order.

    Raises:
        TypeError: If ``jobs`` is not a sequence of callables.
        RuntimeError: If a job drew from the global random generator.

    Examples:
        >>> import torch
        >>> from kexue.experiments.training import run_side_by_side
        >>> def job(seed):
        ...     g = torch.Generator().manual_seed(seed)
        ...     return lambda: float(torch.randn(1000, generator=g).mean())
        >>> run_side_by_side([job(0), job(1)]) == [job(0)(), job(1)()]
        True
    """
    if isinstance(jobs, (str, bytes)) or not isinstance(jobs, Sequence):
        raise TypeError(f"jobs must be a sequence of zero-argument callables, got {type(jobs).__name__}")
    for i, job in enumerate(jobs):
        if not callable(job):
            raise TypeError(f"jobs[{i}] must be callable, got {type(job).__name__}")
    check_int(workers, "workers", 1)
    threads, state = torch.get_num_threads(), torch.random.get_rng_state()

    def single_threaded(job: Callable[[], object]) -> object:
        torch.set_num_threads(1)  # per thread under OpenMP: set it in the worker itself
        return job()

    try:
        torch.set_num_threads(1)
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(single_threaded, jobs))
    finally:
        torch.set_num_threads(threads)
    if not torch.equal(torch.random.get_rng_state(), state):
        raise RuntimeError(
            "a job drew from the global random generator, so its results depend on the order the "
            "jobs ran in; give every random draw an explicit torch.Generator"
        )
    return results

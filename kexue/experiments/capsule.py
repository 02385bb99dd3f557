r"""Experiment helpers for the capsule page: two-digit test images, CPU-sized classifiers, seed stacks.

The article's test ([kexue.fm/archives/4819](https://kexue.fm/archives/4819)) trains a CNN
and a capsule network on single digits and asks both to name the two digits of an image that
holds two. This module builds that test at CPU scale on scikit-learn's 8x8 digits:

* [`make_pairs`][kexue.experiments.capsule.make_pairs] and
  [`pair_accuracy`][kexue.experiments.capsule.pair_accuracy]: the two-digit images and the
  article's top-2 metric;
* [`ConvTrunk`][kexue.experiments.capsule.ConvTrunk],
  [`CNNClassifier`][kexue.experiments.capsule.CNNClassifier] and
  [`CapsuleClassifier`][kexue.experiments.capsule.CapsuleClassifier]: small stand-ins for the
  article's Keras models, registered in [`MODELS`][kexue.experiments.capsule.MODELS];
* [`SeedStack`][kexue.experiments.capsule.SeedStack]: several seeds of one model trained as a
  single module (``torch.func.vmap`` over stacked weights), so three seeds cost about one run;
* [`train_members`][kexue.experiments.capsule.train_members]: trains a stack with the shared
  [`fit`][kexue.experiments.training.fit] loop and a loss from
  [`LOSSES`][kexue.experiments.capsule.LOSSES], every member with its own batch order;
* [`evaluate_members`][kexue.experiments.capsule.evaluate_members]: every member's accuracy on
  single digits and on each kind of two-digit image.

Examples:
    >>> import torch
    >>> from kexue.data import load_digits
    >>> from kexue.experiments.capsule import SeedStack, build_model, evaluate_members, make_pairs, train_members
    >>> images, labels = load_digits()
    >>> stack = SeedStack(lambda s: build_model("capsule", seed=s, routing="su5112", squash_c=0.5), seeds=(0, 1, 2))
    >>> history = train_members(stack, images[:300], labels[:300], epochs=2, batch_size=50, lr=3e-3)
    >>> len(history), history[-1] < history[0]
    (2, True)
    >>> pairs = {"vertical": make_pairs(images[300:400], labels[300:400], mode="vertical", seed=1)}
    >>> acc = evaluate_members(stack, pairs, single=(images[300:400], labels[300:400]))
    >>> sorted(acc), acc["single"].shape  # one accuracy per seed
    (['single', 'vertical', 'vertical>0.5'], torch.Size([3]))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from kexue._checks import check_bool, check_finite, check_int, check_real, check_tensor
from kexue.capsule import CapsuleLayer, margin_loss
from kexue.experiments.training import LossFn, evaluating, fit

__all__ = [
    "LOSSES",
    "MODELS",
    "CNNClassifier",
    "CapsuleClassifier",
    "ConvTrunk",
    "SeedStack",
    "build_model",
    "evaluate_members",
    "make_pairs",
    "member_orders",
    "pair_accuracy",
    "train_members",
]


# ----------------------------------------------------------------------------- the two-digit test


# --8<-- [start:pairs]
def make_pairs(
    images: Tensor,
    labels: Tensor,
    *,
    mode: Literal["vertical", "horizontal", "overlay"] = "vertical",
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Two-digit test images: each image joined with a random partner of another class.

    ``"vertical"`` stacks the partner below the image (``2H x W``, no overlap), as the
    article's test script does with MNIST; ``"horizontal"`` puts it to the right
    (``H x 2W``); ``"overlay"`` takes the pixel-wise maximum (``H x W``), closer to the
    paper's MultiMNIST (which also shifts the digits).

    Args:
        images: Single-digit images.
        labels: Their labels; at least two classes must occur.
        mode: How to join the two digits.
        seed: Seed for choosing partners.

    Returns:
        ``(pair_images, pair_labels)``: one pair per input image, ``pair_labels[:, 0]`` being
        the image's own label and ``pair_labels[:, 1]`` its partner's.

    Shapes:
        images: ``(n, 1, H, W)``; labels: ``(n,)``; pair_images: ``(n, 1, 2H, W)``,
        ``(n, 1, H, 2W)`` or ``(n, 1, H, W)``; pair_labels: ``(n, 2)``.

    Raises:
        TypeError: If ``images`` is not a floating tensor or ``labels`` not an integer tensor.
        ValueError: On wrong shapes, an empty batch, an unknown ``mode``, a single class or a
            negative ``seed``.

    Examples:
        >>> import torch
        >>> images, labels = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
        >>> pairs, pair_labels = make_pairs(images, labels, mode="vertical", seed=0)
        >>> pairs.shape, bool((pair_labels[:, 0] != pair_labels[:, 1]).all())
        (torch.Size([6, 1, 16, 8]), True)
    """
    check_tensor(images, "images", 4, floating=True, nonempty=True)
    _check_labels(labels, "labels", images.shape[0])
    if mode not in ("vertical", "horizontal", "overlay"):
        raise ValueError(f"mode must be 'vertical', 'horizontal' or 'overlay', got {mode!r}")
    check_int(seed, "seed", 0)
    if labels.unique().numel() < 2:
        raise ValueError("labels must contain at least two different classes")
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    partner = torch.randint(n, (n,), generator=gen)
    clash = labels[partner] == labels
    while clash.any():  # redraw partners with the same label until none is left
        partner[clash] = torch.randint(n, (int(clash.sum()),), generator=gen)
        clash = labels[partner] == labels
    other = images[partner]
    if mode == "vertical":
        joined = torch.cat([images, other], dim=2)
    elif mode == "horizontal":
        joined = torch.cat([images, other], dim=3)
    else:
        joined = torch.maximum(images, other)
    return joined, torch.stack([labels, labels[partner]], dim=1)


# --8<-- [end:pairs]


def pair_accuracy(scores: Tensor, pair_labels: Tensor, threshold: float | None = None) -> float:
    """Share of images whose two highest scores are exactly the two digits in it.

    The article's test: the set of the top-2 classes must equal the set of true labels.
    With ``threshold`` (the article uses 0.5), both of those scores must also exceed it,
    i.e. the model must be confident that both digits are there.

    Args:
        scores: Class scores of two-digit images.
        pair_labels: The two (different) labels of each image.
        threshold: Optional minimum score for both top-2 classes.

    Returns:
        Accuracy in [0, 1].

    Shapes:
        scores: ``(n, classes)``; pair_labels: ``(n, 2)``.

    Raises:
        TypeError: If ``scores`` is not a floating tensor or ``pair_labels`` not an integer tensor.
        ValueError: On mismatched shapes, an empty batch, fewer than 2 classes, NaN/inf scores,
            labels outside ``[0, classes)`` or two equal labels for one image.

    Examples:
        >>> import torch
        >>> scores = torch.tensor([[0.9, 0.8, 0.1], [0.9, 0.1, 0.4]])
        >>> pair_accuracy(scores, torch.tensor([[1, 0], [0, 1]]))  # the second image's top 2 are 0 and 2
        0.5
    """
    check_tensor(scores, "scores", 2, floating=True)
    if scores.shape[0] == 0:
        raise ValueError("scores must hold at least one image")
    if scores.shape[1] < 2:
        raise ValueError(f"scores need at least 2 classes, got {scores.shape[1]}")
    check_finite(scores, "scores")
    _check_pair_labels(pair_labels, "pair_labels", scores.shape[0], scores.shape[1])
    if threshold is not None:
        threshold = check_real(threshold, "threshold")
    return _pair_accuracy(scores, pair_labels, threshold)


def _pair_accuracy(scores: Tensor, pair_labels: Tensor, threshold: float | None) -> float:
    top, idx = scores.topk(2, dim=1)
    ok = (idx.sort(dim=1).values == pair_labels.sort(dim=1).values).all(dim=1)
    if threshold is not None:
        ok = ok & (top[:, 1] > threshold)
    return float(ok.double().mean())


def _check_labels(labels: object, name: str, n: int) -> Tensor:
    """Integer class labels, one per image (``(n,)``)."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class labels, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class labels, got {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{name} must be a tensor of shape ({n},), got {tuple(labels.shape)}")
    return labels


def _check_label_range(labels: Tensor, name: str, classes: int) -> None:
    """Labels must index the model's classes (an out-of-range label would only lower the accuracy)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(
            f"{name} must be class labels in [0, {classes - 1}], got labels from {int(labels.min())} to {int(labels.max())}"
        )


def _check_pair_labels(labels: object, name: str, n: int, classes: int) -> Tensor:
    """Two different integer labels per image (``(n, 2)``), each in ``[0, classes)``."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of label pairs, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of label pairs, got {labels.dtype}")
    if labels.shape != (n, 2):
        raise ValueError(f"{name} must have shape ({n}, 2), got {tuple(labels.shape)}")
    _check_label_range(labels, name, classes)
    if bool((labels[:, 0] == labels[:, 1]).any()):
        raise ValueError(f"{name} must hold two different labels per image")
    return labels


def _check_channels(channels: object) -> tuple[int, int, int]:
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence):
        raise TypeError(f"channels must be a sequence of three positive integers, got {type(channels).__name__}")
    if len(channels) != 3:
        raise ValueError(f"channels must hold three positive integers, got {channels!r}")
    for i, c in enumerate(channels):
        check_int(c, f"channels[{i}]")
    return tuple(channels)


# ----------------------------------------------------------------------------- models


class ConvTrunk(nn.Module):
    """The shared feature extractor: two 3x3 convolutions, 2x2 average pooling, one more.

    A CPU-sized version of the article's trunk (its 'valid' 3x3 stack would leave
    nothing of an 8x8 image, so we pad): ``(B, 1, H, W) -> (B, C, H/2, W/2)``. Odd sizes are
    rejected (the pooling would drop the last row or column); NaN/inf in the images propagate,
    as in any layer (the evaluation helpers reject them).

    Args:
        channels: Output channels of the three convolutions.

    Shapes:
        input: ``(batch, 1, H, W)`` with even ``H`` and ``W``; output: ``(batch, channels[2], H/2, W/2)``.

    Raises:
        TypeError: If ``channels`` is not a sequence.
        ValueError: If it does not hold three positive integers.
    """

    def __init__(self, channels: tuple[int, int, int] = (32, 32, 64)) -> None:
        super().__init__()
        c1, c2, c3 = _check_channels(channels)
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.out_channels = c3

    def forward(self, x: Tensor) -> Tensor:
        """Feature map of ``x``.

        Raises:
            TypeError: If ``x`` is not a floating tensor of the trunk's dtype.
            ValueError: If ``x`` is not ``(batch, 1, H, W)`` with even, positive ``H`` and ``W``
                (the pooling would silently drop an odd last row or column).
        """
        check_tensor(x, "x", 4, floating=True)
        dtype = self.net[0].weight.dtype
        if x.dtype != dtype:
            raise TypeError(f"x must have the model's dtype {dtype}, got {x.dtype}")
        if x.shape[1] != 1:
            raise ValueError(f"x must hold one-channel images (batch, 1, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[2], x.shape[3]
        if h == 0 or w == 0 or h % 2 or w % 2:
            raise ValueError(f"x must have an even, positive height and width (the trunk halves them), got {h}x{w}")
        return self.net(x)


class CNNClassifier(nn.Module):
    """Trunk, global average pooling, a hidden layer and one sigmoid per class.

    The article's baseline (its CNN ends in ``GlobalAveragePooling2D``, a dense layer and ten
    sigmoids), at CPU scale.

    Args:
        num_classes: Number of classes.
        hidden: Width of the hidden layer.
        channels: Trunk channels.

    Shapes:
        input: ``(batch, 1, H, W)`` with even ``H`` and ``W``; output scores: ``(batch, num_classes)``
        in (0, 1).

    Raises:
        TypeError: If ``channels`` is not a sequence.
        ValueError: If a size is not a positive integer.
    """

    def __init__(
        self, num_classes: int = 10, hidden: int = 128, channels: tuple[int, int, int] = (32, 32, 64)
    ) -> None:
        super().__init__()
        check_int(num_classes, "num_classes")
        check_int(hidden, "hidden")
        self.trunk = ConvTrunk(channels)
        self.head = nn.Sequential(nn.Linear(channels[2], hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Class scores of ``x``."""
        return torch.sigmoid(self.head(self.trunk(x).mean(dim=(2, 3))))


class CapsuleClassifier(nn.Module):
    """Trunk, every feature-map position as an input capsule, a shared capsule layer; scores are lengths.

    The article's capsule model (trunk, ``Reshape((-1, 128))``, one shared
    [`CapsuleLayer`][kexue.capsule.CapsuleLayer], lengths as scores), at CPU scale.

    Args:
        num_classes: Number of output capsules (classes).
        dim_caps: Output capsule dimension.
        iterations: Routing passes.
        routing: A key of [`ROUTINGS`][kexue.capsule.ROUTINGS].
        channels: Trunk channels (the last one is the input capsule dimension).
        squash_c: Squash constant; ``None`` takes the routing's source's.

    Shapes:
        input: ``(batch, 1, H, W)`` with even ``H`` and ``W``; output scores: ``(batch, num_classes)``
        in [0, 1).

    Raises:
        TypeError: If ``channels`` is not a sequence.
        ValueError: If a size or ``iterations`` is not a positive integer, the routing is unknown
            or ``squash_c`` is not positive.
    """

    def __init__(
        self,
        num_classes: int = 10,
        dim_caps: int = 16,
        *,
        iterations: int = 3,
        routing: str = "su4819",
        channels: tuple[int, int, int] = (32, 32, 64),
        squash_c: float | None = None,
    ) -> None:
        super().__init__()
        check_int(num_classes, "num_classes")  # named here: the capsule layer calls it num_caps
        check_int(dim_caps, "dim_caps")
        self.trunk = ConvTrunk(channels)
        self.caps = CapsuleLayer(
            channels[2], num_classes, dim_caps, iterations=iterations, routing=routing, squash_c=squash_c
        )

    def input_capsules(self, x: Tensor) -> Tensor:
        """The input capsules of ``x``: one per feature-map position, in row-major order.

        Shapes:
            x: ``(batch, 1, H, W)``; output: ``(batch, H/2 * W/2, channels[2])``.
        """
        return self.trunk(x).flatten(2).transpose(1, 2)

    def capsules(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Output capsules and couplings of ``x``: ``(batch, classes, dim_caps)``, ``(batch, n_in, classes)``."""
        return self.caps(self.input_capsules(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class scores (capsule lengths) of ``x``."""
        return torch.linalg.vector_norm(self.capsules(x)[0], dim=-1)


MODELS: dict[str, Callable[..., nn.Module]] = {"cnn": CNNClassifier, "capsule": CapsuleClassifier}
"""The page's classifiers by name: ``"cnn"`` (global pooling) and ``"capsule"``."""


def build_model(kind: str, *, seed: int = 0, **kwargs: object) -> nn.Module:
    """Build a classifier of [`MODELS`][kexue.experiments.capsule.MODELS] with seeded initial weights.

    The global torch generator is forked, so the caller's random state is untouched. Two
    capsule models with the same seed start from the same trunk and capsule weights, whatever
    their routing and squash constant.

    Args:
        kind: ``"cnn"`` or ``"capsule"``.
        seed: Seed of the initial weights.
        **kwargs: Passed to the class.

    Returns:
        The model.

    Raises:
        ValueError: If ``kind`` is unknown or ``seed`` is not a non-negative integer.
    """
    if not isinstance(kind, str) or kind not in MODELS:
        raise ValueError(f"kind must be one of {sorted(MODELS)}, got {kind!r}")
    check_int(seed, "seed", 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[kind](**kwargs)


# ----------------------------------------------------------------------------- seed stacks


class SeedStack(nn.Module):
    """Several seeds of one model as a single module: stacked weights, one vectorised forward.

    Each member is built by ``build(seed)``; their parameters are stacked along a new leading
    axis and the forward pass maps the member's function over that axis with
    ``torch.func.vmap``. Summing the members' losses and stepping Adam on the stacked
    parameters trains every member exactly as if it were trained alone (Adam's update is
    element-wise), at roughly the cost of one larger model instead of several small ones.
    Attributes of the members' modules that are not parameters (a routing's ``iterations``)
    are shared: set them on [`base`][kexue.experiments.capsule.SeedStack.base].

    Args:
        build: Returns the member model for a seed; all members must have the same parameters.
        seeds: One seed per member (distinct non-negative integers).

    Shapes:
        forward input: ``(batch, members, ...)``, member ``k`` sees ``x[:, k]``; output:
        ``(batch, members, ...)``. ``same_input`` takes ``(batch, ...)``, the same batch for
        every member.

    Raises:
        TypeError: If ``build`` is not callable or does not return modules, or ``seeds`` is not
            a sequence.
        ValueError: If ``seeds`` is empty, holds anything but non-negative integers or repeats a
            seed, or the members differ in their parameters or hold buffers.
    """

    def __init__(self, build: Callable[[int], nn.Module], seeds: Sequence[int]) -> None:
        super().__init__()
        if not callable(build):
            raise TypeError(f"build must be callable (seed -> module), got {type(build).__name__}")
        seeds = _check_seeds(seeds)
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        members = [build(s) for s in seeds]
        if not all(isinstance(m, nn.Module) for m in members):
            raise TypeError("build must return torch.nn.Module instances")
        shapes = [[(n, p.shape) for n, p in m.named_parameters()] for m in members]
        if any(s != shapes[0] for s in shapes):
            raise ValueError("every member must have the same parameter names and shapes")
        if any(True for m in members for _ in m.buffers()):
            raise ValueError("members with buffers (e.g. batch norm) are not supported")
        self.seeds = seeds
        self._names = [n for n, _ in members[0].named_parameters()]
        self.stacked = nn.ParameterDict(
            {
                n.replace(".", "__"): nn.Parameter(torch.stack([dict(m.named_parameters())[n].detach() for m in members]))
                for n in self._names
            }
        )
        self._base = (copy.deepcopy(members[0]).to("meta"),)  # a tuple: not registered as a submodule

    @property
    def base(self) -> nn.Module:
        """The members' shared module structure (weights on the ``meta`` device)."""
        return self._base[0]

    @property
    def members(self) -> int:
        """Number of members (seeds)."""
        return len(self.seeds)

    def _params(self) -> dict[str, Tensor]:
        return {n: self.stacked[n.replace(".", "__")] for n in self._names}

    def _call(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return torch.func.functional_call(self.base, params, (x,))

    def forward(self, x: Tensor) -> Tensor:
        """Member ``k``'s output on ``x[:, k]``, for every ``k``."""
        check_tensor(x, "x", floating=True)
        if x.dim() < 2 or x.shape[1] != self.members:
            raise ValueError(f"x must have shape (batch, {self.members}, ...), got {tuple(x.shape)}")
        return torch.func.vmap(self._call, in_dims=(0, 1), out_dims=1)(self._params(), x)

    def same_input(self, x: Tensor) -> Tensor:
        """Every member's output on the same batch ``x``: ``(batch, members, ...)``."""
        check_tensor(x, "x", floating=True)
        return torch.func.vmap(self._call, in_dims=(0, None), out_dims=1)(self._params(), x)

    def member(self, k: int) -> nn.Module:
        """A stand-alone copy of member ``k`` (a plain module with that member's weights)."""
        check_int(k, "k", 0)
        if k >= self.members:
            raise ValueError(f"k must be < {self.members}, got {k}")
        model = copy.deepcopy(self.base).to_empty(device="cpu")
        with torch.no_grad():
            model.load_state_dict({n: p[k].detach().clone() for n, p in self._params().items()})
        return model

    def train(self, mode: bool = True) -> SeedStack:
        """Set training mode on the stack and on the shared module structure.

        Raises:
            ValueError: If ``mode`` is not a bool.
        """
        check_bool(mode, "mode")
        super().train(mode)
        self.base.train(mode)
        return self


def _check_seeds(seeds: object) -> tuple[int, ...]:
    """A non-empty sequence of non-negative integer seeds."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise TypeError(f"seeds must be a sequence of non-negative integers, got {type(seeds).__name__}")
    if not seeds:
        raise ValueError("seeds must name at least one seed, got none")
    for i, s in enumerate(seeds):
        check_int(s, f"seeds[{i}]", 0)
    return tuple(seeds)


def member_orders(x: Tensor, y: Tensor, seeds: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The training set in one shuffled order per member, side by side.

    Column ``k`` is ``(x, y)`` permuted by a permutation drawn from ``seeds[k]``. When the
    training loop then shuffles the rows, member ``k`` sees its own batches: its permutation
    composed with a uniformly random shuffle is again a uniformly random shuffle, and different
    seeds give different batches.

    Args:
        x: Training inputs.
        y: Training targets.
        seeds: One seed per member.

    Returns:
        ``(xs, ys)`` with a member axis after the example axis.

    Shapes:
        x: ``(n, ...)``; y: ``(n,)``; xs: ``(n, members, ...)``; ys: ``(n, members)``.

    Raises:
        TypeError: If ``x`` or ``y`` is not a tensor or ``seeds`` is not a sequence.
        ValueError: If ``x`` is empty or 0-d, ``x`` and ``y`` differ in length, or ``seeds`` is
            empty or holds anything but non-negative integers.
    """
    check_tensor(x, "x", nonempty=True)
    if x.dim() == 0:
        raise ValueError("x must have an example axis, got a 0-d tensor")
    check_tensor(y, "y", 1)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    seeds = _check_seeds(seeds)
    perms = [torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack([x[p] for p in perms], dim=1), torch.stack([y[p] for p in perms], dim=1)


def _margin(lam: float) -> LossFn:
    def loss(model: nn.Module, xb: Tensor, yb: Tensor, *, generator: torch.Generator, epoch: int) -> Tensor:
        scores = model(xb)  # (batch, classes), or (batch, members, classes) for a SeedStack
        if scores.dim() == 3:  # the sum of the members' own mean losses
            return margin_loss(scores.flatten(0, 1), yb.flatten(), lam=lam) * scores.shape[1]
        return margin_loss(scores, yb, lam=lam)

    return loss


LOSSES: dict[str, LossFn] = {
    "margin": _margin(0.25),
    "margin_paper": _margin(0.5),
}
"""Loss callbacks for [`fit`][kexue.experiments.training.fit]: the margin loss with the article's
test-script weight ``lam=0.25`` (``"margin"``, for the CNN's sigmoids and the capsule lengths
alike) or the paper's ``0.5``. On a [`SeedStack`][kexue.experiments.capsule.SeedStack] they
return the sum of the members' mean losses, so each member gets its own gradient."""


def _stack_dtype(stack: SeedStack) -> torch.dtype:
    return next(iter(stack.parameters())).dtype


def _check_images(images: object, name: str, dtype: torch.dtype) -> Tensor:
    """A non-empty batch of finite images ``(n, 1, H, W)`` in the models' dtype."""
    x = check_tensor(images, name, 4, floating=True, nonempty=True)
    if x.dtype != dtype:
        raise TypeError(f"{name} must have the models' dtype {dtype}, got {x.dtype}")
    return check_finite(x, name)


def _member_scores(stack: SeedStack, images: Tensor, name: str) -> Tensor:
    """Every member's scores of ``images``; an input the members reject is named as the caller's ``name``."""
    try:
        return stack.same_input(images)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{name} was rejected by the members: {error}") from error


def _num_classes(stack: SeedStack, images: Tensor, name: str) -> int:
    """The stack's number of classes: the last axis of its scores for one image."""
    with evaluating(stack):
        return _member_scores(stack, images[:1], name).shape[-1]


def train_members(
    stack: SeedStack,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    loss: str = "margin",
    after_epoch: Callable[[SeedStack], object] | None = None,
) -> list[float]:
    """Train every member of a stack on single digits, each with its own batch order.

    The data are laid out by [`member_orders`][kexue.experiments.capsule.member_orders] (one
    permutation per member's seed) and trained with the shared
    [`fit`][kexue.experiments.training.fit] loop (Adam), whose own shuffle is seeded with the
    first member's seed. The stack is in ``train()`` mode during the loop and back in the mode
    it had afterwards.

    Args:
        stack: The members to train (in place).
        images: Training images, finite, in the members' dtype.
        labels: Their integer labels, each a class of the members' output.
        epochs: Passes over the data.
        batch_size: Examples per minibatch (per member).
        lr: Adam learning rate.
        loss: A key of [`LOSSES`][kexue.experiments.capsule.LOSSES].
        after_epoch: Called with the stack at the end of every epoch (in ``eval()`` mode and
            without gradients), e.g. to record test curves.

    Returns:
        The mean training loss per member, one value per epoch.

    Shapes:
        images: ``(n, 1, H, W)``; labels: ``(n,)``.

    Raises:
        TypeError: If ``stack`` is not a [`SeedStack`][kexue.experiments.capsule.SeedStack],
            ``images`` not a floating tensor of the members' dtype, ``labels`` not an integer
            tensor, or ``after_epoch`` not callable.
        ValueError: On mismatched shapes, an empty batch, NaN/inf images, labels outside the
            members' classes, an unknown loss or a bad hyper-parameter.
    """
    if not isinstance(stack, SeedStack):
        raise TypeError(f"stack must be a SeedStack, got {type(stack).__name__}")
    _check_images(images, "images", _stack_dtype(stack))
    _check_labels(labels, "labels", images.shape[0])
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    check_int(epochs, "epochs")
    check_int(batch_size, "batch_size")
    if after_epoch is not None and not callable(after_epoch):
        raise TypeError(f"after_epoch must be callable (stack -> anything) or None, got {type(after_epoch).__name__}")
    _check_label_range(labels, "labels", _num_classes(stack, images, "images"))
    xs, ys = member_orders(images, labels, stack.seeds)
    steps = -(-images.shape[0] // batch_size)
    hook = None
    if after_epoch is not None:
        count = [0]

        def hook(model: nn.Module) -> None:
            count[0] += 1
            if count[0] % steps == 0:
                with evaluating(model):
                    after_epoch(stack)

    history = fit(
        stack, xs, ys, LOSSES[loss], epochs=epochs, batch_size=batch_size, lr=lr, seed=stack.seeds[0], after_step=hook
    )
    return [h / stack.members for h in history]


def evaluate_members(
    stack: SeedStack,
    pairs: Mapping[str, tuple[Tensor, Tensor]],
    *,
    single: tuple[Tensor, Tensor] | None = None,
    threshold: float = 0.5,
) -> dict[str, Tensor]:
    """Every member's accuracy on each set of two-digit images, and optionally on single digits.

    The stack is evaluated in ``eval()`` mode without gradients; its mode is restored afterwards.

    Args:
        stack: Trained members.
        pairs: Two-digit test sets by name, as [`make_pairs`][kexue.experiments.capsule.make_pairs]
            returns them.
        single: Optional ``(images, labels)`` of single digits (top-1 accuracy, key ``"single"``).
        threshold: The strict metric's minimum score for both digits.

    Returns:
        ``{name: ..., name + ">0.5": ..., "single": ...}`` (the strict key uses the threshold's
        value), each a float64 tensor with one accuracy per member.

    Shapes:
        pairs: ``{name: ((n, 1, H, W), (n, 2))}``; single: ``((m, 1, h, w), (m,))``; every
        output: ``(members,)``.

    Raises:
        TypeError: If ``stack`` is not a [`SeedStack`][kexue.experiments.capsule.SeedStack],
            ``pairs`` not a mapping of ``(images, pair_labels)`` pairs, ``single`` not an
            ``(images, labels)`` pair, or images or labels of the wrong dtype.
        ValueError: On mismatched shapes, empty or non-finite images, labels outside the
            members' classes (or two equal labels for one image), or a bad threshold.
    """
    if not isinstance(stack, SeedStack):
        raise TypeError(f"stack must be a SeedStack, got {type(stack).__name__}")
    threshold = check_real(threshold, "threshold")
    dtype = _stack_dtype(stack)
    if not isinstance(pairs, Mapping):
        raise TypeError(f"pairs must be a mapping of name -> (images, pair_labels), got {type(pairs).__name__}")
    for name, entry in pairs.items():
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise TypeError(f"pairs[{name!r}] must be an (images, pair_labels) pair, got {type(entry).__name__}")
        _check_images(entry[0], f"pairs[{name!r}][0]", dtype)
    if single is not None:
        if not isinstance(single, (tuple, list)) or len(single) != 2:
            raise TypeError(f"single must be an (images, labels) pair or None, got {type(single).__name__}")
        _check_images(single[0], "single[0]", dtype)
        _check_labels(single[1], "single[1]", single[0].shape[0])
    out: dict[str, Tensor] = {}
    with evaluating(stack):
        if single is not None:
            images, labels = single
            scores = check_finite(_member_scores(stack, images, "single[0]"), "the members' scores")
            _check_label_range(labels, "single[1]", scores.shape[-1])
            out["single"] = (scores.argmax(-1) == labels.unsqueeze(1)).double().mean(0)
        for name, (x2, y2) in pairs.items():
            scores = check_finite(_member_scores(stack, x2, f"pairs[{name!r}][0]"), "the members' scores")
            _check_pair_labels(y2, f"pairs[{name!r}][1]", x2.shape[0], scores.shape[-1])
            members = range(stack.members)
            out[name] = torch.tensor([_pair_accuracy(scores[:, k], y2, None) for k in members], dtype=torch.float64)
            out[f"{name}>{threshold:g}"] = torch.tensor(
                [_pair_accuracy(scores[:, k], y2, threshold) for k in members], dtype=torch.float64
            )
    return out

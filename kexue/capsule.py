"""Capsules and dynamic routing read as clustering (kexue.fm/archives/4819 and 5112).

A capsule is a vector treated as one unit: its length says how sure the layer is
that an entity is present, its direction describes it. A capsule layer turns
``n`` input capsules into ``k`` output capsules by "dynamic routing", which Su
Jianlin reads as a few steps of a clustering algorithm: every input capsule
splits itself among the outputs with a softmax over its agreement with them, and
every output is the squashed weighted sum of what it receives.

This module gives the pieces as pure functions on tensors:

* :func:`squash` with the constant as a parameter (1 in the paper, 0.5 in the article);
* :func:`route` with three registered routings (:data:`ROUTINGS`): ``"hinton"`` (logits
  accumulate, Sabour, Frosst & Hinton 2017), ``"su4819"`` (logits overwritten, the article)
  and ``"su5112"`` (normalised centres during the iterations, one squash at the end,
  the sequel kexue.fm/archives/5112), plus the slow loop :func:`route_reference`;
* :func:`margin_loss`, :func:`coupling_entropy`, :func:`pair_accuracy`;

thin ``nn.Module``\\ s that hold weights (:class:`CapsuleLayer`, :class:`CNNClassifier`,
:class:`CapsuleClassifier`), and the article's generalisation test built from the
8x8 digits (:func:`make_pairs`: two different digits stacked into one image).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_int, check_real, check_tensor

__all__ = [
    "DEFAULT_SQUASH_C",
    "ROUTINGS",
    "SQUASH_PROFILES",
    "CNNClassifier",
    "CapsuleClassifier",
    "CapsuleLayer",
    "ConvTrunk",
    "build_classifier",
    "coupling_entropy",
    "make_pairs",
    "margin_loss",
    "pair_accuracy",
    "predict_dense",
    "predict_shared",
    "route",
    "route_reference",
    "routing_hinton",
    "routing_su4819",
    "routing_su5112",
    "squash",
    "train_classifier",
]


# ----------------------------------------------------------------------------- checks


# ----------------------------------------------------------------------------- squash


# --8<-- [start:squash]
def squash(s: Tensor, dim: int = -1, c: float = 1.0) -> Tensor:
    r"""Shrink a vector's length into $[0, 1)$ and keep its direction.

    $$\operatorname{squash}_c(s) = \frac{\lVert s\rVert^2}{c + \lVert s\rVert^2}\,\frac{s}{\lVert s\rVert},
    \qquad \lVert \operatorname{squash}_c(s)\rVert = \frac{\lVert s\rVert^2}{c + \lVert s\rVert^2}.$$

    ``c = 1`` is the paper's choice (Sabour, Frosst & Hinton 2017, eq. 1); the article
    (kexue.fm/archives/4819) prefers ``c = 0.5``, which lengthens short vectors instead of
    shrinking every vector. Written as $s\,\lVert s\rVert/(c + \lVert s\rVert^2)$, it is
    exactly zero at the zero vector, with gradient zero there (no NaN).

    Args:
        s: Vectors to squash.
        dim: The capsule axis (the vector's own components).
        c: Positive constant; larger values squash harder.

    Returns:
        A tensor of the same shape as ``s``.

    Shapes:
        s: ``(..., d, ...)`` with ``d`` on axis ``dim``; output: same as ``s``.

    Raises:
        TypeError: If ``s`` is not a floating tensor.
        ValueError: If ``c`` is not positive or ``dim`` is out of range.
    """
    check_tensor(s, "s", floating=True)
    c = check_real(c, "c", above=0)
    if s.dim() == 0 or not -s.dim() <= dim < s.dim():
        raise ValueError(f"dim must index an axis of s (shape {tuple(s.shape)}), got {dim}")
    norm = torch.linalg.vector_norm(s, dim=dim, keepdim=True)  # its backward is 0, not NaN, at 0
    return s * (norm / (c + norm * norm))


# --8<-- [end:squash]


#: Other ways to map a length $x = \lVert s\rVert \ge 0$ into $[0, 1)$ that the article lists
#: beside the paper's; each maps 0 to 0 and increases towards 1.
SQUASH_PROFILES: dict[str, Callable[[Tensor], Tensor]] = {
    "x^2/(1+x^2) (paper)": lambda x: x * x / (1.0 + x * x),
    "x^2/(0.5+x^2) (article)": lambda x: x * x / (0.5 + x * x),
    "tanh x": torch.tanh,
    "1-exp(-x)": lambda x: -torch.expm1(-x),
    "x/(1+x)": lambda x: x / (1.0 + x),
}


# ----------------------------------------------------------------------------- predictions


def predict_shared(u: Tensor, weight: Tensor) -> Tensor:
    r"""Prediction vectors with one matrix per output capsule, shared by all inputs.

    $$\hat u_{j|i} = W_j\, u_i .$$

    The article's default: the weights do not depend on the number of inputs, so the
    layer sits on a convolutional feature map of any size (each $W_j$ acts as a 1x1
    convolution detecting class $j$).

    Args:
        u: Input capsules.
        weight: One ``(dim_out, dim_in)`` matrix per output capsule.

    Returns:
        The prediction vectors ``u_hat``.

    Shapes:
        u: ``(batch, n_in, dim_in)``; weight: ``(n_out, dim_out, dim_in)``;
        output: ``(batch, n_in, n_out, dim_out)``.

    Raises:
        ValueError: On wrong ranks or mismatched ``dim_in``.
    """
    check_tensor(u, "u", 3, floating=True)
    check_tensor(weight, "weight", 3, floating=True)
    if weight.shape[2] != u.shape[2]:
        raise ValueError(f"weight's last axis ({weight.shape[2]}) must equal u's capsule dim ({u.shape[2]})")
    return torch.einsum("bnd,jed->bnje", u, weight)


def predict_dense(u: Tensor, weight: Tensor) -> Tensor:
    r"""Prediction vectors with one matrix per (input, output) pair, as in the paper.

    $$\hat u_{j|i} = W_{ji}\, u_i .$$

    Args:
        u: Input capsules.
        weight: One ``(dim_out, dim_in)`` matrix per input and output capsule.

    Returns:
        The prediction vectors ``u_hat``.

    Shapes:
        u: ``(batch, n_in, dim_in)``; weight: ``(n_in, n_out, dim_out, dim_in)``;
        output: ``(batch, n_in, n_out, dim_out)``.

    Raises:
        ValueError: On wrong ranks, a different number of inputs, or mismatched ``dim_in``.
    """
    check_tensor(u, "u", 3, floating=True)
    check_tensor(weight, "weight", 4, floating=True)
    if weight.shape[0] != u.shape[1]:
        raise ValueError(f"weight has {weight.shape[0]} input capsules but u has {u.shape[1]}")
    if weight.shape[3] != u.shape[2]:
        raise ValueError(f"weight's last axis ({weight.shape[3]}) must equal u's capsule dim ({u.shape[2]})")
    return torch.einsum("bnd,njed->bnje", u, weight)


# ----------------------------------------------------------------------------- routing


# --8<-- [start:routings]
def _agreement(u_hat: Tensor, v: Tensor) -> Tensor:
    """<u_hat_{j|i}, v_j> for every input i and output j: (batch, n_in, n_out)."""
    return (u_hat * v.unsqueeze(1)).sum(-1)


def routing_hinton(u_hat: Tensor, iterations: int, squash_c: float) -> tuple[Tensor, Tensor]:
    """Paper routing: the logits accumulate, ``b += <u_hat, v>``. See :func:`route`."""
    b = u_hat.new_zeros(u_hat.shape[:3])  # zero logits, per example
    for t in range(iterations):
        c = torch.softmax(b, dim=2)  # each input splits itself over the outputs
        v = squash((c.unsqueeze(-1) * u_hat).sum(1), c=squash_c)
        if t < iterations - 1:
            b = b + _agreement(u_hat, v)
    return v, c


def routing_su4819(u_hat: Tensor, iterations: int, squash_c: float) -> tuple[Tensor, Tensor]:
    """Article routing: the logits are overwritten, ``b = <u_hat, v>``. See :func:`route`."""
    b = u_hat.new_zeros(u_hat.shape[:3])
    for t in range(iterations):
        c = torch.softmax(b, dim=2)
        v = squash((c.unsqueeze(-1) * u_hat).sum(1), c=squash_c)
        if t < iterations - 1:
            b = _agreement(u_hat, v)
    return v, c


def routing_su5112(u_hat: Tensor, iterations: int, squash_c: float) -> tuple[Tensor, Tensor]:
    """Sequel routing: agreement with unit-length centres, one squash at the end. See :func:`route`."""
    b = u_hat.new_zeros(u_hat.shape[:3])
    for t in range(iterations):
        c = torch.softmax(b, dim=2)
        o = (c.unsqueeze(-1) * u_hat).sum(1)
        if t < iterations - 1:
            b = _agreement(u_hat, F.normalize(o, dim=-1))  # a zero centre stays zero
    return squash(o, c=squash_c), c


# --8<-- [end:routings]


#: Routing algorithms by name; each is ``f(u_hat, iterations, squash_c) -> (v, couplings)``.
ROUTINGS: dict[str, Callable[[Tensor, int, float], tuple[Tensor, Tensor]]] = {
    "hinton": routing_hinton,
    "su4819": routing_su4819,
    "su5112": routing_su5112,
}

#: The squash constant each routing uses unless told otherwise (paper: 1; Su's code: 0.5).
DEFAULT_SQUASH_C: dict[str, float] = {"hinton": 1.0, "su4819": 0.5, "su5112": 0.5}


def _check_route_args(u_hat: object, iterations: object, method: object, squash_c: object) -> float:
    check_tensor(u_hat, "u_hat", 4, floating=True)
    check_int(iterations, "iterations")
    if method not in ROUTINGS:
        raise ValueError(f"method must be one of {sorted(ROUTINGS)}, got {method!r}")
    if squash_c is None:
        return DEFAULT_SQUASH_C[method]  # type: ignore[index]
    return check_real(squash_c, "squash_c", above=0)


def route(
    u_hat: Tensor,
    iterations: int = 3,
    method: str = "hinton",
    squash_c: float | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Dynamic routing: cluster the prediction vectors into output capsules.

    All three methods start from zero logits $b_{ij} = 0$ for every example and repeat
    ``iterations`` times

    $$c_{ij} = \frac{e^{b_{ij}}}{\sum_{j'} e^{b_{ij'}}},\qquad
    s_j = \sum_i c_{ij}\,\hat u_{j|i},$$

    then differ in what the logits become before the next pass (no update after the last):

    * ``"hinton"`` (Sabour, Frosst & Hinton 2017, Procedure 1): $v_j = \operatorname{squash}_1(s_j)$,
      $b_{ij} \leftarrow b_{ij} + \langle \hat u_{j|i}, v_j\rangle$ (the logits accumulate);
    * ``"su4819"`` (the article, kexue.fm/archives/4819, and Su's ``Capsule_Keras.py`` of
      January 2018): $v_j = \operatorname{squash}_{0.5}(s_j)$,
      $b_{ij} \leftarrow \langle \hat u_{j|i}, v_j\rangle$ (overwritten: a fixed-point iteration);
    * ``"su5112"`` (the sequel, kexue.fm/archives/5112): $b_{ij} \leftarrow
      \langle \hat u_{j|i}, s_j/\lVert s_j\rVert\rangle$, and only the result is squashed,
      $v_j = \operatorname{squash}_{0.5}(s_j)$.

    The softmax runs over the **output** capsules $j$: each input's couplings sum to 1.

    Args:
        u_hat: Prediction vectors $\hat u_{j|i}$.
        iterations: Number of routing passes $r \ge 1$ (``1`` means uniform couplings).
        method: A key of :data:`ROUTINGS`.
        squash_c: The squash constant; ``None`` takes the method's own
            (:data:`DEFAULT_SQUASH_C`).

    Returns:
        ``(v, couplings)``: the output capsules and the couplings of the last pass.

    Shapes:
        u_hat: ``(batch, n_in, n_out, dim)``; v: ``(batch, n_out, dim)``;
        couplings: ``(batch, n_in, n_out)``.

    Raises:
        TypeError: If ``u_hat`` is not a floating tensor.
        ValueError: If ``u_hat`` is not 4-D, ``iterations < 1``, ``method`` is unknown
            or ``squash_c`` is not positive.
    """
    c = _check_route_args(u_hat, iterations, method, squash_c)
    return ROUTINGS[method](u_hat, iterations, c)


def route_reference(
    u_hat: Tensor,
    iterations: int = 3,
    method: str = "hinton",
    squash_c: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Slow, obvious version of :func:`route`: explicit loops over examples, inputs and outputs.

    Same arguments, results and errors as :func:`route`; use it to check the fast path.

    Shapes:
        u_hat: ``(batch, n_in, n_out, dim)``; v: ``(batch, n_out, dim)``;
        couplings: ``(batch, n_in, n_out)``.
    """
    csq = _check_route_args(u_hat, iterations, method, squash_c)
    batch, n_in, n_out, _ = u_hat.shape
    v_all = torch.zeros(batch, n_out, u_hat.shape[3], dtype=u_hat.dtype)
    c_all = torch.zeros(batch, n_in, n_out, dtype=u_hat.dtype)

    def sq(x: Tensor) -> Tensor:
        n2 = float((x * x).sum())
        return x * (math.sqrt(n2) / (csq + n2))

    for b_ in range(batch):
        logits = [[0.0] * n_out for _ in range(n_in)]
        for t in range(iterations):
            coup = []
            for i in range(n_in):
                m = max(logits[i])
                e = [math.exp(z - m) for z in logits[i]]
                coup.append([x / sum(e) for x in e])
            s = [sum(coup[i][j] * u_hat[b_, i, j] for i in range(n_in)) for j in range(n_out)]
            if method == "su5112":
                centres = []
                for j in range(n_out):
                    norm = math.sqrt(float((s[j] * s[j]).sum()))
                    centres.append(s[j] / norm if norm > 0 else s[j] * 0.0)
                out = [sq(s[j]) for j in range(n_out)]
            else:
                out = [sq(s[j]) for j in range(n_out)]
                centres = out
            if t < iterations - 1:
                for i in range(n_in):
                    for j in range(n_out):
                        a = float((u_hat[b_, i, j] * centres[j]).sum())
                        logits[i][j] = logits[i][j] + a if method == "hinton" else a
        for j in range(n_out):
            v_all[b_, j] = out[j]
        c_all[b_] = torch.tensor(coup, dtype=u_hat.dtype)
    return v_all, c_all


def coupling_entropy(couplings: Tensor) -> Tensor:
    r"""Mean entropy (nats) of each input's couplings, $-\frac1n\sum_i\sum_j c_{ij}\log c_{ij}$.

    0 means every input capsule sends everything to one output (one-hot couplings);
    $\log k$ means it splits itself evenly over the $k$ outputs.

    Args:
        couplings: Couplings that sum to 1 over the last axis.

    Returns:
        The mean entropy per example.

    Shapes:
        couplings: ``(batch, n_in, n_out)``; output: ``(batch,)``.

    Raises:
        ValueError: If ``couplings`` is not 3-D.
    """
    check_tensor(couplings, "couplings", 3, floating=True)
    return -(torch.special.xlogy(couplings, couplings)).sum(-1).mean(-1)


# ----------------------------------------------------------------------------- loss and metric


# --8<-- [start:margin]
def margin_loss(
    lengths: Tensor,
    targets: Tensor,
    m_pos: float = 0.9,
    m_neg: float = 0.1,
    lam: float = 0.5,
) -> Tensor:
    r"""Margin loss of capsule lengths, summed over classes and averaged over the batch.

    $$L = \sum_k T_k \max(0, m^+ - \lVert v_k\rVert)^2
          + \lambda\,(1 - T_k)\max(0, \lVert v_k\rVert - m^-)^2 .$$

    Defaults are the paper's (Sabour, Frosst & Hinton 2017, eq. 4); the article's test
    script uses ``lam=0.25``. Each class is its own yes/no detector, so several classes
    can be present at once.

    Args:
        lengths: Class scores in [0, 1] (capsule lengths or sigmoid outputs).
        targets: Integer labels ``(batch,)`` or 0/1 indicators shaped like ``lengths``.
        m_pos: Length a present class should exceed.
        m_neg: Length an absent class should stay below.
        lam: Weight of the absent-class term (>= 0).

    Returns:
        A scalar tensor.

    Shapes:
        lengths: ``(batch, classes)``; targets: ``(batch,)`` int64 or ``(batch, classes)``.

    Raises:
        ValueError: On wrong shapes, labels out of range or ``lam < 0``.
    """
    check_tensor(lengths, "lengths", 2, floating=True)
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if not (lam >= 0):
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    if targets.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        if targets.shape != lengths.shape[:1]:
            raise ValueError(
                f"integer targets must have shape {tuple(lengths.shape[:1])}, got {tuple(targets.shape)}"
            )
        if targets.numel() and not (0 <= int(targets.min()) and int(targets.max()) < lengths.shape[1]):
            raise ValueError(f"targets must lie in [0, {lengths.shape[1] - 1}]")
        t = F.one_hot(targets.long(), lengths.shape[1]).to(lengths.dtype)
    else:
        if targets.shape != lengths.shape:
            raise ValueError(f"targets must have shape {tuple(lengths.shape)}, got {tuple(targets.shape)}")
        t = targets.to(lengths.dtype)
    present = t * F.relu(m_pos - lengths) ** 2
    absent = lam * (1.0 - t) * F.relu(lengths - m_neg) ** 2
    return (present + absent).sum(dim=1).mean()


# --8<-- [end:margin]


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
        ValueError: On mismatched shapes, an empty batch, or fewer than 2 classes.
    """
    check_tensor(scores, "scores", 2, floating=True)
    if not isinstance(pair_labels, Tensor) or pair_labels.shape != (scores.shape[0], 2):
        got = tuple(pair_labels.shape) if isinstance(pair_labels, Tensor) else type(pair_labels).__name__
        raise ValueError(f"pair_labels must have shape ({scores.shape[0]}, 2), got {got}")
    if scores.shape[0] == 0:
        raise ValueError("scores must hold at least one image")
    if scores.shape[1] < 2:
        raise ValueError(f"scores need at least 2 classes, got {scores.shape[1]}")
    top, idx = scores.topk(2, dim=1)
    ok = (idx.sort(dim=1).values == pair_labels.sort(dim=1).values).all(dim=1)
    if threshold is not None:
        ok = ok & (top[:, 1] > threshold)
    return float(ok.double().mean())


# ----------------------------------------------------------------------------- data


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
        ValueError: On wrong shapes, an unknown ``mode`` or a single class.
    """
    check_tensor(images, "images", 4, floating=True)
    if not isinstance(labels, Tensor) or labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be a tensor of shape ({images.shape[0]},)")
    if mode not in ("vertical", "horizontal", "overlay"):
        raise ValueError(f"mode must be 'vertical', 'horizontal' or 'overlay', got {mode!r}")
    if labels.numel() == 0 or labels.unique().numel() < 2:
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


# ----------------------------------------------------------------------------- modules


class CapsuleLayer(nn.Module):
    """A capsule layer: predictions from the input capsules, then dynamic routing.

    With ``num_inputs=None`` one matrix per output capsule is shared by all inputs
    (:func:`predict_shared`, the article's default, any number of inputs); with an
    integer ``num_inputs`` every (input, output) pair has its own matrix
    (:func:`predict_dense`, the paper's layer, fixed number of inputs).

    Weights start uniform in $\\pm\\sqrt{6/(d_{in} + k\\,d_{out})}$ (Glorot, as in
    Su's Keras layer).

    Args:
        dim_in: Input capsule dimension.
        num_caps: Number of output capsules ``k``.
        dim_caps: Output capsule dimension.
        iterations: Routing passes.
        routing: A key of :data:`ROUTINGS`.
        num_inputs: ``None`` for shared weights, else the fixed number of input capsules.
        squash_c: Squash constant; ``None`` takes the routing's default.

    Shapes:
        input: ``(batch, n_in, dim_in)``; output ``v``: ``(batch, num_caps, dim_caps)``;
        couplings: ``(batch, n_in, num_caps)``.
    """

    def __init__(
        self,
        dim_in: int,
        num_caps: int,
        dim_caps: int,
        *,
        iterations: int = 3,
        routing: str = "su4819",
        num_inputs: int | None = None,
        squash_c: float | None = None,
    ) -> None:
        super().__init__()
        for name, val in (("dim_in", dim_in), ("num_caps", num_caps), ("dim_caps", dim_caps)):
            check_int(val, name)
        check_int(iterations, "iterations")
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {sorted(ROUTINGS)}, got {routing!r}")
        if num_inputs is not None:
            check_int(num_inputs, "num_inputs")
        self.iterations, self.routing = iterations, routing
        self.squash_c = (
            DEFAULT_SQUASH_C[routing] if squash_c is None else check_real(squash_c, "squash_c", above=0)
        )
        shape = (
            (num_caps, dim_caps, dim_in) if num_inputs is None else (num_inputs, num_caps, dim_caps, dim_in)
        )
        bound = math.sqrt(6.0 / (dim_in + num_caps * dim_caps))
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))

    @property
    def shared(self) -> bool:
        """True if one matrix per output capsule is shared by all inputs."""
        return self.weight.dim() == 3

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Route ``u`` to the output capsules; returns ``(v, couplings)``."""
        u_hat = predict_shared(u, self.weight) if self.shared else predict_dense(u, self.weight)
        return route(u_hat, self.iterations, self.routing, self.squash_c)


class ConvTrunk(nn.Module):
    """The shared feature extractor: two 3x3 convolutions, 2x2 average pooling, one more.

    A CPU-sized version of the article's trunk (its 'valid' 3x3 stack would leave
    nothing of an 8x8 image, so we pad): ``(B, 1, H, W) -> (B, C, H/2, W/2)``.

    Args:
        channels: Output channels of the three convolutions.

    Shapes:
        input: ``(batch, 1, H, W)`` with even ``H`` and ``W``; output: ``(batch, channels[2], H/2, W/2)``.
    """

    def __init__(self, channels: tuple[int, int, int] = (32, 32, 64)) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.out_channels = c3

    def forward(self, x: Tensor) -> Tensor:
        """Feature map of ``x``."""
        check_tensor(x, "x", 4, floating=True)
        return self.net(x)


class CNNClassifier(nn.Module):
    """Trunk, global average pooling, a hidden layer and one sigmoid per class.

    Args:
        num_classes: Number of classes.
        hidden: Width of the hidden layer.
        channels: Trunk channels.

    Shapes:
        input: ``(batch, 1, H, W)``; output scores: ``(batch, num_classes)`` in (0, 1).
    """

    def __init__(
        self, num_classes: int = 10, hidden: int = 128, channels: tuple[int, int, int] = (32, 32, 64)
    ) -> None:
        super().__init__()
        self.trunk = ConvTrunk(channels)
        self.head = nn.Sequential(nn.Linear(channels[2], hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Class scores of ``x``."""
        return torch.sigmoid(self.head(self.trunk(x).mean(dim=(2, 3))))


class CapsuleClassifier(nn.Module):
    """Trunk, every feature-map position as an input capsule, a shared capsule layer; scores are lengths.

    Args:
        num_classes: Number of output capsules (classes).
        dim_caps: Output capsule dimension.
        iterations: Routing passes.
        routing: A key of :data:`ROUTINGS`.
        channels: Trunk channels (the last one is the input capsule dimension).
        squash_c: Squash constant; ``None`` takes the routing's default.

    Shapes:
        input: ``(batch, 1, H, W)``; output scores: ``(batch, num_classes)`` in [0, 1).
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
        self.trunk = ConvTrunk(channels)
        self.caps = CapsuleLayer(
            channels[2], num_classes, dim_caps, iterations=iterations, routing=routing, squash_c=squash_c
        )

    def capsules(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Output capsules and couplings of ``x``: ``(batch, classes, dim_caps)``, ``(batch, n_in, classes)``."""
        f = self.trunk(x)
        return self.caps(f.flatten(2).transpose(1, 2))  # (B, H*W, C): one capsule per position

    def forward(self, x: Tensor) -> Tensor:
        """Class scores (capsule lengths) of ``x``."""
        return torch.linalg.vector_norm(self.capsules(x)[0], dim=-1)


def build_classifier(kind: str, *, seed: int = 0, **kwargs: object) -> nn.Module:
    """Build ``"cnn"`` or ``"capsule"`` classifier with seeded initial weights.

    The global torch generator is forked, so the caller's random state is untouched.

    Args:
        kind: ``"cnn"`` (:class:`CNNClassifier`) or ``"capsule"`` (:class:`CapsuleClassifier`).
        seed: Seed of the initial weights.
        **kwargs: Passed to the class.

    Returns:
        The model.

    Raises:
        ValueError: If ``kind`` is unknown.
    """
    classes = {"cnn": CNNClassifier, "capsule": CapsuleClassifier}
    if kind not in classes:
        raise ValueError(f"kind must be 'cnn' or 'capsule', got {kind!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return classes[kind](**kwargs)  # type: ignore[arg-type]


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-3,
    lam: float = 0.25,
    seed: int = 0,
) -> list[float]:
    """Train a classifier on single digits with the margin loss and Adam.

    Every class score is trained as a yes/no detector (:func:`margin_loss`, the article's
    ``lam=0.25`` by default), for the CNN's sigmoids and the capsules' lengths alike.

    Args:
        model: Maps ``(batch, 1, H, W)`` images to ``(batch, classes)`` scores.
        images: Training images.
        labels: Their integer labels.
        epochs: Passes over the data.
        batch_size: Mini-batch size.
        lr: Adam learning rate.
        lam: Absent-class weight of the margin loss.
        seed: Seed of the shuffling.

    Returns:
        The mean training loss of each epoch.

    Shapes:
        images: ``(n, 1, H, W)``; labels: ``(n,)``.

    Raises:
        ValueError: On mismatched shapes or non-positive ``epochs``/``batch_size``.
    """
    check_tensor(images, "images", 4, floating=True)
    if not isinstance(labels, Tensor) or labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be a tensor of shape ({images.shape[0]},)")
    check_int(epochs, "epochs")
    check_int(batch_size, "batch_size")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history: list[float] = []
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(images.shape[0], generator=gen)
        total = 0.0
        for k in range(0, images.shape[0], batch_size):
            idx = perm[k : k + batch_size]
            loss = margin_loss(model(images[idx]), labels[idx], lam=lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        history.append(total / images.shape[0])
    model.eval()
    return history

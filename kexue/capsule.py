r"""Capsules and dynamic routing read as clustering.

Companion to Su Jianlin, "揭开迷雾，来一顿美味的Capsule盛宴"
([kexue.fm/archives/4819](https://kexue.fm/archives/4819), 2018-01-23) and its sequel
([kexue.fm/archives/5112](https://kexue.fm/archives/5112), 2018-02-12).

A capsule is a vector treated as one unit: its length says how sure the layer is that an
entity is present, its direction describes it. A capsule layer turns ``n`` input capsules into
``k`` output capsules by "dynamic routing", which Su reads as a few steps of a clustering
algorithm: every input capsule splits itself among the outputs with a softmax over its agreement
with them, and every output is the squashed weighted sum of what it receives.

This module holds the article's math as pure functions on tensors, and one thin layer:

* [`squash`][kexue.capsule.squash] with the constant as a parameter (1 in the paper, 0.5 in the
  article), and the other length maps the article names
  ([`SQUASH_PROFILES`][kexue.capsule.SQUASH_PROFILES]);
* the prediction vectors [`predict_shared`][kexue.capsule.predict_shared] (Su's default) and
  [`predict_dense`][kexue.capsule.predict_dense] (the paper's);
* [`route`][kexue.capsule.route] with three registered routings
  ([`ROUTINGS`][kexue.capsule.ROUTINGS]): ``"hinton"`` (logits accumulate; Sabour, Frosst &
  Hinton 2017), ``"su4819"`` (logits overwritten; the article) and ``"su5112"`` (normalised
  centres during the iterations, one squash at the end; the sequel), plus the slow loop
  [`route_reference`][kexue.capsule.route_reference];
* [`coupling_entropy`][kexue.capsule.coupling_entropy] and the paper's
  [`margin_loss`][kexue.capsule.margin_loss];
* [`CapsuleLayer`][kexue.capsule.CapsuleLayer], which holds the weights and calls the functions.

The page's experiment (the CPU-sized classifiers, the two-digit test images, the seed-stacked
training) lives in [`kexue.experiments.capsule`][kexue.experiments.capsule].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_int, check_real, check_tensor

__all__ = [
    "DEFAULT_SQUASH_C",
    "ROUTINGS",
    "SQUASH_PROFILES",
    "CapsuleLayer",
    "coupling_entropy",
    "margin_loss",
    "predict_dense",
    "predict_shared",
    "route",
    "route_reference",
    "routing_hinton",
    "routing_su4819",
    "routing_su5112",
    "squash",
]


# ----------------------------------------------------------------------------- squash


# --8<-- [start:squash]
def squash(s: Tensor, dim: int = -1, c: float = 1.0) -> Tensor:
    r"""Shrink a vector's length into $[0, 1)$ and keep its direction.

    $$\operatorname{squash}_c(s) = \frac{\lVert s\rVert^2}{c + \lVert s\rVert^2}\,\frac{s}{\lVert s\rVert},
    \qquad \lVert \operatorname{squash}_c(s)\rVert = \frac{\lVert s\rVert^2}{c + \lVert s\rVert^2}.$$

    ``c = 1`` is the paper's choice (Sabour, Frosst & Hinton 2017, eq. 1); the article
    ([kexue.fm/archives/4819](https://kexue.fm/archives/4819)) prefers ``c = 0.5``. Near zero the
    output length is $\lVert s\rVert^2/c$, so with ``c = 0.5`` a short vector keeps twice as much
    of its length as with ``c = 1``; for $c \ge 1/4$ no vector ever gets longer. Written as
    $s\,\lVert s\rVert/(c + \lVert s\rVert^2)$, it is exactly zero at the zero vector, with
    gradient zero there (no NaN).

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

    Examples:
        >>> import torch
        >>> s = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # lengths 5 and 0
        >>> squash(s).norm(dim=-1)  # 25 / 26 with the paper's constant
        tensor([0.9615, 0.0000])
        >>> squash(s, c=0.5).norm(dim=-1)  # 25 / 25.5
        tensor([0.9804, 0.0000])
    """
    check_tensor(s, "s", floating=True)
    c = check_real(c, "c", above=0)
    if s.dim() == 0 or not -s.dim() <= dim < s.dim():
        raise ValueError(f"dim must index an axis of s (shape {tuple(s.shape)}), got {dim}")
    norm = torch.linalg.vector_norm(s, dim=dim, keepdim=True)  # its backward is 0, not NaN, at 0
    return s * (norm / (c + norm * norm))


# --8<-- [end:squash]


SQUASH_PROFILES: dict[str, Callable[[Tensor], Tensor]] = {
    "x^2/(1+x^2) (paper)": lambda x: x * x / (1.0 + x * x),
    "x^2/(0.5+x^2) (article)": lambda x: x * x / (0.5 + x * x),
    "tanh x": torch.tanh,
    "1-exp(-x)": lambda x: -torch.expm1(-x),
    "x/(1+x)": lambda x: x / (1.0 + x),
}
r"""Ways to map a length $x = \lVert s\rVert \ge 0$ into $[0, 1)$: the paper's, the article's, and
the alternatives the article lists. Each maps 0 to 0 and increases towards 1."""


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
        TypeError: If ``u`` or ``weight`` is not a floating tensor.
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
        TypeError: If ``u`` or ``weight`` is not a floating tensor.
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
    """Paper routing: the logits accumulate, ``b += <u_hat, v>``. See [`route`][kexue.capsule.route]."""
    b = u_hat.new_zeros(u_hat.shape[:3])  # zero logits, per example
    for t in range(iterations):
        c = torch.softmax(b, dim=2)  # each input splits itself over the outputs
        v = squash((c.unsqueeze(-1) * u_hat).sum(1), c=squash_c)
        if t < iterations - 1:
            b = b + _agreement(u_hat, v)
    return v, c


def routing_su4819(u_hat: Tensor, iterations: int, squash_c: float) -> tuple[Tensor, Tensor]:
    """Article routing: the logits are overwritten, ``b = <u_hat, v>``. See [`route`][kexue.capsule.route]."""
    b = u_hat.new_zeros(u_hat.shape[:3])
    for t in range(iterations):
        c = torch.softmax(b, dim=2)
        v = squash((c.unsqueeze(-1) * u_hat).sum(1), c=squash_c)
        if t < iterations - 1:
            b = _agreement(u_hat, v)
    return v, c


def routing_su5112(u_hat: Tensor, iterations: int, squash_c: float) -> tuple[Tensor, Tensor]:
    """Sequel routing: agreement with unit-length centres, one squash at the end. See [`route`][kexue.capsule.route]."""
    b = u_hat.new_zeros(u_hat.shape[:3])
    for t in range(iterations):
        c = torch.softmax(b, dim=2)
        o = (c.unsqueeze(-1) * u_hat).sum(1)
        if t < iterations - 1:
            b = _agreement(u_hat, F.normalize(o, dim=-1))  # a zero centre stays zero
    return squash(o, c=squash_c), c


# --8<-- [end:routings]


ROUTINGS: dict[str, Callable[[Tensor, int, float], tuple[Tensor, Tensor]]] = {
    "hinton": routing_hinton,
    "su4819": routing_su4819,
    "su5112": routing_su5112,
}
"""Routing algorithms by name; each is ``f(u_hat, iterations, squash_c) -> (v, couplings)``."""

DEFAULT_SQUASH_C: dict[str, float] = {"hinton": 1.0, "su4819": 0.5, "su5112": 0.5}
"""The squash constant each routing's source uses (paper: 1; Su's code: 0.5), taken when a
caller passes ``squash_c=None``. The constant is not part of the routing rule: pass it
explicitly to compare rules at the same constant."""


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

    * ``"hinton"`` (Sabour, Frosst & Hinton 2017, Procedure 1): $v_j = \operatorname{squash}_c(s_j)$,
      $b_{ij} \leftarrow b_{ij} + \langle \hat u_{j|i}, v_j\rangle$ (the logits accumulate);
    * ``"su4819"`` (the article, [kexue.fm/archives/4819](https://kexue.fm/archives/4819), and
      Su's ``Capsule_Keras.py`` of January 2018): $v_j = \operatorname{squash}_c(s_j)$,
      $b_{ij} \leftarrow \langle \hat u_{j|i}, v_j\rangle$ (overwritten: a fixed-point iteration);
    * ``"su5112"`` (the sequel, [kexue.fm/archives/5112](https://kexue.fm/archives/5112)):
      $b_{ij} \leftarrow \langle \hat u_{j|i}, s_j/\lVert s_j\rVert\rangle$, and only the result
      is squashed, $v_j = \operatorname{squash}_c(s_j)$.

    The softmax runs over the **output** capsules $j$: each input's couplings sum to 1. With
    ``iterations=1`` the couplings are uniform, and ``"hinton"`` and ``"su4819"`` coincide for
    ``iterations <= 2`` (from zero logits, adding and overwriting give the same first update).

    Args:
        u_hat: Prediction vectors $\hat u_{j|i}$.
        iterations: Number of routing passes $r \ge 1$ (``1`` means uniform couplings).
        method: A key of [`ROUTINGS`][kexue.capsule.ROUTINGS].
        squash_c: The squash constant $c$; ``None`` takes the method's source's
            ([`DEFAULT_SQUASH_C`][kexue.capsule.DEFAULT_SQUASH_C]: 1 for ``"hinton"``, 0.5 for Su's).

    Returns:
        ``(v, couplings)``: the output capsules and the couplings of the last pass.

    Shapes:
        u_hat: ``(batch, n_in, n_out, dim)``; v: ``(batch, n_out, dim)``;
        couplings: ``(batch, n_in, n_out)``.

    Raises:
        TypeError: If ``u_hat`` is not a floating tensor.
        ValueError: If ``u_hat`` is not 4-D, ``iterations < 1``, ``method`` is unknown
            or ``squash_c`` is not positive.

    Examples:
        >>> import torch
        >>> u_hat = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(0))
        >>> v, c = route(u_hat, iterations=3, method="su4819", squash_c=0.5)
        >>> v.shape, c.shape  # 2 examples, 5 inputs, 3 outputs of dimension 4
        (torch.Size([2, 3, 4]), torch.Size([2, 5, 3]))
        >>> torch.allclose(c.sum(dim=-1), torch.ones(2, 5))  # each input splits itself over the outputs
        True
        >>> bool((v.norm(dim=-1) < 1).all())
        True
    """
    c = _check_route_args(u_hat, iterations, method, squash_c)
    return ROUTINGS[method](u_hat, iterations, c)


def route_reference(
    u_hat: Tensor,
    iterations: int = 3,
    method: str = "hinton",
    squash_c: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Slow, obvious version of [`route`][kexue.capsule.route]: explicit loops over examples, inputs and outputs.

    Same arguments, results and errors as [`route`][kexue.capsule.route]; use it to check the fast path.

    Args:
        u_hat: Prediction vectors.
        iterations: Number of routing passes.
        method: A key of [`ROUTINGS`][kexue.capsule.ROUTINGS].
        squash_c: The squash constant; ``None`` takes the method's source's.

    Returns:
        ``(v, couplings)`` as [`route`][kexue.capsule.route] returns them.

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
            out = [sq(s[j]) for j in range(n_out)]
            if method == "su5112":  # agreement with the unit-length centres
                centres = []
                for j in range(n_out):
                    norm = math.sqrt(float((s[j] * s[j]).sum()))
                    centres.append(s[j] / norm if norm > 0 else s[j] * 0.0)
            else:
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
        TypeError: If ``couplings`` is not a floating tensor.
        ValueError: If ``couplings`` is not 3-D.

    Examples:
        >>> import torch
        >>> coupling_entropy(torch.full((1, 6, 4), 0.25))  # even split: log 4
        tensor([1.3863])
        >>> coupling_entropy(torch.eye(4).unsqueeze(0))  # one-hot
        tensor([0.])
    """
    check_tensor(couplings, "couplings", 3, floating=True)
    return -(torch.special.xlogy(couplings, couplings)).sum(-1).mean(-1)


# ----------------------------------------------------------------------------- loss


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
        TypeError: If ``lengths`` or ``targets`` is not a tensor.
        ValueError: On wrong shapes, labels out of range or ``lam < 0``.

    Examples:
        >>> import torch
        >>> lengths = torch.tensor([[0.95, 0.30, 0.05]])  # class 0 present and long enough
        >>> margin_loss(lengths, torch.tensor([0]))  # only class 1 is too long: 0.5 * 0.2**2
        tensor(0.0200)
        >>> margin_loss(lengths, torch.tensor([0]), lam=0.25)  # the article's weight
        tensor(0.0100)
    """
    check_tensor(lengths, "lengths", 2, floating=True)
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    lam = check_real(lam, "lam", at_least=0)
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


# ----------------------------------------------------------------------------- the layer


class CapsuleLayer(nn.Module):
    r"""A capsule layer: predictions from the input capsules, then dynamic routing.

    With ``num_inputs=None`` one matrix per output capsule is shared by all inputs
    ([`predict_shared`][kexue.capsule.predict_shared], the article's default, any number of
    inputs); with an integer ``num_inputs`` every (input, output) pair has its own matrix
    ([`predict_dense`][kexue.capsule.predict_dense], the paper's layer, fixed number of inputs).

    Weights start uniform in $\pm\sqrt{6/(d_{in} + k\,d_{out})}$ (Glorot, as in
    Su's Keras layer), drawn from the global generator (seed it, or build the layer inside
    ``torch.random.fork_rng``).

    Args:
        dim_in: Input capsule dimension.
        num_caps: Number of output capsules ``k``.
        dim_caps: Output capsule dimension.
        iterations: Routing passes.
        routing: A key of [`ROUTINGS`][kexue.capsule.ROUTINGS].
        num_inputs: ``None`` for shared weights, else the fixed number of input capsules.
        squash_c: Squash constant; ``None`` takes the routing's source's
            ([`DEFAULT_SQUASH_C`][kexue.capsule.DEFAULT_SQUASH_C]).

    Shapes:
        input: ``(batch, n_in, dim_in)``; output ``v``: ``(batch, num_caps, dim_caps)``;
        couplings: ``(batch, n_in, num_caps)``.

    Raises:
        ValueError: On a non-positive size or iteration count, an unknown routing or a
            non-positive ``squash_c``.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> layer = CapsuleLayer(dim_in=8, num_caps=10, dim_caps=16, routing="su5112", squash_c=0.5)
        >>> v, couplings = layer(torch.randn(4, 6, 8))  # 4 examples, 6 input capsules of dim 8
        >>> v.shape, couplings.shape
        (torch.Size([4, 10, 16]), torch.Size([4, 6, 10]))
        >>> v.norm(dim=-1).shape  # the class scores are the lengths
        torch.Size([4, 10])
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

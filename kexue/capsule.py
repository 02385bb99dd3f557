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

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_finite, check_int, check_real, check_tensor

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


# ----------------------------------------------------------------------------- checks

_HALF = (torch.float16, torch.bfloat16)


def _in_float32(fn: Callable[..., Any], x: Tensor, *args: Any) -> Any:
    """``fn(x, *args)``, with float16/bfloat16 ``x`` computed in float32 and every tensor result cast back."""
    if x.dtype not in _HALF:
        return fn(x, *args)
    out = fn(x.float(), *args)
    return tuple(o.to(x.dtype) for o in out) if isinstance(out, tuple) else out.to(x.dtype)


def _check_squash_c(c: object, name: str, dtype: torch.dtype) -> float:
    """A positive squash constant that the computing dtype can hold (float32 for float16 input)."""
    top = torch.finfo(torch.float32 if dtype in _HALF else dtype).max
    return check_real(c, name, above=0, at_most=top)


def _check_dim(dim: object, s: Tensor) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool) or not -s.dim() <= dim < s.dim():
        raise ValueError(f"dim must be an integer indexing an axis of s (shape {tuple(s.shape)}), got {dim!r}")
    return dim


def _check_u_hat(u_hat: object) -> Tensor:
    return check_tensor(u_hat, "u_hat", 4, floating=True)


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
    gradient zero there (no NaN). Vectors so long that $\lVert s\rVert^2$ overflows (beyond about
    $1.8\cdot 10^{19}$ in float32) are first scaled down by a power of two, so they come out
    with length 1 instead of NaN. float16 and bfloat16 are computed in float32 and cast back.
    Like any elementwise layer, it propagates NaN/inf: a vector with a NaN or infinite entry
    comes out NaN.

    Args:
        s: Vectors to squash.
        dim: The capsule axis (the vector's own components).
        c: Positive constant; larger values squash harder.

    Returns:
        A tensor of the same shape and dtype as ``s``.

    Shapes:
        s: ``(..., d, ...)`` with ``d`` on axis ``dim``; output: same as ``s``.

    Raises:
        TypeError: If ``s`` is not a floating tensor.
        ValueError: If ``c`` is not positive (or overflows the dtype) or ``dim`` is not an
            integer indexing an axis of ``s``.

    Examples:
        >>> import torch
        >>> s = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # lengths 5 and 0
        >>> squash(s).norm(dim=-1)  # 25 / 26 with the paper's constant
        tensor([0.9615, 0.0000])
        >>> squash(s, c=0.5).norm(dim=-1)  # 25 / 25.5
        tensor([0.9804, 0.0000])
        >>> squash(torch.tensor([3e20, 4e20])).norm()  # far too long to square: length 1, no NaN
        tensor(1.)
    """
    check_tensor(s, "s", floating=True)
    c = _check_squash_c(c, "c", s.dtype)
    _check_dim(dim, s)
    return _in_float32(_squash, s, dim, c)


def _squash(s: Tensor, dim: int = -1, c: float = 1.0) -> Tensor:
    norm = torch.linalg.vector_norm(s, dim=dim, keepdim=True)  # its backward is 0, not NaN, at 0
    k = _overflow_scale(torch.isfinite(c + norm * norm), s.dtype)  # 1, or 2^-80 where |s|^2 overflows
    t = s * k  # squash(s) = t |t| / (c k^2 + |t|^2): the same numbers as before for k = 1
    norm = torch.linalg.vector_norm(t, dim=dim, keepdim=True)
    return t * (norm / (c * k * k + norm * norm))


# --8<-- [end:squash]


def _overflow_scale(finite: Tensor, dtype: torch.dtype) -> Tensor:
    """1 where ``finite``, else a power of two small enough that no finite vector's squared norm overflows.

    For float32 that is $2^{-80}$ (float64: $2^{-528}$): entries up to the dtype's largest,
    $2^{128}$, become at most $2^{48}$, so up to $2^{32}$ of them have a finite squared norm, and
    scaling by a power of two loses no precision. Where NaN or inf made the test fail, the
    result stays NaN.
    """
    exponent = math.frexp(torch.finfo(dtype).max)[1]  # 128 for float32
    one = torch.ones((), dtype=dtype)
    return torch.where(finite, one, torch.full((), 2.0 ** -(exponent // 2 + 16), dtype=dtype))


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
        TypeError: If ``u`` or ``weight`` is not a floating tensor, or their dtypes differ.
        ValueError: On wrong ranks or mismatched ``dim_in``.
    """
    _check_prediction_args(u, weight, 3)
    return _predict_shared(u, weight)


def _predict_shared(u: Tensor, weight: Tensor) -> Tensor:
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
        TypeError: If ``u`` or ``weight`` is not a floating tensor, or their dtypes differ.
        ValueError: On wrong ranks, a different number of inputs, or mismatched ``dim_in``.
    """
    _check_prediction_args(u, weight, 4)
    if weight.shape[0] != u.shape[1]:
        raise ValueError(f"weight has {weight.shape[0]} input capsules but u has {u.shape[1]}")
    return _predict_dense(u, weight)


def _predict_dense(u: Tensor, weight: Tensor) -> Tensor:
    return torch.einsum("bnd,njed->bnje", u, weight)


def _check_prediction_args(u: object, weight: object, weight_ndim: int) -> None:
    check_tensor(u, "u", 3, floating=True)
    check_tensor(weight, "weight", weight_ndim, floating=True)
    if weight.dtype != u.dtype:
        raise TypeError(f"weight must have u's dtype {u.dtype}, got {weight.dtype}")
    if weight.shape[-1] != u.shape[2]:
        raise ValueError(f"weight's last axis ({weight.shape[-1]}) must equal u's capsule dim ({u.shape[2]})")


# ----------------------------------------------------------------------------- routing


def _routing(core: Callable[[Tensor, int, float], tuple[Tensor, Tensor]]) -> Callable[..., tuple[Tensor, Tensor]]:
    """Make a routing core public: check the arguments, compute float16/bfloat16 in float32.

    [`route`][kexue.capsule.route] checks its own arguments once and calls the core
    (``__wrapped__``) directly.
    """

    @functools.wraps(core)
    def routing(u_hat: Tensor, iterations: int, squash_c: float) -> tuple[Tensor, Tensor]:
        _check_u_hat(u_hat)
        check_int(iterations, "iterations")
        return _in_float32(core, u_hat, iterations, _check_squash_c(squash_c, "squash_c", u_hat.dtype))

    return routing


def _unit(o: Tensor) -> Tensor:
    """``F.normalize(o, dim=-1)`` (a zero centre stays zero), also for centres whose squared norm overflows."""
    k = _overflow_scale(torch.isfinite(torch.linalg.vector_norm(o, dim=-1, keepdim=True)), o.dtype)
    return F.normalize(o * k, dim=-1)  # the same numbers as F.normalize(o) for k = 1


# --8<-- [start:routings]
def _agreement(u_hat: Tensor, v: Tensor) -> Tensor:
    """<u_hat_{j|i}, v_j> for every input i and output j: (batch, n_in, n_out)."""
    return (u_hat * v.unsqueeze(1)).sum(-1)


@_routing
def routing_hinton(u_hat: Tensor, iterations: int, squash_c: float) -> tuple[Tensor, Tensor]:
    """Paper routing: the logits accumulate, ``b += <u_hat, v>``. See [`route`][kexue.capsule.route]."""
    b = u_hat.new_zeros(u_hat.shape[:3])  # zero logits, per example
    for t in range(iterations):
        c = torch.softmax(b, dim=2)  # each input splits itself over the outputs
        v = _squash((c.unsqueeze(-1) * u_hat).sum(1), c=squash_c)
        if t < iterations - 1:
            b = b + _agreement(u_hat, v)
    return v, c


@_routing
def routing_su4819(u_hat: Tensor, iterations: int, squash_c: float) -> tuple[Tensor, Tensor]:
    """Article routing: the logits are overwritten, ``b = <u_hat, v>``. See [`route`][kexue.capsule.route]."""
    b = u_hat.new_zeros(u_hat.shape[:3])
    for t in range(iterations):
        c = torch.softmax(b, dim=2)
        v = _squash((c.unsqueeze(-1) * u_hat).sum(1), c=squash_c)
        if t < iterations - 1:
            b = _agreement(u_hat, v)
    return v, c


@_routing
def routing_su5112(u_hat: Tensor, iterations: int, squash_c: float) -> tuple[Tensor, Tensor]:
    """Sequel routing: agreement with unit-length centres, one squash at the end. See [`route`][kexue.capsule.route]."""
    b = u_hat.new_zeros(u_hat.shape[:3])
    for t in range(iterations):
        c = torch.softmax(b, dim=2)
        o = (c.unsqueeze(-1) * u_hat).sum(1)
        if t < iterations - 1:
            b = _agreement(u_hat, _unit(o))  # a zero centre stays zero
    return _squash(o, c=squash_c), c


# --8<-- [end:routings]


ROUTINGS: dict[str, Callable[[Tensor, int, float], tuple[Tensor, Tensor]]] = {
    "hinton": routing_hinton,
    "su4819": routing_su4819,
    "su5112": routing_su5112,
}
"""Routing algorithms by name; each is ``f(u_hat, iterations, squash_c) -> (v, couplings)`` and checks
its arguments like [`route`][kexue.capsule.route]."""

DEFAULT_SQUASH_C: dict[str, float] = {"hinton": 1.0, "su4819": 0.5, "su5112": 0.5}
"""The squash constant each routing's source uses (paper: 1; Su's code: 0.5), taken when a
caller passes ``squash_c=None``. The constant is not part of the routing rule: pass it
explicitly to compare rules at the same constant."""


def _check_method(method: object, name: str) -> str:
    if not isinstance(method, str) or method not in ROUTINGS:
        raise ValueError(f"{name} must be one of {sorted(ROUTINGS)}, got {method!r}")
    return method


def _check_route_args(u_hat: object, iterations: object, method: object, squash_c: object) -> float:
    _check_u_hat(u_hat)
    check_int(iterations, "iterations")
    _check_method(method, "method")
    if squash_c is None:
        if method not in DEFAULT_SQUASH_C:
            raise ValueError(f"squash_c must be given for method {method!r}, which has no default constant")
        return DEFAULT_SQUASH_C[method]  # type: ignore[index]
    return _check_squash_c(squash_c, "squash_c", u_hat.dtype)  # type: ignore[union-attr]


def _route(u_hat: Tensor, iterations: int, method: str, squash_c: float) -> tuple[Tensor, Tensor]:
    """The routing ``method`` on checked arguments: its core, float16/bfloat16 in float32."""
    fn = ROUTINGS[method]
    return _in_float32(getattr(fn, "__wrapped__", fn), u_hat, iterations, squash_c)


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

    Empty inputs route to empty outputs (no inputs: zero output capsules). float16 and bfloat16
    are computed in float32 and cast back. NaN/inf in ``u_hat`` propagate, as in any layer.

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
        ValueError: If ``u_hat`` is not 4-D, ``iterations`` is not an integer >= 1, ``method``
            is unknown or ``squash_c`` is not a positive number (that the dtype can hold).

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
    return _route(u_hat, iterations, method, c)


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
    return _in_float32(_route_loops, u_hat, iterations, method, csq)


def _route_loops(u_hat: Tensor, iterations: int, method: str, csq: float) -> tuple[Tensor, Tensor]:
    batch, n_in, n_out, dim = u_hat.shape
    v_all = torch.zeros(batch, n_out, dim, dtype=u_hat.dtype)
    c_all = torch.zeros(batch, n_in, n_out, dtype=u_hat.dtype)

    def length(x: Tensor) -> float:  # math.hypot does not overflow where the sum of squares would
        return math.hypot(*x.double().tolist())

    def sq(x: Tensor) -> Tensor:  # x |x| / (c + |x|^2), as x / (c / |x| + |x|): no |x|^2 to overflow
        n = length(x)
        return x * (1.0 / (csq / n + n)) if n != 0 else x * 0.0

    for b_ in range(batch):
        logits = [[0.0] * n_out for _ in range(n_in)]
        for t in range(iterations):
            coup = []
            for i in range(n_in):
                m = max(logits[i], default=0.0)
                e = [math.exp(z - m) for z in logits[i]]
                coup.append([x / sum(e) for x in e])
            zero = torch.zeros(dim, dtype=u_hat.dtype)
            s = [sum((coup[i][j] * u_hat[b_, i, j] for i in range(n_in)), zero) for j in range(n_out)]
            out = [sq(s[j]) for j in range(n_out)]
            if method == "su5112":  # agreement with the unit-length centres
                centres = []
                for j in range(n_out):
                    norm = length(s[j])
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
        c_all[b_] = torch.tensor(coup, dtype=u_hat.dtype).reshape(n_in, n_out)
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
        ValueError: If ``couplings`` is not 3-D, has no input or no output capsule, holds NaN
            or inf, or is not a distribution over the outputs (entries in [0, 1], each input's
            summing to 1).

    Examples:
        >>> import torch
        >>> coupling_entropy(torch.full((1, 6, 4), 0.25))  # even split: log 4
        tensor([1.3863])
        >>> coupling_entropy(torch.eye(4).unsqueeze(0))  # one-hot
        tensor([0.])
    """
    check_tensor(couplings, "couplings", 3, floating=True)
    if couplings.shape[1] == 0 or couplings.shape[2] == 0:
        raise ValueError(f"couplings need at least one input and one output capsule, got shape {tuple(couplings.shape)}")
    check_finite(couplings, "couplings")
    tol = max(1e-4, 8 * couplings.shape[2] * torch.finfo(couplings.dtype).eps)
    sums = couplings.float().sum(-1)
    if bool((couplings < 0).any()) or bool(((sums - 1).abs() > tol).any()):
        raise ValueError(
            "couplings must be a distribution over the outputs (entries >= 0, each input's summing to 1), "
            f"got entries from {couplings.min().item():.3g} and sums from {sums.min().item():.3g} to {sums.max().item():.3g}"
        )
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
        lengths: Class scores in [0, 1] (capsule lengths or sigmoid outputs), finite.
        targets: Integer labels ``(batch,)`` in ``[0, classes)``, or 0/1 indicators shaped like
            ``lengths`` (bool, or floating in [0, 1]).
        m_pos: Length a present class should exceed, in [0, 1].
        m_neg: Length an absent class should stay below, in [0, 1].
        lam: Weight of the absent-class term (>= 0).

    Returns:
        A scalar tensor.

    Shapes:
        lengths: ``(batch, classes)``; targets: ``(batch,)`` int64 or ``(batch, classes)``.

    Raises:
        TypeError: If ``lengths`` is not a floating tensor or ``targets`` is not a real tensor.
        ValueError: On wrong shapes, an empty batch, NaN/inf, labels or indicators out of range,
            or margins outside [0, 1] or ``lam < 0``.

    Examples:
        >>> import torch
        >>> lengths = torch.tensor([[0.95, 0.30, 0.05]])  # class 0 present and long enough
        >>> margin_loss(lengths, torch.tensor([0]))  # only class 1 is too long: 0.5 * 0.2**2
        tensor(0.0200)
        >>> margin_loss(lengths, torch.tensor([0]), lam=0.25)  # the article's weight
        tensor(0.0100)
    """
    check_tensor(lengths, "lengths", 2, floating=True, nonempty=True)
    check_finite(lengths, "lengths")
    m_pos = check_real(m_pos, "m_pos", at_least=0, at_most=1)
    m_neg = check_real(m_neg, "m_neg", at_least=0, at_most=1)
    lam = check_real(lam, "lam", at_least=0)
    t = _margin_targets(targets, lengths)  # one-hot labels, or the 0/1 indicators themselves
    present = t * F.relu(m_pos - lengths) ** 2
    absent = lam * (1.0 - t) * F.relu(lengths - m_neg) ** 2
    return (present + absent).sum(dim=1).mean()


# --8<-- [end:margin]


def _margin_targets(targets: object, lengths: Tensor) -> Tensor:
    """Checked targets of [`margin_loss`][kexue.capsule.margin_loss] as indicators shaped like ``lengths``."""
    t = check_tensor(targets, "targets")
    if t.is_complex():
        raise TypeError(f"targets must be integer labels or real indicators, got {t.dtype}")
    batch, classes = lengths.shape
    if not t.is_floating_point() and t.dtype != torch.bool:
        if t.shape != (batch,):
            raise ValueError(f"integer targets must have shape ({batch},), got {tuple(t.shape)}")
        low, high = int(t.min()), int(t.max())
        if low < 0 or high >= classes:
            raise ValueError(f"targets must lie in [0, {classes - 1}], got labels from {low} to {high}")
        return F.one_hot(t.long(), classes).to(lengths.dtype)
    if t.shape != lengths.shape:
        raise ValueError(f"targets must have shape {tuple(lengths.shape)}, got {tuple(t.shape)}")
    if t.is_floating_point() and not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError("targets must be 0/1 indicators (or weights in [0, 1]), got NaN, inf or values outside [0, 1]")
    return t.to(lengths.dtype)


# ----------------------------------------------------------------------------- the layer


class CapsuleLayer(nn.Module):
    r"""A capsule layer: predictions from the input capsules, then dynamic routing.

    With ``num_inputs=None`` one matrix per output capsule is shared by all inputs
    ([`predict_shared`][kexue.capsule.predict_shared], the article's default, any number of
    inputs); with an integer ``num_inputs`` every (input, output) pair has its own matrix
    ([`predict_dense`][kexue.capsule.predict_dense], the paper's layer, fixed number of inputs).

    Weights start uniform in $\pm\sqrt{6/(d_{in} + k\,d_{out})}$ (Glorot, as in
    Su's Keras layer), drawn from the global generator (seed it, or build the layer inside
    ``torch.random.fork_rng``). Like any layer it propagates NaN/inf in its input; huge finite
    inputs give finite capsules (see [`squash`][kexue.capsule.squash]).

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
        _check_method(routing, "routing")
        if num_inputs is not None:
            check_int(num_inputs, "num_inputs")
        self.iterations, self.routing = iterations, routing
        if squash_c is None and routing not in DEFAULT_SQUASH_C:
            raise ValueError(f"squash_c must be given for routing {routing!r}, which has no default constant")
        self.squash_c = (
            DEFAULT_SQUASH_C[routing] if squash_c is None else _check_squash_c(squash_c, "squash_c", torch.float32)
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
        """Route ``u`` to the output capsules; returns ``(v, couplings)``.

        Raises:
            TypeError: If ``u`` is not a floating tensor of the layer's dtype.
            ValueError: If ``u`` is not ``(batch, n_in, dim_in)`` (with ``n_in = num_inputs`` for
                a dense layer), or the routing attributes were set to invalid values.
        """
        w = self.weight
        check_tensor(u, "u", 3, floating=True)
        if u.dtype != w.dtype:
            raise TypeError(f"u must have the layer's dtype {w.dtype}, got {u.dtype}")
        if u.shape[2] != w.shape[-1]:
            raise ValueError(f"u must hold capsules of dimension dim_in={w.shape[-1]}, got shape {tuple(u.shape)}")
        if not self.shared and u.shape[1] != w.shape[0]:
            raise ValueError(f"u must hold num_inputs={w.shape[0]} input capsules, got shape {tuple(u.shape)}")
        check_int(self.iterations, "iterations")  # attributes a caller may have changed
        _check_method(self.routing, "routing")
        c = _check_squash_c(self.squash_c, "squash_c", u.dtype)
        u_hat = _predict_shared(u, w) if self.shared else _predict_dense(u, w)
        return _route(u_hat, self.iterations, self.routing, c)

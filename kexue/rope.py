r"""Rotary position embedding (RoPE) read as a base-β number system, and its context-extension variants.

Companion to Su Jianlin,
[Transformer升级之路：10、RoPE是一种β进制编码](https://kexue.fm/archives/9675) (2023-07-06), and its
sequel [Transformer升级之路：11](https://kexue.fm/archives/9706) (NTK-RoPE-fixed, NTK-RoPE-mixed and
the post-hoc $\log n$ factor).

Conventions (used by every function here):

* ``d`` is the rotated (head) dimension, even; there are ``d // 2`` frequencies ("digits").
* The article counts digits from 1: digit $m = 1, \dots, d/2$ has frequency
  $\theta_m = B^{-2(m-1)/d} = \beta^{-(m-1)}$ with $\beta = B^{2/d}$, where $B$ is the RoPE base
  (the argument ``base``, 10000 in RoFormer and LLaMA). Index ``i = m - 1`` of a returned tensor
  is digit ``m``.
* ``k >= 1`` is the extension factor (test length / training length).
* Every scaling method is a function ``f(d, base, k, **params) -> inv_freq`` in the registry
  [`SCALINGS`][kexue.rope.SCALINGS]; [`frequencies`][kexue.rope.frequencies] dispatches on its
  name. The tensor of frequencies is called ``inv_freq`` everywhere (Hugging Face's name for it);
  frequencies are float64.
* ``layout="interleaved"`` pairs dimensions ``(2i, 2i+1)`` (RoFormer, Meta's LLaMA code, GPT-J,
  rotary-embedding-torch); ``layout="half"`` pairs ``(i, i + d/2)`` (Hugging Face ``rotate_half``,
  GPT-NeoX).
* The rotations ([`rope_angles`][kexue.rope.rope_angles], [`apply_rope`][kexue.rope.apply_rope],
  [`apply_rope_reference`][kexue.rope.apply_rope_reference], [`rope_tables`][kexue.rope.rope_tables],
  [`apply_rope_tables`][kexue.rope.apply_rope_tables]) and the digit maps
  ([`beta_digits`][kexue.rope.beta_digits], [`rope_phases`][kexue.rope.rope_phases],
  [`logn_scale`][kexue.rope.logn_scale]) are elementwise: NaN/inf entries propagate elementwise, like
  torch, and are not checked.

What only the page needs (synthetic data, a tiny language model, the page's own trade-off
measures) is in [`kexue.experiments.rope`][kexue.experiments.rope].
"""

from __future__ import annotations

import functools
import math
import shutil
import sys
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from kexue._checks import check_bool, check_int, check_real, check_tensor
from kexue._memory import fresh_like

__all__ = [
    "default_inv_freq",
    "pi_inv_freq",
    "ntk_old_inv_freq",
    "ntk_inv_freq",
    "fixed_inv_freq",
    "mixed_inv_freq",
    "dynamic_inv_freq",
    "SCALINGS",
    "frequencies",
    "rope_angles",
    "apply_rope",
    "apply_rope_reference",
    "half_permutation",
    "logn_scale",
    "beta_digits",
    "rope_phases",
    "rope_tables",
    "apply_rope_tables",
]

Layout = Literal["interleaved", "half"]
ScalingFn = Callable[..., Tensor]


# ----------------------------------------------------------------------------- validation


def _check_d(d: int, minimum: int = 2) -> None:
    if check_int(d, "d", minimum) % 2:
        raise ValueError(f"d must be an even integer >= {minimum}, got {d!r}")


def _check_scaling(d: int, base: float, k: float, *, min_d: int = 2) -> None:
    """The arguments every scaling shares, checked once per call (the cores below do not check)."""
    _check_d(d, min_d)
    check_real(base, "base", above=1)
    check_real(k, "k", at_least=1)


def _no_params(method: str, params: dict[str, Any]) -> None:
    if params:
        raise TypeError(f"method {method!r} takes no extra parameters, got {sorted(params)}")


def _check_base_fits(base: float, growth: float, exponent: float, names: str) -> None:
    """Raise a ValueError naming ``names`` if the scaled base ``base * growth ** exponent`` overflows a float."""
    if math.log(base) + exponent * math.log(growth) > _LOG_FLOAT_MAX:
        raise ValueError(f"{names} too large: the scaled base {base:g} * {growth:g} ** {exponent:g} "
                         "overflows a float")


_LOG_FLOAT_MAX = math.log(sys.float_info.max) - 1e-9


def _check_positions(positions: object, name: str = "positions") -> Tensor:
    """A tensor of non-negative real positions (integer or floating, not bool or complex)."""
    check_tensor(positions, name)
    if positions.dtype == torch.bool or positions.is_complex():
        raise TypeError(f"{name} must be an integer or floating tensor, got {positions.dtype}")
    if positions.numel() and bool((positions < 0).any()):
        raise ValueError(f"{name} must be non-negative, got a minimum of {positions.min().item()}")
    return positions


def _check_inv_freq(inv_freq: object) -> Tensor:
    """A non-empty 1-D floating tensor of frequencies (values unchecked: they propagate elementwise)."""
    return check_tensor(inv_freq, "inv_freq", 1, floating=True, nonempty=True)


# ----------------------------------------------------------------------------- frequencies

# --8<-- [start:default]
def _digits(d: int) -> Tensor:
    """Digit indices m = 1 .. d/2 as float64 (the article's convention)."""
    return torch.arange(1, d // 2 + 1, dtype=torch.float64)


def _theta(d: int, base: float) -> Tensor:
    """theta_m = base^(-2(m-1)/d), m = 1 .. d/2, float64 (unchecked: callers validate)."""
    return base ** (-2.0 * (_digits(d) - 1) / d)


def default_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, **params: Any) -> Tensor:
    r"""Plain RoPE frequencies; used unchanged at any length this is *extrapolation*.

    $$\theta_m = B^{-2(m-1)/d} = \beta^{-(m-1)}, \qquad \beta = B^{2/d}, \quad m = 1, \dots, d/2.$$

    ``k`` is validated but ignored. Source: Su et al., RoFormer (arXiv:2104.09864); article 9675.

    Args:
        d: Rotated dimension (even, >= 2).
        base: The base $B > 1$ (10000 in RoFormer and LLaMA).
        k: Extension factor (>= 1); unused.
        **params: None accepted.

    Returns:
        The frequencies $\theta_1 > \dots > \theta_{d/2}$, float64.

    Shapes:
        output: ``(d // 2,)``.

    Raises:
        ValueError: If ``d``, ``base`` or ``k`` is out of range.
    """
    _check_scaling(d, base, k)
    _no_params("default", params)
    return _theta(d, base)
# --8<-- [end:default]


def pi_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, **params: Any) -> Tensor:
    r"""Position interpolation (kaiokendev's SuperHOT, Chen et al. 2023): positions divided by ``k``.

    $$\theta'_m = \theta_m / k \quad\Longleftrightarrow\quad n\,\theta'_m = (n/k)\,\theta_m .$$

    Same as Hugging Face's ``linear`` RoPE scaling and rotary-embedding-torch's ``interpolate_factor``.
    Arguments, output and errors as [`default_inv_freq`][kexue.rope.default_inv_freq].
    """
    _check_scaling(d, base, k)
    _no_params("pi", params)
    return _theta(d, base) / k


def ntk_old_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, **params: Any) -> Tensor:
    r"""Su's change of base ("NTK-RoPE-old" in the sequel): $\beta' = \beta k^{2/d}$, i.e. $B' = B\,k$.

    $$\theta'_m = (B k)^{-2(m-1)/d} = \theta_m\, k^{-2(m-1)/d} .$$

    This is the version behind the "NTK-RoPE" rows of article 9675's table (per article 9706).
    The lowest frequency is multiplied by $k^{-(d-2)/d}$, slightly *more* than $1/k$ (0.129 against
    0.125 for $d = 128$, $k = 8$): the slowest digit is slowed a little less than by interpolation.
    Arguments, output and errors as [`default_inv_freq`][kexue.rope.default_inv_freq].
    """
    _check_scaling(d, base, k)
    _no_params("ntk-old", params)
    return _theta(d, base * k)


# --8<-- [start:ntk]
def ntk_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, **params: Any) -> Tensor:
    r"""bloc97's NTK-aware scaled RoPE: $B' = B\,k^{d/(d-2)}$.

    The base is chosen so that the *lowest* frequency is exactly interpolated,
    $n/(\beta\lambda)^{d/2-1} = (n/k)/\beta^{d/2-1}$, giving $\lambda = k^{2/(d-2)}$, while the highest
    frequency is unchanged (extrapolated):

    $$\theta'_m = \left(B\,k^{d/(d-2)}\right)^{-2(m-1)/d}, \qquad \theta'_1 = \theta_1,\quad
    \theta'_{d/2} = \theta_{d/2}/k .$$

    Source: bloc97 (Reddit r/LocalLLaMA, June 2023), derivation in article 9675; equals
    rotary-embedding-torch's ``theta_rescale_factor=k``. Arguments, output and errors as
    [`default_inv_freq`][kexue.rope.default_inv_freq], except that ``d >= 4`` (with one frequency
    the exponent $d/(d-2)$ is undefined).
    """
    _check_scaling(d, base, k, min_d=4)
    _no_params("ntk", params)
    _check_base_fits(base, k, d / (d - 2), "k is")
    return _theta(d, base * k ** (d / (d - 2)))
# --8<-- [end:ntk]


def fixed_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, **params: Any) -> Tensor:
    r"""NTK-RoPE-fixed (article 9706): base $\beta\lambda$ *and* an extra $1/\lambda$, $\lambda = k^{2/d}$.

    $$\theta'_m = \frac{1}{\lambda(\beta\lambda)^{m-1}} = \theta_m\,\lambda^{-m}, \qquad \lambda = k^{2/d}.$$

    In base $\beta\lambda$ a digit is taken modulo $\beta\lambda$, so its period grows by $\lambda$ too;
    the product of all $d/2$ factors is $\lambda^{d/2} = k$ at the lowest frequency.
    Arguments, output and errors as [`default_inv_freq`][kexue.rope.default_inv_freq].
    """
    _check_scaling(d, base, k)
    _no_params("fixed", params)
    return _theta(d, base) * (k ** (2.0 / d)) ** (-_digits(d))


# --8<-- [start:mixed]
def mixed_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, *, b: float = 0.625) -> Tensor:
    r"""NTK-RoPE-mixed (article 9706): digit $m$ is slowed by $\lambda_1\cdots\lambda_m = e^{a m^b}$.

    $$\theta'_m = \frac{\theta_m}{\lambda_1\cdots\lambda_m} = \theta_m\, e^{-a m^b},
    \qquad a\,(d/2)^b = \ln k, \quad m = 1, \dots, d/2 .$$

    Why per digit: relative positions are counted in a Toeplitz matrix, so short distances are
    seen far more often in training than long ones, and the high digits (slow frequencies) are the
    least trained. NTK-RoPE-fixed spreads the extension over all digits alike; the sequel asks the
    low digits to absorb more of it, $\lambda_1 \ge \lambda_2 \ge \dots \ge \lambda_{d/2} \ge 1$ with
    $\prod_m \lambda_m = k$. A different ratio per digit is a mixed-radix system (seconds, minutes,
    hours, days), hence the name.

    The lowest frequency is always exactly interpolated ($\theta'_{d/2} = \theta_{d/2}/k$); $b = 1$ gives
    NTK-RoPE-fixed, $b = 0$ gives position interpolation. Su found $b = 0.625$ best on his model and
    used $b = 0.75$ for LLaMA2 (``bojone/rerope``, ``ntk_patch.py``). Note $m$ starts at 1: starting at
    0 would break both reductions.

    Args:
        d: Rotated dimension (even, >= 2).
        base: The base $B > 1$ (10000).
        k: Extension factor (>= 1).
        b: Exponent in $[0, 1]$ (keeps $\lambda_1 \ge \dots \ge \lambda_{d/2} \ge 1$).

    Returns:
        Frequencies, float64.

    Shapes:
        output: ``(d // 2,)``.

    Raises:
        ValueError: If ``d``, ``base``, ``k`` or ``b`` is out of range.

    Examples:
        >>> from kexue.rope import default_inv_freq, mixed_inv_freq
        >>> ratio = mixed_inv_freq(128, 10000.0, 8.0) / default_inv_freq(128)
        >>> ratio[[0, 31, 63]]  # highest digit almost kept, lowest slowed by exactly 1/k
        tensor([0.8568, 0.2597, 0.1250], dtype=torch.float64)
    """
    _check_scaling(d, base, k)
    check_real(b, "b", at_least=0, at_most=1)
    a = math.log(k) / (d / 2) ** b
    return _theta(d, base) * torch.exp(-a * _digits(d) ** b)
# --8<-- [end:mixed]


def dynamic_inv_freq(
    d: int, base: float = 10000.0, k: float = 1.0, *, seq_len: int, train_len: int
) -> Tensor:
    r"""Hugging Face's dynamic NTK scaling (credited there to bloc97 and emozilla); not in article 9675.

    $$B' = B\left(\frac{k\,s}{L} - (k - 1)\right)^{d/(d-2)}, \qquad s = \max(\text{seq\_len}, L),$$

    with $L$ the training length. At $s \le L$ nothing changes; at $s = kL$ the base grows by
    $(k^2 - k + 1)^{d/(d-2)}$, *more* than bloc97's $k^{d/(d-2)}$ (HF's ``factor`` semantics).

    Args:
        d: Rotated dimension (even, >= 4).
        base: The base $B > 1$.
        k: HF's ``factor`` (>= 1).
        seq_len: Current sequence length (>= 1).
        train_len: Training length $L$ (HF's ``max_position_embeddings``, >= 1).

    Returns:
        Frequencies, float64.

    Shapes:
        output: ``(d // 2,)``.

    Raises:
        ValueError: If any argument is out of range.
    """
    _check_scaling(d, base, k, min_d=4)
    check_int(seq_len, "seq_len")
    check_int(train_len, "train_len")
    s = max(seq_len, train_len)
    _check_base_fits(base, k * s / train_len - (k - 1), d / (d - 2), "k and seq_len / train_len are")
    return _theta(d, base * (k * s / train_len - (k - 1)) ** (d / (d - 2)))


SCALINGS: dict[str, ScalingFn] = {
    "default": default_inv_freq,
    "pi": pi_inv_freq,
    "ntk-old": ntk_old_inv_freq,
    "ntk": ntk_inv_freq,
    "fixed": fixed_inv_freq,
    "mixed": mixed_inv_freq,
    "dynamic": dynamic_inv_freq,
}
"""RoPE scalings by name; every entry is ``f(d, base, k, **params) -> inv_freq`` (float64, ``(d // 2,)``)."""


def frequencies(d: int, base: float = 10000.0, method: str = "default", k: float = 1.0, **params: Any) -> Tensor:
    r"""Frequencies $\theta'_m$ of RoPE scaled by ``method`` (a key of [`SCALINGS`][kexue.rope.SCALINGS]).

    Args:
        d: Rotated dimension (even).
        base: The base $B > 1$.
        method: One of ``"default"``, ``"pi"``, ``"ntk-old"``, ``"ntk"``, ``"fixed"``, ``"mixed"``,
            ``"dynamic"``.
        k: Extension factor (>= 1).
        **params: Method parameters (``b`` for mixed; ``seq_len``, ``train_len`` for dynamic).

    Returns:
        Frequencies, float64, digit ``m`` at index ``m - 1``.

    Shapes:
        output: ``(d // 2,)``.

    Raises:
        ValueError: If ``method`` is unknown or an argument is out of range.

    Examples:
        >>> from kexue.rope import frequencies
        >>> frequencies(8, 10000.0)  # beta = 10: one decimal digit per pair
        tensor([1.0000, 0.1000, 0.0100, 0.0010], dtype=torch.float64)
        >>> ratio = frequencies(128, 10000.0, "ntk", k=8.0) / frequencies(128, 10000.0)
        >>> ratio[[0, -1]]  # bloc97: highest frequency kept, lowest interpolated by 1/k
        tensor([1.0000, 0.1250], dtype=torch.float64)
    """
    if method not in SCALINGS:
        raise ValueError(f"method must be one of {sorted(SCALINGS)}, got {method!r}")
    return SCALINGS[method](d, base, k, **params)


# ----------------------------------------------------------------------------- applying RoPE


def _check_rope_inputs(x: Tensor, positions: Tensor, inv_freq: Tensor, layout: str) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., seq, d), got {tuple(x.shape)}")
    _check_inv_freq(inv_freq)
    d = x.shape[-1]
    if d % 2 or inv_freq.shape[0] != d // 2:
        raise ValueError(f"x's last dimension must be even and equal 2 * len(inv_freq) = {2 * inv_freq.shape[0]}, got {d}")
    check_tensor(positions, "positions")
    if positions.dim() < 1 or positions.shape[-1] != x.shape[-2]:
        raise ValueError(f"positions must have shape (..., seq) with seq = {x.shape[-2]}, got {tuple(positions.shape)}")
    _check_positions(positions)
    if layout not in ("interleaved", "half"):
        raise ValueError(f"layout must be 'interleaved' or 'half', got {layout!r}")


def rope_angles(positions: Tensor, inv_freq: Tensor) -> Tensor:
    r"""Angles $\phi_m(n) = n\,\theta_m$ in float64 when ``inv_freq`` is float64, else float32.

    Args:
        positions: Positions $n \ge 0$ (integer or float).
        inv_freq: Frequencies $\theta_m$.

    Returns:
        Angles (never lower than float32 precision).

    Shapes:
        positions: ``(..., seq)``; inv_freq: ``(d // 2,)``; output: ``(..., seq, d // 2)``.

    Raises:
        TypeError: If ``positions`` is not an integer or floating tensor, or ``inv_freq`` not a floating one.
        ValueError: If a position is negative or ``inv_freq`` is not a non-empty 1-D tensor.
    """
    _check_positions(positions)
    _check_inv_freq(inv_freq)
    dtype = torch.float64 if inv_freq.dtype == torch.float64 else torch.float32
    return positions.to(dtype)[..., None] * inv_freq.to(dtype)


# --8<-- [start:apply]
def _rotate(x: Tensor, cos: Tensor, sin: Tensor, layout: Layout) -> Tensor:
    """Every pair ``(x1, x2)`` of ``x`` becomes ``(x1 cos - x2 sin, x1 sin + x2 cos)``, in ``x``'s dtype."""
    if layout == "interleaved":
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def apply_rope(x: Tensor, positions: Tensor, inv_freq: Tensor, layout: Layout = "interleaved") -> Tensor:
    r"""Rotate each pair of features of ``x`` by the angle $n\theta_m$ of its position $n$.

    $$\begin{pmatrix} x'_{n,2m-1} \\ x'_{n,2m} \end{pmatrix} =
    \begin{pmatrix} \cos n\theta_m & -\sin n\theta_m \\ \sin n\theta_m & \cos n\theta_m \end{pmatrix}
    \begin{pmatrix} x_{n,2m-1} \\ x_{n,2m} \end{pmatrix},$$

    so that $\langle R_{n_1} q, R_{n_2} k\rangle = \langle q, R_{n_2 - n_1} k\rangle$. Angles are computed in
    float32 or float64 (see [`rope_angles`][kexue.rope.rope_angles]) whatever the dtype of ``x``; their
    cosines and sines are then rounded to ``x``'s dtype and the rotation is done in that dtype, as
    Hugging Face does. The values are those of the formula in ``_rotate`` above; unless the angles
    need gradients, they are computed by the fast path
    [`apply_rope_tables`][kexue.rope.apply_rope_tables] uses (one pass over memory), and the
    gradient is the rotation by the opposite angles.

    Args:
        x: Queries or keys.
        positions: Non-negative positions of the ``seq`` rows.
        inv_freq: Frequencies from [`frequencies`][kexue.rope.frequencies].
        layout: ``"interleaved"`` pairs ``(2i, 2i+1)``; ``"half"`` pairs ``(i, i + d/2)`` (HF ``rotate_half``).

    Returns:
        The rotated tensor, with ``x``'s dtype.

    Shapes:
        x: ``(..., seq, d)``; positions: ``(seq,)`` or broadcastable ``(..., seq)``;
        inv_freq: ``(d // 2,)``; output: like ``x``.

    Raises:
        TypeError: If ``x`` is not floating point.
        ValueError: On mismatched shapes, negative positions or an unknown ``layout``.

    Examples:
        >>> import torch
        >>> from kexue.rope import apply_rope, frequencies
        >>> q = torch.tensor([[1.0, 0.0, 1.0, 0.0]]).expand(3, 4)  # the same vector at positions 0, 1, 2
        >>> apply_rope(q, torch.arange(3), frequencies(4, 100.0))  # pair 1 turns 1 rad per step, pair 2 0.1
        tensor([[ 1.0000,  0.0000,  1.0000,  0.0000],
                [ 0.5403,  0.8415,  0.9950,  0.0998],
                [-0.4161,  0.9093,  0.9801,  0.1987]])
    """
    _check_rope_inputs(x, positions, inv_freq, layout)
    angles = rope_angles(positions, inv_freq)  # float64 if inv_freq is float64, else float32
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)  # then the rotation in x's dtype
    if cos.requires_grad or sin.requires_grad or not _fast_path_applies(x, cos):
        return _rotate(x, cos, sin, layout)  # autograd through the formula, to the frequencies too
    return _RopeRotation.apply(x, cos, sin, layout)
# --8<-- [end:apply]


def apply_rope_reference(
    x: Tensor, positions: Tensor, inv_freq: Tensor, layout: Layout = "interleaved"
) -> Tensor:
    r"""Slow, obvious RoPE: one explicit $2\times2$ rotation matrix per pair and position (for tests).

    Args:
        x: Queries or keys.
        positions: Non-negative positions.
        inv_freq: Frequencies.
        layout: ``"interleaved"`` or ``"half"``.

    Returns:
        The rotated tensor, in float64 arithmetic, cast back to ``x``'s dtype.

    Shapes:
        x: ``(..., seq, d)``; positions: ``(seq,)`` or ``(..., seq)``; output: like ``x``.

    Raises:
        TypeError: If ``x`` is not floating point.
        ValueError: As [`apply_rope`][kexue.rope.apply_rope].
    """
    _check_rope_inputs(x, positions, inv_freq, layout)
    d = x.shape[-1]
    pos = torch.broadcast_to(positions.to(torch.float64), x.shape[:-1])
    xd = x.to(torch.float64)
    out = torch.empty_like(xd)
    for i in range(d // 2):
        a, c = (2 * i, 2 * i + 1) if layout == "interleaved" else (i, i + d // 2)
        phi = pos * inv_freq[i].to(torch.float64)
        rot = torch.stack(
            (torch.stack((phi.cos(), -phi.sin()), -1), torch.stack((phi.sin(), phi.cos()), -1)), -2
        )  # (..., seq, 2, 2)
        pair = torch.stack((xd[..., a], xd[..., c]), -1)[..., None]  # (..., seq, 2, 1)
        new = (rot @ pair)[..., 0]
        out[..., a], out[..., c] = new[..., 0], new[..., 1]
    return out.to(x.dtype)


def half_permutation(d: int) -> Tensor:
    """Index permutation taking the interleaved layout to the half layout: ``[0, 2, 4, ..., 1, 3, 5, ...]``.

    ``apply_rope(x[..., p], pos, f, "half") == apply_rope(x, pos, f, "interleaved")[..., p]``, so
    attention scores are identical once q and k are permuted the same way (which is what Hugging
    Face's LLaMA conversion script does to the weights).

    Args:
        d: Feature dimension (even, >= 2).

    Returns:
        int64 permutation.

    Shapes:
        output: ``(d,)``.

    Raises:
        ValueError: If ``d`` is not a positive even integer.
    """
    _check_d(d)
    return torch.cat((torch.arange(0, d, 2), torch.arange(1, d, 2)))


def _check_count(n: object, name: str) -> Tensor | int | float:
    """A real tensor (integer or floating) or a Python number, not a bool, list or complex value."""
    if isinstance(n, Tensor):
        if n.dtype == torch.bool or n.is_complex():
            raise TypeError(f"{name} must be an integer or floating tensor, got {n.dtype}")
    elif not isinstance(n, (int, float)) or isinstance(n, bool):
        raise TypeError(f"{name} must be a tensor or a number, got {type(n).__name__}")
    return n


# --8<-- [start:logn]
def logn_scale(n: Tensor | int, train_len: int, *, clip: bool = True) -> Tensor:
    r"""The $\log n$ factor on the query that sees $n$ keys, after training or during it.

    $$\text{clip=True (article 9706's "}\log n^\dagger\text{")}:\ \max\!\left(1, \log_{L} n\right),
    \qquad \text{clip=False (pre-training, article 8823)}:\ \log_{L} n = \frac{\ln n}{\ln L},$$

    with $L$ = ``train_len``. The clipped factor changes nothing within the training length, so it
    can be added to a model trained without it (``bojone/rerope``'s ``ntk_patch.py``). The unclipped
    one is the entropy-invariant scale of [article 8823](https://kexue.fm/archives/8823), which a
    model must be trained with (the article's "-log n" rows). Apply it to the queries only (scaling
    q and k would square it). In causal attention the query at 0-based position $p$ sees
    $n = p + 1$ keys.

    Args:
        n: Number of visible keys (>= 1), a tensor or an int.
        train_len: Training length $L$ (>= 2).
        clip: Clip at 1 from below (post-hoc use) or not (pre-training).

    Returns:
        The factor, float64 (>= 1 when clipped).

    Shapes:
        n: any; output: like ``n``.

    Raises:
        TypeError: If ``n`` is not a real tensor or number, or ``clip`` not a bool.
        ValueError: If ``n < 1`` somewhere or ``train_len < 2``.

    Examples:
        >>> import torch
        >>> from kexue.rope import logn_scale
        >>> logn_scale(torch.tensor([1, 8, 64, 512]), 64)
        tensor([1.0000, 1.0000, 1.0000, 1.5000], dtype=torch.float64)
        >>> logn_scale(torch.tensor([1, 8, 64, 512]), 64, clip=False)
        tensor([0.0000, 0.5000, 1.0000, 1.5000], dtype=torch.float64)
    """
    check_int(train_len, "train_len", 2)
    check_bool(clip, "clip")
    n = torch.as_tensor(_check_count(n, "n"), dtype=torch.float64)
    if n.numel() and bool((n < 1).any()):
        raise ValueError("n (number of visible keys) must be >= 1")
    scale = n.log() / math.log(train_len)
    return scale.clamp(min=1.0) if clip else scale
# --8<-- [end:logn]


# ----------------------------------------------------------------------------- the base-beta view

# --8<-- [start:digits]
def _quotients(n: Tensor, beta: float, num_digits: int) -> Tensor:
    r"""The quotients $n/\beta^{m-1}$, $m = 1, \dots$, that base-$\beta$ digits and RoPE share (float64)."""
    check_real(beta, "beta", above=1)
    check_int(num_digits, "num_digits")
    n = torch.as_tensor(_check_count(n, "n"), dtype=torch.float64)
    if n.numel() and bool((n < 0).any()):
        raise ValueError("n must be non-negative")
    powers = torch.tensor(beta, dtype=torch.float64) ** torch.arange(num_digits, dtype=torch.float64)
    return n[..., None] / powers  # (..., num_digits)


def beta_digits(n: Tensor, beta: float, num_digits: int) -> Tensor:
    r"""Base-$\beta$ digits: $\operatorname{digit}_m(n) = \lfloor n/\beta^{m-1}\rfloor \bmod \beta$, lowest first.

    For integer $\beta$ these are the usual digits; for real $\beta > 1$ they lie in $[0, \beta)$ and
    need not be integers.

    Args:
        n: Non-negative numbers.
        beta: Base, > 1.
        num_digits: Number of digits $m = 1, \dots$ (>= 1).

    Returns:
        float64 digits.

    Shapes:
        n: ``(N,)``; output: ``(N, num_digits)``.

    Raises:
        ValueError: If ``beta <= 1``, ``num_digits < 1`` or ``n`` has negatives.

    Examples:
        >>> import torch
        >>> from kexue.rope import beta_digits
        >>> beta_digits(torch.tensor([1749]), 10.0, 4)  # 1749, lowest digit first
        tensor([[9., 4., 7., 1.]], dtype=torch.float64)
        >>> beta_digits(torch.tensor([1749]), 16.0, 3)  # 1749 = (6, 13, 5) in base 16
        tensor([[ 5., 13.,  6.]], dtype=torch.float64)
    """
    return torch.remainder(torch.floor(_quotients(n, beta, num_digits)), beta)


def rope_phases(n: Tensor, beta: float, num_digits: int) -> Tensor:
    r"""RoPE's phases in the digit view: $(n/\beta^{m-1}) \bmod 2\pi$, the same quotient with a smooth "mod".

    Compared with [`beta_digits`][kexue.rope.beta_digits] the floor is dropped and the modulus is
    $2\pi$ instead of $\beta$: digit $m$ wraps every $2\pi\beta^{m-1}$ positions, not every $\beta^m$.

    Args:
        n: Non-negative positions.
        beta: $\beta = B^{2/d}$, > 1.
        num_digits: Number of digits (>= 1).

    Returns:
        float64 phases in $[0, 2\pi)$.

    Shapes:
        n: ``(N,)``; output: ``(N, num_digits)``.

    Raises:
        ValueError: If ``beta <= 1``, ``num_digits < 1`` or ``n`` has negatives.

    Examples:
        >>> import torch
        >>> from kexue.rope import rope_phases
        >>> rope_phases(torch.tensor([1749]), 10.0, 4)  # 1749, 174.9, 17.49, 1.749, each mod 2 pi
        tensor([[2.2745, 5.2540, 4.9236, 1.7490]], dtype=torch.float64)
    """
    return torch.remainder(_quotients(n, beta, num_digits), 2 * math.pi)
# --8<-- [end:digits]


# ----------------------------------------------------------------------------- fast path
# The kernels behind apply_rope and apply_rope_tables. Same values as the formula in _rotate (the
# tests check both against apply_rope_reference), fewer passes over memory:
#
# * interleaved, float32/float64: pairs (2i, 2i+1) are complex numbers x_2i + i x_2i+1 and the
#   rotation is one complex multiply by e^{i n theta}, a single pass (bit-identical to _rotate: the
#   complex kernel rounds the same products and sums);
# * half layout: each half of out first gets its swapped partner times sin (-x2 sin, x1 sin), two
#   half-width multiplies whose strided access costs little next to reading x from memory; then
#   x * [cos, cos] is added over whole rows in one contiguous multiply-add (a fused multiply-add, so
#   it can differ from _rotate in the last bit), one (seq, d) slice at a time so that pass reads
#   from cache, not memory. A half-width pass over cached rows costs about as much as a full-width
#   one, so leaving one contiguous pass for the cache (instead of two half-width ones) saves time;
# * interleaved float16/bfloat16 (no complex kernel): the same multiply and multiply-add on the
#   strided halves.
#
# Fresh outputs come from kexue._memory.fresh_like: writing 64 MiB into fresh 4 KiB pages costs
# more than the rotation itself.


def rope_tables(positions: Tensor, inv_freq: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    r"""Cosine and sine tables $\cos n\theta_m$, $\sin n\theta_m$ for [`apply_rope_tables`][kexue.rope.apply_rope_tables].

    The angles are computed as in [`rope_angles`][kexue.rope.rope_angles] (float32 or float64),
    then the tables are cast to ``dtype``, so a model can build them once per sequence length and
    reuse them for every layer, head, query and key.

    Args:
        positions: Non-negative positions.
        inv_freq: Frequencies $\theta_m$.
        dtype: Floating dtype of the tables (that of the queries and keys they will rotate).

    Returns:
        ``(cos, sin)``.

    Shapes:
        positions: ``(seq,)``; inv_freq: ``(d // 2,)``; cos, sin: ``(seq, d // 2)``.

    Raises:
        TypeError: If ``dtype`` is not a floating dtype, or as [`rope_angles`][kexue.rope.rope_angles].
        ValueError: If ``positions`` is not 1-D, or as [`rope_angles`][kexue.rope.rope_angles].
    """
    check_tensor(positions, "positions", 1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    angles = rope_angles(positions, inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _spans_overlap(a: Tensor, b: Tensor) -> bool:
    """Whether the memory spans of two strided tensors intersect (public API only; conservative)."""
    if a.numel() == 0 or b.numel() == 0:
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False

    def span(t: Tensor) -> tuple[int, int]:
        lo = hi = t.data_ptr()
        for size, stride in zip(t.shape, t.stride(), strict=True):
            reach = (size - 1) * stride * t.element_size()
            lo, hi = (lo + reach, hi) if reach < 0 else (lo, hi + reach)
        return lo, hi + t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def _fast_path_applies(x: Tensor, cos: Tensor) -> bool:
    """The tables broadcast to x's rows without enlarging x (positions with extra batch dims do not)."""
    return torch.broadcast_shapes(x.shape[:-1], cos.shape[:-1]) == x.shape[:-1]


def _rotate_into(x: Tensor, cos: Tensor, sin: Tensor, layout: Layout, out: Tensor) -> Tensor:
    """Write the rotation of ``x`` into ``out`` (contiguous, not overlapping ``x``); tables broadcast to x's rows."""
    if x.numel() == 0:
        return out
    h = x.shape[-1] // 2
    if layout == "interleaved" and x.dtype in (torch.float32, torch.float64):
        xc = torch.view_as_complex(x.contiguous().view(*x.shape[:-1], h, 2))
        oc = torch.view_as_complex(out.view(*x.shape[:-1], h, 2))
        torch.mul(xc, torch.complex(cos, sin), out=oc)
        return out
    if layout == "interleaved":  # float16 / bfloat16: no complex kernel; strided halves
        x1, x2, o1, o2 = x[..., 0::2], x[..., 1::2], out[..., 0::2], out[..., 1::2]
        torch.mul(x1, cos, out=o1)
        o1.addcmul_(x2, sin, value=-1.0)
        torch.mul(x2, cos, out=o2)
        o2.addcmul_(x1, sin)
        return out
    if cos.ndim == 2 and x.ndim > 2:  # one (seq, d) slice at a time: the last pass reads from cache
        pieces = zip(x.reshape(-1, *x.shape[-2:]), out.view(-1, *x.shape[-2:]), strict=True)
    else:
        pieces = ((x, out),)
    neg_sin, both_cos = torch.neg(sin), torch.cat((cos, cos), dim=-1)  # small (seq, d/2) and (seq, d) tables
    for xi, oi in pieces:
        torch.mul(xi[..., h:], neg_sin, out=oi[..., :h])  # -x2 sin: the strided half-width passes read x
        torch.mul(xi[..., :h], sin, out=oi[..., h:])  # x1 sin    from memory, where their cost is hidden
        oi.addcmul_(xi, both_cos)  # (x1 cos - x2 sin, x2 cos + x1 sin): one contiguous pass over cached rows
    return out


def _rotate_half_formula_into(x: Tensor, cos: Tensor, sin: Tensor, out: Tensor) -> Tensor:
    """The half-layout rotation written into ``out``'s two halves: the formula ``torch.compile`` fuses.

    Eager, this makes four temporaries; compiled, it is one loop that reads each row of ``x`` once
    and writes each row of ``out`` once (Inductor's C++ kernel, vectorised, on the torch threads).
    It assigns the halves instead of concatenating them as ``_rotate`` does: compiled, the
    ``torch.cat`` form wrote a temporary and then copied it (58 ms against 11 ms on the benchmark
    shape). ``_rotate`` keeps the out-of-place form, which ``torch.func.vmap`` needs.
    """
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    out[..., :h] = x1 * cos - x2 * sin
    out[..., h:] = x2 * cos + x1 * sin
    return out


@functools.cache
def _compiled_half_rotation() -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """``torch.compile`` of the half-layout formula, made on first use; dynamo keeps one kernel per
    shape and dtype it has seen (after a second shape, one with symbolic sizes)."""
    with warnings.catch_warnings():  # importing Inductor defines TorchScript methods, which torch deprecates
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.")
        import torch._inductor.compile_fx
    return torch.compile(_rotate_half_formula_into, fullgraph=True)


def _compiler_found() -> bool:
    """Whether the C++ compiler that ``torch.compile``'s CPU backend calls (Inductor's ``cpp.cxx``
    setting: ``CXX``, else g++, clang++ on macOS) is on the PATH; tests and benchmarks of
    ``compiled=True`` ask this before building a kernel."""
    import torch._inductor.config as inductor_config

    return shutil.which(inductor_config.cpp.cxx[1]) is not None


def _rotate_half_compiled(x: Tensor, cos: Tensor, sin: Tensor, out: Tensor) -> Tensor:
    if x.numel() == 0:
        return out
    try:
        return _compiled_half_rotation()(x, cos, sin, out)
    except Exception as err:  # the inputs were checked: what fails here is the compiler toolchain
        root = err
        while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
            root = inner
        first = next((line for line in str(root).splitlines() if line.strip()), "")
        raise RuntimeError(
            "apply_rope_tables(compiled=True) needs torch.compile's CPU backend, which builds C++ with the "
            f"system compiler, and that failed ({type(root).__name__}: {first}); use compiled=False"
        ) from err


class _RopeRotation(torch.autograd.Function):
    """Rotation by precomputed cos and sin tables (constants): forward by the fast path, backward by
    the rotation through the opposite angles (the transpose of an orthogonal map)."""

    @staticmethod
    def forward(x: Tensor, cos: Tensor, sin: Tensor, layout: Layout) -> Tensor:
        return _rotate_into(x, cos, sin, layout, fresh_like(x))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        _, ctx.cos, ctx.sin, ctx.layout = inputs

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        return _RopeRotation.apply(grad, ctx.cos, -ctx.sin, ctx.layout), None, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: Tensor, cos: Tensor, sin: Tensor, layout: Layout) -> tuple[Tensor, int | None]:
        """Under ``torch.func.vmap``: unbatched tables and x, the fast path; anything batched, the formula."""
        if all(d is None for d in in_dims):
            return _RopeRotation.apply(x, cos, sin, layout), None
        plain = torch.func.vmap(lambda a, c, s: _rotate(a, c, s, layout), in_dims=in_dims[:3])
        return plain(x, cos, sin), 0


# --8<-- [start:tables]
def apply_rope_tables(
    x: Tensor, cos: Tensor, sin: Tensor, layout: Layout = "half", out: Tensor | None = None, *, compiled: bool = False
) -> Tensor:
    r"""Fast RoPE with precomputed tables: the rotation of [`apply_rope`][kexue.rope.apply_rope], written into ``out``.

    Same result as ``apply_rope(x, positions, inv_freq, layout)`` when ``cos, sin =
    rope_tables(positions, inv_freq, x.dtype)``. In the interleaved layout (float32/float64) each
    pair is a complex number and the rotation is one complex multiply by $e^{in\theta_m}$, a single
    pass over memory. In the half layout there are no temporaries of x's size: each half of ``out``
    gets its partner times $\sin$, then whole rows of $x \odot (\cos, \cos)$ are added in place
    (a fused multiply-add), $y_1 = x_1\cos - x_2\sin$, $y_2 = x_2\cos + x_1\sin$, one
    ``(seq, d)`` slice at a time so the last pass over a slice hits the CPU cache instead of
    memory. Eager operations cannot overlap those passes with the memory traffic, so this path
    takes about twice as long as copying ``x`` (see the Performance page).

    With ``compiled=True`` the half layout instead runs the formula through ``torch.compile``,
    which fuses it into one pass over memory (1.2–1.7× the time of a copy on the benchmark
    shape, against 1.9–2.4× eager). The first call for each shape and dtype compiles a kernel
    (seconds; dynamo reuses it afterwards, and after a second shape compiles one with symbolic
    sizes), and it needs a C++ compiler. Float16 and bfloat16 are computed in float32 inside the
    kernel and rounded once, so they can differ from the eager path by one rounding. The
    interleaved layout ignores the flag: its float32/float64 path is one pass already, and the
    compiled formula measured slower than it.

    Args:
        x: Queries or keys (floating point, same dtype as the tables).
        cos: Cosine table from [`rope_tables`][kexue.rope.rope_tables].
        sin: Sine table from [`rope_tables`][kexue.rope.rope_tables].
        layout: ``"half"`` (Hugging Face ``rotate_half``) or ``"interleaved"``.
        out: Optional preallocated output like ``x`` (must not overlap ``x``); reused across calls.
        compiled: Half layout: rotate with a ``torch.compile``-fused kernel (one pass; the first
            call per shape and dtype compiles it).

    Returns:
        ``out`` (or a new tensor), holding the rotated ``x``.

    Shapes:
        x: ``(..., seq, d)``; cos, sin: ``(seq, d // 2)``; out: like ``x``.

    Raises:
        TypeError: On non-floating or mismatched dtypes.
        ValueError: On mismatched shapes, an unknown ``layout``, an ``out`` that overlaps ``x``, a
            ``compiled`` that is not a bool, or inputs that require grad while grad mode is on (the
            output is written into a buffer, which autograd cannot follow: train with
            [`apply_rope`][kexue.rope.apply_rope]).
        RuntimeError: If ``compiled=True`` and ``torch.compile`` cannot build its kernel here.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if layout not in ("interleaved", "half"):
        raise ValueError(f"layout must be 'interleaved' or 'half', got {layout!r}")
    check_bool(compiled, "compiled")
    if x.ndim < 2 or x.shape[-1] % 2:
        raise ValueError(f"x must have shape (..., seq, d) with even d, got {tuple(x.shape)}")
    seq, h = x.shape[-2], x.shape[-1] // 2
    for name, t in (("cos", cos), ("sin", sin)):
        if not isinstance(t, Tensor) or t.shape != (seq, h):
            raise ValueError(f"{name} must have shape (seq, d // 2) = {(seq, h)}, got {tuple(getattr(t, 'shape', ()))}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype {x.dtype}, got {t.dtype}")
    if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in (x, cos, sin, out)):
        raise ValueError("x, cos, sin and out must not require grad (apply_rope_tables writes into a buffer, "
                         "which autograd cannot follow): use apply_rope, or call it under torch.no_grad()")
    if out is None:
        out = fresh_like(x)
    elif not isinstance(out, Tensor) or out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(f"out must match x's shape {tuple(x.shape)} and dtype {x.dtype}")
    elif _spans_overlap(out, x):
        raise ValueError("out must not overlap x (rotate into a separate buffer)")
    if compiled and layout == "half":
        return _rotate_half_compiled(x, cos, sin, out)
    if not out.is_contiguous():
        return out.copy_(_rotate_into(x, cos, sin, layout, fresh_like(x)))
    return _rotate_into(x, cos, sin, layout, out)
# --8<-- [end:tables]

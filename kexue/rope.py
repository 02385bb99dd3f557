"""Rotary position embedding (RoPE) read as a base-beta number system, and its context-extension variants.

Companion to Su Jianlin, "Transformer升级之路：10、RoPE是一种β进制编码"
(https://kexue.fm/archives/9675, 2023-07-06) and its sequel 11
(https://kexue.fm/archives/9706, NTK-RoPE-fixed, NTK-RoPE-mixed and the post-hoc log n factor).

Conventions (used by every function here):

* ``d`` is the rotated (head) dimension, even; there are ``d // 2`` frequencies ("digits").
* The article counts digits from 1: digit ``m = 1 .. d/2`` has frequency
  $\\theta_m = b^{-2(m-1)/d} = \\beta^{-(m-1)}$ with $\\beta = b^{2/d}$. Index ``i = m - 1``
  of a returned tensor is digit ``m``.
* ``k >= 1`` is the extension factor (test length / training length).
* Every scaling method is a function ``f(d, base, k, **params) -> inv_freq`` in the registry
  :data:`INV_FREQ`; :func:`inv_freq` dispatches on its name. Frequencies are float64.
* ``layout="interleaved"`` pairs dimensions ``(2i, 2i+1)`` (RoFormer, Meta's LLaMA code, GPT-J,
  rotary-embedding-torch); ``layout="half"`` pairs ``(i, i + d/2)`` (Hugging Face ``rotate_half``,
  GPT-NeoX).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_int, check_real

__all__ = [
    "INV_FREQ",
    "TinyRoPELM",
    "apply_rope",
    "apply_rope_reference",
    "apply_rope_tables",
    "base_for_longest_wavelength",
    "beta_digits",
    "default_inv_freq",
    "dynamic_inv_freq",
    "fixed_inv_freq",
    "half_permutation",
    "inv_freq",
    "local_resolution",
    "logn_scale",
    "markov_table",
    "mixed_inv_freq",
    "next_token_accuracy",
    "ntk_inv_freq",
    "ntk_old_inv_freq",
    "pi_inv_freq",
    "repeat_segments",
    "rope_angles",
    "rope_phases",
    "rope_tables",
    "sample_markov",
    "train_tiny_lm",
    "unseen_angle",
]

Layout = Literal["interleaved", "half"]
InvFreqFn = Callable[..., Tensor]


# ----------------------------------------------------------------------------- validation


def _check_d(d: int, minimum: int = 2) -> None:
    if check_int(d, "d", minimum) % 2:
        raise ValueError(f"d must be an even integer >= {minimum}, got {d!r}")


def _no_params(method: str, params: dict[str, Any]) -> None:
    if params:
        raise TypeError(f"method {method!r} takes no extra parameters, got {sorted(params)}")


def _digits(d: int) -> Tensor:
    """Digit indices m = 1 .. d/2 as float64 (the article's convention)."""
    return torch.arange(1, d // 2 + 1, dtype=torch.float64)


# ----------------------------------------------------------------------------- frequencies

# --8<-- [start:default]
def default_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, **params: Any) -> Tensor:
    r"""Plain RoPE frequencies; used unchanged at any length this is *extrapolation*.

    $$\theta_m = b^{-2(m-1)/d} = \beta^{-(m-1)}, \qquad \beta = b^{2/d}, \quad m = 1, \dots, d/2.$$

    ``k`` is validated but ignored. Source: Su et al., RoFormer (arXiv:2104.09864); article 9675.

    Args:
        d: Rotated dimension (even, >= 2).
        base: The base $b > 1$ (10000 in RoFormer and LLaMA).
        k: Extension factor (>= 1); unused.
        **params: None accepted.

    Returns:
        The frequencies $\theta_1 > \dots > \theta_{d/2}$, float64.

    Shapes:
        output: ``(d // 2,)``.

    Raises:
        ValueError: If ``d``, ``base`` or ``k`` is out of range.
    """
    _check_d(d)
    check_real(base, "base", above=1)
    check_real(k, "k", at_least=1)
    _no_params("default", params)
    return base ** (-2.0 * (_digits(d) - 1) / d)
# --8<-- [end:default]


def pi_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, **params: Any) -> Tensor:
    r"""Position interpolation (kaiokendev's SuperHOT, Chen et al. 2023): positions divided by ``k``.

    $$\theta'_m = \theta_m / k \quad\Longleftrightarrow\quad n\,\theta'_m = (n/k)\,\theta_m .$$

    Same as Hugging Face's ``linear`` RoPE scaling and rotary-embedding-torch's ``interpolate_factor``.

    Args:
        d: Rotated dimension (even, >= 2).
        base: The base $b > 1$.
        k: Extension factor (>= 1).
        **params: None accepted.

    Returns:
        Frequencies, float64.

    Shapes:
        output: ``(d // 2,)``.

    Raises:
        ValueError: If ``d``, ``base`` or ``k`` is out of range.
    """
    _no_params("pi", params)
    return default_inv_freq(d, base, k) / k


def ntk_old_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, **params: Any) -> Tensor:
    r"""Su's change of base ("NTK-RoPE-old" in the sequel): $\beta' = \beta k^{2/d}$, i.e. $b' = b\,k$.

    $$\theta'_m = (b k)^{-2(m-1)/d} .$$

    This is the version behind the "NTK-RoPE" rows of article 9675's table (per article 9706).
    The lowest frequency is scaled by $k^{-(d-2)/d}$, slightly less than $1/k$.

    Args:
        d: Rotated dimension (even, >= 2).
        base: The base $b > 1$.
        k: Extension factor (>= 1).
        **params: None accepted.

    Returns:
        Frequencies, float64.

    Shapes:
        output: ``(d // 2,)``.

    Raises:
        ValueError: If ``d``, ``base`` or ``k`` is out of range.
    """
    _no_params("ntk-old", params)
    check_real(k, "k", at_least=1)
    check_real(base, "base", above=1)
    return default_inv_freq(d, base * k)


# --8<-- [start:ntk]
def ntk_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, **params: Any) -> Tensor:
    r"""bloc97's NTK-aware scaled RoPE: $b' = b\,k^{d/(d-2)}$.

    The base is chosen so that the *lowest* frequency is exactly interpolated,
    $n/(\beta\lambda)^{d/2-1} = (n/k)/\beta^{d/2-1}$, giving $\lambda = k^{2/(d-2)}$, while the highest
    frequency is unchanged (extrapolated):

    $$\theta'_m = \left(b\,k^{d/(d-2)}\right)^{-2(m-1)/d}, \qquad \theta'_1 = \theta_1,\quad
    \theta'_{d/2} = \theta_{d/2}/k .$$

    Source: bloc97 (Reddit r/LocalLLaMA, June 2023), derivation in article 9675; equals
    rotary-embedding-torch's ``theta_rescale_factor=k``.

    Args:
        d: Rotated dimension (even, >= 4: with one frequency the exponent is undefined).
        base: The base $b > 1$.
        k: Extension factor (>= 1).
        **params: None accepted.

    Returns:
        Frequencies, float64.

    Shapes:
        output: ``(d // 2,)``.

    Raises:
        ValueError: If ``d``, ``base`` or ``k`` is out of range.
    """
    _no_params("ntk", params)
    _check_d(d, minimum=4)
    check_real(base, "base", above=1)
    check_real(k, "k", at_least=1)
    return default_inv_freq(d, base * k ** (d / (d - 2)))
# --8<-- [end:ntk]


def fixed_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, **params: Any) -> Tensor:
    r"""NTK-RoPE-fixed (article 9706): base $\beta\lambda$ *and* an extra $1/\lambda$, $\lambda = k^{2/d}$.

    $$\theta'_m = \frac{1}{\lambda(\beta\lambda)^{m-1}} = \theta_m\,\lambda^{-m}, \qquad \lambda = k^{2/d}.$$

    In base $\beta\lambda$ a digit is taken modulo $\beta\lambda$, so its period grows by $\lambda$ too;
    the product of all $d/2$ factors is $\lambda^{d/2} = k$ at the lowest frequency.

    Args:
        d: Rotated dimension (even, >= 2).
        base: The base $b > 1$.
        k: Extension factor (>= 1).
        **params: None accepted.

    Returns:
        Frequencies, float64.

    Shapes:
        output: ``(d // 2,)``.

    Raises:
        ValueError: If ``d``, ``base`` or ``k`` is out of range.
    """
    _no_params("fixed", params)
    theta = default_inv_freq(d, base, k)
    lam = k ** (2.0 / d)
    return theta * lam ** (-_digits(d))


# --8<-- [start:mixed]
def mixed_inv_freq(d: int, base: float = 10000.0, k: float = 1.0, *, b: float = 0.625) -> Tensor:
    r"""NTK-RoPE-mixed (article 9706): digit $m$ is slowed by $\lambda_1\cdots\lambda_m = e^{a m^b}$.

    $$\theta'_m = \frac{\theta_m}{\lambda_1\cdots\lambda_m} = \theta_m\, e^{-a m^b},
    \qquad a\,(d/2)^b = \ln k, \quad m = 1, \dots, d/2 .$$

    The lowest frequency is always exactly interpolated ($\theta'_{d/2} = \theta_{d/2}/k$); $b = 1$ gives
    NTK-RoPE-fixed, $b = 0$ gives position interpolation. Su found $b = 0.625$ best on his model and
    used $b = 0.75$ for LLaMA2 (``bojone/rerope``, ``ntk_patch.py``). Note $m$ starts at 1: starting at
    0 would break both reductions.

    Args:
        d: Rotated dimension (even, >= 2).
        base: The base $b > 1$ (10000).
        k: Extension factor (>= 1).
        b: Exponent in $[0, 1]$ (keeps $\lambda_1 \ge \dots \ge \lambda_{d/2} \ge 1$).

    Returns:
        Frequencies, float64.

    Shapes:
        output: ``(d // 2,)``.

    Raises:
        ValueError: If ``d``, ``base``, ``k`` or ``b`` is out of range.
    """
    check_real(b, "b", at_least=0, at_most=1)
    theta = default_inv_freq(d, base, k)
    m = _digits(d)
    a = math.log(k) / (d / 2) ** b
    return theta * torch.exp(-a * m**b)
# --8<-- [end:mixed]


def dynamic_inv_freq(
    d: int, base: float = 10000.0, k: float = 1.0, *, seq_len: int, train_len: int
) -> Tensor:
    r"""Hugging Face's dynamic NTK scaling (credited there to bloc97 and emozilla); not in article 9675.

    $$b' = b\left(\frac{k\,s}{L} - (k - 1)\right)^{d/(d-2)}, \qquad s = \max(\text{seq\_len}, L),$$

    with $L$ the training length. At $s \le L$ nothing changes; at $s = kL$ the base grows by
    $(k^2 - k + 1)^{d/(d-2)}$, *more* than bloc97's $k^{d/(d-2)}$ (HF's ``factor`` semantics).

    Args:
        d: Rotated dimension (even, >= 4).
        base: The base $b > 1$.
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
    _check_d(d, minimum=4)
    check_real(base, "base", above=1)
    check_real(k, "k", at_least=1)
    check_int(seq_len, "seq_len")
    check_int(train_len, "train_len")
    s = max(seq_len, train_len)
    return default_inv_freq(d, base * (k * s / train_len - (k - 1)) ** (d / (d - 2)))


#: Registry of RoPE scalings by name; every entry is ``f(d, base, k, **params) -> inv_freq``.
INV_FREQ: dict[str, InvFreqFn] = {
    "default": default_inv_freq,
    "pi": pi_inv_freq,
    "ntk-old": ntk_old_inv_freq,
    "ntk": ntk_inv_freq,
    "fixed": fixed_inv_freq,
    "mixed": mixed_inv_freq,
    "dynamic": dynamic_inv_freq,
}


def inv_freq(d: int, base: float = 10000.0, method: str = "default", k: float = 1.0, **params: Any) -> Tensor:
    r"""Frequencies $\theta'_m$ of RoPE scaled by ``method`` (a key of :data:`INV_FREQ`).

    Args:
        d: Rotated dimension (even).
        base: The base $b > 1$.
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
    """
    if method not in INV_FREQ:
        raise ValueError(f"method must be one of {sorted(INV_FREQ)}, got {method!r}")
    return INV_FREQ[method](d, base, k, **params)


def base_for_longest_wavelength(d: int, wavelength: float) -> float:
    r"""The base $b$ whose lowest frequency has the given wavelength: $2\pi\, b^{(d-2)/d} = \lambda_{\max}$.

    Used to give a tiny model the same ratio (training length / longest wavelength) as LLaMA
    ($4096 / (2\pi \cdot 10000^{126/128}) \approx 0.0753$).

    Args:
        d: Rotated dimension (even, >= 4).
        wavelength: Longest wavelength, $> 2\pi$.

    Returns:
        The base.

    Raises:
        ValueError: If ``d`` or ``wavelength`` is out of range.
    """
    _check_d(d, minimum=4)
    if not wavelength > 2 * math.pi:
        raise ValueError(f"wavelength must exceed 2*pi, got {wavelength!r}")
    return (wavelength / (2 * math.pi)) ** (d / (d - 2))


# ----------------------------------------------------------------------------- applying RoPE


def _check_rope_inputs(x: Tensor, positions: Tensor, inv_freq: Tensor, layout: str) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., seq, d), got {tuple(x.shape)}")
    if not isinstance(inv_freq, Tensor) or inv_freq.dim() != 1:
        raise ValueError(f"inv_freq must be a 1-D tensor, got {getattr(inv_freq, 'shape', inv_freq)!r}")
    d = x.shape[-1]
    if d % 2 or inv_freq.shape[0] != d // 2:
        raise ValueError(f"x's last dimension must be even and equal 2 * len(inv_freq) = {2 * inv_freq.shape[0]}, got {d}")
    if not isinstance(positions, Tensor) or positions.dim() < 1 or positions.shape[-1] != x.shape[-2]:
        raise ValueError(f"positions must have shape (..., seq) with seq = {x.shape[-2]}, got "
                         f"{getattr(positions, 'shape', positions)!r}")
    if positions.numel() and bool((positions < 0).any()):
        raise ValueError("positions must be non-negative")
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
    """
    dtype = torch.float64 if inv_freq.dtype == torch.float64 else torch.float32
    return positions.to(dtype)[..., None] * inv_freq.to(dtype)


# --8<-- [start:apply]
def apply_rope(x: Tensor, positions: Tensor, inv_freq: Tensor, layout: Layout = "interleaved") -> Tensor:
    r"""Rotate each pair of features of ``x`` by the angle $n\theta_m$ of its position $n$.

    $$\begin{pmatrix} x'_{n,2m-1} \\ x'_{n,2m} \end{pmatrix} =
    \begin{pmatrix} \cos n\theta_m & -\sin n\theta_m \\ \sin n\theta_m & \cos n\theta_m \end{pmatrix}
    \begin{pmatrix} x_{n,2m-1} \\ x_{n,2m} \end{pmatrix},$$

    so that $\langle R_{n_1} q, R_{n_2} k\rangle = \langle q, R_{n_2 - n_1} k\rangle$. Angles are computed in
    float32 or float64 (see :func:`rope_angles`) whatever the dtype of ``x``; the output has ``x``'s dtype.

    Args:
        x: Queries or keys.
        positions: Non-negative positions of the ``seq`` rows.
        inv_freq: Frequencies from :func:`inv_freq`.
        layout: ``"interleaved"`` pairs ``(2i, 2i+1)``; ``"half"`` pairs ``(i, i + d/2)`` (HF ``rotate_half``).

    Returns:
        The rotated tensor.

    Shapes:
        x: ``(..., seq, d)``; positions: ``(seq,)`` or broadcastable ``(..., seq)``;
        inv_freq: ``(d // 2,)``; output: like ``x``.

    Raises:
        TypeError: If ``x`` is not floating point.
        ValueError: On mismatched shapes, negative positions or an unknown ``layout``.
    """
    _check_rope_inputs(x, positions, inv_freq, layout)
    angles = rope_angles(positions, inv_freq)
    cos, sin = angles.cos(), angles.sin()
    work = torch.promote_types(x.dtype, cos.dtype)
    xw = x.to(work)
    if layout == "interleaved":
        x1, x2 = xw[..., 0::2], xw[..., 1::2]
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    else:
        h = x.shape[-1] // 2
        x1, x2 = xw[..., :h], xw[..., h:]
        out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.to(x.dtype)
# --8<-- [end:apply]


def rope_tables(positions: Tensor, inv_freq: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    r"""Cosine and sine tables $\cos n\theta_m$, $\sin n\theta_m$ for :func:`apply_rope_tables`.

    The angles are computed as in :func:`rope_angles` (float32 or float64), then the tables are
    cast to ``dtype``, so a model can build them once per sequence length and reuse them for every
    layer, head, query and key.

    Args:
        positions: Non-negative positions.
        inv_freq: Frequencies $\theta_m$.
        dtype: Floating dtype of the tables (that of the queries and keys they will rotate).

    Returns:
        ``(cos, sin)``.

    Shapes:
        positions: ``(seq,)``; inv_freq: ``(d // 2,)``; cos, sin: ``(seq, d // 2)``.
    """
    if not isinstance(positions, Tensor) or positions.ndim != 1:
        raise ValueError(f"positions must be a 1-D tensor, got {type(positions).__name__} "
                         f"of shape {tuple(getattr(positions, 'shape', ()))}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    angles = rope_angles(positions, inv_freq)
    return angles.cos().to(dtype), angles.sin().to(dtype)


# --8<-- [start:tables]
def apply_rope_tables(
    x: Tensor, cos: Tensor, sin: Tensor, layout: Layout = "half", out: Tensor | None = None
) -> Tensor:
    r"""Fast RoPE with precomputed tables: the rotation of :func:`apply_rope`, written into ``out``.

    Same result as ``apply_rope(x, positions, inv_freq, layout)`` when ``cos, sin =
    rope_tables(positions, inv_freq, x.dtype)``. In the interleaved layout (float32/float64) each
    pair is a complex number and the rotation is one complex multiply by $e^{in\theta_m}$, a single
    pass over memory. In the half layout there are no temporaries: each half of the output is
    written with one multiply and one fused multiply-add, $y_1 = x_1\cos - x_2\sin$,
    $y_2 = x_2\cos + x_1\sin$, one ``(seq, d)`` slice at a time so the second pass over a slice
    hits the CPU cache instead of memory.

    Args:
        x: Queries or keys (floating point, same dtype as the tables).
        cos: Cosine table from :func:`rope_tables`.
        sin: Sine table from :func:`rope_tables`.
        layout: ``"half"`` (Hugging Face ``rotate_half``) or ``"interleaved"``.
        out: Optional preallocated output like ``x`` (must not overlap ``x``); reused across calls.

    Returns:
        ``out`` (or a new tensor), holding the rotated ``x``.

    Shapes:
        x: ``(..., seq, d)``; cos, sin: ``(seq, d // 2)``; out: like ``x``.

    Raises:
        TypeError: On non-floating or mismatched dtypes.
        ValueError: On mismatched shapes, an unknown ``layout`` or an ``out`` that overlaps ``x``.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if layout not in ("interleaved", "half"):
        raise ValueError(f"layout must be 'interleaved' or 'half', got {layout!r}")
    if x.ndim < 2 or x.shape[-1] % 2:
        raise ValueError(f"x must have shape (..., seq, d) with even d, got {tuple(x.shape)}")
    seq, h = x.shape[-2], x.shape[-1] // 2
    for name, t in (("cos", cos), ("sin", sin)):
        if not isinstance(t, Tensor) or t.shape != (seq, h):
            raise ValueError(f"{name} must have shape (seq, d // 2) = {(seq, h)}, got {tuple(getattr(t, 'shape', ()))}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype {x.dtype}, got {t.dtype}")
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    elif out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(f"out must match x's shape {tuple(x.shape)} and dtype {x.dtype}")
    elif out.data_ptr() == x.data_ptr() or torch._C._overlaps(out, x):
        raise ValueError("out must not overlap x (rotate into a separate buffer)")
    if layout == "interleaved" and x.dtype in (torch.float32, torch.float64) and out.is_contiguous():
        # Pairs (2i, 2i+1) are complex numbers x_{2i} + i x_{2i+1}; the rotation is one complex
        # multiply by e^{i n theta}: a single pass over memory.
        xc = torch.view_as_complex(x.contiguous().view(*x.shape[:-1], h, 2))
        oc = torch.view_as_complex(out.view(*x.shape[:-1], h, 2))
        torch.mul(xc, torch.complex(cos, sin), out=oc)
        return out
    xs, os_ = x.reshape(-1, seq, 2 * h), out.view(-1, seq, 2 * h)
    for xi, oi in zip(xs, os_, strict=True):  # one (seq, d) slice at a time: stays in cache
        if layout == "half":
            x1, x2, o1, o2 = xi[:, :h], xi[:, h:], oi[:, :h], oi[:, h:]
        else:
            x1, x2, o1, o2 = xi[:, 0::2], xi[:, 1::2], oi[:, 0::2], oi[:, 1::2]
        torch.mul(x1, cos, out=o1)
        o1.addcmul_(x2, sin, value=-1.0)
        torch.mul(x2, cos, out=o2)
        o2.addcmul_(x1, sin)
    return out
# --8<-- [end:tables]


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
        ValueError: As :func:`apply_rope`.
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


# --8<-- [start:logn]
def logn_scale(n: Tensor | int, train_len: int) -> Tensor:
    r"""Post-hoc log n factor (article 9706's "log n†"): multiply the query that sees $n$ keys by

    $$\max\!\left(1, \log_{L} n\right) = \max\!\left(1, \frac{\ln n}{\ln L}\right), \qquad L = \text{train\_len}.$$

    Apply it to the queries only (scaling q and k would square it). In causal attention the query at
    0-based position $p$ sees $n = p + 1$ keys. Source: ``bojone/rerope`` ``ntk_patch.py``.

    Args:
        n: Number of visible keys (>= 1), a tensor or an int.
        train_len: Training length $L$ (>= 2).

    Returns:
        The factor, float64, >= 1.

    Shapes:
        n: any; output: like ``n``.

    Raises:
        ValueError: If ``n < 1`` somewhere or ``train_len < 2``.
    """
    check_int(train_len, "train_len", 2)
    n = torch.as_tensor(n, dtype=torch.float64)
    if n.numel() and bool((n < 1).any()):
        raise ValueError("n (number of visible keys) must be >= 1")
    return (n.log() / math.log(train_len)).clamp(min=1.0)
# --8<-- [end:logn]


# ----------------------------------------------------------------------------- the base-beta view


def beta_digits(n: Tensor, beta: float, num_digits: int) -> Tensor:
    r"""Base-$\beta$ digits of non-negative numbers: $\operatorname{digit}_m(n) = \lfloor n/\beta^{m-1}\rfloor \bmod \beta$.

    For integer $\beta$ these are the usual digits, lowest first; for real $\beta > 1$ they lie in
    $[0, \beta)$ and need not be integers.

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
    """
    if not beta > 1:
        raise ValueError(f"beta must be > 1, got {beta!r}")
    check_int(num_digits, "num_digits")
    n = torch.as_tensor(n, dtype=torch.float64)
    if n.numel() and bool((n < 0).any()):
        raise ValueError("n must be non-negative")
    scale = torch.tensor(beta, dtype=torch.float64) ** torch.arange(num_digits, dtype=torch.float64)
    return torch.remainder(torch.floor(n[..., None] / scale), beta)


def rope_phases(n: Tensor, beta: float, num_digits: int) -> Tensor:
    r"""RoPE phases in the digit view: $(n/\beta^{m-1}) \bmod 2\pi$ — the same quotient, a smooth "mod".

    Args:
        n: Non-negative positions.
        beta: $\beta = b^{2/d}$, > 1.
        num_digits: Number of digits (>= 1).

    Returns:
        float64 phases in $[0, 2\pi)$.

    Shapes:
        n: ``(N,)``; output: ``(N, num_digits)``.

    Raises:
        ValueError: If ``beta <= 1``, ``num_digits < 1`` or ``n`` has negatives.
    """
    if not beta > 1:
        raise ValueError(f"beta must be > 1, got {beta!r}")
    check_int(num_digits, "num_digits")
    n = torch.as_tensor(n, dtype=torch.float64)
    if n.numel() and bool((n < 0).any()):
        raise ValueError("n must be non-negative")
    scale = torch.tensor(beta, dtype=torch.float64) ** torch.arange(num_digits, dtype=torch.float64)
    return torch.remainder(n[..., None] / scale, 2 * math.pi)


# --8<-- [start:tradeoff]
def unseen_angle(theta: Tensor, theta_new: Tensor, train_len: int, test_len: int) -> Tensor:
    r"""Total angle at test length that training never showed, summed over digits (radians).

    A digit that turned fully in training ($L\theta_m \ge 2\pi$) has seen every angle. Otherwise the
    training angles fill $[0, L\theta_m)$ and the test angles $[0, L'\theta'_m)$, so

    $$U = \sum_{m:\ L\theta_m < 2\pi} \max\!\big(0,\ \min(L'\theta'_m, 2\pi) - L\theta_m\big).$$

    Args:
        theta: Training frequencies $\theta_m$.
        theta_new: Test-time frequencies $\theta'_m$.
        train_len: Training length $L$ (>= 1).
        test_len: Test length $L'$ (>= 1).

    Returns:
        Scalar float64 tensor.

    Shapes:
        theta, theta_new: ``(d // 2,)``.

    Raises:
        ValueError: On mismatched shapes or non-positive lengths.
    """
    check_int(train_len, "train_len")
    check_int(test_len, "test_len")
    if theta.shape != theta_new.shape or theta.dim() != 1:
        raise ValueError(f"theta and theta_new must be 1-D of equal shape, got {tuple(theta.shape)}, "
                         f"{tuple(theta_new.shape)}")
    seen = train_len * theta.to(torch.float64)
    reach = (test_len * theta_new.to(torch.float64)).clamp(max=2 * math.pi)
    gap = (reach - seen).clamp(min=0.0)
    return torch.where(seen < 2 * math.pi, gap, torch.zeros_like(gap)).sum()


def local_resolution(theta: Tensor, theta_new: Tensor) -> Tensor:
    r"""How far apart neighbouring positions stay after scaling, relative to the original RoPE.

    With $e(r) = (\cos r\theta_m, \sin r\theta_m)_m$ the RoPE code of position $r$,

    $$\rho = \frac{\lVert e'(1) - e'(0)\rVert}{\lVert e(1) - e(0)\rVert}
    = \sqrt{\frac{\sum_m \sin^2(\theta'_m/2)}{\sum_m \sin^2(\theta_m/2)}} .$$

    $\rho = 1$ for extrapolation; position interpolation by $k$ gives roughly $1/k$.

    Args:
        theta: Original frequencies.
        theta_new: Scaled frequencies.

    Returns:
        Scalar float64 tensor.

    Shapes:
        theta, theta_new: ``(d // 2,)``.

    Raises:
        ValueError: On mismatched shapes.
    """
    if theta.shape != theta_new.shape or theta.dim() != 1:
        raise ValueError(f"theta and theta_new must be 1-D of equal shape, got {tuple(theta.shape)}, "
                         f"{tuple(theta_new.shape)}")
    num = (theta_new.to(torch.float64) / 2).sin().square().sum()
    den = (theta.to(torch.float64) / 2).sin().square().sum()
    return (num / den).sqrt()
# --8<-- [end:tradeoff]


# ----------------------------------------------------------------------------- synthetic data


def markov_table(vocab: int, *, concentration: float = 0.1, seed: int = 0) -> Tensor:
    r"""A random order-2 Markov chain: ``table[a, b]`` is the distribution of the token after ``a, b``.

    Each row is drawn from a symmetric Dirichlet($\alpha$); small $\alpha$ makes the chain fairly
    predictable, like text.

    Args:
        vocab: Vocabulary size (>= 2).
        concentration: Dirichlet $\alpha > 0$.
        seed: Seed.

    Returns:
        float64 probabilities.

    Shapes:
        output: ``(vocab, vocab, vocab)``, rows summing to 1.

    Raises:
        ValueError: If ``vocab < 2``, ``concentration <= 0`` or ``seed`` is negative.
    """
    if not isinstance(vocab, int) or vocab < 2:
        raise ValueError(f"vocab must be an integer >= 2, got {vocab!r}")
    if not concentration > 0:
        raise ValueError(f"concentration must be > 0, got {concentration!r}")
    check_int(seed, "seed", 0)
    rng = np.random.default_rng(seed)
    rows = rng.dirichlet(np.full(vocab, float(concentration)), size=(vocab, vocab))
    return torch.as_tensor(rows, dtype=torch.float64)


def sample_markov(table: Tensor, n: int, length: int, *, seed: int = 0) -> Tensor:
    """Sample ``n`` sequences of ``length`` tokens from an order-2 chain (first two tokens uniform).

    Args:
        table: Transition table from :func:`markov_table`.
        n: Number of sequences (>= 1).
        length: Tokens per sequence (>= 1).
        seed: Seed.

    Returns:
        int64 tokens.

    Shapes:
        table: ``(V, V, V)``; output: ``(n, length)``.

    Raises:
        ValueError: On a malformed table, non-positive ``n``/``length`` or a negative ``seed``.
    """
    if table.dim() != 3 or len(set(table.shape)) != 1:
        raise ValueError(f"table must have shape (V, V, V), got {tuple(table.shape)}")
    check_int(n, "n")
    check_int(length, "length")
    check_int(seed, "seed", 0)
    vocab = table.shape[0]
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, length, dtype=torch.int64)
    out[:, : min(2, length)] = torch.randint(vocab, (n, min(2, length)), generator=g)
    cdf = table.cumsum(-1)
    for t in range(2, length):
        u = torch.rand(n, 1, generator=g, dtype=torch.float64)
        row = cdf[out[:, t - 2], out[:, t - 1]]
        out[:, t] = (row < u).sum(-1).clamp(max=vocab - 1)
    return out


def repeat_segments(segments: Tensor, seg_len: Tensor, length: int) -> Tensor:
    """Tile the first ``seg_len[i]`` tokens of row ``i`` until ``length`` (the "repeated" test set).

    Args:
        segments: Source tokens.
        seg_len: Segment length per row (1 .. segments.shape[1]).
        length: Output length (>= 1).

    Returns:
        int64 tokens ``out[i, t] = segments[i, t mod seg_len[i]]``.

    Shapes:
        segments: ``(n, S)``; seg_len: ``(n,)``; output: ``(n, length)``.

    Raises:
        ValueError: If a segment length is outside ``1 .. S``.
    """
    check_int(length, "length")
    if seg_len.shape != segments.shape[:1] or bool((seg_len < 1).any()) or bool((seg_len > segments.shape[1]).any()):
        raise ValueError(f"seg_len must have shape ({segments.shape[0]},) with values in 1..{segments.shape[1]}")
    idx = torch.arange(length)[None, :] % seg_len[:, None]
    return segments.gather(1, idx)


# ----------------------------------------------------------------------------- a tiny RoPE language model


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, h: Tensor, positions: Tensor, freqs: Tensor, q_scale: Tensor | None) -> Tensor:
        bsz, seq, width = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(bsz, seq, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, positions, freqs), apply_rope(k, positions, freqs)
        if q_scale is not None:
            q = q * q_scale[:, None].to(q.dtype)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(att.transpose(1, 2).reshape(bsz, seq, width))
        return h + self.mlp(self.norm2(h))


class TinyRoPELM(nn.Module):
    """A small pre-norm causal transformer whose attention uses RoPE with frequencies given per call.

    The frequencies are an argument of :meth:`forward`, not a parameter, so one set of trained weights
    can be evaluated with every scaling method of :data:`INV_FREQ`.

    Args:
        vocab: Vocabulary size.
        width: Model width.
        heads: Attention heads (``width // heads`` must be even).
        layers: Number of blocks.
    """

    def __init__(self, vocab: int, width: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width // heads must be an even integer, got width={width}, heads={heads}")
        self.head_dim = width // heads
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, vocab)

    def forward(self, tokens: Tensor, freqs: Tensor, logn_train_len: int | None = None) -> Tensor:
        """Next-token logits.

        Args:
            tokens: int64 token ids.
            freqs: RoPE frequencies of length ``head_dim // 2``.
            logn_train_len: If given, scale queries by :func:`logn_scale` with this training length.

        Returns:
            Logits.

        Shapes:
            tokens: ``(batch, seq)``; output: ``(batch, seq, vocab)``.
        """
        seq = tokens.shape[1]
        positions = torch.arange(seq)
        q_scale = None if logn_train_len is None else logn_scale(positions + 1, logn_train_len).float()
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h, positions, freqs.float(), q_scale)
        return self.out(self.norm(h))


def train_tiny_lm(
    model: TinyRoPELM,
    batches: Callable[[int], Tensor],
    freqs: Tensor,
    *,
    steps: int,
    lr: float = 3e-3,
) -> list[float]:
    """Train with AdamW on next-token cross-entropy (cosine-decayed learning rate).

    Args:
        model: The model (trained in place).
        batches: ``batches(step) -> tokens`` of shape ``(batch, seq)``.
        freqs: RoPE frequencies used in training.
        steps: Optimiser steps (>= 1).
        lr: Peak learning rate (> 0).

    Returns:
        The training loss per step.

    Raises:
        ValueError: If ``steps`` or ``lr`` is out of range.

    Training is deterministic given the model's initial weights and ``batches`` (no dropout, no
    sampling here); seed the model's construction and the batch generator.
    """
    check_int(steps, "steps")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    losses = []
    model.train()
    for step in range(steps):
        tokens = batches(step)
        logits = model(tokens[:, :-1], freqs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def next_token_accuracy(
    model: TinyRoPELM, tokens: Tensor, freqs: Tensor, logn_train_len: int | None = None
) -> float:
    """Fraction of positions ``1 .. seq-1`` whose next token is the arg-max prediction.

    Args:
        model: A trained model.
        tokens: int64 tokens.
        freqs: RoPE frequencies used at test time.
        logn_train_len: Training length for the post-hoc log n factor, or None.

    Returns:
        Accuracy in [0, 1].

    Shapes:
        tokens: ``(batch, seq)`` with ``seq >= 2``.

    Raises:
        ValueError: If ``tokens`` is not 2-D with at least two columns.
    """
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must have shape (batch, seq >= 2), got {tuple(tokens.shape)}")
    model.eval()
    logits = model(tokens[:, :-1], freqs, logn_train_len)
    return (logits.argmax(-1) == tokens[:, 1:]).double().mean().item()

r"""What the RoPE page needs beyond the article's math: its own measures, synthetic data, a tiny LM.

Companion to [`kexue.rope`][kexue.rope] and the page *RoPE is a β-base encoding*. Nothing here is
defined by the article: the trade-off measures [`unseen_angle`][kexue.experiments.rope.unseen_angle]
and [`local_resolution`][kexue.experiments.rope.local_resolution] are this project's, and the
Markov-chain data and [`TinyRoPELM`][kexue.experiments.rope.TinyRoPELM] stand in, at CPU scale, for
the article's 100M-parameter model trained on natural text.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_int, check_real
from kexue.rope import apply_rope, logn_scale

__all__ = [
    "base_for_longest_wavelength",
    "unseen_angle",
    "local_resolution",
    "markov_table",
    "sample_markov",
    "repeat_segments",
    "TinyRoPELM",
    "train_tiny_lm",
    "next_token_accuracy",
]


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
    if check_int(d, "d", 4) % 2:
        raise ValueError(f"d must be an even integer >= 4, got {d!r}")
    check_real(wavelength, "wavelength", above=2 * math.pi)
    return (wavelength / (2 * math.pi)) ** (d / (d - 2))



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
        table: Transition table from [`markov_table`][kexue.experiments.rope.markov_table].
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

    def forward(self, h: Tensor, positions: Tensor, inv_freq: Tensor, q_scale: Tensor | None) -> Tensor:
        bsz, seq, width = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(bsz, seq, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        if q_scale is not None:
            q = q * q_scale[:, None].to(q.dtype)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(att.transpose(1, 2).reshape(bsz, seq, width))
        return h + self.mlp(self.norm2(h))


class TinyRoPELM(nn.Module):
    """A small pre-norm causal transformer whose attention uses RoPE with frequencies given per call.

    The frequencies are an argument of `forward`, not a parameter, so one set of trained weights
    can be evaluated with every scaling method of [`SCALINGS`][kexue.rope.SCALINGS].

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

    def forward(self, tokens: Tensor, inv_freq: Tensor, logn_train_len: int | None = None) -> Tensor:
        """Next-token logits.

        Args:
            tokens: int64 token ids.
            inv_freq: RoPE frequencies of length ``head_dim // 2``.
            logn_train_len: If given, scale queries by [`logn_scale`][kexue.rope.logn_scale] with this training length.

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
            h = block(h, positions, inv_freq.float(), q_scale)
        return self.out(self.norm(h))


def train_tiny_lm(
    model: TinyRoPELM,
    batches: Callable[[int], Tensor],
    inv_freq: Tensor,
    *,
    steps: int,
    lr: float = 3e-3,
) -> list[float]:
    """Train with AdamW on next-token cross-entropy (cosine-decayed learning rate).

    Args:
        model: The model (trained in place).
        batches: ``batches(step) -> tokens`` of shape ``(batch, seq)``.
        inv_freq: RoPE frequencies used in training.
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
        logits = model(tokens[:, :-1], inv_freq)
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
    model: TinyRoPELM, tokens: Tensor, inv_freq: Tensor, logn_train_len: int | None = None
) -> float:
    """Fraction of positions ``1 .. seq-1`` whose next token is the arg-max prediction.

    Args:
        model: A trained model.
        tokens: int64 tokens.
        inv_freq: RoPE frequencies used at test time.
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
    logits = model(tokens[:, :-1], inv_freq, logn_train_len)
    return (logits.argmax(-1) == tokens[:, 1:]).double().mean().item()

r"""What the RoPE page needs beyond the article's math: its own measures, synthetic data, a tiny LM.

Companion to [`kexue.rope`][kexue.rope] and the page *RoPE is a β-base encoding*. Nothing here is
defined by the article:

* [`unseen_angle`][kexue.experiments.rope.unseen_angle] and
  [`local_resolution`][kexue.experiments.rope.local_resolution] are this project's two numbers for
  the trade-off the article describes in words (how much a scaling extrapolates, how much it
  crowds neighbouring positions);
* an order-2 Markov chain ([`markov_table`][kexue.experiments.rope.markov_table],
  [`sample_markov`][kexue.experiments.rope.sample_markov]) stands in for natural text, and
  [`TinyRoPELM`][kexue.experiments.rope.TinyRoPELM], a two-layer transformer holding several
  independently seeded copies of itself, stands in for the article's 100M-parameter model, so that
  three seeds train in one run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kexue._checks import check_bool, check_finite, check_int, check_real, check_tensor
from kexue.experiments.training import evaluating
from kexue.rope import apply_rope

__all__ = [
    "base_for_longest_wavelength",
    "unseen_angle",
    "local_resolution",
    "markov_table",
    "sample_markov",
    "TinyRoPELM",
    "train_tiny_lm",
    "next_token_accuracy",
]


# ----------------------------------------------------------------------------- choosing a base


def base_for_longest_wavelength(d: int, wavelength: float) -> float:
    r"""The base $B$ whose lowest frequency has the given wavelength: $2\pi\, B^{(d-2)/d} = \lambda_{\max}$.

    Used to give a tiny model the same ratio (training length / longest wavelength) as LLaMA,
    $4096 / (2\pi \cdot 10000^{126/128}) \approx 0.0753$: the slow digits then never complete a
    turn in training, as in the article's setting.

    Args:
        d: Rotated dimension (even, >= 4).
        wavelength: Longest wavelength, $> 2\pi$.

    Returns:
        The base.

    Raises:
        ValueError: If ``d`` or ``wavelength`` is out of range, or so large that the base overflows a float.

    Examples:
        >>> from kexue.experiments.rope import base_for_longest_wavelength
        >>> round(base_for_longest_wavelength(16, 64 / 0.0753), 1)  # head size 16, training length 64
        272.7
    """
    if check_int(d, "d", 4) % 2:
        raise ValueError(f"d must be an even integer >= 4, got {d!r}")
    check_real(wavelength, "wavelength", above=2 * math.pi)
    try:
        return (wavelength / (2 * math.pi)) ** (d / (d - 2))
    except OverflowError:
        raise ValueError(f"wavelength is too large for d={d}: the base (wavelength / 2 pi) ** (d / (d - 2)) "
                         f"overflows a float, got {wavelength!r}") from None


# ----------------------------------------------------------------------------- the page's trade-off measures


def _check_freqs(inv_freq: object, name: str = "inv_freq") -> Tensor:
    """A non-empty 1-D floating tensor of finite frequencies (the page's measures reduce them to one number)."""
    return check_finite(check_tensor(inv_freq, name, 1, floating=True, nonempty=True), name)


def _check_pair(inv_freq: Tensor, scaled_inv_freq: Tensor, *, nonnegative: bool = False) -> None:
    _check_freqs(inv_freq)
    _check_freqs(scaled_inv_freq, "scaled_inv_freq")
    if inv_freq.shape != scaled_inv_freq.shape:
        raise ValueError(f"inv_freq and scaled_inv_freq must have equal shapes, got {tuple(inv_freq.shape)} "
                         f"and {tuple(scaled_inv_freq.shape)}")
    for name, f in (("inv_freq", inv_freq), ("scaled_inv_freq", scaled_inv_freq)) if nonnegative else ():
        if bool((f < 0).any()):
            raise ValueError(f"{name} must be non-negative (the angles seen are [0, L theta)), got {f.min().item()}")


# --8<-- [start:tradeoff]
def unseen_angle(inv_freq: Tensor, scaled_inv_freq: Tensor, train_len: int, test_len: int) -> Tensor:
    r"""Total angle at test length that training never showed, summed over digits (radians; our measure).

    A digit that turned fully in training ($L\theta_m \ge 2\pi$) has seen every angle. Otherwise the
    training angles fill $[0, L\theta_m)$ and the test angles $[0, L'\theta'_m)$, so

    $$U = \sum_{m:\ L\theta_m < 2\pi} \max\!\big(0,\ \min(L'\theta'_m, 2\pi) - L\theta_m\big).$$

    Args:
        inv_freq: Training frequencies $\theta_m \ge 0$.
        scaled_inv_freq: Test-time frequencies $\theta'_m \ge 0$.
        train_len: Training length $L$ (>= 1).
        test_len: Test length $L'$ (>= 1).

    Returns:
        Scalar float64 tensor.

    Shapes:
        inv_freq, scaled_inv_freq: ``(d // 2,)``.

    Raises:
        TypeError: If a frequency tensor is not floating.
        ValueError: On mismatched shapes, empty, negative or non-finite frequencies, or non-positive lengths.
    """
    _check_pair(inv_freq, scaled_inv_freq, nonnegative=True)
    check_int(train_len, "train_len")
    check_int(test_len, "test_len")
    seen = train_len * inv_freq.to(torch.float64)
    reach = (test_len * scaled_inv_freq.to(torch.float64)).clamp(max=2 * math.pi)
    gap = (reach - seen).clamp(min=0.0)
    return torch.where(seen < 2 * math.pi, gap, torch.zeros_like(gap)).sum()


def local_resolution(inv_freq: Tensor, scaled_inv_freq: Tensor) -> Tensor:
    r"""How far apart neighbouring positions stay after scaling, relative to plain RoPE (our measure).

    With $e(r) = (\cos r\theta_m, \sin r\theta_m)_m$ the RoPE code of position $r$,

    $$\rho = \frac{\lVert e'(1) - e'(0)\rVert}{\lVert e(1) - e(0)\rVert}
    = \sqrt{\frac{\sum_m \sin^2(\theta'_m/2)}{\sum_m \sin^2(\theta_m/2)}} .$$

    $\rho = 1$ for extrapolation; position interpolation by $k$ gives roughly $1/k$.

    Args:
        inv_freq: Original frequencies.
        scaled_inv_freq: Scaled frequencies.

    Returns:
        Scalar float64 tensor.

    Shapes:
        inv_freq, scaled_inv_freq: ``(d // 2,)``.

    Raises:
        TypeError: If a frequency tensor is not floating.
        ValueError: On mismatched shapes, empty or non-finite frequencies, or ``inv_freq`` that does
            not separate neighbouring positions at all (every $\theta_m = 0$): the ratio has no
            denominator.

    Examples:
        >>> from kexue.rope import frequencies
        >>> from kexue.experiments.rope import local_resolution, unseen_angle
        >>> theta = frequencies(32, 1725.0)
        >>> pi, ntk = frequencies(32, 1725.0, "pi", 8.0), frequencies(32, 1725.0, "ntk", 8.0)
        >>> [round(unseen_angle(theta, f, 512, 4096).item(), 2) for f in (theta, pi, ntk)]
        [22.7, 0.0, 5.17]
        >>> [round(local_resolution(theta, f).item(), 3) for f in (theta, pi, ntk)]
        [1.0, 0.129, 0.927]
    """
    _check_pair(inv_freq, scaled_inv_freq)
    num = (scaled_inv_freq.to(torch.float64) / 2).sin().square().sum()
    den = (inv_freq.to(torch.float64) / 2).sin().square().sum()
    if not den > 0:
        raise ValueError("inv_freq does not separate neighbouring positions (every frequency is 0 modulo 2 pi), "
                         "so the resolution relative to it is undefined")
    return (num / den).sqrt()
# --8<-- [end:tradeoff]


# ----------------------------------------------------------------------------- synthetic text


def markov_table(vocab: int, *, concentration: float = 0.1, seed: int = 0) -> Tensor:
    r"""A random order-2 Markov chain: ``table[a, b]`` is the distribution of the token after ``a, b``.

    Each row is drawn from a symmetric Dirichlet($\alpha$); small $\alpha$ makes the chain fairly
    predictable, like text. Predicting it needs the two previous tokens, so a model must attend by
    relative position, which is what RoPE scaling can break beyond the training length.

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
    check_int(vocab, "vocab", 2)
    check_real(concentration, "concentration", above=0)
    check_int(seed, "seed", 0)
    rng = np.random.default_rng(seed)
    rows = rng.dirichlet(np.full(vocab, float(concentration)), size=(vocab, vocab))
    if not (np.isfinite(rows).all() and np.allclose(rows.sum(-1), 1.0)):  # numpy's Dirichlet fails near 1e308
        raise ValueError(f"concentration is too large for numpy's Dirichlet sampler, got {concentration!r}")
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
        TypeError: If ``table`` is not a floating tensor.
        ValueError: On a malformed table (wrong shape, negative or non-finite entries, rows not
            summing to 1), non-positive ``n``/``length`` or a negative ``seed``.
    """
    check_finite(check_tensor(table, "table", 3, floating=True, nonempty=True), "table")
    if len(set(table.shape)) != 1:
        raise ValueError(f"table must have shape (V, V, V), got {tuple(table.shape)}")
    rows = table.sum(-1, dtype=torch.float64)
    if bool((table < 0).any()) or bool(((rows - 1).abs() > max(1e-6, torch.finfo(table.dtype).eps)).any()):
        raise ValueError("table must hold probabilities: non-negative rows table[a, b] that sum to 1")
    check_int(n, "n")
    check_int(length, "length")
    check_int(seed, "seed", 0)
    vocab = table.shape[0]
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, length, dtype=torch.int64)
    out[:, : min(2, length)] = torch.randint(vocab, (n, min(2, length)), generator=g)
    cdf = table.to(torch.float64).cumsum(-1)  # float64 whatever the table's dtype
    for t in range(2, length):
        u = torch.rand(n, 1, generator=g, dtype=torch.float64)
        row = cdf[out[:, t - 2], out[:, t - 1]]
        out[:, t] = (row < u).sum(-1).clamp(max=vocab - 1)
    return out


# ----------------------------------------------------------------------------- a tiny RoPE language model, several seeds at once


class TinyRoPELM(nn.Module):
    r"""A small pre-norm causal transformer with RoPE, holding one independently seeded copy per seed.

    Each block computes, for every member of the stack,

    $$h \leftarrow h + W_o\,\mathrm{attn}\big(s_n \cdot R_n W_q \bar h,\ R_n W_k \bar h,\ W_v \bar h\big),
    \qquad h \leftarrow h + \mathrm{MLP}(\mathrm{LN}(h)), \qquad \bar h = \mathrm{LN}(h),$$

    with $R_n$ the RoPE rotation of [`apply_rope`][kexue.rope.apply_rope] at frequencies given per
    call (so one set of trained weights can be evaluated with every scaling of
    [`SCALINGS`][kexue.rope.SCALINGS]) and $s_n$ an optional per-position query scale (the
    $\log n$ factors of [`logn_scale`][kexue.rope.logn_scale]).

    Every parameter has a leading *member* dimension: member ``i`` is initialised from
    ``seeds[i]`` alone (PyTorch's default initialisation: $U(\pm 1/\sqrt{\text{fan-in}})$ for
    linear maps, $N(0, 1)$ for embeddings, LayerNorm at identity). Members never mix: all linear
    maps are batched matrix products over the member dimension, and
    [`train_tiny_lm`][kexue.experiments.rope.train_tiny_lm] clips each member's gradient on its own,
    so training the stack is training each member separately, at about the cost of one model with a
    larger batch. Seeds may repeat (two members with the same seed start identical).

    Args:
        vocab: Vocabulary size (>= 2).
        width: Model width.
        heads: Attention heads (``width // heads`` must be even).
        layers: Number of blocks (>= 1).
        mlp_ratio: Hidden width of the MLP over ``width``.
        seeds: One seed per member.

    Raises:
        TypeError: If ``seeds`` is not a sequence.
        ValueError: On a non-positive size, an odd head size or no seeds.
    """

    def __init__(
        self, vocab: int, *, width: int = 32, heads: int = 2, layers: int = 2, mlp_ratio: int = 4,
        seeds: Sequence[int] = (0,),
    ) -> None:
        super().__init__()
        check_int(vocab, "vocab", 2)
        check_int(width, "width")
        check_int(heads, "heads")
        check_int(layers, "layers")
        check_int(mlp_ratio, "mlp_ratio")
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width // heads must be an even integer, got width={width}, heads={heads}")
        if not isinstance(seeds, Sequence) or isinstance(seeds, str):
            raise TypeError(f"seeds must be a sequence of integers, got {type(seeds).__name__}")
        seeds = [check_int(s, "seeds[i]", 0) for s in seeds]
        if not seeds:
            raise ValueError("seeds must name at least one seed")
        self.heads, self.head_dim, self.members, self.vocab = heads, width // heads, len(seeds), vocab
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        hidden = mlp_ratio * width

        def uniform(fan_in: int, *shape: int) -> nn.Parameter:  # one draw per member, from its own seed
            bound = 1 / math.sqrt(fan_in)
            return nn.Parameter(torch.stack([torch.empty(shape).uniform_(-bound, bound, generator=g) for g in gens]))

        def const(value: float, *shape: int) -> nn.Parameter:
            return nn.Parameter(torch.full((len(seeds), *shape), value))

        self.embed = nn.Parameter(torch.stack([torch.randn(vocab, width, generator=g) for g in gens]))
        self.blocks = nn.ModuleList(
            nn.ParameterDict({
                "norm1_w": const(1.0, width), "norm1_b": const(0.0, width),
                "qkv": uniform(width, width, 3 * width), "proj": uniform(width, width, width),
                "norm2_w": const(1.0, width), "norm2_b": const(0.0, width),
                "fc1": uniform(width, width, hidden), "fc1_b": uniform(width, hidden),
                "fc2": uniform(hidden, hidden, width), "fc2_b": uniform(hidden, width),
            })
            for _ in range(layers)
        )
        self.norm_w, self.norm_b = const(1.0, width), const(0.0, width)
        self.out = uniform(width, width, vocab)
        self.out_b = uniform(width, vocab)

    @staticmethod
    def _norm(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        # h: (S, N, W); weight, bias: (S, W)
        return torch.addcmul(bias[:, None], F.layer_norm(h, h.shape[-1:]), weight[:, None])

    def forward(self, tokens: Tensor, inv_freq: Tensor, q_scale: Tensor | None = None) -> Tensor:
        """Next-token logits of every member.

        Args:
            tokens: Integer token ids in ``[0, vocab)``, shared by all members or one batch per member.
            inv_freq: Finite RoPE frequencies, ``head_dim // 2`` of them (float32 is used inside).
            q_scale: Optional finite factor on the queries per position, shared or one row per member.

        Returns:
            Logits.

        Shapes:
            tokens: ``(batch, seq)`` or ``(members, batch, seq)``; inv_freq: ``(head_dim // 2,)``;
            q_scale: ``(seq,)`` or ``(members, seq)``; output: ``(members, batch, seq, vocab)``.

        Raises:
            TypeError: If ``tokens`` is not an integer tensor, or ``inv_freq``/``q_scale`` not floating.
            ValueError: On empty or mismatched shapes, token ids outside ``[0, vocab)`` or NaN/inf
                frequencies or scales (attention would silently turn them into finite garbage).
        """
        self._check_tokens(tokens)
        self._check_inv_freq(inv_freq)
        self._check_q_scale(q_scale, tokens.shape[-1], values=True)
        return self._logits(tokens, inv_freq, q_scale)

    def _check_tokens(self, tokens: object, name: str = "tokens") -> Tensor:
        check_tensor(tokens, name, (2, 3), floating=False, nonempty=True)
        if tokens.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor of token ids, got {tokens.dtype}")
        if tokens.dim() == 3 and tokens.shape[0] != self.members:
            raise ValueError(f"{name} must have {self.members} member batches, got shape {tuple(tokens.shape)}")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.vocab:
            raise ValueError(f"{name} must be token ids in [0, {self.vocab}), got values in [{lo}, {hi}]")
        return tokens

    def _check_inv_freq(self, inv_freq: object) -> Tensor:
        check_finite(check_tensor(inv_freq, "inv_freq", 1, floating=True), "inv_freq")
        if inv_freq.shape[0] != self.head_dim // 2:
            raise ValueError(f"inv_freq must hold head_dim // 2 = {self.head_dim // 2} frequencies, "
                             f"got shape {tuple(inv_freq.shape)}")
        return inv_freq

    def _check_q_scale(self, q_scale: object, seq: int, *, values: bool) -> None:
        if q_scale is None:
            return
        check_tensor(q_scale, "q_scale", (1, 2), floating=True)
        if q_scale.shape not in ((seq,), (self.members, seq)):
            raise ValueError(f"q_scale must have shape ({seq},) or ({self.members}, {seq}), got {tuple(q_scale.shape)}")
        if values:
            check_finite(q_scale, "q_scale")

    def _logits(self, tokens: Tensor, inv_freq: Tensor, q_scale: Tensor | None) -> Tensor:
        """``forward`` without the argument checks (callers have checked)."""
        S = self.members
        if tokens.dim() == 2:
            tokens = tokens.expand(S, *tokens.shape)
        _, B, T = tokens.shape
        positions = torch.arange(T)
        # Every head rotates its (2i, 2i+1) pairs by the same frequencies: with the heads side by side,
        # that is one interleaved RoPE over the full width with the frequencies tiled once per head.
        tiled_freq = inv_freq.float().repeat(self.heads)  # (W // 2,)
        W = self.embed.shape[-1]
        h = self.embed[torch.arange(S)[:, None, None], tokens].view(S, B * T, W)  # (S, B*T, W)
        for blk in self.blocks:
            x = self._norm(h, blk["norm1_w"], blk["norm1_b"])
            q, k, v = (torch.bmm(x, w).view(S * B, T, W) for w in blk["qkv"].split(W, dim=-1))  # each (S*B, T, W)
            q, k = apply_rope(q, positions, tiled_freq), apply_rope(k, positions, tiled_freq)
            if q_scale is not None:  # (T,) or (S, T) -> broadcast over (S, B, T, W)
                q = (q.view(S, B, T, W) * q_scale.float().view(-1, 1, T, 1)).view(S * B, T, W)
            q, k, v = (t.view(S * B, T, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (S*B, nh, T, hs)
            att = att.transpose(1, 2).reshape(S, B * T, W)  # heads side by side again
            h = h + torch.bmm(att, blk["proj"])
            hid = F.gelu(torch.baddbmm(blk["fc1_b"][:, None], self._norm(h, blk["norm2_w"], blk["norm2_b"]), blk["fc1"]))
            h = h + torch.baddbmm(blk["fc2_b"][:, None], hid, blk["fc2"])  # (S, B*T, W)
        logits = torch.baddbmm(self.out_b[:, None], self._norm(h, self.norm_w, self.norm_b), self.out)
        return logits.view(S, B, T, -1)


def _member_losses(model: TinyRoPELM, tokens: Tensor, inv_freq: Tensor, q_scale: Tensor | None) -> Tensor:
    """Mean next-token cross-entropy of each member, ``(members,)`` (arguments checked by the caller)."""
    logits = model._logits(tokens[..., :-1], inv_freq, q_scale)  # (S, B, T, V)
    targets = tokens[..., 1:].expand(logits.shape[:-1])  # (S, B, T)
    ce = F.cross_entropy(logits.flatten(0, 2), targets.flatten(), reduction="none")
    return ce.view(model.members, -1).mean(1)


def train_tiny_lm(
    model: TinyRoPELM,
    batches: Callable[[int], Tensor],
    inv_freq: Tensor,
    *,
    steps: int,
    lr: float = 1e-2,
    warmup: int = 20,
    weight_decay: float = 0.01,
    clip: float = 1.0,
    q_scale: Tensor | None = None,
) -> Tensor:
    r"""Train every member with AdamW on next-token cross-entropy; return each member's loss per step.

    The learning rate rises linearly over ``warmup`` steps, then follows a cosine to zero at
    ``steps``. The loss is the sum of the members' mean losses and each member's gradient is clipped
    to norm ``clip`` on its own (AdamW's update is per coordinate), so members stay independent.

    Not [`fit`][kexue.experiments.training.fit]: a language model draws a fresh batch of text every
    step instead of passing over a fixed ``(x, y)`` set, follows a warm-up and cosine schedule, and
    clips per member of a stacked model; none of these is a loss callback.

    Training is deterministic given the members' seeds and ``batches`` (no dropout, no sampling
    inside).

    Args:
        model: The stacked model (trained in place, left in ``eval()`` mode).
        batches: ``batches(step) -> tokens``, one sequence longer than the training length (each
            batch is checked like [`TinyRoPELM.forward`][kexue.experiments.rope.TinyRoPELM]'s ``tokens``).
        inv_freq: RoPE frequencies used in training (finite).
        steps: Optimiser steps (>= 1).
        lr: Peak learning rate (> 0).
        warmup: Warm-up steps (>= 1).
        weight_decay: AdamW's decoupled weight decay (>= 0).
        clip: Largest gradient norm per member (> 0).
        q_scale: Query scale per position during training (e.g. $\log_L n$), or None.

    Returns:
        float64 losses.

    Shapes:
        batches(step): ``(batch, seq + 1)`` (shared) or ``(members, batch, seq + 1)``;
        q_scale: ``(seq,)`` or ``(members, seq)``; output: ``(steps, members)``.

    Raises:
        TypeError: If ``model`` is not a [`TinyRoPELM`][kexue.experiments.rope.TinyRoPELM] or
            ``batches`` is not callable, and as ``TinyRoPELM.forward``.
        ValueError: If a hyper-parameter is out of range, and as ``TinyRoPELM.forward``.
    """
    if not isinstance(model, TinyRoPELM):
        raise TypeError(f"model must be a TinyRoPELM, got {type(model).__name__}")
    if not callable(batches):
        raise TypeError(f"batches must be a function of the step, got {type(batches).__name__}")
    model._check_inv_freq(inv_freq)
    if q_scale is not None:
        check_finite(check_tensor(q_scale, "q_scale", (1, 2), floating=True), "q_scale")
    check_int(steps, "steps")
    check_real(lr, "lr", above=0)
    check_int(warmup, "warmup")
    check_real(weight_decay, "weight_decay", at_least=0)
    check_real(clip, "clip", above=0)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    losses = torch.empty(steps, model.members, dtype=torch.float64)
    model.train()
    for step in range(steps):
        tokens = model._check_tokens(batches(step), "batches(step)")
        if tokens.shape[-1] < 2:
            raise ValueError(f"batches(step) must hold sequences of at least two tokens, got shape {tuple(tokens.shape)}")
        model._check_q_scale(q_scale, tokens.shape[-1] - 1, values=False)
        loss = _member_losses(model, tokens, inv_freq, q_scale)  # (S,)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        with torch.no_grad():  # clip each member's gradient norm separately
            norms = torch.stack([p.grad.flatten(1).square().sum(1) for p in params]).sum(0).sqrt()  # (S,)
            factor = (clip / (norms + 1e-6)).clamp(max=1.0)
            for p in params:
                p.grad.mul_(factor.view(-1, *[1] * (p.dim() - 1)))
        opt.step()
        sched.step()
        losses[step] = loss.detach()
    model.eval()
    return losses


def next_token_accuracy(
    model: TinyRoPELM, tokens: Tensor, inv_freq: Tensor, q_scale: Tensor | None = None, *, per_position: bool = False
) -> Tensor:
    """Whether each member's arg-max prediction is the next token, averaged over the batch.

    The model is run in ``eval()`` mode without gradients and put back in the mode it had.

    Args:
        model: A trained model.
        tokens: Integer tokens (shared by all members, or one batch per member).
        inv_freq: RoPE frequencies used at test time (finite).
        q_scale: Query scale per position (e.g. [`logn_scale`][kexue.rope.logn_scale]), or None.
        per_position: Return the accuracy at each predicted position instead of the mean.

    Returns:
        float64 accuracies in [0, 1]: per member, or per member and predicted position
        ``1 .. seq - 1``.

    Shapes:
        tokens: ``(batch, seq)`` or ``(members, batch, seq)`` with ``seq >= 2``;
        output: ``(members,)`` or ``(members, seq - 1)``.

    Raises:
        TypeError: If ``model`` is not a [`TinyRoPELM`][kexue.experiments.rope.TinyRoPELM] or
            ``per_position`` not a bool, and as ``TinyRoPELM.forward``.
        ValueError: If ``tokens`` has fewer than two positions, and as ``TinyRoPELM.forward``.
    """
    if not isinstance(model, TinyRoPELM):
        raise TypeError(f"model must be a TinyRoPELM, got {type(model).__name__}")
    check_bool(per_position, "per_position")
    model._check_tokens(tokens)
    if tokens.shape[-1] < 2:
        raise ValueError(f"tokens must have at least two positions, got shape {tuple(tokens.shape)}")
    model._check_inv_freq(inv_freq)
    model._check_q_scale(q_scale, tokens.shape[-1] - 1, values=True)
    with evaluating(model):
        logits = model._logits(tokens[..., :-1], inv_freq, q_scale)  # (S, B, T, V)
    hits = (logits.argmax(-1) == tokens[..., 1:]).double()  # (S, B, T)
    return hits.mean(1) if per_position else hits.mean((1, 2))

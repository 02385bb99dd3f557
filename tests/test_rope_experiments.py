"""Tests of kexue.experiments.rope: the page's trade-off measures, synthetic data and stacked tiny LM."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kexue import rope
from kexue.experiments import rope as X

# ----------------------------------------------------------------------------- choosing a base


def test_base_for_longest_wavelength():
    b = X.base_for_longest_wavelength(16, 850.0)
    lowest = rope.frequencies(16, b)[-1].item()
    assert 2 * math.pi / lowest == pytest.approx(850.0, rel=1e-12)


# ----------------------------------------------------------------------------- trade-off measures


def test_tradeoff_metrics():
    theta = rope.frequencies(32, 1725.0)
    # extrapolation: full resolution; PI: no unseen angle, resolution ~ 1/k
    assert X.local_resolution(theta, theta).item() == pytest.approx(1.0)
    assert X.unseen_angle(theta, rope.frequencies(32, 1725.0, "pi", 8.0), 512, 4096).item() == pytest.approx(0.0, abs=1e-12)
    rho = X.local_resolution(theta, theta / 8).item()
    assert rho > 1 / 8 and rho < 1 / 7
    # closed form of the unseen angle for a single slow digit
    t = torch.tensor([1e-4], dtype=torch.float64)
    assert X.unseen_angle(t, t, 100, 800).item() == pytest.approx(700e-4)
    fast = torch.tensor([1.0], dtype=torch.float64)
    assert X.unseen_angle(fast, fast, 100, 800).item() == 0.0  # fully rotated in training
    # a test arc longer than a full turn counts only up to 2 pi
    slow = torch.tensor([1e-3], dtype=torch.float64)
    assert X.unseen_angle(slow, slow, 1000, 10_000).item() == pytest.approx(2 * math.pi - 1.0)


def test_local_resolution_matches_the_distance_between_codes():
    theta = rope.frequencies(16, 300.0)
    scaled = rope.frequencies(16, 300.0, "mixed", 8.0)

    def code(r: float, f: torch.Tensor) -> torch.Tensor:
        return torch.cat(((r * f).cos(), (r * f).sin()))

    direct = (code(1, scaled) - code(0, scaled)).norm() / (code(1, theta) - code(0, theta)).norm()
    assert X.local_resolution(theta, scaled).item() == pytest.approx(direct.item(), rel=1e-12)


def test_tradeoff_measures_reject_bad_input():
    theta = rope.frequencies(8)
    with pytest.raises(ValueError, match="equal shapes"):
        X.unseen_angle(theta, theta[:2], 10, 80)
    with pytest.raises(ValueError, match="test_len"):
        X.unseen_angle(theta, theta, 10, 0)
    with pytest.raises(TypeError, match="scaled_inv_freq"):
        X.local_resolution(theta, [1.0, 2.0])
    with pytest.raises(ValueError, match="wavelength"):
        X.base_for_longest_wavelength(16, 1.0)
    with pytest.raises(ValueError, match="d"):
        X.base_for_longest_wavelength(5, 100.0)


# ----------------------------------------------------------------------------- synthetic text


def test_markov_table_and_sampling():
    table = X.markov_table(8, seed=0)
    assert table.shape == (8, 8, 8)
    torch.testing.assert_close(table.sum(-1), torch.ones(8, 8, dtype=torch.float64))
    x = X.sample_markov(table, 4, 30, seed=1)
    assert x.shape == (4, 30) and x.min() >= 0 and x.max() < 8
    assert torch.equal(x, X.sample_markov(table, 4, 30, seed=1))
    assert not torch.equal(x, X.sample_markov(table, 4, 30, seed=2))


def test_markov_follows_table():
    table = X.markov_table(4, concentration=0.3, seed=2)
    x = X.sample_markov(table, 2000, 3, seed=3)
    counts = torch.zeros(4, 4, 4, dtype=torch.float64)
    counts.index_put_((x[:, 0], x[:, 1], x[:, 2]), torch.ones(2000, dtype=torch.float64), accumulate=True)
    emp = counts.sum((0, 1)) / 2000
    expected = table.mean((0, 1))  # first two tokens uniform
    torch.testing.assert_close(emp, expected, atol=0.05, rtol=0)


# ----------------------------------------------------------------------------- the stacked tiny LM


def _reference_logits(model: X.TinyRoPELM, member: int, tokens: torch.Tensor, inv_freq: torch.Tensor,
                      q_scale: torch.Tensor | None = None) -> torch.Tensor:
    """One member's forward pass written out plainly in float64: loops over heads, explicit softmax."""
    p = {name: t[member].double() for name, t in model.named_parameters()}
    T = tokens.shape[-1]
    h = p["embed"][tokens]  # (B, T, W)
    mask = torch.ones(T, T).tril().bool()
    pos = torch.arange(T)

    def norm(x, w, b):
        return F.layer_norm(x, x.shape[-1:]) * w + b

    for i in range(len(model.blocks)):
        blk = {k.split(".", 2)[2]: v for k, v in p.items() if k.startswith(f"blocks.{i}.")}
        q, k, v = (norm(h, blk["norm1_w"], blk["norm1_b"]) @ blk["qkv"]).chunk(3, dim=-1)
        heads = []
        for j in range(model.heads):
            sl = slice(j * model.head_dim, (j + 1) * model.head_dim)
            qj = rope.apply_rope_reference(q[..., sl], pos, inv_freq.double())
            kj = rope.apply_rope_reference(k[..., sl], pos, inv_freq.double())
            if q_scale is not None:
                qj = qj * q_scale.double()[:, None]
            scores = (qj @ kj.transpose(-1, -2)) / math.sqrt(model.head_dim)
            heads.append(scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v[..., sl])
        h = h + torch.cat(heads, -1) @ blk["proj"]
        h = h + F.gelu(norm(h, blk["norm2_w"], blk["norm2_b"]) @ blk["fc1"] + blk["fc1_b"]) @ blk["fc2"] + blk["fc2_b"]
    return norm(h, p["norm_w"], p["norm_b"]) @ p["out"] + p["out_b"]


def test_stacked_forward_equals_a_plain_reference():
    model = X.TinyRoPELM(11, width=16, heads=2, layers=2, seeds=(3, 4))
    tokens = torch.randint(11, (2, 3, 9), generator=torch.Generator().manual_seed(0))
    f = rope.frequencies(8, 50.0, "ntk", 4.0)
    scale = rope.logn_scale(torch.arange(1, 10), 4, clip=False)
    with torch.no_grad():
        for q_scale in (None, scale):
            got = model(tokens, f, None if q_scale is None else q_scale.float())
            for member in range(2):
                want = _reference_logits(model, member, tokens[member], f, q_scale)
                torch.testing.assert_close(got[member].double(), want, rtol=1e-4, atol=1e-4)


def test_members_follow_their_own_seed():
    stacked = X.TinyRoPELM(7, width=16, heads=2, layers=1, seeds=(5, 9, 5))
    alone = X.TinyRoPELM(7, width=16, heads=2, layers=1, seeds=(9,))
    for (name, a), (_, b) in zip(stacked.named_parameters(), alone.named_parameters(), strict=True):
        assert torch.equal(a[1], b[0]), name
        assert torch.equal(a[0], a[2]), name  # the same seed twice gives the same member
    assert not torch.equal(stacked.embed[0], stacked.embed[1])


def test_training_the_stack_trains_each_member_alone():
    table = X.markov_table(6, seed=1)

    def stream(seed: int):
        return lambda step: X.sample_markov(table, 4, 13, seed=1000 * seed + step)

    seeds = (0, 1)
    stacked = X.TinyRoPELM(6, width=16, heads=2, layers=1, seeds=seeds)
    f = rope.frequencies(8, 30.0)
    both = X.train_tiny_lm(stacked, lambda s: torch.stack([stream(i)(s) for i in seeds]), f, steps=6, lr=3e-2,
                           warmup=2, clip=0.05)  # a small clip, so that clipping is active
    for i in seeds:
        alone = X.TinyRoPELM(6, width=16, heads=2, layers=1, seeds=(i,))
        losses = X.train_tiny_lm(alone, stream(i), f, steps=6, lr=3e-2, warmup=2, clip=0.05)
        torch.testing.assert_close(both[:, i], losses[:, 0], rtol=1e-4, atol=1e-5)
        for (name, a), (_, b) in zip(stacked.named_parameters(), alone.named_parameters(), strict=True):
            torch.testing.assert_close(a[i], b[0], rtol=1e-4, atol=1e-5, msg=name)


def test_tiny_lm_learns_the_chain():
    vocab, length = 8, 32
    table = X.markov_table(vocab, concentration=0.05, seed=0)

    def batches(step: int) -> torch.Tensor:
        return X.sample_markov(table, 16, length + 1, seed=100 + step)

    model = X.TinyRoPELM(vocab, width=32, heads=2, layers=1, seeds=(0, 1))
    f = rope.frequencies(16, 100.0)
    losses = X.train_tiny_lm(model, batches, f, steps=120, lr=1e-2)
    assert losses.shape == (120, 2) and losses.dtype == torch.float64
    assert torch.all(losses[-10:].mean(0) < losses[0] - 0.3)
    test = batches(10_000)
    acc = X.next_token_accuracy(model, test, f)
    chain = (table[test[:, :-2], test[:, 1:-1]].argmax(-1) == test[:, 2:]).double().mean().item()
    assert acc.shape == (2,) and torch.all(acc > 2 / vocab) and torch.all(acc > 0.6 * chain)  # chance is 1/8


def test_clipped_logn_is_inert_at_the_training_length():
    model = X.TinyRoPELM(10, width=16, heads=2, layers=1, seeds=(0, 1))
    tokens = torch.randint(10, (2, 20), generator=torch.Generator().manual_seed(0))
    f = rope.frequencies(8, 100.0)
    with torch.no_grad():
        plain = model(tokens, f)
        torch.testing.assert_close(plain, model(tokens, f, rope.logn_scale(torch.arange(1, 21), 20).float()))
        # a per-member scale acts on its member only
        scale = torch.stack((torch.ones(20), torch.full((20,), 2.0)))
        mixed = model(tokens, f, scale)
    torch.testing.assert_close(mixed[0], plain[0])
    assert not torch.allclose(mixed[1], plain[1])


def test_next_token_accuracy_per_position():
    model = X.TinyRoPELM(5, width=8, heads=2, layers=1, seeds=(0, 1, 2))
    tokens = torch.randint(5, (4, 12), generator=torch.Generator().manual_seed(1))
    f = rope.frequencies(4, 10.0)
    per_pos = X.next_token_accuracy(model, tokens, f, per_position=True)
    assert per_pos.shape == (3, 11)
    torch.testing.assert_close(per_pos.mean(1), X.next_token_accuracy(model, tokens, f))
    logits = model(tokens[:, :-1], f)
    torch.testing.assert_close(per_pos, (logits.argmax(-1) == tokens[:, 1:]).double().mean(1))


def test_bad_data_model_and_training_arguments():
    table = X.markov_table(4, seed=0)
    with pytest.raises(ValueError, match="seed"):
        X.sample_markov(table, 2, 5, seed=-1)
    with pytest.raises(ValueError, match="vocab"):
        X.markov_table(1)
    with pytest.raises(ValueError, match="concentration"):
        X.markov_table(4, concentration=0.0)
    with pytest.raises(ValueError, match="table"):
        X.sample_markov(table[0], 2, 5)
    model = X.TinyRoPELM(4, width=8, heads=2, layers=1, seeds=(0, 1))
    f = rope.frequencies(4)
    zeros = torch.zeros(2, 5, dtype=torch.int64)
    with pytest.raises(ValueError, match="lr"):
        X.train_tiny_lm(model, lambda s: zeros, f, steps=1, lr=0.0)
    with pytest.raises(ValueError, match="steps"):
        X.train_tiny_lm(model, lambda s: zeros, f, steps=0)
    with pytest.raises(TypeError, match="model"):
        X.train_tiny_lm(torch.nn.Linear(2, 2), lambda s: zeros, f, steps=1)
    with pytest.raises(ValueError, match="tokens"):
        X.next_token_accuracy(model, torch.zeros(2, 1, dtype=torch.int64), f)
    with pytest.raises(TypeError, match="tokens"):
        model(torch.zeros(2, 5), f)
    with pytest.raises(ValueError, match="member"):
        model(torch.zeros(3, 2, 5, dtype=torch.int64), f)
    with pytest.raises(ValueError, match="q_scale"):
        model(zeros, f, torch.ones(3))
    with pytest.raises(ValueError, match="width"):
        X.TinyRoPELM(4, width=10, heads=2)
    with pytest.raises(ValueError, match="seeds"):
        X.TinyRoPELM(4, width=8, heads=2, seeds=())

"""Tests of kexue.experiments.rope: the page's trade-off measures, synthetic data and tiny language model."""

from __future__ import annotations

import math

import pytest
import torch

from kexue import rope
from kexue.experiments import rope as X


def test_base_for_longest_wavelength():
    b = X.base_for_longest_wavelength(16, 850.0)
    lowest = rope.frequencies(16, b)[-1].item()
    assert 2 * math.pi / lowest == pytest.approx(850.0, rel=1e-12)


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


def test_markov_and_repeat():
    table = X.markov_table(8, seed=0)
    assert table.shape == (8, 8, 8)
    torch.testing.assert_close(table.sum(-1), torch.ones(8, 8, dtype=torch.float64))
    x = X.sample_markov(table, 4, 30, seed=1)
    assert x.shape == (4, 30) and x.min() >= 0 and x.max() < 8
    assert torch.equal(x, X.sample_markov(table, 4, 30, seed=1))
    rep = X.repeat_segments(x, torch.tensor([3, 5, 30, 1]), 12)
    assert torch.equal(rep[0, 3:6], x[0, :3]) and torch.equal(rep[3], x[3, :1].expand(12))


def test_markov_follows_table():
    table = X.markov_table(4, concentration=0.3, seed=2)
    x = X.sample_markov(table, 2000, 3, seed=3)
    counts = torch.zeros(4, 4, 4, dtype=torch.float64)
    counts.index_put_((x[:, 0], x[:, 1], x[:, 2]), torch.ones(2000, dtype=torch.float64), accumulate=True)
    emp = counts.sum((0, 1)) / 2000
    expected = table.mean((0, 1))  # first two tokens uniform
    torch.testing.assert_close(emp, expected, atol=0.05, rtol=0)


def test_tiny_lm_learns_the_chain():
    torch.manual_seed(0)
    vocab, length = 8, 32
    table = X.markov_table(vocab, concentration=0.05, seed=0)

    def batches(step: int) -> torch.Tensor:
        return X.sample_markov(table, 16, length + 1, seed=100 + step)

    model = X.TinyRoPELM(vocab, width=32, heads=2, layers=1)
    f = rope.frequencies(16, 100.0)
    losses = X.train_tiny_lm(model, batches, f, steps=120, lr=1e-2)
    assert sum(losses[-10:]) / 10 < losses[0] - 0.3
    acc = X.next_token_accuracy(model, batches(10_000), f)
    oracle = table.max(-1).values.mean().item()
    assert acc > 2 / vocab and acc > 0.6 * oracle  # chance is 1/8


def test_tiny_lm_logn_inert_at_train_length():
    torch.manual_seed(0)
    model = X.TinyRoPELM(10, width=16, heads=2, layers=1)
    tokens = torch.randint(10, (2, 20), generator=torch.Generator().manual_seed(0))
    f = rope.frequencies(8, 100.0)
    torch.testing.assert_close(model(tokens, f), model(tokens, f, logn_train_len=20))


def test_bad_data_and_training_arguments():
    table = X.markov_table(4, seed=0)
    with pytest.raises(ValueError, match="seed"):
        X.sample_markov(table, 2, 5, seed=-1)
    with pytest.raises(ValueError, match="vocab"):
        X.markov_table(1)
    with pytest.raises(ValueError, match="table"):
        X.sample_markov(table[0], 2, 5)
    with pytest.raises(ValueError, match="seg_len"):
        X.repeat_segments(torch.zeros(2, 4, dtype=torch.int64), torch.tensor([0, 2]), 6)
    model = X.TinyRoPELM(4, width=8, heads=2, layers=1)
    with pytest.raises(ValueError, match="lr"):
        X.train_tiny_lm(model, lambda s: torch.zeros(2, 5, dtype=torch.int64), rope.frequencies(4), steps=1, lr=0.0)
    with pytest.raises(ValueError, match="steps"):
        X.train_tiny_lm(model, lambda s: torch.zeros(2, 5, dtype=torch.int64), rope.frequencies(4), steps=0)
    with pytest.raises(ValueError, match="tokens"):
        X.next_token_accuracy(model, torch.zeros(2, 1, dtype=torch.int64), rope.frequencies(4))
    with pytest.raises(ValueError, match="width"):
        X.TinyRoPELM(4, width=10, heads=2)


def test_base_for_longest_wavelength_rejects_short_wavelengths():
    with pytest.raises(ValueError, match="wavelength"):
        X.base_for_longest_wavelength(16, 1.0)

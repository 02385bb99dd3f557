"""Bundled data sets: shapes, ranges, determinism and splits."""

from __future__ import annotations

import pytest
import torch

from kexue.data import load_digits, make_moons, train_test_split


def test_digits_shapes_and_ranges():
    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert x.min() == 0 and x.max() == 1
    assert set(y.tolist()) == set(range(10))
    levels, _ = load_digits(scale=False, dtype=torch.float64)
    assert torch.equal(levels, levels.round()) and levels.max() == 16
    assert torch.allclose(levels / 16, x.double())


def test_moons_are_seeded_and_balanced():
    a, la = make_moons(200, noise=0.1, seed=3)
    b, lb = make_moons(200, noise=0.1, seed=3)
    c, _ = make_moons(200, noise=0.1, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert a.shape == (200, 2) and la.bincount().tolist() == [100, 100]


def test_split_is_a_seeded_partition():
    x = torch.arange(100)
    y = x * 10
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, seed=1)
    assert len(x_te) == 20 and len(x_tr) == 80
    assert torch.equal(y_tr, x_tr * 10) and torch.equal(y_te, x_te * 10)
    assert sorted(torch.cat([x_tr, x_te]).tolist()) == list(range(100))
    again = train_test_split(x, test_size=0.2, seed=1)
    assert torch.equal(again[1], x_te)
    assert len(train_test_split(x, test_size=7)[1]) == 7


@pytest.mark.parametrize(("call", "exc", "match"), [
    (lambda: load_digits(dtype=torch.int64), TypeError, "dtype"),
    (lambda: make_moons(1), ValueError, "n must"),
    (lambda: make_moons(10, noise=-1.0), ValueError, "noise"),
    (lambda: make_moons(10, seed=-1), ValueError, "seed"),
    (lambda: train_test_split(), ValueError, "at least one"),
    (lambda: train_test_split(torch.zeros(5), torch.zeros(6)), ValueError, "first dimension"),
    (lambda: train_test_split(torch.zeros(5), test_size=1.5), ValueError, "test_size"),
    (lambda: train_test_split(torch.zeros(5), test_size=5), ValueError, "empty split"),
    (lambda: train_test_split(torch.zeros(5), test_size="a"), TypeError, "test_size"),
])
def test_bad_input_is_rejected_with_a_named_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()

"""The shared training harness: seeded MLPs, minibatches, the fit loop and its contracts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kexue.experiments.training import (
    LOSSES,
    accuracy,
    evaluating,
    fit,
    minibatches,
    run_side_by_side,
    seeded_mlp,
)


def test_seeded_mlp_is_a_function_of_its_seed_only():
    torch.manual_seed(123)
    a = seeded_mlp([4, 8, 3], seed=5)
    torch.manual_seed(999)
    b = seeded_mlp([4, 8, 3], seed=5)
    c = seeded_mlp([4, 8, 3], seed=6)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_seeded_mlp_leaves_the_global_generator_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    seeded_mlp([5, 6, 2], seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_seeded_mlp_layout_init_bounds_and_options():
    net = seeded_mlp([10, 20, 5], seed=0, activation="tanh", dtype=torch.float64, flatten=True, zero_last=True)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Flatten", "Linear", "Tanh", "Linear"]
    assert net[1].weight.dtype == torch.float64
    assert net[1].weight.abs().max() <= 1 / 10**0.5
    assert torch.count_nonzero(net[3].weight) == 0 and torch.count_nonzero(net[3].bias) == 0
    assert net(torch.zeros(2, 2, 5, dtype=torch.float64)).shape == (2, 5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sizes": [3]}, ValueError, "two widths"),
        ({"sizes": [3, 0]}, ValueError, r"sizes\[1\]"),
        ({"sizes": [3, True]}, ValueError, r"sizes\[1\]"),
        ({"sizes": [3, 2], "activation": "swish"}, ValueError, "activation"),
        ({"sizes": [3, 2], "dtype": torch.int64}, TypeError, "dtype"),
    ],
)
def test_seeded_mlp_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        seeded_mlp(**kwargs)


def test_minibatches_cover_every_index_once():
    gen = torch.Generator().manual_seed(0)
    batches = minibatches(10, 4, generator=gen)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="batch_size"):
        minibatches(10, 0, generator=gen)
    with pytest.raises(TypeError, match="generator"):
        minibatches(10, 2, generator=0)


def _xor(n=200, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=gen)
    return x, (x[:, 0] * x[:, 1] > 0).long()


def test_fit_learns_xor_and_is_reproducible():
    x, y = _xor()
    runs = []
    for _ in range(2):
        model = seeded_mlp([2, 32, 32, 2], seed=0)
        runs.append((fit(model, x, y, LOSSES["cross_entropy"], epochs=60, batch_size=50, lr=1e-2, seed=0), model))
    (h1, m1), (h2, m2) = runs
    assert h1 == h2
    assert h1[-1] < 0.5 * h1[0]
    assert accuracy(m1, x, y) > 0.9
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_fit_gives_the_loss_the_run_generator_and_epoch_and_restores_mode():
    x, y = _xor(40)
    seen = []

    def loss_fn(model, xb, yb, *, generator, epoch):
        seen.append((epoch, isinstance(generator, torch.Generator), model.training))
        return LOSSES["cross_entropy"](model, xb, yb, generator=generator, epoch=epoch)

    model = seeded_mlp([2, 4, 2]).eval()
    calls = []
    fit(model, x, y, loss_fn, epochs=2, batch_size=20, after_step=lambda m: calls.append(1))
    assert [e for e, _, _ in seen] == [0, 0, 1, 1]
    assert all(g and t for _, g, t in seen)
    assert len(calls) == 4
    assert not model.training


def test_fit_weight_decay_uses_adamw_and_shrinks_weights():
    x, y = _xor(100)
    plain, decayed = seeded_mlp([2, 16, 2], seed=1), seeded_mlp([2, 16, 2], seed=1)
    fit(plain, x, y, LOSSES["cross_entropy"], epochs=20, batch_size=25, lr=1e-2)
    fit(decayed, x, y, LOSSES["cross_entropy"], epochs=20, batch_size=25, lr=1e-2, weight_decay=0.5)
    assert decayed[0].weight.norm() < plain[0].weight.norm()


def test_fit_stops_on_a_non_finite_loss():
    x, y = _xor(20)

    def nan_loss(model, xb, yb, *, generator, epoch):
        return model(xb).sum() * float("nan")

    with pytest.raises(FloatingPointError, match="epoch 0"):
        fit(seeded_mlp([2, 2]), x, y, nan_loss, epochs=1, batch_size=10)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((None,), {}, TypeError, "model"),
        (("m", torch.zeros(3, 2), torch.zeros(4)), {}, ValueError, "same length"),
        (("m", torch.zeros(0, 2), torch.zeros(0)), {}, ValueError, "empty"),
        (("m", [1, 2], torch.zeros(2)), {}, TypeError, "x must be"),
        (("m",), {"epochs": 0}, ValueError, "epochs"),
        (("m",), {"lr": 0.0}, ValueError, "lr"),
        (("m",), {"batch_size": 2.5}, ValueError, "batch_size"),
        (("m",), {"loss": 3}, TypeError, "loss_fn"),
    ],
)
def test_fit_rejects_bad_arguments(args, kwargs, error, match):
    x, y = _xor(10)
    model = seeded_mlp([2, 2])
    full = [model, x, y, LOSSES["cross_entropy"]]
    for i, a in enumerate(args):
        full[i] = model if a == "m" else a
    if "loss" in kwargs:
        full[3] = kwargs.pop("loss")
    opts = {"epochs": 1, "batch_size": 5, **kwargs}
    with pytest.raises(error, match=match):
        fit(*full, **opts)


def test_evaluating_restores_the_mode_and_disables_gradients():
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(2, 2))
    model.train()
    with evaluating(model) as m:
        assert not m.training
        assert not m(torch.ones(1, 2)).requires_grad
    assert model.training
    assert accuracy(model, torch.ones(3, 2), torch.zeros(3, dtype=torch.long), batch_size=2) in {0.0, 1 / 3, 2 / 3, 1.0}
    assert model.training


def _training(seed: int):
    """A job: a seeded MLP trained with fit; returns its loss history and weights."""
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(256, 4, generator=g)
    y = (x.sum(1) > 0).long()
    model = seeded_mlp([4, 32, 2], seed=seed)

    def job():
        history = fit(model, x, y, LOSSES["cross_entropy"], epochs=3, batch_size=32, lr=1e-2, seed=seed)
        return history, [p.detach().clone() for p in model.parameters()]

    return job


def test_run_side_by_side_gives_the_results_of_running_one_after_another():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count as inside run_side_by_side
    try:
        alone = [_training(s)() for s in range(4)]
    finally:
        torch.set_num_threads(threads)
    together = run_side_by_side([_training(s) for s in range(4)], workers=2)
    assert torch.get_num_threads() == threads  # restored
    for (h1, w1), (h2, w2) in zip(alone, together, strict=True):
        assert h1 == h2
        assert all(torch.equal(a, b) for a, b in zip(w1, w2, strict=True))
    assert run_side_by_side([]) == []


def test_run_side_by_side_refuses_jobs_that_draw_from_the_global_generator():
    with pytest.raises(RuntimeError, match="global random generator"):
        run_side_by_side([lambda: torch.rand(3), lambda: 1])


def test_run_side_by_side_passes_a_job_error_on_and_restores_the_thread_count():
    threads = torch.get_num_threads()

    def fails():
        raise ZeroDivisionError("inside a job")

    with pytest.raises(ZeroDivisionError, match="inside a job"):
        run_side_by_side([lambda: 1, fails])
    assert torch.get_num_threads() == threads


def test_run_side_by_side_rejects_bad_input():
    with pytest.raises(TypeError, match="jobs must be a sequence"):
        run_side_by_side(lambda: 1)
    with pytest.raises(TypeError, match=r"jobs\[1\] must be callable"):
        run_side_by_side([lambda: 1, 2])
    with pytest.raises(ValueError, match="workers"):
        run_side_by_side([lambda: 1], workers=0)

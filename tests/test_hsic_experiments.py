"""Tests of kexue.experiments.hsic: dependence shapes and the HSIC bottleneck on the shared fit loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kexue import hsic as H
from kexue.experiments import hsic as X
from kexue.experiments.training import accuracy, fit, seeded_mlp

F64 = torch.float64


# ---------------------------------------------------------------------------------------------- data


@pytest.mark.parametrize("kind", sorted(X.DEPENDENCES))
def test_make_dependence_is_seeded_and_shaped(kind):
    x, y = X.make_dependence(kind, 50, seed=3)
    x2, y2 = X.make_dependence(kind, 50, seed=3)
    assert x.shape == y.shape == (50, 1) and x.dtype == F64
    assert torch.equal(x, x2) and torch.equal(y, y2)
    if kind.startswith("checkerboard"):
        cells = (x.floor() + y.floor()).squeeze() % 2
        assert torch.all(cells == 0)
        size = int(kind[-1])
        assert x.min() >= 0 and x.max() < size and y.min() >= 0 and y.max() < size


# population correlations without noise: sin(4 pi x) against x ~ U(-1, 1) has Cov = -1/(4 pi),
# Var = 1/3 and 1/2, so r = -sqrt(6)/(4 pi); the 4x4 board has Cov = 1/4 and Var = 5/4 + 1/12, r = 3/16;
# the even or symmetric shapes have r = 0.
POPULATION_R = {"linear": 1.0, "parabola": 0.0, "circle": 0.0, "sine": -math.sqrt(6) / (4 * math.pi),
                "cosine": 0.0, "checkerboard-4": 3 / 16, "checkerboard-3": 0.0, "independent": 0.0}


@pytest.mark.parametrize("kind", sorted(X.DEPENDENCES))
def test_population_correlation_of_each_shape(kind):
    r, _ = X.pearson_variance_ratio(*X.make_dependence(kind, 400_000, noise=0.0, seed=7))
    assert r == pytest.approx(POPULATION_R[kind], abs=0.006)  # 4 standard errors of r at this n


def test_pearson_variance_ratio_closed_form_and_its_meaning():
    # parabola without noise: E[x^2 (x^2 - 1/3)^2] / (Var x Var x^2) = (1/7 - 2/15 + 1/27) / (4/135) = 11/7
    x = torch.linspace(-1, 1, 200_001, dtype=F64)
    _, rho = X.pearson_variance_ratio(x, x * x)
    assert rho == pytest.approx(11 / 7, rel=1e-4)
    # its meaning: the variance of sqrt(n) r over many samples of a zero-correlation shape
    rs = [X.pearson_variance_ratio(*X.make_dependence("parabola", 200, noise=0.0, seed=s))[0] for s in range(600)]
    assert 200 * float(np.var(rs)) == pytest.approx(11 / 7, rel=0.2)  # s.e. of a variance from 600 draws: ~6%
    with pytest.raises(ValueError, match="constant"):
        X.pearson_variance_ratio(torch.ones(5, dtype=F64), x[:5])
    with pytest.raises(ValueError, match="same number"):
        X.pearson_variance_ratio(x[:5], x[:6])
    with pytest.raises(TypeError, match="floating"):
        X.pearson_variance_ratio(torch.arange(5), x[:5])


def test_make_dependence_bad_inputs():
    with pytest.raises(ValueError, match="kind"):
        X.make_dependence("spiral", 10)
    with pytest.raises(ValueError, match="n"):
        X.make_dependence("linear", 0)
    with pytest.raises(ValueError, match="noise"):
        X.make_dependence("linear", 10, noise=-1.0)
    with pytest.raises(ValueError, match="seed"):
        X.make_dependence("linear", 10, seed=-1)
    with pytest.raises(TypeError, match="dtype"):
        X.make_dependence("linear", 10, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------- bottleneck


def test_bottleneck_layers_get_gradients_only_from_their_own_loss():
    model = seeded_mlp([6, 5, 4, 3], activation="tanh", seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    zs = X.hidden_representations(model, x)
    Kx, Ky = H.gaussian_kernel(x), H.delta_kernel(y, dtype=torch.float32)
    loss, hx, hy = H.bottleneck_loss(zs[1], Kx, Ky, beta=2.0)
    assert loss.item() == pytest.approx(hx.item() - 2.0 * hy.item(), rel=1e-5)
    loss.backward()
    assert model[0].weight.grad is None  # the input of layer 2 was detached
    assert model[2].weight.grad is not None
    assert model(x).shape == (16, 3)
    with pytest.raises(ValueError, match="beta"):
        H.bottleneck_loss(zs[0], Kx, Ky, beta=-1.0)
    with pytest.raises(ValueError, match="nhsic"):
        H.bottleneck_loss(zs[0], Kx, Ky, beta=1.0, nhsic="rv")


def test_hidden_representations_follow_the_forward_pass_and_refuse_other_models():
    model = seeded_mlp([6, 5, 4, 3], activation="tanh", seed=1)
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    zs = X.hidden_representations(model, x, detach=False)
    assert torch.allclose(model[-1](zs[-1]), model(x))
    assert torch.allclose(zs[0], torch.tanh(model[0](x)))
    with pytest.raises(TypeError, match="Sequential"):
        X.hidden_representations(torch.nn.Linear(6, 3), x)
    with pytest.raises(TypeError, match="Sequential"):
        X.hidden_representations(seeded_mlp([6, 3], seed=0), x)  # no hidden layer
    with pytest.raises(TypeError, match="alternate"):
        linears = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 4), torch.nn.Linear(4, 3))
        X.hidden_representations(linears, x)


def test_one_adam_on_the_summed_objective_equals_one_adam_per_layer():
    """Summed per-layer losses, detached inputs and one Adam: the paper's one optimiser per layer."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(32, 6, generator=g, dtype=F64), torch.randint(0, 3, (32,), generator=g)
    a = seeded_mlp([6, 5, 4, 3], activation="tanh", seed=0, dtype=F64)
    b = seeded_mlp([6, 5, 4, 3], activation="tanh", seed=0, dtype=F64)
    fit(a, x, y, X.BottleneckObjective(beta=2.0), epochs=3, batch_size=16, lr=1e-2, seed=0)
    # reference: one Adam per hidden layer, each stepping on its own loss
    opts = [torch.optim.Adam(b[i].parameters(), lr=1e-2) for i in (0, 2)]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for idx in torch.randperm(32, generator=gen).split(16):
            xb, yb = x[idx], y[idx]
            Kx, Ky = H.gaussian_kernel(xb), H.delta_kernel(yb)
            for z, opt in zip(X.hidden_representations(b, xb), opts, strict=True):
                loss, _, _ = H.bottleneck_loss(z, Kx, Ky, beta=2.0)
                opt.zero_grad()
                loss.backward()
                opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-12)


def test_objective_records_a_per_epoch_history_and_checks_its_arguments():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    obj = X.BottleneckObjective(beta=1.0)
    fit(seeded_mlp([6, 5, 4, 3], activation="tanh", seed=0), x, y, obj, epochs=2, batch_size=20, seed=0)
    hist = obj.history
    assert len(hist["nhsic_x"]) == 2 and len(hist["nhsic_x"][0]) == 2
    assert all(0 <= v <= 1 for row in hist["nhsic_x"] + hist["nhsic_y"] for v in row)  # CKA lies in [0, 1]
    with pytest.raises(ValueError, match="beta"):
        X.BottleneckObjective(beta=-1.0)
    with pytest.raises(ValueError, match="nhsic"):
        X.BottleneckObjective(nhsic="rv")
    with pytest.raises(ValueError, match="sigma_scale"):
        X.BottleneckObjective(sigma_scale=0.0)


def test_readout_loss_trains_only_the_readout():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    model = seeded_mlp([6, 5, 4, 3], activation="tanh", seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    fit(model, x, y, X.LOSSES["readout"], epochs=2, batch_size=20, lr=1e-2, seed=0)
    after = list(model.parameters())
    # the hidden layers are frozen, the readout weight moved
    assert all(torch.equal(b, a) for b, a in zip(before[:-2], after[:-2], strict=True))
    assert not torch.equal(before[-2], after[-2])


def test_hsic_bottleneck_training_beats_chance_on_digits():
    from kexue.data import load_digits, train_test_split

    images, labels = load_digits()
    x = images.reshape(len(images), -1)
    xtr, xte, ytr, yte = train_test_split(x, labels, test_size=0.25, seed=0)
    model = seeded_mlp([64, 32, 32, 10], activation="tanh", seed=0)
    run = X.fit_hsic_bottleneck(
        model, xtr[:600], ytr[:600], epochs=3, readout_epochs=10, batch_size=200, lr=1e-2
    )
    assert len(run["nhsic_y"]) == 3 and len(run["nhsic_y"][0]) == 2
    assert len(run["hsic_loss"]) == 3 and len(run["readout_loss"]) == 10
    assert accuracy(model, xte, yte) > 0.3  # chance is 0.1
    with pytest.raises(ValueError, match="epochs"):
        X.fit_hsic_bottleneck(model, xtr, ytr, epochs=0, readout_epochs=1)

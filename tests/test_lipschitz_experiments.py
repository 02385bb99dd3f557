"""Tests of kexue.experiments.lipschitz: the page's matrices, control registries, training loops and probes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kexue.data import make_moons
from kexue.experiments.lipschitz import (
    CLASSIFIER_CONTROLS,
    CRITIC_CONTROLS,
    Scale,
    count_matmul_flops,
    gradient_profile,
    interpolates,
    linears,
    matrix_with_spectrum,
    nearest_distance,
    network_upper_bound,
    ones_start_recovery,
    sharpening_matrix,
    shifted_gaussian,
    train_classifier,
    train_critic,
)
from kexue.experiments.training import seeded_mlp
from kexue.lipschitz import exact_w1, gradient_norms, jacobian_norms, spectral_norm_exact

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ test matrices


@pytest.mark.parametrize("n", [3, 4, 7, 10, 64])
def test_sharpening_matrix_spectrum_is_the_circulant_closed_form(n):
    W = sharpening_matrix(n)
    eig = torch.linalg.eigvalsh(W)
    expected = torch.tensor([3 - 2 * math.cos(2 * math.pi * j / n) for j in range(n)], dtype=F64).sort().values
    assert torch.allclose(eig, expected, atol=1e-12)
    assert (W.sum(dim=1) == 1).all()  # all ones is an eigenvector with eigenvalue c - 2 = 1
    if n % 2 == 0:
        assert spectral_norm_exact(W).item() == pytest.approx(5.0)


def test_matrix_with_spectrum_has_the_prescribed_singular_values():
    W = matrix_with_spectrum([5.0, 2.0, 0.5], (7, 4), seed=3)
    assert torch.allclose(torch.linalg.svdvals(W), torch.tensor([5.0, 2.0, 0.5, 0.0], dtype=F64), atol=1e-12)


def test_ones_start_recovery_never_recovers_in_exact_cases_and_recovers_otherwise():
    assert ones_start_recovery(sharpening_matrix(64), max_iter=500) is None  # 1/8, 3/8, ... are exact
    assert ones_start_recovery(torch.tensor([[2.0, -1.0], [-1.0, 2.0]], dtype=F64), max_iter=500) is None
    assert ones_start_recovery(torch.diag(torch.tensor([3.0, 0.0], dtype=F64))) == 1  # one step lands on e_1
    k = ones_start_recovery(sharpening_matrix(10), max_iter=500)  # rounding leaks into the top direction
    assert k is not None and 5 < k < 200
    # the count agrees with the estimate's history
    from kexue.lipschitz import spectral_norm_estimate

    hist = spectral_norm_estimate(sharpening_matrix(10), k, u0="ones").history
    assert (5.0 - hist[-1]) / 5.0 <= 1e-3 < (5.0 - hist[-2]) / 5.0


def test_shifted_gaussian_moments():
    x = shifted_gaussian(20000, mean=(1.0, -2.0), std=0.5, seed=0, dtype=F64)
    assert torch.allclose(x.mean(0), torch.tensor([1.0, -2.0], dtype=F64), atol=0.02)
    assert torch.allclose(x.std(0), torch.tensor([0.5, 0.5], dtype=F64), atol=0.02)


# ------------------------------------------------------------------ networks and bounds


def test_network_upper_bound_counts_scale_layers():
    model = seeded_mlp([3, 5, 2], seed=0, dtype=F64)
    bound = math.prod(spectral_norm_exact(layer.weight.detach()).item() for layer in linears(model))
    assert network_upper_bound(model) == pytest.approx(bound)
    model.append(Scale(-4.0))
    assert network_upper_bound(model) == pytest.approx(4 * bound)
    assert (jacobian_norms(model, torch.randn(20, 3, generator=gen(), dtype=F64)) <= 4 * bound + 1e-9).all()


# ------------------------------------------------------------------ classifier controls


def _toy(n: int = 120, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 4, generator=gen(), dtype=dtype)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def test_every_classifier_control_trains_and_returns_an_eval_model():
    x, y = _toy()
    for name in CLASSIFIER_CONTROLS:
        model, history = train_classifier(name, x, y, hidden=(16,), epochs=30, batch_size=40, lr=1e-2, seed=0)
        assert not model.training
        assert len(history) == 30 and all(math.isfinite(h) for h in history)
        if name != "spectral-projection":  # the projection fights the optimiser (the page shows it)
            assert history[-1] < history[0], name


def test_weight_decay_control_adds_the_frobenius_penalty():
    x, y = _toy(dtype=F64)
    model = seeded_mlp([4, 8, 2], seed=0, dtype=F64)
    control = CLASSIFIER_CONTROLS["weight-decay"](model, generator=gen(), lam=0.3)
    loss = control.loss_fn(model, x, y, generator=gen(), epoch=0)
    frob = sum(layer.weight.square().sum() for layer in linears(model))
    assert loss.item() == pytest.approx((F.cross_entropy(model(x), y) + 0.3 * frob).item())


def test_spectral_reg_control_penalises_the_squared_spectral_norms():
    x, y = _toy(dtype=F64)
    model = seeded_mlp([4, 8, 2], seed=0, dtype=F64)
    control = CLASSIFIER_CONTROLS["spectral-reg"](model, generator=gen(), lam=0.5)
    for _ in range(40):  # let the persistent vectors converge on fixed weights
        loss = control.loss_fn(model, x, y, generator=gen(), epoch=0)
    sigmas = [spectral_norm_exact(layer.weight.detach()).item() for layer in linears(model)]
    expected = F.cross_entropy(model(x), y).item() + 0.5 * sum(s**2 for s in sigmas)
    assert loss.item() == pytest.approx(expected, rel=1e-8)


def test_input_gradient_control_on_a_linear_model_is_the_projected_weight_norm():
    """For f(x) = Wx + b the input gradient of r^T f is W^T r, whatever x."""
    x, y = _toy(dtype=F64)
    model = nn.Sequential(nn.Linear(4, 3, dtype=F64))
    control = CLASSIFIER_CONTROLS["input-gradient"](model, generator=gen(), lam=2.0)
    g1, g2 = gen(7), gen(7)
    loss = control.loss_fn(model, x, y, generator=g1, epoch=0)
    r = F.normalize(torch.randn((len(x), 3), generator=g2, dtype=F64), dim=1)
    W = model[0].weight.detach()
    expected = F.cross_entropy(model(x), y) + 2.0 * (r @ W).square().sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)


def test_spectral_norm_control_bounds_the_network_and_scales_it():
    x, y = _toy()
    model, _ = train_classifier("spectral-norm", x, y, hidden=(16, 16), epochs=40, batch_size=40, lr=1e-2,
                                seed=0, lipschitz=3.0)
    assert isinstance(model[-1], Scale) and model[-1].c == 3.0
    assert all(hasattr(layer, "parametrizations") for layer in linears(model))
    assert jacobian_norms(model, x).max().item() <= network_upper_bound(model) + 1e-5


def test_projection_control_leaves_unit_norm_layers_after_each_step():
    x, y = _toy()
    model, _ = train_classifier("spectral-projection", x, y, hidden=(16,), epochs=5, batch_size=40, seed=0,
                                n_iter=None)
    for layer in linears(model):
        assert spectral_norm_exact(layer.weight.detach()).item() == pytest.approx(1.0, abs=1e-5)


def test_classifier_is_reproducible_from_its_seed():
    x, y = _toy()
    a, ha = train_classifier("spectral-reg", x, y, hidden=(8,), epochs=5, seed=3)
    b, hb = train_classifier("spectral-reg", x, y, hidden=(8,), epochs=5, seed=3)
    assert ha == hb
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# ------------------------------------------------------------------ critic controls


def _samples(n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    real, _ = make_moons(n, seed=0)
    return real, shifted_gaussian(n, seed=1)


def test_critics_respect_the_dual_bound_or_overshoot_as_on_the_page():
    real, fake = _samples()
    w1 = exact_w1(real, fake)
    est = {}
    for name in CRITIC_CONTROLS:
        f, history = train_critic(name, real, fake, hidden=(32, 32), steps=150, batch_size=128, seed=0,
                                  record_every=50)
        assert not f.training and len(history) == 3
        with torch.no_grad():
            est[name] = (f(real).mean() - f(fake).mean()).item()
        assert est[name] == pytest.approx(history[-1], rel=1e-6)
    assert est["clip"] < 0.1 * w1
    for name in ("frobenius-clip", "spectral-projection"):
        assert 0.5 * w1 < est[name] <= w1  # exactly 1-Lipschitz layers (up to sigma-hat)
    assert 0.5 * w1 < est["spectral-norm"] <= w1 * 1.02
    assert est["gp-two-sided"] > 0.5 * w1


def test_critic_controls_act_after_the_step():
    real, fake = _samples(64)
    f, _ = train_critic("clip", real, fake, hidden=(8,), steps=3, seed=0, c=0.05)
    assert all(p.abs().max() <= 0.05 for p in f.parameters())
    f, _ = train_critic("frobenius-clip", real, fake, hidden=(8,), steps=3, seed=0, c=0.5)
    assert all(torch.linalg.matrix_norm(layer.weight) <= 0.5 + 1e-6 for layer in linears(f))
    f, _ = train_critic("spectral-projection", real, fake, hidden=(8,), steps=3, seed=0, n_iter=None)
    assert all(spectral_norm_exact(layer.weight.detach()).item() == pytest.approx(1.0, abs=1e-5)
               for layer in linears(f))


def test_gradient_penalty_control_matches_the_library_penalty():
    real, fake = _samples(32)
    critic = seeded_mlp([2, 8, 1], seed=0)
    control = CRITIC_CONTROLS["gp-one-sided"](critic, generator=gen(), lam=3.0)
    from kexue.lipschitz import gradient_penalty

    a = control.penalty(critic, real, fake, gen(5))
    b = gradient_penalty(critic, real, fake, 3.0, "one-sided", generator=gen(5))
    assert a.item() == b.item()
    assert CRITIC_CONTROLS["spectral-norm"](seeded_mlp([2, 4, 1]), generator=gen()).penalty(
        critic, real, fake, gen()).item() == 0.0


# ------------------------------------------------------------------ where is the gradient controlled?


def test_interpolates_lie_on_segments_between_the_samples():
    real = torch.zeros(5, 2, dtype=F64)
    fake = torch.ones(7, 2, dtype=F64)
    x = interpolates(real, fake, 100, generator=gen())
    assert x.shape == (100, 2)
    assert torch.allclose(x[:, 0], x[:, 1]) and (x >= 0).all() and (x <= 1).all()


def test_nearest_distance_matches_a_brute_force_minimum():
    p = torch.randn(50, 3, generator=gen(), dtype=F64)
    r = torch.randn(20, 3, generator=gen(1), dtype=F64)
    brute = torch.tensor([min((pi - rj).norm().item() for rj in r) for pi in p], dtype=F64)
    assert torch.allclose(nearest_distance(p, r, chunk=7), brute)


def test_gradient_profile_of_a_linear_critic_is_flat():
    a = torch.tensor([0.6, 0.8], dtype=F64) * 1.5  # ||grad|| = 1.5 everywhere
    critic = lambda x: x @ a
    points = torch.randn(400, 2, generator=gen(), dtype=F64) * 2
    distance = nearest_distance(points, torch.zeros(1, 2, dtype=F64))
    p = gradient_profile(gradient_norms(critic, points), distance, [0.0, 1.0, 2.0, 100.0])
    assert p.count.sum().item() == 400
    assert torch.allclose(p.mean, torch.full((3,), 1.5, dtype=F64))
    assert torch.allclose(p.excess, torch.full((3,), 0.5, dtype=F64))


def test_gradient_profile_bins_and_empty_bins():
    p = gradient_profile(torch.tensor([2.0, 0.5]), torch.tensor([0.1, 3.0]), [0.0, 1.0, 2.0, 4.0])
    assert p.count.tolist() == [1, 0, 1]
    assert math.isnan(p.mean[1].item()) and p.max[0].item() == 2.0 and p.excess[2].item() == 0.0


# ------------------------------------------------------------------ cost


def test_gradient_penalty_step_costs_more_flops():
    real, fake = _samples(64)

    def flops(name):
        return count_matmul_flops(lambda: train_critic(name, real, fake, hidden=(16,), steps=1, batch_size=32))

    assert flops("gp-two-sided") > 1.5 * flops("spectral-norm")
    assert count_matmul_flops(lambda: torch.ones(3, 4) @ torch.ones(4, 5)) == 2 * 3 * 4 * 5
    assert count_matmul_flops(lambda: torch.mv(torch.ones(3, 4), torch.ones(4))) == 2 * 3 * 4


# ------------------------------------------------------------------ bad input


def test_bad_inputs_raise_clear_errors():
    x, y = _toy()
    with pytest.raises(ValueError, match="name"):
        train_classifier("dropout", x, y)
    with pytest.raises(ValueError, match="options"):
        train_classifier("plain", x, y, lam=1.0)
    with pytest.raises(ValueError, match="lam"):
        train_classifier("weight-decay", x, y, lam=-1.0)
    with pytest.raises(ValueError, match="y"):
        train_classifier("plain", x, y[:-1])
    with pytest.raises(ValueError, match="name"):
        train_critic("wgan", x[:, :2], x[:, :2])
    with pytest.raises(ValueError, match="options"):
        train_critic("spectral-norm", x[:, :2], x[:, :2], lam=1.0)
    with pytest.raises(ValueError, match="same dimension"):
        train_critic("clip", x[:, :2], x[:, :3])
    with pytest.raises(ValueError, match="singular_values"):
        matrix_with_spectrum([1, 2, 3], (2, 5))
    with pytest.raises(ValueError, match="n must"):
        sharpening_matrix(2)
    with pytest.raises(ValueError, match="tol"):
        ones_start_recovery(sharpening_matrix(4), tol=0.0)
    with pytest.raises(ValueError, match="edges"):
        gradient_profile(torch.ones(2), torch.ones(2), [1.0, 0.0])
    with pytest.raises(ValueError, match="distance"):
        gradient_profile(torch.ones(2), torch.ones(3), [0.0, 1.0])

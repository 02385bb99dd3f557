"""Tests of kexue.experiments.flow: baselines, the toy RealNVP trained over stacked seeds, the
variational dequantiser, glow_variant's embedding of the ablation variants, and the stacked trainer."""

from __future__ import annotations

import math

import pytest
import torch

from kexue import flow as F
from kexue.data import make_moons
from kexue.experiments import flow as E

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


def _jacobian_logdet(fn, x: torch.Tensor) -> torch.Tensor:
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)).reshape(-1), x.reshape(-1))
    return torch.linalg.slogdet(jac).logabsdet


def _perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


# ---------------------------------------------------------------- baselines


def test_categorical_and_gaussian_baselines():
    g = torch.Generator().manual_seed(0)
    v_tr = torch.randint(0, 17, (4000, 5), generator=g)
    v_te = torch.randint(0, 17, (2000, 5), generator=g)
    # uniform data: the per-pixel categorical approaches log2(17)
    assert E.categorical_bpd(v_tr, v_te, 17) == pytest.approx(math.log2(17), abs=0.02)
    # constant data: closed form -log2((n + alpha) / (n + L alpha))
    zeros = torch.zeros(100, 5, dtype=torch.long)
    assert E.categorical_bpd(zeros, zeros, 17, alpha=0.5) == pytest.approx(-math.log2(100.5 / 108.5), rel=1e-12)
    # the Gaussian of uniformly dequantised uniform data is worse than uniform but finite
    x_tr = F.dequantize(v_tr, 17, generator=g, dtype=torch.float64)
    x_te = F.dequantize(v_te, 17, generator=g, dtype=torch.float64)
    gb = E.gaussian_bpd(x_tr, x_te, 17)
    assert math.log2(17) < gb < math.log2(17) + 0.5
    assert E.uniform_bpd(17) == pytest.approx(math.log2(17))


def test_baselines_reject_bad_input():
    with pytest.raises(ValueError, match="alpha"):
        E.categorical_bpd(torch.zeros(2, 3), torch.zeros(2, 3), 17, alpha=0.0)
    with pytest.raises(ValueError, match="trailing"):
        E.categorical_bpd(torch.zeros(2, 3), torch.zeros(2, 4), 17)
    with pytest.raises(ValueError, match="v_test"):
        E.categorical_bpd(torch.zeros(2, 3), torch.full((2, 3), 17), 17)
    with pytest.raises(ValueError, match="trailing"):
        E.gaussian_bpd(torch.zeros(2, 3), torch.zeros(2, 4), 17)
    with pytest.raises(ValueError, match="ridge"):
        E.gaussian_bpd(torch.zeros(2, 3), torch.zeros(2, 3), 17, ridge=-1.0)
    with pytest.raises(ValueError, match="levels"):
        E.uniform_bpd(1)


# ---------------------------------------------------------------- toy RealNVP with the shared fit


def test_realnvp_2d_inverts_and_its_logdet_matches_autograd():
    r = _perturb(E.realnvp_2d(4, 8, "tanh", actnorm=True)).double()
    pts = torch.randn(1, 2, dtype=torch.float64)
    zr, ldr = r(pts)
    assert torch.allclose(r.inverse(zr)[0], pts, atol=1e-10)
    assert torch.allclose(ldr[0], _jacobian_logdet(lambda v: r(v)[0], pts), atol=1e-10)


def test_realnvp_2d_is_seeded_identity_at_init_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = E.realnvp_2d(2, 4, seed=5), E.realnvp_2d(2, 4, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    x = torch.randn(7, 2)
    z, ld = a(x)
    assert torch.equal(z, x) and torch.equal(ld, torch.zeros(7))  # zero last layers: identity


def test_realnvp_learns_moons_stacked_over_seeds():
    pts, _ = make_moons(512, noise=0.05, seed=0)
    models = [E.realnvp_2d(4, 32, seed=10 * s) for s in range(2)]
    start = [m.log_prob(pts).mean().item() for m in models]
    hist = E.fit_stacked([E.ContinuousNLL(m) for m in models], pts, seeds=[0, 1], epochs=30, batch_size=128,
                         lr=3e-3, schedule="constant", warmup=0, eval_data=pts, eval_noise=torch.zeros_like(pts),
                         eval_every=10)
    for m, s0, h in zip(models, start, hist["eval"]):
        end = m.log_prob(pts).mean().item()
        assert end > s0 + 0.8  # a standard normal is far from two moons; the flow must improve on it
        assert h[-1].item() == pytest.approx(-end, abs=1e-4)  # the last evaluation is the written-back model


# ---------------------------------------------------------------- dequantisation


def test_logistic_dequantizer_starts_uniform_and_its_log_density_is_exact():
    dq = E.LogisticDequantizer(4, 17).double()
    v = torch.randint(0, 17, (3, 1, 2, 2))
    u0 = torch.rand(3, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    u, log_q = dq(v, u0)
    assert torch.allclose(u, u0, atol=1e-12) and torch.allclose(log_q, torch.zeros(3, dtype=torch.float64), atol=1e-12)
    _perturb(dq)
    u, log_q = dq(v, u0)
    assert ((u > 0) & (u < 1)).all()
    # q(u | v) = 1 / |det du/du0| for u0 uniform: compare with autograd, one example at a time
    for i in range(3):
        ld = _jacobian_logdet(lambda w, i=i: dq(v[i : i + 1], w)[0], u0[i : i + 1])
        assert torch.allclose(log_q[i], -ld, atol=1e-10)


def test_dequantized_flow_without_dequantizer_is_the_bits_per_dim_bound():
    flow = _perturb(F.glow((1, 4, 4), 2, 1, 4), scale=0.1).double().eval()
    v = torch.randint(0, 17, (5, 1, 4, 4))
    u0 = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    got = E.DequantizedFlow(flow, 17)(v, u0)
    assert torch.allclose(got, F.bits_per_dim(flow.log_prob((v + u0) / 17), 16, 17), atol=1e-12)
    # with a fresh logistic dequantiser the bound is the same (u = u0, log q = 0)
    same = E.DequantizedFlow(flow, 17, E.LogisticDequantizer(16, 17).double())(v, u0)
    assert torch.allclose(same, got, atol=1e-9)


# ---------------------------------------------------------------- ablation variants and stacked training


@pytest.mark.parametrize("permutation", ["lu", "shuffle", "reverse"])
@pytest.mark.parametrize("actnorm", [True, False])
def test_glow_variant_computes_the_variant_exactly(permutation, actnorm):
    model, trainable = E.glow_variant(permutation, actnorm, seed=2, levels=2, depth=2, hidden=8)
    direct = F.glow(permutation=permutation, actnorm=actnorm, seed=2, levels=2, depth=2, hidden=8)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    direct.train(), model.train()
    assert torch.equal(model.log_prob(x), direct.log_prob(x))  # includes the ActNorm initialisation
    assert torch.equal(model.log_prob(x * 0.5), direct.log_prob(x * 0.5))
    n_free = sum(int(m.sum()) for m in trainable.values())
    assert n_free == sum(p.numel() for p in direct.parameters())


def test_glow_variant_rejects_unknown_permutation():
    with pytest.raises(ValueError, match="permutation"):
        E.glow_variant("conv")


def _digits_like(n: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 17, (n, 1, 8, 8), generator=g)


def test_fit_stacked_trains_each_model_as_if_alone():
    data = _digits_like()
    kw = {"seeds": [4], "epochs": 2, "batch_size": 32, "lr": 1e-3, "warmup": 2, "init_batch": 64}
    alone = E.DequantizedFlow(F.glow(depth=1, hidden=4, seed=0), 17)
    h_alone = E.fit_stacked([alone], data, **kw)
    pair = [E.DequantizedFlow(F.glow(depth=1, hidden=4, seed=s), 17) for s in (0, 1)]
    h_pair = E.fit_stacked(pair, data, **{**kw, "seeds": [4, 5]})
    assert torch.allclose(h_alone["loss"][0], h_pair["loss"][0], atol=1e-5)
    for p, q in zip(alone.parameters(), pair[0].parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_fit_stacked_is_deterministic_respects_masks_and_evaluates():
    data = _digits_like()
    u = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    def run():
        pairs = [E.glow_variant(perm, an, seed=0, depth=1, hidden=4) for perm, an in (("lu", True), ("reverse", False))]
        models = [E.DequantizedFlow(m, 17) for m, _ in pairs]
        masks = [{f"flow.{k}": m for k, m in t.items()} for _, t in pairs]
        hist = E.fit_stacked(models, data, seeds=[0, 0], epochs=3, batch_size=32, trainable=masks,
                             eval_data=data[:20], eval_noise=u, eval_every=2)
        return models, hist

    (m1, h1), (_, h2) = run(), run()
    assert torch.equal(h1["eval"], h2["eval"]) and h1["eval_epoch"] == [2, 3]
    assert h1["eval"].shape == (2, 2) and h1["loss"].shape == (2, 3)
    frozen = m1[1].flow.transform.steps.layers[0]
    assert torch.equal(frozen.mix.L, torch.zeros_like(frozen.mix.L))  # the reversal stayed a permutation
    assert torch.equal(frozen.actnorm.log_s, torch.zeros_like(frozen.actnorm.log_s))  # no ActNorm stayed identity
    assert not torch.equal(m1[0].flow.transform.steps.layers[0].mix.L, torch.zeros_like(frozen.mix.L))
    with torch.no_grad():  # the written-back weights give the last evaluation
        again = torch.stack([m(data[:20], u).mean() for m in m1])
    assert torch.allclose(again, h1["eval"][:, -1], atol=1e-5)


@pytest.mark.parametrize("size", [(4, 4), (2, 2), (3, 5), (1, 1)])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv2d_as_matmul_is_the_same_convolution_in_float64(size, k):
    g = torch.Generator().manual_seed(k)
    x = torch.randn(3, 2, *size, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    ours, ref = E.conv2d_as_matmul(x, w, b), torch.nn.functional.conv2d(x, w, b, padding=k // 2)
    assert torch.allclose(ours, ref, atol=1e-12)
    grads = torch.autograd.grad(ours.square().sum(), (x, w, b))
    ref_grads = torch.autograd.grad(ref.square().sum(), (x, w, b))
    assert all(torch.allclose(a, r, atol=1e-10) for a, r in zip(grads, ref_grads))
    assert torch.allclose(E.conv2d_as_matmul(x, w), torch.nn.functional.conv2d(x, w, padding=k // 2), atol=1e-12)


def test_conv2d_as_matmul_rejects_bad_input():
    x, w = torch.zeros(1, 2, 4, 4), torch.zeros(3, 2, 3, 3)
    with pytest.raises(ValueError, match="weight.*odd"):
        E.conv2d_as_matmul(x, torch.zeros(3, 2, 2, 2))
    with pytest.raises(ValueError, match="x must have 2 channels"):
        E.conv2d_as_matmul(torch.zeros(1, 5, 4, 4), w)
    with pytest.raises(ValueError, match="bias must have 3"):
        E.conv2d_as_matmul(x, w, torch.zeros(2))
    with pytest.raises(TypeError, match="weight must have x's dtype"):
        E.conv2d_as_matmul(x, w.double())
    with pytest.raises(TypeError, match="bias must have x's dtype"):
        E.conv2d_as_matmul(x, w, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="x"):
        E.conv2d_as_matmul(torch.zeros(2, 4, 4), w)


def test_small_convs_as_matmul_take_only_the_convolutions_they_compute():
    """Under fit_stacked's mode, "same" stride-1 convolutions on maps of <= 16 positions are
    computed as matrix products (the same values); every other call reaches F.conv2d unchanged."""
    import torch.nn.functional as tf

    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    calls = []
    original = E._conv2d_as_matmul

    def spy(*args):
        calls.append(tuple(args[0].shape))
        return original(*args)

    cases = [  # (input, conv kwargs, taken by the fast path)
        (torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64), {"padding": 1}, True),
        (torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float64), {"padding": (1, 1)}, True),
        (torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64), {"padding": 1}, False),  # 25 positions
        (torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64), {"padding": 0}, False),  # not "same"
        (torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64), {"padding": 1, "stride": 2}, False),
    ]
    E._conv2d_as_matmul = spy
    try:
        for x, kw, taken in cases:
            calls.clear()
            with E._SmallConvsAsMatmul():
                out = tf.conv2d(x, w, None, **kw)
            assert torch.allclose(out, tf.conv2d(x, w, None, **kw), atol=1e-12)
            assert bool(calls) == taken, (x.shape, kw)
    finally:
        E._conv2d_as_matmul = original


def test_fit_stacked_rejects_bad_input():
    data = _digits_like(16)
    m = [E.DequantizedFlow(F.glow(depth=1, hidden=4), 17)]
    with pytest.raises(ValueError, match="seeds"):
        E.fit_stacked(m, data, seeds=[0, 1], epochs=1)
    with pytest.raises(ValueError, match="schedule"):
        E.fit_stacked(m, data, seeds=[0], epochs=1, schedule="step")
    with pytest.raises(ValueError, match="architecture"):
        E.fit_stacked(m + [E.DequantizedFlow(F.glow(depth=2, hidden=4), 17)], data, seeds=[0, 1], epochs=1)
    with pytest.raises(ValueError, match="eval_noise"):
        E.fit_stacked(m, data, seeds=[0], epochs=1, eval_data=data)
    with pytest.raises(ValueError, match="models"):
        E.fit_stacked([F.glow(depth=1, hidden=4)], data, seeds=[0], epochs=1)


def test_schedules():
    assert E.SCHEDULES["constant"](0, 100, 10) == pytest.approx(0.1)
    assert E.SCHEDULES["constant"](50, 100, 10) == 1.0
    assert E.SCHEDULES["cosine"](50, 100, 0) == pytest.approx(0.5)
    assert E.SCHEDULES["cosine"](99, 100, 0) < 0.01


def test_multiply_adds_counts_convolutions():
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    assert E.multiply_adds(conv, torch.zeros(5, 2, 4, 4)) == 5 * 3 * 16 * 2 * 9
    lin = torch.nn.Linear(4, 6)
    assert E.multiply_adds(lin, torch.zeros(7, 4)) == 7 * 6 * 4


def test_fit_stacked_freezes_a_dequantizer_by_mask():
    models = [E.DequantizedFlow(F.glow(depth=1, hidden=4, seed=0), 17, E.LogisticDequantizer(64, 17)) for _ in range(2)]
    frozen = {"dequantizer.mu": torch.zeros(64, 17), "dequantizer.log_a": torch.zeros(64, 17)}
    E.fit_stacked(models, _digits_like(), seeds=[0, 0], epochs=1, batch_size=32, trainable=[frozen, {}])
    assert torch.equal(models[0].dequantizer.mu, torch.zeros(64, 17))
    assert not torch.equal(models[1].dequantizer.mu, torch.zeros(64, 17))


def test_fit_stacked_rejects_masks_for_unknown_parameters():
    m = [E.DequantizedFlow(F.glow(depth=1, hidden=4), 17)]
    with pytest.raises(ValueError, match="trainable"):
        E.fit_stacked(m, _digits_like(16), seeds=[0], epochs=1, trainable=[{"transform.top.mu": torch.zeros(1)}])


def test_glow_variant_without_conditional_prior_gives_standard_normal_halves():
    model, trainable = E.glow_variant("lu", True, conditional_prior=False, seed=0, levels=2, depth=1, hidden=4)
    split = model.transform.split
    assert int(trainable["transform.split.conv.weight"].sum()) == 0
    h = torch.randn(3, 4, 4, 4)
    y, ld = split(h)  # zero conv: mu = 0, sigma = 1
    assert torch.equal(y, h) and torch.equal(ld, torch.zeros(3))

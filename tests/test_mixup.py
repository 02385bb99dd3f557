"""kexue.mixup: the equations of the SamplePairing/mixup page, the mixers, parity with kornia.

The training loops and evaluation helpers of kexue.experiments.mixup are tested in
tests/test_mixup_experiments.py."""

from __future__ import annotations

from functools import partial

import kornia.augmentation as KA
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from kexue.experiments.training import seeded_mlp
from kexue.mixup import (
    MIXERS,
    MixedBatch,
    linearity_gap,
    linearity_gap_reference,
    mix_inputs,
    mixed_cross_entropy,
    mixup,
    mixup_uniform,
    no_mixing,
    sample_lambda,
    sample_pairing,
    sample_pairing_active,
    sample_pairing_soft,
    soft_cross_entropy,
    soft_targets,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int = 16, d: int = 5, k: int = 4, seed: int = 0, dtype=torch.float64):
    g = _gen(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randint(0, k, (n,), generator=g)


# ----------------------------------------------------------------------------- loss identity


@settings(max_examples=25, deadline=None, database=None)
@given(lam=st.floats(0.0, 1.0), seed=st.integers(0, 10_000), per_row=st.booleans())
def test_two_term_loss_equals_soft_label_loss(lam, seed, per_row):
    g = _gen(seed)
    logits = torch.randn(12, 7, generator=g, dtype=torch.float64)
    y_a, y_b = torch.randint(0, 7, (12,), generator=g), torch.randint(0, 7, (12,), generator=g)
    lam_t = torch.rand(12, generator=g, dtype=torch.float64) if per_row else torch.tensor(lam, dtype=torch.float64)
    hard = mixed_cross_entropy(logits, y_a, y_b, lam_t)
    soft = soft_cross_entropy(logits, soft_targets(y_a, y_b, lam_t, 7))
    torch.testing.assert_close(hard, soft, rtol=1e-13, atol=1e-13)


def test_loss_identity_holds_for_gradients_too():
    g = _gen(3)
    logits = torch.randn(10, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y_a, y_b = torch.randint(0, 5, (10,), generator=g), torch.randint(0, 5, (10,), generator=g)
    lam = torch.rand(10, generator=g, dtype=torch.float64)
    (g1,) = torch.autograd.grad(mixed_cross_entropy(logits, y_a, y_b, lam), logits)
    (g2,) = torch.autograd.grad(soft_cross_entropy(logits, soft_targets(y_a, y_b, lam, 5)), logits)
    torch.testing.assert_close(g1, g2, rtol=1e-13, atol=1e-14)
    # closed form of the soft cross-entropy gradient: (softmax(z) - t) / B
    t = soft_targets(y_a, y_b, lam, 5)
    torch.testing.assert_close(g2, (logits.detach().softmax(-1) - t) / 10, rtol=1e-12, atol=1e-14)


def test_soft_targets_are_distributions_and_reduce_to_one_hot():
    y_a, y_b = torch.tensor([0, 1, 2]), torch.tensor([2, 1, 0])
    t = soft_targets(y_a, y_b, torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64), 3)
    torch.testing.assert_close(t.sum(-1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(t[0], torch.tensor([0.25, 0.0, 0.75], dtype=torch.float64))
    torch.testing.assert_close(t[1], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(t[2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    logits = torch.randn(3, 3, generator=_gen(), dtype=torch.float64)
    torch.testing.assert_close(mixed_cross_entropy(logits, y_a, y_a, 0.3), F.cross_entropy(logits, y_a))


# ----------------------------------------------------------------------------- linearity gap


@settings(max_examples=25, deadline=None, database=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.0, 1.0))
def test_affine_maps_have_zero_linearity_gap(seed, lam):
    g = _gen(seed)
    A = torch.randn(6, 3, generator=g, dtype=torch.float64)
    c = torch.randn(3, generator=g, dtype=torch.float64) * 10
    x_a, x_b = torch.randn(20, 6, generator=g, dtype=torch.float64), torch.randn(20, 6, generator=g, dtype=torch.float64)
    gap = linearity_gap(lambda x: x @ A + c, x_a, x_b, lam)
    assert gap.shape == (20,) and gap.max() < 1e-12


def test_linearity_gap_matches_slow_reference_and_vanishes_at_endpoints():
    g = _gen(5)
    net = seeded_mlp([4, 8, 3], seed=1).double()
    f = lambda x: net(x).softmax(-1)
    x_a, x_b = torch.randn(9, 4, generator=g, dtype=torch.float64), torch.randn(9, 4, generator=g, dtype=torch.float64)
    lam = torch.rand(9, generator=g, dtype=torch.float64)
    with torch.no_grad():
        fast = linearity_gap(f, x_a, x_b, lam)
        torch.testing.assert_close(fast, linearity_gap_reference(f, x_a, x_b, lam), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(linearity_gap(f, x_a, x_b, 0.3), linearity_gap_reference(f, x_a, x_b, 0.3))
        assert fast.min() > 0  # a ReLU-softmax network is not affine
        for end in (0.0, 1.0):
            assert linearity_gap(f, x_a, x_b, end).abs().max() < 1e-12
        # images (B, C, H, W) are fine too
        assert linearity_gap(lambda x: x.flatten(1).tanh(), x_a.reshape(9, 1, 2, 2), x_b.reshape(9, 1, 2, 2),
                             lam).shape == (9,)


def test_identical_endpoints_and_zero_vectors_give_zero_gap():
    net = seeded_mlp([3, 5, 2], seed=0).double()
    x = torch.randn(4, 3, generator=_gen(), dtype=torch.float64)
    with torch.no_grad():
        assert linearity_gap(net, x, x, 0.4).abs().max() < 1e-12
        z = torch.zeros(2, 3, dtype=torch.float64)
        assert linearity_gap(net, z, z, 0.7).abs().max() < 1e-12


# ----------------------------------------------------------------------------- SamplePairing


def test_sample_pairing_labels_are_symmetric_in_expectation():
    """Monte Carlo: each averaged pair (a, b) arrives with y_a as often as with y_b."""
    x, y = torch.randn(6, 3, generator=_gen(1)), torch.tensor([0, 1, 2, 3, 1, 0])
    g = _gen(2)
    total = torch.zeros(6, 6, 4, dtype=torch.float64)
    count = torch.zeros(6, 6, dtype=torch.float64)
    n_draws = 3000
    rows = torch.arange(6)
    for _ in range(n_draws):
        mb = sample_pairing(x, y, generator=g)
        torch.testing.assert_close(mb.x, (x + x[mb.index]) / 2)
        assert torch.equal(mb.y_a, y) and torch.equal(mb.y_b, y[mb.index]) and torch.all(mb.lam == 1)
        lo, hi = torch.minimum(rows, mb.index), torch.maximum(rows, mb.index)
        total.index_put_((lo, hi), F.one_hot(mb.y_a, 4).double(), accumulate=True)
        count.index_put_((lo, hi), torch.ones(6, dtype=torch.float64), accumulate=True)
    iu = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)
    mean = total[iu] / count[iu, None]
    i, j = iu.nonzero().T
    expected = (F.one_hot(y[i], 4) + F.one_hot(y[j], 4)).double() / 2
    # about 2/6 * 3000 = 1000 draws per pair: standard error <= 0.5 / sqrt(1000) ~ 0.016
    assert (mean - expected).abs().max() < 5 * 0.5 / count[iu].min().sqrt()
    # every unordered pair was drawn with probability 2/n per row-slot, i.e. about n_draws * 2 / 6
    assert abs(count[iu].mean().item() / n_draws - 2 / 6) < 0.02


def test_soft_sample_pairing_is_mixup_at_one_half():
    x, y = _batch(10)
    a = sample_pairing(x, y, generator=_gen(4))
    b = sample_pairing_soft(x, y, generator=_gen(4))
    assert torch.equal(a.x, b.x) and torch.equal(a.index, b.index) and torch.all(b.lam == 0.5)
    torch.testing.assert_close(b.x, mix_inputs(x, b.index, 0.5))
    logits = torch.randn(10, 4, generator=_gen(), dtype=torch.float64)
    # the expected loss of SamplePairing over the two orders is the soft loss
    swapped = mixed_cross_entropy(logits, b.y_b, b.y_a, 1.0)
    torch.testing.assert_close((mixed_cross_entropy(logits, b.y_a, b.y_b, 1.0) + swapped) / 2,
                               mixed_cross_entropy(logits, b.y_a, b.y_b, b.lam))


def test_sample_pairing_schedule():
    act = partial(sample_pairing_active, start=3, end=17, on=2, off=1)
    assert [act(e) for e in range(20)] == [
        False, False, False, True, True, False, True, True, False, True, True, False, True, True, False,
        True, True, False, False, False]
    assert not any(sample_pairing_active(e, start=0, end=0, on=1, off=0) for e in range(5))
    assert all(sample_pairing_active(e, start=0, end=9, on=1, off=0) for e in range(9))
    for kw, name in (({"start": -1}, "start"), ({"on": 0}, "on"), ({"off": -2}, "off"), ({"end": 1}, "end")):
        args = {"start": 2, "end": 5, "on": 1, "off": 1} | kw
        with pytest.raises(ValueError, match=name):
            sample_pairing_active(3, **args)


# ----------------------------------------------------------------------------- mixup and lambda


def test_mixup_formula_and_reference_code():
    """Against an independent re-implementation of facebookresearch/mixup-cifar10's mixup_data."""
    x, y = _batch(12)
    mb = mixup(x, y, generator=_gen(7), alpha=0.4)
    g = _gen(7)  # replay: permutation first, then one uniform for the Beta quantile
    index = torch.randperm(12, generator=g)
    lam = stats.beta.ppf(torch.rand(1, generator=g, dtype=torch.float64).item(), 0.4, 0.4)
    assert torch.equal(mb.index, index)
    torch.testing.assert_close(mb.lam, torch.full((12,), lam, dtype=torch.float64))
    torch.testing.assert_close(mb.x, lam * x + (1 - lam) * x[index, :])
    logits = torch.randn(12, 4, generator=g, dtype=torch.float64)
    ref_loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[index])
    torch.testing.assert_close(mixed_cross_entropy(logits, mb.y_a, mb.y_b, mb.lam), ref_loss)


def test_mixup_uniform_is_alpha_one_and_per_sample_varies():
    x, y = _batch(8)
    a = mixup_uniform(x, y, generator=_gen(3))
    b = mixup(x, y, generator=_gen(3), alpha=1.0)
    assert torch.equal(a.x, b.x) and torch.equal(a.lam, b.lam)
    c = mixup_uniform(x, y, generator=_gen(3), per_sample=True)
    assert c.lam.unique().numel() == 8
    torch.testing.assert_close(c.x, c.lam[:, None] * x + (1 - c.lam[:, None]) * x[c.index])


def test_mix_inputs_matches_a_loop():
    x = torch.randn(5, 2, 3, generator=_gen(), dtype=torch.float64)
    index = torch.tensor([4, 0, 2, 1, 3])
    lam = torch.tensor([0.1, 0.5, 0.9, 0.0, 1.0], dtype=torch.float64)
    out = mix_inputs(x, index, lam)
    for i in range(5):
        torch.testing.assert_close(out[i], lam[i] * x[i] + (1 - lam[i]) * x[index[i]])


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_lambda_statistics(alpha):
    draws = sample_lambda(alpha, 40_000, generator=_gen(11), dtype=torch.float64)
    assert draws.min() >= 0 and draws.max() <= 1
    var = 1 / (4 * (2 * alpha + 1))
    assert abs(draws.mean().item() - 0.5) < 5 * (var / 40_000) ** 0.5
    assert abs(draws.var().item() - var) < 0.03 * var
    assert stats.kstest(draws.numpy(), stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_uniform_lambda_is_the_generator_uniform_and_reproducible():
    u = torch.rand(100, generator=_gen(5), dtype=torch.float64)
    torch.testing.assert_close(sample_lambda(1.0, 100, generator=_gen(5), dtype=torch.float64), u)
    assert torch.equal(sample_lambda(0.2, 50, generator=_gen(5)), sample_lambda(0.2, 50, generator=_gen(5)))
    assert not torch.equal(sample_lambda(0.2, 50, generator=_gen(5)), sample_lambda(0.2, 50, generator=_gen(6)))
    assert sample_lambda(0.3, 0, generator=_gen()).shape == (0,)
    assert sample_lambda(0.3, 3, generator=_gen()).dtype == torch.float32


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_every_mixer_is_deterministic_and_shape_preserving(name):
    x = torch.rand(7, 1, 8, 8, generator=_gen(1))
    y = torch.randint(0, 10, (7,), generator=_gen(2))
    a, b = MIXERS[name](x, y, generator=_gen(9)), MIXERS[name](x, y, generator=_gen(9))
    assert isinstance(a, MixedBatch)
    assert a.x.shape == x.shape and a.x.dtype == x.dtype
    assert a.y_a.shape == a.y_b.shape == a.lam.shape == a.index.shape == (7,)
    assert torch.equal(a.x, b.x) and torch.equal(a.lam, b.lam) and torch.equal(a.index, b.index)
    assert torch.equal(a.y_b, y[a.index]) and torch.equal(a.y_a, y)
    assert torch.all((a.lam >= 0) & (a.lam <= 1))
    # mixtures stay inside the convex hull of the pixel range
    assert a.x.min() >= 0 and a.x.max() <= 1


def test_degenerate_batches():
    x1, y1 = torch.randn(1, 3, dtype=torch.float64), torch.tensor([2])
    for name in MIXERS:  # a single sample can only be paired with itself: unchanged
        mb = MIXERS[name](x1, y1, generator=_gen())
        torch.testing.assert_close(mb.x, x1)
        assert torch.equal(mb.y_b, y1)
    const = torch.full((6, 4), 3.0)
    y = torch.arange(6)
    assert torch.equal(mixup(const, y, generator=_gen(), alpha=0.5).x, const)
    zeros = torch.zeros(5, 2)
    assert torch.equal(sample_pairing(zeros, torch.zeros(5, dtype=torch.int64), generator=_gen()).x, zeros)
    nb = no_mixing(const, y, generator=_gen())
    assert torch.equal(nb.x, const) and torch.all(nb.lam == 1)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("alpha", [0, 0.0, -1.0, float("nan"), float("inf"), True])
def test_bad_alpha(alpha):
    x, y = _batch(4)
    with pytest.raises(ValueError, match="alpha"):
        mixup(x, y, generator=_gen(), alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        sample_lambda(alpha, 3, generator=_gen())


def test_bad_inputs_name_the_argument():
    x, y = _batch(4)
    with pytest.raises(ValueError, match="batch size"):
        mixup(x, y[:3], generator=_gen())
    with pytest.raises(ValueError, match="batch size"):
        sample_pairing(x[:2], y, generator=_gen())
    with pytest.raises(ValueError, match="x must have a non-empty batch"):
        mixup(x[:0], y[:0], generator=_gen())
    with pytest.raises(TypeError, match="x must be a floating"):
        mixup(torch.ones(4, 3, dtype=torch.uint8), y, generator=_gen())
    with pytest.raises(TypeError, match="y must be"):
        mixup(x, y.float(), generator=_gen())
    with pytest.raises(TypeError, match="generator"):
        sample_pairing(x, y, generator=0)
    with pytest.raises(ValueError, match="size"):
        sample_lambda(0.5, -1, generator=_gen())
    with pytest.raises(TypeError, match="dtype"):
        sample_lambda(0.5, 2, generator=_gen(), dtype=torch.int64)
    with pytest.raises(ValueError, match="index"):
        mix_inputs(x, torch.arange(3), 0.5)
    with pytest.raises(ValueError, match="lam"):
        mix_inputs(x, torch.arange(4), torch.ones(3))
    with pytest.raises(ValueError, match="lam"):
        linearity_gap(lambda z: z, x, x, torch.ones(2))
    with pytest.raises(ValueError, match="x_a and x_b"):
        linearity_gap(lambda z: z, x, x[:2], 0.5)
    with pytest.raises(ValueError, match="num_classes"):
        soft_targets(y, y, 0.5, 0)
    with pytest.raises(ValueError, match="y_a and y_b"):
        soft_targets(y, y[:2], 0.5, 4)
    with pytest.raises(ValueError, match="logits"):
        mixed_cross_entropy(torch.zeros(4), y, y, 0.5)
    with pytest.raises(ValueError, match="targets must have the shape of logits"):
        soft_cross_entropy(torch.zeros(4, 3), torch.zeros(4, 2))


# ----------------------------------------------------------------------------- peer: kornia


def test_parity_with_kornia_random_mixup():
    """kornia weights the partner by its lambda: out = (1 - l) x + l x[pairs]; ours weights the row itself."""
    torch.manual_seed(0)
    x = torch.rand(8, 1, 5, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (8,))
    aug = KA.RandomMixUpV2(data_keys=["input", "class"])
    out, lab = aug(x, y)
    pairs, lam_k = aug._params["mixup_pairs"], aug._params["mixup_lambdas"].to(torch.float64)
    ours = mix_inputs(x, pairs, 1 - lam_k)
    torch.testing.assert_close(ours, out, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(lab[:, 1].long(), y[pairs])
    logits = torch.randn(8, 3, dtype=torch.float64)
    # kornia's documented loss_mixup
    ref = ((1 - lab[:, 2]) * F.cross_entropy(logits, lab[:, 0].long(), reduction="none")
           + lab[:, 2] * F.cross_entropy(logits, lab[:, 1].long(), reduction="none")).mean()
    torch.testing.assert_close(mixed_cross_entropy(logits, y, y[pairs], 1 - lam_k), ref.to(torch.float64),
                               rtol=1e-6, atol=1e-7)


def test_kornia_and_su_agree_on_the_lambda_distribution():
    """Both kornia's default and Su's suggestion draw lambda uniformly on [0, 1]."""
    torch.manual_seed(1)
    aug = KA.RandomMixUpV2(data_keys=["input", "class"])
    lams = []
    for _ in range(40):
        aug(torch.rand(256, 1, 2, 2), torch.zeros(256, dtype=torch.int64))
        lams.append(aug._params["mixup_lambdas"].double())
    ours = sample_lambda(1.0, 10_240, generator=_gen(2), dtype=torch.float64)
    assert stats.ks_2samp(torch.cat(lams).numpy(), ours.numpy()).pvalue > 1e-3

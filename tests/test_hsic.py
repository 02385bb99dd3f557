"""Tests of kexue.hsic: estimators against explicit references, tests' calibration, peers' parity."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from kexue import hsic as H
from kexue.experiments.hsic import make_dependence

F64 = torch.float64

# hyppo and causal-learn import deprecated scipy/numba paths; their warnings are not ours.
peer = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")


def _sample(n: int, p: int = 2, seed: int = 0, dependent: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g, dtype=F64)
    y = torch.randn(n, 1, generator=g, dtype=F64)
    if dependent:
        y = x[:, :1] ** 2 + 0.3 * y
    return x, y


def _grams(n: int, seed: int = 0, dependent: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _sample(n, seed=seed, dependent=dependent)
    return H.gaussian_kernel(x), H.gaussian_kernel(y)


# ---------------------------------------------------------------------------------------------- kernels


def test_sq_distances_match_cdist_and_have_zero_diagonal():
    x, _ = _sample(20, p=3)
    d2 = H.sq_distances(x)
    assert torch.allclose(d2, torch.cdist(x, x) ** 2, atol=1e-12)
    assert torch.equal(d2.diagonal(), torch.zeros(20, dtype=F64))


def test_gaussian_kernel_convention_and_su_mapping():
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=F64)
    K = H.gaussian_kernel(x, sigma=2.0)
    assert K[0, 1].item() == pytest.approx(math.exp(-1 / 8))  # exp(-d^2 / (2 sigma^2))
    assert K[0, 2].item() == pytest.approx(math.exp(-9 / 8))
    su = H.gaussian_kernel(x, sigma=1 / math.sqrt(2))  # Su's exp(-(a-b)^2)
    assert su[1, 2].item() == pytest.approx(math.exp(-4.0))
    assert torch.allclose(H.gaussian_kernel(x, 1.0, scale=3.0), H.gaussian_kernel(x, 3.0))


def test_median_bandwidth_conventions():
    x = torch.tensor([0.0, 1.0, 3.0, 7.0], dtype=F64)
    d = [1, 3, 7, 2, 6, 4]
    assert H.median_bandwidth(x) == pytest.approx(float(np.median(d)))
    # zeros of tied data are skipped, constant data fall back to 1
    assert H.median_bandwidth(torch.tensor([0.0, 0.0, 0.0, 2.0], dtype=F64)) == pytest.approx(2.0)
    assert H.median_bandwidth(torch.ones(5, dtype=F64)) == 1.0
    # translation and permutation invariant, scales linearly
    x2 = torch.randn(30, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    m = H.median_bandwidth(x2)
    assert H.median_bandwidth(3.0 * x2[torch.randperm(30)] + 5.0) == pytest.approx(3 * m)


@peer
def test_median_bandwidth_matches_hyppo_and_causal_learn_up_to_their_conventions():
    from causallearn.utils.KCI.GaussianKernel import GaussianKernel
    from hyppo.tools import compute_kern

    x, y = _sample(60, p=2)
    s = H.median_bandwidth(x)
    kx, _ = compute_kern(x.numpy(), y.numpy())  # hyppo: gamma = 1 / (2 median^2)
    assert np.allclose(kx, H.gaussian_kernel(x).numpy(), atol=1e-12)
    gk = GaussianKernel()
    gk.set_width_median(x.numpy())  # causal-learn: k = exp(-d^2 / (2 (sqrt2 median)^2))
    assert np.allclose(gk.kernel(x.numpy()), H.gaussian_kernel(x, s * math.sqrt(2)).numpy(), atol=1e-12)


def test_linear_and_delta_kernels():
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=F64)
    assert torch.equal(H.linear_kernel(x), x @ x.T)
    D = H.delta_kernel(torch.tensor([0, 1, 0]))
    assert torch.equal(D, torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]], dtype=F64))
    assert torch.equal(H.gram(torch.tensor([2, 2]), "delta"), torch.ones(2, 2, dtype=F64))


def test_kernel_bad_inputs():
    with pytest.raises(ValueError, match="sigma"):
        H.gaussian_kernel(torch.randn(4, 1), sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        H.gaussian_kernel(torch.randn(4, 1), sigma="mean")
    with pytest.raises(ValueError, match="scale"):
        H.gaussian_kernel(torch.randn(4, 1), sigma=1.0, scale=-1.0)
    with pytest.raises(TypeError, match="x"):
        H.gaussian_kernel(torch.arange(4))
    with pytest.raises(ValueError, match="x"):
        H.linear_kernel(torch.randn(2, 2, 2))
    with pytest.raises(ValueError, match="x"):
        H.gaussian_kernel(torch.tensor([[float("nan")], [0.0]]))
    with pytest.raises(ValueError, match="kernel"):
        H.gram(torch.randn(4, 1), "laplace")
    with pytest.raises(ValueError, match="labels"):
        H.delta_kernel(torch.zeros(2, 2))


# ---------------------------------------------------------------------------------------------- estimators


@pytest.mark.parametrize("estimator", sorted(H.ESTIMATORS))
@pytest.mark.parametrize("n", [4, 7, 50, 301])
@pytest.mark.parametrize("dependent", [False, True])
def test_fast_estimators_equal_explicit_centring_reference(estimator, n, dependent):
    K, L = _grams(n, seed=n, dependent=dependent)
    fast, ref = H.hsic(K, L, estimator), H.hsic_reference(K, L, estimator)
    assert fast.dtype == F64
    assert fast.item() == pytest.approx(ref.item(), rel=1e-10, abs=1e-15)


def test_biased_three_term_expansion_and_article_scaling():
    K, L = _grams(40, dependent=True)
    n = 40
    three = (K * L).mean() - 2 * (K.mean(1) * L.mean(1)).mean() + K.mean() * L.mean()
    assert H.hsic_biased(K, L).item() == pytest.approx(three.item(), rel=1e-12)
    assert H.hsic_su(K, L).item() == pytest.approx(H.hsic_biased(K, L).item() * n**2 / (n - 1) ** 2, rel=1e-12)


def _u_statistic_bruteforce(K: torch.Tensor, L: torch.Tensor) -> float:
    """Song et al.'s U-statistic from its definition: average of h over all ordered 4-tuples of distinct indices."""
    n = K.shape[0]
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
        count += 1
    return float(total) / count


@pytest.mark.parametrize("n", [4, 5, 7])
def test_unbiased_equals_u_statistic_definition(n):
    K, L = _grams(n, seed=n + 10, dependent=True)
    assert H.hsic_unbiased(K, L).item() == pytest.approx(_u_statistic_bruteforce(K, L), rel=1e-10, abs=1e-14)


def test_linear_kernel_hsic_is_squared_cross_covariance():
    x, y = _sample(30, p=3, dependent=True)
    xc, yc = x - x.mean(0), y - y.mean(0)
    cross = (xc.T @ yc / 30).pow(2).sum()
    assert H.hsic_biased(H.linear_kernel(x), H.linear_kernel(y)).item() == pytest.approx(cross.item(), rel=1e-10)


@pytest.mark.parametrize("estimator", sorted(H.ESTIMATORS))
def test_gradients_match_reference_autograd(estimator):
    x, y = _sample(12, dependent=True)
    grads = []
    for f in (H.hsic, H.hsic_reference):
        xr = x.clone().requires_grad_(True)
        f(H.gaussian_kernel(xr, 1.0), H.gaussian_kernel(y, 1.0), estimator).backward()
        grads.append(xr.grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-8, atol=1e-12)
    xr = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: H.hsic(H.gaussian_kernel(a, 1.0), H.linear_kernel(y), estimator), (xr,))


def test_float32_keeps_precision_at_large_n():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2000, 1, generator=g), torch.randn(2000, 1, generator=g)
    K, L = H.gaussian_kernel(a, 1.0), H.gaussian_kernel(b, 1.0)
    for est in ("biased", "unbiased"):
        lo, hi = H.hsic(K, L, est), H.hsic(K.double(), L.double(), est)
        assert lo.dtype == torch.float32
        assert abs(lo.item() - hi.item()) < 1e-3 * abs(hi.item()) + 1e-9


_DRAWS = np.random.default_rng(2026)
INVARIANCE_CASES = [
    (int(_DRAWS.integers(5, 31)), int(_DRAWS.integers(0, 10_000)), float(np.exp(_DRAWS.uniform(-2.3, 2.3))))
    for _ in range(20)
]


# Property test over random draws (plain parametrisation: hypothesis leaves a .hypothesis/ directory in the
# project root, which the suite's collection then trips over).
@pytest.mark.parametrize(("n", "seed", "scale"), INVARIANCE_CASES)
def test_invariances(n, seed, scale):
    x, y = _sample(n, seed=seed, dependent=seed % 2 == 0)
    K, L = H.gaussian_kernel(x), H.gaussian_kernel(y)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for est in H.ESTIMATORS:
        base = H.hsic(K, L, est).item()
        # permuting the pairs jointly (rows and columns of both K and L) changes nothing
        assert H.hsic(K[perm][:, perm], L[perm][:, perm], est).item() == pytest.approx(base, rel=1e-9, abs=1e-14)
        # symmetric in its arguments; bilinear in the kernel scale
        assert H.hsic(L, K, est).item() == pytest.approx(base, rel=1e-9, abs=1e-14)
        assert H.hsic(scale * K, L, est).item() == pytest.approx(scale * base, rel=1e-9, abs=1e-14)
    # the median bandwidth makes the Gaussian HSIC invariant to rescaling the data
    assert H.hsic(H.gaussian_kernel(scale * x), L).item() == pytest.approx(H.hsic(K, L).item(), rel=1e-8, abs=1e-14)
    # biased HSIC is nonnegative for PSD kernels; normalised lies in [0, 1]
    assert H.hsic_biased(K, L).item() >= -1e-15
    assert -1e-12 <= H.normalized_hsic(K, L).item() <= 1 + 1e-12


def test_unbiased_mean_is_zero_under_independence_and_biased_is_not():
    n, reps = 30, 400
    vals = {e: [] for e in H.ESTIMATORS}
    for s in range(reps):
        x, y = _sample(n, p=1, seed=1000 + s)
        K, L = H.gaussian_kernel(x, 1 / math.sqrt(2)), H.gaussian_kernel(y, 1 / math.sqrt(2))
        for e in H.ESTIMATORS:
            vals[e].append(H.hsic(K, L, e).item())
    for e, v in vals.items():
        v = np.asarray(v)
        se = v.std(ddof=1) / math.sqrt(reps)
        if e == "unbiased":
            assert abs(v.mean()) < 4 * se
        else:
            assert v.mean() > 10 * se  # the article's "unbiased" estimator is biased upwards


def test_estimator_bad_inputs():
    K, L = _grams(6)
    with pytest.raises(ValueError, match="estimator"):
        H.hsic(K, L, "debiased")
    with pytest.raises(ValueError, match="same shape"):
        H.hsic(K, L[:5, :5])
    with pytest.raises(ValueError, match="square"):
        H.hsic(K[:, :5], L[:, :5])
    with pytest.raises(ValueError, match="n >= 4"):
        H.hsic(K[:3, :3], L[:3, :3], "unbiased")
    with pytest.raises(ValueError, match="n >= 2"):
        H.hsic(K[:1, :1], L[:1, :1], "su")
    with pytest.raises(TypeError, match="dtype"):
        H.hsic(K, L.float())
    with pytest.raises(TypeError, match="K"):
        H.hsic(K.numpy(), L)
    with pytest.raises(TypeError, match="L"):
        H.hsic(K, torch.ones(6, 6, dtype=torch.int64))


def test_degenerate_inputs():
    one = torch.ones(1, 1, dtype=F64)
    assert H.hsic_biased(one, one).item() == 0.0  # a single sample carries no dependence
    const = H.gaussian_kernel(torch.zeros(8, 1, dtype=F64))
    _, L = _grams(8)
    for e in H.ESTIMATORS:
        assert H.hsic(const, L, e).item() == pytest.approx(0.0, abs=1e-14)
    assert H.normalized_hsic(const, L).item() == 0.0
    zero = torch.zeros(8, 8, dtype=F64)
    assert H.hsic(zero, L).item() == 0.0
    res = H.gamma_test(const, L)
    assert res.p_value == 1.0
    res = H.permutation_test(const, L, n_permutations=20, generator=torch.Generator().manual_seed(0))
    assert res.p_value == 1.0


def test_normalized_hsic_bounds_and_linear_cka_is_rv_coefficient():
    K, L = _grams(40, dependent=True)
    assert H.normalized_hsic(K, K).item() == pytest.approx(1.0)
    v = H.normalized_hsic(K, L).item()
    assert 0 < v < 1
    x, y = _sample(40, p=3, dependent=True)
    xc, yc = x - x.mean(0), y - y.mean(0)
    sxy, sxx, syy = xc.T @ yc, xc.T @ xc, yc.T @ yc
    rv = (sxy.pow(2).sum() / torch.sqrt(sxx.pow(2).sum() * syy.pow(2).sum())).item()
    assert H.normalized_hsic(H.linear_kernel(x), H.linear_kernel(y)).item() == pytest.approx(rv, rel=1e-10)


def test_normalized_cca_matches_its_explicit_formula():
    K, L = _grams(20, dependent=True)
    n, eps = 20, 1e-3
    Hm = torch.eye(n, dtype=F64) - 1.0 / n
    R = [M @ Hm @ torch.linalg.inv(M @ Hm + eps * n * torch.eye(n, dtype=F64)) for M in (K, L)]
    expected = (R[0] * R[1].T).sum()
    assert H.hsic_normalized_cca(K, L, eps=eps).item() == pytest.approx(expected.item(), rel=1e-8)
    assert torch.allclose(H.cca_operator(K, eps=eps), R[0], atol=1e-10)
    assert H.hsic_normalized_cca(K, L, eps=eps).item() == pytest.approx(torch.trace(R[0] @ R[1]).item(), rel=1e-8)
    with pytest.raises(ValueError, match="eps"):
        H.hsic_normalized_cca(K, L, eps=0.0)
    with pytest.raises(ValueError, match="square"):
        H.cca_operator(K[:, :5])


def test_cca_self_value_counts_the_directions_the_kernel_resolves():
    # A delta kernel on c classes: the centred kernel has rank c - 1, so tr(R R) -> c - 1 as eps -> 0.
    labels = torch.arange(60) % 4
    Ky = H.delta_kernel(labels)
    assert H.hsic_normalized_cca(Ky, Ky, eps=1e-8).item() == pytest.approx(3.0, rel=1e-5)
    # the eigenvalues of R are lambda / (lambda + eps n) for the eigenvalues lambda of K H
    K, _ = _grams(30)
    n, eps = 30, 1e-2
    lam = torch.linalg.eigvalsh(K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean())
    expected = (lam.clamp_min(0) / (lam.clamp_min(0) + eps * n)).pow(2).sum()
    assert H.hsic_normalized_cca(K, K, eps=eps).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("nhsic", ["cka", "cca"])
def test_bottleneck_loss_cache_gives_the_same_values_and_gradients(nhsic):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(24, 5, generator=g, dtype=F64)
    y = torch.randint(0, 3, (24,), generator=g)
    Kx, Ky = H.gaussian_kernel(x), H.delta_kernel(y)
    w = torch.randn(5, 4, generator=g, dtype=F64, requires_grad=True)
    cache: dict = {}
    grads, values = [], []
    for use_cache in (False, True, True):  # the second cached call reuses the operators of the first
        z = torch.tanh(x @ w)
        loss, hx, hy = H.bottleneck_loss(z, Kx, Ky, beta=3.0, nhsic=nhsic, cache=cache if use_cache else None)
        (grad,) = torch.autograd.grad(loss, w)
        values.append((loss.item(), hx.item(), hy.item()))
        grads.append(grad)
    assert values[0] == pytest.approx(values[1], rel=1e-12) and values[1] == pytest.approx(values[2], rel=1e-12)
    assert torch.allclose(grads[0], grads[2], rtol=1e-10, atol=1e-14)
    assert set(cache) == {f"{nhsic}_x", f"{nhsic}_y"}
    with pytest.raises(ValueError, match=r"Kx must be the \(n, n\) = \(10, 10\) Gram matrix of z's batch"):
        H.bottleneck_loss(torch.tanh(x[:10] @ w), Kx, Ky, beta=1.0, nhsic=nhsic)
    with pytest.raises(ValueError, match="cache holds the matrices of a batch of 24 examples"):
        H.bottleneck_loss(torch.tanh(x[:10] @ w), Kx[:10, :10], Ky[:10, :10], beta=1.0, nhsic=nhsic, cache=cache)


# ---------------------------------------------------------------------------------------------- tests


def test_gamma_test_matches_gretton_formulae_written_out():
    from scipy.stats import gamma

    K, L = _grams(25, dependent=True)
    n = 25
    Hm = torch.eye(n, dtype=F64) - 1.0 / n
    Kc, Lc = Hm @ K @ Hm, Hm @ L @ Hm
    stat = (Kc * Lc).sum() / n  # testStat of hsicTestGamma
    v = (Kc * Lc / 6) ** 2
    var = (v.sum() - v.trace()) / n / (n - 1) * 72 * (n - 4) * (n - 5) / n / (n - 1) / (n - 2) / (n - 3)
    mux = (K.sum() - K.trace()) / n / (n - 1)
    muy = (L.sum() - L.trace()) / n / (n - 1)
    mean = (1 + mux * muy - mux - muy) / n
    al, bet = mean**2 / var, var * n / mean
    res = H.gamma_test(K, L)
    assert res.statistic == pytest.approx(stat.item() / n, rel=1e-12)
    assert res.p_value == pytest.approx(gamma.sf(stat.item(), al.item(), scale=bet.item()), rel=1e-9)


def test_gamma_test_refuses_kernels_without_unit_diagonal():
    x, y = _sample(20)
    with pytest.raises(ValueError, match="kernel_x='linear' does not fit the gamma test"):
        H.hsic_test(x, y, "gamma", kernel_x="linear")
    K, L = H.linear_kernel(x), H.gaussian_kernel(y)
    with pytest.raises(ValueError, match="k\\(x, x\\) = 1"):
        H.gamma_test(K, L)


def test_permutation_test_matches_a_loop_over_permutations():
    K, L = _grams(15, dependent=True)
    g = torch.Generator().manual_seed(5)
    res = H.permutation_test(K, L, n_permutations=50, generator=g)
    perms = torch.argsort(torch.rand(50, 15, generator=torch.Generator().manual_seed(5)), dim=1)
    null = [H.hsic_reference(K, L[p][:, p]).item() for p in perms]
    assert res.statistic == pytest.approx(H.hsic_reference(K, L).item(), rel=1e-12)
    expected = (1 + sum(v >= res.statistic * (1 - 1e-12) for v in null)) / 51
    assert res.p_value == pytest.approx(expected)


def test_p_values_roughly_uniform_under_independence_and_small_under_dependence():
    gen = torch.Generator().manual_seed(0)
    p_gamma, p_perm = [], []
    for s in range(100):
        x, y = make_dependence("independent", 40, seed=s)
        K, L = H.gaussian_kernel(x), H.gaussian_kernel(y)
        p_gamma.append(H.gamma_test(K, L).p_value)
        p_perm.append(H.permutation_test(K, L, n_permutations=49, generator=gen).p_value)
    for p in (np.asarray(p_gamma), np.asarray(p_perm)):
        # binomial(100, 0.05): mean 5, sd 2.2; generous bounds, robust to the gamma test being conservative
        assert (p < 0.05).sum() <= 13
        assert 0.35 < p.mean() < 0.65  # uniform: mean 0.5, standard error 0.03
    for kind in ("parabola", "circle"):
        x, y = make_dependence(kind, 150, seed=1)
        assert H.hsic_test(x, y, "gamma").p_value < 1e-4
        assert H.hsic_test(x, y, "permutation", n_permutations=99, generator=gen).p_value == 1 / 100


def test_linear_kernel_misses_the_parabola_the_gaussian_kernel_finds():
    gen = torch.Generator().manual_seed(0)
    rejected = {"linear": 0, "gaussian": 0}
    for seed in range(20):
        x, y = make_dependence("parabola", 100, seed=seed, noise=0.05)
        for k in rejected:
            res = H.hsic_test(x, y, "permutation", kernel_x=k, kernel_y=k, n_permutations=99, generator=gen)
            rejected[k] += res.p_value < 0.05
    assert rejected["gaussian"] == 20
    assert rejected["linear"] <= 12  # cov(x, x^2) = 0: only the permutation null's mis-calibration rejects


def test_hsic_test_bad_inputs():
    x, y = _sample(10)
    with pytest.raises(ValueError, match="method"):
        H.hsic_test(x, y, "bootstrap")
    with pytest.raises(ValueError, match="rows"):
        H.hsic_test(x, y[:9])
    with pytest.raises(ValueError, match="n_permutations"):
        H.hsic_test(x, y, n_permutations=0)
    with pytest.raises(ValueError, match="n >= 6"):
        H.hsic_test(x[:5], y[:5], "gamma")


# ---------------------------------------------------------------------------------------------- peers


@peer
def test_parity_with_causal_learn_kci_statistic():
    from causallearn.utils.KCI.KCI import KCI_UInd
    from scipy.stats import zscore

    x, y = _sample(80, p=2, dependent=True)
    _, stat = KCI_UInd(est_width="manual", kwidthx=0.8, kwidthy=1.3).compute_pvalue(x.numpy(), y.numpy())
    xz = torch.as_tensor(zscore(x.numpy(), ddof=1, axis=0))  # causal-learn standardises first
    yz = torch.as_tensor(zscore(y.numpy(), ddof=1, axis=0))
    ours = 80**2 * H.hsic_biased(H.gaussian_kernel(xz, 0.8), H.gaussian_kernel(yz, 1.3))
    assert stat == pytest.approx(ours.item(), rel=1e-10)  # its statistic is n^2 HSIC_b = sum(HKH o HLH)


@peer
@pytest.mark.parametrize("dependent", [False, True])
def test_parity_with_hyppo_hsic_statistic(dependent):
    from hyppo.independence import Hsic

    x, y = _sample(70, p=2, dependent=dependent)
    s = H.median_bandwidth(x)  # hyppo 0.5.2 uses x's median bandwidth for both samples
    K, L = H.gaussian_kernel(x, s), H.gaussian_kernel(y, s)
    kw = {"gamma": 1.0 / (2 * s * s)}
    unbiased = Hsic(bias=False, **kw).statistic(x.numpy(), y.numpy())
    assert unbiased == pytest.approx(H.normalized_hsic(K, L, "unbiased").item(), rel=1e-9, abs=1e-12)
    biased = Hsic(bias=True, **kw).statistic(x.numpy(), y.numpy())  # its biased statistic is sqrt(CKA)
    assert biased == pytest.approx(math.sqrt(H.normalized_hsic(K, L, "biased").item()), rel=1e-9)


@peer
def test_parity_of_the_tiled_path_with_hyppo():
    from hyppo.independence import Hsic

    x, y = _sample(90, p=2, dependent=True)
    s = H.median_bandwidth(x)
    theirs = Hsic(bias=False, gamma=1.0 / (2 * s * s)).statistic(x.numpy(), y.numpy())
    ours = H.hsic_gaussian(x, y, s, s, estimator="unbiased", normalized=True, block_rows=7)
    assert ours.item() == pytest.approx(theirs, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------------------------- tiled HSIC


@pytest.mark.parametrize("estimator", sorted(H.ESTIMATORS))
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize(("n", "block_rows"), [(4, None), (5, 1), (37, 3), (37, 37), (37, 100), (300, None)])
def test_tiled_hsic_equals_the_gram_matrix_path(estimator, normalized, n, block_rows):
    x, y = _sample(n, p=3, seed=n, dependent=True)
    sx, sy = H.median_bandwidth(x), 0.7 * H.median_bandwidth(y)
    K, L = H.gaussian_kernel(x, sx), H.gaussian_kernel(y, sy)
    expected = (H.normalized_hsic if normalized else H.hsic)(K, L, estimator).item()
    got = H.hsic_gaussian(x, y, sx, sy, estimator=estimator, normalized=normalized, block_rows=block_rows)
    assert got.dtype == F64 and got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-10, abs=1e-13)


def test_tiled_hsic_median_default_and_symmetry():
    x, y = _sample(60, seed=3, dependent=True)
    default = H.hsic_gaussian(x, y, normalized=True)
    explicit = H.hsic_gaussian(x, y, H.median_bandwidth(x), H.median_bandwidth(y), normalized=True)
    assert default.item() == explicit.item()
    swapped = H.hsic_gaussian(y, x, normalized=True)
    assert swapped.item() == pytest.approx(default.item(), rel=1e-12)
    self_cka = H.hsic_gaussian(x, x, normalized=True)
    assert self_cka.item() == pytest.approx(1.0, rel=1e-12)


def test_tiled_hsic_float32_input_is_computed_in_float64():
    x, y = _sample(400, seed=5, dependent=True)
    s = H.median_bandwidth(x)
    exact = H.hsic(H.gaussian_kernel(x, s), H.gaussian_kernel(y, s), "unbiased").item()
    got = H.hsic_gaussian(x.float(), y.float(), s, s, estimator="unbiased")
    assert got.dtype == torch.float32
    # only the float32 rounding of the points and of the result remain
    assert got.item() == pytest.approx(exact, rel=1e-5)


def test_tiled_hsic_falls_back_to_the_differentiable_path_for_gradients():
    x, y = _sample(30, seed=2, dependent=True)
    x = x.clone().requires_grad_(True)
    value = H.hsic_gaussian(x, y, 1.0, 1.0, estimator="unbiased", normalized=True)
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        assert value.item() == pytest.approx(H.hsic_gaussian(x, y, 1.0, 1.0, estimator="unbiased", normalized=True).item(), rel=1e-10)


@pytest.mark.parametrize("estimator", sorted(H.ESTIMATORS))
def test_constant_data_gives_zero_not_rounding_noise(estimator):
    # the exact self-term is 0; without a tolerance, CKA of constant data came out as 1.0, -1.0 or 1e-8
    for n in (5, 7, 100, 1001):
        const = torch.full((n, 2), 3.7, dtype=F64)
        y = _sample(n, seed=n)[1]
        assert H.hsic_gaussian(const, y, estimator=estimator, normalized=True).item() == 0.0
        assert H.hsic_gaussian(const, const, estimator=estimator, normalized=True).item() == 0.0
        Kc = H.gaussian_kernel(const)
        assert H.normalized_hsic(Kc, H.gaussian_kernel(y), estimator).item() == 0.0
        assert H.normalized_hsic(Kc.float(), Kc.float(), estimator).item() == 0.0
    one = torch.ones(1, 2, dtype=F64)
    assert H.hsic_gaussian(one, one).item() == 0.0 and H.hsic_gaussian(one, one, normalized=True).item() == 0.0


def test_tiled_hsic_bad_inputs():
    x, y = _sample(10)
    cases = [
        ((x, y[:9]), {}, ValueError, "same number of points"),
        ((x, y), {"estimator": "nope"}, ValueError, "estimator"),
        ((x[:3], y[:3]), {"estimator": "unbiased"}, ValueError, "n >= 4"),
        ((x, y, 0.0), {}, ValueError, "sigma_x"),
        ((x, y, 1.0, -1.0), {}, ValueError, "sigma_y"),
        ((x, y), {"block_rows": 0}, ValueError, "block_rows"),
        ((x.long(), y), {}, TypeError, "x must be a floating"),
        ((x, y.reshape(2, 5, 1)), {}, ValueError, "y must have 1 or 2 dimensions"),
        ((x, torch.full((10, 1), math.nan, dtype=F64)), {}, ValueError, "y must be finite, got 10 NaN"),
    ]
    for args, kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            H.hsic_gaussian(*args, **kwargs)

"""Tests of kexue.lipschitz: equations in float64, properties, parity with PyTorch and deel-torchlip.

The page's experiment helpers (kexue.experiments.lipschitz) are tested in test_lipschitz_experiments.py.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from deel.torchlip.normalizers import spectral_normalization as deel_spectral_normalization
from deel.torchlip.utils.lconv_norm import compute_lconv_coef
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from kexue.data import make_moons
from kexue.experiments.lipschitz import matrix_with_spectrum, sharpening_matrix, shifted_gaussian
from kexue.experiments.training import seeded_mlp
from kexue.lipschitz import (
    PENALTIES,
    SpectralNorm,
    clip_frobenius_,
    clip_weights_,
    conv_matrix,
    conv_operator_norm,
    conv_operator_norm_fft,
    exact_w1,
    gradient_norms,
    gradient_penalty,
    jacobian_norms,
    lipschitz_upper_bound,
    reshaped_kernel_norm,
    spectral_norm_estimate,
    spectral_norm_exact,
    spectral_normalization,
    spectral_normalize,
    spectral_normalize_reference,
    spectral_penalty,
    spectral_project_,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ power iteration


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (40, 40), (1, 7), (7, 1)])
def test_power_iteration_matches_svd_with_a_gap(shape):
    W = matrix_with_spectrum([4.0, 2.0] + [1.0] * (min(shape) - 2), shape, seed=1) if min(shape) >= 2 else (
        torch.randn(shape, generator=gen(), dtype=F64)
    )
    r = spectral_norm_estimate(W, n_iter=60, generator=gen(2))
    exact = torch.linalg.svdvals(W)[0]
    assert torch.allclose(r.sigma, exact, rtol=1e-12)
    # u^T W v is the estimate, u and v are unit vectors, and (u, v) is the top singular pair
    assert torch.allclose(r.u @ W @ r.v, r.sigma, rtol=1e-12)
    assert torch.allclose(r.u.norm(), torch.tensor(1.0, dtype=F64))
    assert torch.allclose(W @ r.v, r.sigma * r.u, atol=1e-10)
    assert torch.allclose(W.mT @ r.u, r.sigma * r.v, atol=1e-10)


def _random_shapes(count: int, low: int, high: int) -> list[tuple[int, int, int]]:
    """Seeded random (m, n, seed) triples: property tests without a hypothesis database on disk."""
    g = gen(12345 + low)
    return [(int(a), int(b), i) for i, (a, b) in enumerate(torch.randint(low, high + 1, (count, 2), generator=g))]


@pytest.mark.parametrize("m, n, seed", _random_shapes(25, 2, 12))
def test_estimate_never_exceeds_the_norm_and_increases(m, n, seed):
    W = torch.randn(m, n, generator=gen(seed), dtype=F64)
    hist = spectral_norm_estimate(W, n_iter=15, generator=gen(seed + 1)).history
    exact = spectral_norm_exact(W)
    assert (hist <= exact * (1 + 1e-12)).all()
    assert (hist[1:] >= hist[:-1] * (1 - 1e-12)).all()  # the power method's Rayleigh quotient is monotone


def test_convergence_rates_vector_squared_estimate_fourth_power():
    W = matrix_with_spectrum([10.0, 5.0, 1.0], (30, 20), seed=3)
    v1 = torch.linalg.svd(W).Vh[0]
    err, angle = [], []
    for k in range(4, 11):
        r = spectral_norm_estimate(W, n_iter=k, generator=gen())
        err.append((10.0 - r.sigma.item()) / 10.0)
        angle.append(math.sqrt(max(0.0, 1 - (r.v @ v1).item() ** 2)))
    for a, b in itertools.pairwise(err):
        assert b / a == pytest.approx(0.5**4, rel=0.02)  # (sigma2/sigma1)^4 per iteration
    for a, b in itertools.pairwise(angle):
        assert b / a == pytest.approx(0.5**2, rel=0.02)  # (sigma2/sigma1)^2 per iteration


def test_all_ones_start_fails_on_the_sharpening_matrix_and_random_start_does_not():
    W = sharpening_matrix(64)
    assert spectral_norm_exact(W).item() == pytest.approx(5.0)
    assert (W.sum(dim=1) == 1).all()  # all-ones is an eigenvector with eigenvalue 1
    stuck = spectral_norm_estimate(W, n_iter=500, u0="ones")
    assert stuck.sigma.item() == 1.0  # exactly: every number in the iteration is representable
    assert spectral_norm_estimate(W, n_iter=300, generator=gen()).sigma.item() == pytest.approx(5.0, rel=1e-3)


def test_explicit_start_vector_and_zero_matrix():
    W = torch.diag(torch.tensor([3.0, 1.0], dtype=F64))
    r = spectral_norm_estimate(W, 1, u0=torch.tensor([0.0, 1.0], dtype=F64))  # orthogonal to the top vector
    assert r.sigma.item() == pytest.approx(1.0)
    z = spectral_norm_estimate(torch.zeros(3, 4), 5)
    assert z.sigma.item() == 0.0 and torch.isfinite(z.u).all()


def test_spectral_norm_is_not_the_spectral_radius():
    N = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=F64)
    assert spectral_norm_exact(N).item() == pytest.approx(1.0)
    assert torch.linalg.eigvals(N).abs().max().item() == 0.0
    assert spectral_norm_estimate(N, 3, generator=gen()).sigma.item() == pytest.approx(1.0)


@pytest.mark.parametrize("m, n, seed", _random_shapes(25, 1, 10))
def test_frobenius_bounds_spectral(m, n, seed):
    W = torch.randn(m, n, generator=gen(seed), dtype=F64)
    s2, fro = spectral_norm_exact(W), torch.linalg.matrix_norm(W)
    assert s2 <= fro * (1 + 1e-12)
    assert fro <= math.sqrt(min(m, n)) * s2 * (1 + 1e-12)
    assert torch.allclose(fro.square(), torch.linalg.svdvals(W).square().sum())


# ------------------------------------------------------------------ spectral normalisation step


@pytest.mark.parametrize("n_iter", [0, 1, 3])
def test_fast_step_agrees_with_reference_in_value_and_gradient(n_iter):
    g = gen(4)
    W = torch.randn(7, 5, generator=g, dtype=F64)
    u = torch.nn.functional.normalize(torch.randn(7, generator=g, dtype=F64), dim=0)
    v = torch.nn.functional.normalize(torch.randn(5, generator=g, dtype=F64), dim=0)
    results = []
    for fn in (spectral_normalize, spectral_normalize_reference):
        Wp = W.clone().requires_grad_(True)
        out = fn(Wp, u, v, n_iter)
        out.weight.sin().sum().backward()
        results.append((out, Wp.grad))
    (a, ga), (b, gb) = results
    for x, y in zip(a[:4], b[:4]):
        assert torch.allclose(x, y, rtol=1e-10, atol=1e-12)
    assert torch.allclose(ga, gb, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n_iter", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_one_pass_step_for_large_matrices_agrees_with_reference(n_iter, dtype):
    """Above 8 MiB the iteration reads W once per step (row blocks in cache) and the division writes a
    fresh 2 MiB-page buffer; value, vectors and gradient still agree with the slow reference."""
    g = gen(21)
    # 9.2 and 9.6 MB; 2101 rows = blocks of 952, 952 and 197 rows: the two-halves path and the odd fallback
    rows, cols = (2101, 1100) if dtype == torch.float32 else (1500, 800)
    W = torch.randn(rows, cols, generator=g, dtype=dtype) / math.sqrt(cols)
    u = torch.nn.functional.normalize(torch.randn(rows, generator=g, dtype=dtype), dim=0)
    v = torch.nn.functional.normalize(torch.randn(cols, generator=g, dtype=dtype), dim=0)
    c = torch.randn(rows, cols, generator=g, dtype=dtype)
    results = []
    for fn in (spectral_normalize, spectral_normalize_reference):
        Wp = W.clone().requires_grad_(True)
        out = fn(Wp, u, v, n_iter)
        ((out.weight * c).sum() + out.sigma).backward()
        results.append((out, Wp.grad))
    (a, ga), (b, gb) = results
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)
    torch.testing.assert_close(ga, gb, rtol=10 * tol, atol=10 * tol)
    assert torch.allclose(a.u.norm(), torch.ones((), dtype=dtype)) and torch.allclose(a.v.norm(), torch.ones((), dtype=dtype))


@pytest.mark.parametrize("shape", [(1, 40), (2, 33), (7, 33), (64, 33)])
@pytest.mark.parametrize("block_rows", [1, 2, 3, 100])
def test_one_pass_iteration_in_blocks_of_halves_is_the_plain_iteration(shape, block_rows):
    """Blocks of two halves (one batched product each), an odd last block, one block or many: the
    one-pass iteration gives the plain iteration's sigma and vectors in float64."""
    from kexue.lipschitz import _sigma_step, _sigma_step_one_pass

    g = gen(23)
    W = torch.randn(*shape, generator=g, dtype=F64)
    u = torch.nn.functional.normalize(torch.randn(shape[0], generator=g, dtype=F64), dim=0)
    v = torch.nn.functional.normalize(torch.randn(shape[1], generator=g, dtype=F64), dim=0)
    fast = _sigma_step_one_pass(W, u, v, 2, 1e-12, block_bytes=block_rows * shape[1] * 8)
    plain = _sigma_step(W, u, v, 2, 1e-12)  # small: the two-product path
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shape", [(9, 7), (37, 3, 5, 5), (1, 13)])
def test_blocked_division_follows_the_iteration_blocks_and_divides_exactly(monkeypatch, shape):
    """The large-weight division runs over the one-pass iteration's row blocks (of the matrix view
    ``(shape[0], -1)``), last block first, ragged last block included: bit for bit ``weight / sigma``,
    with the gradients of a division."""
    from kexue import lipschitz

    cols = math.prod(shape[1:])
    monkeypatch.setattr(lipschitz, "_PASS_BLOCK_BYTES", 4 * cols * 8)  # 4 rows of float64 per block
    assert lipschitz._pass_rows(cols, 8) == 4 and lipschitz._pass_rows(cols, 8, 1) == 2
    calls = []
    real_div = torch.div

    def counting_div(a, b, *, out=None):
        calls.append(a.numel())
        return real_div(a, b, out=out)

    W = torch.randn(*shape, generator=gen(31), dtype=F64).requires_grad_(True)
    sigma = torch.tensor(1.7, dtype=F64, requires_grad=True)
    monkeypatch.setattr(torch, "div", counting_div)
    out = lipschitz._Divide.apply(W, sigma, None)
    monkeypatch.setattr(torch, "div", real_div)
    assert calls == [min(4, shape[0] - r) * cols for r in range(0, shape[0], 4)][::-1]  # last block first
    assert torch.equal(out, W.detach() / sigma.detach())
    c = torch.randn(*shape, generator=gen(32), dtype=F64)
    (out * c).sum().backward()
    W2, s2 = W.detach().clone().requires_grad_(True), sigma.detach().clone().requires_grad_(True)
    (W2 / s2 * c).sum().backward()
    torch.testing.assert_close(W.grad, W2.grad, rtol=1e-14, atol=0)
    torch.testing.assert_close(sigma.grad, s2.grad, rtol=1e-12, atol=0)


def test_spectral_norm_module_writes_a_large_output_into_its_last_idle_one():
    """From 32 MiB SpectralNorm reuses the memory of its previous output once nothing holds it; a held
    output, or one autograd saved for backward, is never written again, and every value is the fresh one."""
    import copy

    g = gen(24)
    W = torch.randn(3000, 2900, generator=g) / 50  # 34.8 MB of float32
    module = SpectralNorm(W, warmup=2, generator=gen(1))
    twin = copy.deepcopy(module)  # same vectors; its outputs are all kept alive, so it never reuses memory
    kept, buffers = [], []
    for _ in range(3):
        out = module(W)
        kept.append(twin(W))
        torch.testing.assert_close(out, kept[-1], rtol=0, atol=0)
        buffers.append(module._out._raw)  # the NumPy bytes behind out
        assert out.data_ptr() - buffers[-1].ctypes.data < 64
        del out
    assert buffers[1] is buffers[0] and buffers[2] is buffers[0]  # idle: the same memory written again
    assert len({t.data_ptr() for t in kept}) == 3  # held: never reused
    first = kept[0].clone()
    twin(W)
    torch.testing.assert_close(kept[0], first, rtol=0, atol=0)

    # an output that only autograd still holds (saved by the product for c's gradient)
    Wp = W.clone().requires_grad_(True)
    c = torch.ones_like(W, requires_grad=True)
    out = module(Wp)
    saved_ptr, saved = out.data_ptr(), out.detach().clone()
    loss = (out * c).sum()
    del out
    other = module(W + torch.randn(W.shape, generator=g) / 50)  # a different weight: a different output
    assert other.data_ptr() != saved_ptr and not torch.equal(other, saved)
    loss.backward()
    torch.testing.assert_close(c.grad, saved, rtol=0, atol=0)  # d loss / d c = the saved output, intact
    assert copy.deepcopy(module)._out._raw is None  # copies start without memory


def test_large_weight_division_buffer():
    """From 32 MiB W / sigma is written block by block into a NumPy-allocated buffer: same values and gradients."""
    g = gen(22)
    W = torch.randn(3000, 2900, generator=g) / 50  # 34.8 MB of float32
    u = torch.nn.functional.normalize(torch.randn(3000, generator=g), dim=0)
    v = torch.nn.functional.normalize(torch.randn(2900, generator=g), dim=0)
    Wp = W.clone().requires_grad_(True)
    step = spectral_normalize(Wp, u, v, 1)
    assert step.weight.is_contiguous() and step.weight.data_ptr() % 64 == 0
    assert torch.equal(step.weight, W / step.sigma.detach())
    c = torch.randn(3000, 2900, generator=g)
    (step.weight * c).sum().backward()
    sigma = step.sigma.detach()
    want = c / sigma - (c * W).sum() / sigma**2 * torch.outer(step.u, step.v)
    torch.testing.assert_close(Wp.grad, want, rtol=1e-4, atol=1e-7)


def test_spectral_norm_module_on_a_large_layer_matches_torch():
    """The parametrization takes the one-pass path for a 9 MB weight and still matches PyTorch's."""
    torch.manual_seed(0)
    layer = torch_spectral_norm(nn.Linear(1500, 1600, bias=False))
    ours = spectral_normalization(nn.Linear(1500, 1600, bias=False), generator=gen(1))
    p = ours.parametrizations.weight
    with torch.no_grad():
        p.original.copy_(layer.parametrizations.weight.original)
        p[0].u.copy_(layer.parametrizations.weight[0]._u)
        p[0].v.copy_(layer.parametrizations.weight[0]._v)
    for _ in range(3):
        torch.testing.assert_close(ours.weight, layer.weight, rtol=1e-4, atol=1e-6)
    ours.eval()
    layer.eval()
    torch.testing.assert_close(ours.weight, layer.weight, rtol=1e-4, atol=1e-6)


def test_large_weight_paths_work_under_torch_func():
    """The one-pass iteration and the fresh-buffer division keep vmap and jacrev working (jacobian_norms)."""
    torch.manual_seed(0)
    layer = spectral_normalization(nn.Linear(1500, 1600), generator=gen(2))  # 9.6 MB: one-pass iteration
    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(1600, 1)).eval()
    x = torch.randn(3, 1500, generator=gen(3))
    norms = jacobian_norms(model, x)
    for i in range(3):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xi).sum(), xi)
        assert norms[i].item() == pytest.approx(grad.norm().item(), rel=1e-5)
    g = gen(4)
    W = torch.randn(2, 3000, 2900, generator=g) / 50  # 35 MB each: the division's fresh-buffer path too
    u = torch.nn.functional.normalize(torch.randn(3000, generator=g), dim=0)
    v = torch.nn.functional.normalize(torch.randn(2900, generator=g), dim=0)
    batched = torch.func.vmap(lambda w: spectral_normalize(w, u, v, 1))(W)
    for i in range(2):
        one = spectral_normalize(W[i], u, v, 1)
        torch.testing.assert_close(batched.weight[i], one.weight, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(batched.sigma[i], one.sigma, rtol=1e-5, atol=1e-7)


def test_sigma_gradient_is_u_v_transpose():
    W = matrix_with_spectrum([3.0, 1.0], (4, 3), seed=5).requires_grad_(True)
    r = spectral_norm_estimate(W.detach(), 80, generator=gen())
    step = spectral_normalize(W, r.u, r.v, n_iter=1)
    (grad,) = torch.autograd.grad(step.sigma, W)
    assert torch.allclose(grad, torch.outer(step.u, step.v), atol=1e-12)
    # with converged vectors the estimate is exact and its gradient is the SVD's u1 v1^T
    exact = torch.linalg.matrix_norm(W, ord=2)
    (g_exact,) = torch.autograd.grad(exact, W)
    assert torch.allclose(grad, g_exact, atol=1e-8)


def test_spectral_penalty_value_and_gradient():
    W = matrix_with_spectrum([2.0, 1.0], (3, 3), seed=6).requires_grad_(True)
    r = spectral_norm_estimate(W.detach(), 80, generator=gen())
    step = spectral_normalize(W, r.u, r.v)
    pen = spectral_penalty([step.sigma], lam=0.3)
    assert pen.item() == pytest.approx(0.3 * 4.0)
    (grad,) = torch.autograd.grad(pen, W)
    assert torch.allclose(grad, 2 * 0.3 * 2.0 * torch.outer(step.u, step.v), atol=1e-10)
    assert spectral_penalty([], 1.0).item() == 0.0


def test_spectral_penalty_with_frobenius_is_weight_decay():
    W = torch.randn(4, 5, generator=gen(), dtype=F64)
    assert spectral_penalty([torch.linalg.matrix_norm(W)], 0.1).item() == pytest.approx(0.1 * W.square().sum().item())


# ------------------------------------------------------------------ parametrization vs PyTorch


def _paired(make, **kw):
    torch.manual_seed(0)
    ours, theirs = make(), make()
    theirs.load_state_dict(ours.state_dict())
    torch_spectral_norm(theirs, **kw)
    spectral_normalization(ours, generator=gen(), **kw)
    mine, ref = ours.parametrizations.weight[0], theirs.parametrizations.weight[0]
    mine.u.copy_(ref._u)
    mine.v.copy_(ref._v)
    return ours, theirs


@pytest.mark.parametrize(
    "make",
    [lambda: nn.Linear(12, 7, dtype=F64), lambda: nn.Conv2d(3, 5, 3, dtype=F64),
     lambda: nn.ConvTranspose2d(3, 5, 3, dtype=F64)],
    ids=["linear", "conv", "conv-transpose"],
)
def test_parity_with_torch_parametrization_over_training(make):
    ours, theirs = _paired(make)
    x = torch.randn(4, 12, generator=gen(1), dtype=F64) if isinstance(ours, nn.Linear) else (
        torch.randn(2, 3, 6, 6, generator=gen(1), dtype=F64)
    )
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (ours, theirs)]
    for _ in range(10):
        grads = []
        for m, opt in zip((ours, theirs), opts):
            opt.zero_grad()
            m(x).square().mean().backward()
            grads.append(m.parametrizations.weight.original.grad.clone())
            opt.step()
        assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-12)
        assert torch.allclose(ours.weight, theirs.weight, rtol=1e-9, atol=1e-12)
    mine, ref = ours.parametrizations.weight[0], theirs.parametrizations.weight[0]
    assert torch.allclose(mine.u, ref._u, atol=1e-10) and torch.allclose(mine.v, ref._v, atol=1e-10)
    # eval mode: no update, same output
    ours.eval(), theirs.eval()
    before = mine.u.clone()
    assert torch.allclose(ours.weight, theirs.weight, rtol=1e-9)
    assert torch.equal(mine.u, before)


def test_normalised_layers_have_norm_close_to_one():
    torch.manual_seed(0)
    layer = nn.Linear(50, 30, dtype=F64)
    with torch.no_grad():
        layer.weight.copy_(matrix_with_spectrum([4.0, 3.0, 1.0], (30, 50), seed=9))
    spectral_normalization(layer, generator=gen())
    for _ in range(30):
        layer(torch.zeros(1, 50, dtype=F64))  # each training forward runs one power iteration
    assert spectral_norm_exact(layer.weight.detach()).item() == pytest.approx(1.0, abs=1e-6)
    vec = spectral_normalization(nn.LayerNorm(6, dtype=F64))
    assert torch.linalg.vector_norm(vec.weight).item() == pytest.approx(1.0)


def test_two_forwards_one_backward():
    torch.manual_seed(0)
    critic = nn.Sequential(spectral_normalization(nn.Linear(2, 8)), nn.ReLU(), spectral_normalization(nn.Linear(8, 1)))
    a, b = torch.randn(4, 2), torch.randn(4, 2)
    (critic(a).mean() - critic(b).mean()).backward()  # must not raise an in-place modification error
    assert all(p.grad is not None for p in critic.parameters())


def test_state_dict_round_trip_keeps_buffers():
    torch.manual_seed(0)
    a = spectral_normalization(nn.Linear(5, 4), generator=gen(1))
    b = spectral_normalization(nn.Linear(5, 4), generator=gen(2))
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    assert torch.equal(a.weight, b.weight)


# ------------------------------------------------------------------ deel-torchlip parity


def test_parity_with_deel_torchlip_spectral_normalization():
    W = matrix_with_spectrum([6.0, 2.0, 1.0], (9, 7), seed=7).float()
    _, _, sigma_deel = deel_spectral_normalization(W, None, eps=1e-7, maxiter=200)
    ours = spectral_norm_estimate(W, 100, generator=gen()).sigma
    assert sigma_deel.item() == pytest.approx(ours.item(), rel=1e-5)
    assert ours.item() == pytest.approx(6.0, rel=1e-5)


def test_deel_torchlip_conv_correction_is_an_upper_bound():
    w = torch.randn(4, 3, 3, 3, generator=gen(8), dtype=F64)
    coef = compute_lconv_coef((3, 3), (1, 3, 8, 8), (1, 1), "zeros")
    exact = torch.linalg.svdvals(conv_matrix(w, (8, 8)))[0]
    assert exact <= reshaped_kernel_norm(w) / coef
    assert coef >= 1 / 3.0  # their factor 1 / coef is at most sqrt(kh kw) = 3


# ------------------------------------------------------------------ convolutions


@pytest.mark.parametrize("mode", ["zeros", "circular"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv_norms_bounds_and_dense_reference(mode, k):
    w = torch.randn(3, 2, k, k, generator=gen(k), dtype=F64)
    M = conv_matrix(w, (6, 7), mode)
    assert M.shape == (3 * 42, 2 * 42)
    # the dense matrix really is the convolution
    x = torch.randn(1, 2, 6, 7, generator=gen(), dtype=F64)
    pad = k // 2
    if mode == "zeros":
        y = torch.nn.functional.conv2d(x, w, padding=pad)
    else:
        y = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (pad,) * 4, mode="circular"), w)
    assert torch.allclose(M @ x.flatten(), y.flatten())
    exact = torch.linalg.svdvals(M)[0]
    # the adjoint used by the power iteration is exactly the transposed matrix
    from kexue.lipschitz import _conv_same

    y = torch.randn(1, 3, 6, 7, generator=gen(1), dtype=F64)
    adj = _conv_same(y, w.transpose(0, 1).flip(-2, -1), mode)
    assert torch.allclose(adj.flatten(), M.mT @ y.flatten())
    est = conv_operator_norm(w, (6, 7), mode, n_iter=200, generator=gen())
    assert est <= exact * (1 + 1e-12)
    assert est.item() == pytest.approx(exact.item(), rel=1e-3)  # top singular values can be close
    r = reshaped_kernel_norm(w)
    assert r * (1 - 1e-12) <= exact <= k * r * (1 + 1e-12)
    if mode == "circular":
        assert conv_operator_norm_fft(w, (6, 7)).item() == pytest.approx(exact.item(), rel=1e-10)


def test_all_ones_kernel_attains_the_upper_bound_with_circular_padding_only():
    w = torch.ones(1, 1, 3, 3, dtype=F64)
    assert reshaped_kernel_norm(w).item() == pytest.approx(3.0)
    assert conv_operator_norm_fft(w, (8, 8)).item() == pytest.approx(9.0)
    # circular: the constant image is an exact singular vector (every output pixel sums 9 ones)
    x = torch.ones(1, 1, 8, 8, dtype=F64)
    assert torch.allclose(conv_matrix(w, (8, 8), "circular") @ x.flatten(), 9 * x.flatten())
    # zero padding loses the border: strictly below the bound, approaching it as the image grows
    zero = [torch.linalg.svdvals(conv_matrix(w, (n, n), "zeros"))[0].item() for n in (4, 8, 12)]
    assert all(z < 9.0 - 1e-3 for z in zero)
    assert zero[0] < zero[1] < zero[2]
    assert conv_operator_norm(w, (8, 8), "zeros", n_iter=300, generator=gen()).item() == pytest.approx(zero[1], rel=1e-6)


# ------------------------------------------------------------------ gradient penalty


@pytest.mark.parametrize("kind", sorted(PENALTIES))
@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_gradient_penalty_of_a_linear_critic_has_its_closed_form(kind, scale):
    a = torch.tensor([3.0, 4.0], dtype=F64) * scale / 5  # ||a|| = scale
    critic = lambda x: x @ a + 1.0
    real, fake = torch.randn(10, 2, generator=gen(), dtype=F64), torch.randn(10, 2, generator=gen(1), dtype=F64)
    gp = gradient_penalty(critic, real, fake, lam=10.0, kind=kind, generator=gen())
    expected = 10 * (scale - 1) ** 2 if kind == "two-sided" or scale > 1 else 0.0
    assert gp.item() == pytest.approx(expected, abs=1e-9)


def test_gradient_penalty_uses_interpolates_per_example():
    seen = []

    def critic(x):
        seen.append(x.detach().clone())
        return x.sum(dim=1)

    real, fake = torch.zeros(64, 3, dtype=F64), torch.ones(64, 3, dtype=F64)
    gradient_penalty(critic, real, fake, generator=gen())
    x_hat = seen[0]
    assert torch.allclose(x_hat, x_hat[:, :1].expand_as(x_hat))  # one epsilon per example, shared by coordinates
    assert x_hat[:, 0].unique().numel() == 64 and (x_hat >= 0).all() and (x_hat <= 1).all()


def test_gradient_penalty_is_differentiable_including_zero_gradients():
    torch.manual_seed(0)
    critic = seeded_mlp([2, 16, 1], dtype=F64)
    real, fake = torch.randn(8, 2, generator=gen(), dtype=F64), torch.randn(8, 2, generator=gen(1), dtype=F64)
    gradient_penalty(critic, real, fake, kind="one-sided").backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in critic.parameters())
    assert critic[0].weight.grad is not None
    const = nn.Linear(2, 1, dtype=F64)
    nn.init.zeros_(const.weight)
    gp = gradient_penalty(const, real, fake, lam=2.0)
    assert gp.item() == pytest.approx(2.0)  # ||grad|| = 0 -> (0 - 1)^2
    gp.backward()
    assert torch.isfinite(const.weight.grad).all()


def test_gradient_norms_match_autograd_single_sample():
    a = torch.tensor([[1.0, -2.0]], dtype=F64)
    assert gradient_norms(lambda x: (x @ a.T) ** 2, torch.tensor([[1.0, 1.0]], dtype=F64)).item() == pytest.approx(
        2 * 1.0 * math.sqrt(5)
    )


# ------------------------------------------------------------------ bounds, W1, clipping


def test_lipschitz_bounds_sandwich_jacobian_norms():
    torch.manual_seed(0)
    model = seeded_mlp([5, 16, 16, 3], seed=1, dtype=F64)
    x = torch.randn(50, 5, generator=gen(), dtype=F64)
    jn = jacobian_norms(model, x)
    upper = lipschitz_upper_bound([m.weight for m in model if isinstance(m, nn.Linear)])
    assert (jn <= upper).all()
    # Jacobian of one point against autograd, slow path
    J = torch.autograd.functional.jacobian(lambda z: model(z.unsqueeze(0)).squeeze(0), x[0])
    assert jn[0].item() == pytest.approx(torch.linalg.matrix_norm(J, ord=2).item(), rel=1e-10)
    # a linear model's Lipschitz constant is exactly its spectral norm
    lin = nn.Linear(4, 3, dtype=F64)
    assert jacobian_norms(lin, torch.randn(2, 4, dtype=F64))[0].item() == pytest.approx(
        spectral_norm_exact(lin.weight.detach()).item()
    )


def test_exact_w1_closed_forms_and_duality():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    assert exact_w1(x, x + torch.tensor([0.0, 2.0])) == pytest.approx(2.0)  # translation
    assert exact_w1(x, x.flip(0)) == pytest.approx(0.0)  # same set, other order
    assert exact_w1(x[:1], x[1:]) == pytest.approx(1.0)  # single sample
    # any 1-Lipschitz f gives a dual lower bound
    real, _ = make_moons(40, seed=0, dtype=F64)
    fake = shifted_gaussian(40, dtype=F64)
    f = lambda z: -z[:, 1]
    assert (f(real).mean() - f(fake).mean()).item() <= exact_w1(real, fake) + 1e-12


def test_clipping():
    torch.manual_seed(0)
    m = seeded_mlp([3, 8, 1])
    clip_weights_(m, 0.01)
    assert all(p.abs().max() <= 0.01 for p in m.parameters())
    m = seeded_mlp([3, 8, 1])
    clip_frobenius_(m, 0.5)
    assert all(torch.linalg.matrix_norm(l.weight) <= 0.5 + 1e-6 for l in m if isinstance(l, nn.Linear))


# ------------------------------------------------------------------ the article's Keras constraint (projection)


def test_projection_divides_each_weight_by_sus_estimate_and_leaves_biases():
    torch.manual_seed(0)
    layer = nn.Linear(6, 4, dtype=F64)
    with torch.no_grad():
        layer.weight.copy_(matrix_with_spectrum([3.0, 1.0, 0.5], (4, 6), seed=2))
    W, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    # Su's Keras code: 5 iterations from all ones, recomputed from scratch at every call
    u = torch.ones(4, dtype=F64)
    for _ in range(5):
        v = torch.nn.functional.normalize(W.mT @ u, dim=0)
        u = torch.nn.functional.normalize(W @ v, dim=0)
    sigma = u @ W @ v
    spectral_project_(layer)
    assert torch.allclose(layer.weight, W / sigma, rtol=1e-12)
    assert torch.equal(layer.bias, b)
    assert spectral_norm_exact(layer.weight.detach()).item() >= 1.0 - 1e-12  # sigma-hat <= sigma
    spectral_project_(layer, n_iter=None)  # exact norm
    assert spectral_norm_exact(layer.weight.detach()).item() == pytest.approx(1.0, abs=1e-12)


def test_projection_inherits_the_all_ones_failure():
    layer = nn.Linear(64, 64, bias=False, dtype=F64)
    with torch.no_grad():
        layer.weight.copy_(sharpening_matrix(64))
    spectral_project_(layer)  # all-ones start: divides by 1, not by 5
    assert spectral_norm_exact(layer.weight.detach()).item() == pytest.approx(5.0)


def test_reparametrisation_gradient_is_blind_to_scale_projection_gradient_is_not():
    """The gradient through W / sigma(W) is orthogonal to W (the map is scale-invariant); a projection
    computes the gradient of the loss at the normalised weights instead, which generally is not."""
    torch.manual_seed(0)
    W = matrix_with_spectrum([2.0, 1.0, 0.5], (3, 4), seed=3)
    x = torch.randn(8, 4, generator=gen(1), dtype=F64)
    loss = lambda M: (x @ M.mT).tanh().sum()
    Wp = W.clone().requires_grad_(True)
    r = spectral_norm_estimate(W, 200, generator=gen())
    step = spectral_normalize(Wp, r.u, r.v, n_iter=1)
    (g_reparam,) = torch.autograd.grad(loss(step.weight), Wp)
    assert abs((g_reparam * W).sum().item()) < 1e-10
    Wn = (W / spectral_norm_exact(W)).requires_grad_(True)
    (g_project,) = torch.autograd.grad(loss(Wn), Wn)
    assert abs((g_project * Wn.detach()).sum().item()) > 1e-2


# ------------------------------------------------------------------ bad input


def test_bad_inputs_raise_clear_errors():
    W = torch.randn(3, 4)
    with pytest.raises(ValueError, match="W"):
        spectral_norm_estimate(torch.randn(3), 5)
    with pytest.raises(TypeError, match="W"):
        spectral_norm_estimate(torch.ones(3, 3, dtype=torch.int64), 5)
    with pytest.raises(ValueError, match="W"):
        spectral_norm_estimate(torch.zeros(0, 3), 5)
    with pytest.raises(ValueError, match="n_iter"):
        spectral_norm_estimate(W, 0)
    with pytest.raises(ValueError, match="u0"):
        spectral_norm_estimate(W, 2, u0=torch.ones(4))
    with pytest.raises(ValueError, match="u0"):
        spectral_norm_estimate(W, 2, u0="twos")
    with pytest.raises(TypeError, match="u0"):
        spectral_norm_estimate(W, 2, u0=torch.ones(3, dtype=F64))
    with pytest.raises(ValueError, match="v"):
        spectral_normalize(W, torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="n_iter"):
        spectral_normalize(W, torch.ones(3), torch.ones(4), n_iter=-1)
    with pytest.raises(ValueError, match="n_power_iterations"):
        SpectralNorm(W, n_power_iterations=0)
    with pytest.raises(ValueError, match="dim"):
        SpectralNorm(W, dim=2)
    with pytest.raises(ValueError, match="name"):
        spectral_normalization(nn.ReLU())
    with pytest.raises(ValueError, match="lam"):
        spectral_penalty([torch.tensor(1.0)], -1.0)
    with pytest.raises(ValueError, match="sigmas"):
        spectral_penalty([torch.ones(2)], 1.0)
    with pytest.raises(ValueError, match="weight"):
        reshaped_kernel_norm(torch.ones(3, 3))
    with pytest.raises(ValueError, match="weight"):
        conv_operator_norm(torch.ones(1, 1, 2, 2), (4, 4))
    with pytest.raises(ValueError, match="input_size"):
        conv_operator_norm(torch.ones(1, 1, 3, 3), (2, 8))
    with pytest.raises(ValueError, match="input_size"):
        conv_operator_norm_fft(torch.ones(1, 1, 3, 3), 8)
    with pytest.raises(ValueError, match="padding_mode"):
        conv_operator_norm(torch.ones(1, 1, 3, 3), (4, 4), "reflect")
    with pytest.raises(ValueError, match="kind"):
        gradient_penalty(lambda x: x.sum(1), W, W, kind="two")
    with pytest.raises(ValueError, match="real and fake"):
        gradient_penalty(lambda x: x.sum(1), W, W[:2])
    with pytest.raises(ValueError, match="real"):
        gradient_penalty(lambda x: x.sum(1), torch.zeros(0, 2), torch.zeros(0, 2))
    with pytest.raises(ValueError, match="critic"):
        gradient_penalty(lambda x: x, W, W)
    with pytest.raises(ValueError, match="c must"):
        clip_weights_(nn.Linear(2, 2), 0.0)
    with pytest.raises(ValueError, match="x and y"):
        exact_w1(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="weights"):
        lipschitz_upper_bound([])
    with pytest.raises(ValueError, match="n_iter"):
        spectral_project_(nn.Linear(2, 2), n_iter=0)

"""Tests of kexue.rope: every equation in float64, layouts, reductions between variants, peers, errors."""

from __future__ import annotations

import math

import pytest
import torch

from kexue import rope as R

D, BASE, K = 128, 10000.0, 8.0
METHODS_STATIC = ["default", "pi", "ntk-old", "ntk", "fixed", "mixed"]


def _theta(d: int = D, base: float = BASE) -> torch.Tensor:
    i = torch.arange(0, d, 2, dtype=torch.float64)
    return 1.0 / base ** (i / d)


# ----------------------------------------------------------------------------- frequencies


def test_registry_names_and_signature():
    assert set(R.SCALINGS) == {"default", "pi", "ntk-old", "ntk", "fixed", "mixed", "dynamic"}
    for name in METHODS_STATIC:
        f = R.frequencies(D, BASE, name, K)
        assert f.shape == (D // 2,) and f.dtype == torch.float64
        assert torch.all(f > 0) and torch.all(f[1:] < f[:-1]), name


def test_default_is_base_power():
    torch.testing.assert_close(R.frequencies(D, BASE), _theta(), rtol=1e-14, atol=0)
    beta = BASE ** (2 / D)
    m = torch.arange(1, D // 2 + 1, dtype=torch.float64)
    torch.testing.assert_close(R.frequencies(D, BASE), beta ** (-(m - 1)), rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("method", "new_base"),
    [("ntk-old", BASE * K), ("ntk", BASE * K ** (D / (D - 2)))],
)
def test_ntk_bases(method, new_base):
    torch.testing.assert_close(R.frequencies(D, BASE, method, K), _theta(D, new_base), rtol=1e-12, atol=0)


# closed forms of theta'/theta at the highest (m = 1) and lowest (m = d/2) frequency
CLOSED = {
    "default": (1.0, 1.0),
    "pi": (1 / K, 1 / K),
    "ntk-old": (1.0, K ** (-(D - 2) / D)),
    "ntk": (1.0, 1 / K),
    "fixed": (K ** (-2 / D), 1 / K),
    "mixed": (math.exp(-math.log(K) / (D / 2) ** 0.625), 1 / K),
}


@pytest.mark.parametrize("method", METHODS_STATIC)
def test_ratio_closed_forms(method):
    ratio = R.frequencies(D, BASE, method, K) / _theta()
    hi, lo = CLOSED[method]
    assert ratio[0].item() == pytest.approx(hi, rel=1e-12)
    assert ratio[-1].item() == pytest.approx(lo, rel=1e-12)


def test_fixed_formula():
    lam = K ** (2 / D)
    beta = BASE ** (2 / D)
    m = torch.arange(1, D // 2 + 1, dtype=torch.float64)
    expected = 1 / (lam * (beta * lam) ** (m - 1))
    torch.testing.assert_close(R.frequencies(D, BASE, "fixed", K), expected, rtol=1e-12, atol=0)


def test_mixed_matches_su_ntk_patch():
    # bojone/rerope ntk_patch.py: a = log(k) / (dim/2)**b ; inv_freq = base**(-arange(0,dim,2)/dim) * exp(-a * arange(1, dim/2+1)**b)
    k, b, dim = 12.0, 0.75, 128
    a = math.log(k) / (dim / 2) ** b
    expected = BASE ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim) * torch.exp(
        -a * torch.arange(1, dim // 2 + 1, dtype=torch.float64) ** b
    )
    torch.testing.assert_close(R.frequencies(dim, BASE, "mixed", k, b=b), expected, rtol=1e-12, atol=0)


def test_mixed_reductions():
    torch.testing.assert_close(R.frequencies(D, BASE, "mixed", K, b=1.0), R.frequencies(D, BASE, "fixed", K), rtol=1e-12, atol=0)
    torch.testing.assert_close(R.frequencies(D, BASE, "mixed", K, b=0.0), R.frequencies(D, BASE, "pi", K), rtol=1e-12, atol=0)
    near0 = R.frequencies(D, BASE, "mixed", K, b=1e-9)
    torch.testing.assert_close(near0, R.frequencies(D, BASE, "pi", K), rtol=1e-6, atol=0)


# Property tests over a seeded grid of random cases (not hypothesis: its ".hypothesis" cache
# directory in the project root breaks collection under this project's norecursedirs + warnings=error).
CASES = [
    (1.0 + 63.0 * u, v, int(2 + w * 62))
    for u, v, w in torch.rand(60, 3, generator=torch.Generator().manual_seed(123), dtype=torch.float64).tolist()
] + [(1.0, 0.0, 2), (64.0, 1.0, 64), (8.0, 0.5, 2)]


@pytest.mark.parametrize(("k", "b", "half"), CASES)
def test_mixed_constraints(k, b, half):
    d = 2 * half
    ratio = R.frequencies(d, BASE, "mixed", k, b=b) / _theta(d)
    lam_prod = 1 / ratio  # lambda_1 ... lambda_m
    assert lam_prod[-1].item() == pytest.approx(k, rel=1e-9)
    lam = torch.cat((lam_prod[:1], lam_prod[1:] / lam_prod[:-1]))
    assert torch.all(lam >= 1 - 1e-12)
    assert torch.all(lam[1:] <= lam[:-1] * (1 + 1e-12))


@pytest.mark.parametrize(("k", "half"), [(k, half) for k, _, half in CASES])
def test_k_one_is_identity(k, half):
    d = 2 * half
    for method in METHODS_STATIC:
        torch.testing.assert_close(R.frequencies(d, BASE, method, 1.0), _theta(d), rtol=1e-12, atol=0)
    # every method's ratio lies between PI's (1/k) and 1
    for method in METHODS_STATIC:
        r = R.frequencies(d, BASE, method, k) / _theta(d)
        assert torch.all(r <= 1 + 1e-12) and torch.all(r >= 1 / k - 1e-12), method


def test_pi_equivalence_positions():
    """theta/k at position n equals theta at position n/k (rotations, float64)."""
    x = torch.randn(2, 50, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pos = torch.arange(50, dtype=torch.float64)
    a = R.apply_rope(x, pos, R.frequencies(16, BASE, "pi", K))
    b = R.apply_rope(x, pos / K, R.frequencies(16, BASE))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_dynamic():
    L = 512
    torch.testing.assert_close(
        R.frequencies(D, BASE, "dynamic", K, seq_len=100, train_len=L), _theta(), rtol=1e-12, atol=0
    )
    f = R.frequencies(D, BASE, "dynamic", K, seq_len=int(K) * L, train_len=L)
    torch.testing.assert_close(f, _theta(D, BASE * (K * K - K + 1) ** (D / (D - 2))), rtol=1e-12, atol=0)
    # factor 1 at seq_len = kL is bloc97's NTK with k
    f1 = R.frequencies(D, BASE, "dynamic", 1.0, seq_len=int(K) * L, train_len=L)
    torch.testing.assert_close(f1, R.frequencies(D, BASE, "ntk", K), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- applying RoPE


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_fast_equals_reference(layout):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 40, 32, dtype=torch.float64, generator=g)
    pos = torch.arange(40) * 7
    f = R.frequencies(32, BASE, "mixed", 4.0)
    torch.testing.assert_close(R.apply_rope(x, pos, f, layout), R.apply_rope_reference(x, pos, f, layout),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_relative_position_property(layout):
    """<R_{n1} q, R_{n2} k> depends on n2 - n1 only, and equals <q, R_{n2-n1} k>."""
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 1, 24, dtype=torch.float64, generator=g)
    f = R.frequencies(24, BASE)
    for n1, n2 in [(0, 5), (100, 105), (3, 3), (1000, 37)]:
        a = (R.apply_rope(q, torch.tensor([n1]), f, layout) * R.apply_rope(k, torch.tensor([n2]), f, layout)).sum()
        b = (q * R.apply_rope(k, torch.tensor([n2 - n1]).abs(), f, layout)).sum() if n2 >= n1 else (
            R.apply_rope(q, torch.tensor([n1 - n2]), f, layout) * k
        ).sum()
        assert a.item() == pytest.approx(b.item(), rel=1e-10, abs=1e-10)


def test_rotation_preserves_norm_and_autograd():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 16, dtype=torch.float64, generator=g, requires_grad=True)
    pos = torch.arange(5)
    f = R.frequencies(16, 100.0)
    y = R.apply_rope(x, pos, f)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1).detach(), rtol=1e-12, atol=1e-12)
    # the map is linear and orthogonal: gradient of <y, c> is R^T c
    c = torch.randn(5, 16, dtype=torch.float64, generator=g)
    (y * c).sum().backward()
    inverse = R.apply_rope_reference(c, pos, -f)
    torch.testing.assert_close(x.grad, inverse, rtol=1e-12, atol=1e-12)


def test_layouts_equal_after_permutation():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(3, 30, 32, dtype=torch.float64, generator=g)
    k = torch.randn(3, 30, 32, dtype=torch.float64, generator=g)
    p = R.half_permutation(32)
    pos = torch.arange(30)
    f = R.frequencies(32, BASE, "ntk", 8.0)
    inter = R.apply_rope(q, pos, f)
    half = R.apply_rope(q[..., p], pos, f, "half")
    torch.testing.assert_close(half, inter[..., p], rtol=1e-12, atol=1e-12)
    s_inter = R.apply_rope(q, pos, f) @ R.apply_rope(k, pos, f).transpose(-1, -2)
    s_half = R.apply_rope(q[..., p], pos, f, "half") @ R.apply_rope(k[..., p], pos, f, "half").transpose(-1, -2)
    torch.testing.assert_close(s_inter, s_half, rtol=1e-12, atol=1e-12)


def test_low_precision_input_uses_float32_angles():
    x = torch.ones(1, 2, 4, dtype=torch.bfloat16)
    pos = torch.tensor([0, 3000])
    f = R.frequencies(4, BASE)
    y = R.apply_rope(x, pos, f)
    assert y.dtype == torch.bfloat16
    ref = R.apply_rope_reference(x.double(), pos, f)
    torch.testing.assert_close(y.double(), ref, rtol=1e-2, atol=1e-2)
    # bf16 angles would be badly wrong: 3000 is not representable in bf16 exactly
    assert torch.tensor(3001.0, dtype=torch.bfloat16).item() != 3001.0


def test_positions_broadcast_per_batch():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 8, dtype=torch.float64, generator=g)
    pos = torch.stack((torch.arange(6), torch.arange(6) + 10))
    f = R.frequencies(8, BASE)
    y = R.apply_rope(x, pos, f)
    torch.testing.assert_close(y[1], R.apply_rope(x[1], torch.arange(6) + 10, f))


def test_empty_sequence():
    x = torch.zeros(2, 0, 8)
    y = R.apply_rope(x, torch.zeros(0, dtype=torch.int64), R.frequencies(8))
    assert y.shape == (2, 0, 8)


# ------------------------------------------------------- apply_rope's fast path against the reference


def _formula(x, pos, f, layout):
    """The rotation done the plain way in x's dtype: float64 or float32 angles, tables cast to x's dtype."""
    a = R.rope_angles(pos, f)
    return R._rotate(x, a.cos().to(x.dtype), a.sin().to(x.dtype), layout)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_apply_rope_dtype_behaviour(layout, dtype):
    """Output in x's dtype; float64 angles even for low-precision x; values as the reference's up to x's precision."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 60, 32, dtype=torch.float64, generator=g).to(dtype)
    pos = torch.arange(60) * 50  # positions up to 2950: bfloat16 angles would be off by whole radians
    f = R.frequencies(32, BASE, "mixed", 4.0)
    y = R.apply_rope(x, pos, f, layout)
    assert y.dtype == dtype and y.shape == x.shape and y.is_contiguous()
    ref = R.apply_rope_reference(x.double(), pos, f, layout)  # float64 everywhere
    tol = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 3e-2, torch.float16: 4e-3}[dtype]
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol)
    # the fast path computes the plain formula in x's dtype: equal up to a fused multiply-add's rounding
    ulp = {torch.float64: 1e-15, torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 1e-3}[dtype]
    torch.testing.assert_close(y.double(), _formula(x, pos, f, layout).double(), rtol=ulp, atol=ulp)


def test_apply_rope_float32_interleaved_is_the_formula():
    """float32 interleaved (the page's model): the complex-multiply path gives the formula's values and gradients."""
    g = torch.Generator().manual_seed(12)
    x = torch.randn(4, 33, 64, generator=g, requires_grad=True)
    f, pos = R.frequencies(64).float(), torch.arange(33)
    y = R.apply_rope(x, pos, f)
    x2 = x.detach().clone().requires_grad_(True)
    y2 = _formula(x2, pos, f, "interleaved")
    c = torch.randn(y.shape, generator=g)
    (y * c).sum().backward()
    (y2 * c).sum().backward()
    torch.testing.assert_close(y, y2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_apply_rope_autograd(layout):
    """Gradient (and gradient of the gradient) through the fast path, checked by finite differences."""
    g = torch.Generator().manual_seed(13)
    x = torch.randn(2, 5, 8, dtype=torch.float64, generator=g, requires_grad=True)
    f, pos = R.frequencies(8, 100.0), torch.arange(5) * 3
    fn = lambda t: R.apply_rope(t, pos, f, layout)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    # the gradient of <R x, c> is R^T c, the rotation by the opposite angles
    c = torch.randn(2, 5, 8, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad((fn(x) * c).sum(), x)
    torch.testing.assert_close(grad, R.apply_rope_reference(c, pos, -f, layout), rtol=1e-12, atol=1e-12)


def test_apply_rope_gradient_reaches_the_frequencies():
    """Frequencies that require a gradient take the plain formula; its gradient matches finite differences."""
    g = torch.Generator().manual_seed(14)
    x = torch.randn(6, 8, dtype=torch.float64, generator=g)
    f = R.frequencies(8, 100.0).requires_grad_(True)
    pos = torch.arange(6)
    assert torch.autograd.gradcheck(lambda t: R.apply_rope(x, pos, t), (f,))
    assert torch.autograd.gradcheck(lambda t: R.apply_rope(x, pos, t, "half"), (f,))


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_apply_rope_non_contiguous_inputs(layout):
    g = torch.Generator().manual_seed(15)
    f = R.frequencies(16, BASE, "ntk", 2.0)
    base = torch.randn(3, 20, 4, 32, dtype=torch.float64, generator=g)
    views = [
        base[..., :16].transpose(1, 2),  # (3, 4, 20, 16), strided rows and heads
        base[:, ::2, 0, 8:24],  # (3, 10, 16), every other position
        base.transpose(1, 2)[:, 1, :, 16:],  # (3, 20, 16)
    ]
    for x in views:
        pos = torch.arange(x.shape[-2]) + 5
        assert not x.is_contiguous()
        torch.testing.assert_close(R.apply_rope(x, pos, f, layout), R.apply_rope_reference(x, pos, f, layout),
                                   rtol=1e-12, atol=1e-12)
        cos, sin = R.rope_tables(pos, f, x.dtype)
        out = torch.empty(x.shape[-1], *x.shape[:-1], dtype=x.dtype).movedim(0, -1)  # a non-contiguous out
        got = R.apply_rope_tables(x, cos, sin, layout, out=out)
        assert got is out
        torch.testing.assert_close(got, R.apply_rope_reference(x, pos, f, layout), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_apply_rope_large_output_buffer(layout):
    """From 32 MiB the output comes from kexue._memory.fresh_like (NumPy, 2 MiB pages): same values."""
    g = torch.Generator().manual_seed(16)
    x = torch.randn(2, 4, 8192, 128, generator=g)  # 32 MiB of float32
    f, pos = R.frequencies(128), torch.arange(8192)
    y = R.apply_rope(x, pos, f, layout)
    assert y.shape == x.shape and y.dtype == x.dtype and y.is_contiguous() and y.data_ptr() % 64 == 0
    rows = [0, 4095, 8191]  # the reference is slow: check three positions of every head
    want = R.apply_rope_reference(x[:, :, rows], pos[rows], f, layout)
    torch.testing.assert_close(y[:, :, rows], want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, _formula(x, pos, f, layout), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_apply_rope_under_torch_func(layout):
    """vmap (batched x) and jacrev through the fast path's autograd.Function give the formula's answers."""
    g = torch.Generator().manual_seed(18)
    xs = torch.randn(3, 5, 8, dtype=torch.float64, generator=g)
    f, pos = R.frequencies(8, 100.0), torch.arange(5)
    batched = torch.func.vmap(lambda t: R.apply_rope(t, pos, f, layout))(xs)
    torch.testing.assert_close(batched, R.apply_rope_reference(xs, pos, f, layout), rtol=1e-12, atol=1e-12)
    jac = torch.func.jacrev(lambda t: R.apply_rope(t, pos, f, layout))(xs[0])  # (5, 8, 5, 8)
    eye = torch.eye(40, dtype=torch.float64).view(40, 5, 8)
    want = torch.stack([R.apply_rope_reference(e, pos, f, layout) for e in eye]).view(5, 8, 5, 8).permute(2, 3, 0, 1)
    torch.testing.assert_close(jac, want, rtol=1e-12, atol=1e-12)


def test_positions_with_more_batch_dims_than_x():
    """Positions that broadcast x to a larger shape take the plain formula (same result as before)."""
    g = torch.Generator().manual_seed(17)
    x = torch.randn(6, 8, dtype=torch.float64, generator=g)
    pos = torch.stack((torch.arange(6), torch.arange(6) + 10))
    y = R.apply_rope(x, pos, R.frequencies(8))
    assert y.shape == (2, 6, 8)
    torch.testing.assert_close(y[1], R.apply_rope(x, torch.arange(6) + 10, R.frequencies(8)))


def test_fresh_like():
    from kexue._memory import LARGE, fresh_like

    small = torch.zeros(3, 4)
    t = fresh_like(small)
    assert t.shape == (3, 4) and t.dtype == torch.float32 and t.is_contiguous()
    big = torch.zeros(LARGE // 4 + 16)
    b = fresh_like(big)
    assert b.shape == big.shape and b.dtype == big.dtype and b.data_ptr() % 64 == 0
    b.fill_(2.0)
    assert b.sum().item() == 2.0 * b.numel()
    assert fresh_like(big, dtype=torch.bfloat16).dtype == torch.bfloat16  # no NumPy dtype: torch.empty
    assert fresh_like(big, shape=(2, 3)).shape == (2, 3)


def test_reusable_buffer_hands_out_idle_memory_only():
    """ReusableBuffer gives its last large buffer again only when no tensor or view holds it."""
    import copy
    import pickle

    from kexue._memory import LARGE, ReusableBuffer

    big = torch.zeros(LARGE // 4 + 16)
    pool = ReusableBuffer()
    a = pool.take(big)
    first = pool._raw
    assert a.shape == big.shape and a.dtype == big.dtype and a.is_contiguous() and a.data_ptr() % 64 == 0
    b = pool.take(big)  # a is alive: new memory, which becomes the remembered one
    assert pool._raw is not first and b.data_ptr() != a.data_ptr()
    second = pool._raw
    view = b[:8]
    del b
    assert pool.take(big).data_ptr() != view.data_ptr()  # a view keeps the storage in use
    third = pool._raw
    del view
    assert third is not second
    c = pool.take(big)  # the third buffer's tensor died at once: reused
    assert pool._raw is third and c.data_ptr() - third.ctypes.data < 64
    del c
    assert pool.take(big, shape=(3,)).shape == (3,)  # a small or other-sized request: not the remembered memory
    assert pool.take(big, dtype=torch.bfloat16).dtype == torch.bfloat16  # no NumPy dtype: torch.empty
    assert copy.deepcopy(pool)._raw is None and pickle.loads(pickle.dumps(pool))._raw is None


# ----------------------------------------------------------------------------- log n


def test_logn_scale():
    n = torch.tensor([1, 2, 512, 513, 4096])
    s = R.logn_scale(n, 512)
    expected = torch.tensor([1.0, 1.0, 1.0, math.log(513) / math.log(512), 4096 ** 0 * math.log(4096) / math.log(512)],
                            dtype=torch.float64)
    torch.testing.assert_close(s, expected, rtol=1e-12, atol=1e-12)
    assert R.logn_scale(4096, 512).item() == pytest.approx(12 / 9)


def test_logn_inert_within_training_length():
    torch.testing.assert_close(R.logn_scale(torch.arange(1, 65), 64), torch.ones(64, dtype=torch.float64))


def test_logn_scale_unclipped_is_log_base_L():
    n = torch.arange(1, 600)
    raw = R.logn_scale(n, 64, clip=False)
    torch.testing.assert_close(raw, torch.log(n.double()) / math.log(64), rtol=1e-12, atol=1e-12)
    assert raw[0].item() == 0.0 and raw[63].item() == pytest.approx(1.0)
    # clipping changes exactly the positions inside the training length
    torch.testing.assert_close(R.logn_scale(n, 64), raw.clamp(min=1.0))


# ----------------------------------------------------------------------------- the digit view


def test_beta_digits_integer_base():
    d = R.beta_digits(torch.tensor([1749.0, 0.0, 999.0]), 10.0, 4)
    assert d.tolist() == [[9, 4, 7, 1], [0, 0, 0, 0], [9, 9, 9, 0]]
    d16 = R.beta_digits(torch.tensor([1749.0]), 16.0, 3)
    assert d16.tolist() == [[5, 13, 6]]  # 1749 = 6*256 + 13*16 + 5


def test_digits_reconstruct_number():
    n = torch.arange(0, 5000, 37, dtype=torch.float64)
    digits = R.beta_digits(n, 7.0, 6)
    recon = (digits * 7.0 ** torch.arange(6, dtype=torch.float64)).sum(-1)
    torch.testing.assert_close(recon, n)


def test_phases_are_rope_angles():
    d, base = 16, 10000.0
    beta = base ** (2 / d)
    n = torch.arange(0, 3000, 11)
    phases = R.rope_phases(n, beta, d // 2)
    angles = R.rope_angles(n, R.frequencies(d, base))
    torch.testing.assert_close(phases, torch.remainder(angles, 2 * math.pi), rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- peers


def test_parity_rotary_embedding_torch():
    from rotary_embedding_torch import RotaryEmbedding

    g = torch.Generator().manual_seed(6)
    dim, seq = 32, 64
    x = torch.randn(2, 4, seq, dim, generator=g)
    pos = torch.arange(seq)
    for kw, method in [({}, "default"), ({"interpolate_factor": 8.0}, "pi"), ({"theta_rescale_factor": 8.0}, "ntk")]:
        rot = RotaryEmbedding(dim, **kw)
        ours = R.frequencies(dim, 10000.0, method, 8.0)
        if method == "pi":  # the peer keeps theta and divides positions instead
            torch.testing.assert_close(rot.freqs.double() / 8.0, ours, rtol=1e-6, atol=0)
        else:
            torch.testing.assert_close(rot.freqs.double(), ours, rtol=1e-6, atol=0)
        theirs = rot.rotate_queries_or_keys(x)
        torch.testing.assert_close(R.apply_rope(x, pos, ours, "interleaved"), theirs, rtol=1e-4, atol=1e-4)


def _hf_config(rope_parameters):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=2 * D, num_attention_heads=2, head_dim=D, max_position_embeddings=512,
                       rope_parameters=rope_parameters)


def test_parity_transformers_init_functions():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    default = LlamaRotaryEmbedding.compute_default_rope_parameters(
        _hf_config({"rope_type": "default", "rope_theta": BASE})
    )[0]
    torch.testing.assert_close(default.double(), R.frequencies(D, BASE), rtol=1e-6, atol=0)
    linear = ROPE_INIT_FUNCTIONS["linear"](_hf_config({"rope_type": "linear", "rope_theta": BASE, "factor": K}))[0]
    torch.testing.assert_close(linear.double(), R.frequencies(D, BASE, "pi", K), rtol=1e-6, atol=0)
    cfg = _hf_config({"rope_type": "dynamic", "rope_theta": BASE, "factor": K})
    for seq_len in (100, 512, 1000, 4096):
        dyn = ROPE_INIT_FUNCTIONS["dynamic"](cfg, seq_len=seq_len)[0]
        ours = R.frequencies(D, BASE, "dynamic", K, seq_len=seq_len, train_len=512)
        torch.testing.assert_close(dyn.double(), ours, rtol=1e-5, atol=0)


def test_parity_transformers_rotate_half():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    g = torch.Generator().manual_seed(7)
    q = torch.randn(1, 2, 20, 16, generator=g)
    k = torch.randn(1, 2, 20, 16, generator=g)
    f = R.frequencies(16, BASE, "ntk", 4.0)
    ang = R.rope_angles(torch.arange(20), f).float()
    emb = torch.cat((ang, ang), -1)[None]
    hq, hk = apply_rotary_pos_emb(q, k, emb.cos(), emb.sin())
    torch.testing.assert_close(R.apply_rope(q, torch.arange(20), f, "half"), hq, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(R.apply_rope(k, torch.arange(20), f, "half"), hk, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"d": 7}, "d"),
        ({"d": 0}, "d"),
        ({"d": -4}, "d"),
        ({"base": 1.0}, "base"),
        ({"base": -3.0}, "base"),
        ({"k": 0.5}, "k"),
        ({"k": float("nan")}, "k"),
        ({"method": "yarn"}, "method"),
        ({"method": "mixed", "b": 1.5}, "b"),
        ({"method": "ntk", "d": 2}, "d"),
        ({"method": "dynamic", "seq_len": 0, "train_len": 10}, "seq_len"),
        ({"method": "dynamic", "seq_len": 10, "train_len": 0}, "train_len"),
    ],
)
def test_bad_frequency_arguments(kwargs, name):
    args = {"d": 16, "base": 10000.0, "method": "default", "k": 2.0} | kwargs
    with pytest.raises(ValueError, match=name):
        R.frequencies(**args)


def test_unknown_param_is_type_error():
    with pytest.raises(TypeError, match="ntk"):
        R.frequencies(16, 10000.0, "ntk", 2.0, b=0.5)


def test_bad_rope_inputs():
    f = R.frequencies(8)
    x = torch.zeros(3, 8)
    with pytest.raises(ValueError, match="positions"):
        R.apply_rope(x, -torch.arange(3), f)
    with pytest.raises(ValueError, match="positions"):
        R.apply_rope(x, torch.arange(4), f)
    with pytest.raises(ValueError, match="last dimension"):
        R.apply_rope(torch.zeros(3, 6), torch.arange(3), f)
    with pytest.raises(ValueError, match="layout"):
        R.apply_rope(x, torch.arange(3), f, "split")
    with pytest.raises(TypeError, match="x"):
        R.apply_rope(torch.zeros(3, 8, dtype=torch.int64), torch.arange(3), f)
    with pytest.raises(ValueError, match="n "):
        R.logn_scale(0, 512)
    with pytest.raises(ValueError, match="train_len"):
        R.logn_scale(5, 1)
    with pytest.raises(ValueError, match="beta"):
        R.beta_digits(torch.tensor([1.0]), 1.0, 3)
    with pytest.raises(ValueError, match="n must"):
        R.rope_phases(torch.tensor([-1.0]), 2.0, 3)


def test_degenerate_inputs():
    # zero vector stays zero; position 0 is the identity; d = 2 works for the plain methods
    f = R.frequencies(2, 10.0, "fixed", 4.0)
    assert f.shape == (1,)
    z = torch.zeros(4, 2)
    assert torch.equal(R.apply_rope(z, torch.arange(4), f), z)
    x = torch.randn(1, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(R.apply_rope(x, torch.zeros(1), R.frequencies(6)), x)
    assert R.logn_scale(torch.tensor([], dtype=torch.float64), 4).shape == (0,)


# ------------------------------------------------------------------ fast path with precomputed tables


@pytest.mark.parametrize("layout", ["interleaved", "half"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_apply_rope_tables_equals_apply_rope(layout, dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 50, 16, generator=g, dtype=torch.float64).to(dtype)
    pos = torch.arange(50) * 7  # large positions: angles must not be computed in low precision
    theta = R.frequencies(16, method="ntk", k=4.0)
    cos, sin = R.rope_tables(pos, theta, dtype)
    out = torch.empty_like(x)
    got = R.apply_rope_tables(x, cos, sin, layout, out=out)
    assert got is out
    want = R.apply_rope(x, pos, theta, layout)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 5e-2}[dtype]
    assert torch.allclose(got.double(), want.double(), atol=tol, rtol=tol)
    # reusing the buffer gives the same answer, and a fresh output is allocated when none is given
    assert torch.equal(R.apply_rope_tables(x, cos, sin, layout, out=out), got)
    assert torch.equal(R.apply_rope_tables(x, cos, sin, layout), got)


# compiled=True builds its kernel with the C++ compiler Inductor uses (CXX, else g++); on a machine
# without one these tests are skipped (CI's machines have g++, so there they run)
needs_cxx = pytest.mark.skipif(not R._compiler_found(), reason="no C++ compiler for torch.compile (CXX or g++ on PATH)")


@needs_cxx
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_apply_rope_tables_compiled_matches_the_reference(dtype):
    # compiled=True (half layout): torch.compile's one-pass kernel against the slow reference and
    # the eager fast path; low precision is computed in float32 inside the kernel and rounded once,
    # so it is never further from the exact rotation of its inputs than the eager path
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 50, 16, generator=g, dtype=torch.float64).to(dtype)
    pos = torch.arange(50) * 7
    theta = R.frequencies(16, method="ntk", k=4.0)
    cos, sin = R.rope_tables(pos, theta, dtype)
    out = torch.empty_like(x)
    got = R.apply_rope_tables(x, cos, sin, "half", out=out, compiled=True)
    assert got is out
    eager = R.apply_rope_tables(x, cos, sin, "half")
    exact = R.apply_rope_tables(x.double(), cos.double(), sin.double(), "half")  # same rounded inputs
    if dtype == torch.bfloat16:
        assert (got.double() - exact).abs().max() <= (eager.double() - exact).abs().max()
        torch.testing.assert_close(got, eager, atol=2 ** -6, rtol=2 ** -7)
    else:
        tol = {torch.float64: 1e-12, torch.float32: 1e-5}[dtype]
        torch.testing.assert_close(got, eager, atol=tol, rtol=tol)
        ref = R.apply_rope_reference(x.double(), pos, theta, "half")
        torch.testing.assert_close(got.double(), ref, atol=tol, rtol=tol)
    # reusing the buffer gives the same answer
    assert torch.equal(R.apply_rope_tables(x, cos, sin, "half", out=out, compiled=True), got)


@needs_cxx
def test_apply_rope_tables_compiled_other_shapes_strides_and_layouts():
    g = torch.Generator().manual_seed(6)
    cos, sin = R.rope_tables(torch.arange(40), R.frequencies(16))
    for x in (torch.randn(3, 40, 16, generator=g), torch.randn(5, 40, 16, generator=g)):  # a second shape
        torch.testing.assert_close(R.apply_rope_tables(x, cos, sin, "half", compiled=True),
                                   R.apply_rope_tables(x, cos, sin, "half"), atol=1e-6, rtol=1e-6)
    xt = torch.randn(40, 3, 16, generator=g).transpose(0, 1)  # non-contiguous x and out
    out = torch.zeros(16, 3, 40).permute(1, 2, 0)
    got = R.apply_rope_tables(xt, cos, sin, "half", out=out, compiled=True)
    assert got is out
    torch.testing.assert_close(got, R.apply_rope_tables(xt.contiguous(), cos, sin, "half"), atol=1e-6, rtol=1e-6)
    empty = torch.empty(0, 40, 16)
    assert R.apply_rope_tables(empty, cos, sin, "half", compiled=True).shape == (0, 40, 16)
    # the interleaved layout is one pass already and ignores the flag
    x = torch.randn(2, 40, 16, generator=g)
    assert torch.equal(R.apply_rope_tables(x, cos, sin, "interleaved", compiled=True),
                       R.apply_rope_tables(x, cos, sin, "interleaved"))


def test_apply_rope_tables_compiled_flag_and_toolchain_errors(monkeypatch):
    x = torch.randn(4, 8)
    cos, sin = R.rope_tables(torch.arange(4), R.frequencies(8))
    with pytest.raises(ValueError, match="compiled"):
        R.apply_rope_tables(x, cos, sin, "half", compiled=1)

    def broken(*args):  # as torch.compile reports it: the toolchain's error wrapped by the backend's
        try:
            raise OSError("g++: not found")
        except OSError as inner:
            raise RuntimeError("backend='inductor' raised:\n") from inner

    monkeypatch.setattr(R, "_compiled_half_rotation", lambda: broken)
    with pytest.raises(RuntimeError, match=r"compiled=False") as info:
        R.apply_rope_tables(x, cos, sin, "half", compiled=True)
    assert "OSError: g++: not found" in str(info.value)  # the innermost cause is named
    assert isinstance(info.value.__cause__.__cause__, OSError)


def test_apply_rope_tables_rejects_bad_input():
    x = torch.randn(4, 8)
    cos, sin = R.rope_tables(torch.arange(4), R.frequencies(8))
    with pytest.raises(ValueError, match="cos"):
        R.apply_rope_tables(x, cos[:3], sin)
    with pytest.raises(TypeError, match="sin"):
        R.apply_rope_tables(x, cos, sin.double())
    with pytest.raises(ValueError, match="overlap"):
        R.apply_rope_tables(x, cos, sin, out=x)
    with pytest.raises(ValueError, match="layout"):
        R.apply_rope_tables(x, cos, sin, layout="pairs")
    with pytest.raises(TypeError, match="x"):
        R.apply_rope_tables(torch.ones(4, 8, dtype=torch.long), cos, sin)
    with pytest.raises(ValueError, match="positions"):
        R.rope_tables(torch.arange(4)[None], R.frequencies(8))


def test_apply_rope_tables_checks_overlap_through_views():
    cos, sin = R.rope_tables(torch.arange(4), R.frequencies(8))
    buf = torch.randn(4, 24)
    with pytest.raises(ValueError, match="overlap"):  # out shares columns 4..7 with x
        R.apply_rope_tables(buf[:, :8], cos, sin, out=buf[:, 4:12])
    with pytest.raises(ValueError, match="overlap"):  # interleaved memory spans: refused (conservative check)
        R.apply_rope_tables(buf[:, :8], cos, sin, out=buf[:, 16:24])
    # disjoint blocks of one storage are fine, and give the same rotation as a fresh buffer
    rows = torch.randn(8, 8)
    got = R.apply_rope_tables(rows[:4], cos, sin, out=rows[4:])
    torch.testing.assert_close(got, R.apply_rope_tables(rows[:4].clone(), cos, sin))

"""Tests of kexue.vqvae: every equation in float64, properties, parity with vector-quantize-pytorch.

The peer (``vector-quantize-pytorch``, pinned in the ``test`` extra) is imported directly, not
skipped: CI installs the test extra.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from vector_quantize_pytorch import VectorQuantize

from kexue import vqvae
from kexue.experiments.vqvae import train_priors, unigram_bits
from kexue.vqvae import (
    CODEBOOK_INITS,
    CodePrior,
    EMAState,
    VectorQuantizer,
    code_usage,
    codebook_init,
    dead_codes,
    ema_update,
    kmeans,
    nearest_code,
    nearest_code_reference,
    perplexity,
    prior_nll_bits,
    quantize,
    restart_dead_codes,
    sample_codes,
    squared_distances,
    straight_through,
    uniform_bits,
)

torch.set_num_threads(2)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(n: int = 200, k: int = 16, d: int = 8, dtype: torch.dtype = torch.float64, seed: int = 0):
    g = _gen(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randn(k, d, generator=g, dtype=dtype)


# ---------------------------------------------------------------- nearest code


def test_squared_distances_match_the_definition_float64():
    z, e = _data()
    want = ((z[:, None, :] - e[None]) ** 2).sum(-1)
    torch.testing.assert_close(squared_distances(z, e), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(squared_distances(z, e, e.pow(2).sum(1)), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nearest_code_equals_brute_force(dtype):
    z, e = _data(n=1000, k=64, d=16, dtype=dtype, seed=1)
    fast, ref = nearest_code(z, e), nearest_code_reference(z, e)
    if dtype == torch.float64:
        assert torch.equal(fast, ref)
    else:  # float32 may flip near-ties only: the two chosen codes must be equally close
        d = squared_distances(z.double(), e.double())
        rows = torch.arange(len(z))
        torch.testing.assert_close(d[rows, fast], d[rows, ref], rtol=1e-5, atol=1e-5)
        assert (fast == ref).float().mean() > 0.99


def test_nearest_code_precomputed_norms_and_batch_shape():
    z, e = _data(n=60, seed=2)
    z = z.reshape(3, 4, 5, -1)
    out = nearest_code(z, e, e.pow(2).sum(1))
    assert out.shape == (3, 4, 5) and out.dtype == torch.int64
    assert torch.equal(out, nearest_code_reference(z, e))


@pytest.fixture(params=["tagged", "numpy"])
def scan(request, monkeypatch):
    """Run a nearest-code test through the tagged parallel scan and through the NumPy scan that small
    problems take."""
    monkeypatch.setattr(vqvae, "_SMALL_ENTRIES", 0 if request.param == "tagged" else 1 << 62)
    return request.param


def test_nearest_code_ties_go_to_the_lowest_index(scan):
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    z = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    # duplicate code 0/2 -> 0; equidistant from codes 0 and 1 -> 0; origin is equidistant from all -> 0
    want = torch.tensor([0, 0, 0, 0])
    assert torch.equal(nearest_code(z, e), want)
    assert torch.equal(nearest_code_reference(z, e), want)


def test_nearest_code_blocks_agree_with_one_matrix_and_the_reference(monkeypatch, scan):
    """The blocked path (several blocks, a ragged last one, ties, a non-contiguous input with a
    gradient) gives the indices of the single-addmm path and of the slow reference."""
    monkeypatch.setattr(vqvae, "_BLOCK_ENTRIES", 7 * 24)  # 24 codes: blocks of 7 rows
    z, e = _data(n=150, k=24, d=5, seed=3)
    z[::10] = e[5]  # exactly on a code
    e[9] = e[5]  # a duplicate code: the tie goes to 5
    z = z.t().contiguous().t().requires_grad_()  # strided view, autograd on
    idx = nearest_code(z, e)
    assert torch.equal(idx, nearest_code(z, e, validate_args=False))
    assert torch.equal(idx, nearest_code_reference(z.detach(), e)) and (idx[::10] == 5).all()
    z32, e32 = z.detach().float(), e.float()
    assert torch.equal(nearest_code(z32, e32), nearest_code(z32, e32, validate_args=False))


def test_nearest_code_tags_send_exactly_the_tied_rows_to_numpy(monkeypatch):
    """The parallel scan tags each row's minimum with 2^p + k; rows with two or more minima (and only
    those) are settled by the NumPy argmin, and every index equals the reference's."""
    z, e = _data(n=300, k=24, d=5, seed=4)
    e[17] = e[3]  # duplicate code
    z[5::7] = e[3]  # rows exactly on it: a tie between 3 and 17
    seen = []
    numpy_argmin = vqvae._argmin_in_blocks

    def spy(flat, codes_t, e2):
        seen.append(flat.clone())
        return numpy_argmin(flat, codes_t, e2)

    monkeypatch.setattr(vqvae, "_argmin_in_blocks", spy)
    monkeypatch.setattr(vqvae, "_SMALL_ENTRIES", 0)  # the tagged scan, however small the problem
    for dtype in (torch.float64, torch.float32):
        seen.clear()
        idx = nearest_code(z.to(dtype), e.to(dtype))
        assert torch.equal(idx, nearest_code_reference(z.to(dtype), e.to(dtype)))
        tied = vqvae.squared_distances(z, e).eq(vqvae.squared_distances(z, e).amin(1, keepdim=True)).sum(1) > 1
        assert len(seen) == 1 and torch.equal(seen[0], z[tied].to(dtype)) and (idx[5::7] == 3).all()


def test_nearest_code_tag_offset_and_numpy_path(monkeypatch):
    # the offset is the power of two >= K; the tags stay exact integers up to 2^22 codes in float32
    assert [vqvae._tag_offset(k, torch.float32) for k in (1, 2, 3, 512, 513)] == [1.0, 2.0, 4.0, 512.0, 1024.0]
    assert vqvae._tag_offset(2**22, torch.float32) == 2.0**22 and vqvae._tag_offset(2**22 + 1, torch.float32) is None
    assert vqvae._tag_offset(2**40, torch.float64) == 2.0**40
    # the NumPy path that codebooks beyond that take gives the reference's indices (several blocks)
    monkeypatch.setattr(vqvae, "_BLOCK_ENTRIES", 16 * 11)  # 11 codes: blocks of 16 rows
    z, e = _data(n=90, k=11, d=4, seed=5)
    got = vqvae._argmin_in_blocks(z, e.t(), e.pow(2).sum(1))
    assert torch.equal(got, nearest_code_reference(z, e))


@pytest.mark.parametrize("k", [2, 11, 24, 40, 100])
def test_nearest_code_identical_codes_are_one_code(k, scan):
    """Two equal codes are always tied, even where the matrix product rounds their scores apart
    (they sit in different register tiles): every vector gets the lower index, as in the reference."""
    z, e = _data(n=400, k=k, d=4, seed=k)
    e[k - 1] = e[0]  # the last column against the first
    e[k // 2] = -0.0 * e[0] + e[0]  # the same vector again (zeros and signs of zero included)
    for dtype in (torch.float64, torch.float32):
        zz, ee = z.to(dtype), e.to(dtype)
        idx = nearest_code(zz, ee)
        assert torch.equal(idx, nearest_code_reference(zz, ee))
        assert not ((idx == k - 1) | (idx == k // 2)).any()
    assert vqvae._lowest_equal_code(_data(k=30)[1]) is None  # distinct codes: nothing to map
    with_zero_signs = torch.tensor([[0.0, 1.0], [-0.0, 1.0], [1.0, 0.0]])
    assert vqvae._lowest_equal_code(with_zero_signs).tolist() == [0, 0, 2]


@settings(max_examples=40, deadline=None, database=None)
@given(n=st.integers(1, 30), k=st.integers(1, 20), d=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_nearest_code_property_float64(n, k, d, seed):
    z, e = _data(n, k, d, seed=seed)
    idx = nearest_code(z, e)
    assert torch.equal(idx, nearest_code_reference(z, e))
    with pytest.MonkeyPatch.context() as mp:  # small problems take NumPy's scan; the tagged one agrees
        mp.setattr(vqvae, "_SMALL_ENTRIES", 0)
        assert torch.equal(nearest_code(z, e), idx)
    # invariant to translating both vectors and codes, and to permuting codes (up to relabelling)
    shift = torch.randn(d, generator=_gen(seed + 1), dtype=torch.float64)
    assert torch.equal(nearest_code(z + shift, e + shift), idx)
    perm = torch.randperm(k, generator=_gen(seed + 2))
    torch.testing.assert_close(e[perm][nearest_code(z, e[perm])], e[idx])


def test_nearest_code_degenerate_inputs(scan):
    e = torch.randn(5, 3, generator=_gen())
    assert nearest_code(torch.zeros(0, 3), e).shape == (0,)
    assert torch.equal(nearest_code(torch.zeros(4, 3), torch.zeros(1, 3)), torch.zeros(4, dtype=torch.long))
    # a single code: everything maps to it
    assert torch.equal(nearest_code(torch.randn(7, 3, generator=_gen()), e[:1]), torch.zeros(7, dtype=torch.long))


def test_nearest_code_bad_inputs():
    z, e = _data(n=4, k=3, d=2)
    with pytest.raises(ValueError, match="codebook is empty"):
        nearest_code(z, e[:0])
    with pytest.raises(ValueError, match="dimension mismatch"):
        nearest_code(torch.randn(4, 3, dtype=torch.float64), e)
    with pytest.raises(ValueError, match="codebook"):
        nearest_code(z, e[0])
    with pytest.raises(TypeError, match="dtype"):
        nearest_code(z.float(), e)
    with pytest.raises(TypeError, match="z must be a floating-point"):
        nearest_code(torch.ones(4, 2, dtype=torch.long), e)
    with pytest.raises(ValueError, match="codebook is empty"):
        nearest_code_reference(z, e[:0])
    with pytest.raises(ValueError, match="dimension mismatch"):
        quantize(torch.randn(4, 3, dtype=torch.float64), e)


# ---------------------------------------------------------------- straight-through and losses


def test_straight_through_value_and_identity_gradient():
    z, e = _data(n=50, seed=3)
    z.requires_grad_(True)
    q = quantize(z, e)
    torch.testing.assert_close(q.z_st, e[q.indices], rtol=0, atol=1e-12)
    w = torch.randn_like(z)
    (grad,) = torch.autograd.grad((q.z_st * w).sum(), z)
    torch.testing.assert_close(grad, w)  # d z_st / d z = I


def test_straight_through_gives_the_encoder_the_decoders_gradient():
    z, e = _data(n=10, d=4, seed=4)
    dec = torch.nn.Linear(4, 3).double()
    z1 = z.clone().requires_grad_(True)
    g_enc = torch.autograd.grad(dec(quantize(z1, e).z_st).pow(2).sum(), z1)[0]
    zq = e[nearest_code(z, e)].clone().requires_grad_(True)
    g_zq = torch.autograd.grad(dec(zq).pow(2).sum(), zq)[0]
    torch.testing.assert_close(g_enc, g_zq)


def test_straight_through_codebook_gets_no_reconstruction_gradient():
    z, e = _data(n=10, d=4, seed=5)
    e = e.clone().requires_grad_(True)
    z = z.requires_grad_(True)
    out = quantize(z, e).z_st.sum()
    (ge,) = torch.autograd.grad(out, e, allow_unused=True, materialize_grads=True)
    assert torch.count_nonzero(ge) == 0


def test_su_relu_trick_value_and_gradient():
    x = torch.linspace(-2, 2, 9, dtype=torch.float64, requires_grad=True)
    y = straight_through(x, torch.relu(x))
    torch.testing.assert_close(y, torch.relu(x))
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, torch.ones_like(x))


def test_losses_against_the_formulas_and_their_gradients():
    z, e = _data(n=40, k=6, d=5, seed=6)
    z, e = z.requires_grad_(True), e.clone().requires_grad_(True)
    beta, w = 0.3, 0.7
    q = quantize(z, e, beta=beta, codebook_weight=w)
    zq = e.detach()[nearest_code(z.detach(), e.detach())]
    mse = ((z.detach() - zq) ** 2).sum() / z.numel()
    torch.testing.assert_close(q.codebook_loss, mse)
    torch.testing.assert_close(q.commitment_loss, mse)
    torch.testing.assert_close(q.loss, (w + beta) * mse)
    gz, ge = torch.autograd.grad(q.loss, (z, e))
    torch.testing.assert_close(gz, beta * 2 * (z.detach() - zq) / z.numel())  # only the commitment term
    onehot = F.one_hot(nearest_code(z.detach(), e.detach()), e.shape[0]).double()
    torch.testing.assert_close(ge, w * 2 * onehot.t() @ (zq - z.detach()) / z.numel())  # only the codebook term


def test_quantize_bad_inputs():
    z, e = _data(n=4, k=3, d=2)
    with pytest.raises(ValueError, match="codebook is empty"):
        quantize(z, e[:0])
    with pytest.raises(ValueError, match="z must hold"):
        quantize(z[:0], e)
    with pytest.raises(ValueError, match="beta"):
        quantize(z, e, beta=-1.0)
    with pytest.raises(ValueError, match="codebook_weight"):
        quantize(z, e, codebook_weight=float("nan"))
    with pytest.raises(ValueError, match="same shape"):
        straight_through(z, z[:2])


def test_quantize_single_vector_on_a_code_has_zero_loss():
    e = torch.eye(3, dtype=torch.float64)
    q = quantize(e[1:2].clone(), e)
    assert int(q.indices) == 1 and float(q.loss) == 0.0


# ---------------------------------------------------------------- EMA and restarts


def test_ema_with_decay_zero_is_a_kmeans_step():
    z, e = _data(n=300, k=10, d=3, seed=7)
    idx = nearest_code(z, e)
    state = EMAState(torch.ones(10, dtype=torch.float64), e.clone())
    new, st_ = ema_update(e, z, idx, state, decay=0.0, eps=0.0)
    for k in range(10):
        members = z[idx == k]
        want = members.mean(0) if len(members) else e[k]
        torch.testing.assert_close(new[k], want)
    torch.testing.assert_close(st_.cluster_size, torch.bincount(idx, minlength=10).double())


def test_ema_update_matches_the_formula():
    z, e = _data(n=100, k=7, d=3, seed=8)
    idx = nearest_code(z, e)
    g = _gen(9)
    state = EMAState(torch.rand(7, generator=g, dtype=torch.float64) * 5, torch.randn(7, 3, generator=g, dtype=torch.float64))
    decay, eps = 0.9, 1e-3
    new, st_ = ema_update(e, z, idx, state, decay=decay, eps=eps)
    n = torch.stack([(idx == k).sum() for k in range(7)]).double()
    s = torch.stack([z[idx == k].sum(0) for k in range(7)])
    N = decay * state.cluster_size + (1 - decay) * n
    m = decay * state.embed_sum + (1 - decay) * s
    Nt = (N + eps) / (N.sum() + 7 * eps) * N.sum()
    torch.testing.assert_close(st_.cluster_size, N)
    torch.testing.assert_close(st_.embed_sum, m)
    torch.testing.assert_close(new, m / Nt[:, None])


def test_ema_unused_code_with_zero_count_keeps_its_value_and_bad_args():
    z, e = _data(n=20, k=4, d=2, seed=10)
    idx = torch.zeros(20, dtype=torch.long)
    state = EMAState(torch.zeros(4, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64))
    new, _ = ema_update(e, z, idx, state, decay=0.0, eps=0.0)
    torch.testing.assert_close(new[1:], e[1:])
    torch.testing.assert_close(new[0], z.mean(0))
    with pytest.raises(ValueError, match="decay"):
        ema_update(e, z, idx, state, decay=1.0)
    with pytest.raises(ValueError, match="eps"):
        ema_update(e, z, idx, state, eps=-1.0)
    with pytest.raises(ValueError, match="indices"):
        ema_update(e, z, idx + 4, state)
    with pytest.raises(ValueError, match="indices"):
        ema_update(e, z, idx[:3], state)
    with pytest.raises(ValueError, match="state"):
        ema_update(e, z, idx, EMAState(state.cluster_size[:2], state.embed_sum))


def test_restart_dead_codes():
    z, e = _data(n=50, k=6, d=3, seed=11)
    state = EMAState(torch.tensor([5.0, 0.1, 3.0, 0.0, 2.0, 0.5], dtype=torch.float64), e * 2)
    new, st_, dead = restart_dead_codes(e, state, z, threshold=1.0, generator=_gen())
    assert dead.tolist() == [False, True, False, True, False, True]
    torch.testing.assert_close(new[~dead], e[~dead])
    for k in torch.nonzero(dead).flatten():
        assert ((z - new[k]).abs().sum(1) == 0).any()  # each restarted code is one of the batch vectors
    assert torch.allclose(st_.cluster_size[dead], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(st_.embed_sum[dead] / st_.cluster_size[dead, None], new[dead])
    # nothing dead: unchanged copies; fewer vectors than dead codes: sampled with replacement
    _, _, none = restart_dead_codes(e, EMAState(torch.ones(6, dtype=torch.float64) * 9, e), z, 1.0)
    assert not none.any()
    new2, _, dead2 = restart_dead_codes(e, EMAState(torch.zeros(6, dtype=torch.float64), e), z[:1], 1.0)
    assert dead2.all() and torch.allclose(new2, z[:1].expand(6, -1))
    with pytest.raises(ValueError, match="threshold"):
        restart_dead_codes(e, state, z, threshold=0.0)
    with pytest.raises(ValueError, match="z must hold"):
        restart_dead_codes(e, state, z[:0], threshold=1.0)


# ---------------------------------------------------------------- usage metrics


def test_perplexity_bounds_and_values():
    k = 8
    assert perplexity(torch.zeros(100, dtype=torch.long), k) == pytest.approx(1.0)
    assert perplexity(torch.arange(k).repeat(5), k) == pytest.approx(k)
    idx = torch.randint(k, (500,), generator=_gen())
    p = code_usage(idx, k)
    assert float(p.sum()) == pytest.approx(1.0)
    ppl = perplexity(idx, k)
    assert ppl >= 1.0 and ppl <= k
    nz = p[p > 0]
    assert ppl == pytest.approx(math.exp(-float((nz * nz.log()).sum())))
    assert dead_codes(torch.tensor([0, 0, 3]), 5) == 3
    assert dead_codes(torch.zeros(0, dtype=torch.long), 5) == 5
    with pytest.raises(ValueError, match="indices is empty"):
        perplexity(torch.zeros(0, dtype=torch.long), k)
    with pytest.raises(ValueError, match="indices must lie"):
        perplexity(torch.tensor([9]), k)
    with pytest.raises(ValueError, match="num_codes"):
        dead_codes(torch.tensor([0]), 0)
    with pytest.raises(TypeError, match="integer"):
        code_usage(torch.tensor([0.0]), k)


@settings(max_examples=30, deadline=None, database=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=60))
def test_perplexity_property(values):
    idx = torch.tensor(values)
    ppl = perplexity(idx, 10)
    used = 10 - dead_codes(idx, 10)
    assert ppl >= 1.0 - 1e-9 and ppl <= used + 1e-9  # at most the number of used codes


# ---------------------------------------------------------------- k-means, inits, patches


def test_kmeans_recovers_separated_clusters_and_is_a_fixed_point():
    g = _gen(12)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    x = centres.repeat(50, 1) + 0.1 * torch.randn(150, 2, generator=g, dtype=torch.float64)
    c, idx = kmeans(x, 3, iters=20, generator=_gen(0))
    found = sorted(map(tuple, c.round().tolist()))
    assert found == sorted(map(tuple, centres.tolist()))
    state = EMAState(torch.ones(3, dtype=torch.float64), c)
    again, _ = ema_update(c, x, idx, state, decay=0.0, eps=0.0)
    torch.testing.assert_close(again, c)
    with pytest.raises(ValueError, match="num_codes"):
        kmeans(x, 0)
    with pytest.raises(ValueError, match="x is empty"):
        kmeans(x[:0], 3)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        kmeans(x.long(), 3)
    c1, _ = kmeans(x[:2], 5, iters=3, generator=_gen())  # more codes than points is allowed
    assert c1.shape == (5, 2)


def test_codebook_inits_registry():
    z = torch.randn(200, 4, generator=_gen())
    for name in CODEBOOK_INITS:
        e = codebook_init(name, z, 8, generator=_gen())
        assert e.shape == (8, 4) and e.dtype == z.dtype and torch.isfinite(e).all()
    assert codebook_init("uniform", z, 8, generator=_gen()).abs().max() <= 1 / 8
    with pytest.raises(ValueError, match="name"):
        codebook_init("nope", z, 8)


# ---------------------------------------------------------------- modules and training


def test_vector_quantizer_module_and_ema_is_not_a_parameter():
    vq = VectorQuantizer(8, 4, update="ema")
    assert not any(p is vq.codebook for p in vq.parameters())
    vq_loss = VectorQuantizer(8, 4, update="loss")
    assert any(p is vq_loss.codebook for p in vq_loss.parameters())
    z = torch.randn(2, 4, 3, 3, generator=_gen())
    q = vq(z)
    assert q.z_st.shape == z.shape and q.indices.shape == (2, 3, 3)
    assert float(q.codebook_loss) > 0 and float(q.loss) == pytest.approx(0.25 * float(q.commitment_loss))
    with pytest.raises(ValueError, match="update"):
        VectorQuantizer(8, 4, update="sgd")
    with pytest.raises(ValueError, match="num_codes"):
        VectorQuantizer(0, 4)
    with pytest.raises(ValueError, match="codebook must have shape"):
        vq.set_codebook(torch.zeros(3, 4))


def test_code_prior_is_causal_learns_and_samples():
    g = _gen(13)
    # a structured code distribution: each grid is a constant code drawn from {0..3}
    codes = torch.randint(4, (400, 1, 1), generator=g).expand(400, 2, 2).contiguous()
    untrained = CodePrior(8, grid=(2, 2), d_model=32, heads=2, layers=1, seed=0)
    # causality: changing the last code does not change any logit
    a, b = codes[:1].clone(), codes[:1].clone()
    b[0, 1, 1] = 7
    torch.testing.assert_close(untrained(a), untrained(b))
    (prior,), hist = train_priors([codes], [0], num_codes=8, d_model=32, heads=2, layers=1, epochs=30,
                                  batch_size=100, lr=1e-2)  # fmt: skip
    bits = prior_nll_bits(prior, codes)
    # ideal: log2(4) = 2 bits for the first code, ~0 after; uniform over 8 codes: 12 bits
    assert bits < 4.0 < unigram_bits(codes, codes, 8) and hist[-1] < hist[0]
    s = sample_codes(prior, 50, generator=_gen(1))
    assert s.shape == (50, 2, 2) and s.max() < 8
    constant = (s == s[:, :1, :1]).reshape(50, -1).all(1).float().mean()
    assert constant > 0.8
    with pytest.raises(ValueError, match="temperature"):
        sample_codes(prior, 2, temperature=0.0)
    with pytest.raises(ValueError, match="heads"):
        CodePrior(8, d_model=30, heads=4)
    with pytest.raises(ValueError, match="codes must lie"):
        prior_nll_bits(prior, codes + 8)


def test_uniform_bits_is_positions_times_log2_codes():
    assert uniform_bits(16, 32) == 80.0
    assert uniform_bits(64, 17) == pytest.approx(64 * math.log(17) / math.log(2), rel=1e-15)
    assert uniform_bits(10, 1) == 0.0
    with pytest.raises(ValueError, match="positions"):
        uniform_bits(0, 4)
    with pytest.raises(ValueError, match="num_codes"):
        uniform_bits(4, 2.0)


# ---------------------------------------------------------------- parity with vector-quantize-pytorch


def _peer(dim: int, k: int, codebook: torch.Tensor, decay: float = 0.8) -> VectorQuantize:
    vq = VectorQuantize(
        dim=dim, codebook_size=k, rotation_trick=False, commitment_weight=0.25, decay=decay,
        threshold_ema_dead_code=0, kmeans_init=False,
    )  # fmt: skip
    with torch.no_grad():
        vq._codebook.embed.copy_(codebook[None])
        vq._codebook.embed_avg.copy_(codebook[None])
        vq._codebook.cluster_size.fill_(1.0)
    return vq


def test_parity_with_vector_quantize_pytorch_forward_ste_and_commitment():
    g = _gen(14)
    d, k = 8, 32
    codebook = torch.randn(k, d, generator=g)
    x = torch.randn(4, 50, d, generator=g)
    peer = _peer(d, k, codebook).train()
    xp = x.clone().requires_grad_(True)
    q_peer, idx_peer, loss_peer = peer(xp)
    xo = x.clone().requires_grad_(True)
    ours = quantize(xo, codebook, beta=0.25, codebook_weight=0.0)
    assert torch.equal(idx_peer, ours.indices)
    torch.testing.assert_close(q_peer, ours.z_st, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss_peer, ours.loss, rtol=1e-5, atol=1e-7)
    w = torch.randn(4, 50, d, generator=g)
    (gp,) = torch.autograd.grad((q_peer * w).sum() + loss_peer, xp)
    (go,) = torch.autograd.grad((ours.z_st * w).sum() + ours.loss, xo)
    torch.testing.assert_close(gp, go, rtol=1e-5, atol=1e-6)
    # eval mode (the training call above moved the peer's codebook by one EMA step): same codes, no update
    peer.eval()
    updated = peer._codebook.embed[0].clone()
    with torch.no_grad():
        q_eval, idx_eval, _ = peer(x)
    assert torch.equal(idx_eval, nearest_code(x, updated))
    torch.testing.assert_close(q_eval, updated[idx_eval])
    torch.testing.assert_close(peer._codebook.embed[0], updated)


def test_parity_with_vector_quantize_pytorch_ema_step():
    g = _gen(15)
    d, k, decay = 4, 16, 0.8
    codebook = torch.randn(k, d, generator=g)
    x = torch.randn(2, 100, d, generator=g)
    peer = _peer(d, k, codebook, decay=decay).train()
    with torch.no_grad():
        _, idx, _ = peer(x)
    state = EMAState(torch.ones(k), codebook.clone())
    new, st_ = ema_update(codebook, x, idx, state, decay=decay, eps=1e-5)
    torch.testing.assert_close(peer._codebook.cluster_size[0], st_.cluster_size, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(peer._codebook.embed_avg[0], st_.embed_sum, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(peer._codebook.embed[0], new, rtol=1e-5, atol=1e-6)

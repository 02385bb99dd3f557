"""The benchmark cases: kexue against maintained peers on the same inputs, after a parity check.

Each case is a function ``(limits) -> list[Result]`` registered in :data:`CASES`. Before any
timing, every implementation's output is compared with kexue's (same inputs, tolerance stated),
so a fast wrong answer cannot be reported. Ratios are peer seconds / kexue seconds (> 1 means
kexue is faster).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.harness import Result, Timing, median_seconds

CASES: dict[str, Callable[[dict], list[Result]]] = {}


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn

    return register


def _close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = 1e-4, rtol: float = 1e-4) -> None:
    if not torch.allclose(a, b, atol=atol, rtol=rtol):
        raise AssertionError(f"{what}: outputs differ (max abs diff {(a - b).abs().max().item():.3g})")


# ----------------------------------------------------------------------------------- RoPE


@case("rope")
def rope_apply(limits: dict) -> list[Result]:
    """RoPE on q and k of shape (1, 32, 4096, 128) float32, positions 0..4095."""
    from rotary_embedding_torch import RotaryEmbedding
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from kexue import rope

    b, h, n, d = 1, 32, 4096, 128
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(b, h, n, d, generator=g), torch.randn(b, h, n, d, generator=g)
    pos = torch.arange(n)
    theta = rope.frequencies(d)
    # Hugging Face: cos/sin tables of shape (batch, seq, d) built once, as a model does per forward.
    # Angles in float64 for both (HF's own float32 angles drift by ~1e-3 at position 4095, which
    # would test table precision, not the rotation), then float32 tables.
    ang = rope.rope_angles(pos, theta)
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos().float()[None], emb.sin().float()[None]
    ours_half = lambda: (rope.apply_rope(q, pos, theta, "half"), rope.apply_rope(k, pos, theta, "half"))
    hf = lambda: apply_rotary_pos_emb(q, k, cos, sin)
    oq, ok = ours_half()
    hq, hk = hf()
    _close(oq, hq, "rope half vs HF")
    _close(ok, hk, "rope half vs HF")
    rot = RotaryEmbedding(dim=d)
    ours_inter = lambda: (rope.apply_rope(q, pos, theta), rope.apply_rope(k, pos, theta))
    ret = lambda: (rot.rotate_queries_or_keys(q), rot.rotate_queries_or_keys(k))
    # rotary-embedding-torch forms position x frequency in float32: ~1e-3 off at position 4095.
    _close(ours_inter()[0], ret()[0], "rope interleaved vs rotary-embedding-torch", atol=5e-3, rtol=0)
    qc, kc = torch.empty_like(q), torch.empty_like(k)
    copy = lambda: (qc.copy_(q), kc.copy_(k))
    moved = 2 * 2 * q.numel() * q.element_size()  # read and write q and k
    impls = [("kexue (half)", ours_half), ("kexue (interleaved)", ours_inter), ("HF apply_rotary_pos_emb", hf),
             ("rotary-embedding-torch", ret), ("copy q, k (limit)", copy)]
    # kexue's fast path: tables built once per length, outputs written into reused buffers.
    tq, tk = torch.empty_like(q), torch.empty_like(k)
    for layout, want in (("half", hq), ("interleaved", ours_inter()[0])):
        c, s_ = rope.rope_tables(pos, theta, q.dtype)
        _close(rope.apply_rope_tables(q, c, s_, layout, out=tq), want, f"kexue tables ({layout})")
    c, s_ = rope.rope_tables(pos, theta, q.dtype)
    impls.insert(0, ("kexue apply_rope_tables (half)",
                     lambda: (rope.apply_rope_tables(q, c, s_, "half", out=tq),
                              rope.apply_rope_tables(k, c, s_, "half", out=tk))))
    impls.insert(0, ("kexue apply_rope_tables (interleaved)",
                     lambda: (rope.apply_rope_tables(q, c, s_, "interleaved", out=tq),
                              rope.apply_rope_tables(k, c, s_, "interleaved", out=tk))))
    timings = []
    for name, fn in impls:
        s = median_seconds(fn)
        timings.append(Timing(name, s, gb_per_s=moved / s / 1e9))
    ref = timings[0]
    return [Result("RoPE apply", f"q, k: {b}x{h}x{n}x{d} float32", ref.impl, timings,
                   limit="copy bandwidth measured in this run",
                   limit_fraction=ref.gb_per_s / limits["copy_gb_per_s"])]


# ----------------------------------------------------------------------------------- VQ


@case("vq")
def nearest_code(limits: dict) -> list[Result]:
    """Nearest-code search, kexue vs vector-quantize-pytorch's forward (eval, same codebook)."""
    from vector_quantize_pytorch import VectorQuantize

    from kexue import vqvae

    out = []
    for n, kk, d in [(16384, 512, 64), (65536, 1024, 64)]:
        g = torch.Generator().manual_seed(0)
        z, codebook = torch.randn(n, d, generator=g), torch.randn(kk, d, generator=g)
        norms = codebook.pow(2).sum(1)
        vq = VectorQuantize(dim=d, codebook_size=kk, decay=0.99, commitment_weight=0.25).eval()
        with torch.no_grad():
            vq._codebook.embed.copy_(codebook[None])
        vq._codebook.initted.fill_(True)
        ours = lambda: vqvae.nearest_code(z, codebook, norms)
        reference = lambda: vqvae.nearest_code_reference(z, codebook)

        def theirs():
            with torch.no_grad():
                return vq(z[None])

        idx = ours()
        _, their_idx, _ = theirs()
        agree = (idx == their_idx[0]).float().mean().item()
        if agree < 0.999:  # ties between float32 distances may differ in a handful of rows
            raise AssertionError(f"nearest code: only {agree:.4f} of indices agree with vector-quantize-pytorch")
        if n <= 16384 and not torch.equal(idx, reference()):
            raise AssertionError("nearest code: fast path disagrees with the slow reference")
        flops = 2 * n * kk * d
        timings = []
        for name, fn in [("kexue nearest_code", ours), ("vector-quantize-pytorch forward", theirs)]:
            s = median_seconds(fn)
            timings.append(Timing(name, s, gflop_per_s=flops / s / 1e9))
        out.append(Result("Nearest code", f"N={n}, K={kk}, D={d} float32", timings[0].impl, timings,
                          limit="GEMM throughput measured in this run",
                          limit_fraction=timings[0].gflop_per_s / limits["gemm_gflop_per_s"]))
    return out


# ----------------------------------------------------------------------------------- HSIC


@case("hsic")
def hsic_statistic(limits: dict) -> list[Result]:
    """Normalised unbiased HSIC from points (Gaussian kernels): kexue's tiled path and its Gram-matrix
    path vs hyppo, plus the O(n^3) form."""
    from hyppo.independence import Hsic

    from kexue import hsic

    out = []
    for n in (500, 2000, 4000, 8000):
        g = torch.Generator().manual_seed(n)
        x = torch.randn(n, 2, generator=g, dtype=torch.float64)
        y = x[:, :1] ** 2 + 0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
        s = hsic.median_bandwidth(x)

        def ours():
            return hsic.hsic_gaussian(x, y, s, s, estimator="unbiased", normalized=True)

        def ours_grams():
            return hsic.normalized_hsic(hsic.gaussian_kernel(x, s), hsic.gaussian_kernel(y, s), "unbiased")

        peer = Hsic(bias=False, gamma=1.0 / (2 * s * s))
        xn, yn = x.numpy(), y.numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs_value = peer.statistic(xn, yn)
        for name, fn in (("tiled", ours), ("Gram", ours_grams)):
            if not math.isclose(theirs_value, fn().item(), rel_tol=1e-8, abs_tol=1e-12):
                raise AssertionError(f"HSIC n={n}: hyppo {theirs_value} vs kexue {name} path {fn().item()}")

        def theirs():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return peer.statistic(xn, yn)

        K, L = hsic.gaussian_kernel(x, s), hsic.gaussian_kernel(y, s)
        _close(hsic.hsic(K, L), hsic.hsic_reference(K, L), f"HSIC n={n} fast vs reference", atol=1e-12, rtol=1e-9)
        impls = [("kexue hsic_gaussian (tiled, from points)", ours), ("hyppo Hsic.statistic", theirs),
                 ("kexue Gram matrices -> normalized_hsic", ours_grams),
                 ("kexue hsic on given Grams", lambda: hsic.hsic(K, L))]
        if n <= 2000:  # the centring-matrix form is O(n^3): 8000 would take minutes
            impls.append(("naive trace(KHLH)/n^2, O(n^3)", lambda: hsic.hsic_reference(K, L)))
        timings = [Timing(name, median_seconds(fn, min_run_time=0.5 if n < 8000 else 0.1)) for name, fn in impls]
        out.append(Result("HSIC statistic", f"n={n}, float64", timings[0].impl, timings))
    return out


# ----------------------------------------------------------------------------------- spectral norm


@case("spectral")
def spectral_step(limits: dict) -> list[Result]:
    """One training-time spectral-normalisation step, kexue vs torch's parametrization."""
    from torch.nn.utils.parametrizations import spectral_norm

    from kexue import lipschitz

    out = []
    for size in (1024, 4096):
        g = torch.Generator().manual_seed(size)
        lin = nn.Linear(size, size, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(size, size, generator=g) / math.sqrt(size))
        W = lin.weight.detach().clone()
        torch.manual_seed(0)
        ref_mod = spectral_norm(nn.Linear(size, size, bias=False))
        with torch.no_grad():
            ref_mod.parametrizations.weight.original.copy_(W)
        p = ref_mod.parametrizations.weight[0]
        u, v = p._u.clone(), p._v.clone()
        step = lipschitz.spectral_normalize(W, u, v, n_iter=1)
        ref_mod.train()
        their_w = ref_mod.weight
        _close(step.weight, their_w.detach(), f"spectral norm {size}: weight", atol=1e-5, rtol=1e-4)
        ours = lambda: lipschitz.spectral_normalize(W, u, v, n_iter=1)

        def theirs():
            with torch.no_grad():
                return ref_mod.weight

        timings = []
        for name, fn in [("kexue spectral_normalize", ours), ("torch parametrizations.spectral_norm", theirs)]:
            s = median_seconds(fn)
            timings.append(Timing(name, s, gb_per_s=2 * W.numel() * W.element_size() / s / 1e9))
        out.append(Result("Spectral normalisation step", f"{size}x{size} float32, 1 power iteration",
                          timings[0].impl, timings, limit="copy bandwidth (the step reads W about twice)",
                          limit_fraction=timings[0].gb_per_s / limits["copy_gb_per_s"]))
    return out


# ----------------------------------------------------------------------------------- Glow


@case("glow")
def glow_step(limits: dict) -> list[Result]:
    """One Glow step (ActNorm, LU 1x1 conv, affine coupling), forward + log-det, kexue vs normflows."""
    import normflows as nf

    from kexue import flow

    torch.manual_seed(0)
    c, hidden, hw, batch = 16, 128, 16, 64
    ours = flow.GlowStep(c, hidden=hidden, permutation="lu", coupling="sigmoid")
    theirs = nf.flows.GlowBlock(c, hidden, scale=True, scale_map="sigmoid", split_mode="channel", use_lu=True)
    x = torch.randn(batch, c, hw, hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours(x)  # data-dependent ActNorm initialisation, then the timed calls are plain forwards
        theirs.inverse(x)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())

    def run_ours():
        with torch.no_grad():
            return ours(x)

    def run_theirs():
        with torch.no_grad():
            return theirs.inverse(x)  # normflows' data -> latent direction

    for name, (z, ld) in (("kexue", run_ours()), ("normflows", run_theirs())):
        if not (torch.isfinite(z).all() and torch.isfinite(ld).all()):
            raise AssertionError(f"Glow step ({name}) produced non-finite output")
    timings = [Timing(f"kexue GlowStep ({n_ours:,} params)", median_seconds(run_ours)),
               Timing(f"normflows GlowBlock ({n_theirs:,} params)", median_seconds(run_theirs))]
    return [Result("Glow step", f"batch {batch}, {c}x{hw}x{hw}, hidden {hidden}, forward + log-det",
                   timings[0].impl, timings)]


# ----------------------------------------------------------------------------------- DGCNN


@case("dgcnn")
def dgcnn_encoder(limits: dict) -> list[Result]:
    """DGCNN encoder (dilations 1, 2, 4, 8, 1) vs a 5-layer BiLSTM of similar size, forward + backward."""
    from kexue import dgcnn
    from kexue.experiments.dgcnn import BiLSTMEncoder

    torch.manual_seed(0)
    batch, seq, d = 32, 128, 64
    enc = dgcnn.DGCNNEncoder(d, (1, 2, 4, 8, 1))
    lstm = BiLSTMEncoder(d, num_layers=5)
    x = torch.randn(batch, seq, d, generator=torch.Generator().manual_seed(1), requires_grad=True)
    n_enc = sum(p.numel() for p in enc.parameters())
    n_lstm = sum(p.numel() for p in lstm.parameters())

    def run(m):
        def fn():
            y = m(x)
            y.sum().backward()
            return y

        return fn

    for m in (enc, lstm):
        y = run(m)()
        if y.shape != x.shape or not torch.isfinite(y).all():
            raise AssertionError(f"{type(m).__name__} output has the wrong shape or is not finite")
    timings = [Timing(f"kexue DGCNNEncoder ({n_enc:,} params)", median_seconds(run(enc))),
               Timing(f"BiLSTM x5, torch.nn.LSTM ({n_lstm:,} params)", median_seconds(run(lstm)))]
    return [Result("Sequence encoder", f"batch {batch}, length {seq}, width {d}, forward + backward",
                   timings[0].impl, timings)]

"""The benchmark cases: kexue against maintained peers on the same inputs, after a parity check.

Each case is a function ``(bench) -> list[Result]`` registered in :data:`CASES`; ``bench`` is a
[`Bench`][benchmarks.harness.Bench] (machine limits, rounds, time per round, quick mode). Before
any timing, every implementation's output is compared with kexue's (same inputs, tolerance
stated), so a fast wrong answer cannot be reported. Then all implementations of a case, and the
machine limit that applies to it, are timed in the same interleaved rounds; ratios are peer
seconds / kexue seconds within a round (> 1 means kexue is faster), medians over rounds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.harness import Bench, Result, classify, interleaved, summarise

CASES: dict[str, Callable[[Bench], list]] = {}


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
def rope_apply(bench: Bench) -> list[Result]:
    """RoPE on q and k of shape (1, 32, 4096, 128) float32, positions 0..4095.

    Three results from the same rounds: the documented ``apply_rope`` (fresh output, tables computed
    per call) against Hugging Face and rotary-embedding-torch, the fast path with tables built
    once and outputs written into reused buffers against a copy of q and k, and that fast path with
    ``compiled=True`` (its kernel built during the parity check, before any timing).
    """
    from rotary_embedding_torch import RotaryEmbedding
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from kexue import rope

    b, h, n, d = 1, 32, (1024 if bench.quick else 4096), 128
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
    rot = RotaryEmbedding(dim=d)
    c, s_ = rope.rope_tables(pos, theta, q.dtype)
    tq, tk, cq, ck = (torch.empty_like(q) for _ in range(4))
    impls = {
        "kexue apply_rope (half)": lambda: (rope.apply_rope(q, pos, theta, "half"),
                                            rope.apply_rope(k, pos, theta, "half")),
        "kexue apply_rope (interleaved)": lambda: (rope.apply_rope(q, pos, theta), rope.apply_rope(k, pos, theta)),
        "HF apply_rotary_pos_emb": lambda: apply_rotary_pos_emb(q, k, cos, sin),
        "rotary-embedding-torch": lambda: (rot.rotate_queries_or_keys(q), rot.rotate_queries_or_keys(k)),
        "kexue apply_rope_tables (half)": lambda: (rope.apply_rope_tables(q, c, s_, "half", out=tq),
                                                   rope.apply_rope_tables(k, c, s_, "half", out=tk)),
        "kexue apply_rope_tables (interleaved)": lambda: (rope.apply_rope_tables(q, c, s_, "interleaved", out=tq),
                                                          rope.apply_rope_tables(k, c, s_, "interleaved", out=tk)),
        "kexue apply_rope_tables (half, compiled)": lambda: (
            rope.apply_rope_tables(q, c, s_, "half", out=tq, compiled=True),
            rope.apply_rope_tables(k, c, s_, "half", out=tk, compiled=True)),
        "copy q, k (limit)": lambda: (cq.copy_(q), ck.copy_(k)),
    }
    # parity: every kexue path against the peer with the same layout
    hq, hk = impls["HF apply_rotary_pos_emb"]()
    compiled = "kexue apply_rope_tables (half, compiled)"
    try:
        impls[compiled]()  # builds the kernel before any timing
    except RuntimeError as exc:  # no C++ compiler for torch.compile on this machine: leave that path out
        print(f"  (RoPE: {compiled} left out: {exc})", flush=True)
        del impls[compiled]
    for name in ("kexue apply_rope (half)", "kexue apply_rope_tables (half)", compiled):
        if name not in impls:
            continue
        oq, ok = impls[name]()
        _close(oq, hq, f"{name} vs HF")
        _close(ok, hk, f"{name} vs HF")
    # rotary-embedding-torch forms position x frequency in float32: ~1e-3 off at position 4095.
    rq = rot.rotate_queries_or_keys(q)
    for name in ("kexue apply_rope (interleaved)", "kexue apply_rope_tables (interleaved)"):
        _close(impls[name]()[0], rq, f"{name} vs rotary-embedding-torch", atol=5e-3, rtol=0)
    seconds = interleaved(impls, bench.rounds, bench.budget)
    moved = 2 * 2 * q.numel() * q.element_size()  # read and write q and k
    nbytes = dict.fromkeys(impls, moved)
    kind, why = classify(6 * q.numel(), moved, bench.limits)  # 6 flops per pair, 3 per element, q and k
    problem = f"q, k: {b}x{h}x{n}x{d} float32"
    results = [
        summarise("RoPE apply (fresh output, tables per call)", problem, "kexue apply_rope (half)", seconds,
                  names=["kexue apply_rope (half)", "kexue apply_rope (interleaved)", "HF apply_rotary_pos_emb",
                         "rotary-embedding-torch", "copy q, k (limit)"],
                  bytes_moved=nbytes, limit_impl="copy q, k (limit)", limit="copy bandwidth (same rounds)",
                  bound=kind, bound_reason=why),
        summarise("RoPE apply (fast path: tables once, reused buffers)", problem, "kexue apply_rope_tables (half)",
                  seconds, names=[n_ for n_ in ("kexue apply_rope_tables (half)", "kexue apply_rope_tables (interleaved)",
                                                compiled, "HF apply_rotary_pos_emb", "copy q, k (limit)") if n_ in impls],
                  bytes_moved=nbytes, limit_impl="copy q, k (limit)", limit="copy bandwidth (same rounds)",
                  bound=kind, bound_reason=why),
    ]
    if compiled in impls:
        results.append(summarise(
            "RoPE apply (fast path, compiled=True: torch.compile kernel, tables once, reused buffers)", problem,
            compiled, seconds, names=[compiled, "kexue apply_rope_tables (half)", "HF apply_rotary_pos_emb",
                                      "copy q, k (limit)"],
            bytes_moved=nbytes, limit_impl="copy q, k (limit)", limit="copy bandwidth (same rounds)",
            bound=kind, bound_reason=why))
    return results


# ----------------------------------------------------------------------------------- VQ


@case("vq")
def nearest_code(bench: Bench) -> list[Result]:
    """Nearest-code search, kexue vs vector-quantize-pytorch's forward (eval, same codebook)."""
    from vector_quantize_pytorch import VectorQuantize

    from kexue import vqvae

    out = []
    sizes = [(16384, 512, 64)] if bench.quick else [(16384, 512, 64), (65536, 1024, 64)]
    for n, kk, d in sizes:
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
        m = 2048
        a, b_, prod = torch.randn(m, m, generator=g), torch.randn(m, m, generator=g), torch.empty(m, m)
        impls = {"kexue nearest_code": ours, "vector-quantize-pytorch forward": theirs,
                 "GEMM 2048x2048 (limit)": lambda: torch.mm(a, b_, out=prod)}
        seconds = interleaved(impls, bench.rounds, bench.budget)
        flops = {"kexue nearest_code": 2 * n * kk * d, "vector-quantize-pytorch forward": 2 * n * kk * d,
                 "GEMM 2048x2048 (limit)": 2 * m**3}
        kind, why = classify(2 * n * kk * d, 4 * (n * d + kk * d + n * kk), bench.limits)
        out.append(summarise("Nearest code", f"N={n}, K={kk}, D={d} float32", "kexue nearest_code", seconds,
                             flops=flops, limit_impl="GEMM 2048x2048 (limit)",
                             limit="float32 GEMM throughput (same rounds)", bound=kind, bound_reason=why))
    return out


# ----------------------------------------------------------------------------------- HSIC


@case("hsic")
def hsic_statistic(bench: Bench) -> list[Result]:
    """Normalised unbiased HSIC from points (Gaussian kernels): kexue's tiled path and its Gram-matrix
    path vs hyppo, plus the O(n^3) form. Larger n are on the cost curve."""
    from hyppo.independence import Hsic

    from kexue import hsic

    out = []
    for n in (500,) if bench.quick else (500, 2000, 4000):
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
        impls = {"kexue hsic_gaussian (tiled, from points)": ours, "hyppo Hsic.statistic": theirs,
                 "kexue Gram matrices -> normalized_hsic": ours_grams,
                 "kexue hsic on given Grams": lambda: hsic.hsic(K, L)}
        if n <= 2000:  # the centring-matrix form is O(n^3)
            impls["naive trace(KHLH)/n^2, O(n^3)"] = lambda: hsic.hsic_reference(K, L)
        seconds = interleaved(impls, bench.rounds, bench.budget)
        out.append(summarise("HSIC statistic", f"n={n}, float64", "kexue hsic_gaussian (tiled, from points)",
                             seconds, bound="compute",
                             bound_reason="n^2 kernel values, each an exp, computed in cache-sized tiles; "
                                          "nothing of size n^2 goes through memory"))
    return out


# ----------------------------------------------------------------------------------- spectral norm


@case("spectral")
def spectral_step(bench: Bench) -> list[Result]:
    """One training-time spectral-normalisation step, kexue vs torch's parametrization.

    The reference is kexue's module in training mode, like torch's side (a parametrization module):
    its output of 32 MiB and more reuses the memory of the previous one once that is free. The
    function ``spectral_normalize`` (a fresh output every call) is the second row.
    """
    from torch.nn.utils.parametrizations import spectral_norm

    from kexue import lipschitz

    out = []
    for size in (1024,) if bench.quick else (1024, 4096):
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
        slow = lipschitz.spectral_normalize_reference(W, u, v, n_iter=1)
        _close(step.weight, slow.weight, f"spectral norm {size}: fast vs reference", atol=1e-6, rtol=1e-5)
        # kexue's module, as a layer uses it: the same vectors, training mode (one iteration per call)
        mine = lipschitz.SpectralNorm(W, warmup=0)
        with torch.no_grad():
            mine.u.copy_(u)
            mine.v.copy_(v)
            _close(mine(W), step.weight, f"spectral norm {size}: module vs function", atol=0, rtol=0)
        Wc = torch.empty_like(W)

        def theirs():
            with torch.no_grad():
                return ref_mod.weight

        def module_step():
            with torch.no_grad():
                return mine(W)

        impls = {"kexue SpectralNorm (training forward)": module_step,
                 "kexue spectral_normalize": lambda: lipschitz.spectral_normalize(W, u, v, n_iter=1),
                 "torch parametrizations.spectral_norm": theirs,
                 "copy W (limit)": lambda: Wc.copy_(W)}
        seconds = interleaved(impls, bench.rounds, bench.budget)
        nbytes = dict.fromkeys(impls, 2 * W.numel() * W.element_size())  # what a copy of W moves
        kind, why = classify(5 * W.numel(), 3 * W.numel() * W.element_size(), bench.limits)
        out.append(summarise("Spectral normalisation step", f"{size}x{size} float32, 1 power iteration",
                             "kexue SpectralNorm (training forward)", seconds, bytes_moved=nbytes,
                             limit_impl="copy W (limit)",
                             limit="copy bandwidth (rate = bytes of one copy of W / time)",
                             bound=kind, bound_reason=why))
    return out


# ----------------------------------------------------------------------------------- Glow


@case("glow")
def glow_step(bench: Bench) -> list[Result]:
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
    ours_name, theirs_name = f"kexue GlowStep ({n_ours:,} params)", f"normflows GlowBlock ({n_theirs:,} params)"
    seconds = interleaved({ours_name: run_ours, theirs_name: run_theirs}, bench.rounds, bench.budget)
    return [summarise("Glow step", f"batch {batch}, {c}x{hw}x{hw}, hidden {hidden}, forward + log-det",
                      ours_name, seconds, bound="compute", bound_reason="convolutions")]


# ----------------------------------------------------------------------------------- DGCNN


@case("dgcnn")
def dgcnn_encoder(bench: Bench) -> list[Result]:
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
    enc_name, lstm_name = f"kexue DGCNNEncoder ({n_enc:,} params)", f"BiLSTM x5, torch.nn.LSTM ({n_lstm:,} params)"
    seconds = interleaved({enc_name: run(enc), lstm_name: run(lstm)}, bench.rounds, bench.budget)
    return [summarise("Sequence encoder", f"batch {batch}, length {seq}, width {d}, forward + backward",
                      enc_name, seconds, bound="compute", bound_reason="convolutions and recurrent matrix products")]


# ----------------------------------------------------------------------------------- cost curves


@case("curves")
def cost_curves(bench: Bench) -> list[dict]:
    """Time against problem size for RoPE, nearest code and HSIC, each curve in a child process
    with a memory budget (see ``benchmarks/curves.py``)."""
    from benchmarks import curves

    out = []
    for name in curves.SPECS:
        cmd = [sys.executable, "-m", "benchmarks.curves", "run", name] + (["--quick"] if bench.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"curve {name} failed:\n{proc.stderr[-3000:]}")
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out

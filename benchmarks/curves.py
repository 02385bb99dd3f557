"""Cost curves: time against problem size for kexue and its peers, on a geometric grid.

Each curve runs in its own child process (``python -m benchmarks.curves NAME``) whose address
space is capped at its size after start-up plus a memory budget (``RLIMIT_AS``), so a peer that
needs more memory fails with an allocation error instead of swapping, and is marked "out of
memory" from that size on. An implementation whose next call would take longer than the time cap
(predicted from its last two points) is marked "time cap" and not run further. Every point that
runs is the median of interleaved rounds (at least three) of about ``BUDGET`` seconds each.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmarks.harness import THREADS, fit_slope

MEMORY_GB = 4.0  # address space each curve may use beyond its start-up size
TIME_CAP = 3.0  # seconds per call
ROUNDS = 3
BUDGET = 0.1  # seconds per implementation per round


@dataclass
class CurveSpec:
    name: str
    x_label: str
    problem: str  # with {size} where the size goes
    sizes: list[int]
    quick_sizes: list[int]
    setup: Callable[[int], dict[str, Callable[[], object]]]  # size -> {impl: fn}; kexue first
    limit: str | None = None  # the impl that is the machine's limit (drawn dashed), if any
    fit_above: int = 0  # slopes fitted on sizes >= this (below it, fixed overheads dominate)
    notes: dict[str, str] = field(default_factory=dict)


SPECS: dict[str, Callable[[], CurveSpec]] = {}


def spec(fn: Callable[[], CurveSpec]) -> Callable[[], CurveSpec]:
    SPECS[fn.__name__] = fn
    return fn


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(
        words in text for words in ("can't allocate memory", "cannot allocate memory", "not enough memory"))


# ----------------------------------------------------------------------------------- the curves


@spec
def rope() -> CurveSpec:
    from rotary_embedding_torch import RotaryEmbedding
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from kexue import rope as R

    d, heads = 128, 8
    theta = R.frequencies(d)
    rot = RotaryEmbedding(dim=d)

    def setup(n: int) -> dict[str, Callable[[], object]]:
        g = torch.Generator().manual_seed(n)
        q, k = torch.randn(1, heads, n, d, generator=g), torch.randn(1, heads, n, d, generator=g)
        pos = torch.arange(n)
        ang = R.rope_angles(pos, theta)
        emb = torch.cat((ang, ang), dim=-1)
        cos, sin = emb.cos().float()[None], emb.sin().float()[None]
        c, s = R.rope_tables(pos, theta, q.dtype)
        tq, tk, cq, ck = (torch.empty_like(q) for _ in range(4))
        return {
            "kexue apply_rope (half)": lambda: (R.apply_rope(q, pos, theta, "half"), R.apply_rope(k, pos, theta, "half")),
            "kexue apply_rope_tables (half, reused buffers)": lambda: (
                R.apply_rope_tables(q, c, s, "half", out=tq), R.apply_rope_tables(k, c, s, "half", out=tk)),
            "HF apply_rotary_pos_emb": lambda: apply_rotary_pos_emb(q, k, cos, sin),
            "rotary-embedding-torch": lambda: (rot.rotate_queries_or_keys(q), rot.rotate_queries_or_keys(k)),
            "copy q, k (limit)": lambda: (cq.copy_(q), ck.copy_(k)),
        }

    return CurveSpec("RoPE apply", "sequence length L", f"q, k: 1x{heads}xLx{d} float32",
                     [2**i for i in range(9, 17)], [512, 2048, 8192], setup, limit="copy q, k (limit)", fit_above=4096)


@spec
def vq() -> CurveSpec:
    from vector_quantize_pytorch import VectorQuantize

    from kexue import vqvae

    kk, d = 512, 64
    g = torch.Generator().manual_seed(0)
    codebook = torch.randn(kk, d, generator=g)
    norms = codebook.pow(2).sum(1)
    vq_mod = VectorQuantize(dim=d, codebook_size=kk, decay=0.99, commitment_weight=0.25).eval()
    with torch.no_grad():
        vq_mod._codebook.embed.copy_(codebook[None])
    vq_mod._codebook.initted.fill_(True)

    def setup(n: int) -> dict[str, Callable[[], object]]:
        z = torch.randn(n, d, generator=torch.Generator().manual_seed(n))
        out = torch.empty(n, kk)

        def theirs():
            with torch.no_grad():
                return vq_mod(z[None])

        return {
            "kexue nearest_code": lambda: vqvae.nearest_code(z, codebook, norms),
            "vector-quantize-pytorch forward": theirs,
            "GEMM z @ codebook.T (limit)": lambda: torch.mm(z, codebook.t(), out=out),
        }

    return CurveSpec("Nearest code", "number of vectors N", f"N vectors, K={kk}, D={d} float32",
                     [2**i for i in range(12, 22)], [4096, 32768], setup, limit="GEMM z @ codebook.T (limit)",
                     fit_above=2**15)


@spec
def hsic() -> CurveSpec:
    from hyppo.independence import Hsic

    from kexue import hsic as H

    def setup(n: int) -> dict[str, Callable[[], object]]:
        g = torch.Generator().manual_seed(n)
        x = torch.randn(n, 2, generator=g, dtype=torch.float64)
        y = x[:, :1] ** 2 + 0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
        s = 1.0  # a fixed bandwidth: the curve times the statistic, not the median heuristic
        peer = Hsic(bias=False, gamma=1.0 / (2 * s * s))
        xn, yn = x.numpy(), y.numpy()

        def theirs():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return peer.statistic(xn, yn)

        return {
            "kexue hsic_gaussian (tiled, from points)": lambda: H.hsic_gaussian(x, y, s, s, estimator="unbiased",
                                                                                normalized=True),
            "kexue Gram matrices -> normalized_hsic": lambda: H.normalized_hsic(
                H.gaussian_kernel(x, s), H.gaussian_kernel(y, s), "unbiased"),
            "hyppo Hsic.statistic": theirs,
        }

    return CurveSpec("HSIC statistic", "sample size n", "n points in 2-D and 1-D, float64, Gaussian kernels",
                     [500 * 2**i for i in range(7)], [500, 2000, 8000], setup, fit_above=4000,
                     notes={"kexue hsic_gaussian (tiled, from points)": "never builds an n x n matrix"})


# ----------------------------------------------------------------------------------- running one


def _vm_bytes() -> int:
    for line in open("/proc/self/status", encoding="ascii"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(name: str, quick: bool = False, memory_gb: float = MEMORY_GB, time_cap: float = TIME_CAP) -> dict:
    torch.set_num_threads(THREADS)
    torch.randn(1000, 1000) @ torch.randn(1000, 1000)  # start the thread pool before measuring the address space
    sp = SPECS[name]()
    sizes = sp.quick_sizes if quick else sp.sizes
    budget_bytes = int(memory_gb * 2**30)
    if sys.platform.startswith("linux"):
        resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + budget_bytes, resource.RLIM_INFINITY))
    series: dict[str, list[dict]] = {}
    active: dict[str, bool] = {}
    for size in sizes:
        gc.collect()
        try:
            fns = sp.setup(size)
        except (RuntimeError, MemoryError) as exc:
            if not _is_oom(exc):
                raise
            break  # the inputs themselves do not fit: the curve ends here for everyone
        for impl in fns:
            series.setdefault(impl, [])
            active.setdefault(impl, True)
        live = {}
        for impl, fn in fns.items():
            if not active[impl]:
                continue
            pts = [p for p in series[impl] if p["seconds"]]
            if len(pts) >= 1:  # predict this call from the last points (slope 2 if only one point)
                slope = fit_slope([p["size"] for p in pts[-2:]], [p["seconds"] for p in pts[-2:]]) if len(pts) >= 2 else 2.0
                predicted = pts[-1]["seconds"] * (size / pts[-1]["size"]) ** max(slope or 2.0, 1.0)
                if predicted > time_cap:
                    series[impl].append({"size": size, "seconds": None, "status": "time cap",
                                         "note": f"predicted {predicted:.1f} s per call > cap {time_cap:g} s"})
                    active[impl] = False
                    continue
            try:
                first = _timed(fn)  # warm-up; also the point if it is slow
            except (RuntimeError, MemoryError) as exc:
                if not _is_oom(exc):
                    raise
                series[impl].append({"size": size, "seconds": None, "status": "out of memory",
                                     "note": f"allocation failed under a {memory_gb:g} GiB budget"})
                active[impl] = False
                gc.collect()
                continue
            if first > time_cap:
                series[impl].append({"size": size, "seconds": first, "status": "ok", "rounds": [first]})
                active[impl] = False
                continue
            live[impl] = fn
        per_round: dict[str, list[float]] = {impl: [] for impl in live}
        for r in range(ROUNDS):
            names = list(live)
            for impl in names[r % len(names):] + names[:r % len(names)] if names else []:
                times, start = [], time.perf_counter()
                while not times or time.perf_counter() - start < BUDGET:
                    times.append(_timed(live[impl]))
                per_round[impl].append(statistics.median(times))
        for impl, rounds in per_round.items():
            series[impl].append({"size": size, "seconds": statistics.median(rounds), "status": "ok",
                                 "rounds": rounds})
        del fns, live
    slopes = {}
    for impl, pts in series.items():
        ok = [p for p in pts if p["seconds"] and p["size"] >= sp.fit_above]
        slopes[impl] = fit_slope([p["size"] for p in ok], [p["seconds"] for p in ok])
    return {"case": sp.name, "x_label": sp.x_label, "problem": sp.problem, "limit": sp.limit,
            "fit_above": sp.fit_above, "memory_budget_gib": memory_gb, "time_cap_s": time_cap,
            "rounds": ROUNDS, "series": series, "slopes": slopes, "notes": sp.notes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.curves")
    parser.add_argument("name", choices=sorted(SPECS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-gb", type=float, default=MEMORY_GB)
    parser.add_argument("--time-cap", type=float, default=TIME_CAP)
    args = parser.parse_args(argv)
    result = run(args.name, args.quick, args.memory_gb, args.time_cap)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bad input to kexue.vqvae and kexue.experiments.vqvae (issue 22), plus the review's worst cases.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The regression tests below the cases pin the robustness review's findings for these modules.
"""

from __future__ import annotations

import math

import pytest
import torch

from kexue import vqvae as V
from kexue.experiments import vqvae as X
from kexue.experiments.training import seeded_mlp
from tests._probe import Arg, Case, inventory_test, probe_tests

D, K = 3, 5


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _z(n: int = 6, d: int = D) -> torch.Tensor:
    return torch.randn(n, d, generator=_gen(0))


def _codebook(k: int = K, d: int = D) -> torch.Tensor:
    return torch.randn(k, d, generator=_gen(1))


def _state() -> V.EMAState:
    return V.EMAState(torch.ones(K), _codebook().clone())


def _images(n: int = 4, side: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=_gen(2))


def _prior() -> V.CodePrior:
    return V.CodePrior(K, (2, 2), d_model=8, heads=2, layers=1, seed=0)


def _codes(n: int = 3, grid: tuple[int, int] = (2, 2)) -> torch.Tensor:
    return torch.randint(K, (n, *grid), generator=_gen(3))


def _vq() -> V.VectorQuantizer:
    return V.VectorQuantizer(K, D, update="ema", dead_threshold=1.0, seed=0)


def _vqvae() -> X.VQVAE:
    return X.VQVAE(K, 2, 4, seed=0)


# ----------------------------------------------------------------------------- kexue.vqvae

_VECTORS = Arg("tensor", finite=True, nonempty=False)  # (..., D): any rank >= 1; an empty batch has a defined answer
_CODEBOOK = Arg("tensor", ndim=(2,), finite=True)
_SQNORMS = Arg("tensor", ndim=(1,), finite=True, optional=True)
_STATE = Arg("choice", name="state")  # an EMAState: None, a string and an int are all wrong
_GEN = Arg("generator", optional=True)
_NUM_CODES = Arg("int", minimum=1)


def _distances(fn):
    def call():
        cb = _codebook()
        return fn, {"z": _z(), "codebook": cb, "code_sqnorms": cb.pow(2).sum(1)}

    return call


VQ_CASES = [
    Case("squared_distances", _distances(V.squared_distances),
         {"z": _VECTORS, "codebook": _CODEBOOK, "code_sqnorms": _SQNORMS}),
    Case("nearest_code", _distances(V.nearest_code), {"z": _VECTORS, "codebook": _CODEBOOK, "code_sqnorms": _SQNORMS}),
    Case("nearest_code_reference", lambda: (V.nearest_code_reference, {"z": _z(), "codebook": _codebook()}),
         {"z": _VECTORS, "codebook": _CODEBOOK}),
    Case("straight_through", lambda: (V.straight_through, {"z": _z(), "z_q": _z() + 1}),
         {"z": Arg("tensor", nonempty=False), "z_q": Arg("tensor", nonempty=False)}),
    Case("quantize", lambda: (V.quantize, {"z": _z(), "codebook": _codebook(), "beta": 0.25, "codebook_weight": 1.0}),
         {"z": Arg("tensor", finite=True), "codebook": _CODEBOOK, "beta": Arg("real", low=0.0),
          "codebook_weight": Arg("real", low=0.0)}),
    Case("ema_update", lambda: (V.ema_update, {"codebook": _codebook(), "z": _z(),
                                               "indices": V.nearest_code(_z(), _codebook()), "state": _state(),
                                               "decay": 0.9, "eps": 1e-5}),
         {"codebook": _CODEBOOK, "z": Arg("tensor", finite=True), "indices": Arg("index_tensor"), "state": _STATE,
          "decay": Arg("real", low=0.0, high=1.0), "eps": Arg("real", low=0.0)}),
    Case("restart_dead_codes", lambda: (V.restart_dead_codes, {"codebook": _codebook(), "state": _state(), "z": _z(),
                                                               "threshold": 2.0, "generator": _gen()}),
         {"codebook": _CODEBOOK, "state": _STATE, "z": Arg("tensor", finite=True),
          "threshold": Arg("real", low=0.0, open_low=True), "generator": _GEN}),
    Case("code_usage", lambda: (V.code_usage, {"indices": torch.tensor([0, 1, 1, 4]), "num_codes": K}),
         {"indices": Arg("index_tensor"), "num_codes": _NUM_CODES}),
    Case("perplexity", lambda: (V.perplexity, {"indices": torch.tensor([0, 1, 1, 4]), "num_codes": K}),
         {"indices": Arg("index_tensor"), "num_codes": _NUM_CODES}),
    Case("dead_codes", lambda: (V.dead_codes, {"indices": torch.tensor([0, 1, 1, 4]), "num_codes": K}),
         {"indices": Arg("index_tensor", nonempty=False), "num_codes": _NUM_CODES}),
    Case("kmeans", lambda: (V.kmeans, {"x": _z(8), "num_codes": 3, "iters": 2, "generator": _gen()}),
         {"x": Arg("tensor", ndim=(2,), finite=True), "num_codes": _NUM_CODES, "iters": Arg("int", minimum=0),
          "generator": _GEN}),
    Case("codebook_init", lambda: (V.codebook_init, {"name": "kmeans", "z": _z(8), "num_codes": 3,
                                                     "generator": _gen()}),
         {"name": Arg("choice"), "z": Arg("tensor", finite=True), "num_codes": _NUM_CODES, "generator": _GEN}),
    Case("VectorQuantizer", lambda: (V.VectorQuantizer, {"num_codes": K, "dim": D, "update": "ema", "beta": 0.25,
                                                         "decay": 0.9, "eps": 1e-5, "dead_threshold": 1.0,
                                                         "init": "uniform", "seed": 0}),
         {"num_codes": _NUM_CODES, "dim": Arg("int", minimum=1), "update": Arg("choice"), "beta": Arg("real", low=0.0),
          "decay": Arg("real", low=0.0, high=1.0), "eps": Arg("real", low=0.0), "dead_threshold": Arg("real", low=0.0),
          "init": Arg("choice"), "seed": Arg("int", minimum=0)}),
    Case("VectorQuantizer.forward", lambda: (_vq(), {"z": torch.randn(2, D, 2, 2, generator=_gen())}),
         {"z": Arg("tensor", ndim=(4,), finite=True)}),
    Case("VectorQuantizer.set_codebook", lambda: (_vq().set_codebook, {"codebook": _codebook()}),
         {"codebook": _CODEBOOK}),
    Case("VectorQuantizer.update_codebook",
         lambda: (_vq().update_codebook, {"z": torch.randn(2, D, 2, 2, generator=_gen()),
                                          "indices": torch.randint(K, (2, 2, 2), generator=_gen()),
                                          "generator": _gen()}),
         {"z": Arg("tensor", ndim=(4,), finite=True), "indices": Arg("index_tensor", ndim=(3,)), "generator": _GEN}),
    Case("uniform_bits", lambda: (V.uniform_bits, {"positions": 16, "num_codes": 32}),
         {"positions": Arg("int", minimum=1), "num_codes": _NUM_CODES}),
    Case("CodePrior", lambda: (V.CodePrior, {"num_codes": K, "grid": (2, 2), "d_model": 8, "heads": 2, "layers": 1,
                                             "seed": 0}),
         {"num_codes": _NUM_CODES, "grid": Arg("int_seq", name="grid"), "d_model": Arg("int", minimum=1),
          "heads": Arg("int", minimum=1), "layers": Arg("int", minimum=1), "seed": Arg("int", minimum=0)}),
    Case("CodePrior.forward", lambda: (_prior(), {"codes": _codes()}), {"codes": Arg("index_tensor", ndim=(2, 3))},
         skip={"codes": {"one dimension too few": "a (B, T) batch of the first T cells is valid (documented): the "
                                                  "(2, 2) grid without its batch axis reads as 2 prefixes of 2 cells"}}),
    Case("prior_nll_bits", lambda: (V.prior_nll_bits, {"prior": _prior(), "codes": _codes()}),
         {"prior": Arg("module"), "codes": Arg("index_tensor", ndim=(3,))}),
    Case("sample_codes", lambda: (V.sample_codes, {"prior": _prior(), "n": 2, "temperature": 0.8, "generator": _gen()}),
         {"prior": Arg("module"), "n": Arg("int", minimum=1), "temperature": Arg("real", low=0.0, open_low=True),
          "generator": _GEN}),
]

VQ_EXEMPT = {
    "CODEBOOK_INITS": "a registry of initialisers, each called through codebook_init (probed)",
    "EMAState": "a NamedTuple of running statistics, checked by ema_update and restart_dead_codes (probed)",
    "Quantized": "a NamedTuple of results, built by quantize (probed)",
}


# ----------------------------------------------------------------------------- kexue.experiments.vqvae

_IMAGES = Arg("tensor", ndim=(4,), finite=True)
_RESHAPE_ANY_DTYPE = {
    "an int64 tensor": "a reshape: any dtype is cut into tiles unchanged (documented)",
    "a bool tensor": "as above",
    "a complex tensor": "as above",
}


def _stacked_vqvae() -> X.StackedVQVAE:
    return X.StackedVQVAE([X.VQVAE(K, 2, 4, seed=s) for s in (0, 1)])


def _stacked_prior() -> X.StackedCodePrior:
    return X.StackedCodePrior([V.CodePrior(K, (2, 2), 8, 2, 1, seed=s) for s in (0, 1)])


def _classifier() -> torch.nn.Sequential:
    return seeded_mlp([64, 8, 10], seed=0, flatten=True)


def _train_vqvaes():
    return X.train_vqvaes, {"x": _images(16), "variants": {"ema": {"update": "ema", "init": "kmeans"}}, "seeds": (0,),
                            "num_codes": 4, "dim": 2, "hidden": 4, "kernel": 3, "epochs": 1, "batch_size": 8,
                            "lr": 1e-2, "init_batch": 8, "fit_seed": 0}


def _train_priors():
    return X.train_priors, {"codes": [_codes(8), _codes(8).flip(0)], "seeds": (0, 1), "num_codes": K, "d_model": 8,
                            "heads": 2, "layers": 1, "epochs": 1, "batch_size": 4, "lr": 1e-2, "weight_decay": 0.01,
                            "fit_seed": 0}


def _train_classifier():
    return X.train_digit_classifier, {"x": _images(12), "y": torch.arange(12) % 10, "seed": 0, "hidden": 8,
                                      "epochs": 1, "lr": 1e-2}


EXPERIMENT_CASES = [
    Case("VQVAE", lambda: (X.VQVAE, {"num_codes": K, "dim": 2, "hidden": 4, "kernel": 3, "seed": 0}),
         {"num_codes": _NUM_CODES, "dim": Arg("int", minimum=1), "hidden": Arg("int", minimum=1),
          "kernel": Arg("int", minimum=1), "seed": Arg("int", minimum=0)}),
    Case("VQVAE.forward", lambda: (_vqvae(), {"x": _images()}), {"x": _IMAGES}),
    Case("VQVAE.encode", lambda: (_vqvae().encode, {"x": _images()}), {"x": _IMAGES},
         skip={"x": {"an empty batch": "zero images encode to zero code grids (documented)"}}),
    Case("VQVAE.decode", lambda: (_vqvae().decode, {"codes": _codes(2, (4, 4))}),
         {"codes": Arg("index_tensor", ndim=(3,))},
         skip={"codes": {"an empty batch": "zero code grids decode to zero images (documented)"}}),
    Case("StackedVQVAE", lambda: (X.StackedVQVAE, {"members": [X.VQVAE(K, 2, 4, seed=s) for s in (0, 1)]}),
         {"members": Arg("choice", name="members")}),
    Case("StackedVQVAE.forward", lambda: (_stacked_vqvae(), {"x": torch.rand(3, 2, 8, 8, generator=_gen())}),
         {"x": _IMAGES}),
    Case("vqvae_loss", lambda: (X.vqvae_loss, {"history": {}}), {"history": Arg("choice", name="history", optional=True)}),
    Case("train_vqvaes", _train_vqvaes,
         {"x": _IMAGES, "variants": Arg("choice", name="variants"), "seeds": Arg("int_seq", name="seeds"),
          "num_codes": _NUM_CODES, "dim": Arg("int", minimum=1), "hidden": Arg("int", minimum=1),
          "kernel": Arg("int", minimum=1), "epochs": Arg("int", minimum=1), "batch_size": Arg("int", minimum=1),
          "lr": Arg("real", low=0.0, open_low=True), "init_batch": Arg("int", minimum=1),
          "fit_seed": Arg("int", minimum=0)},
         skip={"seeds": {"a 0 entry": "0 is a seed"}}),
    Case("evaluate_vqvae", lambda: (X.evaluate_vqvae, {"model": _vqvae(), "x_train": _images(), "x_test": _images(3)}),
         {"model": Arg("module"), "x_train": _IMAGES, "x_test": _IMAGES}),
    Case("images_to_patches", lambda: (X.images_to_patches, {"x": _images(), "patch": 2}),
         {"x": Arg("tensor", ndim=(4,), nonempty=False), "patch": Arg("int", minimum=1)},
         skip={"x": _RESHAPE_ANY_DTYPE}),
    Case("patches_to_images", lambda: (X.patches_to_images, {"p": X.images_to_patches(_images(), 2), "channels": 1}),
         {"p": Arg("tensor", ndim=(4,), nonempty=False), "channels": Arg("int", minimum=1)},
         skip={"p": _RESHAPE_ANY_DTYPE}),
    Case("patch_kmeans", lambda: (X.patch_kmeans, {"x_train": _images(), "x_test": _images(2), "num_codes": 3,
                                                   "seed": 0, "iters": 2, "patch": 2}),
         {"x_train": _IMAGES, "x_test": _IMAGES, "num_codes": _NUM_CODES, "seed": Arg("int", minimum=0),
          "iters": Arg("int", minimum=0), "patch": Arg("int", minimum=1)}),
    Case("StackedCodePrior", lambda: (X.StackedCodePrior, {"priors": [_prior(), _prior()]}),
         {"priors": Arg("choice", name="priors")}),
    Case("StackedCodePrior.forward", lambda: (_stacked_prior(), {"codes": _codes(3).unsqueeze(1).repeat(1, 2, 1, 1)}),
         {"codes": Arg("index_tensor", ndim=(4,))}),
    Case("prior_loss", lambda: (X.prior_loss, {"model": _stacked_prior(), "xb": _codes(3).unsqueeze(1).repeat(1, 2, 1, 1),
                                               "yb": torch.zeros(3), "generator": _gen(), "epoch": 0}),
         {"model": Arg("module"), "xb": Arg("index_tensor", ndim=(4,))}),
    Case("train_priors", _train_priors,
         {"codes": Arg("choice", name="codes"), "seeds": Arg("int_seq", name="seeds"), "num_codes": _NUM_CODES,
          "d_model": Arg("int", minimum=1), "heads": Arg("int", minimum=1), "layers": Arg("int", minimum=1),
          "epochs": Arg("int", minimum=1), "batch_size": Arg("int", minimum=1),
          "lr": Arg("real", low=0.0, open_low=True), "weight_decay": Arg("real", low=0.0),
          "fit_seed": Arg("int", minimum=0)},
         skip={"seeds": {"a 0 entry": "0 is a seed"}}),
    Case("unigram_bits", lambda: (X.unigram_bits, {"train_codes": _codes(4), "test_codes": _codes(2), "num_codes": K}),
         {"train_codes": Arg("index_tensor"), "test_codes": Arg("index_tensor"), "num_codes": _NUM_CODES}),
    Case("train_digit_classifier", _train_classifier,
         {"x": _IMAGES, "y": Arg("index_tensor", ndim=(1,)), "seed": Arg("int", minimum=0),
          "hidden": Arg("int", minimum=1), "epochs": Arg("int", minimum=1), "lr": Arg("real", low=0.0, open_low=True)}),
    Case("digit_confidence", lambda: (X.digit_confidence, {"classifier": _classifier(), "images": _images()}),
         {"classifier": Arg("module"), "images": _IMAGES}),
    Case("digit_features", lambda: (X.digit_features, {"classifier": _classifier(), "images": _images()}),
         {"classifier": Arg("module"), "images": Arg("tensor", ndim=(4,))}),
    Case("frechet_distance", lambda: (X.frechet_distance, {"a": _z(6), "b": _z(5) + 1}),
         {"a": Arg("tensor", ndim=(2,), finite=True), "b": Arg("tensor", ndim=(2,), finite=True)}),
    Case("code_patches", lambda: (X.code_patches, {"x": _images(), "codes": _codes(4, (4, 4)), "num_codes": K,
                                                   "patch": 2, "context": 1}),
         {"x": _IMAGES, "codes": Arg("index_tensor", ndim=(3,)), "num_codes": _NUM_CODES,
          "patch": Arg("int", minimum=1), "context": Arg("int", minimum=0)}),
    Case("montage", lambda: (X.montage, {"images": _images(), "ncol": 2, "pad": 1}),
         {"images": Arg("tensor", ndim=(4,)), "ncol": Arg("int", minimum=1), "pad": Arg("int", minimum=0)}),
]

EXPERIMENT_EXEMPT = {
    "VARIANTS": "a registry of configurations, each run through train_vqvaes (probed)",
    "VQVAERuns": "a frozen dataclass of results, built by train_vqvaes (probed)",
}

CASES = VQ_CASES + EXPERIMENT_CASES

test_bad_input, test_bad_scalars = probe_tests(CASES)
test_vqvae_inventory = inventory_test("kexue.vqvae", VQ_CASES, VQ_EXEMPT)
test_experiments_vqvae_inventory = inventory_test("kexue.experiments.vqvae", EXPERIMENT_CASES, EXPERIMENT_EXEMPT)


# ----------------------------------------------------------------------------- the review's worst cases


def _nan_at(x: torch.Tensor, value: float = math.nan) -> torch.Tensor:
    y = x.clone()
    y.view(-1)[0] = value
    return y


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("fn", [V.nearest_code, V.nearest_code_reference, V.squared_distances, V.quantize])
def test_nearest_code_rejects_non_finite_vectors_and_codes(fn, bad):
    """Review S3: nearest_code of a NaN vector returned code 0; a nearest code is a decision."""
    z, cb = _z(), _codebook()
    with pytest.raises(ValueError, match="z must be finite, got"):
        fn(_nan_at(z, bad), cb)
    with pytest.raises(ValueError, match="codebook must be finite"):
        fn(z, _nan_at(cb, bad))


def test_precomputed_code_norms_are_checked():
    z, cb = _z(), _codebook()
    norms = cb.pow(2).sum(1)
    assert torch.equal(V.nearest_code(z, cb, norms), V.nearest_code(z, cb))
    with pytest.raises(ValueError, match=r"code_sqnorms must have shape \(5,\)"):
        V.nearest_code(z, cb, norms[:3])
    with pytest.raises(TypeError, match="code_sqnorms .* must share a dtype"):
        V.squared_distances(z, cb, norms.double())
    with pytest.raises(ValueError, match="code_sqnorms must be finite"):
        V.nearest_code(z, cb, _nan_at(norms))


@pytest.mark.parametrize("scale", [1e20, 1e30, 3e38])
def test_nearest_code_of_huge_vectors_is_the_nearest_code_of_the_rescaled_ones(scale):
    """Review S4: squared norms overflowed to inf and inf - inf gave NaN scores; nearest codes are scale-free."""
    z, cb = _z(50) / 4, _codebook() / 4  # entries below 1, so scale * entry stays finite
    want = V.nearest_code(z.double(), cb.double())
    for fn in (V.nearest_code, V.nearest_code_reference):
        assert torch.equal(fn(z * scale, cb * scale), want)
    # codes up to 7e18: ||e||^2 overflows float32 (the rescaled path), the losses of vectors near them do not
    big = cb / cb.abs().max() * 7e18
    ids = torch.tensor([0, 1, 2, 3, 4, 2])
    q = V.quantize(big[ids] * 1.001, big)
    assert torch.equal(q.indices, ids) and torch.isfinite(q.loss)
    with pytest.raises(ValueError, match="VQ losses overflow torch.float32"):  # their sum does overflow
        V.quantize(big[ids] * 3, big)


def test_squared_distances_of_large_inputs_are_exact_or_a_clear_error():
    """Review S4: squared_distances(z * 1e20, ...) gave inf/NaN."""
    z, cb = _z(), _codebook()
    exact = V.squared_distances(z.double() * 1e18, cb.double() * 1e18)
    got = V.squared_distances(z * 1e18, cb * 1e18)  # squares overflow float32 inside; computed in float64
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, exact.float(), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match=r"squared distances of z and codebook overflow torch.float32 .* float64"):
        V.squared_distances(z * 1e20, cb)  # distances near 1e40: beyond float32, so no float32 answer exists
    assert torch.isfinite(V.squared_distances(z.double() * 1e20, cb.double())).all()
    with pytest.raises(ValueError, match="overflow float64"):
        V.squared_distances(z.double() * 1e300, cb.double())


def test_float16_codes_are_compared_in_float32():
    """float16 rounding of ||e||^2 - 2 z.e changed nearest codes; now the same codes as float32 of the same values."""
    g = _gen(5)
    z, cb = torch.randn(4000, 8, generator=g).half(), torch.randn(64, 8, generator=g).half()
    want = V.nearest_code(z.float(), cb.float())
    assert torch.equal(V.nearest_code(z, cb), want)
    assert torch.equal(V.nearest_code_reference(z[:200], cb), want[:200])
    assert torch.equal(V.quantize(z, cb).indices, want)
    d = V.squared_distances(z, cb)
    assert d.dtype == torch.float16
    torch.testing.assert_close(d, V.squared_distances(z.double(), cb.double()).half())
    with pytest.raises(ValueError, match="overflow torch.float16"):
        V.squared_distances(z * 100, cb)


def test_quantize_rejects_losses_beyond_the_dtype():
    """Review S4: VectorQuantizer(4, 3)(randn * 1e30) and quantize(..., beta=inf) gave non-finite losses."""
    with pytest.raises(ValueError, match="VQ losses overflow torch.float32"):
        V.VectorQuantizer(4, 3)(torch.randn(2, 3, 2, 2, generator=_gen()) * 1e30)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        V.quantize(_z(), _codebook(), float("inf"), 1.0)
    q = V.VectorQuantizer(4, 3).double()(torch.randn(2, 3, 2, 2, generator=_gen(), dtype=torch.float64) * 1e30)
    assert torch.isfinite(q.loss)  # float64 holds the squared distances


def test_kmeans_on_points_far_apart():
    """Review S5: kmeans(randn(10, 2) * 1e20, 3) raised 'probability tensor contains inf/nan'."""
    x = torch.randn(10, 2, generator=_gen())
    centres, idx = V.kmeans(x, 3, 5, generator=_gen(0))
    for shift in (66, 120):  # 2**66 ~ 7e19 (the review's case), 2**120 ~ 1e36
        big_centres, big_idx = V.kmeans(torch.ldexp(x, torch.tensor(shift)), 3, 5, generator=_gen(0))
        assert torch.equal(big_idx, idx)  # a power-of-two rescaling is exact: the same run, scaled
        assert torch.equal(big_centres, torch.ldexp(centres, torch.tensor(shift)))
    c64, _ = V.kmeans(x.double() * 1e300, 3, 5, generator=_gen(0))
    assert torch.isfinite(c64).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_kmeans_and_its_initialiser_reject_non_finite_points(bad):
    x = _nan_at(_z(8), bad)
    with pytest.raises(ValueError, match="x must be finite"):
        V.kmeans(x, 3)
    with pytest.raises(ValueError, match="z must be finite"):
        V.codebook_init("kmeans", x, 3)
    V.codebook_init("normal", x, 3)  # the data-free initialisers read only the width and dtype of z


def test_kmeans_of_float16_points_runs_in_float32():
    x = torch.rand(3000, 4, generator=_gen()).half() * 8  # sum of squared distances beyond 65504
    centres, idx = V.kmeans(x, 4, 3, generator=_gen(1))
    c32, idx32 = V.kmeans(x.float(), 4, 3, generator=_gen(1))
    assert centres.dtype == torch.float16 and torch.equal(idx, idx32)
    assert torch.equal(centres, c32.half())


def test_vector_quantizer_has_no_data_for_a_kmeans_start():
    """Review S3: VectorQuantizer(4, 3, init='kmeans') ran k-means on one zero vector: four identical zero codes."""
    with pytest.raises(ValueError, match=r"init='kmeans' needs encoder outputs.* set_codebook\(codebook_init"):
        V.VectorQuantizer(4, 3, init="kmeans")
    with pytest.raises(ValueError, match="init must be one of"):
        V.VectorQuantizer(4, 3, init="zeros")
    vq = V.VectorQuantizer(4, 3)  # the documented way: a data-free start, then k-means on encoder outputs
    z = torch.randn(64, 3, generator=_gen())
    vq.set_codebook(V.codebook_init("kmeans", z, 4, generator=_gen()))
    assert torch.unique(vq.codebook.detach(), dim=0).shape[0] == 4
    with pytest.raises(ValueError, match="codebook must be finite"):
        vq.set_codebook(_nan_at(_codebook(4)))


def test_vector_quantizer_checks_its_rates_and_its_update_arguments():
    for kwargs, word in (({"decay": 1.0}, "decay must lie in"), ({"decay": None}, "decay"), ({"eps": -1.0}, "eps"),
                         ({"seed": -1}, "seed"), ({"update": "sgd"}, "update must be one of")):
        with pytest.raises(ValueError, match=word):
            V.VectorQuantizer(4, 3, **kwargs)
    vq = V.VectorQuantizer(4, 3, update="ema")
    z = torch.randn(2, 3, 2, 2, generator=_gen())
    with pytest.raises(ValueError, match=r"z must have shape \(B, dim=3, H, W\)"):
        vq(z[:, :2])
    with pytest.raises(ValueError, match=r"indices must have shape \(B, H, W\) = \(2, 2, 2\)"):
        vq.update_codebook(z, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 3\]"):
        vq.update_codebook(z, torch.full((2, 2, 2), 4))
    with pytest.raises(ValueError, match="z must be finite"):
        vq.update_codebook(_nan_at(z), torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="z .* must have the codebook's dtype"):
        vq.update_codebook(z.double(), torch.zeros(2, 2, 2, dtype=torch.long))
    loss_vq = V.VectorQuantizer(4, 3)  # nothing to update, but a bad batch is still an error
    with pytest.raises(ValueError, match="indices must lie"):
        loss_vq.update_codebook(z, torch.full((2, 2, 2), -1))


def test_ema_step_and_restarts_check_the_state_and_reject_non_finite_statistics():
    cb, z = _codebook(), _z()
    idx = V.nearest_code(z, cb)
    with pytest.raises(TypeError, match=r"state must be an EMAState\(cluster_size, embed_sum\), got NoneType"):
        V.ema_update(cb, z, idx, None)
    with pytest.raises(ValueError, match="state must hold cluster_size"):
        V.restart_dead_codes(cb, V.EMAState(torch.ones(3), cb), z)
    with pytest.raises(ValueError, match="state.embed_sum must be finite"):
        V.ema_update(cb, z, idx, V.EMAState(torch.ones(K), _nan_at(cb)))
    with pytest.raises(ValueError, match="z must be finite"):
        V.restart_dead_codes(cb, _state(), _nan_at(z))
    with pytest.raises(ValueError, match="decay must lie in"):
        V.ema_update(cb, z, idx, _state(), decay=1.0)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        V.restart_dead_codes(cb, _state(), z, generator=0)


def test_straight_through_is_for_floating_tensors():
    z = _z()
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        V.straight_through(None, z)
    with pytest.raises(TypeError, match="z_q must be a floating-point tensor"):
        V.straight_through(z, z.long())
    with pytest.raises(TypeError, match="must share a dtype"):
        V.straight_through(z, z.double())
    out = V.straight_through(z, _nan_at(z))  # elementwise: NaN propagates (documented)
    assert out.isnan().sum() == 1


# ----------------------------------------------------------------------------- the prior


def test_code_prior_checks_its_grid_and_sizes():
    """Review S3/S6: d_model 0, grid (0, 2), heads -1 were accepted; '3' or None gave deep TypeErrors."""
    for kwargs, word in (({"d_model": 0}, "d_model"), ({"grid": (0, 2)}, r"grid\[0\]"), ({"heads": -1}, "heads"),
                         ({"d_model": "3"}, "d_model"), ({"grid": None}, "grid must be a pair"),
                         ({"grid": (2, 2, 2)}, "grid must be a pair"), ({"seed": 1.5}, "seed")):
        with pytest.raises(ValueError, match=word):
            V.CodePrior(**{"num_codes": 8, "grid": (2, 2), "d_model": 8, "heads": 2, "layers": 1, **kwargs})


def test_code_prior_rejects_codes_it_cannot_read():
    """Out-of-range codes were an IndexError from the embedding; other grids a reshape error."""
    prior, codes = _prior(), _codes()
    for bad, word in ((codes.clone().fill_(K), r"codes must lie in \[0, 4\]"), (codes - 1, "codes must lie"),
                      (codes.reshape(3, 1, 4), r"codes must be code grids \(B, 2, 2\)"), (codes[:0], "codes is empty")):
        for fn in (prior, lambda c: V.prior_nll_bits(prior, c)):
            with pytest.raises(ValueError, match=word):
                fn(bad)
    with pytest.raises(ValueError, match=r"or their first T <= 4 cells \(B, T\), got shape \(3, 8\)"):
        prior(codes.reshape(3, 4).repeat(1, 2))
    with pytest.raises(ValueError, match=r"codes must have 3 dimensions"):
        V.prior_nll_bits(prior, codes.reshape(3, 4))  # whole grids only
    with pytest.raises(TypeError, match="prior must be a CodePrior, got function"):
        V.prior_nll_bits(lambda c: c, codes)
    torch.testing.assert_close(prior(codes.reshape(3, 4)[:, :3]), prior(codes)[:, :3])  # prefixes are causal


@pytest.mark.parametrize("training", [True, False])
def test_prior_functions_restore_the_model_mode(training):
    """Review: prior_nll_bits and sample_codes switched the prior to eval() and left it there."""
    prior = _prior().train(training)
    codes = V.sample_codes(prior, 4, generator=_gen())
    assert prior.training is training
    bits = V.prior_nll_bits(prior, codes)
    assert prior.training is training
    prior.eval()
    assert torch.equal(V.sample_codes(prior, 4, generator=_gen()), codes)  # computed in eval mode either way
    assert V.prior_nll_bits(prior, codes) == bits


def test_sample_codes_checks_its_prior_and_generator():
    with pytest.raises(TypeError, match="prior must be a CodePrior"):
        V.sample_codes(None, 2)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        V.sample_codes(_prior(), 2, generator=0)


def test_stacked_priors_check_the_codes_once_outside_vmap():
    stack = X.StackedCodePrior([_prior(), V.CodePrior(K, (2, 2), 8, 2, 1, seed=1)])
    codes = _codes(3).unsqueeze(1).repeat(1, 2, 1, 1)
    logits = stack(codes)
    for s, prior in enumerate(stack.unstack()):
        torch.testing.assert_close(logits[s], prior(codes[:, s]))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\]"):
        stack(codes + 1)
    with pytest.raises(ValueError, match=r"xb must lie in \[0, 4\]"):
        X.prior_loss(stack, codes - 1, None, generator=_gen(), epoch=0)
    with pytest.raises(TypeError, match=r"priors\[1\] must be a CodePrior"):
        X.StackedCodePrior([_prior(), "prior"])


# ----------------------------------------------------------------------------- the page's model and helpers


def test_vqvae_rejects_odd_image_sizes():
    """Review S3: VQVAE.forward turned a 7x7 image into a 6x6 reconstruction."""
    model = _vqvae()
    for side in (7, 1):
        with pytest.raises(ValueError, match="x must have even height and width >= 2"):
            model(torch.rand(2, 1, side, side, generator=_gen()))
        with pytest.raises(ValueError, match="x must have even height and width"):
            model.encode(torch.rand(2, 1, side, 8, generator=_gen()))
    x_hat, _, q = model(torch.rand(2, 1, 6, 10, generator=_gen()))
    assert x_hat.shape == (2, 1, 6, 10) and q.indices.shape == (2, 3, 5)


def test_vqvae_names_its_arguments():
    """Review S6: VQVAE.decode(None) said 'indices must be'."""
    model = _vqvae()
    with pytest.raises(TypeError, match="codes must be a torch.Tensor, got NoneType"):
        model.decode(None)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\], got range \[0, 9\]"):
        model.decode(torch.arange(10).reshape(1, 2, 5))
    for bad in (torch.rand(2, 1, 8, 8) * 1e30, torch.rand(2, 1, 8, 8) - 0.5):  # review S4: 1e30 pixels gave NaN
        with pytest.raises(ValueError, match=r"x must hold pixel values .* in \[0, 1\]"):
            model(bad)
    with pytest.raises(ValueError, match="x must be finite"):
        model(_nan_at(_images()))
    with pytest.raises(TypeError, match=r"x \(torch.float64\) must have the model's dtype"):
        model(_images().double())
    with pytest.raises(ValueError, match="x_test must be finite"):
        X.evaluate_vqvae(model, _images(), _nan_at(_images()))
    with pytest.raises(TypeError, match="model must be a VQVAE"):
        X.evaluate_vqvae(None, _images(), _images())


def test_stacked_vqvae_checks_the_data_quantize_cannot_check_under_vmap():
    stack = _stacked_vqvae()
    x = torch.rand(3, 2, 8, 8, generator=_gen())
    stack(x)
    with pytest.raises(ValueError, match="x must be finite"):
        stack(_nan_at(x))
    with torch.no_grad():
        stack.encoder[2].bias.fill_(float("nan"))  # a diverged model
    with pytest.raises(ValueError, match="the encoder outputs z must be finite"):
        stack(x)
    with torch.no_grad():
        stack.encoder[2].bias.fill_(1e20)
    with pytest.raises(ValueError, match="too large for torch.float32 squared distances"):
        stack(x)
    with pytest.raises(TypeError, match=r"members\[0\] must be a VQVAE"):
        X.StackedVQVAE(["model"])


def test_train_vqvaes_checks_its_configuration_before_training():
    x = _images(16)
    with pytest.raises(ValueError, match=r"variants\['a'\] has unknown arguments \['bta'\]"):
        X.train_vqvaes(x, {"a": {"bta": 0.5}}, seeds=(0,))
    with pytest.raises(ValueError, match=r"variants\['a'\]\['init'\] must be one of"):
        X.train_vqvaes(x, {"a": {"init": "zeros"}}, seeds=(0,))
    with pytest.raises(ValueError, match=r"seeds\[1\] must be an integer >= 0"):
        X.train_vqvaes(x, X.VARIANTS, seeds=(0, 1.5))
    with pytest.raises(ValueError, match="fit_seed must be an integer >= 0"):
        X.train_vqvaes(x, X.VARIANTS, seeds=(0,), fit_seed=-1)
    with pytest.raises(ValueError, match="x must have even height and width"):
        X.train_vqvaes(torch.rand(16, 1, 7, 7), X.VARIANTS, seeds=(0,))
    with pytest.raises(TypeError, match="history must be None or a dict"):
        X.vqvae_loss("recon")


def test_page_scores_reject_non_finite_features_and_labels_out_of_range():
    with pytest.raises(ValueError, match="a must be finite"):
        X.frechet_distance(_nan_at(_z()), _z())
    with pytest.raises(ValueError, match="b needs at least two rows"):
        X.frechet_distance(_z(), _z(1))
    clf = _classifier()
    with pytest.raises(ValueError, match="images must be finite"):
        X.digit_confidence(clf, _nan_at(_images()))
    with pytest.raises(TypeError, match="classifier must be a Module"):
        X.digit_confidence(None, _images())
    features = X.digit_features(clf, _nan_at(_images()))  # a layer's output: NaN stays in its row (documented)
    assert features[0].isnan().any() and torch.isfinite(features[1:]).all()
    with pytest.raises(ValueError, match=r"y must lie in \[0, 9\], got range \[0, 11\]"):
        X.train_digit_classifier(_images(12), torch.arange(12), epochs=1)
    with pytest.raises(ValueError, match=r"test_codes must lie in \[0, 4\]"):
        X.unigram_bits(_codes(), _codes() + 1, K)


def test_code_patches_and_montage_check_their_tiling():
    x = _images()
    with pytest.raises(ValueError, match=r"do not tile x \(4, 1, 8, 8\) with patch=2"):
        X.code_patches(x, _codes(4, (3, 3)), K)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\]"):
        X.code_patches(x, _codes(4, (4, 4)) - 1, K)
    with pytest.raises(ValueError, match="x must be finite"):
        X.code_patches(_nan_at(x), _codes(4, (4, 4)), K)
    with pytest.raises(ValueError, match="pad must be an integer >= 0"):
        X.montage(x, 2, pad=-1)
    with pytest.raises(ValueError, match="images is empty"):
        X.montage(x[:0], 2)
    with pytest.raises(ValueError, match="x_test must have sides divisible by patch=3"):
        X.patch_kmeans(torch.rand(4, 1, 6, 6), torch.rand(2, 1, 8, 8), 3, patch=3)


def test_training_curves_name_what_is_missing():
    runs = X.train_vqvaes(_images(16), {"ema": {"update": "ema"}}, seeds=(0,), num_codes=4, dim=2, hidden=4, epochs=1,
                          batch_size=8, init_batch=8)
    assert runs.curve("recon", "ema", 0).shape == (2,)
    with pytest.raises(ValueError, match="key must be one of"):
        runs.curve("loss", "ema", 0)
    with pytest.raises(ValueError, match=r"\(name, seed\) must be a trained member"):
        runs.curve("recon", "ema", 1)

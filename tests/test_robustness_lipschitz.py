"""Bad input to kexue.lipschitz and kexue.experiments.lipschitz, and the review's worst cases for them.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The regression tests below the cases pin the worst findings of the robustness review for these
modules (issue 22): zero and tiny weights under spectral normalisation, a start vector orthogonal
to the image, a label that would build a huge model, float16 data, non-composable layers.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kexue import lipschitz as lip
from kexue.experiments import lipschitz as xlip
from tests._probe import Arg, Case, inventory_test, probe_tests


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _W(out: int = 4, inp: int = 3) -> torch.Tensor:
    return torch.randn(out, inp, generator=_gen(0))


def _unit(n: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, generator=_gen(seed)), dim=0)


def _kernel() -> torch.Tensor:
    return torch.randn(2, 2, 3, 3, generator=_gen(0))


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))


_MATRIX = Arg("tensor", ndim=(2,), finite=True)
_OPT_GEN = Arg("generator", optional=True)
_EPS = Arg("real", low=0.0, open_low=True)
_FN = {"a function": "any callable mapping a batch to one score per example is a critic here"}

# ----------------------------------------------------------------------------- kexue.lipschitz


def _step(fn):
    def call():
        return fn, {"W": _W(), "u": _unit(4, 1), "v": _unit(3, 2), "n_iter": 1, "eps": 1e-12}

    return call


def _gp():
    g = _gen(0)
    return lip.gradient_penalty, {"critic": _net(), "real": torch.randn(6, 3, generator=g),
                                  "fake": torch.randn(6, 3, generator=g), "lam": 10.0, "kind": "one-sided",
                                  "generator": _gen(1)}


LIPSCHITZ_CASES = [
    Case("spectral_norm_exact", lambda: (lip.spectral_norm_exact, {"W": _W()}), {"W": _MATRIX}),
    Case("spectral_norm_estimate",
         lambda: (lip.spectral_norm_estimate, {"W": _W(), "n_iter": 3, "u0": _unit(4, 1), "generator": _gen(),
                                               "eps": 1e-12}),
         {"W": _MATRIX, "n_iter": Arg("int", minimum=1), "u0": Arg("tensor", ndim=(1,), finite=True, optional=True),
          "generator": _OPT_GEN, "eps": _EPS}),
    # one step of spectral normalisation acts like a layer on W: NaN/inf propagate (documented)
    Case("spectral_normalize", _step(lip.spectral_normalize),
         {"W": Arg("tensor", ndim=(2,)), "u": Arg("tensor", ndim=(1,)), "v": Arg("tensor", ndim=(1,)),
          "n_iter": Arg("int", minimum=0), "eps": _EPS}),
    Case("spectral_normalize_reference", _step(lip.spectral_normalize_reference),
         {"W": Arg("tensor", ndim=(2,)), "u": Arg("tensor", ndim=(1,)), "v": Arg("tensor", ndim=(1,)),
          "n_iter": Arg("int", minimum=0), "eps": _EPS}),
    Case("SpectralNorm",
         lambda: (lip.SpectralNorm, {"weight": _W(), "n_power_iterations": 1, "dim": 0, "eps": 1e-12,
                                     "generator": _gen(), "warmup": 3}),
         {"weight": Arg("tensor"), "n_power_iterations": Arg("int", minimum=1), "dim": Arg("int", minimum=-2),
          "eps": _EPS, "generator": _OPT_GEN, "warmup": Arg("int", minimum=0)}),
    Case("SpectralNorm.forward",
         lambda: (lip.SpectralNorm(_W(), generator=_gen()), {"weight": _W() * 2}),
         {"weight": Arg("tensor", ndim=(2,))}),
    Case("spectral_normalization",
         lambda: (lip.spectral_normalization, {"module": nn.Linear(3, 4), "name": "weight", "n_power_iterations": 1,
                                               "dim": 0, "eps": 1e-12, "generator": _gen()}),
         {"module": Arg("module"), "name": Arg("choice"), "n_power_iterations": Arg("int", minimum=1),
          "dim": Arg("int", minimum=-2, optional=True), "eps": _EPS, "generator": _OPT_GEN}),
    Case("spectral_project_", lambda: (lip.spectral_project_, {"module": _net(), "n_iter": 3}),
         {"module": Arg("module"), "n_iter": Arg("int", minimum=1, optional=True)}),
    # sigmas is a sequence of 0-d tensors: None, a string and an int are all wrong
    Case("spectral_penalty",
         lambda: (lip.spectral_penalty, {"sigmas": [torch.tensor(2.0), torch.tensor(0.5)], "lam": 0.1}),
         {"sigmas": Arg("choice", name="sigmas"), "lam": Arg("real", low=0.0)}),
    Case("reshaped_kernel_norm", lambda: (lip.reshaped_kernel_norm, {"weight": _kernel()}),
         {"weight": Arg("tensor", ndim=(4,), finite=True)}),
    # conv_matrix builds a linear map: NaN/inf entries of the kernel propagate (documented)
    Case("conv_matrix", lambda: (lip.conv_matrix, {"weight": _kernel(), "input_size": (4, 4), "padding_mode": "zeros"}),
         {"weight": Arg("tensor", ndim=(4,)), "input_size": Arg("int_seq", name="input_size"),
          "padding_mode": Arg("choice")}),
    Case("conv_operator_norm",
         lambda: (lip.conv_operator_norm, {"weight": _kernel(), "input_size": (4, 4), "padding_mode": "circular",
                                           "n_iter": 5, "generator": _gen()}),
         {"weight": Arg("tensor", ndim=(4,), finite=True), "input_size": Arg("int_seq", name="input_size"),
          "padding_mode": Arg("choice"), "n_iter": Arg("int", minimum=1), "generator": _OPT_GEN}),
    Case("conv_operator_norm_fft",
         lambda: (lip.conv_operator_norm_fft, {"weight": _kernel(), "input_size": (4, 4)}),
         {"weight": Arg("tensor", ndim=(4,), finite=True), "input_size": Arg("int_seq", name="input_size")}),
    Case("gradient_penalty", _gp,
         {"critic": Arg("module"), "real": Arg("tensor", finite=True), "fake": Arg("tensor", finite=True),
          "lam": Arg("real", low=0.0), "kind": Arg("choice"), "generator": _OPT_GEN}),
    # per-example gradient norms: NaN/inf in a point give that point's norm NaN (documented)
    Case("gradient_norms", lambda: (lip.gradient_norms, {"critic": _net(), "x": torch.randn(5, 3, generator=_gen())}),
         {"critic": Arg("module"), "x": Arg("tensor")}),
    Case("clip_weights_", lambda: (lip.clip_weights_, {"module": _net(), "c": 0.1}),
         {"module": Arg("module"), "c": Arg("real", low=0.0, open_low=True)}),
    Case("clip_frobenius_", lambda: (lip.clip_frobenius_, {"module": _net(), "c": 0.5}),
         {"module": Arg("module"), "c": Arg("real", low=0.0, open_low=True)}),
    # weights is a sequence of matrices: None, a string and an int are all wrong
    Case("lipschitz_upper_bound", lambda: (lip.lipschitz_upper_bound, {"weights": [_W(4, 3), _W(2, 4)]}),
         {"weights": Arg("choice", name="weights")}),
    Case("jacobian_norms", lambda: (lip.jacobian_norms, {"model": _net(), "x": torch.randn(5, 3, generator=_gen())}),
         {"model": Arg("module"), "x": Arg("tensor", ndim=(2,), finite=True)},
         skip={"model": {"a function": "any callable mapping (n, d) to (n, k) is a model here"}}),
    Case("exact_w1", lambda: (lip.exact_w1, {"x": torch.randn(5, 2, generator=_gen(0)),
                                             "y": torch.randn(5, 2, generator=_gen(1))}),
         {"x": Arg("tensor", ndim=(2,), finite=True), "y": Arg("tensor", ndim=(2,), finite=True)}),
]

LIPSCHITZ_EXEMPT = {
    "PowerIteration": "a NamedTuple of results, built by spectral_norm_estimate (probed)",
    "SpectralNormStep": "a NamedTuple of results, built by spectral_normalize (probed)",
    "PENALTIES": "a registry of per-example penalty functions, probed through gradient_penalty's kind",
}


# ----------------------------------------------------------------------------- kexue.experiments.lipschitz


def _train_classifier():
    g = _gen(0)
    x = torch.randn(12, 3, generator=g)
    return xlip.train_classifier, {"name": "spectral-norm", "x": x, "y": torch.arange(12) % 3, "hidden": (4,),
                                   "epochs": 1, "batch_size": 6, "lr": 1e-2, "seed": 0}


def _train_critic():
    g = _gen(0)
    return xlip.train_critic, {"name": "gp-one-sided", "real": torch.randn(10, 2, generator=g),
                               "fake": torch.randn(8, 2, generator=g), "hidden": (4,), "steps": 2,
                               "batch_size": 4, "lr": 1e-3, "seed": 0, "record_every": 1}


_HIDDEN = Arg("int_seq", name="hidden")
_HIDDEN_SKIP = {"an empty sequence": "no hidden layer: a linear network (documented)"}

EXPERIMENT_CASES = [
    Case("sharpening_matrix", lambda: (xlip.sharpening_matrix, {"n": 4, "centre": 3.0, "dtype": torch.float64}),
         {"n": Arg("int", minimum=3), "centre": Arg("real"), "dtype": Arg("dtype")}),
    # singular_values is a sequence of numbers: None, a string and an int are all wrong
    Case("matrix_with_spectrum",
         lambda: (xlip.matrix_with_spectrum, {"singular_values": [3.0, 1.0], "shape": (4, 3), "seed": 0,
                                              "dtype": torch.float64}),
         {"singular_values": Arg("choice", name="singular_values"), "shape": Arg("int_seq", name="shape"),
          "seed": Arg("int", minimum=0), "dtype": Arg("dtype")}),
    Case("ones_start_recovery",
         lambda: (xlip.ones_start_recovery, {"W": torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64)),
                                             "max_iter": 10, "tol": 1e-3}),
         {"W": _MATRIX, "max_iter": Arg("int", minimum=1), "tol": Arg("real", low=0.0, open_low=True)}),
    # mean is a pair of numbers: None, a string and an int are all wrong
    Case("shifted_gaussian",
         lambda: (xlip.shifted_gaussian, {"n": 5, "mean": (0.5, -1.5), "std": 0.3, "seed": 0, "dtype": torch.float32}),
         {"n": Arg("int", minimum=1), "mean": Arg("choice", name="mean"), "std": Arg("real", low=0.0, open_low=True),
          "seed": Arg("int", minimum=0), "dtype": Arg("dtype")}),
    Case("Scale", lambda: (xlip.Scale, {"c": 2.0}), {"c": Arg("real")}),
    # an elementwise layer: NaN/inf propagate (documented)
    Case("Scale.forward", lambda: (xlip.Scale(2.0), {"x": torch.randn(3, 2, generator=_gen())}), {"x": Arg("tensor")},
         skip={"x": {"an empty batch": "elementwise: an empty batch gives an empty batch (documented)"}}),
    Case("linears", lambda: (xlip.linears, {"model": _net()}), {"model": Arg("module")}),
    Case("network_upper_bound", lambda: (xlip.network_upper_bound, {"model": _net()}), {"model": Arg("module")}),
    Case("train_classifier", _train_classifier,
         {"name": Arg("choice"), "x": Arg("tensor", ndim=(2,), finite=True), "y": Arg("index_tensor", ndim=(1,)),
          "hidden": _HIDDEN, "epochs": Arg("int", minimum=1), "batch_size": Arg("int", minimum=1),
          "lr": Arg("real", low=0.0, open_low=True), "seed": Arg("int", minimum=0)},
         skip={"hidden": _HIDDEN_SKIP}),
    Case("train_critic", _train_critic,
         {"name": Arg("choice"), "real": Arg("tensor", ndim=(2,), finite=True),
          "fake": Arg("tensor", ndim=(2,), finite=True), "hidden": _HIDDEN, "steps": Arg("int", minimum=1),
          "batch_size": Arg("int", minimum=1), "lr": Arg("real", low=0.0, open_low=True),
          "seed": Arg("int", minimum=0), "record_every": Arg("int", minimum=0)},
         skip={"hidden": _HIDDEN_SKIP}),
    # interpolation is elementwise: NaN/inf in a point propagate to its interpolates (documented)
    Case("interpolates",
         lambda: (xlip.interpolates, {"real": torch.randn(5, 2, generator=_gen(0)),
                                      "fake": torch.randn(4, 2, generator=_gen(1)), "n": 3, "generator": _gen()}),
         {"real": Arg("tensor", ndim=(2,)), "fake": Arg("tensor", ndim=(2,)), "n": Arg("int", minimum=1),
          "generator": Arg("generator")}),
    Case("nearest_distance",
         lambda: (xlip.nearest_distance, {"points": torch.randn(5, 2, generator=_gen(0)),
                                          "reference": torch.randn(4, 2, generator=_gen(1)), "chunk": 2}),
         {"points": _MATRIX, "reference": _MATRIX, "chunk": Arg("int", minimum=1)}),
    # edges is a sequence of numbers: None, a string and an int are all wrong
    Case("gradient_profile",
         lambda: (xlip.gradient_profile, {"norms": torch.tensor([1.2, 1.1, 0.9, 0.5]),
                                          "distance": torch.tensor([0.0, 0.2, 0.6, 2.0]), "edges": [0.0, 0.5, 5.0]}),
         {"norms": Arg("tensor", ndim=(1,), finite=True), "distance": Arg("tensor", ndim=(1,), finite=True),
          "edges": Arg("choice", name="edges")}),
    Case("count_matmul_flops", lambda: (xlip.count_matmul_flops, {"fn": lambda: torch.ones(2, 3) @ torch.ones(3, 2)}),
         {"fn": Arg("module")},
         skip={"fn": {"a function": "any callable; one that needs arguments fails when called, with Python's "
                                    "own error naming the missing argument"}}),
]

EXPERIMENT_EXEMPT = {
    "ClassifierControl": "a NamedTuple built by the CLASSIFIER_CONTROLS entries",
    "CLASSIFIER_CONTROLS": "a registry run by train_classifier (probed through its name and options)",
    "CriticControl": "a NamedTuple built by the CRITIC_CONTROLS entries",
    "CRITIC_CONTROLS": "a registry run by train_critic (probed through its name and options)",
    "GradientProfile": "a NamedTuple of results, built by gradient_profile (probed)",
}

CASES = LIPSCHITZ_CASES + EXPERIMENT_CASES

test_bad_input, test_bad_scalars = probe_tests(CASES)
test_lipschitz_inventory = inventory_test("kexue.lipschitz", LIPSCHITZ_CASES, LIPSCHITZ_EXEMPT)
test_experiments_lipschitz_inventory = inventory_test("kexue.experiments.lipschitz", EXPERIMENT_CASES,
                                                      EXPERIMENT_EXEMPT)


# ----------------------------------------------------------------------------- the review's worst cases


def _sn(weight: torch.Tensor) -> lip.SpectralNorm:
    return lip.SpectralNorm(weight, generator=_gen(0))


@pytest.mark.parametrize("scale", [1e-20, 1e-30, 1e30])
def test_spectral_norm_module_normalises_tiny_and_huge_weights(scale):
    """Review S1/S4: a weight of 1e-20 gave inf (sigma underflowed), one of 1e30 gave NaN (it overflowed)."""
    W = torch.randn(4, 3, generator=_gen(1))
    m = _sn(W * scale)
    for _ in range(30):  # training mode: one power iteration per forward
        out = m(W * scale)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(lip.spectral_norm_exact(out.double()), torch.tensor(1.0, dtype=torch.float64),
                               rtol=1e-5, atol=0)
    m.eval()
    torch.testing.assert_close(m(W * scale), out)


def test_spectral_norm_module_keeps_a_zero_weight_zero_and_its_vectors():
    """Review S1: a zero weight gave NaN and left zero vectors behind, so later weights stayed broken."""
    W = torch.randn(4, 3, generator=_gen(1))
    m = _sn(W)
    u, v = m.u.clone(), m.v.clone()
    out = m(torch.zeros(4, 3))
    assert torch.equal(out, torch.zeros(4, 3))
    assert torch.equal(m.u, u) and torch.equal(m.v, v)  # the vectors are not replaced by zeros
    m.eval()
    assert torch.equal(m(torch.zeros(4, 3)), torch.zeros(4, 3))
    m.train()
    for _ in range(30):
        out = m(W)
    torch.testing.assert_close(lip.spectral_norm_exact(out.double()), torch.tensor(1.0, dtype=torch.float64), rtol=1e-5,
                               atol=0)


def test_spectral_norm_module_with_u_orthogonal_to_wv_is_finite():
    """Eval mode uses the stored vectors; hand-set vectors with u orthogonal to Wv give sigma 0, floored at eps."""
    m = _sn(torch.eye(4, 3))
    m.u.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    m.v.copy_(torch.tensor([1.0, 0.0, 0.0]))
    m.eval()
    out = m(torch.eye(4, 3))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.eye(4, 3) / m.eps)  # the weight (rescaled to [1, 2): here by 1) / eps


def test_spectral_norm_module_propagates_nan_without_poisoning_its_vectors():
    m = _sn(torch.randn(4, 3, generator=_gen(1)))
    u = m.u.clone()
    W = torch.randn(4, 3, generator=_gen(2))
    W[0, 0] = float("nan")
    assert torch.isnan(m(W)).all()  # documented: NaN propagates, as in a layer
    assert torch.equal(m.u, u)


# spectral_normalize and its reference divide by sigma floored at eps (a zero W stays zero; with n_iter = 0, a u
# orthogonal to Wv gives a finite weight), and the power iteration works on W / 2^k when its norms could under- or
# overflow.
@pytest.mark.parametrize("fn", [lip.spectral_normalize, lip.spectral_normalize_reference])
def test_spectral_normalize_of_a_zero_weight_is_finite(fn):
    step = fn(torch.zeros(4, 3), _unit(4, 1), _unit(3, 2), 1, 1e-12)
    assert torch.isfinite(step.weight).all()


@pytest.mark.parametrize("fn", [lip.spectral_normalize, lip.spectral_normalize_reference])
def test_spectral_normalize_with_u_orthogonal_to_wv_is_finite(fn):
    step = fn(torch.eye(4, 3), torch.tensor([0.0, 0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0]), 0, 1e-12)
    assert torch.isfinite(step.weight).all()


@pytest.mark.parametrize("scale", [1e-20, 1e30])
def test_spectral_norm_estimate_of_tiny_and_huge_matrices(scale):
    """Entries of 1e-20 or 1e30 gave an estimate of 0 (squared norms under/overflow in float32); the iteration
    now runs on the exactly rescaled W / 2^k."""
    W = _W()
    est = lip.spectral_norm_estimate(W * scale, 30, generator=_gen()).sigma / scale
    torch.testing.assert_close(est, lip.spectral_norm_exact(W), rtol=1e-4, atol=0)


@pytest.mark.parametrize("eps", [0.0, -1.0, float("nan"), "1", None, True])
def test_spectral_normalisation_checks_eps(eps):
    """Review S3/S6: eps = 0 or -1 was accepted, a string or None failed inside clamp_min."""
    W, u, v = _W(), _unit(4, 1), _unit(3, 2)
    for call in (lambda: lip.spectral_normalize(W, u, v, 1, eps), lambda: lip.spectral_normalize_reference(W, u, v, 1, eps),
                 lambda: lip.spectral_norm_estimate(W, 3, eps=eps), lambda: lip.SpectralNorm(W, eps=eps)):
        with pytest.raises(ValueError, match="eps must be a finite number > 0"):
            call()


def test_spectral_norm_module_checks_dim_and_the_weight_it_is_given():
    with pytest.raises(ValueError, match="dim must be an integer"):  # review S3: True was taken for 1
        lip.SpectralNorm(_W(), dim=True)
    with pytest.raises(ValueError, match="weight must have at least one dimension"):  # review S6: named dim
        lip.SpectralNorm(torch.tensor(1.0))
    m = _sn(_W())
    with pytest.raises(ValueError, match=r"weight must have the shape \(4, 3\)"):
        m(torch.randn(3))


def test_spectral_projection_of_tiny_and_zero_weights():
    net = nn.Linear(3, 4)
    with torch.no_grad():
        net.weight.copy_(_W() * 1e-20)
    lip.spectral_project_(net, n_iter=30)
    torch.testing.assert_close(lip.spectral_norm_exact(net.weight.detach().double()),
                               torch.tensor(1.0, dtype=torch.float64), rtol=1e-4, atol=0)
    with torch.no_grad():
        net.weight.zero_()
    lip.spectral_project_(net)
    assert torch.equal(net.weight, torch.zeros(4, 3))


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_conv_operator_norm_of_tiny_and_huge_kernels(scale):
    """Review S4: a kernel of 1e30 gave NaN, one of 1e-30 gave 0."""
    k = _kernel()
    ref = lip.conv_operator_norm(k, (4, 4), "zeros", 30, generator=_gen(3))
    out = lip.conv_operator_norm(k * scale, (4, 4), "zeros", 30, generator=_gen(3))
    torch.testing.assert_close(out / scale, ref, rtol=1e-5, atol=0)


def test_norms_of_float16_weights_are_computed_in_float32():
    """Review S5: LAPACK and the CPU FFT have no half precision."""
    W, k = _W().double(), _kernel().double()
    for fn, arg in ((lip.spectral_norm_exact, W), (lip.reshaped_kernel_norm, k),
                    (lambda w: lip.conv_operator_norm_fft(w, (4, 4)), k)):
        out = fn(arg.half())
        assert out.dtype == torch.float16
        torch.testing.assert_close(out.double(), fn(arg.half().double()), rtol=1e-3, atol=0)


def test_statistics_reject_nan_and_inf():
    W = _W()
    W[1, 1] = float("nan")
    for call in (lambda: lip.spectral_norm_exact(W), lambda: lip.spectral_norm_estimate(W),
                 lambda: lip.lipschitz_upper_bound([W]), lambda: xlip.ones_start_recovery(W.double())):
        with pytest.raises(ValueError, match="must be finite"):
            call()
    with pytest.raises(ValueError, match="singular_values"):  # review S4: a NaN singular value gave a NaN matrix
        xlip.matrix_with_spectrum([float("nan")], (4, 3), seed=0)


def test_lipschitz_upper_bound_rejects_layers_that_do_not_compose():
    """Review S3: norms of a (4, 3) and a (2, 5) layer were multiplied."""
    with pytest.raises(ValueError, match=r"weights\[1\] of shape \(2, 5\) does not compose with weights\[0\]"):
        lip.lipschitz_upper_bound([torch.randn(4, 3), torch.randn(2, 5)])
    bound = lip.lipschitz_upper_bound([torch.eye(4, 3) * 2, torch.eye(2, 4) * 3])
    assert bound.item() == pytest.approx(6.0)


def test_ones_start_recovery_of_a_zero_matrix():
    """Degenerate input: the estimate 0 is exact at once (was 0/0, hence never 'recovered')."""
    assert xlip.ones_start_recovery(torch.zeros(3, 3, dtype=torch.float64)) == 1


# ----------------------------------------------------------------------------- trainers


def test_classifier_trainer_rejects_a_label_that_would_build_a_huge_model():
    """Review S3: one label of 10**6 silently trained a 1,000,001-class output layer."""
    x, y = torch.randn(16, 3, generator=_gen()), torch.arange(16) % 3
    y_bad = y.clone()
    y_bad[0] = 10**6
    with pytest.raises(ValueError, match="pass n_classes"):
        xlip.train_classifier("plain", x, y_bad, hidden=(8,), epochs=1)
    with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 3\)"):
        xlip.train_classifier("plain", x, y_bad, hidden=(8,), epochs=1, n_classes=3)
    with pytest.raises(ValueError, match="y must hold class labels"):
        xlip.train_classifier("plain", x, y - 1, hidden=(8,), epochs=1)
    model, _ = xlip.train_classifier("plain", x, y, hidden=(8,), epochs=1, n_classes=5)
    assert model(x).shape == (16, 5)


def test_trainers_reject_float16_and_non_finite_data():
    """Review S1: float16 data trained to NaN (spectral-norm classifier, gradient-penalty critic)."""
    x, y = torch.randn(16, 3, generator=_gen()), torch.arange(16) % 3
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        xlip.train_classifier("spectral-norm", x.half(), y, hidden=(8,), epochs=2, batch_size=8)
    real, fake = torch.randn(16, 2, generator=_gen(1)), torch.randn(12, 2, generator=_gen(2))
    with pytest.raises(TypeError, match="real must be float32 or float64"):
        xlip.train_critic("gp-two-sided", real.half(), fake.half(), hidden=(8,), steps=3, batch_size=8)
    with pytest.raises(ValueError, match="fake must be finite"):
        xlip.train_critic("gp-two-sided", real, fake.masked_fill(fake > 1, float("inf")), hidden=(8,), steps=3)
    with pytest.raises(ValueError, match="x must be finite"):  # was FloatingPointError from the loss
        xlip.train_classifier("plain", x.masked_fill(x > 1, float("nan")), y, hidden=(8,), epochs=1)
    model, history = xlip.train_classifier("spectral-norm", x.double(), y, hidden=(8,), epochs=2, batch_size=8)
    assert next(model.parameters()).dtype == torch.float64 and all(math.isfinite(h) for h in history)


def test_jacobian_norms_of_a_training_mode_model_restore_its_mode():
    """A spectrally normalised model in training mode failed inside torch.func (its forward updates buffers)."""
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    for layer in (net[0], net[2]):
        lip.spectral_normalization(layer, generator=_gen())
    x = torch.randn(5, 3, generator=_gen(1))
    u = net[0].parametrizations.weight[0].u.clone()
    norms = lip.jacobian_norms(net, x)
    assert net.training and torch.equal(net[0].parametrizations.weight[0].u, u)
    net.eval()
    torch.testing.assert_close(lip.jacobian_norms(net, x), norms)
    assert not net.training

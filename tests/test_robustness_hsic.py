"""Bad input to kexue.hsic and kexue.experiments.hsic, and the review's worst cases for them.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The regression tests below the cases pin the worst findings of the robustness review for these
modules (issue 22): the bottleneck on a collapsed layer, non-symmetric Gram matrices, float16
Gram matrices, error messages that named the wrong argument, training on fewer examples than the
smallest batch the bottleneck uses.
"""

from __future__ import annotations

import math

import pytest
import torch

from kexue import hsic as H
from kexue.experiments import hsic as X
from kexue.experiments.training import seeded_mlp
from tests._probe import Arg, Case, inventory_test, probe_tests

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _points(n: int = 8, d: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=_gen(seed), dtype=F64)


def _grams(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = _points(n, 2, 0)
    return H.gaussian_kernel(x), H.gaussian_kernel(x[:, :1] ** 2 + 0.3 * _points(n, 1, 1))


# ----------------------------------------------------------------------------- kexue.hsic

_PTS = Arg("tensor", ndim=(1, 2), finite=True)
_VECTOR_IS_POINTS = {"one dimension too few": "a vector is read as n one-dimensional points (documented)"}
_GRAM = Arg("tensor", ndim=(2,), finite=True)
_SIGMA = Arg("real", low=0.0, open_low=True)


def _points_case(name: str, extra: dict | None = None, extra_args: dict | None = None) -> Case:
    def call():
        return getattr(H, name), {"x": _points(), **(extra or {})}

    return Case(name, call, {"x": _PTS, **(extra_args or {})}, skip={"x": _VECTOR_IS_POINTS})


def _gram_case(name: str, extra: dict | None = None, extra_args: dict | None = None, n: int = 8) -> Case:
    def call():
        K, L = _grams(n)
        return getattr(H, name), {"K": K, "L": L, **(extra or {})}

    return Case(name, call, {"K": _GRAM, "L": _GRAM, **(extra_args or {})})


def _hsic_test():
    x = _points(10, 1, 0)
    return H.hsic_test, {"x": x, "y": x**2 + 0.1 * _points(10, 1, 1), "method": "permutation",
                         "kernel_x": "gaussian", "kernel_y": "gaussian", "sigma_x": 1.0, "sigma_y": 0.5,
                         "n_permutations": 19, "generator": _gen()}


def _hsic_gaussian():
    x = _points(10, 2, 0)
    return H.hsic_gaussian, {"x": x, "y": x[:, :1] ** 2 + 0.1 * _points(10, 1, 1), "sigma_x": 1.0,
                             "sigma_y": 0.5, "estimator": "unbiased", "normalized": True, "block_rows": 3}


def _bottleneck_loss():
    K = _grams(6)[0]
    return H.bottleneck_loss, {"z": _points(6, 4, 2).requires_grad_(), "Kx": K,
                               "Ky": H.delta_kernel(torch.tensor([0, 1, 2, 0, 1, 2])), "beta": 50.0,
                               "sigma": "median", "nhsic": "cka", "eps": 1e-5, "cache": {}}


HSIC_CASES = [
    _points_case("sq_distances"),
    _points_case("median_bandwidth"),
    _points_case("gaussian_kernel", {"sigma": 1.5, "scale": 2.0}, {"sigma": _SIGMA, "scale": _SIGMA}),
    _points_case("linear_kernel"),
    Case("delta_kernel", lambda: (H.delta_kernel, {"labels": torch.tensor([0, 1, 2, 0, 1]), "dtype": F64}),
         {"labels": Arg("index_tensor", ndim=(1,)), "dtype": Arg("dtype")},
         skip={"labels": {"a float tensor": "any comparable labels are categories (documented)",
                          "a negative id": "-1 is a category like any other", "an id far out of range": "as above"}}),
    Case("gram", lambda: (H.gram, {"x": _points(), "kernel": "gaussian"}),
         {"x": _PTS, "kernel": Arg("choice")}, skip={"x": _VECTOR_IS_POINTS}),
    _gram_case("hsic_biased"),
    _gram_case("hsic_unbiased"),
    _gram_case("hsic_su"),
    _gram_case("hsic", {"estimator": "unbiased"}, {"estimator": Arg("choice")}),
    _gram_case("hsic_reference", {"estimator": "su"}, {"estimator": Arg("choice")}),
    _gram_case("normalized_hsic", {"estimator": "biased"}, {"estimator": Arg("choice")}),
    _gram_case("gamma_test"),
    _gram_case("permutation_test", {"n_permutations": 19, "generator": _gen()},
               {"n_permutations": Arg("int", minimum=1), "generator": Arg("generator", optional=True)}),
    Case("hsic_test", _hsic_test,
         {"x": _PTS, "y": _PTS, "method": Arg("choice"), "kernel_x": Arg("choice"), "kernel_y": Arg("choice"),
          "sigma_x": _SIGMA, "sigma_y": _SIGMA, "n_permutations": Arg("int", minimum=1),
          "generator": Arg("generator", optional=True)}),
    Case("hsic_gaussian", _hsic_gaussian,
         {"x": _PTS, "y": _PTS, "sigma_x": _SIGMA, "sigma_y": _SIGMA, "estimator": Arg("choice"),
          "normalized": Arg("flag"), "block_rows": Arg("int", minimum=1, optional=True)},
         skip={"x": _VECTOR_IS_POINTS}),
    Case("cca_operator", lambda: (H.cca_operator, {"K": _grams()[0], "eps": 1e-3}), {"K": _GRAM, "eps": _SIGMA}),
    _gram_case("hsic_normalized_cca", {"eps": 1e-3}, {"eps": _SIGMA}),
    Case("bottleneck_loss", _bottleneck_loss,
         {"z": Arg("tensor", ndim=(2,), finite=True), "Kx": _GRAM, "Ky": _GRAM, "beta": Arg("real", low=0.0),
          "sigma": _SIGMA, "nhsic": Arg("choice"), "eps": _SIGMA, "cache": Arg("choice", name="cache", optional=True)}),
]

HSIC_EXEMPT = {
    "KERNELS": "a registry of the kernels, each probed under its own name and through gram's kernel",
    "ESTIMATORS": "a registry of the estimators, each probed under its own name and through hsic's estimator",
    "TESTS": "a registry of the tests, each probed under its own name and through hsic_test's method",
    "HSICTestResult": "a NamedTuple of results, built by the tests (probed)",
}


# ----------------------------------------------------------------------------- kexue.experiments.hsic


def _mlp() -> torch.nn.Sequential:
    return seeded_mlp([3, 5, 4, 3], activation="tanh", seed=0, dtype=F64)


def _xy(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return _points(n, 3, 0), torch.arange(n) % 3


def _objective_call():
    x, y = _xy()
    return X.BottleneckObjective(beta=10.0), {"model": _mlp(), "xb": x, "yb": y, "generator": _gen(), "epoch": 0}


def _readout():
    x, y = _xy()
    return X.LOSSES["readout"], {"model": _mlp(), "xb": x, "yb": y, "generator": _gen(), "epoch": 0}


def _fit():
    x, y = _xy()
    return X.fit_hsic_bottleneck, {"model": _mlp(), "x": x, "y": y, "epochs": 1, "readout_epochs": 1,
                                   "batch_size": 4, "lr": 1e-2, "readout_lr": 1e-2, "beta": 10.0, "nhsic": "cka",
                                   "eps": 1e-5, "sigma_scale": 2.0, "seed": 0}


_LABELS = Arg("index_tensor", ndim=(1,))
_LOSS_FN_SKIP = {"generator": {"an int seed": "fit passes its own generator; the bottleneck draws no random numbers"}}

EXPERIMENT_CASES = [
    Case("make_dependence",
         lambda: (X.make_dependence, {"kind": "parabola", "n": 5, "noise": 0.1, "seed": 0, "dtype": F64}),
         {"kind": Arg("choice"), "n": Arg("int", minimum=1), "noise": Arg("real", low=0.0, optional=True),
          "seed": Arg("int", minimum=0), "dtype": Arg("dtype")}),
    Case("pearson_variance_ratio",
         lambda: (X.pearson_variance_ratio, {"x": _points(6, 1, 0), "y": _points(6, 1, 1)}),
         {"x": Arg("tensor", ndim=(1, 2), finite=True), "y": Arg("tensor", ndim=(1, 2), finite=True)}),
    Case("hidden_representations",
         lambda: (X.hidden_representations, {"model": _mlp(), "x": _xy()[0], "detach": True}),
         {"model": Arg("module"), "x": Arg("tensor", ndim=(2,)), "detach": Arg("flag")}),
    Case("BottleneckObjective",
         lambda: (X.BottleneckObjective, {"beta": 10.0, "nhsic": "cca", "eps": 1e-5, "sigma_scale": 2.0}),
         {"beta": Arg("real", low=0.0), "nhsic": Arg("choice"), "eps": _SIGMA,
          "sigma_scale": Arg("real", low=0.0, open_low=True, optional=True)}),
    Case("BottleneckObjective.__call__", _objective_call,
         {"model": Arg("module"), "xb": Arg("tensor", ndim=(2,), finite=True), "yb": _LABELS,
          "generator": Arg("generator", optional=True), "epoch": Arg("int", minimum=0)},
         skip={**_LOSS_FN_SKIP,
               "yb": {"a negative id": "labels are categories of the delta kernel: -1 is one like any other",
                      "an id far out of range": "as above"}}),
    Case("LOSSES.readout", _readout,
         {"model": Arg("module"), "xb": Arg("tensor", ndim=(2,), finite=True), "yb": _LABELS,
          "generator": Arg("generator", optional=True), "epoch": Arg("int", minimum=0)},
         skip=_LOSS_FN_SKIP),
    Case("fit_hsic_bottleneck", _fit,
         {"model": Arg("module"), "x": Arg("tensor", ndim=(2,), finite=True), "y": _LABELS,
          "epochs": Arg("int", minimum=1), "readout_epochs": Arg("int", minimum=1),
          "batch_size": Arg("int", minimum=4), "lr": Arg("real", low=0.0, open_low=True),
          "readout_lr": Arg("real", low=0.0, open_low=True, optional=True), "beta": Arg("real", low=0.0),
          "nhsic": Arg("choice"), "eps": _SIGMA, "sigma_scale": Arg("real", low=0.0, open_low=True, optional=True),
          "seed": Arg("int", minimum=0)}),
]

EXPERIMENT_EXEMPT = {
    "DEPENDENCES": "a registry of shape names and default noise levels, probed through make_dependence's kind",
}

CASES = HSIC_CASES + EXPERIMENT_CASES

test_bad_input, test_bad_scalars = probe_tests(CASES)
test_hsic_inventory = inventory_test("kexue.hsic", HSIC_CASES, HSIC_EXEMPT)
test_experiments_hsic_inventory = inventory_test("kexue.experiments.hsic", EXPERIMENT_CASES, EXPERIMENT_EXEMPT)


# ----------------------------------------------------------------------------- the review's worst cases: kexue.hsic


def _labels_gram(n: int = 6, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return H.delta_kernel(torch.arange(n) % 3, dtype=dtype)


@pytest.mark.parametrize("nhsic", ["cka", "cca"])
def test_bottleneck_loss_on_a_collapsed_layer_is_finite_with_a_gradient(nhsic):
    """Review S1/S5: a constant z gave a loss without grad_fn, so training stopped with
    'element 0 of tensors does not require grad'. Now: loss 0, attached, gradient exactly 0."""
    z = torch.ones(6, 4, requires_grad=True)
    Kx = H.gaussian_kernel(torch.randn(6, 3, generator=_gen()))
    loss, hx, hy = H.bottleneck_loss(z, Kx, _labels_gram(), beta=50.0, nhsic=nhsic)
    assert loss.requires_grad and loss.item() == 0.0 and hx.item() == 0.0 and hy.item() == 0.0
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.equal(grad, torch.zeros_like(z))


def test_normalized_hsic_of_constant_data_is_plus_zero_and_differentiable():
    z = torch.full((5, 2), 3.0, dtype=F64, requires_grad=True)
    value = H.normalized_hsic(H.gaussian_kernel(z), H.gaussian_kernel(_points(5)))
    assert value.requires_grad and str(value.item()) == "0.0"  # +0.0, also for a negative raw HSIC
    assert torch.equal(torch.autograd.grad(value, z)[0], torch.zeros_like(z))


def test_fit_hsic_bottleneck_trains_on_constant_inputs_and_a_dead_layer():
    """Review S5: fit_hsic_bottleneck(..., torch.ones(16, 3), ...) raised an unclear RuntimeError."""
    y = torch.randint(0, 3, (16,), generator=_gen())
    model = seeded_mlp([3, 8, 3], activation="tanh", seed=0)
    run = X.fit_hsic_bottleneck(model, torch.ones(16, 3), y, epochs=2, readout_epochs=1, batch_size=8)
    assert run["nhsic_x"] == [[0.0], [0.0]] and run["hsic_loss"] == [0.0, 0.0]
    assert all(math.isfinite(v) for v in run["readout_loss"])
    # varying inputs, but the first hidden layer is the zero map: it stays collapsed, the rest trains
    model = seeded_mlp([3, 8, 8, 3], activation="tanh", seed=0)
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()
    before = [p.clone() for p in model[2].parameters()]
    run = X.fit_hsic_bottleneck(model, torch.randn(16, 3, generator=_gen()), y, epochs=2, readout_epochs=1,
                                batch_size=8)
    assert all(row == [0.0, 0.0] for row in run["nhsic_x"])  # the second layer sees a constant input too
    assert all(torch.equal(a, b) for a, b in zip(before, model[2].parameters(), strict=True))
    assert torch.equal(model[0].weight, torch.zeros_like(model[0].weight))


def test_fit_hsic_bottleneck_needs_a_batch_of_four():
    """Review S4: with 3 examples no batch reached the bottleneck and the history was NaN (0/0)."""
    model = seeded_mlp([3, 8, 3], activation="tanh", seed=0)
    with pytest.raises(ValueError, match="x must hold at least 4 examples"):
        X.fit_hsic_bottleneck(model, torch.randn(3, 3), torch.tensor([0, 1, 2]), epochs=1, readout_epochs=1,
                              batch_size=8)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 4, got 3"):
        X.fit_hsic_bottleneck(model, torch.randn(8, 3), torch.arange(8) % 3, epochs=1, readout_epochs=1,
                              batch_size=3)


_ESTIMATOR_CALLS = {
    "hsic_biased": lambda K, L: H.hsic_biased(K, L),
    "hsic_unbiased": lambda K, L: H.hsic_unbiased(K, L),
    "hsic_su": lambda K, L: H.hsic_su(K, L),
    "hsic": lambda K, L: H.hsic(K, L, "unbiased"),
    "hsic_reference": lambda K, L: H.hsic_reference(K, L, "su"),
    "normalized_hsic": lambda K, L: H.normalized_hsic(K, L),
    "gamma_test": lambda K, L: H.gamma_test(K, L),
    "permutation_test": lambda K, L: H.permutation_test(K, L, n_permutations=9, generator=_gen()),
    "cca_operator": lambda K, L: H.cca_operator(K),
    "hsic_normalized_cca": lambda K, L: H.hsic_normalized_cca(K, L),
    "bottleneck_loss": lambda K, L: H.bottleneck_loss(_points(8, 3, 5), K, L, beta=1.0),
    "bottleneck_loss[cca]": lambda K, L: H.bottleneck_loss(_points(8, 3, 5), K, L, beta=1.0, nhsic="cca"),
}


@pytest.mark.parametrize("name", sorted(_ESTIMATOR_CALLS))
def test_every_estimator_rejects_a_non_symmetric_gram_matrix(name):
    """Review S3: the value depended on whether K or K.T was passed. A cross-Gram matrix k(x_i, y_j)
    is the usual way to get one."""
    x, y = _points(8, 2, 0), _points(8, 2, 1)
    cross = torch.exp(-torch.cdist(x, y) ** 2 / 2)
    K, L = _grams(8)
    for bad, good, word in ((cross, L, "K"), (cross.mT, L, "K"), (K, cross, "L")):
        if name.startswith("bottleneck_loss"):
            word = "Kx" if word == "K" else "Ky"
        if name == "cca_operator" and word == "L":
            continue
        with pytest.raises(ValueError, match=rf"^{word} must be a symmetric Gram matrix"):
            _ESTIMATOR_CALLS[name](bad, good)
    _ESTIMATOR_CALLS[name](K, L)  # the valid call
    _ESTIMATOR_CALLS[name](K + 1e-9 * torch.randn(8, 8, generator=_gen(), dtype=F64), L)  # rounding passes


@pytest.mark.parametrize("name", sorted(_ESTIMATOR_CALLS))
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_every_estimator_rejects_non_finite_gram_entries(name, bad):
    K, L = _grams(8)
    K = K.clone()
    K[2, 3] = K[3, 2] = bad
    word = "Kx" if name.startswith("bottleneck_loss") else "K"
    with pytest.raises(ValueError, match=rf"^{word} must be finite, got"):
        _ESTIMATOR_CALLS[name](K, L)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_float16_gram_matrices_are_computed_in_float32(estimator):
    """Review S1/S5: float16 CKA was off by 0.12 (a rounding tolerance in float16 eps zeroed it) and
    hsic_normalized_cca failed with 'lu_cpu not implemented for Half'. Now float16 (and bfloat16)
    input is computed in float32 and the result rounded once."""
    x = _points(50, 2, 0)
    K, L = H.gaussian_kernel(x), H.gaussian_kernel(x[:, :1] ** 2 + 0.3 * _points(50, 1, 1))
    for fn in (lambda K, L: H.normalized_hsic(K, L, estimator), lambda K, L: H.hsic(K, L, estimator),
               lambda K, L: H.hsic_reference(K, L, estimator), lambda K, L: H.hsic_normalized_cca(K, L, eps=1e-3),
               lambda K, L: H.cca_operator(K, eps=1e-3)):
        for low in (torch.float16, torch.bfloat16):
            Kl, Ll = K.to(low), L.to(low)
            out = fn(Kl, Ll)
            assert out.dtype == low
            torch.testing.assert_close(out, fn(Kl.float(), Ll.float()).to(low), rtol=0, atol=0)
    # CKA is then as close to float64 as rounding K and L to float16 (relative 2^-11) allows
    exact, half = H.normalized_hsic(K, L, estimator), H.normalized_hsic(K.half(), L.half(), estimator)
    assert abs(half.item() - exact.item()) <= 2e-3 * abs(exact.item())
    # the kernels themselves: float32 arithmetic rounded once
    for kernel in (H.gaussian_kernel, H.linear_kernel, H.sq_distances):
        torch.testing.assert_close(kernel(x.half()), kernel(x.half().float()).half(), rtol=0, atol=0)


def test_bottleneck_loss_in_float16_is_float32_rounded_once():
    """Review S1: all-float16 inputs gave a loss 16.8 away from the float32 one."""
    Kx, Ky, z = H.gaussian_kernel(_points(20, 3, 0)).half(), _labels_gram(20).half(), _points(20, 4, 1).half()
    for nhsic in ("cka", "cca"):
        half = H.bottleneck_loss(z, Kx, Ky, beta=50.0, nhsic=nhsic)
        wide = H.bottleneck_loss(z.float(), Kx.float(), Ky.float(), beta=50.0, nhsic=nhsic)
        for a, b in zip(half, wide, strict=True):
            assert a.dtype == torch.float16
            torch.testing.assert_close(a, b.half(), rtol=0, atol=0)
    cka = H.bottleneck_loss(z, Kx, Ky, beta=50.0)[0].item()
    exact = H.bottleneck_loss(z.double(), Kx.double(), Ky.double(), beta=50.0)[0].item()
    assert abs(cka - exact) <= 1e-2 * abs(exact)


def test_bottleneck_loss_does_not_depend_on_the_scale_of_z_or_of_the_grams():
    """Review S4: z or Kx with entries of 1e30 gave NaN. CKA with median widths is scale-free."""
    Kx, Ky, z = H.gaussian_kernel(_points(20, 3, 0)).float(), _labels_gram(20), _points(20, 4, 1).float()
    base = H.bottleneck_loss(z, Kx, Ky, beta=50.0)
    for scale in (1e30, 1e-30):
        for args in ((z * scale, Kx, Ky), (z, Kx * scale, Ky), (z, Kx, Ky * scale)):
            out = H.bottleneck_loss(*args, beta=50.0)
            for a, b in zip(base, out, strict=True):
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    K, L = _grams(8)
    torch.testing.assert_close(H.normalized_hsic(K * 1e300, L * 1e-300), H.normalized_hsic(K, L), rtol=1e-12, atol=0)


def test_hsic_test_names_the_argument_at_fault():
    """Review S6: hsic_test(x, y with a NaN) said 'x contains NaN'; sigma_y and kernel_y errors
    named sigma and kernel."""
    x = _points(12, 1, 0)
    y = x**2
    bad = y.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^y must be finite, got 1 NaN"):
        H.hsic_test(x, bad)
    with pytest.raises(TypeError, match=r"^y must be a floating-point tensor"):
        H.hsic_test(x, y.long())
    with pytest.raises(ValueError, match=r"^sigma_y must be a finite number > 0 or 'median', got -1"):
        H.hsic_test(x, y, sigma_y=-1.0)
    with pytest.raises(ValueError, match=r"^kernel_y must be one of"):
        H.hsic_test(x, y, kernel_y="rbf")
    with pytest.raises(ValueError, match=r"^x and y: the gamma test needs n >= 6 samples, got n = 5"):
        H.hsic_test(x[:5], y[:5], "gamma")
    with pytest.raises(ValueError, match=r"^labels must be finite"):
        H.delta_kernel(torch.tensor([0.0, float("nan"), 1.0]))
    # labels of any dtype for the delta kernel, points for the others
    result = H.hsic_test(torch.arange(12) % 2, y, "permutation", kernel_x="delta", n_permutations=19, generator=_gen())
    assert 0 < result.p_value <= 1


@pytest.mark.parametrize("kernel", [H.sq_distances, H.gaussian_kernel, H.linear_kernel])
def test_kernels_name_points_whose_distances_overflow(kernel):
    """Review S4 (1e30 probes): float32 points of 1e20 gave NaN distances (inf - inf), and the median
    width of 1e30 points failed as 'sigma must be a finite number > 0, got inf'."""
    x = _points(10, 2).float()
    with pytest.raises(ValueError, match=r"^x is too large for torch.float32: .* scale x down or use float64"):
        kernel(x * 1e20)
    assert torch.isfinite(kernel(x.double() * 1e20)).all()  # fine in float64
    assert torch.isfinite(kernel(x * 1e15)).all()


def test_hsic_test_with_median_widths_does_not_depend_on_the_scale():
    x, y = _points(12, 1, 0).float(), _points(12, 1, 1).float()
    y = x**2 + 0.1 * y
    for method in ("gamma", "permutation"):
        base = H.hsic_test(x, y, method, n_permutations=19, generator=_gen())
        for scale in (1e30, 1e-30):
            out = H.hsic_test(x * scale, y / scale, method, n_permutations=19, generator=_gen())
            assert out.statistic == pytest.approx(base.statistic, rel=1e-6) and out.p_value == pytest.approx(base.p_value)
    with pytest.raises(ValueError, match="^y is too large for torch.float32"):
        H.hsic_test(x, y * 1e30, sigma_y=1.0)
    with pytest.raises(ValueError, match="^y is too large for torch.float32"):
        H.hsic_test(x, y * 1e30, kernel_y="linear")


def test_hsic_gaussian_checks_its_flag_and_keeps_float16_in_float32():
    x, y = _points(30, 2, 0), _points(30, 1, 1)
    with pytest.raises(ValueError, match="normalized must be True or False, got 'yes'"):
        H.hsic_gaussian(x, y, normalized="yes")
    exact = H.hsic_gaussian(x, y, 1.0, 1.0, normalized=True)
    grad_path = H.hsic_gaussian(x.half().requires_grad_(), y.half(), 1.0, 1.0, normalized=True)
    assert grad_path.dtype == torch.float16 and abs(grad_path.item() - exact.item()) < 2e-3


# ----------------------------------------------------------------------------- kexue.experiments.hsic


def test_pearson_variance_ratio_rejects_nan_and_a_row_for_a_column():
    x, y = _points(20, 1, 0), _points(20, 1, 1)
    bad = x.clone()
    bad[3] = float("inf")
    with pytest.raises(ValueError, match=r"^x must be finite"):
        X.pearson_variance_ratio(bad, y)
    with pytest.raises(ValueError, match=r"y must be one sample, of shape \(n,\) or \(n, 1\), got shape \(1, 20\)"):
        X.pearson_variance_ratio(x, y.mT)


def test_the_batch_must_fit_the_model():
    model = _mlp()
    with pytest.raises(ValueError, match=r"x must have 3 features \(the model's input width\), got shape \(8, 4\)"):
        X.hidden_representations(model, _points(8, 4))
    with pytest.raises(TypeError, match="x must have the model's dtype torch.float64, got torch.float32"):
        X.hidden_representations(model, _points(8, 3).float())
    with pytest.raises(ValueError, match="detach must be True or False"):
        X.hidden_representations(model, _points(8, 3), detach=None)


def test_labels_outside_the_readout_are_named():
    """Review S6: a label of 10**6 or -1 ended in IndexError 'Target ... is out of bounds'."""
    x, y = _xy()
    for bad in (torch.cat([y[:-1], torch.tensor([10**6])]), torch.cat([y[:-1], torch.tensor([-1])])):
        with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 3\) \(the readout's outputs\)"):
            X.fit_hsic_bottleneck(_mlp(), x, bad, epochs=1, readout_epochs=1, batch_size=4)
        with pytest.raises(ValueError, match=r"yb must hold class labels in \[0, 3\)"):
            X.LOSSES["readout"](_mlp(), x, bad, generator=_gen(), epoch=0)
    with pytest.raises(TypeError, match="y must be an integer or bool tensor"):
        X.fit_hsic_bottleneck(_mlp(), x, y.double(), epochs=1, readout_epochs=1, batch_size=4)
    # int32 labels are labels
    loss = X.LOSSES["readout"](_mlp(), x, y.int(), generator=_gen(), epoch=0)
    torch.testing.assert_close(loss, X.LOSSES["readout"](_mlp(), x, y, generator=_gen(), epoch=0))


def test_a_kernel_too_wide_for_float32_is_an_error_not_a_silent_zero():
    model = seeded_mlp([3, 5, 3], activation="tanh", seed=0)
    x, y = torch.randn(8, 3, generator=_gen()), torch.arange(8) % 3
    objective = X.BottleneckObjective(beta=1.0, nhsic="cka", sigma_scale=1e3)
    with pytest.raises(ValueError, match="kernels are too wide for torch.float32"):
        objective(model, x, y, generator=_gen(), epoch=0)
    # the same width in float64 is fine, as is a collapsed layer in float32 (0 with a zero gradient)
    loss = X.BottleneckObjective(beta=1.0, nhsic="cka", sigma_scale=1e3)(
        seeded_mlp([3, 5, 3], activation="tanh", seed=0, dtype=F64), x.double(), y, generator=_gen(), epoch=0)
    assert loss.requires_grad and math.isfinite(loss.item())
    loss = X.BottleneckObjective(beta=1.0, nhsic="cka", sigma_scale=1.0)(model, torch.ones(8, 3), y,
                                                                         generator=_gen(), epoch=0)
    assert loss.requires_grad and loss.item() == 0.0


def test_the_objective_checks_the_epoch_it_records_under():
    objective = X.BottleneckObjective(beta=1.0)
    x, y = _xy()
    for epoch in (-1, 1.5, "0", None):
        with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
            objective(_mlp(), x, y, generator=_gen(), epoch=epoch)
    assert objective.history == {"nhsic_x": [], "nhsic_y": []}

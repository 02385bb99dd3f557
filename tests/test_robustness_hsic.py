"""Bad input to kexue.hsic and kexue.experiments.hsic, and the review's worst cases for them.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The regression tests below the cases pin the worst findings of the robustness review for these
modules (issue 22): the bottleneck on a collapsed layer, non-symmetric Gram matrices, float16
Gram matrices, error messages that named the wrong argument, training on fewer examples than the
smallest batch the bottleneck uses.
"""

from __future__ import annotations

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

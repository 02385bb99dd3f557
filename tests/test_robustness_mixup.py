"""Bad input to kexue.mixup and kexue.experiments.mixup, and the review's worst cases for them.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The regression tests below the cases pin the worst findings of the robustness review for these
modules (issue 22): a masked logit, integer inputs, mismatched batches, out-of-range labels,
float16/float64 data in the trainers.
"""

from __future__ import annotations

import torch

from kexue import mixup
from kexue.experiments import mixup as xmixup
from kexue.experiments.training import seeded_mlp
from tests._probe import Arg, Case, inventory_test, probe_tests


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _xy(n: int = 6, d: int = 3):
    x = torch.randn(n, d, generator=_gen(0))
    y = torch.arange(n) % 3
    return x, y


def _lam(n: int = 6) -> torch.Tensor:
    return torch.linspace(0.1, 0.9, n)


# ----------------------------------------------------------------------------- kexue.mixup

_X = Arg("tensor")
_Y = Arg("index_tensor", ndim=(1,))
_LAM = Arg("tensor", ndim=(0, 1), finite=True)
_LABELS_PASS_THROUGH = {
    "an id far out of range": "a mixer does not know the number of classes; labels pass through to the "
                              "loss, which checks their range (documented)",
    "a negative id": "as above: the loss rejects it (checking here would cost a sync per training batch)",
}


def _mixer_case(name: str, extra: dict | None = None, extra_args: dict | None = None) -> Case:
    def call():
        x, y = _xy()
        return getattr(mixup, name), {"x": x, "y": y, "generator": _gen(), **(extra or {})}

    return Case(name, call, {"x": _X, "y": _Y, "generator": Arg("generator"), **(extra_args or {})},
                skip={"y": _LABELS_PASS_THROUGH})


def _mix_inputs():
    x, _ = _xy()
    return mixup.mix_inputs, {"x": x, "index": torch.randperm(6, generator=_gen()), "lam": _lam()}


def _soft_targets():
    _, y = _xy()
    return mixup.soft_targets, {"y_a": y, "y_b": y.flip(0), "lam": _lam(), "num_classes": 3}


def _mixed_ce():
    _, y = _xy()
    return mixup.mixed_cross_entropy, {"logits": torch.randn(6, 3, generator=_gen(1)), "y_a": y,
                                       "y_b": y.flip(0), "lam": _lam()}


def _soft_ce():
    _, y = _xy()
    return mixup.soft_cross_entropy, {"logits": torch.randn(6, 3, generator=_gen(1)),
                                      "targets": mixup.soft_targets(y, y.flip(0), _lam(), 3)}


def _gap(fn):
    def call():
        x, _ = _xy()
        return fn, {"f": torch.tanh, "x_a": x, "x_b": x.flip(0), "lam": _lam()}

    return call


_GAP_ARGS = {"f": Arg("module"), "x_a": Arg("tensor", finite=True), "x_b": Arg("tensor", finite=True), "lam": _LAM}
_GAP_SKIP = {"f": {"a function": "any callable mapping a batch to a batch is a model here"}}

MIXUP_CASES = [
    Case("sample_lambda", lambda: (mixup.sample_lambda, {"alpha": 0.4, "size": 5, "generator": _gen(),
                                                         "dtype": torch.float32}),
         {"alpha": Arg("real", low=0.0, open_low=True), "size": Arg("int", minimum=0),
          "generator": Arg("generator"), "dtype": Arg("dtype")}),
    Case("mix_inputs", _mix_inputs, {"x": _X, "index": Arg("index_tensor", ndim=(1,)), "lam": _LAM}),
    _mixer_case("no_mixing"),
    _mixer_case("sample_pairing"),
    _mixer_case("sample_pairing_soft"),
    _mixer_case("mixup", {"alpha": 0.4, "per_sample": True},
                {"alpha": Arg("real", low=0.0, open_low=True), "per_sample": Arg("flag")}),
    _mixer_case("mixup_uniform", {"per_sample": False}, {"per_sample": Arg("flag")}),
    Case("sample_pairing_active", lambda: (mixup.sample_pairing_active,
                                           {"epoch": 3, "start": 2, "end": 8, "on": 2, "off": 1}),
         {"epoch": Arg("int", minimum=0), "start": Arg("int", minimum=0), "end": Arg("int", minimum=0),
          "on": Arg("int", minimum=1), "off": Arg("int", minimum=0)}),
    Case("soft_targets", _soft_targets,
         {"y_a": _Y, "y_b": _Y, "lam": _LAM, "num_classes": Arg("int", minimum=1)}),
    Case("mixed_cross_entropy", _mixed_ce,
         {"logits": Arg("tensor", ndim=(2,), finite=True), "y_a": _Y, "y_b": _Y, "lam": _LAM}),
    Case("soft_cross_entropy", _soft_ce,
         {"logits": Arg("tensor", ndim=(2,), finite=True), "targets": Arg("tensor", ndim=(2,), finite=True)}),
    Case("linearity_gap", _gap(mixup.linearity_gap), _GAP_ARGS, skip=_GAP_SKIP),
    Case("linearity_gap_reference", _gap(mixup.linearity_gap_reference), _GAP_ARGS, skip=_GAP_SKIP),
]

MIXUP_EXEMPT = {
    "MixedBatch": "a frozen dataclass of results, built by the mixers (probed)",
    "MIXERS": "a registry of the mixers, each probed under its own name",
}


# ----------------------------------------------------------------------------- kexue.experiments.mixup


def _mixed_batch():
    x, y = _xy()
    return xmixup.mixed_batch, {"xb": x, "yb": y, "generator": _gen(), "epoch": 0, "mixer": "mixup",
                                "active": None, "alpha": 0.4}


def _mixing_loss():
    x, y = _xy()
    return xmixup.mixing_loss, {"model": seeded_mlp([3, 3]), "xb": x, "yb": y, "generator": _gen(), "epoch": 0,
                                "mixer": "mixup_uniform"}


def _train_one():
    x, y = _xy(8)
    return xmixup.train_classifier, {"x": x, "y": y, "run": xmixup.Run("mixup", seed=0), "n_classes": 3,
                                     "hidden": (4,), "epochs": 1, "batch_size": 4, "lr": 1e-2}


def _train_many():
    x, y = _xy(8)
    return xmixup.train_classifiers, {"x": x, "y": y, "runs": [xmixup.Run("mixup", seed=0), xmixup.Run(seed=1)],
                                      "n_classes": 3, "hidden": (4,), "epochs": 1, "batch_size": 4, "lr": 1e-2,
                                      "x_val": x[:4], "y_val": y[:4], "eval_every": 1}


def _ece():
    _, y = _xy()
    return xmixup.expected_calibration_error, {"probs": torch.randn(6, 3, generator=_gen(1)).softmax(-1),
                                               "labels": y, "n_bins": 5}


def _evaluate():
    x, y = _xy()
    return xmixup.evaluate, {"model": seeded_mlp([3, 3]), "x": x, "y": y, "temperature": 1.5, "n_bins": 5}


_TRAIN_ARGS = {
    "x": Arg("tensor", finite=True), "y": _Y, "n_classes": Arg("int", minimum=2),
    "hidden": Arg("int_seq", name="hidden"), "epochs": Arg("int", minimum=1), "batch_size": Arg("int", minimum=1),
    "lr": Arg("real", low=0.0, open_low=True),
}
_TRAIN_SKIP = {"hidden": {"an empty sequence": "no hidden layer: a linear classifier (documented)"}}

EXPERIMENT_CASES = [
    Case("mixed_batch", _mixed_batch,
         {"xb": _X, "yb": _Y, "generator": Arg("generator"), "epoch": Arg("int", minimum=0),
          "mixer": Arg("choice"), "alpha": Arg("real", low=0.0, open_low=True)},
         skip={"yb": _LABELS_PASS_THROUGH}),
    Case("mixing_loss", _mixing_loss,
         {"model": Arg("module"), "xb": _X, "yb": _Y, "generator": Arg("generator"),
          "epoch": Arg("int", minimum=0), "mixer": Arg("choice")},
         skip={"model": {"a function": "any callable mapping inputs to logits is a model here"}}),
    Case("Run", lambda: (xmixup.Run, {"mixer": "mixup", "seed": 1, "params": {"alpha": 0.2}}),
         # params is a dict of the mixer's keyword arguments: None, a string and an int are all wrong
         {"mixer": Arg("choice"), "seed": Arg("int", minimum=0), "params": Arg("choice", name="params")}),
    # run must be a Run: None, a string and an int are all wrong
    Case("train_classifier", _train_one, {**_TRAIN_ARGS, "run": Arg("choice", name="run")}, skip=_TRAIN_SKIP),
    Case("train_classifiers", _train_many,
         {**_TRAIN_ARGS, "runs": Arg("choice", name="runs"),
          "x_val": Arg("tensor", finite=True, optional=True), "y_val": Arg("index_tensor", ndim=(1,), optional=True),
          "eval_every": Arg("int", minimum=1)},
         skip=_TRAIN_SKIP),
    Case("expected_calibration_error", _ece,
         {"probs": Arg("tensor", ndim=(2,), finite=True), "labels": _Y, "n_bins": Arg("int", minimum=1)}),
    Case("evaluate", _evaluate,
         {"model": Arg("module"), "x": Arg("tensor", finite=True), "y": _Y,
          "temperature": Arg("real", low=0.0, open_low=True), "n_bins": Arg("int", minimum=1)}),
    Case("temperature_for_confidence",
         lambda: (xmixup.temperature_for_confidence, {"logits": torch.randn(6, 2, generator=_gen(1)),
                                                      "confidence": 0.7, "iters": 30}),
         {"logits": Arg("tensor", ndim=(2,), finite=True), "confidence": Arg("real", low=0.5, open_low=True, high=1.0),
          "iters": Arg("int", minimum=1)}),
]

EXPERIMENT_EXEMPT = {
    "LOSSES": "a registry of partials of mixing_loss (probed), one per mixer",
    "TrainedRuns": "a frozen dataclass of results, built by train_classifiers (probed)",
}

CASES = MIXUP_CASES + EXPERIMENT_CASES

test_bad_input, test_bad_scalars = probe_tests(CASES)
test_mixup_inventory = inventory_test("kexue.mixup", MIXUP_CASES, MIXUP_EXEMPT)
test_experiments_mixup_inventory = inventory_test("kexue.experiments.mixup", EXPERIMENT_CASES, EXPERIMENT_EXEMPT)

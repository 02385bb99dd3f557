"""Bad input to kexue.mixup and kexue.experiments.mixup, and the review's worst cases for them.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The regression tests below the cases pin the worst findings of the robustness review for these
modules (issue 22): a masked logit, integer inputs, mismatched batches, out-of-range labels,
float16/float64 data in the trainers.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

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


# ----------------------------------------------------------------------------- the review's worst cases


def test_soft_cross_entropy_with_a_masked_logit_is_finite():
    """Review S1: 0 * log 0 for a masked class gave NaN; now it is 0, as in mixed_cross_entropy."""
    logits = torch.tensor([[0.0, float("-inf"), 1.0]] * 4, requires_grad=True)
    targets = torch.tensor([[0.5, 0.0, 0.5]] * 4)
    loss = mixup.soft_cross_entropy(logits, targets)
    expected = -(0.5 * F.log_softmax(torch.tensor([0.0, 1.0]), -1)).sum()  # the masked class removed
    torch.testing.assert_close(loss, expected)
    two_term = mixup.mixed_cross_entropy(logits, torch.zeros(4, dtype=torch.long), torch.full((4,), 2), 0.5)
    torch.testing.assert_close(loss, two_term)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[:, 1] == 0).all()


def test_a_positive_target_on_a_masked_logit_gives_plus_inf():
    """Documented: the class has probability 0, so its cross-entropy is +inf (the true value), never NaN."""
    logits = torch.tensor([[0.0, float("-inf"), 1.0]])
    assert mixup.soft_cross_entropy(logits, torch.tensor([[0.5, 0.5, 0.0]])).item() == float("inf")
    assert mixup.mixed_cross_entropy(logits, torch.tensor([1]), torch.tensor([0]), 0.5).item() == float("inf")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_losses_reject_nan_and_plus_inf_logits(bad):
    logits = torch.zeros(2, 3)
    logits[0, 1] = bad
    y = torch.tensor([0, 2])
    with pytest.raises(ValueError, match="logits"):
        mixup.mixed_cross_entropy(logits, y, y, 1.0)
    with pytest.raises(ValueError, match="logits"):
        mixup.soft_cross_entropy(logits, mixup.soft_targets(y, y, 1.0, 3))


def test_mix_inputs_rejects_integer_inputs_instead_of_truncating_lam():
    """Review S3: lam was cast to int64 (0), so the 'mix' returned the partner rows."""
    x = torch.tensor([[10, 10], [20, 20]])
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        mixup.mix_inputs(x, torch.tensor([1, 0]), torch.tensor([0.9, 0.9]))
    out = mixup.mix_inputs(x.float(), torch.tensor([1, 0]), torch.tensor([0.9, 0.9]))
    torch.testing.assert_close(out, torch.tensor([[11.0, 11.0], [19.0, 19.0]]))


def test_mix_inputs_rejects_partners_that_are_not_rows():
    x = torch.randn(3, 2)
    for index in (torch.tensor([0, 1, -1]), torch.tensor([0, 1, 3])):  # -1 used to wrap around silently
        with pytest.raises(ValueError, match=r"index must hold row numbers of x in \[0, 3\)"):
            mixup.mix_inputs(x, index, 0.5)
    with pytest.raises(ValueError, match="index"):
        mixup.mix_inputs(x, torch.tensor([True, False, True]), 0.5)


@pytest.mark.parametrize("lam", [-0.1, 1.5, torch.tensor([0.2, 1.2, 0.5]), torch.tensor(float("nan"))])
def test_lam_outside_the_unit_interval_is_rejected(lam):
    x, y = torch.randn(3, 2), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="lam must"):
        mixup.mix_inputs(x, torch.tensor([2, 0, 1]), lam)
    with pytest.raises(ValueError, match="lam must"):
        mixup.soft_targets(y, y, lam, 3)
    with pytest.raises(ValueError, match="lam must"):
        mixup.mixed_cross_entropy(torch.zeros(3, 3), y, y, lam)
    with pytest.raises(ValueError, match="lam must"):
        mixup.linearity_gap(torch.tanh, x, x, lam)


@pytest.mark.parametrize("fn", [mixup.linearity_gap, mixup.linearity_gap_reference])
def test_linearity_gaps_reject_mismatched_batches(fn):
    """Review S3: the reference gave a gap of exactly 0 for the unmatched row (an empty slice)."""
    with pytest.raises(ValueError, match="x_a and x_b must have the same shape"):
        fn(torch.nn.Linear(3, 2), torch.randn(4, 3), torch.randn(3, 3), 0.5)


def test_linearity_gap_and_its_reference_agree_and_check_the_model_output():
    g = _gen(3)
    x_a, x_b, lam = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), torch.rand(5, generator=g)
    net = seeded_mlp([3, 4, 2], seed=1)
    torch.testing.assert_close(mixup.linearity_gap(net, x_a, x_b, lam).double(),
                               mixup.linearity_gap_reference(net, x_a, x_b, lam), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="f must map a batch of 15 inputs to 15 outputs"):
        mixup.linearity_gap(lambda z: z[:1], x_a, x_b, lam)
    with pytest.raises(ValueError, match="x_a must be finite"):
        mixup.linearity_gap(net, x_a.masked_fill(x_a > 1, float("nan")), x_b, lam)


def test_labels_out_of_range_get_errors_naming_them():
    logits = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"y_b must hold class labels in \[0, 3\), got labels from 0 to 5"):
        mixup.mixed_cross_entropy(logits, torch.tensor([0, 1, 2]), torch.tensor([0, 5, 2]), 0.5)
    with pytest.raises(ValueError, match=r"y_a must hold class labels in \[0, 4\)"):
        mixup.soft_targets(torch.tensor([-1, 0]), torch.tensor([0, 0]), 0.5, 4)
    with pytest.raises(ValueError, match=r"labels must hold class labels in \[0, 3\)"):
        xmixup.expected_calibration_error(logits.softmax(-1), torch.tensor([0, 1, 10**6]))
    with pytest.raises(TypeError, match="labels must be an integer or bool tensor"):
        xmixup.expected_calibration_error(logits.softmax(-1), torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"probs must hold probabilities in \[0, 1\]"):
        xmixup.expected_calibration_error(logits + 2, torch.tensor([0, 1, 2]))


def test_mixers_check_flags_and_pass_labels_through():
    x, y = _xy()
    with pytest.raises(ValueError, match="per_sample must be True or False, got 'yes'"):
        mixup.mixup(x, y, generator=_gen(), per_sample="yes")
    b = mixup.sample_pairing(x, y - 1, generator=_gen())  # labels are the loss's business (documented)
    torch.testing.assert_close(b.y_a, y - 1)


# ----------------------------------------------------------------------------- trainers and evaluation


def test_trainers_accept_float64_and_reject_float16():
    """Review S5: float64 data failed deep inside ('mat1 and mat2 must have the same dtype')."""
    x, y = _xy(8)
    run = xmixup.Run("mixup", seed=0)
    model, history = xmixup.train_classifier(x.double(), y, run, n_classes=3, hidden=(4,), epochs=2, batch_size=4)
    assert next(model.parameters()).dtype == torch.float64 and all(math.isfinite(v) for v in history)
    trained = xmixup.train_classifiers(x.double(), y, [run], n_classes=3, hidden=(4,), epochs=2, batch_size=4)
    for a, b in zip(model.parameters(), trained.models[0].parameters(), strict=True):
        torch.testing.assert_close(a, b)  # the stacked trainer still matches the plain one, in float64
    for train in (lambda x: xmixup.train_classifier(x, y, run, n_classes=3, hidden=(4,), epochs=1, batch_size=4),
                  lambda x: xmixup.train_classifiers(x, y, [run], n_classes=3, hidden=(4,), epochs=1, batch_size=4)):
        with pytest.raises(TypeError, match="x must be float32 or float64"):
            train(x.half())


def test_trainers_reject_labels_outside_n_classes_and_non_finite_data():
    x, y = _xy(8)
    run = xmixup.Run(seed=0)
    with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 3\), got labels from 0 to 1000000"):
        xmixup.train_classifier(x, torch.cat([y[:-1], torch.tensor([10**6])]), run, n_classes=3, epochs=1)
    with pytest.raises(ValueError, match="x must be finite"):
        xmixup.train_classifiers(x.masked_fill(x > 1, float("inf")), y, [run], n_classes=3, epochs=1)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):  # review S4: lr=inf trained to NaN
        xmixup.train_classifiers(x, y, [run], n_classes=3, epochs=1, lr=float("inf"))
    with pytest.raises(ValueError, match="x_val must have the dtype and example shape of x"):
        xmixup.train_classifiers(x, y, [run], n_classes=3, epochs=1, x_val=x[:, :2], y_val=y)
    with pytest.raises(TypeError, match=r"runs\[1\] must be a Run"):
        xmixup.train_classifiers(x, y, [run, "mixup"], n_classes=3, epochs=1)


def test_run_checks_its_parameters_at_construction():
    with pytest.raises(ValueError, match=r"params \['beta'\] are not keyword arguments of mixer 'mixup'"):
        xmixup.Run("mixup", params={"beta": 0.2})
    with pytest.raises(ValueError, match="params"):
        xmixup.Run("none", params={"alpha": 0.2})
    with pytest.raises(TypeError, match="active must be None or a callable"):
        xmixup.Run("sample_pairing", active="yes")
    assert xmixup.Run("mixup", params={"alpha": 0.2, "per_sample": True}).params["alpha"] == 0.2


def test_evaluate_restores_the_model_mode_and_checks_labels_against_the_output():
    x, y = _xy()
    net = seeded_mlp([3, 8, 3], seed=0)
    net.train()
    xmixup.evaluate(net, x, y)
    assert net.training
    net.eval()
    xmixup.evaluate(net, x, y)
    assert not net.training
    with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 3\)"):
        xmixup.evaluate(net, x, y + 1)
    with pytest.raises(ValueError, match="x must be finite"):
        xmixup.evaluate(net, x.masked_fill(x > 0, float("nan")), y)


def test_temperature_for_confidence_rejects_non_finite_logits_and_one_class():
    with pytest.raises(ValueError, match="logits must be finite"):
        xmixup.temperature_for_confidence(torch.tensor([[1.0, float("nan")]]), 0.7)
    with pytest.raises(ValueError, match="logits must have at least 2 classes"):
        xmixup.temperature_for_confidence(torch.zeros(3, 1), 0.7)


def test_mixing_loss_names_the_minibatch_labels():
    x, y = _xy()
    net = seeded_mlp([3, 3])
    with pytest.raises(ValueError, match=r"yb must hold class labels in \[0, 3\)"):
        xmixup.mixing_loss(net, x, y + 1, generator=_gen(), epoch=0, mixer="mixup")
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        xmixup.mixed_batch(x, y, generator=_gen(), epoch=-1, mixer="none")

"""Bad input to kexue.flow and kexue.experiments.flow (issue 22), plus the review's worst cases.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The layers are bijections applied elementwise or channel by channel: NaN/inf entries propagate
(documented), so their tensors are not probed with NaN. Everything that reduces data to a number
(bits/dim, log-densities, baselines, objectives, ActNorm's data-dependent initialisation, the
trainer) rejects them. The regression tests at the end pin the robustness review's findings for
these modules (shapes that broadcast into a wrong log-det, integer weights, huge ActNorm inputs,
scalar events, bool levels, singular covariances).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kexue import flow as F
from kexue.experiments import flow as E
from tests._probe import Arg, Case, inventory_test, probe_tests

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _img(c: int = 4, h: int = 2, w: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(3, c, h, w, generator=_gen(seed))


def _vec(c: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(3, c, generator=_gen(seed))


def _levels(shape: tuple[int, ...] = (8, 1, 4, 4), levels: int = 17, seed: int = 0) -> torch.Tensor:
    """Integer levels stored as floats, like load_digits(scale=False)."""
    return torch.randint(0, levels, shape, generator=_gen(seed)).float()


def _small_glow(seed: int = 0) -> F.Flow:
    return F.glow((1, 4, 4), levels=1, depth=1, hidden=4, seed=seed)


IMG = Arg("tensor", ndim=(4,))
IMG_OR_VEC = Arg("tensor", ndim=(2, 4))
OPT_GEN = Arg("generator", optional=True)
PARITY = Arg("int", minimum=0)
LEVELS = Arg("int", minimum=2)
AS_LEVELS = {"an int64 tensor": "integer levels may be stored in any real dtype (documented)",
             "a bool tensor": "as above: False and True are the levels 0 and 1"}
FLOAT_LEVELS = {"a float tensor": "integer levels may be stored in any real dtype, like load_digits(scale=False) "
                                  "(documented); non-integer values are rejected"}


def _layer(build, arg: str, x, arg_kind: Arg = IMG_OR_VEC, method: str = "forward"):
    """A case for one method of a built layer: ``build()`` is called afresh for every probe."""
    def call():
        layer = build()
        return getattr(layer, method), {arg: x()}

    return call, {arg: arg_kind}


def _layer_cases(name: str, build, x, arg_kind: Arg = IMG_OR_VEC) -> list[Case]:
    out = []
    for method, arg in (("forward", "x"), ("inverse", "y")):
        call, args = _layer(build, arg, x, arg_kind, method)
        out.append(Case(f"{name}.{method}", call, args))
    return out


# ----------------------------------------------------------------------------- kexue.flow


def _actnorm():
    layer = F.ActNorm(4)
    layer.initialize(_img(seed=5))
    return layer


def _glow_level():
    g = _gen(0)
    return F.GlowLevel([F.GlowStep(4, 4, generator=g)], None, (4, 2, 2))


FLOW_CASES = [
    Case("squeeze2d", lambda: (F.squeeze2d, {"x": _img(1, 4, 4), "factor": 2}),
         {"x": IMG, "factor": Arg("int", minimum=1)}),
    Case("unsqueeze2d", lambda: (F.unsqueeze2d, {"x": _img(4, 2, 2), "factor": 2}),
         {"x": IMG, "factor": Arg("int", minimum=1)}),
    Case("squeeze2d_reference", lambda: (F.squeeze2d_reference, {"x": _img(1, 4, 4), "factor": 2}),
         {"x": IMG, "factor": Arg("int", minimum=1)}),
    Case("checkerboard_mask",
         lambda: (F.checkerboard_mask, {"height": 4, "width": 3, "parity": 1, "dtype": torch.float64}),
         {"height": Arg("int", minimum=1), "width": Arg("int", minimum=1), "parity": PARITY, "dtype": Arg("dtype")}),
    Case("channel_mask", lambda: (F.channel_mask, {"channels": 4, "parity": 1, "dtype": torch.float64}),
         {"channels": Arg("int", minimum=2), "parity": PARITY, "dtype": Arg("dtype")}),
    # elementwise maps: NaN/inf propagate (documented)
    *(Case(name, lambda name=name, first=first: (getattr(F, name), {first: _vec(seed=0), "log_s": _vec(seed=1), "t": _vec(seed=2)}),
           {first: Arg("tensor", ndim=(2,)), "log_s": Arg("tensor", ndim=(2,)), "t": Arg("tensor", ndim=(2,))})
      for name, first in (("affine_forward", "x"), ("affine_inverse", "y"))),
    # log-dets of a layer's weights: NaN/inf propagate, like the layer (documented)
    Case("conv1x1_logdet_slogdet",
         lambda: (F.conv1x1_logdet_slogdet, {"weight": torch.randn(3, 3, generator=_gen()), "pixels": 4}),
         {"weight": Arg("tensor", ndim=(2,)), "pixels": Arg("int", minimum=1)}),
    Case("conv1x1_logdet_lu", lambda: (F.conv1x1_logdet_lu, {"log_s": torch.randn(3, generator=_gen()), "pixels": 4}),
         {"log_s": Arg("tensor", ndim=(1,)), "pixels": Arg("int", minimum=1)}),
    Case("lu_init", lambda: (F.lu_init, {"channels": 3, "generator": _gen()}),
         {"channels": Arg("int", minimum=1), "generator": OPT_GEN}),
    Case("dequantize",
         lambda: (F.dequantize, {"v": _levels((3, 4)), "levels": 17, "generator": _gen(), "dtype": torch.float64}),
         {"v": Arg("tensor", finite=True), "levels": LEVELS, "generator": OPT_GEN, "dtype": Arg("dtype")},
         skip={"v": {**AS_LEVELS, "an empty batch": "empty in, empty out (documented)"}}),
    Case("bits_per_dim", lambda: (F.bits_per_dim, {"log_px": torch.randn(3, generator=_gen()), "dims": 64,
                                                   "levels": 17}),
         {"log_px": Arg("tensor", ndim=(1,), finite=True), "dims": Arg("int", minimum=1), "levels": LEVELS},
         skip={"log_px": {"an empty batch": "one number per example: no example, no number (documented)"}}),
    # layers and sequences of layers are passed where FlowSequential, GlowLevel expect them
    Case("FlowSequential", lambda: (F.FlowSequential, {"layers": [F.Permutation(4), F.ActNorm(4)]}),
         {"layers": Arg("choice", name="layers")}),
    *_layer_cases("FlowSequential", lambda: F.FlowSequential([F.Permutation(4), F.ActNorm(4, ddi=False)]), _vec,
                  Arg("tensor")),
    Case("Squeeze", lambda: (F.Squeeze, {"factor": 2}), {"factor": Arg("int", minimum=1)}),
    Case("Squeeze.forward", lambda: (F.Squeeze(), {"x": _img(1, 4, 4)}), {"x": IMG}),
    Case("Squeeze.inverse", lambda: (F.Squeeze().inverse, {"y": _img(4, 2, 2)}), {"y": IMG}),
    Case("Permutation", lambda: (F.Permutation, {"channels": 4, "kind": "shuffle", "generator": _gen()}),
         {"channels": Arg("int", minimum=1), "kind": Arg("choice"), "generator": OPT_GEN}),
    *_layer_cases("Permutation", lambda: F.Permutation(4, "shuffle", _gen()), _img),
    Case("InvConv1x1", lambda: (F.InvConv1x1, {"channels": 4, "generator": _gen()}),
         {"channels": Arg("int", minimum=1), "generator": OPT_GEN}),
    *_layer_cases("InvConv1x1", lambda: F.InvConv1x1(4, _gen()), _img),
    Case("InvConv1x1LU", lambda: (F.InvConv1x1LU, {"channels": 4, "generator": _gen()}),
         {"channels": Arg("int", minimum=1), "generator": OPT_GEN}),
    *_layer_cases("InvConv1x1LU", lambda: F.InvConv1x1LU(4, _gen()), _vec),
    Case("ActNorm", lambda: (F.ActNorm, {"channels": 4, "ddi": False}),
         {"channels": Arg("int", minimum=1), "ddi": Arg("flag")}),
    *_layer_cases("ActNorm", _actnorm, _img),
    # the data-dependent initialisation reduces a batch to statistics: NaN/inf are rejected
    Case("ActNorm.initialize", lambda: (F.ActNorm(4).initialize, {"x": _img()}),
         {"x": Arg("tensor", ndim=(2, 4), finite=True)}),
    Case("MaskedCoupling",
         lambda: (F.MaskedCoupling, {"mask": torch.tensor([1.0, 0.0, 1.0, 0.0]), "net": nn.Linear(4, 8),
                                     "coupling": "exp"}),
         {"mask": Arg("tensor"), "net": Arg("module"), "coupling": Arg("choice")},
         skip={"mask": {"an int64 tensor": "a 0/1 mask may be integer or bool (documented)",
                        "a bool tensor": "as above"}}),
    *_layer_cases("MaskedCoupling", lambda: F.MaskedCoupling(torch.tensor([1.0, 0.0, 1.0, 0.0]),
                                                             nn.Linear(4, 8), "exp"), _vec),
    Case("coupling_convnet", lambda: (F.coupling_convnet, {"in_channels": 2, "out_channels": 4, "hidden": 8}),
         {"in_channels": Arg("int", minimum=1), "out_channels": Arg("int", minimum=1), "hidden": Arg("int", minimum=1)}),
    Case("ChannelCoupling", lambda: (F.ChannelCoupling, {"channels": 4, "hidden": 8, "coupling": "sigmoid"}),
         {"channels": Arg("int", minimum=2), "hidden": Arg("int", minimum=1), "coupling": Arg("choice")}),
    *_layer_cases("ChannelCoupling", lambda: F.ChannelCoupling(4, 8, "sigmoid"), _img, IMG),
    Case("SplitPrior", lambda: (F.SplitPrior, {"channels": 4}), {"channels": Arg("int", minimum=2)}),
    *_layer_cases("SplitPrior", lambda: F.SplitPrior(4), _img, IMG),
    Case("LearnedPrior", lambda: (F.LearnedPrior, {"shape": (4, 2, 2)}), {"shape": Arg("int_seq", name="shape")},
         skip={"shape": {"an empty sequence": "scalar events, x of shape (batch,) (documented)"}}),
    *_layer_cases("LearnedPrior", lambda: F.LearnedPrior((4, 2, 2)), _img, IMG),
    Case("GlowStep",
         lambda: (F.GlowStep, {"channels": 4, "hidden": 4, "permutation": "lu", "coupling": "sigmoid",
                               "actnorm": True, "generator": _gen()}),
         {"channels": Arg("int", minimum=2), "hidden": Arg("int", minimum=1), "permutation": Arg("choice"),
          "coupling": Arg("choice"), "actnorm": Arg("flag"), "generator": OPT_GEN}),
    *_layer_cases("GlowStep", lambda: F.GlowStep(4, 4, generator=_gen()), _img, IMG),
    Case("GlowLevel",
         lambda: (F.GlowLevel, {"steps": [F.GlowStep(4, 4, generator=_gen())], "inner": None, "shape": (4, 2, 2)}),
         {"steps": Arg("choice", name="steps"), "inner": Arg("module", optional=True),
          "shape": Arg("int_seq", name="shape")}),
    *_layer_cases("GlowLevel", _glow_level, lambda: _img(1, 4, 4), IMG),
    Case("Flow", lambda: (F.Flow, {"transform": F.FlowSequential([]), "event_shape": (2,)}),
         {"transform": Arg("module"), "event_shape": Arg("int_seq", name="event_shape")},
         skip={"event_shape": {"an empty sequence": "scalar events, x of shape (batch,) (documented)"}}),
    Case("Flow.forward", lambda: (_small_glow(), {"x": _img(1, 4, 4)}), {"x": IMG}),
    Case("Flow.inverse", lambda: (_small_glow().inverse, {"z": _img(1, 4, 4)}), {"z": IMG}),
    Case("Flow.log_prob", lambda: (_small_glow().log_prob, {"x": _img(1, 4, 4)}),
         {"x": Arg("tensor", ndim=(4,), finite=True)}),
    Case("Flow.bits_per_dim", lambda: (_small_glow().bits_per_dim, {"x": torch.rand(3, 1, 4, 4, generator=_gen()),
                                                                     "levels": 17}),
         {"x": Arg("tensor", ndim=(4,), finite=True), "levels": LEVELS}),
    Case("Flow.sample", lambda: (_small_glow().sample, {"n": 2, "temperature": 0.7, "generator": _gen()}),
         {"n": Arg("int", minimum=1), "temperature": Arg("real", low=0.0), "generator": OPT_GEN}),
    Case("glow",
         lambda: (F.glow, {"event_shape": (1, 4, 4), "levels": 1, "depth": 1, "hidden": 4, "permutation": "lu",
                           "coupling": "sigmoid", "actnorm": True, "seed": 0}),
         {"event_shape": Arg("int_seq", name="event_shape"), "levels": Arg("int", minimum=1),
          "depth": Arg("int", minimum=1), "hidden": Arg("int", minimum=1), "permutation": Arg("choice"),
          "coupling": Arg("choice"), "actnorm": Arg("flag"), "seed": Arg("int", minimum=0)}),
]

FLOW_EXEMPT = {
    "COUPLINGS": "a registry of coupling functions, probed through every coupling argument",
    "PERMUTATIONS": "a registry of channel-mixing layers, probed through GlowStep's and glow's permutation",
}


# ----------------------------------------------------------------------------- kexue.experiments.flow


def _deq_flow(dequantizer: bool = False) -> E.DequantizedFlow:
    return E.DequantizedFlow(_small_glow(), 17, E.LogisticDequantizer(16, 17) if dequantizer else None)


def _fit():
    return E.fit_stacked, {
        "models": [_deq_flow()], "data": _levels(), "seeds": [0], "epochs": 1, "batch_size": 8, "lr": 1e-3,
        "schedule": "cosine", "warmup": 1, "clip": 50.0, "init_batch": 8, "trainable": None,
        "eval_data": _levels((4, 1, 4, 4), seed=1), "eval_noise": torch.rand(4, 1, 4, 4, generator=_gen(2)),
        "eval_every": 1,
    }


def _fit_continuous():
    return E.fit_stacked, {"models": [E.ContinuousNLL(E.realnvp_2d(2, 4))], "data": _vec(2), "seeds": [0],
                           "epochs": 1, "batch_size": 4, "eval_data": _vec(2, seed=1),
                           "eval_noise": torch.zeros(3, 2)}


EXPERIMENT_CASES = [
    Case("uniform_bpd", lambda: (E.uniform_bpd, {"levels": 17}), {"levels": LEVELS}),
    Case("categorical_bpd",
         lambda: (E.categorical_bpd, {"v_train": _levels((6, 4)), "v_test": _levels((3, 4), seed=1), "levels": 17,
                                      "alpha": 0.5}),
         {"v_train": Arg("index_tensor"), "v_test": Arg("index_tensor"), "levels": LEVELS,
          "alpha": Arg("real", low=0.0, open_low=True)},
         skip={"v_train": FLOAT_LEVELS, "v_test": FLOAT_LEVELS}),
    Case("gaussian_bpd",
         lambda: (E.gaussian_bpd, {"x_train": torch.rand(20, 3, generator=_gen(0)),
                                   "x_test": torch.rand(5, 3, generator=_gen(1)), "levels": 17, "ridge": 1e-6}),
         {"x_train": Arg("tensor", finite=True), "x_test": Arg("tensor", finite=True), "levels": LEVELS,
          "ridge": Arg("real", low=0.0)}),
    Case("realnvp_2d",
         lambda: (E.realnvp_2d, {"n_couplings": 2, "hidden": 4, "coupling": "tanh", "actnorm": True, "seed": 0}),
         {"n_couplings": Arg("int", minimum=1), "hidden": Arg("int", minimum=1), "coupling": Arg("choice"),
          "actnorm": Arg("flag"), "seed": Arg("int", minimum=0)}),
    Case("glow_variant",
         lambda: (E.glow_variant, {"permutation": "shuffle", "actnorm": False, "conditional_prior": False, "seed": 0,
                                   "event_shape": (1, 4, 4), "levels": 1, "depth": 1, "hidden": 4}),
         {"permutation": Arg("choice"), "actnorm": Arg("flag"), "conditional_prior": Arg("flag"),
          "seed": Arg("int", minimum=0)}),
    Case("LogisticDequantizer", lambda: (E.LogisticDequantizer, {"dims": 16, "levels": 17}),
         {"dims": Arg("int", minimum=1), "levels": LEVELS}),
    Case("LogisticDequantizer.forward",
         lambda: (E.LogisticDequantizer(16, 17), {"v": _levels((3, 1, 4, 4)), "noise": torch.rand(3, 1, 4, 4)}),
         {"v": Arg("index_tensor"), "noise": Arg("tensor", finite=True)}, skip={"v": FLOAT_LEVELS}),
    Case("DequantizedFlow", lambda: (E.DequantizedFlow, {"flow": _small_glow(), "levels": 17,
                                                         "dequantizer": E.LogisticDequantizer(16, 17)}),
         {"flow": Arg("module"), "levels": LEVELS, "dequantizer": Arg("module", optional=True)}),
    *(Case("DequantizedFlow.forward" + (".learned" if deq else ""),
           lambda deq=deq: (_deq_flow(deq), {"v": _levels((3, 1, 4, 4)), "noise": torch.rand(3, 1, 4, 4)}),
           {"v": Arg("index_tensor", ndim=(4,)), "noise": Arg("tensor", ndim=(4,), finite=True)},
           skip={"v": FLOAT_LEVELS})
      for deq in (False, True)),
    Case("ContinuousNLL", lambda: (E.ContinuousNLL, {"flow": E.realnvp_2d(2, 4)}), {"flow": Arg("module")}),
    # the noise argument is ignored (documented), so only x is probed
    Case("ContinuousNLL.forward", lambda: (E.ContinuousNLL(E.realnvp_2d(2, 4)), {"x": _vec(2), "noise": _vec(2)}),
         {"x": Arg("tensor", ndim=(2,), finite=True)}),
    Case("fit_stacked", _fit,
         {"models": Arg("choice", name="models"), "data": Arg("index_tensor", ndim=(4,)),
          "seeds": Arg("int_seq", name="seeds"), "epochs": Arg("int", minimum=1), "batch_size": Arg("int", minimum=1),
          "lr": Arg("real", low=0.0, open_low=True), "schedule": Arg("choice"), "warmup": Arg("int", minimum=0),
          "clip": Arg("real", low=0.0, open_low=True), "init_batch": Arg("int", minimum=1),
          "trainable": Arg("choice", name="trainable", optional=True),
          "eval_data": Arg("index_tensor", ndim=(4,), optional=True),
          "eval_noise": Arg("tensor", ndim=(4,), finite=True, optional=True), "eval_every": Arg("int", minimum=1)},
         skip={"data": FLOAT_LEVELS, "eval_data": FLOAT_LEVELS, "seeds": {"a 0 entry": "0 is a seed"}}),
    Case("fit_stacked.continuous", _fit_continuous,
         {"data": Arg("tensor", ndim=(2,), finite=True), "eval_data": Arg("tensor", ndim=(2,), finite=True,
                                                                          optional=True)}),
    Case("conv2d_as_matmul",
         lambda: (E.conv2d_as_matmul, {"x": _img(2, 4, 4), "weight": torch.randn(3, 2, 3, 3, generator=_gen()),
                                       "bias": torch.zeros(3)}),
         {"x": Arg("tensor", ndim=(4,), nonempty=False), "weight": Arg("tensor", ndim=(4,), nonempty=False),
          "bias": Arg("tensor", ndim=(1,), optional=True)}),
    Case("multiply_adds", lambda: (E.multiply_adds, {"model": F.ChannelCoupling(4, 8), "x": _img()}),
         {"model": Arg("module"), "x": Arg("tensor")},
         skip={"x": {"an int64 tensor": "x is whatever the model takes; the model's own checks decide",
                     "a bool tensor": "as above", "a complex tensor": "as above", "an empty batch": "as above"}}),
]

EXPERIMENT_EXEMPT = {
    "SCHEDULES": "a registry of learning-rate schedules, probed through fit_stacked's schedule",
}

CASES = FLOW_CASES + EXPERIMENT_CASES

test_bad_input, test_bad_scalars = probe_tests(CASES)
test_flow_inventory = inventory_test("kexue.flow", FLOW_CASES, FLOW_EXEMPT)
test_experiments_flow_inventory = inventory_test("kexue.experiments.flow", EXPERIMENT_CASES, EXPERIMENT_EXEMPT)


# ----------------------------------------------------------------------------- the review's worst cases


def test_affine_maps_reject_shapes_that_would_broadcast_into_a_wrong_log_det():
    """Review S3: log_s of shape (1, 3) for a batch of 2 gave a log-det of shape (1,)."""
    x, t = _vec(3), _vec(3, seed=1)
    for fn in (F.affine_forward, F.affine_inverse):
        with pytest.raises(ValueError, match=r"log_s and t must have the same shape"):
            fn(x[:2], torch.randn(1, 3), t[:2])
        with pytest.raises(ValueError, match=r"log_s and t must have the same shape"):
            fn(x, torch.zeros(3, 3), torch.zeros(3))  # a shift for every feature, not every example
    y, log_det = F.affine_forward(x, torch.zeros(3, 3), torch.zeros(3, 3))
    assert torch.equal(y, x) and log_det.shape == (3,)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_conv1x1_slogdet_rejects_integer_weights_instead_of_truncating(dtype):
    """Review S3: 2 * eye(3) as int64 gave 8 instead of 4 * log(8) = 8.318 (the log-det was cast back to int)."""
    with pytest.raises(TypeError, match="weight must be a floating-point tensor"):
        F.conv1x1_logdet_slogdet((torch.eye(3) * 2).to(dtype), 4)
    assert F.conv1x1_logdet_slogdet(torch.eye(3) * 2, 4).item() == pytest.approx(4 * math.log(8))


def test_conv1x1_slogdet_of_a_half_weight_is_float32():
    """A float16 log-det overflows beyond 65504; the design keeps log-dets in float32/float64."""
    weight = torch.eye(4, dtype=torch.float16) * 16
    out = F.conv1x1_logdet_slogdet(weight, 10_000)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(10_000 * 4 * math.log(16), rel=1e-6)


@pytest.mark.parametrize("scale", [1e20, 1e30])
@pytest.mark.parametrize("shape", [(64, 3, 2, 2), (64, 3)])
def test_actnorm_initialisation_on_huge_but_finite_data(scale, shape):
    """Review S4: data with spread 1e20 gave log-det -inf (the squared deviations overflowed float32)."""
    x = torch.randn(shape, generator=_gen(0)) * scale + 0.5 * scale
    layer = F.ActNorm(3)
    y, log_det = layer(x)
    assert torch.isfinite(y).all() and torch.isfinite(log_det).all()
    dims = [0, *range(2, x.dim())]
    torch.testing.assert_close(y.mean(dims), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(dims, unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    ref = -torch.log(x.double().std(dims, unbiased=False)) * (x[0, 0].numel())
    torch.testing.assert_close(log_det[0].double(), ref.sum(), rtol=1e-5, atol=0)
    x_back, _ = layer.inverse(y)
    torch.testing.assert_close(x_back / scale, x / scale, atol=1e-5, rtol=0)


def test_actnorm_initialisation_of_ordinary_data_is_unchanged():
    """The float64 fallback only runs on overflow: ordinary data get the float32 statistics, bit for bit."""
    x = 3.0 + 2.0 * torch.randn(128, 2, 4, 4, generator=_gen(0))
    layer = F.ActNorm(2)
    layer.initialize(x)
    mean = x.mean(dim=[0, 2, 3])
    std = (x - mean.view(1, -1, 1, 1)).pow(2).mean(dim=[0, 2, 3]).sqrt()
    assert torch.equal(layer.bias, -mean) and torch.equal(layer.log_s, -torch.log(std + 1e-6))


def test_actnorm_initialisation_rejects_non_finite_data_and_stays_uninitialised():
    layer = F.ActNorm(2)
    x = _vec(2)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x must be finite"):
        layer(x)
    assert not bool(layer.initialized)
    layer(_vec(2))
    assert bool(layer.initialized) and torch.isfinite(layer.log_s).all()


def test_learned_prior_and_flow_of_scalar_events():
    """Review S5: LearnedPrior(()) failed inside torch.zeros; scalar examples are x of shape (batch,)."""
    prior = F.LearnedPrior(())
    with torch.no_grad():
        prior.mu.fill_(1.0)
        prior.log_sigma.fill_(math.log(2.0))
    x = torch.tensor([1.0, 3.0, -1.0])
    z, log_det = prior(x)
    torch.testing.assert_close(z, (x - 1.0) / 2.0)
    torch.testing.assert_close(log_det, torch.full((3,), -math.log(2.0)))
    torch.testing.assert_close(prior.inverse(z)[0], x)
    model = F.Flow(prior, ())
    assert model.dims == 1
    normal = torch.distributions.Normal(1.0, 2.0)
    torch.testing.assert_close(model.log_prob(x), normal.log_prob(x))


def test_dequantize_accepts_bool_levels():
    """Review S5: a bool tensor with levels=2 raised NotImplementedError from round()."""
    v = torch.tensor([[True, False], [False, True]])
    out = F.dequantize(v, 2, generator=_gen(3))
    u = torch.rand(v.shape, generator=_gen(3))
    torch.testing.assert_close(out, (v.float() + u) / 2)
    with pytest.raises(ValueError, match=r"v must hold integers in 0\.\.1"):
        F.dequantize(torch.tensor([0.5, 1.0]), 2)


def test_gaussian_baseline_of_constant_data_without_ridge_names_ridge():
    """Review S5: constant data with ridge 0 failed with a torch.distributions constraint error."""
    constant, x_test = torch.full((10, 3), 0.5), torch.rand(5, 3, generator=_gen())
    with pytest.raises(ValueError, match="singular.*use ridge > 0"):
        E.gaussian_bpd(constant, x_test, 17, 0.0)
    with pytest.raises(ValueError, match="singular"):
        E.gaussian_bpd(torch.rand(1, 3), x_test, 17, 0.0)  # one example: a zero covariance
    assert math.isfinite(E.gaussian_bpd(constant, x_test, 17, 1e-6))


def test_flow_bits_per_dim_of_huge_input():
    """Review S4: a fresh glow's bits_per_dim(x * 1e30) was -inf/NaN (its ActNorm initialisation overflowed)."""
    x = torch.rand(2, 1, 4, 4, generator=_gen()) * 1e30
    assert torch.isfinite(_small_glow().bits_per_dim(x, 17)).all()  # ActNorm now standardises the 1e30 batch
    with pytest.raises(ValueError, match="log-density of x is not finite"):  # without ActNorm's init, z*z overflows
        _small_glow().eval().bits_per_dim(x, 17)
    assert torch.isfinite(_small_glow().double().eval().bits_per_dim(x.double(), 17)).all()


def test_constructors_name_the_review_examples():
    """Review S3/S6: ActNorm(3, 'yes') was accepted; ChannelCoupling(4, '3') failed inside nn.Conv2d."""
    with pytest.raises(ValueError, match="ddi must be True or False"):
        F.ActNorm(3, "yes")
    with pytest.raises(ValueError, match="hidden must be an integer >= 1"):
        F.ChannelCoupling(4, "3", "sigmoid")
    with pytest.raises(ValueError, match="hidden must be an integer >= 1"):
        F.ChannelCoupling(4, 0, "sigmoid")
    with pytest.raises(ValueError, match="parity must be 0 or 1"):
        F.checkerboard_mask(2, 2, True)
    with pytest.raises(ValueError, match="parity must be 0 or 1"):
        F.channel_mask(4, 2)
    with pytest.raises(ValueError, match=r"event_shape\[0\] must be an integer"):
        F.Flow(F.FlowSequential([]), (1.5,))


def test_inverses_name_their_own_argument():
    """Review S6: every inverse said 'x' about its argument y."""
    for layer in (F.ActNorm(4), F.InvConv1x1(4), F.InvConv1x1LU(4), F.ChannelCoupling(4, 4), F.SplitPrior(4),
                  F.Squeeze(), F.Permutation(4), F.GlowStep(4, 4)):
        with pytest.raises(TypeError, match="^y must be"):
            layer.inverse(torch.ones(3, 4, 2, 2, dtype=torch.long))


# ----------------------------------------------------------------------------- the NaN/inf policy


def test_layers_propagate_nan_within_an_example():
    """Bijections propagate NaN/inf like torch (documented); other examples of the batch are untouched."""
    model = _small_glow().eval()
    x = torch.rand(3, 1, 4, 4, generator=_gen())
    x[0, 0, 0, 0] = float("nan")
    z, log_det = model(x)
    assert torch.isnan(z[0]).any() and torch.isfinite(z[1:]).all() and torch.isfinite(log_det[1:]).all()
    y, _ = F.affine_forward(x.flatten(1), torch.zeros(3, 16), torch.zeros(3, 16))
    assert torch.isnan(y[0, 0]) and torch.isfinite(y[0, 1:]).all()


def test_reducers_reject_nan_and_inf():
    model = _small_glow()
    x = torch.rand(3, 1, 4, 4, generator=_gen())
    x[1, 0, 2, 2] = float("inf")
    noise = torch.rand(3, 1, 4, 4, generator=_gen(1))
    for call in (lambda: model.log_prob(x), lambda: model.bits_per_dim(x, 17),
                 lambda: F.bits_per_dim(torch.tensor([0.0, float("nan")]), 4, 17),
                 lambda: E.gaussian_bpd(x, x.nan_to_num(posinf=0.5), 17),
                 lambda: E.ContinuousNLL(E.realnvp_2d(2, 4))(torch.tensor([[0.0, float("nan")]]), None)):
        with pytest.raises(ValueError, match="must be finite"):
            call()
    bad_noise = noise.clone()
    bad_noise[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="noise must be finite"):
        _deq_flow()(_levels((3, 1, 4, 4)), bad_noise)
    with pytest.raises(ValueError, match=r"noise must hold uniform noise in \[0, 1\]"):
        _deq_flow(True)(_levels((3, 1, 4, 4)), noise + 1.0)


# ----------------------------------------------------------------------------- objectives and the trainer


def test_objectives_reject_levels_out_of_range():
    """Levels of 17 or -1 were silently scored by the uniform objective and failed inside gather with a learned one."""
    noise = torch.rand(3, 1, 4, 4, generator=_gen(1))
    for learned in (False, True):
        for value in (17.0, -1.0, 0.5):
            v = _levels((3, 1, 4, 4))
            v[1, 0, 1, 1] = value
            with pytest.raises(ValueError, match=r"v must hold integers in 0\.\.16"):
                _deq_flow(learned)(v, noise)
    v = _levels((3, 1, 4, 4))
    torch.testing.assert_close(_deq_flow()(v.long(), noise), _deq_flow()(v, noise))  # any real dtype
    with pytest.raises(ValueError, match=r"v must have 16 entries per example"):
        E.LogisticDequantizer(16, 17)(_levels((3, 1, 2, 2)), torch.rand(3, 1, 2, 2))
    with pytest.raises(ValueError, match="dequantizer must have dims=16 and levels=17"):
        E.DequantizedFlow(_small_glow(), 17, E.LogisticDequantizer(64, 17))


def test_fit_stacked_rejects_bad_data_once_before_training():
    models = [_deq_flow()]
    data = _levels()
    bad = data.clone()
    bad[3, 0, 0, 0] = 20
    with pytest.raises(ValueError, match=r"data must hold integers in 0\.\.16"):
        E.fit_stacked(models, bad, seeds=[0], epochs=1, batch_size=8)
    with pytest.raises(ValueError, match=r"eval_data must hold integers"):
        E.fit_stacked(models, data, seeds=[0], epochs=1, batch_size=8, eval_data=bad,
                      eval_noise=torch.rand(bad.shape))
    with pytest.raises(ValueError, match=r"data must have shape \(n, \*\(1, 4, 4\)\)"):
        E.fit_stacked(models, torch.zeros(8, 1, 2, 8), seeds=[0], epochs=1)
    with pytest.raises(ValueError, match=r"seeds\[0\] must be an integer >= 0"):
        E.fit_stacked(models, data, seeds=[-1], epochs=1)
    with pytest.raises(ValueError, match="same parameter names and shapes"):
        E.fit_stacked([E.ContinuousNLL(E.realnvp_2d(2, 4)), E.ContinuousNLL(E.realnvp_2d(2, 8))], _vec(2),
                      seeds=[0, 1], epochs=1)
    points = _vec(2)
    points[0, 0] = float("nan")
    with pytest.raises(ValueError, match="data must be finite"):
        E.fit_stacked([E.ContinuousNLL(E.realnvp_2d(2, 4))], points, seeds=[0], epochs=1)


@pytest.mark.parametrize("train", [True, False])
def test_fit_stacked_restores_every_module_mode(train):
    """The ActNorm initialisation pass left the models in eval mode."""
    models = [E.DequantizedFlow(F.glow((1, 4, 4), levels=1, depth=1, hidden=4, seed=s), 17) for s in (0, 1)]
    for m in models:
        m.train(train)
    models[0].flow.transform.steps.layers[0].coupling.train(not train)  # a mixed state is restored too
    before = [[m.training for m in model.modules()] for model in models]
    E.fit_stacked(models, _levels(), seeds=[0, 1], epochs=1, batch_size=8, warmup=1)
    assert [[m.training for m in model.modules()] for model in models] == before


def test_multiply_adds_changes_nothing_in_the_model():
    """Counting ran a training-mode forward pass, which initialised an ActNorm from the counting input."""
    step = F.GlowStep(4, 8, generator=_gen())
    state = {k: v.clone() for k, v in step.state_dict().items()}
    macs = E.multiply_adds(step, _img())
    assert macs > 0 and step.training
    assert all(torch.equal(v, step.state_dict()[k]) for k, v in state.items())
    assert not bool(step.actnorm.initialized)


def test_float16_layers_invert():
    """float16 is computed (the LU inverse solves in float32: the CPU solver has no half precision)."""
    x = _img()
    for layer in (F.InvConv1x1LU(4, _gen()), F.GlowStep(4, 8, generator=_gen())):
        layer = layer.eval()
        ref, _ = layer(x)
        layer = layer.half()
        y, _ = layer(x.half())
        torch.testing.assert_close(y.float(), ref, atol=5e-3, rtol=5e-3)
        x_back, _ = layer.inverse(y)
        assert x_back.dtype == torch.float16
        torch.testing.assert_close(x_back.float(), x, atol=2e-2, rtol=1e-2)

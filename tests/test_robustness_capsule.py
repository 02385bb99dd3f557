"""Bad input to kexue.capsule and kexue.experiments.capsule (issue 22), plus the review's worst cases.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The regression tests below the cases pin the robustness review's findings for these modules:
squash of huge vectors, routing with zero iterations or a bad constant named wrongly, errors that
named the capsule layer's arguments instead of the classifier's, odd image sizes, NaN scores in
the top-2 metric, and helpers that left a model in another mode.
"""

from __future__ import annotations

import pytest
import torch

from kexue import capsule as caps
from kexue.experiments import capsule as X
from tests._probe import Arg, Case, inventory_test, probe_tests

SMALL = {"channels": (4, 4, 8)}  # tiny trunks keep the probes fast


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _u_hat() -> torch.Tensor:
    return torch.randn(2, 5, 3, 4, generator=_gen())


def _u() -> torch.Tensor:
    return torch.randn(2, 5, 4, generator=_gen(1))


def _images(n: int = 6, h: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, h, 8, generator=_gen(2))


def _labels(n: int = 6) -> torch.Tensor:
    return torch.arange(n) % 3


def _layer(**kw) -> caps.CapsuleLayer:
    torch.manual_seed(0)
    return caps.CapsuleLayer(4, 3, 6, **kw)


def _stack(kind: str = "capsule", seeds: tuple[int, ...] = (0, 1)) -> X.SeedStack:
    return X.SeedStack(lambda s: X.build_model(kind, seed=s, num_classes=3, **SMALL), seeds)


def _pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {"vertical": X.make_pairs(_images(), _labels(), seed=0)}


def _scores() -> torch.Tensor:
    return torch.rand(6, 3, generator=_gen(3))


def _pair_labels() -> torch.Tensor:
    return torch.tensor([[0, 1], [1, 2], [2, 0], [0, 2], [1, 0], [2, 1]])


U_HAT = Arg("tensor", ndim=(4,), nonempty=False)  # an empty batch routes to an empty batch
ITERATIONS = Arg("int", minimum=1)
POSITIVE = Arg("real", low=0.0, open_low=True)
X_IMAGES = Arg("tensor", ndim=(4,), nonempty=False)  # conv layers map an empty batch to an empty batch
ANY_RANK = {"one dimension too many": "any rank >= 1 is valid: dim picks the capsule axis (documented)"}
SEED_ZERO = {"a 0 entry": "0 is a seed"}


def _routing_case(name: str) -> Case:
    fn = getattr(caps, name)
    return Case(name, lambda: (fn, {"u_hat": _u_hat(), "iterations": 3, "squash_c": 0.5}),
                {"u_hat": U_HAT, "iterations": ITERATIONS, "squash_c": POSITIVE})


def _route_case(name: str) -> Case:
    fn = getattr(caps, name)
    return Case(name, lambda: (fn, {"u_hat": _u_hat(), "iterations": 3, "method": "su5112", "squash_c": 0.5}),
                {"u_hat": U_HAT, "iterations": ITERATIONS, "method": Arg("choice"),
                 "squash_c": Arg("real", low=0.0, open_low=True, optional=True)})


# ----------------------------------------------------------------------------- kexue.capsule

CAPSULE_CASES = [
    # squash is elementwise along its capsule axis: NaN/inf propagate (documented)
    Case("squash", lambda: (caps.squash, {"s": torch.randn(4, generator=_gen()), "dim": -1, "c": 0.5}),
         {"s": Arg("tensor", ndim=(1,), nonempty=False), "dim": Arg("int", minimum=-1), "c": POSITIVE},
         skip={"s": ANY_RANK}),
    Case("predict_shared", lambda: (caps.predict_shared, {"u": _u(), "weight": torch.randn(3, 6, 4, generator=_gen(4))}),
         {"u": Arg("tensor", ndim=(3,), nonempty=False), "weight": Arg("tensor", ndim=(3,), nonempty=False)}),
    Case("predict_dense", lambda: (caps.predict_dense, {"u": _u(), "weight": torch.randn(5, 3, 6, 4, generator=_gen(4))}),
         {"u": Arg("tensor", ndim=(3,), nonempty=False), "weight": Arg("tensor", ndim=(4,))}),
    _route_case("route"),
    _route_case("route_reference"),
    _routing_case("routing_hinton"),
    _routing_case("routing_su4819"),
    _routing_case("routing_su5112"),
    Case("coupling_entropy", lambda: (caps.coupling_entropy, {"couplings": torch.full((2, 5, 4), 0.25)}),
         {"couplings": Arg("tensor", ndim=(3,), finite=True, nonempty=False)}),
    Case("margin_loss", lambda: (caps.margin_loss, {"lengths": _scores(), "targets": _labels(), "m_pos": 0.9,
                                                    "m_neg": 0.1, "lam": 0.5}),
         {"lengths": Arg("tensor", ndim=(2,), finite=True), "targets": Arg("index_tensor", ndim=(1,)),
          "m_pos": Arg("real", low=0.0, high=1.0), "m_neg": Arg("real", low=0.0, high=1.0), "lam": Arg("real", low=0.0)}),
    Case("CapsuleLayer", lambda: (caps.CapsuleLayer, {"dim_in": 4, "num_caps": 3, "dim_caps": 6, "iterations": 2,
                                                      "routing": "hinton", "num_inputs": 5, "squash_c": 1.0}),
         {"dim_in": Arg("int", minimum=1), "num_caps": Arg("int", minimum=1), "dim_caps": Arg("int", minimum=1),
          "iterations": ITERATIONS, "routing": Arg("choice"), "num_inputs": Arg("int", minimum=1, optional=True),
          "squash_c": Arg("real", low=0.0, open_low=True, optional=True)}),
    Case("CapsuleLayer.forward", lambda: (_layer(), {"u": _u()}), {"u": Arg("tensor", ndim=(3,), nonempty=False)}),
    Case("CapsuleLayer.forward[dense]", lambda: (_layer(num_inputs=5), {"u": _u()}),
         {"u": Arg("tensor", ndim=(3,), nonempty=False)}),
]

CAPSULE_EXEMPT = {
    "DEFAULT_SQUASH_C": "a constant table of squash constants by routing name",
    "ROUTINGS": "a registry of the routing functions, each probed by name (routing_hinton, ...)",
    "SQUASH_PROFILES": "a table of elementwise length maps, plotted by the page (torch ops on any tensor)",
}


# ----------------------------------------------------------------------------- kexue.experiments.capsule

_CHANNELS = Arg("int_seq", name="channels")


def _model_forward(kind: str, method: str) -> Case:
    def call():
        model = X.build_model(kind, seed=0, num_classes=3, **SMALL)
        return getattr(model, method), {"x": _images(2)}

    cls = "CNNClassifier" if kind == "cnn" else "CapsuleClassifier"
    return Case(f"{cls}.{method}", call, {"x": X_IMAGES})


def _train():
    return X.train_members, {"stack": _stack(), "images": _images(), "labels": _labels(), "epochs": 1, "batch_size": 4,
                             "lr": 1e-2, "loss": "margin", "after_epoch": None}


def _evaluate():
    return X.evaluate_members, {"stack": _stack(), "pairs": _pairs(), "single": (_images(), _labels()),
                                "threshold": 0.5}


EXPERIMENT_CASES = [
    Case("make_pairs", lambda: (X.make_pairs, {"images": _images(), "labels": _labels(), "mode": "overlay", "seed": 1}),
         {"images": Arg("tensor", ndim=(4,)), "labels": Arg("index_tensor", ndim=(1,)), "mode": Arg("choice"),
          "seed": Arg("int", minimum=0)},
         skip={"labels": {"a negative id": "labels are only compared with each other: any integer is a class",
                          "an id far out of range": "as above"}}),
    Case("pair_accuracy", lambda: (X.pair_accuracy, {"scores": _scores(), "pair_labels": _pair_labels(),
                                                     "threshold": 0.5}),
         {"scores": Arg("tensor", ndim=(2,), finite=True), "pair_labels": Arg("index_tensor", ndim=(2,)),
          "threshold": Arg("real", optional=True)}),
    Case("ConvTrunk", lambda: (X.ConvTrunk, {"channels": (4, 4, 8)}), {"channels": _CHANNELS}),
    Case("ConvTrunk.forward", lambda: (X.ConvTrunk((4, 4, 8)), {"x": _images(2)}), {"x": X_IMAGES}),
    Case("CNNClassifier", lambda: (X.CNNClassifier, {"num_classes": 3, "hidden": 8, "channels": (4, 4, 8)}),
         {"num_classes": Arg("int", minimum=1), "hidden": Arg("int", minimum=1), "channels": _CHANNELS}),
    _model_forward("cnn", "forward"),
    Case("CapsuleClassifier", lambda: (X.CapsuleClassifier, {"num_classes": 3, "dim_caps": 4, "iterations": 2,
                                                             "routing": "hinton", "channels": (4, 4, 8),
                                                             "squash_c": 0.5}),
         {"num_classes": Arg("int", minimum=1), "dim_caps": Arg("int", minimum=1), "iterations": ITERATIONS,
          "routing": Arg("choice"), "channels": _CHANNELS,
          "squash_c": Arg("real", low=0.0, open_low=True, optional=True)}),
    _model_forward("capsule", "forward"),
    _model_forward("capsule", "capsules"),
    _model_forward("capsule", "input_capsules"),
    Case("build_model", lambda: (X.build_model, {"kind": "capsule", "seed": 2}),
         {"kind": Arg("choice"), "seed": Arg("int", minimum=0)}),
    Case("SeedStack", lambda: (X.SeedStack, {"build": lambda s: X.build_model("cnn", seed=s, **SMALL), "seeds": (1, 2)}),
         {"build": Arg("module", name="build"), "seeds": Arg("int_seq")}, skip={"seeds": SEED_ZERO}),
    Case("SeedStack.forward", lambda: (_stack(), {"x": torch.rand(3, 2, 1, 8, 8, generator=_gen())}),
         {"x": Arg("tensor", ndim=(5,), nonempty=False)}),
    Case("SeedStack.same_input", lambda: (_stack().same_input, {"x": _images(3)}), {"x": X_IMAGES}),
    Case("SeedStack.member", lambda: (_stack().member, {"k": 1}), {"k": Arg("int", minimum=0)}),
    Case("SeedStack.train", lambda: (_stack().train, {"mode": False}), {"mode": Arg("flag")}),
    Case("member_orders", lambda: (X.member_orders, {"x": _images(), "y": _labels(), "seeds": (0, 1)}),
         {"x": Arg("tensor"), "y": Arg("index_tensor", ndim=(1,)), "seeds": Arg("int_seq")},
         skip={"x": {"an int64 tensor": "rows of any dtype are only permuted", "a bool tensor": "as above",
                     "a complex tensor": "as above"},
               "y": {"a float tensor": "targets of any dtype are only permuted",
                     "a negative id": "as above", "an id far out of range": "as above"},
               "seeds": SEED_ZERO}),
    Case("train_members", _train,
         {"stack": Arg("module", name="stack"), "images": Arg("tensor", ndim=(4,), finite=True),
          "labels": Arg("index_tensor", ndim=(1,)), "epochs": Arg("int", minimum=1),
          "batch_size": Arg("int", minimum=1), "lr": POSITIVE, "loss": Arg("choice"),
          # a callback: a string and an int are not callable
          "after_epoch": Arg("choice", name="after_epoch", optional=True)}),
    Case("evaluate_members", _evaluate,
         # pairs is a mapping of test sets, single an (images, labels) pair: a string and an int are wrong
         {"stack": Arg("module", name="stack"), "pairs": Arg("choice", name="pairs"),
          "single": Arg("choice", name="single", optional=True), "threshold": Arg("real")}),
]

EXPERIMENT_EXEMPT = {
    "LOSSES": "a registry of margin-loss callbacks for fit, probed through train_members' loss",
    "MODELS": "a registry of the classifier classes, each probed (CNNClassifier, CapsuleClassifier)",
}

CASES = CAPSULE_CASES + EXPERIMENT_CASES

test_bad_input, test_bad_scalars = probe_tests(CASES)
test_capsule_inventory = inventory_test("kexue.capsule", CAPSULE_CASES, CAPSULE_EXEMPT)
test_experiments_capsule_inventory = inventory_test("kexue.experiments.capsule", EXPERIMENT_CASES, EXPERIMENT_EXEMPT)


# ----------------------------------------------------------------------------- the review's worst cases


def _old_squash(s: torch.Tensor, c: float) -> torch.Tensor:
    norm = torch.linalg.vector_norm(s, dim=-1, keepdim=True)
    return s * (norm / (c + norm * norm))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e20, 1e30, 5e37])
def test_squash_of_huge_vectors_is_a_unit_vector_not_nan(dtype, scale):
    # review S4: squash(torch.full((1, 4), 1e20)) was NaN (the norm overflows, then inf / inf)
    s = torch.tensor([[3.0, -4.0], [1.0, 1.0]], dtype=dtype) * scale
    out = caps.squash(s, c=0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, dtype=dtype))
    torch.testing.assert_close(out, torch.tensor([[0.6, -0.8], [0.5**0.5, 0.5**0.5]], dtype=dtype))  # directions kept
    huge = s.clone().requires_grad_()
    caps.squash(huge).sum().backward()
    assert torch.isfinite(huge.grad).all()
    assert torch.equal(caps.squash(torch.full((1, 4), 1e20)), torch.full((1, 4), 0.5))  # the review's reproducer


def test_squash_between_the_overflow_and_a_huge_constant():
    # |s|^2 = 2e38 is finite but c + |s|^2 is not: the length is still |s|^2 / (c + |s|^2)
    out = caps.squash(torch.tensor([1e19, 1e19]), c=3e38)
    torch.testing.assert_close(out.norm(), torch.tensor(0.4))
    with pytest.raises(ValueError, match="c must be a finite number > 0 and <= 3.40282e"):
        caps.squash(torch.ones(3), c=1e39)  # a constant float32 cannot hold


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_squash_of_ordinary_vectors_is_unchanged_bit_for_bit(scale):
    # the overflow guard must not move the page's numbers: same values and gradients as the plain formula
    s = torch.randn(16, 10, 8, generator=_gen()) * scale
    s[0, 0] = 0.0
    for c in (0.5, 1.0, 0.3):
        a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
        new, old = caps.squash(a, c=c), _old_squash(b, c)
        assert torch.equal(new, old)
        w = torch.randn(new.shape, generator=_gen(1))
        (new * w).sum().backward()
        (old * w).sum().backward()
        assert torch.equal(a.grad, b.grad)


def test_squash_of_float16_is_computed_in_float32():
    # with float16 arithmetic |s|^2 overflows at |s| = 256
    s = torch.tensor([[300.0, 400.0], [1e-3, 0.0], [0.3, 0.4]])
    half = caps.squash(s.half())
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half, caps.squash(s).half())
    assert caps.squash(s.bfloat16()).dtype == torch.bfloat16


def test_squash_propagates_nan_and_inf_per_vector():
    s = torch.tensor([[float("nan"), 1.0], [float("inf"), 1.0], [3.0, 4.0]])
    out = caps.squash(s)
    assert out[:2].isnan().all() and torch.isfinite(out[2]).all()


@pytest.mark.parametrize("name", ["routing_hinton", "routing_su4819", "routing_su5112"])
def test_routings_check_their_arguments_by_name(name):
    # review S6: routing_hinton(u_hat, 0, 0.5) -> UnboundLocalError; routing_hinton(u_hat, 3, -1.0) said "c must be"
    fn = getattr(caps, name)
    with pytest.raises(ValueError, match="iterations must be an integer >= 1, got 0"):
        fn(_u_hat(), 0, 0.5)
    with pytest.raises(ValueError, match="squash_c must be a finite number > 0"):
        fn(_u_hat(), 3, -1.0)
    with pytest.raises(ValueError, match="u_hat must have 4 dimensions"):
        fn(_u_hat()[0], 3, 0.5)
    with pytest.raises(TypeError, match="u_hat must be a torch.Tensor"):
        fn(_u_hat().tolist(), 3, 0.5)
    method = name.removeprefix("routing_")
    assert caps.ROUTINGS[method] is fn
    for a, b in zip(fn(_u_hat(), 3, 0.5), caps.route(_u_hat(), 3, method, 0.5), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", sorted(caps.ROUTINGS))
def test_routing_huge_predictions_is_finite_and_matches_the_reference(method):
    # review S4: CapsuleLayer(...)(u * 1e30) and CapsuleClassifier(...)(x * 1e30) gave NaN
    u_hat = _u_hat() * 1e20
    v, c = caps.route(u_hat, 3, method)
    assert torch.isfinite(v).all() and torch.isfinite(c).all() and (v.norm(dim=-1) <= 1 + 1e-6).all()
    v_ref, c_ref = caps.route_reference(u_hat, 3, method)
    torch.testing.assert_close(v, v_ref)
    torch.testing.assert_close(c, c_ref)
    torch.manual_seed(0)
    for layer in (caps.CapsuleLayer(4, 3, 6, routing=method), caps.CapsuleLayer(4, 3, 6, routing=method, num_inputs=5)):
        assert all(torch.isfinite(t).all() for t in layer(_u() * 1e30))
    model = X.build_model("capsule", seed=0, routing=method, **SMALL)
    assert torch.isfinite(model(_images(2) * 1e30)).all()


@pytest.mark.parametrize("method", sorted(caps.ROUTINGS))
def test_routing_of_float16_runs_in_float32_and_empty_inputs_route_to_empty_outputs(method):
    u_hat = _u_hat() * 100  # agreements of ~1e5 would overflow float16
    v, c = caps.route(u_hat.half(), 3, method)
    assert v.dtype == c.dtype == torch.float16
    v32, c32 = caps.route(u_hat, 3, method)
    torch.testing.assert_close(v, v32.half())
    torch.testing.assert_close(c, c32.half())
    for shape in ((0, 5, 3, 4), (2, 0, 3, 4), (2, 5, 0, 4)):
        v, c = caps.route(torch.zeros(shape), 2, method)
        v_ref, c_ref = caps.route_reference(torch.zeros(shape), 2, method)
        assert v.shape == v_ref.shape == (shape[0], shape[2], shape[3]) and c.shape == c_ref.shape == shape[:3]
        assert torch.equal(v, v_ref) and not v.any()


def test_capsule_classifier_names_its_own_arguments():
    # review S6: CapsuleClassifier(num_classes=0) said "num_caps must be"
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1, got 0"):
        X.CapsuleClassifier(num_classes=0)
    with pytest.raises(ValueError, match="dim_caps must be"):
        X.CapsuleClassifier(dim_caps=0)
    with pytest.raises(ValueError, match="routing must be one of"):
        X.CapsuleClassifier(routing="em")
    with pytest.raises(ValueError, match="squash_c must be"):
        X.CapsuleClassifier(squash_c=0.0)


def test_cnn_classifier_rejects_sizes_it_used_to_accept():
    # review S3: channels=(0, 4, 8), hidden=0 and num_classes=0 built a model silently
    for kwargs, word in (({"channels": (0, 4, 8)}, "channels"), ({"hidden": 0}, "hidden"),
                         ({"num_classes": 0}, "num_classes"), ({"channels": None}, "channels"),
                         ({"channels": (4, 8)}, "channels"), ({"channels": (-1, 4, 8)}, "channels")):
        with pytest.raises((TypeError, ValueError), match=word):
            X.CNNClassifier(**kwargs)


@pytest.mark.parametrize("kind", ["cnn", "capsule"])
@pytest.mark.parametrize("size", [(7, 8), (8, 7), (0, 8), (1, 1)])
def test_trunks_reject_odd_image_sizes(kind, size):
    # review S3: the 2x2 pooling silently dropped an odd last row or column
    model = X.build_model(kind, seed=0, **SMALL)
    x = torch.rand(2, 1, *size)
    with pytest.raises(ValueError, match=rf"x must have an even, positive height and width .*got {size[0]}x{size[1]}"):
        model(x)
    with pytest.raises(ValueError, match="even, positive height and width"):
        model.trunk(x)
    with pytest.raises(ValueError, match="even, positive height and width"):
        _stack(kind).same_input(x)  # the seed stack's vmapped members check too
    with pytest.raises(ValueError, match="one-channel images"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(TypeError, match="x must have the model's dtype torch.float32, got torch.float64"):
        model(torch.rand(2, 1, 8, 8, dtype=torch.float64))


def test_capsule_layer_checks_its_input_and_attributes():
    layer = _layer()
    with pytest.raises(TypeError, match="u must have the layer's dtype"):
        layer(_u().double())
    with pytest.raises(ValueError, match="u must hold capsules of dimension dim_in=4"):
        layer(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="u must hold num_inputs=5 input capsules"):
        _layer(num_inputs=5)(torch.randn(2, 4, 4))
    layer.iterations = 0  # the page sets iterations on a trained layer
    with pytest.raises(ValueError, match="iterations must be an integer >= 1, got 0"):
        layer(_u())
    with pytest.raises(TypeError, match="weight must have u's dtype"):
        caps.predict_shared(_u(), torch.randn(3, 6, 4, dtype=torch.float64))


def test_coupling_entropy_rejects_non_finite_and_non_distributions():
    # a statistic: NaN/inf and couplings that are not distributions over the outputs are errors
    even = torch.full((2, 5, 4), 0.25)
    one_hot = torch.eye(4)[[0, 1, 2, 3, 0]].expand(2, 5, 4)
    uneven = even * torch.tensor([2.0, 0.0, 1.0, 1.0])  # still sums to 1
    for good in (even, one_hot, uneven):
        assert torch.isfinite(caps.coupling_entropy(good)).all()
    assert caps.coupling_entropy(torch.zeros(0, 5, 4)).shape == (0,)  # no example: no entropy
    for bad, message in ((even * 2, "couplings must be a distribution over the outputs"),
                         (torch.tensor([[[1.5, -0.5]]]), "entries >= 0"),
                         (even.masked_fill(even > 0, float("nan")), "couplings must be finite"),
                         (torch.zeros(2, 0, 4), "couplings need at least one input and one output capsule"),
                         (torch.zeros(2, 5, 0), "couplings need at least one input and one output capsule")):
        with pytest.raises(ValueError, match=message):
            caps.coupling_entropy(bad)
    torch.testing.assert_close(caps.coupling_entropy(even.half()).float(), caps.coupling_entropy(even),
                               atol=1e-3, rtol=1e-3)


def test_margin_loss_checks_scores_targets_and_margins():
    lengths, labels = _scores(), _labels()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lengths must be finite"):
            caps.margin_loss(lengths.masked_fill(lengths > 0.5, bad), labels)
    with pytest.raises(ValueError, match="lengths is empty"):
        caps.margin_loss(lengths[:0], labels[:0])  # the mean over no example was NaN
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 2\], got labels from 1 to 3"):
        caps.margin_loss(lengths, labels + 1)
    for name in ("m_pos", "m_neg"):
        with pytest.raises(ValueError, match=name):
            caps.margin_loss(lengths, labels, **{name: 1.5})
    one_hot = torch.nn.functional.one_hot(labels, 3)
    ref = caps.margin_loss(lengths, labels)
    for indicators in (one_hot.bool(), one_hot.float(), one_hot.double()):  # bool and real 0/1 indicators
        torch.testing.assert_close(caps.margin_loss(lengths, indicators), ref)
    with pytest.raises(ValueError, match="targets must be 0/1 indicators"):
        caps.margin_loss(lengths, one_hot.float() * 2)
    with pytest.raises(TypeError, match="targets must be integer labels or real indicators"):
        caps.margin_loss(lengths, one_hot.to(torch.complex64))


def test_pair_accuracy_rejects_nan_scores_and_impossible_labels():
    # review S3: pair_accuracy returned a finite number for NaN scores
    scores, labels = _scores(), _pair_labels()
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="scores must be finite"):
            X.pair_accuracy(scores.masked_fill(scores > 0.5, bad), labels)
    with pytest.raises(ValueError, match=r"pair_labels must be class labels in \[0, 2\]"):
        X.pair_accuracy(scores, labels + 1)  # label 3 never wins: silently lower accuracy before
    with pytest.raises(ValueError, match="pair_labels must hold two different labels per image"):
        X.pair_accuracy(scores, labels.clone().fill_(1))
    with pytest.raises(TypeError, match="pair_labels must be an integer tensor"):
        X.pair_accuracy(scores, labels.float())


def test_make_pairs_rejects_float_labels_and_bad_seeds():
    with pytest.raises(TypeError, match="labels must be an integer tensor of class labels, got torch.float32"):
        X.make_pairs(_images(), _labels().float())
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        X.make_pairs(_images(), _labels(), seed=-1)
    with pytest.raises(ValueError, match="images is empty"):
        X.make_pairs(_images()[:0], _labels()[:0])


@pytest.mark.parametrize("training", [True, False])
def test_train_and_evaluate_members_restore_the_stack_mode(training):
    # functions that switch a passed model to eval() restore its mode (train_members left it in eval())
    stack = _stack().train(training)
    seen = []
    X.train_members(stack, _images(), _labels(), epochs=2, batch_size=4, lr=1e-2,
                    after_epoch=lambda s: seen.append(s.training))
    assert stack.training is training and stack.base.training is training and seen == [False, False]
    acc = X.evaluate_members(stack, _pairs(), single=(_images(), _labels()))
    assert stack.training is training and stack.base.training is training
    again = X.evaluate_members(stack.eval(), _pairs(), single=(_images(), _labels()))
    assert all(torch.equal(acc[k], again[k]) for k in acc)  # eval either way
    with pytest.raises(ValueError, match="mode must be True or False"):
        stack.train("yes")  # type: ignore[arg-type]


def test_train_members_checks_labels_against_the_members_and_its_data():
    # labels used to reach margin_loss, whose message named "targets"
    stack = _stack()
    for labels in (_labels() + 1, _labels() - 1):
        with pytest.raises(ValueError, match=r"labels must be class labels in \[0, 2\]"):
            X.train_members(stack, _images(), labels, epochs=1, batch_size=4, lr=1e-2)
    with pytest.raises(ValueError, match="images must be finite"):
        X.train_members(stack, _images().masked_fill(_images() > 0.9, float("nan")), _labels(), epochs=1,
                        batch_size=4, lr=1e-2)
    with pytest.raises(TypeError, match="images must have the models' dtype torch.float32, got torch.float16"):
        X.train_members(stack, _images().half(), _labels(), epochs=1, batch_size=4, lr=1e-2)
    with pytest.raises(ValueError, match="images was rejected by the members: x must have an even"):
        X.train_members(stack, _images(h=7), _labels(), epochs=1, batch_size=4, lr=1e-2)
    with pytest.raises(TypeError, match="after_epoch must be callable"):
        X.train_members(stack, _images(), _labels(), epochs=1, batch_size=4, lr=1e-2, after_epoch="log")  # type: ignore[arg-type]


def test_evaluate_members_names_the_test_set_it_rejects():
    stack, (x2, y2) = _stack(), _pairs()["vertical"]
    with pytest.raises(ValueError, match=r"pairs\['vertical'\]\[1\] must be class labels in \[0, 2\]"):
        X.evaluate_members(stack, {"vertical": (x2, y2 + 1)})
    with pytest.raises(ValueError, match=r"pairs\['vertical'\]\[0\] must be finite"):
        X.evaluate_members(stack, {"vertical": (x2.masked_fill(x2 > 0.9, float("inf")), y2)})
    with pytest.raises(ValueError, match=r"pairs\['odd'\]\[0\] was rejected by the members: x must have an even"):
        X.evaluate_members(stack, {"odd": (x2[:, :, :7], y2)})
    with pytest.raises(TypeError, match=r"pairs\['vertical'\] must be an \(images, pair_labels\) pair"):
        X.evaluate_members(stack, {"vertical": x2})
    with pytest.raises(ValueError, match=r"single\[1\] must be class labels in \[0, 2\]"):
        X.evaluate_members(stack, {}, single=(_images(), _labels() + 1))
    with pytest.raises(TypeError, match="single must be an"):
        X.evaluate_members(stack, {}, single=_images())  # type: ignore[arg-type]


def test_seed_stack_checks_build_and_seeds():
    with pytest.raises(TypeError, match="build must be callable"):
        X.SeedStack(None, (0, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seeds must be a sequence"):
        X.SeedStack(lambda s: X.build_model("cnn", seed=s, **SMALL), 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"seeds\[1\] must be an integer >= 0"):
        X.member_orders(_images(), _labels(), (0, 1.5))

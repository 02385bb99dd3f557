"""Tests of kexue.experiments.capsule: two-digit images, the metric, the models and the seed stacks."""

from __future__ import annotations

import pytest
import torch

from kexue.experiments.capsule import (
    LOSSES,
    MODELS,
    CapsuleClassifier,
    CNNClassifier,
    SeedStack,
    build_model,
    evaluate_members,
    make_pairs,
    member_orders,
    pair_accuracy,
    train_members,
)
from kexue.experiments.training import fit

SMALL = {"channels": (4, 4, 8)}  # tiny trunks keep these tests fast


# ----------------------------------------------------------------------------- pairs and the metric


def test_pair_accuracy_hand_example():
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.9, 0.1, 0.4], [0.2, 0.6, 0.7]])
    pairs = torch.tensor([[1, 0], [0, 1], [2, 1]])
    assert pair_accuracy(scores, pairs) == pytest.approx(2 / 3)
    assert pair_accuracy(scores, pairs, threshold=0.5) == pytest.approx(2 / 3)
    assert pair_accuracy(scores, pairs, threshold=0.65) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="pair_labels"):
        pair_accuracy(scores, torch.tensor([1, 0, 2]))
    with pytest.raises(ValueError, match="scores"):
        pair_accuracy(torch.zeros(0, 3), torch.zeros(0, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="threshold"):
        pair_accuracy(scores, pairs, threshold=float("nan"))


@pytest.mark.parametrize("mode", ["vertical", "horizontal", "overlay"])
def test_make_pairs(mode):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(50, 1, 8, 8, generator=gen)
    labels = torch.arange(50) % 3
    joined, pl = make_pairs(images, labels, mode=mode, seed=4)
    expected = {"vertical": (50, 1, 16, 8), "horizontal": (50, 1, 8, 16), "overlay": (50, 1, 8, 8)}[mode]
    assert joined.shape == expected and pl.shape == (50, 2)
    assert torch.equal(pl[:, 0], labels) and (pl[:, 0] != pl[:, 1]).all()
    if mode == "vertical":
        assert torch.equal(joined[:, :, :8], images)
    if mode == "overlay":
        assert (joined >= images).all()
    again, pl2 = make_pairs(images, labels, mode=mode, seed=4)
    assert torch.equal(joined, again) and torch.equal(pl, pl2)


def test_make_pairs_rejects_bad_input():
    images = torch.rand(4, 1, 8, 8)
    with pytest.raises(ValueError, match="labels"):
        make_pairs(images, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        make_pairs(images, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="mode"):
        make_pairs(images, torch.tensor([0, 1, 0, 1]), mode="diagonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="images"):
        make_pairs(torch.rand(4, 8, 8), torch.tensor([0, 1, 0, 1]))


# ----------------------------------------------------------------------------- models


def test_build_model_is_seeded_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_model("capsule", seed=3), build_model("capsule", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert isinstance(build_model("cnn"), CNNClassifier) and isinstance(a, CapsuleClassifier)
    assert set(MODELS) == {"cnn", "capsule"}
    with pytest.raises(ValueError, match="kind"):
        build_model("rnn")
    with pytest.raises(ValueError, match="seed"):
        build_model("cnn", seed=-1)


def test_capsule_models_with_one_seed_start_equal_whatever_the_routing():
    a = build_model("capsule", seed=5, routing="hinton", squash_c=1.0)
    b = build_model("capsule", seed=5, routing="su5112", squash_c=0.5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_models_take_any_even_image_size_and_score_in_unit_interval():
    for kind in ("cnn", "capsule"):
        model = build_model(kind, seed=0)
        for shape in ((3, 1, 8, 8), (3, 1, 16, 8), (1, 1, 8, 16)):
            s = model(torch.rand(*shape))
            assert s.shape == (shape[0], 10) and ((s >= 0) & (s < 1)).all()
    with pytest.raises(ValueError, match="x must"):
        build_model("cnn")(torch.rand(1, 8, 8))


def test_capsule_inputs_are_feature_map_positions():
    model = build_model("capsule", seed=0)
    x = torch.rand(2, 1, 16, 8, generator=torch.Generator().manual_seed(0))
    v, c = model.capsules(x)
    assert v.shape == (2, 10, 16) and c.shape == (2, 8 * 4, 10)  # 16x8 image -> 8x4 positions
    u = model.input_capsules(x)
    f = model.trunk(x)  # (2, 64, 8, 4)
    assert u.shape == (2, 32, 64) and torch.equal(u[:, 4 * 2 + 3], f[:, :, 2, 3])  # row-major positions
    assert torch.equal(model.caps(u)[0], v) and torch.equal(model(x), v.norm(dim=-1))


def test_parameter_counts_are_similar():
    n = {k: sum(p.numel() for p in build_model(k).parameters()) for k in ("cnn", "capsule")}
    assert abs(n["cnn"] - n["capsule"]) / n["cnn"] < 0.1


# ----------------------------------------------------------------------------- seed stacks


def _stack(kind="capsule", seeds=(0, 1, 2), **kw):
    kw = {**SMALL, **kw}
    return SeedStack(lambda s: build_model(kind, seed=s, **kw), seeds)


@pytest.mark.parametrize("kind", ["cnn", "capsule"])
def test_seed_stack_members_are_the_seeded_models(kind):
    stack = _stack(kind, seeds=(3, 7))
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = stack.same_input(x)
        for k, seed in enumerate((3, 7)):
            alone = build_model(kind, seed=seed, **SMALL)
            assert torch.allclose(out[:, k], alone(x), atol=1e-6)
            assert torch.allclose(stack.member(k)(x), alone(x), atol=1e-6)
        xs = torch.rand(5, 2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        per = stack(xs)
        for k in range(2):
            assert torch.allclose(per[:, k], stack.member(k)(xs[:, k]), atol=1e-6)
    assert stack.members == 2 and out.shape == (5, 2, 10)


def test_seed_stack_shares_non_parameter_attributes_through_base():
    stack = _stack(seeds=(0, 1))
    x = torch.rand(4, 1, 16, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        r3 = stack.same_input(x)
        stack.base.caps.iterations = 1
        r1 = stack.same_input(x)
        member = stack.member(0)
        assert member.caps.iterations == 1 and torch.allclose(member(x), r1[:, 0], atol=1e-6)
    assert not torch.allclose(r1, r3)


def test_training_a_stack_trains_each_member_as_if_alone():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 8, 8, generator=gen), torch.randint(10, (40,), generator=gen)
    stack = _stack(seeds=(1, 2))
    train_members(stack, x, y, epochs=2, batch_size=16, lr=3e-3)
    xs, ys = member_orders(x, y, (1, 2))
    for k, seed in enumerate((1, 2)):
        alone = build_model("capsule", seed=seed, **SMALL)
        fit(alone, xs[:, k], ys[:, k], LOSSES["margin"], epochs=2, batch_size=16, lr=3e-3, seed=1)
        trained = stack.member(k)
        for (name, p), q in zip(alone.named_parameters(), trained.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-5), name


def test_train_members_records_after_each_epoch_and_returns_member_mean_loss():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(30, 1, 8, 8, generator=gen), torch.randint(10, (30,), generator=gen)
    stack = _stack("cnn")
    seen = []
    history = train_members(stack, x, y, epochs=3, batch_size=8, lr=1e-2, after_epoch=lambda s: seen.append(s.training))
    assert len(history) == 3 and seen == [False, False, False] and stack.training  # its mode is restored
    with torch.no_grad():
        first = LOSSES["margin"](_stack("cnn"), *member_orders(x, y, stack.seeds), generator=gen, epoch=0)
    assert first.item() / stack.members == pytest.approx(history[0], rel=0.5)  # same scale: per member


def test_member_orders_are_permutations_per_seed():
    x = torch.arange(12, dtype=torch.float32).reshape(12, 1)
    y = torch.arange(12)
    xs, ys = member_orders(x, y, (0, 1, 2))
    assert xs.shape == (12, 3, 1) and ys.shape == (12, 3)
    for k in range(3):
        assert torch.equal(ys[:, k].sort().values, y) and torch.equal(xs[:, k, 0].long(), ys[:, k])
    assert not torch.equal(ys[:, 0], ys[:, 1])
    assert torch.equal(member_orders(x, y, (0, 1, 2))[1], ys)


def test_evaluate_members_per_member_accuracies():
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.rand(20, 1, 8, 8, generator=gen), torch.arange(20) % 4
    stack = _stack(seeds=(0, 1))
    pairs = {"vertical": make_pairs(images, labels, seed=0)}
    acc = evaluate_members(stack, pairs, single=(images, labels))
    assert set(acc) == {"single", "vertical", "vertical>0.5"}
    assert all(v.shape == (2,) and v.dtype == torch.float64 for v in acc.values())
    with torch.no_grad():
        scores = stack.member(1)(pairs["vertical"][0])
    assert acc["vertical"][1].item() == pair_accuracy(scores, pairs["vertical"][1])
    assert (acc["vertical>0.5"] <= acc["vertical"]).all()
    assert set(evaluate_members(stack, pairs)) == {"vertical", "vertical>0.5"}
    with pytest.raises(TypeError, match="stack"):
        evaluate_members(stack.member(0), pairs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="single"):
        evaluate_members(stack, pairs, single=(images, labels[:3]))


def test_seed_stack_rejects_bad_input():
    with pytest.raises(ValueError, match="seeds"):
        _stack(seeds=())
    with pytest.raises(ValueError, match="distinct"):
        _stack(seeds=(1, 1))
    with pytest.raises(ValueError, match="same parameter"):
        SeedStack(lambda s: build_model("capsule", seed=s, channels=(4, 4, 4 + 4 * s)), (0, 1))
    stack = _stack(seeds=(0, 1))
    with pytest.raises(ValueError, match="x must"):
        stack(torch.rand(3, 3, 1, 8, 8))
    with pytest.raises(ValueError, match="k must"):
        stack.member(2)
    with pytest.raises(TypeError, match="stack"):
        train_members(build_model("cnn"), torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64), epochs=1, batch_size=2, lr=1e-3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss"):
        train_members(stack, torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64), epochs=1, batch_size=2, lr=1e-3, loss="hinge")


def test_short_training_beats_chance_on_single_digits():
    from kexue.data import load_digits

    images, labels = load_digits()
    stack = SeedStack(lambda s: build_model("capsule", seed=s, routing="su5112", squash_c=0.5), (0, 1, 2))
    hist = train_members(stack, images[:600], labels[:600], epochs=6, batch_size=32, lr=3e-3)
    assert hist[-1] < hist[0]
    acc = evaluate_members(stack, {}, single=(images[1400:1600], labels[1400:1600]))["single"]
    assert (acc > 0.4).all()  # chance is 0.1

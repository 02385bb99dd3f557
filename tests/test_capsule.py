"""Tests of kexue.capsule: squash, the three routings, predictions, margin loss, the capsule layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kexue.capsule import (
    DEFAULT_SQUASH_C,
    ROUTINGS,
    SQUASH_PROFILES,
    CapsuleLayer,
    coupling_entropy,
    margin_loss,
    predict_dense,
    predict_shared,
    route,
    route_reference,
    squash,
)

METHODS = sorted(ROUTINGS)
F64 = torch.float64


def _u_hat(shape=(2, 5, 3, 4), scale=0.5, seed=0, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=gen, dtype=dtype)


# ----------------------------------------------------------------------------- an independent reference


def _numpy_routing(
    u_hat: np.ndarray, iterations: int, method: str, c: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example, per-iteration routing written from the paper's Procedure 1 and the articles.

    Independent of kexue: NumPy, one example at a time, logits as an (n_in, n_out) matrix.
    """
    batch, n_in, n_out, dim = u_hat.shape
    vs, cs = np.zeros((batch, n_out, dim)), np.zeros((batch, n_in, n_out))
    for b in range(batch):
        u = u_hat[b]  # (n_in, n_out, dim)
        logits = np.zeros((n_in, n_out))
        for it in range(1, iterations + 1):
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            coup = e / e.sum(axis=1, keepdims=True)
            s = np.stack([(coup[:, j : j + 1] * u[:, j, :]).sum(axis=0) for j in range(n_out)])
            lens = np.sqrt((s**2).sum(axis=1, keepdims=True))
            squashed = s * lens / (c + lens**2)
            if it == iterations:
                break
            if method == "hinton":
                logits = logits + np.einsum("ijd,jd->ij", u, squashed)
            elif method == "su4819":
                logits = np.einsum("ijd,jd->ij", u, squashed)
            else:
                unit = np.where(lens > 0, s / np.where(lens > 0, lens, 1.0), 0.0)
                logits = np.einsum("ijd,jd->ij", u, unit)
        vs[b], cs[b] = squashed, coup
    return vs, cs


# ----------------------------------------------------------------------------- squash


@pytest.mark.parametrize("c", [1.0, 0.5, 2.0])
def test_squash_length_matches_closed_form_and_keeps_direction(c):
    gen = torch.Generator().manual_seed(0)
    for k in range(60):
        dim = 1 + k % 6
        s = torch.randn(dim, generator=gen, dtype=F64) * 10.0 ** (k % 5 - 2)  # lengths from ~1e-2 to ~1e2
        out = squash(s, c=c)
        n = s.norm()
        assert out.norm().item() == pytest.approx((n**2 / (c + n**2)).item(), rel=1e-12, abs=1e-15)
        assert torch.allclose(out / out.norm(), s / n, atol=1e-10)
        assert out.norm() < 1


def test_squash_constants_known_points():
    s = torch.tensor([[1.0, 0.0], [0.6, 0.8], [3.0, 4.0]], dtype=F64)  # lengths 1, 1, 5
    assert torch.allclose(squash(s, c=1.0).norm(dim=-1), torch.tensor([0.5, 0.5, 25 / 26], dtype=F64))
    assert torch.allclose(squash(s, c=0.5).norm(dim=-1), torch.tensor([2 / 3, 2 / 3, 25 / 25.5], dtype=F64))


def test_squash_axis_is_the_capsule_axis():
    s = _u_hat((3, 4, 5))
    assert torch.allclose(squash(s, dim=1), squash(s.transpose(1, 2), dim=-1).transpose(1, 2))
    assert torch.allclose(squash(s, dim=-1).norm(dim=-1), s.norm(dim=-1) ** 2 / (1 + s.norm(dim=-1) ** 2))


def test_squash_zero_vector_is_zero_with_finite_gradient():
    s = torch.zeros(2, 3, dtype=F64, requires_grad=True)
    out = squash(s, c=0.5)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(s.grad).all() and torch.equal(s.grad, torch.zeros_like(s.grad))


def test_squash_gradient_against_finite_differences():
    s = _u_hat((3, 4)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: squash(x, c=0.5), (s,))
    assert torch.autograd.gradgradcheck(lambda x: squash(x, c=1.0), (s,))


def test_squash_never_lengthens_for_c_at_least_a_quarter_and_keeps_twice_the_length_near_zero():
    # ||squash_c(s)|| / ||s|| = x / (c + x^2) peaks at x = sqrt(c) with value 1 / (2 sqrt(c)).
    x = torch.logspace(-4, 3, 4001, dtype=F64)
    s = torch.stack([x, torch.zeros_like(x)], dim=-1)
    for c in (0.25, 0.5, 1.0, 2.0):
        assert (squash(s, c=c).norm(dim=-1) <= x * (1 + 1e-12)).all()
    ratio = squash(s, c=0.1).norm(dim=-1) / x
    assert ratio.max().item() == pytest.approx(1 / (2 * math.sqrt(0.1)), rel=1e-5)  # c < 1/4 can lengthen
    small = s[:1] * 1e-3 / s[:1].norm()  # a short vector, length 1e-3
    shrink = {c: squash(small, c=c).norm().item() / 1e-3 for c in (0.5, 1.0)}
    assert shrink[0.5] == pytest.approx(2 * shrink[1.0], rel=1e-5)  # length ~ ||s||^2 / c near zero


@pytest.mark.parametrize("c", [0, -1.0, float("inf"), float("nan"), True])
def test_squash_rejects_bad_constant(c):
    with pytest.raises(ValueError, match="c must"):
        squash(torch.ones(3), c=c)


def test_squash_rejects_bad_input():
    with pytest.raises(TypeError, match="s must"):
        squash(torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="s must"):
        squash([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim"):
        squash(torch.ones(3), dim=1)
    with pytest.raises(ValueError, match="dim"):
        squash(torch.tensor(1.0))


@pytest.mark.parametrize("name", sorted(SQUASH_PROFILES))
def test_squash_profiles_map_lengths_into_unit_interval(name):
    x = torch.linspace(0, 10, 2001, dtype=F64)
    y = SQUASH_PROFILES[name](x)
    assert y[0] == 0
    assert (y.diff() >= 0).all() and (y < 1).all() and (y <= x).all()


def test_paper_and_article_profiles_are_squash_lengths():
    s = _u_hat((50, 4), scale=2.0)
    n = s.norm(dim=-1)
    assert torch.allclose(SQUASH_PROFILES["x^2/(1+x^2) (paper)"](n), squash(s, c=1.0).norm(dim=-1))
    assert torch.allclose(SQUASH_PROFILES["x^2/(0.5+x^2) (article)"](n), squash(s, c=0.5).norm(dim=-1))


# ----------------------------------------------------------------------------- routing


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("iterations", [1, 2, 3, 7])
def test_route_agrees_with_slow_reference(method, iterations):
    u = _u_hat((2, 5, 3, 4), seed=iterations)
    v, c = route(u, iterations, method)
    v_ref, c_ref = route_reference(u, iterations, method)
    assert torch.allclose(v, v_ref, atol=1e-12) and torch.allclose(c, c_ref, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_route_parity_with_independent_numpy_loop(method, iterations):
    u = _u_hat((3, 6, 4, 5), scale=0.8, seed=10 + iterations)
    v, c = route(u, iterations, method)
    v_np, c_np = _numpy_routing(u.numpy(), iterations, method, DEFAULT_SQUASH_C[method])
    np.testing.assert_allclose(v.numpy(), v_np, atol=1e-12)
    np.testing.assert_allclose(c.numpy(), c_np, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_couplings_sum_to_one_over_outputs_and_shapes(method):
    u = _u_hat((4, 7, 3, 2), scale=3.0)
    v, c = route(u, 5, method)
    assert v.shape == (4, 3, 2) and c.shape == (4, 7, 3)
    assert torch.allclose(c.sum(dim=2), torch.ones(4, 7, dtype=F64))
    assert (v.norm(dim=-1) < 1).all()


@pytest.mark.parametrize("method", METHODS)
def test_one_iteration_means_uniform_couplings(method):
    u = _u_hat((2, 5, 4, 3))
    v, c = route(u, 1, method)
    assert torch.allclose(c, torch.full_like(c, 0.25))
    assert torch.allclose(v, squash(u.sum(1) / 4, c=DEFAULT_SQUASH_C[method]))


def test_hinton_and_su4819_coincide_for_two_iterations():
    # From zero logits, "b + a" and "a" are the same after one update.
    u = _u_hat((2, 6, 3, 4), scale=1.0)
    v_h, c_h = route(u, 2, "hinton", squash_c=0.5)
    v_s, c_s = route(u, 2, "su4819", squash_c=0.5)
    assert torch.allclose(v_h, v_s) and torch.allclose(c_h, c_s)
    v_h3, _ = route(u, 3, "hinton", squash_c=0.5)
    v_s3, _ = route(u, 3, "su4819", squash_c=0.5)
    assert not torch.allclose(v_h3, v_s3)


def test_hinton_couplings_become_one_hot_while_the_articles_do_not():
    u = _u_hat((1, 32, 4, 8), scale=0.5, seed=0)
    h = {m: [coupling_entropy(route(u, r, m)[1]).item() for r in (3, 30, 100)] for m in METHODS}
    assert h["hinton"][0] > h["hinton"][1] > h["hinton"][2]
    assert h["hinton"][2] < 0.01
    for m in ("su4819", "su5112"):
        assert h[m][2] > 0.5 * math.log(4)
        assert abs(h[m][1] - h[m][2]) < 1e-6  # converged


def test_su4819_converges_to_a_solution_of_the_clustering_equation():
    # v_j = squash(sum_i softmax_j(<u_hat_{j|i}, v_j>) u_hat_{j|i}): the article's eq. (2).
    u = _u_hat((2, 10, 3, 4), scale=0.5, seed=3)
    v, _ = route(u, 200, "su4819")
    c = torch.softmax(torch.einsum("bnjd,bjd->bnj", u, v), dim=2)
    assert torch.allclose(v, squash(torch.einsum("bnj,bnjd->bjd", c, u), c=0.5), atol=1e-10)


def test_coupling_entropy_closed_forms():
    uniform = torch.full((2, 3, 5), 0.2, dtype=F64)
    assert torch.allclose(coupling_entropy(uniform), torch.full((2,), math.log(5), dtype=F64))
    one_hot = torch.nn.functional.one_hot(torch.tensor([[0, 2, 1]]), 3).to(F64)
    assert torch.equal(coupling_entropy(one_hot), torch.zeros(1, dtype=F64))
    with pytest.raises(ValueError, match="couplings"):
        coupling_entropy(torch.ones(3, 3))


@pytest.mark.parametrize("method", METHODS)
def test_route_degenerate_inputs(method):
    v, c = route(torch.zeros(1, 4, 3, 2, dtype=F64), 5, method)  # zero predictions
    assert torch.equal(v, torch.zeros_like(v)) and torch.allclose(c, torch.full_like(c, 1 / 3))
    u = _u_hat((1, 1, 1, 3))  # a single input and a single output
    v, c = route(u, 4, method)
    assert torch.allclose(c, torch.ones_like(c)) and torch.allclose(
        v[0, 0], squash(u[0, 0, 0], c=DEFAULT_SQUASH_C[method])
    )
    u = _u_hat((1, 5, 3, 4)).requires_grad_()
    route(u, 3, method)[0].sum().backward()
    assert torch.isfinite(u.grad).all()


def test_route_gradient_through_all_iterations():
    u = _u_hat((1, 4, 3, 2)).requires_grad_()
    for method in METHODS:
        assert torch.autograd.gradcheck(lambda x, m=method: route(x, 3, m)[0], (u,))


def test_route_rejects_bad_arguments():
    with pytest.raises(ValueError, match="u_hat"):
        route(torch.zeros(2, 3, 4))
    with pytest.raises(TypeError, match="u_hat"):
        route(torch.zeros(1, 2, 3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="iterations"):
        route(torch.zeros(1, 2, 3, 4), 0)
    with pytest.raises(ValueError, match="iterations"):
        route(torch.zeros(1, 2, 3, 4), 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        route(torch.zeros(1, 2, 3, 4), 3, "em")
    with pytest.raises(ValueError, match="squash_c"):
        route(torch.zeros(1, 2, 3, 4), 3, "hinton", squash_c=-1.0)
    with pytest.raises(ValueError, match="method"):
        route_reference(torch.zeros(1, 2, 3, 4), 3, "kmeans")


# ----------------------------------------------------------------------------- predictions and layers


def test_predict_shared_is_a_one_by_one_convolution():
    # Su's Keras layer computes the shared predictions with a 1-d convolution of kernel size 1.
    u = _u_hat((2, 7, 5))
    w = _u_hat((3, 4, 5), seed=1)  # 3 outputs of dim 4
    conv = torch.nn.functional.conv1d(u.transpose(1, 2), w.reshape(12, 5, 1))  # (2, 12, 7)
    expected = conv.transpose(1, 2).reshape(2, 7, 3, 4)
    assert torch.allclose(predict_shared(u, w), expected)


def test_predict_dense_with_repeated_weights_equals_shared():
    u, w = _u_hat((2, 6, 5)), _u_hat((3, 4, 5), seed=2)
    assert torch.allclose(predict_dense(u, w.expand(6, 3, 4, 5)), predict_shared(u, w))
    w_dense = _u_hat((6, 3, 4, 5), seed=3)
    slow = torch.stack(
        [torch.stack([w_dense[i, j] @ u[:, i].T for j in range(3)]) for i in range(6)]
    )  # (i, j, e, b)
    assert torch.allclose(predict_dense(u, w_dense), slow.permute(3, 0, 1, 2))


def test_predict_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="weight"):
        predict_shared(torch.zeros(2, 3, 4), torch.zeros(5, 6, 7))
    with pytest.raises(ValueError, match="u must"):
        predict_shared(torch.zeros(3, 4), torch.zeros(5, 6, 4))
    with pytest.raises(ValueError, match="input capsules"):
        predict_dense(torch.zeros(2, 3, 4), torch.zeros(5, 2, 6, 4))
    with pytest.raises(ValueError, match="weight"):
        predict_dense(torch.zeros(2, 3, 4), torch.zeros(3, 2, 6))


@pytest.mark.parametrize("routing", METHODS)
def test_shared_layer_is_permutation_equivariant_over_inputs(routing):
    torch.manual_seed(0)
    layer = CapsuleLayer(6, 4, 3, iterations=3, routing=routing).double()
    u = _u_hat((2, 9, 6), scale=1.0)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    v, c = layer(u)
    v_p, c_p = layer(u[:, perm])
    assert torch.allclose(v, v_p) and torch.allclose(c[:, perm], c_p)
    v_more, _ = layer(torch.cat([u, u], dim=1))  # any number of inputs
    assert v_more.shape == v.shape


def test_dense_layer_has_fixed_inputs_and_layer_checks():
    torch.manual_seed(0)
    layer = CapsuleLayer(6, 4, 3, num_inputs=9)
    assert not layer.shared and layer.weight.shape == (9, 4, 3, 6)
    v, c = layer(torch.randn(2, 9, 6))
    assert v.shape == (2, 4, 3) and c.shape == (2, 9, 4)
    with pytest.raises(ValueError, match="input capsules"):
        layer(torch.randn(2, 8, 6))
    with pytest.raises(ValueError, match="routing"):
        CapsuleLayer(6, 4, 3, routing="dynamic")
    with pytest.raises(ValueError, match="num_caps"):
        CapsuleLayer(6, 0, 3)
    with pytest.raises(ValueError, match="iterations"):
        CapsuleLayer(6, 4, 3, iterations=0)
    assert CapsuleLayer(6, 4, 3, routing="hinton").squash_c == 1.0
    assert CapsuleLayer(6, 4, 3, routing="su4819").squash_c == 0.5


# ----------------------------------------------------------------------------- margin loss


def test_margin_loss_hand_computed():
    lengths = torch.tensor([[0.95, 0.3, 0.05], [0.5, 0.8, 0.2]], dtype=F64)
    targets = torch.tensor([0, 2])
    # row 0: present 0.95 >= 0.9 -> 0; absent 0.3 -> 0.5*(0.2)^2 = 0.02; absent 0.05 -> 0.
    # row 1: absent 0.5 -> 0.5*0.16 = 0.08; absent 0.8 -> 0.5*0.49 = 0.245; present 0.2 -> 0.49.
    expected = (0.02 + (0.08 + 0.245 + 0.49)) / 2
    assert margin_loss(lengths, targets).item() == pytest.approx(expected, abs=1e-12)
    lam = 0.25
    expected_su = (0.25 * 0.04 + (0.25 * 0.16 + 0.25 * 0.49 + 0.49)) / 2
    assert margin_loss(lengths, targets, lam=lam).item() == pytest.approx(expected_su, abs=1e-12)


def test_margin_loss_multi_hot_targets_and_zero_loss():
    lengths = _u_hat((4, 10), seed=5).abs().clamp(max=1)
    labels = torch.tensor([1, 4, 4, 9])
    one_hot = torch.nn.functional.one_hot(labels, 10).to(F64)
    assert torch.allclose(margin_loss(lengths, labels), margin_loss(lengths, one_hot))
    perfect = one_hot * 0.95 + (1 - one_hot) * 0.05
    assert margin_loss(perfect, one_hot).item() == 0.0
    two = torch.zeros(1, 10, dtype=F64)
    two[0, [2, 7]] = 1
    assert margin_loss(two * 0.9, two).item() == 0.0


def test_margin_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="lengths"):
        margin_loss(torch.zeros(3), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="targets"):
        margin_loss(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="targets"):
        margin_loss(torch.zeros(2, 3), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="targets"):
        margin_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="lam"):
        margin_loss(torch.zeros(2, 3), torch.tensor([0, 1]), lam=-0.1)

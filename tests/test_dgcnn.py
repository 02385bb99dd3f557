"""Tests of kexue.dgcnn: equations in float64, masking, receptive field, decoding, voting, features, metric."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue.dgcnn import (
    LOSSES,
    VOTING,
    AttentionPooling1d,
    DGCNNEncoder,
    DGCNNReader,
    GatedConv1d,
    answer_f1,
    attention_pooling,
    attention_weights,
    best_spans,
    binary_cross_entropy,
    binary_focal_loss,
    edit_distance,
    extract_candidates,
    gated_conv1d,
    gated_conv1d_reference,
    match_features,
    match_features_reference,
    normalize_answer,
    pick_answer,
    receptive_field,
    sinusoidal_position_embedding,
    sogou_score,
    span_scores,
    vote,
)
from kexue.experiments.dgcnn import make_multipassage_qa  # realistic token ids for the reader tests

D64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _prefix_mask(lengths: list[int], length: int) -> torch.Tensor:
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------------------------------------
# gated convolution


@pytest.mark.parametrize("d_in,d_out", [(4, 4), (3, 5)])
@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_gated_conv_matches_the_loop_reference(d_in, d_out, dilation, k):
    g = _gen(1)
    x = torch.randn(2, 9, d_in, dtype=D64, generator=g)
    w = torch.randn(2 * d_out, d_in, k, dtype=D64, generator=g)
    b = torch.randn(2 * d_out, dtype=D64, generator=g)
    mask = _prefix_mask([9, 6], 9)
    noise = (torch.rand(2, 9, d_out, dtype=D64, generator=g) * 2 - 1) * 0.1
    fast = gated_conv1d(x, w, b, dilation=dilation, mask=mask, gate_noise=noise)
    slow = gated_conv1d_reference(x, w, b, dilation=dilation, mask=mask, gate_noise=noise)
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


def test_residual_gate_equation_written_out():
    # eq. (3): Y = X (1 - s) + Conv1(X) s, s = sigmoid(Conv2(X)); equivalently eq. (2) with Conv1 - I.
    g = _gen(2)
    x = torch.randn(3, 7, 4, dtype=D64, generator=g)
    w = torch.randn(8, 4, 3, dtype=D64, generator=g)
    b = torch.randn(8, dtype=D64, generator=g)
    value = F.conv1d(x.transpose(1, 2), w[:4], b[:4], padding=1).transpose(1, 2)
    s = torch.sigmoid(F.conv1d(x.transpose(1, 2), w[4:], b[4:], padding=1).transpose(1, 2))
    expected = x * (1 - s) + value * s
    torch.testing.assert_close(gated_conv1d(x, w, b), expected)
    torch.testing.assert_close(gated_conv1d(x, w, b), x + (value - x) * s)


def test_non_residual_form_is_torch_glu_of_a_same_padded_dilated_conv():
    # Peer parity: torch's own Conv1d(padding="same", dilation=d) followed by F.glu.
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(3, 10, 3, dilation=4, padding="same").double()
    x = torch.randn(2, 17, 3, dtype=D64)
    glu = F.glu(conv(x.transpose(1, 2)), dim=1).transpose(1, 2)
    ours = gated_conv1d(x, conv.weight, conv.bias, dilation=4)
    torch.testing.assert_close(ours, glu)


def test_gate_noise_enters_as_multiplicative_factor_on_the_logits():
    g = _gen(3)
    x = torch.randn(1, 5, 2, dtype=D64, generator=g)
    w = torch.randn(4, 2, 3, dtype=D64, generator=g)
    eps = torch.full((1, 5, 2), 0.1, dtype=D64)
    # (1 + eps) on the gate logits equals scaling the gate weights (no bias) by 1.1
    w_scaled = torch.cat([w[:2], w[2:] * 1.1])
    torch.testing.assert_close(gated_conv1d(x, w, gate_noise=eps), gated_conv1d(x, w_scaled))


def test_gate_noise_only_in_training_mode():
    torch.manual_seed(0)
    block = GatedConv1d(4, 4, 3, 2, gate_noise=0.1).double()
    x = torch.randn(2, 8, 4, dtype=D64)
    block.eval()
    torch.testing.assert_close(block(x), block(x))
    block.train()
    assert not torch.equal(block(x), block(x))


@pytest.mark.parametrize("dilations", [(1,), (1, 2), (1, 2, 4), (1, 2, 4, 8, 1)])
def test_padding_never_leaks_into_real_positions(dilations):
    torch.manual_seed(0)
    enc = DGCNNEncoder(6, dilations).double().eval()
    mask = _prefix_mask([10, 4], 12)
    x = torch.randn(2, 12, 6, dtype=D64)
    y = x.clone()
    y[~mask] = torch.randn(int((~mask).sum()), 6, dtype=D64) * 100
    a, b = enc(x, mask), enc(y, mask)
    torch.testing.assert_close(a, b)
    assert (a[~mask] == 0).all()


def test_reader_ignores_padded_tokens_and_padded_question_tokens():
    data = make_multipassage_qa(3, seed=5)
    feats = match_features(data.question, data.q_mask, data.passages, data.p_mask)
    torch.manual_seed(0)
    model = DGCNNReader(len(data.words), n_features=4).eval()
    out1 = model(data.question, data.q_mask, data.passages, data.p_mask, feats)
    q2 = data.question.masked_fill(~data.q_mask, 7)
    p2 = data.passages.masked_fill(~data.p_mask, 9)
    f2 = feats.masked_fill(~data.p_mask.unsqueeze(-1), 3.0)
    out2 = model(q2, data.q_mask, p2, data.p_mask, f2)
    for a, b in zip(out1, out2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("k,dilations", [(3, (1, 2)), (3, (1, 2, 4)), (3, (1, 2, 4, 8, 16, 1)), (5, (1, 3))])
def test_receptive_field_equals_the_gradient_footprint(k, dilations):
    assert receptive_field(k, dilations) == 1 + (k - 1) * sum(dilations)
    torch.manual_seed(0)
    enc = DGCNNEncoder(3, dilations, kernel_size=k).double()
    length = 2 * receptive_field(k, dilations) + 5
    x = torch.randn(1, length, 3, dtype=D64, requires_grad=True)
    centre = length // 2
    enc(x)[0, centre].sum().backward()
    touched = (x.grad[0].abs().sum(-1) > 0).nonzero().squeeze(-1)
    assert touched.numel() == receptive_field(k, dilations)
    assert touched.min() == centre - (receptive_field(k, dilations) - 1) // 2


def test_receptive_field_of_the_articles_and_the_2019_codes_stacks():
    assert receptive_field(3, [1, 2]) == 7
    assert receptive_field(3, [1, 2, 4]) == 15
    assert receptive_field(3, [1, 2, 4, 8, 16, 1]) == 65
    assert receptive_field(3, []) == 1


# ---------------------------------------------------------------------------------------------
# attention pooling, position embedding


def test_attention_pooling_equation_and_masking():
    g = _gen(4)
    x = torch.randn(2, 6, 5, dtype=D64, generator=g)
    w = torch.randn(3, 5, dtype=D64, generator=g)
    a = torch.randn(3, dtype=D64, generator=g)
    mask = _prefix_mask([6, 2], 6)
    out = attention_pooling(x, w, a, mask)
    for r, n in enumerate([6, 2]):
        logits = torch.stack([a @ torch.tanh(w @ x[r, i]) for i in range(n)])
        lam = torch.exp(logits) / torch.exp(logits).sum()
        torch.testing.assert_close(out[r], (lam[:, None] * x[r, :n]).sum(0))
    lam = attention_weights(x, w, a, mask)
    assert (lam[1, 2:] == 0).all()
    torch.testing.assert_close(lam.sum(-1), torch.ones(2, dtype=D64))


def test_attention_pooling_of_a_fully_masked_row_is_zero_not_nan():
    pool = AttentionPooling1d(4, 3)
    x = torch.randn(2, 5, 4)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, :2] = True
    out = pool(x, mask)
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all()


def test_attention_pooling_of_constant_sequence_is_that_constant():
    pool = AttentionPooling1d(4, 3).double()
    x = torch.ones(1, 7, 4, dtype=D64) * 2.5
    torch.testing.assert_close(pool(x), torch.full((1, 4), 2.5, dtype=D64))


def test_sinusoidal_position_embedding_closed_form():
    pe = sinusoidal_position_embedding(50, 8, dtype=D64)
    for p in (0, 1, 17, 49):
        for i in range(4):
            ang = p / 10000 ** (2 * i / 8)
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(ang), abs=1e-15)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(ang), abs=1e-15)
    assert pe.dtype == D64 and pe.shape == (50, 8)


# ---------------------------------------------------------------------------------------------
# losses


def test_focal_loss_closed_form_and_reduction_to_cross_entropy():
    g = _gen(5)
    p = torch.rand(4, 6, dtype=D64, generator=g) * 0.98 + 0.01
    y = (torch.rand(4, 6, dtype=D64, generator=g) < 0.3).to(D64)
    alpha, gamma = 0.3, 1.5
    manual = -(alpha * y * (1 - p) ** gamma * torch.log(p) + (1 - alpha) * (1 - y) * p**gamma * torch.log(1 - p))
    torch.testing.assert_close(binary_focal_loss(p, y, alpha=alpha, gamma=gamma), manual.mean())
    # gamma = 0, alpha = 1/2 is half the binary cross-entropy
    torch.testing.assert_close(binary_focal_loss(p, y, alpha=0.5, gamma=0.0), 0.5 * binary_cross_entropy(p, y))
    torch.testing.assert_close(binary_cross_entropy(p, y), F.binary_cross_entropy(p, y))


def test_focal_loss_matches_torchvision_formula_on_logits():
    # torchvision.ops.sigmoid_focal_loss (not installable next to torch 2.13 here) is
    # ce_with_logits * (1 - p_t)^gamma * alpha_t; rebuilt from torch's own BCE-with-logits.
    g = _gen(6)
    logits = torch.randn(3, 10, dtype=D64, generator=g) * 3
    y = (torch.rand(3, 10, dtype=D64, generator=g) < 0.2).to(D64)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = 0.25 * y + 0.75 * (1 - y)
    peer = (alpha_t * ce * (1 - p_t) ** 2).mean()
    torch.testing.assert_close(binary_focal_loss(p, y, eps=1e-15), peer)


def test_focal_loss_mask_averages_over_unmasked_entries_only():
    p = torch.tensor([[0.2, 0.9, 0.5]], dtype=D64)
    y = torch.tensor([[0.0, 1.0, 1.0]], dtype=D64)
    mask = torch.tensor([[True, True, False]])
    for f in LOSSES.values():
        torch.testing.assert_close(f(p, y, mask), f(p[:, :2], y[:, :2]))


def test_focal_loss_gradient_matches_autograd_of_closed_form():
    p = torch.tensor([0.3, 0.7], dtype=D64, requires_grad=True)
    y = torch.tensor([1.0, 0.0], dtype=D64)
    binary_focal_loss(p, y, alpha=0.25, gamma=2.0).backward()
    # d/dp of -a (1-p)^2 log p at y=1 and -(1-a) p^2 log(1-p) at y=0, halved by the mean
    a = 0.25
    g1 = -a * (-2 * (1 - 0.3) * math.log(0.3) + (1 - 0.3) ** 2 / 0.3) / 2
    g0 = -(1 - a) * (2 * 0.7 * math.log(0.3) - 0.7**2 / 0.3) / 2
    torch.testing.assert_close(p.grad, torch.tensor([g1, g0], dtype=D64))


def test_losses_are_finite_at_zero_and_one():
    p = torch.tensor([0.0, 1.0, 0.0, 1.0])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    for f in LOSSES.values():
        assert torch.isfinite(f(p, y))


# ---------------------------------------------------------------------------------------------
# span decoding and voting


def _brute_best(ps: list[float], pe: list[float], n: int, max_len: int) -> tuple[int, int, float]:
    best = (0, 0, -1.0)
    for i in range(n):
        for j in range(i, min(n, i + max_len)):
            s = ps[i] * pe[j]
            if s > best[2]:
                best = (i, j, s)
    return best


@settings(max_examples=40, deadline=None, database=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(0, 10_000))
def test_best_span_agrees_with_brute_force(n, max_len, seed):
    g = _gen(seed)
    ps = torch.rand(12, dtype=D64, generator=g)
    pe = torch.rand(12, dtype=D64, generator=g)
    mask = torch.arange(12) < n
    s, e, score = best_spans(ps, pe, mask, max_len=max_len)
    bi, bj, bs = _brute_best(ps.tolist(), pe.tolist(), n, max_len)
    assert score.item() == pytest.approx(bs)
    assert (int(s), int(e)) == (bi, bj)


def test_span_scores_band_and_sqrt_rule():
    ps = torch.tensor([0.5, 0.2, 0.9])
    pe = torch.tensor([0.1, 0.8, 0.4])
    s = span_scores(ps, pe, max_len=2)
    assert s[1, 0] == 0 and s[0, 2] == 0  # end before start, span too long
    assert s[0, 1].item() == pytest.approx(0.4)
    r = span_scores(ps, pe, max_len=2, rule="sqrt")
    torch.testing.assert_close(r, torch.sqrt(s))


def test_extract_candidates_keeps_the_max_of_duplicates_within_a_passage():
    tokens = torch.tensor([[5, 6, 5, 6, 9]])
    ps = torch.tensor([[0.9, 0.0, 0.5, 0.0, 0.0]])
    pe = torch.tensor([[0.0, 0.8, 0.0, 0.6, 0.0]])
    cands = extract_candidates(tokens, ps, pe, torch.ones(1, 5, dtype=torch.bool), max_len=2, threshold=0.1)
    assert cands[0][(5, 6)] == pytest.approx(0.72)
    assert set(cands[0]) == {(5, 6)}  # (5, 6, 5, 6) is too long, (6, 5) starts below threshold


def test_extract_candidates_of_a_batch_equal_those_of_each_question():
    g = _gen(9)
    tokens = torch.randint(2, 6, (5, 3, 9), generator=g)  # few distinct tokens: many duplicate strings
    mask = torch.arange(9) < torch.randint(1, 10, (5, 3, 1), generator=g)
    ps = torch.rand(5, 3, 9, generator=g) * mask
    pe = torch.rand(5, 3, 9, generator=g) * mask
    batch = extract_candidates(tokens, ps, pe, mask, max_len=4, threshold=0.3)
    assert len(batch) == 5 and all(len(q) == 3 for q in batch)
    for k in range(5):
        assert batch[k] == extract_candidates(tokens[k], ps[k], pe[k], mask[k], max_len=4, threshold=0.3)
    assert any(batch[k][e] for k in range(5) for e in range(3))


def test_voting_rules_on_hand_made_candidates():
    # The article's example: A once with 0.7 vs B four times with 0.2.
    cands = [{"A": 0.7}, {"B": 0.2}, {"B": 0.2}, {"B": 0.2}, {"B": 0.2}]
    assert pick_answer(cands, "sum") == "B"  # 0.8 > 0.7
    assert pick_answer(cands, "sum_sq") == "A"  # 0.49 > 0.16
    assert pick_answer(cands, "smoothed") == "A"
    assert pick_answer(cands, "max") == "A"
    totals = vote(cands, "smoothed")
    assert totals["A"] == pytest.approx(0.49 / 1.7)
    assert totals["B"] == pytest.approx(0.16 / 1.8)
    # and a case where sum_sq and max disagree: two confident passages beat one slightly higher
    cands2 = [{"A": 0.6}, {"A": 0.6}, {"B": 0.7}]
    assert pick_answer(cands2, "max") == "B"
    assert pick_answer(cands2, "sum_sq") == "A"


def test_voting_degenerate_inputs():
    assert pick_answer([], "smoothed") is None
    assert pick_answer([{}, {}], "sum") is None
    assert vote([{"x": 0.0}], "smoothed") == {"x": 0.0}
    with pytest.raises(ValueError, match="rule"):
        vote([{"x": 1.0}], "median")
    assert set(VOTING) == {"sum", "max", "sum_sq", "smoothed"}


# ---------------------------------------------------------------------------------------------
# metric


def test_normalize_and_f1():
    assert normalize_answer("Ｈｅｌｌｏ， World！") == "helloworld"
    assert answer_f1("abc", ["abd"]) == pytest.approx(2 / 3)
    assert answer_f1("abc", ["xyz", "abc"]) == 1.0
    assert answer_f1(None, ["abc"]) == 0.0
    assert answer_f1("abc", ("xyz", "abc")) == 1.0  # a tuple of answers is a list of references
    assert answer_f1((1, 2), [(1, 2)]) == 1.0 and answer_f1((1, 2), ()) == 0.0
    assert answer_f1((1, 2, 3), [(2, 3, 4, 5)]) == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    s = sogou_score([(1,), (2, 3), None], [[(1,)], [(2,)], [(4,)]])
    assert s["accuracy"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx((1 + 2 / 3) / 3)
    assert s["score"] == pytest.approx((s["accuracy"] + s["f1"]) / 2)
    with pytest.raises(ValueError, match="predictions"):
        sogou_score([], [])


# ---------------------------------------------------------------------------------------------
# hand features


@settings(max_examples=25, deadline=None, database=None)
@given(st.lists(st.integers(0, 6), min_size=2, max_size=7), st.lists(st.integers(0, 6), min_size=0, max_size=7))
def test_edit_distance_properties(a, b):
    d = edit_distance(a, b)
    assert d == edit_distance(b, a)
    assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
    assert (d == 0) == (a == b)


def test_edit_distance_known_values():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("flaw", "lawn") == 2


def test_match_features_match_the_slow_reference():
    data = make_multipassage_qa(12, seed=3)
    fast = match_features(data.question, data.q_mask, data.passages, data.p_mask)
    for k in range(len(data)):
        q = data.question[k][data.q_mask[k]].tolist()
        ps = [data.passages[k, e][data.p_mask[k, e]].tolist() for e in range(data.passages.shape[1])]
        ref = match_features_reference(q, ps)
        for e, rows in enumerate(ref):
            torch.testing.assert_close(fast[k, e, : len(rows)], torch.tensor(rows, dtype=torch.float32))
            assert (fast[k, e, len(rows) :] == 0).all()


def test_match_features_on_the_articles_examples():
    # E-E: a word found in 4 of the 9 other passages scores 4/10.
    passages = [[7, 1, 2]] + [[7, 3] if i < 4 else [4, 5] for i in range(9)]
    rows = match_features_reference([8, 9], passages)
    assert rows[0][0][1] == pytest.approx(0.4)
    # a window that equals the question: Jaccard 1, edit distance 0
    rows = match_features_reference([3, 4, 5], [[1, 3, 4, 5, 2], [6]])
    assert rows[0][2][2:] == [1.0, 0.0]
    assert rows[0][2][0] == 1.0 and rows[0][0][0] == 0.0


def test_match_features_degenerate_single_passage_and_constant_tokens():
    q = torch.tensor([[3, 3]])
    p = torch.full((1, 1, 4), 3)
    f = match_features(q, torch.ones(1, 2, dtype=torch.bool), p, torch.ones(1, 1, 4, dtype=torch.bool))
    assert (f[..., 0] == 1).all() and (f[..., 1] == 0).all()
    # middle windows [3, 3] equal the question; the first one starts on a placeholder
    assert f[0, 0, 1:, 2].tolist() == [1.0, 1.0, 1.0] and f[0, 0, 0, 2].item() == pytest.approx(0.5)
    assert f[0, 0, 1:, 3].tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------
# the reader


def test_reader_output_shapes_and_gate():
    data = make_multipassage_qa(4, seed=0)
    torch.manual_seed(0)
    model = DGCNNReader(len(data.words)).eval()
    ps, pe, pg = model(data.question, data.q_mask, data.passages, data.p_mask)
    assert ps.shape == pe.shape == data.passages.shape and pg.shape == (4, 4)
    assert (ps <= pg.unsqueeze(-1) + 1e-7).all() and (ps[~data.p_mask] == 0).all()
    nogate = DGCNNReader(len(data.words), global_gate=False).eval()
    assert (nogate(data.question, data.q_mask, data.passages, data.p_mask)[2] == 1).all()


def test_ungated_taggers_times_the_gate_are_the_gated_outputs():
    # eq. (8): p_start = p_global * sigma(...); gated=False returns sigma(...) itself.
    data = make_multipassage_qa(3, seed=2)
    torch.manual_seed(0)
    model = DGCNNReader(len(data.words)).double().eval()
    args = (data.question, data.q_mask, data.passages, data.p_mask)
    ps, pe, pg = model(*args)
    us, ue, ug = model(*args, gated=False)
    torch.testing.assert_close(ug, pg)
    torch.testing.assert_close(us * pg[..., None], ps)
    torch.testing.assert_close(ue * pg[..., None], pe)
    assert (us[~data.p_mask] == 0).all() and us.max() <= 1
    # without the gate, gated and ungated outputs are the same
    torch.manual_seed(0)
    nogate = DGCNNReader(len(data.words), global_gate=False).double().eval()
    for a, b in zip(nogate(*args), nogate(*args, gated=False)):
        torch.testing.assert_close(a, b)


def test_encoder_masks_its_output():
    torch.manual_seed(0)
    x = torch.randn(2, 10, 8)
    mask = _prefix_mask([10, 3], 10)
    y = DGCNNEncoder(8, (1, 2))(x, mask)
    assert y.shape == x.shape and (y[~mask] == 0).all()


# ---------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_raise_naming_the_argument():
    x = torch.randn(2, 5, 4)
    w = torch.randn(8, 4, 3)
    with pytest.raises(ValueError, match="x"):
        gated_conv1d(torch.randn(5, 4), w)
    with pytest.raises(TypeError, match="x"):
        gated_conv1d(x.long(), w)
    with pytest.raises(ValueError, match="kernel"):
        gated_conv1d(x, torch.randn(8, 4, 2))
    with pytest.raises(ValueError, match="d_in"):
        gated_conv1d(x, torch.randn(8, 3, 3))
    with pytest.raises(ValueError, match="dilation"):
        gated_conv1d(x, w, dilation=0)
    with pytest.raises(ValueError, match="mask"):
        gated_conv1d(x, w, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        gated_conv1d(x, w, mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="gate_noise"):
        gated_conv1d(x, w, gate_noise=torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="kernel_size"):
        GatedConv1d(4, 4, kernel_size=4)
    with pytest.raises(ValueError, match="gate_noise"):
        GatedConv1d(4, 4, gate_noise=-0.1)
    with pytest.raises(ValueError, match="dilations"):
        receptive_field(3, [1, 0])
    with pytest.raises(ValueError, match="dilations"):
        DGCNNEncoder(4, ())
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_position_embedding(4, 3)
    with pytest.raises(ValueError, match="alpha"):
        binary_focal_loss(torch.rand(3), torch.ones(3), alpha=1.5)
    with pytest.raises(ValueError, match="y"):
        binary_focal_loss(torch.rand(3), torch.ones(4))
    with pytest.raises(ValueError, match="max_len"):
        span_scores(torch.rand(3), torch.rand(3), max_len=0)
    with pytest.raises(ValueError, match="rule"):
        span_scores(torch.rand(3), torch.rand(3), rule="mean")
    with pytest.raises(ValueError, match="q_mask"):
        match_features(torch.tensor([[0, 3]]), torch.tensor([[False, True]]), torch.ones(1, 1, 3, dtype=torch.long),
                       torch.ones(1, 1, 3, dtype=torch.bool))
    data = make_multipassage_qa(2, seed=0)
    model = DGCNNReader(len(data.words), n_features=4)
    args = (data.question, data.q_mask, data.passages, data.p_mask)
    with pytest.raises(ValueError, match="features"):
        model(*args)
    with pytest.raises(ValueError, match="features"):
        model(*args, torch.zeros(2, 4, 32, 3))
    with pytest.raises(TypeError, match="features"):
        model(*args, torch.zeros(2, 4, 32, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="passages"):
        model(data.question[:1], data.q_mask[:1], data.passages, data.p_mask)
    with pytest.raises(TypeError, match="p_mask"):
        model(data.question, data.q_mask, data.passages, data.p_mask.float(), None)
    with pytest.raises(ValueError, match="max_len"):
        DGCNNReader(len(data.words), max_len=8)(data.question, data.q_mask, data.passages, data.p_mask)
    with pytest.raises(ValueError, match="d_pos"):
        DGCNNReader(10, d_pos=3)
    with pytest.raises(ValueError, match="tokens"):
        extract_candidates(torch.zeros(5, dtype=torch.long), torch.rand(5), torch.rand(5), torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="p_start"):
        extract_candidates(torch.zeros(2, 5, dtype=torch.long), torch.rand(2, 4), torch.rand(2, 4),
                           torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="references"):
        answer_f1("abc", "abc")
    with pytest.raises(TypeError, match="references"):
        answer_f1((1, 2), (1, 2))

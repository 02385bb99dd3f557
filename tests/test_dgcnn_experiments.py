"""Tests of kexue.experiments.dgcnn: the synthetic task, the stacked multi-seed trainer, decoding."""

from __future__ import annotations

import itertools

import pytest
import torch

from kexue.dgcnn import (
    LOSSES,
    VOTING,
    DGCNNEncoder,
    DGCNNReader,
    extract_candidates,
    match_features,
    pick_answer,
    sogou_score,
)
from kexue.experiments.dgcnn import (
    BiLSTMEncoder,
    ReaderStack,
    TaggingLoss,
    Variant,
    best_constant_tagger,
    decode_answers,
    fit_readers,
    make_multipassage_qa,
    reader_probabilities,
)
from kexue.experiments.training import minibatches

D64 = torch.float64
SMALL = {"d": 8, "d_emb": 8, "d_pos": 4}


def _reader(vocab: int, seed: int, **config) -> DGCNNReader:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DGCNNReader(vocab, **config)


# ---------------------------------------------------------------------------------------------
# the synthetic task


def test_generator_is_deterministic_and_well_formed():
    a = make_multipassage_qa(20, seed=7)
    b = make_multipassage_qa(20, seed=7)
    c = make_multipassage_qa(20, seed=8)
    for name in ("question", "passages", "start", "end", "has_answer"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.answers == b.answers and not torch.equal(a.passages, c.passages)
    assert a.passages.shape == (20, 4, 32) and a.question.shape == (20, 5)
    assert a.has_answer.any(1).all()  # every question has an answer passage
    assert torch.equal(a.start.sum(-1) > 0, a.has_answer) and torch.equal(a.start.sum(-1), a.end.sum(-1))
    # every labelled span is the answer
    for k, e, i in (a.start > 0).nonzero().tolist():
        n = len(a.answers[k])
        assert tuple(a.passages[k, e, i : i + n].tolist()) == a.answers[k]
        assert a.end[k, e, i + n - 1] == 1
    sub = a.subset([3, 1])
    assert sub.answers == [a.answers[3], a.answers[1]] and torch.equal(sub.passages[0], a.passages[3])
    assert "E" in a.decode(a.question[0].tolist())


def test_shortest_passages_still_hold_every_planted_fact_intact():
    # Two facts of up to 8 tokens share a passage; at the minimum length of 16 neither may be cut:
    # some passage holds the question's entity and, within the fact's 8 tokens, the whole answer.
    data = make_multipassage_qa(200, passage_len=(16, 16), seed=4)
    for k in range(len(data)):
        entity = next(t for t in data.question[k].tolist() if data.words[t].startswith("E"))
        ans = data.answers[k]
        found = False
        for e in range(4):
            toks = data.passages[k, e].tolist()
            for i in range(len(toks) - len(ans) + 1):
                if tuple(toks[i : i + len(ans)]) == ans and entity in toks[max(0, i - 5) : i + len(ans) + 5]:
                    found = True
        assert found, f"question {k}: no intact fact"


def test_summary_counts_the_imbalance():
    data = make_multipassage_qa(50, seed=1)
    s = data.summary()
    assert s["questions"] == 50 and s["passages"] == 200
    assert s["answer_passages"] == pytest.approx(data.has_answer.float().mean().item())
    assert s["start_tags"] == pytest.approx(data.start.sum().item() / data.p_mask.sum().item())
    assert 0 < s["start_tags"] == s["end_tags"] < s["answer_passages"] < 1


# ---------------------------------------------------------------------------------------------
# the stack


def test_stack_members_compute_what_their_stand_alone_readers_compute():
    data = make_multipassage_qa(5, seed=3)
    feats = match_features(data.question, data.q_mask, data.passages, data.p_mask)
    variants = {"full": Variant(), "no features": Variant(hand_features=False), "no gate": Variant(global_gate=False)}
    stack = ReaderStack(len(data.words), variants, seeds=(4, 9), n_features=4, **SMALL).double().eval()
    assert stack.member_names == ("full",) * 2 + ("no features",) * 2 + ("no gate",) * 2
    assert stack.seeds == (4, 9, 4, 9, 4, 9)
    args = (data.question, data.q_mask, data.passages, data.p_mask)
    ps, pe, pg = stack(*args, feats.double())
    for m, (name, seed) in enumerate(zip(stack.member_names, stack.seeds)):
        gate = variants[name].global_gate
        reader = _reader(len(data.words), seed, n_features=4, global_gate=gate, **SMALL).double().eval()
        f = feats.double() * (0.0 if name == "no features" else 1.0)
        for ours, theirs in zip((ps[m], pe[m], pg[m]), reader(*args, f)):
            torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    # one batch per member gives the same as the shared batch repeated
    rep = [x.expand(len(stack), *x.shape) for x in (*args, feats.double())]
    for a, b in zip(stack(*rep), (ps, pe, pg)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    by = stack.by_variant(pg)
    assert list(by) == list(variants) and torch.equal(by["no gate"], pg[4:]) and (by["no gate"] == 1).all()


def test_a_member_without_features_computes_what_a_reader_without_features_computes():
    # Same weights except the unused feature columns of the input layer: same outputs.
    data = make_multipassage_qa(4, seed=6)
    feats = match_features(data.question, data.q_mask, data.passages, data.p_mask).double()
    stack = ReaderStack(len(data.words), {"no f": Variant(hand_features=False)}, seeds=(0,), n_features=4, **SMALL)
    stack = stack.double().eval()
    plain = DGCNNReader(len(data.words), n_features=0, **SMALL).double().eval()
    with torch.no_grad():
        for name, p in plain.named_parameters():
            src = stack.members[name.replace(".", ":")][0]
            p.copy_(src[:, : p.shape[1]] if name == "p_in.weight" else src)
    args = (data.question, data.q_mask, data.passages, data.p_mask)
    for a, b in zip(stack(*args, feats), plain(*args)):
        torch.testing.assert_close(a[0], b, rtol=1e-10, atol=1e-12)


def test_training_the_stack_equals_training_each_reader_alone():
    # No gate noise and no UNK: the only randomness is the data order, which we replay.
    data = make_multipassage_qa(24, seed=5)
    feats = match_features(data.question, data.q_mask, data.passages, data.p_mask).double()
    variants = {"full": Variant(), "no gate": Variant(global_gate=False)}
    config = dict(n_features=4, gate_noise=0.0, **SMALL)
    stack = ReaderStack(len(data.words), variants, seeds=(1, 2), **config).double()
    data64 = type(data)(**{**data.__dict__, "start": data.start.double(), "end": data.end.double()})
    schedule, batch = [(1e-2, 1), (3e-3, 1)], 8
    fit_readers(stack, data64, feats, schedule=schedule, batch_size=batch, seed=3)
    gen = torch.Generator().manual_seed(3)  # fit_readers' generator: the minibatch partition of each epoch
    partitions = [minibatches(len(data), batch, generator=gen) for _ in schedule]
    for m, (name, seed) in enumerate(zip(stack.member_names, stack.seeds)):
        reader = _reader(len(data.words), seed, global_gate=variants[name].global_gate, **config).double()
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        for (lr, _), partition in zip(schedule, partitions):
            opt = torch.optim.Adam(reader.parameters(), lr=lr)  # a fresh Adam per stage
            for idx in partition:
                rows = order[idx]
                ps, pe, _ = reader(data.question[rows], data.q_mask[rows], data.passages[rows], data.p_mask[rows],
                                   feats[rows])
                loss = (LOSSES["focal"](ps, data64.start[rows], data.p_mask[rows])
                        + LOSSES["focal"](pe, data64.end[rows], data.p_mask[rows])) / 2
                opt.zero_grad()
                loss.backward()
                opt.step()
        for pname, p in reader.named_parameters():
            torch.testing.assert_close(stack.members[pname.replace(".", ":")][m], p, rtol=1e-7, atol=1e-9)


def test_feature_weights_of_members_without_features_never_move():
    data = make_multipassage_qa(16, seed=2)
    feats = match_features(data.question, data.q_mask, data.passages, data.p_mask)
    stack = ReaderStack(len(data.words), {"f": Variant(), "no f": Variant(hand_features=False)}, seeds=(0,),
                        n_features=4, **SMALL)
    before = stack.members["p_in:weight"].detach().clone()
    fit_readers(stack, data, feats, schedule=[(1e-2, 1)], batch_size=8)
    after = stack.members["p_in:weight"]
    f_cols = slice(after.shape[-1] - 4, None)  # the last 4 inputs of the input layer are the features
    assert torch.equal(after[1, :, f_cols], before[1, :, f_cols])
    assert not torch.equal(after[0, :, f_cols], before[0, :, f_cols])
    assert not torch.equal(after[1], before[1])


def test_fit_readers_returns_curves_and_leaves_the_global_generator_alone():
    data = make_multipassage_qa(32, seed=8)
    held = make_multipassage_qa(8, seed=9)
    stack = ReaderStack(len(data.words), {"full": Variant(), "unk": Variant(unk_rate=0.2)}, seeds=(0, 1), **SMALL)
    state = torch.get_rng_state()
    curves = fit_readers(stack, data, schedule=[(1e-2, 2), (1e-3, 1)], batch_size=8, heldout=(held, None))
    assert torch.equal(torch.get_rng_state(), state)
    assert set(curves) == {"train", "heldout"}
    assert curves["train"].shape == curves["heldout"].shape == (3, 4)
    assert (curves["train"][-1] < curves["train"][0]).all()
    assert not stack.training
    # same seed, same result
    again = ReaderStack(len(data.words), {"full": Variant(), "unk": Variant(unk_rate=0.2)}, seeds=(0, 1), **SMALL)
    torch.testing.assert_close(fit_readers(again, data, schedule=[(1e-2, 2), (1e-3, 1)], batch_size=8)["train"],
                               curves["train"])


def test_unk_augmentation_replaces_about_its_share_of_real_tokens():
    data = make_multipassage_qa(64, seed=0)
    seen = {}

    def spy(q, qm, p, pm, f):
        seen["q"], seen["p"] = q, p
        zeros = torch.zeros(p.shape, requires_grad=True)
        return zeros, zeros, zeros[..., 0]

    loss = TaggingLoss(data, seeds=(0, 1), unk_rate=[0.0, 0.3])
    loss(spy, torch.arange(64), torch.arange(64), generator=torch.Generator().manual_seed(0), epoch=0)
    p, pm = seen["p"], data.p_mask[loss.order]
    assert ((p == 1) & pm)[0].sum() == 0  # member 0: no UNK
    share = ((p == 1) & pm)[1].sum() / pm[1].sum()
    assert 0.27 < share < 0.33
    assert (p[~pm] == 0).all()  # padding stays padding


def test_short_training_gives_non_trivial_predictions():
    train = make_multipassage_qa(300, seed=11)
    test = make_multipassage_qa(60, seed=12)
    ftr = match_features(train.question, train.q_mask, train.passages, train.p_mask)
    fte = match_features(test.question, test.q_mask, test.passages, test.p_mask)
    stack = ReaderStack(len(train.words), {"full": Variant()}, seeds=(0,), d=16, d_emb=16, n_features=4)
    curves = fit_readers(stack, train, ftr, schedule=[(2e-2, 3), (2e-3, 1)], batch_size=16)
    assert curves["train"][-1, 0] < curves["train"][0, 0]
    ps, pe, _ = reader_probabilities(stack, test, fte)
    assert ps.shape == (1, *test.passages.shape) and ps.max() > 0.3  # not the all-zero tagger
    score = sogou_score(decode_answers(test, ps[0], pe[0]), [[a] for a in test.answers])
    assert score["accuracy"] > 0.3  # chance is far below: a random span of a random passage


# ---------------------------------------------------------------------------------------------
# decoding


def test_decode_answers_is_extract_then_vote_per_question():
    data = make_multipassage_qa(6, seed=1)
    g = torch.Generator().manual_seed(0)
    ps = torch.rand(data.passages.shape, generator=g) * data.p_mask
    pe = torch.rand(data.passages.shape, generator=g) * data.p_mask
    preds = decode_answers(data, ps, pe, threshold=0.5, voting="sum_sq")
    for k in range(len(data)):
        cands = extract_candidates(data.passages[k], ps[k], pe[k], data.p_mask[k], threshold=0.5)
        assert preds[k] == pick_answer(cands, "sum_sq")
    # nothing above the threshold: the best product-scored span is returned instead
    fallback = decode_answers(data, ps * 0.05, pe * 0.05, threshold=0.1)
    assert all(isinstance(a, tuple) and a for a in fallback)


def test_all_combinations_of_span_rule_and_voting_decode_perfect_taggers():
    data = make_multipassage_qa(3, seed=1)
    ps = data.start * 0.9
    pe = data.end * 0.9
    for span_rule, voting in itertools.product(("product", "sqrt"), VOTING):
        preds = decode_answers(data, ps, pe, span_rule=span_rule, voting=voting)
        assert preds == data.answers  # perfect taggers decode the labelled answers


# ---------------------------------------------------------------------------------------------
# the recurrent encoder


def test_encoders_share_a_call_signature():
    torch.manual_seed(0)
    x = torch.randn(2, 10, 8)
    mask = torch.arange(10)[None, :] < torch.tensor([10, 3])[:, None]
    for enc in (DGCNNEncoder(8, (1, 2)), BiLSTMEncoder(8, 1)):
        y = enc(x, mask)
        assert y.shape == x.shape and (y[~mask] == 0).all()


# ---------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_raise_naming_the_argument():
    data = make_multipassage_qa(4, seed=0)
    with pytest.raises(ValueError, match="n_passages"):
        make_multipassage_qa(3, n_passages=1)
    with pytest.raises(ValueError, match="seed"):
        make_multipassage_qa(3, seed=-1)
    with pytest.raises(ValueError, match="n_questions"):
        make_multipassage_qa(0)
    with pytest.raises(ValueError, match="passage_len"):
        make_multipassage_qa(3, passage_len=(12, 20))
    with pytest.raises(ValueError, match="unk_rate"):
        Variant(unk_rate=1.0)
    with pytest.raises(TypeError, match="global_gate"):
        Variant(global_gate=0)
    with pytest.raises(ValueError, match="variants"):
        ReaderStack(10, {}, seeds=(0,))
    with pytest.raises(ValueError, match="seeds"):
        ReaderStack(10, {"a": Variant()}, seeds=())
    with pytest.raises(ValueError, match="seeds"):
        ReaderStack(10, {"a": Variant()}, seeds=(-1,))
    with pytest.raises(TypeError, match="variants"):
        ReaderStack(10, {"a": {"global_gate": False}}, seeds=(0,))
    with pytest.raises(ValueError, match="global_gate"):
        ReaderStack(10, {"a": Variant()}, seeds=(0,), global_gate=False)
    stack = ReaderStack(len(data.words), {"a": Variant()}, seeds=(0, 1), **SMALL)
    with pytest.raises(ValueError, match="members"):
        stack(data.question[None], data.q_mask[None], data.passages[None], data.p_mask[None])
    with pytest.raises(ValueError, match="variant"):
        stack.members_of("b")
    with pytest.raises(ValueError, match="values"):
        stack.by_variant(torch.zeros(3))
    with pytest.raises(TypeError, match="stack"):
        fit_readers(DGCNNReader(len(data.words)), data, schedule=[(1e-3, 1)], batch_size=2)
    with pytest.raises(ValueError, match="loss"):
        fit_readers(stack, data, schedule=[(1e-3, 1)], batch_size=2, loss="hinge")
    with pytest.raises(ValueError, match="schedule"):
        fit_readers(stack, data, schedule=[], batch_size=2)
    with pytest.raises(ValueError, match="schedule"):
        fit_readers(stack, data, schedule=[(0.0, 1)], batch_size=2)
    with pytest.raises(ValueError, match="features"):
        TaggingLoss(data, torch.zeros(3, 4, 32, 4), seeds=(0,))
    with pytest.raises(ValueError, match="unk_rate"):
        TaggingLoss(data, seeds=(0, 1), unk_rate=[0.1])
    with pytest.raises(ValueError, match="p_start"):
        decode_answers(data, data.start[:, :2], data.end[:, :2])
    with pytest.raises(ValueError, match="d"):
        BiLSTMEncoder(5)


def test_best_constant_tagger_minimises_the_loss_of_a_constant_prediction():
    data = make_multipassage_qa(40, seed=3)
    p, value = best_constant_tagger(data)

    def loss_at(q):  # the taggers' loss when both predict q at every real token
        const = torch.full(data.start.shape, q, dtype=D64)
        start, end = data.start.double(), data.end.double()
        return ((LOSSES["focal"](const, start, data.p_mask) + LOSSES["focal"](const, end, data.p_mask)) / 2).item()

    assert loss_at(p) == pytest.approx(value, rel=1e-9)
    assert loss_at(p) <= min(loss_at(p * 0.9), loss_at(p * 1.1))
    p_bce, _ = best_constant_tagger(data, "bce")
    assert p_bce == pytest.approx(data.summary()["start_tags"], abs=1e-5)  # cross-entropy: the tag rate
    with pytest.raises(ValueError, match="loss"):
        best_constant_tagger(data, "hinge")

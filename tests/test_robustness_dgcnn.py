"""Bad input to kexue.dgcnn and kexue.experiments.dgcnn (issue 22), plus the review's worst cases.

See tests/_probe.py for what is checked; each case is one valid call and the arguments to break.
The regression tests at the end pin the robustness review's findings for these modules.
"""

from __future__ import annotations

import pytest
import torch

from kexue import dgcnn
from kexue.experiments import dgcnn as X
from tests._probe import Arg, Case, inventory_test, probe_tests

B, S, C = 2, 7, 4


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x() -> torch.Tensor:
    return torch.randn(B, S, C, generator=_gen())


def _mask() -> torch.Tensor:
    return torch.arange(S) < torch.tensor([[S], [4]])  # left-aligned, lengths 7 and 4


def _probs(seed: int = 1) -> torch.Tensor:
    return torch.rand(B, 3, S, generator=_gen(seed))


def _pmask() -> torch.Tensor:
    return (torch.arange(S) < torch.tensor([[[S], [5], [3]]])).expand(B, 3, S).clone()


_DATA: dict[str, X.MultiPassageQA] = {}


def _data() -> X.MultiPassageQA:
    if "qa" not in _DATA:
        _DATA["qa"] = X.make_multipassage_qa(4, n_passages=2, passage_len=(16, 18), n_fillers=10, n_entities=4,
                                             n_relations=2, n_values=6, seed=0)
    return _DATA["qa"]


def _features() -> torch.Tensor:
    d = _data()
    return dgcnn.match_features(d.question, d.q_mask, d.passages, d.p_mask)


SMALL = {"d": 8, "d_emb": 8, "d_pos": 4, "q_dilations": (1,), "p_dilations": (1, 2), "max_len": 32}


def _reader(**kw) -> dgcnn.DGCNNReader:
    torch.manual_seed(0)
    return dgcnn.DGCNNReader(len(_data().words), **{**SMALL, "n_features": 4, **kw}).eval()


def _stack() -> X.ReaderStack:
    return X.ReaderStack(len(_data().words), {"a": X.Variant(), "b": X.Variant(global_gate=False)}, seeds=(0,),
                         **SMALL, n_features=4).eval()


def _reader_inputs() -> dict:
    d = _data()
    return {"question": d.question, "q_mask": d.q_mask, "passages": d.passages, "p_mask": d.p_mask,
            "features": _features()}


READER_ARGS = {
    "question": Arg("index_tensor", ndim=(2,)), "q_mask": Arg("mask", ndim=(2,)),
    "passages": Arg("index_tensor", ndim=(3,)), "p_mask": Arg("mask", ndim=(3,)),
    "features": Arg("tensor", ndim=(4,)),
}
ANY_RANK = {"one dimension too many": "leading dimensions are valid (documented: (..., seq, d))"}
INT_TARGETS = {"an int64 tensor": "integer 0/1 targets are promoted to p's dtype (documented)",
               "a bool tensor": "bool targets are promoted to p's dtype (documented)"}
SEQUENCE_OK = {"an empty sequence": "an empty sequence is a valid input with a defined answer",
               "a 0 entry": "any hashable token is valid", "a float entry": "any hashable token is valid"}
AS_VALUE = {"an unknown name": "any str is a valid value here"}
DATA = Arg("choice", name="data")  # None, a str, an int: not a MultiPassageQA
CANDIDATES = [{(5,): 0.5, (6,): 0.1}, {(5,): 0.2}, {}]


def _gated_conv_case(name: str) -> Case:
    fn = getattr(dgcnn, name)
    return Case(name, lambda: (fn, {"x": _x(), "weight": torch.randn(2 * C, C, 3, generator=_gen(1)),
                                    "bias": torch.zeros(2 * C), "dilation": 2, "mask": _mask(),
                                    "gate_noise": torch.zeros(B, S, C)}),
                {"x": Arg("tensor", ndim=(3,), nonempty=False), "weight": Arg("tensor", ndim=(3,)),
                 "bias": Arg("tensor", ndim=(1,), optional=True), "dilation": Arg("int", minimum=1),
                 "mask": Arg("mask", ndim=(2,), optional=True), "gate_noise": Arg("tensor", ndim=(3,), optional=True)})


def _attention_case(name: str) -> Case:
    fn = getattr(dgcnn, name)
    return Case(name, lambda: (fn, {"x": _x(), "weight": torch.randn(5, C, generator=_gen(1)),
                                    "alpha": torch.randn(5, generator=_gen(2)), "mask": _mask()}),
                {"x": Arg("tensor", ndim=(3,), nonempty=False), "weight": Arg("tensor", ndim=(2,)),
                 "alpha": Arg("tensor", ndim=(1,)), "mask": Arg("mask", ndim=(2,), optional=True)},
                skip={"x": ANY_RANK})


def _loss_case(name: str, **extra: Arg) -> Case:
    fn = getattr(dgcnn, name)
    values = {"alpha": 0.25, "gamma": 2.0}
    return Case(name, lambda: (fn, {"p": _probs(), "y": (_probs(2) > 0.8).float(), "mask": _pmask(), "eps": 1e-7,
                                    **{k: values[k] for k in extra}}),
                {"p": Arg("tensor", finite=True), "y": Arg("tensor", finite=True), "mask": Arg("mask", optional=True),
                 "eps": Arg("real", low=0.0, open_low=True, high=0.5), **extra},
                skip={"y": INT_TARGETS})


def _span_args(**extra: Arg) -> dict[str, Arg]:
    return {"p_start": Arg("tensor", finite=True), "p_end": Arg("tensor", finite=True),
            "mask": Arg("mask", optional=True), "max_len": Arg("int", minimum=1), **extra}


CASES = [
    _gated_conv_case("gated_conv1d"),
    _gated_conv_case("gated_conv1d_reference"),
    Case("receptive_field", lambda: (dgcnn.receptive_field, {"kernel_size": 3, "dilations": (1, 2, 4)}),
         {"kernel_size": Arg("int", minimum=1), "dilations": Arg("int_seq")},
         skip={"dilations": {"an empty sequence": "no layer sees one position (documented)"}}),
    Case("GatedConv1d", lambda: (dgcnn.GatedConv1d, {"d_in": C, "d_out": C, "kernel_size": 3, "dilation": 2,
                                                     "gate_noise": 0.1}),
         {"d_in": Arg("int", minimum=1), "d_out": Arg("int", minimum=1), "kernel_size": Arg("int", minimum=1),
          "dilation": Arg("int", minimum=1), "gate_noise": Arg("real", low=0.0)}),
    Case("GatedConv1d.forward", lambda: (dgcnn.GatedConv1d(C, C, gate_noise=0.1), {"x": _x(), "mask": _mask()}),
         {"x": Arg("tensor", ndim=(3,), nonempty=False), "mask": Arg("mask", ndim=(2,), optional=True)}),
    Case("DGCNNEncoder", lambda: (dgcnn.DGCNNEncoder, {"d": C, "dilations": (1, 2), "kernel_size": 3,
                                                       "gate_noise": 0.1}),
         {"d": Arg("int", minimum=1), "dilations": Arg("int_seq"), "kernel_size": Arg("int", minimum=1),
          "gate_noise": Arg("real", low=0.0)}),
    Case("DGCNNEncoder.forward", lambda: (dgcnn.DGCNNEncoder(C, (1, 2), gate_noise=0.1), {"x": _x(), "mask": _mask()}),
         {"x": Arg("tensor", ndim=(3,), nonempty=False), "mask": Arg("mask", ndim=(2,), optional=True)}),
    _attention_case("attention_weights"),
    _attention_case("attention_pooling"),
    Case("AttentionPooling1d", lambda: (dgcnn.AttentionPooling1d, {"d": C, "h": 5}),
         {"d": Arg("int", minimum=1), "h": Arg("int", minimum=1)}),
    Case("AttentionPooling1d.forward", lambda: (dgcnn.AttentionPooling1d(C, 5), {"x": _x(), "mask": _mask()}),
         {"x": Arg("tensor", ndim=(3,), nonempty=False), "mask": Arg("mask", ndim=(2,), optional=True)},
         skip={"x": ANY_RANK}),
    Case("sinusoidal_position_embedding", lambda: (dgcnn.sinusoidal_position_embedding,
                                                   {"length": 5, "dim": 4, "base": 100.0, "dtype": torch.float32}),
         {"length": Arg("int", minimum=1), "dim": Arg("int", minimum=1), "base": Arg("real", low=0.0, open_low=True),
          "dtype": Arg("dtype")}),
    _loss_case("binary_cross_entropy"),
    _loss_case("binary_focal_loss", alpha=Arg("real", low=0.0, high=1.0), gamma=Arg("real", low=0.0)),
    Case("DGCNNReader", lambda: (dgcnn.DGCNNReader, {"vocab_size": 30, "d": 8, "d_emb": 8, "d_pos": 4,
                                                     "n_features": 4, "q_dilations": (1,), "p_dilations": (1, 2),
                                                     "kernel_size": 3, "global_gate": True, "gate_noise": 0.1,
                                                     "max_len": 32}),
         {"vocab_size": Arg("int", minimum=1), "d": Arg("int", minimum=1), "d_emb": Arg("int", minimum=1),
          "d_pos": Arg("int", minimum=0), "n_features": Arg("int", minimum=0), "q_dilations": Arg("int_seq"),
          "p_dilations": Arg("int_seq"), "kernel_size": Arg("int", minimum=1), "global_gate": Arg("flag"),
          "gate_noise": Arg("real", low=0.0), "max_len": Arg("int", minimum=1)}),
    Case("DGCNNReader.forward", lambda: (_reader(), {**_reader_inputs(), "gated": True}),
         {**READER_ARGS, "gated": Arg("flag")}),
    Case("edit_distance", lambda: (dgcnn.edit_distance, {"a": [1, 2, 3], "b": (2, 3)}),
         {"a": Arg("int_seq"), "b": Arg("int_seq")}, skip={"a": SEQUENCE_OK, "b": SEQUENCE_OK}),
    Case("match_features", lambda: (dgcnn.match_features, {k: v for k, v in _reader_inputs().items() if k != "features"}),
         {k: v for k, v in READER_ARGS.items() if k != "features"},
         skip={"question": {"an id far out of range": "token ids are compared, never looked up"},
               "passages": {"an id far out of range": "token ids are compared, never looked up"}}),
    Case("match_features_reference", lambda: (dgcnn.match_features_reference,
                                              {"question": [5, 6], "passages": [[5, 9, 6], [9, 8]]}),
         {"question": Arg("int_seq"), "passages": Arg("int_seq")},
         skip={"question": SEQUENCE_OK, "passages": {"an empty sequence": "no passage gives no features"}}),
    Case("span_scores", lambda: (dgcnn.span_scores, {"p_start": _probs(1), "p_end": _probs(2), "mask": _pmask(),
                                                     "max_len": 3, "rule": "sqrt"}),
         _span_args(rule=Arg("choice")), skip={"p_start": ANY_RANK, "p_end": ANY_RANK}),
    Case("best_spans", lambda: (dgcnn.best_spans, {"p_start": _probs(1), "p_end": _probs(2), "mask": _pmask(),
                                                   "max_len": 3}),
         _span_args(), skip={"p_start": ANY_RANK, "p_end": ANY_RANK}),
    Case("extract_candidates", lambda: (dgcnn.extract_candidates,
                                        {"tokens": torch.randint(2, 9, (B, 3, S), generator=_gen()),
                                         "p_start": _probs(1), "p_end": _probs(2), "mask": _pmask(), "max_len": 3,
                                         "threshold": 0.1, "rule": "product"}),
         {**_span_args(threshold=Arg("real", low=0.0, high=1.0), rule=Arg("choice")),
          "tokens": Arg("index_tensor", ndim=(2, 3)), "mask": Arg("mask")},
         skip={"tokens": {"a negative id": "token ids are copied into the answers, never looked up",
                          "an id far out of range": "as above"}}),
    Case("vote", lambda: (dgcnn.vote, {"candidates": CANDIDATES, "rule": "sum_sq"}),
         {"candidates": Arg("choice", name="candidates"), "rule": Arg("choice")}),
    Case("pick_answer", lambda: (dgcnn.pick_answer, {"candidates": CANDIDATES, "rule": "smoothed"}),
         {"candidates": Arg("choice", name="candidates"), "rule": Arg("choice")}),
    Case("normalize_answer", lambda: (dgcnn.normalize_answer, {"text": "Beijing!"}),
         {"text": Arg("choice", name="text")}, skip={"text": AS_VALUE}),
    Case("answer_f1", lambda: (dgcnn.answer_f1, {"prediction": "北京市", "references": ["北京"]}),
         {"prediction": Arg("choice", optional=True), "references": Arg("choice")}, skip={"prediction": AS_VALUE}),
    Case("sogou_score", lambda: (dgcnn.sogou_score, {"predictions": ["北京", None], "references": [["北京"], ["上海"]]}),
         {"predictions": Arg("choice"), "references": Arg("choice")}),
    # kexue.experiments.dgcnn
    Case("make_multipassage_qa", lambda: (X.make_multipassage_qa,
                                          {"n_questions": 3, "n_passages": 2, "passage_len": (16, 18), "n_fillers": 10,
                                           "n_entities": 4, "n_relations": 2, "n_values": 6, "seed": 0}),
         {"n_questions": Arg("int", minimum=1), "n_passages": Arg("int", minimum=2), "passage_len": Arg("int_seq"),
          "n_fillers": Arg("int", minimum=1), "n_entities": Arg("int", minimum=2),
          "n_relations": Arg("int", minimum=2), "n_values": Arg("int", minimum=6), "seed": Arg("int", minimum=0)}),
    Case("Variant", lambda: (X.Variant, {"hand_features": True, "global_gate": False, "unk_rate": 0.1}),
         {"hand_features": Arg("flag"), "global_gate": Arg("flag"), "unk_rate": Arg("real", low=0.0, high=1.0)}),
    Case("ReaderStack", lambda: (X.ReaderStack, {"vocab_size": 30, "variants": {"a": X.Variant()}, "seeds": (0, 1),
                                                 **SMALL}),
         {"vocab_size": Arg("int", minimum=1), "variants": Arg("choice", name="variants"), "seeds": Arg("int_seq")},
         skip={"seeds": {"a 0 entry": "0 is a seed"}}),
    Case("ReaderStack.forward", lambda: (_stack(), _reader_inputs()), READER_ARGS),
    Case("TaggingLoss", lambda: (X.TaggingLoss, {"data": _data(), "features": _features(), "seeds": (0, 1),
                                                 "loss": "bce", "unk_rate": 0.1}),
         {"data": DATA, "features": Arg("tensor", ndim=(4,), optional=True), "seeds": Arg("int_seq"),
          "loss": Arg("choice"), "unk_rate": Arg("real", low=0.0, high=1.0)},
         skip={"seeds": {"a 0 entry": "0 is a seed"}}),
    Case("fit_readers", lambda: (X.fit_readers, {"stack": _stack(), "data": _data(), "features": _features(),
                                                 "schedule": [(1e-2, 1)], "batch_size": 2, "loss": "focal",
                                                 "seed": 0}),
         {"stack": Arg("module"), "data": DATA, "features": Arg("tensor", ndim=(4,), optional=True),
          "batch_size": Arg("int", minimum=1), "loss": Arg("choice"), "seed": Arg("int", minimum=0)}),
    Case("reader_probabilities", lambda: (X.reader_probabilities, {"model": _reader(), "data": _data(),
                                                                   "features": _features(), "batch_size": 3}),
         {"model": Arg("module"), "data": DATA, "features": Arg("tensor", ndim=(4,), optional=True),
          "batch_size": Arg("int", minimum=1)}),
    Case("decode_answers", lambda: (X.decode_answers, {"data": _data(), "p_start": torch.rand(4, 2, 18, generator=_gen(1)),
                                                       "p_end": torch.rand(4, 2, 18, generator=_gen(2)), "max_len": 3,
                                                       "threshold": 0.1, "span_rule": "product",
                                                       "voting": "smoothed"}),
         {"data": DATA, "p_start": Arg("tensor", ndim=(3,), finite=True), "p_end": Arg("tensor", ndim=(3,), finite=True),
          "max_len": Arg("int", minimum=1), "threshold": Arg("real", low=0.0, high=1.0),
          "span_rule": Arg("choice"), "voting": Arg("choice")}),
    Case("best_constant_tagger", lambda: (X.best_constant_tagger, {"data": _data(), "loss": "bce"}),
         {"data": DATA, "loss": Arg("choice")}),
    Case("BiLSTMEncoder", lambda: (X.BiLSTMEncoder, {"d": C, "num_layers": 1}),
         {"d": Arg("int", minimum=1), "num_layers": Arg("int", minimum=1)}),
    Case("BiLSTMEncoder.forward", lambda: (X.BiLSTMEncoder(C), {"x": _x(), "mask": _mask()}),
         {"x": Arg("tensor", ndim=(3,), nonempty=False), "mask": Arg("mask", ndim=(2,), optional=True)}),
]

EXEMPT = {
    "LOSSES": "a registry of the probed losses",
    "SPAN_SCORES": "a registry of elementwise span scores, called through span_scores (probed)",
    "VOTING": "a registry of voting rules, called through vote (probed)",
    "MultiPassageQA": "a dataclass of tensors built by make_multipassage_qa (probed)",
}

test_bad_input, test_bad_scalars = probe_tests(CASES)
test_dgcnn_inventory = inventory_test("kexue.dgcnn", [c for c in CASES if c.name.split(".")[0] in dgcnn.__all__],
                                      {k: v for k, v in EXEMPT.items() if k in dgcnn.__all__})
test_dgcnn_experiments_inventory = inventory_test("kexue.experiments.dgcnn",
                                                  [c for c in CASES if c.name.split(".")[0] in X.__all__],
                                                  {k: v for k, v in EXEMPT.items() if k in X.__all__})


# ----------------------------------------------------------------------------- the review's worst cases


def _right_aligned(mask: torch.Tensor) -> torch.Tensor:
    return mask.flip(-1)  # the same lengths, padding first


def test_reader_rejects_right_aligned_masks():
    # review S3: DGCNNReader.forward silently accepted masks with the padding first
    reader, args = _reader(), _reader_inputs()
    for name in ("q_mask", "p_mask"):
        bad = {**args, name: _right_aligned(args[name])}
        assert not torch.equal(bad[name], args[name])
        with pytest.raises(ValueError, match=f"{name} must be left-aligned"):
            reader(**bad)
        with pytest.raises(ValueError, match=f"{name} must be left-aligned"):
            _stack()(**bad)  # shared inputs
        per_member = {k: v.expand(2, *v.shape) for k, v in bad.items()}
        with pytest.raises(ValueError, match=f"{name} must be left-aligned"):
            _stack()(**per_member)  # one batch per member
        with pytest.raises(ValueError, match=f"{name} must be left-aligned"):
            dgcnn.match_features(**{k: v for k, v in bad.items() if k != "features"})


def test_reader_rejects_token_ids_outside_the_vocabulary_and_stray_features():
    reader, args = _reader(), _reader_inputs()
    for name in ("question", "passages"):
        for bad in (-1, len(_data().words)):
            ids = args[name].clone()
            ids.view(-1)[0] = bad
            with pytest.raises(ValueError, match=rf"{name} must be token ids \[0, {len(_data().words)}\)"):
                reader(**{**args, name: ids})
    with pytest.raises(ValueError, match="features must be None: the reader was built with n_features=0"):
        _reader(n_features=0)(**args)


@pytest.mark.parametrize("n_passages", [2, 4, 8])
@pytest.mark.parametrize("seed", range(5))
def test_synthetic_questions_have_an_answer_at_the_minimum_passage_length(n_passages, seed):
    # review S1: with passage_len=(12, 12) 4 of 50 questions had no passage holding their answer;
    # the documented minimum is now 16, room for two facts of up to 8 tokens
    data = X.make_multipassage_qa(200, n_passages=n_passages, passage_len=(16, 16), seed=seed)
    assert bool(data.has_answer.any(1).all())
    assert torch.equal(data.start.sum(-1) > 0, data.has_answer)  # a passage holds the answer iff it is tagged
    for k in range(0, 200, 37):  # and the tags mark the answer string
        p, i = (data.start[k] > 0).nonzero()[0].tolist()
        assert tuple(data.passages[k, p, i : i + len(data.answers[k])].tolist()) == data.answers[k]
    with pytest.raises(ValueError, match="passage_len"):
        X.make_multipassage_qa(2, passage_len=(15, 16))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5, 1.5])
def test_decoding_rejects_values_that_are_not_probabilities(bad):
    # review S3: extract_candidates and friends returned finite answers for NaN input
    data, ps, pe = _data(), torch.rand(4, 2, 18, generator=_gen(1)), torch.rand(4, 2, 18, generator=_gen(2))
    ps_bad = ps.clone()
    ps_bad[1, 0, 3] = bad
    with pytest.raises(ValueError, match="p_start must"):
        X.decode_answers(data, ps_bad, pe)
    with pytest.raises(ValueError, match="p_end must"):
        X.decode_answers(data, ps, ps_bad)
    with pytest.raises(ValueError, match="p_start must"):
        dgcnn.extract_candidates(data.passages, ps_bad, pe, data.p_mask)
    with pytest.raises(ValueError, match="p_end must"):
        dgcnn.best_spans(ps, ps_bad, data.p_mask)
    with pytest.raises(ValueError, match="p_start must"):
        dgcnn.span_scores(ps_bad, pe)
    with pytest.raises(ValueError, match="p must"):
        dgcnn.binary_focal_loss(ps_bad, (pe > 0.5).float())
    with pytest.raises(ValueError, match="y must"):
        dgcnn.binary_cross_entropy(ps, ps_bad)
    if not bad > 1:  # a vote score is any finite number >= 0
        with pytest.raises(ValueError, match="candidates' scores must be finite and >= 0"):
            dgcnn.pick_answer([{(5,): 0.5}, {(6,): bad}])


def test_decode_answers_rejects_probabilities_of_another_batch():
    # review S3: a third row of probabilities for two questions was silently ignored
    data = X.make_multipassage_qa(2, n_passages=2, passage_len=(16, 18), seed=0)
    with pytest.raises(ValueError, match=r"p_start must have the passages' shape \(2, 2, 18\)"):
        X.decode_answers(data, torch.rand(3, 2, 18), torch.rand(3, 2, 18))
    with pytest.raises(ValueError, match=r"p_end must have the passages' shape"):
        X.decode_answers(data, torch.rand(2, 2, 18), torch.rand(2, 2, 17))


def test_vote_rejects_scores_that_would_divide_by_zero():
    # two passages scoring -0.5: the smoothed rule divided by 1 + (-1) = 0 (ZeroDivisionError)
    with pytest.raises(ValueError, match="candidates' scores must be finite and >= 0"):
        dgcnn.vote([{"a": -0.5}, {"a": -0.5}], "smoothed")
    with pytest.raises(TypeError, match="candidates must hold one mapping"):
        dgcnn.vote([("a", 0.5)])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("which", ["reader", "stack"])
def test_reader_probabilities_restores_the_model_mode(training, which):
    # review: reader_probabilities switched the model to eval() and left it there
    model = (_reader() if which == "reader" else _stack()).train(training)
    out = X.reader_probabilities(model, _data(), _features(), batch_size=3)
    assert model.training is training
    again = X.reader_probabilities(model.eval(), _data(), _features())
    for a, b in zip(out, again):  # eval mode either way: no gate noise
        torch.testing.assert_close(a, b)


def test_losses_take_integer_targets_and_score_float16_in_float32():
    p = torch.tensor([[0.0, 0.3, 1.0], [0.9, 0.5, 1.0]])
    y = torch.tensor([[0, 0, 1], [1, 0, 1]])
    for loss in (dgcnn.binary_cross_entropy, dgcnn.binary_focal_loss):
        ref = loss(p, y.float())
        for targets in (y, y.bool()):  # promoted, never truncated
            torch.testing.assert_close(loss(p, targets), ref)
        half = loss(p.half(), y.half())  # 1 - 1e-7 rounds to 1 in float16: log(0) before
        assert half.dtype == torch.float16 and torch.isfinite(half)
        torch.testing.assert_close(half.float(), ref, atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match=r"y must hold targets in \[0, 1\]"):
        dgcnn.binary_cross_entropy(p, y * 2)


def test_gated_conv_reference_checks_like_the_fast_path():
    # review: gated_conv1d_reference had none of gated_conv1d's checks (68% unclear errors)
    x, w = _x(), torch.randn(2 * C, C, 3)
    for kwargs, word in (({"bias": torch.zeros(3)}, "bias"), ({"mask": _mask().float()}, "mask"),
                         ({"gate_noise": torch.zeros(B, S, 3)}, "gate_noise"), ({"dilation": 0}, "dilation")):
        for fn in (dgcnn.gated_conv1d, dgcnn.gated_conv1d_reference):
            with pytest.raises((TypeError, ValueError), match=word):
                fn(x, w, **kwargs)
    with pytest.raises(TypeError, match="weight must have x's dtype"):
        dgcnn.gated_conv1d(x.double(), w)
    torch.testing.assert_close(dgcnn.gated_conv1d_reference(x, w, mask=_mask()), dgcnn.gated_conv1d(x, w, mask=_mask()))


def test_bilstm_encoder_checks_its_mask():
    # review S3: a float mask and a mask of another batch were silently accepted
    enc = X.BiLSTMEncoder(C)
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        enc(_x(), _mask().float())
    with pytest.raises(ValueError, match=r"mask must have x's \(batch, seq\) shape"):
        enc(_x(), _mask()[:1])
    with pytest.raises(TypeError, match="x must have the encoder's dtype"):
        enc(_x().double())


def test_match_features_rejects_negative_ids():
    # -1 is the padding placeholder inside match_features: a negative id would match padding
    args = {k: v for k, v in _reader_inputs().items() if k != "features"}
    ids = args["passages"].clone()
    ids[0, 0, 0] = -1
    with pytest.raises(ValueError, match="passages must be token ids >= 0"):
        dgcnn.match_features(**{**args, "passages": ids})

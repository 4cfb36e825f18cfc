"""Tests for dropoutlab.analysis.recurrent_experiments (notebook 11) and the two decided behaviours.

Small synthetic corpora and scikit-learn's bundled digits; one thread; well under a minute.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch
from torch import nn

from dropoutlab.analysis import recurrent_experiments as rx
from dropoutlab.analysis.recurrent_experiments import (
    CharLM,
    DropoutLSTM,
    LanguageModelConfig,
    SequenceConfig,
    char_windows,
    concrete_k_comparison,
    embedding_max_norm_comparison,
    language_model_study,
    locked_mask_check,
    mc_nll_curve,
    sequence_digits_study,
)
from dropoutlab.corpus import Corpus
from dropoutlab.data import load_dataset
from dropoutlab.train import TrainConfig, evaluate
from dropoutlab.variants.concrete import ConcreteDropout
from dropoutlab.variants.recurrent import EmbeddingDropout, LockedDropout

RATES = dict(p_input=0.25, p_hidden=0.25, p_output=0.25, p_weight=0.25, p_embed=0.1)


def _toy(text: str, split: str, vocab: tuple[str, ...]) -> Corpus:
    index = {c: i for i, c in enumerate(vocab)}
    return Corpus(name="toy", split=split, text=text, ids=torch.tensor([index[c] for c in text]), vocab=vocab)


@pytest.fixture(scope="module")
def toy_corpora():
    text = "abcdefgh\n" * 400
    vocab = tuple(sorted(set(text)))
    return _toy(text[:2700], "train", vocab), _toy(text[:450], "val", vocab), _toy(text[:450], "test", vocab)


def _lm_study(corpora, arms=("none", "variational"), seeds=(0,), epochs=3):
    config = LanguageModelConfig(training=TrainConfig(epochs=epochs, batch_size=16, lr=0.01, grad_clip=1.0),
                                 seeds=list(seeds), embed_dim=8, hidden=16, bptt=10, eval_length=30, mc_samples=3,
                                 arms=list(arms), **RATES)
    return language_model_study(*corpora, config)


# ----------------------------------------------------------------------------- the model


def test_step_loop_equals_the_fused_lstm_and_uses_the_recurrent_mask():
    torch.manual_seed(0)
    rnn = DropoutLSTM(5, 7, "variational", p_hidden=0.5)
    x = torch.randn(3, 6, 5)
    ones = torch.ones(3, 7)
    torch.testing.assert_close(rx._lstm_loop(rnn.lstm, x, ones), rnn.lstm(x)[0], atol=1e-6, rtol=1e-5)
    rnn.eval()
    torch.testing.assert_close(rnn(x), rnn.lstm(x)[0])  # eval: no mask, the fused kernel
    rnn.train()
    torch.manual_seed(1)
    out = rnn(x)
    torch.manual_seed(1)
    mask = rnn.recurrent_mask(3, x)
    assert set(mask.unique().tolist()) <= {0.0, 2.0} and (mask == 0).any()
    torch.testing.assert_close(out, rx._lstm_loop(rnn.lstm, x, mask))
    assert not torch.allclose(out, rnn.lstm(x)[0])


def test_every_arm_starts_from_the_same_weights():
    def raw(arm):
        torch.manual_seed(3)
        model = CharLM(11, 4, 6, arm, **RATES)
        embedding = model.embed.embedding if isinstance(model.embed, EmbeddingDropout) else model.embed
        return [embedding.weight, *model.rnn.lstm.parameters(), *model.decoder.parameters()]

    reference = raw("none")
    for arm in rx.ARMS[1:]:
        for a, b in zip(reference, raw(arm), strict=True):
            torch.testing.assert_close(a, b)


def test_arms_use_the_packages_modules():
    naive, var, wd = (CharLM(11, 4, 6, arm, **RATES) for arm in ("naive", "variational", "weight-drop"))
    assert type(naive.rnn.drop_input).__name__ == "InvertedDropout" and not isinstance(naive.embed, EmbeddingDropout)
    assert isinstance(var.rnn.drop_hidden, LockedDropout) and isinstance(var.embed, EmbeddingDropout)
    assert type(wd.rnn.rnn).__name__ == "WeightDrop" and wd.rnn.drop_hidden is None


def test_char_windows_shift_by_one():
    w = char_windows(torch.arange(23), 5)
    assert w.x.shape == w.y.shape == (4, 5) and len(w) == 4
    assert torch.equal(w.y, w.x + 1)
    with pytest.raises(ValueError, match="length=30 leaves no window"):
        char_windows(torch.arange(23), 30)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(seeds=[0, 0]), r"LanguageModelConfig\.seeds must be"),
        (dict(arms=["naive", "zoneout"]), r"LanguageModelConfig\.arms must be"),
        (dict(arms=["naive", "naive"]), r"LanguageModelConfig\.arms must be distinct"),
        (dict(p_input=1.0), r"LanguageModelConfig\.p_input must be"),
        (dict(p_embed=-0.1), r"LanguageModelConfig\.p_embed must be"),
        (dict(hidden=0), r"LanguageModelConfig\.hidden must be"),
        (dict(mc_samples=0), r"LanguageModelConfig\.mc_samples must be"),
        (dict(bptt=1.5), r"LanguageModelConfig\.bptt must be"),
        (dict(training="adam"), r"LanguageModelConfig\.training must be a TrainConfig"),
        (dict(training=TrainConfig(task="regression")), r"LanguageModelConfig\.training\.task must be"),
        (dict(threads=0), r"LanguageModelConfig\.threads must be"),
    ],
)
def test_language_model_config_refuses_bad_settings_naming_them(change, message):
    kwargs = dict(
        training=TrainConfig(epochs=1), seeds=[0], embed_dim=4, hidden=4, bptt=5, eval_length=10, mc_samples=2, **RATES
    )
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        LanguageModelConfig(**kwargs)


def test_study_configs_are_canonical_and_frozen():
    config = LanguageModelConfig(training=TrainConfig(epochs=1), seeds=[0, 2], embed_dim=4, hidden=4, bptt=5,
                                 eval_length=10, mc_samples=2, arms="naive", **RATES)
    assert config.seeds == (0, 2) and config.arms == ("naive",) and config.training.eval_splits == ("val",)
    sequence = SequenceConfig(training=TrainConfig(epochs=1), seeds=[1], hidden=4, p_input=0.1, p_hidden=0.1,
                              p_output=0.1)
    assert sequence.training.eval_splits == ("test",) and sequence.arms == ("none", "naive", "variational")
    with pytest.raises(ValueError, match=r"SequenceConfig\.p_output must be"):
        SequenceConfig(training=TrainConfig(), seeds=[0], hidden=4, p_input=0.1, p_hidden=0.1, p_output=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden = 8


def test_other_arguments_are_refused_naming_them(toy_corpora):
    config = LanguageModelConfig(training=TrainConfig(), seeds=[0], embed_dim=4, hidden=4, bptt=5, eval_length=10,
                                 mc_samples=2, **RATES)
    with pytest.raises(ValueError, match="train, val and test must be Corpus"):
        language_model_study("x", *toy_corpora[1:], config)
    with pytest.raises(ValueError, match="config must be a LanguageModelConfig"):
        language_model_study(*toy_corpora, TrainConfig())
    sequence = SequenceConfig(training=TrainConfig(), seeds=[0], hidden=4, p_input=0.1, p_hidden=0.1, p_output=0.1)
    with pytest.raises(ValueError, match=r"data has no split\(s\) \['test'\]"):
        sequence_digits_study({"train": None}, sequence)
    with pytest.raises(ValueError, match="arm must be one of"):
        CharLM(5, 4, 4, "zoneout")
    with pytest.raises(ValueError, match="model has no LockedDropout"):
        locked_mask_check(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="steps must be"):
        concrete_k_comparison(8, [])
    with pytest.raises(ValueError, match="max_norm must be"):
        embedding_max_norm_comparison(max_norm=0)


# ----------------------------------------------------------------------------- studies


def test_language_model_learns_and_is_reproducible(toy_corpora):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first = _lm_study(toy_corpora)
        assert torch.get_num_threads() == 2  # the study's one thread is restored afterwards
    finally:
        torch.set_num_threads(before)
    res = first.results.set_index("arm")
    # a period-9 text: a model that learned it predicts almost every character (chance: perplexity 9)
    assert res.loc["none", "test_ppl"] < 2.0 and res.loc["variational", "test_ppl"] < 4.0
    assert math.isnan(res.loc["none", "test_mc_ppl"]) and math.isfinite(res.loc["variational", "test_mc_ppl"])
    assert set(first.history["split"]) == {"train_running", "val"}
    assert first.mc_curve["samples"].tolist() == [1, 2, 3] and (first.mc_curve["arm"] == "variational").all()
    second = _lm_study(toy_corpora)
    pd.testing.assert_frame_equal(first.results.drop(columns="seconds"), second.results.drop(columns="seconds"))


def test_mc_average_of_noiseless_passes_is_the_plain_cross_entropy(toy_corpora):
    torch.manual_seed(0)
    model = CharLM(len(toy_corpora[0].vocab), 4, 8, "naive", p_input=0.0, p_output=0.0)
    windows = char_windows(toy_corpora[2], 30)
    assert mc_nll_curve(model, windows, 3) == pytest.approx([evaluate(model, windows)["loss"]] * 3, rel=1e-5)
    noisy = CharLM(len(toy_corpora[0].vocab), 4, 8, "naive", p_input=0.5, p_output=0.5)
    torch.manual_seed(1)
    curve = mc_nll_curve(noisy, windows, 4)
    torch.manual_seed(1)
    assert mc_nll_curve(noisy, windows, 4) == pytest.approx(curve)  # the same passes: the same curve
    assert curve[-1] != pytest.approx(evaluate(noisy, windows)["loss"], rel=1e-5)
    assert curve[-1] < curve[0]  # averaging noisy passes beats one noisy pass


def test_sequence_study_learns_digits_and_is_reproducible():
    data = {"train": load_dataset("digits", "train"), "test": load_dataset("digits", "test")}
    config = SequenceConfig(training=TrainConfig(epochs=4, batch_size=32, lr=0.01), seeds=[0], hidden=16,
                            p_input=0.1, p_hidden=0.1, p_output=0.1, arms=["none", "variational"])
    first = sequence_digits_study(data, config)
    assert (first.results["test_error"] < 50).all()  # chance: 90 %
    second = sequence_digits_study(data, config)
    pd.testing.assert_frame_equal(first.results, second.results)


def test_locked_mask_check_passes_the_package_and_catches_both_bugs():
    model = CharLM(11, 4, 6, "variational", **RATES)
    good = locked_mask_check(model, batch=8, steps=12)
    assert good.value == 0.0 and len(good.table) == 3 and (good.table["distinct_samples"] > 0).all()
    assert good.example.shape == (4, 12, 4)

    class PerStep(LockedDropout):  # a new mask at every step: naive dropout in disguise
        def forward(self, x):
            return nn.functional.dropout(x, float(self.p), self.training)

    class BatchShared(LockedDropout):  # one mask for the whole batch (the axis confusion)
        def forward(self, x):
            keep = (torch.rand(1, 1, x.shape[2]) >= float(self.p)).float() / (1 - float(self.p))
            return x * keep

    model.rnn.drop_input = PerStep(0.25)
    assert locked_mask_check(model, batch=8, steps=12).value > 0
    model.rnn.drop_input = BatchShared(0.25)
    assert locked_mask_check(model, batch=8, steps=12).value >= 1


# ----------------------------------------------------------------------------- the two decided behaviours


def test_concrete_k_is_the_feature_size_whatever_the_sequence_length():
    """Decision: K = in_features (the package), not x[0].numel() = T·K (the official notebook)."""
    table = concrete_k_comparison(16, [1, 5, 50], p=0.2, dropout_regularizer=1e-3).table
    assert (table["package_K"] == 16).all() and table["reference_K"].tolist() == [16, 80, 800]
    assert table["ratio"].tolist() == pytest.approx([1.0, 5.0, 50.0])
    layer = ConcreteDropout(nn.Linear(16, 3), p=0.2, weight_regularizer=0.0, dropout_regularizer=1e-3)
    layer.train()
    assert layer(torch.randn(4, 5, 16)).shape == (4, 5, 3)  # a (B, T, K) input is accepted
    entropy_term = 1e-3 * 16 * (0.2 * math.log(0.2) + 0.8 * math.log(0.8))
    assert float(layer.regularizer().detach()) == pytest.approx(entropy_term, rel=1e-5)


def test_embedding_max_norm_renormalises_the_raw_weight_before_the_mask():
    """Decision: the package's order (renormalise the raw rows in place, then mask and scale)."""
    table = embedding_max_norm_comparison(p=0.5, max_norm=1.0).table.set_index("rule")
    assert table.loc["package", "ratio"] == pytest.approx(2.0) and table.loc["awd", "ratio"] == pytest.approx(1.0)
    assert table.loc["package", "raw_weight_max_norm"] <= 1.0 + 1e-5 < table.loc["awd", "raw_weight_max_norm"]
    torch.manual_seed(0)
    module = EmbeddingDropout(nn.Embedding(20, 6, max_norm=1.0), p=0.5)
    with torch.no_grad():
        module.embedding.weight.mul_(5.0)
    idx = torch.arange(20)
    module.train()
    torch.manual_seed(1)
    train_out = module(idx)
    module.eval()
    eval_out = module(idx)  # the raw rows are already renormalised: nothing changes any more
    kept = train_out.norm(dim=1) > 0
    torch.testing.assert_close(train_out[kept], 2.0 * eval_out[kept])
    assert torch.all(module.embedding.weight.norm(dim=1) <= 1.0 + 1e-5)

"""Dropout in recurrent networks: the experiments of notebook 11.

Gal, Ghahramani. "A theoretically grounded application of dropout in recurrent neural networks."
NeurIPS 2016 (arXiv:1512.05287; GR-PTB, GR-MC, GR-SEQ). Zaremba, Sutskever, Vinyals. "Recurrent
neural network regularization." arXiv:1409.2329 (the naive arm). Merity, Keskar, Socher.
"Regularizing and optimizing LSTM language models." ICLR 2018 (the weight-drop arm, GR-WD).

Four arms of one LSTM, built from the package's variants (:mod:`dropoutlab.variants.recurrent`):

* ``"none"``: no dropout.
* ``"naive"`` (Zaremba): inverted dropout with a new mask per element — so per time step — on the
  non-recurrent connections only: the LSTM's input and its output.
* ``"variational"`` (Gal): :class:`~dropoutlab.variants.recurrent.LockedDropout` (one mask per
  sequence and feature, the same at every step) on the input, the output *and* the recurrent
  connection ``h_{t−1}`` (one ``(B, H)`` mask per sequence, shared by the four gates: Gal's
  tied-weights form), plus :class:`~dropoutlab.variants.recurrent.EmbeddingDropout` (whole
  character types) in the language model.
* ``"weight-drop"`` (AWD-LSTM): :class:`~dropoutlab.variants.recurrent.WeightDrop` (DropConnect)
  on the hidden-to-hidden matrix, one mask per forward call, instead of the recurrent mask;
  locked dropout on input and output and embedding dropout as in the variational arm.

Every arm creates the same layers in the same order (embedding, LSTM, decoder), so one seed gives
every arm the same initial weights; :func:`~dropoutlab.train.fit` draws the data order from the
seed too, so the arms are paired by seed. Training goes through ``fit`` unchanged: a language
model's windows are "examples" ``x`` ``(N, L)`` with next-character targets ``y`` ``(N, L)``, and the
model returns logits ``(N, V, L)`` (classes second), which is what ``F.cross_entropy`` expects, so
``fit``'s loss is the mean per-character cross-entropy. ``fit``'s "error" column is then errors per
window, not a rate: the studies report cross-entropy and perplexity only.

Studies (each returns a frozen dataclass of tidy DataFrames):

* :func:`language_model_study` — the four arms on a character-level LM; validation and test
  perplexity (dropout off) and MC-averaged test perplexity (GR-PTB, GR-WD, GR-MC).
* :func:`sequence_digits_study` — scikit-learn digits read row by row (8 steps × 8 features), a
  1-layer LSTM classifier (GR-SEQ).
* :func:`locked_mask_check` — the locked masks of a model are constant over time and vary over
  the batch (GR-LOCK).
* :func:`concrete_k_comparison`, :func:`embedding_max_norm_comparison` — the two behaviours of the
  package's variants that differ from reference code (Concrete dropout's K on a sequence input;
  embedding dropout with ``max_norm``), computed both ways.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..checks import integer, integers, optional_integer, positive, probability, seed_list, settle
from ..corpus import Corpus
from ..inference import predict_mc
from ..train import TrainConfig, evaluate, fit, model_device, seed_everything, training_modes
from ..variants import make_dropout
from ..variants.concrete import ConcreteDropout
from ..variants.recurrent import EmbeddingDropout, LockedDropout, WeightDrop, embedding_dropout
from .studies import distinct_choices, per_seed, require_splits, study_config, train_config

__all__ = ["ARMS", "CharLM", "CharWindows", "ConcreteKComparison", "DropoutLSTM", "LanguageModelConfig",
           "LanguageModelStudy", "LockedMaskCheck", "MaxNormComparison", "SequenceClassifier", "SequenceConfig",
           "SequenceStudy", "char_windows", "concrete_k_comparison", "embedding_max_norm_comparison",
           "language_model_study", "locked_mask_check", "mc_nll_curve", "sequence_digits_study"]

ARMS = ("none", "naive", "variational", "weight-drop")
_LM_RATES = ("p_input", "p_hidden", "p_output", "p_weight", "p_embed")


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: leave it), restoring the count after."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _classification(config: Any, name: str, split: str) -> TrainConfig:
    """A classification TrainConfig, evaluated on ``data[split]`` after every epoch."""
    return replace(train_config(config, name, task="classification"), eval_splits=(split,))


# ----------------------------------------------------------------------------- the LSTM


def _lstm_loop(lstm: nn.LSTM, x: Tensor, mask: Tensor) -> Tensor:
    """One-layer batch-first LSTM run step by step with ``h_{t−1}·mask`` in the recurrent product.

    ``x`` ``(B, T, E)``, ``mask`` ``(B, H)`` (already scaled by 1/(1 − p)); returns ``(B, T, H)``.
    The input products of all steps are one matrix product; only the recurrent part loops. With
    ``mask`` all ones it equals ``lstm(x)[0]`` (tested to float32 precision).
    """
    B, T, _ = x.shape
    H = lstm.hidden_size
    w_hh_t = lstm.weight_hh_l0.t()
    gates_x = F.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
    h = c = x.new_zeros(B, H)
    outputs = []
    for t in range(T):
        gates = torch.addmm(gates_x[:, t], h * mask, w_hh_t)
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, 1)


class DropoutLSTM(nn.Module):
    """One-layer LSTM (batch first) with the dropout of one arm around it (module docstring).

    ``forward(x)`` takes ``(B, T, E)`` and returns the (dropped) outputs ``(B, T, H)``; the initial
    state is zero. Parameters are created as ``nn.LSTM(E, H)`` in every arm (``self.lstm``; the
    weight-drop arm wraps it as ``self.rnn``), so equal seeds give equal weights.

    * naive: ``InvertedDropout(p_input)`` on the input and ``InvertedDropout(p_output)`` on the output
      (per element, so a new mask at every step);
    * variational: ``LockedDropout`` on input and output; the recurrent mask is a ``LockedDropout(p_hidden)``
      applied to ones ``(B, 1, H)``, i.e. one mask per sequence reused at every step; the step loop
      runs only while that mask is active (training or MC), otherwise the fused ``nn.LSTM``;
    * weight-drop: locked input/output dropout and ``WeightDrop(lstm, p_weight, ("weight_hh_l0",))``.
    """

    def __init__(self, input_size: int, hidden: int, arm: str, *, p_input: float = 0.0, p_hidden: float = 0.0,
                 p_output: float = 0.0, p_weight: float = 0.0) -> None:
        super().__init__()
        if arm not in ARMS:
            raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
        self.arm = arm
        self.lstm = nn.LSTM(integer(input_size, "input_size"), integer(hidden, "hidden"), batch_first=True)
        p_input, p_hidden = probability(p_input, "p_input"), probability(p_hidden, "p_hidden")
        p_output, p_weight = probability(p_output, "p_output"), probability(p_weight, "p_weight")
        self.drop_input: nn.Module = nn.Identity()
        self.drop_output: nn.Module = nn.Identity()
        self.drop_hidden: LockedDropout | None = None
        self.rnn: nn.Module = self.lstm
        if arm == "naive":
            self.drop_input = make_dropout("inverted", p=p_input)
            self.drop_output = make_dropout("inverted", p=p_output)
        elif arm in ("variational", "weight-drop"):
            self.drop_input = LockedDropout(p_input, batch_first=True)
            self.drop_output = LockedDropout(p_output, batch_first=True)
            if arm == "variational":
                self.drop_hidden = LockedDropout(p_hidden, batch_first=True)
            else:
                self.rnn = WeightDrop(self.lstm, p_weight, ("weight_hh_l0",))

    def recurrent_mask(self, batch: int, like: Tensor) -> Tensor | None:
        """The ``(B, H)`` recurrent mask of one forward call, or None when it is inactive (eval, p = 0, other arms)."""
        d = self.drop_hidden
        if d is None or not d.training or float(d.p) == 0.0:
            return None
        ones = like.new_ones(batch, 1, self.lstm.hidden_size)
        return d(ones)[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop_input(x)
        mask = self.recurrent_mask(x.shape[0], x)
        out = self.rnn(x)[0] if mask is None else _lstm_loop(self.lstm, x, mask)
        return self.drop_output(out)


class CharLM(nn.Module):
    """Character-level LM: embedding ``(V, E)`` → :class:`DropoutLSTM` ``(E → H)`` → Linear ``(H → V)``.

    ``x`` int64 ``(B, T)`` → logits ``(B, V, T)`` (classes second, for ``F.cross_entropy``). The
    variational and weight-drop arms wrap the embedding in ``EmbeddingDropout(p_embed)`` (whole
    character types dropped, one ``(V,)`` mask per forward call).
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, arm: str, *, p_input: float = 0.0,
                 p_hidden: float = 0.0, p_output: float = 0.0, p_weight: float = 0.0, p_embed: float = 0.0) -> None:
        super().__init__()
        embedding = nn.Embedding(integer(vocab_size, "vocab_size", 2), integer(embed_dim, "embed_dim"))
        self.rnn = DropoutLSTM(embed_dim, hidden, arm, p_input=p_input, p_hidden=p_hidden, p_output=p_output,
                               p_weight=p_weight)
        self.decoder = nn.Linear(hidden, vocab_size)
        p_embed, locked = probability(p_embed, "p_embed"), arm in ("variational", "weight-drop")
        self.embed: nn.Module = EmbeddingDropout(embedding, p_embed) if locked else embedding

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.rnn(self.embed(x))).transpose(1, 2)


class SequenceClassifier(nn.Module):
    """LSTM classifier of a sequence: ``(N, …)`` reshaped to ``(N, steps, features)`` → last state → Linear.

    For scikit-learn's digits, ``(N, 1, 8, 8)`` is read row by row: 8 steps of 8 pixels. The output
    dropout acts on the last hidden state only (one step, so naive and locked coincide there).
    """

    def __init__(self, steps: int, features: int, hidden: int, num_classes: int, arm: str, *, p_input: float = 0.0,
                 p_hidden: float = 0.0, p_output: float = 0.0, p_weight: float = 0.0) -> None:
        super().__init__()
        self.steps, self.features = integer(steps, "steps"), integer(features, "features")
        self.rnn = DropoutLSTM(features, hidden, arm, p_input=p_input, p_hidden=p_hidden, p_output=p_output,
                               p_weight=p_weight)
        self.head = nn.Linear(hidden, integer(num_classes, "num_classes", 2))

    def forward(self, x: Tensor) -> Tensor:
        seq = x.reshape(x.shape[0], self.steps, self.features)
        return self.head(self.rnn(seq)[:, -1])


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class CharWindows:
    """Non-overlapping windows of a character stream: ``x`` ``(N, L)``, ``y`` = ``x`` shifted by one."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])


def char_windows(corpus: Corpus | Tensor, length: int) -> CharWindows:
    """Cut ids ``(n,)`` into ``⌊(n − 1)/L⌋`` windows: ``x[i] = ids[iL : (i+1)L]``, ``y[i] = ids[iL+1 : (i+1)L+1]``."""
    ids = corpus.ids if isinstance(corpus, Corpus) else corpus
    if not isinstance(ids, Tensor) or ids.dim() != 1:
        raise ValueError("corpus must be a Corpus or a 1-D tensor of character ids")
    length = integer(length, "length")
    n = (ids.numel() - 1) // length
    if n < 1:
        raise ValueError(f"length={length} leaves no window in {ids.numel()} characters")
    x = ids[: n * length].reshape(n, length).clone()
    y = ids[1 : n * length + 1].reshape(n, length).clone()
    return CharWindows(x=x, y=y)


# ----------------------------------------------------------------------------- GR-PTB, GR-WD, GR-MC


@dataclass(frozen=True)
class LanguageModelStudy:
    """Arms × seeds of the character LM.

    ``results``: one row per (arm, seed) with ``val_nll``, ``test_nll`` (nats per character, dropout
    off), ``val_ppl``, ``test_ppl`` (= exp NLL), ``test_mc_nll``/``test_mc_ppl`` (MC average of
    ``mc_samples`` passes with dropout on; NaN for "none") and ``seconds``. ``history``: ``fit``'s
    per-epoch records (``loss`` = NLL) with ``ppl`` added. ``mc_curve``: the MC test NLL and
    perplexity after the first s = 1 … ``mc_samples`` passes (arm, seed, samples, nll, ppl).
    """

    results: Any  # DataFrame
    history: Any  # DataFrame
    mc_curve: Any = None  # DataFrame

    def per_seed(self, arm: str, column: str = "test_ppl"):
        """One column for one arm, indexed by seed (sorted)."""
        return per_seed(self.results, column, arm=arm)


@torch.no_grad()
def mc_nll_curve(model: nn.Module, data: CharWindows, samples: int, batch_size: int = 64) -> np.ndarray:
    """MC cross-entropy after the first s = 1 … ``samples`` passes: ``curve[s − 1] = −mean log (1/s Σ_{k≤s} p_k(y))``.

    ``samples`` stochastic passes (:func:`dropoutlab.inference.predict_mc`: only dropout modules in
    train mode, fresh masks every pass), averaged in probability space (a running logsumexp − log s);
    the passes are shared by every prefix, so the curve shows how the average converges. The
    windows are moved to the model's device. Returns float64 ``(samples,)``.
    """
    samples = integer(samples, "samples")
    device = model_device(model)
    totals, count = torch.zeros(samples, dtype=torch.float64), 0
    counts = torch.arange(1, samples + 1, dtype=torch.float64, device=device).log()
    for start in range(0, len(data), batch_size):
        xb, yb = data.x[start : start + batch_size].to(device), data.y[start : start + batch_size].to(device)
        logits = predict_mc(model, xb, samples)  # (S, B, V, L)
        logp = torch.log_softmax(logits, dim=2).gather(2, yb.unsqueeze(0).unsqueeze(2).expand(samples, -1, 1, -1))
        running = torch.logcumsumexp(logp.squeeze(2).double(), dim=0)  # (S, B, L)
        totals -= (running - counts.view(-1, 1, 1)).sum(dim=(1, 2)).cpu()
        count += yb.numel()
    return (totals / count).numpy()


@dataclass(frozen=True)
class LanguageModelConfig:
    """Settings of :func:`language_model_study`, checked once when the config is built.

    ``training`` (a classification :class:`TrainConfig`; its ``eval_splits`` are set to ``("val",)``),
    ``seeds``; a :class:`CharLM` of ``embed_dim`` and ``hidden`` units with the drop probabilities
    ``p_input``, ``p_hidden``, ``p_output``, ``p_weight`` and ``p_embed``; training windows of
    ``bptt`` characters, evaluation windows of ``eval_length``; ``mc_samples`` MC passes; ``arms``
    from :data:`ARMS`; ``threads``: torch's CPU thread count while the study runs (None leaves it).
    """

    training: TrainConfig
    seeds: tuple[int, ...]
    embed_dim: int
    hidden: int
    bptt: int
    eval_length: int
    p_input: float
    p_hidden: float
    p_output: float
    p_weight: float
    p_embed: float
    mc_samples: int
    arms: tuple[str, ...] = ARMS
    threads: int | None = 1

    def __post_init__(self) -> None:
        name = "LanguageModelConfig"
        settle(self, training=_classification(self.training, f"{name}.training", "val"),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")),
               embed_dim=integer(self.embed_dim, f"{name}.embed_dim"), hidden=integer(self.hidden, f"{name}.hidden"),
               bptt=integer(self.bptt, f"{name}.bptt"), eval_length=integer(self.eval_length, f"{name}.eval_length"),
               mc_samples=integer(self.mc_samples, f"{name}.mc_samples"),
               arms=distinct_choices(self.arms, ARMS, f"{name}.arms"),
               threads=optional_integer(self.threads, f"{name}.threads"),
               **{k: probability(getattr(self, k), f"{name}.{k}") for k in _LM_RATES})

    @property
    def rates(self) -> dict[str, float]:
        """The five drop probabilities, as :class:`CharLM`'s keyword arguments."""
        return {k: getattr(self, k) for k in _LM_RATES}


def language_model_study(train: Corpus, val: Corpus, test: Corpus, config: LanguageModelConfig) -> LanguageModelStudy:
    """GR-PTB, GR-WD, GR-MC: the four arms of :class:`CharLM` on one corpus, paired by seed.

    Training windows have length ``bptt`` (``fit`` shuffles them with the seed); validation and test
    windows ``eval_length`` (each window starts from a zero state, the same for every arm). The
    validation perplexity is logged after every epoch; after training, test perplexity with dropout
    off, and the MC average of ``mc_samples`` dropout passes for every arm with dropout.

    ``config.threads``: torch's CPU thread count while the study runs (restored after). A one-layer
    LSTM of ~100 units is a chain of small matrix products that a second thread slows down (measured
    2–8× slower with 2 threads on 2 busy cores), so the default is 1; results are bit-identical
    whatever the kernel's own thread setting.

    Shapes: corpora are 1-D id streams over one vocabulary; windows ``(N, L)``; logits ``(N, V, L)``.
    """
    if not all(isinstance(c, Corpus) for c in (train, val, test)):
        raise ValueError("train, val and test must be Corpus objects (dropoutlab.corpus.load_corpus)")
    if not train.vocab == val.vocab == test.vocab:
        raise ValueError("train, val and test must share one vocabulary")
    config = study_config(config, LanguageModelConfig)
    data = {"train": char_windows(train, config.bptt), "val": char_windows(val, config.eval_length),
            "test": char_windows(test, config.eval_length)}
    rows, frames, curves = [], [], []
    with _torch_threads(config.threads):
        for arm in config.arms:
            for seed in config.seeds:
                seed_everything(seed)
                model = CharLM(train.vocab_size, config.embed_dim, config.hidden, arm, **config.rates)
                started = time.perf_counter()
                history = fit(model, data, replace(config.training, seed=seed))
                seconds = time.perf_counter() - started
                frame = history.to_frame().drop(columns=["error"]).assign(ppl=lambda f: np.exp(f["loss"]))
                frame.insert(0, "seed", seed)
                frame.insert(0, "arm", arm)
                frames.append(frame)
                val_nll = evaluate(model, data["val"], batch_size=256)["loss"]
                test_nll = evaluate(model, data["test"], batch_size=256)["loss"]
                mc = math.nan
                if arm != "none":
                    curve = mc_nll_curve(model, data["test"], config.mc_samples)
                    mc = float(curve[-1])
                    curves.append(pd.DataFrame(dict(arm=arm, seed=seed, samples=np.arange(1, config.mc_samples + 1),
                                                    nll=curve, ppl=np.exp(curve))))
                rows.append(dict(arm=arm, seed=seed, val_nll=val_nll, test_nll=test_nll, test_mc_nll=mc,
                                 val_ppl=math.exp(val_nll), test_ppl=math.exp(test_nll), test_mc_ppl=math.exp(mc),
                                 seconds=seconds))
    return LanguageModelStudy(results=pd.DataFrame(rows), history=pd.concat(frames, ignore_index=True),
                              mc_curve=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame())


# ----------------------------------------------------------------------------- GR-SEQ


@dataclass(frozen=True)
class SequenceStudy:
    """Arms × seeds of the digits-as-sequence classifier: ``results`` (arm, seed, test_nll, test_error %)
    and ``history`` (``fit``'s records)."""

    results: Any  # DataFrame
    history: Any  # DataFrame

    def per_seed(self, arm: str, column: str = "test_nll"):
        return per_seed(self.results, column, arm=arm)


@dataclass(frozen=True)
class SequenceConfig:
    """Settings of :func:`sequence_digits_study`, checked once when the config is built.

    ``training`` (a classification :class:`TrainConfig`; its ``eval_splits`` are set to ``("test",)``,
    so the curves are test curves), ``seeds``, an LSTM of ``hidden`` units with drop probabilities
    ``p_input``, ``p_hidden``, ``p_output``; ``arms`` and ``threads`` as in :class:`LanguageModelConfig`.
    """

    training: TrainConfig
    seeds: tuple[int, ...]
    hidden: int
    p_input: float
    p_hidden: float
    p_output: float
    arms: tuple[str, ...] = ("none", "naive", "variational")
    threads: int | None = 1

    def __post_init__(self) -> None:
        name = "SequenceConfig"
        settle(self, training=_classification(self.training, f"{name}.training", "test"),
               seeds=tuple(seed_list(self.seeds, f"{name}.seeds")), hidden=integer(self.hidden, f"{name}.hidden"),
               **{k: probability(getattr(self, k), f"{name}.{k}") for k in ("p_input", "p_hidden", "p_output")},
               arms=distinct_choices(self.arms, ARMS, f"{name}.arms"),
               threads=optional_integer(self.threads, f"{name}.threads"))


def sequence_digits_study(data: Mapping[str, Any], config: SequenceConfig) -> SequenceStudy:
    """GR-SEQ: digits read as 8 steps × 8 features by a 1-layer LSTM(``hidden``), per arm and seed.

    ``data`` maps ``train`` and ``test`` to image datasets ``(N, 1, 8, 8)`` (scikit-learn's digits);
    the test NLL and error are measured with dropout off after training.
    """
    require_splits(data, ("train", "test"))
    shape = tuple(data["train"].x.shape[1:])
    if len(shape) != 3 or shape[0] != 1:
        raise ValueError(f"data must hold images (N, 1, steps, features), got input shape {shape}")
    config = study_config(config, SequenceConfig)
    rates = dict(p_input=config.p_input, p_hidden=config.p_hidden, p_output=config.p_output)
    rows, frames = [], []
    with _torch_threads(config.threads):
        for arm in config.arms:
            for seed in config.seeds:
                seed_everything(seed)
                model = SequenceClassifier(shape[1], shape[2], config.hidden, data["train"].num_classes, arm, **rates)
                history = fit(model, dict(data), replace(config.training, seed=seed))
                frame = history.to_frame()
                frame.insert(0, "seed", seed)
                frame.insert(0, "arm", arm)
                frames.append(frame)
                metrics = evaluate(model, data["test"])
                rows.append(dict(arm=arm, seed=seed, test_nll=metrics["loss"], test_error=100 * metrics["error"]))
    return SequenceStudy(results=pd.DataFrame(rows), history=pd.concat(frames, ignore_index=True))


# ----------------------------------------------------------------------------- GR-LOCK


@dataclass(frozen=True)
class LockedMaskCheck:
    """The locked masks of a model on ones ``(B, T, F)``, training mode, per module.

    ``table``: module, ``time_deviation`` (max over b, t, f of |m[b,t,f] − m[b,0,f]|),
    ``distinct_samples`` (how many of the B per-sample masks differ from sample 0's), ``drop_share``.
    ``value``: the largest time deviation, plus 1 for every module whose B masks are all equal
    (one mask shared by the whole batch: the batch-first/sequence-first axis bug); 0 when correct.
    ``example``: the first module's masks of the first 4 sequences, ``(4, T, F)`` (for a figure).
    """

    table: Any  # DataFrame
    value: float
    example: Any  # ndarray


@torch.no_grad()
def locked_mask_check(model: nn.Module, batch: int = 32, steps: int = 50, seed: int = 0) -> LockedMaskCheck:
    """GR-LOCK: apply every :class:`LockedDropout` of ``model`` (train mode) to ones and inspect its mask."""
    batch, steps = integer(batch, "batch", 2), integer(steps, "steps", 2)
    modules = {n: m for n, m in model.named_modules() if isinstance(m, LockedDropout)}
    if not modules:
        raise ValueError("model has no LockedDropout module")
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    rows, example = [], None
    try:
        for name, module in modules.items():
            features = _features_of(model, name)
            ones = torch.ones(batch, steps, features) if module.batch_first else torch.ones(steps, batch, features)
            with training_modes(module):
                module.train()
                mask = module(ones)
            if not module.batch_first:
                mask = mask.transpose(0, 1)
            if example is None:
                example = mask[:4].numpy().copy()
            deviation = float((mask - mask[:, :1]).abs().max())
            distinct = int(((mask[:, 0] != mask[:1, 0]).any(dim=1)).sum())
            rows.append(dict(module=name, p=float(module.p), time_deviation=deviation, distinct_samples=distinct,
                             drop_share=float((mask == 0).float().mean())))
    finally:
        torch.set_rng_state(generator_state)
    table = pd.DataFrame(rows)
    shared = int(((table["distinct_samples"] == 0) & (table["p"] > 0)).sum())
    return LockedMaskCheck(table=table, value=float(table["time_deviation"].max()) + shared, example=example)


def _features_of(model: nn.Module, name: str) -> int:
    """Feature size a LockedDropout acts on: the LSTM's input size, hidden size (recurrent and output)."""
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    lstm = getattr(parent, "lstm", None)
    if not isinstance(lstm, nn.LSTM):
        raise ValueError(f"cannot tell the feature size of {name!r}: its parent has no nn.LSTM `lstm`")
    return lstm.input_size if leaf == "drop_input" else lstm.hidden_size


# ----------------------------------------------------------------------------- the two behaviours


@dataclass(frozen=True)
class ConcreteKComparison:
    """Concrete dropout's regulariser for a ``(B, T, K)`` input, two choices of K.

    ``table``: one row per T with ``package_K`` (= K, the features), ``reference_K`` (= T·K, the
    official notebook's ``x[0].numel()``), the dropout term of each and their ratio.
    """

    table: Any  # DataFrame


def concrete_k_comparison(features: int, steps: Sequence[int], p: float = 0.1,
                          dropout_regularizer: float = 1e-5) -> ConcreteKComparison:
    """The dropout (entropy) term ``dr·K·(p log p + (1 − p) log(1 − p))`` of a ``ConcreteDropout(Linear(K, ·))``
    on inputs ``(B, T, K)``, with the package's K and with the notebook's ``x[0].numel() = T·K``."""
    features, steps = integer(features, "features"), integers(steps, "steps")
    p = probability(p, "p", zero=False)
    layer = ConcreteDropout(nn.Linear(features, 4), p=p, weight_regularizer=0.0,
                            dropout_regularizer=dropout_regularizer)
    package = float(layer.regularizer().detach())  # the weight term is zero: only the dropout term remains
    rows = []
    for t in steps:
        reference_k = t * features  # the notebook's x[0].numel() for x of shape (B, T, K)
        reference = package / layer.input_dim * reference_k
        rows.append(dict(steps=t, package_K=layer.input_dim, reference_K=reference_k, package_term=package,
                         reference_term=reference, ratio=reference / package))
    return ConcreteKComparison(table=pd.DataFrame(rows))


@dataclass(frozen=True)
class MaxNormComparison:
    """Embedding dropout with ``max_norm``: the package's order against AWD-LSTM's.

    ``table``: one row per rule with the mean output norm of kept rows in training, the eval output
    norm, their ratio (inverted dropout keeps E[train] = eval, so kept rows should be 1/(1 − p)
    longer), and the largest raw-weight row norm after the call (the package renormalises the looked-up
    rows of the weight in place, as ``nn.Embedding``; AWD renormalises a masked copy).
    """

    table: Any  # DataFrame


@torch.no_grad()
def embedding_max_norm_comparison(vocab: int = 50, dim: int = 16, p: float = 0.5, max_norm: float = 1.0,
                                  scale: float = 3.0, seed: int = 0) -> MaxNormComparison:
    """Embeddings with rows of norm ≈ ``scale``·√dim·… > ``max_norm``, looked up with embedding dropout ``p``.

    "package": :func:`~dropoutlab.variants.recurrent.embedding_dropout` (renormalise the raw rows in
    place, then mask and scale by 1/(1 − p)); "awd": mask and scale a copy of the weight, then look
    up with ``max_norm`` (the renormalisation acts on the scaled copy; the raw weight is untouched).
    """
    vocab, dim = integer(vocab, "vocab", 2), integer(dim, "dim")
    p, max_norm = probability(p, "p"), positive(max_norm, "max_norm")
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(vocab, dim, generator=gen) * scale
    idx = torch.arange(vocab)
    rows = []
    for rule in ("package", "awd"):
        weight = base.clone()
        torch.manual_seed(seed)
        if rule == "package":
            out = embedding_dropout(idx, weight, p, training=True, max_norm=max_norm)
        else:
            keep = (torch.rand(vocab, generator=torch.Generator().manual_seed(seed)) >= p).float()
            masked = weight * keep.unsqueeze(1) / (1 - p)
            out = F.embedding(idx, masked, None, max_norm)
        kept = out.norm(dim=1) > 0
        eval_out = F.embedding(idx, base.clone(), None, max_norm)
        train_norm = float(out.norm(dim=1)[kept].mean())
        eval_norm = float(eval_out.norm(dim=1).mean())
        rows.append(dict(rule=rule, train_kept_norm=train_norm, eval_norm=eval_norm, ratio=train_norm / eval_norm,
                         expected_ratio=1 / (1 - p), raw_weight_max_norm=float(weight.norm(dim=1).max())))
    return MaxNormComparison(table=pd.DataFrame(rows))

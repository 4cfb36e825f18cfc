"""What dropout costs, and the guide's comparison table re-measured (notebook 14_practical_guide).

The guide ("ドロップアウト", Application & Use-Cases, 2025-12-19) says that dropout "needs only a random
mask and a multiplication, and adds minimal computational overhead", and its table "Dropout技術の比較"
lists standard, inverted, spatial, variational, Gaussian and Concrete dropout by domain, pattern,
scaling rule and computational cost. This module measures both on the shared task's nets:

* :class:`CostNets` builds the shared task's MLP, CNN and row-LSTM with any registered variant that
  takes a rate ``p`` (or with none), the same initial weights per seed wherever the variant adds no
  parameters of its own.
* :func:`measure_cost` (SG-COST, SG-TABLE's cost columns) times training updates (forward, backward,
  Adam step) of every arm *and* its net without dropout side by side — interleaved update by update,
  the order rotated every update, on a fixed number of CPU threads — and counts each arm's
  training-step memory (:func:`step_memory`). Timings are not reproducible, so where a run store is
  set (the full and paper profiles, :func:`dropoutlab.train.run_store`) each seed's measurement is
  stored once and loaded by a re-run, as trained runs are.
* :func:`table_checks` (SG-TABLE) checks the pattern and scaling columns of the guide's six rows on
  the library's implementations, on seeded probe tensors.
* :func:`family_table` joins the measured costs, the accuracies of briefly trained nets and the
  registry's metadata (where the mask is shared, the test-time rule) into one table;
  :func:`dropoutlab.docs.comparison_markdown` renders it for ``docs/comparison.md``.

``p`` is always the drop probability.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._io import atomic_write_text
from ..checks import choice, integer, integers, optional_integer, positive, probability, seed_list, settle
from ..models import MLP, ConvNet, RowLSTM
from ..paths import dry_run
from ..train import (
    ForecastClock,
    TrainConfig,
    data_fingerprint,
    regularization,
    regularized_modules,
    run_store,
    seed_everything,
)
from ..variants import get_variant, make_dropout
from .studies import updates_per_epoch

__all__ = ["ARCHITECTURES", "COST_ARMS", "CostNets", "CostStudy", "GUIDE_TABLE", "TABLE_ARMS", "TableChecks",
           "baseline_label", "family_table", "measure_cost", "shared_axes", "step_memory", "table_checks"]

ARCHITECTURES = {"mlp": "MLP", "cnn": "CNN", "rnn": "LSTM"}

#: The guide's table as printed (technique → domain, pattern, scaling, cost; English in brackets) and
#: the library variant each row names. Five of the six cost cells are empty in the stored copy.
GUIDE_TABLE: dict[str, dict[str, str]] = {
    "standard": dict(variant="standard", domain="全結合 (fully connected)", pattern="個別ニューロン (individual neurons)",
                     scaling="テスト時スケーリング (test-time)", cost="—"),
    "inverted": dict(variant="inverted", domain="汎用 (general)", pattern="個別ニューロン (individual neurons)",
                     scaling="訓練時スケーリング (training-time)", cost="非常に低 (very low)"),
    "spatial": dict(variant="spatial", domain="畳み込み (convolutional)", pattern="特徴マップ (feature maps)",
                    scaling="訓練時スケーリング (training-time)", cost="—"),
    "variational": dict(variant="locked", domain="リカレントネットワーク (recurrent)",
                        pattern="時間全体で一貫 (consistent across time)", scaling="訓練時スケーリング (training-time)",
                        cost="—"),
    "gaussian": dict(variant="gaussian", domain="連続アプリケーション (continuous)", pattern="ガウスノイズ (Gaussian noise)",
                     scaling="暗黙的 (implicit)", cost="—"),
    "concrete": dict(variant="concrete", domain="適応システム (adaptive systems)", pattern="学習可能パターン (learnable)",
                     scaling="自動 (automatic)", cost="—"),
}

#: The measured table's arms: label → (architecture, variant, extra constructor kwargs). Every
#: registered variant that takes a rate p on one of the shared nets; the nets without dropout are added.
TABLE_ARMS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "inverted (MLP)": ("mlp", "inverted", {}),
    "standard (MLP)": ("mlp", "standard", {}),
    "gaussian (MLP)": ("mlp", "gaussian", {}),
    "uout (MLP)": ("mlp", "uout", {}),
    "alpha (MLP)": ("mlp", "alpha", {}),
    "dropconnect (MLP)": ("mlp", "dropconnect", {}),
    "variational (MLP)": ("mlp", "variational", {}),
    "concrete (MLP)": ("mlp", "concrete", {}),
    "inverted (CNN)": ("cnn", "inverted", {}),
    "spatial (CNN)": ("cnn", "spatial", {}),
    "dropblock (CNN)": ("cnn", "dropblock", {"block_size": 3}),
    "inverted (LSTM)": ("rnn", "inverted", {}),
    "locked (LSTM)": ("rnn", "locked", {}),
}

#: SG-COST's arms (the guide's "dropout": inverted, on the MLP and the CNN).
COST_ARMS = {"mlp": "inverted (MLP)", "cnn": "inverted (CNN)"}


def baseline_label(arch: str) -> str:
    """The label of an architecture's net without dropout, e.g. ``none (MLP)``."""
    return f"none ({ARCHITECTURES[arch]})"


@dataclass(frozen=True)
class CostNets:
    """The shared task's nets: ``build(arch, variant)`` → a fresh model (seed it first).

    ``mlp``: Flatten → [dropout p_input] → Linear → ReLU → [dropout p_hidden] … (:class:`MLP`, the
    guide MLP of the other sections); ``cnn``: conv blocks conv → ReLU → [dropout p_conv] → 2×2 pool
    (3×3 convs, padding 1), then a ``hidden``-unit layer (:class:`ConvNet`); ``rnn``: an LSTM of
    ``rnn_hidden`` units over the image rows with dropout ``p_rnn`` on its input and last output
    (:class:`RowLSTM`). ``variant="none"`` builds the same net without dropout.
    """

    input_shape: tuple[int, ...]
    num_classes: int
    widths: tuple[int, ...] = (256, 256)
    channels: tuple[int, ...] = (16, 32)
    hidden: int = 64
    rnn_hidden: int = 64
    p_input: float = 0.2
    p_hidden: float = 0.5
    p_conv: float = 0.3
    p_rnn: float = 0.5

    def __post_init__(self) -> None:
        shape = tuple(integers(self.input_shape, "input_shape"))
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {self.input_shape!r}")
        for name in ("num_classes", "hidden", "rnn_hidden"):
            integer(getattr(self, name), name)
        for name in ("p_input", "p_hidden", "p_conv", "p_rnn"):
            probability(getattr(self, name), name)
        settle(self, input_shape=shape, widths=tuple(integers(self.widths, "widths")),
               channels=tuple(integers(self.channels, "channels")))

    def build(self, arch: str, variant: str = "none", **kwargs: Any) -> nn.Module:
        choice(arch, ARCHITECTURES, "arch")
        none = variant == "none"
        if not none:
            get_variant(variant)  # a clear error for an unknown name
        if arch == "mlp":
            return MLP(int(np.prod(self.input_shape)), list(self.widths), self.num_classes, dropout=variant,
                       p_input=0.0 if none else self.p_input, p_hidden=0.0 if none else self.p_hidden,
                       dropout_kwargs=kwargs or None)
        if arch == "cnn":
            return ConvNet(self.input_shape, list(self.channels), order="conv-act-drop-pool", padding=1,
                           dropout=variant, p=0.0 if none else self.p_conv, hidden=self.hidden,
                           num_classes=self.num_classes, dropout_kwargs=kwargs or None)
        if kwargs:
            raise ValueError(f"rnn: the row-LSTM takes no dropout kwargs, got {sorted(kwargs)}")
        return RowLSTM(row_size=self.input_shape[-1], hidden=self.rnn_hidden, num_classes=self.num_classes,
                       dropout=variant, p=0.0 if none else self.p_rnn)


def _arms(arms: Mapping[str, tuple[str, str, Mapping[str, Any]]]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Validated arms with each architecture's net without dropout added (first, in architecture order)."""
    if not isinstance(arms, Mapping) or not arms:
        raise ValueError("arms must map labels to (arch, variant, kwargs), e.g. TABLE_ARMS")
    out: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for label, spec in arms.items():
        if not isinstance(spec, tuple) or len(spec) != 3 or spec[0] not in ARCHITECTURES:
            raise ValueError(f"arms[{label!r}] must be (arch, variant, kwargs) with arch in {list(ARCHITECTURES)}, "
                             f"got {spec!r}")
        if spec[1] == "none":
            raise ValueError(f"arms[{label!r}]: the nets without dropout are added by measure_cost; name a variant")
        out[label] = (spec[0], spec[1], dict(spec[2]))
    archs = [a for a in ARCHITECTURES if any(spec[0] == a for spec in out.values())]
    return {**{baseline_label(a): (a, "none", {}) for a in archs}, **out}


# ------------------------------------------------------------------------------------------------ memory


def _storage(t: Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def step_memory(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                regularizer_weight: float = 1.0) -> dict[str, int]:
    """Bytes one training update holds at its peak, counted (not sampled): deterministic on any machine.

    ``state``: parameters, their gradients and the optimiser's buffers (Adam: two moments and a step
    count per parameter; run one update first so that they exist); ``saved``: every tensor autograd
    keeps for the backward pass of a forward on ``x`` (``torch.autograd.graph.saved_tensors_hooks``),
    each storage counted once, parameters and the input batch ``x`` left out (they are held anyway);
    ``memory`` = state + saved. Dropout's masks and the activation copies it makes live in ``saved``.
    """
    params = list(model.parameters())
    state = sum(2 * p.nbytes for p in params)  # values and gradients
    for buffers in optimizer.state.values():
        state += sum(v.nbytes for v in buffers.values() if isinstance(v, Tensor))
    skip = {_storage(p)[0] for p in params} | {_storage(x)[0]}
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        ptr, nbytes = _storage(t)
        if ptr and ptr not in skip:
            storages[ptr] = max(storages.get(ptr, 0), nbytes)
        return t

    model.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
        reg = regularization(model)
        objective = loss if reg is None else loss + regularizer_weight * reg
    objective.backward()  # frees the saved tensors; the gradients are discarded below
    optimizer.zero_grad(set_to_none=True)
    saved = sum(storages.values())
    return {"state": int(state), "saved": int(saved), "memory": int(state + saved)}


# -------------------------------------------------------------------------------------------------- time


RATIOS = ("epoch_seconds", "wall_seconds_per_update", "memory", "saved")


@dataclass(frozen=True)
class CostStudy:
    """Per (seed, round, arm): ``seconds_per_update`` (median over the round's updates), ``epoch_seconds``
    (× updates per epoch) and the step memory in bytes (``state``, ``saved``, ``memory``), in ``rounds``.

    Times are CPU time: of the measuring thread (``time.thread_time``) when torch runs on one thread
    — the forward, backward and optimiser step all run there —, of the process (``time.process_time``)
    otherwise. Unlike the wall clock, CPU time does not count the time the process waits for a core on
    a shared machine; ``wall_seconds_per_update`` (wall clock) is kept beside it. ``ratio(label, what)``
    is the per-round ratio of an arm to its net without dropout (``what``: "epoch_seconds",
    "wall_seconds_per_update", "memory" or "saved"), seeds and rounds in order; ``summary()`` one row
    per arm.
    """

    rounds: pd.DataFrame
    arms: dict[str, tuple[str, str, dict[str, Any]]]
    settings: dict[str, Any] = field(default_factory=dict)
    loaded: int = 0  # seeds whose measurement came from the run store

    def ratio(self, label: str, what: str = "epoch_seconds") -> np.ndarray:
        choice(label, list(self.arms), "label")
        choice(what, RATIOS, "what")
        base = baseline_label(self.arms[label][0])
        wide = self.rounds.pivot_table(index=["seed", "round"], columns="arm", values=what, sort=True)
        return (wide[label] / wide[base]).to_numpy(dtype=float)

    def summary(self) -> pd.DataFrame:
        rows = []
        for label, (arch, variant, _) in self.arms.items():
            own = self.rounds[self.rounds["arm"] == label]
            time_ratio, memory_ratio = self.ratio(label), self.ratio(label, "memory")
            rows.append(dict(arm=label, net=ARCHITECTURES[arch], variant=variant,
                             ms_per_update=1e3 * own["seconds_per_update"].median(),
                             epoch_seconds=own["epoch_seconds"].median(), time_ratio=float(np.median(time_ratio)),
                             time_low=float(time_ratio.min()), time_high=float(time_ratio.max()),
                             wall_ratio=float(np.median(self.ratio(label, "wall_seconds_per_update"))),
                             memory_mb=own["memory"].iloc[0] / 2**20, memory_ratio=float(np.median(memory_ratio)),
                             saved_ratio=float(np.median(self.ratio(label, "saved")))))
        return pd.DataFrame(rows)


def _batches(split: Any, seed: int, count: int, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(10_007 * seed + 17)
    idx = torch.randint(len(split.x), (count, batch_size), generator=g)
    return [(split.x[i].contiguous(), split.y[i].contiguous()) for i in idx]


def _cost_key(nets: CostNets, arms: Mapping[str, Any], split: Any, seed: int, settings: Mapping[str, Any]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    payload = dict(nets=asdict(nets), arms={k: [v[0], v[1], v[2]] for k, v in arms.items()}, seed=seed,
                   settings=dict(settings), torch=torch.__version__)
    digest.update(json.dumps(payload, sort_keys=True, default=str).encode())
    digest.update(data_fingerprint(split).encode())
    return digest.hexdigest()


def _find_stored(key: str, folders: Sequence[Path]) -> list[dict[str, Any]] | None:
    for folder in folders:
        if Path(folder).is_dir():
            for path in sorted(Path(folder).rglob(f"cost-{key}.json")):
                try:
                    return json.loads(path.read_text(encoding="utf-8"))["rows"]
                except (OSError, ValueError, KeyError):
                    continue
    return None


def _measure_seed(nets: CostNets, arms: Mapping[str, tuple[str, str, dict[str, Any]]], split: Any, seed: int,
                  settings: Mapping[str, Any], tick: Callable[[], None]) -> list[dict[str, Any]]:
    """One seed's rows of :func:`measure_cost` (``settings`` as it stores them; ``tick`` after every update)."""
    batch_size, steps, warmup, rounds = (settings[k] for k in ("batch_size", "steps", "warmup", "rounds"))
    regularizer_weight, clock = settings["regularizer_weight"], getattr(time, settings["clock"])
    models, optimizers, regularized = {}, {}, {}
    for label, (arch, variant, kwargs) in arms.items():
        seed_everything(seed)
        models[label] = nets.build(arch, variant, **kwargs).train()
        optimizers[label] = torch.optim.Adam(models[label].parameters(), lr=settings["lr"])
        regularized[label] = regularized_modules(models[label])
    batches = _batches(split, seed, warmup + steps, batch_size)
    labels = list(arms)

    def update(label: str, x: Tensor, y: Tensor) -> None:
        model, optimizer = models[label], optimizers[label]
        loss = F.cross_entropy(model(x), y)
        reg = regularization(model, regularized[label])
        objective = loss if reg is None else loss + regularizer_weight * reg
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()

    for x, y in batches[:warmup]:
        for label in labels:
            update(label, x, y)
        tick()
    memory = {label: step_memory(models[label], optimizers[label], *batches[0], regularizer_weight)
              for label in labels}
    per_epoch = updates_per_epoch(len(split.x), batch_size)
    rows = []
    for r in range(rounds):
        times: dict[str, list[float]] = {label: [] for label in labels}
        walls: dict[str, list[float]] = {label: [] for label in labels}
        for i, (x, y) in enumerate(batches[warmup:]):
            shift = (r * steps + i) % len(labels)
            for label in labels[shift:] + labels[:shift]:
                started, wall = clock(), time.perf_counter()
                update(label, x, y)
                times[label].append(clock() - started)
                walls[label].append(time.perf_counter() - wall)
            tick()
        for label in labels:
            spu = statistics.median(times[label])
            rows.append(dict(seed=seed, round=r, arm=label, seconds_per_update=spu, updates_per_epoch=per_epoch,
                             epoch_seconds=spu * per_epoch, wall_seconds_per_update=statistics.median(walls[label]),
                             **memory[label]))
    return rows


def measure_cost(nets: CostNets, arms: Mapping[str, tuple[str, str, Mapping[str, Any]]], train_split: Any,
                 seeds: Sequence[int], *, batch_size: int = 64, lr: float = 0.001, steps: int = 30, warmup: int = 5,
                 rounds: int = 2, threads: int | None = 1, regularizer_weight: float | None = None) -> CostStudy:
    """Time training updates of every arm and its net without dropout side by side; count step memory.

    Per seed: every arm's net is built from the seed (so arms without own parameters share the
    initial weights), ``warmup`` untimed updates of each arm, then ``rounds`` rounds of the same
    ``steps`` batches (drawn from ``train_split`` by the seed), each update run by every arm in turn
    with the order rotated every update, so that load drift, cache and allocator state hit all arms
    alike; a round's time per update is the median over its updates of the measuring thread's CPU
    time (see :class:`CostStudy`), an epoch's is that × ⌈len(train_split) / batch_size⌉.
    The step memory is :func:`step_memory` (a count, identical in every round). ``threads`` fixes
    torch's CPU threads for the measurement (None: leave). With a run store (full, paper) each
    seed's rows are stored as ``cost-<key>.json`` and a re-run with the same nets, arms, data and
    settings loads them. In a dry run the rounds shrink to the dry run's updates; in a time forecast
    the measurement runs in full and logs its time (:class:`~dropoutlab.train.ForecastClock`).
    """
    arms, seeds = _arms(arms), seed_list(seeds)
    batch_size, steps, rounds = integer(batch_size, "batch_size"), integer(steps, "steps"), integer(rounds, "rounds")
    warmup, threads, lr = integer(warmup, "warmup", minimum=0), optional_integer(threads, "threads"), positive(lr, "lr")
    if not hasattr(train_split, "x") or not hasattr(train_split, "y") or len(train_split.x) == 0:
        raise ValueError("train_split must be a non-empty dataset split with tensors x and y")
    caps = dry_run()
    if caps is not None:
        steps, warmup, rounds = min(steps, caps.steps), min(warmup, 1), 1
    if regularizer_weight is None:
        regularizer_weight = TrainConfig().regularizer_weight
    settings = dict(batch_size=batch_size, lr=lr, steps=steps, warmup=warmup, rounds=rounds, threads=threads,
                    regularizer_weight=float(regularizer_weight),
                    clock="thread_time" if threads == 1 else "process_time")
    store_dir, folders = run_store() if caps is None else (None, [])
    previous = torch.get_num_threads()
    rows, loaded = [], 0
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for seed in seeds:
            key = None if store_dir is None else _cost_key(nets, arms, train_split, seed, settings)
            stored = None if key is None else _find_stored(key, folders)
            if stored is not None:
                rows += stored
                loaded += 1
                continue
            forecast = ForecastClock("measure_cost", f"{len(arms)} arms interleaved", seed)
            measured = _measure_seed(nets, arms, train_split, seed, settings, forecast.tick)
            forecast.finish(warmup + rounds * steps)  # a forecast's log counts the measurement (it runs in full)
            if store_dir is not None:
                atomic_write_text(Path(store_dir) / f"cost-{key}.json",
                                  json.dumps(dict(settings=settings, rows=measured), indent=1) + "\n")
            rows += measured
    finally:
        torch.set_num_threads(previous)
    return CostStudy(rounds=pd.DataFrame(rows), arms=arms, settings=settings, loaded=loaded)


# ---------------------------------------------------------------------------------------- table checks


def shared_axes(multiplier: Tensor) -> tuple[int, ...]:
    """The axes (after the first, the sample axis) along which a mask is constant in every slice.

    An axis counts as shared only if *every* line along it is constant, so an element-wise mask on a
    probe of thousands of lines is never mistaken for a shared one.
    """
    if multiplier.dim() < 2:
        raise ValueError(f"multiplier must have a sample axis and at least one more, got shape "
                         f"{tuple(multiplier.shape)}")
    return tuple(d for d in range(1, multiplier.dim()) if bool((multiplier == multiplier.narrow(d, 0, 1)).all()))


@dataclass(frozen=True)
class TableChecks:
    """One row per technique of the guide's table: what it says, what the library does, and whether
    the measurement contradicts it (``rows``); ``contradictions`` is SG-TABLE's judged count."""

    rows: pd.DataFrame

    @property
    def contradictions(self) -> int:
        return int((~self.rows["holds"]).sum())


def _values(multiplier: Tensor) -> Tensor:
    return torch.unique(multiplier.round(decimals=5))


def _two_valued(multiplier: Tensor, scale: float) -> bool:
    values = _values(multiplier)
    return len(values) == 2 and abs(float(values[0])) < 1e-5 and abs(float(values[1]) - scale) < 1e-4 * scale


def table_checks(*, seed: int = 0, p: float = 0.3) -> TableChecks:
    """Check the pattern and scaling columns of the guide's six rows on the library (SG-TABLE).

    Probe inputs are strictly positive (so the multiplier ``output / input`` is defined) and seeded:
    (64, 32, 64) for the element-wise and recurrent rows, (64, 32, 8, 8) for spatial dropout.
    Pattern: the axes the training multiplier is shared over (:func:`shared_axes`: none for
    individual units, the map's H and W for feature maps, the time axis for "consistent across
    time"); for Gaussian dropout, a continuous multiplier; for Concrete dropout, a drop probability
    that receives a gradient. Scaling: the multiplier's values ({0, 1} for test-time scaling,
    {0, 1/(1 − p)} for training-time) and the evaluation output ((1 − p)·x, x, or the wrapped layer);
    Gaussian's "implicit": a multiplier of mean 1 within 0.01 and x at evaluation.
    """
    p = probability(p, "p", zero=False)
    seed = integer(seed, "seed", minimum=0)
    g = torch.Generator().manual_seed(seed)

    def probe(*shape: int) -> Tensor:
        return torch.rand(shape, generator=g) + 0.5

    def run(module: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        torch.manual_seed(seed)
        with torch.no_grad():
            train = (module.train()(x) / x).round(decimals=5)  # x·m·s / x is m·s up to one rounding
            evaluated = module.eval()(x)
        return train, evaluated

    rows = []

    def add(technique: str, pattern: str, pattern_ok: bool, scaling: str, scaling_ok: bool) -> None:
        guide = GUIDE_TABLE[technique]
        rows.append(dict(technique=technique, library=guide["variant"], guide_pattern=guide["pattern"],
                         measured_pattern=pattern, pattern_holds=bool(pattern_ok), guide_scaling=guide["scaling"],
                         measured_scaling=scaling, scaling_holds=bool(scaling_ok),
                         holds=bool(pattern_ok and scaling_ok)))

    x = probe(64, 32, 64)
    for technique, scale, test_factor in (("standard", 1.0, 1.0 - p), ("inverted", 1.0 / (1.0 - p), 1.0)):
        m, out = run(make_dropout(technique, p=p), x)
        axes = shared_axes(m)
        train_ok, eval_ok = _two_valued(m, scale), torch.allclose(out, test_factor * x, rtol=1e-6, atol=0)
        add(technique, "per element" if not axes else f"shared over axes {axes}", not axes,
            f"train ×{{0, {scale:.4g}}}: {train_ok}; eval ×{test_factor:.4g}: {eval_ok}", train_ok and eval_ok)
    for technique, variant, kwargs, probed, layout, shared in (
            ("spatial", "spatial", {}, probe(64, 32, 8, 8), "(N, C, H, W)", (2, 3)),
            ("variational", "locked", {"batch_first": True}, x, "(N, T, F)", (1,))):
        m, out = run(make_dropout(variant, p=p, **kwargs), probed)
        axes = shared_axes(m)
        train_ok, eval_ok = _two_valued(m, 1.0 / (1.0 - p)), torch.equal(out, probed)
        add(technique, f"shared over axes {axes} of {layout}", axes == shared,
            f"train ×{{0, {1 / (1 - p):.4g}}}: {train_ok}; eval identity: {eval_ok}", train_ok and eval_ok)
    m, out = run(make_dropout("gaussian", p=p), x)
    axes, distinct, mean = shared_axes(m), len(_values(m)), float(m.double().mean())
    eval_ok = torch.equal(out, x)
    add("gaussian", f"continuous multiplier ({distinct} distinct values), shared over {axes or 'no axis'}",
        distinct > 1000 and not axes, f"mean multiplier {mean:.4f}; eval identity: {eval_ok}",
        abs(mean - 1.0) <= 0.01 and eval_ok)
    torch.manual_seed(seed)
    layer = nn.Linear(128, 32)
    concrete = make_dropout("concrete", layer, p=p)
    x2 = probe(256, 128)
    concrete.train()
    (concrete(x2).pow(2).mean() + concrete.regularizer()).backward()
    grads = [prm.grad for name, prm in concrete.named_parameters() if "logit" in name]
    learned = bool(grads) and all(gr is not None and bool(gr.abs().sum() > 0) for gr in grads)
    with torch.no_grad():
        eval_ok = torch.equal(concrete.eval()(x2), layer(x2))
    add("concrete", f"drop probability learned (gradient on p_logit: {learned})", learned,
        f"eval = wrapped layer: {eval_ok}", eval_ok and learned)
    return TableChecks(rows=pd.DataFrame(rows))


# ---------------------------------------------------------------------------------------- family table


def family_table(cost: CostStudy, errors: pd.DataFrame) -> pd.DataFrame:
    """One row per arm: net, variant, family, the guide's row and cost cell (where it has one), test
    accuracy (mean over seeds) and its difference to the same net without dropout, time per epoch and
    step memory relative to no dropout (median over rounds), where the mask is shared and the
    test-time rule (the registry's metadata). ``errors`` is ``train_arms(...).errors`` (arm, seed, error %).
    """
    missing = {"arm", "seed", "error"} - set(errors.columns)
    if missing:
        raise ValueError(f"errors must have the columns arm, seed, error; missing {sorted(missing)}")
    accuracy = (100 - errors.groupby("arm")["error"].mean()).to_dict()
    by_variant = {row["variant"]: technique for technique, row in GUIDE_TABLE.items()}
    summary = cost.summary().set_index("arm")
    rows = []
    for label, (arch, variant, _) in cost.arms.items():
        if label not in accuracy:
            raise ValueError(f"errors has no runs of arm {label!r}")
        base = baseline_label(arch)
        info = get_variant(variant) if variant != "none" else None
        technique = by_variant.get(variant)
        rows.append({
            "net": ARCHITECTURES[arch], "variant": variant, "family": info.family if info else "—",
            "guide row": technique or "—", "guide cost": GUIDE_TABLE[technique]["cost"] if technique else "—",
            "accuracy %": accuracy[label], "Δ accuracy pp": accuracy[label] - accuracy[base],
            "time per epoch ×": summary.loc[label, "time_ratio"], "step memory ×": summary.loc[label, "memory_ratio"],
            "mask shared over": info.mask if info else "—", "test-time rule": info.test_time if info else "—",
        })
    return pd.DataFrame(rows)

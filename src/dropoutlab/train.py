"""The training loop: ``fit(model, data, config) -> History`` and ``evaluate``.

In-memory batching (a seeded ``randperm`` and slicing, no per-sample collation); every
random source seeded; per-epoch tidy records; regularisers of dropout modules added to the
loss; an optional rate scheduler; max-norm and gradient clipping; a NaN/inf guard; atomic
checkpoints with exact resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import tqdm

from ._io import atomic_path
from .paths import RUNS_ENV, dry_run, forecast
from .variants.base import DropoutBase

TASKS = ("classification", "reconstruction", "regression")
OPTIMIZERS = ("adam", "sgd")
# TrainConfig fields that do not change what a run computes (eval_splits only adds records: see run_key)
_KEY_EXCLUDED = ("progress", "checkpoint", "resume", "eval_splits", "device")
# The run store's checkpoint of a run in progress is rewritten at most this often (seconds): an
# interrupted stage loses at most this much training, and a small net trained for hundreds of short
# epochs does not spend most of its time writing checkpoints. An explicit `checkpoint` path is
# written every epoch; every run's final state is always written.
STORE_CHECKPOINT_SECONDS = 60.0


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    max_norm: float | None = None  # cap on each unit's incoming weight norm (Srivastava 2014 §5.1)
    grad_clip: float | None = None  # global gradient-norm clip
    regularizer_weight: float = 1.0  # multiplies the sum of the modules' regularizer() terms
    max_steps: int | None = None  # stop after this many updates (fixed update budgets)
    task: str = "classification"  # classification | reconstruction | regression
    eval_splits: tuple[str, ...] = ("val",)
    seed: int = 0
    device: str = "auto"  # auto (cuda, mps, cpu) | cpu | cuda | mps
    deterministic: bool = True
    progress: bool | None = None  # None: a bar only on a terminal and never under CI
    checkpoint: str | None = None  # path of the checkpoint file, written every epoch
    resume: bool = False  # continue from `checkpoint` if it exists

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"TrainConfig.task must be one of {TASKS}, got {self.task!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be ≥ 1, got {getattr(self, name)!r}")
        self.eval_splits = tuple(self.eval_splits)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class History:
    """Per-epoch tidy records: one row per (epoch, split) with loss, error, lr, rates, seconds.

    Split ``train_running`` holds the running averages over the epoch's minibatches (dropout
    on); the evaluated splits (``config.eval_splits``, e.g. ``train``, ``val``) are in eval mode.
    """

    records: list[dict[str, Any]] = field(default_factory=list)

    def to_frame(self, drop_timing: bool = True):
        """A pandas DataFrame; wall-clock columns are dropped by default (they differ every run)."""
        frame = pd.DataFrame(self.records)
        return frame.drop(columns=["seconds"]) if drop_timing and "seconds" in frame else frame

    def last(self, split: str, key: str = "error") -> float:
        rows = [r for r in self.records if r["split"] == split]
        if not rows:
            raise KeyError(f"History has no records for split {split!r}")
        return rows[-1][key]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu, cuda or mps, got {device!r}")
    return torch.device(device)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (else first buffer; CPU for a model with neither)."""
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextlib.contextmanager
def training_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every module's ``training`` flag on exit, exactly as it was on entry (also after an exception).

    The one way the package switches a model's modes for a while: ``with training_modes(model): model.eval(); ...``.
    """
    flags = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def dropout_rates(model: nn.Module) -> dict[str, float]:
    """Current drop rate of every dropout module (ours and torch's), keyed ``rate/<name>``."""
    rates = {}
    for name, module in model.named_modules():
        rate = getattr(module, "rate", None)
        if rate is None and isinstance(module, nn.modules.dropout._DropoutNd):
            rate = module.p
        if isinstance(rate, (int, float)):
            rates[f"rate/{name or 'model'}"] = float(rate)
    return rates


def regularized_modules(model: nn.Module) -> list[nn.Module]:
    """Submodules whose ``regularizer()`` can be non-zero.

    Every dropout module has a ``regularizer()``; the base class's is identically zero, so only the
    modules whose class defines its own count (Concrete, variational, ...). ``fit`` finds them once,
    not at every update: adding an exact zero to the loss changes nothing but costs a module walk.
    """
    return [m for m in model.modules() if m is not model and callable(getattr(m, "regularizer", None))
            and type(m).regularizer is not DropoutBase.regularizer]


def regularization(model: nn.Module, modules: list[nn.Module] | None = None) -> Tensor | None:
    """Sum of ``regularizer()`` over the regularised submodules (``modules``, default: found now); None if none."""
    terms = [m.regularizer() for m in (regularized_modules(model) if modules is None else modules)]
    return torch.stack([t.reshape(()) for t in terms]).sum() if terms else None


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    """Rescale each unit's incoming weight vector to norm ≤ ``max_norm`` (Linear and Conv layers)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            w = module.weight
            norms = w.flatten(1).norm(dim=1).clamp_min(1e-12)
            w.mul_((max_norm / norms).clamp(max=1.0).view(-1, *([1] * (w.dim() - 1))))


def loss_and_errors(output: Tensor, target: Tensor, task: str) -> tuple[Tensor, Tensor]:
    """Mean loss and the number of errors (misclassifications; 0 for other tasks), as tensors.

    :func:`loss_and_error_rate` gives the error as a fraction instead.
    """
    if task == "classification":
        return F.cross_entropy(output, target), (output.argmax(1) != target).sum()
    target = target.reshape(output.shape).to(output.dtype)
    return F.mse_loss(output, target), output.new_zeros((), dtype=torch.long)


def loss_and_error_rate(output: Tensor, target: Tensor, task: str) -> tuple[float, float]:
    """Mean loss and the error rate (fraction misclassified; NaN for other tasks), as floats."""
    loss, errors = loss_and_errors(output, target, task)
    return float(loss), int(errors) / len(target) if task == "classification" else math.nan


def task_targets(split, task: str) -> Tensor:
    """What ``task`` compares a model's output with: the flattened inputs for reconstruction, else the labels."""
    return split.x.flatten(1) if task == "reconstruction" else split.y


@torch.no_grad()
def evaluate(model: nn.Module, dataset, task: str = "classification", batch_size: int = 1000,
             device: str | torch.device = "auto") -> dict[str, float]:
    """Loss and error of ``model`` in eval mode on a dataset with ``x`` and ``y``; restores the mode."""
    device = resolve_device(device) if isinstance(device, str) else device
    x, y = dataset.x, task_targets(dataset, task)
    total_loss, total_errors = 0.0, 0
    with training_modes(model):
        model.eval()
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            loss, errors = loss_and_errors(model(xb), yb, task)
            total_loss += float(loss) * len(xb)
            total_errors += int(errors)
    return {"loss": total_loss / len(x), "error": total_errors / len(x)}


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def _rng_state() -> dict[str, Any]:
    # Plain lists and ints only, so the checkpoint loads with weights_only=True.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, **state: Any) -> None:
    """Write a checkpoint atomically: the previous one survives a crash mid-write."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as stream:
        torch.save(state, stream)  # to a stream: the archive's inner name is fixed, not the temporary file's


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain Python values only."""
    return torch.load(path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------
# The run store: train once, analyse many times
# --------------------------------------------------------------------------------------------


def _update_tensor(digest, tensor: Tensor) -> None:
    t = tensor.detach().cpu().contiguous()
    digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
    digest.update(memoryview(t.view(torch.uint8) if t.dtype == torch.bool else t.numpy()).cast("B"))


def data_fingerprint(split, task: str = "classification") -> str:
    """Hash of a split's inputs and targets (what a run trains or is evaluated on)."""
    digest = hashlib.blake2b(digest_size=12)
    _update_tensor(digest, split.x)
    _update_tensor(digest, task_targets(split, task))
    return digest.hexdigest()


def run_key(model: nn.Module, train_split, config: TrainConfig, scheduler=None) -> str:
    """Content key of a training run: everything that decides its result, nothing that does not.

    The model's class, structure (``repr``) and initial weights and buffers; the training split;
    every :class:`TrainConfig` field except progress, checkpoint, resume, device (the device *type*
    is included) and ``eval_splits`` (evaluation only adds records: a stored run evaluated on more
    splits serves a request for fewer); the scheduler's ``repr``. Two notebooks that train the same
    net on the same data with the same seed and settings get the same key, so the second reuses
    the first's run.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        _update_tensor(digest, tensor)
    settings = {k: v for k, v in asdict(config).items() if k not in _KEY_EXCLUDED}
    settings["device_type"] = resolve_device(config.device).type
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(repr(scheduler).encode())
    digest.update(data_fingerprint(train_split, config.task).encode())
    return digest.hexdigest()


def run_store() -> tuple[Path | None, list[Path]]:
    """``$DROPOUTLAB_RUNS``: (folder new runs are written to, folders searched for finished runs).

    Unset (the default, and the smoke and quick profiles): no store, every run trains. The notebook
    runner sets it for the full and paper profiles: the first folder is the stage's own output,
    the others are searched recursively (other stages' runs, other notebooks' runs).
    """
    value = os.environ.get(RUNS_ENV)
    if not value:
        return None, []
    folders = [Path(part) for part in value.split(os.pathsep) if part]
    return (folders[0], folders) if folders else (None, [])


def _find_run(key: str, eval_fingerprints: dict[str, str], folders: list[Path]) -> Path | None:
    """A finished run with ``key`` evaluated on (at least) the requested splits, if any folder holds one."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob(f"{key}*.pt")):
            try:
                state = load_checkpoint(path)
            except Exception:  # noqa: BLE001 — an unreadable file is not a hit
                continue
            stored = state.get("eval_fingerprints") or {}
            if state.get("complete") and all(stored.get(s) == fp for s, fp in eval_fingerprints.items()):
                return path
    return None


def _show_progress(config: TrainConfig) -> bool:
    """A tqdm bar over epochs: asked for, or on a terminal and never under CI."""
    if config.progress is not None:
        return config.progress
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress_line(text: str) -> None:
    """One line for the runner's log, never for the executed notebook.

    In a kernel started by the notebook runner, ``DROPOUTLAB_PROGRESS`` names a file the runner
    follows and prints to its own stderr (the terminal, DVC's log). A kernel captures its process's
    stdout and stderr into the notebook, so the line goes to that file instead. Elsewhere: nothing.
    """
    path = os.environ.get("DROPOUTLAB_PROGRESS")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(text + "\n")


class ForecastClock:
    """Times a training loop in a forecast (:func:`dropoutlab.paths.forecast`) and logs what it would take.

    ``cap(planned)``: the updates to run (the forecast's ``steps``, at most ``planned``); ``tick()``
    after every update; ``finish(...)`` appends one JSON line to the forecast's log: the loop's
    planned updates, the median seconds per update after the first two (warm-up), one evaluation
    pass's seconds and how many the loop would run, the seconds measured here, and the forecast
    ``planned × per update + evaluations × evaluation``. Outside a forecast every method does nothing.
    """

    WARMUP = 2

    def __init__(self, loop: str, what: str, seed: int | None = None) -> None:
        self.settings = forecast()
        self.loop, self.what, self.seed = loop, what, seed
        self.started = time.perf_counter()
        self.stamps = [self.started]

    @property
    def active(self) -> bool:
        return self.settings is not None

    def cap(self, planned: int) -> int:
        return planned if self.settings is None else min(planned, self.settings.steps)

    def tick(self) -> None:
        if self.settings is not None:
            self.stamps.append(time.perf_counter())

    def finish(self, planned: int, *, evaluation_seconds: float = 0.0, evaluations: int = 0) -> dict[str, Any] | None:
        if self.settings is None:
            return None
        gaps = np.diff(self.stamps)
        timed = gaps[self.WARMUP:] if len(gaps) > self.WARMUP else gaps
        per_update = float(np.median(timed)) if len(timed) else 0.0
        record = {"loop": self.loop, "what": self.what, "seed": self.seed, "planned_updates": int(planned),
                  "timed_updates": int(len(timed)), "seconds_per_update": per_update,
                  "evaluation_seconds": float(evaluation_seconds), "evaluations": int(evaluations),
                  "measured_seconds": time.perf_counter() - self.started,
                  "forecast_seconds": planned * per_update + evaluations * float(evaluation_seconds)}
        self.settings.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.settings.log, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        progress_line(f"    forecast: {self.loop} {self.what}, seed {self.seed}: {planned} updates × "
                      f"{per_update * 1e3:.1f} ms + {evaluations} evaluations × {evaluation_seconds:.2f} s "
                      f"≈ {record['forecast_seconds'] / 60:.1f} min")
        return record


def fit(model: nn.Module, data: dict[str, Any], config: TrainConfig | None = None, *,
        scheduler=None) -> History:
    """Train ``model`` on ``data["train"]`` and evaluate on ``config.eval_splits`` after each epoch.

    ``data`` maps split names to datasets with tensors ``x`` and ``y``. ``scheduler`` is a
    :class:`dropoutlab.schedules.DropoutScheduler` (stepped per update or per epoch, by its
    ``unit``). Returns the :class:`History`; the model is left in train mode with its final weights.
    In a dry run (:func:`dropoutlab.paths.dry_run`) it stops after the dry run's ``steps`` updates;
    in a forecast (:func:`dropoutlab.paths.forecast`) after the forecast's, logging what the whole
    run would take (:class:`ForecastClock`), and it neither stores nor loads a run.
    """
    config = config or TrainConfig()
    caps = dry_run()
    if caps is not None:  # a dry run: build and step the configuration, nothing more
        config = replace(config, max_steps=min(config.max_steps or caps.steps, caps.steps))
    clock = ForecastClock("fit", type(model).__name__, config.seed)
    planned = 0
    if clock.active:  # a forecast: time the first updates of the configuration, nothing more
        per_epoch = math.ceil(len(data["train"].x) / config.batch_size) if "train" in data else 0
        planned = config.epochs * per_epoch if config.max_steps is None else min(config.epochs * per_epoch,
                                                                                  config.max_steps)
        config = replace(config, max_steps=clock.cap(planned), checkpoint=None)
    evaluation_seconds = 0.0
    fit_started = time.perf_counter()
    missing = [s for s in ("train", *config.eval_splits) if s not in data]
    if missing:
        raise ValueError(f"fit: data has no split(s) {missing}; it has {sorted(data)}")
    device = resolve_device(config.device)
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda" and config.deterministic:
        # cuBLAS is deterministic only with a fixed workspace (PyTorch "Reproducibility" notes);
        # an op without a deterministic CUDA kernel warns instead of stopping a long GPU run.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(config.deterministic, warn_only=device.type != "cpu")
    seed_everything(config.seed)
    model.to(device).train()
    train = data["train"]
    x_all, y_all = train.x.to(device), task_targets(train, config.task).to(device)
    n = len(x_all)
    history, epoch, step = History(), 0, 0

    ckpt = Path(config.checkpoint) if config.checkpoint else None
    resume = config.resume
    store_dir, store_folders = run_store() if ckpt is None and not clock.active else (None, [])
    eval_fingerprints: dict[str, str] = {}
    if store_dir is not None:  # train once: a finished run is loaded, a partial one resumed
        key = run_key(model, train, config, scheduler)
        eval_fingerprints = {s: data_fingerprint(data[s], config.task) for s in config.eval_splits}
        found = _find_run(key, eval_fingerprints, store_folders)
        if found is not None:
            torch.use_deterministic_algorithms(previous_deterministic)
            return _load_finished(found, model, config, scheduler, fit_started)
        suffix = hashlib.blake2b(json.dumps(eval_fingerprints, sort_keys=True).encode(), digest_size=4).hexdigest()
        ckpt, resume = store_dir / f"{key}-{suffix}.pt", True
    checkpoint_every = 0.0 if store_dir is None else STORE_CHECKPOINT_SECONDS
    optimizer = _make_optimizer(model, config)
    regularized = regularized_modules(model)
    if ckpt is not None and resume and ckpt.exists():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        epoch, step, history = state["epoch"], state["step"], History(list(state["history"]))

    checkpointed = time.perf_counter()
    bar = tqdm(total=config.epochs, initial=epoch, desc="epochs", disable=not _show_progress(config), leave=False)
    try:
        while epoch < config.epochs and (config.max_steps is None or step < config.max_steps):
            started = time.perf_counter()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
            order = order.to(device)
            loss_sum = torch.zeros((), device=device)
            error_sum = torch.zeros((), dtype=torch.long, device=device)
            seen = 0
            for start in range(0, n, config.batch_size):
                idx = order[start:start + config.batch_size]
                output = model(x_all[idx])
                loss, errors = loss_and_errors(output, y_all[idx], config.task)
                reg = regularization(model, regularized)
                objective = loss if reg is None else loss + config.regularizer_weight * reg
                if not torch.isfinite(objective):
                    raise TrainingDiverged(
                        f"non-finite loss ({float(objective.detach())}) at epoch {epoch + 1}, step {step + 1}; "
                        f"the last good checkpoint is kept" + (f" at {ckpt}" if ckpt else " (none configured)"))
                optimizer.zero_grad(set_to_none=True)
                objective.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                if config.max_norm is not None:
                    apply_max_norm(model, config.max_norm)
                if scheduler is not None and scheduler.unit == "step":
                    scheduler.step()
                loss_sum += loss.detach() * len(idx)
                error_sum += errors
                seen += len(idx)
                step += 1
                clock.tick()
                if config.max_steps is not None and step >= config.max_steps:
                    break
            epoch += 1
            base = {"epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"], **dropout_rates(model)}
            # running averages over the epoch's minibatches, dropout active ("train" is the clean eval split)
            history.records.append({**base, "split": "train_running", "loss": float(loss_sum) / seen,
                                    "error": int(error_sum) / seen if config.task == "classification" else math.nan,
                                    "seconds": time.perf_counter() - started})
            evaluated = time.perf_counter()
            for split in config.eval_splits:
                metrics = evaluate(model, data[split], config.task, device=device)
                if config.task != "classification":
                    metrics["error"] = math.nan
                history.records.append({**base, "split": split, **metrics, "seconds": 0.0})
            evaluation_seconds = time.perf_counter() - evaluated
            if scheduler is not None and scheduler.unit == "epoch":
                scheduler.step()
            if ckpt is not None and time.perf_counter() - checkpointed >= checkpoint_every:
                checkpointed = time.perf_counter()
                save_checkpoint(ckpt, model=model.state_dict(), optimizer=optimizer.state_dict(),
                                scheduler=scheduler.state_dict() if scheduler is not None else None,
                                rng=_rng_state(), epoch=epoch, step=step, history=_untimed(history.records),
                                config=asdict(config), eval_fingerprints=eval_fingerprints, complete=False)
            bar.update(1)
        if ckpt is not None:  # finished: the last state, marked complete (a run store serves it from now on)
            save_checkpoint(ckpt, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict() if scheduler is not None else None,
                            rng=_rng_state(), epoch=epoch, step=step, history=_untimed(history.records),
                            config=asdict(config), eval_fingerprints=eval_fingerprints, complete=True)
    finally:
        bar.close()
        torch.use_deterministic_algorithms(previous_deterministic)
    if clock.active:
        per_epoch = math.ceil(n / config.batch_size)
        clock.finish(planned, evaluation_seconds=evaluation_seconds,
                     evaluations=math.ceil(planned / per_epoch) if config.eval_splits else 0)
        return history
    if config.progress is not False:
        progress_line(f"    fit: {type(model).__name__}, seed {config.seed}, {epoch} epochs ({step} updates) in "
                      f"{time.perf_counter() - fit_started:.1f} s")
    return history


def _untimed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows as a checkpoint keeps them: wall-clock seconds set to 0, so that the same run
    gives the same bytes every time (a DVC output hashed in dvc.lock must not change on a re-run)."""
    return [{**record, "seconds": 0.0} for record in records]


def _load_finished(path: Path, model: nn.Module, config: TrainConfig, scheduler, started: float) -> History:
    """Put a finished run's final state into ``model`` (and ``scheduler``, and the RNGs) and return its history.

    Everything after the call — weights, dropout rates, the random state Monte Carlo passes draw
    from — is as if the run had just been trained here; the history holds the running-average rows
    and the requested evaluation splits, in the requested order.
    """
    state = load_checkpoint(path)
    model.load_state_dict(state["model"])
    model.train()
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    by_epoch: dict[int, dict[str, dict[str, Any]]] = {}
    for record in state["history"]:
        by_epoch.setdefault(record["epoch"], {})[record["split"]] = record
    records = [rows[split] for _, rows in sorted(by_epoch.items())
               for split in ("train_running", *config.eval_splits) if split in rows]
    if config.progress is not False:
        progress_line(f"    fit: {type(model).__name__}, seed {config.seed}, {state['epoch']} epochs ({state['step']} "
                      f"updates) loaded from the run store ({path.name}) in {time.perf_counter() - started:.1f} s")
    return History(records)

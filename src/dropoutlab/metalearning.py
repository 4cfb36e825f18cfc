"""Few-shot episodes and MAML with and without meta dropout (claim MD-1, notebook 12).

Finn, Abbeel, Levine. "Model-agnostic meta-learning for fast adaptation of deep networks." ICML
2017 (MAML). Lee, Nam, Yang, Hwang. "Meta Dropout: learning to perturb latent features for
generalization." ICLR 2020.

The net is the 4-conv MAML backbone: four blocks [3×3 conv ('same') → noise → BatchNorm (batch
statistics) → ReLU → 2×2 max-pool] and a dense layer to the ``way`` logits. Meta dropout is
implemented in the form of the authors' code (``layers.py`` of haebeom-lee/metadrop, read, not
copied), which differs from :class:`dropoutlab.variants.adaptive.MetaDropout`:

* in every conv block the noise mean μ is computed from the block's **input** by a parallel 3×3
  conv φ_l (not from the activation it perturbs by a 1×1 conv); the conv output is perturbed by the
  package's functional :func:`~dropoutlab.variants.adaptive.meta_dropout`:
  ``h·softplus(z)``, ``z ~ N(μ, 1)`` when sampling, ``h·softplus(μ)`` otherwise;
* the dense layer gets **additive** noise: logits ``~ N(W f + b, σ²)`` with
  ``σ = softplus(w_φᵀ f + b_φ)`` (one scale per example, shared by the classes), the mean logits
  when not sampling.

The inner loop adapts θ (convs and dense layer) only, with one noise sample per step (meta dropout
arm); φ and the BatchNorm affine parameters are learned in the outer loop only. The query set is
passed without sampling. The MAML arm is the same net with both noises off (φ unused). Second-order
MAML differentiates through the inner steps (``create_graph=True``); first-order drops those terms.
Fast weights enter the module through :func:`torch.func.functional_call`.

Shapes: images ``(N, 1, H, W)``; logits ``(N, way)``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .checks import integer
from .paths import dry_run
from .train import ForecastClock, load_checkpoint, progress_line, run_store, save_checkpoint, seed_everything
from .variants.adaptive import meta_dropout

__all__ = [
    "ARMS",
    "EpisodeSampler",
    "MetaConvNet",
    "MetaRun",
    "adapt",
    "build_model",
    "meta_test",
    "meta_train",
]

ARMS = ("MAML", "meta dropout")



def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- episodes


class EpisodeSampler:
    """``way``-way ``shot``-shot episodes with ``query`` query images per class from a pool of classes.

    ``pools`` maps a class name to its images ``(n_c, 1, H, W)`` (every class needs ≥ shot + query
    images). An episode picks ``way`` classes without replacement, then ``shot + query`` images of
    each without replacement, and labels the classes 0..way−1 in the order drawn (a random
    permutation). All draws come from the ``generator`` passed to :meth:`sample`.
    """

    def __init__(self, pools: Mapping[str, Tensor], way: int, shot: int, query: int) -> None:
        self.way, self.shot, self.query = integer(way, "way", 2), integer(shot, "shot"), integer(query, "query")
        if len(pools) < self.way:
            raise ValueError(f"pools: a {self.way}-way episode needs ≥ {self.way} classes, got {len(pools)}")
        need = self.shot + self.query
        small = {name: len(x) for name, x in pools.items() if len(x) < need}
        if small:
            raise ValueError(f"pools: every class needs ≥ shot + query = {need} images, got {small}")
        shapes = {tuple(x.shape[1:]) for x in pools.values()}
        if len(shapes) != 1:
            raise ValueError(f"pools: every class must have images of one shape, got {sorted(shapes)}")
        self.names = list(pools)
        self.pools = [pools[name] for name in self.names]
        self.input_shape = shapes.pop()

    def fingerprint(self) -> str:
        """Hash of the class names, their images and the episode shape (what meta-training sees)."""
        digest = hashlib.blake2b(digest_size=12)
        digest.update(f"{self.way}-{self.shot}-{self.query}".encode())
        for name, pool in zip(self.names, self.pools, strict=True):
            digest.update(name.encode())
            digest.update(pool.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def sample(self, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One episode: ``(x_support (way·shot, ...), y_support, x_query (way·query, ...), y_query)``."""
        classes = torch.randperm(len(self.pools), generator=generator)[: self.way].tolist()
        xs, ys, xq, yq = [], [], [], []
        for label, c in enumerate(classes):
            pool = self.pools[c]
            pick = torch.randperm(len(pool), generator=generator)[: self.shot + self.query]
            xs.append(pool[pick[: self.shot]])
            xq.append(pool[pick[self.shot:]])
            ys.append(torch.full((self.shot,), label, dtype=torch.long))
            yq.append(torch.full((self.query,), label, dtype=torch.long))
        return torch.cat(xs), torch.cat(ys), torch.cat(xq), torch.cat(yq)


# ----------------------------------------------------------------------------- the net


class MetaConvNet(nn.Module):
    """The 4-conv MAML net with the authors' form of meta dropout (see the module docstring).

    θ: ``convs`` (3×3, 'same', ``channels`` maps each) and ``dense`` (features → ``way``); φ:
    ``noise_convs`` (parallel 3×3 convs on each block's input) and ``noise_dense`` (features → 1,
    the additive noise scale); ``norms``: BatchNorm affine parameters (batch statistics always, as
    MAML's transductive batch norm). φ is initialised N(0, 0.02²) with zero bias (the authors'
    initialiser), so μ ≈ 0 and the gate softplus(z) starts near log 2. Max-pooling is skipped
    once a map is 1 × 1 (8 × 8 digits: 8 → 4 → 2 → 1 → 1; 28 × 28: 28 → 14 → 7 → 3 → 1).

    ``forward(x, sample=False, noise=True, generator=None)``: ``noise=False`` is plain MAML;
    ``sample=True`` draws the noise (the inner loop), ``sample=False`` uses its deterministic form
    (the query pass). Input ``(N, C, H, W)``, output ``(N, way)``.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), way: int = 5, channels: int = 32,
                 blocks: int = 4) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        self.way, self.channels, blocks = integer(way, "way", 2), integer(channels, "channels"), integer(blocks, "blocks")
        ins = [input_shape[0]] + [self.channels] * (blocks - 1)
        self.convs = nn.ModuleList(nn.Conv2d(c, self.channels, 3, padding=1) for c in ins)
        side = int(input_shape[1])
        for _ in range(blocks):
            side = side // 2 if side >= 2 else side
        self.features = self.channels * side * side
        self.dense = nn.Linear(self.features, self.way)
        self.noise_convs = nn.ModuleList(nn.Conv2d(c, self.channels, 3, padding=1) for c in ins)
        self.noise_dense = nn.Linear(self.features, 1)
        self.norms = nn.ModuleList(nn.BatchNorm2d(self.channels, track_running_stats=False) for _ in ins)
        with torch.no_grad():
            for layer in [*self.noise_convs, self.noise_dense]:
                layer.weight.normal_(0.0, 0.02)
                layer.bias.zero_()

    def inner_names(self) -> list[str]:
        """Names of θ, the parameters the inner loop adapts (convs and dense layer)."""
        return [n for n, _ in self.named_parameters() if n.startswith(("convs.", "dense."))]

    def forward(self, x: Tensor, sample: bool = False, noise: bool = True,
                generator: torch.Generator | None = None) -> Tensor:
        for conv, noise_conv, norm in zip(self.convs, self.noise_convs, self.norms, strict=True):
            h = conv(x)
            if noise:
                h = meta_dropout(h, noise_conv(x), training=sample, generator=generator)
            x = F.relu(norm(h))
            if x.shape[-1] >= 2:
                x = F.max_pool2d(x, 2)
        f = x.flatten(1)
        logits = self.dense(f)
        if noise and sample:
            sigma = F.softplus(self.noise_dense(f))  # (N, 1): one scale per example
            eps = torch.randn(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
            logits = logits + sigma * eps
        return logits


# ----------------------------------------------------------------------------- MAML


def adapt(model: MetaConvNet, x: Tensor, y: Tensor, *, noise: bool, inner_steps: int, inner_lr: float,
          second_order: bool, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """θ' after ``inner_steps`` SGD steps on the support set ``(x, y)``; the other parameters as they are.

    Each step's loss is the cross-entropy of one noise sample (``sample=True``) when ``noise``.
    With ``second_order`` the steps stay in the graph (``create_graph=True``), so the outer gradient
    flows through them; otherwise the inner gradients are constants (first-order MAML).
    Returns the full parameter dict for :func:`torch.func.functional_call`.
    """
    params = dict(model.named_parameters())
    names = model.inner_names()
    for _ in range(inner_steps):
        logits = functional_call(model, params, (x,), {"sample": True, "noise": noise, "generator": generator})
        loss = F.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=second_order)
        params = {**params, **{n: params[n] - inner_lr * g for n, g in zip(names, grads, strict=True)}}
    return params


@dataclass(frozen=True)
class MetaRun:
    """One meta-training run: its learning curve (``history``: iteration, query loss, query accuracy)."""

    arm: str
    seed: int
    history: Any  # DataFrame


def meta_train(model: MetaConvNet, sampler: EpisodeSampler, *, arm: str, iterations: int, meta_batch: int,
               inner_steps: int, inner_lr: float, meta_lr: float, second_order: bool, seed: int,
               log_every: int = 50) -> MetaRun:
    """Meta-train ``model`` in place: Adam(``meta_lr``) on the mean query loss of ``meta_batch`` episodes.

    ``arm`` is ``"MAML"`` (no noise) or ``"meta dropout"``. The episodes come from a generator seeded
    with ``seed`` and the noise from a second one (``seed + 1``), so both arms of a seed see the same
    episodes in the same order. In a dry run the loop stops after the dry run's steps.
    """
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    iterations, meta_batch = integer(iterations, "iterations"), integer(meta_batch, "meta_batch")
    inner_steps, log_every = integer(inner_steps, "inner_steps"), integer(log_every, "log_every")
    inner_lr, meta_lr = _positive(inner_lr, "inner_lr"), _positive(meta_lr, "meta_lr")
    caps = dry_run()
    if caps is not None:
        iterations = min(iterations, caps.steps)
    clock = ForecastClock("meta_train", arm, int(seed))
    planned, iterations = iterations, clock.cap(iterations)  # a forecast times the first iterations only
    noise = arm == "meta dropout"
    settings = dict(arm=arm, iterations=iterations, meta_batch=meta_batch, inner_steps=inner_steps, inner_lr=inner_lr,
                    meta_lr=meta_lr, second_order=bool(second_order), seed=int(seed), log_every=log_every)
    store, folders = run_store() if not clock.active else (None, [])
    key = _run_key(model, sampler, settings) if store is not None else None
    if key is not None:
        for folder in folders:
            for path in sorted(folder.rglob(f"meta-{key}.pt")) if folder.is_dir() else []:
                state = load_checkpoint(path)
                model.load_state_dict(state["model"])
                progress_line(f"    meta_train: {arm}, seed {seed}: loaded from the run store ({path.name})")
                return MetaRun(arm=arm, seed=int(seed), history=pd.DataFrame(state["history"]))
    episodes = torch.Generator().manual_seed(int(seed))
    noise_gen = torch.Generator().manual_seed(int(seed) + 1)
    params = [p for n, p in model.named_parameters() if noise or not n.startswith("noise_")]
    optimizer = torch.optim.Adam(params, lr=meta_lr)
    rows, loss_sum, acc_sum, count = [], 0.0, 0.0, 0
    model.train()
    for it in range(1, iterations + 1):
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for _ in range(meta_batch):
            xs, ys, xq, yq = sampler.sample(episodes)
            fast = adapt(model, xs, ys, noise=noise, inner_steps=inner_steps, inner_lr=inner_lr,
                         second_order=second_order, generator=noise_gen)
            logits = functional_call(model, fast, (xq,), {"sample": False, "noise": noise})
            loss = F.cross_entropy(logits, yq)
            total = total + loss / meta_batch
            loss_sum += float(loss.detach())
            acc_sum += float((logits.argmax(1) == yq).double().mean())
            count += 1
        if not torch.isfinite(total):
            raise FloatingPointError(f"meta_train: non-finite query loss at iteration {it} ({arm}, seed {seed})")
        total.backward()
        optimizer.step()
        clock.tick()
        if it % log_every == 0 or it == iterations:
            rows.append(dict(arm=arm, seed=int(seed), iteration=it, loss=loss_sum / count, accuracy=100 * acc_sum / count))
            loss_sum, acc_sum, count = 0.0, 0.0, 0
    if clock.active:
        clock.finish(planned)
        return MetaRun(arm=arm, seed=int(seed), history=pd.DataFrame(rows))
    progress_line(f"    meta_train: {arm}, seed {seed}, {iterations} iterations")
    if key is not None:  # train once: the notebook's own stage finds the runs its training parts made
        store.mkdir(parents=True, exist_ok=True)
        save_checkpoint(store / f"meta-{key}.pt", model=model.state_dict(), history=rows)
    return MetaRun(arm=arm, seed=int(seed), history=pd.DataFrame(rows))


def _run_key(model: MetaConvNet, sampler: EpisodeSampler, settings: dict[str, Any]) -> str:
    """Content key of a meta-training run: the net's structure and initial weights, the episodes' pools, the settings."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(sampler.fingerprint().encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def meta_test(model: MetaConvNet, sampler: EpisodeSampler, *, arm: str, episodes: int, inner_steps: int,
              inner_lr: float, seed: int) -> np.ndarray:
    """Query accuracy (%) of each of ``episodes`` test episodes after adapting θ on its support set.

    The episodes come from a generator seeded with ``seed`` (the same episodes for every arm); the
    adaptation uses one noise sample per step (meta dropout arm), the query pass none.
    """
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    episodes = integer(episodes, "episodes")
    gen = torch.Generator().manual_seed(int(seed))
    noise_gen = torch.Generator().manual_seed(int(seed) + 1)
    noise = arm == "meta dropout"
    out = np.empty(episodes)
    for i in range(episodes):
        xs, ys, xq, yq = sampler.sample(gen)
        fast = adapt(model, xs, ys, noise=noise, inner_steps=inner_steps, inner_lr=inner_lr, second_order=False,
                     generator=noise_gen)
        with torch.no_grad():
            logits = functional_call(model, {k: v.detach() for k, v in fast.items()}, (xq,),
                                     {"sample": False, "noise": noise})
        out[i] = 100 * float((logits.argmax(1) == yq).double().mean())
    return out


def build_model(input_shape: Sequence[int], way: int, channels: int, seed: int) -> MetaConvNet:
    """A :class:`MetaConvNet` initialised from ``seed`` (both arms of a seed get the same weights)."""
    seed_everything(int(seed))
    return MetaConvNet(input_shape, way=way, channels=channels)

"""Dropout-rate schedules and the hook that writes them into a model.

Every schedule is a small callable object: ``schedule(t) -> float`` gives the **drop**
probability ``p`` at step (or epoch) ``t`` (t = 0, 1, 2, ...). Papers that schedule a
*keep* (retain) probability are converted with named helpers (:func:`curriculum_from_keep`,
:func:`keep_ramp_from_keep`) so the keep/drop flip happens in exactly one visible place.

=====================  ==============================================================
name                   p(t)
=====================  ==============================================================
``constant``           p
``linear``             start + (end − start)·min(t, T)/T
``exponential``        end + (start − end)·e^(−γt)
``cosine``             end + (start − end)·(1 + cos(π·min(t, T)/T))/2
``step``               values[i] for milestones[i−1] ≤ t < milestones[i]
``annealed``           start·(1 − min(t, T)/T)  (Rennie, Goel, Thomas, SLT 2014)
``curriculum``         1 − θ(t), θ(t) = (1 − θ̄)·e^(−γt) + θ̄  (Morerio et al., ICCV 2017)
``keep_ramp``          1 − kp(t), kp(t) = 1 − (min(t, T)/T)(1 − kp_target)  (Ghiasi et al. 2018)
``kl_warmup``          0 for t ≤ t0, (t − t0)/(t1 − t0), 1 for t ≥ t1  (a loss weight, not a rate)
=====================  ==============================================================

All built-in schedules are pure functions of ``t``: their ``state_dict()`` is empty and the
step counter lives in :class:`DropoutScheduler`, whose ``state_dict()`` makes a resumed run
continue the schedule exactly. :func:`depth_linear_rates` (from :mod:`dropoutlab.variants.structured`,
re-exported here) gives per-block DropPath / stochastic-depth rates (a function of depth, not of time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from .variants.base import DropoutBase, Select, is_dropout_module, select_modules  # re-exported
from .variants.structured import depth_linear_rates  # one implementation, re-exported here

__all__ = [
    "AnnealedSchedule",
    "ConstantSchedule",
    "CosineSchedule",
    "CurriculumSchedule",
    "DropoutScheduler",
    "ExponentialSchedule",
    "KLWarmup",
    "KeepRampSchedule",
    "LinearSchedule",
    "Schedule",
    "StepSchedule",
    "curriculum_from_keep",
    "depth_linear_rates",
    "is_dropout_module",
    "is_schedulable",
    "keep_ramp_from_keep",
    "list_schedules",
    "make_schedule",
]


# ----------------------------------------------------------------------------- validation


def _prob(value: float, what: str, owner: str) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise ValueError(f"{owner}: {what} must be in [0, 1], got {value!r}")
    return v


def _positive_int(value: Any, what: str, owner: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{owner}: {what} must be an integer, got {value!r}")
    v = int(value)
    if v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{owner}: {what} must be {bound}, got {value!r}")
    return v


def _nonneg(value: float, what: str, owner: str) -> float:
    v = float(value)
    if not (v >= 0.0 and math.isfinite(v)):
        raise ValueError(f"{owner}: {what} must be a finite number >= 0, got {value!r}")
    return v


def _check_t(t: int, owner: str) -> int:
    if isinstance(t, bool) or int(t) != t or t < 0:
        raise ValueError(f"{owner}: t must be an integer >= 0, got {t!r}")
    return int(t)


# ----------------------------------------------------------------------------- schedules


class Schedule:
    """Base class: ``schedule(t) -> p`` (drop probability at step/epoch ``t``).

    Subclasses implement :meth:`value` and list their constructor arguments in
    ``_fields``; :meth:`config` returns them so ``make_schedule(s.name, **s.config())``
    rebuilds an equal schedule.
    """

    name: str = "schedule"
    _fields: tuple[str, ...] = ()

    def value(self, t: int) -> float:
        raise NotImplementedError

    def __call__(self, t: int) -> float:
        return self.value(_check_t(t, type(self).__name__))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-friendly); ``make_schedule(name, **config())`` rebuilds it."""
        return {f: getattr(self, f) for f in self._fields}

    def state_dict(self) -> dict[str, Any]:
        """Mutable state; empty for every built-in schedule (they are pure functions of t)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} holds no state, got keys {sorted(state)}")

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.config() == other.config()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.config().items(), key=lambda kv: kv[0]))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class ConstantSchedule(Schedule):
    """``p(t) = p`` (fixed dropout; the baseline every schedule is compared with)."""

    name = "constant"
    _fields = ("p",)

    def __init__(self, p: float) -> None:
        self.p = _prob(p, "p", "constant schedule")

    def value(self, t: int) -> float:
        return self.p


class LinearSchedule(Schedule):
    """``p(t) = start + (end − start)·min(t, steps)/steps``; constant ``end`` after ``steps``."""

    name = "linear"
    _fields = ("start", "end", "steps")

    def __init__(self, start: float, end: float, steps: int) -> None:
        owner = f"{self.name} schedule"
        self.start = _prob(start, "start", owner)
        self.end = _prob(end, "end", owner)
        self.steps = _positive_int(steps, "steps", owner)

    def value(self, t: int) -> float:
        frac = min(t, self.steps) / self.steps
        return self.start + (self.end - self.start) * frac


class ExponentialSchedule(Schedule):
    """``p(t) = end + (start − end)·e^(−γt)``: exponential approach from ``start`` to ``end``."""

    name = "exponential"
    _fields = ("start", "end", "gamma")

    def __init__(self, start: float, end: float = 0.0, gamma: float = 1e-3) -> None:
        owner = "exponential schedule"
        self.start = _prob(start, "start", owner)
        self.end = _prob(end, "end", owner)
        self.gamma = _nonneg(gamma, "gamma", owner)

    def value(self, t: int) -> float:
        return self.end + (self.start - self.end) * math.exp(-self.gamma * t)


class CosineSchedule(Schedule):
    """``p(t) = end + (start − end)·(1 + cos(π·min(t, T)/T))/2`` (half cosine, flat after T)."""

    name = "cosine"
    _fields = ("start", "end", "steps")

    def __init__(self, start: float, end: float, steps: int) -> None:
        owner = "cosine schedule"
        self.start = _prob(start, "start", owner)
        self.end = _prob(end, "end", owner)
        self.steps = _positive_int(steps, "steps", owner)

    def value(self, t: int) -> float:
        frac = min(t, self.steps) / self.steps
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * frac))


class StepSchedule(Schedule):
    """Piecewise constant: ``values[0]`` before ``milestones[0]``, ``values[i]`` from ``milestones[i−1]``.

    ``len(values) == len(milestones) + 1``; milestones strictly increasing, >= 1. The
    curriculum paper's "switch" schedule is ``StepSchedule([0.0, p], [t_switch])``.
    """

    name = "step"
    _fields = ("values", "milestones")

    def __init__(self, values: Sequence[float], milestones: Sequence[int]) -> None:
        owner = "step schedule"
        self.values = [_prob(v, "each value", owner) for v in values]
        self.milestones = [_positive_int(m, "each milestone", owner) for m in milestones]
        if len(self.values) != len(self.milestones) + 1:
            raise ValueError(
                f"{owner}: need len(values) == len(milestones) + 1, got {len(self.values)} values "
                f"and {len(self.milestones)} milestones"
            )
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError(f"{owner}: milestones must be strictly increasing, got {self.milestones}")

    def value(self, t: int) -> float:
        i = sum(1 for m in self.milestones if t >= m)
        return self.values[i]


class AnnealedSchedule(LinearSchedule):
    """Annealed dropout (Rennie, Goel, Thomas, IEEE SLT 2014): the rate falls linearly from
    ``start`` to 0 over ``steps`` units (epochs in the paper) and stays 0:
    ``p(t) = start·(1 − min(t, N)/N)``.
    """

    name = "annealed"
    _fields = ("start", "steps")

    def __init__(self, start: float, steps: int) -> None:
        super().__init__(start, 0.0, steps)


class CurriculumSchedule(Schedule):
    """Curriculum dropout (Morerio, Cavazza, Volpi, Vidal, Murino, ICCV 2017).

    The paper schedules the **keep** probability ``θ(t) = (1 − θ̄)·e^(−γt) + θ̄`` (t = iteration,
    γ = 1e-3 in the authors' code), so ``θ(0) = 1`` and ``θ(∞) = θ̄``. This class stores the
    **drop** target ``p_target = 1 − θ̄`` and returns the drop probability
    ``p(t) = 1 − θ(t) = p_target·(1 − e^(−γt))`` (``p(0) = 0``, ``p(∞) = p_target``).
    Build it from the paper's keep value with :func:`curriculum_from_keep`.

    ``anti=True`` gives the paper's anti-curriculum ``θ(t) = 1 − (1 − θ̄)·e^(−γt)``, i.e.
    ``p(t) = p_target·e^(−γt)``: dropout starts at the target and fades out.
    """

    name = "curriculum"
    _fields = ("p_target", "gamma", "anti")

    def __init__(self, p_target: float, gamma: float = 1e-3, anti: bool = False) -> None:
        owner = "curriculum schedule"
        self.p_target = _prob(p_target, "p_target (drop probability; use curriculum_from_keep for θ̄)", owner)
        self.gamma = _nonneg(gamma, "gamma", owner)
        self.anti = bool(anti)

    @property
    def keep_target(self) -> float:
        """θ̄, the paper's asymptotic keep probability."""
        return 1.0 - self.p_target

    def keep(self, t: int) -> float:
        """θ(t), the keep probability in the paper's notation."""
        t = _check_t(t, "CurriculumSchedule.keep")
        decay = math.exp(-self.gamma * t)
        if self.anti:
            return 1.0 - (1.0 - self.keep_target) * decay
        return (1.0 - self.keep_target) * decay + self.keep_target

    def value(self, t: int) -> float:
        decay = math.exp(-self.gamma * t)
        return self.p_target * decay if self.anti else self.p_target * (1.0 - decay)


def curriculum_from_keep(keep_target: float, gamma: float = 1e-3, anti: bool = False) -> CurriculumSchedule:
    """Curriculum schedule from the paper's keep target θ̄ (e.g. 0.5 for fc, 0.75 conv, 0.9 input)."""
    theta = _prob(keep_target, "keep_target θ̄", "curriculum_from_keep")
    return CurriculumSchedule(1.0 - theta, gamma=gamma, anti=anti)


class KeepRampSchedule(Schedule):
    """DropBlock keep-probability ramp (Ghiasi, Lin, Le, NeurIPS 2018).

    keep falls linearly from 1 to ``kp_target`` over ``steps``: ``kp(t) = 1 − (min(t,T)/T)(1 − kp_target)``.
    Exposed as the drop probability ``p(t) = 1 − kp(t) = (min(t, T)/T)·p_target`` with
    ``p_target = 1 − kp_target``; build it from the paper's keep value with :func:`keep_ramp_from_keep`.
    """

    name = "keep_ramp"
    _fields = ("p_target", "steps")

    def __init__(self, p_target: float, steps: int) -> None:
        owner = "keep_ramp schedule"
        self.p_target = _prob(p_target, "p_target (drop probability; use keep_ramp_from_keep for keep)", owner)
        self.steps = _positive_int(steps, "steps", owner)

    def keep(self, t: int) -> float:
        """kp(t), the keep probability in the paper's notation."""
        return 1.0 - self(t)

    def value(self, t: int) -> float:
        return min(t, self.steps) / self.steps * self.p_target


def keep_ramp_from_keep(keep_target: float, steps: int) -> KeepRampSchedule:
    """DropBlock ramp from the paper's target keep probability (e.g. 0.9)."""
    kp = _prob(keep_target, "keep_target", "keep_ramp_from_keep")
    return KeepRampSchedule(1.0 - kp, steps)


class KLWarmup(Schedule):
    """Weight of the KL term: 0 up to ``start``, linear to 1 at ``end``, then 1.

    Sparse variational dropout (Molchanov et al., ICML 2017) uses ``start=5, end=20`` epochs:
    no KL before epoch 5, full KL from epoch 20. The value is a loss weight β, not a rate.
    """

    name = "kl_warmup"
    _fields = ("start", "end")

    def __init__(self, start: int = 5, end: int = 20) -> None:
        owner = "kl_warmup schedule"
        self.start = _positive_int(start, "start", owner, allow_zero=True)
        self.end = _positive_int(end, "end", owner, allow_zero=True)
        if self.end <= self.start:
            raise ValueError(f"{owner}: end must be > start, got start={start!r}, end={end!r}")

    def value(self, t: int) -> float:
        if t <= self.start:
            return 0.0
        if t >= self.end:
            return 1.0
        return (t - self.start) / (self.end - self.start)


_SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": ConstantSchedule,
    "linear": LinearSchedule,
    "exponential": ExponentialSchedule,
    "cosine": CosineSchedule,
    "step": StepSchedule,
    "annealed": AnnealedSchedule,
    "curriculum": CurriculumSchedule,
    "keep_ramp": KeepRampSchedule,
    "kl_warmup": KLWarmup,
}
_ALIASES = {"dropblock": "keep_ramp", "anti_curriculum": "curriculum"}


def list_schedules() -> list[str]:
    """Names accepted by :func:`make_schedule` (aliases: dropblock, anti_curriculum)."""
    return list(_SCHEDULES)


def make_schedule(name: str, **kw: Any) -> Schedule:
    """Build a schedule by name, e.g. ``make_schedule("linear", start=0.0, end=0.5, steps=100)``.

    ``curriculum`` and ``keep_ramp`` (alias ``dropblock``) take either the drop target
    ``p_target`` or the paper's ``keep_target``, not both. ``anti_curriculum`` is
    ``curriculum`` with ``anti=True``. Unknown names or arguments raise ``ValueError``.
    """
    if not isinstance(name, str):
        raise ValueError(f"make_schedule: name must be a string, got {name!r}")
    key = name.lower().replace("-", "_")
    if key not in _SCHEDULES and key not in _ALIASES:
        known = ", ".join(sorted([*_SCHEDULES, *_ALIASES]))
        raise ValueError(f"unknown schedule {name!r}; known: {known}")
    if key == "anti_curriculum":
        if kw.get("anti", True) is not True:
            raise ValueError("make_schedule('anti_curriculum'): anti must be True")
        kw = {**kw, "anti": True}
    key = _ALIASES.get(key, key)
    kw = dict(kw)
    if key in ("curriculum", "keep_ramp") and "keep_target" in kw:
        if "p_target" in kw:
            raise ValueError(f"make_schedule({name!r}): give p_target (drop) or keep_target, not both")
        kw["p_target"] = 1.0 - _prob(kw.pop("keep_target"), "keep_target", f"make_schedule({name!r})")
    try:
        return _SCHEDULES[key](**kw)
    except TypeError as err:  # unexpected / missing keyword
        fields = ", ".join(_SCHEDULES[key]._fields)  # type: ignore[attr-defined]
        raise ValueError(f"make_schedule({name!r}): bad arguments {sorted(kw)} ({err}); expected: {fields}") from None


# ----------------------------------------------------------------------------- module selection

def is_schedulable(module: nn.Module) -> bool:
    """True if a schedule can write the module's drop probability.

    ``torch.nn`` dropouts (a float ``.p``) and :class:`DropoutBase` modules with a ``p`` buffer
    whose rate is not learned.
    """
    if isinstance(module, _DropoutNd):
        return True
    if isinstance(module, DropoutBase):
        return not getattr(module, "learned", False) and getattr(module, "p", None) is not None
    return False


def _get_p(module: nn.Module) -> float:
    if isinstance(module, DropoutBase):
        return module.rate
    return float(module.p)


def _set_p(module: nn.Module, p: float, name: str) -> None:
    if isinstance(module, DropoutBase):
        module.set_p(p)
    else:
        module.p = _prob(p, f"rate for {name!r}", "DropoutScheduler")


# ----------------------------------------------------------------------------- scheduler

ScheduleLike = Schedule | Callable[[int], float] | float


def _as_schedule(s: ScheduleLike, owner: str) -> Callable[[int], float]:
    if isinstance(s, int | float) and not isinstance(s, bool):
        return ConstantSchedule(float(s))
    if not callable(s):
        raise ValueError(f"{owner}: schedule must be a Schedule, a callable t -> p or a float, got {s!r}; "
                         "build named schedules with make_schedule(name, **kw)")
    return s


class DropoutScheduler:
    """Write a scheduled drop probability into the dropout modules of a model.

    ``schedule`` is one schedule for every selected module, or a dict
    ``{module_name: schedule}`` for per-layer schedules (then ``select`` must be ``None``);
    a schedule is a :class:`Schedule` (see :func:`make_schedule`), any callable ``t -> p``,
    or a float (constant).
    ``select``: ``None`` (every schedulable dropout: non-learned :class:`DropoutBase` and
    ``torch.nn`` dropouts), a type or tuple of types, a list of names, or
    ``callable(name, module) -> bool``.

    The rate for ``t = 0`` is written at construction; :meth:`step` advances one ``unit``
    (``"step"`` = optimizer step, ``"epoch"``) and writes the new rate. :meth:`on_batch_end`
    and :meth:`on_epoch_end` call :meth:`step` only when they match ``unit``, so a training
    loop can call both. ``state_dict()`` carries ``t``; ``load_state_dict`` restores it and
    rewrites the rates, so a resumed run continues the schedule exactly.

    Example::

        sched = DropoutScheduler(model, curriculum_from_keep(0.5, gamma=1e-3), unit="step")
        for x, y in loader:
            ...; optimizer.step(); sched.step()
    """

    UNITS = ("step", "epoch")

    def __init__(self, model: nn.Module, schedule: ScheduleLike | Mapping[str, ScheduleLike], unit: str = "step",
                 select: Select = None) -> None:
        owner = "DropoutScheduler"
        if unit not in self.UNITS:
            raise ValueError(f"{owner}: unit must be one of {self.UNITS}, got {unit!r}")
        self.unit = unit
        if isinstance(schedule, Mapping):
            if select is not None:
                raise ValueError(f"{owner}: with per-layer schedules (a dict) leave select=None; "
                                 "the dict keys select the modules")
            if not schedule:
                raise ValueError(f"{owner}: the per-layer schedule dict is empty")
            modules = select_modules(model, list(schedule), default=is_schedulable, owner=owner)
            self.schedules = {n: _as_schedule(schedule[n], owner) for n in modules}
        else:
            modules = select_modules(model, select, default=is_schedulable, owner=owner)
            sched = _as_schedule(schedule, owner)
            self.schedules = {n: sched for n in modules}
        bad = [n for n, m in modules.items() if not is_schedulable(m)]
        if bad:
            kinds = {n: type(modules[n]).__name__ for n in bad}
            raise ValueError(f"{owner}: modules {kinds} have no schedulable rate "
                             "(not a dropout module, or a learned rate)")
        self.modules = modules
        self.t = 0
        self._write()

    # -- core
    def rate_at(self, t: int) -> dict[str, float]:
        """The rates the schedule gives at ``t`` (without writing them)."""
        return {n: float(s(t)) for n, s in self.schedules.items()}

    def _write(self) -> None:
        for name, p in self.rate_at(self.t).items():
            _set_p(self.modules[name], p, name)

    def step(self) -> None:
        """Advance one unit and write the new rates."""
        self.t += 1
        self._write()

    def on_batch_end(self) -> None:
        if self.unit == "step":
            self.step()

    def on_epoch_end(self) -> None:
        if self.unit == "epoch":
            self.step()

    def rates(self) -> dict[str, float]:
        """``{module_name: current p}`` read back from the modules."""
        return {n: _get_p(m) for n, m in self.modules.items()}

    # -- checkpointing
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"t": self.t, "unit": self.unit}
        sched_states = {n: s.state_dict() for n, s in self.schedules.items() if hasattr(s, "state_dict")}
        if any(sched_states.values()):
            state["schedules"] = sched_states
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "t" not in state:
            raise ValueError("DropoutScheduler.load_state_dict: state has no 't'")
        if state.get("unit", self.unit) != self.unit:
            raise ValueError(f"DropoutScheduler.load_state_dict: state was saved with unit={state['unit']!r}, "
                             f"this scheduler uses unit={self.unit!r}")
        for n, s in state.get("schedules", {}).items():
            if n in self.schedules and hasattr(self.schedules[n], "load_state_dict"):
                self.schedules[n].load_state_dict(s)
        self.t = _check_t(state["t"], "DropoutScheduler.load_state_dict")
        self._write()

    def __repr__(self) -> str:
        distinct = {id(s): s for s in self.schedules.values()}
        sched = next(iter(distinct.values())) if len(distinct) == 1 else "per-layer"
        return (f"DropoutScheduler(unit={self.unit!r}, t={self.t}, modules={list(self.modules)}, "
                f"schedule={sched!r})")

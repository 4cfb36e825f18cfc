"""Base class, validation and registry shared by every dropout variant.

Conventions (the contract every variant keeps):

* ``p`` is always the *drop* probability. Papers that give a keep (retain) rate are
  converted with :func:`keep_to_drop`.
* ``p`` lives in a 0-dim buffer: it is checkpointed with ``state_dict``, a schedule can
  change it in place (:meth:`DropoutBase.set_p`), and ``torch.compile`` does not recompile
  when it changes.
* Functional forms take ``training`` as a required keyword argument.
* Modules whose family has a regulariser (Concrete, variational) override
  :meth:`DropoutBase.regularizer`; the training loop adds it to the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

__all__ = [
    "DropoutBase",
    "Select",
    "VariantInfo",
    "drop_to_keep",
    "get_variant",
    "is_dropout_module",
    "keep_to_drop",
    "list_dropouts",
    "make_dropout",
    "register_dropout",
    "select_modules",
    "validate_p",
]

KINDS = ("activation", "layer", "wrapper")


def validate_p(p: float | Tensor, name: str, *, allow_one: bool = True) -> float:
    """Return ``p`` as a float, or raise ``ValueError`` naming the variant and the allowed range."""
    value = float(p)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (value >= 0.0 and upper_ok):  # also rejects NaN
        allowed = "[0, 1]" if allow_one else "[0, 1)"
        raise ValueError(f"{name}: drop probability p must be in {allowed}, got {p!r}")
    return value


def keep_to_drop(keep: float) -> float:
    """Convert a paper's keep (retain) probability into the drop probability ``p``."""
    if not 0.0 <= float(keep) <= 1.0:
        raise ValueError(f"keep probability must be in [0, 1], got {keep!r}")
    return 1.0 - float(keep)


def drop_to_keep(p: float) -> float:
    """Convert the drop probability ``p`` into a keep (retain) probability."""
    return 1.0 - validate_p(p, "drop_to_keep")


def check_rank(x: Tensor, allowed: tuple[int, ...], name: str, what: str = "input") -> None:
    """Raise ``ValueError`` unless ``x.dim()`` is one of ``allowed``."""
    if x.dim() not in allowed:
        ranks = ", ".join(str(r) for r in allowed)
        raise ValueError(f"{name}: {what} must have rank {ranks}, got shape {tuple(x.shape)}")


@dataclass(frozen=True)
class VariantInfo:
    """Registry metadata; ``docs/variants.md`` is generated from it."""

    name: str
    cls: type
    family: str
    paper: str
    equation: str
    kind: str  # "activation" (acts on activations) | "layer" (replaces a layer) | "wrapper" (wraps one)
    mask: str  # where the mask is shared, e.g. "per element", "channels", "time steps"
    test_time: str  # what happens at eval, e.g. "identity", "x·(1−p)"
    learned: bool = False  # the rate is learned (concrete, variational, meta, ...)


_REGISTRY: dict[str, VariantInfo] = {}
M = TypeVar("M", bound=type)


def register_dropout(
    name: str,
    *,
    family: str,
    paper: str,
    equation: str,
    kind: str,
    mask: str,
    test_time: str,
    learned: bool = False,
) -> Callable[[M], M]:
    """Class decorator that adds a variant to the registry under ``name``."""
    if kind not in KINDS:
        raise ValueError(f"register_dropout: kind must be one of {KINDS}, got {kind!r}")

    def decorate(cls: M) -> M:
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise ValueError(f"register_dropout: {name!r} is already registered")
        cls.variant_name = name
        _REGISTRY[name] = VariantInfo(name, cls, family, paper, equation, kind, mask, test_time, learned)
        return cls

    return decorate


def get_variant(name: str) -> VariantInfo:
    """Metadata of one variant; ``ValueError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dropout variant {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def make_dropout(name: str, *args: Any, **kwargs: Any) -> nn.Module:
    """Build a dropout module by registry name, e.g. ``make_dropout("spatial", p=0.2)``."""
    return get_variant(name).cls(*args, **kwargs)


def list_dropouts() -> list[VariantInfo]:
    """Every registered variant, in registration order."""
    return list(_REGISTRY.values())


class DropoutBase(nn.Module):
    """Common base: validated ``p`` in a buffer, ``extra_repr``, ``regularizer()``.

    Subclasses implement ``forward`` by calling their functional form with
    ``training=self.training``. Learned-rate variants set ``learned = True``, override
    :attr:`rate` and :meth:`set_p`, and do not call ``super().__init__(p)`` with a buffer
    (pass ``p=None``).
    """

    variant_name: ClassVar[str] = "dropout"
    learned: ClassVar[bool] = False
    allow_p_one: ClassVar[bool] = True
    #: True when one forward call draws a single mask for the whole batch (weight masks,
    #: ADL's per-step coin). ``predict_mc`` then cannot draw T samples by tiling the batch.
    batch_shared_mask: ClassVar[bool] = False

    def __init__(self, p: float | None = 0.5, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = bool(inplace)
        if p is not None:
            self.register_buffer("p", torch.tensor(self.check_p(p), dtype=torch.float32))

    def check_p(self, p: float | Tensor) -> float:
        return validate_p(p, self.variant_name, allow_one=self.allow_p_one)

    def set_p(self, p: float) -> None:
        """Set the drop probability in place (used by schedules)."""
        self.p.fill_(self.check_p(p))

    @property
    def rate(self) -> float:
        """Current (mean) drop probability as a Python float, for logging."""
        return float(self.p)

    def regularizer(self) -> Tensor:
        """Term added to the training loss; zero unless the family defines one."""
        ref = next(iter(self.buffers()), None)
        if ref is None:
            ref = next(iter(self.parameters()), torch.zeros(()))
        return ref.new_zeros(())

    def extra_repr(self) -> str:
        text = f"p={self.rate:.4g}"
        if self.inplace:
            text += ", inplace=True"
        return text


# ----------------------------------------------------------------------------- module selection
# Used by the schedules (which rates to change), MC dropout (which modules stay stochastic) and
# the analysis modules; they live here, with the base class they recognise.

Select = None | type | tuple[type, ...] | Sequence[str] | Callable[[str, nn.Module], bool]


def is_dropout_module(module: nn.Module) -> bool:
    """True for every :class:`DropoutBase` and every ``torch.nn`` dropout (``_DropoutNd``)."""
    return isinstance(module, DropoutBase | _DropoutNd)


def select_modules(model: nn.Module, select: Select, *, default: Callable[[nn.Module], bool],
                   owner: str) -> dict[str, nn.Module]:
    """Resolve a ``select`` argument to ``{qualified_name: module}`` (in ``named_modules`` order).

    ``select`` is ``None`` (every module for which ``default`` is true), a type or tuple of
    types, a list of module names (each must exist), or ``callable(name, module) -> bool``.
    Raises ``ValueError`` when nothing matches.
    """
    named = dict(model.named_modules())
    if select is None:
        chosen = {n: m for n, m in named.items() if default(m)}
        what = "no dropout module found"
    elif isinstance(select, type) or (isinstance(select, tuple) and select and all(isinstance(s, type)
                                                                                      for s in select)):
        chosen = {n: m for n, m in named.items() if isinstance(m, select)}
        what = f"select={select!r} matches no module"
    elif isinstance(select, str) or (isinstance(select, Iterable) and not callable(select)):
        names = [select] if isinstance(select, str) else list(select)
        missing = [n for n in names if n not in named]
        if missing:
            raise ValueError(f"{owner}: no module named {missing}; known: {[n for n in named if n]}")
        chosen = {n: named[n] for n in names}
        what = "select is an empty list"
    elif callable(select):
        chosen = {n: m for n, m in named.items() if select(n, m)}
        what = "the select callable matches no module"
    else:
        raise ValueError(f"{owner}: select must be None, a type, a tuple of types, names or a callable, "
                         f"got {select!r}")
    if not chosen:
        raise ValueError(f"{owner}: {what} in {type(model).__name__}")
    return chosen

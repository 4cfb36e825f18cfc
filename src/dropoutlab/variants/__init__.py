"""Every dropout variant, one file per family; importing this package fills the registry."""

# Each module registers its variants; the order here is the order of list_dropouts() and the docs.
# isort: off
from . import bernoulli, noise, recurrent, bayesian, concrete, adaptive, structured  # noqa: F401
# isort: on
from .base import (
    DropoutBase,
    VariantInfo,
    drop_to_keep,
    get_variant,
    keep_to_drop,
    list_dropouts,
    make_dropout,
    register_dropout,
    validate_p,
)

__all__ = [
    "DropoutBase",
    "VariantInfo",
    "drop_to_keep",
    "get_variant",
    "keep_to_drop",
    "list_dropouts",
    "make_dropout",
    "register_dropout",
    "validate_p",
]

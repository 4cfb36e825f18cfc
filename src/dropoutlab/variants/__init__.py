"""Every dropout variant, one file per family; importing this package fills the registry."""

from . import adaptive, bayesian, bernoulli, concrete, noise, recurrent, structured  # noqa: F401  (each registers its variants)
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

"""Every dropout variant, one file per family; importing this package fills the registry."""

from . import bernoulli  # noqa: F401  (registers standard, inverted, spatial)
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

"""dropoutlab: a reproducible research compendium on dropout."""

from .variants import DropoutBase, get_variant, keep_to_drop, list_dropouts, make_dropout

__version__ = "0.1.0"
__all__ = ["DropoutBase", "get_variant", "keep_to_drop", "list_dropouts", "make_dropout", "__version__"]

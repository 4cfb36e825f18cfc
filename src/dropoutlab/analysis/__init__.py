"""Measurements used by the notebooks: statistics over seeds and claim-specific analyses."""

from .stats import Summary, diff_ci, holm, mean_ci, summarize

__all__ = ["Summary", "diff_ci", "holm", "mean_ci", "summarize"]

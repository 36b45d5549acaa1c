"""Evaluation metrics that torchmetrics does not provide."""

from glimpse.metrics.cider import CIDErD, cider_d

__all__ = ["CIDErD", "cider_d"]

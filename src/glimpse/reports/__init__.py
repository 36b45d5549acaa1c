"""Comparing runs without a server (``python compare.py``): reading run folders, finding what
differs, the comparison table and its formats, the pivot, the curves, the wandb Table."""

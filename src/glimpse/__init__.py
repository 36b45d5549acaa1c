"""glimpse: a PyTorch Lightning + Hydra framework for sequence and attention models in vision."""

__version__ = "0.1.0"

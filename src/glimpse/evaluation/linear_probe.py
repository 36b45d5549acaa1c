"""``python eval.py ckpt_path=PATH eval=linear [data=...]``: linear evaluation of the frozen
backbone, the protocol of BYOL (sec. 4.1) and DINO (sec. 4.1) on cached features.

Every image of the data's train and val splits goes through the backbone once, unaugmented
(:mod:`glimpse.evaluation.features`); a linear classifier is trained on the train features by
cross-entropy with AdamW and a cosine learning rate over ``linear.epochs`` (conf/eval.yaml:
epochs, lr, weight_decay, batch_size), and scored on the val features. The features are
standardised with the train split's per-dimension mean and standard deviation first (MAE's
probe puts a BatchNorm without affine parameters there, He et al. 2022), so one learning rate
suits backbones of any feature scale. The papers train their probes on augmented crops for
100 epochs; cached features are the cheap variant (lower numbers, the same ranking).
Reports ``linear/acc1`` and ``linear/acc5`` (top-``min(5, C)``) on the val split.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.evaluation.features import SplitFeatures, evaluation_device, labelled_features


class LinearProbe(nn.Module):
    """``features (B, D) -> logits (B, C)``: ``W (x - mean) / std + b`` with the train
    features' per-dimension ``mean`` and ``std`` fixed."""

    def __init__(self, mean: Tensor, std: Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.linear = nn.Linear(mean.shape[0], num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear((features - self.mean) / self.std)


def train_linear_probe(
    train: SplitFeatures,
    num_classes: int,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> LinearProbe:
    """A :class:`LinearProbe` trained on ``train`` for ``epochs`` passes of shuffled batches
    (AdamW, cosine learning rate from ``lr`` to 0 over the steps)."""
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"linear.epochs={epochs} and linear.batch_size={batch_size} must be at least 1 and "
            f"linear.lr={lr} positive."
        )
    features, labels = train.features.to(device), train.labels.to(device)
    std = features.std(dim=0, correction=0).clamp_min(1e-6)
    probe = LinearProbe(features.mean(dim=0), std, num_classes).to(device)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(features) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=generator).to(device)
        for start in range(0, len(features), batch_size):
            rows = order[start : start + batch_size]
            loss = F.cross_entropy(probe(features[rows]), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return probe.eval()


@torch.no_grad()
def topk_accuracy(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """``{"acc1": ..., "acc5": ...}``: the share of rows whose label is among the
    ``min(k, C)`` highest logits."""
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = ranked == labels.to(ranked.device).view(-1, 1)
    return {
        f"acc{k}": hits[:, : min(k, logits.shape[1])].any(dim=1).float().mean().item() for k in ks
    }


def evaluate(task: Any, data_cfg: DictConfig | None, cfg: DictConfig) -> dict[str, float]:
    """Top-1 and top-5 accuracy on ``data_cfg``'s val split of a linear classifier trained on
    ``task``'s frozen features of its train split."""
    options = cfg.get("linear") or {}
    data = labelled_features(task, data_cfg, "linear")
    device = evaluation_device()
    with torch.enable_grad():
        probe = train_linear_probe(
            data.train,
            len(data.class_names),
            epochs=int(options.get("epochs", 100)),
            lr=float(options.get("lr", 1e-3)),
            weight_decay=float(options.get("weight_decay", 0.0)),
            batch_size=int(options.get("batch_size", 256)),
            seed=int(cfg.get("seed", 0)),
            device=device,
        )
    with torch.no_grad():
        logits = probe(data.val.features.to(device))
    accuracy = topk_accuracy(logits, data.val.labels)
    return {f"linear/{name}": value for name, value in accuracy.items()}

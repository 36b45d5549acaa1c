"""``python eval.py ckpt_path=PATH eval=knn [data=...]``: DINO's weighted kNN classifier on the
frozen backbone's features (Caron et al. 2021, sec. 4.1; Wu et al. 2018).

The labelled train split is the memory bank, the val split the queries: each query's ``k``
nearest train features by cosine similarity vote for their labels with weight ``exp(s / T)``
(:func:`~glimpse.metrics.knn.knn_classify`; ``knn.k`` 20 and ``knn.temperature`` 0.07 in
conf/eval.yaml, DINO's). Reports ``knn/acc1`` and ``knn/acc5`` (top-``min(5, C)``).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from glimpse.evaluation.features import labelled_features
from glimpse.metrics.knn import knn_accuracy


def evaluate(task: Any, data_cfg: DictConfig | None, cfg: DictConfig) -> dict[str, float]:
    """kNN top-1 and top-5 accuracy of ``task``'s features on ``data_cfg``'s val split."""
    options = cfg.get("knn") or {}
    data = labelled_features(task, data_cfg, "knn")
    accuracy = knn_accuracy(
        data.val.features,
        data.val.labels,
        data.train.features,
        data.train.labels,
        len(data.class_names),
        k=int(options.get("k", 20)),
        temperature=float(options.get("temperature", 0.07)),
    )
    return {f"knn/{name}": value for name, value in accuracy.items()}

"""``python eval.py ckpt_path=PATH eval=retrieval [data=...]``: image->text and text->image
recall@K of a CLIP checkpoint on the test pairs of image-text data.

The data is the checkpoint's own (without ``data=``) or any image-text config
(``data=flickr8k_pairs``, ``data=coco_pairs``, ``data=image_text data.path=...``). Its images
are resized and normalised as the checkpoint's were and its captions tokenized with the
checkpoint's tokenizer (the checkpoint's image size, normalisation, tokenizer and context
length replace the config's); its zero-shot set is not read. Every caption is a query of
text->image retrieval and every distinct image one of image->text, where any of its captions
is a hit (:mod:`glimpse.metrics.retrieval`). Reports ``retrieval/i2t_recall{K}`` and
``retrieval/t2i_recall{K}`` for K in ``retrieval.ks``, and their mean ``retrieval/recall_mean``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from glimpse.batches import IMAGE_TEXT, ImageTextPairs
from glimpse.evaluation.features import evaluation_device
from glimpse.evaluation.zeroshot import check_clip
from glimpse.metrics.retrieval import pair_recalls

log = logging.getLogger(__name__)


def _pairs_config(task: Any, data_cfg: DictConfig | None) -> DictConfig:
    """``data_cfg`` with the checkpoint's image size, normalisation and tokenizer, and no
    zero-shot set."""
    if not data_cfg or getattr(get_class(data_cfg._target_), "KIND", None) != IMAGE_TEXT:
        raise ValueError(
            "eval=retrieval needs image-text pairs: pass data=shapes_pairs, data=flickr8k_pairs, "
            "data=coco_pairs or data=image_text data.path=FILE."
        )
    spec = task.spec
    data_cfg = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))
    with open_dict(data_cfg):
        data_cfg.image_size = spec.image_size
        data_cfg.mean, data_cfg.std = list(spec.mean), list(spec.std)
        data_cfg.tokenizer = spec.tokenizer
        data_cfg.context_length = task.context_length
        data_cfg.zeroshot = None
    return data_cfg


@torch.no_grad()
def evaluate(task: Any, data_cfg: DictConfig | None, cfg: DictConfig) -> dict[str, float]:
    """Recall@K in both directions of the CLIP ``task`` on ``data_cfg``'s test pairs."""
    check_clip(task, "retrieval")
    ks = [int(k) for k in (cfg.get("retrieval") or {}).get("ks", (1, 5, 10))]
    datamodule = instantiate(_pairs_config(task, data_cfg))
    datamodule.prepare_data()
    datamodule.setup("test")
    device = evaluation_device()
    task.eval().to(device)
    image_emb, text_emb, image_ids = [], [], []
    batch: ImageTextPairs
    for batch in datamodule.pairs_loader("test"):
        image_emb.append(task.image_features(batch.images.to(device)).float().cpu())
        text_emb.append(task.text_features(batch.tokens.to(device)).float().cpu())
        image_ids.append(batch.image_ids)
    ids = torch.cat(image_ids)
    log.info("Retrieval: %d images, %d captions", ids.unique().numel(), len(ids))
    recalls = pair_recalls(torch.cat(image_emb), torch.cat(text_emb), ids, ks)
    return {f"retrieval/{name}": value for name, value in recalls.items()}

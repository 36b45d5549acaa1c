"""``python eval.py ckpt_path=PATH eval=zeroshot [data=...]``: a CLIP checkpoint classifies
labelled images by prompts of their class names (Radford et al. 2021, sec. 3.1).

The images are the val split of a labelled image config (``data=imagefolder data.root=DIR``,
``data=shapes``, ``data=imagenette``), or every image of a bare ``DIR/<class>/*`` folder without
``train/`` and ``val/`` (``data=imagefolder data.root=DIR`` too), or, without ``data=``, the
zero-shot set of the checkpoint's own image-text data (``data.zeroshot``). Each image is
resized and centre-cropped as the checkpoint's evaluation pairs were (its image size,
``crop_ratio`` and normalisation), whatever the labelled config says.

Classes are named by their folders, underscores read as spaces, or by the names the data config
gives them (Imagenette's words, ``data.class_names``); ``zeroshot.class_names`` in
conf/eval.yaml maps folder names to other names for the prompts. ``zeroshot.templates`` is a
template set of the checkpoint (``simple``, ``imagenet``, ``shapes``) or a list of templates;
null keeps the checkpoint's. Reports ``zeroshot/acc1`` and ``zeroshot/acc5``
(top-``min(5, C)``) as fractions.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from glimpse.batches import IMAGE_TEXT
from glimpse.data.image_text.datamodule import pair_transforms
from glimpse.data.images.decode import open_rgb
from glimpse.data.images.image_folder import (
    ClassFolder,
    ImageFolderDataModule,
    class_folders,
    collate_labelled_images,
)
from glimpse.evaluation.features import evaluation_device, extract_features

log = logging.getLogger(__name__)


def checkpoint_transform(task: Any) -> v2.Compose:
    """The evaluation transform of the checkpoint's pairs: its spec's image size and
    normalisation, and its data config's ``crop_ratio`` (1.0 when it has none)."""
    spec = task.spec
    data = (task.run_config or {}).get("data") or {}
    crop_ratio = float(data.get("crop_ratio", 1.0))
    return pair_transforms(spec.image_size, (1.0, 1.0), crop_ratio, spec.mean, spec.std)["eval"]


def check_clip(task: Any, name: str) -> None:
    """Raise ValueError unless ``task`` is a CLIP task (``eval=name`` needs its encoders)."""
    if not hasattr(task, "zero_shot_weights"):
        raise ValueError(
            f"eval={name} needs a CLIP checkpoint; {type(task).__name__} has no text encoder."
        )


def _labelled_config(data_cfg: DictConfig | None) -> DictConfig:
    """The labelled image config to classify: ``data_cfg`` itself, or the zero-shot set of an
    image-text config."""
    if not data_cfg:
        raise ValueError(
            "eval=zeroshot needs labelled images: pass data=imagefolder data.root=DIR (class "
            "folders), data=shapes or data=imagenette."
        )
    if getattr(get_class(data_cfg._target_), "KIND", None) == IMAGE_TEXT:
        if not data_cfg.get("zeroshot"):
            raise ValueError(
                "eval=zeroshot needs labelled images and the checkpoint's data names no "
                "zero-shot set; pass data=imagefolder data.root=DIR (class folders)."
            )
        return data_cfg.zeroshot
    return data_cfg


def _bare_folder(data_cfg: DictConfig) -> Path | None:
    """``data.root`` when it holds class folders directly (no ``train/``), else None."""
    root = data_cfg.get("root")
    if root is None or (Path(root) / "train").is_dir() or not Path(root).is_dir():
        return None
    return Path(root)


def labelled_images(
    data_cfg: DictConfig, transform: v2.Transform
) -> tuple[Dataset, list[str], list[str]]:
    """``(dataset of (image, label) samples read with transform, class folder names, class
    names)`` of ``data_cfg``'s val split, or of a bare folder of class folders."""
    root = _bare_folder(data_cfg)
    if root is not None:
        folders = class_folders(root)
        if len(folders) < 2:
            raise ValueError(f"{root} holds {len(folders)} class folder(s); zero-shot needs 2.")
        dataset = ClassFolder(root, folders, transform=transform, loader=open_rgb)
        names = [dict(data_cfg.get("class_names") or {}).get(f, f) for f in folders]
        return dataset, folders, names
    datamodule = instantiate(data_cfg)
    if not isinstance(datamodule, ImageFolderDataModule):
        raise ValueError(
            f"eval=zeroshot classifies labelled images; {type(datamodule).__name__} yields "
            "none. Pass data=imagefolder data.root=DIR, data=shapes or data=imagenette."
        )
    datamodule.prepare_data()
    datamodule.setup("validate")
    dataset = copy.copy(datamodule.dataset("val"))
    dataset.transform, dataset.loader = transform, open_rgb
    spec = datamodule.spec
    return dataset, list(spec.metadata["class_folders"]), list(spec.class_names)


def prompt_names(
    folders: Sequence[str], names: Sequence[str], mapping: Mapping[str, str] | None
) -> list[str]:
    """The name of each class in the prompts: ``mapping[folder]`` when given, else the data's
    name with underscores read as spaces (``golden_retriever`` -> ``golden retriever``)."""
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(folders))
    if unknown:
        raise ValueError(
            f"zeroshot.class_names maps {', '.join(unknown)}, which are not class folders of "
            f"the data ({', '.join(folders[:10])}{', ...' if len(folders) > 10 else ''})."
        )
    return [
        str(mapping.get(folder, name.replace("_", " ")))
        for folder, name in zip(folders, names, strict=True)
    ]


def evaluate(task: Any, data_cfg: DictConfig | None, cfg: DictConfig) -> dict[str, float]:
    """Zero-shot top-1 and top-5 accuracy of the CLIP ``task`` on the labelled images of
    ``data_cfg`` (see the module docstring)."""
    check_clip(task, "zeroshot")
    options = cfg.get("zeroshot") or {}
    labelled_cfg = _labelled_config(data_cfg)
    dataset, folders, names = labelled_images(labelled_cfg, checkpoint_transform(task))
    class_map = options.get("class_names")
    names = prompt_names(folders, names, OmegaConf.to_container(class_map) if class_map else None)
    templates = options.get("templates")
    if OmegaConf.is_list(templates):
        templates = list(templates)
    loader = DataLoader(
        dataset,
        batch_size=int(labelled_cfg.get("batch_size", 64)),
        num_workers=int(labelled_cfg.get("num_workers", 0)),
        collate_fn=collate_labelled_images,
    )
    device = evaluation_device()
    features = extract_features(task, loader, device)
    with torch.no_grad():
        weights = task.zero_shot_weights(names, templates).float().cpu()
    logits = features.features @ weights
    top_k = min(5, len(names))
    ranked = logits.topk(top_k, dim=1).indices
    hits = ranked == features.labels[:, None]
    log.info(
        "Zero-shot: %d images of %d classes (%s)",
        len(features.labels),
        len(names),
        ", ".join(names[:10]) + (", ..." if len(names) > 10 else ""),
    )
    return {
        "zeroshot/acc1": float(hits[:, 0].float().mean()),
        "zeroshot/acc5": float(hits.any(dim=1).float().mean()),
    }

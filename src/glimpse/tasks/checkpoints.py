"""Reading glimpse checkpoints: the one place the task layer opens a ``.ckpt`` file.

A glimpse checkpoint is Lightning's (``state_dict``, ``hyper_parameters``, optimizer states)
plus a ``"glimpse"`` entry (the task's class, the resolved run config, the code version;
:meth:`glimpse.tasks.base.GlimpseTask.on_save_checkpoint`). Every file is read with
``torch.load(weights_only=True)``, so a checkpoint can hold tensors and plain values only.

* :func:`load_task` rebuilds the task a checkpoint was saved from (``eval.py``, a
  distillation teacher);
* :func:`load_backbone` gives a classifier the self-supervised backbone of a BYOL or DINO
  checkpoint (``model.pretrained=PATH``), :func:`load_pretrained` that or torchvision's weights;
* :func:`resnet_trunk_state` reads the ResNet trunk of an image classifier's checkpoint (a
  DETR backbone's start, ``model.pretrained=PATH`` of the detector);
* :func:`load_network_weights` starts a network from another checkpoint's (``model.init_from``).

A file that is missing, not a checkpoint, or holds weights that do not fit raises
:class:`~glimpse.errors.MissingFileError` or :class:`~glimpse.errors.CheckpointError` naming
the file and the fix.
"""

from __future__ import annotations

import logging
import pickle
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from torch import Tensor, nn

from glimpse.errors import CheckpointError, MissingFileError
from glimpse.models.pretrained import fit_state_dict, is_checkpoint_source, load_torchvision_weights

log = logging.getLogger(__name__)

#: Where glimpse checkpoints keep a ResNet trunk: the image classifier's network (``net.``).
TRUNK_PREFIXES = ("net.",)


def read_checkpoint(path: str | PathLike, option: str = "ckpt_path") -> dict[str, Any]:
    """The contents of the checkpoint file ``path``, which the user gave as ``option``, read on
    the CPU with ``torch.load(weights_only=True)``.

    Raises MissingFileError when there is no such file and CheckpointError when it is not a
    PyTorch checkpoint of tensors and plain values."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"{option}={path} does not exist; pass the path of a glimpse checkpoint (.ckpt)."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise CheckpointError(
            f"{option}={path} is not a readable PyTorch checkpoint ({error}); pass a .ckpt "
            "file that train.py wrote."
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{option}={path} holds a {type(checkpoint).__name__}, not a checkpoint; pass a "
            ".ckpt file that train.py wrote."
        )
    return checkpoint


def load_task(ckpt_path: str | PathLike, option: str = "ckpt_path") -> tuple[Any, dict[str, Any]]:
    """(the task saved in the glimpse checkpoint ``ckpt_path``, rebuilt from the checkpoint
    alone and in evaluation-ready state, the checkpoint's ``"glimpse"`` entry)."""
    checkpoint = read_checkpoint(ckpt_path, option)
    meta = checkpoint.get("glimpse")
    if not meta:
        raise CheckpointError(
            f"{option}={ckpt_path} is not a glimpse checkpoint (it has no 'glimpse' entry); "
            "pass a .ckpt file that train.py wrote."
        )
    task = get_class(meta["task"])(**checkpoint["hyper_parameters"])
    task.load_state_dict(checkpoint["state_dict"])
    task.run_config = meta.get("config")
    return task, meta


def load_backbone(net: nn.Module, net_config: dict, path: str | PathLike) -> None:
    """Load the self-supervised backbone of the glimpse checkpoint ``path`` (a BYOL or DINO
    task's :meth:`exported_backbone`) into ``net``, built from ``net_config``; its head
    (``head.``/``fc.``) stays fresh and a ViT's position table is resized to ``net``'s grid.

    Any network with the same parameter names and shapes takes the weights (torchvision's
    ``resnet18`` and ``glimpse.models.resnet.resnet`` with ``arch=resnet18``); CheckpointError
    when the checkpoint has no backbone to export or its backbone does not fit ``net``."""
    task, meta = load_task(path, option="model.pretrained")
    if not hasattr(task, "exported_backbone"):
        raise CheckpointError(
            f"model.pretrained={path} is a {meta['task']} checkpoint, which has no "
            "self-supervised backbone to export; use a BYOL or DINO checkpoint."
        )
    config, state = task.exported_backbone()
    try:
        fitted = fit_state_dict(net, state)
    except CheckpointError as error:
        raise CheckpointError(
            f"{error} model.pretrained={path} holds the backbone of {config} (model.net="
            f"{net_config}); build model.net as the backbone was."
        ) from None
    net.load_state_dict(fitted, strict=False)
    log.info("Loaded %d tensors of the %s backbone of %s", len(fitted), meta["task"], path)


def load_pretrained(net: nn.Module, net_config: dict, source: str) -> None:
    """Load ``source``'s weights into ``net``, which was built from ``net_config``:
    torchvision's ImageNet weights (``"torchvision"``,
    :func:`~glimpse.models.pretrained.load_torchvision_weights`) or the backbone of a BYOL or
    DINO checkpoint (a ``.ckpt`` path, :func:`load_backbone`)."""
    if is_checkpoint_source(source):
        load_backbone(net, net_config, source)
    else:
        load_torchvision_weights(net, net_config, source)


def resnet_trunk_state(path: str | PathLike, arch: str) -> dict[str, Tensor]:
    """The torchvision-named state dict (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...)
    of the ``arch`` ResNet in the glimpse checkpoint at ``path``: an image classifier trained
    with ``model=resnet model.net.arch=<arch>`` (its ``fc`` is dropped by the loader).

    Raises CheckpointError naming the file when it holds no ResNet trunk, or one of another
    arch or with the small-image stem (its ``conv1`` is 3x3)."""
    checkpoint = read_checkpoint(path, option="model.pretrained")
    weights = checkpoint.get("state_dict", {})
    net = (checkpoint.get("hyper_parameters") or {}).get("net") or {}
    for prefix in TRUNK_PREFIXES:
        if f"{prefix}layer4.0.conv1.weight" not in weights:
            continue
        if net.get("arch") != arch or net.get("small_images"):
            raise CheckpointError(
                f"{path} holds a {net.get('arch')} trunk (small_images="
                f"{net.get('small_images')}); the backbone needs a {arch} with the standard stem: "
                f"train one with model=resnet model.net.arch={arch} model.net.small_images=false."
            )
        return {k.removeprefix(prefix): v for k, v in weights.items() if k.startswith(prefix)}
    raise CheckpointError(
        f"{path} holds no ResNet trunk; pass a checkpoint of model=resnet (an image classifier)."
    )


def load_network_weights(
    net: nn.Module, path: str | PathLike, fresh_prefix: str, option: str = "model.init_from"
) -> None:
    """Start ``net`` from the network (``net.*`` weights) of the glimpse checkpoint ``path``.

    Tensors whose name starts with ``fresh_prefix`` (a class head) keep their fresh
    initialisation when their shape differs (another class count); any other difference is a
    CheckpointError naming the file and the tensor."""
    checkpoint = read_checkpoint(path, option)
    state = {
        key.removeprefix("net."): value
        for key, value in checkpoint.get("state_dict", {}).items()
        if key.startswith("net.")
    }
    if not state:
        raise CheckpointError(
            f"{option}={path} holds no network (no net.* weights); pass a checkpoint of the "
            "same task."
        )
    own = net.state_dict()
    fresh = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if any(not key.startswith(fresh_prefix) for key in fresh):
        raise CheckpointError(
            f"{path} holds a network of another shape ({fresh[0]}: "
            f"{tuple(state[fresh[0]].shape)} vs {tuple(own[fresh[0]].shape)}); use the same "
            "model.net as the checkpoint's."
        )
    kept = {k: v for k, v in state.items() if k not in fresh}
    missing, unexpected = net.load_state_dict(kept, strict=False)
    if unexpected or set(missing) - set(fresh):
        raise CheckpointError(
            f"{path} does not fit model.net (missing {sorted(set(missing) - set(fresh))[:3]}, "
            f"unexpected {unexpected[:3]}); use the same model.net as the checkpoint's."
        )
    log.info(
        "Started from %s: %d tensors loaded%s",
        path,
        len(kept),
        f", {fresh_prefix}* kept fresh" if fresh else "",
    )

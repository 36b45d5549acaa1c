"""Pretrained weights for glimpse's networks: ImageNet weights from torchvision
(``model.pretrained=torchvision``) or a self-supervised backbone (``model.pretrained=PATH``).

torchvision downloads the state dict (into ``$TORCH_HOME/hub/checkpoints``, hash-checked) and
the converters of :mod:`glimpse.models.convert` rename it to our modules. Three adaptations
make the weights fit a network built for another task:

* a classifier head of another size (10 Imagenette classes instead of 1000) is left at its
  fresh initialisation, with a log line saying so;
* a ViT built for another image size gets the position table resized to its patch grid;
* any other mismatch is an error naming the parameter.

``model.pretrained=PATH`` names a BYOL or DINO checkpoint (``.ckpt``); reading it is the task
layer's job (:func:`glimpse.tasks.checkpoints.load_backbone`), which adapts its backbone to a
classifier with the same :func:`fit_state_dict`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from torch import Tensor, nn
from torchvision.models import get_model_weights

from glimpse.errors import CheckpointError, ConfigError
from glimpse.hub import torchvision_weights_state
from glimpse.models.convert.torchvision_swin import swin_state_from_torchvision
from glimpse.models.convert.torchvision_vit import vit_state_from_torchvision
from glimpse.models.layers import resize_position_embedding
from glimpse.models.vit import VisionTransformer

log = logging.getLogger(__name__)

Converter = Callable[[dict[str, Tensor]], dict[str, Tensor]]


def _same_names(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return state


#: glimpse network factories -> (torchvision model name, state-dict converter).
TORCHVISION_SOURCES: dict[str, tuple[str, Converter]] = {
    "glimpse.models.vit.vit_base_patch16": ("vit_b_16", vit_state_from_torchvision),
    "glimpse.models.vit.vit_base_patch32": ("vit_b_32", vit_state_from_torchvision),
    "glimpse.models.vit.vit_large_patch16": ("vit_l_16", vit_state_from_torchvision),
    "glimpse.models.swin.swin_tiny": ("swin_t", swin_state_from_torchvision),
    "glimpse.models.swin.swin_small": ("swin_s", swin_state_from_torchvision),
    "glimpse.models.swin.swin_base": ("swin_b", swin_state_from_torchvision),
}
HEAD_PREFIXES = ("head.", "fc.")


def torchvision_source(net_config: dict) -> tuple[str, Converter]:
    """The torchvision model whose weights fit the network ``net_config`` describes."""
    target = net_config["_target_"]
    if target == "glimpse.models.resnet.resnet":
        return net_config.get("arch", "resnet50"), _same_names
    if target in TORCHVISION_SOURCES:
        return TORCHVISION_SOURCES[target]
    known = ", ".join([*TORCHVISION_SOURCES, "glimpse.models.resnet.resnet"])
    raise ConfigError(
        f"model.pretrained=torchvision has no torchvision weights for {target}; it has them "
        f"for {known}."
    )


def torchvision_state_dict(name: str) -> dict[str, Tensor]:
    """The default ImageNet weights of torchvision's model ``name``, downloaded (or read from
    the cache) through torchvision."""
    weights = get_model_weights(name).DEFAULT
    log.info("Loading torchvision's %s weights %s", name, weights)
    return torchvision_weights_state(weights)


def fit_state_dict(net: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Adapt converted weights ``state`` to ``net``: head of another size dropped, ViT
    position table resized; raises CheckpointError naming any other mismatch."""
    own = net.state_dict()
    fitted: dict[str, Tensor] = {}
    for key, value in state.items():
        target = own.get(key)
        if target is None:
            raise CheckpointError(
                f"The pretrained weights hold {key!r}, which the network lacks; build the "
                "network with the pretrained model's architecture."
            )
        if (
            value.shape != target.shape
            and key == "pos_embed"
            and isinstance(net, VisionTransformer)
        ):
            side = round((value.shape[1] - net.num_prefix_tokens) ** 0.5)
            value = resize_position_embedding(
                value, side, net.grid_size, num_prefix_tokens=net.num_prefix_tokens
            )
        if value.shape != target.shape:
            if key.startswith(HEAD_PREFIXES):
                log.info(
                    "Pretrained %s %s does not fit %s: kept fresh",
                    key,
                    tuple(value.shape),
                    tuple(target.shape),
                )
                continue
            raise CheckpointError(
                f"Pretrained {key} has shape {tuple(value.shape)}, the network's is "
                f"{tuple(target.shape)}; build the network with the pretrained model's sizes."
            )
        fitted[key] = value
    missing = sorted(set(own) - set(fitted))
    unexpected_missing = [k for k in missing if not k.startswith(HEAD_PREFIXES)]
    if unexpected_missing:
        raise CheckpointError(
            f"The pretrained weights lack {', '.join(unexpected_missing[:5])}; build the "
            "network with the pretrained model's architecture."
        )
    return fitted


def is_checkpoint_source(source: str) -> bool:
    """Whether ``model.pretrained=source`` names a checkpoint file rather than ``torchvision``."""
    return source != "torchvision" and Path(source).suffix == ".ckpt"


def check_pretrained_source(net_config: dict, source: str) -> tuple[str, Converter] | None:
    """The torchvision model and converter for ``source``'s weights of the network
    ``net_config`` describes, or None for a checkpoint path (read and checked when loaded, so a
    classifier rebuilt from its own checkpoint does not need it); ConfigError for anything
    else."""
    if is_checkpoint_source(source):
        return None
    if source != "torchvision":
        raise ConfigError(
            f"model.pretrained={source!r} is not known; use torchvision, the path of a BYOL or "
            "DINO checkpoint (.ckpt), or null."
        )
    return torchvision_source(net_config)


def load_torchvision_weights(net: nn.Module, net_config: dict, source: str) -> None:
    """Load torchvision's ImageNet weights (``source`` is ``"torchvision"``) into ``net``, which
    was built from ``net_config``, adapted by :func:`fit_state_dict`."""
    name, convert = check_pretrained_source(net_config, source)
    fitted = fit_state_dict(net, convert(torchvision_state_dict(name)))
    net.load_state_dict(fitted, strict=False)
    log.info("Loaded %d pretrained tensors of torchvision's %s", len(fitted), name)

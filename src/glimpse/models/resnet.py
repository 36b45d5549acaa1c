"""ResNet (He et al. 2016) from torchvision: the CNN baseline of the classification
experiments and a teacher for DeiT.

torchvision's implementation is used as it is; this module only adapts its stem to small
images and zero-initialises the last BatchNorm of each residual branch.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models import ResNet, get_model

from glimpse.errors import CheckpointError, ConfigError


def resnet(
    arch: str = "resnet50",
    num_classes: int = 1000,
    small_images: bool = False,
    zero_init_residual: bool = True,
) -> ResNet:
    """A torchvision ResNet (``resnet18`` ... ``resnet152``, ``resnext50_32x4d``,
    ``wide_resnet50_2``) with random weights: ``(B, 3, H, W) -> logits (B, num_classes)``.

    Args:
        arch: the torchvision model name.
        num_classes: outputs of the final linear layer.
        small_images: replace the 7x7 stride-2 convolution and the max-pool of the stem by a
            3x3 stride-1 convolution (the CIFAR variant, He et al. 2016 sec. 4.2), so 32 px
            images keep a 4x4 map before the pooling instead of 1x1.
        zero_init_residual: start each residual branch's last BatchNorm at 0 so every block is
            the identity at first (Goyal et al. 2017), which trains faster.
    """
    if not arch.startswith(("resnet", "resnext", "wide_resnet")):
        raise ConfigError(
            f"model.net.arch={arch!r} is not a torchvision ResNet; use resnet18, resnet50, "
            "resnext50_32x4d, wide_resnet50_2 or another ResNet-family name."
        )
    model = get_model(
        arch, weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual
    )
    if small_images:
        width = model.conv1.out_channels
        model.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    return model


def load_trunk_state(
    module: nn.Module, state: dict[str, Tensor], skip: Callable[[str], bool], described: str
) -> None:
    """Load the tensors of a torchvision ResNet state dict ``state`` whose key ``skip`` does not
    reject (the classifier, unused stages) into ``module``, strictly: a missing, unexpected or
    differently shaped tensor is a CheckpointError naming ``described`` (the module and its
    options)."""
    trunk = {key: value for key, value in state.items() if not skip(key)}
    own = module.state_dict()
    missing = sorted(set(own) - set(trunk))
    unexpected = sorted(set(trunk) - set(own))
    wrong = sorted(k for k in set(own) & set(trunk) if own[k].shape != trunk[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"The ImageNet state dict does not fit {described} (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, other shape {wrong[:3]}); use the torchvision "
            "weights of the same arch."
        )
    module.load_state_dict(trunk)

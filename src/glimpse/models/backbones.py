"""Classification networks as feature extractors for self-supervised learning.

BYOL and DINO train a backbone ``f: (B, 3, H, W) -> (B, D)`` and throw their heads away
afterwards. The backbone here is the very network the image classifier builds (the same
factories: :func:`glimpse.models.resnet.resnet`, :mod:`glimpse.models.vit`,
:mod:`glimpse.models.swin`, :mod:`glimpse.models.pvt`) with its classification head replaced by
the identity, so its parameter names are the classifier's: a self-supervised backbone's state
dict loads into a classifier of the same configuration (the head stays fresh), which is how the
pretrained weights are exported.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet

from glimpse.models.deit import DistilledVisionTransformer


def feature_backbone(net: nn.Module) -> tuple[nn.Module, int]:
    """``net`` with its classification head replaced by ``nn.Identity``, and its feature width.

    The returned module is ``net`` itself, changed in place, mapping images
    ``(B, 3, H, W)`` to features ``(B, D)``:

    * torchvision ResNet: ``fc`` -> identity; the feature is the global average pool of
      ``layer4``, ``D = fc.in_features`` (512 for ResNet-18, 2048 for ResNet-50);
    * ViT, Swin, PVT (any network with a ``head`` and ``num_features``): ``head`` -> identity
      and ``num_classes = 0``, as built with ``num_classes=0``; the feature is what the head
      read: ViT's final class token ``LN(z_L^0)`` (the DINO paper's feature), Swin's average
      of the last stage, PVT's class token or average; ``D = num_features``.

    A network whose head is already the identity is returned as it is. Raises ValueError for
    DeiT (its distillation token learns from a teacher's labels; use the ViT of the same size)
    and for a network of no known family.
    """
    if isinstance(net, DistilledVisionTransformer):
        raise ValueError(
            "A DeiT network has a distillation token trained from a teacher's labels, which "
            "self-supervised training has none of; use the ViT of the same size (e.g. "
            "glimpse.models.vit.vit_small_patch16 for deit_small_distilled_patch16)."
        )
    if isinstance(net, ResNet):
        if isinstance(net.fc, nn.Linear):
            dim = net.fc.in_features
            net.fc = nn.Identity()
            return net, dim
        return net, net.inplanes
    if isinstance(getattr(net, "head", None), nn.Module) and hasattr(net, "num_features"):
        net.head = nn.Identity()
        net.num_classes = 0
        return net, int(net.num_features)
    raise ValueError(
        f"Cannot make a feature backbone of a {type(net).__name__}: use a torchvision ResNet "
        "(glimpse.models.resnet.resnet) or one of glimpse's ViT, Swin or PVT networks."
    )

"""feature_backbone: the classifiers' networks as feature extractors, their features, and
state dicts that load back into the classifiers."""

from __future__ import annotations

import pytest
import torch
from conftest import random_images
from torch import nn
from torch.testing import assert_close

from glimpse.models.backbones import feature_backbone
from glimpse.models.deit import deit_test
from glimpse.models.pvt import pvt_test
from glimpse.models.resnet import resnet
from glimpse.models.swin import swin_test
from glimpse.models.vit import vit_test


def _resnet18(num_classes: int = 10) -> nn.Module:
    return resnet("resnet18", num_classes=num_classes, small_images=True)


def test_resnet_feature_is_the_average_pool_of_layer4():
    torch.manual_seed(0)
    backbone, dim = feature_backbone(_resnet18())
    assert dim == 512 and isinstance(backbone.fc, nn.Identity)
    x = random_images(32, 32)
    backbone.eval()
    with torch.no_grad():
        trunk = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
        for stage in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
            trunk = stage(trunk)
        assert_close(backbone(x), trunk.mean(dim=(2, 3)))
    assert backbone(x).shape == (2, 512)


def test_resnet50_feature_width_is_2048():
    _, dim = feature_backbone(resnet("resnet50", num_classes=3))
    assert dim == 2048


def test_vit_feature_is_the_normalised_class_token():
    torch.manual_seed(0)
    backbone, dim = feature_backbone(vit_test())
    assert dim == 32 and backbone.num_classes == 0
    x = random_images(32, 32)
    with torch.no_grad():
        assert_close(backbone(x), backbone.forward_features(x)[:, 0])
    _, attentions = backbone.forward_features(x, return_attention=True)
    assert attentions[-1].shape == (2, 2, 1 + 64, 1 + 64)


def test_swin_feature_is_the_average_of_the_last_map():
    torch.manual_seed(0)
    backbone, width = feature_backbone(swin_test())
    assert width == backbone.num_features == 32
    x = random_images(32, 32)
    with torch.no_grad():
        assert_close(backbone(x), backbone.forward_features(x).mean(dim=(1, 2)))


def test_pvt_feature_is_the_normalised_class_token():
    torch.manual_seed(0)
    backbone, width = feature_backbone(pvt_test())
    assert width == backbone.num_features == 32 and backbone.class_token
    x = random_images(32, 32)
    with torch.no_grad():
        assert_close(backbone(x), backbone.forward_features(x)[:, 0])


@pytest.mark.parametrize(
    "factory",
    [_resnet18, vit_test, swin_test, pvt_test],
    ids=["resnet18", "vit", "swin", "pvt"],
)
def test_backbone_state_dict_loads_into_the_classifier_leaving_only_the_head(factory):
    torch.manual_seed(0)
    backbone, _ = feature_backbone(factory())
    torch.manual_seed(1)
    classifier = factory()
    result = classifier.load_state_dict(backbone.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(
        key.split(".")[0] in {"fc", "head"} for key in result.missing_keys
    )
    for name, value in backbone.state_dict().items():
        assert torch.equal(classifier.state_dict()[name], value)


def test_a_backbone_already_headless_is_returned_as_it_is():
    backbone, dim = feature_backbone(_resnet18())
    again, dim_again = feature_backbone(backbone)
    assert again is backbone and dim_again == dim == 512
    vit, width = feature_backbone(vit_test(num_classes=0))
    assert width == 32 and isinstance(vit.head, nn.Identity)


def test_deit_and_unknown_networks_are_refused_with_advice():
    with pytest.raises(ValueError, match="vit_small_patch16"):
        feature_backbone(deit_test())
    with pytest.raises(ValueError, match="Sequential"):
        feature_backbone(nn.Sequential(nn.Linear(2, 2)))

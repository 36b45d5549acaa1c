"""torchvision ImageNet weights into glimpse networks, through torchvision's own download
cache (filled here with randomly initialised torchvision models, so nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import get_model, get_model_weights
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

from glimpse.batches import LABELLED_IMAGES
from glimpse.data.spec import DataSpec
from glimpse.models.convert.torchvision_vit import vit_state_from_torchvision
from glimpse.models.layers import resize_position_embedding
from glimpse.models.pretrained import fit_state_dict
from glimpse.models.vit import VisionTransformer
from glimpse.tasks.classification import ImageClassifier


def _cache_random_torchvision_weights(name: str, torch_home: Path) -> dict[str, torch.Tensor]:
    """Save a random-weight torchvision ``name`` where torchvision looks for its download."""
    torch.manual_seed(0)
    state = get_model(name, weights=None).state_dict()
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / Path(get_model_weights(name).DEFAULT.url).name)
    return state


def _classifier(net: dict, image_size: int, num_classes: int = 7) -> ImageClassifier:
    spec = DataSpec(
        kind=LABELLED_IMAGES,
        class_names=tuple(f"c{i}" for i in range(num_classes)),
        image_size=image_size,
    ).to_dict()
    return ImageClassifier(
        spec=spec,
        net=net,
        optimizer={"lr": 1e-3, "weight_decay": 0.05},
        scheduler={"warmup_steps": 1, "min_lr_ratio": 0.1},
        image_size_arg=None if "resnet" in net["_target_"] else "img_size",
        pretrained="torchvision",
        figures=None,
    )


def test_resnet_takes_torchvision_weights_but_keeps_a_fresh_head(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = _cache_random_torchvision_weights("resnet18", tmp_path)
    task = _classifier({"_target_": "glimpse.models.resnet.resnet", "arch": "resnet18"}, 64)
    assert not torch.equal(task.net.conv1.weight, source["conv1.weight"])
    task.setup("fit")
    loaded = task.net.state_dict()
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"):
        torch.testing.assert_close(loaded[key], source[key])
    assert task.net.fc.weight.shape == (7, 512)


def test_swin_takes_converted_torchvision_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source = _cache_random_torchvision_weights("swin_t", tmp_path)
    task = _classifier({"_target_": "glimpse.models.swin.swin_tiny"}, 224)
    task.setup("fit")
    loaded = task.net.state_dict()
    torch.testing.assert_close(
        loaded["layers.2.blocks.3.attn.relative_position_bias_table"],
        source["features.5.3.attn.relative_position_bias_table"],
    )
    torch.testing.assert_close(loaded["patch_embed.proj.weight"], source["features.0.0.weight"])


def _small_torchvision_vit() -> TorchvisionViT:
    torch.manual_seed(0)
    return TorchvisionViT(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=1000,
    ).eval()


def _small_vit(img_size: int, num_classes: int, embed_dim: int = 32) -> VisionTransformer:
    """Our ViT of :func:`_small_torchvision_vit`'s shape, or another width."""
    return VisionTransformer(
        img_size=img_size,
        patch_size=8,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
    )


def test_fitted_vit_weights_compute_torchvision_logits_at_the_same_size():
    reference = _small_torchvision_vit()
    ours = _small_vit(img_size=32, num_classes=1000).eval()
    ours.load_state_dict(fit_state_dict(ours, vit_state_from_torchvision(reference.state_dict())))
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(images), reference(images), atol=1e-4, rtol=1e-4)


def test_vit_for_another_size_and_class_count_gets_a_resized_table_and_a_fresh_head():
    state = vit_state_from_torchvision(_small_torchvision_vit().state_dict())
    ours = _small_vit(img_size=48, num_classes=10)
    fitted = fit_state_dict(ours, state)
    assert "head.weight" not in fitted and "head.bias" not in fitted
    torch.testing.assert_close(
        fitted["pos_embed"], resize_position_embedding(state["pos_embed"], 4, (6, 6))
    )
    ours.load_state_dict(fitted, strict=False)
    assert ours(torch.randn(1, 3, 48, 48)).shape == (1, 10)


def test_a_mismatched_architecture_is_refused_naming_the_parameter():
    state = vit_state_from_torchvision(_small_torchvision_vit().state_dict())
    wider = _small_vit(img_size=32, num_classes=1000, embed_dim=64)
    with pytest.raises(ValueError, match="Pretrained cls_token has shape"):
        fit_state_dict(wider, state)


def test_networks_without_torchvision_weights_are_refused_at_construction():
    with pytest.raises(ValueError, match="no torchvision weights for glimpse.models.vit.vit_test"):
        _classifier({"_target_": "glimpse.models.vit.vit_test"}, 32)

"""DeiT: the distillation token, both heads, resizing, rollout, and timm equivalence."""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import random_images, randomize_parameters
from timm.layers import resample_abs_pos_embed
from torch import nn
from torch.testing import assert_close

from glimpse.models import deit as deit_module
from glimpse.models.convert.timm_deit import deit_from_timm, deit_state_from_timm
from glimpse.models.deit import (
    DistilledVisionTransformer,
    deit_test,
)
from glimpse.models.layers import resize_position_embedding
from glimpse.models.vit import VisionTransformer

B, D, NUM_CLASSES = 2, 32, 10


def _small(**kwargs) -> DistilledVisionTransformer:
    """Built for 32 px with 8 px patches: a 4x4 grid."""
    return deit_test(patch_size=8, **kwargs)


def test_two_prefix_tokens_and_a_position_entry_for_each():
    model = _small()
    assert model.num_prefix_tokens == 2
    assert model.dist_token.shape == (1, 1, D)
    assert model.pos_embed.shape == (1, 2 + 16, D)
    assert model.head_dist.out_features == NUM_CLASSES
    assert model.no_weight_decay() == {"pos_embed", "cls_token", "dist_token"}


@pytest.mark.parametrize("height,width", [(32, 32), (48, 48), (32, 48), (16, 24)])
def test_shapes_train_pair_and_eval_mean_for_several_image_sizes(height, width):
    torch.manual_seed(0)
    model = _small()
    x = random_images(height, width)
    tokens = model.eval().forward_features(x)
    assert tokens.shape == (B, 2 + (height // 8) * (width // 8), D)
    with torch.no_grad():
        class_logits, dist_logits = model.train()(x)
        averaged = model.eval()(x)
    assert class_logits.shape == dist_logits.shape == averaged.shape == (B, NUM_CLASSES)
    assert_close(averaged, (class_logits + dist_logits) / 2)
    head, head_dist = model.forward_heads(tokens)
    assert_close(head, model.head(tokens[:, 0]))
    assert_close(head_dist, model.head_dist(tokens[:, 1]))
    assert not torch.allclose(head, head_dist)


@pytest.mark.parametrize("size", [32, 48])
def test_gradient_reaches_every_parameter_through_both_heads(size):
    torch.manual_seed(0)
    model = _small()
    class_logits, dist_logits = model(random_images(size, size))
    (class_logits.square().sum() + dist_logits.square().sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_distillation_head_alone_trains_the_distillation_token():
    """The class head's loss reaches the distillation token only through attention."""
    torch.manual_seed(0)
    model = _small()
    _, dist_logits = model(random_images(32, 32))
    dist_logits.sum().backward()
    assert model.head.weight.grad is None
    assert model.head_dist.weight.grad.abs().sum() > 0
    assert model.dist_token.grad.abs().sum() > 0


def test_resized_position_table_keeps_both_token_entries_and_matches_timm():
    pos = torch.randn(1, 2 + 4 * 6, D)
    assert resize_position_embedding(pos, (4, 6), (4, 6), num_prefix_tokens=2) is pos
    for grid in [(8, 9), (2, 3)]:
        resized = resize_position_embedding(pos, (4, 6), grid, num_prefix_tokens=2)
        assert resized.shape == (1, 2 + grid[0] * grid[1], D)
        assert torch.equal(resized[:, :2], pos[:, :2])
        expected = resample_abs_pos_embed(
            pos, new_size=grid, old_size=(4, 6), num_prefix_tokens=2, antialias=False
        )
        assert_close(resized, expected)
    with pytest.raises(ValueError, match="2 token entries and a 4x4 grid"):
        resize_position_embedding(pos, 4, 8, num_prefix_tokens=2)


def test_model_runs_at_other_size_with_resized_position_table():
    """A 32 px model on 48 px images equals a 48 px model given the resized table."""
    torch.manual_seed(0)
    model = _small().eval()
    model_48 = _small(img_size=48).eval()
    state = dict(model.state_dict())
    state["pos_embed"] = resize_position_embedding(state["pos_embed"], 4, 6, num_prefix_tokens=2)
    model_48.load_state_dict(state)
    x = random_images(48, 48)
    with torch.no_grad():
        assert_close(model(x), model_48(x))


@pytest.mark.parametrize("height,width", [(32, 32), (32, 48)])
def test_class_token_rollout_skips_both_prefix_tokens(height, width):
    torch.manual_seed(0)
    model = _small().eval()
    x = random_images(height, width)
    with torch.no_grad():
        rollout = model.class_token_rollout(x)
        _, attentions = model.forward_features(x, return_attention=True)
    grid = (height // 8, width // 8)
    assert rollout.shape == (B, *grid)
    assert (rollout > 0).all()
    # The class row over all tokens sums to 1; the two prefix entries are what is left out.
    assert (rollout.flatten(1).sum(dim=1) < 1).all()
    assert attentions[0].shape[-1] == 2 + grid[0] * grid[1]


def test_without_heads_returns_both_token_features():
    torch.manual_seed(0)
    model = _small(num_classes=0)
    assert isinstance(model.head, nn.Identity) and isinstance(model.head_dist, nn.Identity)
    x = random_images(32, 32)
    with torch.no_grad():
        class_feature, dist_feature = model(x)
        tokens = model.eval().forward_features(x)
        assert_close(model(x), (tokens[:, 0] + tokens[:, 1]) / 2)
    assert class_feature.shape == dist_feature.shape == (B, D)


@pytest.mark.parametrize(
    "preset,timm_name",
    [
        ("deit_tiny_distilled_patch16", "deit_tiny_distilled_patch16_224"),
        ("deit_small_distilled_patch16", "deit_small_distilled_patch16_224"),
        ("deit_base_distilled_patch16", "deit_base_distilled_patch16_224"),
    ],
)
def test_presets_have_timm_shapes(preset, timm_name):
    with torch.device("meta"):
        ours = getattr(deit_module, preset)()
        reference = timm.create_model(timm_name, pretrained=False)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


def _timm_deit(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    randomize_parameters(model, seed=1, std=0.05)
    return model


def test_converted_timm_distilled_deit_gives_the_same_logits_in_eval_and_train():
    """Every tensor random, so a mis-mapped or ignored one changes the outputs."""
    reference = _timm_deit("deit_tiny_distilled_patch16_224").eval()
    ours = deit_from_timm(reference).eval()
    assert isinstance(ours, DistilledVisionTransformer)
    x = random_images(224, 224)
    with torch.no_grad():
        assert_close(ours(x), reference(x), atol=1e-4, rtol=1e-4)
        reference.set_distilled_training(True)
        reference.train()
        ours.train()
        for mine, theirs in zip(ours(x), reference(x), strict=True):
            assert_close(mine, theirs, atol=1e-4, rtol=1e-4)


def test_converted_plain_timm_deit_is_our_vit():
    reference = _timm_deit("deit_tiny_patch16_224").eval()
    ours = deit_from_timm(reference).eval()
    assert type(ours) is VisionTransformer
    x = random_images(224, 224, batch=1)
    with torch.no_grad():
        assert_close(ours(x), reference(x), atol=1e-4, rtol=1e-4)


def test_converter_refuses_unknown_keys_and_deit3():
    with pytest.raises(KeyError, match="blocks.0.ls1.gamma"):
        deit_state_from_timm({"blocks.0.ls1.gamma": torch.zeros(1)})
    with torch.device("meta"):
        deit3 = timm.create_model("deit3_small_patch16_224", pretrained=False)
    with pytest.raises(ValueError, match="no_embed_class"):
        deit_from_timm(deit3)

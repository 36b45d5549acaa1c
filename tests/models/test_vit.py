"""ViT: shapes, gradients, torchvision equivalence, position resizing, attention, drop path."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import random_images, randomize_parameters
from torch import nn
from torch.testing import assert_close

from glimpse.models import vit as vit_module
from glimpse.models.convert.torchvision_vit import vit_from_torchvision, vit_state_from_torchvision
from glimpse.models.layers import DropPath, resize_position_embedding
from glimpse.models.vit import VisionTransformer, vit_test

B, D, HEADS = 2, 32, 2


def _small(**kwargs) -> VisionTransformer:
    """Built for 32 px with 8 px patches: a 4x4 grid."""
    return vit_test(patch_size=8, **kwargs)


@pytest.mark.parametrize("height,width", [(32, 32), (48, 48), (32, 48)])
def test_forward_shapes_for_several_image_sizes(height, width):
    torch.manual_seed(0)
    model = _small().eval()
    num_patches = (height // 8) * (width // 8)
    tokens = model.forward_features(random_images(height, width))
    assert tokens.shape == (B, 1 + num_patches, D)
    assert model(random_images(height, width)).shape == (B, 10)


@pytest.mark.parametrize("size", [32, 48])
def test_gradient_reaches_every_parameter(size):
    torch.manual_seed(0)
    model = _small()
    model(random_images(size, size)).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_matches_torchvision_vision_transformer():
    """Every tensor random, so a mis-mapped or ignored one changes the output."""
    torch.manual_seed(0)
    tv = torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=10,
    ).eval()
    randomize_parameters(tv, seed=1, std=0.3)
    ours = vit_from_torchvision(tv).eval()
    x = random_images(32, 32)
    with torch.no_grad():
        expected_logits = tv(x)
        tv_tokens = torch.cat([tv.class_token.expand(B, -1, -1), tv._process_input(x)], dim=1)
        expected_tokens = tv.encoder(tv_tokens)
        assert_close(ours(x), expected_logits, atol=1e-4, rtol=1e-4)
        assert_close(ours.forward_features(x), expected_tokens, atol=1e-4, rtol=1e-4)


def test_matches_torchvision_vit_l_16_at_a_small_size():
    """ViT-L/16's 24 blocks of width 1024 convert too (at 64 px to keep the test quick)."""
    torch.manual_seed(0)
    tv = torchvision.models.vit_l_16(weights=None, image_size=64).eval()
    randomize_parameters(tv, seed=2, std=0.02)
    ours = vit_from_torchvision(tv).eval()
    assert (ours.embed_dim, len(ours.blocks)) == (1024, 24)
    x = random_images(64, 64, batch=1)
    with torch.no_grad():
        assert_close(ours(x), tv(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["vit_b_16", "vit_b_32"])
def test_matches_torchvision_presets(name):
    """The real constructors' key names convert, and our presets have the same shapes."""
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(weights=None).eval()
    randomize_parameters(tv, seed=2, std=0.02)
    ours = vit_from_torchvision(tv).eval()
    x = random_images(224, 224, batch=1)
    with torch.no_grad():
        assert_close(ours(x), tv(x), atol=1e-4, rtol=1e-4)
    with torch.device("meta"):
        preset = {"vit_b_16": vit_module.vit_base_patch16, "vit_b_32": vit_module.vit_base_patch32}
        preset_model = preset[name]()
    preset_shapes = {k: v.shape for k, v in preset_model.state_dict().items()}
    assert preset_shapes == {k: v.shape for k, v in ours.state_dict().items()}


def test_converter_rejects_unknown_keys():
    with pytest.raises(KeyError, match="heads.pre_logits.weight"):
        vit_state_from_torchvision({"heads.pre_logits.weight": torch.zeros(1)})


@pytest.mark.parametrize(
    "preset,num_params",
    [
        ("vit_tiny_patch16", 5_717_416),
        ("vit_small_patch16", 22_050_664),
        (
            "vit_base_patch16",
            torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1.meta["num_params"],
        ),
        (
            "vit_base_patch32",
            torchvision.models.ViT_B_32_Weights.IMAGENET1K_V1.meta["num_params"],
        ),
        (
            "vit_large_patch16",
            torchvision.models.ViT_L_16_Weights.IMAGENET1K_V1.meta["num_params"],
        ),
    ],
)
def test_presets_match_published_parameter_counts(preset, num_params):
    """timm's counts for Ti and S (DeiT sizes), torchvision's weight metadata for B and L."""
    with torch.device("meta"):
        model = getattr(vit_module, preset)()
    assert sum(p.numel() for p in model.parameters()) == num_params


def test_resize_position_embedding_is_identity_at_same_grid():
    pos = torch.randn(1, 1 + 4 * 6, D)
    assert resize_position_embedding(pos, (4, 6), (4, 6)) is pos


def test_resize_position_embedding_to_new_grid_keeps_class_token_and_layout():
    """Channel 0 holds the row index, channel 1 the column: after resizing to a non-square grid
    they must still vary only down the rows and only across the columns respectively."""
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(6.0), indexing="ij")
    grid = torch.stack([rows, cols], dim=-1).reshape(1, 24, 2)
    pos = torch.cat([torch.tensor([[[7.0, -3.0]]]), grid], dim=1)
    resized = resize_position_embedding(pos, (4, 6), (8, 9))
    assert resized.shape == (1, 1 + 8 * 9, 2)
    assert torch.equal(resized[:, 0], pos[:, 0])
    new_grid = resized[0, 1:].reshape(8, 9, 2)
    row_channel, col_channel = new_grid[..., 0], new_grid[..., 1]
    assert_close(row_channel, row_channel[:, :1].expand(8, 9))
    assert_close(col_channel, col_channel[:1, :].expand(8, 9))
    assert (row_channel[1:, 0] > row_channel[:-1, 0]).all()
    assert (col_channel[0, 1:] > col_channel[0, :-1]).all()


def test_model_runs_at_other_size_with_resized_position_table():
    """A 32 px model on 48 px images equals a 48 px model given the resized table."""
    torch.manual_seed(0)
    model = _small().eval()
    model_48 = _small(img_size=48).eval()
    state = dict(model.state_dict())
    state["pos_embed"] = resize_position_embedding(state["pos_embed"], (4, 4), (6, 6))
    model_48.load_state_dict(state)
    x = random_images(48, 48)
    with torch.no_grad():
        assert_close(model(x), model_48(x))


def test_rejects_image_size_not_divisible_by_patch():
    with pytest.raises(ValueError, match="not divisible by the patch size 8"):
        _small()(random_images(36, 32))


def test_attention_path_matches_sdpa_path_and_rows_sum_to_one():
    torch.manual_seed(0)
    model = _small().eval()
    x = random_images(32, 32)
    with torch.no_grad():
        logits, attentions = model(x, return_attention=True)
        tokens, _ = model.forward_features(x, return_attention=True)
        assert_close(logits, model(x))
        assert_close(tokens, model.forward_features(x))
    assert len(attentions) == len(model.blocks)
    for attention in attentions:
        assert attention.shape == (B, HEADS, 17, 17)
        assert (attention >= 0).all()
        assert_close(attention.sum(dim=-1), torch.ones(B, HEADS, 17))


def test_drop_path_zeroes_whole_samples_and_rescales_the_rest():
    torch.manual_seed(0)
    drop = DropPath(0.5).train()
    x = torch.rand(64, 5, 3) + 1.0
    out = drop(x)
    dropped = (out == 0).flatten(1).all(dim=1)
    kept = ~dropped
    assert 0 < dropped.sum() < 64
    assert_close(out[kept], x[kept] / 0.5)
    assert torch.equal(drop.eval()(x), x)


def test_stochastic_depth_is_random_in_train_and_deterministic_in_eval():
    torch.manual_seed(0)
    model = _small(drop_path_rate=0.5, depth=4).train()
    plain = _small(depth=4).eval()
    plain.load_state_dict(model.state_dict())
    x = random_images(32, 32, batch=8)
    outputs = []
    for seed in (1, 2, 1):
        torch.manual_seed(seed)
        outputs.append(model(x))
    assert not torch.allclose(outputs[0], outputs[1])
    assert torch.equal(outputs[0], outputs[2])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        assert_close(model(x), plain(x))


def test_drop_path_rate_increases_linearly_over_depth():
    model = _small(drop_path_rate=0.3, depth=4)
    rates = [block.drop_path.drop_prob for block in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


@pytest.mark.parametrize("num_classes", [0, None])
def test_without_head_returns_pooled_features(num_classes):
    torch.manual_seed(0)
    model = _small(num_classes=num_classes).eval()
    assert isinstance(model.head, nn.Identity)
    x = random_images(48, 32)
    with torch.no_grad():
        pooled = model(x)
        tokens = model.forward_features(x)
    assert pooled.shape == (B, model.num_features) == (B, D)
    assert tokens.shape == (B, 1 + 6 * 4, D)
    assert torch.equal(pooled, tokens[:, 0])


@pytest.mark.parametrize("patch_size", [2, 4, 16])
def test_conv_stem_gives_one_token_per_patch_and_trains(patch_size):
    model = vit_module.VisionTransformer(
        img_size=32,
        patch_size=patch_size,
        num_classes=5,
        embed_dim=32,
        depth=1,
        num_heads=2,
        stem="conv",
    )
    images = random_images(64, 96, batch=2)
    rows, columns = 64 // patch_size, 96 // patch_size
    assert model.patch_embed(images).shape == (2, rows, columns, 32)
    # Row-major grid order: the top-right patch's token changes with its pixels, the
    # bottom-left one (beyond the 3x3 kernels' reach) does not.
    perturbed = images.clone()
    perturbed[:, :, :patch_size, -patch_size:] += 1.0
    model.patch_embed.eval()
    changed = (model.patch_embed(perturbed) - model.patch_embed(images)).abs().sum(-1)
    assert changed[:, 0, columns - 1].gt(0).all()
    assert changed[:, rows - 1, 0].eq(0).all()
    model.train()(images).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_conv_stem_needs_a_power_of_two_patch_and_unknown_stems_are_refused():
    with pytest.raises(ValueError, match="power of two, not 6"):
        vit_module.VisionTransformer(img_size=48, patch_size=6, stem="conv")
    with pytest.raises(ValueError, match="stem='hybrid' is not one of patchify, conv"):
        vit_module.VisionTransformer(img_size=32, patch_size=4, stem="hybrid")

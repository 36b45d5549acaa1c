"""Swin: shapes, gradients, window mask and relative positions against brute force, attention
paths, torchvision equivalence."""

from __future__ import annotations

import itertools

import pytest
import torch
import torchvision
from conftest import random_images, randomize_parameters
from torch import nn
from torch.testing import assert_close

from glimpse.models import swin as swin_module
from glimpse.models.convert.torchvision_swin import (
    swin_from_torchvision,
    swin_state_from_torchvision,
)
from glimpse.models.swin import (
    SwinBlock,
    SwinTransformer,
    relative_position_index,
    shifted_window_mask,
    swin_test,
)

B = 2


def _same_segment(height: int, width: int, window: int, shift: tuple[int, int]) -> torch.Tensor:
    """Brute force, ``(nW, M^2, M^2)`` bool: for each pair of tokens in a window of the map rolled
    by ``-shift``, whether they were neighbours in the un-rolled map. Position ``(i, j)`` of the
    rolled map holds the token from ``((i + s_h) mod H, (j + s_w) mod W)``; two tokens of a
    window are neighbours when those original positions are less than ``M`` apart on both axes,
    and otherwise were brought together only by the wrap-around."""
    rows, cols = height // window, width // window
    same = torch.zeros(rows * cols, window * window, window * window, dtype=torch.bool)
    for w, (wr, wc) in enumerate(itertools.product(range(rows), range(cols))):
        origins = [
            (
                (wr * window + t // window + shift[0]) % height,
                (wc * window + t % window + shift[1]) % width,
            )
            for t in range(window * window)
        ]
        for a, b in itertools.product(range(window * window), repeat=2):
            same[w, a, b] = all(
                abs(p - q) < window for p, q in zip(origins[a], origins[b], strict=True)
            )
    return same


@pytest.mark.parametrize("height,width", [(32, 32), (48, 40)])
def test_forward_shapes_for_several_image_sizes(height, width):
    """48x40 gives 24x20 then 12x10 maps: both padded to multiples of the window (4)."""
    torch.manual_seed(0)
    model = swin_test().eval()
    x = random_images(height, width)
    with torch.no_grad():
        features, stages = model.forward_features(x, return_stages=True)
        logits = model(x)
    assert model.stage_dims == [16, 32]
    assert [s.shape for s in stages] == [
        (B, height // 2, width // 2, 16),
        (B, height // 4, width // 4, 32),
    ]
    assert features.shape == (B, height // 4, width // 4, 32)
    assert logits.shape == (B, 10)


@pytest.mark.parametrize("height,width", [(32, 32), (24, 40)])
def test_gradient_reaches_every_parameter(height, width):
    torch.manual_seed(0)
    model = swin_test()
    model(random_images(height, width)).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("window", [2, 4, 7])
def test_relative_position_index_matches_brute_force(window):
    index = relative_position_index(window)
    expected = torch.empty(window**2, window**2, dtype=torch.long)
    for i, j in itertools.product(range(window**2), repeat=2):
        dy = i // window - j // window
        dx = i % window - j % window
        expected[i, j] = (dy + window - 1) * (2 * window - 1) + (dx + window - 1)
    assert torch.equal(index, expected)


@pytest.mark.parametrize(
    "height,width,shift",
    [(8, 8, (2, 2)), (8, 12, (2, 2)), (12, 4, (2, 0)), (4, 8, (0, 2))],
)
def test_shifted_window_mask_matches_brute_force(height, width, shift):
    """``(12, 4)`` and ``(4, 8)``: one window covers an axis, which is then not shifted."""
    mask = shifted_window_mask(height, width, 4, shift)
    same = _same_segment(height, width, 4, shift)
    assert mask.shape == same.shape
    assert (mask[same] == 0).all()
    assert (mask[~same] == float("-inf")).all()
    assert (~same).any()


def test_block_skips_shift_on_an_axis_one_window_covers():
    """On a 4x8 map with M=4, the block's mask is the brute force for a shift of (0, 2)."""
    torch.manual_seed(0)
    block = SwinBlock(8, 2, window_size=4, shift_size=2).eval()
    randomize_parameters(block, seed=3, std=0.3)
    with torch.no_grad():
        _, attention = block(torch.randn(1, 4, 8, 8), return_attention=True)
    same = _same_segment(4, 8, 4, (0, 2))
    assert torch.equal(attention[0] > 0, same[:, None].expand_as(attention[0]))


def test_masked_attention_is_exactly_zero_across_wrap_around():
    torch.manual_seed(0)
    block = SwinBlock(8, 2, window_size=4, shift_size=2).eval()
    randomize_parameters(block, seed=3, std=0.3)
    with torch.no_grad():
        _, attention = block(torch.randn(B, 8, 8, 8), return_attention=True)
    assert attention.shape == (B, 4, 2, 16, 16)
    across = ~_same_segment(8, 8, 4, (2, 2))[None, :, None].expand_as(attention)
    assert across.any()
    assert (attention[across] == 0).all()
    assert (attention[~across] > 0).all()


def test_shifted_block_output_ignores_tokens_across_wrap_around():
    """Rolled by -2, the bottom-right window of an 8x8 map holds original rows and columns
    6, 7, 0, 1. Changing the token at (0, 0) may change only its own wrapped segment's outputs,
    (0..1, 0..1), not those of (6..7, 6..7) nor of (0..1, 6..7) or (6..7, 0..1)."""
    torch.manual_seed(0)
    block = SwinBlock(8, 2, window_size=4, shift_size=2).eval()
    randomize_parameters(block, seed=4, std=0.3)
    x = torch.randn(1, 8, 8, 8)
    changed = x.clone()
    changed[0, 0, 0, 0] += 1.0
    with torch.no_grad():
        diff = (block(changed)[0] - block(x)[0]).abs().sum(dim=-1)[0]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(diff > 0, expected)


def test_attention_path_matches_sdpa_path():
    torch.manual_seed(0)
    model = swin_test().eval()
    randomize_parameters(model, seed=5, std=0.3)
    x = random_images(32, 40)
    with torch.no_grad():
        logits, attentions = model(x, return_attention=True)
        features, stages, _ = model.forward_features(x, return_stages=True, return_attention=True)
        assert_close(logits, model(x), atol=1e-5, rtol=1e-5)
        assert_close(features, model.forward_features(x), atol=1e-5, rtol=1e-5)
    assert len(stages) == 2
    assert [a.shape for a in attentions] == [(B, 20, 1, 16, 16)] * 2 + [(B, 6, 2, 16, 16)] * 2
    for attention in attentions:
        assert_close(attention.sum(dim=-1), torch.ones(attention.shape[:-1]))


def test_fused_window_attention_equals_the_explicit_one_with_gradients():
    """The CUDA path (scaled_dot_product_attention with the bias and the shift mask as its float
    mask) forced on the CPU, against the explicit softmax, on a padded map with shifted
    windows."""
    torch.manual_seed(0)
    model = swin_test()
    randomize_parameters(model, seed=5, std=0.3)
    x = random_images(32, 40)
    results = []
    for fused in (False, True):
        for module in model.modules():
            if isinstance(module, swin_module.WindowAttention):
                module.fused = fused
        model.zero_grad()
        logits = model(x)
        logits.square().sum().backward()
        results.append((logits, [p.grad.clone() for p in model.parameters()]))
    (explicit, explicit_grads), (fused_logits, fused_grads) = results
    assert_close(fused_logits, explicit, atol=1e-5, rtol=1e-5)
    for fused_grad, explicit_grad in zip(fused_grads, explicit_grads, strict=True):
        assert_close(fused_grad, explicit_grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("height,width", [(32, 32), (40, 40), (32, 56)])
def test_matches_torchvision_swin_transformer(height, width):
    """Every tensor random, so a mis-mapped or ignored one changes the output. At 32 px the maps
    are 8x8 (shifted, masked) then 4x4 (one window, not shifted); 40 and 56 px pad them."""
    torch.manual_seed(0)
    tv = torchvision.models.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[1, 2],
        window_size=[4, 4],
        num_classes=10,
    ).eval()
    randomize_parameters(tv, seed=1, std=0.3)
    ours = swin_from_torchvision(tv).eval()
    x = random_images(height, width)
    with torch.no_grad():
        features, stages = ours.forward_features(x, return_stages=True)
        assert_close(ours(x), tv(x), atol=1e-4, rtol=1e-4)
        assert_close(stages[0], tv.features[:2](x), atol=1e-4, rtol=1e-4)
        assert_close(features, tv.norm(tv.features(x)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["swin_s", "swin_b"])
def test_matches_torchvision_swin_s_and_swin_b(name):
    """The deeper and wider presets convert too (at 64 px, padded to the windows, to keep the
    test quick)."""
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(weights=None).eval()
    randomize_parameters(tv, seed=2, std=0.02)
    ours = swin_from_torchvision(tv).eval()
    x = random_images(64, 64, batch=1)
    with torch.no_grad():
        assert_close(ours(x), tv(x), atol=1e-4, rtol=1e-4)


def test_matches_torchvision_swin_t():
    """The real constructor's key names convert, and swin_tiny has the same shapes."""
    torch.manual_seed(0)
    tv = torchvision.models.swin_t(weights=None).eval()
    randomize_parameters(tv, seed=2, std=0.02)
    ours = swin_from_torchvision(tv).eval()
    assert ours.layers[-1].blocks[-1].drop_path.drop_prob == 0.2
    x = random_images(224, 224, batch=1)
    with torch.no_grad():
        assert_close(ours(x), tv(x), atol=1e-4, rtol=1e-4)
    with torch.device("meta"):
        preset = swin_module.swin_tiny()
    preset_shapes = {k: v.shape for k, v in preset.state_dict().items()}
    assert preset_shapes == {k: v.shape for k, v in ours.state_dict().items()}


@pytest.mark.parametrize(
    "preset,weights",
    [
        ("swin_tiny", torchvision.models.Swin_T_Weights.IMAGENET1K_V1),
        ("swin_small", torchvision.models.Swin_S_Weights.IMAGENET1K_V1),
        ("swin_base", torchvision.models.Swin_B_Weights.IMAGENET1K_V1),
    ],
)
def test_presets_match_published_parameter_counts(preset, weights):
    with torch.device("meta"):
        model = getattr(swin_module, preset)()
    assert sum(p.numel() for p in model.parameters()) == weights.meta["num_params"]


def test_converter_rejects_unknown_keys_and_swin_v2():
    with pytest.raises(KeyError, match="features.1.0.attn.logit_scale"):
        swin_state_from_torchvision({"features.1.0.attn.logit_scale": torch.zeros(1)})
    tv = torchvision.models.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2],
        num_heads=[1],
        window_size=[4, 4],
        block=torchvision.models.swin_transformer.SwinTransformerBlockV2,
    )
    with pytest.raises(ValueError, match="Only torchvision Swin v1"):
        swin_from_torchvision(tv)


def test_drop_path_rate_increases_linearly_over_all_blocks():
    model = swin_test(drop_path_rate=0.3, depths=(2, 2))
    rates = [block.drop_path.drop_prob for layer in model.layers for block in layer.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


@pytest.mark.parametrize("num_classes", [0, None])
def test_without_head_returns_pooled_features(num_classes):
    torch.manual_seed(0)
    model = swin_test(num_classes=num_classes).eval()
    assert isinstance(model.head, nn.Identity)
    x = random_images(32, 32)
    with torch.no_grad():
        pooled = model(x)
        features = model.forward_features(x)
    assert pooled.shape == (B, model.num_features) == (B, 32)
    assert_close(pooled, features.mean(dim=(1, 2)))


def test_rejects_image_size_not_divisible_by_patch():
    with pytest.raises(ValueError, match="not divisible by the patch size 2"):
        swin_test()(random_images(33, 32))
    with pytest.raises(ValueError, match="same number of stages"):
        SwinTransformer(depths=(2, 2), num_heads=(1,))

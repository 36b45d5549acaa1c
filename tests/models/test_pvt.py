"""PVT v1 and v2: shapes, gradients, spatial-reduction attention and position-table resizing
against hand computations, published parameter counts, timm PVT v2 equivalence."""

from __future__ import annotations

import itertools

import pytest
import timm
import torch
from conftest import random_images, randomize_parameters
from timm.models.pvt_v2 import PyramidVisionTransformerV2
from torch import Tensor, nn
from torch.testing import assert_close

from glimpse.models import pvt as pvt_module
from glimpse.models.convert.timm_pvt import pvt_v2_from_timm, pvt_v2_state_from_timm
from glimpse.models.layers import resize_position_embedding
from glimpse.models.pvt import (
    PyramidVisionTransformer,
    SpatialReductionAttention,
    pvt_test,
    pvt_v2_test,
)
from glimpse.optim.param_groups import no_weight_decay_names

B = 2
WIDTHS = [8, 16, 24, 32]
BUILDERS = {
    "v1": pvt_test,
    "v2": pvt_v2_test,
    "v2_li": lambda **kwargs: pvt_v2_test(linear_sra=True, **kwargs),
}


@pytest.mark.parametrize("variant", ["v1", "v2"])
@pytest.mark.parametrize("height,width", [(32, 32), (64, 64), (32, 48)])
def test_forward_shapes_for_several_image_sizes(variant, height, width):
    """Stage maps at strides 2, 4, 8, 16; v1's last tokens hold the class token first."""
    torch.manual_seed(0)
    model = BUILDERS[variant]().eval()
    x = random_images(height, width)
    with torch.no_grad():
        stages = model.forward_stages(x)
        tokens = model.forward_features(x)
        logits = model(x)
    assert [tuple(s.shape) for s in stages] == [
        (B, dim, height // 2 ** (i + 1), width // 2 ** (i + 1)) for i, dim in enumerate(WIDTHS)
    ]
    num_tokens = (height // 16) * (width // 16) + (variant == "v1")
    assert tokens.shape == (B, num_tokens, 32)
    assert logits.shape == (B, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("variant", ["v1", "v2", "v2_li"])
@pytest.mark.parametrize("height,width", [(32, 32), (32, 48)])
def test_gradient_reaches_every_parameter(variant, height, width):
    """At 32x48 v1 resizes its position tables, so their gradients pass the interpolation."""
    torch.manual_seed(0)
    model = BUILDERS[variant]()
    model(random_images(height, width)).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def _reduce_by_hand(attn: SpatialReductionAttention, x: Tensor, size: tuple[int, int]) -> Tensor:
    """SR(x) for one sample ``x (h*w, C)``, window by window: SRA applies the conv weight to each
    ``R x R`` window; linear SRA averages each window of the 7x7 partition, applies the 1x1 conv,
    then GELU after the norm. Then LayerNorm by its formula."""
    height, width = size
    feature_map = x.T.reshape(-1, height, width)
    weight, bias = attn.sr.weight, attn.sr.bias
    linear = isinstance(attn.act, nn.GELU)
    rows, cols = (7, 7) if linear else (height // weight.shape[2], width // weight.shape[3])
    win_h, win_w = height // rows, width // cols
    reduced = []
    for i, j in itertools.product(range(rows), range(cols)):
        window = feature_map[:, i * win_h : (i + 1) * win_h, j * win_w : (j + 1) * win_w]
        if linear:
            reduced.append(weight[:, :, 0, 0] @ window.mean(dim=(1, 2)) + bias)
        else:
            reduced.append(torch.einsum("oikl,ikl->o", weight, window) + bias)
    reduced = torch.stack(reduced)
    mean = reduced.mean(dim=-1, keepdim=True)
    var = reduced.var(dim=-1, unbiased=False, keepdim=True)
    normed = (reduced - mean) / torch.sqrt(var + attn.norm.eps) * attn.norm.weight + attn.norm.bias
    return nn.functional.gelu(normed) if linear else normed


def _attention_by_hand(attn: SpatialReductionAttention, x: Tensor, size) -> Tensor:
    """``softmax(Q K^T / sqrt(d)) V`` head by head with explicit matrices, ``x (N, C)``."""
    dim = x.shape[1]
    head_dim = dim // attn.num_heads
    reduced = _reduce_by_hand(attn, x, size) if attn.reduces else x
    q = x @ attn.q.weight.T + attn.q.bias
    k = reduced @ attn.kv.weight[:dim].T + attn.kv.bias[:dim]
    v = reduced @ attn.kv.weight[dim:].T + attn.kv.bias[dim:]
    heads = []
    for h in range(attn.num_heads):
        part = slice(h * head_dim, (h + 1) * head_dim)
        logits = q[:, part] @ k[:, part].T / head_dim**0.5
        weights = logits.exp() / logits.exp().sum(dim=-1, keepdim=True)
        heads.append(weights @ v[:, part])
    return torch.cat(heads, dim=-1) @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize(
    "sr_ratio,linear,size,num_keys",
    [(2, False, (4, 6), 6), (3, False, (6, 3), 2), (1, False, (3, 5), 15), (1, True, (14, 7), 49)],
)
def test_spatial_reduction_attention_matches_brute_force(sr_ratio, linear, size, num_keys):
    torch.manual_seed(0)
    attn = SpatialReductionAttention(12, 3, sr_ratio=sr_ratio, linear=linear).eval()
    randomize_parameters(attn, seed=1, std=0.3)
    x = torch.randn(B, size[0] * size[1], 12)
    with torch.no_grad():
        assert attn.reduce(x, size).shape == (B, num_keys, 12)
        out = attn(x, size)
        expected = torch.stack([_attention_by_hand(attn, sample, size) for sample in x])
    assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_bilinear_position_table_resize_matches_hand_computed_weights():
    """2x2 -> 4x4 with align_corners=False samples the old grid at ``(j + 0.5) / 2 - 0.5``,
    clamped: rows (and columns) 1, 3/4 + 1/4, 1/4 + 3/4, 1 of the old ones."""
    table = torch.randn(1, 1 + 4, 3)
    resized = resize_position_embedding(table, (2, 2), (4, 4), 1, mode="bilinear")
    weights = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    grid = table[0, 1:].reshape(2, 2, 3)
    expected = torch.einsum("ia,jb,abc->ijc", weights, weights, grid).reshape(16, 3)
    assert resized.shape == (1, 17, 3)
    assert torch.equal(resized[0, 0], table[0, 0])
    assert_close(resized[0, 1:], expected)
    assert resize_position_embedding(table, (2, 2), (2, 2), 1, mode="bilinear") is table


def test_model_at_another_size_uses_resized_position_tables():
    """Built for 32 px and run at 64x48, v1 equals a model built for 64x48 whose tables were
    resized once up front; the stored tables keep their shapes."""
    torch.manual_seed(0)
    model = pvt_test().eval()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    state = dict(model.state_dict())
    for i, stage in enumerate(model.stages):
        grid = (64 // 2 ** (i + 1), 48 // 2 ** (i + 1))
        key = f"stages.{i}.pos_embed"
        state[key] = resize_position_embedding(
            state[key], stage.grid, grid, stage.num_prefix, mode="bilinear"
        )
    resized = pvt_test(img_size=(64, 48)).eval()
    resized.load_state_dict(state)
    x = random_images(64, 48)
    with torch.no_grad():
        assert_close(model(x), resized(x))
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes


@pytest.mark.parametrize(
    "preset,millions",
    [
        ("pvt_tiny", 13.2),
        ("pvt_small", 24.5),
        ("pvt_medium", 44.2),
        ("pvt_large", 61.4),
        ("pvt_v2_b0", 3.7),
        ("pvt_v2_b1", 14.0),
        ("pvt_v2_b2", 25.4),
        ("pvt_v2_b2_li", 22.6),
    ],
)
def test_presets_match_published_parameter_counts(preset, millions):
    """v1 Table 1 and v2 Tables 1 and 6, at 224 px; the v2 presets have timm's shapes exactly."""
    with torch.device("meta"):
        model = getattr(pvt_module, preset)()
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions
    if preset.startswith("pvt_v2"):
        with torch.device("meta"):
            reference = timm.create_model(preset, pretrained=False)
        converted = pvt_v2_state_from_timm(reference.state_dict())
        assert {k: v.shape for k, v in converted.items()} == {
            k: v.shape for k, v in model.state_dict().items()
        }


def _assert_matches_timm(reference: PyramidVisionTransformerV2, sizes: list[int]) -> None:
    ours = pvt_v2_from_timm(reference).eval()
    for size in sizes:
        x = random_images(size, size, batch=1)
        with torch.no_grad():
            expected_stages = reference.forward_intermediates(x, intermediates_only=True)
            assert_close(ours(x), reference(x), atol=1e-4, rtol=1e-4)
            for ours_map, expected in zip(ours.forward_stages(x), expected_stages, strict=True):
                assert_close(ours_map, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("linear", [False, True])
def test_matches_small_timm_pvt_v2_with_large_random_weights(linear):
    """Every tensor random and large, so a mis-mapped or ignored one changes the output."""
    torch.manual_seed(0)
    reference = PyramidVisionTransformerV2(
        depths=(1, 1, 2, 1),
        embed_dims=(8, 16, 24, 32),
        num_heads=(1, 2, 2, 4),
        mlp_ratios=(2, 2, 2, 2),
        sr_ratios=(4, 2, 2, 1),
        linear=linear,
        num_classes=10,
    ).eval()
    randomize_parameters(reference, seed=1, std=0.3)
    _assert_matches_timm(reference, [64, 96])


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
def test_matches_timm_presets(name):
    """The real constructors convert, at 224 px and at 96 px (3x3 last map)."""
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False, drop_path_rate=0.1).eval()
    randomize_parameters(reference, seed=2, std=0.02)
    _assert_matches_timm(reference, [224, 96])
    ours = pvt_v2_from_timm(reference)
    assert ours.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(0.1)


def test_converter_rejects_unknown_keys():
    with pytest.raises(KeyError, match="stages.0.blocks.0.attn.qkv.weight"):
        pvt_v2_state_from_timm({"stages.0.blocks.0.attn.qkv.weight": torch.zeros(1)})


def test_drop_path_rate_increases_linearly_over_all_blocks():
    model = pvt_test(drop_path_rate=0.4)
    rates = [block.drop_path.drop_prob for stage in model.stages for block in stage.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("variant", ["v1", "v2"])
@pytest.mark.parametrize("num_classes", [0, None])
def test_without_head_returns_pooled_features(variant, num_classes):
    """v1 pools the class token after the final LayerNorm, v2 averages the last tokens."""
    torch.manual_seed(0)
    model = BUILDERS[variant](num_classes=num_classes).eval()
    assert isinstance(model.head, nn.Identity)
    x = random_images(32, 32)
    with torch.no_grad():
        pooled = model(x)
        tokens = model.forward_features(x)
    assert pooled.shape == (B, model.num_features) == (B, 32)
    assert_close(pooled, tokens[:, 0] if variant == "v1" else tokens.mean(dim=1))


def test_no_weight_decay_names_the_position_tables_and_class_token():
    model = pvt_test()
    expected = {f"stages.{i}.pos_embed" for i in range(4)} | {"stages.3.cls_token"}
    assert no_weight_decay_names(model) == expected
    assert expected <= dict(model.named_parameters()).keys()
    assert no_weight_decay_names(pvt_v2_test()) == set()


def test_rejects_bad_sizes_and_options():
    with pytest.raises(ValueError, match=r"33x32 is not divisible by the total stride 16"):
        pvt_test()(random_images(33, 32))
    with pytest.raises(ValueError, match=r"40x40 is not divisible by the total stride 16"):
        pvt_test(img_size=40)
    with pytest.raises(ValueError, match="same number of stages"):
        PyramidVisionTransformer(depths=(2, 2))
    with pytest.raises(ValueError, match="class token needs"):
        pvt_test(linear_sra=True)

"""CLIP model: shapes of every image tower, gradients, the causal text encoder read at the end
token, the temperature and its clamp, presets, CLIP's ViT options, and the modified ResNet's
attention pooling against torch's multi-head attention."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
from conftest import random_images, randomize_parameters
from torch import nn
from torch.nn import functional as F
from torch.testing import assert_close

from glimpse.models.clip import CLIP, clip_cpu, clip_rn50, clip_vit_b32
from glimpse.models.clip_resnet import AttentionPool2d, Bottleneck, ModifiedResNet
from glimpse.models.layers import QuickGELU
from glimpse.models.vit import Attention, VisionTransformer, vit_test
from glimpse.optim.param_groups import decay_groups

VOCAB, CONTEXT, E = 50, 12, 16
TEXT = dict(text_width=32, text_layers=2, text_heads=2)
VISIONS = {
    "vit": dict(kind="vit", image_size=32, patch_size=8, width=32, layers=2, heads=2),
    "modified_resnet": dict(
        kind="modified_resnet", image_size=64, layers=(1, 1, 1, 1), width=8, heads=4
    ),
    "resnet_mean": dict(kind="resnet", arch="resnet18", small_images=True),
    "resnet_attention": dict(
        kind="resnet", arch="resnet18", pool="attention", heads=4, image_size=64
    ),
}
SIZES = {"vit": 32, "modified_resnet": 64, "resnet_mean": 32, "resnet_attention": 64}


def tiny_clip(vision: str = "vit", **kwargs) -> CLIP:
    return CLIP(VOCAB, CONTEXT, E, vision=VISIONS[vision], **TEXT, **kwargs)


def tokens(batch: int = 3, length: int = CONTEXT, seed: int = 0) -> torch.Tensor:
    """Rows ``[1, words..., end=VOCAB-1, 0 ...]`` with 2, 5, 8 ... words (cut at ``length``)."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.zeros(batch, length, dtype=torch.long)
    for i in range(batch):
        words = min(2 + 3 * i, length - 2)
        rows[i, : words + 2] = torch.cat(
            [
                torch.tensor([1]),
                torch.randint(2, VOCAB - 1, (words,), generator=gen),
                torch.tensor([VOCAB - 1]),
            ]
        )
    return rows


@pytest.mark.parametrize("vision", list(VISIONS))
def test_encoders_and_forward_shapes_for_every_image_tower(vision):
    torch.manual_seed(0)
    model = tiny_clip(vision).eval()
    images, text = random_images(SIZES[vision], SIZES[vision], batch=3), tokens()
    with torch.no_grad():
        image_emb, text_emb, scale = model(images, text)
        assert model.encode_image(images).shape == (3, E)
        assert model.encode_text(text).shape == (3, E)
        assert_close(image_emb, F.normalize(model.encode_image(images), dim=-1))
        assert_close(text_emb, model.encode_text(text, normalize=True))
    assert_close(image_emb.norm(dim=-1), torch.ones(3))
    assert_close(text_emb.norm(dim=-1), torch.ones(3))
    assert scale.shape == () and scale.item() == pytest.approx(1 / 0.07)


@pytest.mark.parametrize("vision", list(VISIONS))
def test_a_contrastive_loss_reaches_every_parameter(vision):
    """The residual branches' last BatchNorms start at 0, which blocks gradients to the
    layers before them: they are set to 1 first."""
    torch.manual_seed(0)
    model = tiny_clip(vision)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(1.0)
    image_emb, text_emb, scale = model(
        random_images(SIZES[vision], SIZES[vision], batch=3), tokens()
    )
    logits = scale * image_emb @ text_emb.T
    labels = torch.arange(3)
    ((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_text_features_come_from_the_end_token_and_see_no_later_token():
    """Cutting each row just after its end token gives the same features (the mask is causal
    and the pooled position is the end token), and for CLIP-like ids it is the argmax."""
    torch.manual_seed(0)
    model = tiny_clip().eval()
    text = tokens()
    ends = model.text.end_positions(text)
    assert torch.equal(ends, text.argmax(dim=-1))
    with torch.no_grad():
        full = model.encode_text(text)
        for row, end in enumerate(ends.tolist()):
            cut = model.encode_text(text[row : row + 1, : end + 1])
            assert_close(cut[0], full[row], atol=1e-5, rtol=1e-5)
            changed = text[row : row + 1].clone()
            changed[0, end + 1 :] = 7  # not padding any more: the end token moves
            assert not torch.allclose(model.encode_text(changed)[0], full[row])


def test_end_positions_are_the_last_token_that_is_not_padding():
    model = tiny_clip()
    text = torch.tensor([[1, 4, 2, 0, 0], [1, 4, 4, 4, 2], [1, 2, 0, 0, 0]])
    assert model.text.end_positions(text).tolist() == [2, 4, 1]
    with_pad_id = tiny_clip(pad_id=3).text.end_positions(torch.tensor([[1, 4, 2, 3, 3]]))
    assert with_pad_id.tolist() == [2]


def test_tokens_longer_than_the_context_are_refused():
    with pytest.raises(ValueError, match="L <= context_length=12"):
        tiny_clip().encode_text(torch.ones(2, CONTEXT + 1, dtype=torch.long))


def test_logit_scale_starts_at_1_over_0_07_and_is_clamped_at_100():
    model = tiny_clip()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(500.0))
    scale = model.scale()
    assert scale.item() == pytest.approx(100.0)
    scale.backward()
    assert model.logit_scale.grad.item() == 0.0
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == 0.0


def test_logit_scale_settings_are_checked():
    with pytest.raises(ValueError, match=r"init_logit_scale=5.0 must lie in \[0, log"):
        tiny_clip(init_logit_scale=5.0)


def test_embeddings_and_temperature_get_no_weight_decay():
    model = tiny_clip("modified_resnet")
    decayed, plain = decay_groups(model, weight_decay=0.1)
    plain_ids = {id(p) for p in plain["params"]}
    named = dict(model.named_parameters())
    for name in (
        "logit_scale",
        "text.token_embedding.weight",
        "text.positional_embedding",
        "visual.attnpool.positional_embedding",
    ):
        assert id(named[name]) in plain_ids, name
    assert id(named["text.blocks.0.attn.qkv.weight"]) in {id(p) for p in decayed["params"]}
    vit_names = {n for n, p in tiny_clip().named_parameters() if p.ndim >= 2}
    assert {"visual.trunk.pos_embed", "visual.trunk.cls_token"} <= vit_names


@pytest.mark.parametrize("preset,name", [(clip_vit_b32, "ViT-B-32"), (clip_rn50, "RN50")])
def test_paper_presets_have_open_clips_parameter_counts(preset, name):
    with torch.device("meta"):
        ours = preset()
        theirs = open_clip.model.CLIP(**open_clip.get_model_config(name))
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters())
    assert count == {"ViT-B-32": 151_277_313, "RN50": 102_007_137}[name]
    assert (ours.vocab_size, ours.context_length, ours.image_size) == (49408, 77, (224, 224))


def test_cpu_preset_takes_the_tokenizers_sizes_and_vision_overrides():
    model = clip_cpu(vocab_size=300, context_length=20, vision={"width": 64, "heads": 2})
    assert model.text.token_embedding.num_embeddings == 300
    assert model.text.positional_embedding.shape == (20, 128)
    assert model.visual.trunk.embed_dim == 64 and model.image_size == (64, 64)
    assert sum(p.numel() for p in clip_cpu(vocab_size=1000).parameters()) < 1_500_000
    resnet = clip_cpu(vision={"kind": "resnet", "arch": "resnet18", "small_images": True})
    assert resnet.image_size is None and resnet.visual.pool == "mean"
    with torch.no_grad():
        image_emb, _, _ = resnet.eval()(random_images(48, 48), tokens(2, 20))
    assert image_emb.shape == (2, 128)


def test_unknown_vision_kinds_and_pools_are_refused():
    with pytest.raises(ValueError, match="vision.kind='swin' is not one of vit"):
        CLIP(vision={"kind": "swin"})
    with pytest.raises(ValueError, match="vision.pool='max' is not mean or attention"):
        CLIP(vision={"kind": "resnet", "pool": "max"}, **TEXT)


def test_resnet_tower_loads_torchvision_weights():
    import torchvision

    model = tiny_clip("resnet_attention")
    state = torchvision.models.resnet18(weights=None).state_dict()
    model.visual.trunk.load_imagenet_state(state)
    assert torch.equal(model.visual.trunk.conv1.weight, state["conv1.weight"])


# The modified ResNet -------------------------------------------------------------------------


def test_attention_pool_equals_torch_multi_head_attention_read_at_the_mean_token():
    """open_clip's formulation: every token queries, output 0 (the mean token's) is kept."""
    torch.manual_seed(0)
    pool = AttentionPool2d(grid_size=3, embed_dim=16, num_heads=4, output_dim=8)
    randomize_parameters(pool, seed=1, std=0.3)
    x = torch.randn(2, 16, 3, 3)
    tokens = x.flatten(2).permute(2, 0, 1)
    tokens = (
        torch.cat([tokens.mean(dim=0, keepdim=True), tokens]) + pool.positional_embedding[:, None]
    )
    expected, _ = F.multi_head_attention_forward(
        tokens, tokens, tokens, 16, 4,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight, need_weights=False,
    )  # fmt: skip
    assert_close(pool(x), expected[0], atol=1e-5, rtol=1e-5)


def test_modified_resnet_downsamples_32_times_with_average_pools():
    torch.manual_seed(0)
    model = ModifiedResNet(layers=(1, 2, 1, 1), output_dim=E, heads=4, image_size=64, width=8)
    assert model.forward_features(random_images(64, 96)).shape == (2, 256, 2, 3)
    assert model.conv1.stride == (2, 2) and isinstance(model.avgpool, nn.AvgPool2d)
    first = model.layer2[0]
    assert first.conv2.stride == (1, 1) and first.avgpool.kernel_size == 2
    assert isinstance(first.downsample.pool, nn.AvgPool2d) and first.downsample.conv.stride == (
        1,
        1,
    )
    blocks = [block for block in model.modules() if isinstance(block, Bottleneck)]
    assert len(blocks) == 5 and all(block.bn3.weight.eq(0).all() for block in blocks)


def test_modified_resnet_at_another_size_uses_the_resized_position_table():
    from glimpse.models.layers import resize_position_embedding

    torch.manual_seed(0)
    model = ModifiedResNet((1, 1, 1, 1), output_dim=E, heads=4, image_size=64, width=8).eval()
    model_96 = ModifiedResNet((1, 1, 1, 1), output_dim=E, heads=4, image_size=96, width=8).eval()
    state = dict(model.state_dict())
    table = state["attnpool.positional_embedding"][None]
    state["attnpool.positional_embedding"] = resize_position_embedding(table, 2, 3)[0]
    model_96.load_state_dict(state)
    x = random_images(96, 96)
    with torch.no_grad():
        assert_close(model(x), model_96(x))


# CLIP's options of glimpse's ViT ---------------------------------------------------------------


def test_vit_defaults_are_unchanged_and_clip_options_add_ln_pre_without_patch_bias():
    plain = vit_test()
    assert isinstance(plain.norm_pre, nn.Identity) and plain.patch_embed.proj.bias is not None
    assert plain.norm.eps == 1e-6 and isinstance(plain.blocks[0].mlp.act, nn.GELU)
    clip_like = vit_test(pre_norm=True, patch_bias=False, act_layer="quick_gelu", norm_eps=1e-5)
    assert clip_like.patch_embed.proj.bias is None
    assert {m.eps for m in clip_like.modules() if isinstance(m, nn.LayerNorm)} == {1e-5}
    assert isinstance(clip_like.blocks[0].mlp.act, QuickGELU)
    assert set(clip_like.state_dict()) - set(plain.state_dict()) == {
        "norm_pre.weight",
        "norm_pre.bias",
    }
    assert "patch_embed.proj.bias" not in clip_like.state_dict()


def test_vit_pre_norm_normalises_the_embedded_tokens():
    torch.manual_seed(0)
    model = vit_test(pre_norm=True).eval()
    randomize_parameters(model, seed=1, std=0.1)
    x = random_images(32, 32)
    seen = {}
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.update(z=args[0]))
    with torch.no_grad():
        model(x)
        assert_close(seen["z"], model.norm_pre(model.embed(x)))
    with pytest.raises(ValueError, match="act_layer='relu' is not one of gelu, quick_gelu"):
        VisionTransformer(img_size=32, patch_size=8, act_layer="relu")


def test_quick_gelu_is_x_times_sigmoid_of_1_702_x():
    x = torch.linspace(-4, 4, 41)
    assert_close(QuickGELU()(x), x * torch.sigmoid(1.702 * x))
    assert (QuickGELU()(x) - F.gelu(x)).abs().max() < 0.03


def test_causal_attention_matches_a_masked_reference_on_both_paths():
    torch.manual_seed(0)
    attention = Attention(dim=16, num_heads=2, causal=True).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        fast, _ = attention(x)
        explicit, probabilities = attention(x, return_attention=True)
        reference = nn.MultiheadAttention(16, 2, batch_first=True).eval()
        reference.in_proj_weight.copy_(attention.qkv.weight)
        reference.in_proj_bias.copy_(attention.qkv.bias)
        reference.out_proj.load_state_dict(attention.proj.state_dict())
        mask = torch.ones(5, 5, dtype=torch.bool).triu(1)
        expected, _ = reference(x, x, x, attn_mask=mask, need_weights=False)
    assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    assert_close(explicit, expected, atol=1e-5, rtol=1e-5)
    assert probabilities.triu(1).eq(0).all()

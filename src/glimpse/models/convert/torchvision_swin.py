"""torchvision ``SwinTransformer`` v1 (``swin_t``, ``swin_s``, ``swin_b``) -> glimpse's Swin.

Both compute the same function: LayerNorm ``eps=1e-5``, exact GELU, zero-padding of maps to
multiples of the window, no shift along an axis one window covers, patch merging in the same
neighbourhood order, dropout after the attention output and both MLP layers. torchvision keeps
everything in one ``features`` Sequential: entry 0 is the patch embedding, odd entries
``2i + 1`` are the blocks of stage ``i`` and even entries ``2i + 2`` the patch merging that
starts stage ``i + 1``. Every tensor maps unchanged except ``relative_position_index``, a
constant of the window size that glimpse rebuilds and does not store; it is dropped.

torchvision masks shifted windows with ``-100`` added to the logits, glimpse with ``-inf``; the
masked weights differ by less than ``exp(-100)`` relative to the others, far below float32
precision for any trained model.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torch import Tensor, nn

from glimpse.models.convert import rename_key
from glimpse.models.swin import SwinTransformer

if TYPE_CHECKING:
    from torchvision.models import SwinTransformer as TorchvisionSwin

_BLOCK = r"(layers\.\d+\.blocks\.\d+\.)"
_KEY_MAP: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), target)
    for pattern, target in [
        (r"features\.0\.0\.(weight|bias)", r"patch_embed.proj.\1"),
        (r"features\.0\.2\.(weight|bias)", r"patch_embed.norm.\1"),
        (_BLOCK + r"(norm1|norm2|attn\.qkv|attn\.proj)\.(weight|bias)", r"\1\2.\3"),
        (_BLOCK + r"attn\.relative_position_bias_table", r"\1attn.relative_position_bias_table"),
        (_BLOCK + r"mlp\.0\.(weight|bias)", r"\1mlp.fc1.\2"),
        (_BLOCK + r"mlp\.3\.(weight|bias)", r"\1mlp.fc2.\2"),
        (r"(layers\.\d+\.downsample\.)(norm|reduction)\.(weight|bias)", r"\1\2.\3"),
        (r"(norm|head)\.(weight|bias)", r"\1.\2"),
    ]
]
_DROPPED = re.compile(r"features\.\d+\.\d+\.attn\.relative_position_index")
_FEATURES = re.compile(r"features\.(\d+)\.")


def _renumber(match: re.Match[str]) -> str:
    """``features.{2i+1}.`` -> ``layers.{i}.blocks.``, ``features.{2i+2}.`` ->
    ``layers.{i+1}.downsample.``; ``features.0.`` (the patch embedding) stays."""
    index = int(match[1])
    if index == 0:
        return match[0]
    return f"layers.{(index - 1) // 2}.blocks." if index % 2 else f"layers.{index // 2}.downsample."


def _map_key(key: str) -> str:
    renamed = rename_key(_FEATURES.sub(_renumber, key, count=1), _KEY_MAP)
    if renamed is not None:
        return renamed
    raise KeyError(
        f"torchvision Swin key {key!r} has no glimpse counterpart (only Swin v1, not "
        f"swin_v2_t/s/b, is supported)."
    )


def swin_state_from_torchvision(tv_state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a torchvision ``SwinTransformer`` (v1) state dict to :class:`SwinTransformer`'s.

    Tensors are shared, not copied; ``relative_position_index`` buffers are dropped. An unknown
    key raises ``KeyError`` naming it.
    """
    return {
        _map_key(key): value for key, value in tv_state_dict.items() if not _DROPPED.fullmatch(key)
    }


def swin_from_torchvision(tv_model: TorchvisionSwin) -> SwinTransformer:
    """Build a :class:`SwinTransformer` of ``tv_model``'s shape and load its weights strictly.

    The result computes the same logits as ``tv_model`` in evaluation mode, and uses the same
    dropout and stochastic depth rates in training.
    """
    from torchvision.models.swin_transformer import PatchMerging, SwinTransformerBlock

    embed = tv_model.features[0][0]
    stages = list(tv_model.features[1::2])
    first = stages[0][0]
    blocks = [block for stage in stages for block in stage]
    merges = list(tv_model.features[2::2])
    if any(type(block) is not SwinTransformerBlock for block in blocks) or any(
        type(merge) is not PatchMerging for merge in merges
    ):
        raise ValueError("Only torchvision Swin v1 (swin_t, swin_s, swin_b) can be converted.")
    window = first.attn.window_size
    if embed.kernel_size[0] != embed.kernel_size[1] or window[0] != window[1]:
        raise ValueError(
            f"glimpse's Swin needs square patches and windows, got patch {embed.kernel_size} "
            f"and window {tuple(window)}."
        )
    eps = {m.eps for m in tv_model.modules() if isinstance(m, nn.LayerNorm)}
    if eps != {1e-5}:
        raise ValueError(f"torchvision Swin uses LayerNorm eps {eps}; glimpse's Swin uses 1e-5.")
    model = SwinTransformer(
        patch_size=embed.kernel_size[0],
        in_chans=embed.in_channels,
        num_classes=tv_model.head.out_features,
        embed_dim=embed.out_channels,
        depths=tuple(len(stage) for stage in stages),
        num_heads=tuple(stage[0].attn.num_heads for stage in stages),
        window_size=window[0],
        mlp_ratio=first.mlp[0].out_features / embed.out_channels,
        qkv_bias=first.attn.qkv.bias is not None,
        drop_rate=first.attn.dropout,
        attn_drop_rate=first.attn.attention_dropout,
        drop_path_rate=blocks[-1].stochastic_depth.p,
    )
    model.load_state_dict(swin_state_from_torchvision(tv_model.state_dict()))
    return model

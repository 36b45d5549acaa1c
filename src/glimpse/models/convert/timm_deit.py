"""timm DeiT (``deit_*_patch16_224`` and ``deit_*_distilled_patch16_224``) -> glimpse's models.

timm's ``VisionTransformerDistilled`` and glimpse's
:class:`~glimpse.models.deit.DistilledVisionTransformer` compute the same function: the class
and distillation tokens are concatenated before the patches and the position table (one entry
for each token) is added to all of them, pre-norm blocks with LayerNorm ``eps=1e-6``, exact
GELU, the fused ``qkv`` projection in the same query, key, value order, the final LayerNorm,
and ``head`` / ``head_dist`` on the two tokens, averaged at inference. timm's plain DeiT
(``VisionTransformer``) is likewise glimpse's :class:`~glimpse.models.vit.VisionTransformer`.
The two libraries use the same tensor names, so every tensor maps unchanged; the mapping is
still spelt out key by key, so that anything else (layer scale, register tokens, QK norms)
is refused by name rather than loaded into the wrong place.

DeiT III models (``no_embed_class``, layer scale) and other pooling are not supported.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torch import Tensor, nn

from glimpse.models.convert import rename_key
from glimpse.models.deit import DistilledVisionTransformer
from glimpse.models.vit import VisionTransformer

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer as TimmViT

_BLOCK = r"(blocks\.\d+\.)"
_KEY_MAP: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), target)
    for pattern, target in [
        (r"cls_token", "cls_token"),
        (r"dist_token", "dist_token"),
        (r"pos_embed", "pos_embed"),
        (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
        (_BLOCK + r"(norm1|norm2)\.(weight|bias)", r"\1\2.\3"),
        (_BLOCK + r"attn\.(qkv|proj)\.(weight|bias)", r"\1attn.\2.\3"),
        (_BLOCK + r"mlp\.(fc1|fc2)\.(weight|bias)", r"\1mlp.\2.\3"),
        (r"norm\.(weight|bias)", r"norm.\1"),
        (r"(head|head_dist)\.(weight|bias)", r"\1.\2"),
    ]
]


def _map_key(key: str) -> str:
    renamed = rename_key(key, _KEY_MAP)
    if renamed is not None:
        return renamed
    raise KeyError(
        f"timm DeiT key {key!r} has no glimpse counterpart (only the original DeiT and "
        f"distilled DeiT are supported, not DeiT III's layer scale or register tokens)."
    )


def deit_state_from_timm(timm_state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a timm DeiT state dict (distilled or not) to glimpse's.

    Tensors are shared, not copied. An unknown key raises ``KeyError`` naming it.
    """
    return {_map_key(key): value for key, value in timm_state_dict.items()}


def _check_supported(timm_model: TimmViT) -> None:
    unsupported = {
        "no_embed_class (DeiT III position table)": getattr(timm_model, "no_embed_class", False),
        f"global_pool={timm_model.global_pool!r}": timm_model.global_pool != "token",
        "register tokens": getattr(timm_model, "num_reg_tokens", 0) > 0,
        "a LayerNorm before the blocks": not isinstance(timm_model.norm_pre, nn.Identity),
        "a LayerNorm after pooling (fc_norm)": not isinstance(timm_model.fc_norm, nn.Identity),
        "a normalised patch embedding": not isinstance(timm_model.patch_embed.norm, nn.Identity),
    }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise ValueError(f"This timm model cannot be converted: it uses {', '.join(found)}.")
    eps = {m.eps for m in timm_model.modules() if isinstance(m, nn.LayerNorm)}
    if eps != {1e-6}:
        raise ValueError(f"timm DeiT uses LayerNorm eps {eps}; glimpse's ViT uses 1e-6.")
    act = timm_model.blocks[0].mlp.act
    if not isinstance(act, nn.GELU) or act.approximate != "none":
        raise ValueError(f"timm DeiT uses the activation {act}; glimpse's ViT uses exact GELU.")


def deit_from_timm(timm_model: TimmViT) -> VisionTransformer:
    """Build glimpse's model of ``timm_model``'s shape and load its weights strictly.

    A timm ``VisionTransformerDistilled`` becomes a :class:`DistilledVisionTransformer`, a plain
    timm DeiT a :class:`VisionTransformer`. The result computes the same logits as
    ``timm_model`` in evaluation mode and, for the distilled model in training mode, the same
    pair of head outputs as timm with ``set_distilled_training(True)``; it uses the same
    dropout and stochastic depth rates (timm's head dropout has no counterpart).
    """
    _check_supported(timm_model)
    distilled = getattr(timm_model, "dist_token", None) is not None
    first, last = timm_model.blocks[0], timm_model.blocks[-1]
    patch = timm_model.patch_embed.proj
    drop_path = getattr(last.drop_path1, "drop_prob", 0.0)
    model_cls = DistilledVisionTransformer if distilled else VisionTransformer
    model = model_cls(
        img_size=tuple(timm_model.patch_embed.img_size),
        patch_size=patch.kernel_size[0],
        in_chans=patch.in_channels,
        num_classes=timm_model.num_classes,
        embed_dim=timm_model.embed_dim,
        depth=len(timm_model.blocks),
        num_heads=first.attn.num_heads,
        mlp_ratio=first.mlp.fc1.out_features / timm_model.embed_dim,
        qkv_bias=first.attn.qkv.bias is not None,
        drop_rate=first.mlp.drop1.p,
        attn_drop_rate=first.attn.attn_drop.p,
        drop_path_rate=drop_path,
    )
    model.load_state_dict(deit_state_from_timm(timm_model.state_dict()))
    return model

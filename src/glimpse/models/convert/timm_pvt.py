"""timm ``PyramidVisionTransformerV2`` (``pvt_v2_b0`` ... ``pvt_v2_b5``, ``pvt_v2_b2_li``) ->
glimpse's :class:`PyramidVisionTransformer` with the v2 options.

Both compute the same function: overlapping patch embeddings (kernel ``2P - 1``, padding
``P - 1``), spatial-reduction or linear spatial-reduction attention with separate query and
key/value projections, the convolutional FFN (with the extra ReLU of the linear models), a
LayerNorm closing every stage, and the head on the average of the last stage's tokens; LayerNorm
``eps=1e-6`` in blocks and stage ends, ``1e-5`` in patch embeddings and reductions. Every tensor
maps unchanged; only the first patch embedding (timm's top-level ``patch_embed``) and the later
ones (timm's ``stages.i.downsample``) are renamed into our stages.

timm's ``drop_rate`` is a dropout before the head, which glimpse does not have; the converted
model takes timm's ``proj_drop_rate`` as its ``drop_rate``. Both are inactive in evaluation.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torch import Tensor, nn

from glimpse.models.convert import rename_key
from glimpse.models.pvt import LINEAR_SRA_SIZE, PyramidVisionTransformer

if TYPE_CHECKING:
    from timm.models.pvt_v2 import PyramidVisionTransformerV2

_BLOCK_PARTS = (
    r"norm1|norm2|attn\.q|attn\.kv|attn\.proj|attn\.sr|attn\.norm|mlp\.fc1|mlp\.dwconv|mlp\.fc2"
)
_KEY_MAP: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), target)
    for pattern, target in [
        (r"patch_embed\.(proj|norm)\.(weight|bias)", r"stages.0.patch_embed.\1.\2"),
        (r"stages\.(\d+)\.downsample\.(proj|norm)\.(weight|bias)", r"stages.\1.patch_embed.\2.\3"),
        (rf"(stages\.\d+\.blocks\.\d+\.)({_BLOCK_PARTS})\.(weight|bias)", r"\1\2.\3"),
        (r"stages\.(\d+)\.norm\.(weight|bias)", r"stages.\1.norm.\2"),
        (r"head\.(weight|bias)", r"head.\1"),
    ]
]


def _map_key(key: str) -> str:
    renamed = rename_key(key, _KEY_MAP)
    if renamed is not None:
        return renamed
    raise KeyError(f"timm PVT v2 key {key!r} has no glimpse counterpart.")


def pvt_v2_state_from_timm(timm_state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a timm ``PyramidVisionTransformerV2`` state dict to
    :class:`PyramidVisionTransformer`'s. Tensors are shared, not copied. An unknown key raises
    ``KeyError`` naming it."""
    return {_map_key(key): value for key, value in timm_state_dict.items()}


def _sr_ratio(attn: nn.Module) -> int:
    """The spatial reduction of a timm attention: its conv's stride, 1 without one."""
    return attn.sr.stride[0] if attn.sr is not None else 1


def pvt_v2_from_timm(timm_model: PyramidVisionTransformerV2) -> PyramidVisionTransformer:
    """Build a :class:`PyramidVisionTransformer` of ``timm_model``'s shape with the v2 options
    and load its weights strictly.

    The result computes the same logits as ``timm_model`` in evaluation mode, and uses the same
    attention, projection and stochastic depth rates in training.
    """
    embeds = [timm_model.patch_embed] + [stage.downsample for stage in timm_model.stages[1:]]
    strides = [embed.proj.stride[0] for embed in embeds]
    kernels = [embed.proj.kernel_size[0] for embed in embeds]
    if kernels != [2 * stride - 1 for stride in strides]:
        raise ValueError(
            f"glimpse's PVT v2 needs patch embeddings with kernel 2 * stride - 1, got kernels "
            f"{kernels} for strides {strides}."
        )
    firsts = [stage.blocks[0] for stage in timm_model.stages]
    eps = {block.norm1.eps for block in firsts} | {stage.norm.eps for stage in timm_model.stages}
    if eps != {1e-6}:
        raise ValueError(f"timm PVT v2 uses block LayerNorm eps {eps}; glimpse's PVT uses 1e-6.")
    linear = firsts[0].attn.pool is not None
    if linear and firsts[0].attn.pool.output_size not in (LINEAR_SRA_SIZE, (LINEAR_SRA_SIZE,) * 2):
        raise ValueError(f"glimpse's linear SRA pools to {LINEAR_SRA_SIZE}x{LINEAR_SRA_SIZE}.")
    model = PyramidVisionTransformer(
        in_chans=timm_model.in_chans,
        num_classes=timm_model.num_classes,
        patch_sizes=tuple(strides),
        embed_dims=tuple(block.norm1.normalized_shape[0] for block in firsts),
        depths=tuple(len(stage.blocks) for stage in timm_model.stages),
        num_heads=tuple(block.attn.num_heads for block in firsts),
        mlp_ratios=tuple(
            block.mlp.fc1.out_features / block.mlp.fc1.in_features for block in firsts
        ),
        sr_ratios=tuple(1 if linear else _sr_ratio(block.attn) for block in firsts),
        qkv_bias=firsts[0].attn.q.bias is not None,
        overlapping_patches=True,
        conv_mlp=True,
        linear_sra=linear,
        position_embedding=False,
        class_token=False,
        stage_norms=True,
        drop_rate=firsts[0].attn.proj_drop.p,
        attn_drop_rate=firsts[0].attn.attn_drop.p,
        drop_path_rate=getattr(timm_model.stages[-1].blocks[-1].drop_path1, "drop_prob", 0.0),
    )
    model.load_state_dict(pvt_v2_state_from_timm(timm_model.state_dict()))
    return model

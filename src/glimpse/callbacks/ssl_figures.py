"""DINO's self-attention maps: where the class token looks in the last block, head by head.

Caron et al. 2021 (sec. 4.2.1 and fig. 1/3) show that the class token's attention over the
patches in the last block of a self-supervised ViT segments the objects without any labels,
different heads attending to different parts. For images ``(B, 3, H, W)`` the map of head
``h`` is row 0 (the class token) of the last block's attention probabilities, over the patch
columns, ``A_L[:, h, 0, 1:]`` reshaped to the ``(H / P, W / P)`` grid (DINO's
``visualize_attention.py``).

:class:`AttentionMapFigures` draws them after validation passes for sample val images (PNG in
``<output_dir>/figures/`` and ``val/attention_maps`` in every WandbLogger);
:func:`attention_map_files` does it for image files (``python eval.py ckpt_path=... image=...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib import pyplot as plt
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.callbacks.classification_figures import unnormalise
from glimpse.callbacks.figures import FigureCallback, save_figure, wandb_loggers
from glimpse.models.vit import VisionTransformer

#: Heads drawn at most; a wider model's first heads are shown.
MAX_HEADS = 8


def has_attention_maps(backbone: nn.Module) -> bool:
    """Whether ``backbone`` is a ViT whose blocks can return their attention."""
    return isinstance(backbone, VisionTransformer)


@torch.no_grad()
def class_token_attention(vit: VisionTransformer, images: Tensor) -> Tensor:
    """``images (B, 3, H, W) -> (B, heads, H / P, W / P)``: the last block's attention of the
    class token over the patches, per head (each map sums to at most 1: the class and other
    prefix tokens take the rest)."""
    _, attentions = vit.forward_features(images, return_attention=True)
    last = attentions[-1][:, :, 0, vit.num_prefix_tokens :]
    grid_h, grid_w = images.shape[2] // vit.patch_size, images.shape[3] // vit.patch_size
    return last.reshape(last.shape[0], last.shape[1], grid_h, grid_w)


def attention_map_figure(pixels: np.ndarray, maps: Tensor, titles: Sequence[str] | None = None):
    """One row per image: the image ``(H, W, 3)`` in [0, 1], the mean of its heads' maps laid
    over it, then each head's map alone (up to :data:`MAX_HEADS`), every map scaled to [0, 1]
    and enlarged to the image with nearest-neighbour sampling (one block per patch).

    ``pixels (B, H, W, 3)``, ``maps (B, heads, h, w)``; ``titles`` one per image."""
    count, heads = maps.shape[0], min(maps.shape[1], MAX_HEADS)
    height, width = pixels.shape[1:3]
    shown = torch.cat([maps.float().mean(dim=1, keepdim=True), maps[:, :heads].float()], dim=1)
    large = F.interpolate(shown.cpu(), size=(height, width), mode="nearest")
    low = large.amin(dim=(2, 3), keepdim=True)
    high = large.amax(dim=(2, 3), keepdim=True)
    scaled = ((large - low) / (high - low).clamp_min(1e-12)).numpy()
    columns = heads + 2
    figure, axes = plt.subplots(
        count,
        columns,
        figsize=(1.7 * columns, 1.8 * count),
        layout="constrained",
        squeeze=False,
    )
    for row in range(count):
        axes[row, 0].imshow(pixels[row])
        axes[row, 0].set_title(titles[row] if titles else "image", fontsize=7)
        axes[row, 1].imshow(pixels[row])
        axes[row, 1].imshow(scaled[row, 0], cmap="inferno", alpha=0.6)
        axes[row, 1].set_title("mean of heads", fontsize=7)
        for head in range(heads):
            axes[row, head + 2].imshow(scaled[row, head + 1], cmap="inferno")
            axes[row, head + 2].set_title(f"head {head}", fontsize=7)
        for panel in axes[row]:
            panel.axis("off")
    return figure


class AttentionMapFigures(FigureCallback):
    """After each validation pass (not the sanity check), draw the class token's last-block
    attention of the task's evaluated ViT backbone (``pl_module.feature_network["backbone"]``:
    DINO's teacher, BYOL's online network) over ``num_images`` val images: those of the first
    val-split batch (validation loader 1, the same images every time).

    Args:
        output_dir: the run directory; pictures go to its ``figures/`` folder.
        num_images: images drawn.
        every_n_validations: draw every n-th validation pass only.
    """

    def __init__(self, output_dir: str, num_images: int = 4, every_n_validations: int = 1) -> None:
        super().__init__(output_dir, num_images, every_n_validations)
        #: The images drawn ``(n, 3, H, W)`` and their labels ``(n,)``, kept from the first pass.
        self.samples: tuple[Tensor, Tensor] | None = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        query_loader = 1 if len(trainer.num_val_batches) > 1 else 0
        if self.samples is None and dataloader_idx == query_loader and batch_idx == 0:
            images, labels = batch
            self.samples = (
                images[: self.num_images].detach().cpu(),
                labels[: self.num_images].detach().cpu(),
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.count_validation(trainer) or self.samples is None:
            return
        if not trainer.is_global_zero:
            return
        images, labels = self.samples
        vit = pl_module.feature_network["backbone"]
        maps = class_token_attention(vit, images.to(pl_module.device))
        spec = pl_module.spec
        names = spec.class_names or ()
        titles = [names[i] if i < len(names) else str(i) for i in labels.tolist()]
        figure = attention_map_figure(unnormalise(images, spec.mean, spec.std), maps, titles)
        step = trainer.global_step
        path = self.save(figure, f"attention_maps_step{step:07d}.png")
        for logger in wandb_loggers(trainer):
            logger.log_image(key="val/attention_maps", images=[str(path)], step=step)


@torch.no_grad()
def attention_map_files(
    task: Any, paths: Sequence[str], crop_ratio: float, figure_dir: Path
) -> list[tuple[str, str]]:
    """For each image file, save the figure of the class token's last-block attention of the
    task's evaluated ViT backbone as ``figure_dir/<file stem>_attention_maps.png``, the image
    resized and centre-cropped as the checkpoint's evaluation data was; returns
    ``(image path, figure path)`` pairs. ValueError when the backbone is not a ViT."""
    from glimpse.data.images.decode import open_rgb
    from glimpse.data.images.transforms import eval_transform

    vit = task.feature_network["backbone"]
    if not has_attention_maps(vit):
        raise ValueError(
            f"The checkpoint's backbone is a {type(vit).__name__}; attention maps need a ViT "
            "backbone (model.backbone._target_=glimpse.models.vit.*)."
        )
    spec = task.spec
    transform = eval_transform(spec.image_size, crop_ratio, spec.mean, spec.std)
    task.eval()
    results = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Image {path} does not exist; pass image=/path/to/photo.jpg.")
        images = transform(open_rgb(path))[None].to(task.device)
        maps = class_token_attention(vit, images)
        pixels = unnormalise(images, spec.mean, spec.std)
        figure = attention_map_figure(pixels, maps, [Path(path).name])
        target = save_figure(figure, Path(figure_dir) / f"{Path(path).stem}_attention_maps.png")
        print(f"{path}: attention maps {target}", flush=True)
        results.append((str(path), str(target)))
    return results

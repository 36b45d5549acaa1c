"""The random views of self-supervised learning: BYOL's two asymmetric augmentations and DINO's
multi-crop, as torchvision.transforms.v2 pipelines.

Every view is one draw of the same chain (BYOL, Grill et al. 2020, Table 6; DINO, Caron et al.
2021, ``DataAugmentationDINO`` in github.com/facebookresearch/dino):

1. a random resized crop (aspect ratio 3/4 to 4/3, bicubic) of ``scale`` of the image's area,
2. a horizontal flip with probability 0.5,
3. colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, in random order) with
   probability 0.8,
4. grayscale with probability 0.2,
5. a Gaussian blur, sigma uniform in [0.1, 2.0] px, with a per-view probability; its kernel
   side is a tenth of the crop's (odd, at least 3: BYOL's 23 px at 224 px),
6. solarisation (pixels >= 128 of 255 inverted) with a per-view probability,
7. scaling to [0, 1] and normalisation.

The per-view probabilities:

============================  ==========  ===========  ======================
view                          blur        solarise     crop scale
============================  ==========  ===========  ======================
global 1 (BYOL's t)           1.0         0.0          BYOL (0.08, 1); DINO (0.4, 1)
global 2 (BYOL's t')          0.1         0.2          as global 1
DINO's local crops            0.5         0.0          (0.05, 0.4)
============================  ==========  ===========  ======================

DINO's two global crops are BYOL's two views with a larger minimum crop, so the two recipes
(``kind``) differ only in that default scale and in DINO's ``num_local`` local crops. DINO's
paper trains ViT-S/16 with 10 local crops of 96 px; the default here is 6 (the DINO repo's
default), which costs 60 % fewer local forward passes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode, v2

from glimpse.errors import ConfigError

#: The recipes: BYOL's two views, or DINO's two global and ``num_local`` local crops.
BYOL = "byol"
MULTICROP = "multicrop"
VIEW_KINDS = (BYOL, MULTICROP)
#: The global crops' area range of each recipe when the config gives none.
DEFAULT_GLOBAL_SCALE = {BYOL: (0.08, 1.0), MULTICROP: (0.4, 1.0)}
HFLIP_P = 0.5
#: ColorJitter's (brightness, contrast, saturation, hue), applied with probability COLOR_JITTER_P.
COLOR_JITTER = (0.4, 0.4, 0.2, 0.1)
COLOR_JITTER_P = 0.8
GRAYSCALE_P = 0.2
#: Pixels at or above this (of 255) are inverted by solarisation, as PIL's ImageOps.solarize.
SOLARIZE_THRESHOLD = 128
#: The blur kernel's side as a fraction of the crop's: BYOL's 23 px at 224 px.
BLUR_KERNEL_FRACTION = 0.1
#: (blur probability, solarisation probability) of the two global views.
GLOBAL_VIEW_PROBABILITIES = ((1.0, 0.0), (0.1, 0.2))
#: (blur probability, solarisation probability) of DINO's local crops.
LOCAL_VIEW_PROBABILITIES = (0.5, 0.0)


def _pair(name: str, value: Sequence[float]) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
        raise ConfigError(f"data.views.{name}={list(value)} must be two numbers 0 < low <= high.")
    return pair


@dataclass(frozen=True)
class ViewRecipe:
    """Which views to draw of each image, from the ``data.views`` config.

    Attributes:
        kind: ``byol`` (two global views) or ``multicrop`` (DINO: two global views, then
            ``num_local`` local crops).
        global_scale: the global crops' range of the image's area; None takes the kind's
            paper value (:data:`DEFAULT_GLOBAL_SCALE`).
        num_local: ``multicrop`` only: the number of local crops.
        local_size: ``multicrop`` only: the local crops' side in pixels (DINO: 96).
        local_scale: ``multicrop`` only: the local crops' range of the image's area.
        blur_sigma: the Gaussian blur's range of standard deviations, in pixels.
    """

    kind: str = BYOL
    global_scale: tuple[float, float] | None = None
    num_local: int = 6
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.4)
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        if self.kind not in VIEW_KINDS:
            raise ConfigError(f"Unknown data.views.kind={self.kind!r}; use byol or multicrop.")
        scale = DEFAULT_GLOBAL_SCALE[self.kind] if self.global_scale is None else self.global_scale
        object.__setattr__(self, "global_scale", _pair("global_scale", scale))
        object.__setattr__(self, "local_scale", _pair("local_scale", self.local_scale))
        object.__setattr__(self, "blur_sigma", _pair("blur_sigma", self.blur_sigma))
        for name, scale in (("global_scale", self.global_scale), ("local_scale", self.local_scale)):
            if scale[1] > 1:
                raise ConfigError(f"data.views.{name}={list(scale)} must not exceed 1 (the image).")
        object.__setattr__(self, "num_local", int(self.num_local))
        object.__setattr__(self, "local_size", int(self.local_size))
        if self.num_local < 0 or self.local_size < 1:
            raise ConfigError(
                f"data.views.num_local={self.num_local} must be >= 0 and "
                f"data.views.local_size={self.local_size} >= 1."
            )

    @classmethod
    def from_config(cls, views: Mapping | None) -> ViewRecipe:
        """The recipe of a ``data.views`` mapping (None: every default); unknown keys fail."""
        views = dict(views or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(views) - set(known))
        if unknown:
            raise ConfigError(
                f"Unknown data.views key(s) {', '.join(unknown)}; the keys are {', '.join(known)}."
            )
        return cls(**views)

    @property
    def local_crops(self) -> int:
        """The number of local crops drawn: ``num_local`` for multicrop, 0 for byol."""
        return self.num_local if self.kind == MULTICROP else 0

    def sizes(self, global_size: int) -> list[int]:
        """The side of every view, global views first."""
        return [global_size] * 2 + [self.local_size] * self.local_crops

    def describe(self, global_size: int) -> dict:
        """Plain values for the DataSpec's metadata: the recipe with every default resolved."""
        recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        recipe["num_local"] = self.local_crops
        if not self.local_crops:
            recipe["local_size"] = recipe["local_scale"] = None
        return {**recipe, "global_size": global_size, "sizes": self.sizes(global_size)}


def blur_kernel_size(size: int) -> int:
    """The Gaussian blur's odd kernel side for a ``size`` px crop: a tenth of it, at least 3
    (BYOL's 23 at 224)."""
    return max(3, int(size * BLUR_KERNEL_FRACTION) // 2 * 2 + 1)


def view_transform(
    size: int,
    scale: Sequence[float],
    blur: float,
    solarize: float,
    mean: Sequence[float],
    std: Sequence[float],
    blur_sigma: Sequence[float] = (0.1, 2.0),
) -> v2.Compose:
    """uint8 image tensor ``(3, H, W)`` -> one random view, float32 ``(3, size, size)``
    normalised: the chain of the module docstring with blur probability ``blur`` and
    solarisation probability ``solarize`` (a step of probability 0 is left out)."""
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(
            size, scale=tuple(scale), interpolation=InterpolationMode.BICUBIC, antialias=True
        ),
        v2.RandomHorizontalFlip(HFLIP_P),
        v2.RandomApply([v2.ColorJitter(*COLOR_JITTER)], p=COLOR_JITTER_P),
        v2.RandomGrayscale(GRAYSCALE_P),
    ]
    if blur > 0:
        kernel = blur_kernel_size(size)
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, tuple(blur_sigma))], p=blur))
    if solarize > 0:
        steps.append(v2.RandomSolarize(SOLARIZE_THRESHOLD, p=solarize))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


class MultiViewTransform:
    """PIL image -> the recipe's views: a tuple of float32 ``(3, S_v, S_v)`` tensors, the two
    global views (``global_size``) first, then the local crops.

    Attributes:
        views: one :func:`view_transform` per view, in order.
    """

    def __init__(
        self,
        recipe: ViewRecipe,
        global_size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.recipe = recipe
        global_views = [
            view_transform(
                global_size, recipe.global_scale, blur, solarize, mean, std, recipe.blur_sigma
            )
            for blur, solarize in GLOBAL_VIEW_PROBABILITIES
        ]
        local_view = view_transform(
            recipe.local_size,
            recipe.local_scale,
            *LOCAL_VIEW_PROBABILITIES,
            mean,
            std,
            recipe.blur_sigma,
        )
        self.views: tuple[v2.Compose, ...] = (*global_views, *[local_view] * recipe.local_crops)

    def __call__(self, image: Image.Image) -> tuple[Tensor, ...]:
        pixels = v2.functional.to_image(image)
        return tuple(view(pixels) for view in self.views)

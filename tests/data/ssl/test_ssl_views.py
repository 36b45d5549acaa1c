"""BYOL's two asymmetric views and DINO's multi-crop: the built pipelines against the papers'
tables, and the solarisation asymmetry measured on a white image."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from glimpse.data.ssl.views import (
    BYOL,
    MULTICROP,
    MultiViewTransform,
    ViewRecipe,
    blur_kernel_size,
    view_transform,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _steps(view: v2.Compose) -> dict[type, v2.Transform]:
    """The view's transforms by type; RandomApply's wrapped transform under its own type, with
    the RandomApply's probability as ``.apply_p``."""
    found = {}
    for step in view.transforms:
        if isinstance(step, v2.RandomApply):
            (inner,) = step.transforms
            inner.apply_p = step.p
            step = inner
        found[type(step)] = step
    return found


def _check_common(view: v2.Compose, size: int, scale: tuple[float, float]) -> dict:
    """The steps every view shares (BYOL Table 6 / DINO's flip_and_color_jitter)."""
    steps = _steps(view)
    crop = steps[v2.RandomResizedCrop]
    assert crop.size == [size, size] or crop.size == (size, size)
    assert crop.scale == scale and crop.ratio == (3 / 4, 4 / 3)
    assert crop.interpolation == InterpolationMode.BICUBIC
    assert steps[v2.RandomHorizontalFlip].p == 0.5
    jitter = steps[v2.ColorJitter]
    assert jitter.apply_p == 0.8
    assert (jitter.brightness, jitter.contrast) == ((0.6, 1.4), (0.6, 1.4))
    assert jitter.saturation == (0.8, 1.2) and jitter.hue == (-0.1, 0.1)
    assert steps[v2.RandomGrayscale].p == 0.2
    assert list(steps[v2.Normalize].mean) == list(MEAN)
    assert list(steps[v2.Normalize].std) == list(STD)
    return steps


def _blur_and_solarize(steps: dict) -> tuple[float, float]:
    blur = steps.get(v2.GaussianBlur)
    solarize = steps.get(v2.RandomSolarize)
    return (blur.apply_p if blur else 0.0), (solarize.p if solarize else 0.0)


def test_byol_views_follow_the_byol_papers_table():
    transform = MultiViewTransform(ViewRecipe(kind=BYOL), 224, MEAN, STD)
    assert len(transform.views) == 2
    probabilities = []
    for view in transform.views:
        steps = _check_common(view, 224, (0.08, 1.0))
        blur = steps[v2.GaussianBlur]
        assert list(blur.kernel_size) == [23, 23] and list(blur.sigma) == [0.1, 2.0]
        probabilities.append(_blur_and_solarize(steps))
        if v2.RandomSolarize in steps:
            assert steps[v2.RandomSolarize].threshold == 128
    assert probabilities == [(1.0, 0.0), (0.1, 0.2)]


def test_multicrop_views_follow_dinos_data_augmentation():
    recipe = ViewRecipe(kind=MULTICROP, num_local=6)
    transform = MultiViewTransform(recipe, 224, MEAN, STD)
    assert len(transform.views) == 8
    globals_ = [_check_common(view, 224, (0.4, 1.0)) for view in transform.views[:2]]
    locals_ = [_check_common(view, 96, (0.05, 0.4)) for view in transform.views[2:]]
    assert [_blur_and_solarize(steps) for steps in globals_] == [(1.0, 0.0), (0.1, 0.2)]
    assert all(_blur_and_solarize(steps) == (0.5, 0.0) for steps in locals_)
    assert list(locals_[0][v2.GaussianBlur].kernel_size) == [9, 9]


def test_blur_kernel_is_an_odd_tenth_of_the_crop_side_and_at_least_three():
    assert [blur_kernel_size(s) for s in (224, 96, 128, 64, 32, 16)] == [23, 9, 13, 7, 3, 3]


def test_only_the_second_global_view_solarises_a_white_image():
    """On white every step but solarisation keeps each pixel >= 153 (brightness factor >= 0.6;
    contrast, saturation, hue, grayscale, crops and blur leave a uniform grey uniform), and
    solarisation inverts it to <= 102: a dark view is a solarised one."""
    recipe = ViewRecipe(kind=MULTICROP, num_local=1, local_size=8)
    transform = MultiViewTransform(recipe, 16, (0, 0, 0), (1, 1, 1))
    white = Image.new("RGB", (20, 18), (255, 255, 255))
    torch.manual_seed(0)
    draws = 250
    dark = torch.zeros(3)
    for _ in range(draws):
        views = transform(white)
        for index, view in enumerate(views):
            assert view.amax() - view.amin() < 1e-6  # still uniform
            dark[index] += float(view.mean() < 0.5)
    assert dark[0] == 0 and dark[2] == 0
    assert 0.13 < dark[1] / draws < 0.27  # p = 0.2: 50 expected, binomial sd 6.3


def test_views_are_normalised_float_squares_of_their_sizes_and_pickle():
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    recipe = ViewRecipe(kind=MULTICROP, num_local=3, local_size=12)
    transform = MultiViewTransform(recipe, 32, MEAN, STD)
    views = transform(image)
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 12, 12)] * 3
    assert all(v.dtype == torch.float32 for v in views)
    assert all(v.min() < 0 for v in views)  # normalised, not in [0, 1]
    assert len(pickle.loads(pickle.dumps(transform))(image)) == 5  # DataLoader workers
    assert (
        len(MultiViewTransform(ViewRecipe(kind=MULTICROP, num_local=0), 32, MEAN, STD).views) == 2
    )


def test_view_transform_leaves_out_steps_of_probability_zero():
    view = view_transform(32, (0.5, 1.0), blur=0.0, solarize=0.0, mean=MEAN, std=STD)
    assert v2.GaussianBlur not in _steps(view) and v2.RandomSolarize not in _steps(view)


def test_recipe_resolves_the_kinds_default_scale_and_describes_itself_in_plain_values():
    byol = ViewRecipe.from_config({"kind": "byol", "num_local": 4, "local_size": 16})
    assert byol.global_scale == (0.08, 1.0) and byol.local_crops == 0
    assert byol.describe(32) == {
        "kind": "byol",
        "global_scale": [0.08, 1.0],
        "num_local": 0,
        "local_size": None,
        "local_scale": None,
        "blur_sigma": [0.1, 2.0],
        "global_size": 32,
        "sizes": [32, 32],
    }
    dino = ViewRecipe.from_config({"kind": "multicrop", "num_local": 2, "local_size": 16})
    assert dino.global_scale == (0.4, 1.0) and dino.sizes(32) == [32, 32, 16, 16]
    chosen = ViewRecipe.from_config({"kind": "multicrop", "global_scale": [0.3, 0.9]})
    assert chosen.global_scale == (0.3, 0.9)
    assert ViewRecipe.from_config(None) == ViewRecipe(kind=BYOL)


@pytest.mark.parametrize(
    ("views", "message"),
    [
        ({"kind": "simclr"}, "Unknown data.views.kind='simclr'; use byol or multicrop."),
        ({"num_crops": 2}, "Unknown data.views key(s) num_crops; the keys are kind, "),
        ({"global_scale": [0.5, 0.2]}, "data.views.global_scale=[0.5, 0.2] must be two numbers"),
        ({"local_scale": [0.5, 1.5]}, "data.views.local_scale=[0.5, 1.5] must not exceed 1"),
        ({"blur_sigma": [1.0]}, "data.views.blur_sigma=[1.0] must be two numbers"),
        ({"num_local": -1}, "data.views.num_local=-1 must be >= 0"),
    ],
)
def test_bad_view_configs_fail_naming_the_key(views, message):
    with pytest.raises(ValueError) as error:
        ViewRecipe.from_config(views)
    assert message in str(error.value)

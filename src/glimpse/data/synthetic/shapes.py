"""Synthetic scenes: coloured geometric shapes on varied backgrounds, in real dataset formats.

A :class:`Scene` is a :class:`Background` and a tuple of :class:`Shape` s whose geometry is in
fractions of the image side, so one scene renders at any size. :func:`render` draws it (4x
supersampled, so edges are anti-aliased) and returns each shape's visible coverage mask;
:func:`captions` describes it truthfully in several phrasings.

The writers lay scenes out exactly as the real datasets are laid out on disk, so datamodules
parse synthetic and real data with the same code:

* :func:`write_imagefolder`: ``root/<split>/<kind>/*.png``, one dominant shape per image.
* :func:`write_coco`: ``root/images/<split>/*.jpg`` and ``root/annotations/instances_<split>.json``
  with boxes tight around each shape's visible pixels.
* :func:`write_flickr8k`: ``Flickr8k.token.txt`` (five captions per image), the
  ``Flickr_8k.{train,dev,test}Images.txt`` lists and ``Flicker8k_Dataset/*.jpg`` (the release's
  spelling).
* :func:`write_pairs`: ``root/images/*.jpg`` and ``root/pairs.csv`` (columns ``image,caption``).

Image ``i`` of a dataset is drawn from :func:`scene_rng` ``(seed, i)``, so the same seed gives
byte-identical files and any image's scene can be rebuilt. From the command line::

    python -m glimpse.data.synthetic.shapes coco --root data/shapes_coco --num 200 --image-size 64
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw

from glimpse.errors import ConfigError, DataError

RGB = tuple[int, int, int]

KINDS = ("circle", "square", "triangle", "pentagon", "hexagon", "star", "cross")
PLURALS = {kind: f"{kind}s" for kind in KINDS} | {"cross": "crosses"}

#: Shape colours; each name is the one captions use.
COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 210, 230),
    "blue": (30, 70, 220),
    "purple": (140, 50, 190),
    "pink": (245, 130, 200),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
#: Background colours, named apart from the shape colours so no caption word is ambiguous.
BACKGROUND_COLOURS: dict[str, RGB] = {
    "grey": (128, 128, 128),
    "beige": (225, 210, 175),
    "navy": (25, 35, 90),
    "olive": (110, 110, 40),
    "teal": (20, 110, 110),
    "maroon": (100, 25, 35),
    "lavender": (200, 190, 235),
    "slate": (70, 80, 95),
}
BACKGROUND_KINDS = ("solid", "gradient", "stripes", "noise")

MIN_CONTRAST = 120.0  # RGB distance between a shape's colour and every background colour
JITTER = 12  # a shape's RGB channels vary by up to this much around its named colour
SUPERSAMPLE = 4
MIN_IMAGE_SIZE = 16
MIN_RADIUS_PX = 3.0
DOMINANT_SIZE = (0.25, 0.42)  # circumradius, as a fraction of the image side
DISTRACTOR_SIZE = (0.04, 0.08)
DISTRACTOR_MIN_RADIUS_PX = 2.0
JPEG_QUALITY = 90
CAPTIONS_PER_IMAGE = 5
TRAIN_VAL = MappingProxyType({"train": 0.8, "val": 0.2})
FLICKR_SPLITS = MappingProxyType({"train": 0.75, "dev": 0.125, "test": 0.125})


@dataclass(frozen=True)
class Background:
    """What lies behind the shapes.

    Attributes:
        kind: ``"solid"``, ``"gradient"`` (from the first colour to the second along
            ``angle``), ``"stripes"`` (bands ``period`` wide alternating the two colours,
            running across ``angle``) or ``"noise"`` (the colour with blotches and grain drawn
            from ``seed``).
        colour_names: one or two names from :data:`BACKGROUND_COLOURS`.
        angle: degrees, for gradients and stripes.
        period: stripe width as a fraction of the image side.
        seed: seeds the noise pattern.
    """

    kind: str
    colour_names: tuple[str, ...]
    angle: float = 0.0
    period: float = 0.1
    seed: int = 0

    @property
    def phrase(self) -> str:
        """How captions name it, e.g. ``"navy and beige striped"``."""
        names = " and ".join(self.colour_names)
        return {
            "solid": f"plain {names}",
            "gradient": f"{names} gradient",
            "stripes": f"{names} striped",
            "noise": f"speckled {names}",
        }[self.kind]


@dataclass(frozen=True)
class Shape:
    """One filled shape; geometry in fractions of the image side, ``y`` growing downwards.

    Attributes:
        kind: one of :data:`KINDS`.
        colour_name: a name from :data:`COLOURS`; ``rgb`` is that colour, slightly jittered.
        centre: ``(x, y)``.
        size: circumradius (centre to farthest point).
        rotation: degrees, clockwise on screen.
    """

    kind: str
    colour_name: str
    rgb: RGB
    centre: tuple[float, float]
    size: float
    rotation: float


@dataclass(frozen=True)
class Scene:
    """A background and the shapes over it, in drawing order (later ones on top)."""

    background: Background
    shapes: tuple[Shape, ...]


def _regular(count: int, start: float, radii: Sequence[float] = (1.0,)) -> np.ndarray:
    """``count`` vertices at equal angles from ``start`` degrees, radii cycling ``radii``."""
    angles = np.radians(start + 360.0 * np.arange(count) / count)
    radius = np.resize(np.asarray(radii, dtype=float), count)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


_ARM = 0.35  # half the width of a cross's arm, relative to half its span
_CROSS = [(_ARM, 1), (_ARM, _ARM), (1, _ARM), (1, -_ARM), (_ARM, -_ARM), (_ARM, -1)]
#: Unit-circumradius outlines at rotation 0 (``y`` down, so -90 degrees points up).
OUTLINES: dict[str, np.ndarray] = {
    "square": _regular(4, 45.0),
    "triangle": _regular(3, -90.0),
    "pentagon": _regular(5, -90.0),
    "hexagon": _regular(6, 0.0),
    "star": _regular(10, -90.0, (1.0, 0.45)),
    "cross": np.array(_CROSS + [(-x, -y) for x, y in _CROSS]) / math.hypot(1, _ARM),
}


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that image ``index`` of a dataset written with ``seed`` is drawn from."""
    return np.random.default_rng([seed, index])


def _contrast(rgb: RGB, others: Sequence[RGB]) -> float:
    return min(math.dist(rgb, other) for other in others)


def _random_background(rng: np.random.Generator) -> Background:
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    count = 2 if kind in ("gradient", "stripes") else 1
    names = list(BACKGROUND_COLOURS)
    chosen = tuple(names[i] for i in rng.choice(len(names), size=count, replace=False))
    return Background(
        kind,
        chosen,
        angle=float(rng.uniform(0, 180)),
        period=float(rng.uniform(0.06, 0.2)),
        seed=int(rng.integers(2**31)),
    )


def _place(
    rng: np.random.Generator,
    placed: Sequence[Shape],
    kinds: Sequence[str],
    colours: Sequence[str],
    sizes: tuple[float, float],
    spacing: float,
) -> Shape | None:
    """A random shape inside the image whose centre is at least ``spacing`` times the sum of
    the radii from every placed shape's centre, or None after 100 tries."""
    kind = kinds[int(rng.integers(len(kinds)))]
    name = colours[int(rng.integers(len(colours)))]
    jitter = rng.integers(-JITTER, JITTER + 1, 3)
    rgb = tuple(int(v) for v in np.clip(np.add(COLOURS[name], jitter), 0, 255))
    size = float(rng.uniform(*sizes))
    rotation = float(rng.uniform(0, 360))
    for _ in range(100):
        x, y = (float(v) for v in rng.uniform(size, 1 - size, 2))
        if all(math.dist((x, y), s.centre) >= spacing * (size + s.size) for s in placed):
            return Shape(kind, name, rgb, (x, y), size, rotation)
    return None


def _sizes(bounds: tuple[float, float], min_px: float, image_size: int) -> tuple[float, float]:
    low = max(bounds[0], min_px / image_size)
    return low, max(bounds[1], low)


def random_scene(
    rng: np.random.Generator,
    image_size: int,
    *,
    num_shapes: tuple[int, int] = (1, 3),
    kinds: Sequence[str] = KINDS,
    size_range: tuple[float, float] = (0.1, 0.25),
    distractors: int = 0,
) -> Scene:
    """A random background with ``num_shapes`` (an inclusive range) shapes of ``kinds``,
    followed by up to ``distractors`` small shapes of any kind in colours none of them has.

    Shape colours contrast with every background colour. Sizes are circumradii as fractions
    of the image side, never under 3 pixels (2 for distractors) at ``image_size``. Shapes lie
    inside the image; main shapes may overlap a little (centres at least 0.7 times the sum of
    their radii apart) and distractors touch nothing. A shape with no room is left out.
    """
    background = _random_background(rng)
    backdrop = [BACKGROUND_COLOURS[name] for name in background.colour_names]
    palette = [name for name, rgb in COLOURS.items() if _contrast(rgb, backdrop) >= MIN_CONTRAST]
    shapes: list[Shape] = []
    sizes = _sizes(size_range, MIN_RADIUS_PX, image_size)
    for _ in range(int(rng.integers(num_shapes[0], num_shapes[1], endpoint=True))):
        shape = _place(rng, shapes, kinds, palette, sizes, spacing=0.7)
        if shape is not None:
            shapes.append(shape)
    used = {shape.colour_name for shape in shapes}
    others = [name for name in palette if name not in used]
    sizes = _sizes(DISTRACTOR_SIZE, DISTRACTOR_MIN_RADIUS_PX, image_size)
    count = int(rng.integers(distractors, endpoint=True)) if others else 0
    for _ in range(count):
        shape = _place(rng, shapes, KINDS, others, sizes, spacing=1.1)
        if shape is not None:
            shapes.append(shape)
    return Scene(background, tuple(shapes))


def classification_scene(
    rng: np.random.Generator, kind: str, image_size: int, distractors: int = 2
) -> Scene:
    """One large ``kind`` shape (the image's class) and up to ``distractors`` small ones."""
    return random_scene(
        rng,
        image_size,
        num_shapes=(1, 1),
        kinds=(kind,),
        size_range=DOMINANT_SIZE,
        distractors=distractors,
    )


def _background_pixels(background: Background, image_size: int) -> np.ndarray:
    """The background as float32 RGB values of shape ``(image_size, image_size, 3)``."""
    colours = np.array([BACKGROUND_COLOURS[n] for n in background.colour_names], np.float32)
    if background.kind == "noise":
        rng = np.random.default_rng(background.seed)
        coarse = rng.uniform(-1, 1, (6, 6)).astype(np.float32)
        side = (image_size, image_size)
        blotches = Image.fromarray(coarse).resize(side, Image.Resampling.BILINEAR)
        grain = rng.normal(0, 1, side).astype(np.float32)
        shade = 25 * np.asarray(blotches) + 6 * grain
        return colours[0] + shade[..., None]
    centres = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size
    x, y = np.meshgrid(centres, centres)
    theta = math.radians(background.angle)
    along = x * math.cos(theta) + y * math.sin(theta)
    if background.kind == "gradient":
        weight = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif background.kind == "stripes":
        weight = np.floor(along / background.period) % 2
    else:
        weight = np.zeros_like(along)
    return colours[0] + weight[..., None] * (colours[-1] - colours[0])


def _coverage(shape: Shape, image_size: int) -> np.ndarray:
    """The fraction of each pixel the shape covers, ignoring shapes drawn over it."""
    side = image_size * SUPERSAMPLE
    layer = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(layer)
    cx, cy, radius = shape.centre[0] * side, shape.centre[1] * side, shape.size * side
    if shape.kind == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=255)
    else:
        cos, sin = math.cos(math.radians(shape.rotation)), math.sin(math.radians(shape.rotation))
        points = OUTLINES[shape.kind] @ np.array([[cos, sin], [-sin, cos]]) * radius + (cx, cy)
        draw.polygon(points.ravel().tolist(), fill=255)
    return np.asarray(layer.reduce(SUPERSAMPLE), dtype=np.float32) / 255


def render(scene: Scene, image_size: int) -> tuple[Image.Image, list[np.ndarray]]:
    """Draw ``scene`` as an ``image_size`` square RGB image.

    Returns the image and, per shape, its visible coverage: a float32 ``(H, W)`` array in
    [0, 1], the fraction of each pixel where the shape shows through the shapes drawn over
    it. A shape's pixels are exactly its mask's nonzero ones (an all-zero mask: fully hidden).
    """
    canvas = _background_pixels(scene.background, image_size)
    coverages = [_coverage(shape, image_size) for shape in scene.shapes]
    for shape, coverage in zip(scene.shapes, coverages, strict=True):
        canvas += (np.asarray(shape.rgb, np.float32) - canvas) * coverage[..., None]
    masks = []
    uncovered = np.ones((image_size, image_size), np.float32)
    for coverage in reversed(coverages):
        masks.append(coverage * uncovered)
        uncovered = uncovered * (1 - coverage)
    image = Image.fromarray(np.rint(np.clip(canvas, 0, 255)).astype(np.uint8))
    return image, masks[::-1]


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """COCO box ``(x, y, width, height)`` in pixels around the mask's nonzero pixels, or
    None when there are none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


# Captions --------------------------------------------------------------------------------

NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _number(count: int) -> str:
    return NUMBERS[count] if count < len(NUMBERS) else str(count)


def _a(phrase: str) -> str:
    return f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def _named(shape: Shape, sized: bool = False) -> str:
    """E.g. ``"a red circle"``; with ``sized``, ``"a large red circle"`` for big or small ones."""
    adjective = ""
    if sized and shape.size < 0.13:
        adjective = "small "
    elif sized and shape.size >= 0.22:
        adjective = "large "
    return _a(f"{adjective}{shape.colour_name} {shape.kind}")


def _where(shape: Shape) -> str:
    """Where the shape's centre is, by thirds of the image."""
    x, y = shape.centre
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    column = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    if row and column:
        return f"in the {row} {column} corner"
    if row or column:
        return f"at the {row}" if row else f"on the {column}"
    return "in the middle"


def _relation(a: Shape, b: Shape) -> str:
    """Where ``a`` is relative to ``b``, along the axis their centres differ most on."""
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "to the left of" if dx < 0 else "to the right of"


def _inventory(shapes: Sequence[Shape]) -> str:
    """Every shape, grouped: ``"two red circles and a blue star"``."""
    groups = Counter((shape.colour_name, shape.kind) for shape in shapes)
    parts = [
        _a(f"{colour} {kind}") if n == 1 else f"{_number(n)} {colour} {PLURALS[kind]}"
        for (colour, kind), n in groups.items()
    ]
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def _pick(scene: Scene, rng: np.random.Generator, count: int = 1) -> list[Shape]:
    return [scene.shapes[i] for i in rng.choice(len(scene.shapes), size=count, replace=False)]


def _backdrop(scene: Scene) -> str:
    return _a(f"{scene.background.phrase} background")


def _on_background(scene: Scene, rng: np.random.Generator) -> str:
    (shape,) = _pick(scene, rng)
    return f"{_named(shape)} on {_backdrop(scene)}"


def _background_with(scene: Scene, rng: np.random.Generator) -> str:
    (shape,) = _pick(scene, rng)
    return f"{_backdrop(scene)} with {_named(shape)} {_where(shape)}"


def _located(scene: Scene, rng: np.random.Generator) -> str:
    (shape,) = _pick(scene, rng)
    return f"{_named(shape, sized=True)} {_where(shape)}"


def _counted(scene: Scene, rng: np.random.Generator) -> str:
    (shape,) = _pick(scene, rng)
    if len(scene.shapes) == 1:
        return f"a single {shape.colour_name} {shape.kind} on {_backdrop(scene)}"
    return f"{_number(len(scene.shapes))} shapes on {_backdrop(scene)}, including {_named(shape)}"


def _listed(scene: Scene, rng: np.random.Generator) -> str:
    return f"a picture of {_inventory(scene.shapes)}"


def _related(scene: Scene, rng: np.random.Generator) -> str:
    a, b = _pick(scene, rng, 2)
    return f"{_named(a)} {_relation(a, b)} {_named(b)}"


def _with_others(scene: Scene, rng: np.random.Generator) -> str:
    (shape,) = _pick(scene, rng)
    others = len(scene.shapes) - 1
    return f"{_named(shape)} and {_number(others)} other shape{'s' if others > 1 else ''}"


#: (fewest shapes the phrasing needs, phrasing); each one names a shape's colour and kind.
TEMPLATES: tuple[tuple[int, Callable[[Scene, np.random.Generator], str]], ...] = (
    (1, _on_background),
    (1, _background_with),
    (1, _located),
    (1, _counted),
    (1, _listed),
    (2, _related),
    (2, _with_others),
)


def captions(scene: Scene, rng: np.random.Generator, count: int) -> list[str]:
    """``count`` lower-case captions of ``scene``, each in a different phrasing while the
    phrasings last (a scene with one shape has five, with more, seven)."""
    if not scene.shapes:
        raise ValueError("A scene without shapes has nothing to caption.")
    usable = [phrasing for needs, phrasing in TEMPLATES if len(scene.shapes) >= needs]
    order = rng.permutation(len(usable))
    return [usable[order[i % len(usable)]](scene, rng) for i in range(count)]


def describe(scene: Scene, rng: np.random.Generator) -> str:
    """One caption of ``scene`` in a random phrasing."""
    return captions(scene, rng, 1)[0]


# Writers ---------------------------------------------------------------------------------


@contextmanager
def _staged(root: Path | str, overwrite: bool) -> Iterator[Path]:
    """Yield an empty folder beside ``root`` to write into; on success it replaces ``root``.

    Raises :class:`~glimpse.errors.DataError` naming ``root`` when it is a file, or a non-empty
    folder and not ``overwrite``. On failure the partial folder is removed and ``root`` is left as
    it was. When another process has filled ``root`` meanwhile (two runs generating the same
    dataset), its folder is kept and this one discarded, unless ``overwrite``.
    """
    root = Path(root).resolve()
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} exists and is not a folder.")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise DataError(
            f"Target folder {root} is not empty; choose a new or empty folder, or pass "
            "overwrite=True (--overwrite) to replace its contents."
        )
    stage = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        # Another process wrote the same folder meanwhile and may be reading it: keep it.
        shutil.rmtree(stage, ignore_errors=True)
        return
    if root.exists():
        shutil.rmtree(root)
    os.replace(stage, root)


def _save_jpeg(image: Image.Image, path: Path) -> None:
    # Full-resolution colour (4:4:4): halving chroma smears small saturated shapes.
    image.save(path, quality=JPEG_QUALITY, subsampling=0)


def _check_size(image_size: int) -> None:
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size {image_size} is too small; use at least {MIN_IMAGE_SIZE}.")


def _split_counts(num: int, splits: Mapping[str, float]) -> dict[str, int]:
    """``num`` shared among ``splits`` by fraction: at least one each, the first gets the rest."""
    total = sum(splits.values())
    names = list(splits)
    counts = {name: max(1, round(num * splits[name] / max(total, 1e-9))) for name in names[1:]}
    first = num - sum(counts.values())
    if total <= 0 or first < 1:
        raise ConfigError(
            f"{num} images are too few to give each of the splits {dict(splits)} one."
        )
    return {names[0]: first, **counts}


def write_imagefolder(
    root: Path | str,
    num_per_class: int,
    image_size: int,
    seed: int,
    *,
    splits: Mapping[str, float] = TRAIN_VAL,
    distractors: int = 2,
    overwrite: bool = False,
) -> Path:
    """Classification images ``root/<split>/<kind>/<i>.png``: ``num_per_class`` images of each
    of :data:`KINDS`, shared among ``splits`` by fraction; image ``i`` is
    :func:`classification_scene` ``(scene_rng(seed, i), kind, image_size, distractors)``."""
    _check_size(image_size)
    counts = _split_counts(num_per_class, splits)
    with _staged(root, overwrite) as stage:
        index = 0
        for split, count in counts.items():
            for kind in KINDS:
                folder = stage / split / kind
                folder.mkdir(parents=True)
                for _ in range(count):
                    scene = classification_scene(
                        scene_rng(seed, index), kind, image_size, distractors
                    )
                    render(scene, image_size)[0].save(folder / f"{index:06d}.png")
                    index += 1
    return Path(root)


def write_coco(
    root: Path | str,
    num_images: int,
    image_size: int,
    seed: int,
    *,
    splits: Mapping[str, float] = TRAIN_VAL,
    max_shapes: int = 4,
    overwrite: bool = False,
) -> Path:
    """Detection data: ``root/images/<split>/<i>.jpg`` and, in COCO's instances format,
    ``root/annotations/instances_<split>.json``, category ids 1.. in :data:`KINDS` order.
    Image ``i`` (id ``i + 1``) is :func:`random_scene` ``(scene_rng(seed, i),
    image_size, num_shapes=(1, max_shapes))``; each shape that shows gets a box tight around
    its visible pixels and their area (partly covered pixels counting their fraction)."""
    _check_size(image_size)
    counts = _split_counts(num_images, splits)
    categories = [
        {"id": i + 1, "name": kind, "supercategory": "shape"} for i, kind in enumerate(KINDS)
    ]
    with _staged(root, overwrite) as stage:
        (stage / "annotations").mkdir()
        index = 0
        for split, count in counts.items():
            folder = stage / "images" / split
            folder.mkdir(parents=True)
            images, annotations = [], []
            for _ in range(count):
                scene = random_scene(scene_rng(seed, index), image_size, num_shapes=(1, max_shapes))
                image, masks = render(scene, image_size)
                name = f"{index:06d}.jpg"
                _save_jpeg(image, folder / name)
                images.append(
                    {"id": index + 1, "file_name": name, "width": image_size, "height": image_size}
                )
                for shape, mask in zip(scene.shapes, masks, strict=True):
                    box = mask_bbox(mask)
                    if box is None:  # hidden behind the shapes drawn over it
                        continue
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": index + 1,
                            "category_id": KINDS.index(shape.kind) + 1,
                            "bbox": list(box),
                            "area": round(float(mask.sum()), 2),
                            "iscrowd": 0,
                        }
                    )
                index += 1
            document = {
                "info": {"description": f"glimpse synthetic shapes, seed {seed}"},
                "licenses": [],
                "images": images,
                "annotations": annotations,
                "categories": categories,
            }
            path = stage / "annotations" / f"instances_{split}.json"
            path.write_text(json.dumps(document), encoding="utf-8")
    return Path(root)


def write_flickr8k(
    root: Path | str,
    num_images: int,
    image_size: int,
    seed: int,
    *,
    max_shapes: int = 3,
    overwrite: bool = False,
) -> Path:
    """Captioning data laid out like the Flickr8k release: ``Flicker8k_Dataset/<i>.jpg``,
    ``Flickr8k.token.txt`` with lines ``<i>.jpg#k<TAB>Caption .`` (k = 0..4, five phrasings)
    and ``Flickr_8k.{train,dev,test}Images.txt`` listing 75/12.5/12.5% of the images. Image
    ``i`` is :func:`random_scene` ``(rng, image_size, num_shapes=(1, max_shapes))`` with
    ``rng = scene_rng(seed, i)``, which then draws its :func:`captions`."""
    _check_size(image_size)
    counts = _split_counts(num_images, FLICKR_SPLITS)
    with _staged(root, overwrite) as stage:
        folder = stage / "Flicker8k_Dataset"
        folder.mkdir()
        tokens: list[str] = []
        listed: dict[str, list[str]] = {split: [] for split in counts}
        index = 0
        for split, count in counts.items():
            for _ in range(count):
                rng = scene_rng(seed, index)
                scene = random_scene(rng, image_size, num_shapes=(1, max_shapes))
                name = f"{index:06d}.jpg"
                _save_jpeg(render(scene, image_size)[0], folder / name)
                # As in the release: a capital first letter and a spaced final full stop.
                tokens += [
                    f"{name}#{k}\t{text[0].upper()}{text[1:]} ."
                    for k, text in enumerate(captions(scene, rng, CAPTIONS_PER_IMAGE))
                ]
                listed[split].append(name)
                index += 1
        (stage / "Flickr8k.token.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
        for split, names in listed.items():
            path = stage / f"Flickr_8k.{split}Images.txt"
            path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return Path(root)


def kinds_caption(scene: Scene) -> str:
    """The scene's shape kinds only, largest first, e.g. ``"a star and a circle"``: no colour,
    size, place or background to match an image by."""
    shapes = sorted(scene.shapes, key=lambda shape: -shape.size)
    return " and ".join(_a(shape.kind) for shape in shapes)


#: How :func:`write_pairs` may caption a scene.
PAIR_CAPTIONS = ("scene", "kinds")


def write_pairs(
    root: Path | str,
    num_images: int,
    image_size: int,
    seed: int,
    *,
    max_shapes: int = 3,
    captions: str = "scene",
    overwrite: bool = False,
) -> Path:
    """Image-text pairs: ``root/images/<i>.jpg`` and ``root/pairs.csv`` with a header and
    columns ``image`` (path relative to ``root``) and ``caption``, one row per image. Image
    ``i`` is drawn as in :func:`write_flickr8k`, with one caption: ``captions="scene"`` from
    :func:`describe` (colours, sizes, places, background), ``"kinds"`` from
    :func:`kinds_caption` (the shape kinds only)."""
    _check_size(image_size)
    if num_images < 1:
        raise ConfigError(f"num_images must be at least 1, not {num_images}.")
    if captions not in PAIR_CAPTIONS:
        raise ConfigError(f"captions={captions!r} must be one of {', '.join(PAIR_CAPTIONS)}.")
    with _staged(root, overwrite) as stage:
        (stage / "images").mkdir()
        with open(stage / "pairs.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["image", "caption"])
            for index in range(num_images):
                rng = scene_rng(seed, index)
                scene = random_scene(rng, image_size, num_shapes=(1, max_shapes))
                name = f"images/{index:06d}.jpg"
                _save_jpeg(render(scene, image_size)[0], stage / name)
                caption = describe(scene, rng) if captions == "scene" else kinds_caption(scene)
                writer.writerow([name, caption])
    return Path(root)


WRITERS: dict[str, Callable[..., Path]] = {
    "imagefolder": write_imagefolder,
    "coco": write_coco,
    "flickr8k": write_flickr8k,
    "pairs": write_pairs,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m glimpse.data.synthetic.shapes",
        description="Write a synthetic shapes dataset in a real on-disk format.",
    )
    parser.add_argument("format", choices=list(WRITERS))
    parser.add_argument("--root", type=Path, required=True, help="folder to create")
    parser.add_argument(
        "--num", type=int, default=100, help="images per class (imagefolder), else images"
    )
    parser.add_argument("--image-size", type=int, default=64, help="side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --root")
    args = parser.parse_args(argv)
    try:
        root = WRITERS[args.format](
            args.root, args.num, args.image_size, args.seed, overwrite=args.overwrite
        )
    except ValueError as error:
        parser.error(str(error))
    count = sum(1 for path in root.rglob("*") if path.suffix in (".png", ".jpg"))
    side, seed = args.image_size, args.seed
    print(f"Wrote {count} {args.format} images of {side}x{side} pixels (seed {seed}) to {root}")


if __name__ == "__main__":
    main()

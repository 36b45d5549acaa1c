"""Synthetic shape scenes and the four dataset formats they are written in."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from torchvision.datasets import ImageFolder

from glimpse.data.synthetic import shapes
from glimpse.data.synthetic.shapes import (
    COLOURS,
    KINDS,
    PLURALS,
    WRITERS,
    Background,
    Scene,
    Shape,
    captions,
    classification_scene,
    mask_bbox,
    random_scene,
    render,
    scene_rng,
    write_coco,
    write_flickr8k,
    write_imagefolder,
    write_pairs,
)

SIZE = 32


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=int)


def token_lines(root: Path) -> list[tuple[str, str]]:
    lines = (root / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t")) for line in lines]


@pytest.mark.parametrize("name", list(WRITERS))
def test_same_seed_writes_identical_bytes_and_another_seed_differs(tmp_path, name):
    write = WRITERS[name]
    first = tree_bytes(write(tmp_path / "a", 3, SIZE, 1))
    again = tree_bytes(write(tmp_path / "b", 3, SIZE, 1))
    other = tree_bytes(write(tmp_path / "c", 3, SIZE, 2))
    assert first == again
    assert other.keys() == first.keys()
    images = {key for key in first if key.endswith((".png", ".jpg"))}
    assert images
    assert images <= {key for key in first if other[key] != first[key]}


def test_imagefolder_loads_with_torchvision_one_class_per_kind(tmp_path):
    root = write_imagefolder(tmp_path / "shapes", 5, SIZE, 0)
    assert 5 <= len(KINDS) <= 10
    for split, per_class in (("train", 4), ("val", 1)):
        dataset = ImageFolder(str(root / split))
        assert dataset.classes == sorted(KINDS)
        assert Counter(dataset.targets) == {i: per_class for i in range(len(KINDS))}
        for index in range(len(dataset)):
            image, _ = dataset[index]
            assert image.mode == "RGB"
            assert image.size == (SIZE, SIZE)


def test_classification_scene_is_its_class_and_outweighs_its_distractors():
    num_distractors = 0
    for index in range(42):
        kind = KINDS[index % len(KINDS)]
        scene = classification_scene(scene_rng(0, index), kind, SIZE, distractors=3)
        _, masks = render(scene, SIZE)
        main, *distractors = scene.shapes
        assert main.kind == kind
        assert all(shape.colour_name != main.colour_name for shape in distractors)
        assert all(masks[0].sum() > 3 * mask.sum() > 0 for mask in masks[1:])
        num_distractors += len(distractors)
    assert num_distractors > 0


def test_shape_pixels_are_exactly_the_masks_and_boxes_touch_drawn_pixels():
    for index in range(40):
        scene = random_scene(scene_rng(3, index), SIZE, num_shapes=(1, 4))
        image, masks = render(scene, SIZE)
        backdrop, no_masks = render(Scene(scene.background, ()), SIZE)
        assert no_masks == []
        changed = np.any(pixels(image) != pixels(backdrop), axis=2)
        assert not changed[np.sum(masks, axis=0) == 0].any()
        for mask in masks:
            x, y, w, h = mask_bbox(mask)
            ink = changed & (mask > 0)
            assert ink[y, x : x + w].any() and ink[y + h - 1, x : x + w].any()
            assert ink[y : y + h, x].any() and ink[y : y + h, x + w - 1].any()


def test_masks_leave_out_pixels_hidden_by_shapes_drawn_over():
    background = Background("solid", ("grey",))
    small = Shape("circle", "red", COLOURS["red"], (0.5, 0.5), 0.1, 0.0)
    big = Shape("square", "blue", COLOURS["blue"], (0.5, 0.5), 0.4, 0.0)
    side = Shape("star", "yellow", COLOURS["yellow"], (0.75, 0.5), 0.2, 0.0)
    _, (hidden, square, star) = render(Scene(background, (small, big, side)), 64)
    assert mask_bbox(hidden) is None
    _, (alone,) = render(Scene(background, (big,)), 64)
    assert 0 < square.sum() < alone.sum()
    assert mask_bbox(star) is not None


def test_coco_json_loads_with_pycocotools_and_boxes_match_the_rendered_shapes(tmp_path):
    root = write_coco(tmp_path / "coco", 6, SIZE, 5, max_shapes=4)
    num_annotations = 0
    for split, num_images in (("train", 5), ("val", 1)):
        coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
        categories = coco.loadCats(coco.getCatIds())
        assert [(c["id"], c["name"], c["supercategory"]) for c in categories] == [
            (i + 1, kind, "shape") for i, kind in enumerate(KINDS)
        ]
        assert len(coco.getImgIds()) == num_images
        for image_id in coco.getImgIds():
            info = coco.loadImgs(image_id)[0]
            path = root / "images" / split / info["file_name"]
            scene = random_scene(scene_rng(5, int(path.stem)), SIZE, num_shapes=(1, 4))
            rendered, masks = render(scene, SIZE)
            with Image.open(path) as stored:
                assert stored.size == (info["width"], info["height"]) == (SIZE, SIZE)
                assert np.abs(pixels(stored) - pixels(rendered)).mean() < 8
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
            assert [(a["category_id"], a["bbox"]) for a in annotations] == [
                (KINDS.index(shape.kind) + 1, list(mask_bbox(mask)))
                for shape, mask in zip(scene.shapes, masks, strict=True)
                if mask.any()
            ]
            for annotation in annotations:
                x, y, w, h = annotation["bbox"]
                assert x >= 0 and y >= 0 and w > 0 and h > 0
                assert x + w <= SIZE and y + h <= SIZE
                assert 0 < annotation["area"] <= w * h
                assert annotation["iscrowd"] == 0
            num_annotations += len(annotations)
    assert num_annotations > 6


def test_flickr8k_has_five_numbered_captions_per_image_and_splits_partition_them(tmp_path):
    root = write_flickr8k(tmp_path / "flickr", 8, SIZE, 2)
    images = sorted(path.name for path in (root / "Flicker8k_Dataset").glob("*.jpg"))
    assert len(images) == 8
    lines = token_lines(root)
    assert all(len(line) == 2 for line in lines)
    assert sorted(key for key, _ in lines) == sorted(f"{n}#{k}" for n in images for k in range(5))
    for name in images:
        texts = [caption for key, caption in lines if key.startswith(f"{name}#")]
        assert len(set(texts)) == 5
    listed = {
        split: (root / f"Flickr_8k.{split}Images.txt").read_text(encoding="utf-8").split()
        for split in ("train", "dev", "test")
    }
    assert all(listed.values())
    assert sorted(name for names in listed.values() for name in names) == images


def test_flickr8k_captions_name_the_colour_and_kind_of_shapes_in_the_scene(tmp_path):
    root = write_flickr8k(tmp_path / "flickr", 8, SIZE, 2, max_shapes=3)
    for key, caption in token_lines(root):
        assert caption[0].isupper() and caption.endswith(" .")
        index = int(key.split(".")[0])
        scene = random_scene(scene_rng(2, index), SIZE, num_shapes=(1, 3))
        text = caption.lower()
        assert any(f"{shape.colour_name} {shape.kind}" in text for shape in scene.shapes), caption
        words = set(re.findall(r"[a-z]+", text))
        assert words & set(COLOURS) <= {shape.colour_name for shape in scene.shapes}, caption
        named = {kind for kind in KINDS if {kind, PLURALS[kind]} & words}
        assert named <= {shape.kind for shape in scene.shapes}, caption


def test_captions_state_spatial_relation_and_count_from_the_centres():
    red_circle = Shape("circle", "red", COLOURS["red"], (0.55, 0.2), 0.15, 0.0)
    blue_square = Shape("square", "blue", COLOURS["blue"], (0.45, 0.75), 0.15, 30.0)
    scene = Scene(Background("solid", ("grey",)), (red_circle, blue_square))
    texts = [text for seed in range(10) for text in captions(scene, np.random.default_rng(seed), 7)]
    relations = [t for t in texts if re.search(r" (above|below|left of|right of) ", t)]
    assert relations
    for text in relations:
        assert text in ("a red circle above a blue square", "a blue square below a red circle")
    counted = [t for t in texts if "shapes on" in t]
    assert counted and all(t.startswith("two shapes on a plain grey background") for t in counted)


def test_pairs_rows_point_to_existing_images_with_one_caption_each(tmp_path):
    root = write_pairs(tmp_path / "pairs", 5, SIZE, 4)
    with open(root / "pairs.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["image", "caption"]
    assert len(rows) == 5 == len(list((root / "images").glob("*.jpg")))
    assert len({row["image"] for row in rows}) == 5
    for row in rows:
        with Image.open(root / row["image"]) as image:
            assert image.size == (SIZE, SIZE)
        assert row["caption"].strip()


def test_kinds_captions_name_the_kinds_only_largest_first(tmp_path):
    scene_root = write_pairs(tmp_path / "scene", 8, SIZE, 4, max_shapes=2)
    kinds_root = write_pairs(tmp_path / "kinds", 8, SIZE, 4, max_shapes=2, captions="kinds")
    for index in range(8):
        name = f"{index:06d}.jpg"
        scene_pixels = np.asarray(Image.open(scene_root / "images" / name))
        assert np.array_equal(scene_pixels, np.asarray(Image.open(kinds_root / "images" / name)))
        scene = random_scene(scene_rng(4, index), SIZE, num_shapes=(1, 2))
        largest_first = sorted(scene.shapes, key=lambda shape: -shape.size)
        expected = " and ".join(f"a{'n' * (s.kind[0] in 'aeiou')} {s.kind}" for s in largest_first)
        with open(kinds_root / "pairs.csv", newline="", encoding="utf-8") as handle:
            assert list(csv.DictReader(handle))[index]["caption"] == expected
    with pytest.raises(ValueError, match="captions='colours' must be one of scene, kinds"):
        write_pairs(tmp_path / "bad", 2, SIZE, 0, captions="colours")


@pytest.mark.parametrize("name", list(WRITERS))
def test_writers_refuse_a_non_empty_folder_unless_overwrite(tmp_path, name):
    root = tmp_path / "taken"
    root.mkdir()
    (root / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match=re.escape(str(root))):
        WRITERS[name](root, 3, SIZE, 0)
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]
    assert [p.name for p in root.iterdir()] == ["mine.txt"]
    WRITERS[name](root, 3, SIZE, 0, overwrite=True)
    assert not (root / "mine.txt").exists()
    assert tree_bytes(root) == tree_bytes(WRITERS[name](tmp_path / "fresh", 3, SIZE, 0))


def test_failed_write_leaves_no_folder_behind(tmp_path, monkeypatch):
    def fail(scene, rng):
        raise RuntimeError("captioning broke")

    monkeypatch.setattr(shapes, "describe", fail)
    with pytest.raises(RuntimeError, match="captioning broke"):
        write_pairs(tmp_path / "pairs", 3, SIZE, 0)
    assert list(tmp_path.iterdir()) == []


def test_too_few_images_for_the_splits_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="too few"):
        write_flickr8k(tmp_path / "flickr", 2, SIZE, 0)
    with pytest.raises(ValueError, match="too small"):
        write_pairs(tmp_path / "pairs", 2, 8, 0)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_the_dataset_and_prints_a_one_line_summary(tmp_path):
    root = tmp_path / "cli"
    command = [sys.executable, "-m", "glimpse.data.synthetic.shapes", "coco", "--root", str(root)]
    command += ["--num", "4", "--image-size", str(SIZE), "--seed", "3"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Wrote 4 coco images of 32x32 pixels (seed 3) to {root}\n"
    assert tree_bytes(root) == tree_bytes(write_coco(tmp_path / "api", 4, SIZE, 3))
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2
    assert f"Target folder {root} is not empty" in again.stderr


def test_a_folder_written_meanwhile_by_another_process_is_kept(tmp_path):
    """Two runs generating the same dataset at once: the one finishing second must not delete
    the folder the first has put in place (and may be reading), and leaves no partial folder."""
    root = tmp_path / "shapes"
    with shapes._staged(root, overwrite=False) as stage:
        (stage / "mine.txt").write_text("second writer")
        root.mkdir()
        (root / "theirs.txt").write_text("first writer")
    assert sorted(p.name for p in root.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]
    with shapes._staged(root, overwrite=True) as stage:
        (stage / "mine.txt").write_text("replacement")
    assert sorted(p.name for p in root.iterdir()) == ["mine.txt"]

"""ImageTextDataModule on files written by the tests in every source format (CSV, TSV, JSONL,
Flickr8k, COCO, shapes, WebDataset shards on disk and over HTTP), its splits, batches, errors,
tokenizer and zero-shot loader, its configs, and the real samples when present."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import CONF, SHARED_DATA, compose_train
from hydra.utils import instantiate
from PIL import Image

from glimpse.batches import IMAGE_TEXT, ImageTextPairs
from glimpse.data.formats.pair_files import read_pair_file, seeded_split
from glimpse.data.formats.tar_shards import ShardError, TarShardPairs
from glimpse.data.image_text.datamodule import (
    CLIP_MEAN,
    CLIP_STD,
    ImageTextDataModule,
    pair_transforms,
)
from glimpse.data.images.decode import CorruptImageError, open_rgb
from glimpse.data.spec import DataSpec
from glimpse.data.synthetic.datamodules import ShapesDataModule
from glimpse.data.synthetic.shapes import (
    KINDS,
    PLURALS,
    describe,
    random_scene,
    scene_rng,
    write_flickr8k,
    write_pairs,
)
from glimpse.data.text.bpe import BPETokenizer, clean
from glimpse.tasks.compatibility import (
    IncompatibleConfigError,
    check_compatible,
    data_configs_by_kind,
)

SIZE = 32
NUM_IMAGES = 30
TARGET = "glimpse.data.image_text.datamodule.ImageTextDataModule"
PAIR_CONFIGS = ["coco_pairs", "flickr8k_pairs", "image_text", "shapes_pairs", "webdataset"]


@pytest.fixture(scope="module")
def shapes_pairs(tmp_path_factory) -> Path:
    """write_pairs' 30 images of 32 px and their pairs.csv (one caption per image)."""
    return write_pairs(tmp_path_factory.mktemp("pairs") / "set", NUM_IMAGES, SIZE, seed=0)


def rows_of(root: Path) -> list[tuple[str, str]]:
    with open(root / "pairs.csv", newline="", encoding="utf-8") as f:
        return [(row["image"], row["caption"]) for row in csv.DictReader(f)]


def write_pairs_file(path: Path, rows: list[tuple[str, str]], header=("image", "caption")) -> Path:
    """A CSV, TSV or JSONL (by suffix) pairs file of ``rows``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        lines = [json.dumps({header[0]: i, header[1]: c}) for i, c in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writerows([header, *rows])
    return path


def two_captions(root: Path) -> list[tuple[str, str]]:
    """Each image of the shapes pairs twice: its caption, then a second one."""
    return [
        row
        for image, caption in rows_of(root)
        for row in ((image, caption), (image, f"{caption}!"))
    ]


def module(path, **kwargs) -> ImageTextDataModule:
    defaults = {"image_size": SIZE, "batch_size": 4, "num_workers": 0, "vocab_size": 300}
    return ImageTextDataModule(path=path, **{**defaults, **kwargs})


def ready(data: ImageTextDataModule) -> ImageTextDataModule:
    data.prepare_data()
    data.setup()
    return data


def pairs_of(loader) -> list[tuple[str, int]]:
    return [
        (t, int(i)) for batch in loader for t, i in zip(batch.texts, batch.image_ids, strict=True)
    ]


# Pair files -----------------------------------------------------------------------------------


def test_a_pairs_file_is_split_by_image_with_the_seed(shapes_pairs, tmp_path):
    path = write_pairs_file(shapes_pairs / "two.csv", two_captions(shapes_pairs))
    data = ready(module(path, val_fraction=0.2, test_fraction=0.1, split_seed=3))
    splits = {s: data.source.split(s) for s in ("train", "val", "test")}
    assert [len(s.names) for s in splits.values()] == [21, 6, 3]
    assert set().union(*(s.names for s in splits.values())) == {i for i, _ in rows_of(shapes_pairs)}
    assert all(len(caps) == 2 for s in splits.values() for caps in s.captions)
    assert data.spec.metadata["splits"]["val"]["captions"] == 12
    names = seeded_split([i for i, _ in rows_of(shapes_pairs)], 0.2, 0.1, seed=3)
    assert names["val"] == list(splits["val"].names)
    assert seeded_split(list(names["train"]), 0.2, 0.1, 4) != seeded_split(
        list(names["train"]), 0.2, 0.1, 3
    )


def test_a_folder_of_split_files_keeps_its_splits_and_test_falls_back_to_val(shapes_pairs):
    rows = rows_of(shapes_pairs)
    folder = shapes_pairs / "splits"
    write_pairs_file(folder / "train.csv", [(f"../{i}", c) for i, c in rows[:24]])
    write_pairs_file(folder / "val.csv", [(f"../{i}", c) for i, c in rows[24:]])
    data = ready(module(folder))
    assert len(data.source.split("train").names) == 24 and len(data.source.split("val").names) == 6
    assert data.source.split("test") is data.source.split("val")
    assert pairs_of(data.test_dataloader()) == pairs_of(data.val_dataloader())


def test_tsv_and_jsonl_files_give_the_same_pairs_as_csv(shapes_pairs):
    rows = two_captions(shapes_pairs)
    loaded = {}
    for suffix in ("csv", "tsv", "jsonl"):
        path = write_pairs_file(shapes_pairs / f"same.{suffix}", rows, header=("file", "text"))
        data = ready(
            module(path, format=suffix, source={"image_column": "file", "caption_column": "text"})
        )
        loaded[suffix] = [data.source.split(s).captions for s in ("train", "val", "test")]
    assert loaded["csv"] == loaded["tsv"] == loaded["jsonl"]
    listed = shapes_pairs / "lists.jsonl"
    captions = {}
    for image, caption in rows:
        captions.setdefault(image, []).append(caption)
    lines = [json.dumps({"image": image, "caption": caps}) for image, caps in captions.items()]
    listed.write_text("\n".join(lines))
    assert read_pair_file(listed) == read_pair_file(
        shapes_pairs / "same.csv", "csv", "file", "text"
    )
    # The format, when given, wins over the suffix.
    shutil.copy(shapes_pairs / "same.tsv", shapes_pairs / "same.txt")
    by_format = read_pair_file(shapes_pairs / "same.txt", "tsv", "file", "text")
    assert by_format == read_pair_file(shapes_pairs / "same.tsv", None, "file", "text")
    with pytest.raises(ValueError, match="not 'xml'"):
        read_pair_file(listed, "xml")


def test_image_paths_are_read_relative_to_image_root(shapes_pairs, tmp_path):
    path = write_pairs_file(tmp_path / "elsewhere.csv", rows_of(shapes_pairs))
    data = ready(module(path, source={"image_root": str(shapes_pairs)}))
    assert data.source.split("train").paths[0].parent == shapes_pairs / "images"


def test_training_batches_are_image_text_pairs(shapes_pairs):
    data = ready(module(shapes_pairs / "pairs.csv", context_length=128, caption_sampling="all"))
    batch = next(iter(data.train_dataloader()))
    assert isinstance(batch, ImageTextPairs)
    assert batch.images.shape == (4, 3, SIZE, SIZE) and batch.images.dtype == torch.float32
    assert batch.tokens.shape == (4, 128) and batch.tokens.dtype == torch.int64
    assert batch.image_ids.dtype == torch.int64 and len(batch.texts) == 4
    for tokens, text, i in zip(batch.tokens, batch.texts, batch.image_ids, strict=True):
        assert tokens[0] == data.tokenizer.start_id
        assert data.tokenizer.decode(tokens) == clean(text)
        assert text in data.source.split("train").captions[int(i)]
    # The same tokenizer as the spec's, and the spec's normalisation is CLIP's.
    assert BPETokenizer.from_dict(data.spec.tokenizer) == data.tokenizer
    assert (data.spec.mean, data.spec.std) == (CLIP_MEAN, CLIP_STD)


def test_evaluation_images_are_resized_centre_cropped_and_normalised_with_clips_statistics(
    shapes_pairs,
):
    data = ready(module(shapes_pairs / "pairs.csv", image_size=24))
    batch = next(iter(data.val_dataloader()))
    path = data.source.split("val").paths[0]
    pixels = torch.from_numpy(np.array(open_rgb(path).resize((24, 24), Image.BICUBIC)))
    expected = (
        pixels.permute(2, 0, 1) / 255 - torch.tensor(CLIP_MEAN)[:, None, None]
    ) / torch.tensor(CLIP_STD)[:, None, None]
    assert float((batch.images[0] - expected).abs().mean()) < 0.03
    train = pair_transforms(24, (0.9, 1.0), 1.0, CLIP_MEAN, CLIP_STD)["train"]
    assert train.transforms[1].scale == (0.9, 1.0)


def test_random_sampling_serves_each_image_once_and_all_serves_every_pair(shapes_pairs):
    path = write_pairs_file(shapes_pairs / "two.csv", two_captions(shapes_pairs))
    random_ = ready(module(path, batch_size=3))
    every = ready(module(path, batch_size=3, caption_sampling="all"))
    train = random_.source.split("train")
    served = pairs_of(random_.train_dataloader())
    assert sorted(i for _, i in served) == list(range(len(train.names)))
    assert all(text in train.captions[i] for text, i in served)
    served = pairs_of(every.train_dataloader())
    assert sorted(served) == sorted((c, i) for i, caps in enumerate(train.captions) for c in caps)


def test_evaluation_serves_every_caption_with_its_image_index(shapes_pairs):
    path = write_pairs_file(shapes_pairs / "two.csv", two_captions(shapes_pairs))
    data = ready(module(path, batch_size=5))
    val = data.source.split("val")
    expected = [(c, i) for i, caps in enumerate(val.captions) for c in caps]
    assert pairs_of(data.val_dataloader()) == expected


def test_missing_images_are_counted_and_left_out_or_raise(shapes_pairs, caplog):
    rows = rows_of(shapes_pairs) + [(f"images/gone{k}.jpg", "a lost star") for k in range(9)]
    path = write_pairs_file(shapes_pairs / "gaps.csv", rows)
    with caplog.at_level(logging.WARNING):
        data = ready(module(path, val_fraction=0.3))
    counts = data.spec.metadata["splits"]
    assert sum(c["missing_images"] for c in counts.values()) == 9
    assert sum(c["images"] for c in counts.values()) == NUM_IMAGES
    assert "have no file in" in caplog.text and "images/gone" in caplog.text
    with pytest.raises(FileNotFoundError, match=r"of the \d+ images listed in .*gaps.csv.*gone"):
        ready(module(path, val_fraction=0.3, skip_missing=False))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image,caption\na.jpg,\n", r"bad.csv:2: empty caption for the image a.jpg"),
        ("image,caption\n,a star\n", r"bad.csv:2: the image path is empty"),
        ("picture,caption\na.jpg,a star\n", r"bad.csv:1: no column 'image' in the header"),
        ("image,caption\na.jpg,a star,extra\n", r"bad.csv:2: 3 fields, but the header has 2"),
    ],
)
def test_malformed_csv_files_raise_naming_the_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_pair_file(tmp_path / "bad.csv")


def test_malformed_jsonl_files_raise_naming_the_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"image": "a.jpg", "caption": "ok"}\n{"image": "b.jpg"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: no key 'caption'"):
        read_pair_file(path)
    path.write_text('{"image": "a.jpg", "caption": ["ok", ""]}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: empty caption"):
        read_pair_file(path)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: not a JSON object"):
        read_pair_file(path)


def test_an_image_in_two_split_files_raises(shapes_pairs):
    rows = rows_of(shapes_pairs)
    folder = shapes_pairs / "overlap"
    write_pairs_file(folder / "train.csv", [(f"../{i}", c) for i, c in rows[:20]])
    write_pairs_file(folder / "val.csv", [(f"../{i}", c) for i, c in rows[19:]])
    with pytest.raises(ValueError, match="is listed in both the train and the val split"):
        ready(module(folder))


def test_unreadable_images_raise_or_are_skipped(shapes_pairs, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(shapes_pairs, root)
    first = rows_of(root)[0][0]
    (root / first).write_bytes(b"not an image")
    with pytest.raises(CorruptImageError, match="cannot be decoded"):
        ready(module(root / "pairs.csv"))
    data = ready(module(root / "pairs.csv", skip_corrupt=True))
    kept = sum(len(data.dataset(s).paths) for s in ("train", "val", "test"))
    assert kept == NUM_IMAGES - 1


# Datasets in other layouts --------------------------------------------------------------------


def test_flickr8k_layout_gives_every_caption_as_a_pair(tmp_path):
    root = write_flickr8k(tmp_path / "flickr", 16, SIZE, seed=0)
    data = ready(module(root, format="flickr8k", caption_sampling="all"))
    counts = data.spec.metadata["splits"]
    assert [counts[s]["images"] for s in ("train", "val", "test")] == [12, 2, 2]
    assert [counts[s]["captions"] for s in ("train", "val", "test")] == [60, 10, 10]
    served = pairs_of(data.val_dataloader())
    assert [i for _, i in served] == [0] * 5 + [1] * 5
    assert len(pairs_of(data.train_dataloader())) == 60


def write_coco_captions(root: Path, pairs: Path) -> Path:
    """A COCO 2017 captions layout from the shapes pairs: 20 train and 10 val images, two
    captions each."""
    rows = two_captions(pairs)
    for split, images in (("train2017", range(20)), ("val2017", range(20, 30))):
        (root / split).mkdir(parents=True)
        listing, annotations = [], []
        for k in images:
            name = f"{k:012d}.jpg"
            shutil.copy(pairs / rows[2 * k][0], root / split / name)
            listing.append({"id": k, "file_name": name})
            annotations += [
                {"id": 2 * k + j, "image_id": k, "caption": rows[2 * k + j][1]} for j in (0, 1)
            ]
        (root / "annotations").mkdir(exist_ok=True)
        document = {"images": listing, "annotations": annotations}
        (root / "annotations" / f"captions_{split}.json").write_text(json.dumps(document))
    return root


def test_coco_layout_trains_on_train2017_and_evaluates_val2017(shapes_pairs, tmp_path):
    root = write_coco_captions(tmp_path / "coco", shapes_pairs)
    data = ready(module(root, format="coco", source={"split": "official"}))
    counts = data.spec.metadata["splits"]
    assert [(counts[s]["images"], counts[s]["captions"]) for s in counts] == [
        (20, 40),
        (10, 20),
        (10, 20),
    ]
    assert pairs_of(data.test_dataloader()) == pairs_of(data.val_dataloader())


def test_shapes_pair_captions_name_a_kind_of_their_scene():
    for index in range(200):
        rng = scene_rng(0, index)
        scene = random_scene(rng, 64, num_shapes=(1, 2))
        caption = describe(scene, rng)
        named = {k for k in KINDS if f" {k}" in caption or f" {PLURALS[k]}" in caption}
        assert named and named <= {shape.kind for shape in scene.shapes}, caption


def test_spec_round_trips_through_its_dict_with_the_tokenizer(shapes_pairs):
    data = ready(module(shapes_pairs / "pairs.csv", context_length=40))
    spec = DataSpec.from_dict(json.loads(json.dumps(data.spec.to_dict())))
    assert spec == data.spec and spec.kind == IMAGE_TEXT and spec.image_size == SIZE
    assert spec.metadata["context_length"] == 40
    assert spec.metadata["vocab_size"] == data.tokenizer.vocab_size
    assert BPETokenizer.from_dict(spec.tokenizer) == data.tokenizer
    assert "zeroshot_classes" not in spec.metadata


def test_the_tokenizer_can_be_loaded_from_a_file_or_a_dict_instead_of_trained(
    shapes_pairs, tmp_path
):
    trained = ready(module(shapes_pairs / "pairs.csv")).tokenizer
    saved = trained.save(tmp_path / "tok.json")
    assert ready(module(shapes_pairs / "pairs.csv", tokenizer=str(saved))).tokenizer == trained
    given = ready(module(shapes_pairs / "pairs.csv", tokenizer=trained.to_dict()))
    assert given.tokenizer == trained
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip_torch (a dev extra) is absent")
    clip = ready(module(shapes_pairs / "pairs.csv", tokenizer="clip"))
    assert clip.spec.metadata["tokenizer_kind"] == "clip" and clip.tokenizer.vocab_size == 49408


# WebDataset shards ----------------------------------------------------------------------------


def write_pair_shards(folder: Path, pairs: Path, shards: int = 3) -> list[str]:
    """The shapes pairs as ``shards`` tar files ``<folder>/<k>.tar`` of jpg + txt samples."""
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    rows = rows_of(pairs)
    per = len(rows) // shards
    for k in range(shards):
        with tarfile.open(folder / f"{k}.tar", "w") as tar:
            for n, (image, caption) in enumerate(rows[k * per : (k + 1) * per]):
                tar.add(pairs / image, arcname=f"{k}_{n:04d}.jpg")
                text = folder / "caption.txt"
                text.write_text(caption)
                tar.add(text, arcname=f"{k}_{n:04d}.txt")
    return [c for _, c in rows]


def test_webdataset_format_reads_shards_from_disk(shapes_pairs, tmp_path):
    captions = write_pair_shards(tmp_path / "shards", shapes_pairs)
    path = {
        "train": str(tmp_path / "shards" / "{0..1}.tar"),
        "val": str(tmp_path / "shards" / "2.tar"),
    }
    data = ready(module(path, format="webdataset", source={"tokenizer_samples": 15}))
    assert isinstance(data.dataset("train"), TarShardPairs)
    assert data.spec.metadata["splits"] == {
        s: {"shards": n} for s, n in (("train", 2), ("val", 1), ("test", 1))
    }
    assert data.tokenizer == BPETokenizer.train(captions[:15], 300, 2)
    served = [t for batch in data.train_dataloader() for t in batch.texts]
    assert sorted(served) == sorted(captions[:20])
    batch = next(iter(data.val_dataloader()))
    assert batch.images.shape == (4, 3, SIZE, SIZE) and list(batch.texts) == captions[20:24]
    assert len(set(batch.image_ids.tolist())) == 4
    assert pairs_of(data.test_dataloader()) == pairs_of(data.val_dataloader())


def test_webdataset_format_streams_shards_from_an_http_server(shapes_pairs, tmp_path, server):
    captions = write_pair_shards(tmp_path / "shards", shapes_pairs)
    for k in range(3):
        server.routes[f"/wds/{k}.tar"] = (
            200,
            (tmp_path / "shards" / f"{k}.tar").read_bytes(),
            None,
        )
    path = {"train": server.url("/wds/{0..1}.tar"), "val": server.url("/wds/2.tar")}
    data = ready(
        module(path, format="webdataset", tokenizer={**BPETokenizer.train(captions).to_dict()})
    )
    assert [t for b in data.val_dataloader() for t in b.texts] == captions[20:]
    broken = module({**path, "val": server.url("/wds/absent.tar")}, format="webdataset")
    with pytest.raises(
        ShardError, match=r"Could not open the shard http://127.0.0.1:\d+/wds/absent.tar"
    ):
        ready(broken)
        next(iter(broken.val_dataloader()))


def test_webdataset_on_several_processes_needs_samples_per_epoch(shapes_pairs, tmp_path):
    write_pair_shards(tmp_path / "shards", shapes_pairs)
    path = {
        "train": str(tmp_path / "shards" / "{0..1}.tar"),
        "val": str(tmp_path / "shards" / "2.tar"),
    }
    data = ready(module(path, format="webdataset"))
    data.trainer = SimpleNamespace(
        world_size=2, strategy=SimpleNamespace(root_device=torch.device("cpu"))
    )
    with pytest.raises(ValueError, match="needs data.source.samples_per_epoch"):
        data.train_dataloader()
    data = ready(module(path, format="webdataset", source={"samples_per_epoch": 16}))
    data.trainer = SimpleNamespace(
        world_size=2, strategy=SimpleNamespace(root_device=torch.device("cpu"))
    )
    assert data.train_dataloader().dataset.samples_per_epoch == 16


def test_missing_shards_and_a_path_without_splits_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="shards of the train split"):
        ready(
            module(
                {"train": str(tmp_path / "x.tar"), "val": str(tmp_path / "x.tar")},
                format="webdataset",
            )
        )
    with pytest.raises(ValueError, match="must map train and val"):
        ready(module(str(tmp_path), format="webdataset"))


# Options, configs, compatibility --------------------------------------------------------------


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="data.format='parquet' must be one of"):
        module(tmp_path, format="parquet")
    with pytest.raises(ValueError, match="option\\(s\\) layout that format csv does not take"):
        module(tmp_path, source={"layout": "official"})
    with pytest.raises(ValueError, match="caption_sampling='first'"):
        module(tmp_path, caption_sampling="first")
    with pytest.raises(ValueError, match="data.path must say where"):
        module(None)
    with pytest.raises(ValueError, match="labelled image datamodule"):
        module(tmp_path, zeroshot=object())
    with pytest.raises(FileNotFoundError, match="neither a csv pairs file nor a folder"):
        ready(module(tmp_path / "absent.csv"))


def test_pair_configs_are_the_image_text_data_configs():
    assert data_configs_by_kind(CONF)[IMAGE_TEXT] == PAIR_CONFIGS


def test_shapes_pairs_config_builds_pairs_with_zero_shot_shapes_of_its_size(tmp_path):
    cfg = compose_train(
        [
            "data=shapes_pairs",
            "data.source.num_images=20",
            "data.image_size=24",
            "data.zeroshot.num_per_class=10",
            "data.num_workers=0",
            "data.batch_size=4",
            f"paths.data_dir={tmp_path}",
        ],
        tmp_path / "run",
    )
    data = instantiate(cfg.data)
    assert isinstance(data.zeroshot, ShapesDataModule) and data.zeroshot.image_size == 24
    ready(data)
    pairs, labelled = data.val_dataloader()
    assert next(iter(pairs)).images.shape[-1] == next(iter(labelled)).images.shape[-1] == 24
    assert data.spec.metadata["zeroshot_classes"] == sorted(KINDS)


@pytest.mark.parametrize("name", PAIR_CONFIGS)
def test_every_pair_config_instantiates(name, tmp_path):
    overrides = [f"data={name}", f"paths.data_dir={tmp_path}"]
    if name == "image_text":
        overrides.append("data.path=pairs.csv")
    if name == "webdataset":
        overrides += ["data.path.train=a.tar", "data.path.val=b.tar"]
    data = instantiate(compose_train(overrides, tmp_path / "run").data)
    assert isinstance(data, ImageTextDataModule) and data.context_length in (32, 77)


def test_a_task_for_labelled_images_rejects_image_text_pairs():
    with pytest.raises(IncompatibleConfigError, match="data=shapes_pairs yields image_text"):
        check_compatible(
            "glimpse.tasks.classification.ImageClassifier", TARGET, CONF, ("vit", "shapes_pairs")
        )


# The real samples -----------------------------------------------------------------------------

FLICKR8K = SHARED_DATA / "flickr8k"
COCO_MINI = SHARED_DATA / "coco_mini"


@pytest.mark.skipif(not FLICKR8K.is_dir(), reason="shared flickr8k sample absent")
def test_real_flickr8k_sample_as_pairs(caplog):
    with caplog.at_level(logging.WARNING):
        data = ready(module(FLICKR8K, format="flickr8k", verify=False, vocab_size=2000))
    counts = data.spec.metadata["splits"]
    assert [(counts[s]["images"], counts[s]["captions"]) for s in counts] == [
        (753, 3765),
        (113, 565),
        (125, 625),
    ]
    assert "train split: 5247 of the 6000 images listed in" in caplog.text
    batch = next(iter(data.val_dataloader()))
    assert batch.image_ids.tolist() == [0] * 4  # an image's five captions in order
    assert all(
        data.tokenizer.decode(t) == clean(x) for t, x in zip(batch.tokens, batch.texts, strict=True)
    )


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="shared coco_mini sample absent")
def test_real_coco_mini_as_pairs():
    data = ready(module(COCO_MINI, format="coco", verify=False, vocab_size=2000))
    counts = data.spec.metadata["splits"]
    assert (counts["train"]["images"], counts["train"]["captions"]) == (80, 400)
    assert (counts["val"]["images"], counts["val"]["captions"]) == (79, 395)
    batch = next(iter(data.train_dataloader()))
    assert batch.images.shape == (4, 3, SIZE, SIZE) and batch.tokens.shape == (4, 77)

"""ImagenetteDataModule: download from a local HTTP server, md5 check, safe and atomic
extraction of a generated release, readable class names; and the real Imagenette sample when
../shared/data/imagenette2_sample exists."""

from __future__ import annotations

import io
import math
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, compose_train, md5, tiny_image_overrides, write_imagenette_tree
from conftest import LocalServer as Server
from PIL import Image

from glimpse.batches import LABELLED_IMAGES
from glimpse.data import download as download_module
from glimpse.data.download import DownloadError
from glimpse.data.images.imagenette import (
    IMAGENETTE_CLASSES,
    IMAGEWOOF_CLASSES,
    PUBLISHED_MD5,
    ImagenetteDataModule,
    release_name,
)
from glimpse.run import train

SIZE = 32
RELEASE = "imagenette2-160"
SAMPLE = SHARED_DATA / "imagenette2_sample"


def pack(tree: Path, archive: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """``tree`` as a gzipped tar with the tree's folder name on top, plus ``extra`` members
    (name -> bytes); returns the archive's bytes."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive.read_bytes()


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, bytes]:
    """``(extracted tree, its .tgz bytes)`` of a generated imagenette2-160 release."""
    folder = tmp_path_factory.mktemp("release")
    tree = write_imagenette_tree(folder / RELEASE, IMAGENETTE_CLASSES)
    return tree, pack(tree, folder / f"{RELEASE}.tgz")


def _served(server: Server, body: bytes) -> str:
    server.routes[f"/mirror/{RELEASE}.tgz"] = (200, body, None)
    return server.url(f"/mirror/{RELEASE}.tgz")


def _datamodule(**kwargs) -> ImagenetteDataModule:
    return ImagenetteDataModule(image_size=SIZE, batch_size=4, num_workers=0, **kwargs)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_extract_and_read_with_readable_class_names(server, release, tmp_path):
    _, archive = release
    data_dir = tmp_path / "data"
    url = _served(server, archive)
    data = _datamodule(data_dir=data_dir, url=url, md5=md5(archive))
    data.prepare_data()
    assert _names(data_dir) == [RELEASE, f"{RELEASE}.tgz"]  # no temporary folder or .part
    assert data.root == data_dir / RELEASE
    data.setup("fit")
    spec = data.spec
    assert spec.kind == LABELLED_IMAGES
    assert spec.class_names == tuple(IMAGENETTE_CLASSES[w] for w in sorted(IMAGENETTE_CLASSES))
    assert spec.class_names[0] == "tench" and spec.class_names[-1] == "parachute"
    assert spec.metadata["release"] == RELEASE and spec.metadata["url"] == url
    assert spec.metadata["class_folders"] == sorted(IMAGENETTE_CLASSES)
    assert len(data.dataset("train")) == 10 * 3 + 1
    assert len(data.dataset("val")) == 10 * 1
    batch = next(iter(data.train_dataloader()))
    assert batch.images.shape == (4, 3, SIZE, SIZE) and batch.labels.dtype == torch.int64
    val_batch = next(iter(data.val_dataloader()))
    assert val_batch.images.shape == (4, 3, SIZE, SIZE)
    data.setup("test")
    assert data.dataset("test") is data.dataset("val")

    again = _datamodule(data_dir=data_dir, url=url, md5=md5(archive))
    again.prepare_data()
    data.prepare_data()
    assert server.requests == [f"/mirror/{RELEASE}.tgz"]  # downloaded once


@pytest.mark.parametrize("expected", [None, "0" * 32], ids=["published", "given"])
def test_an_archive_with_the_wrong_md5_is_refused_and_leaves_nothing(
    server, release, tmp_path, expected
):
    _, archive = release
    data_dir = tmp_path / "data"
    data = _datamodule(data_dir=data_dir, url=_served(server, archive), md5=expected)
    with pytest.raises(DownloadError, match=f"has md5 {md5(archive)}, expected"):
        data.prepare_data()
    assert _names(data_dir) == []


def test_the_published_md5s_are_named_in_the_refusal(server, release, tmp_path):
    _, archive = release
    data = _datamodule(data_dir=tmp_path, url=_served(server, archive))
    with pytest.raises(DownloadError) as error:
        data.prepare_data()
    for digest in PUBLISHED_MD5[RELEASE]:
        assert digest in str(error.value)


def test_an_archive_with_a_member_outside_the_target_is_refused(server, release, tmp_path):
    tree, _ = release
    evil = pack(tree, tmp_path / "evil.tgz", extra={"../evil": b"pwned\n"})
    data_dir = tmp_path / "data"
    data = _datamodule(data_dir=data_dir, url=_served(server, evil), md5=md5(evil))
    with pytest.raises(ValueError, match="'../evil', which points outside"):
        data.prepare_data()
    assert not (data_dir / "evil").exists() and not (tmp_path / "evil").exists()
    assert _names(data_dir) == [f"{RELEASE}.tgz"]  # verified download kept, nothing extracted
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.setup("fit")


def test_an_archive_without_train_and_val_is_refused(server, tmp_path):
    folder = tmp_path / "odd" / RELEASE
    folder.mkdir(parents=True)
    (folder / "readme.txt").write_text("no images\n")
    body = pack(folder, tmp_path / "odd.tgz")
    data_dir = tmp_path / "data"
    data = _datamodule(data_dir=data_dir, url=_served(server, body), md5=md5(body))
    with pytest.raises(ValueError, match="holds no imagenette2-160/train and"):
        data.prepare_data()
    assert _names(data_dir) == [f"{RELEASE}.tgz"]


def test_an_interrupted_extraction_is_not_taken_for_the_dataset(
    server, release, tmp_path, monkeypatch
):
    _, archive = release
    data_dir = tmp_path / "data"
    url = _served(server, archive)
    real_extract = download_module.extract_archive

    def interrupted(source: Path, destination: Path) -> Path:
        part = destination / RELEASE / "train" / "n01440764"
        part.mkdir(parents=True)
        (part / "half.JPEG").write_bytes(b"\xff\xd8")
        raise KeyboardInterrupt

    monkeypatch.setattr(download_module, "extract_archive", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _datamodule(data_dir=data_dir, url=url, md5=md5(archive)).prepare_data()
    assert _names(data_dir) == [f"{RELEASE}.tgz"]  # no folder under the final name

    # A process killed mid-extraction leaves its temporary folder behind: the next run
    # deletes it and extracts again from the verified archive, with no new download.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    stale = data_dir / f".{RELEASE}.tgz.{int(dead.stdout)}.extracting" / RELEASE / "train"
    stale.mkdir(parents=True)
    monkeypatch.setattr(download_module, "extract_archive", real_extract)
    data = _datamodule(data_dir=data_dir, url=url, md5=md5(archive))
    data.prepare_data()
    assert _names(data_dir) == [RELEASE, f"{RELEASE}.tgz"]
    data.setup("fit")
    assert len(data.dataset("train")) == 10 * 3 + 1
    assert server.requests == [f"/mirror/{RELEASE}.tgz"]


def test_root_reads_an_extracted_release_without_downloading(release, tmp_path):
    tree, _ = release
    data = _datamodule(root=tree, data_dir=tmp_path / "data", url="http://127.0.0.1:9/x.tgz")
    data.prepare_data()
    data.setup("validate")
    assert data.spec.class_names[0] == "tench" and data.spec.metadata["url"] is None
    assert len(data.dataset("val")) == 10
    assert not (tmp_path / "data").exists()
    with pytest.raises(FileNotFoundError, match=r"data.root=\S+ does not exist"):
        _datamodule(root=tmp_path / "missing").prepare_data()


def test_a_release_missing_a_class_is_refused_naming_it(tmp_path):
    classes = dict(list(IMAGENETTE_CLASSES.items())[:9])
    tree = write_imagenette_tree(tmp_path / RELEASE, classes)
    with pytest.raises(ValueError, match="lacks the imagenette class folder"):
        _datamodule(root=tree).setup("fit")


def test_imagewoof_names_its_dog_breeds(tmp_path):
    tree = write_imagenette_tree(tmp_path / "imagewoof2-320", IMAGEWOOF_CLASSES)
    data = _datamodule(dataset="imagewoof", variant=320, root=tree)
    assert data.release == "imagewoof2-320"
    assert data.url == "https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-320.tgz"
    assert data.md5 == PUBLISHED_MD5["imagewoof2-320"]
    data.setup("fit")
    assert data.spec.class_names == (
        "Shih-Tzu",
        "Rhodesian ridgeback",
        "beagle",
        "English foxhound",
        "Border terrier",
        "Australian terrier",
        "golden retriever",
        "Old English sheepdog",
        "Samoyed",
        "dingo",
    )
    plus_tench = write_imagenette_tree(
        tmp_path / "plus", {**IMAGEWOOF_CLASSES, "n01440764": "tench"}
    )
    with pytest.raises(ValueError, match="holds folder.s. n01440764 that are no imagewoof class"):
        _datamodule(dataset="imagewoof", root=plus_tench).setup("fit")


def test_release_names_urls_and_published_checksums():
    assert release_name("imagenette", "full") == "imagenette2"
    assert release_name("imagenette", 160) == "imagenette2-160"
    assert release_name("imagewoof", "320px") == "imagewoof2-320"
    with pytest.raises(ValueError, match="data.variant=224"):
        release_name("imagenette", 224)
    with pytest.raises(ValueError, match="data.dataset='imagenet'"):
        release_name("imagenet", 160)
    assert len(PUBLISHED_MD5) == 6
    for digests in PUBLISHED_MD5.values():
        assert digests and all(re.fullmatch(r"[0-9a-f]{32}", d) for d in digests)


def test_fast_dev_run_of_vit_on_a_downloaded_imagenette(server, release, tmp_path):
    _, archive = release
    overrides = [
        *tiny_image_overrides(tmp_path, data="imagenette"),
        f"data.url={_served(server, archive)}",
        f"data.md5={md5(archive)}",
        "debug=fdr",
    ]
    value = train(compose_train(overrides, tmp_path / "run"))
    assert math.isfinite(value) and 0.0 <= value <= 1.0
    assert (tmp_path / "data" / RELEASE / "train" / "n03888257").is_dir()


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data/imagenette2_sample absent")
def test_real_imagenette_sample_has_readable_names_and_decodes():
    data = ImagenetteDataModule(root=SAMPLE, image_size=SIZE, batch_size=8, num_workers=0)
    data.prepare_data()
    data.setup("fit")
    assert data.spec.class_names == tuple(IMAGENETTE_CLASSES[w] for w in sorted(IMAGENETTE_CLASSES))
    assert len(data.dataset("train")) == 500 and len(data.dataset("val")) == 200
    samples = data.dataset("train").samples + data.dataset("val").samples
    assert sum(Image.open(path).mode == "L" for path, _ in samples) == 15
    batch = next(iter(data.val_dataloader()))
    assert batch.images.shape == (8, 3, SIZE, SIZE)
    assert batch.labels.tolist() == sorted(batch.labels.tolist())  # val is not shuffled

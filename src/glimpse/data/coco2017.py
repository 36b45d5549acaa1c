"""COCO 2017 (Lin et al. 2014) as COCO distributes it: its archives, their published md5s, and
fetching what a root folder lacks of them. The detection and the captions data share it."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from glimpse.data.download import download_file, extract_into
from glimpse.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

#: COCO's download host (https://cocodataset.org/#download).
BASE_URL = "http://images.cocodataset.org/"
#: COCO 2017's archives: name -> (address under :data:`BASE_URL`, the paths under ``root``
#: it provides). The zips hold ``train2017/``, ``val2017/`` and ``annotations/`` at their top.
ARCHIVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "train2017.zip": ("zips/train2017.zip", ("train2017",)),
    "val2017.zip": ("zips/val2017.zip", ("val2017",)),
    "annotations_trainval2017.zip": (
        "annotations/annotations_trainval2017.zip",
        (
            "annotations/instances_train2017.json",
            "annotations/instances_val2017.json",
            "annotations/captions_train2017.json",
            "annotations/captions_val2017.json",
        ),
    ),
}
#: The archives' md5s as PaddleDetection publishes them (``ppdet/utils/download.py``,
#: ``DATASETS["coco"]``), the same values that MLCommons' training references list. gluon-cv
#: (``scripts/datasets/mscoco.py``) publishes sha1s of the same files: train2017.zip
#: 10ad623668ab00c62c096f0ed636d6aff41faca5, val2017.zip
#: 4950dc9d00dbe1c933ee0170f5797584351d2a41, annotations_trainval2017.zip
#: 8551ee4bb5860311e79dace7e79cb91e432e78b3. Sizes: 18 GiB, 778 MiB and 241 MiB.
PUBLISHED_MD5 = {
    "train2017.zip": "cced6f7f71b7629ddf16f17bbcfab6b2",
    "val2017.zip": "442b8da7639aecaf257c1dceb8ba8c80",
    "annotations_trainval2017.zip": "f4bbac642086de4f52a3fdda2de5fa2c",
}


def fetch_coco2017(
    root: Path,
    wanted: Sequence[str],
    base_url: str = BASE_URL,
    md5: Mapping[str, str] = PUBLISHED_MD5,
) -> None:
    """Download, verify and extract into ``root`` the COCO 2017 archives (:data:`ARCHIVES`)
    providing the paths of ``wanted`` (relative to ``root``) that ``root`` lacks; each archive
    is deleted once extracted. A lacking path no archive provides is a MissingFileError."""
    lacking = sorted(p for p in wanted if not (root / p).exists())
    provider = {p: name for name, (_, provides) in ARCHIVES.items() for p in provides}
    unknown = [p for p in lacking if p not in provider]
    if unknown:
        raise MissingFileError(
            f"{root / unknown[0]} does not exist and no COCO 2017 archive provides it; "
            "data.download only fetches train2017/, val2017/ and annotations/."
        )
    root.mkdir(parents=True, exist_ok=True)
    for name in sorted({provider[p] for p in lacking}):
        address, provides = ARCHIVES[name]
        archive = root / name
        log.info("Downloading %s to %s", base_url + address, archive)
        download_file(base_url + address, archive, md5=md5.get(name))
        log.info("Extracting %s into %s", archive, root)
        extract_into(archive, root)
        absent = [p for p in provides if not (root / p).exists()]
        if absent:
            raise DataError(f"{archive} holds no {', '.join(absent)}; is it COCO's {name}?")
        archive.unlink()

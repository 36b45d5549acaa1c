"""COCO captions (Chen et al. 2015): the 2017 images with about five captions each, read as a
:class:`~glimpse.data.captions.datamodule.CaptionDataModule`.

``root`` holds the 2017 release as COCO distributes it (``train2017/``, ``val2017/``,
``annotations/captions_{train,val}2017.json``). Two splits:

* ``official``: train2017 for training and val2017 for validation. COCO's test2017 images
  have no public captions, so the test split evaluates val2017 again.
* ``karpathy``: Karpathy & Fei-Fei's (2015) split, the usual one for reporting captioning
  scores: 113,287 train (his ``train`` and ``restval``), 5,000 val and 5,000 test images, read
  from his ``dataset_coco.json``. Its images are named by their 2014 files, but each record's
  ``cocoid`` names the same picture in the 2017 release (``<cocoid:012d>.jpg`` in
  ``train2017/`` or ``val2017/``), so the 2017 downloads serve this split; a 2014 layout
  (``<filepath>/<filename>`` under ``root``) is used when the 2017 file is absent.

``download=True`` fetches what ``root`` lacks of the release from COCO's addresses, checked
against the published md5s (:func:`glimpse.data.coco2017.fetch_coco2017`, shared with the
detection data). Karpathy's split file is not downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from glimpse.data.captions.datamodule import CaptionDataModule
from glimpse.data.captions.splits import SplitSource, image_files
from glimpse.data.coco2017 import BASE_URL, PUBLISHED_MD5, fetch_coco2017
from glimpse.data.formats.caption_files import read_coco_captions, read_karpathy_split
from glimpse.errors import ConfigError, MissingFileError

IMAGE_DIRS = {"train": "train2017", "val": "val2017"}
ANNOTATIONS = {
    "train": "annotations/captions_train2017.json",
    "val": "annotations/captions_val2017.json",
}
KARPATHY_FILE = "dataset_coco.json"


class CocoCaptionsDataModule(CaptionDataModule):
    """COCO captions with the official or Karpathy split (see the module docstring).

    Args:
        root: the folder holding ``train2017/``, ``val2017/`` and ``annotations/``.
        split: ``official`` or ``karpathy``.
        karpathy_file: Karpathy's ``dataset_coco.json``; None is ``root/dataset_coco.json``.
        download: fetch the COCO 2017 archives providing what ``root`` lacks.
        base_url: a mirror of COCO's download host; None is
            :data:`~glimpse.data.coco2017.BASE_URL`.
        md5: md5s replacing the published ones, by archive name (for a mirror).
        min_word_freq: see :class:`~glimpse.data.captions.datamodule.CaptionDataModule` (5 is
            usual).
        **kwargs: any other argument of
            :class:`~glimpse.data.captions.datamodule.CaptionDataModule`.
    """

    def __init__(
        self,
        root: str | os.PathLike = "data/coco",
        split: Literal["official", "karpathy"] = "official",
        karpathy_file: str | os.PathLike | None = None,
        download: bool = False,
        base_url: str | None = None,
        md5: Mapping[str, str] | None = None,
        min_word_freq: int = 5,
        **kwargs,
    ) -> None:
        if split not in ("official", "karpathy"):
            raise ConfigError(f"data.split={split!r} must be official or karpathy.")
        super().__init__(root=root, min_word_freq=min_word_freq, **kwargs)
        self.split_name = split
        self.karpathy_file = Path(karpathy_file) if karpathy_file else self.root / KARPATHY_FILE
        self.download = download
        self.base_url = (base_url or BASE_URL).rstrip("/") + "/"
        self.md5 = {**PUBLISHED_MD5, **(md5 or {})}

    def prepare_data(self) -> None:
        """With ``download``, fetch what ``root`` lacks of the release; else check that ``root``
        exists."""
        if self.download:
            wanted = [*IMAGE_DIRS.values(), *ANNOTATIONS.values()]
            fetch_coco2017(self.root, wanted, self.base_url, self.md5)
        if not self.root.is_dir():
            raise MissingFileError(
                f"data.root={self.root} does not exist; point it at a COCO 2017 release "
                "(train2017/, val2017/, annotations/captions_*2017.json)."
            )

    def metadata(self) -> dict:
        karpathy = self.split_name == "karpathy"
        return {
            **super().metadata(),
            "layout": f"coco2017-{self.split_name}",
            "karpathy_file": str(self.karpathy_file) if karpathy else None,
        }

    def read_sources(self) -> dict[str, SplitSource]:
        if self.split_name == "karpathy":
            return self._karpathy_sources()
        sources = {}
        for split, folder in IMAGE_DIRS.items():
            annotations = self.root / ANNOTATIONS[split]
            if not annotations.is_file():
                raise MissingFileError(
                    f"{annotations} does not exist; data.root must hold COCO's "
                    "annotations/captions_{train,val}2017.json."
                )
            captions, _ = read_coco_captions(annotations)
            sources[split] = SplitSource(
                captions, image_files(self.root / folder), str(annotations), str(self.root / folder)
            )
        sources["test"] = sources["val"]
        return sources

    def _karpathy_sources(self) -> dict[str, SplitSource]:
        if not self.karpathy_file.is_file():
            raise MissingFileError(
                f"data.karpathy_file={self.karpathy_file} does not exist; it is Karpathy's "
                "dataset_coco.json (from his caption_datasets.zip)."
            )
        records = read_karpathy_split(self.karpathy_file)
        found = {
            name: path
            for folder in IMAGE_DIRS.values()
            for name, path in image_files(self.root / folder).items()
        }
        captions: dict[str, dict[str, list[str]]] = {"train": {}, "val": {}, "test": {}}
        files: dict[str, Path] = {}
        for record in records:
            name = f"{record.cocoid:012d}.jpg" if record.cocoid is not None else record.filename
            captions[record.split][name] = record.captions
            if name in found:
                files[name] = found[name]
            elif (self.root / record.filepath / record.filename).is_file():
                files[name] = self.root / record.filepath / record.filename
        folders = f"{self.root / IMAGE_DIRS['train']} and {self.root / IMAGE_DIRS['val']}"
        return {
            split: SplitSource(caps, files, f"{self.karpathy_file} ({split})", folders)
            for split, caps in captions.items()
        }

"""Imagenette and Imagewoof (Howard 2019, https://github.com/fastai/imagenette): ten-class
subsets of ImageNet released by fast.ai, as an :class:`ImageFolderDataModule`.

* Imagenette: ten easily told apart classes (tench, English springer, cassette player, chain
  saw, church, French horn, garbage truck, gas pump, golf ball, parachute); 9,469 train and
  3,925 val images.
* Imagewoof: ten dog breeds, much harder to tell apart; 9,025 train and 3,929 val images.

Each comes as three gzipped tar archives in fast.ai's S3 bucket
(``https://s3.amazonaws.com/fast-ai-imageclas/<name>.tgz``): the full-size images
(``imagenette2``, 1.5 GB), and copies whose shorter side is 320 px (``imagenette2-320``,
326 MiB) or 160 px (``imagenette2-160``, 94 MiB); ``imagewoof2*`` likewise. An archive holds
one folder named like it, in ImageFolder layout with ImageNet wnids as class folders::

    imagenette2-160/train/n01440764/n01440764_10026.JPEG
    imagenette2-160/val/n01440764/ILSVRC2012_val_00009111.JPEG
    imagenette2-160/noisy_imagenette.csv

:class:`ImagenetteDataModule` downloads the archive to ``data_dir`` (checked against the
published md5s of :data:`PUBLISHED_MD5`) and unpacks it with
:func:`~glimpse.data.download.extract_into`, which refuses members outside the target and
renames the finished folder into place, so that a folder under the final name is always
complete. The class folders are then read by
:class:`~glimpse.data.images.image_folder.ImageFolderDataModule`, and the wnids are named by
:data:`IMAGENETTE_CLASSES` or :data:`IMAGEWOOF_CLASSES` in the DataSpec (and so in
checkpoints).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from glimpse.data.download import download_file, extract_into
from glimpse.data.images.image_folder import ImageFolderDataModule
from glimpse.data.spec import DataSpec
from glimpse.errors import ConfigError, DataError, MissingFileError

log = logging.getLogger(__name__)

BASE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/"
#: The releases, and the archive-name suffix of each variant (its images' shorter side).
DATASETS = ("imagenette", "imagewoof")
VARIANT_SUFFIXES = {"full": "", "320": "-320", "160": "-160"}

#: Imagenette's wnids and their names (the first lemma of each ImageNet synset).
IMAGENETTE_CLASSES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}
#: Imagewoof's wnids and their names: the ten breeds that fast.ai's README lists, with the
#: names of their ImageNet synsets.
IMAGEWOOF_CLASSES = {
    "n02086240": "Shih-Tzu",
    "n02087394": "Rhodesian ridgeback",
    "n02088364": "beagle",
    "n02089973": "English foxhound",
    "n02093754": "Border terrier",
    "n02096294": "Australian terrier",
    "n02099601": "golden retriever",
    "n02105641": "Old English sheepdog",
    "n02111889": "Samoyed",
    "n02115641": "dingo",
}
CLASS_NAMES = {"imagenette": IMAGENETTE_CLASSES, "imagewoof": IMAGEWOOF_CLASSES}

#: The md5s published for each archive. fast.ai has re-uploaded the archives (fastai issue
#: #3369, tensorflow/datasets issue #3057), so each lists every published digest of the
#: current releases:
#:
#: * fastai's ``fastai/data/checks.txt`` (the table ``untar_data`` checks; fastai/fastai
#:   commit 29be53d7), with the size in bytes it records: imagenette2 1,557,161,267;
#:   imagenette2-320 341,663,724; imagenette2-160 99,003,388; imagewoof2 1,343,715,595;
#:   imagewoof2-320 328,387,740; imagewoof2-160 92,612,825.
#: * torchvision's ``torchvision/datasets/imagenette.py`` (``Imagenette._ARCHIVES``, the same
#:   values in catalyst's ``catalyst/contrib/datasets/imagenette.py``): Imagenette only.
#:
#: An empty tuple would mean that no checksum is known: the archive is then used unverified,
#: with a warning.
PUBLISHED_MD5: dict[str, tuple[str, ...]] = {
    "imagenette2": ("2c774ecb40005b35d7937d50f5d42336", "fe2fc210e6bb7c5664d602c3cd71e612"),
    "imagenette2-320": ("1f1f74f133caff120e575856659b87a2", "3df6f0d01a2c9592104656642f5e78a3"),
    "imagenette2-160": ("c475f8f7617a200ba35b9facc48443c3", "e793b78cc4c9e9a4ccc0c1155377a412"),
    "imagewoof2": ("2cc1c1e36e20cb6fd24ffb978edcb487",),
    "imagewoof2-320": ("7a1fd92672a559a85de76e4810a20c21",),
    "imagewoof2-160": ("3559b194123981a540b87132dbda412f",),
}


def release_name(dataset: str, variant: str | int) -> str:
    """The archive's (and its folder's) name, e.g. ``imagenette2-160`` for
    ``("imagenette", "160")``; ``variant`` is ``full``, ``320`` or ``160`` (``320px`` and
    ``160px`` are accepted too)."""
    if dataset not in DATASETS:
        raise ConfigError(f"Unknown data.dataset={dataset!r}; use imagenette or imagewoof.")
    key = str(variant).removesuffix("px")
    if key not in VARIANT_SUFFIXES:
        raise ConfigError(f"Unknown data.variant={variant!r}; use full, 320 or 160.")
    return f"{dataset}2{VARIANT_SUFFIXES[key]}"


class ImagenetteDataModule(ImageFolderDataModule):
    """Imagenette or Imagewoof, downloaded and extracted on first use (see the module
    docstring), or read from an extracted folder given as ``root``.

    Labels index the wnids in sorted order; the spec's class names are the readable ones.
    Every one of the release's ten wnid folders must be in ``train/``.

    Args:
        dataset: ``imagenette`` or ``imagewoof``.
        variant: ``160``, ``320`` (the images' shorter side in px) or ``full``.
        data_dir: where the archive is downloaded and extracted (to ``<data_dir>/<name>``).
        root: an extracted release (holding ``train/`` and ``val/``) to read instead; nothing
            is downloaded.
        url: where to download the archive from; None is fast.ai's address (set it to use a
            mirror).
        md5: the archive's expected md5, or a list of accepted ones; None accepts the
            published md5s of the release (:data:`PUBLISHED_MD5`).
        image_size: the side of the square crops the model receives.
        **kwargs: any other argument of :class:`ImageFolderDataModule` (batch size, workers,
            augmentation, ...).
    """

    def __init__(
        self,
        dataset: str = "imagenette",
        variant: str | int = "160",
        data_dir: str | os.PathLike = "data",
        root: str | os.PathLike | None = None,
        url: str | None = None,
        md5: str | Sequence[str] | None = None,
        image_size: int = 128,
        **kwargs,
    ) -> None:
        self.release = release_name(dataset, variant)
        self.dataset_name, self.variant = dataset, str(variant).removesuffix("px")
        self.data_dir = Path(data_dir)
        self.download = root is None
        super().__init__(
            root=self.data_dir / self.release if root is None else root,
            image_size=image_size,
            class_names=CLASS_NAMES[dataset],
            **kwargs,
        )
        self.url = url or f"{BASE_URL}{self.release}.tgz"
        if md5 is None:
            self.md5: tuple[str, ...] = PUBLISHED_MD5[self.release]
        else:
            self.md5 = (md5,) if isinstance(md5, str) else tuple(md5)

    @property
    def archive(self) -> Path:
        """Where the downloaded archive is kept."""
        return self.data_dir / f"{self.release}.tgz"

    def metadata(self) -> dict:
        return {
            **super().metadata(),
            "dataset": self.dataset_name,
            "variant": self.variant,
            "release": self.release,
            "url": self.url if self.download else None,
        }

    def prepare_data(self) -> None:
        """Download, verify and extract the release unless its folder is there (a folder under
        the final name is always a finished extraction); with ``root``, only check that it
        exists."""
        if not self.download:
            if not self.root.is_dir():
                raise MissingFileError(
                    f"data.root={self.root} does not exist; point it at an extracted "
                    f"{self.release} folder (holding train/ and val/), or leave it null to "
                    f"download {self.url}."
                )
            return
        if self.root.is_dir():
            return
        if not self.md5:
            log.warning("No md5 is known for %s: the archive is not verified.", self.url)
        log.info("Downloading %s to %s", self.url, self.archive)
        download_file(self.url, self.archive, md5=self.md5 or None)
        log.info("Extracting %s to %s", self.archive, self.root)
        extract_into(self.archive, self.data_dir, self._release_folder)

    def _release_folder(self, tree: Path) -> list[tuple[Path, str]]:
        """What of the extracted archive becomes :attr:`root`: its folder named like the
        release, or the extraction itself for an archive without that top folder."""
        name = self.root.name
        top = tree / name if (tree / name).is_dir() else tree
        if not ((top / "train").is_dir() and (top / "val").is_dir()):
            raise DataError(
                f"{self.archive} holds no {name}/train and {name}/val folders; is it an "
                "Imagenette or Imagewoof release?"
            )
        return [(top, name)]

    def _build_spec(self, folders: list[str]) -> DataSpec:
        known = CLASS_NAMES[self.dataset_name]
        missing = sorted(set(known) - set(folders))
        extra = sorted(set(folders) - set(known))
        if missing or extra:
            problem = (
                f"lacks the {self.dataset_name} class folder(s) {', '.join(missing)}"
                if missing
                else f"holds folder(s) {', '.join(extra)} that are no {self.dataset_name} class"
            )
            raise DataError(
                f"{self.root / 'train'} {problem}; data.root must be a whole {self.release} "
                "release."
            )
        return super()._build_spec(folders)

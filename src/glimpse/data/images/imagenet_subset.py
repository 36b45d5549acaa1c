"""Chosen classes of ImageNet (ILSVRC-2012) as an :class:`ImageFolderDataModule`.

The root is ImageNet in its usual extracted layout: ``train/<wnid>/*.JPEG`` from the training
tars, and ``val/<wnid>/*.JPEG`` after the validation images have been sorted into class
folders (for example by the ``valprep.sh`` script that PyTorch's ImageNet example points to).
Nothing is downloaded: ImageNet is only distributed to registered users.

Only the folders of the chosen wnids are read, so a 100-class subset of a 1,000-class tree
indexes a tenth of the files. The classes are a list of wnids, the path of a text file with
one wnid per line (blank lines and ``#`` comments are ignored), or the name of a list shipped
here: ``imagenet100``, the ImageNet-100 of Contrastive Multiview Coding (Tian et al. 2019),
copied from ``imagenet100.txt`` in github.com/HobbitLong/CMC. Labels index the chosen wnids in
sorted order (as ImageNet's do), whatever the order of the list.

Readable class names come from a synset mapping in the format of Kaggle's ImageNet release
(``LOC_synset_mapping.txt``: ``n01440764 tench, Tinca tinca`` per line; the first name is
kept): the file given as ``synset_mapping``, else ``root/LOC_synset_mapping.txt`` when it
exists, else the wnids themselves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from glimpse.data.images.image_folder import ImageFolderDataModule, class_folders
from glimpse.errors import ConfigError, DataError, MissingFileError

#: ImageNet-100 (Tian et al. 2019, "Contrastive Multiview Coding", arXiv:1906.05849), in the
#: order of ``imagenet100.txt`` in github.com/HobbitLong/CMC.
IMAGENET100 = (
    "n02869837", "n01749939", "n02488291", "n02107142", "n13037406", "n02091831", "n04517823",
    "n04589890", "n03062245", "n01773797", "n01735189", "n07831146", "n07753275", "n03085013",
    "n04485082", "n02105505", "n01983481", "n02788148", "n03530642", "n04435653", "n02086910",
    "n02859443", "n13040303", "n03594734", "n02085620", "n02099849", "n01558993", "n04493381",
    "n02109047", "n04111531", "n02877765", "n04429376", "n02009229", "n01978455", "n02106550",
    "n01820546", "n01692333", "n07714571", "n02974003", "n02114855", "n03785016", "n03764736",
    "n03775546", "n02087046", "n07836838", "n04099969", "n04592741", "n03891251", "n02701002",
    "n03379051", "n02259212", "n07715103", "n03947888", "n04026417", "n02326432", "n03637318",
    "n01980166", "n02113799", "n02086240", "n03903868", "n02483362", "n04127249", "n02089973",
    "n03017168", "n02093428", "n02804414", "n02396427", "n04418357", "n02172182", "n01729322",
    "n02113978", "n03787032", "n02089867", "n02119022", "n03777754", "n04238763", "n02231487",
    "n03032252", "n02138441", "n02104029", "n03837869", "n03494278", "n04136333", "n03794056",
    "n03492542", "n02018207", "n04067472", "n03930630", "n03584829", "n02123045", "n04229816",
    "n02100583", "n03642806", "n04336792", "n03259280", "n02116738", "n02108089", "n03424325",
    "n01855672", "n02090622",
)  # fmt: skip
#: The class lists that ``classes`` can name.
CLASS_LISTS = {"imagenet100": IMAGENET100}
SYNSET_MAPPING = "LOC_synset_mapping.txt"


def read_class_list(path: str | os.PathLike) -> list[str]:
    """The wnids of a text file, one per line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def resolve_classes(classes: str | os.PathLike | Sequence[str]) -> tuple[list[str], str]:
    """``(wnids, where they came from)`` for a shipped list's name, a file or a list."""
    if isinstance(classes, str) and classes in CLASS_LISTS:
        return list(CLASS_LISTS[classes]), classes
    if isinstance(classes, str | os.PathLike):
        if not Path(classes).is_file():
            raise MissingFileError(
                f"data.classes={classes} is neither a shipped class list "
                f"({', '.join(CLASS_LISTS)}) nor a file of wnids."
            )
        return read_class_list(classes), str(classes)
    return [str(wnid) for wnid in classes], "list"


def read_synset_mapping(path: Path) -> dict[str, str]:
    """``{wnid: first name}`` from a ``LOC_synset_mapping.txt``-style file."""
    names = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, words = line.strip().partition(" ")
        name = words.split(",", 1)[0].strip()
        if not name:
            raise DataError(
                f"{path}, line {number}, is not '<wnid> <name>[, <other names>]': {line!r}."
            )
        names[wnid] = name
    return names


class ImageNetSubsetDataModule(ImageFolderDataModule):
    """The chosen wnids of an ImageNet tree (see the module docstring); testing evaluates val,
    as ImageNet's test labels are not public.

    Args:
        root: the folder holding ``train/<wnid>/`` and ``val/<wnid>/``.
        classes: the wnids, the path of a file of wnids, or a shipped list's name
            (``imagenet100``).
        synset_mapping: a ``LOC_synset_mapping.txt``-style file naming the wnids; None uses
            ``root/LOC_synset_mapping.txt`` when it exists.
        **kwargs: any other argument of :class:`ImageFolderDataModule` (image size, batch
            size, augmentation, ...).
    """

    ALL_FOLDERS_ARE_CLASSES = False

    def __init__(
        self,
        root: str | os.PathLike,
        classes: str | os.PathLike | Sequence[str] = "imagenet100",
        synset_mapping: str | os.PathLike | None = None,
        **kwargs,
    ) -> None:
        super().__init__(root=root, **kwargs)
        wnids, self.class_source = resolve_classes(classes)
        duplicates = sorted({w for w in wnids if wnids.count(w) > 1})
        if duplicates:
            raise ConfigError(f"data.classes names {', '.join(duplicates)} more than once.")
        if len(wnids) < 2:
            raise ConfigError(
                f"data.classes ({self.class_source}) holds {len(wnids)} wnid(s); "
                "classification needs at least 2."
            )
        self.classes = sorted(wnids)
        self.synset_mapping = Path(synset_mapping) if synset_mapping else None

    def split_folder(self, split: str) -> Path:
        return self.root / ("val" if split == "test" else split)

    def metadata(self) -> dict:
        return {**super().metadata(), "classes_from": self.class_source}

    def setup(self, stage: str | None = None) -> None:
        if self._spec is None:
            self._check_folders()
            if self.class_name_map is None:
                self.class_name_map = self._read_names()
            self._spec = self._build_spec(self.classes)
        super().setup(stage)

    def _check_folders(self) -> None:
        train = self.root / "train"
        missing = sorted(set(self.classes) - set(class_folders(train)))
        if missing:
            raise DataError(
                f"{', '.join(missing)} of data.classes ({self.class_source}) "
                f"{'is not a class folder' if len(missing) == 1 else 'are not class folders'} "
                f"of {train}."
            )
        val = self.root / "val"
        if val.is_dir() and not class_folders(val):
            raise DataError(
                f"{val} has no class folders; sort ImageNet's validation images into "
                "val/<wnid>/ folders first (for example with valprep.sh)."
            )

    def _read_names(self) -> dict[str, str] | None:
        path = self.synset_mapping or self.root / SYNSET_MAPPING
        if self.synset_mapping is None and not path.is_file():
            return None
        if not path.is_file():
            raise MissingFileError(f"data.synset_mapping={path} does not exist.")
        names = read_synset_mapping(path)
        unnamed = [wnid for wnid in self.classes if wnid not in names]
        if unnamed:
            raise DataError(f"{path} has no line for {', '.join(unnamed)}.")
        return {wnid: names[wnid] for wnid in self.classes}

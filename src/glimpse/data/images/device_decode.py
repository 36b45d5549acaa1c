"""JPEG decoding on the training device (``data.decode_device=cuda``).

Decoding and augmenting photos on the CPU can starve a GPU; with ``decode_device=cuda`` the
DataLoader workers only read files, and the batch is decoded and augmented where the model runs:

1. :func:`read_encoded` (the dataset's loader, in the workers) reads a file's bytes as a 1-D
   uint8 tensor and its EXIF orientation from the header. Files that are not RGB or grayscale
   JPEGs (PNG, GIF, WebP, CMYK JPEGs, ...) are **decoded on the CPU instead**, in the worker, by
   :func:`glimpse.data.images.decode.open_rgb` (passed in as ``fallback``), so they get exactly the
   CPU path's handling of alpha, palettes, 16-bit and CMYK; a split may mix both kinds.
2. :func:`collate_encoded` keeps the batch's images as a list (their sizes differ) in an
   :class:`EncodedImages` batch.
3. :func:`labels_to_device` (the datamodule's ``transfer_batch_to_device``) moves only the labels:
   :func:`torchvision.io.decode_jpeg` reads its input from CPU memory whatever the device.
4. :func:`decode_to_labelled_images` (its ``on_after_batch_transfer``) decodes every JPEG of the
   batch in one :func:`~torchvision.io.decode_jpeg` call on the labels' device (nvJPEG on
   CUDA), turns each image upright, applies the split's transforms image by image (the same
   torchvision.transforms.v2 pipelines as the CPU path, on uint8 tensors on the device) and
   stacks a :class:`~glimpse.batches.LabelledImages` batch.

EXIF orientation: nvJPEG ignores it (``decode_jpeg``'s ``apply_exif_orientation`` only works on
the CPU), so the orientation tag is read in the worker and applied after decoding by
:func:`apply_exif_orientation` with flips and transposes, as Pillow's ``exif_transpose`` does on
the CPU path: an image comes out upright on either path.

The verification pass of :meth:`~glimpse.data.images.image_folder.ImageFolderDataModule.setup` still
decodes every image once with Pillow on the CPU, so a corrupt file is reported (or skipped)
before training as on the CPU path; ``verify=false`` leaves that to the first epoch, where a file
nvJPEG cannot decode is retried on the CPU and named if it fails there too.

Pixel values differ slightly between decoders (inverse DCT and chroma upsampling are not
specified exactly by the JPEG standard), typically by a level or two of 255.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from glimpse.batches import LabelledImages

#: EXIF tag of the orientation, 1 (upright) to 8.
EXIF_ORIENTATION = 0x0112
#: Decodes a file on the CPU as an upright RGB Pillow image:
#: :func:`~glimpse.data.images.decode.open_rgb`.
Decoder = Callable[[str | os.PathLike], Image.Image]
#: Pillow modes of JPEGs that ``decode_jpeg(mode=RGB)`` decodes; others go to the CPU.
DEVICE_JPEG_MODES = ("RGB", "L")


class EncodedImage(NamedTuple):
    """One sample's image as the workers leave it.

    Attributes:
        data: a JPEG file's bytes ``(N,)`` uint8, or an image decoded on the CPU
            ``(3, H, W)`` uint8, already upright.
        orientation: the JPEG's EXIF orientation (1 to 8; 1 for a decoded image).
        path: the file, for error messages.
    """

    data: Tensor
    orientation: int
    path: str


class EncodedImages(NamedTuple):
    """A batch of :class:`EncodedImage` samples, before decoding.

    Attributes:
        images: ``B`` tensors, each JPEG bytes ``(N,)`` or a decoded image ``(3, H, W)`` uint8.
        orientations: ``(B,)`` int64 EXIF orientations.
        labels: ``(B,)`` int64 class indices.
        paths: the ``B`` files.
        split: ``train``, ``val`` or ``test``: which transforms the batch gets.
    """

    images: list[Tensor]
    orientations: Tensor
    labels: Tensor
    paths: tuple[str, ...]
    split: str


def read_encoded(path: str | os.PathLike, fallback: Decoder) -> EncodedImage:
    """The bytes of the JPEG at ``path`` and its EXIF orientation, or, for any other image, the
    image decoded on the CPU by ``fallback`` (:func:`~glimpse.data.images.decode.open_rgb`, which
    raises an error naming ``path`` for a file that is not an image) as ``(3, H, W)`` uint8.

    Only the header is parsed here; a JPEG's pixels are decoded later, on the device.
    """
    with open(path, "rb") as file:
        raw = file.read()
    try:
        with Image.open(io.BytesIO(raw)) as header:
            is_device_jpeg = header.format == "JPEG" and header.mode in DEVICE_JPEG_MODES
            orientation = int(header.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # not an image: the fallback decoder says so, naming the file
        is_device_jpeg = False
    if is_device_jpeg:
        data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        return EncodedImage(data, orientation if 1 <= orientation <= 8 else 1, str(path))
    return EncodedImage(decode_on_cpu(path, fallback), 1, str(path))


def decode_on_cpu(path: str | os.PathLike, fallback: Decoder) -> Tensor:
    """``fallback(path)``, an upright RGB Pillow image, as ``(3, H, W)`` uint8."""
    pixels = np.array(fallback(path), dtype=np.uint8)
    return torch.from_numpy(pixels).permute(2, 0, 1)


def collate_encoded(samples: Sequence[tuple[EncodedImage, int]], split: str) -> EncodedImages:
    """``(EncodedImage, label)`` samples -> an :class:`EncodedImages` batch of ``split``."""
    encoded = [image for image, _ in samples]
    return EncodedImages(
        images=[image.data for image in encoded],
        orientations=torch.tensor([image.orientation for image in encoded]),
        labels=torch.tensor([label for _, label in samples]),
        paths=tuple(image.path for image in encoded),
        split=split,
    )


def labels_to_device(batch: EncodedImages, device: torch.device) -> EncodedImages:
    """Move the labels to ``device``; the bytes stay in (pinned) CPU memory for the decoder."""
    return batch._replace(labels=batch.labels.to(device, non_blocking=True))


def _decode_jpegs(data: list[Tensor], device: torch.device) -> list[Tensor]:
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec, not yet a dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def decode_images(
    images: Sequence[Tensor], paths: Sequence[str], device: torch.device, fallback: Decoder
) -> list[Tensor]:
    """Every image of a batch as ``(3, H, W)`` uint8 on ``device``: the JPEG bytes decoded
    there in one call, the images decoded on the CPU moved there.

    When the batch's JPEGs do not all decode on the device, they are decoded one by one, and
    each that still fails is decoded on the CPU by ``fallback``, which names the file if it
    is not readable there either (nvJPEG lacks a few rare JPEG features that libjpeg has).
    """
    decoded = [image.to(device, non_blocking=True) if image.ndim == 3 else None for image in images]
    encoded = [i for i, image in enumerate(images) if image.ndim == 1]
    if not encoded:
        return decoded
    try:
        jpegs = _decode_jpegs([images[i] for i in encoded], device)
    except RuntimeError:
        jpegs = [_decode_one(images[i], paths[i], device, fallback) for i in encoded]
    for i, image in zip(encoded, jpegs, strict=True):
        decoded[i] = image
    return decoded


def _decode_one(data: Tensor, path: str, device: torch.device, fallback: Decoder) -> Tensor:
    try:
        return _decode_jpegs([data], device)[0]
    except RuntimeError:
        return decode_on_cpu(path, fallback).to(device)


def apply_exif_orientation(image: Tensor, orientation: int) -> Tensor:
    """``(C, H, W)`` as stored -> upright (``(C, W, H)`` for orientations 5 to 8), the tag's
    flips and rotations as Pillow's ``ImageOps.exif_transpose`` applies them."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, (-2, -1))
    if orientation == 7:
        return image.flip(-2, -1).transpose(-2, -1)
    if orientation == 8:
        return torch.rot90(image, 1, (-2, -1))
    return image


def decode_to_labelled_images(
    batch: EncodedImages, transform: Callable[[Tensor], Tensor], fallback: Decoder
) -> LabelledImages:
    """Decode ``batch`` on its labels' device and apply ``transform`` to each upright uint8
    image ``(3, H, W)``: a :class:`~glimpse.batches.LabelledImages` batch with images
    ``(B, 3, S, S)`` float32 on that device. ``fallback`` decodes on the CPU what the device's
    decoder cannot (see :func:`decode_images`)."""
    device = batch.labels.device
    images = decode_images(batch.images, batch.paths, device, fallback)
    upright = (
        apply_exif_orientation(image, int(orientation))
        for image, orientation in zip(images, batch.orientations.tolist(), strict=True)
    )
    transformed = [transform(image).as_subclass(Tensor) for image in upright]
    return LabelledImages(torch.stack(transformed), batch.labels)

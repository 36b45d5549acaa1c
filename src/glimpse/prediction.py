"""The containers of inference on what a user names: ``python eval.py ckpt_path=... image=...``
(or ``text=...``, ``prompt=...``) works the same way for every task. Neutral, like
:mod:`glimpse.batches`: the data layer builds the inputs, the task layer the predictions.

A task states the inputs it predicts from in :attr:`GlimpseTask.PREDICTS_FROM` and implements
:meth:`GlimpseTask.predict_inputs`, which receives the inputs already decoded
(:class:`PredictionInputs`, built by :func:`glimpse.data.prediction_inputs.decode_image_files`
from the checkpoint's spec) and returns one :class:`Prediction` per input: the lines to print and
the figures to save. The task opens no files and prints nothing; ``eval.py`` prints the lines and
saves the figures in the eval run's ``figures/`` folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

#: The eval.py keys that name inputs, in the order they are listed in messages.
INPUT_KEYS = ("image", "text", "prompt")


@dataclass(frozen=True)
class DecodedImage:
    """One image file prepared as the checkpoint's evaluation data was.

    Attributes:
        path: the file as the user named it.
        pixels: ``(3, H, W)`` float32, resized, cropped and normalised as the spec says.
        picture: ``(h, w, 3)`` float32 in [0, 1], the picture a prediction is drawn on, in the
            coordinates the task's outputs use (the same crop as ``pixels`` unnormalised; for
            detection, whose boxes are in the file's pixels, the whole original image).
        original_size: ``(height, width)`` of the file's image.
    """

    path: str
    pixels: Tensor
    picture: np.ndarray
    original_size: tuple[int, int]


@dataclass(frozen=True)
class PredictionInputs:
    """What eval.py was given to predict from: decoded images, texts and a prompt."""

    images: tuple[DecodedImage, ...] = ()
    texts: tuple[str, ...] = ()
    prompt: str | None = None

    @property
    def given(self) -> tuple[str, ...]:
        """The eval.py keys that were set, e.g. ``("image",)``; empty when none was."""
        present = {"image": bool(self.images), "text": bool(self.texts), "prompt": self.prompt}
        return tuple(key for key in INPUT_KEYS if present[key])


@dataclass
class Prediction:
    """A task's answer for one input.

    Attributes:
        source: the input it answers (an image path, a text, the prompt).
        lines: what to print, one line each, the first naming the source.
        figures: ``{name: figure}`` saved as ``figures/<source stem>_<name>.png``.
        value: the machine-readable result (class names and probabilities, a caption, boxes).
    """

    source: str
    lines: list[str]
    figures: dict[str, Figure] = field(default_factory=dict)
    value: Any = None


#: The options of eval.py that inference may read (num_classes_shown, num_chars, temperature,
#: top_k, beam_size, length_penalty, ...): the eval config itself, read with ``.get``.
PredictionOptions = Mapping[str, Any]


def ranked_classes(
    images: tuple[DecodedImage, ...], rankings: list[list[tuple[str, float]]]
) -> list[Prediction]:
    """One prediction per image from its ``[(class name, probability), ...]``, most probable
    first: the path, then a line ``  93.10%  tench`` per class."""
    return [
        Prediction(
            source=image.path,
            lines=[image.path, *(f"  {p:7.2%}  {name}" for name, p in ranked)],
            value=ranked,
        )
        for image, ranked in zip(images, rankings, strict=True)
    ]


def stacked_pixels(images: tuple[DecodedImage, ...]) -> Tensor:
    """The decoded images as one batch ``(B, 3, H, W)`` (all of one size after the crop)."""
    return torch.stack([image.pixels for image in images])

"""Shared by the CLIP tests: a tiny CLIP, a spec with a trained tokenizer, and overrides that
make a CLIP run on generated shapes pairs take seconds."""

from __future__ import annotations

from pathlib import Path

from glimpse.batches import IMAGE_TEXT
from glimpse.data.spec import DataSpec
from glimpse.data.text.bpe import BPETokenizer

ZEROSHOT_CLASSES = ["circle", "square", "triangle", "star"]
CAPTIONS = [
    "a red circle on a navy background",
    "a blue square in the middle",
    "a picture of a green triangle and a pink star",
    "two shapes on a grey background, including a white cross",
]
#: A CLIP small enough for unit tests: 32 px images in 8 px patches, widths 32, one layer.
TINY_NET = {
    "_target_": "glimpse.models.clip.clip_cpu",
    "embed_dim": 16,
    "vision": {"patch_size": 8, "width": 32, "layers": 1, "heads": 2, "stem": "patchify"},
    "text_width": 32,
    "text_layers": 1,
    "text_heads": 2,
}


def clip_spec(
    zeroshot_classes: list[str] | None = ZEROSHOT_CLASSES,
    image_size: int = 32,
    context_length: int = 16,
) -> dict:
    """An image-text spec with a BPE tokenizer trained on :data:`CAPTIONS`."""
    tokenizer = BPETokenizer.train(CAPTIONS * 3, vocab_size=300, min_frequency=1)
    metadata: dict = {"context_length": context_length}
    if zeroshot_classes:
        metadata["zeroshot_classes"] = list(zeroshot_classes)
    return DataSpec(
        kind=IMAGE_TEXT,
        image_size=image_size,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        tokenizer=tokenizer.to_dict(),
        metadata=metadata,
    ).to_dict()


def tiny_clip_overrides(tmp_path: Path) -> list[str]:
    """``model=clip data=shapes_pairs`` shrunk: 40 pairs of 32 px (32 train, 4 val, 4 test
    images) in batches of 8, the zero-shot set of 5 shapes per class, the tiny CLIP."""
    vision = ",".join(f"{k}:{v}" for k, v in TINY_NET["vision"].items())
    return [
        "model=clip",
        "data=shapes_pairs",
        "data.source.num_images=40",
        "data.image_size=32",
        "data.zeroshot.num_per_class=5",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.context_length=24",
        f"model.net._target_={TINY_NET['_target_']}",
        *(f"+model.net.{k}={TINY_NET[k]}" for k in ("embed_dim", "text_width", "text_layers")),
        f"+model.net.text_heads={TINY_NET['text_heads']}",
        f"+model.net.vision={{{vision}}}",
        "model.scheduler.warmup_steps=2",
        "logger=csv",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]

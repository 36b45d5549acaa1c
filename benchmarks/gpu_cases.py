"""The methods of ``benchmarks/gpu_check.py``: for each, its config, a spec and batches of the
kind it trains on, and the reference implementation it is compared with.

A :class:`Case` is built for a size, ``gpu`` (the paper's shapes at batch sizes one GPU holds)
or ``cpu`` (the test networks, a few images of 32 px, seconds a run): the ``train.py``
overrides that choose the method's config, the DataSpec its task is built with (made here,
not read from a dataset), a few fixed random batches that repeat (so the loss can go down in
30 steps), how many images or tokens a batch holds, and, where one exists, a reference: a
timm, torchvision or open_clip model of the same shape trained by a plain PyTorch loop on the
same batches, or for the character models the same network in a plain loop (Lightning's
overhead).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.batches import (
    CAPTIONED_IMAGES,
    DETECTION,
    IMAGE_TEXT,
    LABELLED_IMAGES,
    MULTI_VIEW_IMAGES,
    TEXT,
    CaptionedImages,
    DetectionBatch,
    DetectionTarget,
    ImageTextPairs,
    LabelledImages,
    MultiViewImages,
)
from glimpse.data.spec import DataSpec
from glimpse.data.text.bpe import BPETokenizer
from glimpse.data.text.vocab import CharVocab
from glimpse.data.text.word_tokenizer import SPECIALS
from glimpse.models.clip_loss import clip_loss

NUM_CLASSES = 10
#: Distinct batches of a run; they repeat, so a network can fit them within the run.
POOL = 2
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Reference:
    """A reference network trained by a plain loop: ``loss(model, batch)`` is its loss;
    ``build`` None trains a copy of the task's own network (Lightning's overhead)."""

    name: str
    build: Callable[[], nn.Module] | None
    loss: Callable[[nn.Module, Any], Tensor]


@dataclass
class Case:
    """One method at one size (module docstring)."""

    name: str
    title: str
    overrides: list[str]
    spec: DataSpec
    batches: list[Any]
    examples: int
    unit: str
    reference: Reference | None = None
    #: Why there is no reference, when there is none.
    no_reference: str = ""
    #: The task's network and its loss on a batch, for counting FLOPs (MFU cases only).
    flops_of: Callable[[Any, Any], Tensor] | None = None
    notes: list[str] = field(default_factory=list)


def image_spec(kind: str, size: int, **extra: Any) -> DataSpec:
    names = tuple(f"class{i}" for i in range(NUM_CLASSES))
    return DataSpec(kind=kind, class_names=names, image_size=size, mean=MEAN, std=STD, **extra)


def images(batch: int, size: int, generator: torch.Generator) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=generator)


def labels(batch: int, generator: torch.Generator) -> Tensor:
    return torch.randint(NUM_CLASSES, (batch,), generator=generator)


def labelled(batch: int, size: int, generator: torch.Generator) -> list[LabelledImages]:
    return [
        LabelledImages(images(batch, size, generator), labels(batch, generator))
        for _ in range(POOL)
    ]


def cross_entropy(model: nn.Module, batch: LabelledImages) -> Tensor:
    """Cross-entropy of the logits, averaged over the heads of a model that returns several
    (DeiT's class and distillation heads in training)."""
    output = model(batch.images)
    outputs = output if isinstance(output, (tuple, list)) else (output,)
    return torch.stack([F.cross_entropy(o.float(), batch.labels) for o in outputs]).mean()


def timm_model(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        model = timm.create_model(name, num_classes=NUM_CLASSES, **kwargs)
        if hasattr(model, "set_distilled_training"):
            model.set_distilled_training(True)
        return model

    return build


def classifier(
    name: str, title: str, overrides: list[str], size: int, batch: int, reference: Reference | None
) -> Case:
    generator = torch.Generator().manual_seed(0)
    return Case(
        name,
        title,
        ["data=shapes", *overrides],
        image_spec(LABELLED_IMAGES, size),
        labelled(batch, size, generator),
        batch,
        "images",
        reference,
    )


# The methods ---------------------------------------------------------------------------------


def char_model(name: str, title: str, gpu: bool, overrides: list[str]) -> Case:
    """A character LM on windows of ``T`` characters of a printable-ASCII vocabulary; the
    reference is the same network in a plain loop."""
    batch, length = (64, 256) if gpu else (4, 32)
    vocab = CharVocab.from_text(string.printable)
    generator = torch.Generator().manual_seed(0)
    windows = [
        torch.randint(len(vocab), (batch, length + 1), generator=generator) for _ in range(POOL)
    ]
    spec = DataSpec(kind=TEXT, vocab=vocab.symbols, metadata={"batching": "windows"})
    return Case(
        name,
        title,
        [f"data.seq_len={length}", "model.samples=null", *overrides],
        spec,
        [(w[:, :-1], w[:, 1:]) for w in windows],
        batch * length,
        "tokens",
        Reference("the same network, plain loop", None, next_character_loss),
    )


def next_character_loss(net: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    logits, _ = net(batch[0])
    return F.cross_entropy(logits.flatten(0, 1).float(), batch[1].flatten())


def char_lstm(gpu: bool) -> Case:
    tiny = [] if gpu else ["model.net.hidden_size=32", "model.net.embedding_dim=16"]
    case = char_model("char_lstm", "char LSTM (fused)", gpu, ["model=lstm", *tiny])
    case.notes.append("torch.compile does not trace torch.nn.LSTM: the compiled run is eager")
    return case


def char_transformer(gpu: bool) -> Case:
    tiny = [] if gpu else ["model.net.dim=32", "model.net.num_layers=1", "model.net.num_heads=2"]
    case = char_model("char_transformer", "char Transformer", gpu, ["model=transformer", *tiny])
    case.flops_of = next_character_loss
    return case


#: timm's keyword arguments that shrink its ViTs to the test ViT's shape (CPU mode).
TINY_TIMM_VIT = {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}


def vit(name: str, title: str, gpu: bool, ours: str, timm_name: str, batch: int) -> Case:
    """Our ViT ``ours`` (``glimpse.models.vit``) against timm's ``timm_name`` of its shape;
    the test ViT against timm's shrunk to it on the CPU."""
    net, size = (ours, 224) if gpu else ("vit_test", 32)
    shape = {"drop_path_rate": 0.1} if gpu else TINY_TIMM_VIT
    reference = Reference(
        f"timm {timm_name}" if gpu else "timm ViT (tiny)",
        timm_model(timm_name, **shape),
        cross_entropy,
    )
    overrides = ["model=vit", f"model.net._target_=glimpse.models.vit.{net}"]
    return classifier(name, title, overrides, size, batch if gpu else 4, reference)


def vit_s(gpu: bool) -> Case:
    return vit("vit_s", "ViT-S/16", gpu, "vit_small_patch16", "vit_small_patch16_224", 128)


def vit_b16(gpu: bool) -> Case:
    case = vit("vit_b16", "ViT-B/16", gpu, "vit_base_patch16", "vit_base_patch16_224", 64)
    case.flops_of = cross_entropy
    return case


def deit_s(gpu: bool) -> Case:
    net = "deit_small_distilled_patch16" if gpu else "deit_test"
    size, batch = (224, 128) if gpu else (32, 4)
    extra = {} if gpu else TINY_TIMM_VIT
    ref = Reference(
        "timm deit_small_distilled_patch16_224",
        timm_model("deit_small_distilled_patch16_224", **extra),
        cross_entropy,
    )
    case = classifier(
        "deit_s",
        "DeiT-S (distilled)",
        [
            "model=deit",
            f"model.net._target_=glimpse.models.deit.{net}",
            "model.distillation=none",
            "model.teacher=null",
        ],
        size,
        batch,
        ref,
    )
    case.notes.append("distillation=none: both heads learn the labels (no teacher network)")
    return case


def swin_t(gpu: bool) -> Case:
    net = "swin_tiny" if gpu else "swin_test"
    size, batch = (224, 64) if gpu else (32, 4)

    def build() -> nn.Module:
        from torchvision.models.swin_transformer import SwinTransformer

        shape = dict(
            embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=[7, 7]
        )
        if not gpu:
            shape = dict(embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=[4, 4])
        return SwinTransformer(
            patch_size=[4, 4], stochastic_depth_prob=0.2, num_classes=NUM_CLASSES, **shape
        )

    ref = Reference(
        "torchvision swin_t" if gpu else "torchvision Swin (tiny)", build, cross_entropy
    )
    return classifier(
        "swin_t",
        "Swin-T",
        ["model=swin", f"model.net._target_=glimpse.models.swin.{net}"],
        size,
        batch,
        ref,
    )


def pvt_s(gpu: bool) -> Case:
    net = "pvt_small" if gpu else "pvt_test"
    size, batch = (224, 64) if gpu else (32, 4)
    case = classifier(
        "pvt_s",
        "PVT-S (v1)",
        ["model=pvt", f"model.net._target_=glimpse.models.pvt.{net}"],
        size,
        batch,
        None,
    )
    case.no_reference = (
        "timm has no PVT v1 (benchmarks/classification.py pairs PVT v2 b2 with timm's)"
    )
    return case


def resnet50(gpu: bool) -> Case:
    arch, size, batch = ("resnet50", 224, 128) if gpu else ("resnet18", 32, 4)

    def build() -> nn.Module:
        from torchvision.models import get_model

        return get_model(arch, weights=None, num_classes=NUM_CLASSES).to(
            memory_format=torch.channels_last
        )

    ref = Reference(f"torchvision {arch} (channels-last)", build, cross_entropy)
    return classifier(
        "resnet50", "ResNet-50", ["model=resnet", f"model.net.arch={arch}"], size, batch, ref
    )


def show_attend_tell(gpu: bool) -> Case:
    size, batch, words = (224, 32, 16) if gpu else (32, 4, 6)
    tiny = (
        []
        if gpu
        else [
            "model.encoder.arch=resnet18",
            "model.encoder.small_images=true",
            "model.decoder.embed_dim=16",
            "model.decoder.hidden_size=16",
            "model.decoder.attention_dim=16",
        ]
    )
    vocabulary = [*SPECIALS, *(f"w{i}" for i in range(1000 if gpu else 50))]
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(POOL):
        body = torch.randint(len(SPECIALS), len(vocabulary), (batch, words), generator=generator)
        captions = torch.cat([torch.full((batch, 1), 1), body, torch.full((batch, 1), 2)], dim=1)
        batches.append(
            CaptionedImages(
                images(batch, size, generator),
                captions,
                torch.full((batch,), words + 2),
                torch.arange(batch),
                tuple(("w4 w5",) for _ in range(batch)),
                tuple(f"{i}.jpg" for i in range(batch)),
            )
        )
    spec = image_spec(
        CAPTIONED_IMAGES, size, vocab=tuple(vocabulary), metadata={"max_caption_words": words}
    )
    return Case(
        "show_attend_tell",
        "Show, Attend and Tell",
        ["model=show_attend_tell", "data=shapes_captions", "model.pretrained=null", *tiny],
        spec,
        batches,
        batch,
        "images",
        no_reference="no library implements it",
    )


def detr_r50(gpu: bool) -> Case:
    size, batch, objects = (640, 4, 5) if gpu else (64, 2, 2)
    net = (
        ["+model.net.from_scratch=true"]
        if gpu
        else [
            "model.net._target_=glimpse.models.detr.detr_small",
            "model.net.num_queries=10",
            "+model.net.from_scratch=true",
        ]
    )
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(POOL):
        mask = torch.zeros(batch, size, size, dtype=torch.bool)
        mask[1:, :, size * 3 // 4 :] = True  # the other images are narrower: padding
        targets = tuple(
            DetectionTarget(
                torch.rand(objects, 4, generator=generator) * 0.5 + 0.25,
                torch.randint(NUM_CLASSES, (objects,), generator=generator),
            )
            for _ in range(batch)
        )
        sizes = torch.tensor([[size, size]] + [[size, size * 3 // 4]] * (batch - 1))
        batches.append(
            DetectionBatch(
                images(batch, size, generator), mask, targets, torch.arange(batch), sizes, sizes
            )
        )
    return Case(
        "detr_r50",
        "DETR-R50" if gpu else "DETR (small)",
        ["model=detr", "data=shapes_detection", "model.pretrained=null", *net],
        image_spec(DETECTION, size),
        batches,
        batch,
        "images",
        no_reference="no installed library implements DETR (facebookresearch/detr is no package)",
    )


def multi_view(sizes: list[int], batch: int) -> list[MultiViewImages]:
    generator = torch.Generator().manual_seed(0)
    return [
        MultiViewImages(tuple(images(batch, s, generator) for s in sizes), labels(batch, generator))
        for _ in range(POOL)
    ]


def byol(gpu: bool) -> Case:
    size, batch = (128, 128) if gpu else (32, 4)
    tiny = (
        []
        if gpu
        else [
            "model.projector.hidden_dim=32",
            "model.projector.out_dim=16",
            "model.predictor.hidden_dim=32",
        ]
    )
    return Case(
        "byol",
        "BYOL (ResNet-18)",
        ["model=byol", "data=ssl_shapes", *tiny],
        image_spec(MULTI_VIEW_IMAGES, size),
        multi_view([size, size], batch),
        batch,
        "images",
        no_reference="no installed library trains BYOL (benchmarks/ssl_training.py has a raw loop)",
    )


def dino(gpu: bool) -> Case:
    (global_size, local_size, local), batch = ((224, 96, 6), 32) if gpu else ((32, 16, 2), 4)
    tiny = (
        []
        if gpu
        else [
            "model.backbone._target_=glimpse.models.vit.vit_test",
            "model.head.out_dim=64",
            "model.head.hidden_dim=32",
            "model.head.bottleneck_dim=16",
        ]
    )
    return Case(
        "dino",
        "DINO (ViT-S/16)",
        ["model=dino", "data=ssl_shapes", *tiny],
        image_spec(MULTI_VIEW_IMAGES, global_size),
        multi_view([global_size] * 2 + [local_size] * local, batch),
        batch,
        "images",
        no_reference="no installed library trains DINO (benchmarks/ssl_training.py has a raw loop)",
        notes=[f"2 global crops of {global_size} px and {local} local crops of {local_size} px"],
    )


def clip_vit_b32(gpu: bool) -> Case:
    size, batch, context = (224, 256, 77) if gpu else (32, 4, 16)
    captions = [
        f"a photo of a {c} {s}" for c in ("red", "green", "blue") for s in ("cat", "dog", "car")
    ]
    tokenizer = BPETokenizer.train(captions * 3, vocab_size=300, min_frequency=1)
    generator = torch.Generator().manual_seed(0)
    batches = [
        ImageTextPairs(
            images(batch, size, generator),
            tokenizer.encode([captions[i % len(captions)] for i in range(batch)], context),
            tuple(captions[i % len(captions)] for i in range(batch)),
            torch.arange(batch),
        )
        for _ in range(POOL)
    ]
    spec = DataSpec(
        kind=IMAGE_TEXT,
        image_size=size,
        mean=MEAN,
        std=STD,
        tokenizer=tokenizer.to_dict(),
        metadata={"context_length": context},
    )
    tiny = [] if gpu else ["model.net._target_=glimpse.models.clip.clip_cpu"]

    def build() -> nn.Module:
        import open_clip
        from clip import open_clip_config

        config = open_clip_config("ViT-B-32" if gpu else "tiny", tokenizer.vocab_size, context)
        config["vision_cfg"] = {**config["vision_cfg"], "image_size": size}
        return open_clip.model.CLIP(**config)

    def loss(model: nn.Module, pairs: ImageTextPairs) -> Tensor:
        image_emb, text_emb, scale = model(pairs.images, pairs.tokens)
        return clip_loss(image_emb, text_emb, scale)

    return Case(
        "clip_vit_b32",
        "CLIP ViT-B/32" if gpu else "CLIP (tiny)",
        ["model=clip", "data=shapes_pairs", *tiny],
        spec,
        batches,
        batch,
        "images",
        Reference("open_clip ViT-B-32" if gpu else "open_clip (tiny)", build, loss),
    )


#: Every method, in the order they run.
CASES: dict[str, Callable[[bool], Case]] = {
    "char_lstm": char_lstm,
    "char_transformer": char_transformer,
    "vit_s": vit_s,
    "deit_s": deit_s,
    "swin_t": swin_t,
    "pvt_s": pvt_s,
    "resnet50": resnet50,
    "show_attend_tell": show_attend_tell,
    "detr_r50": detr_r50,
    "byol": byol,
    "dino": dino,
    "clip_vit_b32": clip_vit_b32,
    "vit_b16": vit_b16,
}

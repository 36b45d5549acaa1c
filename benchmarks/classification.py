"""Image classification throughput: our models against reference implementations, side by side.

Two parts, each optional:

* **models**: training images per second (forward, cross-entropy, backward, AdamW step) of
  each of our classifiers and of a reference implementation of the same shape, in one process,
  on the same fixed batch, at the same precision (float32, or ``torch.autocast`` with bfloat16
  under ``--precision bf16-mixed``):

  * ``vit_s16``: ``glimpse.models.vit.vit_small_patch16`` vs torchvision's
    ``VisionTransformer`` of the same shape (P 16, 12 layers, 6 heads, D 384, MLP 1536);
  * ``swin_t``: ``glimpse.models.swin.swin_tiny`` vs torchvision's ``SwinTransformer`` of
    ``swin_t``'s shape;
  * ``deit_s``: ``glimpse.models.deit.deit_small_distilled_patch16`` vs timm's
    ``deit_small_distilled_patch16_224`` in distilled training (both heads' logits);
  * ``pvt_v2_b2``: ``glimpse.models.pvt.pvt_v2_b2`` vs timm's ``pvt_v2_b2``;
  * ``pvt_small``: ``glimpse.models.pvt.pvt_small`` alone (timm has no PVT v1).

  Stochastic depth and dropout are off on both sides (their cost is small, and with them the
  two sides would draw different random numbers). Where a converter from the reference's
  weights exists (all pairs), ours starts from the reference's weights, and the largest
  difference between the two sides' losses shows that they computed the same thing. A model
  module that does not exist yet is skipped with a message.

  After one untimed block per side, ``--rounds`` rounds each time one block of both sides, in
  alternating order, so that load from other processes falls on both alike. A block runs
  ``--warmup`` untimed steps and then ``--steps`` timed ones (CUDA synchronised at both ends).
  ``ratio`` is ours over the reference in median images per second (>1: ours is faster);
  ``paired`` is the median over rounds of reference time over our time within a round, with
  its minimum and maximum as the spread.

* **pipeline**: images per second of
  :class:`glimpse.data.images.image_folder.ImageFolderDataModule`'s training loader (decoding and
  augmentation; the model is not run) on a generated folder of photo-like JPEGs
  (``--pipeline-image-size``, 500x375 like a typical ImageNet photo), for each
  ``--pipeline-workers`` count, reported in all and per worker (the main process is the one worker
  of ``num_workers=0``). The loader runs two epochs of ``--pipeline-batches`` batches with
  persistent workers and the second is timed, so worker start-up is excluded and prefetching is not
  a head start. The counts are timed in interleaved rounds like the models. On CUDA the
  ``decode_device=cuda`` path (raw bytes from the workers, nvJPEG decoding and the transforms on the
  GPU in ``on_after_batch_transfer``) is timed too, up to the batch on the device.

Run ``OMP_NUM_THREADS=2 python benchmarks/classification.py --threads 2`` (or
``make bench-classification``); ``--help`` lists the options. The results go to
``benchmarks/results/classification.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import clock, machine_info, set_threads
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.data.images.image_folder import ImageFolderDataModule

NUM_CLASSES = 1000
OPTIMIZER = {"lr": 1e-4, "weight_decay": 0.05}
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "classification.json"


@dataclass(frozen=True)
class Pair:
    """One of our models and its reference.

    ``ours`` and ``convert`` are ``"module:function"`` names, imported when the pair runs;
    ``reference`` builds the reference for an image size (None: ours alone); ``convert`` maps
    the reference's state dict to ours (None: the two start from their own initialisations).
    """

    name: str
    ours: str
    reference: Callable[[int], nn.Module] | None
    reference_name: str
    convert: str | None = None


def torchvision_vit_s16(image_size: int) -> nn.Module:
    """torchvision's ViT with ViT-S/16's shape."""
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=image_size,
        patch_size=16,
        num_layers=12,
        num_heads=6,
        hidden_dim=384,
        mlp_dim=1536,
        num_classes=NUM_CLASSES,
    )


def torchvision_swin_t(image_size: int) -> nn.Module:
    """torchvision's ``swin_t`` without stochastic depth (its builder fixes 0.2)."""
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(
        patch_size=[4, 4],
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=[7, 7],
        stochastic_depth_prob=0.0,
        num_classes=NUM_CLASSES,
    )


def timm_deit_s(image_size: int) -> nn.Module:
    """timm's distilled DeiT-S, returning both heads' logits in training as DeiT trains."""
    import timm

    model = timm.create_model(
        "deit_small_distilled_patch16_224", img_size=image_size, num_classes=NUM_CLASSES
    )
    model.set_distilled_training(True)
    return model


def timm_pvt_v2_b2(image_size: int) -> nn.Module:
    """timm's PVT v2 b2 (any image size: its position information comes from convolutions)."""
    import timm

    return timm.create_model("pvt_v2_b2", num_classes=NUM_CLASSES)


PAIRS = {
    pair.name: pair
    for pair in (
        Pair(
            "vit_s16",
            "glimpse.models.vit:vit_small_patch16",
            torchvision_vit_s16,
            "torchvision VisionTransformer",
            "glimpse.models.convert.torchvision_vit:vit_state_from_torchvision",
        ),
        Pair(
            "swin_t",
            "glimpse.models.swin:swin_tiny",
            torchvision_swin_t,
            "torchvision swin_t",
            "glimpse.models.convert.torchvision_swin:swin_state_from_torchvision",
        ),
        Pair(
            "deit_s",
            "glimpse.models.deit:deit_small_distilled_patch16",
            timm_deit_s,
            "timm deit_small_distilled_patch16_224",
            "glimpse.models.convert.timm_deit:deit_state_from_timm",
        ),
        Pair(
            "pvt_v2_b2",
            "glimpse.models.pvt:pvt_v2_b2",
            timm_pvt_v2_b2,
            "timm pvt_v2_b2",
            "glimpse.models.convert.timm_pvt:pvt_v2_state_from_timm",
        ),
        Pair("pvt_small", "glimpse.models.pvt:pvt_small", None, "none"),
    )
}


class Unavailable(Exception):
    """A model module or function that does not exist (yet)."""


def load(target: str) -> Callable[..., Any]:
    """The function named ``"module:function"``; :class:`Unavailable` when it is missing."""
    module_name, function_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not module_name.startswith(error.name):
            raise
        raise Unavailable(f"{module_name} does not exist yet") from error
    if not hasattr(module, function_name):
        raise Unavailable(f"{module_name} has no {function_name} yet")
    return getattr(module, function_name)


@dataclass
class Side:
    """One model in training, with its optimizer and the losses of all its steps."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    losses: list[Tensor]


def make_side(model: nn.Module, device: torch.device) -> Side:
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), **OPTIMIZER)
    return Side(model, optimizer, [])


def build_pair(pair: Pair, args: argparse.Namespace) -> tuple[Side, Side | None, bool]:
    """``(ours, reference or None, whether ours starts from the reference's weights)``."""
    device = torch.device(args.device)
    factory = load(pair.ours)
    torch.manual_seed(args.seed)
    ours = factory(img_size=args.image_size, num_classes=NUM_CLASSES, drop_path_rate=0.0)
    if pair.reference is None:
        return make_side(ours, device), None, False
    reference = pair.reference(args.image_size)
    converted = pair.convert is not None
    if converted:
        ours.load_state_dict(load(pair.convert)(reference.state_dict()))
    return make_side(ours, device), make_side(reference, device), converted


def classification_loss(output: Tensor | tuple[Tensor, ...], labels: Tensor) -> Tensor:
    """Cross-entropy of the logits ``(B, classes)``, averaged over heads when a model returns
    several (DeiT's class and distillation heads in training)."""
    outputs = output if isinstance(output, (tuple, list)) else (output,)
    losses = [F.cross_entropy(logits.float(), labels) for logits in outputs]
    return torch.stack(losses).mean()


def train_step(side: Side, images: Tensor, labels: Tensor, autocast: bool) -> None:
    """One forward, backward and AdamW step; the loss is kept on the device."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = classification_loss(side.model(images), labels)
    side.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    side.optimizer.step()
    side.losses.append(loss.detach())


def time_block(
    side: Side, images: Tensor, labels: Tensor, warmup: int, steps: int, autocast: bool
) -> float:
    """Seconds for ``steps`` training steps after ``warmup`` untimed ones."""
    for _ in range(warmup):
        train_step(side, images, labels, autocast)
    start = clock(images.device)
    for _ in range(steps):
        train_step(side, images, labels, autocast)
    return clock(images.device) - start


def median_and_spread(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_pair(pair: Pair, args: argparse.Namespace) -> dict[str, Any]:
    """Warm both sides up, time ``--rounds`` interleaved rounds and summarise them."""
    device = torch.device(args.device)
    ours, reference, converted = build_pair(pair, args)
    sides = {"ours": ours} if reference is None else {"ours": ours, "reference": reference}
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn(
        args.batch_size, 3, args.image_size, args.image_size, generator=generator
    ).to(device)
    labels = torch.randint(NUM_CLASSES, (args.batch_size,), generator=generator).to(device)
    autocast = args.precision == "bf16-mixed"
    for side in sides.values():
        time_block(side, images, labels, args.warmup, 1, autocast)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            seconds[name].append(
                time_block(sides[name], images, labels, args.warmup, args.steps, autocast)
            )
    per_block = args.steps * args.batch_size
    result: dict[str, Any] = {
        "ours_model": pair.ours,
        "reference_model": pair.reference_name,
        "same_initial_weights": converted,
    }
    for name, side in sides.items():
        rates = [per_block / s for s in seconds[name]]
        result[name] = {
            "images_per_s": statistics.median(rates),
            "rounds": rates,
            "parameters": sum(p.numel() for p in side.model.parameters()),
        }
    if reference is not None:
        paired = [r / o for o, r in zip(seconds["ours"], seconds["reference"], strict=True)]
        result["ratio"] = result["ours"]["images_per_s"] / result["reference"]["images_per_s"]
        result["paired_ratio"] = median_and_spread(paired)
        result["paired_ratios"] = paired
        if converted:
            result["max_abs_loss_difference"] = max(
                abs(float(a) - float(b)) for a, b in zip(ours.losses, reference.losses, strict=True)
            )
    return result


def write_jpegs(folder: Path, count: int, size: tuple[int, int], seed: int) -> None:
    """``count`` photo-like JPEGs (smooth colour gradients with mild noise, quality 90) of
    ``size`` (width, height) in two class folders of ``folder/train`` and ``folder/val``."""
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for index in range(count):
        weights = rng.uniform(-1, 1, size=(3, 3))
        planes = [w[0] * xs / width + w[1] * ys / height + w[2] for w in weights]
        pixels = np.stack(planes, axis=-1) * 80 + 128 + rng.normal(0, 12, (height, width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        for split in ("train", "val"):
            target = folder / split / f"class{index % 2}" / f"{index:05d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            if split == "train" or index < 2:
                image.save(target, quality=90)


def pipeline_datamodule(
    root: Path, workers: int, decode_device: str, args: argparse.Namespace
) -> ImageFolderDataModule:
    """The training loader's datamodule with ``workers`` workers, set up for fitting."""
    datamodule = ImageFolderDataModule(
        root,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=workers,
        verify=False,
        pin_memory=decode_device == "cuda",
        decode_device=decode_device,
    )
    datamodule.setup("fit")
    return datamodule


def time_loader(datamodule: ImageFolderDataModule, device: torch.device) -> float:
    """Seconds for the second epoch of the training loader, each batch moved to ``device`` and
    passed through the datamodule's ``on_after_batch_transfer`` (which decodes there when
    ``decode_device`` is cuda). The first epoch starts the (persistent) workers; the second
    one's clock starts when its iterator is made, so the workers' prefetching is counted."""
    loader = datamodule.train_dataloader()
    for _ in range(2):
        start = clock(device)
        for batch in loader:
            if device.type == "cuda":
                batch = datamodule.transfer_batch_to_device(batch, device, 0)
                batch = datamodule.on_after_batch_transfer(batch, 0)
        end = clock(device)
    return end - start


def run_pipeline(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Images per second of the training loader for each worker count (and decode device)."""
    device = torch.device(args.device)
    write_jpegs(
        root, args.batch_size * args.pipeline_batches, tuple(args.pipeline_image_size), args.seed
    )
    variants = [("cpu", workers) for workers in args.pipeline_workers]
    if device.type == "cuda":
        variants += [("cuda", workers) for workers in args.pipeline_workers]
    seconds: dict[tuple[str, int], list[float]] = {variant: [] for variant in variants}
    for round_index in range(args.pipeline_rounds):
        for variant in variants if round_index % 2 == 0 else variants[::-1]:
            datamodule = pipeline_datamodule(root, variant[1], variant[0], args)
            seconds[variant].append(time_loader(datamodule, device))
    images = args.pipeline_batches * args.batch_size
    results = {}
    for (decode_device, workers), values in seconds.items():
        rates = [images / s for s in values]
        total = statistics.median(rates)
        results[f"decode_{decode_device}_workers_{workers}"] = {
            "decode_device": decode_device,
            "num_workers": workers,
            "images_per_s": total,
            "images_per_s_per_worker": total / max(workers, 1),
            "rounds": rates,
        }
    return results


def print_models(results: dict[str, dict[str, Any]]) -> None:
    """One line per pair: both throughputs, their ratio, the paired ratio and its spread."""
    header = (
        f"{'pair':<11}{'ours img/s':>11}{'ref img/s':>11}{'ratio':>8}{'paired':>8}"
        f"{'spread':>14}{'max |dloss|':>13}  reference"
    )
    print(header)
    print("-" * len(header))
    for name, result in results.items():
        if "skipped" in result:
            print(f"{name:<11}skipped: {result['skipped']}")
            continue
        line = f"{name:<11}{result['ours']['images_per_s']:>11.2f}"
        if "reference" in result and "ratio" in result:
            paired = result["paired_ratio"]
            spread = f"{paired['min']:.3f}-{paired['max']:.3f}"
            dloss = result.get("max_abs_loss_difference")
            line += (
                f"{result['reference']['images_per_s']:>11.2f}{result['ratio']:>8.3f}"
                f"{paired['median']:>8.3f}{spread:>14}"
                f"{'' if dloss is None else f'{dloss:.1e}':>13}  {result['reference_model']}"
            )
        print(line)
    print("ratio = median ours / median reference images/s (>1: ours faster); paired = median")
    print("over rounds of reference time / our time, spread = its min-max over rounds.")


def print_pipeline(results: dict[str, dict[str, Any]]) -> None:
    """One line per decode device and worker count."""
    header = f"{'decode':<8}{'workers':>8}{'img/s':>10}{'img/s/worker':>14}{'spread':>16}"
    print(header)
    print("-" * len(header))
    for result in results.values():
        spread = f"{min(result['rounds']):.1f}-{max(result['rounds']):.1f}"
        print(
            f"{result['decode_device']:<8}{result['num_workers']:>8}"
            f"{result['images_per_s']:>10.1f}{result['images_per_s_per_worker']:>14.1f}"
            f"{spread:>16}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--models",
        nargs="*",
        choices=list(PAIRS),
        default=list(PAIRS),
        help="pairs to time (none: skip the models)",
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed"))
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per pair")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per block")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per block")
    parser.add_argument(
        "--pipeline-workers",
        nargs="*",
        type=int,
        default=[0, 1, 2],
        help="num_workers values for the input pipeline (none: skip it)",
    )
    parser.add_argument(
        "--pipeline-image-size",
        nargs=2,
        type=int,
        default=[500, 375],
        metavar=("WIDTH", "HEIGHT"),
        help="size of the generated JPEGs",
    )
    parser.add_argument(
        "--pipeline-batches", type=int, default=32, help="batches per epoch (one epoch timed)"
    )
    parser.add_argument("--pipeline-rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available.")
    if min(args.rounds, args.steps, args.pipeline_batches, args.pipeline_rounds) < 1:
        parser.error("--rounds, --steps, --pipeline-batches and --pipeline-rounds must be >= 1.")
    if args.warmup < 0 or any(w < 0 for w in args.pipeline_workers):
        parser.error("--warmup and --pipeline-workers must not be negative.")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the pairs and the input pipeline, print the tables and write the JSON results."""
    args = parse_args(argv)
    set_threads(args.threads)
    info = machine_info(args.device, args.precision)
    began = time.perf_counter()
    models: dict[str, dict[str, Any]] = {}
    for name in args.models:
        print(f"{name}: {args.rounds} rounds of {args.steps} steps per side ...", flush=True)
        try:
            models[name] = run_pair(PAIRS[name], args)
        except Unavailable as error:
            print(f"{name}: skipped, {error}.")
            models[name] = {"skipped": str(error)}
    pipeline: dict[str, dict[str, Any]] = {}
    if args.pipeline_workers:
        print(f"input pipeline: workers {args.pipeline_workers} ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="glimpse-bench-") as tmp:
            pipeline = run_pipeline(args, Path(tmp))
    report = {
        "benchmark": "image classification training throughput, ours vs reference",
        "machine": info,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "optimizer": {"name": "AdamW", **OPTIMIZER},
        "wall_seconds": time.perf_counter() - began,
        "models": models,
        "pipeline": pipeline,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if models:
        print_models(models)
    if pipeline:
        print_pipeline(pipeline)
    print(f"{report['wall_seconds']:.0f} s in all; results in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

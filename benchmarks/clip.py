"""CLIP: training pairs per second and zero-shot classifier build time, glimpse against
open_clip, side by side in one process.

Two parts, each optional:

* **training**: image-text pairs per second of one training step (both encoders, the
  symmetric contrastive loss, backward, AdamW, the logit-scale clamp) for each of
  ``--shapes``:

  * ``tiny``: a CPU-sized CLIP (E 128; ViT on 64 px with 8 px patches, width 128, 4 layers,
    4 heads, MLP ratio 2; text width 128, 3 layers, 4 heads, MLP ratio 2), the shape of
    ``glimpse.models.clip.clip_cpu`` with the patchify stem open_clip has;
  * ``ViT-B-32`` and ``RN50``: open_clip's configs, the paper's shapes.

  The reference is open_clip's ``CLIP`` built from that config with random weights, trained
  with ``open_clip.loss.ClipLoss``; ours is :class:`glimpse.models.clip.CLIP` converted from
  it (:func:`glimpse.models.convert.open_clip.clip_from_open_clip`, so both start from the
  same weights) and trained with :func:`glimpse.models.clip_loss.clip_loss`. Both use AdamW
  with ``conf/model/clip.yaml``'s settings (lr 5e-4, betas (0.9, 0.98), eps 1e-6, weight
  decay 0.2), on matrices only; open_clip's training script also decays the embedding tables,
  ours does not. Both step on one fixed random batch (``--batch-size`` images of the shape's
  size, ``N(0, 1)`` pixels, and token rows ``[start, words..., end, 0...]`` of random
  lengths), in float32 or under ``torch.autocast(bfloat16)`` (``--precision bf16-mixed``).
  Before timing, the first step's losses of the two sides must agree (within 1e-3 relative):
  they computed the same function on the same weights. After one untimed block per side,
  ``--rounds`` rounds each time one block of both sides in alternating order; a block is
  ``--warmup`` untimed steps and ``--steps`` timed ones. ``ratio`` is our median pairs/s over
  open_clip's (>1: ours is faster); ``paired`` the median over rounds of open_clip's time over
  ours within a round. On CUDA the peak memory of each side's block is recorded.

* **zeroshot**: seconds to build a zero-shot classifier: ``--zeroshot-classes`` ImageNet class
  names times the first ``--zeroshot-templates`` of OpenAI's 80 ImageNet prompt templates, in
  batches of ``--zeroshot-classes-per-batch`` classes, with the text tower of
  ``--zeroshot-shape``. Ours is :func:`glimpse.models.zeroshot.zero_shot_classifier` on our
  converted model, the reference ``open_clip.build_zero_shot_classifier`` on open_clip's; both
  tokenize with open_clip's tokenizer for CLIP's released BPE vocabulary (read from the
  installed package, nothing downloaded), so they do the same work, and the two classifiers
  must agree (1e-4). Rounds alternate the order as above.

Run ``OMP_NUM_THREADS=2 python benchmarks/clip.py --threads 2`` (or ``make bench-clip``);
``--help`` lists the options. The results go to ``benchmarks/results/clip.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from machine import base_parser, clock, machine_info, set_threads
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
from torch import Tensor, nn

from glimpse.models.clip_loss import clip_loss
from glimpse.models.convert.open_clip import clip_from_open_clip
from glimpse.models.zeroshot import PLACEHOLDER, zero_shot_classifier
from glimpse.optim.param_groups import decay_groups
from glimpse.optim.settings import OptimizerSettings, build_optimizer

#: conf/model/clip.yaml's AdamW.
OPTIMIZER = {"lr": 5.0e-4, "weight_decay": 0.2, "betas": (0.9, 0.98), "eps": 1.0e-6}
TINY = {
    "embed_dim": 128,
    "vision_cfg": {
        "image_size": 64,
        "patch_size": 8,
        "width": 128,
        "layers": 4,
        "head_width": 32,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 128,
        "heads": 4,
        "layers": 3,
        "mlp_ratio": 2.0,
    },
}
SHAPES = ("tiny", "ViT-B-32", "RN50")
#: Largest relative difference allowed between the two sides' first losses.
LOSS_TOLERANCE = 1e-3
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "clip.json"


def median_and_spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def open_clip_config(
    shape: str, vocab_size: int | None, context_length: int | None
) -> dict[str, Any]:
    """open_clip's config of ``shape``, its text tower resized to ``vocab_size`` and
    ``context_length`` when given."""
    config = TINY if shape == "tiny" else open_clip.get_model_config(shape)
    text = dict(config["text_cfg"])
    text["vocab_size"] = vocab_size or text["vocab_size"]
    text["context_length"] = context_length or text["context_length"]
    return {**config, "text_cfg": text}


def build_pair(
    shape: str, args: argparse.Namespace, vocab_size: int | None
) -> tuple[nn.Module, nn.Module]:
    """``(ours, open_clip's)`` of ``shape`` with ``vocab_size`` and ``--context-length``, with
    the same random weights, on ``--device``."""
    torch.manual_seed(args.seed)
    theirs = open_clip.model.CLIP(**open_clip_config(shape, vocab_size, args.context_length))
    ours = clip_from_open_clip(theirs)
    device = torch.device(args.device)
    return ours.to(device), theirs.to(device)


def random_batch(model: nn.Module, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Images ``(B, 3, S, S)`` of the model's size and token rows ``[V-2, words..., V-1, 0...]``
    (CLIP's start and end ids, the end the largest) with 1 to ``L-2`` words each."""
    images = torch.randn(batch, 3, *model.image_size, generator=generator)
    vocab, length = model.vocab_size, model.context_length
    tokens = torch.zeros(batch, length, dtype=torch.long)
    for row, words in enumerate(torch.randint(1, length - 1, (batch,), generator=generator)):
        tokens[row, 0], tokens[row, words + 1] = vocab - 2, vocab - 1
        tokens[row, 1 : words + 1] = torch.randint(1, vocab - 2, (int(words),), generator=generator)
    return images, tokens


def open_clip_optimizer(model: nn.Module) -> torch.optim.AdamW:
    """AdamW as open_clip's training script groups it: no decay on parameters of fewer than two
    dimensions or named like norms, biases and the logit scale."""

    def plain(name: str, p: Tensor) -> bool:
        return p.ndim < 2 or any(part in name for part in ("bn", "ln", "bias", "logit_scale"))

    named = list(model.named_parameters())
    settings = {k: v for k, v in OPTIMIZER.items() if k != "weight_decay"}
    groups = [
        {"params": [p for n, p in named if plain(n, p)], "weight_decay": 0.0},
        {
            "params": [p for n, p in named if not plain(n, p)],
            "weight_decay": OPTIMIZER["weight_decay"],
        },
    ]
    return torch.optim.AdamW(groups, **settings)


@dataclass
class Side:
    """One model in training: its step function and the losses of all its steps."""

    model: nn.Module
    step: Callable[[Tensor, Tensor], Tensor]
    losses: list[Tensor] = field(default_factory=list)


def our_side(model: nn.Module, autocast: bool) -> Side:
    """glimpse's CLIP with :func:`clip_loss`, AdamW with decay groups and the clamp."""
    settings = OptimizerSettings.from_config(OPTIMIZER)
    optimizer = build_optimizer(decay_groups(model, settings.weight_decay), settings, settings.lr)

    def step(images: Tensor, tokens: Tensor) -> Tensor:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = clip_loss(*model(images, tokens))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.clamp_logit_scale_()
        return loss.detach()

    return Side(model.train(), step)


def open_clip_side(model: nn.Module, autocast: bool) -> Side:
    """open_clip's CLIP with ``ClipLoss``, its AdamW groups and its in-place clamp."""
    optimizer = open_clip_optimizer(model)
    criterion = open_clip.loss.ClipLoss()

    def step(images: Tensor, tokens: Tensor) -> Tensor:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = criterion(*model(images, tokens))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return loss.detach()

    return Side(model.train(), step)


def time_block(
    side: Side, images: Tensor, tokens: Tensor, warmup: int, steps: int
) -> tuple[float, int | None]:
    """Seconds for ``steps`` training steps after ``warmup`` untimed ones, and on CUDA the
    block's peak allocated memory in bytes."""
    cuda = images.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(images.device)
    for _ in range(warmup):
        side.losses.append(side.step(images, tokens))
    start = clock(images.device)
    for _ in range(steps):
        side.losses.append(side.step(images, tokens))
    seconds = clock(images.device) - start
    return seconds, torch.cuda.max_memory_allocated(images.device) if cuda else None


def run_training_shape(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """Check the first losses agree, then time ``--rounds`` interleaved rounds of both sides."""
    ours, theirs = build_pair(shape, args, args.vocab_size)
    device = torch.device(args.device)
    images, tokens = random_batch(ours, args.batch_size, torch.Generator().manual_seed(args.seed))
    images, tokens = images.to(device), tokens.to(device)
    autocast = args.precision == "bf16-mixed"
    sides = {"ours": our_side(ours, autocast), "open_clip": open_clip_side(theirs, autocast)}
    first = {name: float(side.step(images, tokens)) for name, side in sides.items()}
    gap = abs(first["ours"] - first["open_clip"]) / abs(first["open_clip"])
    if not gap <= LOSS_TOLERANCE:
        raise RuntimeError(
            f"{shape}: the first losses differ ({first['ours']:.6f} ours, "
            f"{first['open_clip']:.6f} open_clip); the two sides do not compute the same thing."
        )
    for side in sides.values():
        time_block(side, images, tokens, args.warmup, 1)
    blocks: dict[str, list[tuple[float, int | None]]] = {name: [] for name in sides}
    names = list(sides)
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            blocks[name].append(time_block(sides[name], images, tokens, args.warmup, args.steps))
    result: dict[str, Any] = {
        "image_size": images.shape[-1],
        "context_length": tokens.shape[1],
        "batch_size": args.batch_size,
        "parameters": sum(p.numel() for p in ours.parameters()),
        "first_loss": first,
        "first_loss_relative_difference": gap,
    }
    for name, side in sides.items():
        losses = torch.stack(side.losses)
        if not torch.isfinite(losses).all():
            raise RuntimeError(f"{shape}: {name}'s loss is not finite; the timing is void.")
        rates = [args.steps * args.batch_size / seconds for seconds, _ in blocks[name]]
        peaks = [peak for _, peak in blocks[name] if peak is not None]
        result[name] = {
            "pairs_per_s": statistics.median(rates),
            "rounds": rates,
            "peak_memory_mib": max(peaks) / 2**20 if peaks else None,
            "last_loss": float(losses[-1]),
        }
    paired = [
        theirs_block[0] / ours_block[0]
        for ours_block, theirs_block in zip(blocks["ours"], blocks["open_clip"], strict=True)
    ]
    result["ratio"] = result["ours"]["pairs_per_s"] / result["open_clip"]["pairs_per_s"]
    result["paired_ratio"] = median_and_spread(paired)
    return result


def run_zeroshot(args: argparse.Namespace) -> dict[str, Any]:
    """Build both classifiers, check they agree, then time interleaved rounds."""
    ours, theirs = build_pair(args.zeroshot_shape, args, vocab_size=None)
    ours.eval()
    theirs.eval()
    device = torch.device(args.device)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=ours.context_length)
    names = [IMAGENET_CLASSNAMES[i % 1000] for i in range(args.zeroshot_classes)]
    templates = [t(PLACEHOLDER) for t in OPENAI_IMAGENET_TEMPLATES[: args.zeroshot_templates]]
    per_batch = args.zeroshot_classes_per_batch
    autocast = args.precision == "bf16-mixed"

    def tokenize(texts: list[str]) -> Tensor:
        return tokenizer(texts).to(device)

    def build_ours() -> Tensor:
        return zero_shot_classifier(ours.encode_text, tokenize, names, templates, per_batch)

    def build_theirs() -> Tensor:
        return open_clip.build_zero_shot_classifier(
            theirs, tokenizer, names, templates, per_batch, device
        )

    builders = {"ours": build_ours, "open_clip": build_theirs}

    def timed(name: str) -> tuple[float, Tensor]:
        start = clock(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            weights = builders[name]()
        return clock(device) - start, weights

    (_, our_weights), (_, their_weights) = timed("ours"), timed("open_clip")
    difference = float((our_weights.float() - their_weights.float()).abs().max())
    if our_weights.shape != their_weights.shape or difference > (1e-2 if autocast else 1e-4):
        raise RuntimeError(
            f"The zero-shot classifiers differ (shapes {tuple(our_weights.shape)}, "
            f"{tuple(their_weights.shape)}; largest difference {difference:.2e})."
        )
    seconds: dict[str, list[float]] = {name: [] for name in builders}
    order = list(builders)
    for round_index in range(args.zeroshot_rounds):
        for name in order if round_index % 2 == 0 else order[::-1]:
            seconds[name].append(timed(name)[0])
    prompts = len(names) * len(templates)
    result: dict[str, Any] = {
        "shape": args.zeroshot_shape,
        "classes": len(names),
        "templates": len(templates),
        "prompts": prompts,
        "max_abs_weight_difference": difference,
    }
    for name, values in seconds.items():
        result[name] = {
            "seconds": statistics.median(values),
            "rounds": values,
            "prompts_per_s": prompts / statistics.median(values),
        }
    result["ratio"] = result["open_clip"]["seconds"] / result["ours"]["seconds"]
    return result


def print_training(results: dict[str, Any], args: argparse.Namespace) -> None:
    """One line per shape: both sides' pairs/s, their ratio and the paired ratio."""
    print(f"training: {args.precision}, {args.device}")
    header = (
        f"{'shape':<10}{'size':>5}{'B':>5}{'ours pairs/s':>14}{'open_clip':>11}{'ratio':>8}"
        f"{'paired':>8}{'spread':>13}{'|dloss|/loss':>14}"
    )
    print(header)
    print("-" * len(header))
    for shape, entry in results.items():
        paired = entry["paired_ratio"]
        print(
            f"{shape:<10}{entry['image_size']:>5}{entry['batch_size']:>5}"
            f"{entry['ours']['pairs_per_s']:>14.2f}{entry['open_clip']['pairs_per_s']:>11.2f}"
            f"{entry['ratio']:>8.3f}{paired['median']:>8.3f}"
            f"{paired['min']:>6.2f}-{paired['max']:.2f}"
            f"{entry['first_loss_relative_difference']:>14.1e}"
        )
    print("ratio = median ours / median open_clip pairs/s (>1: ours faster); paired = median over")
    print("rounds of open_clip time / our time.")


def print_zeroshot(result: dict[str, Any]) -> None:
    print(
        f"zero-shot classifier ({result['shape']} text tower, {result['classes']} classes x "
        f"{result['templates']} templates = {result['prompts']} prompts): ours "
        f"{result['ours']['seconds']:.3f} s, open_clip {result['open_clip']['seconds']:.3f} s, "
        f"ratio {result['ratio']:.3f} (>1: ours faster); largest weight difference "
        f"{result['max_abs_weight_difference']:.1e}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = base_parser(__doc__.split("\n\n")[0], ("training", "zeroshot"))
    parser.add_argument(
        "--vocab-size",
        type=int,
        help="text vocabulary in training (default: CLIP's, 49408, as in zero-shot)",
    )
    parser.add_argument("--context-length", type=int, help="text context (default: 77)")
    training = parser.add_argument_group("training")
    training.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    training.add_argument("--batch-size", type=int, default=8)
    training.add_argument("--rounds", type=int, default=3, help="timed rounds per shape")
    training.add_argument("--warmup", type=int, default=0, help="untimed steps per block")
    training.add_argument("--steps", type=int, default=1, help="timed steps per block")
    zeroshot = parser.add_argument_group("zeroshot")
    zeroshot.add_argument("--zeroshot-shape", choices=SHAPES, default="ViT-B-32")
    zeroshot.add_argument("--zeroshot-classes", type=int, default=10)
    zeroshot.add_argument("--zeroshot-templates", type=int, default=8, help="at most 80")
    zeroshot.add_argument("--zeroshot-classes-per-batch", type=int, default=10)
    zeroshot.add_argument("--zeroshot-rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available.")
    counts = (
        args.batch_size,
        args.rounds,
        args.steps,
        args.zeroshot_classes,
        args.zeroshot_templates,
        args.zeroshot_classes_per_batch,
        args.zeroshot_rounds,
    )
    if min(counts) < 1 or args.warmup < 0:
        parser.error(
            "--batch-size, --rounds, --steps and the --zeroshot-* counts must be at least 1, "
            "--warmup at least 0."
        )
    if args.batch_size < 2:
        parser.error("--batch-size must be at least 2: a contrastive loss needs negatives.")
    if args.zeroshot_templates > len(OPENAI_IMAGENET_TEMPLATES):
        parser.error(f"--zeroshot-templates must be at most {len(OPENAI_IMAGENET_TEMPLATES)}.")
    if args.context_length is not None and args.context_length < 3:
        parser.error("--context-length must be at least 3 (start, a word, end).")
    if args.vocab_size is not None and args.vocab_size < 4:
        parser.error("--vocab-size must be at least 4 (padding, a word, start, end).")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the parts, print their tables and write the JSON results."""
    args = parse_args(argv)
    set_threads(args.threads)
    info = machine_info(args.device, args.precision)
    load_before = os.getloadavg()
    began = time.perf_counter()
    training: dict[str, Any] = {}
    zeroshot: dict[str, Any] = {}
    if "training" in args.parts:
        for shape in args.shapes:
            print(f"training {shape}: {args.rounds} rounds of {args.steps} steps ...", flush=True)
            training[shape] = run_training_shape(shape, args)
    if "zeroshot" in args.parts:
        print(f"zero-shot classifier: {args.zeroshot_rounds} rounds ...", flush=True)
        zeroshot = run_zeroshot(args)
    if torch.get_num_threads() != info["torch_threads"]:
        raise RuntimeError("The number of torch threads changed during the benchmark.")
    report = {
        "benchmark": "CLIP: training pairs/s and zero-shot classifier build time vs open_clip",
        "machine": {**info, "open_clip": open_clip.__version__},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "optimizer": {"name": "AdamW", **OPTIMIZER},
        "wall_seconds": time.perf_counter() - began,
        "training": training,
        "zeroshot": zeroshot,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if training:
        print_training(training, args)
    if zeroshot:
        print_zeroshot(zeroshot)
    print(f"{report['wall_seconds']:.0f} s in all; results in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

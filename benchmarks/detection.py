"""DETR object detection: the Hungarian matcher batched against a per-image loop, and training.

Two parts, each optional:

* **matcher**: milliseconds per batch of :class:`glimpse.models.matcher.HungarianMatcher`
  (the cost matrices of the whole batch in one set of tensor operations on the device, then
  scipy's ``linear_sum_assignment`` per image) against a **per-image loop** written here
  (:func:`loop_match`: each image's cost matrix on its own, then the same assignment), on
  random predictions: ``--matcher-batch-sizes`` images of ``--queries`` queries over
  ``--num-classes`` classes (logits ``(B, Q, C+1)``, boxes ``σ(N(0, 1))`` cxcywh) and
  ``0 .. --max-targets`` random boxes per image. Both use the paper's cost (Carion et al.
  2020, eq. 1) ``-p̂(c) + 5 ‖b - b̂‖₁ - 2 GIoU(b, b̂)``; the loop's GIoU is
  ``torchvision.ops.generalized_box_iou``. Before timing, every image's total matching cost
  under both assignments is evaluated on the loop's cost matrix and must agree (the
  assignments themselves may differ only where two permutations cost the same).

  Both sides call scipy through a clock (:class:`AssignmentClock`; ours through a patch of
  the matcher module's ``linear_sum_assignment``), so each side's time splits into the
  assignment and the rest (building the cost matrices, moving them to the CPU, indexing).
  Rounds alternate the order of the two sides; each times ``--matcher-repeats`` calls.
  ``speedup`` is the loop's median time over ours (>1: batching is faster).

* **training**: images per second of a plain training step (DETR forward, the matcher and
  :class:`~glimpse.models.detr_loss.SetCriterion` on every decoder layer, backward, gradient
  clipping at 0.1 and AdamW with the backbone at its own learning rate, as
  ``conf/model/detr.yaml``) of each of ``--presets`` (:func:`~glimpse.models.detr.detr_small`,
  :func:`~glimpse.models.detr.detr_r50`, random weights, dropout on) on one fixed random
  padded batch: images ``(B, 3, H, W)`` whose first image fills the canvas and the others a
  random part of it (zero padding, ``mask`` True there) and ``0 .. --max-targets`` random
  boxes each, in float32 or under ``torch.autocast(bfloat16)`` (``--precision bf16-mixed``).
  The step reads a device-synchronised clock between its phases, so each block splits into
  the network forward, the matcher, the rest of the criterion, and backward plus clipping and
  the optimizer step: the matcher + criterion share says whether matching is a bottleneck.
  No reference implementation is installed (facebookresearch/detr is not a package), so the
  numbers are absolute. After one untimed block per preset, ``--rounds`` rounds each run a
  block of every preset, in alternating order; a block is ``--warmup`` untimed steps and
  ``--steps`` timed ones.

Run ``OMP_NUM_THREADS=2 python benchmarks/detection.py --threads 2`` (or
``make bench-detection``); ``--help`` lists the options. The results go to
``benchmarks/results/detection.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from machine import base_parser, clock, machine_info, set_threads
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou

from glimpse.batches import DetectionTarget
from glimpse.models import matcher as matcher_module
from glimpse.models.detr import DETR, detr_r50, detr_small
from glimpse.models.detr_loss import SetCriterion
from glimpse.models.matcher import HungarianMatcher

#: The paper's matching costs and loss weights, and conf/model/detr.yaml's optimizer.
COSTS = {"cost_class": 1.0, "cost_bbox": 5.0, "cost_giou": 2.0}
OPTIMIZER = {"lr": 1.0e-4, "backbone_lr": 1.0e-5, "weight_decay": 1.0e-4}
GRADIENT_CLIP = 0.1
PRESETS: dict[str, Callable[[int], DETR]] = {"small": detr_small, "r50": detr_r50}
#: Largest allowed difference between the two sides' total matching costs of an image.
COST_TOLERANCE = 1e-3
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "detection.json"


def median_and_spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def random_targets(
    batch: int, max_targets: int, num_classes: int, generator: torch.Generator
) -> tuple[DetectionTarget, ...]:
    """``batch`` targets of ``0 .. max_targets`` boxes each: normalised cxcywh boxes inside
    the image, at least 0.02 wide and high, with uniform random labels."""
    targets = []
    for count in torch.randint(max_targets + 1, (batch,), generator=generator).tolist():
        corner = torch.rand(count, 2, generator=generator) * 0.9
        size = 0.02 + torch.rand(count, 2, generator=generator) * (0.98 - corner)
        boxes = torch.cat([corner + size / 2, size], dim=1)
        labels = torch.randint(num_classes, (count,), generator=generator)
        targets.append(DetectionTarget(boxes, labels))
    return tuple(targets)


def on_device(
    targets: Sequence[DetectionTarget], device: torch.device
) -> tuple[DetectionTarget, ...]:
    """``targets`` with their boxes and labels moved to ``device``."""
    return tuple(DetectionTarget(t.boxes.to(device), t.labels.to(device)) for t in targets)


# Matcher ----------------------------------------------------------------------------------


@dataclass
class AssignmentClock:
    """``linear_sum_assignment`` that adds the seconds it spends to :attr:`seconds`."""

    seconds: float = 0.0

    def __call__(self, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        assignment = linear_sum_assignment(cost)
        self.seconds += time.perf_counter() - start
        return assignment


def image_cost(logits: Tensor, boxes: Tensor, target: DetectionTarget) -> Tensor:
    """The matching cost of one image, ``logits (Q, C+1)``, ``boxes (Q, 4)`` -> ``(Q, n)``:
    ``-λ_cls p̂(c) + λ_L1 ‖b - b̂‖₁ - λ_giou GIoU(b, b̂)``."""
    prob = logits.float().softmax(-1)
    pred = boxes.float()
    target_boxes = target.boxes.to(pred)
    giou = generalized_box_iou(
        box_convert(pred, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
    )
    return (
        -COSTS["cost_class"] * prob[:, target.labels]
        + COSTS["cost_bbox"] * torch.cdist(pred, target_boxes, p=1)
        - COSTS["cost_giou"] * giou
    )


def loop_match(
    logits: Tensor,
    boxes: Tensor,
    targets: Sequence[DetectionTarget],
    assign: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> list[tuple[Tensor, Tensor]]:
    """The reference: :func:`image_cost` and ``assign`` image by image, ``logits (B, Q, C+1)``,
    ``boxes (B, Q, 4)`` -> ``[(pred_idx, target_idx)]`` as the matcher returns them."""
    indices = []
    for index, target in enumerate(targets):
        rows, cols = assign(image_cost(logits[index], boxes[index], target).cpu().numpy())
        indices.append((torch.as_tensor(rows), torch.as_tensor(cols)))
    return indices


def matching_cost_gap(
    logits: Tensor,
    boxes: Tensor,
    targets: Sequence[DetectionTarget],
    ours: list[tuple[Tensor, Tensor]],
    loop: list[tuple[Tensor, Tensor]],
) -> tuple[float, int]:
    """The largest difference over images between the total cost (float64, on the loop's cost
    matrix) of our assignment and the loop's, and how many images got the same assignment;
    raises when an image's matched counts differ or the totals differ by more than
    :data:`COST_TOLERANCE`."""
    gap, same = 0.0, 0
    for index, target in enumerate(targets):
        cost = image_cost(logits[index], boxes[index], target).double().cpu()
        (our_rows, our_cols), (loop_rows, loop_cols) = ours[index], loop[index]
        if len(our_rows) != len(loop_rows):
            raise RuntimeError(
                f"Image {index}: the matcher matched {len(our_rows)} targets, the loop "
                f"{len(loop_rows)}."
            )
        difference = abs(
            float(cost[our_rows, our_cols].sum()) - float(cost[loop_rows, loop_cols].sum())
        )
        if difference > COST_TOLERANCE:
            raise RuntimeError(
                f"Image {index}: the matcher's total matching cost differs from the loop's by "
                f"{difference:.2e}; the two do not compute the same matching."
            )
        gap = max(gap, difference)
        same += bool(torch.equal(our_rows, loop_rows) and torch.equal(our_cols, loop_cols))
    return gap, same


def time_matching(
    match: Callable[[], Any], clock_: AssignmentClock, repeats: int, device: torch.device
) -> tuple[float, float]:
    """Seconds per call of ``match`` over ``repeats`` calls, and of that the assignment's."""
    clock_.seconds = 0.0
    start = clock(device)
    for _ in range(repeats):
        match()
    return (clock(device) - start) / repeats, clock_.seconds / repeats


def run_matcher_batch(batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """Both sides on one random batch of ``batch`` images: the check, then interleaved
    rounds."""
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(args.seed + batch)
    logits = torch.randn(batch, args.queries, args.num_classes + 1, generator=generator)
    boxes = torch.randn(batch, args.queries, 4, generator=generator).sigmoid()
    targets = random_targets(batch, args.max_targets, args.num_classes, generator)
    logits, boxes, targets = logits.to(device), boxes.to(device), on_device(targets, device)
    matcher = HungarianMatcher(**COSTS)
    assignment = AssignmentClock()
    sides: dict[str, Callable[[], Any]] = {
        "batched": lambda: matcher(logits, boxes, targets),
        "loop": lambda: loop_match(logits, boxes, targets, assignment),
    }
    with mock.patch.object(matcher_module, "linear_sum_assignment", assignment):
        gap, same = matching_cost_gap(logits, boxes, targets, sides["batched"](), sides["loop"]())
        seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        names = list(sides)
        for round_index in range(args.matcher_rounds):
            for name in names if round_index % 2 == 0 else names[::-1]:
                seconds[name].append(
                    time_matching(sides[name], assignment, args.matcher_repeats, device)
                )
    result: dict[str, Any] = {
        "targets": sum(len(t.labels) for t in targets),
        "max_total_cost_difference": gap,
        "images_with_the_same_assignment": same,
    }
    for name, values in seconds.items():
        totals = [1e3 * total for total, _ in values]
        scipy = [1e3 * part for _, part in values]
        total, assign = statistics.median(totals), statistics.median(scipy)
        result[name] = {
            "ms_per_batch": total,
            "assignment_ms": assign,
            "cost_ms": total - assign,
            "assignment_share": assign / total,
            "rounds_ms": totals,
        }
    result["speedup"] = result["loop"]["ms_per_batch"] / result["batched"]["ms_per_batch"]
    result["cost_speedup"] = result["loop"]["cost_ms"] / result["batched"]["cost_ms"]
    result["paired_speedup"] = median_and_spread(
        [loop[0] / ours[0] for ours, loop in zip(seconds["batched"], seconds["loop"], strict=True)]
    )
    return result


# Training ---------------------------------------------------------------------------------


class TimedMatcher(HungarianMatcher):
    """The paper's matcher, adding the (device-synchronised) seconds of its calls to
    :attr:`seconds`."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(**COSTS)
        self.device = device
        self.seconds = 0.0

    def forward(
        self, logits: Tensor, boxes: Tensor, targets: Sequence[DetectionTarget]
    ) -> list[tuple[Tensor, Tensor]]:
        start = clock(self.device)
        indices = super().forward(logits, boxes, targets)
        self.seconds += clock(self.device) - start
        return indices


@dataclass
class Preset:
    """One preset in training: the network, its criterion and optimizer, its batch."""

    model: DETR
    criterion: SetCriterion
    matcher: TimedMatcher
    optimizer: torch.optim.Optimizer
    images: Tensor
    mask: Tensor
    targets: tuple[DetectionTarget, ...]
    losses: list[Tensor] = field(default_factory=list)


PHASES = ("forward", "matcher", "criterion", "backward_step")


def padded_batch(batch: int, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Images ``(B, 3, size, size)`` of standard normal pixels and their ``mask (B, size,
    size)``: the first image fills the canvas, the others a random ``h x w`` top-left part of
    it, ``h, w`` in ``[size / 2, size]``, zero and True below and right of it."""
    images = torch.randn(batch, 3, size, size, generator=generator)
    mask = torch.ones(batch, size, size, dtype=torch.bool)
    for index in range(batch):
        height, width = (
            (size, size)
            if index == 0
            else torch.randint(size // 2, size + 1, (2,), generator=generator).tolist()
        )
        mask[index, :height, :width] = False
    return images.masked_fill(mask[:, None], 0.0), mask


def build_preset(name: str, args: argparse.Namespace) -> Preset:
    """The preset's network (random weights, train mode), criterion, optimizer and batch."""
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = PRESETS[name](args.num_classes).to(device).train()
    matcher = TimedMatcher(device)
    criterion = SetCriterion(args.num_classes, matcher).to(device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    backbone = [p for n, p in named if n.startswith("backbone.")]
    rest = [p for n, p in named if not n.startswith("backbone.")]
    groups = [
        {"params": rest, "lr": OPTIMIZER["lr"]},
        {"params": backbone, "lr": OPTIMIZER["backbone_lr"]},
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=OPTIMIZER["weight_decay"])
    generator = torch.Generator().manual_seed(args.seed)
    size, batch = getattr(args, f"{name}_image_size"), getattr(args, f"{name}_batch_size")
    images, mask = padded_batch(batch, size, generator)
    targets = random_targets(batch, args.max_targets, args.num_classes, generator)
    return Preset(
        model,
        criterion,
        matcher,
        optimizer,
        images.to(device),
        mask.to(device),
        on_device(targets, device),
    )


def train_step(preset: Preset, autocast: bool) -> dict[str, float]:
    """One step; the seconds of its phases (:data:`PHASES`), each ending on a synchronised
    clock. The loss is kept on the device."""
    device = preset.images.device
    preset.matcher.seconds = 0.0
    start = clock(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        output = preset.model(preset.images, preset.mask)
        forward_end = clock(device)
        loss = preset.criterion(output, preset.targets)["loss"]
    loss_end = clock(device)
    preset.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(preset.model.parameters(), GRADIENT_CLIP)
    preset.optimizer.step()
    end = clock(device)
    preset.losses.append(loss.detach())
    matcher = preset.matcher.seconds
    return {
        "forward": forward_end - start,
        "matcher": matcher,
        "criterion": loss_end - forward_end - matcher,
        "backward_step": end - loss_end,
    }


def time_block(preset: Preset, warmup: int, steps: int, autocast: bool) -> dict[str, float]:
    """Seconds of ``steps`` training steps after ``warmup`` untimed ones, in all and per
    phase."""
    for _ in range(warmup):
        train_step(preset, autocast)
    totals = dict.fromkeys(PHASES, 0.0)
    start = clock(preset.images.device)
    for _ in range(steps):
        for phase, seconds in train_step(preset, autocast).items():
            totals[phase] += seconds
    totals["total"] = clock(preset.images.device) - start
    return totals


def run_training(args: argparse.Namespace) -> dict[str, Any]:
    """Warm every preset up, time ``--rounds`` interleaved rounds and summarise them."""
    autocast = args.precision == "bf16-mixed"
    presets = {name: build_preset(name, args) for name in args.presets}
    for preset in presets.values():
        time_block(preset, args.warmup, 1, autocast)
    blocks: dict[str, list[dict[str, float]]] = {name: [] for name in presets}
    names = list(presets)
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            blocks[name].append(time_block(presets[name], args.warmup, args.steps, autocast))
    results: dict[str, Any] = {}
    for name, preset in presets.items():
        losses = torch.stack(preset.losses)
        if not torch.isfinite(losses).all():
            raise RuntimeError(f"The {name} preset's loss is not finite; the timing is void.")
        batch, size = len(preset.images), preset.images.shape[-1]
        rates = [args.steps * batch / block["total"] for block in blocks[name]]
        shares = {
            phase: statistics.median(block[phase] / block["total"] for block in blocks[name])
            for phase in PHASES
        }
        step_ms = {
            phase: 1e3 * statistics.median(block[phase] for block in blocks[name]) / args.steps
            for phase in (*PHASES, "total")
        }
        results[name] = {
            "image_size": size,
            "batch_size": batch,
            "queries": preset.model.query_embed.num_embeddings,
            "decoder_layers": len(preset.model.transformer.decoder),
            "targets": sum(len(t.labels) for t in preset.targets),
            "parameters": sum(p.numel() for p in preset.model.parameters()),
            "trained_parameters": sum(
                p.numel() for p in preset.model.parameters() if p.requires_grad
            ),
            "images_per_s": statistics.median(rates),
            "rounds": rates,
            "step_ms": step_ms,
            "shares": shares,
            "matcher_and_criterion_share": statistics.median(
                (block["matcher"] + block["criterion"]) / block["total"] for block in blocks[name]
            ),
            "first_loss": float(losses[0]),
            "last_loss": float(losses[-1]),
        }
    return results


# Report -----------------------------------------------------------------------------------


def print_matcher(results: dict[str, Any], args: argparse.Namespace) -> None:
    """One line per batch size: ms per batch of both sides, their scipy part, the speed-up."""
    print(
        f"matcher: Q {args.queries}, C {args.num_classes}, 0-{args.max_targets} targets per "
        f"image, {args.device}"
    )
    header = (
        f"{'B':>4}{'targets':>9}{'batched ms':>12}{'(scipy)':>9}{'loop ms':>10}{'(scipy)':>9}"
        f"{'speedup':>9}{'cost only':>11}{'paired':>16}"
    )
    print(header)
    print("-" * len(header))
    for batch, entry in results.items():
        ours, loop, paired = entry["batched"], entry["loop"], entry["paired_speedup"]
        print(
            f"{batch:>4}{entry['targets']:>9}{ours['ms_per_batch']:>12.2f}"
            f"{ours['assignment_ms']:>9.2f}{loop['ms_per_batch']:>10.2f}"
            f"{loop['assignment_ms']:>9.2f}{entry['speedup']:>9.2f}{entry['cost_speedup']:>11.2f}"
            f"{paired['median']:>7.2f} ({paired['min']:.2f}-{paired['max']:.2f})"
        )
    print("speedup = loop / batched median ms; cost only: the same without scipy's assignment.")


def print_training(results: dict[str, Any], args: argparse.Namespace) -> None:
    """One line per preset: images/s and the shares of the step's phases."""
    print(f"training: {args.precision}, {args.device}")
    header = (
        f"{'preset':<7}{'size':>6}{'B':>4}{'img/s':>9}{'spread':>15}{'step ms':>10}"
        f"{'forward':>9}{'matcher':>9}{'criterion':>11}{'backward':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, entry in results.items():
        shares = entry["shares"]
        spread = f"{min(entry['rounds']):.2f}-{max(entry['rounds']):.2f}"
        print(
            f"{name:<7}{entry['image_size']:>6}{entry['batch_size']:>4}"
            f"{entry['images_per_s']:>9.2f}{spread:>15}{entry['step_ms']['total']:>10.0f}"
            f"{shares['forward']:>9.1%}{shares['matcher']:>9.1%}{shares['criterion']:>11.1%}"
            f"{shares['backward_step']:>10.1%}"
        )
    print("shares of the step time (medians over rounds); backward includes clipping and AdamW.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = base_parser(__doc__.split("\n\n")[0], ("matcher", "training"))
    parser.add_argument("--num-classes", type=int, default=91, help="C (DETR's COCO: 91)")
    parser.add_argument("--max-targets", type=int, default=20, help="boxes per image: 0 .. this")
    matching = parser.add_argument_group("matcher")
    matching.add_argument("--matcher-batch-sizes", nargs="+", type=int, default=[8, 16, 32, 64])
    matching.add_argument("--queries", type=int, default=100, help="Q")
    matching.add_argument("--matcher-rounds", type=int, default=5)
    matching.add_argument("--matcher-repeats", type=int, default=10, help="calls per round")
    training = parser.add_argument_group("training")
    training.add_argument("--presets", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    training.add_argument("--small-image-size", type=int, default=256)
    training.add_argument("--small-batch-size", type=int, default=8)
    training.add_argument("--r50-image-size", type=int, default=512)
    training.add_argument("--r50-batch-size", type=int, default=2)
    training.add_argument("--rounds", type=int, default=3, help="timed rounds per preset")
    training.add_argument("--warmup", type=int, default=1, help="untimed steps per block")
    training.add_argument("--steps", type=int, default=2, help="timed steps per block")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available.")
    counts = (
        args.num_classes,
        args.queries,
        args.matcher_rounds,
        args.matcher_repeats,
        args.rounds,
        args.steps,
        args.small_batch_size,
        args.r50_batch_size,
        *args.matcher_batch_sizes,
    )
    if min(counts) < 1:
        parser.error(
            "--num-classes, --queries, --matcher-rounds, --matcher-repeats, --rounds, --steps, "
            "the batch sizes and --matcher-batch-sizes must be at least 1."
        )
    if min(args.warmup, args.max_targets) < 0:
        parser.error("--warmup and --max-targets must not be negative.")
    if min(args.small_image_size, args.r50_image_size) < 32:
        parser.error("--small-image-size and --r50-image-size must be at least 32 (stride 32).")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the parts, print their tables and write the JSON results."""
    args = parse_args(argv)
    set_threads(args.threads)
    info = machine_info(args.device, args.precision)
    load_before = os.getloadavg()
    began = time.perf_counter()
    matching: dict[int, Any] = {}
    training: dict[str, Any] = {}
    if "matcher" in args.parts:
        print(f"matcher: batch sizes {args.matcher_batch_sizes} ...", flush=True)
        matching = {batch: run_matcher_batch(batch, args) for batch in args.matcher_batch_sizes}
    if "training" in args.parts:
        print(f"training: {args.rounds} rounds of {args.steps} steps per preset ...", flush=True)
        training = run_training(args)
    if torch.get_num_threads() != info["torch_threads"]:
        raise RuntimeError("The number of torch threads changed during the benchmark.")
    report = {
        "benchmark": "detection: DETR's matcher batched vs per image, training images/s",
        "machine": info,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "costs": COSTS,
        "optimizer": {"name": "AdamW", **OPTIMIZER, "gradient_clip_norm": GRADIENT_CLIP},
        "wall_seconds": time.perf_counter() - began,
        "matcher": {str(batch): entry for batch, entry in matching.items()},
        "training": training,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if matching:
        print_matcher(matching, args)
    if training:
        print_training(training, args)
    print(f"{report['wall_seconds']:.0f} s in all; results in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

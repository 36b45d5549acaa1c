"""torch.compile against eager: the training step of ViT, Swin, the char Transformer and DETR's
transformer, compiled and not, side by side in one process.

Each case is one network trained by plain PyTorch steps (forward, loss, backward, AdamW) on one
fixed random batch, in two copies with the same initial weights: one eager, one compiled in
place with :meth:`torch.nn.Module.compile` (what ``model.compile=true`` does to a task's
networks, :mod:`glimpse.tasks.acceleration`), with ``--backend`` (inductor) and ``--mode``:

* ``vit``: :func:`glimpse.models.vit.vit_small_patch16` on ``--image-size`` images, cross-entropy;
* ``swin``: :func:`glimpse.models.swin.swin_tiny` on ``--swin-image-size`` images;
* ``char_transformer``: :class:`glimpse.models.char_transformer.CharTransformer` (D 128, 4
  layers, 4 heads, as ``model=transformer``) on ``(--batch-size, --seq-len)`` tokens;
* ``detr_transformer``: DETR's encoder-decoder (:class:`glimpse.models.detr.Transformer`,
  d 256, 6 + 6 layers, FFN 2048, dropout 0) on two images' ``--detr-grid`` feature maps, the
  second half padding, and 100 fixed query embeddings; the loss is the mean square of the
  decoder outputs.

The compiled copy's first step compiles (its seconds are reported as ``compile_s``); then, after
``--warmup`` untimed steps per side, ``--rounds`` rounds each time ``--steps`` steps of both
sides in alternating order, so that load from other processes falls on both alike. ``ratio`` is
the compiled copy's median steps per second over the eager one's (>1: compiling pays).
``max_abs_loss_difference`` compares the two copies' losses step by step (they train the same
way up to float rounding). The machine's load average is recorded before and after.

Run ``OMP_NUM_THREADS=2 python benchmarks/compile.py --threads 2`` (or ``make bench-compile``);
``--help`` lists the options. The results go to ``benchmarks/results/compile.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from machine import base_parser, clock, machine_info, set_threads
from torch import Tensor, nn
from torch.nn import functional as F

from glimpse.models.char_transformer import CharTransformer
from glimpse.models.detr import Transformer
from glimpse.models.swin import swin_tiny
from glimpse.models.vit import vit_small_patch16

CASES = ("vit", "swin", "char_transformer", "detr_transformer")
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "compile.json"
NUM_CLASSES = 10
VOCAB = 96


@dataclass
class Case:
    """A network, its fixed batch (the forward's arguments) and its loss of the output."""

    model: nn.Module
    inputs: tuple[Tensor, ...]
    loss: Callable[[Any], Tensor]
    examples: int


def classification(model: nn.Module, size: int, batch: int, generator: torch.Generator) -> Case:
    images = torch.randn(batch, 3, size, size, generator=generator)
    labels = torch.randint(NUM_CLASSES, (batch,), generator=generator)
    return Case(model, (images,), lambda logits: F.cross_entropy(logits, labels), batch)


def build_case(name: str, args: argparse.Namespace) -> Case:
    """The case ``name`` (module docstring) with seeded weights and batch."""
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    if name == "vit":
        model = vit_small_patch16(img_size=args.image_size, num_classes=NUM_CLASSES)
        return classification(model, args.image_size, args.batch_size, generator)
    if name == "swin":
        model = swin_tiny(img_size=args.swin_image_size, num_classes=NUM_CLASSES)
        return classification(model, args.swin_image_size, args.batch_size, generator)
    if name == "char_transformer":
        model = CharTransformer(VOCAB, block_size=args.seq_len)
        tokens = torch.randint(VOCAB, (args.batch_size, args.seq_len + 1), generator=generator)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]

        def next_token_loss(output: tuple[Tensor, None]) -> Tensor:
            return F.cross_entropy(output[0].flatten(0, 1), targets.flatten())

        return Case(model, (inputs,), next_token_loss, args.batch_size * args.seq_len)
    height, width = args.detr_grid
    model = Transformer(dropout=0.0)
    batch = 2
    src = torch.randn(batch, 256, height, width, generator=generator)
    pos = torch.randn(batch, 256, height, width, generator=generator)
    mask = torch.zeros(batch, height, width, dtype=torch.bool)
    mask[1, :, width // 2 :] = True  # the second image fills half the padded canvas
    queries = torch.randn(100, 256, generator=generator)
    return Case(
        model, (src, mask, queries, pos), lambda outputs: outputs.float().square().mean(), batch
    )


@dataclass
class Side:
    """One copy of a case's network in training."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    losses: list[float]


def make_side(model: nn.Module) -> Side:
    return Side(model.train(), torch.optim.AdamW(model.parameters(), lr=1e-4), [])


def step(side: Side, case: Case) -> None:
    loss = case.loss(side.model(*case.inputs))
    side.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    side.optimizer.step()
    side.losses.append(float(loss.detach()))


def time_block(side: Side, case: Case, steps: int, device: torch.device) -> float:
    start = clock(device)
    for _ in range(steps):
        step(side, case)
    return clock(device) - start


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Compile, warm up and time both copies of case ``name``."""
    device = torch.device("cpu")
    case = build_case(name, args)
    compiled_model = copy.deepcopy(case.model)
    compiled_model.compile(backend=args.backend, mode=args.mode)
    sides = {"eager": make_side(case.model), "compiled": make_side(compiled_model)}
    compile_s = time_block(sides["compiled"], case, 1, device)
    time_block(sides["eager"], case, 1, device)
    for side in sides.values():
        time_block(side, case, args.warmup, device)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for index in range(args.rounds):
        for side_name in order if index % 2 == 0 else order[::-1]:
            seconds[side_name].append(time_block(sides[side_name], case, args.steps, device))
    rates = {
        side: [args.steps * case.examples / s for s in values] for side, values in seconds.items()
    }
    eager, compiled = sides["eager"].losses, sides["compiled"].losses
    return {
        "parameters": sum(p.numel() for p in case.model.parameters()),
        "examples_per_step": case.examples,
        "compile_s": compile_s,
        "eager": {"per_s": statistics.median(rates["eager"]), "rounds": rates["eager"]},
        "compiled": {"per_s": statistics.median(rates["compiled"]), "rounds": rates["compiled"]},
        "ratio": statistics.median(rates["compiled"]) / statistics.median(rates["eager"]),
        "max_abs_loss_difference": max(abs(a - b) for a, b in zip(eager, compiled, strict=True)),
    }


def print_table(results: dict[str, dict[str, Any]]) -> None:
    header = (
        f"{'case':<18}{'eager/s':>10}{'compiled/s':>12}{'ratio':>8}{'compile s':>11}"
        f"{'max |dloss|':>13}"
    )
    print(header)
    print("-" * len(header))
    for name, result in results.items():
        print(
            f"{name:<18}{result['eager']['per_s']:>10.2f}{result['compiled']['per_s']:>12.2f}"
            f"{result['ratio']:>8.3f}{result['compile_s']:>11.1f}"
            f"{result['max_abs_loss_difference']:>13.1e}"
        )
    print("per second: images (vit, swin, detr_transformer) or tokens (char_transformer);")
    print("ratio = compiled / eager (>1: compiled faster).")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = base_parser(__doc__.split("\n\n")[0], CASES)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--mode", default="default")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=96, help="ViT-S/16's images")
    parser.add_argument("--swin-image-size", type=int, default=112, help="Swin-T's images")
    parser.add_argument("--seq-len", type=int, default=64, help="char Transformer's tokens")
    parser.add_argument("--detr-grid", type=int, nargs=2, default=[20, 20], metavar=("H", "W"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args(argv)
    if args.device != "cpu":
        parser.error("compile.py times the CPU; the GPU's ratios are in benchmarks/gpu_check.py.")
    if min(args.rounds, args.steps) < 1 or args.warmup < 0:
        parser.error("--rounds and --steps must be >= 1 and --warmup >= 0.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    info = machine_info("cpu", "32-true")
    load_before = os.getloadavg()
    began = time.perf_counter()
    results = {}
    for name in args.parts:
        print(f"{name}: compiling, then {args.rounds} rounds of {args.steps} steps ...", flush=True)
        results[name] = run_case(name, args)
    report = {
        "benchmark": "training step, torch.compile vs eager, on the CPU",
        "machine": {
            **info,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "wall_seconds": time.perf_counter() - began,
        "cases": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    print(
        f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after, on "
        f"{os.cpu_count()} CPUs; {report['wall_seconds']:.0f} s in all; results in {args.output}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

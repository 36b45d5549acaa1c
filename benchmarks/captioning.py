"""Image captioning throughput: training with and without cached features, and decoding.

Two parts, each optional:

* **training**: steps per second of :class:`glimpse.tasks.captioning.Captioner` fitted by a
  ``lightning.Trainer`` with a frozen encoder (random weights, ``pretrained=None``,
  ``fine_tune_encoder_from_epoch=None``; by default ResNet-50 up to ``layer3``, the 14x14 grid
  of 1024 channels of Xu et al. at 224 px, and :class:`~glimpse.models.captioning.
  ShowAttendTell` at its default sizes) on a generated
  :class:`~glimpse.data.synthetic.datamodules.ShapesCaptionsDataModule` (written once into a
  temporary folder, five captions per image, enough images for one epoch to hold every step of a
  block), twice:

  * **uncached** (``cache_features=false``): every step decodes its images in the
    DataLoader's ``--num-workers`` workers and runs the encoder (under ``no_grad``) before the
    teacher-forced decoder;
  * **cached** (``cache_features=true``): the datamodule extracts the training split's grids
    once with the task's frozen encoder (:mod:`glimpse.data.captions.feature_cache`, into a fresh
    cache folder per block, so every block pays for it) and the steps run the decoder alone.

  The Trainer runs what training needs and nothing else (no logger, checkpoints, progress bar,
  model summary or validation; ``gradient_clip_val=5.0`` as ``conf/model/show_tell.yaml``).
  A callback reads the clock at ``on_train_batch_start`` of the first timed step and at
  ``on_train_batch_end`` of the last, after ``--warmup`` untimed steps, so trainer set-up,
  worker start-up and the one-off extraction are not counted as steps. The extraction is
  timed on its own: the building of the training loader, which with ``cache_features`` decodes
  the split's images, runs the encoder on them and writes and maps the cache file. After one
  untimed block per side, ``--rounds`` rounds each run one block of both sides, in alternating
  order, so that load from other processes falls on both alike.

  ``speedup`` is the median cached steps/s over the median uncached steps/s. The break-even
  is the extraction time ``X`` over the time an epoch of ``S`` steps saves,
  ``X / (S / r_u - S / r_c)`` with ``r_u`` and ``r_c`` the uncached and cached steps/s:
  caching pays for itself after that many epochs. Extraction and epoch both grow with the
  number of images, so with five captions per image (Flickr8k, COCO) the break-even holds for
  any dataset size.

* **decoding**: captions per second of :func:`~glimpse.models.decoding.greedy_decode`
  and :func:`~glimpse.models.decoding.beam_search` (``--beams``, default 1, i.e. greedy,
  3 and 5) with each of ``--decoders`` on random grids ``(B, N, D)``, under
  :func:`torch.inference_mode`, **batched** (the ``B`` images in one call) and **one at a
  time** (``B`` calls on one image each). The decoder has random weights with its ``<end>``
  logit lowered by :data:`END_LOGIT_SHIFT`, so no caption ends early and every caption runs
  to ``--max-length`` ids in both modes: the comparison is of equal work. Rounds alternate the
  order of the cases. ``ratio`` is batched over one-at-a-time captions/s.

Run ``OMP_NUM_THREADS=2 python benchmarks/captioning.py --threads 2`` (or
``make bench-captioning``); ``--help`` lists the options. The results go to
``benchmarks/results/captioning.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from machine import base_parser, clock, machine_info, quiet_lightning, set_threads, timed_fit
from torch import Tensor, nn
from torch.utils.data import DataLoader

from glimpse.data.synthetic.datamodules import ShapesCaptionsDataModule
from glimpse.data.synthetic.shapes import FLICKR_SPLITS
from glimpse.data.text.word_tokenizer import SPECIALS, WordTokenizer
from glimpse.models.decoding import beam_search, greedy_decode
from glimpse.tasks.captioning import Captioner

#: Captions per generated image (:func:`glimpse.data.synthetic.shapes.write_flickr8k`).
CAPTIONS_PER_IMAGE = 5
#: Optimizer, schedule and gradient clipping of conf/model/show_tell.yaml.
OPTIMIZER = {"lr": 4.0e-4, "weight_decay": 0.0, "betas": [0.9, 0.999]}
SCHEDULER = {"warmup_steps": 100, "min_lr_ratio": 0.1}
GRADIENT_CLIP = 5.0
DECODERS = {
    "show_attend_tell": "glimpse.models.captioning.ShowAttendTell",
    "show_tell": "glimpse.models.captioning.ShowTell",
}
#: Subtracted from the random decoder's ``<end>`` logit so that no caption ends early.
END_LOGIT_SHIFT = 1.0e4
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "captioning.json"


def median_and_spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def decoder_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Hydra config of decoder ``name`` at the command line's sizes (dropout as the configs)."""
    config = {
        "_target_": DECODERS[name],
        "impl": "fused",
        "embed_dim": args.embed_dim,
        "hidden_size": args.hidden_size,
        "dropout": 0.5,
    }
    if name == "show_attend_tell":
        config |= {"attention_dim": args.attention_dim, "gate": True}
    return config


# Training ---------------------------------------------------------------------------------


class TimedShapes(ShapesCaptionsDataModule):
    """The shapes captions datamodule, recording how long building the training loader took
    (with ``cache_features``: extracting, saving and mapping the training split's grids)."""

    loader_seconds = 0.0

    def train_dataloader(self) -> DataLoader:
        device = self.trainer.strategy.root_device
        start = clock(device)
        loader = super().train_dataloader()
        self.loader_seconds = clock(device) - start
        return loader


def images_needed(args: argparse.Namespace) -> int:
    """Images over all splits for a training split of at least ``(--warmup + --steps)``
    batches of (image, caption) pairs, so that a block fits in one epoch."""
    pairs = (args.warmup + args.steps) * args.batch_size
    return math.ceil(pairs / CAPTIONS_PER_IMAGE / FLICKR_SPLITS["train"]) + 2


def shapes_datamodule(root: Path, cache_dir: Path | None, args: argparse.Namespace) -> TimedShapes:
    """The datamodule on the dataset under ``root`` (written there on first use), serving
    images (``cache_dir`` None) or cached grids kept in ``cache_dir``; set up for fitting."""
    datamodule = TimedShapes(
        data_dir=root,
        num_images=args.num_images or images_needed(args),
        image_size=args.image_size,
        seed=args.seed,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        verify=False,
        cache_features=cache_dir is not None,
        cache_dir=cache_dir or root / "unused_cache",
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def fit_block(
    task: Captioner, datamodule: TimedShapes, steps: int, args: argparse.Namespace
) -> tuple[float, float]:
    """Fit ``task`` for ``--warmup + steps`` steps; ``(seconds of the last steps, seconds to
    build the training loader)``."""
    timer = timed_fit(task, datamodule, args, steps, GRADIENT_CLIP, datamodule.root.parent)
    if timer.seen < args.warmup + steps:
        raise RuntimeError(f"The trainer ran {timer.seen} steps, not {args.warmup + steps}.")
    return timer.seconds, datamodule.loader_seconds


def run_training(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Warm both sides up, time ``--rounds`` interleaved rounds and summarise them."""
    data_root = root / "data"
    reference = shapes_datamodule(data_root, None, args)
    torch.manual_seed(args.seed)
    task = Captioner(
        spec=reference.spec.to_dict(),
        encoder={
            "_target_": "glimpse.models.captioning.CaptionEncoder",
            "arch": args.arch,
            "small_images": False,
            "stages": args.stages,
            "grid_size": None,
        },
        decoder=decoder_config(args.decoder, args),
        optimizer=OPTIMIZER,
        scheduler=SCHEDULER,
        fine_tune_encoder_from_epoch=None,
        figures=None,
        pretrained=None,
    )
    blocks = itertools.count()

    def side(cached: bool, steps: int) -> tuple[float, float]:
        """One block; a cached one extracts into a cache folder of its own."""
        cache_dir = root / "cache" / f"block{next(blocks)}" if cached else None
        return fit_block(task, shapes_datamodule(data_root, cache_dir, args), steps, args)

    names = ("uncached", "cached")
    for name in names:
        side(name == "cached", 1)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    extraction: list[float] = []
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            step_seconds, loader_seconds = side(name == "cached", args.steps)
            seconds[name].append(step_seconds)
            if name == "cached":
                extraction.append(loader_seconds)
    train_images = len(reference.dataset("train").names)
    train_pairs = len(reference.dataset("train"))
    height, width = task.encoder.grid_shape(args.image_size)
    result: dict[str, Any] = {
        "config": {
            "arch": args.arch,
            "stages": args.stages,
            "grid": [height, width],
            "feature_dim": task.encoder.out_dim,
            "decoder": decoder_config(args.decoder, args),
            "vocab_size": len(reference.spec.vocab),
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "warmup": args.warmup,
            "steps": args.steps,
            "train_images": train_images,
            "train_pairs": train_pairs,
            "decoder_parameters": sum(p.numel() for p in task.decoder.parameters()),
            "encoder_parameters": sum(p.numel() for p in task.encoder.parameters()),
        }
    }
    for name in names:
        rates = [args.steps / s for s in seconds[name]]
        rate = statistics.median(rates)
        result[name] = {
            "steps_per_s": rate,
            "pairs_per_s": rate * args.batch_size,
            "rounds": rates,
        }
    paired = [u / c for u, c in zip(seconds["uncached"], seconds["cached"], strict=True)]
    uncached, cached = result["uncached"]["steps_per_s"], result["cached"]["steps_per_s"]
    extraction_seconds = statistics.median(extraction)
    steps_per_epoch = train_pairs / args.batch_size
    saved_per_epoch = steps_per_epoch * (1 / uncached - 1 / cached)
    result["extraction"] = {
        "seconds": extraction_seconds,
        "images": train_images,
        "images_per_s": train_images / extraction_seconds,
        "rounds": extraction,
    }
    result["speedup"] = cached / uncached
    result["paired_speedup"] = median_and_spread(paired)
    result["paired_speedups"] = paired
    result["break_even_epochs"] = (
        extraction_seconds / saved_per_epoch if saved_per_epoch > 0 else None
    )
    return result


# Decoding ---------------------------------------------------------------------------------


def random_decoder(name: str, tokenizer: WordTokenizer, args: argparse.Namespace) -> nn.Module:
    """Decoder ``name`` with random weights in eval mode on the device, its ``<end>`` logit
    lowered by :data:`END_LOGIT_SHIFT`."""
    torch.manual_seed(args.seed)
    decoder = instantiate(
        decoder_config(name, args), vocab_size=len(tokenizer), feature_dim=args.feature_dim
    )
    with torch.no_grad():
        decoder.head.bias[tokenizer.end_id] -= END_LOGIT_SHIFT
    return decoder.to(args.device).eval()


def searcher(beam: int, tokenizer: WordTokenizer, max_length: int) -> Callable:
    """``search(decoder, grid) -> Decoded``: greedy for ``beam`` 1, else beam search."""
    start, end = tokenizer.start_id, tokenizer.end_id
    if beam == 1:
        return lambda decoder, grid: greedy_decode(decoder, grid, start, end, max_length)
    return lambda decoder, grid: beam_search(decoder, grid, start, end, max_length, beam)


def time_decoding(
    decoder: nn.Module, grid: Tensor, search: Callable, batched: bool, autocast: bool
) -> tuple[float, Tensor]:
    """Seconds to caption every image of ``grid (B, N, D)``, in one call or one image per
    call, and the generated lengths ``(B,)``."""
    with (
        torch.inference_mode(),
        torch.autocast(grid.device.type, dtype=torch.bfloat16, enabled=autocast),
    ):
        start = clock(grid.device)
        if batched:
            lengths = search(decoder, grid).lengths
        else:
            single = [search(decoder, grid[i : i + 1]).lengths for i in range(len(grid))]
            lengths = torch.cat(single)
        return clock(grid.device) - start, lengths


def run_decoding(args: argparse.Namespace) -> dict[str, Any]:
    """Captions per second of every decoder, search and mode, in interleaved rounds."""
    device = torch.device(args.device)
    autocast = args.precision == "bf16-mixed"
    tokenizer = WordTokenizer([*SPECIALS, *(f"w{i}" for i in range(args.vocab_size - 4))])
    generator = torch.Generator().manual_seed(args.seed)
    grid = torch.rand(
        args.decode_batch, args.grid_positions, args.feature_dim, generator=generator
    ).to(device)
    decoders = {name: random_decoder(name, tokenizer, args) for name in args.decoders}
    searches = {
        ("greedy" if beam == 1 else f"beam{beam}"): searcher(beam, tokenizer, args.max_length)
        for beam in args.beams
    }
    cases = [
        (decoder, search, mode)
        for decoder in decoders
        for search in searches
        for mode in ("batched", "one_at_a_time")
    ]
    for decoder, search, _ in cases:
        time_decoding(decoders[decoder], grid[:2], searches[search], True, autocast)
    seconds: dict[tuple[str, str, str], list[float]] = {case: [] for case in cases}
    short = 0
    for round_index in range(args.decode_rounds):
        for case in cases if round_index % 2 == 0 else cases[::-1]:
            decoder, search, mode = case
            elapsed, lengths = time_decoding(
                decoders[decoder], grid, searches[search], mode == "batched", autocast
            )
            seconds[case].append(elapsed)
            short += int((lengths != args.max_length).sum())
    if short:
        raise RuntimeError(f"{short} captions ended before --max-length; the timing is unfair.")
    results: dict[str, Any] = {}
    for decoder in decoders:
        results[decoder] = {}
        for search in searches:
            entry: dict[str, Any] = {}
            for mode in ("batched", "one_at_a_time"):
                rates = [args.decode_batch / s for s in seconds[(decoder, search, mode)]]
                entry[mode] = {"captions_per_s": statistics.median(rates), "rounds": rates}
            entry["ratio"] = (
                entry["batched"]["captions_per_s"] / entry["one_at_a_time"]["captions_per_s"]
            )
            results[decoder][search] = entry
    return results


# Report -----------------------------------------------------------------------------------


def print_training(result: dict[str, Any]) -> None:
    """Steps/s of both sides, the extraction and the break-even."""
    config, extraction = result["config"], result["extraction"]
    print(
        f"training: {config['arch']} stages {config['stages']} ({config['grid'][0]}x"
        f"{config['grid'][1]}x{config['feature_dim']} grid), {config['decoder']['_target_']}, "
        f"batch {config['batch_size']}, {config['image_size']} px"
    )
    for name in ("uncached", "cached"):
        side = result[name]
        spread = f"{min(side['rounds']):.3f}-{max(side['rounds']):.3f}"
        print(f"  {name:<9}{side['steps_per_s']:>9.3f} steps/s  (rounds {spread})")
    paired = result["paired_speedup"]
    print(
        f"  speed-up {result['speedup']:.2f}x (paired {paired['median']:.2f}, "
        f"{paired['min']:.2f}-{paired['max']:.2f})"
    )
    break_even = result["break_even_epochs"]
    print(
        f"  extraction {extraction['seconds']:.2f} s for {extraction['images']} images "
        f"({extraction['images_per_s']:.1f} images/s); break-even after "
        f"{'never' if break_even is None else f'{break_even:.2f}'} epochs"
    )


def print_decoding(results: dict[str, Any], args: argparse.Namespace) -> None:
    """One line per decoder and search: captions/s batched and one at a time, and the ratio."""
    print(
        f"decoding: {args.decode_batch} grids of {args.grid_positions}x{args.feature_dim}, "
        f"{args.max_length} ids each, vocabulary {args.vocab_size}"
    )
    header = (
        f"{'decoder':<18}{'search':<8}{'batched cap/s':>15}{'one-by-one cap/s':>18}{'ratio':>8}"
    )
    print(header)
    print("-" * len(header))
    for decoder, searches in results.items():
        for search, entry in searches.items():
            print(
                f"{decoder:<18}{search:<8}{entry['batched']['captions_per_s']:>15.1f}"
                f"{entry['one_at_a_time']['captions_per_s']:>18.1f}{entry['ratio']:>8.2f}"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = base_parser(__doc__.split("\n\n")[0], ("training", "decoding"))
    parser.add_argument("--embed-dim", type=int, default=256, help="decoders' E")
    parser.add_argument("--hidden-size", type=int, default=512, help="decoders' H")
    parser.add_argument("--attention-dim", type=int, default=512, help="ShowAttendTell's A")
    training = parser.add_argument_group("training")
    training.add_argument("--arch", default="resnet50", help="the encoder's torchvision ResNet")
    training.add_argument("--stages", type=int, default=3, choices=(3, 4))
    training.add_argument("--decoder", default="show_attend_tell", choices=list(DECODERS))
    training.add_argument("--image-size", type=int, default=224)
    training.add_argument("--batch-size", type=int, default=16)
    training.add_argument("--num-workers", type=int, default=2, help="uncached loader's workers")
    training.add_argument(
        "--num-images", type=int, help="generated images (default: enough for one block)"
    )
    training.add_argument("--rounds", type=int, default=3, help="timed rounds per side")
    training.add_argument("--warmup", type=int, default=2, help="untimed steps per block")
    training.add_argument("--steps", type=int, default=20, help="timed steps per block")
    decoding = parser.add_argument_group("decoding")
    decoding.add_argument(
        "--decoders", nargs="+", choices=list(DECODERS), default=["show_attend_tell"]
    )
    decoding.add_argument(
        "--beams", nargs="+", type=int, default=[1, 3, 5], help="beam sizes (1: greedy)"
    )
    decoding.add_argument("--decode-batch", type=int, default=32, help="B, images per call")
    decoding.add_argument("--grid-positions", type=int, default=196, help="N")
    decoding.add_argument("--feature-dim", type=int, default=1024, help="D")
    decoding.add_argument("--vocab-size", type=int, default=10000, help="V")
    decoding.add_argument("--max-length", type=int, default=20, help="ids per caption")
    decoding.add_argument("--decode-rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available.")
    counts = (args.rounds, args.steps, args.batch_size, args.decode_batch, args.decode_rounds)
    if min(*counts, args.max_length, *args.beams) < 1:
        parser.error(
            "--rounds, --steps, --batch-size, --decode-batch, --decode-rounds, --max-length "
            "and --beams must be at least 1."
        )
    if min(args.warmup, args.num_workers) < 0:
        parser.error("--warmup and --num-workers must not be negative.")
    if args.vocab_size <= len(SPECIALS):
        parser.error(f"--vocab-size must exceed the {len(SPECIALS)} special tokens.")
    if args.num_images is not None and args.num_images < images_needed(args):
        parser.error(
            f"--num-images {args.num_images} is too few for one epoch of --warmup + --steps "
            f"batches; use at least {images_needed(args)}."
        )
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the parts, print their tables and write the JSON results."""
    args = parse_args(argv)
    set_threads(args.threads)
    # Lightning also notes the frozen encoder's modules in eval mode.
    quiet_lightning("module(s) in eval mode")
    info = {**machine_info(args.device, args.precision), "lightning": L.__version__}
    load_before = os.getloadavg()
    began = time.perf_counter()
    training: dict[str, Any] = {}
    decoding: dict[str, Any] = {}
    if "training" in args.parts:
        print(f"training: {args.rounds} rounds of {args.steps} steps per side ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="glimpse-bench-") as tmp:
            training = run_training(args, Path(tmp))
    if "decoding" in args.parts:
        print(f"decoding: {args.decode_rounds} rounds ...", flush=True)
        decoding = run_decoding(args)
    if torch.get_num_threads() != info["torch_threads"]:
        raise RuntimeError("The number of torch threads changed during the benchmark.")
    report = {
        "benchmark": "captioning: training with and without cached features, decoding",
        "machine": info,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "optimizer": {"name": "AdamW", **OPTIMIZER, "gradient_clip_val": GRADIENT_CLIP},
        "wall_seconds": time.perf_counter() - began,
        "training": training,
        "decoding": decoding,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if training:
        print_training(training)
    if decoding:
        print_decoding(decoding, args)
    print(f"{report['wall_seconds']:.0f} s in all; results in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

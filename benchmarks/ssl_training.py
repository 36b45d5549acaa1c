"""Self-supervised training throughput: BYOL and DINO as Lightning tasks against raw PyTorch loops.

For each method this script trains the same networks twice in one process and compares
training images per second (an image is one sample of the batch, whatever its number of views):

* **lightning**: the task (:class:`glimpse.tasks.byol.BYOL`, :class:`glimpse.tasks.dino.DINO`)
  built from ``conf/model/byol.yaml`` / ``conf/model/dino.yaml`` and fitted by a
  ``lightning.Trainer`` with what training needs and nothing else (no logger, checkpoints,
  progress bar, model summary or validation; the config's gradient clipping);
* **raw**: a plain PyTorch loop over copies of the task's initial networks doing the same
  computation, written here from the model modules: BYOL (Grill et al. 2020) runs each view
  through the online backbone, projector and predictor and through the target backbone and
  projector, :func:`~glimpse.models.ssl_losses.byol_symmetric_loss`, LARS; DINO (Caron et al.
  2021) runs the global pair and the local crops through the student backbone (one batch per
  crop size) and its head, the global pair through the teacher,
  :class:`~glimpse.models.ssl_losses.DINOLoss` with the centre update, each parameter's
  gradient clipped on its own, AdamW with the weight decay on its cosine. Both then take the
  EMA step of the teacher (:func:`~glimpse.models.momentum.ema_update_`, the cosine momentum)
  and step the warm-up + cosine learning rate; both use the config's optimizer, learning rate
  scaled with the batch, parameter groups (biases, norms and ``no_weight_decay()`` names
  neither decayed nor LARS-adapted) and precision (``torch.autocast`` with bfloat16 for
  ``bf16-mixed``).

What is left out of both sides, so that they compute the same numbers: the online linear probe,
stochastic depth (DINO's ViT-S has drop path 0.1 in the student; its random masks would differ)
and the freezing of DINO's last layer in the first epoch (a frozen 65536 x 256 layer is skipped
by AdamW, which would time a step unlike the rest of training). The batch is one fixed random
:class:`~glimpse.batches.MultiViewImages` already on the device, so the input pipeline is not
timed (``benchmarks/classification.py`` times it).

Sizes: by default small enough for a CPU (``--batch-size 8``, BYOL at 96 px, DINO 2 x 96 px +
6 x 48 px); ``--paper-sizes`` sets the papers' views (BYOL 2 x 224; DINO 2 x 224 + 10 x 96,
the ViT-S/16 recipe). The networks are the configs' (ResNet-18, ViT-S/16 with a 65536-prototype
head) unless ``--byol-arch``, ``--dino-backbone`` or the head options say otherwise.

Each block (one side, one method) starts from the initial weights with a fresh optimizer and
runs ``--warmup`` untimed steps and ``--steps`` timed ones; on the Lightning side a callback
reads the clock at the start of the first timed batch and the end of the last. After one
untimed block per side, ``--rounds`` rounds each time one block of both sides, in alternating
order. ``ratio`` is the median Lightning images/s over the median raw images/s (1.0: no
overhead); ``paired`` the median over rounds of raw time / Lightning time. The largest
difference between the two sides' losses shows that they trained the same way.

Run ``OMP_NUM_THREADS=2 python benchmarks/ssl_training.py --threads 2`` (or ``make bench-ssl``);
``--help`` lists the options. The results go to ``benchmarks/results/ssl.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from machine import base_parser, clock, machine_info, quiet_lightning, set_threads, timed_fit
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset

from glimpse.batches import MULTI_VIEW_IMAGES, MultiViewImages
from glimpse.data.spec import DataSpec
from glimpse.models.momentum import cosine_momentum, cosine_schedule, ema_update_
from glimpse.models.momentum import teacher_temperature as dino_teacher_temperature
from glimpse.models.ssl_losses import DINOLoss, byol_symmetric_loss
from glimpse.optim.lars import LARS
from glimpse.optim.param_groups import no_weight_decay_names
from glimpse.optim.schedules import warmup_cosine
from glimpse.tasks.byol import BYOL
from glimpse.tasks.dino import DINO

METHODS = ("byol", "dino")
CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
NUM_CLASSES = 10
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "ssl.json"
#: Views of ``--paper-sizes``: BYOL's two 224 px views; DINO's ViT-S/16 multi-crop.
PAPER_SIZES = {"byol_image_size": 224, "dino_global_size": 224, "dino_local_size": 96}
PAPER_LOCAL_CROPS = 10


@dataclass
class Block:
    """One timed block: seconds over the timed steps and the loss of every step."""

    seconds: float
    losses: list[float]


# Setup ------------------------------------------------------------------------------------


def recipe(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """The method's ``conf/model`` config (``model`` and ``trainer.gradient_clip_val``) with
    the benchmark's changes: no probe, figures, stochastic depth or frozen last layer, the
    backbone of ``--byol-arch`` (:func:`glimpse.models.resnet.resnet`, torchvision's
    initialisation) or ``--dino-backbone``, the head sizes, and ``--lr-warmup-steps``."""
    config = OmegaConf.to_container(OmegaConf.load(CONF / f"{method}.yaml"), resolve=True)
    model = dict(config["model"])
    model.pop("_target_")
    model.update(probe=None, figures=None)
    model["scheduler"] = {**model["scheduler"], "warmup_steps": args.lr_warmup_steps}
    if method == "byol":
        model["backbone"] = {
            "_target_": "glimpse.models.resnet.resnet",
            "arch": args.byol_arch,
            "zero_init_residual": False,
        }
        model["projector"] = {**model["projector"], "hidden_dim": args.byol_hidden_dim}
        model["predictor"] = {**model["predictor"], "hidden_dim": args.byol_hidden_dim}
    else:
        target = f"glimpse.models.vit.{args.dino_backbone}"
        model["backbone"] = {"_target_": target, "drop_path_rate": 0.0}
        model["head"] = {
            **model["head"],
            "out_dim": args.dino_out_dim,
            "hidden_dim": args.dino_hidden_dim,
        }
        model["freeze_last_layer"] = 0
    return {"model": model, "gradient_clip_val": config["trainer"]["gradient_clip_val"]}


def view_sizes(method: str, args: argparse.Namespace) -> list[int]:
    """The side of every view, global views first."""
    if method == "byol":
        return [args.byol_image_size] * 2
    return [args.dino_global_size] * 2 + [args.dino_local_size] * args.dino_local_crops


def fixed_batch(sizes: list[int], args: argparse.Namespace) -> MultiViewImages:
    """One seeded batch of N(0, 1) views ``(B, 3, S_v, S_v)`` and labels, on ``--device``."""
    generator = torch.Generator().manual_seed(args.seed)
    views = tuple(torch.randn(args.batch_size, 3, s, s, generator=generator) for s in sizes)
    labels = torch.randint(NUM_CLASSES, (args.batch_size,), generator=generator)
    device = torch.device(args.device)
    return MultiViewImages(tuple(v.to(device) for v in views), labels.to(device))


class RepeatedBatch(Dataset):
    """``length`` times the same batch (a DataLoader with ``batch_size=None`` yields it)."""

    def __init__(self, batch: MultiViewImages, length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> MultiViewImages:
        return self.batch


class FixedViewsDataModule(L.LightningDataModule):
    """Training batches of the multi-view kind: the fixed batch, ``length`` times per epoch."""

    KIND = MULTI_VIEW_IMAGES

    def __init__(self, batch: MultiViewImages, length: int) -> None:
        super().__init__()
        self.batch, self.length = batch, length
        self.batch_size = batch.labels.shape[0]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RepeatedBatch(self.batch, self.length), batch_size=None)


def make_task(method: str, model: dict[str, Any], image_size: int) -> BYOL | DINO:
    """The Lightning task of ``method`` from its benchmark recipe."""
    spec = DataSpec(
        kind=MULTI_VIEW_IMAGES,
        class_names=tuple(f"class{i}" for i in range(NUM_CLASSES)),
        image_size=image_size,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    task_class = BYOL if method == "byol" else DINO
    return task_class(spec=spec.to_dict(), **copy.deepcopy(model))


# The raw loop -----------------------------------------------------------------------------


class RawSSL:
    """The method's networks outside Lightning (copies of the task's initial ones) and one
    plain training step of them."""

    def __init__(self, method: str, task: BYOL | DINO, model: dict[str, Any], device) -> None:
        self.method, self.model = method, model
        self.student = copy.deepcopy(task.student).to(device)
        self.teacher = copy.deepcopy(task.teacher).to(device)
        trained = {"student": self.student}
        if method == "byol":
            self.predictor = copy.deepcopy(task.predictor).to(device)
            trained["predictor"] = self.predictor
        else:
            head = model["head"]
            self.criterion = DINOLoss(
                head["out_dim"],
                center_momentum=model["center_momentum"],
                student_temp=model["student_temp"],
            ).to(device)
        self.trained = nn.ModuleDict(trained)
        self.initial = copy.deepcopy(self.state())

    def state(self) -> dict[str, Any]:
        modules = {"trained": self.trained, "teacher": self.teacher}
        if self.method == "dino":
            modules["criterion"] = self.criterion
        return {name: module.state_dict() for name, module in modules.items()}

    def restore(self) -> None:
        """Back to the initial weights (and DINO's zero centre)."""
        self.trained.load_state_dict(self.initial["trained"])
        self.teacher.load_state_dict(self.initial["teacher"])
        if self.method == "dino":
            self.criterion.load_state_dict(self.initial["criterion"])

    def optimizer(self, batch_size: int) -> torch.optim.Optimizer:
        """The config's optimizer on the task's parameter groups, lr scaled with the batch."""
        settings = self.model["optimizer"]
        lr = float(settings["lr"])
        if settings.get("lr_batch_size"):
            lr *= batch_size / settings["lr_batch_size"]
        skip = no_weight_decay_names(self.trained)
        named = [(n, p) for n, p in self.trained.named_parameters() if p.requires_grad]
        decayed = [p for n, p in named if p.ndim >= 2 and n not in skip]
        rest = [p for n, p in named if p.ndim < 2 or n in skip]
        if settings["name"] == "lars":
            groups = [
                {"params": decayed, "weight_decay": settings["weight_decay"]},
                {"params": rest, "weight_decay": 0.0, "lars_adaptation": False},
            ]
            return LARS(
                groups,
                lr=lr,
                momentum=settings["momentum"],
                trust_coefficient=settings["trust_coefficient"],
            )
        groups = [
            {"params": decayed, "weight_decay": settings["weight_decay"]},
            {"params": rest, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(settings["betas"]))

    def loss(self, views: tuple[Tensor, ...]) -> Tensor:
        """The self-supervised loss of one batch (and DINO's centre update)."""
        if self.method == "byol":
            predictions, targets = [], []
            for view in views:
                predictions.append(
                    self.predictor(self.student["head"](self.student["backbone"](view)))
                )
                with torch.no_grad():
                    targets.append(self.teacher["head"](self.teacher["backbone"](view)))
            return byol_symmetric_loss(predictions[0], predictions[1], targets[0], targets[1])
        with torch.no_grad():
            teacher_out = self.teacher["head"](self.teacher["backbone"](torch.cat(views[:2])))
        features = [self.student["backbone"](torch.cat(views[:2]))]
        if len(views) > 2:
            features.append(self.student["backbone"](torch.cat(views[2:])))
        student_out = self.student["head"](torch.cat(features))
        schedule = self.model["teacher_temp"]
        temperature = dino_teacher_temperature(
            0, schedule["warmup_epochs"], schedule["start"], schedule["end"]
        )
        loss = self.criterion(student_out, teacher_out, temperature)
        self.criterion.update_center(teacher_out)
        return loss


def raw_block(
    raw: RawSSL, batch: MultiViewImages, steps: int, clip: float | None, args: argparse.Namespace
) -> Block:
    """Train from the initial weights for ``--warmup + steps`` steps as the task and trainer
    do; time the last ``steps``."""
    device = torch.device(args.device)
    total = args.warmup + steps
    raw.restore()
    raw.trained.train()
    raw.teacher.train()
    optimizer = raw.optimizer(batch.labels.shape[0])
    settings, schedule = raw.model["optimizer"], raw.model["scheduler"]
    scheduler = LambdaLR(
        optimizer,
        partial(
            warmup_cosine,
            warmup_steps=int(schedule["warmup_steps"]),
            total_steps=total,
            min_lr_ratio=float(schedule["min_lr_ratio"]),
        ),
    )
    parameters = [p for p in raw.trained.parameters() if p.requires_grad]
    autocast = args.precision == "bf16-mixed"
    losses: list[Tensor] = []
    start = 0.0
    for step in range(total):
        if step == args.warmup:
            start = clock(device)
        if settings.get("weight_decay_end") is not None:
            optimizer.param_groups[0]["weight_decay"] = cosine_schedule(
                step, total, settings["weight_decay"], settings["weight_decay_end"]
            )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = raw.loss(batch.views)
        optimizer.zero_grad()
        loss.backward()
        if clip:
            for p in parameters:
                if p.grad is not None:
                    nn.utils.clip_grad_norm_(p, clip)
        optimizer.step()
        ema_update_(
            raw.teacher, raw.student, cosine_momentum(step, total, raw.model["teacher_momentum"])
        )
        scheduler.step()
        losses.append(loss.detach())
    end = clock(device)
    return Block(end - start, [float(loss) for loss in losses])


def lightning_block(
    task: BYOL | DINO,
    initial: dict[str, Tensor],
    batch: MultiViewImages,
    steps: int,
    clip: float | None,
    args: argparse.Namespace,
    root: Path,
) -> Block:
    """Fit ``task`` from the ``initial`` state for ``--warmup + steps`` steps; time the last
    ``steps``."""
    task.load_state_dict(initial)
    datamodule = FixedViewsDataModule(batch, args.warmup + steps)
    timer = timed_fit(task, datamodule, args, steps, clip, root)
    return Block(timer.seconds, [float(loss) for loss in timer.losses])


def run_method(method: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Warm both sides up, time ``--rounds`` interleaved rounds and summarise them."""
    device = torch.device(args.device)
    settings = recipe(method, args)
    model, clip = settings["model"], settings["gradient_clip_val"]
    sizes = view_sizes(method, args)
    batch = fixed_batch(sizes, args)
    torch.manual_seed(args.seed)
    task = make_task(method, model, sizes[0]).to(device)
    initial = copy.deepcopy(task.state_dict())
    raw = RawSSL(method, task, model, device)
    sides = {
        "lightning": partial(
            lightning_block, task, initial, batch, clip=clip, args=args, root=root
        ),
        "raw": partial(raw_block, raw, batch, clip=clip, args=args),
    }
    for run in sides.values():
        run(1)
    blocks: dict[str, list[Block]] = {"lightning": [], "raw": []}
    for round_index in range(args.rounds):
        order = ("lightning", "raw") if round_index % 2 == 0 else ("raw", "lightning")
        for side in order:
            blocks[side].append(sides[side](args.steps))
    images = args.steps * args.batch_size
    result: dict[str, Any] = {
        "config": {
            "view_sizes": sizes,
            "batch_size": args.batch_size,
            "backbone": model["backbone"],
            "heads": {k: model[k] for k in ("projector", "predictor", "head") if k in model},
            "optimizer": model["optimizer"]["name"],
            "gradient_clip_val": clip,
            "parameters": sum(p.numel() for p in raw.trained.parameters()),
            "teacher_parameters": sum(p.numel() for p in raw.teacher.parameters()),
        }
    }
    for side, side_blocks in blocks.items():
        rates = [images / block.seconds for block in side_blocks]
        result[side] = {"images_per_s": statistics.median(rates), "rounds": rates}
    paired = [
        raw_block.seconds / lightning.seconds
        for lightning, raw_block in zip(blocks["lightning"], blocks["raw"], strict=True)
    ]
    result["ratio"] = result["lightning"]["images_per_s"] / result["raw"]["images_per_s"]
    result["paired_ratio"] = statistics.median(paired)
    result["paired_ratios"] = paired
    losses = [
        abs(a - b)
        for lightning, raw_side in zip(blocks["lightning"], blocks["raw"], strict=True)
        for a, b in zip(lightning.losses, raw_side.losses, strict=True)
    ]
    result["max_abs_loss_difference"] = max(losses)
    result["first_loss"] = blocks["raw"][0].losses[0]
    result["last_loss"] = blocks["raw"][0].losses[-1]
    if not all(torch.isfinite(torch.tensor(b.losses)).all() for b in blocks["raw"]):
        raise RuntimeError(f"{method}: the raw loop's loss is not finite; the timing is void.")
    if device.type == "cuda":
        result["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


# Report -----------------------------------------------------------------------------------


def print_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """One line per method: both throughputs, their ratio and the loss check."""
    print(f"{args.precision}, {args.device}, batch {args.batch_size}")
    header = (
        f"{'method':<7}{'views':<18}{'lightning img/s':>17}{'raw img/s':>11}{'ratio':>8}"
        f"{'paired':>8}{'max |dloss|':>13}"
    )
    print(header)
    print("-" * len(header))
    for name, result in results.items():
        sizes = result["config"]["view_sizes"]
        views = " + ".join(f"{sizes.count(s)}x{s}" for s in sorted(set(sizes), reverse=True))
        print(
            f"{name:<7}{views:<18}{result['lightning']['images_per_s']:>17.2f}"
            f"{result['raw']['images_per_s']:>11.2f}{result['ratio']:>8.3f}"
            f"{result['paired_ratio']:>8.3f}{result['max_abs_loss_difference']:>13.2e}"
        )
    print(
        "ratio = median lightning / median raw images/s; paired = median of raw / lightning time."
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = base_parser(__doc__.split("\n\n")[0], METHODS)
    parser.add_argument("--batch-size", type=int, default=8, help="images per step")
    parser.add_argument(
        "--paper-sizes",
        action="store_true",
        help="BYOL 2 x 224 px; DINO 2 x 224 + 10 x 96 px (overrides the size options)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per method")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per block")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per block")
    parser.add_argument(
        "--lr-warmup-steps", type=int, default=10, help="the schedule's warm-up steps"
    )
    byol = parser.add_argument_group("byol")
    byol.add_argument("--byol-arch", default="resnet18", help="torchvision ResNet name")
    byol.add_argument("--byol-image-size", type=int, default=96)
    byol.add_argument("--byol-hidden-dim", type=int, default=4096, help="projector/predictor")
    dino = parser.add_argument_group("dino")
    dino.add_argument("--dino-backbone", default="vit_small_patch16", help="glimpse.models.vit.*")
    dino.add_argument("--dino-global-size", type=int, default=96)
    dino.add_argument("--dino-local-size", type=int, default=48)
    dino.add_argument("--dino-local-crops", type=int, default=6)
    dino.add_argument("--dino-out-dim", type=int, default=65536, help="K prototypes")
    dino.add_argument("--dino-hidden-dim", type=int, default=2048, help="the head's MLP")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results")
    args = parser.parse_args(argv)
    if args.paper_sizes:
        vars(args).update(PAPER_SIZES, dino_local_crops=PAPER_LOCAL_CROPS)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available.")
    counts = (args.batch_size, args.rounds, args.steps, args.dino_out_dim)
    if min(counts) < 1 or min(args.warmup, args.dino_local_crops, args.lr_warmup_steps) < 0:
        parser.error(
            "--batch-size, --rounds, --steps and --dino-out-dim must be at least 1, --warmup, "
            "--dino-local-crops and --lr-warmup-steps at least 0."
        )
    if args.batch_size < 2:
        parser.error("--batch-size must be at least 2 (BatchNorm in training mode).")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every method, print the table and write the JSON results."""
    args = parse_args(argv)
    set_threads(args.threads)
    # Lightning also notes the validation the benchmark leaves out.
    quiet_lightning("but have no `val_dataloader`")
    info = {**machine_info(args.device, args.precision), "lightning": L.__version__}
    load_before = os.getloadavg()
    began = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="glimpse-bench-") as tmp:
        for method in args.parts:
            print(f"{method}: {args.rounds} rounds of {args.steps} steps per side ...", flush=True)
            results[method] = run_method(method, args, Path(tmp))
    if torch.get_num_threads() != info["torch_threads"]:
        raise RuntimeError("The number of torch threads changed during the benchmark.")
    report = {
        "benchmark": "ssl training images/s: BYOL and DINO, Lightning vs raw PyTorch",
        "machine": info,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "wall_seconds": time.perf_counter() - began,
        "methods": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(results, args)
    print(f"{report['wall_seconds']:.0f} s in all; results in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

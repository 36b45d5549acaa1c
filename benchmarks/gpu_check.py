"""The GPU path in one call: every method trained for a few steps under ``trainer=gpu``
(bf16-mixed), eager and compiled, against its reference, with the fast defaults, device
decoding and DDP, written as one JSON file and one markdown table.

Parts (``--parts``, all by default):

* **methods**: for each method of :mod:`gpu_cases` (char LSTM, char Transformer, ViT-S, DeiT-S,
  Swin-T, PVT-S, ResNet-50, Show-Attend-Tell, DETR-R50, BYOL, DINO, CLIP ViT-B/32 and ViT-B/16),
  its task built from the method's own config (``conf/model/*.yaml`` composed as ``train.py``
  composes it, with ``trainer=gpu``) and trained by a Lightning Trainer for ``--steps`` steps on
  a few fixed random batches of its kind: once eager and once with ``model.compile=true``
  (:mod:`glimpse.tasks.acceleration`; the compiled graphs of the case before are dropped
  first). Recorded: images or tokens per second over the steps after ``--warmup`` (so the
  compilation is not counted; ``wall_s`` counts it), peak GPU memory, the mean loss of the
  first and of the last three steps, and for ViT-B/16 and the char Transformer the model FLOP
  utilisation (:mod:`mfu`). The reference (a timm, torchvision or open_clip model of the same
  shape, or for the character models the same network) is trained by a plain PyTorch loop
  (bf16 autocast, AdamW, the batch copied to the device every step as Lightning does) for the
  same steps in the same process; ``vs_reference`` is ours over it. The eager runs and the
  references of every method come first, then the compiled runs, each only while the
  ``--budget-s`` lasts (a run skipped for time says so).
* **defaults**: :mod:`speed_defaults`, one ratio per fast default.
* **decode**: ``decode_device=cuda`` on a generated ImageFolder of photo-sized JPEGs: a
  ResNet classifier trained through Lightning with the batches decoded on the device (one
  ahead), against decoding in ``--workers`` DataLoader workers; and the ``prefetch`` line of
  :mod:`speed_defaults` on the same folder.
* **ddp**: with two or more GPUs, ``python train.py model=transformer trainer=ddp
  trainer.devices=2`` for ``--steps`` steps, in a subprocess from the repository root, as a
  user runs it (with ``--device cpu``, ``trainer=ddp_cpu``).

``--device cpu`` runs the same script with the test-sized networks of :mod:`gpu_cases`,
``trainer=cpu`` (float32), and the ``aot_eager`` backend, which traces and differentiates the
same graphs as inductor without generating kernels: a few minutes on two cores, so that the
script keeps working without a GPU (tests/test_benchmarks.py runs it).

Run ``make gpu-check`` (``python benchmarks/gpu_check.py``); ``--help`` lists the options. The
results go to ``benchmarks/results/gpu_check.json`` and ``gpu_check.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch._dynamo
from gpu_cases import CASES, Case
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning_utilities.core.apply_func import apply_to_collection
from machine import StepTimer, clock, machine_info, quiet_lightning, set_threads
from mfu import mfu, peak_bf16_flops, step_flops
from omegaconf import DictConfig, open_dict
from speed_defaults import LINES, LineSettings, prefetched_decoding
from torch.utils.data import DataLoader

from glimpse.tasks.acceleration import CompileSettings, build_task, prepare_for_device
from glimpse.utils.run_dir import register_resolvers

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PARTS = ("methods", "defaults", "decode", "ddp")


# Running a method ----------------------------------------------------------------------------


def compose_run(overrides: list[str], output_dir: Path) -> DictConfig:
    """conf/train.yaml composed as ``python train.py <overrides>`` composes it, with its run
    folder at ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def keep(batch: Any) -> Any:
    return batch


def batch_size(batch: Any) -> int:
    """Examples in a batch: the first dimension of its first tensor."""
    first = batch[0]
    while isinstance(first, (tuple, list)):
        first = first[0]
    return int(first.shape[0])


class FixedBatches(L.LightningDataModule):
    """``steps`` batches: the case's few batches, over and over."""

    def __init__(self, batches: list[Any], steps: int) -> None:
        super().__init__()
        self.batches = [batches[i % len(batches)] for i in range(steps)]
        self.batch_size = batch_size(batches[0])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, batch_size=None, collate_fn=keep)


def mean_of(values: list[float]) -> float:
    return float(statistics.fmean(values)) if values else float("nan")


def loss_record(losses: list[float]) -> dict[str, Any]:
    first, last = mean_of(losses[:3]), mean_of(losses[-3:])
    return {"loss_first": first, "loss_last": last, "loss_went_down": last < first}


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def trainer_overrides(args: argparse.Namespace) -> list[str]:
    return ["trainer=gpu" if args.device == "cuda" else "trainer=cpu", "logger=csv"]


def bare_trainer(cfg: DictConfig, steps: int, root: Path, timer: StepTimer) -> L.Trainer:
    """The config's Trainer (``trainer=gpu``: bf16-mixed, the method's gradient clipping) for
    ``steps`` steps without validation, logger, checkpoints or progress bar."""
    return instantiate(
        cfg.trainer,
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[timer],
    )


def run_task(case: Case, compiled: bool, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Train the case's task for ``--steps`` steps (module docstring) and measure it."""
    device = torch.device(args.device)
    cfg = compose_run([*case.overrides, *trainer_overrides(args)], root)
    task = build_task(cfg.model, case.spec.to_dict())
    timer = StepTimer(args.warmup, args.steps - 1, device)
    trainer = bare_trainer(cfg, args.steps, root, timer)
    settings = CompileSettings(enabled=compiled, mode=args.mode, backend=args.backend)
    if compiled:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
    prepare_for_device(task, trainer.strategy.root_device, settings)
    result: dict[str, Any] = {}
    if case.flops_of is not None:
        result["flops_per_step"] = count_flops(case, task, device)
    reset_memory(device)
    started = time.perf_counter()
    torch.manual_seed(0)
    trainer.fit(task, datamodule=FixedBatches(case.batches, args.steps))
    timed = args.steps - args.warmup
    result.update(
        per_s=timed * case.examples / timer.seconds,
        step_ms=1000 * timer.seconds / timed,
        wall_s=time.perf_counter() - started,
        peak_memory_gib=peak_memory_gib(device),
        **loss_record([float(loss) for loss in timer.losses]),
    )
    if compiled:
        result["graphs"] = int(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    return result


def count_flops(case: Case, task: L.LightningModule, device: torch.device) -> int:
    """FLOPs of one training step of the task's eager network (before it trains)."""
    net = copy.deepcopy(task.net).to(device)
    batch = to_device(case.batches[0], device)
    with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        return step_flops(lambda: case.flops_of(net, batch))


def to_device(batch: Any, device: torch.device) -> Any:
    return apply_to_collection(batch, torch.Tensor, lambda t: t.to(device, non_blocking=True))


def run_reference(case: Case, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The case's reference in a plain loop on the same batches (module docstring)."""
    device = torch.device(args.device)
    reference = case.reference
    if reference.build is None:
        cfg = compose_run([*case.overrides, *trainer_overrides(args)], root)
        model = build_task(cfg.model, case.spec.to_dict()).net
    else:
        torch.manual_seed(0)
        model = reference.build()
    model = model.to(device).train()
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda or None)
    losses: list[torch.Tensor] = []
    reset_memory(device)
    start = 0.0
    for step in range(args.steps):
        if step == args.warmup:
            start = clock(device)
        batch = to_device(case.batches[step % len(case.batches)], device)
        with torch.autocast(device.type, torch.bfloat16, enabled=cuda):
            loss = reference.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    seconds = clock(device) - start
    timed = args.steps - args.warmup
    return {
        "name": reference.name,
        "per_s": timed * case.examples / seconds,
        "peak_memory_gib": peak_memory_gib(device),
        **loss_record([float(loss) for loss in losses]),
    }


def guarded(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()``, or its error as one line (with the traceback on stderr), so that one broken
    method does not hide the others."""
    try:
        return run()
    except Exception as error:  # noqa: BLE001 - a check reports every failure and goes on
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {error}"}


def run_methods(args: argparse.Namespace, began: float, root: Path) -> dict[str, Any]:
    """Eager runs and references of every method, then the compiled runs, within the budget."""
    gpu = args.device == "cuda"
    cases = {name: CASES[name](gpu) for name in args.methods}
    results: dict[str, Any] = {}
    for name, case in cases.items():
        print(f"{name}: eager and reference ...", flush=True)
        entry: dict[str, Any] = {"title": case.title, "unit": case.unit, "notes": case.notes}
        entry["eager"] = guarded(
            lambda case=case, name=name: run_task(case, False, args, root / name)
        )
        if case.reference is not None:
            entry["reference"] = guarded(
                lambda case=case, name=name: run_reference(case, args, root / name)
            )
        else:
            entry["reference"] = {"none": case.no_reference}
        results[name] = entry
    for name, case in cases.items():
        if args.budget_s is not None and time.perf_counter() - began > args.budget_s:
            results[name]["compiled"] = {
                "skipped": f"the --budget-s of {args.budget_s} s was spent"
            }
            continue
        print(f"{name}: compiled ...", flush=True)
        results[name]["compiled"] = guarded(
            lambda case=case, name=name: run_task(case, True, args, root / f"{name}_compiled")
        )
    peak = peak_bf16_flops(torch.cuda.get_device_name() if gpu else "cpu")
    for entry in results.values():
        summarise(entry, peak)
    return results


def summarise(entry: dict[str, Any], peak: float | None) -> None:
    """Ratios and MFU of a method's runs, where the runs finished."""
    eager, compiled, reference = entry["eager"], entry.get("compiled", {}), entry["reference"]
    if "per_s" in eager and "per_s" in compiled:
        entry["compiled_vs_eager"] = compiled["per_s"] / eager["per_s"]
    for side in ("eager", "compiled"):
        run = entry.get(side, {})
        if "per_s" in run and "per_s" in reference:
            run["vs_reference"] = run["per_s"] / reference["per_s"]
        if "flops_per_step" in eager and "step_ms" in run:
            run["mfu"] = mfu(eager["flops_per_step"], 1000 / run["step_ms"], peak)


# The other parts ------------------------------------------------------------------------------


def line_settings(args: argparse.Namespace) -> LineSettings:
    return LineSettings(warmup=2, steps=args.line_steps, rounds=args.rounds, workers=args.workers)


def run_defaults(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    settings = line_settings(args)
    results = {}
    for name, line in LINES.items():
        print(f"defaults: {name} ...", flush=True)
        results[name] = guarded(lambda line=line: line(device, device.type == "cuda", settings))
    return results


def run_decode(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """``decode_device=cuda`` through Lightning against CPU workers, and the prefetch line."""
    from classification import write_jpegs

    from glimpse.data.images.image_folder import ImageFolderDataModule

    gpu = args.device == "cuda"
    batch, size, batches = (64, 224, 8) if gpu else (4, 32, 3)
    jpegs = root / "jpegs"
    write_jpegs(jpegs, batch * batches, (500, 375) if gpu else (80, 60), seed=0)
    overrides = ["data=imagefolder", "model=resnet", f"model.net.arch={resnet_arch(gpu)}"]
    steps = max(args.steps, args.warmup + 2)
    results: dict[str, Any] = {"images": batch * batches, "batch_size": batch}
    for decode_device, workers in (("cuda", 0), ("cpu", args.workers)):
        label = f"decode_{decode_device}_workers_{workers}"
        print(f"decode: {label} ...", flush=True)

        def fit(
            decode_device: str = decode_device, workers: int = workers, label: str = label
        ) -> dict[str, Any]:
            datamodule = ImageFolderDataModule(
                jpegs,
                image_size=size,
                batch_size=batch,
                num_workers=workers,
                verify=False,
                decode_device=decode_device,
            )
            datamodule.setup("fit")
            cfg = compose_run([*overrides, *trainer_overrides(args)], root / label)
            task = build_task(cfg.model, datamodule.spec.to_dict())
            timer = StepTimer(args.warmup, steps - 1, torch.device(args.device))
            trainer = bare_trainer(cfg, steps, root / label, timer)
            prepare_for_device(task, trainer.strategy.root_device, CompileSettings())
            trainer.fit(task, datamodule=datamodule)
            return {"images_per_s": (steps - args.warmup) * batch / timer.seconds}

        results[label] = guarded(fit)
    print("decode: prefetch ...", flush=True)
    device = torch.device(args.device)
    results["prefetch"] = guarded(
        lambda: prefetched_decoding(device, gpu, line_settings(args), jpegs, batch, size)
    )
    return results


def resnet_arch(gpu: bool) -> str:
    return "resnet50" if gpu else "resnet18"


def run_ddp(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """``train.py`` under DDP in a subprocess (module docstring)."""
    gpu = args.device == "cuda"
    if gpu and torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU: DDP needs 2"}
    command = [
        sys.executable,
        "train.py",
        "model=transformer",
        "trainer=ddp" if gpu else "trainer=ddp_cpu",
        "trainer.devices=2",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.steps}",
        "trainer.limit_val_batches=2",
        "test=false",
        "logger=csv",
        "model.samples=null",
        f"paths.log_dir={root / 'ddp_logs'}",
    ]
    if not gpu:
        command += ["model.net.dim=32", "model.net.num_layers=1", "data.seq_len=32"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    result = {"command": " ".join(command[1:]), "returncode": done.returncode}
    result["wall_s"] = time.perf_counter() - started
    if done.returncode != 0:
        result["error"] = done.stderr[-2000:]
    return result


# The report -----------------------------------------------------------------------------------


def number(value: Any, digits: int = 1) -> str:
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return "-"


def run_cell(run: dict[str, Any]) -> str:
    if "per_s" in run:
        return number(run["per_s"])
    if "error" in run:
        return "error"
    return "skipped" if "skipped" in run else "-"


def markdown(report: dict[str, Any]) -> str:
    """The tables of the JSON report."""
    machine = report["machine"]
    lines = [
        f"# gpu_check on {machine['device_name']} ({report['date']})",
        "",
        f"torch {machine['torch']}, {machine['precision']}, compile backend "
        f"{report['settings']['backend']}, {report['settings']['steps']} steps "
        f"({report['settings']['warmup']} untimed).",
        "",
    ]
    methods = report.get("methods")
    if methods:
        lines += [
            "| method | unit/s | eager | compiled | compiled/eager | reference | reference/s | "
            "eager/ref | compiled/ref | peak GiB eager/compiled | loss first -> last | MFU "
            "eager/compiled |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for entry in methods.values():
            eager, compiled, ref = entry["eager"], entry.get("compiled", {}), entry["reference"]
            memory = " / ".join(number(run.get("peak_memory_gib"), 2) for run in (eager, compiled))
            loss = f"{number(eager.get('loss_first'), 3)} -> {number(eager.get('loss_last'), 3)}"
            mfu_cell = "-"
            if eager.get("mfu") is not None or compiled.get("mfu") is not None:
                mfu_cell = f"{number(eager.get('mfu'), 3)} / {number(compiled.get('mfu'), 3)}"
            lines.append(
                f"| {entry['title']} | {entry['unit']} | {run_cell(eager)} | {run_cell(compiled)} "
                f"| {number(entry.get('compiled_vs_eager'), 2)} | {ref.get('name', 'none')} "
                f"| {run_cell(ref)} | {number(eager.get('vs_reference'), 2)} "
                f"| {number(compiled.get('vs_reference'), 2)} | {memory} | {loss} | {mfu_cell} |"
            )
        lines.append("")
    defaults = report.get("defaults")
    if defaults:
        lines += ["| default | unit/s with it | without | ratio |", "|---|---|---|---|"]
        for name, line in defaults.items():
            if "ratio" in line:
                lines.append(
                    f"| {name} | {number(line['default'], 2)} {line['unit']} "
                    f"| {number(line['replaced'], 2)} | {number(line['ratio'], 2)} |"
                )
            else:
                lines.append(f"| {name} | {line.get('skipped') or line.get('error')} | | |")
        lines.append("")
    decode = report.get("decode")
    if decode:
        lines += ["| decoding | images/s |", "|---|---|"]
        for name, value in decode.items():
            if isinstance(value, dict) and "images_per_s" in value:
                lines.append(f"| {name} | {number(value['images_per_s'])} |")
        prefetch_line = decode.get("prefetch", {})
        if "ratio" in prefetch_line:
            lines.append(
                f"| prefetch vs decoding on demand | ratio {number(prefetch_line['ratio'], 2)} |"
            )
        lines.append("")
    ddp = report.get("ddp")
    if ddp:
        outcome = (
            ddp.get("skipped") or f"exit {ddp.get('returncode')} in {number(ddp.get('wall_s'))} s"
        )
        lines += [f"DDP: {outcome}", ""]
    return "\n".join(lines)


def failures(report: dict[str, Any]) -> list[str]:
    """Every run that raised, as ``part/name``."""
    found = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "error" in node:
                found.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")

    walk({k: v for k, v in report.items() if k in PARTS}, "")
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--methods", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--steps", type=int, help="training steps per run (30; 6 on the CPU)")
    parser.add_argument(
        "--warmup", type=int, help="untimed first steps of a run (10; 2 on the CPU)"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        help="seconds after which compiled runs are skipped (420 on a GPU, none on the CPU)",
    )

    parser.add_argument("--backend", help="torch.compile backend (inductor; aot_eager on the CPU)")
    parser.add_argument("--mode", default="default", help="torch.compile mode")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of CPU decoding")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each default's line")
    parser.add_argument("--line-steps", type=int, default=10, help="timed steps of a line's side")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=RESULTS / "gpu_check.json")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device is available; --device cpu runs the CPU mode.")
    gpu = args.device == "cuda"
    args.steps = args.steps or (30 if gpu else 6)
    args.warmup = (10 if gpu else 2) if args.warmup is None else args.warmup
    if args.budget_s is None and gpu:
        args.budget_s = 420.0
    if not 0 <= args.warmup < args.steps:
        parser.error("--warmup must be at least 0 and less than --steps.")
    args.backend = args.backend or ("inductor" if args.device == "cuda" else "aot_eager")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    quiet_lightning("but have no `val_dataloader`", "is smaller than the logging interval")
    register_resolvers()
    began = time.perf_counter()
    precision = "bf16-mixed" if args.device == "cuda" else "32-true"
    report: dict[str, Any] = {
        "benchmark": "gpu_check: every method eager and compiled, fast defaults, decoding, DDP",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(args.device, precision),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    with tempfile.TemporaryDirectory(prefix="glimpse-gpu-check-") as tmp:
        root = Path(tmp)
        if "methods" in args.parts:
            report["methods"] = run_methods(args, began, root)
        if "defaults" in args.parts:
            report["defaults"] = run_defaults(args)
        if "decode" in args.parts:
            report["decode"] = run_decode(args, root)
        if "ddp" in args.parts:
            report["ddp"] = guarded(lambda: run_ddp(args, root))
    report["wall_seconds"] = time.perf_counter() - began
    report["failures"] = failures(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown(report)
    args.output.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    print(table)
    print(f"{report['wall_seconds']:.0f} s in all; results in {args.output} and .md")
    if report["failures"]:
        print(f"failed: {', '.join(report['failures'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

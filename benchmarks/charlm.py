"""Lightning's overhead on character language model training: tokens per second, side by side.

For each case (the scratch LSTM, the fused LSTM and the character Transformer) this script
trains the same network twice in one process and compares their throughput:

* **lightning**: :class:`glimpse.tasks.char_lm.CharLanguageModelTask` fitted by a
  ``lightning.Trainer`` on :class:`glimpse.data.text.char_text.CharTextDataModule`, with what a
  training run needs and nothing else (no logger, checkpoints, progress bar, model summary,
  validation or text samples; ``gradient_clip_val=1.0`` as in ``conf/trainer/default.yaml``);
* **raw**: a plain PyTorch loop over the same network (a copy of the task's initial weights),
  the same batches (a second datamodule on the same text, iterated in the same order with the
  same seed), the same optimizer (:func:`~glimpse.optim.settings.build_optimizer` on
  :func:`~glimpse.optim.param_groups.decay_groups` with a ``LambdaLR`` over
  :func:`~glimpse.optim.schedules.warmup_cosine`, stepped every step), the same
  gradient clipping (``clip_grad_norm_`` at 1.0), the same precision (``torch.autocast`` with
  bfloat16 for ``bf16-mixed``) and, for the LSTMs, the same truncated BPTT (the recurrent
  state is carried from batch to batch and detached in between).

Each block (one side, one case) starts from the initial weights, a fresh optimizer and the
same seed, runs ``--warmup`` untimed steps and then ``--steps`` timed ones. Only the steps are
timed: on the Lightning side a callback reads ``time.perf_counter()`` at ``on_train_batch_start``
of the first timed step and at ``on_train_batch_end`` of the last one, so trainer setup and
teardown are excluded; on the raw side the clock starts once the first timed batch is on the
device and stops after the last optimizer step (CUDA is synchronised at both ends). After one
untimed warm-up block per side, ``--rounds`` rounds each time one block of both sides, in
alternating order, so that load from other processes falls on both alike. Throughput is
``steps * batch_size * seq_len / seconds`` characters per second; the reported ratio is the
median Lightning throughput over the median raw one (1.0 = no overhead; the target is 0.95),
and the paired ratio is the median over rounds of raw time over Lightning time in each round.
Both sides record their losses, and the largest difference between them shows that they did
the same computation.

Run ``python benchmarks/charlm.py`` (or ``make bench``); ``--help`` lists the options. The
results go to ``benchmarks/results/charlm.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from machine import clock, machine_info, quiet_lightning, timed_fit
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR

from glimpse.data.text.char_text import CharTextDataModule
from glimpse.data.text.corpora import python_stdlib_text
from glimpse.models.char_rnn import detach_state
from glimpse.optim.param_groups import decay_groups
from glimpse.optim.schedules import warmup_cosine
from glimpse.optim.settings import OptimizerSettings, build_optimizer
from glimpse.tasks.char_lm import CharLanguageModelTask

#: The overhead the framework may add: Lightning's throughput should be at least this
#: fraction of the raw loop's.
TARGET_RATIO = 0.95
#: ``trainer.gradient_clip_val`` of conf/trainer/default.yaml.
GRADIENT_CLIP = 1.0
#: Optimizer and schedule of conf/model/lstm.yaml and conf/model/transformer.yaml.
LSTM_OPTIMIZER = {"lr": 3.0e-3, "weight_decay": 0.01, "betas": [0.9, 0.99]}
TRANSFORMER_OPTIMIZER = {"lr": 1.0e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]}
SCHEDULER = {"warmup_steps": 100, "min_lr_ratio": 0.1}
CASE_NAMES = ("lstm-scratch", "lstm-fused", "transformer")
DEFAULT_RESULTS = Path(__file__).resolve().parent / "results" / "charlm.json"


@dataclass(frozen=True)
class Case:
    """One model to benchmark: its net config (a Hydra ``_target_`` dict), data batching,
    optimizer and schedule, and the number of timed steps per block."""

    name: str
    net: dict[str, Any]
    batching: str
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    steps: int


@dataclass
class Block:
    """One timed block: seconds over the timed steps and the loss of every step."""

    seconds: float
    losses: list[float]


def build_cases(args: argparse.Namespace) -> list[Case]:
    """The cases named by ``--cases``, sized by the command-line options."""
    lstm = {
        "_target_": "glimpse.models.char_rnn.CharRNN",
        "cell": "lstm",
        "embedding_dim": args.lstm_embedding,
        "hidden_size": args.lstm_hidden,
        "num_layers": args.lstm_layers,
        "dropout": 0.0,
    }
    transformer = {
        "_target_": "glimpse.models.char_transformer.CharTransformer",
        "block_size": args.seq_len,
        "dim": args.transformer_dim,
        "num_layers": args.transformer_layers,
        "num_heads": args.transformer_heads,
        "dropout": 0.0,
    }
    cases = {
        "lstm-scratch": Case(
            "lstm-scratch",
            {**lstm, "impl": "scratch"},
            "stream",
            LSTM_OPTIMIZER,
            SCHEDULER,
            args.steps or args.scratch_steps,
        ),
        "lstm-fused": Case(
            "lstm-fused",
            {**lstm, "impl": "fused"},
            "stream",
            LSTM_OPTIMIZER,
            SCHEDULER,
            args.steps or args.fused_steps,
        ),
        "transformer": Case(
            "transformer",
            transformer,
            "windows",
            TRANSFORMER_OPTIMIZER,
            SCHEDULER,
            args.steps or args.transformer_steps,
        ),
    }
    return [cases[name] for name in args.cases]


def make_datamodule(
    case: Case, args: argparse.Namespace, corpus: Path | None
) -> CharTextDataModule:
    """The project's datamodule on the benchmark corpus (``corpus=None``: all of pystdlib),
    set up for fitting."""
    datamodule = CharTextDataModule(
        corpus="text" if corpus else "pystdlib",
        path=str(corpus) if corpus else None,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        batching=case.batching,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def lightning_block(
    task: CharLanguageModelTask,
    datamodule: CharTextDataModule,
    initial: dict[str, Tensor],
    steps: int,
    args: argparse.Namespace,
    root: Path,
) -> Block:
    """Fit ``task`` from the ``initial`` weights for ``--warmup + steps`` steps; time the last
    ``steps``."""
    task.net.load_state_dict(initial)
    timer = timed_fit(task, datamodule, args, steps, GRADIENT_CLIP, root)
    return Block(timer.seconds, [float(loss) for loss in timer.losses])


def raw_block(
    net: nn.Module,
    datamodule: CharTextDataModule,
    case: Case,
    initial: dict[str, Tensor],
    steps: int,
    args: argparse.Namespace,
) -> Block:
    """Train ``net`` from the ``initial`` weights with a plain loop for ``--warmup + steps``
    steps, as the task and trainer do; time the last ``steps``."""
    device = torch.device(args.device)
    total = args.warmup + steps
    net.load_state_dict(initial)
    net.train()
    settings = OptimizerSettings.from_config(case.optimizer)
    optimizer = build_optimizer(decay_groups(net, settings.weight_decay), settings, settings.lr)
    scheduler = LambdaLR(
        optimizer,
        partial(
            warmup_cosine,
            warmup_steps=int(case.scheduler["warmup_steps"]),
            total_steps=total,
            min_lr_ratio=float(case.scheduler["min_lr_ratio"]),
        ),
    )
    carries_state = case.batching == "stream"
    autocast = args.precision == "bf16-mixed"
    torch.manual_seed(args.seed)
    batches = iter(datamodule.train_dataloader())
    state = None
    losses: list[Tensor] = []
    start = 0.0
    for step in range(total):
        inputs, targets = (t.to(device, non_blocking=True) for t in next(batches))
        if step == args.warmup:
            start = clock(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits, state = net(inputs, state if carries_state else None)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)
            )
        state = detach_state(state)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), GRADIENT_CLIP)
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach())
    end = clock(device)
    return Block(end - start, [float(loss) for loss in losses])


def run_case(
    case: Case, args: argparse.Namespace, corpus: Path | None, root: Path
) -> dict[str, Any]:
    """Warm both sides up, time ``--rounds`` interleaved rounds and summarise them."""
    device = torch.device(args.device)
    lightning_data = make_datamodule(case, args, corpus)
    raw_data = make_datamodule(case, args, corpus)
    available = len(raw_data.train_dataloader())
    if available < args.warmup + case.steps:
        raise SystemExit(
            f"{case.name}: the training split holds {available} batches per epoch, fewer than "
            f"--warmup + steps = {args.warmup + case.steps}; raise --corpus-chars."
        )
    torch.manual_seed(args.seed)
    task = CharLanguageModelTask(
        spec=lightning_data.spec.to_dict(),
        net=case.net,
        optimizer=case.optimizer,
        scheduler=case.scheduler,
        samples=None,
    )
    initial = {k: v.detach().clone() for k, v in task.net.state_dict().items()}
    net = instantiate(case.net, vocab_size=len(lightning_data.vocab)).to(device)
    sides = {
        "lightning": partial(lightning_block, task, lightning_data, initial, args=args, root=root),
        "raw": partial(raw_block, net, raw_data, case, initial, args=args),
    }
    for run in sides.values():
        run(args.warmup)
    blocks: dict[str, list[Block]] = {"lightning": [], "raw": []}
    for round_index in range(args.rounds):
        order = ("lightning", "raw") if round_index % 2 == 0 else ("raw", "lightning")
        for side in order:
            blocks[side].append(sides[side](case.steps))
    tokens = case.steps * args.batch_size * args.seq_len
    result: dict[str, Any] = {
        "config": {
            **asdict(case),
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "warmup": args.warmup,
            "tokens_per_block": tokens,
            "parameters": sum(p.numel() for p in net.parameters()),
            "vocab_size": len(lightning_data.vocab),
        }
    }
    for side, side_blocks in blocks.items():
        rates = [tokens / block.seconds for block in side_blocks]
        result[side] = {"tokens_per_s": statistics.median(rates), "rounds": rates}
    paired = [
        raw.seconds / lightning.seconds
        for lightning, raw in zip(blocks["lightning"], blocks["raw"], strict=True)
    ]
    result["ratio"] = result["lightning"]["tokens_per_s"] / result["raw"]["tokens_per_s"]
    result["paired_ratio"] = statistics.median(paired)
    result["paired_ratios"] = paired
    result["meets_target"] = result["ratio"] >= TARGET_RATIO
    result["max_abs_loss_difference"] = max(
        abs(a - b)
        for lightning, raw in zip(blocks["lightning"], blocks["raw"], strict=True)
        for a, b in zip(lightning.losses, raw.losses, strict=True)
    )
    return result


def print_table(cases: dict[str, dict[str, Any]]) -> None:
    """One line per case: both throughputs, their ratio and the loss check."""
    header = (
        f"{'case':<14}{'steps':>6}{'lightning tok/s':>17}{'raw tok/s':>11}{'ratio':>8}"
        f"{'paired':>8}{'max |dloss|':>13}"
    )
    print(header)
    print("-" * len(header))
    for name, result in cases.items():
        print(
            f"{name:<14}{result['config']['steps']:>6}"
            f"{result['lightning']['tokens_per_s']:>17.0f}{result['raw']['tokens_per_s']:>11.0f}"
            f"{result['ratio']:>8.3f}{result['paired_ratio']:>8.3f}"
            f"{result['max_abs_loss_difference']:>13.2e}"
        )
    print(f"ratio = median lightning / median raw throughput (target >= {TARGET_RATIO});")
    print("paired = median over rounds of raw time / lightning time.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--cases", nargs="+", choices=CASE_NAMES, default=list(CASE_NAMES))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed"))
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per block")
    parser.add_argument("--steps", type=int, help="timed steps per block for every case")
    parser.add_argument("--scratch-steps", type=int, default=25, help="timed steps, lstm-scratch")
    parser.add_argument("--fused-steps", type=int, default=60, help="timed steps, lstm-fused")
    parser.add_argument(
        "--transformer-steps", type=int, default=60, help="timed steps, transformer"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--lstm-embedding", type=int, default=64)
    parser.add_argument("--lstm-hidden", type=int, default=256)
    parser.add_argument("--lstm-layers", type=int, default=2)
    parser.add_argument("--transformer-dim", type=int, default=128)
    parser.add_argument("--transformer-layers", type=int, default=4)
    parser.add_argument("--transformer-heads", type=int, default=4)
    parser.add_argument(
        "--corpus-chars",
        type=int,
        default=1_000_000,
        help="train on the first N characters of the pystdlib corpus (0: all of it)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS, help="JSON results")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available.")
    if min(args.rounds, args.warmup, args.steps or 1) < 1:
        parser.error("--rounds, --warmup and --steps must be at least 1.")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every case, print the table and write the JSON results."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Lightning also warns that an IterableDataset has __len__.
    quiet_lightning("Your `IterableDataset` has `__len__`")
    info = {**machine_info(args.device, args.precision), "lightning": L.__version__}
    began = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="glimpse-bench-") as tmp:
        root = Path(tmp)
        corpus = None
        if args.corpus_chars:
            corpus = root / "corpus.txt"
            corpus.write_text(python_stdlib_text()[: args.corpus_chars], encoding="utf-8")
        for case in build_cases(args):
            print(f"{case.name}: {args.rounds} rounds of {case.steps} steps per side ...")
            results[case.name] = run_case(case, args, corpus, root)
    if torch.get_num_threads() != info["torch_threads"]:
        raise RuntimeError("The number of torch threads changed during the benchmark.")
    report = {
        "benchmark": "charlm training throughput, Lightning vs raw PyTorch",
        "target_ratio": TARGET_RATIO,
        "machine": info,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "wall_seconds": time.perf_counter() - began,
        "cases": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(results)
    print(f"{report['wall_seconds']:.0f} s in all; results in {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

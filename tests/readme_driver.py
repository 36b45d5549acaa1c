"""Run the README's commands one after another in this process, from the working directory (a
copy of the repository root), as ``python <script> <words>`` would: ``sys.argv`` set, the script
run as ``__main__``, its exit status caught. One process for all of them saves the start-up of
torch and Lightning per command; each command still composes its config from scratch.

    python readme_driver.py plan.json results.json

``plan.json`` lists ``{"id", "page", "words", "compose_only"}``; ``PATH`` in a word is replaced
by the checkpoint of the page's latest training command, ``logs/train/multiruns/SWEEP`` by the
sweep folder of its latest sweep. Each result is ``{"id", "argv",
"returncode", "stdout", "stderr", "seconds"}``, and ``"same_as"`` for a command shown (and run)
before, on another page.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import runpy
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

import torch
from hydra.core.global_hydra import GlobalHydra

import glimpse.utils.run_dir as run_dir

PLACEHOLDER = "PATH"
RUN_PLACEHOLDER = "logs/train/runs/<run>/checkpoints/last.ckpt"
SWEEP_PLACEHOLDER = "logs/train/multiruns/SWEEP"


def newest_checkpoint(since: float) -> Path | None:
    """The ``last.ckpt`` of the newest training run folder (``logs/<task name>/``, any but
    eval's) written after ``since``."""
    written = [
        path
        for path in Path("logs").glob("*/**/checkpoints/last.ckpt")
        if path.parts[1] != "eval" and path.stat().st_mtime >= since
    ]
    return max(written, key=lambda p: p.stat().st_mtime, default=None)


def newest_sweep(since: float) -> Path | None:
    """The newest sweep folder (``logs/<task name>/multiruns/<sweep>``) written after
    ``since``."""
    written = [path for path in Path("logs").glob("*/multiruns/*") if path.stat().st_mtime >= since]
    return max(written, key=lambda p: p.stat().st_mtime, default=None)


def own_checkpoint(stderr: str) -> Path | None:
    """The ``last.ckpt`` of the run folder the command announced (``Run directory: ...``), so
    that a run of the other driver process is never taken for it."""
    announced = re.findall(r"^Run directory: (.+)$", stderr, flags=re.MULTILINE)
    path = Path(announced[-1].strip()) / "checkpoints" / "last.ckpt" if announced else None
    return path if path is not None and path.is_file() else None


def own_sweep(stderr: str) -> Path | None:
    """The sweep folder the command announced when its sweep ended (``Sweep folder: ...``)."""
    announced = re.findall(r"^Sweep folder: (.+?) \(\d+ jobs", stderr, flags=re.MULTILINE)
    path = Path(announced[-1]) if announced else None
    return path if path is not None and path.is_dir() else None


def filled(words: list[str], checkpoint: Path | None, sweep: Path | None = None) -> list[str]:
    """``words`` with the checkpoint and sweep placeholders replaced."""
    if sweep is not None:
        words = [word.replace(SWEEP_PLACEHOLDER, str(sweep)) for word in words]
    if checkpoint is None:
        return words
    return [
        word.replace(RUN_PLACEHOLDER, str(checkpoint)).replace(PLACEHOLDER, str(checkpoint))
        for word in words
    ]


def first_of_sweep(argv: list[str]) -> list[str]:
    """``argv`` without ``-m`` and with each comma list cut to its first value, since
    ``--cfg job`` composes one job (Hydra refuses it together with ``-m``)."""
    if "-m" not in argv and "--multirun" not in argv:
        return argv
    kept = [word for word in argv if word not in ("-m", "--multirun")]
    return [_first_value(word) for word in kept]


def _first_value(word: str) -> str:
    key, equals, value = word.partition("=")
    if not equals or "," not in value or value.startswith(("[", "{", "'", '"')):
        return word
    return f"{key}={value.split(',')[0]}"


def launches_processes(argv: list[str]) -> bool:
    """Whether the command starts worker processes (Lightning's DDP on the CPU), which run
    ``python <the script of this process>`` again: it must then run in a process of its own."""
    return any(word in ("trainer=ddp_cpu", "trainer.strategy=ddp") for word in argv)


def run_in_own_process(argv: list[str]) -> tuple[int, str, str]:
    """``python <argv>`` as a subprocess: (exit status, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, *argv], stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    return done.returncode, done.stdout, done.stderr


def run(argv: list[str]) -> tuple[int, str, str]:
    """``python <argv>`` in this process: (exit status, stdout, stderr)."""
    if launches_processes(argv):
        return run_in_own_process(argv)
    GlobalHydra.instance().clear()
    run_dir.RUN_ID = uuid.uuid4().hex[:6]
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    saved_argv = sys.argv
    sys.argv = argv
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                runpy.run_path(argv[0], run_name="__main__")
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            except BaseException:  # a traceback the user would see: keep it in stderr
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        # A DDP command leaves this process in its process group; a later single-process run
        # would then wait for the gone ranks at every synchronised log.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return code, stdout.getvalue(), stderr.getvalue()


def main(plan_file: str, results_file: str) -> None:
    plan = json.loads(Path(plan_file).read_text())
    checkpoints: dict[str, Path] = {}
    sweeps: dict[str, Path] = {}
    #: A command shown again (on another page) is not run again: argv -> (result, checkpoint).
    done: dict[tuple[str, ...], tuple[dict, Path | None]] = {}
    results = []
    for item in plan:
        argv = filled(item["words"][1:], checkpoints.get(item["page"]), sweeps.get(item["page"]))
        if item["compose_only"]:  # Hydra composes one job: the first of a sweep's values
            argv = [*first_of_sweep(argv), "--cfg", "job"]
        if tuple(argv) in done:
            earlier, checkpoint = done[tuple(argv)]
            result = {**earlier, "id": item["id"], "seconds": 0.0, "same_as": earlier["id"]}
        else:
            started = time.time()
            code, out, err = run(argv)
            checkpoint = sweep = None
            if code == 0 and argv[0] == "train.py" and not item["compose_only"]:
                checkpoint = own_checkpoint(err) or newest_checkpoint(started)
                sweep = own_sweep(err) or newest_sweep(started)
            if sweep is not None:
                sweeps[item["page"]] = sweep
            result = {
                "id": item["id"],
                "argv": argv,
                "returncode": code,
                "stdout": out[-20000:],
                "stderr": err[-20000:],
                "seconds": round(time.time() - started, 1),
            }
            done[tuple(argv)] = (result, checkpoint)
        if checkpoint is not None:
            checkpoints[item["page"]] = checkpoint
        results.append(result)
        Path(results_file).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])

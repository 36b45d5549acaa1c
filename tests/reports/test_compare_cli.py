"""python compare.py as a user runs it: the table on stdout, the plot in the sweep folder, and a
wrong folder as one sentence."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

from _helpers_runs import make_run
from conftest import copy_repository_root


def _compare(*arguments, cwd):
    copy_repository_root(cwd)
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "compare.py", *arguments],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compare_prints_the_table_and_writes_the_curves_into_the_sweep_folder(tmp_path):
    sweep = tmp_path / "logs" / "train" / "multiruns" / "2026-01-01_00-00-00_abc123"
    make_run(sweep / "0", ["model=rnn"], {10: {"val/loss": 2.0}}, test={"test/loss": 2.1})
    make_run(sweep / "1", ["model=gru"], {10: {"val/loss": 1.5}, 20: {"val/loss": 1.4}})

    result = _compare(str(sweep), "--format", "csv", "--plot", "val/loss", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows == [
        ["run", "status", "model", "val/loss (last)", "val/loss (best)", "test/loss"],
        ["1", "unfinished at step 20", "gru", "1.4", "1.4", ""],
        ["0", "done", "rnn", "2.0", "2.0", "2.1"],
    ]
    assert (sweep / "curves_val_loss.png").stat().st_size > 0
    assert f"Curves of val/loss: {sweep / 'curves_val_loss.png'}" in result.stderr

    shown = _compare(str(sweep), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "2 runs in" in shown.stdout and "unfinished at step 20" in shown.stdout
    assert "1.4000*" in shown.stdout


def test_a_folder_without_runs_is_one_sentence_and_exit_status_1(tmp_path):
    (tmp_path / "empty").mkdir()
    result = _compare(str(tmp_path / "empty"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'empty'} is neither a run folder nor a folder of runs (no "
        "config_resolved.yaml in it or its sub-folders); name a sweep folder such as "
        "logs/train/multiruns/<sweep>."
    )
    pivot = _compare(str(tmp_path / "empty"), "--rows", "model", cwd=tmp_path)
    assert pivot.returncode == 1
    assert "A pivot needs all three of --rows, --cols and --metric." in pivot.stderr

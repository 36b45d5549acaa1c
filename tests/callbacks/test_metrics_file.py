"""MetricsFile: what a run's metrics.jsonl holds, against the CSV logger's record of the same run,
and a run resumed in its own folder ending with the file of an uninterrupted one."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import compose_train, small_model_overrides, tiny_overrides

from glimpse.errors import DataError
from glimpse.run import train
from glimpse.run_folder import METRICS_FILE, read_metrics, read_result


def _overrides(corpus, tmp_path, *extra):
    return [
        *tiny_overrides(corpus, tmp_path),
        *small_model_overrides("lstm"),
        "trainer.max_steps=30",
        "trainer.val_check_interval=10",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=5",
        *extra,
    ]


def _csv_rows(run_dir):
    (metrics_csv,) = run_dir.glob("csv/version_*/metrics.csv")
    with open(metrics_csv, newline="") as file:
        return list(csv.DictReader(file))


def test_metrics_file_holds_what_the_csv_logger_got(corpus, tmp_path):
    run_dir = tmp_path / "run"
    value = train(compose_train(_overrides(corpus, tmp_path), run_dir))
    records = read_metrics(run_dir)
    rows = _csv_rows(run_dir)

    stages = [(r["stage"], r["step"]) for r in records]
    assert stages == [
        ("train", 5), ("train", 10), ("val", 10), ("train", 15), ("train", 20), ("val", 20),
        ("train", 25), ("train", 30), ("val", 30), ("train_epoch", 30), ("test", 30),
    ]  # fmt: skip
    logged = {
        name: [float(row[name]) for row in rows if row.get(name)]
        for name in ("val/loss", "val/bpc", "train/loss_step", "train/loss_epoch", "test/loss")
    }
    assert [r["val/loss"] for r in records if r["stage"] == "val"] == pytest.approx(
        logged["val/loss"], rel=1e-6
    )
    assert [r["val/bpc"] for r in records if r["stage"] == "val"] == pytest.approx(
        logged["val/bpc"], rel=1e-6
    )
    assert [r["train/loss"] for r in records if r["stage"] == "train"] == pytest.approx(
        logged["train/loss_step"], rel=1e-6
    )
    (epoch,) = [r for r in records if r["stage"] == "train_epoch"]
    assert epoch["train/loss"] == pytest.approx(logged["train/loss_epoch"][0], rel=1e-6)
    (test,) = [r for r in records if r["stage"] == "test"]
    assert set(test) == {"stage", "step", "epoch", "test/loss", "test/bpc", "test/ppl"}
    assert test["test/loss"] == pytest.approx(logged["test/loss"][0], rel=1e-6)

    result = read_result(run_dir)
    assert result.optimized_metric == "val/loss" and result.value == value
    assert result.metrics["test/loss"] == test["test/loss"]


def test_a_run_resumed_in_its_own_folder_ends_with_the_file_of_an_uninterrupted_one(
    corpus, tmp_path
):
    full_dir, cut_dir = tmp_path / "full", tmp_path / "cut"
    train(compose_train(_overrides(corpus, tmp_path, "test=false"), full_dir))
    interrupt = [
        "+callbacks.interrupt._target_=interrupt_callbacks.InterruptAtStep",
        "+callbacks.interrupt.step=17",
    ]
    with pytest.raises(SystemExit):
        train(compose_train(_overrides(corpus, tmp_path, "test=false", *interrupt), cut_dir))
    cut = read_metrics(cut_dir)
    assert max(r["step"] for r in cut) == 15 and read_result(cut_dir) is None

    last = cut_dir / "checkpoints" / "last.ckpt"
    train(compose_train(_overrides(corpus, tmp_path, "test=false", f"ckpt_path={last}"), cut_dir))
    resumed, full = read_metrics(cut_dir), read_metrics(full_dir)
    assert [(r["stage"], r["step"]) for r in resumed] == [(r["stage"], r["step"]) for r in full]
    for mine, theirs in zip(resumed, full, strict=True):
        if mine.pop("stage") != "train_epoch":  # an epoch mean covers only the resumed steps
            assert mine == pytest.approx({k: v for k, v in theirs.items() if k != "stage"}, 1e-5)


def test_a_line_cut_short_by_a_kill_is_left_out_and_a_bad_line_inside_is_an_error(tmp_path):
    good = {"stage": "val", "step": 10, "epoch": 0, "val/loss": 2.5}
    (tmp_path / METRICS_FILE).write_text(json.dumps(good) + '\n{"stage": "train", "st')
    assert read_metrics(tmp_path) == [good]

    (tmp_path / METRICS_FILE).write_text('{"stage": \n' + json.dumps(good) + "\n")
    with pytest.raises(DataError, match=f"{METRICS_FILE} line 1 is not a JSON object"):
        read_metrics(tmp_path)

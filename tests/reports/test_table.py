"""The comparison table of a sweep with finished and unfinished runs, cell by cell, and its
markdown, CSV and JSON forms."""

from __future__ import annotations

import csv
import io
import json

import pytest
from _helpers_runs import make_run

from glimpse.errors import ConfigError, DataError, MissingFileError
from glimpse.reports.differences import differing_keys
from glimpse.reports.formats import render
from glimpse.reports.runs import find_runs
from glimpse.reports.table import comparison_table


@pytest.fixture
def sweep(tmp_path):
    """Job 0 (rnn) and job 1 (lstm) finished; job 2 (gru) stopped after two validations; job 3
    (gru with another learning rate) has not logged anything yet."""
    folder = tmp_path / "multiruns" / "2026-01-01_00-00-00_abc123"
    make_run(
        folder / "0",
        ["model=rnn"],
        {10: {"val/loss": 2.0, "val/bpc": 2.9}, 20: {"val/loss": 1.5, "val/bpc": 2.2},
         30: {"val/loss": 1.7, "val/bpc": 2.5}},
        test={"test/loss": 1.6, "test/bpc": 2.3},
    )  # fmt: skip
    make_run(
        folder / "1",
        ["model=lstm"],
        {10: {"val/loss": 1.8, "val/bpc": 2.6}, 20: {"val/loss": 1.2, "val/bpc": 1.7},
         30: {"val/loss": 1.1, "val/bpc": 1.6}},
        test={"test/loss": 1.15, "test/bpc": 1.66},
    )  # fmt: skip
    make_run(
        folder / "2",
        ["model=gru"],
        {10: {"val/loss": 1.9, "val/bpc": 2.7}, 20: {"val/loss": 1.3, "val/bpc": 1.9}},
    )
    make_run(folder / "3", ["model=gru", "model.optimizer.lr=0.01"], {})
    return folder


def _cells(table):
    return [[cell.text() for cell in row] for row in table.rows]


def test_the_table_lines_up_finished_and_unfinished_runs_cell_by_cell(sweep):
    runs = find_runs([str(sweep)])
    assert [run.name for run in runs] == ["0", "1", "2", "3"]
    assert differing_keys(runs) == ["model", "model.optimizer.lr"]

    table = comparison_table(runs)
    assert table.columns == [
        "run", "status", "model", "model.optimizer.lr",
        "val/loss (last)", "val/loss (best)", "val/bpc (last)", "val/bpc (best)",
        "test/bpc", "test/loss",
    ]  # fmt: skip
    assert _cells(table) == [
        ["1", "done", "lstm", "0.003", "1.1000", "1.1000", "1.6000", "1.6000", "1.6600", "1.1500"],
        ["2", "unfinished at step 20", "gru", "0.003",
         "1.3000*", "1.3000*", "1.9000*", "1.9000*", "-", "-"],
        ["0", "done", "rnn", "0.001", "1.7000", "1.5000", "2.5000", "2.2000", "2.3000", "1.6000"],
        ["3", "not started", "gru", "0.01", "-", "-", "-", "-", "-", "-"],
    ]  # fmt: skip
    assert table.notes == [
        "sorted by the best val/loss (min); (best): at the validation with the best val/loss",
        "*: the run has not finished; its values so far",
    ]


def test_the_table_in_markdown_csv_and_json(sweep):
    table = comparison_table(find_runs([str(sweep)]), metrics=["val/loss", "test/loss"])
    assert render(table, "markdown").splitlines()[:4] == [
        "| run | status | model | model.optimizer.lr | val/loss (last) | val/loss (best) "
        "| test/loss |",
        "|---|---|---|---|---:|---:|---:|",
        "| 1 | done | lstm | 0.003 | 1.1000 | 1.1000 | 1.1500 |",
        "| 2 | unfinished at step 20 | gru | 0.003 | 1.3000* | 1.3000* | - |",
    ]
    rows = list(csv.reader(io.StringIO(render(table, "csv"))))
    assert rows[0][-1] == "test/loss" and rows[2] == [
        "2", "unfinished at step 20", "gru", "0.003", "1.3", "1.3", ""
    ]  # fmt: skip
    first = json.loads(render(table, "json"))[0]
    assert first == {
        "run": "1", "status": "done", "model": "lstm", "model.optimizer.lr": 0.003,
        "val/loss (last)": 1.1, "val/loss (best)": 1.1, "test/loss": 1.15,
    }  # fmt: skip


def test_optimized_mode_max_puts_the_largest_first(tmp_path):
    for job, accuracy in enumerate([0.5, 0.9, 0.7]):
        make_run(
            tmp_path / "sweep" / str(job),
            [f"seed={job}", "optimized_metric=val/acc1", "optimized_mode=max"],
            {10: {"val/acc1": accuracy}},
            test={"test/acc1": accuracy},
        )
    table = comparison_table(find_runs([str(tmp_path / "sweep")]))
    assert [row[0].text() for row in table.rows] == ["1", "2", "0"]
    assert table.columns[2] == "seed"


def test_runs_of_different_objectives_folders_without_runs_and_missing_paths_are_one_sentence(
    tmp_path,
):
    make_run(tmp_path / "a", ["seed=1"], {10: {"val/loss": 1.0}})
    make_run(tmp_path / "b", ["seed=2", "optimized_mode=max"], {10: {"val/loss": 1.0}})
    with pytest.raises(
        ConfigError, match=r"different metrics \(val/loss \(max\), val/loss \(min\)"
    ):
        comparison_table(find_runs([str(tmp_path / "a"), str(tmp_path / "b")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a run folder nor a folder of runs"):
        find_runs([str(tmp_path / "empty")])
    with pytest.raises(MissingFileError, match="nowhere does not exist"):
        find_runs([str(tmp_path / "nowhere")])


def test_a_glob_and_run_folders_from_two_sweeps_are_named_by_their_sweep(tmp_path):
    for sweep in ("s1", "s2"):
        make_run(tmp_path / sweep / "0", ["seed=1"], {10: {"val/loss": 1.0}})
    runs = find_runs([str(tmp_path / "s*" / "0")])
    assert [run.name for run in runs] == ["s1/0", "s2/0"]

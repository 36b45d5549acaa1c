"""The model x data pivot against a table built by hand, the curves figure's lines, and the
wandb Table of a comparison."""

from __future__ import annotations

import pytest
from _helpers_runs import make_run

from glimpse.errors import ConfigError
from glimpse.reports.pivot import pivot_table
from glimpse.reports.plot import curves_figure, run_labels
from glimpse.reports.runs import find_runs
from glimpse.reports.table import comparison_table
from glimpse.reports.wandb_table import to_wandb_table

#: (model, data) -> (val/loss at each validation, test/loss); None: still running, no test yet.
RESULTS = {
    ("rnn", "pystdlib"): ([2.0, 1.6], 1.65),
    ("rnn", "shakespeare"): ([2.2, 1.9], 1.95),
    ("lstm", "pystdlib"): ([1.8, 1.2], 1.25),
    ("lstm", "shakespeare"): ([2.1, 1.5], None),
    ("transformer", "pystdlib"): ([1.7, 1.1], 1.12),
}


@pytest.fixture
def sweep(tmp_path):
    folder = tmp_path / "sweep"
    for job, ((model, data), (losses, test)) in enumerate(RESULTS.items()):
        make_run(
            folder / str(job),
            [f"model={model}", f"data={data}"],
            {10 * (i + 1): {"val/loss": loss} for i, loss in enumerate(losses)},
            test=None if test is None else {"test/loss": test},
        )
    return folder


def test_the_pivot_equals_the_model_by_data_table_built_by_hand(sweep):
    table = pivot_table(find_runs([str(sweep)]), ["model"], ["data"], "test/loss")
    expected = {}
    for (model, data), (_, test) in RESULTS.items():
        expected.setdefault(model, {})[data] = "-" if test is None else f"{test:.4f}"
    assert table.columns == ["model", "pystdlib", "shakespeare"]
    assert [[cell.text() for cell in row] for row in table.rows] == [
        [model, by_data.get("pystdlib", "-"), by_data.get("shakespeare", "-")]
        for model, by_data in expected.items()
    ]

    best = pivot_table(find_runs([str(sweep)]), ["model"], ["data"], "val/loss", value="best")
    assert [cell.text() for cell in best.rows[1]] == ["lstm", "1.2000", "1.5000*"]
    assert best.notes[-1] == "*: the run has not finished; its value so far"


def test_two_runs_in_one_cell_and_unknown_keys_or_metrics_are_one_sentence(sweep):
    runs = find_runs([str(sweep)])
    with pytest.raises(
        ConfigError, match="Runs 0 and 1 both have model=rnn, seed=1234; add the key"
    ):
        pivot_table(runs, ["model"], ["seed"], "test/loss")
    with pytest.raises(ConfigError, match="No run has a config value 'modle'"):
        pivot_table(runs, ["modle"], ["data"], "test/loss")
    with pytest.raises(ConfigError, match="No run logged 'test/acc1'; the runs logged: test/loss"):
        pivot_table(runs, ["model"], ["data"], "test/acc1")


def test_the_curves_have_one_line_per_run_labelled_by_what_differs(sweep):
    runs = find_runs([str(sweep)])
    figure = curves_figure(runs, "val/loss")
    lines = figure.axes[0].get_lines()
    assert len(lines) == len(RESULTS)
    labels = run_labels(runs)
    assert labels["3"] == "data=shakespeare, model=lstm"
    for line, run, (losses, test) in zip(lines, runs, RESULTS.values(), strict=True):
        assert list(line.get_xdata()) == [10, 20]
        assert list(line.get_ydata()) == losses
        assert line.get_label() == labels[run.name] + ("" if test else " (unfinished)")
        assert line.get_linestyle() == ("-" if test else "--")
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == [line.get_label() for line in lines]


def test_the_wandb_table_holds_the_comparison_raw_values(sweep):
    table = comparison_table(find_runs([str(sweep)]))
    logged = to_wandb_table(table)
    assert logged.columns == table.columns
    assert logged.data == [[cell.value for cell in row] for row in table.rows]
    assert logged.data[0][:4] == ["4", "done", "pystdlib", "transformer"]

"""The shipped experiment recipes run (shrunk to seconds with overrides)."""

from __future__ import annotations

import yaml
from conftest import run_script, small_model_overrides, tiny_overrides


def test_rnn_vs_transformer_sweeps_all_four_models(corpus, tmp_path):
    overrides = [o for o in tiny_overrides(corpus, tmp_path) if not o.startswith("model.")]
    result = run_script(
        "train.py", "experiment=rnn_vs_transformer", *overrides, "debug=fdr", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = list((tmp_path / "logs" / "debug" / "multiruns").iterdir())
    configs = [
        yaml.safe_load((sweep / str(job) / "config_resolved.yaml").read_text()) for job in range(4)
    ]
    targets = [c["model"]["net"]["_target_"].rsplit(".", 1)[1] for c in configs]
    assert targets == ["CharRNN", "CharRNN", "CharRNN", "CharTransformer"]
    assert [c["model"]["net"].get("cell") for c in configs[:3]] == ["rnn", "lstm", "gru"]
    assert configs[3]["data"]["batching"] == "windows"
    assert all(c["data"]["corpus"] == "text" for c in configs)


def test_cpu_experiments_train_when_shrunk(corpus, tmp_path):
    for experiment, model in (
        ("shakespeare_lstm_cpu", "lstm"),
        ("shakespeare_transformer_baby", "transformer"),
    ):
        result = run_script(
            "train.py",
            f"experiment={experiment}",
            *tiny_overrides(corpus, tmp_path),
            *small_model_overrides(model),
            "debug=fdr",
            cwd=tmp_path,
        )
        assert result.returncode == 0, (experiment, result.stderr[-3000:])

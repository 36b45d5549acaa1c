"""Self-supervised runs end to end: short BYOL and DINO runs of the shapes recipes do not
collapse and beat chance, and their checkpoints evaluate with eval=knn and eval=linear."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from _helpers_ssl import metric_rows, shrunk_shapes_experiment
from conftest import compose_eval, compose_train, run_script, working_directory

from glimpse.evaluation.features import SplitFeatures, labelled_features
from glimpse.evaluation.linear_probe import topk_accuracy, train_linear_probe
from glimpse.run import evaluate, train

CHANCE = 1 / 7  # seven shapes


def _short_run(tmp_path_factory, experiment: str) -> tuple[Path, float]:
    tmp_path = tmp_path_factory.mktemp(experiment)
    run_dir = tmp_path / "run"
    with working_directory(tmp_path):
        cfg = compose_train(
            [*shrunk_shapes_experiment(tmp_path, experiment), "test=false"], run_dir
        )
        return run_dir, train(cfg)


@pytest.fixture(scope="module")
def byol_run(tmp_path_factory) -> tuple[Path, float]:
    """shapes_byol_cpu for 40 steps of batch 32: (run directory, last val kNN top-1)."""
    return _short_run(tmp_path_factory, "shapes_byol_cpu")


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory) -> tuple[Path, float]:
    """shapes_dino_cpu for 40 steps of batch 32: (run directory, last val kNN top-1)."""
    return _short_run(tmp_path_factory, "shapes_dino_cpu")


@pytest.mark.parametrize("run", ["byol_run", "dino_run"])
def test_a_short_run_on_shapes_does_not_collapse_and_its_knn_beats_chance(run, request):
    run_dir, value = request.getfixturevalue(run)
    config = yaml.safe_load((run_dir / "config_resolved.yaml").read_text())
    assert config["model"]["backbone"]["_target_"] == "glimpse.models.vit.vit_nano_conv"
    assert config["data"]["base"]["image_size"] == 48
    rows = metric_rows(run_dir)
    validations = [row for row in rows if "val/knn_acc1" in row]
    assert [row["step"] for row in validations] == [19, 39]
    last = validations[-1]
    # Collapsed features are all alike: their spread goes to 0 (about 1 when spread evenly;
    # 0.01 in a DINO run collapsed by lr 4e-3 and a teacher at momentum 0.9).
    assert all(row["val/feature_std"] > 0.1 for row in validations)
    # The kept (best) checkpoint's kNN beats chance; 40 steps learn little beyond it.
    assert max(row["val/knn_acc1"] for row in validations) > CHANCE
    assert value == pytest.approx(last["val/knn_acc1"])
    assert all(math.isfinite(row["train/loss_step"]) for row in rows if "train/loss_step" in row)


def test_dino_draws_the_teachers_attention_maps_at_each_validation(dino_run):
    run_dir, _ = dino_run
    names = sorted(path.name for path in (run_dir / "figures").glob("attention_maps_*.png"))
    assert names == ["attention_maps_step0000020.png", "attention_maps_step0000040.png"]


def test_eval_knn_of_the_best_checkpoint_reproduces_the_monitor(byol_run, tmp_path):
    run_dir, _ = byol_run
    (best,) = (run_dir / "checkpoints").glob("best_step*.ckpt")
    step = int(best.stem.removeprefix("best_step"))
    [row] = [r for r in metric_rows(run_dir) if "val/knn_acc1" in r and r["step"] == step - 1]
    results = evaluate(compose_eval([f"ckpt_path={best}", "eval=knn"], tmp_path))
    assert set(results) == {"knn/acc1", "knn/acc5"}
    assert results["knn/acc1"] == pytest.approx(row["val/knn_acc1"])
    assert results["knn/acc5"] == pytest.approx(row["val/knn_acc5"])


def test_eval_py_linear_trains_a_probe_on_a_labelled_data_config(dino_run):
    run_dir, _ = dino_run
    data_dir = run_dir.parent / "data"
    result = run_script(
        "eval.py",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "eval=linear",
        "data=shapes",
        "data.image_size=48",
        "data.num_per_class=150",
        "data.num_workers=0",
        "linear.epochs=5",
        cwd=run_dir.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "eval=linear of" in output and "linear/acc1" in output and "linear/acc5" in output
    assert len(list(data_dir.iterdir())) == 1  # the run's shapes, not generated again


def test_eval_py_image_draws_a_dino_checkpoints_attention_maps(dino_run, tmp_path):
    run_dir, _ = dino_run
    image = next((run_dir.parent / "data").rglob("*.png"))
    result = run_script(
        "eval.py",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        f"image={image}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (figure,) = (tmp_path / "logs").rglob(f"{image.stem}_attention_maps.png")
    assert figure.stat().st_size > 0


def test_the_linear_probe_separates_separable_features_of_any_scale():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=generator) * 8
    labels = torch.arange(200) % 4
    features = (centres[labels] + torch.randn(200, 16, generator=generator)) * 1e3 + 50
    probe = train_linear_probe(SplitFeatures(features, labels), 4, epochs=30, lr=1e-2)
    torch.testing.assert_close(probe.mean, features.mean(dim=0))
    with torch.no_grad():
        accuracy = topk_accuracy(probe(features), labels, ks=(1,))
    assert accuracy == {"acc1": 1.0}


def test_top_k_accuracy_counts_labels_among_the_k_best_logits():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([2, 0, 1, 2])
    result = topk_accuracy(logits, labels, ks=(1, 2, 5))
    assert result == pytest.approx({"acc1": 0.25, "acc2": 0.75, "acc5": 1.0})


def test_evaluations_refuse_a_task_without_image_features():
    with pytest.raises(ValueError, match="needs a checkpoint of a task with image features"):
        labelled_features(object(), {"_target_": "x"}, "knn")

"""The benchmark scripts run end to end (shrunk to seconds) and write their JSON results.

They time nothing here: this only keeps them working as the code under them changes.
"""

from __future__ import annotations

import json

from conftest import REPO, run_script


def run_benchmark(name: str, *args: str, cwd):
    """``benchmarks/<name>`` of this checkout with ``args``, run from ``cwd``."""
    return run_script(str(REPO / "benchmarks" / name), *args, cwd=cwd)


def test_classification_benchmark_writes_pairs_and_pipeline_results(tmp_path):
    output = tmp_path / "classification.json"
    result = run_benchmark(
        "classification.py",
        "--models",
        "vit_s16",
        "pvt_small",
        "--image-size",
        "32",
        "--batch-size",
        "2",
        "--rounds",
        "1",
        "--steps",
        "1",
        "--pipeline-workers",
        "0",
        "--pipeline-batches",
        "2",
        "--pipeline-image-size",
        "40",
        "30",
        "--pipeline-rounds",
        "1",
        "--threads",
        "1",
        "--output",
        str(output),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    text = json.dumps(results)
    assert "vit_s16" in text and "pvt_small" in text and "images_per_s" in text
    assert results["machine"]["torch_threads"] == 1


def test_charlm_benchmark_writes_its_case(tmp_path):
    output = tmp_path / "charlm.json"
    result = run_benchmark(
        "charlm.py",
        "--cases",
        "transformer",
        "--rounds",
        "1",
        "--warmup",
        "1",
        "--steps",
        "1",
        "--transformer-dim",
        "16",
        "--transformer-layers",
        "1",
        "--transformer-heads",
        "2",
        "--corpus-chars",
        "20000",
        "--threads",
        "1",
        "--output",
        str(output),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    assert "transformer" in json.dumps(results)
    assert "lightning" in results["machine"]


def test_captioning_benchmark_writes_training_and_decoding_results(tmp_path):
    output = tmp_path / "captioning.json"
    result = run_benchmark(
        "captioning.py",
        "--arch",
        "resnet18",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--rounds",
        "1",
        "--warmup",
        "1",
        "--steps",
        "1",
        "--embed-dim",
        "16",
        "--hidden-size",
        "16",
        "--attention-dim",
        "16",
        "--decoders",
        "show_attend_tell",
        "show_tell",
        "--beams",
        "1",
        "3",
        "--decode-batch",
        "2",
        "--grid-positions",
        "4",
        "--feature-dim",
        "8",
        "--vocab-size",
        "20",
        "--max-length",
        "3",
        "--decode-rounds",
        "1",
        "--threads",
        "1",
        "--output",
        str(output),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    training = results["training"]
    assert training["uncached"]["steps_per_s"] > 0 and training["cached"]["steps_per_s"] > 0
    assert training["extraction"]["images"] == training["config"]["train_images"]
    for decoder in ("show_attend_tell", "show_tell"):
        for search in ("greedy", "beam3"):
            entry = results["decoding"][decoder][search]
            assert entry["batched"]["captions_per_s"] > 0 and entry["ratio"] > 0
    assert results["machine"]["torch_threads"] == 1


def test_detection_benchmark_writes_matcher_and_training_results(tmp_path):
    output = tmp_path / "detection.json"
    result = run_benchmark(
        "detection.py",
        "--matcher-batch-sizes",
        "2",
        "4",
        "--queries",
        "10",
        "--num-classes",
        "5",
        "--max-targets",
        "4",
        "--matcher-rounds",
        "1",
        "--matcher-repeats",
        "1",
        "--small-image-size",
        "64",
        "--small-batch-size",
        "2",
        "--r50-image-size",
        "64",
        "--r50-batch-size",
        "1",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--steps",
        "1",
        "--threads",
        "1",
        "--output",
        str(output),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    for batch in ("2", "4"):
        entry = results["matcher"][batch]
        assert entry["batched"]["ms_per_batch"] > 0 and entry["loop"]["ms_per_batch"] > 0
        assert entry["max_total_cost_difference"] <= 1e-3
    for preset in ("small", "r50"):
        entry = results["training"][preset]
        assert entry["images_per_s"] > 0
        assert 0 < entry["matcher_and_criterion_share"] < 1
    assert results["machine"]["torch_threads"] == 1


def test_ssl_benchmark_writes_byol_and_dino_results(tmp_path):
    output = tmp_path / "ssl.json"
    sizes = ["--batch-size", "2", "--byol-image-size", "32", "--byol-hidden-dim", "64"]
    dino = ["--dino-backbone", "vit_test", "--dino-global-size", "32", "--dino-local-size", "16"]
    dino += ["--dino-local-crops", "2", "--dino-out-dim", "128", "--dino-hidden-dim", "64"]
    timing = ["--rounds", "1", "--warmup", "1", "--steps", "1", "--threads", "1"]
    result = run_benchmark(
        "ssl_training.py",
        *sizes,
        *dino,
        *timing,
        "--output",
        str(output),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    for method in ("byol", "dino"):
        entry = results["methods"][method]
        assert entry["lightning"]["images_per_s"] > 0 and entry["raw"]["images_per_s"] > 0
        assert entry["max_abs_loss_difference"] < 1e-3
    assert results["methods"]["dino"]["config"]["view_sizes"] == [32, 32, 16, 16]
    assert results["machine"]["torch_threads"] == 1


def test_clip_benchmark_writes_training_and_zeroshot_results(tmp_path):
    output = tmp_path / "clip.json"
    shape = ["--shapes", "tiny", "--batch-size", "4", "--vocab-size", "100", "--context-length"]
    zeroshot = ["--zeroshot-shape", "tiny", "--zeroshot-classes", "3", "--zeroshot-templates", "2"]
    result = run_benchmark(
        "clip.py",
        *shape,
        "8",
        "--rounds",
        "1",
        "--steps",
        "1",
        *zeroshot,
        "--zeroshot-rounds",
        "1",
        "--threads",
        "1",
        "--output",
        str(output),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    entry = results["training"]["tiny"]
    assert entry["ours"]["pairs_per_s"] > 0 and entry["open_clip"]["pairs_per_s"] > 0
    assert entry["first_loss_relative_difference"] <= 1e-3
    zeroshot_result = results["zeroshot"]
    assert zeroshot_result["prompts"] == 6 and zeroshot_result["max_abs_weight_difference"] <= 1e-4
    assert results["machine"]["torch_threads"] == 1


def test_compile_benchmark_writes_both_sides_of_a_case(tmp_path):
    output = tmp_path / "compile.json"
    sizes = ["--parts", "char_transformer", "--batch-size", "2", "--seq-len", "8"]
    timing = ["--rounds", "1", "--warmup", "0", "--steps", "1", "--threads", "1"]
    # aot_eager traces and differentiates the same graphs as inductor without generating C++.
    result = run_benchmark(
        "compile.py",
        *sizes,
        *timing,
        "--backend",
        "aot_eager",
        "--output",
        str(output),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    entry = results["cases"]["char_transformer"]
    assert entry["eager"]["per_s"] > 0 and entry["compiled"]["per_s"] > 0 and entry["ratio"] > 0
    assert entry["max_abs_loss_difference"] < 1e-4
    assert len(results["machine"]["load_average_before"]) == 3


def test_gpu_check_runs_every_method_on_the_cpu(tmp_path):
    """The CPU mode of ``make gpu-check`` (tiny networks, the aot_eager backend): every method
    trains eager and compiled and is compared with its reference, the MFU cases count their
    FLOPs, and every fast default has its line; DDP is left to the ddp_cpu tests."""
    output = tmp_path / "gpu_check.json"
    result = run_benchmark(
        "gpu_check.py",
        "--device",
        "cpu",
        "--parts",
        "methods",
        "defaults",
        "decode",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--line-steps",
        "1",
        "--workers",
        "0",
        "--threads",
        "1",
        "--output",
        str(output),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["failures"] == [] and report["settings"]["backend"] == "aot_eager"
    assert len(report["methods"]) == 13
    for name, entry in report["methods"].items():
        for side in ("eager", "compiled"):
            assert entry[side]["per_s"] > 0, (name, side)
        if name != "char_lstm":  # torch.nn.LSTM (cuDNN) is not traced: no graph, eager
            assert entry["compiled"]["graphs"] >= 1, name
        assert "per_s" in entry["reference"] or entry["reference"]["none"], name
    for name in ("vit_b16", "char_transformer"):
        assert report["methods"][name]["eager"]["flops_per_step"] > 0
    assert report["methods"]["vit_s"]["eager"]["vs_reference"] > 0
    assert set(report["defaults"]) == {
        "fused_adamw",
        "channels_last",
        "tf32",
        "swin_sdpa",
        "pinned_copy",
    }
    assert report["decode"]["prefetch"]["ratio"] > 0
    assert "| ViT-B/16 |" in output.with_suffix(".md").read_text()

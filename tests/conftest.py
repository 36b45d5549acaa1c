"""Shared fixtures: a tiny generated corpus and Hydra configs composed for fast runs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

from glimpse.utils.run_dir import register_resolvers

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

#: What a user's checkout holds at its root and runs from there; e2e tests copy these.
ROOT_FILES = ("conf", "train.py", "eval.py", "compare.py")

register_resolvers()
# The test models are tiny: one intra-op thread is as fast, and it avoids OpenMP's spin-waits
# slowing everything down many times over when another process shares the two cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs with its ``tmp_path`` as the working directory, as a user runs train.py
    from a checkout: the runs' ``data/`` and ``logs/`` land there (``paths.root_dir`` is the
    working directory), and no test needs to override ``paths.*``."""
    monkeypatch.chdir(tmp_path)


@contextlib.contextmanager
def working_directory(path: Path):
    """Run the block in ``path`` (for module-scoped fixtures, which start before the
    per-test working directory is set)."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(previous)


def copy_repository_root(target: Path) -> Path:
    """``target`` holding a copy of the repository root's conf/, train.py, eval.py and
    compare.py (copied once), the folder a user's checkout is: e2e tests run the scripts from
    there."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ROOT_FILES:
        source, copy = REPO / name, target / name
        if copy.exists():
            continue
        if source.is_dir():
            shutil.copytree(source, copy)
        else:
            shutil.copy2(source, copy)
    return target


def make_corpus(path: Path, num_lines: int = 400, seed: int = 0) -> Path:
    """A small, learnable text: lines of short words from a fixed word list."""
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it", "was"]
    rng = random.Random(seed)
    lines = [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) for _ in range(num_lines)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return make_corpus(tmp_path / "corpus.txt")


def tiny_overrides(corpus: Path, tmp_path: Path) -> list[str]:
    """Overrides that make a run take seconds: a small corpus, small model and few steps."""
    return [
        "data=text",
        f"data.path={corpus}",
        "data.seq_len=16",
        "data.batch_size=4",
        "logger=csv",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "model.samples.num_chars=20",
    ]


def tiny_image_overrides(tmp_path: Path, data: str = "shapes") -> list[str]:
    """The tiny ViT on 32 px images of ``data``: by default 5 shapes per class (21 train, 7 val,
    7 test images); other data configs need their own root or url."""
    sized = ["data.num_per_class=5"] if data == "shapes" else ["data.image_size=32"]
    return [
        "model=vit",
        f"data={data}",
        "model.net._target_=glimpse.models.vit.vit_test",
        *sized,
        "data.batch_size=8",
        "data.num_workers=0",
        "logger=csv",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]


def tiny_caption_overrides(tmp_path: Path, model: str = "show_attend_tell") -> list[str]:
    """A tiny captioner (``model``: show_tell or show_attend_tell) on 40 shapes scenes of 32 px
    (30 train, 5 val, 5 test images, five captions each), trained from random weights."""
    decoder = ["model.decoder.embed_dim=16", "model.decoder.hidden_size=32"]
    if model == "show_attend_tell":
        decoder.append("model.decoder.attention_dim=16")
    return [
        f"model={model}",
        "data=shapes_captions",
        "data.num_images=40",
        "data.image_size=32",
        "data.batch_size=8",
        "data.num_workers=0",
        "model.encoder.arch=resnet18",
        "model.pretrained=null",
        "model.fine_tune_encoder_from_epoch=0",
        *decoder,
        "logger=csv",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
    ]


def short_run(steps: int, val_every: int | None = None) -> list[str]:
    """Overrides for ``steps`` optimizer steps with a one-batch validation every ``val_every``."""
    return [
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={val_every or steps}",
        "trainer.limit_val_batches=1",
    ]


def small_model_overrides(model: str) -> list[str]:
    if model == "transformer":
        return ["model.net.dim=16", "model.net.num_layers=1", "model.net.num_heads=2"]
    return ["model.net.hidden_size=16", "model.net.embedding_dim=8", "model.net.num_layers=1"]


def compose_train(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose conf/train.yaml as Hydra would for `python train.py <overrides>`, with the run
    directory at ``output_dir``, and install it as the current Hydra config."""
    return compose_config("train", overrides, output_dir)


def compose_eval(overrides: list[str], output_dir: Path) -> DictConfig:
    """conf/eval.yaml composed as for `python eval.py <overrides>`, like :func:`compose_train`."""
    return compose_config("eval", overrides, output_dir)


def compose_config(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose conf/<name>.yaml with ``overrides``, run directory ``output_dir``, installed as
    the current Hydra config (without its ``hydra`` node)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_script(script: str, *overrides: str, cwd: Path, env: dict | None = None, timeout=600):
    """Run ``python train.py`` (or ``eval.py``) with ``overrides`` from ``cwd``, which is made a
    copy of the repository root first, as a user runs it from a checkout: a subprocess with no
    standard input. Returns the CompletedProcess (stdout and stderr captured as text)."""
    copy_repository_root(cwd)
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, script, *overrides],
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ImageDataModuleStandIn:
    """A datamodule class yielding a batch kind no character model accepts (for compat tests)."""

    KIND = "labelled_images"


def random_images(height: int, width: int, seed: int = 0, batch: int = 2) -> torch.Tensor:
    """A seeded ``(batch, 3, height, width)`` batch of N(0, 1) pixels."""
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def randomize_parameters(module: torch.nn.Module, seed: int, std: float) -> None:
    """Give every parameter random values: N(0, std), plus 1 for LayerNorm weights, so that a
    converter test depends on every mapped tensor."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            for name, p in sub.named_parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=gen) * std)
                if isinstance(sub, torch.nn.LayerNorm) and name == "weight":
                    p.add_(1.0)


def write_imagenette_tree(
    folder: Path, classes: dict[str, str], seed: int = 0, train_per_class: int = 3
) -> Path:
    """An Imagenette-like tree of tiny JPEGs in ``folder``: train/ (``train_per_class`` images)
    and val/ (one) with one folder per wnid of ``classes``, and one grayscale image (as the real
    release has)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", 1)):
        for wnid in classes:
            for i in range(count):
                path = folder / split / wnid / f"{wnid}_{i}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                height, width = rng.integers(36, 60, size=2)
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(path, quality=85)
    gray = folder / "train" / next(iter(classes)) / "gray.JPEG"
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(gray)
    (folder / "noisy_imagenette.csv").write_text("path,noisy_labels_0\n")
    return folder


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class LocalServer:
    """Serves ``routes[path] = (status, body, content_length)``; records request paths."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, int | None]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path not in server.routes:
                    self.send_error(404, "Not Found")
                    return
                status, body, length = server.routes[self.path]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    """A :class:`LocalServer` on 127.0.0.1 for the test, shut down after it."""
    local = LocalServer()
    yield local
    local.close()

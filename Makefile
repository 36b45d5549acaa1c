# Two commands do everything on a fresh clone:
#   make train   installs (if needed) and runs the default training job
#   make test    installs (if needed) and runs the test suite
# The install lands in a project-local virtual environment, .venv/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned as a pair built against the same (CUDA) torch:
# the machine's pip also offers a CPU-only torch wheel that this torchvision cannot load.
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install train test lint bench bench-classification bench-captioning bench-detection \
	bench-ssl bench-clip bench-compile gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet $(TORCH_PAIR)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(PY) -c "from torchvision.ops import nms; import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'ops ok')"
	touch $(STAMP)

train: install
	$(PY) train.py $(ARGS)

test: install
	$(PY) -m pytest $(ARGS)

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) benchmarks/charlm.py $(ARGS)

# Our ViT, Swin, DeiT and PVT against torchvision/timm, and the ImageFolder input pipeline.
# BENCH_THREADS sets both torch's and OpenMP's thread counts.
BENCH_THREADS ?= 2
bench-classification: install
	OMP_NUM_THREADS=$(BENCH_THREADS) $(PY) benchmarks/classification.py --threads $(BENCH_THREADS) $(ARGS)

# Captioning: training steps/s with and without cached encoder features, and decoding
# captions/s (greedy, beam 3 and 5), batched against one image at a time.
bench-captioning: install
	OMP_NUM_THREADS=$(BENCH_THREADS) $(PY) benchmarks/captioning.py --threads $(BENCH_THREADS) $(ARGS)

# DETR: the Hungarian matcher's ms per batch (batched cost vs a per-image loop), and training
# images/s of detr_small and detr_r50 with the matcher + criterion share of the step.
bench-detection: install
	OMP_NUM_THREADS=$(BENCH_THREADS) $(PY) benchmarks/detection.py --threads $(BENCH_THREADS) $(ARGS)

# BYOL (ResNet-18) and DINO (ViT-S/16) training images/s: the Lightning task against a raw
# PyTorch loop of the same computation (benchmarks/ssl_training.py; not ssl.py, which would hide
# Python's ssl module).
bench-ssl: install
	OMP_NUM_THREADS=$(BENCH_THREADS) $(PY) benchmarks/ssl_training.py --threads $(BENCH_THREADS) $(ARGS)

# CLIP: training pairs/s of our model + loss against open_clip's (tiny, ViT-B-32, RN50, same
# weights), and the zero-shot classifier's build time against open_clip's.
bench-clip: install
	OMP_NUM_THREADS=$(BENCH_THREADS) $(PY) benchmarks/clip.py --threads $(BENCH_THREADS) $(ARGS)

# torch.compile against eager on the CPU: training steps of ViT-S, Swin-T, the char Transformer
# and DETR's transformer (benchmarks/compile.py).
bench-compile: install
	OMP_NUM_THREADS=$(BENCH_THREADS) $(PY) benchmarks/compile.py --threads $(BENCH_THREADS) $(ARGS)

# The GPU path in one call (benchmarks/gpu_check.py): every method eager and compiled under
# trainer=gpu against its reference, the fast defaults, decode_device=cuda and DDP; at most
# 8 minutes on one GPU. ARGS="--device cpu" runs the same checks on the CPU with tiny networks.
gpu-check: install
	$(PY) benchmarks/gpu_check.py $(ARGS)

clean:
	rm -rf $(VENV) logs .pytest_cache .ruff_cache
